//! Memory and scale figures (`BENCH_ONLY=scale`): the real release binaries as separate
//! processes, so each one's memory is its own.
//!
//! How it works:
//! 1. A redis-server of its own (AOF off: the figures compare stream lengths, and an AOF rewrite
//!    of millions of preloaded entries would land in one of the timed runs) and the publisher,
//!    one subscriber, admin and dlq binaries from this binary's directory (`target/release`),
//!    started as `make soak` starts them ([`procs::Fleet`]). Their VmHWM is sampled from
//!    `/proc` four times a second for the whole part.
//! 2. `--scale-sessions` Subscribe calls are opened on an idle stream and held open throughout
//!    (the subscriber runs with `--max-sessions` 16 above that, for the measured sessions).
//!    Their idle cost is measured first: Redis commands a second, redis-server and subscriber
//!    CPU, over [`IDLE_SECS`] with nothing published.
//! 3. For a stream preloaded with 10 k entries and one preloaded with `--scale-entries`
//!    (10 M by default; pipelined XADD straight into the stream's Redis key, 16-byte entries,
//!    timed), a subscription at `latest` is created and warmed up; then the same batch-publish
//!    and Subscribe + Acknowledge runs as the main figures are measured on new events, the two
//!    sizes in turn for [`ROUNDS`] rounds (ABBA order), each figure the median round.
//! 4. A subscription at `earliest` on the big stream has `--stats-pending` entries read into
//!    its group without ack (XREADGROUP); then GetStreamStats of that stream is timed through
//!    the admin service.
//! 5. Figures and `RESULT` lines: each binary's peak RSS (targets: publisher <= 64 MiB,
//!    subscriber <= 128 MiB with the sessions open), the rates at the big size against 10 k
//!    (target: within 10 %), the GetStreamStats time.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use eventflow_proto::v1::{
    GetStreamStatsRequest, SubscribeRequest, admin_service_client::AdminServiceClient,
    subscriber_service_client::SubscriberServiceClient,
};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::{
    Args, Run, consume, measure, procs,
    procs::Fleet,
    publish,
    result::{self, Target},
    rounds,
    setup::{self, Services},
    warmup,
};

/// Entries of the small stream the big one is compared with.
const SMALL: usize = 10_000;
/// Subscribe calls per channel when opening the idle sessions (well under HTTP/2's usual
/// concurrent-stream limits).
const SESSIONS_PER_CHANNEL: usize = 100;
/// XADDs per preload pipeline.
const PRELOAD_PIPELINE: usize = 1000;
/// Seconds the idle sessions' cost is measured over (after as long a settling time).
const IDLE_SECS: f64 = 5.0;

/// Measured rounds of each stream size. The host's rate moves between runs seconds apart (the
/// 10 k baseline alone read 160–214 k ev/s in single runs), so the sizes are measured in turn,
/// in ABBA order, and each figure is its median round.
const ROUNDS: usize = 3;

/// Rates of one stream size: its median rounds.
struct Rates {
    publish: Run,
    subscribe: Run,
    preload_secs: f64,
}

impl Rates {
    /// The median publish and the median Subscribe + Acknowledge run of `rounds`.
    fn median(rounds: Vec<(Run, Run)>, preload_secs: f64) -> Self {
        let (publish, subscribe): (Vec<Run>, Vec<Run>) = rounds.into_iter().unzip();
        Rates { publish: rounds::median_run(publish), subscribe: rounds::median_run(subscribe), preload_secs }
    }
}

