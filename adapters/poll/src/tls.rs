//! TLS on the loop (feature `tls`): asyncio's `create_connection(ssl=...)` and
//! `create_server(ssl=...)`.
//!
//! Nothing here is a second transport type: the loop opens an ordinary TCP (or Unix)
//! connection whose protocol is an [`aioport::tls::TlsEngine`], and the engine serves the
//! app protocol a plaintext stream transport once the handshake completed. The loop only
//! waits for the handshake's outcome, which the engine keeps in its [`TlsSession`].

use std::net::ToSocketAddrs;

use aioport::tls::{TlsClient, TlsEngine, TlsServer, TlsSession};
use aioport::{Endpoint, Protocol, StreamHandle};
use aioport_async_kit::tls::{handshake_outcome, server_factory};

use crate::event_loop::RunGuard;
use crate::{Error, Loop, Server, ServerOptions};

impl Loop {
    /// Connects to `endpoint` (TCP, a host name, or a Unix socket path), runs the TLS
    /// handshake described by `tls`, and returns once it completed (asyncio's
    /// `await loop.create_connection(factory, host, port, ssl=ctx)`): the app's transport
    /// — `app`'s `connection_made` was delivered — and the session, which tells what was
    /// negotiated ([`TlsSession::info`]). Other transports are served meanwhile.
    ///
    /// The handshake is bounded by [`TlsOptions::handshake_timeout`](aioport::tls::TlsOptions::handshake_timeout)
    /// (60 s by default). From inside a callback use [`Ctx::connect`](aioport::Ctx::connect) with
    /// [`TlsClient::engine`]: its `request_completed` likewise waits for the handshake and
    /// names the app's transport.
    ///
    /// # Errors
    ///
    /// [`Error::Connect`] when the TCP (or Unix) connection failed; [`Error::Tls`] when the
    /// handshake failed — [`TlsError::Handshake`](aioport::tls::TlsError::Handshake) for a rejected certificate or a wrong
    /// name (see [`TlsError::is_certificate_error`](aioport::tls::TlsError::is_certificate_error)), [`TlsError::PeerClosed`](aioport::tls::TlsError::PeerClosed),
    /// [`TlsError::HandshakeTimeout`](aioport::tls::TlsError::HandshakeTimeout), [`TlsError::ConnectionLost`](aioport::tls::TlsError::ConnectionLost) — or rustls refused the
    /// configuration ([`TlsError::Config`](aioport::tls::TlsError::Config)); `app` then saw no callback at all.
    /// [`Error::AlreadyRunning`] and [`Error::Io`] as for
    /// [`create_connection`](Self::create_connection).
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::sync::Arc;
    /// use aioport::{CallbackResult, Ctx, Endpoint, Protocol};
    /// use aioport::tls::{TlsClient, TlsServer, rustls};
    /// use aioport::tls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    /// use aioport_poll::{Loop, ServerOptions};
    ///
    /// struct Echo;
    /// impl Protocol for Echo {
    ///     fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
    ///         Ok(ctx.write_slice(ctx.stream(), data)?)
    ///     }
    /// }
    /// struct Quiet;
    /// impl Protocol for Quiet {}
    ///
    /// // A self-signed certificate for "localhost", made at run time.
    /// let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
    /// let cert = rcgen::CertificateParams::new(vec!["localhost".into()])?.self_signed(&key)?;
    /// let (cert, key) = (cert.der().clone(), PrivatePkcs8KeyDer::from(key.serialize_der()));
    /// let provider = Arc::new(rustls::crypto::ring::default_provider());
    /// let mut roots = rustls::RootCertStore::empty();
    /// roots.add(cert.clone())?;
    /// let client = rustls::ClientConfig::builder_with_provider(provider.clone())
    ///     .with_safe_default_protocol_versions()?
    ///     .with_root_certificates(roots)
    ///     .with_no_client_auth();
    /// let server = rustls::ServerConfig::builder_with_provider(provider)
    ///     .with_safe_default_protocol_versions()?
    ///     .with_no_client_auth()
    ///     .with_single_cert(vec![cert], PrivateKeyDer::Pkcs8(key))?;
    ///
    /// let mut lp = Loop::new()?;
    /// let tls_server = TlsServer::new(Arc::new(server));
    /// let srv = lp.create_tls_server("127.0.0.1:0", tls_server, |_| Box::new(Echo),
    ///                                ServerOptions::default())?;
    /// let tls_client = TlsClient::new(Arc::new(client), "localhost")?;
    /// let (app, session) =
    ///     lp.create_tls_connection(Endpoint::Addr(srv.addr()), &tls_client, Box::new(Quiet))?;
    /// assert!(session.info().is_some_and(|i| i.supports_half_close()));
    /// lp.with(|ctx| ctx.close(app))?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn create_tls_connection(
        &mut self,
        endpoint: Endpoint,
        tls: &TlsClient,
        app: Box<dyn Protocol>,
    ) -> Result<(StreamHandle, TlsSession), Error> {
        let tls_error = |error| Error::Tls { endpoint: Some(endpoint.clone()), error };
        let engine = tls.engine_with(move |_| app).map_err(tls_error)?;
        let session = engine.session();
        self.create_connection(endpoint.clone(), Box::new(engine))?;
        let _guard = RunGuard::enter()?;
        // The engine's handshake timer bounds this wait (unless the options removed it).
        loop {
            if let Some(outcome) = handshake_outcome(&session, &self.registry) {
                return outcome.map(|app| (app, session)).map_err(tls_error);
            }
            self.turn(None)?;
        }
    }

    /// Upgrades the open stream transport `h` to TLS and returns once the handshake
    /// completed (asyncio's `await loop.start_tls(transport, protocol, sslcontext)`, for
    /// STARTTLS): `engine` (from [`TlsClient::engine`] or [`TlsServer::engine`], with the
    /// app protocol that runs over TLS) takes `h` over through the protocol swap, as
    /// [`Ctx::start_tls`](aioport::Ctx::start_tls) describes — what was written to `h` goes out first, in
    /// plaintext; `received` are bytes already read past the upgrade point; the paused
    /// state is inherited. Returns the app's transport (its `connection_made` was
    /// delivered) and the session. From inside a callback use [`Ctx::start_tls`](aioport::Ctx::start_tls).
    ///
    /// # Errors
    ///
    /// [`Error::StartTls`] when `h` names no live stream transport (nothing changed);
    /// [`Error::Tls`] when the handshake failed (`h` failed with it; the app saw no
    /// callback). [`Error::AlreadyRunning`] inside a callback.
    pub fn start_tls(
        &mut self,
        h: StreamHandle,
        engine: TlsEngine,
        received: &[u8],
    ) -> Result<(StreamHandle, TlsSession), Error> {
        // Taken first: a refused call changes nothing.
        let _guard = RunGuard::enter()?;
        let session = engine.session();
        self.with(|ctx| ctx.start_tls(h, engine, received)).map_err(Error::StartTls)?;
        // The engine's handshake timer bounds this wait (unless the options removed it).
        loop {
            if let Some(outcome) = handshake_outcome(&session, &self.registry) {
                return outcome
                    .map(|app| (app, session))
                    .map_err(|error| Error::Tls { endpoint: None, error });
            }
            self.turn(None)?;
        }
    }

    /// Listens on every address `addr` resolves to and runs TLS (described by `tls`) on
    /// every accepted connection (asyncio's `create_server(..., ssl=ctx)`). `factory`
    /// builds a connection's app protocol once its handshake completed, from its
    /// [`TlsSession`] — so it can choose by what was negotiated (ALPN, SNI, the client's
    /// certificate) — and the protocol's `connection_made` follows at once.
    ///
    /// A failed handshake never reaches `factory` or an app protocol. TLS errors and
    /// handshake timeouts go to the loop's error hook
    /// ([`ErrorReport::Callback`](crate::ErrorReport::Callback) with
    /// [`LoopError::Reported`](aioport::LoopError::Reported), the [`TlsError`](aioport::tls::TlsError) as the
    /// error's source); a peer that merely closed or reset does not (asyncio logs no
    /// `OSError` there: port scanners and health checks would flood the log).
    ///
    /// # Errors
    ///
    /// As [`create_server`](Self::create_server).
    pub fn create_tls_server(
        &mut self,
        addr: impl ToSocketAddrs,
        tls: TlsServer,
        factory: impl FnMut(&TlsSession) -> Box<dyn Protocol> + 'static,
        options: ServerOptions,
    ) -> Result<Server, Error> {
        self.create_server(addr, server_factory(tls, factory), options)
    }
}
