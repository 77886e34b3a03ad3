//! Datagram endpoints on the loop: UDP over IPv4 and IPv6, and Unix datagram sockets
//! (asyncio's `create_datagram_endpoint`).
//!
//! The socket table here sits beside the stream table of `sockets.rs` and shares its
//! readiness-cache discipline (one edge-triggered registration for read and write; a flag
//! cleared only when the socket says `WouldBlock`), with one difference: a datagram read
//! that comes back shorter than the buffer says nothing about the queue, so only
//! `WouldBlock` clears `readable`.
//!
//! Receives go into the core's loop-wide 256 KiB buffer with `MSG_TRUNC`, so any UDP
//! datagram (at most 65,535 bytes) fits whole, and a larger Unix datagram is reported as
//! truncated — `error_received` with [`InvalidData`](std::io::ErrorKind::InvalidData),
//! never delivered cut. Send and receive errors (an ICMP port-unreachable surfacing as
//! `ECONNREFUSED` on a connected socket) reach `error_received` and the endpoint stays
//! usable, as in asyncio.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use aioport::datagram::RecvMeta;
use aioport::{DatagramAddr, DatagramHandle, DatagramProtocol, Extra, Handle};
use mio::event::Event;
use mio::net::{UdpSocket, UnixDatagram};
use mio::{Interest, Token};
use rustix::net::{
    AddressFamily, RecvFlags, SendFlags, SocketAddrAny, SocketAddrUnix, SocketFlags, SocketType,
    sockopt,
};

use crate::event_loop::Loop;
use crate::sockets::token;
use crate::{Error, ErrorReport};

/// Datagrams read per endpoint per iteration before the loop serves others; the rest
/// waits in the ready list. One datagram per read, so this is larger than the stream
/// budget (which counts reads of up to 256 KiB).
const READ_BUDGET: u32 = 64;

/// How [`Loop::create_datagram_endpoint`] sets up its socket. The defaults are asyncio's:
/// no `SO_REUSEPORT`, no `SO_BROADCAST`, the kernel's receive buffer size.
///
/// ```
/// use aioport_poll::DatagramOptions;
/// let opts = DatagramOptions::default().reuse_port(true).recv_buffer_size(1 << 20);
/// assert_eq!(opts.recv_buffer(), Some(1 << 20));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DatagramOptions {
    reuse_port: bool,
    allow_broadcast: bool,
    recv_buffer: Option<usize>,
}

impl DatagramOptions {
    /// `SO_REUSEPORT` (UDP only): several sockets — one per loop and thread — bind the same
    /// address and the kernel spreads datagrams among them by sender.
    #[must_use]
    pub fn reuse_port(mut self, on: bool) -> Self {
        self.reuse_port = on;
        self
    }

    /// `SO_BROADCAST` (UDP only): allow sending to broadcast addresses.
    #[must_use]
    pub fn allow_broadcast(mut self, on: bool) -> Self {
        self.allow_broadcast = on;
        self
    }

    /// `SO_RCVBUF`: the kernel's receive queue for this socket, in bytes. The kernel caps
    /// it at `net.core.rmem_max`; if that leaves it smaller, `SO_RCVBUFFORCE` is tried
    /// (it needs `CAP_NET_ADMIN`). [`DatagramEndpoint::recv_buffer_size`] tells what the
    /// socket got. A queue too small for a burst is where UDP loses datagrams on loopback.
    #[must_use]
    pub fn recv_buffer_size(mut self, bytes: usize) -> Self {
        self.recv_buffer = Some(bytes);
        self
    }

    /// The requested receive buffer size, if any.
    pub fn recv_buffer(&self) -> Option<usize> {
        self.recv_buffer
    }
}

/// An endpoint [`Loop::create_datagram_endpoint`] made: its handle for
/// [`Ctx::sendto`](aioport::Ctx::sendto) and the address it is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatagramEndpoint {
    handle: DatagramHandle,
    local_addr: DatagramAddr,
    recv_buffer_size: usize,
}

impl DatagramEndpoint {
    /// The transport's handle.
    pub fn handle(&self) -> DatagramHandle {
        self.handle
    }

    /// The bound address (asyncio's `sockname`), with the port the kernel chose for port 0
    /// or the abstract name it chose for an autobound Unix socket; `Unix(None)` for an
    /// unbound Unix socket.
    pub fn local_addr(&self) -> &DatagramAddr {
        &self.local_addr
    }

