//! The loop's errors: [`Error`] for calls that fail, [`ErrorReport`] for the error hook.

use std::io;
use std::net::SocketAddr;

use aioport::{ConnectionError, DatagramAddr, DriverError, Endpoint, Handle, LoopError};

use crate::ServerId;

/// A loop call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// [`Loop::create_connection`](crate::Loop::create_connection) could not connect; the
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
    /// A Unix stream server could not listen on its name.
    #[error("cannot listen on Unix socket {name}: {error}")]
    UnixBind {
        /// The path or abstract name.
        name: crate::UnixName,
        /// Why (a live server or a non-socket file there, no such directory, …).
        error: io::Error,
    },
    /// [`Loop::connect_read_pipe`](crate::Loop::connect_read_pipe) /
    /// [`connect_write_pipe`](crate::Loop::connect_write_pipe) was given a file descriptor
    /// that is not a pipe, socket or character device (a regular file, say: it is always
    /// "ready", so a loop cannot wait on it; asyncio raises `ValueError`). Read the file
    /// with blocking I/O, or on a helper thread.
    #[error("pipe transports are only for pipes, sockets and character devices, not {kind}")]
    NotAPipe {
        /// What the descriptor is ("a regular file", "a directory", …).
        kind: &'static str,
    },
    /// [`Loop::create_server_from`](crate::Loop::create_server_from) was given a socket
    /// that is not listening (`SO_ACCEPTCONN` off: bound but `listen()` never called, or
    /// a connected socket). Call `listen()` on it first, or let
    /// [`create_server`](crate::Loop::create_server) bind and listen.
    #[error("the socket is not listening (SO_ACCEPTCONN is off): call listen() on it first")]
    NotListening,
    /// The address given to `create_server` resolved to nothing.
    #[error("no address to listen on")]
    NoAddress,
    /// A loop is already running on this thread: running another one (or this one) from
    /// inside a callback would block the running loop. From a callback, use
    /// [`Ctx::connect`](aioport::Ctx::connect), which never blocks (asyncio: "Cannot run
    /// the event loop while another loop is running").
    #[error(
        "a loop is already running on this thread; from a callback use Ctx::connect or \
         call_soon instead of running a loop"
    )]
    AlreadyRunning,
    /// [`Loop::run_until_timeout`](crate::Loop::run_until_timeout) ran out of time before
    /// its condition held.
    #[error("timed out before the condition held")]
    TimedOut,
    /// [`Loop::subprocess_exec`](crate::Loop::subprocess_exec) could not start the
    /// program; the protocol was dropped without a callback.
    #[error("cannot start {program:?}: {error}")]
    Spawn {
        /// The program.
        program: std::ffi::OsString,
        /// Why (not found, permission denied, out of descriptors, no pidfd support).
        error: io::Error,
    },
    /// [`Loop::wait_subprocess`](crate::Loop::wait_subprocess) was given a handle whose
    /// transport is gone (its `connection_lost` was delivered: read the return code in
    /// `process_exited`) or that names no subprocess.
    #[error("no such subprocess: {0}")]
    NoSuchProcess(aioport::HandleError),
    /// [`Loop::sendfile`](crate::Loop::sendfile) was refused or stopped: see
    /// [`SendfileError`](aioport::stream::SendfileError) for which.
    #[error("sendfile failed: {0}")]
    Sendfile(#[from] aioport::stream::SendfileError),
    /// The poller itself failed (`epoll_wait` or `epoll_ctl` with an error other than
    /// `EINTR`).
    #[error("poller failed: {0}")]
    Io(#[from] io::Error),
    /// [`Loop::create_datagram_endpoint`](crate::Loop::create_datagram_endpoint) could
    /// not create, configure, bind or connect its socket; no transport was left open.
    #[error("cannot open a datagram endpoint (local {local:?}, remote {remote:?}): {error}")]
    Datagram {
        /// The local address asked for.
        local: Option<DatagramAddr>,
        /// The remote address asked for.
        remote: Option<DatagramAddr>,
        /// Why (address in use, no such file, IPv6 unavailable, …).
        error: io::Error,
    },
    /// The addresses given to
    /// [`Loop::create_datagram_endpoint`](crate::Loop::create_datagram_endpoint) do not
    /// make an endpoint.
    #[error("no datagram endpoint for local {local:?} and remote {remote:?}: {why}")]
    DatagramAddress {
        /// The local address given.
        local: Option<DatagramAddr>,
        /// The remote address given.
        remote: Option<DatagramAddr>,
        /// What to change.
        why: &'static str,
    },
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

/// What the loop hands its error hook ([`Loop::set_error_handler`](crate::Loop::set_error_handler)):
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
    /// Setting up an accepted socket failed (registering it with the poller); the
    /// connection was dropped.
    Setup {
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
    /// A foreign fd of [`add_reader`](crate::Loop::add_reader) /
    /// [`add_writer`](crate::Loop::add_writer) could not be re-armed — usually it was
    /// closed before its callbacks were removed. Its callbacks were dropped.
    Watch {
        /// The fd.
        fd: i32,
        /// The poller's error.
        error: io::Error,
    },
}

impl std::fmt::Display for ErrorReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ErrorReport::Callback(e) => write!(f, "{e}"),
            ErrorReport::Accept { server, error } => {
                write!(f, "accept() failed on server {}: {error}", server.0)
            }
            ErrorReport::Setup { server, error } => {
                write!(f, "cannot set up a connection accepted by server {}: {error}", server.0)
            }
            ErrorReport::Driver { handle, error } => {
                write!(f, "driver error for {handle:?}: {error}")
            }
            ErrorReport::Dropped(n) => write!(f, "{n} loop errors were dropped"),
            ErrorReport::Watch { fd, error } => {
                write!(f, "cannot watch fd {fd} (closed before remove_reader?): {error}")
            }
        }
    }
}
