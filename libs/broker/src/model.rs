//! Plain data the broker stores and returns: stream and subscription settings, positions,
//! deliveries. No Redis or gRPC types here.

use std::time::Duration;

/// Default dedup window of a new stream.
pub const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_secs(600);
/// Default ack deadline of a new subscription.
pub const DEFAULT_ACK_DEADLINE: Duration = Duration::from_secs(30);
/// Longest ack deadline a subscription may have.
pub const MAX_ACK_DEADLINE: Duration = Duration::from_secs(600);
/// Default deliveries before an event is dead-lettered.
pub const DEFAULT_MAX_DELIVERY_ATTEMPTS: u32 = 5;
/// Most deliveries a dead-letter policy may allow.
pub const MAX_DELIVERY_ATTEMPTS_LIMIT: u32 = 100;
/// Default longest redelivery backoff.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(600);
/// Longest dedup window a stream may have. Dedup keys live this long at most, and the PUBLISH
/// script sets them with `SET PX` after its XADD: a window Redis cannot add to the clock would
/// fail the script after the event was stored, and every retry would store another copy.
pub const MAX_DEDUP_WINDOW: Duration = Duration::from_secs(7 * 86_400);
/// Longest retention age a stream may have (about 10 years); longer is "keep everything", which
/// an unset age already says.
pub const MAX_RETENTION_AGE: Duration = Duration::from_secs(3650 * 86_400);
/// Longest retry backoff (minimum or maximum) a subscription may have: an event parked longer
/// than a day is better dead-lettered, where it is visible.
pub const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(86_400);

/// Settings of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConfig {
    /// The stream name.
    pub name: String,
    /// Keep at most about this many events; 0 = unlimited.
    pub max_len: u64,
    /// Keep events at most about this old; zero = unlimited.
    pub max_age: Duration,
    /// Window within which a repeated event id is a duplicate; zero disables dedup.
    pub dedup_window: Duration,
    /// What retention does with events some subscription has not settled.
    pub unsettled: UnsettledAction,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: u64,
}

/// What retention does with an event that a subscription has not settled (delivered and not
/// acknowledged, or not delivered yet) when it removes it from the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnsettledAction {
    /// Dead-letter it in each such subscription, reason `retention` (nothing is lost).
    #[default]
    DeadLetter,
    /// Drop it, counted per subscription (`retention_dropped`).
    Drop,
}

impl StreamConfig {
    /// A stream with default settings (no retention limit, 10 minute dedup window).
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            max_len: 0,
            max_age: Duration::ZERO,
            dedup_window: DEFAULT_DEDUP_WINDOW,
            unsettled: UnsettledAction::DeadLetter,
            created_ms: 0,
        }
    }
}

/// A subscription's circuit breaker (see the admin API for the semantics).
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerPolicy {
    /// Failure share over the window that opens the breaker, in (0, 1].
    pub failure_ratio: f64,
    /// Fewest outcomes in the window before the breaker may open.
    pub minimum_requests: u32,
    /// Sliding window of outcomes (whole seconds).
    pub window: Duration,
    /// Time the breaker stays open before half-opening.
    pub open_duration: Duration,
    /// Deliveries allowed while half-open.
    pub half_open_probes: u32,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            failure_ratio: 0.5,
            minimum_requests: 20,
            window: Duration::from_secs(30),
            open_duration: Duration::from_secs(30),
            half_open_probes: 5,
        }
    }
}

/// Where a subscription's deliveries come from: the stream itself, or the subscription's
/// redrive stream (dead letters requeued into this subscription only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// The stream, read by the subscription's consumer group.
    Stream,
    /// The subscription's redrive stream, read by a group of the same name.
    Redrive,
}

/// Settings of a subscription (a consumer group on a stream).
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionConfig {
    /// The stream it reads.
    pub stream: String,
    /// Its name, unique within the stream.
    pub name: String,
    /// Time a delivery may stay unsettled before the event is redelivered.
    pub ack_deadline: Duration,
    /// Deliveries before the event is dead-lettered instead.
    pub max_delivery_attempts: u32,
    /// Shortest redelivery delay (retry policy).
    pub min_backoff: Duration,
    /// Longest redelivery delay (retry policy).
    pub max_backoff: Duration,
    /// When not empty, only events of these types are delivered.
    pub event_type_filter: Vec<String>,
    /// The circuit breaker, if enabled.
    pub breaker: Option<BreakerPolicy>,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: u64,
}

