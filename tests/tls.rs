//! The TLS engine on the in-memory harness (issue 14): handshake, echo, reproducibility,
//! shutdown both ways, TLS 1.3 half-close, aborts, certificate failures and both timeouts
//! in virtual time. Flow control is in `tls_flow.rs`.
//!
//! Every test runs in virtual time on `Sim`, whose invariant checker (callback grammar,
//! byte conservation on the raw links, `Io::close` once, no work without input) runs
//! after every step.

#[path = "tls/support.rs"]
mod support;

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::rc::Rc;
use std::time::Duration;

use aioport::testing::{Event, Sim, SimConfig};
use aioport::tls::rustls::{self, CertificateError, ProtocolVersion};
use aioport::tls::{TlsError, TlsOptions, TlsSession};
use aioport::{
    CallbackResult, ConnectionError, Ctx, Extra, Handle, HandleError, Io, LoopError, Protocol, StreamHandle,
    WriteError,
};

use support::*;

// ---------------------------------------------------------------------------------------
// Handshake and echo
// ---------------------------------------------------------------------------------------

#[test]
fn handshake_then_app_connection_made_with_tls_info() {
    let pki = Pki::new();
    let mut sim = Sim::new(t0(), 1);
    let c = Conn::open(&mut sim, &Setup::new(&pki), &pki, App::default(), App::default());
    sim.run_until_idle();

    // Each app protocol sees an ordinary connection: made, nothing else yet.
    assert_eq!(sim.transcript(c.client_app()), [Event::Made]);
    assert_eq!(sim.transcript(c.server_app()), [Event::Made]);
    // asyncio's order: the app's connection_made comes after the handshake's records.
    let log = sim.log();
    let first = |h: StreamHandle, e: &dyn Fn(&Event) -> bool| {
        log.iter().position(|(x, ev)| *x == h.handle() && e(ev)).unwrap()
    };
    let is_data = |e: &Event| matches!(e, Event::Data(_));
    assert!(first(c.client_raw, &is_data) < first(c.client_app(), &|e| *e == Event::Made));
    assert!(first(c.server_raw, &is_data) < first(c.server_app(), &|e| *e == Event::Made));

    for session in [&c.client, &c.server] {
        let info = session.info().unwrap();
        assert_eq!(info.version, ProtocolVersion::TLSv1_3);
        assert!(info.supports_half_close());
        assert_eq!(info.alpn.as_deref(), Some(&b"http/1.1"[..]));
        assert_eq!(info.server_name.as_deref(), Some("localhost"));
        assert!(format!("{:?}", info.cipher_suite).starts_with("TLS13_"));
        assert!(session.error().is_none());
    }
    assert_eq!(c.client.info().unwrap().peer_certificates, std::slice::from_ref(&pki.leaf));
    assert!(c.server.info().unwrap().peer_certificates.is_empty());
    // The driver sees only the raw transports.
    assert_eq!(c.client.raw(), Some(c.client_raw));
    assert_eq!(sim.registry().interest(c.client_app().handle()).ok(), None);
}

/// Two sockets in one loop, joined in memory: enough of a driver to insert raw
/// transports with endpoint information, as a real driver does.
#[derive(Default)]
struct Wire {
    peer: std::collections::HashMap<Handle, Handle>,
    inbox: std::collections::HashMap<Handle, Vec<u8>>,
    closed: std::collections::HashSet<Handle>,
}

impl Io for Wire {
    fn try_send(&mut self, h: Handle, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let to = self.peer[&h];
        let inbox = self.inbox.entry(to).or_default();
        bufs.iter().for_each(|b| inbox.extend_from_slice(b));
        Ok(bufs.iter().map(|b| b.len()).sum())
    }
    fn try_recv(&mut self, h: Handle, buf: &mut [u8]) -> io::Result<usize> {
        let inbox = self.inbox.entry(h).or_default();
        if inbox.is_empty() {
            let peer_gone = self.closed.contains(&self.peer[&h]);
            return if peer_gone { Ok(0) } else { Err(io::ErrorKind::WouldBlock.into()) };
        }
        let n = buf.len().min(inbox.len());
        buf[..n].copy_from_slice(&inbox[..n]);
        inbox.drain(..n);
        Ok(n)
    }
    fn shutdown_write(&mut self, _h: Handle) -> io::Result<()> {
        Ok(())
    }
    fn close(&mut self, h: Handle) {
        self.closed.insert(h);
    }
}

