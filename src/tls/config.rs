//! What a TLS connection is built from: a rustls configuration, the server name a client
//! verifies, and the engine's [`TlsOptions`].

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection};

use super::engine::{AppFactory, TlsEngine};
use super::{TlsError, TlsSession};
use crate::{LimitsError, Protocol};

/// The engine's limits and timeouts. The defaults are asyncio's (spec §15).
///
/// ```
/// use std::time::Duration;
/// use aioport::tls::TlsOptions;
/// let options = TlsOptions::default().with_shutdown_timeout(Some(Duration::from_secs(5)));
/// assert_eq!(options.handshake_timeout(), Some(Duration::from_secs(60)));
/// assert_eq!(options.read_limits(), (256 * 1024, 64 * 1024));
/// assert!(options.with_read_limits(1, 2).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsOptions {
    handshake_timeout: Option<Duration>,
    shutdown_timeout: Option<Duration>,
    read_high: usize,
    read_low: usize,
}

impl Default for TlsOptions {
    fn default() -> Self {
        TlsOptions {
            handshake_timeout: Some(Duration::from_secs(60)),
            shutdown_timeout: Some(Duration::from_secs(30)),
            read_high: 256 * 1024,
            read_low: 64 * 1024,
        }
    }
}

impl TlsOptions {
    /// How long the handshake may take before the connection is aborted with
    /// [`TlsError::HandshakeTimeout`] (`None`: no limit). Default 60 s.
    pub fn with_handshake_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// How long `close()` waits for the peer's `close_notify` before the connection is
    /// aborted with [`TlsError::ShutdownTimeout`] (`None`: no limit). Default 30 s.
    pub fn with_shutdown_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Read back-pressure: once more than `high` bytes of decrypted data wait for an app
    /// that paused reading, the engine stops reading the raw transport; it reads again at
    /// `low` or below. Default 256 KiB / 64 KiB (asyncio's `_control_ssl_reading`).
    ///
    /// # Errors
    ///
    /// [`LimitsError::HighBelowLow`] when `high < low`; the options are then unchanged.
    pub fn with_read_limits(mut self, high: usize, low: usize) -> Result<Self, LimitsError> {
        if high < low {
            return Err(LimitsError::HighBelowLow { high, low });
        }
        self.read_high = high;
        self.read_low = low;
        Ok(self)
    }

    /// The handshake timeout.
    pub fn handshake_timeout(&self) -> Option<Duration> {
        self.handshake_timeout
    }

    /// The shutdown timeout.
    pub fn shutdown_timeout(&self) -> Option<Duration> {
        self.shutdown_timeout
    }

    /// The read limits `(high, low)`.
    pub fn read_limits(&self) -> (usize, usize) {
        (self.read_high, self.read_low)
    }
}

/// The client side of TLS connections: a rustls client configuration, the server name to
/// verify (and send as SNI), and the engine's options. Cheap to clone; one per target.
///
/// [`engine`](Self::engine) makes the protocol of a raw (TCP or Unix) connection; the app
/// protocol runs on top of it once the handshake completed.
#[derive(Debug, Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    options: TlsOptions,
}

impl TlsClient {
    /// Connections to `server_name` (a DNS name or an IP address) with `config`.
    ///
    /// # Errors
    ///
    /// [`TlsError::InvalidServerName`].
    pub fn new(config: Arc<ClientConfig>, server_name: &str) -> Result<Self, TlsError> {
        let server_name = ServerName::try_from(server_name.to_owned())
            .map_err(|_| TlsError::InvalidServerName(server_name.to_owned()))?;
        Ok(TlsClient { config, server_name, options: TlsOptions::default() })
    }

    /// Replaces the engine's options.
    pub fn with_options(mut self, options: TlsOptions) -> Self {
        self.options = options;
        self
    }

    /// The options.
    pub fn options(&self) -> &TlsOptions {
        &self.options
    }

    /// The server name verified and sent as SNI.
    pub fn server_name(&self) -> &ServerName<'static> {
        &self.server_name
    }

    /// The protocol of one raw connection, running `app` once the handshake completed.
    ///
    /// # Errors
    ///
    /// [`TlsError::Config`] when rustls refuses the configuration.
    pub fn engine(&self, app: impl Protocol + 'static) -> Result<TlsEngine, TlsError> {
        self.engine_with(move |_| Box::new(app))
    }

    /// Like [`engine`](Self::engine), with the app protocol built when the handshake
    /// completed, from the session (its [`TlsInfo`](super::TlsInfo): version, cipher
    /// suite, ALPN, peer certificates).
    ///
    /// # Errors
    ///
    /// [`TlsError::Config`] when rustls refuses the configuration.
    pub fn engine_with(
        &self,
        app: impl FnOnce(&TlsSession) -> Box<dyn Protocol> + 'static,
    ) -> Result<TlsEngine, TlsError> {
        let conn = ClientConnection::new(self.config.clone(), self.server_name.clone())
            .map_err(TlsError::Config)?;
        let sni = match &self.server_name {
            ServerName::DnsName(name) => Some(name.as_ref().to_owned()),
            _ => None,
        };
        Ok(TlsEngine::new(conn.into(), sni, self.options, Box::new(app) as AppFactory))
    }
}

/// The server side of TLS connections: a rustls server configuration and the engine's
/// options. Cheap to clone; one per listening socket.
#[derive(Debug, Clone)]
pub struct TlsServer {
    config: Arc<ServerConfig>,
    options: TlsOptions,
}

impl TlsServer {
    /// Connections accepted with `config`.
    pub fn new(config: Arc<ServerConfig>) -> Self {
        TlsServer { config, options: TlsOptions::default() }
    }

    /// Replaces the engine's options.
    pub fn with_options(mut self, options: TlsOptions) -> Self {
        self.options = options;
        self
    }

    /// The options.
    pub fn options(&self) -> &TlsOptions {
        &self.options
    }

    /// The protocol of one accepted raw connection, running `app` once the handshake
    /// completed.
    ///
    /// # Errors
    ///
    /// [`TlsError::Config`] when rustls refuses the configuration.
    pub fn engine(&self, app: impl Protocol + 'static) -> Result<TlsEngine, TlsError> {
        self.engine_with(move |_| Box::new(app))
    }

    /// Like [`engine`](Self::engine), with the app protocol built when the handshake
    /// completed, from the session.
    ///
    /// # Errors
    ///
    /// [`TlsError::Config`] when rustls refuses the configuration.
    pub fn engine_with(
        &self,
        app: impl FnOnce(&TlsSession) -> Box<dyn Protocol> + 'static,
    ) -> Result<TlsEngine, TlsError> {
        let conn = ServerConnection::new(self.config.clone()).map_err(TlsError::Config)?;
        Ok(TlsEngine::new(conn.into(), None, self.options, Box::new(app) as AppFactory))
    }
}
