//! `StreamTransport`: asyncio's `Transport` (and the pipe halves) as a state machine.
//!
//! One value per connection holds everything asyncio's `_SelectorSocketTransport` holds
//! except the socket: the send queue, flow control, the read side, EOF and closing state.
//! The socket stays with the driver and is reached through [`Io`], which every call that
//! may do I/O receives.
//!
//! # Callbacks are derived from state
//!
//! Nothing is queued as an event. [`StreamTransport::next_callback`] computes the next
//! callback from the state, by this fixed priority table (DESIGN.md §4):
//!
//! | rank | callback | when |
//! |---|---|---|
//! | 1 | `connection_made` | not yet delivered (always first, even if closed since) |
//! | 2 | `pause_writing` / `resume_writing` | the protocol's view differs from the state (or a whole episode is owed); strictly alternating |
//! | 3 | `data_received` | data is held, reading is not paused, the transport is not closing |
//! | 4 | `eof_received` | the peer's EOF, once all data before it was delivered, while reading and not closing |
//! | 5 | `connection_lost` | the socket was closed and nothing above is pending; exactly once |
//!
//! A caller (the registry) asks for the next callback, delivers it, reports what the
//! protocol answered (for example [`StreamTransport::handle_eof_answer`]), and asks again
//! until `None`.

use std::io::{self, IoSlice};

use bytes::{Buf, Bytes};

use crate::{
    ConnectionError, DriverError, Extra, FlowControl, FlowEdge, Handle, Io, Lifecycle, LimitsError,
    SendPool, SendQueue, WriteBufferLimits, WriteError,
};

mod driver;
mod pipe;
mod sendfile;
#[cfg(test)]
mod tests;

pub use pipe::{ReadPipeTransport, WritePipeTransport};
pub use sendfile::{SENDFILE_CHUNK, SendfileDone, SendfileError, SendfileFallback, SendfileSource};

/// How many `IoSlice`s one vectored send offers when the core flushes a queue itself. A
/// batch size, not IOV_MAX: a flush loops until the queue is empty or the socket refuses.
const FLUSH_BATCH: usize = 64;

/// The slots a flush offers when the queue holds at most this many chunks (usually one
/// refused write): clearing all `FLUSH_BATCH` slots would cost more than the rest of
/// such a flush.
const FLUSH_FEW: usize = 4;

// DESIGN.md §8: a transport is small; one per connection, thousands per loop.
const _: () = assert!(std::mem::size_of::<StreamTransport>() <= 256);

impl StreamKind {
    /// A short name for error messages.
    pub const fn name(self) -> &'static str {
        match self {
            StreamKind::Socket => "stream",
            StreamKind::ReadPipe => "read pipe",
            StreamKind::WritePipe => "write pipe",
        }
    }
}

/// Which asyncio transport a [`StreamTransport`] plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// A bidirectional socket (TCP, Unix stream): `write_eof` shuts down the write side,
    /// `eof_received` decides between half-close and close.
    Socket,
    /// The read end of a pipe: EOF delivers `eof_received` (its answer is ignored) and
    /// then `connection_lost`, as asyncio's `_UnixReadPipeTransport`.
    ReadPipe,
    /// The write end of a pipe: `write_eof` closes the pipe after the flush, and the read
    /// end closing is detected (spec §13.68).
    WritePipe,
}

/// A callback the protocol is owed, from [`StreamTransport::next_callback`].
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamCallback {
    /// Deliver `connection_made`.
    ConnectionMade,
    /// Deliver `pause_writing`.
    PauseWriting,
    /// Deliver `resume_writing`.
    ResumeWriting,
    /// Deliver `data_received` with these bytes (held because reading was paused between
    /// the read and its delivery, or reported by a completion-based driver).
    DataReceived(Vec<u8>),
    /// Deliver `eof_received`, then report the answer with
    /// [`StreamTransport::handle_eof_answer`].
    EofReceived,
    /// Deliver `connection_lost`. It is the last callback; the transport is finished.
    ConnectionLost(Option<ConnectionError>),
}

