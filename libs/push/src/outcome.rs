//! What a push's result means for the event: a 2xx acknowledges it; 408, 429, 5xx, timeouts,
//! connection errors and refused endpoints retry it (nack, with the retry policy and any
//! `Retry-After`); every other status dead-letters it with the reason
//! `HTTP <status>: <first bytes of the body>` ([`MAX_BODY_IN_REASON`] bytes at most, cut at a
//! character boundary).

use std::time::Duration;

/// Most body bytes a dead letter's reason quotes.
pub const MAX_BODY_IN_REASON: usize = 200;

/// How one push ended, before classification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The endpoint answered.
    Response {
        /// The HTTP status.
        status: u16,
        /// What its `Retry-After` asks for, if it sent a valid one.
        retry_after: Option<Duration>,
        /// The start of the body (at least [`MAX_BODY_IN_REASON`] bytes when there were that many).
        body: Vec<u8>,
    },
    /// No complete answer within the push timeout.
    Timeout,
    /// The connection failed (DNS, TCP, TLS, protocol).
    Failed(String),
    /// The endpoint may not be called (see [`crate::address`]).
    Refused(String),
}

/// What to do with the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledge: delivered.
    Ack,
    /// Nack: redeliver after the retry backoff, and no sooner than `after` if set.
    Retry {
        /// The endpoint's `Retry-After`.
        after: Option<Duration>,
        /// The nack reason (shown in a later dead letter).
        reason: String,
    },
    /// Dead-letter now with this reason.
    Reject(String),
}

impl Outcome {
    /// The metric label of the outcome.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Ack => "ack",
            Outcome::Retry { .. } => "retry",
            Outcome::Reject(_) => "reject",
        }
    }
}

impl Attempt {
    /// The status-class label of the attempt (`2xx` ... `5xx`, `timeout`, `error`, `refused`).
    pub fn class(&self) -> &'static str {
        match self {
            Attempt::Response { status, .. } => match status {
                100..=199 => "1xx",
                200..=299 => "2xx",
                300..=399 => "3xx",
                400..=499 => "4xx",
                _ => "5xx",
            },
            Attempt::Timeout => "timeout",
            Attempt::Failed(_) => "error",
            Attempt::Refused(_) => "refused",
        }
    }

    /// Classifies the attempt.
    pub fn outcome(&self) -> Outcome {
        match self {
            Attempt::Response { status: 200..=299, .. } => Outcome::Ack,
            Attempt::Response { status, retry_after, body } if *status == 408 || *status == 429 || *status >= 500 => {
                Outcome::Retry { after: *retry_after, reason: reason(*status, body) }
            }
            Attempt::Response { status, body, .. } => Outcome::Reject(reason(*status, body)),
            Attempt::Timeout => Outcome::Retry { after: None, reason: "push timed out".into() },
            Attempt::Failed(why) => Outcome::Retry { after: None, reason: bounded(format!("push failed: {why}")) },
            Attempt::Refused(why) => {
                Outcome::Retry { after: None, reason: bounded(format!("endpoint refused: {why}")) }
            }
        }
    }
}

/// Most bytes of a failure's reason (settlement takes up to 1024).
const MAX_REASON: usize = 512;

/// `reason` cut to [`MAX_REASON`] bytes at a character boundary.
fn bounded(mut reason: String) -> String {
    let mut cut = reason.len().min(MAX_REASON);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    reason.truncate(cut);
    reason
}

/// `HTTP <status>: <body start>`, the body cut to [`MAX_BODY_IN_REASON`] bytes of valid UTF-8
/// (invalid sequences replaced).
pub fn reason(status: u16, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX_BODY_IN_REASON)]);
    let mut cut = text.len().min(MAX_BODY_IN_REASON);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("HTTP {status}: {}", &text[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, body: &str) -> Attempt {
        Attempt::Response { status, retry_after: None, body: body.as_bytes().to_vec() }
    }

    #[test]
    fn classifies_statuses_and_failures() {
        assert_eq!(response(200, "").outcome(), Outcome::Ack);
        assert_eq!(response(204, "").outcome(), Outcome::Ack);
        for status in [408, 429, 500, 502, 503] {
            assert!(matches!(response(status, "").outcome(), Outcome::Retry { after: None, .. }), "{status}");
        }
        let later = Attempt::Response { status: 503, retry_after: Some(Duration::from_secs(3)), body: vec![] };
        assert!(matches!(later.outcome(), Outcome::Retry { after: Some(d), .. } if d == Duration::from_secs(3)));
        assert_eq!(response(400, "bad field x").outcome(), Outcome::Reject("HTTP 400: bad field x".into()));
        assert_eq!(response(410, "").outcome(), Outcome::Reject("HTTP 410: ".into()));
        assert_eq!(response(301, "moved").outcome(), Outcome::Reject("HTTP 301: moved".into()));
        assert!(matches!(Attempt::Timeout.outcome(), Outcome::Retry { .. }));
        assert!(matches!(Attempt::Failed("refused".into()).outcome(), Outcome::Retry { .. }));
        assert!(matches!(Attempt::Refused("private".into()).outcome(), Outcome::Retry { .. }));
        assert_eq!(response(404, "").class(), "4xx");
        assert_eq!(Attempt::Timeout.class(), "timeout");
    }

    #[test]
    fn reasons_are_bounded_utf8() {
        let long = "é".repeat(300); // 600 bytes; byte 200 is a boundary, 199 is not
        let r = reason(400, long.as_bytes());
        assert_eq!(r, format!("HTTP 400: {}", "é".repeat(100)));
        let r = reason(400, &long.as_bytes()[1..]); // starts mid-character
        assert!(r.len() <= "HTTP 400: ".len() + MAX_BODY_IN_REASON + 3, "{r}");
        assert!(reason(422, &[0xff, b'a']).starts_with("HTTP 422: \u{fffd}a"));
    }
}
