//! [`Loop`]: the public face of the built-in loop — asyncio's event loop methods.

use std::cell::Cell;
use std::collections::VecDeque;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aioport::{
    ConnectionError, Ctx, Endpoint, Handle, HandleError, Protocol, Registry, StreamHandle,
    TimeOverflow, TimerId,
};
use mio::{Events, Interest, Poll, Token};

use crate::remote::{self, Command, LoopHandle};
use crate::server::{ListenSocket, Listener, ServerEntry, Servers};
use crate::sockets::{LISTENER_BIT, Sockets, WAKER};
use crate::{Error, ErrorReport, Server, ServerId, ServerOptions};

/// How many readiness events one wait returns at most.
const EVENT_CAPACITY: usize = 1024;

thread_local! {
    /// A loop is running on this thread (asyncio's "running loop").
    static RUNNING: Cell<bool> = const { Cell::new(false) };
}

/// Marks this thread as running a loop until dropped (also on unwind).
pub(crate) struct RunGuard;

impl RunGuard {
    pub(crate) fn enter() -> Result<RunGuard, Error> {
        if RUNNING.with(|r| r.replace(true)) {
            return Err(Error::AlreadyRunning);
        }
        Ok(RunGuard)
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        RUNNING.with(|r| r.set(false));
    }
}

/// A name resolved on a helper thread, for a connect request.
pub(crate) type Resolved = (StreamHandle, std::io::Result<Vec<SocketAddr>>);

/// The built-in event loop: one thread, one [`Registry`], sockets on mio (epoll,
/// edge-triggered). See the [crate docs](crate) for a running example and the design.
///
/// Protocols run on it unchanged from any other driver. User code outside callbacks
/// reaches transports through [`with`](Self::with); other threads through a
/// [`LoopHandle`].
pub struct Loop {
    pub(crate) poll: Poll,
    pub(crate) events: Events,
    pub(crate) registry: Registry,
    pub(crate) io: Sockets,
    pub(crate) listeners: Vec<Option<Listener>>,
    pub(crate) servers: Servers,
    /// Connections with work the last wait did not announce: readiness the cache still
    /// holds after reading resumed, or a read budget used up. A non-empty list makes the
    /// next wait non-blocking.
    pub(crate) ready: VecDeque<Handle>,
    pub(crate) ready_listeners: VecDeque<usize>,
    /// Listeners paused after `EMFILE` and the like.
    pub(crate) retrying: usize,
    pub(crate) handle: LoopHandle,
    pub(crate) commands: Receiver<Command>,
    pub(crate) resolved_tx: Sender<Resolved>,
    pub(crate) resolved_rx: Receiver<Resolved>,
    pub(crate) resolvers: Vec<JoinHandle<()>>,
    pub(crate) hook: Box<dyn FnMut(ErrorReport)>,
    /// The connection `create_connection` waits for, and its outcome once known.
    pub(crate) awaited: Option<(Handle, Option<Result<(), ConnectionError>>)>,
    pub(crate) dropped_seen: u64,
    /// Part 2 state: connect options and deadlines, foreign fds, signals.
    pub(crate) extras: crate::extras::Extras,
    /// Remote streams: other threads' handles to transports (`remote_stream.rs`).
    pub(crate) remotes: crate::remote_stream::Remotes,
}

