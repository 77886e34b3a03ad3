//! One subprocess transport against the reference model
//! ([`SubprocessModel`](crate::testing::model::SubprocessModel)): the runner behind
//! `subprocess_ops` and the "implementation == model" property in
//! `tests/properties_subprocess.rs`.
//!
//! The world is the model's ([`SubprocessOp`]): one child in a [`Registry`] whose protocol
//! records callbacks, over a scripted `Io` that plays the child's pipes (stdin accepts a
//! granted number of bytes, then `WouldBlock`, or `BrokenPipe` once the child closed its
//! reading end; stdout and stderr hold what the child wrote, then its EOF) and records
//! the signals it was asked to send. Every byte carries its position in its stream, checked
//! where it arrives. After each operation the runner compares, per channel, the callbacks
//! with the model's (see the model's docs for why per channel), checks how the channels
//! relate (`connection_made` first, `connection_lost` last and once), then the write and
//! signal results, the signals the driver was asked to send (never one after the exit was
//! reported), the return code, the user-face queries, interest, `Io::close` per pipe, and
//! the bytes each side moved.

use std::cell::RefCell;
use std::io::{self, ErrorKind, IoSlice};
use std::rc::Rc;
use std::time::Instant;

use super::decode::{Input, Op, OpSpec, limit, op_name, size};
use crate::testing::model::{SubprocessEvent, SubprocessModel, SubprocessOp};
use crate::{
    CallbackResult, ConnectionError, Ctx, ExitStatus, Extra, Handle, HandleError, Io, Registry,
    SignalError, SubprocessPipes, SubprocessProtocol, WriteError,
};

/// The opcode table of `subprocess_ops` (see the [module docs](super) for the format).
pub const SUBPROCESS_OPS: &[OpSpec] = &[
    OpSpec { code: 0x00, name: "spawned", since: 1 },
    OpSpec { code: 0x01, name: "write_eof", since: 1 },
    OpSpec { code: 0x02, name: "close", since: 1 },
    OpSpec { code: 0x03, name: "kill", since: 1 },
    OpSpec { code: 0x04, name: "terminate", since: 1 },
    OpSpec { code: 0x05, name: "writable", since: 1 },
    OpSpec { code: 0x06, name: "stdin_broken", since: 1 },
    OpSpec { code: 0x07, name: "stdin_readable", since: 1 },
    OpSpec { code: 0x08, name: "abort", since: 1 },
    OpSpec { code: 0x09, name: "set_protocol", since: 1 },
    OpSpec { code: 0x40, name: "exit_code", since: 1 },
    OpSpec { code: 0x41, name: "exit_signal", since: 1 },
    OpSpec { code: 0x42, name: "send_signal", since: 1 },
    OpSpec { code: 0x43, name: "close_pipe", since: 1 },
    OpSpec { code: 0x44, name: "pause_reading", since: 1 },
    OpSpec { code: 0x45, name: "resume_reading", since: 1 },
    OpSpec { code: 0x46, name: "child_eof", since: 1 },
    OpSpec { code: 0x47, name: "readable", since: 1 },
    OpSpec { code: 0x80, name: "write", since: 1 },
    OpSpec { code: 0x81, name: "grant", since: 1 },
    OpSpec { code: 0x82, name: "child_write_stdout", since: 1 },
    OpSpec { code: 0x83, name: "child_write_stderr", since: 1 },
    OpSpec { code: 0xC0, name: "set_write_buffer_limits", since: 1 },
];

/// The pid the driver reports.
const PID: u32 = 4242;

/// Payload bytes one input may write and have the child write, in all.
const BYTE_BUDGET: usize = 4 << 20;

/// The byte at position `pos` of stream `fd`: a cut, repeated or swapped chunk shows.
fn byte_at(fd: u32, pos: u64) -> u8 {
    ((pos * 7 + u64::from(fd) * 13) % 251) as u8
}

/// The scripted child's side of the pipes and the signals the loop sent.
#[derive(Debug, Default)]
struct ChildIo {
    pipes: [Option<Handle>; 3],
    process: Option<Handle>,
    /// Stdin: bytes the child will still accept; its reading end is closed.
    budget: usize,
    broken: bool,
    stdin_taken: u64,
    /// Stdout, stderr: bytes waiting, the next byte's position, EOF.
    pending: [usize; 3],
    read_pos: [u64; 3],
    eof: [bool; 3],
    closes: [u32; 4],
    signals: Vec<i32>,
    exit_reported: bool,
    signals_after_exit: usize,
    violations: Vec<String>,
}

