//! Helpers shared by the broker's integration tests (each test file includes this module).
#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use std::time::{Duration, Instant};

use eventflow_broker::{BrokerOptions, Delivery, NewEvent, Session};

/// Longest a test waits for something that should happen at once.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Batches until `n` deliveries came (or [`PATIENCE`] ran out).
pub async fn deliveries(session: &mut Session, n: usize) -> Vec<Delivery> {
    let start = Instant::now();
    let mut got = Vec::new();
    while got.len() < n {
        assert!(start.elapsed() < PATIENCE, "only {} of {n} deliveries came", got.len());
        got.extend(session.next_batch().await.unwrap());
    }
    got
}

/// Broker options under `prefix`, with short waits so empty batches return soon.
pub fn options(prefix: &str) -> BrokerOptions {
    BrokerOptions {
        prefix: prefix.into(),
        block: Duration::from_millis(100),
        capacity_poll: Duration::from_millis(20),
        ..BrokerOptions::default()
    }
}

/// An event `id` with ordering key `key` ('' = none); the payload is the id.
pub fn event(id: &str, key: &str) -> NewEvent {
    NewEvent {
        id: id.into(),
        event_type: "t".into(),
        payload: id.as_bytes().to_vec(),
        traceparent: String::new(),
        ordering_key: key.into(),
    }
}
