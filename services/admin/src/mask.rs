//! Field-mask updates: copy the masked fields of the request's message onto the stored settings.
//! Unset masked fields take their defaults, as on create.

use eventflow_broker::{BrokerError, StreamConfig, SubscriptionConfig};
use eventflow_proto::v1;

use crate::convert::{stream_from_proto, subscription_from_proto};

/// The paths of an update mask; an empty mask is an error (updating nothing is a client bug).
fn paths(mask: Option<&prost_types::FieldMask>) -> Result<&[String], BrokerError> {
    match mask {
        Some(m) if !m.paths.is_empty() => Ok(&m.paths),
        _ => Err(BrokerError::invalid("update_mask", "required: name the fields to update")),
    }
}

fn unknown(path: &str) -> BrokerError {
    BrokerError::invalid("update_mask", format!("unknown or read-only path {path:?}"))
}

/// `current` with the masked fields of `update` applied.
pub fn apply_stream(
    mut current: StreamConfig,
    update: &v1::Stream,
    mask: Option<&prost_types::FieldMask>,
) -> Result<StreamConfig, BrokerError> {
    let incoming = stream_from_proto(update)?;
    for path in paths(mask)? {
        match path.as_str() {
            "retention" => {
                (current.max_len, current.max_age, current.unsettled) =
                    (incoming.max_len, incoming.max_age, incoming.unsettled);
            }
            "retention.max_length" => current.max_len = incoming.max_len,
            "retention.unsettled_events" => current.unsettled = incoming.unsettled,
            "retention.max_age" => current.max_age = incoming.max_age,
            "dedup_window" => current.dedup_window = incoming.dedup_window,
            // Fixed at creation: the broker refuses a change (INVALID_ARGUMENT).
            "partitions" => current.partitions = incoming.partitions,
            other => return Err(unknown(other)),
        }
    }
    Ok(current)
}

/// `current` with the masked fields of `update` applied.
pub fn apply_subscription(
    mut current: SubscriptionConfig,
    update: &v1::Subscription,
    mask: Option<&prost_types::FieldMask>,
) -> Result<SubscriptionConfig, BrokerError> {
    let incoming = subscription_from_proto(update)?;
    for path in paths(mask)? {
        match path.as_str() {
            "ack_deadline_seconds" => current.ack_deadline = incoming.ack_deadline,
            "retry_policy" => (current.min_backoff, current.max_backoff) = (incoming.min_backoff, incoming.max_backoff),
            "retry_policy.minimum_backoff" => current.min_backoff = incoming.min_backoff,
            "retry_policy.maximum_backoff" => current.max_backoff = incoming.max_backoff,
            "dead_letter_policy" | "dead_letter_policy.max_delivery_attempts" => {
                current.max_delivery_attempts = incoming.max_delivery_attempts;
            }
            "event_type_filter" => current.event_type_filter = incoming.event_type_filter.clone(),
            "circuit_breaker" => current.breaker = incoming.breaker.clone(),
            // Fixed at creation: the broker refuses a change (FAILED_PRECONDITION).
            "ordered" => current.ordered = incoming.ordered,
            // The whole push config at once; an empty secret keeps the stored one, a new one
            // rotates (see `PushConfig::updated_by`); unset turns it into a pull subscription.
            "push_config" => {
                current.push = match (&current.push, incoming.push.clone()) {
                    (Some(stored), Some(new)) => Some(stored.updated_by(new, now_ms())),
                    (_, new) => new,
                };
            }
            other => return Err(unknown(other)),
        }
    }
    Ok(current)
}

/// Now, ms since the epoch (when a rotated secret's window starts).
fn now_ms() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    u64::try_from(now.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
        Some(prost_types::FieldMask { paths: paths.iter().map(|p| p.to_string()).collect() })
    }

    #[test]
    fn only_masked_stream_fields_change() {
        let mut current = StreamConfig::new("s");
        current.max_len = 5;
        let update = v1::Stream {
            name: "s".into(),
            retention: Some(v1::RetentionPolicy { max_length: 9, ..Default::default() }),
            dedup_window: Some(prost_types::Duration { seconds: 1, nanos: 0 }),
            ..Default::default()
        };
        let out = apply_stream(current.clone(), &update, mask(&["dedup_window"]).as_ref()).unwrap();
        assert_eq!((out.max_len, out.dedup_window), (5, Duration::from_secs(1)));
        let out = apply_stream(current.clone(), &update, mask(&["retention.max_length"]).as_ref()).unwrap();
        assert_eq!((out.max_len, out.dedup_window), (9, current.dedup_window));
        assert!(apply_stream(current.clone(), &update, None).is_err());
        let err = apply_stream(current, &update, mask(&["name"]).as_ref()).unwrap_err();
        assert!(err.to_string().contains("update_mask"));
    }

    #[test]
    fn only_masked_subscription_fields_change() {
        let current = SubscriptionConfig::new("s", "n");
        let update =
            v1::Subscription { stream: "s".into(), name: "n".into(), ack_deadline_seconds: 7, ..Default::default() };
        let out = apply_subscription(current.clone(), &update, mask(&["ack_deadline_seconds"]).as_ref()).unwrap();
        assert_eq!(out.ack_deadline, Duration::from_secs(7));
        assert_eq!(out.max_delivery_attempts, current.max_delivery_attempts);
    }
}
