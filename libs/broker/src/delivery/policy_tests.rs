//! Unit tests of the delivery policy over a moved clock: no Redis, no waiting.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{collections::HashSet, sync::Arc, time::Duration};

use super::*;
use crate::{
    BreakerState,
    delivery::{Clock, ManualClock, Upkeep, handoff::Handoff},
};

const SECOND: Duration = Duration::from_secs(1);
const DEADLINE: Duration = Duration::from_secs(30);

fn timing() -> Timing {
    Timing::new(&BrokerOptions::default())
}

/// A session's policy, alone in its subscription.
fn policy(flow: FlowControl, clock: &ManualClock) -> DeliveryPolicy {
    DeliveryPolicy::new(flow, timing(), Arc::new(Upkeep::new(clock.now())), clock.now())
}

fn flow(max_messages: usize, max_bytes: usize) -> FlowControl {
    FlowControl { max_messages, max_bytes, ..FlowControl::default() }
}

/// The reads of one fetch at the clock's time when Redis has nothing: each read brings nothing
/// (new-entry reads report the stream's last id).
fn reads(policy: &mut DeliveryPolicy, clock: &ManualClock, deadline: Duration) -> Vec<Read> {
    let mut fetch = policy.start_fetch(10, clock.now(), deadline);
    let mut reads = Vec::new();
    while let Some(read) = policy.next_read(&mut fetch) {
        let idle_after = matches!(read, Read::New { source: Source::Stream, .. }).then(|| "1-0".to_string());
        policy.took(&mut fetch, &[], 0, Vec::new(), idle_after);
        reads.push(read);
    }
    reads
}

fn reaps(reads: &[Read]) -> Vec<Duration> {
    reads.iter().filter_map(|r| if let Read::Reap { idle } = r { Some(*idle) } else { None }).collect()
}

fn claims(reads: &[Read]) -> usize {
    reads.iter().filter(|r| matches!(r, Read::Claim { .. })).count()
}

#[test]
fn flow_control_counts_messages() {
    let clock = ManualClock::new();
    let mut p = policy(flow(3, 0), &clock);
    assert_eq!(p.room(), 3);
    for id in ["1-0", "2-0", "3-0"] {
        p.delivered(Source::Stream, id, 10, 1);
    }
    assert_eq!(p.room(), 0);
    assert_eq!(p.wait_for_room(), Wait::Settlement(timing().capacity_poll));
    // One settled (here or through another replica): it is no longer in the pending list.
    let still: HashSet<_> = [(Source::Stream, "1-0".to_string()), (Source::Stream, "3-0".to_string())].into();
    p.recount(&still, clock.now());
    assert_eq!(p.room(), 1);
    assert_eq!(p.outstanding(), (2, 20));
}

#[test]
fn settlements_handed_over_free_exactly_their_room() {
    let clock = ManualClock::new();
    let mut p = policy(flow(3, 1000), &clock);
    p.delivered(Source::Stream, "1-0", 10, 1);
    p.delivered(Source::Stream, "2-0", 20, 1);
    p.delivered(Source::Redrive, "3-0", 30, 2);
    assert_eq!(p.room(), 0);
    let handoff = |source, id: &str, attempt| Handoff { source, entry_id: id.into(), attempt };
    // An ack frees its entry whatever attempt is counted; one of an entry not counted (or
    // counted once, handed twice) frees nothing more.
    let acks = vec![
        handoff(Source::Stream, "1-0", None),
        handoff(Source::Stream, "1-0", None),
        handoff(Source::Stream, "9-0", None),
        handoff(Source::Stream, "3-0", None),
    ];
    assert_eq!(p.settled_here(acks), 1);
    assert_eq!(p.outstanding(), (2, 50));
    // A nack of attempt 1 of an entry the session has claimed again since (attempt 2 counted)
    // frees nothing; one of the attempt counted does.
    assert_eq!(p.settled_here(vec![handoff(Source::Redrive, "3-0", Some(1))]), 0);
    assert_eq!(p.settled_here(vec![handoff(Source::Redrive, "3-0", Some(2))]), 1);
    assert_eq!(p.outstanding(), (1, 20));
    // Handed-over settlements do not replace the recount for good: it is due once per poll.
    assert!(!p.recount_due(clock.now()));
    clock.advance(timing().capacity_poll);
    assert!(p.recount_due(clock.now()));
    p.recount(&HashSet::new(), clock.now());
    assert!(!p.recount_due(clock.now()));
    assert_eq!(p.outstanding(), (0, 0));
}

