//! What the runtimes' socket types lack, through rustix's safe API: listeners with a chosen backlog,
//! `SO_REUSEPORT` and `IPV6_V6ONLY`, and `SO_LINGER 0` for resets.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::time::Duration;

use rustix::net::{AddressFamily, SocketFlags, SocketType, sockopt};

/// A non-blocking, close-on-exec TCP listener bound to `addr` (as the poll loop's: IPv6
/// listeners are `IPV6_V6ONLY`, as in asyncio).
pub fn tcp_listener(
    addr: SocketAddr,
    backlog: u32,
    reuse_address: bool,
    reuse_port: bool,
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
        sockopt::set_ipv6_v6only(&fd, true)?;
    }
    rustix::net::bind(&fd, &addr)?;
    // The kernel caps the backlog at net.core.somaxconn.
    rustix::net::listen(&fd, i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(std::net::TcpListener::from(fd))
}

/// `SO_LINGER` with a zero timeout: closing the socket then sends a reset instead of a FIN.
pub fn set_linger_zero(fd: impl AsFd) -> io::Result<()> {
    Ok(sockopt::set_socket_linger(fd, Some(Duration::ZERO))?)
}
