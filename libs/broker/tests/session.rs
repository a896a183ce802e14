//! Delivery sessions against a real redis-server (libs/testkit, a unique key prefix each), without
//! gRPC: a session delivers, holds to its flow control (freed by a settlement in its process
//! without a recount, or through another replica by the recount), redelivers a nacked event after its
//! retry backoff, and reaps a dead consumer when its policy's (moved) clock says so; idle
//! sessions of one subscription take turns to claim, and an expired delivery still comes back
//! on time; the delivery driver feeds a sink through a Redis outage and ends on a consumer leaving, shutdown
//! or a deleted subscription, releasing what it held.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{PATIENCE, deliveries};

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use eventflow_broker::{
    AckKeySource, AckKeys, BatchStats, Broker, BrokerError, BrokerOptions, Delivery, FlowControl, NewEvent, Position,
    Session, StreamConfig, SubscriptionConfig,
    delivery::{Ended, ManualClock, Sink, Timing, drive},
};
use eventflow_testkit::{RedisServer, unique_prefix};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A broker on `redis` under a prefix of its own, with short waits so empty batches return soon.
fn broker(redis: &RedisServer) -> Broker {
    let options = BrokerOptions {
        prefix: unique_prefix(),
        block: Duration::from_millis(100),
        capacity_poll: Duration::from_millis(20),
        ..BrokerOptions::default()
    };
    Broker::new(&redis.url(), options).unwrap()
}

/// Creates stream `s` and subscription `sub` (from the start, as `edit` sets it up).
async fn subscription(broker: &Broker, edit: impl FnOnce(&mut SubscriptionConfig)) -> SubscriptionConfig {
    broker.create_stream(&StreamConfig::new("s")).await.unwrap();
    let mut config = SubscriptionConfig::new("s", "sub");
    edit(&mut config);
    broker.create_subscription(&config, &Position::Earliest).await.unwrap()
}

/// Publishes events `names` of `size` payload bytes each.
async fn publish(broker: &Broker, names: &[&str], size: usize) {
    let events = names
        .iter()
        .map(|name| NewEvent {
            id: (*name).to_string(),
            event_type: "t".into(),
            payload: name.bytes().cycle().take(size).collect(),
            traceparent: String::new(),
            ordering_key: String::new(),
        })
        .collect();
    broker.publish("s", events).await.unwrap();
}

/// The payload's event name (its first byte repeats the name).
fn names(batch: &[Delivery]) -> Vec<String> {
    batch.iter().map(|d| String::from_utf8_lossy(&d.payload[..2]).into_owned()).collect()
}

async fn ack(broker: &Broker, batch: &[Delivery]) {
    let ids: Vec<String> = batch.iter().map(|d| d.ack_id.clone()).collect();
    let settled = broker.acknowledge(&ids).await.unwrap();
    assert!(settled.invalid.is_empty() && settled.expired.is_empty(), "{settled:?}");
}

