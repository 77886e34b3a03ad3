//! The registry: the sans-IO loop state a driver drives (DESIGN.md §3).
//!
//! A [`Registry`] holds every transport of one loop with its protocol, the timers, the
//! `call_soon` / `call_later` closures and the requests protocols made of the driver. The
//! driver owns the sockets and the clock, implements [`Io`] over its sockets, and tells the
//! registry what happened (readable, writable, time passed, a connect finished); the
//! registry does the reads and sends through `Io` and calls protocols — one callback at a
//! time, never nested.

mod ctx;
mod dispatch;
mod state;
mod subprocess;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_datagram;
mod transport;

use std::io::IoSlice;
use std::path::PathBuf;
use std::time::Instant;

use std::net::SocketAddr;

pub use self::ctx::{Ctx, HeldRequest, TimerId};
pub(crate) use self::state::Core;
use self::state::Transport;
pub use self::transport::TransportKind;
use crate::stream::StreamKind;
use crate::{
    ConnectionError, DatagramAddr, DatagramHandle, DatagramProtocol, DatagramTransport,
    DriverError, Extra, Handle, Interest, Io, Protocol, ProtocolError, ReadPipeHandle, RequestId,
    SendPool, StreamHandle, StreamTransport, WritePipeHandle,
};

/// Where to open a connection ([`Ctx::connect`], [`Registry::connect`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Endpoint {
    /// A TCP connection to a resolved address.
    Addr(SocketAddr),
    /// A TCP connection to a host name the driver resolves.
    Host {
        /// Name or address literal.
        host: String,
        /// Port.
        port: u16,
    },
    /// A Unix stream socket at a path.
    Unix(PathBuf),
}

/// Something a protocol (or the driver's user) asked the driver to do. The driver carries
/// it out and reports the outcome ([`Registry::handle_connected`],
/// [`Registry::handle_connect_failed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Request {
    /// Open a stream connection to `endpoint` for the transport `handle`, which waits in
    /// the registry (no callback, no I/O) until the outcome is reported.
    Connect {
        /// Names the request in `Protocol::request_completed`.
        id: RequestId,
        /// The transport to connect.
        handle: StreamHandle,
        /// Where to.
        endpoint: Endpoint,
    },
}

/// A failure the loop reports instead of ending a connection (asyncio's exception
/// handler): errors from non-fatal callbacks and panics. Read with
/// [`Registry::poll_error`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoopError {
    /// A callback whose failure is not fatal (`connection_made`, `pause_writing`,
    /// `resume_writing`, `connection_lost`, `request_completed`) returned an error; the
    /// transport continues.
    #[error("protocol.{callback}() failed: {error}")]
    CallbackFailed {
        /// The transport, if the callback belonged to one.
        handle: Option<Handle>,
        /// The callback's name.
        callback: &'static str,
        /// What it returned.
        error: ProtocolError,
    },
    /// A protocol reported an error it handled itself ([`Ctx::report_error`]): a TLS
    /// engine's failed server-side handshake, say.
    #[error("reported by a protocol: {error}")]
    Reported {
        /// The transport whose protocol reported it, if any.
        handle: Option<Handle>,
        /// What it reported.
        error: ProtocolError,
    },
    /// A protocol callback, a protocol's drop, or a closure panicked. A protocol that
    /// panicked was dropped and its transport aborted; other transports are unaffected.
    #[error("{callback} panicked: {message}")]
    Panicked {
        /// The transport, if the panic belonged to one.
        handle: Option<Handle>,
        /// Where it panicked.
        callback: &'static str,
        /// The panic message.
        message: String,
    },
}