/// The outcome of [`StreamTransport::read`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// `n` bytes are in the caller's buffer: deliver them with `data_received` now.
    Data(usize),
    /// Nothing to read now (`WouldBlock`), or the transport does not want to read.
    Idle,
    /// The peer's EOF; `eof_received` is now pending.
    Eof,
    /// A fatal read error; `connection_lost(Some(err))` is now pending.
    Failed,
}

/// A stream transport: a socket or a pipe half, with asyncio's write buffering, flow
/// control, EOF, close and abort semantics, and no I/O of its own.
///
/// The user face (`write`, `close`, `pause_reading`, …) mirrors asyncio's `Transport`;
/// the driver face (`on_writable`, `read`, `handle_*`, `poll_transmit`) is what a loop
/// calls. Calls change the state at once and never run protocol code: callbacks are
/// obtained from [`next_callback`](Self::next_callback).
#[derive(Debug)]
pub struct StreamTransport {
    handle: Handle,
    kind: StreamKind,
    lifecycle: Lifecycle,
    flow: FlowControl,
    queue: SendQueue,
    /// Bytes read but not yet delivered; empty (no heap) in steady state.
    inbound: Vec<u8>,
    read_paused: bool,
    /// `write_eof()` was called.
    eof_requested: bool,
    /// `Io::shutdown_write` was done.
    shutdown_done: bool,
    /// The driver reported the peer's EOF.
    peer_eof: bool,
    eof_delivered: bool,
    /// The connection supports half-close (false for a served TLS 1.2 transport):
    /// `can_write_eof()`, and whether a keep-open answer to `eof_received` is honoured.
    half_close: bool,
    /// Served by another slot's protocol (DESIGN.md §3): a graceful close hands the sink
    /// `Io::close`, and the connection is lost only when the serving side reports it
    /// ended ([`handle_closed`](Self::handle_closed)) — a TLS connection is lost once its
    /// shutdown finished. One byte for what were two flags (`served`, `sink_closed`), so
    /// the transport keeps its size budget with the sendfile pointer below.
    serving: Serving,
    /// A sendfile in progress, or finished with its outcome not yet taken.
    sendfile: Option<Box<sendfile::Sendfile>>,
    extra: Extra,
}

impl StreamTransport {
    /// A socket transport named `handle`, with default limits.
    pub fn new(handle: Handle, extra: Extra) -> Self {
        Self::with_kind(handle, StreamKind::Socket, extra)
    }

    /// A transport of the given kind. Prefer the typed pipe wrappers
    /// ([`ReadPipeTransport`], [`WritePipeTransport`]) when using transports directly.
    pub fn with_kind(handle: Handle, kind: StreamKind, extra: Extra) -> Self {
        StreamTransport {
            handle,
            kind,
            lifecycle: Lifecycle::new(),
            flow: FlowControl::new(WriteBufferLimits::default()),
            queue: SendQueue::new(),
            inbound: Vec::new(),
            read_paused: false,
            eof_requested: false,
            shutdown_done: false,
            peer_eof: false,
            eof_delivered: false,
            half_close: true,
            serving: Serving::Driver,
            sendfile: None,
            extra,
        }
    }

    /// The handle this transport passes to [`Io`].
    pub fn handle(&self) -> Handle {
        self.handle
    }

    /// Which asyncio transport this is.
    pub fn kind(&self) -> StreamKind {
        self.kind
    }

    /// The endpoint information the driver provided.
    pub fn extra(&self) -> &Extra {
        &self.extra
    }

    // ----------------------------------------------------------------------------------
    // User face: writing
    // ----------------------------------------------------------------------------------

