//! [`RemoteStream`]: a `Send` handle to one stream transport, for other tasks and threads
//! (DESIGN.md §6, "commands from other tasks"), and [`RemoteStreams`], the loop's side of
//! them. Runtime-independent: a driver lists the transports with remote handles in a
//! `RemoteStreams`, pumps their commands on its turns, and tells it which transports
//! closed.
//!
//! Writes wait in a queue bounded in bytes at the transport's high-water mark. The loop
//! moves them into the transport while the transport's own queue is below high water, so
//! a slow peer fills the cross-task queue and `write().await` waits; what waits in it
//! counts in the transport's `write_buffer_size()` as external pending bytes, so the
//! protocol's flow control sees it. Writes, `write_eof` and `close` keep their order;
//! `abort` and pause/resume of reading act at once.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use std::time::Instant;

use aioport::{DriverError, Handle, HandleError, Io, Registry, StreamHandle, WriteError};
use bytes::Bytes;

use crate::wake::Shared;

/// An ordered command.
enum Op {
    Write(Bytes),
    WriteEof,
    Close,
}

/// The state a [`RemoteStream`] shares with its loop.
struct RemoteState {
    handle: StreamHandle,
    inner: Mutex<RemoteInner>,
}

#[derive(Default)]
struct RemoteInner {
    ops: VecDeque<Op>,
    /// Bytes of the writes in `ops`.
    queued: usize,
    /// The transport's high-water mark: the queue's bound.
    high: usize,
    low: usize,
    /// The transport's `write_buffer_size()` as the loop last saw it, plus bytes queued
    /// since.
    size: usize,
    /// What the loop last set as the transport's external pending bytes.
    external: usize,
    /// `close()`, `abort()` or `write_eof()` was asked for here.
    closing: bool,
    eof: bool,
    abort: bool,
    /// The last pause (false) / resume (true) of reading not yet applied.
    reading: Option<bool>,
    /// `connection_lost` ran (or the loop is gone).
    closed: bool,
    /// In the loop's list of states with commands.
    scheduled: bool,
    writers: Vec<Waker>,
    drainers: Vec<Waker>,
    closers: Vec<Waker>,
}

impl RemoteInner {
    /// Wakes the waiters whose condition may now hold (they check it again).
    fn wake_waiters(&mut self) {
        if self.closed || self.queued < self.high.max(1) {
            self.writers.drain(..).for_each(Waker::wake);
        }
        if self.closed || self.size <= self.low {
            self.drainers.drain(..).for_each(Waker::wake);
        }
        if self.closed {
            self.closers.drain(..).for_each(Waker::wake);
        }
    }
}

impl RemoteState {
    fn new(handle: StreamHandle) -> Arc<RemoteState> {
        Arc::new(RemoteState { handle, inner: Mutex::new(RemoteInner::default()) })
    }

    fn lock(&self) -> MutexGuard<'_, RemoteInner> {
        // Every update is a few field writes; a panic cannot leave them half-done in a
        // way that matters, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A `Send + Clone` handle to one stream transport of a loop, for other tasks and
/// threads: write (waiting while the peer does not keep up), `write_eof`, close, abort,
/// pause and resume reading, wait for the buffer to drain or for the connection to end.
/// Made by a driver's `Loop::remote_stream` (through [`RemoteStreams::open`]), whose docs
/// have a running example.
#[derive(Clone)]
pub struct RemoteStream {
    state: Arc<RemoteState>,
    shared: Arc<Shared>,
    queue: RemoteQueue,
}

/// The remote stream states with commands for the loop, each listed once until the loop
/// takes the list (the loop's wake-up goes through [`Shared::wake`]).
type RemoteQueue = Arc<std::sync::Mutex<Vec<Arc<RemoteState>>>>;

impl RemoteStream {
    /// The transport's handle (for the loop's `with` and callbacks).
    pub fn handle(&self) -> StreamHandle {
        self.state.handle
    }

    /// Queues `data` for the transport without waiting.
    ///
    /// # Errors
    ///
    /// [`WriteError::BufferFull`] when the queue already holds bytes and `data` would take
    /// it past the transport's high-water mark (wait with [`write`](Self::write)); a
    /// write into an empty queue is always taken, whatever its size.
    /// [`WriteError::AfterEof`], [`WriteError::Closing`] after `write_eof` / `close` /
    /// `abort` here; [`WriteError::Closed`] once the connection is lost.
    pub fn try_write(&self, data: impl Into<Bytes>) -> Result<(), WriteError> {
        let mut data = Some(data.into());
        let mut inner = self.state.lock();
        let r = self.offer(&mut inner, &mut data);
        drop(inner);
        self.after_offer(&r);
        r
    }

