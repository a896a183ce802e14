//! Statistics of a stream and its subscriptions, read from XINFO STREAM / GROUPS / CONSUMERS,
//! XPENDING, the dead-letter and redrive streams and the breaker (modelled on JetStream's
//! ConsumerInfo).

use std::collections::HashMap;

use redis::Value;

use crate::{
    BreakerState, Broker, PARKING_CONSUMER, Result,
    keys::validate_name,
    schema::{breaker, consumer, sub},
};

/// Most pending entries inspected to count redeliveries, and most entries counted when Redis
/// cannot tell a group's lag; beyond it the figure is a lower bound.
const SCAN_CAP: usize = 100_000;
/// Entries read per XPENDING call of the redelivery count.
const SCAN_PAGE: usize = 10_000;

/// The counters kept in a subscription's settings hash (see [`crate::keys`]), in the order
/// stats reads them.
const COUNTERS: [&str; 4] = [sub::FILTERED, sub::RETENTION_DEAD_LETTERED, sub::RETENTION_DROPPED, sub::DLQ_OVERFLOW];

/// Statistics of one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// The stream name.
    pub stream: String,
    /// Entries in the stream.
    pub length: u64,
    /// Oldest entry id kept, if any.
    pub first_entry_id: Option<String>,
    /// Newest entry id ever added, if any.
    pub last_entry_id: Option<String>,
    /// Per subscription, in name order.
    pub subscriptions: Vec<SubscriptionStats>,
    /// A partitioned stream's partitions, in partition order (empty for a stream of one
    /// partition, whose figures are the ones above).
    pub partitions: Vec<PartitionStats>,
}

/// Statistics of one partition of a partitioned stream: the figures of its own Redis stream,
/// so skew between partitions (a hot key, a slow consumer) shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionStats {
    /// The partition index.
    pub partition: u32,
    /// Entries in the partition.
    pub length: u64,
    /// Oldest entry id the partition keeps, if any.
    pub first_entry_id: Option<String>,
    /// Newest entry id ever added to the partition, if any.
    pub last_entry_id: Option<String>,
    /// Per subscription in this partition, in name order (last delivered id and consumers are
    /// this partition's).
    pub subscriptions: Vec<SubscriptionStats>,
}

impl PartitionStats {
    fn new(partition: u32, stats: StreamStats) -> Self {
        let StreamStats { length, first_entry_id, last_entry_id, subscriptions, .. } = stats;
        Self { partition, length, first_entry_id, last_entry_id, subscriptions }
    }
}

/// Statistics of one subscription.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscriptionStats {
    /// The subscription name.
    pub name: String,
    /// Entries not yet delivered.
    pub lag: u64,
    /// Delivered and unsettled entries (including ones waiting out a backoff).
    pub pending: u64,
    /// Pending entries delivered more than once.
    pub redelivered: u64,
    /// Last entry id delivered.
    pub last_delivered_id: String,
    /// Dead letters waiting.
    pub dead_letters: u64,
    /// Entries skipped by the event-type filter, ever.
    pub filtered: u64,
    /// Entries retention removed before this subscription settled them, dead-lettered, ever.
    pub retention_dead_lettered: u64,
    /// Entries retention removed before this subscription settled them, dropped, ever.
    pub retention_dropped: u64,
    /// Oldest dead letters removed at the dead-letter queue's cap, ever.
    pub dead_letters_overflowed: u64,
    /// Whether it holds the stream's retention (`retention_hold`, the archive's subscriptions).
    pub retention_hold: bool,
    /// Entries waiting out a retry backoff.
    pub delayed: u64,
    /// Requeued dead letters not yet acknowledged.
    pub redrive_pending: u64,
    /// The breaker's state, if it has one.
    pub breaker: Option<BreakerState>,
    /// Whether the subscription is ordered (the three figures below are 0 if not).
    pub ordered: bool,
    /// Ordered subscriptions: ordering keys with events held back behind an event in flight.
    pub keys_blocked: u64,
    /// Ordered subscriptions: events held back behind an earlier event of their key.
    pub ordered_waiting: u64,
    /// Ordered subscriptions: age (ms, by this process's clock) of the oldest publish time
    /// among the blocked keys' next events; 0 when no key is blocked.
    pub oldest_blocked_age_ms: u64,
    /// Its live consumers (the parking and waiting consumers are left out).
    pub consumers: Vec<ConsumerStats>,
}

