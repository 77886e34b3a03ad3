//! Listening sockets: [`ServerOptions`], [`Server`] and the loop's listener table.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use aioport::Protocol;
use mio::net::{TcpListener, UnixListener};

use crate::sockets::Sock;

/// Builds a new protocol for every accepted connection (asyncio's `protocol_factory`).
pub type ProtocolFactory = Box<dyn FnMut() -> Box<dyn Protocol>>;

/// How [`Loop::create_server`](crate::Loop::create_server) listens. Defaults follow
/// asyncio's `create_server` on Unix: backlog 100, `SO_REUSEADDR` on, `SO_REUSEPORT` off,
/// `TCP_NODELAY` on for accepted sockets, no connection limit.
///
/// ```
/// use aioport_poll::ServerOptions;
/// let opts = ServerOptions::default().backlog(4096).reuse_port(true).max_connections(Some(10_000));
/// assert_eq!(opts.backlog_len(), 4096);
/// assert_eq!(opts.connection_limit(), Some(10_000));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerOptions {
    backlog: u32,
    reuse_address: bool,
    reuse_port: bool,
    nodelay: bool,
    max_connections: Option<usize>,
    ipv6_only: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            backlog: 100,
            reuse_address: true,
            reuse_port: false,
            nodelay: true,
            max_connections: None,
            ipv6_only: true,
        }
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

    /// At most this many accepted connections open at once (`None`: no limit, the
    /// default). At the limit the server stops calling `accept()` — new clients wait in
    /// the kernel's backlog — and resumes as soon as one of its connections ends.
    #[must_use]
    pub fn max_connections(mut self, max: Option<usize>) -> Self {
        self.max_connections = max;
        self
    }

    /// `IPV6_V6ONLY` on IPv6 listeners: on by default (as asyncio sets it), so `::` and
    /// `0.0.0.0` can listen on one port side by side. Off, a listener on `::` also accepts
    /// IPv4 clients (as IPv4-mapped addresses, `::ffff:a.b.c.d`).
    #[must_use]
    pub fn ipv6_only(mut self, on: bool) -> Self {
        self.ipv6_only = on;
        self
    }

    /// The configured connection limit.
    pub fn connection_limit(&self) -> Option<usize> {
        self.max_connections
    }

    /// The configured backlog.
    pub fn backlog_len(&self) -> u32 {
        self.backlog
    }

    pub(crate) fn nodelay_on(&self) -> bool {
        self.nodelay
    }

    pub(crate) fn bind(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        let l = crate::sys::tcp_listener(
            addr,
            self.backlog,
            self.reuse_address,
            self.reuse_port,
            self.ipv6_only,
        )?;
        Ok(TcpListener::from_std(l))
    }

    pub(crate) fn backlog_i32(&self) -> i32 {
        i32::try_from(self.backlog).unwrap_or(i32::MAX)
    }
}

/// Names a server of one loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerId(pub(crate) u32);

impl ServerId {
    /// The raw number: servers of one loop are numbered from 0 in creation order.
    pub fn get(self) -> u32 {
        self.0
    }
}

/// A listening server (asyncio's `Server`): its bound addresses, and a way to stop
/// listening. Closing a server stops accepting; connections already accepted go on until
/// [`close_clients`](Self::close_clients) / [`abort_clients`](Self::abort_clients);
/// [`wait_closed`](Self::wait_closed) runs the loop until they have all ended.
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
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// Stops listening: the listening sockets are closed, so new connections are refused;
    /// accepted connections are unaffected. Idempotent. Returns false if the server was
    /// already closed.
    pub fn close(&self, lp: &mut crate::Loop) -> bool {
        lp.close_server(self.id)
    }

    /// True until the server is closed (asyncio's `is_serving`); also while accepting is
    /// paused at the connection limit or after running out of file descriptors.
    pub fn is_serving(&self, lp: &crate::Loop) -> bool {
        lp.is_serving(self.id)
    }

    /// See [`Loop::wait_closed`](crate::Loop::wait_closed).
    ///
    /// # Errors
    ///
    /// As [`Loop::wait_closed`](crate::Loop::wait_closed).
    pub fn wait_closed(
        &self,
        lp: &mut crate::Loop,
        timeout: std::time::Duration,
    ) -> Result<(), crate::Error> {
        lp.wait_closed(self.id, timeout)
    }

    /// See [`Loop::close_clients`](crate::Loop::close_clients).
    pub fn close_clients(&self, lp: &mut crate::Loop) -> usize {
        lp.close_clients(self.id)
    }

    /// See [`Loop::abort_clients`](crate::Loop::abort_clients).
    pub fn abort_clients(&self, lp: &mut crate::Loop) -> usize {
        lp.abort_clients(self.id)
    }

    /// How many connections this server accepted that are still open.
    pub fn connections(&self, lp: &crate::Loop) -> usize {
        lp.server_connections(self.id)
    }
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server").field("id", &self.id.0).field("addrs", &self.addrs).finish()
    }
}

