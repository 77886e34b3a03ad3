//! `Ctx`: what a callback can do — the user face of every transport of its loop.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::state::{Core, Entry, Notice};
use super::transport::{AnyProtocol, Common, Transport, TransportKind};
use super::{Endpoint, LoopError};
use crate::ProtocolError;
use crate::datagram::DatagramAddr;
use crate::stream::{SendfileError, SendfileFallback, SendfileSource, StreamKind};
use crate::{
    AnyStreamHandle, ConnectionError, DatagramHandle, DatagramProtocol, DriverError, Extra,
    FlowHandle, Handle, HandleError, Io, LimitsError, Protocol, ReadHandle, ReadPipeHandle,
    RequestId, SendPool, StreamHandle, StreamTransport, TimeOverflow, TransportHandle,
    WriteBufferLimits, WriteError, WriteHandle, WritePipeHandle,
};

/// Names a closure scheduled with [`Ctx::call_later`] / [`Ctx::call_at`], for
/// [`Ctx::cancel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimerId {
    when: Instant,
    seq: u64,
}

impl TimerId {
    /// When the closure is due.
    pub fn when(self) -> Instant {
        self.when
    }
}

/// The context every callback receives: the current time, the callback's own handle, and
/// the user face of **any** transport of the same loop by its handle.
///
/// Calls change the transport's state at once — `is_writing_paused()` is true the moment a
/// `write` crosses the high-water mark — and only *schedule* the callbacks they cause:
/// those are delivered after the current callback returns, one at a time. No callback ever
/// runs inside another.
///
/// Calls on a handle whose transport is gone return [`HandleError::Stale`] (inside
/// [`WriteError::Handle`] for writes); they never panic.
pub struct Ctx<'a> {
    pub(super) core: &'a mut Core,
    pub(super) io: &'a mut dyn Io,
    pub(super) this: Handle,
    now: Instant,
}

/// The answer to a [`Ctx::connect`] request, taken over by the new transport's protocol
/// with [`Ctx::hold_request`] and given with [`Ctx::complete_request`]. Dropping it
/// unanswered leaves the asking protocol without `request_completed`.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "the asking protocol hears nothing until the request is completed"]
pub struct HeldRequest {
    requester: Handle,
    id: RequestId,
}

impl HeldRequest {
    /// The request's id, as the asking protocol got it from `connect`.
    pub fn id(&self) -> RequestId {
        self.id
    }
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(core: &'a mut Core, io: &'a mut dyn Io, this: Handle, now: Instant) -> Self {
        Ctx { core, io, this, now }
    }

    /// The driver's current time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The handle of the transport whose callback is running. In closures and in
    /// [`Registry::enter`](crate::Registry::enter) it names no transport: calls with it
    /// return a stale-handle error.
    pub fn handle(&self) -> Handle {
        self.this
    }

    /// This callback's transport as a stream.
    pub fn stream(&self) -> StreamHandle {
        StreamHandle::from_handle(self.this)
    }

    /// This callback's transport as a read pipe.
    pub fn read_pipe(&self) -> ReadPipeHandle {
        ReadPipeHandle::from_handle(self.this)
    }

    /// This callback's transport as a write pipe.
    pub fn write_pipe(&self) -> WritePipeHandle {
        WritePipeHandle::from_handle(self.this)
    }

    // ----------------------------------------------------------------------------------
    // Access
    // ----------------------------------------------------------------------------------

    pub(super) fn checked(&self, h: Handle, kind: TransportKind) -> Result<&Entry, HandleError> {
        let entry = self.core.entry(h)?;
        if entry.is_connecting() {
            return Err(HandleError::Connecting);
        }
        let found = entry.transport.kind();
        if found != kind {
            return Err(HandleError::WrongKind { expected: kind.name(), found: found.name() });
        }
        Ok(entry)
    }

    /// A read-only query on any transport kind, through what all kinds share.
    fn view<H: TransportHandle, R>(
        &self,
        h: H,
        f: impl FnOnce(&dyn Common) -> R,
    ) -> Result<R, HandleError> {
        Ok(f(self.checked(h.into(), H::KIND)?.transport.common_ref()))
    }