#[test]
fn flow_control_counts_bytes() {
    let clock = ManualClock::new();
    let mut p = policy(flow(100, 1000), &clock);
    // Before any size is known the guess (256 KiB) exceeds the budget: still one event fits.
    assert_eq!(p.room(), 1);
    let mut fetch = p.start_fetch(p.room(), clock.now(), DEADLINE);
    let read = p.next_read(&mut fetch).unwrap();
    assert!(matches!(read, Read::Claim { count: 1, .. }), "{read:?}");
    p.took(&mut fetch, &[100], 0, Vec::new(), None);
    // Sizes seen: 100 bytes each. 300 outstanding leaves 700: 7 more.
    for id in ["1-0", "2-0", "3-0"] {
        p.delivered(Source::Stream, id, 100, 1);
    }
    assert_eq!(p.room(), 7);
    let fetch = p.start_fetch(p.room(), clock.now(), DEADLINE);
    assert_eq!(fetch.budget, 700);
    // At the byte limit with deliveries outstanding: no room.
    p.delivered(Source::Stream, "4-0", 700, 1);
    assert_eq!(p.room(), 0);
}

#[test]
fn one_oversize_event_is_delivered_when_nothing_is_outstanding() {
    let clock = ManualClock::new();
    let mut p = policy(flow(100, 1000), &clock);
    // Nothing outstanding: reads take their first entry whatever its size.
    let mut fetch = p.start_fetch(p.room(), clock.now(), DEADLINE);
    let all: Vec<Read> = std::iter::from_fn(|| p.next_read(&mut fetch)).collect();
    assert!(all.iter().any(|r| matches!(r, Read::New { source: Source::Stream, force_one: true, .. })), "{all:?}");
    assert_eq!(p.fits(&[5000]), vec![true]);
    p.delivered(Source::Stream, "1-0", 5000, 1);
    assert_eq!(p.room(), 0, "the oversize event holds the whole budget");
    // Something outstanding: an oversize entry waits in the backlog, and reads do not force one.
    let mut p2 = policy(flow(100, 1000), &clock);
    p2.delivered(Source::Stream, "1-0", 10, 1);
    assert_eq!(p2.fits(&[5000, 10]), vec![false, true]);
    let mut fetch = p2.start_fetch(p2.room(), clock.now(), DEADLINE);
    let all: Vec<Read> = std::iter::from_fn(|| p2.next_read(&mut fetch)).collect();
    assert!(all.iter().all(|r| !matches!(r, Read::New { force_one: true, .. })), "{all:?}");
}

#[test]
fn backlog_goes_first_and_blocks_new_reads() {
    let clock = ManualClock::new();
    let mut p = policy(flow(10, 0), &clock);
    p.backlogged([(Source::Stream, "5-0".to_string()), (Source::Stream, "6-0".to_string())]);
    let mut fetch = p.start_fetch(1, clock.now(), DEADLINE);
    let read = p.next_read(&mut fetch).unwrap();
    assert_eq!(
        read,
        Read::Backlog { source: Source::Stream, ids: vec!["5-0".into()], budget: MAX_READ_BYTES, force_one: true }
    );
    p.took(&mut fetch, &[10], 1, Vec::new(), None);
    // The room is used up: nothing else this fetch.
    assert_eq!(p.next_read(&mut fetch), None);
    assert_eq!(p.backlog_len(), 1);
    // Next fetch: the backlog again, and no new read while it is not empty.
    let mut fetch = p.start_fetch(5, clock.now(), DEADLINE);
    let all: Vec<Read> = std::iter::from_fn(|| p.next_read(&mut fetch)).collect();
    assert!(matches!(&all[0], Read::Backlog { ids, .. } if ids == &["6-0".to_string()]), "{all:?}");
    assert!(all.iter().all(|r| !matches!(r, Read::New { source: Source::Stream, .. })), "{all:?}");
    // Backlog entries that do not fit yet: wait for a settlement, not for new entries.
    assert_eq!(p.wait_when_empty(&fetch, true), Wait::Settlement(timing().capacity_poll));
}

