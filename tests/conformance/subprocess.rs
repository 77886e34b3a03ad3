//! Subprocess protocols and scenarios (asyncio-spec §13–§14), generic over the driver:
//! data through `cat` byte-exact with stdin back-pressure, exit codes, death by signal,
//! signals after the exit, the callback order, a child that closes stdout but runs on, a
//! grandchild that keeps stdout open, a broken stdin pipe, stderr to stdout. The children
//! are [`Program`]s: real programs on real drivers, scripted on the harness. A driver
//! without subprocesses (or without a behaviour) makes the scenario print `SKIPPED (why)`.

use std::cell::RefCell;
use std::io::ErrorKind;
use std::rc::Rc;

use aioport::{
    CallbackResult, ConnectionError, Ctx, SignalError, SubprocessHandle, SubprocessProtocol,
};

use crate::driver::{ChildStdio, Driver, Program};

/// What the feeder writes per `write` call.
const FEED_CHUNK: usize = 256 * 1024;

/// A subprocess callback, as the recorder saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ev {
    Made,
    /// `pipe_data_received` on this fd (consecutive deliveries on one fd are one entry).
    Data(u32),
    PipeLost(u32, Option<ConnectionError>),
    /// `process_exited`, with the returncode it could read then.
    Exited(Option<i32>),
    Pause,
    Resume,
    Lost(Option<ConnectionError>),
}

/// What to write to the child's stdin.
#[derive(Debug, Default)]
pub enum Feed {
    /// Nothing (stdin stays open until the scenario closes it).
    #[default]
    Nothing,
    /// All of it in one write in `connection_made`, then `write_eof`: no regard for
    /// back-pressure.
    AtOnce(Vec<u8>),
    /// In chunks while writing is not paused (again on `resume_writing`), then
    /// `write_eof`.
    Paced { data: Vec<u8>, at: usize },
}

/// What one subprocess protocol saw.
#[derive(Debug, Default)]
pub struct Seen {
    pub events: Vec<Ev>,
    pub out: Vec<u8>,
    pub err: Vec<u8>,
    pub returncode: Option<i32>,
    pub lost: bool,
    /// The largest stdin buffer the feeder left behind after writing.
    pub max_buffered: usize,
    /// What `kill` answered inside `connection_lost`.
    pub kill_in_lost: Option<Result<(), SignalError>>,
    feed: Feed,
}

pub type Shared = Rc<RefCell<Seen>>;

/// Records every callback, collects stdout and stderr, and feeds stdin.
pub struct Recorder(Shared);

impl Recorder {
    pub fn boxed(feed: Feed) -> (Box<dyn SubprocessProtocol>, Shared) {
        let seen = Rc::new(RefCell::new(Seen { feed, ..Seen::default() }));
        (Box::new(Recorder(seen.clone())), seen)
    }

    /// Writes what the feed says may be written now. (No borrow of the shared state is
    /// held across a `Ctx` call.)
    fn feed(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        let Some(stdin) = ctx.stdin(ctx.subprocess())? else { return Ok(()) };
        let feed = std::mem::take(&mut self.0.borrow_mut().feed);
        match feed {
            Feed::Nothing => {}
            Feed::AtOnce(data) => {
                ctx.write(stdin, data)?;
                ctx.write_eof(stdin)?;
            }
            Feed::Paced { data, mut at } => {
                while at < data.len() && !ctx.is_writing_paused(stdin)? {
                    let end = (at + FEED_CHUNK).min(data.len());
                    ctx.write_slice(stdin, &data[at..end])?;
                    at = end;
                }
                let buffered = ctx.write_buffer_size(stdin)?;
                if at == data.len() {
                    ctx.write_eof(stdin)?;
                }
                let mut s = self.0.borrow_mut();
                s.max_buffered = s.max_buffered.max(buffered);
                if at < data.len() {
                    s.feed = Feed::Paced { data, at };
                }
            }
        }
        Ok(())
    }
}

