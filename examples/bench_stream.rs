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
//! queue (64 slots, the batch the transport's flush uses for a long queue; for a queue of
//! a few chunks it fills a 4-slot array instead), send it with one `try_send`, pop the
//! chunk. Both sides call the very same in-memory [`Io`] through `&mut dyn Io`; it copies
//! nothing and has no per-byte cost (it reads each slice's length through `black_box`),
//! so only the bookkeeping around the send differs. Note what the baseline does *not* do:
//! the queued cases also pay a refused `try_send`, and the queued `write_slice` case a
//! memcpy of the message (the price of writing from a borrowed slice; asyncio copies into
//! its `bytearray` there too).
//!
//! So the queued `write_slice` rows are also compared with **base+copy**, the minimal
//! copying writer: the baseline plus a copy of the message into one reused, pre-allocated
//! `Vec<u8>` (the `Bytes` it queues are still the static ones: the `Io` never reads the
//! bytes, so sending the copy would cost the same). The fast `write_slice` rows copy
//! nothing, so the plain baseline is their minimal equivalent. One reference column is
//! measured too: `send`, one bare `try_send` of the message (the floor for any writer).
//!
//! Each case runs several rounds; a round times our loop and each baseline back to back,
//! in an order that rotates from round to round (so drift affects all of them). The table
//! shows the median ns/cycle of each and the median of the per-round ratios ours/baseline
//! (the issue's target is ≤ 1.5×).

use std::collections::VecDeque;
use std::hint::black_box;
use std::io::{self, IoSlice};
use std::time::{Duration, Instant};

use aioport::{Extra, Handle, Io, SendPool, StreamTransport};
use bytes::Bytes;

static SMALL: [u8; 64] = [0x5a; 64];
static LARGE: [u8; 64 * 1024] = [0xa5; 64 * 1024];

/// `IoSlice` slots the baseline fills per send: the transport's batch for a long queue.
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
    /// True when our side copies the message: a `write_slice` the socket refused.
    fn copies(&self) -> bool {
        matches!((self.path, self.how), (Path::Queued, How::Slice))
    }

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

/// One timed loop of `iters` cycles.
trait Side {
    fn run(&mut self, case: Case, iters: u64);
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
}

impl Side for Ours {
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

/// The baseline: a bare deque of `Bytes` and one vectored send per message; base+copy
/// when `copy` is set: each message is first copied into that reused buffer.
struct Baseline {
    queue: VecDeque<Bytes>,
    copy: Option<Vec<u8>>,
    io: NullIo,
}

impl Baseline {
    fn new() -> Self {
        Baseline { queue: VecDeque::with_capacity(64), copy: None, io: NullIo { accept: true } }
    }

