//! The loop's socket table and its [`Io`] implementation.
//!
//! Each connection is an async-io `Async<T>`: the socket is registered with smol's reactor
//! (oneshot interest), and the loop asks for readiness with `poll_readable` /
//! `poll_writable` only when the transport wants that direction and the last call found
//! nothing. Reads and writes are plain non-blocking syscalls on the inner socket
//! (`read`, `send` for one buffer, `writev` for several), straight into the core's buffer
//! and from the caller's bytes; `WouldBlock` is the core's `WouldBlock`, and the loop then
//! arms the connection's waker (async-io re-arms the oneshot interest with `epoll_ctl`,
//! which reports data that is already there, so a short read needs no confirming
//! `EAGAIN` call).

use std::fs::File;
use std::io::{self, IoSlice, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use aioport::datagram::RecvMeta;
use aioport::{DatagramAddr, Handle, Io};
use aioport_async_kit::datagram;
use aioport_async_kit::process::Child;
use aioport_async_kit::sendfile::try_sendfile_fd;
use async_io::Async;

use crate::ServerId;
use aioport_async_kit::wake::{Key, KeyWaker, Shared};

/// A connected stream socket, or one end of a pipe (`connect_read_pipe` /
/// `connect_write_pipe`: a pipe, a socket or a tty, held as a `File` for its plain
/// `read` / `write` / `writev` on the descriptor).
#[derive(Debug)]
pub(crate) enum Sock {
    Tcp(Async<TcpStream>),
    Unix(Async<UnixStream>),
    PipeRead(Async<File>),
    PipeWrite(Async<File>),
    /// A datagram socket (`create_datagram_endpoint`): UDP, or Unix when `unix`.
    Datagram {
        sock: Async<OwnedFd>,
        unix: bool,
    },
    /// A child (`subprocess_exec`): a duplicate of its pidfd registered with async-io
    /// (readable when the child exits), and the child itself, reaped through the pidfd
    /// (killed and reaped if dropped first). `watch` is dropped first (deregistered).
    Process {
        watch: Async<OwnedFd>,
        child: Child,
    },
}

impl Sock {
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Sock::Tcp(s) => s.get_ref().as_fd(),
            Sock::Unix(s) => s.get_ref().as_fd(),
            Sock::PipeRead(p) | Sock::PipeWrite(p) => p.get_ref().as_fd(),
            Sock::Datagram { sock, .. } => sock.get_ref().as_fd(),
            Sock::Process { watch, .. } => watch.get_ref().as_fd(),
        }
    }

    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.get_ref().read(buf),
            Sock::Unix(s) => s.get_ref().read(buf),
            Sock::PipeRead(p) => p.get_ref().read(buf),
            // The core never reads the write end of a pipe (readability there means the
            // read end closed).
            Sock::PipeWrite(_) | Sock::Datagram { .. } | Sock::Process { .. } => {
                Err(io::ErrorKind::Unsupported.into())
            }
        }
    }

    /// One `send` for one buffer (the echo fast path), one `writev` for several.
    fn send(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match (self, bufs) {
            (Sock::Tcp(s), [one]) => s.get_ref().write(one),
            (Sock::Tcp(s), _) => s.get_ref().write_vectored(bufs),
            (Sock::Unix(s), [one]) => s.get_ref().write(one),
            (Sock::Unix(s), _) => s.get_ref().write_vectored(bufs),
            (Sock::PipeWrite(p), [one]) => p.get_ref().write(one),
            (Sock::PipeWrite(p), _) => p.get_ref().write_vectored(bufs),
            (Sock::PipeRead(_) | Sock::Datagram { .. } | Sock::Process { .. }, _) => {
                Err(io::ErrorKind::Unsupported.into())
            }
        }
    }

    /// Ready when the reactor saw the socket readable since the waker was stored;
    /// otherwise stores `cx`'s waker (and re-arms the reactor's interest if none was).
    pub(crate) fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Sock::Tcp(s) => s.poll_readable(cx),
            Sock::Unix(s) => s.poll_readable(cx),
            Sock::PipeRead(p) | Sock::PipeWrite(p) => p.poll_readable(cx),
            Sock::Datagram { sock, .. } => sock.poll_readable(cx),
            Sock::Process { watch, .. } => watch.poll_readable(cx),
        }
    }

    /// As [`poll_readable`](Self::poll_readable), for writing.
    pub(crate) fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Sock::Tcp(s) => s.poll_writable(cx),
            Sock::Unix(s) => s.poll_writable(cx),
            Sock::PipeRead(p) | Sock::PipeWrite(p) => p.poll_writable(cx),
            Sock::Datagram { sock, .. } => sock.poll_writable(cx),
            Sock::Process { watch, .. } => watch.poll_writable(cx),
        }
    }

    /// A child's pidfd watch.
    pub(crate) fn is_process(&self) -> bool {
        matches!(self, Sock::Process { .. })
    }

    /// A datagram socket: reads are whole datagrams, so a short one says nothing about
    /// the queue.
    pub(crate) fn is_datagram(&self) -> bool {
        matches!(self, Sock::Datagram { .. })
    }

    /// The write end of a pipe (readable there means: the read end closed).
    pub(crate) fn is_write_pipe(&self) -> bool {
        matches!(self, Sock::PipeWrite(_))
    }

    pub(crate) fn peer_addr(&self) -> Option<SocketAddr> {
        match self {
            Sock::Tcp(s) => s.get_ref().peer_addr().ok(),
            _ => None,
        }
    }

    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Sock::Tcp(s) => s.get_ref().local_addr().ok(),
            _ => None,
        }
    }

    pub(crate) fn set_nodelay(&self) {
        if let Sock::Tcp(s) = self {
            // Only latency is at stake if this fails.
            let _ = s.get_ref().set_nodelay(true);
        }
    }
}

