//! Pipe transports (asyncio's `connect_read_pipe` / `connect_write_pipe`, spec §13) over
//! any file descriptor smol's reactor can wait on: pipes and FIFOs, sockets, ttys — as on
//! the poll loop.
//!
//! The descriptor is made non-blocking (it is shared with whoever else holds a duplicate
//! of the open file description, as in asyncio) and registered with async-io before the
//! transport exists, so a descriptor epoll refuses (`/dev/null`) is an error, not a
//! transport that fails later. The core asks to read the write end too: readiness there
//! (`EPOLLERR` on a pipe, `EPOLLIN`/`EPOLLRDHUP` on a socket) means the read end closed,
//! and the core then ends the transport — `connection_lost(None)` with an empty buffer,
//! `BrokenPipe` with bytes still queued (spec §13.68).

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Instant;

use aioport::{Extra, Protocol, ReadPipeHandle, TransportHandle, WritePipeHandle};
use aioport_async_kit::pipe;
use async_io::Async;

use crate::sockets::Sock;
use crate::{Error, Loop};

/// Refuses what the loop cannot wait on, then registers `fd` (non-blocking) with async-io.
fn prepare(fd: OwnedFd) -> Result<Async<File>, Error> {
    pipe::prepare(&fd)?;
    Ok(Async::new(File::from(fd))?)
}

impl Loop {
    /// Reads from `fd` with `protocol` (asyncio's `connect_read_pipe`): `data_received`,
    /// then `eof_received` and `connection_lost(None)` when the writer closes. The loop
    /// owns `fd` from now on and closes it with the transport. `connection_made` is
    /// delivered before this returns; reading starts when the loop runs.
    ///
    /// ```
    /// # use std::cell::RefCell; use std::rc::Rc; use std::time::Duration;
    /// # use aioport::{CallbackResult, Ctx, Protocol};
    /// use std::io::Write;
    /// struct Collect(Rc<RefCell<Vec<u8>>>);
    /// impl Protocol for Collect {
    ///     fn data_received(&mut self, _: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
    ///         self.0.borrow_mut().extend_from_slice(data);
    ///         Ok(())
    ///     }
    /// }
    /// async_io::block_on(async {
    ///     let (reader, mut writer) = std::io::pipe()?;
    ///     let mut lp = aioport_smol::Loop::new();
    ///     let got = Rc::new(RefCell::new(Vec::new()));
    ///     lp.connect_read_pipe(reader.into(), Box::new(Collect(got.clone())))?;
    ///     writer.write_all(b"hi")?;
    ///     drop(writer);
    ///     lp.run_until_timeout(|| got.borrow().len() == 2, Duration::from_secs(10)).await?;
    ///     assert_eq!(&got.borrow()[..], b"hi");
    ///     Ok::<(), Box<dyn std::error::Error>>(())
    /// })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::NotAPipe`] for a regular file, directory or block device; [`Error::Io`] if
    /// it cannot be made non-blocking or polled (`/dev/null`). `fd` is closed and
    /// `protocol` dropped without a callback.
    pub fn connect_read_pipe(
        &mut self,
        fd: OwnedFd,
        protocol: Box<dyn Protocol>,
    ) -> Result<ReadPipeHandle, Error> {
        let extra = Extra::default().with_fd(fd.as_raw_fd());
        let sock = Sock::PipeRead(prepare(fd)?);
        let h = self.registry.insert_read_pipe(protocol, extra);
        self.enter_pipe(h, sock);
        Ok(h)
    }

    /// Writes to `fd` with `protocol` (asyncio's `connect_write_pipe`): buffered writes
    /// with flow control; `write_eof` closes after the flush. When the read end closes,
    /// the transport ends: `connection_lost(None)` if nothing was queued, a `BrokenPipe`
    /// error otherwise. The loop owns `fd` from now on. `connection_made` is delivered
    /// before this returns.
    ///
    /// # Errors
    ///
    /// As [`connect_read_pipe`](Self::connect_read_pipe).
    pub fn connect_write_pipe(
        &mut self,
        fd: OwnedFd,
        protocol: Box<dyn Protocol>,
    ) -> Result<WritePipeHandle, Error> {
        let extra = Extra::default().with_fd(fd.as_raw_fd());
        let sock = Sock::PipeWrite(prepare(fd)?);
        let h = self.registry.insert_write_pipe(protocol, extra);
        self.enter_pipe(h, sock);
        Ok(h)
    }

    fn enter_pipe(&mut self, h: impl TransportHandle, sock: Sock) {
        let now = Instant::now();
        let h = h.into();
        self.io.insert(h, sock, None);
        self.registry.dispatch(now, &mut self.io);
        // Its first serve arms its waker for what the transport wants.
        self.queue(h);
        self.after_registry(now);
    }
}
