//! The HTTP probes on each metrics port (what the chart's kubelet probes call, TLS or not):
//! `/healthz` answers 200 while the process runs, `/readyz` follows grpc.health.v1 readiness —
//! 503 while Redis is down, 200 again once it is back — and both work when gRPC serves TLS.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{net::SocketAddr, time::Duration};

use eventflow_e2e::{
    Kind, RedisServer, Running, Stack,
    certs::{Ca, TlsDir, client_tls},
    eventually, http_get, start_tls, unique_prefix,
};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

const WAIT: Duration = Duration::from_secs(30);

/// The status code and body of `GET path` on `addr`.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let (head, body) = http_get(addr, path).await;
    let code = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("status line: {head}"));
    (code, body)
}

/// Waits until `/readyz` of `running` answers `code`.
async fn readyz_becomes(running: &Running, code: u16) -> String {
    eventually(&format!("/readyz of {} = {code}", running.metrics_addr), WAIT, || async {
        let (got, body) = get(running.metrics_addr, "/readyz").await;
        (got == code).then_some(body)
    })
    .await
}

/// The gRPC readiness of `running`'s own service name.
async fn grpc_readiness(running: &Running, kind: Kind) -> ServingStatus {
    let request = HealthCheckRequest { service: kind.service_name().into() };
    HealthClient::new(running.channel().await).check(request).await.unwrap().into_inner().status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readyz_follows_redis_and_healthz_stays_up() {
    let mut stack = Stack::start().await;
    let services = [
        (Kind::Publisher, &stack.publisher),
        (Kind::Subscriber, &stack.subscriber),
        (Kind::Admin, &stack.admin),
        (Kind::Dlq, &stack.dlq),
    ];
    for (_, running) in services {
        assert_eq!(get(running.metrics_addr, "/healthz").await, (200, "ok\n".into()));
        assert_eq!(get(running.metrics_addr, "/readyz").await, (200, "SERVING\n".into()));
    }

    stack.redis.stop();
    for (kind, running) in services {
        assert_eq!(readyz_becomes(running, 503).await, "NOT_SERVING\n");
        // The same state as gRPC health: one readiness, two ways to ask.
        assert_eq!(grpc_readiness(running, kind).await, ServingStatus::NotServing);
        assert_eq!(get(running.metrics_addr, "/healthz").await.0, 200, "a Redis outage must not fail liveness");
    }

    stack.redis.restart();
    for (kind, running) in services {
        readyz_becomes(running, 200).await;
        assert_eq!(grpc_readiness(running, kind).await, ServingStatus::Serving);
    }
}

/// Under TLS the metrics port stays plain HTTP, so kubelet's httpGet probes work unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_are_plain_http_when_grpc_serves_tls() {
    let redis = RedisServer::start();
    let (ca, dir) = (Ca::new("probes"), TlsDir::new());
    dir.install(&ca.server());
    let args = dir.args(false);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let publisher = start_tls(Kind::Publisher, &redis.url(), &unique_prefix(), &args, client_tls(&ca, None)).await;
    assert_eq!(get(publisher.metrics_addr, "/healthz").await.0, 200);
    assert_eq!(readyz_becomes(&publisher, 200).await, "SERVING\n");
    publisher.stop().await;
}
