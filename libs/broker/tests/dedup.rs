//! Dedup in per-stream time-bucket hashes (layout 2) against a real redis-server (AOF on): a
//! repeat within one call, across calls and across a bucket boundary is a duplicate, one older
//! than the window is stored anew; the bucket before the previous one is unlinked by the first
//! write into a new bucket; a changed window keeps each id to the window it was stored under;
//! layout 1's per-event keys (written by layout 1's script text) still deduplicate after the
//! upgrade; dedup survives a Redis restart; DeleteStream leaves no bucket. Waits are on Redis's
//! own clock (`TIME`), polled, never fixed sleeps. Also: the check behind the services' start-up
//! warning when Redis expires keys in its main thread.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{PATIENCE, event, options};
use eventflow_broker::{
    Broker, LayoutCheck, Published, StreamConfig,
    schema::{self, LAYOUT_VERSION, meta},
};
use eventflow_testkit::{RedisServer, unique_prefix};
use redis::Commands;

/// A Redis with AOF, a broker on a unique prefix, stream `s` with the given dedup window, and a
/// plain connection to read Redis state.
struct Fixture {
    redis: RedisServer,
    broker: Broker,
    conn: redis::Connection,
}

impl Fixture {
    async fn new(window_ms: u64) -> Self {
        let redis = RedisServer::start();
        let broker = Broker::new(&redis.url(), options(&unique_prefix())).unwrap();
        let mut config = StreamConfig::new("s");
        config.dedup_window = Duration::from_millis(window_ms);
        broker.create_stream(&config).await.unwrap();
        let conn = redis::Client::open(redis.url()).unwrap().get_connection().unwrap();
        Self { redis, broker, conn }
    }

    async fn publish_to(&self, stream: &str, ids: &[&str]) -> Vec<Published> {
        self.broker.publish(stream, ids.iter().map(|id| event(id, "")).collect()).await.unwrap()
    }

    async fn publish(&self, ids: &[&str]) -> Vec<Published> {
        self.publish_to("s", ids).await
    }

    /// Redis's clock, ms.
    fn now_ms(&mut self) -> u64 {
        let (secs, micros): (u64, u64) = redis::cmd("TIME").query(&mut self.conn).unwrap();
        secs * 1000 + micros / 1000
    }

