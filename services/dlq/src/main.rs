//! `eventflow-dlq`: parses its config, binds, and serves until SIGTERM/SIGINT.

use std::process::ExitCode;

use clap::Parser;
use eventflow_dlq::{Config, run};
use eventflow_runtime::{
    serve::{Listeners, exit_code},
    shutdown, telemetry,
};

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    telemetry::init_logging();
    let result = async {
        let listeners = Listeners::bind(config.grpc_addr, config.metrics_addr).await?;
        run(config, listeners, shutdown::on_signal()).await
    };
    exit_code("eventflow-dlq", result.await)
}
