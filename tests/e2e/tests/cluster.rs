//! The services on Redis Cluster (`--redis-cluster-nodes`, a local 3-master cluster from
//! libs/testkit): streams on different slots are created through the admin service, published
//! to in one group commit, delivered by Subscribe and acknowledged in one call; stats then show
//! nothing pending; and a failover of a stream's master under publish and subscribe load loses
//! no confirmed event. The broker tests (libs/broker/tests/cluster.rs) cover the rest of the
//! broker on a cluster, and `make test` runs the e2e suite on a cluster too (see README).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::BTreeSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use eventflow_e2e::{Backend, Consumer, Kind, Stack, event, eventually, start, unique_prefix};
use eventflow_proto::v1::{
    AcknowledgeRequest, CreateStreamRequest, CreateSubscriptionRequest, GetStreamStatsRequest, Position,
    PublishRequest, Stream, SubscribeRequest, Subscription, admin_service_client::AdminServiceClient, position,
    publisher_service_client::PublisherServiceClient, subscriber_service_client::SubscriberServiceClient,
};
use eventflow_runtime::CancellationToken;
use eventflow_testkit::cluster::RedisCluster;
use tonic::{Code, Status, transport::Channel};

const WAIT: Duration = Duration::from_secs(10);

/// Streams whose hash tags fall on different slots.
const STREAMS: [&str; 3] = ["alpha", "bravo", "charlie"];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publish_subscribe_and_ack_through_the_services_on_a_cluster() {
    let cluster = RedisCluster::start(3, 0);
    let nodes = cluster.nodes_setting();
    let prefix = unique_prefix();
    let args = ["--redis-cluster-nodes", nodes.as_str()];
    // Each waits for its health to be SERVING: readiness is checked on every master.
    let admin = start(Kind::Admin, "", &prefix, &args).await;
    let publisher = start(Kind::Publisher, "", &prefix, &args).await;
    let subscriber = start(Kind::Subscriber, "", &prefix, &args).await;

    let mut admin_client = AdminServiceClient::new(admin.channel().await);
    for stream in STREAMS {
        let request = CreateStreamRequest { stream: Some(Stream { name: stream.into(), ..Default::default() }) };
        admin_client.create_stream(request).await.unwrap();
        let subscription = Subscription { stream: stream.into(), name: "sub".into(), ..Default::default() };
        let start_position = Some(Position { position: Some(position::Position::Earliest(true)) });
        let request = CreateSubscriptionRequest { subscription: Some(subscription), start_position };
        admin_client.create_subscription(request).await.unwrap();
    }

    // Concurrent publishes to every stream: the publisher's group commit spans slots.
    let mut publishes = tokio::task::JoinSet::new();
    for stream in STREAMS {
        let mut client = PublisherServiceClient::new(publisher.channel().await);
        publishes.spawn(async move {
            let events = (1..=3).map(|i| event(&format!("{stream}-{i}"), "t")).collect();
            client.publish(PublishRequest { stream: stream.into(), events }).await.unwrap().into_inner().results
        });
    }
    for results in publishes.join_all().await {
        assert_eq!(results.len(), 3);
        assert!(results.iter().all(|r| r.error.is_none() && !r.duplicate), "{results:?}");
    }

    let mut ack_ids = Vec::new();
    for stream in STREAMS {
        let client = SubscriberServiceClient::new(subscriber.channel().await);
        let mut consumer = Consumer::open_at(client, stream, "sub", 10).await;
        let got = consumer.take(3, WAIT).await;
        let ids: Vec<String> = got.iter().map(|e| e.event.as_ref().unwrap().id.clone()).collect();
        assert_eq!(ids, [1, 2, 3].map(|i| format!("{stream}-{i}")));
        ack_ids.extend(got.iter().map(|e| e.ack_id.clone()));
    }
    let mut subscriber_client = SubscriberServiceClient::new(subscriber.channel().await);
    let reply = subscriber_client.acknowledge(AcknowledgeRequest { ack_ids }).await.unwrap().into_inner();
    assert!(reply.invalid_ack_ids.is_empty() && reply.expired_ack_ids.is_empty(), "{reply:?}");

    for stream in STREAMS {
        let request = GetStreamStatsRequest { stream: stream.into() };
        let stats = admin_client.get_stream_stats(request).await.unwrap().into_inner().stats.unwrap();
        assert_eq!(stats.length, 3, "{stats:?}");
        assert_eq!((stats.subscriptions[0].pending, stats.subscriptions[0].lag), (0, 0), "{stats:?}");
    }
    for running in [admin, publisher, subscriber] {
        running.stop().await;
    }
}

/// Events per Publish call in the failover test.
const BATCH: usize = 10;

