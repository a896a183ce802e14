//! `eventflow sub ...`: create, list, show (configuration and statistics), update (field mask
//! built from the flags given), delete and seek subscriptions through the AdminService.

use std::time::Duration;

use clap::{Args, Subcommand};
use eventflow_proto::{
    convert::duration_to_proto,
    v1::{
        CircuitBreakerPolicy, ContentMode, CreateSubscriptionRequest, DeadLetterPolicy, DeleteSubscriptionRequest,
        GetStreamStatsRequest, GetSubscriptionRequest, ListSubscriptionsRequest, PartitionEntry, Position, PushConfig,
        RetryPolicy, SeekRequest, Subscription, SubscriptionStats, UpdateSubscriptionRequest, position,
    },
};
use prost_types::FieldMask;
use serde_json::json;

use crate::{
    args::{parse_position, parse_seconds},
    client::Ctx,
    duration,
    exit::CliError,
    json,
    output::{self, Format, Table, fields, show_duration, show_list, show_time},
    stream::dash,
};

/// The `sub` commands.
#[derive(Debug, Subcommand)]
pub enum SubCommand {
    /// Create a subscription (a consumer group) on a stream.
    Create {
        /// The stream.
        stream: String,
        /// Subscription name: 1-128 characters of [A-Za-z0-9._-].
        name: String,
        /// Delivery settings.
        #[command(flatten)]
        settings: Settings,
        /// Where delivery starts: earliest, latest, an entry id or an RFC 3339 time.
        #[arg(long, value_name = "POSITION", value_parser = parse_position, default_value = "latest")]
        start: Position,
        /// With an entry id --start on a partitioned stream: the partition it is in (the others
        /// start at its publish time).
        #[arg(long, value_name = "N")]
        partition: Option<i32>,
        /// Deliver the events of one ordering key (CloudEvents `partitionkey`) one at a time, in
        /// publish order (fixed at creation).
        #[arg(long)]
        ordered: bool,
    },
    /// List the subscriptions of a stream.
    List {
        /// The stream.
        stream: String,
    },
    /// Show a subscription's configuration and statistics (lag, pending, consumers, DLQ depth, breaker).
    Show {
        /// The stream.
        stream: String,
        /// The subscription.
        name: String,
    },
    /// Change the settings given as flags; the others stay as they are.
    Update {
        /// The stream.
        stream: String,
        /// The subscription.
        name: String,
        /// The settings to change.
        #[command(flatten)]
        settings: Settings,
        /// Remove the event-type filter: deliver every event.
        #[arg(long, conflicts_with = "filter")]
        clear_filter: bool,
        /// Turn the circuit breaker off.
        #[arg(long, conflicts_with = "breaker")]
        no_breaker: bool,
        /// Make a push subscription a pull subscription again (Subscribe clients).
        #[arg(long, conflicts_with_all = ["push_endpoint", "push_secret_file", "push_timeout", "push_concurrency", "push_structured", "push_binary", "push_rotation_window"])]
        no_push: bool,
    },
    /// Delete a subscription with its pending events and dead letters.
    Delete {
        /// The stream.
        stream: String,
        /// The subscription.
        name: String,
        /// Do not ask for confirmation (required when stdin is not a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Move a subscription's read position: back to replay, forward to skip.
    Seek {
        /// The stream.
        stream: String,
        /// The subscription.
        name: String,
        /// The new position: earliest, latest, an entry id or an RFC 3339 time.
        #[arg(long, value_name = "POSITION", value_parser = parse_position)]
        to: Position,
        /// With an entry id --to on a partitioned stream: the partition it is in (only that
        /// partition moves).
        #[arg(long, value_name = "N")]
        partition: Option<i32>,
    },
}

/// Subscription settings as flags; unset flags keep server defaults (create) or current values
/// (update).
#[derive(Debug, Args)]
pub struct Settings {
    /// Time a delivered event may stay unsettled before redelivery, whole seconds (e.g. 30s).
    #[arg(long, value_name = "DURATION", value_parser = parse_seconds)]
    ack_deadline: Option<i32>,
    /// Deliveries before an event is dead-lettered (1-100).
    #[arg(long, value_name = "N")]
    max_attempts: Option<i32>,
    /// Delay before the first redelivery, e.g. 1s.
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    min_backoff: Option<Duration>,
    /// Longest redelivery delay, e.g. 10m.
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    max_backoff: Option<Duration>,
    /// Deliver only events of this type (repeat for several).
    #[arg(long = "filter", value_name = "TYPE")]
    filter: Vec<String>,
    /// Turn on the circuit breaker with the server's default thresholds.
    #[arg(long)]
    breaker: bool,
    /// Push subscription: POST every event to this https URL (eventflow-pusher delivers it).
    #[arg(long, value_name = "URL")]
    push_endpoint: Option<String>,
    /// Push: file holding the Standard Webhooks signing secret (`whsec_...`); a new one on update
    /// rotates (the old one keeps signing for the rotation window).
    #[arg(long, value_name = "FILE")]
    push_secret_file: Option<std::path::PathBuf>,
    /// Push: time one POST may take, e.g. 5s.
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    push_timeout: Option<Duration>,
    /// Push: most POSTs in flight per pusher replica (1-1000).
    #[arg(long, value_name = "N")]
    push_concurrency: Option<i32>,
    /// Push: send events as structured CloudEvents JSON (default: binary mode).
    #[arg(long, conflicts_with = "push_binary")]
    push_structured: bool,
    /// Push: send events in binary mode (`ce-*` headers, data as the body).
    #[arg(long)]
    push_binary: bool,
    /// Push: how long a replaced signing secret keeps signing, e.g. 24h (0s = stop at once).
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    push_rotation_window: Option<Duration>,
}

impl Settings {
    /// The subscription message carrying these settings (`breaker` false means "off").
    fn to_subscription(&self, stream: &str, name: &str) -> Subscription {
        let retry = (self.min_backoff.is_some() || self.max_backoff.is_some()).then(|| RetryPolicy {
            minimum_backoff: self.min_backoff.map(duration_to_proto),
            maximum_backoff: self.max_backoff.map(duration_to_proto),
        });
        Subscription {
            stream: stream.into(),
            name: name.into(),
            ack_deadline_seconds: self.ack_deadline.unwrap_or(0),
            retry_policy: retry,
            dead_letter_policy: self.max_attempts.map(|n| DeadLetterPolicy { max_delivery_attempts: n }),
            event_type_filter: self.filter.clone(),
            circuit_breaker: self.breaker.then(|| CircuitBreakerPolicy { enabled: true, ..Default::default() }),
            create_time: None,
            push_config: None,
            ordered: false,
        }
    }

