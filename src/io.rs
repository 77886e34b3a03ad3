//! The driver's side of I/O: the [`Io`] trait and [`Interest`].

use std::io::{self, IoSlice};

use crate::Handle;
use crate::datagram::{DatagramAddr, RecvMeta};
use crate::stream::SendfileSource;

/// What the core asks of the driver's sockets. A driver implements it over **its socket
/// table only** (never over the struct that also holds the registry, or the borrows
/// collide) and passes it as `&mut dyn Io` to every core call that can run a callback.
///
/// Every method names the transport by its [`Handle`]. Results follow `std::io`:
/// `Err(WouldBlock)` means "not now, I will report readiness"; any other error is fatal
/// for that transport and ends it with `connection_lost(Some(err))`.
///
/// A completion-based driver (io_uring, IOCP) that cannot send synchronously implements
/// [`try_send`](Io::try_send) as `Err(WouldBlock)` and moves bytes with
/// `poll_transmit` / `handle_sent`; the flow-control rules stay the same.
pub trait Io {
    /// Sends from `bufs` in order (one vectored write). Returns how many bytes the socket
    /// took; must not exceed the total length of `bufs`.
    fn try_send(&mut self, h: Handle, bufs: &[IoSlice<'_>]) -> io::Result<usize>;

    /// Receives into `buf`. `Ok(0)` with a non-empty `buf` is the peer's EOF.
    fn try_recv(&mut self, h: Handle, buf: &mut [u8]) -> io::Result<usize>;

    /// Shuts down the write side (`shutdown(SHUT_WR)`): called once, after the queue
    /// drained following `write_eof()`.
    fn shutdown_write(&mut self, h: Handle) -> io::Result<()>;

    /// Closes the socket or pipe. Called exactly once per transport; after it the driver
    /// reports nothing more for `h` (any such call returns `DriverError::Closed`).
    fn close(&mut self, h: Handle);

    /// Closes without flushing: after `abort()`, a fatal error or a panic — instead of
    /// [`close`](Io::close), never in addition to it. The default is `close`; override it
    /// to tell the two apart (a serving TLS engine skips close_notify on abort).
    fn abort(&mut self, h: Handle) {
        self.close(h);
    }

    /// Sends one datagram, whole, to `addr` (`None`: the connected peer). Only called for
    /// datagram transports; the default refuses with `Unsupported`, so stream-only
    /// drivers need not implement it.
    fn try_send_to(
        &mut self,
        h: Handle,
        data: &[u8],
        addr: Option<&DatagramAddr>,
    ) -> io::Result<usize> {
        let _ = (h, data, addr);
        Err(io::ErrorKind::Unsupported.into())
    }

    /// Sends signal `sig` (a POSIX number, see [`signal`](crate::signal)) to the child
    /// process `h`. Only called for subprocess transports, only while the exit was not
    /// reported ([`Registry::handle_exited`](crate::Registry::handle_exited)): a driver
    /// watching the child with a pidfd never hits a recycled pid. A child that exited but
    /// is not reported yet should answer `Ok` (or `ESRCH`, which the core treats as
    /// `Ok`, as asyncio does). The default refuses with `Unsupported`.
    fn send_signal(&mut self, h: Handle, sig: i32) -> io::Result<()> {
        let _ = (h, sig);
        Err(io::ErrorKind::Unsupported.into())
    }

    /// Receives one datagram into `buf`: its length, sender, and whether it was truncated
    /// to fit. Only called for datagram transports; the default refuses with
    /// `Unsupported`.
    fn try_recv_from(&mut self, h: Handle, buf: &mut [u8]) -> io::Result<RecvMeta> {
        let _ = (h, buf);
        Err(io::ErrorKind::Unsupported.into())
    }

    /// True when [`try_sendfile`](Io::try_sendfile) can move file bytes to `h` without
    /// copying them through user space (a plain TCP or Unix socket). Asked once, when a
    /// sendfile starts; `false` (the default) makes the transport use the read-and-write
    /// fallback, or refuse with [`SendfileError::NotAvailable`](crate::stream::SendfileError::NotAvailable)
    /// when the caller denied it.
    fn sendfile_supported(&mut self, h: Handle) -> bool {
        let _ = h;
        false
    }

    /// Sends up to `count` bytes of `file`, starting at `offset`, to `h` (`sendfile(2)`):
    /// how many went out. `Ok(0)` means the file ends at `offset`. The core calls it only
    /// after [`sendfile_supported`](Io::sendfile_supported) said yes and while nothing is
    /// queued on the transport; `WouldBlock` waits for writability like
    /// [`try_send`](Io::try_send). The driver finds its file in `file` (usually by
    /// [`SendfileSource::as_any`] and a downcast to its own type); the file position is not
    /// used. The default refuses with `Unsupported`.
    fn try_sendfile(
        &mut self,
        h: Handle,
        file: &dyn SendfileSource,
        offset: u64,
        count: usize,
    ) -> io::Result<usize> {
        let _ = (h, file, offset, count);
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// What a transport wants from the driver's readiness source right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Interest {
    /// The transport would read if the socket were readable.
    pub read: bool,
    /// The transport has queued bytes to send.
    pub write: bool,
}