impl SubscriptionStats {
    /// Adds another partition's figures of the same subscription.
    fn add(&mut self, other: Self) {
        self.lag += other.lag;
        self.pending += other.pending;
        self.redelivered += other.redelivered;
        self.dead_letters += other.dead_letters;
        self.filtered += other.filtered;
        self.retention_dead_lettered += other.retention_dead_lettered;
        self.retention_dropped += other.retention_dropped;
        self.dead_letters_overflowed += other.dead_letters_overflowed;
        self.delayed += other.delayed;
        self.redrive_pending += other.redrive_pending;
        self.retention_hold |= other.retention_hold;
        // A breaker not closed in any partition is what the operator needs to see.
        if other.breaker.is_some() && self.breaker != other.breaker && self.breaker == Some(BreakerState::Closed) {
            self.breaker = other.breaker;
        }
        self.keys_blocked += other.keys_blocked;
        self.ordered_waiting += other.ordered_waiting;
        self.oldest_blocked_age_ms = self.oldest_blocked_age_ms.max(other.oldest_blocked_age_ms);
        self.consumers.extend(other.consumers);
    }
}

/// One consumer of a subscription.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsumerStats {
    /// Consumer name.
    pub name: String,
    /// Its unsettled entries.
    pub pending: u64,
    /// Milliseconds since it last read or claimed.
    pub idle_ms: u64,
}

impl Broker {
    /// Statistics of `stream` and each of its subscriptions. A partitioned stream's figures are
    /// the sums over its partitions (ages: the largest; consumers: all of them, one per session
    /// and partition); its entry ids (first, last, last delivered) are left empty, since entry
    /// ids are per partition, and [`StreamStats::partitions`] has each partition's own figures.
    pub async fn stream_stats(&self, stream: &str) -> Result<StreamStats> {
        validate_name("stream", stream)?;
        let subs = self.list_subscriptions(stream).await?;
        let partitions = self.partitions(stream).await?;
        let first = self.partition_stats(stream, &subs).await?;
        if partitions <= 1 {
            return Ok(first);
        }
        let mut stats = StreamStats {
            stream: stream.into(),
            length: first.length,
            subscriptions: first.subscriptions.clone(),
            ..StreamStats::default()
        };
        stats.subscriptions.iter_mut().for_each(|s| s.last_delivered_id.clear());
        stats.partitions.push(PartitionStats::new(0, first));
        for (i, part) in (1..).zip(crate::partition_names(stream, partitions).iter().skip(1)) {
            let subs: Vec<_> =
                subs.iter().map(|s| crate::SubscriptionConfig { stream: part.clone(), ..s.clone() }).collect();
            let more = self.partition_stats(part, &subs).await?;
            stats.length += more.length;
            for sub in &more.subscriptions {
                if let Some(total) = stats.subscriptions.iter_mut().find(|s| s.name == sub.name) {
                    total.add(sub.clone());
                }
            }
            stats.partitions.push(PartitionStats::new(i, more));
        }
        Ok(stats)
    }

    /// [`Broker::stream_stats`] of one Redis-level stream (a stream or one partition) with
    /// `subs` (configured on that stream).
    async fn partition_stats(&self, stream: &str, subs: &[crate::SubscriptionConfig]) -> Result<StreamStats> {
        let key = self.keys().stream(stream);
        let mut conn = self.conn().await?;
        let exists: bool = redis::cmd("EXISTS").arg(&key).query_async(&mut conn).await?;
        let mut stats = StreamStats { stream: stream.into(), ..Default::default() };
        if !exists {
            return Ok(stats);
        }
        let info: HashMap<String, Value> = redis::cmd("XINFO").arg("STREAM").arg(&key).query_async(&mut conn).await?;
        stats.length = int(info.get("length"));
        stats.last_entry_id = text(info.get("last-generated-id")).filter(|id| id != "0-0");
        if let Some(Value::Array(first)) = info.get("first-entry") {
            stats.first_entry_id = text(first.first());
        }
        let groups: Vec<HashMap<String, Value>> =
            redis::cmd("XINFO").arg("GROUPS").arg(&key).query_async(&mut conn).await?;
        let groups: HashMap<String, HashMap<String, Value>> =
            groups.into_iter().filter_map(|g| Some((text(g.get("name"))?, g))).collect();
        for sub in subs {
            let Some(group) = groups.get(&sub.name) else { continue };
            stats.subscriptions.push(self.subscription_stats(&mut conn, sub, group).await?);
        }
        Ok(stats)
    }

