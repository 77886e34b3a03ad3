//! The kinds of transport a slot holds, their protocols, and the user-face operations all
//! kinds share — so `Ctx` and dispatch handle streams and datagrams with one code path
//! where the semantics are the same.

use std::time::Instant;

use crate::datagram::DatagramTransport;
use crate::stream::StreamKind;
use crate::{
    CallbackResult, ConnectionError, Ctx, DatagramProtocol, Extra, Interest, Io, LimitsError,
    Protocol, SendPool, StreamTransport, SubprocessProtocol, SubprocessTransport,
    WriteBufferLimits,
};

/// What kind of transport a handle names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportKind {
    /// A socket or pipe half.
    Stream(StreamKind),
    /// A UDP or Unix datagram endpoint.
    Datagram,
    /// A child process (its pipes are read and write pipes of their own).
    Subprocess,
}

impl TransportKind {
    /// A short name for error messages.
    pub const fn name(self) -> &'static str {
        match self {
            TransportKind::Stream(k) => k.name(),
            TransportKind::Datagram => "datagram endpoint",
            TransportKind::Subprocess => "subprocess",
        }
    }
}

pub(crate) enum Transport {
    Stream(StreamTransport),
    /// Boxed: endpoints are rare, and this keeps every stream's slot small (a
    /// `DatagramTransport` is larger than a `StreamTransport`).
    Datagram(Box<DatagramTransport>),
    Subprocess(SubprocessTransport),
}

impl Transport {
    pub(crate) fn kind(&self) -> TransportKind {
        match self {
            Transport::Stream(t) => TransportKind::Stream(t.kind()),
            Transport::Datagram(_) => TransportKind::Datagram,
            Transport::Subprocess(_) => TransportKind::Subprocess,
        }
    }

    pub(crate) fn common(&mut self) -> &mut dyn Common {
        match self {
            Transport::Stream(t) => t,
            Transport::Datagram(t) => &mut **t,
            Transport::Subprocess(t) => t,
        }
    }

    pub(crate) fn common_ref(&self) -> &dyn Common {
        match self {
            Transport::Stream(t) => t,
            Transport::Datagram(t) => &**t,
            Transport::Subprocess(t) => t,
        }
    }

    pub(crate) fn stream(&mut self) -> Option<&mut StreamTransport> {
        match self {
            Transport::Stream(t) => Some(t),
            Transport::Datagram(_) | Transport::Subprocess(_) => None,
        }
    }

    pub(crate) fn stream_ref(&self) -> Option<&StreamTransport> {
        match self {
            Transport::Stream(t) => Some(t),
            Transport::Datagram(_) | Transport::Subprocess(_) => None,
        }
    }
}

/// The user face every transport kind shares, with asyncio's semantics (see each type).
pub(crate) trait Common {
    fn close(&mut self, io: &mut dyn Io, pool: &mut SendPool);
    fn abort(&mut self, io: &mut dyn Io, pool: &mut SendPool);
    fn is_closing(&self) -> bool;
    fn pause_reading(&mut self);
    fn resume_reading(&mut self);
    fn is_reading(&self) -> bool;
    fn write_buffer_size(&self) -> usize;
    fn write_buffer_limits(&self) -> WriteBufferLimits;
    fn set_write_buffer_limits(
        &mut self,
        high: Option<usize>,
        low: Option<usize>,
    ) -> Result<(), LimitsError>;
    fn set_write_buffer_hard_limit(&mut self, limit: Option<usize>);
    fn is_writing_paused(&self) -> bool;
    fn extra(&self) -> &Extra;
    fn interest(&self) -> Interest;
    fn fail(&mut self, err: ConnectionError, io: &mut dyn Io, pool: &mut SendPool);
}

macro_rules! forward_common {
    ($t:ty, |$s:ident, $io:ident, $pool:ident| close => $close:expr, abort => $abort:expr, fail($e:ident) => $fail:expr) => {
        impl Common for $t {
            fn close(&mut self, $io: &mut dyn Io, $pool: &mut SendPool) {
                let $s = self;
                $close
            }
            fn abort(&mut self, $io: &mut dyn Io, $pool: &mut SendPool) {
                let $s = self;
                $abort
            }
            fn fail(&mut self, $e: ConnectionError, $io: &mut dyn Io, $pool: &mut SendPool) {
                let $s = self;
                $fail
            }
            fn is_closing(&self) -> bool {
                <$t>::is_closing(self)
            }
            fn pause_reading(&mut self) {
                <$t>::pause_reading(self)
            }
            fn resume_reading(&mut self) {
                <$t>::resume_reading(self)
            }
            fn is_reading(&self) -> bool {
                <$t>::is_reading(self)
            }
            fn write_buffer_size(&self) -> usize {
                <$t>::write_buffer_size(self)
            }
            fn write_buffer_limits(&self) -> WriteBufferLimits {
                <$t>::write_buffer_limits(self)
            }
            fn set_write_buffer_limits(
                &mut self,
                high: Option<usize>,
                low: Option<usize>,
            ) -> Result<(), LimitsError> {
                <$t>::set_write_buffer_limits(self, high, low)
            }
            fn set_write_buffer_hard_limit(&mut self, limit: Option<usize>) {
                <$t>::set_write_buffer_hard_limit(self, limit)
            }
            fn is_writing_paused(&self) -> bool {
                <$t>::is_writing_paused(self)
            }
            fn extra(&self) -> &Extra {
                <$t>::extra(self)
            }
            fn interest(&self) -> Interest {
                <$t>::interest(self)
            }
        }
    };
}

