//! `make soak`: the fault suite. It runs eventflow's real release binaries against their own
//! redis-server, publishes N events (1 M by default) while it breaks things, and checks that
//! every event the publisher accepted ends up acknowledged by a consumer or dead-lettered.
//!
//! How it works:
//! 1. [`procs`] starts redis-server on a free port with AOF and `appendfsync always` (so killing
//!    or stopping processes cannot lose an acknowledged write), then `eventflow-publisher`, two
//!    `eventflow-subscriber` replicas, `eventflow-admin` and `eventflow-dlq` from the soak
//!    binary's own directory (`target/release`), on free ports with a unique key prefix, each
//!    awaited on grpc.health.v1. Their memory is sampled from `/proc` four times a second.
//! 2. One stream (dedup window 1 day, so any retry is deduplicated) and one subscription (ack
//!    deadline 10 s, 20 delivery attempts, from the earliest event) are created.
//! 3. [`publish`] publishes `soak-0` .. `soak-<N-1>` in batches, retrying every event without a
//!    result with the same id; [`consume`] runs 3 consumers spread over the replicas that record
//!    every delivery and acknowledge in small batches; [`chaos`] SIGKILLs and restarts the
//!    publisher and one subscriber replica at a time, SIGSTOPs redis-server for 5 s once, and
//!    drops random consumers without acking what they hold. Everything is recorded in the
//!    [`ledger`].
//! 4. When publishing is done, the run waits until every accepted id is acked or
//!    dead-lettered (or the deadline), stops the chaos and the consumers, then [`audit`]s the
//!    server side: all dead letters, and a scan of the whole Redis stream.
//! 5. It prints the figures, `RESULT soak_<name> value=<v>` lines, and `soak: PASS`, or
//!    `soak: FAIL (<why>)` with a non-zero exit code when one accepted event is unaccounted
//!    for, an id was stored twice or stored without being accepted, or the run could not do
//!    what it planned. Service logs are kept (and their directory printed) only on failure.
//!
//! Every wait has a deadline (`--timeout-secs`, 30 min by default), so the run ends by itself.

pub mod audit;
pub mod chaos;
pub mod consume;
pub mod ledger;
pub mod procs;
pub mod publish;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{Arc, atomic::AtomicBool},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use clap::Parser;
use eventflow_proto::{
    prost_types,
    v1::{
        CreateStreamRequest, CreateSubscriptionRequest, DeadLetterPolicy, Position, Stream, Subscription,
        admin_service_client::AdminServiceClient, position,
    },
};
use tokio::{sync::Notify, task::JoinSet, time::Instant};
use tokio_util::sync::CancellationToken;

use self::{
    audit::{DeadLetters, StreamAudit},
    chaos::Rng,
    ledger::{Acked, Ledger},
    procs::Fleet,
};

/// The stream the soak publishes to.
const STREAM: &str = "soak";
/// The subscription its consumers share.
const SUBSCRIPTION: &str = "soak-sub";
/// How often progress is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// How often the dead-letter queue is listed while waiting for the last events.
const DLQ_POLL_EVERY: Duration = Duration::from_secs(5);
/// Unaccounted ids printed with their evidence.
const SHOWN: usize = 10;

