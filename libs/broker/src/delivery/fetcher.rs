//! The Redis side of a delivery session: carries out what [`super::policy`] decides, with the
//! broker's scripts and commands, and decides nothing itself. One [`Fetcher`] per session: it
//! owns the session's consumer name and, when it got one of the broker's permits, its own
//! blocking reader connection.
//!
//! Reads: `scripts::FETCH` (backlog), `scripts::CLAIM_DUE` (due retries and expired deliveries), new entries
//! within a byte budget (a native `XREADGROUP` in a transaction with the stream's size mark when
//! the mark says they fit, else `scripts::READ_NEW`; see [`Fetcher::read_new`]), a blocking `XREADGROUP COUNT 1`, the watcher (idle
//! sessions without a reader). Upkeep: `scripts::REAP_CONSUMERS`, the pending-list recount of flow
//! control (and the session's mailbox of settlements made in this process), acking filtered entries, `scripts::RELEASE_CONSUMER` on close. Entries become deliveries
//! here too, with their ack ids signed.

use std::{collections::HashSet, time::Duration};

use redis::Value;

use crate::{
    Broker, BrokerError, Delivery, Result, Source, SubscriptionConfig,
    ack_id::{AckIdRef, AckKeys},
    admin::millis,
    breaker::Permit,
    model::entry_ms,
    schema,
    scripts::{self, Ack, ClaimDue, FetchBacklog, ReadNew, ReapConsumers, ReleaseConsumer},
};

use super::{
    handoff::{Handoff, Mailbox},
    policy::{DeliveryPolicy, MAX_OUTSTANDING_LIMIT},
};

/// An entry read or claimed from Redis, before it becomes a [`Delivery`].
#[derive(Debug)]
pub struct Entry {
    /// Where it is pending.
    pub source: Source,
    /// Its entry id.
    pub id: String,
    /// Its delivery attempt (1 for a first read).
    pub attempt: u32,
    /// Its fields as stored, names as Redis sent them: a handful, so a list (looked up by
    /// [`Entry::field`]) is cheaper than a map per entry read.
    fields: Vec<(Vec<u8>, Value)>,
}

impl Entry {
    /// The value of field `name`, if stored.
    fn field(&self, name: &str) -> Option<&Value> {
        self.fields.iter().find(|(field, _)| field == name.as_bytes()).map(|(_, value)| value)
    }

    /// Takes the value of field `name` out, if stored.
    fn take_field(&mut self, name: &str) -> Option<Value> {
        let at = self.fields.iter().position(|(field, _)| field == name.as_bytes())?;
        Some(self.fields.swap_remove(at).1)
    }

    /// Its payload size.
    pub fn size(&self) -> usize {
        match self.field(schema::entry::EVENT) {
            Some(Value::BulkString(b)) => b.len(),
            _ => 0,
        }
    }

    /// Its event type (empty if it has none).
    pub fn event_type(&self) -> String {
        match self.field(schema::entry::TYPE) {
            Some(Value::BulkString(t)) => String::from_utf8_lossy(t).into_owned(),
            _ => String::new(),
        }
    }
}

/// What one read brought.
#[derive(Debug, Default)]
pub struct Fetched {
    /// Entries to deliver.
    pub entries: Vec<Entry>,
    /// Backlog entries the read consumed (taken, or found trimmed away).
    pub used: usize,
    /// Ids it read but left (over the byte budget): they go to the backlog.
    pub left: Vec<(Source, String)>,
    /// The stream's last entry id when nothing new was in it.
    pub idle_after: Option<String>,
    /// Entries dead-lettered at max delivery attempts: entry id, traceparent.
    pub dead_lettered: Vec<(String, Option<String>)>,
    /// Deliveries whose ack deadline passed.
    pub expired: usize,
}

