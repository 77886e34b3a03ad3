//! Tests of the harness itself: determinism, every fault kind, livelock detection, and
//! checkers that can fail.

use std::cell::RefCell;
use std::io::ErrorKind;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::*;
use crate::{
    CallbackResult, ConnectionError, Ctx, DatagramAddr, DatagramHandle, DatagramProtocol, Endpoint,
    Protocol, ProtocolError, StreamHandle,
};

fn t0() -> Instant {
    #[allow(clippy::disallowed_methods)] // the caller's base time; the harness never reads a clock
    Instant::now()
}

/// Writes `total` bytes of a counting pattern in `chunk`-sized writes, honouring
/// back-pressure, then half-closes.
struct Source {
    total: usize,
    chunk: usize,
    written: usize,
    paused: bool,
}

impl Source {
    fn new(total: usize, chunk: usize) -> Self {
        Source { total, chunk, written: 0, paused: false }
    }
    fn pump(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        while !self.paused && self.written < self.total {
            let n = self.chunk.min(self.total - self.written);
            let data: Vec<u8> = (self.written..self.written + n).map(|i| (i % 251) as u8).collect();
            self.written += n;
            ctx.write(ctx.stream(), data)?;
            self.paused = ctx.is_writing_paused(ctx.stream())?;
        }
        if self.written == self.total {
            ctx.write_eof(ctx.stream())?;
        }
        Ok(())
    }
}

impl Protocol for Source {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.pump(ctx)
    }
    fn pause_writing(&mut self, _: &mut Ctx<'_>) -> CallbackResult {
        self.paused = true;
        Ok(())
    }
    fn resume_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.paused = false;
        self.pump(ctx)
    }
    fn eof_received(&mut self, _: &mut Ctx<'_>) -> CallbackResult<bool> {
        Ok(false)
    }
}

/// Collects what it receives into a shared buffer; closes on EOF.
struct Sink(Rc<RefCell<Vec<u8>>>);

impl Protocol for Sink {
    fn data_received(&mut self, _: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        self.0.borrow_mut().extend_from_slice(data);
        Ok(())
    }
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

fn transfer(config: SimConfig, total: usize) -> (Sim, StreamHandle, StreamHandle, Vec<u8>) {
    let got = Rc::new(RefCell::new(Vec::new()));
    let mut sim = Sim::with_config(t0(), config);
    let (src, dst) = sim.pair(Source::new(total, 4096), Sink(got.clone()));
    sim.run_until_idle();
    let got = got.borrow().clone();
    (sim, src, dst, got)
}

#[test]
fn same_seed_same_transcript_different_seed_different_run() {
    let config = |seed| SimConfig::new(seed).max_send(700).max_read(300).refuse_percent(20);
    let (a, src_a, dst_a, got_a) = transfer(config(5), 100_000);
    let (b, _, _, got_b) = transfer(config(5), 100_000);
    assert_eq!(a.log(), b.log());
    assert_eq!(got_a, pattern(100_000));
    assert_eq!(got_b, got_a);
    let (c, _, _, got_c) = transfer(config(6), 100_000);
    assert_eq!(got_c, got_a, "the bytes never depend on the seed");
    assert_ne!(c.log(), a.log(), "the chunking does");
    assert_eq!(a.transcript(src_a).first(), Some(&Event::Made));
    assert_eq!(a.transcript(dst_a).last(), Some(&Event::Lost(None)));
}

fn data_events(events: &[Event]) -> usize {
    events.iter().filter(|e| matches!(e, Event::Data(_))).count()
}

#[test]
fn partial_sends_and_read_chunking_split_deliveries() {
    let (plain, _, dst, got) = transfer(SimConfig::new(1), 20_000);
    assert_eq!(got, pattern(20_000));
    let whole = data_events(&plain.transcript(dst));
    let (chunked, _, dst, got) = transfer(SimConfig::new(1).max_read(100), 20_000);
    assert_eq!(got, pattern(20_000));
    assert!(data_events(&chunked.transcript(dst)) >= 200, "reads of at most 100 bytes");
    let (partial, _, dst, got) = transfer(SimConfig::new(1).max_send(10), 20_000);
    assert_eq!(got, pattern(20_000));
    assert!(data_events(&partial.transcript(dst)) > whole);
}

#[test]
fn a_small_buffer_and_refused_sends_make_the_writer_pause() {
    let (sim, src, _, got) = transfer(SimConfig::new(2), 200_000);
    assert!(!sim.transcript(src).contains(&Event::Pause), "256 KiB of buffer: never paused");
    assert_eq!(got.len(), 200_000);
    let (sim, src, _, got) = transfer(SimConfig::new(2).capacity(4096), 1_000_000);
    let t = sim.transcript(src);
    assert!(t.contains(&Event::Pause) && t.contains(&Event::Resume), "{t:?}");
    assert_eq!(got, pattern(1_000_000));
    let (sim, src, _, _) = transfer(SimConfig::new(2).refuse_percent(90), 300_000);
    assert!(sim.transcript(src).contains(&Event::Pause));
}

#[test]
fn a_stalled_reader_makes_its_peer_cross_high_water() {
    let got = Rc::new(RefCell::new(Vec::new()));
    let mut sim = Sim::with_config(t0(), SimConfig::new(3).capacity(8192));
    let (src, dst) = sim.pair(Source::new(200_000, 1000), Sink(got.clone()));
    sim.stall(dst, Duration::from_secs(5));
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.take_transcript(src), [Event::Made, Event::Pause]);
    assert!(got.borrow().len() <= 8192, "nothing read while stalled but the link's buffer");
    sim.run_until_idle();
    assert_eq!(*got.borrow(), pattern(200_000));
    assert!(sim.take_transcript(src).contains(&Event::Resume));
}

