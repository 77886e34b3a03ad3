//! Testing your own protocol without sockets: a line protocol checked for framing across
//! chunk boundaries, back-pressure, half-close and an idle timeout in virtual time.
//!
//! ```text
//! cargo run --example test_your_protocol --features testing
//! ```
//!
//! Every run with the same seed is identical; change `SEED` to explore other chunkings.

use std::time::{Duration, Instant};

use aioport::testing::{Event, Sim, SimConfig};
use aioport::{CallbackResult, Ctx, Protocol};

const SEED: u64 = 2026;

/// Answers every `\n`-terminated line in upper case; closes after 10 s of silence; stops
/// reading while its own writes are paused; closes (after flushing) when the peer
/// half-closes.
#[derive(Default)]
struct Upper {
    line: Vec<u8>,
    idle_deadline: Option<Instant>,
}

impl Protocol for Upper {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.idle_deadline = Some(ctx.now() + Duration::from_secs(10));
        Ok(())
    }
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        self.idle_deadline = Some(ctx.now() + Duration::from_secs(10));
        for &b in data {
            self.line.push(b.to_ascii_uppercase());
            if b == b'\n' {
                ctx.write(ctx.stream(), std::mem::take(&mut self.line))?;
            }
        }
        Ok(())
    }
    fn pause_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        Ok(ctx.pause_reading(ctx.stream())?)
    }
    fn resume_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        Ok(ctx.resume_reading(ctx.stream())?)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.idle_deadline
    }
    fn handle_timeout(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.idle_deadline = None;
        Ok(ctx.close(ctx.stream())?)
    }
}

fn main() {
    let t0 = Instant::now();

    // 1. Framing across chunk boundaries: reads of 1..=3 bytes, sends of 1..=5.
    let mut sim = Sim::with_config(t0, SimConfig::new(SEED).max_read(3).max_send(5));
    let (h, peer) = sim.open(Upper::default());
    sim.peer_send(peer, b"hel");
    sim.peer_send(peer, b"lo\nwor");
    sim.peer_send(peer, b"ld\n");
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.take_peer_received(peer), b"HELLO\nWORLD\n");
    let deliveries = sim.take_transcript(h).iter().filter(|e| matches!(e, Event::Data(_))).count();
    println!("1. framing: 12 bytes arrived in {deliveries} reads, two lines answered");

    // 2. Back-pressure: the peer stops reading; the protocol pauses, then resumes.
    let mut sim = Sim::with_config(t0, SimConfig::new(SEED).capacity(1024));
    let (h, peer) = sim.open(Upper::default());
    sim.peer_pause_reading(peer);
    sim.peer_send(peer, &b"0123456789abcde\n".repeat(10_000));
    sim.run_for(Duration::from_secs(1));
    let paused = sim.take_transcript(h).contains(&Event::Pause);
    println!("2. back-pressure: the peer stopped reading -> paused: {paused}");
    assert!(paused);
    sim.peer_resume_reading(peer);
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.peer_received(peer).len(), 160_000);
    println!("   the peer read again -> all 160000 bytes answered, resumed");

    // 3. Half-close: the peer's EOF makes the protocol close after flushing.
    sim.peer_eof(peer);
    sim.run_until_idle();
    assert_eq!(sim.take_transcript(h), [Event::Resume, Event::Eof, Event::Lost(None)]);
    println!("3. half-close: eof_received -> flushed -> connection_lost(None)");

    // 4. The idle timeout in virtual time: nobody waits 10 real seconds.
    let mut sim = Sim::new(t0, SEED);
    let (h, peer) = sim.open(Upper::default());
    sim.run_until_idle();
    assert_eq!(sim.now() - t0, Duration::from_secs(10));
    assert_eq!(sim.transcript(h), [Event::Made, Event::Timeout, Event::Lost(None)]);
    assert!(sim.peer_saw_eof(peer));
    println!("4. idle timeout: closed at t0 + {:?} of virtual time", sim.now() - t0);
    println!("all checks passed (seed {SEED})");
}
