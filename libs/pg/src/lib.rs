//! eventflow's PostgreSQL schema and the one way to connect to it.
//!
//! The schema lives in `libs/pg/migrations/` as sqlx migrations embedded at build time
//! ([`MIGRATOR`]): `0001` the transactional outbox (`eventflow.outbox`), `0002` the ids
//! processed by exactly-once consumers (`eventflow.processed`), `0003` what the relay needs
//! of the outbox (failed rows, its indexes, the database identity, the NOTIFY trigger),
//! `0010` onwards the event archive (`0010`: `eventflow.archive`, partitioned by publish
//! time, and `eventflow.archive_streams`). [`outbox::enqueue`] writes an outbox row in the
//! caller's transaction; [`probe::PgProbe`] is the readiness probe over PostgreSQL of every
//! binary that uses it. Every binary that uses PostgreSQL applies them at start ([`migrate`]; idempotent,
//! serialised by sqlx's advisory lock) unless told not to, so the relay and the archive may
//! share one database and start in any order.

use std::time::Duration;

pub mod outbox;
pub mod probe;

use sqlx::{PgPool, postgres::PgPoolOptions};

/// The embedded migrations of `libs/pg/migrations/`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Why PostgreSQL could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// Connecting or a query failed.
    #[error("postgres: {0}")]
    Db(#[from] sqlx::Error),
    /// A migration failed or the database holds migrations this build does not know.
    #[error("postgres migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// A pool of at most `max_connections` to `url`, with a bounded wait for a connection so a
/// PostgreSQL outage surfaces as an error, not a hang.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, PgError> {
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect(url)
        .await?;
    Ok(pool)
}

/// Like [`connect`], but connecting on first use, so a binary starts (and reports
/// NOT_SERVING) while PostgreSQL is down; fails only on a malformed URL.
pub fn connect_lazy(url: &str, max_connections: u32) -> Result<PgPool, PgError> {
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy(url)?;
    Ok(pool)
}

/// Applies every migration not yet applied (see the module doc).
pub async fn migrate(pool: &PgPool) -> Result<(), PgError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}
