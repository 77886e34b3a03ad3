//! The TLS engine's flow control on the in-memory harness (issue 14): a byte-exact
//! 64 MiB transfer under random chunking and stalls, write back-pressure across both
//! layers, read back-pressure, and a relay into TLS over a slow raw transport
//! (cpython#102792).

#[path = "tls/support.rs"]
mod support;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use aioport::testing::{Event, Sim, SimConfig};
use aioport::tls::TlsSession;
use aioport::{CallbackResult, Ctx, Endpoint, Protocol, ProtocolError, StreamHandle};

use support::*;

// ---------------------------------------------------------------------------------------
// Bulk transfer and flow control
// ---------------------------------------------------------------------------------------

/// Writes `total` bytes of the pattern in random chunks, honouring pause/resume, then
/// closes.
struct Source {
    pattern: Rc<Pattern>,
    total: u64,
    sent: u64,
    rng: XorShift,
    max_chunk: u64,
}

impl Source {
    fn fill(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        let h = ctx.stream();
        while self.sent < self.total && !ctx.is_writing_paused(h)? {
            let n = (1 + self.rng.below(self.max_chunk)).min(self.total - self.sent);
            ctx.write(h, self.pattern.bytes(self.sent, n as usize))?;
            self.sent += n;
        }
        if self.sent == self.total {
            ctx.close(h)?;
        }
        Ok(())
    }
}

impl Protocol for Source {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.fill(ctx)
    }
    fn resume_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.fill(ctx)
    }
}

/// Checks every byte against the pattern and counts them.
struct Verify {
    pattern: Rc<Pattern>,
    count: Rc<Cell<u64>>,
}

impl Protocol for Verify {
    fn data_received(&mut self, _ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        let at = self.count.get();
        if !self.pattern.matches(at, data) {
            return Err(ProtocolError::msg(format!("wrong bytes at offset {at}")));
        }
        self.count.set(at + data.len() as u64);
        Ok(())
    }
}

#[test]
fn bulk_transfer_byte_exact_under_chunking_and_stalls() {
    let pki = Pki::new();
    let setup = Setup::new(&pki);
    let pattern = Rc::new(Pattern::new());
    // The full 64 MiB: ~0.1 s even in a debug build (rustls and ring are optimised there).
    let total = 64 << 20;
    let count = Rc::new(Cell::new(0));
    let source =
        Source { pattern: pattern.clone(), total, sent: 0, rng: XorShift(7), max_chunk: 200_000 };
    let verify = Verify { pattern, count: count.clone() };
    let config = SimConfig::new(3)
        .keep_data(false)
        .max_read(48 * 1024)
        .max_send(40 * 1024)
        .refuse_percent(10)
        .capacity(128 * 1024)
        .latency(Duration::from_micros(100));
    let mut sim = Sim::with_config(t0(), config);
    let client = setup.client().engine(source).unwrap();
    let server = setup.server(&pki).engine(verify).unwrap();
    let (cs, ss) = (client.session(), server.session());
    let start = sim.now();
    let (client_raw, server_raw) = sim.pair(client, server);
    // The receiver stalls again and again: the sender's raw transport, then its app, pause.
    let mut rounds = 0;
    while sim.registry().transport(server_raw.handle()).is_ok() {
        rounds += 1;
        assert!(rounds < 100_000, "no progress: {} of {total} bytes", count.get());
        if rounds % 4 == 0 {
            sim.stall(server_raw, Duration::from_millis(2));
        }
        sim.run_for(Duration::from_millis(1));
    }
    sim.run_until_idle();
    eprintln!("bulk: {} bytes in {rounds} rounds, {:?} virtual", count.get(), sim.now() - start);
    assert_eq!(count.get(), total);
    let app = cs.app().unwrap();
    let shape = shape(&sim, app);
    assert!(shape.contains(&Event::Pause), "the app was paused through both layers");
    assert_eq!(shape.first(), Some(&Event::Made));
    assert_eq!(shape.last(), Some(&Event::Lost(None)));
    assert_eq!(sim.transcript(ss.app().unwrap()).last(), Some(&Event::Lost(None)));
    assert!(sim.transcript(client_raw).contains(&Event::Pause));
    assert!(sim.registry().is_empty());
}

