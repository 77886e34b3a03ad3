//! Allocation test for the stream write path (DESIGN.md §8): "an idle transport holds no
//! heap allocation; no allocation per message in steady state".
//!
//! A counting `#[global_allocator]` (`tests/support/counting.rs`) counts allocator calls (alloc,
//! alloc_zeroed, realloc, dealloc) and live bytes, but only on a thread whose thread-local
//! `COUNTING` flag is on, so the test harness's own threads (and output capture) cannot
//! perturb the numbers. Everything runs in one `#[test]`, case after case.
//!
//! Each steady-state case runs a few warm-up cycles (which fill the [`SendPool`]) and then
//! `N` measured write→send cycles through an in-memory [`Io`] that never allocates, and
//! asserts that the measured cycles made no allocator call at all.

#[path = "support/counting.rs"]
mod counting;

use std::hint::black_box;
use std::io::{self, IoSlice};

use aioport::stream::StreamCallback;
use aioport::{Extra, Handle, Io, SendPool, StreamTransport};
use bytes::Bytes;
use counting::{Stats, counted};

// ---------------------------------------------------------------------------------------
// An in-memory socket that never allocates
// ---------------------------------------------------------------------------------------

/// A socket that takes at most `budget` bytes per `try_send` (`Err(WouldBlock)` when the
/// budget is 0) and copies nothing: it only looks at the slices through `black_box`.
#[derive(Debug, Default)]
struct MemIo {
    budget: usize,
    sent: u64,
    send_calls: u64,
    closes: u64,
}

impl Io for MemIo {
    fn try_send(&mut self, _h: Handle, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.send_calls += 1;
        if self.budget == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let offered: usize = bufs.iter().map(|b| black_box(&**b).len()).sum();
        let n = offered.min(self.budget);
        self.sent += n as u64;
        Ok(n)
    }

    fn try_recv(&mut self, _h: Handle, _buf: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }

    fn shutdown_write(&mut self, _h: Handle) -> io::Result<()> {
        Ok(())
    }

    fn close(&mut self, _h: Handle) {
        self.closes += 1;
    }
}

// ---------------------------------------------------------------------------------------
// Cycles
// ---------------------------------------------------------------------------------------

const N: u64 = 1000;
const WARM_UP: u64 = 4;

static SMALL: [u8; 64] = [0x5a; 64];
static LARGE: [u8; 64 * 1024] = [0xa5; 64 * 1024];

#[derive(Debug, Clone, Copy)]
enum How {
    /// `write_slice(&[u8])`: the refused part is copied into the queue.
    Slice,
    /// `write(Bytes::from_static(..))`: the refused part is queued as the `Bytes`.
    Bytes,
}

/// How much the socket takes during `write`; whatever is left goes out in `on_writable`.
#[derive(Debug, Clone, Copy)]
enum Path {
    /// Everything: nothing is queued.
    Fast,
    /// Nothing (`WouldBlock`): all of it is queued.
    Queued,
    /// Half of the first write.
    Half,
}

#[derive(Debug, Clone)]
struct Case {
    name: String,
    how: How,
    path: Path,
    data: &'static [u8],
    /// Writes per cycle (2 × 64 KiB queued crosses the 64 KiB high-water mark).
    writes: u32,
    /// Pause/resume pairs expected per cycle.
    pauses: u64,
}

impl Case {
    /// True when a cycle takes memory from the pool: a buffer for a queued copy, a deque
    /// for a second queued chunk. Nothing queued, or one queued `Bytes` (kept inside the
    /// queue), needs none.
    fn needs_pool(&self) -> bool {
        !matches!(self.path, Path::Fast) && (matches!(self.how, How::Slice) || self.writes > 1)
    }
}

/// Flow edges delivered during cycles.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Edges {
    pause: u64,
    resume: u64,
}

/// Delivers every pending callback; only flow edges are expected here.
fn drain_callbacks(t: &mut StreamTransport, edges: &mut Edges) {
    while let Some(cb) = t.next_callback() {
        match cb {
            StreamCallback::PauseWriting => edges.pause += 1,
            StreamCallback::ResumeWriting => edges.resume += 1,
            other => panic!("unexpected callback {other:?}"),
        }
    }
}

