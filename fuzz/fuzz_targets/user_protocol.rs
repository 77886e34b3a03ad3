//! Fuzzing your own protocol: `cargo fuzz run -s none user_protocol`.
//!
//! A line protocol (each `\n`-terminated line answered in upper case, closed after 10 s of
//! silence, reading paused while its writes are paused) runs over a faulty in-memory link
//! against a peer the fuzzer scripts: the bytes it sends reach the parser, with EOF,
//! stalls, resets and time jumps in between (`aioport::fuzzing::drive_peer`). The harness
//! checks the loop's invariants after every step; the target adds the protocol's own
//! property: the replies are the upper-cased complete lines, in order, maybe cut short.
#![no_main]

use std::time::{Duration, Instant};

use aioport::{CallbackResult, Ctx, Protocol};

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

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some(run) = aioport::fuzzing::drive_peer(data, Upper::default()) else { return };
    let lines = run.sent.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let expected = run.sent[..lines].to_ascii_uppercase();
    let replies = run.sim.peer_received(run.peer);
    assert!(expected.starts_with(replies), "replies are not the upper-cased lines");
});
