//! Error types, one per audience.
//!
//! * [`WriteError`], [`LimitsError`]: the *user* misused a transport (write after
//!   `write_eof`, `high < low`, …). Returned synchronously, nothing else changes.
//! * [`ConnectionError`]: *why* a connection was lost. Carried by `connection_lost`, so it
//!   is `Clone + Eq` by construction and transcripts of callbacks compare in tests.
//! * [`DriverError`]: the *driver* broke the driving contract (more bytes reported sent
//!   than were offered, a call for a transport that is already closed, …). The state is left
//!   exactly as it was.
//! * [`ProtocolError`]: what a protocol callback returns when it fails.

use std::fmt;
use std::io;
use std::sync::Arc;

/// A write-side call was refused; the transport's state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// `write_eof()` was called earlier: the write side is shut down for good.
    #[error("cannot write after write_eof(): the write side is shut down")]
    AfterEof,
    /// `close()` or `abort()` was called; what was queued before `close()` is still
    /// flushed, but nothing new is accepted. (asyncio accepts or drops depending on the
    /// buffer, gh-115514; aioport always refuses.)
    #[error("cannot write to a closing transport: close() or abort() was called")]
    Closing,
    /// The connection is gone (peer reset, fatal error, or `connection_lost` was delivered).
    #[error("cannot write: the connection is lost")]
    Closed,
    /// The optional hard limit (`set_write_buffer_hard_limit`) would be exceeded; wait for
    /// `resume_writing` and write again.
    #[error(
        "write buffer full: {buffered} bytes queued + {len} new > hard limit {limit}; \
         wait for resume_writing()"
    )]
    BufferFull {
        /// Bytes already counted in `write_buffer_size()`.
        buffered: usize,
        /// Length of the refused write.
        len: usize,
        /// The configured hard limit.
        limit: usize,
    },
    /// `sendto` on a connected datagram transport named another address (asyncio's
    /// `ValueError('Invalid address: must be None or ...')`).
    #[error(
        "invalid address {given}: this datagram transport is connected to {expected}; pass None"
    )]
    AddressMismatch {
        /// The connected peer.
        expected: String,
        /// The address given.
        given: String,
    },
    /// A sendfile is in progress on this transport (asyncio's `RuntimeError('unable to
    /// write; sendfile is in progress')`): write again after `sendfile_completed`.
    #[error("cannot write: a sendfile is in progress; write after sendfile_completed")]
    SendfileInProgress,
    /// `sendto` without an address on an unconnected datagram transport.
    #[error("an address is required: this datagram transport is not connected")]
    AddressRequired,
    /// The handle does not name a live transport of this kind.
    #[error(transparent)]
    Handle(#[from] HandleError),
}

/// A handle passed to a loop call does not name a live transport of the right kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandleError {
    /// The transport was removed (its `connection_lost` was delivered), or the handle
    /// never named one in this loop. Handles are never reused: a new transport in the
    /// same slot has a new generation.
    #[error("stale handle: the transport is gone (connection_lost was delivered)")]
    Stale,
    /// The transport is still connecting: it can be used once the connect outcome was
    /// reported (`request_completed`, or `Registry::handle_connected`).
    #[error("the transport is still connecting; use it after request_completed")]
    Connecting,
    /// The handle names a transport of another kind (a typed handle built by hand from
    /// the wrong untyped one).
    #[error("wrong transport kind: the handle names a {found}, the call needs a {expected}")]
    WrongKind {
        /// The kind the call works on.
        expected: &'static str,
        /// The kind of the transport the handle names.
        found: &'static str,
    },
    /// The transport is live and of the right kind, but the call is not allowed in its
    /// current state (asyncio's `RuntimeError`): for example
    /// [`start_tls`](crate::Ctx::start_tls) on a closing transport, or while another
    /// protocol swap is pending.
    #[error("not allowed now: {0}")]
    InvalidState(&'static str),
    /// A sendfile is in progress on the transport and the call would disturb it
    /// (`write_eof`): call again after `sendfile_completed`.
    #[error("a sendfile is in progress on this transport; call again after sendfile_completed")]
    SendfileInProgress,
}

