//! TLS on the poll loop over real loopback sockets (issue 14): `create_tls_connection`
//! returns after the handshake, or fails with a typed TLS error (bad certificate, wrong
//! name, handshake timeout); 64 MiB byte-exact; close_notify both ways; a server-side
//! handshake failure reaches the loop's error hook; a protocol that connects from a
//! callback hears the handshake's outcome; a Unix socket client against rustls' own
//! blocking server.
//!
//! Every wait is bounded (`run_until_timeout`, short handshake timeouts); 127.0.0.1 only.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use aioport::tls::rustls::crypto::ring;
use aioport::tls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use aioport::tls::rustls::{self, CertificateError, ClientConfig, RootCertStore, ServerConfig};
use aioport::tls::{TlsClient, TlsError, TlsOptions, TlsServer, TlsSession};
use aioport::{
    CallbackResult, ConnectionError, Ctx, Endpoint, LoopError, Protocol, RequestId, StreamHandle,
};
use aioport_poll::{Error, ErrorReport, Loop, ServerOptions};

/// No wait in this file is longer.
const LIMIT: Duration = Duration::from_secs(30);

/// A CA and a "localhost" leaf it signed.
struct Pki {
    ca: CertificateDer<'static>,
    leaf: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl Pki {
    fn new() -> Self {
        Self::with_ca_name("aioport-poll test CA")
    }

    /// Two CAs with one name make the verifier try the wrong key (a bad signature rather
    /// than an unknown issuer).
    fn with_ca_name(name: &str) -> Self {
        let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        let leaf = params.signed_by(&key, &ca).unwrap();
        Pki {
            ca: ca.der().clone(),
            leaf: leaf.der().clone(),
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        }
    }

    fn server_config(&self) -> Arc<ServerConfig> {
        let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![self.leaf.clone()], PrivateKeyDer::Pkcs8(self.key.clone_key()))
            .unwrap();
        Arc::new(config)
    }

    fn server(&self) -> TlsServer {
        TlsServer::new(self.server_config())
    }

    /// A client trusting this PKI's CA, verifying `name`.
    fn client(&self, name: &str) -> TlsClient {
        client_trusting(&self.ca, name)
    }
}

fn client_trusting(ca: &CertificateDer<'static>, name: &str) -> TlsClient {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsClient::new(Arc::new(config), name).unwrap()
}

/// What an app protocol saw.
#[derive(Default, Debug)]
struct Seen {
    events: Vec<&'static str>,
    data: Vec<u8>,
    lost: Option<Option<ConnectionError>>,
    pauses: usize,
}

type Shared = Rc<RefCell<Seen>>;

/// Records everything; optionally echoes (with flow control) and keeps a half-closed
/// connection open (`keep_open`).
struct App {
    seen: Shared,
    echo: bool,
    keep_open: bool,
}

impl App {
    fn boxed(seen: &Shared, echo: bool) -> Box<dyn Protocol> {
        Box::new(App { seen: seen.clone(), echo, keep_open: false })
    }
}

impl Protocol for App {
    fn connection_made(&mut self, _: &mut Ctx<'_>) -> CallbackResult {
        self.seen.borrow_mut().events.push("made");
        Ok(())
    }
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        if self.echo {
            ctx.write_slice(ctx.stream(), data)?;
        } else {
            self.seen.borrow_mut().data.extend_from_slice(data);
        }
        Ok(())
    }
    fn eof_received(&mut self, _: &mut Ctx<'_>) -> CallbackResult<bool> {
        self.seen.borrow_mut().events.push("eof");
        Ok(self.keep_open)
    }
    fn pause_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.seen.borrow_mut().pauses += 1;
        Ok(ctx.pause_reading(ctx.stream())?)
    }
    fn resume_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        Ok(ctx.resume_reading(ctx.stream())?)
    }
    fn connection_lost(&mut self, _: &mut Ctx<'_>, err: Option<ConnectionError>) -> CallbackResult {
        let mut s = self.seen.borrow_mut();
        s.events.push("lost");
        s.lost = Some(err);
        Ok(())
    }
}

fn seen() -> Shared {
    Rc::new(RefCell::new(Seen::default()))
}

