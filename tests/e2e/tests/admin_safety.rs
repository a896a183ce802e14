//! Admin operations that are safe to retry: deletes that a retry finishes and a re-create
//! never sees the leftovers of; duration fields with upper bounds; seek in bounded calls; dead
//! letters listed in pages bounded by bytes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use eventflow_broker::{
    Keys,
    schema::{breaker, consumer, error_field},
};
use eventflow_e2e::{Consumer, Kind, RedisServer, Stack, event, eventually, start, unique_prefix};
use eventflow_proto::v1::{
    AcknowledgeRequest, CircuitBreakerPolicy, CreateStreamRequest, CreateSubscriptionRequest, DeleteStreamRequest,
    DeleteSubscriptionRequest, GetStreamRequest, ListDeadLettersRequest, ListStreamsRequest, ListSubscriptionsRequest,
    ModifyAckDeadlineRequest, Position, PublishRequest, RejectRequest, RequeueDeadLettersRequest, RetentionPolicy,
    RetryPolicy, SeekRequest, Stream, Subscription, UpdateStreamRequest, UpdateSubscriptionRequest,
    admin_service_client::AdminServiceClient, position, publisher_service_client::PublisherServiceClient,
};
use prost_types::{Duration, FieldMask};
use tonic::{Code, Status};

fn secs(seconds: i64) -> Option<Duration> {
    Some(Duration { seconds, nanos: 0 })
}

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask { paths: paths.iter().map(|p| p.to_string()).collect() })
}

#[track_caller]
fn assert_names(status: &Status, field: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().starts_with(&format!("{field}:")), "{status:?} should name {field}");
}

const DAY: i64 = 86_400;

