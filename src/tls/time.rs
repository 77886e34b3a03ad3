//! [`VirtualTime`]: a wall clock for certificate checks that the test sets.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rustls::pki_types::UnixTime;
use rustls::time_provider::TimeProvider;

/// A rustls [`TimeProvider`] whose time the test sets: certificate validity (and ticket
/// age) is checked against it instead of the system clock, so a harness run is the same
/// on any day. Real drivers keep rustls' default provider.
///
/// Clones share the time: keep one to [`advance`](Self::advance) it while the configs
/// built with another use it.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use aioport::tls::VirtualTime;
/// use aioport::tls::rustls::{self, crypto::ring};
///
/// let time = VirtualTime::from_unix_secs(1_767_225_600); // 2026-01-01T00:00:00Z
/// let config = rustls::ClientConfig::builder_with_details(
///     Arc::new(ring::default_provider()),
///     Arc::new(time.clone()),
/// );
/// time.advance(Duration::from_secs(60));
/// assert_eq!(time.unix_secs(), 1_767_225_660);
/// # let _ = config;
/// ```
#[derive(Debug, Clone)]
pub struct VirtualTime(Arc<AtomicU64>);

impl VirtualTime {
    /// Starts at `secs` seconds after the Unix epoch.
    pub fn from_unix_secs(secs: u64) -> Self {
        VirtualTime(Arc::new(AtomicU64::new(secs)))
    }

    /// The current virtual time, in seconds after the Unix epoch.
    pub fn unix_secs(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Moves the time forward (whole seconds; saturating).
    pub fn advance(&self, by: Duration) {
        let secs = by.as_secs();
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| Some(t.saturating_add(secs)));
    }

    /// Sets the time.
    pub fn set_unix_secs(&self, secs: u64) {
        self.0.store(secs, Ordering::Relaxed);
    }
}

impl TimeProvider for VirtualTime {
    fn current_time(&self) -> Option<UnixTime> {
        Some(UnixTime::since_unix_epoch(Duration::from_secs(self.unix_secs())))
    }
}