forward_common!(StreamTransport, |t, io, pool| close => t.close(io, pool), abort => t.abort(io, pool), fail(e) => t.fail(e, io, pool));
forward_common!(DatagramTransport, |t, io, _pool| close => t.close(io), abort => t.abort(io), fail(e) => t.fail(e, io));

/// A subprocess has no buffer and no read side of its own (its pipes have); closing it
/// is done by the registry, which also reaches its pipes and the driver
/// (`Core::close_subprocess`), so only the state change is here.
impl Common for SubprocessTransport {
    fn close(&mut self, _: &mut dyn Io, _: &mut SendPool) {
        self.start_closing();
    }
    fn abort(&mut self, _: &mut dyn Io, _: &mut SendPool) {
        self.start_closing();
    }
    fn fail(&mut self, _: ConnectionError, _: &mut dyn Io, _: &mut SendPool) {
        self.start_closing();
    }
    fn is_closing(&self) -> bool {
        SubprocessTransport::is_closing(self)
    }
    fn pause_reading(&mut self) {}
    fn resume_reading(&mut self) {}
    fn is_reading(&self) -> bool {
        false
    }
    fn write_buffer_size(&self) -> usize {
        0
    }
    fn write_buffer_limits(&self) -> WriteBufferLimits {
        WriteBufferLimits::default()
    }
    fn set_write_buffer_limits(
        &mut self,
        _: Option<usize>,
        _: Option<usize>,
    ) -> Result<(), LimitsError> {
        Ok(())
    }
    fn set_write_buffer_hard_limit(&mut self, _: Option<usize>) {}
    fn is_writing_paused(&self) -> bool {
        false
    }
    fn extra(&self) -> &Extra {
        SubprocessTransport::extra(self)
    }
    fn interest(&self) -> Interest {
        Interest::default()
    }
}

/// A slot's protocol: a stream protocol, a datagram protocol or a subprocess protocol.
/// A subprocess's pipe slot holds [`Pipe`](AnyProtocol::Pipe): its callbacks are routed
/// to the subprocess's protocol, lent to the call as [`Routed`](AnyProtocol::Routed).
pub(crate) enum AnyProtocol {
    Stream(Box<dyn Protocol>),
    Datagram(Box<dyn DatagramProtocol>),
    Subprocess(Box<dyn SubprocessProtocol>),
    /// The slot is a subprocess's pipe (see `Entry::pipe_of`).
    Pipe,
    /// A subprocess protocol answering for its pipe `fd` for the length of one call.
    Routed(u32, Box<dyn SubprocessProtocol>),
}

impl AnyProtocol {
    pub(crate) fn stream(&mut self) -> Option<&mut dyn Protocol> {
        match self {
            AnyProtocol::Stream(p) => Some(&mut **p),
            _ => None,
        }
    }

    pub(crate) fn datagram(&mut self) -> Option<&mut dyn DatagramProtocol> {
        match self {
            AnyProtocol::Datagram(p) => Some(&mut **p),
            _ => None,
        }
    }

    pub(crate) fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        match self {
            AnyProtocol::Stream(p) => p.connection_made(ctx),
            AnyProtocol::Datagram(p) => p.connection_made(ctx),
            AnyProtocol::Subprocess(p) => p.connection_made(ctx),
            AnyProtocol::Routed(..) => Ok(()),
            AnyProtocol::Pipe => Ok(()),
        }
    }

    pub(crate) fn pause_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        match self {
            AnyProtocol::Stream(p) => p.pause_writing(ctx),
            AnyProtocol::Datagram(p) => p.pause_writing(ctx),
            AnyProtocol::Subprocess(p) => p.pause_writing(ctx),
            AnyProtocol::Routed(_, p) => p.pause_writing(ctx),
            AnyProtocol::Pipe => Ok(()),
        }
    }

    pub(crate) fn resume_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        match self {
            AnyProtocol::Stream(p) => p.resume_writing(ctx),
            AnyProtocol::Datagram(p) => p.resume_writing(ctx),
            AnyProtocol::Subprocess(p) => p.resume_writing(ctx),
            AnyProtocol::Routed(_, p) => p.resume_writing(ctx),
            AnyProtocol::Pipe => Ok(()),
        }
    }

    pub(crate) fn connection_lost(
        &mut self,
        ctx: &mut Ctx<'_>,
        err: Option<ConnectionError>,
    ) -> CallbackResult {
        match self {
            AnyProtocol::Stream(p) => p.connection_lost(ctx, err),
            AnyProtocol::Datagram(p) => p.connection_lost(ctx, err),
            AnyProtocol::Subprocess(p) => p.connection_lost(ctx, err),
            AnyProtocol::Routed(fd, p) => p.pipe_connection_lost(ctx, *fd, err),
            AnyProtocol::Pipe => Ok(()),
        }
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        match self {
            AnyProtocol::Stream(p) => p.poll_timeout(),
            AnyProtocol::Datagram(p) => p.poll_timeout(),
            _ => None,
        }
    }

    pub(crate) fn handle_timeout(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        match self {
            AnyProtocol::Stream(p) => p.handle_timeout(ctx),
            AnyProtocol::Datagram(p) => p.handle_timeout(ctx),
            _ => Ok(()),
        }
    }

    /// Data read from a subprocess's pipe: `pipe_data_received(fd, data)`.
    pub(crate) fn pipe_data(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        match self {
            AnyProtocol::Routed(fd, p) => p.pipe_data_received(ctx, *fd, data),
            _ => Ok(()),
        }
    }

    /// `process_exited`.
    pub(crate) fn process_exited(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        match self {
            AnyProtocol::Subprocess(p) => p.process_exited(ctx),
            _ => Ok(()),
        }
    }
}
