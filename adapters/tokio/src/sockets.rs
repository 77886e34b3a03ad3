//! The loop's socket table and its [`Io`] implementation.
//!
//! Each connection's tokio socket keeps tokio's own readiness: a read or write that finds
//! the socket not ready returns `Pending` after storing the connection's waker, which the
//! core sees as `WouldBlock`; the next edge wakes that waker and queues the connection
//! (`wake.rs`). Reads and single-buffer writes go through tokio's `poll_read` /
//! `poll_write`, which clear the readiness on a short read or write (Linux raises a new
//! edge when more arrives), so the `EAGAIN` call that would confirm it is skipped.

use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use aioport::{Handle, Io};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::unix::pipe;
use tokio::net::{TcpStream, UnixStream};

use aioport_async_kit::ServerId;
use aioport_async_kit::sendfile::try_sendfile_fd;
use aioport_async_kit::wake::{Key, KeyWaker, Shared};

/// A connected stream socket, or one end of a pipe (or any descriptor a pipe transport
/// was given: a socket, a tty). Shared (`Rc`) only with its watcher (see
/// [`Conn::poll_idle_error`]), which is dropped before every read or write.
#[derive(Debug)]
pub(crate) enum Sock {
    Tcp(Rc<TcpStream>),
    Unix(Rc<UnixStream>),
    PipeRead(Rc<pipe::Receiver>),
    PipeWrite(Rc<pipe::Sender>),
}

/// Runs `$e` with `$s` bound to the runtime's I/O object of every kind of [`Sock`].
macro_rules! each {
    ($sock:expr, $s:ident => $e:expr) => {
        match $sock {
            Sock::Tcp($s) => $e,
            Sock::Unix($s) => $e,
            Sock::PipeRead($s) => $e,
            Sock::PipeWrite($s) => $e,
        }
    };
}

/// A watcher: tokio's `ready(Interest::ERROR)`, which completes when the descriptor
/// reports `EPOLLERR` (and not for data, EOF or room to write). On a socket that is a
/// pending error; on the write end of a pipe, the read end closed.
type Watch = Pin<Box<dyn Future<Output = io::Result<tokio::io::Ready>>>>;

fn watcher_alive() -> io::Error {
    io::Error::other("aioport-tokio: a socket was used while its watcher held it")
}

fn wrong_direction() -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, "aioport-tokio: this pipe end goes the other way")
}

