//! The bench environment: one redis-server, the three services in-process, connected clients,
//! and helpers to create streams and subscriptions and to build events.

use eventflow_e2e::{Kind, RedisServer, Running, start, unique_prefix};
use eventflow_proto::{
    prost_types,
    v1::{
        CloudEvent, CreateStreamRequest, CreateSubscriptionRequest, Position, PublishRequest, Stream, Subscription,
        admin_service_client::AdminServiceClient, cloud_event, position,
        publisher_service_client::PublisherServiceClient,
    },
};
use redis::aio::MultiplexedConnection;
use tonic::transport::Channel;

use crate::Args;

/// What a measured eventflow run talks to: connected channels to the publisher and the
/// subscriber, and the redis-server behind them (whose cost the run's probe reads). The
/// in-process services of [`Env`] and the release binaries of the scale figures both give one.
#[derive(Clone)]
pub struct Services {
    /// A connected channel to the publisher, shared by all publishing callers (HTTP/2).
    pub publisher: Channel,
    /// A connected channel to the subscriber.
    pub subscriber: Channel,
    /// The redis-server the services use.
    pub redis_url: String,
}

/// Everything one bench run uses.
pub struct Env {
    /// The one redis-server every figure is measured against.
    pub redis: RedisServer,
    /// Key prefix of the services (baselines use keys outside it).
    pub prefix: String,
    /// The publisher service.
    pub publisher: Running,
    /// The subscriber service.
    pub subscriber: Running,
    /// The admin service.
    pub admin: Running,
    /// Channels to the publisher and subscriber, and the redis-server's URL.
    pub services: Services,
    /// Persistence flags redis-server was started with.
    aof: String,
    /// Whether streams are created with the default dedup window (else with dedup off).
    dedup: bool,
}

impl Env {
    /// Starts redis-server with the chosen persistence and the services over it.
    pub async fn start(args: &Args) -> Self {
        let persistence: &[&str] = match args.aof.as_str() {
            "no" => &["--appendonly", "no"],
            // No automatic AOF rewrite: a timed run's own writes could set one off in its
            // middle; each run's probe rewrites before it instead (`measure::Probe::begin`).
            _ => &["--appendonly", "yes", "--appendfsync", "everysec", "--auto-aof-rewrite-percentage", "0"],
        };
        let redis = RedisServer::start_with(persistence);
        let prefix = unique_prefix();
        let url = redis.url();
        let publisher = start(Kind::Publisher, &url, &prefix, &[]).await;
        let subscriber = start(Kind::Subscriber, &url, &prefix, &[]).await;
        // Allows the push figures' endpoint on loopback.
        let admin = start(Kind::Admin, &url, &prefix, &["--push-allow-private"]).await;
        let services =
            Services { publisher: publisher.channel().await, subscriber: subscriber.channel().await, redis_url: url };
        let env =
            Self { redis, prefix, publisher, subscriber, admin, services, aof: args.aof.clone(), dedup: args.dedup };
        env.prime().await;
        env
    }

    /// Publishes one event alone, so Redis has the publish script loaded before concurrent
    /// publishers start: a pipeline that meets NOSCRIPT while another connection loads the
    /// script is partly applied, and the publisher's retry of the whole pipeline then reports
    /// the applied events as duplicates.
    async fn prime(&self) {
        self.create_stream("prime").await;
        prime(&self.services).await;
    }

    /// One line on what is measured against what.
    pub async fn describe(&self) -> String {
        let mut conn = self.redis_conn().await;
        let info: String = redis::cmd("INFO").arg("server").query_async(&mut conn).await.unwrap();
        let version = info.lines().find_map(|l| l.strip_prefix("redis_version:")).unwrap_or("?").trim().to_string();
        let config: Vec<String> =
            redis::cmd("CONFIG").arg("GET").arg("append*").query_async(&mut conn).await.unwrap_or_default();
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        let persistence =
            if self.aof == "no" { "AOF off" } else { "AOF on, appendfsync everysec, rewritten between the runs" };
        let dedup = if self.dedup { "default 10 min dedup window" } else { "dedup disabled" };
        format!(
            "setup: redis-server {version} on {} ({persistence}; CONFIG {}), eventflow streams with {dedup}, \
             publisher/subscriber/admin in-process, clients and services share one Tokio runtime on {cpus} CPUs",
            self.redis.url(),
            config.join(" ")
        )
    }

    /// A new multiplexed redis-rs connection to the bench's redis-server.
    pub async fn redis_conn(&self) -> MultiplexedConnection {
        crate::measure::redis_conn(&self.services.redis_url).await
    }

