//! `Sim`: the in-memory, virtual-time driver of a registry.

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::dgram::DgramFaults;
use super::net::{End, Faults, Net, PeerState};
use super::rng::Rng;
use super::transcript::{Checker, Event, Recorder, SharedRecorder, Violation, record};
use crate::{
    ConnectionError, Ctx, DatagramAddr, DatagramHandle, DatagramProtocol, Endpoint, Extra, Handle,
    LoopError, Protocol, Registry, Request, StreamHandle,
};

/// How a [`Sim`] behaves: the seed and the faults its links apply.
///
/// ```
/// use std::time::Duration;
/// use aioport::testing::SimConfig;
/// let config = SimConfig::new(42)
///     .max_send(7)                          // partial sends of 1..=7 bytes
///     .max_read(3)                          // reads return 1..=3 bytes
///     .latency(Duration::from_millis(5))    // bytes arrive 5 ms later (virtual time)
///     .capacity(1024);                      // 1 KiB of socket buffer per direction
/// assert_eq!(config.seed(), 42);
/// ```
#[derive(Debug, Clone)]
pub struct SimConfig {
    seed: u64,
    faults: Faults,
    dgram: DgramFaults,
    keep_data: bool,
    max_write_buffer: Option<usize>,
    max_steps: u64,
}

impl SimConfig {
    /// No faults: whole sends, whole reads, no latency, 256 KiB of socket buffer per
    /// direction; transcripts keep data; 1,000,000 steps before `run_until_idle` calls it
    /// a livelock.
    pub fn new(seed: u64) -> Self {
        SimConfig {
            seed,
            faults: Faults {
                max_send: None,
                max_read: None,
                refuse_percent: 0,
                latency: Duration::ZERO,
                capacity: 256 * 1024,
                corrupt_percent: 0,
                zero_copy: false,
            },
            dgram: DgramFaults::default(),
            keep_data: true,
            max_write_buffer: None,
            max_steps: 1_000_000,
        }
    }

    /// Datagram loss: this percentage of datagrams never arrives.
    pub fn loss_percent(mut self, percent: u8) -> Self {
        self.dgram.loss_percent = percent.min(100);
        self
    }

    /// Datagram duplication: this percentage arrives twice.
    pub fn dup_percent(mut self, percent: u8) -> Self {
        self.dgram.dup_percent = percent.min(100);
        self
    }

    /// Datagram reordering: this percentage swaps places with the datagram before it.
    pub fn reorder_percent(mut self, percent: u8) -> Self {
        self.dgram.reorder_percent = percent.min(100);
        self
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Partial sends: each send takes 1..=`max` bytes (random).
    pub fn max_send(mut self, max: usize) -> Self {
        self.faults.max_send = Some(max.max(1));
        self
    }

    /// Random read chunking: each read returns 1..=`max` bytes.
    pub fn max_read(mut self, max: usize) -> Self {
        self.faults.max_read = Some(max.max(1));
        self
    }

    /// Transient stalls: this percentage of sends (stream or datagram) is refused with
    /// `WouldBlock`.
    pub fn refuse_percent(mut self, percent: u8) -> Self {
        self.faults.refuse_percent = percent.min(100);
        self
    }

    /// Latency in virtual time: bytes become readable this long after they were sent.
    pub fn latency(mut self, latency: Duration) -> Self {
        self.faults.latency = latency;
        self
    }

    /// Socket buffer per direction: a sender blocks once this many bytes are unread, so a
    /// reader that stops reading (see [`Sim::stall`]) makes the writer cross its high-water
    /// mark.
    pub fn capacity(mut self, bytes: usize) -> Self {
        self.faults.capacity = bytes.max(1);
        self
    }

    /// Stream links do zero-copy sendfile: a `Ctx::sendfile` moves the file's bytes into
    /// the link through `Io::try_sendfile`, with the same faults as sends (off by
    /// default: the core's read-and-write fallback).
    pub fn zero_copy_sendfile(mut self, on: bool) -> Self {
        self.faults.zero_copy = on;
        self
    }

    /// A deliberately broken network that duplicates a byte in this percentage of sends:
    /// the invariant checker reports it. For testing checkers, never for testing protocols.
    pub fn corrupt_percent(mut self, percent: u8) -> Self {
        self.faults.corrupt_percent = percent.min(100);
        self
    }

    /// Whether transcripts keep received bytes ([`Event::Data`]) or only their length
    /// ([`Event::DataLen`]), for long transfers.
    pub fn keep_data(mut self, keep: bool) -> Self {
        self.keep_data = keep;
        self
    }

    /// An extra invariant: no transport's `write_buffer_size()` may exceed `bytes` — it
    /// catches protocols that ignore `pause_writing`.
    pub fn max_write_buffer(mut self, bytes: usize) -> Self {
        self.max_write_buffer = Some(bytes);
        self
    }

    /// Steps `run_until_idle` allows before it reports a livelock.
    pub fn max_steps(mut self, steps: u64) -> Self {
        self.max_steps = steps;
        self
    }
}

/// A test-driven peer of a transport, from [`Sim::open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerId {
    link: usize,
    side: usize,
}

