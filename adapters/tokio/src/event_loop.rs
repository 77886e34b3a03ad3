//! [`Loop`]: the public face of the tokio driver — asyncio's event loop methods, as async
//! functions where asyncio awaits.

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use aioport::{
    ConnectionError, Ctx, Endpoint, Handle, HandleError, Protocol, Registry, StreamHandle,
    TimeOverflow, TimerId,
};
use tokio::net::UnixListener;
use tokio::time::Sleep;

use crate::driver::Connecting;
use crate::server::{ListenSock, Listener, ServerEntry};
use crate::sockets::Sockets;
use crate::{Error, ErrorReport, Server, ServerId, ServerOptions};
use aioport_async_kit::wake::{Key, KeyWaker, Shared};
use aioport_async_kit::{Command, LoopHandle, RemoteStream, RemoteStreams};

/// Turns one poll of the loop future may take before it yields to the runtime (other
/// tasks on the same thread get their turn; the loop is woken again at once).
const TURNS_PER_POLL: u32 = 16;

/// The tokio driver's event loop: one [`Registry`] and its sockets, driven by one future
/// (whichever of [`run_forever`](Self::run_forever), [`run_until`](Self::run_until),
/// [`create_connection`](Self::create_connection) is being awaited) — never a task per
/// transport. See the [crate docs](crate) for a running example and the design.
///
/// Protocols run on it unchanged from any other driver. The loop is not `Send` (nor are
/// protocols required to be): it lives on the thread that made it, under a current-thread
/// runtime or a `LocalSet` (or `block_on`) of a multi-thread runtime. Its methods must be
/// called inside that runtime's context, and the runtime needs I/O and time enabled
/// (`enable_all()`). Other tasks and threads reach it through a [`LoopHandle`].
pub struct Loop {
    pub(crate) registry: Registry,
    pub(crate) io: Sockets,
    pub(crate) shared: Arc<Shared>,
    pub(crate) listeners: Vec<Option<Listener>>,
    pub(crate) servers: Vec<Option<ServerEntry>>,
    /// Connects in progress (tokio's connect futures), by the waiting transport's handle.
    pub(crate) connecting: HashMap<Handle, Connecting>,
    /// Sockets with work no wake-up will announce: a read budget used up, an interest
    /// that changed (armed on the next turn), an accepted or connected socket. A
    /// non-empty list keeps the loop turning without waiting.
    pub(crate) ready: VecDeque<Key>,
    /// Scratch space for the keys and commands taken from the shared queue.
    pub(crate) woken: Vec<Key>,
    pub(crate) commands: Vec<Command>,
    /// Listeners paused after `EMFILE` and the like.
    pub(crate) retrying: usize,
    pub(crate) hook: Box<dyn FnMut(ErrorReport)>,
    /// The connection `create_connection` waits for, and its outcome once known.
    pub(crate) awaited: Option<(Handle, Option<Result<(), ConnectionError>>)>,
    pub(crate) dropped_seen: u64,
    /// The timer for the next deadline (created on first use, inside the runtime).
    pub(crate) sleep: Option<Pin<Box<Sleep>>>,
    /// Cross-task handles to transports ([`RemoteStream`]).
    pub(crate) remotes: RemoteStreams,
}

impl Loop {
    /// A new loop with no transports. TCP connections it makes or accepts get
    /// `TCP_NODELAY` (as asyncio's do); errors go to stderr until
    /// [`set_error_handler`](Self::set_error_handler). Needs no runtime until it runs.
    pub fn new() -> Loop {
        let shared = Shared::new();
        Loop {
            registry: Registry::new(Instant::now()),
            io: Sockets::new(shared.clone()),
            shared,
            listeners: Vec::new(),
            servers: Vec::new(),
            connecting: HashMap::new(),
            ready: VecDeque::new(),
            woken: Vec::new(),
            commands: Vec::new(),
            retrying: 0,
            hook: Box::new(|report| eprintln!("aioport-tokio: {report}")),
            awaited: None,
            dropped_seen: 0,
            sleep: None,
            remotes: RemoteStreams::default(),
        }
    }

    /// A `Send` handle to the stream transport `h` for other tasks and threads (see
    /// [`RemoteStream`]). Every call for the same transport shares one queue.
    ///
    /// # Errors
    ///
    /// [`HandleError::Stale`](aioport::HandleError::Stale) when `h` names no transport
    /// of this loop; [`HandleError::WrongKind`](aioport::HandleError::WrongKind) for a
    /// TLS app transport (served by the TLS engine, not by the loop).
    pub fn remote_stream(&mut self, h: StreamHandle) -> Result<RemoteStream, aioport::HandleError> {
        self.remotes.open(&self.registry, &self.shared, h)
    }

    /// A `Send` handle for other tasks and threads (and for callbacks that want to stop
    /// the loop).
    pub fn handle(&self) -> LoopHandle {
        LoopHandle::new(self.shared.clone())
    }

    /// Sets the error hook (asyncio's `set_exception_handler`): it receives callback
    /// failures that do not end a connection, panics, and accept errors. The default
    /// prints to stderr.
    pub fn set_error_handler(&mut self, hook: impl FnMut(ErrorReport) + 'static) {
        self.hook = Box::new(hook);
    }

