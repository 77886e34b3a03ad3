//! TLS transports on rustls (feature `tls`): asyncio's `SSLProtocol` as a composition,
//! not a second transport type.
//!
//! A [`TlsEngine`] is the **protocol of the raw transport** (TCP, Unix). Once its handshake
//! completed it creates the app's transport with [`Ctx::insert_served_stream`](crate::Ctx::insert_served_stream):
//! an ordinary plaintext [`StreamTransport`](crate::StreamTransport) whose sends go
//! synchronously into the engine, so the app protocol is written exactly as over plain TCP
//! and every stream rule, the harness and the conformance suite apply unchanged.
//!
//! ```text
//!  app protocol ──write──▶ app transport ──try_send──▶ sink: rustls encrypts ──┐
//!       ▲                   (served)                                           │ ciphertext
//!       └──data_received── feed_data ◀── rustls decrypts ◀── TlsEngine ◀───────┘ (handed over
//!                                                        (raw transport's protocol)  after the
//!                                                                                    callback)
//! ```
//!
//! # Using it
//!
//! Build a [`TlsClient`] (a rustls `ClientConfig` and the server name) or a [`TlsServer`]
//! (a `ServerConfig`) once, and make one engine per connection with `engine(app)`; insert
//! the engine wherever a protocol goes (`Registry::insert_stream`, `Ctx::connect`, a
//! listener's factory). The app's `connection_made` comes after the handshake, with the
//! app's own handle; [`TlsSession`] (from [`TlsEngine::session`], or given to the app
//! factory of `engine_with`) tells what was negotiated ([`TlsInfo`]) and why a connection
//! failed ([`TlsError`]).
//!
//! A protocol that opens a TLS connection with `Ctx::connect(endpoint, engine)` hears
//! `request_completed` once the **handshake** completed — `Ok` with the app's transport,
//! after its `connection_made` — or failed, with the error as a `ConnectionError` (the
//! typed [`TlsError`] is in the session). The engine holds the connect's answer
//! ([`Ctx::hold_request`](crate::Ctx::hold_request)) until then, as asyncio's
//! `await create_connection(ssl=...)` returns only after the handshake.
//!
//! A connection that starts in plaintext upgrades with [`Ctx::start_tls`](crate::Ctx::start_tls)
//! (asyncio's `loop.start_tls`, for STARTTLS): the engine takes the open transport over
//! through the protocol swap.
//!
//! On the built-in poll loop (`aioport-poll`, feature `tls`),
//! `Loop::create_tls_connection` and `Loop::create_tls_server` do this wiring.
//!
//! The in-memory harness (`aioport::testing`, feature `testing`) runs TLS like anything
//! else; give rustls a [`VirtualTime`] so certificate validity is checked against a time
//! the test chooses:
//!
//! ```
//! # #[cfg(feature = "testing")] {
//! use std::sync::Arc;
//! use std::time::Instant;
//! use aioport::{CallbackResult, Ctx, Protocol};
//! use aioport::testing::Sim;
//! use aioport::tls::{TlsClient, TlsServer, VirtualTime, rustls};
//! use rustls::crypto::ring::default_provider;
//! use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
//!
//! struct Echo;
//! impl Protocol for Echo {
//!     fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
//!         Ok(ctx.write_slice(ctx.stream(), data)?)
//!     }
//! }
//! struct Hello;
//! impl Protocol for Hello {
//!     fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
//!         Ok(ctx.write_slice(ctx.stream(), b"hello")?)
//!     }
//! }
//!
//! // A self-signed certificate for "localhost", made at run time.
//! let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
//! let cert = rcgen::CertificateParams::new(vec!["localhost".into()])?.self_signed(&key)?;
//! let (cert, key) = (cert.der().clone(), PrivatePkcs8KeyDer::from(key.serialize_der()));
//!
//! let time = VirtualTime::from_unix_secs(1_767_225_600); // inside the validity
//! let provider = Arc::new(default_provider());
//! let mut roots = rustls::RootCertStore::empty();
//! roots.add(cert.clone())?;
//! let client = rustls::ClientConfig::builder_with_details(provider.clone(), Arc::new(time.clone()))
//!     .with_safe_default_protocol_versions()?
//!     .with_root_certificates(roots)
//!     .with_no_client_auth();
//! let server = rustls::ServerConfig::builder_with_details(provider, Arc::new(time))
//!     .with_safe_default_protocol_versions()?
//!     .with_no_client_auth()
//!     .with_single_cert(vec![cert], PrivateKeyDer::Pkcs8(key))?;
//!
//! let client = TlsClient::new(Arc::new(client), "localhost")?.engine(Hello)?;
//! let session = client.session();
//! let server = TlsServer::new(Arc::new(server)).engine(Echo)?;
//!
//! let mut sim = Sim::new(Instant::now(), 1);
//! sim.pair(client, server);
//! sim.run_until_idle();
//! let info = session.info().expect("handshake completed");
//! assert!(info.supports_half_close()); // TLS 1.3
//! assert_eq!(info.server_name.as_deref(), Some("localhost"));
//! let app = session.app().expect("the app's transport");
//! assert_eq!(sim.transcript(app)[1], aioport::testing::Event::data(b"hello"));
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The rules (spec §15, with DESIGN.md §5)
//!
//! | topic | what the engine does |
//! |---|---|
//! | handshake | the handshake timer (60 s) starts at the raw transport's `connection_made`; on success the app's transport is created and its `connection_made` follows (asyncio's order) |
//! | `start_tls` ([`Ctx::start_tls`](crate::Ctx::start_tls), STARTTLS) | the engine replaces the protocol of an open transport through the protocol swap: plaintext already written goes out first, bytes read past the upgrade point are handed over and fed first, the paused-for-writing state is inherited (gh-109051), reading resumes; the handshake timer starts at the engine's first callback; the app's `connection_made` (a new transport) is the success, a controlling protocol on another transport also hears `request_completed` |
//! | writes before the handshake completed | the app has no handle before its `connection_made` (also after a `start_tls`), so there are none |
//! | handshake failure | bad certificate, wrong name, alert, peer EOF, timeout: the alert goes out, the raw transport fails with the error, the app protocol sees neither `connection_made` nor `connection_lost`; [`TlsSession::error`] keeps it, a `Ctx::connect` requester hears it in `request_completed`; on the server side TLS errors and timeouts go to the loop's error queue as `LoopError::Reported` (a peer that merely closed or reset does not: asyncio logs no `OSError` there) |
//! | write path | an app `write` is encrypted inside the call and handed to the raw transport right after the app's callback (spec §15.4 ¶95). The engine acts like a socket whose buffer is the raw transport's room below its high-water mark, except that a write finding no ciphertext waiting is taken whole: one large write never pauses the app by itself (asyncio's fast path), and a protocol writing until `is_writing_paused()` stops after high water plus one write, as over TCP |
//! | write flow control across layers | while the raw transport is paused for writing the engine takes no plaintext: the app's transport queues it and pauses its protocol past its high-water mark; the raw transport's `resume_writing` hands over what waited and pulls the app's queue in order |
//! | `write_buffer_size()` of the app's transport | its queue + ciphertext the engine holds, not yet handed to the raw transport (spec §15.4 ¶96) |
//! | read back-pressure | decrypted data waits in the app's transport while its protocol paused reading; past 256 KiB the engine pauses the raw transport's reading, and resumes it at 64 KiB or once the app reads |
//! | `close()` | the app's queue is flushed, then `close_notify`; the raw transport closes once the peer's `close_notify` (or TCP EOF) arrived, or fails after the shutdown timeout (30 s, counted from `close()`). The app's `connection_lost` follows the raw transport's: `None`, or `Timeout` after the shutdown timeout (asyncio's order) |
//! | `abort()` | queues dropped, no `close_notify`, the raw transport aborted (the sink's `Io::abort`, also after a fatal error or a panic of the app); [`TlsSession::abort`] also works during the handshake |
//! | peer's `close_notify` | EOF for the app, after the data before it; TLS 1.3 honours a keep-open answer (the app may still write, then close); TLS 1.2 closes whatever the answer |
//! | peer's TCP EOF without `close_notify` | EOF for the app as well (asyncio does the same); the raw transport stays open while the app keeps its side open |
//! | `write_eof()` | TLS 1.3: `close_notify` after the queued data, reading continues (half-close; cpython#86366). TLS 1.2 has no half-close: `can_write_eof()` is false and `write_eof()` is refused at the call (`HandleError::WrongKind`, asyncio's `NotImplementedError`); the connection is unchanged, nothing written before is lost |
//! | extra info | the raw transport's [`Extra`](crate::Extra) is copied to the app's transport, with the TLS parameters ([`TlsInfo`]) in `Extra::tls` (also in [`TlsSession::info`]) |
//! | timers | both timeouts are the engine's protocol timer (`poll_timeout` / `handle_timeout`): virtual in the harness |
//!
//! ## Where the core still limits the engine
//!
//! * The raw transport fails with `ConnectionError::Protocol` wrapping the [`TlsError`]
//!   (the engine returns it from its callback); the app's transport gets the typed
//!   `ConnectionError::Tls` / `Timeout`.
//! * The app's transport is served by the engine: if the engine itself panicked (a bug;
//!   the loop's error hook is told and the raw transport aborted), nobody ends the app's
//!   transport — it stays open, or closing after a `close()`, until the loop is dropped.

mod config;
mod engine;
mod error;
mod info;
mod sink;
mod start;
mod time;

pub use rustls;

pub use config::{TlsClient, TlsOptions, TlsServer};
pub use engine::TlsEngine;
pub use error::TlsError;
pub use info::{TlsInfo, TlsSession};
pub use time::VirtualTime;
