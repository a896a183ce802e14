//! The ingest step: how CloudEvents from any producer path (the Publish RPC, a stream of
//! publishes, an outbox relay) become stored stream entries, with one result per event.
//!
//! For each event, in order: validate it ([`validate_event`]), give it a UUIDv7 id if it has
//! none, start its PRODUCER span and write the trace context into the event ([`trace`]),
//! encode it, check its encoded size. Events that fail get a per-event error and are not
//! stored; the others go to the broker in one atomic, deduplicated append
//! ([`Broker::publish`]). Only a failure of the whole call (the stream does not exist, Redis
//! cannot serve, the byte budget is exhausted) is an `Err`.
//!
//! Its metrics carry a `stream` label only for a stream known to exist (the call stored its
//! events, or found the stream): events sent to a stream that does not exist, or with an invalid
//! stream name, count as `eventflow_publish_rejected_total{stream="unknown",
//! reason="unknown_stream"}`, so made-up stream names cannot add series.

use std::time::Instant;

use eventflow_broker::{Broker, BrokerError, NewEvent, Order, PendingPublish, validate_name};
use eventflow_proto::{
    prost::Message,
    v1::{CloudEvent, EventError, PublishResult},
    validate::validate_event,
};
use opentelemetry::{Context, KeyValue, global::BoxedSpan, trace::Span};
use tonic::Code;

use crate::{metrics::EventMetrics, trace};

/// Most events in one call.
pub const MAX_EVENTS_PER_CALL: usize = 1000;
/// The `stream` label of events published to a stream that does not exist.
pub const UNKNOWN_STREAM: &str = "unknown";

/// Turns CloudEvents into stored entries; see the module doc. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Ingest {
    /// Where events go.
    broker: Broker,
    /// Largest encoded event accepted; larger ones get RESOURCE_EXHAUSTED.
    max_event_bytes: usize,
    /// Where published, duplicate and refused events are counted.
    metrics: EventMetrics,
}

/// An event ready to store, with its span and the slot of its result.
struct Accepted {
    event: NewEvent,
    span: Option<BoxedSpan>,
    slot: usize,
}

/// A call begun by [`Ingest::begin`]: its events are queued; [`Pending::finish`] awaits them.
pub struct Pending {
    /// Where the outcome is counted.
    ingest: Ingest,
    /// The stream the events go to.
    stream: String,
    /// One per event; the refused ones already carry their error.
    results: Vec<PublishResult>,
    /// The events queued (their payloads moved to the broker), with their spans and slots.
    accepted: Vec<Accepted>,
    /// The `reason` label of each refused event, counted once the stream is known to exist.
    rejected: Vec<&'static str>,
    /// When the call began, for `eventflow_publish_duration_seconds`.
    started: Instant,
    /// The broker's handle on the queued events (`None` until queued).
    queued: Option<PendingPublish>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").field("stream", &self.stream).field("events", &self.results.len()).finish()
    }
}

impl Pending {
    /// One result per event once the accepted ones are stored; fails as a whole when the
    /// stream does not exist or Redis cannot store them (see [`Ingest::publish`]).
    pub async fn finish(mut self) -> Result<Vec<PublishResult>, BrokerError> {
        let outcome = match self.queued.take() {
            Some(queued) if !self.accepted.is_empty() => queued.outcome().await,
            // Nothing to store; still tell the caller if the stream itself is wrong.
            _ => self.ingest.broker.get_stream(&self.stream).await.map(|_| Vec::new()),
        };
        let published = match outcome {
            Ok(published) => published,
            Err(e) => return Err(self.failed(e)),
        };
        for (span, outcome) in self.accepted.iter_mut().filter_map(|a| a.span.as_mut()).zip(&published) {
            span.set_attribute(KeyValue::new("messaging.message.id", outcome.entry_id.clone()));
        }
        end_spans(self.accepted.iter_mut().filter_map(|a| a.span.take()), None);
        let (metrics, stream) = (&self.ingest.metrics, self.stream.as_str());
        // The stream exists: its name is a bounded label from here on.
        for reason in &self.rejected {
            metrics.publish_rejected.with_label_values(&[stream, reason]).inc();
        }
        metrics.publish_duration.with_label_values(&[stream]).observe(self.started.elapsed().as_secs_f64());
        let duplicates = published.iter().filter(|p| p.duplicate).count();
        // One label lookup per counter and call, not per event.
        for (counter, n) in [(&metrics.published, published.len() - duplicates), (&metrics.duplicates, duplicates)] {
            if n > 0 {
                counter.with_label_values(&[stream]).inc_by(u64::try_from(n).unwrap_or(u64::MAX));
            }
        }
        for (accepted, outcome) in self.accepted.iter().zip(published) {
            let result = &mut self.results[accepted.slot];
            result.entry_id = outcome.entry_id;
            result.duplicate = outcome.duplicate;
            result.partition = i32::try_from(outcome.partition).unwrap_or(i32::MAX);
        }
        Ok(self.results)
    }

