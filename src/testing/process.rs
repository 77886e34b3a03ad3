//! `ProcessSim`: subprocess transports over simulated children — deterministic tests of
//! a [`SubprocessProtocol`] without spawning anything.
//!
//! Each simulated child has OS-like pipes: stdin with a bounded capacity (so the
//! transport's stdin fills, pauses and resumes), stdout and stderr that hold what the
//! child wrote until the loop reads it. The test plays the child — writes, closes its
//! ends, reads stdin, exits, or dies of a signal the protocol sent — and reads back the
//! transcript of callbacks. The loop's invariants, including the subprocess ordering
//! rules, are checked after every step.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, ErrorKind, IoSlice};
use std::rc::Rc;
use std::time::Instant;

use super::transcript::{Checker, Event, Recorder, SharedRecorder, record};
use crate::{
    Ctx, ExitStatus, Extra, Handle, Io, LoopError, Registry, SubprocessHandle, SubprocessPipes,
    SubprocessProtocol,
};

/// The default capacity of a simulated stdin pipe (Linux's default pipe size).
const STDIN_CAPACITY: usize = 64 * 1024;

/// At most this many readiness rounds per step: the harness catches a livelock instead of
/// spinning.
const MAX_ROUNDS: usize = 100_000;

/// `ESRCH`, what a signal to a dead child answers.
const ESRCH: i32 = 3;

/// One simulated child and the OS state of its pipes.
#[derive(Debug)]
struct Child {
    pipes: SubprocessPipes,
    pid: u32,
    /// Bytes in the stdin pipe the child has not read.
    stdin: VecDeque<u8>,
    stdin_capacity: usize,
    /// Everything the child read from stdin.
    stdin_read: Vec<u8>,
    /// The child's read end of stdin is closed (it closed it, or exited).
    stdin_reader_closed: bool,
    /// Bytes the child wrote to fd 1 / fd 2 that the loop has not read.
    out: [VecDeque<u8>; 3],
    /// The child's write end of fd 1 / fd 2 is closed: EOF after the data.
    out_closed: [bool; 3],
    /// The loop closed its end of fd 0 / 1 / 2 (`Io::close`).
    parent_closed: [bool; 3],
    /// A grandchild keeps the child's pipe ends open after the child exits.
    grandchild: bool,
    ignore_signals: bool,
    /// A signal that kills the child at the next step.
    dying: Option<i32>,
    status: Option<ExitStatus>,
    exit_reported: bool,
    signals: Vec<i32>,
    /// `Io::close` for the process: the loop is done with it.
    forgotten: bool,
}

impl Child {
    fn fd_of(&self, h: Handle) -> Option<usize> {
        let p = &self.pipes;
        [p.stdin.map(Into::into), p.stdout.map(Into::into), p.stderr.map(Into::into)]
            .iter()
            .position(|&x| x == Some(h))
    }

    /// The child's side of every pipe closes (it exited), unless a grandchild holds them.
    fn close_ends(&mut self) {
        self.stdin_reader_closed = true;
        self.stdin.clear();
        self.out_closed = [true; 3];
    }
}

/// The simulated OS: every child, answering the loop's `Io` calls.
#[derive(Debug, Default)]
struct Children {
    children: Vec<Child>,
    /// Signals the loop sent to a child whose exit was already reported (must stay 0).
    signals_after_exit: usize,
}

impl Children {
    fn find(&mut self, h: Handle) -> Option<(&mut Child, Option<usize>)> {
        self.children.iter_mut().find_map(|c| {
            if c.pipes.process.handle() == h {
                Some((c, None))
            } else {
                c.fd_of(h).map(|fd| (c, Some(fd)))
            }
        })
    }
}

impl Io for Children {
    fn try_send(&mut self, h: Handle, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let Some((c, Some(0))) = self.find(h) else { return Err(ErrorKind::Unsupported.into()) };
        if c.stdin_reader_closed {
            return Err(ErrorKind::BrokenPipe.into());
        }
        let room = c.stdin_capacity - c.stdin.len();
        if room == 0 {
            return Err(ErrorKind::WouldBlock.into());
        }
        let mut n = 0;
        for b in bufs {
            let take = (room - n).min(b.len());
            c.stdin.extend(&b[..take]);
            n += take;
        }
        Ok(n)
    }

    fn try_recv(&mut self, h: Handle, buf: &mut [u8]) -> io::Result<usize> {
        let Some((c, Some(fd @ (1 | 2)))) = self.find(h) else {
            return Err(ErrorKind::Unsupported.into());
        };
        let out = &mut c.out[fd];
        if out.is_empty() {
            return if c.out_closed[fd] { Ok(0) } else { Err(ErrorKind::WouldBlock.into()) };
        }
        let n = buf.len().min(out.len());
        for (dst, src) in buf.iter_mut().zip(out.drain(..n)) {
            *dst = src;
        }
        Ok(n)
    }

