//! The archive's Prometheus metrics; names here only.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Rows the archiver inserted (new events archived), per stream.
pub const ARCHIVE_ROWS: &str = "eventflow_archive_rows_inserted_total";
/// Events delivered to the archiver that were archived already (redelivered after a crash).
pub const ARCHIVE_DUPLICATES: &str = "eventflow_archive_duplicates_total";
/// Time one batch insert (one statement, one commit) took.
pub const ARCHIVE_INSERT_SECONDS: &str = "eventflow_archive_insert_duration_seconds";
/// Batch inserts that failed (retried until they succeed).
pub const ARCHIVE_INSERT_FAILURES: &str = "eventflow_archive_insert_failures_total";
/// Events of a stream not archived yet (pending or not yet delivered to `_archive`): what the
/// retention hold keeps in Redis.
pub const ARCHIVE_LAG_ENTRIES: &str = "eventflow_archive_lag_entries";
/// Age of the oldest event of a stream not archived yet (0 when none): how far the archive is
/// behind the stream's head, and how old the oldest entry the hold keeps is.
pub const ARCHIVE_LAG_SECONDS: &str = "eventflow_archive_lag_seconds";
/// Events replayed, by target kind (`subscription`, `stream`).
pub const ARCHIVE_REPLAYED: &str = "eventflow_archive_replayed_total";

/// The archive's metrics; cheap to clone.
#[derive(Clone, Debug)]
pub struct ArchiveMetrics {
    /// See [`ARCHIVE_ROWS`]; label `stream`.
    pub rows: IntCounterVec,
    /// See [`ARCHIVE_DUPLICATES`].
    pub duplicates: IntCounter,
    /// See [`ARCHIVE_INSERT_SECONDS`].
    pub insert_seconds: Histogram,
    /// See [`ARCHIVE_INSERT_FAILURES`].
    pub insert_failures: IntCounter,
    /// See [`ARCHIVE_LAG_ENTRIES`]; label `stream`.
    pub lag_entries: IntGaugeVec,
    /// See [`ARCHIVE_LAG_SECONDS`]; label `stream`.
    pub lag_seconds: IntGaugeVec,
    /// See [`ARCHIVE_REPLAYED`]; label `target`.
    pub replayed: IntCounterVec,
}

impl ArchiveMetrics {
    /// Registers the metrics in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let rows = IntCounterVec::new(Opts::new(ARCHIVE_ROWS, "Events archived (rows inserted)"), &["stream"])?;
        let duplicates =
            IntCounter::new(ARCHIVE_DUPLICATES, "Events delivered to the archiver that were archived already")?;
        let buckets = vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
        let insert_seconds = Histogram::with_opts(
            HistogramOpts::new(ARCHIVE_INSERT_SECONDS, "Time of one batch insert").buckets(buckets),
        )?;
        let insert_failures = IntCounter::new(ARCHIVE_INSERT_FAILURES, "Batch inserts that failed (retried)")?;
        let lag_entries =
            IntGaugeVec::new(Opts::new(ARCHIVE_LAG_ENTRIES, "Events of the stream not archived yet"), &["stream"])?;
        let lag_seconds = IntGaugeVec::new(
            Opts::new(ARCHIVE_LAG_SECONDS, "Age of the oldest event of the stream not archived yet"),
            &["stream"],
        )?;
        let replayed = IntCounterVec::new(Opts::new(ARCHIVE_REPLAYED, "Archived events replayed"), &["target"])?;
        registry.register(Box::new(rows.clone()))?;
        registry.register(Box::new(duplicates.clone()))?;
        registry.register(Box::new(insert_seconds.clone()))?;
        registry.register(Box::new(insert_failures.clone()))?;
        registry.register(Box::new(lag_entries.clone()))?;
        registry.register(Box::new(lag_seconds.clone()))?;
        registry.register(Box::new(replayed.clone()))?;
        Ok(Self { rows, duplicates, insert_seconds, insert_failures, lag_entries, lag_seconds, replayed })
    }
}
