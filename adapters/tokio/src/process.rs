//! Child processes on tokio: asyncio's `subprocess_exec` / `subprocess_shell`, with the
//! poll loop's semantics.
//!
//! * The child is spawned by [`aioport_async_kit::process::spawn`] (shared with the poll
//!   loop and smol): close-on-exec, non-blocking parent pipe ends; the child's ends are
//!   closed in the parent right after the spawn.
//! * The parent's pipe ends are pipe transports of the loop's stream table (`pipes.rs`):
//!   stdout and stderr are read like any read pipe, and stdin's watcher reports the child
//!   closing its end (`EPOLLERR`), which the core hears as readability.
//! * The exit is watched through the child's **pidfd** with tokio's fd readiness, then
//!   reaped with `waitid(P_PIDFD)` — never a `SIGCHLD` handler, never
//!   `waitpid(-1)`. Signals go through `pidfd_send_signal`, and none is sent after the
//!   exit was reported (the core refuses them), so a recycled pid is never hit.
//! * A child still running when the loop is dropped is killed (`SIGKILL`) and reaped.

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::fd::AsFd;
use std::process::Command;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use aioport::{ExitStatus, Extra, Handle, HandleError, SubprocessHandle, SubprocessProtocol};
use aioport_async_kit::process::{self, Child, Spawned};
pub use aioport_async_kit::process::{Stdio, SubprocessOptions};
use aioport_async_kit::wake::{Key, KeyWaker};
use tokio::net::unix::pipe;

use crate::event_loop::Loop;
use crate::sockets::Sock;
use crate::{Error, ErrorReport};

/// A child, watched through its pidfd until reaped. The pidfd is registered with tokio
/// through a duplicate wrapped in tokio's pipe `Receiver` (unchecked): in tokio 1.54
/// `AsyncFd` registration is `unsafe`, and this crate has none; the receiver is only ever
/// asked for readiness, never read.
struct ChildProc {
    child: Child,
    watch: pipe::Receiver,
    wake: Arc<KeyWaker>,
    waker: Waker,
}

/// The loop's children by their subprocess transport's handle.
#[derive(Default)]
pub(crate) struct Procs {
    children: HashMap<Handle, ChildProc>,
    /// `wait_subprocess` calls in progress: filled when the child is reaped.
    waiters: Vec<(Handle, Rc<Cell<Option<ExitStatus>>>)>,
}

fn not_open() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "aioport-tokio: no such child process")
}

impl Procs {
    /// `Io::send_signal`: through the pidfd, never to a pid that could be recycled.
    pub(crate) fn send_signal(&mut self, h: Handle, sig: i32) -> io::Result<()> {
        self.children.get(&h).ok_or_else(not_open)?.child.send_signal(sig)
    }

    /// `Io::close` for a process the core is done with: forgotten once reaped (a child
    /// still running stays watched until it exits).
    pub(crate) fn close(&mut self, h: Handle) -> bool {
        match self.children.get(&h) {
            Some(c) if c.child.is_reaped() => {
                self.children.remove(&h);
                true
            }
            Some(_) => true,
            None => false,
        }
    }

