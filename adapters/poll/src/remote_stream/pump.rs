//! The loop's side of remote streams: taking their commands into the registry, and
//! publishing the transport's size, limits and end back to them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use aioport::{Handle, HandleError, StreamHandle};

use super::{Op, RemoteQueue, RemoteState, RemoteStream};
use crate::Loop;

/// The loop's remote stream states. Dropping the loop closes them all: their waiters
/// return instead of waiting for a loop that is gone.
#[derive(Default)]
pub(crate) struct Remotes {
    /// By transport; an entry goes when its transport ends.
    pub(super) streams: HashMap<Handle, Arc<RemoteState>>,
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
    /// transport that is not a stream, or for a TLS app transport (served by the TLS
    /// engine, not by this loop: the loop would not see it end; write to it through
    /// [`LoopHandle::call_soon_threadsafe`](crate::LoopHandle::call_soon_threadsafe)).
    pub fn remote_stream(&mut self, h: StreamHandle) -> Result<RemoteStream, HandleError> {
        self.with(|ctx| ctx.write_buffer_size(h))?;
        if self.registry.interest(h.handle()).is_err() {
            return Err(HandleError::WrongKind {
                expected: "stream driven by the loop",
                found: "stream served by a protocol (TLS)",
            });
        }
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
        // Writes, write_eof and close wait while a sendfile runs (the transport would
        // refuse the first two; close waits its turn behind them).
        let sendfile = t.is_sendfile_in_progress();
        let size = t.write_buffer_size();
        let (abort, reading, ops, moved, queued, external) = {
            let mut inner = state.lock();
            inner.scheduled = false;
            let mut own = size.saturating_sub(inner.external);
            let abort = std::mem::take(&mut inner.abort);
            let reading = inner.reading.take();
            let mut ops = Vec::new();
            let mut moved = 0;
            while !sendfile && let Some(op) = inner.ops.pop_front() {
                if let Op::Write(b) = &op {
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
