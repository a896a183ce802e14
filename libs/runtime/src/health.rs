//! gRPC health (grpc.health.v1): SERVING while Redis answers, NOT_SERVING while it does not or
//! while the server shuts down. Reported for "" (the whole server) and each service name —
//! the readiness signal. The extra name [`LIVENESS`] stays SERVING while the process runs
//! (until shutdown), so a liveness probe does not restart pods during a Redis outage.

use std::time::Duration;

use eventflow_broker::Broker;
use tokio_util::sync::CancellationToken;
use tonic_health::{ServingStatus, server::HealthReporter};

/// The health service name for liveness probes: SERVING from start until shutdown.
pub const LIVENESS: &str = "liveness";

/// How often Redis is pinged for health.
pub const PING_INTERVAL: Duration = Duration::from_millis(500);

/// Sets `status` for "" and every name in `services`.
pub async fn set_all(reporter: &HealthReporter, services: &[&str], status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for name in services {
        reporter.set_service_status(*name, status).await;
    }
}

/// Pings Redis every [`PING_INTERVAL`] and reports the result until `shutdown`, then reports
/// NOT_SERVING. Status changes are logged once, not on every ping.
pub fn spawn_redis_watch(
    reporter: HealthReporter,
    services: Vec<&'static str>,
    broker: Broker,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        reporter.set_service_status(LIVENESS, ServingStatus::Serving).await;
        let mut last: Option<bool> = None;
        loop {
            let up = broker.ping().await;
            let is_up = up.is_ok();
            if last != Some(is_up) {
                match &up {
                    Ok(()) => tracing::info!("redis reachable: SERVING"),
                    Err(e) => tracing::warn!(error = %e, "redis unreachable: NOT_SERVING"),
                }
                let status = if is_up { ServingStatus::Serving } else { ServingStatus::NotServing };
                set_all(&reporter, &services, status).await;
                last = Some(is_up);
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(PING_INTERVAL) => {}
            }
        }
        set_all(&reporter, &services, ServingStatus::NotServing).await;
        reporter.set_service_status(LIVENESS, ServingStatus::NotServing).await;
    })
}