    /// Writes `data` without copying it: what the socket takes at once (when nothing is
    /// queued) is sent right away through [`Io::try_send`], only the rest is queued. If the
    /// queue then exceeds the high-water mark, [`is_writing_paused`](Self::is_writing_paused)
    /// is true when this returns and `pause_writing` is the next flow callback.
    ///
    /// An empty `data` is a no-op. A fatal send error ends the connection
    /// (`connection_lost(Some(err))` follows) and still returns `Ok`, as asyncio does.
    ///
    /// # Errors
    ///
    /// [`WriteError::AfterEof`], [`WriteError::Closing`], [`WriteError::Closed`],
    /// [`WriteError::BufferFull`]; the transport is then unchanged.
    pub fn write(
        &mut self,
        data: Bytes,
        io: &mut dyn Io,
        pool: &mut SendPool,
    ) -> Result<(), WriteError> {
        self.admit_write(data.len())?;
        self.push_write(data, io, pool);
        Ok(())
    }

    /// Moves `data` — bytes already counted in this transport's external pending bytes (a
    /// driver's cross-task queue handing its head over) — into the transport: the external
    /// count drops by its length and the bytes are written, so the size does not grow and
    /// no pause edge follows from the move (what the socket takes at once shrinks it, and
    /// the resume edge is checked). The hard limit is not applied again: the
    /// bytes were accepted when they were counted. Bytes beyond the external count are
    /// written as they are (counted from now on).
    ///
    /// # Errors
    ///
    /// As [`write`](Self::write), except [`WriteError::BufferFull`].
    pub fn write_external(
        &mut self,
        data: Bytes,
        io: &mut dyn Io,
        pool: &mut SendPool,
    ) -> Result<(), WriteError> {
        // The bytes leave the external count whether or not they are taken: a refused
        // write (the transport closing) drops them, as the caller's queue did.
        self.flow.take_external(data.len());
        let admitted = self.admit_state();
        if admitted.is_ok() {
            self.push_write(data, io, pool);
        }
        // What the socket took at once shrank the size: the resume edge may be due.
        self.flow.check(self.queue.len());
        admitted
    }

    /// The body of an admitted write: the fast path while the queue is empty, the queue
    /// for the rest.
    #[inline]
    fn push_write(&mut self, mut data: Bytes, io: &mut dyn Io, pool: &mut SendPool) {
        if self.queue.is_empty() && !data.is_empty() {
            match self.send_now(&data, io) {
                // Not when nothing went out: rewriting the fields of `data` right before
                // it is moved into the queue stalls the move (store forwarding).
                Ok(0) => {}
                Ok(n) => data.advance(n),
                Err(e) => return self.fail(e, io, pool),
            }
        }
        if !data.is_empty() {
            self.queue.push_bytes(data, pool);
            self.flow.check(self.queue.len());
        }
    }

    /// Writes a copy of `data`: like [`write`](Self::write), but only the part the socket
    /// refused is copied into the queue (asyncio's fast path, from a borrowed buffer).
    ///
    /// # Errors
    ///
    /// As [`write`](Self::write).
    pub fn write_slice(
        &mut self,
        data: &[u8],
        io: &mut dyn Io,
        pool: &mut SendPool,
    ) -> Result<(), WriteError> {
        self.admit_write(data.len())?;
        if let Err(e) = self.write_unchecked(data, io, pool) {
            self.fail(e, io, pool);
        }
        Ok(())
    }

    /// `write_slice` without its guards: sends what the socket takes while nothing is
    /// queued, queues a copy of the rest. The sendfile fallback writes through it.
    fn write_unchecked(
        &mut self,
        mut data: &[u8],
        io: &mut dyn Io,
        pool: &mut SendPool,
    ) -> Result<(), ConnectionError> {
        if self.queue.is_empty() && !data.is_empty() {
            let n = self.send_now(data, io)?;
            data = &data[n..];
        }
        if !data.is_empty() {
            self.queue.push_slice(data, pool);
            self.flow.check(self.queue.len());
        }
        Ok(())
    }

