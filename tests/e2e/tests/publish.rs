//! Publish over gRPC: per-event results in order, assigned ids, idempotence, bad input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use eventflow_e2e::{Kind, Stack, event};
use eventflow_proto::v1::{PublishRequest, publisher_service_client::PublisherServiceClient};
use tonic::Code;

#[tokio::test]
async fn results_come_back_per_event_in_order() {
    let stack = Stack::start().await;
    stack.create_stream("orders").await;
    let results = stack.publish("orders", vec![event("a", "t"), event("", "t"), event("c", "t")]).await;
    assert_eq!(results.len(), 3);
    assert_eq!(results[0].event_id, "a");
    assert_eq!(results[2].event_id, "c");
    let assigned = uuid_version(&results[1].event_id);
    assert_eq!(assigned, Some(7), "server-assigned id {:?} is a UUIDv7", results[1].event_id);
    let ids: Vec<&str> = results.iter().map(|r| r.entry_id.as_str()).collect();
    assert!(ids.iter().all(|id| !id.is_empty()));
    assert!(ids.windows(2).all(|w| entry_key(w[0]) < entry_key(w[1])), "entry ids increase: {ids:?}");
    assert!(results.iter().all(|r| !r.duplicate && r.error.is_none()));
}

#[tokio::test]
async fn republishing_an_event_id_is_a_duplicate_with_the_first_entry_id() {
    let stack = Stack::start().await;
    stack.create_stream("orders").await;
    let first = stack.publish("orders", vec![event("e1", "t")]).await;
    let again = stack.publish("orders", vec![event("e1", "t"), event("e1", "t"), event("e2", "t")]).await;
    assert!(again[0].duplicate && again[1].duplicate && !again[2].duplicate);
    assert_eq!(again[0].entry_id, first[0].entry_id);
    assert_eq!(again[1].entry_id, first[0].entry_id);
    assert_eq!(stack.redis.raw(&format!("XLEN {}", stack.keys().stream("orders"))).trim(), ":2");
}

#[tokio::test]
async fn a_bad_event_fails_alone_with_its_field_named() {
    let stack = Stack::start().await;
    stack.create_stream("orders").await;
    let mut no_type = event("b", "");
    no_type.r#type.clear();
    let mut bad_spec = event("d", "t");
    bad_spec.spec_version = "0.3".into();
    let results = stack.publish("orders", vec![event("a", "t"), no_type, event("c", "t"), bad_spec]).await;
    let err = results[1].error.as_ref().expect("event without type fails");
    assert_eq!(err.code, Code::InvalidArgument as i32);
    assert_eq!(err.field, "events[1].type");
    assert!(results[1].entry_id.is_empty());
    assert_eq!(results[3].error.as_ref().unwrap().field, "events[3].spec_version");
    assert!(results[0].error.is_none() && results[2].error.is_none());
    assert_eq!(stack.redis.raw(&format!("XLEN {}", stack.keys().stream("orders"))).trim(), ":2");
}

#[tokio::test]
async fn an_oversize_event_is_resource_exhausted_and_its_neighbours_stored() {
    let stack = Stack::start().await;
    stack.create_stream("orders").await;
    let small = stack.start_service(Kind::Publisher, &["--max-event-bytes", "512"]).await;
    let mut client = PublisherServiceClient::new(small.channel().await);
    let mut big = event("big", "t");
    big.data = Some(eventflow_proto::v1::cloud_event::Data::BinaryData(vec![7; 600]));
    let request = PublishRequest { stream: "orders".into(), events: vec![event("a", "t"), big] };
    let results = client.publish(request).await.unwrap().into_inner().results;
    assert!(results[0].error.is_none());
    let err = results[1].error.as_ref().unwrap();
    assert_eq!(err.code, Code::ResourceExhausted as i32);
    assert_eq!(err.field, "events[1]");
    small.stop().await;
}

#[tokio::test]
async fn whole_request_errors_have_precise_codes() {
    let stack = Stack::start().await;
    stack.create_stream("orders").await;
    let mut client = stack.publisher().await;
    let cases = [
        (PublishRequest { stream: "nope".into(), events: vec![event("a", "t")] }, Code::NotFound, "nope"),
        (PublishRequest { stream: "bad name".into(), events: vec![event("a", "t")] }, Code::InvalidArgument, "stream"),
        (PublishRequest { stream: String::new(), events: vec![event("a", "t")] }, Code::InvalidArgument, "stream"),
        (PublishRequest { stream: "orders".into(), events: vec![] }, Code::InvalidArgument, "events"),
        (
            PublishRequest { stream: "orders".into(), events: vec![event("", "t"); 1001] },
            Code::InvalidArgument,
            "events",
        ),
    ];
    for (request, code, mentions) in cases {
        let status = client.publish(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().contains(mentions), "{status:?} mentions {mentions}");
    }
    // Every event invalid and the stream unknown: the stream error wins.
    let mut no_source = event("a", "t");
    no_source.source.clear();
    let status = client.publish(PublishRequest { stream: "nope".into(), events: vec![no_source] }).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

/// The version nibble of a UUID in text form.
fn uuid_version(id: &str) -> Option<u32> {
    let parts: Vec<&str> = id.split('-').collect();
    (parts.len() == 5).then(|| parts[2].chars().next()?.to_digit(16)).flatten()
}

/// An entry id as a sortable pair.
fn entry_key(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap();
    (ms.parse().unwrap(), seq.parse().unwrap())
}

#[tokio::test]
async fn with_auth_tokens_calls_need_a_bearer_token_but_health_does_not() {
    let stack = Stack::start().await;
    stack.create_stream("orders").await;
    let guarded = stack.start_service(Kind::Publisher, &["--auth-tokens", "s3cret,other"]).await;
    let mut client = PublisherServiceClient::new(guarded.channel().await);
    let request = || PublishRequest { stream: "orders".into(), events: vec![event("a", "t")] };
    let status = client.publish(request()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let mut wrong = tonic::Request::new(request());
    wrong.metadata_mut().insert("authorization", "Bearer nope".parse().unwrap());
    assert_eq!(client.publish(wrong).await.unwrap_err().code(), Code::Unauthenticated);
    let mut right = tonic::Request::new(request());
    right.metadata_mut().insert("authorization", "Bearer other".parse().unwrap());
    assert!(client.publish(right).await.unwrap().into_inner().results[0].error.is_none());
    // `start` already waited for health SERVING without a token: probes stay open.
    guarded.stop().await;
}