    /// The socket's receive buffer as the kernel reports it (`SO_RCVBUF`; Linux doubles
    /// the requested value for its bookkeeping).
    pub fn recv_buffer_size(&self) -> usize {
        self.recv_buffer_size
    }
}

/// A datagram socket of the loop.
#[derive(Debug)]
enum Sock {
    Udp(UdpSocket),
    Unix(UnixDatagram),
}

impl Sock {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Sock::Udp(s) => s,
            Sock::Unix(s) => s,
        }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Sock::Udp(s) => s.as_fd(),
            Sock::Unix(s) => s.as_fd(),
        }
    }
}

/// One socket of the table, with its readiness cache.
#[derive(Debug)]
pub(crate) struct DgramConn {
    handle: Handle,
    sock: Sock,
    readable: bool,
    writable: bool,
    /// `EPOLLERR` was seen (a pending ICMP error).
    error: bool,
    /// In the loop's ready list.
    queued: bool,
}

/// The loop's datagram sockets, indexed by [`Handle::index`] (the registry's slots are
/// shared with streams, so an index is in at most one of the two tables).
#[derive(Debug, Default)]
pub(crate) struct DatagramSockets {
    slots: Vec<Option<DgramConn>>,
}

impl DatagramSockets {
    fn get_mut(&mut self, h: Handle) -> Option<&mut DgramConn> {
        self.slots.get_mut(h.index() as usize)?.as_mut().filter(|c| c.handle == h)
    }

    fn by_token(&mut self, t: Token) -> Option<&mut DgramConn> {
        let index = t.0 & 0xffff_ffff;
        self.slots.get_mut(index)?.as_mut().filter(|c| token(c.handle) == t)
    }

    fn insert(&mut self, registry: &mio::Registry, h: Handle, mut sock: Sock) -> io::Result<()> {
        registry.register(sock.source(), token(h), Interest::READABLE | Interest::WRITABLE)?;
        let index = h.index() as usize;
        if self.slots.len() <= index {
            self.slots.resize_with(index + 1, || None);
        }
        let conn = DgramConn {
            handle: h,
            sock,
            readable: false,
            writable: true,
            error: false,
            queued: false,
        };
        self.slots[index] = Some(conn);
        Ok(())
    }

    /// Deregisters and closes `h`'s socket; false if `h` is not a datagram socket here.
    pub(crate) fn remove(&mut self, registry: &mio::Registry, h: Handle) -> bool {
        let Some(slot) = self.slots.get_mut(h.index() as usize) else { return false };
        if slot.as_ref().is_none_or(|c| c.handle != h) {
            return false;
        }
        if let Some(mut conn) = slot.take() {
            let _ = registry.deregister(conn.sock.source());
        }
        true
    }

    /// [`Io::try_send_to`](aioport::Io::try_send_to): one `send` (connected, `addr` is
    /// `None`) or `sendto`, whole.
    pub(crate) fn send_to(
        &mut self,
        h: Handle,
        data: &[u8],
        addr: Option<&DatagramAddr>,
    ) -> io::Result<usize> {
        let c = self.get_mut(h).ok_or_else(not_open)?;
        if !c.writable {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let target = match (addr, &c.sock) {
            (None, _) => None,
            (Some(DatagramAddr::Inet(a)), Sock::Udp(_)) => Some(SocketAddrAny::from(*a)),
            (Some(DatagramAddr::Unix(Some(p))), Sock::Unix(_)) => {
                Some(SocketAddrAny::from(unix_addr(p)?))
            }
            (Some(DatagramAddr::Unix(None)), _) => {
                return Err(invalid("cannot send to an unnamed (unbound) Unix socket"));
            }
            (Some(a), _) => {
                return Err(invalid(&format!("{a:?} is not an address of this socket's family")));
            }
        };
        loop {
            let r = match &target {
                None => rustix::net::send(c.sock.fd(), data, SendFlags::empty()),
                Some(a) => rustix::net::sendto(c.sock.fd(), data, SendFlags::empty(), a),
            };
            match r {
                Ok(n) => return Ok(n),
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => {
                    if e == rustix::io::Errno::WOULDBLOCK {
                        c.writable = false;
                    }
                    return Err(e.into());
                }
            }
        }
    }

    /// [`Io::try_recv_from`](aioport::Io::try_recv_from): one `recvfrom` with `MSG_TRUNC`,
    /// so a datagram larger than `buf` is reported as truncated.
    pub(crate) fn recv_from(&mut self, h: Handle, buf: &mut [u8]) -> io::Result<RecvMeta> {
        let c = self.get_mut(h).ok_or_else(not_open)?;
        if !c.readable {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        c.error = false;
        loop {
            match rustix::net::recvfrom(c.sock.fd(), &mut *buf, RecvFlags::TRUNC) {
                Ok((len, full, from)) => {
                    // Linux reports no address for an unnamed Unix sender.
                    let addr = match (from.and_then(datagram_addr), &c.sock) {
                        (None, Sock::Unix(_)) => Some(DatagramAddr::Unix(None)),
                        (addr, _) => addr,
                    };
                    return Ok(RecvMeta { len, addr, truncated: full > len });
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => {
                    if e == rustix::io::Errno::WOULDBLOCK {
                        c.readable = false;
                    }
                    return Err(e.into());
                }
            }
        }
    }
}

fn not_open() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "aioport-poll: no open datagram socket")
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.to_owned())
}

