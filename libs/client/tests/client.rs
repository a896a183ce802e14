//! Integration tests of eventflow-client against the real services (run in-process by
//! `eventflow-e2e` over a real redis-server) and a real PostgreSQL (`eventflow-testkit`).
//! One test binary, so the services are linked once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod client {
    pub mod exactly_once;
    pub mod publisher;
    pub mod settle_cost;
    pub mod subscriber;
}