#[test]
fn an_idle_stream_is_waited_on() {
    let clock = ManualClock::new();
    let mut p = policy(flow(10, 0), &clock);
    let mut fetch = p.start_fetch(10, clock.now(), DEADLINE);
    while let Some(read) = p.next_read(&mut fetch) {
        let last = matches!(read, Read::New { source: Source::Stream, .. }).then(|| "7-0".to_string());
        p.took(&mut fetch, &[], 0, Vec::new(), last);
    }
    let block = timing().block;
    assert_eq!(p.wait_when_empty(&fetch, true), Wait::BlockingRead(block));
    assert_eq!(p.wait_when_empty(&fetch, false), Wait::Watch { after: "7-0".into(), block });
    fetch.cut_short();
    assert_eq!(p.wait_when_empty(&fetch, false), Wait::Nothing);
}

#[test]
fn breaker_gates_deliveries() {
    let clock = ManualClock::new();
    let p = policy(flow(10, 0), &clock);
    let block = timing().block;
    let open = |retry_in| Permit { allowed: 0, state: BreakerState::Open, retry_in };
    assert_eq!(p.gate(&open(Duration::from_secs(30))), Gate::Pause(block), "at most the block time");
    assert_eq!(p.gate(&open(Duration::ZERO)), Gate::Pause(MIN_BREAKER_PAUSE), "never a busy loop");
    assert_eq!(p.gate(&open(Duration::from_millis(100))), Gate::Pause(Duration::from_millis(100)));
    let half_open = Permit { allowed: 3, state: BreakerState::HalfOpen, retry_in: Duration::ZERO };
    assert_eq!(p.gate(&half_open), Gate::Deliver(3));
    assert_eq!(DeliveryPolicy::unused_probes(&half_open, 1), 2);
    let closed = Permit { allowed: 10, state: BreakerState::Closed, retry_in: Duration::ZERO };
    assert_eq!(p.gate(&closed), Gate::Deliver(10));
    assert_eq!(DeliveryPolicy::unused_probes(&closed, 0), 0, "only probes are handed back");
}

#[test]
fn config_is_refreshed_every_interval() {
    let clock = ManualClock::new();
    let mut p = policy(flow(10, 0), &clock);
    assert!(!p.config_due(clock.now()));
    clock.advance(CONFIG_REFRESH - Duration::from_millis(1));
    assert!(!p.config_due(clock.now()));
    clock.advance(Duration::from_millis(1));
    assert!(p.config_due(clock.now()));
    p.config_refreshed(clock.now());
    assert!(!p.config_due(clock.now()));
    clock.advance(CONFIG_REFRESH);
    assert!(p.config_due(clock.now()));
}

#[test]
fn due_entries_are_claimed_every_reclaim_interval() {
    let clock = ManualClock::new();
    let mut p = policy(flow(10, 0), &clock);
    let interval = timing().reclaim_interval;
    // The first fetch claims on both sources and reads requeued dead letters.
    let first = reads(&mut p, &clock, DEADLINE);
    assert_eq!(claims(&first), 2, "{first:?}");
    assert!(first.iter().any(|r| matches!(r, Read::New { source: Source::Redrive, .. })));
    clock.advance(interval - Duration::from_millis(1));
    let early = reads(&mut p, &clock, DEADLINE);
    assert_eq!(claims(&early), 0, "{early:?}");
    assert!(early.iter().all(|r| !matches!(r, Read::New { source: Source::Redrive, .. })));
    assert!(matches!(early.last(), Some(Read::New { source: Source::Stream, .. })), "new entries every time");
    clock.advance(Duration::from_millis(1));
    assert_eq!(claims(&reads(&mut p, &clock, DEADLINE)), 2);
}

