//! `eventflow-dlq`: parses its config and serves until SIGTERM/SIGINT.

use std::process::ExitCode;

use clap::Parser;
use eventflow_dlq::{Config, run};

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    let (grpc, metrics) = (config.grpc_addr, config.metrics_addr);
    eventflow_runtime::serve::run_main("eventflow-dlq", config, grpc, metrics, run).await
}
