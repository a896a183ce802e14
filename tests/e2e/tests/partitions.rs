//! Partitioned streams through the real services (on one Redis, and on the 3-master cluster in
//! the `cluster` nextest profile): CreateStream with `partitions` 3, shown by GetStream; the
//! count is fixed (an update naming it, 0-less bounds refused naming `stream.partitions`); one
//! Subscribe call gets every event of every partition, acks settle them all, and one key's
//! events come in publish order; stats sum the partitions; a retried event id is a duplicate;
//! internal partition names are refused as stream names. Publish results and deliveries name
//! their partition; per-partition stats add up to the sums; Seek by time replays every
//! partition, Seek by a partition's entry id moves only it, CreateSubscription at one starts
//! there; an entry id without its partition, or a partition out of range, is INVALID_ARGUMENT
//! naming the field; the admin exports each partition's length.
//! Dead letters of a 3-partition stream through the real DeadLetterService: listed in full pages
//! of 5 across the partitions, got and requeued by the ids listed (only the one subscription gets
//! the event again, at attempt 1), bad ids and tokens refused naming the field, deleted, purged.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use eventflow_e2e::{Consumer, Stack, event, wait_for_metric};
use eventflow_proto::v1::{
    AcknowledgeRequest, CloudEvent, CreateStreamRequest, CreateSubscriptionRequest, DeleteDeadLettersRequest,
    GetDeadLetterRequest, GetStreamRequest, ListDeadLettersRequest, PartitionEntry, Position, PurgeDeadLettersRequest,
    RejectRequest, RequeueDeadLettersRequest, SeekRequest, Stream, StreamStats, Subscription, UpdateStreamRequest,
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

/// A Seek of `sub` of stream "q" to `position`.
fn seek(position: position::Position) -> SeekRequest {
    SeekRequest {
        stream: "q".into(),
        subscription: "sub".into(),
        position: Some(Position { position: Some(position) }),
    }
}

/// The events of subscription `sub` not yet settled (lag + pending) in each partition: what a
/// seek set up, however much the open consumer has read since.
fn lags(stats: &StreamStats, sub: &str) -> Vec<i64> {
    let unsettled = |p: &eventflow_proto::v1::PartitionStats| {
        p.subscriptions.iter().find(|s| s.subscription == sub).map(|s| s.lag + s.pending).unwrap()
    };
    stats.partitions.iter().map(unsettled).collect()
}

#[tokio::test]
async fn seek_start_positions_and_stats_work_per_partition_through_the_admin_service() {
    let stack = Stack::start().await;
    let mut admin = stack.admin().await;
    let stream = Stream { name: "q".into(), partitions: 3, ..Default::default() };
    admin.create_stream(CreateStreamRequest { stream: Some(stream) }).await.unwrap();
    stack.create_subscription("q", "sub", 30, 5).await;
    let before = prost_types::Timestamp::from(std::time::SystemTime::now());

    // 30 keyless events and 15 of a hot key.
    let mut events: Vec<CloudEvent> = (0..30).map(|i| keyed(&format!("e{i}"), "")).collect();
    events.extend((0..15).map(|i| keyed(&format!("hot{i}"), "hot")));
    let results = stack.publish("q", events).await;
    assert!(results.iter().all(|r| r.error.is_none() && (0..3).contains(&r.partition)), "{results:?}");
    let hot = results[30].partition;
    assert!(results[30..].iter().all(|r| r.partition == hot), "one key, one partition");
    let counts: Vec<i64> = (0..3).map(|i| results.iter().filter(|r| r.partition == i).count() as i64).collect();

    // Deliveries name the partition their publish result did.
    let mut consumer = Consumer::open(&stack, "q", "sub", 100).await;
    let received = consumer.take(45, WAIT).await;
    for r in &received {
        let id = &r.event.as_ref().unwrap().id;
        let published = &results[if let Some(n) = id.strip_prefix("hot") {
            30 + n.parse::<usize>().unwrap()
        } else {
            id[1..].parse().unwrap()
        }];
        assert_eq!((r.partition, &r.entry_id), (published.partition, &published.entry_id), "{id}");
    }
    let ack_all = |received: &[eventflow_proto::v1::ReceivedEvent]| AcknowledgeRequest {
        ack_ids: received.iter().map(|r| r.ack_id.clone()).collect(),
    };
    stack.subscriber().await.acknowledge(ack_all(&received)).await.unwrap();

    // Per-partition stats add up to the sums, the hot partition shows.
    let stats = stack.stats("q").await;
    assert_eq!(stats.partitions.iter().map(|p| p.partition).collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(stats.partitions.iter().map(|p| p.length).collect::<Vec<_>>(), counts);
    assert_eq!(stats.partitions.iter().map(|p| p.length).sum::<i64>(), stats.length);
    assert!(counts[hot as usize] >= 15, "{counts:?}");
    assert_eq!(lags(&stats, "sub"), [0, 0, 0]);
    // And so do the admin's gauges (a `partition` label beside the summed series).
    let hot_label = hot.to_string();
    #[allow(clippy::cast_precision_loss)]
    let hot_length = counts[hot as usize] as f64;
    let labels = [("stream", "q"), ("partition", hot_label.as_str())];
    wait_for_metric(&stack.admin, "eventflow_partition_length", &labels, hot_length).await;

    // Seek by time replays every partition.
    let replay = admin.seek(seek(position::Position::Time(before))).await.unwrap().into_inner();
    assert_eq!(replay.acknowledged, 0);
    assert_eq!(lags(&stack.stats("q").await, "sub"), counts, "every partition replays");
    let again = consumer.take(45, WAIT).await;
    stack.subscriber().await.acknowledge(ack_all(&again)).await.unwrap();

    // Seek by an entry id of the hot partition moves only it.
    let mark = &results[30 + 9];
    let entry = PartitionEntry { partition: hot, entry_id: mark.entry_id.clone() };
    admin.seek(seek(position::Position::PartitionEntry(entry.clone()))).await.unwrap();
    let lag = lags(&stack.stats("q").await, "sub");
    for (i, lag) in (0..).zip(&lag) {
        if i == hot {
            assert!(*lag >= 5, "at least the hot key's last 5 events: {lag}");
        } else {
            assert_eq!(*lag, 0, "partition {i} left alone");
        }
    }
    let replayed = consumer.take(usize::try_from(lag[hot as usize]).unwrap(), WAIT).await;
    assert!(replayed.iter().all(|r| r.partition == hot));
    stack.subscriber().await.acknowledge(ack_all(&replayed)).await.unwrap();

    // A new subscription starts there too (the others at the entry's time).
    let create = CreateSubscriptionRequest {
        subscription: Some(Subscription { stream: "q".into(), name: "later".into(), ..Default::default() }),
        start_position: Some(Position { position: Some(position::Position::PartitionEntry(entry)) }),
    };
    admin.create_subscription(create).await.unwrap();
    assert_eq!(lags(&stack.stats("q").await, "later")[hot as usize], lag[hot as usize]);

    // Refused naming the field.
    let bare = admin.seek(seek(position::Position::EntryId(mark.entry_id.clone()))).await.unwrap_err();
    assert_eq!(bare.code(), Code::InvalidArgument, "{bare:?}");
    assert!(bare.message().contains("position.entry_id"), "{bare:?}");
    for partition in [3, -1] {
        let entry = PartitionEntry { partition, entry_id: mark.entry_id.clone() };
        let err = admin.seek(seek(position::Position::PartitionEntry(entry))).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains("position.partition_entry.partition"), "{err:?}");
    }
}
