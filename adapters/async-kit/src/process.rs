//! Child processes for the drivers: asyncio's `subprocess_exec` / `subprocess_shell`
//! without the readiness part, which each driver does with its own runtime.
//!
//! * [`spawn`] starts a [`Command`] with its stdin, stdout and stderr connected as
//!   [`SubprocessOptions`] says. Each [`Stdio::Pipe`] is a new pipe whose parent end is
//!   returned non-blocking; every parent end and the pidfd are close-on-exec, so no other
//!   child inherits them, and the child's ends are closed in the parent right after the
//!   spawn (EOF reaches the loop when the child, and its children, close theirs).
//! * The exit is watched through a **pidfd** ([`Child`], readable when the child exits)
//!   and reaped with `waitid(P_PIDFD)` — never a `SIGCHLD` handler, never `waitpid(-1)`,
//!   which would steal other libraries' children. Signals go through
//!   `pidfd_send_signal`, so even a raced signal cannot hit a recycled pid.
//! * A [`Child`] dropped before it was reaped is killed (`SIGKILL`) and waited for: no
//!   zombie outlives its loop.
//!
//! pidfds need Linux 5.3 or later; elsewhere [`spawn`] fails (and kills the child it
//! started) rather than fall back to a reaping scheme with different semantics.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::process::Command;

use aioport::ExitStatus;
use rustix::process::{
    Pid, PidfdFlags, Signal, WaitId, WaitIdOptions, pidfd_open, pidfd_send_signal, waitid,
};

/// The return code asyncio reports for a child whose status was lost (reaped by someone
/// else): 255.
const UNKNOWN_STATUS: i32 = 255;

/// What a child's stdin, stdout or stderr is connected to (asyncio's `stdin=`, `stdout=`,
/// `stderr=` arguments).
#[derive(Debug)]
#[non_exhaustive]
pub enum Stdio {
    /// A new pipe to the loop (`subprocess.PIPE`): the protocol's `pipe_data_received`
    /// for stdout and stderr, `ctx.stdin(..)` for stdin.
    Pipe,
    /// The loop process's own stdin, stdout or stderr (`None` in asyncio).
    Inherit,
    /// `/dev/null` (`subprocess.DEVNULL`).
    Null,
    /// For stderr only: wherever stdout goes (`subprocess.STDOUT`).
    Stdout,
    /// This file descriptor (a file, a socket, another pipe); the child gets a duplicate.
    Fd(OwnedFd),
}

/// How to start a child: stdio per fd, environment, working directory. The default pipes
/// all three, as asyncio's `subprocess_exec` does.
///
/// ```
/// use aioport_async_kit::process::{Stdio, SubprocessOptions};
/// let opts = SubprocessOptions::default()
///     .stdin(Stdio::Null)
///     .stderr(Stdio::Stdout)
///     .env("LC_ALL", "C")
///     .current_dir("/");
/// # let _ = opts;
/// ```
#[derive(Debug)]
pub struct SubprocessOptions {
    stdio: [Stdio; 3],
    env: Vec<(OsString, Option<OsString>)>,
    env_clear: bool,
    cwd: Option<PathBuf>,
}

impl Default for SubprocessOptions {
    fn default() -> Self {
        SubprocessOptions {
            stdio: [Stdio::Pipe, Stdio::Pipe, Stdio::Pipe],
            env: Vec::new(),
            env_clear: false,
            cwd: None,
        }
    }
}

impl SubprocessOptions {
    /// The child's stdin (fd 0).
    #[must_use]
    pub fn stdin(mut self, s: Stdio) -> Self {
        self.stdio[0] = s;
        self
    }

    /// The child's stdout (fd 1).
    #[must_use]
    pub fn stdout(mut self, s: Stdio) -> Self {
        self.stdio[1] = s;
        self
    }