impl ChildIo {
    fn fd_of(&self, h: Handle) -> Option<usize> {
        self.pipes.iter().position(|&p| p == Some(h))
    }
}

impl Io for ChildIo {
    fn try_send(&mut self, h: Handle, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if self.fd_of(h) != Some(0) {
            self.violations.push(format!("Io::try_send on {h:?}, not stdin"));
            return Err(ErrorKind::Unsupported.into());
        }
        if self.broken {
            return Err(ErrorKind::BrokenPipe.into());
        }
        if self.budget == 0 {
            return Err(ErrorKind::WouldBlock.into());
        }
        let mut n = 0;
        for &b in bufs.iter().flat_map(|b| b.iter()) {
            if n == self.budget {
                break;
            }
            if b != byte_at(0, self.stdin_taken) {
                self.violations.push(format!("stdin byte {} is wrong", self.stdin_taken));
            }
            self.stdin_taken += 1;
            n += 1;
        }
        self.budget -= n;
        Ok(n)
    }

    fn try_recv(&mut self, h: Handle, buf: &mut [u8]) -> io::Result<usize> {
        let Some(fd @ (1 | 2)) = self.fd_of(h) else {
            self.violations.push(format!("Io::try_recv on {h:?}, not stdout or stderr"));
            return Err(ErrorKind::Unsupported.into());
        };
        if self.pending[fd] == 0 {
            return if self.eof[fd] { Ok(0) } else { Err(ErrorKind::WouldBlock.into()) };
        }
        let n = buf.len().min(self.pending[fd]);
        for b in &mut buf[..n] {
            *b = byte_at(fd as u32, self.read_pos[fd]);
            self.read_pos[fd] += 1;
        }
        self.pending[fd] -= n;
        Ok(n)
    }

    fn shutdown_write(&mut self, h: Handle) -> io::Result<()> {
        self.violations.push(format!("Io::shutdown_write on {h:?}: a write pipe closes"));
        Ok(())
    }

    fn close(&mut self, h: Handle) {
        match self.fd_of(h) {
            Some(fd) => self.closes[fd] += 1,
            None if Some(h) == self.process => self.closes[3] += 1,
            None => self.violations.push(format!("Io::close on unknown {h:?}")),
        }
    }

    fn send_signal(&mut self, h: Handle, sig: i32) -> io::Result<()> {
        if Some(h) != self.process {
            self.violations.push(format!("Io::send_signal on {h:?}, not the process"));
        }
        if self.exit_reported {
            self.signals_after_exit += 1;
        }
        self.signals.push(sig);
        Ok(())
    }
}

/// Records callbacks as the model states them; checks every byte of stdout and stderr.
struct Recorder {
    log: Rc<RefCell<Vec<SubprocessEvent>>>,
    /// The position of the next byte per fd, shared by every recorder of a run.
    next: Rc<RefCell<[u64; 3]>>,
}

impl Recorder {
    fn push(&self, e: SubprocessEvent) -> CallbackResult {
        self.log.borrow_mut().push(e);
        Ok(())
    }
}

impl SubprocessProtocol for Recorder {
    fn connection_made(&mut self, _: &mut Ctx<'_>) -> CallbackResult {
        self.push(SubprocessEvent::Made)
    }
    fn pipe_data_received(&mut self, _: &mut Ctx<'_>, fd: u32, data: &[u8]) -> CallbackResult {
        // A failed assertion in a callback reaches the loop's error queue, which the
        // runner checks after every step.
        let mut next = self.next.borrow_mut();
        let pos = &mut next[fd as usize];
        for (i, &b) in data.iter().enumerate() {
            assert_eq!(b, byte_at(fd, *pos + i as u64), "fd {fd}: byte {} is wrong", *pos);
        }
        *pos += data.len() as u64;
        self.push(SubprocessEvent::Data(fd, data.len()))
    }
    fn pipe_connection_lost(
        &mut self,
        _: &mut Ctx<'_>,
        fd: u32,
        err: Option<ConnectionError>,
    ) -> CallbackResult {
        let kind = err.map(|e| e.io_kind().unwrap_or(ErrorKind::Other));
        self.push(SubprocessEvent::PipeLost(fd, kind))
    }
    fn process_exited(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        let code = ctx.returncode(ctx.subprocess())?;
        self.push(SubprocessEvent::Exited(code))
    }
    fn pause_writing(&mut self, _: &mut Ctx<'_>) -> CallbackResult {
        self.push(SubprocessEvent::Pause)
    }
    fn resume_writing(&mut self, _: &mut Ctx<'_>) -> CallbackResult {
        self.push(SubprocessEvent::Resume)
    }
    fn connection_lost(&mut self, _: &mut Ctx<'_>, err: Option<ConnectionError>) -> CallbackResult {
        assert!(err.is_none(), "connection_lost({err:?}): a subprocess ends with None");
        self.push(SubprocessEvent::Lost)
    }
}

