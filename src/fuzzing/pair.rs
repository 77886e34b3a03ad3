//! `pair` and the user-facing [`drive_peer`]: protocols over the in-memory harness's
//! faulty links ([`Sim`]), with the faults and the schedule decoded from the input; the
//! harness's invariant checker runs after every step.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use super::decode::{Input, OpSpec, millis};
use crate::testing::{Event, PeerId, Sim, SimConfig};
use crate::{CallbackResult, Ctx, Protocol, StreamHandle};

/// The opcode table of `pair` (format version 1), after the 8-byte [`SimConfig`] header
/// (see [`sim_config`]). `s` is a side (bit 0: the first or the second transport).
pub const PAIR_OPS: &[OpSpec] = &[
    OpSpec { code: 0x00, name: "step", since: 1 },
    OpSpec { code: 0x01, name: "run_until_idle", since: 1 },
    OpSpec { code: 0x40, name: "steps", since: 1 },
    OpSpec { code: 0x41, name: "advance", since: 1 },
    OpSpec { code: 0x42, name: "abort", since: 1 },
    OpSpec { code: 0x43, name: "close", since: 1 },
    OpSpec { code: 0x44, name: "reset", since: 1 },
    OpSpec { code: 0x45, name: "pause_reading", since: 1 },
    OpSpec { code: 0x46, name: "resume_reading", since: 1 },
    OpSpec { code: 0x47, name: "write_eof", since: 1 },
    OpSpec { code: 0x80, name: "stall", since: 1 },
    OpSpec { code: 0x81, name: "set_write_buffer_limits", since: 1 },
];

/// The opcode table of [`drive_peer`] (format version 1), after the same 8-byte
/// [`SimConfig`] header.
pub const PEER_OPS: &[OpSpec] = &[
    OpSpec { code: 0x00, name: "peer_eof", since: 1 },
    OpSpec { code: 0x01, name: "peer_pause_reading", since: 1 },
    OpSpec { code: 0x02, name: "peer_resume_reading", since: 1 },
    OpSpec { code: 0x03, name: "reset", since: 1 },
    OpSpec { code: 0x04, name: "run_until_idle", since: 1 },
    OpSpec { code: 0x40, name: "steps", since: 1 },
    OpSpec { code: 0x41, name: "advance", since: 1 },
    OpSpec { code: 0x42, name: "stall", since: 1 },
    OpSpec { code: 0xC0, name: "peer_send", since: 1 },
];

/// Steps `run_until_idle` allows: a faithful protocol over these links goes idle long
/// before; more is a livelock.
const MAX_STEPS: u64 = 1_000_000;

/// Decodes the 8-byte header both `pair` and [`drive_peer`] start with: seed (2 bytes),
/// then one byte each for the largest send (`b * 64` bytes; 0: whole sends), the largest
/// read (`b * 16` bytes; 0: whole reads), the socket buffer per direction (`64 + b * 64` bytes), the latency (ms, see
/// the module docs), the percentage of sends refused (at most 90, so a run always makes
/// progress) and one spare byte.
pub fn sim_config(input: &mut Input<'_>) -> SimConfig {
    let seed = u64::from(input.u16());
    let (send, read, capacity) = (input.byte(), input.byte(), input.byte());
    let (latency, refuse, _spare) = (input.byte(), input.byte(), input.byte());
    let mut config = SimConfig::new(seed)
        .capacity(64 + usize::from(capacity) * 64)
        .latency(Duration::from_millis(millis(latency)))
        .refuse_percent(refuse % 91)
        .keep_data(false)
        .max_steps(MAX_STEPS);
    if send != 0 {
        config = config.max_send(usize::from(send) * 64);
    }
    if read != 0 {
        config = config.max_read(usize::from(read) * 16);
    }
    config
}

/// Writes `total` pattern bytes in chunks, honouring `pause_writing`, then half-closes;
/// checks that what it receives is the other side's pattern, in order.
pub(super) struct Peer {
    total: usize,
    /// What the other side sends: where half-close is unavailable (TLS 1.2) the peer
    /// closes once it wrote everything and received this much.
    expect: usize,
    chunk: usize,
    written: Rc<Cell<usize>>,
    received: Rc<Cell<u64>>,
    paused: bool,
    done: bool,
    eof_seen: bool,
}

impl Peer {
    pub(super) fn new(
        (total, expect): (usize, usize),
        chunk: usize,
        written: Rc<Cell<usize>>,
        received: Rc<Cell<u64>>,
    ) -> Self {
        let (paused, done, eof_seen) = (false, false, false);
        Peer { total, expect, chunk, written, received, paused, done, eof_seen }
    }

    /// Both directions are done: our writing, and the other side's (its EOF, or — without
    /// half-close — all it sends).
    fn finished(&self, ctx: &Ctx<'_>) -> Result<bool, crate::HandleError> {
        let h = ctx.stream();
        let all_in = self.received.get() >= self.expect as u64;
        Ok(self.done && (self.eof_seen || (!ctx.can_write_eof(h)? && all_in)))
    }

