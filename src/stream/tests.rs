//! Stream transport rules, each test named after the behaviour and citing the asyncio spec
//! rule (§n.m of `asyncio-spec.md`), DESIGN.md or the upstream issue it pins.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, IoSlice};

use bytes::Bytes;

use super::*;
use crate::{Interest, StreamHandle};

/// A scripted socket: `try_send` takes up to `budget` bytes in total (then `WouldBlock`),
/// `try_recv` replays `reads` (empty script: `WouldBlock`).
#[derive(Default)]
struct TestIo {
    budget: Option<usize>,
    sent: Vec<u8>,
    send_calls: usize,
    send_error: Option<ErrorKind>,
    /// Claim this many bytes were sent, whatever was offered (a lying driver).
    lie: Option<usize>,
    reads: VecDeque<io::Result<Vec<u8>>>,
    shutdowns: usize,
    closes: usize,
}

impl TestIo {
    fn accepting(budget: usize) -> Self {
        TestIo { budget: Some(budget), ..Self::default() }
    }
    fn give(&mut self, n: usize) {
        self.budget = Some(self.budget.unwrap_or(0) + n);
    }
}

impl Io for TestIo {
    fn try_send(&mut self, _h: Handle, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.send_calls += 1;
        if let Some(n) = self.lie {
            return Ok(n);
        }
        if let Some(kind) = self.send_error {
            return Err(kind.into());
        }
        let mut n = 0;
        for b in bufs {
            let take = self.budget.map_or(b.len(), |left| left.min(b.len()));
            self.sent.extend_from_slice(&b[..take]);
            n += take;
            if let Some(left) = self.budget.as_mut() {
                *left -= take;
            }
            if take < b.len() {
                break;
            }
        }
        if n == 0 && bufs.iter().any(|b| !b.is_empty()) {
            return Err(ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }
    fn try_recv(&mut self, _h: Handle, buf: &mut [u8]) -> io::Result<usize> {
        match self.reads.pop_front() {
            None => Err(ErrorKind::WouldBlock.into()),
            Some(Ok(data)) => {
                buf[..data.len()].copy_from_slice(&data);
                Ok(data.len())
            }
            Some(Err(e)) => Err(e),
        }
    }
    fn shutdown_write(&mut self, _h: Handle) -> io::Result<()> {
        self.shutdowns += 1;
        Ok(())
    }
    fn close(&mut self, _h: Handle) {
        self.closes += 1;
    }
}

struct Fixture {
    t: StreamTransport,
    io: TestIo,
    pool: SendPool,
}

fn fixture(kind: StreamKind, io: TestIo) -> Fixture {
    let h = StreamHandle::from_handle(Handle::from_raw(1, 0)).handle();
    Fixture {
        t: StreamTransport::with_kind(h, kind, Extra::default()),
        io,
        pool: SendPool::default(),
    }
}

/// A socket whose `connection_made` was delivered, with limits (high, low).
fn socket(io: TestIo, high: usize, low: usize) -> Fixture {
    let mut f = fixture(StreamKind::Socket, io);
    f.t.set_write_buffer_limits(Some(high), Some(low)).unwrap();
    assert_eq!(f.callbacks(), [Cb::Made]);
    f
}

/// Callbacks without payload, for compact transcripts.
#[derive(Debug, PartialEq, Eq)]
enum Cb {
    Made,
    Pause,
    Resume,
    Data(Vec<u8>),
    Eof,
    Lost(Option<ConnectionError>),
}

impl Fixture {
    fn callbacks(&mut self) -> Vec<Cb> {
        let mut out = Vec::new();
        while let Some(cb) = self.t.next_callback() {
            out.push(match cb {
                StreamCallback::ConnectionMade => Cb::Made,
                StreamCallback::PauseWriting => Cb::Pause,
                StreamCallback::ResumeWriting => Cb::Resume,
                StreamCallback::DataReceived(d) => Cb::Data(d),
                StreamCallback::EofReceived => Cb::Eof,
                StreamCallback::ConnectionLost(e) => Cb::Lost(e),
            });
            assert!(out.len() < 16, "callbacks never settle: {out:?}");
        }
        assert!(!self.t.has_callback());
        out
    }
    fn write(&mut self, data: &'static [u8]) -> Result<(), WriteError> {
        self.t.write(Bytes::from_static(data), &mut self.io, &mut self.pool)
    }
    fn write_slice(&mut self, data: &[u8]) -> Result<(), WriteError> {
        self.t.write_slice(data, &mut self.io, &mut self.pool)
    }
    fn writable(&mut self) {
        self.t.on_writable(&mut self.io, &mut self.pool).unwrap();
    }
    fn close(&mut self) {
        self.t.close(&mut self.io, &mut self.pool);
    }
    fn abort(&mut self) {
        self.t.abort(&mut self.io, &mut self.pool);
    }
    fn read(&mut self) -> (ReadOutcome, Vec<u8>) {
        let mut buf = [0u8; 64];
        let r = self.t.read(&mut buf, &mut self.io, &mut self.pool).unwrap();
        let data = match r {
            ReadOutcome::Data(n) => buf[..n].to_vec(),
            _ => Vec::new(),
        };
        (r, data)
    }
}

fn reset() -> ConnectionError {
    ErrorKind::ConnectionReset.into()
}

// ---------------------------------------------------------------------------------------
// Writing: the fast path and the queue (spec §2, DESIGN.md §3.2)
// ---------------------------------------------------------------------------------------

#[test]
fn fast_path_write_taken_whole_never_pauses() {
    // spec §2.1.6: a write the socket takes whole queues nothing and never pauses, even
    // when far above high water.
    let mut f = socket(TestIo::default(), 4, 1);
    f.write_slice(&[7u8; 100 * 1024]).unwrap();
    assert_eq!(f.t.write_buffer_size(), 0);
    assert!(!f.t.is_writing_paused());
    assert_eq!(f.io.sent.len(), 100 * 1024);
    assert_eq!(f.callbacks(), []);
    assert_eq!(f.t.interest(), Interest { read: true, write: false });
}

#[test]
fn only_refused_bytes_count_and_pause_before_write_returns() {
    // spec §2.1.7 + DESIGN.md §3.2: size > high after the attempt → paused at once.
    let mut f = socket(TestIo::accepting(3), 4, 1);
    f.write(b"abcdefgh").unwrap();
    assert_eq!(f.io.sent, b"abc");
    assert_eq!(f.t.write_buffer_size(), 5);
    assert!(f.t.is_writing_paused());
    assert_eq!(f.t.interest(), Interest { read: true, write: true });
    assert_eq!(f.callbacks(), [Cb::Pause]);
}

#[test]
fn write_at_high_does_not_pause() {
    // spec §3.5: pause strictly above high.
    let mut f = socket(TestIo::accepting(0), 4, 1);
    f.write(b"abcd").unwrap();
    assert!(!f.t.is_writing_paused());
    f.write(b"e").unwrap();
    assert!(f.t.is_writing_paused());
    f.write(b"fgh").unwrap();
    assert_eq!(f.callbacks(), [Cb::Pause], "one pause per episode (spec §3.7)");
}

#[test]
fn write_slice_copies_only_the_refused_tail() {
    let mut f = socket(TestIo::accepting(2), 64, 16);
    let mut data = *b"hello";
    f.write_slice(&data).unwrap();
    data.fill(b'X'); // the caller reuses its buffer: the queue holds its own copy
    f.io.give(10);
    f.writable();
    assert_eq!(f.io.sent, b"hello");
}

#[test]
fn empty_write_is_a_no_op() {
    // spec §2.1.4: no send, buffer unchanged.
    let mut f = socket(TestIo::default(), 4, 1);
    f.write(b"").unwrap();
    f.write_slice(b"").unwrap();
    f.t.writelines(&[Bytes::new()], &mut f.io, &mut f.pool).unwrap();
    assert_eq!(f.io.send_calls, 0);
    assert!(!f.t.interest().write);
}

#[test]
fn queued_writes_go_out_in_order_after_partial_sends() {
    // spec §2.2.3: partial sendmsg keeps the unsent tail at the head.
    let mut f = socket(TestIo::accepting(2), 1024, 256);
    f.write(b"data1").unwrap();
    f.write(b"data2").unwrap();
    f.write_slice(b"data3").unwrap();
    assert_eq!(f.t.write_buffer_size(), 13);
    f.io.give(4);
    f.writable();
    assert_eq!(f.io.sent, b"data1d");
    assert_eq!(f.t.write_buffer_size(), 9);
    f.io.give(100);
    f.writable();
    assert_eq!(f.io.sent, b"data1data2data3");
    assert!(!f.t.interest().write);
}

#[test]
fn gh_146507_no_chunk_lost_on_would_block() {
    // CPython 3.13 popped the head chunk before send and lost it on EAGAIN.
    let mut f = socket(TestIo::accepting(0), 1 << 20, 0);
    let mut expect = Vec::new();
    for i in 0..50u8 {
        let chunk = vec![i; 1 + i as usize * 37];
        expect.extend_from_slice(&chunk);
        f.t.write(Bytes::from(chunk), &mut f.io, &mut f.pool).unwrap();
    }
    for step in 0..200 {
        f.writable(); // WouldBlock on every other call
        f.io.give(step % 3 * 17);
    }
    f.io.budget = None;
    f.writable();
    assert_eq!(f.io.sent, expect);
    assert_eq!(f.t.write_buffer_size(), 0);
}

#[test]
fn resume_at_low_while_partially_drained() {
    // spec §3.8 (selector): resume as soon as size <= low, not only when empty.
    let mut f = socket(TestIo::accepting(0), 8, 4);
    f.write(b"0123456789").unwrap();
    assert_eq!(f.callbacks(), [Cb::Pause]);
    f.io.give(5);
    f.writable();
    assert_eq!(f.t.write_buffer_size(), 5);
    assert_eq!(f.callbacks(), []);
    f.io.give(1);
    f.writable();
    assert_eq!(f.t.write_buffer_size(), 4);
    assert_eq!(f.callbacks(), [Cb::Resume]);
}

#[test]
fn pause_and_resume_before_delivery_both_delivered() {
    // DESIGN.md §4: never one without the other.
    let mut f = socket(TestIo::accepting(0), 4, 1);
    f.write(b"0123456789").unwrap();
    f.io.give(100);
    f.writable();
    assert!(!f.t.is_writing_paused());
    assert_eq!(f.callbacks(), [Cb::Pause, Cb::Resume]);
}

#[test]
fn writelines_pauses_and_skips_empty_chunks() {
    // gh-127655 (no pause check), gh-155888 (empty chunk stuck at the head).
    let mut f = socket(TestIo::accepting(3), 4, 1);
    let chunks = [Bytes::from_static(b"hello"), Bytes::new(), Bytes::from_static(b"world")];
    f.t.writelines(&chunks, &mut f.io, &mut f.pool).unwrap();
    assert_eq!(f.io.send_calls, 1, "one vectored send");
    assert_eq!(f.t.write_buffer_size(), 7);
    assert_eq!(f.callbacks(), [Cb::Pause]);
    f.io.give(100);
    f.writable();
    assert_eq!(f.io.sent, b"helloworld");
    f.close();
    assert_eq!(f.callbacks(), [Cb::Resume, Cb::Lost(None)]);
}

#[test]
fn writelines_has_the_same_guards_as_write() {
    // gh-136234: writelines after loss raised AttributeError in 3.13.
    let mut f = socket(TestIo::default(), 4, 1);
    f.t.handle_error(reset(), &mut f.io, &mut f.pool).unwrap();
    let r = f.t.writelines(&[Bytes::from_static(b"x")], &mut f.io, &mut f.pool);
    assert_eq!(r, Err(WriteError::Closed));
    assert_eq!(f.write(b"x"), Err(WriteError::Closed));
}

#[test]
fn hard_limit_refuses_with_buffer_full() {
    let mut f = socket(TestIo::accepting(0), 4, 1);
    f.t.set_write_buffer_hard_limit(Some(6));
    f.write(b"abcd").unwrap();
    assert_eq!(f.write(b"xyz"), Err(WriteError::BufferFull { buffered: 4, len: 3, limit: 6 }));
    assert_eq!(f.t.write_buffer_size(), 4, "a refused write changes nothing");
    f.write(b"xy").unwrap();
}

#[test]
fn set_limits_rechecks_both_edges_now() {
    // asyncio#140 (lowering pauses at once); DESIGN.md §5 (raising resumes at once).
    let mut f = socket(TestIo::accepting(0), 1024, 256);
    f.write(&[0u8; 512]).unwrap();
    f.t.set_write_buffer_limits(Some(256), Some(128)).unwrap();
    assert!(f.t.is_writing_paused());
    assert_eq!(f.callbacks(), [Cb::Pause]);
    assert_eq!(
        f.t.set_write_buffer_limits(Some(1), Some(2)),
        Err(LimitsError::HighBelowLow { high: 1, low: 2 })
    );
    assert_eq!(f.t.write_buffer_limits(), WriteBufferLimits::new(Some(256), Some(128)).unwrap());
    f.t.set_write_buffer_limits(Some(4096), Some(1024)).unwrap();
    assert_eq!(f.callbacks(), [Cb::Resume]);
}

#[test]
fn high_zero_pauses_on_any_buffered_byte() {
    // anyio#1294 relies on high=0.
    let mut f = socket(TestIo::accepting(0), 0, 0);
    f.write(b"x").unwrap();
    assert_eq!(f.callbacks(), [Cb::Pause]);
    f.io.give(1);
    f.writable();
    assert_eq!(f.callbacks(), [Cb::Resume]);
}

#[test]
fn external_pending_counts_in_size_and_edges() {
    let mut f = socket(TestIo::default(), 10, 2);
    f.t.set_external_pending(11);
    assert_eq!(f.t.write_buffer_size(), 11);
    assert_eq!(f.callbacks(), [Cb::Pause]);
    f.t.set_external_pending(2);
    assert_eq!(f.callbacks(), [Cb::Resume]);
}

/// A cross-task queue hands bytes it counted as external pending over: the size stays
/// the same (no flow edge), and the hard limit — which counted them already — does not
/// refuse them (a remote writer was told they were accepted).
#[test]
fn write_external_moves_counted_bytes_without_an_edge_or_the_hard_limit() {
    let mut f = socket(TestIo::accepting(0), 10, 2);
    f.t.set_write_buffer_hard_limit(Some(20));
    f.t.set_external_pending(16);
    assert_eq!(f.callbacks(), [Cb::Pause]);
    f.write(b"1234").unwrap(); // 20: at the limit
    assert!(matches!(f.write(b"x"), Err(WriteError::BufferFull { .. })));
    f.t.write_external(Bytes::from_static(&[7; 16]), &mut f.io, &mut f.pool).unwrap();
    assert_eq!(f.t.write_buffer_size(), 20);
    assert_eq!(f.callbacks(), []);
    // Bytes beyond the external count are counted from now on.
    f.t.write_external(Bytes::from_static(b"abc"), &mut f.io, &mut f.pool).unwrap();
    assert_eq!(f.t.write_buffer_size(), 23);
    f.t.close(&mut f.io, &mut f.pool);
    let r = f.t.write_external(Bytes::from_static(b"z"), &mut f.io, &mut f.pool);
    assert_eq!(r, Err(WriteError::Closing));
}

/// Moved bytes the socket takes at once shrink the size: the resume edge follows.
#[test]
fn write_external_sent_at_once_resumes() {
    let mut f = socket(TestIo::default(), 10, 2);
    f.t.set_external_pending(16);
    assert_eq!(f.callbacks(), [Cb::Pause]);
    f.t.write_external(Bytes::from_static(&[7; 16]), &mut f.io, &mut f.pool).unwrap();
    assert_eq!(f.t.write_buffer_size(), 0);
    assert_eq!(f.callbacks(), [Cb::Resume]);
}

// ---------------------------------------------------------------------------------------
// Write-side state errors (DESIGN.md §5 table)
// ---------------------------------------------------------------------------------------

#[test]
fn write_after_write_eof_is_after_eof_even_empty() {
    // spec §2.1.2: the EOF check comes before the empty check.
    let mut f = socket(TestIo::default(), 4, 1);
    f.t.write_eof(&mut f.io, &mut f.pool);
    assert_eq!(f.write(b"x"), Err(WriteError::AfterEof));
    assert_eq!(f.write(b""), Err(WriteError::AfterEof));
}

#[test]
fn gh_115514_write_after_close_is_always_closing() {
    for queued in [false, true] {
        let mut f = socket(TestIo::accepting(if queued { 0 } else { 100 }), 64, 16);
        f.write(b"before").unwrap();
        f.close();
        assert_eq!(f.write(b"after"), Err(WriteError::Closing), "queued={queued}");
        assert_eq!(f.write_slice(b""), Err(WriteError::Closing));
        f.io.budget = None;
        if queued {
            f.writable();
        }
        assert_eq!(f.io.sent, b"before", "what was queued before close() is flushed");
        assert_eq!(f.callbacks(), [Cb::Lost(None)]);
        assert_eq!(f.write(b"after"), Err(WriteError::Closing));
    }
}

#[test]
fn write_after_connection_lost_is_closed() {
    let mut f = socket(TestIo::default(), 4, 1);
    f.io.reads.push_back(Err(ErrorKind::ConnectionReset.into()));
    assert_eq!(f.read().0, ReadOutcome::Failed);
    assert_eq!(f.write(b"x"), Err(WriteError::Closed));
    assert_eq!(f.callbacks(), [Cb::Lost(Some(reset()))]);
    assert_eq!(f.write(b"x"), Err(WriteError::Closed));
}

// ---------------------------------------------------------------------------------------
// write_eof, close, abort (spec §4.1, §5, §6)
// ---------------------------------------------------------------------------------------

#[test]
fn write_eof_shuts_down_after_the_queue_drains() {
    // spec §4.1 test_write_eof_buffer.
    let mut f = socket(TestIo::accepting(2), 64, 16);
    f.write(b"abcdef").unwrap();
    f.t.write_eof(&mut f.io, &mut f.pool);
    assert_eq!(f.io.shutdowns, 0);
    f.io.give(2);
    f.writable();
    assert_eq!(f.io.shutdowns, 0);
    f.io.give(2);
    f.writable();
    assert_eq!(f.io.shutdowns, 1);
    assert!(f.t.is_reading(), "the read side stays open");
    assert!(!f.t.is_closing());
}

#[test]
fn write_eof_is_idempotent_and_a_no_op_when_closing() {
    // spec §4.1 test_write_eof (shutdown once), test_write_eof_after_close.
    let mut f = socket(TestIo::default(), 4, 1);
    assert!(f.t.can_write_eof());
    f.t.write_eof(&mut f.io, &mut f.pool);
    f.t.write_eof(&mut f.io, &mut f.pool);
    assert_eq!(f.io.shutdowns, 1);
    let mut g = socket(TestIo::default(), 4, 1);
    g.close();
    g.t.write_eof(&mut g.io, &mut g.pool);
    assert_eq!(g.io.shutdowns, 0);
}

#[test]
fn flush_then_lose_on_close() {
    // spec §5.13: close() with a queue keeps flushing, then connection_lost(None).
    let mut f = socket(TestIo::accepting(1), 64, 16);
    f.write(b"xyz").unwrap();
    f.close();
    assert!(f.t.is_closing());
    assert!(!f.t.is_reading());
    assert_eq!(f.callbacks(), []);
    assert_eq!(f.io.closes, 0);
    f.io.give(2);
    f.writable();
    assert_eq!(f.io.sent, b"xyz");
    assert_eq!(f.io.closes, 1);
    assert_eq!(f.callbacks(), [Cb::Lost(None)]);
    assert!(f.t.is_finished());
}

#[test]
fn close_is_idempotent_and_loses_once() {
    // spec §5.13 test_close_protocol_connection_lost_once.
    let mut f = socket(TestIo::default(), 4, 1);
    f.close();
    f.close();
    f.abort();
    assert_eq!(f.io.closes, 1);
    assert_eq!(f.callbacks(), [Cb::Lost(None)]);
    f.close();
    assert_eq!(f.callbacks(), []);
}

#[test]
fn resume_still_delivered_while_close_flush_drains() {
    // DESIGN.md §5: paused → close → drain gives pause, resume, lost (as CPython).
    let mut f = socket(TestIo::accepting(0), 4, 1);
    f.write(b"0123456789").unwrap();
    assert_eq!(f.callbacks(), [Cb::Pause]);
    f.close();
    f.io.give(100);
    f.writable();
    assert_eq!(f.callbacks(), [Cb::Resume, Cb::Lost(None)]);
}

#[test]
fn pause_then_close_in_one_callback_still_delivers_pause() {
    // DESIGN.md §5: the pause happened, so it is delivered before connection_lost.
    let mut f = socket(TestIo::accepting(0), 4, 1);
    f.write(b"0123456789").unwrap();
    f.close();
    assert_eq!(f.callbacks(), [Cb::Pause]);
    f.io.give(100);
    f.writable();
    assert_eq!(f.callbacks(), [Cb::Resume, Cb::Lost(None)]);
}

#[test]
fn abort_drops_the_queue_and_never_resumes() {
    // spec §6.23: size 0 at once; §3.10: pause → lost, no resume.
    let mut f = socket(TestIo::accepting(0), 4, 1);
    f.write(b"0123456789").unwrap();
    f.abort();
    assert_eq!(f.t.write_buffer_size(), 0);
    assert!(f.t.is_closing());
    assert_eq!(f.io.closes, 1);
    assert_eq!(f.t.interest(), Interest::default());
    assert_eq!(f.callbacks(), [Cb::Pause, Cb::Lost(None)]);
    assert!(f.io.sent.is_empty());
    assert_eq!(f.t.heap_bytes(), 0);
}

#[test]
fn abort_during_close_flush_drops_the_rest() {
    let mut f = socket(TestIo::accepting(0), 64, 16);
    f.write(b"queued").unwrap();
    f.close();
    f.abort();
    assert_eq!(f.io.closes, 1);
    assert_eq!(f.callbacks(), [Cb::Lost(None)]);
}

#[test]
fn fatal_send_error_loses_with_the_error() {
    // spec §2.2.6: buffer cleared, connection_lost(exc).
    let mut f = socket(TestIo::accepting(0), 4, 1);
    f.write(b"0123456789").unwrap();
    f.io.send_error = Some(ErrorKind::ConnectionReset);
    f.writable();
    assert_eq!(f.t.write_buffer_size(), 0);
    assert_eq!(f.callbacks(), [Cb::Pause, Cb::Lost(Some(reset()))]);
}

#[test]
fn fatal_error_in_the_fast_path_returns_ok_and_loses() {
    // spec §2.1.6: _fatal_error and return; the write call itself does not raise.
    let mut f = socket(TestIo::default(), 4, 1);
    f.io.send_error = Some(ErrorKind::BrokenPipe);
    assert_eq!(f.write(b"x"), Ok(()));
    assert_eq!(f.callbacks(), [Cb::Lost(Some(ErrorKind::BrokenPipe.into()))]);
}

// ---------------------------------------------------------------------------------------
// Reading and EOF (spec §4.2, §8)
// ---------------------------------------------------------------------------------------

#[test]
fn gh_103607_pause_reading_in_connection_made_is_honoured() {
    let mut f = fixture(StreamKind::Socket, TestIo::default());
    assert!(!f.t.interest().read, "no read before connection_made");
    assert_eq!(f.t.next_callback(), Some(StreamCallback::ConnectionMade));
    f.t.pause_reading();
    f.io.reads.push_back(Ok(b"early".to_vec()));
    assert!(!f.t.interest().read);
    assert_eq!(f.read().0, ReadOutcome::Idle);
    f.t.resume_reading();
    assert_eq!(f.read(), (ReadOutcome::Data(5), b"early".to_vec()));
}

#[test]
fn bpo_32356_pause_resume_idempotent_and_no_op_when_closing() {
    let mut f = socket(TestIo::default(), 4, 1);
    f.t.pause_reading();
    f.t.pause_reading();
    assert!(!f.t.is_reading());
    f.t.resume_reading();
    f.t.resume_reading();
    assert!(f.t.is_reading());
    f.close();
    f.t.resume_reading();
    f.t.pause_reading();
    assert!(!f.t.is_reading());
}

#[test]
fn held_data_waits_for_resume_reading() {
    // DESIGN.md §4 row 3: data only while reading.
    let mut f = socket(TestIo::default(), 4, 1);
    f.t.pause_reading();
    f.t.handle_data(b"ab").unwrap();
    f.t.handle_data(b"cd").unwrap();
    assert_eq!(f.callbacks(), []);
    f.t.resume_reading();
    assert_eq!(f.callbacks(), [Cb::Data(b"abcd".to_vec())]);
    assert_eq!(f.t.heap_bytes(), 0, "delivered data leaves no buffer behind");
}

#[test]
fn eof_keep_open_is_a_half_close() {
    // spec §4.7: truthy → reader removed, writes continue, no close.
    let mut f = socket(TestIo::default(), 4, 1);
    f.io.reads.push_back(Ok(Vec::new()));
    assert_eq!(f.read().0, ReadOutcome::Eof);
    assert!(!f.t.is_reading(), "aioport: false once EOF was received (asyncio quirk differs)");
    assert_eq!(f.callbacks(), [Cb::Eof]);
    f.t.handle_eof_answer(true, &mut f.io, &mut f.pool);
    assert!(!f.t.is_closing());
    assert!(!f.t.interest().read);
    f.write(b"reply").unwrap();
    assert_eq!(f.io.sent, b"reply");
    f.close();
    assert_eq!(f.callbacks(), [Cb::Lost(None)]);
}

#[test]
fn eof_without_keep_open_closes_after_flush() {
    // spec §4.7: falsy → close(): pending writes flushed, then connection_lost(None).
    let mut f = socket(TestIo::accepting(0), 64, 16);
    f.write(b"pending").unwrap();
    f.t.handle_eof().unwrap();
    assert_eq!(f.callbacks(), [Cb::Eof]);
    f.t.handle_eof_answer(false, &mut f.io, &mut f.pool);
    assert!(f.t.is_closing());
    assert_eq!(f.callbacks(), []);
    f.io.give(100);
    f.writable();
    assert_eq!(f.io.sent, b"pending");
    assert_eq!(f.callbacks(), [Cb::Lost(None)]);
}

#[test]
fn eof_waits_for_held_data_and_for_resume() {
    // DESIGN.md §4 row 4; spec §4.9 (EOF while paused is deferred until resume).
    let mut f = socket(TestIo::default(), 4, 1);
    f.t.pause_reading();
    f.t.handle_data(b"last").unwrap();
    f.t.handle_eof().unwrap();
    assert_eq!(f.callbacks(), []);
    f.t.resume_reading();
    assert_eq!(f.callbacks(), [Cb::Data(b"last".to_vec()), Cb::Eof]);
}

#[test]
fn nothing_delivered_after_close() {
    // spec §5.13: close() removes the reader; held data and EOF are dropped.
    let mut f = socket(TestIo::default(), 4, 1);
    f.t.pause_reading();
    f.t.handle_data(b"held").unwrap();
    f.t.handle_eof().unwrap();
    f.close();
    f.t.resume_reading();
    assert_eq!(f.callbacks(), [Cb::Lost(None)]);
}

#[test]
fn read_error_is_fatal() {
    // spec §7.29: ConnectionResetError → connection_lost(exc); WouldBlock ignored.
    let mut f = socket(TestIo::default(), 4, 1);
    assert_eq!(f.read().0, ReadOutcome::Idle);
    f.io.reads.push_back(Err(ErrorKind::Interrupted.into()));
    assert_eq!(f.read().0, ReadOutcome::Idle);
    f.io.reads.push_back(Err(ErrorKind::ConnectionReset.into()));
    assert_eq!(f.read().0, ReadOutcome::Failed);
    assert_eq!(f.io.closes, 1);
    assert_eq!(f.callbacks(), [Cb::Lost(Some(reset()))]);
}

// ---------------------------------------------------------------------------------------
// Pipes (spec §13)
// ---------------------------------------------------------------------------------------

#[test]
fn read_pipe_eof_closes_whatever_the_answer() {
    // spec §4.10 / §13.67: is_closing at once; eof_received, then connection_lost(None).
    let mut p = ReadPipeTransport::new(Handle::from_raw(2, 0), Extra::default());
    let (mut io, mut pool) = (TestIo::default(), SendPool::default());
    assert_eq!(p.next_callback(), Some(StreamCallback::ConnectionMade));
    assert!(!p.as_stream().can_write_eof());
    io.reads.push_back(Ok(b"out".to_vec()));
    io.reads.push_back(Ok(Vec::new()));
    let mut buf = [0u8; 16];
    assert_eq!(p.read(&mut buf, &mut io, &mut pool), Ok(ReadOutcome::Data(3)));
    assert_eq!(p.read(&mut buf, &mut io, &mut pool), Ok(ReadOutcome::Eof));
    assert!(p.is_closing());
    assert_eq!(p.next_callback(), Some(StreamCallback::EofReceived));
    p.handle_eof_answer(&mut io, &mut pool);
    assert_eq!(p.next_callback(), Some(StreamCallback::ConnectionLost(None)));
    assert_eq!(io.closes, 1);
}

#[test]
fn write_pipe_write_eof_closes_after_flush() {
    // spec §4.4: a write pipe's write_eof closes it; is_closing at once.
    let mut p = WritePipeTransport::new(Handle::from_raw(3, 0), Extra::default());
    let (mut io, mut pool) = (TestIo::accepting(1), SendPool::default());
    assert_eq!(p.next_callback(), Some(StreamCallback::ConnectionMade));
    assert!(p.can_write_eof());
    p.write(Bytes::from_static(b"abc"), &mut io, &mut pool).unwrap();
    p.write_eof(&mut io, &mut pool);
    assert!(p.is_closing());
    assert_eq!(p.next_callback(), None);
    io.give(10);
    p.on_writable(&mut io, &mut pool).unwrap();
    assert_eq!(io.sent, b"abc");
    assert_eq!(p.next_callback(), Some(StreamCallback::ConnectionLost(None)));
}

#[test]
fn write_pipe_detects_the_read_end_closing() {
    // spec §13.68: empty → connection_lost(None); pending → BrokenPipeError, buffer dropped.
    for pending in [false, true] {
        let mut p = WritePipeTransport::new(Handle::from_raw(3, 0), Extra::default());
        let (mut io, mut pool) = (TestIo::accepting(0), SendPool::default());
        let _ = p.next_callback();
        assert!(p.interest().read, "the write end watches for the read end closing");
        if pending {
            p.write(Bytes::from_static(b"abc"), &mut io, &mut pool).unwrap();
        }
        p.handle_read_end_closed(&mut io, &mut pool).unwrap();
        assert_eq!(p.write_buffer_size(), 0);
        let want = pending.then(|| ConnectionError::from(ErrorKind::BrokenPipe));
        assert_eq!(p.next_callback(), Some(StreamCallback::ConnectionLost(want)));
    }
}

// ---------------------------------------------------------------------------------------
// The priority table (DESIGN.md §4), row by row
// ---------------------------------------------------------------------------------------

#[test]
fn priority_row1_connection_made_first_even_after_abort() {
    // spec §9.45: close/abort before connection_made still gives CM → CL.
    let mut f = fixture(StreamKind::Socket, TestIo::accepting(0));
    f.t.set_write_buffer_limits(Some(1), None).unwrap();
    f.write(b"abc").unwrap();
    f.abort();
    assert_eq!(f.callbacks(), [Cb::Made, Cb::Pause, Cb::Lost(None)]);
}

#[test]
fn priority_row2_flow_edge_before_data() {
    let mut f = socket(TestIo::accepting(0), 1, 0);
    f.t.handle_data(b"in").unwrap();
    f.write(b"out").unwrap();
    assert_eq!(f.callbacks(), [Cb::Pause, Cb::Data(b"in".to_vec())]);
}

#[test]
fn priority_row3_data_before_eof() {
    let mut f = socket(TestIo::default(), 4, 1);
    f.t.handle_data(b"in").unwrap();
    f.t.handle_eof().unwrap();
    assert_eq!(f.callbacks(), [Cb::Data(b"in".to_vec()), Cb::Eof]);
}

#[test]
fn priority_row4_eof_before_lost_on_a_read_pipe() {
    let mut f = fixture(StreamKind::ReadPipe, TestIo::default());
    f.t.handle_data(b"x").unwrap();
    f.t.handle_eof().unwrap();
    assert_eq!(f.callbacks(), [Cb::Made, Cb::Data(b"x".to_vec()), Cb::Eof]);
    f.t.handle_eof_answer(true, &mut f.io, &mut f.pool);
    assert_eq!(f.callbacks(), [Cb::Lost(None)]);
}

#[test]
fn priority_row5_lost_last_and_exactly_once() {
    let mut f = socket(TestIo::accepting(0), 1, 0);
    f.write(b"abc").unwrap();
    f.t.handle_error(reset(), &mut f.io, &mut f.pool).unwrap();
    assert_eq!(f.callbacks(), [Cb::Pause, Cb::Lost(Some(reset()))]);
    assert!(f.t.is_finished());
    assert_eq!(f.t.next_callback(), None);
}

// ---------------------------------------------------------------------------------------
// The completion-based path (DESIGN.md §3.3 rule 2)
// ---------------------------------------------------------------------------------------

#[test]
fn poll_transmit_offers_the_same_bytes_until_handle_sent() {
    let mut f = socket(TestIo::accepting(0), 4, 1);
    f.write(b"hello").unwrap();
    f.write(b"world").unwrap();
    let offered = |t: &StreamTransport| {
        let mut slices = [IoSlice::new(&[]); 4];
        let n = t.poll_transmit(&mut slices);
        slices[..n].iter().flat_map(|s| s.to_vec()).collect::<Vec<u8>>()
    };
    assert_eq!(offered(&f.t), b"helloworld");
    assert_eq!(offered(&f.t), b"helloworld");
    f.t.handle_sent(7, &mut f.io, &mut f.pool).unwrap();
    assert_eq!(offered(&f.t), b"rld");
    assert_eq!(f.callbacks(), [Cb::Pause]);
    f.t.handle_sent(3, &mut f.io, &mut f.pool).unwrap();
    assert_eq!(f.callbacks(), [Cb::Resume]);
    let mut one = [IoSlice::new(&[])];
    assert_eq!(f.t.poll_transmit(&mut one), 0);
}

// ---------------------------------------------------------------------------------------
// Driver misuse: typed errors, state unchanged (DESIGN.md §3.3 rule 3)
// ---------------------------------------------------------------------------------------

#[test]
fn handle_sent_more_than_queued_is_an_error_and_consumes_nothing() {
    let mut f = socket(TestIo::accepting(0), 64, 16);
    f.write(b"abc").unwrap();
    assert_eq!(
        f.t.handle_sent(4, &mut f.io, &mut f.pool),
        Err(DriverError::SentMoreThanOffered { offered: 3, sent: 4 })
    );
    assert_eq!(f.t.write_buffer_size(), 3);
}

#[test]
fn lying_try_send_fails_the_transport_instead_of_corrupting_it() {
    let mut f = socket(TestIo::default(), 64, 16);
    f.io.lie = Some(10);
    f.write(b"abc").unwrap();
    let err = DriverError::SentMoreThanOffered { offered: 3, sent: 10 };
    assert_eq!(f.callbacks(), [Cb::Lost(Some(ConnectionError::Driver(err)))]);
}

#[test]
fn lying_try_recv_is_reported() {
    struct Liar;
    impl Io for Liar {
        fn try_send(&mut self, _: Handle, _: &[IoSlice<'_>]) -> io::Result<usize> {
            Ok(0)
        }
        fn try_recv(&mut self, _: Handle, buf: &mut [u8]) -> io::Result<usize> {
            Ok(buf.len() + 1)
        }
        fn shutdown_write(&mut self, _: Handle) -> io::Result<()> {
            Ok(())
        }
        fn close(&mut self, _: Handle) {}
    }
    let mut t = StreamTransport::new(Handle::from_raw(0, 0), Extra::default());
    let _ = t.next_callback();
    let mut buf = [0u8; 8];
    let err = DriverError::ReceivedMoreThanCapacity { capacity: 8, received: 9 };
    assert_eq!(t.read(&mut buf, &mut Liar, &mut SendPool::default()), Err(err.clone()));
    assert_eq!(t.next_callback(), Some(StreamCallback::ConnectionLost(Some(err.into()))));
}

#[test]
fn every_driver_call_after_close_is_closed() {
    let mut f = socket(TestIo::default(), 4, 1);
    f.abort();
    let mut buf = [0u8; 4];
    assert_eq!(f.t.on_writable(&mut f.io, &mut f.pool), Err(DriverError::Closed));
    assert_eq!(f.t.read(&mut buf, &mut f.io, &mut f.pool), Err(DriverError::Closed));
    assert_eq!(f.t.handle_data(b"x"), Err(DriverError::Closed));
    assert_eq!(f.t.handle_eof(), Err(DriverError::Closed));
    assert_eq!(f.t.handle_sent(0, &mut f.io, &mut f.pool), Err(DriverError::Closed));
    assert_eq!(f.t.handle_error(reset(), &mut f.io, &mut f.pool), Err(DriverError::Closed));
    assert_eq!(f.io.closes, 1, "Io::close is called exactly once");
    assert_eq!(f.callbacks(), [Cb::Lost(None)], "the first reason wins");
}

#[test]
fn data_or_eof_after_eof_is_an_error() {
    let mut f = socket(TestIo::default(), 4, 1);
    f.t.handle_eof().unwrap();
    assert_eq!(f.t.handle_data(b"x"), Err(DriverError::DataAfterEof));
    assert_eq!(f.t.handle_eof(), Err(DriverError::DataAfterEof));
    assert_eq!(f.callbacks(), [Cb::Eof]);
}

#[test]
fn read_end_closed_on_a_socket_is_wrong_kind() {
    let mut f = socket(TestIo::default(), 4, 1);
    assert_eq!(
        f.t.handle_read_end_closed(&mut f.io, &mut f.pool),
        Err(DriverError::WrongKind { expected: "write pipe" })
    );
    assert!(!f.t.is_closing());
}
