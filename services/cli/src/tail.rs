//! `eventflow tail`: opens a Subscribe call and prints each delivered event (a table line or a
//! JSON line), acknowledging it after printing with `--ack`. Stops after `--max` events, when
//! `--timeout` has passed, after `--idle-timeout` without an event, or on Ctrl-C; each is a
//! success, and the count printed on stderr says which it was. Without `--ack`, the events it held
//! become deliverable to other consumers as soon as it stops.

use std::time::Duration;

use clap::Args;
use eventflow_proto::v1::{
    AcknowledgeRequest, ReceivedEvent, SubscribeRequest, subscriber_service_client::SubscriberServiceClient,
};
use tokio::time::Instant;

use crate::{
    client::{Conn, Ctx},
    duration, event,
    exit::CliError,
    json,
    output::{self, Format},
};

/// `eventflow tail` flags.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// The stream.
    stream: String,
    /// The subscription to consume.
    subscription: String,
    /// Acknowledge each event after printing it (it is not delivered again).
    #[arg(long, overrides_with = "no_ack")]
    ack: bool,
    /// Leave events unacknowledged (the default): they are redelivered when tail stops.
    #[arg(long, overrides_with = "ack")]
    no_ack: bool,
    /// Stop after this many events.
    #[arg(long, value_name = "N")]
    max: Option<u64>,
    /// Stop after this long without an event, e.g. 5s: counted from the start, then from the
    /// last event printed (and acknowledged).
    #[arg(long, value_name = "DURATION", value_parser = parse_idle_timeout)]
    idle_timeout: Option<Duration>,
    /// Most delivered-but-unsettled events held at once [default: --max if given (at most
    /// 10000), else the server's default, 100].
    #[arg(long, value_name = "N")]
    max_outstanding: Option<i32>,
}

impl TailArgs {
    /// The flow-control limit: `--max-outstanding`, else no more than `--max` (so events the
    /// tail will not print are not delivered to it), else the server default.
    fn flow_limit(&self) -> i32 {
        match (self.max_outstanding, self.max) {
            (Some(n), _) => n,
            (None, Some(max)) => i32::try_from(max.min(MAX_OUTSTANDING)).unwrap_or(0),
            (None, None) => 0,
        }
    }
}

/// Parses `--idle-timeout`: a duration longer than zero (zero would stop before the first event).
fn parse_idle_timeout(text: &str) -> Result<Duration, String> {
    match duration::parse(text)? {
        Duration::ZERO => Err("must be longer than 0".into()),
        idle => Ok(idle),
    }
}

/// The largest `max_outstanding_messages` the server accepts.
const MAX_OUTSTANDING: u64 = 10_000;

/// What a tail did.
#[derive(Debug, Default)]
struct Counts {
    /// Events printed.
    received: u64,
    /// Events acknowledged.
    acked: u64,
    /// Ack ids the server reported invalid or expired.
    ack_failed: u64,
}

/// Why a tail stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// `--max` events were printed.
    Max,
    /// `--timeout` passed.
    Timeout,
    /// `--idle-timeout` passed without an event.
    Idle(Duration),
    /// Ctrl-C.
    Interrupted,
    /// The server ended the Subscribe stream.
    Ended,
}

impl Stop {
    /// How the count on stderr ends.
    fn describe(self) -> String {
        match self {
            Stop::Max => "reached --max".into(),
            Stop::Timeout => "--timeout passed".into(),
            Stop::Idle(idle) => format!("no event for {} (--idle-timeout)", duration::format(idle)),
            Stop::Interrupted => "interrupted".into(),
            Stop::Ended => "the server ended the stream".into(),
        }
    }
}