/// A loop whose error hook collects reports.
fn new_loop() -> (Loop, Rc<RefCell<Vec<ErrorReport>>>) {
    let mut lp = Loop::new().unwrap();
    let reports = Rc::new(RefCell::new(Vec::new()));
    let sink = reports.clone();
    lp.set_error_handler(move |r| sink.borrow_mut().push(r));
    (lp, reports)
}

/// A TLS echo server on 127.0.0.1 whose app protocols record into the returned list.
fn echo_server(lp: &mut Loop, pki: &Pki) -> (Endpoint, Rc<RefCell<Vec<Shared>>>) {
    let all = Rc::new(RefCell::new(Vec::new()));
    let list = all.clone();
    let factory = move |_: &TlsSession| {
        let s = seen();
        list.borrow_mut().push(s.clone());
        App::boxed(&s, true)
    };
    let server = lp
        .create_tls_server("127.0.0.1:0", pki.server(), factory, ServerOptions::default())
        .unwrap();
    (Endpoint::Addr(server.addr()), all)
}

fn tls_error(r: Result<(StreamHandle, TlsSession), Error>) -> TlsError {
    match r {
        Err(Error::Tls { error, .. }) => error,
        Err(other) => panic!("expected a TLS error, got {other}"),
        Ok(_) => panic!("expected a TLS error, the handshake succeeded"),
    }
}

// ---------------------------------------------------------------------------------------

#[test]
fn create_tls_connection_returns_after_the_handshake_then_echoes() {
    let pki = Pki::new();
    let (mut lp, reports) = new_loop();
    let (endpoint, servers) = echo_server(&mut lp, &pki);
    let client = seen();
    let (app, session) = lp
        .create_tls_connection(endpoint, &pki.client("localhost"), App::boxed(&client, false))
        .unwrap();
    // asyncio's `await create_connection(ssl=...)`: connection_made was delivered, the
    // session knows what was negotiated.
    assert_eq!(client.borrow().events, ["made"]);
    let info = session.info().expect("negotiated");
    assert_eq!(info.version, rustls::ProtocolVersion::TLSv1_3);
    assert_eq!(info.server_name.as_deref(), Some("localhost"));
    assert_eq!(info.peer_certificates, std::slice::from_ref(&pki.leaf));
    assert_eq!(session.app(), Some(app));
    // The app's transport carries the raw socket's addresses and the TLS parameters.
    let extra = lp.with(|ctx| ctx.extra(app).unwrap().clone());
    assert!(extra.peername.is_some_and(|p| p.ip().is_loopback()));
    assert_eq!(extra.tls.as_deref(), Some(info));

    lp.with(|ctx| ctx.write_slice(app, b"hello over TLS")).unwrap();
    lp.run_until_timeout(|| client.borrow().data.len() == 14, LIMIT).unwrap();
    assert_eq!(client.borrow().data, b"hello over TLS");
    lp.with(|ctx| ctx.close(app)).unwrap();
    lp.run_until_timeout(|| lp_done(&client, &servers), LIMIT).unwrap();
    settle(&mut lp);
    assert_eq!(client.borrow().lost, Some(None));
    assert_eq!(servers.borrow()[0].borrow().events, ["made", "eof", "lost"]);
    assert_eq!(servers.borrow()[0].borrow().lost, Some(None));
    assert!(reports.borrow().is_empty(), "{:?}", reports.borrow());
}

fn lp_done(client: &Shared, servers: &Rc<RefCell<Vec<Shared>>>) -> bool {
    client.borrow().lost.is_some() && servers.borrow().iter().all(|s| s.borrow().lost.is_some())
}

/// Pushes `total` bytes of a pattern with flow control, checks every echoed byte, closes.
struct Pusher {
    total: usize,
    sent: usize,
    received: Rc<RefCell<(usize, bool)>>,
}

impl Pusher {
    fn push(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        let h = ctx.stream();
        while self.sent < self.total && !ctx.is_writing_paused(h)? {
            let n = (self.total - self.sent).min(64 * 1024);
            let chunk: Vec<u8> = (self.sent..self.sent + n).map(|i| (i % 251) as u8).collect();
            ctx.write(h, chunk)?;
            self.sent += n;
        }
        Ok(())
    }
}