#[tokio::test]
async fn huge_or_malformed_durations_are_refused_naming_the_field_and_nothing_is_stored() {
    let stack = Stack::start().await;
    let mut admin = stack.admin().await;
    let create = |stream: Stream| CreateStreamRequest { stream: Some(stream) };
    let named = |dedup_window, max_age| Stream {
        name: "s".into(),
        dedup_window,
        retention: Some(RetentionPolicy { max_length: 0, max_age, ..Default::default() }),
        ..Default::default()
    };

    // A dedup window Redis cannot add to its clock used to fail the publish script after its
    // XADD (and every retry stored another copy); now it is refused up front.
    for window in [secs(7 * DAY + 1), secs(i64::MAX), Some(Duration { seconds: i64::MAX, nanos: 999_999_999 })] {
        let status = admin.create_stream(create(named(window, None))).await.unwrap_err();
        assert_names(&status, "stream.dedup_window");
    }
    for malformed in
        [secs(-1), Some(Duration { seconds: 0, nanos: -5 }), Some(Duration { seconds: 1, nanos: 2_000_000_000 })]
    {
        assert_names(&admin.create_stream(create(named(malformed, None))).await.unwrap_err(), "stream.dedup_window");
    }
    let sub_millisecond = Some(Duration { seconds: 0, nanos: 1000 });
    assert_names(&admin.create_stream(create(named(sub_millisecond, None))).await.unwrap_err(), "stream.dedup_window");
    let status = admin.create_stream(create(named(None, secs(3651 * DAY)))).await.unwrap_err();
    assert_names(&status, "stream.retention.max_age");
    assert_names(&admin.create_stream(create(named(None, secs(-3)))).await.unwrap_err(), "stream.retention.max_age");
    let status = admin.get_stream(GetStreamRequest { name: "s".into() }).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    // Only the layout version, which every service writes at start, is there.
    assert_eq!(
        keys(&stack, &format!("{}:*", stack.prefix)),
        [stack.keys().layout()],
        "a refused create stores nothing"
    );

    // The bounds themselves are accepted.
    admin.create_stream(create(named(secs(7 * DAY), secs(3650 * DAY)))).await.unwrap();
    let first = stack.publish("s", vec![event("e1", "t")]).await;
    assert!(!first[0].duplicate && !first[0].entry_id.is_empty(), "{first:?}");

    // An update to a huge window is refused and changes nothing: the event is still a duplicate.
    let update =
        UpdateStreamRequest { stream: Some(named(secs(i64::MAX / 2), None)), update_mask: mask(&["dedup_window"]) };
    assert_names(&admin.update_stream(update).await.unwrap_err(), "stream.dedup_window");
    let got = admin.get_stream(GetStreamRequest { name: "s".into() }).await.unwrap().into_inner().stream.unwrap();
    assert_eq!(got.dedup_window.unwrap().seconds, 7 * DAY);
    let again = stack.publish("s", vec![event("e1", "t")]).await;
    assert!(again[0].duplicate && again[0].entry_id == first[0].entry_id, "{again:?}");
    assert_eq!(stack.stats("s").await.length, 1, "one copy stored");

    // Subscriptions: retry backoffs at most a day, breaker durations bounded, never negative.
    let sub = |retry_policy, circuit_breaker| Subscription {
        stream: "s".into(),
        name: "sub".into(),
        retry_policy,
        circuit_breaker,
        ..Default::default()
    };
    let create_sub = |s: Subscription| CreateSubscriptionRequest { subscription: Some(s), start_position: None };
    let retry = |min, max| Some(RetryPolicy { minimum_backoff: min, maximum_backoff: max });
    let cases = [
        (retry(secs(DAY + 1), secs(DAY + 1)), "subscription.retry_policy.minimum_backoff"),
        (retry(None, secs(DAY + 1)), "subscription.retry_policy.maximum_backoff"),
        (retry(None, secs(i64::MAX)), "subscription.retry_policy.maximum_backoff"),
        (retry(secs(-1), None), "subscription.retry_policy.minimum_backoff"),
        (retry(None, Some(Duration { seconds: 5, nanos: -1 })), "subscription.retry_policy.maximum_backoff"),
    ];
    for (policy, field) in cases {
        assert_names(&admin.create_subscription(create_sub(sub(policy, None))).await.unwrap_err(), field);
    }
    let breaker = |window, open_duration| {
        Some(CircuitBreakerPolicy { enabled: true, window, open_duration, ..Default::default() })
    };
    let status = admin.create_subscription(create_sub(sub(None, breaker(None, secs(2 * DAY))))).await.unwrap_err();
    assert_names(&status, "subscription.circuit_breaker.open_duration");
    let status = admin.create_subscription(create_sub(sub(None, breaker(secs(i64::MAX), None)))).await.unwrap_err();
    assert_names(&status, "subscription.circuit_breaker.window");
    assert!(stack.redis.raw(&format!("EXISTS {}", stack.keys().sub("s", "sub"))).contains(":0"), "nothing stored");

    admin.create_subscription(create_sub(sub(retry(secs(DAY), secs(DAY)), None))).await.unwrap();
    let update = UpdateSubscriptionRequest {
        subscription: Some(sub(retry(None, secs(DAY * 365)), None)),
        update_mask: mask(&["retry_policy.maximum_backoff"]),
    };
    assert_names(&admin.update_subscription(update).await.unwrap_err(), "subscription.retry_policy.maximum_backoff");

    // ModifyAckDeadline: at most the longest ack deadline, checked before anything else.
    let mut subscriber = stack.subscriber().await;
    let modify =
        ModifyAckDeadlineRequest { ack_ids: vec!["x".into()], ack_deadline_seconds: i32::MAX, reason: String::new() };
    assert_names(&subscriber.modify_ack_deadline(modify).await.unwrap_err(), "ack_deadline_seconds");
    let modify =
        ModifyAckDeadlineRequest { ack_ids: vec!["x".into()], ack_deadline_seconds: -1, reason: String::new() };
    assert_names(&subscriber.modify_ack_deadline(modify).await.unwrap_err(), "ack_deadline_seconds");
}

const WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// The keys of the stack's Redis matching `pattern` (built from the stack's [`Keys`]), sorted.
fn keys(stack: &Stack, pattern: &str) -> Vec<String> {
    let raw = stack.redis.raw(&format!("KEYS {pattern}"));
    let mut keys: Vec<String> =
        raw.split("\r\n").filter(|l| l.starts_with(&format!("{}:", stack.prefix))).map(String::from).collect();
    keys.sort();
    keys
}

