//! The relay's maintenance task: refreshes the backlog gauges (rows still to publish, age of
//! the oldest) and deletes published rows older than the retention, in batches of
//! [`DELETE_BATCH`] rows (each its own short statement, so no long lock or huge transaction),
//! until none is left or the task is shut down. Every replica runs it; concurrent deletes of
//! the same rows are harmless.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{claim, relay::Relay};

/// Rows one retention statement deletes at most.
pub const DELETE_BATCH: i64 = 1000;
/// Longest time between two maintenance rounds.
const MAX_INTERVAL: Duration = Duration::from_secs(5);
/// Shortest time between two maintenance rounds.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// Runs rounds until `shutdown`: every half retention, within 100 ms ..= 5 s.
pub async fn run(relay: Relay, shutdown: CancellationToken) {
    let interval = (relay.options().retention / 2).clamp(MIN_INTERVAL, MAX_INTERVAL);
    while !shutdown.is_cancelled() {
        if let Err(e) = round(&relay, &shutdown).await {
            relay.metrics().error("postgres");
            tracing::debug!(error = %e, "outbox maintenance failed; retrying");
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// One round: gauges, then the retention.
pub async fn round(relay: &Relay, shutdown: &CancellationToken) -> Result<(), sqlx::Error> {
    let mut conn = relay.pool().acquire().await?;
    let (rows, age) = claim::backlog(&mut conn).await?;
    relay.metrics().backlog.set(rows);
    relay.metrics().oldest_age.set(age);
    let retention = relay.options().retention.as_secs_f64();
    while !shutdown.is_cancelled() {
        let deleted = claim::delete_published(&mut conn, retention, DELETE_BATCH).await?;
        relay.metrics().deleted.inc_by(deleted);
        if deleted < DELETE_BATCH.unsigned_abs() {
            break;
        }
    }
    Ok(())
}