#[test]
fn app_factory_gets_the_session_and_the_raw_extra_is_copied() {
    let pki = Pki::new();
    let setup = Setup::new(&pki);
    let seen = Rc::new(RefCell::new(Vec::new()));
    let app = |seen: &Rc<RefCell<Vec<String>>>| {
        let seen = seen.clone();
        move |session: &TlsSession| -> Box<dyn Protocol> {
            let version = session.info().map(|i| i.version);
            let on_made: Box<dyn FnMut(&mut Ctx<'_>) -> CallbackResult> =
                Box::new(move |ctx: &mut Ctx<'_>| {
                    let peer = ctx.extra(ctx.stream())?.peername;
                    seen.borrow_mut().push(format!("{version:?} from {peer:?}"));
                    Ok(())
                });
            Box::new(App { on_made: Some(on_made), ..App::default() })
        }
    };
    let client = setup.client().engine_with(app(&seen)).unwrap();
    let server = setup.server(&pki).engine_with(app(&seen)).unwrap();
    assert!(!client.session().is_established());

    let now = t0();
    let mut reg = aioport::Registry::new(now);
    let (a, b) = ("10.0.0.1:5000".parse().unwrap(), "10.0.0.2:443".parse().unwrap());
    let c = reg.insert_stream(Box::new(client), Extra::default().with_peername(b));
    let s = reg.insert_stream(Box::new(server), Extra::default().with_peername(a));
    let mut wire = Wire::default();
    wire.peer.insert(c.handle(), s.handle());
    wire.peer.insert(s.handle(), c.handle());
    reg.dispatch(now, &mut wire);
    for _ in 0..10 {
        for h in [c.handle(), s.handle()] {
            if reg.interest(h).is_ok_and(|i| i.read) {
                reg.on_readable(h, now, &mut wire).unwrap();
            }
        }
    }
    let mut seen = seen.borrow().clone();
    seen.sort();
    assert_eq!(
        seen,
        [format!("Some(TLSv1_3) from Some({a})"), format!("Some(TLSv1_3) from Some({b})"),]
    );
}

#[test]
fn echo_across_seeds_with_random_chunking_and_partial_sends() {
    let pki = Pki::new();
    let setup = Setup::new(&pki);
    for seed in 0..8 {
        let config = SimConfig::new(seed).max_read(97).max_send(61).refuse_percent(20);
        let mut sim = Sim::with_config(t0(), config);
        let c = Conn::open(&mut sim, &setup, &pki, App::default(), App::echo());
        sim.run_until_idle();
        let app = c.client_app();
        let mut sent = Vec::new();
        for i in 0..20 {
            let line = format!("line {i} of seed {seed}\n").repeat(i + 1);
            sent.extend_from_slice(line.as_bytes());
            sim.enter(|ctx| ctx.write(app, line.into_bytes())).unwrap();
        }
        sim.run_until_idle();
        assert_eq!(received(&sim, app), sent, "seed {seed}");
        assert_eq!(received(&sim, c.server_app()), sent, "seed {seed}");
        sim.enter(|ctx| ctx.close(app)).unwrap();
        sim.run_until_idle();
        assert_eq!(sim.transcript(c.client_raw).last(), Some(&Event::Lost(None)));
        assert_eq!(sim.transcript(c.server_raw).last(), Some(&Event::Lost(None)));
        assert!(sim.registry().is_empty(), "seed {seed}");
    }
}

