//! The archiver's [`Sink`] for one stream (or one partition of a partitioned stream: the
//! archiver runs one sink per partition, each storing its rows under the user-visible stream
//! name with its partition): each batch the driver hands over is inserted in one statement
//! ([`Store::insert`], idempotent per stream entry) and only then acknowledged
//! in one call. Up to [`IN_FLIGHT`] batches are stored at once (each on its own task), so the
//! session reads the next batch while the previous one is being inserted; the session's flow
//! control is [`IN_FLIGHT`] batches, and an acknowledgement wakes it when it waits for room.
//! A failed insert is retried with backoff while its batch is held, so a PostgreSQL outage
//! pauses archiving instead of losing or dead-lettering anything; the retention hold keeps the
//! entries in Redis meanwhile. A crash between commit and ack redelivers the batch after the ack
//! deadline, and the insert then stores nothing twice. When the delivery ends, [`Sink::end`]
//! waits for the batches in flight, so what was stored is acknowledged before the session
//! releases the rest.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use eventflow_broker::{
    Broker, Delivery,
    delivery::{Ended, Sink},
    session::BatchStats,
};
use tokio::{sync::Semaphore, task::JoinSet};
use tokio_util::sync::CancellationToken;

use crate::{
    filter::Cursor,
    metrics::ArchiveMetrics,
    store::{Row, Store},
};

/// Batches of one stream stored at once by one archiver replica.
pub const IN_FLIGHT: usize = 2;
/// First pause after a failed insert.
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// Longest pause between insert retries.
const MAX_RETRY: Duration = Duration::from_secs(5);

/// What storing a batch needs; cloned into each batch's task.
#[derive(Debug, Clone)]
pub struct Archiving {
    /// Acknowledges what was stored.
    pub broker: Broker,
    /// Stores the batches.
    pub store: Store,
    /// Counts rows and times inserts.
    pub metrics: ArchiveMetrics,
    /// The stream archived (its user-visible name: rows, metrics, logs).
    pub stream: String,
    /// The partition of it this sink archives (0 for a 1-partition stream).
    pub partition: u32,
    /// Ends the insert retries (the delivery stops).
    pub stop: CancellationToken,
}

/// The sink of one stream's archive delivery.
#[derive(Debug)]
pub struct ArchiveSink {
    /// What each batch's task needs.
    archiving: Archiving,
    /// Bounds the batches in flight by [`IN_FLIGHT`].
    permits: Arc<Semaphore>,
    /// The batches in flight.
    tasks: JoinSet<()>,
}

impl ArchiveSink {
    /// The sink of `archiving.stream`.
    pub fn new(archiving: Archiving) -> Self {
        Self { archiving, permits: Arc::new(Semaphore::new(IN_FLIGHT)), tasks: JoinSet::new() }
    }
}

impl Archiving {
    /// Stores `batch`, then acknowledges it (unless told to stop first).
    async fn archive(self, batch: Vec<Delivery>) {
        let mut rows = Vec::with_capacity(batch.len());
        let mut ack_ids = Vec::with_capacity(batch.len());
        for delivery in batch {
            match Cursor::in_partition("entry_id", &delivery.entry_id, self.partition) {
                Ok(cursor) => rows.push(Row::from_entry(&self.stream, cursor, delivery.payload)),
                Err(e) => {
                    tracing::error!(stream = %self.stream, partition = self.partition, entry = %delivery.entry_id, error = %e, "entry id not archivable")
                }
            }
            ack_ids.push(delivery.ack_id);
        }
        if !self.store(&rows).await {
            return;
        }
        // Committed: now the acks. If they fail the batch comes back after the ack deadline and
        // its insert stores nothing twice.
        let acked = match self.broker.decode_ack_ids(ack_ids) {
            Ok(ids) => self.broker.acknowledge_decoded(ids).await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = acked {
            tracing::warn!(stream = %self.stream, error = %e, "archived batch not acknowledged; it is redelivered and skipped");
        }
    }

    /// Inserts `rows`, retrying until it succeeds; `false` if told to stop first.
    async fn store(&self, rows: &[Row]) -> bool {
        let mut pause = FIRST_RETRY;
        loop {
            let started = Instant::now();
            match self.store.insert(rows).await {
                Ok(inserted) => {
                    self.metrics.insert_seconds.observe(started.elapsed().as_secs_f64());
                    self.metrics.rows.with_label_values(&[&self.stream]).inc_by(inserted);
                    self.metrics.duplicates.inc_by(u64::try_from(rows.len()).unwrap_or(0).saturating_sub(inserted));
                    return true;
                }
                Err(e) => {
                    self.metrics.insert_failures.inc();
                    tracing::warn!(stream = %self.stream, error = %e, retry_in = ?pause, "archive insert failed; retrying");
                }
            }
            tokio::select! {
                () = self.stop.cancelled() => return false,
                () = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(MAX_RETRY);
        }
    }
}

impl Sink for ArchiveSink {
    async fn send(&mut self, batch: Vec<Delivery>, _stats: &BatchStats) -> bool {
        while self.tasks.try_join_next().is_some() {}
        let Ok(permit) = self.permits.clone().acquire_owned().await else { return false };
        let job = self.archiving.clone();
        self.tasks.spawn(async move {
            job.archive(batch).await;
            drop(permit);
        });
        true
    }

    fn closed(&self) -> impl Future<Output = ()> + Send {
        // Ends only through the driver's shutdown token.
        std::future::pending()
    }

    async fn end(&mut self, why: &Ended) {
        tracing::info!(stream = %self.archiving.stream, partition = self.archiving.partition, in_flight = self.tasks.len(), ?why, "archive delivery ends");
        while self.tasks.join_next().await.is_some() {}
    }
}
