//! The broker's connections to Redis: the one place that knows what kind of Redis deployment
//! the broker talks to. Everything else in the broker asks `RedisPool` for a [`RedisConn`]
//! (ordinary commands, pipelines, scripts) or a `BlockingConn` (blocking reads), and never
//! names a pool or connection type of a Redis library.
//!
//! How: [`RedisConn`] is an enum with one variant per deployment kind and implements
//! [`redis::aio::ConnectionLike`] by delegating to the variant's connection, so `redis::cmd`,
//! pipelines and the script calls of [`crate::scripts`] run through it unchanged. The cost is
//! one `match` per command — no boxing beyond what the redis crate's futures already do.
//! `RedisPool` is the matching enum of pools.
//!
//! Two kinds:
//! * `Single`: one Redis node, a deadpool pool of multiplexed connections (at most
//!   `pool_size`, waiting at most `command_timeout` for one), built from the client of
//!   [`crate::connect`] so `rediss://` material reaches it.
//! * `Cluster`: Redis Cluster through redis-rs's `cluster_async::ClusterConnection`, which
//!   keeps one multiplexed connection per node, routes each command by the hash slot of its
//!   key and follows MOVED/ASK redirections and topology changes by itself. It is cheap to
//!   clone and shared by every caller, so it needs no pool: one is opened on first use (the
//!   broker does not connect at start, Redis may come up later) and cloned for each
//!   `RedisConn`. A pipeline goes to the slot of its first key: callers keep pipelines within
//!   one stream's hash tag (`crate::scripts::call` splits script batches by slot); commands
//!   that must reach the node of a slot without naming a key there (SCAN) use
//!   `RedisConn::query_on_slot_of`.
//!
//! Blocking reads get a dedicated connection (`BlockingConn`) so a blocked read holds up no
//! other command: on a single node, a connection to it; on a cluster, a connection to the
//! master that owns the slot of the stream being read (found with `CLUSTER SLOTS`), and
//! `CLIENT UNBLOCK` for it is routed to that same node. When the slot moves, the read fails
//! with MOVED and the session opens a new reader (routed anew) on its next read.

use std::time::Duration;

use deadpool_redis::{Pool, PoolError, Runtime};
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, Pipeline, RedisFuture, Value,
    aio::ConnectionLike,
    cluster::ClusterClient,
    cluster_async::ClusterConnection,
    cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr},
};

use crate::{BrokerError, RedisTls, Result};

/// A dedicated connection for blocking reads (`XREADGROUP BLOCK`), opened per session and not
/// pooled, so a blocked read holds no pooled connection.
pub(crate) struct BlockingConn {
    /// The connection to the node that serves the read.
    conn: redis::aio::MultiplexedConnection,
    /// On a cluster, the node's address: `CLIENT UNBLOCK` for this connection must go there.
    node: Option<(String, u16)>,
}

impl BlockingConn {
    /// The node this connection is open to on a cluster (`None` on a single node).
    pub(crate) fn node(&self) -> Option<&(String, u16)> {
        self.node.as_ref()
    }
}

impl ConnectionLike for BlockingConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.conn.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.conn.req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}

/// A pooled connection for ordinary commands, returned to its pool when dropped.
pub enum RedisConn {
    /// A connection to a single Redis node.
    Single(deadpool_redis::Connection),
    /// A handle on the shared Redis Cluster connection (routes by key, follows redirections).
    Cluster(ClusterConnection),
}

impl RedisConn {
    /// Whether this is a Redis Cluster connection (pipelines must then stay within one slot).
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// Another handle on the same cluster connection, to run commands concurrently; `None` on
    /// a single node (whose pooled connection is not shared).
    pub(crate) fn cluster_clone(&self) -> Option<Self> {
        match self {
            Self::Cluster(conn) => Some(Self::Cluster(conn.clone())),
            Self::Single(_) => None,
        }
    }

