//! What the Redis server behind the broker says about itself, for readiness and the start-up
//! check: whether it can take writes now, whether its eviction policy keeps every key, and
//! whether it frees expired keys off its main thread.
//!
//! * [`Broker::server_state`] reads `INFO replication` (`role`) and `INFO persistence`
//!   (`loading`): a replica refuses writes with READONLY, a loading server answers
//!   LOADING, so neither is ready. Where INFO is renamed or not permitted, a PING stands in and
//!   the role is not known ([`ServerState::Unchecked`]).
//!
//! On Redis Cluster both ask every master (found with `CLUSTER SLOTS`, each asked directly by
//! address) and report the first that is not as it should be, so a master that is loading or
//! refuses the policy makes the whole deployment not ready.
//! * [`Broker::eviction_policy`] reads `CONFIG GET maxmemory-policy`. eventflow needs
//!   `noeviction`: under any other policy a full Redis deletes keys silently — `volatile-*`
//!   the dedup keys (a retried publish is stored twice), `allkeys-*` also streams, pending lists
//!   and settings. With `noeviction` a full Redis refuses writes with OOM instead
//!   (RESOURCE_EXHAUSTED to clients) and loses nothing. Managed Redis services often disable
//!   CONFIG; then the policy is [`EvictionPolicy::Unknown`].
//! * [`Broker::lazy_expire`] reads `CONFIG GET lazyfree-lazy-expire`. Without it Redis frees
//!   an expired key in its main thread: the last dedup buckets of a stream that stopped
//!   publishing (one window of ids each) stall every client while they are freed
//!   (docs/operations.md). Nothing is lost, so the services only warn.

use crate::{Broker, BrokerError, RedisConn, Result};

/// The only `maxmemory-policy` under which Redis never deletes eventflow's keys.
pub const REQUIRED_EVICTION_POLICY: &str = "noeviction";

/// Whether the server can take eventflow's writes now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerState {
    /// A master with its dataset loaded.
    Ready,
    /// A replica (`role:slave`): writes get READONLY until it is promoted.
    Replica,
    /// Loading its dataset (`loading:1`, after a restart): commands get LOADING.
    Loading,
    /// It answers PING but INFO is not available (the reason): role and loading are unknown.
    Unchecked(String),
}

/// What the server's `maxmemory-policy` means for eventflow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvictionPolicy {
    /// `noeviction`: nothing is ever evicted.
    NoEviction,
    /// Another policy (named), which the operator allowed (`allow_eviction_policy`).
    Allowed(String),
    /// Another policy (named), not allowed: eventflow must not serve on this Redis.
    Refused(String),
    /// The policy cannot be read (the reason): CONFIG is renamed, disabled or not permitted.
    Unknown(String),
}

impl Broker {
    /// The server's replication role and loading state (see the module doc); on a cluster,
    /// every master's, and the first that is not ready.
    pub async fn server_state(&self) -> Result<ServerState> {
        let mut conn = self.conn().await?;
        for node in conn.servers().await? {
            let state = node_state(&mut conn, node.as_ref()).await?;
            if state != ServerState::Ready {
                return Ok(state);
            }
        }
        Ok(ServerState::Ready)
    }

    /// The server's `maxmemory-policy`, judged by `allow_eviction_policy` (see the module doc);
    /// on a cluster, every master's, and the first that is not `noeviction`. Fails only if
    /// Redis cannot be reached.
    pub async fn eviction_policy(&self) -> Result<EvictionPolicy> {
        let mut conn = self.conn().await?;
        for node in conn.servers().await? {
            let policy = self.node_policy(&mut conn, node.as_ref()).await?;
            if policy != EvictionPolicy::NoEviction {
                return Ok(policy);
            }
        }
        Ok(EvictionPolicy::NoEviction)
    }

