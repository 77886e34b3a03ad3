//! The loop's socket table and its [`Io`] implementation.
//!
//! Each connection's tokio socket keeps tokio's own readiness: a read or write that finds
//! the socket not ready returns `Pending` after storing the connection's waker, which the
//! core sees as `WouldBlock`; the next edge wakes that waker and queues the connection
//! (`wake.rs`). Reads and single-buffer writes go through tokio's `poll_read` /
//! `poll_write`, which clear the readiness on a short read or write (Linux raises a new
//! edge when more arrives), so the `EAGAIN` call that would confirm it is skipped.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use aioport::{Handle, Io};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use aioport_async_kit::ServerId;
use aioport_async_kit::wake::{Key, KeyWaker, Shared};

/// A connected stream socket. Shared (`Rc`) only with its idle watcher (see
/// [`Conn::poll_idle_error`]), which is dropped before every read or write.
#[derive(Debug)]
pub(crate) enum Sock {
    Tcp(Rc<TcpStream>),
    Unix(Rc<UnixStream>),
}

/// The idle watcher of a connection: tokio's `ready(Interest::ERROR)`, which completes
/// when the socket reports `EPOLLERR` (and not for data, EOF or room to write).
type IdleWatch = Pin<Box<dyn Future<Output = io::Result<tokio::io::Ready>>>>;

fn watcher_alive() -> io::Error {
    io::Error::other("aioport-tokio: a socket was used while its idle watcher held it")
}

impl Sock {
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Sock::Tcp(s) => s.as_fd(),
            Sock::Unix(s) => s.as_fd(),
        }
    }

    pub(crate) fn tcp(s: TcpStream) -> Sock {
        Sock::Tcp(Rc::new(s))
    }

    pub(crate) fn unix(s: UnixStream) -> Sock {
        Sock::Unix(Rc::new(s))
    }

    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self {
            Sock::Tcp(s) => match Rc::get_mut(s) {
                Some(s) => Pin::new(s).poll_read(cx, buf),
                None => Poll::Ready(Err(watcher_alive())),
            },
            Sock::Unix(s) => match Rc::get_mut(s) {
                Some(s) => Pin::new(s).poll_read(cx, buf),
                None => Poll::Ready(Err(watcher_alive())),
            },
        }
    }

    /// One `send` for one buffer (the echo fast path; tokio then clears the readiness on a
    /// short write), one `writev` for several.
    fn poll_send(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        match self {
            Sock::Tcp(s) => match Rc::get_mut(s) {
                Some(s) => poll_send(Pin::new(s), cx, bufs),
                None => Poll::Ready(Err(watcher_alive())),
            },
            Sock::Unix(s) => match Rc::get_mut(s) {
                Some(s) => poll_send(Pin::new(s), cx, bufs),
                None => Poll::Ready(Err(watcher_alive())),
            },
        }
    }

    /// Ready when tokio believes the socket readable; otherwise stores `cx`'s waker.
    pub(crate) fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Sock::Tcp(s) => s.poll_read_ready(cx),
            Sock::Unix(s) => s.poll_read_ready(cx),
        }
    }

    /// Ready when tokio believes the socket writable; otherwise stores `cx`'s waker.
    pub(crate) fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Sock::Tcp(s) => s.poll_write_ready(cx),
            Sock::Unix(s) => s.poll_write_ready(cx),
        }
    }

    pub(crate) fn peer_addr(&self) -> Option<SocketAddr> {
        match self {
            Sock::Tcp(s) => s.peer_addr().ok(),
            Sock::Unix(_) => None,
        }
    }

    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Sock::Tcp(s) => s.local_addr().ok(),
            Sock::Unix(_) => None,
        }
    }

    /// A watcher that completes on `EPOLLERR` (see [`IdleWatch`]).
    fn idle_watch(&self) -> IdleWatch {
        match self {
            Sock::Tcp(s) => {
                let s = s.clone();
                Box::pin(async move { s.ready(Interest::ERROR).await })
            }
            Sock::Unix(s) => {
                let s = s.clone();
                Box::pin(async move { s.ready(Interest::ERROR).await })
            }
        }
    }

    /// Takes the socket's pending error (`SO_ERROR`); when there is none, forgets tokio's
    /// error readiness, so that the next watcher waits for a new edge.
    fn take_error(&self) -> Option<io::Error> {
        let pending = match self {
            Sock::Tcp(s) => s.take_error(),
            Sock::Unix(s) => s.take_error(),
        };
        match pending {
            Ok(Some(e)) | Err(e) => Some(e),
            Ok(None) => {
                let spurious = || Err::<(), _>(io::Error::from(io::ErrorKind::WouldBlock));
                let _ = match self {
                    Sock::Tcp(s) => s.try_io(Interest::ERROR, spurious),
                    Sock::Unix(s) => s.try_io(Interest::ERROR, spurious),
                };
                None
            }
        }
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
    /// While the transport wants neither to read nor to write: waits for `EPOLLERR`, so
    /// that a reset reaches `connection_lost` without waiting for the next I/O.
    watch: Option<IdleWatch>,
}

impl Conn {
    /// For a transport that wants no I/O: the socket's pending error once `EPOLLERR` was
    /// reported (a reset while paused for reading, say); otherwise `None`, with the
    /// connection's waker stored to hear of it. One allocation per idle period, no
    /// syscall until an error edge.
    pub(crate) fn poll_idle_error(&mut self) -> Option<io::Error> {
        let watch = self.watch.get_or_insert_with(|| self.sock.idle_watch());
        let mut cx = Context::from_waker(&self.waker);
        match watch.as_mut().poll(&mut cx) {
            Poll::Pending => None,
            Poll::Ready(r) => {
                self.watch = None;
                match r {
                    Ok(_) => self.sock.take_error(),
                    Err(e) => Some(e),
                }
            }
        }
    }

    /// The transport wants I/O again: the socket is its own.
    pub(crate) fn end_idle(&mut self) {
        self.watch = None;
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
        self.slots[index] = Some(Conn { handle: h, sock, wake, waker, queued: false, server, watch: None });
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
        c.end_idle();
        let mut cx = Context::from_waker(&c.waker);
        loop {
            match c.sock.poll_send(&mut cx, bufs) {
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Poll::Ready(r) => return r,
                Poll::Pending => return Err(io::ErrorKind::WouldBlock.into()),
            }
        }
    }

    fn try_recv(&mut self, h: Handle, buf: &mut [u8]) -> io::Result<usize> {
        self.recv_calls += 1;
        self.recv_more = false;
        let len = buf.len();
        let c = self.get_mut(h).ok_or_else(not_open)?;
        c.end_idle();
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
        let c = self.get_mut(h).ok_or_else(not_open)?;
        Ok(rustix::net::shutdown(c.sock.fd(), rustix::net::Shutdown::Write)?)
    }

    fn close(&mut self, h: Handle) {
        self.remove(h);
        self.closed.push(h);
    }
}
