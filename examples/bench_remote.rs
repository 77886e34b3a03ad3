//! Cross-thread write benchmark on the poll loop: bytes written through a
//! [`RemoteStream`](aioport_poll::RemoteStream) from another thread against the same bytes
//! written by a protocol on the loop's thread, in the same run.
//!
//! ```text
//! cargo run --release --example bench_remote            # 7 rounds per size
//! cargo run --release --example bench_remote -- --quick  # CI smoke: 3 short rounds
//! ```
//!
//! Both sides send `total` bytes in `chunk`-sized static `Bytes` over loopback TCP to a
//! std socket drained by a reader thread, then close; a side's time runs from its first
//! write to its `connection_lost`. The **loop** side is a protocol that writes until
//! `pause_writing` and goes on at `resume_writing` (the best a protocol can do); the
//! **remote** side is a thread calling `RemoteStream::write`, which waits while the queue
//! is at high water. The table shows the median MB/s of each and the median of the
//! per-round ratios remote/loop (1.0: crossing threads costs nothing).

use std::cell::Cell;
use std::io::Read;
use std::net::TcpListener;
use std::rc::Rc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aioport::{CallbackResult, ConnectionError, Ctx, Endpoint, Protocol, StreamHandle};
use aioport_poll::Loop;
use bytes::Bytes;

static DATA: [u8; 64 * 1024] = [0x5a; 64 * 1024];
const LIMIT: Duration = Duration::from_secs(60);

/// Writes `left` bytes in `chunk`s, honouring pause_writing, then closes.
struct Source {
    chunk: usize,
    left: usize,
    paused: bool,
    lost: Rc<Cell<bool>>,
}

impl Source {
    fn pump(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        let h = ctx.stream();
        while !self.paused && self.left > 0 {
            let n = self.chunk.min(self.left);
            self.left -= n;
            ctx.write(h, Bytes::from_static(&DATA[..n]))?;
            self.paused = ctx.is_writing_paused(h)?;
        }
        if self.left == 0 {
            ctx.close(h)?;
        }
        Ok(())
    }
}

impl Protocol for Source {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.pump(ctx)
    }
    fn pause_writing(&mut self, _: &mut Ctx<'_>) -> CallbackResult {
        self.paused = true;
        Ok(())
    }
    fn resume_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.paused = false;
        self.pump(ctx)
    }
    fn connection_lost(&mut self, _: &mut Ctx<'_>, _: Option<ConnectionError>) -> CallbackResult {
        self.lost.set(true);
        Ok(())
    }
}

/// Quiet, but records its end.
struct Quiet(Rc<Cell<bool>>);

impl Protocol for Quiet {
    fn connection_lost(&mut self, _: &mut Ctx<'_>, _: Option<ConnectionError>) -> CallbackResult {
        self.0.set(true);
        Ok(())
    }
}

/// A connection to a std socket drained by a thread (which returns the byte count).
fn connect(lp: &mut Loop, p: Box<dyn Protocol>) -> (StreamHandle, JoinHandle<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let h = lp.create_connection(Endpoint::Addr(listener.local_addr().unwrap()), p).unwrap();
    let (mut peer, _) = listener.accept().unwrap();
    peer.set_read_timeout(Some(LIMIT)).unwrap();
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 256 * 1024];
        let mut n = 0;
        while let Ok(k @ 1..) = peer.read(&mut buf) {
            n += k;
        }
        n
    });
    (h, reader)
}

/// Seconds for the loop-side writer (connect included, as on the remote side).
fn on_loop(chunk: usize, total: usize) -> f64 {
    let mut lp = Loop::new().unwrap();
    let lost = Rc::new(Cell::new(false));
    let start = Instant::now();
    let src = Source { chunk, left: total, paused: false, lost: lost.clone() };
    let (_, reader) = connect(&mut lp, Box::new(src));
    lp.run_until_timeout(|| lost.get(), LIMIT).unwrap();
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(reader.join().unwrap(), total);
    secs
}

/// Seconds for a writer on another thread, through a `RemoteStream`.
fn remote(chunk: usize, total: usize) -> f64 {
    let mut lp = Loop::new().unwrap();
    let lost = Rc::new(Cell::new(false));
    let start = Instant::now();
    let (h, reader) = connect(&mut lp, Box::new(Quiet(lost.clone())));
    let r = lp.remote_stream(h).unwrap();
    let writer = std::thread::spawn(move || {
        let mut left = total;
        while left > 0 {
            let n = chunk.min(left);
            left -= n;
            r.write(Bytes::from_static(&DATA[..n]), LIMIT).unwrap();
        }
        r.close();
    });
    lp.run_until_timeout(|| lost.get(), LIMIT).unwrap();
    let secs = start.elapsed().as_secs_f64();
    writer.join().unwrap();
    assert_eq!(reader.join().unwrap(), total);
    secs
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rounds = if quick { 3 } else { 7 };
    println!(
        "{:>8} {:>10} {:>12} {:>12} {:>13}",
        "chunk", "total", "loop MB/s", "remote MB/s", "remote/loop"
    );
    for (chunk, total) in [(1024, 64 << 20), (16 * 1024, 256 << 20), (64 * 1024, 512 << 20)] {
        let total = if quick { total / 8 } else { total };
        let (mut a, mut b, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            // Alternate which side goes first, so drift affects both.
            let (l, r) = if round % 2 == 0 {
                let l = on_loop(chunk, total);
                (l, remote(chunk, total))
            } else {
                let r = remote(chunk, total);
                (on_loop(chunk, total), r)
            };
            a.push(total as f64 / l / 1e6);
            b.push(total as f64 / r / 1e6);
            ratio.push(l / r);
        }
        println!(
            "{:>8} {:>9}M {:>12.0} {:>12.0} {:>12.2}x",
            chunk,
            total >> 20,
            median(&mut a),
            median(&mut b),
            median(&mut ratio)
        );
    }
}
