//! Allocation test for a dispatched echo (DESIGN.md §8: no allocation per message in
//! steady state): the driver reports `on_readable`, the registry reads into its loop-wide
//! buffer, delivers `data_received`, the protocol answers with `write_slice`, and the
//! socket takes it — on the fast path, or refused and flushed later by `on_writable`.

#[path = "support/counting.rs"]
mod counting;

use std::io::{self, IoSlice};
use std::time::Instant;

use aioport::{CallbackResult, Ctx, Extra, Handle, Io, Protocol, Registry};
use counting::counted;

/// One socket in memory that never allocates: each `try_recv` yields `msg_len` bytes of a
/// static message, `try_send` takes up to `budget` bytes per call.
struct Mem {
    msg: &'static [u8],
    readable: bool,
    budget: usize,
    sent: u64,
}

impl Io for Mem {
    fn try_send(&mut self, _: Handle, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let n = total.min(self.budget);
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.sent += n as u64;
        Ok(n)
    }
    fn try_recv(&mut self, _: Handle, buf: &mut [u8]) -> io::Result<usize> {
        if !std::mem::take(&mut self.readable) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        buf[..self.msg.len()].copy_from_slice(self.msg);
        Ok(self.msg.len())
    }
    fn shutdown_write(&mut self, _: Handle) -> io::Result<()> {
        Ok(())
    }
    fn close(&mut self, _: Handle) {}
}

struct Echo {
    received: u64,
}

impl Protocol for Echo {
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        self.received += data.len() as u64;
        ctx.write_slice(ctx.stream(), data)?;
        Ok(())
    }
}

static SMALL: [u8; 64] = [7; 64];
static LARGE: [u8; 64 * 1024] = [9; 64 * 1024];

/// Runs `cycles` echo round trips; `queued` makes the socket refuse the reply first.
fn echo_cycles(reg: &mut Registry, io: &mut Mem, h: Handle, cycles: u64, queued: bool) {
    let now = Instant::now();
    for _ in 0..cycles {
        io.readable = true;
        io.budget = if queued { 0 } else { usize::MAX };
        reg.on_readable(h, now, io).unwrap();
        if queued {
            assert!(reg.interest(h).unwrap().write, "the reply was queued");
            io.budget = usize::MAX;
            reg.on_writable(h, now, io).unwrap();
        }
        assert!(!reg.interest(h).unwrap().write, "the reply was sent");
    }
}

#[test]
fn dispatched_echo_makes_no_allocator_calls() {
    for msg in [&SMALL[..], &LARGE[..]] {
        for queued in [false, true] {
            let now = Instant::now();
            let mut reg = Registry::new(now);
            let mut io = Mem { msg, readable: false, budget: usize::MAX, sent: 0 };
            let h = reg.insert_stream(Box::new(Echo { received: 0 }), Extra::default()).handle();
            reg.dispatch(now, &mut io);
            // Warm-up: the loop's read buffer, the send pool, the dirty lists.
            echo_cycles(&mut reg, &mut io, h, 4, queued);
            while reg.poll_io().is_some() {}
            let ((), stats) = counted(|| echo_cycles(&mut reg, &mut io, h, 1000, queued));
            eprintln!("echo {} B queued={queued}: {stats:?}", msg.len());
            assert_eq!(stats.calls(), 0, "{} B queued={queued}: {stats:?}", msg.len());
            assert_eq!(io.sent, 1004 * msg.len() as u64);
        }
    }
}

#[test]
fn the_counter_counts() {
    let (v, stats) = counted(|| Vec::<u8>::with_capacity(10));
    drop(v);
    assert_eq!(stats.allocs, 1);
}
