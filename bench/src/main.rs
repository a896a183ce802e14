//! `make bench`: eventflow's figures next to direct redis-rs on the same redis-server, in one
//! run on one machine (design §6).
//!
//! The bench starts its own redis-server (AOF `appendfsync everysec`, as deployed, or off) and
//! the publisher, subscriber and admin services in-process on `127.0.0.1:0`; clients, services
//! and the redis-rs baselines all share this process's Tokio runtime and the machine's cores,
//! so each ratio compares two ways of using the same CPU and the same Redis. Every figure is
//! measured after a warm-up of the same shape, and printed on its own line with its target.
//!
//! 1. `batch_publish`: Publish requests of 100 events vs. pipelines of 100 XADDs.
//! 2. `unary_publish`: 64 concurrent callers of one-event Publish vs. 64 concurrent XADDs.
//! 3. `subscribe_ack`: Subscribe + Acknowledge of pre-published events vs. an XREADGROUP +
//!    XACK loop in its own consumer group on the same stream.
//! 4. `e2e_latency`: publish -> delivery at a fixed offered rate, p50 / p99.

// A measurement tool, not service code: a broken setup or a failed call must stop the run
// loudly rather than print a figure that measured nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod consume;
mod measure;
mod publish;
mod setup;

use std::time::{Duration, Instant};

use clap::Parser;

/// What to run and how much of it. Every flag has a `BENCH_*` environment fallback.
#[derive(Debug, Clone, Parser)]
#[command(name = "eventflow-bench", about = "eventflow vs. direct redis-rs on the same redis-server")]
pub struct Args {
    /// Redis persistence: `everysec` (AOF, fsync every second: what deployments run) or `no`
    /// (AOF off).
    #[arg(long, env = "BENCH_AOF", default_value = "everysec", value_parser = ["everysec", "no"])]
    pub aof: String,
    /// Bytes of data per event.
    #[arg(long, env = "BENCH_EVENT_BYTES", default_value_t = 256)]
    pub event_bytes: usize,
    /// Events published in the measured batch-publish run (each side).
    #[arg(long, env = "BENCH_BATCH_EVENTS", default_value_t = 100_000)]
    pub batch_events: usize,
    /// Whether eventflow streams keep the default 10-minute dedup window (`false`: created with
    /// dedup disabled, to see what the dedup check and key cost per event).
    #[arg(long, env = "BENCH_DEDUP", default_value_t = true, action = clap::ArgAction::Set)]
    pub dedup: bool,
    /// Events per Publish request / per XADD pipeline.
    #[arg(long, env = "BENCH_BATCH_SIZE", default_value_t = 100)]
    pub batch_size: usize,
    /// Batch requests (pipelines) in flight at once, on each side.
    #[arg(long, env = "BENCH_BATCH_CONCURRENCY", default_value_t = 4)]
    pub batch_concurrency: usize,
    /// Events published in the measured unary-publish run (each side and baseline).
    #[arg(long, env = "BENCH_UNARY_EVENTS", default_value_t = 30_000)]
    pub unary_events: usize,
    /// Concurrent unary callers / XADD awaiters.
    #[arg(long, env = "BENCH_UNARY_CALLERS", default_value_t = 64)]
    pub unary_callers: usize,
    /// Events consumed in the measured subscribe run (each side).
    #[arg(long, env = "BENCH_SUBSCRIBE_EVENTS", default_value_t = 100_000)]
    pub subscribe_events: usize,
    /// `max_outstanding_messages` of the Subscribe calls.
    #[arg(long, env = "BENCH_MAX_OUTSTANDING", default_value_t = 1000)]
    pub max_outstanding: i32,
    /// COUNT of the baseline's XREADGROUP.
    #[arg(long, env = "BENCH_READ_COUNT", default_value_t = 1000)]
    pub read_count: usize,
    /// Offered publish rate of the latency run, events per second (one event per request).
    #[arg(long, env = "BENCH_LATENCY_RATE", default_value_t = 1000)]
    pub latency_rate: u32,
    /// Measured seconds of the latency run (after one second of warm-up).
    #[arg(long, env = "BENCH_LATENCY_SECS", default_value_t = 5)]
    pub latency_secs: u64,
    /// Run only these benchmarks (comma-separated: batch, unary, subscribe, latency).
    #[arg(long, env = "BENCH_ONLY", value_delimiter = ',')]
    pub only: Vec<String>,
}

