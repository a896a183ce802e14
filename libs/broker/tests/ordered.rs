//! Ordered subscriptions against real Redis (libs/testkit: one redis-server, and a 3-master
//! cluster; a unique key prefix per test): events of one ordering key are delivered one at a
//! time in publish order, a nack redelivers the same event first, other keys and keyless events
//! are not held back, a dead-lettered event lets its key move on and names the key, a requeue
//! puts it back at the head of its key, and `ordered` is fixed at creation. The mixed test runs
//! two replicas (brokers with sessions of their own) with random nacks, ignored deliveries
//! whose ack deadline expires, rejected events and a session dropped mid-way, and checks that
//! each key's first successful acknowledgements follow publish order.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{PATIENCE, deliveries, options};

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use eventflow_broker::{
    Broker, BrokerError, Delivery, FlowControl, NewEvent, Position, Session, StreamConfig, SubscriptionConfig,
};
use eventflow_testkit::{RedisServer, cluster::RedisCluster, unique_prefix};
use tokio::sync::Mutex;

/// Creates `stream` and its ordered subscription `sub` (from the start, as `edit` sets it up).
async fn ordered(broker: &Broker, stream: &str, edit: impl FnOnce(&mut SubscriptionConfig)) {
    broker.create_stream(&StreamConfig::new(stream)).await.unwrap();
    let mut config = SubscriptionConfig::new(stream, "sub");
    config.ordered = true;
    edit(&mut config);
    broker.create_subscription(&config, &Position::Earliest).await.unwrap();
}

/// Publishes events `(name, ordering key)` (the payload is the name; '' = no key).
async fn publish(broker: &Broker, stream: &str, events: &[(&str, &str)]) {
    let events = events
        .iter()
        .map(|(name, key)| NewEvent {
            id: (*name).to_string(),
            event_type: "t".into(),
            payload: name.as_bytes().to_vec(),
            traceparent: String::new(),
            ordering_key: (*key).to_string(),
        })
        .collect();
    broker.publish(stream, events).await.unwrap();
}

fn name(d: &Delivery) -> String {
    String::from_utf8_lossy(&d.payload).into_owned()
}

fn names(batch: &[Delivery]) -> Vec<String> {
    let mut names: Vec<String> = batch.iter().map(name).collect();
    names.sort();
    names
}

/// The next non-empty batch (within [`PATIENCE`]).
async fn next(session: &mut Session) -> Vec<Delivery> {
    deliveries(session, 1).await
}

/// Asserts that no batch brings anything for a while (the held events stay held).
async fn nothing_more(session: &mut Session) {
    for _ in 0..3 {
        let batch = session.next_batch().await.unwrap();
        assert!(batch.is_empty(), "unexpected deliveries {:?}", names(&batch));
    }
}