    fn pump(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        let h = ctx.stream();
        while !self.paused && self.written.get() < self.total {
            let at = self.written.get();
            let n = self.chunk.min(self.total - at);
            let data: Vec<u8> = (at..at + n).map(|i| (i % 251) as u8).collect();
            if ctx.write(h, data).is_err() {
                // After an early write_eof, closing or closed (a fault): stop writing.
                self.done = true;
                break;
            }
            self.written.set(at + n);
            self.paused = ctx.is_writing_paused(h)?;
        }
        if self.written.get() == self.total && !self.done {
            self.done = true;
            if ctx.can_write_eof(h)? {
                ctx.write_eof(h)?;
            }
        }
        if self.finished(ctx)? {
            ctx.close(h)?;
        }
        Ok(())
    }
}

impl Protocol for Peer {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.pump(ctx)
    }
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        let r = &self.received;
        for &b in data {
            assert_eq!(b, (r.get() % 251) as u8, "pair: byte {} received out of order", r.get());
            r.set(r.get() + 1);
        }
        if self.finished(ctx)? {
            ctx.close(ctx.stream())?;
        }
        Ok(())
    }
    fn eof_received(&mut self, _: &mut Ctx<'_>) -> CallbackResult<bool> {
        // Keep the other direction open; close once our own writing is done too.
        self.eof_seen = true;
        Ok(!self.done)
    }
    fn pause_writing(&mut self, _: &mut Ctx<'_>) -> CallbackResult {
        self.paused = true;
        Ok(())
    }
    fn resume_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.paused = false;
        self.pump(ctx)
    }
}

pub(super) fn run_checked(sim: &mut Sim, what: &str) {
    if let Err(e) = sim.try_run_until_idle() {
        panic!("{what}: {e}");
    }
}

pub(super) fn steps(sim: &mut Sim, n: u8) {
    for _ in 0..n {
        match sim.try_step() {
            Ok(true) => {}
            Ok(false) => return,
            Err(v) => panic!("{v}"),
        }
    }
}

/// Fuzz target: two transports joined by a faulty link, each writing a pattern stream
/// (honouring `pause_writing`) and checking the other's; the input sets the faults and a
/// schedule of steps, time jumps, stalls, read pauses, limit changes and faults (abort,
/// close, reset, early `write_eof`; opcode table [`PAIR_OPS`]). The harness checks its
/// invariants after every step; at the end, without a fault, every byte written was
/// delivered, and each side received exactly one `connection_lost`. Panics otherwise.
pub fn pair(data: &[u8]) {
    let Some(mut input) = Input::new(data) else { return };
    let config = sim_config(&mut input);
    let (total_a, total_b) = (transfer(input.u16()), transfer(input.u16()));
    let chunk = 16 + usize::from(input.byte()) * 64;
    let mut sim = Sim::with_config(super::base_instant(), config);
    let sides = [
        (total_a, Rc::new(Cell::new(0)), Rc::new(Cell::new(0u64))),
        (total_b, Rc::default(), Rc::default()),
    ];
    let peer = |i: usize| {
        Peer::new((sides[i].0, sides[1 - i].0), chunk, sides[i].1.clone(), sides[i].2.clone())
    };
    let (a, b) = sim.pair(peer(0), peer(1));
    let side = |s: u8| if s & 1 == 0 { a } else { b };
    let mut faulted = false;
    let mut paused_reading = [false; 2];
    while let Some(op) = input.next_op(PAIR_OPS) {
        let s = op.byte(0);
        match op.code {
            0x00 => steps(&mut sim, 1),
            0x01 => run_checked(&mut sim, "pair"),
            0x40 => steps(&mut sim, s),
            0x41 => sim.advance(Duration::from_millis(millis(s))),
            0x42 => {
                faulted = true;
                let _ = sim.enter(|ctx| ctx.abort(side(s)));
            }
            0x43 => {
                faulted = true;
                let _ = sim.enter(|ctx| ctx.close(side(s)));
            }
            0x44 => {
                faulted = true;
                sim.reset(side(s));
            }
            0x45 | 0x46 => {
                let pause = op.code == 0x45;
                paused_reading[usize::from(s & 1)] = pause;
                let _ = sim.enter(|ctx| {
                    if pause { ctx.pause_reading(side(s)) } else { ctx.resume_reading(side(s)) }
                });
            }
            0x47 => {
                faulted = true;
                let _ = sim.enter(|ctx| ctx.write_eof(side(s)));
            }
            0x80 => sim.stall(side(s), Duration::from_millis(millis(op.byte(1)))),
            0x81 => {
                let high = usize::from(op.byte(1)) * 64;
                let _ = sim.enter(|ctx| ctx.set_write_buffer_limits(side(s), Some(high), None));
            }
            _ => {}
        }
    }
    // Undo what would leave bytes undelivered without a fault: read pauses and stalls.
    for (i, paused) in paused_reading.into_iter().enumerate() {
        if paused {
            let h = if i == 0 { a } else { b };
            let _ = sim.enter(|ctx| ctx.resume_reading(h));
        }
    }
    sim.advance(Duration::from_secs(3600));
    run_checked(&mut sim, "pair");
    if faulted {
        // Both sides closed (each flushing to a peer that stopped reading) wait forever, in
        // asyncio too: the application gives up with abort().
        for h in [a, b] {
            if sim.registry().transport(h.handle()).is_ok() {
                let _ = sim.enter(|ctx| ctx.abort(h));
            }
        }
        run_checked(&mut sim, "pair");
    }
    check_pair(&sim, [a, b], &sides, faulted);
}

