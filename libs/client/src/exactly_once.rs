//! The exactly-once consumer: each event's effects and the record that it was processed are
//! committed in one PostgreSQL transaction.
//!
//! For each delivered event [`ExactlyOnce::process`] begins a transaction and runs
//! `INSERT INTO eventflow.processed (subscription, event_id) ... ON CONFLICT DO NOTHING`.
//! No row inserted means an earlier delivery of this event already committed: the handler is
//! skipped and the event acknowledged. Otherwise the user's handler runs with the transaction,
//! the transaction commits, and only then is the event acknowledged. A handler error rolls
//! back (the processed row with it) and nacks ([`HandlerError::Retry`]) or dead-letters
//! ([`HandlerError::Permanent`]) the event.
//!
//! Why this holds across crashes and redeliveries: a crash before the commit rolls the
//! transaction back, so the redelivery processes the event; a crash (or a lost ack, an expired
//! lease) after the commit leaves the processed row, so the redelivery is skipped. Two
//! deliveries of one event running at once (a redelivery while the first still runs) are
//! serialised by the primary key: the second `INSERT` waits for the first transaction and then
//! inserts nothing (committed) or proceeds (rolled back).
//!
//! What it covers: effects written through the given transaction, in that database. What it
//! does not: anything else the handler does (an e-mail, an HTTP call, a write to another
//! store) may happen more than once; make those idempotent, or write them to an outbox table
//! in the same transaction.
//!
//! The processed key is `<stream>/<subscription>` ([`processed_key`]; names cannot contain
//! `/`): subscription names are unique per stream only. Rows are kept until [`prune`] removes
//! them — after the stream's dedup window (an event re-published within it is absorbed by
//! the stream; after it, only the processed row catches it) and after the longest time an
//! event can stay pending; [`spawn_pruner`] runs it periodically.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use eventflow_proto::v1::{GetStreamRequest, ReceivedEvent};
use sqlx::{PgPool, Postgres, Transaction};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{ClientError, Connection, Outcome};

/// A boxed, sendable future: the handler's return type.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a handler did not finish an event; its transaction is rolled back either way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// May succeed later: the event is nacked and redelivered.
    #[error("retry: {0}")]
    Retry(String),
    /// Will never succeed: the event is dead-lettered.
    #[error("permanent: {0}")]
    Permanent(String),
}

impl From<sqlx::Error> for HandlerError {
    /// A database error inside the handler is worth a retry.
    fn from(e: sqlx::Error) -> Self {
        Self::Retry(format!("postgres: {e}"))
    }
}

/// The value of `eventflow.processed.subscription` for a subscription of a stream.
pub fn processed_key(stream: &str, subscription: &str) -> String {
    format!("{stream}/{subscription}")
}

/// Counters of what the consumer did, for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExactlyOnceStats {
    /// Events whose handler committed.
    pub committed: u64,
    /// Deliveries skipped because the event was already processed.
    pub skipped: u64,
    /// Deliveries rolled back (handler or database error).
    pub rolled_back: u64,
}

/// The shared counters behind [`ExactlyOnceStats`].
#[derive(Debug, Default)]
struct Counters {
    /// See [`ExactlyOnceStats::committed`].
    committed: AtomicU64,
    /// See [`ExactlyOnceStats::skipped`].
    skipped: AtomicU64,
    /// See [`ExactlyOnceStats::rolled_back`].
    rolled_back: AtomicU64,
}

/// An exactly-once consumer of one subscription; see the module doc. Cheap to clone.
pub struct ExactlyOnce<H> {
    /// Where the effects and the processed ids live.
    pool: PgPool,
    /// The processed key (see [`processed_key`]).
    key: Arc<str>,
    /// The user's handler.
    handler: Arc<H>,
    /// What it did.
    counters: Arc<Counters>,
}

impl<H> Clone for ExactlyOnce<H> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            key: self.key.clone(),
            handler: self.handler.clone(),
            counters: self.counters.clone(),
        }
    }
}

impl<H> std::fmt::Debug for ExactlyOnce<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExactlyOnce").field("key", &self.key).finish_non_exhaustive()
    }
}

