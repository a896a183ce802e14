//! `eventflow health`: asks each service's `grpc.health.v1.Health` for its overall (`""`)
//! status, all at once, and prints SERVING, NOT_SERVING or UNREACHABLE per service. Anything
//! but SERVING everywhere exits 5.

use std::time::Duration;

use clap::{Args, ValueEnum};
use serde_json::json;
use tokio::task::JoinSet;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::{
    client::{self, Ctx},
    exit::CliError,
    output::{self, Format, Table},
    tls::Tls,
};

/// Which services to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Which {
    /// The PublisherService.
    Publisher,
    /// The SubscriberService.
    Subscriber,
    /// The AdminService.
    Admin,
    /// The DeadLetterService.
    Dlq,
    /// All four.
    All,
}

/// `eventflow health` flags.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// The service to check.
    #[arg(long, value_enum, default_value_t = Which::All)]
    service: Which,
}

/// The status shown for a service that could not be asked.
const UNREACHABLE: &str = "UNREACHABLE";

/// Runs `eventflow health`.
pub async fn run(ctx: &Ctx, args: HealthArgs) -> Result<(), CliError> {
    let g = &ctx.global;
    let all = [("publisher", &g.publisher), ("subscriber", &g.subscriber), ("admin", &g.admin), ("dlq", &g.dlq)];
    let wanted =
        |name: &str| args.service == Which::All || Which::from_str(name, true).is_ok_and(|w| w == args.service);
    let tls = ctx.tls()?;
    let mut checks = JoinSet::new();
    for (index, (name, addr)) in all.iter().enumerate().filter(|(_, (name, _))| wanted(name)) {
        let (name, addr, timeout, tls) = (*name, (*addr).clone(), ctx.timeout(), tls.clone());
        checks.spawn(async move { (index, check(name, &addr, timeout, tls.as_ref()).await) });
    }
    let mut results = checks.join_all().await;
    results.sort_by_key(|(index, _)| *index);
    let rows: Vec<(&str, &String, String)> =
        results.into_iter().filter_map(|(i, status)| all.get(i).map(|(name, addr)| (*name, *addr, status))).collect();
    print(ctx.format(), &rows)?;
    let down: Vec<&str> = rows.iter().filter(|(_, _, s)| s != "SERVING").map(|(name, _, _)| *name).collect();
    if down.is_empty() {
        return Ok(());
    }
    Err(CliError::Unreachable(format!("health: not serving: {}", down.join(", "))))
}

/// The overall status of the service at `addr`: a `ServingStatus` name or UNREACHABLE.
async fn check(name: &str, addr: &str, timeout: Duration, tls: Option<&Tls>) -> String {
    let Ok(channel) = client::connect(name, addr, timeout, tls).await else {
        return UNREACHABLE.into();
    };
    let mut health = HealthClient::new(channel);
    let reply = client::call(name, timeout, health.check(HealthCheckRequest { service: String::new() })).await;
    match reply {
        Ok(reply) => ServingStatus::try_from(reply.status).map_or("UNKNOWN", |s| s.as_str_name()).to_string(),
        Err(_) => UNREACHABLE.into(),
    }
}

/// Prints one row per service.
fn print(format: Format, rows: &[(&str, &String, String)]) -> Result<(), CliError> {
    if format == Format::Json {
        let items: Vec<_> = rows
            .iter()
            .map(|(name, addr, status)| json!({ "service": name, "address": addr, "status": status }))
            .collect();
        return output::json(&json!({ "services": items }));
    }
    let mut table = Table::new(&["SERVICE", "ADDRESS", "STATUS"]);
    for (name, addr, status) in rows {
        table.row(vec![(*name).to_string(), (*addr).clone(), status.clone()]);
    }
    output::print(&table.render())
}
