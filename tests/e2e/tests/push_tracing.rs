//! A push continues the event's trace: with an exporter the pusher records a CLIENT span
//! `push <stream>` as a child of the event's context and hands the receiver that span's
//! context in `traceparent` (an in-test OTLP collector receives the spans). Its own test
//! binary: tracing is installed process-wide.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use eventflow_e2e::{
    Kind, RedisServer, event, eventually,
    otlp::{Collector, hex},
    start, unique_prefix,
    webhook::{Receiver, Reply},
};
use eventflow_proto::v1::{
    CreateStreamRequest, CreateSubscriptionRequest, Position, PublishRequest, PushConfig, Stream, Subscription,
    admin_service_client::AdminServiceClient,
    cloud_event::{CloudEventAttributeValue, cloud_event_attribute_value::Attr},
    position,
    publisher_service_client::PublisherServiceClient,
};

const WAIT: Duration = Duration::from_secs(15);
const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const EVENT_SPAN: &str = "b7ad6b7169203331";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_push_span_is_the_receivers_parent() {
    let collector = Collector::start().await;
    let telemetry = eventflow_runtime::telemetry::init_tracing("eventflow-e2e", &collector.endpoint).unwrap();

    let redis = RedisServer::start();
    let (url, prefix) = (redis.url(), unique_prefix());
    let admin = start(Kind::Admin, &url, &prefix, &["--push-allow-private"]).await;
    let publisher = start(Kind::Publisher, &url, &prefix, &[]).await;
    let _pusher = start(Kind::Pusher, &url, &prefix, &["--push-allow-private", "--push-poll-ms", "50"]).await;
    let mut receiver = Receiver::start(|_, _| Reply::status(200)).await;

    let mut admin = AdminServiceClient::new(admin.channel().await);
    let stream = Stream { name: "orders".into(), ..Default::default() };
    admin.create_stream(CreateStreamRequest { stream: Some(stream) }).await.unwrap();
    let push = PushConfig {
        endpoint: receiver.url(),
        signing_secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
        ..Default::default()
    };
    let sub =
        Subscription { stream: "orders".into(), name: "hook".into(), push_config: Some(push), ..Default::default() };
    let start_position = Some(Position { position: Some(position::Position::Earliest(true)) });
    admin.create_subscription(CreateSubscriptionRequest { subscription: Some(sub), start_position }).await.unwrap();

    let mut traced = event("e-1", "push.test");
    let traceparent = format!("00-{TRACE}-{EVENT_SPAN}-01");
    traced
        .attributes
        .insert("traceparent".into(), CloudEventAttributeValue { attr: Some(Attr::CeString(traceparent)) });
    let mut publisher = PublisherServiceClient::new(publisher.channel().await);
    publisher.publish(PublishRequest { stream: "orders".into(), events: vec![traced] }).await.unwrap();

    let request = receiver.next(WAIT).await;
    let header = request.header("traceparent");
    let parts: Vec<&str> = header.split('-').collect();
    assert_eq!(parts.get(1), Some(&TRACE), "{header}");
    let push_span_id = parts[2].to_string();
    assert_ne!(push_span_id, EVENT_SPAN, "the receiver's parent is the push span, not the event's");

    let push = eventually("the push span exported", WAIT, || async {
        telemetry.flush();
        collector.spans().into_iter().find(|s| s.name == "push orders")
    })
    .await;
    assert_eq!(push.kind, 3, "CLIENT");
    assert_eq!(hex(&push.trace_id), TRACE);
    assert_eq!(hex(&push.parent_span_id), EVENT_SPAN, "a child of the event's context");
    assert_eq!(hex(&push.span_id), push_span_id);
    let status = push.attributes.iter().find(|kv| kv.key == "http.response.status_code");
    assert!(status.is_some(), "{:?}", push.attributes);
    telemetry.shutdown();
}