    /// Runs `cmd` on the master that owns the hash slot of `key` (on a single node: there).
    /// For commands that name no key of that slot but must reach its node, like a `SCAN` for
    /// the keys of one hash tag (they all live in that one slot, so on that one master).
    pub(crate) async fn query_on_slot_of<T: redis::FromRedisValue>(&mut self, key: &str, cmd: &Cmd) -> Result<T> {
        match self {
            Self::Single(conn) => Ok(cmd.query_async(conn).await?),
            Self::Cluster(conn) => {
                let route = Route::new(hash_slot(key.as_bytes()), SlotAddr::Master);
                let value = conn
                    .route_command(cmd.clone(), RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)))
                    .await?;
                Ok(redis::from_redis_value(value)?)
            }
        }
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Single(_) => f.write_str("RedisConn::Single"),
            Self::Cluster(_) => f.write_str("RedisConn::Cluster"),
        }
    }
}

/// Where the broker's connections come from: a pool for ordinary commands and the client that
/// opens blocking-read connections.
pub(crate) struct RedisPool {
    /// The pool of the deployment kind.
    kind: PoolKind,
    /// Opens the dedicated connections of blocking reads (built by [`crate::connect::client`],
    /// like the pool's); on a cluster, the client of the first node, whose connection info
    /// (TLS material included) is reused with the address of the node that owns a slot.
    client: redis::Client,
    /// Connect and response timeout of a command.
    command_timeout: Duration,
}

/// The pool of one deployment kind.
enum PoolKind {
    /// Pooled connections to a single Redis node.
    Single(Pool),
    /// The cluster client, and the shared connection it opened on first use.
    Cluster(Box<(ClusterClient, tokio::sync::OnceCell<ClusterConnection>)>),
}