#[test]
fn same_seed_same_transcripts_and_byte_counts() {
    let pki = Pki::new();
    let setup = Setup::new(&pki);
    let run = || {
        let config = SimConfig::new(42).max_read(50).max_send(70).keep_data(false);
        let mut sim = Sim::with_config(t0(), config);
        let c = Conn::open(&mut sim, &setup, &pki, App::default(), App::echo());
        sim.run_until_idle();
        let app = c.client_app();
        sim.enter(|ctx| ctx.write(app, vec![7u8; 100_000])).unwrap();
        sim.run_until_idle();
        sim.enter(|ctx| ctx.close(app)).unwrap();
        sim.run_until_idle();
        let log: Vec<String> = sim.log().iter().map(|(h, e)| format!("{h:?} {e}")).collect();
        (log, sim.bytes_sent(c.client_raw), sim.bytes_sent(c.server_raw))
    };
    // Ciphertext differs between runs (rustls draws its own randomness); the callbacks
    // and byte counts do not.
    assert_eq!(run(), run());
}

// ---------------------------------------------------------------------------------------
// Shutdown, half-close, abort
// ---------------------------------------------------------------------------------------

#[test]
fn close_notify_from_the_client() {
    let pki = Pki::new();
    let mut sim = Sim::new(t0(), 2);
    let start = sim.now();
    let c = Conn::open(&mut sim, &Setup::new(&pki), &pki, App::default(), App::echo());
    sim.run_until_idle();
    let (client_app, server_app) = (c.client_app(), c.server_app());
    sim.enter(|ctx| {
        ctx.write(client_app, &b"last words"[..]).unwrap();
        ctx.close(client_app).unwrap();
        assert_eq!(ctx.write(client_app, &b"more"[..]), Err(WriteError::Closing));
    });
    sim.run_until_idle();
    // The server got the data, then close_notify as EOF; it closed in turn, sending its
    // own close_notify, which let the client close its raw transport. No timer fired.
    assert_eq!(
        sim.transcript(server_app),
        [Event::Made, Event::data(b"last words"), Event::Eof, Event::Lost(None)]
    );
    assert_eq!(sim.transcript(client_app), [Event::Made, Event::Lost(None)]);
    // asyncio's order: the app's connection_lost comes once the TLS shutdown finished —
    // after the server's close_notify reached the client's raw transport.
    let log = sim.log();
    let at =
        |h: StreamHandle, e: &Event| log.iter().position(|(x, ev)| *x == h.handle() && ev == e);
    let last_raw_data =
        log.iter().rposition(|(x, ev)| *x == c.client_raw.handle() && matches!(ev, Event::Data(_)));
    assert!(at(client_app, &Event::Lost(None)) > last_raw_data);
    for raw in [c.client_raw, c.server_raw] {
        assert!(!sim.transcript(raw).contains(&Event::Timeout));
        assert_eq!(sim.transcript(raw).last(), Some(&Event::Lost(None)));
    }
    assert!(sim.now() - start < Duration::from_secs(1));
    assert!(c.client.error().is_none() && c.server.error().is_none());
    assert!(sim.take_loop_errors().is_empty());
}

#[test]
fn close_notify_from_the_server() {
    let pki = Pki::new();
    let mut sim = Sim::new(t0(), 3);
    let c = Conn::open(&mut sim, &Setup::new(&pki), &pki, App::default(), App::default());
    sim.run_until_idle();
    let (client_app, server_app) = (c.client_app(), c.server_app());
    sim.enter(|ctx| {
        ctx.write(server_app, &b"bye"[..]).unwrap();
        ctx.close(server_app).unwrap();
    });
    sim.run_until_idle();
    assert_eq!(
        sim.transcript(client_app),
        [Event::Made, Event::data(b"bye"), Event::Eof, Event::Lost(None)]
    );
    assert_eq!(sim.transcript(server_app), [Event::Made, Event::Lost(None)]);
    assert_eq!(sim.transcript(c.client_raw).last(), Some(&Event::Lost(None)));
    assert_eq!(sim.transcript(c.server_raw).last(), Some(&Event::Lost(None)));
    assert!(sim.registry().is_empty());
}