#[test]
fn a_large_write_the_socket_takes_pauses_nobody() {
    let pki = Pki::new();
    let mut sim = Sim::with_config(t0(), SimConfig::new(1).capacity(8 << 20));
    let c = Conn::open(&mut sim, &Setup::new(&pki), &pki, App::default(), App::default());
    sim.run_until_idle();
    let app = c.client_app();
    sim.enter(|ctx| {
        ctx.write(app, vec![1u8; 1 << 20]).unwrap();
        // Encrypted inside the call: nothing is queued on the app's transport.
        assert_eq!(ctx.write_buffer_size(app), Ok(0));
        assert_eq!(ctx.is_writing_paused(app), Ok(false));
    });
    sim.run_until_idle();
    assert_eq!(sim.transcript(app), [Event::Made]);
    assert_eq!(received(&sim, c.server_app()).len(), 1 << 20);
}

#[test]
fn raw_pause_pauses_the_app_and_resume_flushes_in_order() {
    let pki = Pki::new();
    let mut sim = Sim::with_config(t0(), SimConfig::new(5).capacity(16 * 1024));
    let c = Conn::open(&mut sim, &Setup::new(&pki), &pki, App::default(), App::default());
    sim.run_until_idle();
    let app = c.client_app();
    sim.stall(c.server_raw, Duration::from_secs(1));
    let pattern = Pattern::new();
    let mut offset = 0u64;
    // Write until the app's transport is paused: first the raw transport fills and pauses,
    // then the engine refuses plaintext and the app's transport queues it.
    let mut raw_paused_first = false;
    while !sim.enter(|ctx| ctx.is_writing_paused(app)).unwrap() {
        let chunk = pattern.bytes(offset, 10_000);
        offset += 10_000;
        sim.enter(|ctx| ctx.write(app, chunk)).unwrap();
        sim.run_for(Duration::from_millis(1));
        if sim.registry().transport(c.client_raw.handle()).unwrap().is_writing_paused() {
            raw_paused_first = true;
        }
        assert!(offset < 10 << 20, "the app never paused");
    }
    assert!(raw_paused_first);
    let queued = sim.enter(|ctx| ctx.write_buffer_size(app)).unwrap();
    assert!(queued > 64 * 1024, "{queued}");
    assert!(shape(&sim, app).ends_with(&[Event::Pause]));
    // The receiver reads again: everything arrives, in order, and the app resumes.
    sim.run_until_idle();
    assert_eq!(shape(&sim, app), [Event::Made, Event::Pause, Event::Resume]);
    let got = received(&sim, c.server_app());
    assert_eq!(got.len() as u64, offset);
    assert!(pattern.matches(0, &got));
    assert_eq!(sim.enter(|ctx| ctx.write_buffer_size(app)), Ok(0));
}

#[test]
fn read_back_pressure_pauses_raw_reading_past_256_kib() {
    let pki = Pki::new();
    let mut sim = Sim::new(t0(), 9);
    let c = Conn::open(&mut sim, &Setup::new(&pki), &pki, App::default(), App::default());
    sim.run_until_idle();
    let (client_app, server_app) = (c.client_app(), c.server_app());
    sim.enter(|ctx| ctx.pause_reading(server_app)).unwrap();
    let pattern = Pattern::new();
    let total = 4u64 << 20;
    sim.enter(|ctx| ctx.write(client_app, pattern.bytes(0, total as usize))).unwrap();
    sim.run_until_idle();
    // The server app holds at most the high mark plus one raw read of decrypted data;
    // the rest waits in the link and the client's buffers.
    let raw = sim.registry().transport(c.server_raw.handle()).unwrap();
    assert!(!raw.is_reading(), "the engine paused raw reading");
    let held = sim.registry().transport(server_app.handle()).unwrap().heap_bytes();
    assert!(held > 256 * 1024 && held <= 1024 * 1024, "held {held}");
    assert_eq!(sim.transcript(server_app), [Event::Made]);
    // The app reads again: the held data, then the rest, byte-exact; raw reading resumes.
    sim.enter(|ctx| ctx.resume_reading(server_app)).unwrap();
    sim.run_until_idle();
    let got = received(&sim, server_app);
    assert_eq!(got.len() as u64, total);
    assert!(pattern.matches(0, &got));
    assert!(sim.registry().transport(c.server_raw.handle()).unwrap().is_reading());
}

