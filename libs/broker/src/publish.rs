//! Publishing, with group commit: concurrent Publish calls are queued and a few writer tasks
//! each take what is queued (up to [`MAX_COMMIT_EVENTS`] events and [`MAX_COMMIT_BYTES`] of
//! payload; a single bigger call is committed alone), run one PUBLISH script per stream for it
//! (the calls' events in queue order), pipelined, and answer every caller. Under load many calls
//! share one round trip and one script call; an idle broker adds no delay (no linger timer).
//!
//! Calls that need their order kept ([`Order::Kept`], a stream of publishes) go to the ordered
//! writers: each stream belongs to one of them (by a hash of its name), so such calls to one
//! stream are committed in the order they were queued. On a single Redis node an ordered
//! writer pipelines its commits: up to [`ORDERED_DEPTH`] are sent on one connection before the
//! first is answered, so Redis runs the next one while the writer answers the last; Redis runs
//! the commands of one connection in the order sent, so the stored order is the queue order.
//! A commit sent is never sent again once a later one was sent: when Redis lost its scripts
//! (NOSCRIPT) the writer waits for every commit in flight and runs again only the calls no
//! later call can have overtaken; the others fail UNAVAILABLE (see [`Broker::enqueue_publish`]).
//! On Redis Cluster (whose connection does not keep order across requests) an ordered writer
//! commits one commit at a time. Other calls ([`Order::Any`], unary Publish) share one queue
//! drained by several writers, so commits of one busy stream overlap (two in flight: Redis
//! never waits for the next one).
//!
//! Memory is bounded by a byte budget ([`crate::BrokerOptions::max_publish_bytes_in_flight`]):
//! a call holds its events' payload bytes of the budget from before it is queued until it is
//! answered. A call waits for budget up to the Redis command timeout and then fails with
//! RESOURCE_EXHAUSTED (back-pressure instead of an ever-growing queue when Redis is slower than
//! the producers); a call larger than the whole budget is refused at once. The budget is fair:
//! calls get it in arrival order.

use std::{
    collections::VecDeque,
    future::Future,
    hash::{BuildHasher, BuildHasherDefault, DefaultHasher},
    pin::Pin,
    sync::Arc,
    task::Poll,
    time::Duration,
};

use futures_util::future::MaybeDone;
use redis::Value;
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::{
    Broker, BrokerError, NewEvent, Published, RedisConn, Result,
    keys::validate_name,
    scripts::{self, Call, Publish, ScriptInput},
};

/// Most events one commit takes from the queue (a bigger request is committed alone).
pub const MAX_COMMIT_EVENTS: usize = 1000;
/// Most payload bytes one commit takes from the queue (a bigger request is committed alone):
/// keeps one script call, and the time Redis spends in it, bounded.
pub const MAX_COMMIT_BYTES: usize = 4 << 20;
/// Writer tasks sharing the queue of calls of any order: commits in flight at once.
const WRITERS: usize = 2;
/// Writer tasks of calls whose order is kept, each with its own queue (a stream always goes to
/// the same one).
const ORDERED_WRITERS: usize = 2;
/// Most commits an ordered writer has sent and not yet answered (on a single Redis node).
pub const ORDERED_DEPTH: usize = 4;

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
    let ordered = (0..ORDERED_WRITERS)
        .map(|_| {
            if broker.is_cluster() {
                return queue_with_writers(broker, 1);
            }
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(ordered_writer(broker.downgrade(), Receiver { rx, next: None }));
            tx
        })
        .collect();
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

impl Receiver {
    /// The jobs of the next commit: the next job (waiting for one), then what else is queued
    /// and fits; `None` once the queue is closed and empty. Cancel-safe: it can only be
    /// cancelled while waiting for the first job.
    async fn take(&mut self) -> Option<Vec<Job>> {
        let first = match self.next.take() {
            Some(job) => job,
            None => self.rx.recv().await?,
        };
        let mut taken = (first.events.len(), first.bytes);
        let mut jobs = vec![first];
        while let Ok(job) = self.rx.try_recv() {
            if !fits(taken, job.events.len(), job.bytes) {
                self.next = Some(job);
                break;
            }
            taken = (taken.0 + job.events.len(), taken.1 + job.bytes);
            jobs.push(job);
        }
        Some(jobs)
    }
}

