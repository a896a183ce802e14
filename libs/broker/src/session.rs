//! A delivery session: one open Subscribe call, one Redis consumer of the subscription's group
//! (on the stream, and on the subscription's redrive stream where requeued dead letters wait).
//!
//! Each [`Session::next_batch`] call:
//! 1. if the session holds `max_messages` (or `max_bytes`) unsettled deliveries, waits for a
//!    settlement in this process or `capacity_poll`, then re-reads its own pending lists from
//!    Redis (settlements may come through another replica) and returns an empty batch if
//!    still full;
//! 2. asks the circuit breaker (if any) how many deliveries it allows; none while open;
//! 3. takes entries it read earlier but did not take then (its backlog, see below);
//! 4. every `reclaim_interval`, runs [`CLAIM_DUE`](crate::scripts::CLAIM_DUE) on both sources: entries whose retry backoff
//!    is over and deliveries whose ack deadline passed (dead-lettering those at max attempts,
//!    parking expired ones that have a backoff); expiries count as breaker failures;
//!    It then reads requeued dead letters from the redrive stream;
//! 5. fills the remaining room with new entries of the stream ([`READ_NEW`](crate::scripts::READ_NEW): a non-blocking
//!    `XREADGROUP ... >` on a pooled connection). When nothing at all came, it waits for the
//!    broker's watcher to report a new entry (or `block`), holding no connection;
//! 6. acks entries the event-type filter excludes (counted in the subscription's `filtered`).
//!
//! Every read is bounded by bytes as well as count: by what `max_bytes` leaves, or by
//! [`MAX_READ_BYTES`] without a byte limit. A read takes entries while their payloads fit
//! (the first always); the rest of what XREADGROUP assigned to the session stays in its pending
//! list and its ids in the session's backlog, taken first on later calls ([`FETCH`](crate::scripts::FETCH)).
//!
//! [`Session::close`] hands the session's unsettled entries (and its backlog) to the parking
//! consumer as due at once and deletes the consumer, so other sessions redeliver them without
//! waiting for the deadline.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    time::{Duration, Instant},
};

use redis::Value;

use crate::{
    Broker, BrokerError, Delivery, Result, Source, SubscriptionConfig,
    ack_id::{AckId, AckKeys},
    admin::millis,
    breaker::BreakerState,
    model::entry_ms,
    schema,
    scripts::{self, Ack, ClaimDue, FetchBacklog, ReadNew, ReapConsumers, ReleaseConsumer},
};

/// Default `max_messages` when the client asks for 0.
pub const DEFAULT_MAX_OUTSTANDING: usize = 100;
/// Largest `max_messages` a session accepts.
pub const MAX_OUTSTANDING_LIMIT: usize = 10_000;
/// How often a session deletes consumers left behind by crashed replicas.
const REAP_INTERVAL: Duration = Duration::from_secs(60);
/// How often a session re-reads its subscription's settings.
const CONFIG_REFRESH: Duration = Duration::from_secs(2);
/// Most payload bytes one batch reads when the client set no byte limit.
pub const MAX_READ_BYTES: usize = 4 << 20;
/// The payload size a session assumes before it has seen any (sizes its first read).
const FIRST_SIZE_GUESS: usize = 256 << 10;

/// Flow control of one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowControl {
    /// Most unsettled deliveries at once.
    pub max_messages: usize,
    /// Most unsettled payload bytes at once; 0 = no byte limit. One event is always delivered.
    pub max_bytes: usize,
}

impl FlowControl {
    /// Bytes one read may bring with `outstanding` payload bytes unsettled.
    fn read_budget(&self, outstanding: usize) -> usize {
        if self.max_bytes == 0 { MAX_READ_BYTES } else { self.max_bytes.saturating_sub(outstanding) }
    }
}

impl Default for FlowControl {
    fn default() -> Self {
        Self { max_messages: DEFAULT_MAX_OUTSTANDING, max_bytes: 0 }
    }
}

impl FlowControl {
    /// Checks the limits and applies the default for 0 messages.
    pub fn new(max_messages: i64, max_bytes: i64) -> Result<Self> {
        let max_messages = match usize::try_from(max_messages) {
            Ok(0) => DEFAULT_MAX_OUTSTANDING,
            Ok(n) if n <= MAX_OUTSTANDING_LIMIT => n,
            _ => {
                return Err(BrokerError::invalid(
                    "max_outstanding_messages",
                    format!("must be 0 to {MAX_OUTSTANDING_LIMIT}"),
                ));
            }
        };
        let max_bytes = usize::try_from(max_bytes)
            .map_err(|_| BrokerError::invalid("max_outstanding_bytes", "must not be negative"))?;
        Ok(Self { max_messages, max_bytes })
    }
}

