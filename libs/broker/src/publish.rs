//! Publishing, with group commit: concurrent Publish calls are queued and a few writer tasks
//! each take what is queued (up to [`MAX_COMMIT_EVENTS`] events and [`MAX_COMMIT_BYTES`] of
//! payload; a single bigger call is committed alone), run PUBLISH scripts per stream for it
//! (the calls' events in queue order, cut into script calls of at most [`MAX_SCRIPT_EVENTS`]
//! events on call boundaries), all pipelined in one round trip, and answer every caller. Under load many calls
//! share one round trip and one script call; an idle broker adds no delay (no linger timer: a
//! writer that found a small call alone yields once, so the rest of a burst already on the
//! sockets joins it).
//!
//! Calls that need their order kept ([`Order::Kept`], a stream of publishes) go to the ordered
//! writers: each stream belongs to one of them (by a hash of its name), so such calls to one
//! stream are committed one commit after the other, in the order they were queued. An ordered
//! writer has one commit in Redis at a time, but keeps Redis busy: while a commit runs, it takes
//! the calls queued meanwhile and encodes their script calls as they arrive; when the reply
//! comes it sends that next commit at once, and only then parses the reply and answers the
//! callers (a commit is sent only after the one before it has run completely, its NOSCRIPT
//! re-run included, so the failure semantics are those of one commit at a time). Other calls
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
    future::Future,
    hash::{BuildHasher, BuildHasherDefault, DefaultHasher},
    pin::Pin,
    sync::Arc,
    task::Poll,
    time::Duration,
};

use redis::Value;
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::{
    Broker, BrokerError, Keys, NewEvent, Published, Result,
    keys::validate_name,
    scripts::{self, Call},
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

/// The writers' end of a queue.
struct Receiver {
    rx: mpsc::UnboundedReceiver<Job>,
    /// A job taken off the queue that did not fit the last commit: it starts the next one.
    next: Option<Job>,
}

impl Receiver {
    /// The next job: the one the last commit had no room for, else the next queued (waiting
    /// for one); `None` once the queue is closed.
    async fn recv(&mut self) -> Option<Job> {
        match self.next.take() {
            Some(job) => Some(job),
            None => self.rx.recv().await,
        }
    }

    /// `job`, counted into `taken` (the events and bytes a commit took so far), if it fits that
    /// commit (the first job of a commit always does); else `None`, the job kept to start the
    /// next commit.
    fn admit(&mut self, taken: &mut (usize, usize), job: Job) -> Option<Job> {
        let (events, bytes) = (job.events.len(), job.bytes);
        if taken.0 > 0 && !fits(*taken, events, bytes) {
            self.next = Some(job);
            return None;
        }
        *taken = (taken.0 + events, taken.1 + bytes);
        Some(job)
    }

    /// Whether `first`, just taken, is a small call with nothing queued behind it. Its writer
    /// then yields once before taking the rest: tokio polls its I/O driver before it resumes a
    /// yielded task, so calls of the same burst still unread on their sockets are decoded and
    /// queued first and share the commit and its script call (fewer commits at low rates; no
    /// timer, so an idle broker adds no delay). Not for a call too big to share a script call
    /// with another like it, nor when others already wait: there a yield only delays the
    /// commit (docs/next-steps.md item 117).
    fn alone_and_small(&self, first: &Job) -> bool {
        2 * first.events.len() <= MAX_SCRIPT_EVENTS && self.rx.is_empty()
    }

    /// The next queued job if there is one and it fits (see [`Receiver::admit`]); never waits.
    fn ready(&mut self, taken: &mut (usize, usize)) -> Option<Job> {
        if self.next.is_some() {
            return None;
        }
        let job = self.rx.try_recv().ok()?;
        self.admit(taken, job)
    }
}

/// Starts the writer tasks of `broker` and returns the queues they drain.
pub(crate) fn start(broker: &Broker) -> Queue {
    let (shared, rx) = mpsc::unbounded_channel();
    let rx = Arc::new(Mutex::new(Receiver { rx, next: None }));
    for _ in 0..WRITERS {
        tokio::spawn(writer(broker.downgrade(), rx.clone()));
    }
    let ordered = (0..ORDERED_WRITERS)
        .map(|_| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(ordered_writer(broker.downgrade(), Receiver { rx, next: None }));
            tx
        })
        .collect();
    let limit = broker.options().max_publish_bytes_in_flight;
    Queue { shared, ordered, budget: Arc::new(Semaphore::new(limit)), limit }
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
            let Some(first) = rx.recv().await else { return };
            if rx.alone_and_small(&first) {
                tokio::task::yield_now().await;
            }
            let mut taken = (0, 0);
            jobs.extend(rx.admit(&mut taken, first));
            while let Some(job) = rx.ready(&mut taken) {
                jobs.push(job);
            }
        }
        let Some(broker) = broker.upgrade() else { return };
        let mut commit = Commit::default();
        for job in jobs {
            commit.push(broker.keys(), job);
        }
        let replies = commit.send(&broker).await;
        commit.answer(&broker, replies);
    }
}

