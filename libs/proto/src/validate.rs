//! CloudEvent validation on publish, per the CloudEvents v1.0 spec and eventflow's limits.
//!
//! The Distributed Tracing extension attributes `traceparent` and `tracestate` must be strings
//! in W3C Trace Context format (`eventflow_tracecontext` holds the rules): a malformed one would
//! travel with the event to every consumer and break its trace there; refusing it at publish
//! tells the producer at once.
//!
//! The Partitioning extension attribute `partitionkey` is the ordering key of ordered
//! subscriptions: it must be a string of 1 to [`MAX_PARTITION_KEY_BYTES`] bytes without NUL
//! (the broker keeps it in Redis, where NUL separates a key from the rest of a sort member).

use eventflow_tracecontext::{Invalid, parse_traceparent, validate_tracestate};

use crate::v1::{CloudEvent, cloud_event::cloud_event_attribute_value::Attr};

/// Longest event id accepted, in bytes (it becomes part of a Redis key).
pub const MAX_ID_BYTES: usize = 512;
/// Longest `partitionkey` accepted, in bytes (it is stored per entry and in the ordering gate).
pub const MAX_PARTITION_KEY_BYTES: usize = 512;
/// Context attributes that have their own fields and must not appear in `attributes`.
const RESERVED: [&str; 6] = ["id", "source", "specversion", "type", "data", "data_base64"];

/// A problem with one field of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the field, e.g. `events[2].type`.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// A W3C Trace Context check of one attribute value.
type Check = fn(&str) -> Result<(), Invalid>;

/// Checks the event at `index` of a publish request. An empty `id` is allowed (the server
/// assigns one).
pub fn validate_event(event: &CloudEvent, index: usize) -> Result<(), FieldError> {
    let err = |field: &str, reason: String| FieldError { field: format!("events[{index}].{field}"), reason };
    if event.id.len() > MAX_ID_BYTES {
        return Err(err("id", format!("longer than {MAX_ID_BYTES} bytes")));
    }
    if event.source.is_empty() {
        return Err(err("source", "required (a URI-reference)".into()));
    }
    if event.source.chars().any(char::is_whitespace) {
        return Err(err("source", "must be a URI-reference (no whitespace)".into()));
    }
    if event.spec_version != "1.0" {
        return Err(err("spec_version", format!("must be \"1.0\", got {:?}", event.spec_version)));
    }
    if event.r#type.is_empty() {
        return Err(err("type", "required".into()));
    }
    for (name, value) in &event.attributes {
        let valid =
            !name.is_empty() && name.len() <= 20 && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if !valid {
            return Err(err("attributes", format!("name {name:?} must be 1-20 characters of [a-z0-9]")));
        }
        if RESERVED.contains(&name.as_str()) {
            return Err(err("attributes", format!("{name:?} has its own field")));
        }
        if value.attr.is_none() {
            return Err(err(&format!("attributes[{name}]"), "no value set".into()));
        }
    }
    let trace_attrs: [(&str, Check); 2] =
        [("traceparent", |v| parse_traceparent(v).map(|_| ())), ("tracestate", validate_tracestate)];
    for (name, check) in trace_attrs {
        let field = || format!("attributes.{name}");
        match event.attributes.get(name).and_then(|v| v.attr.as_ref()) {
            None => {}
            Some(Attr::CeString(s) | Attr::CeUri(s) | Attr::CeUriRef(s)) => {
                check(s).map_err(|e| err(&field(), format!("not a W3C Trace Context {name}: {e}")))?;
            }
            Some(_) => return Err(err(&field(), "must be a string (W3C Trace Context)".into())),
        }
    }
    if let Some(value) = event.attributes.get("partitionkey").and_then(|v| v.attr.as_ref()) {
        let field = "attributes.partitionkey";
        match value {
            Attr::CeString(key) if key.is_empty() || key.len() > MAX_PARTITION_KEY_BYTES => {
                return Err(err(field, format!("must be 1 to {MAX_PARTITION_KEY_BYTES} bytes")));
            }
            Attr::CeString(key) if key.contains('\0') => return Err(err(field, "must not contain NUL".into())),
            Attr::CeString(_) => {}
            _ => return Err(err(field, "must be a string (CloudEvents Partitioning extension)".into())),
        }
    }
    Ok(())
}