    /// An operation on any transport kind, through what all kinds share.
    fn act_common<H: TransportHandle, R>(
        &mut self,
        h: H,
        f: impl FnOnce(&mut dyn Common, &mut dyn Io, &mut SendPool) -> R,
    ) -> Result<R, HandleError> {
        self.act_transport(h, |t, io, pool| f(t.common(), io, pool))
    }

    /// An operation on a stream-family transport.
    fn act<H: AnyStreamHandle, R>(
        &mut self,
        h: H,
        f: impl FnOnce(&mut StreamTransport, &mut dyn Io, &mut SendPool) -> R,
    ) -> Result<R, HandleError> {
        self.act_transport(h, |t, io, pool| t.stream().map(|t| f(t, io, pool)))?
            .ok_or(HandleError::Stale)
    }

    fn act_transport<H: TransportHandle, R>(
        &mut self,
        h: H,
        f: impl FnOnce(&mut Transport, &mut dyn Io, &mut SendPool) -> R,
    ) -> Result<R, HandleError> {
        let h: Handle = h.into();
        let server = self.checked(h, H::KIND)?.server;
        let r = self.core.with_transport_io(h, self.io, f).ok_or(HandleError::Stale)?;
        // A transport served by a protocol (TLS) wakes it, unless it is that protocol
        // acting on its own transport.
        if let Some(server) = server.filter(|&s| s != self.this) {
            self.core.wake(server);
        }
        Ok(r)
    }

    // ----------------------------------------------------------------------------------
    // Writing
    // ----------------------------------------------------------------------------------

    /// Writes `data` without copying it (asyncio's `write`): what the socket takes at once
    /// is sent now, the rest queued; see [`StreamTransport::write`].
    ///
    /// # Errors
    ///
    /// [`WriteError`]: after `write_eof`, `close`, the loss of the connection, above the
    /// hard limit, or a stale handle.
    pub fn write<H: WriteHandle>(
        &mut self,
        h: H,
        data: impl Into<Bytes>,
    ) -> Result<(), WriteError> {
        let data = data.into();
        self.act(h, |t, io, pool| t.write(data, io, pool))?
    }

    /// Writes bytes that were already counted as `h`'s external pending bytes (a driver's
    /// cross-task queue handing them over): see [`StreamTransport::write_external`]. The
    /// size does not change, and the hard limit does not apply to them again.
    ///
    /// # Errors
    ///
    /// As [`write`](Self::write), except `BufferFull`.
    pub fn write_external(&mut self, h: StreamHandle, data: Bytes) -> Result<(), WriteError> {
        self.act(h, |t, io, pool| t.write_external(data, io, pool))?
    }

    /// Writes a copy of `data`; only what the socket refuses is copied. See
    /// [`StreamTransport::write_slice`].
    ///
    /// # Errors
    ///
    /// As [`write`](Self::write).
    pub fn write_slice<H: WriteHandle>(&mut self, h: H, data: &[u8]) -> Result<(), WriteError> {
        self.act(h, |t, io, pool| t.write_slice(data, io, pool))?
    }

    /// Writes several chunks as one vectored send (asyncio's `writelines`, with the same
    /// guards as `write`).
    ///
    /// # Errors
    ///
    /// As [`write`](Self::write).
    pub fn writelines<H: WriteHandle>(&mut self, h: H, chunks: &[Bytes]) -> Result<(), WriteError> {
        self.act(h, |t, io, pool| t.writelines(chunks, io, pool))?
    }

    /// Shuts down the write side after the queue drains (a write pipe closes).
    ///
    /// # Errors
    ///
    /// [`HandleError`]; [`HandleError::WrongKind`] for a connection that cannot
    /// half-close (`can_write_eof()` is false: TLS 1.2), refused at the call as asyncio's
    /// SSL transport raises `NotImplementedError`. The transport is unchanged then: what
    /// was written is still sent, and `close()` ends the connection.
    /// [`HandleError::SendfileInProgress`] while a sendfile runs on `h`.
    pub fn write_eof<H: WriteHandle>(&mut self, h: H) -> Result<(), HandleError> {
        let t = self.checked(h.into(), H::KIND)?.stream_ref();
        if t.is_some_and(|t| t.kind() == StreamKind::Socket && !t.can_write_eof()) {
            return Err(HandleError::WrongKind {
                expected: "connection that can half-close (can_write_eof() is true)",
                found: "connection without half-close (TLS 1.2; use close())",
            });
        }
        self.act(h, |t, io, pool| {
            if t.is_sendfile_in_progress() {
                return Err(HandleError::SendfileInProgress);
            }
            t.write_eof(io, pool);
            Ok(())
        })?
    }