#[test]
fn an_ordered_session_claims_on_every_fetch_it_asks_to() {
    let clock = ManualClock::new();
    let mut p = policy(flow(10, 0), &clock);
    assert_eq!(claims(&reads(&mut p, &clock, DEADLINE)), 2);
    assert_eq!(claims(&reads(&mut p, &clock, DEADLINE)), 0, "within the interval");
    p.reclaim_next();
    let next = reads(&mut p, &clock, DEADLINE);
    assert_eq!(claims(&next), 2, "{next:?}");
    assert!(next.iter().any(|r| matches!(r, Read::New { source: Source::Redrive, .. })), "requeued ones too");
}

#[test]
fn sessions_of_one_subscription_take_turns_to_claim() {
    let clock = ManualClock::new();
    let upkeep = Arc::new(Upkeep::new(clock.now()));
    let session = || DeliveryPolicy::new(flow(10, 0), timing(), upkeep.clone(), clock.now());
    let (mut a, mut b) = (session(), session());
    let interval = timing().reclaim_interval;
    // A session's first fetch claims (entries a closed session released are due at once).
    assert_eq!(claims(&reads(&mut a, &clock, DEADLINE)), 2);
    assert_eq!(claims(&reads(&mut b, &clock, DEADLINE)), 2);
    // Then one fetch per interval claims, whichever session makes it.
    clock.advance(interval);
    assert_eq!(claims(&reads(&mut b, &clock, DEADLINE)), 2);
    assert_eq!(claims(&reads(&mut a, &clock, DEADLINE)), 0, "b took this interval's turn");
    clock.advance(interval - Duration::from_millis(1));
    assert_eq!(claims(&reads(&mut a, &clock, DEADLINE)), 0);
    clock.advance(Duration::from_millis(1));
    assert_eq!(claims(&reads(&mut a, &clock, DEADLINE)), 2);
    assert_eq!(claims(&reads(&mut b, &clock, DEADLINE)), 0);
    // A claim that brought entries: more may be due, so the next fetch of any session claims.
    clock.advance(interval);
    let mut fetch = a.start_fetch(10, clock.now(), DEADLINE);
    let read = a.next_read(&mut fetch).unwrap();
    assert!(matches!(read, Read::Claim { source: Source::Stream, .. }), "{read:?}");
    a.took(&mut fetch, &[10], 0, Vec::new(), None);
    assert_eq!(claims(&reads(&mut b, &clock, DEADLINE)), 2, "at once, within a's interval");
    assert_eq!(claims(&reads(&mut a, &clock, DEADLINE)), 0, "b found nothing: the interval holds again");
}

#[test]
fn a_fetch_the_backlog_fills_leaves_the_turn_to_others() {
    let clock = ManualClock::new();
    let upkeep = Arc::new(Upkeep::new(clock.now()));
    let mut a = DeliveryPolicy::new(flow(10, 0), timing(), upkeep.clone(), clock.now());
    let mut b = DeliveryPolicy::new(flow(10, 0), timing(), upkeep, clock.now());
    reads(&mut a, &clock, DEADLINE);
    reads(&mut b, &clock, DEADLINE);
    clock.advance(timing().reclaim_interval);
    a.backlogged([(Source::Stream, "5-0".to_string())]);
    let mut fetch = a.start_fetch(1, clock.now(), DEADLINE);
    assert!(matches!(a.next_read(&mut fetch), Some(Read::Backlog { .. })));
    a.took(&mut fetch, &[10], 1, Vec::new(), None);
    assert_eq!(a.next_read(&mut fetch), None, "room used up before the claims");
    assert_eq!(claims(&reads(&mut b, &clock, DEADLINE)), 2, "the turn is still there");
}

