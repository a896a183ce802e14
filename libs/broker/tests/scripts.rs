//! The broker's scripts through its own API against a real redis-server (no gRPC): publish and
//! dedup, settlement (ack, nack, reject; per-id ack outcomes, with and without kept errors; a
//! call failing midway), claim-due after a retry backoff, filter acking, retention
//! dead-lettering pending entries, and requeue. Redis state is read back through the key layout
//! and the names of `schema.rs`, never literals.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::{collections::HashMap, time::Duration};

use eventflow_broker::{
    BreakerPolicy, BreakerState, Broker, BrokerOptions, Delivery, FlowControl, NewEvent, PARKING_CONSUMER, Position,
    Session, Source, StreamConfig, SubscriptionConfig,
    schema::{dead_letter, entry, error_field, sub},
};
use eventflow_testkit::{RedisServer, unique_prefix};
use redis::Commands;

/// A Redis, a broker on a unique prefix, and a plain connection to read Redis state.
struct Fixture {
    _redis: RedisServer,
    broker: Broker,
    conn: redis::Connection,
}

impl Fixture {
    /// Stream `s` (with `stream` applied to its settings) and subscription `sub` from the start
    /// (with `subscription` applied).
    async fn new(stream: impl FnOnce(&mut StreamConfig), subscription: impl FnOnce(&mut SubscriptionConfig)) -> Self {
        let redis = RedisServer::start_with(&["--appendonly", "no"]);
        let options = BrokerOptions { prefix: unique_prefix(), ..BrokerOptions::default() };
        let broker = Broker::new(&redis.url(), options).unwrap();
        let mut config = StreamConfig::new("s");
        stream(&mut config);
        broker.create_stream(&config).await.unwrap();
        let mut config = SubscriptionConfig::new("s", "sub");
        subscription(&mut config);
        broker.create_subscription(&config, &Position::Earliest).await.unwrap();
        let conn = redis::Client::open(redis.url()).unwrap().get_connection().unwrap();
        Self { _redis: redis, broker, conn }
    }

    async fn publish(&self, events: &[(&str, &str)]) -> Vec<eventflow_broker::Published> {
        let events = events
            .iter()
            .map(|(id, event_type)| NewEvent {
                id: (*id).into(),
                event_type: (*event_type).into(),
                payload: format!("payload of {id}").into_bytes(),
                traceparent: String::new(),
                ordering_key: String::new(),
            })
            .collect();
        self.broker.publish("s", events).await.unwrap()
    }

    async fn session(&self) -> Session {
        Session::open(&self.broker, "s", "sub", FlowControl::new(100, 0).unwrap()).await.unwrap()
    }

    /// The fields of every entry of stream `key`, in order.
    fn entries(&mut self, key: &str) -> Vec<(String, HashMap<String, String>)> {
        let reply: redis::streams::StreamRangeReply = self.conn.xrange_all(key).unwrap();
        reply
            .ids
            .into_iter()
            .map(|e| {
                let fields = e.map.iter().map(|(k, v)| (k.clone(), redis::from_redis_value_ref(v).unwrap())).collect();
                (e.id, fields)
            })
            .collect()
    }

    /// Pending entries of the group on stream `key`: (entry id, consumer, deliveries).
    fn pending(&mut self, key: &str) -> Vec<(String, String, usize)> {
        let reply: redis::streams::StreamPendingCountReply =
            self.conn.xpending_count(key, "sub", "-", "+", 100).unwrap();
        reply.ids.into_iter().map(|p| (p.id, p.consumer, p.times_delivered)).collect()
    }

    fn hash_field(&mut self, key: &str, field: &str) -> Option<String> {
        self.conn.hget(key, field).unwrap()
    }
}

/// Reads batches until `n` deliveries came (each read returns within the block time).
async fn deliveries(session: &mut Session, n: usize) -> Vec<Delivery> {
    let mut got = Vec::new();
    for _ in 0..200 {
        got.extend(session.next_batch().await.unwrap());
        if got.len() >= n {
            return got;
        }
    }
    panic!("{} of {n} deliveries came", got.len());
}

