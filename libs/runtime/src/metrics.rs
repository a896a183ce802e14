//! Prometheus metrics: every metric name of eventflow is defined here (but
//! `eventflow_auth_denied_total`, registered with the authentication it counts: see
//! [`crate::auth`]), and `GET /metrics` serves them in the text exposition format on each
//! binary's metrics port (beside the HTTP probes of [`crate::probes`], which stay open):
//! open, or with `--protect-metrics` only to a bearer token of a principal with the `metrics`
//! grant (401 without a known token, 403 without the grant).
//!
//! Labels are bounded: `stream` and `subscription` (objects operators create; a service labels
//! with a name only once it found that stream or subscription, so made-up names add no series),
//! `method` (the served methods, else `unknown`: see [`crate::grpc::Methods`]), `code` and
//! `reason` (fixed sets). No event ids or consumer names.

use axum::{
    Router,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder, exponential_buckets,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::Auth;

/// Serves `registry` on `listener` at `/metrics` (guarded by `auth` when `--protect-metrics` is
/// set), and the `probes` routes beside it ([`crate::probes`], always open), until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    probes: Router,
    auth: Auth,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let metrics = get(move |headers| render(registry.clone(), auth.clone(), headers));
    let app = Router::new().route("/metrics", metrics).merge(probes);
    axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

async fn render(registry: Registry, auth: Auth, headers: HeaderMap) -> Response {
    let authorization = headers.get(header::AUTHORIZATION).map(|v| v.to_str().unwrap_or(""));
    if let Err(e) = auth.check_metrics(authorization) {
        let status = if e.is_unauthenticated() { StatusCode::UNAUTHORIZED } else { StatusCode::FORBIDDEN };
        let challenge = [(header::WWW_AUTHENTICATE, "Bearer")];
        return (status, challenge, format!("{e}\n")).into_response();
    }
    let mut body = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&registry.gather(), &mut body) {
        tracing::error!(error = %e, "cannot encode metrics");
    }
    ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], body).into_response()
}

