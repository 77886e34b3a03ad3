//! Child processes on the poll loop: asyncio's `subprocess_exec` / `subprocess_shell`.
//!
//! * The child is spawned by [`aioport_async_kit::process::spawn`], which the tokio and
//!   smol drivers share: its stdin, stdout and stderr are each a new pipe, the parent's
//!   stdio, `/dev/null`, stdout's target (stderr only) or a given fd ([`Stdio`]). Every
//!   pipe end and the pidfd are close-on-exec, so no other child inherits them; the
//!   child's ends are closed in the parent right after the spawn.
//! * The parent's pipe ends are non-blocking, registered once with mio (edge-triggered,
//!   with the same readiness cache as sockets) and driven through the core's ordinary pipe
//!   faces (`on_readable` / `on_writable`; readable on the stdin pipe means the child
//!   closed its end).
//! * The exit is detected with a **pidfd** (`pidfd_open`, readable when the child exits),
//!   then reaped with `waitid(P_PIDFD)` — never a `SIGCHLD` handler, never `waitpid(-1)`,
//!   which would steal other libraries' children. Signals go through
//!   `pidfd_send_signal`, so even a raced signal cannot hit a recycled pid.
//! * Every child is reaped: when its exit is seen, and, for children still running when
//!   the loop is dropped, by killing them (`SIGKILL`) and waiting.
//!
//! The pipe plumbing is self-contained here (the socket table only forwards the
//! [`Io`](aioport::Io) calls for handles it does not own), so it can later share code with
//! the loop's other pipe transports.

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::process::Command;
use std::rc::Rc;
use std::time::{Duration, Instant};

use aioport::{ExitStatus, Extra, Handle, HandleError, SubprocessHandle, SubprocessProtocol};
use aioport_async_kit::process::{self, Child, Spawned};
pub use aioport_async_kit::process::{Stdio, SubprocessOptions};
use mio::event::Event;
use mio::unix::SourceFd;
use mio::unix::pipe::{Receiver, Sender};
use mio::{Interest, Token};

use crate::event_loop::Loop;
use crate::{Error, ErrorReport};

/// Tokens of pipes and pidfds carry this bit (listeners have bit 62, sockets neither).
pub(crate) const PROCESS_BIT: usize = 1 << 61;

/// Reads per pipe per serve, as for sockets: then other transports go first.
const READ_BUDGET: u32 = 8;

/// The parent's end of one of a child's pipes.
#[derive(Debug)]
enum End {
    /// The child's stdin: the loop writes.
    Stdin(Sender),
    /// The child's stdout or stderr: the loop reads.
    Output(Receiver),
}

impl End {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            End::Stdin(s) => s,
            End::Output(r) => r,
        }
    }
}

/// One pipe end with its readiness cache (the same rules as a socket's: cleared on
/// `WouldBlock` or a short read or write).
#[derive(Debug)]
struct PipeConn {
    end: End,
    token: Token,
    readable: bool,
    writable: bool,
    /// The other end closed (`EPOLLHUP` / `EPOLLERR`): sticky, no edge follows it. On
    /// the stdin pipe this is what `on_readable` reports to the core.
    hangup: bool,
    queued: bool,
}

/// A child, watched through its pidfd until reaped (and killed and reaped if the loop is
/// dropped first: [`Child`]'s `Drop`).
#[derive(Debug)]
struct ChildProc {
    child: Child,
    token: Token,
}

/// The loop's children and their pipes; the socket table forwards `Io` calls for the
/// handles it does not own here.
#[derive(Debug, Default)]
pub(crate) struct Procs {
    pipes: HashMap<Handle, PipeConn>,
    children: HashMap<Handle, ChildProc>,
    tokens: HashMap<Token, Handle>,
    registry: Option<mio::Registry>,
    /// `wait_subprocess` calls in progress: filled when the child is reaped.
    waiters: Vec<(Handle, Rc<Cell<Option<ExitStatus>>>)>,
}

fn not_open() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "aioport-poll: no open socket or pipe for this handle",
    )
}

/// A token for `h` in the process space: its index and 29 bits of its generation.
fn token(h: Handle) -> Token {
    Token(PROCESS_BIT | h.index() as usize | ((h.generation() as usize & 0x1fff_ffff) << 32))
}

impl Procs {
    /// True when the loop has no child and no pipe (the socket paths skip this module).
    pub(crate) fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// True when `t` names one of these pipes or pidfds.
    pub(crate) fn owns(&self, t: Token) -> bool {
        self.tokens.contains_key(&t)
    }

