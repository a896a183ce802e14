//! A delivery session: one open Subscribe call, one Redis consumer of the subscription's group.
//!
//! Each [`Session::next_batch`] call:
//! 1. if the session holds `max_messages` (or `max_bytes`) unsettled deliveries, waits for a
//!    settlement in this process or `capacity_poll`, then re-reads its own pending list from
//!    Redis (settlements may come through another replica) and returns an empty batch if
//!    still full;
//! 2. every `reclaim_interval`, reclaims due deliveries: `XPENDING IDLE <ack deadline>` lists
//!    them with their delivery counts; those at max delivery attempts are dead-lettered, the
//!    rest XCLAIMed with the same min-idle time (only one replica wins each);
//! 3. fills the remaining room with new entries (`XREADGROUP >`), blocking up to `block` on a
//!    dedicated connection when nothing was reclaimed.
//!
//! [`Session::close`] hands the session's unsettled entries to the parking consumer as due
//! at once and deletes the consumer, so other sessions redeliver them without waiting for the
//! deadline.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use redis::{
    AsyncCommands, Pipeline, Value,
    aio::MultiplexedConnection,
    streams::{StreamClaimReply, StreamId, StreamReadOptions, StreamReadReply},
};

use crate::{
    Broker, BrokerError, Delivery, PARKING_CONSUMER, Result, SubscriptionConfig,
    ack_id::AckId,
    admin::millis,
    model::entry_ms,
    query_script_pipeline,
    scripts::{DEAD_LETTER, RELEASE_CONSUMER},
};

/// Default `max_messages` when the client asks for 0.
pub const DEFAULT_MAX_OUTSTANDING: usize = 100;
/// Largest `max_messages` a session accepts.
pub const MAX_OUTSTANDING_LIMIT: usize = 10_000;
/// How often a session re-reads its subscription's settings.
const CONFIG_REFRESH: Duration = Duration::from_secs(5);
/// The reason stored with events dead-lettered for too many deliveries.
pub const MAX_ATTEMPTS_REASON: &str = "max delivery attempts";

