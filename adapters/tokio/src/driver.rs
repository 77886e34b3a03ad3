//! One loop turn: the canonical driver loop of the core's docs, on tokio's readiness.
//!
//! ```text
//! shared queue → keys whose waker tokio woke, commands from other tasks
//! woken keys   → per connection: on_writable, then on_readable while the last read
//!                filled the buffer, at most READ_BUDGET times; then arm: ask tokio for
//!                readiness in each direction the transport wants (storing its waker)
//!                per listener: accept in batches; per connect: poll tokio's connect
//! timers       → Registry::handle_timeout when due (call_soon closures too)
//! local ready  → the same, for keys queued by the loop itself (interest changed, a
//!                budget used up, a new socket)
//! after every registry call → poll_io (into the local ready list), poll_request
//!                (connects), poll_error (the error hook)
//! ```
//!
//! Nothing here walks all connections: only keys named by a wake-up, by `poll_io()` or by
//! the local ready list are touched, and readiness is asked of tokio only for those.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use aioport::{
    ConnectionError, DriverError, Endpoint, Extra, Handle, LoopError, Request, StreamHandle,
};
use rustix::io::Errno;
use tokio::net::{TcpStream, UnixStream};

use crate::event_loop::Loop;
use crate::sockets::Sock;
use crate::{ErrorReport, ServerId};
use aioport_async_kit::Command;
use aioport_async_kit::wake::{Key, KeyWaker};

/// Reads per connection per turn (each up to the core's 256 KiB buffer) before the loop
/// moves on to other connections; the rest waits in the local ready list.
const READ_BUDGET: u32 = 8;

/// Connections accepted (attempts, counting failures) per listener per turn.
const ACCEPT_BATCH: u32 = 128;

/// How long a listener pauses after the process ran out of descriptors (asyncio's
/// `ACCEPT_RETRY_DELAY`).
const ACCEPT_RETRY_DELAY: Duration = Duration::from_secs(1);

/// A connect in progress: tokio's connect future (which also resolves host names) and the
/// waker that queues its key when the future can make progress.
pub(crate) struct Connecting {
    future: Pin<Box<dyn Future<Output = io::Result<Sock>>>>,
    wake: Arc<KeyWaker>,
    waker: Waker,
}

impl Loop {
    /// One turn; false when there was nothing to do.
    pub(crate) fn turn(&mut self) -> bool {
        let mut remotes = false;
        if self.shared.pending.swap(false, std::sync::atomic::Ordering::AcqRel) {
            let mut inner = self.shared.lock();
            std::mem::swap(&mut inner.ready, &mut self.woken);
            std::mem::swap(&mut inner.commands, &mut self.commands);
            drop(inner);
            remotes = self.remotes.take_queued();
        }
        let now = Instant::now();
        let mut worked = !self.woken.is_empty() || !self.commands.is_empty() || remotes;
        // Served after this turn's wake-ups; keys queued while serving wait for the next
        // turn (fairness).
        let waiting = self.ready.len();
        worked |= waiting > 0;

        if remotes {
            let connecting = &self.connecting;
            let is_connecting = |h| connecting.contains_key(&h);
            self.remotes.pump_queued(&mut self.registry, &mut self.io, now, is_connecting);
            self.after_registry(now);
        }

        let mut commands = std::mem::take(&mut self.commands);
        for cmd in commands.drain(..) {
            match cmd {
                // Run as a call_soon closure, so a panic reaches the error hook.
                Command::Call(f) => self.registry.enter(now, &mut self.io, |ctx| ctx.call_soon(f)),
                Command::CloseServer(id) => drop(self.close_server(id)),
            }
        }
        self.commands = commands;

        let mut woken = std::mem::take(&mut self.woken);
        for key in woken.drain(..) {
            self.serve(key, now, true);
        }
        self.woken = woken;

        if self.retrying > 0 {
            self.retry_listeners(now);
        }
        if self.registry.poll_timeout().is_some_and(|t| t <= now) {
            worked = true;
            self.registry.handle_timeout(now, &mut self.io);
        }
        self.after_registry(now);
        for _ in 0..waiting {
            let Some(key) = self.ready.pop_front() else { break };
            self.serve(key, now, false);
        }
        worked
    }