impl Loop {
    /// A new loop with no transports. TCP connections it makes or accepts get
    /// `TCP_NODELAY` (as asyncio's do); errors go to stderr until
    /// [`set_error_handler`](Self::set_error_handler).
    ///
    /// # Errors
    ///
    /// Creating the epoll instance or its waker failed (out of file descriptors).
    pub fn new() -> std::io::Result<Loop> {
        let poll = Poll::new()?;
        let waker = mio::Waker::new(poll.registry(), WAKER)?;
        let (handle, commands) = remote::channel(waker);
        let io = Sockets::new(poll.registry().try_clone()?);
        let (resolved_tx, resolved_rx) = channel();
        Ok(Loop {
            poll,
            events: Events::with_capacity(EVENT_CAPACITY),
            registry: Registry::new(Instant::now()),
            io,
            listeners: Vec::new(),
            servers: Servers::default(),
            ready: VecDeque::new(),
            ready_listeners: VecDeque::new(),
            retrying: 0,
            handle,
            commands,
            resolved_tx,
            resolved_rx,
            resolvers: Vec::new(),
            hook: Box::new(|report| eprintln!("aioport-poll: {report}")),
            awaited: None,
            dropped_seen: 0,
            extras: crate::extras::Extras::default(),
            remotes: crate::remote_stream::Remotes::default(),
        })
    }

    /// A `Send` handle for other threads (and for callbacks that want to stop the loop).
    pub fn handle(&self) -> LoopHandle {
        self.handle.clone()
    }

    /// Sets the error hook (asyncio's `set_exception_handler`): it receives callback
    /// failures that do not end a connection, panics, and accept errors. The default
    /// prints to stderr.
    pub fn set_error_handler(&mut self, hook: impl FnMut(ErrorReport) + 'static) {
        self.hook = Box::new(hook);
    }

    /// Sets whether new TCP connections (connected or accepted by a server whose options
    /// allow it) get `TCP_NODELAY`. On by default.
    pub fn set_nodelay(&mut self, on: bool) {
        self.io.nodelay = on;
    }

    /// The loop state, for inspection (interest, timers, transport count).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// How many transports are in the loop.
    pub fn len(&self) -> usize {
        self.registry.len()
    }

    /// True when the loop holds no transport.
    pub fn is_empty(&self) -> bool {
        self.registry.is_empty()
    }

    // ----------------------------------------------------------------------------------
    // User code and scheduling
    // ----------------------------------------------------------------------------------

