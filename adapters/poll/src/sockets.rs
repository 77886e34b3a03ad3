//! The loop's socket table and its [`Io`] implementation, with the readiness cache.
//!
//! Every connection's fd is registered once, for read and write, edge-triggered. An edge
//! sets the cached flag; the flag is cleared only when the socket says so — `WouldBlock`,
//! or a short read or write (Linux raises a new edge when more data or room arrives, so
//! the `EAGAIN` call that would confirm it is skipped, as libuv and tokio do). Pausing
//! reading or queueing bytes therefore costs no syscall: the loop consults the cache and
//! the registry's [`Interest`](aioport::Interest) instead of re-arming the fd.

use std::collections::HashMap;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd};

use aioport::{Handle, Io};
use mio::net::{TcpStream, UnixStream};
use mio::unix::pipe;
use mio::{Interest, Token};

use crate::clients::Clients;

/// Tokens with this bit set name listeners; the waker has `Token(usize::MAX)`.
pub(crate) const LISTENER_BIT: usize = 1 << 62;
pub(crate) const WAKER: Token = Token(usize::MAX);
/// The signal pipe of `stop_on_signals`.
pub(crate) const SIGNALS: Token = Token(usize::MAX - 1);
/// Foreign fds of `add_reader` / `add_writer`: both bits, then the fd (matched before
/// listeners; connection tokens never have bit 62).
pub(crate) const FOREIGN_BIT: usize = LISTENER_BIT | (1 << 61);
/// Happy-eyeballs connect attempts: bits 62 and 60, then an attempt number (matched after
/// foreign fds, before listeners).
pub(crate) const RACE_BITS: usize = LISTENER_BIT | (1 << 60);

/// A connection's token: the handle's index and (most of) its generation, so an event for
/// a closed socket whose slot was reused in the same wait is recognised and dropped.
pub(crate) fn token(h: Handle) -> Token {
    Token(h.index() as usize | ((h.generation() as usize & 0x3fff_ffff) << 32))
}

/// A connected stream socket, or one end of a pipe (`connect_read_pipe` /
/// `connect_write_pipe`: a pipe, a socket or a tty, made non-blocking).
#[derive(Debug)]
pub(crate) enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
    PipeRead(pipe::Receiver),
    PipeWrite(pipe::Sender),
}

impl Sock {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Sock::Tcp(s) => s,
            Sock::Unix(s) => s,
            Sock::PipeRead(p) => p,
            Sock::PipeWrite(p) => p,
        }
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Sock::Tcp(s) => s.as_fd(),
            Sock::Unix(s) => s.as_fd(),
            Sock::PipeRead(p) => p.as_fd(),
            Sock::PipeWrite(p) => p.as_fd(),
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.read(buf),
            Sock::Unix(s) => s.read(buf),
            Sock::PipeRead(p) => p.read(buf),
            // The core never reads the write end of a pipe (readability there means the
            // read end closed).
            Sock::PipeWrite(_) => Err(io::ErrorKind::Unsupported.into()),
        }
    }

    /// One `send` for one buffer (the echo fast path; cheaper in the kernel than
    /// `writev`), one `writev` for several.
    fn send(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match (self, bufs) {
            (Sock::Tcp(s), [one]) => s.write(one),
            (Sock::Tcp(s), _) => s.write_vectored(bufs),
            (Sock::Unix(s), [one]) => s.write(one),
            (Sock::Unix(s), _) => s.write_vectored(bufs),
            (Sock::PipeWrite(p), [one]) => p.write(one),
            (Sock::PipeWrite(p), _) => p.write_vectored(bufs),
            (Sock::PipeRead(_), _) => Err(io::ErrorKind::Unsupported.into()),
        }
    }

    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.shutdown(how),
            Sock::Unix(s) => s.shutdown(how),
            // A write pipe's `write_eof` is a close (spec §4.4): nothing to shut down.
            Sock::PipeRead(_) | Sock::PipeWrite(_) => Ok(()),
        }
    }

    /// The peer's address once connected (`None` for a Unix socket); `NotConnected` while
    /// a connect is still in progress.
    pub(crate) fn peer_addr(&self) -> io::Result<Option<SocketAddr>> {
        match self {
            Sock::Tcp(s) => s.peer_addr().map(Some),
            Sock::Unix(s) => s.peer_addr().map(|_| None),
            Sock::PipeRead(_) | Sock::PipeWrite(_) => Ok(None),
        }
    }

    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Sock::Tcp(s) => s.local_addr().ok(),
            Sock::Unix(_) | Sock::PipeRead(_) | Sock::PipeWrite(_) => None,
        }
    }

    pub(crate) fn set_nodelay(&self) {
        if let Sock::Tcp(s) = self {
            // Only latency is at stake if this fails.
            let _ = s.set_nodelay(true);
        }
    }

    pub(crate) fn take_error(&self) -> io::Result<Option<io::Error>> {
        match self {
            Sock::Tcp(s) => s.take_error(),
            Sock::Unix(s) => s.take_error(),
            Sock::PipeRead(_) | Sock::PipeWrite(_) => Ok(None),
        }
    }
}

