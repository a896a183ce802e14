//! `eventflow dlq ...`: list (following pages), show, requeue, delete and purge dead letters
//! through the DeadLetterService.

use clap::Subcommand;
use eventflow_proto::v1::{
    DeadLetter, DeleteDeadLettersRequest, GetDeadLetterRequest, ListDeadLettersRequest, PurgeDeadLettersRequest,
    RequeueDeadLettersRequest,
};
use serde_json::json;

use crate::{
    client::Ctx,
    event,
    exit::CliError,
    json,
    output::{self, Format, Table, fields, show_time},
    stream::dash,
};

/// Most dead letters per ListDeadLetters page.
const PAGE_SIZE: usize = 1000;
/// Progress goes to stderr every this many dead letters listed.
const PROGRESS_EVERY: usize = 10_000;

/// The `dlq` commands.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters, newest first, of one subscription or of every subscription of a stream.
    List {
        /// The stream.
        stream: String,
        /// The subscription (default: all subscriptions of the stream).
        subscription: Option<String>,
        /// List at most this many.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },
    /// Show one dead letter with its event.
    Show {
        /// The stream.
        stream: String,
        /// The subscription.
        subscription: String,
        /// The dead letter id.
        id: String,
    },
    /// Requeue dead letters into the subscription they failed in.
    Requeue {
        /// The stream.
        stream: String,
        /// The subscription.
        subscription: String,
        /// Dead letter ids.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<String>,
        /// Requeue every dead letter of the subscription.
        #[arg(long)]
        all: bool,
    },
    /// Delete dead letters by id.
    Delete {
        /// The stream.
        stream: String,
        /// The subscription.
        subscription: String,
        /// Dead letter ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Delete every dead letter of a subscription.
    Purge {
        /// The stream.
        stream: String,
        /// The subscription.
        subscription: String,
        /// Do not ask for confirmation (required when stdin is not a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

/// Runs a `dlq` command.
pub async fn run(ctx: &Ctx, command: DlqCommand) -> Result<(), CliError> {
    match command {
        DlqCommand::List { stream, subscription, limit } => {
            list(ctx, &stream, subscription.as_deref().unwrap_or(""), limit).await
        }
        DlqCommand::Show { stream, subscription, id } => show(ctx, &stream, &subscription, &id).await,
        DlqCommand::Requeue { stream, subscription, ids, all } => requeue(ctx, &stream, &subscription, ids, all).await,
        DlqCommand::Delete { stream, subscription, ids } => delete(ctx, &stream, &subscription, ids).await,
        DlqCommand::Purge { stream, subscription, yes } => purge(ctx, &stream, &subscription, yes).await,
    }
}

async fn list(ctx: &Ctx, stream: &str, subscription: &str, limit: Option<usize>) -> Result<(), CliError> {
    let mut client = ctx.dlq().await?;
    let what = format!("list dead letters of {stream}/{subscription}");
    let (mut letters, mut page_token, mut next_progress) = (Vec::new(), String::new(), PROGRESS_EVERY);
    loop {
        let wanted = limit.map_or(PAGE_SIZE, |l| l.saturating_sub(letters.len()).min(PAGE_SIZE));
        if wanted == 0 {
            break;
        }
        let page_size = i32::try_from(wanted).unwrap_or(1000);
        let request =
            ListDeadLettersRequest { stream: stream.into(), subscription: subscription.into(), page_size, page_token };
        let page = ctx.call(what.clone(), client.list_dead_letters(request)).await?;
        letters.extend(page.dead_letters.into_iter().take(wanted));
        if letters.len() >= next_progress {
            output::note(&format!("dlq list: {} dead letters so far", letters.len()));
            next_progress = letters.len() + PROGRESS_EVERY;
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    print_list(ctx.format(), &letters)
}

/// Prints a list of dead letters.
fn print_list(format: Format, letters: &[DeadLetter]) -> Result<(), CliError> {
    if format == Format::Json {
        return output::json(&json!({ "dead_letters": letters.iter().map(json::dead_letter).collect::<Vec<_>>() }));
    }
    let mut table = Table::new(&[
        "ID",
        "SUBSCRIPTION",
        "ENTRY_ID",
        "ATTEMPTS",
        "TYPE",
        "EVENT_ID",
        "KEY",
        "DEAD_LETTERED",
        "REASON",
    ]);
    for d in letters {
        let event = d.event.clone().unwrap_or_default();
        table.row(vec![
            d.id.clone(),
            d.subscription.clone(),
            d.entry_id.clone(),
            d.delivery_attempts.to_string(),
            event.r#type,
            event.id,
            dash(&d.ordering_key),
            show_time(d.dead_letter_time.as_ref()),
            d.reason.replace('\n', " "),
        ]);
    }
    output::print(&table.render())
}

async fn show(ctx: &Ctx, stream: &str, subscription: &str, id: &str) -> Result<(), CliError> {
    let mut client = ctx.dlq().await?;
    let request = GetDeadLetterRequest { stream: stream.into(), subscription: subscription.into(), id: id.into() };
    let what = format!("show dead letter {id} of {stream}/{subscription}");
    let letter = ctx.call(what, client.get_dead_letter(request)).await?.dead_letter.unwrap_or_default();
    if ctx.format() == Format::Json {
        return output::json(&json::dead_letter(&letter));
    }
    let event = letter.event.clone().unwrap_or_default();
    output::print(&fields(&[
        ("id", letter.id.clone()),
        ("stream", letter.stream.clone()),
        ("subscription", letter.subscription.clone()),
        ("entry_id", letter.entry_id.clone()),
        ("attempts", letter.delivery_attempts.to_string()),
        ("reason", letter.reason.clone()),
        ("consumer", letter.consumer.clone()),
        ("ordering_key", dash(&letter.ordering_key)),
        ("dead_lettered", show_time(letter.dead_letter_time.as_ref())),
        ("published", show_time(letter.publish_time.as_ref())),
        ("event_id", event.id.clone()),
        ("event_type", event.r#type.clone()),
        ("event_source", event.source.clone()),
        ("data", event::data_summary(&event)),
    ]))
}

async fn requeue(ctx: &Ctx, stream: &str, subscription: &str, ids: Vec<String>, all: bool) -> Result<(), CliError> {
    let mut client = ctx.dlq().await?;
    let asked = ids.len();
    let request = RequeueDeadLettersRequest { stream: stream.into(), subscription: subscription.into(), ids, all };
    let what = format!("requeue dead letters of {stream}/{subscription}");
    let reply = ctx.call(what.clone(), client.requeue_dead_letters(request)).await?;
    match ctx.format() {
        Format::Json => output::json(&json!({ "requeued": reply.requeued, "not_found_ids": reply.not_found_ids }))?,
        Format::Table => output::print(&format!("requeued {}\n", reply.requeued))?,
    }
    outcome(&what, asked, reply.not_found_ids.len(), &reply.not_found_ids.join(", "))
}

async fn delete(ctx: &Ctx, stream: &str, subscription: &str, ids: Vec<String>) -> Result<(), CliError> {
    let mut client = ctx.dlq().await?;
    let asked = ids.len();
    let request = DeleteDeadLettersRequest { stream: stream.into(), subscription: subscription.into(), ids };
    let what = format!("delete dead letters of {stream}/{subscription}");
    let reply = ctx.call(what.clone(), client.delete_dead_letters(request)).await?;
    match ctx.format() {
        Format::Json => output::json(&json!({ "deleted": reply.deleted }))?,
        Format::Table => output::print(&format!("deleted {}\n", reply.deleted))?,
    }
    let not_deleted = asked.saturating_sub(usize::try_from(reply.deleted).unwrap_or(0));
    outcome(&what, asked, not_deleted, "")
}

/// The outcome of ids that were not found: none is success, all is NOT_FOUND (3), some is a
/// partial failure (6).
fn outcome(what: &str, asked: usize, not_found: usize, ids: &str) -> Result<(), CliError> {
    if not_found == 0 {
        return Ok(());
    }
    let listed = if ids.is_empty() { String::new() } else { format!(": {ids}") };
    let message = format!("{not_found} of {asked} ids not found{listed}");
    if not_found >= asked {
        return Err(CliError::status(what, tonic::Status::not_found(message)));
    }
    Err(CliError::Partial(format!("{what}: {message}")))
}

async fn purge(ctx: &Ctx, stream: &str, subscription: &str, yes: bool) -> Result<(), CliError> {
    output::confirm(&format!("purge every dead letter of {stream}/{subscription}"), yes)?;
    let mut client = ctx.dlq().await?;
    let request = PurgeDeadLettersRequest { stream: stream.into(), subscription: subscription.into() };
    let reply =
        ctx.call(format!("purge dead letters of {stream}/{subscription}"), client.purge_dead_letters(request)).await?;
    match ctx.format() {
        Format::Json => output::json(&json!({ "purged": reply.purged })),
        Format::Table => output::print(&format!("purged {}\n", reply.purged)),
    }
}
