//! One loop turn: the canonical driver loop of the core's docs, on smol's readiness.
//!
//! ```text
//! shared queue → keys whose waker async-io woke, commands from other tasks
//! woken keys   → per connection: on_writable, then on_readable while the last read
//!                filled the buffer, at most READ_BUDGET times; then arm: ask async-io
//!                for readiness in each direction the transport wants (storing its
//!                waker) per listener: accept in batches; per connect: poll the connect
//! timers       → Registry::handle_timeout when due (call_soon closures too)
//! local ready  → the same, for keys queued by the loop itself (interest changed, a
//!                budget used up, a new socket)
//! after every registry call → poll_io (into the local ready list), poll_request
//!                (connects), poll_error (the error hook)
//! ```
//!
//! Nothing here walks all connections: only keys named by a wake-up, by `poll_io()` or by
//! the local ready list are touched, and readiness is asked of async-io only for those.

use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use aioport::{
    ConnectionError, DriverError, Endpoint, Extra, Handle, LoopError, Request, StreamHandle,
};
use async_io::Async;
use rustix::io::Errno;

use crate::event_loop::Loop;
use crate::sockets::Sock;
use crate::{ErrorReport, ServerId};
use aioport_async_kit::Command;
use aioport_async_kit::wake::{Key, KeyWaker};

/// Reads per connection per turn (each up to the core's 256 KiB buffer) before the loop
/// moves on to other connections; the rest waits in the local ready list.
const READ_BUDGET: u32 = 8;

/// Datagrams received per endpoint per turn: one datagram per read, so this is larger
/// than the stream budget (as on the poll loop).
const DATAGRAM_READ_BUDGET: u32 = 64;

/// Connections accepted (attempts, counting failures) per listener per turn.
const ACCEPT_BATCH: u32 = 128;

/// How long a listener pauses after the process ran out of descriptors (asyncio's
/// `ACCEPT_RETRY_DELAY`).
const ACCEPT_RETRY_DELAY: Duration = Duration::from_secs(1);

