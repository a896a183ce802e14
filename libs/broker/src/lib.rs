//! eventflow's broker: the Redis Streams model behind every service. It knows nothing of gRPC.
//!
//! # Model
//! A stream is a Redis stream plus a settings hash; a subscription is a consumer group on that
//! stream plus a settings hash; each open delivery session (one Subscribe call) is one Redis
//! consumer of the group. [`schema`] names every key, field and prefix ([`keys`] builds the
//! keys); every key of a stream shares the hash tag `{<stream>}` so the multi-key scripts of
//! [`scripts`] stay atomic on Redis Cluster.
//!
//! # Publish
//! Concurrent Publish calls are group-committed (`publish`): one Lua script per stream per
//! commit checks the stream exists, looks the events' ids up in the stream's dedup buckets (hashes
//! of one window-wide slice of Redis time each: one HMGET in the current and one in the previous
//! bucket), and per event returns the first entry id of a duplicate within the dedup window or
//! XADDs; the new ids go into the current bucket with one HSET — atomically. It does not trim: it says when the stream is over its max
//! length, and [`retention`] trims (the TRIM script, which accounts for unsettled events).
//!
//! # Delivery ([`session`], [`delivery`])
//! A session is a loop joining a delivery policy (what to do next, without I/O, over an
//! injectable clock) and a Redis fetcher (doing it). A session first claims what is due (once
//! per reclaim interval among the subscription's sessions in a process), then reads new
//! entries:
//! * one script (`CLAIM_DUE`) takes entries whose retry backoff is over and deliveries whose ack
//!   deadline passed (`XPENDING IDLE`, with their delivery counts); entries at the
//!   subscription's max delivery attempts are moved to the dead-letter stream; the rest are
//!   XCLAIMed — atomically, so when several replicas race for one entry only one wins it.
//! * `XREADGROUP ... >` reads new entries (blocking briefly when nothing was claimed), from the
//!   stream and from the subscription's redrive stream (requeued dead letters).
//! * Flow control counts the session's own unsettled deliveries; settlements in this process
//!   hand the session the entries they settled ([`delivery::handoff`]), freeing that room at
//!   once; at the limit with nothing handed over (and every `capacity_poll` in any case) the
//!   session re-reads its own pending list from Redis (settlements may happen on another
//!   replica, leases expire).
//!
//! # Settlement ([`settle`])
//! Ack ids are self-describing and signed with a key the replicas share ([`ack_id`]): any
//! replica settles any delivery, and an edited ack id is invalid. Ack is XACK.
//! Nack (deadline 0) XCLAIMs the entry to the parking consumer with `IDLE = ack deadline`, so it
//! is due at once (or after the retry backoff, via the delay set) without counting against its
//! old session's flow control; a delay of N s sets
//! `IDLE = deadline - N` (redelivered N s from now); both use JUSTID so the delivery count is
//! kept. Reject dead-letters at once. When a session closes, its pending entries are handed to
//! the parking consumer as due, and the consumer is deleted.

pub mod ack_id;
pub mod admin;
pub mod breaker;
pub mod conn;
pub mod connect;
pub mod delivery;
pub mod dlq;
mod error;
pub mod keys;
pub mod layout;
pub mod model;
pub mod partition;
mod pooled;
mod publish;
pub mod replay;
pub mod retention;
pub mod schema;
pub mod scripts;
pub mod server;
pub mod session;
pub mod settle;
pub mod stats;
mod watch;

use std::{
    sync::{Arc, OnceLock, Weak},
    time::Duration,
};

use tokio::sync::Notify;

pub use ack_id::{AckKeySource, AckKeys};
pub use breaker::BreakerState;
pub use conn::RedisConn;
pub use connect::{ClientIdentity, RedisTls};
pub use error::{BrokerError, Result, UNAVAILABLE_CODES};
pub use keys::{Keys, partition_index, partition_name, validate_name, validate_partition_name};
pub use layout::LayoutCheck;
pub use model::*;
pub use partition::{MAX_PARTITIONS, partition_names};
pub use publish::{Order, PendingPublish};
pub use server::{EvictionPolicy, ServerState};
pub use session::{BatchStats, FlowControl, Session};
pub use settle::AckIds;

/// The consumer that holds nacked and released entries until a session reclaims them. Its name
/// has a character that validated session consumer names cannot collide with.
pub const PARKING_CONSUMER: &str = schema::consumer::PARKED;

/// Default of [`BrokerOptions::dlq_max_len`].
pub const DEFAULT_DLQ_MAX_LEN: u64 = 100_000;

