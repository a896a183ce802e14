//! The pusher's Prometheus metrics; names here only.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

/// Pushes by status class and outcome.
pub const PUSH_REQUESTS: &str = "eventflow_push_requests_total";
/// Push latency (connect to response) per subscription.
pub const PUSH_DURATION: &str = "eventflow_push_duration_seconds";
/// Settlements that failed after a push (the event is redelivered after its ack deadline).
pub const PUSH_SETTLE_FAILURES: &str = "eventflow_push_settle_failures_total";
/// Push subscriptions this replica delivers.
pub const PUSH_SUBSCRIPTIONS: &str = "eventflow_push_subscriptions";

/// The pusher's metrics; cheap to clone.
#[derive(Clone, Debug)]
pub struct PushMetrics {
    /// See [`PUSH_REQUESTS`]; labels `stream`, `subscription`, `class` (`2xx`, `4xx`, `5xx`,
    /// `timeout`, `error`, `refused`, ...) and `outcome` (`ack`, `retry`, `reject`). Streams and
    /// subscriptions are only ones that exist (the pusher pushes nothing else).
    pub requests: IntCounterVec,
    /// See [`PUSH_DURATION`]; labels `stream`, `subscription`.
    pub duration: HistogramVec,
    /// See [`PUSH_SETTLE_FAILURES`].
    pub settle_failures: prometheus::IntCounter,
    /// See [`PUSH_SUBSCRIPTIONS`].
    pub subscriptions: IntGauge,
}

impl PushMetrics {
    /// Registers the metrics in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(PUSH_REQUESTS, "Pushes by status class and outcome"),
            &["stream", "subscription", "class", "outcome"],
        )?;
        let buckets = vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
        let duration = HistogramVec::new(
            HistogramOpts::new(PUSH_DURATION, "Push latency, connect to response").buckets(buckets),
            &["stream", "subscription"],
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

    /// Counts one push of `subscription` of `stream` that took `seconds`.
    pub fn pushed(&self, stream: &str, subscription: &str, class: &str, outcome: &str, seconds: f64) {
        // `get_metric_with_label_values` cannot panic (a label-count mismatch is an error).
        if let Ok(h) = self.duration.get_metric_with_label_values(&[stream, subscription]) {
            h.observe(seconds);
        }
        if let Ok(c) = self.requests.get_metric_with_label_values(&[stream, subscription, class, outcome]) {
            c.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_push_is_counted_under_its_labels() {
        let registry = Registry::new();
        let metrics = PushMetrics::register(&registry).unwrap();
        metrics.pushed("orders", "hook", "5xx", "retry", 0.01);
        assert_eq!(metrics.requests.with_label_values(&["orders", "hook", "5xx", "retry"]).get(), 1);
        assert_eq!(metrics.duration.with_label_values(&["orders", "hook"]).get_sample_count(), 1);
    }
}
