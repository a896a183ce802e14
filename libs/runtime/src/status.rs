//! The one mapping from errors to gRPC statuses: broker errors and authentication/authorization
//! refusals. Internal details are logged, not sent.

use eventflow_broker::BrokerError;
use tonic::Status;

use crate::auth::AuthError;

/// A broker result as a gRPC response.
pub fn reply<T>(result: Result<T, BrokerError>) -> Result<tonic::Response<T>, Status> {
    result.map(tonic::Response::new).map_err(to_status)
}

/// The gRPC status for a broker error.
pub fn to_status(err: BrokerError) -> Status {
    match err {
        BrokerError::InvalidArgument { field, reason } => Status::invalid_argument(format!("{field}: {reason}")),
        BrokerError::NotFound(what) => Status::not_found(format!("{what} not found")),
        BrokerError::AlreadyExists(what) => Status::already_exists(format!("{what} already exists")),
        BrokerError::FailedPrecondition(why) => Status::failed_precondition(why),
        BrokerError::Unavailable(detail) => {
            tracing::warn!(error = %detail, "redis unavailable");
            Status::unavailable("redis unavailable; retry later")
        }
        BrokerError::ResourceExhausted(what) => {
            tracing::warn!(reason = %what, "resource exhausted");
            Status::resource_exhausted(what)
        }
        BrokerError::Internal(detail) => {
            tracing::error!(error = %detail, "internal error");
            Status::internal("internal error")
        }
    }
}

impl From<AuthError> for Status {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::MissingCredential | AuthError::MalformedHeader | AuthError::UnknownToken => {
                Status::unauthenticated(err.to_string())
            }
            AuthError::UnknownCertificate { .. } | AuthError::Denied { .. } => {
                Status::permission_denied(err.to_string())
            }
            AuthError::NotAuthenticated => {
                tracing::error!(error = %err, "a handler ran without the authentication interceptor");
                Status::internal("internal error")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn codes_are_precise_and_internals_hidden() {
        let s = to_status(BrokerError::invalid("stream", "must not be empty"));
        assert_eq!((s.code(), s.message()), (Code::InvalidArgument, "stream: must not be empty"));
        assert_eq!(to_status(BrokerError::NotFound("stream \"x\"".into())).code(), Code::NotFound);
        assert_eq!(to_status(BrokerError::AlreadyExists("x".into())).code(), Code::AlreadyExists);
        assert_eq!(to_status(BrokerError::Unavailable("io".into())).code(), Code::Unavailable);
        let s = to_status(BrokerError::ResourceExhausted("at most 2 sessions".into()));
        assert_eq!((s.code(), s.message()), (Code::ResourceExhausted, "at most 2 sessions"));
        let s = to_status(BrokerError::Internal("secret detail".into()));
        assert_eq!(s.code(), Code::Internal);
        assert!(!s.message().contains("secret"));
    }
}
