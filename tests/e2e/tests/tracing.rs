//! One trace from producer to consumer: an in-test OTLP collector receives the spans of a real
//! run and checks they share the client's trace id with the right parents and attributes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{collections::HashMap, time::Duration};

use eventflow_e2e::{
    Consumer, Stack, event, eventually,
    otlp::{Collector, hex},
};
use eventflow_proto::v1::{
    AcknowledgeRequest, ModifyAckDeadlineRequest, PublishRequest, ReceivedEvent, RejectRequest,
    cloud_event::cloud_event_attribute_value::Attr,
};
use opentelemetry_proto::tonic::{common::v1::any_value::Value as AnyValue, trace::v1::Span};

const WAIT: Duration = Duration::from_secs(15);
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|kv| kv.key == key).and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
        AnyValue::StringValue(s) => Some(s.clone()),
        AnyValue::IntValue(i) => Some(i.to_string()),
        _ => None,
    })
}

fn by_id<'a>(events: &'a [ReceivedEvent], id: &str) -> &'a ReceivedEvent {
    events.iter().find(|e| e.event.as_ref().unwrap().id == id).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_trace_runs_from_producer_through_broker_to_consumer() {
    let collector = Collector::start().await;
    let telemetry = eventflow_runtime::telemetry::init_tracing("eventflow-e2e", &collector.endpoint).unwrap();

    let stack = Stack::start().await;
    stack.create_stream("s").await;
    stack.create_subscription("s", "sub", 600, 2).await;

    // The client's span is the parent: its context travels in the gRPC metadata.
    let mut request = tonic::Request::new(PublishRequest {
        stream: "s".into(),
        events: vec![event("x", "t"), event("y", "t"), event("z", "t")],
    });
    let traceparent = format!("00-{TRACE}-{CLIENT_SPAN}-01");
    request.metadata_mut().insert("traceparent", traceparent.parse().unwrap());
    let published = stack.publisher().await.publish(request).await.unwrap().into_inner().results;
    let entry = |i: usize| published[i].entry_id.clone();

    // x: nack, redelivery, ack. y: reject. z: nack twice with max 2 attempts -> dead letter.
    let mut consumer = Consumer::open(&stack, "s", "sub", 10).await;
    let mut client = stack.subscriber().await;
    let got = consumer.take(3, WAIT).await;
    let nack =
        |ids: Vec<String>| ModifyAckDeadlineRequest { ack_ids: ids, ack_deadline_seconds: 0, reason: String::new() };
    client
        .modify_ack_deadline(nack(vec![by_id(&got, "x").ack_id.clone(), by_id(&got, "z").ack_id.clone()]))
        .await
        .unwrap();
    let reject = RejectRequest { ack_ids: vec![by_id(&got, "y").ack_id.clone()], reason: "no".into() };
    client.reject(reject).await.unwrap();
    let again = consumer.take(2, WAIT).await;
    client.acknowledge(AcknowledgeRequest { ack_ids: vec![by_id(&again, "x").ack_id.clone()] }).await.unwrap();
    client.modify_ack_deadline(nack(vec![by_id(&again, "z").ack_id.clone()])).await.unwrap();

    let wanted = [("publish", 3), ("deliver", 5), ("nack", 3), ("ack", 1), ("reject", 1), ("dead_letter", 2)];
    let spans = eventually("all spans exported", WAIT, || async {
        telemetry.flush();
        let spans = collector.spans();
        let ours: Vec<Span> = spans.into_iter().filter(|s| hex(&s.trace_id) == TRACE).collect();
        let count =
            |op: &str| ours.iter().filter(|s| attr(s, "messaging.operation.name").as_deref() == Some(op)).count();
        wanted.iter().all(|(op, n)| count(op) >= *n).then_some(ours)
    })
    .await;
    let op = |name: &str| -> Vec<&Span> {
        spans.iter().filter(|s| attr(s, "messaging.operation.name").as_deref() == Some(name)).collect()
    };
    for (name, n) in wanted {
        assert_eq!(op(name).len(), n, "{name} spans");
    }

    // Publish RPC (SERVER) is the client's child; each PRODUCER span is the RPC's child.
    let rpc = spans.iter().find(|s| s.name == "eventflow.v1.PublisherService/Publish").expect("server span");
    assert_eq!(hex(&rpc.parent_span_id), CLIENT_SPAN);
    assert_eq!(rpc.kind, 2, "SERVER");
    let producers: HashMap<String, &Span> =
        op("publish").into_iter().map(|s| (attr(s, "messaging.message.id").unwrap(), s)).collect();
    for (i, span) in [entry(0), entry(1), entry(2)].iter().map(|e| producers[e]).enumerate() {
        assert_eq!((span.kind, span.parent_span_id.clone()), (4, rpc.span_id.clone()), "PRODUCER under the RPC");
        assert_eq!(attr(span, "messaging.destination.name").as_deref(), Some("s"));
        assert_eq!(attr(span, "cloudevents.event_id").as_deref(), Some(["x", "y", "z"][i]));
    }
    // Every later span of an event is a child of its PRODUCER span, with the conventions' attributes.
    for span in spans.iter().filter(|s| attr(s, "messaging.consumer.group.name").is_some()) {
        let producer = producers[&attr(span, "messaging.message.id").unwrap()];
        assert_eq!(span.parent_span_id, producer.span_id, "{} continues its event's context", span.name);
        assert_eq!(attr(span, "messaging.system").as_deref(), Some("eventflow"));
        assert_eq!(attr(span, "messaging.consumer.group.name").as_deref(), Some("sub"));
    }
    let deliveries_of_x: Vec<_> =
        op("deliver").into_iter().filter(|s| attr(s, "messaging.message.id") == Some(entry(0))).collect();
    let attempts: Vec<_> = deliveries_of_x.iter().map(|s| attr(s, "messaging.eventflow.delivery_attempt")).collect();
    assert_eq!(deliveries_of_x.len(), 2, "x delivered twice: {attempts:?}");
    assert!(deliveries_of_x.iter().all(|s| s.kind == 5), "CONSUMER");
    let dead: Vec<_> = op("dead_letter").iter().map(|s| attr(s, "messaging.message.id").unwrap()).collect();
    assert!(dead.contains(&entry(1)) && dead.contains(&entry(2)), "{dead:?}");

    // The delivered event carries its PRODUCER span's context for the consumer's own spans.
    let delivered_tp = match &by_id(&got, "x").event.as_ref().unwrap().attributes["traceparent"].attr {
        Some(Attr::CeString(tp)) => tp.clone(),
        other => panic!("traceparent {other:?}"),
    };
    assert_eq!(delivered_tp, format!("00-{TRACE}-{}-01", hex(&producers[&entry(0)].span_id)));
    telemetry.shutdown();
}
