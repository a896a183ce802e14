//! Helpers shared by the broker's integration tests (each test file includes this module).
#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use std::time::{Duration, Instant};

use eventflow_broker::{BrokerOptions, Delivery, NewEvent, Session};

/// Longest a test waits for something that should happen at once.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Batches until `n` deliveries came (or [`PATIENCE`] ran out).
pub async fn deliveries(session: &mut Session, n: usize) -> Vec<Delivery> {
    let start = Instant::now();
    let mut got = Vec::new();
    while got.len() < n {
        assert!(start.elapsed() < PATIENCE, "only {} of {n} deliveries came", got.len());
        got.extend(session.next_batch().await.unwrap());
    }
    got
}

/// Broker options under `prefix`, with short waits so empty batches return soon.
pub fn options(prefix: &str) -> BrokerOptions {
    BrokerOptions {
        prefix: prefix.into(),
        block: Duration::from_millis(100),
        capacity_poll: Duration::from_millis(20),
        ..BrokerOptions::default()
    }
}

/// An event `id` with ordering key `key` ('' = none); the payload is the id.
pub fn event(id: &str, key: &str) -> NewEvent {
    NewEvent {
        id: id.into(),
        event_type: "t".into(),
        payload: id.as_bytes().to_vec(),
        traceparent: String::new(),
        ordering_key: key.into(),
    }
}

/// Events `names` of `size` payload bytes each (the payload repeats the name).
pub fn sized_events(names: &[&str], size: usize) -> Vec<eventflow_broker::NewEvent> {
    names
        .iter()
        .map(|name| eventflow_broker::NewEvent {
            id: (*name).to_string(),
            event_type: "t".into(),
            payload: name.bytes().cycle().take(size).collect(),
            traceparent: String::new(),
            ordering_key: String::new(),
        })
        .collect()
}

/// The size-mark scenario on `stream` (created, with subscription `sub` from the start, nothing
/// published yet): a session with a 1000-byte budget reads 100-byte events natively; then,
/// between two of its reads, small events, a 900-byte one (raising the stream's size mark
/// after the session last read it) and more small ones are published. The read that sees the
/// raise is still native (it decided with the old mark) and hands out only what fits; what does
/// not fit comes later, and no batch ever holds more than the budget. Once the mark is 900,
/// reads of several entries go through READ_NEW. Every batch is acked before the next.
pub async fn size_mark_scenario(broker: &eventflow_broker::Broker, stream: &str) {
    use eventflow_broker::FlowControl;
    const BUDGET: usize = 1000;
    let names = |batch: &[Delivery]| -> Vec<String> {
        batch.iter().map(|d| String::from_utf8_lossy(&d.payload[..2]).into_owned()).collect()
    };
    let flow = FlowControl { max_messages: 100, max_bytes: BUDGET, ..FlowControl::default() };
    broker.publish(stream, sized_events(&["a1", "a2", "a3", "a4", "a5"], 100)).await.unwrap();
    let mut session = Session::open(broker, stream, "sub", flow).await.unwrap();
    // Settles every batch and checks it against the budget; returns the names delivered.
    async fn drain(broker: &eventflow_broker::Broker, session: &mut Session, n: usize) -> Vec<String> {
        let start = Instant::now();
        let mut got = Vec::new();
        while got.len() < n {
            assert!(start.elapsed() < PATIENCE, "only {} of {n} deliveries came", got.len());
            let batch = session.next_batch().await.unwrap();
            let bytes: usize = batch.iter().map(|d| d.payload.len()).sum();
            assert!(bytes <= BUDGET || batch.len() == 1, "a batch of {bytes} bytes exceeds the {BUDGET}-byte budget");
            got.extend(batch.iter().map(|d| String::from_utf8_lossy(&d.payload[..2]).into_owned()));
            let ids: Vec<String> = batch.iter().map(|d| d.ack_id.clone()).collect();
            if !ids.is_empty() {
                broker.acknowledge(&ids).await.unwrap();
            }
        }
        got
    }
    assert_eq!(drain(broker, &mut session, 5).await, ["a1", "a2", "a3", "a4", "a5"]);
    let native = session.native_reads();
    assert!(native >= 1, "100-byte events under a 1000-byte budget are read natively");

    for (batch, size) in [(&["s1", "s2", "s3"][..], 100), (&["bg"][..], 900), (&["s4", "s5"][..], 100)] {
        broker.publish(stream, sized_events(batch, size)).await.unwrap();
    }
    // The read with the old mark (100) takes ten entries natively; by their sizes only s1..s3
    // fit beside the 900-byte one, which waits in the backlog with what follows it.
    let first = session.next_batch().await.unwrap();
    assert_eq!(names(&first), ["s1", "s2", "s3"], "only what fits the budget is handed out");
    assert_eq!(session.native_reads(), native + 1, "the read that met the raised mark was native");
    broker.acknowledge(&first.iter().map(|d| d.ack_id.clone()).collect::<Vec<_>>()).await.unwrap();
    assert_eq!(drain(broker, &mut session, 3).await, ["bg", "s4", "s5"]);

    // With a mark of 900 a read of several entries cannot be proven to fit: READ_NEW.
    broker.publish(stream, sized_events(&["t1", "t2", "t3"], 100)).await.unwrap();
    let native = session.native_reads();
    let first = session.next_batch().await.unwrap();
    assert!(first.len() > 1, "{:?}", names(&first));
    assert_eq!(session.native_reads(), native, "a read of several entries under a 900-byte mark uses the script");
    broker.acknowledge(&first.iter().map(|d| d.ack_id.clone()).collect::<Vec<_>>()).await.unwrap();
    session.close().await.unwrap();
}

