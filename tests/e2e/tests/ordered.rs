//! Ordered subscriptions through the real services: events published with a `partitionkey`
//! are delivered one per key at a time in publish order over Subscribe; a nack
//! (ModifyAckDeadline 0) redelivers the same event, a Reject dead-letters it (the dead letter
//! names the key) and lets the key move on, an Acknowledge lets the next one through; other
//! keys and keyless events are not held back; stats count the blocked keys; a bad
//! `partitionkey` is refused per event and `ordered` cannot be changed by an update.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use eventflow_e2e::{Consumer, Stack, event};
use eventflow_proto::v1::{
    AcknowledgeRequest, CloudEvent, GetDeadLetterRequest, ListDeadLettersRequest, ModifyAckDeadlineRequest,
    ReceivedEvent, RejectRequest, Subscription, UpdateSubscriptionRequest,
    cloud_event::{CloudEventAttributeValue, cloud_event_attribute_value::Attr},
};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(10);

/// Event `id` with ordering key `key` ('' = none).
fn keyed(id: &str, key: &str) -> CloudEvent {
    let mut e = event(id, "t");
    if !key.is_empty() {
        e.attributes.insert("partitionkey".into(), CloudEventAttributeValue { attr: Some(Attr::CeString(key.into())) });
    }
    e
}

fn ids(events: &[ReceivedEvent]) -> Vec<String> {
    let mut ids: Vec<String> = events.iter().map(|e| e.event.as_ref().unwrap().id.clone()).collect();
    ids.sort();
    ids
}

fn ack_id<'a>(events: &'a [ReceivedEvent], id: &str) -> &'a str {
    &events.iter().find(|e| e.event.as_ref().unwrap().id == id).unwrap().ack_id
}

#[tokio::test]
async fn subscribe_delivers_each_key_in_order_through_nack_reject_and_ack() {
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    let subscription = Subscription { stream: "s".into(), name: "sub".into(), ordered: true, ..Default::default() };
    stack.create_subscription_with(subscription).await;

    let mut bad = keyed("bad", "");
    bad.attributes.insert("partitionkey".into(), CloudEventAttributeValue { attr: Some(Attr::CeInteger(7)) });
    let results = stack
        .publish(
            "s",
            vec![keyed("a1", "a"), keyed("b1", "b"), keyed("a2", "a"), keyed("x1", ""), keyed("a3", "a"), bad],
        )
        .await;
    assert!(results[..5].iter().all(|r| r.error.is_none()), "{results:?}");
    let error = results[5].error.as_ref().unwrap();
    assert_eq!((error.code, error.field.as_str()), (Code::InvalidArgument as i32, "events[5].attributes.partitionkey"));

    let mut consumer = Consumer::open(&stack, "s", "sub", 10).await;
    let first = consumer.take(3, WAIT).await;
    assert_eq!(ids(&first), ["a1", "b1", "x1"], "key b and keyless events are not held back by key a");
    consumer.expect_nothing(Duration::from_millis(500)).await;
    let stats = stack.stats("s").await.subscriptions.remove(0);
    assert_eq!((stats.ordered_keys_blocked, stats.ordered_events_waiting), (1, 2), "{stats:?}");
    assert!(stats.oldest_blocked_age.is_some(), "{stats:?}");

    let mut client = stack.subscriber().await;
    let nack = ModifyAckDeadlineRequest {
        ack_ids: vec![ack_id(&first, "a1").into()],
        ack_deadline_seconds: 0,
        reason: "later".into(),
    };
    client.modify_ack_deadline(nack).await.unwrap();
    let again = consumer.take(1, WAIT).await;
    assert_eq!((ids(&again), again[0].delivery_attempt), (vec!["a1".to_string()], 2), "the same event, not a2");

    let reject = RejectRequest { ack_ids: vec![again[0].ack_id.clone()], reason: "poison".into() };
    client.reject(reject).await.unwrap();
    let second = consumer.take(1, WAIT).await;
    assert_eq!((ids(&second), second[0].delivery_attempt), (vec!["a2".to_string()], 1), "the key moved on");
    let mut dlq = stack.dlq().await;
    let list =
        ListDeadLettersRequest { stream: "s".into(), subscription: "sub".into(), page_size: 10, page_token: "".into() };
    let letters = dlq.list_dead_letters(list).await.unwrap().into_inner().dead_letters;
    assert_eq!(letters.len(), 1);
    let get = GetDeadLetterRequest { stream: "s".into(), subscription: "sub".into(), id: letters[0].id.clone() };
    let letter = dlq.get_dead_letter(get).await.unwrap().into_inner().dead_letter.unwrap();
    assert_eq!((letter.ordering_key.as_str(), letter.reason.as_str()), ("a", "poison"));

    let acks = vec![second[0].ack_id.clone(), ack_id(&first, "b1").into(), ack_id(&first, "x1").into()];
    let reply = client.acknowledge(AcknowledgeRequest { ack_ids: acks }).await.unwrap().into_inner();
    assert!(reply.expired_ack_ids.is_empty() && reply.invalid_ack_ids.is_empty(), "{reply:?}");
    let third = consumer.take(1, WAIT).await;
    assert_eq!(ids(&third), ["a3"]);
    client.acknowledge(AcknowledgeRequest { ack_ids: vec![third[0].ack_id.clone()] }).await.unwrap();
    let stats = stack.stats("s").await.subscriptions.remove(0);
    assert_eq!((stats.ordered_keys_blocked, stats.ordered_events_waiting, stats.pending), (0, 0, 0), "{stats:?}");

    // `ordered` is fixed at creation.
    let update = UpdateSubscriptionRequest {
        subscription: Some(Subscription { stream: "s".into(), name: "sub".into(), ..Default::default() }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["ordered".into()] }),
    };
    let status = stack.admin().await.update_subscription(update).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("subscription.ordered"), "{status:?}");
}
