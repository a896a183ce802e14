//! PublishStream against the real services: answers in request order with Publish's per-event
//! results, events of one call stored in the order sent (also across requests), a refused
//! request answered with its status while the call goes on, a client that sends far more than
//! the window without reading, and shutdown answering what is in flight before UNAVAILABLE.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use eventflow_e2e::{Consumer, Kind, Stack, event};
use eventflow_proto::v1::{
    PublishStreamRequest, PublishStreamResponse, publisher_service_client::PublisherServiceClient,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};

const WAIT: Duration = Duration::from_secs(20);

/// Opens a PublishStream call on `publisher`: the sender of its requests and its answers.
async fn open(
    publisher: &mut PublisherServiceClient<tonic::transport::Channel>,
) -> (mpsc::Sender<PublishStreamRequest>, Streaming<PublishStreamResponse>) {
    let (tx, rx) = mpsc::channel(1024);
    let answers = publisher.publish_stream(ReceiverStream::new(rx)).await.unwrap().into_inner();
    (tx, answers)
}

/// The next answer, within [`WAIT`].
async fn answer(answers: &mut Streaming<PublishStreamResponse>) -> PublishStreamResponse {
    tokio::time::timeout(WAIT, answers.message()).await.expect("an answer in time").unwrap().expect("an answer")
}

/// Request `id`: `n` events named `<id>-<i>` for `stream`.
fn request(stream: &str, id: u64, n: usize) -> PublishStreamRequest {
    let events = (0..n).map(|i| event(&format!("{id}-{i}"), "t")).collect();
    PublishStreamRequest { stream: stream.into(), events, request_id: id }
}

/// `<ms>-<seq>` as a pair, for ordering entry ids.
fn entry(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap();
    (ms.parse().unwrap(), seq.parse().unwrap())
}

#[tokio::test]
async fn answers_come_in_order_and_events_are_stored_in_the_order_sent() {
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    stack.create_subscription("s", "sub", 60, 0).await;
    let mut publisher = stack.publisher().await;
    let (tx, mut answers) = open(&mut publisher).await;
    // 200 requests of 10 events, sent without waiting for answers (well past the window).
    for id in 0..200 {
        tx.send(request("s", id, 10)).await.unwrap();
    }
    let mut entries = Vec::new();
    for id in 0..200 {
        let answer = answer(&mut answers).await;
        assert_eq!(answer.request_id, id, "answers in request order");
        assert!(answer.error.is_none(), "{answer:?}");
        assert_eq!(answer.results.len(), 10);
        for (i, result) in answer.results.iter().enumerate() {
            assert_eq!(result.event_id, format!("{id}-{i}"));
            assert!(result.error.is_none() && !result.duplicate, "{result:?}");
            entries.push(entry(&result.entry_id));
        }
    }
    assert!(entries.windows(2).all(|w| w[0] < w[1]), "entry ids increase in the order the events were sent");

    // Per-event results as Publish gives them: a duplicate, an invalid event beside a good one.
    let mut invalid = event("bad", "t");
    invalid.source.clear();
    let mixed = PublishStreamRequest {
        stream: "s".into(),
        events: vec![event("0-0", "t"), invalid, event("new", "t")],
        request_id: 900,
    };
    tx.send(mixed).await.unwrap();
    let answer = answer(&mut answers).await;
    assert_eq!(answer.request_id, 900);
    assert!(answer.results[0].duplicate, "{:?}", answer.results[0]);
    let error = answer.results[1].error.as_ref().expect("the invalid event has an error");
    assert_eq!((Code::from(error.code), error.field.as_str()), (Code::InvalidArgument, "events[1].source"));
    assert!(answer.results[2].error.is_none() && !answer.results[2].entry_id.is_empty());

    drop(tx);
    assert!(answers.message().await.unwrap().is_none(), "the call ends after the client half-closes");

    // A subscriber sees them in the order sent.
    let mut consumer = Consumer::open(&stack, "s", "sub", 10_000).await;
    let got = consumer.take(2001, WAIT).await;
    let ids: Vec<String> = got.iter().map(|e| e.event.as_ref().unwrap().id.clone()).collect();
    let mut sent: Vec<String> = (0..200).flat_map(|id| (0..10).map(move |i| format!("{id}-{i}"))).collect();
    sent.push("new".into());
    assert_eq!(ids, sent);
}

#[tokio::test]
async fn a_refused_request_is_answered_with_its_status_and_the_call_goes_on() {
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    let mut publisher = stack.publisher().await;
    let (tx, mut answers) = open(&mut publisher).await;
    tx.send(request("missing", 1, 2)).await.unwrap();
    tx.send(request("bad name!", 2, 1)).await.unwrap();
    tx.send(request("s", 3, 0)).await.unwrap();
    tx.send(request("s", 4, 1001)).await.unwrap();
    tx.send(request("s", 5, 3)).await.unwrap();
    let refused = |answer: PublishStreamResponse| {
        assert!(answer.results.is_empty(), "{answer:?}");
        let error = answer.error.unwrap();
        (answer.request_id, Code::from(error.code), error.field)
    };
    assert_eq!(refused(answer(&mut answers).await), (1, Code::NotFound, String::new()));
    assert_eq!(refused(answer(&mut answers).await), (2, Code::InvalidArgument, "stream".into()));
    assert_eq!(refused(answer(&mut answers).await), (3, Code::InvalidArgument, "events".into()));
    assert_eq!(refused(answer(&mut answers).await), (4, Code::InvalidArgument, "events".into()));
    let good = answer(&mut answers).await;
    assert_eq!((good.request_id, good.results.len()), (5, 3));
    assert!(good.error.is_none() && good.results.iter().all(|r| !r.entry_id.is_empty()), "{good:?}");
}

#[tokio::test]
async fn shutdown_answers_what_is_in_flight_then_ends_the_call_unavailable() {
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    // A publisher of its own, to stop it while the call is open.
    let own = stack.start_service(Kind::Publisher, &[]).await;
    let mut publisher = PublisherServiceClient::new(own.channel().await);
    let (tx, mut answers) = open(&mut publisher).await;
    tx.send(request("s", 1, 5)).await.unwrap();
    assert_eq!(answer(&mut answers).await.results.len(), 5);
    own.shutdown.cancel();
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match answers.message().await {
                Ok(Some(answer)) => assert!(answer.error.is_none(), "{answer:?}"),
                Ok(None) => panic!("the call should end with UNAVAILABLE, not OK"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("the call ends at shutdown");
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    own.handle.await.unwrap();
}