impl Protocol for Pusher {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.push(ctx)
    }
    fn resume_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.push(ctx)
    }
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        let mut r = self.received.borrow_mut();
        for (k, &b) in data.iter().enumerate() {
            if b != ((r.0 + k) % 251) as u8 {
                r.1 = true;
            }
        }
        r.0 += data.len();
        if r.0 == self.total {
            ctx.close(ctx.stream())?;
        }
        Ok(())
    }
}

#[test]
fn bulk_64_mib_byte_exact_over_tls() {
    const TOTAL: usize = 64 << 20;
    let pki = Pki::new();
    let (mut lp, reports) = new_loop();
    let (endpoint, servers) = echo_server(&mut lp, &pki);
    let received = Rc::new(RefCell::new((0, false)));
    let pusher = Pusher { total: TOTAL, sent: 0, received: received.clone() };
    let (_, session) =
        lp.create_tls_connection(endpoint, &pki.client("localhost"), Box::new(pusher)).unwrap();
    lp.run_until_timeout(
        || servers.borrow().first().is_some_and(|s| s.borrow().lost.is_some()),
        Duration::from_secs(120),
    )
    .unwrap();
    assert_eq!(*received.borrow(), (TOTAL, false), "every byte echoed, in order");
    let server = servers.borrow()[0].clone();
    assert_eq!(server.borrow().lost, Some(None));
    assert!(server.borrow().pauses >= 1, "64 MiB of echo must pause the server's writes");
    assert!(session.error().is_none());
    assert!(reports.borrow().is_empty(), "{:?}", reports.borrow());
}

#[test]
fn bad_certificate_is_a_typed_error_and_reaches_the_servers_error_hook() {
    let pki = Pki::new();
    let stranger = Pki::with_ca_name("another CA");
    let (mut lp, reports) = new_loop();
    let (endpoint, servers) = echo_server(&mut lp, &pki);
    let client = seen();
    let err = tls_error(lp.create_tls_connection(
        endpoint,
        &stranger.client("localhost"),
        App::boxed(&client, false),
    ));
    assert!(err.is_certificate_error(), "{err}");
    assert!(
        matches!(
            err,
            TlsError::Handshake(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer))
        ),
        "{err:?}"
    );
    // The client's alert reaches the server: its failure goes to the error hook; no app
    // protocol on either side saw a callback.
    lp.run_until_timeout(|| !reports.borrow().is_empty(), LIMIT).unwrap();
    assert!(client.borrow().events.is_empty());
    assert!(servers.borrow().iter().all(|s| s.borrow().events.is_empty()));
    let reports = reports.borrow();
    match reports.as_slice() {
        [ErrorReport::Callback(LoopError::Reported { error, .. })] => {
            let source = error.source().and_then(|s| s.downcast_ref::<TlsError>());
            assert!(
                matches!(source, Some(e @ TlsError::Handshake(_)) if e.is_certificate_error()),
                "{source:?}"
            );
        }
        other => panic!("expected one reported TLS error: {other:?}"),
    }
}

#[test]
fn wrong_name_is_a_typed_certificate_error() {
    let pki = Pki::new();
    let (mut lp, _reports) = new_loop();
    let (endpoint, _) = echo_server(&mut lp, &pki);
    let client = seen();
    let err = tls_error(lp.create_tls_connection(
        endpoint,
        &pki.client("example.com"),
        App::boxed(&client, false),
    ));
    assert!(
        matches!(
            err,
            TlsError::Handshake(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            ))
        ),
        "{err:?}"
    );
    assert!(client.borrow().events.is_empty(), "the app saw nothing");
}

#[test]
fn handshake_timeout_against_a_listener_that_never_answers() {
    // The kernel completes the TCP handshake from the backlog; nobody ever reads the
    // ClientHello.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = Endpoint::Addr(silent.local_addr().unwrap());
    let pki = Pki::new();
    let options = TlsOptions::default().with_handshake_timeout(Some(Duration::from_millis(200)));
    let tls = pki.client("localhost").with_options(options);
    let (mut lp, reports) = new_loop();
    let client = seen();
    let err = tls_error(lp.create_tls_connection(endpoint, &tls, App::boxed(&client, false)));
    assert_eq!(err, TlsError::HandshakeTimeout(Duration::from_millis(200)));
    assert!(client.borrow().events.is_empty());
    assert!(reports.borrow().is_empty(), "a client-side failure is the caller's error only");
    settle(&mut lp);
}

