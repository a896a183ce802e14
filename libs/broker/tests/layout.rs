//! `Broker::check_layout` against a real redis-server: the version is written when absent, read
//! back as current, and a newer or damaged one is reported, never overwritten.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use eventflow_broker::{Broker, BrokerOptions, LayoutCheck, schema::LAYOUT_VERSION};
use eventflow_testkit::{RedisServer, unique_prefix};

fn broker(redis: &RedisServer) -> Broker {
    Broker::new(&redis.url(), BrokerOptions { prefix: unique_prefix(), ..BrokerOptions::default() }).unwrap()
}

#[tokio::test]
async fn the_version_is_written_once_then_current() {
    let redis = RedisServer::start_with(&["--appendonly", "no"]);
    let broker = broker(&redis);
    assert_eq!(broker.check_layout().await.unwrap(), LayoutCheck::Written);
    assert_eq!(broker.check_layout().await.unwrap(), LayoutCheck::Current);
    let stored = redis.raw(&format!("GET {}", broker.keys().layout()));
    assert_eq!(stored.lines().nth(1), Some(LAYOUT_VERSION.to_string().as_str()), "{stored:?}");
}

#[tokio::test]
async fn a_newer_or_damaged_version_is_reported_and_kept() {
    let redis = RedisServer::start_with(&["--appendonly", "no"]);
    let broker = broker(&redis);
    let key = broker.keys().layout();
    assert!(redis.raw(&format!("SET {key} {}", LAYOUT_VERSION + 1)).starts_with("+OK"));
    assert_eq!(broker.check_layout().await.unwrap(), LayoutCheck::Newer(LAYOUT_VERSION + 1));
    assert!(redis.raw(&format!("SET {key} garbage")).starts_with("+OK"));
    let error = broker.check_layout().await.unwrap_err().to_string();
    assert!(error.contains("garbage") && error.contains(&key), "{error}");
    assert!(redis.raw(&format!("GET {key}")).contains("garbage"), "left alone");
}
