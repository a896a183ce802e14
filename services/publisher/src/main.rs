//! `eventflow-publisher`: parses its config and serves until SIGTERM/SIGINT.

use std::process::ExitCode;

use clap::Parser;
use eventflow_publisher::{Config, run};

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    let (grpc, metrics) = (config.grpc_addr, config.metrics_addr);
    eventflow_runtime::serve::run_main("eventflow-publisher", config, grpc, metrics, run).await
}