/// What to run. Every flag has a `SOAK_*` environment fallback (`make soak SOAK_EVENTS=50000`).
#[derive(Debug, Clone, Parser)]
#[command(name = "eventflow-soak", about = "eventflow's fault suite: publish and consume under SIGKILL/SIGSTOP chaos")]
pub struct Args {
    /// Events to publish (ids `soak-0` .. `soak-<N-1>`).
    #[arg(long, env = "SOAK_EVENTS", default_value_t = 1_000_000)]
    pub events: usize,
    /// Events per Publish request.
    #[arg(long, env = "SOAK_BATCH_SIZE", default_value_t = 250)]
    pub batch_size: usize,
    /// Publish requests in flight at once.
    #[arg(long, env = "SOAK_PUBLISH_CONCURRENCY", default_value_t = 4)]
    pub publish_concurrency: usize,
    /// Bytes of data per event.
    #[arg(long, env = "SOAK_EVENT_BYTES", default_value_t = 64)]
    pub event_bytes: usize,
    /// Consumers (one Subscribe call each), spread over the subscriber replicas.
    #[arg(long, env = "SOAK_CONSUMERS", default_value_t = 3)]
    pub consumers: usize,
    /// Subscriber replicas (the chaos kills one at a time).
    #[arg(long, env = "SOAK_SUBSCRIBER_REPLICAS", default_value_t = 2)]
    pub subscriber_replicas: usize,
    /// `max_outstanding_messages` of each consumer.
    #[arg(long, env = "SOAK_MAX_OUTSTANDING", default_value_t = 500)]
    pub max_outstanding: i32,
    /// The subscription's ack deadline, seconds.
    #[arg(long, env = "SOAK_ACK_DEADLINE_SECS", default_value_t = 10)]
    pub ack_deadline_secs: i32,
    /// The subscription's max delivery attempts before an event is dead-lettered.
    #[arg(long, env = "SOAK_MAX_DELIVERY_ATTEMPTS", default_value_t = 20)]
    pub max_delivery_attempts: i32,
    /// SIGKILL + restarts of the publisher.
    #[arg(long, env = "SOAK_PUBLISHER_KILLS", default_value_t = 3)]
    pub publisher_kills: usize,
    /// SIGKILL + restarts of a subscriber replica.
    #[arg(long, env = "SOAK_SUBSCRIBER_KILLS", default_value_t = 3)]
    pub subscriber_kills: usize,
    /// Consumer drops (0 = one per 20 000 events, at least 10, at most 100).
    #[arg(long, env = "SOAK_CONSUMER_DROPS", default_value_t = 0)]
    pub consumer_drops: usize,
    /// Seconds redis-server stays SIGSTOPped, once (0 = no pause).
    #[arg(long, env = "SOAK_REDIS_PAUSE_SECS", default_value_t = 5)]
    pub redis_pause_secs: u64,
    /// Deadline of the whole run, seconds: publishing and the wait for the last acks end there.
    #[arg(long, env = "SOAK_TIMEOUT_SECS", default_value_t = 1800)]
    pub timeout_secs: u64,
    /// Seed of the chaos plan (default: from the clock; printed, so a run can be replayed).
    #[arg(long, env = "SOAK_SEED")]
    pub seed: Option<u64>,
    /// Directory of the eventflow-* release binaries (default: this binary's directory).
    #[arg(long, env = "SOAK_BIN_DIR")]
    pub bin_dir: Option<PathBuf>,
}

/// Runs the suite; the exit code says PASS (success) or FAIL.
pub async fn run(args: Args) -> ExitCode {
    let started = Instant::now();
    let seed = args
        .seed
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1));
    let log_dir = std::env::temp_dir().join(format!("eventflow-soak-{}-{seed}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&log_dir) {
        println!("soak: FAIL (cannot create {}: {e})", log_dir.display());
        return ExitCode::FAILURE;
    }
    // Dropping the run (ctrl-c, SIGTERM) drops the fleet: every child is killed on drop.
    let outcome = tokio::select! {
        outcome = soak(&args, seed, &log_dir, started) => outcome,
        why = interrupted() => Err(why),
    };
    let failures = match outcome {
        Ok(failures) => failures,
        Err(e) => vec![e],
    };
    if failures.is_empty() {
        let _ = std::fs::remove_dir_all(&log_dir);
        println!("soak: PASS");
        ExitCode::SUCCESS
    } else {
        println!("soak: service logs kept in {}", log_dir.display());
        println!("soak: FAIL ({})", failures.join("; "));
        ExitCode::FAILURE
    }
}

/// Resolves on SIGINT or SIGTERM, saying which.
async fn interrupted() -> String {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = tokio::signal::ctrl_c() => "interrupted (SIGINT)".into(),
            _ = term.recv() => "interrupted (SIGTERM)".into(),
        },
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            "interrupted (SIGINT)".into()
        }
    }
}

