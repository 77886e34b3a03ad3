//! Pipe transports (asyncio's `connect_read_pipe` / `connect_write_pipe`, spec §13) over
//! any file descriptor a loop can wait on: pipes and FIFOs, sockets, ttys.
//!
//! The descriptor is made non-blocking (it is shared with whoever else holds a duplicate
//! of the open file description, as in asyncio). The write end is registered for reading
//! too: `EPOLLERR` (a pipe) or `EPOLLIN`/`EPOLLRDHUP` (a socket) there means the read end
//! closed, and the core then ends the transport — `connection_lost(None)` with an empty
//! buffer, `BrokenPipe` with bytes still queued (spec §13.68).

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Instant;

use aioport::{Extra, Protocol, ReadPipeHandle, TransportHandle, WritePipeHandle};
use mio::Token;
use mio::unix::{SourceFd, pipe};
use rustix::fs::FileType;

use crate::sockets::Sock;
use crate::{Error, Loop};

/// The token of a trial registration (never seen by a wait: deregistered at once).
const TRIAL: Token = Token(usize::MAX - 2);

/// Refuses what a loop cannot wait on, then makes `fd` non-blocking. Some character
/// devices (`/dev/null`) pass the type check but epoll refuses them: that is checked with a
/// trial registration, before a transport exists whose protocol would hear about it.
fn prepare(fd: &OwnedFd, poll: &mio::Registry) -> Result<(), Error> {
    let stat = rustix::fs::fstat(fd).map_err(std::io::Error::from)?;
    let kind = match FileType::from_raw_mode(stat.st_mode) {
        FileType::Fifo | FileType::Socket | FileType::CharacterDevice => None,
        FileType::RegularFile => Some("a regular file"),
        FileType::Directory => Some("a directory"),
        FileType::BlockDevice => Some("a block device"),
        FileType::Symlink => Some("a symbolic link"),
        _ => Some("an unknown kind of file"),
    };
    if let Some(kind) = kind {
        return Err(Error::NotAPipe { kind });
    }
    rustix::io::ioctl_fionbio(fd, true).map_err(std::io::Error::from)?;
    let raw = fd.as_raw_fd();
    poll.register(&mut SourceFd(&raw), TRIAL, mio::Interest::READABLE)?;
    poll.deregister(&mut SourceFd(&raw))?;
    Ok(())
}

impl Loop {
    /// Reads from `fd` with `protocol` (asyncio's `connect_read_pipe`): `data_received`,
    /// then `eof_received` and `connection_lost(None)` when the writer closes. The loop owns
    /// `fd` from now on and closes it with the transport. `connection_made` is delivered
    /// before this returns.
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
    /// let (reader, mut writer) = std::io::pipe()?;
    /// let mut lp = aioport_poll::Loop::new()?;
    /// let got = Rc::new(RefCell::new(Vec::new()));
    /// lp.connect_read_pipe(reader.into(), Box::new(Collect(got.clone())))?;
    /// writer.write_all(b"hi")?;
    /// drop(writer);
    /// lp.run_until_timeout(|| lp_is_done(&got), Duration::from_secs(10))?;
    /// # fn lp_is_done(g: &Rc<RefCell<Vec<u8>>>) -> bool { g.borrow().len() == 2 }
    /// assert_eq!(&got.borrow()[..], b"hi");
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
        prepare(&fd, self.poll.registry())?;
        let extra = Extra::default().with_fd(fd.as_raw_fd());
        let sock = Sock::PipeRead(pipe::Receiver::from(fd));
        let h = self.registry.insert_read_pipe(protocol, extra);
        self.enter_pipe(h, sock)?;
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
        prepare(&fd, self.poll.registry())?;
        let extra = Extra::default().with_fd(fd.as_raw_fd());
        let sock = Sock::PipeWrite(pipe::Sender::from(fd));
        let h = self.registry.insert_write_pipe(protocol, extra);
        self.enter_pipe(h, sock)?;
        Ok(h)
    }

    fn enter_pipe(&mut self, h: impl TransportHandle, sock: Sock) -> Result<(), Error> {
        let now = Instant::now();
        if let Err(e) = self.io.insert(h.into(), sock, None) {
            // The transport never had a descriptor: it ends at once.
            self.registry.enter(now, &mut self.io, |ctx| {
                let _ = ctx.abort(h);
            });
            self.after_registry(now);
            return Err(e.into());
        }
        self.registry.dispatch(now, &mut self.io);
        self.after_registry(now);
        Ok(())
    }
}
