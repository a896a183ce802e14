//! What the event archive needs of the broker: a retention hold on a subscription (the
//! archive's own, so retention never trims an event before it is archived) and replay of
//! archived events into one subscription through its redrive stream, the way a dead-letter
//! requeue reaches only the subscription it names.

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
    /// Sets (or lifts) the retention hold of an existing subscription: while set, the TRIM
    /// script never removes an entry the subscription has not settled. `NotFound` if the
    /// subscription does not exist.
    pub async fn set_retention_hold(&self, stream: &str, subscription: &str, hold: bool) -> Result<()> {
        validate_name("stream", stream)?;
        validate_name("subscription", subscription)?;
        let value = if hold { "1" } else { "0" };
        let fields = [(sub::RETENTION_HOLD, value.to_string())];
        let update = UpdateHash { key: self.keys().sub(stream, subscription), fields: &fields };
        if scripts::run(&mut self.conn().await?, &update).await? {
            Ok(())
        } else {
            Err(BrokerError::NotFound(format!("subscription {subscription:?} of stream {stream:?}")))
        }
    }

    /// Whether the subscription holds its stream's retention (see [`Broker::set_retention_hold`]).
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
    /// 1). Returns how many were added; `NotFound` if the subscription does not exist.
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
        let replay = Replay { keys: self.keys(), stream, subscription, events };
        scripts::run(&mut self.conn().await?, &replay)
            .await?
            .ok_or_else(|| BrokerError::NotFound(format!("subscription {subscription:?} of stream {stream:?}")))
    }
}
