//! `registry_ops`: several transports in one registry; protocols that act on other
//! transports from inside their callbacks; stale handles; driver misuse.
//!
//! `mod.rs` drives (the run, the driver operations); `ops.rs` decodes; `world.rs` holds
//! what the run knows and the socket table; `actions.rs` performs and checks `Ctx` calls;
//! `actor.rs` is the scripted protocol; `checks.rs` runs the checks after every step.

mod actions;
mod actor;
mod checks;
mod ops;
mod world;

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::io::{ErrorKind, IoSlice};
use std::rc::Rc;
use std::time::{Duration, Instant};

use self::actions::user_code;
use self::checks::{Grammar, Traced};
use self::ops::{DriverOp, Step, decode, small_size};
pub use self::ops::{REGISTRY_OPS, describe_registry};
pub(crate) use self::world::DELIBERATE_PANIC;
use self::world::{Action, Kind, Known, NOWHERE, Sock, World, pattern};
use crate::{ConnectionError, DriverError, Endpoint, Extra, Handle, Registry, StreamHandle, Trace};

/// One `registry_ops` run: the registry, the shared world, and what the checks have seen.
struct Run {
    reg: Registry,
    world: Rc<World>,
    now: Instant,
    trace: Rc<RefCell<Vec<(Handle, Traced)>>>,
    checked: usize,
    grammar: BTreeMap<Handle, Grammar>,
    /// Per actor: how far its log was checked, and whether it is paused.
    heard_checked: Vec<(usize, bool)>,
    pending: VecDeque<StreamHandle>,
    panics_reported: u64,
    steps: Vec<String>,
}

impl Run {
    fn new(world: Rc<World>) -> Self {
        let now = crate::fuzzing::base_instant();
        let mut reg = Registry::new(now);
        let trace: Rc<RefCell<Vec<(Handle, Traced)>>> = Rc::default();
        let (log, w) = (trace.clone(), world.clone());
        reg.set_tracer(Some(Box::new(move |h, t| {
            // Not a callback: each actor's log is already per protocol instance.
            if t == Trace::ProtocolSwapped {
                return;
            }
            let traced = match t {
                Trace::ConnectionMade => Traced::Made,
                Trace::DataReceived(_) => Traced::Data,
                Trace::EofReceived => Traced::Eof,
                Trace::PauseWriting => Traced::Pause,
                Trace::ResumeWriting => Traced::Resume,
                Trace::ConnectionLost(_) => {
                    let closes = w.socks.with(h, |s| s.closes);
                    if closes != 1 {
                        w.fail(format!("{h:?}: connection_lost after {closes} Io::close calls"));
                    }
                    Traced::Lost
                }
                _ => Traced::Other,
            };
            if w.known.borrow().iter().any(|k| k.h == h && k.poisoned) {
                w.fail(format!("{h:?}: {traced:?} delivered after its protocol panicked"));
            }
            log.borrow_mut().push((h, traced));
        })));
        Run {
            reg,
            world,
            now,
            trace,
            checked: 0,
            grammar: Default::default(),
            heard_checked: Vec::new(),
            pending: VecDeque::new(),
            panics_reported: 0,
            steps: Vec::new(),
        }
    }

    fn fail(&self, what: impl std::fmt::Display) -> ! {
        let recent: Vec<String> = self
            .trace
            .borrow()
            .iter()
            .rev()
            .take(16)
            .rev()
            .map(|(h, t)| format!("{h:?} {t:?}"))
            .collect();
        panic!(
            "registry_ops invariant violated: {what}\n  after {} ops (last 12: {})\n  recent callbacks: {}",
            self.steps.len(),
            self.steps.iter().rev().take(12).rev().cloned().collect::<Vec<_>>().join(", "),
            recent.join(", ")
        )
    }

    fn known(&self, t: u8) -> Option<Known> {
        self.world.target(t)
    }

