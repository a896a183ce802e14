//! The broker on a real 3-master Redis Cluster (libs/testkit's `RedisCluster`, a unique key
//! prefix per test): streams whose hash tags fall on different slots (and so, mostly, on
//! different masters) are created, published to in one group commit, read, acknowledged in one
//! settlement call that spans slots, nacked and redelivered, dead-lettered, counted by stats and
//! deleted with their sweep; idle sessions are woken by a publish through their own blocking
//! reader (a connection to the stream's node) and through the broker's watcher (which polls on
//! a cluster); a session whose stream's master fails over (a coordinated `CLUSTER FAILOVER`)
//! goes on reading from the promoted replica; sessions read natively while the stream's size
//! mark allows (its `MULTI` of mark and entries runs on the stream's node) and never past their
//! byte budget when the mark rises between two reads; acks report per-id outcomes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{PATIENCE, deliveries};

use std::time::{Duration, Instant};

use eventflow_broker::{
    Broker, BrokerOptions, Delivery, EvictionPolicy, FlowControl, LayoutCheck, NewEvent, Order, Position, ServerState,
    Session, StreamConfig, SubscriptionConfig,
};
use eventflow_testkit::{cluster::RedisCluster, unique_prefix};

/// Streams of the tests: their tags hash to different slots (checked by [`slots`]).
const STREAMS: [&str; 4] = ["alpha", "bravo", "charlie", "delta"];

/// A broker on `cluster` under a prefix of its own, with short waits so empty batches return
/// soon; `edit` adjusts the options.
fn broker(cluster: &RedisCluster, edit: impl FnOnce(&mut BrokerOptions)) -> Broker {
    let mut options = BrokerOptions {
        prefix: unique_prefix(),
        block: Duration::from_millis(100),
        capacity_poll: Duration::from_millis(20),
        ..BrokerOptions::default()
    };
    edit(&mut options);
    Broker::cluster(&cluster.urls(), options).unwrap()
}

/// Creates `stream` and its subscription `sub` (from the start, as `edit` sets it up).
async fn subscription(broker: &Broker, stream: &str, edit: impl FnOnce(&mut SubscriptionConfig)) {
    broker.create_stream(&StreamConfig::new(stream)).await.unwrap();
    let mut config = SubscriptionConfig::new(stream, "sub");
    edit(&mut config);
    broker.create_subscription(&config, &Position::Earliest).await.unwrap();
}

/// Event `name` (its payload repeats the name).
fn event(name: &str) -> NewEvent {
    NewEvent {
        id: name.to_string(),
        event_type: "t".into(),
        payload: name.as_bytes().to_vec(),
        traceparent: String::new(),
        ordering_key: String::new(),
    }
}

fn payloads(batch: &[Delivery]) -> Vec<String> {
    batch.iter().map(|d| String::from_utf8_lossy(&d.payload).into_owned()).collect()
}

/// The hash slots of the streams' keys, as the cluster computes them.
async fn slots(broker: &Broker, streams: &[&str]) -> Vec<i64> {
    let mut conn = broker.conn().await.unwrap();
    let mut slots = Vec::new();
    for stream in streams {
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(broker.keys().stream(stream))
            .query_async(&mut conn)
            .await
            .unwrap();
        slots.push(slot);
    }
    slots
}

