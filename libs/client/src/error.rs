//! The one error type of the client library, classified by whether a retry can help.

use tonic::Code;

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The configuration cannot work (e.g. a malformed URL or TLS settings).
    #[error("client configuration: {0}")]
    Config(String),
    /// A call failed with this status (after the retries that apply to it).
    #[error("{what}: {status}")]
    Rpc {
        /// Which call failed.
        what: &'static str,
        /// The status the server (or the transport) gave.
        status: tonic::Status,
    },
    /// The server refused this one event (the batch's other events were not affected).
    #[error("event {event_id} refused ({code:?}) at {field}: {message}")]
    Event {
        /// The event's id.
        event_id: String,
        /// The status code the refusal would have as a whole call.
        code: Code,
        /// The offending field ("" if none).
        field: String,
        /// The server's explanation.
        message: String,
    },
    /// The publisher was closed before the event could be sent.
    #[error("publisher closed")]
    Closed,
    /// PostgreSQL failed (exactly-once consumer, pruning).
    #[error("postgres ({what}): {source}")]
    Db {
        /// What was being done.
        what: &'static str,
        /// The driver's error.
        source: sqlx::Error,
    },
}

impl ClientError {
    /// An RPC error with context.
    pub(crate) fn rpc(what: &'static str, status: tonic::Status) -> Self {
        Self::Rpc { what, status }
    }

    /// The status code of an RPC or per-event error.
    pub fn code(&self) -> Option<Code> {
        match self {
            Self::Rpc { status, .. } => Some(status.code()),
            Self::Event { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Whether a failed call may succeed when sent again unchanged: the server or the network was
/// unavailable, or the deadline passed before an answer. Only these are retried; the
/// publisher's retries are safe because each event's id is fixed before the first try.
pub fn is_retryable(code: Code) -> bool {
    matches!(code, Code::Unavailable | Code::DeadlineExceeded)
}