/// Runs the memory and scale part and prints its figures.
pub async fn run(args: &Args) {
    let started = Instant::now();
    let bin_dir = bin_dir();
    let log_dir = std::env::temp_dir().join(format!("eventflow-bench-scale-{}", std::process::id()));
    std::fs::create_dir_all(&log_dir).unwrap();
    let redis =
        tokio::task::spawn_blocking(|| eventflow_e2e::RedisServer::start_with(&["--appendonly", "no"])).await.unwrap();
    // Room for the measured sessions beside the idle ones (a dropped session frees its slot
    // only when the server has seen the stream end).
    let max_sessions = (args.scale_sessions + 16).to_string();
    let flags = ["--max-sessions", max_sessions.as_str()];
    let fleet = Fleet::start_on(redis, &bin_dir, &log_dir, 1, &flags).await;
    let fleet = Arc::new(fleet.unwrap_or_else(|e| panic!("scale: {e}")));
    println!(
        "scale: release binaries from {} as separate processes over redis-server {} (AOF off), key prefix {}",
        bin_dir.display(),
        fleet.redis.url(),
        fleet.prefix
    );
    let services = Services {
        publisher: procs::channel(fleet.publisher.addr).unwrap(),
        subscriber: procs::channel(fleet.subscribers[0].addr).unwrap(),
        redis_url: fleet.redis.url(),
    };
    let admin = procs::channel(fleet.admin.addr).unwrap();
    let stop = CancellationToken::new();
    let sampler = tokio::spawn(fleet.clone().sample_rss_until(stop.clone()));
    setup::create_stream(admin.clone(), "prime", args.dedup).await;
    setup::prime(&services).await;

    let sessions = open_sessions(&fleet, &admin, args.scale_sessions).await;
    idle_cost(&fleet, &services.redis_url, sessions.len()).await;
    let small_preload = prepare(&services, &admin, ("small", SMALL), &fleet.prefix, args).await;
    let big_preload = prepare(&services, &admin, ("big", args.scale_entries), &fleet.prefix, args).await;
    let (mut small, mut big) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let order = if round % 2 == 0 { ["small", "big"] } else { ["big", "small"] };
        for name in order {
            let runs = if name == "small" { &mut small } else { &mut big };
            runs.push(measure_round(&services, (name, round), args).await);
        }
    }
    let small = Rates::median(small, small_preload);
    let big = Rates::median(big, big_preload);
    let stats_ms = stats_time(&services, &admin, ("big", &fleet.prefix), args.stats_pending).await;
    stop.cancel();
    sampler.await.unwrap();
    drop(sessions);

    report_memory(&fleet, args.scale_sessions);
    report_rates(args, &small, &big);
    println!("scale: GetStreamStats of the big stream with {} pending: {stats_ms:.1} ms", args.stats_pending);
    result::print("stats_pending_ms", stats_ms, None, Target::None);
    fleet.kill_all().await;
    let _ = std::fs::remove_dir_all(&log_dir);
    println!("scale: done in {:.1} s", started.elapsed().as_secs_f64());
}

/// The directory of this binary, where cargo put the service binaries of the same profile.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().map(Path::to_path_buf).unwrap()
}

/// Opens `n` Subscribe calls on subscription `idle` of the idle stream `idle`, spread over
/// channels of [`SESSIONS_PER_CHANNEL`]; returns the open response streams (held open by the
/// caller), printing how many opened.
async fn open_sessions(
    fleet: &Fleet,
    admin: &Channel,
    n: usize,
) -> Vec<tonic::Streaming<eventflow_proto::v1::SubscribeResponse>> {
    setup::create_stream(admin.clone(), "idle", true).await;
    setup::create_subscription(admin.clone(), "idle", "idle", false).await;
    let mut tasks = JoinSet::new();
    for chunk in 0..n.div_ceil(SESSIONS_PER_CHANNEL) {
        let channel = procs::channel(fleet.subscribers[0].addr).unwrap();
        let count = SESSIONS_PER_CHANNEL.min(n - chunk * SESSIONS_PER_CHANNEL);
        for _ in 0..count {
            let mut client = SubscriberServiceClient::new(channel.clone());
            tasks.spawn(async move {
                let request = SubscribeRequest {
                    stream: "idle".into(),
                    subscription: "idle".into(),
                    max_outstanding_messages: 10,
                    max_outstanding_bytes: 0,
                };
                client.subscribe(request).await.map(tonic::Response::into_inner)
            });
        }
    }
    let results = tasks.join_all().await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    let first_error = results.iter().find_map(|r| r.as_ref().err()).map(|e| format!(" (first error: {e})"));
    println!("scale: {} of {n} idle Subscribe sessions open{}", n - failed, first_error.unwrap_or_default());
    results.into_iter().filter_map(Result::ok).collect()
}