impl Sock {
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        each!(self, s => s.as_fd())
    }

    pub(crate) fn tcp(s: TcpStream) -> Sock {
        Sock::Tcp(Rc::new(s))
    }

    pub(crate) fn unix(s: UnixStream) -> Sock {
        Sock::Unix(Rc::new(s))
    }

    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        fn read<S: AsyncRead + Unpin>(
            s: &mut Rc<S>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            match Rc::get_mut(s) {
                Some(s) => Pin::new(s).poll_read(cx, buf),
                None => Poll::Ready(Err(watcher_alive())),
            }
        }
        match self {
            Sock::Tcp(s) => read(s, cx, buf),
            Sock::Unix(s) => read(s, cx, buf),
            Sock::PipeRead(s) => read(s, cx, buf),
            Sock::PipeWrite(_) => Poll::Ready(Err(wrong_direction())),
        }
    }

    /// One `send` for one buffer (the echo fast path; tokio then clears the readiness on a
    /// short write), one `writev` for several.
    fn poll_send(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        fn send<S: AsyncWrite + Unpin>(
            s: &mut Rc<S>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            match Rc::get_mut(s) {
                Some(s) => poll_send(Pin::new(s), cx, bufs),
                None => Poll::Ready(Err(watcher_alive())),
            }
        }
        match self {
            Sock::Tcp(s) => send(s, cx, bufs),
            Sock::Unix(s) => send(s, cx, bufs),
            Sock::PipeWrite(s) => send(s, cx, bufs),
            Sock::PipeRead(_) => Poll::Ready(Err(wrong_direction())),
        }
    }

    /// Ready when tokio believes the socket readable; otherwise stores `cx`'s waker. The
    /// write end of a pipe "reads" only its read end closing: see [`Conn::poll_hangup`].
    pub(crate) fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Sock::Tcp(s) => s.poll_read_ready(cx),
            Sock::Unix(s) => s.poll_read_ready(cx),
            Sock::PipeRead(s) => s.poll_read_ready(cx),
            Sock::PipeWrite(_) => Poll::Pending,
        }
    }

    /// Ready when tokio believes the socket writable; otherwise stores `cx`'s waker.
    pub(crate) fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Sock::Tcp(s) => s.poll_write_ready(cx),
            Sock::Unix(s) => s.poll_write_ready(cx),
            Sock::PipeWrite(s) => s.poll_write_ready(cx),
            Sock::PipeRead(_) => Poll::Pending,
        }
    }

    /// `shutdown(SHUT_WR)` of a socket; nothing for a pipe, whose `write_eof` is a close
    /// (spec §4.4).
    fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Sock::Tcp(_) | Sock::Unix(_) => {
                Ok(rustix::net::shutdown(self.fd(), rustix::net::Shutdown::Write)?)
            }
            Sock::PipeRead(_) | Sock::PipeWrite(_) => Ok(()),
        }
    }

    pub(crate) fn peer_addr(&self) -> Option<SocketAddr> {
        match self {
            Sock::Tcp(s) => s.peer_addr().ok(),
            _ => None,
        }
    }

    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Sock::Tcp(s) => s.local_addr().ok(),
            _ => None,
        }
    }

    /// A watcher that completes on `EPOLLERR` (see [`Watch`]); for the write end of a
    /// pipe also on `EPOLLHUP`, which is how a socket given as a pipe reports its peer
    /// closing (a real pipe reports `EPOLLERR`).
    fn watch(&self) -> Watch {
        match self {
            Sock::PipeWrite(s) => {
                let s = s.clone();
                Box::pin(async move { s.ready(Interest::ERROR | Interest::READABLE).await })
            }
            _ => each!(self, s => {
                let s = s.clone();
                Box::pin(async move { s.ready(Interest::ERROR).await })
            }),
        }
    }

    /// Takes the socket's pending error (`SO_ERROR`); when there is none, forgets tokio's
    /// error readiness, so that the next watcher waits for a new edge.
    fn take_error(&self) -> Option<io::Error> {
        let pending = match self {
            Sock::Tcp(s) => s.take_error(),
            Sock::Unix(s) => s.take_error(),
            Sock::PipeRead(_) | Sock::PipeWrite(_) => Ok(None),
        };
        match pending {
            Ok(Some(e)) | Err(e) => Some(e),
            Ok(None) => {
                let spurious = || Err::<(), _>(io::Error::from(io::ErrorKind::WouldBlock));
                let _ = match self {
                    Sock::Tcp(s) => s.try_io(Interest::ERROR, spurious),
                    Sock::Unix(s) => s.try_io(Interest::ERROR, spurious),
                    // A pipe has no pending error to take; its watcher is for the write
                    // end, where `EPOLLERR` is the read end closing, which is sticky.
                    Sock::PipeRead(_) | Sock::PipeWrite(_) => Ok(()),
                };
                None
            }
        }
    }

    /// The write end of a pipe (its read interest is the read end closing).
    pub(crate) fn is_write_pipe(&self) -> bool {
        matches!(self, Sock::PipeWrite(_))
    }

    pub(crate) fn set_nodelay(&self) {
        if let Sock::Tcp(s) = self {
            // Only latency is at stake if this fails.
            let _ = s.set_nodelay(true);
        }
    }
}

