//! `/metrics` of each binary moves by exactly what the test did; the Grafana dashboard and the
//! Prometheus alert rules only name metrics the services export; made-up method, stream and
//! subscription names add no series.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{collections::BTreeSet, time::Duration};

use eventflow_broker::{Source, ack_id::AckId};
use eventflow_e2e::{Consumer, Kind, Samples, Stack, event, eventually, scrape, value};
use eventflow_proto::v1::{
    AcknowledgeRequest, CircuitBreakerPolicy, DeadLetterPolicy, ListDeadLettersRequest, ModifyAckDeadlineRequest,
    PublishRequest, PushConfig, RejectRequest, RequeueDeadLettersRequest, SubscribeRequest, Subscription,
    publisher_service_client::PublisherServiceClient,
};
use tonic::{Code, codegen::http::uri::PathAndQuery, transport::Channel};

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
    assert_eq!(value(&sub, "eventflow_subscribe_sessions", &ss), 1.0, "the consumer's session is open");
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

    // Gauges come from the admin's periodic refresh: 5 events, one unacked, nothing left to
    // read, DLQ empty again. A refresh between the requeue and the requeued entry's read also
    // showed one pending, with the requeued entry as lag: wait for the refresh after it.
    let admin = eventually("gauges refreshed", WAIT, || async {
        let a = scrape(&stack.admin).await;
        let settled = value(&a, "eventflow_subscription_pending", &ss) == 1.0
            && value(&a, "eventflow_subscription_lag", &ss) == 0.0;
        (settled && value(&a, "eventflow_stream_length", &s) == 5.0).then_some(a)
    })
    .await;
    assert_eq!(value(&admin, "eventflow_dlq_depth", &ss), 0.0);
    assert!(admin.contains_key(&(
        "eventflow_breaker_state".to_string(),
        ss.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    )));
    assert_eq!(value(&admin, "eventflow_breaker_state", &ss), 0.0, "closed");

    drop(consumer);
    eventually("the closed session uncounted", WAIT, || async {
        (value(&scrape(&stack.subscriber).await, "eventflow_subscribe_sessions", &ss) == 0.0).then_some(())
    })
    .await;

    // The pusher's series: a push subscription whose endpoint refuses connections (retried).
    let args = ["--push-allow-private", "--push-poll-ms", "50"];
    let pusher = stack.start_service(Kind::Pusher, &args).await;
    stack.create_stream("pushed").await;
    let push = PushConfig {
        endpoint: "https://localhost:1/hook".into(),
        signing_secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
        ..Default::default()
    };
    let hook =
        Subscription { stream: "pushed".into(), name: "hook".into(), push_config: Some(push), ..Default::default() };
    stack.create_subscription_with(hook).await;
    stack.publish("pushed", vec![event("p1", "t")]).await;
    let pushed = eventually("a failed push counted", WAIT, || async {
        let samples = scrape(&pusher).await;
        let labels = [("stream", "pushed"), ("subscription", "hook"), ("class", "error"), ("outcome", "retry")];
        (value(&samples, "eventflow_push_requests_total", &labels) >= 1.0).then_some(samples)
    })
    .await;

    // The archive's series: one event archived into a PostgreSQL of the test's own.
    let pg = eventflow_testkit::postgres::PostgresServer::start();
    let url = pg.create_database(&eventflow_e2e::unique_prefix());
    let args = ["--database-url", url.as_str(), "--archive-poll-ms", "50"];
    let archive = stack.start_service(Kind::Archive, &args).await;
    stack.create_stream("archived").await;
    stack.publish("archived", vec![event("a1", "t")]).await;
    let archived = eventually("an archived event counted, lag gauges set", WAIT, || async {
        let samples = scrape(&archive).await;
        let rows = value(&samples, "eventflow_archive_rows_inserted_total", &[("stream", "archived")]);
        let lag = samples.contains_key(&(
            "eventflow_archive_lag_entries".to_string(),
            [("stream".to_string(), "archived".to_string())].into_iter().collect(),
        ));
        (rows == 1.0 && lag).then_some(samples)
    })
    .await;

    // The relay's series: one outbox row published (its own database on that PostgreSQL).
    let url = pg.create_database("metrics");
    let relay = stack.start_service(Kind::Relay, &["--database-url", &url]).await;
    eventually("the relay's migrations applied", WAIT, || async {
        (pg.psql("metrics", "SELECT to_regclass('eventflow.outbox_identity') IS NOT NULL") == "t").then_some(())
    })
    .await;
    pg.psql(
        "metrics",
        "INSERT INTO eventflow.outbox (stream, event_json) VALUES ('pushed', \
         '{\"specversion\":\"1.0\",\"id\":\"o1\",\"source\":\"/m\",\"type\":\"t\"}')",
    );
    let relayed = eventually("an outbox row published", WAIT, || async {
        let samples = scrape(&relay).await;
        (value(&samples, "eventflow_outbox_published_total", &[]) == 1.0).then_some(samples)
    })
    .await;

    // Every metric the dashboard and alert rules query is one the services export.
    let exported: BTreeSet<String> = [p, sub, d, admin, pushed, archived, relayed].iter().flat_map(names).collect();
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

