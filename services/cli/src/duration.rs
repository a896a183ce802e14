//! Human durations: `500ms`, `30s`, `10m`, `1h`, `2d` and sums of them (`1h30m`), parsed for
//! flags and printed in the same form in tables.

use std::time::Duration;

/// The units a duration may use, longest suffix first so `ms` wins over `m`.
const UNITS: [(&str, u64); 5] = [("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)];

/// Parses `500ms`, `30s`, `10m`, `1h`, `2d`, sums like `1h30m`, and a bare `0`.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let bad = || format!("invalid duration {text:?}: use e.g. 500ms, 30s, 10m, 1h, 2d or 1h30m");
    let mut rest = text;
    let mut total_ms: u64 = 0;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
        let after = &rest[digits..];
        let unit_len = after.find(|c: char| c.is_ascii_digit()).unwrap_or(after.len());
        let unit = &after[..unit_len];
        let (_, scale) = UNITS.iter().find(|(name, _)| *name == unit).ok_or_else(bad)?;
        let part = number.checked_mul(*scale).ok_or_else(bad)?;
        total_ms = total_ms.checked_add(part).ok_or_else(bad)?;
        rest = &after[unit_len..];
    }
    Ok(Duration::from_millis(total_ms))
}

/// Formats a duration the way [`parse`] reads it: `0s`, `500ms`, `1m30s`, `10m`, `1d2h`.
/// Sub-millisecond parts are dropped.
pub fn format(d: Duration) -> String {
    let mut ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (name, scale) in UNITS.iter().rev() {
        let count = ms / scale;
        if count > 0 {
            out.push_str(&format!("{count}{name}"));
            ms %= scale;
        }
    }
    out
}

/// A whole number of seconds from a duration flag, for fields such as `ack_deadline_seconds`.
pub fn whole_seconds(d: Duration) -> Result<i32, String> {
    if d.subsec_nanos() != 0 {
        return Err(format!("{} is not a whole number of seconds", format(d)));
    }
    i32::try_from(d.as_secs()).map_err(|_| format!("{} is too long", format(d)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_units() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn parses_sums() {
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("1m30s250ms"), Ok(Duration::from_millis(90_250)));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "s", "10", "10x", "1.5s", "-1s", "h1", "1h 30m", "99999999999999999999d"] {
            assert!(parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn formats_round_trip() {
        for text in ["0s", "500ms", "30s", "10m", "1h", "1m30s", "1d2h", "1h30m"] {
            assert_eq!(format(parse(text).unwrap()), text);
        }
        assert_eq!(format(Duration::from_secs(600)), "10m");
    }

    #[test]
    fn whole_seconds_only() {
        assert_eq!(whole_seconds(Duration::from_secs(30)), Ok(30));
        assert!(whole_seconds(Duration::from_millis(1500)).is_err());
    }
}
