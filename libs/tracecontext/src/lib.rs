//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>): the one place eventflow decides
//! whether a `traceparent` or `tracestate` value is valid.
//!
//! Trace context enters eventflow inside events (the CloudEvents Distributed Tracing attributes)
//! and travels on in stream entries and ack ids. Its users:
//! * publish validation refuses an event whose `traceparent`/`tracestate` is malformed
//!   (`eventflow-proto`'s `validate`), so a producer learns of the mistake at once;
//! * ack ids carry an event's traceparent only in its [`compact_traceparent`] form, so an ack id
//!   stays small whatever an event (or an entry stored before validation existed) carries
//!   (`eventflow-broker`'s `ack_id`);
//! * spans continue an event's context only when it parses here (`eventflow-runtime`'s `trace`).
//!
//! # traceparent
//! `version "-" trace-id "-" parent-id "-" trace-flags`, every field lowercase hex:
//! version 2 digits (`ff` is invalid), trace-id 32 digits and parent-id 16 digits (neither all
//! zeros), trace-flags 2 digits. Version `00` is exactly [`TRACEPARENT_LEN`] characters. A
//! higher version is read by the spec's forward-compatibility rules: at least 55 characters,
//! the four fields as in `00`, then either the end or a `-` and fields of that version that are
//! not interpreted here. The spec lets a receiver refuse "prohibitively large" values; here that
//! is anything over [`MAX_TRACEPARENT_LEN`].
//!
//! # tracestate
//! At most [`MAX_TRACESTATE_MEMBERS`] comma-separated list members (spaces and tabs around a
//! member are ignored, empty members allowed) and at most [`MAX_TRACESTATE_LEN`] characters in
//! all. A member is `key=value`: the key 1–256 characters, starting with `a-z` or `0-9`, then
//! `a-z 0-9 _ - * / @`; the value 1–256 printable ASCII characters other than `,` and `=`, not
//! ending in a space. A key appears at most once.

/// Length of a version-`00` traceparent (and of the part of any version eventflow keeps).
pub const TRACEPARENT_LEN: usize = 55;
/// Longest traceparent accepted (higher versions may append fields; nothing legitimate needs more).
pub const MAX_TRACEPARENT_LEN: usize = 512;
/// Longest tracestate accepted: the length the spec asks every vendor to propagate.
pub const MAX_TRACESTATE_LEN: usize = 512;
/// Most list members of a tracestate, as the spec allows.
pub const MAX_TRACESTATE_MEMBERS: usize = 32;
/// Longest tracestate key or value, as the spec allows.
const MAX_TRACESTATE_FIELD: usize = 256;

/// Why a value is not valid W3C trace context; the message is safe to show a client (it never
/// repeats the value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(String);

impl Invalid {
    fn new(reason: impl Into<String>) -> Self {
        Self(reason.into())
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Invalid {}

/// The fields of a valid traceparent, borrowed from the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Traceparent<'a> {
    /// The version (never 0xff).
    pub version: u8,
    /// 32 lowercase hex digits, not all zeros.
    pub trace_id: &'a str,
    /// 16 lowercase hex digits, not all zeros.
    pub parent_id: &'a str,
    /// The trace flags (bit 0: sampled).
    pub flags: u8,
    /// The first [`TRACEPARENT_LEN`] characters: version, ids and flags without the fields a
    /// higher version may append. For version `00` this is the whole value.
    pub compact: &'a str,
}

/// Parses a traceparent value (see the module doc for the rules).
pub fn parse_traceparent(value: &str) -> Result<Traceparent<'_>, Invalid> {
    let b = value.as_bytes();
    if b.len() > MAX_TRACEPARENT_LEN {
        return Err(Invalid::new(format!("longer than {MAX_TRACEPARENT_LEN} characters")));
    }
    if b.len() < 3 || !is_hex(&b[..2]) || b[2] != b'-' {
        return Err(Invalid::new(
            "must be version-traceid-parentid-flags in lowercase hex \
             (e.g. 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01)",
        ));
    }
    let version = hex_byte(&b[..2]);
    if version == 0xff {
        return Err(Invalid::new("version ff is invalid"));
    }
    if version == 0 && b.len() != TRACEPARENT_LEN {
        return Err(Invalid::new(format!("version 00 must be exactly {TRACEPARENT_LEN} characters")));
    }
    if b.len() < TRACEPARENT_LEN {
        return Err(Invalid::new(format!("shorter than {TRACEPARENT_LEN} characters")));
    }
    let field = |range: std::ops::Range<usize>, name: &str, digits: usize| {
        let bytes = &b[range];
        if !is_hex(bytes) {
            return Err(Invalid::new(format!("{name} must be {digits} lowercase hex digits")));
        }
        if digits > 2 && bytes.iter().all(|c| *c == b'0') {
            return Err(Invalid::new(format!("{name} must not be all zeros")));
        }
        Ok(())
    };
    field(3..35, "trace-id", 32)?;
    if b[35] != b'-' {
        return Err(Invalid::new("trace-id must be 32 lowercase hex digits followed by '-'"));
    }
    field(36..52, "parent-id", 16)?;
    if b[52] != b'-' {
        return Err(Invalid::new("parent-id must be 16 lowercase hex digits followed by '-'"));
    }
    field(53..55, "trace-flags", 2)?;
    if b.len() > TRACEPARENT_LEN && b[TRACEPARENT_LEN] != b'-' {
        return Err(Invalid::new("trace-flags must be followed by the end of the value or '-'"));
    }
    // The first 55 bytes are ASCII (checked above), so these are character boundaries.
    Ok(Traceparent {
        version,
        trace_id: &value[3..35],
        parent_id: &value[36..52],
        flags: hex_byte(&b[53..55]),
        compact: &value[..TRACEPARENT_LEN],
    })
}

