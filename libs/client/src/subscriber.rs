//! The subscriber: a handler per delivered event, with bounded concurrency, lease extension,
//! settlement by outcome, reconnects and a graceful drain.
//!
//! [`Subscriber::run`] opens a Subscribe call with `max_outstanding_messages` equal to
//! `max_concurrency`, so the server never hands this consumer more events than it can run at
//! once. Each event runs the handler on its own task holding one of `max_concurrency` slots;
//! while the handler runs longer than half the subscription's ack deadline, its lease is
//! extended with `ModifyAckDeadline(ack deadline)` every half deadline, so a slow handler's
//! event is not redelivered. The handler's [`Outcome`] is then settled (Acknowledge,
//! ModifyAckDeadline 0 for a nack, Reject), retried while the subscriber service is
//! unavailable — ack ids are self-describing, so any replica settles them, also after a
//! reconnect.
//!
//! When the Subscribe call breaks (the service restarts, the network drops), the subscriber
//! reconnects with backoff; handlers in flight go on and settle through unary calls. A status
//! that a reconnect cannot fix (INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED,
//! UNAUTHENTICATED, FAILED_PRECONDITION) ends `run` with that error, after the drain.
//!
//! Cancelling the shutdown token drains: no new event is started (events already received
//! but not started are nacked, so they are redelivered at once), the handlers in flight run
//! to their end and are settled, and then the call is closed and `run` returns.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use eventflow_proto::v1::{
    AcknowledgeRequest, ModifyAckDeadlineRequest, ReceivedEvent, RejectRequest, SubscribeRequest,
    subscriber_service_client::SubscriberServiceClient,
};
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::{
    Backoff, ClientError,
    connection::{AuthChannel, Connection},
    error::is_retryable,
};

/// What to do with an event once its handler finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done: acknowledge it.
    Ack,
    /// Failed, may succeed later: nack it (redelivered after the subscription's retry backoff),
    /// keeping `reason` as its last error.
    Nack {
        /// Why it failed (kept with the event, shown in its dead letter).
        reason: String,
    },
    /// Failed for good: dead-letter it now.
    Reject {
        /// Why (stored with the dead letter).
        reason: String,
    },
    /// Leave it unsettled: redelivered once its ack deadline passes.
    Ignore,
}

/// How a subscriber consumes.
#[derive(Debug, Clone)]
pub struct SubscriberConfig {
    /// The stream.
    pub stream: String,
    /// The subscription on it.
    pub subscription: String,
    /// The most handlers running at once (also the call's `max_outstanding_messages`).
    pub max_concurrency: usize,
    /// The call's `max_outstanding_bytes` (0 = no byte limit).
    pub max_outstanding_bytes: i64,
    /// The subscription's ack deadline: leases of handlers still running are extended by this
    /// every half of it. `None`: never extend.
    pub lease: Option<Duration>,
    /// Delays between reconnects after the call broke or could not be opened.
    pub reconnect: Backoff,
    /// How long a settlement is retried while the service is unavailable.
    pub settle_retry_for: Duration,
}

impl SubscriberConfig {
    /// Defaults for `stream`/`subscription`: 16 handlers at once, leases of the server's default
    /// ack deadline (30 s), reconnect backoff of 100 ms to 5 s.
    pub fn new(stream: impl Into<String>, subscription: impl Into<String>) -> Self {
        Self {
            stream: stream.into(),
            subscription: subscription.into(),
            max_concurrency: 16,
            max_outstanding_bytes: 0,
            lease: Some(Duration::from_secs(30)),
            reconnect: Backoff::default(),
            settle_retry_for: Duration::from_secs(30),
        }
    }
}

/// Counters of what the subscriber did, for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubscriberStats {
    /// Events received (redeliveries included).
    pub delivered: u64,
    /// Events acknowledged.
    pub acked: u64,
    /// Events nacked (by the handler, or unstarted at a drain).
    pub nacked: u64,
    /// Events rejected.
    pub rejected: u64,
    /// Settlements the server answered with "expired" (the event was redelivered meanwhile).
    pub expired: u64,
    /// Settlements that failed for good (the event will be redelivered).
    pub settle_failures: u64,
    /// Lease extensions sent.
    pub lease_extensions: u64,
    /// Subscribe calls opened after the first.
    pub reconnects: u64,
}

/// The shared counters behind [`SubscriberStats`], one per field.
#[derive(Debug, Default)]
struct Counters {
    /// See [`SubscriberStats::delivered`].
    delivered: AtomicU64,
    /// See [`SubscriberStats::acked`].
    acked: AtomicU64,
    /// See [`SubscriberStats::nacked`].
    nacked: AtomicU64,
    /// See [`SubscriberStats::rejected`].
    rejected: AtomicU64,
    /// See [`SubscriberStats::expired`].
    expired: AtomicU64,
    /// See [`SubscriberStats::settle_failures`].
    settle_failures: AtomicU64,
    /// See [`SubscriberStats::lease_extensions`].
    lease_extensions: AtomicU64,
    /// See [`SubscriberStats::reconnects`].
    reconnects: AtomicU64,
}

