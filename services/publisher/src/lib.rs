//! The publisher service: validates CloudEvents and appends them to streams through the broker,
//! idempotent by event id, one result per event.
//!
//! Its metrics carry a `stream` label only for a stream known to exist (the request stored its
//! events, or found the stream): the events of a Publish to a stream that does not exist, or
//! with an invalid stream name, count as `eventflow_publish_rejected_total{stream="unknown",
//! reason="unknown_stream"}`, so made-up stream names cannot add series.

use std::{net::SocketAddr, time::Instant};

use eventflow_broker::{Broker, BrokerError, NewEvent};
use eventflow_proto::{
    prost::Message,
    v1::{
        CloudEvent, EventError, PublishRequest, PublishResponse, PublishResult,
        publisher_service_server::{PublisherService, PublisherServiceServer},
    },
    validate::validate_event,
};
use eventflow_runtime::{
    CancellationToken,
    auth::{Service, authorize},
    config::{Basics, CommonArgs},
    metrics::EventMetrics,
    serve::{Listeners, ServeError, Served, run_service},
    status::to_status,
    trace,
};
use opentelemetry::{KeyValue, global::BoxedSpan, trace::Span};
use tonic::{Code, Request, Response, Status, service::Routes, service::interceptor::InterceptedService};

/// The gRPC service name, as health reports it.
pub const SERVICE_NAME: &str = "eventflow.v1.PublisherService";
/// Most events in one Publish request.
pub const MAX_EVENTS_PER_REQUEST: usize = 1000;
/// The `stream` label of events published to a stream that does not exist.
pub const UNKNOWN_STREAM: &str = "unknown";

/// Configuration of the publisher binary.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "eventflow-publisher",
    version,
    about = "eventflow PublisherService: validated, idempotent appends of CloudEvents to Redis streams"
)]
pub struct Config {
    /// Redis and authentication settings.
    #[command(flatten)]
    pub common: CommonArgs,
    /// gRPC listen address.
    #[arg(long, env = "EVENTFLOW_GRPC_ADDR", default_value = "0.0.0.0:50051")]
    pub grpc_addr: SocketAddr,
    /// Plain-HTTP listen address of Prometheus `/metrics` and of the probes `/healthz`
    /// (liveness) and `/readyz` (readiness).
    #[arg(long, env = "EVENTFLOW_METRICS_ADDR", default_value = "0.0.0.0:9091")]
    pub metrics_addr: SocketAddr,
    /// Largest encoded event accepted, in bytes; larger events get RESOURCE_EXHAUSTED.
    #[arg(long, env = "EVENTFLOW_MAX_EVENT_BYTES", default_value_t = 1 << 20)]
    pub max_event_bytes: usize,
    /// Most bytes of events this replica holds queued or being written to Redis at once (at
    /// least --max-event-bytes). A Publish waits for room up to the Redis timeout, then gets
    /// RESOURCE_EXHAUSTED; one carrying more than this in all is refused at once. Bounds memory
    /// when Redis is slower than the producers.
    #[arg(long, env = "EVENTFLOW_MAX_PUBLISH_BYTES_IN_FLIGHT", default_value_t = 64 << 20)]
    pub max_publish_bytes_in_flight: usize,
}

/// Serves the publisher on `listeners` until `shutdown`; in-flight publishes finish first.
pub async fn run(config: Config, listeners: Listeners, shutdown: CancellationToken) -> Result<(), ServeError> {
    if config.max_publish_bytes_in_flight < config.max_event_bytes {
        return Err(ServeError::Config(format!(
            "--max-publish-bytes-in-flight ({}) must be at least --max-event-bytes ({})",
            config.max_publish_bytes_in_flight, config.max_event_bytes
        )));
    }
    let budget = config.max_publish_bytes_in_flight;
    let Basics { broker, auth, registry, metrics } =
        config.common.basics_with(|options| options.max_publish_bytes_in_flight = budget)?;
    let handler = Publisher { broker: broker.clone(), max_event_bytes: config.max_event_bytes, metrics };
    let max_request = config.max_event_bytes.saturating_mul(4).max(4 << 20);
    let service = PublisherServiceServer::new(handler).max_decoding_message_size(max_request);
    let routes = Routes::new(InterceptedService::new(service, auth.interceptor(Service::Publish)));
    let served = Served { routes, name: SERVICE_NAME, auth };
    run_service(listeners, served, broker, registry, &config.common.server, shutdown).await
}

/// The PublisherService handler.
#[derive(Debug, Clone)]
pub struct Publisher {
    /// Where events go.
    broker: Broker,
    /// Largest encoded event accepted.
    max_event_bytes: usize,
    /// Where published, duplicate and refused events are counted.
    metrics: EventMetrics,
}