    fn shutdown_write(&mut self, _: Handle) -> io::Result<()> {
        Ok(())
    }

    fn close(&mut self, h: Handle) {
        match self.find(h) {
            Some((c, Some(fd))) => c.parent_closed[fd] = true,
            Some((c, None)) => c.forgotten = true,
            None => {}
        }
    }

    fn send_signal(&mut self, h: Handle, sig: i32) -> io::Result<()> {
        let Some((c, None)) = self.find(h) else { return Err(ErrorKind::Unsupported.into()) };
        if c.exit_reported {
            self.signals_after_exit += 1;
            return Err(io::Error::from_raw_os_error(ESRCH));
        }
        if c.status.is_some() {
            return Err(io::Error::from_raw_os_error(ESRCH));
        }
        c.signals.push(sig);
        if !c.ignore_signals && sig != 0 {
            c.dying.get_or_insert(sig);
        }
        Ok(())
    }
}

/// Subprocess transports over simulated children, in one loop.
///
/// ```
/// use std::time::Instant;
/// use aioport::{CallbackResult, Ctx, SubprocessProtocol};
/// use aioport::testing::{Event, ProcessSim};
///
/// /// Writes a line to the child's stdin and closes it.
/// struct Feed;
/// impl SubprocessProtocol for Feed {
///     fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
///         let stdin = ctx.stdin(ctx.subprocess())?.expect("piped");
///         ctx.write_slice(stdin, b"hello\n")?;
///         ctx.write_eof(stdin)?;
///         Ok(())
///     }
/// }
///
/// let mut sim = ProcessSim::new(Instant::now());
/// let p = sim.spawn(Feed, [true, true, false]);
/// assert_eq!(sim.child_read_stdin(p, 100), b"hello\n");   // the child plays `cat`
/// sim.child_write(p, 1, b"hello\n");
/// sim.child_exit(p, 0);
/// assert_eq!(sim.events(p), [
///     Event::Made,
///     Event::PipeLost(0, None),
///     Event::PipeData(1, b"hello\n".to_vec()),
///     Event::Exited,
///     Event::PipeLost(1, None),
///     Event::Lost(None),
/// ]);
/// assert!(sim.is_forgotten(p));
/// ```
#[derive(Debug)]
pub struct ProcessSim {
    reg: Registry,
    io: Children,
    now: Instant,
    rec: SharedRecorder,
    checker: Checker,
    errors: Vec<LoopError>,
    next_pid: u32,
}

impl ProcessSim {
    /// An empty loop at virtual time `now`.
    pub fn new(now: Instant) -> Self {
        let mut reg = Registry::new(now);
        let rec = Rc::new(RefCell::new(Recorder { keep_data: true, ..Recorder::default() }));
        record(&mut reg, &rec);
        ProcessSim {
            reg,
            io: Children::default(),
            now,
            rec,
            checker: Checker::default(),
            errors: Vec::new(),
            next_pid: 1000,
        }
    }

    /// Spawns a simulated child running `protocol`; `piped[fd]` says which of stdin,
    /// stdout, stderr are pipes. `connection_made` is delivered.
    pub fn spawn(
        &mut self,
        protocol: impl SubprocessProtocol + 'static,
        piped: [bool; 3],
    ) -> SubprocessHandle {
        let h = self.spawn_pending(protocol, piped);
        self.report_spawned(h);
        h
    }

    /// Like [`spawn`](Self::spawn), but the spawn is not reported yet: nothing is
    /// delivered until [`report_spawned`](Self::report_spawned).
    pub fn spawn_pending(
        &mut self,
        protocol: impl SubprocessProtocol + 'static,
        piped: [bool; 3],
    ) -> SubprocessHandle {
        let pipes = self.reg.insert_subprocess(Box::new(protocol), piped, Extra::default());
        self.next_pid += 1;
        self.io.children.push(Child {
            pipes,
            pid: self.next_pid,
            stdin: VecDeque::new(),
            stdin_capacity: STDIN_CAPACITY,
            stdin_read: Vec::new(),
            stdin_reader_closed: false,
            out: Default::default(),
            out_closed: [false; 3],
            parent_closed: [false; 3],
            grandchild: false,
            ignore_signals: false,
            dying: None,
            status: None,
            exit_reported: false,
            signals: Vec::new(),
            forgotten: false,
        });
        pipes.process
    }