/// Per-id outcomes of Acknowledge and what it cleans up, on the broker's Redis. Stream `plain`
/// (unordered): three events delivered, the second nacked (its last error kept) and
/// redelivered; one Acknowledge of the first, the second's stale and current ack ids, the first
/// again and a forged id applies each pending entry once, reports the repeats expired and the
/// forged one invalid, and deletes the second's last error. The third is then rejected,
/// requeued and redelivered from the redrive stream: its ack deletes the redrive entry.
/// Stream `ordered` (an ordered subscription): an ack hands the key on to its next event.
pub async fn ack_outcomes_scenario(broker: &eventflow_broker::Broker, plain: &str, ordered: &str) {
    use eventflow_broker::{FlowControl, Position, Source, StreamConfig, SubscriptionConfig, schema::error_field};
    for (stream, is_ordered) in [(plain, false), (ordered, true)] {
        broker.create_stream(&StreamConfig::new(stream)).await.unwrap();
        let config = SubscriptionConfig { ordered: is_ordered, ..SubscriptionConfig::new(stream, "sub") };
        broker.create_subscription(&config, &Position::Earliest).await.unwrap();
    }
    broker.publish(plain, vec![event("e1", ""), event("e2", ""), event("e3", "")]).await.unwrap();
    let mut session = Session::open(broker, plain, "sub", FlowControl::default()).await.unwrap();
    let got = deliveries(&mut session, 3).await;
    let nacked = broker.modify_ack_deadline(std::slice::from_ref(&got[1].ack_id), 0, "flaky").await.unwrap();
    assert_eq!(nacked.applied.len(), 1);
    let again = deliveries(&mut session, 1).await;
    assert_eq!((again[0].entry_id.as_str(), again[0].attempt), (got[1].entry_id.as_str(), 2));
    let (errors, field) = (broker.keys().errors(plain, "sub"), format!("{}{}", error_field::STREAM, got[1].entry_id));
    let last_error = || async {
        let mut conn = broker.conn().await.unwrap();
        redis::cmd("HGET").arg(&errors).arg(&field).query_async::<Option<String>>(&mut conn).await.unwrap()
    };
    assert_eq!(last_error().await.as_deref(), Some("flaky"));

    let call = [&got[0].ack_id, &got[1].ack_id, &again[0].ack_id, &got[0].ack_id, "forged"].map(String::from);
    let settled = broker.acknowledge(&call).await.unwrap();
    let applied: Vec<&str> = settled.applied.iter().map(|id| id.entry_id.as_str()).collect();
    assert_eq!(applied, [got[0].entry_id.as_str(), got[1].entry_id.as_str()], "each pending entry acked once");
    assert_eq!(settled.expired, [again[0].ack_id.clone(), got[0].ack_id.clone()], "what was no longer pending");
    assert_eq!(settled.invalid, ["forged"]);
    assert_eq!(last_error().await, None, "the ack deleted the redelivered entry's last error");
    let expired = broker.acknowledge(std::slice::from_ref(&got[0].ack_id)).await.unwrap();
    assert_eq!((expired.applied.len(), expired.expired.len()), (0, 1), "an ack id settles once");

    // A requeued dead letter, delivered from the redrive stream: acked and deleted.
    broker.reject(std::slice::from_ref(&got[2].ack_id), "poison").await.unwrap();
    let (dead, _) = broker.list_dead_letters(plain, "sub", 10, "").await.unwrap();
    broker.requeue_dead_letters(plain, "sub", &[dead[0].id.clone()]).await.unwrap();
    let redriven = deliveries(&mut session, 1).await;
    assert_eq!(redriven[0].source, Source::Redrive);
    let settled = broker.acknowledge(&[redriven[0].ack_id.clone()]).await.unwrap();
    assert_eq!(settled.applied.len(), 1);
    let mut conn = broker.conn().await.unwrap();
    let left: u64 = redis::cmd("XLEN").arg(broker.keys().redrive(plain, "sub")).query_async(&mut conn).await.unwrap();
    assert_eq!(left, 0, "the acked redrive entry is deleted");
    drop(conn);
    session.close().await.unwrap();

    // An ordered subscription: the ack hands the key on to its next event.
    broker.publish(ordered, vec![event("k1", "k"), event("k2", "k")]).await.unwrap();
    let mut session = Session::open(broker, ordered, "sub", FlowControl::default()).await.unwrap();
    let first = deliveries(&mut session, 1).await;
    assert_eq!(first.len(), 1, "one event of a key at a time");
    let settled = broker.acknowledge(&[first[0].ack_id.clone()]).await.unwrap();
    assert_eq!(settled.applied.len(), 1);
    let next = deliveries(&mut session, 1).await;
    assert_eq!(next[0].payload, b"k2", "the key moved on");
    broker.acknowledge(&[next[0].ack_id.clone()]).await.unwrap();
    session.close().await.unwrap();
}
