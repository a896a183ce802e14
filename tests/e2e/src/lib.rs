//! End-to-end harness: the real publisher, subscriber and admin services, started in-process on
//! `127.0.0.1:0` against a real redis-server (see `eventflow-testkit`), each with its own
//! shutdown token, and typed gRPC clients for them.
#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)]

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use clap::Parser;
use eventflow_proto::v1::{
    CloudEvent, CreateStreamRequest, CreateSubscriptionRequest, Position, PublishRequest, PublishResult, Stream,
    Subscription, admin_service_client::AdminServiceClient, dead_letter_service_client::DeadLetterServiceClient,
    position, publisher_service_client::PublisherServiceClient, subscriber_service_client::SubscriberServiceClient,
};
use eventflow_runtime::{
    CancellationToken,
    serve::{Listeners, ServeError},
};
use tokio::{net::TcpListener, task::JoinHandle};
use tonic::transport::{Channel, ClientTlsConfig};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

pub use eventflow_testkit::{RedisServer, cluster::RedisCluster, unique_prefix, wait_until};

pub mod certs;
pub mod otlp;
pub mod webhook;

/// One running service.
#[derive(Debug)]
pub struct Running {
    /// Its gRPC address.
    pub addr: SocketAddr,
    /// Its `/metrics` address.
    pub metrics_addr: SocketAddr,
    /// Cancelling it shuts the service down gracefully.
    pub shutdown: CancellationToken,
    /// Resolves when the service stopped.
    pub handle: JoinHandle<()>,
    /// How clients reach it over TLS (`None`: plain TCP), so [`Running::channel`] and the
    /// readiness wait work for TLS services too.
    pub tls: Option<ClientTlsConfig>,
}

impl Running {
    /// A channel to it.
    pub async fn channel(&self) -> Channel {
        match &self.tls {
            None => Channel::from_shared(format!("http://{}", self.addr)).unwrap().connect().await.unwrap(),
            Some(tls) => Channel::from_shared(format!("https://{}", self.addr))
                .unwrap()
                .tls_config(tls.clone())
                .unwrap()
                .connect()
                .await
                .unwrap(),
        }
    }

    /// Stops it and waits until it stopped.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.unwrap();
    }
}

/// Which service to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// eventflow-publisher.
    Publisher,
    /// eventflow-subscriber.
    Subscriber,
    /// eventflow-admin.
    Admin,
    /// eventflow-dlq.
    Dlq,
    /// eventflow-pusher.
    Pusher,
    /// eventflow-archive (needs `--database-url` in the args).
    Archive,
    /// eventflow-relay (its args must name `--database-url`).
    Relay,
}

impl Kind {
    /// The gRPC service name health reports.
    pub fn service_name(self) -> &'static str {
        match self {
            Kind::Publisher => eventflow_publisher::SERVICE_NAME,
            Kind::Subscriber => eventflow_subscriber::SERVICE_NAME,
            Kind::Admin => eventflow_admin::SERVICE_NAME,
            Kind::Dlq => eventflow_dlq::SERVICE_NAME,
            Kind::Pusher => eventflow_pusher::SERVICE_NAME,
            Kind::Archive => eventflow_archive_service::SERVICE_NAME,
            Kind::Relay => eventflow_relay::SERVICE_NAME,
        }
    }
}

/// The command line of one service: connection flags, `args`, and for subscribers without
/// `--ack-key-file` the ack key file every subscriber of this test process shares, so ack ids
/// settle on any replica as in a deployment that configures one. With
/// `--redis-cluster-nodes` in `args`, `redis_url` is left out (the two conflict).
fn argv<'a>(kind: Kind, redis_url: &'a str, prefix: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut argv = vec!["svc", "--key-prefix", prefix];
    if !args.contains(&"--redis-cluster-nodes") {
        argv.extend(["--redis-url", redis_url]);
    }
    argv.extend_from_slice(args);
    if kind == Kind::Subscriber && !args.contains(&"--ack-key-file") {
        argv.extend(["--ack-key-file", shared_ack_key_file()]);
    }
    argv
}

/// The path of the ack key file subscribers of this test process share (written once).
pub fn shared_ack_key_file() -> &'static str {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| write_ack_key("shared", &"5e".repeat(32)))
}