#[test]
fn tls13_half_close_write_eof_keeps_reading_and_keep_open_is_honoured() {
    let pki = Pki::new();
    let mut sim = Sim::new(t0(), 4);
    let server = App { keep_open: true, ..App::default() };
    let c = Conn::open(&mut sim, &Setup::new(&pki), &pki, App::default(), server);
    sim.run_until_idle();
    let (client_app, server_app) = (c.client_app(), c.server_app());
    sim.enter(|ctx| {
        assert_eq!(ctx.can_write_eof(client_app), Ok(true));
        // The negotiated parameters are also the app transport's extra info.
        let tls = ctx.extra(client_app).unwrap().tls.clone().expect("TLS info in Extra");
        assert_eq!(Some(&*tls), c.client.info());
        ctx.write(client_app, &b"request"[..]).unwrap();
        ctx.write_eof(client_app).unwrap();
        assert_eq!(ctx.write(client_app, &b"x"[..]), Err(WriteError::AfterEof));
    });
    sim.run_until_idle();
    // The server saw the request and EOF (our close_notify), kept its side open...
    assert_eq!(sim.transcript(server_app), [Event::Made, Event::data(b"request"), Event::Eof]);
    // ...and answers on the half-closed connection, then closes.
    sim.enter(|ctx| {
        ctx.write(server_app, &b"response"[..]).unwrap();
        ctx.close(server_app).unwrap();
    });
    sim.run_until_idle();
    assert_eq!(
        sim.transcript(client_app),
        [Event::Made, Event::data(b"response"), Event::Eof, Event::Lost(None)]
    );
    assert_eq!(sim.transcript(server_app).last(), Some(&Event::Lost(None)));
    assert!(sim.registry().is_empty());
    assert!(!sim.log().iter().any(|(_, e)| *e == Event::Timeout));
}

#[test]
fn tls12_ignores_keep_open_and_refuses_write_eof() {
    let pki = Pki::new();
    let mut setup = Setup::new(&pki);
    setup.versions = TLS12;
    let mut sim = Sim::new(t0(), 5);
    let server = App { keep_open: true, ..App::default() };
    let c = Conn::open(&mut sim, &setup, &pki, App::default(), server);
    sim.run_until_idle();
    let info = c.client.info().unwrap();
    assert_eq!(info.version, ProtocolVersion::TLSv1_2);
    assert!(!info.supports_half_close());
    let (client_app, server_app) = (c.client_app(), c.server_app());
    sim.enter(|ctx| {
        assert_eq!(ctx.can_write_eof(client_app), Ok(false));
        assert_eq!(ctx.can_write_eof(server_app), Ok(false));
    });
    // The peer's close_notify: EOF, and the keep-open answer is ignored.
    sim.enter(|ctx| ctx.close(client_app)).unwrap();
    sim.run_until_idle();
    assert_eq!(sim.transcript(server_app), [Event::Made, Event::Eof, Event::Lost(None)]);
    assert!(sim.registry().is_empty());

    // write_eof has no TLS 1.2 meaning: refused at the call (asyncio raises
    // NotImplementedError), and what was written just before is not lost.
    let c = Conn::open(&mut sim, &setup, &pki, App::default(), App::default());
    sim.run_until_idle();
    let (client_app, server_app) = (c.client_app(), c.server_app());
    sim.enter(|ctx| {
        ctx.write(client_app, &b"last words"[..]).unwrap();
        assert!(matches!(ctx.write_eof(client_app), Err(HandleError::WrongKind { .. })));
        assert!(!ctx.is_closing(client_app).unwrap());
        // The transport is unchanged: it still writes, and close() ends it cleanly.
        ctx.write(client_app, &b", really"[..]).unwrap();
        ctx.close(client_app).unwrap();
    });
    sim.run_until_idle();
    assert_eq!(
        sim.transcript(server_app),
        [Event::Made, Event::data(b"last words, really"), Event::Eof, Event::Lost(None)]
    );
    assert_eq!(sim.transcript(client_app).last(), Some(&Event::Lost(None)));
    assert!(c.client.error().is_none());
    assert!(sim.registry().is_empty());
}

