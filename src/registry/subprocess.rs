//! Subprocess transports in the loop (DESIGN.md §3, spec §14): the driver face (spawned,
//! exited; the pipes use the ordinary pipe faces), the user face on [`Ctx`], and the
//! bookkeeping that routes pipe callbacks to the subprocess's protocol.
//!
//! Each pipe is a slot of its own holding a read or write pipe half, so the driver reads
//! and writes it with `on_readable` / `on_writable` like any pipe, and it keeps all of
//! the stream machinery. Its slot holds no protocol of its own: dispatch lends it the
//! subprocess's protocol for each callback (see `Core::invoke`).

use std::time::Instant;

use super::state::{Core, Entry, Transport};
use super::transport::{AnyProtocol, TransportKind};
use super::{Ctx, Registry};
use crate::stream::StreamKind;
use crate::{
    DriverError, ExitStatus, Extra, Handle, HandleError, Io, ReadPipeHandle, SignalError,
    StreamTransport, SubprocessHandle, SubprocessPipes, SubprocessProtocol, SubprocessTransport,
    WritePipeHandle, signal,
};

/// `ESRCH`: the same number on every Unix. A signal racing with the exit gets it; asyncio
/// swallows the matching `ProcessLookupError` (spec §14.78).
const ESRCH: i32 = 3;

/// A pipe slot's link to its subprocess.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PipeOf {
    pub(crate) owner: Handle,
    pub(crate) fd: u32,
    /// The subprocess's `connection_made` is not delivered yet: the pipe neither reads
    /// nor delivers anything.
    pub(crate) held: bool,
}

impl Core {
    pub(crate) fn insert_subprocess(
        &mut self,
        protocol: Box<dyn SubprocessProtocol>,
        piped: [bool; 3],
        extra: Extra,
    ) -> SubprocessPipes {
        let owner = self.next_handle();
        let t = SubprocessTransport::new(owner, [None; 3], extra);
        let owner =
            self.insert(Entry::new(Transport::Subprocess(t), AnyProtocol::Subprocess(protocol)));
        let mut pipes = [None; 3];
        for (fd, slot) in pipes.iter_mut().enumerate() {
            if !piped[fd] {
                continue;
            }
            let kind = if fd == 0 { StreamKind::WritePipe } else { StreamKind::ReadPipe };
            let h = self.next_handle();
            let t = StreamTransport::with_kind(h, kind, Extra::default());
            let mut entry = Entry::new(Transport::Stream(t), AnyProtocol::Pipe);
            entry.pipe_of = Some(PipeOf { owner, fd: fd as u32, held: true });
            *slot = Some(self.insert(entry));
        }
        if let Ok(t) = self.subprocess_mut(owner) {
            t.set_pipes(pipes);
        }
        SubprocessPipes {
            process: SubprocessHandle::from_handle(owner),
            stdin: pipes[0].map(WritePipeHandle::from_handle),
            stdout: pipes[1].map(ReadPipeHandle::from_handle),
            stderr: pipes[2].map(ReadPipeHandle::from_handle),
        }
    }

    fn subprocess_mut(&mut self, h: Handle) -> Result<&mut SubprocessTransport, DriverError> {
        match &mut self.entry_mut(h).map_err(|_| DriverError::StaleHandle)?.transport {
            Transport::Subprocess(t) => Ok(t),
            _ => Err(DriverError::WrongKind { expected: "subprocess" }),
        }
    }

    fn spawned(&mut self, h: Handle, pid: u32, io: &mut dyn Io) -> Result<(), DriverError> {
        let t = self.subprocess_mut(h)?;
        if !t.set_spawned(pid) {
            return Err(DriverError::ProcessEvent { event: "spawned twice" });
        }
        let kill = t.take_kill_on_spawn();
        self.touch(h.index());
        if kill {
            // close() came first: the child must not outlive it. A failure means it is
            // already gone; its exit is reported either way.
            let _ = io.send_signal(h, signal::SIGKILL);
        }
        Ok(())
    }

