//! Client sockets beyond the defaults: [`ConnectOptions`] (`local_addr`, `SO_KEEPALIVE`,
//! `IPV6_V6ONLY`, a connect timeout), adopting sockets made elsewhere (asyncio's `sock=`),
//! and typed access to a transport's fd for options this crate does not wrap.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use aioport::{ConnectionError, Endpoint, Extra, Handle, Protocol, StreamHandle};
use mio::net::{TcpListener, TcpStream};
use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketFlags, SocketType, sockopt};

use crate::event_loop::RunGuard;
use crate::server::{ListenSocket, ServerEntry};
use crate::sockets::Sock;
use crate::{Error, Loop, Server, ServerOptions};

/// How [`Loop::create_connection_with`] connects: asyncio's `create_connection` keyword
/// arguments that apply to a stream socket. The default is what
/// [`Loop::create_connection`] does: no local address, no keep-alive, the system's
/// dual-stack setting, no timeout.
///
/// ```
/// use std::time::Duration;
/// use aioport_poll::ConnectOptions;
/// let opts = ConnectOptions::default()
///     .local_addr("127.0.0.1:0".parse().unwrap())
///     .keepalive(true)
///     .timeout(Duration::from_secs(5));
/// assert_eq!(opts.connect_timeout(), Some(Duration::from_secs(5)));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectOptions {
    local_addr: Option<SocketAddr>,
    keepalive: bool,
    ipv6_only: Option<bool>,
    timeout: Option<Duration>,
    happy_eyeballs_delay: Option<Duration>,
}

impl ConnectOptions {
    /// Binds the socket to `addr` before connecting (asyncio's `local_addr`); port 0 lets
    /// the kernel choose. An address of the other family than the one being tried makes
    /// that attempt fail (the next resolved address is tried).
    #[must_use]
    pub fn local_addr(mut self, addr: SocketAddr) -> Self {
        self.local_addr = Some(addr);
        self
    }

    /// `SO_KEEPALIVE` (asyncio sets it on no socket by default; neither does this loop).
    #[must_use]
    pub fn keepalive(mut self, on: bool) -> Self {
        self.keepalive = on;
        self
    }

    /// `IPV6_V6ONLY` on IPv6 sockets (left at the system default, usually off, unless set).
    #[must_use]
    pub fn ipv6_only(mut self, on: bool) -> Self {
        self.ipv6_only = Some(on);
        self
    }

    /// Gives up after `timeout` — name resolution and every address tried included — with
    /// [`ConnectionError::Timeout`]. The socket of the attempt in progress is closed.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Happy eyeballs (RFC 8305, asyncio's `happy_eyeballs_delay`): with several
    /// addresses (a host name that resolves to more than one, or
    /// [`Loop::create_connection_to_any`]), interleave them by family and start the next
    /// attempt `delay` after the previous one unless it connected (at once if it failed);
    /// the first to connect wins and the others are closed. RFC 8305 recommends 250 ms.
    /// Unset (the default, as in asyncio), addresses are tried one after another.
    #[must_use]
    pub fn happy_eyeballs_delay(mut self, delay: Duration) -> Self {
        self.happy_eyeballs_delay = Some(delay);
        self
    }

    pub(crate) fn eyeballs_delay(&self) -> Option<Duration> {
        self.happy_eyeballs_delay
    }

    /// The configured connect timeout.
    pub fn connect_timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// A non-blocking socket with these options, connecting to `addr`.
    fn open(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let family = if addr.is_ipv6() { AddressFamily::INET6 } else { AddressFamily::INET };
        let fd = rustix::net::socket_with(
            family,
            SocketType::STREAM,
            SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            None,
        )?;
        if self.keepalive {
            sockopt::set_socket_keepalive(&fd, true)?;
        }
        if let (Some(on), true) = (self.ipv6_only, addr.is_ipv6()) {
            sockopt::set_ipv6_v6only(&fd, on)?;
        }
        if let Some(local) = self.local_addr {
            rustix::net::bind(&fd, &local)?;
        }
        match rustix::net::connect(&fd, &addr) {
            Ok(()) | Err(Errno::INPROGRESS) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(TcpStream::from_std(std::net::TcpStream::from(fd)))
    }
}

impl Loop {
    /// [`create_connection`](Self::create_connection) with [`ConnectOptions`].
    ///
    /// # Errors
    ///
    /// As [`create_connection`](Self::create_connection); a timeout is
    /// [`Error::Connect`] with [`ConnectionError::Timeout`].
    pub fn create_connection_with(
        &mut self,
        endpoint: Endpoint,
        protocol: Box<dyn Protocol>,
        options: ConnectOptions,
    ) -> Result<StreamHandle, Error> {
        self.connect_awaiting(endpoint, protocol, options, None)
    }