/// The part of a traceparent worth keeping beside an event or in an ack id: the
/// [`TRACEPARENT_LEN`]-character [`Traceparent::compact`] form of a valid value, `None` for
/// anything else. Its size never depends on what the value was.
pub fn compact_traceparent(value: &str) -> Option<&str> {
    parse_traceparent(value).ok().map(|t| t.compact)
}

/// Checks a tracestate value (see the module doc for the rules).
pub fn validate_tracestate(value: &str) -> Result<(), Invalid> {
    if value.len() > MAX_TRACESTATE_LEN {
        return Err(Invalid::new(format!("longer than {MAX_TRACESTATE_LEN} characters")));
    }
    let members: Vec<&str> = value.split(',').collect();
    if members.len() > MAX_TRACESTATE_MEMBERS {
        return Err(Invalid::new(format!("more than {MAX_TRACESTATE_MEMBERS} list members")));
    }
    let mut keys: Vec<&str> = Vec::with_capacity(members.len());
    for (i, member) in members.iter().enumerate() {
        let member = member.trim_matches([' ', '\t']);
        if member.is_empty() {
            continue;
        }
        let n = i + 1;
        let Some((key, val)) = member.split_once('=') else {
            return Err(Invalid::new(format!("list member {n} must be key=value")));
        };
        if !valid_key(key) {
            return Err(Invalid::new(format!(
                "list member {n}: the key must be 1-{MAX_TRACESTATE_FIELD} characters of [a-z0-9_-*/@] \
                 starting with a-z or 0-9"
            )));
        }
        if !valid_value(val) {
            return Err(Invalid::new(format!(
                "list member {n}: the value must be 1-{MAX_TRACESTATE_FIELD} printable ASCII characters \
                 other than ',' and '=', not ending in a space"
            )));
        }
        if keys.contains(&key) {
            return Err(Invalid::new(format!("list member {n} repeats an earlier key")));
        }
        keys.push(key);
    }
    Ok(())
}

/// A tracestate key: `(a-z / 0-9) 0*255(a-z / 0-9 / _ / - / * / / / @)`.
fn valid_key(key: &str) -> bool {
    let b = key.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_TRACESTATE_FIELD
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_-*/@".contains(c))
}

/// A tracestate value: `0*255(chr) nblk-chr`, chr = 0x20-0x7E except `,` and `=`; the last
/// not a space.
fn valid_value(value: &str) -> bool {
    let b = value.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_TRACESTATE_FIELD
        && b.iter().all(|c| (0x20..=0x7e).contains(c) && *c != b',' && *c != b'=')
        && b.last() != Some(&b' ')
}