impl Args {
    fn runs(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == name)
    }
}

/// Warm-up size for a measured run of `n`: a tenth, at least 1000 (or `n` itself if smaller).
pub fn warmup(n: usize) -> usize {
    (n / 10).max(1000).min(n)
}

/// One timed run: its rate and what it cost.
pub struct Run {
    /// Events per second.
    pub rate: f64,
    /// Events in the run.
    pub events: usize,
    /// CPU and Redis command time it took.
    pub usage: measure::Usage,
}

impl Run {
    /// Ends a run of `events` that started at `start` with `probe` taken.
    pub async fn finish(env: &setup::Env, probe: measure::Probe, events: usize, start: Instant) -> Self {
        let rate = per_second(events, start.elapsed());
        Self { rate, events, usage: probe.end(env).await }
    }

    /// Where this run's time went, per event.
    fn describe(&self) -> String {
        self.usage.describe(self.events, 4)
    }
}

/// Events per second.
pub fn per_second(events: usize, elapsed: Duration) -> f64 {
    events as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// Prints one comparison line (figure, baseline, ratio, whether it meets the target), then one
/// indented line per side on where its time went.
fn report(name: &str, eventflow: &Run, baseline_label: &str, baseline: &Run, target: f64) {
    let (eventflow_rate, baseline_rate) = (eventflow.rate, baseline.rate);
    let ratio = eventflow_rate / baseline_rate.max(1e-9);
    let verdict = if ratio >= target { "met" } else { "MISSED" };
    println!(
        "{name}: eventflow {eventflow_rate:.0} ev/s, {baseline_label} {baseline_rate:.0} ev/s, ratio {ratio:.2}x \
         (target >= {target}x: {verdict})"
    );
    println!("    {name} cost, eventflow: {}", eventflow.describe());
    println!("    {name} cost, baseline:  {}", baseline.describe());
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let started = Instant::now();
    let env = setup::Env::start(&args).await;
    println!("{}", env.describe().await);

    if args.runs("batch") {
        let r = publish::batch(&env, &args).await;
        report(
            "batch_publish",
            &r.eventflow,
            &format!(
                "redis-rs pipelined XADD ({} per pipeline, {} pipelines in flight)",
                args.batch_size, args.batch_concurrency
            ),
            &r.baseline,
            0.7,
        );
    }
    if args.runs("unary") {
        let r = publish::unary(&env, &args).await;
        println!(
            "unary_publish_baselines: redis-rs XADD, {} tasks sharing one MultiplexedConnection {:.0} ev/s; \
             one MultiplexedConnection per task {:.0} ev/s (the stronger is the baseline)",
            args.unary_callers, r.shared.rate, r.per_task.rate
        );
        let (label, baseline) = if r.shared.rate >= r.per_task.rate {
            ("redis-rs XADD (one shared MultiplexedConnection)", &r.shared)
        } else {
            ("redis-rs XADD (one MultiplexedConnection per awaiter)", &r.per_task)
        };
        report(
            "unary_publish",
            &r.eventflow,
            &format!("{label}, {} concurrent awaiters", args.unary_callers),
            baseline,
            1.0,
        );
    }
    if args.runs("subscribe") {
        let r = consume::subscribe(&env, &args).await;
        report(
            "subscribe_ack",
            &r.eventflow,
            &format!("redis-rs XREADGROUP COUNT {} + XACK loop", args.read_count),
            &r.baseline,
            0.7,
        );
    }
    if args.runs("latency") {
        let r = consume::latency(&env, &args).await;
        println!(
            "e2e_latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (publish -> delivery, {} events at {} ev/s offered, \
             {:.0} ev/s achieved, one event per Publish)",
            r.p50_ms, r.p99_ms, r.max_ms, r.events, args.latency_rate, r.achieved
        );
    }
    env.stop().await;
    println!("bench: done in {:.1} s", started.elapsed().as_secs_f64());
}