    /// The child's stderr (fd 2); [`Stdio::Stdout`] sends it where stdout goes.
    #[must_use]
    pub fn stderr(mut self, s: Stdio) -> Self {
        self.stdio[2] = s;
        self
    }

    /// Sets an environment variable for the child.
    #[must_use]
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env.push((key.as_ref().to_owned(), Some(value.as_ref().to_owned())));
        self
    }

    /// Removes an environment variable for the child.
    #[must_use]
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.env.push((key.as_ref().to_owned(), None));
        self
    }

    /// Starts the child with an empty environment (plus what [`env`](Self::env) sets
    /// after this call).
    #[must_use]
    pub fn env_clear(mut self) -> Self {
        self.env_clear = true;
        self.env.clear();
        self
    }

    /// The child's working directory.
    #[must_use]
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }
}

impl SubprocessOptions {
    /// Which of stdin, stdout and stderr are new pipes to the loop: what the core's
    /// `Registry::insert_subprocess` wants to know before the spawn.
    pub fn piped(&self) -> [bool; 3] {
        self.stdio.each_ref().map(|s| matches!(s, Stdio::Pipe))
    }
}

/// A started child: its pidfd watch and the parent's ends of its pipes (non-blocking,
/// close-on-exec), `None` where the fd is not [`Stdio::Pipe`].
#[derive(Debug)]
pub struct Spawned {
    /// The child, until reaped.
    pub child: Child,
    /// The write end of the child's stdin.
    pub stdin: Option<OwnedFd>,
    /// The read end of the child's stdout.
    pub stdout: Option<OwnedFd>,
    /// The read end of the child's stderr.
    pub stderr: Option<OwnedFd>,
}

/// `/bin/sh -c cmd`: the command `subprocess_shell` runs.
pub fn shell_command(cmd: impl AsRef<OsStr>) -> Command {
    let mut c = Command::new("/bin/sh");
    c.arg("-c").arg(cmd);
    c
}

/// Starts `cmd` with the stdio, environment and working directory of `options` and opens
/// its pidfd.
///
/// ```
/// use std::process::Command;
/// use aioport_async_kit::process::{spawn, SubprocessOptions};
/// let spawned = spawn(Command::new("true"), SubprocessOptions::default())?;
/// assert!(spawned.stdin.is_some() && spawned.stdout.is_some() && spawned.stderr.is_some());
/// // Dropped before it was reaped: killed and waited for.
/// drop(spawned);
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
///
/// The spawn's error (not found, not executable, out of descriptors), `InvalidInput` for
/// [`Stdio::Stdout`] given to stdin or stdout, or the `pidfd_open` error (Linux before
/// 5.3); the child is then killed and reaped.
pub fn spawn(mut cmd: Command, options: SubprocessOptions) -> io::Result<Spawned> {
    let SubprocessOptions { stdio: [s0, s1, s2], env, env_clear, cwd } = options;
    if env_clear {
        cmd.env_clear();
    }
    for (k, v) in env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let (c0, stdin) = ends(0, s0)?;
    let (c1, stdout) = ends(1, s1)?;
    let (c2, stderr) = match s2 {
        Stdio::Stdout => (c1.try_clone(1)?, None),
        s => ends(2, s)?,
    };
    cmd.stdin(c0.into_std()).stdout(c1.into_std()).stderr(c2.into_std());
    let spawned = cmd.spawn();
    // The child's ends live in `cmd`: closed here, so EOF reaches the loop when the
    // child (and its children) close theirs.
    drop(cmd);
    let mut child = spawned?;
    match pidfd_open(Pid::from_child(&child), PidfdFlags::empty()) {
        Ok(pidfd) => Ok(Spawned {
            child: Child { pid: child.id(), pidfd, reaped: false },
            stdin,
            stdout,
            stderr,
        }),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e.into())
        }
    }
}

