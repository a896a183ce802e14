//! Publisher: batching of concurrent publishes, retries across a Redis restart.

use std::{sync::Arc, time::Duration};

use eventflow_client::{Connection, Publisher, PublisherConfig};
use eventflow_e2e::{Stack, event, eventually};

/// A client connection to a stack's publisher.
fn connection(stack: &Stack) -> Connection {
    Connection::plain(format!("http://{}", stack.publisher.addr)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishes_are_batched_and_each_gets_its_own_result() {
    let stack = Stack::start().await;
    stack.create_stream("orders").await;
    let config = PublisherConfig { linger: Duration::from_millis(200), max_batch: 100, ..Default::default() };
    let publisher = Arc::new(Publisher::new(&connection(&stack), config));

    let mut calls = Vec::new();
    for i in 0..250 {
        let publisher = publisher.clone();
        // Every tenth event has no id: the publisher assigns one.
        let id = if i % 10 == 0 { String::new() } else { format!("e-{i}") };
        calls.push(tokio::spawn(async move { publisher.publish("orders", event(&id, "t")).await }));
    }
    let mut entry_ids = std::collections::HashSet::new();
    for call in calls {
        let published = call.await.unwrap().unwrap();
        assert!(!published.event_id.is_empty() && !published.duplicate);
        assert!(entry_ids.insert(published.entry_id));
    }
    // 250 events in batches of at most 100 within one linger: 3 requests, not 250.
    let requests = publisher.stats().requests;
    assert!((3..=10).contains(&requests), "{requests} requests for 250 events");

    // A refused event fails alone; its neighbours are stored.
    let mut bad = event("bad", "t");
    bad.r#type.clear();
    let results = publisher.publish_batch("orders", vec![event("ok-1", "t"), bad, event("ok-2", "t")]).await;
    assert!(results[0].is_ok() && results[2].is_ok());
    let err = results[1].as_ref().unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::InvalidArgument), "{err}");
    publisher.close().await;
    assert!(publisher.publish("orders", event("late", "t")).await.is_err(), "closed publisher refuses");
    assert_eq!(stack.stats("orders").await.length, 252);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_linger_events_published_while_a_request_is_out_gather_into_the_next() {
    let stack = Stack::start().await;
    stack.create_stream("orders").await;
    // No linger, one request at a time: the first event goes alone, the rest gather while it
    // (and each next request) is out.
    let config = PublisherConfig { max_batch: 100, max_in_flight: 1, ..Default::default() };
    assert_eq!(config.linger, Duration::ZERO, "the default linger");
    let publisher = Arc::new(Publisher::new(&connection(&stack), config));
    let calls: Vec<_> = (0..250)
        .map(|i| {
            let publisher = publisher.clone();
            tokio::spawn(async move { publisher.publish("orders", event(&format!("e-{i}"), "t")).await })
        })
        .collect();
    for call in calls {
        assert!(!call.await.unwrap().unwrap().duplicate);
    }
    let requests = publisher.stats().requests;
    assert!((3..=50).contains(&requests), "{requests} requests for 250 events");
    // A lone event goes in a request of its own.
    assert!(!publisher.publish("orders", event("alone", "t")).await.unwrap().duplicate);
    assert_eq!(publisher.stats().requests, requests + 1);
    publisher.close().await;
    assert_eq!(stack.stats("orders").await.length, 251);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_are_retried_across_a_redis_restart_and_stored_once() {
    let mut stack = Stack::start().await;
    stack.create_stream("orders").await;
    let config = PublisherConfig {
        backoff: eventflow_client::Backoff { min: Duration::from_millis(50), max: Duration::from_millis(500) },
        call_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let publisher = Arc::new(Publisher::new(&connection(&stack), config));
    let first = publisher.publish_batch("orders", (0..10).map(|i| event(&format!("a-{i}"), "t")).collect()).await;
    assert!(first.iter().all(Result::is_ok));

    stack.redis.stop();
    let sending = {
        let publisher = publisher.clone();
        tokio::spawn(async move {
            publisher.publish_batch("orders", (0..40).map(|i| event(&format!("b-{i}"), "t")).collect()).await
        })
    };
    // The batch failed at least once while Redis was down ...
    eventually("a retry", Duration::from_secs(30), || async { (publisher.stats().retries >= 1).then_some(()) }).await;
    stack.redis.restart();
    // ... and is stored once Redis is back.
    let results = sending.await.unwrap();
    for result in &results {
        assert!(result.is_ok(), "{result:?}");
    }
    // Republishing the same ids is absorbed by the stream's dedup window.
    let again = publisher.publish_batch("orders", (0..40).map(|i| event(&format!("b-{i}"), "t")).collect()).await;
    assert!(again.iter().all(|r| r.as_ref().is_ok_and(|p| p.duplicate)));
    assert_eq!(stack.stats("orders").await.length, 50, "each event stored once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_over_tls_with_a_bearer_token() {
    use eventflow_e2e::{
        Kind,
        certs::{Ca, TlsDir, client_tls},
        start_tls,
    };
    let stack = Stack::start().await;
    stack.create_stream("orders").await;
    let (dir, ca) = (TlsDir::new(), Ca::new("server CA"));
    dir.install(&ca.server());
    let mut args = dir.args(false);
    args.extend(["--auth-tokens".to_string(), "s3cret".to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let tls_publisher =
        start_tls(Kind::Publisher, &stack.redis.url(), &stack.prefix, &args, client_tls(&ca, None)).await;
    let url = format!("https://{}", tls_publisher.addr);

    let without_token = Connection::builder(&url).tls(client_tls(&ca, None)).build().unwrap();
    let refused = Publisher::new(&without_token, PublisherConfig::default()).publish("orders", event("a", "t")).await;
    assert_eq!(refused.unwrap_err().code(), Some(tonic::Code::Unauthenticated));

    let with_token = Connection::builder(&url).tls(client_tls(&ca, None)).bearer_token("s3cret").build().unwrap();
    let stored = Publisher::new(&with_token, PublisherConfig::default()).publish("orders", event("a", "t")).await;
    assert!(!stored.unwrap().entry_id.is_empty());
}
