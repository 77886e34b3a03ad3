//! The scenarios: each drives one [`Driver`] through a piece of asyncio's behaviour and
//! checks what the protocols saw. Nothing here knows which driver runs it.

use std::cell::{Cell, RefCell};
use std::io::ErrorKind;
use std::rc::Rc;
use std::time::{Duration, Instant};

use aioport::{CallbackResult, ConnectionError, Ctx, LoopError, Protocol};

use crate::driver::Driver;
use crate::protocols::{Asker, Client, Echo, Pusher, Recorder, Seen, Shared, WhenSent, shared};

/// Prints why a scenario cannot run on this driver (CI lists these).
fn skipped<D: Driver>(scenario: &str, why: &str) {
    println!("SKIPPED ({} {scenario}: {why})", D::NAME);
}

/// A factory whose connections all record into a shared list.
fn recording_factory(
    make: impl Fn(&Shared) -> Box<dyn Protocol> + 'static,
) -> (Rc<RefCell<Vec<Shared>>>, crate::driver::Factory) {
    let all = Rc::new(RefCell::new(Vec::new()));
    let list = all.clone();
    let factory = Box::new(move || {
        let seen = shared();
        list.borrow_mut().push(seen.clone());
        make(&seen)
    });
    (all, factory)
}

/// The writer's protocol is between `pause_writing` and `resume_writing`.
fn is_paused(s: &Seen) -> bool {
    s.pauses > s.resumes
}

fn lost_cleanly(s: &Seen) -> bool {
    matches!(s.lost, Some(None))
}

fn assert_no_errors<D: Driver>(d: &mut D) {
    let errors = d.take_errors();
    assert!(errors.is_empty(), "{}: unexpected loop errors: {errors:?}", D::NAME);
}

/// A reset peer is `ECONNRESET`; writing to one first can be `EPIPE`.
fn is_reset(err: &ConnectionError) -> bool {
    matches!(err.io_kind(), Some(ErrorKind::ConnectionReset | ErrorKind::BrokenPipe))
}

// ---------------------------------------------------------------------------------------

/// Three clients send messages in three writes each; each gets exactly its bytes back;
/// both ends close cleanly (the client closes, the server closes on EOF).
pub fn echo<D: Driver>(d: &mut D) {
    let (servers, factory) = recording_factory(|s| Echo::boxed(Some(s.clone())));
    let l = d.listen(factory);
    let clients: Vec<(Shared, Vec<u8>)> = (0..3)
        .map(|i| {
            let message = format!("hello {i}; ").repeat(100 * (i + 1)).into_bytes();
            let seen = shared();
            let client =
                Client { seen: seen.clone(), message: message.clone(), expect: message.len() };
            d.connect(&l.endpoint, Box::new(client)).expect("connect to the echo server");
            (seen, message)
        })
        .collect();
    d.run_until("every echo and every close", || {
        clients.iter().all(|(s, _)| s.borrow().is_lost())
            && servers.borrow().len() == 3
            && servers.borrow().iter().all(|s| s.borrow().is_lost())
    });
    for (seen, message) in &clients {
        let s = seen.borrow();
        assert_eq!(s.data, *message, "the echo is the message, byte for byte");
        assert_eq!(s.events.first(), Some(&"made"));
        assert_eq!(s.events.last(), Some(&"lost"));
        assert!(lost_cleanly(&s), "client lost with {:?}", s.lost);
    }
    let mut echoed: Vec<usize> = servers.borrow().iter().map(|s| s.borrow().received).collect();
    echoed.sort_unstable();
    assert_eq!(echoed, clients.iter().map(|(_, m)| m.len()).collect::<Vec<_>>());
    assert!(servers.borrow().iter().all(|s| lost_cleanly(&s.borrow())));
    assert_eq!(d.transports(), 0, "every transport removed after connection_lost");
    assert_no_errors(d);
}

