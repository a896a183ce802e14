//! Partitioned streams through the real services (on one Redis, and on the 3-master cluster in
//! the `cluster` nextest profile): CreateStream with `partitions` 3, shown by GetStream; the
//! count is fixed (an update naming it, 0-less bounds refused naming `stream.partitions`); one
//! Subscribe call gets every event of every partition, acks settle them all, and one key's
//! events come in publish order; stats sum the partitions; a retried event id is a duplicate;
//! Seek and the dead-letter API are refused FAILED_PRECONDITION; internal partition names are
//! refused as stream names.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use eventflow_e2e::{Consumer, Stack, event};
use eventflow_proto::v1::{
    AcknowledgeRequest, CloudEvent, CreateStreamRequest, GetStreamRequest, ListDeadLettersRequest, Position,
    SeekRequest, Stream, UpdateStreamRequest,
    cloud_event::{CloudEventAttributeValue, cloud_event_attribute_value::Attr},
    position,
};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(10);

/// Event `id` with ordering key `key` ('' = none).
fn keyed(id: &str, key: &str) -> CloudEvent {
    let mut e = event(id, "t");
    if !key.is_empty() {
        e.attributes.insert("partitionkey".into(), CloudEventAttributeValue { attr: Some(Attr::CeString(key.into())) });
    }
    e
}

#[tokio::test]
async fn a_partitioned_stream_publishes_subscribes_and_settles_across_its_partitions() {
    let stack = Stack::start().await;
    let mut admin = stack.admin().await;
    for bad in [-1, 65] {
        let stream = Stream { name: "p".into(), partitions: bad, ..Default::default() };
        let err = admin.create_stream(CreateStreamRequest { stream: Some(stream) }).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains("stream.partitions"), "{err:?}");
    }
    let stream = Stream { name: "p".into(), partitions: 3, ..Default::default() };
    let created = admin.create_stream(CreateStreamRequest { stream: Some(stream) }).await.unwrap().into_inner();
    assert_eq!(created.stream.unwrap().partitions, 3);
    let got = admin.get_stream(GetStreamRequest { name: "p".into() }).await.unwrap().into_inner();
    assert_eq!(got.stream.unwrap().partitions, 3);
    let internal = admin.get_stream(GetStreamRequest { name: "p~1".into() }).await.unwrap_err();
    assert_eq!(internal.code(), Code::InvalidArgument, "{internal:?}");
    let update = UpdateStreamRequest {
        stream: Some(Stream { name: "p".into(), partitions: 4, ..Default::default() }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["partitions".into()] }),
    };
    let err = admin.update_stream(update).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("stream.partitions"), "{err:?}");
    stack.create_subscription("p", "sub", 30, 5).await;

    let mut events = Vec::new();
    for i in 0..10 {
        events.push(keyed(&format!("k{i}"), "key"));
        events.push(keyed(&format!("x{i}"), ""));
        events.push(keyed(&format!("y{i}"), ""));
    }
    let results = stack.publish("p", events).await;
    assert!(results.iter().all(|r| r.error.is_none() && !r.duplicate), "{results:?}");
    let again = stack.publish("p", vec![keyed("x3", ""), keyed("k5", "key")]).await;
    assert!(again.iter().all(|r| r.duplicate), "{again:?}");
    assert_eq!(again[1].entry_id, results[15].entry_id, "results in request order");
    assert_eq!(stack.stats("p").await.length, 30, "length sums the partitions");

    let mut consumer = Consumer::open(&stack, "p", "sub", 100).await;
    let received = consumer.take(30, WAIT).await;
    let mut ids: Vec<String> = received.iter().map(|r| r.event.as_ref().unwrap().id.clone()).collect();
    let keyed_order: Vec<&String> = ids.iter().filter(|id| id.starts_with('k')).collect();
    let expected: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
    assert_eq!(keyed_order, expected.iter().collect::<Vec<_>>(), "one key in publish order");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 30, "every event of every partition once");
    let acks = AcknowledgeRequest { ack_ids: received.iter().map(|r| r.ack_id.clone()).collect() };
    let acked = stack.subscriber().await.acknowledge(acks).await.unwrap().into_inner();
    assert!(acked.invalid_ack_ids.is_empty() && acked.expired_ack_ids.is_empty(), "{acked:?}");
    let stats = stack.stats("p").await.subscriptions.remove(0);
    assert_eq!((stats.lag, stats.pending), (0, 0), "{stats:?}");

    let seek = SeekRequest {
        stream: "p".into(),
        subscription: "sub".into(),
        position: Some(Position { position: Some(position::Position::Earliest(true)) }),
    };
    let err = admin.seek(seek).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let list = ListDeadLettersRequest { stream: "p".into(), subscription: "sub".into(), ..Default::default() };
    let err = stack.dlq().await.list_dead_letters(list).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
}