    fn connect_awaiting(
        &mut self,
        endpoint: Endpoint,
        protocol: Box<dyn Protocol>,
        options: ConnectOptions,
        addresses: Option<Vec<SocketAddr>>,
    ) -> Result<StreamHandle, Error> {
        let _guard = RunGuard::enter()?;
        let h = self.registry.connect(protocol, endpoint.clone());
        if options != ConnectOptions::default() {
            // Absent options are the defaults: a plain connect leaves the table alone.
            self.extras.connect.insert(h.handle(), options);
        }
        if let Some(list) = addresses {
            self.extras.addresses.insert(h.handle(), list);
        }
        if let Some(timeout) = options.timeout {
            // A timeout too far to represent is no timeout.
            if let Some(at) = Instant::now().checked_add(timeout) {
                self.extras.deadlines.push((at, h.handle()));
            }
        }
        self.awaited = Some((h.handle(), None));
        self.after_registry(Instant::now());
        loop {
            if let Some((_, Some(outcome))) = &mut self.awaited {
                let outcome = std::mem::replace(outcome, Ok(()));
                self.awaited = None;
                return outcome.map(|()| h).map_err(|error| Error::Connect { endpoint, error });
            }
            if let Err(e) = self.turn(None) {
                self.awaited = None;
                return Err(e);
            }
        }
    }

    /// Connects to the first of `addrs` that answers, as for a host name that resolved to
    /// them: in turn, or racing them with
    /// [`happy_eyeballs_delay`](ConnectOptions::happy_eyeballs_delay). For callers that
    /// resolve names themselves.
    ///
    /// # Errors
    ///
    /// As [`create_connection_with`](Self::create_connection_with); [`Error::NoAddress`]
    /// when `addrs` is empty.
    pub fn create_connection_to_any(
        &mut self,
        addrs: &[SocketAddr],
        protocol: Box<dyn Protocol>,
        options: ConnectOptions,
    ) -> Result<StreamHandle, Error> {
        let (&first, _) = addrs.split_first().ok_or(Error::NoAddress)?;
        self.connect_awaiting(Endpoint::Addr(first), protocol, options, Some(addrs.to_vec()))
    }

    /// Adopts a connected TCP socket made elsewhere (asyncio's `create_connection(sock=)`):
    /// it is made non-blocking and enters the loop with `protocol`, whose
    /// `connection_made` is delivered before this returns. `TCP_NODELAY` follows
    /// [`set_nodelay`](Self::set_nodelay).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the socket cannot be made non-blocking (`protocol` is dropped
    /// without a callback) or registered with the poller (rare: out of memory or of epoll
    /// watches; the transport then ends at once, `connection_made` then
    /// `connection_lost`, as for an accepted socket).
    pub fn create_connection_from(
        &mut self,
        socket: std::net::TcpStream,
        protocol: Box<dyn Protocol>,
    ) -> Result<StreamHandle, Error> {
        socket.set_nonblocking(true)?;
        self.adopt_stream(Sock::Tcp(TcpStream::from_std(socket)), protocol)
    }

    /// Adopts a connected Unix stream socket made elsewhere (for example one end of
    /// `UnixStream::pair`), as [`create_connection_from`](Self::create_connection_from).
    ///
    /// # Errors
    ///
    /// As [`create_connection_from`](Self::create_connection_from).
    pub fn create_unix_connection_from(
        &mut self,
        socket: std::os::unix::net::UnixStream,
        protocol: Box<dyn Protocol>,
    ) -> Result<StreamHandle, Error> {
        socket.set_nonblocking(true)?;
        self.adopt_stream(Sock::Unix(mio::net::UnixStream::from_std(socket)), protocol)
    }

