//! The relay's Prometheus metrics; names here only.

use prometheus::{Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Outbox rows still to publish (not published, not failed).
pub const BACKLOG: &str = "eventflow_outbox_backlog_rows";
/// Age of the oldest row still to publish (0 when there is none).
pub const OLDEST_AGE: &str = "eventflow_outbox_oldest_unpublished_age_seconds";
/// Rows this replica published (duplicates within the dedup window included: the row is done).
pub const PUBLISHED: &str = "eventflow_outbox_published_total";
/// Rows this replica marked failed.
pub const FAILED: &str = "eventflow_outbox_failed_total";
/// Published rows deleted by the retention.
pub const DELETED: &str = "eventflow_outbox_deleted_total";
/// Time of one batch: claim, publish, mark, commit.
pub const BATCH_DURATION: &str = "eventflow_relay_batch_duration_seconds";
/// Batches and cleanups that failed, by `backend` (`postgres`, `redis`).
pub const ERRORS: &str = "eventflow_relay_errors_total";

/// The relay's metrics; cheap to clone.
#[derive(Clone, Debug)]
pub struct RelayMetrics {
    /// See [`BACKLOG`]; refreshed by the maintenance task.
    pub backlog: IntGauge,
    /// See [`OLDEST_AGE`]; refreshed by the maintenance task (what the alert watches).
    pub oldest_age: Gauge,
    /// See [`PUBLISHED`].
    pub published: IntCounter,
    /// See [`FAILED`].
    pub failed: IntCounter,
    /// See [`DELETED`].
    pub deleted: IntCounter,
    /// See [`BATCH_DURATION`].
    pub batch_duration: Histogram,
    /// See [`ERRORS`].
    pub errors: IntCounterVec,
}

impl RelayMetrics {
    /// Registers the metrics in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let backlog = IntGauge::new(BACKLOG, "Outbox rows still to publish")?;
        let oldest_age = Gauge::new(OLDEST_AGE, "Age of the oldest outbox row still to publish")?;
        let published = IntCounter::new(PUBLISHED, "Outbox rows published by this replica")?;
        let failed = IntCounter::new(FAILED, "Outbox rows this replica marked failed (see the failure column)")?;
        let deleted = IntCounter::new(DELETED, "Published outbox rows deleted by the retention")?;
        let buckets = vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
        let batch_duration = Histogram::with_opts(
            HistogramOpts::new(BATCH_DURATION, "One relay batch: claim, publish, mark, commit").buckets(buckets),
        )?;
        let errors = IntCounterVec::new(Opts::new(ERRORS, "Failed relay batches and cleanups"), &["backend"])?;
        // Both series exist from the start, at 0, so rates and alerts see the first error.
        for backend in ["postgres", "redis"] {
            errors.get_metric_with_label_values(&[backend])?;
        }
        registry.register(Box::new(backlog.clone()))?;
        registry.register(Box::new(oldest_age.clone()))?;
        registry.register(Box::new(published.clone()))?;
        registry.register(Box::new(failed.clone()))?;
        registry.register(Box::new(deleted.clone()))?;
        registry.register(Box::new(batch_duration.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        Ok(Self { backlog, oldest_age, published, failed, deleted, batch_duration, errors })
    }

    /// Counts a failure of `backend` (`postgres` or `redis`).
    pub fn error(&self, backend: &str) {
        if let Ok(counter) = self.errors.get_metric_with_label_values(&[backend]) {
            counter.inc();
        }
    }
}