    /// Sets whether new TCP connections (connected, or accepted by a server whose options
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

    /// Runs `f` with a [`Ctx`] outside any callback (the core's [`Registry::enter`]):
    /// write to, close or pause any transport by its handle. The callbacks it causes are
    /// delivered before this returns; the I/O they need happens when the loop runs.
    pub fn with<R>(&mut self, f: impl FnOnce(&mut Ctx<'_>) -> R) -> R {
        let now = Instant::now();
        let r = self.registry.enter(now, &mut self.io, f);
        self.after_registry(now);
        r
    }

    /// Runs `f` on the next loop turn (asyncio's `call_soon`). A panic in `f` goes to the
    /// error hook.
    pub fn call_soon(&mut self, f: impl FnOnce(&mut Ctx<'_>) + 'static) {
        self.with(|ctx| ctx.call_soon(f));
    }

    /// Runs `f` once `delay` has passed, never earlier (asyncio's `call_later`), on
    /// tokio's timer.
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
    // Connections and servers
    // ----------------------------------------------------------------------------------

    /// Connects to `endpoint` (TCP address, host name, or Unix socket path) for `protocol`
    /// and runs the loop until `connection_made` was delivered or the connect failed
    /// (asyncio's `await loop.create_connection`). Other transports are served meanwhile.
    /// A host name is resolved by tokio (on its blocking pool); every address is tried
    /// in turn.
    ///
    /// From inside a callback use [`Ctx::connect`] instead: it reports the outcome to the
    /// asking protocol's `request_completed`.
    ///
    /// # Errors
    ///
    /// [`Error::Connect`] (refused, unreachable, unresolved); the protocol is dropped
    /// without a callback.
    pub async fn create_connection(
        &mut self,
        endpoint: Endpoint,
        protocol: Box<dyn Protocol>,
    ) -> Result<StreamHandle, Error> {
        let h = self.registry.connect(protocol, endpoint.clone());
        self.awaited = Some((h.handle(), None));
        self.after_registry(Instant::now());
        self.run(false, |lp| lp.awaited.as_ref().is_some_and(|(_, o)| o.is_some())).await;
        match self.awaited.take() {
            Some((_, Some(Err(error)))) => Err(Error::Connect { endpoint, error }),
            _ => Ok(h),
        }
    }

    /// Listens on every address `addr` resolves to (asyncio's `create_server`): each
    /// accepted connection gets a protocol from `factory`, built on this loop's thread
    /// (so protocols need not be `Send`). Port 0 picks a free port per address;
    /// [`Server::addrs`] tells which. Accepting starts when the loop runs.
    ///
    /// # Errors
    ///
    /// [`Error::Bind`] (address in use, …; no listener is left open),
    /// [`Error::NoAddress`], [`Error::Io`] when `addr` does not resolve.
    pub async fn create_server(
        &mut self,
        addr: impl tokio::net::ToSocketAddrs,
        factory: impl FnMut() -> Box<dyn Protocol> + 'static,
        options: ServerOptions,
    ) -> Result<Server, Error> {
        let addrs: Vec<_> = tokio::net::lookup_host(addr).await?.collect();
        if addrs.is_empty() {
            return Err(Error::NoAddress);
        }
        let id = ServerId::from_raw(self.servers.len() as u32);
        let mut bound = Vec::with_capacity(addrs.len());
        let mut indices = Vec::with_capacity(addrs.len());
        for addr in addrs {
            let listening =
                crate::server::bind(&options, addr).and_then(|l| Ok((l.local_addr()?, l)));
            match listening {
                Ok((local, l)) => {
                    indices.push(self.add_listener(id, ListenSock::Tcp(l), options.nodelay_on()));
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
        self.servers.push(Some(ServerEntry { factory: Box::new(factory), listeners: indices }));
        Ok(Server { id, addrs: bound })
    }

    /// Listens on the Unix stream socket `path` (asyncio's `create_unix_server`); the
    /// path must not exist. The returned [`Server`] has no socket addresses.
    ///
    /// # Errors
    ///
    /// [`Error::BindUnix`] (the path exists, permission denied, …).
    pub async fn create_unix_server(
        &mut self,
        path: impl AsRef<Path>,
        factory: impl FnMut() -> Box<dyn Protocol> + 'static,
    ) -> Result<Server, Error> {
        let path = path.as_ref();
        let l = UnixListener::bind(path)
            .map_err(|error| Error::BindUnix { path: path.to_owned(), error })?;
        let id = ServerId::from_raw(self.servers.len() as u32);
        let index = self.add_listener(id, ListenSock::Unix(l), false);
        self.servers.push(Some(ServerEntry { factory: Box::new(factory), listeners: vec![index] }));
        Ok(Server { id, addrs: Vec::new() })
    }

    fn add_listener(&mut self, server: ServerId, socket: ListenSock, nodelay: bool) -> usize {
        let index = self.listeners.len();
        let (wake, waker) = KeyWaker::new(Key::Listener(index), &self.shared);
        self.listeners.push(Some(Listener {
            server,
            socket,
            nodelay,
            wake,
            waker,
            queued: true,
            retry_at: None,
        }));
        // The first turn accepts (and so arms the listener's waker).
        self.ready.push_back(Key::Listener(index));
        index
    }

    fn drop_listener(&mut self, index: usize) {
        if let Some(l) = self.listeners.get_mut(index).and_then(Option::take)
            && l.retry_at.is_some()
        {
            self.retrying -= 1;
        }
    }

    /// Closes a server: its listening sockets are closed, accepted connections go on.
    /// False if it was already closed. Also [`Server::close`] and
    /// [`LoopHandle::close_server`].
    pub fn close_server(&mut self, id: ServerId) -> bool {
        let Some(entry) = self.servers.get_mut(id.get() as usize).and_then(Option::take) else {
            return false;
        };
        for index in entry.listeners {
            self.drop_listener(index);
        }
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
            let _ = aioport_async_kit::sys::set_linger_zero(c.sock.fd());
        }
        self.with(|ctx| ctx.abort(h))
    }

    // ----------------------------------------------------------------------------------
    // Running
    // ----------------------------------------------------------------------------------

    /// Runs until [`stop`](Self::stop) / [`LoopHandle::stop`] (asyncio's `run_forever`).
    pub async fn run_forever(&mut self) {
        self.run(true, |_| false).await;
    }

    /// Runs until `done()` returns true (checked before each turn) or the loop is
    /// stopped. `done` usually reads state the protocols share (an `Rc<Cell<_>>`).
    /// Dropping the future (a `select!`, a timeout) leaves the loop intact: run it again
    /// later.
    pub async fn run_until(&mut self, mut done: impl FnMut() -> bool) {
        self.run(true, |_| done()).await;
    }

    /// As [`run_until`](Self::run_until), giving up after `timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::TimedOut`] when `done()` is still false after `timeout`.
    pub async fn run_until_timeout(
        &mut self,
        done: impl FnMut() -> bool,
        timeout: Duration,
    ) -> Result<(), Error> {
        tokio::time::timeout(timeout, self.run_until(done)).await.map_err(|_| Error::TimedOut)
    }

    /// Runs one turn without waiting: serves what is ready and what is due, then returns
    /// (for tests and for code that interleaves the loop with other work).
    pub async fn run_once(&mut self) {
        // One turn, then Ready: an idle turn must not wait for a wake-up.
        let once = poll_fn(|cx| {
            self.shared.set_waker(cx.waker());
            self.turn();
            Poll::Ready(())
        });
        tokio::task::unconstrained(once).await;
    }

    /// Makes the current (or next) run return after its current turn (asyncio's `stop`):
    /// what was queued before still runs. From
    /// callbacks and other threads use [`LoopHandle::stop`].
    pub fn stop(&mut self) {
        self.handle().stop();
    }

    /// The loop future: turns until `done`, or a stop when `stoppable`. Tokio's
    /// cooperative budget is off inside it (a budget used up would make every socket
    /// look not ready); the loop yields by itself every [`TURNS_PER_POLL`] turns.
    pub(crate) async fn run(&mut self, stoppable: bool, mut done: impl FnMut(&mut Loop) -> bool) {
        let turns = poll_fn(|cx| self.poll_turns(cx, stoppable, &mut done));
        tokio::task::unconstrained(turns).await;
    }

    fn poll_turns(
        &mut self,
        cx: &mut Context<'_>,
        stoppable: bool,
        done: &mut dyn FnMut(&mut Loop) -> bool,
    ) -> Poll<()> {
        self.shared.set_waker(cx.waker());
        for _ in 0..TURNS_PER_POLL {
            if done(self) {
                return Poll::Ready(());
            }
            let worked = self.turn();
            // After the turn: what was queued before `stop()` still runs (asyncio's rule).
            if stoppable && self.shared.stop.swap(false, std::sync::atomic::Ordering::AcqRel) {
                return Poll::Ready(());
            }
            if worked || !self.ready.is_empty() {
                continue;
            }
            // Idle: a socket's waker or the next deadline wakes this task.
            match self.next_deadline() {
                Some(t) if self.poll_sleep(cx, t).is_ready() => {}
                _ => return Poll::Pending,
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// The earliest timer or `call_later` closure, or a paused listener's retry.
    fn next_deadline(&self) -> Option<Instant> {
        let mut next = self.registry.poll_timeout();
        if self.retrying > 0 {
            for t in self.listeners.iter().flatten().filter_map(|l| l.retry_at) {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        }
        next
    }

    fn poll_sleep(&mut self, cx: &mut Context<'_>, at: Instant) -> Poll<()> {
        let at = tokio::time::Instant::from_std(at);
        let sleep = self.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        if sleep.deadline() != at {
            sleep.as_mut().reset(at);
        }
        sleep.as_mut().poll(cx)
    }
}

impl Default for Loop {
    fn default() -> Self {
        Loop::new()
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
    }
}

impl std::fmt::Debug for Loop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loop")
            .field("transports", &self.registry.len())
            .field("servers", &self.servers.iter().flatten().count())
            .finish_non_exhaustive()
    }
}
