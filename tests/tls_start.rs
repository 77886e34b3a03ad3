//! `Ctx::start_tls` on the in-memory harness (issue 15): a plaintext prelude, the line
//! `STARTTLS\r\n`, then TLS on the same connection — with the first side paused for
//! writing at the switch and its TLS records queued behind its plaintext, the second
//! side handing the records it read past the line to `start_tls`. TLS 1.3 and 1.2,
//! several seeds with random read chunking and partial sends; the paused state inherited
//! by the engine (gh-109051); the outcome heard by a controlling protocol; a failed
//! handshake. The same scenario runs on every driver in the conformance suite
//! (`start_tls_*`).

#[path = "tls/support.rs"]
mod support;
#[path = "support/starttls.rs"]
mod starttls;

use std::cell::RefCell;
use std::rc::Rc;

use aioport::testing::{Event, Sim, SimConfig};
use aioport::tls::rustls::SupportedProtocolVersion;
use aioport::tls::{TlsEngine, TlsError, TlsSession};
use aioport::{CallbackResult, ConnectionError, Ctx, Protocol, RequestId, StreamHandle};

use starttls::{TlsSide, UpgradeSeen, Upgrader};
use support::*;

const PRELUDE: usize = 1 << 20;
const MESSAGE: usize = 100_000;

/// The client's app over TLS: sends a message, closes once the echo is back whole.
struct EchoClient {
    message: Vec<u8>,
    got: Rc<RefCell<Vec<u8>>>,
}

impl Protocol for EchoClient {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        Ok(ctx.write_slice(ctx.stream(), &self.message)?)
    }
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        let mut got = self.got.borrow_mut();
        got.extend_from_slice(data);
        if got.len() == self.message.len() {
            ctx.close(ctx.stream())?;
        }
        Ok(())
    }
}

struct Run {
    sim: Sim,
    client: Rc<RefCell<UpgradeSeen>>,
    server: Rc<RefCell<UpgradeSeen>>,
    echoed: Rc<RefCell<Vec<u8>>>,
    message: Vec<u8>,
}

impl Run {
    fn session(seen: &Rc<RefCell<UpgradeSeen>>) -> TlsSession {
        seen.borrow().session.clone().expect("switched")
    }
}

/// One STARTTLS connection on the harness, run until idle.
fn run(
    config: SimConfig,
    versions: &'static [&'static SupportedProtocolVersion],
    client_first: bool,
    switch_on_pause: bool,
) -> Run {
    let pki = Pki::new();
    let mut setup = Setup::new(&pki);
    setup.versions = versions;
    let message = Pattern::new().bytes(7, MESSAGE);
    let echoed = Rc::new(RefCell::new(Vec::new()));
    let app = EchoClient { message: message.clone(), got: echoed.clone() };
    let (mut client, client_seen) =
        Upgrader::new(TlsSide::Client(setup.client()), client_first, PRELUDE, Box::new(app));
    let (mut server, server_seen) = Upgrader::new(
        TlsSide::Server(setup.server(&pki)),
        !client_first,
        PRELUDE,
        Box::new(App::echo()),
    );
    client.switch_on_pause = switch_on_pause;
    server.switch_on_pause = switch_on_pause;
    let mut sim = Sim::with_config(t0(), config);
    sim.pair(client, server);
    sim.run_until_idle();
    Run { sim, client: client_seen, server: server_seen, echoed, message }
}

