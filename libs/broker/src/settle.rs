//! Settlement of deliveries by ack id: acknowledge, modify the ack deadline (nack, delay,
//! extend), reject (dead-letter). Ack ids are decoded once ([`Broker::decode_ack_ids`], which
//! a caller may use first to see what they name, e.g. to authorize them), then grouped by
//! subscription; each group is one pipeline. A call checks out one pooled connection for
//! all its reads and writes (the breaker, fed after it is given back, takes its own). Acks
//! count as breaker successes; nacks and rejects as failures. What a call acked, rejected or
//! nacked is handed to the sessions of this process that delivered it
//! ([`crate::delivery::handoff`]), which are then woken.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use crate::{
    Broker, BrokerError, PARKING_CONSUMER, RedisConn, Result, Settled, Source, SubscriptionConfig,
    ack_id::AckId,
    admin::millis,
    scripts::{self, Ack, DeadLetter, ModifyDeadline, PendingDelivery},
};

/// Most ack ids one settlement call takes.
pub const MAX_ACK_IDS: usize = 10_000;
/// Longest reject reason, in bytes.
pub const MAX_REASON_BYTES: usize = 1024;

/// The ack ids of one settlement call, decoded once.
#[derive(Debug, Clone, Default)]
pub struct AckIds {
    /// The ones signed with this broker's keys, each with its raw form to report back.
    decoded: Vec<(String, AckId)>,
    /// The ones that are malformed or not signed with this broker's keys (edited or forged).
    invalid: Vec<String>,
}

impl AckIds {
    /// The distinct (stream, subscription) pairs the decoded ack ids name.
    pub fn targets(&self) -> BTreeSet<(&str, &str)> {
        self.decoded.iter().map(|(_, id)| (id.stream.as_str(), id.subscription.as_str())).collect()
    }
}