/// Runs `eventflow tail`.
pub async fn run(ctx: &Ctx, args: TailArgs) -> Result<(), CliError> {
    let mut client = ctx.subscriber().await?;
    let what = format!("tail {}/{}", args.stream, args.subscription);
    let request = SubscribeRequest {
        stream: args.stream.clone(),
        subscription: args.subscription.clone(),
        max_outstanding_messages: args.flow_limit(),
        max_outstanding_bytes: 0,
    };
    let mut deliveries = ctx.call(what.clone(), client.subscribe(request)).await?;
    let deadline = ctx.global.timeout.map(|t| Instant::now() + t);
    let idle_after = |now: Instant| args.idle_timeout.map(|idle| now + idle);
    let mut idle_deadline = idle_after(Instant::now());
    let mut counts = Counts::default();
    let stop = loop {
        if args.max.is_some_and(|max| counts.received >= max) {
            break Stop::Max;
        }
        let batch = tokio::select! {
            message = deliveries.message() => message.map_err(|status| CliError::status(what.clone(), status))?,
            () = until(deadline) => break Stop::Timeout,
            () = until(idle_deadline) => break Stop::Idle(args.idle_timeout.unwrap_or_default()),
            _ = tokio::signal::ctrl_c() => break Stop::Interrupted,
        };
        let Some(batch) = batch else { break Stop::Ended };
        let room = args.max.map_or(usize::MAX, |max| usize::try_from(max - counts.received).unwrap_or(usize::MAX));
        let events: Vec<ReceivedEvent> = batch.events.into_iter().take(room).collect();
        if events.is_empty() {
            continue;
        }
        print_events(ctx.format(), &events)?;
        counts.received += events.len() as u64;
        if args.ack {
            acknowledge(ctx, &mut client, &what, &events, &mut counts).await?;
        }
        idle_deadline = idle_after(Instant::now());
    };
    finish(&what, &counts, args.ack, stop)
}

/// Resolves at `deadline`, or never without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Prints events, one line each.
fn print_events(format: Format, events: &[ReceivedEvent]) -> Result<(), CliError> {
    for received in events {
        match format {
            Format::Json => output::json_line(&json::received(received))?,
            Format::Table => output::print(&format!("{}\n", line(received)))?,
        }
    }
    Ok(())
}

/// One event as a table line: entry id, attempt, type, id, source, data.
fn line(received: &ReceivedEvent) -> String {
    let event = received.event.clone().unwrap_or_default();
    format!(
        "{}  #{}  {}  {}  {}  {}",
        received.entry_id,
        received.delivery_attempt,
        event.r#type,
        event.id,
        event.source,
        event::data_summary(&event)
    )
}

/// Acknowledges printed events; ack ids the server could not settle are counted and reported.
async fn acknowledge(
    ctx: &Ctx,
    client: &mut SubscriberServiceClient<Conn>,
    what: &str,
    events: &[ReceivedEvent],
    counts: &mut Counts,
) -> Result<(), CliError> {
    if events.is_empty() {
        return Ok(());
    }
    let ack_ids: Vec<String> = events.iter().map(|e| e.ack_id.clone()).collect();
    let sent = ack_ids.len() as u64;
    let reply = ctx.call(format!("{what}: acknowledge"), client.acknowledge(AcknowledgeRequest { ack_ids })).await?;
    let failed = (reply.invalid_ack_ids.len() + reply.expired_ack_ids.len()) as u64;
    if failed > 0 {
        output::note(&format!("{what}: {failed} acknowledgements failed (invalid or expired ack ids)"));
    }
    counts.acked += sent.saturating_sub(failed);
    counts.ack_failed += failed;
    Ok(())
}

/// Reports the counts and why the tail stopped on stderr; failed acknowledgements are a partial
/// failure.
fn finish(what: &str, counts: &Counts, ack: bool, stop: Stop) -> Result<(), CliError> {
    let acked = if ack { format!(", {} acknowledged", counts.acked) } else { String::new() };
    let events = if counts.received == 1 { "event" } else { "events" };
    output::note(&format!("{what}: {} {events}{acked}; {}", counts.received, stop.describe()));
    if counts.ack_failed > 0 {
        return Err(CliError::Partial(format!("{what}: {} acknowledgements failed", counts.ack_failed)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_timeout_is_a_positive_duration() {
        assert_eq!(parse_idle_timeout("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_idle_timeout("1m30s"), Ok(Duration::from_secs(90)));
        assert!(parse_idle_timeout("0").is_err());
        assert!(parse_idle_timeout("0s").is_err());
        assert!(parse_idle_timeout("soon").is_err());
    }

    #[test]
    fn stop_reasons_name_the_flag() {
        assert_eq!(Stop::Idle(Duration::from_secs(5)).describe(), "no event for 5s (--idle-timeout)");
        assert_eq!(Stop::Max.describe(), "reached --max");
    }
}