/// Runs one session's Redis reads and upkeep; see the module doc.
pub struct Fetcher {
    /// The broker it reads through.
    broker: Broker,
    /// The session's Redis consumer name, unique per session.
    consumer: String,
    /// The session's own blocking reader, when it got one of the broker's few permits: the
    /// permit, and the connection with its Redis client id (to unblock it on close), opened on
    /// first use and again after an error. Without one it waits through the watcher.
    reader: Option<(tokio::sync::OwnedSemaphorePermit, Option<(crate::conn::BlockingConn, i64)>)>,
    /// The stream's size mark (`meta` field `size_mark`) as last read, atomically with the
    /// entries of the last native read; `None` before the first read or while the stream has
    /// none. See [`Fetcher::read_new`].
    size_mark: Option<usize>,
    /// New-entry reads done natively (`XREADGROUP`), not by `scripts::READ_NEW`.
    native_reads: u64,
    /// Where settlements in this process leave what they settled of this session's deliveries.
    mailbox: Mailbox,
}

impl Fetcher {
    /// Registers a new consumer in the subscription's group.
    pub async fn open(broker: &Broker, config: &SubscriptionConfig) -> Result<Self> {
        let consumer = format!("{}{}", schema::consumer::SESSION, uuid::Uuid::now_v7().simple());
        let mut conn = broker.conn().await?;
        let _: i64 = redis::cmd("XGROUP")
            .arg("CREATECONSUMER")
            .arg(broker.keys().stream(&config.stream))
            .arg(&config.name)
            .arg(&consumer)
            .query_async(&mut conn)
            .await?;
        Ok(Self {
            broker: broker.clone(),
            mailbox: broker.handoffs().register(&consumer),
            consumer,
            reader: broker.reader_permit().map(|permit| (permit, None)),
            size_mark: None,
            native_reads: 0,
        })
    }

    /// The session's Redis consumer name.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// Whether the session has a blocking reader of its own.
    pub fn has_reader(&self) -> bool {
        self.reader.is_some()
    }

    /// The keys ack ids are signed with now (asked once per batch: they may be reloaded).
    pub fn ack_keys(&self) -> std::sync::Arc<AckKeys> {
        self.broker.ack_keys()
    }

    /// Re-reads the subscription's settings.
    pub async fn config(&self, config: &SubscriptionConfig) -> Result<SubscriptionConfig> {
        self.broker.partition_subscription(&config.stream, &config.name).await
    }

    /// Asks the subscription's breaker for up to `want` deliveries.
    pub async fn breaker_permit(&self, config: &SubscriptionConfig, want: usize) -> Result<Permit> {
        self.broker.breaker_permit(config, want).await
    }

    /// Hands back half-open probes not used (logged if it fails: they expire with the state).
    pub async fn return_probes(&self, config: &SubscriptionConfig, unused: usize) {
        if let Err(e) = self.broker.breaker_return(config, unused).await {
            tracing::warn!(error = %e, "unused half-open probes not returned");
        }
    }

    /// Takes backlog entries `ids` of `source` within `budget` (`scripts::FETCH`); ones trimmed
    /// meanwhile are skipped (and counted as used).
    pub async fn take_backlog(
        &self,
        config: &SubscriptionConfig,
        source: Source,
        ids: &[String],
        budget: usize,
        force_one: bool,
    ) -> Result<Fetched> {
        let mut conn = self.broker.conn().await?;
        let fetch = FetchBacklog { source: self.source_key(config, source), budget, force: force_one, ids };
        let (rows, used) = scripts::run(&mut conn, &fetch).await?;
        drop(conn);
        let entries = rows.into_iter().map(|row| parse_entry(source, 1, row)).collect::<Result<Vec<_>>>()?;
        Ok(Fetched { entries, used, ..Fetched::default() })
    }