    async fn subscription_stats(
        &self,
        conn: &mut crate::RedisConn,
        sub: &crate::SubscriptionConfig,
        group: &HashMap<String, Value>,
    ) -> Result<SubscriptionStats> {
        let (stream, name) = (sub.stream.as_str(), sub.name.as_str());
        let keys = self.keys();
        let key = keys.stream(stream);
        let last_delivered_id = text(group.get("last-delivered-id")).unwrap_or_default();
        let lag = match group.get("lag") {
            Some(Value::Int(n)) => u64::try_from(*n).unwrap_or(0),
            _ => count_after(conn, &key, &last_delivered_id).await?,
        };
        let consumers: Vec<HashMap<String, Value>> =
            redis::cmd("XINFO").arg("CONSUMERS").arg(&key).arg(name).query_async(conn).await?;
        let consumers = consumers
            .into_iter()
            .filter_map(|c| {
                let consumer = text(c.get("name"))?;
                (consumer != PARKING_CONSUMER && consumer != consumer::WAITING).then(|| ConsumerStats {
                    name: consumer,
                    pending: int(c.get("pending")),
                    idle_ms: int(c.get("idle")),
                })
            })
            .collect();
        let redelivered = count_redelivered(conn, &key, name).await?;
        let mut pipe = redis::pipe();
        pipe.cmd("XLEN").arg(keys.dlq(stream, name));
        pipe.cmd("HMGET").arg(keys.sub(stream, name)).arg(&COUNTERS);
        pipe.cmd("ZCARD").arg(keys.delay(stream, name));
        pipe.cmd("ZCARD").arg(keys.redrive_delay(stream, name));
        pipe.cmd("HGET").arg(keys.breaker(stream, name)).arg(breaker::STATE);
        pipe.cmd("ZCARD").arg(keys.blocked(stream, name));
        pipe.cmd("ZCARD").arg(keys.waiting(stream, name));
        pipe.cmd("ZRANGE").arg(keys.blocked(stream, name)).arg(0).arg(0).arg("WITHSCORES");
        pipe.cmd("HGET").arg(keys.sub(stream, name)).arg(sub::RETENTION_HOLD);
        type Replies = (u64, [Option<u64>; 4], u64, u64, Option<String>, u64, u64, Vec<(String, f64)>, Option<String>);
        let (dead_letters, counters, delayed, redrive_delayed, breaker, keys_blocked, ordered_waiting, oldest, hold): Replies =
            pipe.query_async(conn).await?;
        // Scores are publish times in ms: exact in an f64.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let oldest_ms = oldest.first().map(|(_, ms)| *ms as u64);
        let oldest_blocked_age_ms = oldest_ms.map_or(0, |ms| crate::now_ms().saturating_sub(ms));
        let [filtered, retention_dead_lettered, retention_dropped, dead_letters_overflowed] =
            counters.map(|c| c.unwrap_or(0));
        // The summary form of XPENDING starts with the count; no group (yet) means none.
        let redrive: redis::RedisResult<Vec<Value>> =
            redis::cmd("XPENDING").arg(keys.redrive(stream, name)).arg(name).query_async(conn).await;
        Ok(SubscriptionStats {
            name: name.into(),
            lag,
            pending: int(group.get("pending")),
            redelivered,
            last_delivered_id,
            dead_letters,
            filtered,
            retention_dead_lettered,
            retention_dropped,
            dead_letters_overflowed,
            retention_hold: hold.as_deref() == Some("1"),
            delayed: delayed + redrive_delayed,
            redrive_pending: redrive.map(|summary| int(summary.first())).unwrap_or(0),
            // Read on the connection in hand (no second checkout while holding one).
            breaker: sub.breaker.as_ref().map(|_| BreakerState::parse(breaker.as_deref().unwrap_or(breaker::CLOSED))),
            ordered: sub.ordered,
            keys_blocked,
            ordered_waiting,
            oldest_blocked_age_ms,
            consumers,
        })
    }
}

/// What a subscription has not settled yet: how much, and since when (the retention hold of
/// the archive's subscriptions keeps exactly this in Redis).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unsettled {
    /// Entries pending or not yet delivered.
    pub entries: u64,
    /// Publish time (ms) of the oldest of them; `None` when there are none.
    pub oldest_ms: Option<u64>,
}

impl Broker {
    /// What `subscription` of `stream` has not settled (a few commands per partition, however
    /// long the backlog; the lag count is capped like the stats' when Redis cannot tell it). On
    /// a partitioned stream: the sum over the partitions, and the oldest of their oldest.
    pub async fn unsettled(&self, stream: &str, subscription: &str) -> Result<Unsettled> {
        crate::validate_name("stream", stream)?;
        crate::validate_name("subscription", subscription)?;
        let mut total = Unsettled::default();
        for part in crate::partition_names(stream, self.partitions(stream).await?) {
            let u = self.partition_unsettled(&part, subscription).await?;
            total.entries += u.entries;
            total.oldest_ms = total.oldest_ms.into_iter().chain(u.oldest_ms).min();
        }
        Ok(total)
    }

