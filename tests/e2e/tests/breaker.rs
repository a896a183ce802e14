//! The circuit breaker: opens on failures, pauses delivery on every subscriber replica,
//! half-opens with a limited probe, closes on success.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use eventflow_e2e::{Consumer, Kind, Stack, event};
use eventflow_proto::v1::{
    AcknowledgeRequest, BreakerState, CircuitBreakerPolicy, DeadLetterPolicy, ModifyAckDeadlineRequest, ReceivedEvent,
    Subscription, subscriber_service_client::SubscriberServiceClient,
};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

const WAIT: Duration = Duration::from_secs(10);

/// Forwards a consumer's deliveries, tagged with its replica, into one channel.
fn forward(mut consumer: Consumer, replica: &'static str, tx: mpsc::UnboundedSender<(&'static str, ReceivedEvent)>) {
    tokio::spawn(async move {
        while let Some(Ok(batch)) = consumer.stream.next().await {
            for e in batch.events {
                let _ = tx.send((replica, e));
            }
        }
    });
}

async fn recv(
    rx: &mut mpsc::UnboundedReceiver<(&'static str, ReceivedEvent)>,
    n: usize,
) -> Vec<(&'static str, ReceivedEvent)> {
    let mut out = Vec::new();
    while out.len() < n {
        out.push(tokio::time::timeout(WAIT, rx.recv()).await.expect("delivery in time").unwrap());
    }
    out
}

async fn breaker_state(stack: &Stack) -> BreakerState {
    let state = stack.stats("s").await.subscriptions[0].breaker_state;
    BreakerState::try_from(state).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn breaker_opens_half_opens_and_closes_across_two_replicas() {
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    let breaker = CircuitBreakerPolicy {
        enabled: true,
        failure_ratio: 0.5,
        minimum_requests: 4,
        window: Some(prost_types::Duration { seconds: 10, nanos: 0 }),
        open_duration: Some(prost_types::Duration { seconds: 2, nanos: 0 }),
        half_open_probes: 1,
    };
    stack
        .create_subscription_with(Subscription {
            stream: "s".into(),
            name: "sub".into(),
            ack_deadline_seconds: 600,
            dead_letter_policy: Some(DeadLetterPolicy { max_delivery_attempts: 100 }),
            circuit_breaker: Some(breaker),
            ..Default::default()
        })
        .await;
    assert_eq!(breaker_state(&stack).await, BreakerState::Closed);

    let replica_b = stack.start_service(Kind::Subscriber, &[]).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    forward(Consumer::open(&stack, "s", "sub", 10).await, "a", tx.clone());
    let client_b = SubscriberServiceClient::new(replica_b.channel().await);
    forward(Consumer::open_at(client_b, "s", "sub", 10).await, "b", tx);

    stack.publish("s", (0..4).map(|i| event(&format!("e{i}"), "t")).collect()).await;
    let first = recv(&mut rx, 4).await;
    let ack_ids = first.iter().map(|(_, e)| e.ack_id.clone()).collect();
    let opened_at = Instant::now();
    let mut settle = stack.subscriber().await;
    settle
        .modify_ack_deadline(ModifyAckDeadlineRequest { ack_ids, ack_deadline_seconds: 0, reason: String::new() })
        .await
        .unwrap();
    assert_eq!(breaker_state(&stack).await, BreakerState::Open, "4 failures of 4 open it");

    // While open, neither replica delivers; then exactly one probe comes through.
    let probe = recv(&mut rx, 1).await;
    assert!(opened_at.elapsed() >= Duration::from_secs(2), "probe only after the open time");
    assert_eq!(probe[0].1.delivery_attempt, 2);
    assert_eq!(breaker_state(&stack).await, BreakerState::HalfOpen);
    assert!(tokio::time::timeout(Duration::from_millis(700), rx.recv()).await.is_err(), "one probe at a time");

    // A successful probe closes it; the other three follow, on either replica.
    settle.acknowledge(AcknowledgeRequest { ack_ids: vec![probe[0].1.ack_id.clone()] }).await.unwrap();
    let rest = recv(&mut rx, 3).await;
    assert_eq!(breaker_state(&stack).await, BreakerState::Closed);
    let mut ids: Vec<_> = rest.iter().chain(&probe).map(|(_, e)| e.event.as_ref().unwrap().id.clone()).collect();
    ids.sort();
    assert_eq!(ids, ["e0", "e1", "e2", "e3"]);
}

/// 200 concurrent settlement calls on a subscription with a breaker, far more than the
/// replica's 64 pooled Redis connections: none waits for a second connection while holding one,
/// so every call succeeds and every settlement applies exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_settlements_all_succeed() {
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    stack
        .create_subscription_with(Subscription {
            stream: "s".into(),
            name: "sub".into(),
            ack_deadline_seconds: 600,
            circuit_breaker: Some(CircuitBreakerPolicy { enabled: true, ..Default::default() }),
            ..Default::default()
        })
        .await;
    stack.publish("s", (0..200).map(|i| event(&format!("e{i}"), "t")).collect()).await;
    let mut consumer = Consumer::open(&stack, "s", "sub", 1000).await;
    let got = consumer.take(200, WAIT).await;
    let client = stack.subscriber().await;
    let calls = got.iter().enumerate().map(|(i, delivery)| {
        let mut client = client.clone();
        let ack_id = delivery.ack_id.clone();
        tokio::spawn(async move {
            if i % 4 == 0 {
                let request =
                    ModifyAckDeadlineRequest { ack_ids: vec![ack_id], ack_deadline_seconds: 5, reason: String::new() };
                let reply = client.modify_ack_deadline(request).await.map(|r| r.into_inner().expired_ack_ids);
                (i, reply)
            } else {
                let reply = client.acknowledge(AcknowledgeRequest { ack_ids: vec![ack_id] }).await;
                (i, reply.map(|r| r.into_inner().expired_ack_ids))
            }
        })
    });
    for call in futures_join(calls).await {
        let (i, reply) = call.unwrap();
        assert_eq!(reply.unwrap_or_else(|s| panic!("call {i}: {s:?}")), Vec::<String>::new(), "call {i} applied");
    }
    // 150 acked, 50 extended and still pending.
    let stats = stack.stats("s").await.subscriptions[0].clone();
    assert_eq!(stats.pending, 50, "{stats:?}");
}

/// Awaits every handle (in order).
async fn futures_join<T>(
    handles: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<Result<T, tokio::task::JoinError>> {
    let mut out = Vec::new();
    for handle in handles.collect::<Vec<_>>() {
        out.push(handle.await);
    }
    out
}