    /// Claims up to `count` due entries of `source` (`scripts::CLAIM_DUE`): retries whose backoff is
    /// over and deliveries whose ack deadline passed; dead-letters those at max attempts and
    /// parks expired ones with a backoff. Expiries count as breaker failures.
    pub async fn claim_due(&self, config: &SubscriptionConfig, source: Source, count: usize) -> Result<Fetched> {
        let claim = ClaimDue {
            keys: self.broker.keys(),
            config,
            source,
            consumer: &self.consumer,
            room: count,
            backoffs_ms: DeliveryPolicy::backoffs_ms(config, jitter()),
            dlq_max_len: self.broker.options().dlq_max_len,
        };
        let reply = {
            let mut conn = self.broker.conn().await?;
            match scripts::run(&mut conn, &claim).await {
                // The redrive stream's group is made by the first requeue.
                Err(BrokerError::NotFound(_)) if source == Source::Redrive => return Ok(Fetched::default()),
                other => other?,
            }
        };
        let (entries, dead_lettered, expired) = parse_claim_reply(source, reply)?;
        if !dead_lettered.is_empty() {
            tracing::info!(subscription = %config.name, dead_lettered = dead_lettered.len(), "max delivery attempts reached");
            self.broker.notify_settled();
        }
        if let Err(e) = self.broker.breaker_record(config, 0, expired).await {
            tracing::warn!(error = %e, "breaker outcome not recorded");
        }
        Ok(Fetched { entries, dead_lettered, expired, ..Fetched::default() })
    }

    /// Reads up to `count` new entries of `source` within `budget` bytes; returns the ids that
    /// did not fit as left, and the source's last entry id when nothing was new.
    ///
    /// Natively (`read_native`) when it can, else with `scripts::READ_NEW`: the
    /// redrive stream (its entries are written by REQUEUE, which keeps no size mark) and
    /// ordered subscriptions (their ordering gate is in the script) always use the script.
    pub async fn read_new(
        &mut self,
        config: &SubscriptionConfig,
        source: Source,
        count: usize,
        budget: usize,
        force_one: bool,
    ) -> Result<Fetched> {
        if source == Source::Stream
            && !config.ordered
            && let Some(fetched) = self.read_native(config, count, budget, force_one).await?
        {
            return Ok(fetched);
        }
        let mut conn = self.broker.conn().await?;
        let read = ReadNew {
            source: self.source_key(config, source),
            group: &config.name,
            consumer: &self.consumer,
            count,
            budget,
            force: force_one,
            gate: self.broker.keys().gate_base(config),
            redrive: source == Source::Redrive,
        };
        let reply = match scripts::run(&mut conn, &read).await {
            Err(BrokerError::NotFound(_)) if source == Source::Redrive => return Ok(Fetched::default()),
            other => other?,
        };
        drop(conn);
        let (entries, rest, idle_after) = parse_read_reply(source, reply)?;
        Ok(Fetched {
            entries,
            left: rest.into_iter().map(|id| (source, id)).collect(),
            idle_after,
            ..Fetched::default()
        })
    }