/// One socket of the table.
#[derive(Debug)]
pub(crate) struct Conn {
    /// The transport this socket belongs to (the slot's current generation).
    pub(crate) handle: Handle,
    pub(crate) sock: Sock,
    /// The readiness cache: an edge was seen and the socket has not refused since.
    pub(crate) readable: bool,
    pub(crate) writable: bool,
    /// The peer's FIN (or a hang-up) was seen: sticky, since no new edge follows it, so a
    /// short read does not clear `readable` — the next read returns the EOF.
    pub(crate) read_closed: bool,
    /// `EPOLLERR` was seen.
    pub(crate) error: bool,
    /// In the loop's ready list.
    pub(crate) queued: bool,
    /// Still connecting (the addresses left to try are in [`Sockets::fallbacks`]).
    pub(crate) connecting: bool,
}

/// The loop's sockets, indexed by [`Handle::index`]; the `Io` the registry drives.
pub(crate) struct Sockets {
    slots: Vec<Option<Conn>>,
    /// For connecting sockets: the addresses to try if this attempt fails (kept out of
    /// [`Conn`], which every idle connection pays for).
    fallbacks: HashMap<Handle, Vec<SocketAddr>>,
    /// For deregistering in [`Io::close`].
    registry: mio::Registry,
    /// `try_recv` calls so far: the loop stops calling `on_readable` when one made none.
    pub(crate) recv_calls: u64,
    pub(crate) nodelay: bool,
    /// The datagram endpoints (`datagram.rs`).
    pub(crate) dgram: crate::datagram::DatagramSockets,
    /// Which server accepted which connection (server lifecycle, max connections).
    pub(crate) clients: Clients,
    /// Children and their pipes (`process.rs`): `Io` calls for handles that are not
    /// sockets go there.
    pub(crate) procs: crate::process::Procs,
    /// Transports closed since the loop last looked: their remote streams
    /// (`remote_stream.rs`) learn it once `connection_lost` ran.
    pub(crate) closed: Vec<Handle>,
}

impl Sockets {
    pub(crate) fn new(registry: mio::Registry) -> Self {
        Sockets {
            slots: Vec::new(),
            fallbacks: HashMap::new(),
            registry,
            recv_calls: 0,
            nodelay: true,
            dgram: Default::default(),
            clients: Clients::default(),
            procs: crate::process::Procs::default(),
            closed: Vec::new(),
        }
    }

