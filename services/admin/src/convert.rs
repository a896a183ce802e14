//! Admin API messages <-> broker settings. Field paths in errors match the request messages.

use eventflow_broker::{
    BreakerPolicy, BreakerState, BrokerError, ContentMode, Position, PushConfig, StreamConfig, SubscriptionConfig,
    UnsettledAction,
    model::{DEFAULT_ACK_DEADLINE, DEFAULT_PUSH_CONCURRENCY},
    stats::{StreamStats, SubscriptionStats},
};
use eventflow_proto::{
    convert::{count, duration_from_proto, duration_to_proto, ms_from_timestamp, timestamp_from_ms},
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
        config.unsettled = match v1::UnsettledEventAction::try_from(retention.unsettled_events) {
            Ok(v1::UnsettledEventAction::Unspecified | v1::UnsettledEventAction::DeadLetter) => {
                UnsettledAction::DeadLetter
            }
            Ok(v1::UnsettledEventAction::Drop) => UnsettledAction::Drop,
            Err(_) => {
                return Err(BrokerError::invalid("stream.retention.unsettled_events", "unknown action"));
            }
        };
    }
    if let Some(window) = &stream.dedup_window {
        config.dedup_window = duration("stream.dedup_window", window)?;
    }
    config.partitions = match stream.partitions {
        0 => 1,
        n => u32::try_from(n).map_err(|_| BrokerError::invalid("stream.partitions", "must not be negative"))?,
    };
    Ok(config)
}

