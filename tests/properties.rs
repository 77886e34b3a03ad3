//! Property tests (quickcheck, with shrinking) over random sequences of user calls, driver
//! results, link faults, limit changes, protocol swaps and timer advances.
//!
//! The seed is fixed: `AIOPORT_SEED` (default 20261125) and the number of cases
//! `AIOPORT_CASES` (default: a CI-sized run) come from the environment, and a failure
//! prints the seed, so `AIOPORT_SEED=... cargo test --test properties --features testing`
//! replays it. A long run is `AIOPORT_CASES=100000`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io::{self, ErrorKind, IoSlice};
use std::rc::Rc;
use std::time::{Duration, Instant};

use aioport::fuzzing::{StreamStep, check_against_model};
use aioport::testing::model::ModelOp;
use aioport::testing::{Event, Rng, Sim, SimConfig};
use aioport::{CallbackResult, Ctx, Extra, Handle, Io, Protocol, Registry};
use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};

fn seed() -> u64 {
    std::env::var("AIOPORT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20261125)
}

fn cases(default: u64) -> u64 {
    std::env::var("AIOPORT_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// Runs `prop` on `cases` inputs from a fixed seed; on failure prints the seed and the
/// shrunk input (quickcheck itself does not print the seed).
fn check(name: &str, default_cases: u64, prop: impl quickcheck::Testable) {
    let seed = seed();
    let n = cases(default_cases);
    let result = QuickCheck::new()
        .rng(Gen::from_size_and_seed(100, seed))
        .tests(n)
        .max_tests(n * 10)
        .quicktest(prop);
    match result {
        Ok(ran) => eprintln!("{name}: {ran} cases passed (AIOPORT_SEED={seed})"),
        Err(failure) => panic!(
            "{name} failed with AIOPORT_SEED={seed} (rerun with that variable to replay):\n{failure:?}"
        ),
    }
}

fn t0() -> Instant {
    Instant::now()
}

// ---------------------------------------------------------------------------------------
// Property 1: the implementation equals the reference model
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Op(ModelOp);

/// Sizes skewed small, so that sizes land exactly on small limits (the `> high` and
/// `<= low` boundaries), with some large enough to cross the default 64 KiB.
fn size(g: &mut Gen) -> usize {
    match u8::arbitrary(g) % 8 {
        0..=3 => usize::arbitrary(g) % 8,
        4 | 5 => usize::arbitrary(g) % 300,
        6 => usize::arbitrary(g) % 5_000,
        _ => 60_000 + usize::arbitrary(g) % 300_000,
    }
}

fn limit(g: &mut Gen) -> Option<usize> {
    match u8::arbitrary(g) % 4 {
        0 => None,
        1 | 2 => Some(usize::arbitrary(g) % 16),
        _ => Some(usize::arbitrary(g) % 100_000),
    }
}

impl Arbitrary for Op {
    fn arbitrary(g: &mut Gen) -> Self {
        // Weighted towards the writes, grants and flushes that cross the limits both ways.
        Op(match u8::arbitrary(g) % 24 {
            0..=2 => ModelOp::Write(size(g)),
            3..=5 => ModelOp::Grant(size(g)),
            6..=8 => ModelOp::Writable,
            9 | 10 => ModelOp::SetLimits(limit(g), limit(g)),
            11 => ModelOp::PeerSend(size(g)),
            12 | 13 => ModelOp::Readable,
            14 => ModelOp::WriteEof,
            15 => ModelOp::Close,
            16 => ModelOp::Abort,
            17 => ModelOp::PauseReading,
            18 => ModelOp::ResumeReading,
            19 => ModelOp::SwapProtocol,
            20 => ModelOp::PeerEof,
            21 if u8::arbitrary(g) % 4 == 0 => ModelOp::PeerReset,
            21 | 22 => ModelOp::KeepOpen(bool::arbitrary(g)),
            _ => ModelOp::Write(usize::arbitrary(g) % 4),
        })
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        let smaller = |n: usize| -> Box<dyn Iterator<Item = usize>> { n.shrink() };
        match self.0.clone() {
            ModelOp::Write(n) => Box::new(smaller(n).map(|n| Op(ModelOp::Write(n)))),
            ModelOp::Grant(n) => Box::new(smaller(n).map(|n| Op(ModelOp::Grant(n)))),
            ModelOp::PeerSend(n) => Box::new(smaller(n).map(|n| Op(ModelOp::PeerSend(n)))),
            _ => quickcheck::empty_shrinker(),
        }
    }
}

/// The runner lives in `aioport::fuzzing` (the `stream_ops` fuzz target runs it too), so
/// the property and the fuzzer check one and the same thing.
fn implementation_equals_model(ops: Vec<Op>) -> TestResult {
    let steps: Vec<StreamStep> = ops.into_iter().map(|Op(op)| op.into()).collect();
    match check_against_model(&steps, false) {
        Ok(()) => TestResult::passed(),
        Err(e) => TestResult::error(e),
    }
}

#[test]
fn implementation_equals_the_reference_model() {
    check(
        "implementation == model",
        3000,
        implementation_equals_model as fn(Vec<Op>) -> TestResult,
    );
}

// ---------------------------------------------------------------------------------------
// Property 2: bytes delivered == bytes written, whatever the chunking and faults; a
// prefix after abort or reset. Exactly one connection_lost, last; pause/resume alternate;
// no work without new input — the Sim's invariant checker asserts those after every step.
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Transfer {
    seed: u64,
    total: usize,
    chunk: usize,
    max_send: Option<usize>,
    max_read: Option<usize>,
    capacity: usize,
    latency_ms: u64,
    refuse: u8,
    /// Abort the writer, or reset the link, after this many steps.
    fault: Option<(bool, u32)>,
}

impl Arbitrary for Transfer {
    fn arbitrary(g: &mut Gen) -> Self {
        let opt =
            |g: &mut Gen, max: usize| bool::arbitrary(g).then(|| 1 + usize::arbitrary(g) % max);
        Transfer {
            seed: u64::arbitrary(g),
            total: usize::arbitrary(g) % 100_000,
            chunk: 1 + usize::arbitrary(g) % 20_000,
            max_send: opt(g, 5000).map(|m| m.max(64)),
            max_read: opt(g, 5000).map(|m| m.max(64)),
            capacity: 1 + usize::arbitrary(g) % 100_000,
            latency_ms: u64::arbitrary(g) % 20,
            refuse: u8::arbitrary(g) % 50,
            fault: (u8::arbitrary(g) % 3 == 0)
                .then(|| (bool::arbitrary(g), u32::arbitrary(g) % 200)),
        }
    }
    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        let base = self.clone();
        Box::new(self.total.shrink().map(move |total| Transfer { total, ..base.clone() }))
    }
}

/// Writes `total` pattern bytes in `chunk`s, honouring pause_writing, then half-closes.
struct Source {
    total: usize,
    chunk: usize,
    written: Rc<Cell<usize>>,
    paused: bool,
}

impl Source {
    fn pump(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        while !self.paused && self.written.get() < self.total {
            let at = self.written.get();
            let n = self.chunk.min(self.total - at);
            let data: Vec<u8> = (at..at + n).map(|i| (i % 251) as u8).collect();
            ctx.write(ctx.stream(), data)?;
            self.written.set(at + n);
            self.paused = ctx.is_writing_paused(ctx.stream())?;
        }
        if self.written.get() == self.total {
            ctx.write_eof(ctx.stream())?;
        }
        Ok(())
    }
}

impl Protocol for Source {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.pump(ctx)
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

struct Sink(Rc<RefCell<Vec<u8>>>);

impl Protocol for Sink {
    fn data_received(&mut self, _: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        self.0.borrow_mut().extend_from_slice(data);
        Ok(())
    }
}

fn bytes_delivered_equal_bytes_written(t: Transfer) -> TestResult {
    let mut config = SimConfig::new(t.seed)
        .capacity(t.capacity)
        .latency(Duration::from_millis(t.latency_ms))
        .refuse_percent(t.refuse)
        .keep_data(false);
    if let Some(m) = t.max_send {
        config = config.max_send(m);
    }
    if let Some(m) = t.max_read {
        config = config.max_read(m);
    }
    let got = Rc::new(RefCell::new(Vec::new()));
    let written = Rc::new(Cell::new(0));
    let mut sim = Sim::with_config(t0(), config);
    let src = Source { total: t.total, chunk: t.chunk, written: written.clone(), paused: false };
    let (a, b) = sim.pair(src, Sink(got.clone()));
    if let Some((abort, after)) = t.fault {
        for _ in 0..after {
            if !sim.step() {
                break;
            }
        }
        if abort {
            let _ = sim.enter(|ctx| ctx.abort(a));
        } else {
            sim.reset(b);
        }
    }
    if let Err(e) = sim.try_run_until_idle() {
        return TestResult::error(format!("{e}"));
    }
    let got = got.borrow();
    let expected: Vec<u8> = (0..written.get()).map(|i| (i % 251) as u8).collect();
    if t.fault.is_none() && (got.len() != t.total || *got != expected) {
        return TestResult::error(format!("delivered {} of {} bytes", got.len(), t.total));
    }
    if !expected.starts_with(&got) {
        return TestResult::error(
            "delivered bytes are not a prefix of the written ones".to_string(),
        );
    }
    for h in [a.handle(), b.handle()] {
        let lost = sim.transcript(h).iter().filter(|e| matches!(e, Event::Lost(_))).count();
        if lost != 1 {
            return TestResult::error(format!("{h:?}: {lost} connection_lost"));
        }
    }
    TestResult::passed()
}

#[test]
fn bytes_delivered_equal_bytes_written_whatever_the_chunking() {
    check(
        "bytes delivered == bytes written",
        60,
        bytes_delivered_equal_bytes_written as fn(Transfer) -> TestResult,
    );
}

// ---------------------------------------------------------------------------------------
// Property 3: poll_transmit offers the same bytes until handle_sent
// ---------------------------------------------------------------------------------------

/// A completion-based driver: never sends synchronously.
struct Completion;

impl Io for Completion {
    fn try_send(&mut self, _: Handle, _: &[IoSlice<'_>]) -> io::Result<usize> {
        Err(ErrorKind::WouldBlock.into())
    }
    fn try_recv(&mut self, _: Handle, _: &mut [u8]) -> io::Result<usize> {
        Err(ErrorKind::WouldBlock.into())
    }
    fn shutdown_write(&mut self, _: Handle) -> io::Result<()> {
        Ok(())
    }
    fn close(&mut self, _: Handle) {}
}

struct Quiet;
impl Protocol for Quiet {}

fn poll_transmit_is_idempotent(steps: Vec<(u16, u16, u8)>) -> TestResult {
    let now = t0();
    let mut reg = Registry::new(now);
    let h = reg.insert_stream(Box::new(Quiet), Extra::default());
    reg.dispatch(now, &mut Completion);
    let mut expected: VecDeque<u8> = VecDeque::new();
    let mut next = 0u64;
    for (write, sent, slots) in steps {
        let write = write % 4096;
        let data: Vec<u8> = (0..write).map(|i| ((next + u64::from(i)) % 251) as u8).collect();
        next += u64::from(write);
        reg.enter(now, &mut Completion, |ctx| ctx.write_slice(h, &data)).unwrap();
        expected.extend(&data);
        let offer = |reg: &Registry| {
            let mut slices = vec![IoSlice::new(&[]); usize::from(slots % 8) + 1];
            let n = reg.poll_transmit(h.handle(), &mut slices).unwrap();
            slices[..n].iter().flat_map(|s| s.iter().copied()).collect::<Vec<u8>>()
        };
        let first = offer(&reg);
        if offer(&reg) != first {
            return TestResult::error("poll_transmit offered different bytes twice");
        }
        if !expected.iter().copied().take(first.len()).eq(first.iter().copied()) {
            return TestResult::error("poll_transmit offered bytes out of order");
        }
        let n = usize::from(sent).min(first.len());
        reg.handle_sent(h.handle(), n, now, &mut Completion).unwrap();
        expected.drain(..n);
        let size = reg.transport(h.handle()).unwrap().write_buffer_size();
        if size != expected.len() {
            return TestResult::error(format!("size {size} != {}", expected.len()));
        }
    }
    TestResult::passed()
}

#[test]
fn poll_transmit_offers_the_same_bytes_until_handle_sent() {
    check(
        "poll_transmit idempotent",
        300,
        poll_transmit_is_idempotent as fn(Vec<(u16, u16, u8)>) -> TestResult,
    );
}

// ---------------------------------------------------------------------------------------
// Property 4: no timer fires early (and every timer fires)
// ---------------------------------------------------------------------------------------

/// Re-arms its timer from a list of delays, checking it never fires before its deadline.
struct Timers {
    delays: Vec<u32>,
    deadline: Option<Instant>,
    fired: Rc<Cell<usize>>,
}

impl Protocol for Timers {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.arm(ctx.now());
        Ok(())
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }
    fn handle_timeout(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        let deadline = self.deadline.expect("a timer fired with no deadline");
        assert!(ctx.now() >= deadline, "fired {:?} early", deadline - ctx.now());
        self.fired.set(self.fired.get() + 1);
        self.arm(ctx.now());
        Ok(())
    }
}

impl Timers {
    fn arm(&mut self, now: Instant) {
        self.deadline =
            self.delays.pop().map(|ms| now + Duration::from_millis(u64::from(ms % 10_000)));
    }
}

fn timers_never_fire_early(timers: Vec<Vec<u32>>, seed: u64) -> TestResult {
    let mut sim = Sim::new(t0(), seed);
    let fired = Rc::new(Cell::new(0));
    let mut total = 0;
    for delays in timers.into_iter().take(8) {
        total += delays.len();
        let p = Timers { delays, deadline: None, fired: fired.clone() };
        sim.open(p);
    }
    // Advance in random virtual-time jumps, then to the end.
    let mut rng = Rng::new(seed);
    for _ in 0..20 {
        sim.advance(Duration::from_millis(rng.below(3000)));
    }
    if let Err(e) = sim.try_run_until_idle() {
        return TestResult::error(format!("{e}"));
    }
    if fired.get() != total {
        return TestResult::error(format!("{} of {total} timers fired", fired.get()));
    }
    TestResult::passed()
}

#[test]
fn no_timer_fires_early() {
    check(
        "no timer fires early",
        200,
        timers_never_fire_early as fn(Vec<Vec<u32>>, u64) -> TestResult,
    );
}