/// An entry read or claimed from Redis, before it becomes a [`Delivery`].
struct Entry {
    source: Source,
    id: String,
    attempt: u32,
    fields: HashMap<String, Value>,
}

impl Entry {
    /// Its payload size.
    fn size(&self) -> usize {
        match self.fields.get(schema::entry::EVENT) {
            Some(Value::BulkString(b)) => b.len(),
            _ => 0,
        }
    }
}

/// What happened in one `next_batch` besides deliveries (for metrics and spans).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Entries moved to the dead-letter queue at max delivery attempts: entry id, traceparent.
    pub dead_lettered: Vec<(String, Option<String>)>,
    /// Deliveries whose ack deadline passed.
    pub expired: usize,
    /// Entries skipped by the event-type filter.
    pub filtered: usize,
    /// The breaker's state, if the subscription has one.
    pub breaker: Option<BreakerState>,
}

/// One consumer of a subscription; see the module doc for the loop.
pub struct Session {
    /// The broker it reads through.
    broker: Broker,
    /// The subscription's settings, refreshed every [`CONFIG_REFRESH`].
    config: SubscriptionConfig,
    /// When `config` was read.
    config_read: Instant,
    /// This session's Redis consumer name, unique per session.
    consumer: String,
    /// The client's flow control.
    flow: FlowControl,
    /// Unsettled deliveries of this session: (source, entry id) -> payload bytes.
    outstanding: HashMap<(Source, String), usize>,
    /// Sum of `outstanding` values.
    outstanding_bytes: usize,
    /// Running payload size average, to size the count of reads under a byte budget.
    avg_bytes: usize,
    /// Whether `avg_bytes` comes from real sizes yet (else it is a guess).
    sized: bool,
    /// Entries this session read (they are in its pending list) but did not take because they
    /// did not fit the byte budget; taken first on later calls.
    backlog: VecDeque<(Source, String)>,
    /// This session's own blocking reader, when it got one of the broker's few permits: the
    /// permit, and the connection with its Redis client id (to unblock it on close), opened on
    /// first use and again after an error. Without one it waits through the watcher.
    reader: Option<(tokio::sync::OwnedSemaphorePermit, Option<(redis::aio::MultiplexedConnection, i64)>)>,
    /// When due deliveries were last reclaimed.
    last_reclaim: Option<Instant>,
    /// When left-behind consumers were last reaped.
    last_reap: Instant,
    /// What the last `next_batch` did besides delivering.
    stats: BatchStats,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("subscription", &self.config.name)
            .field("consumer", &self.consumer)
            .field("outstanding", &self.outstanding.len())
            .finish()
    }
}

impl Session {
    /// Opens a session on an existing subscription: registers a new consumer in its group.
    pub async fn open(broker: &Broker, stream: &str, subscription: &str, flow: FlowControl) -> Result<Self> {
        let config = broker.get_subscription(stream, subscription).await?;
        let consumer = format!("{}{}", schema::consumer::SESSION, uuid::Uuid::now_v7().simple());
        let mut conn = broker.conn().await?;
        let _: i64 = redis::cmd("XGROUP")
            .arg("CREATECONSUMER")
            .arg(broker.keys().stream(stream))
            .arg(subscription)
            .arg(&consumer)
            .query_async(&mut conn)
            .await?;
        Ok(Self {
            broker: broker.clone(),
            config,
            config_read: Instant::now(),
            consumer,
            flow,
            outstanding: HashMap::new(),
            outstanding_bytes: 0,
            avg_bytes: FIRST_SIZE_GUESS,
            sized: false,
            backlog: VecDeque::new(),
            reader: broker.reader_permit().map(|permit| (permit, None)),
            last_reclaim: None,
            last_reap: Instant::now(),
            stats: BatchStats::default(),
        })
    }

    /// This session's Redis consumer name.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// The subscription's settings as last read.
    pub fn config(&self) -> &SubscriptionConfig {
        &self.config
    }

