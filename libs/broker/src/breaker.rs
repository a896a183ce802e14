//! The per-subscription circuit breaker, kept in Redis (see [`crate::scripts::BREAKER_ALLOW`]
//! and [`crate::scripts::BREAKER_RECORD`]) so every subscriber replica sees one state.
//! Outcomes: acks are successes; nacks, rejects and ack-deadline expiries are failures.

use std::time::Duration;

use redis::Value;

use crate::{
    Broker, Result, SubscriptionConfig, schema,
    scripts::{self, BreakerAllow, BreakerRecord},
};

/// A breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Delivering normally.
    Closed,
    /// Delivery paused.
    Open,
    /// Delivering a limited number of probes.
    HalfOpen,
}

impl BreakerState {
    pub(crate) fn parse(code: &str) -> Self {
        match code {
            schema::breaker::OPEN => Self::Open,
            schema::breaker::HALF_OPEN => Self::HalfOpen,
            _ => Self::Closed,
        }
    }
}

/// What the breaker allows a session now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permit {
    /// Deliveries allowed.
    pub allowed: usize,
    /// The breaker's state.
    pub state: BreakerState,
    /// While open: how long until it half-opens.
    pub retry_in: Duration,
}

impl Broker {
    /// Asks the subscription's breaker for up to `want` deliveries. Without a breaker, allows all.
    pub(crate) async fn breaker_permit(&self, config: &SubscriptionConfig, want: usize) -> Result<Permit> {
        let Some(policy) = &config.breaker else {
            return Ok(Permit { allowed: want, state: BreakerState::Closed, retry_in: Duration::ZERO });
        };
        let allow = BreakerAllow { key: self.keys().breaker(&config.stream, &config.name), want, policy };
        let (allowed, state, retry_ms) = scripts::run(&mut self.conn().await?, &allow).await?;
        Ok(Permit { allowed, state: BreakerState::parse(&state), retry_in: Duration::from_millis(retry_ms) })
    }

    /// Hands back half-open probes a session was allowed but did not use.
    pub(crate) async fn breaker_return(&self, config: &SubscriptionConfig, unused: usize) -> Result<()> {
        if config.breaker.is_none() || unused == 0 {
            return Ok(());
        }
        let mut conn = self.conn().await?;
        let key = self.keys().breaker(&config.stream, &config.name);
        let _: Value =
            redis::cmd("HINCRBY").arg(key).arg(schema::breaker::PROBES).arg(unused).query_async(&mut conn).await?;
        Ok(())
    }

    /// Records outcomes in the subscription's breaker (nothing without a breaker or outcomes).
    pub(crate) async fn breaker_record(&self, config: &SubscriptionConfig, ok: usize, bad: usize) -> Result<()> {
        let Some(policy) = &config.breaker else { return Ok(()) };
        if ok + bad == 0 {
            return Ok(());
        }
        let record = BreakerRecord { key: self.keys().breaker(&config.stream, &config.name), ok, bad, policy };
        scripts::run(&mut self.conn().await?, &record).await?;
        Ok(())
    }
}