/// Prints what `n` open idle sessions cost while nothing is published: Redis commands a
/// second (scripts count once, plus each command they run), redis-server and subscriber CPU.
async fn idle_cost(fleet: &Fleet, redis_url: &str, n: usize) {
    let wait = std::time::Duration::from_secs_f64(IDLE_SECS);
    tokio::time::sleep(wait).await;
    let subscriber = fleet.subscribers[0].pid.load(std::sync::atomic::Ordering::Relaxed).to_string();
    let subscriber_cpu = measure::cpu_of(&subscriber);
    let probe = measure::Probe::begin(redis_url).await;
    tokio::time::sleep(wait).await;
    let usage = probe.end(redis_url).await;
    let subscriber_cpu = measure::cpu_of(&subscriber) - subscriber_cpu;
    let calls: u64 =
        usage.commands.iter().filter(|c| !c.0.starts_with("config") && !c.0.starts_with("info")).map(|c| c.1).sum();
    let per_sec = |v: f64| v / IDLE_SECS;
    println!(
        "scale: idle cost of {n} sessions: {:.0} Redis commands/s, redis-server CPU {:.1} ms/s, subscriber CPU {:.1} ms/s",
        per_sec(calls as f64),
        per_sec(usage.redis_cpu * 1000.0),
        per_sec(subscriber_cpu * 1000.0)
    );
    let top: Vec<String> = usage
        .commands
        .iter()
        .take(8)
        .map(|(name, calls, _)| format!("{name} {:.0}/s", per_sec(*calls as f64)))
        .collect();
    println!("    idle commands: {}", top.join(", "));
    result::print("idle_redis_commands_per_s", per_sec(calls as f64), None, Target::None);
    result::print("idle_redis_cpu_ms_per_s", per_sec(usage.redis_cpu * 1000.0), None, Target::None);
}

/// Creates stream `name`, preloads it with `entries`, creates its subscription at `latest` and
/// runs one warm-up publish and Subscribe + Acknowledge on it; the preload's seconds.
async fn prepare(services: &Services, admin: &Channel, stream: (&str, usize), prefix: &str, args: &Args) -> f64 {
    let (name, entries) = stream;
    let n = args.scale_events;
    setup::create_stream(admin.clone(), name, args.dedup).await;
    let preload_secs = preload(&services.redis_url, &setup::stream_key(prefix, name), entries).await;
    println!("scale: preloaded {entries} entries into stream {name} in {preload_secs:.1} s");
    setup::create_subscription(admin.clone(), name, "ef", false).await;
    let (size, conc, bytes) = (args.batch_size, args.batch_concurrency, args.event_bytes);
    // The warm-up is consumed before the measured events are published: a Subscribe run
    // drains exactly what the subscription has, no more.
    publish::ef_publish(services, name, "w", warmup(n), size, conc, bytes).await;
    consume::ef_consume(services, name, warmup(n), args.max_outstanding).await;
    preload_secs
}

/// Measured round `round` on stream `name`: a batch publish of new events (event ids of their
/// own round, so dedup stores each), then Subscribe + Acknowledge of exactly those.
async fn measure_round(services: &Services, stream: (&str, usize), args: &Args) -> (Run, Run) {
    let (name, round) = stream;
    let (n, size, conc, bytes) = (args.scale_events, args.batch_size, args.batch_concurrency, args.event_bytes);
    let tag = format!("m{round}");
    let publish = publish::ef_publish(services, name, &tag, n, size, conc, bytes).await;
    let subscribe = consume::ef_consume(services, name, n, args.max_outstanding).await;
    (publish, subscribe)
}

/// XADDs `entries` 16-byte entries to `key` in pipelines from 4 connections; seconds taken.
async fn preload(redis_url: &str, key: &str, entries: usize) -> f64 {
    let start = Instant::now();
    let pipelines = entries.div_ceil(PRELOAD_PIPELINE);
    let mut tasks = JoinSet::new();
    for worker in 0..4 {
        let mut conn = measure::redis_conn(redis_url).await;
        let key = key.to_string();
        tasks.spawn(async move {
            for i in (worker..pipelines).step_by(4) {
                let count = PRELOAD_PIPELINE.min(entries - i * PRELOAD_PIPELINE);
                let mut pipe = redis::pipe();
                for _ in 0..count {
                    pipe.cmd("XADD").arg(&key).arg("*").arg("e").arg("preloaded-entry!").ignore();
                }
                let () = pipe.query_async(&mut conn).await.unwrap();
            }
        });
    }
    tasks.join_all().await;
    start.elapsed().as_secs_f64()
}