#[test]
fn latency_moves_virtual_time_not_real_time() {
    let start = t0();
    let mut sim = Sim::with_config(start, SimConfig::new(4).latency(Duration::from_millis(40)));
    let got = Rc::new(RefCell::new(Vec::new()));
    let (h, peer) = sim.open(Sink(got.clone()));
    sim.peer_send(peer, b"ping");
    sim.run_for(Duration::from_millis(39));
    assert!(got.borrow().is_empty(), "not yet arrived");
    sim.run_for(Duration::from_millis(1));
    assert_eq!(*got.borrow(), b"ping");
    assert_eq!(sim.now() - start, Duration::from_millis(40));
    let _ = h;
}

#[test]
fn peer_reset_loses_the_connection_with_connection_reset() {
    let mut sim = Sim::new(t0(), 5);
    let (a, b) = sim.pair(Source::new(10, 10), Sink(Rc::default()));
    sim.run_until_idle();
    let mut sim2 = Sim::new(t0(), 5);
    let (c, d) = sim2.pair(Sink(Rc::default()), Sink(Rc::default()));
    sim2.reset(c);
    sim2.run_until_idle();
    let reset = Some(ConnectionError::from(ErrorKind::ConnectionReset));
    assert_eq!(sim2.transcript(c), [Event::Made, Event::Lost(reset.clone())]);
    assert_eq!(sim2.transcript(d), [Event::Made, Event::Lost(reset)]);
    // Without a reset, the same pair ends cleanly through EOF.
    assert_eq!(sim.transcript(a).last(), Some(&Event::Lost(None)));
    assert_eq!(sim.transcript(b).last(), Some(&Event::Lost(None)));
}