/// The API message of a stream's settings.
pub fn stream_to_proto(config: &StreamConfig) -> v1::Stream {
    v1::Stream {
        name: config.name.clone(),
        retention: Some(v1::RetentionPolicy {
            max_length: i64::try_from(config.max_len).unwrap_or(i64::MAX),
            max_age: (!config.max_age.is_zero()).then(|| duration_to_proto(config.max_age)),
            unsettled_events: match config.unsettled {
                UnsettledAction::DeadLetter => v1::UnsettledEventAction::DeadLetter,
                UnsettledAction::Drop => v1::UnsettledEventAction::Drop,
            }
            .into(),
        }),
        dedup_window: Some(duration_to_proto(config.dedup_window)),
        create_time: Some(timestamp_from_ms(config.created_ms)),
        partitions: i32::try_from(config.partitions).unwrap_or(i32::MAX),
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
    config.breaker = breaker_from_proto(sub.circuit_breaker.as_ref())?;
    config.push = sub.push_config.as_ref().map(push_from_proto).transpose()?;
    config.ordered = sub.ordered;
    Ok(config)
}

/// A push config from its API message; unset or zero fields get defaults.
pub fn push_from_proto(p: &v1::PushConfig) -> Result<PushConfig, BrokerError> {
    let field = |f: &str| format!("subscription.push_config.{f}");
    let mut push = PushConfig::new(p.endpoint.clone(), p.signing_secret.clone());
    if let Some(w) = &p.rotation_window {
        push.rotation_window = duration(&field("rotation_window"), w)?;
    }
    if let Some(t) = &p.timeout {
        push.timeout = duration(&field("timeout"), t)?;
    }
    push.max_concurrency = match u32::try_from(p.max_concurrency) {
        Ok(0) => DEFAULT_PUSH_CONCURRENCY,
        Ok(n) => n,
        Err(_) => return Err(BrokerError::invalid(field("max_concurrency"), "must not be negative")),
    };
    push.content_mode = match v1::ContentMode::try_from(p.content_mode) {
        Ok(v1::ContentMode::Unspecified | v1::ContentMode::Binary) => ContentMode::Binary,
        Ok(v1::ContentMode::Structured) => ContentMode::Structured,
        Err(_) => return Err(BrokerError::invalid(field("content_mode"), "unknown mode")),
    };
    Ok(push)
}

/// The API message of a push config: the secrets are write-only, so `signing_secret` is empty.
fn push_to_proto(push: &PushConfig) -> v1::PushConfig {
    v1::PushConfig {
        endpoint: push.endpoint.clone(),
        signing_secret: String::new(),
        rotation_window: Some(duration_to_proto(push.rotation_window)),
        timeout: Some(duration_to_proto(push.timeout)),
        max_concurrency: i32::try_from(push.max_concurrency).unwrap_or(i32::MAX),
        content_mode: match push.content_mode {
            ContentMode::Binary => v1::ContentMode::Binary,
            ContentMode::Structured => v1::ContentMode::Structured,
        }
        .into(),
        previous_secret_expire_time: (!push.previous_secret.is_empty() && push.previous_until_ms > 0)
            .then(|| timestamp_from_ms(push.previous_until_ms)),
    }
}

/// A breaker policy from its API message; zero fields get defaults; disabled or unset is none.
pub fn breaker_from_proto(policy: Option<&v1::CircuitBreakerPolicy>) -> Result<Option<BreakerPolicy>, BrokerError> {
    let Some(p) = policy.filter(|p| p.enabled) else { return Ok(None) };
    let field = |f: &str| format!("subscription.circuit_breaker.{f}");
    let count = |f: &str, v: i32| u32::try_from(v).map_err(|_| BrokerError::invalid(field(f), "must not be negative"));
    let mut b = BreakerPolicy::default();
    if p.failure_ratio != 0.0 {
        b.failure_ratio = p.failure_ratio;
    }
    match count("minimum_requests", p.minimum_requests)? {
        0 => {}
        n => b.minimum_requests = n,
    }
    if let Some(w) = &p.window {
        b.window = duration(&field("window"), w)?;
    }
    if let Some(d) = &p.open_duration {
        b.open_duration = duration(&field("open_duration"), d)?;
    }
    match count("half_open_probes", p.half_open_probes)? {
        0 => {}
        n => b.half_open_probes = n,
    }
    Ok(Some(b))
}

/// The API message of a breaker policy (disabled when none).
fn breaker_to_proto(policy: Option<&BreakerPolicy>) -> Option<v1::CircuitBreakerPolicy> {
    policy.map(|b| v1::CircuitBreakerPolicy {
        enabled: true,
        failure_ratio: b.failure_ratio,
        minimum_requests: i32::try_from(b.minimum_requests).unwrap_or(i32::MAX),
        window: Some(duration_to_proto(b.window)),
        open_duration: Some(duration_to_proto(b.open_duration)),
        half_open_probes: i32::try_from(b.half_open_probes).unwrap_or(i32::MAX),
    })
}

/// The API value of a breaker state.
fn breaker_state_to_proto(state: Option<BreakerState>) -> v1::BreakerState {
    match state {
        None => v1::BreakerState::Unspecified,
        Some(BreakerState::Closed) => v1::BreakerState::Closed,
        Some(BreakerState::Open) => v1::BreakerState::Open,
        Some(BreakerState::HalfOpen) => v1::BreakerState::HalfOpen,
    }
}

/// The API message of stream statistics.
pub fn stats_to_proto(stats: StreamStats) -> v1::StreamStats {
    v1::StreamStats {
        stream: stats.stream,
        length: count(stats.length),
        first_entry_id: stats.first_entry_id.unwrap_or_default(),
        last_entry_id: stats.last_entry_id.unwrap_or_default(),
        subscriptions: stats.subscriptions.into_iter().map(subscription_stats_to_proto).collect(),
        partitions: stats
            .partitions
            .into_iter()
            .map(|p| v1::PartitionStats {
                partition: i32::try_from(p.partition).unwrap_or(i32::MAX),
                length: count(p.length),
                first_entry_id: p.first_entry_id.unwrap_or_default(),
                last_entry_id: p.last_entry_id.unwrap_or_default(),
                subscriptions: p.subscriptions.into_iter().map(subscription_stats_to_proto).collect(),
            })
            .collect(),
    }
}

fn subscription_stats_to_proto(s: SubscriptionStats) -> v1::SubscriptionStats {
    v1::SubscriptionStats {
        subscription: s.name,
        lag: count(s.lag),
        pending: count(s.pending),
        redelivered: count(s.redelivered),
        last_delivered_entry_id: s.last_delivered_id,
        dead_letter_depth: count(s.dead_letters),
        consumers: s
            .consumers
            .into_iter()
            .map(|c| v1::ConsumerStats {
                name: c.name,
                pending: count(c.pending),
                idle: Some(duration_to_proto(Duration::from_millis(c.idle_ms))),
            })
            .collect(),
        filtered: count(s.filtered),
        breaker_state: breaker_state_to_proto(s.breaker) as i32,
        delayed: count(s.delayed),
        redrive_pending: count(s.redrive_pending),
        retention_dead_lettered: count(s.retention_dead_lettered),
        retention_dropped: count(s.retention_dropped),
        dead_letters_overflowed: count(s.dead_letters_overflowed),
        ordered_keys_blocked: count(s.keys_blocked),
        ordered_events_waiting: count(s.ordered_waiting),
        oldest_blocked_age: (s.keys_blocked > 0)
            .then(|| duration_to_proto(Duration::from_millis(s.oldest_blocked_age_ms))),
        retention_hold: s.retention_hold,
    }
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
        circuit_breaker: breaker_to_proto(config.breaker.as_ref()),
        push_config: config.push.as_ref().map(push_to_proto),
        ordered: config.ordered,
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
        Some(Pos::EntryId(id)) => Position::EntryId { id: id.clone(), partition: None },
        Some(Pos::PartitionEntry(entry)) => Position::EntryId {
            id: entry.entry_id.clone(),
            partition: Some(u32::try_from(entry.partition).map_err(|_| {
                BrokerError::invalid(format!("{field}.partition_entry.partition"), "must not be negative")
            })?),
        },
    })
}