    /// What the last [`Session::next_batch`] did besides delivering.
    pub fn last_stats(&self) -> &BatchStats {
        &self.stats
    }

    /// The next deliveries; may be empty (nothing arrived within the block time, the session is
    /// at its flow-control limit, or the breaker is open), so callers can check for cancellation.
    pub async fn next_batch(&mut self) -> Result<Vec<Delivery>> {
        self.stats = BatchStats::default();
        if self.config_read.elapsed() >= CONFIG_REFRESH {
            self.config = self.broker.get_subscription(&self.config.stream, &self.config.name).await?;
            self.config_read = Instant::now();
        }
        if self.room() == 0 && !self.wait_for_room().await? {
            return Ok(Vec::new());
        }
        let permit = self.broker.breaker_permit(&self.config, self.room()).await?;
        self.stats.breaker = self.config.breaker.as_ref().map(|_| permit.state);
        if permit.allowed == 0 {
            let pause = permit.retry_in.clamp(Duration::from_millis(10), self.broker.options().block);
            tokio::time::sleep(pause).await;
            return Ok(Vec::new());
        }
        let (mut entries, idle_after) = self.fetch(permit.allowed).await?;
        if entries.is_empty() {
            match idle_after {
                Some(_) if self.reader.is_some() => entries = self.blocking_read().await?,
                Some(last) => self.wait_for_entries(&last).await,
                // What it read does not fit the byte budget yet: wait for a settlement.
                None if !self.backlog.is_empty() => {
                    self.wait_for_room().await?;
                }
                None => {}
            }
        }
        if permit.state == BreakerState::HalfOpen
            && let Err(e) = self.broker.breaker_return(&self.config, permit.allowed.saturating_sub(entries.len())).await
        {
            tracing::warn!(error = %e, "unused half-open probes not returned");
        }
        let entries = self.apply_filter(entries).await;
        // The keys in force now, asked once per batch (they may be reloaded between batches).
        let keys = self.broker.ack_keys();
        let batch: Vec<Delivery> = entries.into_iter().filter_map(|e| self.delivery(e, &keys)).collect();
        for delivery in &batch {
            let size = delivery.payload.len();
            if self.outstanding.insert((delivery.source, delivery.entry_id.clone()), size).is_none() {
                self.outstanding_bytes += size;
            }
        }
        Ok(batch)
    }

    /// Releases the session's unsettled entries and its backlog (due at once) and deletes its
    /// consumer. A blocking read still waiting in Redis (its caller gave up on it) is unblocked
    /// first, so no entry is read into the consumer after it is released.
    pub async fn close(mut self) -> Result<u64> {
        let mut conn = self.broker.conn().await?;
        if let Some((_, Some((reader, id)))) = self.reader.take() {
            let _: i64 = redis::cmd("CLIENT").arg("UNBLOCK").arg(id).query_async(&mut conn).await?;
            drop(reader);
        }
        let mut released = 0;
        for source in [Source::Stream, Source::Redrive] {
            // Bounded: a pending list never exceeds what the session read.
            for _ in 0..=(MAX_OUTSTANDING_LIMIT * 2 + self.backlog.len()) / 1000 + 1 {
                let release = ReleaseConsumer {
                    source: self.source_key(source),
                    group: &self.config.name,
                    consumer: &self.consumer,
                    idle_ms: millis(self.config.ack_deadline),
                };
                let (moved, done) = scripts::run(&mut conn, &release).await?;
                released += moved;
                if done == 1 {
                    break;
                }
            }
        }
        Ok(released)
    }

    /// Takes backlog entries, claims due entries and reads requeued ones (every
    /// `reclaim_interval`), then reads new ones: up to `room` in all, within the read budget.
    /// Returns them and, when nothing new was in the stream, its last entry id (to wait for
    /// entries after it).
    ///
    /// Entries already claimed or read are this session's pending entries: once there are any,
    /// a failing later step ends the fetch early (logged) instead of dropping them, so they are
    /// delivered now rather than after their ack deadline.
    async fn fetch(&mut self, room: usize) -> Result<(Vec<Entry>, Option<String>)> {
        let mut fetch = Fetch { entries: Vec::new(), room, budget: self.flow.read_budget(self.outstanding_bytes) };
        match self.fetch_into(&mut fetch).await {
            Ok(idle_after) => Ok((fetch.entries, idle_after)),
            Err(e) if fetch.entries.is_empty() => Err(e),
            Err(e) => {
                tracing::warn!(error = %e, fetched = fetch.entries.len(), "fetch cut short; delivering what was fetched");
                Ok((fetch.entries, None))
            }
        }
    }

