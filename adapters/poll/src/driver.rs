//! One loop iteration: the canonical driver loop of the core's docs, on mio.
//!
//! ```text
//! wait (one epoll_wait; zero timeout while the ready list is not empty)
//! events     → readiness cache; connections and listeners into the ready lists
//! wake-up    → commands from other threads, resolved names
//! listeners  → accept in batches
//! timers     → Registry::handle_timeout when due (call_soon closures too)
//! ready list → per connection: on_writable, then on_readable while the cache says
//!              readable and the transport wants to read, at most READ_BUDGET times
//! after every registry call → poll_io (into the ready list if the cache allows),
//!              poll_request (connects), poll_error (the error hook)
//! ```
//!
//! Nothing here walks all connections: only handles named by an event, by `poll_io()`
//! or by the ready list are touched.

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use aioport::{
    ConnectionError, DriverError, Endpoint, Extra, Handle, LoopError, Request, StreamHandle,
};
use mio::Token;
use mio::event::Event;
use mio::net::UnixStream;
use rustix::io::Errno;

use crate::event_loop::Loop;
use crate::process::PROCESS_BIT;
use crate::remote::{Command, REMOTE_QUEUE_CAPACITY};
use crate::sockets::{FOREIGN_BIT, LISTENER_BIT, RACE_BITS, SIGNALS, Sock, WAKER};
use crate::{ErrorReport, ServerId};

/// Reads per connection per iteration (each up to the core's 256 KiB buffer) before the
/// loop moves on to other connections; the rest waits in the ready list.
const READ_BUDGET: u32 = 8;

/// Connections accepted per listener per iteration.
const ACCEPT_BATCH: u32 = 128;

/// How long a listener pauses after the process ran out of descriptors (asyncio's
/// `ACCEPT_RETRY_DELAY`).
const ACCEPT_RETRY_DELAY: Duration = Duration::from_secs(1);