#[tokio::test]
async fn a_key_gets_one_event_at_a_time_in_order_and_a_nack_redelivers_the_same_one() {
    let redis = RedisServer::start();
    let broker = Broker::new(&redis.url(), options(&unique_prefix())).unwrap();
    ordered(&broker, "s", |_| {}).await;
    publish(&broker, "s", &[("a1", "a"), ("b1", "b"), ("a2", "a"), ("x1", ""), ("a3", "a"), ("x2", "")]).await;
    let mut session = Session::open(&broker, "s", "sub", FlowControl::default()).await.unwrap();

    // Other keys and keyless events are not held back by key a.
    let first = next(&mut session).await;
    assert_eq!(names(&first), ["a1", "b1", "x1", "x2"]);
    assert!(first.iter().all(|d| d.attempt == 1));
    nothing_more(&mut session).await;
    let stats = broker.stream_stats("s").await.unwrap().subscriptions.remove(0);
    assert!(stats.ordered);
    assert_eq!((stats.keys_blocked, stats.ordered_waiting), (1, 2), "{stats:?}");

    // The head's ack lets the next one of its key through, as a first delivery.
    let by_name: HashMap<String, &Delivery> = first.iter().map(|d| (name(d), d)).collect();
    broker.acknowledge(&[by_name["a1"].ack_id.clone(), by_name["b1"].ack_id.clone()]).await.unwrap();
    let second = next(&mut session).await;
    assert_eq!(names(&second), ["a2"]);
    assert_eq!(second[0].attempt, 1);

    // A nack redelivers that same event, never the next one.
    broker.modify_ack_deadline(&[second[0].ack_id.clone()], 0, "try again").await.unwrap();
    let again = next(&mut session).await;
    assert_eq!(names(&again), ["a2"]);
    assert_eq!(again[0].attempt, 2);
    broker.acknowledge(&[again[0].ack_id.clone()]).await.unwrap();
    let third = next(&mut session).await;
    assert_eq!(names(&third), ["a3"]);
    broker.acknowledge(&[third[0].ack_id.clone()]).await.unwrap();

    let stats = broker.stream_stats("s").await.unwrap().subscriptions.remove(0);
    assert_eq!((stats.keys_blocked, stats.ordered_waiting, stats.oldest_blocked_age_ms), (0, 0, 0), "{stats:?}");

    // Fixed at creation.
    let mut config = broker.get_subscription("s", "sub").await.unwrap();
    config.ordered = false;
    match broker.update_subscription(&config).await {
        Err(BrokerError::FailedPrecondition(m)) => assert!(m.contains("subscription.ordered"), "{m}"),
        other => panic!("expected FailedPrecondition, got {other:?}"),
    }
    config.ordered = true;
    config.ack_deadline = Duration::from_secs(7);
    assert_eq!(broker.update_subscription(&config).await.unwrap().ack_deadline, Duration::from_secs(7));
}

#[tokio::test]
async fn a_dead_lettered_event_lets_its_key_move_on_and_a_requeue_puts_it_back_at_the_head() {
    let redis = RedisServer::start();
    let broker = Broker::new(&redis.url(), options(&unique_prefix())).unwrap();
    ordered(&broker, "s", |_| {}).await;
    publish(&broker, "s", &[("a1", "a"), ("a2", "a"), ("a3", "a")]).await;
    let mut session = Session::open(&broker, "s", "sub", FlowControl::default()).await.unwrap();

    let first = next(&mut session).await;
    assert_eq!(names(&first), ["a1"]);
    broker.reject(&[first[0].ack_id.clone()], "poison").await.unwrap();
    let second = next(&mut session).await;
    assert_eq!(names(&second), ["a2"], "the key moved on");

    let (letters, _) = broker.list_dead_letters("s", "sub", 10, "").await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!((letters[0].ordering_key.as_str(), letters[0].reason.as_str()), ("a", "poison"));

    // Requeued while a2 is in flight: it waits, and goes before a3.
    let (moved, _) = broker.requeue_dead_letters("s", "sub", &[letters[0].id.clone()]).await.unwrap();
    assert_eq!(moved, 1);
    nothing_more(&mut session).await;
    broker.acknowledge(&[second[0].ack_id.clone()]).await.unwrap();
    let requeued = next(&mut session).await;
    assert_eq!(names(&requeued), ["a1"]);
    assert_eq!(requeued[0].attempt, 1);
    nothing_more(&mut session).await;
    broker.acknowledge(&[requeued[0].ack_id.clone()]).await.unwrap();
    let last = next(&mut session).await;
    assert_eq!(names(&last), ["a3"]);

    // Requeued while its key is free: it is the key's head at once, ahead of later events.
    broker.reject(&[last[0].ack_id.clone()], "poison").await.unwrap();
    publish(&broker, "s", &[("a4", "a")]).await;
    let (letters, _) = broker.list_dead_letters("s", "sub", 10, "").await.unwrap();
    broker.requeue_dead_letters("s", "sub", &[letters[0].id.clone()]).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        let batch = next(&mut session).await;
        assert_eq!(batch.len(), 1, "{:?}", names(&batch));
        got.push(name(&batch[0]));
        broker.acknowledge(&[batch[0].ack_id.clone()]).await.unwrap();
    }
    assert_eq!(got, ["a3", "a4"]);
}