/// cpython#102792: relaying into a TLS transport over a slow raw transport must not
/// hang. Plain source → relay → TLS → verifying sink, with the sink's raw transport
/// stalling; the relay pauses its source whenever the TLS side pauses.
#[test]
fn cpython_102792_relay_over_tls_with_slow_raw_does_not_hang() {
    struct Relay {
        out: Rc<Cell<Option<StreamHandle>>>,
        connect: Option<Box<dyn Protocol>>,
        source_side: Rc<Cell<Option<StreamHandle>>>,
    }
    impl Protocol for Relay {
        fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
            self.source_side.set(Some(ctx.stream()));
            // Nothing can be relayed before the TLS side is up.
            ctx.pause_reading(ctx.stream())?;
            let out = Endpoint::Host { host: "tls-sink".into(), port: 443 };
            ctx.connect(out, self.connect.take().unwrap());
            Ok(())
        }
        fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
            let out = self.out.get().unwrap();
            ctx.write_slice(out, data)?;
            if ctx.is_writing_paused(out)? {
                ctx.pause_reading(ctx.stream())?;
            }
            Ok(())
        }
        fn eof_received(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult<bool> {
            ctx.close(self.out.get().unwrap())?;
            Ok(false)
        }
    }
    /// The relay's TLS side: resumes the source when it has room again.
    struct RelayOut {
        out: Rc<Cell<Option<StreamHandle>>>,
        source_side: Rc<Cell<Option<StreamHandle>>>,
    }
    impl Protocol for RelayOut {
        fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
            self.out.set(Some(ctx.stream()));
            Ok(ctx.resume_reading(self.source_side.get().unwrap())?)
        }
        fn pause_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
            Ok(ctx.pause_reading(self.source_side.get().unwrap())?)
        }
        fn resume_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
            Ok(ctx.resume_reading(self.source_side.get().unwrap())?)
        }
    }

    let pki = Pki::new();
    let setup = Setup::new(&pki);
    for (seed, total) in [(1u64, 1024u64), (2, 1025), (3, 3 << 20)] {
        let pattern = Rc::new(Pattern::new());
        let count = Rc::new(Cell::new(0));
        let config = SimConfig::new(seed)
            .capacity(4096)
            .max_send(1500)
            .latency(Duration::from_millis(1))
            .keep_data(false);
        let mut sim = Sim::with_config(t0(), config);
        let sinks = Rc::new(RefCell::new(Vec::<TlsSession>::new()));
        let (server, p, n, s) = (setup.server(&pki), pattern.clone(), count.clone(), sinks.clone());
        sim.listen(Endpoint::Host { host: "tls-sink".into(), port: 443 }, move || {
            let engine = server.engine(Verify { pattern: p.clone(), count: n.clone() }).unwrap();
            s.borrow_mut().push(engine.session());
            Box::new(engine)
        });
        let (out, source_side) = (Rc::new(Cell::new(None)), Rc::new(Cell::new(None)));
        let relay_out_handle = out.clone();
        let relay_out = RelayOut { out: out.clone(), source_side: source_side.clone() };
        let relay = Relay {
            out,
            connect: Some(Box::new(setup.client().engine(relay_out).unwrap())),
            source_side: source_side.clone(),
        };
        let source = Source {
            pattern: pattern.clone(),
            total,
            sent: 0,
            rng: XorShift(seed),
            max_chunk: 50_000,
        };
        let (src, _) = sim.pair(source, relay);
        // The sink's raw transport stalls now and then.
        let mut rounds = 0;
        while sim.registry().transport(src.handle()).is_ok() || count.get() < total {
            rounds += 1;
            assert!(rounds < 200_000, "relay hung at {} of {total} bytes", count.get());
            if let Some(raw) = sinks.borrow().first().and_then(TlsSession::raw)
                && rounds % 3 == 0
            {
                sim.stall(raw, Duration::from_millis(3));
            }
            sim.run_for(Duration::from_millis(1));
        }
        sim.run_until_idle();
        assert_eq!(count.get(), total, "seed {seed}");
        if total > 1 << 20 {
            // The TLS side paused the relay, which paused its source: both layers engaged.
            let tls_side = shape(&sim, relay_out_handle.get().unwrap());
            assert!(tls_side.contains(&Event::Pause) && tls_side.contains(&Event::Resume));
            assert!(shape(&sim, src).contains(&Event::Pause), "the source was paused");
            assert!(shape(&sim, source_side.get().unwrap()).contains(&Event::Lost(None)));
        }
        assert!(sim.registry().is_empty(), "seed {seed}: everything closed");
    }
}
