//! The loop's errors: [`Error`] for calls that fail, [`ErrorReport`] for the error hook.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use aioport::{ConnectionError, DatagramAddr, DriverError, Endpoint, Handle, LoopError};

/// A loop call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The loop's `create_connection` could not connect; the
    /// protocol was dropped without a callback.
    #[error("cannot connect to {endpoint:?}: {error}")]
    Connect {
        /// Where to.
        endpoint: Endpoint,
        /// Why (refused, unreachable, name not resolved, …).
        error: ConnectionError,
    },
    /// A listening socket could not be set up.
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why (address in use, permission denied, …).
        error: io::Error,
    },
    /// A Unix listening socket could not be set up.
    #[error("cannot listen on {path:?}: {error}")]
    BindUnix {
        /// The path.
        path: PathBuf,
        /// Why (the path exists, permission denied, …).
        error: io::Error,
    },
    /// A pipe transport (`connect_read_pipe` / `connect_write_pipe`) was asked for a
    /// descriptor the loop cannot wait on: a regular file, directory or block device is
    /// always "ready" (asyncio raises `ValueError`). Read the file with blocking I/O, or
    /// on a helper thread.
    #[error("pipe transports are only for pipes, sockets and character devices, not {kind}")]
    NotAPipe {
        /// What the descriptor is ("a regular file", "a directory", …).
        kind: &'static str,
    },
    /// The loop's `create_datagram_endpoint` could not create, configure, bind or connect
    /// its socket; no transport was left open.
    #[error("cannot open a datagram endpoint (local {local:?}, remote {remote:?}): {error}")]
    Datagram {
        /// The local address asked for.
        local: Option<DatagramAddr>,
        /// The remote address asked for.
        remote: Option<DatagramAddr>,
        /// Why (address in use, no such file, IPv6 unavailable, …).
        error: io::Error,
    },
    /// The addresses given to the loop's `create_datagram_endpoint` do not make an
    /// endpoint.
    #[error("no datagram endpoint for local {local:?} and remote {remote:?}: {why}")]
    DatagramAddress {
        /// The local address given.
        local: Option<DatagramAddr>,
        /// The remote address given.
        remote: Option<DatagramAddr>,
        /// What to change.
        why: &'static str,
    },
    /// The loop's `subprocess_exec` / `subprocess_shell` could not start the program; the
    /// protocol was dropped without a callback.
    #[error("cannot start {program:?}: {error}")]
    Spawn {
        /// The program.
        program: std::ffi::OsString,
        /// Why (not found, permission denied, out of descriptors, no pidfd support).
        error: io::Error,
    },
    /// The loop's `wait_subprocess` was given a handle whose transport is gone (its
    /// `connection_lost` was delivered: read the return code in `process_exited`) or that
    /// names no subprocess.
    #[error("no such subprocess: {0}")]
    NoSuchProcess(aioport::HandleError),
    /// The address given to `create_server` resolved to nothing.
    #[error("no address to listen on")]
    NoAddress,
    /// The loop's `run_until_timeout` ran out of time before
    /// its condition held.
    #[error("timed out before the condition held")]
    TimedOut,
    /// The loop's `sendfile` was refused at the start (a zero count, a closing transport,
    /// no zero-copy with the fallback denied, a stale handle) or stopped (the transport
    /// was closed or failed, the file could not be read): the
    /// [`SendfileError`](aioport::stream::SendfileError) says which.
    #[error("sendfile failed: {0}")]
    Sendfile(#[from] aioport::stream::SendfileError),
    /// Resolving the address to listen on failed.
    #[error("cannot resolve the address: {0}")]
    Io(#[from] io::Error),
    /// `start_tls` was refused (feature `tls`): the handle names no live stream transport
    /// whose protocol can be replaced (see [`Ctx::start_tls`](aioport::Ctx::start_tls)).
    #[cfg(feature = "tls")]
    #[error("start_tls refused: {0}")]
    StartTls(aioport::HandleError),
    /// A TLS connection could not be set up (feature `tls`): the handshake failed or timed
    /// out, or rustls refused the configuration. The app protocol saw no callback.
    #[cfg(feature = "tls")]
    #[error("TLS with {endpoint:?} failed: {error}")]
    Tls {
        /// The peer, for a client connection.
        endpoint: Option<Endpoint>,
        /// Why: [`TlsError::is_certificate_error`](aioport::tls::TlsError::is_certificate_error)
        /// tells a rejected certificate (or name) from the rest.
        error: aioport::tls::TlsError,
    },
}

/// What the loop hands its error hook (the loop's `set_error_handler`):
/// asyncio's exception handler context. None of these stops the loop.
#[derive(Debug)]
#[non_exhaustive]
pub enum ErrorReport {
    /// A protocol callback failed without ending its connection, or panicked (its
    /// transport was aborted; other transports are unaffected). From
    /// [`Registry::poll_error`](aioport::Registry::poll_error).
    Callback(LoopError),
    /// `accept()` failed on a server's listening socket. When the process ran out of file
    /// descriptors or memory, that listener pauses for one second, as asyncio's does.
    Accept {
        /// The server.
        server: ServerId,
        /// The error.
        error: io::Error,
    },
    /// The core refused a driver call: a bug in this loop, reported rather than panicking.
    Driver {
        /// The transport.
        handle: Handle,
        /// The error.
        error: DriverError,
    },
    /// The registry dropped errors because the queue was full before the hook ran.
    Dropped(u64),
}

impl std::fmt::Display for ErrorReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ErrorReport::Callback(e) => write!(f, "{e}"),
            ErrorReport::Accept { server, error } => {
                write!(f, "accept() failed on server {}: {error}", server.0)
            }
            ErrorReport::Driver { handle, error } => {
                write!(f, "driver error for {handle:?}: {error}")
            }
            ErrorReport::Dropped(n) => write!(f, "{n} loop errors were dropped"),
        }
    }
}

/// Names a server of one loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerId(u32);

impl ServerId {
    /// The server numbered `n` (drivers number the servers of a loop from 0 in creation
    /// order).
    pub fn from_raw(n: u32) -> ServerId {
        ServerId(n)
    }

    /// The raw number: servers of one loop are numbered from 0 in creation order.
    pub fn get(self) -> u32 {
        self.0
    }
}