    /// The driver reports the spawn of `h`.
    ///
    /// # Panics
    ///
    /// If the registry refuses it (reported twice).
    pub fn report_spawned(&mut self, h: SubprocessHandle) {
        let pid = self.child(h).pid;
        self.reg.handle_spawned(h, pid, self.now, &mut self.io).expect("spawn reported once");
        self.run();
    }

    /// The pipes of `h`, as the driver knows them.
    pub fn pipes(&mut self, h: SubprocessHandle) -> SubprocessPipes {
        self.child(h).pipes
    }

    fn child(&mut self, h: SubprocessHandle) -> &mut Child {
        self.io
            .children
            .iter_mut()
            .find(|c| c.pipes.process == h)
            .expect("a child spawned by this ProcessSim")
    }

    // ----------------------------------------------------------------------------------
    // The child's actions
    // ----------------------------------------------------------------------------------

    /// Sets the capacity of `h`'s stdin pipe (default 64 KiB).
    pub fn set_stdin_capacity(&mut self, h: SubprocessHandle, bytes: usize) {
        self.child(h).stdin_capacity = bytes;
    }

    /// The child ignores (true) or dies of (false, the default) the signals it receives.
    pub fn ignore_signals(&mut self, h: SubprocessHandle, ignore: bool) {
        self.child(h).ignore_signals = ignore;
    }

    /// The child writes `data` to fd 1 or 2. False when that fd is not a pipe to the
    /// loop, or the loop closed its end (the child would get `EPIPE`), or the child is
    /// gone; the loop receives nothing then.
    pub fn child_write(&mut self, h: SubprocessHandle, fd: u32, data: &[u8]) -> bool {
        let c = self.child(h);
        let fd = fd as usize;
        assert!(fd == 1 || fd == 2, "a child writes to fd 1 or 2");
        let piped = if fd == 1 { c.pipes.stdout.is_some() } else { c.pipes.stderr.is_some() };
        if !piped || c.parent_closed[fd] || c.out_closed[fd] || c.status.is_some() && !c.grandchild
        {
            return false;
        }
        c.out[fd].extend(data);
        self.run();
        true
    }

    /// The child closes its end of fd 0, 1 or 2.
    pub fn child_close(&mut self, h: SubprocessHandle, fd: u32) {
        let c = self.child(h);
        match fd {
            0 => {
                c.stdin_reader_closed = true;
                c.stdin.clear();
            }
            1 | 2 => c.out_closed[fd as usize] = true,
            _ => panic!("fd 0, 1 or 2"),
        }
        self.run();
    }

    /// The child reads up to `max` bytes of its stdin.
    pub fn child_read_stdin(&mut self, h: SubprocessHandle, max: usize) -> Vec<u8> {
        let c = self.child(h);
        let n = max.min(c.stdin.len());
        let data: Vec<u8> = c.stdin.drain(..n).collect();
        c.stdin_read.extend_from_slice(&data);
        self.run();
        data
    }

    /// True once the loop closed its end of `h`'s stdin and the child read everything:
    /// the child sees EOF.
    pub fn child_stdin_eof(&mut self, h: SubprocessHandle) -> bool {
        let c = self.child(h);
        c.parent_closed[0] && c.stdin.is_empty()
    }

    /// Everything the child read from stdin so far.
    pub fn stdin_received(&mut self, h: SubprocessHandle) -> Vec<u8> {
        self.child(h).stdin_read.clone()
    }

    /// The child exits with `code`, closing its pipe ends; the driver reaps it and
    /// reports the exit.
    pub fn child_exit(&mut self, h: SubprocessHandle, code: i32) {
        self.exit(h, ExitStatus::Exited(code), false);
    }

    /// The child exits with `code` while a grandchild keeps its pipe ends open (until
    /// [`grandchild_exit`](Self::grandchild_exit)).
    pub fn child_exit_leaving_grandchild(&mut self, h: SubprocessHandle, code: i32) {
        self.exit(h, ExitStatus::Exited(code), true);
    }

    /// The grandchild holding `h`'s pipes exits: they close.
    pub fn grandchild_exit(&mut self, h: SubprocessHandle) {
        let c = self.child(h);
        c.grandchild = false;
        c.close_ends();
        self.run();
    }

    fn exit(&mut self, h: SubprocessHandle, status: ExitStatus, grandchild: bool) {
        let c = self.child(h);
        if c.status.is_some() {
            return;
        }
        c.status = Some(status);
        c.grandchild = grandchild;
        if !grandchild {
            c.close_ends();
        }
        self.run();
    }

    /// How the child ended, once it did (what the driver reports).
    pub fn exit_status(&mut self, h: SubprocessHandle) -> Option<ExitStatus> {
        self.child(h).status
    }

    /// The signals the child received, in order.
    pub fn signals(&mut self, h: SubprocessHandle) -> Vec<i32> {
        self.child(h).signals.clone()
    }

