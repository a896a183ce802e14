//! JSON views of API messages for `--output json`. Field names are the proto field names;
//! durations are protobuf-JSON strings (`"600s"`, `"0.500s"`), timestamps RFC 3339 UTC, unset
//! messages `null`, enums their short names (`"CLOSED"`). Events use the CloudEvents JSON
//! format (see [`crate::event`]).

use eventflow_proto::v1::{
    BreakerState, CircuitBreakerPolicy, ConsumerStats, ContentMode, DeadLetter, PartitionStats, PushConfig,
    ReceivedEvent, Stream, StreamStats, Subscription, SubscriptionStats,
};
use prost_types::{Duration, Timestamp};
use serde_json::{Value, json};

use crate::{event, time};

/// A duration as protobuf JSON (`"1.500s"`), or null.
pub fn duration(d: Option<&Duration>) -> Value {
    match d {
        Some(d) if d.nanos == 0 => Value::String(format!("{}s", d.seconds)),
        Some(d) => Value::String(format!("{}.{:03}s", d.seconds, d.nanos / 1_000_000)),
        None => Value::Null,
    }
}

/// A timestamp in RFC 3339 UTC, or null.
pub fn timestamp(t: Option<&Timestamp>) -> Value {
    t.map_or(Value::Null, |t| Value::String(time::format_rfc3339(t)))
}

/// A stream's configuration.
pub fn stream(s: &Stream) -> Value {
    let retention = s.retention.as_ref().map_or(Value::Null, |r| {
        json!({
            "max_length": r.max_length,
            "max_age": duration(r.max_age.as_ref()),
            "unsettled_events": unsettled_events(r.unsettled_events),
        })
    });
    json!({
        "name": s.name,
        "retention": retention,
        "dedup_window": duration(s.dedup_window.as_ref()),
        "partitions": s.partitions.max(1),
        "create_time": timestamp(s.create_time.as_ref()),
    })
}

/// A subscription's configuration.
pub fn subscription(s: &Subscription) -> Value {
    let retry = s.retry_policy.as_ref().map_or(Value::Null, |r| {
        json!({
            "minimum_backoff": duration(r.minimum_backoff.as_ref()),
            "maximum_backoff": duration(r.maximum_backoff.as_ref()),
        })
    });
    let dead_letter = s
        .dead_letter_policy
        .as_ref()
        .map_or(Value::Null, |d| json!({ "max_delivery_attempts": d.max_delivery_attempts }));
    json!({
        "stream": s.stream,
        "name": s.name,
        "ack_deadline_seconds": s.ack_deadline_seconds,
        "retry_policy": retry,
        "dead_letter_policy": dead_letter,
        "event_type_filter": s.event_type_filter,
        "circuit_breaker": s.circuit_breaker.as_ref().map_or(Value::Null, breaker),
        "push_config": s.push_config.as_ref().map_or(Value::Null, push),
        "ordered": s.ordered,
        "create_time": timestamp(s.create_time.as_ref()),
    })
}

/// A push config (its secret is write-only: never shown).
fn push(p: &PushConfig) -> Value {
    json!({
        "endpoint": p.endpoint,
        "timeout": duration(p.timeout.as_ref()),
        "max_concurrency": p.max_concurrency,
        "content_mode": ContentMode::try_from(p.content_mode).map_or("UNKNOWN", |m| m.as_str_name()),
        "rotation_window": duration(p.rotation_window.as_ref()),
        "previous_secret_expire_time": timestamp(p.previous_secret_expire_time.as_ref()),
    })
}

/// A circuit-breaker policy.
fn breaker(b: &CircuitBreakerPolicy) -> Value {
    json!({
        "enabled": b.enabled,
        "failure_ratio": b.failure_ratio,
        "minimum_requests": b.minimum_requests,
        "window": duration(b.window.as_ref()),
        "open_duration": duration(b.open_duration.as_ref()),
        "half_open_probes": b.half_open_probes,
    })
}

/// The short name of a breaker state: `CLOSED`, `OPEN`, `HALF_OPEN`, or `-` without a breaker.
pub fn breaker_state(state: i32) -> String {
    match BreakerState::try_from(state) {
        Ok(BreakerState::Unspecified) => "-".into(),
        Ok(s) => s.as_str_name().trim_start_matches("BREAKER_STATE_").to_string(),
        Err(_) => format!("UNKNOWN({state})"),
    }
}