#[test]
fn eof_either_way() {
    // The test's peer half-closes; the transport keeps writing, then closes.
    struct HalfClose;
    impl Protocol for HalfClose {
        fn eof_received(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult<bool> {
            ctx.write_slice(ctx.stream(), b"bye")?;
            ctx.close(ctx.stream())?;
            Ok(true)
        }
    }
    let mut sim = Sim::new(t0(), 6);
    let (h, peer) = sim.open(HalfClose);
    sim.peer_eof(peer);
    sim.run_until_idle();
    assert_eq!(sim.transcript(h), [Event::Made, Event::Eof, Event::Lost(None)]);
    assert_eq!(sim.peer_received(peer), b"bye");
    assert!(sim.peer_saw_eof(peer));
    // The transport half-closes; the peer sees EOF and the transport keeps reading.
    let got = Rc::new(RefCell::new(Vec::new()));
    struct Shut(Rc<RefCell<Vec<u8>>>);
    impl Protocol for Shut {
        fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
            Ok(ctx.write_eof(ctx.stream())?)
        }
        fn data_received(&mut self, _: &mut Ctx<'_>, d: &[u8]) -> CallbackResult {
            self.0.borrow_mut().extend_from_slice(d);
            Ok(())
        }
    }
    let (_, peer) = sim.open(Shut(got.clone()));
    sim.run_until_idle();
    assert!(sim.peer_saw_eof(peer));
    sim.peer_send(peer, b"still reading");
    sim.run_until_idle();
    assert_eq!(*got.borrow(), b"still reading");
}

#[test]
fn a_relay_of_four_transports_over_two_links() {
    // client ⇄ relay-in | relay-out ⇄ upstream: the relay opens its upstream from
    // connection_made and copies both ways with end-to-end back-pressure.
    struct Relay {
        other: Rc<RefCell<Option<StreamHandle>>>,
        /// EOFs seen by either side: after both, the relay closes both.
        eofs: Rc<std::cell::Cell<u8>>,
    }
    impl Protocol for Relay {
        fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
            if self.other.borrow().is_none() {
                let me = Rc::new(RefCell::new(Some(ctx.stream())));
                let eofs = self.eofs.clone();
                let upstream = Box::new(Relay { other: me, eofs });
                ctx.connect(Endpoint::Host { host: "upstream".into(), port: 1 }, upstream);
                ctx.pause_reading(ctx.stream())?;
            }
            Ok(())
        }
        fn request_completed(
            &mut self,
            ctx: &mut Ctx<'_>,
            _: crate::RequestId,
            outcome: Result<StreamHandle, ConnectionError>,
        ) -> CallbackResult {
            *self.other.borrow_mut() = Some(outcome.map_err(ProtocolError::from)?);
            ctx.resume_reading(ctx.stream())?;
            Ok(())
        }
        fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
            let other = self.other.borrow().expect("connected");
            ctx.write_slice(other, data)?;
            Ok(())
        }
        fn pause_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
            let other = self.other.borrow().expect("connected");
            Ok(ctx.pause_reading(other)?)
        }
        fn resume_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
            let other = self.other.borrow().expect("connected");
            Ok(ctx.resume_reading(other)?)
        }
        fn eof_received(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult<bool> {
            let other = self.other.borrow().expect("connected");
            let _ = ctx.write_eof(other);
            self.eofs.set(self.eofs.get() + 1);
            if self.eofs.get() == 2 {
                ctx.close(ctx.stream())?;
                let _ = ctx.close(other);
            }
            Ok(true)
        }
        fn connection_lost(
            &mut self,
            ctx: &mut Ctx<'_>,
            _: Option<ConnectionError>,
        ) -> CallbackResult {
            if let Some(other) = *self.other.borrow() {
                let _ = ctx.close(other);
            }
            Ok(())
        }
    }
    let got = Rc::new(RefCell::new(Vec::new()));
    let g = got.clone();
    let mut sim = Sim::with_config(t0(), SimConfig::new(9).capacity(4096).max_read(1500));
    sim.listen(Endpoint::Host { host: "upstream".into(), port: 1 }, move || {
        Box::new(Sink(g.clone()))
    });
    let (client, relay_in) =
        sim.pair(Source::new(300_000, 3000), Relay { other: Rc::default(), eofs: Rc::default() });
    sim.run_until_idle();
    assert_eq!(*got.borrow(), pattern(300_000));
    assert_eq!(sim.registry().len(), 0, "everything closed");
    let t = sim.transcript(relay_in);
    assert!(t.contains(&Event::Pause) || sim.transcript(client).contains(&Event::Pause));
}