/// Calls `path` with an empty message (and `token` as bearer token, if any); returns the code.
async fn call_path(channel: Channel, path: String, token: Option<&str>) -> Code {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let mut request = tonic::Request::new(());
    if let Some(token) = token {
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    match grpc.unary(request, PathAndQuery::try_from(path).unwrap(), codec).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// Calls `n` made-up paths (half under the served service, half under made-up services), 16
/// at a time; returns how many ended with each code.
async fn call_made_up_paths(channel: &Channel, n: usize, tag: &str) -> std::collections::HashMap<Code, usize> {
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..16 {
        let (channel, tag) = (channel.clone(), tag.to_string());
        tasks.spawn(async move {
            let mut codes = Vec::new();
            for i in (worker..n).step_by(16) {
                let path = if i % 2 == 0 {
                    format!("/eventflow.v1.PublisherService/{tag}Made{i}Up")
                } else {
                    format!("/{tag}.random{i}.Service/Method{i}")
                };
                codes.push(call_path(channel.clone(), path, None).await);
            }
            codes
        });
    }
    let mut counts = std::collections::HashMap::new();
    for codes in tasks.join_all().await {
        for code in codes {
            *counts.entry(code).or_default() += 1;
        }
    }
    counts
}

/// The `eventflow_*` series of a scrape (name and labels).
fn series(samples: &Samples) -> BTreeSet<(String, std::collections::BTreeMap<String, String>)> {
    samples.keys().filter(|(name, _)| name.starts_with("eventflow_")).cloned().collect()
}

/// Asserts that `before` and `after` hold the same series (same count, same names and labels),
/// showing a few of the differences if not.
fn same_series(before: &Samples, after: &Samples, what: &str) {
    let (before, after) = (series(before), series(after));
    let added: Vec<_> = after.difference(&before).take(5).collect();
    let removed: Vec<_> = before.difference(&after).take(5).collect();
    assert_eq!(
        before.len(),
        after.len(),
        "{what}: {} series before, {} after; added e.g. {added:?}",
        before.len(),
        after.len()
    );
    assert!(added.is_empty() && removed.is_empty(), "{what}: added {added:?}, removed {removed:?}");
}

/// Publishes to made-up streams `n` times (valid events, invalid ones, both, and invalid stream
/// names), concurrently; every call must fail.
async fn publish_to_made_up_streams(client: &PublisherServiceClient<Channel>, n: usize, tag: &str) -> usize {
    let mut tasks = tokio::task::JoinSet::new();
    let mut events_sent = 0;
    for i in 0..n {
        let mut invalid = event(&format!("bad{i}"), "t");
        invalid.source.clear();
        let (stream, events) = match i % 4 {
            0 => (format!("{tag}-nope-{i}"), vec![event(&format!("e{i}"), "t")]),
            1 => (format!("{tag}-nope-{i}"), vec![invalid]),
            2 => (format!("{tag}-nope-{i}"), vec![event(&format!("e{i}"), "t"), invalid]),
            _ => (format!("{tag} bad name {i}!"), vec![event(&format!("e{i}"), "t")]),
        };
        events_sent += events.len();
        let mut client = client.clone();
        tasks.spawn(async move { client.publish(PublishRequest { stream, events }).await.unwrap_err().code() });
        if tasks.len() >= 16 {
            let code = tasks.join_next().await.unwrap().unwrap();
            assert!(matches!(code, Code::NotFound | Code::InvalidArgument), "{code:?}");
        }
    }
    for code in tasks.join_all().await {
        assert!(matches!(code, Code::NotFound | Code::InvalidArgument), "{code:?}");
    }
    events_sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn made_up_methods_streams_and_subscriptions_add_no_series() {
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    stack.create_subscription("s", "sub", 60, 5).await;
    let guarded = stack.start_service(Kind::Publisher, &["--auth-tokens", "t"]).await;
    let open = stack.publisher.channel().await;
    let locked = guarded.channel().await;
    let publisher = stack.publisher().await;

    // Warm up: the fixed `unknown` series exist after one call of each kind.
    call_made_up_paths(&open, 2, "warm").await;
    call_made_up_paths(&locked, 2, "warm").await;
    let warm_events = publish_to_made_up_streams(&publisher, 4, "warm").await;
    stack.publish("s", vec![event("e0", "t")]).await;
    let before = scrape(&stack.publisher).await;
    let guarded_before = scrape(&guarded).await;

    let n = 10_000;
    let open_codes = call_made_up_paths(&open, n, "x").await;
    assert_eq!(open_codes.get(&Code::Unimplemented), Some(&n), "{open_codes:?}");
    let locked_codes = call_made_up_paths(&locked, n, "y").await;
    // Under the served service the auth interceptor answers first; elsewhere no route matches.
    assert_eq!(locked_codes.get(&Code::Unauthenticated), Some(&(n / 2)), "{locked_codes:?}");
    assert_eq!(locked_codes.get(&Code::Unimplemented), Some(&(n / 2)), "{locked_codes:?}");
    let events = publish_to_made_up_streams(&publisher, 1000, "z").await;

    let after = scrape(&stack.publisher).await;
    let guarded_after = scrape(&guarded).await;
    same_series(&before, &after, "publisher");
    same_series(&guarded_before, &guarded_after, "publisher with --auth-tokens");
    let unknown = |code| [("method", "unknown"), ("code", code)];
    let moved =
        |a: &Samples, b: &Samples, name, labels: &[(&str, &str)]| value(a, name, labels) - value(b, name, labels);
    let requests = "eventflow_grpc_requests_total";
    assert_eq!(moved(&after, &before, requests, &unknown("UNIMPLEMENTED")), n as f64);
    assert_eq!(moved(&guarded_after, &guarded_before, requests, &unknown("UNAUTHENTICATED")), (n / 2) as f64);
    assert_eq!(moved(&guarded_after, &guarded_before, requests, &unknown("UNIMPLEMENTED")), (n / 2) as f64);
    let unknown_stream = [("stream", "unknown"), ("reason", "unknown_stream")];
    let rejected = "eventflow_publish_rejected_total";
    assert_eq!(value(&before, rejected, &unknown_stream), warm_events as f64);
    assert_eq!(moved(&after, &before, rejected, &unknown_stream), events as f64);
    let publish = "/eventflow.v1.PublisherService/Publish";
    assert_eq!(moved(&after, &before, requests, &[("method", publish), ("code", "NOT_FOUND")]), 750.0);
    assert_eq!(moved(&after, &before, requests, &[("method", publish), ("code", "INVALID_ARGUMENT")]), 250.0);

    // Real calls still count under their method and stream.
    let mut invalid = event("bad", "t");
    invalid.source.clear();
    stack.publish("s", vec![event("e1", "t"), invalid]).await;
    let mut client = PublisherServiceClient::new(locked.clone());
    let request = || PublishRequest { stream: "s".into(), events: vec![event("e2", "t")] };
    assert_eq!(client.publish(request()).await.unwrap_err().code(), Code::Unauthenticated);
    let mut authorized = tonic::Request::new(request());
    authorized.metadata_mut().insert("authorization", "Bearer t".parse().unwrap());
    client.publish(authorized).await.unwrap();
    let health = "/grpc.health.v1.Health/Check";
    assert_eq!(call_path(locked.clone(), health.into(), None).await, Code::Ok, "health stays open");
    let p = scrape(&stack.publisher).await;
    let g = scrape(&guarded).await;
    assert_eq!(moved(&p, &after, requests, &[("method", publish), ("code", "OK")]), 1.0);
    assert_eq!(moved(&p, &after, "eventflow_published_total", &[("stream", "s")]), 1.0);
    assert_eq!(moved(&p, &after, rejected, &[("stream", "s"), ("reason", "invalid")]), 1.0);
    assert_eq!(moved(&g, &guarded_after, requests, &[("method", publish), ("code", "OK")]), 1.0);
    assert_eq!(moved(&g, &guarded_after, requests, &[("method", publish), ("code", "UNAUTHENTICATED")]), 1.0);
    assert_eq!(moved(&g, &guarded_after, "eventflow_published_total", &[("stream", "s")]), 1.0);
    assert!(value(&g, requests, &[("method", health), ("code", "OK")]) >= 1.0, "health checks count as Check");

    // Settlement with ack ids of made-up subscriptions, Subscribe and DLQ calls on them: no
    // series on the subscriber or the dlq service.
    let sub_before = scrape(&stack.subscriber).await;
    let dlq_before = scrape(&stack.dlq).await;
    // Signed with the stack's shared ack key, so they pass the MAC and reach the subscription
    // lookup (an unsigned or edited one is invalid earlier).
    let shared_key = std::fs::read_to_string(eventflow_e2e::shared_ack_key_file()).unwrap();
    let keys = eventflow_broker::ack_id::AckKeys::new(shared_key.trim().as_bytes(), None).unwrap();
    let forged: Vec<String> = (0..1000)
        .map(|i| {
            AckId {
                stream: if i % 2 == 0 { "s".into() } else { format!("nope{i}") },
                subscription: format!("nope{i}"),
                source: Source::Stream,
                entry_id: "1-0".into(),
                consumer: "c".into(),
                attempt: 1,
                delivered_ms: 1,
                traceparent: None,
            }
            .encode(&keys)
        })
        .collect();
    let mut subscriber = stack.subscriber().await;
    let acked = subscriber.acknowledge(AcknowledgeRequest { ack_ids: forged.clone() }).await.unwrap().into_inner();
    assert_eq!(acked.invalid_ack_ids.len(), 1000);
    let nack = ModifyAckDeadlineRequest { ack_ids: forged.clone(), ack_deadline_seconds: 0, reason: String::new() };
    assert_eq!(subscriber.modify_ack_deadline(nack).await.unwrap().into_inner().invalid_ack_ids.len(), 1000);
    let reject = RejectRequest { ack_ids: forged, reason: "r".into() };
    assert_eq!(subscriber.reject(reject).await.unwrap().into_inner().invalid_ack_ids.len(), 1000);
    let mut dlq = stack.dlq().await;
    for i in 0..100 {
        let subscribe = SubscribeRequest {
            stream: "s".into(),
            subscription: format!("nope{i}"),
            max_outstanding_messages: 1,
            ..Default::default()
        };
        assert_eq!(subscriber.subscribe(subscribe).await.unwrap_err().code(), Code::NotFound);
        let requeue = RequeueDeadLettersRequest {
            stream: "s".into(),
            subscription: format!("nope{i}"),
            ids: Vec::new(),
            all: true,
        };
        assert_eq!(dlq.requeue_dead_letters(requeue).await.unwrap_err().code(), Code::NotFound);
    }
    let sub_after = scrape(&stack.subscriber).await;
    let dlq_after = scrape(&stack.dlq).await;
    let new_series = |a: &Samples, b: &Samples| -> Vec<_> {
        let known = series(b);
        series(a)
            .into_iter()
            .filter(|s| !known.contains(s) && s.1.get("method").is_none_or(|m| m == "unknown"))
            .collect()
    };
    // Each real method called here for the first time adds its own series, nothing else does.
    assert!(new_series(&sub_after, &sub_before).is_empty(), "{:?}", new_series(&sub_after, &sub_before));
    assert!(new_series(&dlq_after, &dlq_before).is_empty(), "{:?}", new_series(&dlq_after, &dlq_before));
    assert!(
        series(&sub_after).iter().all(|(_, labels)| labels.get("subscription").is_none_or(|s| s == "sub")),
        "only the real subscription is a label"
    );
    guarded.stop().await;
}