/// A child watched through its pidfd until reaped. The pidfd turns readable when the
/// child exits: wait for that with the runtime's fd readiness, then [`try_reap`].
///
/// [`try_reap`]: Child::try_reap
#[derive(Debug)]
pub struct Child {
    pid: u32,
    pidfd: OwnedFd,
    reaped: bool,
}

impl Child {
    /// The child's process id (what `SubprocessTransport::get_pid` returns).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// True once [`try_reap`](Self::try_reap) returned the status.
    pub fn is_reaped(&self) -> bool {
        self.reaped
    }

    /// The exit status if the child has exited, once: `None` while it runs and after the
    /// status was returned. A child reaped behind our back (`ECHILD`) reports 255, as
    /// asyncio does.
    pub fn try_reap(&mut self) -> Option<ExitStatus> {
        if self.reaped {
            return None;
        }
        let status = loop {
            match waitid(
                WaitId::PidFd(self.pidfd.as_fd()),
                WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
            ) {
                Ok(None) => return None,
                Ok(Some(s)) => {
                    break match (s.exit_status(), s.terminating_signal()) {
                        (_, Some(sig)) => ExitStatus::Signaled(sig),
                        (Some(code), None) => ExitStatus::Exited(code),
                        (None, None) => ExitStatus::Exited(UNKNOWN_STATUS),
                    };
                }
                Err(rustix::io::Errno::INTR) => {}
                // ECHILD: someone reaped it behind our back; its status is lost.
                Err(_) => break ExitStatus::Exited(UNKNOWN_STATUS),
            }
        };
        self.reaped = true;
        Some(status)
    }

    /// Sends signal `sig` through the pidfd (`Io::send_signal`).
    ///
    /// # Errors
    ///
    /// `ESRCH` once the child is reaped; `InvalidInput` for a number that is not a
    /// signal; the `pidfd_send_signal` error.
    pub fn send_signal(&self, sig: i32) -> io::Result<()> {
        if self.reaped {
            return Err(io::Error::from_raw_os_error(rustix::io::Errno::SRCH.raw_os_error()));
        }
        let sig = Signal::from_named_raw(sig).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("no such signal: {sig}"))
        })?;
        pidfd_send_signal(&self.pidfd, sig).map_err(io::Error::from)
    }
}

impl AsFd for Child {
    /// The pidfd: readable once the child has exited.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }
}

impl Drop for Child {
    /// A child still running when its loop lets go of it is killed and reaped.
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        let _ = pidfd_send_signal(&self.pidfd, Signal::KILL);
        while let Err(rustix::io::Errno::INTR) =
            waitid(WaitId::PidFd(self.pidfd.as_fd()), WaitIdOptions::EXITED)
        {}
    }
}

/// The child's side of one fd, before it becomes a `std::process::Stdio`.
enum ChildEnd {
    Inherit,
    Null,
    Fd(OwnedFd),
}

impl ChildEnd {
    fn into_std(self) -> std::process::Stdio {
        match self {
            ChildEnd::Inherit => std::process::Stdio::inherit(),
            ChildEnd::Null => std::process::Stdio::null(),
            ChildEnd::Fd(fd) => std::process::Stdio::from(fd),
        }
    }

    fn try_clone(&self, fd: u32) -> io::Result<ChildEnd> {
        Ok(match self {
            // stderr to an inherited stdout: the loop process's own stdout.
            ChildEnd::Inherit if fd == 1 => {
                ChildEnd::Fd(io::stdout().as_fd().try_clone_to_owned()?)
            }
            ChildEnd::Inherit => ChildEnd::Inherit,
            ChildEnd::Null => ChildEnd::Null,
            ChildEnd::Fd(f) => ChildEnd::Fd(f.try_clone()?),
        })
    }
}