/// A Unix socket address from a path; a path starting with a NUL byte names an abstract
/// socket (Linux's convention, and Python's).
fn unix_addr(p: &Path) -> io::Result<SocketAddrUnix> {
    let bytes = p.as_os_str().as_bytes();
    Ok(match bytes.split_first() {
        Some((0, name)) => SocketAddrUnix::new_abstract_name(name)?,
        _ => SocketAddrUnix::new(p)?,
    })
}

/// A sender address as a [`DatagramAddr`]: an abstract Unix name becomes a path starting
/// with a NUL byte, an unnamed sender `Unix(None)`.
fn datagram_addr(a: SocketAddrAny) -> Option<DatagramAddr> {
    match a.address_family() {
        AddressFamily::INET | AddressFamily::INET6 => {
            std::net::SocketAddr::try_from(a).ok().map(DatagramAddr::Inet)
        }
        AddressFamily::UNIX => {
            let u = SocketAddrUnix::try_from(a).ok()?;
            let path = if let Some(p) = u.path_bytes() {
                Some(PathBuf::from(OsStr::from_bytes(p)))
            } else {
                u.abstract_name().filter(|name| !name.is_empty()).map(|name| {
                    let mut bytes = Vec::with_capacity(name.len() + 1);
                    bytes.push(0);
                    bytes.extend_from_slice(name);
                    PathBuf::from(std::ffi::OsString::from_vec(bytes))
                })
            };
            Some(DatagramAddr::Unix(path))
        }
        _ => None,
    }
}

/// Which socket the addresses ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
    Unix,
}

fn family(a: &DatagramAddr) -> Option<Family> {
    match a {
        DatagramAddr::Inet(s) if s.is_ipv4() => Some(Family::V4),
        DatagramAddr::Inet(_) => Some(Family::V6),
        DatagramAddr::Unix(_) => Some(Family::Unix),
        _ => None,
    }
}

/// Opens, configures, binds and connects the socket; returns it with its local address
/// and receive buffer size.
fn open(
    local: Option<&DatagramAddr>,
    remote: Option<&DatagramAddr>,
    options: DatagramOptions,
) -> Result<(Sock, DatagramAddr, usize), Error> {
    let bad = |why: &'static str| Error::DatagramAddress {
        local: local.cloned(),
        remote: remote.cloned(),
        why,
    };
    let fam = match (local.map(family), remote.map(family)) {
        (None, None) => return Err(bad("give a local address, a remote address, or both")),
        (Some(None), _) | (_, Some(None)) => return Err(bad("an address kind this loop lacks")),
        (Some(Some(a)), Some(Some(b))) if a != b => {
            return Err(bad("the local and remote addresses are of different families"));
        }
        (Some(Some(f)), _) | (None, Some(Some(f))) => f,
    };
    if fam == Family::Unix && (options.reuse_port || options.allow_broadcast) {
        return Err(bad("reuse_port and allow_broadcast apply to UDP only"));
    }
    let failed = |error: io::Error| Error::Datagram {
        local: local.cloned(),
        remote: remote.cloned(),
        error,
    };
    let af = match fam {
        Family::V4 => AddressFamily::INET,
        Family::V6 => AddressFamily::INET6,
        Family::Unix => AddressFamily::UNIX,
    };
    let fd = rustix::net::socket_with(
        af,
        SocketType::DGRAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| failed(e.into()))?;
    configure(&fd, options).map_err(failed)?;
    bind(&fd, local).map_err(failed)?;
    if let Some(remote) = remote {
        match remote {
            DatagramAddr::Inet(a) => rustix::net::connect(&fd, a),
            DatagramAddr::Unix(Some(p)) => {
                rustix::net::connect(&fd, &unix_addr(p).map_err(failed)?)
            }
            _ => return Err(bad("cannot connect to an unnamed Unix socket")),
        }
        .map_err(|e| failed(e.into()))?;
    }
    let local_addr = rustix::net::getsockname(&fd)
        .ok()
        .and_then(datagram_addr)
        .unwrap_or(DatagramAddr::Unix(None));
    let rcvbuf = sockopt::socket_recv_buffer_size(&fd).map_err(|e| failed(e.into()))?;
    let sock = match fam {
        Family::Unix => Sock::Unix(UnixDatagram::from_std(fd.into())),
        _ => Sock::Udp(UdpSocket::from_std(fd.into())),
    };
    Ok((sock, local_addr, rcvbuf))
}

