//! `eventflow archive ...`: query, show, replay and export archived events through the
//! ArchiveService.

use clap::{Args, Subcommand};
use eventflow_proto::v1::{
    ArchiveFilter, ArchiveOrder, ArchivedEvent, ExportEventsRequest, GetArchivedEventRequest, QueryEventsRequest,
    ReplayEventsRequest, replay_events_request::Target,
};
use serde_json::json;

use crate::{
    client::Ctx,
    event,
    exit::CliError,
    json,
    output::{self, Format, Table, fields, show_time},
    time,
};

/// Most events per QueryEvents page.
const PAGE_SIZE: usize = 1000;

/// Which archived events (the ArchiveFilter).
#[derive(Debug, Args)]
pub struct FilterArgs {
    /// The stream.
    stream: String,
    /// Events published at or after this RFC 3339 time.
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Events published before this RFC 3339 time.
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Only this event type (repeatable).
    #[arg(long = "type", value_name = "TYPE")]
    types: Vec<String>,
    /// Only this CloudEvents source.
    #[arg(long)]
    source: Option<String>,
    /// Only this CloudEvents subject.
    #[arg(long)]
    subject: Option<String>,
    /// Only this partition key.
    #[arg(long)]
    partition_key: Option<String>,
    /// Only this trace id (32 hex digits of the traceparent).
    #[arg(long)]
    trace_id: Option<String>,
}

impl FilterArgs {
    /// The API filter; bad times are usage errors.
    fn to_proto(&self) -> Result<ArchiveFilter, CliError> {
        let at = |flag: &str, t: &Option<String>| {
            t.as_deref()
                .map(|t| time::parse_rfc3339(t).map_err(|e| CliError::Usage(format!("--{flag}: {e}"))))
                .transpose()
        };
        Ok(ArchiveFilter {
            stream: self.stream.clone(),
            start_time: at("since", &self.since)?,
            end_time: at("until", &self.until)?,
            types: self.types.clone(),
            source: self.source.clone().unwrap_or_default(),
            subject: self.subject.clone().unwrap_or_default(),
            partition_key: self.partition_key.clone().unwrap_or_default(),
            trace_id: self.trace_id.clone().unwrap_or_default(),
        })
    }
}

/// The `archive` commands.
#[derive(Debug, Subcommand)]
pub enum ArchiveCommand {
    /// List archived events of a stream, newest first (following pages).
    Query {
        /// Which events.
        #[command(flatten)]
        filter: FilterArgs,
        /// Oldest first instead.
        #[arg(long)]
        oldest_first: bool,
        /// List at most this many [default: 100].
        #[arg(long, value_name = "N", default_value_t = 100)]
        limit: usize,
    },
    /// Show one archived event.
    Get {
        /// The stream.
        stream: String,
        /// The entry id.
        entry_id: String,
    },
    /// Publish archived events again, into one subscription or into a stream.
    Replay {
        /// Which events.
        #[command(flatten)]
        filter: FilterArgs,
        /// Into this subscription of the stream only (as a dead-letter requeue).
        #[arg(long, conflicts_with = "to_stream", required_unless_present = "to_stream")]
        subscription: Option<String>,
        /// Into this stream, as new entries.
        #[arg(long)]
        to_stream: Option<String>,
        /// Replay at most this many.
        #[arg(long, value_name = "N")]
        max: Option<i64>,
    },
    /// Print archived events as CloudEvents JSON, one per line, oldest first.
    Export {
        /// Which events.
        #[command(flatten)]
        filter: FilterArgs,
    },
}

/// Runs an `archive` command.
pub async fn run(ctx: &Ctx, command: ArchiveCommand) -> Result<(), CliError> {
    match command {
        ArchiveCommand::Query { filter, oldest_first, limit } => query(ctx, &filter, oldest_first, limit).await,
        ArchiveCommand::Get { stream, entry_id } => get(ctx, &stream, &entry_id).await,
        ArchiveCommand::Replay { filter, subscription, to_stream, max } => {
            let target = match (subscription, to_stream) {
                (Some(sub), _) => Target::Subscription(sub),
                (None, Some(stream)) => Target::Stream(stream),
                (None, None) => return Err(CliError::Usage("name --subscription or --to-stream".into())),
            };
            replay(ctx, &filter, target, max.unwrap_or(0)).await
        }
        ArchiveCommand::Export { filter } => export(ctx, &filter).await,
    }
}