    /// Serves one key. `woken`: it came from the shared queue (its waker's flag is
    /// cleared); otherwise from the local list (its local flag is).
    fn serve(&mut self, key: Key, now: Instant, woken: bool) {
        match key {
            Key::Listener(index) => self.accept_batch(index, now, woken),
            Key::Conn(h) => match self.connecting.get(&h) {
                Some(c) => {
                    c.wake.taken();
                    self.poll_connect(h, now);
                }
                None => {
                    if !self.serve_datagram(h, now, woken) && !self.serve_process(h, now, woken) {
                        self.serve_conn(h, now, woken);
                    }
                }
            },
        }
    }

    /// Serves one connection: flush, read while data keeps coming and reading is wanted,
    /// then arm the wakers for what the transport still wants.
    fn serve_conn(&mut self, h: Handle, now: Instant, woken: bool) {
        let Some(c) = self.io.get_mut(h) else { return };
        if woken {
            c.wake.taken();
        } else {
            c.queued = false;
        }
        let Ok(mut interest) = self.registry.interest(h) else { return };
        if interest.write {
            let r = self.registry.on_writable(h, now, &mut self.io);
            self.report_driver(h, r);
            let Ok(i) = self.registry.interest(h) else { return self.after_registry(now) };
            interest = i;
        }
        if interest.read {
            match self.io.get_mut(h) {
                // The write end of a pipe reads only its read end closing.
                Some(c) if c.sock.is_write_pipe() => {
                    if c.poll_hangup().is_ready() {
                        let r = self.registry.on_readable(h, now, &mut self.io);
                        self.report_driver(h, r);
                    }
                }
                _ => self.read(h, now),
            }
        }
        self.check_idle(h, now);
        if !self.remotes.is_empty() {
            // Room in the transport's queue moves writes in from the cross-task queue.
            self.remotes.pump(h, &mut self.registry, &mut self.io, now);
        }
        self.arm(h);
        self.after_registry(now);
    }

    /// Reads while the last read filled the buffer and the transport wants to, at most
    /// `READ_BUDGET` times; a connection with more to read then waits in the ready list.
    fn read(&mut self, h: Handle, now: Instant) {
        for _ in 0..READ_BUDGET {
            let before = self.io.recv_calls;
            let r = self.registry.on_readable(h, now, &mut self.io);
            let failed = r.is_err();
            self.report_driver(h, r);
            if failed || self.io.recv_calls == before || !self.io.recv_more {
                return;
            }
            if !self.registry.interest(h).is_ok_and(|i| i.read) {
                return;
            }
        }
        self.queue(h);
    }

    /// A transport that wants neither to read nor to write (paused for reading, nothing
    /// queued) would not see a reset until it wants I/O again; its idle watcher reports
    /// `EPOLLERR` at once, and the pending error ends the connection now, as on the poll
    /// loop.
    fn check_idle(&mut self, h: Handle, now: Instant) {
        let Ok(interest) = self.registry.interest(h) else { return };
        let Some(c) = self.io.get_mut(h) else { return };
        if interest.read || interest.write {
            return;
        }
        if let Some(e) = c.poll_idle_error() {
            let r = self.registry.handle_error(h, e.into(), now, &mut self.io);
            self.report_driver(h, r);
        }
    }

    /// Asks tokio for readiness in each direction `h` wants: already ready (an edge came
    /// while serving, or a read budget ran out) queues it for the next turn; otherwise
    /// tokio stores the connection's waker. No syscall either way.
    fn arm(&mut self, h: Handle) {
        let Ok(interest) = self.registry.interest(h) else { return };
        let Some(c) = self.io.get_mut(h) else { return };
        if c.queued {
            return;
        }
        let mut cx = Context::from_waker(&c.waker);
        let mut ready = (interest.read && c.sock.poll_read_ready(&mut cx).is_ready())
            || (interest.write && c.sock.poll_write_ready(&mut cx).is_ready());
        if interest.read && c.sock.is_write_pipe() {
            ready |= c.poll_hangup().is_ready();
        }
        if ready {
            self.queue(h);
        }
    }

