//! What every eventflow binary shares: command-line/env configuration, logging, the gRPC server
//! with health and reflection (over TLS when configured), the Prometheus endpoint with HTTP
//! probes, and graceful shutdown.
//!
//! A binary's `main` parses its config, binds its listeners, builds its handler over the
//! libraries and hands everything to [`serve::serve`] with a [`CancellationToken`] that
//! [`shutdown::on_signal`] cancels on SIGTERM/SIGINT.

pub mod ack_keys;
pub mod alloc;
pub mod auth;
pub mod config;
pub mod grpc;
pub mod health;
pub mod ingest;
pub mod metrics;
pub mod probes;
pub mod redis_probe;
pub mod redis_tls;
pub mod serve;
pub mod shutdown;
pub mod status;
pub mod telemetry;
pub mod tls;
pub mod trace;
pub mod watched;

pub use tokio_util::sync::CancellationToken;
