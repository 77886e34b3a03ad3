//! `start_tls`: TLS on a connection that is already open (STARTTLS), through the
//! protocol swap.

use super::TlsEngine;
use crate::{Ctx, HandleError, RequestId, StreamHandle};

impl Ctx<'_> {
    /// Upgrades the open stream transport `h` to TLS (asyncio's
    /// `await loop.start_tls(transport, protocol, sslcontext)`, for STARTTLS-style
    /// protocols): `engine` — from [`TlsClient::engine`](super::TlsClient::engine) or
    /// [`TlsServer::engine`](super::TlsServer::engine), with the app protocol that runs
    /// over TLS — becomes `h`'s protocol, and the handshake starts after the current
    /// callback.
    ///
    /// At the switch (the rules of [`set_protocol`](Self::set_protocol)):
    ///
    /// * **bytes already written** to `h` are sent first, in plaintext; the engine's
    ///   records follow them. (Bytes written to `h` after this call would follow too, in
    ///   plaintext inside the TLS stream: `h` belongs to the engine from now on.)
    /// * **bytes already read past the upgrade point** — the rest of the `data_received`
    ///   slice after the line that asked for TLS — are passed as `received`; the engine
    ///   feeds them to rustls before anything else. Data `h` holds undelivered (reading
    ///   was paused) goes to the engine after them. No byte is lost or read twice.
    /// * the **paused-for-writing** state is inherited: if `h` is paused, the engine's
    ///   first callback is `pause_writing` and its `resume_writing` follows when `h`
    ///   drains (gh-109051; asyncio's SSL protocol asserts there instead).
    /// * reading on `h` is resumed (asyncio does the same); the engine manages it from now
    ///   on. The calling protocol, when it is `h`'s, receives nothing more.
    ///
    /// The outcome: on success the app protocol receives `connection_made` with its own
    /// (new) handle once the handshake completed — asyncio returns the new transport then
    /// (the protocol object was the same there, so it saw no second `connection_made`;
    /// here the app protocol is a new object, and this is how it learns its transport).
    /// On failure the app protocol sees nothing, `h` fails with the error, and the
    /// engine's [`TlsSession`](super::TlsSession) (take it with
    /// [`TlsEngine::session`] before this call) keeps it. When the caller is another
    /// transport's protocol (a relay or a controller), it also hears
    /// [`request_completed`](crate::Protocol::request_completed) with the returned id:
    /// `Ok(app transport)` after the app's `connection_made`, or the error — as for a TLS
    /// connection opened with [`connect`](Self::connect).
    ///
    /// ```
    /// # #[cfg(feature = "testing")] {
    /// # use std::sync::Arc;
    /// # use std::time::Instant;
    /// # use aioport::{CallbackResult, Ctx, Protocol};
    /// # use aioport::testing::{Event, Sim};
    /// # use aioport::tls::{TlsClient, TlsEngine, TlsServer, rustls};
    /// # use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    /// # let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
    /// # let cert = rcgen::CertificateParams::new(vec!["localhost".into()])?.self_signed(&key)?;
    /// # let (cert, key) = (cert.der().clone(), PrivatePkcs8KeyDer::from(key.serialize_der()));
    /// # let provider = Arc::new(rustls::crypto::ring::default_provider());
    /// # let mut roots = rustls::RootCertStore::empty();
    /// # roots.add(cert.clone())?;
    /// # let client = rustls::ClientConfig::builder_with_provider(provider.clone())
    /// #     .with_safe_default_protocol_versions()?
    /// #     .with_root_certificates(roots)
    /// #     .with_no_client_auth();
    /// # let server = rustls::ServerConfig::builder_with_provider(provider)
    /// #     .with_safe_default_protocol_versions()?
    /// #     .with_no_client_auth()
    /// #     .with_single_cert(vec![cert], PrivateKeyDer::Pkcs8(key))?;
    /// # let (client, server) = (Arc::new(client), Arc::new(server));
    /// /// The client: asks for TLS and switches at once; its ClientHello follows the line.
    /// struct Asking(Option<TlsEngine>);
    /// impl Protocol for Asking {
    ///     fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
    ///         let h = ctx.stream();
    ///         ctx.write_slice(h, b"STARTTLS\r\n")?;
    ///         ctx.start_tls(h, self.0.take().expect("once"), b"")?;
    ///         Ok(())
    ///     }
    /// }
    /// /// The server: plaintext until the line, TLS (an echo) after it.
    /// struct Upgrading(Option<TlsServer>, Vec<u8>);
    /// impl Protocol for Upgrading {
    ///     fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
    ///         self.1.extend_from_slice(data);
    ///         if self.1.len() >= 10 {
    ///             let rest = self.1.split_off(10); // the ClientHello, or a part of it
    ///             assert_eq!(self.1, b"STARTTLS\r\n");
    ///             let tls = self.0.take().expect("once");
    ///             ctx.start_tls(ctx.stream(), tls.engine(Echo)?, &rest)?;
    ///         }
    ///         Ok(())
    ///     }
    /// }
    /// struct Echo;
    /// impl Protocol for Echo {
    ///     fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
    ///         Ok(ctx.write_slice(ctx.stream(), data)?)
    ///     }
    /// }
    /// struct Hello;
    /// impl Protocol for Hello {
    ///     fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
    ///         Ok(ctx.write_slice(ctx.stream(), b"hello")?)
    ///     }
    /// }
    ///
    /// let engine = TlsClient::new(client, "localhost")?.engine(Hello)?;
    /// let session = engine.session();
    /// let mut sim = Sim::new(Instant::now(), 1);
    /// sim.pair(Asking(Some(engine)), Upgrading(Some(TlsServer::new(server)), Vec::new()));
    /// sim.run_until_idle();
    /// let app = session.app().expect("the handshake completed");
    /// assert_eq!(sim.transcript(app), [Event::Made, Event::data(b"hello")]);
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`HandleError`] when `h` is not a live stream transport whose protocol can be
    /// replaced (as [`set_protocol`](Self::set_protocol)); `engine` is dropped then.
    pub fn start_tls(
        &mut self,
        h: StreamHandle,
        mut engine: TlsEngine,
        received: &[u8],
    ) -> Result<RequestId, HandleError> {
        // Checked first: a refused call changes nothing.
        self.is_closing(h)?;
        let (id, request) = self.request_for_caller(h);
        engine.prepare_upgrade(received, request);
        self.set_protocol(h, Box::new(engine))?;
        self.owe_wake(h);
        self.resume_reading(h)?;
        Ok(id)
    }
}
