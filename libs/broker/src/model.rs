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
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: u64,
}

impl StreamConfig {
    /// A stream with default settings (no retention limit, 10 minute dedup window).
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            max_len: 0,
            max_age: Duration::ZERO,
            dedup_window: DEFAULT_DEDUP_WINDOW,
            created_ms: 0,
        }
    }
}

/// Settings of a subscription (a consumer group on a stream).
#[derive(Debug, Clone, PartialEq, Eq)]
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
            created_ms: 0,
        }
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
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The CloudEvent id, the dedup key.
    pub id: String,
    /// The CloudEvent type, stored beside the payload for type filters.
    pub event_type: String,
    /// The encoded CloudEvent.
    pub payload: Vec<u8>,
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
}

/// Outcome of settling a batch of ack ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settled {
    /// Ack ids that were malformed or name an unknown stream or subscription.
    pub invalid: Vec<String>,
    /// Ack ids whose delivery is over (settled, dead-lettered, redelivered, trimmed).
    pub expired: Vec<String>,
}

/// Parses the millisecond part of an entry id `<ms>-<seq>`.
pub fn entry_ms(entry_id: &str) -> Option<u64> {
    entry_id.split_once('-').and_then(|(ms, _)| ms.parse().ok())
}

/// Whether `id` is a complete stream entry id `<ms>-<seq>`.
pub fn is_entry_id(id: &str) -> bool {
    id.split_once('-').is_some_and(|(ms, seq)| ms.parse::<u64>().is_ok() && seq.parse::<u64>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_parse() {
        assert_eq!(entry_ms("1700000000000-3"), Some(1_700_000_000_000));
        assert!(is_entry_id("1-0"));
        assert!(!is_entry_id("1"));
        assert!(!is_entry_id("x-1"));
        assert!(!is_entry_id("1-"));
    }
}
