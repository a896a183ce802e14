//! The relay end to end: a real PostgreSQL and redis-server per test (libs/testkit), the relay
//! in-process with its real CLI parser (or, for the crash, the real binary as a child
//! process), rows written with `eventflow_pg::outbox`, entries read back from the stream.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::{BTreeMap, BTreeSet},
    process::{Child, Command, Stdio},
    time::Duration,
};

use clap::Parser;
use eventflow_broker::{Broker, BrokerOptions, StreamConfig, schema};
use eventflow_e2e::{Running, event, eventually, scrape, value, wait_for_health};
use eventflow_pg::outbox;
use eventflow_proto::{
    prost::Message,
    v1::{
        CloudEvent,
        cloud_event::{CloudEventAttributeValue, Data, cloud_event_attribute_value::Attr},
    },
};
use eventflow_runtime::{CancellationToken, serve::Listeners};
use eventflow_testkit::{RedisServer, postgres::PostgresServer, unique_prefix};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tonic_health::pb::health_check_response::ServingStatus;

/// The stream every test publishes to.
const STREAM: &str = "orders";
/// How long a test waits for the relay to get something done.
const PATIENCE: Duration = Duration::from_secs(20);

/// One test's Redis, PostgreSQL database, key prefix, and a pool on the database.
struct Env {
    redis: RedisServer,
    pg: PostgresServer,
    url: String,
    prefix: String,
    pool: PgPool,
}

impl Env {
    /// Starts both servers, creates the database (migrated) and the stream [`STREAM`].
    async fn start(db: &str) -> Self {
        let (redis, pg) = (RedisServer::start(), PostgresServer::start());
        let url = pg.create_database(db);
        let prefix = unique_prefix();
        let broker =
            Broker::new(&redis.url(), BrokerOptions { prefix: prefix.clone(), ..BrokerOptions::default() }).unwrap();
        broker.create_stream(&StreamConfig::new(STREAM)).await.unwrap();
        let pool = eventflow_pg::connect(&url, 4).await.unwrap();
        eventflow_pg::migrate(&pool).await.unwrap();
        Self { redis, pg, url, prefix, pool }
    }

    /// The relay's command line: these servers, `extra` flags.
    fn argv<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut argv = vec!["eventflow-relay", "--redis-url", "", "--key-prefix", &self.prefix];
        argv.extend(["--database-url", &self.url]);
        argv.extend_from_slice(extra);
        argv
    }

    /// Starts the relay in-process and waits until it is ready.
    async fn relay(&self, extra: &[&str]) -> Running {
        let redis_url = self.redis.url();
        let mut argv: Vec<String> = self.argv(extra).into_iter().map(str::to_string).collect();
        argv[2] = redis_url;
        let config = eventflow_relay::Config::try_parse_from(argv).unwrap();
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (addr, metrics_addr) = (grpc.local_addr().unwrap(), metrics.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let handle = tokio::spawn(async move {
            eventflow_relay::run(config, Listeners { grpc, metrics }, token).await.unwrap();
        });
        let running = Running { addr, metrics_addr, shutdown, handle, tls: None };
        wait_for_health(&running, eventflow_relay::SERVICE_NAME, ServingStatus::Serving).await;
        running
    }

    /// The events stored in [`STREAM`], in entry order.
    async fn entries(&self) -> Vec<CloudEvent> {
        let client = redis::Client::open(self.redis.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let key = eventflow_broker::Keys::new(&self.prefix).stream(STREAM);
        let reply: redis::streams::StreamRangeReply =
            redis::cmd("XRANGE").arg(key).arg("-").arg("+").query_async(&mut conn).await.unwrap();
        reply
            .ids
            .iter()
            .map(|entry| {
                let bytes: Vec<u8> = entry.get(schema::entry::EVENT).unwrap();
                CloudEvent::decode(bytes.as_slice()).unwrap()
            })
            .collect()
    }

    /// Waits until no row is left to publish.
    async fn wait_drained(&self) {
        eventually("every outbox row published or failed", PATIENCE, || async {
            let left: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM eventflow.outbox WHERE published_at IS NULL AND failed_at IS NULL",
            )
            .fetch_one(&self.pool)
            .await
            .ok()?;
            (left == 0).then_some(())
        })
        .await;
    }

    /// Inserts `events` in one committed transaction; returns their row ids.
    async fn insert(&self, events: &[CloudEvent]) -> Vec<i64> {
        let mut tx = self.pool.begin().await.unwrap();
        let mut ids = Vec::new();
        for event in events {
            ids.push(outbox::enqueue(&mut tx, STREAM, event).await.unwrap());
        }
        tx.commit().await.unwrap();
        ids
    }
}

