//! Sendfile on the scripted driver: the rules of `loop.sendfile` (spec §0.8, §2.1,
//! §10.53) step by step — the queue first, writes refused meanwhile, the fallback's flow
//! control and the protocol's paused view handed back, close / abort / failures, offsets.

use std::io::ErrorKind;
use std::time::Instant;

use super::*;
use crate::stream::{SENDFILE_CHUNK, SendfileDone, SendfileError, SendfileFallback};
use crate::{
    CallbackResult, ConnectionError, Ctx, HandleError, Protocol, StreamHandle, WriteError,
};

fn t0() -> Instant {
    #[allow(clippy::disallowed_methods)] // the caller's base time; the harness never reads a clock
    Instant::now()
}

fn digits(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'0' + (i % 10) as u8).collect()
}

struct Quiet;
impl Protocol for Quiet {}

/// Starts a sendfile from outside any callback; the outcome then goes to the driver.
fn start(
    s: &mut Scripted,
    file: &MemFile,
    offset: u64,
    count: Option<u64>,
    fallback: SendfileFallback,
) -> Result<(), SendfileError> {
    let file = Box::new(file.clone());
    s.enter(|ctx, h| ctx.sendfile(h, file, offset, count, fallback))
}

fn done(s: &mut Scripted) -> Option<Result<u64, SendfileError>> {
    s.poll_sendfile_done().map(|SendfileDone { handle, outcome }| {
        assert_eq!(handle, s.handle().handle());
        outcome
    })
}

#[test]
fn zero_copy_waits_for_the_queue_then_sends_from_the_offset() {
    // asyncio's _sendfile_native awaits transp._make_empty_waiter() first.
    let mut s = Scripted::new(t0(), Quiet);
    s.events();
    s.set_zero_copy(true).send_accepts(2);
    s.enter(|ctx, h| ctx.write_slice(h, b"hello")).unwrap();
    let file = MemFile::new(digits(10));
    start(&mut s, &file, 2, Some(5), SendfileFallback::Allow).unwrap();
    assert_eq!(s.sendfile_calls(), 0, "nothing zero-copy while bytes are queued");
    assert_eq!(done(&mut s), None);
    assert!(s.interest().write);
    assert_eq!(s.writable(), []);
    assert_eq!(s.sent(), b"hello23456");
    assert_eq!(s.sendfile_calls(), 1);
    assert_eq!(done(&mut s), Some(Ok(5)));
    assert!(!s.interest().write);
    // Writes are accepted again.
    s.enter(|ctx, h| ctx.write_slice(h, b"!")).unwrap();
    assert_eq!(s.sent(), b"hello23456!");
}

#[test]
fn zero_copy_partial_sends_and_would_block_lose_nothing() {
    let mut s = Scripted::new(t0(), Quiet);
    s.events();
    s.set_zero_copy(true).send_accepts(3).send_would_block();
    let file = MemFile::new(digits(25));
    start(&mut s, &file, 0, None, SendfileFallback::Deny).unwrap();
    assert_eq!(s.sent(), b"012");
    assert!(s.interest().write, "a zero-copy send in progress wants writability");
    s.send_accepts(4).send_accepts(0);
    assert_eq!(s.writable(), []);
    assert_eq!(s.sent(), b"0123456");
    assert_eq!(done(&mut s), Some(Ok(7)), "Ok(0) from sendfile(2) is the end of the file");
}

#[test]
fn write_writelines_and_write_eof_during_a_sendfile_are_refused() {
    // spec §2.1 ¶3, §2.3 ¶1: RuntimeError('unable to write; sendfile is in progress').
    let mut s = Scripted::new(t0(), Quiet);
    s.events();
    s.set_zero_copy(true).send_refuses_all();
    let file = MemFile::new(digits(10));
    start(&mut s, &file, 0, None, SendfileFallback::Allow).unwrap();
    assert_eq!(s.enter(|ctx, h| ctx.write(h, &b"x"[..])), Err(WriteError::SendfileInProgress));
    assert_eq!(s.enter(|ctx, h| ctx.write_slice(h, b"x")), Err(WriteError::SendfileInProgress));
    assert_eq!(
        s.enter(|ctx, h| ctx.writelines(h, &[bytes::Bytes::from_static(b"x")])),
        Err(WriteError::SendfileInProgress)
    );
    assert_eq!(s.enter(|ctx, h| ctx.write_eof(h)), Err(HandleError::SendfileInProgress));
    assert_eq!(
        start(&mut s, &file, 0, None, SendfileFallback::Allow),
        Err(SendfileError::InProgress)
    );
    s.send_accepts_all();
    assert_eq!(s.writable(), []);
    assert_eq!(done(&mut s), Some(Ok(10)));
    assert_eq!(s.sent(), digits(10));
    s.enter(|ctx, h| ctx.write_eof(h)).unwrap();
    assert!(s.is_shutdown());
}