/// What one settlement call does to each delivery it names.
#[derive(Debug, Clone, Copy)]
enum Settle<'a> {
    /// Acknowledge: a breaker success.
    Ack,
    /// Change the deadline; a nack is a breaker failure.
    Change(Deadline, &'a str),
    /// Dead-letter with the reason: a breaker failure.
    Reject(&'a str),
}

/// How [`Settle::Change`] changes each delivery's deadline.
#[derive(Debug, Clone, Copy)]
enum Deadline {
    /// Nack: park it for its retry backoff, and at least `floor` (capped at the maximum
    /// backoff); a breaker failure.
    Nack {
        /// The least delay asked for (a `Retry-After`); zero for a plain nack.
        floor: Duration,
    },
    /// Extend its lease: redeliverable no sooner than `delay_ms` from now.
    Extend {
        /// The new delay, within the ack deadline.
        delay_ms: u64,
    },
}

/// Ack ids of one subscription, decoded, with the raw form to report back.
struct Group {
    config: SubscriptionConfig,
    ids: Vec<(String, AckId)>,
}

impl Broker {
    /// Acknowledges deliveries: XACK (and XDEL for requeued dead letters). Ack ids no longer
    /// pending are reported as expired.
    pub async fn acknowledge(&self, ack_ids: &[String]) -> Result<Settled> {
        self.acknowledge_decoded(self.decode_ack_ids(ack_ids.to_vec())?).await
    }

    /// [`Broker::acknowledge`] of ack ids already decoded.
    pub async fn acknowledge_decoded(&self, ack_ids: AckIds) -> Result<Settled> {
        let mut conn = self.conn().await?;
        let (settled, groups) = self.resolve(&mut conn, ack_ids).await?;
        self.settle_groups(conn, settled, groups, Settle::Ack).await
    }

    /// Sets how long until deliveries may be redelivered: 0 = nack (redeliver now, or after the
    /// subscription's retry backoff); N = no sooner than N seconds from now (at most the
    /// subscription's ack deadline), which also extends the lease of an event in progress.
    pub async fn modify_ack_deadline(&self, ack_ids: &[String], seconds: u32, reason: &str) -> Result<Settled> {
        self.modify_ack_deadline_decoded(self.decode_ack_ids(ack_ids.to_vec())?, seconds, reason).await
    }

    /// [`Broker::modify_ack_deadline`] of ack ids already decoded.
    pub async fn modify_ack_deadline_decoded(&self, ack_ids: AckIds, seconds: u32, reason: &str) -> Result<Settled> {
        check_reason(reason)?;
        if u64::from(seconds) > crate::model::MAX_ACK_DEADLINE.as_secs() {
            let max = crate::model::MAX_ACK_DEADLINE.as_secs();
            return Err(BrokerError::invalid("ack_deadline_seconds", format!("must be 0 to {max}")));
        }
        let mut conn = self.conn().await?;
        let (settled, groups) = self.resolve(&mut conn, ack_ids).await?;
        let delay_ms = u64::from(seconds) * 1000;
        // Refuse the whole call before changing anything if one subscription cannot take it.
        if let Some(config) = groups.values().map(|g| &g.config).find(|c| delay_ms > millis(c.ack_deadline)) {
            return Err(BrokerError::invalid(
                "ack_deadline_seconds",
                format!(
                    "{seconds} exceeds the ack deadline of subscription {:?} ({} s); extend again later",
                    config.name,
                    config.ack_deadline.as_secs()
                ),
            ));
        }
        let change =
            if seconds == 0 { Deadline::Nack { floor: Duration::ZERO } } else { Deadline::Extend { delay_ms } };
        self.settle_groups(conn, settled, groups, Settle::Change(change, reason)).await
    }

    /// Nacks deliveries that asked to be retried no sooner than `retry_after` (an HTTP
    /// `Retry-After`): each is redelivered after the longer of its retry backoff and
    /// `retry_after`, the latter capped at the subscription's maximum backoff. Counts as a
    /// breaker failure, like every nack.
    pub async fn nack_after_decoded(&self, ack_ids: AckIds, retry_after: Duration, reason: &str) -> Result<Settled> {
        check_reason(reason)?;
        let mut conn = self.conn().await?;
        let (settled, groups) = self.resolve(&mut conn, ack_ids).await?;
        let change = Settle::Change(Deadline::Nack { floor: retry_after }, reason);
        self.settle_groups(conn, settled, groups, change).await
    }

    /// Dead-letters deliveries at once with `reason`.
    pub async fn reject(&self, ack_ids: &[String], reason: &str) -> Result<Settled> {
        self.reject_decoded(self.decode_ack_ids(ack_ids.to_vec())?, reason).await
    }

    /// [`Broker::reject`] of ack ids already decoded.
    pub async fn reject_decoded(&self, ack_ids: AckIds, reason: &str) -> Result<Settled> {
        check_reason(reason)?;
        let mut conn = self.conn().await?;
        let (settled, groups) = self.resolve(&mut conn, ack_ids).await?;
        self.settle_groups(conn, settled, groups, Settle::Reject(reason)).await
    }

    /// Applies `settle` to `groups` (resolved by [`Broker::resolve`] on `conn`) one after
    /// another, recording each outcome in `settled`, gives the connection back and ends the call
    /// with the breaker outcomes of the groups applied — also when a later group failed, so the
    /// breaker and waiting sessions see what did apply before the error is returned.
    async fn settle_groups(
        &self,
        mut conn: RedisConn,
        mut settled: Settled,
        groups: BTreeMap<(String, String), Group>,
        settle: Settle<'_>,
    ) -> Result<Settled> {
        let mut outcomes = Vec::with_capacity(groups.len());
        let mut failure = None;
        for group in groups.into_values() {
            let outcome = match settle {
                Settle::Ack => self.ack_group(&mut conn, &mut settled, group).await,
                Settle::Change(change, reason) => {
                    self.change_group(&mut conn, &mut settled, group, change, reason).await
                }
                Settle::Reject(reason) => self.reject_group(&mut conn, &mut settled, group, reason).await,
            };
            match outcome {
                Ok(outcome) => outcomes.push(outcome),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        drop(conn);
        // Acks and rejects take entries out of the pending list for good; a nack parks them
        // (they may come back to the same session); a lease change keeps them where they are.
        match settle {
            Settle::Ack | Settle::Reject(_) => self.handoffs().hand(&settled.applied, false),
            Settle::Change(Deadline::Nack { .. }, _) => self.handoffs().hand(&settled.applied, true),
            Settle::Change(Deadline::Extend { .. }, _) => false,
        };
        self.finish_settlement(outcomes).await;
        failure.map_or(Ok(settled), Err)
    }

    /// Acknowledges one group: one ACK script per source (stream, redrive), each over its ids
    /// in order. Returns the group's breaker outcome (successes, failures).
    async fn ack_group(
        &self,
        conn: &mut RedisConn,
        settled: &mut Settled,
        Group { config, ids }: Group,
    ) -> Result<(SubscriptionConfig, usize, usize)> {
        let (redrive, stream): (Vec<_>, Vec<_>) = ids.into_iter().partition(|(_, id)| id.source == Source::Redrive);
        let parts: Vec<(Source, Vec<(String, AckId)>)> = [(Source::Stream, stream), (Source::Redrive, redrive)]
            .into_iter()
            .filter(|(_, ids)| !ids.is_empty())
            .collect();
        let inputs: Vec<Ack> = parts
            .iter()
            .map(|(source, ids)| Ack {
                keys: self.keys(),
                stream: &config.stream,
                subscription: &config.name,
                source: *source,
                filtered: false,
                entry_ids: ids.iter().map(|(_, id)| id.entry_id.as_str()).collect(),
                gate: self.keys().gate_base(&config),
            })
            .collect();
        let replies = scripts::run_batch(conn, &inputs).await?;
        drop(inputs);
        let mut acked = 0;
        for ((_, ids), reply) in parts.into_iter().zip(replies) {
            let flags = reply?;
            acked += flags.iter().filter(|a| **a).count();
            record(settled, ids, flags.into_iter());
        }
        Ok((config, acked, 0))
    }

    /// Applies `change` to one group's deliveries; nacks count as breaker failures.
    async fn change_group(
        &self,
        conn: &mut RedisConn,
        settled: &mut Settled,
        group: Group,
        change: Deadline,
        reason: &str,
    ) -> Result<(SubscriptionConfig, usize, usize)> {
        let config = &group.config;
        let deadline_ms = millis(config.ack_deadline);
        let inputs: Vec<ModifyDeadline> = group
            .ids
            .iter()
            .map(|(_, id)| {
                let delivery = PendingDelivery::of(self.keys(), id, self.keys().gate_base(config));
                match change {
                    Deadline::Nack { floor } => {
                        let backoff = config.backoff(id.attempt, crate::delivery::fetcher::jitter());
                        let asked = floor.min(config.max_backoff.max(config.min_backoff));
                        let backoff_ms = millis(backoff.max(asked));
                        let new_owner = PARKING_CONSUMER;
                        ModifyDeadline { delivery, new_owner, idle_ms: deadline_ms, backoff_ms, reason }
                    }
                    Deadline::Extend { delay_ms } => ModifyDeadline {
                        delivery,
                        new_owner: id.consumer.as_str(),
                        idle_ms: deadline_ms - delay_ms,
                        backoff_ms: 0,
                        reason: "",
                    },
                }
            })
            .collect();
        let applied = scripts::run_batch(conn, &inputs).await?.into_iter().collect::<Result<Vec<bool>>>()?;
        drop(inputs);
        let failed = if matches!(change, Deadline::Nack { .. }) { applied.iter().filter(|a| **a).count() } else { 0 };
        record(settled, group.ids, applied.into_iter());
        Ok((group.config, 0, failed))
    }

    /// Dead-letters one group's deliveries with `reason`: breaker failures.
    async fn reject_group(
        &self,
        conn: &mut RedisConn,
        settled: &mut Settled,
        group: Group,
        reason: &str,
    ) -> Result<(SubscriptionConfig, usize, usize)> {
        let inputs: Vec<DeadLetter> = group
            .ids
            .iter()
            .map(|(_, id)| DeadLetter {
                delivery: PendingDelivery::of(self.keys(), id, self.keys().gate_base(&group.config)),
                reason,
                dlq_max_len: self.options().dlq_max_len,
            })
            .collect();
        let applied = scripts::run_batch(conn, &inputs).await?.into_iter().collect::<Result<Vec<bool>>>()?;
        drop(inputs);
        let failed = applied.iter().filter(|a| **a).count();
        record(settled, group.ids, applied.into_iter());
        Ok((group.config, 0, failed))
    }

    /// Ends a settlement call, after it gave its connection back (the breaker checks out its
    /// own: no call waits for a second connection while holding one): feeds each
    /// subscription's outcomes (successes, failures) to its breaker and wakes sessions waiting
    /// for a settlement.
    async fn finish_settlement(&self, outcomes: Vec<(SubscriptionConfig, usize, usize)>) {
        for (config, ok, bad) in &outcomes {
            self.record_outcomes(config, *ok, *bad).await;
        }
        self.notify_settled();
    }

    /// Feeds settlement outcomes to the subscription's breaker. The settlement has applied by
    /// now, so a failure here is logged, never reported to the caller as the call failing.
    async fn record_outcomes(&self, config: &SubscriptionConfig, ok: usize, bad: usize) {
        if let Err(e) = self.breaker_record(config, ok, bad).await {
            tracing::warn!(subscription = %config.name, error = %e, "breaker outcomes not recorded");
        }
    }

    /// Decodes the ack ids of one settlement call (at most [`MAX_ACK_IDS`]) with this broker's
    /// ack keys; malformed ones and ones not signed with them (edited or forged) are invalid.
    /// Takes the request's texts to report them back without copying them.
    pub fn decode_ack_ids(&self, ack_ids: Vec<String>) -> Result<AckIds> {
        if ack_ids.len() > MAX_ACK_IDS {
            return Err(BrokerError::invalid("ack_ids", format!("more than {MAX_ACK_IDS}")));
        }
        let keys = self.ack_keys();
        let mut decoded = AckIds { decoded: Vec::with_capacity(ack_ids.len()), invalid: Vec::new() };
        for raw in ack_ids {
            match AckId::decode(&raw, &keys) {
                Some(id) => decoded.decoded.push((raw, id)),
                None => decoded.invalid.push(raw),
            }
        }
        Ok(decoded)
    }

    /// Groups decoded ack ids by subscription (each read on `conn`, the connection the call
    /// settles on: one pool checkout per call); ones of unknown subscriptions go to `invalid`.
    async fn resolve(
        &self,
        conn: &mut RedisConn,
        ack_ids: AckIds,
    ) -> Result<(Settled, BTreeMap<(String, String), Group>)> {
        let mut settled = Settled { invalid: ack_ids.invalid, ..Settled::default() };
        let mut groups: BTreeMap<(String, String), Group> = BTreeMap::new();
        let mut unknown: Vec<(String, String)> = Vec::new();
        // The group of the previous ack id: the ids of one call mostly name one subscription,
        // so most find their group without building a key or searching the map.
        let mut last: Option<(String, String)> = None;
        for (raw, id) in ack_ids.decoded {
            if let Some(key) = &last
                && key.0 == id.stream
                && key.1 == id.subscription
                && let Some(group) = groups.get_mut(key)
            {
                group.ids.push((raw, id));
                continue;
            }
            let key = (id.stream.clone(), id.subscription.clone());
            if unknown.contains(&key) {
                settled.invalid.push(raw);
                continue;
            }
            if !groups.contains_key(&key) {
                match self.partition_subscription_on(conn, &key.0, &key.1).await {
                    Ok(config) => {
                        groups.insert(key.clone(), Group { config, ids: Vec::new() });
                    }
                    Err(BrokerError::NotFound(_)) => {
                        unknown.push(key);
                        settled.invalid.push(raw);
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            if let Some(group) = groups.get_mut(&key) {
                group.ids.push((raw, id));
            }
            last = Some(key);
        }
        Ok((settled, groups))
    }
}

/// Checks the length of a reject or nack reason.
fn check_reason(reason: &str) -> Result<()> {
    if reason.len() > MAX_REASON_BYTES {
        return Err(BrokerError::invalid("reason", format!("longer than {MAX_REASON_BYTES} bytes")));
    }
    Ok(())
}

/// Sorts settled ack ids: the decoded ones that applied into `settled.applied`, the raw ones
/// that did not into `settled.expired`.
fn record(settled: &mut Settled, ids: Vec<(String, AckId)>, applied: impl Iterator<Item = bool>) {
    for ((raw, id), ok) in ids.into_iter().zip(applied) {
        if ok {
            settled.applied.push(id);
        } else {
            settled.expired.push(raw);
        }
    }
}
