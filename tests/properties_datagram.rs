//! Datagram properties over the in-memory harness: every datagram `sendto` accepted is
//! transmitted whole or dropped by `abort` — never silently lost, never duplicated — and
//! pause/resume alternate (the harness checker asserts that after every step).
//!
//! The second property runs the datagram endpoint against the reference model
//! (`aioport::testing::model::DatagramModel`) with the runner of the `datagram_ops` fuzz
//! target.
//!
//! Seed and case count come from `AIOPORT_SEED` / `AIOPORT_CASES`, as in `properties.rs`.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Instant;

use aioport::fuzzing::check_datagram_against_model;
use aioport::testing::model::{AddrArg, DatagramOp};
use aioport::testing::{Sim, SimConfig};
use aioport::{CallbackResult, Ctx, DatagramAddr, DatagramProtocol};
use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};

#[derive(Clone, Debug)]
struct Case {
    seed: u64,
    sizes: Vec<u16>,
    refuse: u8,
    high: Option<u16>,
    abort_after: Option<u8>,
}

impl Arbitrary for Case {
    fn arbitrary(g: &mut Gen) -> Self {
        Case {
            seed: u64::arbitrary(g),
            sizes: Vec::<u16>::arbitrary(g).into_iter().map(|s| s % 1500).collect(),
            refuse: u8::arbitrary(g) % 90,
            high: bool::arbitrary(g).then(|| u16::arbitrary(g) % 4000),
            abort_after: bool::arbitrary(g).then(|| u8::arbitrary(g) % 50),
        }
    }
    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        let base = self.clone();
        Box::new(self.sizes.shrink().map(move |sizes| Case { sizes, ..base.clone() }))
    }
}

/// Sends its datagrams (each tagged with its index) as fast as flow control allows and
/// records which `sendto` accepted.
struct Sender {
    sizes: Vec<u16>,
    next: usize,
    high: Option<u16>,
    accepted: Rc<RefCell<Vec<usize>>>,
    paused: bool,
}

impl Sender {
    fn pump(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        let h = ctx.datagram();
        while !self.paused && self.next < self.sizes.len() {
            let i = self.next;
            let mut data = (i as u32).to_be_bytes().to_vec();
            data.resize(4 + usize::from(self.sizes[i]), (i % 251) as u8);
            self.next += 1;
            if ctx.sendto(h, &data, None).is_ok() {
                self.accepted.borrow_mut().push(i);
            }
            self.paused = ctx.is_writing_paused(h)?;
        }
        Ok(())
    }
}

