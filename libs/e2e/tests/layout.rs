//! The layout version under a key prefix (`<p>:layout`): written on a fresh Redis by the first
//! service to start, and a newer version — data of a newer eventflow — refused at start by
//! every service with one clear line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use eventflow_broker::{Keys, schema::LAYOUT_VERSION};
use eventflow_e2e::{Kind, RedisServer, run_to_exit, start, unique_prefix};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_redis_gets_the_current_layout_version() {
    let redis = RedisServer::start_with(&["--appendonly", "no"]);
    let prefix = unique_prefix();
    let publisher = start(Kind::Publisher, &redis.url(), &prefix, &[]).await;
    let stored = redis.raw(&format!("GET {}", Keys::new(&prefix).layout()));
    assert_eq!(stored.lines().nth(1), Some(LAYOUT_VERSION.to_string().as_str()), "{stored:?}");
    publisher.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_layout_is_refused_at_start() {
    let redis = RedisServer::start_with(&["--appendonly", "no"]);
    let prefix = unique_prefix();
    let key = Keys::new(&prefix).layout();
    let newer = LAYOUT_VERSION + 1;
    assert!(redis.raw(&format!("SET {key} {newer}")).starts_with("+OK"));
    for kind in [Kind::Publisher, Kind::Subscriber, Kind::Admin, Kind::Dlq] {
        let error = run_to_exit(kind, &redis.url(), &prefix, &[]).await.unwrap_err().to_string();
        for part in [key.as_str(), &format!("layout version {newer}"), "newer eventflow"] {
            assert!(error.contains(part), "{kind:?}: {error}");
        }
        assert!(!error.contains('\n'), "one line: {error}");
    }
    assert_eq!(redis.raw(&format!("GET {key}")).lines().nth(1), Some(newer.to_string().as_str()), "left alone");
}