/// Takes batches off its queue (shared with the queue's other writers), one commit at a time,
/// until the broker is dropped.
async fn writer(broker: crate::WeakBroker, rx: Arc<Mutex<Receiver>>) {
    loop {
        let Some(jobs) = rx.lock().await.take().await else { return };
        let Some(broker) = broker.upgrade() else { return };
        broker.commit(jobs).await;
    }
}

/// The calls of a commit sent on an ordered writer's connection (to run again after a
/// NOSCRIPT), and their replies.
type Reply = (Vec<Call>, Result<Vec<Value>>);

/// A commit on its way: its [`Reply`] once Redis answered.
type Sending = Pin<Box<dyn Future<Output = Reply> + Send>>;

/// A commit an ordered writer sent and has not answered yet.
struct Sent {
    /// Its jobs, in queue order.
    jobs: Vec<Job>,
    /// One group of jobs per script call (per stream), in the order of the calls.
    groups: Vec<Vec<usize>>,
    /// Its reply; polled once when made, which sends it.
    reply: MaybeDone<Sending>,
}

/// An ordered writer on a single Redis node: takes commits off its queue and sends each on its
/// one connection before the earlier ones are answered (at most [`ORDERED_DEPTH`] in flight),
/// then answers them in the order sent; see the module doc. Holds a pooled connection while
/// commits are in flight. Runs until the broker is dropped.
async fn ordered_writer(broker: crate::WeakBroker, mut rx: Receiver) {
    let mut sent: VecDeque<Sent> = VecDeque::new();
    let mut conn: Option<RedisConn> = None;
    let mut open = true;
    while open || !sent.is_empty() {
        tokio::select! {
            biased;
            () = front_replied(&mut sent), if !sent.is_empty() => {
                let Some(broker) = broker.upgrade() else { return };
                let Some(front) = sent.pop_front() else { continue };
                broker.answer_sent(front, &mut sent, &mut conn).await;
            }
            jobs = rx.take(), if open && sent.len() < ORDERED_DEPTH => {
                let Some(jobs) = jobs else {
                    open = false;
                    continue;
                };
                let Some(broker) = broker.upgrade() else { return };
                if let Some(commit) = broker.send_commit(jobs, &mut conn).await {
                    sent.push_back(commit);
                }
            }
        }
        if sent.is_empty() {
            // Back to the pool while idle.
            conn = None;
        }
    }
}

/// Resolves when the oldest commit of `sent` has its reply (never when `sent` is empty).
async fn front_replied(sent: &mut VecDeque<Sent>) {
    std::future::poll_fn(|cx| match sent.front_mut() {
        Some(front) => Pin::new(&mut front.reply).poll(cx),
        None => Poll::Pending,
    })
    .await;
}

/// The reply of a sent commit that has it.
fn take_reply(sent: &mut Sent) -> Reply {
    Pin::new(&mut sent.reply)
        .take_output()
        .unwrap_or_else(|| (Vec::new(), Err(BrokerError::Internal("publish reply taken twice".into()))))
}

/// The jobs of `jobs` grouped by stream, in order of first appearance: one script call each.
fn groups_of(jobs: &[Job]) -> Vec<Vec<usize>> {
    let mut streams: Vec<(&str, Vec<usize>)> = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        match streams.iter_mut().find(|(s, _)| *s == job.stream) {
            Some((_, members)) => members.push(i),
            None => streams.push((job.stream.as_str(), vec![i])),
        }
    }
    streams.into_iter().map(|(_, members)| members).collect()
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

/// What one PUBLISH call returns: an outcome per event, and whether the stream needs a trim.
type PublishReply = (Vec<Published>, bool);