#[test]
fn tls13_write_eof_right_after_a_write_sends_the_data_first() {
    let pki = Pki::new();
    let mut sim = Sim::new(t0(), 9);
    let c = Conn::open(&mut sim, &Setup::new(&pki), &pki, App::default(), App::default());
    sim.run_until_idle();
    let (client_app, server_app) = (c.client_app(), c.server_app());
    sim.enter(|ctx| {
        ctx.write(client_app, &b"last words"[..]).unwrap();
        ctx.write_eof(client_app).unwrap();
        // Idempotent, as over TCP.
        ctx.write_eof(client_app).unwrap();
    });
    sim.run_until_idle();
    // The server's app answers EOF with "close" (the default): the shutdown completes.
    assert_eq!(
        sim.transcript(server_app),
        [Event::Made, Event::data(b"last words"), Event::Eof, Event::Lost(None)]
    );
    assert_eq!(sim.transcript(client_app).last(), Some(&Event::Lost(None)));
    assert!(sim.registry().is_empty());
}

#[test]
fn abort_with_data_queued_drops_it_and_skips_the_shutdown() {
    let pki = Pki::new();
    let mut sim = Sim::with_config(t0(), SimConfig::new(6).capacity(8192));
    let start = sim.now();
    let c = Conn::open(&mut sim, &Setup::new(&pki), &pki, App::default(), App::default());
    sim.run_until_idle();
    let (client_app, server_app) = (c.client_app(), c.server_app());
    sim.stall(c.server_raw, Duration::from_secs(3600));
    // The first write goes to the raw transport whole and pauses it; the next ones wait
    // in the app's transport.
    for _ in 0..5 {
        sim.enter(|ctx| ctx.write(client_app, vec![0u8; 64 * 1024])).unwrap();
        sim.run_for(Duration::from_millis(1));
    }
    assert!(sim.enter(|ctx| ctx.write_buffer_size(client_app)).unwrap() >= 2 * 64 * 1024);
    sim.enter(|ctx| ctx.abort(client_app)).unwrap();
    sim.run_for(Duration::from_millis(1));
    // Aborted at once: no close_notify, no 30 s wait.
    assert_eq!(sim.transcript(client_app).last(), Some(&Event::Lost(None)));
    assert_eq!(sim.transcript(c.client_raw).last(), Some(&Event::Lost(None)));
    assert!(sim.now() - start < Duration::from_secs(1));
    // The server reads what had reached it, then a TCP EOF without close_notify.
    sim.run_until_idle();
    let shape = shape(&sim, server_app);
    assert_eq!(shape, [Event::Made, Event::Eof, Event::Lost(None)]);
}

#[test]
fn session_abort_skips_the_shutdown_with_nothing_queued() {
    let pki = Pki::new();
    let mut sim = Sim::new(t0(), 7);
    let c = Conn::open(&mut sim, &Setup::new(&pki), &pki, App::default(), App::default());
    sim.run_until_idle();
    let session = c.client.clone();
    sim.enter(|ctx| session.abort(ctx)).unwrap();
    sim.run_until_idle();
    assert_eq!(sim.transcript(c.client_app()), [Event::Made, Event::Lost(None)]);
    assert_eq!(sim.transcript(c.client_raw).last(), Some(&Event::Lost(None)));
    // The server's app sees EOF (TCP, no close_notify) and closes.
    assert_eq!(sim.transcript(c.server_app()), [Event::Made, Event::Eof, Event::Lost(None)]);
    assert!(sim.registry().is_empty());
}