/// One buffer with `write` (tokio then clears the readiness on a short write), several
/// with `write_vectored`.
fn poll_send<S: AsyncWrite>(
    s: Pin<&mut S>,
    cx: &mut Context<'_>,
    bufs: &[IoSlice<'_>],
) -> Poll<io::Result<usize>> {
    match bufs {
        [one] => s.poll_write(cx, one),
        _ => s.poll_write_vectored(cx, bufs),
    }
}

/// One socket of the table.
pub(crate) struct Conn {
    /// The transport this socket belongs to (the slot's current generation).
    pub(crate) handle: Handle,
    pub(crate) sock: Sock,
    /// The connection's wake-up state (its "queued" flag) and the waker tokio stores.
    pub(crate) wake: Arc<KeyWaker>,
    pub(crate) waker: Waker,
    /// In the loop's local ready list.
    pub(crate) queued: bool,
    /// The server that accepted it.
    pub(crate) server: Option<ServerId>,
    /// While the transport wants neither to read nor to write, and on the write end of a
    /// pipe: waits for `EPOLLERR`, so that a reset or a closed read end ends the transport
    /// without waiting for the next I/O.
    watch: Option<Watch>,
}

impl Conn {
    /// For a transport that wants no I/O: the socket's pending error once `EPOLLERR` was
    /// reported (a reset while paused for reading, say); otherwise `None`, with the
    /// connection's waker stored to hear of it. One allocation per idle period, no
    /// syscall until an error edge.
    pub(crate) fn poll_idle_error(&mut self) -> Option<io::Error> {
        match self.poll_watch() {
            Poll::Pending => None,
            Poll::Ready(Ok(())) => self.sock.take_error(),
            Poll::Ready(Err(e)) => Some(e),
        }
    }

    /// For the write end of a pipe: ready once its read end closed (`EPOLLERR`), which the
    /// core hears as readability ([`Registry::on_readable`](aioport::Registry::on_readable)).
    pub(crate) fn poll_hangup(&mut self) -> Poll<()> {
        self.poll_watch().map(drop)
    }

    fn poll_watch(&mut self) -> Poll<io::Result<()>> {
        let watch = self.watch.get_or_insert_with(|| self.sock.watch());
        let mut cx = Context::from_waker(&self.waker);
        let r = watch.as_mut().poll(&mut cx);
        if r.is_ready() {
            self.watch = None;
        }
        r.map_ok(drop)
    }

    /// The transport does I/O: the socket is its own again. True if a watcher was
    /// dropped (the loop then arms a new one if the transport still needs it).
    pub(crate) fn end_idle(&mut self) -> bool {
        self.watch.take().is_some()
    }
}

/// The loop's sockets, indexed by [`Handle::index`]; the `Io` the registry drives.
pub(crate) struct Sockets {
    slots: Vec<Option<Conn>>,
    shared: Arc<Shared>,
    /// `try_recv` calls so far: the loop stops calling `on_readable` when one made none.
    pub(crate) recv_calls: u64,
    /// The last `try_recv` filled its buffer: more may be waiting.
    pub(crate) recv_more: bool,
    pub(crate) nodelay: bool,
    /// Transports whose socket was closed (or whose connect failed) since the loop last
    /// looked: their remote handles learn it once `connection_lost` ran.
    pub(crate) closed: Vec<Handle>,
    /// Open connections per server (by [`ServerId`]), for `wait_closed`.
    clients: Vec<usize>,
    /// Transports whose watcher an I/O call dropped: served again, to re-arm it.
    pub(crate) rearm: Vec<Handle>,
    /// The datagram endpoints (`datagram.rs`).
    pub(crate) dgram: crate::datagram::DatagramSockets,
    /// The children (`process.rs`); their pipes are in the stream table.
    pub(crate) procs: crate::process::Procs,
}

impl Sockets {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Sockets {
            slots: Vec::new(),
            shared,
            recv_calls: 0,
            recv_more: false,
            nodelay: true,
            closed: Vec::new(),
            clients: Vec::new(),
            rearm: Vec::new(),
            dgram: Default::default(),
            procs: Default::default(),
        }
    }

    /// Adds the connected socket of `h`, accepted by `server` if any.
    pub(crate) fn insert(&mut self, h: Handle, sock: Sock, server: Option<ServerId>) {
        let index = h.index() as usize;
        if self.slots.len() <= index {
            self.slots.resize_with(index + 1, || None);
        }
        if let Some(id) = server {
            let i = id.get() as usize;
            if self.clients.len() <= i {
                self.clients.resize(i + 1, 0);
            }
            self.clients[i] += 1;
        }
        let (wake, waker) = KeyWaker::new(Key::Conn(h), &self.shared);
        self.slots[index] =
            Some(Conn { handle: h, sock, wake, waker, queued: false, server, watch: None });
    }

    /// The open connections `server` accepted. Walks the table: for rare calls
    /// (`close_clients`), never on the I/O path.
    pub(crate) fn clients_of(&self, server: ServerId) -> Vec<Handle> {
        let of = |c: &&Conn| c.server == Some(server);
        self.slots.iter().flatten().filter(of).map(|c| c.handle).collect()
    }

    /// How many connections `server` accepted are still open.
    pub(crate) fn client_count(&self, server: ServerId) -> usize {
        self.clients.get(server.get() as usize).copied().unwrap_or(0)
    }

    pub(crate) fn get_mut(&mut self, h: Handle) -> Option<&mut Conn> {
        self.slots.get_mut(h.index() as usize)?.as_mut().filter(|c| c.handle == h)
    }

    /// Drops `h`'s socket (closing it; tokio deregisters it).
    pub(crate) fn remove(&mut self, h: Handle) -> Option<Conn> {
        let slot = self.slots.get_mut(h.index() as usize)?;
        if slot.as_ref().is_none_or(|c| c.handle != h) {
            return None;
        }
        let conn = slot.take()?;
        if let Some(id) = conn.server {
            self.clients[id.get() as usize] -= 1;
        }
        Some(conn)
    }
}

