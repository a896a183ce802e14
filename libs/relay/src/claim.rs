//! The relay's SQL: claiming a batch of outbox rows, keeping per-key order, marking rows
//! published or failed. Everything here runs inside the batch's transaction (see
//! [`crate::relay`]).
//!
//! **Claim** — the oldest rows still to publish, `FOR UPDATE SKIP LOCKED`: rows another replica
//! (or worker) holds are skipped, so replicas share the work without waiting on each other.
//!
//! **Per-key order** — `SKIP LOCKED` alone would let replica B take row 3 of key `k` while
//! replica A still holds rows 1 and 2 of `k`, and B could publish first. So after the claim,
//! [`blocked_from`] asks, per partition key of the batch, for the oldest row of that key still
//! to publish that is older than the batch's newest row of the key and *not* in the batch
//! (held by another replica, or committed by a slow producer transaction after the claim
//! read). The batch keeps only its rows of that key older than it; the rest stay unpublished
//! and are claimed again later, once the older row is published. A row is therefore published
//! only when every older row of its key visible to PostgreSQL is published (or failed) — two
//! replicas never publish one key out of order, and no lock is held across replicas beyond
//! the row locks of the claim. (Rejected alternatives: claiming only the oldest row per key
//! caps a hot key at one row per batch; `pg_advisory_xact_lock(hashtext(key))` needs the
//! same older-row check anyway, because a replica may take the key's lock before the replica
//! holding the older rows does.) Rows without a key are published in id order per stream
//! within a batch, but two replicas may interleave them.
//!
//! Order is id order among committed rows: two producer transactions inserting rows of one
//! key concurrently get ids in insert order but may commit in the other order; a row
//! committed after a newer one of its key was published is published after it. Producers
//! that need a strict order per key serialise their transactions on that key (they usually
//! do: they update the same business row).

use std::collections::HashMap;

use sqlx::PgConnection;

/// One claimed outbox row.
#[derive(Debug, sqlx::FromRow)]
pub struct Row {
    /// The row id: order, and the deterministic event id.
    pub id: i64,
    /// The stream the event goes to.
    pub stream: String,
    /// The event in the protobuf format, if stored so.
    pub event: Option<Vec<u8>>,
    /// The event in the JSON format (as text), if stored so.
    pub event_json: Option<String>,
    /// The ordering key, if any.
    pub partition_key: Option<String>,
}

/// Fixes the plans of the rest of the batch's transaction: sorts and hash joins off, so every
/// statement of a batch reads only the rows it names, whatever the table's statistics say.
/// With statistics older than the backlog (a fresh table, or a burst since the last ANALYZE)
/// the planner guesses a few pending rows and reads *all* of them to sort them for [`claim`]
/// (80 ms per batch over 100 000 pending rows) where walking the `outbox_pending` index in id
/// order reads just the batch (0.9 ms); and it marks a batch published by hashing the batch's
/// ids and scanning the whole table, where probing the primary key per id reads just the batch.
/// The per-key probes of [`blocked_from`] get the index walk too.
pub async fn fix_batch_plans(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT set_config('enable_sort', 'off', true), set_config('enable_hashjoin', 'off', true)")
        .execute(conn)
        .await?;
    Ok(())
}

/// Locks and returns up to `limit` of the oldest rows still to publish, skipping rows other
/// transactions hold (after [`fix_batch_plans`] in the same transaction).
pub async fn claim(conn: &mut PgConnection, limit: i64) -> Result<Vec<Row>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, stream, event, event_json::text AS event_json, partition_key FROM eventflow.outbox \
         WHERE published_at IS NULL AND failed_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Per partition key of `rows`: the id of the oldest row of that key still to publish that is
