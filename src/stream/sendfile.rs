//! Sendfile: a file's bytes through a stream transport (asyncio's `loop.sendfile`, spec
//! §0.8, §2.1, §10.53), sans-IO.
//!
//! The transport decides *what* to send — from which offset, how much is left — and the
//! driver moves the bytes:
//!
//! * **zero-copy**, when [`Io::sendfile_supported`] says so (a plain TCP or Unix socket):
//!   the queue is flushed first, then [`Io::try_sendfile`] is called with the next offset
//!   and the count left, again on every writability, until the count is reached or the
//!   file ends;
//! * **fallback** (a TLS transport, a pipe, a driver without zero-copy, or
//!   [`SendfileFallback::Force`]): the transport reads the next chunk of at most
//!   [`SENDFILE_CHUNK`] bytes through [`SendfileSource::read_at`] — only while it is not
//!   paused for writing — and writes it as `write_slice` would. Its buffer therefore stays
//!   within the high-water mark plus one chunk, however slowly the peer reads.
//!
//! While a sendfile is in progress, `write`, `write_slice` and `writelines` fail with
//! [`WriteError::SendfileInProgress`](crate::WriteError::SendfileInProgress) and
//! `Ctx::write_eof` with
//! [`HandleError::SendfileInProgress`](crate::HandleError::SendfileInProgress) (asyncio
//! raises `RuntimeError`). During the fallback the user's protocol hears no
//! `pause_writing` / `resume_writing` (asyncio's `_SendfileFallbackProtocol` takes them);
//! afterwards its view is handed back: `resume_writing` if it was paused and the buffer
//! drained, `pause_writing` if the buffer is above the mark. `close()`, `abort()` or a
//! fatal error end the sendfile with an error; completion reports the byte count.
//!
//! Unlike asyncio, reading is not paused during a sendfile: the protocol is not swapped
//! out, so it keeps receiving `data_received`.

use std::any::Any;
use std::fmt;
use std::io;

use super::StreamTransport;
use crate::{ConnectionError, Handle, Io, SendPool};

/// The largest chunk the fallback reads and writes at a time (asyncio reads 16 KiB;
/// bigger chunks halve the fallback's syscalls and keep its memory bound small:
/// high-water mark plus one chunk).
pub const SENDFILE_CHUNK: usize = 64 * 1024;

/// The most one [`Io::try_sendfile`] call is asked for (a `sendfile(2)` moves at most
/// about 2 GiB per call on Linux anyway).
const ZERO_COPY_MAX: usize = 1 << 30;

/// A file to send: what a driver hands the core (as a `Box<dyn SendfileSource>`) when a
/// sendfile starts.
///
/// The core reads through [`read_at`](Self::read_at) for the fallback; a driver with
/// zero-copy finds its own file type again through [`as_any`](Self::as_any) in
/// [`Io::try_sendfile`]. Reads are positional: the file position is the caller's business
/// (asyncio leaves it at `offset + sent`; the drivers' `sendfile` helpers do the same).
///
/// ```
/// use std::any::Any;
/// use std::io;
/// use aioport::stream::SendfileSource;
///
/// /// A file in memory.
/// struct Bytes(Vec<u8>);
/// impl SendfileSource for Bytes {
///     fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
///         let start = usize::try_from(offset).unwrap_or(usize::MAX).min(self.0.len());
///         let n = buf.len().min(self.0.len() - start);
///         buf[..n].copy_from_slice(&self.0[start..start + n]);
///         Ok(n)
///     }
///     fn as_any(&self) -> &dyn Any {
///         self
///     }
/// }
/// let mut buf = [0; 4];
/// assert_eq!(Bytes(b"hello".to_vec()).read_at(3, &mut buf)?, 2);
/// assert_eq!(&buf[..2], b"lo");
/// # Ok::<(), io::Error>(())
/// ```
pub trait SendfileSource {
    /// Reads up to `buf.len()` bytes at `offset` (`pread`): how many were read, `0` at
    /// the end of the file.
    ///
    /// # Errors
    ///
    /// Any I/O error; it ends the sendfile with [`SendfileError::File`] (the connection
    /// stays open, as in asyncio).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;

    /// The value itself, for a driver to downcast to its own file type.
    fn as_any(&self) -> &dyn Any;
}