    async fn fetch_into(&mut self, fetch: &mut Fetch) -> Result<Option<String>> {
        if !self.backlog.is_empty() {
            let taken = self.take_backlog(fetch.room, fetch.budget).await?;
            fetch.add(taken);
        }
        let interval = self.broker.options().reclaim_interval;
        if self.last_reclaim.is_none_or(|t| t.elapsed() >= interval) {
            self.last_reclaim = Some(Instant::now());
            for source in [Source::Stream, Source::Redrive] {
                if fetch.open() {
                    let count = self.count_for(fetch);
                    let claimed = self.claim_due(source, count).await?;
                    fetch.add(claimed);
                }
            }
            if fetch.open() {
                let count = self.count_for(fetch);
                let (read, _) = self.read_new(Source::Redrive, count, fetch.budget).await?;
                fetch.add(read);
            }
            if self.last_reap.elapsed() >= REAP_INTERVAL {
                self.last_reap = Instant::now();
                self.reap_consumers().await?;
            }
        }
        if !fetch.open() || !self.backlog.is_empty() {
            return Ok(None);
        }
        let count = self.count_for(fetch);
        let (read, idle_after) = self.read_new(Source::Stream, count, fetch.budget).await?;
        fetch.add(read);
        Ok(idle_after)
    }

    /// How many entries to ask Redis for: the room left, and about what the byte budget left
    /// holds at the running average payload size.
    fn count_for(&self, fetch: &Fetch) -> usize {
        fetch.room.min((fetch.budget / self.avg_bytes.max(1)).max(1))
    }

