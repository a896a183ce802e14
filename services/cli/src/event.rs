//! CloudEvents in their JSON format (spec v1.0), as `publish --stdin` reads them and `tail` /
//! `dlq show` print them, so the output of one can be piped into the other.
//!
//! Reading: `id`, `source`, `type`, `specversion` (default `"1.0"`) are the context fields;
//! `data` becomes `text_data` (a JSON string as is, any other JSON value serialized, with
//! `datacontenttype` defaulting to `application/json`); `data_base64` becomes `binary_data`;
//! every other key is an attribute: strings (`time` as a timestamp when it parses), booleans
//! and 32-bit integers keep their type, other numbers become strings.

use base64::{Engine, engine::general_purpose::STANDARD};
use eventflow_proto::v1::{
    CloudEvent,
    cloud_event::{CloudEventAttributeValue, Data, cloud_event_attribute_value::Attr},
};
use serde_json::{Map, Value};

use crate::time;

/// Context values for fields a line leaves out (from `--type` / `--source`).
#[derive(Debug, Clone, Default)]
pub struct Defaults {
    /// The `type` of events that have none.
    pub event_type: Option<String>,
    /// The `source` of events that have none.
    pub source: String,
}

/// Keys with their own fields in [`CloudEvent`].
const CONTEXT: [&str; 6] = ["id", "source", "type", "specversion", "data", "data_base64"];

/// The event a JSON line describes; the error says what is wrong with the line.
pub fn from_json(line: &str, defaults: &Defaults) -> Result<CloudEvent, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(map) = value else {
        return Err("expected a JSON object with CloudEvent fields".into());
    };
    let mut event = CloudEvent {
        id: text(&map, "id")?.unwrap_or_default(),
        source: text(&map, "source")?.unwrap_or_else(|| defaults.source.clone()),
        spec_version: text(&map, "specversion")?.unwrap_or_else(|| "1.0".into()),
        r#type: text(&map, "type")?.or_else(|| defaults.event_type.clone()).unwrap_or_default(),
        ..Default::default()
    };
    for (name, value) in map.iter().filter(|(k, _)| !CONTEXT.contains(&k.as_str())) {
        event.attributes.insert(name.clone(), attribute(name, value)?);
    }
    event.data = data(&map, &mut event)?;
    Ok(event)
}

/// The string at `key`, if present; an error if it is not a string.
fn text(map: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("{key:?} must be a string")),
    }
}

/// An attribute value with the CloudEvents type its JSON value suggests.
fn attribute(name: &str, value: &Value) -> Result<CloudEventAttributeValue, String> {
    let attr = match value {
        Value::String(s) if name == "time" => {
            time::parse_rfc3339(s).map_or_else(|_| Attr::CeString(s.clone()), Attr::CeTimestamp)
        }
        Value::String(s) => Attr::CeString(s.clone()),
        Value::Bool(b) => Attr::CeBoolean(*b),
        Value::Number(n) => n
            .as_i64()
            .and_then(|i| i32::try_from(i).ok())
            .map_or_else(|| Attr::CeString(n.to_string()), Attr::CeInteger),
        _ => return Err(format!("attribute {name:?} must be a string, number or boolean")),
    };
    Ok(CloudEventAttributeValue { attr: Some(attr) })
}

/// The payload of the line: `data` or `data_base64` (not both).
fn data(map: &Map<String, Value>, event: &mut CloudEvent) -> Result<Option<Data>, String> {
    match (map.get("data"), map.get("data_base64")) {
        (Some(_), Some(_)) => Err("\"data\" and \"data_base64\" are exclusive".into()),
        (None | Some(Value::Null), None) => Ok(None),
        (None, Some(Value::String(b64))) => {
            STANDARD.decode(b64).map(|b| Some(Data::BinaryData(b))).map_err(|e| format!("\"data_base64\": {e}"))
        }
        (None, Some(_)) => Err("\"data_base64\" must be a string".into()),
        (Some(Value::String(s)), None) => Ok(Some(Data::TextData(s.clone()))),
        (Some(other), None) => {
            let content_type = CloudEventAttributeValue { attr: Some(Attr::CeString("application/json".into())) };
            event.attributes.entry("datacontenttype".into()).or_insert(content_type);
            Ok(Some(Data::TextData(other.to_string())))
        }
    }
}