/// Why a [`Sim`] run stopped short.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SimError {
    /// An invariant was violated.
    Violation(Violation),
    /// Still busy after the configured number of steps.
    Livelock {
        /// Steps taken.
        steps: u64,
        /// The seed that reproduces it.
        seed: u64,
        /// The last callbacks, oldest first.
        recent: Vec<String>,
    },
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimError::Violation(v) => v.fmt(f),
            SimError::Livelock { steps, seed, recent } => write!(
                f,
                "livelock: still busy after {steps} steps (seed {seed}); last callbacks:\n    {}",
                recent.join("\n    ")
            ),
        }
    }
}

impl std::error::Error for SimError {}

type Factory = Box<dyn FnMut() -> Box<dyn Protocol>>;

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Read(Handle),
    Write(Handle),
    Peer(usize, usize),
}

/// The address the `n`-th datagram endpoint of a simulation gets by default.
fn sim_addr(n: usize) -> DatagramAddr {
    DatagramAddr::Inet(std::net::SocketAddr::from(([10, 0, 0, 1], 10_000 + n as u16)))
}

/// An in-memory loop: a [`Registry`] driven over links with seeded faults, in virtual
/// time, recording a transcript of every callback and checking invariants after every
/// step. See the [module docs](super) for a tour.
pub struct Sim {
    reg: Registry,
    net: Net,
    now: Instant,
    rec: SharedRecorder,
    checker: Checker,
    cursors: std::collections::BTreeMap<Handle, usize>,
    max_write_buffer: Option<usize>,
    max_steps: u64,
    seed: u64,
    steps: u64,
    stalled: std::collections::BTreeMap<Handle, Instant>,
    listeners: Vec<(Endpoint, Factory)>,
    errors: Vec<LoopError>,
    candidates: Vec<Action>,
}

impl Sim {
    /// A fault-free simulation starting at `now` (virtual time; the caller picks the base
    /// `Instant`).
    pub fn new(now: Instant, seed: u64) -> Self {
        Self::with_config(now, SimConfig::new(seed))
    }

    /// A simulation with faults.
    pub fn with_config(now: Instant, config: SimConfig) -> Self {
        let mut reg = Registry::new(now);
        let rec =
            Rc::new(RefCell::new(Recorder { keep_data: config.keep_data, ..Recorder::default() }));
        record(&mut reg, &rec);
        let mut net = Net::new(Rng::new(config.seed), config.faults, now);
        net.dgram.faults = config.dgram;
        Sim {
            reg,
            net,
            now,
            rec,
            checker: Checker::default(),
            cursors: Default::default(),
            max_write_buffer: config.max_write_buffer,
            max_steps: config.max_steps,
            seed: config.seed,
            steps: 0,
            stalled: Default::default(),
            listeners: Vec::new(),
            errors: Vec::new(),
            candidates: Vec::new(),
        }
    }

