//! Typed extra information about a transport: asyncio's `get_extra_info`, with types.

use core::net::SocketAddr;

/// What a transport knows about its endpoint, set by the driver when the transport enters
/// the loop (asyncio's `get_extra_info('peername')`, …). Fields are added over time, so
/// the struct is `#[non_exhaustive]`: build it with [`Extra::default`] and the `with_*`
/// methods.
///
/// ```
/// use aioport::Extra;
/// let addr = "127.0.0.1:8080".parse().unwrap();
/// let extra = Extra::default().with_peername(addr);
/// assert_eq!(extra.peername, Some(addr));
/// assert_eq!(extra.sockname, None);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Extra {
    /// The remote address (`'peername'`), for connected sockets.
    pub peername: Option<SocketAddr>,
    /// The local address (`'sockname'`).
    pub sockname: Option<SocketAddr>,
    /// The OS file descriptor (`'socket'` / `'pipe'` give the object; here its number), for
    /// setting options the driver does not expose. Only the driver may close it.
    pub fd: Option<i32>,
    /// What the TLS handshake negotiated (`'ssl_object'`, `'cipher'`, `'peercert'`): set
    /// on the app's transport of a TLS connection (feature `tls`).
    #[cfg(feature = "tls")]
    pub tls: Option<std::sync::Arc<crate::tls::TlsInfo>>,
}

impl Extra {
    /// Sets the remote address.
    pub fn with_peername(mut self, addr: SocketAddr) -> Self {
        self.peername = Some(addr);
        self
    }

    /// Sets the local address.
    pub fn with_sockname(mut self, addr: SocketAddr) -> Self {
        self.sockname = Some(addr);
        self
    }

    /// Sets the file descriptor number.
    pub fn with_fd(mut self, fd: i32) -> Self {
        self.fd = Some(fd);
        self
    }

    /// Sets the negotiated TLS parameters.
    #[cfg(feature = "tls")]
    pub fn with_tls(mut self, info: crate::tls::TlsInfo) -> Self {
        self.tls = Some(std::sync::Arc::new(info));
        self
    }
}
