//! Publishing, with group commit: concurrent Publish calls are queued and a few writer tasks
//! each take what is queued (up to [`MAX_COMMIT_EVENTS`] events and [`MAX_COMMIT_BYTES`] of
//! payload; a single bigger call is committed alone), run PUBLISH scripts per stream for it
//! (the calls' events in queue order, cut into script calls of at most [`MAX_SCRIPT_EVENTS`]
//! events on call boundaries), all pipelined in one round trip, and answer every caller. Under load many calls
//! share one round trip and one script call; an idle broker adds no delay (no linger timer).
//!
//! Calls that need their order kept ([`Order::Kept`], a stream of publishes) go to the ordered
//! writers: each stream belongs to one of them (by a hash of its name), so such calls to one
//! stream are committed one commit after the other, in the order they were queued. Other calls
//! ([`Order::Any`], unary Publish) share one queue drained by several writers, so commits of
//! one busy stream overlap (two in flight: Redis never waits for the next one).
//!
//! Memory is bounded by a byte budget ([`crate::BrokerOptions::max_publish_bytes_in_flight`]):
//! a call holds its events' payload bytes of the budget from before it is queued until it is
//! answered. A call waits for budget up to the Redis command timeout and then fails with
//! RESOURCE_EXHAUSTED (back-pressure instead of an ever-growing queue when Redis is slower than
//! the producers); a call larger than the whole budget is refused at once. The budget is fair:
//! calls get it in arrival order.

use std::{
    hash::{BuildHasher, BuildHasherDefault, DefaultHasher},
    sync::Arc,
    time::Duration,
};

use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::{
    Broker, BrokerError, NewEvent, Published, Result,
    keys::validate_name,
    scripts::{self, Publish},
};

/// Most events one commit takes from the queue (a bigger request is committed alone).
pub const MAX_COMMIT_EVENTS: usize = 1000;
/// Most payload bytes one commit takes from the queue (a bigger request is committed alone):
/// keeps one script call, and the time Redis spends in it, bounded.
pub const MAX_COMMIT_BYTES: usize = 4 << 20;
/// Most events of one PUBLISH script call: a commit's events of one stream are cut into calls
/// of at most this many (on job boundaries; a bigger job is one call), pipelined. Redis spends
/// more per event in a longer call (the call's data outgrows the CPU cache before Redis
/// propagates it: docs/next-steps.md item 105), so a big commit is not sent as one call.
pub const MAX_SCRIPT_EVENTS: usize = 128;
/// Writer tasks sharing the queue of calls of any order: commits in flight at once.
const WRITERS: usize = 2;
/// Writer tasks of calls whose order is kept, each with its own queue (a stream always goes to
/// the same one).
const ORDERED_WRITERS: usize = 2;

/// Whether a call's events must be stored after those of the caller's earlier calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// After every call the same caller queued before with [`Order::Kept`] to the same stream.
    Kept,
    /// Whenever: calls in flight together may be stored in either order.
    Any,
}

/// One queued Publish call.
pub(crate) struct Job {
    stream: String,
    events: Vec<NewEvent>,
    /// Payload bytes of `events`, as counted against the budget and commit size.
    bytes: usize,
    reply: oneshot::Sender<Result<Vec<Published>>>,
    /// The call's share of the byte budget, released when the job is dropped (answered).
    _budget: OwnedSemaphorePermit,
}

/// The queues of Publish calls and the byte budget. Unbounded in count, bounded in bytes by
/// `budget`.
pub(crate) struct Queue {
    /// Calls of any order, drained by [`WRITERS`] writers.
    shared: mpsc::UnboundedSender<Job>,
    /// Calls whose order is kept: one queue per ordered writer.
    ordered: Vec<mpsc::UnboundedSender<Job>>,
    /// Payload bytes that may still be queued or being committed.
    budget: Arc<Semaphore>,
    /// The whole budget, in bytes.
    limit: usize,
}

/// The writers' end of the queue.
struct Receiver {
    rx: mpsc::UnboundedReceiver<Job>,
    /// A job taken off the queue that did not fit the last commit: it starts the next one.
    next: Option<Job>,
}

/// Starts the writer tasks of `broker` and returns the queues they drain.
pub(crate) fn start(broker: &Broker) -> Queue {
    let shared = queue_with_writers(broker, WRITERS);
    let ordered = (0..ORDERED_WRITERS).map(|_| queue_with_writers(broker, 1)).collect();
    let limit = broker.options().max_publish_bytes_in_flight;
    Queue { shared, ordered, budget: Arc::new(Semaphore::new(limit)), limit }
}

