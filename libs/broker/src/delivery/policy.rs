//! What a delivery session does next, decided without I/O: flow control (count and bytes),
//! breaker gating, the schedules of config refresh, reclaim and consumer reaping, the order and
//! size of reads, leases and retry backoffs, and what to wait for when nothing came.
//!
//! The session loop ([`crate::session`]) asks [`DeliveryPolicy`] for a decision, has the Redis
//! fetcher ([`super::fetcher`]) carry it out, and reports what came back (entry sizes, ids left
//! in the backlog, settlements seen). Time comes in as `now` arguments read from an injectable
//! [`super::Clock`], so the unit tests below move time instead of waiting for it.
//!
//! One batch goes: refresh the config if [`Timing::config_refresh`] passed; free what
//! settlements in this process handed over ([`DeliveryPolicy::settled_here`]); if flow control
//! leaves no room, wait for a settlement ([`Wait::Settlement`]) and recount unless handed-over
//! settlements freed room ([`DeliveryPolicy::recount_due`]); ask the breaker and
//! [`DeliveryPolicy::gate`] its permit; then [`DeliveryPolicy::start_fetch`] (at most a
//! quarter of the window per batch, half when ordered, so reads overlap the client's work) and
//! [`DeliveryPolicy::next_read`] until it says `None`: the backlog first, then (when the
//! subscription's [`Upkeep`] gives this fetch the turn: once per [`Timing::reclaim_interval`]
//! among all its sessions in the process) due entries of the stream and of the redrive stream
//! and new requeued dead letters, then (every [`Timing::reap_interval`]) reaping, then new
//! entries of the stream. When nothing came, [`DeliveryPolicy::wait_when_empty`] says what to
//! wait for: new entries for up to [`Timing::block`], shortened by the session's own spread
//! ([`DeliveryPolicy::spread_waits`]) so sessions opened together do not wake together.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use super::upkeep::Upkeep;
use crate::{BrokerError, BrokerOptions, Result, Source, SubscriptionConfig, breaker::Permit};

/// Default `max_messages` when the client asks for 0.
pub const DEFAULT_MAX_OUTSTANDING: usize = 100;
/// Into how many batches a session cuts its message window by default (see
/// [`FlowControl::batch_limit`]).
pub const DEFAULT_BATCHES: usize = 4;
/// Largest `max_messages` a session accepts.
pub const MAX_OUTSTANDING_LIMIT: usize = 10_000;
/// Most payload bytes one batch reads when the client set no byte limit.
pub const MAX_READ_BYTES: usize = 4 << 20;
/// Most entries one read takes: bounds the time Redis spends in one read script and the size
/// of its reply, so a read of small events stays well inside the command timeout (a reply that
/// times out leaves its entries pending under the session until it resyncs).
pub const MAX_READ_COUNT: usize = 1000;
/// The payload size a session assumes before it has seen any (sizes its first read).
const FIRST_SIZE_GUESS: usize = 256 << 10;
/// How often a session deletes consumers left behind by crashed replicas.
pub const REAP_INTERVAL: Duration = Duration::from_secs(60);
/// Least idle time of a consumer that is reaped (it must also be idle [`REAP_DEADLINES`] ack
/// deadlines): long enough that no live session, however slow its client, is ever reaped.
pub const REAP_MIN_IDLE: Duration = Duration::from_secs(300);
/// A reaped consumer has been idle at least this many ack deadlines.
pub const REAP_DEADLINES: u32 = 3;
/// How often a session re-reads its subscription's settings.
pub const CONFIG_REFRESH: Duration = Duration::from_secs(2);
/// Most an idle wait is shortened by a session's spread ([`DeliveryPolicy::spread_waits`]):
/// a quarter of [`Timing::block`].
const WAIT_SPREAD: f64 = 0.25;
/// Shortest pause while the breaker is open (its reported wait may be 0 at the edge).
const MIN_BREAKER_PAUSE: Duration = Duration::from_millis(10);