#[tokio::test]
async fn streams_on_several_slots_publish_deliver_and_settle_in_one_call() {
    let cluster = RedisCluster::start(3, 0);
    let broker = broker(&cluster, |_| {});
    let mut distinct = slots(&broker, &STREAMS).await;
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), STREAMS.len(), "the test needs streams on different slots");
    for stream in STREAMS {
        subscription(&broker, stream, |_| {}).await;
    }

    // Queued together, so group commits hold calls of several streams (several slots).
    let mut pending = Vec::new();
    for stream in STREAMS {
        let events = (1..=3).map(|i| event(&format!("{stream}-{i}"))).collect();
        pending.push(broker.enqueue_publish(stream, events, Order::Any).await.unwrap());
    }
    for p in pending {
        let published = p.outcome().await.unwrap();
        assert!(published.iter().all(|p| !p.duplicate), "{published:?}");
    }
    // A duplicate is found on its stream's node.
    let again = broker.publish("bravo", vec![event("bravo-2")]).await.unwrap();
    assert!(again[0].duplicate, "{again:?}");

    let mut ack_ids = Vec::new();
    let mut sessions = Vec::new();
    for stream in STREAMS {
        let mut session = Session::open(&broker, stream, "sub", FlowControl::default()).await.unwrap();
        let batch = deliveries(&mut session, 3).await;
        assert_eq!(payloads(&batch), [1, 2, 3].map(|i| format!("{stream}-{i}")));
        ack_ids.extend(batch.iter().map(|d| d.ack_id.clone()));
        sessions.push(session);
    }
    // One settlement call over every stream: one pipeline per slot.
    let settled = broker.acknowledge(&ack_ids).await.unwrap();
    assert!(settled.invalid.is_empty() && settled.expired.is_empty(), "{settled:?}");

    for stream in STREAMS {
        let stats = broker.stream_stats(stream).await.unwrap();
        assert_eq!(stats.length, 3, "{stats:?}");
        let sub = &stats.subscriptions[0];
        assert_eq!((sub.lag, sub.pending, sub.dead_letters), (0, 0, 0), "{stats:?}");
    }
    for session in sessions {
        assert_eq!(session.close().await.unwrap(), 0);
    }
    let (names, more) = broker.list_stream_names("", 10).await.unwrap();
    assert_eq!((names.len(), more), (STREAMS.len(), false), "{names:?}");
}

#[tokio::test]
async fn a_nacked_event_is_redelivered_then_dead_lettered() {
    let cluster = RedisCluster::start(3, 0);
    let broker = broker(&cluster, |_| {});
    for stream in ["alpha", "bravo"] {
        subscription(&broker, stream, |c| c.max_delivery_attempts = 2).await;
        broker.publish(stream, vec![event(&format!("{stream}-1"))]).await.unwrap();
    }
    let mut alpha = Session::open(&broker, "alpha", "sub", FlowControl::default()).await.unwrap();
    let mut bravo = Session::open(&broker, "bravo", "sub", FlowControl::default()).await.unwrap();
    let a1 = deliveries(&mut alpha, 1).await;
    let b1 = deliveries(&mut bravo, 1).await;
    assert_eq!((a1[0].attempt, b1[0].attempt), (1, 1));

    // Nacks of two streams in one call; both come back as attempt 2.
    let nacked = broker.modify_ack_deadline(&[a1[0].ack_id.clone(), b1[0].ack_id.clone()], 0, "later").await.unwrap();
    assert!(nacked.invalid.is_empty() && nacked.expired.is_empty(), "{nacked:?}");
    let a2 = deliveries(&mut alpha, 1).await;
    let b2 = deliveries(&mut bravo, 1).await;
    assert_eq!((a2[0].entry_id.as_str(), a2[0].attempt), (a1[0].entry_id.as_str(), 2));
    assert_eq!((b2[0].entry_id.as_str(), b2[0].attempt), (b1[0].entry_id.as_str(), 2));

    // alpha's at its last attempt: a nack dead-letters it at the next claim; bravo's is rejected.
    broker.modify_ack_deadline(&[a2[0].ack_id.clone()], 0, "failed again").await.unwrap();
    broker.reject(&[b2[0].ack_id.clone()], "poison").await.unwrap();
    let start = Instant::now();
    loop {
        assert!(alpha.next_batch().await.unwrap().is_empty(), "not delivered a third time");
        let (letters, _) = broker.list_dead_letters("alpha", "sub", 10, "").await.unwrap();
        if !letters.is_empty() {
            assert_eq!((letters[0].entry_id.as_str(), letters[0].attempts), (a1[0].entry_id.as_str(), 2));
            break;
        }
        assert!(start.elapsed() < PATIENCE, "alpha's event was never dead-lettered");
    }
    let (letters, _) = broker.list_dead_letters("bravo", "sub", 10, "").await.unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].reason, "poison");
    for stream in ["alpha", "bravo"] {
        let stats = broker.stream_stats(stream).await.unwrap();
        assert_eq!((stats.subscriptions[0].pending, stats.subscriptions[0].dead_letters), (0, 1), "{stats:?}");
    }
    // Requeued, it is delivered again on the node of its stream.
    assert_eq!(broker.requeue_all_dead_letters("bravo", "sub").await.unwrap(), 1);
    let b3 = deliveries(&mut bravo, 1).await;
    assert_eq!(payloads(&b3), ["bravo-1"]);
    alpha.close().await.unwrap();
    bravo.close().await.unwrap();
}