/// A queue drained by `writers` writer tasks.
fn queue_with_writers(broker: &Broker, writers: usize) -> mpsc::UnboundedSender<Job> {
    let (tx, rx) = mpsc::unbounded_channel();
    let rx = Arc::new(Mutex::new(Receiver { rx, next: None }));
    for _ in 0..writers {
        tokio::spawn(writer(broker.downgrade(), rx.clone()));
    }
    tx
}

/// Whether a job of `events` events and `bytes` payload bytes fits a commit that already took
/// `taken` (events, bytes).
fn fits(taken: (usize, usize), events: usize, bytes: usize) -> bool {
    taken.0 + events <= MAX_COMMIT_EVENTS && taken.1 + bytes <= MAX_COMMIT_BYTES
}

/// Takes batches off its queue (shared with the queue's other writers), one commit at a time,
/// until the broker is dropped.
async fn writer(broker: crate::WeakBroker, rx: Arc<Mutex<Receiver>>) {
    loop {
        let mut jobs = Vec::new();
        {
            let mut rx = rx.lock().await;
            let first = match rx.next.take() {
                Some(job) => job,
                None => match rx.rx.recv().await {
                    Some(job) => job,
                    None => return,
                },
            };
            let mut taken = (first.events.len(), first.bytes);
            jobs.push(first);
            while let Ok(job) = rx.rx.try_recv() {
                if !fits(taken, job.events.len(), job.bytes) {
                    rx.next = Some(job);
                    break;
                }
                taken = (taken.0 + job.events.len(), taken.1 + job.bytes);
                jobs.push(job);
            }
        }
        let Some(broker) = broker.upgrade() else { return };
        broker.commit(jobs).await;
    }
}

impl Queue {
    /// The queue of a call to `stream` of `order`.
    fn queue_of(&self, stream: &str, order: Order) -> &mpsc::UnboundedSender<Job> {
        match order {
            Order::Any => &self.shared,
            Order::Kept => {
                let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(stream);
                // The remainder is below the number of ordered writers, so it fits usize.
                &self.ordered[(hash % self.ordered.len() as u64) as usize]
            }
        }
    }

    /// Takes `bytes` of the budget, waiting up to `wait` for it (see the module doc).
    async fn reserve(&self, bytes: usize, wait: Duration) -> Result<OwnedSemaphorePermit> {
        let limit = self.limit;
        let too_big = || {
            BrokerError::ResourceExhausted(format!(
                "the publish carries {bytes} bytes of events, more than the {limit} bytes this publisher \
                 holds in flight (max_publish_bytes_in_flight); send fewer or smaller events per call"
            ))
        };
        if bytes > limit {
            return Err(too_big());
        }
        let permits = u32::try_from(bytes).map_err(|_| too_big())?;
        // The usual case, budget free: no timeout future (and no clock read) per call.
        if let Ok(permit) = self.budget.clone().try_acquire_many_owned(permits) {
            return Ok(permit);
        }
        match tokio::time::timeout(wait, self.budget.clone().acquire_many_owned(permits)).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(BrokerError::Unavailable("publisher stopped".into())),
            Err(_) => Err(BrokerError::ResourceExhausted(format!(
                "publisher overloaded: its {limit} bytes of publishes in flight (max_publish_bytes_in_flight) \
                 did not drain within {} ms; retry with backoff",
                wait.as_millis()
            ))),
        }
    }
}

/// A publish queued by [`Broker::enqueue_publish`]: its outcome, once committed.
pub struct PendingPublish(Parts);

impl std::fmt::Debug for PendingPublish {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingPublish").finish_non_exhaustive()
    }
}

/// Where one queued job's outcome arrives.
type Answer = oneshot::Receiver<Result<Vec<Published>>>;

/// The queued parts of one publish: one per partition its events went to.
enum Parts {
    /// Nothing to publish.
    Empty,
    /// All events in one job (a 1-partition stream, or all routed to one partition).
    One(Answer),
    /// Events split over partitions: each part's receiver and the request positions of its events.
    Split {
        /// Events in the request.
        events: usize,
        /// Per partition job: its answer, its partition and the request index of each of its
        /// events.
        parts: Vec<(Answer, u32, Vec<usize>)>,
        /// To forget the stream's cached partition count when a partition is not found (the
        /// stream was deleted, maybe re-created with another count).
        broker: Broker,
        /// The stream published to.
        stream: String,
    },
}

/// Waits for one job's answer.
async fn answer_of(answer: Answer) -> Result<Vec<Published>> {
    answer.await.map_err(|_| BrokerError::Internal("publish writer dropped a call".into()))?
}

