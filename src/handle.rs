//! Handles: generational indices naming a transport in a loop.
//!
//! The driver works with the untyped [`Handle`] (its socket table is keyed by it); user code
//! works with typed handles ([`StreamHandle`], [`ReadPipeHandle`], [`WritePipeHandle`]) so
//! that writing to a read-only pipe does not compile. A handle whose transport was removed is
//! *stale*: every call with it returns a typed error, never a panic, and a slot reused for a
//! new transport gets a new generation, so an old handle never reaches the new transport.

use std::fmt;

use crate::TransportKind;
use crate::stream::StreamKind;

/// The untyped name of a transport: a slot index and the slot's generation.
///
/// Drivers key their socket tables by it ([`Handle::index`] is dense, suitable for a `Vec`
/// or slab index).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Handle {
    index: u32,
    generation: u32,
}

impl Handle {
    /// Builds a handle from its parts. Only the registry hands out live handles; this
    /// exists for drivers that store handles in raw form, and for tests of transports used
    /// without a registry.
    pub const fn from_raw(index: u32, generation: u32) -> Self {
        Handle { index, generation }
    }

    /// The slot index: dense and small, reused after the transport is removed.
    pub const fn index(self) -> u32 {
        self.index
    }

    /// The slot's generation: bumped every time the slot is reused.
    pub const fn generation(self) -> u32 {
        self.generation
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}.{}", self.index, self.generation)
    }
}

macro_rules! typed_handle {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Handle);

        impl $name {
            /// Wraps an untyped handle. The registry checks the kind on every call, so a
            /// wrongly typed handle is an error, never undefined behaviour.
            pub const fn from_handle(h: Handle) -> Self {
                $name(h)
            }

            /// The untyped handle (what the driver sees).
            pub const fn handle(self) -> Handle {
                self.0
            }
        }

        impl From<$name> for Handle {
            fn from(h: $name) -> Handle {
                h.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
    };
}

typed_handle!(
    /// A bidirectional stream transport (TCP, Unix stream socket, socket pair).
    StreamHandle
);
typed_handle!(
    /// The read-only half of a pipe (`connect_read_pipe`, a child's stdout or stderr).
    ReadPipeHandle
);
typed_handle!(
    /// The write-only half of a pipe (`connect_write_pipe`, a child's stdin).
    WritePipeHandle
);

typed_handle!(
    /// A datagram endpoint (UDP, Unix datagram socket).
    DatagramHandle
);

typed_handle!(
    /// A child process (`subprocess_exec`, `subprocess_shell`): its pid, exit status,
    /// signals and pipes.
    SubprocessHandle
);

mod sealed {
    pub trait Sealed {}
}

/// Every typed handle: what `close`, `abort` and `is_closing` accept. Sealed.
pub trait TransportHandle: sealed::Sealed + Copy + Into<Handle> {
    /// The transport kind this handle type names; the loop checks it on every call.
    const KIND: TransportKind;
}

/// Handles of the stream family (sockets and both pipe halves): their protocol is a
/// [`Protocol`](crate::Protocol).
pub trait AnyStreamHandle: TransportHandle {}

/// Handles whose transport has a write buffer with flow control: streams, write pipes,
/// datagram endpoints.
pub trait FlowHandle: TransportHandle {}

/// Handles whose transport accepts stream writes: streams and write pipes.
pub trait WriteHandle: AnyStreamHandle + FlowHandle {}

/// Handles whose transport delivers what it receives: streams, read pipes, datagram
/// endpoints.
pub trait ReadHandle: TransportHandle {}

impl sealed::Sealed for StreamHandle {}
impl sealed::Sealed for ReadPipeHandle {}
impl sealed::Sealed for WritePipeHandle {}
impl sealed::Sealed for DatagramHandle {}
impl sealed::Sealed for SubprocessHandle {}
impl TransportHandle for StreamHandle {
    const KIND: TransportKind = TransportKind::Stream(StreamKind::Socket);
}
impl TransportHandle for ReadPipeHandle {
    const KIND: TransportKind = TransportKind::Stream(StreamKind::ReadPipe);
}
impl TransportHandle for WritePipeHandle {
    const KIND: TransportKind = TransportKind::Stream(StreamKind::WritePipe);
}
impl TransportHandle for DatagramHandle {
    const KIND: TransportKind = TransportKind::Datagram;
}
impl TransportHandle for SubprocessHandle {
    const KIND: TransportKind = TransportKind::Subprocess;
}
impl AnyStreamHandle for StreamHandle {}
impl AnyStreamHandle for ReadPipeHandle {}
impl AnyStreamHandle for WritePipeHandle {}
impl FlowHandle for StreamHandle {}
impl FlowHandle for WritePipeHandle {}
impl FlowHandle for DatagramHandle {}
impl WriteHandle for StreamHandle {}
impl WriteHandle for WritePipeHandle {}
impl ReadHandle for StreamHandle {}
impl ReadHandle for ReadPipeHandle {}
impl ReadHandle for DatagramHandle {}