    /// The driver-face error a call on `k` must return, if any.
    fn driver_error(k: &Option<Known>) -> Option<DriverError> {
        match k {
            None => Some(DriverError::StaleHandle),
            Some(k) if k.stale => Some(DriverError::StaleHandle),
            Some(k) if k.server.is_some() => {
                Some(DriverError::WrongKind { expected: "transport the driver owns" })
            }
            _ => None,
        }
    }

    /// `Io::close` was called for `k`'s transport (read before a call).
    fn closed(&self, k: &Option<Known>) -> bool {
        k.as_ref().is_some_and(|k| self.world.socks.with(k.h, |s| s.closes) > 0)
    }

    fn expect(
        &self,
        what: &str,
        k: &Option<Known>,
        closed: bool,
        r: Result<(), DriverError>,
        ok: Result<(), DriverError>,
    ) {
        let mut want = Self::driver_error(k).map_or(ok, Err);
        // A transport still in the loop after `Io::close` (a connecting one the driver
        // reported an error for: it waits for the connect outcome) refuses further I/O —
        // except `on_readable`, which ignores a connecting transport.
        if let Some(k) = k
            && Self::driver_error(&Some(k.clone())).is_none()
            && closed
            && !(what == "on_readable" && k.connecting)
        {
            want = Err(DriverError::Closed);
        }
        // A handle whose protocol panicked or was lost during the call (its pending
        // connection_made ran first) may answer anything a stale handle may.
        let ended = k.as_ref().is_some_and(|k| {
            self.world
                .known
                .borrow()
                .iter()
                .any(|x| x.h == k.h && (x.poisoned || x.stale) && !k.stale)
        });
        if r != want
            && !(ended && matches!(r, Ok(()) | Err(DriverError::StaleHandle | DriverError::Closed)))
        {
            self.fail(format!(
                "{what} on {:?}: got {r:?}, expected {want:?}",
                k.as_ref().map(|k| k.h)
            ));
        }
    }

    fn insert(&mut self, b: u8) {
        let buffered = b & 4 != 0;
        let kind = match b % 3 {
            0 => Kind::Socket,
            1 => Kind::ReadPipe,
            _ => Kind::WritePipe,
        };
        let fd = self.world.fd();
        let mut extra = Extra::default().with_fd(fd);
        if kind == Kind::Socket {
            extra = extra.with_peername(([127, 0, 0, 1], 1000 + fd as u16).into());
        }
        // The handle is known only once inserted; the actor learns it from its first callback.
        let p = self.world.actor(None, buffered);
        let h = match kind {
            Kind::Socket => self.reg.insert_stream(p, extra.clone()).handle(),
            Kind::ReadPipe => self.reg.insert_read_pipe(p, extra.clone()).handle(),
            Kind::WritePipe => self.reg.insert_write_pipe(p, extra.clone()).handle(),
        };
        self.world.known.borrow_mut().push(Known::new(h, kind, extra));
    }