/// Fills stream `name` with what a delete must remove: events with dedup keys, a subscription
/// with a dead letter, a requeued dead letter, a last error and a pending delivery; then closes
/// the consumer and waits until the subscriber released it.
async fn populate(stack: &Stack, name: &str) {
    stack.create_stream(name).await;
    stack.create_subscription(name, "sub", 600, 0).await;
    stack.publish(name, (0..4).map(|i| event(&format!("e{i}"), "t")).collect()).await;
    let mut consumer = Consumer::open(stack, name, "sub", 10).await;
    let got = consumer.take(4, WAIT).await;
    let mut subscriber = stack.subscriber().await;
    let reject = RejectRequest { ack_ids: vec![got[0].ack_id.clone(), got[1].ack_id.clone()], reason: "bad".into() };
    subscriber.reject(reject).await.unwrap();
    let nack = ModifyAckDeadlineRequest {
        ack_ids: vec![got[2].ack_id.clone()],
        ack_deadline_seconds: 0,
        reason: "later".into(),
    };
    subscriber.modify_ack_deadline(nack).await.unwrap();
    let mut dlq = stack.dlq().await;
    let list = ListDeadLettersRequest { stream: name.into(), subscription: "sub".into(), ..Default::default() };
    let letters = dlq.list_dead_letters(list).await.unwrap().into_inner().dead_letters;
    assert_eq!(letters.len(), 2);
    let requeue = RequeueDeadLettersRequest {
        stream: name.into(),
        subscription: "sub".into(),
        ids: vec![letters[0].id.clone()],
        all: false,
    };
    dlq.requeue_dead_letters(requeue).await.unwrap();
    drop(consumer);
    let released = || async {
        let stats = stack.stats(name).await;
        stats.subscriptions[0].consumers.is_empty().then_some(())
    };
    eventually("consumer released", WAIT, released).await;
    assert!(!keys(stack, &format!("{}*", stack.keys().dedup_ids_base(name))).is_empty());
}

fn listed(streams: &[Stream]) -> Vec<&str> {
    streams.iter().map(|s| s.name.as_str()).collect()
}

#[tokio::test]
async fn an_interrupted_stream_delete_is_finished_by_a_retry_and_a_re_create_sees_nothing_old() {
    let stack = Stack::start().await;
    for name in ["s", "t", "kept"] {
        populate(&stack, name).await;
    }
    let kept_before = keys(&stack, &format!("{}*", stack.keys().stream("kept")));
    let mut admin = stack.admin().await;

    // Interrupt both deletes deterministically right after their atomic step: SCAN (the sweep of
    // keys not known by name, here the dedup keys) is refused by Redis.
    assert!(stack.redis.raw("ACL SETUSER default -scan").starts_with("+OK"));
    for name in ["s", "t"] {
        let status = admin.delete_stream(DeleteStreamRequest { name: name.into() }).await.unwrap_err();
        assert_eq!(status.code(), Code::Internal, "{status:?}");
        let gone = admin.get_stream(GetStreamRequest { name: name.into() }).await.unwrap_err();
        assert_eq!(gone.code(), Code::NotFound, "the stream is gone at once");
        let left = keys(&stack, &format!("{}*", stack.keys().stream(name)));
        let (dedup, deleting) = (stack.keys().dedup_ids_base(name), stack.keys().deleting(name));
        assert!(left.iter().all(|k| k.starts_with(&dedup) || *k == deleting), "{left:?}");
        assert!(left.contains(&deleting) && left.len() > 1, "{left:?}");
    }
    let all = admin.list_streams(ListStreamsRequest::default()).await.unwrap().into_inner().streams;
    assert_eq!(listed(&all), ["kept"]);
    // A re-create must not start over the leftovers: it cannot finish the sweep, so it fails
    // and writes nothing.
    let again = || CreateStreamRequest { stream: Some(Stream { name: "s".into(), ..Default::default() }) };
    assert_eq!(admin.create_stream(again()).await.unwrap_err().code(), Code::Internal);
    assert_eq!(admin.get_stream(GetStreamRequest { name: "s".into() }).await.unwrap_err().code(), Code::NotFound);
    assert!(stack.redis.raw("ACL SETUSER default +scan").starts_with("+OK"));

    // The re-create finishes the old sweep first: the old dedup keys, groups, dead letters,
    // redrive entries and last errors are all gone.
    admin.create_stream(again()).await.unwrap();
    assert_eq!(keys(&stack, &format!("{}*", stack.keys().stream("s"))), [stack.keys().meta("s")]);
    let fresh = stack.publish("s", vec![event("e0", "t"), event("e1", "t")]).await;
    assert!(fresh.iter().all(|r| !r.duplicate), "old dedup keys made new events duplicates: {fresh:?}");
    let subs = admin.list_subscriptions(ListSubscriptionsRequest { stream: "s".into() }).await.unwrap();
    assert!(subs.into_inner().subscriptions.is_empty());
    let groups = stack.redis.raw(&format!("XINFO GROUPS {}", stack.keys().stream("s")));
    assert_eq!(groups, "*0\r\n", "no old consumer group");
    stack.create_subscription("s", "sub", 600, 0).await;
    let list = ListDeadLettersRequest { stream: "s".into(), subscription: "sub".into(), ..Default::default() };
    assert!(stack.dlq().await.list_dead_letters(list).await.unwrap().into_inner().dead_letters.is_empty());
    let stats = stack.stats("s").await;
    assert_eq!(stats.length, 2);
    let sub = &stats.subscriptions[0];
    assert_eq!((sub.pending, sub.dead_letter_depth, sub.redrive_pending, sub.delayed, sub.lag), (0, 0, 0, 0, 2));
    let got = Consumer::open(&stack, "s", "sub", 10).await.take(2, WAIT).await;
    assert!(got.iter().all(|e| e.delivery_attempt == 1));
    let ack_ids = got.iter().map(|e| e.ack_id.clone()).collect();
    stack.subscriber().await.acknowledge(AcknowledgeRequest { ack_ids }).await.unwrap();

    // A retry of the other delete finishes it and succeeds; only then is it NOT_FOUND.
    admin.delete_stream(DeleteStreamRequest { name: "t".into() }).await.unwrap();
    assert_eq!(keys(&stack, &format!("{}*", stack.keys().stream("t"))), Vec::<String>::new());
    let status = admin.delete_stream(DeleteStreamRequest { name: "t".into() }).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(keys(&stack, &format!("{}*", stack.keys().stream("kept"))), kept_before, "other streams untouched");
    let all = admin.list_streams(ListStreamsRequest::default()).await.unwrap().into_inner().streams;
    assert_eq!(listed(&all), ["kept", "s"]);
}

