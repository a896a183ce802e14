//! The relay binary: publishes the committed rows of the PostgreSQL outbox to their streams
//! (see `eventflow_relay_core`), serving gRPC health and reflection only, plus `/metrics` and
//! the HTTP probes. Health is NOT_SERVING while Redis or PostgreSQL is unreachable. The
//! migrations are applied at start (unless `--no-migrate`), retried while PostgreSQL is down;
//! relaying starts once they are applied.

use std::{net::SocketAddr, time::Duration};

use eventflow_pg::probe::PgProbe;
use eventflow_relay_core::{Relay, RelayOptions, maintenance, metrics::RelayMetrics};
use eventflow_runtime::{
    CancellationToken,
    config::{Basics, CommonArgs},
    ingest::{Ingest, MAX_EVENTS_PER_CALL},
    serve::{Listeners, ServeError, Served, run_service_with},
};
use tonic::service::Routes;

/// The name health reports for the relay (it serves no gRPC API of its own).
pub const SERVICE_NAME: &str = "eventflow-relay";

/// Configuration of the relay binary.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "eventflow-relay",
    version,
    about = "eventflow relay: publishes committed rows of a PostgreSQL transactional outbox to their streams"
)]
pub struct Config {
    /// Redis and authentication settings.
    #[command(flatten)]
    pub common: CommonArgs,
    /// PostgreSQL URL of the database holding the outbox (`postgres://user:password@host/db`).
    #[arg(long, env = "EVENTFLOW_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// Do not apply the schema migrations at start (an operator applies them).
    #[arg(long, env = "EVENTFLOW_NO_MIGRATE", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_migrate: bool,
    /// gRPC listen address (health and reflection only).
    #[arg(long, env = "EVENTFLOW_GRPC_ADDR", default_value = "0.0.0.0:50056")]
    pub grpc_addr: SocketAddr,
    /// Plain-HTTP listen address of Prometheus `/metrics` and of the probes `/healthz`
    /// (liveness) and `/readyz` (readiness).
    #[arg(long, env = "EVENTFLOW_METRICS_ADDR", default_value = "0.0.0.0:9096")]
    pub metrics_addr: SocketAddr,
    /// Most outbox rows one batch claims and publishes (1 to 1000).
    #[arg(long, env = "EVENTFLOW_RELAY_BATCH_SIZE", default_value_t = 1000,
          value_parser = clap::value_parser!(u16).range(1..=MAX_EVENTS_PER_CALL as i64))]
    pub relay_batch_size: u16,
    /// How often the relay looks for rows without a notification, in milliseconds (the
    /// fallback when a NOTIFY is lost, e.g. while the LISTEN connection reconnects).
    #[arg(long, env = "EVENTFLOW_RELAY_POLL_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(10..))]
    pub relay_poll_ms: u64,
    /// Batches this replica runs concurrently (more replicas share the work the same way).
    /// More than one pays off for rows without a partition key or with many keys; workers on a
    /// few hot keys mostly wait for each other (per-key order), so 1 is the default.
    #[arg(long, env = "EVENTFLOW_RELAY_WORKERS", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub relay_workers: u16,
    /// How long published rows are kept before they are deleted, in seconds. Failed rows are
    /// never deleted.
    #[arg(long, env = "EVENTFLOW_RELAY_RETENTION_SECS", default_value_t = 86400)]
    pub relay_retention_secs: u64,
    /// Largest encoded event published, in bytes; a larger one is marked failed.
    #[arg(long, env = "EVENTFLOW_MAX_EVENT_BYTES", default_value_t = 1 << 20)]
    pub max_event_bytes: usize,
}

/// Relays and serves health on `listeners` until `shutdown`; a batch in flight finishes first.
pub async fn run(config: Config, listeners: Listeners, shutdown: CancellationToken) -> Result<(), ServeError> {
    let Basics { broker, auth, registry, metrics } = config.common.basics()?;
    let relay_metrics = RelayMetrics::register(&registry).map_err(|e| ServeError::Config(format!("metrics: {e}")))?;
    let workers = u32::from(config.relay_workers);
    // One connection per worker, the LISTEN connection, maintenance and the probe.
    let pool = eventflow_pg::connect_lazy(&config.database_url, workers + 3)
        .map_err(|e| ServeError::Config(format!("--database-url: {e}")))?;
    let options = RelayOptions {
        batch_size: usize::from(config.relay_batch_size),
        poll_interval: Duration::from_millis(config.relay_poll_ms),
        retention: Duration::from_secs(config.relay_retention_secs),
        workers: usize::from(config.relay_workers),
    };
    let ingest = Ingest::new(broker.clone(), config.max_event_bytes, metrics);
    let relay = Relay::new(pool.clone(), ingest, relay_metrics, options);
    let relaying = tokio::spawn(relay_when_migrated(relay, !config.no_migrate, shutdown.clone()));
    let served = Served { routes: Routes::default(), name: SERVICE_NAME, auth };
    let probe = PgProbe::new(pool.clone());
    let result =
        run_service_with(listeners, served, broker, registry, &config.common.server, probe, shutdown.clone()).await;
    shutdown.cancel();
    if let Err(e) = relaying.await {
        tracing::warn!(error = %e, "relay task failed");
    }
    pool.close().await;
    result
}

/// Applies the migrations (when `migrate`), retrying while PostgreSQL is unreachable, then
/// runs the relay and its maintenance until `shutdown`.
async fn relay_when_migrated(relay: Relay, migrate: bool, shutdown: CancellationToken) {
    while migrate && !shutdown.is_cancelled() {
        match eventflow_pg::migrate(relay.pool()).await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(error = %e, "cannot apply the outbox migrations yet; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(relay.options().poll_interval) => {}
                }
            }
        }
    }
    let maintenance = tokio::spawn(maintenance::run(relay.clone(), shutdown.clone()));
    relay.run(shutdown).await;
    if let Err(e) = maintenance.await {
        tracing::warn!(error = %e, "outbox maintenance task failed");
    }
}