    /// Polls Redis's clock until `reached` holds for it; returns that time.
    async fn wait_for_time(&mut self, what: &str, reached: impl Fn(u64) -> bool) -> u64 {
        let start = Instant::now();
        loop {
            let now = self.now_ms();
            if reached(now) {
                return now;
            }
            assert!(start.elapsed() < PATIENCE, "Redis time never reached {what}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// The dedup buckets of stream `s`, sorted.
    fn buckets(&mut self) -> Vec<String> {
        let base = self.broker.keys().dedup_ids_base("s");
        let mut keys: Vec<String> = self.conn.keys(format!("{base}*")).unwrap();
        keys.sort();
        keys
    }

    fn meta(&mut self, field: &str) -> Option<String> {
        self.conn.hget(self.broker.keys().meta("s"), field).unwrap()
    }

    async fn set_window(&self, window_ms: u64) {
        let mut config = self.broker.get_stream("s").await.unwrap();
        config.dedup_window = Duration::from_millis(window_ms);
        self.broker.update_stream(&config).await.unwrap();
    }
}

/// The time part (ms) of an entry id.
fn ms_of(entry_id: &str) -> u64 {
    entry_id.split('-').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_duplicate_is_found_across_a_bucket_boundary_and_not_after_the_window() {
    const W: u64 = 2000;
    let mut f = Fixture::new(W).await;
    let keys = f.broker.keys().clone();
    // Publish late in a bucket, so the next bucket starts well within the window.
    f.wait_for_time("the second half of a bucket", |t| (1000..1300).contains(&(t % W))).await;
    let first = f.publish(&["x", "x"]).await;
    assert!(!first[0].duplicate && first[1].duplicate, "{first:?}");
    assert_eq!(first[1].entry_id, first[0].entry_id, "a repeat within the call is the first entry");
    let t0 = ms_of(&first[0].entry_id);
    let bucket = t0 / W;
    assert_eq!(f.buckets(), [keys.dedup_ids("s", W, bucket)]);
    let stored: Option<String> = f.conn.hget(keys.dedup_ids("s", W, bucket), "x").unwrap();
    assert_eq!(stored.as_deref(), Some(first[0].entry_id.as_str()));
    let ttl: i64 = f.conn.pttl(keys.dedup_ids("s", W, bucket)).unwrap();
    assert!(ttl > 0 && ttl <= 3 * W as i64, "the bucket expires after the next one ends: {ttl}");

    f.wait_for_time("the next bucket", |t| t / W > bucket).await;
    let again = f.publish(&["x"]).await;
    assert!(again[0].duplicate && again[0].entry_id == first[0].entry_id, "found in the previous bucket: {again:?}");

    f.wait_for_time("the end of the window", |t| t >= t0 + W).await;
    let later = f.publish(&["x"]).await;
    assert!(!later[0].duplicate && later[0].entry_id != first[0].entry_id, "older than the window: {later:?}");
    let repeat = f.publish(&["x"]).await;
    assert!(repeat[0].duplicate && repeat[0].entry_id == later[0].entry_id, "{repeat:?}");

    // The first write two buckets on unlinks the first bucket (it can no longer be consulted).
    f.wait_for_time("two buckets on", |t| t / W >= bucket + 2).await;
    f.publish(&["y"]).await;
    assert!(!f.buckets().contains(&keys.dedup_ids("s", W, bucket)), "{:?}", f.buckets());
}

#[tokio::test]
async fn a_changed_window_keeps_each_id_to_the_window_it_was_stored_under() {
    const LONG: u64 = 60_000;
    const SHORT: u64 = 1000;
    let mut f = Fixture::new(LONG).await;
    let a = f.publish(&["a"]).await;

    // Shrink: `a` was stored under the long window and stays a duplicate for it.
    f.set_window(SHORT).await;
    let again = f.publish(&["a", "b"]).await;
    assert!(again[0].duplicate && again[0].entry_id == a[0].entry_id, "{again:?}");
    assert!(!again[1].duplicate, "{again:?}");
    let b = again[1].entry_id.clone();
    assert!(f.meta(meta::DEDUP_OLD).unwrap_or_default().starts_with(&format!("{LONG}:")));

    // Grow: `b` was stored under the short window: a duplicate only within it.
    f.set_window(LONG).await;
    let again = f.publish(&["b"]).await;
    assert!(again[0].duplicate && again[0].entry_id == b, "{again:?}");
    f.wait_for_time("the end of b's short window", |t| t >= ms_of(&b) + SHORT).await;
    let later = f.publish(&["b", "a"]).await;
    assert!(!later[0].duplicate, "b's window passed: stored anew: {later:?}");
    assert!(later[1].duplicate && later[1].entry_id == a[0].entry_id, "{later:?}");
    let repeat = f.publish(&["b"]).await;
    assert!(repeat[0].duplicate && repeat[0].entry_id == later[0].entry_id, "{repeat:?}");

    // Once no id of the short window can count any more, its buckets are unlinked and forgotten.
    let short_mark = f.meta(meta::DEDUP_OLD).unwrap();
    let index: u64 = short_mark.split(' ').find_map(|m| m.strip_prefix(&format!("{SHORT}:"))).unwrap().parse().unwrap();
    f.wait_for_time("the end of the short window's last bucket", |t| t >= (index + 2) * SHORT).await;
    f.publish(&["c"]).await;
    let short = format!("{}{SHORT}:", f.broker.keys().dedup_ids_base("s"));
    assert!(f.buckets().iter().all(|k| !k.starts_with(&short)), "{:?}", f.buckets());
    assert!(!f.meta(meta::DEDUP_OLD).unwrap_or_default().contains(&format!("{SHORT}:")));
}

#[tokio::test]
async fn layout_1_dedup_keys_still_deduplicate_after_the_upgrade() {
    let mut f = Fixture::new(600_000).await;
    let keys = f.broker.keys().clone();
    // Stream `s` as layout 1 left it: no `dedup_legacy_until` field, an event published by layout
    // 1's own script text (one dedup key per event).
    let _: () = f.conn.hdel(keys.meta("s"), meta::DEDUP_LEGACY_UNTIL).unwrap();
    let old_script = format!("{}{}", schema::lua_constants(), include_str!("fixtures/publish_layout1.lua"));
    let (ids, _trim): (String, i64) = redis::Script::new(&old_script)
        .key(keys.stream("s"))
        .key(keys.meta("s"))
        .key(keys.dedup("s", "old"))
        .arg("payload")
        .arg("t")
        .arg("")
        .arg("")
        .invoke(&mut f.conn)
        .unwrap();
    let _: () = f.conn.set(keys.layout(), 1).unwrap();
    assert_eq!(f.broker.check_layout().await.unwrap(), LayoutCheck::Migrated(1));
    let version: String = f.conn.get(keys.layout()).unwrap();
    assert_eq!(version, LAYOUT_VERSION.to_string());

    let published = f.publish(&["old", "new"]).await;
    assert!(published[0].duplicate && published[0].entry_id == ids, "{published:?}");
    assert!(!published[1].duplicate, "{published:?}");
    let until: u64 = f.meta(meta::DEDUP_LEGACY_UNTIL).unwrap().parse().unwrap();
    assert!(until > f.now_ms(), "layout 1's keys are read for one window: {until}");

    // A stream created by layout 2 never reads them.
    f.broker.create_stream(&StreamConfig::new("t")).await.unwrap();
    let _: () = f.conn.pset_ex(keys.dedup("t", "z"), "1-1", 600_000).unwrap();
    let fresh = f.publish_to("t", &["z"]).await;
    assert!(!fresh[0].duplicate, "{fresh:?}");
}

#[tokio::test]
async fn dedup_survives_a_redis_restart() {
    let mut f = Fixture::new(600_000).await;
    let first = f.publish(&["e"]).await;
    f.redis.restart();
    let start = Instant::now();
    let again = loop {
        match f.broker.publish("s", vec![event("e", "")]).await {
            Ok(again) => break again,
            Err(e) => assert!(start.elapsed() < PATIENCE, "no publish after the restart: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(again[0].duplicate && again[0].entry_id == first[0].entry_id, "{again:?}");
}

#[tokio::test]
async fn deleting_a_stream_removes_its_dedup_buckets() {
    let mut f = Fixture::new(600_000).await;
    f.publish(&["a", "b"]).await;
    assert_eq!(f.buckets().len(), 1);
    f.broker.delete_stream("s").await.unwrap();
    assert!(f.buckets().is_empty(), "{:?}", f.buckets());
    f.broker.create_stream(&StreamConfig::new("s")).await.unwrap();
    let fresh = f.publish(&["a"]).await;
    assert!(!fresh[0].duplicate, "{fresh:?}");
}

/// The start-up warning's check: the harness's Redis frees expired keys lazily (as
/// docs/operations.md asks); one set back to the default does not; one without CONFIG cannot
/// be told.
#[tokio::test]
async fn lazy_expiry_is_detected_and_its_absence_reported() {
    let fixture = Fixture::new(60_000).await;
    assert_eq!(fixture.broker.lazy_expire().await.unwrap(), Some(true));
    assert!(fixture.redis.raw("CONFIG SET lazyfree-lazy-expire no").starts_with("+OK"));
    assert_eq!(fixture.broker.lazy_expire().await.unwrap(), Some(false));

    let hidden = RedisServer::start_with(&["--appendonly", "no", "--rename-command", "CONFIG", ""]);
    let broker = Broker::new(&hidden.url(), options(&unique_prefix())).unwrap();
    assert_eq!(broker.lazy_expire().await.unwrap(), None);
}