/// `set_write_buffer_limits(high, low)` was refused (asyncio's `ValueError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitsError {
    /// The high-water mark must be at least the low-water mark (asyncio's `ValueError`).
    #[error("high ({high}) must be >= low ({low})")]
    HighBelowLow {
        /// The high-water mark that was asked for (or derived).
        high: usize,
        /// The low-water mark that was asked for (or derived).
        low: usize,
    },
    /// The handle does not name a live transport of this kind.
    #[error(transparent)]
    Handle(#[from] HandleError),
}

/// The driver broke the driving contract. The call had no effect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// The handle does not name a live transport (it was removed, or never existed).
    #[error("stale handle: no live transport has this handle")]
    StaleHandle,
    /// The handle names a transport of another kind than the call expects.
    #[error("wrong transport kind: expected a {expected} transport")]
    WrongKind {
        /// The kind the call works on.
        expected: &'static str,
    },
    /// The transport's socket was already closed (`Io::close` was called for it); the
    /// driver must not report readiness, data or completions for it any more.
    #[error("the transport is closed: no further I/O may be reported for it")]
    Closed,
    /// `handle_sent(n)` (or `Io::try_send`) reported more bytes than were offered.
    #[error("{sent} bytes reported sent, but only {offered} were offered")]
    SentMoreThanOffered {
        /// Bytes offered by the last `poll_transmit` (or passed to `try_send`).
        offered: usize,
        /// Bytes the driver claimed.
        sent: usize,
    },
    /// Data or EOF was reported after the peer's EOF.
    #[error("data reported after the peer's EOF")]
    DataAfterEof,
    /// `Io::try_recv` returned more bytes than the buffer it was given.
    #[error("{received} bytes reported received into a {capacity}-byte buffer")]
    ReceivedMoreThanCapacity {
        /// Size of the buffer passed to `try_recv`.
        capacity: usize,
        /// Bytes the driver claimed.
        received: usize,
    },
    /// A connection outcome (`handle_connected` / `handle_connect_failed`) was reported
    /// for a transport that is not connecting.
    #[error("the transport is not waiting for a connection outcome")]
    NotConnecting,
    /// A process event out of order: spawned twice, an exit before the spawn or a second
    /// exit, a spawn failure after the spawn.
    #[error("subprocess event out of order: {event}")]
    ProcessEvent {
        /// What was reported.
        event: &'static str,
    },
}

/// An I/O error stored by value (kind, OS error code, message) so it can be cloned and
/// compared: `std::io::Error` is neither `Clone` nor `Eq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoError {
    kind: io::ErrorKind,
    os_code: Option<i32>,
    message: Arc<str>,
}

impl IoError {
    /// Builds an error from a kind and a message, with no OS error code.
    pub fn new(kind: io::ErrorKind, message: impl Into<Arc<str>>) -> Self {
        IoError { kind, os_code: None, message: message.into() }
    }

    /// The error kind.
    pub fn kind(&self) -> io::ErrorKind {
        self.kind
    }

    /// The OS error code (`errno`), when the error came from the OS.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.os_code
    }
}

impl From<&io::Error> for IoError {
    fn from(e: &io::Error) -> Self {
        IoError { kind: e.kind(), os_code: e.raw_os_error(), message: e.to_string().into() }
    }
}

impl From<io::Error> for IoError {
    fn from(e: io::Error) -> Self {
        IoError::from(&e)
    }
}

impl From<io::ErrorKind> for IoError {
    fn from(kind: io::ErrorKind) -> Self {
        IoError { kind, os_code: None, message: kind.to_string().into() }
    }
}

impl From<&IoError> for io::Error {
    fn from(e: &IoError) -> Self {
        match e.os_code {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::new(e.kind, e.message.to_string()),
        }
    }
}

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for IoError {}

