//! [`RemoteStream`]: a `Send` handle to one stream transport, for other tasks and threads
//! (DESIGN.md §6, "commands from other tasks").
//!
//! Writes wait in a queue bounded in bytes at the transport's high-water mark. The loop
//! moves them into the transport while the transport's own queue is below high water, so
//! a slow peer fills the cross-task queue and `write().await` waits; what waits in it
//! counts in the transport's `write_buffer_size()` as external pending bytes, so the
//! protocol's flow control sees it. Writes, `write_eof` and `close` keep their order;
//! `abort` and pause/resume of reading act at once.

use std::collections::VecDeque;
use std::fmt;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use aioport::{StreamHandle, WriteError};
use bytes::Bytes;

use aioport_async_kit::wake::Shared;

/// An ordered command.
pub(crate) enum Op {
    Write(Bytes),
    WriteEof,
    Close,
}

/// The state a [`RemoteStream`] shares with its loop.
pub(crate) struct RemoteState {
    pub(crate) handle: StreamHandle,
    inner: Mutex<RemoteInner>,
}

#[derive(Default)]
pub(crate) struct RemoteInner {
    pub(crate) ops: VecDeque<Op>,
    /// Bytes of the writes in `ops`.
    pub(crate) queued: usize,
    /// The transport's high-water mark: the queue's bound.
    pub(crate) high: usize,
    pub(crate) low: usize,
    /// The transport's `write_buffer_size()` as the loop last saw it, plus bytes queued
    /// since.
    pub(crate) size: usize,
    /// What the loop last set as the transport's external pending bytes.
    pub(crate) external: usize,
    /// `close()`, `abort()` or `write_eof()` was asked for here.
    pub(crate) closing: bool,
    pub(crate) eof: bool,
    pub(crate) abort: bool,
    /// The last pause (false) / resume (true) of reading not yet applied.
    pub(crate) reading: Option<bool>,
    /// `connection_lost` ran (or the loop is gone).
    pub(crate) closed: bool,
    /// In the loop's list of states with commands.
    pub(crate) scheduled: bool,
    pub(crate) writers: Vec<Waker>,
    pub(crate) drainers: Vec<Waker>,
    pub(crate) closers: Vec<Waker>,
}