#[test]
fn livelock_is_caught_with_the_seed() {
    struct Forever;
    impl Protocol for Forever {
        fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
            ctx.write_slice(ctx.stream(), data)?; // ping-pong, forever
            Ok(())
        }
    }
    let mut sim = Sim::with_config(t0(), SimConfig::new(11).max_steps(10_000));
    let (a, _) = sim.pair(Forever, Forever);
    sim.enter(|ctx| ctx.write_slice(a, b"ball")).unwrap();
    let err = sim.try_run_until_idle().unwrap_err();
    assert!(matches!(err, SimError::Livelock { steps: 10_000, seed: 11, .. }), "{err}");
    assert!(err.to_string().contains("livelock") && err.to_string().contains("seed 11"));
}

#[test]
fn checker_catches_a_broken_network() {
    let mut sim = Sim::with_config(t0(), SimConfig::new(12).corrupt_percent(50));
    let (_, dst) = sim.pair(Source::new(50_000, 1000), Sink(Rc::default()));
    let err = sim.try_run_until_idle().unwrap_err();
    let SimError::Violation(v) = err else { panic!("expected a violation: {err}") };
    assert_eq!(v.handle, Some(dst.handle()));
    assert!(v.message.contains("differ") || v.message.contains("only"), "{v}");
    assert_eq!(v.seed, 12);
}

#[test]
fn checker_allows_pause_again_after_a_swap_gh_109051() {
    struct Quiet;
    impl Protocol for Quiet {}
    let mut sim = Sim::with_config(t0(), SimConfig::new(14).capacity(1000));
    let (h, peer) = sim.open(Quiet);
    sim.peer_pause_reading(peer);
    sim.enter(|ctx| ctx.write(h, vec![7u8; 100_000])).unwrap();
    sim.run_until_idle();
    assert_eq!(sim.take_transcript(h), [Event::Made, Event::Pause]);
    // The new protocol is told the transport is paused: a second pause on the handle,
    // the first for this protocol instance — not a violation.
    sim.enter(|ctx| ctx.set_protocol(h, Box::new(Quiet))).unwrap();
    sim.peer_resume_reading(peer);
    sim.try_run_until_idle().unwrap();
    assert_eq!(sim.take_transcript(h), [Event::Pause, Event::Resume]);

    // Within one protocol instance the rule still holds: a swap while not paused, then
    // one pause/resume cycle, is a plain alternation.
    sim.enter(|ctx| ctx.set_protocol(h, Box::new(Quiet))).unwrap();
    sim.peer_pause_reading(peer);
    sim.enter(|ctx| ctx.write(h, vec![7u8; 100_000])).unwrap();
    sim.run_until_idle();
    sim.peer_resume_reading(peer);
    sim.try_run_until_idle().unwrap();
    assert_eq!(sim.take_transcript(h), [Event::Pause, Event::Resume]);
}

#[test]
fn checker_catches_a_protocol_that_ignores_pause_writing() {
    struct Firehose;
    impl Protocol for Firehose {
        fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
            for _ in 0..100 {
                ctx.write(ctx.stream(), vec![0u8; 10_000])?; // never looks at pause_writing
            }
            Ok(())
        }
    }
    let mut sim =
        Sim::with_config(t0(), SimConfig::new(13).capacity(1000).max_write_buffer(100_000));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        sim.pair(Firehose, Sink(Rc::default()));
    }));
    let msg = *result.unwrap_err().downcast::<String>().unwrap();
    assert!(msg.contains("pause_writing ignored"), "{msg}");
    // The well-behaved writer passes the same bound.
    let mut sim =
        Sim::with_config(t0(), SimConfig::new(13).capacity(1000).max_write_buffer(100_000));
    sim.pair(Source::new(1_000_000, 10_000), Sink(Rc::default()));
    sim.run_until_idle();
}

