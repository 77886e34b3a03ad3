//! The subprocess half of the reference model: one `SubprocessTransport` and its pipes,
//! as spec §14 and DESIGN.md §5 state them, written from the rules, not from the
//! implementation. It shares only the flow rule ([`FlowRule`]) with the stream model.
//!
//! The world: one child, spawned when the driver says so, whose stdin, stdout and stderr
//! are piped as the header says. Stdin accepts a granted number of bytes (then
//! `WouldBlock`) until the child closes its reading end (then `BrokenPipe`); stdout and
//! stderr hold what the child wrote and its EOF. The driver reports readiness, the spawn
//! and the exit (a code or a signal, before or after the pipes' EOF) as told; the user
//! writes stdin, ends or closes it, pauses and resumes each read pipe, closes a pipe or
//! the process, and signals. After every operation the loop dispatches until quiescent.
//!
//! Callbacks are stated **per channel**: the process's own (`connection_made`,
//! `process_exited`, `connection_lost`) and each fd's (stdin's flow edges and
//! `pipe_connection_lost(0)`; stdout's and stderr's data and `pipe_connection_lost`).
//! The spec orders each channel and states how channels relate (`connection_made` first,
//! `connection_lost` last, after `process_exited` and every `pipe_connection_lost`), but
//! leaves the interleaving of different channels in one dispatch open — `process_exited`
//! may come before or after the pipes' callbacks (gh-108973). A runner compares each
//! channel and checks the relations.

use std::io::ErrorKind;

use super::{Event, FlowRule, MODEL_READ_SIZE};
use crate::{ExitStatus, HandleError, SignalError, WriteError, signal};

/// One operation on the modelled subprocess world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubprocessOp {
    /// The driver reports the spawn (`handle_spawned`).
    Spawned,
    /// The driver reports the exit (`handle_exited`).
    Exit(ExitStatus),
    /// The user writes `n` bytes to stdin.
    Write(usize),
    /// `write_eof()` on stdin.
    WriteEof,
    /// `close()` on the pipe for fd 0, 1 or 2.
    ClosePipe(u32),
    /// `close()` on the process.
    Close,
    /// `abort()` on the process: as `close()`, but stdin's buffer is dropped.
    Abort,
    /// `set_subprocess_protocol(..)` with a fresh recording protocol.
    SwapProtocol,
    /// `kill()`.
    Kill,
    /// `terminate()`.
    Terminate,
    /// `send_signal(sig)`.
    SendSignal(i32),
    /// `pause_reading()` on the pipe for fd 1 or 2.
    PauseReading(u32),
    /// `resume_reading()` on the pipe for fd 1 or 2.
    ResumeReading(u32),
    /// `set_write_buffer_limits(high, low)` on stdin.
    SetLimits(Option<usize>, Option<usize>),
    /// Stdin will accept `n` more bytes.
    Grant(usize),
    /// The driver reports stdin writable.
    Writable,
    /// The child closes its reading end of stdin: writes fail with `BrokenPipe`.
    StdinBroken,
    /// The driver reports stdin readable: the child closed its end (nothing happens
    /// unless it did).
    StdinReadable,
    /// The child writes `n` bytes to fd 1 or 2 (ignored once that end is closed).
    ChildWrite(u32, usize),
    /// The child closes fd 1 or 2 (EOF).
    ChildEof(u32),
    /// The driver reports the pipe for fd 1 or 2 readable.
    Readable(u32),
}

/// A callback as the model states it; data is counted, not copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubprocessEvent {
    /// `connection_made`.
    Made,
    /// `pipe_data_received(fd, ..)` of `len` bytes.
    Data(u32, usize),
    /// `pipe_connection_lost(fd, err)`, the error by kind.
    PipeLost(u32, Option<ErrorKind>),
    /// `pause_writing` (stdin's).
    Pause,
    /// `resume_writing` (stdin's).
    Resume,
    /// `process_exited`, with the return code `ctx.returncode` gave inside it.
    Exited(Option<i32>),
    /// `connection_lost(None)`.
    Lost,
}

impl SubprocessEvent {
    /// The channel it belongs to: `None` for the process, `Some(fd)` for a pipe.
    pub fn channel(&self) -> Option<u32> {
        match *self {
            SubprocessEvent::Made | SubprocessEvent::Exited(_) | SubprocessEvent::Lost => None,
            SubprocessEvent::Pause | SubprocessEvent::Resume => Some(0),
            SubprocessEvent::Data(fd, _) | SubprocessEvent::PipeLost(fd, _) => Some(fd),
        }
    }
}

