//! The one error type of the broker. Services map it to a gRPC status in one place.

use redis::{ErrorKind, RedisError, ServerErrorKind};

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
    /// Redis cannot be reached or did not answer in time; retrying later can succeed.
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    /// Anything else: a bug or an unexpected Redis reply. Details are logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl BrokerError {
    /// An [`BrokerError::InvalidArgument`] for `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidArgument { field: field.into(), reason: reason.into() }
    }

    /// Whether this error means Redis is unreachable (the caller may retry).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

impl From<RedisError> for BrokerError {
    fn from(err: RedisError) -> Self {
        let unavailable = err.is_io_error()
            || err.is_connection_dropped()
            || err.is_connection_refusal()
            || err.is_timeout()
            || matches!(
                err.kind(),
                ErrorKind::Server(ServerErrorKind::BusyLoading)
                    | ErrorKind::Server(ServerErrorKind::TryAgain)
                    | ErrorKind::Server(ServerErrorKind::MasterDown)
                    | ErrorKind::Server(ServerErrorKind::ClusterDown)
            );
        if unavailable {
            Self::Unavailable(err.to_string())
        } else if err.code() == Some("NOGROUP") {
            Self::NotFound("subscription".into())
        } else {
            Self::Internal(err.to_string())
        }
    }
}

impl From<deadpool_redis::PoolError> for BrokerError {
    fn from(err: deadpool_redis::PoolError) -> Self {
        match err {
            deadpool_redis::PoolError::Backend(e) => e.into(),
            other => Self::Unavailable(other.to_string()),
        }
    }
}

/// Result of broker operations.
pub type Result<T, E = BrokerError> = std::result::Result<T, E>;

impl From<redis::ParsingError> for BrokerError {
    fn from(err: redis::ParsingError) -> Self {
        Self::Internal(format!("unexpected redis reply: {err}"))
    }
}
