//! The CloudEvents JSON Format (spec v1.0) of a [`CloudEvent`]: the one writer and the one
//! reader every part of eventflow uses — push subscriptions in structured mode and the archive
//! export write it ([`to_json`]), the CLI prints it (`tail`, `dlq show`, `archive get`:
//! [`to_json_value`]) and reads it (`publish --stdin`), and the relay reads it from `event_json`
//! outbox rows ([`from_json`]).
//!
//! Writing: `specversion`, `id`, `source`, `type`, then every attribute (extensions included) as
//! a top-level member — booleans and integers as JSON booleans and numbers, timestamps in RFC
//! 3339 (full precision), bytes in base64, the rest as strings. Text data is embedded as JSON
//! when its `datacontenttype` is JSON ([`is_json_content_type`]) or absent and it parses as
//! JSON; other text is the string `data`; binary (and protobuf) data is `data_base64`. Members
//! come out sorted by name (`serde_json`'s map), on one line.
//!
//! Reading: `id`, `source`, `specversion` and `type` must be strings (absent or `null`: empty,
//! left to the caller's defaults and to validation); `data` that is a JSON string becomes text
//! data, any other JSON value its JSON text with `datacontenttype` `application/json` unless
//! the event names one; `data_base64` becomes binary data (not both). Every other member is an
//! attribute: `time` must be an RFC 3339 timestamp, `dataschema` is a URI, other strings are
//! strings, booleans and 32-bit integers keep their type; `null` means absent. Anything else
//! is a [`JsonError`] naming the member. Whether the result is a valid CloudEvent is
//! [`crate::validate`]'s question, not the reader's.

use std::fmt;

use base64::{Engine, engine::general_purpose::STANDARD};
use prost_types::Timestamp;
use serde_json::{Map, Value};

use crate::v1::{
    CloudEvent,
    cloud_event::{CloudEventAttributeValue, Data, cloud_event_attribute_value::Attr},
};

/// Why a text or value is not a CloudEvent in the JSON Format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonError {
    /// The text is not JSON (the parser's message).
    Syntax(String),
    /// The value is not a JSON object.
    NotAnObject,
    /// Member `name` has a value it cannot have (`problem`, e.g. "must be a string").
    Member {
        /// The member (context attribute, extension, `data` or `data_base64`).
        name: String,
        /// What is wrong with its value.
        problem: String,
    },
    /// Both `data` and `data_base64` are present.
    BothData,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syntax(e) => write!(f, "invalid JSON: {e}"),
            Self::NotAnObject => f.write_str("expected a JSON object with CloudEvent members"),
            Self::Member { name, problem } => write!(f, "{name:?} {problem}"),
            Self::BothData => f.write_str("\"data\" and \"data_base64\" are exclusive"),
        }
    }
}

impl std::error::Error for JsonError {}

/// A [`JsonError::Member`].
fn member(name: &str, problem: impl Into<String>) -> JsonError {
    JsonError::Member { name: name.to_string(), problem: problem.into() }
}

/// The event in the CloudEvents JSON Format, on one line (see the module doc).
pub fn to_json(event: &CloudEvent) -> String {
    to_json_value(event).to_string()
}

