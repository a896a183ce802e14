//! The batching, retrying publisher.
//!
//! [`Publisher::publish`] gives each event a UUIDv7 id if it has none and queues it; a
//! background task groups queued events per stream into Publish requests of up to `max_batch`
//! and sends up to `max_in_flight` requests at once: a stream's events go with the next free
//! request slot once `max_batch` wait or the first has lingered `linger` (default none), and
//! what is published while every slot is busy gathers into the next request, so batches grow
//! with the load. A request that fails with UNAVAILABLE or
//! DEADLINE_EXCEEDED — or events whose own result carries one of those codes — is sent again
//! after a backoff until `retry_for` has passed since the first try. The retry is safe because
//! the ids were fixed before the first try: if the first try was stored after all, the
//! stream's dedup window answers the repeat as a duplicate of the same entry. Every event gets
//! its own result; one refused event does not fail its neighbours.
//!
//! Events of one stream are sent in queue order, but with `max_in_flight > 1` two batches of a
//! stream may be stored in either order; set it to 1 where the stream order must follow the
//! publish order.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use eventflow_proto::v1::{
    CloudEvent, PublishRequest, PublishResult, publisher_service_client::PublisherServiceClient,
};
use tokio::{
    sync::{Mutex, OwnedSemaphorePermit, Semaphore, mpsc, oneshot},
    task::{JoinHandle, JoinSet},
    time::Instant,
};
use tonic::Code;

use crate::{
    Backoff, ClientError,
    connection::{AuthChannel, Connection},
    error::is_retryable,
};

/// The most events the server takes in one Publish request.
const SERVER_MAX_BATCH: usize = 1000;

/// How the publisher batches and retries.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    /// How long the first event of a batch waits for more before the batch is sent, even
    /// with a request slot free. Zero (the default): sent as soon as a slot is free; events
    /// published while all `max_in_flight` requests are out gather into the next one, so
    /// batches grow with the load and a lone event is not held back.
    pub linger: Duration,
    /// Send a stream's batch as soon as it holds this many events (at most 1000).
    pub max_batch: usize,
    /// The most Publish requests outstanding at once; more events wait in the queue.
    pub max_in_flight: usize,
    /// The most events queued and not yet sent; `publish` waits for room beyond it.
    pub queue_capacity: usize,
    /// Delays between retries.
    pub backoff: Backoff,
    /// How long after its first try an event is still retried.
    pub retry_for: Duration,
    /// The deadline of one Publish call.
    pub call_timeout: Duration,
}

impl Default for PublisherConfig {
    fn default() -> Self {
        Self {
            linger: Duration::ZERO,
            max_batch: 500,
            max_in_flight: 4,
            queue_capacity: 10_000,
            backoff: Backoff::default(),
            retry_for: Duration::from_secs(60),
            call_timeout: Duration::from_secs(10),
        }
    }
}

/// Where one event was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The event's id (the one given, or the UUIDv7 the publisher assigned).
    pub event_id: String,
    /// The stream entry id holding it (for a duplicate: the first publish's entry).
    pub entry_id: String,
    /// True when the stream already had this event id within its dedup window.
    pub duplicate: bool,
    /// The partition holding `entry_id` (0 on a stream of one partition).
    pub partition: u32,
}

/// Counters of what the publisher did, for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublisherStats {
    /// Publish requests sent (retries included).
    pub requests: u64,
    /// Requests sent again after a retryable failure (of the call or of some of its events).
    pub retries: u64,
}

/// The shared counters behind [`PublisherStats`].
#[derive(Debug, Default)]
struct Counters {
    /// See [`PublisherStats::requests`].
    requests: AtomicU64,
    /// See [`PublisherStats::retries`].
    retries: AtomicU64,
}

/// One queued event and where its result goes.
#[derive(Debug)]
struct Queued {
    /// The stream it goes to.
    stream: String,
    /// The event, its id already set.
    event: CloudEvent,
    /// The waiting `publish` call.
    reply: oneshot::Sender<Result<Published, ClientError>>,
    /// Its place among the `queue_capacity` events that may wait unsent.
    room: OwnedSemaphorePermit,
}