impl SubprocessProtocol for Recorder {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.0.borrow_mut().events.push(Ev::Made);
        self.feed(ctx)
    }
    fn pipe_data_received(&mut self, _: &mut Ctx<'_>, fd: u32, data: &[u8]) -> CallbackResult {
        let mut s = self.0.borrow_mut();
        if s.events.last() != Some(&Ev::Data(fd)) {
            s.events.push(Ev::Data(fd));
        }
        if fd == 1 { &mut s.out } else { &mut s.err }.extend_from_slice(data);
        Ok(())
    }
    fn pipe_connection_lost(
        &mut self,
        _: &mut Ctx<'_>,
        fd: u32,
        err: Option<ConnectionError>,
    ) -> CallbackResult {
        self.0.borrow_mut().events.push(Ev::PipeLost(fd, err));
        Ok(())
    }
    fn process_exited(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        let code = ctx.returncode(ctx.subprocess())?;
        let mut s = self.0.borrow_mut();
        s.returncode = code;
        s.events.push(Ev::Exited(code));
        Ok(())
    }
    fn pause_writing(&mut self, _: &mut Ctx<'_>) -> CallbackResult {
        self.0.borrow_mut().events.push(Ev::Pause);
        Ok(())
    }
    fn resume_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.0.borrow_mut().events.push(Ev::Resume);
        self.feed(ctx)
    }
    fn connection_lost(
        &mut self,
        ctx: &mut Ctx<'_>,
        err: Option<ConnectionError>,
    ) -> CallbackResult {
        let r = ctx.kill(ctx.subprocess());
        let mut s = self.0.borrow_mut();
        assert!(!s.lost, "connection_lost delivered twice");
        s.kill_in_lost = Some(r);
        s.events.push(Ev::Lost(err));
        s.lost = true;
        Ok(())
    }
}

/// Spawns `program` with a recorder fed by `feed`; `None` (after printing `SKIPPED`)
/// when the driver cannot.
fn spawn<D: Driver>(
    d: &mut D,
    scenario: &str,
    program: Program,
    stdio: ChildStdio,
    feed: Feed,
) -> Option<(SubprocessHandle, Shared)> {
    let (protocol, seen) = Recorder::boxed(feed);
    match d.spawn(protocol, program, stdio) {
        Ok(h) => {
            assert_eq!(seen.borrow().events.first(), Some(&Ev::Made), "spawn delivers made");
            Some((h, seen))
        }
        Err(why) => {
            println!("SKIPPED ({} {scenario}: {why})", D::NAME);
            None
        }
    }
}

fn run_until_lost<D: Driver>(d: &mut D, seen: &Shared) {
    d.run_until("connection_lost", || seen.borrow().lost);
}

fn run_until_exited<D: Driver>(d: &mut D, seen: &Shared) {
    d.run_until("process_exited", || seen.borrow().returncode.is_some());
}

fn position(ev: &[Ev], f: impl Fn(&Ev) -> bool) -> Option<usize> {
    ev.iter().position(f)
}

/// Checks spec §14's order on a finished transcript: `connection_made` first, once;
/// per piped fd, its data then exactly one `pipe_connection_lost`; exactly one
/// `process_exited`; `connection_lost(None)` exactly once, last, after both.
fn assert_ordering(ev: &[Ev], piped: &[u32]) {
    assert_eq!(ev.first(), Some(&Ev::Made), "{ev:?}");
    assert_eq!(ev.iter().filter(|e| **e == Ev::Made).count(), 1, "{ev:?}");
    assert_eq!(ev.last(), Some(&Ev::Lost(None)), "{ev:?}");
    assert_eq!(ev.iter().filter(|e| matches!(e, Ev::Lost(_))).count(), 1, "{ev:?}");
    assert_eq!(ev.iter().filter(|e| matches!(e, Ev::Exited(_))).count(), 1, "{ev:?}");
    for fd in 0..3 {
        let losts = ev.iter().filter(|e| matches!(e, Ev::PipeLost(f, _) if *f == fd)).count();
        let want = usize::from(piped.contains(&fd));
        assert_eq!(losts, want, "pipe_connection_lost({fd}) {losts} times: {ev:?}");
        if let Some(lost) = position(ev, |e| matches!(e, Ev::PipeLost(f, _) if *f == fd)) {
            assert!(!ev[lost..].contains(&Ev::Data(fd)), "data on fd {fd} after its loss: {ev:?}");
        } else {
            assert!(!ev.contains(&Ev::Data(fd)), "data on fd {fd}, which is not piped: {ev:?}");
        }
    }
}

