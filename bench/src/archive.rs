//! The archive figures (`archive`): eventflow-archive (in-process, like the other services)
//! over a PostgreSQL of the bench's own (`PostgresServer::start_durable`: fsync on).
//!
//! * `archive_ingest_rate`: `archive_events` events published first (requests of
//!   `batch_size`), then the archive service started; the rate is events archived per second
//!   from its start until every row is in PostgreSQL (batches of 1000: one insert, one commit,
//!   one acknowledgement each).
//! * `archive_query_p99_ms`: 1 M rows inserted directly (one `INSERT ... SELECT
//!   generate_series`, ten days of publish times) into a second stream, then `archive_queries`
//!   QueryEvents calls, one at a time, each for a random one-hour window, newest first, page of
//!   100; the figure is the 99th percentile call latency.

use std::time::{Duration, Instant};

use eventflow_e2e::Kind;
use eventflow_proto::{
    prost::Message,
    prost_types::Timestamp,
    v1::{ArchiveFilter, QueryEventsRequest, archive_service_client::ArchiveServiceClient},
};
use eventflow_testkit::postgres::PostgresServer;

use crate::{
    Args, per_second,
    setup::{Env, event, payload, publish_all},
};

/// Rows of the query figure.
const QUERY_ROWS: i64 = 1_000_000;
/// Days the query rows span.
const QUERY_DAYS: i64 = 10;
/// Longest the ingest run may take.
const RUN_DEADLINE: Duration = Duration::from_secs(600);

/// What the archive figures measured.
pub struct ArchiveResult {
    /// Events archived per second.
    pub ingest_rate: f64,
    /// QueryEvents latency percentiles, ms.
    pub query_p50_ms: f64,
    /// 99th percentile, ms.
    pub query_p99_ms: f64,
}

/// Runs both archive figures.
pub async fn run(env: &Env, args: &Args) -> ArchiveResult {
    let pg = PostgresServer::start_durable();
    let db = eventflow_e2e::unique_prefix();
    let url = pg.create_database(&db);
    let total = args.archive_events;
    env.create_stream("archive-ingest").await;
    publish_all(env, args, "archive-ingest", "a", total).await;

    let flags = ["--database-url", url.as_str(), "--archive-poll-ms", "50"];
    let start = Instant::now();
    let archive = eventflow_e2e::start(Kind::Archive, &env.services.redis_url, &env.prefix, &flags).await;
    let count = "SELECT count(*) FROM eventflow.archive WHERE stream = 'archive-ingest'";
    loop {
        let rows: usize = pg.psql(&db, count).parse().expect("a count");
        if rows >= total {
            break;
        }
        assert!(start.elapsed() < RUN_DEADLINE, "archived {rows} of {total} within {RUN_DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ingest_rate = per_second(total, start.elapsed());

    // The query figure: 1 M rows of one stream over ten days, inserted directly.
    let event_bytes = event("q".into(), payload(args.event_bytes)).encode_to_vec();
    let hex: String = event_bytes.iter().map(|b| format!("{b:02x}")).collect();
    let now_ms = i64::try_from(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis(),
    )
    .unwrap_or(0);
    let span_ms = QUERY_DAYS * 86_400_000;
    let first_ms = now_ms - span_ms;
    let step_ms = span_ms / QUERY_ROWS;
    let loaded = Instant::now();
    pg.psql(
        &db,
        &format!(
            "SELECT eventflow.archive_ensure_partition(d::int) FROM generate_series({} , {}) AS d; \
             INSERT INTO eventflow.archive_streams (stream) VALUES ('archive-query'); \
             INSERT INTO eventflow.archive (stream, publish_time, entry_seq, event_id, type, source, subject, event) \
             SELECT 'archive-query', timestamptz 'epoch' + ({first_ms} + i * {step_ms}) * interval '1 millisecond', 0, \
                    'q-' || i, 'type.' || (i % 10), '/bench', 'subject-' || (i % 1000), '\\x{hex}'::bytea \
             FROM generate_series(0, {}) AS i; ANALYZE eventflow.archive;",
            first_ms.div_euclid(86_400_000),
            now_ms.div_euclid(86_400_000) + 1,
            QUERY_ROWS - 1
        ),
    );
    println!("archive: 1 M query rows inserted directly in {:.1} s", loaded.elapsed().as_secs_f64());
    let mut client = ArchiveServiceClient::new(archive.channel().await);
    let hour_ms = 3_600_000;
    let mut micros = Vec::with_capacity(args.archive_queries);
    for i in 0..args.archive_queries {
        // A deterministic spread of windows over the ten days.
        let offset = (i as i64 * 7_919 * 60_000) % (span_ms - hour_ms);
        let (from, to) = (first_ms + offset, first_ms + offset + hour_ms);
        let ts = |ms: i64| Timestamp {
            seconds: ms.div_euclid(1000),
            nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
        };
        let request = QueryEventsRequest {
            filter: Some(ArchiveFilter {
                stream: "archive-query".into(),
                start_time: Some(ts(from)),
                end_time: Some(ts(to)),
                ..Default::default()
            }),
            order: 0,
            page_size: 100,
            page_token: String::new(),
        };
        let started = Instant::now();
        let page = client.query_events(request).await.expect("query").into_inner();
        micros.push(started.elapsed().as_micros() as f64);
        assert_eq!(page.events.len(), 100, "a one-hour window holds more than a page");
    }
    archive.stop().await;
    micros.sort_by(f64::total_cmp);
    let pick = |q: f64| micros[((micros.len() as f64 - 1.0) * q).round() as usize] / 1000.0;
    ArchiveResult { ingest_rate, query_p50_ms: pick(0.5), query_p99_ms: pick(0.99) }
}