#[tokio::test]
async fn publish_stores_the_entry_fields_and_dedups_by_event_id() {
    let mut f = Fixture::new(|_| {}, |_| {}).await;
    let first = f.publish(&[("e1", "t.a"), ("e1", "t.a"), ("e2", "t.b")]).await;
    assert!(!first[0].duplicate && first[1].duplicate && !first[2].duplicate, "{first:?}");
    assert_eq!(first[0].entry_id, first[1].entry_id, "a repeat within the batch is the first entry");
    let again = f.publish(&[("e2", "t.b")]).await;
    assert!(again[0].duplicate && again[0].entry_id == first[2].entry_id, "{again:?}");

    let keys = f.broker.keys().clone();
    let stored = f.entries(&keys.stream("s"));
    assert_eq!(stored.len(), 2);
    let (id, fields) = &stored[0];
    assert_eq!(id, &first[0].entry_id);
    assert_eq!(fields[entry::EVENT], "payload of e1");
    assert_eq!(fields[entry::TYPE], "t.a");
    assert!(!fields.contains_key(entry::TRACEPARENT), "no traceparent field for an event without one: {fields:?}");
    assert!(!fields.contains_key(entry::ORIGIN), "only redrive entries carry their origin");
    let buckets: Vec<String> = f.conn.keys(format!("{}*", keys.dedup_ids_base("s"))).unwrap();
    assert_eq!(buckets.len(), 1, "one bucket for the call's ids: {buckets:?}");
    let dedup: Option<String> = f.conn.hget(&buckets[0], "e1").unwrap();
    assert_eq!(dedup.as_deref(), Some(first[0].entry_id.as_str()));
}

/// Traceparent and ordering key are stored only when the event has them, in every combination,
/// and each comes back on delivery as published.
#[tokio::test]
async fn publish_stores_traceparent_and_ordering_key_only_when_the_event_has_them() {
    const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let mut f = Fixture::new(|_| {}, |_| {}).await;
    let shapes = [("plain", "", ""), ("traced", TP, ""), ("keyed", "", "k1"), ("both", TP, "k2")];
    let events = shapes
        .iter()
        .map(|(id, traceparent, key)| NewEvent {
            id: (*id).into(),
            event_type: "t".into(),
            payload: format!("payload of {id}").into_bytes(),
            traceparent: (*traceparent).into(),
            ordering_key: (*key).into(),
        })
        .collect();
    let published = f.broker.publish("s", events).await.unwrap();
    let key = f.broker.keys().stream("s");
    let stored = f.entries(&key);
    assert_eq!(stored.len(), shapes.len());
    for ((id, traceparent, key), (_, fields)) in shapes.iter().zip(&stored) {
        assert_eq!(fields[entry::EVENT], format!("payload of {id}"));
        assert_eq!(fields.get(entry::TRACEPARENT).map(String::as_str), Some(*traceparent).filter(|t| !t.is_empty()));
        assert_eq!(fields.get(entry::KEY).map(String::as_str), Some(*key).filter(|k| !k.is_empty()), "{id}");
    }
    let mut session = f.session().await;
    let mut got = deliveries(&mut session, shapes.len()).await;
    got.sort_by(|a, b| a.entry_id.cmp(&b.entry_id));
    for ((id, traceparent, _), (delivery, p)) in shapes.iter().zip(got.iter().zip(&published)) {
        assert_eq!(delivery.entry_id, p.entry_id, "{id}");
        assert_eq!(delivery.traceparent.as_deref(), Some(*traceparent).filter(|t| !t.is_empty()), "{id}");
    }
    let ack_ids: Vec<String> = got.iter().map(|d| d.ack_id.clone()).collect();
    assert_eq!(f.broker.acknowledge(&ack_ids).await.unwrap().applied.len(), shapes.len());
}

