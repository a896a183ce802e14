//! `make bench`: eventflow's figures next to direct redis-rs on the same redis-server, next to
//! NATS JetStream and the gRPC no-op ceiling, in one run on one machine (design §6); then
//! memory and scale figures of the release binaries.
//!
//! The bench starts its own redis-server (AOF `appendfsync everysec`, as deployed, or off), its
//! own `nats-server -js` ([`nats`]) and the publisher, subscriber and admin services in-process
//! on `127.0.0.1:0`; clients, services and the baselines all share this process's Tokio runtime
//! and the machine's cores, so each ratio compares two ways of using the same CPU. Every figure
//! is measured after a warm-up of the same shape, printed on its own line with where its CPU
//! went, and ends in `RESULT` lines ([`result`]), one per peer. The batch-publish and
//! Subscribe + Acknowledge figures are each the median of `--rounds` alternated rounds
//! ([`rounds`]).
//!
//! 1. `batch_publish`: Publish requests of 100 events vs. pipelines of 100 XADDs and JetStream
//!    async publish in batches of 100; `stream_publish`: the same events over one
//!    PublishStream call (requests of 100, 16 unanswered at most) vs. JetStream async publish.
//! 2. `unary_publish`: 64 concurrent callers of one-event Publish vs. 64 concurrent XADDs, the
//!    tonic no-op unary call (health Check) and JetStream publish + awaited ack.
//! 3. `subscribe_ack`: Subscribe + Acknowledge of pre-published events vs. an XREADGROUP +
//!    XACK loop in its own consumer group on the same stream, and a JetStream pull consumer;
//!    `subscribe_ack_native`: the same Subscribe + Acknowledge against a stream without a size
//!    mark, whose reads all go through the READ_NEW script (native reads vs. the script).
//!    `client_publish` / `client_subscribe_ack`: the same through the Rust client library
//!    ([`client`]), for information.
//! 4. `e2e_latency`: publish -> delivery at a fixed offered rate, p50 / p99.
//! 5. `cluster`: batch Publish and Subscribe + Acknowledge over six streams on one
//!    redis-server and on a 3-master Redis Cluster, with Redis CPU per node ([`cluster`]).
//! 6. `relay`: the outbox relay's commit -> entry latency (NOTIFY) and rows/s ([`relay`]).
//! 7. `scale`: the release binaries as processes: peak RSS, rates at 10 M entries vs. 10 k,
//!    GetStreamStats with 1 M pending ([`scale`]).

// A measurement tool, not service code: a broken setup or a failed call must stop the run
// loudly rather than print a figure that measured nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod archive;
mod client;
mod cluster;
mod consume;
mod measure;
mod nats;
mod push;
// The release binaries as processes, shared with `eventflow-soak` (which uses all of it; the
// scale figures only start, sample and stop them).
#[allow(dead_code)]
#[path = "soak/procs.rs"]
mod procs;
mod publish;
mod relay;
mod result;
mod rounds;
mod scale;
mod setup;

use std::time::{Duration, Instant};

