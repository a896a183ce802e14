//! The ledger: what the soak's clients saw happen to every event id, from the publisher's
//! answers and the consumers' deliveries and acks.
//!
//! Event ids are `soak-<n>` with `n < events`, so the ledger is one [`Record`] per index behind
//! one mutex (each publish result or delivered batch takes it once). The two figures the chaos
//! and the drain poll (ids accepted, ids acked) are also kept in atomics, readable without it.

use std::sync::{
    Mutex, MutexGuard,
    atomic::{AtomicUsize, Ordering},
};

/// The event id of index `n`.
pub fn event_id(n: usize) -> String {
    format!("soak-{n}")
}

/// The index of event id `id`, if it is one of this run's (`soak-<n>`, `n < events`).
pub fn parse_id(id: &str, events: usize) -> Option<usize> {
    let n: usize = id.strip_prefix("soak-")?.parse().ok()?;
    (n < events && id == event_id(n)).then_some(n)
}

/// A stream entry id `<ms>-<seq>` as a pair (0-0 when malformed).
pub fn parse_entry(entry: &str) -> (u64, u64) {
    let (ms, seq) = entry.split_once('-').unwrap_or(("0", "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

/// Whether, and how surely, a consumer acknowledged an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Acked {
    /// No Acknowledge of this id succeeded.
    #[default]
    No,
    /// An Acknowledge call failed (timeout, connection cut) and its retry reported the id as
    /// expired: the failed call most likely applied the ack. Counted as acked, reported apart.
    Unconfirmed,
    /// An Acknowledge response did not list the id: the ack applied.
    Confirmed,
}

/// What happened to one event id.
#[derive(Debug, Clone, Copy, Default)]
pub struct Record {
    /// The publisher returned a result without error for it (stored or duplicate).
    pub accepted: bool,
    /// Results with `duplicate = false`: more than one means it was stored twice.
    pub stored_new: u8,
    /// Entry id of its first accepted result.
    pub entry: (u64, u64),
    /// Deliveries received.
    pub deliveries: u32,
    /// Highest `delivery_attempt` seen.
    pub max_attempt: i32,
    /// Acknowledged?
    pub acked: Acked,
    /// Acknowledge responses that listed it as expired.
    pub ack_expired: u32,
}

/// Counters over all ids (under the ledger's lock).
#[derive(Debug, Default, Clone)]
pub struct Counters {
    /// Publish results with `duplicate = true` (a retry of an applied publish, or the first
    /// publish of an id that was somehow already stored).
    pub duplicate_results: u64,
    /// Ids the publisher returned a second `duplicate = false` result for.
    pub stored_twice: u64,
    /// Accepted results whose entry id differs from the first result of the same id.
    pub entry_mismatch: u64,
    /// Per-event INVALID_ARGUMENT results: the publisher refused an event for good.
    pub rejected: u64,
    /// Deliveries received (every copy).
    pub deliveries: u64,
    /// Deliveries with `delivery_attempt > 1`.
    pub redeliveries: u64,
    /// Deliveries of an id whose ack had already been confirmed.
    pub delivered_after_ack: u64,
    /// Deliveries of an event whose id is not one of this run's.
    pub foreign: u64,
    /// Ack ids reported invalid (malformed or naming no subscription): should never happen.
    pub invalid_acks: u64,
    /// Ack ids reported expired.
    pub expired_acks: u64,
    /// Events held (delivered, not acknowledged) by a consumer when it was dropped.
    pub released_by_drops: u64,
}

/// The per-id records and counters.
struct Inner {
    /// One per event index.
    records: Vec<Record>,
    /// Totals.
    counters: Counters,
}

/// Everything the soak's clients observed.
pub struct Ledger {
    /// Number of event ids (`soak-0` .. `soak-<events-1>`).
    pub events: usize,
    /// Records and counters.
    inner: Mutex<Inner>,
    /// Distinct ids accepted, for progress without the lock.
    accepted: AtomicUsize,
    /// Distinct ids acked (confirmed or unconfirmed), for progress without the lock.
    acked: AtomicUsize,
}

impl Ledger {
    /// A ledger for `events` ids.
    pub fn new(events: usize) -> Self {
        let inner = Inner { records: vec![Record::default(); events], counters: Counters::default() };
        Self { events, inner: Mutex::new(inner), accepted: AtomicUsize::new(0), acked: AtomicUsize::new(0) }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Distinct ids accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Distinct ids acked so far.
    pub fn acked(&self) -> usize {
        self.acked.load(Ordering::Relaxed)
    }

    /// Records a publish result without error for index `n`.
    pub fn accept(&self, n: usize, duplicate: bool, entry: &str) {
        let entry = parse_entry(entry);
        let mut inner = self.lock();
        let Inner { records, counters } = &mut *inner;
        let record = &mut records[n];
        if duplicate {
            counters.duplicate_results += 1;
        } else {
            record.stored_new = record.stored_new.saturating_add(1);
            if record.stored_new == 2 {
                counters.stored_twice += 1;
            }
        }
        if !record.accepted {
            record.accepted = true;
            record.entry = entry;
            self.accepted.fetch_add(1, Ordering::Relaxed);
        } else if record.entry != entry {
            counters.entry_mismatch += 1;
        }
    }

    /// Records a per-event INVALID_ARGUMENT result.
    pub fn reject(&self) {
        self.lock().counters.rejected += 1;
    }

    /// Records the deliveries of one response: `(index, delivery_attempt)`, index None for an
    /// id that is not this run's.
    pub fn deliver(&self, deliveries: &[(Option<usize>, i32)]) {
        let mut inner = self.lock();
        let Inner { records, counters } = &mut *inner;
        for &(n, attempt) in deliveries {
            counters.deliveries += 1;
            if attempt > 1 {
                counters.redeliveries += 1;
            }
            let Some(n) = n else {
                counters.foreign += 1;
                continue;
            };
            let record = &mut records[n];
            record.deliveries += 1;
            record.max_attempt = record.max_attempt.max(attempt);
            if record.acked == Acked::Confirmed {
                counters.delivered_after_ack += 1;
            }
        }
    }

    /// Records the outcome of one Acknowledge response over `indices` (in request order):
    /// `outcome[i]` is None when acked, Some(true) when invalid, Some(false) when expired.
    /// `retried` says an earlier call with these ack ids failed without an answer.
    pub fn acknowledged(&self, indices: &[usize], outcome: &[Option<bool>], retried: bool) {
        let mut inner = self.lock();
        let Inner { records, counters } = &mut *inner;
        for (&n, result) in indices.iter().zip(outcome) {
            let record = &mut records[n];
            let before = record.acked;
            match result {
                None => record.acked = Acked::Confirmed,
                Some(true) => counters.invalid_acks += 1,
                Some(false) => {
                    counters.expired_acks += 1;
                    record.ack_expired += 1;
                    if retried && record.acked == Acked::No {
                        record.acked = Acked::Unconfirmed;
                    }
                }
            }
            if before == Acked::No && record.acked != Acked::No {
                self.acked.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Records events a dropped consumer held without acking.
    pub fn released(&self, n: usize) {
        self.lock().counters.released_by_drops += n as u64;
    }

    /// Accepted indices that are neither acked nor in `dead_lettered` (indexed like the
    /// records), at most `limit` of them, and how many there are in all.
    pub fn unaccounted(&self, dead_lettered: &[bool], limit: usize) -> (usize, Vec<usize>) {
        let inner = self.lock();
        let mut sample = Vec::new();
        let mut count = 0;
        for (n, record) in inner.records.iter().enumerate() {
            if record.accepted && record.acked == Acked::No && !dead_lettered.get(n).copied().unwrap_or(false) {
                count += 1;
                if sample.len() < limit {
                    sample.push(n);
                }
            }
        }
        (count, sample)
    }

    /// A copy of the counters.
    pub fn counters(&self) -> Counters {
        self.lock().counters.clone()
    }

    /// A copy of one record.
    pub fn record(&self, n: usize) -> Record {
        self.lock().records[n]
    }

    /// Applies `f` to every record (for the final figures).
    pub fn fold<T>(&self, init: T, mut f: impl FnMut(T, usize, &Record) -> T) -> T {
        let inner = self.lock();
        inner.records.iter().enumerate().fold(init, |acc, (n, r)| f(acc, n, r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_foreign_ones() {
        assert_eq!(parse_id(&event_id(42), 100), Some(42));
        assert_eq!(parse_id("soak-100", 100), None);
        assert_eq!(parse_id("soak-042", 100), None);
        assert_eq!(parse_id("other-1", 100), None);
        assert_eq!(parse_entry("1700000000000-3"), (1_700_000_000_000, 3));
    }

    #[test]
    fn acks_and_dead_letters_account_for_ids() {
        let ledger = Ledger::new(4);
        for n in 0..4 {
            ledger.accept(n, false, &format!("1-{n}"));
        }
        ledger.accept(1, true, "1-1");
        ledger.deliver(&[(Some(0), 1), (Some(1), 1), (Some(2), 1), (None, 1)]);
        ledger.acknowledged(&[0, 1], &[None, Some(false)], false);
        ledger.acknowledged(&[2], &[Some(false)], true);
        assert_eq!(ledger.accepted(), 4);
        assert_eq!(ledger.acked(), 2);
        let (count, sample) = ledger.unaccounted(&[false, false, false, true], 10);
        assert_eq!((count, sample), (1, vec![1]));
        let counters = ledger.counters();
        assert_eq!((counters.duplicate_results, counters.stored_twice, counters.foreign), (1, 0, 1));
        assert_eq!(ledger.record(2).acked, Acked::Unconfirmed);
    }
}
