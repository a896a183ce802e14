//! The CLI's error type and the one place that maps errors (and gRPC codes) to exit codes.
//!
//! | code | meaning                                                                              |
//! |------|--------------------------------------------------------------------------------------|
//! | 0    | success                                                                              |
//! | 1    | any other error                                                                      |
//! | 2    | usage error (bad flags or arguments; clap's code)                                    |
//! | 3    | not found                                                                            |
//! | 4    | the server refused the request: invalid argument, already exists, failed precondition, not authenticated (also a TLS handshake failing on a certificate) |
//! | 5    | unavailable or unreachable, deadline exceeded: retryable                             |
//! | 6    | partial failure: some events or ids failed, the others succeeded                      |

use std::fmt;

use tonic::{Code, Status};

/// Exit code of success.
pub const OK: u8 = 0;
/// Exit code of an error no other code describes.
pub const OTHER: u8 = 1;
/// Exit code of a usage error; the same as clap's.
pub const USAGE: u8 = 2;
/// Exit code of NOT_FOUND.
pub const NOT_FOUND: u8 = 3;
/// Exit code of a request the server refused (INVALID_ARGUMENT, ALREADY_EXISTS, ...).
pub const REFUSED: u8 = 4;
/// Exit code of UNAVAILABLE / unreachable / deadline exceeded: try again later.
pub const UNAVAILABLE: u8 = 5;
/// Exit code of a partial failure.
pub const PARTIAL: u8 = 6;

/// The exit code of a gRPC status code.
pub fn code_for(code: Code) -> u8 {
    match code {
        Code::Ok => OK,
        Code::NotFound => NOT_FOUND,
        Code::InvalidArgument
        | Code::AlreadyExists
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::ResourceExhausted
        | Code::Unauthenticated
        | Code::PermissionDenied => REFUSED,
        Code::Unavailable | Code::DeadlineExceeded => UNAVAILABLE,
        _ => OTHER,
    }
}

/// Why a command failed.
#[derive(Debug)]
pub enum CliError {
    /// A call returned an error status.
    Status {
        /// What the CLI was doing, e.g. `create stream orders`.
        what: String,
        /// The status the server (or the transport) returned.
        status: Status,
    },
    /// A service could not be reached at all.
    Unreachable(String),
    /// The command line was syntactically fine but makes no sense (e.g. nothing to update).
    Usage(String),
    /// Some items failed and others succeeded; details were already printed.
    Partial(String),
    /// Anything else (I/O on stdin, ...).
    Other(String),
    /// Stdout was closed by the reader (e.g. `| head`): stop quietly.
    BrokenPipe,
}

impl CliError {
    /// A status error of the call described by `what`.
    pub fn status(what: impl Into<String>, status: Status) -> Self {
        // A refused TLS handshake surfaces as a transport error; say which flag to fix.
        match crate::tls::refusal(&status) {
            Some(why) => Self::Status { what: what.into(), status: Status::unauthenticated(why) },
            None => Self::Status { what: what.into(), status },
        }
    }

    /// The process exit code of this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Status { status, .. } => code_for(status.code()),
            Self::Unreachable(_) => UNAVAILABLE,
            Self::Usage(_) => USAGE,
            Self::Partial(_) => PARTIAL,
            Self::Other(_) => OTHER,
            Self::BrokenPipe => OK,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status { what, status } if status.message().is_empty() => {
                write!(f, "{what}: {}", status.code().description())
            }
            Self::Status { what, status } => write!(f, "{what}: {}", status.message()),
            Self::Unreachable(m) | Self::Usage(m) | Self::Partial(m) | Self::Other(m) => f.write_str(m),
            Self::BrokenPipe => f.write_str("broken pipe"),
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::BrokenPipe { Self::BrokenPipe } else { Self::Other(e.to_string()) }
    }
}

/// `err` and its sources joined with `: ` (transport errors hide the useful part in sources).
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_documented_exit_codes() {
        assert_eq!(code_for(Code::NotFound), 3);
        for code in [Code::InvalidArgument, Code::AlreadyExists, Code::FailedPrecondition, Code::Unauthenticated] {
            assert_eq!(code_for(code), 4);
        }
        assert_eq!(code_for(Code::Unavailable), 5);
        assert_eq!(code_for(Code::Internal), 1);
        assert_eq!(CliError::Partial("x".into()).exit_code(), 6);
        assert_eq!(CliError::Usage("x".into()).exit_code(), 2);
    }

    #[test]
    fn messages_are_one_line() {
        let e = CliError::status("get stream s", Status::not_found("stream \"s\" not found"));
        assert_eq!(e.to_string(), "get stream s: stream \"s\" not found");
    }
}
