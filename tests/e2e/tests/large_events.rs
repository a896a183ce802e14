//! Byte-bounded delivery: responses stay under the server's cap (a client with gRPC's default
//! 4 MiB receive limit gets any mix of events), and `max_outstanding_bytes` holds from the first
//! batch.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use eventflow_e2e::{Consumer, Stack, event};
use eventflow_proto::v1::{AcknowledgeRequest, CloudEvent, SubscribeRequest, cloud_event::Data};

const WAIT: Duration = Duration::from_secs(20);

/// An event whose text payload is `kib` KiB.
fn big(id: &str, kib: usize) -> CloudEvent {
    CloudEvent { data: Some(Data::TextData("x".repeat(kib * 1024))), ..event(id, "big") }
}

#[tokio::test]
async fn a_default_client_receives_large_events_in_responses_under_the_cap() {
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    stack.create_subscription("s", "sub", 600, 0).await;
    // A mix: 100 events of 100 KiB, a 900 KiB one, and small ones.
    let mut ids = Vec::new();
    for chunk in 0..10 {
        let events: Vec<CloudEvent> = (0..10).map(|i| big(&format!("b{chunk}-{i}"), 100)).collect();
        ids.extend(events.iter().map(|e| e.id.clone()));
        stack.publish("s", events).await;
    }
    stack.publish("s", vec![big("huge", 900), event("small-1", "t"), event("small-2", "t")]).await;
    ids.extend(["huge".to_string(), "small-1".into(), "small-2".into()]);

    // The harness's tonic client keeps tonic's default 4 MiB decoding limit.
    let mut client = stack.subscriber().await;
    let request = SubscribeRequest {
        stream: "s".into(),
        subscription: "sub".into(),
        max_outstanding_messages: 1000,
        max_outstanding_bytes: 0,
    };
    let mut call = client.subscribe(request).await.unwrap().into_inner();
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, async {
        while got.len() < ids.len() {
            let response = call.message().await.unwrap().expect("stream ended");
            let bytes: usize = response.events.iter().map(prost::Message::encoded_len).sum();
            assert!(bytes <= (1 << 20) + 64 || response.events.len() == 1, "response of {bytes} bytes");
            got.extend(response.events);
        }
    })
    .await
    .unwrap();
    let mut received: Vec<String> = got.iter().map(|e| e.event.as_ref().unwrap().id.clone()).collect();
    received.sort();
    ids.sort();
    assert_eq!(received, ids);
    assert!(got.iter().all(|e| e.delivery_attempt == 1), "nothing was redelivered");
}

#[tokio::test]
async fn max_outstanding_bytes_holds_from_the_first_batch() {
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    stack.create_subscription("s", "sub", 600, 0).await;
    let events: Vec<CloudEvent> = (0..20).map(|i| big(&format!("e{i}"), 100)).collect();
    stack.publish("s", events).await;

    // 250 KiB allows two events of ~100 KiB unsettled at once.
    let request = SubscribeRequest {
        stream: "s".into(),
        subscription: "sub".into(),
        max_outstanding_messages: 1000,
        max_outstanding_bytes: 250 * 1024,
    };
    let mut consumer = Consumer { stream: stack.subscriber().await.subscribe(request).await.unwrap().into_inner() };
    let mut seen = Vec::new();
    for _ in 0..10 {
        let batch = consumer.take(2, WAIT).await;
        consumer.expect_nothing(Duration::from_millis(300)).await;
        let ack_ids = batch.iter().map(|e| e.ack_id.clone()).collect();
        let acked = stack.subscriber().await.acknowledge(AcknowledgeRequest { ack_ids }).await.unwrap().into_inner();
        assert!(acked.expired_ack_ids.is_empty() && acked.invalid_ack_ids.is_empty());
        seen.extend(batch.into_iter().map(|e| (e.event.unwrap().id, e.delivery_attempt)));
    }
    assert_eq!(seen.len(), 20);
    assert!(seen.iter().all(|(_, attempt)| *attempt == 1), "{seen:?}");
}
