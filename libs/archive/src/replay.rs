//! Replay and export of archived events, oldest first, page by page (so memory stays bounded
//! by one batch however many events match).
//!
//! * Into a subscription: each batch goes to the subscription's redrive stream in one script
//!   ([`Broker::replay_into_subscription`]), as a dead-letter requeue does: only that
//!   subscription delivers the events again, attempts start at 1, and the stored bytes —
//!   trace context included — are unchanged. On a partitioned stream the broker puts each
//!   event into the redrive stream of the partition its `partitionkey` (or event id) routes
//!   to, as Publish does — the partition it came from — so one key's events stay in one
//!   partition, oldest first.
//! * Into a stream: each batch goes through the ingest step ([`Ingest`]) as one publish, so
//!   the target's validation, size limit, dedup window (the events keep their ids) and metrics
//!   apply; the events keep their `traceparent`, so the PRODUCER span of the replay joins the
//!   original trace.
//!
//! Progress is reported after every batch ([`Progress`], one ReplayEvents message each).

use eventflow_broker::{Broker, ReplayEvent};
use eventflow_runtime::ingest::Ingest;
use tokio::sync::mpsc;

use crate::{
    ArchiveError,
    filter::{Cursor, Filter, Order},
    metrics::ArchiveMetrics,
    store::{Row, Store, string_attr},
};

/// Events per replay batch when the client asks for 0.
pub const DEFAULT_REPLAY_BATCH: usize = 500;
/// Most events per replay batch.
pub const MAX_REPLAY_BATCH: usize = 1000;
/// Events per export chunk (one ExportEvents message, also bounded by bytes).
pub const EXPORT_CHUNK: usize = 100;

/// Where replayed events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// This subscription of the archived stream only (its redrive stream).
    Subscription(String),
    /// This stream, as new entries.
    Stream(String),
}

impl Target {
    /// The metric label of the target kind.
    fn label(&self) -> &'static str {
        match self {
            Self::Subscription(_) => "subscription",
            Self::Stream(_) => "stream",
        }
    }
}

/// Progress of a replay so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// Events replayed (sent to the target).
    pub replayed: u64,
    /// Of those, duplicates within the target stream's dedup window.
    pub duplicates: u64,
    /// Of those, events the target stream refused.
    pub refused: u64,
    /// Entry id of the last event replayed.
    pub last_entry_id: String,
    /// Nothing more matches.
    pub done: bool,
}

/// What replay and export need; cheap to clone.
#[derive(Debug, Clone)]
pub struct Replayer {
    /// Subscriptions' redrive streams, target checks.
    pub broker: Broker,
    /// The archive.
    pub store: Store,
    /// The publish path for stream targets.
    pub ingest: Ingest,
    /// Counts replayed events.
    pub metrics: ArchiveMetrics,
}

impl Replayer {
    /// Checks a replay before it starts: the filter, that the stream was archived and that the
    /// target exists (`NotFound` otherwise).
    pub async fn check(&self, filter: &Filter, target: &Target) -> Result<(), ArchiveError> {
        filter.validate()?;
        self.store.check_stream(&filter.stream).await?;
        match target {
            Target::Subscription(name) => {
                eventflow_broker::validate_name("subscription", name)?;
                self.broker.get_subscription(&filter.stream, name).await?;
            }
            Target::Stream(name) => {
                eventflow_broker::validate_name("stream", name)?;
                self.broker.get_stream(name).await?;
            }
        }
        Ok(())
    }

    /// Replays what `filter` matches into `target` in batches of `batch` (at most `max`
    /// events when set), sending the progress after each batch to `progress`; stops early
    /// when the receiver is gone. Call [`Replayer::check`] first.
    pub async fn replay(
        &self,
        filter: &Filter,
        target: &Target,
        batch: usize,
        max: Option<u64>,
        progress: mpsc::Sender<Result<Progress, ArchiveError>>,
    ) {
        let mut done = Progress::default();
        let mut after: Option<Cursor> = None;
        loop {
            let left = max.map_or(u64::MAX, |m| m.saturating_sub(done.replayed));
            let limit = usize::try_from(left).unwrap_or(usize::MAX).min(batch);
            let page = if limit == 0 {
                Ok((Vec::new(), None))
            } else {
                self.store.query(filter, Order::OldestFirst, after, limit).await
            };
            let (rows, next) = match page {
                Ok(page) => page,
                Err(e) => {
                    let _ = progress.send(Err(e)).await;
                    return;
                }
            };
            if let Some(last) = rows.last() {
                match self.send(filter, target, &rows).await {
                    Ok((duplicates, refused)) => {
                        done.replayed += rows.len() as u64;
                        done.duplicates += duplicates;
                        done.refused += refused;
                        done.last_entry_id = last.cursor.entry_id();
                        self.metrics.replayed.with_label_values(&[target.label()]).inc_by(rows.len() as u64);
                    }
                    Err(e) => {
                        let _ = progress.send(Err(e)).await;
                        return;
                    }
                }
            }
            after = next;
            done.done = next.is_none() || done.replayed >= max.unwrap_or(u64::MAX);
            if progress.send(Ok(done.clone())).await.is_err() || done.done {
                return;
            }
        }
    }

    /// Sends one batch to the target; returns (duplicates, refused).
    async fn send(&self, filter: &Filter, target: &Target, rows: &[Row]) -> Result<(u64, u64), ArchiveError> {
        match target {
            Target::Subscription(name) => {
                let events: Vec<ReplayEvent> = rows
                    .iter()
                    .map(|r| ReplayEvent {
                        entry_id: r.cursor.stream_entry_id(),
                        event_id: r.event_id.clone(),
                        ordering_key: r.partition_key.clone().unwrap_or_default(),
                        event_type: r.event_type.clone(),
                        payload: r.event.clone(),
                        traceparent: r
                            .cloud_event()
                            .as_ref()
                            .and_then(|e| string_attr(e, "traceparent"))
                            .unwrap_or_default(),
                    })
                    .collect();
                self.broker.replay_into_subscription(&filter.stream, name, &events).await?;
                Ok((0, 0))
            }
            Target::Stream(name) => {
                let events = rows.iter().filter_map(Row::cloud_event).collect();
                let results = self.ingest.publish(name, events, &opentelemetry::Context::new()).await?;
                let duplicates = results.iter().filter(|r| r.duplicate).count() as u64;
                let refused: Vec<_> =
                    results.iter().filter_map(|r| r.error.as_ref().map(|e| (&r.event_id, e))).collect();
                for (id, error) in &refused {
                    tracing::warn!(target_stream = %name, event = %id, error = %error.message, "replayed event refused");
                }
                Ok((duplicates, refused.len() as u64))
            }
        }
    }

    /// Exports what `filter` matches, oldest first, as CloudEvents JSON lines in chunks of at
    /// most [`EXPORT_CHUNK`] events (and 1 MiB); stops early when the receiver is gone.
    pub async fn export(&self, filter: &Filter, out: mpsc::Sender<Result<Vec<String>, ArchiveError>>) {
        let mut after = None;
        loop {
            let (rows, next) = match self.store.query(filter, Order::OldestFirst, after, EXPORT_CHUNK).await {
                Ok(page) => page,
                Err(e) => {
                    let _ = out.send(Err(e)).await;
                    return;
                }
            };
            let lines: Vec<String> =
                rows.iter().filter_map(Row::cloud_event).map(|e| eventflow_proto::json::to_json(&e)).collect();
            if !lines.is_empty() && out.send(Ok(lines)).await.is_err() {
                return;
            }
            match next {
                Some(n) => after = Some(n),
                None => return,
            }
        }
    }
}
