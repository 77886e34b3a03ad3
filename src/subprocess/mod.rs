//! Subprocess transports: asyncio's `SubprocessTransport` and `SubprocessProtocol` (spec
//! §14) as a state machine.
//!
//! A [`SubprocessTransport`] holds the process state only: its pid, its exit status, and
//! the handles of its pipes. Each pipe (stdin, stdout, stderr — those that are piped) is
//! an ordinary pipe half of the loop, a [`WritePipeTransport`](crate::WritePipeTransport) or
//! [`ReadPipeTransport`](crate::ReadPipeTransport) in its own slot, with all of the stream
//! machinery: stdin buffers, has watermarks and `write_eof` (which closes it), stdout
//! and stderr pause independently. Their callbacks are routed to the subprocess's
//! protocol, as asyncio's `WriteSubprocessPipeProto` / `ReadSubprocessPipeProto` do.
//!
//! # Callbacks
//!
//! | rank | callback | when |
//! |---|---|---|
//! | 1 | `connection_made` | the driver reported the spawn; before any pipe callback |
//! | — | `pipe_data_received(fd, ..)`, `pipe_connection_lost(fd, ..)`, `pause_writing`, `resume_writing` | from the pipe halves, each in its own order (data, then that fd's `pipe_connection_lost`) |
//! | 2 | `process_exited` | the driver reported the exit — whether or not the pipes are still open |
//! | 3 | `connection_lost(None)` | `process_exited` was delivered **and** every pipe's `pipe_connection_lost`; exactly once, last |
//!
//! `process_exited` may come before or after the pipes' callbacks (asyncio documents both
//! orders, gh-108973): a child that exits while a grandchild keeps its stdout open is
//! reported at its exit.
//!
//! # Signals
//!
//! Signals are carried out by the driver ([`Io::send_signal`](crate::Io::send_signal)).
//! Once the exit was reported, no signal is ever passed to the driver again (a recycled
//! pid must not be hit): the signal methods return `Ok` until `connection_lost`, then
//! [`SignalError::ProcessLookup`].

mod protocol;
#[cfg(test)]
mod tests;

pub use protocol::SubprocessProtocol;

use crate::{ConnectionError, Extra, Handle, HandleError, IoError, Lifecycle};

/// POSIX signal numbers the core names. They are the same on every Unix; other signals
/// are passed to [`Ctx::send_signal`](crate::Ctx::send_signal) as plain numbers.
pub mod signal {
    /// `SIGHUP`.
    pub const SIGHUP: i32 = 1;
    /// `SIGINT`.
    pub const SIGINT: i32 = 2;
    /// `SIGKILL`: what [`Ctx::kill`](crate::Ctx::kill) and closing a running child send.
    pub const SIGKILL: i32 = 9;
    /// `SIGTERM`: what [`Ctx::terminate`](crate::Ctx::terminate) sends.
    pub const SIGTERM: i32 = 15;
}

/// How a child ended, as the driver reports it to
/// [`Registry::handle_exited`](crate::Registry::handle_exited).
///
/// ```
/// use aioport::ExitStatus;
/// assert_eq!(ExitStatus::Exited(3).returncode(), 3);
/// assert_eq!(ExitStatus::Signaled(9).returncode(), -9);   // asyncio's -SIGKILL
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExitStatus {
    /// It exited with this code.
    Exited(i32),
    /// A signal with this number killed it.
    Signaled(i32),
}

impl ExitStatus {
    /// asyncio's `returncode`: the exit code, or the negative signal number.
    pub const fn returncode(self) -> i32 {
        match self {
            ExitStatus::Exited(code) => code,
            ExitStatus::Signaled(sig) => -sig,
        }
    }
}

/// Why a signal could not be sent ([`Ctx::send_signal`](crate::Ctx::send_signal)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignalError {
    /// asyncio's `ProcessLookupError`: the transport is gone (`connection_lost` was
    /// delivered), so the process it named may not exist any more.
    #[error("no such process: the subprocess transport is gone (connection_lost was delivered)")]
    ProcessLookup,
    /// The driver has not reported the spawn yet; signal it after `connection_made`.
    #[error("the process is not spawned yet: signal it after connection_made")]
    NotSpawned,
    /// The driver could not send it.
    #[error("sending the signal failed: {0}")]
    Io(IoError),
    /// The handle names another kind of transport.
    #[error(transparent)]
    Handle(HandleError),
}

/// The pipes the driver created for a subprocess, returned by
/// [`Registry::insert_subprocess`](crate::Registry::insert_subprocess): the driver keys
/// its pipe fds by these handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubprocessPipes {
    /// The process itself (what `send_signal` and `close` name).
    pub process: crate::SubprocessHandle,
    /// The child's stdin (fd 0), if piped.
    pub stdin: Option<crate::WritePipeHandle>,
    /// The child's stdout (fd 1), if piped.
    pub stdout: Option<crate::ReadPipeHandle>,
    /// The child's stderr (fd 2), if piped.
    pub stderr: Option<crate::ReadPipeHandle>,
}

