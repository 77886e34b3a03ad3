//! What mio lacks, through rustix's safe API: listeners with a chosen backlog,
//! `SO_REUSEPORT` and `IPV6_V6ONLY`, `SO_LINGER 0` for resets, and `RLIMIT_NOFILE`.
//!
//! There is no `unsafe` here (nor anywhere in this crate): rustix wraps the syscalls.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::time::Duration;

use rustix::net::{AddressFamily, SocketFlags, SocketType, sockopt};
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// A non-blocking, close-on-exec TCP listener bound to `addr`.
///
/// IPv6 listeners are `IPV6_V6ONLY` unless `ipv6_only` is false, so binding `::` and
/// `0.0.0.0` on one port works, as in asyncio (which sets it whenever it binds an IPv6
/// address).
pub(crate) fn tcp_listener(
    addr: SocketAddr,
    backlog: u32,
    reuse_address: bool,
    reuse_port: bool,
    ipv6_only: bool,
) -> io::Result<std::net::TcpListener> {
    let family = if addr.is_ipv6() { AddressFamily::INET6 } else { AddressFamily::INET };
    let fd = rustix::net::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )?;
    if reuse_address {
        sockopt::set_socket_reuseaddr(&fd, true)?;
    }
    if reuse_port {
        sockopt::set_socket_reuseport(&fd, true)?;
    }
    if addr.is_ipv6() {
        sockopt::set_ipv6_v6only(&fd, ipv6_only)?;
    }
    rustix::net::bind(&fd, &addr)?;
    // The kernel caps the backlog at net.core.somaxconn.
    rustix::net::listen(&fd, i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(std::net::TcpListener::from(fd))
}

/// `SO_LINGER` with a zero timeout: closing the socket then sends a reset instead of a FIN.
pub(crate) fn set_linger_zero(fd: impl AsFd) -> io::Result<()> {
    Ok(sockopt::set_socket_linger(fd, Some(Duration::ZERO))?)
}

/// Raises this process's soft limit on open files (`RLIMIT_NOFILE`) to its hard limit,
/// and returns the new soft limit.
///
/// A loop holds one file descriptor per connection (two per connection when both ends
/// run in the process), and the common default soft limit is 1,024. Raising the soft
/// limit up to the hard limit needs no privilege.
///
/// # Errors
///
/// The error of `setrlimit`; [`io::ErrorKind::Other`] with a message saying which limit
/// to raise if the hard limit is below `needed`.
///
/// ```
/// let limit = aioport_poll::raise_fd_limit(64)?;
/// assert!(limit >= 64);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn raise_fd_limit(needed: u64) -> io::Result<u64> {
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    let unlimited = u64::MAX;
    let (soft, hard) = (current.unwrap_or(unlimited), maximum.unwrap_or(unlimited));
    if hard < needed {
        return Err(io::Error::other(format!(
            "RLIMIT_NOFILE hard limit is {hard}, below the {needed} file descriptors needed; \
             raise it (ulimit -Hn, or LimitNOFILE= for a service) and try again"
        )));
    }
    if soft < hard {
        setrlimit(Resource::Nofile, Rlimit { current: maximum, maximum })?;
    }
    Ok(hard)
}
