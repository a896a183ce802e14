//! A delivery session: one open Subscribe call, one Redis consumer of the subscription's group
//! (on the stream, and on the subscription's redrive stream where requeued dead letters wait).
//!
//! The session is the loop joining a [`DeliveryPolicy`] (what to do next, no I/O; see its
//! module for the order of one batch) and a [`Fetcher`] (the Redis reads and writes). Each
//! [`Session::next_batch`] call:
//! 1. re-reads the subscription's settings when the policy says they are due;
//! 2. frees the room of its deliveries settled in this process since the last batch (handed
//!    over by the settlement, [`crate::delivery::handoff`]); at the flow-control limit
//!    (`max_messages` or `max_bytes` unsettled deliveries), waits for a settlement in this
//!    process or `capacity_poll`; unless settlements handed over freed room, or once per
//!    `capacity_poll` in any case, recounts from its own pending lists in Redis (settlements
//!    may come through another replica, leases expire); returns an empty batch if still full;
//! 3. gates on the circuit breaker (if any): none while open, a few probes while half-open;
//! 4. carries out the policy's reads: backlog, due entries ([`crate::scripts::CLAIM_DUE`]) and
//!    requeued dead letters every `reclaim_interval` (once per interval among the
//!    subscription's sessions in the process, [`crate::delivery::upkeep`]), reaping every
//!    minute, new entries
//!    (a native `XREADGROUP` when the stream's size mark says they fit the byte budget, else
//!    [`crate::scripts::READ_NEW`]). When nothing at all came, it waits for a new entry (its
//!    own blocking reader, or the broker's watcher) or for a settlement;
//! 5. acks entries the event-type filter excludes (counted in the subscription's `filtered`).
//!
//! Every read is bounded by bytes as well as count: by what `max_bytes` leaves, or by
//! [`MAX_READ_BYTES`] without a byte limit. A read takes entries while their payloads fit
//! (the first always); the rest of what XREADGROUP assigned to the session stays in its pending
//! list and its ids in the session's backlog, taken first on later calls.
//!
//! A read whose reply never arrives (a timeout, a dropped connection) may still have assigned
//! entries to the session's consumer. After any failed batch the session therefore re-reads its
//! own pending list first and adopts what it neither delivered nor holds in its backlog
//! ([`DeliveryPolicy::adopt_orphans`]), so those entries are delivered at once, not after
//! their ack deadline.
//!
//! [`Session::close`] hands the session's unsettled entries (and its backlog) to the parking
//! consumer as due at once and deletes the consumer, so other sessions redeliver them without
//! waiting for the deadline.

use std::sync::Arc;

use crate::{
    Broker, Delivery, Result, SubscriptionConfig,
    breaker::BreakerState,
    delivery::{
        Clock, SystemClock,
        fetcher::{Entry, Fetched, Fetcher, jitter},
        policy::{Gate, Read, Wait},
    },
};

pub use crate::delivery::{
    DeliveryPolicy, FlowControl, Timing,
    policy::{DEFAULT_MAX_OUTSTANDING, MAX_OUTSTANDING_LIMIT, MAX_READ_BYTES},
};

/// What happened in one `next_batch` besides deliveries (for metrics and spans).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Entries moved to the dead-letter queue at max delivery attempts: entry id, traceparent.
    pub dead_lettered: Vec<(String, Option<String>)>,
    /// Deliveries whose ack deadline passed.
    pub expired: usize,
    /// Entries skipped by the event-type filter.
    pub filtered: usize,
    /// The breaker's state, if the subscription has one.
    pub breaker: Option<BreakerState>,
}

/// One consumer of a subscription; see the module doc for the loop.
pub struct Session {
    /// The subscription's settings, re-read when the policy says so.
    config: SubscriptionConfig,
    /// Decides what to do next.
    policy: DeliveryPolicy,
    /// Does it in Redis; owns the consumer name.
    fetcher: Fetcher,
    /// Where the policy's `now` comes from.
    clock: Arc<dyn Clock>,
    /// What the last `next_batch` did besides delivering.
    stats: BatchStats,
    /// Set when a read failed: it may have assigned entries to this session whose reply never
    /// arrived; the next batch first adopts them from the session's pending list.
    resync: bool,
    /// Recounts of the outstanding deliveries from the pending lists so far.
    recounts: u64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("subscription", &self.config.name)
            .field("consumer", &self.fetcher.consumer())
            .field("outstanding", &self.policy.outstanding().0)
            .finish()
    }
}