impl DatagramProtocol for Sender {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        if let Some(high) = self.high {
            ctx.set_write_buffer_limits(ctx.datagram(), Some(usize::from(high)), None)?;
        }
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

struct Receiver(Rc<RefCell<Vec<Vec<u8>>>>);

impl DatagramProtocol for Receiver {
    fn datagram_received(
        &mut self,
        _: &mut Ctx<'_>,
        d: &[u8],
        _: Option<&DatagramAddr>,
    ) -> CallbackResult {
        self.0.borrow_mut().push(d.to_vec());
        Ok(())
    }
}

fn every_datagram_is_accounted_for(case: Case) -> TestResult {
    let config = SimConfig::new(case.seed).refuse_percent(case.refuse);
    let mut sim = Sim::with_config(Instant::now(), config);
    let accepted = Rc::new(RefCell::new(Vec::new()));
    let received = Rc::new(RefCell::new(Vec::new()));
    let sender = Sender {
        sizes: case.sizes.clone(),
        next: 0,
        high: case.high,
        accepted: accepted.clone(),
        paused: false,
    };
    let (a, _b) = sim.datagram_pair(sender, Receiver(received.clone()));
    let mut dropped = 0;
    if let Some(after) = case.abort_after {
        for _ in 0..after {
            if !sim.step() {
                break;
            }
        }
        if let Ok(t) = sim.registry().datagram(a.handle()) {
            dropped = t.queued_datagrams();
        }
        let _ = sim.enter(|ctx| ctx.abort(a));
    }
    if let Err(e) = sim.try_run_until_idle() {
        return TestResult::error(format!("{e}"));
    }
    let accepted = accepted.borrow();
    let sent = sim.datagrams_sent(a) as usize;
    if sent + dropped != accepted.len() {
        return TestResult::error(format!(
            "sendto accepted {} datagrams; the socket took {sent} and abort dropped {dropped}",
            accepted.len()
        ));
    }
    // Transmitted whole, in order, exactly once (no network faults here).
    let received = received.borrow();
    let ids: Vec<usize> =
        received.iter().map(|d| u32::from_be_bytes(d[..4].try_into().unwrap()) as usize).collect();
    if ids != accepted[..sent] {
        return TestResult::error(format!("received {ids:?}, transmitted {:?}", &accepted[..sent]));
    }
    for (d, &i) in received.iter().zip(ids.iter()) {
        if d.len() != 4 + usize::from(case.sizes[i]) || d[4..].iter().any(|&b| b != (i % 251) as u8)
        {
            return TestResult::error(format!("datagram {i} not transmitted whole"));
        }
    }
    TestResult::passed()
}

#[test]
fn every_datagram_sent_is_transmitted_whole_or_dropped_by_abort() {
    let seed = std::env::var("AIOPORT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20261125);
    let n = std::env::var("AIOPORT_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(300);
    let r = QuickCheck::new()
        .rng(Gen::from_size_and_seed(100, seed))
        .tests(n)
        .quicktest(every_datagram_is_accounted_for as fn(Case) -> TestResult);
    if let Err(f) = r {
        panic!("failed with AIOPORT_SEED={seed}:\n{f:?}");
    }
}

/// A random run of the datagram reference model's operations.
#[derive(Clone, Debug)]
struct ModelCase {
    connected: bool,
    ops: Vec<DatagramOp>,
}

fn arbitrary_op(g: &mut Gen) -> DatagramOp {
    let size = |g: &mut Gen| match u8::arbitrary(g) % 4 {
        0 => 0,
        1 => usize::from(u8::arbitrary(g) % 16),
        2 => usize::from(u16::arbitrary(g) % 2_000),
        _ => usize::from(u16::arbitrary(g)),
    };
    let limit = |g: &mut Gen| match u8::arbitrary(g) % 4 {
        0 => None,
        1 => Some(usize::from(u8::arbitrary(g) % 64)),
        _ => Some(usize::from(u16::arbitrary(g) % 20_000)),
    };
    let addr = |g: &mut Gen| *g.choose(&[AddrArg::None, AddrArg::Remote, AddrArg::Other]).unwrap();
    match u8::arbitrary(g) % 20 {
        0..=4 => DatagramOp::SendTo(size(g), addr(g)),
        5 => DatagramOp::Close,
        6 => DatagramOp::Abort,
        7 => DatagramOp::PauseReading,
        8 => DatagramOp::ResumeReading,
        9 => DatagramOp::SetLimits(limit(g), limit(g)),
        10 => DatagramOp::SetHardLimit(limit(g)),
        11 => DatagramOp::SwapProtocol,
        12 => DatagramOp::Grant(usize::from(u8::arbitrary(g) % 8)),
        13 => DatagramOp::FailNextSend,
        14 => DatagramOp::Writable,
        15 => DatagramOp::PeerSend(size(g)),
        16 => *g.choose(&[DatagramOp::PeerError, DatagramOp::PeerOversized]).unwrap(),
        17 => DatagramOp::Readable,
        18 => DatagramOp::Received(size(g)),
        _ => DatagramOp::DriverError,
    }
}

impl Arbitrary for ModelCase {
    fn arbitrary(g: &mut Gen) -> Self {
        let n = usize::arbitrary(g) % 80;
        // Close and abort end a run early; keep them rarer than the rest.
        let mut ops = Vec::with_capacity(n);
        for _ in 0..n {
            let op = arbitrary_op(g);
            if !matches!(op, DatagramOp::Close | DatagramOp::Abort) || u8::arbitrary(g) % 4 == 0 {
                ops.push(op);
            }
        }
        ModelCase { connected: bool::arbitrary(g), ops }
    }
    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        // Halves first, then one operation fewer at each position.
        let (connected, ops) = (self.connected, self.ops.clone());
        let n = ops.len();
        let halves = [ops[..n / 2].to_vec(), ops[n / 2..].to_vec()];
        let singles = (0..n).map(move |i| [&ops[..i], &ops[i + 1..]].concat());
        let smaller = halves.into_iter().filter(move |h| n > 1 && h.len() < n).chain(singles);
        Box::new(smaller.map(move |ops| ModelCase { connected, ops }))
    }
}

fn implementation_matches_model(case: ModelCase) -> TestResult {
    match check_datagram_against_model(case.connected, &case.ops) {
        Ok(()) => TestResult::passed(),
        Err(e) => TestResult::error(e),
    }
}

/// The datagram endpoint against the reference model: callbacks, `sendto` results, state,
/// what the socket took — and every accepted datagram transmitted, reported through
/// `error_received`, dropped by `abort` or still queued, exactly once (the same runner as
/// the `datagram_ops` fuzz target).
#[test]
fn datagram_endpoint_matches_the_reference_model() {
    let seed = std::env::var("AIOPORT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20261126);
    let n = std::env::var("AIOPORT_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(2_000);
    let r = QuickCheck::new()
        .rng(Gen::from_size_and_seed(100, seed))
        .tests(n)
        .quicktest(implementation_matches_model as fn(ModelCase) -> TestResult);
    if let Err(f) = r {
        panic!("failed with AIOPORT_SEED={seed}:\n{f:?}");
    }
}