/// The error of a call that got NOSCRIPT while a commit sent after it may have run: running it
/// now could store its events after those of later requests.
fn overtaken() -> BrokerError {
    BrokerError::Unavailable(
        "redis lost its scripts (restart, failover or SCRIPT FLUSH) while later publishes to the stream were in flight; \
         resend"
            .into(),
    )
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
    /// calls to one stream are stored in the order the calls were queued. Such a call that
    /// fails does not hold back the ones queued after it: they are stored and answered as
    /// usual, so the failed call, resent, is stored after them. It failed either before
    /// anything ran (nothing stored: NOSCRIPT while a later call was in flight, out of memory,
    /// the stream gone) or with its reply lost (a timeout, a broken connection: it may have
    /// been stored, in its place; resent, dedup answers it with the first entry ids). A call
    /// answered as stored is never stored after a call queued later.
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

    /// The PUBLISH script's inputs of the jobs of `members` (one stream's, in queue order).
    fn publish_input<'a>(&'a self, jobs: &'a [Job], members: &[usize]) -> Publish<'a> {
        let stream = members.first().map_or("", |&i| jobs[i].stream.as_str());
        Publish { keys: self.keys(), stream, events: members.iter().flat_map(|&i| &jobs[i].events).collect() }
    }

    /// Stores the events of `jobs`: one PUBLISH per stream (the jobs' events in queue order),
    /// pipelined, and answers each job with its share of the results.
    async fn commit(&self, jobs: Vec<Job>) {
        let groups = groups_of(&jobs);
        let inputs: Vec<Publish> = groups.iter().map(|members| self.publish_input(&jobs, members)).collect();
        let replies = match self.conn().await {
            Ok(mut conn) => scripts::run_batch(&mut conn, &inputs).await,
            Err(e) => Err(e),
        };
        drop(inputs);
        self.answer(jobs, &groups, replies);
    }

    /// Sends a commit of `jobs` on `conn` (taken from the pool if `None`) without waiting for
    /// its reply; `None` when no connection could be had (the jobs are answered with that).
    async fn send_commit(&self, jobs: Vec<Job>, conn: &mut Option<RedisConn>) -> Option<Sent> {
        let handle = match conn {
            Some(conn) => conn.share(),
            None => match self.conn().await {
                Ok(new) => conn.insert(new).share(),
                Err(e) => {
                    let groups = groups_of(&jobs);
                    self.answer(jobs, &groups, Err(e));
                    return None;
                }
            },
        };
        let groups = groups_of(&jobs);
        let calls: Vec<Call> = groups.iter().map(|members| self.publish_input(&jobs, members).call()).collect();
        let sending: Sending = Box::pin(async move {
            let mut handle = handle;
            let replies = scripts::send_once(&mut handle, calls.iter()).await;
            (calls, replies)
        });
        let mut reply = MaybeDone::Future(sending);
        // The first poll puts the request on the connection: polling each commit once as it is
        // made sends the commits in the order they were taken off the queue.
        std::future::poll_fn(|cx| {
            let _ = Pin::new(&mut reply).poll(cx);
            Poll::Ready(())
        })
        .await;
        Some(Sent { jobs, groups, reply })
    }

    /// Answers `front`, the oldest commit in flight, which has its reply. After a NOSCRIPT it
    /// first waits for the replies of the commits in flight after it (`later`), runs again the
    /// calls that got NOSCRIPT and have no later call that may have run (sent after them, with
    /// any other reply), fails the others UNAVAILABLE, and answers all of them. Drops `conn` when
    /// the connection failed.
    async fn answer_sent(&self, mut front: Sent, later: &mut VecDeque<Sent>, conn: &mut Option<RedisConn>) {
        let (calls, replies) = take_reply(&mut front);
        let replies = match replies {
            Ok(replies) if !replies.iter().any(scripts::is_noscript) => Ok(replies),
            Ok(replies) => {
                let mut window = vec![(front, calls, Ok(replies))];
                while let Some(mut next) = later.pop_front() {
                    (&mut next.reply).await;
                    let (calls, replies) = take_reply(&mut next);
                    window.push((next, calls, replies));
                }
                return self.answer_after_noscript(window, conn).await;
            }
            Err(e) => {
                *conn = None;
                Err(e)
            }
        };
        let parsed = replies.map(|replies| self.parse_replies(&front.jobs, &front.groups, replies));
        self.answer(front.jobs, &front.groups, parsed);
    }

    /// Each call's reply parsed by the PUBLISH input of its group (a Redis error as the call's
    /// own error).
    fn parse_replies(&self, jobs: &[Job], groups: &[Vec<usize>], replies: Vec<Value>) -> Vec<Result<PublishReply>> {
        groups
            .iter()
            .zip(replies)
            .map(|(members, reply)| match reply {
                Value::ServerError(e) => Err(e.into()),
                reply => self.publish_input(jobs, members).parse(reply),
            })
            .collect()
    }

    /// Answers the commits of `window` (sent in this order, the first one got a NOSCRIPT, none
    /// in flight any more): see [`Broker::answer_sent`].
    async fn answer_after_noscript(
        &self,
        window: Vec<(Sent, Vec<Call>, Result<Vec<Value>>)>,
        conn: &mut Option<RedisConn>,
    ) {
        // Per commit, per call: its reply, or `None` for a call that did not run and may run now.
        let mut replies: Vec<Vec<Option<Result<Value>>>> = Vec::with_capacity(window.len());
        let mut later_may_have_run = false;
        for (sent, _, reply) in window.iter().rev() {
            let own: Vec<Option<Result<Value>>> = match reply {
                Ok(values) => values
                    .iter()
                    .rev()
                    .map(|value| match (scripts::is_noscript(value), later_may_have_run) {
                        (true, false) => None,
                        (true, true) => Some(Err(overtaken())),
                        (false, _) => {
                            later_may_have_run = true;
                            Some(Ok(value.clone()))
                        }
                    })
                    .collect(),
                // Failed as a whole: its calls may have run (a timeout, a broken connection).
                Err(e) => {
                    later_may_have_run = true;
                    sent.groups.iter().map(|_| Some(Err(e.clone()))).collect()
                }
            };
            replies.push(own.into_iter().rev().collect());
        }
        replies.reverse();
        // Nothing else is in flight: the calls that did not run can run now, in the order sent.
        let mut again: Vec<(usize, usize)> = Vec::new();
        let mut rerun: Vec<Call> = Vec::new();
        let mut commits = Vec::with_capacity(window.len());
        for (c, (sent, calls, _)) in window.into_iter().enumerate() {
            for (i, call) in calls.into_iter().enumerate() {
                if matches!(replies[c].get(i), Some(None)) {
                    again.push((c, i));
                    rerun.push(call);
                }
            }
            commits.push(sent);
        }
        if !rerun.is_empty() {
            let ran = match conn.as_mut() {
                Some(conn) => scripts::run_calls(conn, &rerun).await,
                None => Err(BrokerError::Unavailable("redis connection lost".into())),
            };
            let ran: Vec<Result<Value>> = match ran {
                Ok(values) => values,
                Err(e) => {
                    *conn = None;
                    rerun.iter().map(|_| Err(e.clone())).collect()
                }
            };
            for ((c, i), reply) in again.into_iter().zip(ran) {
                replies[c][i] = Some(reply);
            }
        }
        for (sent, own) in commits.into_iter().zip(replies) {
            let parsed = own
                .into_iter()
                .zip(&sent.groups)
                .map(|(reply, members)| match reply {
                    Some(Ok(Value::ServerError(e))) => Err(e.into()),
                    Some(Ok(value)) => self.publish_input(&sent.jobs, members).parse(value),
                    Some(Err(e)) => Err(e),
                    None => Err(BrokerError::Internal("publish call not run".into())),
                })
                .collect();
            self.answer(sent.jobs, &sent.groups, Ok(parsed));
        }
    }

    /// Answers each job of `jobs` with its share of `replies` (one per group of `groups`), or
    /// with the error of its group's call or of the whole commit.
    fn answer(&self, jobs: Vec<Job>, groups: &[Vec<usize>], replies: Result<Vec<Result<PublishReply>>>) {
        let mut answers: Vec<Option<Result<Vec<Published>>>> = jobs.iter().map(|_| None).collect();
        match replies {
            Ok(replies) => {
                for (members, reply) in groups.iter().zip(replies) {
                    match reply {
                        Ok((mut outcomes, trim)) => {
                            if let (true, Some(&first)) = (trim, members.first()) {
                                self.trim_soon(&jobs[first].stream);
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