#[test]
fn idle_waits_are_shortened_by_the_sessions_spread() {
    let clock = ManualClock::new();
    let block = timing().block;
    let idle = |spread: f64| {
        let mut p = policy(flow(10, 0), &clock).spread_waits(spread);
        let mut fetch = p.start_fetch(10, clock.now(), DEADLINE);
        while let Some(read) = p.next_read(&mut fetch) {
            let last = matches!(read, Read::New { source: Source::Stream, .. }).then(|| "7-0".to_string());
            p.took(&mut fetch, &[], 0, Vec::new(), last);
        }
        p.wait_when_empty(&fetch, true)
    };
    assert_eq!(idle(0.0), Wait::BlockingRead(block));
    assert_eq!(idle(0.5), Wait::BlockingRead(block.mul_f64(0.875)));
    assert_eq!(idle(1.0), Wait::BlockingRead(block.mul_f64(0.75)), "at most a quarter shorter");
}

#[test]
fn consumers_are_reaped_once_a_minute_after_three_deadlines_and_five_minutes_idle() {
    let clock = ManualClock::new();
    let mut p = policy(flow(10, 0), &clock);
    // A new session does not reap at once.
    assert_eq!(reaps(&reads(&mut p, &clock, DEADLINE)), Vec::<Duration>::new());
    clock.advance(REAP_INTERVAL - SECOND);
    assert_eq!(reaps(&reads(&mut p, &clock, DEADLINE)), Vec::<Duration>::new());
    clock.advance(SECOND);
    // Deadline 30 s: three deadlines are 90 s, so the 5 minutes rule.
    assert_eq!(reaps(&reads(&mut p, &clock, DEADLINE)), vec![REAP_MIN_IDLE]);
    assert_eq!(REAP_MIN_IDLE, Duration::from_secs(300));
    // Once per minute, however often the session fetches.
    for _ in 0..59 {
        clock.advance(SECOND);
        assert_eq!(reaps(&reads(&mut p, &clock, DEADLINE)), Vec::<Duration>::new());
    }
    clock.advance(SECOND);
    // Deadline 10 min: three deadlines (30 min) rule.
    assert_eq!(reaps(&reads(&mut p, &clock, Duration::from_secs(600))), vec![Duration::from_secs(1800)]);
}

#[test]
fn reaping_waits_for_a_reclaim_fetch() {
    let clock = ManualClock::new();
    let mut p = policy(flow(10, 0), &clock);
    clock.advance(REAP_INTERVAL - Duration::from_millis(1));
    assert_eq!(reaps(&reads(&mut p, &clock, DEADLINE)), Vec::<Duration>::new()); // reclaims now
    clock.advance(Duration::from_millis(1));
    // The reap interval passed but the reclaim interval did not: reaping waits for it.
    assert_eq!(reaps(&reads(&mut p, &clock, DEADLINE)), Vec::<Duration>::new());
    clock.advance(timing().reclaim_interval);
    assert_eq!(reaps(&reads(&mut p, &clock, DEADLINE)), vec![REAP_MIN_IDLE]);
}

#[test]
fn leases_end_at_the_ack_deadline() {
    assert!(DeliveryPolicy::lease_held(DEADLINE - Duration::from_millis(1), DEADLINE));
    assert!(!DeliveryPolicy::lease_held(DEADLINE, DEADLINE));
}

#[test]
fn backoffs_double_up_to_the_cap() {
    let mut config = SubscriptionConfig::new("s", "n");
    config.max_delivery_attempts = 5;
    config.min_backoff = SECOND;
    config.max_backoff = Duration::from_secs(10);
    assert_eq!(DeliveryPolicy::backoffs_ms(&config, 0.0), vec![1000, 2000, 4000, 8000, 10_000]);
    config.min_backoff = Duration::ZERO;
    assert_eq!(DeliveryPolicy::backoffs_ms(&config, 0.5), vec![0; 5], "no retry policy: at once");
}

