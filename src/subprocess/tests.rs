//! Subprocess transports in the loop, over simulated children: each rule of spec §14
//! and DESIGN.md §5.

use std::cell::RefCell;
use std::io::ErrorKind;
use std::rc::Rc;
use std::time::Instant;

use crate::testing::{Event, ProcessSim};
use crate::*;

type Hook = Box<dyn FnMut(&mut Ctx<'_>) -> CallbackResult>;
type DataHook = Box<dyn FnMut(&mut Ctx<'_>, u32, &[u8]) -> CallbackResult>;

/// A protocol whose callbacks run the test's closures.
#[derive(Default)]
struct Hooks {
    made: Option<Hook>,
    data: Option<DataHook>,
    exited: Option<Hook>,
    lost: Option<Hook>,
}

impl SubprocessProtocol for Hooks {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.made.as_mut().map_or(Ok(()), |f| f(ctx))
    }
    fn pipe_data_received(&mut self, ctx: &mut Ctx<'_>, fd: u32, data: &[u8]) -> CallbackResult {
        self.data.as_mut().map_or(Ok(()), |f| f(ctx, fd, data))
    }
    fn process_exited(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.exited.as_mut().map_or(Ok(()), |f| f(ctx))
    }
    fn connection_lost(&mut self, ctx: &mut Ctx<'_>, _: Option<ConnectionError>) -> CallbackResult {
        self.lost.as_mut().map_or(Ok(()), |f| f(ctx))
    }
}

#[allow(clippy::disallowed_methods)] // test base time; the core itself never reads it
fn start() -> Instant {
    Instant::now()
}

fn sim() -> ProcessSim {
    ProcessSim::new(start())
}

const ALL: [bool; 3] = [true, true, true];
const OUT: [bool; 3] = [false, true, false];

fn data(fd: u32, d: &[u8]) -> Event {
    Event::PipeData(fd, d.to_vec())
}

#[test]
fn exit_after_pipe_eof() {
    let mut s = sim();
    let p = s.spawn(Hooks::default(), OUT);
    s.child_write(p, 1, b"out");
    s.child_close(p, 1);
    assert_eq!(s.events(p), [Event::Made, data(1, b"out"), Event::PipeLost(1, None)]);
    s.child_exit(p, 0);
    assert_eq!(s.events(p)[3..], [Event::Exited, Event::Lost(None)]);
    assert!(s.is_forgotten(p));
}

#[test]
fn exit_before_pipe_eof_grandchild_holds_stdout() {
    let mut s = sim();
    let code = Rc::new(RefCell::new(None));
    let seen = code.clone();
    let p = s.spawn(
        Hooks {
            exited: Some(Box::new(move |ctx| {
                *seen.borrow_mut() = ctx.returncode(ctx.subprocess())?;
                Ok(())
            })),
            ..Hooks::default()
        },
        OUT,
    );
    s.child_exit_leaving_grandchild(p, 3);
    // The exit status arrives at the exit, not when the pipe closes.
    assert_eq!(s.events(p), [Event::Made, Event::Exited]);
    assert_eq!(*code.borrow(), Some(3));
    assert_eq!(s.registry().subprocess(p).unwrap().returncode(), Some(3));
    assert!(s.child_write(p, 1, b"late"));
    s.grandchild_exit(p);
    assert_eq!(s.events(p)[2..], [data(1, b"late"), Event::PipeLost(1, None), Event::Lost(None)]);
}

#[test]
fn connection_made_first_even_when_the_child_writes_before_the_spawn_is_reported() {
    let mut s = sim();
    let p = s.spawn_pending(Hooks::default(), OUT);
    s.child_write(p, 1, b"early");
    s.child_close(p, 1);
    assert_eq!(s.events(p), []);
    s.report_spawned(p);
    assert_eq!(s.events(p), [Event::Made, data(1, b"early"), Event::PipeLost(1, None)]);
}

/// A protocol that records the return code `process_exited` sees.
fn returncode_probe() -> (Hooks, Rc<RefCell<Option<i32>>>) {
    let code = Rc::new(RefCell::new(None));
    let seen = code.clone();
    let hooks = Hooks {
        exited: Some(Box::new(move |ctx| {
            *seen.borrow_mut() = ctx.returncode(ctx.subprocess())?;
            Ok(())
        })),
        ..Hooks::default()
    };
    (hooks, code)
}

#[test]
fn kill_gives_minus_9_and_terminate_minus_15() {
    for (sig, code) in [(signal::SIGKILL, -9), (signal::SIGTERM, -15)] {
        let mut s = sim();
        let (hooks, seen) = returncode_probe();
        let p = s.spawn(hooks, ALL);
        s.enter(|ctx| if sig == signal::SIGKILL { ctx.kill(p) } else { ctx.terminate(p) }).unwrap();
        assert_eq!(s.signals(p), [sig]);
        assert_eq!(*seen.borrow(), Some(code));
        let ev = s.events(p);
        assert_eq!(ev.len(), 6, "made, exited, three pipes lost, lost: {ev:?}");
        assert!(ev.contains(&Event::Exited) && ev.last() == Some(&Event::Lost(None)), "{ev:?}");
        // The transport is gone after connection_lost.
        assert_eq!(s.registry().subprocess(p).err(), Some(DriverError::StaleHandle));
    }
}

#[test]
fn any_signal_the_child_dies_of_is_its_negative_returncode() {
    let mut s = sim();
    let (hooks, seen) = returncode_probe();
    let p = s.spawn(hooks, OUT);
    s.enter(|ctx| ctx.send_signal(p, signal::SIGINT)).unwrap();
    assert_eq!(*seen.borrow(), Some(-2));
    assert_eq!(s.events(p).last(), Some(&Event::Lost(None)));
}

#[test]
fn an_ignored_signal_changes_nothing() {
    let mut s = sim();
    let p = s.spawn(Hooks::default(), OUT);
    s.ignore_signals(p, true);
    s.enter(|ctx| ctx.terminate(p)).unwrap();
    assert_eq!(s.signals(p), [signal::SIGTERM]);
    assert_eq!(s.events(p), [Event::Made]);
    s.child_exit(p, 0);
    assert_eq!(s.events(p)[1..], [Event::Exited, Event::PipeLost(1, None), Event::Lost(None)]);
}

#[test]
fn signals_after_exit_are_ok_then_process_lookup_after_connection_lost() {
    let mut s = sim();
    let in_lost = Rc::new(RefCell::new(None));
    let seen = in_lost.clone();
    let p = s.spawn(
        Hooks {
            lost: Some(Box::new(move |ctx| {
                *seen.borrow_mut() = Some(ctx.kill(ctx.subprocess()));
                Ok(())
            })),
            ..Hooks::default()
        },
        OUT,
    );
    s.child_exit_leaving_grandchild(p, 0);
    assert_eq!(s.enter(|ctx| ctx.kill(p)), Ok(()));
    assert_eq!(s.enter(|ctx| ctx.terminate(p)), Ok(()));
    assert_eq!(s.enter(|ctx| ctx.send_signal(p, 10)), Ok(()));
    // Nothing reached the driver: a recycled pid cannot be hit.
    assert_eq!(s.signals(p), []);
    assert_eq!(s.signals_after_exit(), 0);
    s.grandchild_exit(p);
    assert_eq!(*in_lost.borrow(), Some(Err(SignalError::ProcessLookup)));
    assert_eq!(s.enter(|ctx| ctx.kill(p)), Err(SignalError::ProcessLookup));
    assert_eq!(s.signals_after_exit(), 0);
}

#[test]
fn close_kills_a_running_child_and_closes_its_pipes() {
    let mut s = sim();
    let p = s.spawn(Hooks::default(), ALL);
    s.child_write(p, 2, b"err");
    s.enter(|ctx| ctx.close(p)).unwrap();
    assert_eq!(s.signals(p), [signal::SIGKILL]);
    assert!((0..3).all(|fd| s.is_pipe_closed(p, fd)));
    let ev = s.events(p);
    assert_eq!(ev[..2], [Event::Made, data(2, b"err")]);
    assert_eq!(ev.last(), Some(&Event::Lost(None)));
    for fd in 0..3 {
        assert!(ev.contains(&Event::PipeLost(fd, None)), "{ev:?}");
    }
    assert_eq!(s.signals_after_exit(), 0);
}

#[test]
fn close_never_kills_a_finished_child() {
    let mut s = sim();
    let p = s.spawn(Hooks::default(), ALL);
    s.child_exit_leaving_grandchild(p, 0);
    s.enter(|ctx| {
        ctx.close(p)?;
        assert!(ctx.is_closing(p)?);
        ctx.close(p) // idempotent
    })
    .unwrap();
    assert_eq!(s.signals(p), []);
    assert_eq!(s.events(p).last(), Some(&Event::Lost(None)));
    assert_eq!(s.signals_after_exit(), 0);
}

#[test]
fn close_before_the_spawn_kills_the_child_once_spawned() {
    let mut s = sim();
    let p = s.spawn_pending(Hooks::default(), OUT);
    assert_eq!(s.enter(|ctx| ctx.kill(p)), Err(SignalError::NotSpawned));
    s.enter(|ctx| ctx.close(p)).unwrap();
    s.report_spawned(p);
    assert_eq!(s.signals(p), [signal::SIGKILL]);
    assert_eq!(
        s.events(p),
        [Event::Made, Event::PipeLost(1, None), Event::Exited, Event::Lost(None)]
    );
}

#[test]
fn stdin_back_pressure_pauses_resumes_and_write_eof_closes_stdin() {
    let mut s = sim();
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let sent = payload.clone();
    let p = s.spawn_pending(
        Hooks {
            made: Some(Box::new(move |ctx| {
                let stdin = ctx.stdin(ctx.subprocess())?.expect("piped");
                ctx.write_slice(stdin, &sent)?;
                assert!(ctx.is_writing_paused(stdin)?, "paused the moment write returns");
                ctx.write_eof(stdin)?;
                Ok(())
            })),
            ..Hooks::default()
        },
        [true, false, false],
    );
    s.set_stdin_capacity(p, 4096);
    s.report_spawned(p);
    assert_eq!(s.events(p), [Event::Made, Event::Pause]);
    let mut got = Vec::new();
    for _ in 0..1000 {
        let chunk = s.child_read_stdin(p, 3000);
        if chunk.is_empty() {
            break;
        }
        got.extend_from_slice(&chunk);
    }
    assert!(
        got == payload,
        "stdin delivered byte-exact ({} of {} bytes)",
        got.len(),
        payload.len()
    );
    assert!(s.child_stdin_eof(p));
    assert_eq!(s.events(p)[2..], [Event::Resume, Event::PipeLost(0, None)]);
    s.child_exit(p, 0);
    assert_eq!(s.events(p)[4..], [Event::Exited, Event::Lost(None)]);
}

#[test]
fn writing_to_a_child_that_exited_is_a_broken_pipe() {
    let mut s = sim();
    let p = s.spawn_pending(Hooks::default(), [true, false, false]);
    s.set_stdin_capacity(p, 10);
    s.report_spawned(p);
    let stdin = s.pipes(p).stdin.unwrap();
    s.enter(|ctx| ctx.write_slice(stdin, b"more than ten bytes")).unwrap();
    s.child_exit(p, 1);
    let ev = s.events(p);
    assert!(ev.contains(&Event::PipeLost(0, Some(ErrorKind::BrokenPipe.into()))), "{ev:?}");
    assert_eq!(ev.last(), Some(&Event::Lost(None)));
    // Once the pipe is gone, writes fail with a typed error.
    assert!(s.enter(|ctx| ctx.write_slice(stdin, b"x")).is_err());
}

#[test]
fn stdout_and_stderr_pause_independently() {
    let mut s = sim();
    let p = s.spawn(Hooks::default(), ALL);
    let pipes = s.pipes(p);
    let (out, err) = (pipes.stdout.unwrap(), pipes.stderr.unwrap());
    s.enter(|ctx| ctx.pause_reading(out)).unwrap();
    s.child_write(p, 1, b"o");
    s.child_write(p, 2, b"e");
    assert_eq!(s.events(p), [Event::Made, data(2, b"e")]);
    s.enter(|ctx| {
        ctx.pause_reading(err)?;
        ctx.resume_reading(out)
    })
    .unwrap();
    s.child_write(p, 2, b"E");
    assert_eq!(s.events(p)[2..], [data(1, b"o")]);
    s.enter(|ctx| ctx.resume_reading(err)).unwrap();
    assert_eq!(s.events(p)[3..], [data(2, b"E")]);
}

#[test]
fn pipe_handles_none_when_not_piped() {
    let mut s = sim();
    let p = s.spawn(Hooks::default(), [true, true, false]);
    let pipes = s.pipes(p);
    s.enter(|ctx| {
        assert_eq!(ctx.stdin(p)?, pipes.stdin);
        assert_eq!(ctx.stdout(p)?, pipes.stdout);
        assert_eq!(ctx.stderr(p)?, None);
        assert!(ctx.pid(p)?.is_some());
        assert_eq!(ctx.returncode(p)?, None);
        Ok::<_, HandleError>(())
    })
    .unwrap();
}

#[test]
fn a_pipe_can_be_closed_alone() {
    let mut s = sim();
    let p = s.spawn(Hooks::default(), ALL);
    let stdout = s.pipes(p).stdout.unwrap();
    s.enter(|ctx| ctx.close(stdout)).unwrap();
    assert_eq!(s.events(p), [Event::Made, Event::PipeLost(1, None)]);
    // asyncio: closing stdout then the child writes: EPIPE for the child.
    assert!(!s.child_write(p, 1, b"x"));
    s.child_exit(p, 0);
    assert_eq!(s.events(p).last(), Some(&Event::Lost(None)));
}

#[test]
fn pipes_cannot_get_another_protocol() {
    struct Plain;
    impl Protocol for Plain {}
    let mut s = sim();
    let p = s.spawn(Hooks::default(), OUT);
    let stdout = s.pipes(p).stdout.unwrap();
    let r = s.enter(|ctx| ctx.set_protocol(stdout, Box::new(Plain)));
    assert!(matches!(r, Err(HandleError::WrongKind { .. })), "{r:?}");
}

#[test]
fn callback_errors_are_reported_not_fatal() {
    let mut s = sim();
    let p = s.spawn(
        Hooks {
            data: Some(Box::new(|_, _, _| Err(ProtocolError::msg("bad line")))),
            ..Hooks::default()
        },
        OUT,
    );
    s.child_write(p, 1, b"a");
    s.child_write(p, 1, b"b");
    assert_eq!(s.events(p), [Event::Made, data(1, b"a"), data(1, b"b")]);
    assert_eq!(s.errors().len(), 2);
    assert!(matches!(
        &s.errors()[0],
        LoopError::CallbackFailed { callback: "pipe_data_received", handle, .. } if *handle == Some(p.handle())
    ));
    assert_eq!(s.signals(p), []);
}

#[test]
fn a_panicking_protocol_is_dropped_and_its_child_killed() {
    let mut s = sim();
    let p =
        s.spawn(Hooks { data: Some(Box::new(|_, _, _| panic!("boom"))), ..Hooks::default() }, ALL);
    s.child_write(p, 1, b"a");
    assert_eq!(s.events(p), [Event::Made, data(1, b"a")]);
    assert_eq!(s.signals(p), [signal::SIGKILL]);
    assert!(matches!(&s.errors()[0], LoopError::Panicked { .. }));
    // The slot still ends: the child is reaped and the driver told to forget it.
    assert!(s.is_forgotten(p));
    assert!(s.registry().is_empty());
}

#[test]
fn driver_misuse_is_a_typed_error() {
    let now = start();
    let mut reg = Registry::new(now);
    struct NoIo;
    impl Io for NoIo {
        fn try_send(&mut self, _: Handle, _: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
            Err(ErrorKind::WouldBlock.into())
        }
        fn try_recv(&mut self, _: Handle, _: &mut [u8]) -> std::io::Result<usize> {
            Err(ErrorKind::WouldBlock.into())
        }
        fn shutdown_write(&mut self, _: Handle) -> std::io::Result<()> {
            Ok(())
        }
        fn close(&mut self, _: Handle) {}
    }
    let io = &mut NoIo;
    let pipes = reg.insert_subprocess(Box::new(Hooks::default()), OUT, Extra::default());
    let p = pipes.process;
    let out = pipes.stdout.unwrap().handle();
    assert!(matches!(
        reg.handle_exited(p, ExitStatus::Exited(0), now, io),
        Err(DriverError::ProcessEvent { .. })
    ));
    assert_eq!(reg.interest(out), Ok(Interest::default()), "no read before the spawn");
    reg.handle_spawned(p, 42, now, io).unwrap();
    assert_eq!(reg.interest(out), Ok(Interest { read: true, write: false }));
    assert!(matches!(reg.handle_spawned(p, 42, now, io), Err(DriverError::ProcessEvent { .. })));
    assert!(matches!(reg.handle_spawn_failed(p), Err(DriverError::ProcessEvent { .. })));
    assert!(matches!(reg.on_writable(p.handle(), now, io), Err(DriverError::WrongKind { .. })));
    reg.handle_exited(p, ExitStatus::Exited(0), now, io).unwrap();
    assert!(matches!(
        reg.handle_exited(p, ExitStatus::Exited(0), now, io),
        Err(DriverError::ProcessEvent { .. })
    ));
    assert_eq!(reg.subprocess(p).unwrap().pid(), Some(42));
    // The default Io::send_signal is Unsupported: a typed error, never a panic.
    let q = reg.insert_subprocess(Box::new(Hooks::default()), [false; 3], Extra::default());
    reg.handle_spawned(q.process, 43, now, io).unwrap();
    let r = reg.enter(now, io, |ctx| ctx.kill(q.process));
    assert!(matches!(r, Err(SignalError::Io(_))), "{r:?}");
}

#[test]
fn a_failed_spawn_removes_the_process_and_its_pipes_silently() {
    let now = start();
    let mut reg = Registry::new(now);
    let pipes = reg.insert_subprocess(Box::new(Hooks::default()), ALL, Extra::default());
    assert_eq!(reg.len(), 4);
    reg.handle_spawn_failed(pipes.process).unwrap();
    assert!(reg.is_empty());
    assert_eq!(reg.subprocess(pipes.process).err(), Some(DriverError::StaleHandle));
}

/// Logs the flow and pipe callbacks it gets.
struct Logged(&'static str, Rc<RefCell<Vec<String>>>);

impl SubprocessProtocol for Logged {
    fn pause_writing(&mut self, _: &mut Ctx<'_>) -> CallbackResult {
        self.1.borrow_mut().push(format!("{} pause", self.0));
        Ok(())
    }
    fn pipe_data_received(&mut self, _: &mut Ctx<'_>, fd: u32, d: &[u8]) -> CallbackResult {
        self.1.borrow_mut().push(format!("{} {fd}:{}", self.0, String::from_utf8_lossy(d)));
        Ok(())
    }
}

#[test]
fn a_replaced_protocol_gets_the_pipes_callbacks() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let mut s = sim();
    let p = s.spawn(Logged("old", log.clone()), ALL);
    s.child_write(p, 1, b"a");
    let new = Box::new(Logged("new", log.clone()));
    s.enter(|ctx| ctx.set_subprocess_protocol(p, new)).unwrap();
    s.child_write(p, 2, b"b");
    assert_eq!(*log.borrow(), ["old 1:a", "new 2:b"]);
}

#[test]
fn a_replaced_protocol_hears_pause_writing_first_when_stdin_is_paused_gh_109051() {
    /// stdin refuses every byte.
    struct Stuck;
    impl Io for Stuck {
        fn try_send(&mut self, _: Handle, _: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
            Err(ErrorKind::WouldBlock.into())
        }
        fn try_recv(&mut self, _: Handle, _: &mut [u8]) -> std::io::Result<usize> {
            Err(ErrorKind::WouldBlock.into())
        }
        fn shutdown_write(&mut self, _: Handle) -> std::io::Result<()> {
            Ok(())
        }
        fn close(&mut self, _: Handle) {}
    }
    let now = start();
    let log = Rc::new(RefCell::new(Vec::new()));
    let mut reg = Registry::new(now);
    let old = Box::new(Logged("old", log.clone()));
    let pipes = reg.insert_subprocess(old, [true, false, false], Extra::default());
    reg.handle_spawned(pipes.process, 7, now, &mut Stuck).unwrap();
    let stdin = pipes.stdin.unwrap();
    reg.enter(now, &mut Stuck, |ctx| ctx.write_slice(stdin, &[0; 100_000])).unwrap();
    let new = Box::new(Logged("new", log.clone()));
    reg.enter(now, &mut Stuck, |ctx| ctx.set_subprocess_protocol(pipes.process, new)).unwrap();
    assert_eq!(*log.borrow(), ["old pause", "new pause"]);
}
