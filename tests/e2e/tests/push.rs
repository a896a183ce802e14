//! Push subscriptions end to end: a real redis-server, the real admin, publisher, dead-letter
//! service and pusher, and a real HTTP receiver (`eventflow_e2e::webhook`) that scripts its
//! answers and checks every request's Standard Webhooks signature.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use eventflow_e2e::{
    Kind, RedisServer, Running, event, eventually, scrape, start, unique_prefix, value,
    webhook::{Received, Receiver, Reply},
};
use eventflow_proto::v1::{
    BreakerState, CircuitBreakerPolicy, CloudEvent, ContentMode, CreateStreamRequest, CreateSubscriptionRequest,
    DeadLetter, DeadLetterPolicy, GetStreamStatsRequest, GetSubscriptionRequest, ListDeadLettersRequest, Position,
    PublishRequest, PushConfig, RetryPolicy, Stream, SubscribeRequest, Subscription, SubscriptionStats,
    UpdateSubscriptionRequest,
    admin_service_client::AdminServiceClient,
    cloud_event::{CloudEventAttributeValue, cloud_event_attribute_value::Attr},
    dead_letter_service_client::DeadLetterServiceClient,
    position,
    publisher_service_client::PublisherServiceClient,
    subscriber_service_client::SubscriberServiceClient,
};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(15);
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const NEW_SECRET: &str = "whsec_c2VjcmV0LXJvdGF0ZWQtdG8tdGhpcy1vbmUtMTIzNDU=";
const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// Redis, admin (push endpoints may be private), publisher, dead-letter service and pusher.
struct PushStack {
    redis: RedisServer,
    prefix: String,
    admin: Running,
    publisher: Running,
    dlq: Running,
    pusher: Running,
}

impl PushStack {
    /// The stack with the pusher started with `pusher_args` (besides a fast poll).
    async fn start(pusher_args: &[&str]) -> Self {
        let redis = RedisServer::start();
        let (url, prefix) = (redis.url(), unique_prefix());
        let admin_args = ["--push-allow-private", "--stats-interval-secs", "1"];
        let admin = start(Kind::Admin, &url, &prefix, &admin_args).await;
        let publisher = start(Kind::Publisher, &url, &prefix, &[]).await;
        let dlq = start(Kind::Dlq, &url, &prefix, &[]).await;
        let mut args = vec!["--push-poll-ms", "50"];
        args.extend_from_slice(pusher_args);
        let pusher = start(Kind::Pusher, &url, &prefix, &args).await;
        Self { redis, prefix, admin, publisher, dlq, pusher }
    }

    async fn admin(&self) -> AdminServiceClient<tonic::transport::Channel> {
        AdminServiceClient::new(self.admin.channel().await)
    }

    /// Creates `stream` and a push subscription `hook` on it to `endpoint`, edited by `edit`.
    async fn push_subscription(&self, stream: &str, endpoint: &str, edit: impl FnOnce(&mut Subscription)) {
        self.push_subscription_on(Stream { name: stream.into(), ..Default::default() }, endpoint, edit).await;
    }

    /// [`PushStack::push_subscription`] on a stream created as `s`.
    async fn push_subscription_on(&self, s: Stream, endpoint: &str, edit: impl FnOnce(&mut Subscription)) {
        let mut admin = self.admin().await;
        let stream = s.name.clone();
        let stream = stream.as_str();
        admin.create_stream(CreateStreamRequest { stream: Some(s) }).await.unwrap();
        let mut sub = subscription(stream, endpoint);
        edit(&mut sub);
        let start_position = Some(Position { position: Some(position::Position::Earliest(true)) });
        admin.create_subscription(CreateSubscriptionRequest { subscription: Some(sub), start_position }).await.unwrap();
    }

    async fn publish(&self, stream: &str, events: Vec<CloudEvent>) {
        let mut publisher = PublisherServiceClient::new(self.publisher.channel().await);
        let results = publisher.publish(PublishRequest { stream: stream.into(), events }).await.unwrap();
        assert!(results.into_inner().results.iter().all(|r| r.error.is_none()));
    }

