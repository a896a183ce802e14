//! The pusher: finds the push subscriptions and runs one delivery per subscription.
//!
//! Every `poll` it lists all streams and their subscriptions; a subscription with a push config
//! gets a delivery task: a broker [`Session`] (its own consumer in the subscription's group,
//! flow control = the push `max_concurrency`) driven by
//! [`eventflow_broker::delivery::drive`] into a [`PushSink`]. When a subscription's push config
//! changes the delivery is restarted with the new one (the old one finishes its pushes in
//! flight in the background while the new one starts); when it is no longer a push
//! subscription (or is deleted) its delivery stops. Stopping goes through the delivery's own
//! cancellation token, so the sink finishes its pushes in flight and the session then releases
//! what is left for immediate redelivery.
//!
//! Several pusher replicas share a subscription through the consumer group: each replica's
//! session is one consumer, and Redis hands each entry to one of them.
//!
//! A subscription of a partitioned stream (`eventflow_broker::partition`) is one delivery with
//! one session per partition, as a Subscribe call has: each partition's session is driven into
//! its own [`PushSink`], and the sinks share one semaphore of `max_concurrency` permits, so the
//! subscription never has more pushes in flight per replica than on a 1-partition stream. Each
//! session's flow control is its share (`ceil(max_concurrency / P)`), so a batch never waits
//! long for a permit (a hot partition cannot borrow an idle one's share). Outcomes settle
//! through the ack ids, which name their partition; metrics and spans use the stream's
//! user-visible name. An ordered subscription orders each key within its partition, which is
//! all of that key's events (publish routes a key to one partition).

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use eventflow_broker::{
    BrokerError, PushConfig, Session,
    delivery::{Ended, drive},
    session::FlowControl,
};
use tokio::{
    sync::Semaphore,
    task::{JoinHandle, JoinSet},
};
use tokio_util::sync::CancellationToken;

use crate::sink::{PushSink, Shared};

/// Streams one listing page asks for.
const PAGE: usize = 1000;
/// Pause before reopening a delivery that ended with an error.
const REOPEN_PAUSE: Duration = Duration::from_secs(1);

/// One running delivery.
struct Running {
    /// The config it pushes by (restart when the stored one differs).
    push: PushConfig,
    /// Stops it.
    stop: CancellationToken,
    /// Resolves when it stopped.
    handle: JoinHandle<()>,
}

/// Runs the deliveries of every push subscription until `shutdown`; then waits for them to end.
pub async fn run(shared: Shared, poll: Duration, shutdown: CancellationToken) {
    let mut running: BTreeMap<(String, String), Running> = BTreeMap::new();
    // Deliveries told to stop, finishing their pushes in flight (a new config's delivery starts
    // meanwhile).
    let mut stopping = JoinSet::new();
    loop {
        while stopping.try_join_next().is_some() {}
        match push_subscriptions(&shared).await {
            Ok(found) => reconcile(&shared, &mut running, &mut stopping, found, &shutdown),
            Err(e) => tracing::warn!(error = %e, "cannot list push subscriptions; deliveries go on unchanged"),
        }
        shared.metrics.subscriptions.set(i64::try_from(running.len()).unwrap_or(i64::MAX));
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(poll) => {}
        }
    }
    for (_, delivery) in std::mem::take(&mut running) {
        delivery.stop.cancel();
        let _ = delivery.handle.await;
    }
    while stopping.join_next().await.is_some() {}
}

/// Every push subscription: (stream, name) -> push config.
async fn push_subscriptions(shared: &Shared) -> Result<BTreeMap<(String, String), PushConfig>, BrokerError> {
    let mut found = BTreeMap::new();
    let mut after = String::new();
    loop {
        let (names, more) = shared.broker.list_stream_names(&after, PAGE).await?;
        for stream in &names {
            let subs = match shared.broker.list_subscriptions(stream).await {
                Ok(subs) => subs,
                Err(BrokerError::NotFound(_)) => continue, // deleted meanwhile
                Err(e) => return Err(e),
            };
            for sub in subs {
                if let Some(push) = sub.push {
                    found.insert((sub.stream, sub.name), push);
                }
            }
        }
        match names.last() {
            Some(last) if more => after.clone_from(last),
            _ => return Ok(found),
        }
    }
}

