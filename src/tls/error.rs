//! [`TlsError`]: why a TLS connection could not be set up or was lost.

use std::time::Duration;

use crate::ConnectionError;

/// Why a TLS connection failed.
///
/// It reaches these places: the app protocol's `connection_lost` (as a [`ConnectionError`],
/// see [`to_connection_error`](Self::to_connection_error)) when the connection was already
/// established; [`TlsSession::error`](super::TlsSession::error) always; the
/// `request_completed` of a protocol that opened the connection with `Ctx::connect` (as a
/// `ConnectionError`) when the handshake failed; and, for handshake failures on the
/// server side, the loop's error queue
/// ([`Registry::poll_error`](crate::Registry::poll_error), as `LoopError::Reported`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The handshake failed: a certificate the verifier rejected (unknown issuer, expired,
    /// wrong name, …), an alert from the peer, no common version or cipher suite.
    #[error("TLS handshake failed: {0}")]
    Handshake(rustls::Error),
    /// An established connection failed: a record that does not decrypt, an alert from
    /// the peer, a protocol violation.
    #[error("TLS error: {0}")]
    Protocol(rustls::Error),
    /// The handshake did not complete in time (`TlsOptions::handshake_timeout`, 60 s by
    /// default); the connection was aborted.
    #[error("TLS handshake did not complete within {0:?}: the connection was aborted")]
    HandshakeTimeout(Duration),
    /// After `close()`, the peer did not answer our `close_notify` in time
    /// (`TlsOptions::shutdown_timeout`, 30 s by default); the connection was aborted.
    /// Use `abort()` to skip the wait (aiohttp#11091).
    #[error("TLS shutdown: no close_notify from the peer within {0:?}: the connection was aborted")]
    ShutdownTimeout(Duration),
    /// The peer closed the TCP connection before the handshake completed.
    #[error("the peer closed the connection during the TLS handshake")]
    PeerClosed,
    /// The raw connection was lost (reset, aborted, failed) before the handshake completed.
    #[error("the connection was lost during the TLS handshake{}", reason_suffix(.0))]
    ConnectionLost(Option<ConnectionError>),
    /// The name given for the server is neither a DNS name nor an IP address.
    #[error("invalid TLS server name {0:?}: expected a DNS name or an IP address")]
    InvalidServerName(String),
    /// rustls refused to create the connection (an inconsistent configuration).
    #[error("cannot start a TLS connection: {0}")]
    Config(rustls::Error),
}

fn reason_suffix(reason: &Option<ConnectionError>) -> String {
    reason.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
}

impl TlsError {
    /// The reason the app protocol's `connection_lost` receives: timeouts are
    /// [`ConnectionError::Timeout`], a lost raw connection keeps its own reason, the rest
    /// are [`ConnectionError::Tls`].
    pub fn to_connection_error(&self) -> ConnectionError {
        match self {
            TlsError::HandshakeTimeout(_) | TlsError::ShutdownTimeout(_) => {
                ConnectionError::Timeout(self.to_string())
            }
            TlsError::ConnectionLost(Some(e)) => e.clone(),
            _ => ConnectionError::Tls(self.to_string()),
        }
    }

    /// True when a certificate was rejected (by us or, through its alert, by the peer).
    pub fn is_certificate_error(&self) -> bool {
        use rustls::{AlertDescription as A, Error as E};
        match self {
            TlsError::Handshake(e) | TlsError::Protocol(e) => matches!(
                e,
                E::InvalidCertificate(_)
                    | E::NoCertificatesPresented
                    | E::AlertReceived(
                        A::BadCertificate
                            | A::UnsupportedCertificate
                            | A::CertificateRevoked
                            | A::CertificateExpired
                            | A::CertificateUnknown
                            | A::UnknownCA
                            | A::CertificateRequired
                    )
            ),
            _ => false,
        }
    }

    /// Whether a server-side handshake failure goes to the loop's error queue: TLS errors
    /// and timeouts do; a peer that closed or reset the connection does not (asyncio logs
    /// no `OSError` from a failed handshake: port scanners and health checks would flood
    /// the log).
    pub(super) fn is_reported(&self) -> bool {
        matches!(self, TlsError::Handshake(_) | TlsError::HandshakeTimeout(_))
    }
}
