//! Shared pieces of the TLS harness tests: a PKI made at test time (Ed25519, rcgen),
//! rustls configurations on X25519 with a virtual clock, and small app protocols.
//! Shared by `tests/tls.rs` and `tests/tls_flow.rs`; each uses part of it.
#![allow(dead_code)]

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use aioport::testing::{Event, Sim};
use aioport::tls::rustls::crypto::{CryptoProvider, ring};
use aioport::tls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use aioport::tls::rustls::{
    self, ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion,
};
use aioport::tls::{TlsClient, TlsOptions, TlsServer, VirtualTime};
use aioport::tls::{TlsError, TlsSession};
use aioport::{
    CallbackResult, ConnectionError, Ctx, Handle, Protocol, ProtocolError, StreamHandle,
};

/// 2026-01-01T00:00:00Z: inside every certificate's validity (2025–2035).
pub const NOW_UNIX: u64 = 1_767_225_600;
/// 2040-01-01T00:00:00Z: after it.
pub const EXPIRED_UNIX: u64 = 2_208_988_800;

/// A CA and a leaf certificate for "localhost" it signed, both Ed25519.
pub struct Pki {
    pub ca: CertificateDer<'static>,
    pub leaf: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl Pki {
    pub fn new() -> Self {
        Self::with_ca_name("aioport test CA")
    }

    /// A PKI whose CA has this name (two CAs with one name make the verifier try the
    /// wrong key: a bad signature instead of an unknown issuer).
    pub fn with_ca_name(ca_name: &str) -> Self {
        let validity = |p: &mut rcgen::CertificateParams| {
            p.not_before = rcgen::date_time_ymd(2025, 1, 1);
            p.not_after = rcgen::date_time_ymd(2035, 1, 1);
        };
        let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, ca_name);
        validity(&mut ca_params);
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();

        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        validity(&mut params);
        let leaf = params.signed_by(&key, &ca).unwrap();
        Pki {
            ca: ca.der().clone(),
            leaf: leaf.der().clone(),
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        }
    }
}

/// ring with X25519 only: the harness's key exchange.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(CryptoProvider { kx_groups: vec![ring::kx_group::X25519], ..ring::default_provider() })
}

pub const TLS13: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];
pub const TLS12: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12];

/// How a test's connections are configured.
pub struct Setup {
    pub versions: &'static [&'static SupportedProtocolVersion],
    /// The CA the client trusts (the PKI's own by default).
    pub trust: CertificateDer<'static>,
    pub server_name: &'static str,
    pub time: u64,
    pub options: TlsOptions,
}

impl Setup {
    pub fn new(pki: &Pki) -> Self {
        Setup {
            versions: TLS13,
            trust: pki.ca.clone(),
            server_name: "localhost",
            time: NOW_UNIX,
            options: TlsOptions::default(),
        }
    }

    pub fn client(&self) -> TlsClient {
        let time = Arc::new(VirtualTime::from_unix_secs(self.time));
        let mut roots = RootCertStore::empty();
        roots.add(self.trust.clone()).unwrap();
        let mut config = ClientConfig::builder_with_details(provider(), time)
            .with_protocol_versions(self.versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        TlsClient::new(Arc::new(config), self.server_name).unwrap().with_options(self.options)
    }

    pub fn server(&self, pki: &Pki) -> TlsServer {
        let time = Arc::new(VirtualTime::from_unix_secs(self.time));
        let mut config = ServerConfig::builder_with_details(provider(), time)
            .with_protocol_versions(self.versions)
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![pki.leaf.clone()], PrivateKeyDer::Pkcs8(pki.key.clone_key()))
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsServer::new(Arc::new(config)).with_options(self.options)
    }
}

pub fn t0() -> Instant {
    Instant::now()
}

/// The bytes `h`'s protocol received, joined.
pub fn received(sim: &Sim, h: impl Into<Handle>) -> Vec<u8> {
    sim.transcript(h)
        .into_iter()
        .filter_map(|e| match e {
            Event::Data(d) => Some(d),
            _ => None,
        })
        .flatten()
        .collect()
}