    /// The seed: print it when a test fails, and the run replays exactly.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The registry, read-only (interest, `transport(h)`, `poll_timeout`).
    pub fn registry(&self) -> &Registry {
        &self.reg
    }

    // ----------------------------------------------------------------------------------
    // Building the network
    // ----------------------------------------------------------------------------------

    fn insert(&mut self, p: impl Protocol + 'static) -> StreamHandle {
        self.reg.insert_stream(Box::new(p), Extra::default())
    }

    /// Two transports joined by a link; `connection_made` is delivered to both.
    pub fn pair(
        &mut self,
        a: impl Protocol + 'static,
        b: impl Protocol + 'static,
    ) -> (StreamHandle, StreamHandle) {
        let (ha, hb) = (self.insert(a), self.insert(b));
        self.net.add_link(End::Transport(ha.handle()), End::Transport(hb.handle()));
        self.settle();
        (ha, hb)
    }

    /// A transport whose peer is the test: send to it with [`peer_send`](Self::peer_send),
    /// read what it wrote with [`peer_received`](Self::peer_received).
    pub fn open(&mut self, p: impl Protocol + 'static) -> (StreamHandle, PeerId) {
        let h = self.insert(p);
        let peer = PeerState { reading: true, ..PeerState::default() };
        let link = self.net.add_link(End::Transport(h.handle()), End::Peer(peer));
        self.settle();
        (h, PeerId { link, side: 1 })
    }

    /// Two datagram endpoints connected to each other (each the other's `remote_addr`).
    pub fn datagram_pair(
        &mut self,
        a: impl DatagramProtocol + 'static,
        b: impl DatagramProtocol + 'static,
    ) -> (DatagramHandle, DatagramHandle) {
        let n = self.net.dgram.ends.len();
        let (addr_a, addr_b) = (sim_addr(n), sim_addr(n + 1));
        // Both exist before either protocol runs, so the first datagrams find their peer.
        let ha = self.add_datagram(Box::new(a), addr_a.clone(), Some(addr_b.clone()));
        let hb = self.add_datagram(Box::new(b), addr_b, Some(addr_a));
        self.settle();
        (ha, hb)
    }

    /// A datagram endpoint bound to `addr`, connected to `remote` if given; it can reach
    /// every other endpoint of the simulation by address. A datagram to an address
    /// nobody is bound to is lost, and a connected sender hears `ConnectionRefused` (an
    /// ICMP port-unreachable) on its next receive, as on Linux.
    pub fn datagram_endpoint(
        &mut self,
        p: impl DatagramProtocol + 'static,
        addr: DatagramAddr,
        remote: Option<DatagramAddr>,
    ) -> DatagramHandle {
        let h = self.add_datagram(Box::new(p), addr, remote);
        self.settle();
        h
    }

    fn add_datagram(
        &mut self,
        p: Box<dyn DatagramProtocol>,
        addr: DatagramAddr,
        remote: Option<DatagramAddr>,
    ) -> DatagramHandle {
        let h = self.reg.insert_datagram(p, remote.clone(), Extra::default());
        self.net.dgram.add(h.handle(), addr, remote);
        h
    }

    /// Datagrams `h`'s socket accepted.
    pub fn datagrams_sent(&self, h: DatagramHandle) -> u64 {
        self.net.dgram.ends.get(&h.handle()).map_or(0, |e| e.accepted)
    }

    /// Datagrams the network lost (the loss fault, or no receiver at the address).
    pub fn datagrams_lost(&self) -> u64 {
        self.net.dgram.lost
    }