/// 64 MiB through an echo server with flow control on both sides; every byte comes back
/// in order, and the writer paused and resumed on the way.
pub fn bulk_64_mib_byte_exact<D: Driver>(d: &mut D) {
    const TOTAL: usize = 64 << 20;
    let server = shared();
    let seen = server.clone();
    let l = d.listen(Box::new(move || Echo::boxed(Some(seen.clone()))));
    let w = shared();
    let pusher = Pusher { seen: w.clone(), total: TOTAL, when_sent: WhenSent::CloseAfterEcho };
    d.connect(&l.endpoint, Box::new(pusher)).expect("connect");
    d.run_until("64 MiB echoed", || w.borrow().is_lost() && server.borrow().is_lost());
    let w = w.borrow();
    assert_eq!(w.wrong, None);
    assert_eq!((w.sent, w.received), (TOTAL, TOTAL), "every byte echoed");
    assert!(lost_cleanly(&w), "writer lost with {:?}", w.lost);
    assert!(w.pauses >= 1, "64 MiB cannot leave at once: the writer must pause");
    assert_eq!(w.pauses, w.resumes, "every pause resumed once the queue drained");
    assert_eq!(server.borrow().received, TOTAL);
    assert_no_errors(d);
}

/// A protocol that sends `message` and half-closes at once, then records what comes
/// back; it closes when the peer's EOF arrives.
pub struct SendThenEof {
    pub seen: Shared,
    pub message: &'static [u8],
}

impl Protocol for SendThenEof {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.seen.borrow_mut().events.push("made");
        assert!(ctx.can_write_eof(ctx.stream())?);
        ctx.write(ctx.stream(), self.message)?;
        ctx.write_eof(ctx.stream())?;
        Ok(())
    }
    fn data_received(&mut self, _: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        let mut s = self.seen.borrow_mut();
        s.events.push("data");
        s.data.extend_from_slice(data);
        Ok(())
    }
    fn eof_received(&mut self, _: &mut Ctx<'_>) -> CallbackResult<bool> {
        self.seen.borrow_mut().events.push("eof");
        Ok(false)
    }
    fn connection_lost(&mut self, _: &mut Ctx<'_>, err: Option<ConnectionError>) -> CallbackResult {
        let mut s = self.seen.borrow_mut();
        s.events.push("lost");
        s.lost = Some(err);
        Ok(())
    }
}

/// Reads until EOF, keeps the connection open (`eof_received` returns true), answers
/// with the byte count over the still-open write side, then closes.
struct Responder {
    seen: Shared,
}

