//! Child processes on smol: asyncio's `subprocess_exec` / `subprocess_shell`, with the poll
//! loop's semantics.
//!
//! * The child is spawned by [`aioport_async_kit::process::spawn`] (shared with the poll
//!   loop and tokio): each piped fd is a new pipe whose parent end is non-blocking and
//!   close-on-exec; the child's ends are closed in the parent right after the spawn.
//! * The parent's pipe ends are ordinary pipe sockets of the loop's table (async-io's
//!   `Async<File>`), driven through the core's pipe faces: stdout and stderr are read like
//!   a read pipe; on stdin, readable means the child closed its end (as for a write pipe).
//! * The exit is seen through the child's **pidfd**, watched with async-io's readiness (a
//!   duplicate of it is registered), then reaped with `waitid(P_PIDFD)` — never a
//!   `SIGCHLD` handler, never `waitpid(-1)`. Signals go through `pidfd_send_signal`, so no
//!   signal reaches the child after it was reaped (a recycled pid is never hit).
//! * Every child is reaped: when its exit is seen, and, for children still running when
//!   the loop is dropped, by killing them (`SIGKILL`) and waiting. pidfds need Linux 5.3
//!   or later; elsewhere spawning fails ([`Error::Spawn`]).

use std::ffi::OsStr;
use std::io;
use std::os::fd::AsFd;
use std::process::Command;
use std::task::Context;
use std::time::{Duration, Instant};

use aioport::{Handle, HandleError, SubprocessHandle, SubprocessProtocol};
use aioport_async_kit::process::{self, Spawned};
pub use aioport_async_kit::process::{Stdio, SubprocessOptions};
use async_io::Async;

use crate::sockets::Sock;
use crate::{Error, Loop};

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
    /// use aioport_smol::{Loop, SubprocessOptions};
    ///
    /// #[derive(Default)]
    /// struct Out { data: Vec<u8>, done: bool }
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
    ///     fn connection_lost(&mut self, _: &mut Ctx<'_>, _: Option<aioport::ConnectionError>) -> CallbackResult {
    ///         Ok(self.0.borrow_mut().done = true)
    ///     }
    /// }
    ///
    /// async_io::block_on(async {
    ///     let mut lp = Loop::new();
    ///     let out = Rc::new(RefCell::new(Out::default()));
    ///     let opts = SubprocessOptions::default();
    ///     let h = lp.subprocess_exec(Box::new(Collect(out.clone())), "cat", [] as [&str; 0], opts)?;
    ///     let code = lp.wait_subprocess(h, Duration::from_secs(20)).await?;
    ///     assert_eq!(code, 0);
    ///     lp.run_until_timeout(|| out.borrow().done, Duration::from_secs(20)).await?;
    ///     assert_eq!(out.borrow().data, b"hello");
    ///     Ok::<(), Box<dyn std::error::Error>>(())
    /// })?;
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
        let pipes =
            self.registry.insert_subprocess(protocol, options.piped(), aioport::Extra::default());
        let h = pipes.process;
        let Spawned { child, stdin, stdout, stderr } = match process::spawn(cmd, options) {
            Ok(s) => s,
            Err(e) => {
                let _ = self.registry.handle_spawn_failed(h);
                return Err(e);
            }
        };
        let pid = child.pid();
        // The child goes into the table before anything else can fail, so it is reaped
        // whatever happens next. Without a watch it cannot be driven: it is killed and
        // reaped at once (dropped), and the transport closed below.
        let mut setup = Ok(());
        match child.as_fd().try_clone_to_owned().and_then(Async::new_nonblocking) {
            Ok(watch) => {
                self.io.insert(h.handle(), Sock::Process { watch, child }, None);
                // Its first serve arms the watch.
                self.queue(h.handle());
            }
            Err(e) => {
                drop(child);
                setup = Err(e);
            }
        }
        let ends = [
            (stdin, pipes.stdin.map(Handle::from), true),
            (stdout, pipes.stdout.map(Handle::from), false),
            (stderr, pipes.stderr.map(Handle::from), false),
        ];
        for (fd, ph, write) in ends {
            let (Some(fd), Some(ph)) = (fd, ph) else { continue };
            match Async::new_nonblocking(std::fs::File::from(fd)) {
                Ok(a) => {
                    let sock = if write { Sock::PipeWrite(a) } else { Sock::PipeRead(a) };
                    self.io.insert(ph, sock, None);
                    self.queue(ph);
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
            self.registry.enter(now, &mut self.io, |ctx| {
                let _ = ctx.close(h);
            });
            self.after_registry(now);
            return Err(e);
        }
        self.after_registry(now);
        Ok(h)
    }

    /// Runs the loop until the child of `h` has exited and returns its return code
    /// (asyncio's `await proc.wait()`): the exit code, or the negative number of the
    /// signal that killed it. It resolves at the exit — a grandchild that keeps stdout
    /// open does not delay it — and at once if the exit is already known. Other
    /// transports are served meanwhile; a `stop()` does not end it.
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchProcess`] when the transport is already gone (its
    /// `connection_lost` was delivered); [`Error::TimedOut`] when the child did not exit
    /// within `timeout`.
    pub async fn wait_subprocess(
        &mut self,
        h: SubprocessHandle,
        timeout: Duration,
    ) -> Result<i32, Error> {
        match self.registry.subprocess(h) {
            Ok(t) => {
                if let Some(code) = t.returncode() {
                    return Ok(code);
                }
            }
            Err(_) => return Err(Error::NoSuchProcess(HandleError::Stale)),
        }
        self.waited = Some((h.handle(), None));
        let exited = |lp: &mut Loop| lp.waited.is_some_and(|(_, code)| code.is_some());
        let r = self.run_bounded(false, exited, timeout).await;
        let code = self.waited.take().and_then(|(_, c)| c);
        r?;
        code.ok_or(Error::TimedOut)
    }

    /// Serves a child's pidfd: once async-io saw it readable (the child exited), reaps the
    /// child and tells the core; otherwise the watch is armed (async-io re-arms its
    /// interest level-triggered, so an exit before that is reported at once).
    pub(crate) fn serve_process(&mut self, h: Handle, now: Instant) {
        let Some(c) = self.io.get_mut(h) else { return };
        let Sock::Process { watch, child } = &mut c.sock else { return };
        let mut cx = Context::from_waker(&c.waker);
        if watch.poll_readable(&mut cx).is_pending() {
            return;
        }
        let Some(status) = child.try_reap() else {
            // Not exited after all (or the reactor refused the pidfd): watch again.
            let _ = watch.poll_readable(&mut cx);
            return;
        };
        if let Some((w, slot)) = &mut self.waited
            && *w == h
        {
            *slot = Some(status.returncode());
        }
        let sh = SubprocessHandle::from_handle(h);
        let r = self.registry.handle_exited(sh, status, now, &mut self.io);
        self.report_process(h, r);
        if self.registry.subprocess(sh).is_err() {
            // The core is done with it (its transport already ended): forget the child.
            self.io.remove(h);
        }
        self.after_registry(now);
    }

    fn report_process(&mut self, h: Handle, r: Result<(), aioport::DriverError>) {
        if let Err(error) = r {
            (self.hook)(crate::ErrorReport::Driver { handle: h, error });
        }
    }
}
