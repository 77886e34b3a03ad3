//! UDP echo benchmark: round-trip datagrams per second through the poll loop's datagram
//! endpoint against a raw blocking `std::net::UdpSocket` echo, in the same run.
//!
//! ```text
//! cargo run --release --example bench_datagram             # 7 rounds of ~300 ms per server
//! cargo run --release --example bench_datagram -- --quick  # a few short rounds
//! ```
//!
//! # What is measured
//!
//! Both servers run on their own thread on 127.0.0.1 and echo each datagram to its sender:
//!
//! * **aioport-poll**: a `Loop` with a `DatagramProtocol` that calls `ctx.sendto` from
//!   `datagram_received` (the core's fast path: one `recvfrom` with `MSG_TRUNC`, one
//!   `sendto`, and an `epoll_wait` whenever the socket is drained);
//! * **std (raw)**: a blocking `UdpSocket` loop, `recv_from` then `send_to` — the least a
//!   UDP echo can do (no readiness polling at all).
//!
//! One client, the same for both, runs on the main thread: a blocking connected
//! `UdpSocket` that sends one datagram and waits for its echo (ping-pong, one datagram in
//! flight), so a round trip is one client send, one server receive and send, one client
//! receive — and the two thread wake-ups that go with them, which dominate on loopback.
//! Each round times both servers back to back, in an order that alternates from round to
//! round; the table shows the median round trips/s of each and the median of the
//! per-round ratios (ours / raw; above 1 is faster than raw).

use std::cell::Cell;
use std::net::{SocketAddr, UdpSocket};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::channel;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use aioport::{CallbackResult, ConnectionError, Ctx, DatagramAddr, DatagramProtocol};
use aioport_poll::{DatagramOptions, Loop, LoopHandle};

/// Echoes each datagram to its sender.
struct Echo {
    errors: Rc<Cell<u64>>,
}

impl DatagramProtocol for Echo {
    fn datagram_received(
        &mut self,
        ctx: &mut Ctx<'_>,
        data: &[u8],
        addr: Option<&DatagramAddr>,
    ) -> CallbackResult {
        ctx.sendto(ctx.datagram(), data, addr)?;
        Ok(())
    }
    fn error_received(&mut self, _: &mut Ctx<'_>, _: ConnectionError) -> CallbackResult {
        self.errors.set(self.errors.get() + 1);
        Ok(())
    }
}

/// A running echo server: its address and how to stop it.
struct Server {
    addr: SocketAddr,
    stop: Box<dyn FnOnce()>,
    thread: JoinHandle<()>,
}

fn poll_server() -> Server {
    let (tx, rx) = channel::<(SocketAddr, LoopHandle)>();
    let thread = thread::spawn(move || {
        let mut lp = Loop::new().expect("a loop");
        let errors = Rc::new(Cell::new(0));
        let local = DatagramAddr::Inet(SocketAddr::from(([127, 0, 0, 1], 0)));
        let ep = lp
            .create_datagram_endpoint(
                Box::new(Echo { errors: errors.clone() }),
                Some(local),
                None,
                DatagramOptions::default(),
            )
            .expect("bind the echo endpoint");
        let DatagramAddr::Inet(addr) = ep.local_addr().clone() else { unreachable!() };
        tx.send((addr, lp.handle())).expect("main thread waits");
        lp.run_forever().expect("the loop runs");
        assert_eq!(errors.get(), 0, "the echo endpoint reported errors");
    });
    let (addr, handle) = rx.recv().expect("the server thread started");
    Server { addr, stop: Box::new(move || handle.stop()), thread }
}

fn std_server() -> Server {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = sock.local_addr().expect("local address");
    // The read timeout only bounds how long stopping takes.
    sock.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        while !flag.load(Ordering::Relaxed) {
            match sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    sock.send_to(&buf[..n], from).expect("send_to");
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("recv_from: {e}"),
            }
        }
    });
    Server { addr, stop: Box::new(move || stop.store(true, Ordering::Relaxed)), thread }
}

/// Ping-pong round trips against `server` for about `target`; returns round trips/s.
fn measure(client: &UdpSocket, server: SocketAddr, size: usize, target: Duration) -> f64 {
    client.connect(server).expect("connect the client");
    let msg: Vec<u8> = (0..size).map(|i| (i * 7) as u8).collect();
    let mut buf = vec![0u8; 65_536];
    let mut round_trip = |check: bool| {
        client.send(&msg).expect("send");
        let n = client.recv(&mut buf).expect("the echo (no loss on loopback)");
        if check {
            assert_eq!(&buf[..n], &msg[..], "the echo is the datagram");
        }
    };
    for _ in 0..100 {
        round_trip(true);
    }
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed() < target {
        for _ in 0..256 {
            round_trip(false);
        }
        done += 256;
    }
    round_trip(true);
    done as f64 / start.elapsed().as_secs_f64()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut quick = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--quick" => quick = true,
            other => {
                eprintln!("usage: bench_datagram [--quick]   (unknown argument {other:?})");
                std::process::exit(2);
            }
        }
    }
    let (rounds, target) =
        if quick { (3, Duration::from_millis(20)) } else { (7, Duration::from_millis(300)) };
    if cfg!(debug_assertions) {
        eprintln!("warning: debug build; run with --release for meaningful numbers");
    }
    let ours = poll_server();
    let raw = std_server();
    let client = UdpSocket::bind("127.0.0.1:0").expect("bind the client");
    // A lost datagram would hang a blocking client: fail instead.
    client.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");

    println!(
        "bench_datagram: {rounds} rounds of ~{} ms per server and size; ping-pong round trips/s",
        target.as_millis()
    );
    println!();
    println!(
        "{:<8} {:>14} {:>14} {:>8} {:>15}",
        "size", "aioport-poll", "std (raw)", "ratio", "ratio min–max"
    );
    for size in [64, 1_400] {
        let (mut a, mut b, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            let (x, y) = if round % 2 == 0 {
                let x = measure(&client, ours.addr, size, target);
                (x, measure(&client, raw.addr, size, target))
            } else {
                let y = measure(&client, raw.addr, size, target);
                (measure(&client, ours.addr, size, target), y)
            };
            a.push(x);
            b.push(y);
            ratios.push(x / y);
        }
        let (lo, hi) = ratios.iter().fold((f64::MAX, f64::MIN), |(l, h), &r| (l.min(r), h.max(r)));
        println!(
            "{:<8} {:>14.0} {:>14.0} {:>7.2}× {:>7.2}–{:<7.2}",
            format!("{size} B"),
            median(&mut a),
            median(&mut b),
            median(&mut ratios),
            lo,
            hi
        );
    }
    for s in [ours, raw] {
        (s.stop)();
        s.thread.join().expect("the server thread ends cleanly");
    }
}
