//! The outbox relay figures (`relay`): eventflow-relay in-process (like the other services)
//! over a PostgreSQL of its own (`fsync=on`, as deployed) and the bench's Redis.
//!
//! * `relay_latency_p50_ms` / `relay_latency_p99_ms`: one outbox row per transaction at
//!   `relay_latency_rate` rows/s for `latency_secs` (after one second of warm-up), each event
//!   without id and carrying its sequence number; latency is from the producer's COMMIT
//!   returning to a reader blocked in XREAD on the stream receiving the entry — the NOTIFY
//!   wake-up, claim, publish and the reader's own hop. Target p99 < 20 ms at 1 000 rows/s.
//! * `relay_rate`: `relay_rows` rows committed in one transaction (100 partition keys), then
//!   the rate from that commit until the last entry is in the stream. Target >= 20 000 rows/s.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use clap::Parser;
use eventflow_e2e::{Running, wait_for_health};
use eventflow_proto::{
    prost::Message,
    v1::{CloudEvent, cloud_event::Data},
};
use eventflow_runtime::{CancellationToken, serve::Listeners};
use eventflow_testkit::{postgres::PostgresServer, unique_prefix};
use redis::AsyncCommands;
use tokio::{net::TcpListener, task::JoinSet};
use tonic_health::pb::health_check_response::ServingStatus;

use crate::{Args, per_second, setup::Env};

/// Longest a relay run may take before the bench gives up.
const RUN_DEADLINE: Duration = Duration::from_secs(300);

/// What the relay figures measured.
pub struct RelayResult {
    /// Rows published per second (the rate run).
    pub rate: f64,
    /// Latency percentiles of the paced run, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Rows in the paced run after warm-up.
    pub rows: usize,
}

/// Runs both relay figures against a relay and a PostgreSQL of their own.
pub async fn run(env: &Env, args: &Args) -> RelayResult {
    let pg = PostgresServer::start_durable();
    let url = pg.create_database(&unique_prefix().replace('-', "_"));
    let pool = eventflow_pg::connect(&url, 16).await.expect("connect to the bench's postgres");
    eventflow_pg::migrate(&pool).await.expect("migrate");
    let relay = start_relay(env, &url).await;
    let (p50_ms, p99_ms, rows) = latency_run(env, args, &pool).await;
    let rate = rate_run(env, args, &pool).await;
    relay.stop().await;
    pool.close().await;
    drop(pg);
    RelayResult { rate, p50_ms, p99_ms, rows }
}

/// The relay with its default settings over `url` and the bench's Redis.
async fn start_relay(env: &Env, url: &str) -> Running {
    let argv = ["eventflow-relay", "--redis-url", &env.services.redis_url, "--key-prefix", &env.prefix];
    let config = eventflow_relay::Config::try_parse_from(argv.iter().copied().chain(["--database-url", url]))
        .expect("relay flags");
    let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let metrics = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (addr, metrics_addr) = (grpc.local_addr().expect("addr"), metrics.local_addr().expect("addr"));
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let handle = tokio::spawn(async move {
        eventflow_relay::run(config, Listeners { grpc, metrics }, token).await.expect("relay");
    });
    let running = Running { addr, metrics_addr, shutdown, handle, tls: None };
    wait_for_health(&running, eventflow_relay::SERVICE_NAME, ServingStatus::Serving).await;
    running
}

/// An event without id whose text data is `seq`.
fn event(seq: usize) -> Vec<u8> {
    CloudEvent {
        source: "/bench".into(),
        spec_version: "1.0".into(),
        r#type: "bench.outbox".into(),
        data: Some(Data::TextData(seq.to_string())),
        ..Default::default()
    }
    .encode_to_vec()
}