    pub(crate) fn adopt_stream(
        &mut self,
        sock: Sock,
        protocol: Box<dyn Protocol>,
    ) -> Result<StreamHandle, Error> {
        if self.io.nodelay {
            sock.set_nodelay();
        }
        let mut extra = Extra::default().with_fd(sock.fd().as_raw_fd());
        if let Ok(Some(peer)) = sock.peer_addr() {
            extra = extra.with_peername(peer);
        }
        if let Some(local) = sock.local_addr() {
            extra = extra.with_sockname(local);
        }
        let h = self.registry.insert_stream(protocol, extra);
        if let Err(e) = self.io.insert(h.handle(), sock, None) {
            let now = Instant::now();
            // The transport ends at once, as an accepted socket that failed to register.
            self.registry.enter(now, &mut self.io, |ctx| {
                let _ = ctx.abort(h);
            });
            self.after_registry(now);
            return Err(e.into());
        }
        let now = Instant::now();
        self.registry.dispatch(now, &mut self.io);
        self.after_registry(now);
        Ok(h)
    }

    /// Serves on a listening TCP socket made elsewhere (asyncio's `create_server(sock=)`),
    /// for example one inherited from a supervisor. It is made non-blocking; `options`
    /// applies its `nodelay` and `max_connections` (the socket is already bound and
    /// listening, so the rest does not apply).
    ///
    /// # Errors
    ///
    /// [`Error::NotListening`] when `listen()` was never called on the socket (a
    /// `TcpListener` built from a raw fd can be any socket); [`Error::Io`] when the socket
    /// cannot be made non-blocking, has no local address (not bound) or cannot be
    /// registered.
    pub fn create_server_from(
        &mut self,
        listener: std::net::TcpListener,
        factory: impl FnMut() -> Box<dyn Protocol> + 'static,
        options: ServerOptions,
    ) -> Result<Server, Error> {
        // accept() on it fails with EINVAL: the server would never accept a connection.
        if !sockopt::socket_acceptconn(&listener).map_err(io::Error::from)? {
            return Err(Error::NotListening);
        }
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        let id = self.servers.next_id();
        let socket = ListenSocket::Tcp(TcpListener::from_std(listener));
        let index = self.add_listener(id, socket, options.nodelay_on())?;
        self.servers.insert(ServerEntry { factory: Box::new(factory), listeners: vec![index] });
        self.io.clients.add_server(id, options.connection_limit());
        Ok(Server { id, addrs: vec![local] })
    }

    /// The file descriptor of transport `h`'s socket or pipe, for options this crate does
    /// not wrap (through `rustix`, `socket2`, `nix`, …). `None` once its socket is closed.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use aioport::{CallbackResult, Ctx, Endpoint, Protocol};
    /// # struct Quiet;
    /// # impl Protocol for Quiet {}
    /// let mut lp = aioport_poll::Loop::new()?;
    /// let server = lp.create_server("127.0.0.1:0", || Box::new(Quiet), Default::default())?;
    /// let h = lp.create_connection(Endpoint::Addr(server.addr()), Box::new(Quiet))?;
    /// let fd = lp.socket_fd(h.handle()).expect("open");
    /// rustix::net::sockopt::set_socket_keepalive(fd, true)?;
    /// assert!(rustix::net::sockopt::socket_keepalive(fd)?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn socket_fd(&self, h: Handle) -> Option<BorrowedFd<'_>> {
        self.io.get(h).map(|c| c.sock.fd())
    }

    /// A socket connecting to `addr` for `h`, with `h`'s options.
    pub(crate) fn open_tcp(&self, h: Handle, addr: SocketAddr) -> io::Result<TcpStream> {
        match self.extras.connect.get(&h) {
            Some(options) => options.open(addr),
            None => TcpStream::connect(addr),
        }
    }

    /// Fails the connects whose timeout has passed.
    pub(crate) fn expire_connects(&mut self, now: Instant) {
        let (due, rest) = self.extras.deadlines.drain(..).partition(|&(t, _)| t <= now);
        self.extras.deadlines = rest;
        let due: Vec<(Instant, Handle)> = due;
        for (_, h) in due {
            self.extras.connect.remove(&h);
            let err = ConnectionError::Timeout("connect timed out".into());
            self.connect_failed(StreamHandle::from_handle(h), err, now);
        }
    }
}