/// Tunables of a broker; the defaults suit production.
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    /// Key prefix, so several deployments or tests share one Redis.
    pub prefix: String,
    /// Most pooled connections for commands (blocking reads use their own).
    pub pool_size: usize,
    /// How long one blocking XREADGROUP waits for new entries; bounds how late a session
    /// notices entries that became due while it waited.
    pub block: Duration,
    /// How often the sessions of a subscription (one of them per interval, per process)
    /// look for deliveries whose deadline passed and retries that are due.
    pub reclaim_interval: Duration,
    /// How often a session at its flow-control limit re-reads its pending list when no local
    /// settlement woke it (settlements on other replicas).
    pub capacity_poll: Duration,
    /// Connect and response timeout of a Redis command; Redis being down is reported after it.
    pub command_timeout: Duration,
    /// Most dead letters one subscription keeps (0 = no cap): a consumer failing on every
    /// event must not fill Redis. The oldest go first, counted (`dlq_overflow`).
    pub dlq_max_len: u64,
    /// Serve even though Redis's `maxmemory-policy` is not `noeviction` (see [`server`]): the
    /// operator accepts that a full Redis may evict dedup keys or events.
    pub allow_eviction_policy: bool,
    /// Most payload bytes of Publish calls queued or being committed at once (1 to 4 GiB); bounds
    /// the publisher's memory when Redis is slower than its producers (see `publish`).
    pub max_publish_bytes_in_flight: usize,
    /// Sessions that wait for new entries in a blocking XREADGROUP on a connection of their
    /// own (the lowest latency); sessions beyond it wait through the shared watcher (one more
    /// round trip). Bounds a replica's Redis connections at `pool_size + blocking_readers + 1`.
    pub blocking_readers: usize,
    /// Where the keys ack ids are signed and verified with come from ([`ack_id`]), asked on
    /// every use so a reloaded key takes effect at once. Every replica that settles another's
    /// deliveries must share them; `None` = a random key made at start, so ack ids settle only
    /// on this process (fine for a single replica, or a service that delivers nothing).
    pub ack_keys: Option<Arc<dyn AckKeySource>>,
    /// TLS material for a `rediss://` Redis (CA, client certificate), applied to every
    /// connection the broker opens ([`connect`]); empty = the URL alone decides.
    pub redis_tls: RedisTls,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        Self {
            prefix: "ef".into(),
            pool_size: 64,
            block: Duration::from_millis(500),
            reclaim_interval: Duration::from_millis(250),
            capacity_poll: Duration::from_millis(100),
            command_timeout: Duration::from_secs(2),
            dlq_max_len: DEFAULT_DLQ_MAX_LEN,
            allow_eviction_policy: false,
            max_publish_bytes_in_flight: 64 << 20,
            blocking_readers: 16,
            ack_keys: None,
            redis_tls: RedisTls::default(),
        }
    }
}

/// A handle on the broker: cheap to clone, shared by all handlers of a service.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    /// Connections for ordinary commands and for blocking reads ([`conn`]).
    pool: conn::RedisPool,
    /// The key layout under the configured prefix.
    keys: Keys,
    /// Woken on every settlement in this process, so sessions at their flow-control limit
    /// re-check at once instead of at the next poll.
    settled: Notify,
    /// Where settlements in this process leave the entries they settled for their sessions.
    handoffs: Arc<delivery::handoff::Handoffs>,
    /// The tunables.
    options: BrokerOptions,
    /// The group-commit queue of Publish calls, started on first use (needs a runtime).
    publish_queue: OnceLock<publish::Queue>,
    /// Streams with a background retention trim running (one at a time per stream).
    trimming: retention::Trimming,
    /// Wakes idle delivery sessions when their stream gets entries.
    watcher: watch::Watcher,
    /// Permits for sessions to hold a blocking reader connection of their own.
    readers: Arc<tokio::sync::Semaphore>,
    /// The reclaim and reap schedule of each subscription with sessions open here.
    upkeeps: delivery::Upkeeps,
    /// Partition counts of the streams this process publishes to ([`partition::Cache`]).
    partitions: partition::Cache,
    /// Signs and verifies ack ids: the configured keys, or a random key of this process.
    ack_keys: Arc<dyn AckKeySource>,
}

/// A reference to a broker that does not keep it alive (held by its background tasks).
pub(crate) struct WeakBroker(Weak<Inner>);

impl WeakBroker {
    pub(crate) fn upgrade(&self) -> Option<Broker> {
        self.0.upgrade().map(|inner| Broker { inner })
    }
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").field("prefix", &self.inner.keys.prefix()).finish()
    }
}

impl Broker {
    /// A broker on the Redis at `url` (with `options.redis_tls` for `rediss://`). Does not
    /// connect yet: Redis may come up later.
    pub fn new(url: &str, options: BrokerOptions) -> Result<Self> {
        Self::check(&options)?;
        let client = connect::client(url, &options.redis_tls)?;
        let pool = conn::RedisPool::single(client, options.pool_size, options.command_timeout)?;
        Self::with_pool(pool, options)
    }

    /// A broker on the Redis Cluster reached through any of `nodes` (seed node URLs, all
    /// `redis://` or all `rediss://`, with `options.redis_tls` as for one node). Commands are
    /// routed by key slot and follow MOVED/ASK redirections ([`conn`]); `options.pool_size`
    /// does not apply (one multiplexed connection per node, shared). Does not connect yet.
    pub fn cluster(nodes: &[String], options: BrokerOptions) -> Result<Self> {
        Self::check(&options)?;
        let pool = conn::RedisPool::cluster(nodes, &options.redis_tls, options.command_timeout)?;
        Self::with_pool(pool, options)
    }

