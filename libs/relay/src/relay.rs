//! The relay loop: wake up, drain the outbox in batches, wait.
//!
//! **Waking** — one listener task holds a `LISTEN eventflow_outbox` connection (the outbox's
//! insert trigger notifies on commit) and bumps a counter on every notification; workers wait
//! for the counter to change or for the poll interval, whichever comes first. The poll is the
//! fallback for lost notifications: while the listener reconnects, PostgreSQL drops what was
//! sent meanwhile, so a reconnect bumps the counter too.
//!
//! **One batch** ([`Relay::relay_batch`]) is one transaction: fix its plans
//! ([`claim::fix_batch_plans`]), claim rows (`FOR UPDATE SKIP LOCKED`, per-key order kept: see
//! [`crate::claim`]), turn each into a CloudEvent (an event
//! without id gets `outbox-<database identity>-<row id>`), publish them through the ingest
//! step — one call per stream, begun in id order with [`Order::Kept`], so rows of a stream are
//! stored in id order — mark the stored rows published and the refused ones failed (with the
//! reason, counted, logged), commit. A crash or an error after the events are stored but
//! before the commit leaves the rows unpublished; the next claim publishes them again under
//! the same event ids, and the stream's dedup window turns that into duplicates answered with
//! the first entry id: nothing lost, nothing stored twice (as long as the retry comes within
//! the window, 10 minutes by default). Redis or PostgreSQL failing rolls the batch back; the
//! worker retries after the poll interval.
//!
//! Several workers (and replicas) run batches concurrently; the claim shares the rows among
//! them.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use eventflow_broker::{BrokerError, Order};
use eventflow_pg::outbox::{NOTIFY_CHANNEL, PARTITION_KEY_ATTRIBUTE};
use eventflow_proto::{
    json,
    prost::Message,
    v1::{
        CloudEvent, PublishResult,
        cloud_event::{CloudEventAttributeValue, cloud_event_attribute_value::Attr},
    },
};
use eventflow_runtime::ingest::{Ingest, MAX_EVENTS_PER_CALL, Pending};
use sqlx::{PgPool, postgres::PgListener};
use tokio::sync::{OnceCell, watch};
use tokio_util::sync::CancellationToken;

use crate::{
    claim::{self, Row},
    metrics::RelayMetrics,
};

/// The first pause of a worker whose batch waited for rows held elsewhere (see `drain`).
const BLOCKED_PAUSE: Duration = Duration::from_millis(2);

/// Why a batch failed as a whole (it was rolled back).
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// PostgreSQL failed.
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
    /// Redis could not store the events.
    #[error("{0}")]
    Redis(#[from] BrokerError),
}

impl RelayError {
    /// The `backend` label of the error metric.
    fn backend(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgres",
            Self::Redis(_) => "redis",
        }
    }
}

/// How the relay works.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// Most rows one batch claims (1 ..= [`MAX_EVENTS_PER_CALL`]).
    pub batch_size: usize,
    /// How often workers look for rows without a notification (the fallback for lost ones).
    pub poll_interval: Duration,
    /// How long published rows are kept before the maintenance task deletes them.
    pub retention: Duration,
    /// Batches run concurrently by this replica.
    pub workers: usize,
}

/// What a batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Rows claimed.
    pub claimed: usize,
    /// Rows marked published.
    pub published: usize,
    /// Rows marked failed.
    pub failed: usize,
}

/// The outbox relay; cheap to clone (workers share it).
#[derive(Debug, Clone)]
pub struct Relay {
    /// The database holding the outbox.
    pool: PgPool,
    /// Validates, stores and counts the events.
    ingest: Ingest,
    /// The relay's own metrics.
    metrics: RelayMetrics,
    /// How it works.
    options: RelayOptions,
    /// The database's outbox identity, read once (the database may be down at start).
    identity: Arc<OnceCell<String>>,
}

/// A row turned into an event, or why it cannot be.
type Prepared = (i64, Result<CloudEvent, String>);

impl Relay {
    /// A relay of the outbox in `pool` through `ingest`.
    pub fn new(pool: PgPool, ingest: Ingest, metrics: RelayMetrics, options: RelayOptions) -> Self {
        Self { pool, ingest, metrics, options, identity: Arc::new(OnceCell::new()) }
    }

    /// The pool the relay uses (the maintenance task and the readiness probe share it).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The relay's metrics.
    pub fn metrics(&self) -> &RelayMetrics {
        &self.metrics
    }

    /// The options it runs with.
    pub fn options(&self) -> &RelayOptions {
        &self.options
    }

    /// Runs the listener and the workers until `shutdown`; a batch in flight finishes first.
    pub async fn run(self, shutdown: CancellationToken) {
        let (wake, woken) = watch::channel(0u64);
        let listener = tokio::spawn(listen(self.pool.clone(), self.options.poll_interval, wake, shutdown.clone()));
        let workers: Vec<_> = (0..self.options.workers.max(1))
            .map(|_| tokio::spawn(self.clone().work(woken.clone(), shutdown.clone())))
            .collect();
        for worker in workers {
            if let Err(e) = worker.await {
                tracing::error!(error = %e, "relay worker failed");
            }
        }
        let _ = listener.await;
    }

