//! Partitioned streams against real Redis (libs/testkit: one redis-server, and a 3-master
//! cluster; a unique key prefix per test): a stream of 3 partitions is created, listed and shown
//! as one stream; events with one ordering key land in one partition in publish order, keyless
//! events spread, a retried event id is a duplicate; every partition is read and settled; an
//! ordered subscription keeps per-key order; stats sum the partitions; refusals name the field
//! (partitions 0 / too many, a change of partitions, an entry-id start without its partition);
//! a push subscription is created and updated in every partition; a delete leaves no key of
//! any partition. On the cluster the three partitions live on three different masters. Seek,
//! start positions and per-partition stats: partition_seek.rs.
//!
//! Dead letters (both on one Redis and on the cluster): events of several keys rejected in every
//! partition, interleaved in time, are listed as one queue newest first (each partition's in
//! reject order), paged with small pages (every one exactly once, pages full), per subscription
//! and across subscriptions; get, requeue (back on its own partition's redrive stream of that
//! one subscription only; on an ordered subscription at the head of its key in that partition),
//! delete, requeue-all and purge reach every partition; malformed ids and
//! tokens are INVALID_ARGUMENT naming the field, ids of partitions the stream lacks are not found.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{deliveries, event, options};

use std::collections::HashMap;

use eventflow_broker::{
    Broker, BrokerError, FlowControl, Position, PushConfig, Session, Source, StreamConfig, SubscriptionConfig,
    dlq::DeadLetter, model::entry_key, partition::route, partition_name, partition_names,
};
use eventflow_testkit::{RedisServer, cluster::RedisCluster, unique_prefix};

/// The payloads of every event of partition `i` of `stream` for subscription `sub`, in delivery
/// order (all acked), reading until `n` came.
async fn drain(broker: &Broker, stream: &str, i: u32, sub: &str, n: usize) -> Vec<String> {
    let mut session = Session::open(broker, &partition_name(stream, i), sub, FlowControl::default()).await.unwrap();
    let got = if n == 0 { Vec::new() } else { deliveries(&mut session, n).await };
    let ids: Vec<String> = got.iter().map(|d| d.ack_id.clone()).collect();
    let settled = broker.acknowledge(&ids).await.unwrap();
    assert!(settled.invalid.is_empty() && settled.expired.is_empty(), "{settled:?}");
    session.close().await.unwrap();
    got.into_iter().map(|d| String::from_utf8(d.payload).unwrap()).collect()
}

/// Entries in each partition of `stream`.
async fn lengths(broker: &Broker, stream: &str, partitions: u32) -> Vec<usize> {
    let mut conn = broker.conn().await.unwrap();
    let mut out = Vec::new();
    for i in 0..partitions {
        let key = broker.keys().stream(&partition_name(stream, i));
        let n: usize = redis::cmd("XLEN").arg(key).query_async(&mut conn).await.unwrap();
        out.push(n);
    }
    out
}

/// A stream name from `base` whose three partitions hash to the three slot ranges
/// `redis-cli --cluster create` gives three masters.
async fn spread_name(broker: &Broker, base: &str) -> String {
    let mut conn = broker.conn().await.unwrap();
    for n in 0..200 {
        let candidate = format!("{base}{n}");
        let mut thirds = Vec::new();
        for i in 0..3 {
            let slot: u16 = redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(broker.keys().stream(&partition_name(&candidate, i)))
                .query_async(&mut conn)
                .await
                .unwrap();
            thirds.push(slot / 5462);
        }
        thirds.sort_unstable();
        thirds.dedup();
        if thirds.len() == 3 {
            return candidate;
        }
    }
    panic!("no name from {base:?} spreads over three masters");
}

