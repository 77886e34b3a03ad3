//! What a driver's `create_datagram_endpoint` needs besides its runtime's readiness: the
//! options ([`DatagramOptions`]), the endpoint it returns ([`DatagramEndpoint`]), opening
//! the socket ([`open`]) and one `sendto` / `recvfrom` on it ([`send_to`], [`recv_from`]),
//! with the poll loop's semantics (UDP over IPv4 and IPv6, Unix datagram sockets):
//!
//! * Receives use `MSG_TRUNC`, so a datagram larger than the buffer (the core's 256 KiB,
//!   which any UDP datagram fits) is reported as truncated — the core then calls
//!   `error_received` with `InvalidData`, never delivers it cut.
//! * Send and receive errors (an ICMP port-unreachable surfacing as `ECONNREFUSED` on a
//!   connected socket) go back to the core, which hands them to `error_received`; the
//!   endpoint stays usable, as in asyncio.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use aioport::datagram::RecvMeta;
use aioport::{DatagramAddr, DatagramHandle};
use rustix::net::{
    AddressFamily, RecvFlags, SendFlags, SocketAddrAny, SocketAddrUnix, SocketFlags, SocketType,
    sockopt,
};

use crate::Error;

/// How a loop's `create_datagram_endpoint` sets up its socket. The defaults are asyncio's:
/// no `SO_REUSEPORT`, no `SO_BROADCAST`, the kernel's receive buffer size.
///
/// ```
/// use aioport_async_kit::datagram::DatagramOptions;
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

/// An endpoint a loop's `create_datagram_endpoint` made: its handle for
/// [`Ctx::sendto`](aioport::Ctx::sendto) and the address it is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatagramEndpoint {
    handle: DatagramHandle,
    local_addr: DatagramAddr,
    recv_buffer_size: usize,
}

impl DatagramEndpoint {
    /// The endpoint of transport `handle`, bound to `local_addr`, with the receive buffer
    /// the kernel reported (for drivers).
    pub fn new(
        handle: DatagramHandle,
        local_addr: DatagramAddr,
        recv_buffer_size: usize,
    ) -> DatagramEndpoint {
        DatagramEndpoint { handle, local_addr, recv_buffer_size }
    }

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

/// A datagram socket [`open`] made: non-blocking and close-on-exec, for the driver to
/// register with its runtime.
#[derive(Debug)]
pub struct Opened {
    /// The socket.
    pub fd: OwnedFd,
    /// A Unix datagram socket (else UDP).
    pub unix: bool,
    /// The address it is bound to (`Unix(None)`: unbound, or unnamed).
    pub local: DatagramAddr,
    /// `SO_RCVBUF` as the kernel reports it.
    pub recv_buffer_size: usize,
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

/// Opens, configures, binds and connects a datagram socket as asyncio's
/// `create_datagram_endpoint` does.
///
/// * `local`: where to bind — port 0 picks a free port; `Unix(Some(path))` binds a path
///   (a stale socket file there is removed first, as asyncio does; a path starting with a
///   NUL byte is an abstract name); `Unix(None)` autobinds to a kernel-chosen abstract
///   name. `None`: a UDP socket binds on its first send, a Unix socket stays unbound.
/// * `remote`: connects the socket (only this peer's datagrams arrive, ICMP errors are
///   reported).
///
/// ```
/// use std::net::SocketAddr;
/// use aioport::DatagramAddr;
/// use aioport_async_kit::datagram::{DatagramOptions, open};
/// let local = DatagramAddr::Inet(SocketAddr::from(([127, 0, 0, 1], 0)));
/// let s = open(Some(&local), None, DatagramOptions::default())?;
/// assert!(!s.unix);
/// assert!(matches!(s.local, DatagramAddr::Inet(a) if a.port() != 0));
/// # Ok::<(), aioport_async_kit::Error>(())
/// ```
///
/// # Errors
///
/// [`Error::DatagramAddress`] when the addresses do not make an endpoint (neither given,
/// families differ, UDP options on a Unix socket); [`Error::Datagram`] when the socket
/// could not be created, configured, bound or connected.
pub fn open(
    local: Option<&DatagramAddr>,
    remote: Option<&DatagramAddr>,
    options: DatagramOptions,
) -> Result<Opened, Error> {
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
    let local = rustix::net::getsockname(&fd)
        .ok()
        .and_then(datagram_addr)
        .unwrap_or(DatagramAddr::Unix(None));
    let recv_buffer_size = sockopt::socket_recv_buffer_size(&fd).map_err(|e| failed(e.into()))?;
    Ok(Opened { fd, unix: fam == Family::Unix, local, recv_buffer_size })
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

/// Binds to `local` (see [`open`]).
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

/// One `send` (`addr` is `None`: the connected peer) or `sendto`, whole, on the socket
/// `fd` (`unix`: a Unix datagram socket). `EINTR` is retried; `WouldBlock` and every
/// other error are returned for the core.
///
/// # Errors
///
/// The socket's error; `InvalidInput` for an address of the other family or an unnamed
/// Unix socket.
pub fn send_to(
    fd: impl AsFd,
    unix: bool,
    data: &[u8],
    addr: Option<&DatagramAddr>,
) -> io::Result<usize> {
    let target = match (addr, unix) {
        (None, _) => None,
        (Some(DatagramAddr::Inet(a)), false) => Some(SocketAddrAny::from(*a)),
        (Some(DatagramAddr::Unix(Some(p))), true) => Some(SocketAddrAny::from(unix_addr(p)?)),
        (Some(DatagramAddr::Unix(None)), _) => {
            return Err(invalid("cannot send to an unnamed (unbound) Unix socket"));
        }
        (Some(a), _) => {
            return Err(invalid(&format!("{a:?} is not an address of this socket's family")));
        }
    };
    loop {
        let r = match &target {
            None => rustix::net::send(&fd, data, SendFlags::empty()),
            Some(a) => rustix::net::sendto(&fd, data, SendFlags::empty(), a),
        };
        match r {
            Err(rustix::io::Errno::INTR) => {}
            r => return Ok(r?),
        }
    }
}

/// One `recvfrom` with `MSG_TRUNC` on the socket `fd` (`unix`: a Unix datagram socket),
/// so a datagram larger than `buf` is reported as truncated. `EINTR` is retried.
///
/// # Errors
///
/// The socket's error (`WouldBlock` when none waits; a pending ICMP error).
pub fn recv_from(fd: impl AsFd, unix: bool, buf: &mut [u8]) -> io::Result<RecvMeta> {
    loop {
        match rustix::net::recvfrom(&fd, &mut *buf, RecvFlags::TRUNC) {
            Ok((len, full, from)) => {
                // Linux reports no address for an unnamed Unix sender.
                let addr = match (from.and_then(datagram_addr), unix) {
                    (None, true) => Some(DatagramAddr::Unix(None)),
                    (addr, _) => addr,
                };
                return Ok(RecvMeta { len, addr, truncated: full > len });
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// The socket's pending error (`SO_ERROR`), taken: what an `EPOLLERR` announced.
///
/// # Errors
///
/// `getsockopt` failed.
pub fn take_error(fd: impl AsFd) -> io::Result<Option<io::Error>> {
    Ok(sockopt::socket_error(fd)?.err().map(io::Error::from))
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
