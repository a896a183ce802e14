//! `eventflow stream ...`: create, list, show (configuration and statistics), update (field mask
//! built from the flags given) and delete streams through the AdminService.

use std::time::Duration;

use clap::{Args, Subcommand};
use eventflow_proto::{
    convert::duration_to_proto,
    v1::{
        CreateStreamRequest, DeleteStreamRequest, GetStreamRequest, GetStreamStatsRequest, ListStreamsRequest,
        RetentionPolicy, Stream, StreamStats, UnsettledEventAction, UpdateStreamRequest,
    },
};
use prost_types::FieldMask;
use serde_json::json;

use crate::{
    client::Ctx,
    duration,
    exit::CliError,
    json,
    output::{self, Format, Table, fields, show_duration, show_limit, show_time},
};

/// Streams per ListStreams page.
const PAGE_SIZE: i32 = 1000;

/// The `stream` commands.
#[derive(Debug, Subcommand)]
pub enum StreamCommand {
    /// Create a stream.
    Create {
        /// Stream name: 1-128 characters of [A-Za-z0-9._-].
        name: String,
        /// Retention and deduplication settings.
        #[command(flatten)]
        settings: Settings,
        /// Partitions (1-64; default 1), each its own Redis stream and hash tag, so the stream
        /// spreads over the masters of a Redis Cluster. Fixed at creation.
        #[arg(long, value_name = "N")]
        partitions: Option<i32>,
    },
    /// List all streams.
    List,
    /// Show a stream's configuration and statistics with each subscription's.
    Show {
        /// Stream name.
        name: String,
    },
    /// Change the settings given as flags; the others stay as they are.
    Update {
        /// Stream name.
        name: String,
        /// The settings to change.
        #[command(flatten)]
        settings: Settings,
    },
    /// Delete a stream with its subscriptions, dead letters and dedup keys.
    Delete {
        /// Stream name.
        name: String,
        /// Do not ask for confirmation (required when stdin is not a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

/// Stream settings as flags; unset flags keep server defaults (create) or current values (update).
#[derive(Debug, Args)]
pub struct Settings {
    /// Keep at most about this many events (0 = no limit).
    #[arg(long, value_name = "N")]
    max_length: Option<i64>,
    /// Keep events at most about this old, e.g. 24h (0 = no limit).
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    max_age: Option<Duration>,
    /// Window in which a repeated event id is a duplicate, e.g. 10m (0 = no deduplication).
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    dedup_window: Option<Duration>,
    /// What retention does with events a subscription has not settled: dead-letter them there
    /// (the default) or drop them (counted in the subscription's stats).
    #[arg(long, value_name = "ACTION")]
    unsettled_events: Option<UnsettledEvents>,
}

/// The `--unsettled-events` choices.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum UnsettledEvents {
    /// Dead-letter them in each subscription that had not settled them.
    DeadLetter,
    /// Drop them, counted per subscription.
    Drop,
}

impl Settings {
    /// The stream message carrying these settings.
    fn to_stream(&self, name: &str) -> Stream {
        let given = self.max_length.is_some() || self.max_age.is_some() || self.unsettled_events.is_some();
        let retention = given.then(|| RetentionPolicy {
            max_length: self.max_length.unwrap_or(0),
            max_age: self.max_age.map(duration_to_proto),
            unsettled_events: match self.unsettled_events {
                None => UnsettledEventAction::Unspecified,
                Some(UnsettledEvents::DeadLetter) => UnsettledEventAction::DeadLetter,
                Some(UnsettledEvents::Drop) => UnsettledEventAction::Drop,
            }
            .into(),
        });
        Stream {
            name: name.into(),
            retention,
            dedup_window: self.dedup_window.map(duration_to_proto),
            create_time: None,
            partitions: 0,
        }
    }