    /// [`Broker::unsettled`] of one Redis-level stream (a stream or one partition).
    async fn partition_unsettled(&self, stream: &str, subscription: &str) -> Result<Unsettled> {
        let key = self.keys().stream(stream);
        let mut conn = self.conn().await?;
        let groups: Vec<HashMap<String, Value>> =
            redis::cmd("XINFO").arg("GROUPS").arg(&key).query_async(&mut conn).await?;
        let Some(group) = groups.into_iter().find(|g| text(g.get("name")).as_deref() == Some(subscription)) else {
            return Err(crate::BrokerError::NotFound(format!("subscription {subscription:?} of stream {stream:?}")));
        };
        let last = text(group.get("last-delivered-id")).unwrap_or_else(|| "0-0".into());
        let lag = match group.get("lag") {
            Some(Value::Int(n)) => u64::try_from(*n).unwrap_or(0),
            _ => count_after(&mut conn, &key, &last).await?,
        };
        let pending = int(group.get("pending"));
        let mut oldest: Option<u64> = None;
        if pending > 0 {
            let first: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
                .arg(&key)
                .arg(subscription)
                .arg("-")
                .arg("+")
                .arg(1)
                .query_async(&mut conn)
                .await?;
            oldest = first.first().and_then(|p| crate::model::entry_ms(&p.0));
        }
        if lag > 0 {
            let next: Vec<(String, Value)> = redis::cmd("XRANGE")
                .arg(&key)
                .arg(format!("({last}"))
                .arg("+")
                .arg("COUNT")
                .arg(1)
                .query_async(&mut conn)
                .await?;
            let next_ms = next.first().and_then(|(id, _)| crate::model::entry_ms(id));
            oldest = oldest.into_iter().chain(next_ms).min();
        }
        Ok(Unsettled { entries: lag + pending, oldest_ms: oldest })
    }
}

/// Pending entries of group `group` of stream `key` delivered more than once, among the first
/// [`SCAN_CAP`]; read in pages of [`SCAN_PAGE`] so a stats call never holds a reply of the whole
/// pending list (100 000 entries parsed at once were ~40 MB of the admin service's peak).
async fn count_redelivered(conn: &mut crate::RedisConn, key: &str, group: &str) -> Result<u64> {
    let mut redelivered = 0u64;
    let page = |from: &str| {
        let mut cmd = redis::cmd("XPENDING");
        cmd.arg(key).arg(group).arg(from).arg("+").arg(SCAN_PAGE);
        cmd
    };
    let each = |p: &[(String, String, u64, u64)]| redelivered += p.iter().filter(|e| e.3 > 1).count() as u64;
    scan_pages(conn, "-".into(), SCAN_PAGE, page, |e| &e.0, each).await?;
    Ok(redelivered)
}

/// Counts entries after `id` (up to [`SCAN_CAP`]), for when Redis cannot tell a group's lag.
async fn count_after(conn: &mut crate::RedisConn, key: &str, id: &str) -> Result<u64> {
    let mut total = 0u64;
    let page = |from: &str| {
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(key).arg(from).arg("+").arg("COUNT").arg(1000);
        cmd
    };
    let each = |p: &[(String, Value)]| total += p.len() as u64;
    scan_pages(conn, format!("({id}"), 1000, page, |e| &e.0, each).await?;
    Ok(total)
}

/// Reads a range of stream entries (or pending entries) in pages of `size`, from `from` (`-` or
/// an exclusive `(<id>`), until a short page or [`SCAN_CAP`] entries, and hands each page to
/// `each`; `query` builds the command reading the page that starts at its argument, and `id`
/// names an entry's id (the next page starts after the last one's).
async fn scan_pages<T: redis::FromRedisValue>(
    conn: &mut crate::RedisConn,
    mut from: String,
    size: usize,
    query: impl Fn(&str) -> redis::Cmd,
    id: impl Fn(&T) -> &str,
    mut each: impl FnMut(&[T]),
) -> Result<()> {
    let mut seen = 0usize;
    while seen < SCAN_CAP {
        let page: Vec<T> = query(&from).query_async(conn).await?;
        let Some(last) = page.last() else { break };
        from = format!("({}", id(last));
        seen += page.len();
        each(&page);
        if page.len() < size {
            break;
        }
    }
    Ok(())
}

/// An integer field of an XINFO reply (0 when absent or nil).
fn int(v: Option<&Value>) -> u64 {
    match v {
        Some(Value::Int(n)) => u64::try_from(*n).unwrap_or(0),
        Some(Value::BulkString(b)) => String::from_utf8_lossy(b).parse().unwrap_or(0),
        _ => 0,
    }
}

/// A text field of an XINFO reply.
fn text(v: Option<&Value>) -> Option<String> {
    match v {
        Some(Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
        Some(Value::SimpleString(s)) => Some(s.clone()),
        _ => None,
    }
}