#[tokio::test]
async fn ack_nack_and_reject_settle_the_entries_in_redis() {
    let mut f = Fixture::new(|_| {}, |_| {}).await;
    f.publish(&[("e1", "t"), ("e2", "t"), ("e3", "t")]).await;
    let mut session = f.session().await;
    let got = deliveries(&mut session, 3).await;
    let keys = f.broker.keys().clone();
    let (stream, errors) = (keys.stream("s"), keys.errors("s", "sub"));

    let acked = f.broker.acknowledge(std::slice::from_ref(&got[0].ack_id)).await.unwrap();
    assert_eq!(acked.applied.len(), 1);
    let nacked = f.broker.modify_ack_deadline(std::slice::from_ref(&got[1].ack_id), 0, "flaky").await.unwrap();
    assert_eq!(nacked.applied.len(), 1);
    let pending = f.pending(&stream);
    assert_eq!(pending.len(), 2, "{pending:?}");
    assert!(pending.iter().all(|(id, ..)| id != &got[0].entry_id), "acked: {pending:?}");
    let parked = pending.iter().find(|(id, ..)| id == &got[1].entry_id).unwrap();
    assert_eq!(parked.1, PARKING_CONSUMER, "a nack hands the entry to the parking consumer");
    let field = format!("{}{}", error_field::STREAM, got[1].entry_id);
    assert_eq!(f.hash_field(&errors, &field).as_deref(), Some("flaky"), "the nack reason is kept");

    let rejected = f.broker.reject(std::slice::from_ref(&got[2].ack_id), "poison").await.unwrap();
    assert_eq!(rejected.applied.len(), 1);
    let dead = f.entries(&keys.dlq("s", "sub"));
    assert_eq!(dead.len(), 1);
    let fields = &dead[0].1;
    assert_eq!(fields[dead_letter::REASON], "poison");
    assert_eq!(fields[dead_letter::ENTRY_ID], got[2].entry_id);
    assert_eq!(fields[dead_letter::STREAM], "s");
    assert_eq!(fields[dead_letter::SUBSCRIPTION], "sub");
    assert_eq!(fields[dead_letter::ATTEMPTS], "1");
    assert_eq!(fields[dead_letter::CONSUMER], session.consumer());
    assert_eq!(fields[entry::EVENT], "payload of e3");
    assert!(f.pending(&stream).iter().all(|(id, ..)| id != &got[2].entry_id), "a reject acks");

    // An ack id settles once: the acked entry is no longer pending.
    let again = f.broker.acknowledge(std::slice::from_ref(&got[0].ack_id)).await.unwrap();
    assert_eq!(again.expired, vec![got[0].ack_id.clone()]);
}

/// The ACK script answers a call whose ids were all pending with their count, and any other call
/// id by id: here with no last error kept (its plain XACK loop), pending and settled ids mixed.
#[tokio::test]
async fn an_ack_call_mixing_pending_and_settled_ids_reports_each_without_kept_errors() {
    let f = Fixture::new(|_| {}, |_| {}).await;
    f.publish(&[("e1", "t"), ("e2", "t"), ("e3", "t"), ("e4", "t")]).await;
    let mut session = f.session().await;
    let got = deliveries(&mut session, 4).await;
    let ids: Vec<String> = got.iter().map(|d| d.ack_id.clone()).collect();

    let first = f.broker.acknowledge(&[ids[0].clone(), ids[2].clone()]).await.unwrap();
    assert_eq!((first.applied.len(), first.expired.len()), (2, 0), "{first:?}");
    let call = [&ids[0], &ids[1], &ids[2], &ids[3], &ids[1]].map(String::clone);
    let mixed = f.broker.acknowledge(&call).await.unwrap();
    let applied: Vec<&str> = mixed.applied.iter().map(|id| id.entry_id.as_str()).collect();
    assert_eq!(applied, [got[1].entry_id.as_str(), got[3].entry_id.as_str()]);
    assert_eq!(mixed.expired, [ids[0].clone(), ids[2].clone(), ids[1].clone()], "in call order");
    let none = f.broker.acknowledge(&ids).await.unwrap();
    assert_eq!((none.applied.len(), none.expired), (0, ids), "all settled before");
}