/// The error a protocol callback returns. Anything that implements `std::error::Error`
/// converts into it with `?`; [`ProtocolError::msg`] makes one from a message.
///
/// Two `ProtocolError`s are equal when their messages are equal, so transcripts that
/// contain them compare in tests.
///
/// ```
/// use aioport::ProtocolError;
/// fn parse(line: &[u8]) -> Result<u32, ProtocolError> {
///     let text = std::str::from_utf8(line)?;
///     text.trim().parse::<u32>().map_err(|e| ProtocolError::msg(format!("bad number: {e}")))
/// }
/// assert_eq!(parse(b"42\n").unwrap(), 42);
/// assert_eq!(parse(b"x").unwrap_err().to_string(), "bad number: invalid digit found in string");
/// ```
#[derive(Clone)]
pub struct ProtocolError {
    message: Arc<str>,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl ProtocolError {
    /// An error with only a message.
    pub fn msg(message: impl fmt::Display) -> Self {
        ProtocolError { message: message.to_string().into(), source: None }
    }

    /// The underlying error, if this was converted from one.
    pub fn source(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.source.as_deref()
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for ProtocolError {
    fn from(e: E) -> Self {
        ProtocolError { message: e.to_string().into(), source: Some(Arc::new(e)) }
    }
}

impl PartialEq for ProtocolError {
    fn eq(&self, other: &Self) -> bool {
        self.message == other.message
    }
}

impl Eq for ProtocolError {}

impl fmt::Debug for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProtocolError({:?})", self.message)
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Why a connection was lost: the argument of `connection_lost(Some(err))`.
///
/// `Clone + Eq` by construction (I/O errors by kind, code and message; user errors by
/// message), so transcripts compare in tests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// A socket or pipe operation failed (reset, broken pipe, refused, …).
    #[error("I/O error: {0}")]
    Io(IoError),
    /// A protocol callback whose failure is fatal (`data_received`, `get_buffer`,
    /// `buffer_updated`, `eof_received`) returned an error.
    #[error("protocol error in {callback}: {error}")]
    Protocol {
        /// The callback that failed.
        callback: &'static str,
        /// What it returned.
        error: ProtocolError,
    },
    /// `get_buffer` returned an empty buffer (asyncio: `RuntimeError`).
    #[error("get_buffer() returned an empty buffer")]
    EmptyBuffer,
    /// A protocol callback panicked; the panic message is kept.
    #[error("protocol panicked in {callback}: {message}")]
    Panic {
        /// The callback that panicked.
        callback: &'static str,
        /// The panic payload, when it was a string.
        message: String,
    },
    /// The TLS layer failed (handshake, certificate, record error).
    #[error("TLS error: {0}")]
    Tls(String),
    /// An operation timed out (TLS handshake or shutdown, connect).
    #[error("timed out: {0}")]
    Timeout(String),
    /// The driver broke the driving contract while serving this transport's I/O (for
    /// example `Io::try_send` claimed more bytes than it was offered); the transport was
    /// aborted rather than left inconsistent.
    #[error("driver contract violated: {0}")]
    Driver(DriverError),
}

impl ConnectionError {
    /// The I/O error kind, when this is an I/O error.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            ConnectionError::Io(e) => Some(e.kind()),
            _ => None,
        }
    }
}

impl From<io::Error> for ConnectionError {
    fn from(e: io::Error) -> Self {
        ConnectionError::Io(e.into())
    }
}

impl From<DriverError> for ConnectionError {
    fn from(e: DriverError) -> Self {
        ConnectionError::Driver(e)
    }
}

impl From<io::ErrorKind> for ConnectionError {
    fn from(kind: io::ErrorKind) -> Self {
        ConnectionError::Io(kind.into())
    }
}

/// `call_later`: `now + delay` does not fit in an `Instant` (time arithmetic is checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("time overflow: now + delay does not fit in an Instant")]
pub struct TimeOverflow;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_error_is_clone_eq_from_io_error() {
        let a = ConnectionError::from(io::Error::from_raw_os_error(104));
        let b = a.clone();
        assert_eq!(a, b);
        assert_eq!(a.io_kind(), Some(io::ErrorKind::ConnectionReset));
        let c = ConnectionError::from(io::ErrorKind::BrokenPipe);
        assert_ne!(a, c);
    }

    #[test]
    fn protocol_error_compares_by_message() {
        let a: ProtocolError = "x".parse::<u32>().unwrap_err().into();
        let b = ProtocolError::msg(a.to_string());
        assert_eq!(a, b);
        assert!(a.source().is_some());
        assert!(b.source().is_none());
    }

    #[test]
    fn messages_tell_what_to_do() {
        let e = WriteError::BufferFull { buffered: 10, len: 5, limit: 12 };
        assert!(e.to_string().contains("resume_writing"));
        let e = LimitsError::HighBelowLow { high: 0, low: 1 };
        assert_eq!(e.to_string(), "high (0) must be >= low (1)");
    }
}
