//! The archive in PostgreSQL (`eventflow.archive`, migrations `0010` and `0011` of
//! `eventflow-pg`): one row per stream entry — the CloudEvent bytes as published plus the
//! attributes queries filter on — in one partition per UTC day of publish time. A partitioned
//! stream's rows carry the user-visible stream name and the stream partition (`stream_partition`)
//! the entry was in, since entry ids are per stream partition.
//!
//! Inserts take a whole batch in one statement (`unnest` of column arrays) with
//! `ON CONFLICT DO NOTHING` on the primary key (stream, publish time, entry sequence, stream
//! partition), so a batch delivered again after a crash stores nothing twice. The partitions a batch needs are
//! created first (once per day per process, remembered); the archiver also creates the next
//! days' ahead and drops those older than the archive retention.
//!
//! Queries are keyset-paged over the primary key's order `(publish_time, entry_seq,
//! stream_partition)` — a page token is the last entry id returned ([`Cursor`]) — so a page costs an index range scan of one partition
//! or a few, however deep the paging goes.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use eventflow_proto::{
    prost::Message,
    v1::{CloudEvent, cloud_event::cloud_event_attribute_value::Attr},
};
use sqlx::{PgPool, Postgres, QueryBuilder, Row as _};

use crate::{
    ArchiveError,
    filter::{Cursor, Filter, MAX_PAGE_BYTES, Order},
};

/// Milliseconds in a day (partition width).
const DAY_MS: i64 = 86_400_000;

/// One archived event as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The stream (its user-visible name).
    pub stream: String,
    /// Its entry id and stream partition.
    pub cursor: Cursor,
    /// The CloudEvent id.
    pub event_id: String,
    /// The CloudEvent type.
    pub event_type: String,
    /// The CloudEvent source.
    pub source: String,
    /// The `subject` attribute, if any.
    pub subject: Option<String>,
    /// The `partitionkey` attribute, if any.
    pub partition_key: Option<String>,
    /// The trace id of a valid `traceparent`, if any.
    pub trace_id: Option<String>,
    /// The encoded CloudEvent.
    pub event: Vec<u8>,
    /// When it was archived (ms since the epoch); 0 before it is.
    pub archived_ms: i64,
}

impl Row {
    /// The row of entry `cursor` of `stream` holding `payload`. An event that does not decode
    /// (never expected: the publisher encoded it) is still archived, with empty attributes.
    pub fn from_entry(stream: &str, cursor: Cursor, payload: Vec<u8>) -> Self {
        let event = CloudEvent::decode(payload.as_slice())
            .inspect_err(|e| tracing::warn!(%stream, entry = %cursor.entry_id(), error = %e, "archiving an event that does not decode"))
            .unwrap_or_default();
        let text = |name: &str| string_attr(&event, name);
        let trace_id = text("traceparent")
            .and_then(|tp| eventflow_tracecontext::parse_traceparent(&tp).ok().map(|t| t.trace_id.to_string()));
        Self {
            stream: stream.into(),
            cursor,
            subject: text("subject"),
            partition_key: text("partitionkey"),
            trace_id,
            event_id: event.id,
            event_type: event.r#type,
            source: event.source,
            event: payload,
            archived_ms: 0,
        }
    }

    /// The decoded CloudEvent (`None` if the bytes do not decode).
    pub fn cloud_event(&self) -> Option<CloudEvent> {
        CloudEvent::decode(self.event.as_slice()).ok()
    }
}

/// A string-valued attribute of `event` (string, URI or URI-reference), if it has one.
pub fn string_attr(event: &CloudEvent, name: &str) -> Option<String> {
    match event.attributes.get(name)?.attr.as_ref()? {
        Attr::CeString(s) | Attr::CeUri(s) | Attr::CeUriRef(s) => Some(s.clone()),
        _ => None,
    }
}

/// A page of rows and the cursor of the next page (`None` at the end).
pub type Page = (Vec<Row>, Option<Cursor>);

/// The archive's tables; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    /// The database.
    pool: PgPool,
    /// Days whose partition this process created or found (so each is created once).
    days: Arc<Mutex<HashSet<i64>>>,
}