async fn query(ctx: &Ctx, filter: &FilterArgs, oldest_first: bool, limit: usize) -> Result<(), CliError> {
    let mut client = ctx.archive().await?;
    let what = format!("query the archive of {}", filter.stream);
    let order = if oldest_first { ArchiveOrder::OldestFirst } else { ArchiveOrder::NewestFirst };
    let (mut events, mut page_token) = (Vec::new(), String::new());
    while events.len() < limit {
        let page_size = i32::try_from(limit.saturating_sub(events.len()).min(PAGE_SIZE)).unwrap_or(100);
        let request =
            QueryEventsRequest { filter: Some(filter.to_proto()?), order: order as i32, page_size, page_token };
        let page = ctx.call(what.clone(), client.query_events(request)).await?;
        events.extend(page.events);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    if ctx.format() == Format::Json {
        return output::json(&json!({ "events": events.iter().map(archived_json).collect::<Vec<_>>() }));
    }
    let mut table = Table::new(&["ENTRY_ID", "PUBLISHED", "TYPE", "EVENT_ID", "SOURCE", "DATA"]);
    for e in &events {
        let event = e.event.clone().unwrap_or_default();
        table.row(vec![
            e.entry_id.clone(),
            show_time(e.publish_time.as_ref()),
            event.r#type.clone(),
            event.id.clone(),
            event.source.clone(),
            event::data_summary(&event),
        ]);
    }
    output::print(&table.render())
}

/// An archived event as JSON: where and when, and the event in the CloudEvents JSON format.
fn archived_json(e: &ArchivedEvent) -> serde_json::Value {
    json!({
        "stream": e.stream,
        "entry_id": e.entry_id,
        "publish_time": json::timestamp(e.publish_time.as_ref()),
        "archive_time": json::timestamp(e.archive_time.as_ref()),
        "event": e.event.as_ref().map(event::to_json),
    })
}

async fn get(ctx: &Ctx, stream: &str, entry_id: &str) -> Result<(), CliError> {
    let mut client = ctx.archive().await?;
    let request = GetArchivedEventRequest { stream: stream.into(), entry_id: entry_id.into() };
    let what = format!("show archived event {entry_id} of {stream}");
    let archived = ctx.call(what, client.get_archived_event(request)).await?.event.unwrap_or_default();
    if ctx.format() == Format::Json {
        return output::json(&archived_json(&archived));
    }
    let event = archived.event.clone().unwrap_or_default();
    output::print(&fields(&[
        ("stream", archived.stream.clone()),
        ("entry_id", archived.entry_id.clone()),
        ("published", show_time(archived.publish_time.as_ref())),
        ("archived", show_time(archived.archive_time.as_ref())),
        ("event_id", event.id.clone()),
        ("event_type", event.r#type.clone()),
        ("event_source", event.source.clone()),
        ("data", event::data_summary(&event)),
    ]))
}

async fn replay(ctx: &Ctx, filter: &FilterArgs, target: Target, max_events: i64) -> Result<(), CliError> {
    let mut client = ctx.archive().await?;
    let what = format!("replay the archive of {}", filter.stream);
    let request =
        ReplayEventsRequest { filter: Some(filter.to_proto()?), target: Some(target), batch_size: 0, max_events };
    let mut progress = ctx.call(what.clone(), client.replay_events(request)).await?;
    let mut last = None;
    while let Some(p) = progress.message().await.map_err(|e| CliError::status(&what, e))? {
        if !p.done {
            output::note(&format!("archive replay: {} replayed (last {})", p.replayed, p.last_entry_id));
        }
        last = Some(p);
    }
    let last = last.unwrap_or_default();
    match ctx.format() {
        Format::Json => output::json(&json!({
            "replayed": last.replayed, "duplicates": last.duplicates, "refused": last.refused,
            "last_entry_id": last.last_entry_id,
        })),
        Format::Table => output::print(&format!(
            "replayed {} (duplicates {}, refused {})\n",
            last.replayed, last.duplicates, last.refused
        )),
    }
}

async fn export(ctx: &Ctx, filter: &FilterArgs) -> Result<(), CliError> {
    let mut client = ctx.archive().await?;
    let what = format!("export the archive of {}", filter.stream);
    let request = ExportEventsRequest { filter: Some(filter.to_proto()?) };
    let mut chunks = ctx.call(what.clone(), client.export_events(request)).await?;
    while let Some(chunk) = chunks.message().await.map_err(|e| CliError::status(&what, e))? {
        let mut text = chunk.lines.join("\n");
        text.push('\n');
        output::print(&text)?;
    }
    Ok(())
}