/// One child in a registry over a [`ChildIo`].
struct Real {
    reg: Registry,
    io: ChildIo,
    pipes: SubprocessPipes,
    now: Instant,
    log: Rc<RefCell<Vec<SubprocessEvent>>>,
    next: Rc<RefCell<[u64; 3]>>,
    all: Vec<SubprocessEvent>,
    spawned: bool,
    /// Bytes `write` accepted (the next stdin byte's position).
    written: u64,
}

/// What a user call returned.
#[derive(Debug, Default, PartialEq)]
struct Results {
    write: Option<Result<(), WriteError>>,
    signal: Option<Result<(), SignalError>>,
}

impl Real {
    fn new(piped: [bool; 3]) -> Self {
        let now = super::base_instant();
        let log = Rc::new(RefCell::new(Vec::new()));
        let mut reg = Registry::new(now);
        let next = Rc::new(RefCell::new([0; 3]));
        let proto = Recorder { log: log.clone(), next: next.clone() };
        let pipes = reg.insert_subprocess(Box::new(proto), piped, Extra::default());
        let io = ChildIo {
            pipes: [
                pipes.stdin.map(Into::into),
                pipes.stdout.map(Into::into),
                pipes.stderr.map(Into::into),
            ],
            process: Some(pipes.process.handle()),
            ..ChildIo::default()
        };
        Real { reg, io, pipes, now, log, next, all: Vec::new(), spawned: false, written: 0 }
    }

