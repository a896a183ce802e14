//! Metrics and spans of deliveries and settlements (names in `eventflow_runtime::metrics`,
//! span relations in `eventflow_runtime::trace`).

use eventflow_broker::{BatchStats, Delivery, Settled, ack_id::AckId, now_ms};
use eventflow_runtime::{metrics::EventMetrics, telemetry::tracing_enabled, trace};
use opentelemetry::KeyValue;
use prometheus::IntGauge;

/// A settlement operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Acknowledge.
    Ack,
    /// ModifyAckDeadline 0.
    Nack,
    /// ModifyAckDeadline N > 0.
    Extend,
    /// Reject (dead-letter).
    Reject,
}

/// Records what the subscriber does.
#[derive(Debug, Clone)]
pub struct Observer {
    /// Where counts and latencies go.
    pub metrics: EventMetrics,
}

/// An open Subscribe session, counted in `eventflow_subscribe_sessions` until dropped.
#[derive(Debug)]
pub struct OpenSession(IntGauge);

impl Drop for OpenSession {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Observer {
    /// A session of `sub` opened; it counts as open until the returned guard is dropped.
    pub fn session_opened(&self, stream: &str, sub: &str) -> OpenSession {
        let gauge = self.metrics.sessions.with_label_values(&[stream, sub]);
        gauge.inc();
        OpenSession(gauge)
    }

    /// One delivered batch of a session, and what the session did besides.
    pub fn delivered(&self, stream: &str, sub: &str, batch: &[Delivery], stats: &BatchStats) {
        let labels = [stream, sub];
        let now = now_ms();
        let latency = self.metrics.delivery_latency.with_label_values(&labels);
        self.metrics.delivered.with_label_values(&labels).inc_by(batch.len() as u64);
        inc_by(&self.metrics.redelivered, &labels, batch.iter().filter(|d| d.attempt > 1).count());
        for d in batch {
            latency.observe(now.saturating_sub(d.publish_ms) as f64 / 1000.0);
            if tracing_enabled() {
                let attempt = KeyValue::new("messaging.eventflow.delivery_attempt", i64::from(d.attempt));
                trace::record("deliver", stream, sub, &d.entry_id, d.traceparent.as_deref(), vec![attempt]);
            }
        }
        self.session_stats(stream, sub, stats);
    }

    /// Expiries, filtered events and max-attempt dead letters of one `next_batch`.
    pub fn session_stats(&self, stream: &str, sub: &str, stats: &BatchStats) {
        let labels = [stream, sub];
        inc_by(&self.metrics.expired, &labels, stats.expired);
        inc_by(&self.metrics.filtered, &labels, stats.filtered);
        inc_by(&self.metrics.dead_lettered, &[stream, sub, "max_attempts"], stats.dead_lettered.len());
        for (entry_id, traceparent) in &stats.dead_lettered {
            let reason = KeyValue::new("messaging.eventflow.dead_letter_reason", "max delivery attempts");
            trace::record("dead_letter", stream, sub, entry_id, traceparent.as_deref(), vec![reason]);
        }
    }

    /// A settlement call: counts and spans for the ack ids it applied to. The ack ids of one
    /// call mostly name one subscription: its labelled metrics are looked up once per run of
    /// ack ids with the same labels, not once per ack id.
    pub fn settled(&self, op: Settlement, settled: &Settled) {
        let now = now_ms();
        let same_labels = |a: &AckId, b: &AckId| a.stream == b.stream && a.subscription == b.subscription;
        for run in settled.applied.chunk_by(same_labels) {
            let Some(first) = run.first() else { continue };
            let labels = [first.stream.as_str(), first.subscription.as_str()];
            let name = match op {
                Settlement::Ack => {
                    self.metrics.acked.with_label_values(&labels).inc_by(run.len() as u64);
                    let latency = self.metrics.ack_latency.with_label_values(&labels);
                    for id in run {
                        latency.observe(now.saturating_sub(id.delivered_ms) as f64 / 1000.0);
                    }
                    "ack"
                }
                Settlement::Nack => {
                    self.metrics.nacked.with_label_values(&labels).inc_by(run.len() as u64);
                    "nack"
                }
                Settlement::Extend => "modify_ack_deadline",
                Settlement::Reject => {
                    inc_by(&self.metrics.dead_lettered, &[labels[0], labels[1], "rejected"], run.len());
                    "reject"
                }
            };
            if tracing_enabled() {
                for id in run {
                    self.settlement_spans(op, name, id);
                }
            }
        }
    }

    /// The span of one applied settlement (`name`), and of the dead letter a reject made.
    fn settlement_spans(&self, op: Settlement, name: &str, id: &AckId) {
        let parent = id.traceparent.as_deref();
        let attempt = KeyValue::new("messaging.eventflow.delivery_attempt", i64::from(id.attempt));
        trace::record(name, &id.stream, &id.subscription, &id.entry_id, parent, vec![attempt.clone()]);
        if op == Settlement::Reject {
            trace::record("dead_letter", &id.stream, &id.subscription, &id.entry_id, parent, vec![attempt]);
        }
    }
}

fn inc_by(counter: &prometheus::IntCounterVec, labels: &[&str], n: usize) {
    if n > 0 {
        counter.with_label_values(labels).inc_by(n as u64);
    }
}