impl Protocol for Responder {
    fn connection_made(&mut self, _: &mut Ctx<'_>) -> CallbackResult {
        self.seen.borrow_mut().events.push("made");
        Ok(())
    }
    fn data_received(&mut self, _: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        let mut s = self.seen.borrow_mut();
        s.events.push("data");
        s.data.extend_from_slice(data);
        Ok(())
    }
    fn eof_received(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult<bool> {
        let n = {
            let mut s = self.seen.borrow_mut();
            s.events.push("eof");
            s.data.len()
        };
        ctx.write(ctx.stream(), format!("got {n} bytes").into_bytes())?;
        ctx.close(ctx.stream())?;
        Ok(true)
    }
    fn connection_lost(&mut self, _: &mut Ctx<'_>, err: Option<ConnectionError>) -> CallbackResult {
        let mut s = self.seen.borrow_mut();
        s.events.push("lost");
        s.lost = Some(err);
        Ok(())
    }
}

fn half_close<D: Driver>(d: &mut D, server_sends_first: bool) {
    let (sender, responder) = (shared(), shared());
    let (s2, r2) = (sender.clone(), responder.clone());
    let message: &'static [u8] = if server_sends_first { b"greeting" } else { b"request" };
    let factory: crate::driver::Factory = if server_sends_first {
        Box::new(move || Box::new(SendThenEof { seen: s2.clone(), message }))
    } else {
        Box::new(move || Box::new(Responder { seen: r2.clone() }))
    };
    let l = d.listen(factory);
    let client: Box<dyn Protocol> = if server_sends_first {
        Box::new(Responder { seen: responder.clone() })
    } else {
        Box::new(SendThenEof { seen: sender.clone(), message })
    };
    d.connect(&l.endpoint, client).expect("connect");
    d.run_until("both sides closed", || {
        sender.borrow().lost.is_some() && responder.borrow().lost.is_some()
    });
    let (s, r) = (sender.borrow(), responder.borrow());
    // The responder read everything, saw EOF, and could still write afterwards.
    assert_eq!(r.data, message);
    assert_eq!(r.events, ["made", "data", "eof", "lost"]);
    assert_eq!(s.data, format!("got {} bytes", message.len()).as_bytes());
    assert_eq!(s.events, ["made", "data", "eof", "lost"]);
    assert!(lost_cleanly(&s) && lost_cleanly(&r), "{:?} / {:?}", s.lost, r.lost);
    assert_no_errors(d);
}

/// The client half-closes after its request; the server still answers over its open
/// write side (asyncio's `eof_received` returning True).
pub fn half_close_client_first<D: Driver>(d: &mut D) {
    half_close(d, false);
}

/// The server half-closes after its greeting; the client still answers.
pub fn half_close_server_first<D: Driver>(d: &mut D) {
    half_close(d, true);
}

/// The peer stops reading: the writer's buffer crosses high water and it pauses; the peer
/// drains; the writer resumes; nothing is lost.
pub fn peer_stops_reading<D: Driver>(d: &mut D) {
    // More than the kernel can buffer for a peer that does not read (the send buffer
    // autotunes up to tcp_wmem's 4 MiB), so the writer must pause.
    const TOTAL: usize = 16 << 20;
    let sink = shared();
    let s2 = sink.clone();
    let l = d.listen(Box::new(move || {
        Box::new(Recorder { start_paused: true, check_pattern: true, ..Recorder::new(&s2) })
    }));
    let w = shared();
    let h = d
        .connect(
            &l.endpoint,
            Box::new(Pusher { seen: w.clone(), total: TOTAL, when_sent: WhenSent::Close }),
        )
        .expect("connect");
    // Paused now; not necessarily for the first time: a layer with its own buffer (TLS
    // reads up to 256 KiB for a paused app) can drain a first episode.
    d.run_until("the writer pauses", || is_paused(&w.borrow()) && sink.borrow().handle.is_some());
    let sent = w.borrow().sent;
    assert!(sent < TOTAL, "a paused writer stops writing");
    assert_eq!(sink.borrow().received, 0, "the peer reads nothing while paused");
    let sink_h = sink.borrow().handle.expect("the peer's handle");
    d.with(|ctx| {
        let queued = ctx.write_buffer_size(h).expect("writer alive");
        let high = ctx.write_buffer_limits(h).expect("writer alive").high();
        assert!(queued > high, "paused above high water: {queued} <= {high}");
        assert!(ctx.is_writing_paused(h).expect("writer alive"));
        ctx.resume_reading(sink_h).expect("peer alive");
    });
    d.run_until("the peer drained everything", || sink.borrow().is_lost() && w.borrow().is_lost());
    let (w, sink) = (w.borrow(), sink.borrow());
    assert_eq!(sink.wrong, None);
    assert_eq!(sink.received, TOTAL, "nothing lost");
    assert!(w.resumes >= 1 && w.resumes == w.pauses, "{} pauses, {} resumes", w.pauses, w.resumes);
    assert!(lost_cleanly(&w) && lost_cleanly(&sink), "{:?} / {:?}", w.lost, sink.lost);
    assert_no_errors(d);
}

/// `abort()` with bytes queued drops them at once: `write_buffer_size()` is 0 when it
/// returns, `connection_lost(None)` follows, `resume_writing` never; the peer gets at
/// most what the socket had taken, then EOF or a reset.
pub fn abort_with_queued_buffer<D: Driver>(d: &mut D) {
    // An upper bound: the writer stops at its first pause.
    const TOTAL: usize = 64 << 20;
    let sink = shared();
    let s2 = sink.clone();
    let l = d.listen(Box::new(move || {
        Box::new(Recorder { start_paused: true, check_pattern: true, ..Recorder::new(&s2) })
    }));
    let w = shared();
    let h = d
        .connect(
            &l.endpoint,
            Box::new(Pusher { seen: w.clone(), total: TOTAL, when_sent: WhenSent::Stay }),
        )
        .expect("connect");
    // Paused now; not necessarily for the first time: a layer with its own buffer (TLS
    // reads up to 256 KiB for a paused app) can drain a first episode.
    d.run_until("the writer pauses", || is_paused(&w.borrow()) && sink.borrow().handle.is_some());
    let queued = d.with(|ctx| {
        let queued = ctx.write_buffer_size(h).expect("writer alive");
        ctx.abort(h).expect("abort");
        assert_eq!(ctx.write_buffer_size(h), Ok(0), "abort drops the queue at once");
        queued
    });
    assert!(queued > 0);
    let resumes_before_abort = w.borrow().resumes;
    d.run_until("the writer's connection_lost", || w.borrow().is_lost());
    let sink_h = sink.borrow().handle.expect("the peer's handle");
    d.with(|ctx| ctx.resume_reading(sink_h).expect("peer alive"));
    d.run_until("the peer's connection_lost", || sink.borrow().is_lost());
    let (w, sink) = (w.borrow(), sink.borrow());
    assert!(lost_cleanly(&w), "abort is not an error: {:?}", w.lost);
    assert_eq!(w.resumes, resumes_before_abort, "no resume_writing after abort");
    assert_eq!(w.events.last(), Some(&"lost"));
    assert_eq!(sink.wrong, None);
    assert!(sink.received <= w.sent - queued, "the queued bytes were dropped");
    match &sink.lost {
        Some(None) => {}
        Some(Some(e)) if is_reset(e) => {}
        other => panic!("the peer sees EOF or a reset, not {other:?}"),
    }
    assert_no_errors(d);
}

/// A reset (SO_LINGER 0 and abort) reaches the peer as `connection_lost(Some(reset))`.
pub fn peer_reset<D: Driver>(d: &mut D) {
    let srv = shared();
    let s2 = srv.clone();
    let l = d.listen(Box::new(move || Box::new(Recorder::new(&s2))));
    let c = shared();
    d.connect(&l.endpoint, Box::new(Recorder::new(&c))).expect("connect");
    d.run_until("the server side is connected", || srv.borrow().handle.is_some());
    let h = srv.borrow().handle.expect("server handle");
    d.reset(h);
    d.run_until("both sides lost", || srv.borrow().is_lost() && c.borrow().is_lost());
    assert!(lost_cleanly(&srv.borrow()), "the side that reset lost cleanly");
    match &c.borrow().lost {
        Some(Some(e)) if is_reset(e) => {}
        other => panic!("the peer of a reset sees ECONNRESET, not {other:?}"),
    }
    assert_no_errors(d);
}

/// A refused connect: the blocking form returns the error (the protocol hears nothing);
/// from a callback, `request_completed` gets it — and a good connect beside it succeeds.
pub fn connect_refused<D: Driver>(d: &mut D) {
    let nobody = d.unused_endpoint();
    let never = shared();
    let err = d.connect(&nobody, Box::new(Recorder::new(&never))).expect_err("nothing listens");
    assert_eq!(err.io_kind(), Some(ErrorKind::ConnectionRefused), "{err:?}");
    assert!(never.borrow().events.is_empty(), "a refused protocol hears nothing");

    let l = d.listen(Box::new(|| Echo::boxed(None)));
    let (asker, good, never) = (shared(), shared(), shared());
    let targets: Vec<(aioport::Endpoint, Box<dyn Protocol>)> = vec![
        (nobody, d.client_wrap()(Box::new(Recorder::new(&never)))),
        (l.endpoint.clone(), d.client_wrap()(Box::new(Recorder::new(&good)))),
    ];
    d.connect(&l.endpoint, Box::new(Asker { seen: asker.clone(), targets })).expect("connect");
    d.run_until("both requests completed", || asker.borrow().completed.len() == 2);
    let a = asker.borrow();
    let refused = a.completed.iter().filter(|(_, r)| {
        r.as_ref().err().and_then(ConnectionError::io_kind) == Some(ErrorKind::ConnectionRefused)
    });
    assert_eq!(refused.count(), 1, "{:?}", a.completed);
    let ok: Vec<_> = a.completed.iter().filter_map(|(_, r)| r.as_ref().ok()).collect();
    assert_eq!(ok.len(), 1);
    assert_eq!(Some(*ok[0]), good.borrow().handle, "connection_made ran before request_completed");
    assert!(never.borrow().events.is_empty());
    assert_no_errors(d);
}

/// Closing a server stops accepting (new connects are refused) and leaves accepted
/// connections working.
pub fn server_close<D: Driver>(d: &mut D) {
    let l = d.listen(Box::new(|| Echo::boxed(None)));
    let c = shared();
    let h = d.connect(&l.endpoint, Box::new(Recorder::new(&c))).expect("connect");
    d.with(|ctx| ctx.write(h, &b"a"[..]).expect("write"));
    d.run_until("the first echo", || c.borrow().data == b"a");
    if !d.close_listener(l.id) {
        return skipped::<D>("server_close", "the driver cannot close a listener");
    }
    let err = d.connect(&l.endpoint, Box::new(Recorder::new(&shared()))).expect_err("closed");
    assert_eq!(err.io_kind(), Some(ErrorKind::ConnectionRefused), "{err:?}");
    d.with(|ctx| ctx.write(h, &b"b"[..]).expect("write"));
    d.run_until("an echo after the server closed", || c.borrow().data == b"ab");
    d.with(|ctx| ctx.close(h).expect("close"));
    d.run_until("the client's connection_lost", || c.borrow().is_lost());
    assert_no_errors(d);
}

/// `call_at` / `call_later` closures run in deadline order, never early; a cancelled one
/// never runs; `call_soon` runs without waiting for any timer.
pub fn timers_in_deadline_order<D: Driver>(d: &mut D) {
    type Fired = Rc<RefCell<Vec<(u32, Instant, Instant)>>>;
    let fired: Fired = Rc::new(RefCell::new(Vec::new()));
    let delays_ms = [50u64, 10, 30, 0, 20, 40, 25];
    let f = fired.clone();
    d.with(move |ctx| {
        let t0 = ctx.now();
        for (label, ms) in delays_ms.iter().enumerate() {
            let when = t0 + Duration::from_millis(*ms);
            let f = f.clone();
            ctx.call_at(when, move |ctx| f.borrow_mut().push((label as u32, when, ctx.now())));
        }
        let id = ctx
            .call_later(Duration::from_millis(15), |_| panic!("a cancelled closure ran"))
            .expect("15 ms fits");
        assert!(ctx.cancel(id));
        assert!(!ctx.cancel(id), "cancelled once");
        let f = f.clone();
        ctx.call_soon(move |ctx| f.borrow_mut().push((99, t0, ctx.now())));
    });
    d.run_until("every timer fired", || fired.borrow().len() == delays_ms.len() + 1);
    let fired = fired.borrow();
    for &(label, when, now) in fired.iter() {
        assert!(now >= when, "closure {label} ran {:?} early", when - now);
    }
    let timers: Vec<u32> = fired.iter().map(|f| f.0).filter(|&l| l != 99).collect();
    let mut by_deadline: Vec<u32> = (0..delays_ms.len() as u32).collect();
    by_deadline.sort_by_key(|&l| delays_ms[l as usize]);
    assert_eq!(timers, by_deadline, "deadline order");
    let soon = fired.iter().position(|f| f.0 == 99).expect("call_soon ran");
    assert!(soon <= 1, "call_soon waits for no timer (ran at position {soon})");
    assert_no_errors(d);
}

/// 1,000 connections open at once, each echoes a message, all close cleanly.
pub fn concurrent_1000<D: Driver>(d: &mut D) {
    const N: usize = 1000;
    d.prepare_connections(N);
    let (servers, factory) = recording_factory(|s| Echo::boxed(Some(s.clone())));
    let l = d.listen(factory);
    let clients: Vec<(Shared, aioport::StreamHandle)> = (0..N)
        .map(|_| {
            let seen = shared();
            let h = d.connect(&l.endpoint, Box::new(Recorder::new(&seen))).expect("connect");
            (seen, h)
        })
        .collect();
    d.with(|ctx| {
        for (i, (_, h)) in clients.iter().enumerate() {
            ctx.write(*h, format!("message {i:04}").into_bytes()).expect("write");
        }
    });
    d.run_until("1,000 echoes", || clients.iter().all(|(s, _)| s.borrow().data.len() == 12));
    assert_eq!(d.transports(), 2 * N, "both ends of every connection are open at once");
    for (i, (s, _)) in clients.iter().enumerate() {
        assert_eq!(s.borrow().data, format!("message {i:04}").as_bytes());
    }
    d.with(|ctx| clients.iter().for_each(|(_, h)| ctx.close(*h).expect("close")));
    d.run_until("every connection closed", || clients.iter().all(|(s, _)| s.borrow().is_lost()));
    d.run_until("every server side closed", || {
        servers.borrow().iter().all(|s| s.borrow().is_lost())
    });
    assert!(clients.iter().all(|(s, _)| lost_cleanly(&s.borrow())));
    assert!(servers.borrow().iter().all(|s| lost_cleanly(&s.borrow())));
    assert_eq!(d.transports(), 0);
    assert_no_errors(d);
}

/// A protocol that panics is dropped and its transport aborted; the error hook hears of
/// it; the connections beside it are unaffected.
pub fn panicking_protocol_beside_healthy_ones<D: Driver>(d: &mut D) {
    let n = Rc::new(Cell::new(0u32));
    let l = d.listen(Box::new(move || {
        n.set(n.get() + 1);
        Box::new(Echo { seen: None, panic_on_data: n.get().is_multiple_of(3) })
    }));
    let clients: Vec<(Shared, Vec<u8>)> = (0..6)
        .map(|i| {
            let message = format!("ping {i}").into_bytes();
            let seen = shared();
            let client =
                Client { seen: seen.clone(), message: message.clone(), expect: message.len() };
            d.connect(&l.endpoint, Box::new(client)).expect("connect");
            (seen, message)
        })
        .collect();
    d.run_until("every client lost", || clients.iter().all(|(s, _)| s.borrow().is_lost()));
    let echoed = clients.iter().filter(|(s, m)| s.borrow().data == *m).count();
    assert_eq!(echoed, 4, "the healthy connections echo");
    for (s, m) in &clients {
        let s = s.borrow();
        if s.data != *m {
            assert!(s.data.is_empty(), "the panicked side wrote nothing");
            match &s.lost {
                Some(None) => {}
                Some(Some(e)) if is_reset(e) => {}
                other => panic!("the peer of a panicked protocol sees EOF or a reset: {other:?}"),
            }
        }
    }
    let errors = d.take_errors();
    let panics = errors
        .iter()
        .filter(|e| {
            matches!(e, LoopError::Panicked { callback: "data_received", message, .. }
                if message.contains("boom"))
        })
        .count();
    assert_eq!(panics, 2, "{errors:?}");
    assert_eq!(errors.len(), 2, "{errors:?}");
}

/// Echo over a Unix stream socket: the same protocol code as over TCP.
pub fn unix_echo<D: Driver>(d: &mut D) {
    let Some(l) = d.listen_unix(Box::new(|| Echo::boxed(None))) else {
        return skipped::<D>("unix_echo", "the driver has no Unix stream sockets");
    };
    let c = shared();
    let h = d.connect(&l.endpoint, Box::new(Recorder::new(&c))).expect("connect");
    d.with(|ctx| ctx.write(h, &b"over a unix socket"[..]).expect("write"));
    d.run_until("the echo", || c.borrow().data.len() == 18);
    assert_eq!(&c.borrow().data[..], b"over a unix socket");
    d.with(|ctx| ctx.close(h).expect("close"));
    d.run_until("the client's connection_lost", || c.borrow().is_lost());
    assert!(lost_cleanly(&c.borrow()));
    assert!(d.close_listener(l.id));
    assert_no_errors(d);
}

/// asyncio's server lifecycle: close stops accepting; close_clients flushes and closes
/// every accepted connection; wait_closed returns once they have all ended.
pub fn server_lifecycle<D: Driver>(d: &mut D) {
    let (accepted, factory) = recording_factory(|s| Echo::boxed(Some(s.clone())));
    let l = d.listen(factory);
    let clients: Vec<Shared> = (0..3).map(|_| shared()).collect();
    for c in &clients {
        let h = d.connect(&l.endpoint, Box::new(Recorder::new(c))).expect("connect");
        d.with(|ctx| ctx.write(h, &b"hi"[..]).expect("write"));
    }
    d.run_until("every echo", || clients.iter().all(|c| c.borrow().data == b"hi"));
    if !d.close_listener(l.id) {
        return skipped::<D>("server_lifecycle", "the driver cannot close a listener");
    }
    let Some(closed) = d.close_clients(l.id) else {
        return skipped::<D>("server_lifecycle", "the driver has no close_clients");
    };
    assert_eq!(closed, 3);
    assert!(d.wait_closed(l.id), "wait_closed supported with close_clients");
    assert!(accepted.borrow().iter().all(|s| lost_cleanly(&s.borrow())));
    d.run_until("every client saw EOF", || clients.iter().all(|c| c.borrow().is_lost()));
    for c in &clients {
        let c = c.borrow();
        assert!(lost_cleanly(&c), "{:?}", c.lost);
        assert!(c.events.contains(&"eof"), "{:?}", c.events);
    }
    assert_no_errors(d);
}
