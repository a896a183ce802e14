//! The dead-letter service: list (paged, newest first, per subscription or all), get, requeue
//! into the one subscription, delete, purge.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use eventflow_broker::schema::consumer;
use eventflow_e2e::{Consumer, Stack, event};
use eventflow_proto::v1::{
    AcknowledgeRequest, DeleteDeadLettersRequest, GetDeadLetterRequest, ListDeadLettersRequest,
    PurgeDeadLettersRequest, ReceivedEvent, RejectRequest, RequeueDeadLettersRequest,
    cloud_event::{CloudEventAttributeValue, cloud_event_attribute_value::Attr},
};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(10);
const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

fn list(stream: &str, sub: &str, page_size: i32, page_token: &str) -> ListDeadLettersRequest {
    ListDeadLettersRequest { stream: stream.into(), subscription: sub.into(), page_size, page_token: page_token.into() }
}

fn by_id<'a>(events: &'a [ReceivedEvent], id: &str) -> &'a ReceivedEvent {
    events.iter().find(|e| e.event.as_ref().unwrap().id == id).unwrap()
}

async fn settle(stack: &Stack, events: &[ReceivedEvent], reject: &[(&str, &str)], ack: &[&str]) {
    let mut client = stack.subscriber().await;
    for (id, reason) in reject {
        let request = RejectRequest { ack_ids: vec![by_id(events, id).ack_id.clone()], reason: (*reason).into() };
        assert!(client.reject(request).await.unwrap().into_inner().expired_ack_ids.is_empty());
    }
    let ack_ids = ack.iter().map(|id| by_id(events, id).ack_id.clone()).collect();
    client.acknowledge(AcknowledgeRequest { ack_ids }).await.unwrap();
}

