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

use std::collections::VecDeque;
use std::fmt;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use aioport::{StreamHandle, WriteError};
use bytes::Bytes;

use crate::Error;
use crate::remote::LoopHandle;

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

/// A `Send + Sync + Clone` handle to one stream transport of a [`Loop`](crate::Loop),
/// for other threads: write (waiting while the peer does not keep up), `write_eof`,
/// close, abort, pause and resume reading, wait for the buffer to drain or for the
/// connection to end. Made by [`Loop::remote_stream`](crate::Loop::remote_stream). The
/// tokio and smol drivers' `RemoteStream` has the same rules and method names, but it is
/// a different type: its waits are `async`, where this one's `write`, `drain` and
/// `wait_closed` block with a timeout and `*_async` variants need no runtime (the loop's
/// thread wakes them).
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
    /// The transport's handle (for [`Loop::with`](crate::Loop::with) and callbacks).
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

mod pump;
#[cfg(test)]
mod tests;

pub(crate) use pump::Remotes;