    /// Whether any push flag was given.
    fn push_given(&self) -> bool {
        self.push_endpoint.is_some()
            || self.push_secret_file.is_some()
            || self.push_timeout.is_some()
            || self.push_concurrency.is_some()
            || self.push_structured
            || self.push_binary
            || self.push_rotation_window.is_some()
    }

    /// The push config of the flags given over `current` (the stored one on update; its secret
    /// comes back empty, which the server reads as "keep the stored secret").
    fn push_config(&self, current: Option<PushConfig>) -> Result<PushConfig, CliError> {
        let mut push = current.unwrap_or_default();
        push.previous_secret_expire_time = None; // output only
        if let Some(endpoint) = &self.push_endpoint {
            push.endpoint.clone_from(endpoint);
        }
        if let Some(path) = &self.push_secret_file {
            let secret = std::fs::read_to_string(path)
                .map_err(|e| CliError::Usage(format!("--push-secret-file {}: {e}", path.display())))?;
            push.signing_secret = secret.trim().to_string();
        }
        if let Some(timeout) = self.push_timeout {
            push.timeout = Some(duration_to_proto(timeout));
        }
        if let Some(n) = self.push_concurrency {
            push.max_concurrency = n;
        }
        if self.push_structured {
            push.content_mode = ContentMode::Structured.into();
        } else if self.push_binary {
            push.content_mode = ContentMode::Binary.into();
        }
        if let Some(window) = self.push_rotation_window {
            push.rotation_window = Some(duration_to_proto(window));
        }
        Ok(push)
    }

