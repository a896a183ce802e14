//! Limits that keep resources bounded whatever clients send or do: producer trace context
//! validated at publish and ack ids that stay small; a cap on Subscribe sessions per replica;
//! dead peers' sessions released by HTTP/2 keepalive; a byte budget for publishes in flight;
//! a bound on the calls one client connection has open at once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use eventflow_broker::schema::entry;
use eventflow_e2e::{Consumer, FreezableProxy, Kind, Stack, event, eventually};
use eventflow_proto::{
    prost::Message,
    v1::{
        AcknowledgeRequest, CloudEvent, PublishRequest, SubscribeRequest,
        cloud_event::{CloudEventAttributeValue, Data, cloud_event_attribute_value::Attr},
        publisher_service_client::PublisherServiceClient,
        subscriber_service_client::SubscriberServiceClient,
    },
};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(20);
const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
/// Ack ids stay under this whatever an event carries (with the short names these tests use).
const SMALL_ACK_ID: usize = 256;

/// An event with one string attribute.
fn with_attr(id: &str, name: &str, value: &str) -> CloudEvent {
    let mut e = event(id, "t");
    e.attributes.insert(name.into(), CloudEventAttributeValue { attr: Some(Attr::CeString(value.into())) });
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_trace_context_fails_its_event_alone_and_a_valid_one_is_ackable() {
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    stack.create_subscription("s", "sub", 600, 0).await;
    let events = vec![
        event("plain", "t"),
        with_attr("colon", "traceparent", "abc:def"),
        with_attr("valid", "traceparent", TRACEPARENT),
        with_attr("huge", "traceparent", &"ab".repeat(50_000)), // 100 KB of hex
        with_attr("state", "tracestate", "not key=value"),
    ];
    let results = stack.publish("s", events).await;
    for (i, name) in [(1, "traceparent"), (3, "traceparent"), (4, "tracestate")] {
        let error = results[i].error.as_ref().unwrap_or_else(|| panic!("event {i} must fail"));
        assert_eq!(error.code, Code::InvalidArgument as i32, "{error:?}");
        assert_eq!(error.field, format!("events[{i}].attributes.{name}"));
        assert!(error.message.len() < 300, "the message does not echo the value");
        assert!(results[i].entry_id.is_empty());
    }
    assert!(results[0].error.is_none() && results[2].error.is_none(), "{results:?}");
    assert_eq!(stack.redis.raw(&format!("XLEN {}", stack.keys().stream("s"))).trim(), ":2");

    let mut consumer = Consumer::open(&stack, "s", "sub", 10).await;
    let got = consumer.take(2, WAIT).await;
    let valid = got.iter().find(|e| e.event.as_ref().unwrap().id == "valid").unwrap();
    let attr = &valid.event.as_ref().unwrap().attributes["traceparent"];
    assert_eq!(attr.attr, Some(Attr::CeString(TRACEPARENT.into())));
    assert!(got.iter().all(|e| e.ack_id.len() <= SMALL_ACK_ID), "ack ids stay small");
    let ack_ids = got.iter().map(|e| e.ack_id.clone()).collect();
    let acked = stack.subscriber().await.acknowledge(AcknowledgeRequest { ack_ids }).await.unwrap().into_inner();
    assert!(acked.invalid_ack_ids.is_empty() && acked.expired_ack_ids.is_empty(), "{acked:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_stored_with_any_traceparent_get_small_ack_ids_that_settle() {
    // Entries stored before publish validated trace context may carry anything beside the
    // event; write such entries directly, as an older publisher did.
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    stack.create_subscription("s", "sub", 600, 0).await;
    let client = eventflow_broker::connect::client(&stack.redis.url(), &Default::default()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let junk = ["abc:def".to_string(), "ab".repeat(50_000), TRACEPARENT.to_uppercase()];
    for (i, p) in junk.iter().enumerate() {
        let payload = with_attr(&format!("old-{i}"), "traceparent", p).encode_to_vec();
        let key = stack.keys().stream("s");
        let _: String = redis::cmd("XADD")
            .arg(&key)
            .arg("*")
            .arg(entry::EVENT)
            .arg(payload)
            .arg(entry::TYPE)
            .arg("t")
            .arg(entry::TRACEPARENT)
            .arg(p)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let mut consumer = Consumer::open(&stack, "s", "sub", 10).await;
    let got = consumer.take(junk.len(), WAIT).await;
    assert!(got.iter().all(|e| e.ack_id.len() <= SMALL_ACK_ID), "ack ids stay small");
    let ack_ids = got.iter().map(|e| e.ack_id.clone()).collect();
    let acked = stack.subscriber().await.acknowledge(AcknowledgeRequest { ack_ids }).await.unwrap().into_inner();
    assert!(acked.invalid_ack_ids.is_empty() && acked.expired_ack_ids.is_empty(), "{acked:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_calls_beyond_the_session_cap_are_refused_until_a_session_ends() {
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    stack.create_subscription("s", "sub", 600, 0).await;
    let capped = stack.start_service(Kind::Subscriber, &["--max-sessions", "2"]).await;
    let client = SubscriberServiceClient::new(capped.channel().await);
    let first = Consumer::open_at(client.clone(), "s", "sub", 10).await;
    let _second = Consumer::open_at(client.clone(), "s", "sub", 10).await;
    let request = SubscribeRequest { stream: "s".into(), subscription: "sub".into(), ..Default::default() };
    let status = client.clone().subscribe(request.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("limit of 2") && status.message().contains("max_sessions"), "{status:?}");

    // A session's slot is free once its delivery task ended (the client went away).
    drop(first);
    let reopened = || {
        let mut client = client.clone();
        let request = request.clone();
        async move { client.subscribe(request).await.ok() }
    };
    let third = eventually("a slot freed by the closed session", WAIT, reopened).await;
    let status = client.clone().subscribe(request).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "still at most 2: {status:?}");
    drop(third);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_peers_session_is_released_by_keepalive_long_before_its_ack_deadline() {
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    // Ack deadline 600 s: only the release of the dead peer's session explains a redelivery.
    stack.create_subscription("s", "sub", 600, 0).await;
    let keepalive = ["--http2-keepalive-secs", "1", "--http2-keepalive-timeout-secs", "1"];
    let subscriber = stack.start_service(Kind::Subscriber, &keepalive).await;
    let proxy = FreezableProxy::start(subscriber.addr).await;
    let mut doomed = Consumer::open_at(SubscriberServiceClient::new(proxy.channel().await), "s", "sub", 10).await;
    stack.publish("s", vec![event("a", "t"), event("b", "t"), event("c", "t")]).await;
    let held = doomed.take(3, WAIT).await;
    assert!(held.iter().all(|e| e.delivery_attempt == 1));

    proxy.freeze();
    let mut next = Consumer::open(&stack, "s", "sub", 10).await;
    let again = next.take(3, WAIT).await;
    let ids = |events: &[eventflow_proto::v1::ReceivedEvent]| {
        let mut ids: Vec<String> = events.iter().map(|e| e.event.as_ref().unwrap().id.clone()).collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&again), ["a", "b", "c"]);
    assert!(again.iter().all(|e| e.delivery_attempt == 2), "redelivered: {again:?}");
    drop(doomed);
}

/// An event with `data_bytes` bytes of binary data.
fn sized(id: &str, data_bytes: usize) -> CloudEvent {
    CloudEvent { data: Some(Data::BinaryData(vec![7; data_bytes])), ..event(id, "t") }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publishes_beyond_the_byte_budget_get_resource_exhausted() {
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    // A budget of 2048 bytes holds one event of ~1.4 KB at a time.
    let args = ["--max-publish-bytes-in-flight", "2048", "--max-event-bytes", "2048"];
    let publisher = stack.start_service(Kind::Publisher, &args).await;
    let client = PublisherServiceClient::new(publisher.channel().await);
    let request = |events| PublishRequest { stream: "s".into(), events };

    // A call carrying more than the whole budget is refused at once.
    let status = client.clone().publish(request(vec![sized("a", 1400), sized("b", 1400)])).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("max_publish_bytes_in_flight"), "{status:?}");

    // While Redis holds every write, the first call takes the budget until its commit times
    // out; the calls queued behind it wait up to the Redis timeout and give up: each commit
    // holds the budget at least that long, so of calls made together at most two get it.
    assert!(stack.redis.raw("CLIENT PAUSE 60000 WRITE").starts_with("+OK"));
    let calls: Vec<_> = (0..12)
        .map(|i| {
            let mut client = client.clone();
            let events = vec![sized(&format!("p{i}"), 1400)];
            tokio::spawn(async move { client.publish(request(events)).await })
        })
        .collect();
    let mut exhausted = 0;
    for call in calls {
        let status = call.await.unwrap().expect_err("nothing can be stored while Redis holds writes");
        match status.code() {
            Code::ResourceExhausted => {
                assert!(status.message().contains("max_publish_bytes_in_flight"), "{status:?}");
                exhausted += 1;
            }
            Code::Unavailable => {}
            _ => panic!("unexpected {status:?}"),
        }
    }
    assert!(exhausted >= 1, "calls beyond the budget were refused");

    // Once Redis takes writes again, the whole budget is free.
    assert!(stack.redis.raw("CLIENT UNPAUSE").starts_with("+OK"));
    let results = client.clone().publish(request(vec![sized("whole", 1900)])).await.unwrap().into_inner().results;
    assert!(results[0].error.is_none(), "{results:?}");
    publisher.stop().await;
}

/// SETTINGS_MAX_CONCURRENT_STREAMS of the server at `addr`, as a new HTTP/2 connection
/// receives it (`usize::MAX` until the server's SETTINGS arrive; it never does if the server
/// sets none).
async fn advertised_stream_limit(addr: std::net::SocketAddr) -> usize {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (_send, mut connection) = h2::client::handshake(tcp).await.unwrap();
    let settled = std::future::poll_fn(|cx| {
        let _ = std::pin::Pin::new(&mut connection).poll(cx);
        match connection.max_concurrent_send_streams() {
            usize::MAX => std::task::Poll::Pending,
            limit => std::task::Poll::Ready(limit),
        }
    });
    tokio::time::timeout(WAIT, settled).await.expect("the server's SETTINGS set a stream limit")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_beyond_a_connections_stream_limit_wait_for_a_stream_and_all_succeed() {
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    stack.create_subscription("s", "sub", 600, 0).await;
    let publisher = stack.start_service(Kind::Publisher, &["--http2-max-concurrent-streams", "4"]).await;
    assert_eq!(advertised_stream_limit(publisher.addr).await, 4);
    let default = stack.start_service(Kind::Publisher, &[]).await;
    assert_eq!(advertised_stream_limit(default.addr).await, 1024);

    // 300 calls at once over one connection: past the fourth they queue in the client until a
    // stream ends, and every one is answered. A first call settles the connection: calls sent
    // before the server's SETTINGS reach the client may be refused (REFUSED_STREAM, UNAVAILABLE,
    // never processed: safe to retry; api.md).
    let mut client = PublisherServiceClient::new(publisher.channel().await);
    client.publish(PublishRequest { stream: "s".into(), events: vec![event("first", "t")] }).await.unwrap();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..300 {
        let mut client = client.clone();
        let request = PublishRequest { stream: "s".into(), events: vec![event(&format!("e{i}"), "t")] };
        calls.spawn(async move { client.publish(request).await });
    }
    for reply in calls.join_all().await {
        let results = reply.unwrap().into_inner().results;
        assert!(results.iter().all(|r| r.error.is_none() && !r.duplicate), "{results:?}");
    }
    let mut consumer = Consumer::open(&stack, "s", "sub", 1000).await;
    assert_eq!(consumer.take(301, WAIT).await.len(), 301);
}