    /// The eviction policy of one server.
    async fn node_policy(&self, conn: &mut RedisConn, node: Option<&(String, u16)>) -> Result<EvictionPolicy> {
        let policy = match config_get(conn, node, "maxmemory-policy").await? {
            Ok(policy) => policy,
            Err(why) => return Ok(EvictionPolicy::Unknown(why)),
        };
        Ok(if policy == REQUIRED_EVICTION_POLICY {
            EvictionPolicy::NoEviction
        } else if self.options().allow_eviction_policy {
            EvictionPolicy::Allowed(policy)
        } else {
            EvictionPolicy::Refused(policy)
        })
    }
}

impl Broker {
    /// Whether every server frees expired keys off its main thread (`lazyfree-lazy-expire
    /// yes`): `Some(false)` names the first that does not, `None` when CONFIG cannot be read.
    /// Fails only if Redis cannot be reached.
    pub async fn lazy_expire(&self) -> Result<Option<bool>> {
        let mut conn = self.conn().await?;
        for node in conn.servers().await? {
            match config_get(&mut conn, node.as_ref(), "lazyfree-lazy-expire").await? {
                Ok(value) if value == "yes" => {}
                Ok(_) => return Ok(Some(false)),
                Err(_) => return Ok(None),
            }
        }
        Ok(Some(true))
    }
}

/// `CONFIG GET name` on one server: its value, or why it cannot be read (CONFIG renamed,
/// disabled or not permitted, or no such setting). Fails only if the server cannot be reached.
async fn config_get(
    conn: &mut RedisConn,
    node: Option<&(String, u16)>,
    name: &str,
) -> Result<std::result::Result<String, String>> {
    let mut cmd = redis::cmd("CONFIG");
    cmd.arg("GET").arg(name);
    let reply: redis::RedisResult<Vec<String>> = conn.query_on_node(node, &cmd).await;
    match reply.map_err(BrokerError::from) {
        Ok(pair) => Ok(match <[String; 2]>::try_from(pair) {
            Ok([_, value]) => Ok(value),
            Err(_) => Err(format!("CONFIG GET {name} returned nothing")),
        }),
        Err(e) if e.is_unavailable() => Err(e),
        Err(e) => Ok(Err(e.to_string())),
    }
}

/// The replication role and loading state of one server (`INFO replication`, `INFO
/// persistence`; a PING where INFO is refused).
async fn node_state(conn: &mut RedisConn, node: Option<&(String, u16)>) -> Result<ServerState> {
    let section = |name: &str| {
        let mut cmd = redis::cmd("INFO");
        cmd.arg(name);
        cmd
    };
    let replication: redis::RedisResult<String> = conn.query_on_node(node, &section("replication")).await;
    let info = match replication {
        Ok(replication) => conn.query_on_node(node, &section("persistence")).await.map(|p: String| (replication, p)),
        Err(e) => Err(e),
    };
    let (replication, persistence) = match info.map_err(BrokerError::from) {
        Ok(info) => info,
        Err(e) if e.is_unavailable() => return Err(e),
        Err(e) => {
            let _: String = conn.query_on_node(node, &redis::cmd("PING")).await?;
            return Ok(ServerState::Unchecked(e.to_string()));
        }
    };
    Ok(if info_field(&persistence, "loading") == Some("1") {
        ServerState::Loading
    } else if info_field(&replication, "role").is_some_and(|role| role != "master") {
        ServerState::Replica
    } else {
        ServerState::Ready
    })
}

/// The value of `name` in an INFO reply (`name:value` lines).
fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(':')).map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_fields_are_read_by_exact_name() {
        let info = "# Persistence\r\nloading:0\r\nasync_loading:1\r\nloading_start_time:5\r\n";
        assert_eq!(info_field(info, "loading"), Some("0"));
        assert_eq!(info_field(info, "async_loading"), Some("1"));
        assert_eq!(info_field("# Replication\r\nrole:slave\r\n", "role"), Some("slave"));
        assert_eq!(info_field(info, "role"), None);
    }
}