/// A connect in progress: its future (resolving a host name, then async-io's connect) and the
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
                None => self.serve_conn(h, now, woken),
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
        if c.sock.is_process() {
            return self.serve_process(h, now);
        }
        let Ok(mut interest) = self.registry.interest(h) else { return };
        if interest.write {
            let r = self.registry.on_writable(h, now, &mut self.io);
            self.report_driver(h, r);
            let Ok(i) = self.registry.interest(h) else { return self.after_registry(now) };
            interest = i;
        }
        match self.io.get(h).map(|c| (c.sock.is_write_pipe(), c.sock.is_datagram())) {
            _ if !interest.read => {}
            Some((true, _)) => self.write_pipe_hangup(h, now),
            Some((_, true)) => self.read(h, now, DATAGRAM_READ_BUDGET),
            _ => self.read(h, now, READ_BUDGET),
        }
        if let Some(c) = self.io.get_mut(h)
            && c.sock.is_datagram()
        {
            if interest.read {
                c.quiet = false;
            } else {
                self.datagram_error(h, now);
            }
        }
        if !self.remotes.is_empty() {
            // Room in the transport's queue moves writes in from the cross-task queue.
            self.remotes.pump(h, &mut self.registry, &mut self.io, now);
        }
        self.arm(h);
        self.after_registry(now);
    }

    /// Reads while the last read filled the buffer (a datagram endpoint: got a datagram)
    /// and the transport wants to, at most `budget` times; a connection with more to read
    /// then waits in the ready list.
    fn read(&mut self, h: Handle, now: Instant, budget: u32) {
        for _ in 0..budget {
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

    /// The write end of a pipe: readability there means the read end closed, which the
    /// core acts on at once, so `on_readable` is called only when async-io saw it (its
    /// answer `Ready` is for an event since the waker was stored; `Pending` arms it).
    fn write_pipe_hangup(&mut self, h: Handle, now: Instant) {
        let Some(c) = self.io.get_mut(h) else { return };
        let mut cx = Context::from_waker(&c.waker);
        if c.sock.poll_readable(&mut cx).is_ready() {
            let r = self.registry.on_readable(h, now, &mut self.io);
            self.report_driver(h, r);
        }
    }

    /// A datagram endpoint that is not reading still hears of ICMP errors, as on the poll
    /// loop: its read readiness stays watched, and an event is checked for a pending
    /// error (`SO_ERROR`), which goes to `error_received`. An event with no error means
    /// datagrams wait: the readiness is then left alone until the endpoint reads again
    /// (level-triggered, it would report them on every turn); an error arriving after
    /// that is reported by the next receive.
    fn datagram_error(&mut self, h: Handle, now: Instant) {
        let Some(c) = self.io.get_mut(h) else { return };
        if c.quiet {
            return;
        }
        let mut cx = Context::from_waker(&c.waker);
        if c.sock.poll_readable(&mut cx).is_pending() {
            return;
        }
        match aioport_async_kit::datagram::take_error(c.sock.fd()) {
            Ok(None) => c.quiet = true,
            Ok(Some(e)) | Err(e) => {
                let r = self.registry.handle_error(h, e.into(), now, &mut self.io);
                self.report_driver(h, r);
            }
        }
    }

    /// Arms the connection's waker with async-io in each direction `h` wants, after its
    /// I/O found nothing more to do. No syscall while the waker is already armed.
    fn arm(&mut self, h: Handle) {
        let Ok(interest) = self.registry.interest(h) else { return };
        let Some(c) = self.io.get_mut(h) else { return };
        if c.queued {
            return;
        }
        let mut cx = Context::from_waker(&c.waker);
        // A datagram endpoint not reading is watched for ICMP errors (`datagram_error`).
        let read = interest.read || (c.sock.is_datagram() && !c.quiet);
        let failed = (read && arm(|cx| c.sock.poll_readable(cx), &mut cx).is_err())
            || (interest.write && arm(|cx| c.sock.poll_writable(cx), &mut cx).is_err());
        if failed {
            // The reactor refused the socket (`epoll_ctl` failed): its next I/O call
            // reports the error to the transport.
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
                if self.registry.interest(h).is_ok_and(|i| i.read || i.write) {
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
            match l.socket.accept() {
                Ok((sock, peer)) => {
                    accepted += 1;
                    self.adopt(server, nodelay, sock, peer);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let mut cx = Context::from_waker(&l.waker);
                    if let Err(error) = arm(|cx| l.socket.poll_readable(cx), &mut cx) {
                        (self.hook)(ErrorReport::Accept { server, error });
                    }
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
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
        let future: Pin<Box<dyn Future<Output = io::Result<Sock>>>> = match endpoint {
            Endpoint::Addr(addr) => {
                Box::pin(async move { Async::<TcpStream>::connect(addr).await.map(Sock::Tcp) })
            }
            Endpoint::Host { host, port } => Box::pin(connect_host(host, port)),
            Endpoint::Unix(path) => {
                Box::pin(async move { Async::<UnixStream>::connect(path).await.map(Sock::Unix) })
            }
            other => {
                let e = io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("aioport-smol cannot connect to {other:?}"),
                );
                return self.connect_failed(handle, e.into(), now);
            }
        };
        let h = handle.handle();
        let (wake, waker) = KeyWaker::new(Key::Conn(h), &self.shared);
        self.connecting.insert(h, Connecting { future, wake, waker });
        // Polled on the next turn, inside the loop future.
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

/// Arms a waker with async-io: stores it for the next event and re-arms the reactor's
/// oneshot interest (one `epoll_ctl`), unless it is armed already (no syscall then).
/// async-io answers `Ready` once for an event delivered since the waker was stored — an
/// event this turn's I/O has already served, as the interest stays disarmed after an
/// event until it is armed again — so that answer is taken and the waker armed anew.
/// Level-triggered re-arming reports data that is already there, so nothing is missed.
fn arm(
    mut poll: impl FnMut(&mut Context<'_>) -> Poll<io::Result<()>>,
    cx: &mut Context<'_>,
) -> io::Result<()> {
    match poll(cx) {
        Poll::Pending => Ok(()),
        Poll::Ready(Err(e)) => Err(e),
        Poll::Ready(Ok(())) => match poll(cx) {
            Poll::Ready(Err(e)) => Err(e),
            _ => Ok(()),
        },
    }
}

/// Resolves `host` on smol's blocking pool, then tries every address in turn; the last
/// error wins.
async fn connect_host(host: String, port: u16) -> io::Result<Sock> {
    let addrs: Vec<SocketAddr> =
        blocking::unblock(move || (host.as_str(), port).to_socket_addrs().map(Iterator::collect))
            .await?;
    let mut last = None;
    for addr in addrs {
        match Async::<TcpStream>::connect(addr).await {
            Ok(s) => return Ok(Sock::Tcp(s)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(io::ErrorKind::NotFound, "the host name resolved to no address")
    }))
}