#[test]
fn peer_closing_during_the_handshake_is_peer_closed() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = Endpoint::Addr(listener.local_addr().unwrap());
    let closer = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        // Read the whole ClientHello (so the close is a FIN, not a reset), then close
        // without answering.
        s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let mut buf = [0u8; 4096];
        let mut total = 0;
        while let Ok(n @ 1..) = s.read(&mut buf) {
            total += n;
        }
        total
    });
    let pki = Pki::new();
    let options = TlsOptions::default().with_handshake_timeout(Some(LIMIT));
    let (mut lp, _) = new_loop();
    let client = seen();
    let err = tls_error(lp.create_tls_connection(
        endpoint,
        &pki.client("localhost").with_options(options),
        App::boxed(&client, false),
    ));
    assert!(closer.join().unwrap() > 0, "the ClientHello went out");
    assert_eq!(err, TlsError::PeerClosed);
    assert!(client.borrow().events.is_empty());
}

/// Answers the first bytes with "bye" and closes: its data, then its close_notify.
struct SayByeAndClose(Shared);

impl Protocol for SayByeAndClose {
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        self.0.borrow_mut().data.extend_from_slice(data);
        ctx.write_slice(ctx.stream(), b"bye")?;
        Ok(ctx.close(ctx.stream())?)
    }
    fn connection_lost(&mut self, _: &mut Ctx<'_>, err: Option<ConnectionError>) -> CallbackResult {
        self.0.borrow_mut().lost = Some(err);
        Ok(())
    }
}

/// Runs the loop (bounded) until every transport is gone.
fn settle(lp: &mut Loop) {
    for _ in 0..3000 {
        if lp.is_empty() {
            return;
        }
        lp.run_once(Some(Duration::from_millis(10))).unwrap();
    }
    panic!("{} transports still open", lp.len());
}

/// close_notify from the server: the client app sees the data, then EOF, then a clean
/// loss, and its answer (close) lets the server's shutdown finish. (From the client side
/// it is the echo test above: the server app sees EOF.)
#[test]
fn close_notify_from_the_server_is_the_clients_eof() {
    let pki = Pki::new();
    let (mut lp, reports) = new_loop();
    let server = seen();
    let s2 = server.clone();
    let srv = lp
        .create_tls_server(
            "127.0.0.1:0",
            pki.server(),
            move |_: &TlsSession| Box::new(SayByeAndClose(s2.clone())) as Box<dyn Protocol>,
            ServerOptions::default(),
        )
        .unwrap();
    let client = seen();
    let (client_app, _) = lp
        .create_tls_connection(
            Endpoint::Addr(srv.addr()),
            &pki.client("localhost"),
            App::boxed(&client, false),
        )
        .unwrap();
    lp.with(|ctx| ctx.write_slice(client_app, b"hi")).unwrap();
    lp.run_until_timeout(|| client.borrow().lost.is_some(), LIMIT).unwrap();
    settle(&mut lp);
    assert_eq!(server.borrow().data, b"hi");
    assert_eq!(server.borrow().lost, Some(None));
    let c = client.borrow();
    assert_eq!(c.data, b"bye");
    assert_eq!(c.events, ["made", "eof", "lost"]);
    assert_eq!(c.lost, Some(None));
    assert!(reports.borrow().is_empty(), "{:?}", reports.borrow());
}

/// What `request_completed` said.
type Completed = (RequestId, Result<StreamHandle, ConnectionError>);

/// A protocol that opens a TLS connection from a callback with `Ctx::connect`.
struct Opener {
    target: Endpoint,
    tls: TlsClient,
    app: Shared,
    outcome: Rc<RefCell<Option<Completed>>>,
    app_made_first: Rc<RefCell<bool>>,
}