/// Latency buckets from 0.5 ms to about 33 s.
fn latency_buckets() -> Vec<f64> {
    exponential_buckets(0.0005, 2.0, 17).unwrap_or_default()
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntCounterVec> {
    let metric = IntCounterVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntGaugeVec> {
    let metric = IntGaugeVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

fn histogram(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<HistogramVec> {
    let metric = HistogramVec::new(HistogramOpts::new(name, help).buckets(latency_buckets()), labels)?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

const S: &[&str] = &["stream"];
const SS: &[&str] = &["stream", "subscription"];

/// The event-flow metrics. Each binary registers them all; each updates the ones it owns.
#[derive(Debug, Clone)]
pub struct EventMetrics {
    /// Events stored by Publish (`eventflow_published_total`).
    pub published: IntCounterVec,
    /// Events that were duplicates within the dedup window.
    pub duplicates: IntCounterVec,
    /// Events refused by Publish, by reason (`invalid`, `too_large`; `unknown_stream`, under
    /// the stream label `unknown`, for a stream that does not exist or an invalid name).
    pub publish_rejected: IntCounterVec,
    /// Time to store one Publish request's events.
    pub publish_duration: HistogramVec,
    /// Deliveries, first and repeated.
    pub delivered: IntCounterVec,
    /// Deliveries with attempt > 1.
    pub redelivered: IntCounterVec,
    /// From publish time to delivery (end to end).
    pub delivery_latency: HistogramVec,
    /// Acknowledged deliveries.
    pub acked: IntCounterVec,
    /// From delivery to acknowledgement.
    pub ack_latency: HistogramVec,
    /// Nacked deliveries (ModifyAckDeadline 0).
    pub nacked: IntCounterVec,
    /// Deliveries whose ack deadline passed.
    pub expired: IntCounterVec,
    /// Events skipped by a subscription's type filter.
    pub filtered: IntCounterVec,
    /// Events moved to a dead-letter queue, by reason (`rejected`, `max_attempts`).
    pub dead_lettered: IntCounterVec,
    /// Dead letters requeued into their subscription.
    pub requeued: IntCounterVec,
    /// Events in the stream not yet delivered to the subscription.
    pub lag: IntGaugeVec,
    /// Delivered, unsettled events of the subscription.
    pub pending: IntGaugeVec,
    /// Dead letters waiting.
    pub dlq_depth: IntGaugeVec,
    /// Circuit breaker: 0 closed, 1 open, 2 half-open (absent without a breaker).
    pub breaker_state: IntGaugeVec,
    /// Events in the stream.
    pub stream_length: IntGaugeVec,
    /// Open Subscribe sessions of this replica: shows how the replicas share the consumers (and
    /// what is left of `--max-sessions`).
    pub sessions: IntGaugeVec,
    /// Events retention removed before the subscription settled them, dead-lettered (read from
    /// Redis by the admin service, so it is one figure however many replicas trim).
    pub retention_dead_lettered: IntCounterVec,
    /// Events retention removed before the subscription settled them, dropped.
    pub retention_dropped: IntCounterVec,
    /// Oldest dead letters removed at the dead-letter queue's cap.
    pub dlq_overflow: IntCounterVec,
    /// Ordered subscriptions: ordering keys whose next events wait behind one in flight.
    pub ordered_keys_blocked: IntGaugeVec,
    /// Ordered subscriptions: age of the oldest blocked key's next waiting event, in whole
    /// seconds (0 when none is blocked): a key stuck behind a slow or failing event shows here.
    pub ordered_oldest_blocked_age: IntGaugeVec,
    /// Partitioned streams: events in each partition (`partition` label: at most 64 per stream).
    pub partition_length: IntGaugeVec,
    /// Partitioned streams: events of each partition not yet delivered to the subscription.
    pub partition_lag: IntGaugeVec,
    /// Partitioned streams: delivered, unsettled events of the subscription in each partition.
    pub partition_pending: IntGaugeVec,
}

impl EventMetrics {
    /// Registers every event metric in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let r = registry;
        Ok(Self {
            published: counter(r, "eventflow_published_total", "Events stored by Publish.", S)?,
            duplicates: counter(r, "eventflow_duplicates_total", "Published events that were duplicates.", S)?,
            publish_rejected: counter(
                r,
                "eventflow_publish_rejected_total",
                "Events refused by Publish.",
                &["stream", "reason"],
            )?,
            publish_duration: histogram(
                r,
                "eventflow_publish_duration_seconds",
                "Time to store a Publish request.",
                S,
            )?,
            delivered: counter(r, "eventflow_delivered_total", "Deliveries, first and repeated.", SS)?,
            redelivered: counter(r, "eventflow_redelivered_total", "Deliveries with attempt > 1.", SS)?,
            delivery_latency: histogram(r, "eventflow_delivery_latency_seconds", "From publish time to delivery.", SS)?,
            acked: counter(r, "eventflow_acked_total", "Acknowledged deliveries.", SS)?,
            ack_latency: histogram(r, "eventflow_ack_latency_seconds", "From delivery to acknowledgement.", SS)?,
            nacked: counter(r, "eventflow_nacked_total", "Nacked deliveries.", SS)?,
            expired: counter(r, "eventflow_expired_total", "Deliveries whose ack deadline passed.", SS)?,
            filtered: counter(r, "eventflow_filtered_total", "Events skipped by the type filter.", SS)?,
            dead_lettered: counter(
                r,
                "eventflow_dead_lettered_total",
                "Events moved to a dead-letter queue.",
                &["stream", "subscription", "reason"],
            )?,
            requeued: counter(r, "eventflow_requeued_total", "Dead letters requeued.", SS)?,
            lag: gauge(r, "eventflow_subscription_lag", "Events not yet delivered to the subscription.", SS)?,
            pending: gauge(r, "eventflow_subscription_pending", "Delivered, unsettled events.", SS)?,
            dlq_depth: gauge(r, "eventflow_dlq_depth", "Dead letters waiting.", SS)?,
            breaker_state: gauge(r, "eventflow_breaker_state", "Circuit breaker: 0 closed, 1 open, 2 half-open.", SS)?,
            stream_length: gauge(r, "eventflow_stream_length", "Events in the stream.", S)?,
            sessions: gauge(r, "eventflow_subscribe_sessions", "Open Subscribe sessions of this replica.", SS)?,
            retention_dead_lettered: counter(
                r,
                "eventflow_retention_dead_lettered_total",
                "Events retention removed before the subscription settled them, dead-lettered.",
                SS,
            )?,
            retention_dropped: counter(
                r,
                "eventflow_retention_dropped_total",
                "Events retention removed before the subscription settled them, dropped.",
                SS,
            )?,
            dlq_overflow: counter(
                r,
                "eventflow_dlq_overflow_total",
                "Oldest dead letters removed because the dead-letter queue reached its cap.",
                SS,
            )?,
            ordered_keys_blocked: gauge(
                r,
                "eventflow_ordered_keys_blocked",
                "Ordering keys whose next events wait behind an event in flight.",
                SS,
            )?,
            ordered_oldest_blocked_age: gauge(
                r,
                "eventflow_ordered_oldest_blocked_age_seconds",
                "Age of the oldest blocked ordering key's next waiting event.",
                SS,
            )?,
            partition_length: gauge(
                r,
                "eventflow_partition_length",
                "Events in one partition of a partitioned stream.",
                &["stream", "partition"],
            )?,
            partition_lag: gauge(
                r,
                "eventflow_partition_lag",
                "Events of one partition not yet delivered to the subscription.",
                &["stream", "subscription", "partition"],
            )?,
            partition_pending: gauge(
                r,
                "eventflow_partition_pending",
                "Delivered, unsettled events of the subscription in one partition.",
                &["stream", "subscription", "partition"],
            )?,
        })
    }
}

/// gRPC server metrics, recorded by [`crate::grpc::MetricsLayer`].
#[derive(Debug, Clone)]
pub struct GrpcMetrics {
    /// Finished calls by method and status code.
    pub requests: IntCounterVec,
    /// Call duration by method (streams: their lifetime).
    pub duration: HistogramVec,
}

impl GrpcMetrics {
    /// Registers the gRPC metrics in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        Ok(Self {
            requests: counter(
                registry,
                "eventflow_grpc_requests_total",
                "gRPC calls by method and status code.",
                &["method", "code"],
            )?,
            duration: histogram(
                registry,
                "eventflow_grpc_request_duration_seconds",
                "gRPC call duration.",
                &["method"],
            )?,
        })
    }
}
