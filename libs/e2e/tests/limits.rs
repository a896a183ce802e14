//! Limits that keep resources bounded whatever clients send: producer trace context validated
//! at publish and ack ids that stay small.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use eventflow_e2e::{Consumer, Stack, event};
use eventflow_proto::{
    prost::Message,
    v1::{
        AcknowledgeRequest, CloudEvent,
        cloud_event::{CloudEventAttributeValue, cloud_event_attribute_value::Attr},
    },
};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(20);
const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
/// Ack ids stay under this whatever an event carries (with the short names these tests use).
const SMALL_ACK_ID: usize = 256;

/// An event with one string attribute.
fn with_attr(id: &str, name: &str, value: &str) -> CloudEvent {
    let mut e = event(id, "t");
    e.attributes.insert(name.into(), CloudEventAttributeValue { attr: Some(Attr::CeString(value.into())) });
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_trace_context_fails_its_event_alone_and_a_valid_one_is_ackable() {
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    stack.create_subscription("s", "sub", 600, 0).await;
    let events = vec![
        event("plain", "t"),
        with_attr("colon", "traceparent", "abc:def"),
        with_attr("valid", "traceparent", TRACEPARENT),
        with_attr("huge", "traceparent", &"ab".repeat(50_000)), // 100 KB of hex
        with_attr("state", "tracestate", "not key=value"),
    ];
    let results = stack.publish("s", events).await;
    for (i, name) in [(1, "traceparent"), (3, "traceparent"), (4, "tracestate")] {
        let error = results[i].error.as_ref().unwrap_or_else(|| panic!("event {i} must fail"));
        assert_eq!(error.code, Code::InvalidArgument as i32, "{error:?}");
        assert_eq!(error.field, format!("events[{i}].attributes.{name}"));
        assert!(error.message.len() < 300, "the message does not echo the value");
        assert!(results[i].entry_id.is_empty());
    }
    assert!(results[0].error.is_none() && results[2].error.is_none(), "{results:?}");
    assert_eq!(stack.redis.raw(&format!("XLEN {}:{{s}}", stack.prefix)).trim(), ":2");

    let mut consumer = Consumer::open(&stack, "s", "sub", 10).await;
    let got = consumer.take(2, WAIT).await;
    let valid = got.iter().find(|e| e.event.as_ref().unwrap().id == "valid").unwrap();
    let attr = &valid.event.as_ref().unwrap().attributes["traceparent"];
    assert_eq!(attr.attr, Some(Attr::CeString(TRACEPARENT.into())));
    assert!(got.iter().all(|e| e.ack_id.len() <= SMALL_ACK_ID), "ack ids stay small");
    let ack_ids = got.iter().map(|e| e.ack_id.clone()).collect();
    let acked = stack.subscriber().await.acknowledge(AcknowledgeRequest { ack_ids }).await.unwrap().into_inner();
    assert!(acked.invalid_ack_ids.is_empty() && acked.expired_ack_ids.is_empty(), "{acked:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_stored_with_any_traceparent_get_small_ack_ids_that_settle() {
    // Entries stored before publish validated trace context may carry anything beside the
    // event; write such entries directly, as an older publisher did.
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    stack.create_subscription("s", "sub", 600, 0).await;
    let client = redis::Client::open(stack.redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let junk = ["abc:def".to_string(), "ab".repeat(50_000), TRACEPARENT.to_uppercase()];
    for (i, p) in junk.iter().enumerate() {
        let payload = with_attr(&format!("old-{i}"), "traceparent", p).encode_to_vec();
        let key = format!("{}:{{s}}", stack.prefix);
        let _: String = redis::cmd("XADD")
            .arg(&key)
            .arg("*")
            .arg("e")
            .arg(payload)
            .arg("t")
            .arg("t")
            .arg("p")
            .arg(p)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let mut consumer = Consumer::open(&stack, "s", "sub", 10).await;
    let got = consumer.take(junk.len(), WAIT).await;
    assert!(got.iter().all(|e| e.ack_id.len() <= SMALL_ACK_ID), "ack ids stay small");
    let ack_ids = got.iter().map(|e| e.ack_id.clone()).collect();
    let acked = stack.subscriber().await.acknowledge(AcknowledgeRequest { ack_ids }).await.unwrap().into_inner();
    assert!(acked.invalid_ack_ids.is_empty() && acked.expired_ack_ids.is_empty(), "{acked:?}");
}