/// What one operation produced.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubprocessOutcome {
    /// Callbacks delivered (in order within each channel).
    pub events: Vec<SubprocessEvent>,
    /// For `Write`: what `write` returned (`None` before the spawn: nobody holds the
    /// handle then, so the runner does not write).
    pub write: Option<Result<(), WriteError>>,
    /// For `Kill`, `Terminate`, `SendSignal`: what it returned.
    pub signal: Option<Result<(), SignalError>>,
}

/// The observable state after an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubprocessState {
    /// `connection_lost` was delivered: the process handle is stale.
    pub gone: bool,
    /// `returncode()` (while not gone).
    pub returncode: Option<i32>,
    /// The process's `is_closing()` (while not gone).
    pub is_closing: bool,
    /// Per fd: the pipe's slot is closed (`Io::close` called once).
    pub pipe_closed: [bool; 3],
    /// Per fd: `pipe_connection_lost` was delivered (the pipe handle is stale).
    pub pipe_gone: [bool; 3],
    /// Stdin's `write_buffer_size()` (while not gone).
    pub write_buffer_size: usize,
    /// Stdin's `is_writing_paused()` (while not gone).
    pub is_writing_paused: bool,
    /// Read interest per fd (for stdin: watching for the child closing its end).
    pub wants_read: [bool; 3],
    /// Stdin's write interest.
    pub wants_write: bool,
}

/// One pipe.
#[derive(Debug, Clone, Default)]
struct Pipe {
    piped: bool,
    close_requested: bool,
    lost: bool,
    lost_reason: Option<ErrorKind>,
    lost_pending: bool,
    gone: bool,
    // Read pipes.
    read_paused: bool,
    pending: usize,
    child_closed: bool,
}

/// The subprocess reference model. See the module docs.
#[derive(Debug, Clone)]
pub struct SubprocessModel {
    pipes: [Pipe; 3],
    flow: FlowRule,
    queued: usize,
    budget: usize,
    broken: bool,
    stdin_sent: u64,
    spawned: bool,
    made_pending: bool,
    status: Option<ExitStatus>,
    exited_pending: bool,
    exited_delivered: bool,
    close_requested: bool,
    kill_on_spawn: bool,
    lost_delivered: bool,
    signals: Vec<i32>,
}

impl SubprocessModel {
    /// A child being spawned with these fds piped; nothing delivered yet.
    pub fn new(piped: [bool; 3]) -> Self {
        let mut pipes: [Pipe; 3] = Default::default();
        for (p, &on) in pipes.iter_mut().zip(&piped) {
            p.piped = on;
        }
        SubprocessModel {
            pipes,
            flow: FlowRule::new(),
            queued: 0,
            budget: 0,
            broken: false,
            stdin_sent: 0,
            spawned: false,
            made_pending: false,
            status: None,
            exited_pending: false,
            exited_delivered: false,
            close_requested: false,
            kill_on_spawn: false,
            lost_delivered: false,
            signals: Vec::new(),
        }
    }