/// Flow control of one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowControl {
    /// Most unsettled deliveries at once.
    pub max_messages: usize,
    /// Most unsettled payload bytes at once; 0 = no byte limit. One event is always delivered.
    pub max_bytes: usize,
    /// Into how many batches the message window is cut ([`FlowControl::batch_limit`]): more
    /// batches in flight overlap reading with the consumer's work, fewer make larger batches
    /// (a sink that stores each batch in one statement sets its own, [`FlowControl::in_batches`]).
    pub batches: usize,
}

impl Default for FlowControl {
    fn default() -> Self {
        Self { max_messages: DEFAULT_MAX_OUTSTANDING, max_bytes: 0, batches: DEFAULT_BATCHES }
    }
}

impl FlowControl {
    /// These limits shared by `parts` sessions (the partitions of one Subscribe call): each
    /// gets its share, rounded up (so the call as a whole may hold up to `parts - 1` more). The
    /// sessions' reads already overlap one another, so each cuts its share into the call's
    /// batches spread over the parts, but at least two (halves, as before next-steps 116) and
    /// never more than the call's.
    pub fn split(self, parts: u32) -> Self {
        let parts = usize::try_from(parts.max(1)).unwrap_or(1);
        Self {
            max_messages: self.max_messages.div_ceil(parts),
            max_bytes: self.max_bytes.div_ceil(parts),
            batches: self.batches.div_ceil(parts).max(2).min(self.batches),
        }
    }

    /// Checks the limits and applies the default for 0 messages.
    pub fn new(max_messages: i64, max_bytes: i64) -> Result<Self> {
        let max_messages = match usize::try_from(max_messages) {
            Ok(0) => DEFAULT_MAX_OUTSTANDING,
            Ok(n) if n <= MAX_OUTSTANDING_LIMIT => n,
            _ => {
                return Err(BrokerError::invalid(
                    "max_outstanding_messages",
                    format!("must be 0 to {MAX_OUTSTANDING_LIMIT}"),
                ));
            }
        };
        let max_bytes = usize::try_from(max_bytes)
            .map_err(|_| BrokerError::invalid("max_outstanding_bytes", "must not be negative"))?;
        Ok(Self { max_messages, max_bytes, batches: DEFAULT_BATCHES })
    }

    /// These limits with the window cut into `batches` batches (at least one).
    pub fn in_batches(self, batches: usize) -> Self {
        Self { batches: batches.max(1), ..self }
    }

    /// These limits for a subscription that is `ordered` or not: an ordered one takes at most
    /// two batches, since each of its fetches runs the ordering gate's scripts, whose cost is
    /// per call, so fewer, larger batches do better there (next-steps 116).
    pub fn ordered(self, ordered: bool) -> Self {
        if ordered { self.in_batches(self.batches.min(2)) } else { self }
    }

    /// Most entries one batch takes (at least one): the message window's share of one of
    /// [`FlowControl::batches`] (a quarter by default). A session that took its whole window at
    /// once could read again only after the client had acknowledged all of it (stop-and-wait);
    /// with quarters, it reads the next while the client still works on (and the broker still
    /// settles) the ones before.
    pub fn batch_limit(&self) -> usize {
        self.max_messages.div_ceil(self.batches.max(1)).max(1)
    }

    /// Bytes one read may bring with `outstanding` payload bytes unsettled.
    fn read_budget(&self, outstanding: usize) -> usize {
        if self.max_bytes == 0 { MAX_READ_BYTES } else { self.max_bytes.saturating_sub(outstanding) }
    }
}

/// The intervals and waits a session schedules by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How often the subscription's settings are re-read (an update reaches open sessions).
    pub config_refresh: Duration,
    /// How often due retries and expired deliveries are claimed ([`BrokerOptions::reclaim_interval`]).
    pub reclaim_interval: Duration,
    /// How often consumers left behind by crashed replicas are reaped.
    pub reap_interval: Duration,
    /// Least idle time of a reaped consumer (besides [`REAP_DEADLINES`] ack deadlines).
    pub reap_min_idle: Duration,
    /// Longest wait for a settlement of another replica at the flow-control limit
    /// ([`BrokerOptions::capacity_poll`]).
    pub capacity_poll: Duration,
    /// Longest wait for new entries, and for an open breaker ([`BrokerOptions::block`]).
    pub block: Duration,
}