/// The event in the CloudEvents JSON format. Text data that is JSON (and not declared
/// otherwise by `datacontenttype`) is embedded as JSON; other text as a string; bytes as
/// `data_base64`.
pub fn to_json(event: &CloudEvent) -> Value {
    let mut map = Map::new();
    map.insert("specversion".into(), Value::String(event.spec_version.clone()));
    map.insert("id".into(), Value::String(event.id.clone()));
    map.insert("source".into(), Value::String(event.source.clone()));
    map.insert("type".into(), Value::String(event.r#type.clone()));
    let mut names: Vec<&String> = event.attributes.keys().collect();
    names.sort();
    for name in names {
        if let Some(value) = event.attributes.get(name).and_then(attribute_json) {
            map.insert(name.clone(), value);
        }
    }
    match &event.data {
        Some(Data::TextData(text)) => {
            let data = if is_json(event) { serde_json::from_str(text).ok() } else { None };
            map.insert("data".into(), data.unwrap_or_else(|| Value::String(text.clone())));
        }
        Some(Data::BinaryData(bytes)) => {
            map.insert("data_base64".into(), Value::String(STANDARD.encode(bytes)));
        }
        Some(Data::ProtoData(any)) => {
            map.insert("data_base64".into(), Value::String(STANDARD.encode(&any.value)));
        }
        None => {}
    }
    Value::Object(map)
}

/// Whether the event's text data may be JSON: no content type, or one mentioning `json`.
fn is_json(event: &CloudEvent) -> bool {
    match event.attributes.get("datacontenttype").and_then(|v| v.attr.as_ref()) {
        Some(Attr::CeString(ct)) => ct.contains("json"),
        _ => true,
    }
}

/// An attribute's JSON value (binary as base64, timestamps RFC 3339).
fn attribute_json(value: &CloudEventAttributeValue) -> Option<Value> {
    Some(match value.attr.as_ref()? {
        Attr::CeBoolean(b) => Value::Bool(*b),
        Attr::CeInteger(i) => Value::from(*i),
        Attr::CeString(s) | Attr::CeUri(s) | Attr::CeUriRef(s) => Value::String(s.clone()),
        Attr::CeBytes(b) => Value::String(STANDARD.encode(b)),
        Attr::CeTimestamp(t) => Value::String(time::format_rfc3339(t)),
    })
}

/// The event's payload as one line of text for tables: the text, or `<N bytes>`.
pub fn data_summary(event: &CloudEvent) -> String {
    match &event.data {
        Some(Data::TextData(text)) => text.replace('\n', " "),
        Some(Data::BinaryData(bytes)) => format!("<{} bytes>", bytes.len()),
        Some(Data::ProtoData(any)) => format!("<{} ({} bytes)>", any.type_url, any.value.len()),
        None => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn defaults() -> Defaults {
        Defaults { event_type: None, source: "cli".into() }
    }

    #[test]
    fn reads_context_data_and_attributes() {
        let line = r#"{"id":"1","type":"t","data":{"a":1},"subject":"x","n":7,"ok":true}"#;
        let event = from_json(line, &defaults()).unwrap();
        assert_eq!((event.id.as_str(), event.r#type.as_str(), event.source.as_str()), ("1", "t", "cli"));
        assert_eq!(event.spec_version, "1.0");
        assert_eq!(event.data, Some(Data::TextData("{\"a\":1}".into())));
        let attr = |n: &str| event.attributes[n].attr.clone().unwrap();
        assert_eq!(attr("datacontenttype"), Attr::CeString("application/json".into()));
        assert_eq!(
            (attr("subject"), attr("n"), attr("ok")),
            (Attr::CeString("x".into()), Attr::CeInteger(7), Attr::CeBoolean(true))
        );
    }

    #[test]
    fn string_data_is_text_and_base64_is_binary() {
        let event = from_json(r#"{"type":"t","data":"hello"}"#, &defaults()).unwrap();
        assert_eq!(event.data, Some(Data::TextData("hello".into())));
        assert!(!event.attributes.contains_key("datacontenttype"));
        let event = from_json(r#"{"type":"t","data_base64":"AAE="}"#, &defaults()).unwrap();
        assert_eq!(event.data, Some(Data::BinaryData(vec![0, 1])));
    }

    #[test]
    fn rejects_malformed_lines() {
        for bad in ["nope", "[1]", r#"{"id":5}"#, r#"{"x":{}}"#, r#"{"data":1,"data_base64":"AA=="}"#] {
            assert!(from_json(bad, &defaults()).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn json_round_trips() {
        let line = json!({"specversion":"1.0","id":"9","source":"s","type":"t","subject":"x","data":{"k":[1,2]}});
        let event = from_json(&line.to_string(), &defaults()).unwrap();
        let mut expected = line.clone();
        expected["datacontenttype"] = json!("application/json");
        assert_eq!(to_json(&event), expected);
    }
}
