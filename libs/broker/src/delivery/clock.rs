//! The clock a delivery session schedules by (config refresh, reclaim, reap), injectable so
//! tests move time instead of waiting for it: [`SystemClock`] in production, [`ManualClock`]
//! in tests. Only scheduling reads it; waits (for a settlement, for new entries) stay real
//! tokio timers, and times stored in Redis keep Redis's own clock.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

/// Where a session's policy reads `now` from.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// The machine's monotonic clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that stands still until told to move; clones share one time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    /// The current instant, shared by the clones (the test moves it, the session reads it).
    now: Arc<Mutex<Instant>>,
}

impl ManualClock {
    /// A clock standing at the machine's current instant.
    pub fn new() -> Self {
        Self { now: Arc::new(Mutex::new(Instant::now())) }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        *now += by;
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