/// Stops deliveries whose subscription is gone or changed (they finish in `stopping`), starts
/// the missing ones.
fn reconcile(
    shared: &Shared,
    running: &mut BTreeMap<(String, String), Running>,
    stopping: &mut JoinSet<()>,
    mut found: BTreeMap<(String, String), PushConfig>,
    shutdown: &CancellationToken,
) {
    let stale: Vec<(String, String)> = running
        .iter()
        .filter(|(key, r)| found.get(*key) != Some(&r.push) || r.handle.is_finished())
        .map(|(key, _)| key.clone())
        .collect();
    for key in stale {
        if let Some(old) = running.remove(&key) {
            tracing::info!(stream = %key.0, subscription = %key.1, "push delivery stops (config changed or subscription gone)");
            old.stop.cancel();
            stopping.spawn(async move {
                let _ = old.handle.await;
            });
        }
    }
    for (key, push) in std::mem::take(&mut found) {
        if running.contains_key(&key) {
            continue;
        }
        let stop = shutdown.child_token();
        let handle = tokio::spawn(deliver(shared.clone(), key.0.clone(), key.1.clone(), push.clone(), stop.clone()));
        tracing::info!(stream = %key.0, subscription = %key.1, endpoint = %push.endpoint, "push delivery starts");
        running.insert(key, Running { push, stop, handle });
    }
}

/// Delivers one push subscription until `stop`: one [`deliver_partition`] per partition of its
/// stream, sharing the `max_concurrency` permits.
async fn deliver(shared: Shared, stream: String, subscription: String, push: PushConfig, stop: CancellationToken) {
    let flow = match FlowControl::new(i64::from(push.max_concurrency), 0) {
        Ok(flow) => flow,
        Err(e) => {
            tracing::error!(%stream, %subscription, error = %e, "push delivery cannot start");
            return;
        }
    };
    // The count is fixed while the stream exists; read it until Redis answers.
    let partitions = loop {
        match shared.broker.partitions(&stream).await {
            Ok(p) => break p,
            Err(e) => {
                tracing::warn!(%stream, %subscription, error = %e, "push delivery cannot read the partition count; retrying");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(REOPEN_PAUSE) => {}
                }
            }
        }
    };
    let permits = Arc::new(Semaphore::new(flow.max_messages.max(1)));
    let delivery = Delivery { shared, stream, subscription, push, permits, flow: flow.split(partitions) };
    let mut parts = JoinSet::new();
    for part in eventflow_broker::partition_names(&delivery.stream, partitions) {
        parts.spawn(delivery.clone().deliver_partition(part, stop.clone()));
    }
    while parts.join_next().await.is_some() {}
}

/// What the partitions of one push subscription's delivery share.
#[derive(Clone)]
struct Delivery {
    /// Broker, client, metrics.
    shared: Shared,
    /// The user-visible stream (metrics, spans, logs).
    stream: String,
    /// The subscription.
    subscription: String,
    /// How to push.
    push: PushConfig,
    /// The subscription's `max_concurrency` permits, shared by its partitions' sinks.
    permits: Arc<Semaphore>,
    /// Each partition session's flow control (its share of `max_concurrency`).
    flow: FlowControl,
}

impl Delivery {
    /// Delivers partition `part` (the Redis-level stream: the stream itself or `stream~i`) until
    /// `stop`: opens a session and drives it into a [`PushSink`], reopening after errors (Redis
    /// outages are ridden out inside the driver).
    async fn deliver_partition(self, part: String, stop: CancellationToken) {
        let (stream, subscription) = (&self.stream, &self.subscription);
        while !stop.is_cancelled() {
            let ended = match Session::open(&self.shared.broker, &part, subscription, self.flow).await {
                Ok(session) => {
                    let mut sink = PushSink::new(
                        self.shared.clone(),
                        stream,
                        subscription,
                        self.push.clone(),
                        self.permits.clone(),
                    );
                    drive(session, &mut sink, &stop).await
                }
                Err(e) => Ended::Failed(e),
            };
            match ended {
                Ended::Shutdown | Ended::Gone => return,
                Ended::Failed(BrokerError::FailedPrecondition(why)) => {
                    // No longer a push subscription: the next poll stops this delivery.
                    tracing::info!(%stream, %part, %subscription, %why, "push delivery paused");
                    stop.cancelled().await;
                    return;
                }
                Ended::Failed(e) => {
                    tracing::warn!(%stream, %part, %subscription, error = %e, "push delivery failed; reopening");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(REOPEN_PAUSE) => {}
                    }
                }
            }
        }
    }
}
