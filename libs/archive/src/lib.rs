//! The event archive: every event of the archived streams kept in PostgreSQL beyond the
//! streams' retention, to query, replay and export.
//!
//! * [`archiver`] runs one delivery per archived stream (one session per partition of a
//!   partitioned stream) through the broker's delivery driver,
//!   over the stream's own subscription [`ARCHIVE_SUBSCRIPTION`], which holds the stream's
//!   retention (the TRIM script never removes an entry it has not settled). Its sink
//!   ([`sink`]) inserts each batch in one statement (`ON CONFLICT DO NOTHING` on the stream
//!   entry) and acknowledges the batch only after the commit, so every event is stored
//!   exactly once whatever crashes.
//! * [`store`] is the PostgreSQL side: the table (migration `0010` of `eventflow-pg`, one
//!   partition per UTC day, created ahead and dropped by the archive retention), inserts, and
//!   keyset-paged queries by [`filter::Filter`].
//! * [`replay`] publishes archived events again — into one subscription (its redrive stream,
//!   as a dead-letter requeue) or into a stream (through the ingest step) — and exports them
//!   as CloudEvents JSON lines.
//! * [`error::ArchiveError`] is the one error enum, mapped to a gRPC status in one place.

pub mod archiver;
pub mod error;
pub mod filter;
pub mod metrics;
pub mod replay;
pub mod sink;
pub mod store;

pub use error::ArchiveError;

/// The subscription the archiver creates on every archived stream (with a retention hold).
/// Its leading `_` marks it as eventflow's own; Admin lists and stats show it like any other.
pub const ARCHIVE_SUBSCRIPTION: &str = "_archive";
