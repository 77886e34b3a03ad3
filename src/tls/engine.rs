//! [`TlsEngine`]: the raw transport's protocol, serving the app's plaintext transport.
//!
//! The engine moves bytes between three places: the raw transport (ciphertext, through
//! `Ctx::write` and `data_received`), rustls, and the app's transport (plaintext, through
//! the [`Sink`] it sends into and `Ctx::feed_data` / `Ctx::feed_eof`). Every callback ends
//! with [`TlsEngine::pump`], which hands ciphertext over, pulls the app's queue while the
//! raw transport takes more, and advances the shutdown.
//!
//! | phase | entered when | leaves when |
//! |---|---|---|
//! | `Handshaking` | the raw transport's `connection_made`, or after a `start_tls` the engine's first callback (handshake timer armed) | handshake done → `Open` (app transport created); failure, timeout, EOF → `Done` |
//! | `Open` | the handshake completed | the app transport closed: gracefully → `ShuttingDown` (our `close_notify`), aborted → `Done` |
//! | `ShuttingDown` | our `close_notify` is queued behind the app's data | the peer's `close_notify` or TCP EOF → `Done` (raw closed after its flush); shutdown timer → `Done` (raw failed) |
//! | `Done` | the raw transport is closing or gone | never |

use std::cell::RefCell;
use std::fmt;
use std::io::{self, BufRead};
use std::rc::Rc;
use std::time::Instant;

use rustls::Connection;

use super::info::SessionState;
use super::sink::{AppClosed, Shared, Sink};
use super::{TlsError, TlsInfo, TlsOptions, TlsSession};
use crate::{
    CallbackResult, ConnectionError, Ctx, HeldRequest, Protocol, ProtocolError, StreamHandle,
};

/// Builds the app protocol once the handshake completed.
pub(super) type AppFactory = Box<dyn FnOnce(&TlsSession) -> Box<dyn Protocol>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Handshaking,
    Open,
    ShuttingDown,
    Done,
}

/// A TLS connection as a [`Protocol`] of a raw stream transport: it runs the handshake,
/// then serves the app protocol an ordinary plaintext stream transport (DESIGN.md §3,
/// "transports driven by a protocol"). Built by [`TlsClient::engine`](super::TlsClient::engine)
/// or [`TlsServer::engine`](super::TlsServer::engine); insert it like any protocol.
///
/// See the [module docs](super) for the rules it implements.
pub struct TlsEngine {
    shared: Rc<RefCell<Shared>>,
    session: TlsSession,
    app: Option<AppFactory>,
    sni: Option<String>,
    options: TlsOptions,
    is_server: bool,
    phase: Phase,
    raw: Option<StreamHandle>,
    inner: Option<StreamHandle>,
    handshake_deadline: Option<Instant>,
    shutdown_deadline: Option<Instant>,
    shutdown_started: bool,
    /// The answer to the `Ctx::connect` that opened the raw transport, withheld until the
    /// handshake's outcome is known.
    request: Option<HeldRequest>,
    raw_read_paused: bool,
    /// The app's transport was given EOF.
    eof_fed: bool,
    /// The peer's `close_notify` was received.
    peer_closed: bool,
    /// The raw transport received the peer's TCP EOF.
    tcp_eof: bool,
    failure: Option<TlsError>,
    /// start_tls: ciphertext the previous protocol read past the upgrade point, fed to
    /// rustls before anything the raw transport delivers to the engine.
    early: Vec<u8>,
}

impl TlsEngine {
    pub(super) fn new(
        conn: Connection,
        sni: Option<String>,
        options: TlsOptions,
        app: AppFactory,
    ) -> Self {
        let is_server = matches!(conn, Connection::Server(_));
        TlsEngine {
            shared: Rc::new(RefCell::new(Shared::new(conn))),
            session: TlsSession(Rc::new(SessionState::default())),
            app: Some(app),
            sni,
            options,
            is_server,
            phase: Phase::Handshaking,
            raw: None,
            inner: None,
            handshake_deadline: None,
            shutdown_deadline: None,
            shutdown_started: false,
            request: None,
            raw_read_paused: false,
            eof_fed: false,
            peer_closed: false,
            tcp_eof: false,
            failure: None,
            early: Vec::new(),
        }
    }

