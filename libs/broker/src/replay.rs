//! What the event archive needs of the broker: a retention hold on a subscription (the
//! archive's own, so retention never trims an event before it is archived) and replay of
//! archived events into one subscription through its redrive stream, the way a dead-letter
//! requeue reaches only the subscription it names.
//!
//! On a partitioned stream both work per partition: the hold is set on the subscription in
//! every partition (each partition's TRIM reads its own), and a replayed event goes to the
//! redrive stream of the partition its ordering key (or, without one, its event id) routes to
//! with the stream's current count ([`crate::partition::route`], as Publish does) — the
//! partition it was published to, unless the stream was re-created with another count — so one
//! key's events stay in one partition, in the order given.

use crate::{
    Broker, BrokerError, Result,
    keys::validate_name,
    model::ReplayEvent,
    schema::sub,
    scripts::{self, Replay, UpdateHash},
};

/// Most events one [`Broker::replay_into_subscription`] call takes.
pub const MAX_REPLAY_EVENTS: usize = 1000;

impl Broker {
    /// Sets (or lifts) the retention hold of an existing subscription, in every partition of
    /// `stream`: while set, the TRIM script never removes an entry the subscription has not
    /// settled. `NotFound` if the subscription does not exist.
    pub async fn set_retention_hold(&self, stream: &str, subscription: &str, hold: bool) -> Result<()> {
        validate_name("stream", stream)?;
        validate_name("subscription", subscription)?;
        let value = if hold { "1" } else { "0" };
        let fields = [(sub::RETENTION_HOLD, value.to_string())];
        let partitions = self.partitions(stream).await?;
        for part in crate::partition_names(stream, partitions).into_iter().rev() {
            let update = UpdateHash { key: self.keys().sub(&part, subscription), fields: &fields };
            if !scripts::run(&mut self.conn().await?, &update).await? {
                return Err(BrokerError::NotFound(format!("subscription {subscription:?} of stream {stream:?}")));
            }
        }
        Ok(())
    }

    /// Whether the subscription holds its stream's retention (see [`Broker::set_retention_hold`];
    /// partition 0's setting, which the hold sets last).
    pub async fn retention_hold(&self, stream: &str, subscription: &str) -> Result<bool> {
        validate_name("stream", stream)?;
        validate_name("subscription", subscription)?;
        let value: Option<String> = redis::AsyncCommands::hget(
            &mut self.conn().await?,
            self.keys().sub(stream, subscription),
            sub::RETENTION_HOLD,
        )
        .await?;
        Ok(value.as_deref() == Some("1"))
    }

    /// Appends `events` (at most [`MAX_REPLAY_EVENTS`]) to the redrive stream of `subscription`
    /// of `stream`, in order, so only that subscription delivers them again (attempts start at
    /// 1); on a partitioned stream each goes to the partition its key routes to (module doc).
    /// Returns how many were added; `NotFound` if the subscription does not exist.
    pub async fn replay_into_subscription(
        &self,
        stream: &str,
        subscription: &str,
        events: &[ReplayEvent],
    ) -> Result<u64> {
        validate_name("stream", stream)?;
        validate_name("subscription", subscription)?;
        if events.len() > MAX_REPLAY_EVENTS {
            return Err(BrokerError::invalid("events", format!("at most {MAX_REPLAY_EVENTS} per call")));
        }
        if events.is_empty() {
            self.get_subscription(stream, subscription).await?;
            return Ok(0);
        }
        let not_found = || BrokerError::NotFound(format!("subscription {subscription:?} of stream {stream:?}"));
        let partitions = self.partitions(stream).await?;
        if partitions <= 1 {
            let replay = Replay { keys: self.keys(), stream, subscription, events };
            return scripts::run(&mut self.conn().await?, &replay).await?.ok_or_else(not_found);
        }
        let mut parts: Vec<Vec<ReplayEvent>> = vec![Vec::new(); partitions as usize];
        for event in events {
            let part = crate::partition::route(&event.ordering_key, &event.event_id, partitions) as usize;
            if let Some(part) = parts.get_mut(part) {
                part.push(event.clone());
            }
        }
        let mut added = 0;
        for (i, events) in parts.iter().enumerate().filter(|(_, events)| !events.is_empty()) {
            let name = crate::partition_name(stream, u32::try_from(i).unwrap_or(0));
            let replay = Replay { keys: self.keys(), stream: &name, subscription, events };
            added += scripts::run(&mut self.conn().await?, &replay).await?.ok_or_else(not_found)?;
        }
        Ok(added)
    }
}