/// Flow control of one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowControl {
    /// Most unsettled deliveries at once.
    pub max_messages: usize,
    /// Most unsettled payload bytes at once; 0 = no byte limit. One event is always delivered.
    pub max_bytes: usize,
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
    /// The stream key, computed once.
    stream_key: String,
    /// Unsettled deliveries of this session: entry id -> payload bytes.
    outstanding: HashMap<String, usize>,
    /// Sum of `outstanding` values.
    outstanding_bytes: usize,
    /// Running payload size average, to size reads under a byte limit.
    avg_bytes: usize,
    /// The dedicated connection for blocking reads; reopened after an error.
    reader: Option<MultiplexedConnection>,
    /// When due deliveries were last reclaimed.
    last_reclaim: Option<Instant>,
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
        let consumer = format!("c-{}", uuid::Uuid::now_v7().simple());
        let stream_key = broker.keys().stream(stream);
        let mut conn = broker.conn().await?;
        let _: i64 = redis::cmd("XGROUP")
            .arg("CREATECONSUMER")
            .arg(&stream_key)
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
            stream_key,
            outstanding: HashMap::new(),
            outstanding_bytes: 0,
            avg_bytes: 1024,
            reader: None,
            last_reclaim: None,
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

    /// The next deliveries; may be empty (nothing arrived within the block time, or the
    /// session is at its flow-control limit), so callers can check for cancellation.
    pub async fn next_batch(&mut self) -> Result<Vec<Delivery>> {
        if self.config_read.elapsed() >= CONFIG_REFRESH {
            self.config = self.broker.get_subscription(&self.config.stream, &self.config.name).await?;
            self.config_read = Instant::now();
        }
        if self.room() == 0 {
            let poll = self.broker.options().capacity_poll;
            tokio::select! {
                () = self.broker.settled() => {}
                () = tokio::time::sleep(poll) => {}
            }
            self.refresh_outstanding().await?;
            if self.room() == 0 {
                return Ok(Vec::new());
            }
        }
        let mut batch = Vec::new();
        let interval = self.broker.options().reclaim_interval;
        if self.last_reclaim.is_none_or(|t| t.elapsed() >= interval) {
            batch = self.reclaim(self.room()).await?;
            self.last_reclaim = Some(Instant::now());
        }
        let room = self.room().saturating_sub(batch.len());
        if room > 0 {
            let block = batch.is_empty().then_some(self.broker.options().block);
            batch.extend(self.read_new(room, block).await?);
        }
        for delivery in &batch {
            let size = delivery.payload.len();
            self.avg_bytes = (self.avg_bytes * 7 + size) / 8;
            if self.outstanding.insert(delivery.entry_id.clone(), size).is_none() {
                self.outstanding_bytes += size;
            }
        }
        Ok(batch)
    }

    /// Releases the session's unsettled entries (due at once) and deletes its consumer.
    pub async fn close(self) -> Result<u64> {
        let mut conn = self.broker.conn().await?;
        let released: u64 = RELEASE_CONSUMER
            .key(&self.stream_key)
            .arg(&self.config.name)
            .arg(&self.consumer)
            .arg(PARKING_CONSUMER)
            .arg(millis(self.config.ack_deadline))
            .invoke_async(&mut conn)
            .await?;
        Ok(released)
    }

    /// How many more deliveries flow control allows now.
    fn room(&self) -> usize {
        let by_count = self.flow.max_messages.saturating_sub(self.outstanding.len());
        if self.flow.max_bytes == 0 {
            return by_count;
        }
        if self.outstanding_bytes >= self.flow.max_bytes {
            return if self.outstanding.is_empty() { 1 } else { 0 };
        }
        let by_bytes = (self.flow.max_bytes - self.outstanding_bytes) / self.avg_bytes.max(1);
        by_count.min(by_bytes.max(1))
    }

    /// Drops from `outstanding` what is no longer pending to this consumer in Redis.
    async fn refresh_outstanding(&mut self) -> Result<()> {
        let mut conn = self.broker.conn().await?;
        let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
            .arg(&self.stream_key)
            .arg(&self.config.name)
            .arg("-")
            .arg("+")
            .arg(self.outstanding.len().max(1))
            .arg(&self.consumer)
            .query_async(&mut conn)
            .await?;
        let still: std::collections::HashSet<String> = pending.into_iter().map(|p| p.0).collect();
        self.outstanding.retain(|id, _| still.contains(id));
        self.outstanding_bytes = self.outstanding.values().sum();
        Ok(())
    }

    /// Claims up to `room` deliveries whose deadline passed; dead-letters those at max attempts.
    async fn reclaim(&mut self, room: usize) -> Result<Vec<Delivery>> {
        if room == 0 {
            return Ok(Vec::new());
        }
        let deadline_ms = millis(self.config.ack_deadline);
        let mut conn = self.broker.conn().await?;
        let due: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
            .arg(&self.stream_key)
            .arg(&self.config.name)
            .arg("IDLE")
            .arg(deadline_ms)
            .arg("-")
            .arg("+")
            .arg(room)
            .query_async(&mut conn)
            .await?;
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let max = u64::from(self.config.max_delivery_attempts);
        let (exhausted, retry): (Vec<_>, Vec<_>) = due.into_iter().partition(|p| p.3 >= max);
        if !exhausted.is_empty() {
            self.dead_letter_exhausted(&mut conn, &exhausted, deadline_ms).await?;
        }
        if retry.is_empty() {
            return Ok(Vec::new());
        }
        let counts: HashMap<&str, u64> = retry.iter().map(|p| (p.0.as_str(), p.3)).collect();
        let ids: Vec<&str> = retry.iter().map(|p| p.0.as_str()).collect();
        let claimed: StreamClaimReply =
            conn.xclaim(&self.stream_key, &self.config.name, &self.consumer, deadline_ms, &ids).await?;
        Ok(claimed
            .ids
            .into_iter()
            .filter_map(|entry| {
                let attempt = counts.get(entry.id.as_str()).map_or(1, |c| c + 1);
                self.delivery(entry, u32::try_from(attempt).unwrap_or(u32::MAX))
            })
            .collect())
    }

    /// Moves deliveries that reached max attempts to the dead-letter stream.
    async fn dead_letter_exhausted(
        &self,
        conn: &mut deadpool_redis::Connection,
        exhausted: &[(String, String, u64, u64)],
        deadline_ms: u64,
    ) -> Result<()> {
        let mut pipe = Pipeline::with_capacity(exhausted.len());
        for (id, owner, _, count) in exhausted {
            let attempt = u32::try_from(*count).unwrap_or(u32::MAX);
            let (stream, sub) = (&self.config.stream, &self.config.name);
            self.broker.dead_letter_cmd(&mut pipe, stream, sub, id, owner, attempt, deadline_ms, MAX_ATTEMPTS_REASON);
        }
        let moved = query_script_pipeline(conn, &pipe, &DEAD_LETTER).await?;
        let n = moved.iter().filter(|v| matches!(v, Value::Int(1))).count();
        if n > 0 {
            tracing::info!(subscription = %self.config.name, dead_lettered = n, "max delivery attempts reached");
            self.broker.notify_settled();
        }
        Ok(())
    }

    /// Reads up to `count` new entries, blocking up to `block` if given.
    async fn read_new(&mut self, count: usize, block: Option<Duration>) -> Result<Vec<Delivery>> {
        let mut opts = StreamReadOptions::default().group(&self.config.name, &self.consumer).count(count);
        if let Some(block) = block {
            opts = opts.block(usize::try_from(block.as_millis()).unwrap_or(usize::MAX));
        }
        let wait = block.unwrap_or_default();
        let reader = match self.reader.as_mut() {
            Some(reader) => reader,
            None => self.reader.insert(self.broker.blocking_conn(wait.max(Duration::from_secs(1))).await?),
        };
        let reply: redis::RedisResult<Option<StreamReadReply>> =
            reader.xread_options(&[&self.stream_key], &[">"], &opts).await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => {
                self.reader = None;
                return Err(e.into());
            }
        };
        Ok(reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .filter_map(|entry| self.delivery(entry, 1))
            .collect())
    }

    /// Turns a stream entry into a delivery with its ack id.
    fn delivery(&self, entry: StreamId, attempt: u32) -> Option<Delivery> {
        let payload: Vec<u8> = match entry.map.get("e") {
            Some(Value::BulkString(bytes)) => bytes.clone(),
            _ => {
                tracing::warn!(entry_id = %entry.id, "stream entry without event payload skipped");
                return None;
            }
        };
        let ack_id = AckId {
            stream: self.config.stream.clone(),
            subscription: self.config.name.clone(),
            entry_id: entry.id.clone(),
            consumer: self.consumer.clone(),
            attempt,
        }
        .encode();
        Some(Delivery { ack_id, publish_ms: entry_ms(&entry.id).unwrap_or(0), entry_id: entry.id, payload, attempt })
    }
}