    /// The update-mask paths of the flags given (plus `--clear-filter` / `--no-breaker` /
    /// `--no-push`; any push flag masks the whole `push_config`).
    fn mask(&self, clear_filter: bool, no_breaker: bool, no_push: bool) -> Vec<String> {
        let given = [
            (self.ack_deadline.is_some(), "ack_deadline_seconds"),
            (self.min_backoff.is_some(), "retry_policy.minimum_backoff"),
            (self.max_backoff.is_some(), "retry_policy.maximum_backoff"),
            (self.max_attempts.is_some(), "dead_letter_policy"),
            (!self.filter.is_empty() || clear_filter, "event_type_filter"),
            (self.breaker || no_breaker, "circuit_breaker"),
            (self.push_given() || no_push, "push_config"),
        ];
        given.iter().filter(|(set, _)| *set).map(|(_, path)| (*path).to_string()).collect()
    }
}

/// Runs a `sub` command.
pub async fn run(ctx: &Ctx, command: SubCommand) -> Result<(), CliError> {
    match command {
        SubCommand::Create { stream, name, settings, start, partition, ordered } => {
            create(ctx, &stream, &name, &settings, in_partition(start, partition, "--start")?, ordered).await
        }
        SubCommand::List { stream } => list(ctx, &stream).await,
        SubCommand::Show { stream, name } => show(ctx, &stream, &name).await,
        SubCommand::Update { stream, name, settings, clear_filter, no_breaker, no_push } => {
            let paths = settings.mask(clear_filter, no_breaker, no_push);
            let mut subscription = settings.to_subscription(&stream, &name);
            if settings.push_given() {
                // The mask path is the whole push config: start from the stored one.
                let current = get(ctx, &stream, &name).await?.push_config;
                subscription.push_config = Some(settings.push_config(current)?);
            }
            update(ctx, subscription, paths).await
        }
        SubCommand::Delete { stream, name, yes } => delete(ctx, &stream, &name, yes).await,
        SubCommand::Seek { stream, name, to, partition } => {
            seek(ctx, &stream, &name, in_partition(to, partition, "--to")?).await
        }
    }
}

/// `position` (the value of `flag`) in `partition` when one is given: an entry id becomes that
/// partition's (`partition_entry`); other positions move every partition and take none.
fn in_partition(position: Position, partition: Option<i32>, flag: &str) -> Result<Position, CliError> {
    let Some(partition) = partition else { return Ok(position) };
    match position.position {
        Some(position::Position::EntryId(entry_id)) => {
            Ok(Position { position: Some(position::Position::PartitionEntry(PartitionEntry { partition, entry_id })) })
        }
        _ => Err(CliError::Usage(format!(
            "--partition goes with an entry id {flag} (earliest, latest and a time move every partition)"
        ))),
    }
}

async fn create(
    ctx: &Ctx,
    stream: &str,
    name: &str,
    settings: &Settings,
    start: Position,
    ordered: bool,
) -> Result<(), CliError> {
    let mut subscription = settings.to_subscription(stream, name);
    subscription.ordered = ordered;
    if settings.push_given() {
        subscription.push_config = Some(settings.push_config(None)?);
    }
    let subscription = Some(subscription);
    let request = CreateSubscriptionRequest { subscription, start_position: Some(start) };
    let mut admin = ctx.admin().await?;
    let reply = ctx.call(format!("create subscription {stream}/{name}"), admin.create_subscription(request)).await?;
    print_subscription(ctx.format(), &reply.subscription.unwrap_or_default())
}

/// A subscription's stored settings.
async fn get(ctx: &Ctx, stream: &str, name: &str) -> Result<Subscription, CliError> {
    let mut admin = ctx.admin().await?;
    let request = GetSubscriptionRequest { stream: stream.into(), name: name.into() };
    let reply = ctx.call(format!("show subscription {stream}/{name}"), admin.get_subscription(request)).await?;
    Ok(reply.subscription.unwrap_or_default())
}

async fn list(ctx: &Ctx, stream: &str) -> Result<(), CliError> {
    let mut admin = ctx.admin().await?;
    let request = ListSubscriptionsRequest { stream: stream.into() };
    let subs = ctx.call(format!("list subscriptions of {stream}"), admin.list_subscriptions(request)).await?;
    if ctx.format() == Format::Json {
        let items: Vec<_> = subs.subscriptions.iter().map(json::subscription).collect();
        return output::json(&json!({ "subscriptions": items }));
    }
    let headers =
        ["NAME", "ACK_DEADLINE", "MAX_ATTEMPTS", "MIN_BACKOFF", "MAX_BACKOFF", "FILTER", "BREAKER", "CREATED"];
    let mut table = Table::new(&headers);
    for s in &subs.subscriptions {
        let retry = s.retry_policy.unwrap_or_default();
        table.row(vec![
            s.name.clone(),
            format!("{}s", s.ack_deadline_seconds),
            max_attempts(s),
            show_duration(retry.minimum_backoff.as_ref()),
            show_duration(retry.maximum_backoff.as_ref()),
            show_list(&s.event_type_filter),
            breaker_enabled(s).into(),
            show_time(s.create_time.as_ref()),
        ]);
    }
    output::print(&table.render())
}

async fn show(ctx: &Ctx, stream: &str, name: &str) -> Result<(), CliError> {
    let mut admin = ctx.admin().await?;
    let what = format!("show subscription {stream}/{name}");
    let request = GetSubscriptionRequest { stream: stream.into(), name: name.into() };
    let sub = ctx.call(what.clone(), admin.get_subscription(request)).await?.subscription.unwrap_or_default();
    let stats = ctx.call(what, admin.get_stream_stats(GetStreamStatsRequest { stream: stream.into() })).await?;
    let row = stats.stats.unwrap_or_default().subscriptions.into_iter().find(|s| s.subscription == name);
    let row = row.unwrap_or_else(|| SubscriptionStats { subscription: name.into(), ..Default::default() });
    if ctx.format() == Format::Json {
        return output::json(
            &json!({ "subscription": json::subscription(&sub), "stats": json::subscription_stats(&row) }),
        );
    }
    let mut text = subscription_fields(&sub);
    text.push_str(&stats_fields(&row));
    if !row.consumers.is_empty() {
        let mut table = Table::new(&["CONSUMER", "PENDING", "IDLE"]);
        for c in &row.consumers {
            table.row(vec![c.name.clone(), c.pending.to_string(), show_duration(c.idle.as_ref())]);
        }
        text.push('\n');
        text.push_str(&table.render());
    }
    output::print(&text)
}

/// A subscription's statistics as `key: value` lines.
fn stats_fields(s: &SubscriptionStats) -> String {
    fields(&[
        ("lag", s.lag.to_string()),
        ("pending", s.pending.to_string()),
        ("redelivered", s.redelivered.to_string()),
        ("delayed", s.delayed.to_string()),
        ("redrive_pending", s.redrive_pending.to_string()),
        ("filtered", s.filtered.to_string()),
        ("retention_dead_lettered", s.retention_dead_lettered.to_string()),
        ("retention_dropped", s.retention_dropped.to_string()),
        ("dead_letters_overflowed", s.dead_letters_overflowed.to_string()),
        ("retention_hold", s.retention_hold.to_string()),
        ("last_delivered", dash(&s.last_delivered_entry_id)),
        ("dead_letters", s.dead_letter_depth.to_string()),
        ("consumers", s.consumers.len().to_string()),
        ("breaker_state", json::breaker_state(s.breaker_state)),
        ("ordered_keys_blocked", s.ordered_keys_blocked.to_string()),
        ("ordered_events_waiting", s.ordered_events_waiting.to_string()),
        ("oldest_blocked_age", show_duration(s.oldest_blocked_age.as_ref())),
    ])
}

async fn update(ctx: &Ctx, subscription: Subscription, paths: Vec<String>) -> Result<(), CliError> {
    if paths.is_empty() {
        return Err(CliError::Usage("sub update: give at least one setting to change".into()));
    }
    let what = format!("update subscription {}/{}", subscription.stream, subscription.name);
    let request =
        UpdateSubscriptionRequest { subscription: Some(subscription), update_mask: Some(FieldMask { paths }) };
    let mut admin = ctx.admin().await?;
    let reply = ctx.call(what, admin.update_subscription(request)).await?;
    print_subscription(ctx.format(), &reply.subscription.unwrap_or_default())
}

async fn delete(ctx: &Ctx, stream: &str, name: &str, yes: bool) -> Result<(), CliError> {
    output::confirm(&format!("delete subscription {stream}/{name} with its pending events and dead letters"), yes)?;
    let mut admin = ctx.admin().await?;
    let request = DeleteSubscriptionRequest { stream: stream.into(), name: name.into() };
    ctx.call(format!("delete subscription {stream}/{name}"), admin.delete_subscription(request)).await?;
    match ctx.format() {
        Format::Json => output::json(&json!({ "deleted": { "stream": stream, "subscription": name } })),
        Format::Table => output::print(&format!("deleted subscription {stream}/{name}\n")),
    }
}

async fn seek(ctx: &Ctx, stream: &str, name: &str, to: Position) -> Result<(), CliError> {
    let mut admin = ctx.admin().await?;
    let request = SeekRequest { stream: stream.into(), subscription: name.into(), position: Some(to) };
    let reply = ctx.call(format!("seek subscription {stream}/{name}"), admin.seek(request)).await?;
    match ctx.format() {
        Format::Json => output::json(&json!({ "acknowledged": reply.acknowledged })),
        Format::Table => {
            output::print(&format!("moved {stream}/{name}; {} pending events acknowledged\n", reply.acknowledged))
        }
    }
}

/// Prints one subscription's configuration.
fn print_subscription(format: Format, sub: &Subscription) -> Result<(), CliError> {
    match format {
        Format::Json => output::json(&json::subscription(sub)),
        Format::Table => output::print(&subscription_fields(sub)),
    }
}

/// A subscription's configuration as `key: value` lines.
fn subscription_fields(s: &Subscription) -> String {
    let retry = s.retry_policy.unwrap_or_default();
    fields(&[
        ("stream", s.stream.clone()),
        ("name", s.name.clone()),
        ("ack_deadline", format!("{}s", s.ack_deadline_seconds)),
        ("max_attempts", max_attempts(s)),
        ("min_backoff", show_duration(retry.minimum_backoff.as_ref())),
        ("max_backoff", show_duration(retry.maximum_backoff.as_ref())),
        ("filter", show_list(&s.event_type_filter)),
        ("breaker", breaker_enabled(s).into()),
        ("push", s.push_config.as_ref().map_or_else(|| "-".into(), |p| p.endpoint.clone())),
        ("ordered", if s.ordered { "yes" } else { "no" }.into()),
        ("created", show_time(s.create_time.as_ref())),
    ])
}

/// The max delivery attempts for display.
fn max_attempts(s: &Subscription) -> String {
    s.dead_letter_policy.as_ref().map_or_else(|| "-".into(), |d| d.max_delivery_attempts.to_string())
}

/// `on` or `off`.
fn breaker_enabled(s: &Subscription) -> &'static str {
    if s.circuit_breaker.as_ref().is_some_and(|b| b.enabled) { "on" } else { "off" }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            ack_deadline: None,
            max_attempts: Some(3),
            min_backoff: None,
            max_backoff: Some(Duration::from_secs(60)),
            filter: vec![],
            breaker: false,
            push_endpoint: None,
            push_secret_file: None,
            push_timeout: None,
            push_concurrency: None,
            push_structured: false,
            push_binary: false,
            push_rotation_window: None,
        }
    }

    #[test]
    fn the_mask_names_only_the_flags_given() {
        assert_eq!(settings().mask(false, false, false), ["retry_policy.maximum_backoff", "dead_letter_policy"]);
        assert_eq!(settings().mask(true, true, true).len(), 5);
        let sub = settings().to_subscription("s", "n");
        assert_eq!(sub.dead_letter_policy.map(|d| d.max_delivery_attempts), Some(3));
        assert!(sub.circuit_breaker.is_none());
    }
}