    /// Waits up to `block` for one new entry of the stream in a blocking `XREADGROUP COUNT 1` on
    /// the session's own reader (it arrives with the wake-up: no extra round trip). An entry
    /// that does not fit the byte budget goes to the backlog.
    async fn blocking_read(&mut self) -> Result<Vec<Entry>> {
        let block = self.broker.options().block;
        let key = self.source_key(Source::Stream);
        let Some((_, slot)) = self.reader.as_mut() else { return Ok(Vec::new()) };
        let (conn, _) = match slot {
            Some(reader) => reader,
            None => slot.insert(self.broker.blocking_conn(block.max(Duration::from_secs(1))).await?),
        };
        let reply: redis::RedisResult<Value> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&self.config.name)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(u64::try_from(block.as_millis()).unwrap_or(u64::MAX))
            .arg("STREAMS")
            .arg(&key)
            .arg(">")
            .query_async(conn)
            .await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => {
                *slot = None;
                return Err(e.into());
            }
        };
        let mut entries = Vec::new();
        // RESP2: [[key, [[id, fields]...]]]; nil when the block time passed.
        if let Value::Array(streams) = reply {
            for stream in streams {
                let (_, rows): (String, Vec<Value>) = redis::from_redis_value(stream)?;
                for row in rows {
                    entries.push(parse_entry(Source::Stream, 1, row)?);
                }
            }
        }
        self.note_sizes(&entries);
        let budget = self.flow.read_budget(self.outstanding_bytes);
        let (fit, rest): (Vec<Entry>, Vec<Entry>) =
            entries.into_iter().partition(|e| self.outstanding.is_empty() || e.size() <= budget);
        self.backlog.extend(rest.into_iter().map(|e| (e.source, e.id)));
        Ok(fit)
    }

    /// Waits until the watcher reports an entry of the stream after `last`, or `block`.
    async fn wait_for_entries(&self, last: &str) {
        let key = self.source_key(Source::Stream);
        let mut watch = self.broker.watch(&key, last);
        let _ = tokio::time::timeout(self.broker.options().block, watch.arrived.changed()).await;
    }

    /// Deletes consumers left behind by crashed replicas (nothing pending, long idle).
    async fn reap_consumers(&self) -> Result<()> {
        let idle = millis(self.config.ack_deadline).saturating_mul(3).max(millis(REAP_INTERVAL) * 5);
        let mut conn = self.broker.conn().await?;
        for source in [Source::Stream, Source::Redrive] {
            let reap = ReapConsumers { source: self.source_key(source), group: &self.config.name, idle_ms: idle };
            let reaped = scripts::run(&mut conn, &reap).await?;
            if reaped > 0 {
                tracing::info!(subscription = %self.config.name, reaped, "idle consumers deleted");
            }
        }
        Ok(())
    }

    /// Waits for a settlement (here, or a poll for other replicas) and re-reads what is still
    /// pending; whether there is room now. Deliveries whose ack deadline passed no longer count
    /// (their lease is over: they are due for redelivery, possibly to this session), so a
    /// consumer that ignores events cannot stall its own session.
    async fn wait_for_room(&mut self) -> Result<bool> {
        let poll = self.broker.options().capacity_poll;
        tokio::select! {
            () = self.broker.settled() => {}
            () = tokio::time::sleep(poll) => {}
        }
        let mut conn = self.broker.conn().await?;
        let deadline_ms = millis(self.config.ack_deadline);
        let mut still = HashSet::new();
        for source in [Source::Stream, Source::Redrive] {
            let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
                .arg(self.source_key(source))
                .arg(&self.config.name)
                .arg("-")
                .arg("+")
                .arg(MAX_OUTSTANDING_LIMIT * 2)
                .arg(&self.consumer)
                .query_async(&mut conn)
                .await
                .or_else(|e| if e.code() == Some("NOGROUP") { Ok(Vec::new()) } else { Err(e) })?;
            still.extend(pending.into_iter().filter(|p| p.2 < deadline_ms).map(|p| (source, p.0)));
        }
        self.outstanding.retain(|key, _| still.contains(key));
        self.outstanding_bytes = self.outstanding.values().sum();
        Ok(self.room() > 0)
    }

    /// How many more deliveries flow control allows now.
    fn room(&self) -> usize {
        let by_count = self.flow.max_messages.saturating_sub(self.outstanding.len());
        if self.flow.max_bytes == 0 {
            return by_count;
        }
        if self.outstanding_bytes >= self.flow.max_bytes {
            return usize::from(self.outstanding.is_empty());
        }
        let by_bytes = (self.flow.max_bytes - self.outstanding_bytes) / self.avg_bytes.max(1);
        // One event always fits when nothing is outstanding; otherwise the byte budget rules
        // (the read itself takes only entries that fit, see READ_NEW).
        by_count.min(if self.outstanding.is_empty() { by_bytes.max(1) } else { by_bytes })
    }

    /// Runs [`CLAIM_DUE`](crate::scripts::CLAIM_DUE) on one source.
    async fn claim_due(&mut self, source: Source, room: usize) -> Result<Vec<Entry>> {
        let config = &self.config;
        let jitter = jitter();
        let claim = ClaimDue {
            keys: self.broker.keys(),
            config,
            source,
            consumer: &self.consumer,
            room,
            jitter,
            dlq_max_len: self.broker.options().dlq_max_len,
        };
        let reply = {
            let mut conn = self.broker.conn().await?;
            match scripts::run(&mut conn, &claim).await {
                // The redrive stream's group is made by the first requeue.
                Err(BrokerError::NotFound(_)) if source == Source::Redrive => return Ok(Vec::new()),
                other => other?,
            }
        };
        let (claimed, dead, expired) = parse_claim_reply(source, reply)?;
        self.stats.expired += expired;
        if !dead.is_empty() {
            tracing::info!(subscription = %config.name, dead_lettered = dead.len(), "max delivery attempts reached");
            self.stats.dead_lettered.extend(dead);
            self.broker.notify_settled();
        }
        if let Err(e) = self.broker.breaker_record(config, 0, expired).await {
            tracing::warn!(error = %e, "breaker outcome not recorded");
        }
        Ok(claimed)
    }

    /// Reads up to `count` new entries of `source` within `budget` bytes ([`READ_NEW`](crate::scripts::READ_NEW)); what
    /// did not fit goes to the backlog. Also returns the source's last entry id when nothing
    /// was new.
    async fn read_new(&mut self, source: Source, count: usize, budget: usize) -> Result<(Vec<Entry>, Option<String>)> {
        let mut conn = self.broker.conn().await?;
        let read = ReadNew {
            source: self.source_key(source),
            group: &self.config.name,
            consumer: &self.consumer,
            count,
            budget,
            force: self.force_one(),
        };
        let reply = match scripts::run(&mut conn, &read).await {
            Err(BrokerError::NotFound(_)) if source == Source::Redrive => return Ok((Vec::new(), None)),
            other => other?,
        };
        drop(conn);
        let (entries, rest, idle_after) = parse_read_reply(source, reply)?;
        self.note_sizes(&entries);
        self.backlog.extend(rest.into_iter().map(|id| (source, id)));
        Ok((entries, idle_after))
    }

    /// Takes entries from the front of the backlog (one source at a time) within `room` and
    /// `budget` ([`FETCH`](crate::scripts::FETCH)); ones trimmed meanwhile are skipped.
    async fn take_backlog(&mut self, room: usize, budget: usize) -> Result<Vec<Entry>> {
        let Some(&(source, _)) = self.backlog.front() else { return Ok(Vec::new()) };
        let ids: Vec<&String> =
            self.backlog.iter().take_while(|(s, _)| *s == source).take(room).map(|(_, id)| id).collect();
        let mut conn = self.broker.conn().await?;
        let fetch = FetchBacklog { source: self.source_key(source), budget, force: self.force_one(), ids };
        let (rows, used) = scripts::run(&mut conn, &fetch).await?;
        drop(conn);
        self.backlog.drain(..used.min(self.backlog.len()));
        let entries = rows.into_iter().map(|row| parse_entry(source, 1, row)).collect::<Result<Vec<_>>>()?;
        self.note_sizes(&entries);
        Ok(entries)
    }

    /// Whether a read must take one entry whatever its size: when the session holds nothing
    /// unsettled (so one event of any size is delivered).
    fn force_one(&self) -> bool {
        self.outstanding.is_empty()
    }

    /// Feeds payload sizes into the running average that sizes reads (the first size replaces
    /// the initial guess).
    fn note_sizes(&mut self, entries: &[Entry]) {
        for entry in entries {
            self.avg_bytes = match self.sized {
                false => entry.size(),
                true => (self.avg_bytes * 7 + entry.size()) / 8,
            };
            self.sized = true;
        }
    }

    /// Acks the entries the subscription's event-type filter excludes; returns the others. If
    /// Redis fails here, the excluded entries stay pending and are filtered when they come back.
    async fn apply_filter(&mut self, entries: Vec<Entry>) -> Vec<Entry> {
        if self.config.event_type_filter.is_empty() {
            return entries;
        }
        let (keep, skip): (Vec<Entry>, Vec<Entry>) = entries.into_iter().partition(|e| {
            let event_type = match e.fields.get(schema::entry::TYPE) {
                Some(Value::BulkString(t)) => String::from_utf8_lossy(t).into_owned(),
                _ => String::new(),
            };
            self.config.event_type_filter.contains(&event_type)
        });
        if skip.is_empty() {
            return keep;
        }
        let acked: Result<()> = async {
            let mut conn = self.broker.conn().await?;
            for source in [Source::Stream, Source::Redrive] {
                let entry_ids: Vec<&str> = skip.iter().filter(|e| e.source == source).map(|e| e.id.as_str()).collect();
                if !entry_ids.is_empty() {
                    let filtered = Ack {
                        keys: self.broker.keys(),
                        stream: &self.config.stream,
                        subscription: &self.config.name,
                        source,
                        filtered: true,
                        entry_ids,
                    };
                    scripts::run(&mut conn, &filtered).await?;
                }
            }
            Ok(())
        }
        .await;
        match acked {
            Ok(()) => self.stats.filtered = skip.len(),
            Err(e) => tracing::warn!(error = %e, "filtered events not acknowledged; they are filtered again later"),
        }
        keep
    }

    /// Turns an entry into a delivery with its ack id signed with `keys`.
    fn delivery(&self, mut entry: Entry, keys: &AckKeys) -> Option<Delivery> {
        let payload: Vec<u8> = match entry.fields.remove(schema::entry::EVENT) {
            Some(Value::BulkString(bytes)) => bytes,
            _ => {
                tracing::warn!(entry_id = %entry.id, "stream entry without event payload skipped");
                return None;
            }
        };
        let text = |field: &str| match entry.fields.get(field) {
            Some(Value::BulkString(v)) if !v.is_empty() => Some(String::from_utf8_lossy(v).into_owned()),
            _ => None,
        };
        let origin = text(schema::entry::ORIGIN).unwrap_or_else(|| entry.id.clone());
        let traceparent = text(schema::entry::TRACEPARENT);
        let ack_id = AckId {
            stream: self.config.stream.clone(),
            subscription: self.config.name.clone(),
            source: entry.source,
            entry_id: entry.id.clone(),
            consumer: self.consumer.clone(),
            attempt: entry.attempt,
            delivered_ms: crate::now_ms(),
            traceparent: traceparent.clone(),
        }
        .encode(keys);
        Some(Delivery {
            source: entry.source,
            ack_id,
            publish_ms: entry_ms(&origin).unwrap_or(0),
            entry_id: entry.id,
            payload,
            attempt: entry.attempt,
            traceparent,
        })
    }

    /// The Redis stream of `source`.
    fn source_key(&self, source: Source) -> String {
        self.broker.keys().source(&self.config.stream, &self.config.name, source)
    }
}