    /// One worker: drain, then wait for a notification or the poll interval.
    async fn work(self, mut woken: watch::Receiver<u64>, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            woken.borrow_and_update();
            let pause = match self.drain(&shutdown).await {
                Ok(()) => None,
                Err(e) => {
                    self.metrics.error(e.backend());
                    tracing::warn!(error = %e, "relay batch failed; retrying after the poll interval");
                    Some(self.options.poll_interval)
                }
            };
            if let Some(pause) = pause {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(pause) => continue,
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = woken.changed() => {}
                () = tokio::time::sleep(self.options.poll_interval) => {}
            }
        }
    }

    /// Runs batches while they come back full. A full batch that published nothing waited
    /// for older rows of its keys that another worker or replica holds: that one is publishing
    /// them, so it tries again soon (after [`BLOCKED_PAUSE`], doubling up to the poll interval)
    /// rather than after the poll interval.
    async fn drain(&self, shutdown: &CancellationToken) -> Result<(), RelayError> {
        let mut pause = BLOCKED_PAUSE;
        while !shutdown.is_cancelled() {
            let outcome = self.relay_batch().await?;
            if outcome.claimed < self.options.batch_size {
                break;
            }
            if outcome.published + outcome.failed > 0 {
                pause = BLOCKED_PAUSE;
                continue;
            }
            if pause > self.options.poll_interval {
                break;
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(pause) => {}
            }
            pause *= 2;
        }
        Ok(())
    }

    /// One batch (see the module doc).
    pub async fn relay_batch(&self) -> Result<BatchOutcome, RelayError> {
        let started = Instant::now();
        let identity = self.identity().await?;
        let mut tx = self.pool.begin().await?;
        let limit = i64::try_from(self.options.batch_size.clamp(1, MAX_EVENTS_PER_CALL)).unwrap_or(1);
        claim::fix_batch_plans(&mut tx).await?;
        let rows = claim::claim(&mut tx, limit).await?;
        let claimed = rows.len();
        if claimed == 0 {
            tx.rollback().await?;
            return Ok(BatchOutcome::default());
        }
        let blocked = claim::blocked_from(&mut tx, &rows).await?;
        let rows = claim::in_key_order(rows, &blocked);
        let (published, failed) = self.publish(rows, &identity).await?;
        claim::mark_published(&mut tx, &published).await?;
        claim::mark_failed(&mut tx, &failed).await?;
        tx.commit().await?;
        self.metrics.published.inc_by(published.len() as u64);
        self.metrics.failed.inc_by(failed.len() as u64);
        for (id, why) in &failed {
            tracing::error!(row = id, reason = %why, "outbox row failed: marked failed, not published");
        }
        self.metrics.batch_duration.observe(started.elapsed().as_secs_f64());
        Ok(BatchOutcome { claimed, published: published.len(), failed: failed.len() })
    }

    /// The database's outbox identity, read on first use.
    async fn identity(&self) -> Result<String, sqlx::Error> {
        let identity = self
            .identity
            .get_or_try_init(|| async {
                let mut conn = self.pool.acquire().await?;
                claim::identity(&mut conn).await
            })
            .await?;
        Ok(identity.clone())
    }

    /// Publishes `rows` (in id order), one ingest call per stream begun in id order; returns
    /// the ids of the rows stored (or found duplicate) and the failed rows with their reasons.
    async fn publish(&self, rows: Vec<Row>, identity: &str) -> Result<(Vec<i64>, Vec<(i64, String)>), RelayError> {
        let mut streams: Vec<(String, Vec<Prepared>)> = Vec::new();
        for row in rows {
            let prepared = (row.id, event_of(&row, identity));
            match streams.iter_mut().find(|(stream, _)| *stream == row.stream) {
                Some((_, events)) => events.push(prepared),
                None => streams.push((row.stream, vec![prepared])),
            }
        }
        let parent = opentelemetry::Context::new();
        let mut failed = Vec::new();
        let mut begun: Vec<(String, Vec<i64>, Result<Pending, BrokerError>)> = Vec::new();
        for (stream, prepared) in streams {
            let mut ids = Vec::with_capacity(prepared.len());
            let mut events = Vec::with_capacity(prepared.len());
            for (id, event) in prepared {
                match event {
                    Ok(event) => {
                        ids.push(id);
                        events.push(event);
                    }
                    Err(why) => failed.push((id, why)),
                }
            }
            if events.is_empty() {
                continue;
            }
            let pending = self.ingest.begin(&stream, events, &parent, Order::Kept).await;
            begun.push((stream, ids, pending));
        }
        let mut published = Vec::new();
        for (stream, ids, pending) in begun {
            let outcome = match pending {
                Ok(pending) => pending.finish().await,
                Err(e) => Err(e),
            };
            match outcome {
                Ok(results) => sort_results(&ids, results, &mut published, &mut failed),
                Err(e) if refuses_the_stream(&e) => {
                    failed.extend(ids.into_iter().map(|id| (id, format!("stream {stream:?}: {e}"))));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok((published, failed))
    }
}

/// Whether `error` refuses a stream for good (it does not exist, its name is invalid), so its
/// rows are failed rather than retried forever ahead of every other row.
fn refuses_the_stream(error: &BrokerError) -> bool {
    matches!(error, BrokerError::NotFound(_) | BrokerError::InvalidArgument { .. })
}

/// Splits the results of one ingest call (one per id in `ids`) into published and failed.
fn sort_results(ids: &[i64], results: Vec<PublishResult>, published: &mut Vec<i64>, failed: &mut Vec<(i64, String)>) {
    for (id, result) in ids.iter().zip(results) {
        match result.error {
            None => published.push(*id),
            Some(error) => failed.push((*id, error.message)),
        }
    }
}

/// The CloudEvent of `row`: decoded, with the deterministic id when it has none and the row's
/// partition key as its `partitionkey` attribute when it carries none. `Err` says why the row
/// holds no usable event.
fn event_of(row: &Row, identity: &str) -> Result<CloudEvent, String> {
    let mut event = match (&row.event, &row.event_json) {
        (Some(bytes), _) => {
            CloudEvent::decode(bytes.as_slice()).map_err(|e| format!("event is not a protobuf CloudEvent: {e}"))?
        }
        (None, Some(text)) => json::from_json(text).map_err(|e| format!("event_json: {e}"))?,
        (None, None) => return Err("the row holds no event".into()),
    };
    if event.id.is_empty() {
        event.id = format!("outbox-{identity}-{}", row.id);
    }
    if let Some(key) = &row.partition_key {
        let attr = Some(Attr::CeString(key.clone()));
        event.attributes.entry(PARTITION_KEY_ATTRIBUTE.into()).or_insert(CloudEventAttributeValue { attr });
    }
    Ok(event)
}

/// The listener task (see the module doc): bumps `wake` on every notification and on every
/// (re)connection, until `shutdown`.
async fn listen(pool: PgPool, retry: Duration, wake: watch::Sender<u64>, shutdown: CancellationToken) {
    let bump = || wake.send_modify(|n| *n = n.wrapping_add(1));
    let mut listener: Option<PgListener> = None;
    while !shutdown.is_cancelled() {
        let Some(current) = listener.as_mut() else {
            match connect_listener(&pool).await {
                Ok(connected) => {
                    listener = Some(connected);
                    bump();
                }
                Err(e) => {
                    tracing::debug!(error = %e, "outbox LISTEN connection failed; polling meanwhile");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(retry) => {}
                    }
                }
            }
            continue;
        };
        tokio::select! {
            () = shutdown.cancelled() => break,
            received = current.try_recv() => match received {
                Ok(Some(_)) => bump(),
                // The connection was lost; the next try_recv reconnects. Notifications sent
                // meanwhile are gone: look for rows anyway.
                Ok(None) => bump(),
                Err(e) => {
                    tracing::debug!(error = %e, "outbox LISTEN connection failed; polling meanwhile");
                    listener = None;
                }
            },
        }
    }
}

/// A listener on the outbox channel.
async fn connect_listener(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(NOTIFY_CHANNEL).await?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, event: Option<Vec<u8>>, key: Option<&str>) -> Row {
        Row { id, stream: "s".into(), event, event_json: None, partition_key: key.map(str::to_string) }
    }

    #[test]
    fn an_event_without_id_gets_one_from_the_row_and_the_key_travels_with_it() {
        let bytes = CloudEvent { source: "/x".into(), ..Default::default() }.encode_to_vec();
        let event = event_of(&row(42, Some(bytes.clone()), Some("k")), "db").unwrap();
        assert_eq!(event.id, "outbox-db-42");
        assert_eq!(event.attributes[PARTITION_KEY_ATTRIBUTE].attr, Some(Attr::CeString("k".into())));
        let again = event_of(&row(42, Some(bytes), Some("k")), "db").unwrap();
        assert_eq!(again.id, event.id, "a retried row keeps its id");
        let named = CloudEvent { id: "mine".into(), ..Default::default() }.encode_to_vec();
        assert_eq!(event_of(&row(1, Some(named), None), "db").unwrap().id, "mine");
    }

    #[test]
    fn an_undecodable_row_says_why() {
        let why = event_of(&row(1, Some(vec![0xff, 0xff]), None), "db").unwrap_err();
        assert!(why.starts_with("event is not a protobuf CloudEvent"), "{why}");
    }
}
