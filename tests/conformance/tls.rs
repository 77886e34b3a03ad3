//! The TLS axis: any [`Driver`] with TLS under every stream connection (feature `tls`).
//!
//! [`Tls<D>`] wraps a driver: its listeners run a [`TlsServer`] engine under each accepted
//! connection, its connects a [`TlsClient`] engine, with an Ed25519 certificate for
//! "localhost" made at run time and X25519 key exchange. The scenarios see only the app
//! protocols' transports — the plaintext ones the engines serve — so they run unchanged:
//! every stream rule they check must hold over TLS too.
//!
//! What the wrapper adds, and why:
//!
//! * `connect` returns once the handshake completed (asyncio's
//!   `create_connection(ssl=...)`), with the **app's** handle; a handshake failure is the
//!   connect's error.
//! * `reset` resets the raw connection under the app's transport (a TLS peer sees the
//!   reset as `connection_lost(Some(reset))`, as over TCP).
//! * `run_until` also waits until every raw connection whose app transport is gone has
//!   finished its TLS shutdown, and `transports` counts what the apps see (raw transports
//!   are the engines' business): "every transport removed" then means the raw ones too.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use aioport::tls::rustls::crypto::{CryptoProvider, ring};
use aioport::tls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use aioport::tls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use aioport::tls::{TlsClient, TlsServer, TlsSession};
use aioport::{
    CallbackResult, ConnectionError, Ctx, Endpoint, LoopError, Protocol, RequestId, StreamHandle,
};

use crate::driver::{ClientWrap, Driver, Factory, Listening};

/// One TLS connection's two layers, as far as the wrapper tracks them.
#[derive(Default)]
struct Layers {
    app_gone: Cell<bool>,
    raw_gone: Cell<bool>,
}

type Conns = Rc<RefCell<Vec<(Rc<Layers>, TlsSession)>>>;

/// TLS under every stream connection of `D`.
pub struct Tls<D> {
    inner: D,
    client: TlsClient,
    server: TlsServer,
    conns: Conns,
}

/// A client and a server configuration: an Ed25519 certificate for "localhost" made at run
/// time, X25519.
pub fn configs() -> (TlsClient, TlsServer) {
    let provider = Arc::new(CryptoProvider {
        kx_groups: vec![ring::kx_group::X25519],
        ..ring::default_provider()
    });
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("certificate");
    let cert = cert.der().clone();
    let key = PrivatePkcs8KeyDer::from(key.serialize_der());
    let mut roots = RootCertStore::empty();
    roots.add(cert.clone()).expect("a root");
    let client = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert], PrivateKeyDer::Pkcs8(key))
        .expect("server config");
    let client = TlsClient::new(Arc::new(client), "localhost").expect("a DNS name");
    (client, TlsServer::new(Arc::new(server)))
}

impl<D: Driver> Tls<D> {
    /// `factory`'s protocols under server engines, both layers tracked.
    fn server_factory(&self, mut factory: Factory) -> Factory {
        let server = self.server.clone();
        let conns = self.conns.clone();
        Box::new(move || {
            let layers = Rc::new(Layers::default());
            let app = Tracked::boxed(factory(), &layers, Layer::App);
            let engine = server.engine_with(move |_| app).expect("a server engine");
            conns.borrow_mut().push((layers.clone(), engine.session()));
            Tracked::boxed(Box::new(engine), &layers, Layer::Raw)
        })
    }

    /// `app` under a client engine, both layers tracked.
    fn client_engine(&mut self, app: Box<dyn Protocol>) -> (Box<dyn Protocol>, TlsSession) {
        client_engine(&self.client, &self.conns, app)
    }

    fn quiescent(conns: &Conns) -> bool {
        conns.borrow().iter().all(|(l, _)| !l.app_gone.get() || l.raw_gone.get())
    }
}

/// `app` under an engine of `client`, both layers tracked in `conns`.
fn client_engine(
    client: &TlsClient,
    conns: &Conns,
    app: Box<dyn Protocol>,
) -> (Box<dyn Protocol>, TlsSession) {
    let layers = Rc::new(Layers::default());
    let app = Tracked::boxed(app, &layers, Layer::App);
    let engine = client.engine_with(move |_| app).expect("a client engine");
    let session = engine.session();
    conns.borrow_mut().push((layers.clone(), session.clone()));
    (Tracked::boxed(Box::new(engine), &layers, Layer::Raw), session)
}

/// The name of `Tls<Self>` in messages (`SKIPPED (tls+poll …)`).
pub trait TlsName {
    const TLS_NAME: &'static str;
}

impl TlsName for crate::poll::Poll {
    const TLS_NAME: &'static str = "tls+poll";
}

#[cfg(feature = "testing")]
impl TlsName for crate::sim::Sim {
    const TLS_NAME: &'static str = "tls+sim";
}

impl TlsName for crate::tokio::TokioCt {
    const TLS_NAME: &'static str = "tls+tokio-ct";
}

impl TlsName for crate::tokio::TokioMt {
    const TLS_NAME: &'static str = "tls+tokio-mt";
}

impl TlsName for crate::smol::Smol {
    const TLS_NAME: &'static str = "tls+smol";
}

impl<D: Driver + TlsName> Driver for Tls<D> {
    const NAME: &'static str = D::TLS_NAME;

