//! The transactional-outbox relay: publishes the committed rows of `eventflow.outbox` (see
//! `eventflow_pg::outbox`) to their streams through the ingest step every producer path shares
//! (no gRPC hop), once each — deterministic event ids make a retried row a duplicate within
//! the stream's dedup window — and in per-partition-key order across replicas.
//!
//! * [`relay`]: the loop (LISTEN/NOTIFY with a polling fallback) and one batch (claim,
//!   publish, mark, in one transaction);
//! * [`claim`]: the SQL, and why per-key order holds;
//! * [`maintenance`]: backlog gauges and the retention of published rows;
//! * [`metrics`]: metric names.

pub mod claim;
pub mod maintenance;
pub mod metrics;
pub mod relay;

pub use relay::{BatchOutcome, Relay, RelayError, RelayOptions};