    /// Ends the spans of a call that stored nothing, counting its events as `unknown_stream`
    /// when the stream does not exist, and gives back `error`.
    fn failed(mut self, error: BrokerError) -> BrokerError {
        end_spans(self.accepted.iter_mut().filter_map(|a| a.span.take()), Some(&error));
        if let BrokerError::NotFound(_) = &error {
            self.ingest.count_unknown_stream(self.results.len());
        }
        error
    }
}

impl Ingest {
    /// An ingest step storing through `broker`.
    pub fn new(broker: Broker, max_event_bytes: usize, metrics: EventMetrics) -> Self {
        Self { broker, max_event_bytes, metrics }
    }

    /// Stores `events` in `stream`, in order; `parent` is the producer's trace context (used
    /// for events that carry none). Returns one result per event: its id, and its entry id and
    /// duplicate flag, or why it was refused.
    pub async fn publish(
        &self,
        stream: &str,
        events: Vec<CloudEvent>,
        parent: &Context,
    ) -> Result<Vec<PublishResult>, BrokerError> {
        self.begin(stream, events, parent, Order::Any).await?.finish().await
    }

    /// The first half of [`Ingest::publish`]: prepares `events` and queues the accepted ones,
    /// returning once they are queued. With [`Order::Kept`], calls to one stream are stored in
    /// the order they were begun, so a producer that needs order begins them one after the
    /// other and finishes them later (see `eventflow_broker`'s publish module).
    pub async fn begin(
        &self,
        stream: &str,
        events: Vec<CloudEvent>,
        parent: &Context,
        order: Order,
    ) -> Result<Pending, BrokerError> {
        if let Err(e) = validate_name("stream", stream) {
            self.count_unknown_stream(events.len());
            return Err(e);
        }
        check_count(events.len())?;
        let started = Instant::now();
        let total = events.len();
        let mut results = vec![PublishResult::default(); total];
        let mut accepted = Vec::with_capacity(total);
        let mut rejected = Vec::new();
        for (slot, event) in events.into_iter().enumerate() {
            match self.prepare(event, slot, stream, parent) {
                Ok((event, span)) => {
                    results[slot].event_id = event.id.clone();
                    accepted.push(Accepted { event, span, slot });
                }
                Err((event_id, error, reason)) => {
                    results[slot].event_id = event_id;
                    results[slot].error = Some(error);
                    rejected.push(reason);
                }
            }
        }
        let events = accepted.iter_mut().map(|a| std::mem::take(&mut a.event)).collect();
        let mut pending = Pending {
            ingest: self.clone(),
            stream: stream.to_string(),
            results,
            accepted,
            rejected,
            started,
            queued: None,
        };
        match self.broker.enqueue_publish(stream, events, order).await {
            Ok(queued) => {
                pending.queued = Some(queued);
                Ok(pending)
            }
            Err(e) => Err(pending.failed(e)),
        }
    }

    /// Counts `events` refused because their stream does not exist (or its name is invalid),
    /// under the fixed label [`UNKNOWN_STREAM`].
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
        parent: &Context,
    ) -> Result<(NewEvent, Option<BoxedSpan>), (String, EventError, &'static str)> {
        if let Err(e) = validate_event(&event, index) {
            return Err((event.id, event_error(Code::InvalidArgument, e.reason, e.field), "invalid"));
        }
        if event.id.is_empty() {
            event.id = uuid::Uuid::now_v7().to_string();
        }
        let (span, traceparent) = trace::start_publish(&mut event, stream, parent);
        let payload = event.encode_to_vec();
        if payload.len() > self.max_event_bytes {
            end_spans(span, Some(&"too large"));
            let reason = format!("encoded event is {} bytes; the limit is {}", payload.len(), self.max_event_bytes);
            let error = event_error(Code::ResourceExhausted, reason, format!("events[{index}]"));
            return Err((event.id, error, "too_large"));
        }
        let ordering_key = eventflow_proto::validate::partition_key(&event).to_string();
        Ok((NewEvent { id: event.id, event_type: event.r#type, payload, traceparent, ordering_key }, span))
    }
}

/// Refuses a call of no events or of more than [`MAX_EVENTS_PER_CALL`].
fn check_count(events: usize) -> Result<(), BrokerError> {
    let invalid = |reason: String| Err(BrokerError::InvalidArgument { field: "events".into(), reason });
    match events {
        0 => invalid("must not be empty".into()),
        n if n > MAX_EVENTS_PER_CALL => invalid(format!("more than {MAX_EVENTS_PER_CALL}")),
        _ => Ok(()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_carries_one_to_a_thousand_events() {
        let message = |n| check_count(n).map_err(|e| e.to_string());
        assert_eq!(message(0), Err("invalid events: must not be empty".into()));
        assert_eq!(message(1), Ok(()));
        assert_eq!(message(MAX_EVENTS_PER_CALL), Ok(()));
        assert_eq!(message(MAX_EVENTS_PER_CALL + 1), Err("invalid events: more than 1000".into()));
    }
}