    /// Puts `h` in the local ready list (once).
    pub(crate) fn queue(&mut self, h: Handle) {
        if let Some(c) = self.io.get_mut(h)
            && !c.queued
        {
            c.queued = true;
            self.ready.push_back(Key::Conn(h));
        }
    }

    fn report_driver(&mut self, h: Handle, r: Result<(), DriverError>) {
        if let Err(error) = r {
            (self.hook)(ErrorReport::Driver { handle: h, error });
        }
    }

    /// Drains what the registry has for the driver after a call: changed interest,
    /// requests, errors.
    pub(crate) fn after_registry(&mut self, now: Instant) {
        loop {
            while let Some(h) = self.registry.poll_io() {
                // A transport that now wants to read or write gets its wakers armed on
                // the next turn.
                // A transport that now wants nothing gets its idle watcher (when it has
                // a socket: not a transport still connecting, nor one just closed).
                if self.registry.interest(h).is_ok() && !self.queue_datagram(h) {
                    self.queue(h);
                }
            }
            let mut more = false;
            while let Some(req) = self.registry.poll_request() {
                self.start_request(req, now);
                more = true;
            }
            while let Some(e) = self.registry.poll_error() {
                (self.hook)(ErrorReport::Callback(e));
            }
            let dropped = self.registry.errors_dropped();
            if dropped > self.dropped_seen {
                (self.hook)(ErrorReport::Dropped(dropped - self.dropped_seen));
                self.dropped_seen = dropped;
            }
            if !more {
                break;
            }
        }
        if !self.io.closed.is_empty() {
            for h in self.io.closed.drain(..) {
                self.remotes.closed(h);
            }
            self.remotes.after_registry(&self.registry);
        }
        while let Some(h) = self.io.rearm.pop() {
            // Its watcher was dropped for an I/O call outside its own serve.
            self.queue(h);
        }
    }

    // ----------------------------------------------------------------------------------
    // Servers
    // ----------------------------------------------------------------------------------

    fn retry_listeners(&mut self, now: Instant) {
        for index in 0..self.listeners.len() {
            if let Some(l) = self.listeners[index].as_mut()
                && l.retry_at.is_some_and(|t| t <= now)
            {
                l.retry_at = None;
                self.retrying -= 1;
                if !l.queued {
                    l.queued = true;
                    self.ready.push_back(Key::Listener(index));
                }
            }
        }
    }