    /// Applies one operation; returns what it produced.
    pub fn apply(&mut self, op: &SubprocessOp) -> SubprocessOutcome {
        let mut out = SubprocessOutcome::default();
        match *op {
            SubprocessOp::Spawned if !self.spawned => {
                self.spawned = true;
                self.made_pending = true;
                if std::mem::take(&mut self.kill_on_spawn) {
                    self.signals.push(signal::SIGKILL);
                }
            }
            SubprocessOp::Exit(status) if self.spawned && self.status.is_none() => {
                self.status = Some(status);
                self.exited_pending = true;
            }
            SubprocessOp::Write(n) if self.spawned && self.pipes[0].piped => {
                out.write = Some(self.write(n));
            }
            // `write_eof()` on a write pipe closes it (asyncio's `_UnixWritePipeTransport`).
            SubprocessOp::WriteEof if self.user_may(0) => self.close_pipe(0),
            SubprocessOp::ClosePipe(fd) if self.user_may(fd) => self.close_pipe(fd),
            SubprocessOp::Close | SubprocessOp::Abort
                if !self.lost_delivered && !self.close_requested =>
            {
                self.close_requested = true;
                for fd in 0..3 {
                    if self.pipes[fd as usize].piped && !self.pipes[fd as usize].gone {
                        self.close_pipe(fd);
                    }
                }
                if *op == SubprocessOp::Abort && self.pipes[0].piped && !self.pipes[0].gone {
                    self.lose(0, None);
                }
                if !self.spawned {
                    self.kill_on_spawn = true;
                } else if self.status.is_none() {
                    self.signals.push(signal::SIGKILL);
                }
            }
            // A new protocol knows nothing: if stdin is paused, it is told first.
            SubprocessOp::SwapProtocol
                if !self.lost_delivered && self.pipes[0].piped && !self.pipes[0].gone =>
            {
                self.flow.reset_view();
            }
            SubprocessOp::Kill => out.signal = Some(self.signal(signal::SIGKILL)),
            SubprocessOp::Terminate => out.signal = Some(self.signal(signal::SIGTERM)),
            SubprocessOp::SendSignal(sig) => out.signal = Some(self.signal(sig)),
            SubprocessOp::PauseReading(fd) if self.user_may(fd) && !self.pipe_closing(fd) => {
                self.pipes[fd as usize].read_paused = true;
            }
            SubprocessOp::ResumeReading(fd) if self.user_may(fd) && !self.pipe_closing(fd) => {
                self.pipes[fd as usize].read_paused = false;
            }
            SubprocessOp::SetLimits(high, low) if self.user_may(0) => {
                self.flow.set_limits(high, low, self.queued);
            }
            SubprocessOp::Grant(n) => self.budget += n,
            SubprocessOp::Writable if self.live(0) && self.queued > 0 => self.flush(),
            SubprocessOp::StdinBroken => self.broken = true,
            SubprocessOp::StdinReadable
                if self.pipes[0].piped && !self.pipes[0].lost && self.broken =>
            {
                // asyncio's `_read_ready` on a write pipe: the reader is gone. Not a read,
                // so a held pipe (before the spawn) closes too; `pipe_connection_lost`
                // waits for `connection_made`.
                let reason = (self.queued > 0).then_some(ErrorKind::BrokenPipe);
                self.lose(0, reason);
            }
            SubprocessOp::ChildWrite(fd, n) if !self.pipes[fd as usize].child_closed => {
                self.pipes[fd as usize].pending += n;
            }
            SubprocessOp::ChildEof(fd) => self.pipes[fd as usize].child_closed = true,
            SubprocessOp::Readable(fd) if self.live(fd) => {
                self.deliver(&mut out.events);
                if self.wants_read(fd) {
                    self.read(fd, &mut out.events);
                }
            }
            _ => {}
        }
        self.deliver(&mut out.events);
        out
    }

    /// The observable state.
    pub fn state(&self) -> SubprocessState {
        let p = &self.pipes;
        SubprocessState {
            gone: self.lost_delivered,
            returncode: self.status.map(ExitStatus::returncode),
            is_closing: self.close_requested || self.lost_delivered,
            pipe_closed: [p[0].lost, p[1].lost, p[2].lost],
            pipe_gone: [p[0].gone, p[1].gone, p[2].gone],
            write_buffer_size: self.queued,
            is_writing_paused: self.flow.paused,
            // A write pipe watches for its reader closing (asyncio's `_read_ready`).
            wants_read: [self.live(0), self.wants_read(1), self.wants_read(2)],
            wants_write: self.live(0) && self.queued > 0,
        }
    }

    /// The signals that reached the driver, in order.
    pub fn signals(&self) -> &[i32] {
        &self.signals
    }

    /// Bytes stdin's reader accepted.
    pub fn stdin_sent(&self) -> u64 {
        self.stdin_sent
    }

    /// Bytes the child wrote to `fd` that wait in its pipe.
    pub fn pending(&self, fd: u32) -> usize {
        self.pipes[fd as usize].pending
    }

    /// The pipe is piped, its slot is open, and the spawn was reported (a held pipe
    /// neither reads nor writes).
    fn live(&self, fd: u32) -> bool {
        let p = &self.pipes[fd as usize];
        self.spawned && p.piped && !p.lost
    }

    /// The user holds the pipe's handle (after the spawn) and it is not stale.
    fn user_may(&self, fd: u32) -> bool {
        let p = &self.pipes[fd as usize];
        self.spawned && p.piped && !p.gone
    }

    fn pipe_closing(&self, fd: u32) -> bool {
        let p = &self.pipes[fd as usize];
        p.close_requested || p.lost
    }

