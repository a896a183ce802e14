//! Conversions between protobuf well-known types and std types, shared by every service.

use std::time::Duration;

/// A protobuf timestamp from milliseconds since the Unix epoch.
pub fn timestamp_from_ms(ms: u64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: i64::try_from(ms / 1000).unwrap_or(i64::MAX),
        nanos: i32::try_from((ms % 1000) * 1_000_000).unwrap_or(0),
    }
}

/// Milliseconds since the Unix epoch of a protobuf timestamp; `None` before the epoch or if
/// malformed.
pub fn ms_from_timestamp(ts: &prost_types::Timestamp) -> Option<u64> {
    let seconds = u64::try_from(ts.seconds).ok()?;
    let nanos = u64::try_from(ts.nanos).ok().filter(|n| *n < 1_000_000_000)?;
    seconds.checked_mul(1000)?.checked_add(nanos / 1_000_000)
}

/// A count as the API's `int64` (saturating).
pub fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A protobuf duration from a std duration.
pub fn duration_to_proto(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// A std duration from a protobuf duration; `None` if negative or malformed.
pub fn duration_from_proto(d: &prost_types::Duration) -> Option<Duration> {
    let seconds = u64::try_from(d.seconds).ok()?;
    let nanos = u32::try_from(d.nanos).ok().filter(|n| *n < 1_000_000_000)?;
    Some(Duration::new(seconds, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        assert_eq!(ms_from_timestamp(&timestamp_from_ms(1_700_000_000_123)), Some(1_700_000_000_123));
        let d = Duration::from_millis(1500);
        assert_eq!(duration_from_proto(&duration_to_proto(d)), Some(d));
        assert_eq!(duration_from_proto(&prost_types::Duration { seconds: -1, nanos: 0 }), None);
        assert_eq!(ms_from_timestamp(&prost_types::Timestamp { seconds: -5, nanos: 0 }), None);
    }
}