/// Whether a sendfile may copy through user space: asyncio's `fallback` argument, plus
/// a way to ask for the fallback outright (what a benchmark or a test does). `true`
/// converts to [`Allow`](Self::Allow), `false` to [`Deny`](Self::Deny).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SendfileFallback {
    /// Zero-copy when the transport supports it, the fallback otherwise (asyncio's
    /// default, `fallback=True`).
    #[default]
    Allow,
    /// Zero-copy only: a transport without it refuses with
    /// [`SendfileError::NotAvailable`] (asyncio's `fallback=False`).
    Deny,
    /// The read-and-write fallback even where zero-copy is possible.
    Force,
}

impl From<bool> for SendfileFallback {
    fn from(allow: bool) -> Self {
        if allow { SendfileFallback::Allow } else { SendfileFallback::Deny }
    }
}

/// Why a sendfile did not start or did not finish. `Clone + Eq`, like every error carried
/// in a callback.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendfileError {
    /// `count` was `Some(0)` (asyncio: `ValueError('count must be a positive integer')`);
    /// pass `None` to send to the end of the file.
    #[error("count must be a positive integer (got 0); pass None to send to the end of the file")]
    ZeroCount,
    /// Another sendfile is in progress on this transport.
    #[error("a sendfile is already in progress on this transport")]
    InProgress,
    /// The transport cannot send a file without copying and the fallback was denied
    /// (asyncio's `SendfileNotAvailableError`).
    #[error("zero-copy sendfile is not available on this transport and the fallback was denied")]
    NotAvailable,
    /// The transport was closing when the sendfile was asked for (asyncio:
    /// `RuntimeError('Transport is closing')`), or its write side was shut down.
    #[error("the transport is closing or its write side is shut down")]
    Closing,
    /// `close()` or `abort()` was called during the sendfile: it stopped after `sent`
    /// bytes.
    #[error("the transport was closed during the sendfile, after {sent} bytes")]
    Closed {
        /// Bytes handed to the transport before it closed.
        sent: u64,
    },
    /// The connection failed during the sendfile (a send error, a reset); the transport
    /// was lost with the same error.
    #[error("the connection failed during the sendfile, after {sent} bytes: {error}")]
    ConnectionLost {
        /// Bytes handed to the transport before it failed.
        sent: u64,
        /// Why (also the argument of `connection_lost`).
        error: ConnectionError,
    },
    /// Reading the file failed; the connection stays open (asyncio's fallback lets the
    /// read error escape the same way).
    #[error("reading the file failed after {sent} bytes: {error}")]
    File {
        /// Bytes handed to the transport before the failed read.
        sent: u64,
        /// The read error.
        error: ConnectionError,
    },
    /// The handle does not name a live stream transport that can write.
    #[error(transparent)]
    Handle(#[from] crate::HandleError),
}

impl SendfileError {
    /// Bytes sent before the sendfile stopped: 0 for a refusal at the start.
    pub fn sent(&self) -> u64 {
        match self {
            SendfileError::Closed { sent }
            | SendfileError::ConnectionLost { sent, .. }
            | SendfileError::File { sent, .. } => *sent,
            _ => 0,
        }
    }
}

/// What one pump of a sendfile came to.
enum Step {
    /// Waiting for writability or for the buffer to drain.
    Wait,
    /// The sendfile ended.
    Done(Result<u64, SendfileError>),
    /// Sending failed: the connection ends with this error.
    Failed(ConnectionError),
}

/// How a sendfile in progress moves its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    ZeroCopy,
    Fallback,
}

/// The state of one sendfile on a transport (boxed: idle transports do not pay for it).
pub(crate) struct Sendfile {
    source: Box<dyn SendfileSource>,
    /// Whose `sendfile_completed` hears the outcome (a protocol, or the driver for the
    /// registry's `NO_HANDLE`); set by the registry.
    requester: Option<Handle>,
    mode: Mode,
    /// The next file offset to send from.
    offset: u64,
    /// Bytes left to send; `None`: to the end of the file.
    left: Option<u64>,
    sent: u64,
    /// The fallback's read buffer, allocated when the fallback starts.
    chunk: Vec<u8>,
    /// Set once the sendfile ended; taken by the registry.
    outcome: Option<Result<u64, SendfileError>>,
}

impl fmt::Debug for Sendfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sendfile")
            .field("mode", &self.mode)
            .field("offset", &self.offset)
            .field("left", &self.left)
            .field("sent", &self.sent)
            .field("outcome", &self.outcome)
            .finish_non_exhaustive()
    }
}