/// `d` rounded up to whole milliseconds (epoll's resolution), so a wake-up is never
/// before the deadline and a sub-millisecond timer does not become a busy loop.
fn ceil_ms(d: Duration) -> Duration {
    let ms = d.as_nanos().div_ceil(1_000_000);
    Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

impl Loop {
    /// How long the next wait may block.
    fn wait_timeout(&self, now: Instant, max_wait: Option<Duration>) -> Option<Duration> {
        if !self.ready.is_empty()
            || !self.ready_listeners.is_empty()
            || !self.io.clients.resume.is_empty()
        {
            return Some(Duration::ZERO);
        }
        let mut next = self.registry.poll_timeout();
        if let Some(t) = self.extras.next_deadline() {
            next = Some(next.map_or(t, |n| n.min(t)));
        }
        if self.retrying > 0 {
            for t in self.listeners.iter().flatten().filter_map(|l| l.retry_at) {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        }
        let timer = next.map(|t| ceil_ms(t.saturating_duration_since(now)));
        match (timer, max_wait) {
            (Some(a), Some(b)) => Some(a.min(ceil_ms(b))),
            (a, b) => a.or(b.map(ceil_ms)),
        }
    }

    /// One iteration.
    pub(crate) fn turn(&mut self, max_wait: Option<Duration>) -> Result<(), crate::Error> {
        let timeout = self.wait_timeout(Instant::now(), max_wait);
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => self.events.clear(),
            Err(e) => return Err(e.into()),
        }
        let now = Instant::now();
        // Served after this wait's events; handles queued while serving wait for the next
        // iteration (fairness).
        let waiting = self.ready.len();
        // Moved out so handling an event can borrow the loop; no allocation.
        let events = std::mem::replace(&mut self.events, mio::Events::with_capacity(0));
        for ev in events.iter() {
            match ev.token() {
                WAKER => self.on_wake(now),
                SIGNALS => self.on_signal(),
                Token(t) if t & FOREIGN_BIT == FOREIGN_BIT => self.on_foreign(t, ev, now),
                Token(t) if t & RACE_BITS == RACE_BITS => self.on_racer(t, now),
                Token(t) if t & LISTENER_BIT != 0 => self.queue_listener(t & !LISTENER_BIT),
                t if t.0 & PROCESS_BIT != 0 && self.io.procs.owns(t) => {
                    self.on_process_event(t, ev, now);
                }
                t => self.on_conn_event(t, ev, now),
            }
        }
        self.events = events;

        if self.retrying > 0 {
            self.retry_listeners(now);
        }
        if !self.io.clients.resume.is_empty() {
            self.resume_servers();
        }
        if self.extras.next_deadline().is_some_and(|t| t <= now) {
            self.expire_connects(now);
            self.stagger_races(now);
        }
        for _ in 0..self.ready_listeners.len() {
            let Some(index) = self.ready_listeners.pop_front() else { break };
            self.accept_batch(index, now);
        }
        if self.registry.poll_timeout().is_some_and(|t| t <= now) {
            self.registry.handle_timeout(now, &mut self.io);
            self.after_registry(now);
        }
        for _ in 0..waiting {
            let Some(h) = self.ready.pop_front() else { break };
            self.serve(h, now);
        }
        Ok(())
    }

    /// Updates the readiness cache from an edge and serves the connection at once.
    fn on_conn_event(&mut self, t: Token, ev: &Event, now: Instant) {
        let Some(c) = self.io.by_token(t) else { return self.on_datagram_event(t, ev, now) };
        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
            c.readable = true;
        }
        if ev.is_writable() || ev.is_write_closed() || ev.is_error() {
            c.writable = true;
        }
        c.read_closed |= ev.is_read_closed();
        c.error |= ev.is_error();
        let h = c.handle;
        if c.connecting {
            if c.writable {
                self.finish_connect(StreamHandle::from_handle(h), now);
            }
        } else {
            self.serve(h, now);
        }
    }

    /// Serves one connection: flush, then read while readable and wanted.
    fn serve(&mut self, h: Handle, now: Instant) {
        let Some(c) = self.io.get_mut(h) else {
            // Not a stream socket: a datagram endpoint or a child's pipe.
            if !self.serve_datagram(h, now) {
                self.serve_pipe(h, now);
            }
            return;
        };
        c.queued = false;
        let (readable, writable) = (c.readable, c.writable);
        let Ok(mut interest) = self.registry.interest(h) else { return };
        if writable && interest.write {
            let r = self.registry.on_writable(h, now, &mut self.io);
            self.report_driver(h, r);
            let Ok(i) = self.registry.interest(h) else { return self.after_registry(now) };
            interest = i;
        }
        if readable && interest.read {
            self.read(h, now);
        }
        // EPOLLERR on a transport that neither reads nor writes (paused, nothing queued):
        // no I/O call would reveal it, so fetch it here.
        if let Some(c) = self.io.get_mut(h)
            && c.error
            && let Ok(i) = self.registry.interest(h)
            && !i.read
            && !i.write
        {
            c.error = false;
            let pending = match c.sock.take_error() {
                Ok(Some(e)) | Err(e) => Some(e),
                Ok(None) => None,
            };
            if let Some(e) = pending {
                let r = self.registry.handle_error(h, e.into(), now, &mut self.io);
                self.report_driver(h, r);
            }
        }
        if !self.remotes.is_empty() {
            self.remote_served(h, now);
        }
        self.after_registry(now);
    }

    /// Reads while the cache says readable and the transport wants to, at most
    /// `READ_BUDGET` times; a connection still readable then waits in the ready list.
    fn read(&mut self, h: Handle, now: Instant) {
        for _ in 0..READ_BUDGET {
            let before = self.io.recv_calls;
            let r = self.registry.on_readable(h, now, &mut self.io);
            let failed = r.is_err();
            self.report_driver(h, r);
            // Checked before asking the registry: a short read already cleared it.
            if failed
                || self.io.recv_calls == before
                || !self.io.get_mut(h).is_some_and(|c| c.readable)
            {
                return;
            }
            if !self.registry.interest(h).is_ok_and(|i| i.read) {
                return;
            }
        }
        if let Some(c) = self.io.get_mut(h) {
            c.queued = true;
            self.ready.push_back(h);
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
                if self.queue_datagram(h) {
                    continue;
                }
                if let Some(c) = self.io.get_mut(h)
                    && !c.queued
                    && !c.connecting
                    && let Ok(i) = self.registry.interest(h)
                    && ((c.readable && i.read) || (c.writable && i.write) || c.error)
                {
                    c.queued = true;
                    self.ready.push_back(h);
                } else if !self.io.procs.is_empty()
                    && let Ok(i) = self.registry.interest(h)
                    && self.io.procs.wants_service(h, i.read, i.write)
                {
                    self.ready.push_back(h);
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
            self.remotes_after_close();
        }
    }

    // ----------------------------------------------------------------------------------
    // Other threads
    // ----------------------------------------------------------------------------------

    fn on_wake(&mut self, now: Instant) {
        self.handle.shared.rearm();
        let mut drained = 0;
        while drained < REMOTE_QUEUE_CAPACITY {
            let Ok(cmd) = self.commands.try_recv() else { break };
            drained += 1;
            match cmd {
                // Run as a call_soon closure, so a panic reaches the error hook.
                Command::Call(f) => {
                    self.registry.enter(now, &mut self.io, |ctx| ctx.call_soon(f));
                }
                Command::CloseServer(id) => {
                    self.close_server(id);
                }
            }
        }
        if drained == REMOTE_QUEUE_CAPACITY {
            // More may wait: come back after serving the others.
            self.handle.shared.rearm();
            self.handle.wake();
        }
        self.pump_remotes(now);
        while let Ok((h, result)) = self.resolved_rx.try_recv() {
            match result {
                Ok(addrs) => self.connect_next(h, addrs, None, now),
                Err(e) => self.connect_failed(h, e.into(), now),
            }
        }
        self.resolvers.retain(|t| !t.is_finished());
        self.after_registry(now);
    }

    // ----------------------------------------------------------------------------------
    // Servers
    // ----------------------------------------------------------------------------------

    pub(crate) fn queue_listener(&mut self, index: usize) {
        if let Some(l) = self.listeners.get_mut(index).and_then(Option::as_mut)
            && !l.queued
        {
            l.queued = true;
            self.ready_listeners.push_back(index);
        }
    }

    fn retry_listeners(&mut self, now: Instant) {
        for index in 0..self.listeners.len() {
            if let Some(l) = self.listeners[index].as_mut()
                && l.retry_at.is_some_and(|t| t <= now)
            {
                l.retry_at = None;
                self.retrying -= 1;
                self.queue_listener(index);
            }
        }
    }

    fn accept_batch(&mut self, index: usize, now: Instant) {
        let mut accepted = 0;
        while let Some(l) = self.listeners.get_mut(index).and_then(Option::as_mut) {
            l.queued = false;
            if l.retry_at.is_some() {
                break;
            }
            if accepted == ACCEPT_BATCH {
                l.queued = true;
                self.ready_listeners.push_back(index);
                break;
            }
            let (server, nodelay) = (l.server, l.nodelay);
            if !self.io.clients.has_room(server) {
                // Resumed by `resume_servers` once one of its connections ends.
                break;
            }
            let Some(l) = self.listeners.get_mut(index).and_then(Option::as_mut) else { break };
            match l.socket.accept() {
                Ok((s, peer)) => {
                    accepted += 1;
                    self.adopt(server, nodelay, s, peer);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
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
        let Some(entry) = self.servers.get_mut(server) else {
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
        let mut extra = Extra::default().with_fd(sock.fd().as_raw_fd());
        if let Some(peer) = peer {
            extra = extra.with_peername(peer);
        }
        if let Some(local) = sock.local_addr() {
            extra = extra.with_sockname(local);
        }
        let h = self.registry.insert_stream(protocol, extra).handle();
        let inserted = self.io.insert(h, sock, None);
        if inserted.is_ok() {
            self.io.clients.add(server, h);
        }
        if let Err(error) = inserted {
            (self.hook)(ErrorReport::Setup { server, error });
            // Its socket is gone: the transport ends at once (connection_made, then
            // connection_lost), like a connection reset before it was served.
            let now = Instant::now();
            self.registry.enter(now, &mut self.io, |ctx| {
                let _ = ctx.abort(StreamHandle::from_handle(h));
            });
        }
    }

    // ----------------------------------------------------------------------------------
    // Connections protocols (or create_connection) asked for
    // ----------------------------------------------------------------------------------

    fn start_request(&mut self, req: Request, now: Instant) {
        let Request::Connect { handle, endpoint, .. } = req else {
            // Requests a later core adds (processes, …) are answered by later versions.
            return;
        };
        match endpoint {
            Endpoint::Addr(addr) => self.connect_next(handle, vec![addr], None, now),
            Endpoint::Host { host, port } => match host.parse::<IpAddr>() {
                Ok(ip) => self.connect_next(handle, vec![SocketAddr::new(ip, port)], None, now),
                Err(_) => self.resolve(handle, host, port),
            },
            Endpoint::Unix(path) => match UnixStream::connect(&path) {
                Ok(s) => match self.io.insert(handle.handle(), Sock::Unix(s), Some(Vec::new())) {
                    Ok(()) => {}
                    Err(e) => self.connect_failed(handle, e.into(), now),
                },
                Err(e) => self.connect_failed(handle, e.into(), now),
            },
            other => {
                let e = io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("aioport-poll cannot connect to {other:?}"),
                );
                self.connect_failed(handle, e.into(), now);
            }
        }
    }

    /// Resolves a host name on a helper thread (getaddrinfo blocks); the answer comes
    /// back through the waker.
    fn resolve(&mut self, h: StreamHandle, host: String, port: u16) {
        let tx = self.resolved_tx.clone();
        let remote = self.handle.clone();
        let spawned = std::thread::Builder::new().name("aioport-resolve".into()).spawn(move || {
            let r = (host.as_str(), port).to_socket_addrs().map(Iterator::collect);
            let _ = tx.send((h, r));
            remote.wake();
        });
        match spawned {
            Ok(t) => self.resolvers.push(t),
            Err(e) => self.connect_failed(h, e.into(), Instant::now()),
        }
    }

    /// Tries `addrs` in order; fails with the last error when none is left.
    pub(crate) fn connect_next(
        &mut self,
        h: StreamHandle,
        mut addrs: Vec<SocketAddr>,
        mut last: Option<io::Error>,
        now: Instant,
    ) {
        if self.registry.transport(h.handle()).is_err() {
            // Given up (connect timeout) while the name was being resolved.
            return;
        }
        if let Some(list) = self.extras.addresses.remove(&h.handle()) {
            addrs = list;
        }
        if addrs.len() > 1 && self.eyeballs_delay(h.handle()).is_some() {
            return self.start_racing(h, addrs, now);
        }
        addrs.reverse();
        while let Some(addr) = addrs.pop() {
            let attempt = self
                .open_tcp(h.handle(), addr)
                .and_then(|s| self.io.insert(h.handle(), Sock::Tcp(s), Some(addrs.clone())));
            match attempt {
                Ok(()) => return,
                Err(e) => last = Some(e),
            }
        }
        let e = last.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "the name resolved to no address")
        });
        self.connect_failed(h, e.into(), now);
    }

    pub(crate) fn finish_connect(&mut self, h: StreamHandle, now: Instant) {
        let nodelay = self.io.nodelay;
        let Some(c) = self.io.get_mut(h.handle()) else { return };
        let outcome = match c.sock.take_error() {
            Ok(Some(e)) | Err(e) => Err(e),
            Ok(None) => match c.sock.peer_addr() {
                Ok(peer) => Ok(peer),
                // A spurious wake-up: still connecting.
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                    c.writable = false;
                    return;
                }
                Err(e) => Err(e),
            },
        };
        match outcome {
            Ok(peer) => {
                c.connecting = false;
                if nodelay {
                    c.sock.set_nodelay();
                }
                let mut extra = Extra::default().with_fd(c.sock.fd().as_raw_fd());
                if let Some(peer) = peer {
                    extra = extra.with_peername(peer);
                }
                if let Some(local) = c.sock.local_addr() {
                    extra = extra.with_sockname(local);
                }
                self.io.take_fallbacks(h.handle());
                self.outcome(h, Ok(()));
                let r = self.registry.handle_connected(h, extra, now, &mut self.io);
                self.report_driver(h.handle(), r);
                self.after_registry(now);
            }
            Err(e) => {
                self.io.remove(h.handle());
                let mut rest = self.io.take_fallbacks(h.handle());
                rest.reverse();
                self.connect_next(h, rest, Some(e), now);
            }
        }
    }

    pub(crate) fn connect_failed(&mut self, h: StreamHandle, err: ConnectionError, now: Instant) {
        self.io.remove(h.handle());
        self.io.take_fallbacks(h.handle());
        self.outcome(h, Err(err.clone()));
        let r = self.registry.handle_connect_failed(h, err, now, &mut self.io);
        self.report_driver(h.handle(), r);
        self.after_registry(now);
    }

    fn outcome(&mut self, h: StreamHandle, r: Result<(), ConnectionError>) {
        self.connect_done(h.handle());
        if let Some((awaited, slot)) = &mut self.awaited
            && *awaited == h.handle()
        {
            *slot = Some(r);
        }
    }
}
