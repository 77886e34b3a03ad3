//! Subprocess properties over simulated children (`aioport::testing::ProcessSim`): any
//! interleaving of what the child does (write, close its ends, read stdin, exit, leave a
//! grandchild holding its pipes, die of a signal) and what the user does (write stdin,
//! `write_eof`, pause and resume each pipe, close a pipe, signal, close the process)
//! keeps spec §14's ordering rules, conserves bytes, and never signals after the exit.
//!
//! Seed and case count come from `AIOPORT_SEED` / `AIOPORT_CASES`, as in `properties.rs`.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Instant;

use aioport::testing::{Event, ProcessSim};
use aioport::{CallbackResult, Ctx, SubprocessProtocol};
use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};

#[derive(Clone, Debug)]
enum Op {
    ChildWrite(u32, u16),
    ChildClose(u32),
    ChildReadStdin(u16),
    ChildExit(i32),
    ChildExitLeavingGrandchild(i32),
    GrandchildExit,
    IgnoreSignals(bool),
    Write(u16),
    WriteEof,
    PauseReading(u32),
    ResumeReading(u32),
    ClosePipe(u32),
    Signal(i32),
    Close,
}

impl Arbitrary for Op {
    fn arbitrary(g: &mut Gen) -> Self {
        let fd = *g.choose(&[1, 2]).unwrap();
        let len = u16::arbitrary(g) % 20_000;
        match u8::arbitrary(g) % 28 {
            0..=5 => Op::ChildWrite(fd, len),
            6 => Op::ChildClose(*g.choose(&[0, 1, 2]).unwrap()),
            7..=10 => Op::ChildReadStdin(len),
            11 => Op::ChildExit(i32::from(u8::arbitrary(g) % 4)),
            12 => Op::ChildExitLeavingGrandchild(i32::from(u8::arbitrary(g) % 4)),
            13 => Op::GrandchildExit,
            14 => Op::IgnoreSignals(bool::arbitrary(g)),
            15..=18 => Op::Write(len),
            19 => Op::WriteEof,
            20 | 21 => Op::PauseReading(fd),
            22 | 23 => Op::ResumeReading(fd),
            24 => Op::ClosePipe(*g.choose(&[0, 1, 2]).unwrap()),
            25 | 26 => Op::Signal(*g.choose(&[9, 15, 2]).unwrap()),
            _ => Op::Close,
        }
    }
}

#[derive(Clone, Debug)]
struct Case {
    piped: [bool; 3],
    stdin_capacity: u16,
    ops: Vec<Op>,
}

impl Arbitrary for Case {
    fn arbitrary(g: &mut Gen) -> Self {
        Case {
            piped: [bool::arbitrary(g), bool::arbitrary(g), bool::arbitrary(g)],
            stdin_capacity: 1 + u16::arbitrary(g) % 20_000,
            ops: Vec::arbitrary(g),
        }
    }
    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        let base = self.clone();
        Box::new(self.ops.shrink().map(move |ops| Case { ops, ..base.clone() }))
    }
}

/// Records the return code `process_exited` saw.
struct Probe(Rc<RefCell<Option<Option<i32>>>>);

impl SubprocessProtocol for Probe {
    fn process_exited(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        *self.0.borrow_mut() = Some(ctx.returncode(ctx.subprocess())?);
        Ok(())
    }
}

fn fill(len: u16, tag: usize) -> Vec<u8> {
    (0..usize::from(len)).map(|i| ((i + tag) % 251) as u8).collect()
}