/// A callback about to be delivered, as seen by a tracer ([`Registry::set_tracer`]).
/// Only callbacks that actually reach a protocol are traced, and one event that is not a
/// callback: [`ProtocolSwapped`](Trace::ProtocolSwapped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Trace<'a> {
    /// `connection_made`.
    ConnectionMade,
    /// `data_received` with these bytes, or `buffer_updated` for the bytes read into the
    /// protocol's buffer.
    DataReceived(&'a [u8]),
    /// `eof_received`.
    EofReceived,
    /// `pause_writing`.
    PauseWriting,
    /// `resume_writing`.
    ResumeWriting,
    /// `connection_lost`.
    ConnectionLost(Option<&'a ConnectionError>),
    /// `handle_timeout`.
    Timeout,
    /// `error_received` (datagram endpoints).
    ErrorReceived(&'a ConnectionError),
    /// `datagram_received` (datagram endpoints).
    DatagramReceived(&'a [u8], Option<&'a crate::DatagramAddr>),
    /// `handle_wake`.
    Wake,
    /// `request_completed`.
    RequestCompleted(RequestId, Result<StreamHandle, &'a ConnectionError>),
    /// `pipe_data_received(fd, data)` (subprocesses; traced with the subprocess's handle).
    PipeDataReceived(u32, &'a [u8]),
    /// `pipe_connection_lost(fd, err)` (subprocesses; traced with the subprocess's handle).
    PipeConnectionLost(u32, Option<&'a ConnectionError>),
    /// `process_exited`.
    ProcessExited,
    /// Not a callback: a replacement protocol (`set_protocol`, `start_tls`) was installed;
    /// the callbacks that follow go to it. Its pause/resume alternation starts afresh (it
    /// first receives `pause_writing` if the transport is paused, gh-109051).
    ProtocolSwapped,
    /// `sendfile_completed` for a sendfile on this transport.
    SendfileCompleted(StreamHandle, Result<u64, &'a crate::stream::SendfileError>),
}

/// A tracer: observes each callback just before it is delivered.
pub type Tracer = Box<dyn FnMut(Handle, Trace<'_>)>;

/// The loop state of one loop. See the [crate docs](crate) for the driving contract and
/// the canonical driver loop.
pub struct Registry {
    core: Core,
}

impl Registry {
    /// An empty loop. `now` is the driver's current time (the core never reads a clock).
    pub fn new(now: Instant) -> Self {
        Registry { core: Core::new(now) }
    }

    /// How many transports are in the loop (removed after their `connection_lost`).
    pub fn len(&self) -> usize {
        self.core.live()
    }

    /// True when the loop holds no transport.
    pub fn is_empty(&self) -> bool {
        self.core.live() == 0
    }

    // ----------------------------------------------------------------------------------
    // Transports entering the loop
    // ----------------------------------------------------------------------------------

    /// An accepted or connected socket enters the loop. `connection_made` is delivered by
    /// the next [`dispatch`](Self::dispatch) (or any other driver call that dispatches).
    pub fn insert_stream(&mut self, protocol: Box<dyn Protocol>, extra: Extra) -> StreamHandle {
        StreamHandle::from_handle(self.core.insert_stream(StreamKind::Socket, protocol, extra))
    }

    /// The read end of a pipe enters the loop.
    pub fn insert_read_pipe(
        &mut self,
        protocol: Box<dyn Protocol>,
        extra: Extra,
    ) -> ReadPipeHandle {
        ReadPipeHandle::from_handle(self.core.insert_stream(StreamKind::ReadPipe, protocol, extra))
    }

    /// A datagram socket enters the loop; `remote` makes it connected (asyncio's
    /// `remote_addr`). `connection_made` is delivered by the next dispatch.
    pub fn insert_datagram(
        &mut self,
        protocol: Box<dyn DatagramProtocol>,
        remote: Option<DatagramAddr>,
        extra: Extra,
    ) -> DatagramHandle {
        DatagramHandle::from_handle(self.core.insert_datagram(protocol, remote, extra))
    }

    /// The write end of a pipe enters the loop.
    pub fn insert_write_pipe(
        &mut self,
        protocol: Box<dyn Protocol>,
        extra: Extra,
    ) -> WritePipeHandle {
        WritePipeHandle::from_handle(self.core.insert_stream(
            StreamKind::WritePipe,
            protocol,
            extra,
        ))
    }

    /// Asks for a connection on behalf of the driver's user (not of a protocol): the
    /// transport waits in the loop and a [`Request::Connect`] is queued for
    /// [`poll_request`](Self::poll_request). Protocols use [`Ctx::connect`].
    pub fn connect(&mut self, protocol: Box<dyn Protocol>, endpoint: Endpoint) -> StreamHandle {
        let id = self.next_request_id();
        self.core.start_connect(protocol, endpoint, None, id)
    }

    fn next_request_id(&mut self) -> RequestId {
        self.core.seq += 1;
        RequestId(self.core.seq)
    }

    // ----------------------------------------------------------------------------------
    // Driver face
    // ----------------------------------------------------------------------------------

    /// The connection for `h` (from a [`Request::Connect`]) is established: `extra`
    /// describes it. Its `connection_made` is delivered, then the asking protocol's
    /// `request_completed(Ok(h))`.
    ///
    /// # Errors
    ///
    /// [`DriverError::StaleHandle`]; [`DriverError::NotConnecting`] if `h` was not waiting.
    pub fn handle_connected(
        &mut self,
        h: StreamHandle,
        extra: Extra,
        now: Instant,
        io: &mut dyn Io,
    ) -> Result<(), DriverError> {
        self.core.now = now;
        self.core.connect_outcome(h.handle(), Ok(extra))?;
        self.core.drain(io);
        Ok(())
    }

    /// The connection for `h` could not be established. The transport is removed (its
    /// protocol hears nothing; the driver closes its own socket) and the asking protocol
    /// gets `request_completed(Err(err))`.
    ///
    /// # Errors
    ///
    /// As [`handle_connected`](Self::handle_connected).
    pub fn handle_connect_failed(
        &mut self,
        h: StreamHandle,
        err: ConnectionError,
        now: Instant,
        io: &mut dyn Io,
    ) -> Result<(), DriverError> {
        self.core.now = now;
        self.core.connect_outcome(h.handle(), Err(err))?;
        self.core.drain(io);
        Ok(())
    }

    /// `h` is readable: the registry first delivers what ranks above data, then reads once
    /// through [`Io::try_recv`] — into the protocol's `get_buffer` for a buffered protocol,
    /// otherwise into the loop-wide buffer, delivered to `data_received` without a copy —
    /// then dispatches to quiescence. On the write end of a pipe, readability means the
    /// read end closed.
    ///
    /// # Errors
    ///
    /// [`DriverError::StaleHandle`], [`DriverError::Closed`], or a misbehaving `Io`
    /// ([`DriverError::ReceivedMoreThanCapacity`]).
    pub fn on_readable(
        &mut self,
        h: Handle,
        now: Instant,
        io: &mut dyn Io,
    ) -> Result<(), DriverError> {
        self.check_driven(h)?;
        self.core.now = now;
        self.core.drain(io);
        let r = self.core.read_once(h, io);
        self.core.drain(io);
        r
    }

    /// `h` is writable: flushes its queue through [`Io::try_send`] (vectored), completes
    /// a pending shutdown or close, and dispatches.
    ///
    /// # Errors
    ///
    /// [`DriverError::StaleHandle`], [`DriverError::Closed`].
    pub fn on_writable(
        &mut self,
        h: Handle,
        now: Instant,
        io: &mut dyn Io,
    ) -> Result<(), DriverError> {
        self.drive_any(h, now, io, |t, io, pool| match t {
            Transport::Stream(t) => t.on_writable(io, pool),
            Transport::Datagram(t) => t.on_writable(io),
            Transport::Subprocess(_) => Err(DriverError::WrongKind { expected: "pipe or socket" }),
        })
    }

    /// An error observed outside `Io` calls (`EPOLLERR`, a failed completion). For a
    /// stream it is fatal: `connection_lost(Some(err))` follows; for a transport still
    /// connecting it is the connect failing (as [`handle_connect_failed`](Self::handle_connect_failed)). For a datagram endpoint it
    /// is not (a pending ICMP error, say): `error_received(err)` follows.
    ///
    /// # Errors
    ///
    /// [`DriverError::StaleHandle`], [`DriverError::Closed`].
    pub fn handle_error(
        &mut self,
        h: Handle,
        err: ConnectionError,
        now: Instant,
        io: &mut dyn Io,
    ) -> Result<(), DriverError> {
        if self.core.entry(h).is_ok_and(|e| e.is_connecting()) {
            // An error before the connect outcome is the connect failing: the driver
            // closes its own socket and the asking protocol hears `request_completed`.
            return self.handle_connect_failed(StreamHandle::from_handle(h), err, now, io);
        }
        self.drive_any(h, now, io, |t, io, pool| match t {
            Transport::Stream(t) => t.handle_error(err, io, pool),
            Transport::Datagram(t) => t.handle_error_received(err),
            Transport::Subprocess(_) => Err(DriverError::WrongKind { expected: "pipe or socket" }),
        })
    }

    /// For completion-based drivers: a datagram received for `h` outside
    /// [`Io::try_recv_from`] (copied; delivered when reading allows).
    ///
    /// # Errors
    ///
    /// [`DriverError::StaleHandle`], [`DriverError::WrongKind`], [`DriverError::Closed`].
    pub fn handle_datagram(
        &mut self,
        h: Handle,
        data: &[u8],
        addr: Option<DatagramAddr>,
        now: Instant,
        io: &mut dyn Io,
    ) -> Result<(), DriverError> {
        self.drive_any(h, now, io, |t, _, _| match t {
            Transport::Datagram(t) => t.handle_datagram(data, addr),
            _ => Err(DriverError::WrongKind { expected: "datagram endpoint" }),
        })
    }

    /// For completion-based drivers: bytes received for `h` outside [`Io::try_recv`]
    /// (copied; delivered when reading allows). An empty `data` is the peer's EOF.
    ///
    /// # Errors
    ///
    /// [`DriverError::StaleHandle`], [`DriverError::Closed`], [`DriverError::DataAfterEof`].
    pub fn handle_received(
        &mut self,
        h: Handle,
        data: &[u8],
        now: Instant,
        io: &mut dyn Io,
    ) -> Result<(), DriverError> {
        self.drive(
            h,
            now,
            io,
            |t, _, _| {
                if data.is_empty() { t.handle_eof() } else { t.handle_data(data) }
            },
        )
    }

    /// For completion-based drivers: fills `out` with `h`'s queued bytes and returns how
    /// many entries were filled. Offers the same bytes until
    /// [`handle_sent`](Self::handle_sent).
    ///
    /// # Errors
    ///
    /// [`DriverError::StaleHandle`].
    pub fn poll_transmit<'a>(
        &'a self,
        h: Handle,
        out: &mut [IoSlice<'a>],
    ) -> Result<usize, DriverError> {
        self.check_driven(h)?;
        let entry = self.core.entry(h).map_err(|_| DriverError::StaleHandle)?;
        let t = entry.stream_ref().ok_or(DriverError::WrongKind { expected: "stream" })?;
        Ok(t.poll_transmit(out))
    }

    /// For completion-based drivers: `n` bytes of what [`poll_transmit`](Self::poll_transmit)
    /// offered were sent.
    ///
    /// # Errors
    ///
    /// [`DriverError::StaleHandle`], [`DriverError::Closed`],
    /// [`DriverError::SentMoreThanOffered`].
    pub fn handle_sent(
        &mut self,
        h: Handle,
        n: usize,
        now: Instant,
        io: &mut dyn Io,
    ) -> Result<(), DriverError> {
        self.drive(h, now, io, |t, io, pool| t.handle_sent(n, io, pool))
    }

    /// Sets the bytes the driver holds for `h` outside its queue — a cross-task command
    /// queue's writes not yet moved in (DESIGN.md §6): they count in
    /// `write_buffer_size()`, and both flow edges are re-checked, so `pause_writing` /
    /// `resume_writing` follow as for the transport's own queue. Ignored once the
    /// connection is lost.
    ///
    /// # Errors
    ///
    /// [`DriverError::StaleHandle`]; [`DriverError::WrongKind`] for a transport served by
    /// a protocol (its server sets these with `Ctx::set_served_pending`).
    pub fn set_external_pending(
        &mut self,
        h: Handle,
        bytes: usize,
        now: Instant,
        io: &mut dyn Io,
    ) -> Result<(), DriverError> {
        self.drive(h, now, io, |t, _, _| {
            t.set_external_pending(bytes);
            Ok(())
        })
    }

    /// The transport `h`, read-only: its buffer size, limits, closing state, extra info.
    ///
    /// # Errors
    ///
    /// [`DriverError::StaleHandle`].
    pub fn transport(&self, h: Handle) -> Result<&StreamTransport, DriverError> {
        let entry = self.core.entry(h).map_err(|_| DriverError::StaleHandle)?;
        entry.stream_ref().ok_or(DriverError::WrongKind { expected: "stream" })
    }

    /// The datagram endpoint `h`, read-only.
    ///
    /// # Errors
    ///
    /// [`DriverError::StaleHandle`], [`DriverError::WrongKind`].
    pub fn datagram(&self, h: Handle) -> Result<&DatagramTransport, DriverError> {
        match &self.core.entry(h).map_err(|_| DriverError::StaleHandle)?.transport {
            Transport::Datagram(t) => Ok(t),
            _ => Err(DriverError::WrongKind { expected: "datagram endpoint" }),
        }
    }

    /// What `h` wants from the readiness source now.
    ///
    /// # Errors
    ///
    /// [`DriverError::StaleHandle`].
    pub fn interest(&self, h: Handle) -> Result<Interest, DriverError> {
        self.check_driven(h)?;
        Ok(self.core.entry(h).map_err(|_| DriverError::StaleHandle)?.interest())
    }

    /// The next transport whose interest, queued bytes or closing state changed since it
    /// was last reported — each reported once per change, so a driver never scans all
    /// handles. Transports served by a protocol (TLS) are never reported.
    #[must_use]
    pub fn poll_io(&mut self) -> Option<Handle> {
        self.core.poll_io()
    }

    /// The next request protocols made of the driver.
    #[must_use]
    pub fn poll_request(&mut self) -> Option<Request> {
        self.core.poll_request()
    }

    /// The next error the loop reported instead of ending a connection (asyncio's
    /// exception handler). At most 1,024 wait; older ones are dropped and counted in
    /// [`errors_dropped`](Self::errors_dropped).
    #[must_use]
    pub fn poll_error(&mut self) -> Option<LoopError> {
        self.core.poll_error()
    }

    /// The next sendfile that ended among those started outside a protocol callback
    /// (through [`enter`](Self::enter) or a closure: [`Ctx::sendfile`]): the transport and
    /// the bytes sent, or why it stopped. A driver's blocking `sendfile` helper waits for
    /// its handle here; sendfiles started by a protocol are reported to it instead
    /// ([`Protocol::sendfile_completed`](crate::Protocol::sendfile_completed)).
    #[must_use]
    pub fn poll_sendfile_done(&mut self) -> Option<crate::stream::SendfileDone> {
        self.core.sendfile_done.pop_front()
    }

    /// Errors dropped because nobody read [`poll_error`](Self::poll_error).
    pub fn errors_dropped(&self) -> u64 {
        self.core.errors_dropped()
    }

    /// When the driver must call [`handle_timeout`](Self::handle_timeout) next: the
    /// earliest protocol timer or `call_later` closure, or the current time while
    /// `call_soon` closures wait. `None`: nothing is scheduled.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.core.poll_timeout()
    }

    /// Time passed: fires protocol timers and `call_later` closures due at `now` (never
    /// earlier), runs waiting `call_soon` closures, and dispatches to quiescence.
    pub fn handle_timeout(&mut self, now: Instant, io: &mut dyn Io) {
        self.core.now = now;
        let waiting = self.core.soon.len();
        self.core.fire_timers(now, io);
        self.core.run_soon(waiting, io);
        self.core.drain(io);
    }

    /// Delivers pending callbacks until quiescent, after running the `call_soon` closures
    /// queued before this call (those they queue run on the next call: asyncio's rule).
    pub fn dispatch(&mut self, now: Instant, io: &mut dyn Io) {
        self.core.now = now;
        let waiting = self.core.soon.len();
        self.core.drain(io);
        self.core.run_soon(waiting, io);
    }

    /// Runs user code with a [`Ctx`] outside any callback (main() after a connect, test
    /// scripts, fuzz operations, cross-task commands), then dispatches to quiescence.
    /// `ctx.stream()` there names no transport.
    pub fn enter<R>(
        &mut self,
        now: Instant,
        io: &mut dyn Io,
        f: impl FnOnce(&mut Ctx<'_>) -> R,
    ) -> R {
        self.core.now = now;
        let r = f(&mut Ctx::new(&mut self.core, io, self::state::NO_HANDLE, now));
        self.core.drain(io);
        r
    }

    /// Installs (or with `None` removes) a tracer: called with the transport's handle just
    /// before every callback is delivered to its protocol — how the test harness records
    /// transcripts. It cannot act on the loop, so it cannot re-enter it.
    pub fn set_tracer(&mut self, tracer: Option<Tracer>) {
        self.core.tracer = tracer;
    }

    /// How many `call_soon` closures wait for the next [`dispatch`](Self::dispatch).
    pub fn pending_soon(&self) -> usize {
        self.core.soon.len()
    }

    /// Timer entries held (protocol timers plus `call_later` closures): bounded by the
    /// number of transports plus pending closures, however often timers are reset.
    pub fn timer_entries(&self) -> usize {
        self.core.timer_entries()
    }

    /// A driver call on one transport: check the handle, run `f` with the driver's `Io`,
    /// then dispatch to quiescence.
    fn drive<R>(
        &mut self,
        h: Handle,
        now: Instant,
        io: &mut dyn Io,
        f: impl FnOnce(&mut StreamTransport, &mut dyn Io, &mut SendPool) -> Result<R, DriverError>,
    ) -> Result<R, DriverError> {
        self.check_driven(h)?;
        self.core.now = now;
        let r = self.core.with_stream_io(h, io, f);
        self.core.drain(io);
        r.unwrap_or(Err(DriverError::StaleHandle))
    }

    /// [`drive`](Self::drive) for any transport kind.
    fn drive_any<R>(
        &mut self,
        h: Handle,
        now: Instant,
        io: &mut dyn Io,
        f: impl FnOnce(&mut Transport, &mut dyn Io, &mut SendPool) -> Result<R, DriverError>,
    ) -> Result<R, DriverError> {
        self.check_driven(h)?;
        self.core.now = now;
        let r = self.core.with_transport_io(h, io, f);
        self.core.drain(io);
        r.unwrap_or(Err(DriverError::StaleHandle))
    }

    /// Only transports the external driver drives: not ones served by a protocol.
    fn check_driven(&self, h: Handle) -> Result<(), DriverError> {
        let entry = self.core.entry(h).map_err(|_| DriverError::StaleHandle)?;
        match entry.server {
            None => Ok(()),
            Some(_) => Err(DriverError::WrongKind { expected: "transport the driver owns" }),
        }
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("transports", &self.core.live()).finish_non_exhaustive()
    }
}