    /// Writes several chunks as one vectored send, without copying; empty chunks are
    /// skipped. The same guards and flow control as [`write`](Self::write) apply (asyncio
    /// skipped them: gh-127655, gh-136234, gh-155888).
    ///
    /// # Errors
    ///
    /// As [`write`](Self::write); the hard limit applies to the total length.
    pub fn writelines(
        &mut self,
        chunks: &[Bytes],
        io: &mut dyn Io,
        pool: &mut SendPool,
    ) -> Result<(), WriteError> {
        let total = chunks.iter().fold(0usize, |acc, c| acc.saturating_add(c.len()));
        self.admit_write(total)?;
        let was_empty = self.queue.is_empty();
        for chunk in chunks {
            self.queue.push_bytes(chunk.clone(), pool);
        }
        if was_empty {
            self.flush(io, pool);
        } else {
            self.flow.check(self.queue.len());
        }
        Ok(())
    }

    fn admit_write(&self, len: usize) -> Result<(), WriteError> {
        self.admit_state()?;
        self.flow.admit(self.queue.len(), len)
    }

    /// Refuses a write during a sendfile, once closing, lost or after `write_eof`.
    #[inline]
    fn admit_state(&self) -> Result<(), WriteError> {
        if self.is_sendfile_in_progress() {
            Err(WriteError::SendfileInProgress)
        } else if self.lifecycle.is_close_requested() {
            Err(WriteError::Closing)
        } else if self.lifecycle.is_lost() {
            Err(WriteError::Closed)
        } else if self.eof_requested {
            Err(WriteError::AfterEof)
        } else {
            Ok(())
        }
    }

    /// Offers `data` to the socket while the queue is empty: how many bytes went out
    /// (0 on `WouldBlock`), or why the connection failed.
    fn send_now(&mut self, data: &[u8], io: &mut dyn Io) -> Result<usize, ConnectionError> {
        offer(io, self.handle, &[IoSlice::new(data)], data.len())
    }

    /// Shuts down the write side once everything queued has been sent (asyncio's
    /// `write_eof`). Idempotent; a no-op once closing. On a write pipe it closes the pipe
    /// after the flush (spec §4.4). Reading continues on a socket. A no-op without
    /// half-close ([`set_half_close`](Self::set_half_close)): the queue is never followed
    /// by a shutdown the connection cannot do ([`Ctx::write_eof`](crate::Ctx::write_eof)
    /// refuses the call). During a sendfile the shutdown (or the pipe's close) waits for
    /// the sendfile to finish (`Ctx::write_eof` refuses instead).
    pub fn write_eof(&mut self, io: &mut dyn Io, pool: &mut SendPool) {
        if self.kind == StreamKind::WritePipe && !self.is_sendfile_in_progress() {
            return self.close(io, pool);
        }
        if self.lifecycle.is_closing()
            || self.eof_requested
            || self.kind == StreamKind::ReadPipe
            || !self.half_close
        {
            return;
        }
        self.eof_requested = true;
        if self.queue.is_empty() {
            self.after_drain(io, pool);
        }
    }

    /// True when [`write_eof`](Self::write_eof) is supported: sockets and write pipes,
    /// unless half-close was turned off ([`set_half_close`](Self::set_half_close)).
    pub fn can_write_eof(&self) -> bool {
        self.kind != StreamKind::ReadPipe && self.half_close
    }

    /// Whether the connection under this transport can half-close (on by default). A
    /// serving protocol turns it off when its connection cannot (TLS 1.2): then
    /// `can_write_eof()` is false, `write_eof()` is refused (asyncio's SSL transport raises
    /// `NotImplementedError`) and a keep-open answer to `eof_received` closes anyway.
    pub fn set_half_close(&mut self, on: bool) {
        self.half_close = on;
    }

    /// Closes the transport: no more data is delivered, what is queued is still flushed,
    /// then the socket is closed and `connection_lost(None)` follows. Idempotent. A paused
    /// protocol still receives `resume_writing` as the flush drains (asyncio does).
    pub fn close(&mut self, io: &mut dyn Io, pool: &mut SendPool) {
        if !self.lifecycle.start_closing() || self.lifecycle.is_lost() {
            return;
        }
        self.end_sendfile(None);
        self.release_inbound();
        if self.queue.is_empty() {
            self.lose(None, true, io, pool);
        }
    }

