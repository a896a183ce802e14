//! The pusher's Prometheus metrics; names here only.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

/// Pushes by status class and outcome.
pub const PUSH_REQUESTS: &str = "eventflow_push_requests_total";
/// Push latency (connect to response), by status class.
pub const PUSH_DURATION: &str = "eventflow_push_duration_seconds";
/// Settlements that failed after a push (the event is redelivered after its ack deadline).
pub const PUSH_SETTLE_FAILURES: &str = "eventflow_push_settle_failures_total";
/// Push subscriptions this replica delivers.
pub const PUSH_SUBSCRIPTIONS: &str = "eventflow_push_subscriptions";

/// The pusher's metrics; cheap to clone.
#[derive(Clone, Debug)]
pub struct PushMetrics {
    /// See [`PUSH_REQUESTS`]; labels `class` (`2xx`, `4xx`, `5xx`, `timeout`, `error`, `refused`, ...)
    /// and `outcome` (`ack`, `retry`, `reject`).
    pub requests: IntCounterVec,
    /// See [`PUSH_DURATION`]; label `class`.
    pub duration: HistogramVec,
    /// See [`PUSH_SETTLE_FAILURES`].
    pub settle_failures: prometheus::IntCounter,
    /// See [`PUSH_SUBSCRIPTIONS`].
    pub subscriptions: IntGauge,
}

impl PushMetrics {
    /// Registers the metrics in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let requests =
            IntCounterVec::new(Opts::new(PUSH_REQUESTS, "Pushes by status class and outcome"), &["class", "outcome"])?;
        let buckets = vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
        let duration = HistogramVec::new(
            HistogramOpts::new(PUSH_DURATION, "Push latency, connect to response").buckets(buckets),
            &["class"],
        )?;
        let settle_failures =
            prometheus::IntCounter::new(PUSH_SETTLE_FAILURES, "Settlements that failed after a push")?;
        let subscriptions = IntGauge::new(PUSH_SUBSCRIPTIONS, "Push subscriptions this replica delivers")?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(settle_failures.clone()))?;
        registry.register(Box::new(subscriptions.clone()))?;
        Ok(Self { requests, duration, settle_failures, subscriptions })
    }
}
