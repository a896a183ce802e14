//! Delivery over gRPC: at-least-once, redelivery after the ack deadline, nack, delay, reject,
//! max attempts, flow control, shared and separate subscriptions, release on close.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{collections::HashSet, time::Duration};

use eventflow_e2e::{Consumer, Kind, Stack, event, start};
use eventflow_proto::v1::{
    AcknowledgeRequest, ModifyAckDeadlineRequest, ReceivedEvent, RejectRequest, SubscribeRequest,
    subscriber_service_client::SubscriberServiceClient,
};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(10);

fn ids(events: &[ReceivedEvent]) -> Vec<String> {
    events.iter().map(|e| e.event.as_ref().unwrap().id.clone()).collect()
}

fn ack_ids(events: &[ReceivedEvent]) -> Vec<String> {
    events.iter().map(|e| e.ack_id.clone()).collect()
}

fn dlq_len(stack: &Stack, stream: &str, sub: &str) -> String {
    stack.redis.raw(&format!("XLEN {}", stack.keys().dlq(stream, sub))).trim().to_string()
}

#[tokio::test]
async fn events_are_delivered_once_acked() {
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    stack.create_subscription("s", "sub", 1, 0).await;
    stack.publish("s", vec![event("a", "t"), event("b", "t")]).await;
    let mut consumer = Consumer::open(&stack, "s", "sub", 10).await;
    let got = consumer.take(2, WAIT).await;
    assert_eq!(ids(&got), ["a", "b"]);
    assert!(got.iter().all(|e| e.delivery_attempt == 1));
    assert!(got.iter().all(|e| e.publish_time.as_ref().is_some_and(|t| t.seconds > 1_600_000_000)));
    let reply = stack.subscriber().await.acknowledge(AcknowledgeRequest { ack_ids: ack_ids(&got) }).await.unwrap();
    let reply = reply.into_inner();
    assert!(reply.invalid_ack_ids.is_empty() && reply.expired_ack_ids.is_empty());
    // Acked events are not redelivered after the 1 s deadline; a later event still arrives.
    stack.publish("s", vec![event("c", "t")]).await;
    assert_eq!(ids(&consumer.take(1, WAIT).await), ["c"]);
    // Acking again: no longer pending.
    let reply = stack.subscriber().await.acknowledge(AcknowledgeRequest { ack_ids: ack_ids(&got) }).await.unwrap();
    assert_eq!(reply.into_inner().expired_ack_ids, ack_ids(&got));
}