    fn accept_batch(&mut self, index: usize, now: Instant, woken: bool) {
        let Some(l) = self.listeners.get_mut(index).and_then(Option::as_mut) else { return };
        if woken {
            l.wake.taken();
        } else {
            l.queued = false;
        }
        let mut accepted = 0;
        for attempt in 0..=ACCEPT_BATCH {
            let Some(l) = self.listeners.get_mut(index).and_then(Option::as_mut) else { break };
            if l.retry_at.is_some() {
                break;
            }
            if attempt == ACCEPT_BATCH {
                if !l.queued {
                    l.queued = true;
                    self.ready.push_back(Key::Listener(index));
                }
                break;
            }
            let (server, nodelay) = (l.server, l.nodelay);
            let mut cx = Context::from_waker(&l.waker);
            match l.socket.poll_accept(&mut cx) {
                Poll::Pending => break,
                Poll::Ready(Ok((sock, peer))) => {
                    accepted += 1;
                    self.adopt(server, nodelay, sock, peer);
                }
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(error)) => {
                    let errno = Errno::from_io_error(&error);
                    let out_of_resources =
                        [Errno::MFILE, Errno::NFILE, Errno::NOBUFS, Errno::NOMEM]
                            .iter()
                            .any(|&e| Some(e) == errno);
                    if out_of_resources {
                        l.retry_at = Some(now + ACCEPT_RETRY_DELAY);
                        self.retrying += 1;
                    }
                    (self.hook)(ErrorReport::Accept { server, error });
                    if out_of_resources {
                        break;
                    }
                }
            }
        }
        if accepted > 0 {
            self.registry.dispatch(now, &mut self.io);
            self.after_registry(now);
        }
    }

    fn adopt(&mut self, server: ServerId, nodelay: bool, sock: Sock, peer: Option<SocketAddr>) {
        let Some(entry) = self.servers.get_mut(server.get() as usize).and_then(Option::as_mut)
        else {
            return;
        };
        let protocol = match catch_unwind(AssertUnwindSafe(|| (entry.factory)())) {
            Ok(p) => p,
            Err(payload) => {
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic payload".to_owned());
                let e = LoopError::Panicked { handle: None, callback: "protocol factory", message };
                return (self.hook)(ErrorReport::Callback(e));
            }
        };
        if nodelay {
            sock.set_nodelay();
        }
        let h = self.registry.insert_stream(protocol, extra_of(&sock, peer)).handle();
        self.io.insert(h, sock, Some(server));
        // Its first serve reads what already arrived and arms its waker.
        self.queue(h);
    }

    // ----------------------------------------------------------------------------------
    // Connections protocols (or create_connection) asked for
    // ----------------------------------------------------------------------------------

    fn start_request(&mut self, req: Request, now: Instant) {
        let Request::Connect { handle, endpoint, .. } = req else {
            // Requests a later core adds (processes, …) are answered by later versions.
            return;
        };
        let future: Pin<Box<dyn Future<Output = io::Result<Sock>>>> =
            match endpoint {
                Endpoint::Addr(addr) => {
                    Box::pin(async move { TcpStream::connect(addr).await.map(Sock::tcp) })
                }
                Endpoint::Host { host, port } => Box::pin(async move {
                    TcpStream::connect((host.as_str(), port)).await.map(Sock::tcp)
                }),
                Endpoint::Unix(path) => {
                    Box::pin(async move { UnixStream::connect(path).await.map(Sock::unix) })
                }
                other => {
                    let e = io::Error::new(
                        io::ErrorKind::Unsupported,
                        format!("aioport-tokio cannot connect to {other:?}"),
                    );
                    return self.connect_failed(handle, e.into(), now);
                }
            };
        let h = handle.handle();
        let (wake, waker) = KeyWaker::new(Key::Conn(h), &self.shared);
        self.connecting.insert(h, Connecting { future, wake, waker });
        // Polled on the next turn, inside the loop future (tokio's connect registers the
        // socket with the runtime on its first poll).
        self.ready.push_back(Key::Conn(h));
    }

    fn poll_connect(&mut self, h: Handle, now: Instant) {
        let Some(c) = self.connecting.get_mut(&h) else { return };
        let mut cx = Context::from_waker(&c.waker);
        let Poll::Ready(result) = c.future.as_mut().poll(&mut cx) else { return };
        self.connecting.remove(&h);
        let h = StreamHandle::from_handle(h);
        match result {
            Ok(sock) => {
                if self.io.nodelay {
                    sock.set_nodelay();
                }
                let extra = extra_of(&sock, sock.peer_addr());
                self.io.insert(h.handle(), sock, None);
                self.outcome(h, Ok(()));
                let r = self.registry.handle_connected(h, extra, now, &mut self.io);
                self.report_driver(h.handle(), r);
                if !self.remotes.is_empty() {
                    // Writes other tasks queued while connecting.
                    self.remotes.pump(h.handle(), &mut self.registry, &mut self.io, now);
                }
                self.queue(h.handle());
                self.after_registry(now);
            }
            Err(e) => self.connect_failed(h, e.into(), now),
        }
    }

    fn connect_failed(&mut self, h: StreamHandle, err: ConnectionError, now: Instant) {
        self.connecting.remove(&h.handle());
        self.io.closed.push(h.handle());
        self.outcome(h, Err(err.clone()));
        let r = self.registry.handle_connect_failed(h, err, now, &mut self.io);
        self.report_driver(h.handle(), r);
        self.after_registry(now);
    }

    fn outcome(&mut self, h: StreamHandle, r: Result<(), ConnectionError>) {
        if let Some((awaited, slot)) = &mut self.awaited
            && *awaited == h.handle()
        {
            *slot = Some(r);
        }
    }
}

/// What `extra()` tells about a socket: its fd and addresses.
fn extra_of(sock: &Sock, peer: Option<SocketAddr>) -> Extra {
    let mut extra = Extra::default().with_fd(sock.fd().as_raw_fd());
    if let Some(peer) = peer {
        extra = extra.with_peername(peer);
    }
    if let Some(local) = sock.local_addr() {
        extra = extra.with_sockname(local);
    }
    extra
}
