//! `eventflow`: the operator CLI over the eventflow gRPC API. Parses the command line, runs
//! the command on a single-threaded Tokio runtime, prints one error line and exits with the
//! code [`exit`] documents.

mod archive;
mod args;
mod client;
mod dlq;
mod duration;
mod event;
mod exit;
mod health;
mod json;
mod output;
mod probe;
mod publish;
mod stream;
mod sub;
mod tail;
mod time;
mod tls;

use std::process::ExitCode;

use clap::Parser;

use crate::{
    args::{Cli, Command},
    client::Ctx,
    exit::CliError,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
    let result = match runtime {
        Ok(runtime) => runtime.block_on(run(cli)),
        Err(e) => Err(CliError::Other(format!("start the runtime: {e}"))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::BrokenPipe) => ExitCode::SUCCESS,
        Err(e) => {
            output::note(&e.to_string());
            ExitCode::from(e.exit_code())
        }
    }
}

/// Runs the parsed command.
async fn run(cli: Cli) -> Result<(), CliError> {
    let ctx = Ctx { global: cli.global };
    match cli.command {
        Command::Stream(command) => stream::run(&ctx, command).await,
        Command::Sub(command) => sub::run(&ctx, command).await,
        Command::Publish(args) => publish::run(&ctx, args).await,
        Command::Tail(args) => tail::run(&ctx, args).await,
        Command::Dlq(command) => dlq::run(&ctx, command).await,
        Command::Archive(command) => archive::run(&ctx, command).await,
        Command::Health(args) => health::run(&ctx, args).await,
    }
}