/// `h`'s transcript without its data events (whose chunking depends on the seed).
pub fn shape(sim: &Sim, h: impl Into<Handle>) -> Vec<Event> {
    sim.transcript(h)
        .into_iter()
        .filter(|e| !matches!(e, Event::Data(_) | Event::DataLen(_) | Event::Wake))
        .collect()
}

type OnData = Box<dyn FnMut(&mut Ctx<'_>, &[u8]) -> CallbackResult>;
type OnMade = Box<dyn FnMut(&mut Ctx<'_>) -> CallbackResult>;

/// An app protocol the test steers: it remembers its handle, answers EOF with
/// `keep_open`, and runs optional hooks.
#[derive(Default)]
pub struct App {
    pub handle: Rc<RefCell<Option<StreamHandle>>>,
    pub keep_open: bool,
    pub echo: bool,
    pub on_made: Option<OnMade>,
    pub on_data: Option<OnData>,
}

impl App {
    pub fn echo() -> Self {
        App { echo: true, ..App::default() }
    }
}

impl Protocol for App {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        *self.handle.borrow_mut() = Some(ctx.stream());
        match self.on_made.as_mut() {
            Some(f) => f(ctx),
            None => Ok(()),
        }
    }
    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        if self.echo {
            ctx.write_slice(ctx.stream(), data)?;
        }
        match self.on_data.as_mut() {
            Some(f) => f(ctx, data),
            None => Ok(()),
        }
    }
    fn eof_received(&mut self, _ctx: &mut Ctx<'_>) -> CallbackResult<bool> {
        Ok(self.keep_open)
    }
}

/// A repeating pattern with a prime period, so chunk boundaries never line up with it.
pub struct Pattern(Vec<u8>);

impl Pattern {
    const PERIOD: usize = 65_521;

    pub fn new() -> Self {
        let mut x: u32 = 0x9E37_79B9;
        Pattern(
            (0..Self::PERIOD)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect(),
        )
    }

    /// The `len` bytes of the stream starting at `offset`.
    pub fn bytes(&self, offset: u64, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        let mut at = (offset % Self::PERIOD as u64) as usize;
        while out.len() < len {
            let take = (len - out.len()).min(Self::PERIOD - at);
            out.extend_from_slice(&self.0[at..at + take]);
            at = 0;
        }
        out
    }

    /// True when `data` is the stream's bytes at `offset`.
    pub fn matches(&self, offset: u64, mut data: &[u8]) -> bool {
        let mut at = (offset % Self::PERIOD as u64) as usize;
        while !data.is_empty() {
            let take = data.len().min(Self::PERIOD - at);
            if data[..take] != self.0[at..at + take] {
                return false;
            }
            data = &data[take..];
            at = 0;
        }
        true
    }
}

/// A tiny deterministic generator for chunk sizes.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A TLS client and server joined by one link: the engines' sessions and raw handles.
pub struct Conn {
    pub client: TlsSession,
    pub server: TlsSession,
    pub client_raw: StreamHandle,
    pub server_raw: StreamHandle,
}

impl Conn {
    pub fn open(sim: &mut Sim, setup: &Setup, pki: &Pki, client_app: App, server_app: App) -> Conn {
        let client = setup.client().engine(client_app).unwrap();
        let server = setup.server(pki).engine(server_app).unwrap();
        let (cs, ss) = (client.session(), server.session());
        let (client_raw, server_raw) = sim.pair(client, server);
        Conn { client: cs, server: ss, client_raw, server_raw }
    }

    pub fn client_app(&self) -> StreamHandle {
        self.client.app().expect("the client's handshake completed")
    }

    pub fn server_app(&self) -> StreamHandle {
        self.server.app().expect("the server's handshake completed")
    }
}

pub fn protocol_error_source(e: &ProtocolError) -> Option<&TlsError> {
    e.source().and_then(|s| s.downcast_ref::<TlsError>())
}

/// The raw transport failed with the engine's TLS error.
pub fn raw_failed_with(sim: &Sim, raw: StreamHandle) -> TlsError {
    match sim.transcript(raw).last() {
        Some(Event::Lost(Some(ConnectionError::Protocol { error, .. }))) => {
            protocol_error_source(error).expect("the engine's TlsError").clone()
        }
        other => panic!("raw transport did not fail with a TLS error: {other:?}"),
    }
}