#[test]
fn entries_pending_but_unknown_to_the_session_are_adopted_into_the_backlog() {
    let clock = ManualClock::new();
    let mut p = policy(flow(100, 0), &clock);
    p.delivered(Source::Stream, "1-0", 10, 1);
    p.backlogged([(Source::Stream, "2-0".to_string())]);
    let key = |source, id: &str| (source, id.to_string());
    let pending = [
        key(Source::Stream, "1-0"),
        key(Source::Stream, "2-0"),
        key(Source::Stream, "3-0"),
        key(Source::Redrive, "1-0"),
    ];
    assert_eq!(p.adopt_orphans(pending.clone()), 2, "3-0 and the redrive entry were read by a lost reply");
    assert_eq!(p.backlog_len(), 3);
    assert_eq!(p.adopt_orphans(pending), 0, "adopted once");
    assert_eq!(p.outstanding().0, 1, "adopting does not count as delivering");
}

/// The largest `count` a fetch asks of Redis when the session may take `allowed` entries.
fn largest_read(policy: &mut DeliveryPolicy, clock: &ManualClock, allowed: usize) -> usize {
    let mut fetch = policy.start_fetch(allowed, clock.now(), DEADLINE);
    let mut largest = 0;
    while let Some(read) = policy.next_read(&mut fetch) {
        if let Read::Claim { count, .. } | Read::New { count, .. } = read {
            largest = largest.max(count);
        }
        let idle_after = matches!(read, Read::New { source: Source::Stream, .. }).then(|| "1-0".to_string());
        policy.took(&mut fetch, &[], 0, Vec::new(), idle_after);
    }
    largest
}

#[test]
fn a_fetch_takes_at_most_a_quarter_of_the_window_so_reads_overlap_the_clients_work() {
    let clock = ManualClock::new();
    let mut p = policy(flow(1000, 0), &clock);
    p.note_sizes(&[100]);
    let room = p.room();
    assert_eq!(largest_read(&mut p, &clock, room), 250);
    // Less room than a quarter of the window: the room.
    assert_eq!(largest_read(&mut p, &clock, 120), 120);
    // Other windows round up; a window of one still takes its one.
    let mut p = policy(flow(7, 0), &clock);
    assert_eq!(largest_read(&mut p, &clock, 7), 2);
    let mut p = policy(flow(1, 0), &clock);
    assert_eq!(largest_read(&mut p, &clock, 1), 1);
    // An ordered subscription's fetches (the gate's scripts) take half the window.
    let mut p = policy(flow(1000, 0).ordered(true), &clock);
    p.note_sizes(&[100]);
    let room = p.room();
    assert_eq!(largest_read(&mut p, &clock, room), 500);
    // A sink that sets its own count of batches (the archiver: one insert each) gets its share.
    let mut p = policy(flow(1000, 0).in_batches(2), &clock);
    p.note_sizes(&[100]);
    let room = p.room();
    assert_eq!(largest_read(&mut p, &clock, room), 500);
    assert_eq!(flow(1000, 0).in_batches(1).ordered(true).batch_limit(), 1000, "ordered: at most two batches");
    assert_eq!(flow(1000, 0).in_batches(0).batch_limit(), 1000, "at least one batch");
}

#[test]
fn a_window_split_over_partitions_gives_each_its_share_in_at_least_two_batches() {
    let call = flow(1000, 4000);
    let one = call.split(1);
    assert_eq!((one.max_messages, one.max_bytes, one.batch_limit()), (1000, 4000, 250));
    // Six partitions' sessions overlap one another: each takes halves of its share.
    let six = call.split(6);
    assert_eq!((six.max_messages, six.max_bytes, six.batch_limit()), (167, 667, 84));
    // Two: the call's four batches spread over them, two each.
    assert_eq!(call.split(2).batch_limit(), 250);
    // A flow of whole-window batches keeps them.
    assert_eq!(call.in_batches(1).split(6).batch_limit(), 167);
}