/// Reads `stream` from its start until `total` entries came; returns each entry's arrival
/// (µs since `base`) by the sequence number in its data.
async fn read_arrivals(env: &Env, stream: &str, total: usize, base: Instant) -> Vec<u64> {
    let mut conn = env.redis_conn().await;
    let key = env.stream_key(stream);
    let mut arrivals = vec![0u64; total];
    let (mut seen, mut last) = (0, "0-0".to_string());
    let deadline = Instant::now() + RUN_DEADLINE;
    while seen < total {
        assert!(Instant::now() < deadline, "relay latency run: only {seen} of {total} entries came");
        let options = redis::streams::StreamReadOptions::default().block(1000).count(1000);
        let reply: redis::streams::StreamReadReply =
            conn.xread_options(&[&key], &[&last], &options).await.expect("XREAD");
        let at = u64::try_from(base.elapsed().as_micros()).unwrap_or(u64::MAX);
        for entry in reply.keys.into_iter().flat_map(|k| k.ids) {
            let bytes: Vec<u8> = entry.get("e").expect("entry field e");
            let event = CloudEvent::decode(bytes.as_slice()).expect("stored CloudEvent");
            if let Some(Data::TextData(text)) = &event.data {
                let seq: usize = text.parse().expect("sequence number");
                arrivals[seq] = at;
            }
            last = entry.id;
            seen += 1;
        }
    }
    arrivals
}

/// One row per transaction at `relay_latency_rate`; latency percentiles (ms) of the rows after
/// one second of warm-up, and their number.
async fn latency_run(env: &Env, args: &Args, pool: &sqlx::PgPool) -> (f64, f64, usize) {
    let stream = "relay-latency";
    env.create_stream(stream).await;
    let rate = u64::from(args.relay_latency_rate.max(1));
    let warm = usize::try_from(rate).unwrap_or(usize::MAX);
    let total = warm + usize::try_from(rate * args.latency_secs).unwrap_or(usize::MAX);
    let base = Instant::now();
    let reader = read_arrivals(env, stream, total, base);
    let committed = Arc::new(Mutex::new(vec![0u64; total]));
    let writer = async {
        let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
        let mut commits = JoinSet::new();
        for seq in 0..total {
            ticker.tick().await;
            let (pool, committed) = (pool.clone(), committed.clone());
            commits.spawn(async move {
                let mut tx = pool.begin().await.expect("begin");
                sqlx::query("INSERT INTO eventflow.outbox (stream, event) VALUES ($1, $2)")
                    .bind(stream)
                    .bind(event(seq))
                    .execute(&mut *tx)
                    .await
                    .expect("insert");
                tx.commit().await.expect("commit");
                let at = u64::try_from(base.elapsed().as_micros()).unwrap_or(u64::MAX);
                committed.lock().expect("lock")[seq] = at;
            });
            while commits.try_join_next().is_some() {}
        }
        commits.join_all().await;
    };
    let (arrivals, ()) = tokio::join!(reader, writer);
    let committed = committed.lock().expect("lock").clone();
    let mut micros: Vec<u64> = (warm..total).map(|seq| arrivals[seq].saturating_sub(committed[seq])).collect();
    micros.sort_unstable();
    let pct = |p: f64| {
        let i = ((micros.len().saturating_sub(1)) as f64 * p).round() as usize;
        micros.get(i).copied().unwrap_or(0) as f64 / 1000.0
    };
    (pct(0.50), pct(0.99), micros.len())
}

/// `relay_rows` rows committed at once; rows published per second from the commit until the
/// last entry is in the stream.
async fn rate_run(env: &Env, args: &Args, pool: &sqlx::PgPool) -> f64 {
    let stream = "relay-rate";
    env.create_stream(stream).await;
    let total = args.relay_rows;
    let bytes = event(0);
    let start = Instant::now();
    sqlx::query(
        "INSERT INTO eventflow.outbox (stream, event, partition_key) \
         SELECT $1, $2, 'k' || (g % 100) FROM generate_series(1, $3) AS g",
    )
    .bind(stream)
    .bind(bytes)
    .bind(i64::try_from(total).unwrap_or(i64::MAX))
    .execute(pool)
    .await
    .expect("insert the rows");
    let inserted = start.elapsed();
    let start = Instant::now();
    let mut conn = env.redis_conn().await;
    let key = env.stream_key(stream);
    loop {
        let len: usize = conn.xlen(&key).await.expect("XLEN");
        if len >= total {
            break;
        }
        assert!(start.elapsed() < RUN_DEADLINE, "relay rate run: only {len} of {total} rows came");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = per_second(total, start.elapsed());
    println!(
        "    relay_rate: {total} rows inserted in {:.2} s, published in {:.2} s",
        inserted.as_secs_f64(),
        start.elapsed().as_secs_f64()
    );
    rate
}