use clap::Parser;
use result::Target;

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
    /// Rounds of the batch-publish and Subscribe + Acknowledge figures, each figure the median
    /// round ([`rounds`]).
    #[arg(long, env = "BENCH_ROUNDS", default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..))]
    pub rounds: u16,
    /// Events published in each measured batch-publish run (each side).
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
    /// Requests of one PublishStream call sent and not yet answered (the stream-publish figure
    /// sends `batch_size` events per request over one call).
    #[arg(long, env = "BENCH_STREAM_WINDOW", default_value_t = 16)]
    pub stream_window: usize,
    /// Events published in the measured unary-publish run (each side and baseline).
    #[arg(long, env = "BENCH_UNARY_EVENTS", default_value_t = 30_000)]
    pub unary_events: usize,
    /// Concurrent unary callers / XADD awaiters.
    #[arg(long, env = "BENCH_UNARY_CALLERS", default_value_t = 64)]
    pub unary_callers: usize,
    /// Events consumed in each measured subscribe run (each side).
    #[arg(long, env = "BENCH_SUBSCRIBE_EVENTS", default_value_t = 100_000)]
    pub subscribe_events: usize,
    /// `max_outstanding_messages` of the Subscribe calls.
    #[arg(long, env = "BENCH_MAX_OUTSTANDING", default_value_t = 1000)]
    pub max_outstanding: i32,
    /// COUNT of the baseline's XREADGROUP.
    #[arg(long, env = "BENCH_READ_COUNT", default_value_t = 1000)]
    pub read_count: usize,
    /// Offered publish rate of the latency run, events per second (one event per request).
    #[arg(long, env = "BENCH_LATENCY_RATE", default_value_t = 5000)]
    pub latency_rate: u32,
    /// Measured seconds of the latency run (after one second of warm-up).
    #[arg(long, env = "BENCH_LATENCY_SECS", default_value_t = 5)]
    pub latency_secs: u64,
    /// Entries preloaded into the big stream of the scale figures (compared with 10 000).
    #[arg(long, env = "BENCH_SCALE_ENTRIES", default_value_t = 10_000_000)]
    pub scale_entries: usize,
    /// Events published and consumed in each measured run of the scale figures.
    #[arg(long, env = "BENCH_SCALE_EVENTS", default_value_t = 50_000)]
    pub scale_events: usize,
    /// Idle Subscribe sessions held open on the subscriber binary during the scale figures.
    #[arg(long, env = "BENCH_SCALE_SESSIONS", default_value_t = 1000)]
    pub scale_sessions: usize,
    /// Entries read into a group without ack before GetStreamStats is timed.
    #[arg(long, env = "BENCH_STATS_PENDING", default_value_t = 1_000_000)]
    pub stats_pending: usize,
    /// Events of the push-rate run (published in requests of `batch_size`).
    #[arg(long, env = "BENCH_PUSH_EVENTS", default_value_t = 20_000)]
    pub push_events: usize,
    /// `max_concurrency` of the bench's push subscriptions (pushes in flight).
    #[arg(long, env = "BENCH_PUSH_CONCURRENCY", default_value_t = 64)]
    pub push_concurrency: i32,
    /// Offered rate of the push-latency run, events per second (one event per request).
    #[arg(long, env = "BENCH_PUSH_LATENCY_RATE", default_value_t = 1000)]
    pub push_latency_rate: u32,
    /// Events of each ordered-subscription run (`BENCH_ONLY=ordered`), spread over
    /// `ordered_keys` ordering keys.
    #[arg(long, env = "BENCH_ORDERED_EVENTS", default_value_t = 20_000)]
    pub ordered_events: usize,
    /// Ordering keys (`partitionkey`) of the ordered-subscription runs.
    #[arg(long, env = "BENCH_ORDERED_KEYS", default_value_t = 1000)]
    pub ordered_keys: usize,
    /// Events of the archive ingest run (published first, then archived).
    #[arg(long, env = "BENCH_ARCHIVE_EVENTS", default_value_t = 200_000)]
    pub archive_events: usize,
    /// QueryEvents calls of the archive query figure.
    #[arg(long, env = "BENCH_ARCHIVE_QUERIES", default_value_t = 1000)]
    pub archive_queries: usize,
    /// Outbox rows of the relay-rate run (committed in one transaction).
    #[arg(long, env = "BENCH_RELAY_ROWS", default_value_t = 100_000)]
    pub relay_rows: usize,
    /// Offered rate of the relay-latency run, rows per second (one row per transaction).
    #[arg(long, env = "BENCH_RELAY_LATENCY_RATE", default_value_t = 1000)]
    pub relay_latency_rate: u32,
    /// Run only these benchmarks (comma-separated: batch, unary, subscribe, client, latency, push,
    /// ordered, archive, relay, cluster, scale).
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
    pub async fn finish(redis_url: &str, probe: measure::Probe, events: usize, start: Instant) -> Self {
        let rate = per_second(events, start.elapsed());
        Self { rate, events, usage: probe.end(redis_url).await }
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
/// indented line per side on where its time went, then the figure's `RESULT` line against the
/// baseline (labelled `result_label`).
fn report(name: &str, eventflow: &Run, baseline: (&str, &str, &Run), target: Target) {
    let (baseline_label, result_label, baseline) = baseline;
    let (eventflow_rate, baseline_rate) = (eventflow.rate, baseline.rate);
    let ratio = eventflow_rate / baseline_rate.max(1e-9);
    let verdict = match target {
        Target::Ratio(min) if ratio >= min => format!("target >= {min}x: met"),
        Target::Ratio(min) => format!("target >= {min}x: MISSED"),
        _ => "no target".to_string(),
    };
    println!(
        "{name}: eventflow {eventflow_rate:.0} ev/s, {baseline_label} {baseline_rate:.0} ev/s, ratio {ratio:.2}x \
         ({verdict})"
    );
    println!("    {name} cost, eventflow: {}", eventflow.describe());
    println!("    {name} cost, baseline:  {}", baseline.describe());
    result::print(name, eventflow_rate, Some((result_label, baseline_rate)), target);
}

/// Prints a JetStream peer's figure and cost, then the `RESULT` line of eventflow's `rate`
/// against it (labelled `result_label`).
fn report_peer(name: &str, rate: f64, peer: (&str, &str, &nats::PeerRun), target: Target) {
    let (label, result_label, run) = peer;
    println!("{name} peer: {label} {:.0} ev/s; cost: {}", run.rate, run.describe());
    result::print(name, rate, Some((result_label, run.rate)), target);
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let started = Instant::now();
    let env = setup::Env::start(&args).await;
    println!("{}", env.describe().await);
    let peers = ["batch", "unary", "subscribe", "client"].iter().any(|b| args.runs(b));
    let nats = if peers { Some(nats::NatsServer::start().await) } else { None };
    if let Some(server) = &nats {
        println!(
            "setup: {} on {} (JetStream, file storage in a temporary directory; one stream per figure)",
            nats::NatsServer::version(),
            server.url
        );
    }
    let plan = |stream: &str| nats::Plan { stream: stream.into(), bytes: args.event_bytes, dedup: args.dedup };

    if let Some(server) = nats.as_ref().filter(|_| args.runs("batch")) {
        batch_figures(&env, server, &args, &plan("batch")).await;
    }
    if let Some(server) = nats.as_ref().filter(|_| args.runs("unary")) {
        unary_figures(&env, server, &args, &plan("unary")).await;
    }
    if let Some(server) = nats.as_ref().filter(|_| args.runs("subscribe")) {
        subscribe_figures(&env, server, &args, &plan("sub")).await;
    }
    if let Some(server) = nats.as_ref().filter(|_| args.runs("client")) {
        client_figures(&env, server, &args, &plan("client")).await;
    }
    drop(nats);
    if args.runs("latency") {
        latency_figures(&env, &args).await;
    }
    if args.runs("push") {
        push_figures(&env, &args).await;
    }
    if args.runs("ordered") {
        let r = consume::ordered(&env, &args).await;
        let label = format!("the same events on an unordered subscription, max_outstanding {}", args.max_outstanding);
        println!(
            "ordered_subscribe_ack: {} events over {} ordering keys, one Subscribe call, max_outstanding {}",
            args.ordered_events, args.ordered_keys, args.max_outstanding
        );
        report("ordered_subscribe_ack", &r.eventflow, (&label, "eventflow_unordered", &r.baseline), Target::None);
    }
    if args.runs("archive") {
        archive_figures(&env, &args).await;
    }
    if args.runs("relay") {
        relay_figures(&env, &args).await;
    }
    env.stop().await;
    if args.runs("cluster") {
        cluster::run(&args).await;
    }
    if args.runs("scale") {
        scale::run(&args).await;
    }
    println!("bench: done in {:.1} s", started.elapsed().as_secs_f64());
}

/// Batch Publish and PublishStream against pipelined XADD and JetStream async publish, in
/// rounds ([`rounds`]).
async fn batch_figures(env: &setup::Env, server: &nats::NatsServer, args: &Args, plan: &nats::Plan) {
    let (n, size, workers) = (args.batch_events, args.batch_size, args.batch_concurrency);
    let (mut published, mut streamed, mut xadd, mut peer) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..usize::from(args.rounds) {
        if rounds::eventflow_first(round) {
            published.push(publish::batch(env, args, round).await);
            streamed.push(publish::stream(env, args, round).await);
            xadd.push(publish::pipelined(env, args, round).await);
            peer.push(nats::batch(server, &plan.round(round), n, size, workers).await);
        } else {
            peer.push(nats::batch(server, &plan.round(round), n, size, workers).await);
            xadd.push(publish::pipelined(env, args, round).await);
            streamed.push(publish::stream(env, args, round).await);
            published.push(publish::batch(env, args, round).await);
        }
    }
    rounds::print(
        "batch_publish",
        &[
            ("eventflow Publish", published.iter().map(|r| r.rate).collect()),
            ("PublishStream", streamed.iter().map(|r| r.rate).collect()),
            ("pipelined XADD", xadd.iter().map(|r| r.rate).collect()),
            ("JetStream", peer.iter().map(|r| r.rate).collect()),
        ],
    );
    let (published, streamed) = (rounds::median_run(published), rounds::median_run(streamed));
    let (xadd, peer) = (rounds::median_run(xadd), rounds::median(peer, |r| r.rate));
    let label = format!("redis-rs pipelined XADD ({size} per pipeline, {workers} pipelines in flight)");
    report("batch_publish", &published, (&label, "redis_xadd_pipelined", &xadd), Target::Ratio(0.7));
    let label = format!("JetStream async publish (file storage, {size} per batch, {workers} batches in flight)");
    report_peer("batch_publish", published.rate, (&label, "jetstream_async_publish", &peer), Target::Ratio(1.0));
    println!(
        "stream_publish: eventflow {:.0} ev/s (one PublishStream call, {size} events per request, {} requests \
         unanswered at most)\n    eventflow: {}",
        streamed.rate,
        args.stream_window,
        streamed.describe()
    );
    report_peer("stream_publish", streamed.rate, (&label, "jetstream_async_publish", &peer), Target::Ratio(1.0));
}

/// Subscribe + Acknowledge against an XREADGROUP + XACK loop and a JetStream pull consumer, in
/// rounds ([`rounds`]); then once against reads by script.
async fn subscribe_figures(env: &setup::Env, server: &nats::NatsServer, args: &Args, plan: &nats::Plan) {
    let (n, fetch) = (args.subscribe_events, args.read_count);
    consume::subscribe_prepare(env, args).await;
    let (mut eventflow, mut direct, mut peer) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..usize::from(args.rounds) {
        if rounds::eventflow_first(round) {
            eventflow.push(consume::subscribe_eventflow(env, args, round).await);
            direct.push(consume::subscribe_direct(env, args, round).await);
            peer.push(nats::subscribe(server, &plan.round(round), n, fetch).await);
        } else {
            peer.push(nats::subscribe(server, &plan.round(round), n, fetch).await);
            direct.push(consume::subscribe_direct(env, args, round).await);
            eventflow.push(consume::subscribe_eventflow(env, args, round).await);
        }
    }
    rounds::print(
        "subscribe_ack",
        &[
            ("eventflow", eventflow.iter().map(|r| r.rate).collect()),
            ("XREADGROUP + XACK", direct.iter().map(|r| r.rate).collect()),
            ("JetStream", peer.iter().map(|r| r.rate).collect()),
        ],
    );
    let (eventflow, direct) = (rounds::median_run(eventflow), rounds::median_run(direct));
    let peer = rounds::median(peer, |r| r.rate);
    let label = format!("redis-rs XREADGROUP COUNT {fetch} + XACK loop");
    report("subscribe_ack", &eventflow, (&label, "redis_xreadgroup_xack", &direct), Target::Ratio(0.7));
    let label = format!("JetStream pull consumer (fetch {fetch}, explicit ack per message)");
    report_peer("subscribe_ack", eventflow.rate, (&label, "jetstream_pull_ack", &peer), Target::None);
    let script = consume::subscribe_by_script(env, args).await;
    let label = "eventflow reading a stream without a size mark (every new-entry read by READ_NEW)";
    report("subscribe_ack_native", &eventflow, (label, "eventflow_read_new", &script), Target::None);
}

/// Unary Publish against redis-rs XADD, the tonic no-op unary ceiling and JetStream
/// publish+ack, all with the same number of concurrent callers.
async fn unary_figures(env: &setup::Env, server: &nats::NatsServer, args: &Args, plan: &nats::Plan) {
    let r = publish::unary(env, args).await;
    let callers = args.unary_callers;
    println!(
        "unary_publish_baselines: redis-rs XADD, {callers} tasks sharing one MultiplexedConnection {:.0} ev/s; \
         one MultiplexedConnection per task {:.0} ev/s (the stronger is the baseline)",
        r.shared.rate, r.per_task.rate
    );
    let (label, baseline) = if r.shared.rate >= r.per_task.rate {
        ("redis-rs XADD (one shared MultiplexedConnection)", &r.shared)
    } else {
        ("redis-rs XADD (one MultiplexedConnection per awaiter)", &r.per_task)
    };
    let label = format!("{label}, {callers} concurrent awaiters");
    report("unary_publish", &r.eventflow, (&label, "redis_xadd", baseline), Target::None);
    publish::health_ceiling(env, warmup(args.unary_events), callers).await;
    let ceiling = publish::health_ceiling(env, args.unary_events, callers).await;
    let label = format!("tonic no-op unary call (grpc.health.v1 Check on the publisher's server), {callers} callers");
    report("unary_publish", &r.eventflow, (&label, "grpc_noop_unary", &ceiling), Target::Ratio(0.8));
    let peer = nats::unary(server, plan, args.unary_events, callers).await;
    let label = format!("JetStream publish + awaited ack, {callers} callers");
    report_peer("unary_publish", r.eventflow.rate, (&label, "jetstream_publish_ack", &peer), Target::None);
}

/// The client library's publish and Subscribe + Acknowledge figures ([`client`]).
async fn client_figures(env: &setup::Env, server: &nats::NatsServer, args: &Args, plan: &nats::Plan) {
    let callers = args.unary_callers;
    let published = client::publish(env, args).await;
    println!(
        "client_publish: eventflow-client Publisher {:.0} ev/s ({callers} callers, each awaiting its event's result; \
         the library batches them)\n    client_publish cost: {}",
        published.rate,
        published.describe()
    );
    let peer = nats::unary(server, plan, args.batch_events, callers).await;
    let label = format!("JetStream publish + awaited ack, {callers} callers");
    report_peer("client_publish", published.rate, (&label, "jetstream_publish_ack", &peer), Target::None);
    let (subscribed, baseline) = client::subscribe(env, args).await;
    let label = format!("redis-rs XREADGROUP COUNT {} + XACK loop", args.read_count);
    report("client_subscribe_ack", &subscribed, (&label, "redis_xreadgroup_xack", &baseline), Target::None);
}

/// The archive: ingest rate into PostgreSQL and QueryEvents p99 over 1 M rows.
async fn archive_figures(env: &setup::Env, args: &Args) {
    let r = archive::run(env, args).await;
    println!(
        "archive: ingest {:.0} ev/s ({} events published first, then archived in batches of 1000 into a PostgreSQL \
         with fsync on); QueryEvents over 1 M rows, one-hour window, page of 100: p50 {:.2} ms, p99 {:.2} ms ({} calls)",
        r.ingest_rate, args.archive_events, r.query_p50_ms, r.query_p99_ms, args.archive_queries
    );
    result::print("archive_ingest_rate", r.ingest_rate, None, Target::AtLeast(30_000.0));
    result::print("archive_query_p99_ms", r.query_p99_ms, None, Target::AtMost(20.0));
}

/// Webhook push: events pushed per second to a local receiver, and publish -> receipt latency.
async fn push_figures(env: &setup::Env, args: &Args) {
    let r = push::run(env, args).await;
    println!(
        "push: {:.0} ev/s received by a local webhook endpoint ({} events, {} pushes in flight at most, each push \
         its own connection); latency p50 {:.2} ms, p99 {:.2} ms ({} events at {} ev/s offered, one per Publish)",
        r.rate, args.push_events, args.push_concurrency, r.p50_ms, r.p99_ms, r.events, args.push_latency_rate
    );
    result::print("push_rate", r.rate, None, Target::None);
    result::print("push_latency_p50_ms", r.p50_ms, None, Target::None);
    result::print("push_latency_p99_ms", r.p99_ms, None, Target::None);
}

/// The outbox relay: commit -> entry latency through NOTIFY, and rows published per second.
async fn relay_figures(env: &setup::Env, args: &Args) {
    let r = relay::run(env, args).await;
    println!(
        "relay: {:.0} rows/s published ({} rows committed at once, 100 partition keys); commit -> entry latency \
         p50 {:.2} ms, p99 {:.2} ms ({} rows at {} rows/s offered, one row per transaction)",
        r.rate, args.relay_rows, r.p50_ms, r.p99_ms, r.rows, args.relay_latency_rate
    );
    let target = if args.relay_latency_rate == 1000 { Target::AtMost(20.0) } else { Target::None };
    result::print("relay_rate", r.rate, None, Target::AtLeast(20_000.0));
    result::print("relay_latency_p50_ms", r.p50_ms, None, Target::None);
    result::print("relay_latency_p99_ms", r.p99_ms, None, target);
}

/// Publish -> delivery latency; the p99 target holds at 5 000 ev/s offered, so at another rate
/// the figure is for information.
async fn latency_figures(env: &setup::Env, args: &Args) {
    let r = consume::latency(env, args).await;
    println!(
        "e2e_latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (publish -> delivery, {} events at {} ev/s offered, \
         {:.0} ev/s achieved, one event per Publish; the Publish call itself p50 {:.2} ms, p99 {:.2} ms)",
        r.p50_ms, r.p99_ms, r.max_ms, r.events, args.latency_rate, r.achieved, r.publish_p50_ms, r.publish_p99_ms
    );
    println!("    e2e_latency cost (warm-up included): {}", r.usage.0.describe(r.usage.1, 6));
    let target = if args.latency_rate == 5000 { Target::AtMost(2.0) } else { Target::None };
    result::print("e2e_latency_p50_ms", r.p50_ms, None, Target::None);
    result::print("e2e_latency_p99_ms", r.p99_ms, None, target);
}