    fn driver(&mut self, op: &DriverOp) {
        let now = self.now;
        let mut io = self.world.socks.clone();
        match *op {
            DriverOp::Dispatch => self.reg.dispatch(now, &mut io),
            DriverOp::Insert(b) => self.insert(b),
            DriverOp::RegistryConnect => {
                let p = self.world.actor(None, false);
                let h = self.reg.connect(p, Endpoint::Unix("/fuzz/socket".into()));
                let mut k = Known::new(h.handle(), Kind::Socket, Extra::default());
                k.connecting = true;
                self.world.known.borrow_mut().push(k);
            }
            DriverOp::ConnectDone(ok) => {
                let Some(h) = self.pending.pop_front() else { return };
                let r = if ok {
                    let extra = Extra::default().with_fd(self.world.fd());
                    // Connected at once: its connection_made runs inside the call.
                    self.update(h.handle(), |k| (k.connecting, k.extra) = (false, extra.clone()));
                    self.reg.handle_connected(h, extra, now, &mut io)
                } else {
                    self.update(h.handle(), |k| (k.stale, k.connect_failed) = (true, true));
                    let err = ConnectionError::from(ErrorKind::ConnectionRefused);
                    self.reg.handle_connect_failed(h, err, now, &mut io)
                };
                if let Err(e) = r {
                    self.fail(format!("connect outcome for {h:?}: {e}"));
                }
            }
            DriverOp::ConnectedMisuse(t) => {
                let k = self.known(t);
                if k.as_ref().is_some_and(|k| k.connecting) {
                    return; // a legitimate outcome: leave it to connect_succeeded
                }
                let h = StreamHandle::from_handle(k.as_ref().map_or(NOWHERE, |k| k.h));
                let r = self.reg.handle_connected(h, Extra::default(), now, &mut io);
                let stale = k.as_ref().is_none_or(|k| k.stale);
                let want =
                    Err(if stale { DriverError::StaleHandle } else { DriverError::NotConnecting });
                if r != want {
                    self.fail(format!(
                        "handle_connected misuse on {h:?}: {r:?}, expected {want:?}"
                    ));
                }
            }
            DriverOp::Readable(t) => {
                let k = self.known(t);
                let h = k.as_ref().map_or(NOWHERE, |k| k.h);
                let closed = self.closed(&k);
                let r = self.reg.on_readable(h, now, &mut io);
                let lied = io.with(h, |s| s.lied_recv.take());
                let ok = match lied {
                    Some((capacity, received)) => {
                        Err(DriverError::ReceivedMoreThanCapacity { capacity, received })
                    }
                    None => Ok(()),
                };
                self.expect("on_readable", &k, closed, r, ok);
            }
            DriverOp::Writable(t) => {
                let k = self.known(t);
                let h = k.as_ref().map_or(NOWHERE, |k| k.h);
                let closed = self.closed(&k);
                let r = self.reg.on_writable(h, now, &mut io);
                self.expect("on_writable", &k, closed, r, Ok(()));
            }
            DriverOp::HandleError(t) => {
                let k = self.known(t);
                let h = k.as_ref().map_or(NOWHERE, |k| k.h);
                let err = ConnectionError::from(ErrorKind::BrokenPipe);
                let closed = self.closed(&k);
                if k.as_ref().is_some_and(|k| k.connecting) {
                    // An error before the connect outcome is the connect failing.
                    self.pending.retain(|p| p.handle() != h);
                    self.update(h, |k| (k.stale, k.connect_failed) = (true, true));
                }
                let r = self.reg.handle_error(h, err, now, &mut io);
                self.expect("handle_error", &k, closed, r, Ok(()));
            }
            DriverOp::Received(t, n) => {
                let k = self.known(t);
                let h = k.as_ref().map_or(NOWHERE, |k| k.h);
                let (from, eof_told) = io.with(h, |s| (s.peer_read, s.eof_told));
                let data = pattern(from, n);
                let closed = self.closed(&k);
                let r = self.reg.handle_received(h, &data, now, &mut io);
                if r.is_ok() {
                    io.with(h, |s| {
                        s.peer_read += n as u64;
                        s.peer = s.peer.max(s.peer_read);
                        s.eof_told |= n == 0;
                    });
                }
                let ok = if eof_told { Err(DriverError::DataAfterEof) } else { Ok(()) };
                self.expect("handle_received", &k, closed, r, ok);
            }
            DriverOp::Transmit(t, b) => self.transmit(t, b),
            DriverOp::Probe(t) => self.probe(t),
            DriverOp::Advance(ms) => self.advance(ms),
            DriverOp::Grant(t, n) => self.sock(t, |s| s.budget += n),
            DriverOp::PeerSend(t, n) => self.sock(t, |s| s.peer += n as u64),
            DriverOp::PeerEof(t) => self.sock(t, |s| s.peer_eof = true),
            DriverOp::PeerReset(t) => self.sock(t, |s| s.reset = true),
            DriverOp::LieSend(t) => self.sock(t, |s| s.lie_send = true),
            DriverOp::LieRecv(t) => self.sock(t, |s| s.lie_recv = true),
        }
    }

    fn sock(&self, t: u8, f: impl FnOnce(&mut Sock)) {
        if let Some(k) = self.known(t) {
            self.world.socks.with(k.h, f);
        }
    }

