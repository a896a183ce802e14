//! The HTTP [`Sink`] of one push subscription: each delivery of a batch becomes one signed POST
//! ([`crate::request`], [`crate::client`]) on its own task, at most `max_concurrency` at once
//! (a semaphore; the session's flow control is set to the same number — on a partitioned
//! stream the partitions' sinks share the semaphore and each session gets its share — so a
//! batch never waits long for a permit), and each push's outcome ([`crate::outcome`]) is settled through
//! the broker's decoded settlement API right after it: ack, nack (with `Retry-After`) or
//! reject. Nacks and rejects count as breaker failures there, as for Subscribe clients.
//!
//! Acks, the usual outcome, share calls (`Acks`): the acks of pushes that end while an
//! Acknowledge call is under way go together in the next one (a group commit without a timer,
//! so a lone ack is sent at once). A push keeps its permit until the call carrying its outcome
//! ended, so the pushes in flight and the session's window still agree.
//!
//! When the delivery ends (shutdown, or the pusher stops this subscription) [`Sink::end`]
//! waits for the pushes in flight, so their outcomes are settled before the driver releases
//! the session's unsettled entries.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use eventflow_broker::{
    Broker, Delivery, PushConfig,
    delivery::{Ended, Sink},
    session::BatchStats,
};
use eventflow_proto::{prost::Message, v1::CloudEvent};
use opentelemetry::{KeyValue, trace::Span};
use tokio::{
    sync::{Semaphore, mpsc, oneshot},
    task::JoinSet,
};

use crate::{
    client::HttpClient,
    metrics::PushMetrics,
    outcome::{Attempt, Outcome},
    request,
    signature::SigningKey,
};

/// What every push of a replica shares.
#[derive(Debug, Clone)]
pub struct Shared {
    /// Settles the outcomes.
    pub broker: Broker,
    /// Sends the requests.
    pub client: HttpClient,
    /// Counts them.
    pub metrics: PushMetrics,
}

/// The sink of one push subscription's delivery.
#[derive(Debug)]
pub struct PushSink {
    /// Broker, client, metrics.
    shared: Shared,
    /// The subscription's stream, by its user-visible name also when this sink delivers one
    /// partition of it (spans, logs, metric labels).
    stream: String,
    /// The subscription (spans, logs).
    subscription: String,
    /// Where and how to push (fixed for this delivery: the pusher restarts the delivery when
    /// it changes).
    push: Arc<PushConfig>,
    /// Bounds the pushes in flight by `max_concurrency` (shared by the partitions' sinks).
    permits: Arc<Semaphore>,
    /// The pushes in flight.
    tasks: JoinSet<()>,
    /// Where the pushes' acks go to share calls.
    acks: Acks,
}

impl PushSink {
    /// The sink of `subscription` of `stream` (or of one of its partitions), pushing by `push`
    /// with one of `permits` per push in flight.
    pub fn new(shared: Shared, stream: &str, subscription: &str, push: PushConfig, permits: Arc<Semaphore>) -> Self {
        let acks = Acks::start(shared.clone());
        Self {
            shared,
            stream: stream.into(),
            subscription: subscription.into(),
            push: Arc::new(push),
            permits,
            tasks: JoinSet::new(),
            acks,
        }
    }

    /// Forgets finished pushes (their results are settled inside the task).
    fn reap(&mut self) {
        while self.tasks.try_join_next().is_some() {}
    }
}

impl Sink for PushSink {
    async fn send(&mut self, batch: Vec<Delivery>, _stats: &BatchStats) -> bool {
        self.reap();
        for delivery in batch {
            let Ok(permit) = self.permits.clone().acquire_owned().await else { return false };
            let job = Push {
                shared: self.shared.clone(),
                stream: self.stream.clone(),
                subscription: self.subscription.clone(),
                push: self.push.clone(),
                acks: self.acks.clone(),
            };
            self.tasks.spawn(async move {
                job.run(delivery).await;
                drop(permit);
            });
        }
        true
    }

