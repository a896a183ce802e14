//! The CloudEvents JSON format (spec v1.0) of a [`CloudEvent`]: what push subscriptions send in
//! structured mode and what the archive exports. Attributes (extensions included) become
//! top-level members; text data whose content type is JSON is embedded as JSON, other text as
//! the string `data`, bytes (and protobuf data) as `data_base64`.

use base64::{Engine, engine::general_purpose::STANDARD};
use serde_json::{Map, Value};

use crate::v1::{
    CloudEvent,
    cloud_event::{CloudEventAttributeValue, Data, cloud_event_attribute_value::Attr},
};

/// The event in the CloudEvents JSON format, on one line. Text data whose content type is JSON is
/// embedded as JSON (it is JSON by its type); other text as a string; bytes as `data_base64`.
pub fn to_json(event: &CloudEvent) -> String {
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
    let json_content = match event.attributes.get("datacontenttype").and_then(attribute_text) {
        Some(t) => t.starts_with("application/json") || t.contains("+json") || t.starts_with("text/json"),
        None => true, // JSON format: data without a content type is JSON if it parses as JSON
    };
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
    Value::Object(object).to_string()
}

/// An attribute's canonical string form (CloudEvents type system).
pub fn attribute_text(value: &CloudEventAttributeValue) -> Option<String> {
    Some(match value.attr.as_ref()? {
        Attr::CeBoolean(b) => b.to_string(),
        Attr::CeInteger(i) => i.to_string(),
        Attr::CeString(s) | Attr::CeUri(s) | Attr::CeUriRef(s) => s.clone(),
        Attr::CeBytes(b) => STANDARD.encode(b),
        Attr::CeTimestamp(t) => t.to_string(),
    })
}