impl Sendfile {
    /// The most the next step may move, capped at `cap`; 0 when the count is reached.
    fn next_len(&self, cap: usize) -> usize {
        match self.left {
            None => cap,
            Some(left) => usize::try_from(left).map_or(cap, |l| l.min(cap)),
        }
    }

    fn advance(&mut self, n: usize) {
        let n = n as u64;
        self.offset = self.offset.saturating_add(n);
        self.sent = self.sent.saturating_add(n);
        if let Some(left) = self.left.as_mut() {
            *left = left.saturating_sub(n);
        }
    }
}

/// The outcome of one sendfile, as the driver reads it
/// ([`Registry::poll_sendfile_done`](crate::Registry::poll_sendfile_done)) for sendfiles
/// started outside a protocol callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendfileDone {
    /// The transport the file was sent through.
    pub handle: Handle,
    /// The bytes sent, or why the sendfile failed.
    pub outcome: Result<u64, SendfileError>,
}

impl StreamTransport {
    /// Starts sending `count` bytes of `source` (`None`: to the end of the file) from
    /// `offset`. What can be sent now is
    /// sent before this returns; the rest follows as the transport becomes writable or
    /// its buffer drains. The outcome is read with
    /// [`take_sendfile_outcome`](Self::take_sendfile_outcome) (the registry delivers it as
    /// `Protocol::sendfile_completed`). An offset past the end of the file sends 0 bytes.
    ///
    /// # Errors
    ///
    /// [`SendfileError::ZeroCount`], [`SendfileError::InProgress`],
    /// [`SendfileError::Closing`] (closing, lost, after `write_eof`, or a read pipe),
    /// [`SendfileError::NotAvailable`] (no zero-copy and `fallback` is `Deny`); the
    /// transport is then unchanged.
    pub fn start_sendfile(
        &mut self,
        source: Box<dyn SendfileSource>,
        offset: u64,
        count: Option<u64>,
        fallback: SendfileFallback,
        io: &mut dyn Io,
        pool: &mut SendPool,
    ) -> Result<(), SendfileError> {
        if count == Some(0) {
            return Err(SendfileError::ZeroCount);
        }
        if self.sendfile.is_some() {
            return Err(SendfileError::InProgress);
        }
        if self.lifecycle.is_closing()
            || self.eof_requested
            || self.kind == super::StreamKind::ReadPipe
        {
            return Err(SendfileError::Closing);
        }
        let mode = match fallback {
            SendfileFallback::Force => Mode::Fallback,
            _ if io.sendfile_supported(self.handle) => Mode::ZeroCopy,
            SendfileFallback::Allow => Mode::Fallback,
            SendfileFallback::Deny => return Err(SendfileError::NotAvailable),
        };
        let chunk = match mode {
            Mode::Fallback => {
                // Edges of the fallback's own writes are not the user's protocol's.
                self.flow.hold();
                vec![0; count.map_or(SENDFILE_CHUNK, |c| (c.min(SENDFILE_CHUNK as u64)) as usize)]
            }
            Mode::ZeroCopy => Vec::new(),
        };
        self.sendfile = Some(Box::new(Sendfile {
            source,
            requester: None,
            mode,
            offset,
            left: count,
            sent: 0,
            chunk,
            outcome: None,
        }));
        self.pump_sendfile(io, pool);
        Ok(())
    }

    /// True while a sendfile is in progress: user writes are refused.
    pub fn is_sendfile_in_progress(&self) -> bool {
        self.sendfile.as_ref().is_some_and(|s| s.outcome.is_none())
    }

    /// The outcome of a finished sendfile, once; `None` while none finished.
    #[must_use]
    pub fn take_sendfile_outcome(&mut self) -> Option<Result<u64, SendfileError>> {
        self.take_sendfile_done().map(|(_, outcome)| outcome)
    }

    /// The outcome of a finished sendfile and who asked for it (see
    /// [`set_sendfile_requester`](Self::set_sendfile_requester)), once.
    pub(crate) fn take_sendfile_done(
        &mut self,
    ) -> Option<(Option<Handle>, Result<u64, SendfileError>)> {
        self.sendfile.as_ref()?.outcome.as_ref()?;
        let sf = self.sendfile.take()?;
        Some((sf.requester, sf.outcome?))
    }

    /// Remembers who hears the outcome of the sendfile just started.
    pub(crate) fn set_sendfile_requester(&mut self, requester: Handle) {
        if let Some(sf) = self.sendfile.as_mut() {
            sf.requester = Some(requester);
        }
    }

