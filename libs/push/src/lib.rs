//! Webhook push delivery for push subscriptions (a subscription with a `push_config`).
//!
//! The pieces, each in its module:
//! * [`pusher`] finds push subscriptions and runs one delivery per subscription: a broker
//!   session (one per partition of a partitioned stream) driven by the broker's delivery
//!   driver into a [`sink::PushSink`];
//! * [`sink`] turns each delivery into a POST with bounded concurrency and settles the
//!   outcome through the broker (ack, nack with backoff and `Retry-After`, reject);
//! * [`request`] builds the request: CloudEvents HTTP binding (binary or structured), trace
//!   headers, Standard Webhooks signature headers ([`signature`]);
//! * [`client`] sends it over a connection to a vetted address ([`address`]: https only and no
//!   private addresses unless allowed);
//! * [`outcome`] classifies the result and [`retry_after`] parses `Retry-After`.

pub mod address;
pub mod client;
pub mod metrics;
pub mod outcome;
pub mod pusher;
pub mod request;
pub mod retry_after;
pub mod signature;
pub mod sink;
