//! Partitioned streams: a stream of P partitions is P streams of the ordinary model. Partition 0
//! is the stream itself (so every stream created before partitions is a 1-partition stream,
//! unchanged); partition `i >= 1` is the internal stream `<name>~<i>` ([`partition_name`]), with
//! its own hash tag `{<name>~<i>}` and so its own full set of keys (entries, meta, groups,
//! subscriptions, dead letters, dedup, ordering gate), which Redis Cluster places by its own slot.
//! Scripts, sessions, settlement and ack ids work per partition unchanged; the user-visible stream
//! (index, admin API, stats) is only `<name>`, whose meta records the count ([`meta::PARTITIONS`]).
//!
//! Publish routes each event by a stable hash ([`route`], FNV-1a 64, the same in every process and
//! release) of its ordering key (CloudEvents `partitionkey`), or of its event id when it has none:
//! one key always lands on one partition (so the ordered gate per partition orders the key), and
//! a retried event id lands where its first copy did (so the per-partition dedup catches it).
//!
//! The partition count is fixed at creation; publishers cache it per stream for
//! [`CACHE_TTL`] (a `Cache` in the broker).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::{Broker, BrokerError, Result, keys::partition_name, schema::meta};

/// Most partitions a stream may have.
pub const MAX_PARTITIONS: u32 = 64;

/// How long a publisher trusts a cached partition count. The count never changes while a stream
/// exists; only a stream deleted and re-created with another count can make a cached count stale,
/// and then for at most this long (events routed to a partition the new stream lacks fail
/// NOT_FOUND; the cache entry is dropped on that error, so the retry routes afresh).
pub const CACHE_TTL: Duration = Duration::from_secs(5);

/// The partition of an event among `partitions`: FNV-1a 64 of its ordering key, or of its id when
/// the key is empty, modulo the count.
pub fn route(ordering_key: &str, event_id: &str, partitions: u32) -> u32 {
    if partitions <= 1 {
        return 0;
    }
    let input = if ordering_key.is_empty() { event_id } else { ordering_key };
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in input.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    // The remainder is below `partitions`, a u32.
    u32::try_from(hash % u64::from(partitions)).unwrap_or(0)
}

/// The names of the streams holding the partitions of `stream`, partition 0 first.
pub fn partition_names(stream: &str, partitions: u32) -> Vec<String> {
    (0..partitions.max(1)).map(|i| partition_name(stream, i)).collect()
}

/// Checks a requested partition count.
pub(crate) fn validate_partitions(partitions: u32) -> Result<()> {
    if partitions == 0 || partitions > MAX_PARTITIONS {
        return Err(BrokerError::invalid("stream.partitions", format!("must be 1 to {MAX_PARTITIONS}")));
    }
    Ok(())
}

/// Partition counts of streams this process published to, with when each was read.
#[derive(Default)]
pub(crate) struct Cache(Mutex<HashMap<String, (u32, Instant)>>);

impl Cache {
    fn get(&self, stream: &str) -> Option<u32> {
        let map = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(stream).filter(|(_, at)| at.elapsed() < CACHE_TTL).map(|(p, _)| *p)
    }

    fn put(&self, stream: &str, partitions: u32) {
        let mut map = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
        map.insert(stream.to_string(), (partitions, Instant::now()));
    }

    /// Forgets `stream`'s count (after a publish to it failed NOT_FOUND).
    pub(crate) fn forget(&self, stream: &str) {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(stream);
    }
}

impl Broker {
    /// The partition count of `stream` (1 for a stream created before partitions, and for a
    /// stream that does not exist: the publish then fails NOT_FOUND as before), cached for
    /// [`CACHE_TTL`] once the stream exists.
    pub(crate) async fn cached_partitions(&self, stream: &str) -> Result<u32> {
        if let Some(p) = self.partition_cache().get(stream) {
            return Ok(p);
        }
        let mut conn = self.conn().await?;
        let (created, p): (Option<u64>, Option<u32>) = redis::cmd("HMGET")
            .arg(self.keys().meta(stream))
            .arg(meta::CREATED_MS)
            .arg(meta::PARTITIONS)
            .query_async(&mut conn)
            .await?;
        let p = p.unwrap_or(1).max(1);
        // Only an existing stream's count is cached: a stream created right after a publish
        // found it missing must not be routed as 1 partition.
        if created.is_some() {
            self.partition_cache().put(stream, p);
        }
        Ok(p)
    }

    /// The partition count of `stream` as stored now (1 when absent or the stream does not exist).
    pub async fn partitions(&self, stream: &str) -> Result<u32> {
        crate::validate_partition_name("stream", stream)?;
        let mut conn = self.conn().await?;
        let p: Option<u32> =
            redis::cmd("HGET").arg(self.keys().meta(stream)).arg(meta::PARTITIONS).query_async(&mut conn).await?;
        Ok(p.unwrap_or(1).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_is_stable_and_spreads() {
        // Fixed values: the hash must never change between releases (events of one key would
        // change partition, and lose their order, across an upgrade).
        assert_eq!(route("", "", 7), u32::try_from(0xcbf2_9ce4_8422_2325_u64 % 7).unwrap());
        assert_eq!(route("customer-1", "a", 3), route("customer-1", "b", 3), "the key decides");
        assert_eq!(route("", "id-1", 3), route("", "id-1", 3));
        assert_eq!(route("anything", "x", 1), 0);
        let mut seen = [0u32; 3];
        for i in 0..300 {
            seen[route("", &format!("event-{i}"), 3) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "keyless events spread: {seen:?}");
    }

    #[test]
    fn counts_are_validated() {
        assert!(validate_partitions(1).is_ok() && validate_partitions(MAX_PARTITIONS).is_ok());
        for bad in [0, MAX_PARTITIONS + 1] {
            let e = validate_partitions(bad).unwrap_err();
            assert!(e.to_string().contains("stream.partitions"), "{e}");
        }
    }
}