    /// Refuses options no broker can run with.
    fn check(options: &BrokerOptions) -> Result<()> {
        if options.prefix.is_empty() || !options.prefix.chars().all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c))
        {
            return Err(BrokerError::invalid("key_prefix", "must be 1+ characters of [A-Za-z0-9._:-]"));
        }
        if options.max_publish_bytes_in_flight == 0 || u32::try_from(options.max_publish_bytes_in_flight).is_err() {
            return Err(BrokerError::invalid("max_publish_bytes_in_flight", "must be 1 to 4294967295 bytes"));
        }
        Ok(())
    }

    /// The broker over `pool`.
    fn with_pool(pool: conn::RedisPool, options: BrokerOptions) -> Result<Self> {
        let ack_keys: Arc<dyn AckKeySource> = match &options.ack_keys {
            Some(keys) => keys.clone(),
            None => Arc::new(Arc::new(AckKeys::random()?)),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                keys: Keys::new(options.prefix.clone()),
                settled: Notify::new(),
                handoffs: Arc::default(),
                publish_queue: OnceLock::new(),
                trimming: retention::Trimming::default(),
                watcher: watch::Watcher::default(),
                readers: Arc::new(tokio::sync::Semaphore::new(options.blocking_readers)),
                upkeeps: delivery::Upkeeps::default(),
                partitions: partition::Cache::default(),
                ack_keys,
                options,
            }),
        })
    }

    /// The key layout in use.
    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// The tunables in use.
    pub fn options(&self) -> &BrokerOptions {
        &self.inner.options
    }

    /// The keys ack ids are signed and verified with now.
    pub fn ack_keys(&self) -> Arc<AckKeys> {
        self.inner.ack_keys.current()
    }

    /// A pooled connection for ordinary commands.
    pub async fn conn(&self) -> Result<RedisConn> {
        self.inner.pool.get().await
    }

    /// A new dedicated connection for blocking reads of stream `key` (on a cluster: to the
    /// node owning its slot) whose response timeout allows a read of `block`, and its Redis
    /// client id (to interrupt a blocked read with [`Broker::unblock`]).
    pub(crate) async fn blocking_conn(&self, key: &str, block: Duration) -> Result<(conn::BlockingConn, i64)> {
        self.inner.pool.blocking(key, block).await
    }

    /// `CLIENT UNBLOCK client_id` on `node` (a blocking connection's node on a cluster, else
    /// `None`): 1 if the client was blocked.
    pub(crate) async fn unblock(&self, node: Option<&(String, u16)>, client_id: i64) -> Result<i64> {
        self.inner.pool.unblock(node, client_id).await
    }

    /// Whether the broker runs on Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.inner.pool.is_cluster()
    }

    /// A weak reference for background tasks.
    pub(crate) fn downgrade(&self) -> WeakBroker {
        WeakBroker(Arc::downgrade(&self.inner))
    }

    /// The group-commit queue of Publish calls.
    pub(crate) fn publish_queue(&self) -> &publish::Queue {
        self.inner.publish_queue.get_or_init(|| publish::start(self))
    }

    /// The reclaim and reap schedule shared by the sessions of subscription `name` of `stream`
    /// in this process ([`delivery::upkeep`]).
    pub(crate) fn upkeep(&self, stream: &str, name: &str, now: std::time::Instant) -> Arc<delivery::Upkeep> {
        self.inner.upkeeps.get(stream, name, now)
    }

    /// A permit for a session's own blocking reader, if one is free.
    pub(crate) fn reader_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.inner.readers.clone().try_acquire_owned().ok()
    }

    /// The new-entry watcher of idle sessions.
    pub(crate) fn watcher(&self) -> &watch::Watcher {
        &self.inner.watcher
    }

    /// The partition counts cached for publishing.
    pub(crate) fn partition_cache(&self) -> &partition::Cache {
        &self.inner.partitions
    }

    /// The streams with a background trim running.
    pub(crate) fn trimming(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.inner.trimming.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Checks that Redis answers (for health reporting).
    pub async fn ping(&self) -> Result<()> {
        let mut conn = self.conn().await?;
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }

    /// Wakes sessions waiting for a settlement.
    pub(crate) fn notify_settled(&self) {
        self.inner.settled.notify_waiters();
    }

    /// The mailboxes of this process's sessions ([`delivery::handoff`]).
    pub(crate) fn handoffs(&self) -> &Arc<delivery::handoff::Handoffs> {
        &self.inner.handoffs
    }

    /// Resolves at the next settlement in this process.
    pub(crate) fn settled(&self) -> tokio::sync::futures::Notified<'_> {
        self.inner.settled.notified()
    }
}

/// Milliseconds since the Unix epoch, by this machine's clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