/// A replica of the stream's master is promoted (`CLUSTER FAILOVER`) while a publisher and a
/// subscriber run at full speed: calls may fail UNAVAILABLE for a moment (and are retried,
/// publishes with the same event ids), nothing else; every event whose publish was confirmed
/// is delivered afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failover_under_load_loses_nothing_acknowledged() {
    let stack = Stack::start_on(Backend::Cluster(RedisCluster::start(3, 1)), &[]).await;
    stack.create_stream("orders").await;
    stack.create_subscription("orders", "sub", 2, 0).await;
    let load = Load::default();
    let publishing = tokio::spawn(publish_until_stopped(stack.publisher().await, load.clone()));
    let consuming = tokio::spawn(consume_until_stopped(stack.subscriber().await, load.clone()));

    load.wait_for_confirmed(200).await;
    let Backend::Cluster(cluster) = &stack.redis else { unreachable!("started on a cluster") };
    let replica = cluster.replica_of(cluster.owner_of(&stack.keys().stream("orders")));
    tokio::task::block_in_place(|| cluster.failover(replica));
    let after = load.confirmed.lock().unwrap().len() + 200;
    load.wait_for_confirmed(after).await;
    load.stop.cancel();
    publishing.await.unwrap();

    let confirmed = load.confirmed.lock().unwrap().clone();
    eventually("every confirmed event delivered", Duration::from_secs(30), || {
        let received = load.received.lock().unwrap();
        let missing = confirmed.difference(&received).count();
        async move { (missing == 0).then_some(()) }
    })
    .await;
    consuming.abort();
    println!("unavailable answers during the failover: {}", load.unavailable.load(Ordering::Relaxed));
}

/// What the failover test's publisher and consumer share.
#[derive(Clone, Default)]
struct Load {
    /// Ids of events whose publish the service confirmed.
    confirmed: Arc<Mutex<BTreeSet<String>>>,
    /// Ids of events delivered at least once.
    received: Arc<Mutex<BTreeSet<String>>>,
    /// UNAVAILABLE answers seen (any other error fails the test).
    unavailable: Arc<AtomicUsize>,
    /// Ends the publisher.
    stop: CancellationToken,
}

impl Load {
    async fn wait_for_confirmed(&self, n: usize) {
        eventually("publishes confirmed", Duration::from_secs(60), || {
            let done = self.confirmed.lock().unwrap().len() >= n;
            async move { done.then_some(()) }
        })
        .await;
    }

    /// Counts `status` if it is UNAVAILABLE, fails the test otherwise.
    fn retryable(&self, status: &Status, what: &str) {
        assert_eq!(status.code(), Code::Unavailable, "{what}: {status:?}");
        self.unavailable.fetch_add(1, Ordering::Relaxed);
    }
}

/// Publishes batches with fresh ids until stopped; a batch answered UNAVAILABLE is sent again
/// with the same ids (a stored one comes back a duplicate: still confirmed).
async fn publish_until_stopped(mut client: PublisherServiceClient<Channel>, load: Load) {
    let mut next = 0;
    while !load.stop.is_cancelled() {
        let events: Vec<_> = (next..next + BATCH).map(|i| event(&format!("e{i}"), "t")).collect();
        next += BATCH;
        loop {
            match client.publish(PublishRequest { stream: "orders".into(), events: events.clone() }).await {
                Ok(reply) => {
                    let results = reply.into_inner().results;
                    assert!(results.iter().all(|r| r.error.is_none()), "{results:?}");
                    load.confirmed.lock().unwrap().extend(events.iter().map(|e| e.id.clone()));
                    break;
                }
                Err(status) => load.retryable(&status, "publish"),
            }
        }
    }
}

/// Subscribes and acknowledges until aborted, reopening the call when it ends UNAVAILABLE; an
/// acknowledgement answered UNAVAILABLE is left to the ack deadline (the event comes again).
async fn consume_until_stopped(mut client: SubscriberServiceClient<Channel>, load: Load) {
    loop {
        let request = SubscribeRequest {
            stream: "orders".into(),
            subscription: "sub".into(),
            max_outstanding_messages: 200,
            ..Default::default()
        };
        let mut stream = match client.subscribe(request).await {
            Ok(reply) => reply.into_inner(),
            Err(status) => {
                load.retryable(&status, "subscribe");
                continue;
            }
        };
        loop {
            match stream.message().await {
                Ok(Some(batch)) => {
                    let ids = batch.events.iter().map(|e| e.event.as_ref().unwrap().id.clone());
                    load.received.lock().unwrap().extend(ids);
                    let ack_ids = batch.events.into_iter().map(|e| e.ack_id).collect();
                    if let Err(status) = client.acknowledge(AcknowledgeRequest { ack_ids }).await {
                        load.retryable(&status, "acknowledge");
                    }
                }
                Ok(None) => break,
                Err(status) => {
                    load.retryable(&status, "the subscribe stream");
                    break;
                }
            }
        }
    }
}