/// Adds one to a counter.
fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A subscriber; see the module doc.
#[derive(Debug)]
pub struct Subscriber {
    /// The SubscriberService client (its channel reconnects by itself).
    client: SubscriberServiceClient<AuthChannel>,
    /// What to consume and how.
    config: Arc<SubscriberConfig>,
    /// What it did.
    counters: Arc<Counters>,
}

/// Status codes that a reconnect cannot fix: `run` ends with them.
fn is_fatal(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument
            | Code::NotFound
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::FailedPrecondition
            | Code::Unimplemented
    )
}

impl Subscriber {
    /// A subscriber over `connection`.
    pub fn new(connection: &Connection, mut config: SubscriberConfig) -> Self {
        config.max_concurrency = config.max_concurrency.clamp(1, 10_000);
        Self { client: connection.subscriber(), config: Arc::new(config), counters: Arc::new(Counters::default()) }
    }

    /// What it did so far.
    pub fn stats(&self) -> SubscriberStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SubscriberStats {
            delivered: get(&c.delivered),
            acked: get(&c.acked),
            nacked: get(&c.nacked),
            rejected: get(&c.rejected),
            expired: get(&c.expired),
            settle_failures: get(&c.settle_failures),
            lease_extensions: get(&c.lease_extensions),
            reconnects: get(&c.reconnects),
        }
    }

    /// Consumes until `shutdown` is cancelled (then drains and returns `Ok`) or the server
    /// answers with a status a reconnect cannot fix (drains, then returns it).
    pub async fn run<F, Fut>(&self, handler: F, shutdown: CancellationToken) -> Result<(), ClientError>
    where
        F: Fn(ReceivedEvent) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let slots = Arc::new(Semaphore::new(self.config.max_concurrency));
        let mut running = JoinSet::new();
        // The open call, kept open during the drain so in-flight events stay ours.
        let mut call = None;
        let mut failures = 0u32;
        let mut opened = 0u64;
        let result = 'consume: loop {
            if failures > 0 {
                let delay = self.config.reconnect.delay(failures - 1);
                tokio::select! {
                    () = shutdown.cancelled() => break Ok(()),
                    () = tokio::time::sleep(delay) => {}
                }
            }
            let request = SubscribeRequest {
                stream: self.config.stream.clone(),
                subscription: self.config.subscription.clone(),
                max_outstanding_messages: i32::try_from(self.config.max_concurrency).unwrap_or(i32::MAX),
                max_outstanding_bytes: self.config.max_outstanding_bytes,
            };
            let mut client = self.client.clone();
            let opening = tokio::select! {
                () = shutdown.cancelled() => break Ok(()),
                opening = client.subscribe(request) => opening,
            };
            let stream = match opening {
                Ok(reply) => call.insert(reply.into_inner()),
                Err(status) if is_fatal(status.code()) => break Err(ClientError::rpc("subscribe", status)),
                Err(status) => {
                    tracing::debug!(code = ?status.code(), "subscribe failed, retrying");
                    failures += 1;
                    continue;
                }
            };
            opened += 1;
            if opened > 1 {
                bump(&self.counters.reconnects);
            }
            loop {
                let message = tokio::select! {
                    () = shutdown.cancelled() => break 'consume Ok(()),
                    message = stream.message() => message,
                };
                let batch = match message {
                    Ok(Some(batch)) => batch,
                    // A call that opened restarts the backoff from its first step.
                    Ok(None) => {
                        tracing::debug!("subscribe call ended by the server, reconnecting");
                        failures = 1;
                        continue 'consume;
                    }
                    Err(status) if is_fatal(status.code()) => {
                        break 'consume Err(ClientError::rpc("subscribe", status));
                    }
                    Err(status) => {
                        tracing::debug!(code = ?status.code(), "subscribe call broke, reconnecting");
                        failures = 1;
                        continue 'consume;
                    }
                };
                self.counters.delivered.fetch_add(batch.events.len() as u64, Ordering::Relaxed);
                let mut events = batch.events.into_iter();
                while let Some(event) = events.next() {
                    let slot = tokio::select! {
                        () = shutdown.cancelled() => None,
                        slot = slots.clone().acquire_owned() => slot.ok(),
                    };
                    let Some(slot) = slot else {
                        // Draining: hand back what was received but not started.
                        self.release(std::iter::once(event).chain(events.by_ref())).await;
                        break 'consume Ok(());
                    };
                    let work = Work {
                        client: self.client.clone(),
                        config: self.config.clone(),
                        counters: self.counters.clone(),
                    };
                    running.spawn(work.handle(event, handler.clone(), slot));
                }
            }
        };
        while running.join_next().await.is_some() {}
        drop(call);
        result
    }

    /// Nacks events received but not started (at a drain), so they are redelivered at once.
    async fn release(&self, events: impl Iterator<Item = ReceivedEvent>) {
        let ack_ids: Vec<String> = events.map(|e| e.ack_id).collect();
        let work = Work { client: self.client.clone(), config: self.config.clone(), counters: self.counters.clone() };
        work.settle(ack_ids, Outcome::Nack { reason: "consumer draining".into() }).await;
    }
}

