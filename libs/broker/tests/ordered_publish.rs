//! Publishes whose order is kept ([`Order::Kept`], PublishStream's) against a real
//! redis-server (libs/testkit; a unique key prefix per test): what the ordered writer reports
//! stored is stored in the order the calls were queued — also when Redis loses its scripts
//! mid-stream while another client loads them again (a call that got NOSCRIPT must not run
//! again after a later one ran), when its connection is killed mid-stream, and for the calls
//! queued while a commit is in Redis (gathered into the next commit, sent only once the one
//! in Redis has run completely, its NOSCRIPT re-run included).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{event, options};

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use eventflow_broker::{Broker, BrokerError, Order, PendingPublish, Published, StreamConfig};
use eventflow_testkit::{RedisServer, unique_prefix};

/// Calls queued per test, and events per call.
const CALLS: usize = 400;
const EVENTS: usize = 5;

/// `<ms>-<seq>` as a pair that sorts like the entry ids.
fn entry(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').expect("an entry id");
    (ms.parse().unwrap(), seq.parse().unwrap())
}

/// Queues [`CALLS`] calls of [`EVENTS`] events to `stream` with [`Order::Kept`], pausing
/// every 10 calls so they spread over ~40 ms and many commits, some in flight together.
async fn queue_calls(broker: &Broker, stream: &str) -> Vec<PendingPublish> {
    let mut pending = Vec::with_capacity(CALLS);
    for i in 0..CALLS {
        let events = (0..EVENTS).map(|j| event(&format!("e{i:04}-{j}"), "")).collect();
        pending.push(broker.enqueue_publish(stream, events, Order::Kept).await.unwrap());
        if i % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    pending
}

/// Awaits every outcome; asserts that each call either succeeded or failed UNAVAILABLE, and
/// that the entry ids of the calls that succeeded increase in queue order. Returns the queue
/// positions of the calls that succeeded.
async fn outcomes_in_order(pending: Vec<PendingPublish>) -> Vec<usize> {
    let mut stored = Vec::new();
    let mut last = (0, 0);
    for (i, p) in pending.into_iter().enumerate() {
        match p.outcome().await {
            Ok(published) => {
                assert_eq!(published.len(), EVENTS);
                for Published { entry_id, duplicate, .. } in published {
                    assert!(!duplicate, "call {i}: a duplicate");
                    let id = entry(&entry_id);
                    assert!(id > last, "call {i} reported stored at {entry_id}, before an earlier call's {last:?}");
                    last = id;
                }
                stored.push(i);
            }
            Err(e) => assert!(matches!(e, BrokerError::Unavailable(_)), "call {i}: {e:?}"),
        }
    }
    stored
}

/// A redis-server of its own and a broker on a unique prefix with stream `s`.
async fn fixture() -> (RedisServer, Broker) {
    let redis = RedisServer::start();
    let broker = Broker::new(&redis.url(), options(&unique_prefix())).unwrap();
    broker.create_stream(&StreamConfig::new("s")).await.unwrap();
    (redis, broker)
}

/// The payloads of stream `s`'s entries, in stream order (the payload of an [`event`] is its id).
fn stored_payloads(redis: &RedisServer, broker: &Broker) -> Vec<String> {
    let mut conn = redis::Client::open(redis.url()).unwrap().get_connection().unwrap();
    let reply: redis::streams::StreamRangeReply =
        redis::cmd("XRANGE").arg(broker.keys().stream("s")).arg("-").arg("+").query(&mut conn).unwrap();
    reply
        .ids
        .iter()
        .map(|entry| {
            let payload: Vec<u8> = entry.get(eventflow_broker::schema::entry::EVENT).expect("a payload field");
            String::from_utf8(payload).unwrap()
        })
        .collect()
}

/// The ids of the events of the calls at `calls`, in order.
fn ids_of(calls: &[usize]) -> Vec<String> {
    calls.iter().flat_map(|i| (0..EVENTS).map(move |j| format!("e{i:04}-{j}"))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_publishes_stay_in_queue_order_when_redis_loses_its_scripts_mid_stream() {
    let (redis, broker) = fixture().await;
    // Flushes the scripts and loads them again from another connection, over and over: some
    // of the ordered writer's commits get NOSCRIPT, and the writer loads and runs them again.
    let stop = Arc::new(AtomicBool::new(false));
    let flusher = {
        let (stop, url) = (stop.clone(), redis.url());
        tokio::spawn(async move {
            let mut conn = redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let _: () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut conn).await.unwrap();
                let _: String = eventflow_broker::scripts::PUBLISH.load_async(&mut conn).await.unwrap();
                n += 1;
            }
            n
        })
    };
    let pending = queue_calls(&broker, "s").await;
    let stored = outcomes_in_order(pending).await;
    stop.store(true, Ordering::Relaxed);
    let flushes = flusher.await.unwrap();
    assert!(flushes > 0, "the scripts were never flushed");
    assert!(!stored.is_empty(), "nothing stored");
    // A call that got NOSCRIPT did not run: the stream holds exactly the stored calls, in order.
    assert_eq!(stored_payloads(&redis, &broker), ids_of(&stored));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_publishes_reported_stored_are_in_queue_order_when_the_connection_is_killed_mid_stream() {
    let (redis, broker) = fixture().await;
    let killer = {
        let url = redis.url();
        tokio::spawn(async move {
            let mut conn = redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap();
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let _: i64 = redis::cmd("CLIENT")
                    .arg("KILL")
                    .arg("TYPE")
                    .arg("normal")
                    .arg("SKIPME")
                    .arg("yes")
                    .query_async(&mut conn)
                    .await
                    .unwrap();
            }
        })
    };
    let pending = queue_calls(&broker, "s").await;
    let stored = outcomes_in_order(pending).await;
    killer.await.unwrap();
    assert!(!stored.is_empty(), "nothing stored");
    // The calls that failed may have been stored (their reply was lost); resent, they are
    // answered as duplicates or stored after the others.
    let stored_ids = stored_payloads(&redis, &broker);
    let reported = ids_of(&stored);
    let reported_in_stream: Vec<&String> = stored_ids.iter().filter(|id| reported.contains(id)).collect();
    assert_eq!(reported_in_stream, reported.iter().collect::<Vec<_>>());
}

/// `calls` and `failed_calls` of EVALSHA since the last `CONFIG RESETSTAT`.
fn evalsha_calls(conn: &mut redis::Connection) -> (u64, u64) {
    let info: String = redis::cmd("INFO").arg("commandstats").query(conn).unwrap();
    let line = info.lines().find(|l| l.starts_with("cmdstat_evalsha:")).expect("EVALSHA ran");
    let field = |name: &str| {
        let value = line.split([':', ',']).find_map(|f| f.strip_prefix(name)).expect("a commandstats field");
        value.parse::<u64>().unwrap()
    };
    (field("calls="), field("failed_calls="))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_queued_while_a_commit_runs_go_next_as_one_commit_after_its_noscript_rerun() {
    let (redis, broker) = fixture().await;
    // A first publish reads the stream's partition count (then cached): queuing the calls
    // below touches Redis no more.
    broker.publish("s", vec![event("warm", "")]).await.unwrap();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut conn).unwrap();
    let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query(&mut conn).unwrap();
    // Keeps Redis busy (it runs nothing else meanwhile), so the first call's commit waits in
    // Redis while the others are queued.
    let busy = tokio::task::spawn_blocking(move || {
        let spin = "local n = 0 for i = 1, tonumber(ARGV[1]) do n = n + i end return 1";
        let _: i64 = redis::cmd("EVAL").arg(spin).arg(0).arg(30_000_000).query(&mut conn).unwrap();
        conn
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let first = broker.enqueue_publish("s", vec![event("first", "")], Order::Kept).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let mut later = Vec::new();
    for i in 0..50 {
        later.push(broker.enqueue_publish("s", vec![event(&format!("later{i:02}"), "")], Order::Kept).await.unwrap());
    }
    let mut last = entry(&first.outcome().await.unwrap()[0].entry_id);
    for pending in later {
        let id = entry(&pending.outcome().await.unwrap()[0].entry_id);
        assert!(id > last, "a later call stored before an earlier one");
        last = id;
    }
    let mut conn = busy.await.unwrap();
    let expected: Vec<String> =
        ["warm", "first"].map(String::from).into_iter().chain((0..50).map(|i| format!("later{i:02}"))).collect();
    assert_eq!(stored_payloads(&redis, &broker), expected);
    // The first commit got NOSCRIPT and ran again; the 50 calls queued meanwhile went as one
    // commit (one script call) after that.
    let (calls, failed) = evalsha_calls(&mut conn);
    assert_eq!((calls - failed, failed), (2, 1), "EVALSHA calls (that ran, that got NOSCRIPT)");
}
