//! Seek, start positions and per-partition stats on partitioned streams, against real Redis
//! (libs/testkit: one redis-server, and a 3-master cluster; a unique key prefix per test). A
//! stream of 3 partitions gets keyless events and a hot ordering key: publish results and
//! deliveries name their partition; per-partition stats add up to the sums and show the hot
//! partition; a seek by time replays every partition; a seek forward acknowledges what was
//! pending in every partition; a seek by entry id moves only the partition named; a new
//! subscription at an entry id starts there in its partition and at its time in the others; an
//! entry id without a partition, or a partition out of range, is refused naming the field.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{deliveries, event, options};

use eventflow_broker::{
    Broker, BrokerError, FlowControl, NewEvent, Position, Published, Session, StreamConfig, SubscriptionConfig,
    model::entry_ms, partition_name, stats::StreamStats,
};
use eventflow_testkit::{RedisServer, cluster::RedisCluster, unique_prefix};

/// Reads `n` events of partition `i` for `sub` (each must report partition `i`), acking them
/// when `ack`; returns their entry ids.
async fn read(broker: &Broker, stream: &str, i: u32, sub: &str, n: usize, ack: bool) -> Vec<String> {
    let mut session = Session::open(broker, &partition_name(stream, i), sub, FlowControl::default()).await.unwrap();
    let got = if n == 0 { Vec::new() } else { deliveries(&mut session, n).await };
    assert_eq!(got.len(), n, "partition {i}");
    assert!(got.iter().all(|d| d.partition == i), "deliveries name their partition {i}");
    if ack {
        let ids: Vec<String> = got.iter().map(|d| d.ack_id.clone()).collect();
        let settled = broker.acknowledge(&ids).await.unwrap();
        assert!(settled.invalid.is_empty() && settled.expired.is_empty(), "{settled:?}");
    }
    session.close().await.unwrap();
    got.into_iter().map(|d| d.entry_id).collect()
}

/// `(lag, pending)` of subscription `sub` in each partition, and in the sums.
fn figures(stats: &StreamStats, sub: &str) -> (Vec<(u64, u64)>, (u64, u64)) {
    let per = stats
        .partitions
        .iter()
        .map(|p| p.subscriptions.iter().find(|s| s.name == sub).map_or((0, 0), |s| (s.lag, s.pending)))
        .collect();
    let total = stats.subscriptions.iter().find(|s| s.name == sub).map(|s| (s.lag, s.pending)).unwrap();
    (per, total)
}

/// Whether `result` is `InvalidArgument` naming `field`.
fn refused<T: std::fmt::Debug>(result: &Result<T, BrokerError>, field: &str) -> bool {
    matches!(result, Err(BrokerError::InvalidArgument { field: f, .. }) if f == field)
}

