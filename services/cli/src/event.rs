//! CloudEvents in their JSON format (spec v1.0), as `publish --stdin` reads them and `tail` /
//! `dlq show` / `archive get` print them, so the output of one can be piped into the other. The
//! format itself is `eventflow_proto::json` (the one reader and writer, see there); this module
//! adds the CLI's defaults: a line without `source`, `type` or `specversion` takes `--source`,
//! `--type` and `"1.0"`.

use eventflow_proto::{
    json,
    v1::{CloudEvent, cloud_event::Data},
};
use serde_json::Value;

/// Context values for fields a line leaves out (from `--type` / `--source`).
#[derive(Debug, Clone, Default)]
pub struct Defaults {
    /// The `type` of events that have none.
    pub event_type: Option<String>,
    /// The `source` of events that have none.
    pub source: String,
}

/// The event a JSON line describes; the error says what is wrong with the line.
pub fn from_json(line: &str, defaults: &Defaults) -> Result<CloudEvent, String> {
    let mut event = json::from_json(line).map_err(|e| e.to_string())?;
    if event.source.is_empty() {
        event.source.clone_from(&defaults.source);
    }
    if event.r#type.is_empty()
        && let Some(event_type) = &defaults.event_type
    {
        event.r#type.clone_from(event_type);
    }
    if event.spec_version.is_empty() {
        event.spec_version = "1.0".into();
    }
    Ok(event)
}

/// The event in the CloudEvents JSON format (`eventflow_proto::json::to_json_value`).
pub fn to_json(event: &CloudEvent) -> Value {
    json::to_json_value(event)
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
    use eventflow_proto::v1::cloud_event::cloud_event_attribute_value::Attr;
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