#[tokio::test]
async fn a_nack_with_backoff_parks_the_entry_until_it_is_due_then_it_is_claimed_again() {
    let mut f = Fixture::new(
        |_| {},
        |s| {
            s.min_backoff = Duration::from_secs(600);
            s.max_backoff = Duration::from_secs(600);
        },
    )
    .await;
    f.publish(&[("e1", "t")]).await;
    let mut session = f.session().await;
    let first = deliveries(&mut session, 1).await;
    f.broker.modify_ack_deadline(std::slice::from_ref(&first[0].ack_id), 0, "later").await.unwrap();
    let delay = f.broker.keys().delay("s", "sub");
    let due: Option<f64> = f.conn.zscore(&delay, &first[0].entry_id).unwrap();
    assert!(due.is_some(), "parked in the delay set");
    let pending = f.pending(&f.broker.keys().stream("s"));
    assert_eq!(pending[0].1, PARKING_CONSUMER);

    // Make it due now (instead of waiting 10 minutes): the next claim takes it, attempt 2.
    let _: () = f.conn.zadd(&delay, &first[0].entry_id, 0).unwrap();
    let second = deliveries(&mut session, 1).await;
    assert_eq!(second[0].entry_id, first[0].entry_id);
    assert_eq!(second[0].attempt, 2);
    let left: Option<f64> = f.conn.zscore(&delay, &first[0].entry_id).unwrap();
    assert_eq!(left, None, "claimed entries leave the delay set");
    let (errors, field) = (f.broker.keys().errors("s", "sub"), format!("{}{}", error_field::STREAM, first[0].entry_id));
    assert_eq!(f.hash_field(&errors, &field).as_deref(), Some("later"));
    // Acknowledging the redelivery forgets its last error.
    f.broker.acknowledge(std::slice::from_ref(&second[0].ack_id)).await.unwrap();
    assert_eq!(f.hash_field(&errors, &field), None, "an ack deletes the entry's last error");
}

#[tokio::test]
async fn entries_the_type_filter_excludes_are_acked_and_counted() {
    let mut f = Fixture::new(|_| {}, |s| s.event_type_filter = vec!["wanted".into()]).await;
    f.publish(&[("e1", "unwanted"), ("e2", "wanted"), ("e3", "unwanted")]).await;
    let mut session = f.session().await;
    let got = deliveries(&mut session, 1).await;
    assert_eq!(got.len(), 1);
    let pending = f.pending(&f.broker.keys().stream("s"));
    assert_eq!(pending.iter().map(|p| &p.0).collect::<Vec<_>>(), [&got[0].entry_id], "only the wanted one is pending");
    assert_eq!(f.hash_field(&f.broker.keys().sub("s", "sub"), sub::FILTERED).as_deref(), Some("2"));
}

#[tokio::test]
async fn retention_dead_letters_pending_and_undelivered_entries() {
    let mut f = Fixture::new(|_| {}, |_| {}).await;
    f.publish(&[("e1", "t"), ("e2", "t")]).await;
    let mut session = f.session().await;
    let pending = deliveries(&mut session, 2).await;
    f.publish(&[("e3", "t"), ("e4", "t")]).await;
    let mut config = f.broker.get_stream("s").await.unwrap();
    config.max_len = 1;
    f.broker.update_stream(&config).await.unwrap();

    let trimmed = f.broker.trim_stream("s").await.unwrap();
    assert_eq!((trimmed.removed, trimmed.dead_lettered, trimmed.dropped), (3, 3, 0));
    let keys = f.broker.keys().clone();
    assert_eq!(f.entries(&keys.stream("s")).len(), 1);
    let dead = f.entries(&keys.dlq("s", "sub"));
    assert_eq!(dead.len(), 3);
    assert!(dead.iter().all(|(_, d)| d[dead_letter::REASON] == "retention"), "{dead:?}");
    assert_eq!(dead[0].1[dead_letter::ENTRY_ID], pending[0].entry_id);
    assert_eq!(dead[0].1[dead_letter::ATTEMPTS], "1", "a pending entry keeps its attempts");
    assert_eq!(dead[2].1[dead_letter::ATTEMPTS], "0", "an undelivered one had none");
    assert!(f.pending(&keys.stream("s")).is_empty(), "trimmed pending entries are acked");
    assert_eq!(f.hash_field(&keys.sub("s", "sub"), sub::RETENTION_DEAD_LETTERED).as_deref(), Some("3"));
}

