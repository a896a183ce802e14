//! Redis stopped and restarted under a running publisher and subscriber; graceful shutdown;
//! health and reflection.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use eventflow_e2e::{Consumer, Kind, Stack, event, eventually, wait_for_health};
use eventflow_proto::v1::{AcknowledgeRequest, PublishRequest};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_restart_loses_no_accepted_event_and_services_recover() {
    let mut stack = Stack::start().await;
    stack.create_stream("s").await;
    stack.create_subscription("s", "sub", 2, 100).await;

    // Consumer: records every event id it receives and acks (ack failures during the outage
    // only mean a redelivery later).
    let received = Arc::new(Mutex::new(HashSet::new()));
    let mut consumer = Consumer::open(&stack, "s", "sub", 50).await;
    let mut settle = stack.subscriber().await;
    let seen = received.clone();
    let consuming = tokio::spawn(async move {
        while let Some(Ok(batch)) = consumer.stream.next().await {
            let ack_ids = batch.events.iter().map(|e| e.ack_id.clone()).collect();
            seen.lock().unwrap().extend(batch.events.into_iter().map(|e| e.event.unwrap().id));
            let _ = settle.acknowledge(AcknowledgeRequest { ack_ids }).await;
        }
    });

    // Publish 20 events before the outage.
    let mut accepted = HashSet::new();
    let mut publisher = stack.publisher().await;
    for i in 0..20 {
        let results = stack.publish("s", vec![event(&format!("before-{i}"), "t")]).await;
        assert!(results[0].error.is_none());
        accepted.insert(format!("before-{i}"));
    }

    stack.redis.stop();
    wait_for_health(&stack.publisher, "", ServingStatus::NotServing).await;
    wait_for_health(&stack.subscriber, eventflow_subscriber::SERVICE_NAME, ServingStatus::NotServing).await;
    wait_for_health(&stack.admin, "", ServingStatus::NotServing).await;
    // Liveness does not follow Redis: an outage must not restart the pods.
    wait_for_health(&stack.admin, eventflow_runtime::health::LIVENESS, ServingStatus::Serving).await;
    let request = PublishRequest { stream: "s".into(), events: vec![event("during", "t")] };
    let status = publisher.publish(request.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    stack.redis.restart();
    wait_for_health(&stack.publisher, eventflow_publisher::SERVICE_NAME, ServingStatus::Serving).await;
    wait_for_health(&stack.subscriber, "", ServingStatus::Serving).await;
    // The retried publish (same event id) now succeeds; so do new ones.
    let retried = publisher.publish(request).await.unwrap().into_inner().results;
    assert!(retried[0].error.is_none());
    accepted.insert("during".to_string());
    for i in 0..20 {
        let results = stack.publish("s", vec![event(&format!("after-{i}"), "t")]).await;
        assert!(results[0].error.is_none());
        accepted.insert(format!("after-{i}"));
    }

    // The same Subscribe call, kept open through the outage, delivers every accepted event.
    let all_seen = || async { accepted.is_subset(&received.lock().unwrap()).then_some(()) };
    eventually("every accepted event delivered", WAIT, all_seen).await;
    consuming.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_ends_subscribe_streams_and_releases_their_events() {
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    stack.create_subscription("s", "sub", 600, 0).await;
    stack.publish("s", vec![event("a", "t"), event("b", "t")]).await;
    let mut doomed = Consumer::open(&stack, "s", "sub", 10).await;
    assert_eq!(doomed.take(2, WAIT).await.len(), 2);

    let replacement = stack.start_service(Kind::Subscriber, &[]).await;
    let Stack { publisher, subscriber, admin, dlq, .. } = stack;
    subscriber.stop().await;
    let status = doomed.stream.message().await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);

    // Deadline 600 s: the events come back at once only because shutdown released them.
    let client =
        eventflow_proto::v1::subscriber_service_client::SubscriberServiceClient::new(replacement.channel().await);
    let mut next = Consumer::open_at(client, "s", "sub", 10).await;
    let again = next.take(2, WAIT).await;
    assert!(again.iter().all(|e| e.delivery_attempt == 2));
    drop((publisher, admin, dlq, replacement));
}

#[tokio::test]
async fn health_and_reflection_are_served() {
    let stack = Stack::start().await;
    for (running, kind) in
        [(&stack.publisher, Kind::Publisher), (&stack.subscriber, Kind::Subscriber), (&stack.admin, Kind::Admin)]
    {
        wait_for_health(running, "", ServingStatus::Serving).await;
        wait_for_health(running, kind.service_name(), ServingStatus::Serving).await;
        let services = reflected_services(running).await;
        let mut services = services;
        services.sort();
        let mut want = vec![
            kind.service_name(),
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ];
        want.sort();
        assert_eq!(services, want, "each binary advertises its own service");
    }
}

/// The service names listed by server reflection v1.
async fn reflected_services(running: &eventflow_e2e::Running) -> Vec<String> {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut client = ServerReflectionClient::new(running.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = client.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    match replies.next().await.unwrap().unwrap().message_response {
        Some(MessageResponse::ListServicesResponse(list)) => list.service.into_iter().map(|s| s.name).collect(),
        other => panic!("unexpected reflection reply {other:?}"),
    }
}