    fn wants_read(&self, fd: u32) -> bool {
        let p = &self.pipes[fd as usize];
        fd != 0 && self.live(fd) && !p.read_paused && !p.close_requested
    }

    fn signal(&mut self, sig: i32) -> Result<(), SignalError> {
        if self.lost_delivered {
            return Err(SignalError::ProcessLookup);
        }
        if self.status.is_some() {
            // Exited: the pid may be recycled, so nothing reaches the driver.
            return Ok(());
        }
        if !self.spawned {
            return Err(SignalError::NotSpawned);
        }
        self.signals.push(sig);
        Ok(())
    }

    fn write(&mut self, n: usize) -> Result<(), WriteError> {
        let p = &self.pipes[0];
        if p.gone {
            return Err(WriteError::Handle(HandleError::Stale));
        }
        if p.close_requested {
            return Err(WriteError::Closing);
        }
        if p.lost {
            return Err(WriteError::Closed);
        }
        if n == 0 {
            return Ok(());
        }
        let mut rest = n;
        if self.queued == 0 {
            if self.broken {
                self.lose(0, Some(ErrorKind::BrokenPipe));
                return Ok(());
            }
            let now = rest.min(self.budget);
            self.send(now);
            rest -= now;
        }
        self.queued += rest;
        self.flow.edges(self.queued);
        Ok(())
    }

    fn send(&mut self, n: usize) {
        self.budget -= n;
        self.stdin_sent += n as u64;
    }

    fn flush(&mut self) {
        if self.broken {
            return self.lose(0, Some(ErrorKind::BrokenPipe));
        }
        let n = self.queued.min(self.budget);
        self.send(n);
        self.queued -= n;
        self.flow.edges(self.queued);
        if self.queued == 0 && self.pipes[0].close_requested {
            self.lose(0, None);
        }
    }

    /// `close()` on stdin: flushes first.
    fn close_stdin(&mut self) {
        self.pipes[0].close_requested = true;
        if self.queued == 0 {
            self.lose(0, None);
        }
    }

    fn close_pipe(&mut self, fd: u32) {
        if self.pipe_closing(fd) {
            return;
        }
        if fd == 0 {
            self.close_stdin();
        } else {
            self.pipes[fd as usize].close_requested = true;
            self.lose(fd, None);
        }
    }

    fn read(&mut self, fd: u32, events: &mut Vec<SubprocessEvent>) {
        let p = &mut self.pipes[fd as usize];
        if p.pending > 0 {
            let n = p.pending.min(MODEL_READ_SIZE);
            p.pending -= n;
            events.push(SubprocessEvent::Data(fd, n));
        } else if p.child_closed {
            self.lose(fd, None);
        }
    }

    fn lose(&mut self, fd: u32, reason: Option<ErrorKind>) {
        let p = &mut self.pipes[fd as usize];
        if p.lost {
            return;
        }
        p.lost = true;
        p.lost_reason = reason;
        p.lost_pending = true;
        if fd == 0 {
            self.flow.frozen = true;
            self.queued = 0;
        }
    }

    /// Delivers callbacks until quiescent: nothing before the spawn; `connection_made`
    /// first; stdin's flow edges; each pipe's `pipe_connection_lost`; `process_exited`;
    /// `connection_lost` once the exit and every pipe's loss were delivered.
    fn deliver(&mut self, events: &mut Vec<SubprocessEvent>) {
        if !self.spawned {
            return;
        }
        loop {
            if std::mem::take(&mut self.made_pending) {
                events.push(SubprocessEvent::Made);
            } else if let Some(edge) = self.flow.next_edge() {
                events.push(if edge == Event::Pause {
                    SubprocessEvent::Pause
                } else {
                    SubprocessEvent::Resume
                });
            } else if let Some(fd) = (0..3).find(|&fd| self.pipes[fd as usize].lost_pending) {
                let p = &mut self.pipes[fd as usize];
                p.lost_pending = false;
                p.gone = true;
                events.push(SubprocessEvent::PipeLost(fd, p.lost_reason));
            } else if std::mem::take(&mut self.exited_pending) {
                self.exited_delivered = true;
                events.push(SubprocessEvent::Exited(self.status.map(ExitStatus::returncode)));
            } else if self.exited_delivered
                && !self.lost_delivered
                && self.pipes.iter().all(|p| !p.piped || p.gone)
            {
                self.lost_delivered = true;
                events.push(SubprocessEvent::Lost);
            } else {
                return;
            }
        }
    }
}