impl Store {
    /// A store over `pool` (migrated by `eventflow_pg::migrate`).
    pub fn new(pool: PgPool) -> Self {
        Self { pool, days: Arc::default() }
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Records that `stream` is archived (queries of streams never recorded are NOT_FOUND).
    pub async fn register_stream(&self, stream: &str) -> Result<(), ArchiveError> {
        sqlx::query("INSERT INTO eventflow.archive_streams (stream) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(stream)
            .execute(&self.pool)
            .await
            .map_err(ArchiveError::db("register stream"))?;
        Ok(())
    }

    /// `NotFound` unless `stream` was ever archived.
    pub async fn check_stream(&self, stream: &str) -> Result<(), ArchiveError> {
        let found = sqlx::query("SELECT 1 FROM eventflow.archive_streams WHERE stream = $1")
            .bind(stream)
            .fetch_optional(&self.pool)
            .await
            .map_err(ArchiveError::db("check stream"))?;
        found.map(|_| ()).ok_or_else(|| ArchiveError::NotFound(format!("archived stream {stream:?}")))
    }

    /// Creates the partitions of the UTC days of `ms_values` that this process has not seen.
    pub async fn ensure_partitions(&self, ms_values: impl IntoIterator<Item = i64>) -> Result<(), ArchiveError> {
        let wanted: Vec<i64> = {
            let known = self.days.lock().map_err(|_| ArchiveError::db("partitions")(sqlx::Error::PoolClosed))?;
            let mut days: Vec<i64> = ms_values.into_iter().map(|ms| ms.div_euclid(DAY_MS)).collect();
            days.sort_unstable();
            days.dedup();
            days.retain(|d| !known.contains(d));
            days
        };
        for day in wanted {
            let day32 = i32::try_from(day).map_err(|_| ArchiveError::invalid("publish_time", "out of range"))?;
            sqlx::query("SELECT eventflow.archive_ensure_partition($1)")
                .bind(day32)
                .execute(&self.pool)
                .await
                .map_err(ArchiveError::db("create partition"))?;
            if let Ok(mut known) = self.days.lock() {
                known.insert(day);
            }
        }
        Ok(())
    }

    /// Drops the day partitions that end at or before `before_ms`; returns how many.
    pub async fn drop_partitions_before(&self, before_ms: i64) -> Result<u64, ArchiveError> {
        let day = i32::try_from(before_ms.div_euclid(DAY_MS)).unwrap_or(0);
        let dropped: i32 = sqlx::query_scalar("SELECT eventflow.archive_drop_partitions($1)")
            .bind(day)
            .fetch_one(&self.pool)
            .await
            .map_err(ArchiveError::db("drop partitions"))?;
        if let Ok(mut known) = self.days.lock() {
            known.retain(|d| *d >= i64::from(day));
        }
        Ok(u64::try_from(dropped).unwrap_or(0))
    }

    /// Inserts `rows` (of any streams) in one statement, skipping entries already archived;
    /// returns how many were new.
    pub async fn insert(&self, rows: &[Row]) -> Result<u64, ArchiveError> {
        if rows.is_empty() {
            return Ok(0);
        }
        self.ensure_partitions(rows.iter().map(|r| r.cursor.ms)).await?;
        let col = |f: fn(&Row) -> Option<String>| rows.iter().map(f).collect::<Vec<_>>();
        let done = sqlx::query(
            "INSERT INTO eventflow.archive \
               (stream, publish_time, entry_seq, stream_partition, event_id, type, source, subject, partition_key, \
                trace_id, event) \
             SELECT t.stream, timestamptz 'epoch' + t.ms * interval '1 millisecond', t.seq, t.part, t.id, t.type, \
                    t.source, t.subject, t.pk, t.trace, t.event \
             FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::integer[], $5::text[], $6::text[], $7::text[], \
                         $8::text[], $9::text[], $10::text[], $11::bytea[]) \
                  AS t(stream, ms, seq, part, id, type, source, subject, pk, trace, event) \
             ON CONFLICT DO NOTHING",
        )
        .bind(rows.iter().map(|r| r.stream.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.cursor.ms).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.cursor.seq).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| partition_column(r.cursor)).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.event_id.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.event_type.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.source.as_str()).collect::<Vec<_>>())
        .bind(col(|r| r.subject.clone()))
        .bind(col(|r| r.partition_key.clone()))
        .bind(col(|r| r.trace_id.clone()))
        .bind(rows.iter().map(|r| r.event.as_slice()).collect::<Vec<_>>())
        .execute(&self.pool)
        .await
        .map_err(ArchiveError::db("insert batch"))?;
        Ok(done.rows_affected())
    }

    /// One archived event; `NotFound` if it is not archived.
    pub async fn get(&self, stream: &str, cursor: Cursor) -> Result<Row, ArchiveError> {
        let mut q = select();
        q.push(" WHERE stream = ").push_bind(stream);
        q.push(" AND publish_time = timestamptz 'epoch' + ").push_bind(cursor.ms).push(" * interval '1 millisecond'");
        q.push(" AND entry_seq = ").push_bind(cursor.seq);
        q.push(" AND stream_partition = ").push_bind(partition_column(cursor));
        let row = q.build().fetch_optional(&self.pool).await.map_err(ArchiveError::db("get event"))?;
        match row {
            Some(row) => parse(&row),
            None => Err(ArchiveError::NotFound(format!("archived event {:?} of stream {stream:?}", cursor.entry_id()))),
        }
    }

    /// A page of at most `limit` events matching `filter` in `order`, after `after` (the
    /// previous page's last entry); it also stops before passing [`MAX_PAGE_BYTES`] (holding
    /// at least one event).
    pub async fn query(
        &self,
        filter: &Filter,
        order: Order,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<Page, ArchiveError> {
        let mut q = select();
        q.push(" WHERE stream = ").push_bind(&filter.stream);
        let at = |q: &mut QueryBuilder<Postgres>, ms: i64| {
            q.push("timestamptz 'epoch' + ").push_bind(ms).push(" * interval '1 millisecond'");
        };
        if let Some(start) = filter.start_ms {
            q.push(" AND publish_time >= ");
            at(&mut q, start);
        }
        if let Some(end) = filter.end_ms {
            q.push(" AND publish_time < ");
            at(&mut q, end);
        }
        if !filter.types.is_empty() {
            q.push(" AND type = ANY(").push_bind(filter.types.clone()).push(")");
        }
        for (column, value) in [
            ("source", &filter.source),
            ("subject", &filter.subject),
            ("partition_key", &filter.partition_key),
            ("trace_id", &filter.trace_id),
        ] {
            if let Some(value) = value {
                q.push(format_args!(" AND {column} = ")).push_bind(value.clone());
            }
        }
        let (cmp, dir) = match order {
            Order::NewestFirst => ("<", "DESC"),
            Order::OldestFirst => (">", "ASC"),
        };
        if let Some(after) = after {
            q.push(format_args!(" AND (publish_time, entry_seq, stream_partition) {cmp} ("));
            at(&mut q, after.ms);
            q.push(", ").push_bind(after.seq).push(", ").push_bind(partition_column(after)).push(")");
        }
        q.push(format_args!(" ORDER BY publish_time {dir}, entry_seq {dir}, stream_partition {dir} LIMIT "));
        q.push_bind(i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1));
        let rows = q.build().fetch_all(&self.pool).await.map_err(ArchiveError::db("query events"))?;
        let mut page = Vec::with_capacity(rows.len().min(limit));
        let mut bytes = 0usize;
        let mut more = false;
        for row in &rows {
            let row = parse(row)?;
            if page.len() == limit || (!page.is_empty() && bytes + row.event.len() > MAX_PAGE_BYTES) {
                more = true;
                break;
            }
            bytes += row.event.len();
            page.push(row);
        }
        let next = if more { page.last().map(|r| r.cursor) } else { None };
        Ok((page, next))
    }
}