fn not_open() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "aioport-tokio: no open socket for this handle")
}

impl Io for Sockets {
    fn try_send(&mut self, h: Handle, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let c = self.get_mut(h).ok_or_else(not_open)?;
        if c.end_idle() {
            self.rearm.push(h);
        }
        let c = self.get_mut(h).ok_or_else(not_open)?;
        let mut cx = Context::from_waker(&c.waker);
        loop {
            match c.sock.poll_send(&mut cx, bufs) {
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Poll::Ready(r) => return r,
                Poll::Pending => return Err(io::ErrorKind::WouldBlock.into()),
            }
        }
    }

    fn sendfile_supported(&mut self, h: Handle) -> bool {
        self.get_mut(h).is_some_and(|c| matches!(c.sock, Sock::Tcp(_) | Sock::Unix(_)))
    }

    /// `sendfile(2)` inside tokio's `try_io`, which clears the write readiness on
    /// `WouldBlock`; `poll_write_ready` then stores the connection's waker, as tokio's
    /// `poll_write` does for a refused `try_send`.
    fn try_sendfile(
        &mut self,
        h: Handle,
        file: &dyn aioport::stream::SendfileSource,
        offset: u64,
        count: usize,
    ) -> io::Result<usize> {
        let c = self.get_mut(h).ok_or_else(not_open)?;
        if c.end_idle() {
            self.rearm.push(h);
        }
        let c = self.get_mut(h).ok_or_else(not_open)?;
        let mut cx = Context::from_waker(&c.waker);
        let fd = c.sock.fd();
        let send = || try_sendfile_fd(fd, file, offset, count);
        // Bounded: each `WouldBlock` clears the readiness, so the next `poll_write_ready`
        // is `Pending` unless a new edge came in between.
        for _ in 0..16 {
            match c.sock.poll_write_ready(&mut cx) {
                Poll::Pending => return Err(io::ErrorKind::WouldBlock.into()),
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Ready(Ok(())) => {}
            }
            let r = match &c.sock {
                Sock::Tcp(s) => s.try_io(Interest::WRITABLE, send),
                Sock::Unix(s) => s.try_io(Interest::WRITABLE, send),
                // Never asked: `sendfile_supported` says no for pipes.
                Sock::PipeRead(_) | Sock::PipeWrite(_) => {
                    return Err(io::ErrorKind::Unsupported.into());
                }
            };
            match r {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                r => return r,
            }
        }
        // Still racing edges: report `WouldBlock` with the waker stored.
        let _ = c.sock.poll_write_ready(&mut cx);
        Err(io::ErrorKind::WouldBlock.into())
    }

    fn try_recv(&mut self, h: Handle, buf: &mut [u8]) -> io::Result<usize> {
        self.recv_calls += 1;
        self.recv_more = false;
        let len = buf.len();
        let c = self.get_mut(h).ok_or_else(not_open)?;
        if c.end_idle() {
            self.rearm.push(h);
        }
        let c = self.get_mut(h).ok_or_else(not_open)?;
        let mut cx = Context::from_waker(&c.waker);
        let mut rb = ReadBuf::new(buf);
        loop {
            match c.sock.poll_read(&mut cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    self.recv_more = n == len && n > 0;
                    return Ok(n);
                }
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => return Err(io::ErrorKind::WouldBlock.into()),
            }
        }
    }

    fn shutdown_write(&mut self, h: Handle) -> io::Result<()> {
        self.get_mut(h).ok_or_else(not_open)?.sock.shutdown_write()
    }

    fn close(&mut self, h: Handle) {
        if !self.dgram.remove(h) && self.remove(h).is_none() {
            self.procs.close(h);
        }
        self.closed.push(h);
    }

    fn send_signal(&mut self, h: Handle, sig: i32) -> io::Result<()> {
        self.procs.send_signal(h, sig)
    }

    fn try_send_to(
        &mut self,
        h: Handle,
        data: &[u8],
        addr: Option<&aioport::DatagramAddr>,
    ) -> io::Result<usize> {
        self.dgram.send_to(h, data, addr)
    }

    fn try_recv_from(
        &mut self,
        h: Handle,
        buf: &mut [u8],
    ) -> io::Result<aioport::datagram::RecvMeta> {
        self.dgram.recv_from(h, buf)
    }
}