/// Writes an ack key file named after `name` (unique to this test process) holding `key`, and
/// returns its path.
pub fn write_ack_key(name: &str, key: &str) -> String {
    let path = std::env::temp_dir().join(format!("eventflow-e2e-ack-key-{}-{name}", std::process::id()));
    std::fs::write(&path, format!("{key}\n")).unwrap();
    path.to_str().unwrap().to_string()
}

/// Starts one service with the real CLI parser (`args` are extra flags) on free ports.
pub async fn start(kind: Kind, redis_url: &str, prefix: &str, args: &[&str]) -> Running {
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (addr, metrics_addr) = (grpc.local_addr().unwrap(), metrics.local_addr().unwrap());
    let listeners = Listeners { grpc, metrics };
    let shutdown = CancellationToken::new();
    let argv = argv(kind, redis_url, prefix, args);
    let token = shutdown.clone();
    let handle = match kind {
        Kind::Publisher => {
            let config = eventflow_publisher::Config::try_parse_from(argv).unwrap();
            tokio::spawn(async move { eventflow_publisher::run(config, listeners, token).await.unwrap() })
        }
        Kind::Subscriber => {
            let config = eventflow_subscriber::Config::try_parse_from(argv).unwrap();
            tokio::spawn(async move { eventflow_subscriber::run(config, listeners, token).await.unwrap() })
        }
        Kind::Admin => {
            let config = eventflow_admin::Config::try_parse_from(argv).unwrap();
            tokio::spawn(async move { eventflow_admin::run(config, listeners, token).await.unwrap() })
        }
        Kind::Dlq => {
            let config = eventflow_dlq::Config::try_parse_from(argv).unwrap();
            tokio::spawn(async move { eventflow_dlq::run(config, listeners, token).await.unwrap() })
        }
        Kind::Pusher => {
            let config = eventflow_pusher::Config::try_parse_from(argv).unwrap();
            tokio::spawn(async move { eventflow_pusher::run(config, listeners, token).await.unwrap() })
        }
        Kind::Archive => {
            let config = eventflow_archive_service::Config::try_parse_from(argv).unwrap();
            tokio::spawn(async move { eventflow_archive_service::run(config, listeners, token).await.unwrap() })
        }
        Kind::Relay => {
            let config = eventflow_relay::Config::try_parse_from(argv).unwrap();
            tokio::spawn(async move { eventflow_relay::run(config, listeners, token).await.unwrap() })
        }
    };
    let running = Running { addr, metrics_addr, shutdown, handle, tls: None };
    wait_for_health(&running, kind.service_name(), ServingStatus::Serving).await;
    running
}