/// The whole scenario on `broker`.
async fn scenario(broker: &Broker, stream: &str) {
    broker.create_stream(&StreamConfig { partitions: 3, ..StreamConfig::new(stream) }).await.unwrap();
    broker.create_subscription(&SubscriptionConfig::new(stream, "sub"), &Position::Earliest).await.unwrap();
    let before = eventflow_broker::now_ms();

    // 30 keyless events spread; 30 of the hot key all land in one partition; 30 keyless later.
    let mut events: Vec<NewEvent> = (0..30).map(|i| event(&format!("e{i}"), "")).collect();
    events.extend((0..30).map(|i| event(&format!("hot{i}"), "hot")));
    let mut published = broker.publish(stream, events).await.unwrap();
    // The later events get a later millisecond than all of these: ids of different partitions
    // compare by time only across milliseconds (their sequence numbers are per partition).
    let newest = published.iter().map(|p| eventflow_broker::model::entry_key(&p.entry_id).0).max().unwrap();
    while std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64 <= newest {
        tokio::task::yield_now().await;
    }
    let later = (0..30).map(|i| event(&format!("f{i}"), "")).collect();
    published.extend(broker.publish(stream, later).await.unwrap());
    let hot = published[30].partition;
    assert!(published[30..60].iter().all(|p| p.partition == hot), "one key, one partition");
    let of = |i: u32| published.iter().filter(move |p| p.partition == i).collect::<Vec<&Published>>();
    let counts: Vec<u64> = (0..3).map(|i| of(i).len() as u64).collect();
    assert!(counts.iter().all(|&n| n > 0), "every partition got events: {counts:?}");

    // Per-partition stats: each partition's own figures, adding up to the sums; the hot
    // partition stands out.
    let stats = broker.stream_stats(stream).await.unwrap();
    assert_eq!(stats.length, 90);
    assert_eq!(
        (stats.first_entry_id.as_deref(), stats.last_entry_id.as_deref()),
        (None, None),
        "ids are per partition"
    );
    assert_eq!(stats.partitions.iter().map(|p| p.partition).collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(stats.partitions.iter().map(|p| p.length).collect::<Vec<_>>(), counts, "lengths match the results");
    for p in &stats.partitions {
        let last =
            of(p.partition).iter().map(|r| r.entry_id.clone()).max_by_key(|id| eventflow_broker::model::entry_key(id));
        assert_eq!(p.last_entry_id, last, "partition {}'s own last entry id", p.partition);
        assert!(p.first_entry_id.is_some());
    }
    let (per, total) = figures(&stats, "sub");
    assert_eq!(per, counts.iter().map(|&n| (n, 0)).collect::<Vec<_>>(), "each partition's lag");
    assert_eq!(total, (90, 0), "the sums stay");
    let hot_len = stats.partitions[hot as usize].length;
    assert!(stats.partitions.iter().all(|p| p.partition == hot || p.length < hot_len), "skew shows: {counts:?}");

    // Read and ack everything, then seek back by time: every partition replays.
    for i in 0..3 {
        read(broker, stream, i, "sub", counts[i as usize] as usize, true).await;
    }
    let (_, total) = figures(&broker.stream_stats(stream).await.unwrap(), "sub");
    assert_eq!(total, (0, 0));
    assert_eq!(broker.seek(stream, "sub", &Position::Time(before)).await.unwrap(), 0, "nothing was pending");
    let (per, _) = figures(&broker.stream_stats(stream).await.unwrap(), "sub");
    assert_eq!(per, counts.iter().map(|&n| (n, 0)).collect::<Vec<_>>(), "every partition replays");

    // Read without acking (pending in every partition), then seek to latest: every partition's
    // pending entries are acknowledged by the seek.
    for i in 0..3 {
        let ids = read(broker, stream, i, "sub", counts[i as usize] as usize, false).await;
        let expected: Vec<String> = of(i).iter().map(|p| p.entry_id.clone()).collect();
        assert_eq!(ids.len(), expected.len());
    }
    let (per, _) = figures(&broker.stream_stats(stream).await.unwrap(), "sub");
    assert_eq!(per, counts.iter().map(|&n| (0, n)).collect::<Vec<_>>());
    assert_eq!(broker.seek(stream, "sub", &Position::Latest).await.unwrap(), 90, "pending acked in every partition");
    let (_, total) = figures(&broker.stream_stats(stream).await.unwrap(), "sub");
    assert_eq!(total, (0, 0));

    // Seek by entry id in the hot partition: only it moves, to after its 20th hot event.
    let mark = &published[30 + 19];
    let at = Position::EntryId { id: mark.entry_id.clone(), partition: Some(hot) };
    broker.seek(stream, "sub", &at).await.unwrap();
    let after_mark = |i: u32, inclusive_ms: bool| {
        of(i)
            .iter()
            .filter(|p| {
                let key = eventflow_broker::model::entry_key(&p.entry_id);
                let mark_key = eventflow_broker::model::entry_key(&mark.entry_id);
                if inclusive_ms { key.0 >= mark_key.0 } else { key > mark_key }
            })
            .count() as u64
    };
    let (per, _) = figures(&broker.stream_stats(stream).await.unwrap(), "sub");
    let expected: Vec<(u64, u64)> = (0..3).map(|i| (if i == hot { after_mark(i, false) } else { 0 }, 0)).collect();
    assert_eq!(per, expected, "only partition {hot} moved");
    assert!(expected[hot as usize].0 >= 10, "the hot key's last 10 events at least");
    assert!((0..3).all(|i| i == hot || after_mark(i, false) > 0), "the others have later events, left alone");
    let replayed = read(broker, stream, hot, "sub", expected[hot as usize].0 as usize, true).await;
    assert!(
        replayed
            .iter()
            .all(|id| eventflow_broker::model::entry_key(id) > eventflow_broker::model::entry_key(&mark.entry_id))
    );

    // A new subscription at that entry id: after it in its partition, at its time elsewhere.
    broker.create_subscription(&SubscriptionConfig::new(stream, "from-mark"), &at).await.unwrap();
    let (per, _) = figures(&broker.stream_stats(stream).await.unwrap(), "from-mark");
    let expected: Vec<(u64, u64)> = (0..3).map(|i| (after_mark(i, i != hot), 0)).collect();
    assert_eq!(
        per,
        expected,
        "start: partition {hot} after the entry, the others at its time {:?}",
        entry_ms(&mark.entry_id)
    );

    // Refusals name the field.
    let bare = Position::EntryId { id: mark.entry_id.clone(), partition: None };
    let seek = broker.seek(stream, "sub", &bare).await;
    assert!(refused(&seek, "position.entry_id"), "{seek:?}");
    let create = broker.create_subscription(&SubscriptionConfig::new(stream, "x"), &bare).await;
    assert!(refused(&create, "start_position.entry_id"), "{create:?}");
    let outside = Position::EntryId { id: mark.entry_id.clone(), partition: Some(3) };
    let seek = broker.seek(stream, "sub", &outside).await;
    assert!(refused(&seek, "position.partition_entry.partition"), "{seek:?}");
    let create = broker.create_subscription(&SubscriptionConfig::new(stream, "x"), &outside).await;
    assert!(refused(&create, "start_position.partition_entry.partition"), "{create:?}");
    let malformed = Position::EntryId { id: "soon".into(), partition: Some(1) };
    let seek = broker.seek(stream, "sub", &malformed).await;
    assert!(refused(&seek, "position.partition_entry.entry_id"), "{seek:?}");
    assert!(matches!(broker.get_subscription(stream, "x").await, Err(BrokerError::NotFound(_))), "nothing created");

    broker.delete_stream(stream).await.unwrap();
}

#[tokio::test]
async fn seek_start_positions_and_partition_stats_on_one_redis() {
    let redis = RedisServer::start();
    let broker = Broker::new(&redis.url(), options(&unique_prefix())).unwrap();
    scenario(&broker, "orders").await;
    // A stream of one partition: the entry id alone is its partition 0's; no partition stats.
    broker.create_stream(&StreamConfig::new("single")).await.unwrap();
    broker.create_subscription(&SubscriptionConfig::new("single", "sub"), &Position::Earliest).await.unwrap();
    let published = broker.publish("single", vec![event("a", ""), event("b", "")]).await.unwrap();
    assert!(published.iter().all(|p| p.partition == 0));
    let bare = Position::EntryId { id: published[0].entry_id.clone(), partition: None };
    broker.seek("single", "sub", &bare).await.unwrap();
    let stats = broker.stream_stats("single").await.unwrap();
    assert!(stats.partitions.is_empty());
    assert_eq!(stats.subscriptions[0].lag, 1);
    let zero = Position::EntryId { id: published[0].entry_id.clone(), partition: Some(0) };
    broker.seek("single", "sub", &zero).await.unwrap();
    let one = Position::EntryId { id: published[0].entry_id.clone(), partition: Some(1) };
    assert!(refused(&broker.seek("single", "sub", &one).await, "position.partition_entry.partition"));
}

#[tokio::test]
async fn seek_start_positions_and_partition_stats_on_a_three_master_cluster() {
    let cluster = RedisCluster::start(3, 0);
    let broker = Broker::cluster(&cluster.urls(), options(&unique_prefix())).unwrap();
    scenario(&broker, "orders").await;
}
