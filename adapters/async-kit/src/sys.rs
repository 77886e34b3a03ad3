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

/// Refuses a descriptor a loop cannot wait on (a regular file, directory, block device:
/// always "ready"), as the poll loop's pipe transports do; pipes, FIFOs, sockets and
/// character devices pass. Some character devices (`/dev/null`) pass this check but the
/// reactor refuses them: registering them then fails with an I/O error.
///
/// ```
/// use aioport_async_kit::{Error, sys::check_pipe};
/// let (reader, _writer) = std::io::pipe()?;
/// assert!(check_pipe(&reader.into()).is_ok());
/// let path = std::env::temp_dir().join(format!("aioport-kit-pipe-{}", std::process::id()));
/// std::fs::write(&path, b"x")?;
/// let file = std::fs::File::open(&path)?;
/// assert!(matches!(check_pipe(&file.into()), Err(Error::NotAPipe { kind: "a regular file" })));
/// std::fs::remove_file(&path)?;
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
///
/// [`Error::NotAPipe`](crate::Error::NotAPipe); [`Error::Io`](crate::Error::Io) when
/// `fstat` fails.
pub fn check_pipe(fd: &std::os::fd::OwnedFd) -> Result<(), crate::Error> {
    use rustix::fs::FileType;
    let stat = rustix::fs::fstat(fd).map_err(io::Error::from)?;
    let kind = match FileType::from_raw_mode(stat.st_mode) {
        FileType::Fifo | FileType::Socket | FileType::CharacterDevice => return Ok(()),
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::BlockDevice => "a block device",
        FileType::Symlink => "a symbolic link",
        _ => "an unknown kind of file",
    };
    Err(crate::Error::NotAPipe { kind })
}
