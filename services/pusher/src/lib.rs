//! The pusher binary: delivers push subscriptions to their webhooks (see `eventflow_push`),
//! serving gRPC health and reflection only, plus `/metrics` and the HTTP probes.

use std::{net::SocketAddr, time::Duration};

use eventflow_push::{client::HttpClient, metrics::PushMetrics, pusher, sink::Shared};
use eventflow_runtime::{
    CancellationToken,
    config::{Basics, CommonArgs},
    serve::{Listeners, ServeError, Served, run_service},
};
use tonic::service::Routes;

/// The name health reports for the pusher (it serves no gRPC API of its own).
pub const SERVICE_NAME: &str = "eventflow-pusher";

/// Configuration of the pusher binary.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "eventflow-pusher",
    version,
    about = "eventflow pusher: POSTs push subscriptions' events to their webhooks"
)]
pub struct Config {
    /// Redis and authentication settings.
    #[command(flatten)]
    pub common: CommonArgs,
    /// gRPC listen address (health and reflection only).
    #[arg(long, env = "EVENTFLOW_GRPC_ADDR", default_value = "0.0.0.0:50057")]
    pub grpc_addr: SocketAddr,
    /// Plain-HTTP listen address of Prometheus `/metrics` and of the probes `/healthz`
    /// (liveness) and `/readyz` (readiness).
    #[arg(long, env = "EVENTFLOW_METRICS_ADDR", default_value = "0.0.0.0:9097")]
    pub metrics_addr: SocketAddr,
    /// Let push endpoints use plain http and reach loopback, private and link-local addresses
    /// (development and tests; never where subscription owners are untrusted).
    #[arg(long, env = "EVENTFLOW_PUSH_ALLOW_PRIVATE", default_value_t = false)]
    pub push_allow_private: bool,
    /// PEM file of CA certificates trusted for https endpoints besides the system's roots (a
    /// private CA of internal endpoints). Read at start.
    #[arg(long, env = "EVENTFLOW_PUSH_CA_FILE")]
    pub push_ca_file: Option<std::path::PathBuf>,
    /// How often the pusher looks for new, changed and removed push subscriptions (ms).
    #[arg(long, env = "EVENTFLOW_PUSH_POLL_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(10..))]
    pub push_poll_ms: u64,
}

/// Pushes and serves health on `listeners` until `shutdown`.
pub async fn run(config: Config, listeners: Listeners, shutdown: CancellationToken) -> Result<(), ServeError> {
    let Basics { broker, auth, registry, .. } = config.common.basics()?;
    let metrics = PushMetrics::register(&registry).map_err(|e| ServeError::Config(format!("metrics: {e}")))?;
    let extra_roots = match &config.push_ca_file {
        Some(path) => Some(
            std::fs::read(path).map_err(|e| ServeError::Config(format!("--push-ca-file {}: {e}", path.display())))?,
        ),
        None => None,
    };
    let client = HttpClient::new(config.push_allow_private, extra_roots.as_deref())
        .map_err(|e| ServeError::Config(e.to_string()))?;
    if config.push_allow_private {
        tracing::warn!("EVENTFLOW_PUSH_ALLOW_PRIVATE is on: push endpoints may use plain http and private addresses");
    }
    let shared = Shared { broker: broker.clone(), client, metrics };
    let pushing = tokio::spawn(pusher::run(shared, Duration::from_millis(config.push_poll_ms), shutdown.clone()));
    let served = Served { routes: Routes::default(), name: SERVICE_NAME, auth };
    let result = run_service(listeners, served, broker, registry, &config.common.server, shutdown.clone()).await;
    shutdown.cancel();
    if let Err(e) = pushing.await {
        tracing::warn!(error = %e, "pusher task failed");
    }
    result
}