    /// Accepts connections that protocols open with [`Ctx::connect`] to `endpoint`: each
    /// gets a transport with a protocol from `factory`. Connects to endpoints nobody
    /// listens on fail with `ConnectionRefused`.
    pub fn listen(
        &mut self,
        endpoint: Endpoint,
        factory: impl FnMut() -> Box<dyn Protocol> + 'static,
    ) {
        self.listeners.push((endpoint, Box::new(factory)));
    }

    // ----------------------------------------------------------------------------------
    // The test-driven peer
    // ----------------------------------------------------------------------------------

    fn peer_state(&self, peer: PeerId) -> &PeerState {
        match &self.net.links[peer.link].ends[peer.side] {
            End::Peer(p) => p,
            _ => unreachable!("PeerId always names a peer end"),
        }
    }

    fn peer_state_mut(&mut self, peer: PeerId) -> &mut PeerState {
        match &mut self.net.links[peer.link].ends[peer.side] {
            End::Peer(p) => p,
            _ => unreachable!("PeerId always names a peer end"),
        }
    }

    /// The peer sends `data` (it arrives after the configured latency; the peer's socket
    /// buffer is unbounded).
    pub fn peer_send(&mut self, peer: PeerId, data: &[u8]) {
        let dir = &mut self.net.links[peer.link].dirs[peer.side];
        dir.verify.extend(data);
        dir.accepted += data.len() as u64;
        dir.push(self.now + self.net.faults.latency, data);
    }

    /// The peer shuts down its write side: EOF after what it sent.
    pub fn peer_eof(&mut self, peer: PeerId) {
        self.net.links[peer.link].dirs[peer.side].eof = true;
    }

    /// Everything the peer has read so far.
    pub fn peer_received(&self, peer: PeerId) -> &[u8] {
        &self.peer_state(peer).received
    }

    /// Takes what the peer has read so far.
    pub fn take_peer_received(&mut self, peer: PeerId) -> Vec<u8> {
        std::mem::take(&mut self.peer_state_mut(peer).received)
    }

    /// True once the peer read EOF (the transport shut down or closed).
    pub fn peer_saw_eof(&self, peer: PeerId) -> bool {
        self.peer_state(peer).saw_eof
    }

    /// The peer stops reading: the transport's writes fill the link, then its queue.
    pub fn peer_pause_reading(&mut self, peer: PeerId) {
        self.peer_state_mut(peer).reading = false;
    }

    /// The peer reads again.
    pub fn peer_resume_reading(&mut self, peer: PeerId) {
        self.peer_state_mut(peer).reading = true;
    }

    // ----------------------------------------------------------------------------------
    // Faults
    // ----------------------------------------------------------------------------------

    /// Resets `h`'s connection: both ends fail their next operation with
    /// `ConnectionReset`.
    pub fn reset(&mut self, h: StreamHandle) {
        if let Some(&(link, side)) = self.net.ends.get(&h.handle()) {
            self.net.links[link].dirs[side].reset = true;
        }
    }

    /// `h` stops reading its socket for `duration` of virtual time, so its peer's writes
    /// fill the link and the peer crosses its high-water mark.
    pub fn stall(&mut self, h: StreamHandle, duration: Duration) {
        self.stalled.insert(h.handle(), self.now + duration);
    }

    // ----------------------------------------------------------------------------------
    // User code and time
    // ----------------------------------------------------------------------------------

    /// Runs user code with a [`Ctx`] (writes, closes, … on any transport), then dispatches
    /// and checks invariants.
    pub fn enter<R>(&mut self, f: impl FnOnce(&mut Ctx<'_>) -> R) -> R {
        let r = self.reg.enter(self.now, &mut self.net, f);
        self.settle();
        r
    }

    /// Moves virtual time forward by `d`, firing what is due (never anything early).
    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        self.net.now = self.now;
        self.reg.handle_timeout(self.now, &mut self.net);
        self.settle();
    }

    /// Runs until nothing is left to do, jumping virtual time to the next timer or
    /// arrival whenever nothing else is ready.
    ///
    /// # Panics
    ///
    /// On an invariant violation or a livelock, with the seed and the last callbacks.
    pub fn run_until_idle(&mut self) {
        if let Err(e) = self.try_run_until_idle() {
            panic!("{e}");
        }
    }