fn configure(fd: &OwnedFd, options: DatagramOptions) -> io::Result<()> {
    if options.reuse_port {
        sockopt::set_socket_reuseport(fd, true)?;
    }
    if options.allow_broadcast {
        sockopt::set_socket_broadcast(fd, true)?;
    }
    if let Some(bytes) = options.recv_buffer {
        sockopt::set_socket_recv_buffer_size(fd, bytes)?;
        // Linux reports twice the value it granted; below the request it was capped at
        // rmem_max, which the privileged variant bypasses. Without the privilege the
        // capped size stands.
        if sockopt::socket_recv_buffer_size(fd)? < bytes.saturating_mul(2) {
            let _ = sockopt::set_socket_recv_buffer_size_force(fd, bytes);
        }
    }
    Ok(())
}

/// Binds to `local`. A Unix path whose file is a stale socket is removed first, as
/// asyncio does; `Unix(None)` autobinds (the kernel picks an abstract name, so replies can
/// reach the socket). No local address leaves a Unix socket unbound (it can send, but
/// nobody can answer) and lets a UDP socket bind on its first send or connect.
fn bind(fd: &OwnedFd, local: Option<&DatagramAddr>) -> io::Result<()> {
    match local {
        None => Ok(()),
        Some(DatagramAddr::Inet(a)) => Ok(rustix::net::bind(fd, a)?),
        Some(DatagramAddr::Unix(None)) => {
            Ok(rustix::net::bind(fd, &SocketAddrUnix::new_unnamed())?)
        }
        Some(DatagramAddr::Unix(Some(p))) => {
            if p.as_os_str().as_bytes().first() != Some(&0)
                && std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket())
            {
                std::fs::remove_file(p)?;
            }
            Ok(rustix::net::bind(fd, &unix_addr(p)?)?)
        }
        Some(_) => Err(invalid("an address kind this loop lacks")),
    }
}

