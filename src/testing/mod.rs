//! Testing protocols without sockets: deterministic, in virtual time (feature `testing`).
//!
//! Drivers of the same [`Registry`](crate::Registry) every other driver drives, so
//! what passes here is what runs on a real loop:
//!
//! * [`Sim`]: any number of transports joined by in-memory links — to each other
//!   ([`Sim::pair`]), to the test itself ([`Sim::open`]), or through connections protocols
//!   open ([`Sim::listen`]) — with seeded faults ([`SimConfig`]: partial sends, random read
//!   chunking, refused sends, latency, small socket buffers, stalls, resets), virtual time
//!   that jumps to the next timer when nothing else is ready, a transcript of every
//!   callback per transport, and an invariant checker run after every step
//!   (`connection_made` first and once, `connection_lost` once and last, pause/resume
//!   strictly alternating, the bytes delivered are exactly the bytes sent, `Io::close` once,
//!   no work without new input, a due timer always fires). The same seed gives the
//!   same run; a failure prints the seed.
//! * [`Scripted`]: one transport over a socket whose every answer the test dictates
//!   ("`try_send` accepts 3 bytes, then `WouldBlock`, then the peer sends EOF"), reading
//!   back the exact callbacks, buffer size and interest after each step — CPython's
//!   mocked-socket tests, without the mocks.
//! * [`ProcessSim`]: subprocess transports over simulated children — the test plays the
//!   child (writes stdout/stderr, reads stdin through a bounded pipe, closes its ends,
//!   exits, leaves a grandchild holding its pipes, dies of a signal the protocol sent),
//!   with the subprocess ordering rules checked after every step.
//!
//! # Testing your own protocol
//!
//! A line-based protocol: it answers each `\n`-terminated line in upper case, closes after
//! 10 s of silence, pauses reading while its writes are paused, and half-closes politely.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use aioport::{CallbackResult, Ctx, Protocol};
//! use aioport::testing::{Event, Sim, SimConfig};
//!
//! #[derive(Default)]
//! struct Upper { line: Vec<u8>, idle_deadline: Option<Instant> }
//!
//! impl Protocol for Upper {
//!     fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
//!         self.idle_deadline = Some(ctx.now() + Duration::from_secs(10));
//!         Ok(())
//!     }
//!     fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
//!         self.idle_deadline = Some(ctx.now() + Duration::from_secs(10));
//!         for &b in data {
//!             self.line.push(b.to_ascii_uppercase());
//!             if b == b'\n' {
//!                 ctx.write(ctx.stream(), std::mem::take(&mut self.line))?;
//!             }
//!         }
//!         Ok(())
//!     }
//!     fn eof_received(&mut self, _ctx: &mut Ctx<'_>) -> CallbackResult<bool> {
//!         Ok(false) // close once the replies are flushed
//!     }
//!     fn pause_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
//!         Ok(ctx.pause_reading(ctx.stream())?)
//!     }
//!     fn resume_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
//!         Ok(ctx.resume_reading(ctx.stream())?)
//!     }
//!     fn poll_timeout(&self) -> Option<Instant> {
//!         self.idle_deadline
//!     }
//!     fn handle_timeout(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
//!         self.idle_deadline = None;
//!         Ok(ctx.close(ctx.stream())?)
//!     }
//! }
//!
//! // Framing across chunk boundaries: reads of 1..=3 bytes, sends of 1..=5.
//! let t0 = Instant::now();
//! let mut sim = Sim::with_config(t0, SimConfig::new(7).max_read(3).max_send(5));
//! let (h, peer) = sim.open(Upper::default());
//! sim.peer_send(peer, b"hello\nwor");
//! sim.run_for(Duration::from_secs(1));
//! assert_eq!(sim.peer_received(peer), b"HELLO\n");
//! sim.peer_send(peer, b"ld\n");
//! sim.run_for(Duration::from_secs(1));
//! assert_eq!(sim.take_peer_received(peer), b"HELLO\nWORLD\n");
//!
//! // Back-pressure: the peer stops reading; the protocol pauses its own reading.
//! let mut sim = Sim::with_config(t0, SimConfig::new(1).capacity(1024));
//! let (h, peer) = sim.open(Upper::default());
//! sim.peer_pause_reading(peer);
//! sim.peer_send(peer, &b"0123456789abcde\n".repeat(10_000));
//! sim.run_for(Duration::from_secs(1));
//! assert!(sim.take_transcript(h).contains(&Event::Pause));
//! assert!(!sim.registry().transport(h.handle()).unwrap().is_reading());
//! sim.peer_resume_reading(peer);
//! sim.run_for(Duration::from_secs(1));
//! assert_eq!(sim.peer_received(peer).len(), 160_000);
//!
//! // Half-close: the peer's EOF makes it close after flushing.
//! sim.peer_eof(peer);
//! sim.run_until_idle();
//! assert_eq!(sim.take_transcript(h).last(), Some(&Event::Lost(None)));
//! assert!(sim.peer_saw_eof(peer));
//!
//! // The idle timeout, in virtual time: no test waits 10 real seconds.
//! let mut sim = Sim::new(t0, 3);
//! let (h, peer) = sim.open(Upper::default());
//! sim.run_until_idle(); // jumps straight to the deadline
//! assert_eq!(sim.now() - t0, Duration::from_secs(10));
//! assert_eq!(sim.transcript(h), [Event::Made, Event::Timeout, Event::Lost(None)]);
//! assert!(sim.peer_saw_eof(peer));
//! ```
//!
//! `examples/test_your_protocol.rs` is the same walk-through as a program.

mod dgram;
mod memfile;
pub mod model;
mod net;
mod process;
mod rng;
mod scripted;
#[cfg(test)]
mod sendfile_tests;
mod sim;
#[cfg(test)]
mod tests;
mod transcript;

pub use memfile::MemFile;
pub use process::ProcessSim;
pub use rng::Rng;
pub use scripted::Scripted;
pub use sim::{PeerId, Sim, SimConfig, SimError};
pub use transcript::{Event, Violation};
