//! Admin operations that are safe to retry: duration fields with upper bounds.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use eventflow_e2e::{Stack, event};
use eventflow_proto::v1::{
    CircuitBreakerPolicy, CreateStreamRequest, CreateSubscriptionRequest, GetStreamRequest, ModifyAckDeadlineRequest,
    RetentionPolicy, RetryPolicy, Stream, Subscription, UpdateStreamRequest, UpdateSubscriptionRequest,
};
use prost_types::{Duration, FieldMask};
use tonic::{Code, Status};

fn secs(seconds: i64) -> Option<Duration> {
    Some(Duration { seconds, nanos: 0 })
}

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask { paths: paths.iter().map(|p| p.to_string()).collect() })
}

#[track_caller]
fn assert_names(status: &Status, field: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().starts_with(&format!("{field}:")), "{status:?} should name {field}");
}

const DAY: i64 = 86_400;

#[tokio::test]
async fn huge_or_malformed_durations_are_refused_naming_the_field_and_nothing_is_stored() {
    let stack = Stack::start().await;
    let mut admin = stack.admin().await;
    let create = |stream: Stream| CreateStreamRequest { stream: Some(stream) };
    let named = |dedup_window, max_age| Stream {
        name: "s".into(),
        dedup_window,
        retention: Some(RetentionPolicy { max_length: 0, max_age }),
        ..Default::default()
    };

    // A dedup window Redis cannot add to its clock used to fail the publish script after its
    // XADD (and every retry stored another copy); now it is refused up front.
    for window in [secs(7 * DAY + 1), secs(i64::MAX), Some(Duration { seconds: i64::MAX, nanos: 999_999_999 })] {
        let status = admin.create_stream(create(named(window, None))).await.unwrap_err();
        assert_names(&status, "stream.dedup_window");
    }
    for malformed in
        [secs(-1), Some(Duration { seconds: 0, nanos: -5 }), Some(Duration { seconds: 1, nanos: 2_000_000_000 })]
    {
        assert_names(&admin.create_stream(create(named(malformed, None))).await.unwrap_err(), "stream.dedup_window");
    }
    let sub_millisecond = Some(Duration { seconds: 0, nanos: 1000 });
    assert_names(&admin.create_stream(create(named(sub_millisecond, None))).await.unwrap_err(), "stream.dedup_window");
    let status = admin.create_stream(create(named(None, secs(3651 * DAY)))).await.unwrap_err();
    assert_names(&status, "stream.retention.max_age");
    assert_names(&admin.create_stream(create(named(None, secs(-3)))).await.unwrap_err(), "stream.retention.max_age");
    let status = admin.get_stream(GetStreamRequest { name: "s".into() }).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let keys = stack.redis.raw(&format!("KEYS {}:*", stack.prefix));
    assert_eq!(keys, "*0\r\n", "a refused create stores nothing");

    // The bounds themselves are accepted.
    admin.create_stream(create(named(secs(7 * DAY), secs(3650 * DAY)))).await.unwrap();
    let first = stack.publish("s", vec![event("e1", "t")]).await;
    assert!(!first[0].duplicate && !first[0].entry_id.is_empty(), "{first:?}");

    // An update to a huge window is refused and changes nothing: the event is still a duplicate.
    let update =
        UpdateStreamRequest { stream: Some(named(secs(i64::MAX / 2), None)), update_mask: mask(&["dedup_window"]) };
    assert_names(&admin.update_stream(update).await.unwrap_err(), "stream.dedup_window");
    let got = admin.get_stream(GetStreamRequest { name: "s".into() }).await.unwrap().into_inner().stream.unwrap();
    assert_eq!(got.dedup_window.unwrap().seconds, 7 * DAY);
    let again = stack.publish("s", vec![event("e1", "t")]).await;
    assert!(again[0].duplicate && again[0].entry_id == first[0].entry_id, "{again:?}");
    assert_eq!(stack.stats("s").await.length, 1, "one copy stored");

    // Subscriptions: retry backoffs at most a day, breaker durations bounded, never negative.
    let sub = |retry_policy, circuit_breaker| Subscription {
        stream: "s".into(),
        name: "sub".into(),
        retry_policy,
        circuit_breaker,
        ..Default::default()
    };
    let create_sub = |s: Subscription| CreateSubscriptionRequest { subscription: Some(s), start_position: None };
    let retry = |min, max| Some(RetryPolicy { minimum_backoff: min, maximum_backoff: max });
    let cases = [
        (retry(secs(DAY + 1), secs(DAY + 1)), "subscription.retry_policy.minimum_backoff"),
        (retry(None, secs(DAY + 1)), "subscription.retry_policy.maximum_backoff"),
        (retry(None, secs(i64::MAX)), "subscription.retry_policy.maximum_backoff"),
        (retry(secs(-1), None), "subscription.retry_policy.minimum_backoff"),
        (retry(None, Some(Duration { seconds: 5, nanos: -1 })), "subscription.retry_policy.maximum_backoff"),
    ];
    for (policy, field) in cases {
        assert_names(&admin.create_subscription(create_sub(sub(policy, None))).await.unwrap_err(), field);
    }
    let breaker = |window, open_duration| {
        Some(CircuitBreakerPolicy { enabled: true, window, open_duration, ..Default::default() })
    };
    let status = admin.create_subscription(create_sub(sub(None, breaker(None, secs(2 * DAY))))).await.unwrap_err();
    assert_names(&status, "subscription.circuit_breaker.open_duration");
    let status = admin.create_subscription(create_sub(sub(None, breaker(secs(i64::MAX), None)))).await.unwrap_err();
    assert_names(&status, "subscription.circuit_breaker.window");
    assert!(stack.redis.raw(&format!("EXISTS {}:{{s}}:sub:sub", stack.prefix)).contains(":0"), "nothing stored");

    admin.create_subscription(create_sub(sub(retry(secs(DAY), secs(DAY)), None))).await.unwrap();
    let update = UpdateSubscriptionRequest {
        subscription: Some(sub(retry(None, secs(DAY * 365)), None)),
        update_mask: mask(&["retry_policy.maximum_backoff"]),
    };
    assert_names(&admin.update_subscription(update).await.unwrap_err(), "subscription.retry_policy.maximum_backoff");

    // ModifyAckDeadline: at most the longest ack deadline, checked before anything else.
    let mut subscriber = stack.subscriber().await;
    let modify =
        ModifyAckDeadlineRequest { ack_ids: vec!["x".into()], ack_deadline_seconds: i32::MAX, reason: String::new() };
    assert_names(&subscriber.modify_ack_deadline(modify).await.unwrap_err(), "ack_deadline_seconds");
    let modify =
        ModifyAckDeadlineRequest { ack_ids: vec!["x".into()], ack_deadline_seconds: -1, reason: String::new() };
    assert_names(&subscriber.modify_ack_deadline(modify).await.unwrap_err(), "ack_deadline_seconds");
}