/// A stream's statistics with each subscription's.
pub fn stats(s: &StreamStats) -> Value {
    json!({
        "stream": s.stream,
        "length": s.length,
        "first_entry_id": s.first_entry_id,
        "last_entry_id": s.last_entry_id,
        "subscriptions": s.subscriptions.iter().map(subscription_stats).collect::<Vec<_>>(),
        "partitions": s.partitions.iter().map(partition_stats).collect::<Vec<_>>(),
    })
}

/// One partition's statistics.
pub fn partition_stats(p: &PartitionStats) -> Value {
    json!({
        "partition": p.partition,
        "length": p.length,
        "first_entry_id": p.first_entry_id,
        "last_entry_id": p.last_entry_id,
        "subscriptions": p.subscriptions.iter().map(subscription_stats).collect::<Vec<_>>(),
    })
}

/// What retention does with unsettled events, as shown: `dead_letter` or `drop`.
pub fn unsettled_events(action: i32) -> &'static str {
    match eventflow_proto::v1::UnsettledEventAction::try_from(action) {
        Ok(eventflow_proto::v1::UnsettledEventAction::Drop) => "drop",
        _ => "dead_letter",
    }
}

/// One subscription's statistics.
pub fn subscription_stats(s: &SubscriptionStats) -> Value {
    json!({
        "subscription": s.subscription,
        "lag": s.lag,
        "pending": s.pending,
        "redelivered": s.redelivered,
        "delayed": s.delayed,
        "redrive_pending": s.redrive_pending,
        "filtered": s.filtered,
        "retention_dead_lettered": s.retention_dead_lettered,
        "retention_dropped": s.retention_dropped,
        "dead_letters_overflowed": s.dead_letters_overflowed,
        "retention_hold": s.retention_hold,
        "last_delivered_entry_id": s.last_delivered_entry_id,
        "dead_letter_depth": s.dead_letter_depth,
        "breaker_state": breaker_state(s.breaker_state),
        "ordered_keys_blocked": s.ordered_keys_blocked,
        "ordered_events_waiting": s.ordered_events_waiting,
        "oldest_blocked_age": duration(s.oldest_blocked_age.as_ref()),
        "consumers": s.consumers.iter().map(consumer).collect::<Vec<_>>(),
    })
}

/// One consumer of a subscription.
fn consumer(c: &ConsumerStats) -> Value {
    json!({ "name": c.name, "pending": c.pending, "idle": duration(c.idle.as_ref()) })
}

/// A dead letter with its event.
pub fn dead_letter(d: &DeadLetter) -> Value {
    json!({
        "id": d.id,
        "stream": d.stream,
        "entry_id": d.entry_id,
        "subscription": d.subscription,
        "delivery_attempts": d.delivery_attempts,
        "reason": d.reason,
        "consumer": d.consumer,
        "ordering_key": d.ordering_key,
        "dead_letter_time": timestamp(d.dead_letter_time.as_ref()),
        "publish_time": timestamp(d.publish_time.as_ref()),
        "event": d.event.as_ref().map_or(Value::Null, event::to_json),
    })
}

/// One delivery of an event, as `tail --output json` prints it.
pub fn received(r: &ReceivedEvent) -> Value {
    json!({
        "entry_id": r.entry_id,
        "partition": r.partition,
        "ack_id": r.ack_id,
        "delivery_attempt": r.delivery_attempt,
        "publish_time": timestamp(r.publish_time.as_ref()),
        "event": r.event.as_ref().map_or(Value::Null, event::to_json),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_follow_protobuf_json() {
        assert_eq!(duration(Some(&Duration { seconds: 600, nanos: 0 })), json!("600s"));
        assert_eq!(duration(Some(&Duration { seconds: 1, nanos: 500_000_000 })), json!("1.500s"));
        assert_eq!(duration(None), Value::Null);
    }

    #[test]
    fn breaker_states_are_short() {
        assert_eq!(breaker_state(BreakerState::HalfOpen as i32), "HALF_OPEN");
        assert_eq!(breaker_state(0), "-");
    }
}