/// A valid event of `key` (its partition key) carrying `n` as text data, without an id.
fn keyed(key: &str, n: usize) -> CloudEvent {
    let mut event = event("", "t");
    event.data = Some(Data::TextData(format!("{key}:{n}")));
    event.attributes.insert("partitionkey".into(), CloudEventAttributeValue { attr: Some(Attr::CeString(key.into())) });
    event
}

/// The text data of an event.
fn text(event: &CloudEvent) -> &str {
    match &event.data {
        Some(Data::TextData(text)) => text,
        _ => "",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_rows_are_published_once_woken_by_notify_and_rolled_back_ones_never() {
    let env = Env::start("committed").await;
    // A poll interval far beyond the test: only the NOTIFY can wake the relay.
    let relay = env.relay(&["--relay-poll-ms", "600000"]).await;
    let mut rolled_back = env.pool.begin().await.unwrap();
    outbox::enqueue(&mut rolled_back, STREAM, &event("never", "t")).await.unwrap();
    rolled_back.rollback().await.unwrap();
    let mut tx = env.pool.begin().await.unwrap();
    let anonymous = outbox::enqueue(&mut tx, STREAM, &event("", "t")).await.unwrap();
    outbox::enqueue(&mut tx, STREAM, &event("named", "t")).await.unwrap();
    let json = serde_json::json!({"specversion": "1.0", "id": "json-1", "source": "/s", "type": "t", "data": {"a": 1}});
    outbox::enqueue_json(&mut tx, STREAM, &json).await.unwrap();
    tx.commit().await.unwrap();
    env.wait_drained().await;
    let identity: String =
        sqlx::query_scalar("SELECT id::text FROM eventflow.outbox_identity").fetch_one(&env.pool).await.unwrap();
    let ids: Vec<String> = env.entries().await.into_iter().map(|e| e.id).collect();
    assert_eq!(ids, [format!("outbox-{identity}-{anonymous}"), "named".into(), "json-1".into()]);
    let samples = scrape(&relay).await;
    assert_eq!(value(&samples, "eventflow_outbox_published_total", &[]), 3.0);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_between_xadd_and_marking_loses_nothing_and_stores_nothing_twice() {
    let env = Env::start("crash").await;
    let expected: BTreeSet<String> = env
        .insert(&(0..20).map(|n| keyed("k", n)).collect::<Vec<_>>())
        .await
        .into_iter()
        .map(|id| id.to_string())
        .collect();
    // The crash point: marking rows published (an UPDATE of the outbox) waits for an advisory
    // lock this test holds, so the relay stops after storing the events and before marking.
    let mut holder = env.pool.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(4242)").execute(&mut *holder).await.unwrap();
    sqlx::raw_sql(
        "CREATE FUNCTION test_wait() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN PERFORM pg_advisory_xact_lock(4242); RETURN NULL; END $$; \
         CREATE TRIGGER test_wait BEFORE UPDATE ON eventflow.outbox FOR EACH STATEMENT EXECUTE FUNCTION test_wait();",
    )
    .execute(&env.pool)
    .await
    .unwrap();
    let redis_url = env.redis.url();
    let mut argv = env.argv(&["--grpc-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"]);
    argv[2] = &redis_url;
    let mut child: Child = Command::new(env!("CARGO_BIN_EXE_eventflow-relay"))
        .args(&argv[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually("the killed relay's 20 entries", PATIENCE, || async { (env.entries().await.len() == 20).then_some(()) })
        .await;
    child.kill().unwrap();
    child.wait().unwrap();
    sqlx::query("SELECT pg_advisory_unlock(4242)").execute(&mut *holder).await.unwrap();
    drop(holder);
    sqlx::raw_sql("DROP TRIGGER test_wait ON eventflow.outbox").execute(&env.pool).await.unwrap();
    let unpublished: i64 = sqlx::query_scalar("SELECT count(*) FROM eventflow.outbox WHERE published_at IS NULL")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(unpublished, 20, "the killed relay marked nothing");
    let relay = env.relay(&[]).await;
    env.wait_drained().await;
    let entries = env.entries().await;
    let stored: BTreeSet<String> = entries.iter().map(|e| e.id.rsplit('-').next().unwrap().to_string()).collect();
    assert_eq!(entries.len(), 20, "no entry twice");
    assert_eq!(stored, expected, "every row once");
    let samples = scrape(&relay).await;
    assert_eq!(
        value(&samples, "eventflow_duplicates_total", &[("stream", STREAM)]),
        20.0,
        "the retry was deduplicated"
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_publish_every_row_once_in_key_order() {
    let env = Env::start("replicas").await;
    let flags = ["--relay-batch-size", "7", "--relay-workers", "3", "--relay-poll-ms", "50"];
    let (a, b) = (env.relay(&flags).await, env.relay(&flags).await);
    let keys = ["a", "b", "c", "d", "e"];
    let mut counts = BTreeMap::new();
    for round in 0..30 {
        let events: Vec<CloudEvent> = (0..10)
            .map(|i| {
                let key = keys[(round + i) % keys.len()];
                let n = counts.entry(key).or_insert(0usize);
                *n += 1;
                keyed(key, *n)
            })
            .collect();
        env.insert(&events).await;
    }
    env.wait_drained().await;
    let entries = env.entries().await;
    assert_eq!(entries.len(), 300, "every row once");
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for entry in &entries {
        let (key, n) = text(entry).split_once(':').unwrap();
        let n: usize = n.parse().unwrap();
        let last = seen.insert(key.to_string(), n).unwrap_or(0);
        assert_eq!(n, last + 1, "key {key}: {n} stored after {last}");
    }
    let published = value(&scrape(&a).await, "eventflow_outbox_published_total", &[])
        + value(&scrape(&b).await, "eventflow_outbox_published_total", &[]);
    assert_eq!(published, 300.0);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_flips_health_and_the_relay_publishes_what_came_meanwhile() {
    let mut env = Env::start("restart").await;
    let relay = env.relay(&["--relay-poll-ms", "100"]).await;
    env.insert(&[keyed("k", 1)]).await;
    env.wait_drained().await;
    env.pg.kill();
    wait_for_health(&relay, eventflow_relay::SERVICE_NAME, ServingStatus::NotServing).await;
    env.pg.restart();
    env.insert(&[keyed("k", 2), keyed("k", 3)]).await;
    wait_for_health(&relay, eventflow_relay::SERVICE_NAME, ServingStatus::Serving).await;
    env.wait_drained().await;
    let texts: Vec<String> = env.entries().await.iter().map(|e| text(e).to_string()).collect();
    assert_eq!(texts, ["k:1", "k:2", "k:3"]);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rows_are_marked_failed_with_the_reason_and_the_rows_after_them_go_on() {
    let env = Env::start("failed").await;
    let mut invalid = keyed("k", 1);
    invalid.source.clear();
    let mut tx = env.pool.begin().await.unwrap();
    let bad = outbox::enqueue(&mut tx, STREAM, &invalid).await.unwrap();
    let garbage: i64 = sqlx::query_scalar(
        "INSERT INTO eventflow.outbox (stream, event, partition_key) VALUES ($1, '\\xffff', 'k') RETURNING id",
    )
    .bind(STREAM)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    let nowhere = outbox::enqueue(&mut tx, "no-such-stream", &keyed("k", 2)).await.unwrap();
    outbox::enqueue(&mut tx, STREAM, &keyed("k", 3)).await.unwrap();
    tx.commit().await.unwrap();
    let relay = env.relay(&[]).await;
    env.wait_drained().await;
    let texts: Vec<String> = env.entries().await.iter().map(|e| text(e).to_string()).collect();
    assert_eq!(texts, ["k:3"], "the good row after the bad ones of its key is published");
    let failures: BTreeMap<i64, String> =
        sqlx::query_as("SELECT id, failure FROM eventflow.outbox WHERE failed_at IS NOT NULL")
            .fetch_all(&env.pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    assert!(failures[&bad].contains("source"), "{}", failures[&bad]);
    assert!(failures[&garbage].starts_with("event is not a protobuf CloudEvent"), "{}", failures[&garbage]);
    assert!(failures[&nowhere].contains("not found"), "{}", failures[&nowhere]);
    assert_eq!(value(&scrape(&relay).await, "eventflow_outbox_failed_total", &[]), 3.0);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retention_deletes_published_rows_and_keeps_failed_ones() {
    let env = Env::start("retention").await;
    let mut invalid = keyed("k", 0);
    invalid.r#type.clear();
    env.insert(&[keyed("k", 1), keyed("k", 2), invalid]).await;
    let relay = env.relay(&["--relay-retention-secs", "1"]).await;
    eventually("published rows deleted", PATIENCE, || async {
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM eventflow.outbox").fetch_one(&env.pool).await.ok()?;
        (rows == 1).then_some(())
    })
    .await;
    let failed: i64 = sqlx::query_scalar("SELECT count(*) FROM eventflow.outbox WHERE failed_at IS NOT NULL")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(failed, 1, "the failed row stays");
    assert_eq!(env.entries().await.len(), 2);
    assert_eq!(value(&scrape(&relay).await, "eventflow_outbox_deleted_total", &[]), 2.0);
    relay.stop().await;
}