/// One socket of the table.
pub(crate) struct Conn {
    /// The transport this socket belongs to (the slot's current generation).
    pub(crate) handle: Handle,
    pub(crate) sock: Sock,
    /// The connection's wake-up state (its "queued" flag) and the waker async-io stores.
    pub(crate) wake: Arc<KeyWaker>,
    pub(crate) waker: Waker,
    /// In the loop's local ready list.
    pub(crate) queued: bool,
    /// The server that accepted it.
    pub(crate) server: Option<ServerId>,
    /// A datagram endpoint not reading whose readable event carried no pending error
    /// (only data): its read readiness is not watched again until it reads (see
    /// `Loop::datagram_error`).
    pub(crate) quiet: bool,
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
    /// Open connections per server (by [`ServerId`]), for `wait_closed`.
    clients: Vec<usize>,
    /// Transports whose socket was closed (or whose connect failed) since the loop last
    /// looked, for their remote handles (`RemoteStreams::closed`).
    pub(crate) closed: Vec<Handle>,
}

impl Sockets {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Sockets {
            slots: Vec::new(),
            shared,
            recv_calls: 0,
            recv_more: false,
            nodelay: true,
            clients: Vec::new(),
            closed: Vec::new(),
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
            Some(Conn { handle: h, sock, wake, waker, queued: false, server, quiet: false });
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

    pub(crate) fn get(&self, h: Handle) -> Option<&Conn> {
        self.slots.get(h.index() as usize)?.as_ref().filter(|c| c.handle == h)
    }

    pub(crate) fn get_mut(&mut self, h: Handle) -> Option<&mut Conn> {
        self.slots.get_mut(h.index() as usize)?.as_mut().filter(|c| c.handle == h)
    }

    /// Drops `h`'s socket (async-io deregisters and closes it).
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
    io::Error::new(io::ErrorKind::NotConnected, "aioport-smol: no open socket for this handle")
}

impl Io for Sockets {
    fn try_send(&mut self, h: Handle, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let c = self.get(h).ok_or_else(not_open)?;
        loop {
            match c.sock.send(bufs) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => return r,
            }
        }
    }

    fn sendfile_supported(&mut self, h: Handle) -> bool {
        self.get(h).is_some_and(|c| matches!(c.sock, Sock::Tcp(_) | Sock::Unix(_)))
    }

    /// A plain `sendfile(2)` on the socket, as `try_send` is a plain `send`: on
    /// `WouldBlock` the loop arms the connection's writable waker (the transport wants to
    /// write while a sendfile runs).
    fn try_sendfile(
        &mut self,
        h: Handle,
        file: &dyn aioport::stream::SendfileSource,
        offset: u64,
        count: usize,
    ) -> io::Result<usize> {
        let c = self.get(h).ok_or_else(not_open)?;
        if !matches!(c.sock, Sock::Tcp(_) | Sock::Unix(_)) {
            return Err(io::ErrorKind::Unsupported.into());
        }
        try_sendfile_fd(c.sock.fd(), file, offset, count)
    }

    fn try_recv(&mut self, h: Handle, buf: &mut [u8]) -> io::Result<usize> {
        self.recv_calls += 1;
        self.recv_more = false;
        let len = buf.len();
        let c = self.get(h).ok_or_else(not_open)?;
        loop {
            match c.sock.read(buf) {
                Ok(n) => {
                    self.recv_more = n == len && n > 0;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn shutdown_write(&mut self, h: Handle) -> io::Result<()> {
        let c = self.get(h).ok_or_else(not_open)?;
        if !matches!(c.sock, Sock::Tcp(_) | Sock::Unix(_)) {
            // A write pipe's `write_eof` is a close (spec §4.4): nothing to shut down.
            return Ok(());
        }
        Ok(rustix::net::shutdown(c.sock.fd(), rustix::net::Shutdown::Write)?)
    }

    fn try_send_to(
        &mut self,
        h: Handle,
        data: &[u8],
        addr: Option<&DatagramAddr>,
    ) -> io::Result<usize> {
        match self.get(h).map(|c| &c.sock) {
            Some(Sock::Datagram { sock, unix }) => {
                datagram::send_to(sock.get_ref(), *unix, data, addr)
            }
            _ => Err(not_open()),
        }
    }

    /// One datagram; `recv_more` says whether one came (only `WouldBlock` says the queue
    /// is empty).
    fn try_recv_from(&mut self, h: Handle, buf: &mut [u8]) -> io::Result<RecvMeta> {
        self.recv_calls += 1;
        self.recv_more = false;
        let r = match self.get(h).map(|c| &c.sock) {
            Some(Sock::Datagram { sock, unix }) => datagram::recv_from(sock.get_ref(), *unix, buf),
            _ => Err(not_open()),
        };
        self.recv_more = r.is_ok();
        r
    }

    fn close(&mut self, h: Handle) {
        if let Some(Conn { sock: Sock::Process { child, .. }, .. }) = self.get(h)
            && !child.is_reaped()
        {
            // The core is done with a child still running (its transport closed): it
            // stays watched until it exits and is reaped (`process_exited` still
            // follows), or is killed and reaped with the loop.
            return;
        }
        self.remove(h);
        self.closed.push(h);
    }

    /// Through the pidfd, never to a pid that could be recycled.
    fn send_signal(&mut self, h: Handle, sig: i32) -> io::Result<()> {
        match self.get(h).map(|c| &c.sock) {
            Some(Sock::Process { child, .. }) => child.send_signal(sig),
            _ => Err(not_open()),
        }
    }
}