    fn spawn_failed(&mut self, h: Handle) -> Result<(), DriverError> {
        let t = self.subprocess_mut(h)?;
        if t.pid().is_some() {
            return Err(DriverError::ProcessEvent { event: "spawn failure after the spawn" });
        }
        let pipes = t.pipes();
        self.remove(h.index());
        for p in pipes.into_iter().flatten() {
            self.remove(p.index());
        }
        Ok(())
    }

    fn exited(&mut self, h: Handle, status: ExitStatus) -> Result<(), DriverError> {
        let t = self.subprocess_mut(h)?;
        if !t.set_exited(status) {
            let event = if t.pid().is_none() { "exit before the spawn" } else { "exited twice" };
            return Err(DriverError::ProcessEvent { event });
        }
        self.touch(h.index());
        Ok(())
    }

    /// A pipe's slot was removed (its `pipe_connection_lost` was delivered, or the
    /// spawn failed): the subprocess may now be owed `connection_lost`.
    pub(super) fn pipe_removed(&mut self, link: PipeOf) {
        if let Ok(t) = self.subprocess_mut(link.owner) {
            t.pipe_gone(link.fd as usize);
            self.touch(link.owner.index());
        }
    }

    /// The subprocess's `connection_made` was delivered: its pipes may deliver and read.
    pub(super) fn release_pipes(&mut self, owner: Handle) {
        let Ok(t) = self.subprocess_mut(owner) else { return };
        for p in t.pipes().into_iter().flatten() {
            if let Ok(entry) = self.entry_mut(p) {
                if let Some(link) = entry.pipe_of.as_mut() {
                    link.held = false;
                }
                self.touch(p.index());
            }
        }
    }

    /// asyncio's `close()`: closes every pipe (stdin flushes first; `abort` drops its
    /// buffer instead) and kills a child still running — never one whose exit was
    /// reported. Idempotent.
    pub(crate) fn close_subprocess(
        &mut self,
        h: Handle,
        abort: bool,
        io: &mut dyn Io,
    ) -> Result<(), HandleError> {
        let t = self.subprocess_mut(h).map_err(|_| HandleError::Stale)?;
        if !t.start_closing() {
            return Ok(());
        }
        let (pipes, kill) = (t.pipes(), t.is_running());
        for p in pipes.into_iter().flatten() {
            self.with_transport_io(p, io, |t, io, pool| {
                if abort { t.common().abort(io, pool) } else { t.common().close(io, pool) }
            });
        }
        if kill {
            // A failure means it is already gone; its exit is reported either way.
            let _ = io.send_signal(h, signal::SIGKILL);
        }
        self.touch(h.index());
        Ok(())
    }

    fn signal_subprocess(
        &mut self,
        h: Handle,
        sig: i32,
        io: &mut dyn Io,
    ) -> Result<(), SignalError> {
        let entry = self.entry_mut(h).map_err(|_| SignalError::ProcessLookup)?;
        let t = match &mut entry.transport {
            Transport::Subprocess(t) => t,
            other => {
                let found = other.kind().name();
                return Err(SignalError::Handle(HandleError::WrongKind {
                    expected: "subprocess",
                    found,
                }));
            }
        };
        if t.is_finished() {
            return Err(SignalError::ProcessLookup);
        }
        if t.returncode().is_some() {
            // Exited: the pid may be recycled already, so nothing is sent (DESIGN.md §5).
            return Ok(());
        }
        if t.pid().is_none() {
            return Err(SignalError::NotSpawned);
        }
        match io.send_signal(h, sig) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(ESRCH) => Ok(()),
            Err(e) => Err(SignalError::Io(e.into())),
        }
    }
}

