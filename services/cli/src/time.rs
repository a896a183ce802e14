//! RFC 3339 timestamps to and from protobuf `Timestamp`s, without a date-time crate: civil-date
//! arithmetic after Howard Hinnant's `days_from_civil` / `civil_from_days`.

use prost_types::Timestamp;

/// Days from 1970-01-01 to the given proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The (year, month, day) of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (if month <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, month, day)
}

/// The number in `text[range]`, which must be all ASCII digits and within `min..=max`.
fn field(text: &str, range: std::ops::Range<usize>, min: i64, max: i64) -> Option<i64> {
    let part = text.get(range)?;
    if !part.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    part.parse().ok().filter(|n| (min..=max).contains(n))
}

/// Nanoseconds of a fraction's digits (`"5"` is 500 ms); `None` if not digits or too long.
fn nanos_of_fraction(digits: &str) -> Option<i32> {
    if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let padded = format!("{digits:0<9}");
    padded.parse().ok()
}

/// Seconds east of UTC of a `Z`, `+hh:mm` or `-hh:mm` suffix.
fn offset_seconds(zone: &str) -> Option<i64> {
    if zone.eq_ignore_ascii_case("z") {
        return Some(0);
    }
    let sign = match zone.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    if zone.len() != 6 || zone.as_bytes().get(3) != Some(&b':') {
        return None;
    }
    Some(sign * (field(zone, 1..3, 0, 23)? * 3600 + field(zone, 4..6, 0, 59)? * 60))
}

/// Parses `2024-05-01T12:00:00Z`, `2024-05-01T12:00:00.250+02:00` and the like.
pub fn parse_rfc3339(text: &str) -> Result<Timestamp, String> {
    parse_parts(text.trim()).ok_or_else(|| format!("invalid RFC 3339 time {text:?}: use e.g. 2024-05-01T12:00:00Z"))
}

fn parse_parts(text: &str) -> Option<Timestamp> {
    let bytes = text.as_bytes();
    let separators_ok = bytes.get(4) == Some(&b'-')
        && bytes.get(7) == Some(&b'-')
        && matches!(bytes.get(10), Some(b'T' | b't' | b' '))
        && bytes.get(13) == Some(&b':')
        && bytes.get(16) == Some(&b':');
    if !separators_ok {
        return None;
    }
    let (year, month, day) = (field(text, 0..4, 0, 9999)?, field(text, 5..7, 1, 12)?, field(text, 8..10, 1, 31)?);
    let (hour, minute, second) =
        (field(text, 11..13, 0, 23)?, field(text, 14..16, 0, 59)?, field(text, 17..19, 0, 60)?);
    let rest = text.get(19..)?;
    let (nanos, zone) = match rest.strip_prefix('.') {
        Some(frac) => {
            let end = frac.find(|c: char| !c.is_ascii_digit()).unwrap_or(frac.len());
            (nanos_of_fraction(&frac[..end])?, &frac[end..])
        }
        None => (0, rest),
    };
    let local = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    Some(Timestamp { seconds: local - offset_seconds(zone)?, nanos })
}

/// Formats a timestamp as RFC 3339 in UTC, with milliseconds when they are not zero.
pub fn format_rfc3339(ts: &Timestamp) -> String {
    let days = ts.seconds.div_euclid(86_400);
    let secs = ts.seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let millis = ts.nanos / 1_000_000;
    let frac = if millis > 0 { format!(".{millis:03}") } else { String::new() };
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}{frac}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_utc_and_offsets() {
        let utc = parse_rfc3339("2024-05-01T12:00:00Z").unwrap();
        assert_eq!(utc, Timestamp { seconds: 1_714_564_800, nanos: 0 });
        let offset = parse_rfc3339("2024-05-01T14:00:00.250+02:00").unwrap();
        assert_eq!(offset, Timestamp { seconds: 1_714_564_800, nanos: 250_000_000 });
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z").unwrap().seconds, 0);
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59-00:00").unwrap().seconds, -1);
    }

    #[test]
    fn rejects_malformed() {
        for bad in ["", "2024-05-01", "2024-13-01T00:00:00Z", "2024-05-01T12:00:00", "2024-05-01T12:00:00+2", "x"] {
            assert!(parse_rfc3339(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn formats_round_trip() {
        for text in ["2024-05-01T12:00:00Z", "2000-02-29T23:59:59.123Z", "1970-01-01T00:00:00Z"] {
            assert_eq!(format_rfc3339(&parse_rfc3339(text).unwrap()), text);
        }
    }
}