impl RemoteInner {
    /// Wakes the waiters whose condition may now hold (they check it again).
    pub(crate) fn wake_waiters(&mut self) {
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
    pub(crate) fn new(handle: StreamHandle) -> Arc<RemoteState> {
        Arc::new(RemoteState { handle, inner: Mutex::new(RemoteInner::default()) })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, RemoteInner> {
        // Every update is a few field writes; a panic cannot leave them half-done in a
        // way that matters, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A `Send + Clone` handle to one stream transport of a [`Loop`](crate::Loop), for other
/// tasks and threads: write (waiting while the peer does not keep up), `write_eof`,
/// close, abort, pause and resume reading, wait for the buffer to drain or for the
/// connection to end. Made by [`Loop::remote_stream`](crate::Loop::remote_stream).
///
/// ```
/// use std::time::Duration;
/// use aioport::{CallbackResult, Ctx, Endpoint, Protocol};
/// use aioport_tokio::{Loop, ServerOptions};
///
/// struct Quiet;
/// impl Protocol for Quiet {}
///
/// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
/// # rt.block_on(tokio::task::LocalSet::new().run_until(async {
/// let mut lp = Loop::new();
/// let server = lp.create_server("127.0.0.1:0", || Box::new(Quiet), ServerOptions::default()).await?;
/// let h = lp.create_connection(Endpoint::Addr(server.addr()), Box::new(Quiet)).await?;
/// let remote = lp.remote_stream(h)?;
/// // Another task writes and closes; the loop runs here until the connection ended.
/// let writer = tokio::task::spawn_local(async move {
///     remote.write(&b"hello"[..]).await?;
///     remote.drain().await;
///     remote.close();
///     remote.wait_closed().await;
///     Ok::<(), aioport::WriteError>(())
/// });
/// lp.run_until_timeout(|| writer.is_finished(), Duration::from_secs(10)).await?;
/// writer.await??;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }))?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct RemoteStream {
    pub(crate) state: Arc<RemoteState>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) queue: RemoteQueue,
}

/// The remote stream states with commands for the loop, each listed once until the loop
/// takes the list (the loop's wake-up goes through [`Shared::wake`]).
pub(crate) type RemoteQueue = Arc<std::sync::Mutex<Vec<Arc<RemoteState>>>>;

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

impl crate::Loop {
    /// A `Send` handle to the stream transport `h` for other tasks and threads (see
    /// [`RemoteStream`]). Every call for the same transport shares one queue.
    ///
    /// # Errors
    ///
    /// [`HandleError::Stale`](aioport::HandleError::Stale) when `h` names no transport
    /// of this loop.
    pub fn remote_stream(&mut self, h: StreamHandle) -> Result<RemoteStream, aioport::HandleError> {
        self.registry.transport(h.handle()).map_err(|_| aioport::HandleError::Stale)?;
        let state =
            self.remote_streams.entry(h.handle()).or_insert_with(|| RemoteState::new(h)).clone();
        self.publish_remote(&state);
        Ok(RemoteStream { state, shared: self.shared.clone(), queue: self.remote_queue.clone() })
    }

    /// Applies what other tasks asked of `state`'s transport: abort and reading at once,
    /// then writes, `write_eof` and `close` in order while the transport's own queue is
    /// below high water. What stays queued is the transport's external pending bytes.
    pub(crate) fn pump_remote(&mut self, state: &Arc<RemoteState>, now: std::time::Instant) {
        let h = state.handle;
        if self.connecting.contains_key(&h.handle()) {
            // Commands wait for the connect outcome (which pumps again).
            state.lock().scheduled = false;
            return self.publish_remote(state);
        }
        let Ok(t) = self.registry.transport(h.handle()) else {
            return self.publish_remote(state);
        };
        let high = t.write_buffer_limits().high();
        let (abort, reading, ops, queued, external) = {
            let mut inner = state.lock();
            inner.scheduled = false;
            let mut own = t.write_buffer_size().saturating_sub(inner.external);
            let abort = std::mem::take(&mut inner.abort);
            let reading = inner.reading.take();
            let mut ops = Vec::new();
            while let Some(op) = inner.ops.pop_front() {
                if let Op::Write(b) = &op {
                    if own >= high {
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
    pub(crate) fn publish_remote(&mut self, state: &Arc<RemoteState>) {
        let h = state.handle.handle();
        let mut inner = state.lock();
        match self.registry.transport(h) {
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
                self.remote_streams.remove(&h);
            }
        }
        inner.wake_waiters();
    }

    /// After a registry call: transports that ended tell their remote handles.
    pub(crate) fn remotes_after_close(&mut self) {
        if self.remote_streams.is_empty() {
            self.io.closed.clear();
            return;
        }
        let mut closed = std::mem::take(&mut self.io.closed);
        closed.retain(|h| {
            let Some(state) = self.remote_streams.get(h).cloned() else { return false };
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

impl Drop for RemoteStreams {
    fn drop(&mut self) {
        for state in self.0.values() {
            let mut inner = state.lock();
            inner.closed = true;
            inner.wake_waiters();
        }
    }
}

/// The loop's remote states by handle; dropping the loop closes them all (their waiters
/// wake instead of waiting for a loop that is gone).
#[derive(Default)]
pub(crate) struct RemoteStreams(
    pub(crate) std::collections::HashMap<aioport::Handle, Arc<RemoteState>>,
);

impl std::ops::Deref for RemoteStreams {
    type Target = std::collections::HashMap<aioport::Handle, Arc<RemoteState>>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for RemoteStreams {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}