    /// Prepares the engine to take over an open raw transport (`Ctx::start_tls`): it
    /// starts at its first callback there instead of `connection_made`, feeds `early`
    /// first, and answers `request` with the handshake's outcome.
    pub(super) fn prepare_upgrade(
        &mut self,
        raw: StreamHandle,
        early: &[u8],
        request: Option<HeldRequest>,
    ) {
        self.early = early.to_vec();
        self.request = request;
        // Known to the session at once, so `TlsSession::abort` works before the engine's
        // first callback.
        self.session.0.raw.set(Some(raw));
    }

    /// Takes the raw transport over, once: the handshake timer starts, a client's
    /// ClientHello is queued, and after a start_tls the bytes read before the switch go
    /// to rustls first. Runs at `connection_made`, or after a start_tls at whichever
    /// callback comes first (the swap rules deliver held data, EOF or `pause_writing`
    /// before the `handle_wake` that `start_tls` owes).
    fn start(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        if self.raw.is_some() {
            return Ok(());
        }
        let raw = ctx.stream();
        self.raw = Some(raw);
        self.session.0.raw.set(Some(raw));
        let timeout = self.options.handshake_timeout();
        self.handshake_deadline = timeout.and_then(|t| ctx.now().checked_add(t));
        // A client's ClientHello is ready from the start.
        let _ = self.shared.borrow_mut().drain_tls();
        let early = std::mem::take(&mut self.early);
        if !early.is_empty() {
            self.receive(ctx, &early)?;
            self.gate_reading(ctx);
        }
        Ok(())
    }

    /// A handle on this connection's state (negotiated parameters, failure, the handles
    /// of both layers) that stays valid after the engine moved into the loop.
    pub fn session(&self) -> TlsSession {
        self.session.clone()
    }

    // ----------------------------------------------------------------------------------
    // Inbound: ciphertext → rustls → the app's transport
    // ----------------------------------------------------------------------------------

    fn receive(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        let mut rest = data;
        while !rest.is_empty() {
            let (read, processed) = {
                let mut s = self.shared.borrow_mut();
                let read = s.conn.read_tls(&mut rest);
                let processed = match read {
                    Ok(_) => s.conn.process_new_packets().map(drop),
                    Err(ref e) => Err(rustls::Error::General(e.to_string())),
                };
                // Handshake records, key updates, tickets: handed over by `pump`.
                let _ = s.drain_tls();
                (read, processed)
            };
            if let Err(e) = processed {
                let e = match self.phase {
                    Phase::Handshaking => TlsError::Handshake(e),
                    _ => TlsError::Protocol(e),
                };
                return Err(self.fail(ctx, e));
            }
            self.after_records(ctx)?;
            // 0: the peer's close_notify arrived; rustls reads nothing after it.
            if read.is_ok_and(|n| n == 0) {
                break;
            }
        }
        Ok(())
    }

    fn after_records(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        if self.phase == Phase::Handshaking && !self.shared.borrow().conn.is_handshaking() {
            self.established(ctx)?;
        }
        self.deliver_plaintext(ctx);
        Ok(())
    }

    /// The handshake completed: the app's transport enters the loop (its
    /// `connection_made` follows, asyncio's order).
    fn established(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        let Some(raw) = self.raw else { return Ok(()) };
        self.phase = Phase::Open;
        self.handshake_deadline = None;
        let info = TlsInfo::from_connection(&self.shared.borrow().conn, self.sni.as_deref());
        let Some(info) = info else {
            let e = rustls::Error::General("handshake completed without a version".into());
            return Err(self.fail(ctx, TlsError::Handshake(e)));
        };
        let half_close = info.supports_half_close();
        self.shared.borrow_mut().no_half_close = !half_close;
        let extra = ctx.extra(raw).cloned().unwrap_or_default().with_tls(info.clone());
        let _ = self.session.0.info.set(info);
        let Some(factory) = self.app.take() else { return Ok(()) };
        let app = factory(&self.session);
        let sink = Box::new(Sink { shared: self.shared.clone() });
        let inner = ctx.insert_served_stream(app, extra, sink)?;
        // TLS 1.2 has no half-close: `can_write_eof()` is false and a keep-open answer to
        // `eof_received` is ignored (as asyncio ignores it for every TLS version; bpo-38737).
        ctx.set_served_half_close(inner, half_close)?;
        self.inner = Some(inner);
        self.session.0.app.set(Some(inner));
        if let Some(request) = self.request.take() {
            ctx.complete_request(request, Ok(inner));
        }
        Ok(())
    }