    /// Runs `f` with a [`Ctx`] outside any callback (the core's
    /// [`Registry::enter`]): write to, close or pause any transport by its handle. The
    /// callbacks it causes are delivered before this returns.
    pub fn with<R>(&mut self, f: impl FnOnce(&mut Ctx<'_>) -> R) -> R {
        let now = Instant::now();
        let r = self.registry.enter(now, &mut self.io, f);
        self.after_registry(now);
        r
    }

    /// Runs `f` on the next loop iteration (asyncio's `call_soon`). A panic in `f` goes
    /// to the error hook.
    pub fn call_soon(&mut self, f: impl FnOnce(&mut Ctx<'_>) + 'static) {
        self.with(|ctx| ctx.call_soon(f));
    }

    /// Runs `f` once `delay` has passed, never earlier (asyncio's `call_later`).
    ///
    /// # Errors
    ///
    /// [`TimeOverflow`] when now + `delay` does not fit in an `Instant`.
    pub fn call_later(
        &mut self,
        delay: Duration,
        f: impl FnOnce(&mut Ctx<'_>) + 'static,
    ) -> Result<TimerId, TimeOverflow> {
        self.with(|ctx| ctx.call_later(delay, f))
    }

    /// Runs `f` at `when` (asyncio's `call_at`, with `Instant`s).
    pub fn call_at(&mut self, when: Instant, f: impl FnOnce(&mut Ctx<'_>) + 'static) -> TimerId {
        self.with(|ctx| ctx.call_at(when, f))
    }

    /// Cancels a closure scheduled with [`call_later`](Self::call_later) or
    /// [`call_at`](Self::call_at); false if it already ran or was cancelled.
    pub fn cancel(&mut self, id: TimerId) -> bool {
        self.with(|ctx| ctx.cancel(id))
    }

    // ----------------------------------------------------------------------------------
    // TCP
    // ----------------------------------------------------------------------------------

    /// Connects to `endpoint` for `protocol` and runs the loop until `connection_made`
    /// was delivered or the connect failed (asyncio's `await loop.create_connection`).
    /// Other transports are served meanwhile. Host names are resolved on a helper thread;
    /// every resolved address is tried in turn.
    ///
    /// From inside a callback use [`Ctx::connect`] instead: it never blocks and reports
    /// the outcome to the asking protocol's `request_completed`.
    ///
    /// # Errors
    ///
    /// [`Error::Connect`] (refused, unreachable, unresolved), [`Error::AlreadyRunning`]
    /// when a loop is running on this thread, [`Error::Io`] if the poller failed.
    pub fn create_connection(
        &mut self,
        endpoint: Endpoint,
        protocol: Box<dyn Protocol>,
    ) -> Result<StreamHandle, Error> {
        self.create_connection_with(endpoint, protocol, crate::ConnectOptions::default())
    }

    /// Listens on every address `addr` resolves to (asyncio's `create_server`): each
    /// accepted connection gets a protocol from `factory`. Port 0 picks a free port per
    /// address; [`Server::addrs`] tells which. A host name is resolved here, with std's
    /// (blocking) resolver: `create_server` is setup, called before serving (asyncio's
    /// caller also waits for it), and a listen address is almost always a literal or
    /// `localhost` from `/etc/hosts`. While it resolves, this loop's other transports wait;
    /// to add a server to a loop that is already busy, resolve the name first (on any
    /// thread) and pass the address. Connects never resolve on the loop thread.
    ///
    /// # Errors
    ///
    /// [`Error::Bind`] (address in use, …; no listener is left open),
    /// [`Error::NoAddress`], [`Error::Io`] when `addr` does not resolve.
    pub fn create_server(
        &mut self,
        addr: impl ToSocketAddrs,
        factory: impl FnMut() -> Box<dyn Protocol> + 'static,
        options: ServerOptions,
    ) -> Result<Server, Error> {
        let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
        if addrs.is_empty() {
            return Err(Error::NoAddress);
        }
        let id = self.servers.next_id();
        let mut bound = Vec::with_capacity(addrs.len());
        let mut indices = Vec::with_capacity(addrs.len());
        for addr in addrs {
            match self.listen(id, addr, options) {
                Ok((index, local)) => {
                    indices.push(index);
                    bound.push(local);
                }
                Err(error) => {
                    for index in indices {
                        self.drop_listener(index);
                    }
                    return Err(Error::Bind { addr, error });
                }
            }
        }
        self.servers.insert(ServerEntry { factory: Box::new(factory), listeners: indices });
        self.io.clients.add_server(id, options.connection_limit());
        Ok(Server { id, addrs: bound })
    }

    fn listen(
        &mut self,
        server: ServerId,
        addr: SocketAddr,
        options: ServerOptions,
    ) -> std::io::Result<(usize, SocketAddr)> {
        let socket = options.bind(addr)?;
        let local = socket.local_addr()?;
        let index = self.add_listener(server, ListenSocket::Tcp(socket), options.nodelay_on())?;
        Ok((index, local))
    }

    /// Registers a listening socket of `server`; its index in the listener table.
    pub(crate) fn add_listener(
        &mut self,
        server: ServerId,
        mut socket: ListenSocket,
        nodelay: bool,
    ) -> std::io::Result<usize> {
        // The first free slot: closing servers leaves no hole behind for good.
        let index = self.listeners.iter().position(Option::is_none).unwrap_or(self.listeners.len());
        self.poll.registry().register(
            socket.source(),
            Token(LISTENER_BIT | index),
            Interest::READABLE,
        )?;
        let listener = Listener { server, socket, nodelay, queued: false, retry_at: None };
        match self.listeners.get_mut(index) {
            Some(slot) => *slot = Some(listener),
            None => self.listeners.push(Some(listener)),
        }
        Ok(index)
    }

    pub(crate) fn drop_listener(&mut self, index: usize) {
        if let Some(mut l) = self.listeners.get_mut(index).and_then(Option::take) {
            let _ = self.poll.registry().deregister(l.socket.source());
            if l.retry_at.is_some() {
                self.retrying -= 1;
            }
        }
    }

    /// Closes a server: its listening sockets are closed (a Unix server's socket file is
    /// removed), accepted connections go on.
    /// False if it was already closed. Also [`Server::close`] and
    /// [`LoopHandle::close_server`].
    pub fn close_server(&mut self, id: ServerId) -> bool {
        let Some(entry) = self.servers.remove(id) else {
            return false;
        };
        for index in entry.listeners {
            self.drop_listener(index);
        }
        self.io.clients.close_server(id);
        true
    }

    /// Resets a connection: `SO_LINGER` 0, then [`abort`](Ctx::abort), so the peer sees
    /// `ECONNRESET` instead of EOF. `connection_lost(None)` follows here, as for `abort`.
    ///
    /// # Errors
    ///
    /// [`HandleError`] when `h` names no open transport.
    pub fn reset(&mut self, h: StreamHandle) -> Result<(), HandleError> {
        if let Some(c) = self.io.get_mut(h.handle()) {
            // If this fails the abort still closes; the peer then sees EOF.
            let _ = crate::sys::set_linger_zero(c.sock.fd());
        }
        self.with(|ctx| ctx.abort(h))
    }

    // ----------------------------------------------------------------------------------
    // Running
    // ----------------------------------------------------------------------------------

    /// Runs until [`stop`](Self::stop) / [`LoopHandle::stop`] (asyncio's `run_forever`).
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyRunning`], [`Error::Io`] if the poller failed.
    pub fn run_forever(&mut self) -> Result<(), Error> {
        self.run_until(|| false)
    }

    /// Runs until `done()` returns true (checked before each iteration) or the loop is
    /// stopped. `done` usually reads state the protocols share (an `Rc<Cell<_>>`).
    ///
    /// # Errors
    ///
    /// As [`run_forever`](Self::run_forever).
    pub fn run_until(&mut self, mut done: impl FnMut() -> bool) -> Result<(), Error> {
        let _guard = RunGuard::enter()?;
        self.after_registry(Instant::now());
        while !done() {
            self.turn(None)?;
            if self.take_stop() {
                break;
            }
        }
        Ok(())
    }

    /// As [`run_until`](Self::run_until), giving up after `timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::TimedOut`] when `done()` is still false after `timeout`; as
    /// [`run_forever`](Self::run_forever).
    pub fn run_until_timeout(
        &mut self,
        mut done: impl FnMut() -> bool,
        timeout: Duration,
    ) -> Result<(), Error> {
        let _guard = RunGuard::enter()?;
        let deadline = Instant::now() + timeout;
        self.after_registry(Instant::now());
        while !done() {
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::TimedOut);
            }
            self.turn(Some(deadline - now))?;
            if self.take_stop() {
                break;
            }
        }
        Ok(())
    }

    /// Runs one iteration: waits for readiness (at most `timeout`, or until the next
    /// timer), then serves what is ready and what is due.
    ///
    /// # Errors
    ///
    /// As [`run_forever`](Self::run_forever).
    pub fn run_once(&mut self, timeout: Option<Duration>) -> Result<(), Error> {
        let _guard = RunGuard::enter()?;
        self.after_registry(Instant::now());
        self.turn(timeout)
    }

    /// Makes the next (or current) run return after one iteration (asyncio's `stop`).
    /// From callbacks and other threads use [`LoopHandle::stop`].
    pub fn stop(&mut self) {
        self.handle.stop();
    }

    fn take_stop(&self) -> bool {
        self.handle.shared.stop.swap(false, std::sync::atomic::Ordering::AcqRel)
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        // Resolver threads never block on the loop (their channel is unbounded), so they
        // finish with their lookup.
        for t in self.resolvers.drain(..) {
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for Loop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loop")
            .field("transports", &self.registry.len())
            .field("servers", &self.servers.len())
            .finish_non_exhaustive()
    }
}