/// A listening socket: TCP, or Unix stream (with its socket file, removed when this is
/// dropped — asyncio 3.13's `cleanup_socket` — unless something else replaced it).
#[derive(Debug)]
pub(crate) enum ListenSocket {
    Tcp(TcpListener),
    Unix {
        listener: UnixListener,
        /// Kept for its `Drop`.
        _file: Option<crate::unix::BoundFile>,
    },
}

impl ListenSocket {
    pub(crate) fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            ListenSocket::Tcp(l) => l,
            ListenSocket::Unix { listener, .. } => listener,
        }
    }

    /// One `accept()`: the socket and, for TCP, the peer's address.
    pub(crate) fn accept(&self) -> io::Result<(Sock, Option<SocketAddr>)> {
        match self {
            ListenSocket::Tcp(l) => l.accept().map(|(s, peer)| (Sock::Tcp(s), Some(peer))),
            ListenSocket::Unix { listener, .. } => {
                listener.accept().map(|(s, _)| (Sock::Unix(s), None))
            }
        }
    }
}

/// One listening socket of a server.
pub(crate) struct Listener {
    pub(crate) server: ServerId,
    pub(crate) socket: ListenSocket,
    pub(crate) nodelay: bool,
    /// In the loop's ready list (its last batch ended before `WouldBlock`).
    pub(crate) queued: bool,
    /// Accepting paused after running out of file descriptors (asyncio waits 1 s).
    pub(crate) retry_at: Option<Instant>,
}

/// A server's protocol factory and listeners (indices into the listener table).
pub(crate) struct ServerEntry {
    pub(crate) factory: ProtocolFactory,
    pub(crate) listeners: Vec<usize>,
}

/// The open servers of a loop by id. Ids count up and are never reused, so a stale
/// [`ServerId`] (of a closed server) names nothing; a closed server's entry is removed,
/// so create/close cycles do not grow the table.
#[derive(Default)]
pub(crate) struct Servers {
    open: std::collections::HashMap<ServerId, ServerEntry>,
    next: u32,
}

impl Servers {
    /// The id the next [`insert`](Self::insert) takes (a failed bind takes none).
    pub(crate) fn next_id(&self) -> ServerId {
        ServerId(self.next)
    }

    /// Adds the server [`next_id`](Self::next_id) named.
    pub(crate) fn insert(&mut self, entry: ServerEntry) -> ServerId {
        let id = self.next_id();
        // 2^32 servers on one loop: ids would wrap only after the old ones are long gone.
        self.next = self.next.wrapping_add(1);
        self.open.insert(id, entry);
        id
    }

    pub(crate) fn get(&self, id: ServerId) -> Option<&ServerEntry> {
        self.open.get(&id)
    }

    pub(crate) fn get_mut(&mut self, id: ServerId) -> Option<&mut ServerEntry> {
        self.open.get_mut(&id)
    }

    /// Removes a server (it was closed).
    pub(crate) fn remove(&mut self, id: ServerId) -> Option<ServerEntry> {
        self.open.remove(&id)
    }

    /// How many servers are open.
    pub(crate) fn len(&self) -> usize {
        self.open.len()
    }
}