impl Session {
    /// Opens a session on an existing subscription: registers a new consumer in its group.
    pub async fn open(broker: &Broker, stream: &str, subscription: &str, flow: FlowControl) -> Result<Self> {
        Self::open_with(broker, stream, subscription, flow, Arc::new(SystemClock), Timing::new(broker.options())).await
    }

    /// [`Session::open`] with the clock and schedule given (tests move a
    /// [`crate::delivery::ManualClock`] instead of waiting).
    pub async fn open_with(
        broker: &Broker,
        stream: &str,
        subscription: &str,
        flow: FlowControl,
        clock: Arc<dyn Clock>,
        timing: Timing,
    ) -> Result<Self> {
        let config = broker.partition_subscription(stream, subscription).await?;
        let fetcher = Fetcher::open(broker, &config).await?;
        let upkeep = broker.upkeep(&config.stream, &config.name, clock.now());
        let flow = flow.ordered(config.ordered);
        let policy = DeliveryPolicy::new(flow, timing, upkeep, clock.now()).spread_waits(jitter());
        Ok(Self { config, policy, fetcher, clock, stats: BatchStats::default(), resync: false, recounts: 0 })
    }

    /// This session's Redis consumer name.
    pub fn consumer(&self) -> &str {
        self.fetcher.consumer()
    }

    /// The subscription's settings as last read.
    pub fn config(&self) -> &SubscriptionConfig {
        &self.config
    }

    /// How many reads of new entries went natively (`XREADGROUP` checked by the stream's size
    /// mark) rather than through [`crate::scripts::READ_NEW`] (for tests).
    pub fn native_reads(&self) -> u64 {
        self.fetcher.native_reads()
    }

    /// How many times the session recounted its outstanding deliveries from its pending lists
    /// in Redis (two `XPENDING`s each) while waiting for room (for tests).
    pub fn recounts(&self) -> u64 {
        self.recounts
    }

    /// What the last [`Session::next_batch`] did besides delivering.
    pub fn last_stats(&self) -> &BatchStats {
        &self.stats
    }

    /// The next deliveries; may be empty (nothing arrived within the block time, the session is
    /// at its flow-control limit, or the breaker is open), so callers can check for cancellation.
    pub async fn next_batch(&mut self) -> Result<Vec<Delivery>> {
        self.stats = BatchStats::default();
        let batch = self.next_batch_inner().await;
        if batch.is_err() {
            self.resync = true;
        }
        batch
    }

    /// [`Session::next_batch`], without marking the session for a resync when it fails.
    async fn next_batch_inner(&mut self) -> Result<Vec<Delivery>> {
        if self.resync {
            self.adopt_orphans().await?;
        }
        if self.policy.config_due(self.clock.now()) {
            self.config = self.fetcher.config(&self.config).await?;
            self.policy.config_refreshed(self.clock.now());
        }
        self.policy.settled_here(self.fetcher.settled_here());
        if self.policy.room() == 0 && !self.wait(self.policy.wait_for_room(), &mut Vec::new()).await? {
            return Ok(Vec::new());
        }
        let permit = self.fetcher.breaker_permit(&self.config, self.policy.room()).await?;
        self.stats.breaker = self.config.breaker.as_ref().map(|_| permit.state);
        let allowed = match self.policy.gate(&permit) {
            Gate::Deliver(allowed) => allowed,
            Gate::Pause(pause) => {
                tokio::time::sleep(pause).await;
                return Ok(Vec::new());
            }
        };
        let mut entries = self.fetch(allowed).await?;
        let unused = DeliveryPolicy::unused_probes(&permit, entries.len());
        if unused > 0 {
            self.fetcher.return_probes(&self.config, unused).await;
        }
        entries = self.apply_filter(entries).await;
        let keys = self.fetcher.ack_keys();
        let batch: Vec<Delivery> =
            entries.into_iter().filter_map(|e| self.fetcher.delivery(&self.config, e, &keys)).collect();
        for delivery in &batch {
            self.policy.delivered(delivery.source, &delivery.entry_id, delivery.payload.len(), delivery.attempt);
        }
        Ok(batch)
    }

    /// Adopts the entries a failed read may have assigned to this session without it knowing
    /// (see [`DeliveryPolicy::adopt_orphans`]), so they are delivered now, not after their ack
    /// deadline.
    async fn adopt_orphans(&mut self) -> Result<()> {
        let pending = self.fetcher.own_pending(&self.config).await?;
        let adopted = self.policy.adopt_orphans(pending.into_iter().map(|(source, id, _)| (source, id)));
        if adopted > 0 {
            tracing::info!(consumer = %self.consumer(), adopted, "entries of a read whose reply was lost are delivered now");
        }
        self.resync = false;
        Ok(())
    }