    /// Sends `count` bytes of `file` from `offset` through `h` (asyncio's
    /// `loop.sendfile(transport, file, offset, count, fallback)`; `count` `None`: to the
    /// end of the file): zero-copy where the driver can ([`Io::sendfile_supported`]),
    /// otherwise — or with [`SendfileFallback::Force`] — by reading chunks of the file
    /// and writing them with flow control (the buffer stays within the high-water mark
    /// plus one chunk). What was queued before goes first. Until the sendfile ends,
    /// writes to `h` fail with [`WriteError::SendfileInProgress`] and `write_eof` with
    /// [`HandleError::SendfileInProgress`]; during the fallback `h`'s protocol hears no
    /// `pause_writing` / `resume_writing` of its own (its view is handed back at the
    /// end). See [`stream::SendfileSource`](crate::stream::SendfileSource) for the
    /// file side.
    ///
    /// The outcome — bytes sent, or why it stopped (close, abort, a failure) — goes to
    /// this protocol's [`sendfile_completed`](Protocol::sendfile_completed); started
    /// outside a callback ([`Registry::enter`](crate::Registry::enter), a closure), it
    /// goes to the driver ([`Registry::poll_sendfile_done`](crate::Registry::poll_sendfile_done)).
    ///
    /// # Errors
    ///
    /// [`SendfileError`]: a zero `count`, a sendfile already in progress, a closing
    /// transport, no zero-copy with [`SendfileFallback::Deny`], or a stale handle.
    pub fn sendfile<H: WriteHandle>(
        &mut self,
        h: H,
        file: Box<dyn SendfileSource>,
        offset: u64,
        count: Option<u64>,
        fallback: SendfileFallback,
    ) -> Result<(), SendfileError> {
        let requester = self.this;
        self.act(h, |t, io, pool| {
            // The requester is set after the start: a sendfile finished at once is
            // reported when the registry serves the transport, not before.
            let started = t.start_sendfile(file, offset, count, fallback, io, pool);
            if started.is_ok() {
                t.set_sendfile_requester(requester);
            }
            started
        })?
    }

    /// True when `write_eof` is supported.
    ///
    /// # Errors
    ///
    /// [`HandleError`].
    pub fn can_write_eof<H: WriteHandle>(&self, h: H) -> Result<bool, HandleError> {
        let entry = self.checked(h.into(), H::KIND)?;
        Ok(entry.stream_ref().is_some_and(StreamTransport::can_write_eof))
    }

    /// Bytes buffered by the transport (queue plus external pending). O(1).
    ///
    /// # Errors
    ///
    /// [`HandleError`].
    pub fn write_buffer_size<H: FlowHandle>(&self, h: H) -> Result<usize, HandleError> {
        self.view(h, |t| t.write_buffer_size())
    }

    /// The transport's write-buffer limits.
    ///
    /// # Errors
    ///
    /// [`HandleError`].
    pub fn write_buffer_limits<H: FlowHandle>(
        &self,
        h: H,
    ) -> Result<WriteBufferLimits, HandleError> {
        self.view(h, |t| t.write_buffer_limits())
    }

    /// Sets the limits with asyncio's derivation and re-checks both flow edges at once.
    ///
    /// # Errors
    ///
    /// [`LimitsError::HighBelowLow`], or [`LimitsError::Handle`].
    pub fn set_write_buffer_limits<H: FlowHandle>(
        &mut self,
        h: H,
        high: Option<usize>,
        low: Option<usize>,
    ) -> Result<(), LimitsError> {
        self.act_common(h, |t, _, _| t.set_write_buffer_limits(high, low))?
    }

    /// Sets or removes a hard cap on the write buffer (off by default).
    ///
    /// # Errors
    ///
    /// [`HandleError`].
    pub fn set_write_buffer_hard_limit<H: FlowHandle>(
        &mut self,
        h: H,
        limit: Option<usize>,
    ) -> Result<(), HandleError> {
        self.act_common(h, |t, _, _| t.set_write_buffer_hard_limit(limit))
    }