    /// The Redis key of eventflow stream `stream`.
    pub fn stream_key(&self, stream: &str) -> String {
        stream_key(&self.prefix, stream)
    }

    /// A Redis key for a baseline, outside the services' key space.
    pub fn direct_key(&self, name: &str) -> String {
        format!("{}-direct:{name}", self.prefix)
    }

    /// Creates an eventflow stream with default settings (no retention limit, 10 min dedup), or
    /// with dedup disabled when so configured.
    pub async fn create_stream(&self, name: &str) {
        create_stream(self.admin.channel().await, name, self.dedup).await;
    }

    /// Creates a subscription with default settings, starting at the earliest event.
    pub async fn create_subscription(&self, stream: &str, name: &str) {
        create_subscription(self.admin.channel().await, stream, name, true).await;
    }

    /// Stops the services (redis-server stops when `self.redis` drops).
    pub async fn stop(self) {
        self.publisher.stop().await;
        self.subscriber.stop().await;
        self.admin.stop().await;
        drop(self.redis);
    }
}

/// The Redis key of eventflow stream `stream` under key prefix `prefix`.
pub fn stream_key(prefix: &str, stream: &str) -> String {
    format!("{prefix}:{{{stream}}}")
}

/// Publishes one event alone to the existing stream `prime` (see [`Env::prime`]).
pub async fn prime(services: &Services) {
    let events = vec![event("prime".into(), payload(16))];
    let mut client = PublisherServiceClient::new(services.publisher.clone());
    client.publish(PublishRequest { stream: "prime".into(), events }).await.unwrap();
}

/// Creates eventflow stream `name` through the admin service at `admin`: default settings (no
/// retention limit, 10 min dedup window), or dedup disabled when `dedup` is false.
pub async fn create_stream(admin: Channel, name: &str, dedup: bool) {
    create_partitioned_stream(admin, name, dedup, 1).await;
}

/// Creates stream `name` of `partitions` partitions (dedup window default, or 0 without `dedup`).
pub async fn create_partitioned_stream(admin: Channel, name: &str, dedup: bool, partitions: i32) {
    let dedup_window = (!dedup).then_some(prost_types::Duration { seconds: 0, nanos: 0 });
    let stream = Stream { name: name.into(), dedup_window, partitions, ..Default::default() };
    AdminServiceClient::new(admin).create_stream(CreateStreamRequest { stream: Some(stream) }).await.unwrap();
}

/// Creates subscription `name` of `stream` with default settings, starting at the earliest
/// event (`earliest`) or at the latest.
pub async fn create_subscription(admin: Channel, stream: &str, name: &str, earliest: bool) {
    let subscription = Subscription { stream: stream.into(), name: name.into(), ..Default::default() };
    let position = if earliest { position::Position::Earliest(true) } else { position::Position::Latest(true) };
    let start_position = Some(Position { position: Some(position) });
    AdminServiceClient::new(admin)
        .create_subscription(CreateSubscriptionRequest { subscription: Some(subscription), start_position })
        .await
        .unwrap();
}

/// A bench event: unique id, fixed source and type, `data` as binary data.
pub fn event(id: String, data: Vec<u8>) -> CloudEvent {
    CloudEvent {
        id,
        source: "/bench".into(),
        spec_version: "1.0".into(),
        r#type: "bench.event".into(),
        data: Some(cloud_event::Data::BinaryData(data)),
        ..Default::default()
    }
}

/// Publishes `total` events (ids `<tag>-<i>`, `event_bytes` of data) to `stream` in requests of
/// `batch_size`, `batch_concurrency` requests in flight, as fast as the publisher takes them.
pub async fn publish_all(env: &Env, args: &Args, stream: &str, tag: &str, total: usize) {
    let data = payload(args.event_bytes);
    let mut sends = tokio::task::JoinSet::new();
    for first in (0..total).step_by(args.batch_size.max(1)) {
        while sends.len() >= args.batch_concurrency.max(1) {
            sends.join_next().await;
        }
        let last = (first + args.batch_size.max(1)).min(total);
        let events = (first..last).map(|i| event(format!("{tag}-{i}"), data.clone())).collect();
        let mut client = PublisherServiceClient::new(env.services.publisher.clone());
        let stream = stream.to_string();
        sends.spawn(async move {
            client.publish(PublishRequest { stream, events }).await.expect("publish");
        });
    }
    sends.join_all().await;
}

/// `n` bytes of filler data.
pub fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + (i % 26) as u8).collect()
}
