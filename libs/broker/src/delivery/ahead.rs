//! Read-ahead: while a session's client holds its whole flow-control allowance, the session may
//! already read the next batch of new entries (into its pending list in Redis, as any read) and
//! keep them here, so it delivers them the moment a settlement frees room, without a Redis
//! round trip between the client's acks and the next delivery.
//!
//! What bounds it:
//! * per session, one read's worth: at most `max_messages` entries and the byte limit (or
//!   [`super::policy::MAX_READ_BYTES`]) of payload ([`super::DeliveryPolicy::read_ahead`]), and
//!   only while nothing else waits (the backlog, a reclaim turn); ordered subscriptions do not
//!   read ahead;
//! * per process, the payload bytes all sessions hold ahead ([`AheadBudget`],
//!   `BrokerOptions::read_ahead_bytes`; 0 turns read-ahead off);
//! * in time: an entry read ahead is pending under the session with an idle time that runs from
//!   its read, and another session claims it once that passes the ack deadline. So entries that
//!   have waited [`LEASE_SHARE`] of the ack deadline since their read are re-leased
//!   (`XCLAIM … JUSTID` to the same consumer, as `ModifyAckDeadline` does) before they are
//!   delivered, and while they wait; a client therefore gets them with at least nine tenths of
//!   the ack deadline left, and they never come near it undelivered.
//!
//! Flow control as the client sees it does not change: entries leave the buffer only into room
//! the policy gives ([`ReadAhead::take`] keeps to the count and byte budget of a batch). When the
//! session closes, its pending list (read-ahead entries included) is released to be redelivered
//! at once, as its backlog is.

use std::{
    collections::{HashSet, VecDeque},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use super::fetcher::Entry;

/// The share of the ack deadline a read-ahead entry may wait since its read (or last re-lease)
/// before it is re-leased: one tenth.
pub const LEASE_SHARE: u32 = 10;

/// Payload bytes the sessions of this process may hold read ahead, shared by all of them.
#[derive(Debug)]
pub struct AheadBudget {
    left: AtomicUsize,
}

impl AheadBudget {
    /// A budget of `bytes` (0: no read-ahead).
    pub fn new(bytes: usize) -> Self {
        Self { left: AtomicUsize::new(bytes) }
    }

    /// Takes up to `want` bytes; returns how many it got (0 when the budget is spent).
    fn reserve(&self, want: usize) -> usize {
        let mut got = 0;
        let _ = self.left.fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
            got = left.min(want);
            Some(left - got)
        });
        got
    }

    /// Gives `bytes` back.
    fn give_back(&self, bytes: usize) {
        if bytes > 0 {
            self.left.fetch_add(bytes, Ordering::AcqRel);
        }
    }
}

/// One session's entries read ahead, in read order, with the bytes they hold of the process's
/// [`AheadBudget`] (given back as they leave, and when the session ends).
#[derive(Debug)]
pub struct ReadAhead {
    budget: Arc<AheadBudget>,
    entries: VecDeque<Entry>,
    /// Payload bytes held from the budget: the sum of the entries' sizes.
    held: usize,
    /// When the entries' leases started: just before their read (or re-lease) was sent.
    leased_at: Option<Instant>,
    /// Whether the session delivered since its last read-ahead: it reads ahead once per
    /// delivered batch, so a session at its limit on a quiet stream does not read every poll.
    armed: bool,
}

impl ReadAhead {
    /// An empty buffer drawing on `budget`.
    pub fn new(budget: Arc<AheadBudget>) -> Self {
        Self { budget, entries: VecDeque::new(), held: 0, leased_at: None, armed: true }
    }

    /// Whether the session may read ahead now (nothing held, delivered since the last try).
    pub fn wanted(&self) -> bool {
        self.armed && self.entries.is_empty()
    }

    /// Notes that the session delivered a batch.
    pub fn arm(&mut self) {
        self.armed = true;
    }

    /// Reserves up to `want` payload bytes for a read-ahead; returns how many it got. The
    /// caller reads within that and hands the result to [`ReadAhead::fill`].
    pub fn reserve(&mut self, want: usize) -> usize {
        self.armed = false;
        self.budget.reserve(want)
    }