/// What every STARTTLS run must show: the prelude read whole and exactly (nothing lost,
/// nothing of the TLS records taken as plaintext), the first side paused at its switch,
/// the handshake and the echo over TLS, both layers ended cleanly.
fn check(r: &mut Run, client_first: bool) {
    let (first, second) = if client_first { (&r.client, &r.server) } else { (&r.server, &r.client) };
    assert_eq!(first.borrow().paused_at_switch, Some(true), "the first side is paused");
    assert_eq!(second.borrow().paused_at_switch, Some(false));
    let prelude = first.borrow().prelude_written;
    assert!(prelude < PRELUDE, "the first side paused before the whole prelude");
    assert_eq!(second.borrow().line_at, Some(prelude));
    assert_eq!(second.borrow().plaintext_read, prelude + starttls::MARKER.len());
    assert_eq!(second.borrow().wrong_at, None, "the prelude arrived byte for byte");
    assert_eq!(first.borrow().early, 0);
    for seen in [&r.client, &r.server] {
        let s = seen.borrow();
        assert!(s.lost_before_switch.is_none(), "the old protocol heard nothing more");
        let session = s.session.as_ref().unwrap();
        assert!(session.error().is_none(), "{:?}", session.error());
        assert!(session.info().is_some());
        assert_eq!(session.raw(), s.raw, "the engine took the same raw transport over");
    }
    assert!(*r.echoed.borrow() == r.message, "the echo over TLS is the message");
    let (client_app, server_app) = (
        Run::session(&r.client).app().expect("client app"),
        Run::session(&r.server).app().expect("server app"),
    );
    assert_eq!(shape(&r.sim, client_app), [Event::Made, Event::Lost(None)]);
    assert_eq!(shape(&r.sim, server_app), [Event::Made, Event::Eof, Event::Lost(None)]);
    assert_eq!(received(&r.sim, server_app), r.message);
    assert!(r.sim.registry().is_empty(), "every transport removed");
    let errors = r.sim.take_loop_errors();
    assert!(errors.is_empty(), "{errors:?}");
}

/// gh-109051: the first side's raw transport is paused at the switch, so the engine's
/// first flow callback is `pause_writing` — and every pause is matched by one resume.
fn check_pause_inherited(r: &Run, client_first: bool) {
    let first = if client_first { &r.client } else { &r.server };
    let raw = first.borrow().raw.unwrap();
    let flow: Vec<Event> = r
        .sim
        .transcript(raw)
        .into_iter()
        .filter(|e| matches!(e, Event::Pause | Event::Resume))
        .collect();
    assert_eq!(flow.first(), Some(&Event::Pause), "{flow:?}");
    let pauses = flow.iter().filter(|e| **e == Event::Pause).count();
    assert_eq!(pauses, flow.len() - pauses, "pause and resume alternate: {flow:?}");
}

#[test]
fn start_tls_client_first_tls13_and_tls12_across_seeds() {
    let mut early = 0;
    for versions in [TLS13, TLS12] {
        for seed in 1..=4 {
            let config = SimConfig::new(seed).max_read(70_000).max_send(50_000);
            let mut r = run(config, versions, true, false);
            check(&mut r, true);
            check_pause_inherited(&r, true);
            early += r.server.borrow().early;
        }
    }
    // Without read chunking the ClientHello arrives in the read that ends the line.
    let mut r = run(SimConfig::new(9), TLS13, true, false);
    check(&mut r, true);
    let e = r.server.borrow().early;
    assert!(e > 0 || early > 0, "some run handed start_tls the records read past the line");
}

#[test]
fn start_tls_server_first_tls13_and_tls12_across_seeds() {
    for versions in [TLS13, TLS12] {
        for seed in 1..=4 {
            let config = SimConfig::new(seed).max_read(70_000).max_send(50_000);
            let mut r = run(config, versions, false, false);
            check(&mut r, false);
            check_pause_inherited(&r, false);
        }
    }
}

/// The old protocol received `pause_writing` and switched in it: the engine receives
/// `pause_writing` again as its first callback (the paused state is inherited, not
/// replayed to the old protocol), and one `resume_writing` when the raw transport drains.
#[test]
fn gh_109051_switch_inside_pause_writing_gives_the_engine_its_own_pause() {
    for client_first in [true, false] {
        let mut r = run(SimConfig::new(3), TLS13, client_first, true);
        check(&mut r, client_first);
        let first = if client_first { &r.client } else { &r.server };
        let raw = first.borrow().raw.unwrap();
        let flow: Vec<Event> = r
            .sim
            .transcript(raw)
            .into_iter()
            .filter(|e| matches!(e, Event::Pause | Event::Resume))
            .collect();
        // The old protocol's pause, the engine's inherited pause, then one resume.
        assert_eq!(flow[..3], [Event::Pause, Event::Pause, Event::Resume], "{flow:?}");
    }
}