    /// Queues `data`, waiting while the queue is full (the peer does not keep up).
    ///
    /// # Errors
    ///
    /// As [`try_write`](Self::try_write), without `BufferFull`.
    pub async fn write(&self, data: impl Into<Bytes>) -> Result<(), WriteError> {
        let mut data = Some(data.into());
        poll_fn(|cx| self.poll_write(cx, &mut data)).await
    }

    fn poll_write(
        &self,
        cx: &mut Context<'_>,
        data: &mut Option<Bytes>,
    ) -> Poll<Result<(), WriteError>> {
        let mut inner = self.state.lock();
        match self.offer(&mut inner, data) {
            Err(WriteError::BufferFull { .. }) => {
                // Registered under the lock the loop takes to shrink the queue: no wake-up
                // is lost.
                inner.writers.push(cx.waker().clone());
                Poll::Pending
            }
            r => {
                drop(inner);
                self.after_offer(&r);
                Poll::Ready(r)
            }
        }
    }

    /// Takes `data` into the queue if it fits.
    fn offer(&self, inner: &mut RemoteInner, data: &mut Option<Bytes>) -> Result<(), WriteError> {
        if inner.closed {
            return Err(WriteError::Closed);
        }
        if inner.eof {
            return Err(WriteError::AfterEof);
        }
        if inner.closing {
            return Err(WriteError::Closing);
        }
        let len = data.as_ref().map_or(0, Bytes::len);
        if len == 0 {
            return Ok(());
        }
        if inner.queued > 0 && inner.queued + len > inner.high {
            return Err(WriteError::BufferFull { buffered: inner.queued, len, limit: inner.high });
        }
        if let Some(d) = data.take() {
            inner.ops.push_back(Op::Write(d));
            inner.queued += len;
            inner.size += len;
            self.schedule(inner);
        }
        Ok(())
    }

    fn after_offer(&self, r: &Result<(), WriteError>) {
        if r.is_ok() {
            self.shared.wake();
        }
    }

    /// Shuts down the write side once everything queued before was sent (asyncio's
    /// `write_eof`). Ignored once the connection is lost or closing.
    pub fn write_eof(&self) {
        self.command(|inner| {
            if !inner.closing && !inner.eof {
                inner.eof = true;
                inner.ops.push_back(Op::WriteEof);
            }
        });
    }

    /// Closes the transport after everything queued before (here and in the transport)
    /// was sent (asyncio's `close`). Idempotent.
    pub fn close(&self) {
        self.command(|inner| {
            if !inner.closing {
                inner.closing = true;
                inner.ops.push_back(Op::Close);
            }
        });
    }

    /// Closes the transport at once, dropping what is queued here and in the transport
    /// (asyncio's `abort`). Idempotent.
    pub fn abort(&self) {
        self.command(|inner| {
            inner.closing = true;
            inner.abort = true;
            inner.ops.clear();
            inner.size -= inner.queued.min(inner.size);
            inner.queued = 0;
        });
    }

    /// Stops reading from the transport (asyncio's `pause_reading`), on the loop's next
    /// turn.
    pub fn pause_reading(&self) {
        self.command(|inner| inner.reading = Some(false));
    }

    /// Resumes reading (asyncio's `resume_reading`), on the loop's next turn.
    pub fn resume_reading(&self) {
        self.command(|inner| inner.reading = Some(true));
    }

    /// The transport's `write_buffer_size()` as the loop last published it, plus the
    /// bytes queued here since.
    pub fn write_buffer_size(&self) -> usize {
        self.state.lock().size
    }

    /// True after `close`, `abort` or `write_eof` here, or once the connection is lost.
    pub fn is_closing(&self) -> bool {
        let inner = self.state.lock();
        inner.closing || inner.eof || inner.closed
    }

