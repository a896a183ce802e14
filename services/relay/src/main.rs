//! `eventflow-relay`: parses its config and relays the outbox until SIGTERM/SIGINT.

use std::process::ExitCode;

use clap::Parser;
use eventflow_relay::{Config, run};

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    let (grpc, metrics) = (config.grpc_addr, config.metrics_addr);
    eventflow_runtime::serve::run_main("eventflow-relay", config, grpc, metrics, run).await
}