#[tokio::test]
async fn a_requeued_dead_letter_is_redelivered_from_the_redrive_stream_and_deleted_when_acked() {
    let mut f = Fixture::new(|_| {}, |_| {}).await;
    f.publish(&[("e1", "t")]).await;
    let mut session = f.session().await;
    let got = deliveries(&mut session, 1).await;
    f.broker.reject(std::slice::from_ref(&got[0].ack_id), "poison").await.unwrap();
    let keys = f.broker.keys().clone();
    let dead = f.entries(&keys.dlq("s", "sub"));
    let (moved, missing) = f.broker.requeue_dead_letters("s", "sub", &[dead[0].0.clone()]).await.unwrap();
    assert_eq!((moved, missing.len()), (1, 0));
    assert!(f.entries(&keys.dlq("s", "sub")).is_empty());
    let redrive = f.entries(&keys.redrive("s", "sub"));
    assert_eq!(redrive.len(), 1);
    assert_eq!(redrive[0].1[entry::ORIGIN], got[0].entry_id, "the original entry id travels along");
    assert_eq!(redrive[0].1[entry::EVENT], "payload of e1");

    let again = deliveries(&mut session, 1).await;
    assert_eq!(again[0].source, Source::Redrive);
    assert_eq!(again[0].attempt, 1);
    f.broker.acknowledge(std::slice::from_ref(&again[0].ack_id)).await.unwrap();
    assert!(f.entries(&keys.redrive("s", "sub")).is_empty(), "an acked redrive entry is deleted");
}

#[tokio::test]
async fn acks_report_each_id_and_forget_last_errors_redrive_entries_and_ordering_heads() {
    let redis = RedisServer::start_with(&["--appendonly", "no"]);
    let broker = Broker::new(&redis.url(), common::options(&unique_prefix())).unwrap();
    common::ack_outcomes_scenario(&broker, "plain", "ordered").await;
}

/// A settlement call over two subscriptions whose second group fails (its stream replaced by a
/// string: WRONGTYPE) answers the error, yet what the first group applied reaches its breaker:
/// one reject with a breaker that opens at the first failure.
#[tokio::test]
async fn a_settlement_failing_midway_still_feeds_the_breaker_what_applied() {
    let redis = RedisServer::start_with(&["--appendonly", "no"]);
    let broker = Broker::new(&redis.url(), common::options(&unique_prefix())).unwrap();
    let breaker = BreakerPolicy { minimum_requests: 1, ..BreakerPolicy::default() };
    let mut sessions = Vec::new();
    let mut ack_ids = Vec::new();
    for stream in ["a", "b"] {
        broker.create_stream(&StreamConfig::new(stream)).await.unwrap();
        let config = SubscriptionConfig { breaker: Some(breaker.clone()), ..SubscriptionConfig::new(stream, "sub") };
        broker.create_subscription(&config, &Position::Earliest).await.unwrap();
        broker.publish(stream, vec![common::event("e", "")]).await.unwrap();
        let mut session = Session::open(&broker, stream, "sub", FlowControl::default()).await.unwrap();
        ack_ids.push(common::deliveries(&mut session, 1).await.remove(0).ack_id);
        sessions.push(session);
    }
    let mut conn = redis::Client::open(redis.url()).unwrap().get_connection().unwrap();
    let b = broker.keys().stream("b");
    let () = redis::pipe().del(&b).set(&b, "not a stream").query(&mut conn).unwrap();

    assert!(broker.reject(&ack_ids, "poison").await.is_err(), "the group of b fails");
    let stats = broker.stream_stats("a").await.unwrap();
    assert_eq!(stats.subscriptions[0].breaker, Some(BreakerState::Open), "a's reject was recorded");
}
