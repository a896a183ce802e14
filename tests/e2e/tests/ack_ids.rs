//! Ack ids are signed with the key the subscriber replicas share (`--ack-key-file`): an ack id
//! edited to name another subscription is invalid and settles nothing, and a key rotation
//! (`--ack-key-previous-file`) keeps the ack ids of deliveries in flight settling — also when
//! the key files of a running subscriber are replaced (they are reloaded).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use eventflow_broker::{
    Source,
    ack_id::{AckId, AckKeys},
};
use eventflow_e2e::{Consumer, Kind, Stack, event, eventually, write_ack_key};
use eventflow_proto::v1::{AcknowledgeRequest, RejectRequest, subscriber_service_client::SubscriberServiceClient};
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(10);

/// Acknowledges `ack_ids` and returns the (invalid, expired) ack ids of the reply.
async fn ack(client: &mut SubscriberServiceClient<Channel>, ack_ids: &[&str]) -> (Vec<String>, Vec<String>) {
    let ack_ids = ack_ids.iter().map(|s| (*s).to_string()).collect();
    let reply = client.acknowledge(AcknowledgeRequest { ack_ids }).await.unwrap().into_inner();
    (reply.invalid_ack_ids, reply.expired_ack_ids)
}

/// Pending deliveries of `subscription` on stream `s`.
async fn pending(stack: &Stack, subscription: &str) -> i64 {
    let stats = stack.stats("s").await;
    stats.subscriptions.iter().find(|s| s.subscription == subscription).map(|s| s.pending).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ack_id_edited_to_name_another_subscription_is_invalid_and_settles_nothing() {
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    stack.create_subscription("s", "sub-a", 60, 0).await;
    stack.create_subscription("s", "sub-b", 60, 0).await;
    stack.publish("s", vec![event("e1", "t")]).await;
    let a = Consumer::open(&stack, "s", "sub-a", 10).await.take(1, WAIT).await.remove(0).ack_id;
    let b = Consumer::open(&stack, "s", "sub-b", 10).await.take(1, WAIT).await.remove(0).ack_id;

    // The ack id of sub-a with its subscription edited to sub-b (same length, so the rest of
    // the payload still parses): what a client never subscribed to sub-b would try.
    let mut raw = URL_SAFE_NO_PAD.decode(&a).unwrap();
    let at = raw.windows(5).position(|w| w == b"sub-a").unwrap();
    raw[at..at + 5].copy_from_slice(b"sub-b");
    let edited = URL_SAFE_NO_PAD.encode(&raw);

    let mut client = stack.subscriber().await;
    assert_eq!(ack(&mut client, &[&edited]).await, (vec![edited.clone()], vec![]));
    let reject = RejectRequest { ack_ids: vec![edited.clone()], reason: "forged".into() };
    let reply = client.reject(reject).await.unwrap().into_inner();
    assert_eq!((reply.invalid_ack_ids, reply.expired_ack_ids), (vec![edited], vec![]));

    // sub-b's event is still pending and not dead-lettered; its own ack id settles it.
    assert_eq!(pending(&stack, "sub-b").await, 1);
    let stats = stack.stats("s").await;
    assert!(stats.subscriptions.iter().all(|s| s.dead_letter_depth == 0), "{stats:?}");
    assert_eq!(ack(&mut client, &[&b, &a]).await, (vec![], vec![]));
    assert_eq!((pending(&stack, "sub-a").await, pending(&stack, "sub-b").await), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotated_ack_key_still_settles_old_ack_ids_while_the_previous_key_is_configured() {
    let stack = Stack::start().await;
    let key_a = write_ack_key("rotation-a", &"a1".repeat(32));
    let key_b = write_ack_key("rotation-b", &"b2".repeat(32));
    stack.create_stream("s").await;
    stack.create_subscription("s", "sub", 60, 0).await;
    stack.publish("s", (0..4).map(|i| event(&format!("e{i}"), "t")).collect()).await;

    // Two replicas with key A, each delivering two events.
    let only_a = ["--ack-key-file", key_a.as_str()];
    let r1 = stack.start_service(Kind::Subscriber, &only_a).await;
    let r2 = stack.start_service(Kind::Subscriber, &only_a).await;
    let mut c1 = Consumer::open_at(SubscriberServiceClient::new(r1.channel().await), "s", "sub", 2).await;
    let from_r1: Vec<String> = c1.take(2, WAIT).await.into_iter().map(|e| e.ack_id).collect();
    let mut c2 = Consumer::open_at(SubscriberServiceClient::new(r2.channel().await), "s", "sub", 2).await;
    let from_r2: Vec<String> = c2.take(2, WAIT).await.into_iter().map(|e| e.ack_id).collect();

    // The same key: either replica settles the other's deliveries.
    let mut client2 = SubscriberServiceClient::new(r2.channel().await);
    assert_eq!(ack(&mut client2, &[&from_r1[0]]).await, (vec![], vec![]));

    // r2 restarted with key B, A still accepted as the previous key.
    drop((c2, client2));
    r2.stop().await;
    let rotating = ["--ack-key-file", key_b.as_str(), "--ack-key-previous-file", key_a.as_str()];
    let r2 = stack.start_service(Kind::Subscriber, &rotating).await;
    let mut client2 = SubscriberServiceClient::new(r2.channel().await);
    assert_eq!(ack(&mut client2, &[&from_r2[0], &from_r1[1]]).await, (vec![], vec![]));

    // A replica with only key B refuses them, and settles nothing.
    let r3 = stack.start_service(Kind::Subscriber, &["--ack-key-file", key_b.as_str()]).await;
    let mut client3 = SubscriberServiceClient::new(r3.channel().await);
    assert_eq!(ack(&mut client3, &[&from_r2[1]]).await, (vec![from_r2[1].clone()], vec![]));
    assert_eq!(pending(&stack, "sub").await, 1);
    assert_eq!(ack(&mut client2, &[&from_r2[1]]).await, (vec![], vec![]));
    assert_eq!(pending(&stack, "sub").await, 0);

    // A key shorter than 32 bytes is refused at start with one clear line.
    let short = write_ack_key("short", "too-short");
    let refused = stack.run_service_to_exit(Kind::Subscriber, &["--ack-key-file", short.as_str()]).await;
    let message = refused.unwrap_err().to_string();
    assert!(message.contains("ack_key_file") && message.contains("32 bytes"), "{message}");
    drop(c1);
    for replica in [r1, r2, r3] {
        replica.stop().await;
    }
}

/// Replaces `path` with `contents` by a rename, as a Secret update or a careful operator does.
fn replace_file(path: &str, contents: &str) {
    let tmp = format!("{path}.tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// An ack id of stream `s`, subscription `sub` for an entry that is not pending, signed with
/// `key`: the subscriber answers "expired" if it accepts the key and "invalid" if not, and
/// settles nothing either way — a probe of which keys are in force.
fn probe(key: &str) -> String {
    let keys = AckKeys::new(key.as_bytes(), None).unwrap();
    let id = AckId {
        stream: "s".into(),
        subscription: "sub".into(),
        source: Source::Stream,
        entry_id: "1-1".into(),
        consumer: "c".into(),
        attempt: 1,
        delivered_ms: 1,
        traceparent: None,
    };
    id.encode(&keys)
}

/// Waits until the subscriber accepts (`true`) or refuses the key `key`.
async fn until_key_accepted(client: &SubscriberServiceClient<Channel>, key: &str, accepted: bool) {
    let probe = probe(key);
    eventually("the ack key files reloaded", WAIT, || {
        let (mut client, probe) = (client.clone(), probe.clone());
        async move { (ack(&mut client, &[&probe]).await.0.is_empty() == accepted).then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replaced_ack_key_files_are_reloaded_by_a_running_subscriber() {
    let stack = Stack::start().await;
    let (key_a, key_b) = ("a1".repeat(32), "b2".repeat(32));
    let current = write_ack_key("reload-current", &key_a);
    // Configured, absent until the rotation: no previous key.
    let previous = format!("{current}-previous");
    let _ = std::fs::remove_file(&previous);
    stack.create_stream("s").await;
    stack.create_subscription("s", "sub", 60, 0).await;
    stack.publish("s", (0..2).map(|i| event(&format!("e{i}"), "t")).collect()).await;

    let args = ["--ack-key-file", current.as_str(), "--ack-key-previous-file", previous.as_str()];
    let subscriber = stack.start_service(Kind::Subscriber, &args).await;
    let mut client = SubscriberServiceClient::new(subscriber.channel().await);
    let mut consumer = Consumer::open_at(client.clone(), "s", "sub", 3).await;
    let signed_a: Vec<String> = consumer.take(2, WAIT).await.into_iter().map(|e| e.ack_id).collect();
    until_key_accepted(&client, &key_b, false).await;

    // Rotation step 1 without a restart: B current, A previous.
    replace_file(&previous, &key_a);
    replace_file(&current, &key_b);
    until_key_accepted(&client, &key_b, true).await;
    stack.publish("s", vec![event("e-new", "t")]).await;
    let signed_b = consumer.take(1, WAIT).await.remove(0).ack_id;
    let only_b = AckKeys::new(key_b.as_bytes(), None).unwrap();
    assert!(AckId::decode(&signed_b, &only_b).is_some(), "a new delivery's ack id is signed with B");
    assert_eq!(ack(&mut client, &[&signed_b, &signed_a[0]]).await, (vec![], vec![]), "B and the previous A settle");

    // Step 3: the previous key file removed; ack ids signed with A are invalid and settle nothing.
    std::fs::remove_file(&previous).unwrap();
    until_key_accepted(&client, &key_a, false).await;
    assert_eq!(ack(&mut client, &[&signed_a[1]]).await, (vec![signed_a[1].clone()], vec![]));
    assert_eq!(pending(&stack, "sub").await, 1, "A's last delivery is still pending");
    drop(consumer);
    subscriber.stop().await;
    let _ = std::fs::remove_file(&current);
}
