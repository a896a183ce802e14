//! Partitioned streams through the real services (on one Redis, and on the 3-master cluster in
//! the `cluster` nextest profile): CreateStream with `partitions` 3, shown by GetStream; the
//! count is fixed (an update naming it, 0-less bounds refused naming `stream.partitions`); one
//! Subscribe call gets every event of every partition, acks settle them all, and one key's
//! events come in publish order; stats sum the partitions; a retried event id is a duplicate;
//! Seek is refused FAILED_PRECONDITION; internal partition names are refused as stream names.
//! Dead letters of a 3-partition stream through the real DeadLetterService: listed in full pages
//! of 5 across the partitions, got and requeued by the ids listed (only the one subscription gets
//! the event again, at attempt 1), bad ids and tokens refused naming the field, deleted, purged.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use eventflow_e2e::{Consumer, Stack, event};
use eventflow_proto::v1::{
    AcknowledgeRequest, CloudEvent, CreateStreamRequest, DeleteDeadLettersRequest, GetDeadLetterRequest,
    GetStreamRequest, ListDeadLettersRequest, Position, PurgeDeadLettersRequest, RejectRequest,
    RequeueDeadLettersRequest, SeekRequest, Stream, UpdateStreamRequest,
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
}

/// A ListDeadLetters request.
fn list(sub: &str, page_size: i32, page_token: &str) -> ListDeadLettersRequest {
    ListDeadLettersRequest { stream: "p".into(), subscription: sub.into(), page_size, page_token: page_token.into() }
}

#[tokio::test]
async fn dead_letters_of_a_partitioned_stream_are_listed_got_requeued_deleted_and_purged() {
    let stack = Stack::start().await;
    let stream = Stream { name: "p".into(), partitions: 3, ..Default::default() };
    stack.admin().await.create_stream(CreateStreamRequest { stream: Some(stream) }).await.unwrap();
    stack.create_subscription("p", "sub", 600, 0).await;
    stack.create_subscription("p", "sib", 600, 0).await;
    let events: Vec<CloudEvent> = (0..12).map(|i| keyed(&format!("e{i}"), &format!("k{}", i % 6))).collect();
    assert!(stack.publish("p", events).await.iter().all(|r| r.error.is_none()));

    // "sub" rejects all twelve in one call (they span the partitions); "sib" acks them.
    let mut sub = Consumer::open(&stack, "p", "sub", 100).await;
    let mut sib = Consumer::open(&stack, "p", "sib", 100).await;
    let mut subscriber = stack.subscriber().await;
    let got = sub.take(12, WAIT).await;
    let reject = RejectRequest { ack_ids: got.iter().map(|r| r.ack_id.clone()).collect(), reason: "bad".into() };
    let rejected = subscriber.reject(reject).await.unwrap().into_inner();
    assert!(rejected.invalid_ack_ids.is_empty() && rejected.expired_ack_ids.is_empty(), "{rejected:?}");
    let acks = AcknowledgeRequest { ack_ids: sib.take(12, WAIT).await.iter().map(|r| r.ack_id.clone()).collect() };
    subscriber.acknowledge(acks).await.unwrap();
    assert_eq!(stack.stats("p").await.subscriptions.iter().map(|s| s.dead_letter_depth).sum::<i64>(), 12);

    // Pages of 5 over the three partitions: full, every dead letter once, in one order.
    let mut dlq = stack.dlq().await;
    let all = dlq.list_dead_letters(list("sub", 100, "")).await.unwrap().into_inner().dead_letters;
    let (mut paged, mut token, mut sizes) = (Vec::new(), String::new(), Vec::new());
    loop {
        let page = dlq.list_dead_letters(list("sub", 5, &token)).await.unwrap().into_inner();
        sizes.push(page.dead_letters.len());
        paged.extend(page.dead_letters);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(sizes, [5, 5, 2]);
    assert_eq!(paged, all);
    let mut ids: Vec<&str> = all.iter().map(|d| d.event.as_ref().unwrap().id.as_str()).collect();
    ids.sort_unstable();
    let mut expected: Vec<String> = (0..12).map(|i| format!("e{i}")).collect();
    expected.sort_unstable();
    assert_eq!(ids, expected);
    let garbage = dlq.list_dead_letters(list("sub", 5, "garbage")).await.unwrap_err();
    assert!(garbage.code() == Code::InvalidArgument && garbage.message().contains("page_token"), "{garbage:?}");

    // Get and requeue one of partition >= 1 by its id: only "sub" gets it again, at attempt 1.
    let far = all.iter().find(|d| d.id.contains('~')).unwrap();
    let get = |id: &str| GetDeadLetterRequest { stream: "p".into(), subscription: "sub".into(), id: id.into() };
    assert_eq!(dlq.get_dead_letter(get(&far.id)).await.unwrap().into_inner().dead_letter.as_ref(), Some(far));
    let entry = far.id.split('~').next().unwrap();
    let missing = dlq.get_dead_letter(get(&format!("{entry}~9"))).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "a partition the stream lacks: {missing:?}");
    let bad = dlq.get_dead_letter(get("x~1")).await.unwrap_err();
    assert!(bad.code() == Code::InvalidArgument && bad.message().starts_with("id"), "{bad:?}");
    let requeue = RequeueDeadLettersRequest {
        stream: "p".into(),
        subscription: "sub".into(),
        ids: vec![far.id.clone()],
        all: false,
    };
    assert_eq!(dlq.requeue_dead_letters(requeue).await.unwrap().into_inner().requeued, 1);
    let again = sub.take(1, WAIT).await;
    assert_eq!((&again[0].event, again[0].delivery_attempt), (&far.event, 1));
    subscriber.acknowledge(AcknowledgeRequest { ack_ids: vec![again[0].ack_id.clone()] }).await.unwrap();
    sib.expect_nothing(Duration::from_millis(1000)).await;

    // Delete one, purge the rest of every partition.
    let other = all.iter().find(|d| d.id != far.id).unwrap();
    let delete =
        DeleteDeadLettersRequest { stream: "p".into(), subscription: "sub".into(), ids: vec![other.id.clone()] };
    assert_eq!(dlq.delete_dead_letters(delete).await.unwrap().into_inner().deleted, 1);
    let purge = PurgeDeadLettersRequest { stream: "p".into(), subscription: "sub".into() };
    assert_eq!(dlq.purge_dead_letters(purge).await.unwrap().into_inner().purged, 10);
    assert!(dlq.list_dead_letters(list("", 0, "")).await.unwrap().into_inner().dead_letters.is_empty());
}