#[tokio::test]
async fn retention_that_removes_a_head_and_a_waiting_entry_lets_the_key_move_on() {
    let redis = RedisServer::start();
    let broker = Broker::new(&redis.url(), options(&unique_prefix())).unwrap();
    broker.create_stream(&StreamConfig::new("s")).await.unwrap();
    let config = SubscriptionConfig { ordered: true, ..SubscriptionConfig::new("s", "sub") };
    broker.create_subscription(&config, &Position::Earliest).await.unwrap();
    publish(&broker, "s", &[("a1", "a"), ("a2", "a"), ("a3", "a"), ("a4", "a")]).await;
    let mut session = Session::open(&broker, "s", "sub", FlowControl::default()).await.unwrap();
    assert_eq!(names(&next(&mut session).await), ["a1"]);

    // a1 (the head, in flight) and a2 (waiting) go: both dead-lettered, and a3 is next.
    broker.update_stream(&StreamConfig { max_len: 2, ..StreamConfig::new("s") }).await.unwrap();
    let trimmed = broker.trim_stream("s").await.unwrap();
    assert_eq!((trimmed.removed, trimmed.dead_lettered), (2, 2));
    let third = next(&mut session).await;
    assert_eq!(names(&third), ["a3"]);
    assert_eq!(third[0].attempt, 1);
    broker.acknowledge(&[third[0].ack_id.clone()]).await.unwrap();
    assert_eq!(names(&next(&mut session).await), ["a4"]);
    let (letters, _) = broker.list_dead_letters("s", "sub", 10, "").await.unwrap();
    assert!(letters.iter().all(|d| d.ordering_key == "a" && d.reason == "retention"), "{letters:?}");
}

/// What the replicas of the mixed test record: per key, the events in the order their first
/// successful acknowledgement applied; the first attempt each event was delivered with.
#[derive(Default)]
struct Log {
    acked: BTreeMap<String, Vec<String>>,
    keyless: Vec<String>,
    first_attempt: HashMap<String, u32>,
}

/// A small deterministic random source (no dependency for a test).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// One replica: settles what its session delivers — rejects the poison events, nacks some,
/// ignores some (their ack deadline expires), acks the rest — until `done`; with `drop_after`
/// it drops its session (without closing it) after that many batches and opens a new one.
async fn replica(broker: Broker, stream: String, log: Arc<Mutex<Log>>, seed: u64, drop_after: Option<usize>) {
    let poison = |name: &str| name.ends_with("-p");
    let mut rng = Lcg(seed);
    let flow = FlowControl { max_messages: 20, ..FlowControl::default() };
    let mut session = Session::open(&broker, &stream, "sub", flow).await.unwrap();
    let mut batches = 0;
    loop {
        if log.lock().await.acked.contains_key("done") {
            return;
        }
        let batch = session.next_batch().await.unwrap();
        batches += 1;
        for d in &batch {
            log.lock().await.first_attempt.entry(name(d)).or_insert(d.attempt);
        }
        if drop_after == Some(batches) {
            // Killed: its unsettled deliveries come back after their ack deadline.
            drop(session);
            session = Session::open(&broker, &stream, "sub", flow).await.unwrap();
            continue;
        }
        for d in batch {
            let event = name(&d);
            if poison(&event) {
                broker.reject(std::slice::from_ref(&d.ack_id), "poison").await.unwrap();
                continue;
            }
            match rng.below(10) {
                0 | 1 => {
                    broker.modify_ack_deadline(std::slice::from_ref(&d.ack_id), 0, "").await.unwrap();
                }
                2 => {} // ignored: redelivered after the ack deadline
                _ => {
                    // The lock spans the ack, so the log's order is the order acks applied.
                    let mut log = log.lock().await;
                    let settled = broker.acknowledge(std::slice::from_ref(&d.ack_id)).await.unwrap();
                    if !settled.applied.is_empty() {
                        match event.split_once('-') {
                            Some((key, _)) => log.acked.entry(key.to_string()).or_default().push(event),
                            None => log.keyless.push(event),
                        }
                    }
                }
            }
        }
    }
}