/// Waits (10 s at most) until the service's health for `service` is `want`.
pub async fn wait_for_health(running: &Running, service: &str, want: ServingStatus) {
    let mut client = HealthClient::new(running.channel().await);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let request = HealthCheckRequest { service: service.into() };
        if let Ok(reply) = client.check(request).await
            && reply.into_inner().status == want as i32
        {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{service} never became {want:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The environment variable that runs every [`Stack::start`]/[`Stack::start_with`] on a local
/// 3-master Redis Cluster instead of one redis-server (`cluster`), so the e2e suite checks
/// that what works on one Redis works on a cluster (`make test` runs both; see docs/operations.md).
pub const BACKEND_ENV: &str = "EVENTFLOW_E2E_REDIS";

/// What the services of a [`Stack`] run on.
#[derive(Debug)]
pub enum Backend {
    /// One redis-server.
    Single(RedisServer),
    /// A local Redis Cluster (three masters), the services in cluster mode.
    Cluster(RedisCluster),
}

impl From<RedisServer> for Backend {
    fn from(redis: RedisServer) -> Self {
        Self::Single(redis)
    }
}

impl Backend {
    /// The backend [`BACKEND_ENV`] asks for.
    fn from_env() -> Self {
        match std::env::var(BACKEND_ENV).as_deref() {
            Ok("cluster") => Self::Cluster(RedisCluster::start(3, 0)),
            Ok("single") | Err(_) => Self::Single(RedisServer::start()),
            Ok(other) => panic!("{BACKEND_ENV}={other}: expected `single` or `cluster`"),
        }
    }

    /// The connection flags of every service on this backend (the single server's URL goes
    /// through `start`'s `redis_url`).
    fn flags(&self) -> Vec<String> {
        match self {
            Self::Single(_) => Vec::new(),
            Self::Cluster(cluster) => vec!["--redis-cluster-nodes".into(), cluster.nodes_setting()],
        }
    }

    /// The single server's URL (empty on a cluster: the nodes are in [`Backend::flags`]).
    fn single_url(&self) -> String {
        match self {
            Self::Single(redis) => redis.url(),
            Self::Cluster(_) => String::new(),
        }
    }

    /// Whether this is a cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }
}

/// A test that reads, stops or breaks the one redis-server itself uses the stack's `redis` as a
/// [`RedisServer`]; on a cluster such a test cannot run and says so (it belongs to the
/// single-backend part of the suite, see the cluster profile in `.config/nextest.toml`).
impl std::ops::Deref for Backend {
    type Target = RedisServer;

    fn deref(&self) -> &RedisServer {
        match self {
            Self::Single(redis) => redis,
            Self::Cluster(_) => panic!("this test uses the single redis-server directly: it runs on one Redis only"),
        }
    }
}

impl std::ops::DerefMut for Backend {
    fn deref_mut(&mut self) -> &mut RedisServer {
        match self {
            Self::Single(redis) => redis,
            Self::Cluster(_) => panic!("this test uses the single redis-server directly: it runs on one Redis only"),
        }
    }
}

/// A Redis (or Redis Cluster, see [`BACKEND_ENV`]) and the four services on one unique key
/// prefix, with clients.
#[derive(Debug)]
pub struct Stack {
    /// What the services use.
    pub redis: Backend,
    /// The key prefix of this stack.
    pub prefix: String,
    /// The publisher.
    pub publisher: Running,
    /// The subscriber.
    pub subscriber: Running,
    /// The admin service (background trim every second).
    pub admin: Running,
    /// The dead-letter service.
    pub dlq: Running,
}

impl Stack {
    /// The Redis keys of this stack's prefix (tests read Redis state through these, never
    /// through key literals).
    pub fn keys(&self) -> eventflow_broker::Keys {
        eventflow_broker::Keys::new(&self.prefix)
    }

    /// Starts a redis-server and the four services.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts a redis-server (or a cluster, see [`BACKEND_ENV`]) and the four services, each
    /// with the extra flags `common` (flags every service takes, e.g. `--dlq-max-length`).
    pub async fn start_with(common: &[&str]) -> Self {
        Self::start_on(Backend::from_env(), common).await
    }

    /// Starts the four services on `redis` (e.g. a TLS one, with `common` naming its CA), each
    /// with the extra flags `common`.
    pub async fn start_on(redis: impl Into<Backend>, common: &[&str]) -> Self {
        let redis = redis.into();
        let prefix = unique_prefix();
        let url = redis.single_url();
        let flags = redis.flags();
        let mut common: Vec<&str> = common.to_vec();
        common.extend(flags.iter().map(String::as_str));
        let publisher = start(Kind::Publisher, &url, &prefix, &common).await;
        let subscriber = start(Kind::Subscriber, &url, &prefix, &common).await;
        let mut admin_args = vec!["--trim-interval-secs", "1", "--stats-interval-secs", "1"];
        admin_args.extend_from_slice(&common);
        let admin = start(Kind::Admin, &url, &prefix, &admin_args).await;
        let dlq = start(Kind::Dlq, &url, &prefix, &common).await;
        Self { redis, prefix, publisher, subscriber, admin, dlq }
    }

    /// Starts one more service on this stack's Redis (or cluster) and key prefix, with the
    /// extra flags `args`.
    pub async fn start_service(&self, kind: Kind, args: &[&str]) -> Running {
        let flags = self.redis.flags();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(flags.iter().map(String::as_str));
        start(kind, &self.redis.single_url(), &self.prefix, &all).await
    }

    /// Runs one more service on this stack's Redis and prefix until it exits (for start-up
    /// refusals), with the extra flags `args`.
    pub async fn run_service_to_exit(&self, kind: Kind, args: &[&str]) -> Result<(), ServeError> {
        let flags = self.redis.flags();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(flags.iter().map(String::as_str));
        run_to_exit(kind, &self.redis.single_url(), &self.prefix, &all).await
    }

    /// A dead-letter client.
    pub async fn dlq(&self) -> DeadLetterServiceClient<Channel> {
        DeadLetterServiceClient::new(self.dlq.channel().await)
    }

    /// Statistics of a stream.
    pub async fn stats(&self, stream: &str) -> eventflow_proto::v1::StreamStats {
        let request = eventflow_proto::v1::GetStreamStatsRequest { stream: stream.into() };
        self.admin().await.get_stream_stats(request).await.unwrap().into_inner().stats.unwrap()
    }

    /// Creates a subscription from the earliest event with full settings.
    pub async fn create_subscription_with(&self, subscription: Subscription) {
        let start_position = Some(Position { position: Some(position::Position::Earliest(true)) });
        self.admin()
            .await
            .create_subscription(CreateSubscriptionRequest { subscription: Some(subscription), start_position })
            .await
            .unwrap();
    }

    /// A publisher client.
    pub async fn publisher(&self) -> PublisherServiceClient<Channel> {
        PublisherServiceClient::new(self.publisher.channel().await)
    }

    /// A subscriber client.
    pub async fn subscriber(&self) -> SubscriberServiceClient<Channel> {
        SubscriberServiceClient::new(self.subscriber.channel().await)
    }

    /// An admin client.
    pub async fn admin(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(self.admin.channel().await)
    }

    /// Creates a stream with default settings.
    pub async fn create_stream(&self, name: &str) {
        let stream = Stream { name: name.into(), ..Default::default() };
        self.admin().await.create_stream(CreateStreamRequest { stream: Some(stream) }).await.unwrap();
    }

    /// Creates a subscription from the earliest event with the given ack deadline and max
    /// delivery attempts (0 = defaults).
    pub async fn create_subscription(&self, stream: &str, name: &str, ack_deadline_seconds: i32, max_attempts: i32) {
        let subscription = Subscription {
            stream: stream.into(),
            name: name.into(),
            ack_deadline_seconds,
            dead_letter_policy: Some(eventflow_proto::v1::DeadLetterPolicy { max_delivery_attempts: max_attempts }),
            ..Default::default()
        };
        let start_position = Some(Position { position: Some(position::Position::Earliest(true)) });
        self.admin()
            .await
            .create_subscription(CreateSubscriptionRequest { subscription: Some(subscription), start_position })
            .await
            .unwrap();
    }

    /// Publishes events and returns their results.
    pub async fn publish(&self, stream: &str, events: Vec<CloudEvent>) -> Vec<PublishResult> {
        let request = PublishRequest { stream: stream.into(), events };
        self.publisher().await.publish(request).await.unwrap().into_inner().results
    }
}

/// A valid CloudEvent with the given id (may be empty) and type.
pub fn event(id: &str, event_type: &str) -> CloudEvent {
    CloudEvent {
        id: id.into(),
        source: "/e2e".into(),
        spec_version: "1.0".into(),
        r#type: event_type.into(),
        data: Some(eventflow_proto::v1::cloud_event::Data::TextData(format!("{{\"id\":\"{id}\"}}"))),
        ..Default::default()
    }
}

/// One open Subscribe call.
#[derive(Debug)]
pub struct Consumer {
    /// The server stream.
    pub stream: tonic::Streaming<eventflow_proto::v1::SubscribeResponse>,
}

impl Consumer {
    /// Opens a Subscribe call on `addr` with a message limit.
    pub async fn open(stack: &Stack, stream: &str, subscription: &str, max_outstanding: i32) -> Self {
        Self::open_at(stack.subscriber().await, stream, subscription, max_outstanding).await
    }

    /// Opens a Subscribe call with the given client.
    pub async fn open_at(
        mut client: SubscriberServiceClient<Channel>,
        stream: &str,
        subscription: &str,
        max_outstanding: i32,
    ) -> Self {
        let request = eventflow_proto::v1::SubscribeRequest {
            stream: stream.into(),
            subscription: subscription.into(),
            max_outstanding_messages: max_outstanding,
            max_outstanding_bytes: 0,
        };
        Self { stream: client.subscribe(request).await.unwrap().into_inner() }
    }

    /// Receives exactly `n` events, failing after `deadline`.
    pub async fn take(&mut self, n: usize, deadline: Duration) -> Vec<eventflow_proto::v1::ReceivedEvent> {
        let mut out = Vec::new();
        let result = tokio::time::timeout(deadline, async {
            while out.len() < n {
                let batch = self.stream.message().await.unwrap().expect("stream ended");
                out.extend(batch.events);
            }
        })
        .await;
        assert!(result.is_ok(), "got {} of {n} events within {deadline:?}", out.len());
        assert_eq!(out.len(), n, "more events than expected");
        out
    }

    /// Asserts that nothing is delivered within `window` (used only where the property is "no
    /// delivery", e.g. flow control holding events back).
    pub async fn expect_nothing(&mut self, window: Duration) {
        if let Ok(message) = tokio::time::timeout(window, self.stream.message()).await {
            let batch = message.unwrap().expect("stream ended");
            panic!("unexpected delivery of {} events", batch.events.len());
        }
    }
}

/// Polls `check` every 20 ms until it returns `Some`, or panics with `what` after `deadline`.
/// The async twin of [`wait_until`], for tests whose services run on the test's own runtime.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < until, "timed out after {deadline:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One `/metrics` scrape: (metric name, labels) -> value.
pub type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

/// Fetches `/metrics` of a service with a plain HTTP/1.1 GET and parses the text format.
pub async fn scrape(running: &Running) -> Samples {
    let (head, body) = http_get(running.metrics_addr, "/metrics").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/plain"), "{head}");
    parse_samples(&body)
}

/// A plain HTTP/1.1 GET of `path` on `addr`: the response head (status line and headers) and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    conn.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    (head.to_string(), body.to_string())
}

/// Parses the Prometheus text exposition format.
pub fn parse_samples(body: &str) -> Samples {
    let mut samples = Samples::new();
    for line in body.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels = labels
            .split("\",")
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_string(), v.trim_matches('"').to_string())
            })
            .collect();
        samples.insert((name.to_string(), labels), value.parse().unwrap());
    }
    samples
}

