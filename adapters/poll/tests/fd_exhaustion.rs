//! Running out of file descriptors (asyncio's accept backoff): in a child process whose
//! `RLIMIT_NOFILE` leaves room for two connections, a third client makes `accept()` fail
//! with `EMFILE`. The server must keep serving the clients it has, retry `accept()` about
//! once a second (not spin), and accept the waiting client once a descriptor is free.

mod child;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use aioport::{CallbackResult, Ctx, Protocol};
use aioport_poll::{ErrorReport, Loop, LoopHandle, ServerOptions};
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

use child::ChildProcess;

const ROLE: &str = "AIOPORT_FD_EXHAUSTION_CHILD";
const TEST: &str = "accept_backs_off_while_out_of_fds_and_recovers";
/// Connections the child's limit leaves room for.
const SPARE: u64 = 2;
/// How long the test keeps the child exhausted while using its clients.
const EXHAUSTED_ROUNDS: u32 = 25;

/// Echoes; "quit" stops the loop.
struct Echo(LoopHandle);
impl Protocol for Echo {
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        if data == b"quit" {
            self.0.stop();
        }
        ctx.write_slice(ctx.stream(), data)?;
        Ok(())
    }
}

/// A soft limit that leaves room for exactly `SPARE` more descriptors: the kernel hands
/// out the lowest free numbers, so `SPARE` probes find them.
fn limit_for_spare() -> u64 {
    let probes: Vec<std::fs::File> =
        (0..SPARE).map(|_| std::fs::File::open("/dev/null").unwrap()).collect();
    let highest = probes.iter().map(|f| f.as_raw_fd()).max().unwrap();
    highest as u64 + 1
}

/// The child: an echo server with room for `SPARE` connections.
fn exhausted_server() {
    let mut lp = Loop::new().unwrap();
    lp.set_error_handler(|report| {
        if let ErrorReport::Accept { error, .. } = &report {
            println!("accept-error {}", error.raw_os_error().unwrap_or(0));
        }
    });
    let handle = lp.handle();
    let srv = lp
        .create_server(
            "127.0.0.1:0",
            move || Box::new(Echo(handle.clone())),
            ServerOptions::default(),
        )
        .unwrap();
    let Rlimit { maximum, .. } = getrlimit(Resource::Nofile);
    setrlimit(Resource::Nofile, Rlimit { current: Some(limit_for_spare()), maximum }).unwrap();
    println!("ready {}", srv.addr().port());
    lp.run_until_timeout(|| false, child::LIMIT * 2).expect("stopped by quit");
    println!("served {}", srv.connections(&lp));
}

fn client(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(child::LIMIT)).unwrap();
    s
}

fn echo(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).unwrap();
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, msg);
}

/// CPU time (user + system) a process has used, in clock ticks (`/proc/PID/stat`).
fn cpu_ticks(pid: rustix::process::Pid) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.as_raw_nonzero())).ok()?;
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

#[test]
fn accept_backs_off_while_out_of_fds_and_recovers() {
    if child::role(ROLE).is_some() {
        return exhausted_server();
    }
    let c = ChildProcess::spawn(TEST, ROLE, "serve");
    let port: u16 = c.expect("ready ").parse().unwrap();
    let mut a = client(port);
    let mut b = client(port);
    echo(&mut a, b"a");
    echo(&mut b, b"b");
    // The kernel completes this handshake (backlog); the child's accept() gets EMFILE.
    let mut waiting = client(port);
    waiting.write_all(b"w").unwrap();
    assert_eq!(c.expect("accept-error "), "24", "EMFILE");
    let exhausted_at = Instant::now();
    let cpu_before = cpu_ticks(c.pid());

    // Exhausted: existing clients are still served.
    for i in 0..EXHAUSTED_ROUNDS {
        echo(&mut a, format!("round {i}").as_bytes());
        std::thread::sleep(Duration::from_millis(100));
    }
    let window = exhausted_at.elapsed();
    // One accept attempt per second (asyncio's ACCEPT_RETRY_DELAY), not a spin: the
    // first error plus at most one retry per started second of the window.
    let attempts = 1 + c.count_now("accept-error ");
    let allowed = 2 + window.as_secs() as usize;
    assert!(attempts <= allowed, "{attempts} accept attempts in {window:?}: the loop spins");
    assert!(attempts >= 2, "it retried during {window:?}");
    match (cpu_before, cpu_ticks(c.pid())) {
        (Some(before), Some(after)) => {
            // Clock ticks are 10 ms on Linux; a spinning loop would use most of the window.
            let used = Duration::from_millis((after - before) * 10);
            assert!(used < window / 4, "the child used {used:?} of CPU in {window:?}");
            println!("exhausted for {window:?}: {attempts} accept attempts, {used:?} of CPU");
        }
        _ => println!("SKIPPED (CPU part of {TEST}: no /proc/PID/stat)"),
    }

    // A descriptor frees up: the waiting client is accepted at the next retry.
    drop(a);
    let mut got = [0u8; 1];
    waiting.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"w");
    echo(&mut waiting, b"accepted again");

    echo(&mut b, b"quit");
    assert_eq!(c.expect("served "), "2");
    let status = c.wait();
    assert!(status.success(), "{status:?}");
}