/// offset, count, outcome, the bytes sent.
type Case = (u64, Option<u64>, Result<u64, SendfileError>, &'static [u8]);

#[test]
fn offsets_and_counts() {
    // A zero count is asyncio's ValueError; an offset past the end sends nothing; a
    // count beyond the end stops at the end — zero-copy and fallback alike.
    for zero_copy in [true, false] {
        let mut s = Scripted::new(t0(), Quiet);
        s.events();
        s.set_zero_copy(zero_copy);
        let file = MemFile::new(digits(10));
        let cases: [Case; 6] = [
            (0, Some(0), Err(SendfileError::ZeroCount), b""),
            (10, None, Ok(0), b""),
            (99, Some(5), Ok(0), b""),
            (7, Some(100), Ok(3), b"789"),
            (0, None, Ok(10), b"0123456789"),
            (4, Some(2), Ok(2), b"45"),
        ];
        for (offset, count, want, bytes) in cases {
            s.take_sent();
            match start(&mut s, &file, offset, count, SendfileFallback::Allow) {
                Err(e) => assert_eq!(Err(e), want),
                Ok(()) => assert_eq!(done(&mut s), Some(want), "offset {offset} count {count:?}"),
            }
            assert_eq!(s.sent(), bytes, "offset {offset} count {count:?} zero-copy {zero_copy}");
        }
        assert_eq!(s.sendfile_calls() > 0, zero_copy);
    }
}

#[test]
fn fallback_denied_without_zero_copy_is_not_available() {
    // asyncio: fallback=False on a transport that cannot → SendfileNotAvailableError.
    let mut s = Scripted::new(t0(), Quiet);
    s.events();
    let file = MemFile::new(digits(10));
    assert_eq!(
        start(&mut s, &file, 0, None, SendfileFallback::Deny),
        Err(SendfileError::NotAvailable)
    );
    assert_eq!(s.sent(), b"");
    s.enter(|ctx, h| ctx.write_slice(h, b"still writable")).unwrap();
}

#[test]
fn fallback_reads_only_below_high_water_and_stays_within_one_chunk() {
    let mut s = Scripted::new(t0(), Quiet);
    s.events();
    let high = 16 * 1024;
    s.enter(|ctx, h| ctx.set_write_buffer_limits(h, Some(high), None)).unwrap();
    s.send_refuses_all();
    let file = MemFile::new(digits(1 << 20));
    start(&mut s, &file, 0, None, SendfileFallback::Force).unwrap();
    // The peer reads nothing: one chunk went into the buffer, then the fallback waits.
    assert_eq!(s.write_buffer_size(), SENDFILE_CHUNK);
    assert!(s.write_buffer_size() <= high + SENDFILE_CHUNK);
    assert!(s.is_writing_paused());
    for _ in 0..3 {
        assert_eq!(s.writable(), []);
        assert_eq!(s.write_buffer_size(), SENDFILE_CHUNK, "no read while paused");
    }
    // The peer reads in small steps: the buffer never exceeds high water + one chunk.
    let mut steps = 0;
    while done(&mut s).is_none() {
        steps += 1;
        assert!(steps < 10_000, "bounded");
        s.send_accepts(5000);
        assert_eq!(s.writable(), [], "the protocol hears no pause/resume of the fallback");
        assert!(s.write_buffer_size() <= high + SENDFILE_CHUNK);
    }
    s.send_accepts_all();
    s.writable();
    assert_eq!(s.sent(), file.data());
    assert_eq!(s.write_buffer_size(), 0);
}

/// Pauses above high water on its own writes, then runs a sendfile from a callback.
#[derive(Default)]
struct Pauser {
    outcomes: Vec<Result<u64, SendfileError>>,
}
impl Protocol for Pauser {
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        let h = ctx.stream();
        match data {
            b"fill" => ctx.write_slice(h, &[b'x'; 10])?,
            b"send" | b"send100" => {
                let file = Box::new(MemFile::new(digits(100)));
                let count = if data == b"send" { None } else { Some(100) };
                ctx.sendfile(h, file, 0, count, SendfileFallback::Force)?;
            }
            b"close" => ctx.close(h)?,
            b"abort" => ctx.abort(h)?,
            _ => {}
        }
        Ok(())
    }
    fn sendfile_completed(
        &mut self,
        _ctx: &mut Ctx<'_>,
        _h: StreamHandle,
        outcome: Result<u64, SendfileError>,
    ) -> CallbackResult {
        self.outcomes.push(outcome);
        Ok(())
    }
}

