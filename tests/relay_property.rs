//! The relay of `examples/proxy.rs` as a property on the in-memory harness: a client (the
//! harness's scripted peer) and an upstream protocol stream patterns through it both ways
//! under random chunking, latency, socket-buffer sizes and read stalls on both ends. Every
//! byte arrives once, in order (bytes out == bytes in); both half-closes are forwarded and
//! everything ends; and after every step each relay write buffer is within the high-water
//! mark plus one read.
//!
//! Seed and case count come from `AIOPORT_SEED` / `AIOPORT_CASES`, as in `properties.rs`.

#[path = "../examples/support/relay.rs"]
mod relay_impl;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use aioport::testing::{Sim, SimConfig};
use aioport::{CallbackResult, ConnectionError, Ctx, Endpoint, Protocol};
use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};

use relay_impl::{RelayStats, relay};

const HIGH_WATER: usize = 64 * 1024;
/// The core's read buffer: the most one read delivers.
const READ_SIZE: usize = 256 * 1024;

fn pattern(offset: usize, n: usize) -> Vec<u8> {
    (offset..offset + n).map(|i| (i % 251) as u8).collect()
}

#[derive(Clone, Debug)]
struct Case {
    seed: u64,
    max_send: Option<u16>,
    max_read: Option<u16>,
    latency_ms: u8,
    capacity_kib: u16,
    client_bytes: u32,
    upstream_bytes: u32,
    /// (step, milliseconds, side): a read stall of the client (side 0) or the upstream.
    stalls: Vec<(u16, u16, bool)>,
}

impl Arbitrary for Case {
    fn arbitrary(g: &mut Gen) -> Self {
        let size = |g: &mut Gen| match u8::arbitrary(g) % 4 {
            0 => u32::arbitrary(g) % 1_000,
            1 => u32::arbitrary(g) % 100_000,
            _ => u32::arbitrary(g) % 1_500_000,
        };
        let stalls = (0..u8::arbitrary(g) % 6)
            .map(|_| (u16::arbitrary(g) % 400, u16::arbitrary(g) % 500, bool::arbitrary(g)))
            .collect();
        Case {
            seed: u64::arbitrary(g),
            // Chunks of at least 256 bytes: smaller ones only make runs longer (the
            // framing-level chunking is the conformance suite's and `pair`'s business).
            max_send: bool::arbitrary(g).then(|| 256 + u16::arbitrary(g) % 20_000),
            max_read: bool::arbitrary(g).then(|| 256 + u16::arbitrary(g) % 20_000),
            latency_ms: u8::arbitrary(g) % 5,
            capacity_kib: 1 + u16::arbitrary(g) % 512,
            client_bytes: size(g),
            upstream_bytes: size(g),
            stalls,
        }
    }
    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        let base = self.clone();
        let smaller = [
            Case { stalls: Vec::new(), ..base.clone() },
            Case { client_bytes: base.client_bytes / 2, ..base.clone() },
            Case { upstream_bytes: base.upstream_bytes / 2, ..base.clone() },
            Case { max_send: None, max_read: None, latency_ms: 0, ..base.clone() },
        ];
        let this = self.clone();
        Box::new(smaller.into_iter().filter(move |c| {
            c.stalls.len() < this.stalls.len()
                || c.client_bytes < this.client_bytes
                || c.upstream_bytes < this.upstream_bytes
                || (c.max_send, c.max_read, c.latency_ms)
                    != (this.max_send, this.max_read, this.latency_ms)
        }))
    }
}

#[derive(Debug, Default)]
struct UpstreamSeen {
    handle: Option<aioport::StreamHandle>,
    received: usize,
    wrong_at: Option<usize>,
    eof: bool,
    lost: Option<Option<ConnectionError>>,
}

/// The upstream server: sends `total` bytes of the pattern as flow control allows, then
/// half-closes; checks what it receives; closes once both directions are done.
struct Upstream {
    total: usize,
    sent: usize,
    seen: Rc<RefCell<UpstreamSeen>>,
}

impl Upstream {
    fn pump(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        let h = ctx.stream();
        while self.sent < self.total && !ctx.is_writing_paused(h)? {
            let n = (self.total - self.sent).min(16 * 1024);
            ctx.write(h, pattern(self.sent, n))?;
            self.sent += n;
        }
        if self.sent == self.total && !ctx.is_closing(h)? {
            if self.seen.borrow().eof {
                ctx.close(h)?;
            } else {
                ctx.write_eof(h)?;
            }
        }
        Ok(())
    }
}

impl Protocol for Upstream {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.seen.borrow_mut().handle = Some(ctx.stream());
        self.pump(ctx)
    }
    fn resume_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.pump(ctx)
    }
    fn data_received(&mut self, _: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        let mut s = self.seen.borrow_mut();
        if s.wrong_at.is_none() && data != pattern(s.received, data.len()) {
            s.wrong_at = Some(s.received);
        }
        s.received += data.len();
        Ok(())
    }
    fn eof_received(&mut self, _: &mut Ctx<'_>) -> CallbackResult<bool> {
        self.seen.borrow_mut().eof = true;
        // Keep open while there is more to send; close after the last write otherwise.
        Ok(self.sent < self.total)
    }
    fn connection_lost(&mut self, _: &mut Ctx<'_>, err: Option<ConnectionError>) -> CallbackResult {
        self.seen.borrow_mut().lost = Some(err);
        Ok(())
    }
}