/// A callback the subprocess protocol is owed, from
/// [`SubprocessTransport::next_callback`]. Pipe callbacks come from the pipe halves.
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubprocessCallback {
    /// Deliver `connection_made`.
    ConnectionMade,
    /// Deliver `process_exited`.
    ProcessExited,
    /// Deliver `connection_lost`; the last callback.
    ConnectionLost(Option<ConnectionError>),
}

/// The process half of a subprocess transport: pid, exit status, pipe handles, and the
/// ordering rules of spec §14. It does no I/O; the registry closes its pipes and passes
/// signals to the driver.
#[derive(Debug)]
pub struct SubprocessTransport {
    handle: Handle,
    pid: Option<u32>,
    status: Option<ExitStatus>,
    pipes: [Option<Handle>; 3],
    /// Pipes whose `pipe_connection_lost` has not been delivered yet.
    open: [bool; 3],
    exit_delivered: bool,
    /// `close()` came before the spawn: kill the child as soon as it exists.
    kill_on_spawn: bool,
    lifecycle: Lifecycle,
    extra: Extra,
}

impl SubprocessTransport {
    /// A process named `handle` that is being spawned, with these pipes (by fd).
    pub fn new(handle: Handle, pipes: [Option<Handle>; 3], extra: Extra) -> Self {
        SubprocessTransport {
            handle,
            pid: None,
            status: None,
            pipes,
            open: pipes.map(|p| p.is_some()),
            exit_delivered: false,
            kill_on_spawn: false,
            lifecycle: Lifecycle::new(),
            extra,
        }
    }

    /// The handle the driver knows this process by.
    pub fn handle(&self) -> Handle {
        self.handle
    }

    /// The child's pid, once spawned.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// asyncio's `get_returncode()`: `None` while running, the exit code, or the negative
    /// number of the signal that killed it. Known as soon as the driver reports the exit.
    pub fn returncode(&self) -> Option<i32> {
        self.status.map(ExitStatus::returncode)
    }

    /// How the child ended, once reported.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.status
    }

    /// The pipe for fd 0, 1 or 2, if it was piped (it may be closed since).
    pub fn pipe(&self, fd: u32) -> Option<Handle> {
        self.pipes.get(fd as usize).copied().flatten()
    }

    /// True once `close()` was called or the transport is lost.
    pub fn is_closing(&self) -> bool {
        self.lifecycle.is_closing()
    }

    /// True while the child runs as far as the loop knows: spawned, exit not reported.
    pub fn is_running(&self) -> bool {
        self.pid.is_some() && self.status.is_none()
    }

    /// True once `connection_lost` was handed out: signals now fail with
    /// [`SignalError::ProcessLookup`].
    pub fn is_finished(&self) -> bool {
        self.lifecycle.is_finished()
    }

    /// The endpoint information the driver provided.
    pub fn extra(&self) -> &Extra {
        &self.extra
    }

    /// The next callback owed, by the table in the [module docs](self).
    #[must_use]
    pub fn next_callback(&mut self) -> Option<SubprocessCallback> {
        self.pid?;
        if self.lifecycle.poll_made() {
            return Some(SubprocessCallback::ConnectionMade);
        }
        if self.status.is_some() && !self.exit_delivered {
            self.exit_delivered = true;
            return Some(SubprocessCallback::ProcessExited);
        }
        if self.exit_delivered && !self.open.contains(&true) {
            self.lifecycle.set_lost(None);
        }
        self.lifecycle.poll_lost().map(SubprocessCallback::ConnectionLost)
    }

    pub(crate) fn set_spawned(&mut self, pid: u32) -> bool {
        if self.pid.is_some() {
            return false;
        }
        self.pid = Some(pid);
        true
    }

    pub(crate) fn set_exited(&mut self, status: ExitStatus) -> bool {
        if self.pid.is_none() || self.status.is_some() {
            return false;
        }
        self.status = Some(status);
        true
    }

    /// Records a close request; returns false if one was already recorded.
    pub(crate) fn start_closing(&mut self) -> bool {
        let first = self.lifecycle.start_closing();
        if first && self.pid.is_none() {
            self.kill_on_spawn = true;
        }
        first
    }

    pub(crate) fn take_kill_on_spawn(&mut self) -> bool {
        std::mem::take(&mut self.kill_on_spawn)
    }

    pub(crate) fn pipe_gone(&mut self, fd: usize) {
        if let Some(open) = self.open.get_mut(fd) {
            *open = false;
        }
    }

    pub(crate) fn set_pipes(&mut self, pipes: [Option<Handle>; 3]) {
        self.pipes = pipes;
        self.open = pipes.map(|p| p.is_some());
    }

    pub(crate) fn pipes(&self) -> [Option<Handle>; 3] {
        self.pipes
    }
}
