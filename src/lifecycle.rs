//! `Lifecycle`: connection_made once and first, closing, connection_lost exactly once and
//! last. Shared by every transport kind.

use crate::ConnectionError;

/// Where a transport is in its life, from the protocol's point of view.
///
/// ```
/// use aioport::Lifecycle;
/// let mut lc = Lifecycle::new();
/// lc.set_lost(None);                 // closed before connection_made was delivered…
/// assert_eq!(lc.poll_lost(), None);  // …connection_lost still waits for it
/// assert!(lc.poll_made());
/// assert!(!lc.poll_made());          // once
/// assert_eq!(lc.poll_lost(), Some(None));
/// assert_eq!(lc.poll_lost(), None);  // exactly once
/// assert!(lc.is_finished());
/// ```
#[derive(Debug, Clone, Default)]
pub struct Lifecycle {
    made_delivered: bool,
    closing: bool,
    lost: Lost,
}

#[derive(Debug, Clone, Default)]
enum Lost {
    #[default]
    No,
    /// Boxed: errors are rare, and this keeps every transport small.
    Pending(Option<Box<ConnectionError>>),
    Delivered,
}

impl Lifecycle {
    /// A transport whose `connection_made` is still to be delivered.
    pub const fn new() -> Self {
        Lifecycle { made_delivered: false, closing: false, lost: Lost::No }
    }

    /// True once, the first time it is called: deliver `connection_made` now.
    #[must_use]
    pub fn poll_made(&mut self) -> bool {
        !std::mem::replace(&mut self.made_delivered, true)
    }

    /// True once `connection_made` was delivered.
    pub fn is_made(&self) -> bool {
        self.made_delivered
    }

    /// True after `close()`, `abort()`, a fatal error or the loss of the connection.
    pub fn is_closing(&self) -> bool {
        self.closing || self.is_lost()
    }

    /// True after the *user* asked to close (`close()`, `abort()`, or an `eof_received`
    /// that did not keep the connection open) — as opposed to a loss the peer or an error
    /// caused. Writes then fail with `WriteError::Closing` rather than `Closed`.
    pub fn is_close_requested(&self) -> bool {
        self.closing
    }

    /// Records a close request; returns false if one was already recorded.
    pub fn start_closing(&mut self) -> bool {
        !std::mem::replace(&mut self.closing, true)
    }

    /// Records that the connection is gone (the socket was closed) and why. The first
    /// reason wins; later calls are ignored. Implies [`is_closing`](Self::is_closing).
    pub fn set_lost(&mut self, reason: Option<ConnectionError>) {
        if matches!(self.lost, Lost::No) {
            self.lost = Lost::Pending(reason.map(Box::new));
        }
    }

    /// True once the connection is gone, whether or not `connection_lost` was delivered.
    pub fn is_lost(&self) -> bool {
        !matches!(self.lost, Lost::No)
    }

    /// True when `connection_lost` waits for delivery.
    pub fn has_lost_pending(&self) -> bool {
        self.made_delivered && matches!(self.lost, Lost::Pending(_))
    }

    /// `Some(reason)` once, when `connection_lost(reason)` is to be delivered: only after
    /// `connection_made` was delivered.
    #[must_use]
    pub fn poll_lost(&mut self) -> Option<Option<ConnectionError>> {
        if !self.made_delivered {
            return None;
        }
        let Lost::Pending(reason) = &mut self.lost else { return None };
        let reason = reason.take();
        self.lost = Lost::Delivered;
        Some(reason.map(|r| *r))
    }

    /// True once `connection_lost` was delivered: the transport is finished.
    pub fn is_finished(&self) -> bool {
        matches!(self.lost, Lost::Delivered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind;

    #[test]
    fn first_loss_reason_wins() {
        let mut lc = Lifecycle::new();
        assert!(lc.poll_made());
        lc.set_lost(Some(ErrorKind::ConnectionReset.into()));
        lc.set_lost(None);
        assert!(lc.is_closing() && lc.is_lost() && !lc.is_finished());
        assert_eq!(lc.poll_lost(), Some(Some(ErrorKind::ConnectionReset.into())));
        lc.set_lost(None);
        assert_eq!(lc.poll_lost(), None);
    }

    #[test]
    fn closing_is_idempotent() {
        let mut lc = Lifecycle::new();
        assert!(lc.start_closing());
        assert!(!lc.start_closing());
        assert!(lc.is_closing() && lc.is_close_requested() && !lc.is_lost());
        let mut lc = Lifecycle::new();
        lc.set_lost(None);
        assert!(lc.is_closing() && !lc.is_close_requested());
    }
}
