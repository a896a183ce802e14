//! Redis key names and name validation.
//!
//! [`Keys`] builds every key of the layout from the segments of [`crate::schema::key`], where
//! each key, its type and what it holds is documented (docs/architecture.md has the table). Every
//! key of one stream shares the hash tag `{<stream>}`, so multi-key scripts stay atomic on Redis
//! Cluster. `<p>` is the configurable key prefix (`ef` by default; tests use a unique one each).
//!
//! The retention script (`TRIM`) builds the `sub:`, `dlq:`, `errors:` and `delay:` keys of every
//! group it finds from [`Keys::base`] and the same segments (as Lua locals generated from the
//! schema); a unit test keeps the two in step.

use crate::{
    error::{BrokerError, Result},
    schema::{error_field, key},
};

/// Longest stream or subscription name.
pub const MAX_NAME_LEN: usize = 128;

/// Checks a stream or subscription name: 1 to 128 characters of `[A-Za-z0-9._-]`. The charset
/// keeps names from breaking out of their hash tag or key segment.
pub fn validate_name(field: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(BrokerError::invalid(field, "must not be empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(BrokerError::invalid(field, format!("longer than {MAX_NAME_LEN} characters")));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(BrokerError::invalid(field, format!("character {c:?} is not one of [A-Za-z0-9._-]")));
    }
    Ok(())
}

/// Separates a stream's name from a partition number in the internal name of partition `i >= 1`
/// (`orders~2`): user names cannot contain it, so an internal name never collides with a user's.
pub const PARTITION_SEPARATOR: char = '~';

/// The stream holding partition `i` of `stream`: `stream` itself for partition 0 (so a
/// 1-partition stream is the stream of before partitions), `stream~i` otherwise.
pub fn partition_name(stream: &str, i: u32) -> String {
    if i == 0 { stream.to_string() } else { format!("{stream}{PARTITION_SEPARATOR}{i}") }
}

/// The partition index of a Redis-level stream name ([`partition_name`]'s inverse): `i` for
/// `stream~i`, 0 for a name without the separator (or with a damaged number).
pub fn partition_index(name: &str) -> u32 {
    name.rsplit_once(PARTITION_SEPARATOR).and_then(|(_, i)| i.parse().ok()).unwrap_or(0)
}

/// Checks a stream name that may be a partition's internal name (`orders~2`), as ack ids carry:
/// a valid user name, optionally followed by `~` and a partition number from 1. User input naming
/// a stream goes through [`validate_name`], which refuses `~`.
pub fn validate_partition_name(field: &str, name: &str) -> Result<()> {
    match name.split_once(PARTITION_SEPARATOR) {
        None => validate_name(field, name),
        Some((base, i)) => {
            validate_name(field, base)?;
            match partition_number(i) {
                Some(_) => Ok(()),
                None => Err(BrokerError::invalid(field, "bad partition number")),
            }
        }
    }
}

/// Reads the partition number after [`PARTITION_SEPARATOR`] in an internal name or a dead-letter
/// id: decimal digits only, from 1, without leading zeros (so each partition has one spelling).
pub fn partition_number(text: &str) -> Option<u32> {
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) && !text.starts_with('0');
    text.parse().ok().filter(|_| digits)
}

/// Builds the keys of the layout above under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    /// Namespace of every key, so several deployments or tests share one Redis.
    prefix: String,
}

