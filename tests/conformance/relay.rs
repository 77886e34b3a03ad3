//! The relay scenarios: `examples/proxy.rs`'s relay (included from
//! `examples/support/relay.rs`, so the tested code is the example's) between a client and
//! an upstream server, on every driver.

use std::cell::RefCell;
use std::rc::Rc;

use aioport::{CallbackResult, ConnectionError, Ctx, Endpoint, Protocol};

use crate::driver::{Driver, Factory, Listening};
use crate::protocols::{Echo, Pusher, Recorder, Shared, WhenSent, shared};
use crate::scenarios::SendThenEof;

// The example's own code; the scenarios use `relay_with` only.
#[allow(dead_code)]
#[path = "../../examples/support/relay.rs"]
mod relay_impl;

use relay_impl::{RelayStats, relay_with};

/// One side's bound: the default high-water mark plus one read of the core's buffer.
const SIDE_BOUND: usize = 64 * 1024 + 256 * 1024;

/// An upstream listener from `factory`, and a proxy listener relaying to it.
fn proxy<D: Driver>(d: &mut D, factory: Factory) -> (Listening, Listening, Rc<RelayStats>) {
    let upstream = d.listen(factory);
    let stats = Rc::new(RelayStats::default());
    let (to, s, wrap) = (upstream.endpoint.clone(), stats.clone(), d.client_wrap());
    // The upstream connection is opened as the driver's clients are (over TLS on the TLS
    // axis: the relay then terminates and originates TLS).
    let proxy = d.listen(Box::new(move || relay_with(to.clone(), &s, Some(wrap.clone()))));
    (upstream, proxy, stats)
}

/// Upstream servers whose connections record into a shared list.
type Upstreams = Rc<RefCell<Vec<Shared>>>;

fn recorded(make: impl Fn(&Shared) -> Box<dyn Protocol> + 'static) -> (Upstreams, Factory) {
    let all: Upstreams = Rc::default();
    let list = all.clone();
    let factory = Box::new(move || {
        let seen = shared();
        list.borrow_mut().push(seen.clone());
        make(&seen)
    });
    (all, factory)
}

/// Runs until every relay connection and every upstream connection ended, then checks
/// that the loop holds no transport.
fn settle<D: Driver>(d: &mut D, stats: &RelayStats, upstreams: &Upstreams) {
    d.run_until("every relay and upstream connection closed", || {
        stats.open.get() == 0 && upstreams.borrow().iter().all(|s| s.borrow().is_lost())
    });
    assert_eq!(d.transports(), 0, "no transport left");
    assert_eq!(stats.connect_failures.get(), 0);
}

/// 256 MiB echoed through the proxy, byte-exact (the pusher checks every byte), with
/// back-pressure on every hop; no transport left.
pub fn relay_bulk_256_mib_byte_exact<D: Driver>(d: &mut D) {
    const TOTAL: usize = 256 << 20;
    let (upstreams, factory) = recorded(|s| Echo::boxed(Some(s.clone())));
    let (_up, proxy, stats) = proxy(d, factory);
    let w = shared();
    let pusher = Pusher { seen: w.clone(), total: TOTAL, when_sent: WhenSent::CloseAfterEcho };
    d.connect(&proxy.endpoint, Box::new(pusher)).expect("connect to the proxy");
    d.run_until("256 MiB echoed through the proxy", || w.borrow().is_lost());
    let w = w.borrow();
    assert_eq!(w.wrong, None);
    assert_eq!((w.sent, w.received), (TOTAL, TOTAL));
    assert!(matches!(w.lost, Some(None)), "client lost with {:?}", w.lost);
    assert_eq!(stats.up_bytes.get(), TOTAL as u64);
    assert_eq!(stats.down_bytes.get(), TOTAL as u64);
    assert!(
        stats.peak_buffered.get() <= SIDE_BOUND,
        "a relay write buffer reached {} bytes",
        stats.peak_buffered.get()
    );
    settle(d, &stats, &upstreams);
}

/// A client that does not read while the upstream sends 32 MiB: the relay pauses reading
/// the upstream, the upstream's own writes pause (back-pressure end to end), and the
/// relay's write buffers stay within high water plus one read. Once the client reads
/// again every byte arrives, in order.
pub fn relay_slow_reader_bounded<D: Driver>(d: &mut D) {
    const TOTAL: usize = 32 << 20;
    let (upstreams, factory) = recorded(|s| {
        Box::new(Pusher { seen: s.clone(), total: TOTAL, when_sent: WhenSent::Close })
    });
    let (_up, proxy, stats) = proxy(d, factory);
    let client = shared();
    let recorder = Recorder { start_paused: true, check_pattern: true, ..Recorder::new(&client) };
    let h = d.connect(&proxy.endpoint, Box::new(recorder)).expect("connect to the proxy");
    d.run_until("the upstream pauses writing", || {
        upstreams.borrow().first().is_some_and(|s| s.borrow().pauses >= 1)
    });
    assert_eq!(client.borrow().received, 0, "the client is not reading");
    assert!(
        stats.peak_buffered.get() <= SIDE_BOUND,
        "a relay write buffer reached {} bytes while the client did not read",
        stats.peak_buffered.get()
    );
    d.with(|ctx| ctx.resume_reading(h)).expect("resume the client");
    d.run_until("32 MiB reach the client", || client.borrow().is_lost());
    let c = client.borrow();
    assert_eq!(c.wrong, None);
    assert_eq!(c.received, TOTAL);
    assert!(matches!(c.lost, Some(None)), "client lost with {:?}", c.lost);
    assert!(stats.peak_buffered.get() <= SIDE_BOUND);
    assert!(upstreams.borrow()[0].borrow().resumes >= 1, "the upstream resumed");
    settle(d, &stats, &upstreams);
}

