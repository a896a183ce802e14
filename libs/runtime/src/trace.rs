//! Messaging spans, per the OpenTelemetry messaging semantic conventions, and W3C trace
//! context carried inside events (CloudEvents Distributed Tracing extension: `traceparent`,
//! `tracestate` attributes).
//!
//! Without an exporter no spans are made, but a caller's context (gRPC metadata) is still
//! written into events that carry none, so consumers join the caller's trace.
//!
//! Relations: Publish makes a PRODUCER span per event whose parent is the event's own context
//! (if the producer set one) or the incoming gRPC context, and writes its context into the
//! event. Every later span of the event (each delivery attempt, ack, nack, reject,
//! dead-letter) is a child of that event context, on whatever replica it happens, so one trace
//! shows producer -> broker -> consumer. The consumer's own spans use the same context.
//!
//! Whether trace context is valid is decided by `eventflow_tracecontext` alone (publish refuses
//! malformed values with the same rules); the OpenTelemetry propagator only turns a value that
//! passed into a [`Context`]. What is stored beside an event and put into ack ids is the
//! traceparent's compact 55-character form.

use std::collections::HashMap;

use eventflow_proto::v1::{
    CloudEvent,
    cloud_event::{CloudEventAttributeValue, cloud_event_attribute_value::Attr},
};
use opentelemetry::{
    Context, KeyValue, global,
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::{Span, SpanKind, Status, TraceContextExt, Tracer},
};

use eventflow_tracecontext::{compact_traceparent, validate_tracestate};
use opentelemetry_sdk::propagation::TraceContextPropagator;

use crate::telemetry::tracing_enabled;

/// The W3C trace-context format, the one eventflow speaks (used directly, so context flows
/// whether or not a global propagator was installed).
static W3C: std::sync::LazyLock<TraceContextPropagator> = std::sync::LazyLock::new(TraceContextPropagator::new);

/// `messaging.system` of every span.
pub const MESSAGING_SYSTEM: &str = "eventflow";

/// The W3C context in gRPC request metadata (the caller's span), or an empty context.
pub fn from_metadata(metadata: &http::HeaderMap) -> Context {
    W3C.extract(&HeaderExtractor(metadata))
}

/// The context an event carries in its `traceparent`/`tracestate` attributes, if it carries a
/// valid one (an invalid `tracestate` is left out; it does not void the `traceparent`).
pub fn from_event(event: &CloudEvent) -> Option<Context> {
    let traceparent = compact_traceparent(string_attr(event, "traceparent")?)?;
    let mut carrier = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    if let Some(state) = string_attr(event, "tracestate").filter(|s| validate_tracestate(s).is_ok()) {
        carrier.insert("tracestate".into(), state.into());
    }
    from_traceparent(&carrier)
}

/// The context of a bare `traceparent` (as kept in ack ids and stream entries), if valid.
pub fn from_traceparent_str(traceparent: &str) -> Option<Context> {
    let traceparent = compact_traceparent(traceparent)?;
    from_traceparent(&HashMap::from([("traceparent".to_string(), traceparent.to_string())]))
}

fn from_traceparent(carrier: &HashMap<String, String>) -> Option<Context> {
    let cx = W3C.extract(carrier);
    cx.span().span_context().is_valid().then_some(cx)
}