/// The event in the CloudEvents JSON Format as a JSON value (see the module doc).
pub fn to_json_value(event: &CloudEvent) -> Value {
    let mut object = Map::new();
    object.insert("specversion".into(), Value::String(event.spec_version.clone()));
    object.insert("id".into(), Value::String(event.id.clone()));
    object.insert("source".into(), Value::String(event.source.clone()));
    object.insert("type".into(), Value::String(event.r#type.clone()));
    for (name, value) in &event.attributes {
        let json = match value.attr.as_ref() {
            Some(Attr::CeBoolean(b)) => Value::Bool(*b),
            Some(Attr::CeInteger(i)) => Value::from(*i),
            _ => match attribute_text(value) {
                Some(text) => Value::String(text),
                None => continue,
            },
        };
        object.insert(name.clone(), json);
    }
    let json_content =
        event.attributes.get("datacontenttype").and_then(attribute_text).is_none_or(|t| is_json_content_type(&t));
    match &event.data {
        Some(Data::TextData(text)) => {
            let data = match serde_json::from_str::<Value>(text) {
                Ok(json) if json_content => json,
                _ => Value::String(text.clone()),
            };
            object.insert("data".into(), data);
        }
        Some(Data::BinaryData(bytes)) => {
            object.insert("data_base64".into(), Value::String(STANDARD.encode(bytes)));
        }
        Some(Data::ProtoData(any)) => {
            object.insert("data_base64".into(), Value::String(STANDARD.encode(&any.value)));
        }
        None => {}
    }
    Value::Object(object)
}

/// Whether `content_type` names JSON: `application/json`, `text/json` or a `+json` suffix
/// (parameters such as `; charset=utf-8` ignored, case-insensitive).
pub fn is_json_content_type(content_type: &str) -> bool {
    let media = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    media == "application/json" || media == "text/json" || media.ends_with("+json")
}

/// An attribute's canonical string form (CloudEvents type system; timestamps in RFC 3339).
pub fn attribute_text(value: &CloudEventAttributeValue) -> Option<String> {
    Some(match value.attr.as_ref()? {
        Attr::CeBoolean(b) => b.to_string(),
        Attr::CeInteger(i) => i.to_string(),
        Attr::CeString(s) | Attr::CeUri(s) | Attr::CeUriRef(s) => s.clone(),
        Attr::CeBytes(b) => STANDARD.encode(b),
        Attr::CeTimestamp(t) => t.to_string(),
    })
}

/// The CloudEvent `text` holds in the JSON Format (see the module doc).
pub fn from_json(text: &str) -> Result<CloudEvent, JsonError> {
    let value: Value = serde_json::from_str(text).map_err(|e| JsonError::Syntax(e.to_string()))?;
    from_json_value(&value)
}

/// The CloudEvent `value` describes in the JSON Format (see the module doc).
pub fn from_json_value(value: &Value) -> Result<CloudEvent, JsonError> {
    let Value::Object(members) = value else { return Err(JsonError::NotAnObject) };
    if members.contains_key("data") && members.contains_key("data_base64") {
        return Err(JsonError::BothData);
    }
    let mut event = CloudEvent::default();
    let mut json_data = false;
    for (name, value) in members {
        let text = || match value {
            Value::Null => Ok(String::new()),
            Value::String(s) => Ok(s.clone()),
            _ => Err(member(name, "must be a string")),
        };
        match name.as_str() {
            "id" => event.id = text()?,
            "source" => event.source = text()?,
            "specversion" => event.spec_version = text()?,
            "type" => event.r#type = text()?,
            "data" => {
                event.data = match value {
                    Value::Null => None,
                    Value::String(s) => Some(Data::TextData(s.clone())),
                    other => {
                        json_data = true;
                        Some(Data::TextData(other.to_string()))
                    }
                }
            }
            "data_base64" => {
                event.data = match value {
                    Value::Null => None,
                    Value::String(b64) => Some(Data::BinaryData(
                        STANDARD.decode(b64).map_err(|e| member(name, format!("is not base64: {e}")))?,
                    )),
                    _ => return Err(member(name, "must be a string")),
                }
            }
            _ => {
                if let Some(attr) = attribute(name, value)? {
                    event.attributes.insert(name.clone(), CloudEventAttributeValue { attr: Some(attr) });
                }
            }
        }
    }
    if json_data {
        let json = CloudEventAttributeValue { attr: Some(Attr::CeString("application/json".into())) };
        event.attributes.entry("datacontenttype".into()).or_insert(json);
    }
    Ok(event)
}

/// The typed value of the attribute `name` (`None` for a JSON null: absent).
fn attribute(name: &str, value: &Value) -> Result<Option<Attr>, JsonError> {
    let attr = match (name, value) {
        (_, Value::Null) => return Ok(None),
        ("time", Value::String(s)) => Attr::CeTimestamp(
            s.parse::<Timestamp>().map_err(|_| member(name, format!("must be an RFC 3339 timestamp, not {s:?}")))?,
        ),
        ("dataschema", Value::String(s)) => Attr::CeUri(s.clone()),
        (_, Value::String(s)) => Attr::CeString(s.clone()),
        (_, Value::Bool(b)) => Attr::CeBoolean(*b),
        (_, Value::Number(n)) => match n.as_i64().and_then(|n| i32::try_from(n).ok()) {
            Some(n) => Attr::CeInteger(n),
            None => return Err(member(name, format!("must be a 32-bit integer, not {n}"))),
        },
        _ => return Err(member(name, "must be a string, boolean or integer")),
    };
    Ok(Some(attr))
}

#[cfg(test)]
mod tests {
    use prost_types::Any;
    use serde_json::json;

    use super::*;

    fn attr(attr: Attr) -> CloudEventAttributeValue {
        CloudEventAttributeValue { attr: Some(attr) }
    }

    fn event(data: Option<Data>, attributes: &[(&str, Attr)]) -> CloudEvent {
        CloudEvent {
            id: "e1".into(),
            source: "/orders".into(),
            spec_version: "1.0".into(),
            r#type: "order.paid".into(),
            attributes: attributes.iter().map(|(n, a)| ((*n).to_string(), attr(a.clone()))).collect(),
            data,
        }
    }

    #[test]
    fn an_event_round_trips_with_typed_extension_attributes() {
        let original = event(
            Some(Data::TextData(r#"{"total":5}"#.into())),
            &[
                ("datacontenttype", Attr::CeString("application/json".into())),
                ("time", Attr::CeTimestamp(Timestamp { seconds: 1_767_323_045, nanos: 500_000_001 })),
                ("dataschema", Attr::CeUri("https://example.com/s".into())),
                ("partitionkey", Attr::CeString("o-1".into())),
                ("retries", Attr::CeInteger(3)),
                ("urgent", Attr::CeBoolean(true)),
            ],
        );
        let text = to_json(&original);
        assert!(!text.contains('\n'));
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["data"], json!({"total": 5}), "JSON data is embedded");
        assert_eq!(value["time"], "2026-01-02T03:04:05.500000001Z");
        assert_eq!((&value["retries"], &value["urgent"]), (&json!(3), &json!(true)));
        assert_eq!(from_json(&text).unwrap(), original);
        assert_eq!(from_json_value(&value).unwrap(), original);
    }

    #[test]
    fn binary_data_is_data_base64_and_text_that_is_not_json_a_string() {
        let binary = event(Some(Data::BinaryData(vec![0, 1, 0xfe, 0xff])), &[]);
        let value = to_json_value(&binary);
        assert_eq!(value["data_base64"], "AAH+/w==");
        assert!(value.get("data").is_none());
        assert_eq!(from_json_value(&value).unwrap(), binary);

        let proto = event(Some(Data::ProtoData(Any { type_url: "t".into(), value: vec![7] })), &[]);
        assert_eq!(to_json_value(&proto)["data_base64"], "Bw==");

        // JSON-looking text declared as plain text stays a string; so does text that is not JSON.
        let plain =
            event(Some(Data::TextData("42".into())), &[("datacontenttype", Attr::CeString("text/plain".into()))]);
        assert_eq!(to_json_value(&plain)["data"], "42");
        assert_eq!(from_json(&to_json(&plain)).unwrap(), plain);
        let words = event(Some(Data::TextData("plain words".into())), &[]);
        assert_eq!(to_json_value(&words)["data"], "plain words");
        assert_eq!(from_json(&to_json(&words)).unwrap(), words);
    }

    #[test]
    fn json_data_becomes_its_text_with_a_json_content_type_unless_one_is_named() {
        let read = from_json(r#"{"id":"1","data":{"k":[1,2]}}"#).unwrap();
        assert_eq!(read.data, Some(Data::TextData(r#"{"k":[1,2]}"#.into())));
        assert_eq!(read.attributes["datacontenttype"], attr(Attr::CeString("application/json".into())));
        let read = from_json(r#"{"data":[1],"datacontenttype":"application/cloudevents+json"}"#).unwrap();
        assert_eq!(read.attributes["datacontenttype"], attr(Attr::CeString("application/cloudevents+json".into())));
        let read = from_json(r#"{"data":"hello","data_base64":null}"#);
        assert_eq!(read.unwrap_err(), JsonError::BothData);
        let read = from_json(r#"{"data":"hello","subject":null}"#).unwrap();
        assert_eq!(read.data, Some(Data::TextData("hello".into())));
        assert!(read.attributes.is_empty(), "a string is text without a content type; null is absent");
        for (content_type, json) in [
            ("application/json", true),
            ("Application/JSON; charset=utf-8", true),
            ("application/vnd.api+json", true),
            ("text/json", true),
            ("text/plain", false),
            ("application/jsonl", false),
        ] {
            assert_eq!(is_json_content_type(content_type), json, "{content_type}");
        }
    }

    #[test]
    fn errors_name_the_member() {
        let error = |text: &str| from_json(text).unwrap_err().to_string();
        assert!(error("nope").starts_with("invalid JSON: "));
        assert_eq!(error("[1]"), "expected a JSON object with CloudEvent members");
        assert_eq!(error(r#"{"id":5}"#), r#""id" must be a string"#);
        assert_eq!(error(r#"{"data":1,"data_base64":"AA=="}"#), r#""data" and "data_base64" are exclusive"#);
        assert_eq!(error(r#"{"data_base64":1}"#), r#""data_base64" must be a string"#);
        assert!(error(r#"{"data_base64":"!"}"#).starts_with(r#""data_base64" is not base64"#));
        assert_eq!(error(r#"{"time":"yesterday"}"#), r#""time" must be an RFC 3339 timestamp, not "yesterday""#);
        assert_eq!(error(r#"{"retries":1.5}"#), r#""retries" must be a 32-bit integer, not 1.5"#);
        assert_eq!(error(r#"{"big":4294967296}"#), r#""big" must be a 32-bit integer, not 4294967296"#);
        assert_eq!(error(r#"{"nested":{"a":1}}"#), r#""nested" must be a string, boolean or integer"#);
    }
}
