//! [`RemoteStream`]: a `Send` handle to one stream transport, for other threads (and for
//! async tasks on any executor), DESIGN.md §6 "commands from other tasks".
//!
//! Writes wait in a queue bounded in bytes at the transport's high-water mark. The loop
//! moves them into the transport while the transport's own queue is below high water, so
//! a slow peer fills this queue and a writer waits; what waits here counts in the
//! transport's `write_buffer_size()` as external pending bytes
//! ([`Registry::set_external_pending`](aioport::Registry::set_external_pending)), so the
//! protocol's flow control sees it. Writes, `write_eof` and `close` keep their order;
//! `abort` and pause/resume of reading act at once.
//!
//! Waiting is waker-based: the `async` methods work on any executor, and the blocking
//! ones (for plain threads, the poll loop's usual callers) park the thread with a waker
//! that unparks it, bounded by the caller's timeout.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use aioport::{Handle, HandleError, StreamHandle, WriteError};
use bytes::Bytes;

use crate::remote::LoopHandle;
use crate::{Error, Loop};

/// An ordered command.
enum Op {
    Write(Bytes),
    WriteEof,
    Close,
}

/// The state a [`RemoteStream`] shares with its loop.
pub(crate) struct RemoteState {
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
    /// `close()` or `abort()` was asked for here, or the transport is closing.
    closing: bool,
    eof: bool,
    abort: bool,
    /// The last pause (false) / resume (true) of reading not yet applied.
    reading: Option<bool>,
    /// `connection_lost` ran, or the loop is gone.
    closed: bool,
    /// In the loop's list of states with commands.
    scheduled: bool,
    writers: Vec<Waker>,
    drainers: Vec<Waker>,
    closers: Vec<Waker>,
}

impl RemoteInner {
    fn room(&self) -> bool {
        self.queued < self.high.max(1)
    }

    fn drained(&self) -> bool {
        self.size <= self.low
    }

    /// Wakes the waiters whose condition may now hold (they check it again).
    fn wake_waiters(&mut self) {
        if self.closed || self.room() {
            self.writers.drain(..).for_each(Waker::wake);
        }
        if self.closed || self.drained() {
            self.drainers.drain(..).for_each(Waker::wake);
        }
        if self.closed {
            self.closers.drain(..).for_each(Waker::wake);
        }
    }

    /// Forgets `waker` (a blocking wait that timed out).
    fn forget(&mut self, waker: &Waker) {
        for list in [&mut self.writers, &mut self.drainers, &mut self.closers] {
            list.retain(|w| !w.will_wake(waker));
        }
    }

    /// The loop is gone or the transport ended: nothing queued will be sent.
    fn close_for_good(&mut self) {
        self.closed = true;
        self.ops.clear();
        self.queued = 0;
        self.size = 0;
        self.wake_waiters();
    }
}