    fn closed(&self) -> impl Future<Output = ()> + Send {
        // Ends only through the driver's shutdown token (see the module doc).
        std::future::pending()
    }

    fn refuses(&self, config: &eventflow_broker::SubscriptionConfig) -> Option<eventflow_broker::BrokerError> {
        // Turned back into a pull subscription: stop pushing at once (the pusher's next poll
        // would stop this delivery too).
        config.push.is_none().then(|| {
            eventflow_broker::BrokerError::FailedPrecondition(format!(
                "subscription {:?} of stream {:?} is no longer a push subscription",
                config.name, self.stream
            ))
        })
    }

    async fn end(&mut self, why: &Ended) {
        tracing::info!(subscription = %self.subscription, in_flight = self.tasks.len(), ?why, "push delivery ends");
        while self.tasks.join_next().await.is_some() {}
    }
}

/// One push and its settlement (owned by its task).
struct Push {
    /// Broker (settlement), client, metrics.
    shared: Shared,
    /// The stream, for spans and metric labels.
    stream: String,
    /// The subscription, for spans, metric labels and logs.
    subscription: String,
    /// Endpoint, secrets, timeout and binding mode of this delivery.
    push: Arc<PushConfig>,
    /// Where an ack goes (shared calls).
    acks: Acks,
}

impl Push {
    async fn run(self, delivery: Delivery) {
        let outcome = self.attempt(&delivery).await;
        self.settle(&delivery, outcome).await;
    }

    /// POSTs the delivery; returns what to do with it.
    async fn attempt(&self, delivery: &Delivery) -> Outcome {
        let event = match CloudEvent::decode(delivery.payload.as_slice()) {
            Ok(event) => event,
            Err(e) => return Outcome::Reject(format!("the stored event does not decode: {e}")),
        };
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        let now_ms = u64::try_from(now.as_millis()).unwrap_or(u64::MAX);
        let keys: Vec<SigningKey> =
            self.push.signing_secrets(now_ms).into_iter().filter_map(|s| SigningKey::parse(s).ok()).collect();
        if keys.is_empty() {
            return Outcome::Retry { after: None, reason: "push subscription has no usable signing secret".into() };
        }
        let (mut span, trace) =
            eventflow_runtime::trace::start_push(&event, &self.stream, &self.subscription, &delivery.entry_id);
        let request = request::build(&event, self.push.content_mode, &keys, now.as_secs(), &trace);
        let started = Instant::now();
        let attempt = self.shared.client.post(&self.push.endpoint, request, self.push.timeout).await;
        let class = attempt.class();
        let outcome = attempt.outcome();
        let metrics = &self.shared.metrics;
        metrics.pushed(&self.stream, &self.subscription, class, outcome.label(), started.elapsed().as_secs_f64());
        if let Some(span) = span.as_mut() {
            if let Attempt::Response { status, .. } = &attempt {
                span.set_attribute(KeyValue::new("http.response.status_code", i64::from(*status)));
            }
            if outcome != Outcome::Ack {
                span.set_status(opentelemetry::trace::Status::error(class));
            }
            span.end();
        }
        if let Attempt::Refused(why) = &attempt {
            tracing::warn!(subscription = %self.subscription, endpoint = %self.push.endpoint, %why, "push endpoint refused");
        }
        outcome
    }

