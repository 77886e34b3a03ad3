//! Listening sockets: [`ServerOptions`], [`Server`] and the loop's listener table.

use aioport_async_kit::ServerId;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use aioport::Protocol;
use std::net::TcpListener;
use std::os::unix::net::UnixListener;

use async_io::Async;

use crate::sockets::Sock;
use aioport_async_kit::wake::KeyWaker;

/// Builds a new protocol for every accepted connection (asyncio's `protocol_factory`).
pub type ProtocolFactory = Box<dyn FnMut() -> Box<dyn Protocol>>;

/// How [`Loop::create_server`](crate::Loop::create_server) listens (the same options as
/// the poll loop's). Defaults follow
/// asyncio's `create_server` on Unix: backlog 100, `SO_REUSEADDR` on, `SO_REUSEPORT` off,
/// `TCP_NODELAY` on for accepted sockets.
///
/// ```
/// use aioport_smol::ServerOptions;
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

    pub(crate) fn nodelay_on(&self) -> bool {
        self.nodelay
    }

    /// Binds (non-blocking) and registers with smol's reactor.
    pub(crate) fn bind(&self, addr: SocketAddr) -> io::Result<Async<TcpListener>> {
        let l = aioport_async_kit::sys::tcp_listener(
            addr,
            self.backlog,
            self.reuse_address,
            self.reuse_port,
        )?;
        Async::new_nonblocking(l)
    }
}

/// A listening server (asyncio's `Server`): its bound addresses, and a way to stop
/// listening. Closing a server stops accepting; connections already accepted go on.
/// A Unix server has no socket address ([`addrs`](Self::addrs) is empty).
#[derive(Clone, PartialEq, Eq)]
pub struct Server {
    pub(crate) id: ServerId,
    pub(crate) addrs: Vec<SocketAddr>,
}

impl Server {
    /// The server's id, for [`LoopHandle::close_server`](crate::LoopHandle::close_server).
    pub fn id(&self) -> ServerId {
        self.id
    }

    /// The addresses the server listens on (asyncio's `server.sockets`' names), with the
    /// ports the kernel chose for port 0.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The first bound address.
    ///
    /// # Panics
    ///
    /// For a Unix server, which has none.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// Stops listening: the listening sockets are closed, so new connections are refused;
    /// accepted connections are unaffected. Idempotent. Returns false if the server was
    /// already closed.
    pub fn close(&self, lp: &mut crate::Loop) -> bool {
        lp.close_server(self.id)
    }
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server").field("id", &self.id.get()).field("addrs", &self.addrs).finish()
    }
}

/// A listening socket.
pub(crate) enum ListenSock {
    Tcp(Async<TcpListener>),
    Unix(Async<UnixListener>),
}

impl ListenSock {
    /// Accepts one connection (non-blocking `accept`; `WouldBlock` when none waits) and
    /// registers it with smol's reactor.
    pub(crate) fn accept(&self) -> io::Result<(Sock, Option<SocketAddr>)> {
        match self {
            ListenSock::Tcp(l) => {
                let (s, peer) = l.get_ref().accept()?;
                Ok((Sock::Tcp(Async::new(s)?), Some(peer)))
            }
            ListenSock::Unix(l) => {
                let (s, _) = l.get_ref().accept()?;
                Ok((Sock::Unix(Async::new(s)?), None))
            }
        }
    }

    /// Arms the listener's waker (see `Loop::arm`).
    pub(crate) fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            ListenSock::Tcp(l) => l.poll_readable(cx),
            ListenSock::Unix(l) => l.poll_readable(cx),
        }
    }
}

/// One listening socket of a server.
pub(crate) struct Listener {
    pub(crate) server: ServerId,
    pub(crate) socket: ListenSock,
    pub(crate) nodelay: bool,
    /// The listener's wake-up state and the waker async-io stores.
    pub(crate) wake: Arc<KeyWaker>,
    pub(crate) waker: Waker,
    /// In the loop's local ready list (its last batch ended before `Pending`).
    pub(crate) queued: bool,
    /// Accepting paused after running out of file descriptors (asyncio waits 1 s).
    pub(crate) retry_at: Option<Instant>,
}

/// A server's protocol factory and listeners (indices into the listener table).
pub(crate) struct ServerEntry {
    pub(crate) factory: ProtocolFactory,
    pub(crate) listeners: Vec<usize>,
}
