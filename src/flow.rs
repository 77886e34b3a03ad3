//! `FlowControl`: the write-side pause/resume edge shared by every transport kind.
//!
//! The rule (asyncio's, spec §3): the protocol is paused when the write buffer grows
//! **strictly above** `high` and resumed when it drains to **at most** `low`; at most one
//! pause per episode, strictly alternating with resume.
//!
//! The *current* state ([`FlowControl::is_paused`], what `is_writing_paused()` reports) is
//! decided at once, inside the call that changed the size. The *protocol's view* — which
//! callbacks it has been given — is kept apart, and [`FlowControl::poll_edge`] hands out the
//! callbacks that bring the view up to date (DESIGN.md §4): pause then resume when a whole
//! episode happened before delivery (a protocol that saw `is_writing_paused()` must hear
//! the resume), never a resume without its pause, and once frozen (the connection is gone)
//! no new edge at all.

use crate::{WriteBufferLimits, WriteError};

/// A flow-control callback to deliver to the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowEdge {
    /// Deliver `pause_writing`.
    Pause,
    /// Deliver `resume_writing`.
    Resume,
}

/// Write-buffer limits, the paused state and the protocol's view of it.
///
/// The transport owns the byte count of its queue and passes it in (`queued`); the size
/// compared against the limits is `queued + external_pending`, where *external pending*
/// counts bytes held elsewhere on the transport's behalf (a TLS engine's ciphertext, a
/// cross-task command queue).
///
/// ```
/// use aioport::{FlowControl, FlowEdge, WriteBufferLimits};
/// let mut fc = FlowControl::new(WriteBufferLimits::new(Some(4), Some(2)).unwrap());
/// fc.check(4); // equal to high: no pause
/// assert!(!fc.is_paused());
/// fc.check(5); // above high: paused at once
/// assert!(fc.is_paused());
/// fc.check(2); // at low: resumed
/// // The protocol saw neither edge yet: it gets both, in order.
/// assert_eq!(fc.poll_edge(), Some(FlowEdge::Pause));
/// assert_eq!(fc.poll_edge(), Some(FlowEdge::Resume));
/// assert_eq!(fc.poll_edge(), None);
/// ```
#[derive(Debug, Clone)]
pub struct FlowControl {
    limits: WriteBufferLimits,
    hard_limit: Option<usize>,
    external_pending: usize,
    paused: bool,
    view_paused: bool,
    /// A whole pause→resume episode happened while the protocol's view was "not paused".
    pulse: bool,
    /// The connection is gone: the size no longer moves the state.
    frozen: bool,
    /// Edges are held back (a sendfile fallback owns the transport's writes), and
    /// whether a whole episode was owed when the hold began.
    held: Option<bool>,
}

impl FlowControl {
    /// Not paused, no external pending bytes, no hard limit.
    pub fn new(limits: WriteBufferLimits) -> Self {
        FlowControl {
            limits,
            hard_limit: None,
            external_pending: 0,
            paused: false,
            view_paused: false,
            pulse: false,
            frozen: false,
            held: None,
        }
    }

    /// The current limits.
    pub fn limits(&self) -> WriteBufferLimits {
        self.limits
    }

    /// True from the moment the size went above `high` until it came back to `<= low`:
    /// what `is_writing_paused()` reports, independent of callback delivery.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Bytes held on the transport's behalf outside its queue.
    pub fn external_pending(&self) -> usize {
        self.external_pending
    }

    /// The size compared against the limits: `queued + external_pending`.
    pub fn size(&self, queued: usize) -> usize {
        queued.saturating_add(self.external_pending)
    }

    /// Re-checks both edges against `queued + external_pending`. Called after every change
    /// of the size (write, flush) and by the setters below.
    pub fn check(&mut self, queued: usize) {
        if self.frozen {
            return;
        }
        let size = self.size(queued);
        if !self.paused && size > self.limits.high() {
            self.paused = true;
        } else if self.paused && size <= self.limits.low() {
            self.paused = false;
            if !self.view_paused {
                self.pulse = true;
            }
        }
    }

    /// Replaces the limits and re-checks **both** edges (asyncio re-checks only the pause
    /// edge; DESIGN.md §5).
    pub fn set_limits(&mut self, limits: WriteBufferLimits, queued: usize) {
        self.limits = limits;
        self.check(queued);
    }

