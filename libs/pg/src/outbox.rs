//! Writing to the transactional outbox from Rust: [`enqueue`] inserts one event row on the
//! caller's connection — inside the caller's transaction, so the event is published if and only
//! if the transaction commits (eventflow-relay publishes committed rows; see docs/outbox.md).
//!
//! ```ignore
//! let mut tx = pool.begin().await?;
//! sqlx::query("UPDATE orders SET state = 'paid' WHERE id = $1").bind(id).execute(&mut *tx).await?;
//! eventflow_pg::outbox::enqueue(&mut tx, "orders", &event).await?;
//! tx.commit().await?;
//! ```
//!
//! The row's `partition_key` is the event's `partitionkey` attribute (CloudEvents Partitioning
//! extension): the relay publishes rows of one key in id order.

use eventflow_proto::{
    prost::Message,
    v1::{CloudEvent, cloud_event::cloud_event_attribute_value::Attr},
};
use sqlx::PgConnection;

use crate::PgError;

/// The channel the outbox trigger notifies (migration `0003`) and the relay listens on.
pub const NOTIFY_CHANNEL: &str = "eventflow_outbox";

/// The CloudEvents attribute that carries the ordering key (Partitioning extension).
pub const PARTITION_KEY_ATTRIBUTE: &str = "partitionkey";

/// Inserts `event` (stored in the CloudEvents Protobuf Format) for `stream` on `conn` — pass
/// the caller's transaction — and returns the row id. An event without an id gets a
/// deterministic one from the relay (`outbox-<database id>-<row id>`).
pub async fn enqueue(conn: &mut PgConnection, stream: &str, event: &CloudEvent) -> Result<i64, PgError> {
    let id = sqlx::query_scalar(
        "INSERT INTO eventflow.outbox (stream, event, partition_key) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(stream)
    .bind(event.encode_to_vec())
    .bind(partition_key(event))
    .fetch_one(conn)
    .await?;
    Ok(id)
}

/// Inserts `event`, a CloudEvent in the CloudEvents JSON Format (an object), for `stream` on
/// `conn`, and returns the row id; the partition key is its `partitionkey` member, if a string.
pub async fn enqueue_json(conn: &mut PgConnection, stream: &str, event: &serde_json::Value) -> Result<i64, PgError> {
    let key = event.get(PARTITION_KEY_ATTRIBUTE).and_then(serde_json::Value::as_str);
    let id = sqlx::query_scalar(
        "INSERT INTO eventflow.outbox (stream, event_json, partition_key) VALUES ($1, $2::jsonb, $3) RETURNING id",
    )
    .bind(stream)
    .bind(event.to_string())
    .bind(key)
    .fetch_one(conn)
    .await?;
    Ok(id)
}

/// The event's `partitionkey` attribute, if it is a string.
pub fn partition_key(event: &CloudEvent) -> Option<&str> {
    match event.attributes.get(PARTITION_KEY_ATTRIBUTE)?.attr.as_ref()? {
        Attr::CeString(key) => Some(key),
        _ => None,
    }
}