/// older than the newest of `rows` with the key and not among `rows` (see the module doc).
/// Keys with no such row are absent.
pub async fn blocked_from(conn: &mut PgConnection, rows: &[Row]) -> Result<HashMap<String, i64>, sqlx::Error> {
    let mut newest: HashMap<&str, i64> = HashMap::new();
    for row in rows {
        if let Some(key) = &row.partition_key {
            newest.entry(key).and_modify(|id| *id = (*id).max(row.id)).or_insert(row.id);
        }
    }
    if newest.is_empty() {
        return Ok(HashMap::new());
    }
    let (keys, ids): (Vec<&str>, Vec<i64>) = newest.into_iter().unzip();
    let ours: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let blocked: Vec<(String, i64)> = sqlx::query_as(
        // One index probe per key (`outbox_pending_key`), from the oldest row still to publish
        // (below it the index holds only entries of rows published since the last vacuum),
        // stopping at the first row not ours.
        "WITH oldest AS (SELECT min(id) AS id FROM eventflow.outbox WHERE published_at IS NULL AND failed_at IS NULL) \
         SELECT k.key, f.id FROM oldest, unnest($1::text[], $2::bigint[]) AS k(key, newest) \
         CROSS JOIN LATERAL (SELECT o.id FROM eventflow.outbox o \
           WHERE o.partition_key = k.key AND o.partition_key IS NOT NULL \
             AND o.id >= oldest.id AND o.id < k.newest \
             AND o.published_at IS NULL AND o.failed_at IS NULL AND o.id <> ALL($3) \
           ORDER BY o.id LIMIT 1) AS f",
    )
    .bind(keys)
    .bind(ids)
    .bind(ours)
    .fetch_all(conn)
    .await?;
    Ok(blocked.into_iter().collect())
}

/// `rows` without those that must wait for an older row of their key (see [`blocked_from`]).
pub fn in_key_order(rows: Vec<Row>, blocked: &HashMap<String, i64>) -> Vec<Row> {
    rows.into_iter()
        .filter(|row| match row.partition_key.as_ref().and_then(|key| blocked.get(key)) {
            Some(first_foreign) => row.id < *first_foreign,
            None => true,
        })
        .collect()
}

/// Marks rows `ids` published.
pub async fn mark_published(conn: &mut PgConnection, ids: &[i64]) -> Result<(), sqlx::Error> {
    if !ids.is_empty() {
        // A join with unnest, not `id = ANY($1)`: sqlx prepares statements once, and the generic
        // plan of `= ANY` may scan the whole table; this one probes the primary key per id.
        sqlx::query(
            "UPDATE eventflow.outbox o SET published_at = now() FROM unnest($1::bigint[]) AS p(id) WHERE o.id = p.id",
        )
        .bind(ids)
        .execute(conn)
        .await?;
    }
    Ok(())
}

/// Marks rows failed, each with its reason.
pub async fn mark_failed(conn: &mut PgConnection, failed: &[(i64, String)]) -> Result<(), sqlx::Error> {
    if failed.is_empty() {
        return Ok(());
    }
    let (ids, reasons): (Vec<i64>, Vec<&str>) = failed.iter().map(|(id, why)| (*id, why.as_str())).unzip();
    sqlx::query(
        "UPDATE eventflow.outbox o SET failed_at = now(), failure = f.reason \
         FROM unnest($1::bigint[], $2::text[]) AS f(id, reason) WHERE o.id = f.id",
    )
    .bind(ids)
    .bind(reasons)
    .execute(conn)
    .await?;
    Ok(())
}

/// The database's outbox identity (migration `0003`), part of deterministic event ids.
pub async fn identity(conn: &mut PgConnection) -> Result<String, sqlx::Error> {
    sqlx::query_scalar("SELECT id::text FROM eventflow.outbox_identity").fetch_one(conn).await
}

/// Rows still to publish and the age of the oldest in seconds (0 when none).
pub async fn backlog(conn: &mut PgConnection) -> Result<(i64, f64), sqlx::Error> {
    let row: (i64, f64) = sqlx::query_as(
        "SELECT count(*), coalesce(extract(epoch FROM now() - (SELECT created_at FROM eventflow.outbox \
         WHERE published_at IS NULL AND failed_at IS NULL ORDER BY id LIMIT 1))::float8, 0) \
         FROM eventflow.outbox WHERE published_at IS NULL AND failed_at IS NULL",
    )
    .fetch_one(conn)
    .await?;
    Ok(row)
}

/// Deletes up to `limit` rows published more than `retention_secs` ago; returns how many.
pub async fn delete_published(conn: &mut PgConnection, retention_secs: f64, limit: i64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM eventflow.outbox WHERE id IN (SELECT id FROM eventflow.outbox \
         WHERE published_at < now() - make_interval(secs => $1) LIMIT $2)",
    )
    .bind(retention_secs)
    .bind(limit)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}