impl Timing {
    /// The production schedule with the broker's tunables.
    pub fn new(options: &BrokerOptions) -> Self {
        Self {
            config_refresh: CONFIG_REFRESH,
            reclaim_interval: options.reclaim_interval,
            reap_interval: REAP_INTERVAL,
            reap_min_idle: REAP_MIN_IDLE,
            capacity_poll: options.capacity_poll,
            block: options.block,
        }
    }
}

/// What the breaker lets a batch do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Fetch up to this many deliveries.
    Deliver(usize),
    /// Deliver nothing; pause this long, then end the batch empty.
    Pause(Duration),
}

/// One read the fetcher carries out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// Take backlog entries `ids` (all of one source) within `budget` bytes.
    Backlog {
        /// Where they are pending.
        source: Source,
        /// Their ids, from the front of the backlog.
        ids: Vec<String>,
        /// Payload bytes they may bring.
        budget: usize,
        /// Take the first whatever its size (nothing is outstanding).
        force_one: bool,
    },
    /// Claim up to `count` due retries and expired deliveries of `source`.
    Claim {
        /// Stream or redrive stream.
        source: Source,
        /// Most entries to claim.
        count: usize,
    },
    /// Read up to `count` new entries of `source` within `budget` bytes.
    New {
        /// Stream or redrive stream.
        source: Source,
        /// Most entries to read.
        count: usize,
        /// Payload bytes they may bring.
        budget: usize,
        /// Take the first whatever its size (nothing is outstanding).
        force_one: bool,
    },
    /// Delete the subscription's consumers idle longer than `idle` with nothing pending.
    Reap {
        /// Least idle time of a reaped consumer.
        idle: Duration,
    },
}

/// What a session waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    /// Block up to this long on the session's own reader for a new entry of the stream.
    BlockingRead(Duration),
    /// Wait up to `block` for the watcher to report an entry of the stream after `after`.
    Watch {
        /// The stream's last entry id when the session found nothing new.
        after: String,
        /// Longest wait.
        block: Duration,
    },
    /// Wait for a settlement, or `poll` for one made through another replica, then recount.
    Settlement(Duration),
    /// Nothing to wait for: end the batch.
    Nothing,
}

/// Steps of one fetch, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Entries read earlier that did not fit then.
    Backlog,
    /// Due retries and expired deliveries of one source (reclaiming fetches only).
    Claim(Source),
    /// New requeued dead letters of the redrive stream (reclaiming fetches only).
    Requeued,
    /// Consumers of crashed replicas (when due).
    Reap,
    /// New entries of the stream (when no backlog waits).
    New,
    /// Nothing more this fetch.
    Done,
}

/// One fetch in progress: what it may still take, and which step comes next.
#[derive(Debug)]
pub struct Fetch {
    /// Entries it may still take.
    room: usize,
    /// Payload bytes it may still take (one entry is taken whatever its size while none is).
    budget: usize,
    /// Entries taken so far.
    taken: usize,
    /// The next step.
    step: Step,
    /// The step of the last read handed out.
    issued: Step,
    /// When the fetch started.
    now: Instant,
    /// The subscription's ack deadline (sizes the idle time of reaped consumers).
    ack_deadline: Duration,
    /// Whether this fetch claims whatever the subscription's turn says (see `reclaim_next`).
    forced: bool,
    /// Whether this fetch claims due entries and reads requeued ones: asked of the
    /// subscription's [`Upkeep`] at its first claim step (`None` before).
    reclaim: Option<bool>,
    /// The stream's last entry id when the new-entry read found nothing new.
    idle_after: Option<String>,
}