    fn register(
        &mut self,
        source: &mut dyn mio::event::Source,
        h: Handle,
        i: Interest,
    ) -> io::Result<Token> {
        let registry = self.registry.as_ref().ok_or_else(not_open)?;
        let t = token(h);
        registry.register(source, t, i)?;
        self.tokens.insert(t, h);
        Ok(t)
    }

    /// A pipe the core wants served now (its interest changed while the cache is ready).
    pub(crate) fn wants_service(&mut self, h: Handle, read: bool, write: bool) -> bool {
        let Some(p) = self.pipes.get_mut(&h) else { return false };
        if p.queued || !((read && (p.readable || p.hangup)) || (write && p.writable)) {
            return false;
        }
        p.queued = true;
        true
    }

    pub(crate) fn try_send(&mut self, h: Handle, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let p = self.pipes.get_mut(&h).ok_or_else(not_open)?;
        let End::Stdin(s) = &mut p.end else { return Err(not_open()) };
        if !p.writable {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        loop {
            let r = match bufs {
                [one] => s.write(one),
                _ => s.write_vectored(bufs),
            };
            match r {
                Ok(n) => {
                    if n < bufs.iter().map(|b| b.len()).sum() {
                        p.writable = false;
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if e.kind() == io::ErrorKind::WouldBlock {
                        p.writable = false;
                    }
                    return Err(e);
                }
            }
        }
    }

    pub(crate) fn try_recv(&mut self, h: Handle, buf: &mut [u8]) -> io::Result<usize> {
        let p = self.pipes.get_mut(&h).ok_or_else(not_open)?;
        let End::Output(r) = &mut p.end else { return Err(not_open()) };
        if !p.readable && !p.hangup {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        loop {
            match r.read(buf) {
                Ok(n) => {
                    if n < buf.len() && !p.hangup {
                        p.readable = false;
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if e.kind() == io::ErrorKind::WouldBlock {
                        p.readable = false;
                        p.hangup = false;
                    }
                    return Err(e);
                }
            }
        }
    }

    /// `Io::close` for a pipe (closing the parent's end: the child sees EOF on stdin or
    /// `EPIPE` on its output) or for a process the core is done with (already reaped).
    pub(crate) fn close(&mut self, h: Handle) {
        if let Some(mut p) = self.pipes.remove(&h) {
            self.tokens.remove(&p.token);
            if let Some(registry) = &self.registry {
                let _ = registry.deregister(p.end.source());
            }
        } else if let Some(c) = self.children.get(&h)
            && c.child.is_reaped()
        {
            self.children.remove(&h);
        }
    }

    /// `Io::send_signal`: through the pidfd, never to a pid that could be recycled.
    pub(crate) fn send_signal(&mut self, h: Handle, sig: i32) -> io::Result<()> {
        self.children.get(&h).ok_or_else(not_open)?.child.send_signal(sig)
    }

    /// Reaps `h` if it exited: its status, once.
    fn reap(&mut self, h: Handle) -> Option<ExitStatus> {
        let c = self.children.get_mut(&h)?;
        let status = c.child.try_reap()?;
        self.tokens.remove(&c.token);
        for (_, cell) in self.waiters.iter().filter(|(w, _)| *w == h) {
            cell.set(Some(status));
        }
        if let Some(registry) = &self.registry {
            let _ = registry.deregister(&mut SourceFd(&c.child.as_fd().as_raw_fd()));
        }
        Some(status)
    }
}

impl Loop {
    /// Starts `program` with `args` (asyncio's `loop.subprocess_exec`): `protocol` hears
    /// `connection_made` before this returns, then the pipes' data, `process_exited` and
    /// `connection_lost` as the loop runs. Use the returned handle with
    /// [`Ctx::stdin`](aioport::Ctx::stdin), [`Ctx::send_signal`](aioport::Ctx::send_signal),
    /// [`Ctx::close`](aioport::Ctx::close), … through [`with`](Self::with) or from
    /// callbacks.
    ///
    /// ```
    /// use std::cell::RefCell;
    /// use std::rc::Rc;
    /// use std::time::Duration;
    /// use aioport::{CallbackResult, Ctx, SubprocessProtocol};
    /// use aioport_poll::{Loop, SubprocessOptions};
    ///
    /// #[derive(Default)]
    /// struct Out { data: Vec<u8>, code: Option<i32>, done: bool }
    /// struct Collect(Rc<RefCell<Out>>);
    /// impl SubprocessProtocol for Collect {
    ///     fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
    ///         let stdin = ctx.stdin(ctx.subprocess())?.expect("piped");
    ///         ctx.write_slice(stdin, b"hello")?;
    ///         Ok(ctx.write_eof(stdin)?)
    ///     }
    ///     fn pipe_data_received(&mut self, _: &mut Ctx<'_>, _: u32, d: &[u8]) -> CallbackResult {
    ///         Ok(self.0.borrow_mut().data.extend_from_slice(d))
    ///     }
    ///     fn process_exited(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
    ///         Ok(self.0.borrow_mut().code = ctx.returncode(ctx.subprocess())?)
    ///     }
    ///     fn connection_lost(&mut self, _: &mut Ctx<'_>, _: Option<aioport::ConnectionError>) -> CallbackResult {
    ///         Ok(self.0.borrow_mut().done = true)
    ///     }
    /// }
    ///
    /// let mut lp = Loop::new()?;
    /// let out = Rc::new(RefCell::new(Out::default()));
    /// lp.subprocess_exec(Box::new(Collect(out.clone())), "cat", [] as [&str; 0], SubprocessOptions::default())?;
    /// lp.run_until_timeout(|| out.borrow().done, Duration::from_secs(20))?;
    /// assert_eq!(out.borrow().data, b"hello");
    /// assert_eq!(out.borrow().code, Some(0));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`] when the program cannot be started (not found, not executable,
    /// out of descriptors, no pidfd support: Linux 5.3 or later is required); the
    /// protocol is then dropped without a callback.
    pub fn subprocess_exec<I, S>(
        &mut self,
        protocol: Box<dyn SubprocessProtocol>,
        program: impl AsRef<OsStr>,
        args: I,
        options: SubprocessOptions,
    ) -> Result<SubprocessHandle, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let program = program.as_ref().to_owned();
        let mut cmd = Command::new(&program);
        cmd.args(args);
        self.spawn_command(protocol, cmd, options).map_err(|error| Error::Spawn { program, error })
    }

    /// Runs `cmd` with `/bin/sh -c` (asyncio's `loop.subprocess_shell`); otherwise as
    /// [`subprocess_exec`](Self::subprocess_exec).
    ///
    /// # Errors
    ///
    /// As [`subprocess_exec`](Self::subprocess_exec).
    pub fn subprocess_shell(
        &mut self,
        protocol: Box<dyn SubprocessProtocol>,
        cmd: impl AsRef<OsStr>,
        options: SubprocessOptions,
    ) -> Result<SubprocessHandle, Error> {
        self.subprocess_exec(protocol, "/bin/sh", [OsStr::new("-c"), cmd.as_ref()], options)
    }

    fn spawn_command(
        &mut self,
        protocol: Box<dyn SubprocessProtocol>,
        cmd: Command,
        options: SubprocessOptions,
    ) -> io::Result<SubprocessHandle> {
        if self.io.procs.registry.is_none() {
            self.io.procs.registry = Some(self.poll.registry().try_clone()?);
        }
        let pipes = self.registry.insert_subprocess(protocol, options.piped(), Extra::default());
        let h = pipes.process;
        let Spawned { child, stdin, stdout, stderr } = match process::spawn(cmd, options) {
            Ok(s) => s,
            Err(e) => {
                let _ = self.registry.handle_spawn_failed(h);
                return Err(e);
            }
        };
        let pid = child.pid();
        let procs = &mut self.io.procs;
        // Kept before anything can fail, so the child is reaped whatever happens next.
        let t = token(h.handle());
        let fd = child.as_fd().as_raw_fd();
        procs.children.insert(h.handle(), ChildProc { child, token: t });
        let mut setup =
            procs.register(&mut SourceFd(&fd), h.handle(), Interest::READABLE).map(|_| ());
        let p0 = stdin.map(|fd| End::Stdin(Sender::from(fd)));
        let p1 = stdout.map(|fd| End::Output(Receiver::from(fd)));
        let p2 = stderr.map(|fd| End::Output(Receiver::from(fd)));
        let handles: [Option<Handle>; 3] = [
            pipes.stdin.map(Into::into),
            pipes.stdout.map(Into::into),
            pipes.stderr.map(Into::into),
        ];
        for (end, ph) in [p0, p1, p2].into_iter().zip(handles) {
            let (Some(mut end), Some(ph)) = (end, ph) else { continue };
            let interest = match end {
                End::Stdin(_) => Interest::WRITABLE,
                End::Output(_) => Interest::READABLE,
            };
            let writable = matches!(end, End::Stdin(_));
            match procs.register(end.source(), ph, interest) {
                Ok(token) => {
                    procs.pipes.insert(
                        ph,
                        PipeConn {
                            end,
                            token,
                            readable: false,
                            writable,
                            hangup: false,
                            queued: false,
                        },
                    );
                }
                Err(e) => setup = setup.and(Err(e)),
            }
        }
        let now = Instant::now();
        let r = self.registry.handle_spawned(h, pid, now, &mut self.io);
        self.report_process(h.handle(), r);
        if let Err(e) = setup {
            // Without its watches the child cannot be driven: end it (the exit is still
            // reaped, at the latest when the loop is dropped).
            let _ = self.registry.enter(now, &mut self.io, |ctx| ctx.close(h));
            self.after_registry(now);
            return Err(e);
        }
        self.after_registry(now);
        // The child may have exited before its pidfd was registered: the pidfd is
        // readable then, and epoll reports it at the first wait.
        Ok(h)
    }

    /// Runs the loop until the child of `h` has exited and returns its return code
    /// (asyncio's `await proc.wait()`): the exit code, or the negative number of the
    /// signal that killed it. It resolves at the exit — a grandchild that keeps stdout
    /// open does not delay it — and at once if the exit is already known. Other
    /// transports are served meanwhile.
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchProcess`] when the transport is already gone (its
    /// `connection_lost` was delivered); [`Error::TimedOut`] when the child did not exit
    /// within `timeout` (or the loop was stopped first); [`Error::AlreadyRunning`];
    /// [`Error::Io`].
    pub fn wait_subprocess(
        &mut self,
        h: SubprocessHandle,
        timeout: Duration,
    ) -> Result<i32, Error> {
        let known = match self.registry.subprocess(h) {
            Ok(t) => t.returncode(),
            Err(_) => return Err(Error::NoSuchProcess(HandleError::Stale)),
        };
        if let Some(code) = known {
            return Ok(code);
        }
        let cell = Rc::new(Cell::new(None));
        self.io.procs.waiters.push((h.handle(), cell.clone()));
        let r = self.run_until_timeout(|| cell.get().is_some(), timeout);
        self.io.procs.waiters.retain(|(_, c)| !Rc::ptr_eq(c, &cell));
        r?;
        cell.get().map(ExitStatus::returncode).ok_or(Error::TimedOut)
    }

    fn report_process(&mut self, h: Handle, r: Result<(), aioport::DriverError>) {
        if let Err(error) = r {
            (self.hook)(ErrorReport::Driver { handle: h, error });
        }
    }

    /// A readiness event for a pipe or a pidfd.
    pub(crate) fn on_process_event(&mut self, t: Token, ev: &Event, now: Instant) {
        let Some(&h) = self.io.procs.tokens.get(&t) else { return };
        if let Some(p) = self.io.procs.pipes.get_mut(&h) {
            match p.end {
                End::Stdin(_) => {
                    p.writable |= ev.is_writable() || ev.is_error() || ev.is_write_closed();
                    p.hangup |= ev.is_error() || ev.is_write_closed();
                }
                End::Output(_) => {
                    p.readable |= ev.is_readable() || ev.is_read_closed() || ev.is_error();
                    p.hangup |= ev.is_read_closed() || ev.is_error();
                }
            }
            return self.serve_pipe(h, now);
        }
        if let Some(status) = self.io.procs.reap(h) {
            let sh = SubprocessHandle::from_handle(h);
            let r = self.registry.handle_exited(sh, status, now, &mut self.io);
            self.report_process(h, r);
            self.after_registry(now);
        }
    }

    /// Serves one pipe: flush stdin, or read stdout / stderr while readable and wanted;
    /// on stdin, a hang-up is reported as readable (the child closed its end).
    pub(crate) fn serve_pipe(&mut self, h: Handle, now: Instant) {
        let Some(p) = self.io.procs.pipes.get_mut(&h) else { return };
        p.queued = false;
        let stdin = matches!(p.end, End::Stdin(_));
        let Ok(interest) = self.registry.interest(h) else { return };
        if p.writable && interest.write {
            let r = self.registry.on_writable(h, now, &mut self.io);
            self.report_process(h, r);
        }
        for round in 0..=READ_BUDGET {
            let Some(p) = self.io.procs.pipes.get_mut(&h) else { break };
            let ready = if stdin { p.hangup } else { p.readable || p.hangup };
            if !ready || !self.registry.interest(h).is_ok_and(|i| i.read) {
                break;
            }
            if round == READ_BUDGET {
                p.queued = true;
                self.ready.push_back(h);
                break;
            }
            let before = self.io.recv_calls;
            let r = self.registry.on_readable(h, now, &mut self.io);
            let failed = r.is_err();
            self.report_process(h, r);
            // No read made (the core holds data back): wait for a change, never spin.
            if failed || stdin || self.io.recv_calls == before {
                break;
            }
        }
        self.after_registry(now);
    }
}