fn relay_preserves_bytes_and_bounds_buffers(case: Case) -> TestResult {
    let mut config = SimConfig::new(case.seed)
        .latency(Duration::from_millis(u64::from(case.latency_ms)))
        .capacity(usize::from(case.capacity_kib) * 1024)
        .keep_data(true)
        .max_steps(5_000_000);
    if let Some(n) = case.max_send {
        config = config.max_send(usize::from(n));
    }
    if let Some(n) = case.max_read {
        config = config.max_read(usize::from(n));
    }
    let one_read = case.max_read.map_or(READ_SIZE, |n| usize::from(n).min(READ_SIZE));
    let bound = HIGH_WATER + one_read;
    let mut sim = Sim::with_config(Instant::now(), config);

    let upstream_at = Endpoint::Addr(SocketAddr::from(([127, 0, 0, 1], 9000)));
    let seen = Rc::new(RefCell::new(UpstreamSeen::default()));
    let (s, total) = (seen.clone(), case.upstream_bytes as usize);
    sim.listen(upstream_at.clone(), move || Box::new(Upstream { total, sent: 0, seen: s.clone() }));
    let stats = Rc::new(RelayStats::default());
    let (_down, client) = sim.open(relay(upstream_at, &stats));

    let client_bytes = case.client_bytes as usize;
    let mut client_sent = 0;
    let mut resume_client_at: Option<u32> = None;
    for step in 0..200_000u32 {
        // The client sends in pieces, then half-closes.
        if client_sent < client_bytes {
            let n = (client_bytes - client_sent).min(32 * 1024);
            sim.peer_send(client, &pattern(client_sent, n));
            client_sent += n;
            if client_sent == client_bytes {
                sim.peer_eof(client);
            }
        } else if client_bytes == 0 && step == 0 {
            sim.peer_eof(client);
        }
        for &(at, ms, upstream_side) in &case.stalls {
            if u32::from(at) == step {
                if upstream_side {
                    if let Some(h) = seen.borrow().handle {
                        sim.stall(h, Duration::from_millis(u64::from(ms)));
                    }
                } else {
                    sim.peer_pause_reading(client);
                    resume_client_at = Some(step + 1 + u32::from(ms));
                }
            }
        }
        if resume_client_at == Some(step) {
            sim.peer_resume_reading(client);
            resume_client_at = None;
        }
        let progressed = match sim.try_step() {
            Ok(p) => p,
            Err(v) => return TestResult::error(format!("harness invariant: {v}")),
        };
        if stats.peak_buffered.get() > bound {
            return TestResult::error(format!(
                "a relay write buffer reached {} bytes (bound {bound})",
                stats.peak_buffered.get()
            ));
        }
        if !progressed && client_sent == client_bytes {
            if resume_client_at.take().is_some() {
                sim.peer_resume_reading(client);
                continue;
            }
            // Idle: everything ended, or the relay is stuck (the checks below say which).
            break;
        }
    }
    if let Err(e) = sim.try_run_until_idle() {
        return TestResult::error(format!("{e}"));
    }

    let up = seen.borrow();
    let got = sim.peer_received(client);
    let checks = [
        (up.wrong_at.is_none(), format!("upstream got wrong bytes at {:?}", up.wrong_at)),
        (
            up.received == client_bytes,
            format!("upstream got {} of {client_bytes} client bytes", up.received),
        ),
        (got.len() == total, format!("client got {} of {total} upstream bytes", got.len())),
        (got == pattern(0, got.len()).as_slice(), "client got wrong bytes".into()),
        (sim.peer_saw_eof(client), "the upstream's EOF did not reach the client".into()),
        (up.eof, "the client's EOF did not reach the upstream".into()),
        (matches!(up.lost, Some(None)), format!("upstream lost with {:?}", up.lost)),
        (stats.open.get() == 0, format!("{} relay connections open", stats.open.get())),
        (sim.registry().is_empty(), format!("{} transports left", sim.registry().len())),
    ];
    for (ok, why) in checks {
        if !ok {
            return TestResult::error(why);
        }
    }
    TestResult::passed()
}

#[test]
fn relay_preserves_every_byte_and_bounds_its_buffers() {
    let seed = std::env::var("AIOPORT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20261126);
    let n = std::env::var("AIOPORT_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let r = QuickCheck::new()
        .rng(Gen::from_size_and_seed(100, seed))
        .tests(n)
        .quicktest(relay_preserves_bytes_and_bounds_buffers as fn(Case) -> TestResult);
    if let Err(f) = r {
        panic!("failed with AIOPORT_SEED={seed}:\n{f:?}");
    }
}
