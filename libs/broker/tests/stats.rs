//! Stream stats against a real redis-server: the redelivery count reads a subscription's pending
//! list in pages and counts each entry once, on both sides of every page boundary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use eventflow_broker::{Broker, BrokerOptions, Keys, Position, StreamConfig, SubscriptionConfig};
use eventflow_testkit::{RedisServer, unique_prefix};

/// Pending entries in all: two and a half pages of the redelivery count.
const PENDING: usize = 25_000;

#[tokio::test]
async fn redeliveries_are_counted_once_across_pending_pages() {
    let redis = RedisServer::start_with(&["--appendonly", "no"]);
    let prefix = unique_prefix();
    let broker =
        Broker::new(&redis.url(), BrokerOptions { prefix: prefix.clone(), ..BrokerOptions::default() }).unwrap();
    broker.create_stream(&StreamConfig::new("s")).await.unwrap();
    broker.create_subscription(&SubscriptionConfig::new("s", "sub"), &Position::Earliest).await.unwrap();
    let key = Keys::new(&prefix).stream("s");
    let mut conn = redis::Client::open(redis.url()).unwrap().get_connection().unwrap();
    let mut pipe = redis::pipe();
    for i in 0..PENDING {
        pipe.cmd("XADD").arg(&key).arg("*").arg("n").arg(i).ignore();
    }
    pipe.query::<()>(&mut conn).unwrap();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("sub")
        .arg("c1")
        .arg("COUNT")
        .arg(PENDING)
        .arg("STREAMS")
        .arg(&key)
        .arg(">")
        .query(&mut conn)
        .unwrap();
    let entries: Vec<(String, Vec<(String, String)>)> =
        redis::cmd("XRANGE").arg(&key).arg("-").arg("+").query(&mut conn).unwrap();
    // Delivered a second time (XCLAIM counts a delivery): the first and last entry of each page.
    let again: Vec<&str> =
        [0, 9_999, 10_000, 19_999, 20_000, PENDING - 1].iter().map(|&i| entries[i].0.as_str()).collect();
    let _: redis::Value =
        redis::cmd("XCLAIM").arg(&key).arg("sub").arg("c2").arg(0).arg(&again).query(&mut conn).unwrap();

    let stats = broker.stream_stats("s").await.unwrap().subscriptions.remove(0);
    assert_eq!(stats.pending, PENDING as u64);
    assert_eq!(stats.redelivered, again.len() as u64);
}