impl Fetch {
    /// Whether it may take more.
    fn open(&self) -> bool {
        self.room > 0 && (self.budget > 0 || self.taken == 0)
    }

    /// Ends the fetch early (a step failed after entries were taken: deliver those).
    pub fn cut_short(&mut self) {
        self.step = Step::Done;
        self.idle_after = None;
    }
}

/// The decisions of one session; see the module doc.
#[derive(Debug)]
pub struct DeliveryPolicy {
    /// The client's flow control.
    flow: FlowControl,
    /// The schedule.
    timing: Timing,
    /// Unsettled deliveries of this session: (source, entry id) -> payload bytes, attempt.
    outstanding: HashMap<(Source, String), (usize, u32)>,
    /// Sum of `outstanding` values.
    outstanding_bytes: usize,
    /// Running payload size average, to size the count of reads under a byte budget.
    avg_bytes: usize,
    /// Whether `avg_bytes` comes from real sizes yet (else it is a guess).
    sized: bool,
    /// Entries this session read (they are in its pending list) but did not take because they
    /// did not fit the byte budget; taken first on later fetches.
    backlog: VecDeque<(Source, String)>,
    /// When the subscription's settings were last read.
    config_read: Instant,
    /// When the outstanding deliveries were last recounted from the pending lists (or the
    /// session opened).
    recounted: Instant,
    /// The reclaim and reap schedule the subscription's sessions in this process share.
    upkeep: Arc<Upkeep>,
    /// Whether the next fetch claims whatever the shared schedule says (the session's first
    /// fetch, and any after [`DeliveryPolicy::reclaim_next`]).
    force_reclaim: bool,
    /// How much shorter than [`Timing::block`] this session's idle waits are.
    wait_cut: Duration,
}

impl DeliveryPolicy {
    /// The policy of a session opened at `now` (its settings just read), sharing the
    /// subscription's `upkeep` with its other sessions in this process.
    pub fn new(flow: FlowControl, timing: Timing, upkeep: Arc<Upkeep>, now: Instant) -> Self {
        Self {
            flow,
            timing,
            outstanding: HashMap::new(),
            outstanding_bytes: 0,
            avg_bytes: FIRST_SIZE_GUESS,
            sized: false,
            backlog: VecDeque::new(),
            config_read: now,
            recounted: now,
            upkeep,
            force_reclaim: true,
            wait_cut: Duration::ZERO,
        }
    }

    /// Shortens this session's idle waits by `spread` (in [0, 1)) of a quarter of the block
    /// time, so sessions opened together (their waits time out together) drift apart.
    pub fn spread_waits(mut self, spread: f64) -> Self {
        self.wait_cut = self.timing.block.mul_f64(spread.clamp(0.0, 1.0) * WAIT_SPREAD);
        self
    }