impl Registry {
    /// A child process enters the loop while the driver spawns it: `piped[fd]` says
    /// which of stdin, stdout and stderr are pipes. Returns the handles the driver keys
    /// its pipe fds by; report the outcome with [`handle_spawned`](Self::handle_spawned)
    /// or [`handle_spawn_failed`](Self::handle_spawn_failed). Nothing is delivered and no
    /// pipe reads before the spawn is reported; `connection_made` comes first, then the
    /// pipes' callbacks.
    ///
    /// The pipes are ordinary pipe halves for the driver: report their readiness with
    /// [`on_readable`](Self::on_readable) / [`on_writable`](Self::on_writable) (readable
    /// on the stdin pipe means the child closed its end), errors with
    /// [`handle_error`](Self::handle_error), and forget each at its [`Io::close`].
    pub fn insert_subprocess(
        &mut self,
        protocol: Box<dyn SubprocessProtocol>,
        piped: [bool; 3],
        extra: Extra,
    ) -> SubprocessPipes {
        self.core.insert_subprocess(protocol, piped, extra)
    }

    /// The child of `h` runs with this pid: `connection_made` is delivered. If the
    /// transport was closed meanwhile, the child is killed at once through
    /// [`Io::send_signal`].
    ///
    /// # Errors
    ///
    /// [`DriverError::StaleHandle`], [`DriverError::WrongKind`],
    /// [`DriverError::ProcessEvent`] when reported twice.
    pub fn handle_spawned(
        &mut self,
        h: SubprocessHandle,
        pid: u32,
        now: Instant,
        io: &mut dyn Io,
    ) -> Result<(), DriverError> {
        self.core.now = now;
        let r = self.core.spawned(h.handle(), pid, io);
        self.core.drain(io);
        r
    }

    /// The child of `h` could not be spawned: the transport and its pipes are removed;
    /// the protocol hears nothing (asyncio raises from `subprocess_exec` instead) and
    /// [`Io::close`] is not called (the driver owns whatever it opened).
    ///
    /// # Errors
    ///
    /// [`DriverError::StaleHandle`], [`DriverError::WrongKind`],
    /// [`DriverError::ProcessEvent`] after [`handle_spawned`](Self::handle_spawned).
    pub fn handle_spawn_failed(&mut self, h: SubprocessHandle) -> Result<(), DriverError> {
        self.core.spawn_failed(h.handle())
    }

    /// The child of `h` exited (the driver reaped it): `process_exited` is delivered now,
    /// whether or not its pipes are still open, and `connection_lost` once every pipe has
    /// closed. From now on no signal is passed to the driver for `h`.
    ///
    /// # Errors
    ///
    /// [`DriverError::StaleHandle`], [`DriverError::WrongKind`],
    /// [`DriverError::ProcessEvent`] before the spawn or when reported twice.
    pub fn handle_exited(
        &mut self,
        h: SubprocessHandle,
        status: ExitStatus,
        now: Instant,
        io: &mut dyn Io,
    ) -> Result<(), DriverError> {
        self.core.now = now;
        let r = self.core.exited(h.handle(), status);
        self.core.drain(io);
        r
    }

    /// The subprocess `h`, read-only: pid, return code, pipes, closing state.
    ///
    /// # Errors
    ///
    /// [`DriverError::StaleHandle`] (also after its `connection_lost`),
    /// [`DriverError::WrongKind`].
    pub fn subprocess(&self, h: SubprocessHandle) -> Result<&SubprocessTransport, DriverError> {
        match &self.core.entry(h.handle()).map_err(|_| DriverError::StaleHandle)?.transport {
            Transport::Subprocess(t) => Ok(t),
            _ => Err(DriverError::WrongKind { expected: "subprocess" }),
        }
    }
}

