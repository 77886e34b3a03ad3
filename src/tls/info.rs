//! Typed extra information about a TLS connection ([`TlsInfo`]) and the handle that
//! observes one connection from outside its callbacks ([`TlsSession`]).

use std::cell::{Cell, OnceCell, RefCell};
use std::rc::Rc;

use rustls::pki_types::CertificateDer;
use rustls::{CipherSuite, Connection, ProtocolVersion};

use super::TlsError;
use crate::{Ctx, HandleError, StreamHandle};

/// What the handshake negotiated: asyncio's `get_extra_info('ssl_object')`, `'cipher'`,
/// `'peercert'`, with types. Fields are added over time, so the struct is
/// `#[non_exhaustive]`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsInfo {
    /// The protocol version (`TLSv1_3`, `TLSv1_2`).
    pub version: ProtocolVersion,
    /// The cipher suite (for example `TLS13_AES_256_GCM_SHA384`).
    pub cipher_suite: CipherSuite,
    /// The application protocol chosen by ALPN, if any.
    pub alpn: Option<Vec<u8>>,
    /// The server name: the one a client verified and sent; the SNI a server received.
    pub server_name: Option<String>,
    /// The peer's certificate chain, end entity first (DER). Empty when the peer sent none
    /// (a client without a client certificate).
    pub peer_certificates: Vec<CertificateDer<'static>>,
}

impl TlsInfo {
    pub(super) fn from_connection(conn: &Connection, client_sni: Option<&str>) -> Option<Self> {
        let server_name = match conn {
            Connection::Client(_) => client_sni.map(str::to_owned),
            Connection::Server(s) => s.server_name().map(str::to_owned),
        };
        Some(TlsInfo {
            version: conn.protocol_version()?,
            cipher_suite: conn.negotiated_cipher_suite()?.suite(),
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
            server_name,
            peer_certificates: conn.peer_certificates().map(<[_]>::to_vec).unwrap_or_default(),
        })
    }

    /// True when the connection supports half-close (`write_eof` sends `close_notify` and
    /// keeps reading; a keep-open answer to `eof_received` is honoured): TLS 1.3 only.
    pub fn supports_half_close(&self) -> bool {
        self.version == ProtocolVersion::TLSv1_3
    }
}

/// Shared between the engine, its sink and every [`TlsSession`] clone.
#[derive(Debug, Default)]
pub(super) struct SessionState {
    pub(super) info: OnceCell<TlsInfo>,
    pub(super) error: RefCell<Option<TlsError>>,
    pub(super) raw: Cell<Option<StreamHandle>>,
    pub(super) app: Cell<Option<StreamHandle>>,
}

/// Observes one TLS connection from outside its callbacks: what the handshake negotiated,
/// why it failed, the handles of both layers. Cheap to clone (`Rc`); not `Send`, like the
/// loop it belongs to.
///
/// Get one from [`TlsEngine::session`](super::TlsEngine::session), or in the app factory
/// of [`TlsClient::engine_with`](super::TlsClient::engine_with).
#[derive(Debug, Clone)]
pub struct TlsSession(pub(super) Rc<SessionState>);

impl TlsSession {
    /// What the handshake negotiated; `None` until it completed.
    pub fn info(&self) -> Option<&TlsInfo> {
        self.0.info.get()
    }

    /// True once the handshake completed.
    pub fn is_established(&self) -> bool {
        self.0.info.get().is_some()
    }

    /// Why the connection failed, if it did (a handshake failure, a timeout, a TLS error).
    /// A clean close leaves it `None`.
    pub fn error(&self) -> Option<TlsError> {
        self.0.error.borrow().clone()
    }

    /// The raw transport (the engine's), once it is connected.
    pub fn raw(&self) -> Option<StreamHandle> {
        self.0.raw.get()
    }

    /// The app's transport, once the handshake completed.
    pub fn app(&self) -> Option<StreamHandle> {
        self.0.app.get()
    }

    /// Aborts the connection without the TLS shutdown: no `close_notify`, no wait for the
    /// peer's, queues dropped, the raw transport aborted. `ctx.abort(app)` on the app's
    /// transport does the same; this also works during the handshake, before the app's
    /// transport exists.
    ///
    /// # Errors
    ///
    /// [`HandleError`] when neither transport is live.
    pub fn abort(&self, ctx: &mut Ctx<'_>) -> Result<(), HandleError> {
        match (self.app(), self.raw()) {
            (Some(app), Some(raw)) => {
                // The app transport may already be gone (closed, the shutdown running).
                let r = ctx.abort(app);
                ctx.abort(raw).or(r)
            }
            (None, Some(raw)) => ctx.abort(raw),
            _ => Err(HandleError::Stale),
        }
    }
}