    async fn stats(&self, stream: &str) -> SubscriptionStats {
        let request = GetStreamStatsRequest { stream: stream.into() };
        let stats = self.admin().await.get_stream_stats(request).await.unwrap().into_inner().stats.unwrap();
        stats.subscriptions.into_iter().find(|s| s.subscription == "hook").unwrap()
    }

    async fn dead_letters(&self, stream: &str) -> Vec<DeadLetter> {
        let mut dlq = DeadLetterServiceClient::new(self.dlq.channel().await);
        let request = ListDeadLettersRequest {
            stream: stream.into(),
            subscription: "hook".into(),
            page_size: 100,
            page_token: String::new(),
        };
        dlq.list_dead_letters(request).await.unwrap().into_inner().dead_letters
    }

    /// Waits until the subscription has nothing pending, nothing left to read and no dead letters.
    async fn wait_settled(&self, stream: &str) {
        self.wait_acknowledged(stream).await;
        assert!(self.dead_letters(stream).await.is_empty());
    }

    /// Waits until the subscription has nothing pending, delayed or left to read; checks that it
    /// dead-lettered nothing (by the stats, which every stream has).
    async fn wait_acknowledged(&self, stream: &str) {
        let s = eventually("every event acknowledged", WAIT, || async {
            let s = self.stats(stream).await;
            (s.pending == 0 && s.lag == 0 && s.delayed == 0).then_some(s)
        })
        .await;
        assert_eq!(s.dead_letter_depth, 0, "{s:?}");
    }
}