#[tokio::test]
async fn a_subscription_delete_removes_everything_at_once_and_a_retry_cleans_leftovers() {
    let stack = Stack::start().await;
    populate(&stack, "s").await;
    stack.create_subscription("s", "other", 600, 0).await;
    let other_before = keys(&stack, &format!("{}:*other*", stack.keys().stream("s")));
    let mut admin = stack.admin().await;
    let delete = || DeleteSubscriptionRequest { stream: "s".into(), name: "sub".into() };
    let of_sub = |stack: &Stack| {
        let mut left = keys(stack, &format!("{}:*:sub", stack.keys().stream("s")));
        left.extend(keys(stack, &format!("{}:*:sub:*", stack.keys().stream("s"))));
        left
    };
    assert!(of_sub(&stack).len() >= 4, "settings, dlq, redrive, errors: {:?}", of_sub(&stack));

    // What the old multi-step delete left when it timed out after removing the settings: the
    // group with its pending entries, the dead letters, the redrive stream. A retry used to say
    // NOT_FOUND and a re-create resurrected the dead letters; now the retry cleans up.
    let settings = stack.keys().sub("s", "sub");
    assert!(stack.redis.raw(&format!("DEL {settings}")).starts_with(":1"));
    admin.delete_subscription(delete()).await.unwrap();
    assert_eq!(of_sub(&stack), Vec::<String>::new());
    let groups = stack.redis.raw(&format!("XINFO GROUPS {}", stack.keys().stream("s")));
    assert!(!groups.contains("\r\nsub\r\n") && groups.contains("\r\nother\r\n"), "{groups}");
    assert_eq!(admin.delete_subscription(delete()).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(
        keys(&stack, &format!("{}:*other*", stack.keys().stream("s"))),
        other_before,
        "the sibling is untouched"
    );

    // A session that outlived the delete may still write its breaker; a re-create ignores that.
    let breaker = stack.keys().breaker("s", "sub");
    let open = format!("HSET {breaker} {} {} {} 99999999999999", breaker::STATE, breaker::OPEN, breaker::UNTIL);
    assert!(stack.redis.raw(&open).starts_with(":"));
    stack.create_subscription("s", "sub", 600, 0).await;
    assert!(stack.redis.raw(&format!("EXISTS {breaker}")).starts_with(":0"));
    let stats = stack.stats("s").await;
    let sub = stats.subscriptions.iter().find(|s| s.subscription == "sub").unwrap();
    assert_eq!((sub.pending, sub.dead_letter_depth, sub.redrive_pending, sub.lag), (0, 0, 0, 4));
    let got = Consumer::open(&stack, "s", "sub", 10).await.take(4, WAIT).await;
    assert!(got.iter().all(|e| e.delivery_attempt == 1), "a fresh start, no old delivery counts");

    // A delete on a stream that does not exist is NOT_FOUND.
    let missing = DeleteSubscriptionRequest { stream: "nope".into(), name: "sub".into() };
    assert_eq!(admin.delete_subscription(missing).await.unwrap_err().code(), Code::NotFound);
}

/// `calls=` of one command in `INFO commandstats` (0 if it never ran since the last reset).
fn command_calls(redis: &RedisServer, command: &str) -> u64 {
    let info = redis.raw("INFO commandstats");
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

/// `XPENDING` summary count of a group.
fn pending(redis: &RedisServer, key: &str, group: &str) -> u64 {
    let reply = redis.raw(&format!("XPENDING {key} {group}"));
    reply.lines().nth(1).unwrap().trim_start_matches(':').parse().unwrap()
}

#[tokio::test]
async fn seek_over_20000_pending_entries_acks_them_all_in_bounded_calls() {
    // Only the admin service runs while the seek is measured: no other script caller.
    let redis = RedisServer::start();
    let prefix = unique_prefix();
    let admin = start(Kind::Admin, &redis.url(), &prefix, &["--trim-interval-secs", "0"]).await;
    let publisher = start(Kind::Publisher, &redis.url(), &prefix, &[]).await;
    let mut client = AdminServiceClient::new(admin.channel().await);
    let stream = Stream { name: "s".into(), dedup_window: secs(0), ..Default::default() };
    client.create_stream(CreateStreamRequest { stream: Some(stream) }).await.unwrap();
    let subscription = Subscription { stream: "s".into(), name: "sub".into(), ..Default::default() };
    let earliest = Some(Position { position: Some(position::Position::Earliest(true)) });
    let create = CreateSubscriptionRequest { subscription: Some(subscription), start_position: earliest };
    client.create_subscription(create).await.unwrap();
    let mut publish = PublisherServiceClient::new(publisher.channel().await);
    let mut ids = Vec::new();
    for batch in 0..20 {
        let events = (0..1000).map(|i| event(&format!("e{batch}-{i}"), "t")).collect();
        let results = publish.publish(PublishRequest { stream: "s".into(), events }).await.unwrap().into_inner();
        ids.extend(results.results.into_iter().map(|r| r.entry_id));
    }
    publisher.stop().await;
    let key = Keys::new(&prefix).stream("s");
    // 20 000 deliveries to one consumer (as a session's XREADGROUP makes them), all pending.
    let read = format!(
        "EVAL \"redis.call('XREADGROUP', 'GROUP', 'sub', '{}test', 'COUNT', 20000, 'STREAMS', KEYS[1], '>') return 1\" 1 {key}",
        consumer::SESSION
    );
    assert_eq!(redis.raw(&read), ":1\r\n");
    assert_eq!(pending(&redis, &key, "sub"), 20_000);
    // Last errors: the stream's go with the seek, the redrive stream's (`r:`) stay.
    let errors = Keys::new(&prefix).errors("s", "sub");
    let (stream_entry, redrive_entry) = (error_field::STREAM, error_field::REDRIVE);
    redis.raw(&format!("HSET {errors} {stream_entry}{} a {stream_entry}1-1 b {redrive_entry}1-1 c", ids[5]));

    let seek = |p: position::Position| SeekRequest {
        stream: "s".into(),
        subscription: "sub".into(),
        position: Some(Position { position: Some(p) }),
    };
    assert!(redis.raw("CONFIG RESETSTAT").starts_with("+OK"));
    let middle = ids[9_999].clone();
    let acked = client.seek(seek(position::Position::EntryId(middle))).await.unwrap().into_inner();
    assert_eq!(acked.acknowledged, 10_000, "the pending entries up to the position");
    assert_eq!(pending(&redis, &key, "sub"), 10_000, "the ones after it stay pending");
    let calls = command_calls(&redis, "evalsha");
    assert!(calls >= 11, "one position step and at least 10 chunks of <= 1000, not one call: {calls}");
    assert_eq!(redis.raw(&format!("HKEYS {errors}")), format!("*1\r\n$5\r\n{redrive_entry}1-1\r\n"));

    assert!(redis.raw("CONFIG RESETSTAT").starts_with("+OK"));
    let acked = client.seek(seek(position::Position::Latest(true))).await.unwrap().into_inner();
    assert_eq!(acked.acknowledged, 10_000);
    assert_eq!(pending(&redis, &key, "sub"), 0);
    assert!(command_calls(&redis, "evalsha") >= 11);
    let groups = redis.raw(&format!("XINFO GROUPS {key}"));
    assert!(groups.contains(ids.last().unwrap()), "positioned at the end: {groups}");
    admin.stop().await;
}

/// A CloudEvent with `bytes` of binary data.
fn big_event(id: &str, bytes: usize) -> eventflow_proto::v1::CloudEvent {
    let mut e = event(id, "t");
    e.data = Some(eventflow_proto::v1::cloud_event::Data::BinaryData(vec![b'x'; bytes]));
    e
}

/// Pages through the dead letters of `subscription` ("" = all) with `page_size`, returning the
/// pages.
async fn all_pages(stack: &Stack, subscription: &str, page_size: i32) -> Vec<Vec<eventflow_proto::v1::DeadLetter>> {
    use eventflow_proto::prost::Message;
    // gRPC's default client limits: 4 MiB per received message.
    let mut dlq = stack.dlq().await;
    let (mut pages, mut page_token) = (Vec::new(), String::new());
    loop {
        let request =
            ListDeadLettersRequest { stream: "s".into(), subscription: subscription.into(), page_size, page_token };
        let page = dlq.list_dead_letters(request).await.unwrap().into_inner();
        assert!(!page.dead_letters.is_empty(), "no empty pages");
        assert!(page.encoded_len() <= (1 << 20) + 4096, "page of {} bytes", page.encoded_len());
        pages.push(page.dead_letters);
        if page.next_page_token.is_empty() {
            return pages;
        }
        page_token = page.next_page_token;
    }
}

/// The listing order of a dead letter: id numerically, then subscription.
fn order(d: &eventflow_proto::v1::DeadLetter) -> ((u64, u64), String) {
    let (ms, seq) = d.id.split_once('-').unwrap();
    ((ms.parse().unwrap(), seq.parse().unwrap()), d.subscription.clone())
}

#[tokio::test]
async fn dead_letters_of_100_kib_page_by_bytes_through_a_client_with_default_limits() {
    const KIB_100: usize = 100 * 1024;
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    stack.create_subscription("s", "one", 600, 0).await;
    stack.create_subscription("s", "two", 600, 0).await;
    for batch in 0..10 {
        let events = (0..10).map(|i| big_event(&format!("e{batch}-{i}"), KIB_100)).collect();
        assert!(stack.publish("s", events).await.iter().all(|r| r.error.is_none()));
    }
    let mut subscriber = stack.subscriber().await;
    for sub in ["one", "two"] {
        let mut consumer = Consumer::open(&stack, "s", sub, 10).await;
        for _ in 0..10 {
            let got = consumer.take(10, WAIT).await;
            let reject = RejectRequest { ack_ids: got.into_iter().map(|e| e.ack_id).collect(), reason: "big".into() };
            assert!(subscriber.reject(reject).await.unwrap().into_inner().expired_ack_ids.is_empty());
        }
    }
    let depths: Vec<i64> = stack.stats("s").await.subscriptions.iter().map(|s| s.dead_letter_depth).collect();
    assert_eq!(depths, [100, 100]);

    // One queue, page_size 1000: about ten dead letters per page, each page under the cap, all
    // 100 exactly once, newest first across page boundaries.
    let pages = all_pages(&stack, "one", 1000).await;
    assert!(pages.len() >= 10, "{} pages", pages.len());
    let letters: Vec<_> = pages.into_iter().flatten().collect();
    assert_eq!(letters.len(), 100);
    assert!(letters.windows(2).all(|w| order(&w[0]) > order(&w[1])), "strictly newest first, no repeats");
    let mut events: Vec<String> = letters.iter().map(|d| d.event.as_ref().unwrap().id.clone()).collect();
    events.sort();
    events.dedup();
    assert_eq!(events.len(), 100);
    for d in &letters {
        let data = d.event.as_ref().unwrap().data.as_ref().unwrap();
        assert!(matches!(data, eventflow_proto::v1::cloud_event::Data::BinaryData(b) if b.len() == KIB_100));
    }

    // All queues merged: 200, each exactly once, in one order across pages.
    let letters: Vec<_> = all_pages(&stack, "", 1000).await.into_iter().flatten().collect();
    assert_eq!(letters.len(), 200);
    assert!(letters.windows(2).all(|w| order(&w[0]) > order(&w[1])), "strictly newest first, no repeats");
    assert_eq!(letters.iter().filter(|d| d.subscription == "two").count(), 100);

    // A page size below what the byte cap allows still holds.
    let pages = all_pages(&stack, "", 3).await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [[3; 66].as_slice(), &[2]].concat());
}
