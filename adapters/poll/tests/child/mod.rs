//! Tests that need a process of their own (a lowered fd limit, a signal): the test binary
//! re-executes itself with an environment variable naming the role, and talks to the child
//! through its stdout. Every wait is bounded; the child is always reaped.

#![allow(dead_code)] // each test binary uses part of it

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// How long any exchange with the child may take before the test fails.
pub const LIMIT: Duration = Duration::from_secs(30);

/// The role this process was started for, if it is a child.
pub fn role(var: &str) -> Option<String> {
    std::env::var(var).ok()
}

/// A child running the test `test` of this binary with `var=value`.
pub struct ChildProcess {
    child: Child,
    lines: Receiver<String>,
}

impl ChildProcess {
    pub fn spawn(test: &str, var: &str, value: &str) -> ChildProcess {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env(var, value)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        ChildProcess { child, lines }
    }

    pub fn pid(&self) -> rustix::process::Pid {
        rustix::process::Pid::from_child(&self.child)
    }

    /// What follows `prefix` on the next line that has it (other lines are the harness's;
    /// the first line of output shares its line with the harness's `test name ... `).
    pub fn expect(&self, prefix: &str) -> String {
        let deadline = Instant::now() + LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(i) = line.find(prefix) {
                        return line[i + prefix.len()..].trim().to_owned();
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("the child did not say {prefix:?} in time")
                }
                Err(RecvTimeoutError::Disconnected) => panic!("the child exited before {prefix:?}"),
            }
        }
    }

    /// Lines with `prefix` the child has printed so far (without waiting).
    pub fn count_now(&self, prefix: &str) -> usize {
        self.lines.try_iter().filter(|l| l.contains(prefix)).count()
    }

    /// Waits (bounded) for the child to exit.
    pub fn wait(mut self) -> ExitStatus {
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("the child did not exit in time");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        // On a failed test: never leave the child running or unreaped.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
