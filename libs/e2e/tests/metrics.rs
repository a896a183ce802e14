//! `/metrics` of each binary moves by exactly what the test did; the Grafana dashboard and the
//! Prometheus alert rules only name metrics the services export.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{collections::BTreeSet, time::Duration};

use eventflow_e2e::{Consumer, Samples, Stack, event, eventually, scrape, value};
use eventflow_proto::v1::{
    AcknowledgeRequest, CircuitBreakerPolicy, DeadLetterPolicy, ListDeadLettersRequest, ModifyAckDeadlineRequest,
    RejectRequest, RequeueDeadLettersRequest, Subscription,
};

const WAIT: Duration = Duration::from_secs(15);

fn names(samples: &Samples) -> BTreeSet<String> {
    samples.keys().map(|(name, _)| name.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_count_exactly_what_happened() {
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    let breaker = CircuitBreakerPolicy { enabled: true, minimum_requests: 100, ..Default::default() };
    stack
        .create_subscription_with(Subscription {
            stream: "s".into(),
            name: "sub".into(),
            ack_deadline_seconds: 600,
            dead_letter_policy: Some(DeadLetterPolicy { max_delivery_attempts: 5 }),
            circuit_breaker: Some(breaker),
            ..Default::default()
        })
        .await;
    let events: Vec<_> = (0..5).map(|i| event(&format!("e{i}"), "t")).collect();
    stack.publish("s", events).await;
    let mut invalid = event("bad", "t");
    invalid.source.clear();
    stack.publish("s", vec![event("e0", "t"), invalid]).await;

    let mut consumer = Consumer::open(&stack, "s", "sub", 10).await;
    let got = consumer.take(5, WAIT).await;
    let mut client = stack.subscriber().await;
    let ack = |ids: Vec<String>| AcknowledgeRequest { ack_ids: ids };
    client.acknowledge(ack(vec![got[0].ack_id.clone(), got[1].ack_id.clone()])).await.unwrap();
    let nack = ModifyAckDeadlineRequest {
        ack_ids: vec![got[2].ack_id.clone()],
        ack_deadline_seconds: 0,
        reason: String::new(),
    };
    client.modify_ack_deadline(nack).await.unwrap();
    client.reject(RejectRequest { ack_ids: vec![got[3].ack_id.clone()], reason: "r".into() }).await.unwrap();
    let again = consumer.take(1, WAIT).await;
    client.acknowledge(ack(vec![again[0].ack_id.clone()])).await.unwrap();
    let mut dlq = stack.dlq().await;
    let list = ListDeadLettersRequest { stream: "s".into(), subscription: "sub".into(), ..Default::default() };
    let letter = dlq.list_dead_letters(list).await.unwrap().into_inner().dead_letters.remove(0);
    let requeue =
        RequeueDeadLettersRequest { stream: "s".into(), subscription: "sub".into(), ids: vec![letter.id], all: false };
    dlq.requeue_dead_letters(requeue).await.unwrap();
    let requeued = consumer.take(1, WAIT).await;
    client.acknowledge(ack(vec![requeued[0].ack_id.clone()])).await.unwrap();

    let s = [("stream", "s")];
    let ss = [("stream", "s"), ("subscription", "sub")];
    let p = scrape(&stack.publisher).await;
    assert_eq!(value(&p, "eventflow_published_total", &s), 5.0);
    assert_eq!(value(&p, "eventflow_duplicates_total", &s), 1.0);
    assert_eq!(value(&p, "eventflow_publish_rejected_total", &[("stream", "s"), ("reason", "invalid")]), 1.0);
    assert_eq!(value(&p, "eventflow_publish_duration_seconds_count", &s), 2.0);
    let publish_ok = [("method", "/eventflow.v1.PublisherService/Publish"), ("code", "OK")];
    assert_eq!(value(&p, "eventflow_grpc_requests_total", &publish_ok), 2.0);

    let sub = scrape(&stack.subscriber).await;
    assert_eq!(value(&sub, "eventflow_delivered_total", &ss), 7.0, "5 + 1 redelivery + 1 requeued");
    assert_eq!(value(&sub, "eventflow_redelivered_total", &ss), 1.0);
    assert_eq!(value(&sub, "eventflow_delivery_latency_seconds_count", &ss), 7.0);
    assert_eq!(value(&sub, "eventflow_acked_total", &ss), 4.0);
    assert_eq!(value(&sub, "eventflow_ack_latency_seconds_count", &ss), 4.0);
    assert_eq!(value(&sub, "eventflow_nacked_total", &ss), 1.0);
    let rejected = [("stream", "s"), ("subscription", "sub"), ("reason", "rejected")];
    assert_eq!(value(&sub, "eventflow_dead_lettered_total", &rejected), 1.0);
    let acks = [("method", "/eventflow.v1.SubscriberService/Acknowledge"), ("code", "OK")];
    assert_eq!(value(&sub, "eventflow_grpc_requests_total", &acks), 3.0, "three Acknowledge calls");

    let d = scrape(&stack.dlq).await;
    assert_eq!(value(&d, "eventflow_requeued_total", &ss), 1.0);

    // Gauges come from the admin's periodic refresh: 5 events, one unacked, DLQ empty again.
    let admin = eventually("gauges refreshed", WAIT, || async {
        let a = scrape(&stack.admin).await;
        let settled = value(&a, "eventflow_subscription_pending", &ss) == 1.0;
        (settled && value(&a, "eventflow_stream_length", &s) == 5.0).then_some(a)
    })
    .await;
    assert_eq!(value(&admin, "eventflow_subscription_lag", &ss), 0.0);
    assert_eq!(value(&admin, "eventflow_dlq_depth", &ss), 0.0);
    assert!(admin.contains_key(&(
        "eventflow_breaker_state".to_string(),
        ss.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    )));
    assert_eq!(value(&admin, "eventflow_breaker_state", &ss), 0.0, "closed");

    // Every metric the dashboard and alert rules query is one the services export.
    let exported: BTreeSet<String> = [p, sub, d, admin].iter().flat_map(names).collect();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for file in ["deploy/grafana/dashboards/eventflow.json", "deploy/prometheus/alerts.yml"] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let used = metric_names(&text);
        assert!(!used.is_empty(), "{file} names no eventflow metric");
        for name in used {
            assert!(exported.contains(&name), "{file} queries {name}, which no service exports");
        }
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("deploy/grafana/dashboards/eventflow.json")).unwrap())
            .unwrap();
    assert!(dashboard["panels"].as_array().is_some_and(|p| !p.is_empty()), "dashboard has panels");
}

/// The `eventflow_*` series names a file mentions.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("eventflow_") {
        let tail = &rest[at..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}
