//! The services on Redis Cluster (`--redis-cluster-nodes`, a local 3-master cluster from
//! libs/testkit): streams on different slots are created through the admin service, published
//! to in one group commit, delivered by Subscribe and acknowledged in one call; stats then show
//! nothing pending. The broker tests (libs/broker/tests/cluster.rs) cover the rest of the
//! broker on a cluster; this checks the services wire it up from their settings.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use eventflow_e2e::{Consumer, Kind, event, start, unique_prefix};
use eventflow_proto::v1::{
    AcknowledgeRequest, CreateStreamRequest, CreateSubscriptionRequest, GetStreamStatsRequest, Position,
    PublishRequest, Stream, Subscription, admin_service_client::AdminServiceClient, position,
    publisher_service_client::PublisherServiceClient, subscriber_service_client::SubscriberServiceClient,
};
use eventflow_testkit::cluster::RedisCluster;

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