/// The whole run; returns why it failed (empty: it passed), or an error that stopped it.
async fn soak(args: &Args, seed: u64, log_dir: &Path, started: Instant) -> Result<Vec<String>, String> {
    let deadline = started + Duration::from_secs(args.timeout_secs);
    let bin_dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(Path::to_path_buf))
            .ok_or("cannot find this binary's directory; pass --bin-dir")?,
    };
    let consumer_drops =
        if args.consumer_drops > 0 { args.consumer_drops } else { (args.events / 20_000).clamp(10, 100) };
    println!(
        "soak: seed {seed}; {} events of {} B in batches of {} ({} in flight); {} consumers on {} subscriber \
         replicas (max outstanding {}); ack deadline {} s, {} delivery attempts; chaos: {} publisher SIGKILLs, {} \
         subscriber SIGKILLs, {consumer_drops} consumer drops, redis-server SIGSTOP {} s; timeout {} s",
        args.events,
        args.event_bytes,
        args.batch_size,
        args.publish_concurrency,
        args.consumers,
        args.subscriber_replicas,
        args.max_outstanding,
        args.ack_deadline_secs,
        args.max_delivery_attempts,
        args.publisher_kills,
        args.subscriber_kills,
        args.redis_pause_secs,
        args.timeout_secs
    );
    let fleet = Arc::new(Fleet::start(&bin_dir, log_dir, args.subscriber_replicas).await?);
    println!(
        "soak: redis-server {} (pid {}, AOF appendfsync always), binaries from {}, key prefix {}",
        fleet.redis.url(),
        fleet.redis_pid,
        bin_dir.display(),
        fleet.prefix
    );
    setup(&fleet, args).await?;

    let ledger = Arc::new(Ledger::new(args.events));
    let mut rng = Rng::new(seed);
    let stop_sampler = CancellationToken::new();
    let sampler = tokio::spawn(fleet.clone().sample_rss_until(stop_sampler.clone()));

    // Consumers.
    let replicas = fleet.subscribers.iter().map(|s| procs::channel(s.addr)).collect::<Result<Vec<_>, _>>()?;
    let stop_consumers = CancellationToken::new();
    let mut targets = Vec::new();
    let mut consumers = JoinSet::new();
    for index in 0..args.consumers.max(1) {
        let (drop_signal, active) = (Arc::new(Notify::new()), Arc::new(AtomicBool::new(false)));
        targets.push(chaos::Target { drop_signal: drop_signal.clone(), active: active.clone() });
        let consumer = consume::Consumer {
            index,
            plan: consume::Plan {
                stream: STREAM.into(),
                subscription: SUBSCRIPTION.into(),
                max_outstanding: args.max_outstanding,
            },
            replicas: replicas.clone(),
            ledger: ledger.clone(),
            drop_signal,
            active,
            stop: stop_consumers.clone(),
            rng: rng.fork(),
        };
        consumers.spawn(consumer.run());
    }

    // Chaos.
    let stop_chaos = CancellationToken::new();
    let chaos = tokio::spawn(
        chaos::Chaos {
            plan: chaos::Plan {
                publisher_kills: args.publisher_kills,
                subscriber_kills: args.subscriber_kills,
                consumer_drops,
                redis_pause: Duration::from_secs(args.redis_pause_secs),
            },
            fleet: fleet.clone(),
            ledger: ledger.clone(),
            consumers: targets,
            rng: rng.fork(),
            started,
            stop: stop_chaos.clone(),
        }
        .run(),
    );

    // Publishing, with progress.
    let plan = publish::Plan {
        stream: STREAM.into(),
        batch_size: args.batch_size,
        concurrency: args.publish_concurrency,
        event_bytes: args.event_bytes,
    };
    let mut publishing =
        tokio::spawn(publish::run(plan, procs::channel(fleet.publisher.addr)?, ledger.clone(), deadline));
    let mut next_progress = Instant::now() + PROGRESS_EVERY;
    let publish_report = loop {
        tokio::select! {
            done = &mut publishing => break done.map_err(|e| format!("publishing task: {e}"))?,
            () = tokio::time::sleep_until(next_progress) => {
                progress(&ledger, started, "publishing");
                next_progress += PROGRESS_EVERY;
            }
        }
    };
    let published_in = started.elapsed();
    println!(
        "soak: t={:>6.1}s publishing done: {} of {} ids accepted in {} calls ({} retried)",
        published_in.as_secs_f64(),
        ledger.accepted(),
        args.events,
        publish_report.calls,
        publish_report.retries
    );

    // Wait until every accepted id is acked or dead-lettered.
    let dlq_channel = procs::channel(fleet.dlq.addr)?;
    let mut dead = DeadLetters { by_index: vec![false; args.events], ..Default::default() };
    let mut next_dlq = Instant::now();
    let drained = loop {
        if Instant::now() >= next_dlq {
            match audit::dead_letters(dlq_channel.clone(), STREAM, SUBSCRIPTION, args.events).await {
                Ok(d) => dead = d,
                Err(e) => eprintln!("soak: listing dead letters failed: {e}"),
            }
            next_dlq = Instant::now() + DLQ_POLL_EVERY;
        }
        // Done when every id is accounted for and the chaos carried out its whole plan (on a
        // quick run its last actions can come due while an earlier one is still running).
        if ledger.acked() + dead.distinct >= ledger.accepted()
            && ledger.unaccounted(&dead.by_index, 0).0 == 0
            && chaos.is_finished()
        {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
        if Instant::now() >= next_progress {
            progress(&ledger, started, "draining");
            next_progress += PROGRESS_EVERY;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!(
        "soak: t={:>6.1}s {}",
        started.elapsed().as_secs_f64(),
        if drained { "every accepted id is acked or dead-lettered" } else { "deadline reached while draining" }
    );

    // Stop the chaos (a running action finishes: its service is SERVING again), then the
    // consumers; then audit what the servers hold.
    stop_chaos.cancel();
    let chaos_report = chaos.await.map_err(|e| format!("chaos task: {e}"))?;
    stop_consumers.cancel();
    let mut consumer_report = consume::Report::default();
    while let Some(done) = consumers.join_next().await {
        match done {
            Ok(r) => consumer_report.merge(&r),
            Err(e) => return Err(format!("consumer task: {e}")),
        }
    }
    let dead = audit::dead_letters(dlq_channel, STREAM, SUBSCRIPTION, args.events).await?;
    let mut conn = audit::connect(&fleet.redis.url()).await?;
    let stream_key = format!("{}:{{{STREAM}}}", fleet.prefix);
    let scanned = audit::scan_stream(&mut conn, &stream_key, SUBSCRIPTION, args.events).await?;
    stop_sampler.cancel();
    let _ = sampler.await;

    let (unaccounted, sample) = ledger.unaccounted(&dead.by_index, SHOWN);
    let mut evidence = Vec::new();
    for &n in &sample {
        let record = ledger.record(n);
        let entry = format!("{}-{}", record.entry.0, record.entry.1);
        let redis_side = audit::entry_evidence(&mut conn, &stream_key, SUBSCRIPTION, &entry).await;
        evidence.push(format!(
            "{} (entry {entry}): delivered {} times (highest attempt {}), acks answered expired {} times; Redis: {redis_side}",
            ledger::event_id(n),
            record.deliveries,
            record.max_attempt,
            record.ack_expired
        ));
    }
    let figures = Figures {
        args,
        seed,
        ledger: &ledger,
        fleet: &fleet,
        publish: &publish_report,
        consumers: &consumer_report,
        chaos: &chaos_report,
        dead: &dead,
        scanned: &scanned,
        unaccounted,
        evidence: &evidence,
        consumer_drops,
        drained,
        elapsed: started.elapsed(),
    };
    let failures = figures.print();
    fleet.kill_all().await;
    Ok(failures)
}

/// Creates the stream (dedup window of a day: every retry of the run is deduplicated) and the
/// subscription.
async fn setup(fleet: &Fleet, args: &Args) -> Result<(), String> {
    let mut admin = AdminServiceClient::new(procs::channel(fleet.admin.addr)?);
    let stream = Stream {
        name: STREAM.into(),
        dedup_window: Some(prost_types::Duration { seconds: 86_400, nanos: 0 }),
        ..Default::default()
    };
    admin
        .create_stream(CreateStreamRequest { stream: Some(stream) })
        .await
        .map_err(|e| format!("CreateStream: {e}"))?;
    let subscription = Subscription {
        stream: STREAM.into(),
        name: SUBSCRIPTION.into(),
        ack_deadline_seconds: args.ack_deadline_secs,
        dead_letter_policy: Some(DeadLetterPolicy { max_delivery_attempts: args.max_delivery_attempts }),
        ..Default::default()
    };
    let start_position = Some(Position { position: Some(position::Position::Earliest(true)) });
    admin
        .create_subscription(CreateSubscriptionRequest { subscription: Some(subscription), start_position })
        .await
        .map_err(|e| format!("CreateSubscription: {e}"))?;
    Ok(())
}

/// One progress line.
fn progress(ledger: &Ledger, started: Instant, phase: &str) {
    let c = ledger.counters();
    println!(
        "soak: t={:>6.1}s {phase}: accepted {}, acked {}, deliveries {}, redeliveries {}",
        started.elapsed().as_secs_f64(),
        ledger.accepted(),
        ledger.acked(),
        c.deliveries,
        c.redeliveries
    );
}

/// Everything the summary is computed from.
struct Figures<'a> {
    /// What was planned.
    args: &'a Args,
    /// To replay the run.
    seed: u64,
    /// What the clients saw.
    ledger: &'a Ledger,
    /// Restarts and peak RSS of the processes.
    fleet: &'a Fleet,
    /// What publishing went through.
    publish: &'a publish::Report,
    /// What the consumers went through (all of them).
    consumers: &'a consume::Report,
    /// What the chaos did.
    chaos: &'a chaos::Report,
    /// The final dead-letter listing.
    dead: &'a DeadLetters,
    /// The final scan of the Redis stream.
    scanned: &'a StreamAudit,
    /// Accepted ids neither acked nor dead-lettered.
    unaccounted: usize,
    /// One line per shown unaccounted id.
    evidence: &'a [String],
    /// Consumer drops planned (after the default was applied).
    consumer_drops: usize,
    /// Whether the wait for the last acks ended before the deadline.
    drained: bool,
    /// Wall time of the run so far.
    elapsed: Duration,
}

/// Per-id totals over the ledger and the audit.
#[derive(Default)]
struct Totals {
    /// Distinct ids acked (confirmed or not).
    acked: usize,
    /// Of those, acked only by a call that failed and whose retry found them settled.
    unconfirmed: usize,
    /// Distinct ids delivered at least once.
    delivered: usize,
    /// Ids both acked and dead-lettered (settled twice).
    acked_and_dead: usize,
    /// Ids in the stream the publisher never accepted.
    stored_unaccepted: usize,
    /// Accepted ids missing from the stream (lost or removed: the stream has no retention).
    accepted_unstored: usize,
    /// Ids delivered that the publisher never accepted.
    delivered_unaccepted: usize,
    /// Ids dead-lettered that the publisher never accepted.
    dead_unaccepted: usize,
    /// Highest delivery attempt seen.
    attempt_max: i32,
}

impl Figures<'_> {
    /// Prints the summary and the RESULT lines; returns the reasons to fail (empty: PASS).
    fn print(&self) -> Vec<String> {
        let (scanned, dead) = (self.scanned, self.dead);
        let t = self.ledger.fold(Totals::default(), |mut t, n, r| {
            let is_dead = dead.by_index[n];
            match r.acked {
                Acked::Confirmed => t.acked += 1,
                Acked::Unconfirmed => {
                    t.acked += 1;
                    t.unconfirmed += 1;
                }
                Acked::No => {}
            }
            if r.acked != Acked::No && is_dead {
                t.acked_and_dead += 1;
            }
            if r.deliveries > 0 {
                t.delivered += 1;
            }
            if r.accepted && scanned.copies[n] == 0 {
                t.accepted_unstored += 1;
            }
            if !r.accepted {
                t.stored_unaccepted += usize::from(scanned.copies[n] > 0);
                t.delivered_unaccepted += usize::from(r.deliveries > 0);
                t.dead_unaccepted += usize::from(is_dead);
            }
            t.attempt_max = t.attempt_max.max(r.max_attempt);
            t
        });
        let c = self.ledger.counters();
        let accepted = self.ledger.accepted();
        let events = self.args.events;
        let duplicates = c.deliveries.saturating_sub(t.delivered as u64 + c.foreign);
        let publisher_rss = self.fleet.publisher.peak_rss_mib();
        let subscriber_rss = self.fleet.subscriber_peak_rss_mib();
        let redis_rss = self.fleet.redis_peak_rss_kib.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1024.0;
        let secs = self.elapsed.as_secs_f64();
        let codes = |v: &[(tonic::Code, u64)]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.iter().map(|(code, n)| format!("{code:?} x{n}")).collect::<Vec<_>>().join(", ")
            }
        };

        println!("soak: summary (seed {}, {:.1} s)", self.seed, secs);
        println!(
            "  events in:      {accepted} distinct ids accepted of {events} published ({} answered as duplicates \
             on retry; publish calls {}, retried {}; errors: {})",
            c.duplicate_results,
            self.publish.calls,
            self.publish.retries,
            codes(&self.publish.errors)
        );
        for sample in &self.publish.samples {
            println!("                  e.g. {sample}");
        }
        println!(
            "  stored:         {} stream entries (XLEN {}); ids stored twice {} (publisher answers: {}), entries \
             never accepted {}, foreign {}; accepted ids not in the stream {} (the stream has no retention)",
            scanned.scanned,
            scanned.length,
            scanned.stored_twice,
            c.stored_twice,
            t.stored_unaccepted,
            scanned.foreign,
            t.accepted_unstored
        );
        println!(
            "  acked:          {} distinct ids ({} unconfirmed: the ack call failed, its retry found the event settled)",
            t.acked, t.unconfirmed
        );
        let reasons: Vec<String> = dead.reasons.iter().map(|(r, n)| format!("{r:?} x{n}")).collect();
        println!(
            "  dead letters:   {} ({} distinct ids, {} of them also acked; reasons: {})",
            dead.entries,
            dead.distinct,
            t.acked_and_dead,
            if reasons.is_empty() { "none".into() } else { reasons.join(", ") }
        );
        println!(
            "  deliveries:     {} to {} distinct ids: duplicates {duplicates} (deliveries beyond the first per id), \
             redeliveries {} (attempt > 1, highest {}), after a confirmed ack {}, foreign {}",
            c.deliveries, t.delivered, c.redeliveries, t.attempt_max, c.delivered_after_ack, c.foreign
        );
        println!(
            "  acks:           expired answers {}, invalid {}, failed calls {}, abandoned {}",
            c.expired_acks, c.invalid_acks, self.consumers.ack_errors, self.consumers.acks_abandoned
        );
        println!(
            "  consumers:      {} Subscribe calls, {} dropped by the chaos (releasing {} held events), {} replaced \
             after {} s of silence; sessions ended by: {}",
            self.consumers.sessions,
            self.consumers.drops,
            c.released_by_drops,
            self.consumers.idle_restarts,
            consume::IDLE_TIMEOUT.as_secs(),
            codes(&self.consumers.session_errors)
        );
        println!(
            "  chaos:          publisher SIGKILLs {}/{}, subscriber SIGKILLs {}/{}, consumer drops {}/{} ({} carried \
             out), redis-server SIGSTOP {}; restarts: {}",
            self.chaos.publisher_kills,
            self.args.publisher_kills,
            self.chaos.subscriber_kills,
            self.args.subscriber_kills,
            self.chaos.consumer_drops,
            self.consumer_drops,
            self.consumers.drops,
            match self.chaos.redis_paused {
                Some(d) => format!("{:.1} s", d.as_secs_f64()),
                None => "not done".into(),
            },
            self.fleet.services().map(|s| format!("{} {}", s.name, s.restarts())).collect::<Vec<_>>().join(", ")
        );
        println!(
            "  consumer group: pending {}, lag {}, last delivered {}",
            scanned.group_pending.map_or("?".into(), |p| p.to_string()),
            scanned.group_lag.map_or("?".into(), |p| p.to_string()),
            scanned.group_last_delivered
        );
        println!(
            "  peak RSS:       publisher {publisher_rss:.1} MiB, subscriber {subscriber_rss:.1} MiB (largest replica), \
             admin {:.1} MiB, dlq {:.1} MiB, redis-server {redis_rss:.1} MiB",
            self.fleet.admin.peak_rss_mib(),
            self.fleet.dlq.peak_rss_mib()
        );
        println!("  unaccounted:    {} (accepted, neither acked nor dead-lettered)", self.unaccounted);
        for line in self.evidence {
            println!("                  {line}");
        }
        for (name, value) in [
            ("events_in", accepted.to_string()),
            ("acked", t.acked.to_string()),
            ("duplicates", duplicates.to_string()),
            ("dead_letters", dead.distinct.to_string()),
            ("redeliveries", c.redeliveries.to_string()),
            ("unaccounted", self.unaccounted.to_string()),
            ("publisher_peak_rss_mib", format!("{publisher_rss:.1}")),
            ("subscriber_peak_rss_mib", format!("{subscriber_rss:.1}")),
            ("elapsed_seconds", format!("{secs:.1}")),
        ] {
            println!("RESULT soak_{name} value={value}");
        }
        self.failures(&t, &c)
    }

    /// Why the run failed, if it did.
    fn failures(&self, t: &Totals, c: &ledger::Counters) -> Vec<String> {
        let mut why = Vec::new();
        let accepted = self.ledger.accepted();
        let missing = self.args.events.saturating_sub(accepted);
        let mut fail = |cond: bool, text: String| {
            if cond {
                why.push(text);
            }
        };
        fail(self.unaccounted > 0, format!("{} accepted events unaccounted for", self.unaccounted));
        fail(missing > 0, format!("{missing} events never accepted by the publisher"));
        fail(c.rejected > 0, format!("{} events rejected as invalid", c.rejected));
        fail(
            self.scanned.stored_twice > 0 || c.stored_twice > 0,
            format!("{} ids stored twice", self.scanned.stored_twice.max(c.stored_twice as usize)),
        );
        fail(
            c.entry_mismatch > 0,
            format!("{} publish answers named a different entry for the same id", c.entry_mismatch),
        );
        fail(t.stored_unaccepted > 0, format!("{} stored events were never accepted", t.stored_unaccepted));
        fail(t.delivered_unaccepted > 0, format!("{} delivered ids were never accepted", t.delivered_unaccepted));
        fail(t.dead_unaccepted > 0, format!("{} dead-lettered ids were never accepted", t.dead_unaccepted));
        fail(
            self.scanned.foreign > 0 || c.foreign > 0 || self.dead.foreign > 0,
            "events that are not this run's were stored or delivered".into(),
        );
        fail(c.invalid_acks > 0, format!("{} ack ids answered as invalid", c.invalid_acks));
        fail(!self.chaos.errors.is_empty(), format!("chaos: {}", self.chaos.errors.join(", ")));
        let planned = (
            self.args.publisher_kills,
            self.args.subscriber_kills,
            self.consumer_drops,
            self.args.redis_pause_secs > 0,
        );
        let done = (
            self.chaos.publisher_kills,
            self.chaos.subscriber_kills,
            self.chaos.consumer_drops,
            self.chaos.redis_paused.is_some(),
        );
        fail(planned != done, "not every planned chaos action happened".into());
        fail(!self.drained && self.unaccounted == 0, "deadline reached".into());
        why
    }
}