/// Starts the PRODUCER span of publishing `event` to `stream` and, unless the producer set its
/// own `traceparent`, writes the span's context into the event. Returns the span (ended by
/// the caller once the event is stored) and the event's `traceparent` to store beside it (its
/// compact form; empty if it has none).
pub fn start_publish(
    event: &mut CloudEvent,
    stream: &str,
    request_cx: &Context,
) -> (Option<global::BoxedSpan>, String) {
    let own = from_event(event);
    if !tracing_enabled() {
        // No spans of our own, but the caller's context still travels inside the event.
        if own.is_none() && request_cx.span().span_context().is_valid() {
            inject(request_cx, event);
        }
        return (None, stored_traceparent(event));
    }
    let parent = own.clone().unwrap_or_else(|| request_cx.clone());
    let span = global::tracer("eventflow")
        .span_builder(format!("publish {stream}"))
        .with_kind(SpanKind::Producer)
        .with_attributes([
            KeyValue::new("messaging.system", MESSAGING_SYSTEM),
            KeyValue::new("messaging.destination.name", stream.to_string()),
            KeyValue::new("messaging.operation.name", "publish"),
            KeyValue::new("messaging.operation.type", "send"),
            KeyValue::new("cloudevents.event_id", event.id.clone()),
            KeyValue::new("cloudevents.event_type", event.r#type.clone()),
        ])
        .start_with_context(&global::tracer("eventflow"), &parent);
    if own.is_none() {
        inject(&parent.with_remote_span_context(span.span_context().clone()), event);
    }
    (Some(span), stored_traceparent(event))
}

/// Starts the CLIENT span of pushing `event` (delivered from `stream`'s `subscription`, entry
/// `message_id`) to an HTTP endpoint, a child of the event's context, and returns it (ended by
/// the caller with the response) with the W3C headers that continue the trace at the
/// receiver: the span's context, or without tracing the event's own `traceparent` and
/// `tracestate`, so the receiver joins the event's trace either way. No headers when the
/// event carries no valid context.
pub fn start_push(
    event: &CloudEvent,
    stream: &str,
    subscription: &str,
    message_id: &str,
) -> (Option<global::BoxedSpan>, Vec<(&'static str, String)>) {
    let Some(parent) = from_event(event) else { return (None, Vec::new()) };
    let (span, cx) = if tracing_enabled() {
        let tracer = global::tracer("eventflow");
        let mut attrs = attributes(stream, subscription, message_id, "push", "deliver");
        attrs.push(KeyValue::new("cloudevents.event_id", event.id.clone()));
        let span = tracer
            .span_builder(format!("push {stream}"))
            .with_kind(SpanKind::Client)
            .with_attributes(attrs)
            .start_with_context(&tracer, &parent);
        let cx = parent.with_remote_span_context(span.span_context().clone());
        (Some(span), cx)
    } else {
        (None, parent)
    };
    (span, w3c_headers(&cx))
}

/// The W3C headers (`traceparent`, `tracestate`) of `cx`.
fn w3c_headers(cx: &Context) -> Vec<(&'static str, String)> {
    let mut carrier = HashMap::new();
    W3C.inject_context(cx, &mut carrier);
    ["traceparent", "tracestate"]
        .into_iter()
        .filter_map(|name| carrier.remove(name).filter(|v| !v.is_empty()).map(|v| (name, v)))
        .collect()
}

/// The compact form of the event's traceparent, or empty: what is stored beside the event.
fn stored_traceparent(event: &CloudEvent) -> String {
    string_attr(event, "traceparent").and_then(compact_traceparent).unwrap_or_default().to_string()
}

/// Writes `cx` into the event's `traceparent`/`tracestate` attributes.
fn inject(cx: &Context, event: &mut CloudEvent) {
    let mut carrier = HashMap::new();
    W3C.inject_context(cx, &mut carrier);
    for (key, value) in carrier {
        event.attributes.insert(key, CloudEventAttributeValue { attr: Some(Attr::CeString(value)) });
    }
}

/// Records one span of the event's life after publish (`deliver`, `ack`, `nack`, `reject`,
/// `dead_letter`) as a child of the event's context. No-op without tracing or context.
pub fn record(
    operation: &str,
    stream: &str,
    subscription: &str,
    message_id: &str,
    traceparent: Option<&str>,
    extra: Vec<KeyValue>,
) {
    if !tracing_enabled() {
        return;
    }
    let Some(parent) = traceparent.and_then(from_traceparent_str) else { return };
    let (kind, op_type) = match operation {
        "deliver" => (SpanKind::Consumer, "deliver"),
        _ => (SpanKind::Internal, "settle"),
    };
    let mut attrs = attributes(stream, subscription, message_id, operation, op_type);
    attrs.extend(extra);
    let tracer = global::tracer("eventflow");
    let mut span = tracer
        .span_builder(format!("{operation} {stream}"))
        .with_kind(kind)
        .with_attributes(attrs)
        .start_with_context(&tracer, &parent);
    if operation == "dead_letter" || operation == "reject" {
        span.set_status(Status::error(operation.to_string()));
    }
    span.end();
}

/// Semantic-convention attributes of a span after publish (`messaging.message.id` is the
/// stream entry id, as on the publish span once the event is stored).
fn attributes(stream: &str, subscription: &str, message_id: &str, name: &str, op_type: &str) -> Vec<KeyValue> {
    vec![
        KeyValue::new("messaging.system", MESSAGING_SYSTEM),
        KeyValue::new("messaging.destination.name", stream.to_string()),
        KeyValue::new("messaging.operation.name", name.to_string()),
        KeyValue::new("messaging.operation.type", op_type.to_string()),
        KeyValue::new("messaging.message.id", message_id.to_string()),
        KeyValue::new("messaging.consumer.group.name", subscription.to_string()),
    ]
}

/// A string-valued attribute of an event.
fn string_attr<'a>(event: &'a CloudEvent, name: &str) -> Option<&'a str> {
    match event.attributes.get(name)?.attr.as_ref()? {
        Attr::CeString(s) | Attr::CeUri(s) | Attr::CeUriRef(s) => Some(s),
        _ => None,
    }
}

/// Reads W3C headers from HTTP/2 (gRPC) headers.
struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Writes W3C headers into HTTP/2 (gRPC) headers (clients propagating context).
pub struct HeaderInjector<'a>(pub &'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (http::HeaderName::try_from(key), http::HeaderValue::try_from(value)) {
            self.0.insert(name, value);
        }
    }
}
