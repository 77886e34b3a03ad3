//! Write-path micro-benchmark: nanoseconds per write→send cycle of [`StreamTransport`]
//! against a bare `VecDeque<Bytes>` baseline, in the same run.
//!
//! ```text
//! cargo run --release --example bench_stream            # 7 rounds of ~100 ms per side
//! cargo run --release --example bench_stream -- --quick  # CI smoke: a few short rounds
//! ```
//!
//! # What is measured
//!
//! One *cycle* is one message going from the protocol to the socket, at 64 B and 64 KiB:
//!
//! * **fast**: `write_slice(&[u8])` or `write(Bytes::from_static(..))` while the socket
//!   takes everything, so nothing is queued (asyncio's fast path);
//! * **queued**: the same write while the socket refuses (`WouldBlock`), so the message is
//!   queued (`write_slice` copies it into a pooled buffer, `write` queues the `Bytes`),
//!   then `on_writable` with a socket that takes everything drains the queue.
//!
//! Each cycle also polls `next_callback()` until `None` (the flow edges a registry would
//! deliver; none fire at these sizes with the default 64 KiB high-water mark).
//!
//! The **baseline** is the least a buffered writer can do per message: push a
//! `Bytes::from_static` onto a `VecDeque<Bytes>`, fill an `[IoSlice; 64]` array from the
//! queue (64 slots, the batch the transport's own flush uses), send it with one
//! `try_send`, pop the chunk. Both sides call the very same in-memory
//! [`Io`] through `&mut dyn Io`; it copies nothing and has no per-byte cost (it reads each
//! slice's length through `black_box`), so only the bookkeeping around the send differs.
//! Note what the baseline does *not* do: the queued cases also pay a refused `try_send`,
//! and the queued `write_slice` case a memcpy of the message (the price of writing from a
//! borrowed slice; asyncio copies into its `bytearray` there too). Two reference columns
//! are measured in the same rounds: `send`, one bare `try_send` of the message (the floor
//! for any writer), and `memcpy`, the queued `write_slice` copy alone.
//!
//! Each case runs several rounds; a round times our loop and the baseline back to back
//! (interleaved, so drift affects both). The table shows the median ns/cycle of each and
//! the median of the per-round ratios ours/baseline (the issue's target is ≤ 1.5×).

use std::collections::VecDeque;
use std::hint::black_box;
use std::io::{self, IoSlice};
use std::time::{Duration, Instant};

use aioport::{Extra, Handle, Io, SendPool, StreamTransport};
use bytes::Bytes;

static SMALL: [u8; 64] = [0x5a; 64];
static LARGE: [u8; 64 * 1024] = [0xa5; 64 * 1024];

/// `IoSlice` slots the baseline fills per send: the batch the transport's flush uses.
const BASELINE_IOV: usize = 64;

/// The issue's target for ours/baseline.
const TARGET_RATIO: f64 = 1.5;

/// An in-memory socket: takes everything when `accept` is set, refuses (`WouldBlock`)
/// otherwise. Copies nothing; the per-call cost does not depend on the byte count.
struct NullIo {
    accept: bool,
}

impl Io for NullIo {
    #[inline(never)]
    fn try_send(&mut self, _h: Handle, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if !self.accept {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(bufs.iter().map(|b| black_box(&**b).len()).sum())
    }

    fn try_recv(&mut self, _h: Handle, _buf: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }

    fn shutdown_write(&mut self, _h: Handle) -> io::Result<()> {
        Ok(())
    }

    fn close(&mut self, _h: Handle) {}
}

#[derive(Clone, Copy)]
enum How {
    Slice,
    Bytes,
}

#[derive(Clone, Copy)]
enum Path {
    Fast,
    Queued,
}

#[derive(Clone, Copy)]
struct Case {
    path: Path,
    how: How,
    data: &'static [u8],
}

impl Case {
    fn name(&self) -> String {
        let path = match self.path {
            Path::Fast => "fast",
            Path::Queued => "queued",
        };
        let how = match self.how {
            How::Slice => "write_slice",
            How::Bytes => "write(Bytes)",
        };
        let size = if self.data.len() >= 1024 {
            format!("{} KiB", self.data.len() / 1024)
        } else {
            format!("{} B", self.data.len())
        };
        format!("{path:<6} {how:<12} {size:>6}")
    }
}

/// Our side: a transport with `connection_made` delivered, its pool, the socket.
struct Ours {
    t: StreamTransport,
    pool: SendPool,
    io: NullIo,
}

impl Ours {
    fn new() -> Self {
        let mut t = StreamTransport::new(Handle::from_raw(0, 0), Extra::default());
        let made = t.next_callback();
        assert!(made.is_some(), "connection_made first");
        Ours { t, pool: SendPool::default(), io: NullIo { accept: true } }
    }

