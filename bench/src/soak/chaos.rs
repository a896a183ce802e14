//! The chaos: SIGKILL + restart of the publisher and of one subscriber replica at a time,
//! SIGSTOP of redis-server (then SIGCONT), and drops of random consumers.
//!
//! Each action fires when the run's progress passes a threshold drawn at start from the seeded
//! generator (publisher kills and the Redis pause by the share of events accepted, subscriber
//! kills and consumer drops by the share acknowledged), so the planned actions land while there
//! is traffic to disturb, whether the run is 50 k events or 1 M, and a seed replays the same
//! plan. The kinds of action run side by side; actions of one kind run one after another (a
//! restarted service is SERVING before the next kill), so one subscriber replica is always up.

use std::{
    collections::VecDeque,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::{sync::Notify, time::Instant};
use tokio_util::sync::CancellationToken;

use super::{ledger::Ledger, procs::Fleet, procs::signal};

/// A small deterministic generator (SplitMix64): the chaos only needs spread, and a printed
/// seed that replays the same plan.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// Uniform in `[lo, hi)`.
    pub fn between(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// An independent generator derived from this one.
    pub fn fork(&mut self) -> Rng {
        Rng::new(self.next_u64())
    }
}

/// How much chaos to plan.
#[derive(Debug, Clone)]
pub struct Plan {
    /// SIGKILL + restart of the publisher.
    pub publisher_kills: usize,
    /// SIGKILL + restart of one subscriber replica.
    pub subscriber_kills: usize,
    /// Consumer drops (cancel a Subscribe call without acking what it holds).
    pub consumer_drops: usize,
    /// How long redis-server stays SIGSTOPped (zero: no pause).
    pub redis_pause: Duration,
}

/// What the chaos did.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Publisher SIGKILLs done.
    pub publisher_kills: usize,
    /// Subscriber SIGKILLs done.
    pub subscriber_kills: usize,
    /// Consumer drops signalled.
    pub consumer_drops: usize,
    /// How long redis-server was actually stopped, if it was.
    pub redis_paused: Option<Duration>,
    /// Actions that failed (a service that did not come back, a signal that was not sent).
    pub errors: Vec<String>,
}

/// `count` thresholds in `[lo, hi)`, ascending.
fn thresholds(rng: &mut Rng, count: usize, lo: f64, hi: f64) -> VecDeque<f64> {
    let mut t: Vec<f64> = (0..count).map(|_| rng.between(lo, hi)).collect();
    t.sort_by(f64::total_cmp);
    t.into()
}

/// Pops the front threshold when `progress` reached it.
fn due(queue: &mut VecDeque<f64>, progress: f64) -> bool {
    if queue.front().is_some_and(|&t| progress >= t) {
        queue.pop_front();
        true
    } else {
        false
    }
}

/// One consumer as the chaos sees it.
pub struct Target {
    /// Notified to drop the consumer's Subscribe call without acking.
    pub drop_signal: Arc<Notify>,
    /// Whether it has a Subscribe call open now (only those are dropped: a signal to one that
    /// is reconnecting would be merged with the next).
    pub active: Arc<AtomicBool>,
}

/// Everything the chaos acts on.
pub struct Chaos {
    /// What to do.
    pub plan: Plan,
    /// The processes.
    pub fleet: Arc<Fleet>,
    /// Progress.
    pub ledger: Arc<Ledger>,
    /// The consumers.
    pub consumers: Vec<Target>,
    /// Thresholds, victims and down times.
    pub rng: Rng,
    /// When the run started (for the timeline).
    pub started: Instant,
    /// Cancelled when the run is over: no new action starts (a running one finishes).
    pub stop: CancellationToken,
}

/// Which progress figure an action waits for.
#[derive(Clone, Copy)]
enum Progress {
    /// Share of events accepted by the publisher.
    Accepted,
    /// Share of events acknowledged.
    Acked,
}

/// One kind of action.
#[derive(Clone, Copy)]
enum Action {
    /// SIGKILL + restart the publisher.
    KillPublisher,
    /// SIGKILL + restart a random subscriber replica.
    KillSubscriber,
    /// Drop a random connected consumer.
    DropConsumer,
    /// SIGSTOP redis-server, then SIGCONT.
    PauseRedis,
}