/// What one handler task needs besides the event.
struct Work {
    /// The client for lease extensions and settlement.
    client: SubscriberServiceClient<AuthChannel>,
    /// Lease and settlement settings.
    config: Arc<SubscriberConfig>,
    /// Where it counts.
    counters: Arc<Counters>,
}

impl Work {
    /// Runs the handler on one event, extending its lease meanwhile, then settles it.
    async fn handle<F, Fut>(self, event: ReceivedEvent, handler: Arc<F>, slot: OwnedSemaphorePermit)
    where
        F: Fn(ReceivedEvent) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        let ack_id = event.ack_id.clone();
        let handling = handler(event);
        tokio::pin!(handling);
        let outcome = match self.config.lease {
            None => handling.await,
            Some(deadline) => {
                let every = (deadline / 2).max(Duration::from_millis(100));
                let seconds = i32::try_from(deadline.as_secs().max(1)).unwrap_or(i32::MAX);
                let mut next = Instant::now() + every;
                loop {
                    tokio::select! {
                        outcome = &mut handling => break outcome,
                        () = tokio::time::sleep_until(next) => {
                            next += every;
                            self.extend(&ack_id, seconds).await;
                        }
                    }
                }
            }
        };
        self.settle(vec![ack_id], outcome).await;
        drop(slot);
    }

    /// Extends one event's lease by `seconds` (best effort: a failure leaves the old deadline).
    async fn extend(&self, ack_id: &str, seconds: i32) {
        let request = ModifyAckDeadlineRequest {
            ack_ids: vec![ack_id.to_string()],
            ack_deadline_seconds: seconds,
            reason: String::new(),
        };
        match self.client.clone().modify_ack_deadline(request).await {
            Ok(_) => bump(&self.counters.lease_extensions),
            Err(status) => tracing::warn!(code = ?status.code(), message = status.message(), "lease extension failed"),
        }
    }

    /// Settles events by `outcome`, retrying while the service is unavailable.
    async fn settle(&self, ack_ids: Vec<String>, outcome: Outcome) {
        let started = Instant::now();
        let mut attempt = 0u32;
        let (counter, what) = match &outcome {
            Outcome::Ignore => return,
            Outcome::Ack => (&self.counters.acked, "acknowledge"),
            Outcome::Nack { .. } => (&self.counters.nacked, "nack"),
            Outcome::Reject { .. } => (&self.counters.rejected, "reject"),
        };
        loop {
            let mut client = self.client.clone();
            let answer = match &outcome {
                Outcome::Ignore => return,
                Outcome::Ack => client
                    .acknowledge(AcknowledgeRequest { ack_ids: ack_ids.clone() })
                    .await
                    .map(|r| r.get_ref().expired_ack_ids.len() + r.get_ref().invalid_ack_ids.len()),
                Outcome::Nack { reason } => client
                    .modify_ack_deadline(ModifyAckDeadlineRequest {
                        ack_ids: ack_ids.clone(),
                        ack_deadline_seconds: 0,
                        reason: reason.clone(),
                    })
                    .await
                    .map(|r| r.get_ref().expired_ack_ids.len() + r.get_ref().invalid_ack_ids.len()),
                Outcome::Reject { reason } => client
                    .reject(RejectRequest { ack_ids: ack_ids.clone(), reason: reason.clone() })
                    .await
                    .map(|r| r.get_ref().expired_ack_ids.len() + r.get_ref().invalid_ack_ids.len()),
            };
            match answer {
                Ok(expired) => {
                    let done = ack_ids.len().saturating_sub(expired) as u64;
                    counter.fetch_add(done, Ordering::Relaxed);
                    self.counters.expired.fetch_add(expired as u64, Ordering::Relaxed);
                    return;
                }
                Err(status) if is_retryable(status.code()) && started.elapsed() < self.config.settle_retry_for => {
                    tokio::time::sleep(self.config.reconnect.delay(attempt)).await;
                    attempt += 1;
                }
                Err(status) => {
                    tracing::warn!(what, code = ?status.code(), message = status.message(), "settlement failed");
                    self.counters.settle_failures.fetch_add(ack_ids.len() as u64, Ordering::Relaxed);
                    return;
                }
            }
        }
    }
}