impl<H> ExactlyOnce<H>
where
    H: for<'t> Fn(&'t mut Transaction<'static, Postgres>, &'t ReceivedEvent) -> BoxFuture<'t, Result<(), HandlerError>>
        + Send
        + Sync
        + 'static,
{
    /// A consumer of `subscription` on `stream` whose handler writes through the transaction it
    /// is given (do not commit it: the consumer does). The schema must exist
    /// (`eventflow_pg::migrate`, or the relay's migrations).
    pub fn new(pool: PgPool, stream: &str, subscription: &str, handler: H) -> Self {
        Self {
            pool,
            key: processed_key(stream, subscription).into(),
            handler: Arc::new(handler),
            counters: Arc::new(Counters::default()),
        }
    }

    /// What it did so far.
    pub fn stats(&self) -> ExactlyOnceStats {
        ExactlyOnceStats {
            committed: self.counters.committed.load(Ordering::Relaxed),
            skipped: self.counters.skipped.load(Ordering::Relaxed),
            rolled_back: self.counters.rolled_back.load(Ordering::Relaxed),
        }
    }

    /// Processes one delivery and says how to settle it (see the module doc).
    pub async fn process(&self, event: &ReceivedEvent) -> Outcome {
        let event_id = event.event.as_ref().map(|e| e.id.as_str()).unwrap_or_default();
        if event_id.is_empty() {
            return Outcome::Reject { reason: "event without id".into() };
        }
        match self.transact(event_id, event).await {
            Ok(Done::Committed) => {
                self.counters.committed.fetch_add(1, Ordering::Relaxed);
                Outcome::Ack
            }
            Ok(Done::Skipped) => {
                self.counters.skipped.fetch_add(1, Ordering::Relaxed);
                Outcome::Ack
            }
            Err(error) => {
                self.counters.rolled_back.fetch_add(1, Ordering::Relaxed);
                match error {
                    HandlerError::Retry(reason) => Outcome::Nack { reason },
                    HandlerError::Permanent(reason) => Outcome::Reject { reason },
                }
            }
        }
    }

    /// The handler for [`crate::Subscriber::run`].
    pub fn into_handler(self) -> impl Fn(ReceivedEvent) -> BoxFuture<'static, Outcome> + Send + Sync + 'static {
        move |event| {
            let this = self.clone();
            Box::pin(async move { this.process(&event).await })
        }
    }

    /// One transaction: claim the id, run the handler, commit. Dropping `tx` on an error path
    /// rolls it back.
    async fn transact(&self, event_id: &str, event: &ReceivedEvent) -> Result<Done, HandlerError> {
        let mut tx = self.pool.begin().await?;
        let claimed = sqlx::query(
            "INSERT INTO eventflow.processed (subscription, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(&*self.key)
        .bind(event_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if claimed == 0 {
            tx.rollback().await?;
            return Ok(Done::Skipped);
        }
        (self.handler)(&mut tx, event).await?;
        tx.commit().await?;
        Ok(Done::Committed)
    }
}

/// How a delivery ended without error.
enum Done {
    /// The handler ran and its transaction committed.
    Committed,
    /// The event was processed before: the handler did not run.
    Skipped,
}

/// Deletes processed ids of `subscription` on `stream` recorded more than `older_than` ago, in
/// batches of 10 000 rows (short transactions); returns how many it deleted.
pub async fn prune(pool: &PgPool, stream: &str, subscription: &str, older_than: Duration) -> Result<u64, ClientError> {
    const BATCH: i64 = 10_000;
    let key = processed_key(stream, subscription);
    let mut deleted = 0;
    loop {
        let n = sqlx::query(
            "DELETE FROM eventflow.processed WHERE ctid IN (SELECT ctid FROM eventflow.processed \
             WHERE subscription = $1 AND processed_at < now() - make_interval(secs => $2) LIMIT $3)",
        )
        .bind(&key)
        .bind(older_than.as_secs_f64())
        .bind(BATCH)
        .execute(pool)
        .await
        .map_err(|source| ClientError::Db { what: "prune processed ids", source })?
        .rows_affected();
        deleted += n;
        if n < BATCH as u64 {
            return Ok(deleted);
        }
    }
}

/// Runs [`prune`] every `every` until `shutdown` is cancelled (failures are logged and tried
/// again next time).
pub fn spawn_pruner(
    pool: PgPool,
    stream: String,
    subscription: String,
    older_than: Duration,
    every: Duration,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match prune(&pool, &stream, &subscription, older_than).await {
                Ok(n) => tracing::debug!(deleted = n, %stream, %subscription, "pruned processed ids"),
                Err(e) => tracing::warn!(error = %e, "pruning processed ids failed"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    })
}

/// The stream's dedup window as the admin service reports it: the least `older_than` to give
/// [`prune`] (add the longest time an event may stay pending).
pub async fn dedup_window(admin: &Connection, stream: &str) -> Result<Duration, ClientError> {
    let reply = admin
        .admin()
        .get_stream(GetStreamRequest { name: stream.to_string() })
        .await
        .map_err(|status| ClientError::rpc("get stream", status))?;
    let window = reply.into_inner().stream.and_then(|s| s.dedup_window).unwrap_or_default();
    let secs = u64::try_from(window.seconds).unwrap_or(0);
    let nanos = u32::try_from(window.nanos).unwrap_or(0);
    Ok(Duration::new(secs, nanos))
}