#[tokio::test]
async fn dead_letters_are_listed_requeued_to_their_subscription_only_and_purged() {
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    stack.create_subscription("s", "one", 600, 0).await;
    stack.create_subscription("s", "two", 600, 0).await;
    let mut traced = event("a", "t");
    let value = CloudEventAttributeValue { attr: Some(Attr::CeString(TRACEPARENT.into())) };
    traced.attributes.insert("traceparent".into(), value);
    let published = stack.publish("s", vec![traced, event("b", "t"), event("c", "t")]).await;

    let mut one = Consumer::open(&stack, "s", "one", 10).await;
    let mut two = Consumer::open(&stack, "s", "two", 10).await;
    let got_one = one.take(3, WAIT).await;
    settle(&stack, &got_one, &[("a", "bad a"), ("b", "bad b")], &["c"]).await;
    let got_two = two.take(3, WAIT).await;
    settle(&stack, &got_two, &[("c", "two rejects c")], &["a", "b"]).await;

    let mut dlq = stack.dlq().await;
    let page = dlq.list_dead_letters(list("s", "one", 0, "")).await.unwrap().into_inner();
    let letters = page.dead_letters;
    assert_eq!(letters.iter().map(|d| d.event.as_ref().unwrap().id.as_str()).collect::<Vec<_>>(), ["b", "a"]);
    let a = &letters[1];
    assert_eq!((a.stream.as_str(), a.subscription.as_str(), a.reason.as_str()), ("s", "one", "bad a"));
    assert_eq!((a.entry_id.as_str(), a.delivery_attempts), (published[0].entry_id.as_str(), 1));
    assert!(a.consumer.starts_with(consumer::SESSION) && a.dead_letter_time.is_some() && a.publish_time.is_some());

    // Paging, one at a time, newest first; then across all subscriptions of the stream.
    let first = dlq.list_dead_letters(list("s", "one", 1, "")).await.unwrap().into_inner();
    let second = dlq.list_dead_letters(list("s", "one", 1, &first.next_page_token)).await.unwrap().into_inner();
    assert_eq!(
        (first.dead_letters[0].id.clone(), second.dead_letters[0].id.clone()),
        (letters[0].id.clone(), a.id.clone())
    );
    assert!(second.next_page_token.is_empty());
    let all = dlq.list_dead_letters(list("s", "", 0, "")).await.unwrap().into_inner().dead_letters;
    let order: Vec<_> = all.iter().map(|d| (d.subscription.as_str(), d.event.as_ref().unwrap().id.as_str())).collect();
    assert_eq!(order, [("two", "c"), ("one", "b"), ("one", "a")]);

    let get = GetDeadLetterRequest { stream: "s".into(), subscription: "one".into(), id: a.id.clone() };
    assert_eq!(dlq.get_dead_letter(get.clone()).await.unwrap().into_inner().dead_letter.unwrap(), *a);

    // Requeue "a" into "one": only "one" sees it again, from attempt 1, trace context intact.
    let requeue = RequeueDeadLettersRequest {
        stream: "s".into(),
        subscription: "one".into(),
        ids: vec![a.id.clone()],
        all: false,
    };
    assert_eq!(dlq.requeue_dead_letters(requeue).await.unwrap().into_inner().requeued, 1);
    let again = one.take(1, WAIT).await;
    let event = again[0].event.as_ref().unwrap();
    assert_eq!((event.id.as_str(), again[0].delivery_attempt), ("a", 1));
    assert_eq!(event.attributes["traceparent"].attr, Some(Attr::CeString(TRACEPARENT.into())));
    two.expect_nothing(Duration::from_millis(1000)).await;
    assert_eq!(dlq.get_dead_letter(get).await.unwrap_err().code(), Code::NotFound);
    let stats = stack.stats("s").await;
    assert_eq!((stats.subscriptions[0].dead_letter_depth, stats.subscriptions[0].redrive_pending), (1, 1));

    // Rejecting a requeued event dead-letters it again, still naming its original entry.
    settle(&stack, &again, &[("a", "still bad")], &[]).await;
    let newest = &dlq.list_dead_letters(list("s", "one", 1, "")).await.unwrap().into_inner().dead_letters[0];
    assert_eq!((newest.reason.as_str(), newest.entry_id.as_str()), ("still bad", published[0].entry_id.as_str()));

    // Purge empties "one" only; "two" keeps its dead letter and can requeue all of them.
    let purge = PurgeDeadLettersRequest { stream: "s".into(), subscription: "one".into() };
    assert_eq!(dlq.purge_dead_letters(purge).await.unwrap().into_inner().purged, 2);
    assert!(dlq.list_dead_letters(list("s", "one", 0, "")).await.unwrap().into_inner().dead_letters.is_empty());
    let requeue_all =
        RequeueDeadLettersRequest { stream: "s".into(), subscription: "two".into(), ids: vec![], all: true };
    assert_eq!(dlq.requeue_dead_letters(requeue_all).await.unwrap().into_inner().requeued, 1);
    assert_eq!(two.take(1, WAIT).await[0].event.as_ref().unwrap().id, "c");
    one.expect_nothing(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn dead_letter_bad_input_gets_precise_statuses() {
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    stack.create_subscription("s", "one", 600, 0).await;
    stack.publish("s", vec![event("a", "t")]).await;
    let mut consumer = Consumer::open(&stack, "s", "one", 10).await;
    let got = consumer.take(1, WAIT).await;
    settle(&stack, &got, &[("a", "x")], &[]).await;
    let mut dlq = stack.dlq().await;
    let id = dlq.list_dead_letters(list("s", "one", 0, "")).await.unwrap().into_inner().dead_letters[0].id.clone();

    assert_eq!(dlq.list_dead_letters(list("s", "nope", 0, "")).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(dlq.list_dead_letters(list("nope", "", 0, "")).await.unwrap_err().code(), Code::NotFound);
    let status = dlq.list_dead_letters(list("s", "one", 0, "garbage")).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("page_token"));
    assert_eq!(dlq.list_dead_letters(list("s", "one", -1, "")).await.unwrap_err().code(), Code::InvalidArgument);
    let get = |id: &str| GetDeadLetterRequest { stream: "s".into(), subscription: "one".into(), id: id.into() };
    assert_eq!(dlq.get_dead_letter(get("1-1")).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(dlq.get_dead_letter(get("x")).await.unwrap_err().code(), Code::InvalidArgument);
    let requeue = |ids: Vec<String>| RequeueDeadLettersRequest {
        stream: "s".into(),
        subscription: "one".into(),
        ids,
        all: false,
    };
    assert_eq!(dlq.requeue_dead_letters(requeue(vec![])).await.unwrap_err().code(), Code::InvalidArgument);
    let partial = dlq.requeue_dead_letters(requeue(vec!["1-1".into(), id.clone()])).await.unwrap().into_inner();
    assert_eq!((partial.requeued, partial.not_found_ids), (1, vec!["1-1".to_string()]));
    let delete = DeleteDeadLettersRequest { stream: "s".into(), subscription: "one".into(), ids: vec![id] };
    assert_eq!(dlq.delete_dead_letters(delete).await.unwrap().into_inner().deleted, 0, "already requeued");
}