    /// Waits until the transport's buffer (its queue, plus this queue) is at or below its
    /// low-water mark, or the connection is lost (asyncio's `await writer.drain()`).
    pub async fn drain(&self) {
        poll_fn(|cx| {
            let mut inner = self.state.lock();
            if inner.closed || inner.size <= inner.low {
                Poll::Ready(())
            } else {
                inner.drainers.push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
    }

    /// Waits until `connection_lost` ran (asyncio's `await writer.wait_closed()`), or the
    /// loop was dropped.
    pub async fn wait_closed(&self) {
        poll_fn(|cx| {
            let mut inner = self.state.lock();
            if inner.closed {
                Poll::Ready(())
            } else {
                inner.closers.push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
    }

    fn command(&self, f: impl FnOnce(&mut RemoteInner)) {
        let mut inner = self.state.lock();
        if inner.closed {
            return;
        }
        f(&mut inner);
        self.schedule(&mut inner);
        drop(inner);
        self.shared.wake();
    }

    /// Puts the state in the loop's list of states with commands (once).
    fn schedule(&self, inner: &mut RemoteInner) {
        if !inner.scheduled {
            inner.scheduled = true;
            // A poisoned lock only means a panic between push and unlock: still usable.
            self.queue.lock().unwrap_or_else(|e| e.into_inner()).push(self.state.clone());
        }
    }
}

impl fmt::Debug for RemoteStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteStream").field("handle", &self.state.handle).finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------------------
// The loop's side
// ---------------------------------------------------------------------------------------

/// The loop's side of its [`RemoteStream`]s: their states by transport, the list of those
/// with commands, and the transports that closed since the loop last looked. A driver
/// keeps one per loop and calls, on its turns: [`take_queued`](Self::take_queued) when
/// its shared state says something was queued, [`pump_queued`](Self::pump_queued), then
/// [`pump`](Self::pump) for a transport whose queue may have shrunk (after
/// `on_writable`, after its connect completed), [`closed`](Self::closed) from its
/// `Io::close`, and [`after_registry`](Self::after_registry) after registry calls.
/// Dropping it (with the loop) closes every remote handle: their waiters wake instead of
/// waiting for a loop that is gone.
#[derive(Default)]
pub struct RemoteStreams {
    states: HashMap<Handle, Arc<RemoteState>>,
    /// Where remote streams list themselves when they have commands.
    queue: RemoteQueue,
    /// The list taken from `queue`, served on this turn.
    woken: Vec<Arc<RemoteState>>,
    /// Transports whose socket was closed (or whose connect failed) since the loop last
    /// looked: their remote handles learn it once `connection_lost` ran.
    closed: Vec<Handle>,
}

impl RemoteStreams {
    /// No remote handle exists.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// A `Send` handle to the stream transport `h` of `registry` for other tasks and
    /// threads, waking the loop through `shared`. Every call for the same transport
    /// shares one queue.
    ///
    /// # Errors
    ///
    /// [`HandleError::Stale`] when `h` names no transport of `registry`;
    /// [`HandleError::WrongKind`] for a transport served by a protocol (a TLS app
    /// transport: the loop would not see it end; write to it through
    /// [`LoopHandle::call_soon_threadsafe`](crate::LoopHandle::call_soon_threadsafe)).
    pub fn open(
        &mut self,
        registry: &Registry,
        shared: &Arc<Shared>,
        h: StreamHandle,
    ) -> Result<RemoteStream, HandleError> {
        registry.transport(h.handle()).map_err(|_| HandleError::Stale)?;
        if let Err(DriverError::WrongKind { .. }) = registry.interest(h.handle()) {
            return Err(HandleError::WrongKind {
                expected: "stream driven by the loop",
                found: "stream served by a protocol (TLS)",
            });
        }
        let state = self.states.entry(h.handle()).or_insert_with(|| RemoteState::new(h)).clone();
        self.publish(registry, &state);
        Ok(RemoteStream { state, shared: shared.clone(), queue: self.queue.clone() })
    }

    /// Takes the list of states with commands (call when the loop's shared state says
    /// something was queued; the handles wake the loop through it). True if any.
    pub fn take_queued(&mut self) -> bool {
        let mut queued = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::swap(&mut *queued, &mut self.woken);
        !self.woken.is_empty()
    }

    /// Applies the commands of the states [`take_queued`](Self::take_queued) took.
    /// `connecting(h)`: `h`'s connect has not completed (its commands wait for
    /// [`pump`](Self::pump) once it did).
    pub fn pump_queued(
        &mut self,
        registry: &mut Registry,
        io: &mut dyn Io,
        now: Instant,
        connecting: impl Fn(Handle) -> bool,
    ) {
        let mut woken = std::mem::take(&mut self.woken);
        for state in woken.drain(..) {
            self.pump_state(&state, registry, io, now, connecting(state.handle.handle()));
        }
        self.woken = woken;
    }

    /// Applies what other tasks asked of `h`'s transport, if it has a remote handle
    /// (after `on_writable` made room in its queue, or after its connect completed).
    pub fn pump(&mut self, h: Handle, registry: &mut Registry, io: &mut dyn Io, now: Instant) {
        if let Some(state) = self.states.get(&h).cloned() {
            self.pump_state(&state, registry, io, now, false);
        }
    }

    /// Applies what other tasks asked of `state`'s transport: abort and reading at once,
    /// then writes, `write_eof` and `close` in order while the transport's own queue is
    /// below high water. What stays queued is the transport's external pending bytes.
    fn pump_state(
        &mut self,
        state: &Arc<RemoteState>,
        registry: &mut Registry,
        io: &mut dyn Io,
        now: Instant,
        connecting: bool,
    ) {
        let h = state.handle;
        if connecting {
            // Commands wait for the connect outcome (which pumps again).
            state.lock().scheduled = false;
            return self.publish(registry, state);
        }
        let Ok(t) = registry.transport(h.handle()) else {
            return self.publish(registry, state);
        };
        let high = t.write_buffer_limits().high();
        // Writes, write_eof and close wait while a sendfile runs (the transport would
        // refuse the first two; close waits its turn behind them).
        let sendfile = t.is_sendfile_in_progress();
        let (abort, reading, ops, moved, queued, external) = {
            let mut inner = state.lock();
            inner.scheduled = false;
            let mut own = t.write_buffer_size().saturating_sub(inner.external);
            let abort = std::mem::take(&mut inner.abort);
            let reading = inner.reading.take();
            let mut ops = Vec::new();
            let mut moved = 0;
            while !sendfile && let Some(op) = inner.ops.pop_front() {
                if let Op::Write(b) = &op {
                    // An empty transport queue always takes one (`high` may be 0).
                    if own > 0 && own >= high {
                        inner.ops.push_front(op);
                        break;
                    }
                    own += b.len();
                    moved += b.len();
                    inner.queued -= b.len();
                }
                ops.push(op);
            }
            (abort, reading, ops, moved, inner.queued, inner.external)
        };
        if abort || reading.is_some() || !ops.is_empty() {
            registry.enter(now, io, |ctx| {
                if abort {
                    let _ = ctx.abort(h);
                    return;
                }
                // Errors here (the transport closing or lost) reach the writer through
                // the published state: `closing`, then `closed`.
                match reading {
                    Some(true) => drop(ctx.resume_reading(h)),
                    Some(false) => drop(ctx.pause_reading(h)),
                    None => {}
                }
                for op in ops {
                    // A write moves bytes the transport counted as external pending in:
                    // the size does not change, and the hard limit does not refuse bytes
                    // the remote writer was told were accepted.
                    let _ = match op {
                        Op::Write(b) => ctx.write_external(h, b).map_err(drop),
                        Op::WriteEof => ctx.write_eof(h).map_err(drop),
                        Op::Close => ctx.close(h).map_err(drop),
                    };
                }
            });
        }
        // What the transport counts as external now: the moves took theirs out.
        let external = external.saturating_sub(moved);
        state.lock().external = external;
        if queued != external && registry.set_external_pending(h.handle(), queued, now, io).is_ok()
        {
            state.lock().external = queued;
        }
        self.publish(registry, state);
    }

    /// Tells the remote side the transport's size, limits and state, and wakes whoever
    /// waits for them. A transport that is gone is closed for good.
    fn publish(&mut self, registry: &Registry, state: &Arc<RemoteState>) {
        let h = state.handle.handle();
        let mut inner = state.lock();
        match registry.transport(h) {
            Ok(t) => {
                let limits = t.write_buffer_limits();
                inner.high = limits.high();
                inner.low = limits.low();
                // The transport counts `external` of the queued bytes; the rest arrived
                // since the last pump.
                inner.size = t.write_buffer_size() - inner.external.min(t.write_buffer_size())
                    + inner.queued;
                inner.closing |= t.is_closing();
            }
            Err(_) => {
                inner.closed = true;
                inner.ops.clear();
                inner.queued = 0;
                inner.size = 0;
                self.states.remove(&h);
            }
        }
        inner.wake_waiters();
    }

    /// The driver closed `h`'s socket (its `Io::close`) or its connect failed: its remote
    /// handle learns it once `connection_lost` ran ([`after_registry`](Self::after_registry)).
    pub fn closed(&mut self, h: Handle) {
        if !self.states.is_empty() {
            self.closed.push(h);
        }
    }

    /// After a registry call: transports that ended tell their remote handles.
    pub fn after_registry(&mut self, registry: &Registry) {
        if self.closed.is_empty() {
            return;
        }
        if self.states.is_empty() {
            self.closed.clear();
            return;
        }
        let mut closed = std::mem::take(&mut self.closed);
        closed.retain(|h| {
            let Some(state) = self.states.get(h).cloned() else { return false };
            if registry.transport(*h).is_ok() {
                // connection_lost not delivered yet: look again after the next call.
                return true;
            }
            self.publish(registry, &state);
            false
        });
        self.closed.append(&mut closed);
    }
}

impl Drop for RemoteStreams {
    fn drop(&mut self) {
        for state in self.states.values() {
            let mut inner = state.lock();
            inner.closed = true;
            inner.wake_waiters();
        }
    }
}

impl fmt::Debug for RemoteStreams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteStreams").field("streams", &self.states.len()).finish_non_exhaustive()
    }
}