/// Opens a session on `stream` and checks that, while it waits for new entries (with a block
/// time and reclaim interval far beyond [`PATIENCE`], so only a wake-up can end the wait), a
/// publish wakes it.
async fn woken_by_a_publish(broker: &Broker, stream: &str) {
    subscription(broker, stream, |_| {}).await;
    let mut session = Session::open(broker, stream, "sub", FlowControl::default()).await.unwrap();
    let publish = async {
        broker.publish(stream, vec![event("wake")]).await.unwrap();
    };
    let read = tokio::time::timeout(PATIENCE, async {
        let mut got = Vec::new();
        while got.is_empty() {
            got = session.next_batch().await.unwrap();
        }
        got
    });
    let (read, ()) = tokio::join!(read, publish);
    let batch = read.expect("the idle session was not woken by the publish");
    assert_eq!(payloads(&batch), ["wake"]);
    broker.acknowledge(&[batch[0].ack_id.clone()]).await.unwrap();
    session.close().await.unwrap();
}

#[tokio::test]
async fn an_idle_session_with_its_own_reader_is_woken_by_a_publish() {
    let cluster = RedisCluster::start(3, 0);
    let broker = broker(&cluster, |o| {
        o.block = Duration::from_secs(600);
        o.reclaim_interval = Duration::from_secs(600);
    });
    for stream in STREAMS {
        woken_by_a_publish(&broker, stream).await;
    }
}

#[tokio::test]
async fn idle_sessions_without_a_reader_are_woken_through_the_watcher() {
    let cluster = RedisCluster::start(3, 0);
    let broker = broker(&cluster, |o| {
        o.block = Duration::from_secs(600);
        o.reclaim_interval = Duration::from_secs(600);
        o.blocking_readers = 0;
    });
    for stream in STREAMS {
        woken_by_a_publish(&broker, stream).await;
    }
}

#[tokio::test]
async fn a_deleted_stream_leaves_no_key_on_any_master() {
    let cluster = RedisCluster::start(3, 0);
    let broker = broker(&cluster, |_| {});
    for stream in ["alpha", "bravo"] {
        subscription(&broker, stream, |_| {}).await;
        // Dedup keys are the ones only the sweep finds.
        let events = (1..=5).map(|i| event(&format!("{stream}-{i}"))).collect();
        broker.publish(stream, events).await.unwrap();
    }
    broker.delete_stream("alpha").await.unwrap();
    let prefix = broker.keys().prefix().to_string();
    let mut left = Vec::new();
    for url in cluster.urls() {
        let client = redis::Client::open(url).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut conn).await.unwrap();
        left.extend(keys);
    }
    assert!(!left.is_empty(), "bravo's keys stay");
    assert!(left.iter().all(|k| !k.contains("{alpha}")), "alpha's keys are gone: {left:?}");
    assert!(broker.get_stream("alpha").await.is_err());
    let (names, _) = broker.list_stream_names("", 10).await.unwrap();
    assert_eq!(names, ["bravo"]);
    assert_eq!(broker.stream_stats("bravo").await.unwrap().length, 5);
}

