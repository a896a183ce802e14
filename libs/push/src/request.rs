//! One push request from one delivery: the event in the CloudEvents HTTP protocol binding
//! (binary mode: `ce-*` headers and the data as the body, `content-type` from
//! `datacontenttype`; structured mode: the whole event as `application/cloudevents+json`),
//! signed by the Standard Webhooks specification ([`crate::signature`]), with the trace
//! context headers the caller passes. `webhook-id` is the event id (percent-encoded where a
//! header cannot carry it as is).

use eventflow_broker::ContentMode;
use eventflow_proto::v1::{CloudEvent, cloud_event::Data};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::signature::{SigningKey, signature_header};

/// Attributes that travel as plain HTTP headers, not `ce-*` ones (CloudEvents Distributed
/// Tracing extension over HTTP: the W3C headers themselves).
const TRACE_ATTRIBUTES: [&str; 2] = ["traceparent", "tracestate"];

/// The headers and body of one push.
#[derive(Debug, Clone)]
pub struct PushRequest {
    /// Every header but `host` and `content-length` (the client sets those).
    pub headers: HeaderMap,
    /// The body exactly as signed.
    pub body: bytes::Bytes,
}

/// Builds the request for `event`: `mode` binding, signed with every key at `timestamp`
/// (unix seconds), with `trace` headers (`traceparent`, `tracestate`) added.
pub fn build(
    event: &CloudEvent,
    mode: ContentMode,
    keys: &[SigningKey],
    timestamp: u64,
    trace: &[(&'static str, String)],
) -> PushRequest {
    let mut headers = HeaderMap::new();
    let body = match mode {
        ContentMode::Binary => binary(event, &mut headers),
        ContentMode::Structured => {
            headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/cloudevents+json"));
            eventflow_proto::json::to_json(event).into_bytes()
        }
    };
    // The event id, percent-encoded where HTTP headers cannot carry it as is (space, `"`, `%`,
    // non-ASCII); signed in the same form, so what the receiver reads is what was signed.
    let webhook_id = percent_encode(&event.id);
    put(&mut headers, "webhook-id", &webhook_id);
    put(&mut headers, "webhook-timestamp", &timestamp.to_string());
    put(&mut headers, "webhook-signature", &signature_header(keys, &webhook_id, timestamp, &body));
    for (name, value) in trace {
        put(&mut headers, name, value);
    }
    headers.insert(http::header::USER_AGENT, HeaderValue::from_static("eventflow-pusher"));
    PushRequest { headers, body: body.into() }
}

/// Binary mode: `ce-*` headers, data as the body.
fn binary(event: &CloudEvent, headers: &mut HeaderMap) -> Vec<u8> {
    put(headers, "ce-id", &percent_encode(&event.id));
    put(headers, "ce-source", &percent_encode(&event.source));
    put(headers, "ce-specversion", &percent_encode(&event.spec_version));
    put(headers, "ce-type", &percent_encode(&event.r#type));
    for (name, value) in &event.attributes {
        if TRACE_ATTRIBUTES.contains(&name.as_str()) {
            continue;
        }
        let Some(text) = eventflow_proto::json::attribute_text(value) else { continue };
        if name == "datacontenttype" {
            put(headers, "content-type", &text);
        } else {
            put(headers, &format!("ce-{name}"), &percent_encode(&text));
        }
    }
    match &event.data {
        Some(Data::BinaryData(bytes)) => bytes.clone(),
        Some(Data::TextData(text)) => text.clone().into_bytes(),
        Some(Data::ProtoData(any)) => any.value.clone(),
        None => Vec::new(),
    }
}

/// Percent-encodes what the CloudEvents HTTP binding requires in header values: space, `"`,
/// `%` and everything outside printable ASCII (as UTF-8 bytes).
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if (0x21..=0x7e).contains(&byte) && byte != b'"' && byte != b'%' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Sets a header; a name or value HTTP cannot carry (checked at publish, so unexpected) is
/// left out and logged.
fn put(headers: &mut HeaderMap, name: &str, value: &str) {
    match (HeaderName::try_from(name), HeaderValue::try_from(value)) {
        (Ok(name), Ok(value)) => {
            headers.insert(name, value);
        }
        _ => tracing::warn!(header = name, "header left out of a push: not valid in HTTP"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::HashMap;

    use eventflow_proto::v1::cloud_event::{CloudEventAttributeValue, cloud_event_attribute_value::Attr};
    use serde_json::Value;

    use super::*;

    fn event() -> CloudEvent {
        let string = |s: &str| CloudEventAttributeValue { attr: Some(Attr::CeString(s.into())) };
        CloudEvent {
            id: "e-1".into(),
            source: "/orders".into(),
            spec_version: "1.0".into(),
            r#type: "order.created".into(),
            attributes: HashMap::from([
                ("datacontenttype".into(), string("application/json")),
                ("subject".into(), string("a b%")),
                ("traceparent".into(), string("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")),
            ]),
            data: Some(Data::TextData(r#"{"n":1}"#.into())),
        }
    }

    fn key() -> SigningKey {
        SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap()
    }

    #[test]
    fn binary_mode_puts_attributes_in_headers() {
        let req = build(&event(), ContentMode::Binary, &[key()], 7, &[]);
        let h = |n: &str| req.headers.get(n).map(|v| v.to_str().unwrap().to_string());
        assert_eq!(req.body.as_ref(), br#"{"n":1}"#);
        assert_eq!(h("content-type").as_deref(), Some("application/json"));
        assert_eq!(h("ce-id").as_deref(), Some("e-1"));
        assert_eq!(h("ce-subject").as_deref(), Some("a%20b%25"));
        assert_eq!(h("ce-traceparent"), None, "trace context goes in the W3C headers");
        assert_eq!(h("webhook-id").as_deref(), Some("e-1"));
        assert_eq!(h("webhook-timestamp").as_deref(), Some("7"));
        assert_eq!(h("webhook-signature"), Some(key().sign("e-1", 7, br#"{"n":1}"#)));
    }

    #[test]
    fn an_id_headers_cannot_carry_is_sent_and_signed_percent_encoded() {
        let odd = CloudEvent { id: "ordre n°1".into(), ..event() };
        let req = build(&odd, ContentMode::Binary, &[key()], 7, &[]);
        assert_eq!(req.headers["webhook-id"], "ordre%20n%C2%B01");
        assert_eq!(req.headers["webhook-signature"], key().sign("ordre%20n%C2%B01", 7, &req.body).as_str());
    }

    #[test]
    fn structured_mode_is_cloudevents_json() {
        let trace = [("traceparent", "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01".to_string())];
        let req = build(&event(), ContentMode::Structured, &[key()], 7, &trace);
        let json: Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(json["id"], "e-1");
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["data"]["n"], 1);
        assert_eq!(json["subject"], "a b%");
        assert_eq!(req.headers["content-type"], "application/cloudevents+json");
        assert_eq!(req.headers["traceparent"], trace[0].1.as_str());
    }
}