/// The child's end and the parent's (non-blocking) end for fd `fd`.
fn ends(fd: u32, s: Stdio) -> io::Result<(ChildEnd, Option<OwnedFd>)> {
    Ok(match s {
        Stdio::Pipe => {
            // Both ends close-on-exec; only the parent's is non-blocking, since programs
            // expect blocking stdio.
            let (rx, tx) = io::pipe()?;
            let (child, parent): (OwnedFd, OwnedFd) =
                if fd == 0 { (rx.into(), tx.into()) } else { (tx.into(), rx.into()) };
            rustix::io::ioctl_fionbio(&parent, true)?;
            (ChildEnd::Fd(child), Some(parent))
        }
        Stdio::Inherit => (ChildEnd::Inherit, None),
        Stdio::Null => (ChildEnd::Null, None),
        Stdio::Fd(f) => (ChildEnd::Fd(f), None),
        Stdio::Stdout => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "Stdio::Stdout is for stderr only",
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};

    /// Polls `try_reap` for at most 10 s (these tests have no runtime to wait with).
    fn reap(c: &mut Child) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = c.try_reap() {
                return s;
            }
            assert!(Instant::now() < deadline, "child did not exit");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn pipes_carry_data_and_the_status_is_reaped_once() {
        let mut s = spawn(Command::new("cat"), SubprocessOptions::default()).unwrap();
        let stdin = s.stdin.take().unwrap();
        rustix::io::ioctl_fionbio(&stdin, false).unwrap();
        std::fs::File::from(stdin).write_all(b"hello").unwrap(); // dropped: EOF
        let out = s.stdout.take().unwrap();
        rustix::io::ioctl_fionbio(&out, false).unwrap();
        let mut got = Vec::new();
        std::fs::File::from(out).read_to_end(&mut got).unwrap();
        assert_eq!(got, b"hello");
        assert_eq!(reap(&mut s.child), ExitStatus::Exited(0));
        assert!(s.child.is_reaped());
        assert_eq!(s.child.try_reap(), None);
        let esrch = rustix::io::Errno::SRCH.raw_os_error();
        assert_eq!(s.child.send_signal(15).unwrap_err().raw_os_error(), Some(esrch));
    }

    #[test]
    fn parent_ends_are_nonblocking_and_cloexec() {
        let s = spawn(shell_command("sleep 5"), SubprocessOptions::default()).unwrap();
        for fd in [&s.stdin, &s.stdout, &s.stderr] {
            let fd = fd.as_ref().unwrap();
            let fl = rustix::fs::fcntl_getfl(fd).unwrap();
            assert!(fl.contains(rustix::fs::OFlags::NONBLOCK));
            let fdfl = rustix::io::fcntl_getfd(fd).unwrap();
            assert!(fdfl.contains(rustix::io::FdFlags::CLOEXEC));
        }
        let mut buf = [0u8; 8];
        let e = std::fs::File::from(s.stdout.as_ref().unwrap().try_clone().unwrap())
            .read(&mut buf)
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn a_signal_ends_the_child_and_drop_reaps_a_running_one() {
        let opts = SubprocessOptions::default()
            .stdin(Stdio::Null)
            .stdout(Stdio::Null)
            .stderr(Stdio::Stdout);
        assert_eq!(opts.piped(), [false, false, false]);
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let mut s = spawn(cmd, opts).unwrap();
        s.child.send_signal(15).unwrap();
        assert_eq!(reap(&mut s.child), ExitStatus::Signaled(15));

        let s = spawn(shell_command("sleep 30"), SubprocessOptions::default()).unwrap();
        let pid = s.child.pid();
        drop(s);
        // Killed and reaped: the pid no longer names a child of ours.
        let r = waitid(
            WaitId::Pid(Pid::from_raw(pid as i32).unwrap()),
            WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
        );
        assert_eq!(r.unwrap_err(), rustix::io::Errno::CHILD);
    }

    #[test]
    fn bad_input_is_a_typed_error() {
        let e =
            spawn(Command::new("/nonexistent/program"), SubprocessOptions::default()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let e = spawn(Command::new("true"), SubprocessOptions::default().stdout(Stdio::Stdout))
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