#[tonic::async_trait]
impl PublisherService for Publisher {
    async fn publish(&self, request: Request<PublishRequest>) -> Result<Response<PublishResponse>, Status> {
        authorize(&request, Service::Publish, &request.get_ref().stream, None)?;
        let PublishRequest { stream, events } = request.into_inner();
        if let Err(e) = eventflow_broker::validate_name("stream", &stream) {
            self.count_unknown_stream(events.len());
            return Err(to_status(e));
        }
        if events.is_empty() {
            return Err(Status::invalid_argument("events: must not be empty"));
        }
        if events.len() > MAX_EVENTS_PER_REQUEST {
            return Err(Status::invalid_argument(format!("events: more than {MAX_EVENTS_PER_REQUEST}")));
        }
        let started = Instant::now();
        let request_cx = opentelemetry::Context::current();
        let total = events.len();
        let mut results = vec![PublishResult::default(); total];
        let mut accepted = Vec::with_capacity(total);
        let mut slots = Vec::with_capacity(total);
        let mut spans = Vec::new();
        let mut rejected = Vec::new();
        for (i, event) in events.into_iter().enumerate() {
            match self.prepare(event, i, &stream, &request_cx) {
                Ok((new, span)) => {
                    results[i].event_id = new.id.clone();
                    accepted.push(new);
                    slots.push(i);
                    spans.push(span);
                }
                Err((event_id, error, reason)) => {
                    results[i].event_id = event_id;
                    results[i].error = Some(error);
                    rejected.push(reason);
                }
            }
        }
        let published = if accepted.is_empty() {
            // Nothing to store; still tell the caller if the stream itself is wrong.
            self.broker.get_stream(&stream).await.map(|_| Vec::new())
        } else {
            self.broker.publish(&stream, accepted).await
        };
        if let Ok(outcomes) = &published {
            for (span, outcome) in spans.iter_mut().zip(outcomes) {
                if let Some(span) = span {
                    span.set_attribute(KeyValue::new("messaging.message.id", outcome.entry_id.clone()));
                }
            }
        }
        end_spans(spans.into_iter().flatten(), published.as_ref().err().map(|e| e as &dyn std::fmt::Display));
        let published = match published {
            Ok(published) => published,
            Err(e) => {
                if matches!(e, BrokerError::NotFound(_)) {
                    self.count_unknown_stream(total);
                }
                return Err(to_status(e));
            }
        };
        // The stream exists: its name is a bounded label from here on.
        for reason in rejected {
            self.metrics.publish_rejected.with_label_values(&[&stream, reason]).inc();
        }
        self.metrics.publish_duration.with_label_values(&[&stream]).observe(started.elapsed().as_secs_f64());
        for (slot, outcome) in slots.into_iter().zip(published) {
            let counter = if outcome.duplicate { &self.metrics.duplicates } else { &self.metrics.published };
            counter.with_label_values(&[&stream]).inc();
            results[slot].entry_id = outcome.entry_id;
            results[slot].duplicate = outcome.duplicate;
        }
        Ok(Response::new(PublishResponse { results }))
    }
}

impl Publisher {
    /// Counts the `events` of a Publish refused because its stream does not exist (or its name
    /// is invalid), under the fixed label [`UNKNOWN_STREAM`].
    fn count_unknown_stream(&self, events: usize) {
        let counter = self.metrics.publish_rejected.with_label_values(&[UNKNOWN_STREAM, "unknown_stream"]);
        counter.inc_by(u64::try_from(events).unwrap_or(u64::MAX));
    }

    /// Validates event `index`, assigns an id if it has none, starts its PRODUCER span (writing
    /// the trace context into it), encodes it and checks its size. On failure returns the event
    /// id, the per-event error and the `reason` label it counts under once the stream is known
    /// to exist.
    fn prepare(
        &self,
        mut event: CloudEvent,
        index: usize,
        stream: &str,
        request_cx: &opentelemetry::Context,
    ) -> Result<(NewEvent, Option<BoxedSpan>), (String, EventError, &'static str)> {
        if let Err(e) = validate_event(&event, index) {
            return Err((event.id, event_error(Code::InvalidArgument, e.reason, e.field), "invalid"));
        }
        if event.id.is_empty() {
            event.id = uuid::Uuid::now_v7().to_string();
        }
        let (span, traceparent) = trace::start_publish(&mut event, stream, request_cx);
        let payload = event.encode_to_vec();
        if payload.len() > self.max_event_bytes {
            end_spans(span, Some(&"too large"));
            let reason = format!("encoded event is {} bytes; the limit is {}", payload.len(), self.max_event_bytes);
            let error = event_error(Code::ResourceExhausted, reason, format!("events[{index}]"));
            return Err((event.id, error, "too_large"));
        }
        Ok((NewEvent { id: event.id, event_type: event.r#type, payload, traceparent }, span))
    }
}

/// Ends PRODUCER spans, marking them failed if the events were not stored.
fn end_spans(spans: impl IntoIterator<Item = BoxedSpan>, error: Option<&dyn std::fmt::Display>) {
    for mut span in spans {
        if let Some(e) = error {
            span.set_status(opentelemetry::trace::Status::error(e.to_string()));
        }
        span.end();
    }
}

/// A per-event error of a publish result.
fn event_error(code: Code, message: String, field: String) -> EventError {
    EventError { code: code as i32, message: format!("{field}: {message}"), field }
}
