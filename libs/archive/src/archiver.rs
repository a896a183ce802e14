//! The archiver: finds the streams to archive and runs one delivery per stream.
//!
//! Every `poll` it lists the streams; each one selected ([`Streams`]) gets the subscription
//! [`ARCHIVE_SUBSCRIPTION`] if it has none (from the earliest entry kept, ack deadline and
//! max attempts from [`Settings`]) with the retention hold set, is recorded in
//! `eventflow.archive_streams`, and gets a delivery task: a broker [`Session`] (flow control =
//! [`IN_FLIGHT`] batches) driven by [`drive`] into an [`ArchiveSink`]. A partitioned stream's
//! delivery has one such session and sink per partition (each with the whole flow control:
//! partitions are archived side by side like separate streams); the `_archive` subscription
//! and its hold exist in every partition (`Broker::create_subscription` and
//! `Broker::set_retention_hold` cover them all), rows carry the user-visible stream name and
//! the partition, and the lag gauges sum the partitions. A delivery that ended is restarted on
//! the next poll; a stream gone stops its delivery. Each poll also refreshes the
//! lag gauges, and every hour (and at start) the partitions of the next days are created and
//! those past the archive retention dropped.
//!
//! Several archiver replicas share a stream through the consumer group: each replica's
//! session is one consumer, Redis hands each entry to one of them, and inserts are idempotent.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use eventflow_broker::{
    Broker, BrokerError, Position, Session, SubscriptionConfig,
    delivery::{Ended, drive},
    model::MAX_DELIVERY_ATTEMPTS_LIMIT,
    now_ms,
    session::FlowControl,
};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::{
    ARCHIVE_SUBSCRIPTION, ArchiveError,
    metrics::ArchiveMetrics,
    sink::{ArchiveSink, Archiving, IN_FLIGHT},
    store::Store,
};

/// Streams one listing page asks for.
const PAGE: usize = 1000;
/// How often partitions are created ahead and old ones dropped.
const MAINTENANCE: Duration = Duration::from_secs(3600);
/// Days of partitions created ahead of today.
const DAYS_AHEAD: i64 = 2;
/// Pause before reopening a delivery that ended with an error.
const REOPEN_PAUSE: Duration = Duration::from_secs(1);

/// Which streams are archived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Streams {
    /// Every stream (`*`).
    All,
    /// These names.
    Only(Vec<String>),
}

impl Streams {
    /// Parses `EVENTFLOW_ARCHIVE_STREAMS`: `*` or comma-separated names.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text == "*" || text.is_empty() {
            return Ok(Self::All);
        }
        let names: Vec<String> = text.split(',').map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).collect();
        for name in &names {
            eventflow_broker::validate_name("archive_streams", name).map_err(|e| e.to_string())?;
        }
        Ok(Self::Only(names))
    }

    /// Whether `stream` is archived.
    pub fn selects(&self, stream: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(names) => names.iter().any(|n| n == stream),
        }
    }
}

/// How the archiver runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Which streams.
    pub streams: Streams,
    /// How often to look for new and removed streams (and refresh the lag gauges).
    pub poll: Duration,
    /// Most events per batch (one insert, one ack).
    pub batch: u32,
    /// Ack deadline of a new `_archive` subscription: how long a batch held by an archiver
    /// that died waits before another one takes it.
    pub ack_deadline: Duration,
    /// Keep archived events this long (by publish time, whole UTC days); `None` = forever.
    pub retention: Option<Duration>,
}

/// What the archiver's tasks share.
#[derive(Debug, Clone)]
pub struct Archiver {
    /// Where the streams are.
    pub broker: Broker,
    /// Where the events go.
    pub store: Store,
    /// Counts.
    pub metrics: ArchiveMetrics,
    /// How.
    pub settings: Settings,
}

/// One running delivery.
struct Running {
    /// Stops it.
    stop: CancellationToken,
    /// Resolves when it stopped.
    handle: JoinHandle<()>,
}

