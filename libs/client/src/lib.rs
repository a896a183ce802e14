//! The eventflow client library: what an application uses to publish and consume events,
//! over the generated gRPC stubs of `eventflow-proto` (no dependency on the broker or the
//! services).
//!
//! * [`Connection`] — a channel to one service, plain or TLS (`tonic`'s `ClientTlsConfig`),
//!   with an optional bearer token sent as `authorization: Bearer <token>` on every call.
//! * [`Publisher`] — batches events per stream (a linger and a maximum batch), assigns each
//!   event a UUIDv7 id before its first try, retries UNAVAILABLE / DEADLINE_EXCEEDED with
//!   backoff (safe: the stream's dedup window absorbs a repeat of the same id) and answers
//!   each event with its own result.
//! * [`Subscriber`] — runs a handler per delivered event with bounded concurrency, extends the
//!   lease of handlers that run long (ModifyAckDeadline), settles each event by the handler's
//!   [`Outcome`], reconnects with backoff when the Subscribe call breaks, and drains on
//!   shutdown (stops taking events, finishes and settles the ones in flight, then ends).
//! * [`exactly_once`] — the exactly-once consumer over PostgreSQL: the processed event id is
//!   recorded in the same transaction as the handler's effects, so a redelivery is skipped.

pub mod backoff;
pub mod connection;
pub mod error;
pub mod exactly_once;
pub mod publisher;
mod settler;
pub mod subscriber;

pub use backoff::Backoff;
pub use connection::Connection;
pub use error::ClientError;
pub use eventflow_proto::v1::{CloudEvent, ReceivedEvent};
pub use publisher::{Published, Publisher, PublisherConfig, PublisherStats};
pub use subscriber::{Outcome, Subscriber, SubscriberConfig, SubscriberStats};
pub use tokio_util::sync::CancellationToken;
