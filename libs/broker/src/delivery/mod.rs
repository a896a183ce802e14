//! Delivery of a subscription's entries to one session, split in two: [`policy`] decides what
//! the session does next (no I/O; time from an injectable [`Clock`]), [`fetcher`] carries it out
//! against Redis. [`crate::session::Session`] is the loop joining them, and [`driver`] feeds a
//! session into a [`Sink`] (a gRPC stream, an HTTP pusher), riding out Redis outages. The
//! sessions of one subscription in a process share one reclaim and reap schedule ([`upkeep`]);
//! settlements made in the process reach their sessions through [`handoff`].

mod clock;
pub mod driver;
pub mod fetcher;
pub mod handoff;
pub mod policy;
pub mod upkeep;

pub use clock::{Clock, ManualClock, SystemClock};
pub use driver::{Ended, Sink, drive};
pub use policy::{DeliveryPolicy, FlowControl, Timing};
pub use upkeep::{Upkeep, Upkeeps};