impl RedisPool {
    /// A pool of at most `size` connections to the single Redis node of `client`, each with
    /// `command_timeout` as connect and response timeout (and as the wait for a free one).
    pub(crate) fn single(client: redis::Client, size: usize, command_timeout: Duration) -> Result<Self> {
        let conn_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(command_timeout))
            .set_response_timeout(Some(command_timeout));
        // From the client's connection info, not the URL: it carries the TLS material.
        let manager = deadpool_redis::Manager::new_with_config(client.get_connection_info().clone(), conn_config)
            .map_err(|e| BrokerError::invalid("redis_url", e.to_string()))?;
        let pool = Pool::builder(manager)
            .max_size(size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(command_timeout))
            .create_timeout(Some(command_timeout))
            .recycle_timeout(Some(command_timeout))
            .build()
            .map_err(|e| BrokerError::Internal(format!("redis connection pool: {e}")))?;
        Ok(Self { kind: PoolKind::Single(pool), client, command_timeout })
    }

    /// Connections to the Redis Cluster reached through any of `nodes` (seed URLs, all
    /// `redis://` or all `rediss://`, with `tls` applied like on a single node), with
    /// `command_timeout` as connect and response timeout. Does not connect yet.
    pub(crate) fn cluster(nodes: &[String], tls: &RedisTls, command_timeout: Duration) -> Result<Self> {
        const FIELD: &str = "redis_cluster_nodes";
        let Some(first) = nodes.first() else {
            return Err(BrokerError::invalid(FIELD, "needs at least one node URL"));
        };
        // Each URL through the one client builder, so TLS rules and errors match a single node.
        // The node's position, not its URL, in the message: a URL may carry a password.
        let node_error = |i: usize, e: BrokerError| match e {
            BrokerError::InvalidArgument { reason, .. } => {
                BrokerError::invalid(FIELD, format!("node {}: {reason}", i + 1))
            }
            other => other,
        };
        let mut infos = Vec::with_capacity(nodes.len());
        for (i, url) in nodes.iter().enumerate() {
            let client = crate::connect::client(url, tls).map_err(|e| node_error(i, e))?;
            infos.push(client.get_connection_info().clone());
        }
        let tls_urls = nodes.iter().filter(|u| crate::connect::is_tls_url(u)).count();
        if tls_urls != 0 && tls_urls != nodes.len() {
            return Err(BrokerError::invalid(FIELD, "mixes redis:// and rediss:// URLs"));
        }
        let mut builder =
            ClusterClient::builder(infos).connection_timeout(command_timeout).response_timeout(command_timeout);
        if tls.is_set() {
            builder = builder.certs(redis::TlsCertificates {
                client_tls: tls.client_identity.as_ref().map(|id| redis::ClientTlsConfig {
                    client_cert: id.cert_pem.clone(),
                    client_key: id.key_pem.clone(),
                }),
                root_cert: tls.ca_pem.clone(),
            });
        }
        let cluster = builder.build().map_err(|e| BrokerError::invalid(FIELD, e.to_string()))?;
        let client = crate::connect::client(first, tls).map_err(|e| node_error(0, e))?;
        Ok(Self { kind: PoolKind::Cluster(Box::new((cluster, tokio::sync::OnceCell::new()))), client, command_timeout })
    }

    /// Whether these are Redis Cluster connections.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.kind, PoolKind::Cluster(..))
    }

    /// A pooled connection; `Unavailable` when none could be had within the command timeout.
    pub(crate) async fn get(&self) -> Result<RedisConn> {
        match &self.kind {
            PoolKind::Single(pool) => pool.get().await.map(RedisConn::Single).map_err(pool_error),
            PoolKind::Cluster(cluster) => {
                let (client, shared) = &**cluster;
                let conn = shared
                    .get_or_try_init(|| async {
                        match tokio::time::timeout(self.command_timeout, client.get_async_connection()).await {
                            Ok(conn) => conn.map_err(BrokerError::from),
                            Err(_) => Err(BrokerError::Unavailable("redis cluster: connecting timed out".into())),
                        }
                    })
                    .await?;
                Ok(RedisConn::Cluster(conn.clone()))
            }
        }
    }

    /// A new dedicated connection for a blocking read of stream `key`, whose response timeout
    /// allows a read of `block`, and its Redis client id (to interrupt a blocked read with
    /// `CLIENT UNBLOCK`, see [`RedisPool::unblock`]). On a cluster it goes to the master that
    /// owns `key`'s slot now.
    pub(crate) async fn blocking(&self, key: &str, block: Duration) -> Result<(BlockingConn, i64)> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.command_timeout))
            .set_response_timeout(Some(self.command_timeout + block));
        let (client, node) = match &self.kind {
            PoolKind::Single(_) => (self.client.clone(), None),
            PoolKind::Cluster(..) => {
                let (host, port) = self.slot_owner(key).await?;
                let addr = match self.client.get_connection_info().addr() {
                    ConnectionAddr::TcpTls { insecure, tls_params, .. } => ConnectionAddr::TcpTls {
                        host: host.clone(),
                        port,
                        insecure: *insecure,
                        tls_params: tls_params.clone(),
                    },
                    _ => ConnectionAddr::Tcp(host.clone(), port),
                };
                let info = self.client.get_connection_info().clone().set_addr(addr);
                (redis::Client::open(info).map_err(BrokerError::from)?, Some((host, port)))
            }
        };
        let mut conn = client.get_multiplexed_async_connection_with_config(&config).await?;
        let id: i64 = redis::cmd("CLIENT").arg("ID").query_async(&mut conn).await?;
        Ok((BlockingConn { conn, node }, id))
    }

    /// `CLIENT UNBLOCK client_id` on the node of a blocking connection (`node` from
    /// [`BlockingConn::node`]): 1 if that client was blocked.
    pub(crate) async fn unblock(&self, node: Option<&(String, u16)>, client_id: i64) -> Result<i64> {
        let mut conn = self.get().await?;
        let mut cmd = redis::cmd("CLIENT");
        cmd.arg("UNBLOCK").arg(client_id);
        match (&mut conn, node) {
            (RedisConn::Cluster(conn), Some((host, port))) => {
                let routing =
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host: host.clone(), port: *port });
                Ok(redis::from_redis_value(conn.route_command(cmd, routing).await?)?)
            }
            (conn, _) => Ok(cmd.query_async(conn).await?),
        }
    }

    /// The address of the master that owns `key`'s hash slot.
    async fn slot_owner(&self, key: &str) -> Result<(String, u16)> {
        let slot = hash_slot(key.as_bytes());
        let mut conn = self.get().await?;
        cluster_slots(&mut conn)
            .await?
            .into_iter()
            .find(|(range, _)| range.contains(&slot))
            .map(|(_, node)| node)
            .ok_or_else(|| BrokerError::Unavailable(format!("redis cluster: no node serves slot {slot}")))
    }
}