/// A jitter factor in [0, 1) for retry backoffs, from the clock's sub-millisecond noise (no
/// cryptographic need; avoids a dependency).
pub(crate) fn jitter() -> f64 {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    f64::from(nanos % 1_000_000) / 1_000_000.0
}

/// What one fetch gathered and what it may still take.
struct Fetch {
    /// Entries so far.
    entries: Vec<Entry>,
    /// Entries it may still take.
    room: usize,
    /// Payload bytes it may still take (one entry is taken whatever its size while none is).
    budget: usize,
}

impl Fetch {
    fn add(&mut self, entries: Vec<Entry>) {
        for entry in &entries {
            self.room = self.room.saturating_sub(1);
            self.budget = self.budget.saturating_sub(entry.size());
        }
        self.entries.extend(entries);
    }

    /// Whether it may take more.
    fn open(&self) -> bool {
        self.room > 0 && (self.budget > 0 || self.entries.is_empty())
    }
}

/// Reads a [`READ_NEW`](crate::scripts::READ_NEW) reply: `{1, entries, rest ids}` or `{0, last id}`.
fn parse_read_reply(source: Source, reply: Value) -> Result<(Vec<Entry>, Vec<String>, Option<String>)> {
    let bad = || BrokerError::Internal("unexpected read reply".into());
    let Value::Array(parts) = reply else { return Err(bad()) };
    let mut parts = parts.into_iter();
    match (parts.next(), parts.next(), parts.next()) {
        (Some(Value::Int(0)), Some(last), None) => Ok((Vec::new(), Vec::new(), Some(redis::from_redis_value(last)?))),
        (Some(Value::Int(1)), Some(Value::Array(rows)), Some(rest)) => {
            let entries = rows.into_iter().map(|row| parse_entry(source, 1, row)).collect::<Result<Vec<_>>>()?;
            let rest: Vec<String> = redis::from_redis_value(rest)?;
            Ok((entries, rest, None))
        }
        _ => Err(bad()),
    }
}