    /// Keeps `entries`, read under `reserved` bytes with their leases starting at `leased_at`;
    /// gives back what they do not use.
    pub fn fill(&mut self, entries: Vec<Entry>, reserved: usize, leased_at: Instant) {
        let used: usize = entries.iter().map(Entry::size).sum();
        // Read-ahead reads never force an entry past their budget, so `used <= reserved`; what
        // is held never counts more than was reserved, so the budget is never over-credited.
        self.budget.give_back(reserved.saturating_sub(used));
        self.held += used.min(reserved);
        self.entries.extend(entries);
        self.leased_at = (!self.entries.is_empty()).then_some(leased_at);
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the held entries must be re-leased at `now` before they are delivered or wait
    /// longer: [`LEASE_SHARE`] of `ack_deadline` passed since their lease started.
    pub fn lease_due(&self, now: Instant, ack_deadline: Duration) -> bool {
        self.leased_at.is_some_and(|at| now.saturating_duration_since(at) >= ack_deadline / LEASE_SHARE)
    }

    /// The ids of the entries held (all of the stream), in order.
    pub fn ids(&self) -> Vec<String> {
        self.entries.iter().map(|e| e.id.clone()).collect()
    }

    /// After a re-lease sent at `at`: keeps the entries still pending under the session
    /// (`still`; the others were settled meanwhile, e.g. by a seek, or trimmed) with their lease
    /// starting at `at`. Returns how many were dropped.
    pub fn released(&mut self, still: &HashSet<String>, at: Instant) -> usize {
        let before = self.entries.len();
        let mut freed = 0;
        self.entries.retain(|e| {
            let keep = still.contains(&e.id);
            if !keep {
                freed += e.size();
            }
            keep
        });
        self.give_back(freed);
        self.leased_at = (!self.entries.is_empty()).then_some(at);
        before - self.entries.len()
    }

    /// Takes entries from the front while they fit: at most `room`, payloads within `budget`
    /// bytes (the first whatever its size when `force_one`), as a read would.
    pub fn take(&mut self, room: usize, mut budget: usize, force_one: bool) -> Vec<Entry> {
        let mut out = Vec::new();
        while out.len() < room {
            let Some(size) = self.entries.front().map(Entry::size) else { break };
            if !(size <= budget || (force_one && out.is_empty())) {
                break;
            }
            budget = budget.saturating_sub(size);
            if let Some(entry) = self.entries.pop_front() {
                self.give_back(size);
                out.push(entry);
            }
        }
        if self.entries.is_empty() {
            self.leased_at = None;
        }
        out
    }

    /// Gives `bytes` of the entries that left back to the process's budget.
    fn give_back(&mut self, bytes: usize) {
        let bytes = bytes.min(self.held);
        self.held -= bytes;
        self.budget.give_back(bytes);
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.budget.give_back(self.held);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::Source;

    fn entries(sizes: &[usize]) -> Vec<Entry> {
        sizes.iter().enumerate().map(|(i, &size)| Entry::sized(Source::Stream, &format!("{i}-0"), size)).collect()
    }

    #[test]
    fn the_process_budget_bounds_what_sessions_hold_and_comes_back() {
        let budget = Arc::new(AheadBudget::new(1000));
        let mut a = ReadAhead::new(budget.clone());
        let mut b = ReadAhead::new(budget.clone());
        assert!(a.wanted());
        assert_eq!(a.reserve(800), 800);
        assert!(!a.wanted(), "once per delivered batch");
        assert_eq!(b.reserve(800), 200, "what is left");
        a.fill(entries(&[100, 100, 100]), 800, Instant::now());
        assert_eq!(budget.left.load(Ordering::Acquire), 500, "the unused reserve came back");
        b.fill(Vec::new(), 200, Instant::now());
        assert_eq!(budget.left.load(Ordering::Acquire), 700);
        let taken = a.take(2, 1000, false);
        assert_eq!(taken.len(), 2);
        assert_eq!(budget.left.load(Ordering::Acquire), 900);
        drop(a);
        assert_eq!(budget.left.load(Ordering::Acquire), 1000, "a closed session gives back the rest");
        drop(b);
        assert_eq!(AheadBudget::new(0).reserve(10), 0, "0: no read-ahead");
    }

    #[test]
    fn entries_leave_in_order_within_the_room_and_the_byte_budget() {
        let mut ahead = ReadAhead::new(Arc::new(AheadBudget::new(1 << 20)));
        let reserved = ahead.reserve(1000);
        ahead.fill(entries(&[100, 300, 100, 100]), reserved, Instant::now());
        let ids = |v: Vec<Entry>| v.into_iter().map(|e| e.id).collect::<Vec<_>>();
        assert_eq!(ids(ahead.take(1, 1000, false)), ["0-0"], "the room");
        assert!(ahead.take(5, 250, false).is_empty(), "the next does not fit the bytes");
        assert_eq!(ids(ahead.take(5, 250, true)), ["1-0"], "the first whatever its size when nothing is outstanding");
        assert_eq!(ids(ahead.take(5, 1000, false)), ["2-0", "3-0"]);
        assert!(ahead.is_empty());
    }

    #[test]
    fn a_lease_is_due_after_a_tenth_of_the_deadline_and_restarts_with_a_relet() {
        let deadline = Duration::from_secs(30);
        let t0 = Instant::now();
        let mut ahead = ReadAhead::new(Arc::new(AheadBudget::new(1 << 20)));
        assert!(!ahead.lease_due(t0 + deadline, deadline), "nothing held");
        let reserved = ahead.reserve(1000);
        ahead.fill(entries(&[10, 10, 10]), reserved, t0);
        assert!(!ahead.lease_due(t0 + Duration::from_millis(2999), deadline));
        assert!(ahead.lease_due(t0 + Duration::from_secs(3), deadline));
        let still: HashSet<String> = ["0-0".to_string(), "2-0".to_string()].into();
        assert_eq!(ahead.released(&still, t0 + Duration::from_secs(3)), 1, "1-0 was settled meanwhile");
        assert_eq!(ahead.ids(), ["0-0", "2-0"]);
        assert!(!ahead.lease_due(t0 + Duration::from_secs(5), deadline), "the lease restarted");
    }
}