/// A push subscription to `endpoint` signed with [`SECRET`]: 10 s ack deadline, 1 s push
/// timeout, no retry backoff, 5 attempts.
fn subscription(stream: &str, endpoint: &str) -> Subscription {
    Subscription {
        stream: stream.into(),
        name: "hook".into(),
        ack_deadline_seconds: 10,
        retry_policy: Some(RetryPolicy { minimum_backoff: Some(secs(0)), maximum_backoff: Some(secs(60)) }),
        push_config: Some(PushConfig {
            endpoint: endpoint.into(),
            signing_secret: SECRET.into(),
            timeout: Some(secs(1)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn secs(seconds: i64) -> prost_types::Duration {
    prost_types::Duration { seconds, nanos: 0 }
}

/// Checks what every push carries: the event id as `webhook-id`, a valid signature, and the
/// CloudEvents binary-mode headers.
fn check_push(request: &Received, id: &str) {
    assert_eq!(request.header("webhook-id"), id);
    assert_eq!(request.valid_signatures(SECRET), 1, "signed with the secret: {:?}", request.headers);
    assert_eq!(request.header("ce-id"), id);
    assert_eq!(request.header("ce-specversion"), "1.0");
    assert_eq!(request.header("ce-type"), "push.test");
    assert_eq!(request.body, format!("{{\"id\":\"{id}\"}}").into_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_error_is_retried_and_then_acknowledged_once() {
    let stack = PushStack::start(&["--push-allow-private"]).await;
    let mut receiver = Receiver::start(|n, _| if n == 0 { Reply::status(500) } else { Reply::status(204) }).await;
    stack.push_subscription("orders", &receiver.url(), |_| {}).await;
    stack.publish("orders", vec![event("e-1", "push.test")]).await;
    let first = receiver.next(WAIT).await;
    let second = receiver.next(WAIT).await;
    check_push(&first, "e-1");
    check_push(&second, "e-1");
    stack.wait_settled("orders").await;
    assert!(receiver.try_next().is_none(), "delivered once after the retry");
    let samples = scrape(&stack.pusher).await;
    let pushes = |class, outcome| {
        let labels = [("stream", "orders"), ("subscription", "hook"), ("class", class), ("outcome", outcome)];
        value(&samples, "eventflow_push_requests_total", &labels)
    };
    assert_eq!((pushes("5xx", "retry"), pushes("2xx", "ack")), (1.0, 1.0));
    let latency = [("stream", "orders"), ("subscription", "hook")];
    assert_eq!(value(&samples, "eventflow_push_duration_seconds_count", &latency), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_error_dead_letters_with_the_status_in_the_reason() {
    let stack = PushStack::start(&["--push-allow-private"]).await;
    let mut receiver = Receiver::start(|_, _| Reply::Status(400, "field amount is missing", Vec::new())).await;
    stack.push_subscription("orders", &receiver.url(), |_| {}).await;
    stack.publish("orders", vec![event("e-1", "push.test")]).await;
    check_push(&receiver.next(WAIT).await, "e-1");
    let dead = eventually("the dead letter", WAIT, || async {
        let dead = stack.dead_letters("orders").await;
        (!dead.is_empty()).then_some(dead)
    })
    .await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, "HTTP 400: field amount is missing");
    assert_eq!(dead[0].delivery_attempts, 1);
    assert_eq!(dead[0].event.as_ref().unwrap().id, "e-1");
    assert!(receiver.try_next().is_none(), "not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_endpoint_times_out_and_the_event_is_retried() {
    let stack = PushStack::start(&["--push-allow-private"]).await;
    let mut receiver = Receiver::start(|n, _| if n == 0 { Reply::Hang } else { Reply::status(200) }).await;
    stack
        .push_subscription("orders", &receiver.url(), |s| {
            s.push_config.as_mut().unwrap().timeout = Some(prost_types::Duration { seconds: 0, nanos: 200_000_000 });
        })
        .await;
    stack.publish("orders", vec![event("e-1", "push.test")]).await;
    check_push(&receiver.next(WAIT).await, "e-1");
    check_push(&receiver.next(WAIT).await, "e-1");
    stack.wait_settled("orders").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_endpoints_are_verified_against_the_trusted_roots() {
    let ca = eventflow_e2e::certs::Ca::new("webhook test ca");
    let ca_file = std::env::temp_dir().join(format!("eventflow-push-ca-{}.pem", unique_prefix()));
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let ca_arg = ca_file.to_str().unwrap();
    let stack = PushStack::start(&["--push-allow-private", "--push-ca-file", ca_arg]).await;
    let mut receiver = Receiver::start_tls(&ca.server(), |_, _| Reply::status(200)).await;
    stack.push_subscription("orders", &receiver.https_url(), |_| {}).await;
    stack.publish("orders", vec![event("e-1", "push.test")]).await;
    check_push(&receiver.next(WAIT).await, "e-1");
    stack.wait_settled("orders").await;

    // A pusher that does not trust the CA never completes a handshake: the event is retried
    // and dead-lettered with the TLS failure as its reason.
    let untrusting = PushStack::start(&["--push-allow-private"]).await;
    let mut other = Receiver::start_tls(&ca.server(), |_, _| Reply::status(200)).await;
    untrusting
        .push_subscription("orders", &other.https_url(), |s| {
            s.dead_letter_policy = Some(eventflow_proto::v1::DeadLetterPolicy { max_delivery_attempts: 2 });
        })
        .await;
    untrusting.publish("orders", vec![event("e-2", "push.test")]).await;
    let dead = eventually("the dead letter", WAIT, || async {
        let dead = untrusting.dead_letters("orders").await;
        (!dead.is_empty()).then_some(dead)
    })
    .await;
    assert!(dead[0].reason.contains("TLS handshake"), "{}", dead[0].reason);
    assert!(other.try_next().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pushers_share_a_subscription_through_its_consumer_group() {
    let stack = PushStack::start(&["--push-allow-private"]).await;
    let args = ["--push-allow-private", "--push-poll-ms", "50"];
    let _second = start(Kind::Pusher, &stack.redis.url(), &stack.prefix, &args).await;
    let mut receiver = Receiver::start(|_, _| Reply::status(200)).await;
    stack.push_subscription("orders", &receiver.url(), |_| {}).await;
    // Each replica delivers through a consumer of its own.
    eventually("a consumer per pusher", WAIT, || async {
        let consumers = stack.stats("orders").await.consumers;
        (consumers.iter().filter(|c| c.name.starts_with("c-")).count() == 2).then_some(())
    })
    .await;
    let ids: Vec<String> = (0..40).map(|i| format!("e-{i}")).collect();
    stack.publish("orders", ids.iter().map(|id| event(id, "push.test")).collect()).await;
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < ids.len() {
        let request = receiver.next(WAIT).await;
        assert_eq!(request.valid_signatures(SECRET), 1);
        seen.insert(request.header("webhook-id"));
    }
    stack.wait_settled("orders").await;
    assert!(receiver.try_next().is_none(), "each event pushed once");
}

/// Forty pushes answered at once are acknowledged in a few shared calls, not forty: the
/// script calls Redis ran meanwhile are counted (per-push settlement made at least one each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_of_pushes_ending_together_share_calls() {
    let stack = PushStack::start(&["--push-allow-private"]).await;
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let held = gate.clone();
    let mut receiver = Receiver::start(move |_, _| Reply::Gated(held.clone(), 200)).await;
    stack.push_subscription("orders", &receiver.url(), |s| s.push_config.as_mut().unwrap().max_concurrency = 40).await;
    let ids: Vec<String> = (0..40).map(|i| format!("e-{i}")).collect();
    stack.publish("orders", ids.iter().map(|id| event(id, "push.test")).collect()).await;
    for _ in &ids {
        receiver.next(WAIT).await;
    }
    // Every push is in flight, held by the endpoint: answer them all at once.
    let key = eventflow_broker::Keys::new(&stack.prefix).stream("orders");
    let before = script_calls(&stack.redis);
    gate.add_permits(ids.len());
    // Settled (read from Redis directly: the admin's stats would run scripts too).
    eventually("every push acknowledged", WAIT, || async {
        let reply = stack.redis.raw(&format!("XPENDING {key} hook"));
        (reply.lines().nth(1) == Some(":0")).then_some(())
    })
    .await;
    let calls = script_calls(&stack.redis) - before;
    assert!(calls <= 20, "40 acks took {calls} script calls");
    stack.wait_settled("orders").await;
    assert!(receiver.try_next().is_none(), "each event pushed once");
}

/// Script calls (`EVALSHA`) Redis ran so far (`INFO commandstats`).
fn script_calls(redis: &RedisServer) -> u64 {
    let info = redis.raw("INFO commandstats");
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_settles_the_pushes_in_flight_first() {
    let mut stack = PushStack::start(&["--push-allow-private"]).await;
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let held = gate.clone();
    let mut receiver = Receiver::start(move |_, _| Reply::Gated(held.clone(), 200)).await;
    stack.push_subscription("orders", &receiver.url(), |_| {}).await;
    stack.publish("orders", vec![event("e-1", "push.test")]).await;
    check_push(&receiver.next(WAIT).await, "e-1");
    // The push is in flight: shut the pusher down, then let the endpoint answer.
    stack.pusher.shutdown.cancel();
    gate.add_permits(1);
    (&mut stack.pusher.handle).await.unwrap();
    let stats = |s: SubscriptionStats| (s.pending, s.lag, s.delayed);
    // It settled the answered push before it stopped: acknowledged, nothing left to redeliver.
    assert_eq!(stats(stack.stats("orders").await), (0, 0, 0));
    assert!(stack.dead_letters("orders").await.is_empty());
    assert!(receiver.try_next().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_delays_the_redelivery() {
    let stack = PushStack::start(&["--push-allow-private"]).await;
    let mut receiver = Receiver::start(|n, _| match n {
        0 => Reply::Status(429, "slow down", vec![("retry-after", "2".into())]),
        _ => Reply::status(200),
    })
    .await;
    stack.push_subscription("orders", &receiver.url(), |_| {}).await;
    stack.publish("orders", vec![event("e-1", "push.test")]).await;
    let first = receiver.next(WAIT).await;
    // The nack parked the event in the retry delay set (the subscription itself has no backoff).
    eventually("the event waiting out Retry-After", WAIT, || async {
        (stack.stats("orders").await.delayed == 1).then_some(())
    })
    .await;
    let second = receiver.next(WAIT).await;
    assert!(
        second.at.duration_since(first.at) >= Duration::from_secs(2),
        "redelivered {:?} after a Retry-After of 2 s",
        second.at.duration_since(first.at)
    );
    stack.wait_settled("orders").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_endpoints_are_refused_without_the_flag() {
    // The admin without the flag refuses a loopback endpoint and plain http.
    let redis = RedisServer::start();
    let strict = start(Kind::Admin, &redis.url(), &unique_prefix(), &[]).await;
    let mut admin = AdminServiceClient::new(strict.channel().await);
    let s = Stream { name: "orders".into(), ..Default::default() };
    admin.create_stream(CreateStreamRequest { stream: Some(s) }).await.unwrap();
    for endpoint in ["https://127.0.0.1:8443/hook", "https://[::ffff:10.0.0.1]/hook", "http://example.com/hook"] {
        let sub = subscription("orders", endpoint);
        let err = admin
            .create_subscription(CreateSubscriptionRequest { subscription: Some(sub), start_position: None })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{endpoint}");
        assert!(err.message().contains("subscription.push_config.endpoint"), "{}", err.message());
    }

    // The pusher without the flag never calls one (set up through an admin that allows it):
    // each attempt fails as refused and the event ends in the dead-letter queue.
    let stack = PushStack::start(&[]).await;
    let mut receiver = Receiver::start(|_, _| Reply::status(200)).await;
    stack
        .push_subscription("orders", &receiver.url(), |s| {
            s.dead_letter_policy = Some(eventflow_proto::v1::DeadLetterPolicy { max_delivery_attempts: 2 });
        })
        .await;
    stack.publish("orders", vec![event("e-1", "push.test")]).await;
    let dead = eventually("the dead letter", WAIT, || async {
        let dead = stack.dead_letters("orders").await;
        (!dead.is_empty()).then_some(dead)
    })
    .await;
    assert!(dead[0].reason.contains("endpoint refused"), "{}", dead[0].reason);
    assert!(receiver.try_next().is_none(), "the receiver was never called");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_signs_beside_the_new_one() {
    let stack = PushStack::start(&["--push-allow-private"]).await;
    // Until the pusher has picked the rotation up it signs with the old secret only: such a
    // push is answered 503 and retried.
    let mut receiver = Receiver::start(|_, request: &Received| match request.valid_signatures(NEW_SECRET) {
        1 => Reply::status(200),
        _ => Reply::status(503),
    })
    .await;
    stack.push_subscription("orders", &receiver.url(), |_| {}).await;
    let mut admin = stack.admin().await;
    let mut update = subscription("orders", &receiver.url());
    update.push_config.as_mut().unwrap().signing_secret = NEW_SECRET.into();
    let mask = prost_types::FieldMask { paths: vec!["push_config".into()] };
    let request = UpdateSubscriptionRequest { subscription: Some(update), update_mask: Some(mask) };
    admin.update_subscription(request).await.unwrap();
    // Secrets are write-only; the rotation window shows.
    let got = admin
        .get_subscription(GetSubscriptionRequest { stream: "orders".into(), name: "hook".into() })
        .await
        .unwrap()
        .into_inner()
        .subscription
        .unwrap()
        .push_config
        .unwrap();
    assert_eq!(got.signing_secret, "");
    assert!(got.previous_secret_expire_time.is_some());

    stack.publish("orders", vec![event("e-1", "push.test")]).await;
    let request = loop {
        let request = receiver.next(WAIT).await;
        if request.valid_signatures(NEW_SECRET) == 1 {
            break request;
        }
    };
    assert_eq!(request.valid_signatures(SECRET), 1, "the replaced secret signs too");
    assert_eq!(request.header("webhook-signature").split(' ').count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_push_continues_the_events_trace() {
    let stack = PushStack::start(&["--push-allow-private"]).await;
    let mut receiver = Receiver::start(|_, _| Reply::status(200)).await;
    stack
        .push_subscription("orders", &receiver.url(), |s| {
            s.push_config.as_mut().unwrap().content_mode = ContentMode::Structured as i32;
        })
        .await;
    let mut traced = event("e-1", "push.test");
    let value = CloudEventAttributeValue { attr: Some(Attr::CeString(TRACEPARENT.into())) };
    traced.attributes.insert("traceparent".into(), value);
    stack.publish("orders", vec![traced]).await;
    let request = receiver.next(WAIT).await;
    let traceparent = request.header("traceparent");
    assert_eq!(traceparent.split('-').nth(1), Some("0af7651916cd43dd8448eb211c80319c"), "{traceparent}");
    // Structured mode: the whole event as CloudEvents JSON, signed like any push.
    assert_eq!(request.header("content-type"), "application/cloudevents+json");
    assert_eq!(request.valid_signatures(SECRET), 1);
    let json: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!((json["id"].as_str(), json["data"]["id"].as_str()), (Some("e-1"), Some("e-1")));
    stack.wait_settled("orders").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_is_refused_on_a_push_subscription_until_push_is_cleared() {
    let stack = PushStack::start(&["--push-allow-private"]).await;
    let subscriber = start(Kind::Subscriber, &stack.redis.url(), &stack.prefix, &[]).await;
    stack.push_subscription("orders", "http://127.0.0.1:9/hook", |_| {}).await;
    let mut client = SubscriberServiceClient::new(subscriber.channel().await);
    let request = || SubscribeRequest { stream: "orders".into(), subscription: "hook".into(), ..Default::default() };
    let err = client.subscribe(request()).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("\"hook\"") && err.message().contains("push"), "{}", err.message());

    // Bad push settings name their field.
    let mut admin = stack.admin().await;
    let mask = || Some(prost_types::FieldMask { paths: vec!["push_config".into()] });
    let mut bad = subscription("orders", "http://127.0.0.1:9/hook");
    bad.push_config.as_mut().unwrap().signing_secret = "not-a-secret".into();
    let err = admin
        .update_subscription(UpdateSubscriptionRequest { subscription: Some(bad), update_mask: mask() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("subscription.push_config.signing_secret"), "{}", err.message());

    // Clearing push_config makes it a pull subscription again.
    let pull = Subscription { stream: "orders".into(), name: "hook".into(), ..Default::default() };
    admin
        .update_subscription(UpdateSubscriptionRequest { subscription: Some(pull), update_mask: mask() })
        .await
        .unwrap();
    let mut open = client.subscribe(request()).await.unwrap().into_inner();

    // Making it a push subscription again ends the open Subscribe call once its session reads
    // the new settings.
    let push = subscription("orders", "http://127.0.0.1:9/hook");
    let update = UpdateSubscriptionRequest { subscription: Some(push), update_mask: mask() };
    admin.update_subscription(update).await.unwrap();
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match open.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the call ended without a status"),
                Err(status) => break status,
            }
        }
    })
    .await
    .expect("the open Subscribe call ends");
    assert_eq!(ended.code(), Code::FailedPrecondition, "{ended:?}");
    let _ = &stack.pusher;
}

/// Push failures feed the subscription's circuit breaker as nacks of Subscribe clients do: four
/// 503s of four pushes open it, no push goes out while it is open, then one probe; a
/// successful probe closes it and the other events follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_pushes_open_the_breaker_and_a_good_probe_closes_it() {
    let stack = PushStack::start(&["--push-allow-private"]).await;
    let mut receiver = Receiver::start(|n, _| if n < 4 { Reply::status(503) } else { Reply::status(200) }).await;
    stack
        .push_subscription("orders", &receiver.url(), |sub| {
            sub.circuit_breaker = Some(CircuitBreakerPolicy {
                enabled: true,
                failure_ratio: 0.5,
                minimum_requests: 4,
                window: Some(secs(30)),
                open_duration: Some(secs(2)),
                half_open_probes: 1,
            });
            sub.dead_letter_policy = Some(DeadLetterPolicy { max_delivery_attempts: 100 });
        })
        .await;
    stack.publish("orders", (0..4).map(|i| event(&format!("e-{i}"), "push.test")).collect()).await;
    for _ in 0..4 {
        receiver.next(WAIT).await;
    }
    let opened_at = std::time::Instant::now();
    eventually("the breaker open", WAIT, || async {
        (stack.stats("orders").await.breaker_state == BreakerState::Open as i32).then_some(())
    })
    .await;
    let probe = receiver.next(WAIT).await;
    assert!(opened_at.elapsed() >= Duration::from_secs(1), "the probe waits for the open time");
    let rest: Vec<Received> = vec![receiver.next(WAIT).await, receiver.next(WAIT).await, receiver.next(WAIT).await];
    let mut ids: Vec<String> = rest.iter().chain([&probe]).map(|r| r.header("webhook-id")).collect();
    ids.sort();
    assert_eq!(ids, ["e-0", "e-1", "e-2", "e-3"]);
    stack.wait_settled("orders").await;
    assert_eq!(stack.stats("orders").await.breaker_state, BreakerState::Closed as i32);
}

/// A receiver answering 503 to the first push of event `id` and 204 to everything else.
async fn failing_once(id: &'static str) -> Receiver {
    let failed = std::sync::atomic::AtomicBool::new(false);
    Receiver::start(move |_, r| {
        let first = r.header("ce-id") == id && !failed.swap(true, std::sync::atomic::Ordering::SeqCst);
        if first { Reply::status(503) } else { Reply::status(204) }
    })
    .await
}

/// Event `id` of type `push.test` with ordering key `key`.
fn keyed(id: &str, key: &str) -> CloudEvent {
    let mut e = event(id, "push.test");
    e.attributes.insert("partitionkey".into(), CloudEventAttributeValue { attr: Some(Attr::CeString(key.into())) });
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordered_push_subscription_retries_a_keys_event_before_pushing_its_next() {
    let stack = PushStack::start(&["--push-allow-private"]).await;
    let mut receiver = failing_once("a1").await;
    stack.push_subscription("orders", &receiver.url(), |s| s.ordered = true).await;
    stack.publish("orders", vec![keyed("a1", "a"), keyed("a2", "a"), keyed("b1", "b"), keyed("a3", "a")]).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(receiver.next(WAIT).await.header("ce-id"));
    }
    let key_a: Vec<&str> = ids.iter().map(String::as_str).filter(|id| id.starts_with('a')).collect();
    assert_eq!(key_a, ["a1", "a1", "a2", "a3"], "key a in order, its failed event retried first: {ids:?}");
    assert!(ids.iter().any(|id| id == "b1"), "{ids:?}");
    stack.wait_settled("orders").await;
    assert!(receiver.try_next().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_subscription_on_a_partitioned_stream_delivers_every_partition_in_key_order() {
    let stack = PushStack::start(&["--push-allow-private"]).await;
    let mut receiver = failing_once("k0-0").await;
    let parted = Stream { name: "parted".into(), partitions: 3, ..Default::default() };
    stack
        .push_subscription_on(parted, &receiver.url(), |s| {
            s.ordered = true;
            // Fewer permits than partitions: the partitions share them (one session each).
            s.push_config.as_mut().unwrap().max_concurrency = 2;
        })
        .await;
    // Six keys of four events each (interleaved) and twelve keyless events: all three
    // partitions get some.
    let mut events = Vec::new();
    for n in 0..4 {
        for k in 0..6 {
            events.push(keyed(&format!("k{k}-{n}"), &format!("key-{k}")));
        }
        for m in 0..3 {
            events.push(event(&format!("x-{n}-{m}"), "push.test"));
        }
    }
    stack.publish("parted", events).await;
    // 36 events, one retried once after its 503.
    let mut ids = Vec::new();
    for _ in 0..37 {
        let request = receiver.next(WAIT).await;
        check_push(&request, &request.header("ce-id"));
        ids.push(request.header("ce-id"));
    }
    for k in 0..6 {
        let prefix = format!("k{k}-");
        let key: Vec<&str> = ids.iter().map(String::as_str).filter(|id| id.starts_with(&prefix)).collect();
        let mut want: Vec<String> = (0..4).map(|n| format!("k{k}-{n}")).collect();
        if k == 0 {
            want.insert(0, "k0-0".into()); // the 503, retried before the key's next event
        }
        assert_eq!(key, want, "key-{k} in publish order: {ids:?}");
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 36, "every event of every partition: {ids:?}");
    stack.wait_acknowledged("parted").await;
    assert!(receiver.try_next().is_none(), "each event acknowledged once");
    let samples = scrape(&stack.pusher).await;
    let labels = [("stream", "parted"), ("subscription", "hook"), ("class", "2xx"), ("outcome", "ack")];
    assert_eq!(value(&samples, "eventflow_push_requests_total", &labels), 36.0, "labelled by the stream's name");
}
