//! Subprocesses on the poll loop with real children (`cat`, `sh`): data, back-pressure,
//! exit codes, signals, the ordering rules, stdio options, and no zombie or fd leak.
//! Every run is bounded in time; every child is reaped.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::rc::Rc;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use aioport::{
    CallbackResult, ConnectionError, Ctx, SignalError, SubprocessHandle, SubprocessProtocol,
};
use aioport_poll::{Loop, Stdio, SubprocessOptions};

const LIMIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Made,
    Data(u32),
    PipeLost(u32, Option<ConnectionError>),
    Exited(Option<i32>),
    Pause,
    Resume,
    Lost,
}

#[derive(Default)]
struct State {
    events: Vec<Ev>,
    out: Vec<u8>,
    err: Vec<u8>,
    returncode: Option<i32>,
    lost: bool,
    /// Written to stdin in connection_made, then write_eof.
    feed: Option<Vec<u8>>,
    /// What `kill` answered inside connection_lost.
    kill_in_lost: Option<Result<(), SignalError>>,
}

type Shared = Rc<RefCell<State>>;

struct Rec(Shared);

impl Rec {
    fn new() -> (Box<Self>, Shared) {
        let s = Shared::default();
        (Box::new(Rec(s.clone())), s)
    }
    fn feeding(data: Vec<u8>) -> (Box<Self>, Shared) {
        let (p, s) = Self::new();
        s.borrow_mut().feed = Some(data);
        (p, s)
    }
}

impl SubprocessProtocol for Rec {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.0.borrow_mut().events.push(Ev::Made);
        if let Some(data) = self.0.borrow_mut().feed.take() {
            let stdin = ctx.stdin(ctx.subprocess())?.expect("stdin piped");
            ctx.write(stdin, data)?;
            ctx.write_eof(stdin)?;
        }
        Ok(())
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
    fn resume_writing(&mut self, _: &mut Ctx<'_>) -> CallbackResult {
        self.0.borrow_mut().events.push(Ev::Resume);
        Ok(())
    }
    fn connection_lost(&mut self, ctx: &mut Ctx<'_>, _: Option<ConnectionError>) -> CallbackResult {
        let r = ctx.kill(ctx.subprocess());
        let mut s = self.0.borrow_mut();
        s.kill_in_lost = Some(r);
        s.events.push(Ev::Lost);
        s.lost = true;
        Ok(())
    }
}

/// The tests of this file run one at a time: two of them count this process's
/// descriptors and children, which tests on other threads would change.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn new_loop() -> Loop {
    let mut lp = Loop::new().expect("loop");
    lp.set_error_handler(|r| panic!("loop error: {r}"));
    lp
}

fn run_until_lost(lp: &mut Loop, s: &Shared) {
    lp.run_until_timeout(|| s.borrow().lost, LIMIT).expect("connection_lost within the limit");
}

fn sh(lp: &mut Loop, cmd: &str, opts: SubprocessOptions) -> (SubprocessHandle, Shared) {
    let (p, s) = Rec::new();
    (lp.subprocess_shell(p, cmd, opts).expect("spawn sh"), s)
}

/// Checks spec §14's ordering on a finished transcript.
fn assert_ordering(ev: &[Ev], piped: &[u32]) {
    assert_eq!(ev.first(), Some(&Ev::Made), "{ev:?}");
    assert_eq!(ev.last(), Some(&Ev::Lost), "{ev:?}");
    assert_eq!(ev.iter().filter(|e| matches!(e, Ev::Exited(_))).count(), 1, "{ev:?}");
    for &fd in piped {
        let lost = ev.iter().position(|e| matches!(e, Ev::PipeLost(f, _) if *f == fd));
        let lost = lost.unwrap_or_else(|| panic!("no pipe_connection_lost({fd}): {ev:?}"));
        assert!(!ev[lost..].contains(&Ev::Data(fd)), "data after pipe lost: {ev:?}");
    }
}