/// A batching, retrying publisher; see the module doc. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Publisher {
    /// The queue the batching task drains; `None` once closed.
    queue: Mutex<Option<mpsc::UnboundedSender<Queued>>>,
    /// `queue_capacity` permits, one held by each event queued and not yet sent: `publish`
    /// waits for one, so the queue is bounded. Closed by `close`.
    room: Arc<Semaphore>,
    /// A client for `publish_batch`, which bypasses the queue.
    client: PublisherServiceClient<AuthChannel>,
    /// Batching and retry settings.
    config: Arc<PublisherConfig>,
    /// What it did.
    counters: Arc<Counters>,
    /// The batching task, awaited by `close`.
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Publisher {
    /// A publisher over `connection` (spawns its batching task on the current runtime).
    pub fn new(connection: &Connection, mut config: PublisherConfig) -> Self {
        config.max_batch = config.max_batch.clamp(1, SERVER_MAX_BATCH);
        config.max_in_flight = config.max_in_flight.max(1);
        let config = Arc::new(config);
        let counters = Arc::new(Counters::default());
        let client = connection.publisher();
        let room = Arc::new(Semaphore::new(config.queue_capacity.max(1)));
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(batcher(rx, client.clone(), config.clone(), counters.clone()));
        Self { queue: Mutex::new(Some(tx)), room, client, config, counters, task: Mutex::new(Some(task)) }
    }

    /// Publishes one event (batched with others) and returns where it was stored.
    pub async fn publish(&self, stream: &str, mut event: CloudEvent) -> Result<Published, ClientError> {
        assign_id(&mut event);
        let room = self.room.clone().acquire_owned().await.map_err(|_| ClientError::Closed)?;
        let (reply, answer) = oneshot::channel();
        let queue = self.queue.lock().await.clone().ok_or(ClientError::Closed)?;
        queue.send(Queued { stream: stream.to_string(), event, reply, room }).map_err(|_| ClientError::Closed)?;
        answer.await.map_err(|_| ClientError::Closed)?
    }

    /// Publishes `events` to `stream` now (in requests of at most `max_batch`, one after the
    /// other, in order), with the same retries; one result per event, in order.
    pub async fn publish_batch(
        &self,
        stream: &str,
        mut events: Vec<CloudEvent>,
    ) -> Vec<Result<Published, ClientError>> {
        events.iter_mut().for_each(assign_id);
        let mut results = Vec::with_capacity(events.len());
        let mut rest = events.into_iter().peekable();
        while rest.peek().is_some() {
            let chunk: Vec<CloudEvent> = rest.by_ref().take(self.config.max_batch).collect();
            results.extend(send(&self.client, stream, chunk, &self.config, &self.counters).await);
        }
        results
    }

    /// What it did so far.
    pub fn stats(&self) -> PublisherStats {
        PublisherStats {
            requests: self.counters.requests.load(Ordering::Relaxed),
            retries: self.counters.retries.load(Ordering::Relaxed),
        }
    }

    /// Sends everything queued, waits for every result, and refuses further `publish` calls.
    pub async fn close(&self) {
        self.queue.lock().await.take();
        self.room.close();
        if let Some(task) = self.task.lock().await.take()
            && let Err(e) = task.await
        {
            tracing::warn!(error = %e, "publisher batching task failed");
        }
    }
}

/// Sets a UUIDv7 id on an event that has none, before its first try (see the module doc).
fn assign_id(event: &mut CloudEvent) {
    if event.id.is_empty() {
        event.id = uuid::Uuid::now_v7().to_string();
    }
}

/// One stream's events waiting to be sent.
struct Waiting {
    /// Its events, in queue order.
    events: Vec<Queued>,
    /// When the first of them has lingered `linger`: from then on it goes with the next free
    /// request slot.
    due: Instant,
}

