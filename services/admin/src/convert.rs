//! Admin API messages <-> broker settings. Field paths in errors match the request messages.

use eventflow_broker::{BrokerError, Position, StreamConfig, SubscriptionConfig, model::DEFAULT_ACK_DEADLINE};
use eventflow_proto::{
    convert::{duration_from_proto, duration_to_proto, ms_from_timestamp, timestamp_from_ms},
    v1::{self, position::Position as Pos},
};
use std::time::Duration;

/// A stream's settings from its API message; unset fields get defaults.
pub fn stream_from_proto(stream: &v1::Stream) -> Result<StreamConfig, BrokerError> {
    let mut config = StreamConfig::new(stream.name.clone());
    if let Some(retention) = &stream.retention {
        config.max_len = u64::try_from(retention.max_length)
            .map_err(|_| BrokerError::invalid("stream.retention.max_length", "must not be negative"))?;
        if let Some(age) = &retention.max_age {
            config.max_age = duration("stream.retention.max_age", age)?;
        }
    }
    if let Some(window) = &stream.dedup_window {
        config.dedup_window = duration("stream.dedup_window", window)?;
    }
    Ok(config)
}

/// The API message of a stream's settings.
pub fn stream_to_proto(config: &StreamConfig) -> v1::Stream {
    v1::Stream {
        name: config.name.clone(),
        retention: Some(v1::RetentionPolicy {
            max_length: i64::try_from(config.max_len).unwrap_or(i64::MAX),
            max_age: (!config.max_age.is_zero()).then(|| duration_to_proto(config.max_age)),
        }),
        dedup_window: Some(duration_to_proto(config.dedup_window)),
        create_time: Some(timestamp_from_ms(config.created_ms)),
    }
}

/// A subscription's settings from its API message; unset or zero fields get defaults.
pub fn subscription_from_proto(sub: &v1::Subscription) -> Result<SubscriptionConfig, BrokerError> {
    let mut config = SubscriptionConfig::new(sub.stream.clone(), sub.name.clone());
    config.ack_deadline = match u64::try_from(sub.ack_deadline_seconds) {
        Ok(0) => DEFAULT_ACK_DEADLINE,
        Ok(s) => Duration::from_secs(s),
        Err(_) => return Err(BrokerError::invalid("subscription.ack_deadline_seconds", "must be 1 to 600")),
    };
    if let Some(retry) = &sub.retry_policy {
        if let Some(min) = &retry.minimum_backoff {
            config.min_backoff = duration("subscription.retry_policy.minimum_backoff", min)?;
        }
        if let Some(max) = &retry.maximum_backoff {
            config.max_backoff = duration("subscription.retry_policy.maximum_backoff", max)?;
        }
    }
    if let Some(dead_letter) = &sub.dead_letter_policy {
        match u32::try_from(dead_letter.max_delivery_attempts) {
            Ok(0) => {}
            Ok(n) => config.max_delivery_attempts = n,
            Err(_) => {
                return Err(BrokerError::invalid(
                    "subscription.dead_letter_policy.max_delivery_attempts",
                    "must not be negative",
                ));
            }
        }
    }
    config.event_type_filter.clone_from(&sub.event_type_filter);
    Ok(config)
}

/// The API message of a subscription's settings.
pub fn subscription_to_proto(config: &SubscriptionConfig) -> v1::Subscription {
    v1::Subscription {
        stream: config.stream.clone(),
        name: config.name.clone(),
        ack_deadline_seconds: i32::try_from(config.ack_deadline.as_secs()).unwrap_or(i32::MAX),
        retry_policy: Some(v1::RetryPolicy {
            minimum_backoff: Some(duration_to_proto(config.min_backoff)),
            maximum_backoff: Some(duration_to_proto(config.max_backoff)),
        }),
        dead_letter_policy: Some(v1::DeadLetterPolicy {
            max_delivery_attempts: i32::try_from(config.max_delivery_attempts).unwrap_or(i32::MAX),
        }),
        event_type_filter: config.event_type_filter.clone(),
        create_time: Some(timestamp_from_ms(config.created_ms)),
    }
}

/// A broker position from its API message (`field` names it in errors); none means latest.
pub fn position_from_proto(position: Option<&v1::Position>, field: &str) -> Result<Position, BrokerError> {
    Ok(match position.and_then(|p| p.position.as_ref()) {
        None | Some(Pos::Latest(_)) => Position::Latest,
        Some(Pos::Earliest(_)) => Position::Earliest,
        Some(Pos::Time(ts)) => Position::Time(
            ms_from_timestamp(ts).ok_or_else(|| BrokerError::invalid(format!("{field}.time"), "before 1970"))?,
        ),
        Some(Pos::EntryId(id)) => Position::EntryId(id.clone()),
    })
}

/// A std duration from an API duration named `field`.
fn duration(field: &str, d: &prost_types::Duration) -> Result<Duration, BrokerError> {
    duration_from_proto(d).ok_or_else(|| BrokerError::invalid(field, "must be a non-negative duration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_round_trip_keeps_settings() {
        let mut config = StreamConfig::new("orders");
        config.max_len = 1000;
        config.max_age = Duration::from_secs(3600);
        config.dedup_window = Duration::ZERO;
        config.created_ms = 1_700_000_000_000;
        let back = stream_from_proto(&stream_to_proto(&config)).unwrap();
        assert_eq!(back, StreamConfig { created_ms: 0, ..config });
    }

    #[test]
    fn subscription_round_trip_keeps_settings() {
        let mut config = SubscriptionConfig::new("orders", "billing");
        config.ack_deadline = Duration::from_secs(12);
        config.max_delivery_attempts = 9;
        config.min_backoff = Duration::from_millis(100);
        config.event_type_filter = vec!["a".into(), "b".into()];
        let back = subscription_from_proto(&subscription_to_proto(&config)).unwrap();
        assert_eq!(back, SubscriptionConfig { created_ms: 0, ..config });
    }

    #[test]
    fn defaults_and_errors_name_fields() {
        let sub = subscription_from_proto(&v1::Subscription::default()).unwrap();
        assert_eq!(sub.ack_deadline, DEFAULT_ACK_DEADLINE);
        let bad = v1::Subscription { ack_deadline_seconds: -1, ..Default::default() };
        assert!(subscription_from_proto(&bad).unwrap_err().to_string().contains("ack_deadline_seconds"));
        let bad =
            v1::Stream { retention: Some(v1::RetentionPolicy { max_length: -1, max_age: None }), ..Default::default() };
        assert!(stream_from_proto(&bad).unwrap_err().to_string().contains("max_length"));
    }
}