#[test]
fn connect_to_nobody_is_refused() {
    struct Dialer;
    impl Protocol for Dialer {
        fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
            ctx.connect(
                Endpoint::Host { host: "nobody".into(), port: 9 },
                Box::new(Sink(Rc::default())),
            );
            Ok(())
        }
    }
    let mut sim = Sim::new(t0(), 14);
    let (h, _) = sim.open(Dialer);
    sim.run_until_idle();
    let t = sim.transcript(h);
    assert!(
        matches!(&t[1], Event::Request(_, Err(e)) if e.io_kind() == Some(ErrorKind::ConnectionRefused)),
        "{t:?}"
    );
}

#[test]
fn scripted_driver_reads_like_cpythons_mock_tests() {
    // spec §2.2 test_write_ready_partial, then §4.7 EOF with keep-open false.
    struct Writer;
    impl Protocol for Writer {}
    let mut s = Scripted::new(t0(), Writer);
    assert_eq!(s.events(), [Event::Made]);
    s.send_accepts(3).send_would_block();
    s.enter(|ctx, h| ctx.write_slice(h, b"data1data2")).unwrap();
    assert_eq!(s.sent(), b"dat");
    assert_eq!(s.write_buffer_size(), 7);
    assert!(s.interest().write);
    assert_eq!(s.writable(), []); // WouldBlock: nothing moves, nothing is lost
    assert_eq!(s.write_buffer_size(), 7);
    assert_eq!(s.writable(), []);
    assert_eq!(s.sent(), b"data1data2");
    assert!(!s.interest().write);
    s.recv(b"abc").recv_eof();
    assert_eq!(s.readable(), [Event::data(b"abc")]);
    assert_eq!(s.readable(), [Event::Eof, Event::Lost(None)]);
    assert!(s.is_closed() && s.is_closing());
    assert_eq!(s.interest(), crate::Interest::default());
}

#[test]
fn scripted_send_failure_is_fatal() {
    struct Quiet;
    impl Protocol for Quiet {}
    let mut s = Scripted::new(t0(), Quiet);
    s.events();
    s.send_fails(ErrorKind::BrokenPipe);
    s.enter(|ctx, h| ctx.write_slice(h, b"x")).unwrap();
    assert_eq!(s.events(), [Event::Lost(Some(ErrorKind::BrokenPipe.into()))]);
    assert!(s.is_closed());
}

// ---------------------------------------------------------------------------------------
// Datagram links
// ---------------------------------------------------------------------------------------

type Shared<T> = Rc<RefCell<Vec<T>>>;

/// Sends `n` numbered datagrams at start (honouring pause_writing) and records what
/// comes back and every error.
struct Pinger {
    n: u32,
    next: u32,
    paused: bool,
    got: Rc<RefCell<Vec<u32>>>,
    errors: Rc<RefCell<Vec<ConnectionError>>>,
}

impl Pinger {
    fn new(n: u32) -> (Self, Shared<u32>, Shared<ConnectionError>) {
        let (got, errors) = (Rc::default(), Rc::default());
        let p =
            Pinger { n, next: 0, paused: false, got: Rc::clone(&got), errors: Rc::clone(&errors) };
        (p, got, errors)
    }
    fn pump(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        while !self.paused && self.next < self.n {
            ctx.sendto(ctx.datagram(), &self.next.to_be_bytes(), None)?;
            self.next += 1;
            self.paused = ctx.is_writing_paused(ctx.datagram())?;
        }
        Ok(())
    }
}

