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
//! Settlements are batched (the `settler` module): the outcomes (and lease extensions) of
//! one kind are sent in one call once [`SubscriberConfig::ack_batch_size`] ids wait or
//! [`SubscriberConfig::ack_batch_delay`] has passed since the first, whichever comes first. A
//! handler keeps its slot until the call carrying its outcome has ended, so at most
//! `max_concurrency` ids wait and the server's flow control sees the same count; a batch is at
//! most the larger of 250 and a quarter of the slots, so the rest of a large window keep
//! flowing while its call is under way. A batch size of 1 (or a zero delay) sends each settlement at once.
//!
//! When the Subscribe call breaks (the service restarts, the network drops), the subscriber
//! reconnects with backoff; handlers in flight go on and settle through unary calls. A status
//! that a reconnect cannot fix (INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED,
//! UNAUTHENTICATED, FAILED_PRECONDITION) ends `run` with that error, after the drain.
//!
//! Cancelling the shutdown token drains: no new event is started (events already received
//! but not started are nacked, so they are redelivered at once), the handlers in flight run
//! to their end and are settled (the open batches are flushed as soon as every handler still
//! running has handed in its outcome), and then the call is closed and `run` returns.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::Poll,
    time::Duration,
};

use eventflow_proto::v1::{ReceivedEvent, SubscribeRequest, subscriber_service_client::SubscriberServiceClient};
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
    settler::{Calls, DEFAULT_BATCH_DELAY, Kind, Settler},
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
    /// Most ack ids one settlement call carries (clamped to 1..=10000, the server's cap, and
    /// to the larger of 250 and a quarter of `max_concurrency`, at least 1: a full large window
    /// in one call would leave the
    /// server waiting for it). 1 sends each settlement alone.
    pub ack_batch_size: usize,
    /// Longest wait, from the first id of a batch, before the batch is sent although not
    /// full. Zero sends each settlement alone.
    pub ack_batch_delay: Duration,
}

impl SubscriberConfig {
    /// Defaults for `stream`/`subscription`: 16 handlers at once, leases of the server's default
    /// ack deadline (30 s), reconnect backoff of 100 ms to 5 s, settlements retried for 30 s
    /// and batched by up to 1000 ids (in effect `max_concurrency` up to 250 slots, the larger of
    /// 250 and a quarter of it above) or 5 ms.
    pub fn new(stream: impl Into<String>, subscription: impl Into<String>) -> Self {
        Self {
            stream: stream.into(),
            subscription: subscription.into(),
            max_concurrency: 16,
            max_outstanding_bytes: 0,
            lease: Some(Duration::from_secs(30)),
            reconnect: Backoff::default(),
            settle_retry_for: Duration::from_secs(30),
            ack_batch_size: 1000,
            ack_batch_delay: DEFAULT_BATCH_DELAY,
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
    /// Lease extensions that took effect (one per event and extension).
    pub lease_extensions: u64,
    /// Subscribe calls opened after the first.
    pub reconnects: u64,
    /// Settlement and lease extension calls sent (each try counts; a call carries a batch).
    pub settle_calls: u64,
}

/// The shared counters behind [`SubscriberStats`], one per field.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// See [`SubscriberStats::delivered`].
    pub(crate) delivered: AtomicU64,
    /// See [`SubscriberStats::acked`].
    pub(crate) acked: AtomicU64,
    /// See [`SubscriberStats::nacked`].
    pub(crate) nacked: AtomicU64,
    /// See [`SubscriberStats::rejected`].
    pub(crate) rejected: AtomicU64,
    /// See [`SubscriberStats::expired`].
    pub(crate) expired: AtomicU64,
    /// See [`SubscriberStats::settle_failures`].
    pub(crate) settle_failures: AtomicU64,
    /// See [`SubscriberStats::lease_extensions`].
    pub(crate) lease_extensions: AtomicU64,
    /// See [`SubscriberStats::reconnects`].
    pub(crate) reconnects: AtomicU64,
    /// See [`SubscriberStats::settle_calls`].
    pub(crate) settle_calls: AtomicU64,
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
            settle_calls: get(&c.settle_calls),
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
        // Cancelled when the consume loop ends, whether by shutdown or by a fatal status.
        let draining = CancellationToken::new();
        let (settler, settling) = Settler::start(self.calls(), slots.clone(), draining.clone());
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
                    let work = Work { config: self.config.clone(), settler: settler.clone() };
                    running.spawn(work.handle(event, handler.clone(), slot));
                }
                // Ended handlers stay in the set until joined: reap them, so it holds at most
                // the running ones.
                while running.try_join_next().is_some() {}
            }
        };
        draining.cancel();
        while running.join_next().await.is_some() {}
        // Every handler has ended, so every outcome has been sent; the settler ends at once.
        drop(settler);
        let _ = settling.await;
        drop(call);
        result
    }

    /// What a settlement call needs.
    fn calls(&self) -> Calls {
        Calls { client: self.client.clone(), config: self.config.clone(), counters: self.counters.clone() }
    }

    /// Nacks events received but not started (at a drain), so they are redelivered at once:
    /// one call (a server batch is at most `max_concurrency` events).
    async fn release(&self, events: impl Iterator<Item = ReceivedEvent>) {
        let ack_ids: Vec<String> = events.map(|e| e.ack_id).collect();
        if !ack_ids.is_empty() {
            self.calls().send(&Kind::Nack("consumer draining".into()), ack_ids).await;
        }
    }
}

/// What one handler task needs besides the event.
struct Work {
    /// Lease settings.
    config: Arc<SubscriberConfig>,
    /// Where lease extensions and the outcome go.
    settler: Settler,
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
        // A handler that is done at its first poll needs no lease timer.
        let first = std::future::poll_fn(|cx| Poll::Ready(handling.as_mut().poll(cx))).await;
        let outcome = match (first, self.config.lease) {
            (Poll::Ready(outcome), _) => outcome,
            (Poll::Pending, None) => handling.await,
            (Poll::Pending, Some(deadline)) => {
                let every = (deadline / 2).max(Duration::from_millis(100));
                let seconds = i32::try_from(deadline.as_secs().max(1)).unwrap_or(i32::MAX);
                let mut next = Instant::now() + every;
                loop {
                    tokio::select! {
                        outcome = &mut handling => break outcome,
                        () = tokio::time::sleep_until(next) => {
                            next += every;
                            // Batched with other handlers' extensions; waited for, so it lands
                            // before this event's outcome is sent.
                            self.settler.settle(Kind::Extend(seconds), ack_id.clone()).await;
                        }
                    }
                }
            }
        };
        let kind = match outcome {
            Outcome::Ack => Some(Kind::Ack),
            Outcome::Nack { reason } => Some(Kind::Nack(reason)),
            Outcome::Reject { reason } => Some(Kind::Reject(reason)),
            Outcome::Ignore => None,
        };
        // The slot goes with the outcome: freed once the call carrying it has ended.
        match kind {
            Some(kind) => self.settler.hand_in(kind, ack_id, slot),
            None => drop(slot),
        }
    }
}