    /// True from the moment the buffer exceeded high water until it drained to low water.
    ///
    /// # Errors
    ///
    /// [`HandleError`].
    pub fn is_writing_paused<H: FlowHandle>(&self, h: H) -> Result<bool, HandleError> {
        self.view(h, |t| t.is_writing_paused())
    }

    // ----------------------------------------------------------------------------------
    // Reading
    // ----------------------------------------------------------------------------------

    /// Stops delivering data until `resume_reading`. Idempotent.
    ///
    /// # Errors
    ///
    /// [`HandleError`].
    pub fn pause_reading<H: ReadHandle>(&mut self, h: H) -> Result<(), HandleError> {
        self.act_common(h, |t, _, _| t.pause_reading())
    }

    /// Resumes delivery. Idempotent; a no-op once closing.
    ///
    /// # Errors
    ///
    /// [`HandleError`].
    pub fn resume_reading<H: ReadHandle>(&mut self, h: H) -> Result<(), HandleError> {
        self.act_common(h, |t, _, _| t.resume_reading())
    }

    /// True while data would be delivered.
    ///
    /// # Errors
    ///
    /// [`HandleError`].
    pub fn is_reading<H: ReadHandle>(&self, h: H) -> Result<bool, HandleError> {
        self.view(h, |t| t.is_reading())
    }

    // ----------------------------------------------------------------------------------
    // Any stream
    // ----------------------------------------------------------------------------------

    /// Closes after flushing; `connection_lost(None)` follows. Idempotent. On a
    /// subprocess: closes its pipes (stdin after its flush) and kills the child if it
    /// still runs — never one whose exit was reported; `connection_lost` follows the exit.
    ///
    /// # Errors
    ///
    /// [`HandleError`].
    pub fn close<H: TransportHandle>(&mut self, h: H) -> Result<(), HandleError> {
        if H::KIND == TransportKind::Subprocess {
            // Its pipes and the driver are reached from the loop state.
            self.checked(h.into(), H::KIND)?;
            return self.core.close_subprocess(h.into(), false, self.io);
        }
        self.act_common(h, |t, io, pool| t.close(io, pool))
    }

    /// Closes at once, dropping the queue; `connection_lost(None)` follows. Idempotent.
    /// On a subprocess: as `close`, but stdin drops its buffer.
    ///
    /// # Errors
    ///
    /// [`HandleError`].
    pub fn abort<H: TransportHandle>(&mut self, h: H) -> Result<(), HandleError> {
        if H::KIND == TransportKind::Subprocess {
            self.checked(h.into(), H::KIND)?;
            return self.core.close_subprocess(h.into(), true, self.io);
        }
        self.act_common(h, |t, io, pool| t.abort(io, pool))
    }

    /// True once closing (asyncio's `is_closing`).
    ///
    /// # Errors
    ///
    /// [`HandleError`].
    pub fn is_closing<H: TransportHandle>(&self, h: H) -> Result<bool, HandleError> {
        self.view(h, |t| t.is_closing())
    }

    /// The endpoint information (asyncio's `get_extra_info`).
    ///
    /// # Errors
    ///
    /// [`HandleError`].
    pub fn extra<H: TransportHandle>(&self, h: H) -> Result<&Extra, HandleError> {
        Ok(self.checked(h.into(), H::KIND)?.transport.common_ref().extra())
    }

    /// Replaces the transport's protocol after the current callback: undelivered data,
    /// EOF and `connection_lost` go to the new one; it never receives `connection_made`;
    /// if the transport is paused for writing it first receives `pause_writing`
    /// (gh-109051); the old protocol receives nothing more and is dropped.
    ///
    /// # Errors
    ///
    /// [`HandleError`]; `WrongKind` for the pipe of a subprocess.
    pub fn set_protocol<H: AnyStreamHandle>(
        &mut self,
        h: H,
        protocol: Box<dyn Protocol>,
    ) -> Result<(), HandleError> {
        let h: Handle = h.into();
        if self.checked(h, H::KIND)?.pipe_of.is_some() {
            // Its callbacks belong to the subprocess's protocol.
            return Err(HandleError::WrongKind {
                expected: "pipe not owned by a subprocess",
                found: "subprocess pipe",
            });
        }
        self.core.set_swap(h, AnyProtocol::Stream(protocol));
        Ok(())
    }

