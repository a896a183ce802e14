//! Delivery of a subscription's entries to one session, split in two: [`policy`] decides what
//! the session does next (no I/O; time from an injectable [`Clock`]), [`fetcher`] carries it out
//! against Redis. [`crate::session::Session`] is the loop joining them.

mod clock;
pub mod fetcher;
pub mod policy;

pub use clock::{Clock, ManualClock, SystemClock};
pub use policy::{DeliveryPolicy, FlowControl, Timing};
