//! Exponential backoff with jitter, shared by the publisher's retries and the subscriber's
//! reconnects.
//!
//! Delay `n` (from 0) is drawn uniformly from `[d/2, d]` where `d = min(max, min * 2^n)`:
//! growing delays spread over time so many clients that failed together do not retry
//! together. The randomness comes from std's per-process hasher seed, so no RNG crate is
//! needed for it.

use std::{
    collections::hash_map::RandomState,
    hash::{BuildHasher, Hasher},
    time::Duration,
};

/// How long to wait between attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay (before jitter).
    pub min: Duration,
    /// The longest delay (before jitter).
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { min: Duration::from_millis(100), max: Duration::from_secs(5) }
    }
}

impl Backoff {
    /// The delay before retry number `attempt` (0 = the first retry).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(30)).unwrap_or(u32::MAX);
        let full = self.min.saturating_mul(factor).min(self.max).max(self.min.min(self.max));
        let half = full / 2;
        let spread = u64::try_from((full - half).as_micros()).unwrap_or(u64::MAX);
        let jitter = if spread == 0 { 0 } else { random_u64() % (spread + 1) };
        half + Duration::from_micros(jitter)
    }
}

/// A random number from a freshly seeded std hasher.
fn random_u64() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(0);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_within_jitter() {
        let b = Backoff { min: Duration::from_millis(100), max: Duration::from_secs(1) };
        for (attempt, full) in [(0, 100), (1, 200), (2, 400), (3, 800), (4, 1000), (40, 1000)] {
            let d = b.delay(attempt);
            assert!(d >= Duration::from_millis(full / 2) && d <= Duration::from_millis(full), "{attempt}: {d:?}");
        }
    }
}