    /// Closes at once: the queue is dropped (`write_buffer_size()` is 0 when this returns),
    /// the socket closed, and `connection_lost(None)` follows. Dropping the queue never
    /// causes `resume_writing` (a paused protocol hears pause → lost, spec §3.10); an edge
    /// that happened before the abort is still delivered, as asyncio delivered it
    /// synchronously before the abort. Idempotent.
    pub fn abort(&mut self, io: &mut dyn Io, pool: &mut SendPool) {
        self.lifecycle.start_closing();
        self.lose(None, false, io, pool);
    }

    /// True once `close()`, `abort()`, a fatal error or the peer ended the connection
    /// (asyncio's `is_closing`). A read pipe is closing from the peer's EOF on.
    pub fn is_closing(&self) -> bool {
        self.lifecycle.is_closing() || (self.kind == StreamKind::ReadPipe && self.peer_eof)
    }

    // ----------------------------------------------------------------------------------
    // User face: flow control
    // ----------------------------------------------------------------------------------

    /// Bytes buffered by the transport: queued bytes plus external pending bytes. O(1).
    pub fn write_buffer_size(&self) -> usize {
        self.flow.size(self.queue.len())
    }

    /// The current limits.
    pub fn write_buffer_limits(&self) -> WriteBufferLimits {
        self.flow.limits()
    }

    /// Sets the limits (asyncio's derivation: see [`WriteBufferLimits::new`]) and
    /// re-checks both edges at once.
    ///
    /// # Errors
    ///
    /// [`LimitsError::HighBelowLow`]; the limits are then unchanged.
    pub fn set_write_buffer_limits(
        &mut self,
        high: Option<usize>,
        low: Option<usize>,
    ) -> Result<(), LimitsError> {
        let limits = WriteBufferLimits::new(high, low)?;
        self.flow.set_limits(limits, self.queue.len());
        Ok(())
    }

    /// Sets (or with `None` removes) a hard cap on the write buffer: writes that would
    /// exceed it fail with [`WriteError::BufferFull`]. Off by default, as in asyncio.
    pub fn set_write_buffer_hard_limit(&mut self, limit: Option<usize>) {
        self.flow.set_hard_limit(limit);
    }

    /// True from the moment the buffer exceeded the high-water mark until it drained to
    /// the low-water mark — even before `pause_writing` is delivered.
    pub fn is_writing_paused(&self) -> bool {
        self.flow.is_paused()
    }

    /// Sets the bytes held on this transport's behalf outside its queue (by a TLS engine,
    /// a cross-task command queue); they count in [`write_buffer_size`](Self::write_buffer_size)
    /// and both flow edges are re-checked.
    pub fn set_external_pending(&mut self, bytes: usize) {
        if !self.lifecycle.is_lost() {
            self.flow.set_external_pending(bytes, self.queue.len());
        }
    }

    // ----------------------------------------------------------------------------------
    // User face: reading
    // ----------------------------------------------------------------------------------

    /// Stops delivering data (and EOF) until [`resume_reading`](Self::resume_reading).
    /// Idempotent, never fails; honoured even before the first read (gh-103607).
    pub fn pause_reading(&mut self) {
        if !self.is_closing() {
            self.read_paused = true;
        }
    }

    /// Resumes delivery. Idempotent; a no-op once closing.
    pub fn resume_reading(&mut self) {
        if !self.is_closing() {
            self.read_paused = false;
        }
    }

    /// True while data would be delivered: not paused, not closing, no EOF received
    /// (asyncio keeps it true after a keep-open EOF; aioport does not).
    pub fn is_reading(&self) -> bool {
        !self.read_paused
            && !self.is_closing()
            && !self.peer_eof
            && self.kind != StreamKind::WritePipe
    }

    // ----------------------------------------------------------------------------------
    // Callbacks
    // ----------------------------------------------------------------------------------