    /// [`run_until_idle`](Self::run_until_idle) returning the failure instead.
    ///
    /// # Errors
    ///
    /// [`SimError::Violation`], [`SimError::Livelock`].
    pub fn try_run_until_idle(&mut self) -> Result<(), SimError> {
        self.run_until(None)
    }

    /// Runs until idle or until `d` of virtual time has passed.
    ///
    /// # Panics
    ///
    /// As [`run_until_idle`](Self::run_until_idle).
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        if let Err(e) = self.run_until(Some(end)) {
            panic!("{e}");
        }
        if self.now < end {
            self.advance(end - self.now);
        }
    }

    /// Steps until idle, never letting virtual time pass `horizon`.
    fn run_until(&mut self, horizon: Option<Instant>) -> Result<(), SimError> {
        let start = self.steps;
        loop {
            if !self.step_until(horizon).map_err(SimError::Violation)? {
                return self.check_quiet().map_err(SimError::Violation);
            }
            if self.steps - start >= self.max_steps {
                return Err(SimError::Livelock {
                    steps: self.steps - start,
                    seed: self.seed,
                    recent: self.recent(None),
                });
            }
        }
    }

    /// One unit of work: one readiness event (chosen by the seeded RNG among the ready
    /// ones), or waiting closures, or — when nothing is ready — a jump to the next timer
    /// or arrival. Returns false when idle.
    ///
    /// # Panics
    ///
    /// On an invariant violation.
    pub fn step(&mut self) -> bool {
        self.try_step().unwrap_or_else(|v| panic!("{v}"))
    }

    /// [`step`](Self::step) returning a violation instead of panicking.
    ///
    /// # Errors
    ///
    /// The first invariant the step broke.
    pub fn try_step(&mut self) -> Result<bool, Violation> {
        self.step_until(None)
    }

    fn step_until(&mut self, horizon: Option<Instant>) -> Result<bool, Violation> {
        self.steps += 1;
        self.collect_candidates();
        if !self.candidates.is_empty() {
            let pick = self.net.rng.below(self.candidates.len() as u64) as usize;
            let action = self.candidates[pick];
            let now = self.now;
            let r = match action {
                Action::Read(h) => self.reg.on_readable(h, now, &mut self.net),
                Action::Write(h) => self.reg.on_writable(h, now, &mut self.net),
                Action::Peer(link, side) => {
                    self.net.peer_read(link, side);
                    Ok(())
                }
            };
            if let Err(e) = r {
                return Err(self.violation(None, format!("driver call {action:?} failed: {e}")));
            }
        } else if self.reg.pending_soon() > 0 {
            self.reg.dispatch(self.now, &mut self.net);
        } else {
            let dgram = self.net.dgram.next_arrival(self.now);
            let next =
                [self.reg.poll_timeout(), self.net.next_arrival(), dgram, self.next_unstall()]
                    .into_iter()
                    .flatten()
                    .min();
            let Some(next) = next.filter(|&t| horizon.is_none_or(|h| t <= h)) else {
                return Ok(false);
            };
            // Time does not move when a timer is already due: then this pass must fire
            // something, or the timer is stuck and the loop would spin (DESIGN.md §3.3
            // rule 4: no busy loop without work).
            let due_already = next <= self.now;
            let before = self.rec.borrow().log.len();
            self.now = self.now.max(next);
            self.net.now = self.now;
            self.stalled.retain(|_, until| *until > self.now);
            self.reg.handle_timeout(self.now, &mut self.net);
            let fired = self.rec.borrow().log.len() > before;
            if due_already && !fired && self.reg.poll_timeout().is_some_and(|t| t <= self.now) {
                return Err(self.violation(
                    None,
                    "poll_timeout() is due, but handle_timeout(now) delivered nothing".into(),
                ));
            }
        }
        self.serve_requests();
        self.check()?;
        Ok(true)
    }

    fn next_unstall(&self) -> Option<Instant> {
        self.stalled.values().copied().min()
    }

    fn collect_candidates(&mut self) {
        self.candidates.clear();
        for (&h, &(link, side)) in &self.net.ends {
            if !matches!(self.net.links[link].ends[side], End::Transport(_)) {
                continue;
            }
            let Ok(interest) = self.reg.interest(h) else { continue };
            let stalled = self.stalled.get(&h).is_some_and(|&until| until > self.now);
            if interest.read && !stalled && self.net.readable(link, side) {
                self.candidates.push(Action::Read(h));
            }
            if interest.write && self.net.writable(link, side) {
                self.candidates.push(Action::Write(h));
            }
        }
        for &h in self.net.dgram.ends.keys() {
            let Ok(interest) = self.reg.interest(h) else { continue };
            if interest.read && self.net.dgram.readable(self.now, h) {
                self.candidates.push(Action::Read(h));
            }
            if interest.write {
                self.candidates.push(Action::Write(h));
            }
        }
        for (link, l) in self.net.links.iter().enumerate() {
            for side in 0..2 {
                if let End::Peer(p) = &l.ends[side] {
                    let inbound = &l.dirs[1 - side];
                    let reset = inbound.reset || l.dirs[side].reset;
                    let pending = inbound.readable(self.now) || reset;
                    if p.reading && !p.saw_eof && !p.saw_reset && pending {
                        self.candidates.push(Action::Peer(link, side));
                    }
                }
            }
        }
    }

    /// Carries out connection requests against the listeners.
    fn serve_requests(&mut self) {
        while let Some(req) = self.reg.poll_request() {
            let Request::Connect { handle, endpoint, .. } = req;
            let now = self.now;
            match self.listeners.iter_mut().find(|(e, _)| *e == endpoint) {
                Some((_, factory)) => {
                    let server = self.reg.insert_stream(factory(), Extra::default());
                    self.net
                        .add_link(End::Transport(handle.handle()), End::Transport(server.handle()));
                    let _ = self.reg.handle_connected(handle, Extra::default(), now, &mut self.net);
                    self.reg.dispatch(now, &mut self.net);
                }
                None => {
                    let refused = ConnectionError::from(std::io::ErrorKind::ConnectionRefused);
                    let _ = self.reg.handle_connect_failed(handle, refused, now, &mut self.net);
                }
            }
        }
    }

    /// Dispatch, requests and the invariant check after user code.
    fn settle(&mut self) {
        self.reg.dispatch(self.now, &mut self.net);
        self.serve_requests();
        if let Err(v) = self.check() {
            panic!("{v}");
        }
    }

    // ----------------------------------------------------------------------------------
    // Transcripts and invariants
    // ----------------------------------------------------------------------------------

    /// Every callback `h`'s protocols received so far, in order.
    pub fn transcript(&self, h: impl Into<Handle>) -> Vec<Event> {
        let h = h.into();
        self.rec.borrow().log.iter().filter(|(x, _)| *x == h).map(|(_, e)| e.clone()).collect()
    }

    /// The callbacks `h`'s protocols received since the last `take_transcript(h)`.
    pub fn take_transcript(&mut self, h: impl Into<Handle>) -> Vec<Event> {
        let h = h.into();
        let rec = self.rec.borrow();
        let from = self.cursors.get(&h).copied().unwrap_or(0);
        self.cursors.insert(h, rec.log.len());
        rec.log[from..].iter().filter(|(x, _)| *x == h).map(|(_, e)| e.clone()).collect()
    }

    /// Every callback of the loop, in delivery order.
    pub fn log(&self) -> Vec<(Handle, Event)> {
        self.rec.borrow().log.clone()
    }

    /// Errors the loop reported (asyncio's exception handler: failed non-fatal callbacks,
    /// panics), taken.
    pub fn take_loop_errors(&mut self) -> Vec<LoopError> {
        while let Some(e) = self.reg.poll_error() {
            self.errors.push(e);
        }
        std::mem::take(&mut self.errors)
    }

    /// The bytes `h`'s socket accepted in total (what left its queue).
    pub fn bytes_sent(&self, h: impl Into<Handle>) -> u64 {
        self.net
            .ends
            .get(&h.into())
            .map_or(0, |&(link, side)| self.net.links[link].dirs[side].accepted)
    }

    fn recent(&self, h: Option<Handle>) -> Vec<String> {
        let rec = self.rec.borrow();
        let mut out: Vec<String> = rec
            .log
            .iter()
            .rev()
            .filter(|(x, _)| h.is_none_or(|h| h == *x))
            .take(12)
            .map(|(x, e)| format!("{x:?} {e}"))
            .collect();
        out.reverse();
        out
    }

    fn violation(&self, h: Option<Handle>, message: String) -> Violation {
        Violation { step: self.steps, seed: self.seed, handle: h, message, recent: self.recent(h) }
    }

    fn check(&mut self) -> Result<(), Violation> {
        while let Some(e) = self.reg.poll_error() {
            self.errors.push(e);
        }
        let rec = self.rec.clone();
        let rec = rec.borrow();
        let net = &mut self.net;
        let result = self.checker.check(&rec, |h, event| {
            let Some(&(link, side)) = net.ends.get(&h) else { return Ok(()) };
            let verify = &mut net.links[link].dirs[1 - side].verify;
            let (n, bytes) = match event {
                Event::Data(d) => (d.len(), Some(d.as_slice())),
                Event::DataLen(n) => (*n, None),
                _ => return Ok(()),
            };
            if verify.len() < n {
                return Err(format!(
                    "{n} bytes delivered but only {} sent and not yet delivered",
                    verify.len()
                ));
            }
            if let Some(bytes) = bytes
                && !verify.iter().take(n).eq(bytes.iter())
            {
                return Err("delivered bytes differ from the bytes sent".into());
            }
            verify.drain(..n);
            Ok(())
        });
        drop(rec);
        if let Err((h, message)) = result {
            return Err(self.violation(Some(h), message));
        }
        for (&h, &count) in &self.net.closes {
            if count > 1 {
                return Err(self.violation(Some(h), format!("Io::close called {count} times")));
            }
        }
        for (&h, end) in &self.net.dgram.ends {
            if self.checker.is_lost(h) && !end.closed {
                return Err(
                    self.violation(Some(h), "connection_lost before its socket was closed".into())
                );
            }
        }
        for (&h, &(link, side)) in &self.net.ends {
            let lost = self.checker.is_lost(h);
            let gone = matches!(self.net.links[link].ends[side], End::Gone);
            if lost && !gone {
                return Err(
                    self.violation(Some(h), "connection_lost before its socket was closed".into())
                );
            }
            if let (Some(max), Ok(t)) = (self.max_write_buffer, self.reg.transport(h)) {
                let size = t.write_buffer_size();
                if size > max {
                    return Err(self.violation(
                        Some(h),
                        format!("write_buffer_size() {size} exceeds the bound {max}: pause_writing ignored?"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// At idle, polling again without new input must yield no work (DESIGN.md §3.3 rule 4).
    fn check_quiet(&mut self) -> Result<(), Violation> {
        let before = self.rec.borrow().log.len();
        self.reg.dispatch(self.now, &mut self.net);
        self.reg.handle_timeout(self.now, &mut self.net);
        let after = self.rec.borrow().log.len();
        if after != before {
            return Err(self
                .violation(None, "work without new input: idle loop delivered callbacks".into()));
        }
        self.check()
    }
}

impl fmt::Debug for Sim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sim")
            .field("seed", &self.seed)
            .field("steps", &self.steps)
            .field("transports", &self.reg.len())
            .finish_non_exhaustive()
    }
}