impl PendingPublish {
    /// One outcome per event, in order, once the events are stored (see [`Broker::publish`]).
    /// Events split over partitions are answered in request order; if one partition's part
    /// fails as a whole, the call fails (other parts may have been stored: retry, dedup on the
    /// event ids catches them).
    pub async fn outcome(self) -> Result<Vec<Published>> {
        match self.0 {
            Parts::Empty => Ok(Vec::new()),
            Parts::One(answer) => answer_of(answer).await,
            Parts::Split { events, parts, broker, stream } => {
                let mut merged: Vec<Option<Published>> = vec![None; events];
                for (answer, partition, positions) in parts {
                    let outcomes = answer_of(answer).await.inspect_err(|e| {
                        if matches!(e, BrokerError::NotFound(_)) {
                            broker.partition_cache().forget(&stream);
                        }
                    })?;
                    for (i, outcome) in positions.into_iter().zip(outcomes) {
                        merged[i] = Some(Published { partition, ..outcome });
                    }
                }
                merged
                    .into_iter()
                    .map(|o| o.ok_or_else(|| BrokerError::Internal("publish part not answered".into())))
                    .collect()
            }
        }
    }
}

impl Broker {
    /// Appends `events` to `stream` in order, atomically, and returns one outcome per event.
    /// Fails as a whole only if the stream does not exist, Redis is unreachable or out of
    /// memory, or the publish byte budget is exhausted (see the module doc).
    pub async fn publish(&self, stream: &str, events: Vec<NewEvent>) -> Result<Vec<Published>> {
        self.enqueue_publish(stream, events, Order::Any).await?.outcome().await
    }

    /// Queues `events` for `stream` (waiting for byte budget, see the module doc) and returns
    /// once they are queued, before they are stored. With [`Order::Kept`], the events of such
    /// calls to one stream are stored in the order the calls were queued.
    ///
    /// On a partitioned stream each event goes to the partition [`crate::partition::route`]
    /// picks; the parts are queued as jobs of their partition streams and answered together.
    pub async fn enqueue_publish(&self, stream: &str, events: Vec<NewEvent>, order: Order) -> Result<PendingPublish> {
        validate_name("stream", stream)?;
        if events.is_empty() {
            return Ok(PendingPublish(Parts::Empty));
        }
        let partitions = self.cached_partitions(stream).await?;
        if partitions <= 1 {
            return Ok(PendingPublish(Parts::One(self.enqueue_job(stream, events, order).await?)));
        }
        let total = events.len();
        let mut split: Vec<(Vec<NewEvent>, Vec<usize>)> = (0..partitions).map(|_| (Vec::new(), Vec::new())).collect();
        for (i, event) in events.into_iter().enumerate() {
            let part = crate::partition::route(&event.ordering_key, &event.id, partitions) as usize;
            if let Some((evs, positions)) = split.get_mut(part) {
                evs.push(event);
                positions.push(i);
            }
        }
        let mut parts = Vec::new();
        for (part, (evs, positions)) in (0u32..).zip(split) {
            if !evs.is_empty() {
                let name = crate::partition_name(stream, part);
                parts.push((self.enqueue_job(&name, evs, order).await?, part, positions));
            }
        }
        Ok(PendingPublish(Parts::Split { events: total, parts, broker: self.clone(), stream: stream.to_string() }))
    }

    /// Queues one job of `events` for the Redis-level stream `stream` (a stream or a partition).
    async fn enqueue_job(&self, stream: &str, events: Vec<NewEvent>, order: Order) -> Result<Answer> {
        let queue = self.publish_queue();
        let bytes = events.iter().map(|e| e.payload.len()).sum();
        let budget = queue.reserve(bytes, self.options().command_timeout).await?;
        let (reply, answer) = oneshot::channel();
        let job = Job { stream: stream.to_string(), events, bytes, reply, _budget: budget };
        queue.queue_of(stream, order).send(job).map_err(|_| BrokerError::Unavailable("publisher stopped".into()))?;
        Ok(answer)
    }

    /// Stores the events of `jobs`: per stream, PUBLISH calls of at most [`MAX_SCRIPT_EVENTS`]
    /// events (the jobs' events in queue order, a job never split), all pipelined in one round
    /// trip, and answers each job with its share of the results.
    async fn commit(&self, jobs: Vec<Job>) {
        let calls = script_calls(&jobs);
        let inputs: Vec<Publish> = calls
            .iter()
            .map(|(stream, members)| Publish {
                keys: self.keys(),
                stream,
                events: members.iter().flat_map(|&i| &jobs[i].events).collect(),
            })
            .collect();
        let replies = match self.conn().await {
            Ok(mut conn) => scripts::run_batch(&mut conn, &inputs).await,
            Err(e) => Err(e),
        };
        drop(inputs);
        let mut answers: Vec<Option<Result<Vec<Published>>>> = jobs.iter().map(|_| None).collect();
        match replies {
            Ok(replies) => {
                let mut trimmed: Vec<&str> = Vec::new();
                for ((stream, members), reply) in calls.iter().zip(replies) {
                    match reply {
                        Ok((mut outcomes, trim)) => {
                            if trim && !trimmed.contains(stream) {
                                trimmed.push(stream);
                                self.trim_soon(stream);
                            }
                            for &i in members {
                                let rest = outcomes.split_off(jobs[i].events.len());
                                answers[i] = Some(Ok(std::mem::replace(&mut outcomes, rest)));
                            }
                        }
                        Err(e) => members.iter().for_each(|&i| answers[i] = Some(Err(e.clone()))),
                    }
                }
            }
            Err(e) => answers.iter_mut().for_each(|a| *a = Some(Err(e.clone()))),
        }
        for (job, answer) in jobs.into_iter().zip(answers) {
            let answer = answer.unwrap_or_else(|| Err(BrokerError::Internal("publish not answered".into())));
            let _ = job.reply.send(answer);
        }
    }
}