    /// The next callback the protocol is owed, by the priority table in the module docs,
    /// marked as delivered. Call until `None` after every change.
    #[must_use]
    pub fn next_callback(&mut self) -> Option<StreamCallback> {
        if self.lifecycle.is_finished() {
            return None;
        }
        if self.lifecycle.poll_made() {
            return Some(StreamCallback::ConnectionMade);
        }
        if let Some(edge) = self.flow.poll_edge() {
            return Some(match edge {
                FlowEdge::Pause => StreamCallback::PauseWriting,
                FlowEdge::Resume => StreamCallback::ResumeWriting,
            });
        }
        if self.delivering_reads() && !self.inbound.is_empty() {
            return Some(StreamCallback::DataReceived(std::mem::take(&mut self.inbound)));
        }
        if self.delivering_reads() && self.peer_eof && !self.eof_delivered {
            self.eof_delivered = true;
            return Some(StreamCallback::EofReceived);
        }
        self.lifecycle.poll_lost().map(StreamCallback::ConnectionLost)
    }

    /// True when [`next_callback`](Self::next_callback) would return `Some`.
    pub fn has_callback(&self) -> bool {
        if self.lifecycle.is_finished() {
            return false;
        }
        !self.lifecycle.is_made()
            || self.flow.has_edge()
            || (self.delivering_reads()
                && (!self.inbound.is_empty() || (self.peer_eof && !self.eof_delivered)))
            || self.lifecycle.has_lost_pending()
    }

    /// Reads and EOF reach the protocol only after `connection_made`, while not paused and
    /// not closing. A read pipe's EOF does not stop delivery of the data before it.
    fn delivering_reads(&self) -> bool {
        self.lifecycle.is_made() && !self.read_paused && !self.lifecycle.is_closing()
    }

    /// Reports the protocol's answer to `eof_received`: `keep_open` (asyncio's truthy
    /// return) keeps the write side open (half-close); otherwise the transport closes,
    /// flushing first. A read pipe closes whatever the answer (spec §4.10), and so does a
    /// transport without half-close ([`set_half_close`](Self::set_half_close)).
    pub fn handle_eof_answer(&mut self, keep_open: bool, io: &mut dyn Io, pool: &mut SendPool) {
        if !keep_open || self.kind == StreamKind::ReadPipe || !self.half_close {
            self.close(io, pool);
        }
    }

    /// Ends the connection because of `err` (a failing protocol callback, a driver error):
    /// queue dropped, socket closed, `connection_lost(Some(err))` follows. The first
    /// reason wins; a no-op once the connection is lost.
    pub fn fail(&mut self, err: ConnectionError, io: &mut dyn Io, pool: &mut SendPool) {
        self.lose(Some(err), false, io, pool);
    }

    /// Bytes received but not delivered yet (reading was paused, or a serving protocol fed
    /// them): 0 in steady state.
    pub fn held_inbound(&self) -> usize {
        self.inbound.len()
    }

    /// True once the socket was closed (`Io::close` was called for it): the driver must
    /// report nothing more for this transport.
    pub fn is_socket_closed(&self) -> bool {
        self.lifecycle.is_lost()
    }

    /// True once `connection_lost` was delivered: nothing more will happen.
    pub fn is_finished(&self) -> bool {
        self.lifecycle.is_finished()
    }

    // ----------------------------------------------------------------------------------
    // Internals
    // ----------------------------------------------------------------------------------

    fn check_open(&self) -> Result<(), DriverError> {
        if self.lifecycle.is_lost() { Err(DriverError::Closed) } else { Ok(()) }
    }

    fn flush(&mut self, io: &mut dyn Io, pool: &mut SendPool) {
        while !self.queue.is_empty() {
            let sent = if self.queue.chunk_count() <= FLUSH_FEW {
                self.send_queued::<FLUSH_FEW>(io)
            } else {
                self.send_queued::<FLUSH_BATCH>(io)
            };
            match sent {
                Ok((n, offered)) => {
                    self.queue.consume(n, pool);
                    if n < offered {
                        break;
                    }
                }
                Err(e) => return self.fail(e, io, pool),
            }
        }
        self.after_progress(io, pool);
    }