    fn run(&mut self, case: Case, iters: u64) {
        let Ours { t, pool, io } = self;
        let queued = matches!(case.path, Path::Queued);
        for _ in 0..iters {
            io.accept = !queued;
            let data = black_box(case.data);
            let res = match case.how {
                How::Slice => t.write_slice(data, io, pool),
                How::Bytes => t.write(Bytes::from_static(data), io, pool),
            };
            if res.is_err() {
                panic!("write failed");
            }
            while let Some(cb) = t.next_callback() {
                black_box(cb);
            }
            if queued {
                io.accept = true;
                if t.on_writable(io, pool).is_err() {
                    panic!("on_writable failed");
                }
                while let Some(cb) = t.next_callback() {
                    black_box(cb);
                }
            }
            black_box(&mut *t);
        }
        assert_eq!(t.write_buffer_size(), 0);
    }
}

/// The baseline: a bare deque of `Bytes` and one vectored send per message.
struct Baseline {
    queue: VecDeque<Bytes>,
    io: NullIo,
}

impl Baseline {
    fn new() -> Self {
        Baseline { queue: VecDeque::with_capacity(64), io: NullIo { accept: true } }
    }

    fn run(&mut self, case: Case, iters: u64) {
        let Baseline { queue, io } = self;
        for _ in 0..iters {
            queue.push_back(Bytes::from_static(black_box(case.data)));
            let sent = {
                let mut slices = [IoSlice::new(&[]); BASELINE_IOV];
                let mut count = 0;
                for (slot, chunk) in slices.iter_mut().zip(queue.iter()) {
                    *slot = IoSlice::new(chunk);
                    count += 1;
                }
                // The same dynamic call the transport makes.
                let io: &mut dyn Io = black_box(&mut *io);
                io.try_send(Handle::from_raw(0, 0), &slices[..count]).unwrap_or(0)
            };
            if sent == queue.front().map_or(0, Bytes::len) {
                black_box(queue.pop_front());
            }
            black_box(&mut *queue);
        }
        assert!(queue.is_empty());
    }
}

/// The floor: one `try_send` of the message as a single slice, nothing else.
struct SendOnly {
    io: NullIo,
}

impl SendOnly {
    fn run(&mut self, case: Case, iters: u64) {
        for _ in 0..iters {
            let io: &mut dyn Io = black_box(&mut self.io);
            let sent = io.try_send(Handle::from_raw(0, 0), &[IoSlice::new(black_box(case.data))]);
            black_box(sent.unwrap_or(0));
        }
    }
}

/// The copy a queued `write_slice` must make, alone: into one reused buffer.
struct Memcpy {
    buf: Vec<u8>,
}

impl Memcpy {
    fn run(&mut self, case: Case, iters: u64) {
        for _ in 0..iters {
            self.buf.clear();
            self.buf.extend_from_slice(black_box(case.data));
            black_box(&mut self.buf);
        }
    }
}

fn time(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

fn ns_per(d: Duration, iters: u64) -> f64 {
    d.as_secs_f64() * 1e9 / iters as f64
}

/// Iterations for about `target` of our loop (the slower side, usually).
fn calibrate(ours: &mut Ours, case: Case, target: Duration) -> u64 {
    let mut iters = 16u64;
    loop {
        let d = time(|| ours.run(case, iters));
        if d >= target / 8 || iters >= 1 << 32 {
            let per = d.as_secs_f64() / iters as f64;
            return ((target.as_secs_f64() / per) as u64).max(16);
        }
        iters *= 4;
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

struct Row {
    name: String,
    ours: f64,
    base: f64,
    send: f64,
    copy: Option<f64>,
    ratio: f64,
    ratio_min: f64,
    ratio_max: f64,
}

fn bench(case: Case, rounds: usize, target: Duration) -> Row {
    let mut ours = Ours::new();
    let mut base = Baseline::new();
    let mut send = SendOnly { io: NullIo { accept: true } };
    let mut copy = Memcpy { buf: Vec::with_capacity(case.data.len()) };
    let iters = calibrate(&mut ours, case, target);
    // Warm the baseline too (caches, branch predictors, page faults).
    base.run(case, iters / 8 + 1);
    let with_copy = matches!((case.path, case.how), (Path::Queued, How::Slice));
    let (mut o, mut b, mut s, mut c, mut r) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        // Alternate which side goes first so neither always runs on a "warmer" machine.
        let (dt_o, dt_b) = if round % 2 == 0 {
            let dt_o = time(|| ours.run(case, iters));
            (dt_o, time(|| base.run(case, iters)))
        } else {
            let dt_b = time(|| base.run(case, iters));
            (time(|| ours.run(case, iters)), dt_b)
        };
        let (ns_o, ns_b) = (ns_per(dt_o, iters), ns_per(dt_b, iters));
        o.push(ns_o);
        b.push(ns_b);
        r.push(ns_o / ns_b);
        s.push(ns_per(time(|| send.run(case, iters)), iters));
        if with_copy {
            c.push(ns_per(time(|| copy.run(case, iters)), iters));
        }
    }
    let ratio_min = r.iter().copied().fold(f64::INFINITY, f64::min);
    let ratio_max = r.iter().copied().fold(0.0, f64::max);
    Row {
        name: case.name(),
        ours: median(&mut o),
        base: median(&mut b),
        send: median(&mut s),
        copy: with_copy.then(|| median(&mut c)),
        ratio: median(&mut r),
        ratio_min,
        ratio_max,
    }
}

fn main() {
    let mut quick = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--quick" => quick = true,
            other => {
                eprintln!("usage: bench_stream [--quick]   (unknown argument {other:?})");
                std::process::exit(2);
            }
        }
    }
    let (rounds, target) =
        if quick { (3, Duration::from_millis(5)) } else { (7, Duration::from_millis(100)) };
    if cfg!(debug_assertions) {
        eprintln!("warning: debug build; run with --release for meaningful numbers");
    }

    let mut cases = Vec::new();
    for path in [Path::Fast, Path::Queued] {
        for how in [How::Slice, How::Bytes] {
            for data in [&SMALL[..], &LARGE[..]] {
                cases.push(Case { path, how, data });
            }
        }
    }

    let started = Instant::now();
    println!(
        "bench_stream: {rounds} rounds of ~{} ms per side and case; ns per write→send cycle",
        target.as_millis()
    );
    println!();
    println!(
        "{:<27} {:>9} {:>9} {:>7} {:>13}   {:>9} {:>9}",
        "case", "ours ns", "base ns", "ratio", "ratio min–max", "send ns", "memcpy ns"
    );
    let mut over = Vec::new();
    for case in cases {
        let row = bench(case, rounds, target);
        let copy = row.copy.map_or_else(|| "-".to_string(), |c| format!("{c:.1}"));
        let verdict = if row.ratio <= TARGET_RATIO { "" } else { "  > target" };
        println!(
            "{:<27} {:>9.1} {:>9.1} {:>6.2}× {:>6.2}–{:<6.2}   {:>9.1} {:>9}{verdict}",
            row.name, row.ours, row.base, row.ratio, row.ratio_min, row.ratio_max, row.send, copy
        );
        if row.ratio > TARGET_RATIO {
            over.push(row.name.split_whitespace().collect::<Vec<_>>().join(" "));
        }
    }
    println!();
    println!(
        "ours    StreamTransport write (+ on_writable when queued) + next_callback until None"
    );
    println!(
        "base    VecDeque<Bytes>: push, fill [IoSlice; {BASELINE_IOV}], try_send, pop (same Io)"
    );
    println!("ratio   median over rounds of ours/base measured in the same round");
    println!("        (target ≤ {TARGET_RATIO}×)");
    println!("send    floor: one try_send of the message as one slice (same Io)");
    println!("memcpy  the copy a queued write_slice must make, alone (reference)");
    if !over.is_empty() {
        println!();
        println!("above the {TARGET_RATIO}× target: {}", over.join(", "));
    }
    println!("total {:.2} s", started.elapsed().as_secs_f64());
}