    fn user<R>(&mut self, f: impl FnOnce(&mut Ctx<'_>) -> R) -> R {
        self.reg.enter(self.now, &mut self.io, f)
    }

    fn pipe(&self, fd: u32) -> Option<Handle> {
        self.io.pipes[fd as usize]
    }

    fn apply(&mut self, op: &SubprocessOp) -> Results {
        let now = self.now;
        let p = self.pipes.process;
        let mut out = Results::default();
        match *op {
            SubprocessOp::Spawned => {
                if self.reg.handle_spawned(p, PID, now, &mut self.io).is_ok() {
                    self.spawned = true;
                }
            }
            SubprocessOp::Exit(status) => {
                if self.reg.handle_exited(p, status, now, &mut self.io).is_ok() {
                    self.io.exit_reported = true;
                }
            }
            SubprocessOp::Close => self.user(|ctx| {
                let _ = ctx.close(p);
            }),
            SubprocessOp::Abort => self.user(|ctx| {
                let _ = ctx.abort(p);
            }),
            SubprocessOp::SwapProtocol => {
                let proto = Box::new(Recorder { log: self.log.clone(), next: self.next.clone() });
                self.user(|ctx| {
                    let _ = ctx.set_subprocess_protocol(p, proto);
                });
            }
            SubprocessOp::Kill => out.signal = Some(self.user(|ctx| ctx.kill(p))),
            SubprocessOp::Terminate => out.signal = Some(self.user(|ctx| ctx.terminate(p))),
            SubprocessOp::SendSignal(sig) => {
                out.signal = Some(self.user(|ctx| ctx.send_signal(p, sig)));
            }
            SubprocessOp::Grant(n) => self.io.budget += n,
            SubprocessOp::StdinBroken => self.io.broken = true,
            SubprocessOp::ChildWrite(fd, n) => {
                if !self.io.eof[fd as usize] {
                    self.io.pending[fd as usize] += n;
                }
            }
            SubprocessOp::ChildEof(fd) => self.io.eof[fd as usize] = true,
            // Any interleaving of readiness is legal, with or without interest, before
            // the spawn too; stdin is readable only once its reader is gone.
            SubprocessOp::Writable => {
                if let Some(h) = self.pipe(0) {
                    let _ = self.reg.on_writable(h, now, &mut self.io);
                }
            }
            SubprocessOp::StdinReadable => {
                if let Some(h) = self.pipe(0)
                    && self.io.broken
                {
                    let _ = self.reg.on_readable(h, now, &mut self.io);
                }
            }
            SubprocessOp::Readable(fd) => {
                if let Some(h) = self.pipe(fd) {
                    let _ = self.reg.on_readable(h, now, &mut self.io);
                }
            }
            // The user holds the pipes from connection_made on.
            _ if !self.spawned => {}
            SubprocessOp::Write(n) => {
                if let Some(stdin) = self.pipes.stdin {
                    let data: Vec<u8> =
                        (0..n as u64).map(|i| byte_at(0, self.written + i)).collect();
                    let r = self.user(|ctx| ctx.write_slice(stdin, &data));
                    if r.is_ok() {
                        self.written += n as u64;
                    }
                    out.write = Some(r);
                }
            }
            SubprocessOp::WriteEof => {
                if let Some(stdin) = self.pipes.stdin {
                    self.user(|ctx| {
                        let _ = ctx.write_eof(stdin);
                    });
                }
            }
            SubprocessOp::ClosePipe(fd) => match fd {
                0 => {
                    if let Some(h) = self.pipes.stdin {
                        self.user(|ctx| {
                            let _ = ctx.close(h);
                        });
                    }
                }
                _ => {
                    if let Some(h) = self.read_pipe(fd) {
                        self.user(|ctx| {
                            let _ = ctx.close(h);
                        });
                    }
                }
            },
            SubprocessOp::PauseReading(fd) => {
                if let Some(h) = self.read_pipe(fd) {
                    self.user(|ctx| {
                        let _ = ctx.pause_reading(h);
                    });
                }
            }
            SubprocessOp::ResumeReading(fd) => {
                if let Some(h) = self.read_pipe(fd) {
                    self.user(|ctx| {
                        let _ = ctx.resume_reading(h);
                    });
                }
            }
            SubprocessOp::SetLimits(hi, lo) => {
                if let Some(stdin) = self.pipes.stdin {
                    self.user(|ctx| {
                        let _ = ctx.set_write_buffer_limits(stdin, hi, lo);
                    });
                }
            }
        }
        out
    }

    fn read_pipe(&self, fd: u32) -> Option<crate::ReadPipeHandle> {
        if fd == 1 { self.pipes.stdout } else { self.pipes.stderr }
    }
}

/// Runs `ops` on a subprocess (with the fds `piped` says) and on the reference model side
/// by side; the first disagreement is returned with the operations that led to it.
///
/// # Errors
///
/// A readable description of the first disagreement.
pub fn check_subprocess_against_model(
    piped: [bool; 3],
    ops: &[SubprocessOp],
) -> Result<(), String> {
    let mut real = Real::new(piped);
    let mut model = SubprocessModel::new(piped);
    let mut trace = vec![format!("piped: {piped:?}")];
    for op in ops {
        trace.push(format!("{op:?}"));
        let fail = |what: String| Err(format!("after {}:\n  {what}", trace.join(", ")));
        let got_results = real.apply(op);
        let expect = model.apply(op);
        let got: Vec<SubprocessEvent> = real.log.borrow_mut().drain(..).collect();
        for channel in [None, Some(0), Some(1), Some(2)] {
            let of = |events: &[SubprocessEvent]| -> Vec<SubprocessEvent> {
                events.iter().filter(|e| e.channel() == channel).cloned().collect()
            };
            if of(&got) != of(&expect.events) {
                return fail(format!(
                    "callbacks {got:?}\n  expected {:?} (in order per channel)",
                    expect.events
                ));
            }
        }
        real.all.extend(got);
        if let Err(e) = check_relations(piped, &real.all) {
            return fail(format!("{e}: {:?}", real.all));
        }
        if let Some(e) = real.reg.poll_error() {
            return fail(format!("a callback failed: {e}"));
        }
        if let Some(v) = real.io.violations.first() {
            return fail(format!("driver contract: {v}"));
        }
        let want_results = Results { write: expect.write, signal: expect.signal };
        if got_results != want_results {
            return fail(format!("returned {got_results:?}, expected {want_results:?}"));
        }
        if let Err(e) = check_state(&mut real, &model) {
            return fail(e);
        }
    }
    Ok(())
}

/// How the channels relate (spec §14): `connection_made` first and once; nothing after
/// `connection_lost`, which comes once, after `process_exited` and every
/// `pipe_connection_lost`; nothing from an fd after its `pipe_connection_lost` (stdin's
/// flow edges included).
fn check_relations(piped: [bool; 3], all: &[SubprocessEvent]) -> Result<(), String> {
    if all.iter().skip(1).any(|e| *e == SubprocessEvent::Made) {
        return Err("connection_made twice".into());
    }
    if all.first().is_some_and(|e| *e != SubprocessEvent::Made) {
        return Err("a callback before connection_made".into());
    }
    if let Some(i) = all.iter().position(|e| *e == SubprocessEvent::Lost) {
        if i + 1 != all.len() {
            return Err("a callback after connection_lost".into());
        }
        if !all[..i].iter().any(|e| matches!(e, SubprocessEvent::Exited(_))) {
            return Err("connection_lost before process_exited".into());
        }
        for fd in (0..3u32).filter(|&fd| piped[fd as usize]) {
            if !all[..i].iter().any(|e| matches!(*e, SubprocessEvent::PipeLost(f, _) if f == fd)) {
                return Err(format!("connection_lost before pipe_connection_lost({fd})"));
            }
        }
    }
    for fd in 0..3 {
        if let Some(i) =
            all.iter().position(|e| matches!(*e, SubprocessEvent::PipeLost(f, _) if f == fd))
            && all[i + 1..].iter().any(|e| e.channel() == Some(fd))
        {
            return Err(format!("fd {fd}: a callback after its pipe_connection_lost"));
        }
    }
    Ok(())
}

/// The signals, the return code, the user-face queries, interest, `Io::close` and bytes.
fn check_state(real: &mut Real, model: &SubprocessModel) -> Result<(), String> {
    let want = model.state();
    if real.io.signals != model.signals() {
        return Err(format!("signals sent {:?}, model {:?}", real.io.signals, model.signals()));
    }
    if real.io.signals_after_exit > 0 {
        return Err("a signal reached the driver after the exit was reported".into());
    }
    let p = real.pipes.process;
    match real.reg.subprocess(p) {
        Ok(_) if !want.gone => {
            let pipes = real.pipes;
            let got = real.user(|ctx| {
                (
                    ctx.pid(p),
                    ctx.returncode(p),
                    ctx.is_closing(p),
                    ctx.stdin(p),
                    ctx.stdout(p),
                    ctx.stderr(p),
                )
            });
            let expect = (
                Ok(real.spawned.then_some(PID)),
                Ok(want.returncode),
                Ok(want.is_closing),
                Ok(pipes.stdin),
                Ok(pipes.stdout),
                Ok(pipes.stderr),
            );
            if got != expect {
                return Err(format!("user-face queries {got:?}\n  expected {expect:?}"));
            }
            let t = real.reg.subprocess(p).map_err(|e| e.to_string())?;
            if t.returncode() != want.returncode {
                return Err(format!(
                    "returncode {:?}, model {:?}",
                    t.returncode(),
                    want.returncode
                ));
            }
            if t.is_closing() != want.is_closing {
                return Err(format!("is_closing {}, model {}", t.is_closing(), want.is_closing));
            }
        }
        Err(_) if want.gone => {}
        r => return Err(format!("subprocess(h) is {:?}, model gone: {}", r.is_ok(), want.gone)),
    }
    if real.io.closes[3] != u32::from(want.gone) {
        return Err(format!(
            "Io::close on the process {} times, gone: {}",
            real.io.closes[3], want.gone
        ));
    }
    for fd in 0..3u32 {
        let Some(h) = real.pipe(fd) else { continue };
        let i = fd as usize;
        if real.io.closes[i] != u32::from(want.pipe_closed[i]) {
            return Err(format!(
                "fd {fd}: Io::close {} times, closed: {}",
                real.io.closes[i], want.pipe_closed[i]
            ));
        }
        let interest = real.reg.interest(h);
        if interest.is_err() != want.pipe_gone[i] {
            return Err(format!(
                "fd {fd}: stale {}, model gone: {}",
                interest.is_err(),
                want.pipe_gone[i]
            ));
        }
        let interest = interest.unwrap_or_default();
        let want_interest = (want.wants_read[i], fd == 0 && want.wants_write);
        if (interest.read, interest.write) != want_interest {
            return Err(format!("fd {fd}: interest {interest:?}, model {want_interest:?}"));
        }
        if fd > 0 && real.io.pending[i] != model.pending(fd) {
            return Err(format!(
                "fd {fd}: {} bytes unread, model {}",
                real.io.pending[i],
                model.pending(fd)
            ));
        }
    }
    if let Some(stdin) = real.pipes.stdin {
        let got = real.user(|ctx| (ctx.write_buffer_size(stdin), ctx.is_writing_paused(stdin)));
        let expect = if want.pipe_gone[0] {
            (Err(HandleError::Stale), Err(HandleError::Stale))
        } else {
            (Ok(want.write_buffer_size), Ok(want.is_writing_paused))
        };
        if got != expect {
            return Err(format!(
                "stdin: (write_buffer_size, is_writing_paused) {got:?}, model {expect:?}"
            ));
        }
    }
    if real.io.stdin_taken != model.stdin_sent() {
        return Err(format!(
            "stdin took {} bytes, model {}",
            real.io.stdin_taken,
            model.stdin_sent()
        ));
    }
    Ok(())
}

fn decode(op: &Op<'_>) -> SubprocessOp {
    let fd = 1 + u32::from(op.byte(0) % 2);
    match op.code {
        0x00 => SubprocessOp::Spawned,
        0x01 => SubprocessOp::WriteEof,
        0x02 => SubprocessOp::Close,
        0x03 => SubprocessOp::Kill,
        0x04 => SubprocessOp::Terminate,
        0x05 => SubprocessOp::Writable,
        0x06 => SubprocessOp::StdinBroken,
        0x07 => SubprocessOp::StdinReadable,
        0x08 => SubprocessOp::Abort,
        0x09 => SubprocessOp::SwapProtocol,
        0x40 => SubprocessOp::Exit(ExitStatus::Exited(i32::from(op.byte(0)))),
        0x41 => SubprocessOp::Exit(ExitStatus::Signaled(1 + i32::from(op.byte(0) % 31))),
        0x42 => SubprocessOp::SendSignal(i32::from(op.byte(0) % 32)),
        0x43 => SubprocessOp::ClosePipe(u32::from(op.byte(0) % 3)),
        0x44 => SubprocessOp::PauseReading(fd),
        0x45 => SubprocessOp::ResumeReading(fd),
        0x46 => SubprocessOp::ChildEof(fd),
        0x47 => SubprocessOp::Readable(fd),
        0x80 => SubprocessOp::Write(size(op.u16(0))),
        0x81 => SubprocessOp::Grant(size(op.u16(0))),
        0x82 => SubprocessOp::ChildWrite(1, size(op.u16(0))),
        0x83 => SubprocessOp::ChildWrite(2, size(op.u16(0))),
        _ => SubprocessOp::SetLimits(limit(op.u16(0)), limit(op.u16(2))),
    }
}

/// The header byte's bits 0–2: which of stdin, stdout, stderr are piped.
fn piped_of(header: u8) -> [bool; 3] {
    [header & 1 != 0, header & 2 != 0, header & 4 != 0]
}

/// The header (what is piped) and operations an input decodes to, cut at the byte budget.
fn decode_ops(data: &[u8]) -> Option<([bool; 3], Vec<SubprocessOp>)> {
    let mut input = Input::new(data)?;
    let piped = piped_of(input.byte());
    let mut ops = Vec::new();
    let mut bytes = 0usize;
    while let Some(op) = input.next_op(SUBPROCESS_OPS) {
        let op = decode(&op);
        if let SubprocessOp::Write(n) | SubprocessOp::ChildWrite(_, n) = op {
            bytes += n;
            if bytes > BYTE_BUDGET {
                break;
            }
        }
        ops.push(op);
    }
    Some((piped, ops))
}

/// The operations an input decodes to, one per line: for reading a crash input.
pub fn describe_subprocess(data: &[u8]) -> Vec<String> {
    let Some(mut input) = Input::new(data) else {
        return vec!["(ignored: unknown version)".into()];
    };
    let piped = piped_of(input.byte());
    std::iter::once(format!("piped (stdin, stdout, stderr): {piped:?}"))
        .chain(
            std::iter::from_fn(|| input.next_op(SUBPROCESS_OPS))
                .map(|op| format!("{} {:02x?}", op_name(SUBPROCESS_OPS, op.code), op.operand)),
        )
        .collect()
}

/// Fuzz target: one subprocess and the reference model, step by step (opcode table
/// [`SUBPROCESS_OPS`]; after the version byte, a header byte whose bits 0–2 pipe stdin,
/// stdout and stderr). Panics on the first disagreement.
pub fn subprocess_ops(data: &[u8]) {
    let Some((piped, ops)) = decode_ops(data) else { return };
    if let Err(e) = check_subprocess_against_model(piped, &ops) {
        panic!("implementation != model {e}");
    }
}