/// Reads one stream entry `{id, {field, value, ...}}`.
fn parse_entry(source: Source, attempt: u32, row: Value) -> Result<Entry> {
    let (id, fields): (String, Vec<(String, Value)>) = redis::from_redis_value(row)?;
    Ok(Entry { source, id, attempt, fields: fields.into_iter().collect() })
}

/// Dead-lettered entries: entry id and traceparent.
type DeadLettered = Vec<(String, Option<String>)>;

/// Reads a [`CLAIM_DUE`](crate::scripts::CLAIM_DUE) reply: `{ {{id, count, fields}...}, {{id, traceparent}...}, expired }`.
fn parse_claim_reply(source: Source, reply: Value) -> Result<(Vec<Entry>, DeadLettered, usize)> {
    let bad = || BrokerError::Internal("unexpected claim reply".into());
    let Value::Array(parts) = reply else { return Err(bad()) };
    let mut parts = parts.into_iter();
    let (Some(Value::Array(claimed)), Some(dead), Some(expired)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let mut entries = Vec::with_capacity(claimed.len());
    for item in claimed {
        let (id, count, fields): (String, u64, Vec<(String, Value)>) = redis::from_redis_value(item)?;
        let attempt = u32::try_from(count).unwrap_or(u32::MAX);
        entries.push(Entry { source, id, attempt, fields: fields.into_iter().collect() });
    }
    let dead: Vec<(String, String)> = redis::from_redis_value(dead)?;
    let dead = dead.into_iter().map(|(id, tp)| (id, (!tp.is_empty()).then_some(tp))).collect();
    Ok((entries, dead, redis::from_redis_value(expired)?))
}