#[test]
fn abort_mid_handshake_reaches_no_app() {
    let pki = Pki::new();
    let setup = Setup::new(&pki);
    // The client's raw transport is aborted after its ClientHello went out.
    let mut sim = Sim::new(t0(), 8);
    let c = Conn::open(&mut sim, &setup, &pki, App::default(), App::default());
    let session = c.client.clone();
    sim.enter(|ctx| session.abort(ctx)).unwrap();
    sim.run_until_idle();
    assert_eq!(shape(&sim, c.client_raw), [Event::Made, Event::Lost(None)]);
    assert_eq!(c.client.error(), Some(TlsError::ConnectionLost(None)));
    // The server read the ClientHello, answered into a closed connection (or saw EOF
    // first): a failed handshake, no app on either side.
    assert!(
        matches!(c.server.error(), Some(TlsError::PeerClosed | TlsError::ConnectionLost(Some(_)))),
        "{:?}",
        c.server.error()
    );
    assert!(c.client.app().is_none() && c.server.app().is_none());
    // A peer that closes is not worth a log line (asyncio's rule for OSError).
    assert!(sim.take_loop_errors().is_empty());
    assert!(sim.registry().is_empty());

    // The same from the server side, one step into the handshake, with a reset.
    let mut sim = Sim::new(t0(), 9);
    let c = Conn::open(&mut sim, &setup, &pki, App::default(), App::default());
    sim.step();
    sim.reset(c.server_raw);
    sim.run_until_idle();
    assert!(c.client.app().is_none() && c.server.app().is_none());
    assert!(!c.client.is_established());
    assert!(c.client.error().is_some() && c.server.error().is_some());
    assert!(sim.registry().is_empty());
}

// ---------------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------------

/// Both engines failed the handshake; no app exists; the server's failure reached the
/// loop's error queue. Returns (client error, server error).
fn failed_handshake(sim: &mut Sim, c: &Conn) -> (TlsError, TlsError) {
    sim.run_until_idle();
    assert!(c.client.app().is_none() && c.server.app().is_none());
    assert_eq!(shape(sim, c.client_raw).len(), 2, "made, lost: {:?}", sim.transcript(c.client_raw));
    let client = raw_failed_with(sim, c.client_raw);
    let server = raw_failed_with(sim, c.server_raw);
    assert_eq!(c.client.error().as_ref(), Some(&client));
    let errors = sim.take_loop_errors();
    match errors.as_slice() {
        [LoopError::Reported { handle, error }] => {
            assert_eq!(*handle, Some(c.server_raw.handle()));
            assert_eq!(protocol_error_source(error), Some(&server));
        }
        other => panic!("expected the server's failure in the error queue: {other:?}"),
    }
    (client, server)
}

#[test]
fn bad_certificate_unknown_issuer() {
    let pki = Pki::new();
    let other = Pki::with_ca_name("another CA");
    let mut setup = Setup::new(&pki);
    setup.trust = other.ca.clone();
    let mut sim = Sim::new(t0(), 10);
    let c = Conn::open(&mut sim, &setup, &pki, App::default(), App::default());
    let (client, server) = failed_handshake(&mut sim, &c);
    assert_eq!(
        client,
        TlsError::Handshake(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer))
    );
    assert!(client.is_certificate_error() && server.is_certificate_error(), "{server}");
    assert!(matches!(client.to_connection_error(), ConnectionError::Tls(_)));
}

#[test]
fn wrong_server_name() {
    let pki = Pki::new();
    let mut setup = Setup::new(&pki);
    setup.server_name = "example.com";
    let mut sim = Sim::new(t0(), 11);
    let c = Conn::open(&mut sim, &setup, &pki, App::default(), App::default());
    let (client, _) = failed_handshake(&mut sim, &c);
    assert!(
        matches!(
            client,
            TlsError::Handshake(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            ))
        ),
        "{client:?}"
    );
}

#[test]
fn expired_certificate_by_the_virtual_clock() {
    let pki = Pki::new();
    let mut setup = Setup::new(&pki);
    setup.time = EXPIRED_UNIX;
    let mut sim = Sim::new(t0(), 12);
    let c = Conn::open(&mut sim, &setup, &pki, App::default(), App::default());
    let (client, _) = failed_handshake(&mut sim, &c);
    assert!(
        matches!(
            client,
            TlsError::Handshake(rustls::Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. }
            ))
        ),
        "{client:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Timeouts, in virtual time