impl Chaos {
    /// Carries out the plan as progress passes its thresholds, until done or stopped. The four
    /// kinds of action are independent lanes running side by side (so a quick run is not
    /// over before a slow action lets the next one start); within a lane actions run one after
    /// another, so the two subscriber replicas are never down together.
    pub async fn run(mut self) -> Report {
        let plan = self.plan.clone();
        let pause = usize::from(!plan.redis_pause.is_zero());
        let lanes = [
            (Action::KillPublisher, Progress::Accepted, plan.publisher_kills, 0.05, 0.95),
            (Action::KillSubscriber, Progress::Acked, plan.subscriber_kills, 0.05, 0.95),
            (Action::DropConsumer, Progress::Acked, plan.consumer_drops, 0.02, 0.98),
            (Action::PauseRedis, Progress::Accepted, pause, 0.3, 0.7),
        ]
        .map(|(action, progress, count, lo, hi)| {
            let mut rng = self.rng.fork();
            let queue = thresholds(&mut rng, count, lo, hi);
            (action, progress, queue, rng)
        });
        let this = &self;
        let [a, b, c, d] = lanes.map(|(action, progress, queue, rng)| this.lane(action, progress, queue, rng));
        let (a, b, c, d) = tokio::join!(a, b, c, d);
        let mut report = Report::default();
        for part in [a, b, c, d] {
            report.publisher_kills += part.publisher_kills;
            report.subscriber_kills += part.subscriber_kills;
            report.consumer_drops += part.consumer_drops;
            report.redis_paused = report.redis_paused.or(part.redis_paused);
            report.errors.extend(part.errors);
        }
        report
    }

    /// Runs the actions of one lane as progress passes `queue`'s thresholds.
    async fn lane(&self, action: Action, progress: Progress, mut queue: VecDeque<f64>, mut rng: Rng) -> Report {
        let mut report = Report::default();
        let total = self.ledger.events.max(1) as f64;
        while !self.stop.is_cancelled() && !queue.is_empty() {
            let now = match progress {
                Progress::Accepted => self.ledger.accepted() as f64 / total,
                Progress::Acked => self.ledger.acked() as f64 / total,
            };
            let ready = match action {
                Action::DropConsumer => self.consumers.iter().any(|t| t.active.load(Ordering::Relaxed)),
                _ => true,
            };
            if ready && due(&mut queue, now) {
                let what = match progress {
                    Progress::Accepted => format!("accepted {:.1}%", now * 100.0),
                    Progress::Acked => format!("acked {:.1}%", now * 100.0),
                };
                match action {
                    Action::KillPublisher => {
                        if let Err(e) = self.kill_and_restart(None, &what, &mut rng).await {
                            report.errors.push(e);
                        }
                        report.publisher_kills += 1;
                    }
                    Action::KillSubscriber => {
                        let victim = rng.below(self.fleet.subscribers.len() as u64) as usize;
                        if let Err(e) = self.kill_and_restart(Some(victim), &what, &mut rng).await {
                            report.errors.push(e);
                        }
                        report.subscriber_kills += 1;
                    }
                    Action::DropConsumer => {
                        let active: Vec<&Target> =
                            self.consumers.iter().filter(|t| t.active.load(Ordering::Relaxed)).collect();
                        let victim = active[rng.below(active.len() as u64) as usize];
                        victim.active.store(false, Ordering::Relaxed);
                        victim.drop_signal.notify_one();
                        report.consumer_drops += 1;
                    }
                    Action::PauseRedis => match self.pause_redis(&what).await {
                        Ok(paused) => report.redis_paused = Some(paused),
                        Err(e) => report.errors.push(e),
                    },
                }
                continue;
            }
            tokio::select! {
                () = self.stop.cancelled() => break,
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        report
    }

    /// SIGKILLs the publisher (`None`) or subscriber replica `Some(i)`, leaves it down for a
    /// moment (clients meet refused connections), restarts it and waits until it is SERVING.
    async fn kill_and_restart(&self, subscriber: Option<usize>, progress: &str, rng: &mut Rng) -> Result<(), String> {
        let service = match subscriber {
            None => &self.fleet.publisher,
            Some(i) => &self.fleet.subscribers[i],
        };
        let killed_at = self.started.elapsed();
        service.kill().await;
        let down = Duration::from_millis(200 + rng.below(1800));
        tokio::time::sleep(down).await;
        let restart = Instant::now();
        let mut result = Err(String::new());
        for _ in 0..3 {
            result = service.start().await;
            if result.is_ok() {
                break;
            }
        }
        let outcome = match &result {
            Ok(()) => format!("SERVING again {:.1} s after the restart", restart.elapsed().as_secs_f64()),
            Err(e) => format!("did NOT come back: {e}"),
        };
        println!(
            "soak: t={:>6.1}s chaos: SIGKILL {} ({progress}), down {:.1} s, {outcome}",
            killed_at.as_secs_f64(),
            service.name,
            down.as_secs_f64()
        );
        result.map_err(|e| format!("restart of {}: {e}", service.name))
    }

    /// SIGSTOPs redis-server for the planned time, then SIGCONTs it.
    async fn pause_redis(&self, progress: &str) -> Result<Duration, String> {
        let pid = self.fleet.redis_pid;
        let stopped_at = self.started.elapsed();
        signal(pid, "STOP")?;
        let stopped = Instant::now();
        tokio::time::sleep(self.plan.redis_pause).await;
        let resumed = signal(pid, "CONT");
        let paused = stopped.elapsed();
        println!(
            "soak: t={:>6.1}s chaos: SIGSTOP redis-server ({progress}) for {:.1} s, then SIGCONT",
            stopped_at.as_secs_f64(),
            paused.as_secs_f64()
        );
        resumed.map(|()| paused)
    }
}
