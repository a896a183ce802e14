//! The archive's one error enum and its one mapping to a gRPC status (broker errors go
//! through the runtime's mapping; database details are logged, not sent).

use eventflow_broker::BrokerError;
use tonic::Status;

/// Why an archive operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A request field is wrong; `field` names it.
    #[error("{field}: {reason}")]
    InvalidArgument {
        /// The offending field, as the API names it.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The stream (never archived) or event does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// A broker (Redis) call failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// PostgreSQL failed; `context` says what was being done.
    #[error("postgres ({context}): {source}")]
    Db {
        /// What was being done.
        context: &'static str,
        /// The driver's error.
        source: sqlx::Error,
    },
}

impl ArchiveError {
    /// An INVALID_ARGUMENT error naming `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidArgument { field: field.into(), reason: reason.into() }
    }

    /// A database error with what was being done.
    pub fn db(context: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |source| Self::Db { context, source }
    }
}

impl From<ArchiveError> for Status {
    fn from(err: ArchiveError) -> Self {
        match err {
            ArchiveError::InvalidArgument { .. } => Status::invalid_argument(err.to_string()),
            ArchiveError::NotFound(_) => Status::not_found(err.to_string()),
            ArchiveError::Broker(e) => eventflow_runtime::status::to_status(e),
            ArchiveError::Db { context, source } => {
                tracing::warn!(%context, error = %source, "postgres failed");
                match source {
                    sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                        Status::unavailable("archive database unavailable; retry later")
                    }
                    _ => Status::internal("internal error"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn codes_are_precise_and_database_details_hidden() {
        let s = Status::from(ArchiveError::invalid("filter.trace_id", "must be 32 lowercase hex digits"));
        assert_eq!(
            (s.code(), s.message()),
            (Code::InvalidArgument, "filter.trace_id: must be 32 lowercase hex digits")
        );
        assert_eq!(Status::from(ArchiveError::NotFound("stream \"x\"".into())).code(), Code::NotFound);
        let s = Status::from(ArchiveError::db("query")(sqlx::Error::Protocol("secret detail".into())));
        assert_eq!(s.code(), Code::Internal);
        assert!(!s.message().contains("secret"));
        assert_eq!(Status::from(ArchiveError::db("query")(sqlx::Error::PoolTimedOut)).code(), Code::Unavailable);
    }
}