/// The mixed test on the brokers `replicas` (sharing one prefix): `keys` keys of `per_key`
/// events each (every fifth of key 0 and the third of every key poison), interleaved, and up
/// to 10 keyless events.
async fn mixed(publisher: &Broker, replicas: [Broker; 2], stream: &str, keys: usize, per_key: usize) {
    ordered(publisher, stream, |c| {
        c.ack_deadline = Duration::from_secs(1);
        c.max_delivery_attempts = 100;
    })
    .await;
    let mut events: Vec<(String, String)> = Vec::new();
    for i in 0..per_key {
        for k in 0..keys {
            let poison = i == 2 || (k == 0 && i % 5 == 4);
            let name = format!("k{k:02}-{i:03}{}", if poison { "-p" } else { "" });
            events.push((name, format!("k{k:02}")));
        }
        if i < 10 {
            events.push((format!("x{i}"), String::new()));
        }
    }
    for chunk in events.chunks(50) {
        let chunk: Vec<(&str, &str)> = chunk.iter().map(|(n, k)| (n.as_str(), k.as_str())).collect();
        publish(publisher, stream, &chunk).await;
    }
    let log = Arc::new(Mutex::new(Log::default()));
    let [one, two] = replicas;
    let a = tokio::spawn(replica(one, stream.to_string(), log.clone(), 7, Some(3)));
    let b = tokio::spawn(replica(two, stream.to_string(), log.clone(), 11, None));

    let mut expected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut poison = HashSet::new();
    for (name, key) in &events {
        if name.ends_with("-p") {
            poison.insert(name.clone());
        } else if !key.is_empty() {
            expected.entry(key.clone()).or_default().push(name.clone());
        }
    }
    let keyless = per_key.min(10);
    let total: usize = expected.values().map(Vec::len).sum::<usize>() + keyless;
    let start = Instant::now();
    loop {
        let done = {
            let log = log.lock().await;
            log.acked.values().map(Vec::len).sum::<usize>() + log.keyless.len() >= total
        };
        if done {
            break;
        }
        if start.elapsed() > PATIENCE * 3 {
            let log = log.lock().await;
            let counts: Vec<(String, usize)> = log.acked.iter().map(|(k, v)| (k.clone(), v.len())).collect();
            let stats = publisher.stream_stats(stream).await.unwrap();
            panic!("not everything was acknowledged in time: {counts:?} keyless {:?}; {stats:?}", log.keyless);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    log.lock().await.acked.insert("done".into(), Vec::new());
    a.await.unwrap();
    b.await.unwrap();

    let mut log = Arc::try_unwrap(log).ok().unwrap().into_inner();
    log.acked.remove("done");
    assert_eq!(log.acked, expected, "per key, first successful acks follow publish order");
    log.keyless.sort();
    assert_eq!(log.keyless, (0..keyless).map(|i| format!("x{i}")).collect::<Vec<_>>());
    let repeated: Vec<_> = log.first_attempt.iter().filter(|(_, a)| **a != 1).collect();
    assert!(repeated.is_empty(), "every event's first delivery is attempt 1: {repeated:?}");

    let (letters, _) = publisher.list_dead_letters(stream, "sub", 1000, "").await.unwrap();
    let dead: HashSet<String> = letters.iter().map(|d| String::from_utf8_lossy(&d.payload).into_owned()).collect();
    assert_eq!(dead, poison);
    assert!(letters.iter().all(|d| d.payload.starts_with(d.ordering_key.as_bytes()) && !d.ordering_key.is_empty()));
    let stats = publisher.stream_stats(stream).await.unwrap().subscriptions.remove(0);
    assert_eq!((stats.keys_blocked, stats.ordered_waiting, stats.pending), (0, 0, 0), "{stats:?}");
    assert!(stats.consumers.iter().all(|c| c.name.starts_with("c-")), "{stats:?}");
}

#[tokio::test]
async fn two_replicas_with_nacks_expiries_rejects_and_a_killed_session_keep_each_keys_order() {
    let redis = RedisServer::start();
    let prefix = unique_prefix();
    let broker = || Broker::new(&redis.url(), options(&prefix)).unwrap();
    mixed(&broker(), [broker(), broker()], "s", 12, 12).await;
}

#[tokio::test]
async fn ordering_holds_on_a_three_master_cluster() {
    let cluster = RedisCluster::start(3, 0);
    let prefix = unique_prefix();
    let broker = || Broker::cluster(&cluster.urls(), options(&prefix)).unwrap();
    mixed(&broker(), [broker(), broker()], "alpha", 8, 8).await;
}