    /// Moves decrypted data into the app's transport (which holds it while its protocol
    /// paused reading) and the peer's `close_notify` in as EOF.
    fn deliver_plaintext(&mut self, ctx: &mut Ctx<'_>) {
        let inner = self.inner;
        loop {
            let mut s = self.shared.borrow_mut();
            let mut reader = s.conn.reader();
            match reader.fill_buf() {
                Ok([]) => {
                    self.peer_closed = true;
                    break;
                }
                Ok(chunk) => {
                    let n = chunk.len();
                    // After the app closed, data is discarded (asyncio stops delivering).
                    if let Some(h) = inner {
                        let _ = ctx.feed_data(h, chunk);
                    }
                    reader.consume(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // Only after a TCP EOF rustls was told of; the raw EOF path handles it.
                Err(_) => break,
            }
        }
        if self.peer_closed && !self.eof_fed {
            self.feed_eof(ctx);
        }
    }

    fn feed_eof(&mut self, ctx: &mut Ctx<'_>) {
        self.eof_fed = true;
        if let Some(h) = self.inner {
            let _ = ctx.feed_eof(h);
        }
    }

    /// Read back-pressure (spec §15.3 ¶93): stop reading the raw transport while the app's
    /// transport holds more than the high mark of decrypted data its paused protocol has
    /// not received ([`Ctx::served_inbound`]), read again at the low mark. Held data is
    /// delivered whole once the app reads, so "reading" counts as nothing held.
    fn gate_reading(&mut self, ctx: &mut Ctx<'_>) {
        let (Some(raw), Some(inner)) = (self.raw, self.inner) else { return };
        let reading = ctx.is_reading(inner).unwrap_or(false);
        let closing = ctx.is_closing(inner).unwrap_or(true);
        // After EOF nothing more is held back, and a closing app must not stop us from
        // reading the peer's close_notify.
        let held = if reading || closing || self.eof_fed || self.phase != Phase::Open {
            0
        } else {
            ctx.served_inbound(inner).unwrap_or(0)
        };
        let (high, low) = self.options.read_limits();
        if self.raw_read_paused && held <= low {
            self.raw_read_paused = false;
            let _ = ctx.resume_reading(raw);
        } else if !self.raw_read_paused && held > high {
            self.raw_read_paused = true;
            let _ = ctx.pause_reading(raw);
        }
    }

    // ----------------------------------------------------------------------------------
    // Outbound: the app's queue → rustls → ciphertext → the raw transport
    // ----------------------------------------------------------------------------------

    /// Runs after every callback: hands ciphertext to the raw transport, pulls the app's
    /// queue while the raw transport is not paused, then advances the shutdown and
    /// publishes the ciphertext still held as the app transport's external pending bytes.
    fn pump(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        let Some(raw) = self.raw else { return Ok(()) };
        loop {
            self.hand_over(ctx, raw);
            let pull = {
                let s = self.shared.borrow();
                !s.blocked && s.queued && s.closed.is_none()
            };
            let Some(inner) = self.inner.filter(|_| pull && self.phase == Phase::Open) else {
                break;
            };
            let before = self.shared.borrow().out.len();
            let _ = ctx.served_writable(inner);
            if self.shared.borrow().out.len() == before {
                break;
            }
        }
        self.advance_shutdown(ctx, raw);
        if let (Some(inner), Phase::Open) = (self.inner, self.phase) {
            let pending = self.shared.borrow().out.len();
            let _ = ctx.set_served_pending(inner, pending);
        }
        Ok(())
    }

    /// Writes the ciphertext waiting in `out` to the raw transport — while the connection
    /// is open, only when the raw transport is not paused (spec §15.4 ¶95); handshake,
    /// alerts and shutdown records always — and notes whether it is paused now.
    fn hand_over(&mut self, ctx: &mut Ctx<'_>, raw: StreamHandle) {
        let force = self.phase != Phase::Open;
        // Decided on the raw transport's state now, not on `blocked` as the last call
        // left it: `resume_writing` runs this with `blocked` still set, and ciphertext
        // made while paused (the client's Finished and the app's first bytes, when the
        // handshake completed then) would wait for a resume that already came.
        let paused = ctx.is_writing_paused(raw).unwrap_or(true);
        let data = {
            let mut s = self.shared.borrow_mut();
            if s.out.is_empty() || (paused && !force) {
                None
            } else {
                Some(std::mem::take(&mut s.out))
            }
        };
        if let Some(data) = data {
            // A raw transport already closing or lost takes nothing more; its own
            // connection_lost follows.
            let _ = ctx.write(raw, data);
        }
        let paused = ctx.is_writing_paused(raw).unwrap_or(true);
        let size = ctx.write_buffer_size(raw).unwrap_or(0);
        let high = ctx.write_buffer_limits(raw).map_or(0, |l| l.high());
        let mut s = self.shared.borrow_mut();
        s.blocked = paused;
        s.room = if paused { 0 } else { high.saturating_sub(size) };
    }

    /// The app's side of the shutdown: `close()` arms the shutdown timer (its flush counts,
    /// as in asyncio); once the app's transport drained and closed, `close_notify` follows
    /// its data and the raw transport closes when the peer's arrived (or its TCP EOF). An
    /// abort ends the raw transport at once.
    fn advance_shutdown(&mut self, ctx: &mut Ctx<'_>, raw: StreamHandle) {
        if !matches!(self.phase, Phase::Open | Phase::ShuttingDown) {
            return;
        }
        let Some(inner) = self.inner else { return };
        if !self.shutdown_started && ctx.is_closing(inner).unwrap_or(true) {
            self.shutdown_started = true;
            let timeout = self.options.shutdown_timeout();
            self.shutdown_deadline = timeout.and_then(|t| ctx.now().checked_add(t));
            self.gate_reading(ctx);
        }
        let closed = self.shared.borrow().closed;
        match closed {
            None => {}
            Some(AppClosed::Abort) => {
                self.finish();
                let _ = ctx.abort(raw);
            }
            Some(AppClosed::Graceful) => {
                if self.phase == Phase::Open {
                    self.phase = Phase::ShuttingDown;
                    {
                        let mut s = self.shared.borrow_mut();
                        s.conn.send_close_notify();
                        let _ = s.drain_tls();
                    }
                    self.hand_over(ctx, raw);
                }
                if self.peer_closed || self.tcp_eof {
                    self.finish();
                    let _ = ctx.close(raw);
                }
            }
        }
    }

    fn finish(&mut self) {
        self.phase = Phase::Done;
        self.handshake_deadline = None;
        self.shutdown_deadline = None;
    }

    /// Ends the connection because of `err`: the alert rustls queued goes out (best
    /// effort: the raw transport drops what its socket did not take at once), the app's
    /// transport is lost with `err`, and the caller returns the error from its callback so
    /// the raw transport fails with it.
    fn fail(&mut self, ctx: &mut Ctx<'_>, err: TlsError) -> ProtocolError {
        let _ = self.shared.borrow_mut().drain_tls();
        self.finish();
        if let Some(raw) = self.raw {
            self.hand_over(ctx, raw);
        }
        self.record_failure(ctx, err.clone());
        if let Some(inner) = self.inner {
            let _ = ctx.served_closed(inner, Some(err.to_connection_error()));
        }
        ProtocolError::from(err)
    }

    /// Keeps why the connection failed where its observers look: the session, the asking
    /// protocol's withheld `request_completed`, and for a server-side handshake failure
    /// (no other observer) the loop's error queue, as asyncio's exception handler.
    fn record_failure(&mut self, ctx: &mut Ctx<'_>, err: TlsError) {
        *self.session.0.error.borrow_mut() = Some(err.clone());
        if let Some(request) = self.request.take() {
            ctx.complete_request(request, Err(err.to_connection_error()));
        }
        if self.is_server && self.inner.is_none() && err.is_reported() {
            ctx.report_error(ProtocolError::from(err.clone()));
        }
        self.failure = Some(err);
    }
}

impl Protocol for TlsEngine {
    fn connection_made(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        // A connect request's answer waits for the handshake (asyncio's
        // `await create_connection(ssl=...)` returns after it).
        if self.request.is_none() {
            self.request = ctx.hold_request();
        }
        self.start(ctx)?;
        self.pump(ctx)
    }

    fn data_received(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> CallbackResult {
        self.start(ctx)?;
        if self.phase == Phase::Done {
            return Ok(());
        }
        self.receive(ctx, data)?;
        self.gate_reading(ctx);
        self.pump(ctx)
    }

    /// The peer's TCP EOF. During the handshake it is a failure; afterwards it is the app's
    /// EOF (also without `close_notify`, as asyncio does), and the raw transport stays open
    /// for as long as the app keeps its side open.
    fn eof_received(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult<bool> {
        self.start(ctx)?;
        self.tcp_eof = true;
        match self.phase {
            Phase::Handshaking => Err(self.fail(ctx, TlsError::PeerClosed)),
            Phase::Open => {
                if !self.eof_fed {
                    self.feed_eof(ctx);
                }
                self.gate_reading(ctx);
                self.pump(ctx)?;
                Ok(self.phase == Phase::Open)
            }
            Phase::ShuttingDown | Phase::Done => {
                self.pump(ctx)?;
                Ok(false)
            }
        }
    }

    /// Also the first callback after a start_tls on a transport paused for writing
    /// (gh-109051: the new protocol inherits the paused state).
    fn pause_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.start(ctx)?;
        self.shared.borrow_mut().blocked = true;
        Ok(())
    }

    fn resume_writing(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.start(ctx)?;
        // `hand_over` reads the raw transport's state afresh: what waits in `out` (a
        // `close_notify`, a handshake's last flight) goes out now.
        self.pump(ctx)
    }

    fn connection_lost(
        &mut self,
        ctx: &mut Ctx<'_>,
        err: Option<ConnectionError>,
    ) -> CallbackResult {
        let handshaking = self.phase == Phase::Handshaking;
        self.finish();
        if handshaking && self.failure.is_none() {
            let e = if self.tcp_eof {
                TlsError::PeerClosed
            } else {
                TlsError::ConnectionLost(err.clone())
            };
            self.record_failure(ctx, e);
        }
        if let Some(inner) = self.inner {
            // After the peer's EOF, failing to send our close_notify to it (EPIPE, a
            // reset) says nothing about the data the app exchanged.
            let err = err.filter(|_| !(self.tcp_eof || self.peer_closed));
            let reason = self.failure.as_ref().map(TlsError::to_connection_error).or(err);
            let _ = ctx.served_closed(inner, reason);
        }
        Ok(())
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match (self.handshake_deadline, self.shutdown_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn handle_timeout(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        let now = ctx.now();
        let due = |d: Option<Instant>| d.is_some_and(|d| d <= now);
        if self.phase == Phase::Handshaking && due(self.handshake_deadline) {
            let t = self.options.handshake_timeout().unwrap_or_default();
            return Err(self.fail(ctx, TlsError::HandshakeTimeout(t)));
        }
        if due(self.shutdown_deadline) {
            let t = self.options.shutdown_timeout().unwrap_or_default();
            return Err(self.fail(ctx, TlsError::ShutdownTimeout(t)));
        }
        Ok(())
    }

    /// The app's transport changed: it wrote (ciphertext to hand over), paused or resumed
    /// reading, shut down or closed. After a `start_tls` this is owed once anyway, so a
    /// client engine starts (and sends its ClientHello) with no input.
    fn handle_wake(&mut self, ctx: &mut Ctx<'_>) -> CallbackResult {
        self.start(ctx)?;
        self.gate_reading(ctx);
        self.pump(ctx)
    }
}

impl fmt::Debug for TlsEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsEngine")
            .field("phase", &self.phase)
            .field("is_server", &self.is_server)
            .field("raw", &self.raw)
            .field("app", &self.inner)
            .finish_non_exhaustive()
    }
}