    /// Sets the external pending count and re-checks both edges.
    pub fn set_external_pending(&mut self, external: usize, queued: usize) {
        self.external_pending = external;
        self.check(queued);
    }

    /// Moves up to `n` external pending bytes into the queue's count: the caller queues
    /// them next, so the size does not change and no edge is checked.
    pub fn take_external(&mut self, n: usize) {
        self.external_pending -= n.min(self.external_pending);
    }

    /// The optional hard limit on the size; `None` (the default) is unbounded, as asyncio.
    pub fn hard_limit(&self) -> Option<usize> {
        self.hard_limit
    }

    /// Sets or removes the hard limit. Writes that would take the size above it fail with
    /// [`WriteError::BufferFull`].
    pub fn set_hard_limit(&mut self, limit: Option<usize>) {
        self.hard_limit = limit;
    }

    /// Refuses a write of `len` bytes that would take the size above the hard limit.
    ///
    /// The whole length counts, even if the socket might take part of it at once: a write
    /// is accepted or refused as a whole, never half-sent and then refused.
    pub fn admit(&self, queued: usize, len: usize) -> Result<(), WriteError> {
        match self.hard_limit {
            Some(limit) if self.size(queued).saturating_add(len) > limit => {
                Err(WriteError::BufferFull { buffered: self.size(queued), len, limit })
            }
            _ => Ok(()),
        }
    }

    /// True when [`poll_edge`](Self::poll_edge) would return a callback.
    pub fn has_edge(&self) -> bool {
        self.held.is_none() && (self.view_paused != self.paused || self.pulse)
    }

    /// The next flow-control callback to deliver, bringing the protocol's view one step
    /// closer to the current state. Edges strictly alternate.
    #[must_use]
    pub fn poll_edge(&mut self) -> Option<FlowEdge> {
        if !self.has_edge() {
            return None;
        }
        // Either the view lags the state, or a whole episode is owed (pause first). Once
        // its pause is delivered, the episode's resume is owed only while the view still
        // differs from the state: if the buffer crossed high water again meanwhile, the
        // protocol is rightly paused and owed nothing (found by the `limits` fuzz target).
        self.view_paused = !self.view_paused;
        if self.view_paused || self.view_paused == self.paused {
            self.pulse = false;
        }
        Some(if self.view_paused { FlowEdge::Pause } else { FlowEdge::Resume })
    }

    /// Forgets what the protocol was told: a replacement protocol has seen nothing, so a
    /// paused state is announced to it with a pause (gh-109051), and an unfinished
    /// episode of the old protocol is not owed to the new one.
    pub fn reset_view(&mut self) {
        self.view_paused = false;
        self.pulse = false;
    }

    /// Holds every edge back until [`release`](Self::release): the state still follows
    /// the size (so `is_writing_paused()` stays true to the buffer), but the protocol is
    /// told nothing. asyncio's sendfile fallback swaps in `_SendfileFallbackProtocol`,
    /// which takes the pause/resume calls meant for the user's protocol (spec §10.53).
    /// Idempotent.
    pub fn hold(&mut self) {
        if self.held.is_none() {
            self.held = Some(self.pulse);
        }
    }

    /// Ends a [`hold`](Self::hold): the protocol's view is handed back as it was, and
    /// only the difference to the current state is delivered — `resume_writing` if it
    /// was paused and the buffer drained meanwhile, `pause_writing` if it was not and the
    /// buffer is above the mark now. Whole episodes that began and ended during the hold
    /// are not owed (they were the fallback's); one owed before the hold still is.
    pub fn release(&mut self) {
        if let Some(pulse) = self.held.take() {
            self.pulse = pulse;
        }
    }

    /// When the connection is gone (abort, fatal error, close): the size no longer moves
    /// the state, so dropping the queue causes no resume (asyncio: a paused protocol hears
    /// pause → lost, spec §3.10). Edges that happened before are still delivered.
    pub fn freeze(&mut self) {
        self.frozen = true;
    }

    /// True after [`freeze`](Self::freeze).
    pub fn is_frozen(&self) -> bool {
        self.frozen
    }
}

#[cfg(test)]
mod tests;
