//! HTTP probes on the metrics port, for probes that cannot speak gRPC over TLS (kubelet's
//! native gRPC probe has no TLS): `GET /healthz` (liveness) and `GET /readyz` (readiness).
//!
//! `/healthz` answers 200 whenever the process answers HTTP: a Redis outage must not restart
//! pods. `/readyz` answers 200 when the service's own name is SERVING in grpc.health.v1 and 503
//! otherwise; it reads the statuses the gRPC health reporter holds (see [`crate::health`]), so
//! HTTP and gRPC readiness can never disagree. Both stay open when `/metrics` is protected:
//! they reveal nothing but up/down.

use axum::{Router, extract::State, http::StatusCode, routing::get};
use tonic::Request;
use tonic_health::{
    pb::{HealthCheckRequest, health_check_response::ServingStatus, health_server::Health},
    server::{HealthReporter, HealthService},
};

/// What `/readyz` asks the health statuses for.
#[derive(Clone)]
struct Readiness {
    /// The statuses the gRPC health service serves, shared with the reporter that sets them.
    health: std::sync::Arc<HealthService>,
    /// The service's own health name: readiness follows it, as the gRPC readiness probe does.
    service_name: &'static str,
}

/// The `/healthz` and `/readyz` routes for the service `service_name`, reading the statuses
/// `reporter` sets.
pub fn routes(reporter: HealthReporter, service_name: &'static str) -> Router {
    let readiness =
        Readiness { health: std::sync::Arc::new(HealthService::from_health_reporter(reporter)), service_name };
    Router::new().route("/healthz", get(|| async { "ok\n" })).route("/readyz", get(ready)).with_state(readiness)
}

/// 200 while the service is SERVING; 503 with the status otherwise (not yet reported, Redis
/// unreachable or unusable, shutting down).
async fn ready(State(readiness): State<Readiness>) -> (StatusCode, &'static str) {
    let request = Request::new(HealthCheckRequest { service: readiness.service_name.to_string() });
    let status = match readiness.health.check(request).await {
        Ok(response) => response.into_inner().status(),
        // Not registered yet: the server has not started reporting.
        Err(_) => ServingStatus::Unknown,
    };
    match status {
        ServingStatus::Serving => (StatusCode::OK, "SERVING\n"),
        ServingStatus::NotServing => (StatusCode::SERVICE_UNAVAILABLE, "NOT_SERVING\n"),
        ServingStatus::Unknown | ServingStatus::ServiceUnknown => (StatusCode::SERVICE_UNAVAILABLE, "UNKNOWN\n"),
    }
}