/// The batching task: groups queued events per stream and sends each batch on its own task,
/// at most `max_in_flight` at once; on close, sends what is left and waits for all of it.
///
/// A stream's events are ready when `max_batch` of them wait or the first has lingered; ready
/// events go as soon as a request slot is free, the longest-waiting stream first, up to
/// `max_batch` a request. Events queued while every slot is busy gather meanwhile, so with no
/// linger the requests grow with the load by themselves (a lone event goes at once).
async fn batcher(
    mut rx: mpsc::UnboundedReceiver<Queued>,
    client: PublisherServiceClient<AuthChannel>,
    config: Arc<PublisherConfig>,
    counters: Arc<Counters>,
) {
    let slots = Arc::new(Semaphore::new(config.max_in_flight));
    let mut sending = JoinSet::new();
    let mut waiting: HashMap<String, Waiting> = HashMap::new();
    // Whether `publish` may still queue events; once not, everything waiting is ready.
    let mut open = true;
    loop {
        while let Ok(queued) = rx.try_recv() {
            wait(&mut waiting, queued, config.linger);
        }
        let now = Instant::now();
        let ready = |w: &Waiting| !open || w.events.len() >= config.max_batch || w.due <= now;
        while let Some(stream) =
            waiting.iter().filter(|(_, w)| ready(w)).min_by_key(|(_, w)| w.due).map(|(stream, _)| stream.clone())
        {
            let Ok(slot) = slots.clone().try_acquire_owned() else { break };
            let Some(w) = waiting.get_mut(&stream) else { break };
            let batch: Vec<Queued> = if w.events.len() > config.max_batch {
                w.events.drain(..config.max_batch).collect()
            } else {
                waiting.remove(&stream).map(|w| w.events).unwrap_or_default()
            };
            let (client, config, counters) = (client.clone(), config.clone(), counters.clone());
            sending.spawn(async move {
                let (events, replies): (Vec<_>, Vec<_>) = batch
                    .into_iter()
                    .map(|Queued { event, reply, room, .. }| {
                        // The event is on its way: its place in the queue is free.
                        drop(room);
                        (event, reply)
                    })
                    .unzip();
                let results = send(&client, &stream, events, &config, &counters).await;
                for (reply, result) in replies.into_iter().zip(results) {
                    // The caller may have stopped waiting; its event was still sent.
                    let _ = reply.send(result);
                }
                drop(slot);
            });
        }
        if !open && waiting.is_empty() {
            break;
        }
        // With a ready batch waiting for a slot, only a send ending (or a new event) matters.
        let blocked = waiting.values().any(ready);
        let due = if blocked { None } else { waiting.values().map(|w| w.due).min() };
        tokio::select! {
            item = rx.recv(), if open => match item {
                Some(queued) => wait(&mut waiting, queued, config.linger),
                None => open = false,
            },
            () = sleep_until(due), if due.is_some() => {}
            Some(_) = sending.join_next(), if !sending.is_empty() => {}
        }
    }
    while sending.join_next().await.is_some() {}
}

/// Adds a queued event to its stream's waiting events.
fn wait(waiting: &mut HashMap<String, Waiting>, queued: Queued, linger: Duration) {
    match waiting.get_mut(&queued.stream) {
        Some(w) => w.events.push(queued),
        None => {
            let due = Instant::now() + linger;
            waiting.insert(queued.stream.clone(), Waiting { events: vec![queued], due });
        }
    }
}

/// Sleeps until `due` (never returns when `None`; the select guard excludes that case).
async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// Sends one batch with retries (see the module doc); one result per event, in order.
async fn send(
    client: &PublisherServiceClient<AuthChannel>,
    stream: &str,
    events: Vec<CloudEvent>,
    config: &PublisherConfig,
    counters: &Counters,
) -> Vec<Result<Published, ClientError>> {
    let started = Instant::now();
    let mut results: Vec<Option<Result<Published, ClientError>>> = events.iter().map(|_| None).collect();
    // Indexes of the events still to send.
    let mut todo: Vec<usize> = (0..events.len()).collect();
    let mut attempt = 0u32;
    while !todo.is_empty() {
        let may_retry = started.elapsed() < config.retry_for;
        let mut request = tonic::Request::new(PublishRequest {
            stream: stream.to_string(),
            events: todo.iter().map(|&i| events[i].clone()).collect(),
        });
        request.set_timeout(config.call_timeout);
        counters.requests.fetch_add(1, Ordering::Relaxed);
        match client.clone().publish(request).await {
            Ok(reply) => {
                let mut again = Vec::new();
                for (&i, result) in todo.iter().zip(reply.into_inner().results) {
                    match event_result(result) {
                        Err(e) if may_retry && e.code().is_some_and(is_retryable) => again.push(i),
                        outcome => results[i] = Some(outcome),
                    }
                }
                todo = again;
            }
            Err(status) if may_retry && is_retryable(status.code()) => {
                tracing::debug!(%stream, code = ?status.code(), attempt, "publish failed, retrying");
            }
            Err(status) => {
                for &i in &todo {
                    results[i] =
                        Some(Err(ClientError::rpc("publish", tonic::Status::new(status.code(), status.message()))));
                }
                todo.clear();
            }
        }
        if !todo.is_empty() {
            counters.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(config.backoff.delay(attempt)).await;
            attempt += 1;
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(ClientError::rpc("publish", tonic::Status::internal("no result for event")))))
        .collect()
}

/// One event's result as the server gave it.
fn event_result(result: PublishResult) -> Result<Published, ClientError> {
    match result.error {
        Some(error) => Err(ClientError::Event {
            event_id: result.event_id,
            code: Code::from_i32(error.code),
            field: error.field,
            message: error.message,
        }),
        None => Ok(Published {
            event_id: result.event_id,
            entry_id: result.entry_id,
            duplicate: result.duplicate,
            partition: u32::try_from(result.partition).unwrap_or(0),
        }),
    }
}