    /// One vectored send of the first `N` queued chunks: the bytes sent and offered.
    fn send_queued<const N: usize>(
        &self,
        io: &mut dyn Io,
    ) -> Result<(usize, usize), ConnectionError> {
        let mut slices = [IoSlice::new(&[]); N];
        let count = self.queue.fill_io_slices(&mut slices);
        let offered = slices[..count].iter().map(|s| s.len()).sum();
        offer(io, self.handle, &slices[..count], offered).map(|n| (n, offered))
    }

    /// After bytes left the queue: the resume edge, then what waited for the drain.
    fn after_progress(&mut self, io: &mut dyn Io, pool: &mut SendPool) {
        self.flow.check(self.queue.len());
        if self.queue.is_empty() {
            self.after_drain(io, pool);
        }
    }

    /// The queue is empty: a pending close completes, or a pending EOF is sent.
    fn after_drain(&mut self, io: &mut dyn Io, pool: &mut SendPool) {
        if self.lifecycle.is_lost() {
            return;
        }
        if self.is_sendfile_in_progress() {
            // A `write_eof` waits for the sendfile (`finish_sendfile` comes back here).
            return;
        }
        if self.eof_requested && self.kind == StreamKind::WritePipe {
            // `write_eof` on a write pipe during a sendfile: the close it means.
            return self.close(io, pool);
        }
        if self.lifecycle.is_close_requested() {
            self.lose(None, true, io, pool);
        } else if self.eof_requested && !self.shutdown_done {
            self.shutdown_done = true;
            match io.shutdown_write(self.handle) {
                Ok(()) => {}
                // The peer is already gone; the read side will report how.
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
                Err(e) => self.fail(e.into(), io, pool),
            }
        }
    }

    /// Closes the socket (`Io::abort` unless `graceful`) and records why; frees the
    /// buffers. Idempotent.
    fn lose(
        &mut self,
        reason: Option<ConnectionError>,
        graceful: bool,
        io: &mut dyn Io,
        pool: &mut SendPool,
    ) {
        if self.lifecycle.is_lost() {
            return;
        }
        self.end_sendfile(reason.clone());
        // Edges that already happened are still delivered (a close flush that drained
        // below low water owes a resume); dropping the queue must not cause a new one.
        self.flow.freeze();
        self.queue.clear(pool);
        self.flow.set_external_pending(0, 0);
        self.release_inbound();
        if !self.serving.sink_closed() {
            if graceful {
                io.close(self.handle);
            } else {
                io.abort(self.handle);
            }
        }
        if graceful && self.serving == Serving::Served {
            // Lost when the serving side says so (`handle_closed`).
            self.serving = Serving::SinkClosed;
            return;
        }
        self.lifecycle.set_lost(reason);
    }

    /// Marks this transport as served by another slot's protocol (see `served`).
    pub(crate) fn set_served(&mut self) {
        self.serving = Serving::Served;
    }

    fn release_inbound(&mut self) {
        self.inbound = Vec::new();
    }
}

/// Who serves a transport's I/O, and how far its sink got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Serving {
    /// The external driver (or the serving side already reported the end, the sink
    /// still open).
    Driver,
    /// Another slot's protocol, the sink open.
    Served,
    /// Another slot's protocol; the sink was closed and the end is not reported yet.
    SinkClosed,
    /// The serving side reported the end after the sink was closed.
    Ended,
}

impl Serving {
    fn sink_closed(self) -> bool {
        matches!(self, Serving::SinkClosed | Serving::Ended)
    }
}

/// Offers `bufs` (`offered` bytes in all) to the socket: how many bytes it took (0 when it
/// would block), or the error that ends the connection, a driver claiming to have sent
/// more than it was offered included.
fn offer(
    io: &mut dyn Io,
    handle: Handle,
    bufs: &[IoSlice<'_>],
    offered: usize,
) -> Result<usize, ConnectionError> {
    match io.try_send(handle, bufs) {
        Ok(n) if n <= offered => Ok(n),
        Ok(n) => {
            Err(ConnectionError::Driver(DriverError::SentMoreThanOffered { offered, sent: n }))
        }
        Err(e) if is_transient(&e) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted)
}
