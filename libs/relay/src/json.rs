//! The CloudEvents JSON Format (an `event_json` outbox row) as the protobuf CloudEvent the
//! ingest step takes. Context attributes map to their typed values (`time` a timestamp,
//! `dataschema` a URI, other strings strings, booleans and integers as such); `data` becomes
//! text data (a JSON value other than a string is kept as its JSON text), `data_base64`
//! binary data. Whether the result is a valid CloudEvent is the ingest step's check.

use base64::Engine;
use eventflow_proto::{
    prost_types::Timestamp,
    v1::{
        CloudEvent,
        cloud_event::{CloudEventAttributeValue, Data, cloud_event_attribute_value::Attr},
    },
};
use serde_json::Value;

/// The CloudEvent `value` describes in the JSON Format, or why it is not one (one line).
pub fn from_json(value: &Value) -> Result<CloudEvent, String> {
    let Value::Object(members) = value else { return Err("event_json is not a JSON object".into()) };
    let mut event = CloudEvent::default();
    for (name, value) in members {
        let text = || value.as_str().map(str::to_string).ok_or_else(|| format!("event_json.{name} is not a string"));
        match name.as_str() {
            "id" => event.id = text()?,
            "source" => event.source = text()?,
            "specversion" => event.spec_version = text()?,
            "type" => event.r#type = text()?,
            "data" if members.contains_key("data_base64") => {
                return Err("event_json has both data and data_base64".into());
            }
            "data" => {
                event.data = match value {
                    Value::Null => None,
                    Value::String(s) => Some(Data::TextData(s.clone())),
                    other => Some(Data::TextData(other.to_string())),
                }
            }
            "data_base64" => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(text()?)
                    .map_err(|e| format!("event_json.data_base64: {e}"))?;
                event.data = Some(Data::BinaryData(bytes));
            }
            _ => {
                if let Some(attr) = attribute(name, value)? {
                    event.attributes.insert(name.clone(), CloudEventAttributeValue { attr: Some(attr) });
                }
            }
        }
    }
    Ok(event)
}

/// The typed value of the context attribute `name` (`None` for a JSON null: absent).
fn attribute(name: &str, value: &Value) -> Result<Option<Attr>, String> {
    let attr = match (name, value) {
        (_, Value::Null) => return Ok(None),
        ("time", Value::String(s)) => {
            let time = chrono::DateTime::parse_from_rfc3339(s)
                .map_err(|e| format!("event_json.time is not an RFC 3339 timestamp: {e}"))?;
            let nanos = i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0);
            Attr::CeTimestamp(Timestamp { seconds: time.timestamp(), nanos })
        }
        ("dataschema", Value::String(s)) => Attr::CeUri(s.clone()),
        (_, Value::String(s)) => Attr::CeString(s.clone()),
        (_, Value::Bool(b)) => Attr::CeBoolean(*b),
        (_, Value::Number(n)) => match n.as_i64().and_then(|n| i32::try_from(n).ok()) {
            Some(n) => Attr::CeInteger(n),
            None => return Err(format!("event_json.{name} is not a 32-bit integer")),
        },
        _ => return Err(format!("event_json.{name} is not a string, boolean or integer")),
    };
    Ok(Some(attr))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_json_format_maps_to_typed_attributes_and_data() {
        let event = from_json(&json!({
            "specversion": "1.0", "id": "e1", "source": "/orders", "type": "order.paid",
            "time": "2026-01-02T03:04:05.5Z", "dataschema": "https://example.com/s", "partitionkey": "o-1",
            "retries": 3, "urgent": true, "data": {"total": 5}
        }))
        .unwrap();
        assert_eq!((event.id.as_str(), event.source.as_str(), event.r#type.as_str()), ("e1", "/orders", "order.paid"));
        let attr = |name: &str| event.attributes[name].attr.clone().unwrap();
        assert_eq!(attr("time"), Attr::CeTimestamp(Timestamp { seconds: 1_767_323_045, nanos: 500_000_000 }));
        assert_eq!(attr("dataschema"), Attr::CeUri("https://example.com/s".into()));
        assert_eq!(attr("partitionkey"), Attr::CeString("o-1".into()));
        assert_eq!(attr("retries"), Attr::CeInteger(3));
        assert_eq!(attr("urgent"), Attr::CeBoolean(true));
        assert_eq!(event.data, Some(Data::TextData(r#"{"total":5}"#.into())));
        let binary = from_json(&json!({"data_base64": "AAE="})).unwrap();
        assert_eq!(binary.data, Some(Data::BinaryData(vec![0, 1])));
    }

    #[test]
    fn what_is_not_a_cloudevent_is_named() {
        assert_eq!(from_json(&json!([1])).unwrap_err(), "event_json is not a JSON object");
        assert_eq!(from_json(&json!({"id": 5})).unwrap_err(), "event_json.id is not a string");
        assert!(from_json(&json!({"data": "a", "data_base64": "AA=="})).unwrap_err().contains("both"));
        assert!(from_json(&json!({"time": "yesterday"})).unwrap_err().starts_with("event_json.time"));
        assert!(from_json(&json!({"nested": {"a": 1}})).unwrap_err().contains("nested"));
    }
}