    /// Reaps `h` if its pidfd says it exited: its status, once. Otherwise tokio keeps the
    /// child's waker.
    fn poll_reap(&mut self, h: Handle) -> Option<ExitStatus> {
        let c = self.children.get_mut(&h)?;
        if c.child.is_reaped() {
            return None;
        }
        let mut cx = Context::from_waker(&c.waker);
        if !matches!(c.watch.poll_read_ready(&mut cx), Poll::Ready(Ok(()))) {
            return None;
        }
        let Some(status) = c.child.try_reap() else {
            // Not exited after all: forget the readiness and wait for the next edge.
            let _ = c.watch.try_io(|| Err::<(), _>(io::ErrorKind::WouldBlock.into()));
            return None;
        };
        for (_, cell) in self.waiters.iter().filter(|(w, _)| *w == h) {
            cell.set(Some(status));
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
    /// callbacks. Call it inside the loop's runtime.
    ///
    /// ```
    /// use std::cell::RefCell;
    /// use std::rc::Rc;
    /// use std::time::Duration;
    /// use aioport::{CallbackResult, Ctx, SubprocessProtocol};
    /// use aioport_tokio::{Loop, SubprocessOptions};
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
    /// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    /// rt.block_on(async {
    ///     let mut lp = Loop::new();
    ///     let out = Rc::new(RefCell::new(Out::default()));
    ///     let p = Box::new(Collect(out.clone()));
    ///     lp.subprocess_exec(p, "cat", [] as [&str; 0], SubprocessOptions::default()).await?;
    ///     lp.run_until_timeout(|| out.borrow().done, Duration::from_secs(20)).await?;
    ///     assert_eq!(out.borrow().data, b"hello");
    ///     assert_eq!(out.borrow().code, Some(0));
    ///     Ok::<(), Box<dyn std::error::Error>>(())
    /// })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`] when the program cannot be started (not found, not executable,
    /// out of descriptors, no pidfd support: Linux 5.3 or later is required, or no tokio
    /// runtime); the protocol is then dropped without a callback.
    pub async fn subprocess_exec<I, S>(
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
    pub async fn subprocess_shell(
        &mut self,
        protocol: Box<dyn SubprocessProtocol>,
        cmd: impl AsRef<OsStr>,
        options: SubprocessOptions,
    ) -> Result<SubprocessHandle, Error> {
        self.subprocess_exec(protocol, "/bin/sh", [OsStr::new("-c"), cmd.as_ref()], options).await
    }

    fn spawn_command(
        &mut self,
        protocol: Box<dyn SubprocessProtocol>,
        cmd: Command,
        options: SubprocessOptions,
    ) -> io::Result<SubprocessHandle> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(io::Error::other(
                "aioport-tokio: subprocesses are started inside the loop's tokio runtime",
            ));
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
        let mut setup: io::Result<()> = Ok(());
        let watch =
            child.as_fd().try_clone_to_owned().and_then(pipe::Receiver::from_owned_fd_unchecked);
        match watch {
            Ok(watch) => {
                let (wake, waker) = KeyWaker::new(Key::Conn(h.handle()), &self.shared);
                let proc = ChildProc { child, watch, wake, waker };
                self.io.procs.children.insert(h.handle(), proc);
            }
            // `child` is dropped with the error: killed and reaped.
            Err(e) => setup = Err(e),
        }
        let ends = [
            (pipes.stdin.map(Handle::from), stdin.map(|fd| (fd, true))),
            (pipes.stdout.map(Handle::from), stdout.map(|fd| (fd, false))),
            (pipes.stderr.map(Handle::from), stderr.map(|fd| (fd, false))),
        ];
        for (ph, end) in ends {
            let (Some(ph), Some((fd, write))) = (ph, end) else { continue };
            let sock = if write {
                pipe::Sender::from_owned_fd_unchecked(fd).map(|s| Sock::PipeWrite(Rc::new(s)))
            } else {
                pipe::Receiver::from_owned_fd_unchecked(fd).map(|r| Sock::PipeRead(Rc::new(r)))
            };
            match sock {
                Ok(sock) => {
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
            // Without its watches the child cannot be driven: end it (a child still
            // running is killed and reaped when its watch is dropped).
            let _ = self.registry.enter(now, &mut self.io, |ctx| ctx.close(h));
            self.after_registry(now);
            return Err(e);
        }
        // The first serve polls the pidfd (the child may already have exited).
        self.ready.push_back(Key::Conn(h.handle()));
        self.after_registry(now);
        Ok(h)
    }

    /// Runs the loop until the child of `h` has exited and returns its return code
    /// (asyncio's `await proc.wait()`): the exit code, or the negative number of the
    /// signal that killed it. It resolves at the exit — a grandchild that keeps stdout
    /// open does not delay it — and at once if the exit is already known. Other
    /// transports are served meanwhile; at most `timeout`.
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
        let known = match self.registry.subprocess(h) {
            Ok(t) => t.returncode(),
            Err(_) => return Err(Error::NoSuchProcess(HandleError::Stale)),
        };
        if let Some(code) = known {
            return Ok(code);
        }
        let cell = Rc::new(Cell::new(None));
        self.io.procs.waiters.push((h.handle(), cell.clone()));
        let r = tokio::time::timeout(timeout, self.run(false, |_| cell.get().is_some())).await;
        self.io.procs.waiters.retain(|(_, c)| !Rc::ptr_eq(c, &cell));
        r.map_err(|_| Error::TimedOut)?;
        cell.get().map(ExitStatus::returncode).ok_or(Error::TimedOut)
    }

    /// Serves a child: reaps it once its pidfd is readable. False if `h` is not a child.
    pub(crate) fn serve_process(&mut self, h: Handle, now: Instant, woken: bool) -> bool {
        let Some(c) = self.io.procs.children.get(&h) else { return false };
        if woken {
            c.wake.taken();
        }
        if let Some(status) = self.io.procs.poll_reap(h) {
            let sh = SubprocessHandle::from_handle(h);
            let r = self.registry.handle_exited(sh, status, now, &mut self.io);
            self.report_process(h, r);
            self.io.procs.close_if_done(h, &self.registry);
            self.after_registry(now);
        }
        true
    }

    fn report_process(&mut self, h: Handle, r: Result<(), aioport::DriverError>) {
        if let Err(error) = r {
            (self.hook)(ErrorReport::Driver { handle: h, error });
        }
    }
}

impl Procs {
    /// After the exit: a transport the core already closed is forgotten now.
    fn close_if_done(&mut self, h: Handle, registry: &aioport::Registry) {
        if registry.subprocess(SubprocessHandle::from_handle(h)).is_err() {
            self.children.remove(&h);
        }
    }
}