    fn new() -> Self {
        let (client, server) = configs();
        Tls { inner: D::new(), client, server, conns: Rc::new(RefCell::new(Vec::new())) }
    }

    fn listen(&mut self, factory: Factory) -> Listening {
        let factory = self.server_factory(factory);
        self.inner.listen(factory)
    }

    fn listen_unix(&mut self, factory: Factory) -> Option<Listening> {
        let factory = self.server_factory(factory);
        self.inner.listen_unix(factory)
    }

    /// The inner driver's file: through TLS it goes by the fallback.
    fn sendfile_file(
        &mut self,
        data: &[u8],
    ) -> Result<Box<dyn aioport::stream::SendfileSource>, String> {
        self.inner.sendfile_file(data)
    }

    fn close_listener(&mut self, id: usize) -> bool {
        self.inner.close_listener(id)
    }

    fn close_clients(&mut self, id: usize) -> Option<usize> {
        self.inner.close_clients(id)
    }

    fn wait_closed(&mut self, id: usize) -> bool {
        self.inner.wait_closed(id)
    }

    fn connect(
        &mut self,
        to: &Endpoint,
        protocol: Box<dyn Protocol>,
    ) -> Result<StreamHandle, ConnectionError> {
        let (engine, session) = self.client_engine(protocol);
        self.inner.connect(to, engine)?;
        self.inner.run_until("the TLS handshake", || {
            session.app().is_some() || session.error().is_some()
        });
        match (session.app(), session.error()) {
            (Some(app), _) => Ok(app),
            (None, Some(e)) => Err(e.to_connection_error()),
            (None, None) => unreachable!("run_until returned before its condition held"),
        }
    }

    fn client_wrap(&mut self) -> ClientWrap {
        let (client, conns) = (self.client.clone(), self.conns.clone());
        Rc::new(move |app| client_engine(&client, &conns, app).0)
    }

    fn unused_endpoint(&mut self) -> Endpoint {
        self.inner.unused_endpoint()
    }

    fn with<R>(&mut self, f: impl FnOnce(&mut Ctx<'_>) -> R) -> R {
        self.inner.with(f)
    }

    fn reset(&mut self, h: StreamHandle) {
        let raw = self
            .conns
            .borrow()
            .iter()
            .find(|(_, s)| s.app() == Some(h))
            .and_then(|(_, s)| s.raw())
            .expect("an app transport of this driver");
        self.inner.reset(raw);
    }

    fn run_until(&mut self, what: &str, mut done: impl FnMut() -> bool) {
        let conns = self.conns.clone();
        self.inner.run_until(what, || done() && Self::quiescent(&conns));
    }

    fn take_errors(&mut self) -> Vec<LoopError> {
        self.inner.take_errors()
    }

    fn prepare_connections(&mut self, n: usize) {
        self.inner.prepare_connections(n);
    }

    fn transports(&self) -> usize {
        let raws = self
            .conns
            .borrow()
            .iter()
            .filter(|(l, s)| s.raw().is_some() && !l.raw_gone.get())
            .count();
        self.inner.transports() - raws
    }
}

#[derive(Clone, Copy)]
enum Layer {
    App,
    Raw,
}

/// Forwards every callback to `p`; marks its layer gone when dropped (after
/// `connection_lost`, or when a panic dropped it).
struct Tracked {
    p: Box<dyn Protocol>,
    layers: Rc<Layers>,
    layer: Layer,
}

impl Tracked {
    fn boxed(p: Box<dyn Protocol>, layers: &Rc<Layers>, layer: Layer) -> Box<dyn Protocol> {
        Box::new(Tracked { p, layers: layers.clone(), layer })
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        match self.layer {
            Layer::App => self.layers.app_gone.set(true),
            Layer::Raw => self.layers.raw_gone.set(true),
        }
    }
}

impl Protocol for Tracked {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.p.connection_made(ctx)
    }
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        self.p.data_received(ctx, data)
    }
    fn eof_received(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult<bool> {
        self.p.eof_received(ctx)
    }
    fn pause_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.p.pause_writing(ctx)
    }
    fn resume_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.p.resume_writing(ctx)
    }
    fn connection_lost(
        &mut self,
        ctx: &mut Ctx<'_>,
        err: Option<ConnectionError>,
    ) -> CallbackResult {
        self.p.connection_lost(ctx, err)
    }
    fn get_buffer(&mut self, sizehint: usize) -> CallbackResult<Option<&mut [u8]>> {
        self.p.get_buffer(sizehint)
    }
    fn buffer_updated(&mut self, ctx: &mut Ctx<'_>, n: usize) -> CallbackResult {
        self.p.buffer_updated(ctx, n)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.p.poll_timeout()
    }
    fn handle_timeout(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.p.handle_timeout(ctx)
    }
    fn request_completed(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: RequestId,
        outcome: Result<StreamHandle, ConnectionError>,
    ) -> CallbackResult {
        self.p.request_completed(ctx, id, outcome)
    }
    fn sendfile_completed(
        &mut self,
        ctx: &mut Ctx<'_>,
        h: StreamHandle,
        outcome: Result<u64, aioport::stream::SendfileError>,
    ) -> CallbackResult {
        self.p.sendfile_completed(ctx, h, outcome)
    }
    fn handle_wake(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.p.handle_wake(ctx)
    }
}