    /// Reads up to `count` new entries of the stream with a plain `XREADGROUP` when the stream's
    /// size mark (its largest payload, which PUBLISH raises in the script that stores the entry)
    /// says they fit the byte budget: `count × mark ≤ budget` (or a single entry the session
    /// must take whatever its size). `None` when it cannot: no mark yet (a stream created
    /// before the mark, with no publish since) or entries that may not fit; the caller uses
    /// `scripts::READ_NEW` then.
    ///
    /// The mark the decision uses is the one read in the same `MULTI`/`EXEC` as the session's
    /// previous read (the first read of a session reads it alone first). This read's
    /// transaction is `HGET` of the mark, `XREADGROUP COUNT count`, and `XREVRANGE COUNT 1` (the
    /// stream's last id, which a session that found nothing waits after, as READ_NEW returns
    /// it); all keys share the stream's hash tag, so it runs on one node of a cluster too. So
    /// the mark read is exact for the entries read: a publish that raises it afterwards stores
    /// entries this read did not see, and the next read decides with the new mark. If the mark
    /// rose between two reads, the entries are still split by their actual sizes as READ_NEW
    /// splits them (in order, while they fit, the first always when `force_one`); the rest go
    /// back to the session as left ids (its backlog), so no read ever hands out more than its
    /// budget. Only that one reply, per raise of the mark, can be larger than the budget.
    async fn read_native(
        &mut self,
        config: &SubscriptionConfig,
        count: usize,
        budget: usize,
        force_one: bool,
    ) -> Result<Option<Fetched>> {
        let key = self.source_key(config, Source::Stream);
        let meta = self.broker.keys().meta(&config.stream);
        let mut conn = self.broker.conn().await?;
        let mark = match self.size_mark {
            Some(mark) => mark,
            None => {
                let mark: Option<usize> =
                    redis::cmd("HGET").arg(&meta).arg(schema::meta::SIZE_MARK).query_async(&mut conn).await?;
                self.size_mark = mark;
                let Some(mark) = mark else { return Ok(None) };
                mark
            }
        };
        if !native_fits(count, mark, budget, force_one) {
            return Ok(None);
        }
        let (mark, read, last): (Option<usize>, Value, Vec<(String, Value)>) = redis::pipe()
            .atomic()
            .cmd("HGET")
            .arg(&meta)
            .arg(schema::meta::SIZE_MARK)
            .cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&config.name)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(count)
            .arg("STREAMS")
            .arg(&key)
            .arg(">")
            .cmd("XREVRANGE")
            .arg(&key)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await?;
        drop(conn);
        self.size_mark = mark;
        self.native_reads += 1;
        let read = parse_stream_reply(Source::Stream, read)?;
        if read.is_empty() {
            let last = last.into_iter().next().map_or_else(|| "0-0".to_string(), |(id, _)| id);
            return Ok(Some(Fetched { idle_after: Some(last), ..Fetched::default() }));
        }
        let (entries, left) = split_to_budget(read, budget, force_one);
        Ok(Some(Fetched { entries, left, ..Fetched::default() }))
    }

    /// How many new-entry reads of this session went natively (not through
    /// `scripts::READ_NEW`), for tests.
    pub fn native_reads(&self) -> u64 {
        self.native_reads
    }

    /// Waits up to `block` for one new entry of the stream in a blocking `XREADGROUP COUNT 1` on
    /// the session's own reader (it arrives with the wake-up: no extra round trip).
    pub async fn blocking_read(&mut self, config: &SubscriptionConfig, block: Duration) -> Result<Vec<Entry>> {
        let key = self.source_key(config, Source::Stream);
        let broker = self.broker.clone();
        let Some((_, slot)) = self.reader.as_mut() else { return Ok(Vec::new()) };
        let (conn, _) = match slot {
            Some(reader) => reader,
            None => slot.insert(broker.blocking_conn(&key, block.max(Duration::from_secs(1))).await?),
        };
        let reply: redis::RedisResult<Value> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&config.name)
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
        parse_stream_reply(Source::Stream, reply)
    }

    /// Waits up to `block` for the watcher to report an entry of the stream after `last`.
    pub async fn watch(&self, config: &SubscriptionConfig, last: &str, block: Duration) {
        let key = self.source_key(config, Source::Stream);
        let mut watch = self.broker.watch(&key, last);
        let _ = tokio::time::timeout(block, watch.arrived.changed()).await;
    }

    /// [`Fetcher::watch`] for an ordered subscription: also ends at a settlement in this process
    /// (it may have made an entry due), and after the reclaim interval at the latest (one made
    /// through another replica).
    pub async fn watch_or_settled(&self, config: &SubscriptionConfig, last: &str, block: Duration) {
        let block = block.min(self.broker.options().reclaim_interval);
        tokio::select! {
            () = self.watch(config, last, block) => {}
            () = self.broker.settled() => {}
        }
    }

    /// Waits for a settlement in this process, or `poll` (settlements through other replicas);
    /// returns at once when one was handed to this session and not drained yet.
    pub async fn settlement(&self, poll: Duration) {
        let settled = self.broker.settled();
        tokio::pin!(settled);
        // Listening before looking: a settlement between the look and the wait still wakes it.
        settled.as_mut().enable();
        if !self.mailbox.is_empty() {
            return;
        }
        tokio::select! {
            () = settled => {}
            () = tokio::time::sleep(poll) => {}
        }
    }

    /// What settlements in this process settled of this session's deliveries since the last
    /// call ([`crate::delivery::handoff`]).
    pub fn settled_here(&self) -> Vec<Handoff> {
        self.mailbox.drain()
    }

    /// The session's pending entries whose lease it still holds ([`DeliveryPolicy::lease_held`]).
    pub async fn leased(&self, config: &SubscriptionConfig) -> Result<HashSet<(Source, String)>> {
        let pending = self.own_pending(config).await?;
        Ok(pending
            .into_iter()
            .filter(|(_, _, idle)| DeliveryPolicy::lease_held(*idle, config.ack_deadline))
            .map(|(source, id, _)| (source, id))
            .collect())
    }

    /// The session's pending list on both sources, in id order: source, entry id, idle time.
    pub async fn own_pending(&self, config: &SubscriptionConfig) -> Result<Vec<(Source, String, Duration)>> {
        let mut conn = self.broker.conn().await?;
        let mut out = Vec::new();
        for source in [Source::Stream, Source::Redrive] {
            // Bounded: a pending list never exceeds what the session read.
            let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
                .arg(self.source_key(config, source))
                .arg(&config.name)
                .arg("-")
                .arg("+")
                .arg(MAX_OUTSTANDING_LIMIT * 2)
                .arg(&self.consumer)
                .query_async(&mut conn)
                .await
                .or_else(|e| if e.code() == Some("NOGROUP") { Ok(Vec::new()) } else { Err(e) })?;
            out.extend(pending.into_iter().map(|p| (source, p.0, Duration::from_millis(p.2))));
        }
        Ok(out)
    }

    /// Deletes the subscription's consumers left behind by crashed replicas: nothing pending
    /// and idle longer than `idle` (by Redis's clock), on both sources.
    pub async fn reap(&self, config: &SubscriptionConfig, idle: Duration) -> Result<u64> {
        let mut conn = self.broker.conn().await?;
        let mut total = 0;
        for source in [Source::Stream, Source::Redrive] {
            let reap =
                ReapConsumers { source: self.source_key(config, source), group: &config.name, idle_ms: millis(idle) };
            let reaped = scripts::run(&mut conn, &reap).await?;
            total += reaped;
        }
        if total > 0 {
            tracing::info!(subscription = %config.name, reaped = total, "idle consumers deleted");
        }
        Ok(total)
    }

    /// Acks entries the event-type filter excludes and counts them in the subscription's
    /// `filtered`; whether it worked (if not, they stay pending and are filtered when they
    /// come back).
    pub async fn ack_filtered(&self, config: &SubscriptionConfig, skip: &[Entry]) -> bool {
        let acked: Result<()> = async {
            let mut conn = self.broker.conn().await?;
            for source in [Source::Stream, Source::Redrive] {
                let entry_ids: Vec<&str> = skip.iter().filter(|e| e.source == source).map(|e| e.id.as_str()).collect();
                if !entry_ids.is_empty() {
                    let filtered = Ack {
                        keys: self.broker.keys(),
                        stream: &config.stream,
                        subscription: &config.name,
                        source,
                        filtered: true,
                        entry_ids,
                        gate: self.broker.keys().gate_base(config),
                    };
                    scripts::run(&mut conn, &filtered).await?;
                }
            }
            Ok(())
        }
        .await;
        match acked {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "filtered events not acknowledged; they are filtered again later");
                false
            }
        }
    }

    /// Turns an entry into a delivery with its ack id signed with `keys`; `None` (logged) for
    /// an entry without a payload.
    pub fn delivery(&self, config: &SubscriptionConfig, mut entry: Entry, keys: &AckKeys) -> Option<Delivery> {
        let payload: Vec<u8> = match entry.take_field(schema::entry::EVENT) {
            Some(Value::BulkString(bytes)) => bytes,
            _ => {
                tracing::warn!(entry_id = %entry.id, "stream entry without event payload skipped");
                return None;
            }
        };
        let text = |field: &str| match entry.field(field) {
            Some(Value::BulkString(v)) if !v.is_empty() => Some(String::from_utf8_lossy(v).into_owned()),
            _ => None,
        };
        let origin = text(schema::entry::ORIGIN).unwrap_or_else(|| entry.id.clone());
        let traceparent = text(schema::entry::TRACEPARENT);
        let ack_id = AckIdRef {
            stream: &config.stream,
            subscription: &config.name,
            source: entry.source,
            entry_id: &entry.id,
            consumer: &self.consumer,
            attempt: entry.attempt,
            delivered_ms: crate::now_ms(),
            traceparent: traceparent.as_deref(),
        }
        .encode(keys);
        Some(Delivery {
            source: entry.source,
            ack_id,
            publish_ms: entry_ms(&origin).unwrap_or(0),
            entry_id: entry.id,
            partition: crate::partition_index(&config.stream),
            payload,
            attempt: entry.attempt,
            traceparent,
        })
    }

    /// Releases the session's pending entries (`backlog` of them read but not delivered) to the
    /// parking consumer as due at once and deletes its consumer. A blocking read still waiting
    /// in Redis (its caller gave up on it) is unblocked first, so no entry is read into the
    /// consumer after it is released.
    pub async fn release(mut self, config: &SubscriptionConfig, backlog: usize) -> Result<u64> {
        if let Some((_, Some((reader, id)))) = self.reader.take() {
            let _: i64 = self.broker.unblock(reader.node(), id).await?;
            drop(reader);
        }
        let mut conn = self.broker.conn().await?;
        let mut released = 0;
        for source in [Source::Stream, Source::Redrive] {
            // Bounded: a pending list never exceeds what the session read.
            for _ in 0..=(MAX_OUTSTANDING_LIMIT * 2 + backlog) / 1000 + 1 {
                let release = ReleaseConsumer {
                    source: self.source_key(config, source),
                    group: &config.name,
                    consumer: &self.consumer,
                    idle_ms: millis(config.ack_deadline),
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

    /// The Redis stream of `source`.
    fn source_key(&self, config: &SubscriptionConfig, source: Source) -> String {
        self.broker.keys().source(&config.stream, &config.name, source)
    }
}

/// A jitter factor in [0, 1) for retry backoffs, from the clock's sub-millisecond noise (no
/// cryptographic need; avoids a dependency).
pub(crate) fn jitter() -> f64 {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    f64::from(nanos % 1_000_000) / 1_000_000.0
}

/// Reads a `scripts::READ_NEW` reply: `{1, entries, rest ids}` or `{0, last id}`.
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

/// Reads an `XREADGROUP` reply of new entries of one stream (first attempts). RESP2:
/// `[[key, [[id, fields]...]]]`; nil when nothing was read.
fn parse_stream_reply(source: Source, reply: Value) -> Result<Vec<Entry>> {
    let mut entries = Vec::new();
    if let Value::Array(streams) = reply {
        for stream in streams {
            let Value::Array(key_rows) = stream else { return Err(bad_entry()) };
            let Some(Value::Array(rows)) = key_rows.into_iter().nth(1) else { return Err(bad_entry()) };
            entries.reserve(rows.len());
            for row in rows {
                entries.push(parse_entry(source, 1, row)?);
            }
        }
    }
    Ok(entries)
}

/// Whether a native read of `count` entries surely fits `budget` bytes when no entry is larger
/// than `mark`: `count × mark ≤ budget`, or one entry the session takes whatever its size.
fn native_fits(count: usize, mark: usize, budget: usize, force_one: bool) -> bool {
    count.saturating_mul(mark) <= budget || (force_one && count == 1)
}

/// Splits entries read in order as `scripts::READ_NEW` does: taken while their payloads fit
/// `budget` (the first always when `force_one`); from the first that does not, the rest are
/// left (their ids, for the session's backlog).
fn split_to_budget(read: Vec<Entry>, mut budget: usize, force_one: bool) -> (Vec<Entry>, Vec<(Source, String)>) {
    let mut taken = Vec::with_capacity(read.len());
    let mut left = Vec::new();
    for entry in read {
        let size = entry.size();
        if left.is_empty() && ((force_one && taken.is_empty()) || size <= budget) {
            budget = budget.saturating_sub(size);
            taken.push(entry);
        } else {
            left.push((entry.source, entry.id));
        }
    }
    (taken, left)
}

/// Reads one stream entry `{id, {field, value, ...}}`.
fn parse_entry(source: Source, attempt: u32, row: Value) -> Result<Entry> {
    let Value::Array(parts) = row else { return Err(bad_entry()) };
    let mut parts = parts.into_iter();
    let (Some(id), Some(fields), None) = (parts.next(), parts.next(), parts.next()) else { return Err(bad_entry()) };
    Ok(Entry { source, id: entry_text(id)?, attempt, fields: entry_fields(fields)? })
}

/// An entry id (or other text) Redis sent as a bulk or simple string, moved out of the reply.
fn entry_text(value: Value) -> Result<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes).map_err(|_| bad_entry()),
        Value::SimpleString(text) => Ok(text),
        _ => Err(bad_entry()),
    }
}