    /// True when the transport waits for writability to send file bytes zero-copy.
    pub(super) fn wants_sendfile_write(&self) -> bool {
        self.sendfile.as_ref().is_some_and(|s| s.outcome.is_none() && s.mode == Mode::ZeroCopy)
    }

    /// Moves the sendfile as far as it can go now: zero-copy while the socket takes
    /// bytes and nothing is queued, the fallback while the transport is not paused for
    /// writing. Called after every change of the transport (the registry does it after
    /// each call on it), a no-op without a sendfile in progress.
    pub fn pump_sendfile(&mut self, io: &mut dyn Io, pool: &mut SendPool) {
        if self.lifecycle.is_lost() {
            // Ended by `lose`, which records the outcome; nothing to move.
            return;
        }
        let Some(mut sf) = self.sendfile.take_if(|s| s.outcome.is_none()) else { return };
        let step = match sf.mode {
            Mode::ZeroCopy => self.pump_zero_copy(&mut sf, io, pool),
            Mode::Fallback => self.pump_fallback(&mut sf, io, pool),
        };
        self.sendfile = Some(sf);
        match step {
            Step::Wait => {}
            Step::Done(result) => self.finish_sendfile(result, io, pool),
            // `fail` ends the sendfile with the same error (`lose` → `end_sendfile`).
            Step::Failed(err) => self.fail(err, io, pool),
        }
    }

    fn pump_zero_copy(&mut self, sf: &mut Sendfile, io: &mut dyn Io, pool: &mut SendPool) -> Step {
        // The queue goes first (asyncio waits for `_make_empty_waiter`).
        let _ = pool;
        while self.queue.is_empty() {
            let want = sf.next_len(ZERO_COPY_MAX);
            if want == 0 {
                return Step::Done(Ok(sf.sent));
            }
            match io.try_sendfile(self.handle, &*sf.source, sf.offset, want) {
                Ok(0) => return Step::Done(Ok(sf.sent)),
                Ok(n) if n <= want => sf.advance(n),
                Ok(n) => {
                    let err = crate::DriverError::SentMoreThanOffered { offered: want, sent: n };
                    return Step::Failed(ConnectionError::Driver(err));
                }
                Err(e) if super::is_transient(&e) => return Step::Wait,
                Err(e) => return Step::Failed(e.into()),
            }
        }
        Step::Wait
    }

    fn pump_fallback(&mut self, sf: &mut Sendfile, io: &mut dyn Io, pool: &mut SendPool) -> Step {
        loop {
            let want = sf.next_len(sf.chunk.len());
            if want == 0 {
                // The count is reached: done, even if the buffer still waits to drain
                // (asyncio returns after its last write too).
                return Step::Done(Ok(sf.sent));
            }
            if self.flow.is_paused() {
                return Step::Wait;
            }
            let n = loop {
                match sf.source.read_at(sf.offset, &mut sf.chunk[..want]) {
                    Ok(n) => break n.min(want),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        return Step::Done(Err(SendfileError::File {
                            sent: sf.sent,
                            error: e.into(),
                        }));
                    }
                }
            };
            if n == 0 {
                return Step::Done(Ok(sf.sent));
            }
            if let Err(e) = self.write_unchecked(&sf.chunk[..n], io, pool) {
                return Step::Failed(e);
            }
            sf.advance(n);
        }
    }

    /// Records the outcome and hands the transport back: the held flow edges are
    /// released, and a `write_eof` that waited for the sendfile shuts down once the queue
    /// drained.
    fn finish_sendfile(
        &mut self,
        result: Result<u64, SendfileError>,
        io: &mut dyn Io,
        pool: &mut SendPool,
    ) {
        if let Some(sf) = self.sendfile.as_mut() {
            sf.outcome = Some(result);
            sf.chunk = Vec::new();
        }
        self.flow.release();
        if self.queue.is_empty() {
            self.after_drain(io, pool);
        }
    }

    /// Ends a sendfile in progress because the transport closed (`reason` `None`) or
    /// failed. A no-op without one.
    pub(super) fn end_sendfile(&mut self, reason: Option<ConnectionError>) {
        let Some(sf) = self.sendfile.as_mut().filter(|s| s.outcome.is_none()) else { return };
        let sent = sf.sent;
        sf.outcome = Some(Err(match reason {
            None => SendfileError::Closed { sent },
            Some(error) => SendfileError::ConnectionLost { sent, error },
        }));
        sf.chunk = Vec::new();
        self.flow.release();
    }
}