#[tokio::test]
async fn readiness_and_the_eviction_policy_are_checked_on_every_master() {
    let cluster = RedisCluster::start(3, 0);
    let broker = broker(&cluster, |_| {});
    broker.ping().await.unwrap();
    assert_eq!(broker.server_state().await.unwrap(), ServerState::Ready);
    assert_eq!(broker.eviction_policy().await.unwrap(), EvictionPolicy::NoEviction);
    assert!(matches!(broker.check_layout().await.unwrap(), LayoutCheck::Current | LayoutCheck::Written), "layout");

    // One master of three with an evicting policy is enough to refuse.
    for i in 0..3 {
        let policy = if i == 2 { "allkeys-lru" } else { "noeviction" };
        let client = redis::Client::open(cluster.urls()[i].clone()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let () =
            redis::cmd("CONFIG").arg("SET").arg("maxmemory-policy").arg(policy).query_async(&mut conn).await.unwrap();
    }
    assert_eq!(broker.eviction_policy().await.unwrap(), EvictionPolicy::Refused("allkeys-lru".into()));
}

/// `call` until it succeeds, as a client retries: after a failover the cluster client answers
/// UNAVAILABLE until it has learned the new topology and connected to the promoted node; any
/// other error, or UNAVAILABLE for longer than [`PATIENCE`] since `start`, fails the test.
async fn retried<T, F, Fut>(what: &str, start: Instant, mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = eventflow_broker::Result<T>>,
{
    loop {
        match call().await {
            Ok(value) => return value,
            Err(e) => assert!(e.is_unavailable() && start.elapsed() < PATIENCE, "{what} after the failover: {e}"),
        }
        // A client's backoff between tries.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_session_reading_from_a_master_that_fails_over_goes_on_on_the_promoted_replica() {
    let cluster = RedisCluster::start(3, 1);
    let broker = broker(&cluster, |_| {});
    subscription(&broker, "alpha", |_| {}).await;
    broker.publish("alpha", vec![event("before")]).await.unwrap();
    let mut session = Session::open(&broker, "alpha", "sub", FlowControl::default()).await.unwrap();
    let first = deliveries(&mut session, 1).await;
    broker.acknowledge(&[first[0].ack_id.clone()]).await.unwrap();
    // An empty batch: the session's own reader is now open to the stream's master.
    assert!(session.next_batch().await.unwrap().is_empty());

    let key = broker.keys().stream("alpha");
    let replica = cluster.replica_of(cluster.owner_of(&key));
    // Returns once the replica is a master and the cluster is ok.
    cluster.failover(replica);

    // Calls may fail while the client learns the new topology (retryable errors only).
    let start = Instant::now();
    retried("publish", start, || broker.publish("alpha", vec![event("after")])).await;
    let mut got = Vec::new();
    while got.is_empty() {
        match session.next_batch().await {
            Ok(batch) => got = batch,
            Err(e) => assert!(e.is_unavailable(), "a session error that is not retryable: {e}"),
        }
        assert!(start.elapsed() < PATIENCE, "the event published after the failover never came");
    }
    assert_eq!(payloads(&got), ["after"]);
    // The cluster client may still be connecting to the promoted node: a client retries.
    let ack = [got[0].ack_id.clone()];
    retried("acknowledge", start, || broker.acknowledge(&ack)).await;
    assert_eq!(retried("stats", start, || broker.stream_stats("alpha")).await.subscriptions[0].pending, 0);
    if let Err(e) = session.close().await {
        assert!(e.is_unavailable(), "closing the session after the failover: {e}");
    }
}

#[tokio::test]
async fn reads_are_native_on_a_cluster_and_never_exceed_the_byte_budget_across_a_size_mark_raise() {
    let cluster = RedisCluster::start(3, 0);
    let broker = broker(&cluster, |_| {});
    for stream in &STREAMS[..2] {
        subscription(&broker, stream, |_| {}).await;
        common::size_mark_scenario(&broker, stream).await;
    }
}

#[tokio::test]
async fn acks_report_each_id_and_forget_last_errors_redrive_entries_and_ordering_heads() {
    let cluster = RedisCluster::start(3, 0);
    let broker = broker(&cluster, |_| {});
    common::ack_outcomes_scenario(&broker, "alpha", "bravo").await;
}