// ---------------------------------------------------------------------------------------

#[test]
fn handshake_timeout_client_and_server() {
    let pki = Pki::new();
    let setup = Setup::new(&pki);
    // A client whose peer never answers its ClientHello.
    let mut sim = Sim::new(t0(), 13);
    let start = sim.now();
    let engine = setup.client().engine(App::default()).unwrap();
    let session = engine.session();
    let (raw, peer) = sim.open(engine);
    sim.run_until_idle();
    assert_eq!(sim.now() - start, Duration::from_secs(60));
    assert_eq!(shape(&sim, raw), [Event::Made, Event::Timeout, shape(&sim, raw)[2].clone()]);
    assert_eq!(raw_failed_with(&sim, raw), TlsError::HandshakeTimeout(Duration::from_secs(60)));
    assert_eq!(session.error(), Some(TlsError::HandshakeTimeout(Duration::from_secs(60))));
    assert!(!sim.peer_received(peer).is_empty(), "the ClientHello went out");
    assert!(sim.peer_saw_eof(peer));
    assert!(sim.take_loop_errors().is_empty(), "client failures are the opener's to handle");

    // A server whose client never speaks, with a shorter timeout: the error queue hears.
    let mut setup = Setup::new(&pki);
    setup.options = TlsOptions::default().with_handshake_timeout(Some(Duration::from_secs(5)));
    let mut sim = Sim::new(t0(), 14);
    let start = sim.now();
    let (raw, _peer) = sim.open(setup.server(&pki).engine(App::default()).unwrap());
    sim.run_until_idle();
    assert_eq!(sim.now() - start, Duration::from_secs(5));
    let timeout = TlsError::HandshakeTimeout(Duration::from_secs(5));
    assert_eq!(raw_failed_with(&sim, raw), timeout);
    assert!(matches!(timeout.to_connection_error(), ConnectionError::Timeout(_)));
    match sim.take_loop_errors().as_slice() {
        [LoopError::Reported { error, .. }] => {
            assert_eq!(protocol_error_source(error), Some(&timeout))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn shutdown_timeout_when_the_peer_never_answers_close_notify() {
    let pki = Pki::new();
    let mut sim = Sim::new(t0(), 15);
    // The server keeps its side open after EOF and never closes: no close_notify back.
    let server = App { keep_open: true, ..App::default() };
    let c = Conn::open(&mut sim, &Setup::new(&pki), &pki, App::default(), server);
    sim.run_until_idle();
    let client_app = c.client_app();
    let closed_at = sim.now();
    sim.enter(|ctx| ctx.close(client_app)).unwrap();
    sim.run_until_idle();
    assert_eq!(sim.now() - closed_at, Duration::from_secs(30));
    // The app's connection_lost waits for the TLS shutdown and says it timed out
    // (asyncio's TimeoutError).
    let timeout = TlsError::ShutdownTimeout(Duration::from_secs(30));
    assert_eq!(
        sim.transcript(client_app),
        [Event::Made, Event::Lost(Some(timeout.to_connection_error()))]
    );
    assert_eq!(raw_failed_with(&sim, c.client_raw), timeout);
    assert_eq!(c.client.error(), Some(timeout));
    assert_eq!(sim.transcript(c.server_app()), [Event::Made, Event::Eof]);
    // Only client-side: nothing for the error queue.
    assert!(sim.take_loop_errors().is_empty());
}

#[test]
fn shutdown_timeout_while_the_flush_is_stuck_reaches_the_app() {
    let pki = Pki::new();
    let mut setup = Setup::new(&pki);
    setup.options = TlsOptions::default().with_shutdown_timeout(Some(Duration::from_secs(2)));
    let mut sim = Sim::with_config(t0(), SimConfig::new(16).capacity(4096));
    let c = Conn::open(&mut sim, &setup, &pki, App::default(), App::default());
    sim.run_until_idle();
    let client_app = c.client_app();
    sim.stall(c.server_raw, Duration::from_secs(3600));
    sim.enter(|ctx| {
        ctx.write(client_app, vec![0u8; 1 << 20]).unwrap();
        ctx.write(client_app, vec![0u8; 1 << 20]).unwrap();
        ctx.close(client_app).unwrap();
    });
    sim.run_for(Duration::from_secs(10));
    let timeout = TlsError::ShutdownTimeout(Duration::from_secs(2));
    assert_eq!(
        sim.transcript(client_app).last(),
        Some(&Event::Lost(Some(timeout.to_connection_error())))
    );
    assert_eq!(raw_failed_with(&sim, c.client_raw), timeout);
}

// ---------------------------------------------------------------------------------------
// A protocol that connects from a callback hears the handshake's outcome
// ---------------------------------------------------------------------------------------

type Answer = Rc<RefCell<Vec<(&'static str, Result<StreamHandle, ConnectionError>)>>>;

/// Opens one TLS connection with `Ctx::connect` and records `request_completed`, noting
/// whether the app's `connection_made` (its handle set) came first.
struct Opener {
    engine: Option<aioport::tls::TlsEngine>,
    app_handle: Rc<RefCell<Option<StreamHandle>>>,
    answer: Answer,
}

impl Protocol for Opener {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        let engine = self.engine.take().expect("once");
        let endpoint = aioport::Endpoint::Addr("127.0.0.1:443".parse().unwrap());
        ctx.connect(endpoint, Box::new(engine));
        Ok(())
    }
    fn request_completed(
        &mut self,
        _: &mut Ctx<'_>,
        _: aioport::RequestId,
        outcome: Result<StreamHandle, ConnectionError>,
    ) -> CallbackResult {
        let when = if self.app_handle.borrow().is_some() { "after made" } else { "before made" };
        self.answer.borrow_mut().push((when, outcome));
        Ok(())
    }
}

fn connect_from_a_callback(
    setup: &Setup,
    pki: &Pki,
) -> (Answer, TlsSession, Rc<RefCell<Option<StreamHandle>>>) {
    let mut sim = Sim::new(t0(), 21);
    let server = setup.server(pki);
    sim.listen(aioport::Endpoint::Addr("127.0.0.1:443".parse().unwrap()), move || {
        Box::new(server.engine(App::echo()).unwrap())
    });
    let app = App::default();
    let app_handle = app.handle.clone();
    let engine = setup.client().engine(app).unwrap();
    let session = engine.session();
    let answer: Answer = Rc::new(RefCell::new(Vec::new()));
    sim.open(Opener {
        engine: Some(engine),
        app_handle: app_handle.clone(),
        answer: answer.clone(),
    });
    sim.run_until_idle();
    (answer, session, app_handle)
}

#[test]
fn ctx_connect_answer_waits_for_the_handshake_and_names_the_app_transport() {
    let pki = Pki::new();
    let (answer, session, app_handle) = connect_from_a_callback(&Setup::new(&pki), &pki);
    let answer = answer.borrow();
    let app = session.app().expect("handshake completed");
    assert_eq!(app_handle.borrow().as_ref(), Some(&app));
    assert_eq!(*answer, [("after made", Ok(app))], "one answer, after the app's connection_made");
}

#[test]
fn ctx_connect_answer_is_the_handshake_failure() {
    let pki = Pki::new();
    let mut setup = Setup::new(&pki);
    setup.server_name = "example.com";
    let (answer, session, app_handle) = connect_from_a_callback(&setup, &pki);
    let failure = session.error().expect("the handshake failed");
    assert!(failure.is_certificate_error(), "{failure:?}");
    assert_eq!(*answer.borrow(), [("before made", Err(failure.to_connection_error()))]);
    assert!(app_handle.borrow().is_none(), "the app saw nothing");
}