/// A transport with `connection_made` already delivered.
fn new_transport() -> StreamTransport {
    let mut t = StreamTransport::new(Handle::from_raw(0, 0), Extra::default());
    assert_eq!(t.next_callback(), Some(StreamCallback::ConnectionMade));
    assert_eq!(t.next_callback(), None);
    t
}

/// One write→send cycle: the writes (the socket taking what `case.path` says), the flow
/// edges, then `on_writable` with a socket that takes everything, the edges again. The
/// queue is empty and the transport holds no heap afterwards.
fn cycle(
    case: &Case,
    t: &mut StreamTransport,
    io: &mut MemIo,
    pool: &mut SendPool,
    edges: &mut Edges,
) {
    io.budget = match case.path {
        Path::Fast => usize::MAX,
        Path::Queued => 0,
        Path::Half => case.data.len() / 2,
    };
    for _ in 0..case.writes {
        let res = match case.how {
            How::Slice => t.write_slice(black_box(case.data), io, pool),
            How::Bytes => t.write(Bytes::from_static(black_box(case.data)), io, pool),
        };
        assert!(res.is_ok(), "write failed");
    }
    drain_callbacks(t, edges);
    if t.write_buffer_size() > 0 {
        assert!(t.interest().write);
        io.budget = usize::MAX;
        assert!(t.on_writable(io, pool).is_ok(), "on_writable failed");
        drain_callbacks(t, edges);
    }
    assert_eq!(t.write_buffer_size(), 0);
    assert!(!t.is_writing_paused());
    assert!(!t.interest().write);
    assert_eq!(t.heap_bytes(), 0, "idle transport holds heap");
}

/// Warm-up, then `N` counted cycles on a fresh transport and pool; returns what the
/// counted cycles cost.
fn steady_state(case: &Case) -> Stats {
    let mut t = new_transport();
    let mut io = MemIo::default();
    let mut pool = SendPool::default();
    let mut edges = Edges::default();
    for _ in 0..WARM_UP {
        cycle(case, &mut t, &mut io, &mut pool, &mut edges);
    }
    let pool_before = pool.heap_bytes();
    let ((), stats) = counted(|| {
        for _ in 0..N {
            cycle(case, &mut t, &mut io, &mut pool, &mut edges);
        }
    });
    let cycles = WARM_UP + N;
    let bytes = case.data.len() as u64 * u64::from(case.writes);
    assert_eq!(io.sent, cycles * bytes, "{}: bytes lost or duplicated", case.name);
    assert_eq!(io.closes, 0, "{}: transport closed", case.name);
    assert_eq!(
        edges,
        Edges { pause: cycles * case.pauses, resume: cycles * case.pauses },
        "{}: flow edges",
        case.name
    );
    assert_eq!(pool.heap_bytes(), pool_before, "{}: pool changed in steady state", case.name);
    eprintln!(
        "{:<34} {:>6} B x{}  pause/resume {:>4}/{:<4} try_send {:>5}  allocator calls {} \
         (alloc {}, zeroed {}, realloc {}, dealloc {}), live bytes {:+}",
        case.name,
        case.data.len(),
        case.writes,
        edges.pause,
        edges.resume,
        io.send_calls,
        stats.calls(),
        stats.allocs,
        stats.zeroed,
        stats.reallocs,
        stats.deallocs,
        stats.live,
    );
    stats
}