#[test]
fn ten_mib_through_cat_byte_exact_with_stdin_back_pressure() {
    let _serial = serial();
    let mut lp = new_loop();
    let payload: Vec<u8> =
        (0..10 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let (p, s) = Rec::feeding(payload.clone());
    lp.subprocess_exec(p, "cat", [] as [&str; 0], SubprocessOptions::default()).expect("spawn cat");
    run_until_lost(&mut lp, &s);
    let st = s.borrow();
    assert!(st.out == payload, "{} of {} bytes came back", st.out.len(), payload.len());
    assert_eq!(st.returncode, Some(0));
    // A 10 MiB write into a 64 KiB pipe: pause at once, resume as cat drains it.
    assert_eq!(st.events[..2], [Ev::Made, Ev::Pause], "{:?}", &st.events[..4]);
    assert!(st.events.contains(&Ev::Resume));
    assert_ordering(&st.events, &[0, 1, 2]);
}

#[test]
fn exit_codes_0_and_3() {
    let _serial = serial();
    let mut lp = new_loop();
    for (cmd, code) in [("exit 0", 0), ("exit 3", 3)] {
        let (_, s) = sh(&mut lp, cmd, SubprocessOptions::default());
        run_until_lost(&mut lp, &s);
        assert_eq!(s.borrow().returncode, Some(code));
        assert_ordering(&s.borrow().events, &[0, 1, 2]);
    }
}

#[test]
fn kill_is_minus_9_and_terminate_minus_15() {
    let _serial = serial();
    let mut lp = new_loop();
    for (sig, code) in [(9, -9), (15, -15)] {
        // `exec` so the signal reaches sleep itself, not a shell waiting for it.
        let (h, s) = sh(&mut lp, "exec sleep 30", SubprocessOptions::default());
        lp.with(|ctx| if sig == 9 { ctx.kill(h) } else { ctx.terminate(h) }).unwrap();
        assert_eq!(lp.wait_subprocess(h, LIMIT).unwrap(), code);
        run_until_lost(&mut lp, &s);
        assert_eq!(s.borrow().returncode, Some(code));
    }
}

#[test]
fn signal_after_exit_is_ok_then_process_lookup_after_connection_lost() {
    let _serial = serial();
    let mut lp = new_loop();
    // Exits at once but keeps stdout open through a grandchild until stdin closes.
    // (A background job's stdin is /dev/null, hence the copy on fd 3.)
    let cmd = "exec 3<&0; (read x <&3; echo bye) & exit 0";
    let (h, s) = sh(&mut lp, cmd, SubprocessOptions::default());
    lp.run_until_timeout(|| s.borrow().returncode.is_some(), LIMIT).unwrap();
    assert!(!s.borrow().lost);
    assert_eq!(lp.with(|ctx| ctx.kill(h)), Ok(()));
    assert_eq!(lp.with(|ctx| ctx.terminate(h)), Ok(()));
    let stdin = lp.with(|ctx| ctx.stdin(h)).unwrap().unwrap();
    lp.with(|ctx| ctx.write_slice(stdin, b"go\n")).unwrap();
    lp.with(|ctx| ctx.close(stdin)).unwrap();
    run_until_lost(&mut lp, &s);
    assert_eq!(s.borrow().out, b"bye\n", "the grandchild was not hit by the signals");
    assert_eq!(s.borrow().kill_in_lost, Some(Err(SignalError::ProcessLookup)));
    assert_eq!(lp.with(|ctx| ctx.kill(h)), Err(SignalError::ProcessLookup));
}

#[test]
fn a_child_that_closes_stdout_but_keeps_running() {
    let _serial = serial();
    let mut lp = new_loop();
    let (h, s) = sh(&mut lp, "exec >&-; read x; exit 4", SubprocessOptions::default());
    lp.run_until_timeout(|| s.borrow().events.contains(&Ev::PipeLost(1, None)), LIMIT).unwrap();
    assert!(s.borrow().returncode.is_none(), "still running: {:?}", s.borrow().events);
    let stdin = lp.with(|ctx| ctx.stdin(h)).unwrap().unwrap();
    lp.with(|ctx| ctx.write_slice(stdin, b"done\n")).unwrap();
    run_until_lost(&mut lp, &s);
    assert_eq!(s.borrow().returncode, Some(4));
    let ev = s.borrow().events.clone();
    let out_lost = ev.iter().position(|e| *e == Ev::PipeLost(1, None)).unwrap();
    let exited = ev.iter().position(|e| matches!(e, Ev::Exited(_))).unwrap();
    assert!(out_lost < exited, "{ev:?}");
    assert_ordering(&ev, &[0, 1, 2]);
}

#[test]
fn a_grandchild_holding_stdout_does_not_delay_the_exit_status() {
    let _serial = serial();
    let mut lp = new_loop();
    let (h, s) = sh(&mut lp, "sleep 30 & echo $!; exit 5", SubprocessOptions::default());
    // asyncio's `await proc.wait()`: resolves at the exit, with stdout still open.
    assert_eq!(lp.wait_subprocess(h, LIMIT).unwrap(), 5);
    assert_eq!(s.borrow().returncode, Some(5));
    // Known now: answered without running the loop.
    assert_eq!(lp.wait_subprocess(h, Duration::ZERO).unwrap(), 5);
    assert!(!s.borrow().lost, "stdout is still open in the grandchild");
    let pid: i32 = String::from_utf8(s.borrow().out.clone()).unwrap().trim().parse().unwrap();
    // End the grandchild (ours to clean up), which closes stdout.
    let pid = rustix::process::Pid::from_raw(pid).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    run_until_lost(&mut lp, &s);
    assert_ordering(&s.borrow().events, &[0, 1, 2]);
    let r = lp.wait_subprocess(h, LIMIT);
    assert!(matches!(r, Err(aioport_poll::Error::NoSuchProcess(_))), "{r:?}");
}

#[test]
fn writing_to_a_child_that_exited_is_a_broken_pipe() {
    let _serial = serial();
    let mut lp = new_loop();
    // More than the pipe holds, to a child that never reads.
    let (p, s) = Rec::feeding(vec![b'x'; 1 << 20]);
    lp.subprocess_exec(p, "true", [] as [&str; 0], SubprocessOptions::default()).unwrap();
    run_until_lost(&mut lp, &s);
    let ev = s.borrow().events.clone();
    let broken = ev.iter().any(|e| {
        matches!(e, Ev::PipeLost(0, Some(ConnectionError::Io(io))) if io.kind() == ErrorKind::BrokenPipe)
    });
    assert!(broken, "pipe_connection_lost(0, Some(broken pipe)): {ev:?}");
    assert_ordering(&ev, &[0, 1, 2]);
}

#[test]
fn stderr_to_stdout() {
    let _serial = serial();
    let mut lp = new_loop();
    let (h, s) =
        sh(&mut lp, "echo out; echo err >&2", SubprocessOptions::default().stderr(Stdio::Stdout));
    assert_eq!(lp.with(|ctx| ctx.stderr(h)), Ok(None));
    run_until_lost(&mut lp, &s);
    assert_eq!(s.borrow().out, b"out\nerr\n");
    assert!(s.borrow().err.is_empty());
    assert_ordering(&s.borrow().events, &[0, 1]);
}

#[test]
fn stderr_separately_and_stdin_from_null() {
    let _serial = serial();
    let mut lp = new_loop();
    let opts = SubprocessOptions::default().stdin(Stdio::Null);
    let (h, s) = sh(&mut lp, "cat; echo oops >&2; exit 1", opts);
    assert_eq!(lp.with(|ctx| ctx.stdin(h)), Ok(None));
    run_until_lost(&mut lp, &s);
    assert_eq!(s.borrow().out, b"");
    assert_eq!(s.borrow().err, b"oops\n");
    assert_eq!(s.borrow().returncode, Some(1));
}

#[test]
fn environment_and_working_directory() {
    let _serial = serial();
    let mut lp = new_loop();
    let dir = std::env::temp_dir().canonicalize().unwrap();
    let opts = SubprocessOptions::default().env("AIOPORT_TEST_VAR", "forty-two").current_dir(&dir);
    let (_, s) = sh(&mut lp, "echo $AIOPORT_TEST_VAR; pwd -P", opts);
    run_until_lost(&mut lp, &s);
    let want = format!("forty-two\n{}\n", dir.display());
    assert_eq!(String::from_utf8_lossy(&s.borrow().out), want);
}

#[test]
fn the_child_inherits_no_other_descriptor() {
    let _serial = serial();
    let mut lp = new_loop();
    // Another child's pipes exist while this one starts: none may leak into it.
    // `sleep`, not `read`: close() shuts stdin first, and a child that exits on that EOF
    // may beat the SIGKILL (return code 1 instead of -9) on a loaded machine.
    let (h1, s1) = sh(&mut lp, "exec sleep 30", SubprocessOptions::default());
    let (_, s) = sh(&mut lp, "ls /proc/$$/fd", SubprocessOptions::default());
    run_until_lost(&mut lp, &s);
    let fds: BTreeSet<String> =
        String::from_utf8_lossy(&s.borrow().out).split_whitespace().map(str::to_owned).collect();
    // What a child started by std alone sees (the test runner may pass descriptors down,
    // and the shell opens its own): the loop must add nothing.
    let plain = std::process::Command::new("/bin/sh")
        .args(["-c", "ls /proc/$$/fd"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("plain sh");
    let baseline: BTreeSet<String> =
        String::from_utf8_lossy(&plain.stdout).split_whitespace().map(str::to_owned).collect();
    assert_eq!(fds, baseline, "descriptors leaked into the child");
    lp.with(|ctx| ctx.close(h1)).unwrap();
    run_until_lost(&mut lp, &s1);
    assert_eq!(s1.borrow().returncode, Some(-9), "close() killed the running child");
}

#[test]
fn a_missing_program_is_a_spawn_error_and_leaves_nothing() {
    let _serial = serial();
    let mut lp = new_loop();
    let (p, s) = Rec::new();
    let r = lp.subprocess_exec(
        p,
        "/nonexistent/aioport-no-such-program",
        [] as [&str; 0],
        SubprocessOptions::default(),
    );
    assert!(matches!(r, Err(aioport_poll::Error::Spawn { .. })), "{r:?}");
    assert!(lp.is_empty());
    assert!(s.borrow().events.is_empty());
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd").count()
}

/// This process's children that still exist (zombies included), from every thread's
/// `/proc/self/task/<tid>/children`; `None` when the kernel does not provide the file.
fn children_of_self() -> Option<Vec<String>> {
    let mut all = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let path = task.ok()?.path().join("children");
        let list = std::fs::read_to_string(path).ok()?;
        all.extend(list.split_whitespace().map(str::to_owned));
    }
    Some(all)
}

#[test]
fn two_hundred_children_in_a_row_no_zombie_no_fd_leak() {
    let _serial = serial();
    let mut lp = new_loop();
    // Warm up lazily created descriptors (the loop's second epoll handle clone).
    let (_, s) = sh(&mut lp, "exit 0", SubprocessOptions::default());
    run_until_lost(&mut lp, &s);
    let before = open_fds();
    let mut pids = Vec::new();
    for i in 0..200 {
        let (p, s) = Rec::feeding(format!("{i}\n").into_bytes());
        let h =
            lp.subprocess_exec(p, "cat", [] as [&str; 0], SubprocessOptions::default()).unwrap();
        pids.push(lp.with(|ctx| ctx.pid(h)).unwrap().unwrap());
        run_until_lost(&mut lp, &s);
        assert_eq!(s.borrow().out, format!("{i}\n").as_bytes());
    }
    assert!(lp.is_empty());
    assert_eq!(open_fds(), before, "descriptors leaked");
    match children_of_self() {
        Some(children) => {
            let ours: Vec<_> =
                children.iter().filter(|c| pids.iter().any(|p| p.to_string() == **c)).collect();
            assert!(ours.is_empty(), "zombies: {ours:?}");
        }
        None => println!("SKIPPED (zombie check: /proc/self/task/*/children unavailable)"),
    }
}

#[test]
fn dropping_the_loop_kills_and_reaps_running_children() {
    let _serial = serial();
    let mut lp = new_loop();
    let (h, _s) = sh(&mut lp, "exec sleep 30", SubprocessOptions::default());
    let pid = lp.with(|ctx| ctx.pid(h)).unwrap().unwrap();
    drop(lp);
    // Reaped: no /proc entry is left for it (not even a zombie's).
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"));
    assert!(stat.is_err(), "child {pid} still exists: {stat:?}");
}