/// Waits (15 s at most) until the service's series `name{labels}` reads `want`.
pub async fn wait_for_metric(running: &Running, name: &str, labels: &[(&str, &str)], want: f64) {
    let what = format!("{name}{labels:?} == {want}");
    eventually(&what, Duration::from_secs(15), || async {
        (value(&scrape(running).await, name, labels) == want).then_some(())
    })
    .await;
}

/// The value of a series (0 if absent).
pub fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    let labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    samples.get(&(name.to_string(), labels)).copied().unwrap_or(0.0)
}

/// The `run` future of one service with the real CLI parser (`args` are extra flags).
fn run_future(
    kind: Kind,
    redis_url: &str,
    prefix: &str,
    args: &[&str],
    listeners: Listeners,
    shutdown: CancellationToken,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), ServeError>> + Send>> {
    let argv = argv(kind, redis_url, prefix, args);
    match kind {
        Kind::Publisher => Box::pin(eventflow_publisher::run(
            eventflow_publisher::Config::try_parse_from(argv).unwrap(),
            listeners,
            shutdown,
        )),
        Kind::Subscriber => Box::pin(eventflow_subscriber::run(
            eventflow_subscriber::Config::try_parse_from(argv).unwrap(),
            listeners,
            shutdown,
        )),
        Kind::Admin => {
            Box::pin(eventflow_admin::run(eventflow_admin::Config::try_parse_from(argv).unwrap(), listeners, shutdown))
        }
        Kind::Dlq => {
            Box::pin(eventflow_dlq::run(eventflow_dlq::Config::try_parse_from(argv).unwrap(), listeners, shutdown))
        }
        Kind::Pusher => Box::pin(eventflow_pusher::run(
            eventflow_pusher::Config::try_parse_from(argv).unwrap(),
            listeners,
            shutdown,
        )),
        Kind::Archive => Box::pin(eventflow_archive_service::run(
            eventflow_archive_service::Config::try_parse_from(argv).unwrap(),
            listeners,
            shutdown,
        )),
        Kind::Relay => {
            Box::pin(eventflow_relay::run(eventflow_relay::Config::try_parse_from(argv).unwrap(), listeners, shutdown))
        }
    }
}

