//! TLS on the tokio driver (feature `tls`): `create_tls_connection` returns after the
//! handshake or fails with a typed TLS error and no app callback; `create_tls_unix_server`
//! serves TLS over a Unix socket; a failed server-side handshake reaches the error hook.
//! The stream scenarios over TLS are in the conformance suite (`tls_on_tokio_*`).
//!
//! Every wait is bounded (`run_until_timeout`); loopback and a temporary socket path only.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use aioport::tls::rustls::crypto::ring;
use aioport::tls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use aioport::tls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use aioport::tls::{TlsClient, TlsServer};
use aioport::{CallbackResult, ConnectionError, Ctx, Endpoint, Protocol};
use aioport_tokio::{Error, ErrorReport, Loop, ServerOptions};

const LIMIT: Duration = Duration::from_secs(20);

struct Pki {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl Pki {
    fn new() -> Pki {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        Pki { cert: cert.der().clone(), key: PrivatePkcs8KeyDer::from(key.serialize_der()) }
    }

    fn client(&self, name: &str) -> TlsClient {
        let mut roots = RootCertStore::empty();
        roots.add(self.cert.clone()).unwrap();
        let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsClient::new(Arc::new(config), name).unwrap()
    }

    fn server(&self) -> TlsServer {
        let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![self.cert.clone()], PrivateKeyDer::Pkcs8(self.key.clone_key()))
            .unwrap();
        TlsServer::new(Arc::new(config))
    }
}

#[derive(Default)]
struct Seen {
    events: Vec<&'static str>,
    data: Vec<u8>,
    lost: Option<Option<ConnectionError>>,
}

/// Records; echoes when `echo`; closes once `close_after` bytes arrived.
struct App {
    seen: Rc<RefCell<Seen>>,
    echo: bool,
    send: &'static [u8],
    close_after: usize,
}

impl Protocol for App {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.seen.borrow_mut().events.push("made");
        Ok(ctx.write_slice(ctx.stream(), self.send)?)
    }
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        let mut s = self.seen.borrow_mut();
        s.data.extend_from_slice(data);
        if self.echo {
            ctx.write_slice(ctx.stream(), data)?;
        }
        if self.close_after > 0 && s.data.len() >= self.close_after {
            ctx.close(ctx.stream())?;
        }
        Ok(())
    }
    fn connection_lost(&mut self, _: &mut Ctx<'_>, err: Option<ConnectionError>) -> CallbackResult {
        let mut s = self.seen.borrow_mut();
        s.events.push("lost");
        s.lost = Some(err);
        Ok(())
    }
}