    /// Signals the loop passed to the driver after a child's exit was reported: the core
    /// promises none (a recycled pid must not be hit).
    pub fn signals_after_exit(&self) -> usize {
        self.io.signals_after_exit
    }

    /// True once the loop called `Io::close` for the process: its `connection_lost` was
    /// delivered.
    pub fn is_forgotten(&mut self, h: SubprocessHandle) -> bool {
        self.child(h).forgotten
    }

    /// True when the loop closed its end of `h`'s pipe `fd`.
    pub fn is_pipe_closed(&mut self, h: SubprocessHandle, fd: u32) -> bool {
        self.child(h).parent_closed[fd as usize]
    }

    // ----------------------------------------------------------------------------------
    // The loop's side
    // ----------------------------------------------------------------------------------

    /// Runs user code with a [`Ctx`] (as [`Registry::enter`]), then serves the pipes.
    pub fn enter<R>(&mut self, f: impl FnOnce(&mut Ctx<'_>) -> R) -> R {
        let r = self.reg.enter(self.now, &mut self.io, f);
        self.run();
        r
    }

    /// The loop, for queries ([`Registry::subprocess`], …).
    pub fn registry(&self) -> &Registry {
        &self.reg
    }

    /// The callbacks `h`'s protocol received so far (pipe callbacks included).
    pub fn events(&self, h: SubprocessHandle) -> Vec<Event> {
        let rec = self.rec.borrow();
        rec.log.iter().filter(|(x, _)| *x == h.handle()).map(|(_, e)| e.clone()).collect()
    }

    /// Errors the loop reported (callback failures, panics), oldest first.
    pub fn errors(&self) -> &[LoopError] {
        &self.errors
    }

    /// Serves every child until nothing moves: reports deaths by signal and exits, then
    /// pipe readiness, as a poll loop would.
    ///
    /// # Panics
    ///
    /// On a broken loop invariant (the transcript checker), a driver error, or a
    /// livelock (more than 100,000 rounds).
    pub fn run(&mut self) {
        for _ in 0..MAX_ROUNDS {
            if !self.round() {
                self.check();
                return;
            }
            self.check();
        }
        panic!("ProcessSim: no quiescence after {MAX_ROUNDS} rounds (livelock)");
    }

    /// One pass over every child; true if anything was reported to the loop.
    fn round(&mut self) -> bool {
        let mut moved = false;
        for i in 0..self.io.children.len() {
            let c = &mut self.io.children[i];
            if let Some(sig) = c.dying.take()
                && c.status.is_none()
            {
                c.status = Some(ExitStatus::Signaled(sig));
                c.close_ends();
            }
            let c = &self.io.children[i];
            let (process, pipes) = (c.pipes.process, c.pipes);
            if let (Some(status), false) = (c.status, c.exit_reported)
                && self.reg.subprocess(process).is_ok_and(|t| t.pid().is_some())
            {
                self.io.children[i].exit_reported = true;
                self.reg
                    .handle_exited(process, status, self.now, &mut self.io)
                    .expect("exit reported once");
                moved = true;
            }
            let fds: [Option<Handle>; 3] = [
                pipes.stdin.map(Into::into),
                pipes.stdout.map(Into::into),
                pipes.stderr.map(Into::into),
            ];
            for (fd, h) in fds.into_iter().enumerate() {
                let Some(h) = h else { continue };
                let c = &self.io.children[i];
                if c.parent_closed[fd] {
                    continue;
                }
                let Ok(interest) = self.reg.interest(h) else { continue };
                let (readable, writable) = if fd == 0 {
                    (c.stdin_reader_closed, c.stdin.len() < c.stdin_capacity)
                } else {
                    (!c.out[fd].is_empty() || c.out_closed[fd], false)
                };
                if readable && interest.read {
                    self.reg.on_readable(h, self.now, &mut self.io).expect("pipe readable");
                    moved = true;
                } else if writable && interest.write {
                    let before = self.reg.transport(h).map(|t| t.write_buffer_size());
                    self.reg.on_writable(h, self.now, &mut self.io).expect("pipe writable");
                    let after = self.reg.transport(h).map(|t| t.write_buffer_size());
                    moved |= before != after;
                }
            }
        }
        while self.reg.poll_io().is_some() {}
        while let Some(e) = self.reg.poll_error() {
            self.errors.push(e);
        }
        self.reg.dispatch(self.now, &mut self.io);
        moved
    }

    fn check(&mut self) {
        let rec = self.rec.borrow();
        if let Err((h, m)) = self.checker.check(&rec, |_, _| Ok(())) {
            panic!("invariant violated on {h:?}: {m}");
        }
    }
}