    /// Releases the session's unsettled entries and its backlog (due at once) and deletes its
    /// consumer.
    pub async fn close(self) -> Result<u64> {
        self.fetcher.release(&self.config, self.policy.backlog_len()).await
    }

    /// Carries out the policy's reads for up to `allowed` entries, then, if nothing came, its
    /// wait. Entries already claimed or read are this session's pending entries: once there
    /// are any, a failing later step ends the fetch early (logged) instead of dropping them, so
    /// they are delivered now rather than after their ack deadline.
    async fn fetch(&mut self, allowed: usize) -> Result<Vec<Entry>> {
        if self.config.ordered {
            self.policy.reclaim_next();
        }
        let mut fetch = self.policy.start_fetch(allowed, self.clock.now(), self.config.ack_deadline);
        let mut entries = Vec::new();
        while let Some(read) = self.policy.next_read(&mut fetch) {
            let fetched = match self.read(read).await {
                Ok(fetched) => fetched,
                Err(e) if entries.is_empty() => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, fetched = entries.len(), "fetch cut short; delivering what was fetched");
                    self.resync = true; // the failed read may have assigned entries all the same
                    fetch.cut_short();
                    break;
                }
            };
            let sizes: Vec<usize> = fetched.entries.iter().map(Entry::size).collect();
            self.policy.took(&mut fetch, &sizes, fetched.used, fetched.left, fetched.idle_after);
            self.stats.expired += fetched.expired;
            self.stats.dead_lettered.extend(fetched.dead_lettered);
            entries.extend(fetched.entries);
        }
        if entries.is_empty() {
            // An ordered subscription's reads go through the ordering gate (READ_NEW), which
            // a bare blocking XREADGROUP would bypass: its sessions wait through the watcher.
            let own_reader = self.fetcher.has_reader() && !self.config.ordered;
            let wait = self.policy.wait_when_empty(&fetch, own_reader);
            self.wait(wait, &mut entries).await?;
        }
        Ok(entries)
    }

    /// Carries out one read.
    async fn read(&mut self, read: Read) -> Result<Fetched> {
        let config = &self.config;
        match read {
            Read::Backlog { source, ids, budget, force_one } => {
                self.fetcher.take_backlog(config, source, &ids, budget, force_one).await
            }
            Read::Claim { source, count } => self.fetcher.claim_due(config, source, count).await,
            Read::New { source, count, budget, force_one } => {
                self.fetcher.read_new(config, source, count, budget, force_one).await
            }
            Read::Reap { idle } => {
                self.fetcher.reap(config, idle).await?;
                Ok(Fetched::default())
            }
        }
    }

    /// Carries out a wait; entries a blocking read brought that fit go to `entries` (the rest
    /// to the backlog). Returns whether flow control leaves room afterwards.
    async fn wait(&mut self, wait: Wait, entries: &mut Vec<Entry>) -> Result<bool> {
        match wait {
            Wait::BlockingRead(block) => {
                let read = self.fetcher.blocking_read(&self.config, block).await?;
                let sizes: Vec<usize> = read.iter().map(Entry::size).collect();
                for (entry, fits) in read.into_iter().zip(self.policy.fits(&sizes)) {
                    if fits {
                        entries.push(entry);
                    } else {
                        self.policy.backlogged([(entry.source, entry.id)]);
                    }
                }
            }
            Wait::Watch { after, block } if self.config.ordered => {
                self.fetcher.watch_or_settled(&self.config, &after, block).await;
            }
            Wait::Watch { after, block } => self.fetcher.watch(&self.config, &after, block).await,
            Wait::Nothing => {}
            Wait::Settlement(poll) => {
                self.fetcher.settlement(poll).await;
                let freed = self.policy.settled_here(self.fetcher.settled_here());
                if freed == 0 || self.policy.room() == 0 || self.policy.recount_due(self.clock.now()) {
                    let still = self.fetcher.leased(&self.config).await?;
                    self.policy.recount(&still, self.clock.now());
                    self.recounts += 1;
                }
            }
        }
        Ok(self.policy.room() > 0)
    }

    /// Acks the entries the subscription's event-type filter excludes; returns the others.
    async fn apply_filter(&mut self, entries: Vec<Entry>) -> Vec<Entry> {
        if self.config.event_type_filter.is_empty() {
            return entries;
        }
        let (keep, skip): (Vec<Entry>, Vec<Entry>) =
            entries.into_iter().partition(|e| self.config.event_type_filter.contains(&e.event_type()));
        if !skip.is_empty() && self.fetcher.ack_filtered(&self.config, &skip).await {
            self.stats.filtered = skip.len();
        }
        keep
    }
}