impl Keys {
    /// Keys under `prefix`.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into() }
    }

    /// The prefix, as configured.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The sorted set of all stream names.
    pub fn streams(&self) -> String {
        format!("{}:{}", self.prefix, key::STREAMS)
    }

    /// `<p>:{<s>}:`, what every per-stream key but the stream itself starts with.
    pub fn base(&self, stream: &str) -> String {
        format!("{}:{{{stream}}}:", self.prefix)
    }

    /// The Redis stream holding the events of `stream`.
    pub fn stream(&self, stream: &str) -> String {
        self.prefix_of(stream)
    }

    /// `<p>:{<s>}`: the stream's key, which every other key of the stream extends.
    fn prefix_of(&self, stream: &str) -> String {
        format!("{}:{{{stream}}}", self.prefix)
    }

    /// `<p>:layout`, the layout version of everything under the prefix ([`crate::layout`]).
    pub fn layout(&self) -> String {
        format!("{}:{}", self.prefix, key::LAYOUT)
    }

    /// The settings hash of `stream`.
    pub fn meta(&self, stream: &str) -> String {
        format!("{}:{}", self.prefix_of(stream), key::META)
    }

    /// The set of subscription names of `stream`.
    pub fn subs(&self, stream: &str) -> String {
        format!("{}:{}", self.prefix_of(stream), key::SUBS)
    }

    /// The settings hash of subscription `sub`.
    pub fn sub(&self, stream: &str, sub: &str) -> String {
        format!("{}:{}:{sub}", self.prefix_of(stream), key::SUB)
    }

    /// The dead-letter stream of subscription `sub`.
    pub fn dlq(&self, stream: &str, sub: &str) -> String {
        format!("{}:{}:{sub}", self.prefix_of(stream), key::DLQ)
    }

    /// The redrive stream of subscription `sub`.
    pub fn redrive(&self, stream: &str, sub: &str) -> String {
        format!("{}:{}:{sub}", self.prefix_of(stream), key::REDRIVE)
    }

    /// The retry-backoff set of subscription `sub` on the stream itself.
    pub fn delay(&self, stream: &str, sub: &str) -> String {
        format!("{}:{}:{sub}", self.prefix_of(stream), key::DELAY)
    }

    /// The retry-backoff set of subscription `sub` on its redrive stream.
    pub fn redrive_delay(&self, stream: &str, sub: &str) -> String {
        format!("{}:{}", self.redrive(stream, sub), key::DELAY)
    }

    /// The last-error hash of subscription `sub` (nack reasons of pending entries).
    pub fn errors(&self, stream: &str, sub: &str) -> String {
        format!("{}:{}:{sub}", self.prefix_of(stream), key::ERRORS)
    }

    /// The field of an entry in the last-error hash.
    pub fn error_field(source: crate::Source, entry_id: &str) -> String {
        match source {
            crate::Source::Stream => format!("{}{entry_id}", error_field::STREAM),
            crate::Source::Redrive => format!("{}{entry_id}", error_field::REDRIVE),
        }
    }

    /// The circuit-breaker hash of subscription `sub`.
    pub fn breaker(&self, stream: &str, sub: &str) -> String {
        format!("{}:{}:{sub}", self.prefix_of(stream), key::BREAKER)
    }

    /// The ordering gate's heads hash of subscription `sub` (ordered subscriptions).
    pub fn heads(&self, stream: &str, sub: &str) -> String {
        format!("{}:{}:{sub}", self.prefix_of(stream), key::HEADS)
    }

    /// The ordering gate's waiting set of subscription `sub` (ordered subscriptions).
    pub fn waiting(&self, stream: &str, sub: &str) -> String {
        format!("{}:{}:{sub}", self.prefix_of(stream), key::WAITING)
    }

    /// The ordering gate's blocked-keys set of subscription `sub` (ordered subscriptions).
    pub fn blocked(&self, stream: &str, sub: &str) -> String {
        format!("{}:{}:{sub}", self.prefix_of(stream), key::BLOCKED)
    }

    /// What the scripts build an ordered subscription's gate keys from ([`Keys::base`]), or
    /// `''` for an unordered subscription (no gate).
    pub fn gate_base(&self, config: &crate::SubscriptionConfig) -> String {
        if config.ordered { self.base(&config.stream) } else { String::new() }
    }

    /// The Redis stream a subscription reads as `source`.
    pub fn source(&self, stream: &str, sub: &str, source: crate::Source) -> String {
        match source {
            crate::Source::Stream => self.stream(stream),
            crate::Source::Redrive => self.redrive(stream, sub),
        }
    }

    /// The retry-backoff set of `source`.
    pub fn source_delay(&self, stream: &str, sub: &str, source: crate::Source) -> String {
        match source {
            crate::Source::Stream => self.delay(stream, sub),
            crate::Source::Redrive => self.redrive_delay(stream, sub),
        }
    }

    /// Every key that belongs to subscription `sub` besides its group on the stream.
    pub fn subscription_keys(&self, stream: &str, sub: &str) -> Vec<String> {
        vec![
            self.sub(stream, sub),
            self.dlq(stream, sub),
            self.redrive(stream, sub),
            self.delay(stream, sub),
            self.redrive_delay(stream, sub),
            self.errors(stream, sub),
            self.breaker(stream, sub),
            self.heads(stream, sub),
            self.waiting(stream, sub),
            self.blocked(stream, sub),
        ]
    }

    /// Layout 1's dedup key of event `event_id` in `stream` (PUBLISH still reads them for a
    /// while after an upgrade, see [`crate::schema::meta::DEDUP_LEGACY_UNTIL`]).
    pub fn dedup(&self, stream: &str, event_id: &str) -> String {
        format!("{}:{}:{event_id}", self.prefix_of(stream), key::DEDUP)
    }

    /// The dedup bucket of `stream` for width `width_ms` and bucket `index` (ids first
    /// published in `[index × width, (index + 1) × width)` ms). PUBLISH builds these names
    /// itself from the Redis time (a unit test keeps the two in step).
    pub fn dedup_ids(&self, stream: &str, width_ms: u64, index: u64) -> String {
        format!("{}{width_ms}:{index}", self.dedup_ids_base(stream))
    }

    /// What every dedup bucket of `stream` starts with (`<p>:{<s>}:dedup_ids:`).
    pub fn dedup_ids_base(&self, stream: &str) -> String {
        format!("{}:{}:", self.prefix_of(stream), key::DEDUP_IDS)
    }

    /// The marker of an unfinished deletion of `stream` (holds the deletion's token).
    pub fn deleting(&self, stream: &str) -> String {
        format!("{}:{}", self.prefix_of(stream), key::DELETING)
    }

    /// A `SCAN MATCH` pattern for every key of `stream` but the stream itself (names cannot hold
    /// glob characters, and the prefix cannot hold braces, so it matches nothing else).
    pub fn stream_pattern(&self, stream: &str) -> String {
        format!("{}:{{{stream}}}:*", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(validate_name("stream", "orders.v1_eu-west").is_ok());
        assert!(validate_name("stream", "").is_err());
        assert!(validate_name("stream", &"a".repeat(129)).is_err());
        assert!(validate_name("stream", &"a".repeat(128)).is_ok());
        for bad in ["a}b", "a{b", "a:b", "a b", "a*", "ö"] {
            let err = validate_name("subscription", bad).unwrap_err();
            assert!(err.to_string().contains("subscription"), "{err}");
        }
    }

    #[test]
    fn partition_names_are_their_own_hash_tags_and_never_user_names() {
        assert_eq!(partition_name("orders", 0), "orders");
        assert_eq!(partition_name("orders", 2), "orders~2");
        assert_eq!(Keys::new("ef").stream(&partition_name("orders", 2)), "ef:{orders~2}");
        assert!(validate_name("stream", "orders~2").is_err());
        assert!(validate_partition_name("stream", "orders~2").is_ok());
        assert!(validate_partition_name("stream", "orders").is_ok());
        for bad in ["orders~0", "orders~", "orders~x", "orders~01", "orders~+1", "~1", "a~1~2"] {
            assert!(validate_partition_name("stream", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_share_the_stream_hash_tag() {
        let k = Keys::new("ef");
        assert_eq!(k.stream("orders"), "ef:{orders}");
        assert_eq!(k.meta("orders"), "ef:{orders}:meta");
        assert_eq!(k.sub("orders", "billing"), "ef:{orders}:sub:billing");
        assert_eq!(k.dlq("orders", "billing"), "ef:{orders}:dlq:billing");
        assert_eq!(k.redrive("orders", "billing"), "ef:{orders}:redrive:billing");
        assert_eq!(k.dedup("orders", "e1"), "ef:{orders}:dedup:e1");
        assert_eq!(k.dedup_ids("orders", 600_000, 2_887_500), "ef:{orders}:dedup_ids:600000:2887500");
        assert_eq!(k.deleting("orders"), "ef:{orders}:deleting");
        assert_eq!(k.stream_pattern("orders"), "ef:{orders}:*");
    }

    #[test]
    fn the_trim_script_builds_subscription_keys_as_keys_does() {
        let k = Keys::new("ef");
        let base = k.base("orders");
        assert_eq!(format!("{base}sub:billing"), k.sub("orders", "billing"));
        assert_eq!(format!("{base}dlq:billing"), k.dlq("orders", "billing"));
        assert_eq!(format!("{base}errors:billing"), k.errors("orders", "billing"));
        assert_eq!(format!("{base}delay:billing"), k.delay("orders", "billing"));
        for segment in ["K_SUB", "K_DLQ", "K_ERRORS", "K_DELAY"] {
            assert!(crate::scripts::TRIM_SOURCE.contains(&format!("base .. {segment} .. ':' .. group")), "{segment}");
        }
    }

    #[test]
    fn the_publish_script_builds_dedup_keys_as_keys_does() {
        let k = Keys::new("ef");
        let stream = k.stream("orders");
        assert_eq!(format!("{stream}:dedup_ids:600000:7"), k.dedup_ids("orders", 600_000, 7));
        assert_eq!(format!("{stream}:dedup:e1"), k.dedup("orders", "e1"));
        let publish = include_str!("scripts/publish.lua");
        assert!(publish.contains("local base = KEYS[1] .. ':' .. K_DEDUP_IDS .. ':'"));
        assert!(publish.contains("base .. width .. ':' .. b"));
        assert!(publish.contains("KEYS[1] .. ':' .. K_DEDUP .. ':' .. ids[i]"));
    }

    #[test]
    fn the_gate_helper_builds_subscription_keys_as_keys_does() {
        let k = Keys::new("ef");
        let base = k.base("orders");
        assert_eq!(format!("{base}heads:billing"), k.heads("orders", "billing"));
        assert_eq!(format!("{base}waiting:billing"), k.waiting("orders", "billing"));
        assert_eq!(format!("{base}blocked:billing"), k.blocked("orders", "billing"));
        assert_eq!(format!("{base}redrive:billing"), k.redrive("orders", "billing"));
        assert_eq!(format!("{base}redrive:billing:delay"), k.redrive_delay("orders", "billing"));
        assert_eq!(&base[..base.len() - 1], k.stream("orders"));
        let prelude = include_str!("scripts/prelude.lua");
        for segment in ["K_HEADS", "K_WAITING", "K_BLOCKED", "K_SUB", "K_DELAY", "K_REDRIVE"] {
            assert!(prelude.contains(&format!("base .. {segment} .. ':' .. group")), "{segment}");
        }
        assert!(prelude.contains("redrive .. ':' .. K_DELAY"));
        assert!(prelude.contains("string.sub(base, 1, -2)"));
    }
}