    /// Base+copy. The buffer is allocated up front and reused, so a message costs no
    /// allocation, as with the transport's pooled buffers.
    fn with_copy(len: usize) -> Self {
        Baseline { copy: Some(Vec::with_capacity(len)), ..Baseline::new() }
    }
}

impl Side for Baseline {
    fn run(&mut self, case: Case, iters: u64) {
        let Baseline { queue, copy, io } = self;
        for _ in 0..iters {
            let data = black_box(case.data);
            if let Some(buf) = copy {
                buf.clear();
                buf.extend_from_slice(data);
                black_box(&mut *buf);
            }
            queue.push_back(Bytes::from_static(data));
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

impl Side for SendOnly {
    fn run(&mut self, case: Case, iters: u64) {
        for _ in 0..iters {
            let io: &mut dyn Io = black_box(&mut self.io);
            let sent = io.try_send(Handle::from_raw(0, 0), &[IoSlice::new(black_box(case.data))]);
            black_box(sent.unwrap_or(0));
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

/// Median ns/cycle of one baseline and the median of the per-round ratios ours/it.
struct Against {
    ns: f64,
    ratio: f64,
    ratio_min: f64,
    ratio_max: f64,
}

impl Against {
    fn new(ours: &[f64], mut theirs: Vec<f64>) -> Self {
        let mut ratios: Vec<f64> = ours.iter().zip(&theirs).map(|(o, t)| o / t).collect();
        Against {
            ns: median(&mut theirs),
            ratio_min: ratios.iter().copied().fold(f64::INFINITY, f64::min),
            ratio_max: ratios.iter().copied().fold(0.0, f64::max),
            ratio: median(&mut ratios),
        }
    }
}

struct Row {
    name: String,
    ours: f64,
    base: Against,
    /// Only for the cases where our side copies the message.
    base_copy: Option<Against>,
    send: f64,
}

fn bench(case: Case, rounds: usize, target: Duration) -> Row {
    let mut ours = Ours::new();
    let iters = calibrate(&mut ours, case, target);
    let mut base = Baseline::new();
    let mut base_copy = case.copies().then(|| Baseline::with_copy(case.data.len()));
    let mut sides: Vec<&mut dyn Side> = vec![&mut ours, &mut base];
    if let Some(b) = &mut base_copy {
        sides.push(b);
    }
    // Warm the baselines too (caches, branch predictors, page faults).
    for side in &mut sides[1..] {
        side.run(case, iters / 8 + 1);
    }
    let mut ns: Vec<Vec<f64>> = vec![Vec::new(); sides.len()];
    let mut send = SendOnly { io: NullIo { accept: true } };
    let mut send_ns = Vec::with_capacity(rounds);
    for round in 0..rounds {
        // Rotate which side goes first so none always runs on a "warmer" machine.
        for k in 0..sides.len() {
            let i = (round + k) % sides.len();
            ns[i].push(ns_per(time(|| sides[i].run(case, iters)), iters));
        }
        send_ns.push(ns_per(time(|| send.run(case, iters)), iters));
    }
    let mut ns = ns.into_iter();
    let mut ours_ns = ns.next().expect("our side was timed");
    Row {
        name: case.name(),
        base: Against::new(&ours_ns, ns.next().expect("the baseline was timed")),
        base_copy: ns.next().map(|theirs| Against::new(&ours_ns, theirs)),
        ours: median(&mut ours_ns),
        send: median(&mut send_ns),
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
        "{:<27} {:>8} {:>8} {:>7} {:>13}   {:>9} {:>7}   {:>7}",
        "case", "ours ns", "base ns", "ratio", "ratio min–max", "base+copy", "ratio", "send ns"
    );
    let (mut over, mut over_copy) = (Vec::new(), Vec::new());
    for case in cases {
        let row = bench(case, rounds, target);
        let short = row.name.split_whitespace().collect::<Vec<_>>().join(" ");
        let copy = match &row.base_copy {
            Some(c) => format!("{:>9.1} {:>6.2}×", c.ns, c.ratio),
            None => format!("{:>9} {:>7}", "-", "-"),
        };
        let mut verdict = String::new();
        if row.base.ratio > TARGET_RATIO {
            verdict.push_str("  > target");
            over.push(short.clone());
        }
        if row.base_copy.as_ref().is_some_and(|c| c.ratio > TARGET_RATIO) {
            verdict.push_str(" (also vs base+copy)");
            over_copy.push(short);
        }
        println!(
            "{:<27} {:>8.1} {:>8.1} {:>6.2}× {:>6.2}–{:<6.2}   {copy}   {:>7.1}{verdict}",
            row.name,
            row.ours,
            row.base.ns,
            row.base.ratio,
            row.base.ratio_min,
            row.base.ratio_max,
            row.send
        );
    }
    println!();
    println!(
        "ours       StreamTransport write (+ on_writable when queued) + next_callback until None"
    );
    println!(
        "base       VecDeque<Bytes>: push, fill [IoSlice; {BASELINE_IOV}], try_send, pop (same Io)"
    );
    println!("ratio      median over rounds of ours/base measured in the same round");
    println!("           (target ≤ {TARGET_RATIO}×)");
    println!("base+copy  base plus a copy of the message into one reused Vec<u8>, and the");
    println!("           median ratio ours/base+copy: only where ours copies (queued write_slice)");
    println!("send       floor: one try_send of the message as one slice (same Io)");
    if !over.is_empty() {
        println!();
        println!("above the {TARGET_RATIO}× target vs base: {}", over.join(", "));
        if !over_copy.is_empty() {
            println!("above the {TARGET_RATIO}× target vs base+copy: {}", over_copy.join(", "));
        }
    }
    println!("total {:.2} s", started.elapsed().as_secs_f64());
}