    /// The update-mask paths of the flags given.
    fn mask(&self) -> Vec<String> {
        let given = [
            (self.max_length.is_some(), "retention.max_length"),
            (self.max_age.is_some(), "retention.max_age"),
            (self.dedup_window.is_some(), "dedup_window"),
            (self.unsettled_events.is_some(), "retention.unsettled_events"),
        ];
        given.iter().filter(|(set, _)| *set).map(|(_, path)| (*path).to_string()).collect()
    }
}

/// Runs a `stream` command.
pub async fn run(ctx: &Ctx, command: StreamCommand) -> Result<(), CliError> {
    match command {
        StreamCommand::Create { name, settings, partitions } => create(ctx, &name, &settings, partitions).await,
        StreamCommand::List => list(ctx).await,
        StreamCommand::Show { name } => show(ctx, &name).await,
        StreamCommand::Update { name, settings } => update(ctx, &name, &settings).await,
        StreamCommand::Delete { name, yes } => delete(ctx, &name, yes).await,
    }
}

async fn create(ctx: &Ctx, name: &str, settings: &Settings, partitions: Option<i32>) -> Result<(), CliError> {
    let stream = Stream { partitions: partitions.unwrap_or(0), ..settings.to_stream(name) };
    let request = CreateStreamRequest { stream: Some(stream) };
    let mut admin = ctx.admin().await?;
    let reply = ctx.call(format!("create stream {name}"), admin.create_stream(request)).await?;
    print_stream(ctx.format(), &reply.stream.unwrap_or_default())
}

async fn list(ctx: &Ctx) -> Result<(), CliError> {
    let mut admin = ctx.admin().await?;
    let mut streams = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = ListStreamsRequest { page_size: PAGE_SIZE, page_token };
        let page = ctx.call("list streams", admin.list_streams(request)).await?;
        streams.extend(page.streams);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    if ctx.format() == Format::Json {
        return output::json(&json!({ "streams": streams.iter().map(json::stream).collect::<Vec<_>>() }));
    }
    let mut table = Table::new(&["NAME", "PARTITIONS", "MAX_LENGTH", "MAX_AGE", "DEDUP_WINDOW", "CREATED"]);
    for s in &streams {
        let (max_length, max_age) = retention(s);
        table.row(vec![
            s.name.clone(),
            s.partitions.max(1).to_string(),
            max_length,
            max_age,
            show_duration(s.dedup_window.as_ref()),
            show_time(s.create_time.as_ref()),
        ]);
    }
    output::print(&table.render())
}

async fn show(ctx: &Ctx, name: &str) -> Result<(), CliError> {
    let mut admin = ctx.admin().await?;
    let what = format!("show stream {name}");
    let stream = ctx.call(what.clone(), admin.get_stream(GetStreamRequest { name: name.into() })).await?;
    let stats = ctx.call(what, admin.get_stream_stats(GetStreamStatsRequest { stream: name.into() })).await?;
    let (stream, stats) = (stream.stream.unwrap_or_default(), stats.stats.unwrap_or_default());
    if ctx.format() == Format::Json {
        return output::json(&json!({ "stream": json::stream(&stream), "stats": json::stats(&stats) }));
    }
    let mut text = stream_fields(&stream);
    text.push_str(&fields(&[
        ("length", stats.length.to_string()),
        ("first_entry_id", dash(&stats.first_entry_id)),
        ("last_entry_id", dash(&stats.last_entry_id)),
    ]));
    if !stats.subscriptions.is_empty() {
        text.push('\n');
        text.push_str(&subscriptions_table(&stats).render());
    }
    if !stats.partitions.is_empty() {
        text.push('\n');
        text.push_str(&partitions_table(&stats).render());
    }
    output::print(&text)
}

/// A partitioned stream's figures per partition (and per subscription in each), so skew shows.
fn partitions_table(stats: &StreamStats) -> Table {
    let mut table = Table::new(&[
        "PARTITION",
        "LENGTH",
        "LAST_ENTRY_ID",
        "SUBSCRIPTION",
        "LAG",
        "PENDING",
        "REDELIVERED",
        "DLQ",
        "BLOCKED",
    ]);
    for p in &stats.partitions {
        let head = [p.partition.to_string(), p.length.to_string(), dash(&p.last_entry_id)];
        if p.subscriptions.is_empty() {
            table.row(head.iter().cloned().chain(["-"; 6].map(String::from)).collect());
        }
        for s in &p.subscriptions {
            table.row(
                head.iter()
                    .cloned()
                    .chain([
                        s.subscription.clone(),
                        s.lag.to_string(),
                        s.pending.to_string(),
                        s.redelivered.to_string(),
                        s.dead_letter_depth.to_string(),
                        s.ordered_keys_blocked.to_string(),
                    ])
                    .collect(),
            );
        }
    }
    table
}

/// The per-subscription statistics of a stream as a table.
fn subscriptions_table(stats: &StreamStats) -> Table {
    let mut table = Table::new(&[
        "SUBSCRIPTION",
        "LAG",
        "PENDING",
        "REDELIVERED",
        "DELAYED",
        "DLQ",
        "CONSUMERS",
        "BREAKER",
        "BLOCKED",
    ]);
    for s in &stats.subscriptions {
        table.row(vec![
            s.subscription.clone(),
            s.lag.to_string(),
            s.pending.to_string(),
            s.redelivered.to_string(),
            s.delayed.to_string(),
            s.dead_letter_depth.to_string(),
            s.consumers.len().to_string(),
            json::breaker_state(s.breaker_state),
            s.ordered_keys_blocked.to_string(),
        ]);
    }
    table
}

async fn update(ctx: &Ctx, name: &str, settings: &Settings) -> Result<(), CliError> {
    let paths = settings.mask();
    if paths.is_empty() {
        return Err(CliError::Usage(
            "stream update: give at least one of --max-length, --max-age, --dedup-window".into(),
        ));
    }
    let request =
        UpdateStreamRequest { stream: Some(settings.to_stream(name)), update_mask: Some(FieldMask { paths }) };
    let mut admin = ctx.admin().await?;
    let reply = ctx.call(format!("update stream {name}"), admin.update_stream(request)).await?;
    print_stream(ctx.format(), &reply.stream.unwrap_or_default())
}

async fn delete(ctx: &Ctx, name: &str, yes: bool) -> Result<(), CliError> {
    output::confirm(&format!("delete stream {name} with its subscriptions and dead letters"), yes)?;
    let mut admin = ctx.admin().await?;
    ctx.call(format!("delete stream {name}"), admin.delete_stream(DeleteStreamRequest { name: name.into() })).await?;
    match ctx.format() {
        Format::Json => output::json(&json!({ "deleted": name })),
        Format::Table => output::print(&format!("deleted stream {name}\n")),
    }
}

/// Prints one stream's configuration.
fn print_stream(format: Format, stream: &Stream) -> Result<(), CliError> {
    match format {
        Format::Json => output::json(&json::stream(stream)),
        Format::Table => output::print(&stream_fields(stream)),
    }
}

/// A stream's configuration as `key: value` lines.
fn stream_fields(s: &Stream) -> String {
    let (max_length, max_age) = retention(s);
    fields(&[
        ("name", s.name.clone()),
        ("partitions", s.partitions.max(1).to_string()),
        ("max_length", max_length),
        ("max_age", max_age),
        ("unsettled_events", json::unsettled_events(s.retention.unwrap_or_default().unsettled_events).into()),
        ("dedup_window", show_duration(s.dedup_window.as_ref())),
        ("created", show_time(s.create_time.as_ref())),
    ])
}

/// A stream's retention limits for display.
fn retention(s: &Stream) -> (String, String) {
    let r = s.retention.unwrap_or_default();
    let age = r.max_age.filter(|d| d.seconds != 0 || d.nanos != 0);
    (show_limit(r.max_length), age.map_or_else(|| "unlimited".into(), |d| show_duration(Some(&d))))
}

/// `-` for an empty string.
pub fn dash(s: &str) -> String {
    if s.is_empty() { "-".into() } else { s.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mask_names_only_the_flags_given() {
        let settings = Settings {
            max_length: Some(5),
            max_age: None,
            dedup_window: Some(Duration::from_secs(60)),
            unsettled_events: None,
        };
        assert_eq!(settings.mask(), ["retention.max_length", "dedup_window"]);
        let stream = settings.to_stream("s");
        assert_eq!(stream.retention.map(|r| r.max_length), Some(5));
        assert_eq!(stream.dedup_window.map(|d| d.seconds), Some(60));
    }
}
