//! At-least-once under churn: consumers on two subscriber replicas ack, nack or ignore events
//! (a fixed pseudo-random pattern), one consumer leaves midway, publishing runs concurrently.
//! Every published event must end up acknowledged exactly once, with nothing left pending.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use eventflow_e2e::{Consumer, Kind, Stack, event};
use eventflow_proto::v1::{
    AcknowledgeRequest, ModifyAckDeadlineRequest, subscriber_service_client::SubscriberServiceClient,
};
use eventflow_runtime::CancellationToken;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

const EVENTS: usize = 600;

/// What a consumer does with one delivery: mostly ack, sometimes nack, sometimes nothing (the
/// ack deadline then expires). Deterministic per event and attempt.
fn decide(id: &str, attempt: i32) -> &'static str {
    let h = id.bytes().fold(u32::try_from(attempt).unwrap(), |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    match h % 10 {
        0 => "nack",
        1 => "ignore",
        _ => "ack",
    }
}

/// Successful acks per event id.
type Acked = Arc<Mutex<HashMap<String, usize>>>;

/// Runs a consumer until `stop` (checked only between batches, so no settlement is cut off
/// half-way: an ack the server applied is always counted).
fn spawn_consumer(
    mut consumer: Consumer,
    mut settle: SubscriberServiceClient<Channel>,
    acked: Acked,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let batch = tokio::select! {
                () = stop.cancelled() => break,
                batch = consumer.stream.next() => batch,
            };
            let Some(Ok(batch)) = batch else { break };
            for e in batch.events {
                let id = e.event.as_ref().unwrap().id.clone();
                match decide(&id, e.delivery_attempt) {
                    "ack" => {
                        let reply = settle.acknowledge(AcknowledgeRequest { ack_ids: vec![e.ack_id] }).await.unwrap();
                        if reply.into_inner().expired_ack_ids.is_empty() {
                            *acked.lock().unwrap().entry(id).or_default() += 1;
                        }
                    }
                    "nack" => {
                        let nack = ModifyAckDeadlineRequest {
                            ack_ids: vec![e.ack_id],
                            ack_deadline_seconds: 0,
                            reason: String::new(),
                        };
                        settle.modify_ack_deadline(nack).await.unwrap();
                    }
                    _ => {}
                }
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_event_is_acknowledged_exactly_once_despite_nacks_expiries_and_churn() {
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    stack.create_subscription("s", "sub", 1, 100).await;
    let replica_b = stack.start_service(Kind::Subscriber, &[]).await;
    let client_b = SubscriberServiceClient::new(replica_b.channel().await);
    let acked: Acked = Arc::default();

    let (stay, leave) = (CancellationToken::new(), CancellationToken::new());
    let consumer = Consumer::open(&stack, "s", "sub", 20).await;
    let a1 = spawn_consumer(consumer, stack.subscriber().await, acked.clone(), stay.clone());
    let consumer = Consumer::open(&stack, "s", "sub", 20).await;
    let a2 = spawn_consumer(consumer, client_b.clone(), acked.clone(), stay.clone());
    let leaving = Consumer::open_at(client_b.clone(), "s", "sub", 20).await;
    let b = spawn_consumer(leaving, client_b, acked.clone(), leave.clone());

    let mut published = HashSet::new();
    for chunk in 0..(EVENTS / 50) {
        let events: Vec<_> = (0..50).map(|i| event(&format!("e{chunk}-{i}"), "t")).collect();
        for result in stack.publish("s", events).await {
            assert!(result.error.is_none());
            published.insert(result.event_id);
        }
        if chunk == EVENTS / 100 {
            leave.cancel(); // one consumer leaves midway: its unsettled events are released
        }
    }

    let done = || async {
        let acked = acked.lock().unwrap();
        published.iter().all(|id| acked.contains_key(id)).then_some(())
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while done().await.is_none() {
        if tokio::time::Instant::now() > deadline {
            let n = acked.lock().unwrap().len();
            let stats = stack.stats("s").await;
            let pending = stack.redis.raw(&format!("XPENDING {} sub - + 20", stack.keys().stream("s")));
            let consumers = stack.redis.raw(&format!("XINFO CONSUMERS {} sub", stack.keys().stream("s")));
            panic!("acked {n} of {EVENTS}; stats {stats:?}\npending {pending}\nconsumers {consumers}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let acked = acked.lock().unwrap().clone();
    let twice: Vec<_> = acked.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "acknowledged more than once: {twice:?}");
    assert_eq!(acked.len(), EVENTS);
    let sub = &stack.stats("s").await.subscriptions[0];
    assert_eq!((sub.lag, sub.pending, sub.dead_letter_depth), (0, 0, 0), "{sub:?}");
    stay.cancel();
    for task in [a1, a2, b] {
        task.await.unwrap();
    }
}
