//! What batched settlement saves: an `#[ignore]`d measurement, not a check. It publishes
//! `SETTLE_COST_EVENTS` events (20000), then consumes them with one subscriber of
//! `SETTLE_COST_CONCURRENCY` slots (16, the default) and an instant handler, once per batch
//! size in `SETTLE_COST_BATCHES` ("1,1000", alternating, `SETTLE_COST_ROUNDS` rounds of each),
//! and prints per run: events/s, the redis-server's CPU per event (INFO cpu), this process's
//! CPU per event (the client and the in-process subscriber service), Redis calls per event
//! (INFO commandstats) and settlement calls.
//!
//! `cargo nextest run -p eventflow-client --run-ignored only --no-capture -E 'test(settle_cost)'`

use std::{
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use eventflow_client::{CancellationToken, Connection, Outcome, Subscriber, SubscriberConfig};
use eventflow_e2e::{Stack, event};

/// An environment setting, or `default`.
fn setting<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `INFO <section>` of the redis-server on `port`, as `field -> value` lines.
fn info(port: u16, section: &str) -> String {
    let out = Command::new("redis-cli").args(["-p", &port.to_string(), "INFO", section]).output().unwrap();
    String::from_utf8(out.stdout).unwrap()
}

/// The redis-server's CPU seconds (user + system).
fn redis_cpu(port: u16) -> f64 {
    info(port, "cpu")
        .lines()
        .filter_map(|l| l.strip_prefix("used_cpu_sys:").or_else(|| l.strip_prefix("used_cpu_user:")))
        .map(|v| v.trim().parse::<f64>().unwrap())
        .sum()
}

/// Commands the redis-server has run (the sum of `calls=` in INFO commandstats).
fn redis_calls(port: u16) -> u64 {
    info(port, "commandstats")
        .lines()
        .filter_map(|l| l.split("calls=").nth(1))
        .map(|v| v.split(',').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// This process's CPU seconds (user + system, from /proc/self/stat, in clock ticks of 10 ms).
fn process_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run it by hand"]
async fn settle_cost() {
    let events: usize = setting("SETTLE_COST_EVENTS", 20_000);
    let concurrency: usize = setting("SETTLE_COST_CONCURRENCY", 16);
    let rounds: usize = setting("SETTLE_COST_ROUNDS", 3);
    let batches: Vec<usize> =
        setting("SETTLE_COST_BATCHES", "1,1000".to_string()).split(',').map(|b| b.trim().parse().unwrap()).collect();
    let stack = Stack::start().await;
    let port = stack.redis.port();
    stack.create_stream("s").await;
    let connection = Connection::plain(format!("http://{}", stack.subscriber.addr)).unwrap();
    for round in 0..rounds {
        for &batch in &batches {
            let sub = format!("r{round}-b{batch}");
            stack.create_subscription("s", &sub, 30, 0).await;
            if round == 0 && batch == batches[0] {
                for chunk in 0..events.div_ceil(500) {
                    let n = (events - chunk * 500).min(500);
                    stack.publish("s", (0..n).map(|i| event(&format!("e-{chunk}-{i}"), "t")).collect()).await;
                }
            }
            let config = SubscriberConfig {
                max_concurrency: concurrency,
                ack_batch_size: batch,
                ..SubscriberConfig::new("s", sub.as_str())
            };
            let subscriber = Arc::new(Subscriber::new(&connection, config));
            let shutdown = CancellationToken::new();
            let (cpu0, redis0, calls0, t0) = (process_cpu(), redis_cpu(port), redis_calls(port), Instant::now());
            let running = {
                let (subscriber, shutdown) = (subscriber.clone(), shutdown.clone());
                tokio::spawn(async move { subscriber.run(|_| async { Outcome::Ack }, shutdown).await })
            };
            while subscriber.stats().acked < events as u64 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let elapsed = t0.elapsed().as_secs_f64();
            let (cpu, redis, calls) = (process_cpu() - cpu0, redis_cpu(port) - redis0, redis_calls(port) - calls0);
            shutdown.cancel();
            running.await.unwrap().unwrap();
            let per = |x: f64| x * 1e6 / events as f64;
            let stats = subscriber.stats();
            println!(
                "settle_cost batch={batch} concurrency={concurrency} events={events}: {:.0} ev/s, redis {:.1} us/ev, \
                 process {:.1} us/ev, redis calls {:.2}/ev, settle calls {} ({:.1} ids/call)",
                events as f64 / elapsed,
                per(redis),
                per(cpu),
                calls as f64 / events as f64,
                stats.settle_calls,
                stats.acked as f64 / stats.settle_calls.max(1) as f64,
            );
        }
    }
}