impl Protocol for Opener {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        let engine =
            self.tls.engine(App { seen: self.app.clone(), echo: false, keep_open: false })?;
        ctx.connect(self.target.clone(), Box::new(engine));
        Ok(())
    }
    fn request_completed(
        &mut self,
        _: &mut Ctx<'_>,
        id: RequestId,
        outcome: Result<StreamHandle, ConnectionError>,
    ) -> CallbackResult {
        *self.app_made_first.borrow_mut() = self.app.borrow().events.first() == Some(&"made");
        *self.outcome.borrow_mut() = Some((id, outcome));
        Ok(())
    }
}

fn open_from_a_callback(tls: TlsClient, pki: &Pki) -> (Option<Completed>, bool, Shared) {
    let (mut lp, _) = new_loop();
    let (endpoint, _) = echo_server(&mut lp, pki);
    let outcome = Rc::new(RefCell::new(None));
    let first = Rc::new(RefCell::new(false));
    let app = seen();
    // The opener runs as the protocol of a plain TCP connection to a plain listener.
    let plain =
        lp.create_server("127.0.0.1:0", || Box::new(Idle), ServerOptions::default()).unwrap();
    let opener = Opener {
        target: endpoint,
        tls,
        app: app.clone(),
        outcome: outcome.clone(),
        app_made_first: first.clone(),
    };
    lp.create_connection(Endpoint::Addr(plain.addr()), Box::new(opener)).unwrap();
    lp.run_until_timeout(|| outcome.borrow().is_some(), LIMIT).unwrap();
    let o = outcome.borrow_mut().take();
    let f = *first.borrow();
    (o, f, app)
}

struct Idle;
impl Protocol for Idle {}

#[test]
fn connect_from_a_callback_hears_the_handshake_outcome() {
    let pki = Pki::new();
    let (outcome, app_made_first, app) = open_from_a_callback(pki.client("localhost"), &pki);
    let (_, result) = outcome.expect("request_completed");
    let h = result.expect("the handshake completed");
    // The answer names the app's transport and comes after its connection_made.
    assert!(app_made_first);
    assert_eq!(app.borrow().events, ["made"]);
    let _ = h;

    let stranger = Pki::with_ca_name("another CA");
    let (outcome, _, app) = open_from_a_callback(stranger.client("localhost"), &pki);
    match outcome.expect("request_completed").1 {
        Err(ConnectionError::Tls(message)) => assert!(message.contains("certificate"), "{message}"),
        other => panic!("expected the handshake's failure, got {other:?}"),
    }
    assert!(app.borrow().events.is_empty());
}

#[test]
fn unix_socket_client_against_rustls_blocking_server() {
    let pki = Pki::new();
    let dir = std::env::temp_dir().join(format!("aioport-poll-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("echo.sock");
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    let config = pki.server_config();
    // rustls' own blocking stream: echo until close_notify, then answer it.
    let server = std::thread::spawn(move || {
        let (sock, _) = listener.accept().unwrap();
        sock.set_read_timeout(Some(LIMIT)).unwrap();
        let conn = rustls::ServerConnection::new(config).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, sock);
        let mut buf = [0u8; 4096];
        loop {
            match tls.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => tls.write_all(&buf[..n]).unwrap(),
            }
        }
        tls.conn.send_close_notify();
        let _ = tls.flush();
    });
    let (mut lp, reports) = new_loop();
    let client = seen();
    let (app, session) = lp
        .create_tls_connection(
            Endpoint::Unix(path.clone()),
            &pki.client("localhost"),
            App::boxed(&client, false),
        )
        .unwrap();
    assert!(session.info().is_some());
    lp.with(|ctx| ctx.write_slice(app, b"over a Unix socket")).unwrap();
    lp.run_until_timeout(|| client.borrow().data.len() == 18, LIMIT).unwrap();
    lp.with(|ctx| ctx.close(app)).unwrap();
    lp.run_until_timeout(|| client.borrow().lost.is_some(), LIMIT).unwrap();
    settle(&mut lp);
    server.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(client.borrow().data, b"over a Unix socket");
    assert_eq!(client.borrow().lost, Some(None));
    assert!(reports.borrow().is_empty(), "{:?}", reports.borrow());
}