#[tokio::test]
async fn a_session_delivers_in_order_and_acked_events_are_settled() {
    let redis = RedisServer::start();
    let broker = broker(&redis);
    subscription(&broker, |_| {}).await;
    let mut session = Session::open(&broker, "s", "sub", FlowControl::default()).await.unwrap();
    publish(&broker, &["e1", "e2", "e3"], 64).await;
    let batch = deliveries(&mut session, 3).await;
    assert_eq!(names(&batch), ["e1", "e2", "e3"]);
    assert!(batch.iter().all(|d| d.attempt == 1 && d.payload.len() == 64), "{batch:?}");
    ack(&broker, &batch).await;
    let pending: (u64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
        .arg(broker.keys().stream("s"))
        .arg("sub")
        .query_async(&mut broker.conn().await.unwrap())
        .await
        .unwrap();
    assert_eq!(pending.0, 0, "all acknowledged");
    assert_eq!(session.close().await.unwrap(), 0, "nothing left to release");
}

#[tokio::test]
async fn a_session_holds_to_its_flow_control_by_count_and_by_bytes() {
    let redis = RedisServer::start();
    let broker = broker(&redis);
    subscription(&broker, |_| {}).await;
    publish(&broker, &["a1", "a2", "a3", "a4", "a5"], 100).await;

    // By count: two at a time; a batch at the limit is empty until one is settled.
    let mut session =
        Session::open(&broker, "s", "sub", FlowControl { max_messages: 2, ..FlowControl::default() }).await.unwrap();
    let first = deliveries(&mut session, 2).await;
    assert_eq!(names(&first), ["a1", "a2"]);
    assert!(session.next_batch().await.unwrap().is_empty(), "at the limit");
    ack(&broker, &first[..1]).await;
    assert_eq!(names(&deliveries(&mut session, 1).await), ["a3"]);
    assert!(session.next_batch().await.unwrap().is_empty(), "at the limit again");
    assert_eq!(session.close().await.unwrap(), 2, "a2 and a3 released");

    // By bytes: 250 bytes hold two 100-byte events, never a third.
    let mut session =
        Session::open(&broker, "s", "sub", FlowControl { max_messages: 100, max_bytes: 250, ..FlowControl::default() })
            .await
            .unwrap();
    let held = deliveries(&mut session, 2).await;
    assert!(session.next_batch().await.unwrap().is_empty(), "a third event would exceed the bytes");
    ack(&broker, &held).await;
    let rest = deliveries(&mut session, 2).await;
    let mut all = names(&held);
    all.extend(names(&rest));
    all.sort();
    assert_eq!(all, ["a2", "a3", "a4", "a5"], "released ones come back, then new ones");
    ack(&broker, &rest).await;

    // One event larger than the whole byte limit is delivered alone when nothing is outstanding.
    publish(&broker, &["b1", "b2"], 1000).await;
    assert_eq!(names(&deliveries(&mut session, 1).await), ["b1"]);
    assert!(session.next_batch().await.unwrap().is_empty(), "b2 waits until b1 is settled");
    session.close().await.unwrap();
}

#[tokio::test]
async fn a_session_at_its_limit_reads_again_after_a_settlement_here_without_recounting() {
    let redis = RedisServer::start();
    // Neither the poll nor a periodic recount comes within the test: only the settlement's
    // hand-off can free the session's room (else it waits a minute and recounts).
    let options = BrokerOptions {
        capacity_poll: Duration::from_secs(60),
        reclaim_interval: Duration::from_secs(60),
        ..common::options(&unique_prefix())
    };
    let broker = Broker::new(&redis.url(), options).unwrap();
    subscription(&broker, |_| {}).await;
    publish(&broker, &["a1", "a2", "a3", "a4", "a5"], 100).await;
    let mut session =
        Session::open(&broker, "s", "sub", FlowControl { max_messages: 2, ..FlowControl::default() }).await.unwrap();
    let first = deliveries(&mut session, 2).await;
    assert_eq!(names(&first), ["a1", "a2"]);
    let xpending = calls(&broker, "xpending").await;

    // The ack lands before the session looks or while it waits at its limit: either way it
    // frees exactly one delivery's room.
    let (batch, ()) = tokio::join!(
        async { tokio::time::timeout(PATIENCE, session.next_batch()).await.unwrap().unwrap() },
        ack(&broker, &first[..1])
    );
    assert_eq!(names(&batch), ["a3"], "one settled, one more delivered");
    assert_eq!(calls(&broker, "xpending").await, xpending, "no XPENDING on the way");
    // A nack (whose script checks the delivery with one XPENDING of its own) frees its
    // delivery's room too; a2 is parked for its retry backoff.
    let nacked = broker.modify_ack_deadline(&[first[1].ack_id.clone()], 0, "").await.unwrap();
    assert_eq!(nacked.applied.len(), 1);
    let batch = tokio::time::timeout(PATIENCE, session.next_batch()).await.unwrap().unwrap();
    assert_eq!(names(&batch), ["a4"]);
    assert_eq!(session.recounts(), 0, "no recount from the pending lists");
    assert_eq!(calls(&broker, "xpending").await, xpending + 1, "only the nack's XPENDING");
    session.close().await.unwrap();
}

#[tokio::test]
async fn a_session_at_its_limit_resumes_after_a_settlement_through_another_replica() {
    let redis = RedisServer::start();
    let keys: Arc<dyn AckKeySource> = Arc::new(Arc::new(AckKeys::random().unwrap()));
    let options = BrokerOptions { ack_keys: Some(keys), ..common::options(&unique_prefix()) };
    let here = Broker::new(&redis.url(), options.clone()).unwrap();
    let replica = Broker::new(&redis.url(), options).unwrap();
    subscription(&here, |_| {}).await;
    publish(&here, &["a1", "a2", "a3"], 100).await;
    let mut session =
        Session::open(&here, "s", "sub", FlowControl { max_messages: 2, ..FlowControl::default() }).await.unwrap();
    let first = deliveries(&mut session, 2).await;
    assert!(session.next_batch().await.unwrap().is_empty(), "at the limit");
    let recounts = session.recounts();
    ack(&replica, &first[..1]).await;
    // Nothing is handed over in this process: the poll's recount finds the room.
    assert_eq!(names(&deliveries(&mut session, 1).await), ["a3"]);
    assert!(session.recounts() > recounts, "found by a recount");
    session.close().await.unwrap();
}

#[tokio::test]
async fn a_nacked_event_is_redelivered_after_its_backoff() {
    let redis = RedisServer::start();
    let broker = broker(&redis);
    let backoff = Duration::from_secs(1);
    subscription(&broker, |c| {
        c.min_backoff = backoff;
        c.max_backoff = backoff;
    })
    .await;
    let mut session = Session::open(&broker, "s", "sub", FlowControl::default()).await.unwrap();
    publish(&broker, &["n1"], 16).await;
    let first = deliveries(&mut session, 1).await;
    assert_eq!(first[0].attempt, 1);
    let nacked = Instant::now();
    let settled = broker.modify_ack_deadline(&[first[0].ack_id.clone()], 0, "try later").await.unwrap();
    assert!(settled.invalid.is_empty() && settled.expired.is_empty(), "{settled:?}");
    let due: Option<f64> = redis::cmd("ZSCORE")
        .arg(broker.keys().delay("s", "sub"))
        .arg(&first[0].entry_id)
        .query_async(&mut broker.conn().await.unwrap())
        .await
        .unwrap();
    assert!(due.is_some(), "parked in the delay set for its backoff");
    let again = deliveries(&mut session, 1).await;
    assert!(nacked.elapsed() >= backoff, "never before the backoff is over");
    assert_eq!((again[0].entry_id.as_str(), again[0].attempt), (first[0].entry_id.as_str(), 2));
    ack(&broker, &again).await;
    session.close().await.unwrap();
}

/// The subscription's consumers on the stream: name -> idle ms.
async fn consumers(broker: &Broker) -> HashMap<String, u64> {
    let rows: Vec<HashMap<String, redis::Value>> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(broker.keys().stream("s"))
        .arg("sub")
        .query_async(&mut broker.conn().await.unwrap())
        .await
        .unwrap();
    rows.into_iter()
        .map(|row| {
            let name: String = redis::from_redis_value(row["name"].clone()).unwrap();
            let idle: u64 = redis::from_redis_value(row["idle"].clone()).unwrap();
            (name, idle)
        })
        .collect()
}

#[tokio::test]
async fn a_dead_consumer_is_reaped_when_the_policy_clock_says_so() {
    let redis = RedisServer::start();
    let broker = broker(&redis);
    // Ack deadline 1 s: a consumer idle 3 s with nothing pending is dead. The 5 minutes floor is
    // lifted so the test waits seconds, not minutes, for Redis to see it idle.
    subscription(&broker, |c| c.ack_deadline = Duration::from_secs(1)).await;
    let clock = ManualClock::new();
    let timing = Timing { reap_min_idle: Duration::ZERO, ..Timing::new(broker.options()) };
    let mut session =
        Session::open_with(&broker, "s", "sub", FlowControl::default(), Arc::new(clock.clone()), timing).await.unwrap();
    // A consumer of a replica that crashed: it never reads again.
    let _: i64 = redis::cmd("XGROUP")
        .arg("CREATECONSUMER")
        .arg(broker.keys().stream("s"))
        .arg("sub")
        .arg("c-dead")
        .query_async(&mut broker.conn().await.unwrap())
        .await
        .unwrap();
    // The live session holds one unsettled delivery: it has something pending.
    publish(&broker, &["r1"], 16).await;
    let first = deliveries(&mut session, 1).await;
    let start = Instant::now();
    while consumers(&broker).await["c-dead"] <= 3_500 {
        assert!(start.elapsed() < PATIENCE, "c-dead never became idle");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Idle long enough, and r1's deadline passed, but the session's clock has not moved: not
    // yet time to reclaim or to reap.
    assert!(session.next_batch().await.unwrap().is_empty());
    assert!(consumers(&broker).await.contains_key("c-dead"), "reaped before the reap interval");
    // A minute later by the session's clock: r1 is reclaimed and c-dead reaped; the live
    // session's consumer (something pending) stays.
    clock.advance(Duration::from_secs(60));
    let again = session.next_batch().await.unwrap();
    assert_eq!((again[0].entry_id.as_str(), again[0].attempt), (first[0].entry_id.as_str(), 2), "{again:?}");
    let left = consumers(&broker).await;
    assert!(!left.contains_key("c-dead"), "{left:?}");
    assert!(left.contains_key(session.consumer()), "{left:?}");
    session.close().await.unwrap();
}

#[tokio::test]
async fn entries_of_a_read_whose_reply_was_lost_are_delivered_after_the_error_not_the_deadline() {
    let mut redis = RedisServer::start();
    let broker = broker(&redis);
    // A 10-minute ack deadline: only the session's resync can bring the entries back in time.
    subscription(&broker, |c| c.ack_deadline = Duration::from_secs(600)).await;
    let mut session = Session::open(&broker, "s", "sub", FlowControl::default()).await.unwrap();
    publish(&broker, &["l1", "l2", "l3"], 16).await;
    // A read of the session's consumer whose reply never reached it (as after a timeout): the
    // entries are pending under its consumer and it does not know them.
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("sub")
        .arg(session.consumer())
        .arg("COUNT")
        .arg(2)
        .arg("STREAMS")
        .arg(broker.keys().stream("s"))
        .arg(">")
        .query_async(&mut broker.conn().await.unwrap())
        .await
        .unwrap();
    // A failing batch (Redis gone for a moment) marks the session for a resync.
    redis.stop();
    assert!(session.next_batch().await.is_err());
    redis.restart();
    let mut got = deliveries(&mut session, 3).await;
    got.sort_by(|a, b| a.entry_id.cmp(&b.entry_id));
    assert_eq!(names(&got), ["l1", "l2", "l3"]);
    ack(&broker, &got).await;
    session.close().await.unwrap();
}

/// What a [`TestSink`] saw, in order.
#[derive(Debug)]
enum Seen {
    Batch(Vec<Delivery>),
    End(Ended),
}

/// A delivery sink that forwards what it sees to the test; the consumer "leaves" when `gone` is
/// cancelled.
struct TestSink {
    seen: mpsc::UnboundedSender<Seen>,
    gone: CancellationToken,
}

impl Sink for TestSink {
    async fn send(&mut self, batch: Vec<Delivery>, _stats: &BatchStats) -> bool {
        self.seen.send(Seen::Batch(batch)).is_ok()
    }

    async fn closed(&self) {
        self.gone.cancelled().await;
    }

    async fn end(&mut self, why: &Ended) {
        let _ = self.seen.send(Seen::End(why.clone()));
    }
}

/// Drives a session on `s`/`sub` into a [`TestSink`] in a task: returns what the sink sees, the
/// token that makes the consumer leave, the shutdown token and the driver's task.
async fn driven(
    broker: &Broker,
) -> (mpsc::UnboundedReceiver<Seen>, CancellationToken, CancellationToken, tokio::task::JoinHandle<Ended>) {
    let session = Session::open(broker, "s", "sub", FlowControl::default()).await.unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let (gone, shutdown) = (CancellationToken::new(), CancellationToken::new());
    let mut sink = TestSink { seen: tx, gone: gone.clone() };
    let stop = shutdown.clone();
    let task = tokio::spawn(async move { drive(session, &mut sink, &stop).await });
    (rx, gone, shutdown, task)
}

/// The next batch the sink saw, within [`PATIENCE`].
async fn next_batch(seen: &mut mpsc::UnboundedReceiver<Seen>) -> Vec<Delivery> {
    match tokio::time::timeout(PATIENCE, seen.recv()).await {
        Ok(Some(Seen::Batch(batch))) => batch,
        other => panic!("expected a batch, got {other:?}"),
    }
}

#[tokio::test]
async fn the_driver_delivers_until_the_consumer_leaves_then_releases_what_it_held() {
    let redis = RedisServer::start();
    let broker = broker(&redis);
    subscription(&broker, |_| {}).await;
    let (mut seen, gone, _shutdown, task) = driven(&broker).await;
    publish(&broker, &["d1", "d2"], 32).await;
    let mut got = Vec::new();
    while got.len() < 2 {
        got.extend(next_batch(&mut seen).await);
    }
    assert_eq!(names(&got), ["d1", "d2"]);
    ack(&broker, &got[..1]).await;
    gone.cancel();
    assert!(matches!(task.await.unwrap(), Ended::Gone));
    assert!(seen.recv().await.is_none(), "the sink is not told anything when its consumer left");
    // d2 was released when the driver closed the session: another session gets it at once.
    let mut next = Session::open(&broker, "s", "sub", FlowControl::default()).await.unwrap();
    let again = deliveries(&mut next, 1).await;
    assert_eq!((names(&again), again[0].attempt), (vec!["d2".to_string()], 2));
    next.close().await.unwrap();
}

#[tokio::test]
async fn the_driver_rides_out_a_redis_outage_and_ends_on_shutdown() {
    let mut redis = RedisServer::start();
    let broker = broker(&redis);
    subscription(&broker, |_| {}).await;
    let (mut seen, _gone, shutdown, task) = driven(&broker).await;
    publish(&broker, &["o1"], 16).await;
    ack(&broker, &next_batch(&mut seen).await).await;
    redis.stop();
    redis.restart();
    publish(&broker, &["o2"], 16).await;
    let after = next_batch(&mut seen).await;
    assert_eq!(names(&after), ["o2"], "the same driver delivers after the outage");
    assert!(!task.is_finished());
    shutdown.cancel();
    assert!(matches!(task.await.unwrap(), Ended::Shutdown));
    assert!(matches!(seen.recv().await, Some(Seen::End(Ended::Shutdown))), "the sink is told of the shutdown");
}

#[tokio::test]
async fn the_driver_ends_and_says_why_when_the_subscription_is_deleted() {
    let redis = RedisServer::start();
    let broker = broker(&redis);
    subscription(&broker, |_| {}).await;
    let (mut seen, _gone, _shutdown, task) = driven(&broker).await;
    broker.delete_subscription("s", "sub").await.unwrap();
    let ended = tokio::time::timeout(PATIENCE, task).await.expect("the driver ends").unwrap();
    assert!(matches!(&ended, Ended::Failed(BrokerError::NotFound(_))), "{ended:?}");
    assert!(matches!(seen.recv().await, Some(Seen::End(Ended::Failed(BrokerError::NotFound(_))))));
}

#[tokio::test]
async fn reads_are_native_while_the_size_mark_allows_and_never_exceed_the_byte_budget_across_a_raise() {
    let redis = RedisServer::start();
    let broker = broker(&redis);
    subscription(&broker, |_| {}).await;
    common::size_mark_scenario(&broker, "s").await;
}

#[tokio::test]
async fn ordered_subscriptions_and_streams_without_a_size_mark_read_through_the_script() {
    let redis = RedisServer::start();
    let broker = broker(&redis);
    subscription(&broker, |c| c.ordered = true).await;
    publish(&broker, &["o1", "o2"], 10).await;
    let mut session = Session::open(&broker, "s", "sub", FlowControl::default()).await.unwrap();
    assert_eq!(names(&deliveries(&mut session, 2).await), ["o1", "o2"]);
    assert_eq!(session.native_reads(), 0, "the ordering gate is in READ_NEW");
    session.close().await.unwrap();

    // A stream as written before the size mark: no mark until the next publish sets it.
    broker.create_stream(&StreamConfig::new("old")).await.unwrap();
    broker.create_subscription(&SubscriptionConfig::new("old", "sub"), &Position::Earliest).await.unwrap();
    broker.publish("old", common::sized_events(&["p1"], 10)).await.unwrap();
    let mut conn = broker.conn().await.unwrap();
    let _: i64 = redis::cmd("HDEL")
        .arg(broker.keys().meta("old"))
        .arg(eventflow_broker::schema::meta::SIZE_MARK)
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut session = Session::open(&broker, "old", "sub", FlowControl::default()).await.unwrap();
    assert_eq!(names(&deliveries(&mut session, 1).await), ["p1"]);
    assert_eq!(session.native_reads(), 0, "no mark: READ_NEW");
    broker.publish("old", common::sized_events(&["p2"], 10)).await.unwrap();
    assert_eq!(names(&deliveries(&mut session, 1).await), ["p2"]);
    assert_eq!(session.native_reads(), 1, "the publish set the mark: the next read is native");
    session.close().await.unwrap();
}

/// How many `command` calls Redis has run so far, in scripts or not (`INFO commandstats`).
async fn calls(broker: &Broker, command: &str) -> u64 {
    let info: String =
        redis::cmd("INFO").arg("commandstats").query_async(&mut broker.conn().await.unwrap()).await.unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines().find_map(|line| line.strip_prefix(prefix.as_str())?.split(',').next()?.parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn idle_sessions_take_turns_to_claim_and_an_expired_delivery_still_comes_back_on_time() {
    const SESSIONS: usize = 20;
    let redis = RedisServer::start();
    let broker = broker(&redis);
    let deadline = Duration::from_secs(1);
    subscription(&broker, |c| c.ack_deadline = deadline).await;
    let (tx, mut seen) = mpsc::unbounded_channel();
    let shutdown = CancellationToken::new();
    let mut tasks = Vec::new();
    for _ in 0..SESSIONS {
        let session = Session::open(&broker, "s", "sub", FlowControl::default()).await.unwrap();
        let mut sink = TestSink { seen: tx.clone(), gone: CancellationToken::new() };
        let stop = shutdown.clone();
        tasks.push(tokio::spawn(async move { drive(session, &mut sink, &stop).await }));
    }
    // Idle: every session wakes every block (100 ms) and reads, but claims (CLAIM_DUE on both
    // sources, one ZRANGEBYSCORE each) run once per reclaim interval (250 ms) among all of them,
    // not per session (which would be about 20 × 4 × 2 = 160 a second).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (before, start) = (calls(&broker, "zrangebyscore").await, Instant::now());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (claims, secs) = (calls(&broker, "zrangebyscore").await - before, start.elapsed().as_secs_f64());
    let turns = secs / broker.options().reclaim_interval.as_secs_f64() + 2.0;
    assert!(claims > 0, "someone still claims");
    assert!((claims as f64) <= 2.0 * turns, "{claims} claims in {secs:.2} s from {SESSIONS} idle sessions");
    // An event nobody settles is still redelivered once its deadline passed, within about a
    // reclaim interval and a block time.
    publish(&broker, &["e1"], 16).await;
    let first = match tokio::time::timeout(PATIENCE, seen.recv()).await {
        Ok(Some(Seen::Batch(batch))) => batch,
        other => panic!("{other:?}"),
    };
    let delivered = Instant::now();
    let again = match tokio::time::timeout(PATIENCE, seen.recv()).await {
        Ok(Some(Seen::Batch(batch))) => batch,
        other => panic!("{other:?}"),
    };
    let late = delivered.elapsed();
    assert_eq!((again[0].entry_id.as_str(), again[0].attempt), (first[0].entry_id.as_str(), 2));
    assert!(late >= deadline - Duration::from_millis(50), "redelivered before its deadline: {late:?}");
    assert!(late <= deadline + Duration::from_millis(1500), "redelivered late: {late:?}");
    ack(&broker, &again).await;
    shutdown.cancel();
    for task in tasks {
        assert!(matches!(task.await.unwrap(), Ended::Shutdown));
    }
}
