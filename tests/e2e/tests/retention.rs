//! Retention accounts for every event: what it removes before a subscription settled it is
//! dead-lettered there (reason `retention`), or with the DROP policy counted per subscription
//! in stats and metrics; settling a removed event reports its ack id as expired. The dead-letter
//! queue's cap drops the oldest dead letters, counted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{collections::BTreeSet, time::Duration};

use eventflow_e2e::{Consumer, Stack, event, eventually, wait_for_metric};
use eventflow_proto::v1::{
    AcknowledgeRequest, CreateStreamRequest, DeadLetter, ListDeadLettersRequest, RejectRequest, RetentionPolicy,
    Stream, SubscriptionStats, UnsettledEventAction,
};

const WAIT: Duration = Duration::from_secs(20);

async fn create_stream(stack: &Stack, name: &str, max_length: i64, max_age_secs: i64, action: UnsettledEventAction) {
    let retention = RetentionPolicy {
        max_length,
        max_age: (max_age_secs > 0).then_some(prost_types::Duration { seconds: max_age_secs, nanos: 0 }),
        unsettled_events: action.into(),
    };
    let stream = Stream { name: name.into(), retention: Some(retention), ..Default::default() };
    stack.admin().await.create_stream(CreateStreamRequest { stream: Some(stream) }).await.unwrap();
}

async fn sub_stats(stack: &Stack, stream: &str, sub: &str) -> SubscriptionStats {
    stack.stats(stream).await.subscriptions.into_iter().find(|s| s.subscription == sub).unwrap()
}

/// Every dead letter of a subscription (pages of 1000).
async fn dead_letters(stack: &Stack, stream: &str, sub: &str) -> Vec<DeadLetter> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = ListDeadLettersRequest {
            stream: stream.into(),
            subscription: sub.into(),
            page_size: 1000,
            page_token: page_token.clone(),
        };
        let page = stack.dlq().await.list_dead_letters(request).await.unwrap().into_inner();
        all.extend(page.dead_letters);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

/// Publishes `n` events with ids `<prefix><i>` in batches of 100.
async fn publish_many(stack: &Stack, stream: &str, prefix: &str, n: usize) -> Vec<String> {
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
    for chunk in ids.chunks(100) {
        stack.publish(stream, chunk.iter().map(|id| event(id, "t")).collect()).await;
    }
    ids
}

#[tokio::test]
async fn retention_dead_letters_held_and_undelivered_events_and_their_ack_ids_expire() {
    let stack = Stack::start().await;
    create_stream(&stack, "orders", 100, 0, UnsettledEventAction::Unspecified).await;
    stack.create_subscription("orders", "billing", 600, 0).await;
    let mut published = publish_many(&stack, "orders", "a", 50).await;
    let mut consumer = Consumer::open(&stack, "orders", "billing", 50).await;
    let held = consumer.take(50, WAIT).await;
    published.extend(publish_many(&stack, "orders", "b", 1000).await);

    // The stream is cut back to its 100 newest; everything else went to billing's DLQ.
    let stats = eventually("trimmed to 100", WAIT, || async {
        let stats = stack.stats("orders").await;
        (stats.length == 100).then_some(stats)
    })
    .await;
    let billing = stats.subscriptions.iter().find(|s| s.subscription == "billing").unwrap();
    assert_eq!(billing.retention_dead_lettered, 950);
    assert_eq!(billing.retention_dropped, 0);
    let letters = dead_letters(&stack, "orders", "billing").await;
    assert_eq!(letters.len(), 950);
    assert!(letters.iter().all(|d| d.reason == "retention"), "{:?}", letters[0].reason);
    let held_ids: BTreeSet<String> = held.iter().map(|e| e.event.as_ref().unwrap().id.clone()).collect();
    // The held ones carry their delivery; the others were never delivered, or delivered once
    // (the trim ended the held deliveries, so the session took more before those were trimmed
    // in turn).
    for letter in &letters {
        let id = letter.event.as_ref().unwrap().id.clone();
        let expected = if held_ids.contains(&id) { 1..=1 } else { 0..=1 };
        assert!(expected.contains(&letter.delivery_attempts), "{id}: {}", letter.delivery_attempts);
    }
    // Nothing lost: each published event is in the stream or in the DLQ, exactly once.
    let mut accounted: Vec<String> = letters.iter().map(|d| d.event.as_ref().unwrap().id.clone()).collect();
    accounted.extend(published[published.len() - 100..].iter().cloned());
    accounted.sort();
    let mut all = published.clone();
    all.sort();
    assert_eq!(accounted, all);

    // The held ack ids are over: acknowledge and reject report them expired, never applied.
    let mut subscriber = stack.subscriber().await;
    let acked = subscriber.acknowledge(AcknowledgeRequest { ack_ids: vec![held[0].ack_id.clone()] }).await.unwrap();
    assert_eq!(acked.into_inner().expired_ack_ids, [held[0].ack_id.clone()]);
    let reject = RejectRequest { ack_ids: vec![held[1].ack_id.clone()], reason: "bad".into() };
    assert_eq!(subscriber.reject(reject).await.unwrap().into_inner().expired_ack_ids, [held[1].ack_id.clone()]);
    assert_eq!(dead_letters(&stack, "orders", "billing").await.len(), 950, "no second dead letter");

    // Operators see it on /metrics too.
    let labels = [("stream", "orders"), ("subscription", "billing")];
    wait_for_metric(&stack.admin, "eventflow_retention_dead_lettered_total", &labels, 950.0).await;
}