impl Ctx<'_> {
    /// This callback's transport as a subprocess (in a [`SubprocessProtocol`] callback,
    /// pipe callbacks included).
    pub fn subprocess(&self) -> SubprocessHandle {
        SubprocessHandle::from_handle(self.this)
    }

    fn process(&self, h: SubprocessHandle) -> Result<&SubprocessTransport, HandleError> {
        match &self.checked(h.handle(), TransportKind::Subprocess)?.transport {
            Transport::Subprocess(t) => Ok(t),
            _ => Err(HandleError::Stale),
        }
    }

    /// asyncio's `get_pid()`: the child's pid (`None` only before the driver reported the
    /// spawn, so never inside a callback of `h`).
    ///
    /// # Errors
    ///
    /// [`HandleError`].
    pub fn pid(&self, h: SubprocessHandle) -> Result<Option<u32>, HandleError> {
        Ok(self.process(h)?.pid())
    }

    /// asyncio's `get_returncode()`: `None` while the child runs, then its exit code or
    /// the negative number of the signal that killed it. Known from `process_exited` on,
    /// even while pipes are still open.
    ///
    /// # Errors
    ///
    /// [`HandleError`] (stale after `connection_lost`).
    pub fn returncode(&self, h: SubprocessHandle) -> Result<Option<i32>, HandleError> {
        Ok(self.process(h)?.returncode())
    }

    /// asyncio's `get_pipe_transport(0)`: the child's stdin, `None` when not piped.
    ///
    /// # Errors
    ///
    /// [`HandleError`].
    pub fn stdin(&self, h: SubprocessHandle) -> Result<Option<WritePipeHandle>, HandleError> {
        Ok(self.process(h)?.pipe(0).map(WritePipeHandle::from_handle))
    }

    /// asyncio's `get_pipe_transport(1)`: the child's stdout, `None` when not piped.
    ///
    /// # Errors
    ///
    /// [`HandleError`].
    pub fn stdout(&self, h: SubprocessHandle) -> Result<Option<ReadPipeHandle>, HandleError> {
        Ok(self.process(h)?.pipe(1).map(ReadPipeHandle::from_handle))
    }

    /// asyncio's `get_pipe_transport(2)`: the child's stderr, `None` when not piped (or
    /// redirected to stdout).
    ///
    /// # Errors
    ///
    /// [`HandleError`].
    pub fn stderr(&self, h: SubprocessHandle) -> Result<Option<ReadPipeHandle>, HandleError> {
        Ok(self.process(h)?.pipe(2).map(ReadPipeHandle::from_handle))
    }

    /// Sends signal `sig` to the child through the driver ([`Io::send_signal`]). After
    /// the exit was reported nothing is sent and this returns `Ok` — until
    /// `connection_lost`, after which it fails with [`SignalError::ProcessLookup`]
    /// (asyncio's rule, without the risk of hitting a recycled pid).
    ///
    /// # Errors
    ///
    /// [`SignalError`].
    pub fn send_signal(&mut self, h: SubprocessHandle, sig: i32) -> Result<(), SignalError> {
        self.core.signal_subprocess(h.handle(), sig, self.io)
    }

    /// Replaces the subprocess's protocol after the current callback, with the rules of
    /// [`set_protocol`](Self::set_protocol): its pipes' callbacks go to the new one too,
    /// which hears `pause_writing` first if stdin is paused.
    ///
    /// # Errors
    ///
    /// [`HandleError`].
    pub fn set_subprocess_protocol(
        &mut self,
        h: SubprocessHandle,
        protocol: Box<dyn SubprocessProtocol>,
    ) -> Result<(), HandleError> {
        self.checked(h.handle(), TransportKind::Subprocess)?;
        self.core.set_swap(h.handle(), AnyProtocol::Subprocess(protocol));
        Ok(())
    }

    /// `send_signal(SIGTERM)`: the return code becomes −15 if the child dies of it.
    ///
    /// # Errors
    ///
    /// As [`send_signal`](Self::send_signal).
    pub fn terminate(&mut self, h: SubprocessHandle) -> Result<(), SignalError> {
        self.send_signal(h, signal::SIGTERM)
    }

    /// `send_signal(SIGKILL)`: the return code becomes −9.
    ///
    /// # Errors
    ///
    /// As [`send_signal`](Self::send_signal).
    pub fn kill(&mut self, h: SubprocessHandle) -> Result<(), SignalError> {
        self.send_signal(h, signal::SIGKILL)
    }
}