/// The replies of a commit's script calls (see [`scripts::run_calls`]).
type Replies = Result<Vec<Result<Value>>>;

/// The replies of a commit sent to Redis, once they come.
type Running = Pin<Box<dyn Future<Output = Replies> + Send>>;

/// A commit in Redis and the future of its replies.
type Flight = (Commit, Running);

/// Takes commits off its own queue until the broker is dropped: one commit in Redis at a time,
/// the next one gathered and encoded meanwhile, sent when the reply comes and before the
/// callers of the one that ran are answered (see the module doc).
async fn ordered_writer(weak: crate::WeakBroker, mut rx: Receiver) {
    loop {
        // Idle: nothing in Redis; holds no broker while it waits.
        let Some(first) = rx.recv().await else { return };
        let Some(broker) = weak.upgrade() else { return };
        let (mut commit, mut taken) = (Commit::default(), (0, 0));
        if let Some(job) = rx.admit(&mut taken, first) {
            commit.push(broker.keys(), job);
        }
        gather_ready(&mut rx, &mut commit, &mut taken, broker.keys());
        let replies: Running = Box::pin(commit.send(&broker));
        let mut flight: Option<Flight> = Some((commit, replies));
        while let Some((current, replies)) = flight.take() {
            let (next, replies) = gather_while_running(&mut rx, broker.keys(), replies).await;
            if !next.jobs.is_empty() {
                flight = Some(send_now(&broker, next).await);
            }
            current.answer(&broker, replies);
        }
    }
}

/// Adds the jobs queued now to `commit` while they fit (`taken` counts them).
fn gather_ready(rx: &mut Receiver, commit: &mut Commit, taken: &mut (usize, usize), keys: &Keys) {
    while let Some(job) = rx.ready(taken) {
        commit.push(keys, job);
    }
}

/// Waits for `replies` (a commit in Redis) and meanwhile builds the next commit of the jobs
/// queued until then (as many as fit): returns that commit and the replies.
async fn gather_while_running(rx: &mut Receiver, keys: &Keys, mut replies: Running) -> (Commit, Replies) {
    let (mut next, mut taken, mut open) = (Commit::default(), (0, 0), true);
    let replies = loop {
        tokio::select! {
            biased;
            replies = &mut replies => break replies,
            job = rx.recv(), if open && rx.next.is_none() => match job {
                Some(job) => {
                    if let Some(job) = rx.admit(&mut taken, job) {
                        next.push(keys, job);
                    }
                    gather_ready(rx, &mut next, &mut taken, keys);
                }
                None => open = false,
            },
        }
    };
    // Jobs queued while the reply was read go along too.
    gather_ready(rx, &mut next, &mut taken, keys);
    (next, replies)
}

/// Sends `commit` (polls its future once, which hands its pipeline to the connection) and
/// yields once so the connection's task writes it to Redis before the caller goes on.
async fn send_now(broker: &Broker, mut commit: Commit) -> Flight {
    let mut replies: Running = Box::pin(commit.send(broker));
    let polled = std::future::poll_fn(|cx| Poll::Ready(replies.as_mut().poll(cx))).await;
    if let Poll::Ready(done) = polled {
        return (commit, Box::pin(std::future::ready(done)));
    }
    tokio::task::yield_now().await;
    (commit, replies)
}

/// One commit: its jobs, in queue order, and their PUBLISH script calls, built as the jobs are
/// added: per stream, the jobs' events in queue order cut into calls of at most
/// [`MAX_SCRIPT_EVENTS`] events on job boundaries (a bigger job is a call of its own). The
/// calls of one stream stay in queue order in the pipeline, and Redis runs one connection's
/// commands in order, so they are stored in order.
#[derive(Default)]
struct Commit {
    jobs: Vec<Job>,
    /// Per script call: the indices of its jobs in `jobs` (never empty), and its events.
    runs: Vec<(Vec<usize>, usize)>,
    /// The script calls, one per run; taken out when the commit is sent.
    calls: Vec<Call>,
}

impl Commit {
    /// Adds `job`: its events join the last call of its stream if that stays within
    /// [`MAX_SCRIPT_EVENTS`] events, else start a new call.
    fn push(&mut self, keys: &Keys, job: Job) {
        let events = job.events.len();
        let jobs = &self.jobs;
        let last =
            self.runs.iter().rposition(|(members, _)| members.first().is_some_and(|&i| jobs[i].stream == job.stream));
        let run = match last.filter(|&r| self.runs[r].1 + events <= MAX_SCRIPT_EVENTS) {
            Some(r) => r,
            None => {
                self.calls.push(scripts::publish_call(keys, &job.stream, job.events.iter()));
                self.runs.push((Vec::new(), 0));
                self.runs.len() - 1
            }
        };
        for event in &job.events {
            scripts::push_publish_event(&mut self.calls[run], event);
        }
        self.runs[run].0.push(self.jobs.len());
        self.runs[run].1 += events;
        self.jobs.push(job);
    }