/// A std duration from an API duration named `field`. Negative values and nanos outside
/// 0..1e9 are refused here; upper bounds are the broker's (it checks every caller's settings).
fn duration(field: &str, d: &prost_types::Duration) -> Result<Duration, BrokerError> {
    duration_from_proto(d)
        .ok_or_else(|| BrokerError::invalid(field, "must be a non-negative duration with nanos from 0 to 999999999"))
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
        config.breaker = Some(BreakerPolicy { failure_ratio: 0.25, ..BreakerPolicy::default() });
        let back = subscription_from_proto(&subscription_to_proto(&config)).unwrap();
        assert_eq!(back, SubscriptionConfig { created_ms: 0, ..config });
    }

    #[test]
    fn push_config_round_trips_without_its_secret() {
        let mut config = SubscriptionConfig::new("orders", "hook");
        let mut push = PushConfig::new("https://example.com/hook", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        push.content_mode = ContentMode::Structured;
        push.max_concurrency = 3;
        config.push = Some(push.clone());
        let api = subscription_to_proto(&config);
        let api_push = api.push_config.clone().unwrap();
        assert_eq!(api_push.signing_secret, "", "write-only");
        let back = subscription_from_proto(&api).unwrap().push.unwrap();
        assert_eq!(back, PushConfig { signing_secret: String::new(), ..push });
        let bad = v1::PushConfig { max_concurrency: -1, ..api_push.clone() };
        let err = push_from_proto(&bad).unwrap_err().to_string();
        assert!(err.contains("subscription.push_config.max_concurrency"), "{err}");
        let bad = v1::PushConfig { content_mode: 9, ..api_push };
        assert!(push_from_proto(&bad).unwrap_err().to_string().contains("content_mode"));
    }

    #[test]
    fn defaults_and_errors_name_fields() {
        let sub = subscription_from_proto(&v1::Subscription::default()).unwrap();
        assert_eq!(sub.ack_deadline, DEFAULT_ACK_DEADLINE);
        let bad = v1::Subscription { ack_deadline_seconds: -1, ..Default::default() };
        assert!(subscription_from_proto(&bad).unwrap_err().to_string().contains("ack_deadline_seconds"));
        let bad = v1::Stream {
            retention: Some(v1::RetentionPolicy { max_length: -1, ..Default::default() }),
            ..Default::default()
        };
        assert!(stream_from_proto(&bad).unwrap_err().to_string().contains("max_length"));
    }

    #[test]
    fn malformed_durations_name_their_field() {
        let d = |seconds, nanos| Some(prost_types::Duration { seconds, nanos });
        for (seconds, nanos) in [(-1, 0), (0, -1), (1, 1_000_000_000), (i64::MIN, 0), (0, i32::MIN)] {
            let bad = v1::Stream { dedup_window: d(seconds, nanos), ..Default::default() };
            assert!(stream_from_proto(&bad).unwrap_err().to_string().contains("stream.dedup_window"));
            let retry = v1::RetryPolicy { minimum_backoff: d(seconds, nanos), maximum_backoff: None };
            let bad = v1::Subscription { retry_policy: Some(retry), ..Default::default() };
            let err = subscription_from_proto(&bad).unwrap_err().to_string();
            assert!(err.contains("subscription.retry_policy.minimum_backoff"), "{err}");
        }
        // The largest proto duration converts without overflow; the broker bounds it.
        let huge = v1::Stream { dedup_window: d(i64::MAX, 999_999_999), ..Default::default() };
        assert_eq!(stream_from_proto(&huge).unwrap().dedup_window.as_secs(), u64::try_from(i64::MAX).unwrap());
    }
}