/// The `stream_partition` column value of `cursor` (partitions are at most 64).
fn partition_column(cursor: Cursor) -> i32 {
    i32::try_from(cursor.partition).unwrap_or(i32::MAX)
}

/// `SELECT <the row's columns> FROM eventflow.archive`.
fn select() -> QueryBuilder<Postgres> {
    QueryBuilder::new(
        "SELECT stream, (extract(epoch FROM publish_time) * 1000)::bigint AS ms, entry_seq, stream_partition, \
         event_id, type, source, \
         subject, partition_key, trace_id, event, (extract(epoch FROM archived_at) * 1000)::bigint AS archived_ms \
         FROM eventflow.archive",
    )
}

/// A result row of [`select`].
fn parse(row: &sqlx::postgres::PgRow) -> Result<Row, ArchiveError> {
    let read = || -> Result<Row, sqlx::Error> {
        Ok(Row {
            stream: row.try_get("stream")?,
            cursor: Cursor {
                ms: row.try_get("ms")?,
                seq: row.try_get("entry_seq")?,
                partition: u32::try_from(row.try_get::<i32, _>("stream_partition")?).unwrap_or(0),
            },
            event_id: row.try_get("event_id")?,
            event_type: row.try_get("type")?,
            source: row.try_get("source")?,
            subject: row.try_get("subject")?,
            partition_key: row.try_get("partition_key")?,
            trace_id: row.try_get("trace_id")?,
            event: row.try_get("event")?,
            archived_ms: row.try_get("archived_ms")?,
        })
    };
    read().map_err(ArchiveError::db("read row"))
}
