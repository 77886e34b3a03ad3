//! Sendfile on the poll loop: zero-copy `sendfile(2)` for TCP and Unix sockets, the
//! core's flow-controlled fallback elsewhere (TLS transports, pipes), asyncio's
//! `loop.sendfile` as [`Loop::sendfile`].

use std::fs::File;
use std::io;
use std::time::Instant;

use aioport::stream::{SendfileError, SendfileFallback, SendfileSource};
use aioport::{Handle, WriteHandle};
pub use aioport_async_kit::sendfile::FileSource;
use aioport_async_kit::sendfile::try_sendfile_fd;

use crate::Error;
use crate::event_loop::{Loop, RunGuard};
use crate::sockets::{Sock, Sockets};

/// Zero-copy to stream sockets only: pipes (and children's stdin) use the fallback.
pub(crate) fn supported(io: &Sockets, h: Handle) -> bool {
    io.get(h).is_some_and(|c| matches!(c.sock, Sock::Tcp(_) | Sock::Unix(_)))
}

/// One `sendfile(2)` from `file` at `offset` to `h`'s socket. Like a send, `WouldBlock`
/// clears the writability cache; a short count does not (the file may simply have
/// ended), so the next call finds out.
pub(crate) fn try_sendfile(
    io: &mut Sockets,
    h: Handle,
    file: &dyn SendfileSource,
    offset: u64,
    count: usize,
) -> io::Result<usize> {
    let Some(c) = io.get_mut(h) else { return Err(io::ErrorKind::Unsupported.into()) };
    if !c.writable {
        return Err(io::ErrorKind::WouldBlock.into());
    }
    let r = try_sendfile_fd(c.sock.fd(), file, offset, count);
    if r.as_ref().is_err_and(|e| e.kind() == io::ErrorKind::WouldBlock) {
        c.writable = false;
    }
    r
}

impl Loop {
    /// Sends `count` bytes of `file` from `offset` through the transport `h` (`None`:
    /// to the end of the file) and runs the loop until it is done: asyncio's
    /// `await loop.sendfile(transport, file, offset, count, fallback)`. Returns the bytes
    /// sent. Other transports are served meanwhile.
    ///
    /// Zero-copy (`sendfile(2)`) on TCP and Unix sockets once what was queued before is
    /// flushed; elsewhere (TLS transports, pipes), or with [`SendfileFallback::Force`],
    /// the file is read in chunks written with flow control, so the transport's buffer
    /// stays within its high-water mark plus one chunk however slowly the peer reads.
    /// `fallback` takes a `bool` as asyncio does (`false`: zero-copy or
    /// [`SendfileError::NotAvailable`]). While it runs, writes to `h` from callbacks fail
    /// with `WriteError::SendfileInProgress`. The file position is left at
    /// `offset + sent` when anything was sent (asyncio's rule), unchanged otherwise.
    /// From a protocol callback use [`Ctx::sendfile`](aioport::Ctx::sendfile) with a
    /// [`FileSource`] instead: it never blocks.
    ///
    /// # Errors
    ///
    /// [`Error::Sendfile`] — refused at the start (a zero `count`, a closing transport,
    /// no zero-copy with `fallback = false`, a stale handle) or stopped (the transport
    /// was closed or failed, the file could not be read); [`Error::AlreadyRunning`] from
    /// a callback; [`Error::Io`] when the file cannot be duplicated or seeked, or the
    /// poller failed.
    pub fn sendfile<H: WriteHandle>(
        &mut self,
        h: H,
        file: &File,
        offset: u64,
        count: Option<u64>,
        fallback: impl Into<SendfileFallback>,
    ) -> Result<u64, Error> {
        let _guard = RunGuard::enter()?;
        let handle: Handle = h.into();
        // A duplicate shares the open file (and its position) with `file`.
        let source = Box::new(FileSource::new(file.try_clone()?));
        let now = Instant::now();
        let started = self.registry.enter(now, &mut self.io, |ctx| {
            ctx.sendfile(h, source, offset, count, fallback.into())
        });
        self.after_registry(now);
        started?;
        let outcome = loop {
            if let Some(outcome) = self.take_sendfile_done(handle) {
                break outcome;
            }
            self.turn(None)?;
        };
        aioport_async_kit::sendfile::seek_past_sent(file, offset, &outcome)?;
        Ok(outcome?)
    }

    /// The outcome of the driver-started sendfile on `h`, if it ended. Sendfiles are
    /// started outside callbacks only by [`sendfile`](Self::sendfile), one at a time.
    fn take_sendfile_done(&mut self, h: Handle) -> Option<Result<u64, SendfileError>> {
        let mut found = None;
        while let Some(done) = self.registry.poll_sendfile_done() {
            if done.handle == h {
                found = Some(done.outcome);
            }
        }
        found
    }
}
