//! Pipe transports (asyncio's `connect_read_pipe` / `connect_write_pipe`, spec §13) over
//! any file descriptor a loop can wait on: pipes and FIFOs, sockets, ttys — the same
//! rules as the poll loop's.
//!
//! The descriptor is made non-blocking and registered with tokio as a pipe end
//! (`tokio::net::unix::pipe`, unchecked, so that sockets and ttys pass too). The write
//! end watches for `EPOLLERR` (tokio's `Interest::ERROR`), which means its read end
//! closed; the core then ends the transport — `connection_lost(None)` with an empty
//! buffer, `BrokenPipe` with bytes still queued (spec §13.68).

use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::time::Instant;

use aioport::{Extra, Protocol, ReadPipeHandle, TransportHandle, WritePipeHandle};
use tokio::net::unix::pipe;

use crate::sockets::Sock;
use crate::{Error, Loop};

impl Loop {
    /// Reads from `fd` with `protocol` (asyncio's `connect_read_pipe`): `data_received`,
    /// then `eof_received` and `connection_lost(None)` when the writer closes. The loop owns
    /// `fd` from now on and closes it with the transport. `connection_made` is delivered
    /// before this returns. Call it inside the loop's runtime.
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
    /// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    /// rt.block_on(async {
    ///     let (reader, mut writer) = std::io::pipe()?;
    ///     let mut lp = aioport_tokio::Loop::new();
    ///     let got = Rc::new(RefCell::new(Vec::new()));
    ///     lp.connect_read_pipe(reader.into(), Box::new(Collect(got.clone()))).await?;
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
    /// it cannot be made non-blocking or polled (`/dev/null`), or when called outside a
    /// tokio runtime. `fd` is closed and `protocol` dropped without a callback.
    pub async fn connect_read_pipe(
        &mut self,
        fd: OwnedFd,
        protocol: Box<dyn Protocol>,
    ) -> Result<ReadPipeHandle, Error> {
        let extra = Extra::default().with_fd(fd.as_raw_fd());
        let sock = Sock::PipeRead(Rc::new(pipe::Receiver::from_owned_fd_unchecked(prepared(fd)?)?));
        let h = self.registry.insert_read_pipe(protocol, extra);
        self.enter_pipe(h, sock);
        Ok(h)
    }

    /// Writes to `fd` with `protocol` (asyncio's `connect_write_pipe`): buffered writes
    /// with flow control; `write_eof` closes after the flush. When the read end closes,
    /// the transport ends at once, even while idle: `connection_lost(None)` if nothing was
    /// queued, a `BrokenPipe` error otherwise. The loop owns `fd` from now on.
    /// `connection_made` is delivered before this returns. Call it inside the loop's
    /// runtime.
    ///
    /// # Errors
    ///
    /// As [`connect_read_pipe`](Self::connect_read_pipe).
    pub async fn connect_write_pipe(
        &mut self,
        fd: OwnedFd,
        protocol: Box<dyn Protocol>,
    ) -> Result<WritePipeHandle, Error> {
        let extra = Extra::default().with_fd(fd.as_raw_fd());
        let sock = Sock::PipeWrite(Rc::new(pipe::Sender::from_owned_fd_unchecked(prepared(fd)?)?));
        let h = self.registry.insert_write_pipe(protocol, extra);
        self.enter_pipe(h, sock);
        Ok(h)
    }

    fn enter_pipe(&mut self, h: impl TransportHandle, sock: Sock) {
        let now = Instant::now();
        self.io.insert(h.into(), sock, None);
        self.registry.dispatch(now, &mut self.io);
        self.after_registry(now);
        // The first serve reads what already waits (or arms the write end's watcher).
        self.queue(h.into());
    }
}

/// `fd` once [`prepare`](aioport_async_kit::pipe::prepare) accepted it; registering
/// outside a runtime is refused here rather than by tokio's panic.
fn prepared(fd: OwnedFd) -> Result<OwnedFd, Error> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(Error::Io(std::io::Error::other(
            "aioport-tokio: pipe transports are made inside the loop's tokio runtime",
        )));
    }
    aioport_async_kit::pipe::prepare(&fd)?;
    Ok(fd)
}
