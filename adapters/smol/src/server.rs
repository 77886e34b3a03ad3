//! Listening sockets: [`ServerOptions`], [`Server`] and the loop's listener table.

use aioport_async_kit::{ServerId, ServerOptions};
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

/// A listener with `options`, registered with smol's reactor.
pub(crate) fn bind(options: &ServerOptions, addr: SocketAddr) -> io::Result<Async<TcpListener>> {
    Async::new_nonblocking(options.std_listener(addr)?)
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
    /// A Unix server's socket file: removed when the entry is dropped (the server closed,
    /// or the loop dropped), unless it was replaced meanwhile.
    pub(crate) _file: Option<aioport_async_kit::unix::BoundFile>,
}