/// Whether every byte is a lowercase hex digit.
fn is_hex(bytes: &[u8]) -> bool {
    bytes.iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

/// Two lowercase hex digits (already checked) as a byte.
fn hex_byte(two: &[u8]) -> u8 {
    let digit = |c: u8| if c.is_ascii_digit() { c - b'0' } else { c - b'a' + 10 };
    two.iter().fold(0, |acc, c| (acc << 4) | digit(*c))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn valid_traceparents_parse() {
        let t = parse_traceparent(VALID).unwrap();
        assert_eq!(
            (t.version, t.trace_id, t.parent_id, t.flags, t.compact),
            (0, "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", 1, VALID)
        );
        // Flags other than "sampled" are accepted (receivers ignore them).
        assert_eq!(parse_traceparent(&VALID.replace("-01", "-ff")).unwrap().flags, 0xff);
        // A higher version: the same four fields, then the end or '-' and fields not read here.
        let v1 = VALID.replacen("00", "01", 1);
        assert_eq!(parse_traceparent(&v1).unwrap().version, 1);
        let longer = format!("{}-what-comes-next", VALID.replacen("00", "cc", 1));
        let t = parse_traceparent(&longer).unwrap();
        assert_eq!((t.version, t.compact.len()), (0xcc, TRACEPARENT_LEN));
        assert_eq!(compact_traceparent(&longer), Some(&longer[..TRACEPARENT_LEN]));
    }

    #[test]
    fn invalid_traceparents_are_refused_with_a_reason() {
        let hundred_kb_hex = "ab".repeat(50_000);
        let cases: Vec<(String, &str)> = vec![
            ("abc:def".into(), "version-traceid"),
            (String::new(), "version-traceid"),
            (hundred_kb_hex, "longer than 512"),
            (VALID.replacen("00", "ff", 1), "version ff"),
            (VALID.replacen("00", "0G", 1), "version-traceid"),
            (VALID.to_uppercase(), "trace-id must be 32 lowercase"),
            (VALID.replace("4bf92f", "4BF92F"), "trace-id"),
            (format!("{VALID}-extra"), "exactly 55"),
            (VALID[..54].to_string(), "exactly 55"),
            (VALID.replacen("00", "01", 1)[..54].to_string(), "shorter than 55"),
            (format!("00-{}-00f067aa0ba902b7-01", "0".repeat(32)), "trace-id must not be all zeros"),
            (format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", "0".repeat(16)), "parent-id must not be all zeros"),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01".into(), "followed by '-'"),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01".into(), "followed by '-'"),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x".into(), "trace-flags"),
            (format!("{}x", VALID.replacen("00", "01", 1)), "followed by the end"),
            // Multi-byte characters must not trip slicing.
            (format!("00-{}-00f067aa0ba902b7-01", "é".repeat(16)), "trace-id"),
        ];
        for (value, want) in cases {
            let err = parse_traceparent(&value).unwrap_err().to_string();
            assert!(err.contains(want), "{value:.60}: {err}");
            assert_eq!(compact_traceparent(&value), None);
        }
    }

    #[test]
    fn valid_tracestates_pass() {
        for ok in [
            "",
            "rojo=00f067aa0ba902b7",
            "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
            " rojo=1 ,\tcongo=2\t",
            "a=1,,b=c",
            ",,",
            "tenant@vendor=x",
            "0k_-*/@=v a l u e",
            "k=  leading spaces are part of the value",
        ] {
            assert_eq!(validate_tracestate(ok), Ok(()), "{ok:?}");
        }
        let at_limit = (0..32).map(|i| format!("k{i}=v")).collect::<Vec<_>>().join(",");
        assert_eq!(validate_tracestate(&at_limit), Ok(()));
    }

    #[test]
    fn invalid_tracestates_are_refused_with_a_reason() {
        let too_many = (0..33).map(|i| format!("k{i}=v")).collect::<Vec<_>>().join(",");
        let cases = [
            (too_many, "more than 32"),
            (format!("k={}", "v".repeat(600)), "longer than 512"),
            ("novalue".into(), "key=value"),
            ("Upper=1".into(), "the key"),
            ("_k=1".into(), "the key"),
            ("k k=1".into(), "the key"),
            ("=1".into(), "the key"),
            (format!("{}=1", "k".repeat(257)), "the key"),
            ("k=".into(), "the value"),
            ("k=a=b".into(), "the value"),
            ("k=tab\there".into(), "the value"),
            ("k=é".into(), "the value"),
            (format!("k={}", "v".repeat(257)), "the value"),
            ("a=1,b=2,a=3".into(), "list member 3 repeats"),
        ];
        for (value, want) in cases {
            let err = validate_tracestate(&value).unwrap_err().to_string();
            assert!(err.contains(want), "{value:.60}: {err}");
        }
    }
}