/// Free-port listeners for one service.
async fn free_listeners() -> Listeners {
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = TcpListener::bind("127.0.0.1:0").await.unwrap();
    Listeners { grpc, metrics }
}

/// Runs one service like [`start`] until it stops by itself and returns its result: for
/// services expected to refuse to start.
pub async fn run_to_exit(kind: Kind, redis_url: &str, prefix: &str, args: &[&str]) -> Result<(), ServeError> {
    let listeners = free_listeners().await;
    run_future(kind, redis_url, prefix, args, listeners, CancellationToken::new()).await
}

/// Starts one service like [`start`] but returns at once, without waiting until it is ready
/// (e.g. while its Redis is down). Await `wait_for_health(.., LIVENESS, Serving)` to know it
/// serves health.
pub async fn start_unready(kind: Kind, redis_url: &str, prefix: &str, args: &[&str]) -> Running {
    let listeners = free_listeners().await;
    let (addr, metrics_addr) = (listeners.grpc.local_addr().unwrap(), listeners.metrics.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let run = run_future(kind, redis_url, prefix, args, listeners, shutdown.clone());
    let handle = tokio::spawn(async move { run.await.unwrap() });
    Running { addr, metrics_addr, shutdown, handle, tls: None }
}

/// Starts one service like [`start`] on the gRPC address `addr` (e.g. the address of a stopped
/// instance, so clients holding it reconnect to the new one) and waits until it is ready.
pub async fn start_at(kind: Kind, addr: SocketAddr, redis_url: &str, prefix: &str, args: &[&str]) -> Running {
    let grpc = TcpListener::bind(addr).await.unwrap();
    let metrics = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_addr = metrics.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let run = run_future(kind, redis_url, prefix, args, Listeners { grpc, metrics }, shutdown.clone());
    let handle = tokio::spawn(async move { run.await.unwrap() });
    let running = Running { addr, metrics_addr, shutdown, handle, tls: None };
    wait_for_health(&running, kind.service_name(), ServingStatus::Serving).await;
    running
}

/// Starts one service like [`start`] with `args` that make it serve TLS, and waits until it
/// is ready, checked through a client configured by `tls` (which then is the service's
/// [`Running::tls`]).
pub async fn start_tls(kind: Kind, redis_url: &str, prefix: &str, args: &[&str], tls: ClientTlsConfig) -> Running {
    let mut running = start_unready(kind, redis_url, prefix, args).await;
    running.tls = Some(tls);
    wait_for_health(&running, kind.service_name(), ServingStatus::Serving).await;
    running
}

/// A TCP proxy in front of a service that a test can freeze: once frozen it forwards nothing
/// more in either direction but keeps every socket open — a peer that vanished without closing
/// its connections (a crashed host, a cut network), which only HTTP/2 keepalive can detect.
/// Dropping the proxy closes everything.
#[derive(Debug)]
pub struct FreezableProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// Set to true to freeze every connection, present and future.
    frozen: tokio::sync::watch::Sender<bool>,
    /// Accepts connections and owns their forwarding tasks.
    task: JoinHandle<()>,
}

impl FreezableProxy {
    /// Starts a proxy to `upstream` on a free port.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (frozen, watch) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else { continue };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                connections.spawn(pump(client_read, server_write, watch.clone()));
                connections.spawn(pump(server_read, client_write, watch.clone()));
            }
        });
        Self { addr, frozen, task }
    }

    /// Stops forwarding, keeping the sockets open.
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// A channel to the service through the proxy.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr)).unwrap().connect().await.unwrap()
    }
}

impl Drop for FreezableProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `from` to `to` until either closes or the proxy freezes; frozen, it holds both open
/// and forwards nothing, not even data already read.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            biased;
            _ = frozen.wait_for(|f| *f) => break,
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
        };
        if *frozen.borrow() || to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    if *frozen.borrow() {
        std::future::pending::<()>().await;
    }
}