impl Archiver {
    /// Archives until `shutdown`; then waits for the deliveries to end.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut running: BTreeMap<String, Running> = BTreeMap::new();
        let mut maintained: Option<Instant> = None;
        loop {
            if maintained.is_none_or(|at| at.elapsed() >= MAINTENANCE) {
                match self.maintain().await {
                    Ok(()) => maintained = Some(Instant::now()),
                    Err(e) => tracing::warn!(error = %e, "archive partition maintenance failed; retried next poll"),
                }
            }
            match self.streams().await {
                Ok(found) => self.reconcile(&mut running, found, &shutdown).await,
                Err(e) => tracing::warn!(error = %e, "cannot list streams; archive deliveries go on unchanged"),
            }
            self.refresh_lag(running.keys()).await;
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(self.settings.poll) => {}
            }
        }
        for (_, delivery) in std::mem::take(&mut running) {
            delivery.stop.cancel();
            let _ = delivery.handle.await;
        }
    }

    /// Creates the partitions of today and the next days; drops those past the retention.
    pub async fn maintain(&self) -> Result<(), ArchiveError> {
        let now = i64::try_from(now_ms()).unwrap_or(i64::MAX);
        let day = 86_400_000;
        self.store.ensure_partitions((0..=DAYS_AHEAD).map(|d| now + d * day)).await?;
        if let Some(retention) = self.settings.retention {
            let keep = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
            let dropped = self.store.drop_partitions_before(now.saturating_sub(keep)).await?;
            if dropped > 0 {
                tracing::info!(dropped, "archive partitions past the retention dropped");
            }
        }
        Ok(())
    }

    /// The selected streams that exist.
    async fn streams(&self) -> Result<Vec<String>, BrokerError> {
        let mut found = Vec::new();
        let mut after = String::new();
        loop {
            let (names, more) = self.broker.list_stream_names(&after, PAGE).await?;
            found.extend(names.iter().filter(|n| self.settings.streams.selects(n)).cloned());
            match names.last() {
                Some(last) if more => after.clone_from(last),
                _ => return Ok(found),
            }
        }
    }

    /// Stops deliveries of streams gone or ended; prepares and starts the missing ones.
    async fn reconcile(
        &self,
        running: &mut BTreeMap<String, Running>,
        found: Vec<String>,
        shutdown: &CancellationToken,
    ) {
        running.retain(|stream, r| {
            let keep = found.contains(stream) && !r.handle.is_finished();
            if !keep {
                r.stop.cancel();
                self.metrics.lag_entries.remove_label_values(&[stream]).ok();
                self.metrics.lag_seconds.remove_label_values(&[stream]).ok();
            }
            keep
        });
        for stream in found {
            if running.contains_key(&stream) {
                continue;
            }
            let partitions = match self.prepare(&stream).await {
                Ok(partitions) => partitions,
                Err(e) => {
                    tracing::warn!(%stream, error = %e, "cannot start archiving the stream; retried next poll");
                    continue;
                }
            };
            let stop = shutdown.child_token();
            let mut parts = JoinSet::new();
            for partition in 0..partitions {
                parts.spawn(self.clone().deliver(stream.clone(), partition, stop.clone()));
            }
            // One partition's delivery ending (its subscription or stream not found) ends them
            // all, so the next poll restarts the stream's delivery as a whole.
            let all = stop.clone();
            let handle = tokio::spawn(async move {
                if parts.join_next().await.is_some() {
                    all.cancel();
                }
                while parts.join_next().await.is_some() {}
            });
            tracing::info!(%stream, partitions, "archive delivery starts");
            running.insert(stream, Running { stop, handle });
        }
    }

    /// Makes sure `stream` has the archive subscription with its hold (in every partition),
    /// and is recorded; returns its partition count.
    pub async fn prepare(&self, stream: &str) -> Result<u32, ArchiveError> {
        let config = SubscriptionConfig {
            ack_deadline: self.settings.ack_deadline,
            max_delivery_attempts: MAX_DELIVERY_ATTEMPTS_LIMIT,
            ..SubscriptionConfig::new(stream, ARCHIVE_SUBSCRIPTION)
        };
        match self.broker.create_subscription(&config, &Position::Earliest).await {
            Ok(_) | Err(BrokerError::AlreadyExists(_)) => {}
            Err(e) => return Err(e.into()),
        }
        self.broker.set_retention_hold(stream, ARCHIVE_SUBSCRIPTION, true).await?;
        self.store.register_stream(stream).await?;
        Ok(self.broker.partitions(stream).await?)
    }

    /// Archives partition `partition` of `stream` (the stream itself for 0) until `stop`: opens
    /// a session and drives it into an [`ArchiveSink`], reopening after errors (Redis outages
    /// are ridden out in the driver).
    async fn deliver(self, stream: String, partition: u32, stop: CancellationToken) {
        let part = eventflow_broker::partition_name(&stream, partition);
        let flow = match FlowControl::new(i64::from(self.settings.batch) * IN_FLIGHT as i64, 0) {
            // Each batch is one insert of `batch` rows.
            Ok(flow) => flow.in_batches(IN_FLIGHT),
            Err(e) => {
                tracing::error!(%stream, error = %e, "archive delivery cannot start");
                return;
            }
        };
        while !stop.is_cancelled() {
            let ended = match Session::open(&self.broker, &part, ARCHIVE_SUBSCRIPTION, flow).await {
                Ok(session) => {
                    let mut sink = ArchiveSink::new(Archiving {
                        broker: self.broker.clone(),
                        store: self.store.clone(),
                        metrics: self.metrics.clone(),
                        stream: stream.clone(),
                        partition,
                        stop: stop.clone(),
                    });
                    drive(session, &mut sink, &stop).await
                }
                Err(e) => Ended::Failed(e),
            };
            match ended {
                Ended::Shutdown | Ended::Gone => return,
                Ended::Failed(BrokerError::NotFound(what)) => {
                    // Stream or subscription deleted: the next poll recreates or forgets it.
                    tracing::info!(%stream, partition, %what, "archive delivery stops: not found");
                    return;
                }
                Ended::Failed(e) => {
                    tracing::warn!(%stream, partition, error = %e, "archive delivery failed; reopening");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(REOPEN_PAUSE) => {}
                    }
                }
            }
        }
    }

    /// Sets the lag gauges of the archived streams.
    async fn refresh_lag<'a>(&self, streams: impl Iterator<Item = &'a String>) {
        let now = now_ms();
        for stream in streams {
            match self.broker.unsettled(stream, ARCHIVE_SUBSCRIPTION).await {
                Ok(u) => {
                    let age_ms = u.oldest_ms.map_or(0, |oldest| now.saturating_sub(oldest));
                    self.metrics
                        .lag_entries
                        .with_label_values(&[stream])
                        .set(i64::try_from(u.entries).unwrap_or(i64::MAX));
                    self.metrics
                        .lag_seconds
                        .with_label_values(&[stream])
                        .set(i64::try_from(age_ms / 1000).unwrap_or(i64::MAX));
                }
                Err(e) => tracing::debug!(%stream, error = %e, "archive lag not read"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn stream_selection_parses() {
        assert_eq!(Streams::parse("*").unwrap(), Streams::All);
        assert_eq!(Streams::parse("").unwrap(), Streams::All);
        let only = Streams::parse("orders, payments").unwrap();
        assert!(only.selects("orders") && only.selects("payments") && !only.selects("other"));
        assert!(Streams::parse("bad name").is_err());
    }
}