impl DatagramProtocol for Pinger {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.pump(ctx)
    }
    fn datagram_received(
        &mut self,
        _: &mut Ctx<'_>,
        data: &[u8],
        _: Option<&DatagramAddr>,
    ) -> CallbackResult {
        self.got.borrow_mut().push(u32::from_be_bytes(data.try_into()?));
        Ok(())
    }
    fn error_received(&mut self, _: &mut Ctx<'_>, err: ConnectionError) -> CallbackResult {
        self.errors.borrow_mut().push(err);
        Ok(())
    }
    fn pause_writing(&mut self, _: &mut Ctx<'_>) -> CallbackResult {
        self.paused = true;
        Ok(())
    }
    fn resume_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.paused = false;
        self.pump(ctx)
    }
}

struct Reflector;

impl DatagramProtocol for Reflector {
    fn datagram_received(
        &mut self,
        ctx: &mut Ctx<'_>,
        data: &[u8],
        addr: Option<&DatagramAddr>,
    ) -> CallbackResult {
        Ok(ctx.sendto(ctx.datagram(), data, addr)?)
    }
}

fn ping(config: SimConfig, n: u32) -> (Sim, DatagramHandle, Vec<u32>) {
    let mut sim = Sim::with_config(t0(), config);
    let (p, got, _) = Pinger::new(n);
    let (a, _) = sim.datagram_pair(p, Reflector);
    sim.run_until_idle();
    let got = got.borrow().clone();
    (sim, a, got)
}

#[test]
fn datagrams_arrive_whole_once_and_in_order_without_faults() {
    let (sim, a, got) = ping(SimConfig::new(20).refuse_percent(30), 500);
    assert_eq!(got, (0..500).collect::<Vec<_>>());
    assert_eq!(sim.datagrams_sent(a), 500);
    assert_eq!(sim.datagrams_lost(), 0);
}

#[test]
fn loss_duplication_and_reordering_change_what_arrives() {
    let (sim, _, got) = ping(SimConfig::new(21).loss_percent(30), 500);
    assert!(got.len() < 500 && got.windows(2).all(|w| w[0] < w[1]), "lost, never reordered");
    // Lost on the way out or on the way back: every missing reply is one lost datagram.
    assert_eq!(sim.datagrams_lost(), 500 - got.len() as u64);
    let (_, _, got) = ping(SimConfig::new(22).dup_percent(30), 300);
    assert!(got.len() > 300, "duplicated");
    let mut unique = got.clone();
    unique.dedup();
    assert_eq!(unique, (0..300).collect::<Vec<_>>());
    let (_, _, got) = ping(SimConfig::new(23).reorder_percent(30), 300);
    assert_eq!(got.len(), 300);
    assert!(got.windows(2).any(|w| w[0] > w[1]), "reordered");
    let mut sorted = got.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..300).collect::<Vec<_>>());
}

#[test]
fn a_connected_endpoint_to_a_closed_port_hears_connection_refused_and_stays_usable() {
    let mut sim = Sim::new(t0(), 24);
    let (p, _, errors) = Pinger::new(2);
    let nobody = DatagramAddr::Inet(std::net::SocketAddr::from(([10, 9, 9, 9], 9)));
    let h = sim.datagram_endpoint(
        p,
        DatagramAddr::Inet(std::net::SocketAddr::from(([10, 0, 0, 9], 1))),
        Some(nobody),
    );
    sim.run_until_idle();
    assert!(errors.borrow().iter().any(|e| e.io_kind() == Some(ErrorKind::ConnectionRefused)));
    assert!(!sim.registry().datagram(h.handle()).unwrap().is_closing());
    sim.enter(|ctx| ctx.sendto(h, b"again", None)).unwrap();
    sim.enter(|ctx| ctx.close(h)).unwrap();
    sim.run_until_idle();
    assert_eq!(sim.transcript(h).last(), Some(&Event::Lost(None)));
}
