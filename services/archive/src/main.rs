//! `eventflow-archive`: parses its config, archives and serves until SIGTERM/SIGINT.

use std::process::ExitCode;

use clap::Parser;
use eventflow_archive_service::{Config, run};

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    let (grpc, metrics) = (config.grpc_addr, config.metrics_addr);
    eventflow_runtime::serve::run_main("eventflow-archive", config, grpc, metrics, run).await
}
