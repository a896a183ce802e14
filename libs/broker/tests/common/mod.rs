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
    let flow = FlowControl { max_messages: 100, max_bytes: BUDGET };
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