    /// Replaces a datagram endpoint's protocol, with the rules of
    /// [`set_protocol`](Self::set_protocol).
    ///
    /// # Errors
    ///
    /// [`HandleError`].
    pub fn set_datagram_protocol(
        &mut self,
        h: DatagramHandle,
        protocol: Box<dyn DatagramProtocol>,
    ) -> Result<(), HandleError> {
        self.checked(h.handle(), TransportKind::Datagram)?;
        self.core.set_swap(h.handle(), AnyProtocol::Datagram(protocol));
        Ok(())
    }

    // ----------------------------------------------------------------------------------
    // Datagrams
    // ----------------------------------------------------------------------------------

    /// Sends one datagram (asyncio's `sendto`): see [`DatagramTransport::sendto`](crate::DatagramTransport::sendto). `addr`
    /// must be `None` (or the peer) on a connected endpoint and is required otherwise.
    ///
    /// # Errors
    ///
    /// [`WriteError`]: an address mismatch or a missing address, after `close`, after the
    /// loss of the endpoint, above the hard limit, or a stale handle.
    pub fn sendto(
        &mut self,
        h: DatagramHandle,
        data: &[u8],
        addr: Option<&DatagramAddr>,
    ) -> Result<(), WriteError> {
        self.act_transport(h, |t, io, _| match t {
            Transport::Datagram(t) => t.sendto(data, addr, io),
            _ => Err(WriteError::Handle(HandleError::Stale)),
        })?
    }

    /// This callback's transport as a datagram endpoint.
    pub fn datagram(&self) -> DatagramHandle {
        DatagramHandle::from_handle(self.this)
    }

    // ----------------------------------------------------------------------------------
    // Scheduling
    // ----------------------------------------------------------------------------------