    /// Settles the delivery by `outcome`; a failure leaves it to its ack deadline (logged).
    async fn settle(&self, delivery: &Delivery, outcome: Outcome) {
        if outcome == Outcome::Ack {
            return self.acks.ack(delivery).await;
        }
        let broker = &self.shared.broker;
        let ids = match broker.decode_ack_ids(vec![delivery.ack_id.clone()]) {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "push settlement: ack id does not decode");
                return;
            }
        };
        let settled = match &outcome {
            Outcome::Ack => broker.acknowledge_decoded(ids).await,
            Outcome::Retry { after: Some(after), reason } => broker.nack_after_decoded(ids, *after, reason).await,
            Outcome::Retry { after: None, reason } => broker.modify_ack_deadline_decoded(ids, 0, reason).await,
            Outcome::Reject(reason) => broker.reject_decoded(ids, reason).await,
        };
        match settled {
            Ok(settled) if settled.applied.is_empty() => {
                tracing::info!(entry = %delivery.entry_id, outcome = outcome.label(), "push settled too late: the delivery had expired");
            }
            Ok(_) => {}
            Err(e) => {
                self.shared.metrics.settle_failures.inc();
                tracing::warn!(entry = %delivery.entry_id, error = %e, "push outcome not settled; redelivered after the ack deadline");
            }
        }
    }
}

/// Most acks one Acknowledge call of [`Acks`] carries.
const MAX_ACKS_PER_CALL: usize = 1000;

/// The acks of one sink's pushes, gathered into shared Acknowledge calls by a task of their
/// own (see the module doc). The task ends when the sink and its pushes are gone.
#[derive(Debug, Clone)]
struct Acks(mpsc::UnboundedSender<PendingAck>);

/// One push's ack, waiting for its call.
#[derive(Debug)]
struct PendingAck {
    /// The delivery's ack id.
    ack_id: String,
    /// Its entry id, for logs.
    entry_id: String,
    /// Dropped once the call carrying this ack ended: wakes the push (which then gives back
    /// its permit).
    _done: oneshot::Sender<()>,
}

impl Acks {
    /// Starts the task that sends the acks. The channel is bounded by the sink's permits: a
    /// push waits for its ack's call before it gives its permit back.
    fn start(shared: Shared) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(send_acks(shared, rx));
        Self(tx)
    }

    /// Acknowledges `delivery`; returns once the call carrying it ended.
    async fn ack(&self, delivery: &Delivery) {
        let (done, ended) = oneshot::channel();
        let ack = PendingAck { ack_id: delivery.ack_id.clone(), entry_id: delivery.entry_id.clone(), _done: done };
        if self.0.send(ack).is_ok() {
            // Err when the sender is dropped: that is the signal.
            let _ = ended.await;
        }
    }
}

/// Sends the acks as they come: each call takes every ack that arrived meanwhile (up to
/// [`MAX_ACKS_PER_CALL`]).
async fn send_acks(shared: Shared, mut acks: mpsc::UnboundedReceiver<PendingAck>) {
    let mut batch = Vec::with_capacity(MAX_ACKS_PER_CALL);
    while acks.recv_many(&mut batch, MAX_ACKS_PER_CALL).await > 0 {
        acknowledge(&shared, &batch).await;
        batch.clear();
    }
}

/// One Acknowledge call for `batch`; a failure leaves its deliveries to their ack deadline
/// (logged and counted per push).
async fn acknowledge(shared: &Shared, batch: &[PendingAck]) {
    let broker = &shared.broker;
    let entry = |ack_id: &str| batch.iter().find(|a| a.ack_id == ack_id).map_or("", |a| a.entry_id.as_str());
    let ids = batch.iter().map(|a| a.ack_id.clone()).collect();
    let settled = match broker.decode_ack_ids(ids) {
        Ok(ids) => broker.acknowledge_decoded(ids).await,
        Err(e) => Err(e),
    };
    match settled {
        Ok(settled) => {
            for ack_id in &settled.invalid {
                tracing::warn!(entry = %entry(ack_id), "push settlement: ack id does not decode");
            }
            for ack_id in &settled.expired {
                tracing::info!(entry = %entry(ack_id), outcome = "ack", "push settled too late: the delivery had expired");
            }
        }
        Err(e) => {
            shared.metrics.settle_failures.inc_by(batch.len() as u64);
            tracing::warn!(error = %e, acks = batch.len(), "push acks not settled; redelivered after the ack deadline");
        }
    }
}