fn app(seen: &Rc<RefCell<Seen>>, echo: bool, send: &'static [u8], close_after: usize) -> App {
    App { seen: seen.clone(), echo, send, close_after }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn wrong_server_name_is_a_typed_tls_error_and_the_app_sees_nothing() {
    runtime().block_on(async {
        let pki = Pki::new();
        let mut lp = Loop::new();
        let reports = Rc::new(RefCell::new(Vec::new()));
        let r = reports.clone();
        lp.set_error_handler(move |e: ErrorReport| r.borrow_mut().push(e.to_string()));
        let srv = lp
            .create_tls_server(
                "127.0.0.1:0",
                pki.server(),
                |_| unreachable!(),
                ServerOptions::default(),
            )
            .await
            .unwrap();
        let seen = Rc::new(RefCell::new(Seen::default()));
        let client = pki.client("elsewhere.example");
        let r = lp
            .create_tls_connection(
                Endpoint::Addr(srv.addr()),
                &client,
                Box::new(app(&seen, false, b"", 0)),
            )
            .await;
        match r {
            Err(Error::Tls { endpoint, error }) => {
                assert_eq!(endpoint, Some(Endpoint::Addr(srv.addr())));
                assert!(error.is_certificate_error(), "{error}");
            }
            other => panic!("{other:?}"),
        }
        assert!(seen.borrow().events.is_empty(), "the app saw no callback");
        // The server's handshake failed too (our alert): its error hook is told.
        let rr = reports.clone();
        lp.run_until_timeout(move || !rr.borrow().is_empty(), LIMIT).await.unwrap();
        assert!(reports.borrow()[0].contains("TLS"), "{:?}", reports.borrow());
    });
}

#[test]
fn echo_over_a_tls_unix_server_then_clean_close() {
    runtime().block_on(async {
        let pki = Pki::new();
        let dir = std::env::temp_dir().join(format!("aioport-tokio-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tls.sock");
        let mut lp = Loop::new();
        let server_seen = Rc::new(RefCell::new(Seen::default()));
        let s = server_seen.clone();
        lp.create_tls_unix_server(&path, pki.server(), move |session| {
            assert!(session.is_established());
            Box::new(app(&s, true, b"", 0))
        })
        .await
        .unwrap();
        let seen = Rc::new(RefCell::new(Seen::default()));
        let message = b"over TLS over a Unix socket";
        let client = app(&seen, false, message, message.len());
        let (_, session) = lp
            .create_tls_connection(
                Endpoint::Unix(path.clone()),
                &pki.client("localhost"),
                Box::new(client),
            )
            .await
            .unwrap();
        assert!(session.info().is_some_and(|i| i.supports_half_close()));
        // The app transport is served by the TLS engine, not by the loop: no remote
        // handle (the loop would never see it end).
        let app_handle = session.app().unwrap();
        assert!(matches!(
            lp.remote_stream(app_handle),
            Err(aioport::HandleError::WrongKind { .. })
        ));
        let (a, b) = (seen.clone(), server_seen.clone());
        lp.run_until_timeout(move || a.borrow().lost.is_some() && b.borrow().lost.is_some(), LIMIT)
            .await
            .unwrap();
        assert_eq!(seen.borrow().data, message);
        assert_eq!(server_seen.borrow().data, message);
        assert!(matches!(seen.borrow().lost, Some(None)));
        assert!(matches!(server_seen.borrow().lost, Some(None)));
        assert_eq!(seen.borrow().events, ["made", "lost"]);
        let _ = std::fs::remove_dir_all(&dir);
    });
}

/// Plaintext until `STARTTLS\r\n`, then TLS (an echo) on the same connection.
struct Upgrading {
    tls: Option<TlsServer>,
    seen: Rc<RefCell<Seen>>,
    line: Vec<u8>,
}

impl Protocol for Upgrading {
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        self.line.extend_from_slice(data);
        if self.line.len() < 10 {
            return Ok(());
        }
        let rest = self.line.split_off(10);
        assert_eq!(self.line, b"STARTTLS\r\n");
        let tls = self.tls.take().expect("once");
        let engine = tls.engine(app(&self.seen, true, b"", 0))?;
        ctx.start_tls(ctx.stream(), engine, &rest)?;
        Ok(())
    }
}

/// The client before TLS: says nothing, hears nothing.
struct Quiet;
impl Protocol for Quiet {}

#[test]
fn loop_start_tls_after_a_plaintext_line_returns_after_the_handshake() {
    runtime().block_on(async {
        let pki = Pki::new();
        let mut lp = Loop::new();
        let server_seen = Rc::new(RefCell::new(Seen::default()));
        let (s, tls) = (server_seen.clone(), pki.server());
        let srv = lp
            .create_server(
                "127.0.0.1:0",
                move || {
                    let tls = Some(tls.clone());
                    Box::new(Upgrading { tls, seen: s.clone(), line: Vec::new() })
                },
                ServerOptions::default(),
            )
            .await
            .unwrap();
        let h = lp.create_connection(Endpoint::Addr(srv.addr()), Box::new(Quiet)).await.unwrap();
        // The line, and right behind it our ClientHello: the server hands what it read
        // past the line to its engine.
        lp.with(|ctx| ctx.write_slice(h, b"STARTTLS\r\n")).unwrap();
        let seen = Rc::new(RefCell::new(Seen::default()));
        let message = b"upgraded";
        let engine =
            pki.client("localhost").engine(app(&seen, false, message, message.len())).unwrap();
        let (app_h, session) = lp.start_tls(h, engine, b"").await.unwrap();
        assert_eq!(session.app(), Some(app_h));
        assert_eq!(session.raw(), Some(h));
        let (a, b) = (seen.clone(), server_seen.clone());
        lp.run_until_timeout(move || a.borrow().lost.is_some() && b.borrow().lost.is_some(), LIMIT)
            .await
            .unwrap();
        assert_eq!(seen.borrow().data, message);
        assert_eq!(server_seen.borrow().data, message);
        assert!(matches!(seen.borrow().lost, Some(None)));
        // The handle is stale now: refused.
        let engine = pki.client("localhost").engine(Quiet).unwrap();
        assert!(matches!(lp.start_tls(h, engine, b"").await, Err(Error::StartTls(_))));
    });
}
