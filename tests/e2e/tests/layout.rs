//! The layout version under a key prefix (`<p>:layout`): written on a fresh Redis by the first
//! service to start, and a newer version — data of a newer eventflow — refused at start by
//! every service with one clear line — or, when Redis was unreachable at start, kept
//! NOT_SERVING once Redis answers with such data.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use eventflow_broker::{Keys, schema::LAYOUT_VERSION};
use std::time::Duration;

use eventflow_e2e::{Kind, RedisServer, run_to_exit, start, start_unready, unique_prefix, wait_for_health};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_layout_found_after_an_outage_at_start_keeps_the_service_not_serving() {
    // The AOF carries the newer version over the restart below.
    let mut redis = RedisServer::start();
    let prefix = unique_prefix();
    let key = Keys::new(&prefix).layout();
    assert!(redis.raw(&format!("SET {key} {}", LAYOUT_VERSION + 1)).starts_with("+OK"));
    redis.stop();
    // Redis is down: the service starts without its layout check, NOT_SERVING.
    let publisher = start_unready(Kind::Publisher, &redis.url(), &prefix, &[]).await;
    // Past its start-up check (made while Redis is still down) once it reports liveness.
    wait_for_health(&publisher, eventflow_runtime::health::LIVENESS, ServingStatus::Serving).await;
    redis.restart();
    let service = Kind::Publisher.service_name();
    // Redis answers now; a service with an acceptable layout would be SERVING within one poll
    // (500 ms). This one must stay NOT_SERVING, checked over four polls.
    let mut health = HealthClient::new(publisher.channel().await);
    for _ in 0..20 {
        let reply = health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(reply.status, ServingStatus::NotServing as i32, "served over a newer layout");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The layout is checked again every poll while refused: back to the current version, SERVING.
    assert!(redis.raw(&format!("SET {key} {LAYOUT_VERSION}")).starts_with("+OK"));
    wait_for_health(&publisher, service, ServingStatus::Serving).await;
    publisher.stop().await;
}