    /// Runs `f` on the next dispatch (asyncio's `call_soon`): after the current dispatch
    /// reached quiescence, never inside it.
    pub fn call_soon(&mut self, f: impl FnOnce(&mut Ctx<'_>) + 'static) {
        self.core.soon.push_back(Box::new(f));
    }

    /// Runs `f` once `delay` has passed (never earlier).
    ///
    /// # Errors
    ///
    /// [`TimeOverflow`] when `now + delay` does not fit in an `Instant`; nothing is
    /// scheduled.
    pub fn call_later(
        &mut self,
        delay: Duration,
        f: impl FnOnce(&mut Ctx<'_>) + 'static,
    ) -> Result<TimerId, TimeOverflow> {
        let when = self.now.checked_add(delay).ok_or(TimeOverflow)?;
        Ok(self.call_at(when, f))
    }

    /// Runs `f` at `when` (at once, on the next timer pass, if `when` is past).
    pub fn call_at(&mut self, when: Instant, f: impl FnOnce(&mut Ctx<'_>) + 'static) -> TimerId {
        self.core.seq += 1;
        let id = TimerId { when, seq: self.core.seq };
        self.core.later.insert((when, id.seq), Box::new(f));
        id
    }

    /// Cancels a closure scheduled with `call_later` / `call_at`; false if it already ran
    /// or was cancelled.
    pub fn cancel(&mut self, id: TimerId) -> bool {
        self.core.later.remove(&(id.when, id.seq)).is_some()
    }

    /// Reports an error this protocol handled itself to the loop's error queue
    /// ([`Registry::poll_error`](crate::Registry::poll_error)), as asyncio's
    /// `call_exception_handler`; nothing else happens.
    pub fn report_error(&mut self, error: ProtocolError) {
        let handle = self.core.entry(self.this).is_ok().then_some(self.this);
        self.core.report(LoopError::Reported { handle, error });
    }

    // ----------------------------------------------------------------------------------
    // Requests to the driver
    // ----------------------------------------------------------------------------------

    /// Asks the driver to open a stream connection to `endpoint` for `protocol`. Never
    /// blocks: the outcome arrives in this protocol's
    /// [`request_completed`](Protocol::request_completed), after the new transport's
    /// `connection_made` — or later, when `protocol` takes the answer over with
    /// [`hold_request`](Self::hold_request) (a TLS engine answers after its handshake).
    pub fn connect(&mut self, endpoint: Endpoint, protocol: Box<dyn Protocol>) -> RequestId {
        self.core.seq += 1;
        let id = RequestId(self.core.seq);
        let requester = self.core.entry(self.this).is_ok().then_some(self.this);
        self.core.start_connect(protocol, endpoint, requester, id);
        id
    }

    /// Takes over the answer to the [`connect`](Self::connect) request that opened this
    /// callback's transport. Called from that transport's `connection_made`, it withholds
    /// the asking protocol's `request_completed(Ok(..))`; the protocol answers later with
    /// [`complete_request`](Self::complete_request). This is how a TLS engine reports the
    /// handshake's outcome (and the app's transport) instead of the TCP connect.
    ///
    /// `None` when no answer is waiting: the transport was accepted or inserted by the
    /// driver, opened by the driver's user rather than by a protocol, or the answer was
    /// already delivered or held.
    pub fn hold_request(&mut self) -> Option<HeldRequest> {
        let this = self.this;
        let i = self
            .core
            .notices
            .iter()
            .position(|n| n.outcome.as_ref().is_ok_and(|h| h.handle() == this))?;
        let n = self.core.notices.remove(i)?;
        Some(HeldRequest { requester: n.requester, id: n.id })
    }

    /// Answers a request taken over with [`hold_request`](Self::hold_request): the asking
    /// protocol hears `request_completed(held.id(), outcome)` after the current callback
    /// (and after the callbacks it caused on other transports, such as a new transport's
    /// `connection_made`).
    pub fn complete_request(
        &mut self,
        held: HeldRequest,
        outcome: Result<StreamHandle, ConnectionError>,
    ) {
        let HeldRequest { requester, id } = held;
        self.core.notices.push_back(Notice { requester, id, outcome });
    }

    /// Owes `h`'s protocol a [`handle_wake`](Protocol::handle_wake), delivered once it has
    /// no other callback due: after a [`set_protocol`](Self::set_protocol), the new
    /// protocol's first callback even with no input (how `start_tls` starts its engine,
    /// which never receives `connection_made`).
    #[cfg(feature = "tls")]
    pub(crate) fn owe_wake(&mut self, h: StreamHandle) {
        self.core.wake(h.handle());
    }

    /// Why `h`'s protocol cannot be replaced by a TLS engine now, if it cannot: closing,
    /// a swap already pending (the first engine's request would never be answered), or a
    /// protocol that serves other transports (they would be orphaned).
    #[cfg(feature = "tls")]
    pub(crate) fn check_upgradable(&self, h: StreamHandle) -> Result<(), HandleError> {
        let closing = self.is_closing(h)?;
        let h = h.handle();
        let refusal = if closing {
            "start_tls on a closing transport"
        } else if self.core.swap_pending(h) {
            "start_tls while a protocol swap (set_protocol or start_tls) is pending"
        } else if self.core.serves_any(h) {
            "start_tls on a transport whose protocol serves others (TLS already runs on it)"
        } else {
            return Ok(());
        };
        Err(HandleError::InvalidState(refusal))
    }

    /// A request whose answer (given later with [`complete_request`](Self::complete_request))
    /// goes to this callback's protocol, when that is not `h`'s: `h`'s own protocol is
    /// being replaced, and a closure has none to hear it.
    #[cfg(feature = "tls")]
    pub(crate) fn request_for_caller(
        &mut self,
        h: StreamHandle,
    ) -> (RequestId, Option<HeldRequest>) {
        self.core.seq += 1;
        let id = RequestId(self.core.seq);
        let requester = self.this;
        let asks = requester != h.handle() && self.core.entry(requester).is_ok();
        (id, asks.then_some(HeldRequest { requester, id }))
    }

    // ----------------------------------------------------------------------------------
    // Transports served by this protocol
    // ----------------------------------------------------------------------------------

    /// Creates a stream transport whose I/O this callback's protocol serves (DESIGN.md §3,
    /// "transports driven by a protocol"; how TLS composes): its sends go synchronously
    /// into `sink` (any `Io`; the handle argument is the new transport's), and every
    /// change a user makes to it wakes this protocol with
    /// [`handle_wake`](Protocol::handle_wake). The external driver never sees it. This
    /// protocol feeds it with [`feed_data`](Self::feed_data) / [`feed_eof`](Self::feed_eof)
    /// and ends it with [`served_closed`](Self::served_closed).
    ///
    /// # Errors
    ///
    /// [`HandleError::Stale`] outside a transport callback (there is no serving protocol).
    pub fn insert_served_stream(
        &mut self,
        protocol: Box<dyn Protocol>,
        extra: Extra,
        sink: Box<dyn Io>,
    ) -> Result<StreamHandle, HandleError> {
        self.core.entry(self.this)?;
        let h = self.core.insert_stream(StreamKind::Socket, protocol, extra);
        let entry = self.core.entry_mut(h)?;
        entry.sink = Some(sink);
        entry.server = Some(self.this);
        if let Some(t) = entry.stream() {
            t.set_served();
        }
        Ok(StreamHandle::from_handle(h))
    }

    fn serve<R>(
        &mut self,
        h: StreamHandle,
        f: impl FnOnce(&mut StreamTransport, &mut dyn Io, &mut SendPool) -> Result<R, DriverError>,
    ) -> Result<R, DriverError> {
        let h = h.handle();
        let entry = self.core.entry(h).map_err(|_| DriverError::StaleHandle)?;
        if entry.server != Some(self.this) {
            return Err(DriverError::WrongKind { expected: "transport served by this protocol" });
        }
        self.core.with_stream_io(h, self.io, f).unwrap_or(Err(DriverError::StaleHandle))
    }

    /// Delivers `data` to a transport this protocol serves (copied; delivered when its
    /// reading allows).
    ///
    /// # Errors
    ///
    /// [`DriverError`]: not served by this protocol, closed, or after its EOF.
    pub fn feed_data(&mut self, h: StreamHandle, data: &[u8]) -> Result<(), DriverError> {
        self.serve(h, |t, _, _| t.handle_data(data))
    }

    /// Delivers EOF to a transport this protocol serves.
    ///
    /// # Errors
    ///
    /// As [`feed_data`](Self::feed_data).
    pub fn feed_eof(&mut self, h: StreamHandle) -> Result<(), DriverError> {
        self.serve(h, |t, _, _| t.handle_eof())
    }

    /// The sink can take bytes again: flushes the served transport's queue into it.
    ///
    /// # Errors
    ///
    /// As [`feed_data`](Self::feed_data).
    pub fn served_writable(&mut self, h: StreamHandle) -> Result<(), DriverError> {
        self.serve(h, |t, io, pool| t.on_writable(io, pool))
    }

    /// Bytes a served transport holds that its protocol has not received yet (reading
    /// paused): what a serving engine's read back-pressure looks at.
    ///
    /// # Errors
    ///
    /// As [`feed_data`](Self::feed_data).
    pub fn served_inbound(&mut self, h: StreamHandle) -> Result<usize, DriverError> {
        self.serve(h, |t, _, _| Ok(t.held_inbound()))
    }

    /// Sets the bytes this protocol holds on the served transport's behalf (for TLS:
    /// ciphertext not yet handed to the raw transport); they count in its
    /// `write_buffer_size()` and its flow control.
    ///
    /// # Errors
    ///
    /// As [`feed_data`](Self::feed_data).
    pub fn set_served_pending(&mut self, h: StreamHandle, bytes: usize) -> Result<(), DriverError> {
        self.serve(h, |t, _, _| {
            t.set_external_pending(bytes);
            Ok(())
        })
    }

    /// Whether the connection under a served transport can half-close (on by default):
    /// off, its `can_write_eof()` is false and a keep-open answer to `eof_received`
    /// closes it anyway (TLS 1.2). See [`StreamTransport::set_half_close`].
    ///
    /// # Errors
    ///
    /// As [`feed_data`](Self::feed_data).
    pub fn set_served_half_close(&mut self, h: StreamHandle, on: bool) -> Result<(), DriverError> {
        self.serve(h, |t, _, _| {
            t.set_half_close(on);
            Ok(())
        })
    }

    /// The serving side ended: the served transport is lost with `reason`. A served
    /// transport closed gracefully (`close()`, or an EOF answered "close") waits for this
    /// call before its `connection_lost`, so the serving protocol decides when the
    /// connection is over (after a TLS shutdown) and why (a shutdown timeout).
    ///
    /// # Errors
    ///
    /// As [`feed_data`](Self::feed_data).
    pub fn served_closed(
        &mut self,
        h: StreamHandle,
        reason: Option<ConnectionError>,
    ) -> Result<(), DriverError> {
        self.serve(h, |t, io, pool| t.handle_closed(reason, io, pool))
    }
}

impl std::fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx").field("this", &self.this).field("now", &self.now).finish()
    }
}
