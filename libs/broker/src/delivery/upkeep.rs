//! The reclaim and reap schedule of one subscription in one process, shared by all its
//! sessions there ([`Upkeep`]), and the registry that hands it out ([`Upkeeps`]).
//!
//! Claiming due entries (`scripts::CLAIM_DUE` on the stream and the redrive stream, reading
//! new requeued dead letters) and reaping dead consumers is work for the subscription, not for
//! one session: `CLAIM_DUE` looks at the whole group (the parked set, every consumer's
//! pending list), and any session with room may take what it finds. So one session of the
//! process takes the turn each reclaim interval, not every session: 1000 idle sessions of a
//! subscription cost one round of claims per interval instead of 1000 (each idle session woke
//! every `block`, claimed on both sources and read the redrive stream: ~5 400 of its ~7 700
//! scripts a second; docs/next-steps.md item 102).
//!
//! How: [`Upkeep::reclaim_turn`] gives the turn to the first fetch (of any session) that asks
//! once the interval passed since the last turn. A turn whose claims brought entries may have
//! left more due ([`Upkeep::more_due`]): the next fetch of any session claims at once, so a
//! burst of due entries is shared by all sessions with room, as before. A session's first fetch
//! and every fetch of an ordered subscription claim whatever the turn says (see
//! [`super::DeliveryPolicy::reclaim_next`]). Reaping rides on a reclaiming fetch once per
//! [`super::Timing::reap_interval`] ([`Upkeep::reap_turn`]).
//!
//! What it keeps: every entry that becomes due is claimed within about one interval after it
//! does, as long as any session of the subscription fetches in some process — an idle session
//! fetches at least every `block`, so the bound is what one idle session gave before. Across
//! processes nothing changes: each process claims on its own schedule and `CLAIM_DUE` finds
//! what any replica left (an expired delivery of a crashed one, a nack). Nothing is stored in
//! Redis, so a Redis Cluster is no different. Times come from the sessions' clocks (`now`
//! arguments), so policy tests move them.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError, Weak},
    time::{Duration, Instant},
};

/// The shared schedule of one subscription in this process; see the module doc.
#[derive(Debug)]
pub struct Upkeep {
    /// When a fetch last took the reclaim turn, and when one last reaped.
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// When a fetch last took the reclaim turn (`None`: the next fetch takes it).
    last_reclaim: Option<Instant>,
    /// When consumers were last reaped (the schedule's creation at first: a new one does not
    /// reap at once).
    last_reap: Instant,
}

impl Upkeep {
    /// A schedule made at `now`: the first fetch to ask reclaims; reaping waits an interval.
    pub fn new(now: Instant) -> Self {
        Self { state: Mutex::new(State { last_reclaim: None, last_reap: now }) }
    }

    /// Whether the fetch asking at `now` claims: `forced` (the session's first fetch, an
    /// ordered subscription's) or `interval` passed since the last turn. Taking the turn
    /// starts the next interval.
    pub fn reclaim_turn(&self, now: Instant, interval: Duration, forced: bool) -> bool {
        let mut state = self.lock();
        let due = state.last_reclaim.is_none_or(|t| now.saturating_duration_since(t) >= interval);
        if forced || due {
            state.last_reclaim = Some(now);
        }
        forced || due
    }

    /// A turn's claims brought entries, so more may be due: the next fetch claims at once.
    pub fn more_due(&self) {
        self.lock().last_reclaim = None;
    }

    /// Whether a reclaiming fetch at `now` also reaps (`interval` passed since the last reap).
    pub fn reap_turn(&self, now: Instant, interval: Duration) -> bool {
        let mut state = self.lock();
        let due = now.saturating_duration_since(state.last_reap) >= interval;
        if due {
            state.last_reap = now;
        }
        due
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The [`Upkeep`] of each subscription with open sessions in this process (held by the broker).
#[derive(Debug, Default)]
pub struct Upkeeps {
    /// (stream, subscription) -> its schedule, alive while a session holds it.
    map: Mutex<HashMap<(String, String), Weak<Upkeep>>>,
}

impl Upkeeps {
    /// The schedule of subscription `name` of `stream` (a partition's stream name), made at
    /// `now` if no session of it is open here.
    pub fn get(&self, stream: &str, name: &str, now: Instant) -> Arc<Upkeep> {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (stream.to_string(), name.to_string());
        if let Some(upkeep) = map.get(&key).and_then(Weak::upgrade) {
            return upkeep;
        }
        // Forget the schedules of subscriptions whose sessions all ended.
        map.retain(|_, upkeep| upkeep.strong_count() > 0);
        let upkeep = Arc::new(Upkeep::new(now));
        map.insert(key, Arc::downgrade(&upkeep));
        upkeep
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const INTERVAL: Duration = Duration::from_millis(250);

    #[test]
    fn one_turn_per_interval_whoever_asks() {
        let t0 = Instant::now();
        let upkeep = Upkeep::new(t0);
        assert!(upkeep.reclaim_turn(t0, INTERVAL, false), "the first fetch to ask");
        assert!(!upkeep.reclaim_turn(t0 + INTERVAL / 2, INTERVAL, false), "within the interval");
        assert!(upkeep.reclaim_turn(t0 + INTERVAL / 2, INTERVAL, true), "forced");
        assert!(!upkeep.reclaim_turn(t0 + INTERVAL, INTERVAL, false), "a forced turn starts the interval too");
        assert!(upkeep.reclaim_turn(t0 + INTERVAL * 3 / 2, INTERVAL, false));
        upkeep.more_due();
        assert!(upkeep.reclaim_turn(t0 + INTERVAL * 3 / 2, INTERVAL, false), "more due: at once");
    }

    #[test]
    fn reaping_once_per_interval_from_creation() {
        let t0 = Instant::now();
        let upkeep = Upkeep::new(t0);
        let minute = Duration::from_secs(60);
        assert!(!upkeep.reap_turn(t0 + minute - Duration::from_millis(1), minute));
        assert!(upkeep.reap_turn(t0 + minute, minute));
        assert!(!upkeep.reap_turn(t0 + minute * 2 - Duration::from_millis(1), minute));
    }

    #[test]
    fn sessions_of_one_subscription_share_a_schedule_while_one_is_open() {
        let upkeeps = Upkeeps::default();
        let now = Instant::now();
        let a = upkeeps.get("s", "sub", now);
        let b = upkeeps.get("s", "sub", now);
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &upkeeps.get("s", "other", now)));
        assert!(!Arc::ptr_eq(&a, &upkeeps.get("s2", "sub", now)));
        let weak = Arc::downgrade(&a);
        drop((a, b));
        assert!(weak.upgrade().is_none());
        let _fresh = upkeeps.get("s3", "sub", now);
        assert!(upkeeps.map.lock().unwrap().keys().all(|(stream, _)| stream == "s3"), "ended ones forgotten");
    }
}