#[tokio::test]
async fn unacked_events_are_redelivered_after_the_deadline_with_attempt_counted() {
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    stack.create_subscription("s", "sub", 1, 0).await;
    stack.publish("s", vec![event("a", "t")]).await;
    let mut consumer = Consumer::open(&stack, "s", "sub", 10).await;
    let first = consumer.take(1, WAIT).await;
    assert_eq!(first[0].delivery_attempt, 1);
    let second = consumer.take(1, WAIT).await;
    assert_eq!((ids(&second)[0].as_str(), second[0].delivery_attempt), ("a", 2));
    assert_ne!(first[0].ack_id, second[0].ack_id);
    // The stale ack id can no longer extend or reject, but the current one acks.
    let mut client = stack.subscriber().await;
    let stale = client
        .modify_ack_deadline(ModifyAckDeadlineRequest {
            ack_ids: ack_ids(&first),
            ack_deadline_seconds: 1,
            reason: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(stale.into_inner().expired_ack_ids, ack_ids(&first));
    client.acknowledge(AcknowledgeRequest { ack_ids: ack_ids(&second) }).await.unwrap();
}

#[tokio::test]
async fn nack_redelivers_at_once_and_a_delay_holds_the_event_back() {
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    stack.create_subscription("s", "sub", 600, 0).await;
    stack.publish("s", vec![event("a", "t")]).await;
    let mut consumer = Consumer::open(&stack, "s", "sub", 10).await;
    let first = consumer.take(1, WAIT).await;
    let mut client = stack.subscriber().await;
    let nack = ModifyAckDeadlineRequest { ack_ids: ack_ids(&first), ack_deadline_seconds: 0, reason: String::new() };
    let reply = client.modify_ack_deadline(nack).await.unwrap().into_inner();
    assert!(reply.expired_ack_ids.is_empty() && reply.invalid_ack_ids.is_empty());
    // The deadline is 600 s: only the nack explains a redelivery now.
    let again = consumer.take(1, WAIT).await;
    assert_eq!((ids(&again)[0].as_str(), again[0].delivery_attempt), ("a", 2));
    // A delay of 1 s: held back now, redelivered after it.
    let delay = ModifyAckDeadlineRequest { ack_ids: ack_ids(&again), ack_deadline_seconds: 1, reason: String::new() };
    assert!(client.modify_ack_deadline(delay).await.unwrap().into_inner().expired_ack_ids.is_empty());
    let third = consumer.take(1, WAIT).await;
    assert_eq!(third[0].delivery_attempt, 3);
    // Beyond the subscription's deadline is refused, naming the field.
    let too_long =
        ModifyAckDeadlineRequest { ack_ids: ack_ids(&third), ack_deadline_seconds: 601, reason: String::new() };
    let status = client.modify_ack_deadline(too_long).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("ack_deadline_seconds"));
    let negative =
        ModifyAckDeadlineRequest { ack_ids: ack_ids(&third), ack_deadline_seconds: -1, reason: String::new() };
    assert_eq!(client.modify_ack_deadline(negative).await.unwrap_err().code(), Code::InvalidArgument);
}

#[tokio::test]
async fn reject_dead_letters_at_once_and_max_attempts_dead_letters_too() {
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    stack.create_subscription("s", "sub", 1, 2).await;
    stack.publish("s", vec![event("rejected", "t"), event("exhausted", "t")]).await;
    let mut consumer = Consumer::open(&stack, "s", "sub", 10).await;
    let got = consumer.take(2, WAIT).await;
    let mut client = stack.subscriber().await;
    let reject = RejectRequest { ack_ids: vec![got[0].ack_id.clone()], reason: "bad payload".into() };
    assert!(client.reject(reject).await.unwrap().into_inner().expired_ack_ids.is_empty());
    assert_eq!(dlq_len(&stack, "s", "sub"), ":1");
    let dlq = stack.redis.raw(&format!("XRANGE {} - +", stack.keys().dlq("s", "sub")));
    assert!(dlq.contains("bad payload"), "{dlq}");
    // "exhausted" is never acked: attempt 2 is the last, then it is dead-lettered.
    let again = consumer.take(1, WAIT).await;
    assert_eq!((ids(&again)[0].as_str(), again[0].delivery_attempt), ("exhausted", 2));
    let dead = || async { (dlq_len(&stack, "s", "sub") == ":2").then_some(()) };
    eventflow_e2e::eventually("max-attempts dead letter", WAIT, dead).await;
    let dlq = stack.redis.raw(&format!("XRANGE {} - +", stack.keys().dlq("s", "sub")));
    assert!(dlq.contains("max delivery attempts"), "{dlq}");
    consumer.expect_nothing(Duration::from_millis(1500)).await;
    // Settling a dead-lettered delivery reports it expired.
    let late = client.acknowledge(AcknowledgeRequest { ack_ids: ack_ids(&again) }).await.unwrap();
    assert_eq!(late.into_inner().expired_ack_ids, ack_ids(&again));
}

#[tokio::test]
async fn flow_control_bounds_unacked_events() {
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    stack.create_subscription("s", "sub", 600, 0).await;
    let events = (0..5).map(|i| event(&format!("e{i}"), "t")).collect();
    stack.publish("s", events).await;
    let mut consumer = Consumer::open(&stack, "s", "sub", 2).await;
    let first = consumer.take(2, WAIT).await;
    consumer.expect_nothing(Duration::from_millis(500)).await;
    stack.subscriber().await.acknowledge(AcknowledgeRequest { ack_ids: vec![first[0].ack_id.clone()] }).await.unwrap();
    let next = consumer.take(1, WAIT).await;
    assert_eq!(ids(&next), ["e2"]);
    consumer.expect_nothing(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn consumers_of_one_subscription_share_and_each_subscription_gets_all() {
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    stack.create_subscription("s", "shared", 600, 0).await;
    stack.create_subscription("s", "other", 600, 0).await;
    let mut a = Consumer::open(&stack, "s", "shared", 10).await;
    let mut b = Consumer::open(&stack, "s", "shared", 10).await;
    let mut other = Consumer::open(&stack, "s", "other", 100).await;
    let events: Vec<_> = (0..40).map(|i| event(&format!("e{i}"), "t")).collect();
    stack.publish("s", events).await;
    // 10 outstanding each, never acked: 20 of 40 delivered, split with no overlap.
    let got_a = ids(&a.take(10, WAIT).await);
    let got_b = ids(&b.take(10, WAIT).await);
    let union: HashSet<_> = got_a.iter().chain(&got_b).collect();
    assert_eq!(union.len(), 20, "no event delivered to both: {got_a:?} {got_b:?}");
    assert_eq!(other.take(40, WAIT).await.len(), 40);
}

#[tokio::test]
async fn closing_a_subscribe_call_releases_its_events_at_once() {
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    stack.create_subscription("s", "sub", 600, 0).await;
    stack.publish("s", vec![event("a", "t"), event("b", "t")]).await;
    let mut first = Consumer::open(&stack, "s", "sub", 10).await;
    assert_eq!(first.take(2, WAIT).await.len(), 2);
    drop(first);
    // Deadline is 600 s: only the release explains a redelivery within the wait.
    let mut second = Consumer::open(&stack, "s", "sub", 10).await;
    let again = second.take(2, WAIT).await;
    assert_eq!(ids(&again), ["a", "b"]);
    assert!(again.iter().all(|e| e.delivery_attempt == 2));
}

#[tokio::test]
async fn bad_subscribe_and_settle_input_gets_precise_statuses() {
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    stack.create_subscription("s", "sub", 10, 0).await;
    let mut client = stack.subscriber().await;
    let request = |stream: &str, sub: &str, max: i32| SubscribeRequest {
        stream: stream.into(),
        subscription: sub.into(),
        max_outstanding_messages: max,
        max_outstanding_bytes: 0,
    };
    let cases = [
        (request("s", "nope", 1), Code::NotFound),
        (request("nope", "sub", 1), Code::NotFound),
        (request("s", "", 1), Code::InvalidArgument),
        (request("s", "a/b", 1), Code::InvalidArgument),
        (request("s", "sub", -1), Code::InvalidArgument),
        (request("s", "sub", 10_001), Code::InvalidArgument),
    ];
    for (req, code) in cases {
        let status = client.subscribe(req.clone()).await.unwrap_err();
        assert_eq!(status.code(), code, "{req:?}: {status:?}");
    }
    let garbage = vec!["garbage".to_string(), String::new()];
    let reply = client.acknowledge(AcknowledgeRequest { ack_ids: garbage.clone() }).await.unwrap().into_inner();
    assert_eq!(reply.invalid_ack_ids, garbage);
    let reply = client.reject(RejectRequest { ack_ids: garbage.clone(), reason: String::new() }).await.unwrap();
    assert_eq!(reply.into_inner().invalid_ack_ids, garbage);
    let too_many = vec!["x".to_string(); 10_001];
    assert_eq!(
        client.acknowledge(AcknowledgeRequest { ack_ids: too_many }).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let long_reason = RejectRequest { ack_ids: vec![], reason: "x".repeat(2000) };
    assert_eq!(client.reject(long_reason).await.unwrap_err().code(), Code::InvalidArgument);
}

#[tokio::test]
async fn the_last_nack_reason_is_kept_with_a_max_attempts_dead_letter() {
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    stack.create_subscription("s", "sub", 600, 2).await;
    stack.publish("s", vec![event("a", "t")]).await;
    let mut consumer = Consumer::open(&stack, "s", "sub", 10).await;
    let mut client = stack.subscriber().await;
    for reason in ["first failure", "payments timed out"] {
        let got = consumer.take(1, WAIT).await;
        let nack = ModifyAckDeadlineRequest { ack_ids: ack_ids(&got), ack_deadline_seconds: 0, reason: reason.into() };
        assert!(client.modify_ack_deadline(nack).await.unwrap().into_inner().expired_ack_ids.is_empty());
    }
    let dead = || async { (dlq_len(&stack, "s", "sub") == ":1").then_some(()) };
    eventflow_e2e::eventually("max-attempts dead letter", WAIT, dead).await;
    let dlq = stack.redis.raw(&format!("XRANGE {} - +", stack.keys().dlq("s", "sub")));
    assert!(dlq.contains("max delivery attempts; last error: payments timed out"), "{dlq}");
    let errors = stack.redis.raw(&format!("EXISTS {}", stack.keys().errors("s", "sub")));
    assert_eq!(errors.trim(), ":0", "the last error is forgotten once dead-lettered");
    let long = ModifyAckDeadlineRequest { ack_ids: vec![], ack_deadline_seconds: 0, reason: "x".repeat(2000) };
    assert_eq!(client.modify_ack_deadline(long).await.unwrap_err().code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nine_thousand_ack_ids_settle_in_one_call() {
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    stack.create_subscription("s", "sub", 600, 0).await;
    for chunk in 0..9 {
        stack.publish("s", (0..1000).map(|i| event(&format!("e{chunk}-{i}"), "t")).collect()).await;
    }
    let mut consumer = Consumer::open(&stack, "s", "sub", 10_000).await;
    let got = consumer.take(9000, 3 * WAIT).await;
    let mut client = stack.subscriber().await;
    // A nack reason on one event makes the last-error hash exist, so acks must clear fields too.
    let nack = ModifyAckDeadlineRequest { ack_ids: ack_ids(&got[..1]), ack_deadline_seconds: 0, reason: "x".into() };
    client.modify_ack_deadline(nack).await.unwrap();
    let again = consumer.take(1, WAIT).await;
    let mut all = ack_ids(&got[1..]);
    all.extend(ack_ids(&again));
    let reply = client.acknowledge(AcknowledgeRequest { ack_ids: all }).await.unwrap().into_inner();
    assert!(reply.invalid_ack_ids.is_empty() && reply.expired_ack_ids.is_empty());
    let pending = stack.redis.raw(&format!("XPENDING {} sub", stack.keys().stream("s")));
    assert!(pending.starts_with("*4\r\n:0\r\n"), "{pending}");
    assert_eq!(stack.redis.raw(&format!("EXISTS {}", stack.keys().errors("s", "sub"))).trim(), ":0");
}

/// The `connected_clients` figure of the stack's redis-server.
fn redis_clients(stack: &Stack) -> usize {
    let info = stack.redis.raw("INFO clients");
    let line = info.lines().find(|l| l.starts_with("connected_clients:")).expect("connected_clients in INFO");
    line["connected_clients:".len()..].trim().parse().unwrap()
}

/// Idle sessions share a bounded set of Redis connections: 300 open Subscribe calls waiting for
/// events on a replica without blocking readers add at most its pool and its watcher, not one
/// each, and an event published then still reaches one of them at once (the watcher wakes it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_subscribe_calls_share_a_few_redis_connections() {
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    stack.create_subscription("s", "sub", 600, 0).await;
    // A replica without blocking readers: every idle session waits through the watcher.
    let url = stack.redis.url();
    let replica = start(Kind::Subscriber, &url, &stack.prefix, &["--blocking-readers", "0"]).await;
    let before = redis_clients(&stack);
    let client = SubscriberServiceClient::new(replica.channel().await);
    let mut consumers = Vec::new();
    for _ in 0..300 {
        consumers.push(Consumer::open_at(client.clone(), "s", "sub", 10).await);
    }
    // Let every session reach its idle wait (a few block periods).
    let mut peak = 0;
    for _ in 0..10 {
        peak = peak.max(redis_clients(&stack));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // At most the replica's pool (64) and its watcher, plus a little for the other services'
    // pools growing meanwhile (their background work); one per session would be 300.
    assert!(peak <= before + 64 + 1 + 20, "{before} clients before, {peak} with 300 idle sessions");

    stack.publish("s", vec![event("one", "t")]).await;
    let received = tokio::time::timeout(WAIT, async {
        let mut streams = tokio_stream::StreamMap::new();
        for (i, consumer) in consumers.iter_mut().enumerate() {
            streams.insert(i, &mut consumer.stream);
        }
        tokio_stream::StreamExt::next(&mut streams).await
    })
    .await
    .expect("an idle session got the event");
    let (_, batch) = received.unwrap();
    assert_eq!(batch.unwrap().events[0].event.as_ref().unwrap().id, "one");
}