/// A pattern no shifted copy of itself matches: lost, duplicated or reordered bytes show.
fn pattern(len: usize) -> Vec<u8> {
    (0..len as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect()
}

/// 10 MiB through `cat`, fed as fast as back-pressure allows: every byte back in order,
/// `pause_writing` and `resume_writing` seen, the stdin buffer bounded, exit 0.
pub fn cat_10_mib_byte_exact_with_back_pressure<D: Driver>(d: &mut D) {
    let payload = pattern(10 * 1024 * 1024);
    let feed = Feed::Paced { data: payload.clone(), at: 0 };
    let scenario = "cat_10_mib_byte_exact_with_back_pressure";
    let Some((_, seen)) = spawn(d, scenario, Program::Cat, ChildStdio::Pipes, feed) else {
        return;
    };
    run_until_lost(d, &seen);
    let s = seen.borrow();
    let same = s.out == payload;
    assert!(same, "{} of {} bytes came back, not byte-exact", s.out.len(), payload.len());
    assert_eq!(s.returncode, Some(0));
    let pauses = s.events.iter().filter(|e| **e == Ev::Pause).count();
    let resumes = s.events.iter().filter(|e| **e == Ev::Resume).count();
    assert!(pauses >= 1 && resumes == pauses, "{pauses} pauses, {resumes} resumes");
    // The feeder stops at the first write above high water: one chunk over it at most.
    assert!(s.max_buffered <= 2 * FEED_CHUNK, "stdin buffered {} bytes", s.max_buffered);
    assert_ordering(&s.events, &[0, 1, 2]);
    assert!(d.take_errors().is_empty());
}

/// `exit 0` and `exit 3`: the returncode is known in `process_exited`.
pub fn exit_codes_0_and_3<D: Driver>(d: &mut D) {
    for code in [0, 3] {
        let program = Program::Exit(code);
        let Some((h, seen)) =
            spawn(d, "exit_codes_0_and_3", program, ChildStdio::Pipes, Feed::Nothing)
        else {
            return;
        };
        run_until_lost(d, &seen);
        assert_eq!(seen.borrow().returncode, Some(code));
        assert!(seen.borrow().events.contains(&Ev::Exited(Some(code))));
        assert_ordering(&seen.borrow().events, &[0, 1, 2]);
        assert_eq!(d.with(|ctx| ctx.kill(h)), Err(SignalError::ProcessLookup));
    }
    assert_eq!(d.transports(), 0, "every transport is gone");
}

/// `kill` → returncode −9, `terminate` → −15 (asyncio's negative signal numbers).
pub fn kill_is_minus_9_and_terminate_minus_15<D: Driver>(d: &mut D) {
    for (sig, code) in [(9, -9), (15, -15)] {
        let scenario = "kill_is_minus_9_and_terminate_minus_15";
        let Some((h, seen)) = spawn(d, scenario, Program::Sleep, ChildStdio::Pipes, Feed::Nothing)
        else {
            return;
        };
        assert!(d.with(|ctx| ctx.pid(h)).expect("live").is_some(), "a pid after the spawn");
        let sent = d.with(|ctx| if sig == 9 { ctx.kill(h) } else { ctx.terminate(h) });
        assert_eq!(sent, Ok(()));
        run_until_lost(d, &seen);
        assert_eq!(seen.borrow().returncode, Some(code));
        assert_ordering(&seen.borrow().events, &[0, 1, 2]);
    }
}

/// After the exit, signals answer `Ok` and reach nobody (the grandchild holding stdout
/// still says `bye`); after `connection_lost`, the typed `ProcessLookup` error — also
/// inside `connection_lost` itself.
pub fn signal_after_exit_ok_then_process_lookup<D: Driver>(d: &mut D) {
    let program = Program::GrandchildHoldsStdout(0);
    let scenario = "signal_after_exit_ok_then_process_lookup";
    let Some((h, seen)) = spawn(d, scenario, program, ChildStdio::Pipes, Feed::Nothing) else {
        return;
    };
    run_until_exited(d, &seen);
    assert!(!seen.borrow().lost, "stdout is still open in the grandchild");
    assert_eq!(d.with(|ctx| ctx.kill(h)), Ok(()));
    assert_eq!(d.with(|ctx| ctx.terminate(h)), Ok(()));
    assert_eq!(d.with(|ctx| ctx.send_signal(h, 1)), Ok(()));
    close_stdin(d, h);
    run_until_lost(d, &seen);
    let s = seen.borrow();
    assert_eq!(s.out, b"bye\n", "the grandchild was not hit by the signals");
    assert_eq!(s.returncode, Some(0), "the exit status stays the one reported");
    assert_eq!(s.kill_in_lost, Some(Err(SignalError::ProcessLookup)));
    assert_eq!(d.with(|ctx| ctx.kill(h)), Err(SignalError::ProcessLookup));
    assert_eq!(d.with(|ctx| ctx.terminate(h)), Err(SignalError::ProcessLookup));
    assert_ordering(&s.events, &[0, 1, 2]);
}

/// The callback order with data on both output pipes: `connection_made` first; per fd
/// its data then its `pipe_connection_lost`; `process_exited`; `connection_lost` last.
pub fn callbacks_in_order<D: Driver>(d: &mut D) {
    let program = Program::OutThenErr;
    let Some((_, seen)) = spawn(d, "callbacks_in_order", program, ChildStdio::Pipes, Feed::Nothing)
    else {
        return;
    };
    run_until_lost(d, &seen);
    let s = seen.borrow();
    assert_eq!((s.out.as_slice(), s.err.as_slice()), (&b"out\n"[..], &b"err\n"[..]));
    assert_eq!(s.returncode, Some(0));
    let ev = &s.events;
    assert_ordering(ev, &[0, 1, 2]);
    for fd in [1, 2] {
        let data = position(ev, |e| *e == Ev::Data(fd)).expect("data on fd");
        let lost = position(ev, |e| *e == Ev::PipeLost(fd, None)).expect("clean pipe loss");
        assert!(data < lost, "fd {fd}: {ev:?}");
    }
    let exited = position(ev, |e| matches!(e, Ev::Exited(_))).expect("exited");
    assert!(exited < ev.len() - 1, "process_exited before connection_lost: {ev:?}");
}

/// A child that closes its stdout and runs on: `pipe_connection_lost(1)` while it runs,
/// and its exit is still reported after `kill`.
pub fn child_closes_stdout_but_keeps_running<D: Driver>(d: &mut D) {
    let program = Program::CloseStdoutThenSleep;
    let scenario = "child_closes_stdout_but_keeps_running";
    let Some((h, seen)) = spawn(d, scenario, program, ChildStdio::Pipes, Feed::Nothing) else {
        return;
    };
    d.run_until("pipe_connection_lost(1)", || {
        seen.borrow().events.iter().any(|e| matches!(e, Ev::PipeLost(1, _)))
    });
    assert_eq!(seen.borrow().returncode, None, "still running: {:?}", seen.borrow().events);
    assert!(!seen.borrow().lost);
    assert_eq!(d.with(|ctx| ctx.returncode(h)), Ok(None));
    assert_eq!(d.with(|ctx| ctx.kill(h)), Ok(()));
    run_until_lost(d, &seen);
    let s = seen.borrow();
    assert_eq!(s.returncode, Some(-9));
    let out_lost = position(&s.events, |e| *e == Ev::PipeLost(1, None)).expect("clean EOF");
    let exited = position(&s.events, |e| matches!(e, Ev::Exited(_))).expect("exited");
    assert!(out_lost < exited, "{:?}", s.events);
    assert_ordering(&s.events, &[0, 1, 2]);
}

/// A grandchild keeps stdout open after the child exits: `process_exited` arrives at the
/// exit (stdout still open), `connection_lost` only once the grandchild is gone.
pub fn grandchild_holding_stdout_does_not_delay_the_exit<D: Driver>(d: &mut D) {
    let program = Program::GrandchildHoldsStdout(5);
    let scenario = "grandchild_holding_stdout_does_not_delay_the_exit";
    let Some((h, seen)) = spawn(d, scenario, program, ChildStdio::Pipes, Feed::Nothing) else {
        return;
    };
    run_until_exited(d, &seen);
    assert_eq!(seen.borrow().returncode, Some(5));
    assert_eq!(d.with(|ctx| ctx.returncode(h)), Ok(Some(5)));
    {
        let s = seen.borrow();
        assert!(!s.lost, "{:?}", s.events);
        let out_lost = s.events.iter().any(|e| matches!(e, Ev::PipeLost(1, _)));
        assert!(!out_lost, "stdout is still open in the grandchild: {:?}", s.events);
    }
    // The grandchild ends when the child's stdin closes.
    close_stdin(d, h);
    run_until_lost(d, &seen);
    let s = seen.borrow();
    assert_eq!(s.out, b"bye\n");
    let exited = position(&s.events, |e| matches!(e, Ev::Exited(_))).expect("exited");
    let out_lost = position(&s.events, |e| *e == Ev::PipeLost(1, None)).expect("clean EOF");
    assert!(exited < out_lost, "{:?}", s.events);
    assert_ordering(&s.events, &[0, 1, 2]);
}

/// Writing more than the pipe holds to a child that exits without reading:
/// `pipe_connection_lost(0, Some(broken pipe))`, and the transport still ends cleanly.
pub fn writing_to_a_child_that_exited_is_a_broken_pipe<D: Driver>(d: &mut D) {
    let feed = Feed::AtOnce(vec![b'x'; 1 << 20]);
    let scenario = "writing_to_a_child_that_exited_is_a_broken_pipe";
    let Some((_, seen)) = spawn(d, scenario, Program::Exit(0), ChildStdio::Pipes, feed) else {
        return;
    };
    run_until_lost(d, &seen);
    let s = seen.borrow();
    let broken = s.events.iter().any(|e| {
        matches!(e, Ev::PipeLost(0, Some(ConnectionError::Io(io))) if io.kind() == ErrorKind::BrokenPipe)
    });
    assert!(broken, "pipe_connection_lost(0, Some(broken pipe)): {:?}", s.events);
    assert_eq!(s.returncode, Some(0));
    assert_ordering(&s.events, &[0, 1, 2]);
}

/// stderr to stdout: no stderr pipe, both lines on fd 1 in the order written.
pub fn stderr_to_stdout<D: Driver>(d: &mut D) {
    let stdio = ChildStdio::StderrToStdout;
    let Some((h, seen)) = spawn(d, "stderr_to_stdout", Program::OutThenErr, stdio, Feed::Nothing)
    else {
        return;
    };
    assert_eq!(d.with(|ctx| ctx.stderr(h)), Ok(None));
    assert!(d.with(|ctx| ctx.stdout(h)).expect("live").is_some());
    run_until_lost(d, &seen);
    let s = seen.borrow();
    assert_eq!(s.out, b"out\nerr\n");
    assert!(s.err.is_empty());
    assert_ordering(&s.events, &[0, 1]);
}

/// `close()` on a running child closes its pipes and kills it (returncode −9);
/// `close()` after the exit kills nothing and changes no status.
pub fn close_kills_a_running_child_never_a_finished_one<D: Driver>(d: &mut D) {
    let scenario = "close_kills_a_running_child_never_a_finished_one";
    let Some((h, seen)) = spawn(d, scenario, Program::Sleep, ChildStdio::Pipes, Feed::Nothing)
    else {
        return;
    };
    d.with(|ctx| ctx.close(h)).expect("close a live subprocess");
    run_until_lost(d, &seen);
    assert_eq!(seen.borrow().returncode, Some(-9));
    assert_ordering(&seen.borrow().events, &[0, 1, 2]);

    let program = Program::GrandchildHoldsStdout(7);
    let Some((h, seen)) = spawn(d, scenario, program, ChildStdio::Pipes, Feed::Nothing) else {
        return;
    };
    run_until_exited(d, &seen);
    // Closes the pipes, stdin included: the grandchild then writes into a closed stdout
    // and ends; the exit status stays the child's.
    d.with(|ctx| ctx.close(h)).expect("close an exited subprocess");
    run_until_lost(d, &seen);
    let s = seen.borrow();
    assert_eq!(s.returncode, Some(7));
    assert_eq!(s.events.iter().filter(|e| matches!(e, Ev::Exited(_))).count(), 1);
    assert_ordering(&s.events, &[0, 1, 2]);
}

/// 200 `cat` children one after another, each fed its number: every reply exact, and
/// nothing left in the loop. (The poll loop's own tests count descriptors and zombies,
/// which other tests of this binary running in parallel would disturb here.)
pub fn two_hundred_children_in_a_row<D: Driver>(d: &mut D) {
    for i in 0..200 {
        let feed = Feed::AtOnce(format!("{i}\n").into_bytes());
        let scenario = "two_hundred_children_in_a_row";
        let Some((_, seen)) = spawn(d, scenario, Program::Cat, ChildStdio::Pipes, feed) else {
            return;
        };
        run_until_lost(d, &seen);
        let s = seen.borrow();
        assert_eq!(s.out, format!("{i}\n").as_bytes());
        assert_eq!(s.returncode, Some(0));
    }
    assert_eq!(d.transports(), 0, "every transport is gone");
    assert!(d.take_errors().is_empty());
}

/// Closes `h`'s stdin from user code.
fn close_stdin<D: Driver>(d: &mut D, h: SubprocessHandle) {
    d.with(|ctx| {
        let stdin = ctx.stdin(h).expect("live").expect("stdin piped");
        ctx.close(stdin).expect("close stdin");
    });
}

/// One `#[test]` per subprocess scenario for a driver, in a module named after it.
macro_rules! subprocess_conformance {
    ($module:ident, $driver:ty) => {
        mod $module {
            use crate::driver::Driver;
            use crate::subprocess;

            fn run(scenario: fn(&mut $driver)) {
                scenario(&mut <$driver>::new());
            }

            #[test]
            fn cat_10_mib_byte_exact_with_back_pressure() {
                run(subprocess::cat_10_mib_byte_exact_with_back_pressure);
            }
            #[test]
            fn exit_codes_0_and_3() {
                run(subprocess::exit_codes_0_and_3);
            }
            #[test]
            fn kill_is_minus_9_and_terminate_minus_15() {
                run(subprocess::kill_is_minus_9_and_terminate_minus_15);
            }
            #[test]
            fn signal_after_exit_ok_then_process_lookup() {
                run(subprocess::signal_after_exit_ok_then_process_lookup);
            }
            #[test]
            fn callbacks_in_order() {
                run(subprocess::callbacks_in_order);
            }
            #[test]
            fn child_closes_stdout_but_keeps_running() {
                run(subprocess::child_closes_stdout_but_keeps_running);
            }
            #[test]
            fn grandchild_holding_stdout_does_not_delay_the_exit() {
                run(subprocess::grandchild_holding_stdout_does_not_delay_the_exit);
            }
            #[test]
            fn writing_to_a_child_that_exited_is_a_broken_pipe() {
                run(subprocess::writing_to_a_child_that_exited_is_a_broken_pipe);
            }
            #[test]
            fn close_kills_a_running_child_never_a_finished_one() {
                run(subprocess::close_kills_a_running_child_never_a_finished_one);
            }
            #[test]
            fn two_hundred_children_in_a_row() {
                run(subprocess::two_hundred_children_in_a_row);
            }
            #[test]
            fn stderr_to_stdout() {
                run(subprocess::stderr_to_stdout);
            }
        }
    };
}