    fn update(&self, h: Handle, f: impl FnOnce(&mut Known)) {
        if let Some(k) = self.world.known.borrow_mut().iter_mut().find(|k| k.h == h) {
            f(k);
        }
    }

    /// A completion-based send: offer, send, report; or report more than was offered.
    fn transmit(&mut self, t: u8, b: u8) {
        let k = self.known(t);
        let h = k.as_ref().map_or(NOWHERE, |k| k.h);
        let mut io = self.world.socks.clone();
        let offered = {
            let mut slices = [IoSlice::new(&[]); 4];
            match self.reg.poll_transmit(h, &mut slices) {
                Ok(count) => {
                    let bytes: Vec<u8> =
                        slices[..count].iter().flat_map(|s| s.iter().copied()).collect();
                    Ok(bytes)
                }
                Err(e) => Err(e),
            }
        };
        let offered = match (offered, Self::driver_error(&k)) {
            (Err(e), Some(want)) if e == want => return,
            (Ok(_), Some(want)) => {
                self.fail(format!("poll_transmit({h:?}) = Ok, expected {want:?}"))
            }
            (Err(e), _) => self.fail(format!("poll_transmit({h:?}) = {e:?}")),
            (Ok(bytes), None) => bytes,
        };
        if self.closed(&k) {
            // A connecting transport the driver reported an error for.
            let r = self.reg.handle_sent(h, usize::from(b), self.now, &mut io);
            if r != Err(DriverError::Closed) {
                self.fail(format!("handle_sent after Io::close on {h:?}: {r:?}"));
            }
            return;
        }
        if b & 0x80 != 0 {
            // More than the whole queue: refused, and nothing changes.
            // Deliver what is owed first (an undispatched insert, waiting closures): then
            // nothing may change.
            self.reg.dispatch(self.now, &mut io);
            let Ok(size) = self.reg.transport(h).map(|t| t.write_buffer_size()) else { return };
            let n = size + 1 + usize::from(b & 0x7f);
            let before = self.snapshot(h);
            let r = self.reg.handle_sent(h, n, self.now, &mut io);
            let want = Err(DriverError::SentMoreThanOffered { offered: size, sent: n });
            if r != want || self.snapshot(h) != before {
                self.fail(format!(
                    "handle_sent({n}) misuse on {h:?}: {r:?}, expected {want:?}, state changed: {}",
                    self.snapshot(h) != before
                ));
            }
            return;
        }
        let n = small_size(b).min(offered.len());
        let bad = io.with(h, |s| {
            let ok = offered[..n] == pattern(s.sent, n)[..];
            s.sent += n as u64;
            !ok
        });
        if bad {
            self.fail(format!("poll_transmit({h:?}) offered bytes out of order"));
        }
        let r = self.reg.handle_sent(h, n, self.now, &mut io);
        if r.is_err() {
            self.fail(format!("handle_sent({n}) of {} offered on {h:?}: {r:?}", offered.len()));
        }
    }

    fn snapshot(&self, h: Handle) -> (usize, bool, bool, crate::Interest, usize) {
        let t = self.reg.transport(h).ok();
        (
            t.map_or(0, |t| t.write_buffer_size()),
            t.is_some_and(|t| t.is_closing()),
            t.is_some_and(|t| t.is_writing_paused()),
            self.reg.interest(h).unwrap_or_default(),
            self.trace.borrow().len(),
        )
    }