/// The whole scenario on `broker`; `urls` are the Redis nodes (to look for leftover keys).
async fn scenario(broker: &Broker, stream: &str, urls: &[String]) {
    // Refusals name the field.
    for bad in [0, 65] {
        let err = broker.create_stream(&StreamConfig { partitions: bad, ..StreamConfig::new(stream) }).await;
        assert!(
            matches!(&err, Err(BrokerError::InvalidArgument { field, .. }) if field == "stream.partitions"),
            "{err:?}"
        );
    }
    let created = broker.create_stream(&StreamConfig { partitions: 3, ..StreamConfig::new(stream) }).await.unwrap();
    assert_eq!(created.partitions, 3);
    assert_eq!(broker.get_stream(stream).await.unwrap().partitions, 3);
    let (names, _) = broker.list_stream_names("", 10).await.unwrap();
    assert_eq!(names, [stream], "partitions are not listed as streams");
    let internal = broker.get_stream(&partition_name(stream, 1)).await;
    assert!(matches!(internal, Err(BrokerError::InvalidArgument { .. })), "internal names are refused: {internal:?}");
    let change = broker.update_stream(&StreamConfig { partitions: 2, ..StreamConfig::new(stream) }).await;
    assert!(
        matches!(&change, Err(BrokerError::InvalidArgument { field, .. }) if field == "stream.partitions"),
        "{change:?}"
    );
    let updated =
        broker.update_stream(&StreamConfig { partitions: 3, max_len: 3000, ..StreamConfig::new(stream) }).await;
    assert_eq!(updated.unwrap().max_len, 3000, "the whole stream's max length is shown");

    broker.create_subscription(&SubscriptionConfig::new(stream, "sub"), &Position::Earliest).await.unwrap();
    let mut ordered = SubscriptionConfig::new(stream, "ord");
    ordered.ordered = true;
    broker.create_subscription(&ordered, &Position::Earliest).await.unwrap();
    let by_id = Position::EntryId { id: "1-0".into(), partition: None };
    let by_id = broker.create_subscription(&SubscriptionConfig::new(stream, "x"), &by_id).await;
    assert!(
        matches!(&by_id, Err(BrokerError::InvalidArgument { field, .. }) if field == "start_position.entry_id"),
        "{by_id:?}"
    );

    // 30 keyless events, 10 of key k1, 10 of k2, interleaved.
    let mut events = Vec::new();
    for i in 0..10 {
        events.push(event(&format!("a{i}"), ""));
        events.push(event(&format!("k1-{i}"), "k1"));
        events.push(event(&format!("b{i}"), ""));
        events.push(event(&format!("k2-{i}"), "k2"));
        events.push(event(&format!("c{i}"), ""));
    }
    let published = broker.publish(stream, events).await.unwrap();
    assert_eq!(published.len(), 50);
    assert!(published.iter().all(|p| !p.duplicate));
    let retried = broker.publish(stream, vec![event("a3", ""), event("k1-4", "k1")]).await.unwrap();
    assert!(retried.iter().all(|p| p.duplicate), "a retried id is a duplicate: {retried:?}");
    assert_eq!(retried[0].entry_id, published[15].entry_id, "results come back in request order");
    assert_eq!(retried[1].entry_id, published[21].entry_id);
    let lengths = lengths(broker, stream, 3).await;
    assert_eq!(lengths.iter().sum::<usize>(), 50);
    assert!(lengths.iter().all(|&n| n >= 5), "keyless events spread: {lengths:?}");

    let stats = broker.stream_stats(stream).await.unwrap();
    assert_eq!(stats.length, 50);
    let sub = stats.subscriptions.iter().find(|s| s.name == "sub").unwrap();
    assert_eq!(sub.lag, 50, "lag sums the partitions");

    // Every partition is read; one key's events are in one partition, in publish order.
    let mut all = Vec::new();
    for (i, n) in (0u32..).zip(&lengths) {
        let got = drain(broker, stream, i, "sub", *n).await;
        for key in ["k1", "k2"] {
            let of_key: Vec<&String> = got.iter().filter(|p| p.starts_with(&format!("{key}-"))).collect();
            if !of_key.is_empty() {
                let expected: Vec<String> = (0..10).map(|j| format!("{key}-{j}")).collect();
                assert_eq!(of_key, expected.iter().collect::<Vec<_>>(), "{key} whole and in order in partition {i}");
            }
        }
        all.extend(got);
    }
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 50, "every event of every partition once");
    let stats = broker.stream_stats(stream).await.unwrap();
    let sub = stats.subscriptions.iter().find(|s| s.name == "sub").unwrap();
    assert_eq!((sub.lag, sub.pending), (0, 0), "acks settled every partition");

    // Ordered: per partition one event of a key at a time.
    let mut sessions = HashMap::new();
    for i in 0..3u32 {
        let s = Session::open(broker, &partition_name(stream, i), "ord", FlowControl::default()).await.unwrap();
        sessions.insert(i, s);
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for _round in 0..10 {
        let mut acks = Vec::new();
        let mut in_round: HashMap<&str, usize> = HashMap::new();
        for session in sessions.values_mut() {
            for d in session.next_batch().await.unwrap() {
                let payload = String::from_utf8(d.payload.clone()).unwrap();
                for key in ["k1", "k2"] {
                    if let Some(j) = payload.strip_prefix(&format!("{key}-")) {
                        assert_eq!(j.parse::<usize>().unwrap(), seen.get(key).copied().unwrap_or(0), "{key} in order");
                        *seen.entry(key).or_default() += 1;
                        *in_round.entry(key).or_default() += 1;
                    }
                }
                acks.push(d.ack_id);
            }
        }
        assert!(in_round.values().all(|&n| n <= 1), "one event of a key at a time: {in_round:?}");
        broker.acknowledge(&acks).await.unwrap();
    }
    for (_, s) in sessions {
        s.close().await.unwrap();
    }

    // Push subscriptions are created and updated in every partition (the pusher runs one
    // session per partition).
    let mut push = SubscriptionConfig::new(stream, "hook");
    push.push = Some(PushConfig::new("https://example.com/hook", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
    broker.create_subscription(&push, &Position::Latest).await.unwrap();
    push.push = Some(PushConfig::new("https://example.com/other", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
    broker.update_subscription(&push).await.unwrap();
    for part in partition_names(stream, 3) {
        let session = Session::open(broker, &part, "hook", FlowControl::default()).await.unwrap();
        assert_eq!(session.config().push.as_ref().unwrap().endpoint, "https://example.com/other", "{part}");
        session.close().await.unwrap();
    }

    broker.delete_subscription(stream, "ord").await.unwrap();
    broker.delete_stream(stream).await.unwrap();
    let prefix = broker.keys().prefix().to_string();
    for url in urls {
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut conn).await.unwrap();
        assert!(keys.iter().all(|k| !k.contains(&format!("{{{stream}"))), "no key of any partition is left: {keys:?}");
    }
    assert!(matches!(broker.get_stream(stream).await, Err(BrokerError::NotFound(_))));
}

#[tokio::test]
async fn a_partitioned_stream_on_one_redis() {
    let redis = RedisServer::start();
    let broker = Broker::new(&redis.url(), options(&unique_prefix())).unwrap();
    scenario(&broker, "orders", &[redis.url()]).await;
}

#[tokio::test]
async fn a_partitioned_stream_on_a_three_master_cluster_spreads_over_the_masters() {
    let cluster = RedisCluster::start(3, 0);
    let broker = Broker::cluster(&cluster.urls(), options(&unique_prefix())).unwrap();
    // The owners are checked here, on the real cluster.
    let name = spread_name(&broker, "orders").await;
    broker.create_stream(&StreamConfig { partitions: 3, ..StreamConfig::new(&name) }).await.unwrap();
    let mut owners: Vec<usize> =
        (0..3).map(|i| cluster.owner_of(&broker.keys().stream(&partition_name(&name, i)))).collect();
    owners.sort_unstable();
    owners.dedup();
    assert_eq!(owners.len(), 3, "each partition on its own master");
    broker.delete_stream(&name).await.unwrap();
    scenario(&broker, &name, &cluster.urls()).await;
}

#[tokio::test]
async fn a_publish_to_a_missing_stream_does_not_pin_its_partition_count() {
    let redis = RedisServer::start();
    let broker = Broker::new(&redis.url(), options(&unique_prefix())).unwrap();
    let missing = broker.publish("late", vec![event("e0", "")]).await;
    assert!(matches!(missing, Err(BrokerError::NotFound(_))), "{missing:?}");
    broker.create_stream(&StreamConfig { partitions: 3, ..StreamConfig::new("late") }).await.unwrap();
    let events = (0..30).map(|i| event(&format!("e{i}"), "")).collect();
    broker.publish("late", events).await.unwrap();
    let lengths = lengths(&broker, "late", 3).await;
    assert!(lengths.iter().all(|&n| n > 0), "routed over all 3 partitions at once: {lengths:?}");
}

/// The listing order of a dead letter (newest first = largest first): its queue entry id, then
/// subscription, then partition.
fn listing_order(d: &DeadLetter) -> ((u64, u64), String, u32) {
    let entry = d.id.split('~').next().unwrap();
    (entry_key(entry), d.subscription.clone(), d.partition)
}

/// Every page of the dead letters of `sub` ('' = all) of `stream`, `page_size` at a time.
async fn pages(broker: &Broker, stream: &str, sub: &str, page_size: usize) -> Vec<Vec<DeadLetter>> {
    let (mut pages, mut token) = (Vec::new(), String::new());
    loop {
        let (page, next) = broker.list_dead_letters(stream, sub, page_size, &token).await.unwrap();
        pages.push(page);
        if next.is_empty() {
            return pages;
        }
        assert!(pages.len() < 100, "paging ends");
        token = next;
    }
}

/// Entries of the redrive stream of `sub` in partition `i` of `stream`.
async fn redrive_len(broker: &Broker, stream: &str, i: u32, sub: &str) -> usize {
    let mut conn = broker.conn().await.unwrap();
    let key = broker.keys().redrive(&partition_name(stream, i), sub);
    redis::cmd("XLEN").arg(key).query_async(&mut conn).await.unwrap()
}

/// The dead-letter API on a 3-partition `stream` (see the module doc).
async fn dead_letter_scenario(broker: &Broker, stream: &str) {
    broker.create_stream(&StreamConfig { partitions: 3, ..StreamConfig::new(stream) }).await.unwrap();
    for sub in ["sub", "sib"] {
        broker.create_subscription(&SubscriptionConfig::new(stream, sub), &Position::Earliest).await.unwrap();
    }
    // 6 keys, 4 events each: the keys spread over the partitions.
    let events = (0..4).flat_map(|j| (0..6).map(move |k| event(&format!("k{k}-{j}"), &format!("k{k}")))).collect();
    broker.publish(stream, events).await.unwrap();
    let lengths = lengths(broker, stream, 3).await;
    assert!(lengths.iter().all(|&n| n > 0), "keys in every partition: {lengths:?}");

    // "sib" rejects the first event of each partition and acks the rest.
    for (i, n) in (0u32..).zip(&lengths) {
        let mut session =
            Session::open(broker, &partition_name(stream, i), "sib", FlowControl::default()).await.unwrap();
        let got = deliveries(&mut session, *n).await;
        broker.reject(&[got[0].ack_id.clone()], "sib").await.unwrap();
        broker.acknowledge(&got[1..].iter().map(|d| d.ack_id.clone()).collect::<Vec<_>>()).await.unwrap();
        session.close().await.unwrap();
    }
    // "sub" rejects everything, one at a time and round robin over the partitions, so the
    // partitions' dead letters interleave in time.
    let mut sessions = Vec::new();
    let mut got = Vec::new();
    for (i, n) in (0u32..).zip(&lengths) {
        let mut session =
            Session::open(broker, &partition_name(stream, i), "sub", FlowControl::default()).await.unwrap();
        got.push(deliveries(&mut session, *n).await);
        sessions.push(session);
    }
    for round in 0..*lengths.iter().max().unwrap() {
        for of_partition in &got {
            if let Some(d) = of_partition.get(round) {
                let reason = format!("bad {}", String::from_utf8_lossy(&d.payload));
                let settled = broker.reject(std::slice::from_ref(&d.ack_id), &reason).await.unwrap();
                assert!(settled.invalid.is_empty() && settled.expired.is_empty(), "{settled:?}");
            }
        }
    }
    for session in sessions {
        session.close().await.unwrap();
    }
    let stats = broker.stream_stats(stream).await.unwrap();
    let depth = |name: &str| stats.subscriptions.iter().find(|s| s.name == name).unwrap().dead_letters;
    assert_eq!((depth("sub"), depth("sib")), (24, 3), "DLQ depth sums the partitions");

    // One listing: every dead letter once, newest first, each partition's in reject order.
    let (all, token) = broker.list_dead_letters(stream, "sub", 1000, "").await.unwrap();
    assert!(token.is_empty());
    assert_eq!(all.len(), 24);
    assert!(all.windows(2).all(|w| listing_order(&w[0]) > listing_order(&w[1])), "newest first");
    for (i, delivered) in (0u32..).zip(&got) {
        let listed: Vec<&[u8]> = all.iter().rev().filter(|d| d.partition == i).map(|d| d.payload.as_slice()).collect();
        let rejected: Vec<&[u8]> = delivered.iter().map(|d| d.payload.as_slice()).collect();
        assert_eq!(listed, rejected, "partition {i}'s dead letters in reject order");
    }
    for d in &all {
        assert_eq!((d.stream.as_str(), d.subscription.as_str()), (stream, "sub"));
        assert_eq!(d.reason, format!("bad {}", String::from_utf8_lossy(&d.payload)));
        assert_eq!(d.id.contains('~'), d.partition > 0, "ids name partitions from 1: {}", d.id);
    }
    // Small pages: full, in the same order, every dead letter once; across subscriptions too.
    let paged = pages(broker, stream, "sub", 5).await;
    assert_eq!(paged.iter().map(Vec::len).collect::<Vec<_>>(), [5, 5, 5, 5, 4]);
    assert_eq!(paged.concat(), all);
    let (everything, _) = broker.list_dead_letters(stream, "", 1000, "").await.unwrap();
    assert_eq!(everything.len(), 27);
    assert!(everything.windows(2).all(|w| listing_order(&w[0]) > listing_order(&w[1])), "newest first");
    let paged = pages(broker, stream, "", 4).await;
    assert_eq!(paged.iter().map(Vec::len).collect::<Vec<_>>(), [4, 4, 4, 4, 4, 4, 3]);
    assert_eq!(paged.concat(), everything);
    for bad in ["garbage", "1-0,sub", "1-0,sub;;;", "1-0,sub;x,sub;"] {
        let err = broker.list_dead_letters(stream, "sub", 5, bad).await;
        assert!(
            matches!(&err, Err(BrokerError::InvalidArgument { field, .. }) if field == "page_token"),
            "{bad}: {err:?}"
        );
    }

    // Get, from partition 2, by the id listed; ids of partitions the stream lacks are not found.
    let far = all.iter().find(|d| d.partition == 2).unwrap().clone();
    assert_eq!(broker.get_dead_letter(stream, "sub", &far.id).await.unwrap(), far);
    let entry = far.id.split('~').next().unwrap();
    let beyond = format!("{entry}~3");
    assert!(matches!(broker.get_dead_letter(stream, "sub", &beyond).await, Err(BrokerError::NotFound(_))));
    for bad in ["x~1", &format!("{entry}~0"), &format!("{entry}~x")] {
        let err = broker.get_dead_letter(stream, "sub", bad).await;
        assert!(matches!(&err, Err(BrokerError::InvalidArgument { field, .. }) if field == "id"), "{bad}: {err:?}");
    }
    let err = broker.requeue_dead_letters(stream, "sub", &["1-0~".into()]).await;
    assert!(matches!(&err, Err(BrokerError::InvalidArgument { field, .. }) if field == "ids"), "{err:?}");

    // Requeue: back on partition 2's redrive stream of "sub" only, delivered from attempt 1.
    let (moved, missing) = broker.requeue_dead_letters(stream, "sub", &[beyond.clone(), far.id.clone()]).await.unwrap();
    assert_eq!((moved, missing), (1, vec![beyond]));
    for i in 0..3 {
        for sub in ["sub", "sib"] {
            let expected = usize::from(i == 2 && sub == "sub");
            assert_eq!(redrive_len(broker, stream, i, sub).await, expected, "redrive of {sub} in partition {i}");
        }
    }
    let mut session = Session::open(broker, &partition_name(stream, 2), "sub", FlowControl::default()).await.unwrap();
    let again = deliveries(&mut session, 1).await;
    assert_eq!((again[0].payload.as_slice(), again[0].attempt), (far.payload.as_slice(), 1));
    assert_eq!(again[0].source, Source::Redrive);
    broker.acknowledge(&[again[0].ack_id.clone()]).await.unwrap();
    session.close().await.unwrap();
    assert!(matches!(broker.get_dead_letter(stream, "sub", &far.id).await, Err(BrokerError::NotFound(_))));
    let stats = broker.stream_stats(stream).await.unwrap();
    let sib = stats.subscriptions.iter().find(|s| s.name == "sib").unwrap();
    assert_eq!((sib.lag, sib.pending, sib.redrive_pending, sib.dead_letters), (0, 0, 0, 3), "the sibling saw nothing");

    // Delete reaches partitions 0 and 1; ids not there (or of no partition) count nothing.
    let zero = all.iter().find(|d| d.partition == 0).unwrap();
    let one = all.iter().find(|d| d.partition == 1).unwrap();
    let ids = [zero.id.clone(), one.id.clone(), format!("{entry}~7"), far.id.clone()];
    assert_eq!(broker.delete_dead_letters(stream, "sub", &ids).await.unwrap(), 2);
    let (left, _) = broker.list_dead_letters(stream, "sub", 1000, "").await.unwrap();
    assert_eq!(left.len(), 21);
    assert!(!left.iter().any(|d| d.id == zero.id || d.id == one.id));

    // Ordered: a requeue goes back to the head of its key in its own partition's gate.
    let mut ordered = SubscriptionConfig::new(stream, "ord");
    ordered.ordered = true;
    broker.create_subscription(&ordered, &Position::Latest).await.unwrap();
    let key = (0..).map(|n| format!("o{n}")).find(|k| route(k, "", 3) > 0).unwrap();
    let p = route(&key, "", 3);
    broker.publish(stream, vec![event("o-0", &key), event("o-1", &key)]).await.unwrap();
    let mut session = Session::open(broker, &partition_name(stream, p), "ord", FlowControl::default()).await.unwrap();
    let first = deliveries(&mut session, 1).await;
    assert_eq!(first[0].payload, b"o-0");
    broker.reject(std::slice::from_ref(&first[0].ack_id), "o").await.unwrap();
    let second = deliveries(&mut session, 1).await;
    assert_eq!(second[0].payload, b"o-1", "the key moved on");
    let (letters, _) = broker.list_dead_letters(stream, "ord", 10, "").await.unwrap();
    assert_eq!((letters.len(), letters[0].partition, letters[0].ordering_key.as_str()), (1, p, key.as_str()));
    // Requeued while o-1 holds the key: first in line, delivered once o-1 is settled.
    assert_eq!(broker.requeue_dead_letters(stream, "ord", &[letters[0].id.clone()]).await.unwrap().0, 1);
    broker.acknowledge(std::slice::from_ref(&second[0].ack_id)).await.unwrap();
    let again = deliveries(&mut session, 1).await;
    assert_eq!((again[0].payload.as_slice(), again[0].source), (b"o-0".as_slice(), Source::Redrive));
    broker.acknowledge(std::slice::from_ref(&again[0].ack_id)).await.unwrap();
    session.close().await.unwrap();

    // Requeue-all and purge go through every partition.
    assert_eq!(broker.requeue_all_dead_letters(stream, "sib").await.unwrap(), 3);
    for i in 0..3 {
        assert_eq!(redrive_len(broker, stream, i, "sib").await, 1, "sib's dead letter of partition {i} is back there");
    }
    assert_eq!(broker.purge_dead_letters(stream, "sub").await.unwrap(), 21);
    assert!(broker.list_dead_letters(stream, "", 10, "").await.unwrap().0.is_empty());
    let stats = broker.stream_stats(stream).await.unwrap();
    assert!(stats.subscriptions.iter().all(|s| s.dead_letters == 0), "{stats:?}");
    broker.delete_stream(stream).await.unwrap();
}

#[tokio::test]
async fn dead_letters_of_a_partitioned_stream_on_one_redis() {
    let redis = RedisServer::start();
    let broker = Broker::new(&redis.url(), options(&unique_prefix())).unwrap();
    dead_letter_scenario(&broker, "orders").await;
}

#[tokio::test]
async fn dead_letters_of_a_partitioned_stream_on_a_three_master_cluster() {
    let cluster = RedisCluster::start(3, 0);
    let broker = Broker::cluster(&cluster.urls(), options(&unique_prefix())).unwrap();
    let name = spread_name(&broker, "orders").await;
    dead_letter_scenario(&broker, &name).await;
}