/// Upgrades two transports from a third one's callback: the controller hears each
/// handshake's outcome in `request_completed` — the app's transport, after its
/// `connection_made` — as it would for a TLS connection it opened.
struct Controller {
    targets: Vec<(StreamHandle, TlsEngine)>,
    ids: Rc<RefCell<Vec<RequestId>>>,
}

impl Protocol for Controller {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        for (h, engine) in self.targets.drain(..) {
            let id = ctx.start_tls(h, engine, b"")?;
            self.ids.borrow_mut().push(id);
        }
        Ok(())
    }
}

struct Quiet;
impl Protocol for Quiet {}

#[test]
fn start_tls_from_another_transport_reports_the_outcome_to_the_caller() {
    let pki = Pki::new();
    let setup = Setup::new(&pki);
    let mut sim = Sim::new(t0(), 11);
    let (a, b) = sim.pair(Quiet, Quiet);
    let client = setup.client().engine(App::default()).unwrap();
    let server = setup.server(&pki).engine(App::default()).unwrap();
    let (cs, ss) = (client.session(), server.session());
    let ids = Rc::new(RefCell::new(Vec::new()));
    let controller = Controller { targets: vec![(a, client), (b, server)], ids: ids.clone() };
    let (ctrl, _peer) = sim.open(controller);
    sim.run_until_idle();
    let (ca, sa) = (cs.app().expect("client app"), ss.app().expect("server app"));
    let ids = ids.borrow();
    let requests: Vec<Event> = sim
        .transcript(ctrl)
        .into_iter()
        .filter(|e| matches!(e, Event::Request(..)))
        .collect();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert!(requests.contains(&Event::Request(ids[0], Ok(ca))));
    assert!(requests.contains(&Event::Request(ids[1], Ok(sa))));
    assert_eq!(sim.transcript(ca), [Event::Made]);

    // A failed handshake: the caller hears the error; the app saw nothing.
    let mut wrong = Setup::new(&pki);
    wrong.server_name = "elsewhere.example";
    let (a, b) = sim.pair(Quiet, Quiet);
    let client = wrong.client().engine(App::default()).unwrap();
    let server = setup.server(&pki).engine(App::default()).unwrap();
    let cs = client.session();
    let ids = Rc::new(RefCell::new(Vec::new()));
    let controller = Controller { targets: vec![(a, client), (b, server)], ids: ids.clone() };
    let (ctrl, _peer) = sim.open(controller);
    sim.run_until_idle();
    assert!(cs.app().is_none());
    assert!(matches!(cs.error(), Some(TlsError::Handshake(_))), "{:?}", cs.error());
    let failed = sim.transcript(ctrl).into_iter().find_map(|e| match e {
        Event::Request(id, Err(e)) if id == ids.borrow()[0] => Some(e),
        _ => None,
    });
    assert!(matches!(failed, Some(ConnectionError::Tls(_))), "{failed:?}");
    assert!(matches!(raw_failed_with(&sim, a), TlsError::Handshake(_)));
}

/// A refused call changes nothing: a stale handle is an error and the engine is dropped
/// unused.
#[test]
fn start_tls_on_a_stale_handle_is_refused() {
    let pki = Pki::new();
    let setup = Setup::new(&pki);
    let mut sim = Sim::new(t0(), 12);
    let (a, _b) = sim.pair(Quiet, Quiet);
    sim.enter(|ctx| ctx.abort(a)).unwrap();
    sim.run_until_idle();
    let engine = setup.client().engine(App::default()).unwrap();
    let session = engine.session();
    let r = sim.enter(|ctx| ctx.start_tls(a, engine, b""));
    assert_eq!(r, Err(aioport::HandleError::Stale));
    assert!(session.raw().is_none() && session.error().is_none());
}