    /// Registers `sock` for read and write (once, edge-triggered) under `h`.
    pub(crate) fn insert(
        &mut self,
        h: Handle,
        mut sock: Sock,
        connecting: Option<Vec<SocketAddr>>,
    ) -> io::Result<()> {
        self.registry.register(sock.source(), token(h), Interest::READABLE | Interest::WRITABLE)?;
        let index = h.index() as usize;
        if self.slots.len() <= index {
            self.slots.resize_with(index + 1, || None);
        }
        // An accepted socket has room to send; a connecting one waits for its first edge.
        let is_connecting = connecting.is_some();
        if let Some(rest) = connecting.filter(|r| !r.is_empty()) {
            self.fallbacks.insert(h, rest);
        }
        self.slots[index] = Some(Conn {
            handle: h,
            sock,
            readable: false,
            writable: !is_connecting,
            read_closed: false,
            error: false,
            queued: false,
            connecting: is_connecting,
        });
        Ok(())
    }

    pub(crate) fn get(&self, h: Handle) -> Option<&Conn> {
        self.slots.get(h.index() as usize)?.as_ref().filter(|c| c.handle == h)
    }

    pub(crate) fn get_mut(&mut self, h: Handle) -> Option<&mut Conn> {
        self.slots.get_mut(h.index() as usize)?.as_mut().filter(|c| c.handle == h)
    }

    /// The connection an event's token names, if it is still open.
    pub(crate) fn by_token(&mut self, t: Token) -> Option<&mut Conn> {
        let index = t.0 & 0xffff_ffff;
        self.slots.get_mut(index)?.as_mut().filter(|c| token(c.handle) == t)
    }

    /// The connect attempt of `h` is over: the addresses that were left to try.
    pub(crate) fn take_fallbacks(&mut self, h: Handle) -> Vec<SocketAddr> {
        self.fallbacks.remove(&h).unwrap_or_default()
    }

    /// Deregisters and drops `h`'s socket (closing it).
    pub(crate) fn remove(&mut self, h: Handle) -> Option<Conn> {
        let slot = self.slots.get_mut(h.index() as usize)?;
        if slot.as_ref().is_none_or(|c| c.handle != h) {
            return None;
        }
        let mut conn = slot.take()?;
        // Closing the fd would remove it from the epoll set too; deregistering first is
        // what mio asks for.
        let _ = self.registry.deregister(conn.sock.source());
        self.clients.remove(h);
        Some(conn)
    }
}

fn not_open() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "aioport-poll: no open socket for this handle")
}

impl Io for Sockets {
    fn try_send(&mut self, h: Handle, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let Some(c) = self.get_mut(h) else { return self.procs.try_send(h, bufs) };
        if !c.writable {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        loop {
            match c.sock.send(bufs) {
                Ok(n) => {
                    if n < bufs.iter().map(|b| b.len()).sum() {
                        c.writable = false;
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if e.kind() == io::ErrorKind::WouldBlock {
                        c.writable = false;
                    }
                    return Err(e);
                }
            }
        }
    }

    fn try_recv(&mut self, h: Handle, buf: &mut [u8]) -> io::Result<usize> {
        self.recv_calls += 1;
        let Some(c) = self.get_mut(h) else { return self.procs.try_recv(h, buf) };
        if !c.readable {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        loop {
            match c.sock.read(buf) {
                Ok(n) => {
                    // A short read drained the socket: the next data raises a new edge
                    // (but a FIN already seen raises none).
                    if n < buf.len() && !c.read_closed {
                        c.readable = false;
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if e.kind() == io::ErrorKind::WouldBlock {
                        c.readable = false;
                    }
                    return Err(e);
                }
            }
        }
    }

    fn shutdown_write(&mut self, h: Handle) -> io::Result<()> {
        self.get_mut(h).ok_or_else(not_open)?.sock.shutdown(Shutdown::Write)
    }

    fn close(&mut self, h: Handle) {
        self.closed.push(h);
        if !self.dgram.remove(&self.registry, h) && self.remove(h).is_none() {
            self.procs.close(h);
        }
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

    fn sendfile_supported(&mut self, h: Handle) -> bool {
        crate::sendfile::supported(self, h)
    }

    fn try_sendfile(
        &mut self,
        h: Handle,
        file: &dyn aioport::stream::SendfileSource,
        offset: u64,
        count: usize,
    ) -> io::Result<usize> {
        crate::sendfile::try_sendfile(self, h, file, offset, count)
    }
}