/// The event's ordering key: its `partitionkey` attribute (a string, once validated), or ''.
pub fn partition_key(event: &CloudEvent) -> &str {
    match event.attributes.get("partitionkey").and_then(|v| v.attr.as_ref()) {
        Some(Attr::CeString(key)) => key,
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::cloud_event::{CloudEventAttributeValue, cloud_event_attribute_value::Attr};

    fn event() -> CloudEvent {
        CloudEvent {
            id: "e1".into(),
            source: "/orders".into(),
            spec_version: "1.0".into(),
            r#type: "order.created".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_valid_event_passes_and_empty_id_is_allowed() {
        assert_eq!(validate_event(&event(), 0), Ok(()));
        assert_eq!(validate_event(&CloudEvent { id: String::new(), ..event() }, 0), Ok(()));
    }

    #[test]
    fn each_required_field_is_named() {
        let cases = [
            (CloudEvent { source: String::new(), ..event() }, "events[3].source"),
            (CloudEvent { spec_version: "0.3".into(), ..event() }, "events[3].spec_version"),
            (CloudEvent { r#type: String::new(), ..event() }, "events[3].type"),
            (CloudEvent { id: "x".repeat(513), ..event() }, "events[3].id"),
        ];
        for (bad, field) in cases {
            assert_eq!(validate_event(&bad, 3).unwrap_err().field, field);
        }
    }

    #[test]
    fn attribute_names_and_values_are_checked() {
        let value = CloudEventAttributeValue { attr: Some(Attr::CeString("x".into())) };
        let mut ok = event();
        ok.attributes.insert("subject".into(), value.clone());
        assert!(validate_event(&ok, 0).is_ok());
        for name in ["Upper", "with-dash", "id", "averyveryverylongname1"] {
            let mut bad = event();
            bad.attributes.insert(name.into(), value.clone());
            assert!(validate_event(&bad, 0).is_err(), "{name}");
        }
        let mut empty = event();
        empty.attributes.insert("subject".into(), CloudEventAttributeValue { attr: None });
        assert!(validate_event(&empty, 0).is_err());
    }

    fn with_attr(name: &str, attr: Attr) -> CloudEvent {
        let mut e = event();
        e.attributes.insert(name.into(), CloudEventAttributeValue { attr: Some(attr) });
        e
    }

    #[test]
    fn the_partition_key_is_a_short_string_without_nul() {
        let ok = with_attr("partitionkey", Attr::CeString("order-7".into()));
        assert_eq!(validate_event(&ok, 0), Ok(()));
        assert_eq!(partition_key(&ok), "order-7");
        assert_eq!(partition_key(&with_attr("subject", Attr::CeString("x".into()))), "");
        for bad in [
            Attr::CeString(String::new()),
            Attr::CeString("a\0b".into()),
            Attr::CeString("k".repeat(MAX_PARTITION_KEY_BYTES + 1)),
            Attr::CeInteger(7),
        ] {
            let err = validate_event(&with_attr("partitionkey", bad), 2).unwrap_err();
            assert_eq!(err.field, "events[2].attributes.partitionkey", "{err}");
        }
    }

    #[test]
    fn trace_context_attributes_follow_w3c() {
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(validate_event(&with_attr("traceparent", Attr::CeString(valid.into())), 3), Ok(()));
        assert_eq!(validate_event(&with_attr("tracestate", Attr::CeString("rojo=1,congo=2".into())), 3), Ok(()));
        let cases = [
            ("traceparent", Attr::CeString("abc:def".into())),
            ("traceparent", Attr::CeString("ab".repeat(50_000))),
            ("traceparent", Attr::CeUri(valid.replacen("00", "ff", 1))),
            ("traceparent", Attr::CeInteger(7)),
            ("tracestate", Attr::CeString("no value".into())),
            ("tracestate", Attr::CeBoolean(true)),
        ];
        for (name, attr) in cases {
            let error = validate_event(&with_attr(name, attr.clone()), 3).unwrap_err();
            assert_eq!(error.field, format!("events[3].attributes.{name}"), "{attr:?}");
            assert!(error.reason.len() < 200, "the reason does not repeat the value: {}", error.reason);
        }
    }
}