fn ordering_rules_hold(case: Case) -> TestResult {
    let mut s = ProcessSim::new(Instant::now());
    let seen = Rc::new(RefCell::new(None));
    let p = s.spawn_pending(Probe(seen.clone()), case.piped);
    s.set_stdin_capacity(p, usize::from(case.stdin_capacity));
    s.report_spawned(p);
    let pipes = s.pipes(p);
    let read = |fd: u32| if fd == 1 { pipes.stdout } else { pipes.stderr };
    let mut written: [Vec<u8>; 3] = Default::default();
    let mut user_closed = [false; 3];
    let mut stdin_sent = Vec::new();
    for (i, op) in case.ops.iter().enumerate() {
        match *op {
            Op::ChildWrite(fd, len) => {
                let data = fill(len, i);
                if s.child_write(p, fd, &data) {
                    written[fd as usize].extend_from_slice(&data);
                }
            }
            Op::ChildClose(fd) => s.child_close(p, fd),
            Op::ChildReadStdin(n) => {
                s.child_read_stdin(p, usize::from(n));
            }
            Op::ChildExit(code) => s.child_exit(p, code),
            Op::ChildExitLeavingGrandchild(code) => s.child_exit_leaving_grandchild(p, code),
            Op::GrandchildExit => s.grandchild_exit(p),
            Op::IgnoreSignals(on) => s.ignore_signals(p, on),
            Op::Write(len) => {
                let data = fill(len, i);
                if let Some(stdin) = pipes.stdin
                    && s.enter(|ctx| ctx.write_slice(stdin, &data)).is_ok()
                {
                    stdin_sent.extend_from_slice(&data);
                }
            }
            Op::WriteEof => {
                if let Some(stdin) = pipes.stdin {
                    let _ = s.enter(|ctx| ctx.write_eof(stdin));
                }
            }
            Op::PauseReading(fd) => {
                if let Some(h) = read(fd) {
                    let _ = s.enter(|ctx| ctx.pause_reading(h));
                }
            }
            Op::ResumeReading(fd) => {
                if let Some(h) = read(fd) {
                    let _ = s.enter(|ctx| ctx.resume_reading(h));
                }
            }
            Op::ClosePipe(fd) => {
                let r = match fd {
                    0 => pipes.stdin.map(|h| s.enter(|ctx| ctx.close(h))),
                    _ => read(fd).map(|h| s.enter(|ctx| ctx.close(h))),
                };
                user_closed[fd as usize] |= r.is_some_and(|r| r.is_ok());
            }
            Op::Signal(sig) => {
                let _ = s.enter(|ctx| ctx.send_signal(p, sig));
            }
            Op::Close => {
                if s.enter(|ctx| ctx.close(p)).is_ok() {
                    user_closed = [true; 3];
                }
            }
        }
    }
    // Wind down: deliver everything, let the child read and end, bounded.
    for fd in [1, 2] {
        if let Some(h) = read(fd) {
            let _ = s.enter(|ctx| ctx.resume_reading(h));
        }
    }
    for _ in 0..10_000 {
        if s.child_read_stdin(p, 1 << 20).is_empty() {
            break;
        }
    }
    s.child_exit(p, 0);
    s.grandchild_exit(p);
    let exit = s.exit_status(p).map(|e| e.returncode());

    let ev = s.events(p);
    let fail = |m: &str| TestResult::error(format!("{m}: {ev:?}"));
    if ev.first() != Some(&Event::Made) || ev.iter().filter(|e| **e == Event::Made).count() != 1 {
        return fail("connection_made first and once");
    }
    if ev.last() != Some(&Event::Lost(None))
        || ev.iter().filter(|e| matches!(e, Event::Lost(_))).count() != 1
    {
        return fail("connection_lost last and once");
    }
    if ev.iter().filter(|e| **e == Event::Exited).count() != 1 {
        return fail("process_exited once");
    }
    for fd in 0..3u32 {
        let lost: Vec<usize> =
            (0..ev.len()).filter(|&i| matches!(ev[i], Event::PipeLost(f, _) if f == fd)).collect();
        if lost.len() != usize::from(case.piped[fd as usize]) {
            return fail(&format!("pipe_connection_lost({fd}) once per piped fd"));
        }
        let got: Vec<u8> = ev
            .iter()
            .filter_map(|e| match e {
                Event::PipeData(f, d) if *f == fd => Some(d.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        if let Some(&l) = lost.first()
            && ev[l..].iter().any(|e| matches!(e, Event::PipeData(f, _) if *f == fd))
        {
            return fail(&format!("data on fd {fd} after its pipe_connection_lost"));
        }
        let all = &written[fd as usize];
        let ok = if user_closed[fd as usize] { all.starts_with(&got) } else { *all == got };
        if !ok {
            return fail(&format!(
                "fd {fd}: {} bytes delivered of {} written",
                got.len(),
                all.len()
            ));
        }
    }
    if !stdin_sent.starts_with(&s.stdin_received(p)) {
        return fail("the child read bytes the user did not write, or out of order");
    }
    if *seen.borrow() != Some(exit) || exit.is_none() {
        return fail(&format!("process_exited saw {:?}, the exit was {exit:?}", seen.borrow()));
    }
    if s.signals_after_exit() != 0 {
        return fail("a signal reached the driver after the exit");
    }
    if !s.is_forgotten(p) || !s.registry().is_empty() {
        return fail("the process was not released");
    }
    TestResult::passed()
}

#[test]
fn random_interleavings_keep_the_subprocess_ordering_rules() {
    let seed = std::env::var("AIOPORT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20261126);
    let n = std::env::var("AIOPORT_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(300);
    let r = QuickCheck::new()
        .rng(Gen::from_size_and_seed(60, seed))
        .tests(n)
        .quicktest(ordering_rules_hold as fn(Case) -> TestResult);
    if let Err(f) = r {
        panic!("failed with AIOPORT_SEED={seed}:\n{f:?}");
    }
}

/// The subprocess transport against the reference model
/// (`aioport::testing::model::SubprocessModel`), with the runner of the `subprocess_ops`
/// fuzz target: callbacks per channel and how channels relate, write and signal results,
/// the signals the driver was asked to send, the return code, state and bytes after every
/// step. Needs the `fuzzing` feature (the runner lives there).
#[cfg(feature = "fuzzing")]
mod model {
    use aioport::ExitStatus;
    use aioport::fuzzing::check_subprocess_against_model;
    use aioport::testing::model::SubprocessOp;
    use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};

    #[derive(Clone, Debug)]
    struct ModelCase {
        piped: [bool; 3],
        ops: Vec<SubprocessOp>,
    }

    fn arbitrary_op(g: &mut Gen) -> SubprocessOp {
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
        let fd = 1 + u32::from(bool::arbitrary(g));
        match u8::arbitrary(g) % 25 {
            0 => SubprocessOp::Spawned,
            1 => SubprocessOp::Exit(if bool::arbitrary(g) {
                ExitStatus::Exited(i32::from(u8::arbitrary(g) % 4))
            } else {
                ExitStatus::Signaled(*g.choose(&[9, 15, 2]).unwrap())
            }),
            2..=4 => SubprocessOp::Write(size(g)),
            5 => SubprocessOp::WriteEof,
            6 => SubprocessOp::ClosePipe(u32::from(u8::arbitrary(g) % 3)),
            7 => *g.choose(&[SubprocessOp::Close, SubprocessOp::Abort]).unwrap(),
            8 => *g.choose(&[SubprocessOp::Kill, SubprocessOp::Terminate]).unwrap(),
            9 => SubprocessOp::SendSignal(i32::from(u8::arbitrary(g) % 32)),
            10 => SubprocessOp::PauseReading(fd),
            11 => SubprocessOp::ResumeReading(fd),
            12 => SubprocessOp::SetLimits(limit(g), limit(g)),
            13 => SubprocessOp::Grant(size(g)),
            14 => SubprocessOp::Writable,
            15 => SubprocessOp::StdinBroken,
            16 => SubprocessOp::StdinReadable,
            17..=19 => SubprocessOp::ChildWrite(fd, size(g)),
            20 => SubprocessOp::ChildEof(fd),
            21 => SubprocessOp::SwapProtocol,
            _ => SubprocessOp::Readable(fd),
        }
    }

    impl Arbitrary for ModelCase {
        fn arbitrary(g: &mut Gen) -> Self {
            let n = usize::arbitrary(g) % 80;
            // The spawn comes early in most runs: before it the user holds no handle.
            let mut ops = Vec::with_capacity(n + 1);
            if u8::arbitrary(g) % 4 != 0 {
                ops.push(SubprocessOp::Spawned);
            }
            for _ in 0..n {
                let op = arbitrary_op(g);
                // Close and abort end a run early; keep them rarer than the rest.
                let ends = matches!(op, SubprocessOp::Close | SubprocessOp::Abort);
                if !ends || u8::arbitrary(g) % 4 == 0 {
                    ops.push(op);
                }
            }
            let piped = [bool::arbitrary(g), bool::arbitrary(g), bool::arbitrary(g)];
            ModelCase { piped, ops }
        }
        fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
            // Halves first, then one operation fewer at each position.
            let (piped, ops) = (self.piped, self.ops.clone());
            let n = ops.len();
            let halves = [ops[..n / 2].to_vec(), ops[n / 2..].to_vec()];
            let singles = (0..n).map(move |i| [&ops[..i], &ops[i + 1..]].concat());
            let smaller = halves.into_iter().filter(move |h| n > 1 && h.len() < n).chain(singles);
            Box::new(smaller.map(move |ops| ModelCase { piped, ops }))
        }
    }

    fn implementation_matches_model(case: ModelCase) -> TestResult {
        match check_subprocess_against_model(case.piped, &case.ops) {
            Ok(()) => TestResult::passed(),
            Err(e) => TestResult::error(e),
        }
    }

    #[test]
    fn subprocess_transport_matches_the_reference_model() {
        let seed =
            std::env::var("AIOPORT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20261126);
        let n = std::env::var("AIOPORT_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(2_000);
        let r = QuickCheck::new()
            .rng(Gen::from_size_and_seed(100, seed))
            .tests(n)
            .quicktest(implementation_matches_model as fn(ModelCase) -> TestResult);
        if let Err(f) = r {
            panic!("failed with AIOPORT_SEED={seed}:\n{f:?}");
        }
    }
}