/// One cycle on a fresh transport and a cold pool: the pool may grow (those are the only
/// allocations), but everything beyond what the pool holds is freed again.
fn cold_cycle(case: &Case) -> (Stats, i64) {
    let mut t = new_transport();
    let mut io = MemIo::default();
    let mut pool = SendPool::default();
    let mut edges = Edges::default();
    let pool_before = pool.heap_bytes();
    let ((), stats) = counted(|| cycle(case, &mut t, &mut io, &mut pool, &mut edges));
    let pool_growth = i64::try_from(pool.heap_bytes() - pool_before).expect("fits i64");
    eprintln!(
        "cold {:<29} {:>6} B x{}  allocator calls {} (alloc {}, realloc {}, dealloc {}), live \
         bytes {:+}, pool grew {:+}, net {:+}, transport.heap_bytes() {}",
        case.name,
        case.data.len(),
        case.writes,
        stats.calls(),
        stats.allocs,
        stats.reallocs,
        stats.deallocs,
        stats.live,
        pool_growth,
        stats.live - pool_growth,
        t.heap_bytes(),
    );
    (stats, pool_growth)
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for (path, pname) in
        [(Path::Fast, "fast"), (Path::Queued, "queued"), (Path::Half, "half queued")]
    {
        for (how, hname) in [(How::Slice, "write_slice"), (How::Bytes, "write(Bytes)")] {
            for data in [&SMALL[..], &LARGE[..]] {
                let name = format!("{pname} {hname}");
                cases.push(Case { name, how, path, data, writes: 1, pauses: 0 });
            }
        }
    }
    // Two queued 64 KiB writes exceed the high-water mark: pause and resume every cycle.
    for (how, hname) in [(How::Slice, "write_slice"), (How::Bytes, "write(Bytes)")] {
        let name = format!("queued {hname}, paused");
        cases.push(Case { name, how, path: Path::Queued, data: &LARGE, writes: 2, pauses: 1 });
    }
    cases
}

#[test]
fn write_path_makes_no_allocator_calls() {
    // The counter works: a test that cannot count would pass vacuously.
    let (v, stats) = counted(|| black_box(Vec::<u8>::with_capacity(10)));
    assert_eq!((stats.allocs, stats.calls(), stats.live), (1, 1, 10), "sanity: {stats:?}");
    let ((), stats) = counted(|| drop(v));
    assert_eq!((stats.deallocs, stats.calls(), stats.live), (1, 1, -10), "sanity: {stats:?}");
    let ((), stats) = counted(|| {
        let mut v: Vec<u8> = Vec::with_capacity(10);
        v.extend_from_slice(&[1; 100]);
        black_box(&v);
    });
    assert_eq!((stats.allocs, stats.reallocs, stats.deallocs), (1, 1, 1), "sanity: {stats:?}");
    assert_eq!(stats.live, 0, "sanity: {stats:?}");
    eprintln!("sanity: Vec::with_capacity(10) counted 1 alloc, its drop 1 dealloc");

    // A fresh transport holds no heap, and delivering connection_made allocates nothing.
    let (mut t, stats) = counted(|| StreamTransport::new(Handle::from_raw(7, 1), Extra::default()));
    let (made, made_stats) = counted(|| t.next_callback());
    eprintln!(
        "fresh StreamTransport::new: allocator calls {}, live bytes {:+}, heap_bytes() {}; \
         connection_made: allocator calls {}",
        stats.calls(),
        stats.live,
        t.heap_bytes(),
        made_stats.calls(),
    );
    assert_eq!(made, Some(StreamCallback::ConnectionMade));
    assert_eq!((stats.calls(), stats.live), (0, 0), "StreamTransport::new allocated");
    assert_eq!(made_stats.calls(), 0, "connection_made allocated");
    assert_eq!(t.heap_bytes(), 0);

    // Steady state: not one allocator call per cycle, on any path.
    let cases = cases();
    eprintln!("steady state: {WARM_UP} warm-up cycles, then {N} counted cycles per case");
    let mut failures = Vec::new();
    for case in &cases {
        let stats = steady_state(case);
        if stats.calls() != 0 || stats.live != 0 {
            failures.push(format!("{} {} B: {stats:?}", case.name, case.data.len()));
        }
    }

    // Cold pool: one full cycle leaves nothing live beyond what the pool now holds, and
    // a cycle that needs no pool memory allocates nothing at all, even cold.
    eprintln!("cold: one cycle on a fresh transport and an empty pool");
    for case in &cases {
        let (stats, pool_growth) = cold_cycle(case);
        if !case.needs_pool() {
            if stats.calls() != 0 || pool_growth != 0 {
                failures.push(format!("{} {} B cold: {stats:?}", case.name, case.data.len()));
            }
            continue;
        }
        if stats.live != pool_growth {
            failures.push(format!(
                "{} {} B cold: live {:+} but the pool grew {:+}",
                case.name,
                case.data.len(),
                stats.live,
                pool_growth
            ));
        }
        // The live-byte accounting above is not vacuous: the pool was used.
        assert!(pool_growth > 0, "{}: a cycle needing the pool left it empty", case.name);
    }
    assert!(failures.is_empty(), "allocations on the write path:\n{}", failures.join("\n"));
}