    /// Whether the subscription's settings are due to be re-read.
    pub fn config_due(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.config_read) >= self.timing.config_refresh
    }

    /// Notes that the settings were read at `now`.
    pub fn config_refreshed(&mut self, now: Instant) {
        self.config_read = now;
    }

    /// How many more deliveries flow control allows now.
    pub fn room(&self) -> usize {
        let by_count = self.flow.max_messages.saturating_sub(self.outstanding.len());
        if self.flow.max_bytes == 0 {
            return by_count;
        }
        if self.outstanding_bytes >= self.flow.max_bytes {
            return usize::from(self.outstanding.is_empty());
        }
        let by_bytes = (self.flow.max_bytes - self.outstanding_bytes) / self.avg_bytes.max(1);
        // One event always fits when nothing is outstanding; otherwise the byte budget rules
        // (the read itself takes only entries that fit, see READ_NEW).
        by_count.min(if self.outstanding.is_empty() { by_bytes.max(1) } else { by_bytes })
    }

    /// What to wait for at the flow-control limit.
    pub fn wait_for_room(&self) -> Wait {
        Wait::Settlement(self.timing.capacity_poll)
    }

    /// Whether a delivery whose pending entry has been idle `idle` still holds its lease (and
    /// so counts against flow control): its ack deadline has not passed. An expired delivery
    /// is due for redelivery, so a client that ignores events cannot stall its own session.
    pub fn lease_held(idle: Duration, ack_deadline: Duration) -> bool {
        idle < ack_deadline
    }

    /// Keeps only the outstanding deliveries still leased to this session (`still`, from its
    /// pending lists, read at `now`); the others were settled, here or through another replica,
    /// or expired.
    pub fn recount(&mut self, still: &HashSet<(Source, String)>, now: Instant) {
        self.outstanding.retain(|key, _| still.contains(key));
        self.outstanding_bytes = self.outstanding.values().map(|(size, _)| size).sum();
        self.recounted = now;
    }

    /// Whether a wait for room must recount from the pending lists although settlements in
    /// this process freed room: once per [`Timing::capacity_poll`], for what the process cannot
    /// see (settlements through other replicas, expired leases).
    pub fn recount_due(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.recounted) >= self.timing.capacity_poll
    }

    /// Frees the deliveries settled in this process ([`super::handoff`]): an entry that left
    /// the pending list for good whatever attempt is counted, a nacked one only while the
    /// nacked attempt is (the session may have claimed it again since). Returns how many.
    pub fn settled_here(&mut self, handoffs: Vec<super::handoff::Handoff>) -> usize {
        let mut freed = 0;
        for handoff in handoffs {
            let key = (handoff.source, handoff.entry_id);
            let Some(&(size, attempt)) = self.outstanding.get(&key) else { continue };
            if handoff.attempt.is_none_or(|settled| settled == attempt) {
                self.outstanding.remove(&key);
                self.outstanding_bytes -= size;
                freed += 1;
            }
        }
        freed
    }

    /// Counts a delivery (its `attempt`) against flow control.
    pub fn delivered(&mut self, source: Source, entry_id: &str, size: usize, attempt: u32) {
        match self.outstanding.insert((source, entry_id.to_string()), (size, attempt)) {
            Some((before, _)) => self.outstanding_bytes = self.outstanding_bytes - before + size,
            None => self.outstanding_bytes += size,
        }
    }

    /// Unsettled deliveries: count and payload bytes.
    pub fn outstanding(&self) -> (usize, usize) {
        (self.outstanding.len(), self.outstanding_bytes)
    }

    /// Gates a batch by the breaker's permit: deliver what it allows, or pause while it is open
    /// (until it half-opens, at least `MIN_BREAKER_PAUSE`, at most `block` so the caller can
    /// check for cancellation).
    pub fn gate(&self, permit: &Permit) -> Gate {
        if permit.allowed == 0 {
            Gate::Pause(permit.retry_in.clamp(MIN_BREAKER_PAUSE, self.timing.block.max(MIN_BREAKER_PAUSE)))
        } else {
            Gate::Deliver(permit.allowed)
        }
    }

    /// Half-open probes a batch was allowed but did not use, to hand back.
    pub fn unused_probes(permit: &Permit, delivered: usize) -> usize {
        match permit.state {
            crate::BreakerState::HalfOpen => permit.allowed.saturating_sub(delivered),
            _ => 0,
        }
    }

    /// The retry backoff after each failed attempt, 1 to max attempts, in ms (what claiming
    /// parks an expired delivery for), with one jitter factor in [0, 1).
    pub fn backoffs_ms(config: &SubscriptionConfig, jitter: f64) -> Vec<u64> {
        (1..=config.max_delivery_attempts)
            .map(|attempt| u64::try_from(config.backoff(attempt, jitter).as_millis()).unwrap_or(u64::MAX))
            .collect()
    }

    /// Makes the next fetch reclaim whatever the interval says: an ordered subscription's
    /// entries become due when the entry before them of their key is settled, and its sessions
    /// claim them at once rather than one reclaim interval later.
    pub fn reclaim_next(&mut self) {
        self.force_reclaim = true;
    }

    /// Starts a fetch of up to `allowed` entries, and at most a quarter (ordered: half) of the
    /// window ([`FlowControl::batch_limit`]), at `now`. Whether it reclaims is asked of the
    /// subscription's [`Upkeep`] when it gets to the claims (a fetch whose room the backlog
    /// fills does not take the turn); a reclaiming fetch also reaps once per
    /// [`Timing::reap_interval`], consumers idle for [`REAP_DEADLINES`] × `ack_deadline` and
    /// at least [`Timing::reap_min_idle`].
    pub fn start_fetch(&mut self, allowed: usize, now: Instant, ack_deadline: Duration) -> Fetch {
        Fetch {
            room: allowed.min(self.flow.batch_limit()),
            budget: self.flow.read_budget(self.outstanding_bytes),
            taken: 0,
            step: Step::Backlog,
            issued: Step::Backlog,
            now,
            ack_deadline,
            forced: std::mem::take(&mut self.force_reclaim),
            reclaim: None,
            idle_after: None,
        }
    }

    /// Whether `fetch` reclaims, taking the subscription's turn when it first asks.
    fn reclaims(&self, fetch: &mut Fetch) -> bool {
        *fetch
            .reclaim
            .get_or_insert_with(|| self.upkeep.reclaim_turn(fetch.now, self.timing.reclaim_interval, fetch.forced))
    }

    /// The reap of a reclaiming `fetch` when the subscription's reap interval passed.
    fn reap(&self, fetch: &Fetch) -> Option<Read> {
        let reap = fetch.reclaim == Some(true) && self.upkeep.reap_turn(fetch.now, self.timing.reap_interval);
        reap.then(|| Read::Reap {
            idle: fetch.ack_deadline.saturating_mul(REAP_DEADLINES).max(self.timing.reap_min_idle),
        })
    }

    /// The next read of `fetch`, or `None` when it is done.
    pub fn next_read(&self, fetch: &mut Fetch) -> Option<Read> {
        loop {
            let step = fetch.step;
            fetch.step = match step {
                Step::Backlog => Step::Claim(Source::Stream),
                Step::Claim(Source::Stream) => Step::Claim(Source::Redrive),
                Step::Claim(Source::Redrive) => Step::Requeued,
                Step::Requeued => Step::Reap,
                Step::Reap => Step::New,
                Step::New | Step::Done => Step::Done,
            };
            let read = match step {
                Step::Backlog => self.backlog_read(fetch),
                Step::Claim(source) if fetch.open() && self.reclaims(fetch) => {
                    Some(Read::Claim { source, count: self.count_for(fetch) })
                }
                Step::Requeued if fetch.open() && self.reclaims(fetch) => Some(self.new_read(Source::Redrive, fetch)),
                Step::Reap => self.reap(fetch),
                // Backlog entries go first: no new reads while some wait.
                Step::New if fetch.open() && self.backlog.is_empty() => Some(self.new_read(Source::Stream, fetch)),
                Step::Done => return None,
                _ => None,
            };
            if read.is_some() {
                fetch.issued = step;
                return read;
            }
        }
    }

    /// Notes entries a read brought (their payload sizes), `used` backlog entries it consumed
    /// (taken or found trimmed), ids it read but left (they go to the backlog), and the
    /// stream's last id when nothing new was in it. Claims or a requeued read that brought
    /// entries tell the subscription's [`Upkeep`] that more may be due.
    pub fn took(
        &mut self,
        fetch: &mut Fetch,
        sizes: &[usize],
        used: usize,
        left: Vec<(Source, String)>,
        idle_after: Option<String>,
    ) {
        if matches!(fetch.issued, Step::Claim(_) | Step::Requeued) && !(sizes.is_empty() && left.is_empty()) {
            self.upkeep.more_due();
        }
        self.backlog.drain(..used.min(self.backlog.len()));
        self.backlog.extend(left);
        self.note_sizes(sizes);
        for size in sizes {
            fetch.room = fetch.room.saturating_sub(1);
            fetch.budget = fetch.budget.saturating_sub(*size);
        }
        fetch.taken += sizes.len();
        if idle_after.is_some() {
            fetch.idle_after = idle_after;
        }
    }

    /// What to wait for after `fetch` brought nothing: new entries (on the session's own
    /// reader if it has one, else through the watcher; up to the block time less this
    /// session's spread) when the stream had nothing new; a settlement when backlog entries do
    /// not fit the byte budget yet.
    pub fn wait_when_empty(&self, fetch: &Fetch, own_reader: bool) -> Wait {
        let block = self.timing.block.saturating_sub(self.wait_cut);
        match &fetch.idle_after {
            Some(_) if own_reader => Wait::BlockingRead(block),
            Some(last) => Wait::Watch { after: last.clone(), block },
            None if !self.backlog.is_empty() => self.wait_for_room(),
            None => Wait::Nothing,
        }
    }

    /// Splits the payload sizes a blocking read brought into entries that fit the byte budget
    /// now (true) and ones that go to the backlog (false); one of any size fits when nothing is
    /// outstanding.
    pub fn fits(&mut self, sizes: &[usize]) -> Vec<bool> {
        self.note_sizes(sizes);
        let budget = self.flow.read_budget(self.outstanding_bytes);
        sizes.iter().map(|&size| self.outstanding.is_empty() || size <= budget).collect()
    }

    /// Puts ids a read left at the back of the backlog.
    pub fn backlogged(&mut self, left: impl IntoIterator<Item = (Source, String)>) {
        self.backlog.extend(left);
    }

    /// Adopts the entries of `pending` (this session's pending list in Redis, in id order) that
    /// it neither delivered nor holds in its backlog: entries a read assigned to the session
    /// whose reply never arrived (a timeout, a dropped connection). They go to the backlog, so
    /// they are delivered now rather than after their ack deadline. Returns how many.
    pub fn adopt_orphans(&mut self, pending: impl IntoIterator<Item = (Source, String)>) -> usize {
        let known: HashSet<&(Source, String)> = self.backlog.iter().collect();
        let orphans: Vec<(Source, String)> =
            pending.into_iter().filter(|key| !self.outstanding.contains_key(key) && !known.contains(key)).collect();
        let adopted = orphans.len();
        self.backlog.extend(orphans);
        adopted
    }

    /// Entries read but not delivered yet (pending in Redis under this session's consumer).
    pub fn backlog_len(&self) -> usize {
        self.backlog.len()
    }

    /// Whether a read must take one entry whatever its size: when the session holds nothing
    /// unsettled, so one event of any size is delivered.
    fn force_one(&self) -> bool {
        self.outstanding.is_empty()
    }

    /// Backlog entries of the front source, up to the room left.
    fn backlog_read(&self, fetch: &Fetch) -> Option<Read> {
        let &(source, _) = self.backlog.front()?;
        let ids = self.backlog.iter().take_while(|(s, _)| *s == source).take(fetch.room).map(|(_, id)| id.clone());
        Some(Read::Backlog { source, ids: ids.collect(), budget: fetch.budget, force_one: self.force_one() })
    }

    /// A read of new entries of `source` sized by what `fetch` may still take.
    fn new_read(&self, source: Source, fetch: &Fetch) -> Read {
        Read::New { source, count: self.count_for(fetch), budget: fetch.budget, force_one: self.force_one() }
    }

    /// How many entries to ask Redis for: the room left, and about what the byte budget left
    /// holds at the running average payload size.
    fn count_for(&self, fetch: &Fetch) -> usize {
        fetch.room.min((fetch.budget / self.avg_bytes.max(1)).max(1)).min(MAX_READ_COUNT)
    }

    /// Feeds payload sizes into the running average that sizes reads (the first size replaces
    /// the initial guess).
    fn note_sizes(&mut self, sizes: &[usize]) {
        for &size in sizes {
            self.avg_bytes = if self.sized { (self.avg_bytes * 7 + size) / 8 } else { size };
            self.sized = true;
        }
    }
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
