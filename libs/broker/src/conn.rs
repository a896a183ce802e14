//! The broker's connections to Redis: the one place that knows what kind of Redis deployment
//! the broker talks to. Everything else in the broker asks `RedisPool` for a [`RedisConn`]
//! (ordinary commands, pipelines, scripts) or a `BlockingConn` (blocking reads), and never
//! names a pool or connection type of a Redis library.
//!
//! How: [`RedisConn`] is an enum with one variant per deployment kind and implements
//! [`redis::aio::ConnectionLike`] by delegating to the variant's connection, so `redis::cmd`,
//! pipelines and the script calls of [`crate::scripts`] run through it unchanged. The cost is
//! one `match` per command — no boxing beyond what the redis crate's futures already do.
//! `RedisPool` is the matching enum of pools; it hands out connections bounded by
//! `pool_size` and waits at most `command_timeout` for one.
//!
//! Today there is one kind, a single Redis node (`Single`: a deadpool pool of multiplexed
//! connections, built from the client of [`crate::connect`] so `rediss://` material reaches
//! it). Redis Cluster plugs in here: a `Cluster` variant in both enums holding
//! `deadpool_redis::cluster::{Pool, Connection}` (the key layout already puts every key of a
//! stream in one hash slot, see [`crate::keys`]), a constructor choosing it from the URL or an
//! option, and a blocking-read connection routed to the node that owns the stream's slot.
//! Callers do not change.

use std::time::Duration;

use deadpool_redis::{Pool, PoolError, Runtime};
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisFuture, Value, aio::ConnectionLike};

use crate::{BrokerError, Result};

/// A dedicated connection for blocking reads (`XREADGROUP BLOCK`), opened per session and not
/// pooled, so a blocked read holds no pooled connection.
pub(crate) type BlockingConn = redis::aio::MultiplexedConnection;

/// A pooled connection for ordinary commands, returned to its pool when dropped.
pub enum RedisConn {
    /// A connection to a single Redis node.
    Single(deadpool_redis::Connection),
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
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
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
        }
    }
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Single(_) => f.write_str("RedisConn::Single"),
        }
    }
}

/// Where the broker's connections come from: a pool for ordinary commands and the client that
/// opens blocking-read connections.
pub(crate) struct RedisPool {
    /// The pool of the deployment kind.
    kind: PoolKind,
    /// Opens the dedicated connections of blocking reads (built by [`crate::connect::client`],
    /// like the pool's).
    client: redis::Client,
    /// Connect and response timeout of a command.
    command_timeout: Duration,
}

/// The pool of one deployment kind.
enum PoolKind {
    /// Pooled connections to a single Redis node.
    Single(Pool),
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

    /// A pooled connection; `Unavailable` when none could be had within the command timeout.
    pub(crate) async fn get(&self) -> Result<RedisConn> {
        match &self.kind {
            PoolKind::Single(pool) => pool.get().await.map(RedisConn::Single).map_err(pool_error),
        }
    }

    /// A new dedicated connection whose response timeout allows a blocking read of `block`, and
    /// its Redis client id (to interrupt a blocked read with `CLIENT UNBLOCK`).
    pub(crate) async fn blocking(&self, block: Duration) -> Result<(BlockingConn, i64)> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.command_timeout))
            .set_response_timeout(Some(self.command_timeout + block));
        let mut conn = self.client.get_multiplexed_async_connection_with_config(&config).await?;
        let id: i64 = redis::cmd("CLIENT").arg("ID").query_async(&mut conn).await?;
        Ok((conn, id))
    }
}

/// A pool failure as a broker error: Redis's own error when connecting failed, `Unavailable`
/// for a timeout waiting for a connection.
fn pool_error(err: PoolError) -> BrokerError {
    match err {
        PoolError::Backend(e) => e.into(),
        other => BrokerError::Unavailable(other.to_string()),
    }
}
