//! A counting `#[global_allocator]` for allocation tests: counts allocator calls and live
//! bytes on the current thread only, while [`counted`] runs, so the test harness's own
//! threads cannot perturb the numbers. Include with `#[path = "support/counting.rs"] mod
//! counting;` — each test binary that includes it gets the allocator.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Allocator calls and live bytes seen on the current thread while counting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub allocs: u64,
    pub zeroed: u64,
    pub reallocs: u64,
    pub deallocs: u64,
    /// Bytes allocated minus bytes freed.
    pub live: i64,
}

impl Stats {
    const ZERO: Stats = Stats { allocs: 0, zeroed: 0, reallocs: 0, deallocs: 0, live: 0 };

    /// Every allocator call of any kind.
    pub fn calls(&self) -> u64 {
        self.allocs + self.zeroed + self.reallocs + self.deallocs
    }
}

thread_local! {
    // `const` initialisers and no destructors: reading them never allocates and never
    // registers a thread-local destructor, so the allocator may use them.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static STATS: Cell<Stats> = const { Cell::new(Stats::ZERO) };
}

struct CountingAlloc;

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Applies `f` to this thread's stats if counting is on (and the thread-local is alive).
fn record(f: impl FnOnce(&mut Stats)) {
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        let _ = STATS.try_with(|cell| {
            let mut stats = cell.get();
            f(&mut stats);
            cell.set(stats);
        });
    }
}

fn size_of_layout(layout: Layout) -> i64 {
    i64::try_from(layout.size()).expect("allocation size fits i64")
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the
// bookkeeping touches only `Cell`s in const-initialised thread-locals and never allocates.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees (non-zero size layout).
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            record(|s| {
                s.allocs += 1;
                s.live += size_of_layout(layout);
            });
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees (non-zero size layout).
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            record(|s| {
                s.zeroed += 1;
                s.live += size_of_layout(layout);
            });
        }
        ptr
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees (`ptr` was allocated by this
        // allocator, which is `System`, with `layout`).
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            record(|s| {
                s.reallocs += 1;
                s.live += i64::try_from(new_size).expect("allocation size fits i64")
                    - size_of_layout(layout);
            });
        }
        new
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees (`ptr` was allocated by this
        // allocator, which is `System`, with `layout`).
        unsafe { System.dealloc(ptr, layout) };
        record(|s| {
            s.deallocs += 1;
            s.live -= size_of_layout(layout);
        });
    }
}

/// Turns counting off again even if the measured code panics.
struct CountingGuard;

impl Drop for CountingGuard {
    fn drop(&mut self) {
        COUNTING.with(|c| c.set(false));
    }
}

/// Runs `f` with counting on for this thread and returns its result with what it cost.
pub fn counted<R>(f: impl FnOnce() -> R) -> (R, Stats) {
    STATS.with(|s| s.set(Stats::ZERO));
    let result = {
        let _guard = CountingGuard;
        COUNTING.with(|c| c.set(true));
        f()
    };
    (result, STATS.with(Cell::get))
}