    /// Sends the commit's calls, all pipelined in one round trip on one connection (see
    /// [`scripts::run_calls`]); the future owns them, so the commit can be answered while the
    /// next one runs.
    fn send(&mut self, broker: &Broker) -> impl Future<Output = Replies> + Send + 'static {
        let (broker, calls) = (broker.clone(), std::mem::take(&mut self.calls));
        async move {
            let mut conn = broker.conn().await?;
            scripts::run_calls(&mut conn, &calls).await
        }
    }

    /// Answers each job with its share of `replies`, the replies of its calls.
    fn answer(self, broker: &Broker, replies: Replies) {
        let mut answers: Vec<Option<Result<Vec<Published>>>> = self.jobs.iter().map(|_| None).collect();
        match replies {
            Ok(replies) => {
                let mut trimmed: Vec<&str> = Vec::new();
                for ((members, events), reply) in self.runs.iter().zip(replies) {
                    let Some(stream) = members.first().map(|&i| self.jobs[i].stream.as_str()) else { continue };
                    match reply.and_then(|r| scripts::parse_publish(stream, *events, r)) {
                        Ok((mut outcomes, trim)) => {
                            if trim && !trimmed.contains(&stream) {
                                trimmed.push(stream);
                                broker.trim_soon(stream);
                            }
                            for &i in members {
                                let rest = outcomes.split_off(self.jobs[i].events.len());
                                answers[i] = Some(Ok(std::mem::replace(&mut outcomes, rest)));
                            }
                        }
                        Err(e) => members.iter().for_each(|&i| answers[i] = Some(Err(e.clone()))),
                    }
                }
            }
            Err(e) => answers.iter_mut().for_each(|a| *a = Some(Err(e.clone()))),
        }
        for (job, answer) in self.jobs.into_iter().zip(answers) {
            let answer = answer.unwrap_or_else(|| Err(BrokerError::Internal("publish not answered".into())));
            let _ = job.reply.send(answer);
        }
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
        let keys = Keys::new("ef");
        let big = MAX_SCRIPT_EVENTS + 1;
        let mut commit = Commit::default();
        for (stream, events) in [("a", 100), ("b", 5), ("a", 28), ("a", 1), ("a", big), ("b", 5), ("a", 3)] {
            commit.push(&keys, job(stream, events));
        }
        // Stream a: 100 + 28 fill a call; the next job starts one; the big job is alone; each
        // job's events went into its call (five arguments per event).
        let expected = vec![(vec![0, 2], 128), (vec![1, 5], 10), (vec![3], 1), (vec![4], big), (vec![6], 3)];
        assert_eq!(commit.runs, expected);
        let args: Vec<usize> = commit.calls.iter().map(Call::arg_count).collect();
        assert_eq!(args, expected.iter().map(|(_, events)| 5 * events).collect::<Vec<_>>());
    }

    #[test]
    fn a_commit_takes_jobs_while_they_fit_and_keeps_the_first_that_does_not_for_the_next() {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut rx = Receiver { rx, next: None };
        for events in [MAX_COMMIT_EVENTS - 10, 10, 1, 2] {
            tx.send(job("a", events)).unwrap();
        }
        let mut taken = (0, 0);
        let took: Vec<usize> = std::iter::from_fn(|| rx.ready(&mut taken)).map(|j| j.events.len()).collect();
        assert_eq!(took, vec![MAX_COMMIT_EVENTS - 10, 10], "the commit is full");
        assert_eq!(rx.next.as_ref().map(|j| j.events.len()), Some(1), "kept for the next commit");
        let mut taken = (0, 0);
        let took: Vec<usize> = std::iter::from_fn(|| rx.ready(&mut taken)).map(|j| j.events.len()).collect();
        assert_eq!(took, Vec::<usize>::new(), "ready never takes the kept job: recv does");
        let first = futures_util::FutureExt::now_or_never(rx.recv()).flatten().unwrap();
        assert_eq!(rx.admit(&mut taken, first).map(|j| j.events.len()), Some(1));
        assert_eq!(rx.ready(&mut taken).map(|j| j.events.len()), Some(2));
        let huge = rx.admit(&mut (0, 0), job("a", MAX_COMMIT_EVENTS + 1));
        assert!(huge.is_some(), "a job bigger than a commit is a commit of its own");
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