/// A node to ask about itself: `None` = the single node (or whichever a cluster routes to),
/// `Some(address)` = that cluster node.
pub(crate) type Node = Option<(String, u16)>;

impl RedisConn {
    /// The servers whose state is the deployment's (readiness, eviction policy): the single
    /// node, or every master of the cluster (from `CLUSTER SLOTS`).
    pub(crate) async fn servers(&mut self) -> Result<Vec<Node>> {
        if !self.is_cluster() {
            return Ok(vec![None]);
        }
        let mut masters: Vec<Node> = Vec::new();
        for (_, node) in cluster_slots(self).await? {
            if !masters.iter().any(|m| m.as_ref() == Some(&node)) {
                masters.push(Some(node));
            }
        }
        Ok(masters)
    }

    /// Runs `cmd` on `node` (see [`Node`]); Redis's own error, so callers can tell a refused
    /// command from an unreachable server.
    pub(crate) async fn query_on_node<T: redis::FromRedisValue>(
        &mut self,
        node: Option<&(String, u16)>,
        cmd: &Cmd,
    ) -> redis::RedisResult<T> {
        match (self, node) {
            (Self::Cluster(conn), Some((host, port))) => {
                let routing =
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host: host.clone(), port: *port });
                redis::from_redis_value(conn.route_command(cmd.clone(), routing).await?).map_err(Into::into)
            }
            (conn, _) => cmd.query_async(conn).await,
        }
    }
}

/// The cluster's slot ranges and the address of each range's master, from `CLUSTER SLOTS`
/// (`[[start, end, [host, port, id, ...], replicas...], ...]`).
async fn cluster_slots(conn: &mut RedisConn) -> Result<Vec<(std::ops::RangeInclusive<u16>, (String, u16))>> {
    let ranges: Vec<Value> = redis::cmd("CLUSTER").arg("SLOTS").query_async(conn).await?;
    let mut slots = Vec::new();
    for range in ranges {
        let Value::Array(parts) = range else { continue };
        let mut parts = parts.into_iter();
        let (Some(start), Some(end), Some(Value::Array(master))) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let mut master = master.into_iter();
        let (Some(host), Some(port)) = (master.next(), master.next()) else { continue };
        let (start, end): (u16, u16) = (redis::from_redis_value(start)?, redis::from_redis_value(end)?);
        slots.push((start..=end, (redis::from_redis_value(host)?, redis::from_redis_value(port)?)));
    }
    Ok(slots)
}

/// The Redis Cluster hash slot of `key`: CRC16 (XMODEM) of its hash tag (the part between the
/// first `{` and the next `}`, when not empty), or of the whole key, modulo 16384 — as Redis
/// computes it (`CLUSTER KEYSLOT`).
pub(crate) fn hash_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        rest.iter().position(|&b| b == b'}').filter(|&close| close > 0).map(|close| &rest[..close])
    });
    let mut crc: u16 = 0;
    for &byte in tagged.unwrap_or(key) {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc % 16384
}

/// A pool failure as a broker error: Redis's own error when connecting failed, `Unavailable`
/// for a timeout waiting for a connection.
fn pool_error(err: PoolError) -> BrokerError {
    match err {
        PoolError::Backend(e) => e.into(),
        other => BrokerError::Unavailable(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::hash_slot;

    #[test]
    fn slots_match_redis() {
        // Values from `CLUSTER KEYSLOT` on Redis 7.
        assert_eq!(hash_slot(b"foo"), 12182);
        // CRC16/XMODEM's check value.
        assert_eq!(hash_slot(b"123456789"), 0x31C3);
        assert_eq!(hash_slot(b"ef:{orders}:meta"), hash_slot(b"orders"));
        // An empty tag is no tag: the whole key is hashed.
        assert_ne!(hash_slot(b"{}orders"), hash_slot(b""));
        assert_eq!(hash_slot(b"{user1000}.following"), hash_slot(b"{user1000}.followers"));
    }
}