/// A transfer size: mostly small, a quarter of them large enough to cross the default
/// 64 KiB high water (60..70 KB: every step moves at most a read's or a send's worth, so
/// larger transfers only cost time; `set_write_buffer_limits` crosses small marks).
pub(super) fn transfer(x: u16) -> usize {
    let low = usize::from(x & 0x3fff);
    match x >> 14 {
        0 => low & 63,
        1 => low % 3_000,
        2 => low % 20_000,
        _ => 60_000 + low % 10_000,
    }
}

/// One side of a pair: its total, bytes written, bytes received.
pub(super) type Side = (usize, Rc<Cell<usize>>, Rc<Cell<u64>>);

/// What arrived is a prefix of what was written (checked in order as it arrived); without
/// a fault, everything.
pub(super) fn check_delivery(sides: &[Side; 2], faulted: bool, what: &str) {
    for i in 0..2 {
        let (total, written, _) = &sides[i];
        let received = sides[1 - i].2.get();
        if received > written.get() as u64 {
            panic!(
                "{what}: side {} received {received} bytes, only {} written",
                1 - i,
                written.get()
            );
        }
        if !faulted && (written.get() != *total || received != *total as u64) {
            panic!(
                "{what}: without a fault, side {i} wrote {} of {total} bytes and side {} received {received}",
                written.get(),
                1 - i
            );
        }
    }
}

fn check_pair(sim: &Sim, hs: [StreamHandle; 2], sides: &[Side; 2], faulted: bool) {
    check_delivery(sides, faulted, "pair");
    for (i, h) in hs.into_iter().enumerate() {
        let lost = sim.transcript(h).iter().filter(|e| matches!(e, Event::Lost(_))).count();
        if lost != 1 {
            panic!("pair: side {i} received connection_lost {lost} times");
        }
    }
}

/// The outcome of [`drive_peer`]: the simulation after the script (use its transcript,
/// [`Sim::peer_received`], the registry, …), and what the scripted peer did.
#[derive(Debug)]
pub struct PeerRun {
    /// The simulation, idle.
    pub sim: Sim,
    /// The protocol's transport.
    pub handle: StreamHandle,
    /// The scripted peer.
    pub peer: PeerId,
    /// Every byte the peer sent, in order.
    pub sent: Vec<u8>,
    /// The peer sent EOF.
    pub eof: bool,
    /// The connection was reset.
    pub reset: bool,
}

/// Fuzzes **your** protocol: runs `protocol` over a faulty in-memory link against a peer
/// scripted by `data` — bytes it sends (chosen by the fuzzer, so they reach your parser),
/// EOF, read pauses, resets, stalls and time jumps (opcode table [`PEER_OPS`], after the
/// [`sim_config`] header) — with the harness's invariants checked after every step, then
/// runs to idle and returns the run for your own assertions. `None` for an input of an
/// unknown format version.
///
/// # Panics
///
/// On an invariant violation or a livelock (that is what the fuzzer reports), and on
/// whatever your protocol panics on outside a callback.
pub fn drive_peer<P: Protocol + 'static>(data: &[u8], protocol: P) -> Option<PeerRun> {
    let mut input = Input::new(data)?;
    let config = sim_config(&mut input);
    let mut sim = Sim::with_config(super::base_instant(), config);
    let (handle, peer) = sim.open(protocol);
    let (mut sent, mut eof, mut reset) = (Vec::new(), false, false);
    while let Some(op) = input.next_op(PEER_OPS) {
        match op.code {
            0x00 if !eof => {
                eof = true;
                sim.peer_eof(peer);
            }
            0x01 => sim.peer_pause_reading(peer),
            0x02 => sim.peer_resume_reading(peer),
            0x03 => {
                reset = true;
                sim.reset(handle);
            }
            0x04 => run_checked(&mut sim, "drive_peer"),
            0x40 => steps(&mut sim, op.byte(0)),
            0x41 => sim.advance(Duration::from_millis(millis(op.byte(0)))),
            0x42 => sim.stall(handle, Duration::from_millis(millis(op.byte(0)))),
            0xC0 if !eof => {
                sim.peer_send(peer, op.operand);
                sent.extend_from_slice(op.operand);
            }
            _ => {}
        }
    }
    sim.peer_resume_reading(peer);
    run_checked(&mut sim, "drive_peer");
    Some(PeerRun { sim, handle, peer, sent, eof, reset })
}
