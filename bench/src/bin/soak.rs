//! `eventflow-soak` (`make soak`): eventflow's fault suite. Publishes N events through the real
//! release binaries while it SIGKILLs the publisher and subscriber replicas, SIGSTOPs Redis and
//! drops consumers, then checks that every accepted event was acked or dead-lettered. What it
//! does and how is in `bench/src/soak/mod.rs`; how to read its output in docs/operations.md.

// A measurement tool, not service code (like `eventflow-bench`): a broken setup must stop the
// run loudly rather than print figures that measured nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../soak/mod.rs"]
mod soak;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    soak::run(soak::Args::parse()).await
}
