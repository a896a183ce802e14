//! The one error type of the broker. Services map it to a gRPC status in one place.
//!
//! Redis errors are classified by what a caller should do about them, from the error codes of
//! the reply — also when the error came back from inside a Lua script (Redis 7 keeps the
//! command's code) or from one command of a pipeline:
//! * retry later: connection failures and timeouts, a Redis Cluster client that has no
//!   connection to the node a slot maps to (while it learns a new topology after a failover),
//!   and the codes of [`UNAVAILABLE_CODES`] (the server is a replica, loading, cut off from its
//!   master, busy with a script, ...) -> [`BrokerError::Unavailable`];
//! * back off, an operator must free memory: `OOM` -> [`BrokerError::ResourceExhausted`];
//! * a consumer group that is gone: `NOGROUP` -> [`BrokerError::NotFound`];
//! * anything else is a bug or an unexpected reply -> [`BrokerError::Internal`].

use redis::{RedisError, ServerError};

/// Redis error codes after which the same command can succeed later without any change by the
/// caller: READONLY (a replica, e.g. after a failover), LOADING (loading its dataset after a
/// restart), MASTERDOWN (a replica cut off from its master), BUSY (a script or function runs
/// past its time limit), TRYAGAIN / CLUSTERDOWN (Redis Cluster resharding or down),
/// NOREPLICAS (fewer replicas than `min-replicas-to-write`), MISCONF (persistence failing, so
/// writes are refused until it works again), UNBLOCKED (a blocking read ended because the
/// server turned into a replica), MOVED / ASK (a Redis Cluster slot served elsewhere now: the
/// cluster client follows these itself; they reach the broker from the connections it opens to
/// one node, the blocking readers, which reopen on the slot's new master), NOSCRIPT (the
/// scripts were flushed again between the broker's reload and its retry: the next call loads
/// them again).
pub const UNAVAILABLE_CODES: [&str; 12] = [
    "READONLY",
    "LOADING",
    "MASTERDOWN",
    "BUSY",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "NOREPLICAS",
    "MISCONF",
    "UNBLOCKED",
    "MOVED",
    "ASK",
    "NOSCRIPT",
];

/// What a client is told when Redis refuses writes for lack of memory.
const OUT_OF_MEMORY: &str = "redis is out of memory (maxmemory reached); retry later with backoff";

/// What went wrong in a broker operation.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// The caller passed a value that can never work; `field` names it.
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// The request field at fault (e.g. `stream`, `ack_deadline_seconds`).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A stream, subscription or dead letter that does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// Creating something that exists.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// The system is not in a state where the operation can run.
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// Redis cannot be reached, did not answer in time, or cannot serve now (a replica,
    /// loading, busy: see [`UNAVAILABLE_CODES`]); retrying later can succeed.
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    /// A limit was reached: Redis is out of memory, or a limit of this replica (Subscribe
    /// sessions, publish bytes in flight). The message names the limit and is meant for the
    /// client; retrying later, with backoff, can succeed.
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    /// Anything else: a bug or an unexpected Redis reply. Details are logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl BrokerError {
    /// An [`BrokerError::InvalidArgument`] for `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidArgument { field: field.into(), reason: reason.into() }
    }

    /// Whether this error means Redis is unreachable or cannot serve now (the caller may retry).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }

    /// Whether the condition may pass by itself while a long-lived call waits: Redis unavailable,
    /// or out of memory (an operator frees memory). Open Subscribe streams pause on these
    /// instead of ending.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::ResourceExhausted(_))
    }
}

impl From<RedisError> for BrokerError {
    fn from(err: RedisError) -> Self {
        if err.is_io_error()
            || err.is_connection_dropped()
            || err.is_connection_refusal()
            || err.is_timeout()
            || err.kind() == redis::ErrorKind::ClusterConnectionNotFound
        {
            return Self::Unavailable(err.to_string());
        }
        // A single reply's code, or those of every failed command of a pipeline.
        let codes: Vec<String> = match err.clone().into_server_errors() {
            Some(errors) => errors.iter().map(|(_, e)| e.code().to_string()).collect(),
            None => err.code().map(String::from).into_iter().collect(),
        };
        let has = |code: &str| codes.iter().any(|c| c == code);
        if UNAVAILABLE_CODES.iter().any(|c| has(c)) {
            Self::Unavailable(err.to_string())
        } else if has("OOM") {
            Self::ResourceExhausted(OUT_OF_MEMORY.into())
        } else if has("NOGROUP") {
            Self::NotFound("subscription".into())
        } else {
            Self::Internal(err.to_string())
        }
    }
}

impl From<ServerError> for BrokerError {
    fn from(err: ServerError) -> Self {
        RedisError::from(err).into()
    }
}

/// Result of broker operations.
pub type Result<T, E = BrokerError> = std::result::Result<T, E>;

impl From<redis::ParsingError> for BrokerError {
    fn from(err: redis::ParsingError) -> Self {
        Self::Internal(format!("unexpected redis reply: {err}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The broker error for one Redis error reply, as it arrives from a command or a script.
    fn from_reply(reply: &str) -> BrokerError {
        match redis::parse_redis_value(format!("-{reply}\r\n").as_bytes()) {
            Ok(redis::Value::ServerError(e)) => e.into(),
            other => panic!("not an error reply: {other:?}"),
        }
    }

    #[test]
    fn redis_error_replies_map_to_what_a_client_should_do() {
        for reply in [
            "READONLY You can't write against a read only replica.",
            "READONLY You can't write against a read only replica. script: 5a91, on @user_script:1.",
            "LOADING Redis is loading the dataset in memory",
            "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
            "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.",
            "TRYAGAIN Multiple keys request during rehashing of slot",
            "CLUSTERDOWN The cluster is down",
            "NOREPLICAS Not enough good replicas to write.",
            "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk.",
            "UNBLOCKED force unblock from blocking operation, instance state changed (master -> replica?)",
            "MOVED 105 127.0.0.1:46641",
            "ASK 105 127.0.0.1:46641",
        ] {
            assert!(from_reply(reply).is_unavailable(), "{reply}");
        }
        let no_node = RedisError::from((redis::ErrorKind::ClusterConnectionNotFound, "No connections found"));
        assert!(BrokerError::from(no_node).is_unavailable(), "a cluster node the client has no connection to");
        let oom =
            from_reply("OOM command not allowed when used memory > 'maxmemory'. script: 5a91, on @user_script:1.");
        assert!(matches!(oom, BrokerError::ResourceExhausted(_)), "{oom:?}");
        assert!(matches!(from_reply("NOGROUP No such key"), BrokerError::NotFound(_)));
        for reply in
            ["ERR wrong number of arguments", "WRONGTYPE Operation against a key", "BUSYGROUP exists", "BUSYKEY"]
        {
            assert!(matches!(from_reply(reply), BrokerError::Internal(_)), "{reply}");
        }
    }
}