    /// Every driver-face query, and the user-face queries through `enter`.
    fn probe(&mut self, t: u8) {
        let k = self.known(t);
        let h = k.as_ref().map_or(NOWHERE, |k| k.h);
        let want = Self::driver_error(&k);
        let interest = self.reg.interest(h).map(|_| ());
        if interest != want.clone().map_or(Ok(()), Err) {
            self.fail(format!("interest({h:?}) = {interest:?}, expected {want:?}"));
        }
        let transport = self.reg.transport(h).map(|_| ());
        let stale = k.as_ref().is_none_or(|k| k.stale);
        if transport.is_ok() == stale {
            self.fail(format!("transport({h:?}) = {transport:?}, stale = {stale}"));
        }
        if let Ok(t) = self.reg.transport(h) {
            // The transport's own view agrees with its handle and the driver's.
            if t.handle() != h
                || t.is_finished()
                || k.as_ref().is_some_and(|k| t.extra() != &k.extra)
            {
                self.fail(format!("transport({h:?}) disagrees: {:?}", t.handle()));
            }
            let _ =
                (t.kind(), t.heap_bytes(), t.has_callback(), t.is_socket_closed(), t.interest());
        }
        let _ = (self.reg.len(), self.reg.is_empty(), self.reg.errors_dropped());
        let world = self.world.clone();
        let mut io = self.world.socks.clone();
        self.reg.enter(self.now, &mut io, |ctx| {
            user_code(&world, ctx, &Action::Query(t));
            user_code(&world, ctx, &Action::WrongKind(t));
        });
    }

    fn advance(&mut self, ms: u64) {
        self.now += Duration::from_millis(ms);
        let mut io = self.world.socks.clone();
        self.reg.handle_timeout(self.now, &mut io);
        if self.reg.pending_soon() > 0 {
            return;
        }
        if let Some(t) = self.reg.poll_timeout().filter(|&t| t <= self.now) {
            // Only a timer re-armed at or before `now` while firing may be due: then the
            // next pass must fire it (no busy loop).
            let before = (self.trace.borrow().len(), self.world.closures_run.get());
            self.reg.handle_timeout(self.now, &mut io);
            let after = (self.trace.borrow().len(), self.world.closures_run.get());
            if before == after {
                self.fail(format!(
                    "poll_timeout() = now - {:?}, but handle_timeout(now) did nothing",
                    self.now - t
                ));
            }
        }
    }

    fn step(&mut self, step: &Step) {
        self.steps.push(format!("{step:?}"));
        match step {
            Step::Driver(op) => self.driver(op),
            Step::Enter(a) => {
                let world = self.world.clone();
                let mut io = self.world.socks.clone();
                self.reg.enter(self.now, &mut io, |ctx| user_code(&world, ctx, a));
            }
            Step::Mail(t, a) => {
                if let Some(k) = self.known(*t) {
                    self.world.mail.borrow_mut().entry(k.h).or_default().push_back(a.clone());
                }
            }
        }
        self.settle();
    }
}

/// Fuzz target: several transports in one registry, cross-handle calls from inside
/// callbacks, stale handles and driver misuse (opcode table [`REGISTRY_OPS`]). Panics on
/// the first broken invariant.
///
/// Invariants checked after every operation (and at the end, once every transport was
/// aborted):
///
/// * the transcript grammar of every transport (the harness checker's): `connection_made`
///   first and once, `connection_lost` once and last, nothing after EOF's data but the
///   end, and — per protocol instance, since a swap re-announces a pause (gh-109051) —
///   `pause_writing` / `resume_writing` strictly alternating from a pause;
/// * no callback inside another, and none to a protocol after it panicked;
/// * `Io::close` exactly once per transport, before its `connection_lost`; no I/O after it;
///   `shutdown_write` at most once; bytes sent in the order written, bytes delivered in the
///   order the peer sent them;
/// * a handle is stale exactly when its `connection_lost` was delivered (or its protocol
///   panicked, or its connect failed), and every call with a stale handle — user face or
///   driver face — returns the stale error; wrong kinds and connecting transports get
///   their typed errors;
/// * driver misuse (more sent than offered, data after EOF, a connect outcome for a
///   transport not connecting, an `Io` claiming too much) returns its `DriverError` and
///   changes nothing;
/// * `poll_io` reports live, driver-owned transports and terminates; a loop error is a
///   deliberate panic or error, one per deliberate panic; no work without new input; a
///   due timer fires; no timer or closure fires early; timer entries stay bounded.
pub fn registry_ops(data: &[u8]) {
    crate::fuzzing::quiet_deliberate_panics();
    let steps = decode(data);
    let mut run = Run::new(World::new());
    for step in steps.iter().take(2_000) {
        run.step(step);
    }
    run.finish();
}