/// Creates subscription `stats` at the earliest entry of `stream`, reads `pending` entries
/// into its group without acking them, then times three GetStreamStats calls of the stream
/// through the admin service; the median, in ms.
async fn stats_time(services: &Services, admin: &Channel, stream: (&str, &str), pending: usize) -> f64 {
    let (name, prefix) = stream;
    setup::create_subscription(admin.clone(), name, "stats", true).await;
    let key = setup::stream_key(prefix, name);
    let mut conn = measure::redis_conn(&services.redis_url).await;
    let mut read = 0;
    while read < pending {
        let count = 10_000.min(pending - read);
        let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
            .arg(&["GROUP", "stats", "bench", "COUNT"][..])
            .arg(count)
            .arg(&["STREAMS", key.as_str(), ">"][..])
            .query_async(&mut conn)
            .await
            .unwrap();
        let got: usize = reply.keys.iter().map(|k| k.ids.len()).sum();
        assert!(got > 0, "stream {name} ran out after {read} of {pending} entries");
        read += got;
    }
    let mut client = AdminServiceClient::new(admin.clone());
    let mut times = Vec::with_capacity(3);
    for _ in 0..3 {
        let start = Instant::now();
        let stats = client.get_stream_stats(GetStreamStatsRequest { stream: name.into() }).await.unwrap();
        times.push(start.elapsed().as_secs_f64() * 1000.0);
        let stats = stats.into_inner().stats.unwrap_or_default();
        let held = stats.subscriptions.iter().find(|s| s.subscription == "stats").map_or(0, |s| s.pending);
        assert_eq!(held, read as i64, "GetStreamStats reports {held} pending, not {read}");
    }
    times.sort_by(f64::total_cmp);
    times[1]
}

/// Each binary's peak RSS, with the targets of the publisher and subscriber.
fn report_memory(fleet: &Fleet, sessions: usize) {
    let redis_mib = fleet.redis_peak_rss_kib.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1024.0;
    println!(
        "scale: peak RSS (VmHWM) publisher {:.1} MiB, subscriber {:.1} MiB ({sessions} idle sessions open), \
         admin {:.1} MiB, dlq {:.1} MiB, redis-server {redis_mib:.1} MiB",
        fleet.publisher.peak_rss_mib(),
        fleet.subscriber_peak_rss_mib(),
        fleet.admin.peak_rss_mib(),
        fleet.dlq.peak_rss_mib()
    );
    result::print("rss_publisher_mib", fleet.publisher.peak_rss_mib(), None, Target::AtMost(64.0));
    result::print("rss_subscriber_mib", fleet.subscriber_peak_rss_mib(), None, Target::AtMost(128.0));
    result::print("rss_admin_mib", fleet.admin.peak_rss_mib(), None, Target::None);
    result::print("rss_dlq_mib", fleet.dlq.peak_rss_mib(), None, Target::None);
}

/// The rates at the big size against the small one (target: at least 0.9 of it).
fn report_rates(args: &Args, small: &Rates, big: &Rates) {
    let big_n = args.scale_entries;
    for (name, s, b) in
        [("scale_publish", &small.publish, &big.publish), ("scale_subscribe_ack", &small.subscribe, &big.subscribe)]
    {
        println!("{name}: {:.0} ev/s with {big_n} entries in the stream, {:.0} ev/s with {SMALL}", b.rate, s.rate);
        println!("    {name} cost, {big_n} entries: {}", b.usage.describe(b.events, 12));
        println!("    {name} cost, {SMALL} entries: {}", s.usage.describe(s.events, 12));
        result::print(name, b.rate, Some(("at_10k_entries", s.rate)), Target::Ratio(0.9));
    }
    println!(
        "scale: preload took {:.1} s for {big_n} entries ({:.0} entries/s), {:.2} s for {SMALL}",
        big.preload_secs,
        big_n as f64 / big.preload_secs.max(1e-9),
        small.preload_secs
    );
}
