//! `eventflow-pusher`: parses its config and pushes until SIGTERM/SIGINT.

use std::process::ExitCode;

use clap::Parser;
use eventflow_pusher::{Config, run};

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    let (grpc, metrics) = (config.grpc_addr, config.metrics_addr);
    eventflow_runtime::serve::run_main("eventflow-pusher", config, grpc, metrics, run).await
}