// ---------------------------------------------------------------------------------------
// The poll loop's `Loop::start_tls` (asyncio's `await loop.start_tls(...)`)
// ---------------------------------------------------------------------------------------

/// Server side of a STARTTLS exchange: plaintext until `STARTTLS\r\n` (answered with
/// `OK\r\n` first, in plaintext), then TLS with `app`.
struct StartTlsServer {
    tls: Option<(aioport::tls::TlsServer, App)>,
    line: Vec<u8>,
}

impl Protocol for StartTlsServer {
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        self.line.extend_from_slice(data);
        let Some(end) = self.line.windows(2).position(|w| w == b"\r\n") else { return Ok(()) };
        let rest = self.line.split_off(end + 2);
        assert_eq!(self.line, starttls::MARKER);
        let (tls, app) = self.tls.take().expect("once");
        ctx.write_slice(ctx.stream(), b"OK\r\n")?;
        ctx.start_tls(ctx.stream(), tls.engine(app)?, &rest)?;
        Ok(())
    }
}

/// The client before TLS: records what it reads in plaintext.
struct Plain(Rc<RefCell<Vec<u8>>>);

impl Protocol for Plain {
    fn data_received(&mut self, _: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        self.0.borrow_mut().extend_from_slice(data);
        Ok(())
    }
}

#[test]
fn poll_loop_start_tls_returns_after_the_handshake() {
    use aioport_poll::{Loop, ServerOptions};
    let limit = std::time::Duration::from_secs(20);
    let pki = Pki::new();
    let setup = Setup::new(&pki);
    let mut lp = Loop::new().unwrap();
    let server = setup.server(&pki);
    let srv = lp
        .create_server(
            "127.0.0.1:0",
            move || {
                let tls = Some((server.clone(), App::echo()));
                Box::new(StartTlsServer { tls, line: Vec::new() })
            },
            ServerOptions::default(),
        )
        .unwrap();
    let plain = Rc::new(RefCell::new(Vec::new()));
    let h = lp
        .create_connection(aioport::Endpoint::Addr(srv.addr()), Box::new(Plain(plain.clone())))
        .unwrap();
    lp.with(|ctx| ctx.write_slice(h, starttls::MARKER)).unwrap();
    let p = plain.clone();
    lp.run_until_timeout(move || p.borrow().ends_with(b"OK\r\n"), limit).unwrap();
    assert_eq!(*plain.borrow(), b"OK\r\n");

    let echoed = Rc::new(RefCell::new(Vec::new()));
    let message = b"over TLS now".to_vec();
    let client = EchoClient { message: message.clone(), got: echoed.clone() };
    let (app, session) = lp.start_tls(h, setup.client().engine(client).unwrap(), b"").unwrap();
    assert_eq!(session.app(), Some(app));
    assert_eq!(session.raw(), Some(h));
    assert_eq!(session.info().unwrap().version, aioport::tls::rustls::ProtocolVersion::TLSv1_3);
    let e = echoed.clone();
    lp.run_until_timeout(move || e.borrow().len() == message.len(), limit).unwrap();
    assert_eq!(*echoed.borrow(), b"over TLS now");
    assert_eq!(*plain.borrow(), b"OK\r\n", "the plaintext protocol heard nothing more");

    // Closing the app runs the TLS shutdown; both raw transports end.
    lp.with(|ctx| ctx.close(app)).unwrap();
    for _ in 0..2000 {
        if lp.is_empty() {
            break;
        }
        lp.run_once(Some(std::time::Duration::from_millis(10))).unwrap();
    }
    assert!(lp.is_empty(), "every transport ended");
    assert!(session.error().is_none());

    // The handle is stale now: refused, and the engine is dropped unused.
    let engine = setup.client().engine(App::default()).unwrap();
    let refused = lp.start_tls(h, engine, b"");
    assert!(
        matches!(refused, Err(aioport_poll::Error::StartTls(aioport::HandleError::Stale))),
        "{refused:?}"
    );
}