impl SubscriptionConfig {
    /// A subscription with default settings.
    pub fn new(stream: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            stream: stream.into(),
            name: name.into(),
            ack_deadline: DEFAULT_ACK_DEADLINE,
            max_delivery_attempts: DEFAULT_MAX_DELIVERY_ATTEMPTS,
            min_backoff: Duration::ZERO,
            max_backoff: DEFAULT_MAX_BACKOFF,
            event_type_filter: Vec::new(),
            breaker: None,
            created_ms: 0,
        }
    }

    /// The retry backoff after failed delivery `attempt` (1-based): exponential from
    /// `min_backoff`, doubling per attempt, capped at `max_backoff`, then lowered by up to 20 %
    /// by `jitter` in [0, 1) but never below `min_backoff`. Zero when `min_backoff` is zero.
    pub fn backoff(&self, attempt: u32, jitter: f64) -> Duration {
        if self.min_backoff.is_zero() {
            return Duration::ZERO;
        }
        let doublings = attempt.saturating_sub(1).min(32);
        let base = self.min_backoff.saturating_mul(1u32 << doublings.min(31)).min(self.max_backoff);
        base.mul_f64(1.0 - 0.2 * jitter.clamp(0.0, 1.0))
            .max(self.min_backoff)
            .min(self.max_backoff.max(self.min_backoff))
    }
}

/// A place in a stream, for where a subscription starts or seeks to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Position {
    /// The oldest event kept.
    Earliest,
    /// After the newest event.
    #[default]
    Latest,
    /// The first event published at or after this many ms since the Unix epoch.
    Time(u64),
    /// After this entry id.
    EntryId(String),
}

/// One event to publish, already validated and encoded.
#[derive(Debug, Clone, Default)]
pub struct NewEvent {
    /// The CloudEvent id, the dedup key.
    pub id: String,
    /// The CloudEvent type, stored beside the payload for type filters.
    pub event_type: String,
    /// The encoded CloudEvent.
    pub payload: Vec<u8>,
    /// The event's W3C `traceparent`, stored beside the payload so settlement spans can join the
    /// event's trace without decoding it; empty when none.
    pub traceparent: String,
}

/// Where a published event was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The stream entry id.
    pub entry_id: String,
    /// True if the event id was seen within the dedup window; `entry_id` is then the first one.
    pub duplicate: bool,
}

/// One delivery of one event to one consumer.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Where it came from.
    pub source: Source,
    /// Opaque handle to settle this delivery.
    pub ack_id: String,
    /// The stream entry id.
    pub entry_id: String,
    /// The encoded CloudEvent.
    pub payload: Vec<u8>,
    /// 1 on first delivery, then incremented.
    pub attempt: u32,
    /// Publish time: the entry id's millisecond part.
    pub publish_ms: u64,
    /// The event's `traceparent`, if it has one.
    pub traceparent: Option<String>,
}

/// Outcome of settling a batch of ack ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settled {
    /// Ack ids that were malformed or name an unknown stream or subscription.
    pub invalid: Vec<String>,
    /// Ack ids whose delivery is over (settled, dead-lettered, redelivered, trimmed).
    pub expired: Vec<String>,
    /// The ack ids that took effect, decoded (for metrics and spans of the settlement).
    pub applied: Vec<crate::ack_id::AckId>,
}

/// Parses the millisecond part of an entry id `<ms>-<seq>`.
pub fn entry_ms(entry_id: &str) -> Option<u64> {
    entry_id.split_once('-').and_then(|(ms, _)| ms.parse().ok())
}

/// An entry id as a sortable key `(ms, seq)`; `(0, 0)` for what does not parse.
pub fn entry_key(id: &str) -> (u64, u64) {
    id.split_once('-').map_or((0, 0), |(ms, seq)| (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0)))
}

/// Whether `id` is a complete stream entry id `<ms>-<seq>`.
pub fn is_entry_id(id: &str) -> bool {
    id.split_once('-').is_some_and(|(ms, seq)| ms.parse::<u64>().is_ok() && seq.parse::<u64>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_within_min_and_max() {
        let mut sub = SubscriptionConfig::new("s", "n");
        assert_eq!(sub.backoff(3, 0.0), Duration::ZERO, "no retry policy, no backoff");
        sub.min_backoff = Duration::from_secs(1);
        sub.max_backoff = Duration::from_secs(10);
        let delays: Vec<u64> = (1..=6).map(|a| sub.backoff(a, 0.0).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 10, 10]);
        for attempt in 1..=40 {
            for jitter in [0.0, 0.3, 0.999] {
                let d = sub.backoff(attempt, jitter);
                assert!(d >= sub.min_backoff && d <= sub.max_backoff, "{attempt} {jitter} {d:?}");
            }
        }
        assert_eq!(sub.backoff(3, 0.5), Duration::from_millis(3600));
    }

    #[test]
    fn entry_ids_parse() {
        assert_eq!(entry_ms("1700000000000-3"), Some(1_700_000_000_000));
        assert!(is_entry_id("1-0"));
        assert!(!is_entry_id("1"));
        assert!(!is_entry_id("x-1"));
        assert!(!is_entry_id("1-"));
    }
}