/// An entry's flat `field, value, ...` list as pairs, names and values moved out of the reply
/// (none copied); nil (an entry trimmed away) has none.
fn entry_fields(value: Value) -> Result<Vec<(Vec<u8>, Value)>> {
    let flat = match value {
        Value::Array(flat) => flat,
        Value::Nil => return Ok(Vec::new()),
        _ => return Err(bad_entry()),
    };
    let mut fields = Vec::with_capacity(flat.len() / 2);
    let mut flat = flat.into_iter();
    while let Some(name) = flat.next() {
        let (Value::BulkString(name), Some(value)) = (name, flat.next()) else { return Err(bad_entry()) };
        fields.push((name, value));
    }
    Ok(fields)
}

/// The error of a stream entry reply that is not `{id, {field, value, ...}}`.
fn bad_entry() -> BrokerError {
    BrokerError::Internal("unexpected stream entry reply".into())
}

/// Dead-lettered entries: entry id and traceparent.
type DeadLettered = Vec<(String, Option<String>)>;

/// Reads a `scripts::CLAIM_DUE` reply: `{ {{id, count, fields}...}, {{id, traceparent}...}, expired }`.
fn parse_claim_reply(source: Source, reply: Value) -> Result<(Vec<Entry>, DeadLettered, usize)> {
    let bad = || BrokerError::Internal("unexpected claim reply".into());
    let Value::Array(parts) = reply else { return Err(bad()) };
    let mut parts = parts.into_iter();
    let (Some(Value::Array(claimed)), Some(dead), Some(expired)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let mut entries = Vec::with_capacity(claimed.len());
    for item in claimed {
        let Value::Array(parts) = item else { return Err(bad()) };
        let mut parts = parts.into_iter();
        let (Some(id), Some(count), Some(fields), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let attempt = u32::try_from(redis::from_redis_value::<u64>(count)?).unwrap_or(u32::MAX);
        entries.push(Entry { source, id: entry_text(id)?, attempt, fields: entry_fields(fields)? });
    }
    let dead: Vec<(String, String)> = redis::from_redis_value(dead)?;
    let dead = dead.into_iter().map(|(id, tp)| (id, (!tp.is_empty()).then_some(tp))).collect();
    Ok((entries, dead, redis::from_redis_value(expired)?))
}