impl Loop {
    /// Opens a datagram endpoint for `protocol` (asyncio's `create_datagram_endpoint`):
    /// UDP over IPv4 or IPv6 for [`DatagramAddr::Inet`], a Unix datagram socket for
    /// [`DatagramAddr::Unix`].
    ///
    /// * `local_addr`: where to bind — port 0 picks a free port; `Unix(Some(path))` binds a
    ///   path (a stale socket file there is removed first, as asyncio does; a path
    ///   starting with a NUL byte is an abstract name); `Unix(None)` autobinds to a
    ///   kernel-chosen abstract name. `None`: a UDP socket binds on its first send, a Unix
    ///   socket stays unbound (it can send, but no reply can reach it).
    /// * `remote_addr`: connects the socket, as asyncio does: `sendto` then takes `None`
    ///   or this address (any other is
    ///   [`WriteError::AddressMismatch`](aioport::WriteError::AddressMismatch)), only this
    ///   peer's datagrams arrive, and ICMP errors reach `error_received`.
    ///
    /// `connection_made` has run when this returns (it may already have sent).
    ///
    /// # Errors
    ///
    /// [`Error::DatagramAddress`] when the addresses do not make an endpoint (neither
    /// given, families differ, UDP options on a Unix socket); [`Error::Datagram`] when
    /// the socket could not be created, configured, bound or connected.
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// use aioport::{CallbackResult, Ctx, DatagramAddr, DatagramProtocol};
    /// use aioport_poll::{DatagramOptions, Loop};
    ///
    /// struct Quiet;
    /// impl DatagramProtocol for Quiet {}
    ///
    /// let mut lp = Loop::new()?;
    /// let local = DatagramAddr::Inet(SocketAddr::from(([127, 0, 0, 1], 0)));
    /// let ep = lp.create_datagram_endpoint(Box::new(Quiet), Some(local), None, DatagramOptions::default())?;
    /// assert!(matches!(ep.local_addr(), DatagramAddr::Inet(a) if a.port() != 0));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn create_datagram_endpoint(
        &mut self,
        protocol: Box<dyn DatagramProtocol>,
        local_addr: Option<DatagramAddr>,
        remote_addr: Option<DatagramAddr>,
        options: DatagramOptions,
    ) -> Result<DatagramEndpoint, Error> {
        let (sock, local, rcvbuf) = open(local_addr.as_ref(), remote_addr.as_ref(), options)?;
        let mut extra = Extra::default().with_fd(sock.fd().as_raw_fd());
        if let DatagramAddr::Inet(a) = &local {
            extra = extra.with_sockname(*a);
        }
        if let Some(DatagramAddr::Inet(a)) = &remote_addr {
            extra = extra.with_peername(*a);
        }
        let h = self.registry.insert_datagram(protocol, remote_addr.clone(), extra);
        if let Err(error) = self.io.dgram.insert(self.poll.registry(), h.handle(), sock) {
            // The transport never had a socket: end it without a callback reaching I/O.
            self.with(|ctx| {
                let _ = ctx.abort(h);
            });
            return Err(Error::Datagram { local: local_addr, remote: remote_addr, error });
        }
        // Delivers connection_made now, as asyncio's awaited endpoint has.
        self.with(|_| ());
        Ok(DatagramEndpoint { handle: h, local_addr: local, recv_buffer_size: rcvbuf })
    }

    /// A readiness event for a token the stream table does not know: a datagram socket's
    /// (or one closed meanwhile).
    pub(crate) fn on_datagram_event(&mut self, t: Token, ev: &Event, now: Instant) {
        let Some(c) = self.io.dgram.by_token(t) else { return };
        if ev.is_readable() || ev.is_error() {
            c.readable = true;
        }
        if ev.is_writable() || ev.is_error() {
            c.writable = true;
        }
        c.error |= ev.is_error();
        let h = c.handle;
        self.serve_datagram(h, now);
    }

    /// After a registry call: if `h` is a datagram endpoint whose interest the cache can
    /// serve, queue it. True when `h` is a datagram endpoint (handled here).
    pub(crate) fn queue_datagram(&mut self, h: Handle) -> bool {
        let Some(c) = self.io.dgram.get_mut(h) else { return false };
        if !c.queued
            && let Ok(i) = self.registry.interest(h)
            && ((c.readable && i.read) || (c.writable && i.write) || c.error)
        {
            c.queued = true;
            self.ready.push_back(h);
        }
        true
    }

    /// Serves one datagram endpoint: flush, then receive while readable and wanted (at most
    /// `READ_BUDGET` datagrams), then a pending error no I/O call revealed. False if `h`
    /// is not a datagram endpoint.
    pub(crate) fn serve_datagram(&mut self, h: Handle, now: Instant) -> bool {
        let Some(c) = self.io.dgram.get_mut(h) else { return false };
        c.queued = false;
        let writable = c.writable;
        let Ok(interest) = self.registry.interest(h) else { return true };
        if writable && interest.write {
            let r = self.registry.on_writable(h, now, &mut self.io);
            self.report_datagram(h, r);
        }
        let mut budget_left = true;
        for n in 0..=READ_BUDGET {
            let Some(c) = self.io.dgram.get_mut(h) else { break };
            if !c.readable || !self.registry.interest(h).is_ok_and(|i| i.read) {
                break;
            }
            if n == READ_BUDGET {
                budget_left = false;
                break;
            }
            let r = self.registry.on_readable(h, now, &mut self.io);
            let failed = r.is_err();
            self.report_datagram(h, r);
            if failed {
                break;
            }
        }
        if let Some(c) = self.io.dgram.get_mut(h) {
            if !budget_left && !c.queued {
                c.queued = true;
                self.ready.push_back(h);
            } else if c.error {
                // EPOLLERR while not reading (paused, or nothing wanted): fetch the
                // pending error (SO_ERROR) so it reaches error_received now.
                c.error = false;
                let pending = match sockopt::socket_error(c.sock.fd()) {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(io::Error::from(e)),
                    Err(e) => Some(io::Error::from(e)),
                };
                if let Some(e) = pending {
                    let r = self.registry.handle_error(h, e.into(), now, &mut self.io);
                    self.report_datagram(h, r);
                }
            }
        }
        self.after_registry(now);
        true
    }

    fn report_datagram(&mut self, h: Handle, r: Result<(), aioport::DriverError>) {
        if let Err(error) = r {
            (self.hook)(ErrorReport::Driver { handle: h, error });
        }
    }
}