/// Registers `waker` in `list` once (a blocking wait polls again with the same waker).
fn register(list: &mut Vec<Waker>, waker: &Waker) {
    if !list.iter().any(|w| w.will_wake(waker)) {
        list.push(waker.clone());
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

/// The remote stream states with commands for the loop, each listed once until the loop
/// takes the list (the loop is woken through its [`LoopHandle`]).
type RemoteQueue = Arc<Mutex<Vec<Arc<RemoteState>>>>;

/// Unparks the thread of a blocking wait.
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// A `Send + Sync + Clone` handle to one stream transport of a [`Loop`], for other
/// threads: write (waiting while the peer does not keep up), `write_eof`, close, abort,
/// pause and resume reading, wait for the buffer to drain or for the connection to end.
/// Made by [`Loop::remote_stream`]; the same type and methods as `aioport-tokio`'s, with
/// blocking waits bounded by a timeout beside the `async` ones (which need no runtime:
/// they are woken by the loop's thread).
///
/// * Writes go through a queue bounded in bytes at the transport's high-water mark:
///   [`try_write`](Self::try_write) returns [`WriteError::BufferFull`] when it is full,
///   [`write`](Self::write) waits for room (at most its timeout).
/// * The bytes waiting here count in the transport's `write_buffer_size()`, so the
///   protocol hears `pause_writing` / `resume_writing` as for its own writes.
/// * When the loop is dropped, every waiter returns: writes fail with
///   [`WriteError::Closed`], [`drain`](Self::drain) and
///   [`wait_closed`](Self::wait_closed) return.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use std::time::Duration;
///
/// use aioport::{CallbackResult, Ctx, Endpoint, Protocol};
/// use aioport_poll::{Loop, ServerOptions};
///
/// struct Quiet;
/// impl Protocol for Quiet {}
///
/// let mut lp = Loop::new()?;
/// let server = lp.create_server("127.0.0.1:0", || Box::new(Quiet), ServerOptions::default())?;
/// let h = lp.create_connection(Endpoint::Addr(server.addr()), Box::new(Quiet))?;
/// let remote = lp.remote_stream(h)?;
/// // Another thread writes and closes; the loop runs here until it is done.
/// let done = Arc::new(AtomicBool::new(false));
/// let finished = done.clone();
/// let writer = std::thread::spawn(move || {
///     let limit = Duration::from_secs(10);
///     remote.write(&b"hello"[..], limit)?;
///     remote.drain(limit)?;
///     remote.close();
///     remote.wait_closed(limit)?;
///     finished.store(true, Ordering::Release);
///     Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
/// });
/// lp.run_until_timeout(|| done.load(Ordering::Acquire), Duration::from_secs(10))?;
/// writer.join().unwrap().unwrap();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct RemoteStream {
    state: Arc<RemoteState>,
    lp: LoopHandle,
    queue: RemoteQueue,
}

impl RemoteStream {
    /// The transport's handle (for [`Loop::with`] and callbacks).
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
    /// `abort` (here or by the protocol); [`WriteError::Closed`] once the connection is
    /// lost or the loop is gone.
    pub fn try_write(&self, data: impl Into<Bytes>) -> Result<(), WriteError> {
        let mut data = Some(data.into());
        let r = self.offer(&mut self.state.lock(), &mut data);
        self.after_offer(&r);
        r
    }

    /// Queues `data`, waiting at most `timeout` while the queue is full (the peer does
    /// not keep up). Blocks the calling thread: never call it on the loop's thread.
    ///
    /// # Errors
    ///
    /// As [`try_write`](Self::try_write); [`WriteError::BufferFull`] means the queue was
    /// still full when `timeout` ran out (`data` was not queued).
    pub fn write(&self, data: impl Into<Bytes>, timeout: Duration) -> Result<(), WriteError> {
        let mut data = Some(data.into());
        match self.block(timeout, |cx| self.poll_write(cx, &mut data)) {
            Some(r) => r,
            None => self.try_write(data.take().unwrap_or_default()),
        }
    }

    /// Queues `data`, waiting while the queue is full; for async code on any executor
    /// (the loop's thread wakes the task).
    ///
    /// # Errors
    ///
    /// As [`try_write`](Self::try_write), without `BufferFull`.
    pub async fn write_async(&self, data: impl Into<Bytes>) -> Result<(), WriteError> {
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
                register(&mut inner.writers, cx.waker());
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
            self.lp.wake();
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
    /// iteration.
    pub fn pause_reading(&self) {
        self.command(|inner| inner.reading = Some(false));
    }

    /// Resumes reading (asyncio's `resume_reading`), on the loop's next iteration.
    pub fn resume_reading(&self) {
        self.command(|inner| inner.reading = Some(true));
    }

    /// The transport's `write_buffer_size()` as the loop last published it, plus the
    /// bytes queued here since.
    pub fn write_buffer_size(&self) -> usize {
        self.state.lock().size
    }

    /// True after `close`, `abort` or `write_eof` here, once the transport is closing, or
    /// once the connection is lost.
    pub fn is_closing(&self) -> bool {
        let inner = self.state.lock();
        inner.closing || inner.eof || inner.closed
    }

    /// Waits at most `timeout` until the transport's buffer (its queue, plus this queue)
    /// is at or below its low-water mark, or the connection is lost (asyncio's
    /// `await writer.drain()`). Blocks the calling thread.
    ///
    /// # Errors
    ///
    /// [`Error::TimedOut`] when neither happened within `timeout`.
    pub fn drain(&self, timeout: Duration) -> Result<(), Error> {
        self.block(timeout, |cx| self.poll_drain(cx)).ok_or(Error::TimedOut)
    }

    /// As [`drain`](Self::drain), for async code on any executor, without a timeout.
    pub async fn drain_async(&self) {
        poll_fn(|cx| self.poll_drain(cx)).await;
    }

    fn poll_drain(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut inner = self.state.lock();
        if inner.closed || inner.drained() {
            Poll::Ready(())
        } else {
            register(&mut inner.drainers, cx.waker());
            Poll::Pending
        }
    }

    /// Waits at most `timeout` until `connection_lost` ran (asyncio's
    /// `await writer.wait_closed()`), or the loop was dropped. Blocks the calling thread.
    ///
    /// # Errors
    ///
    /// [`Error::TimedOut`] when the connection is still open after `timeout`.
    pub fn wait_closed(&self, timeout: Duration) -> Result<(), Error> {
        self.block(timeout, |cx| self.poll_closed(cx)).ok_or(Error::TimedOut)
    }

    /// As [`wait_closed`](Self::wait_closed), for async code on any executor, without a
    /// timeout.
    pub async fn wait_closed_async(&self) {
        poll_fn(|cx| self.poll_closed(cx)).await;
    }

    fn poll_closed(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut inner = self.state.lock();
        if inner.closed {
            Poll::Ready(())
        } else {
            register(&mut inner.closers, cx.waker());
            Poll::Pending
        }
    }

    /// Polls `poll` with a waker that unparks this thread until it is ready or `timeout`
    /// ran out (`None`; the waker is then forgotten).
    fn block<T>(
        &self,
        timeout: Duration,
        mut poll: impl FnMut(&mut Context<'_>) -> Poll<T>,
    ) -> Option<T> {
        let deadline = Instant::now().checked_add(timeout);
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        loop {
            if let Poll::Ready(v) = poll(&mut cx) {
                return Some(v);
            }
            match deadline {
                // Too far to represent: as good as forever.
                None => std::thread::park(),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        self.state.lock().forget(&waker);
                        return None;
                    }
                    std::thread::park_timeout(d - now);
                }
            }
        }
    }

    fn command(&self, f: impl FnOnce(&mut RemoteInner)) {
        let mut inner = self.state.lock();
        if inner.closed {
            return;
        }
        f(&mut inner);
        self.schedule(&mut inner);
        drop(inner);
        self.lp.wake();
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

/// The loop's remote stream states. Dropping the loop closes them all: their waiters
/// return instead of waiting for a loop that is gone.
#[derive(Default)]
pub(crate) struct Remotes {
    streams: HashMap<Handle, Arc<RemoteState>>,
    /// Where remote streams list themselves when they have commands.
    queue: RemoteQueue,
    /// The list taken from `queue` (kept for its allocation).
    taken: Vec<Arc<RemoteState>>,
}

impl Remotes {
    /// No transport has a remote stream: the loop skips the remote bookkeeping.
    pub(crate) fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }
}

impl Drop for Remotes {
    fn drop(&mut self) {
        for state in self.streams.values() {
            state.lock().close_for_good();
        }
    }
}

impl Loop {
    /// A `Send` handle to the stream transport `h` for other threads (see
    /// [`RemoteStream`]). Every call for the same transport shares one queue.
    ///
    /// # Errors
    ///
    /// [`HandleError::Stale`] when `h` names no transport of this loop,
    /// [`HandleError::Connecting`] while it is still connecting (ask again once
    /// `request_completed` reported the connection), [`HandleError::WrongKind`] for a
    /// transport that is not a stream.
    pub fn remote_stream(&mut self, h: StreamHandle) -> Result<RemoteStream, HandleError> {
        self.with(|ctx| ctx.write_buffer_size(h))?;
        let state =
            self.remotes.streams.entry(h.handle()).or_insert_with(|| RemoteState::new(h)).clone();
        self.publish_remote(&state);
        Ok(RemoteStream { state, lp: self.handle.clone(), queue: self.remotes.queue.clone() })
    }

    /// On a wake-up: applies what other threads asked.
    pub(crate) fn pump_remotes(&mut self, now: Instant) {
        let mut taken = std::mem::take(&mut self.remotes.taken);
        std::mem::swap(
            &mut *self.remotes.queue.lock().unwrap_or_else(|e| e.into_inner()),
            &mut taken,
        );
        for state in taken.drain(..) {
            self.pump_remote(&state, now);
        }
        self.remotes.taken = taken;
    }

    /// After serving `h`: room its flush made moves writes in from its remote queue, and
    /// its waiters learn the new size.
    pub(crate) fn remote_served(&mut self, h: Handle, now: Instant) {
        if let Some(state) = self.remotes.streams.get(&h).cloned() {
            self.pump_remote(&state, now);
        }
    }

    /// Applies what other threads asked of `state`'s transport: abort and reading at once,
    /// then writes, `write_eof` and `close` in order while the transport's own queue is
    /// below high water (an empty one always takes a write). What stays queued is the
    /// transport's external pending bytes.
    fn pump_remote(&mut self, state: &Arc<RemoteState>, now: Instant) {
        let h = state.handle;
        let Ok(t) = self.registry.transport(h.handle()) else {
            return self.publish_remote(state);
        };
        let high = t.write_buffer_limits().high();
        let size = t.write_buffer_size();
        let (abort, reading, ops, queued, external) = {
            let mut inner = state.lock();
            inner.scheduled = false;
            let mut own = size.saturating_sub(inner.external);
            let abort = std::mem::take(&mut inner.abort);
            let reading = inner.reading.take();
            let mut ops = Vec::new();
            while let Some(op) = inner.ops.pop_front() {
                if let Op::Write(b) = &op {
                    if own > 0 && own >= high {
                        inner.ops.push_front(op);
                        break;
                    }
                    own += b.len();
                    inner.queued -= b.len();
                }
                ops.push(op);
            }
            (abort, reading, ops, inner.queued, inner.external)
        };
        if abort || reading.is_some() || !ops.is_empty() {
            self.registry.enter(now, &mut self.io, |ctx| {
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
                    let _ = match op {
                        Op::Write(b) => ctx.write(h, b).map_err(drop),
                        Op::WriteEof => ctx.write_eof(h).map_err(drop),
                        Op::Close => ctx.close(h).map_err(drop),
                    };
                }
            });
        }
        if queued != external
            && self.registry.set_external_pending(h.handle(), queued, now, &mut self.io).is_ok()
        {
            state.lock().external = queued;
        }
        self.publish_remote(state);
    }

    /// Tells the remote side the transport's size, limits and state, and wakes whoever
    /// waits for them. A transport that is gone is closed for good.
    fn publish_remote(&mut self, state: &Arc<RemoteState>) {
        let h = state.handle.handle();
        let mut inner = state.lock();
        match self.registry.transport(h) {
            Ok(t) => {
                let limits = t.write_buffer_limits();
                inner.high = limits.high();
                inner.low = limits.low();
                // The transport counts `external` of the queued bytes; the rest arrived
                // since the last pump.
                let size = t.write_buffer_size();
                inner.size = size - inner.external.min(size) + inner.queued;
                inner.closing |= t.is_closing();
                inner.wake_waiters();
            }
            Err(_) => {
                inner.close_for_good();
                self.remotes.streams.remove(&h);
            }
        }
    }

    /// After a registry call: transports whose socket closed tell their remote streams
    /// once `connection_lost` ran.
    pub(crate) fn remotes_after_close(&mut self) {
        if self.remotes.streams.is_empty() {
            self.io.closed.clear();
            return;
        }
        let mut closed = std::mem::take(&mut self.io.closed);
        closed.retain(|h| {
            let Some(state) = self.remotes.streams.get(h).cloned() else { return false };
            if self.registry.transport(*h).is_ok() {
                // connection_lost not delivered yet: look again after the next call.
                return true;
            }
            self.publish_remote(&state);
            false
        });
        self.io.closed.append(&mut closed);
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;
    use std::time::Duration;

    use aioport::{CallbackResult, ConnectionError, Ctx, Endpoint, Protocol};

    use crate::{Loop, ServerOptions};

    /// Counts ended connections.
    struct Counted(Rc<Cell<usize>>);
    impl Protocol for Counted {
        fn connection_lost(
            &mut self,
            _: &mut Ctx<'_>,
            _: Option<ConnectionError>,
        ) -> CallbackResult {
            self.0.set(self.0.get() + 1);
            Ok(())
        }
    }

    #[test]
    fn ended_transports_leave_no_remote_state_behind() {
        const CONNECTIONS: usize = 200;
        let mut lp = Loop::new().unwrap();
        let server = lp
            .create_server(
                "127.0.0.1:0",
                || Box::new(Counted(Rc::default())),
                ServerOptions::default(),
            )
            .unwrap();
        let lost = Rc::new(Cell::new(0));
        let mut remotes = Vec::new();
        for _ in 0..CONNECTIONS {
            let p = Box::new(Counted(lost.clone()));
            let h = lp.create_connection(Endpoint::Addr(server.addr()), p).unwrap();
            remotes.push(lp.remote_stream(h).unwrap());
        }
        assert_eq!(lp.remotes.streams.len(), CONNECTIONS);
        // Half close from here, half from the peer's side (the server's clients).
        for r in &remotes[..CONNECTIONS / 2] {
            r.close();
        }
        lp.close_clients(server.id());
        lp.run_until_timeout(|| lost.get() == CONNECTIONS, Duration::from_secs(10)).unwrap();
        assert!(remotes.iter().all(|r| r.wait_closed(Duration::ZERO).is_ok()));
        assert!(lp.remotes.streams.is_empty());
        assert!(lp.io.closed.is_empty());
    }
}