/// Keeps what arrives; on EOF answers `reply` and closes.
struct AnswerOnEof {
    seen: Shared,
    reply: &'static [u8],
}

impl Protocol for AnswerOnEof {
    fn data_received(&mut self, _: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        self.seen.borrow_mut().data.extend_from_slice(data);
        Ok(())
    }
    fn eof_received(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult<bool> {
        self.seen.borrow_mut().events.push("eof");
        ctx.write(ctx.stream(), self.reply)?;
        Ok(false)
    }
    fn connection_lost(&mut self, _: &mut Ctx<'_>, err: Option<ConnectionError>) -> CallbackResult {
        self.seen.borrow_mut().lose(err);
        Ok(())
    }
}

/// Half-close forwarded both ways: the client's EOF reaches the upstream, which still
/// answers through the half-open relay; then the upstream's EOF reaches the client. And
/// the other way round: the upstream half-closes first and the client still sends.
pub fn relay_half_close_both_ways<D: Driver>(d: &mut D) {
    // Client first.
    let (upstreams, factory) =
        recorded(|s| Box::new(AnswerOnEof { seen: s.clone(), reply: b"pong" }));
    let (_up, proxy_a, stats) = proxy(d, factory);
    let client = shared();
    d.connect(&proxy_a.endpoint, Box::new(SendThenEof { seen: client.clone(), message: b"ping" }))
        .expect("connect");
    d.run_until("the client closed", || client.borrow().is_lost());
    settle(d, &stats, &upstreams);
    let server = upstreams.borrow()[0].clone();
    assert_eq!(server.borrow().data, b"ping");
    assert_eq!(server.borrow().events, ["eof", "lost"]);
    assert_eq!(client.borrow().data, b"pong", "the answer came through the half-open relay");
    assert_eq!(client.borrow().events, ["made", "data", "eof", "lost"]);
    assert!(matches!(client.borrow().lost, Some(None)));

    // Upstream first.
    let (upstreams, factory) =
        recorded(|s| Box::new(SendThenEof { seen: s.clone(), message: b"hello" }));
    let (_up, proxy_b, stats) = proxy(d, factory);
    let client = shared();
    d.connect(&proxy_b.endpoint, Box::new(AnswerOnEof { seen: client.clone(), reply: b"bye" }))
        .expect("connect");
    d.run_until("the client closed", || client.borrow().is_lost());
    settle(d, &stats, &upstreams);
    let server = upstreams.borrow()[0].clone();
    assert_eq!(client.borrow().data, b"hello");
    assert_eq!(server.borrow().data, b"bye", "the client's answer came through");
    assert!(matches!(server.borrow().lost, Some(None)));
    assert!(client.borrow().is_lost());
}

/// A reset on either side aborts the other: the client resets and the upstream's
/// connection ends; the upstream resets and the client's connection ends.
pub fn relay_reset_aborts_other_side<D: Driver>(d: &mut D) {
    let (servers, factory) = recorded(|s| Box::new(Recorder::new(s)));
    let (_up, proxy, stats) = proxy(d, factory);

    // The client resets.
    let client = shared();
    let h = d.connect(&proxy.endpoint, Box::new(Recorder::new(&client))).expect("connect");
    // Both relay sides connected (over TLS the upstream server's app can start before
    // the relay's own side has finished its handshake).
    d.run_until("the relay is connected both ways", || {
        servers.borrow().len() == 1 && stats.open.get() == 2
    });
    d.reset(h);
    d.run_until("the upstream connection ends", || servers.borrow()[0].borrow().is_lost());
    assert_eq!(stats.aborted.get(), 1, "the relay aborted its upstream side");

    // The upstream resets.
    let client = shared();
    d.connect(&proxy.endpoint, Box::new(Recorder::new(&client))).expect("connect");
    d.run_until("the relay is connected both ways", || {
        servers.borrow().len() == 2
            && servers.borrow()[1].borrow().handle.is_some()
            && stats.open.get() == 2
    });
    let upstream = servers.borrow()[1].borrow().handle.expect("its handle");
    d.reset(upstream);
    d.run_until("the client's connection ends", || client.borrow().is_lost());
    assert_eq!(stats.aborted.get(), 2, "the relay aborted its client side");
    settle(d, &stats, &servers);
}

/// 1,000 short-lived connections through the proxy (50 at a time), each echoing a
/// message: every relay ends and no transport is left.
pub fn relay_1000_short_lived<D: Driver>(d: &mut D) {
    let (upstreams, factory) = recorded(|s| Echo::boxed(Some(s.clone())));
    let (_up, proxy, stats) = proxy(d, factory);
    let to: Endpoint = proxy.endpoint.clone();
    for batch in 0..20 {
        let clients: Vec<Shared> = (0..50)
            .map(|i| {
                let seen = shared();
                let message = format!("relay {batch}/{i}").into_bytes();
                let client =
                    crate::protocols::Client { seen: seen.clone(), expect: message.len(), message };
                d.connect(&to, Box::new(client)).expect("connect to the proxy");
                seen
            })
            .collect();
        d.run_until("a batch of 50 echoed and closed", || {
            clients.iter().all(|c| c.borrow().is_lost())
        });
        for c in &clients {
            let c = c.borrow();
            assert_eq!(c.received, c.sent, "each client got its message back");
            assert!(matches!(c.lost, Some(None)), "client lost with {:?}", c.lost);
        }
    }
    settle(d, &stats, &upstreams);
    assert_eq!(stats.started.get(), 1000);
    assert_eq!(stats.aborted.get(), 0);
}