#[test]
fn a_paused_protocol_hears_only_the_resume_after_the_fallback() {
    // spec §10.53: the fallback inherits the paused state and calls resume_writing on the
    // original protocol afterwards; the pause/resume of its own writes stay its own.
    let mut s = Scripted::new(t0(), Pauser::default());
    s.events();
    s.enter(|ctx, h| ctx.set_write_buffer_limits(h, Some(8), Some(2))).unwrap();
    s.send_accepts(1).send_would_block();
    s.recv(b"fill");
    assert_eq!(s.readable(), [Event::data(b"fill"), Event::Pause]);
    s.recv(b"send");
    let h = s.handle();
    assert_eq!(s.readable(), [Event::data(b"send")]);
    // Partial sends: the fallback's buffer crosses the marks many times, silently.
    for _ in 0..20 {
        s.send_accepts(7).send_would_block();
        assert_eq!(s.writable(), []);
    }
    s.send_accepts_all();
    assert_eq!(s.writable(), [Event::Sendfile(h, Ok(100)), Event::Resume]);
    let mut want = b"x".repeat(10);
    want.extend(digits(100));
    assert_eq!(s.sent(), want);
}

#[test]
fn an_unpaused_protocol_hears_the_pause_if_the_fallback_leaves_the_buffer_high() {
    let mut s = Scripted::new(t0(), Pauser::default());
    s.events();
    s.enter(|ctx, h| ctx.set_write_buffer_limits(h, Some(8), Some(2))).unwrap();
    s.send_refuses_all();
    s.recv(b"send100");
    let h = s.handle();
    // The count fits in one chunk: read, queued, done — the buffer stays above high.
    assert_eq!(s.readable(), [Event::data(b"send100"), Event::Sendfile(h, Ok(100)), Event::Pause]);
    s.send_accepts_all();
    assert_eq!(s.writable(), [Event::Resume]);
    // To the end of the file (no count), the end is found by the next read, once the
    // buffer drained below the mark.
    s.send_refuses_all();
    s.recv(b"send");
    assert_eq!(s.readable(), [Event::data(b"send")]);
    s.send_accepts_all();
    assert_eq!(s.writable(), [Event::Sendfile(h, Ok(100))]);
}

#[test]
fn close_during_a_sendfile_ends_it_before_connection_lost() {
    let mut s = Scripted::new(t0(), Pauser::default());
    s.events();
    s.enter(|ctx, h| ctx.set_write_buffer_limits(h, Some(8), Some(2))).unwrap();
    s.send_accepts(30).send_would_block();
    s.recv(b"send");
    let h = s.handle();
    assert_eq!(s.readable(), [Event::data(b"send")]);
    // The fallback queued 70 bytes of its chunk and waits for the drain.
    assert_eq!(s.write_buffer_size(), 70);
    s.recv(b"close");
    // The sendfile is over first; the protocol's view is handed back (the buffer is
    // above high water: pause_writing), then close() flushes (resume_writing) and loses
    // the connection, as after any write.
    assert_eq!(
        s.readable(),
        [
            Event::data(b"close"),
            Event::Sendfile(h, Err(SendfileError::Closed { sent: 100 })),
            Event::Pause
        ]
    );
    s.send_accepts_all();
    assert_eq!(s.writable(), [Event::Resume, Event::Lost(None)]);
    assert_eq!(s.sent(), digits(100));
}

