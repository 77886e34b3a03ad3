//! Write-buffer limits: asyncio's high/low-water marks, derived and validated as
//! `_FlowControlMixin._set_write_buffer_limits` does (spec §0.2, §3.1).

use crate::LimitsError;

/// The high- and low-water marks of a write buffer.
///
/// A transport pauses its protocol when its write buffer grows **strictly above** `high`
/// and resumes it when the buffer drains to **at most** `low`.
///
/// ```
/// use aioport::WriteBufferLimits;
/// let d = WriteBufferLimits::default();
/// assert_eq!((d.high(), d.low()), (64 * 1024, 16 * 1024));
/// // Only high: low = high / 4. Only low: high = 4 * low.
/// assert_eq!(WriteBufferLimits::new(Some(1000), None).unwrap().low(), 250);
/// assert_eq!(WriteBufferLimits::new(None, Some(1000)).unwrap().high(), 4000);
/// // high = 0: pause while anything at all is buffered, resume only when empty.
/// let zero = WriteBufferLimits::new(Some(0), None).unwrap();
/// assert_eq!((zero.high(), zero.low()), (0, 0));
/// assert!(WriteBufferLimits::new(Some(10), Some(11)).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteBufferLimits {
    high: usize,
    low: usize,
}

impl WriteBufferLimits {
    /// asyncio's default high-water mark: 64 KiB.
    pub const DEFAULT_HIGH: usize = 64 * 1024;
    /// asyncio's default low-water mark: `DEFAULT_HIGH / 4` = 16 KiB.
    pub const DEFAULT_LOW: usize = Self::DEFAULT_HIGH / 4;

    /// Derives the limits as asyncio does: neither given → the defaults; only `high` →
    /// `low = high / 4`; only `low` → `high = 4 * low` (saturating).
    ///
    /// # Errors
    ///
    /// [`LimitsError::HighBelowLow`] when the resulting `high < low`.
    pub fn new(high: Option<usize>, low: Option<usize>) -> Result<Self, LimitsError> {
        let (high, low) = match (high, low) {
            (None, None) => (Self::DEFAULT_HIGH, Self::DEFAULT_LOW),
            (Some(high), None) => (high, high / 4),
            (None, Some(low)) => (low.saturating_mul(4), low),
            (Some(high), Some(low)) => (high, low),
        };
        if high < low {
            return Err(LimitsError::HighBelowLow { high, low });
        }
        Ok(WriteBufferLimits { high, low })
    }

    /// The high-water mark: the protocol is paused when the buffer is `> high`.
    pub const fn high(&self) -> usize {
        self.high
    }

    /// The low-water mark: a paused protocol is resumed when the buffer is `<= low`.
    pub const fn low(&self) -> usize {
        self.low
    }
}

impl Default for WriteBufferLimits {
    fn default() -> Self {
        WriteBufferLimits { high: Self::DEFAULT_HIGH, low: Self::DEFAULT_LOW }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_asyncio_constants() {
        // spec §0.2: 64 KiB high, high // 4 low.
        let d = WriteBufferLimits::new(None, None).unwrap();
        assert_eq!(d, WriteBufferLimits::default());
        assert_eq!((d.high(), d.low()), (65536, 16384));
    }

    #[test]
    fn derivation_exhaustive_small_range() {
        for h in 0..64usize {
            let l = WriteBufferLimits::new(Some(h), None).unwrap();
            assert_eq!((l.high(), l.low()), (h, h / 4));
            let l = WriteBufferLimits::new(None, Some(h)).unwrap();
            assert_eq!((l.high(), l.low()), (4 * h, h));
            for lo in 0..64usize {
                let r = WriteBufferLimits::new(Some(h), Some(lo));
                if h >= lo {
                    assert_eq!(r.map(|l| (l.high(), l.low())), Ok((h, lo)));
                } else {
                    assert_eq!(r, Err(LimitsError::HighBelowLow { high: h, low: lo }));
                }
            }
        }
    }

    #[test]
    fn only_low_saturates_instead_of_overflowing() {
        let l = WriteBufferLimits::new(None, Some(usize::MAX)).unwrap();
        assert_eq!((l.high(), l.low()), (usize::MAX, usize::MAX));
    }

    #[test]
    fn error_names_both_values() {
        // spec §3.2: (high=0, low=1) → "high (0) must be >= low (1)".
        let e = WriteBufferLimits::new(Some(0), Some(1)).unwrap_err();
        assert_eq!(e.to_string(), "high (0) must be >= low (1)");
    }
}
