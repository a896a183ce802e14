//! The readiness probe over PostgreSQL, shared by every binary that uses it (the relay, the
//! archive): ready when the pool's database answers (a `SELECT 1` within [`TIMEOUT`]).
//! Passed to `eventflow_runtime::serve::run_service_with`, which combines it with the Redis
//! probe ([`eventflow_runtime::health::Both`]), so health is NOT_SERVING while either is
//! unreachable. The check at start passes whatever PostgreSQL's state: a binary whose pool
//! connects lazily (the relay) starts and waits, NOT_SERVING, until its database answers.

use std::time::Duration;

use eventflow_runtime::health::{Readiness, ReadinessProbe};
use sqlx::PgPool;

/// How long one check may take.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// The probe over a pool (see the module doc).
#[derive(Debug, Clone)]
pub struct PgProbe {
    /// The pool whose database is checked.
    pool: PgPool,
}

impl PgProbe {
    /// A probe of `pool`'s database.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

impl ReadinessProbe for PgProbe {
    async fn check_at_start(&mut self) -> Result<(), String> {
        Ok(())
    }

    async fn check(&mut self) -> Readiness {
        let ping = sqlx::query("SELECT 1").execute(&self.pool);
        match tokio::time::timeout(TIMEOUT, ping).await {
            Ok(Ok(_)) => Readiness::serving("postgres ready: SERVING"),
            Ok(Err(e)) => unreachable(&e.to_string()),
            Err(_) => unreachable("no answer within 2 s"),
        }
    }
}

/// Not serving because PostgreSQL does not answer (`why`).
fn unreachable(why: &str) -> Readiness {
    Readiness::waiting("postgres_unreachable", format!("postgres unreachable: NOT_SERVING: {why}"))
}