#[test]
fn abort_during_a_zero_copy_sendfile_reports_the_bytes_sent() {
    let mut s = Scripted::new(t0(), Quiet);
    s.events();
    s.set_zero_copy(true).send_accepts(4).send_would_block();
    let file = MemFile::new(digits(10));
    start(&mut s, &file, 0, None, SendfileFallback::Allow).unwrap();
    s.enter(|ctx, h| ctx.abort(h)).unwrap();
    assert_eq!(done(&mut s), Some(Err(SendfileError::Closed { sent: 4 })));
    assert_eq!(s.events(), [Event::Lost(None)]);
}

#[test]
fn a_send_failure_ends_the_sendfile_and_the_connection() {
    let mut s = Scripted::new(t0(), Quiet);
    s.events();
    s.set_zero_copy(true).send_accepts(4).send_fails(ErrorKind::ConnectionReset);
    let file = MemFile::new(digits(10));
    start(&mut s, &file, 0, None, SendfileFallback::Allow).unwrap();
    let reset = ConnectionError::from(ErrorKind::ConnectionReset);
    assert_eq!(
        done(&mut s),
        Some(Err(SendfileError::ConnectionLost { sent: 4, error: reset.clone() }))
    );
    assert_eq!(s.events(), [Event::Lost(Some(reset))]);
}

#[test]
fn a_file_read_error_ends_the_sendfile_not_the_connection() {
    let mut s = Scripted::new(t0(), Quiet);
    s.events();
    let file = MemFile::new(digits(10)).fail_from(6);
    start(&mut s, &file, 0, None, SendfileFallback::Allow).unwrap();
    match done(&mut s) {
        Some(Err(SendfileError::File { sent: 6, .. })) => {}
        other => panic!("expected a file error after 6 bytes, got {other:?}"),
    }
    assert_eq!(s.sent(), b"012345");
    s.enter(|ctx, h| ctx.write_slice(h, b"!")).unwrap();
    assert_eq!(s.sent(), b"012345!");
    assert!(!s.is_closing());
}

#[test]
fn a_closing_transport_refuses_a_sendfile() {
    // asyncio: RuntimeError('Transport is closing').
    let mut s = Scripted::new(t0(), Quiet);
    s.events();
    s.send_refuses_all();
    s.enter(|ctx, h| ctx.write_slice(h, b"pending")).unwrap();
    s.enter(|ctx, h| ctx.close(h)).unwrap();
    let file = MemFile::new(digits(10));
    assert_eq!(start(&mut s, &file, 0, None, SendfileFallback::Allow), Err(SendfileError::Closing));
}

// ---------------------------------------------------------------------------------------
// The simulation: zero-copy and the fallback under seeded faults
// ---------------------------------------------------------------------------------------

/// Sends a file from `connection_made`; the outcome goes to the transcript.
struct SimSender {
    file: Option<MemFile>,
    fallback: SendfileFallback,
}
impl Protocol for SimSender {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        let file = Box::new(self.file.take().unwrap());
        ctx.sendfile(ctx.stream(), file, 3, None, self.fallback)?;
        Ok(())
    }
}

#[test]
fn the_simulation_sends_files_byte_exact_under_faults() {
    let data: Vec<u8> = (0..(1u32 << 20) + 17).map(|i| (i % 251) as u8).collect();
    for (seed, fallback) in [(1, SendfileFallback::Deny), (2, SendfileFallback::Force)] {
        let config = SimConfig::new(seed)
            .zero_copy_sendfile(true)
            .max_send(7000)
            .refuse_percent(20)
            .capacity(32 * 1024)
            .max_write_buffer(64 * 1024 + crate::stream::SENDFILE_CHUNK);
        let mut sim = Sim::with_config(t0(), config);
        let file = Some(MemFile::new(data.clone()));
        let (h, peer) = sim.open(SimSender { file, fallback });
        sim.run_until_idle();
        let want = (data.len() - 3) as u64;
        assert_eq!(
            sim.transcript(h),
            [Event::Made, Event::Sendfile(h, Ok(want))],
            "seed {seed} {fallback:?}"
        );
        assert_eq!(sim.peer_received(peer), &data[3..], "seed {seed} {fallback:?}");
    }
}