/// The PUBLISH calls of a commit of `jobs`: per stream (in order of first appearance), the
/// indices of its jobs in queue order, cut into runs of at most [`MAX_SCRIPT_EVENTS`] events
/// (a bigger job is a call of its own). The calls of one stream stay in queue order in the
/// pipeline, and Redis runs one connection's commands in order, so they are stored in order.
fn script_calls(jobs: &[Job]) -> Vec<(&str, Vec<usize>)> {
    let mut streams: Vec<(&str, Vec<usize>)> = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        match streams.iter_mut().find(|(s, _)| *s == job.stream) {
            Some((_, members)) => members.push(i),
            None => streams.push((job.stream.as_str(), vec![i])),
        }
    }
    let mut calls: Vec<(&str, Vec<usize>)> = Vec::new();
    for (stream, members) in streams {
        let mut current: (Vec<usize>, usize) = (Vec::new(), 0);
        for i in members {
            let events = jobs[i].events.len();
            if !current.0.is_empty() && current.1 + events > MAX_SCRIPT_EVENTS {
                calls.push((stream, std::mem::take(&mut current.0)));
                current.1 = 0;
            }
            current.0.push(i);
            current.1 += events;
        }
        if !current.0.is_empty() {
            calls.push((stream, current.0));
        }
    }
    calls
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_are_bounded_by_events_and_by_bytes() {
        assert!(fits((0, 0), MAX_COMMIT_EVENTS, MAX_COMMIT_BYTES));
        assert!(fits((999, 1 << 20), 1, 3 << 20));
        assert!(!fits((999, 0), 2, 10), "one event too many");
        assert!(!fits((1, 4 << 20), 1, 1), "one byte too many");
        assert!(!fits((10, 3 << 20), 1, (1 << 20) + 1));
    }

    /// A job of `events` empty events for `stream` (its answer and budget unused).
    fn job(stream: &str, events: usize) -> Job {
        let event = NewEvent::default();
        let budget = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
        Job {
            stream: stream.into(),
            events: vec![event; events],
            bytes: 0,
            reply: oneshot::channel().0,
            _budget: budget,
        }
    }

    #[test]
    fn a_commit_is_cut_into_script_calls_per_stream_on_job_boundaries() {
        let big = MAX_SCRIPT_EVENTS + 1;
        let jobs = [job("a", 100), job("b", 5), job("a", 28), job("a", 1), job("a", big), job("b", 5), job("a", 3)];
        let calls = script_calls(&jobs);
        // Stream a: 100 + 28 fill a call; the next job starts one; the big job is alone.
        let expected = vec![("a", vec![0, 2]), ("a", vec![3]), ("a", vec![4]), ("a", vec![6]), ("b", vec![1, 5])];
        assert_eq!(calls, expected);
        assert_eq!(script_calls(&[]), Vec::<(&str, Vec<usize>)>::new());
    }

    #[tokio::test]
    async fn the_budget_refuses_a_call_larger_than_itself_and_times_out_when_full() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let queue = Queue { shared: tx.clone(), ordered: vec![tx], budget: Arc::new(Semaphore::new(100)), limit: 100 };
        let too_big = queue.reserve(101, Duration::from_secs(60)).await.unwrap_err();
        assert!(matches!(&too_big, BrokerError::ResourceExhausted(m) if m.contains("101 bytes")), "{too_big:?}");
        let held = queue.reserve(60, Duration::ZERO).await.unwrap();
        let fits_beside = queue.reserve(40, Duration::ZERO).await.unwrap();
        drop(fits_beside);
        let waited = queue.reserve(41, Duration::from_millis(1)).await.unwrap_err();
        assert!(matches!(&waited, BrokerError::ResourceExhausted(m) if m.contains("overloaded")), "{waited:?}");
        drop(held);
        assert!(queue.reserve(100, Duration::ZERO).await.is_ok(), "released budget is usable again");
    }
}
