//! [`ServerOptions`]: how the async drivers' servers listen.

use std::io;
use std::net::SocketAddr;

/// How a loop's `create_server` listens (the same options as the poll loop's). Defaults follow
/// asyncio's `create_server` on Unix: backlog 100, `SO_REUSEADDR` on, `SO_REUSEPORT` off,
/// `TCP_NODELAY` on for accepted sockets.
///
/// ```
/// use aioport_async_kit::ServerOptions;
/// let opts = ServerOptions::default().backlog(4096).reuse_port(true);
/// assert_eq!(opts.backlog_len(), 4096);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerOptions {
    backlog: u32,
    reuse_address: bool,
    reuse_port: bool,
    nodelay: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions { backlog: 100, reuse_address: true, reuse_port: false, nodelay: true }
    }
}

impl ServerOptions {
    /// The listen backlog (capped by the kernel at `net.core.somaxconn`).
    #[must_use]
    pub fn backlog(mut self, backlog: u32) -> Self {
        self.backlog = backlog;
        self
    }

    /// `SO_REUSEADDR`: rebind a port whose old connections linger in `TIME_WAIT`.
    #[must_use]
    pub fn reuse_address(mut self, on: bool) -> Self {
        self.reuse_address = on;
        self
    }

    /// `SO_REUSEPORT`: several listeners (one per loop and thread) share a port and the
    /// kernel spreads connections among them — how aioport scales past one core.
    #[must_use]
    pub fn reuse_port(mut self, on: bool) -> Self {
        self.reuse_port = on;
        self
    }

    /// `TCP_NODELAY` on accepted sockets (on by default, as in asyncio).
    #[must_use]
    pub fn nodelay(mut self, on: bool) -> Self {
        self.nodelay = on;
        self
    }

    /// The configured backlog.
    pub fn backlog_len(&self) -> u32 {
        self.backlog
    }

    /// Whether accepted sockets get `TCP_NODELAY`.
    pub fn nodelay_on(&self) -> bool {
        self.nodelay
    }

    /// A non-blocking, close-on-exec listener bound to `addr` with these options, for the
    /// driver to register with its runtime.
    ///
    /// # Errors
    ///
    /// Creating, configuring, binding or listening on the socket failed.
    pub fn std_listener(&self, addr: SocketAddr) -> io::Result<std::net::TcpListener> {
        crate::sys::tcp_listener(addr, self.backlog, self.reuse_address, self.reuse_port)
    }
}