#[tokio::test]
async fn the_drop_policy_counts_unsettled_events_per_subscription() {
    let stack = Stack::start().await;
    create_stream(&stack, "clicks", 10, 0, UnsettledEventAction::Drop).await;
    stack.create_subscription("clicks", "fast", 600, 0).await;
    stack.create_subscription("clicks", "slow", 600, 0).await;
    publish_many(&stack, "clicks", "a", 10).await;
    let mut fast = Consumer::open(&stack, "clicks", "fast", 100).await;
    let got = fast.take(10, WAIT).await;
    let ack_ids = got.iter().map(|e| e.ack_id.clone()).collect();
    stack.subscriber().await.acknowledge(AcknowledgeRequest { ack_ids }).await.unwrap();
    drop(fast);
    publish_many(&stack, "clicks", "b", 490).await;

    eventually("trimmed to 10", WAIT, || async { (stack.stats("clicks").await.length == 10).then_some(()) }).await;
    // 490 removed: "slow" settled none of them; "fast" had settled the first 10 (and the
    // session that read them is closed, so it holds nothing).
    assert_eq!(sub_stats(&stack, "clicks", "slow").await.retention_dropped, 490);
    assert_eq!(sub_stats(&stack, "clicks", "fast").await.retention_dropped, 480);
    assert!(dead_letters(&stack, "clicks", "slow").await.is_empty(), "dropped, not dead-lettered");
    let labels = [("stream", "clicks"), ("subscription", "slow")];
    wait_for_metric(&stack.admin, "eventflow_retention_dropped_total", &labels, 490.0).await;
}

#[tokio::test]
async fn age_retention_in_the_background_trimmer_dead_letters_held_events() {
    let stack = Stack::start().await;
    create_stream(&stack, "aged", 0, 1, UnsettledEventAction::DeadLetter).await;
    stack.create_subscription("aged", "worker", 600, 0).await;
    publish_many(&stack, "aged", "e", 20).await;
    let mut consumer = Consumer::open(&stack, "aged", "worker", 100).await;
    let held = consumer.take(20, WAIT).await;
    // Nobody publishes: the admin's trimmer (every second in tests) removes them once 1 s old.
    eventually("age trim", WAIT, || async { (stack.stats("aged").await.length == 0).then_some(()) }).await;
    let letters = dead_letters(&stack, "aged", "worker").await;
    assert_eq!(letters.len(), 20);
    assert!(letters.iter().all(|d| d.reason == "retention" && d.delivery_attempts == 1 && !d.consumer.is_empty()));
    let ack_ids: Vec<String> = held.iter().map(|e| e.ack_id.clone()).collect();
    let acked = stack.subscriber().await.acknowledge(AcknowledgeRequest { ack_ids }).await.unwrap().into_inner();
    assert_eq!(acked.expired_ack_ids.len(), 20);
}

#[tokio::test]
async fn the_dead_letter_queue_cap_drops_the_oldest_and_counts_them() {
    let stack = Stack::start_with(&["--dlq-max-length", "5"]).await;
    stack.create_stream("s").await;
    stack.create_subscription("s", "sub", 600, 0).await;
    publish_many(&stack, "s", "e", 12).await;
    let mut consumer = Consumer::open(&stack, "s", "sub", 100).await;
    let got = consumer.take(12, WAIT).await;
    for delivery in &got {
        let reject = RejectRequest { ack_ids: vec![delivery.ack_id.clone()], reason: "bad".into() };
        stack.subscriber().await.reject(reject).await.unwrap();
    }
    let letters = dead_letters(&stack, "s", "sub").await;
    let ids: Vec<String> = letters.iter().map(|d| d.event.as_ref().unwrap().id.clone()).collect();
    assert_eq!(ids, ["e11", "e10", "e9", "e8", "e7"], "the newest five, newest first");
    let stats = sub_stats(&stack, "s", "sub").await;
    assert_eq!((stats.dead_letter_depth, stats.dead_letters_overflowed), (5, 7));
    let labels = [("stream", "s"), ("subscription", "sub")];
    wait_for_metric(&stack.admin, "eventflow_dlq_overflow_total", &labels, 7.0).await;
}
