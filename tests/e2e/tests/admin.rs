//! Admin over gRPC: streams and subscriptions, create/get/list/delete, with precise errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use eventflow_e2e::{Stack, event};
use eventflow_proto::v1::{
    CreateStreamRequest, CreateSubscriptionRequest, DeleteStreamRequest, DeleteSubscriptionRequest, GetStreamRequest,
    GetSubscriptionRequest, ListStreamsRequest, ListSubscriptionsRequest, Position, RetentionPolicy, Stream,
    Subscription, position,
};
use tonic::Code;

#[tokio::test]
async fn streams_are_created_listed_paged_and_deleted() {
    let stack = Stack::start().await;
    let mut admin = stack.admin().await;
    let stream = Stream {
        name: "orders".into(),
        retention: Some(RetentionPolicy {
            max_length: 1000,
            max_age: Some(prost_types::Duration { seconds: 3600, nanos: 0 }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let created = admin.create_stream(CreateStreamRequest { stream: Some(stream) }).await.unwrap().into_inner();
    let created = created.stream.unwrap();
    assert_eq!(created.retention.as_ref().unwrap().max_length, 1000);
    assert_eq!(created.dedup_window.as_ref().unwrap().seconds, 600, "default dedup window");
    assert!(created.create_time.unwrap().seconds > 0);
    let again = admin
        .create_stream(CreateStreamRequest { stream: Some(Stream { name: "orders".into(), ..Default::default() }) });
    assert_eq!(again.await.unwrap_err().code(), Code::AlreadyExists);
    let got = admin.get_stream(GetStreamRequest { name: "orders".into() }).await.unwrap().into_inner().stream.unwrap();
    assert_eq!(got.retention.unwrap().max_age.unwrap().seconds, 3600);

    for name in ["b", "c", "a"] {
        stack.create_stream(name).await;
    }
    let page =
        admin.list_streams(ListStreamsRequest { page_size: 2, page_token: String::new() }).await.unwrap().into_inner();
    let names: Vec<_> = page.streams.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    let rest = ListStreamsRequest { page_size: 2, page_token: page.next_page_token };
    let page = admin.list_streams(rest).await.unwrap().into_inner();
    let names: Vec<_> = page.streams.iter().map(|s| s.name.as_str()).collect();
    assert_eq!((names, page.next_page_token.as_str()), (vec!["c", "orders"], ""));

    admin.delete_stream(DeleteStreamRequest { name: "b".into() }).await.unwrap();
    let status = admin.get_stream(GetStreamRequest { name: "b".into() }).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(admin.delete_stream(DeleteStreamRequest { name: "b".into() }).await.unwrap_err().code(), Code::NotFound);
}

#[tokio::test]
async fn deleting_a_stream_removes_its_keys_and_nothing_else() {
    let stack = Stack::start().await;
    stack.create_stream("gone").await;
    stack.create_stream("kept").await;
    stack.create_subscription("gone", "sub", 0, 0).await;
    stack.create_subscription("kept", "sub", 0, 0).await;
    stack.publish("gone", vec![event("a", "t")]).await;
    stack.publish("kept", vec![event("a", "t")]).await;
    stack.admin().await.delete_stream(DeleteStreamRequest { name: "gone".into() }).await.unwrap();
    let keys = stack.redis.raw(&format!("KEYS {}:*", stack.prefix));
    assert!(!keys.contains("{gone}"), "{keys}");
    let kept = stack.keys();
    assert!(keys.contains(&kept.dedup_ids_base("kept")) && keys.contains(&kept.sub("kept", "sub")), "{keys}");
    let mut publisher = stack.publisher().await;
    let request = eventflow_proto::v1::PublishRequest { stream: "gone".into(), events: vec![event("b", "t")] };
    assert_eq!(publisher.publish(request).await.unwrap_err().code(), Code::NotFound);
}

#[tokio::test]
async fn subscriptions_are_created_with_defaults_listed_and_deleted() {
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    let mut admin = stack.admin().await;
    let create = |name: &str, position: Option<position::Position>| CreateSubscriptionRequest {
        subscription: Some(Subscription { stream: "s".into(), name: name.into(), ..Default::default() }),
        start_position: position.map(|p| Position { position: Some(p) }),
    };
    let sub = admin.create_subscription(create("b", None)).await.unwrap().into_inner().subscription.unwrap();
    assert_eq!(sub.ack_deadline_seconds, 30);
    assert_eq!(sub.dead_letter_policy.unwrap().max_delivery_attempts, 5);
    admin.create_subscription(create("a", Some(position::Position::Earliest(true)))).await.unwrap();
    assert_eq!(admin.create_subscription(create("a", None)).await.unwrap_err().code(), Code::AlreadyExists);
    let listed = admin.list_subscriptions(ListSubscriptionsRequest { stream: "s".into() }).await.unwrap().into_inner();
    let names: Vec<_> = listed.subscriptions.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    let get = GetSubscriptionRequest { stream: "s".into(), name: "a".into() };
    assert_eq!(admin.get_subscription(get.clone()).await.unwrap().into_inner().subscription.unwrap().name, "a");
    admin.delete_subscription(DeleteSubscriptionRequest { stream: "s".into(), name: "a".into() }).await.unwrap();
    assert_eq!(admin.get_subscription(get).await.unwrap_err().code(), Code::NotFound);
    let groups = stack.redis.raw(&format!("XINFO GROUPS {}", stack.keys().stream("s")));
    assert!(!groups.contains("\r\na\r\n") && groups.contains("\r\nb\r\n"), "{groups}");
}

#[tokio::test]
async fn start_positions_decide_what_a_new_subscription_sees() {
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    let first = stack.publish("s", vec![event("old1", "t"), event("old2", "t")]).await;
    let mut admin = stack.admin().await;
    let create = |name: &str, p: position::Position| CreateSubscriptionRequest {
        subscription: Some(Subscription { stream: "s".into(), name: name.into(), ..Default::default() }),
        start_position: Some(Position { position: Some(p) }),
    };
    admin.create_subscription(create("latest", position::Position::Latest(true))).await.unwrap();
    admin.create_subscription(create("after", position::Position::EntryId(first[0].entry_id.clone()))).await.unwrap();
    admin.create_subscription(create("earliest", position::Position::Earliest(true))).await.unwrap();
    stack.publish("s", vec![event("new", "t")]).await;
    let wait = std::time::Duration::from_secs(10);
    let seen = |events: Vec<eventflow_proto::v1::ReceivedEvent>| -> Vec<String> {
        events.into_iter().map(|e| e.event.unwrap().id).collect()
    };
    assert_eq!(seen(eventflow_e2e::Consumer::open(&stack, "s", "latest", 10).await.take(1, wait).await), ["new"]);
    assert_eq!(
        seen(eventflow_e2e::Consumer::open(&stack, "s", "after", 10).await.take(2, wait).await),
        ["old2", "new"]
    );
    assert_eq!(seen(eventflow_e2e::Consumer::open(&stack, "s", "earliest", 10).await.take(3, wait).await).len(), 3);
    let bad = create("x", position::Position::EntryId("nonsense".into()));
    let status = admin.create_subscription(bad).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("start_position.entry_id"), "{status:?}");
}

#[tokio::test]
async fn bad_admin_input_gets_precise_statuses() {
    let stack = Stack::start().await;
    let mut admin = stack.admin().await;
    let status = admin.create_stream(CreateStreamRequest { stream: None }).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let bad_name = CreateStreamRequest { stream: Some(Stream { name: "a{b}".into(), ..Default::default() }) };
    let status = admin.create_stream(bad_name).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("stream.name"), "{status:?}");
    let no_stream = CreateSubscriptionRequest {
        subscription: Some(Subscription { stream: "nope".into(), name: "x".into(), ..Default::default() }),
        start_position: None,
    };
    assert_eq!(admin.create_subscription(no_stream).await.unwrap_err().code(), Code::NotFound);
    stack.create_stream("s").await;
    let bad_deadline = CreateSubscriptionRequest {
        subscription: Some(Subscription {
            stream: "s".into(),
            name: "x".into(),
            ack_deadline_seconds: 601,
            ..Default::default()
        }),
        start_position: None,
    };
    let status = admin.create_subscription(bad_deadline).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("ack_deadline_seconds"), "{status:?}");
    let list = admin.list_subscriptions(ListSubscriptionsRequest { stream: "nope".into() }).await.unwrap_err();
    assert_eq!(list.code(), Code::NotFound);
    let page = admin.list_streams(ListStreamsRequest { page_size: -1, page_token: String::new() }).await.unwrap_err();
    assert_eq!(page.code(), Code::InvalidArgument);
}
