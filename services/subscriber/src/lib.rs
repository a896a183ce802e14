//! The subscriber service: server-streaming delivery from consumer groups and unary
//! settlement. Each Subscribe call runs one broker [`Session`] in its own task, driven by the
//! broker's delivery driver ([`drive`]) into the call's stream (a [`Sink`]); the task ends when
//! the client goes away, the subscription disappears, or the server shuts down, and the driver
//! then closes the session so its unsettled events are redelivered at once elsewhere.
//!
//! Sessions are bounded: each holds a slot of `--max-sessions` (a semaphore permit) from before
//! it opens until its task ends; a Subscribe call finding none free gets RESOURCE_EXHAUSTED. A
//! client that vanishes without closing its connection is noticed by HTTP/2 keepalive (see
//! `eventflow_runtime::config::ServerArgs`): the connection is dropped, the call's stream with
//! it, and the task ends as for any client that left.

mod observe;

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use observe::{Observer, Settlement};

use eventflow_broker::{
    AckIds, AckKeySource, AckKeys, BatchStats, Broker, BrokerError, Delivery, FlowControl, Session, Settled,
    SubscriptionConfig,
    delivery::{Ended, Sink, drive},
    partition_names,
};
use eventflow_proto::{
    convert::timestamp_from_ms,
    wire::{
        ReceivedEvent,
        generated::{
            AcknowledgeRequest, AcknowledgeResponse, ModifyAckDeadlineRequest, ModifyAckDeadlineResponse,
            RejectRequest, RejectResponse, SubscribeRequest, SubscribeResponse,
            subscriber_service_server::{SubscriberService, SubscriberServiceServer},
        },
    },
};
use eventflow_runtime::{
    CancellationToken, ack_keys,
    auth::{Caller, Service, authorize},
    config::{Basics, CommonArgs},
    serve::{Listeners, ServeError, Served, run_service},
    status::to_status,
};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, service::Routes, service::interceptor::InterceptedService};

/// The gRPC service name, as health reports it.
pub const SERVICE_NAME: &str = "eventflow.v1.SubscriberService";

/// Configuration of the subscriber binary.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "eventflow-subscriber",
    version,
    about = "eventflow SubscriberService: at-least-once delivery from Redis Streams consumer groups"
)]
pub struct Config {
    /// Redis and authentication settings.
    #[command(flatten)]
    pub common: CommonArgs,
    /// gRPC listen address.
    #[arg(long, env = "EVENTFLOW_GRPC_ADDR", default_value = "0.0.0.0:50052")]
    pub grpc_addr: SocketAddr,
    /// Plain-HTTP listen address of Prometheus `/metrics` and of the probes `/healthz`
    /// (liveness) and `/readyz` (readiness).
    #[arg(long, env = "EVENTFLOW_METRICS_ADDR", default_value = "0.0.0.0:9092")]
    pub metrics_addr: SocketAddr,
    /// Most bytes of one SubscribeResponse message (events, ack ids): a batch is sent as
    /// several messages so clients with gRPC's default 4 MiB receive limit get any mix of
    /// events; an event larger than this travels alone.
    #[arg(long, env = "EVENTFLOW_MAX_RESPONSE_BYTES", default_value_t = 1 << 20)]
    pub max_response_bytes: usize,
    /// Most Subscribe calls this replica serves at once (at least 1). One more gets
    /// RESOURCE_EXHAUSTED: the client should retry with backoff, or reach another replica. Sessions
    /// share the replica's Redis connections; this bounds its memory and Redis work.
    #[arg(long, env = "EVENTFLOW_MAX_SESSIONS", default_value_t = 1000)]
    pub max_sessions: usize,
    /// Sessions that wait for new events in a blocking read on a Redis connection of their own
    /// (lowest latency); the others wait through one shared watcher connection (one more round
    /// trip per wake-up). The replica's Redis connections stay under 64 + this + 1.
    #[arg(long, env = "EVENTFLOW_BLOCKING_READERS", default_value_t = 16)]
    pub blocking_readers: usize,
    /// File holding the key ack ids are signed with (HMAC-SHA256): at least 32 bytes, e.g. the
    /// 64 hex characters of `openssl rand -hex 32`; surrounding whitespace is ignored. Every
    /// replica must read the same key, since any replica settles any ack id; an ack id edited by
    /// a client is then invalid. Unset = a random key per process: ack ids settle only on the
    /// replica that delivered them (logged as a warning), so set it when running several.
    /// Reloaded within a second when the file changes (a bad new file keeps the keys in use and
    /// logs a warning), so keys rotate without a restart.
    #[arg(long, env = "EVENTFLOW_ACK_KEY_FILE")]
    pub ack_key_file: Option<PathBuf>,
    /// File holding the previous ack key during a rotation (needs --ack-key-file): ack ids
    /// signed with it are still accepted, new ones are signed with --ack-key-file. Reloaded
    /// like --ack-key-file; absent or empty = no previous key (how a rotation ends).
    #[arg(long, env = "EVENTFLOW_ACK_KEY_PREVIOUS_FILE")]
    pub ack_key_previous_file: Option<PathBuf>,
}

impl Config {
    /// The ack keys from --ack-key-file and --ack-key-previous-file, reloaded when the files
    /// change (`eventflow_runtime::ack_keys`), or a random key of this process (with a warning)
    /// when no file is set; fails with one clear line on a missing, unreadable or short key.
    pub fn ack_keys(&self) -> Result<Arc<dyn AckKeySource>, ServeError> {
        match (&self.ack_key_file, &self.ack_key_previous_file) {
            (Some(current), previous) => ack_keys::watch(current.clone(), previous.clone()).map_err(ServeError::Config),
            (None, Some(_)) => Err(ServeError::Config("--ack-key-previous-file needs --ack-key-file".into())),
            (None, None) => {
                tracing::warn!(
                    "no --ack-key-file (EVENTFLOW_ACK_KEY_FILE): ack ids are signed with a random key of this \
                     process and settle only on this replica; give every replica the same key file"
                );
                let keys = AckKeys::random().map_err(|e| ServeError::Config(e.to_string()))?;
                Ok(Arc::new(Arc::new(keys)))
            }
        }
    }
}

/// Serves the subscriber on `listeners` until `shutdown`; open Subscribe streams end with
/// UNAVAILABLE and release their unsettled events.
pub async fn run(config: Config, listeners: Listeners, shutdown: CancellationToken) -> Result<(), ServeError> {
    let readers = config.blocking_readers;
    let ack_keys = config.ack_keys()?;
    let Basics { broker, auth, registry, metrics } = config.common.basics_with(|options| {
        options.blocking_readers = readers;
        options.ack_keys = Some(ack_keys);
    })?;
    if config.max_sessions == 0 || config.max_sessions > Semaphore::MAX_PERMITS {
        return Err(ServeError::Config(format!("--max-sessions must be 1 to {}", Semaphore::MAX_PERMITS)));
    }
    let observer = Observer { metrics };
    let sessions = Arc::new(Semaphore::new(config.max_sessions));
    let handler = Subscriber {
        broker: broker.clone(),
        shutdown: shutdown.clone(),
        observer,
        max_response_bytes: config.max_response_bytes.max(1),
        sessions,
        max_sessions: config.max_sessions,
    };
    let routes = Routes::new(InterceptedService::new(
        SubscriberServiceServer::new(handler),
        auth.interceptor(Service::Subscribe),
    ));
    let served = Served { routes, name: SERVICE_NAME, auth };
    run_service(listeners, served, broker, registry, &config.common.server, shutdown).await
}

/// The SubscriberService handler.
#[derive(Debug, Clone)]
pub struct Subscriber {
    /// Where events come from.
    broker: Broker,
    /// Cancelled at server shutdown; ends every delivery task.
    shutdown: CancellationToken,
    /// Metrics and spans.
    observer: Observer,
    /// Most bytes of one SubscribeResponse.
    max_response_bytes: usize,
    /// Free session slots: a Subscribe call takes one for the life of its delivery task, so a
    /// replica never holds more than `max_sessions` sessions (and their Redis connections).
    sessions: Arc<Semaphore>,
    /// The `--max-sessions` limit, for the error message.
    max_sessions: usize,
}

#[tonic::async_trait]
impl SubscriberService for Subscriber {
    type SubscribeStream = ReceiverStream<Result<SubscribeResponse, Status>>;

    async fn subscribe(&self, request: Request<SubscribeRequest>) -> Result<Response<Self::SubscribeStream>, Status> {
        authorize(&request, Service::Subscribe, &request.get_ref().stream, Some(&request.get_ref().subscription))?;
        let req = request.into_inner();
        let flow =
            FlowControl::new(req.max_outstanding_messages.into(), req.max_outstanding_bytes).map_err(to_status)?;
        let slot = self.sessions.clone().try_acquire_owned().map_err(|_| {
            to_status(BrokerError::ResourceExhausted(format!(
                "this subscriber replica serves its limit of {} Subscribe sessions (max_sessions); \
                 retry with backoff or reach another replica",
                self.max_sessions
            )))
        })?;
        let config = self.broker.get_subscription(&req.stream, &req.subscription).await.map_err(to_status)?;
        if config.push.is_some() {
            return Err(to_status(push_subscription(&req.stream, &req.subscription)));
        }
        // A partitioned stream: one session per partition, merged into the one response stream,
        // flow control split between them. When one ends with an error, the client gets that
        // status and the call ends; the others end when the response stream is dropped.
        let partitions = self.broker.partitions(&req.stream).await.map_err(to_status)?;
        let flow = flow.split(partitions);
        let mut sessions = Vec::new();
        for part in partition_names(&req.stream, partitions) {
            match Session::open(&self.broker, &part, &req.subscription, flow).await {
                Ok(session) => sessions.push(session),
                Err(e) => {
                    for opened in sessions {
                        let _ = opened.close().await;
                    }
                    return Err(to_status(e));
                }
            }
        }
        let consumers: Vec<&str> = sessions.iter().map(Session::consumer).collect();
        tracing::info!(stream = %req.stream, subscription = %req.subscription, consumers = ?consumers, "subscribe opened");
        let open = self.observer.session_opened(&req.stream, &req.subscription);
        let (tx, rx) = mpsc::channel(1);
        let mut drivers = tokio::task::JoinSet::new();
        for session in sessions {
            let mut sink = GrpcSink {
                tx: tx.clone(),
                observer: self.observer.clone(),
                stream: req.stream.clone(),
                subscription: req.subscription.clone(),
                max_response_bytes: self.max_response_bytes,
            };
            let shutdown = self.shutdown.clone();
            drivers.spawn(async move { drive(session, &mut sink, &shutdown).await });
        }
        drop(tx);
        tokio::spawn(async move {
            while drivers.join_next().await.is_some() {}
            drop((open, slot)); // the sessions are closed: the slot is free for another Subscribe call
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn acknowledge(
        &self,
        mut request: Request<AcknowledgeRequest>,
    ) -> Result<Response<AcknowledgeResponse>, Status> {
        let ack_ids = self.authorized_ack_ids(&mut request, |r| &mut r.ack_ids)?;
        let settled = self.broker.acknowledge_decoded(ack_ids).await.map_err(to_status)?;
        self.observer.settled(Settlement::Ack, &settled);
        let Settled { invalid, expired, .. } = settled;
        Ok(Response::new(AcknowledgeResponse { invalid_ack_ids: invalid, expired_ack_ids: expired }))
    }

    async fn modify_ack_deadline(
        &self,
        mut request: Request<ModifyAckDeadlineRequest>,
    ) -> Result<Response<ModifyAckDeadlineResponse>, Status> {
        let ack_ids = self.authorized_ack_ids(&mut request, |r| &mut r.ack_ids)?;
        let req = request.into_inner();
        let seconds = u32::try_from(req.ack_deadline_seconds)
            .map_err(|_| Status::invalid_argument("ack_deadline_seconds: must not be negative"))?;
        let settled =
            self.broker.modify_ack_deadline_decoded(ack_ids, seconds, &req.reason).await.map_err(to_status)?;
        let op = if seconds == 0 { Settlement::Nack } else { Settlement::Extend };
        self.observer.settled(op, &settled);
        let Settled { invalid, expired, .. } = settled;
        Ok(Response::new(ModifyAckDeadlineResponse { invalid_ack_ids: invalid, expired_ack_ids: expired }))
    }

    async fn reject(&self, mut request: Request<RejectRequest>) -> Result<Response<RejectResponse>, Status> {
        let ack_ids = self.authorized_ack_ids(&mut request, |r| &mut r.ack_ids)?;
        let req = request.into_inner();
        let settled = self.broker.reject_decoded(ack_ids, &req.reason).await.map_err(to_status)?;
        self.observer.settled(Settlement::Reject, &settled);
        let Settled { invalid, expired, .. } = settled;
        Ok(Response::new(RejectResponse { invalid_ack_ids: invalid, expired_ack_ids: expired }))
    }
}

impl Subscriber {
    /// The call's ack ids, decoded once, if the caller may settle them: it needs a `subscribe`
    /// grant on the stream and subscription each ack id names (ids that do not decode are left
    /// for settlement to report as invalid); otherwise PERMISSION_DENIED naming the first it may
    /// not, before anything is settled. The ack ids (`field` of the request) are taken out of it:
    /// they are reported back as they came, without copies.
    fn authorized_ack_ids<T>(
        &self,
        request: &mut Request<T>,
        field: impl FnOnce(&mut T) -> &mut Vec<String>,
    ) -> Result<AckIds, Status> {
        let ack_ids = std::mem::take(field(request.get_mut()));
        let caller = Caller::of(request)?;
        let ack_ids = self.broker.decode_ack_ids(ack_ids).map_err(to_status)?;
        if caller.is_restricted() {
            caller.authorize_use(Service::Subscribe)?;
            for (stream, subscription) in ack_ids.targets() {
                caller.authorize(Service::Subscribe, stream, Some(subscription))?;
            }
        }
        Ok(ack_ids)
    }
}

/// The Subscribe stream as a delivery [`Sink`]: batches become responses of at most
/// `max_response_bytes`, counted by the observer; the driver's end reaches the client as a status.
struct GrpcSink {
    /// The call's response stream.
    tx: mpsc::Sender<Result<SubscribeResponse, Status>>,
    /// Metrics and spans.
    observer: Observer,
    /// The subscription, for metric labels.
    stream: String,
    subscription: String,
    /// Most bytes of one SubscribeResponse.
    max_response_bytes: usize,
}

impl Sink for GrpcSink {
    async fn send(&mut self, batch: Vec<Delivery>, stats: &BatchStats) -> bool {
        self.observer.delivered(&self.stream, &self.subscription, &batch, stats);
        for response in responses(to_received(batch), self.max_response_bytes) {
            if self.tx.send(Ok(response)).await.is_err() {
                return false;
            }
        }
        true
    }

    fn idle(&mut self, stats: &BatchStats) {
        self.observer.session_stats(&self.stream, &self.subscription, stats);
    }

    async fn closed(&self) {
        self.tx.closed().await;
    }

    fn refuses(&self, config: &SubscriptionConfig) -> Option<BrokerError> {
        config.push.is_some().then(|| push_subscription(&config.stream, &config.name))
    }

    async fn end(&mut self, why: &Ended) {
        match why {
            Ended::Gone => {}
            Ended::Shutdown => {
                let _ = self.tx.try_send(Err(Status::unavailable("server shutting down; reconnect")));
            }
            Ended::Failed(e) => {
                let _ = self.tx.send(Err(to_status(e.clone()))).await;
            }
        }
    }
}

/// Why Subscribe does not serve a push subscription (refused at the start, or ending an open
/// call once the subscription became one).
fn push_subscription(stream: &str, subscription: &str) -> BrokerError {
    BrokerError::FailedPrecondition(format!(
        "subscription {subscription:?} of stream {stream:?} is a push subscription (push_config is set): \
         eventflow-pusher delivers it; Subscribe serves pull subscriptions only"
    ))
}

/// Splits events into responses of at most `max_bytes` each (an event larger than that alone).
fn responses(events: Vec<ReceivedEvent>, max_bytes: usize) -> Vec<SubscribeResponse> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for event in events {
        // Payload, ack id and entry id, plus field tags, lengths and the timestamp.
        let size = event.event.len() + event.ack_id.len() + event.entry_id.len() + 32;
        if !current.is_empty() && bytes + size > max_bytes {
            out.push(SubscribeResponse { events: std::mem::take(&mut current) });
            bytes = 0;
        }
        bytes += size;
        current.push(event);
    }
    if !current.is_empty() {
        out.push(SubscribeResponse { events: current });
    }
    out
}

/// Deliveries as wire messages: the stored event bytes go out as they are (see
/// `eventflow_proto::wire`).
fn to_received(batch: Vec<Delivery>) -> Vec<ReceivedEvent> {
    batch
        .into_iter()
        .map(|d| ReceivedEvent {
            ack_id: d.ack_id,
            event: d.payload,
            delivery_attempt: i32::try_from(d.attempt).unwrap_or(i32::MAX),
            publish_time: Some(timestamp_from_ms(d.publish_ms)),
            entry_id: d.entry_id,
            partition: i32::try_from(d.partition).unwrap_or(i32::MAX),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(size: usize) -> ReceivedEvent {
        ReceivedEvent { ack_id: "a".into(), event: vec![0; size], entry_id: "1-0".into(), ..Default::default() }
    }

    fn config(args: &[&str]) -> Config {
        use clap::Parser;
        Config::try_parse_from([&["svc"], args].concat()).unwrap()
    }

    #[test]
    fn ack_key_settings_fail_with_one_clear_line() {
        let error = |args: &[&str]| config(args).ack_keys().unwrap_err().to_string();
        assert!(error(&["--ack-key-previous-file", "/x"]).contains("--ack-key-previous-file needs --ack-key-file"));
        assert!(error(&["--ack-key-file", "/nonexistent/ack.key"]).contains("--ack-key-file /nonexistent/ack.key"));
        let dir = std::env::temp_dir().join(format!("ef-ack-key-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (good, short) = (dir.join("good"), dir.join("short"));
        std::fs::write(&good, format!("  {}\n", "ab".repeat(16))).unwrap();
        std::fs::write(&short, format!("{}\n", "ab".repeat(15))).unwrap();
        let (good, short) = (good.to_str().unwrap(), short.to_str().unwrap());
        assert!(error(&["--ack-key-file", short]).contains("32 bytes"));
        assert!(error(&["--ack-key-file", good, "--ack-key-previous-file", short]).contains("ack_key_previous_file"));
        let keys = config(&["--ack-key-file", good, "--ack-key-previous-file", good]).ack_keys().unwrap().current();
        assert!(!keys.is_ephemeral() && keys.has_previous());
        let absent = dir.join("absent");
        let keys = config(&["--ack-key-file", good, "--ack-key-previous-file", absent.to_str().unwrap()]);
        assert!(!keys.ack_keys().unwrap().current().has_previous(), "an absent previous key file: none");
        assert!(config(&[]).ack_keys().unwrap().current().is_ephemeral());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn responses_stay_under_the_cap_and_big_events_travel_alone() {
        let cap = 1000;
        let sizes = [100, 300, 500, 2000, 10, 990, 5];
        let out = responses(sizes.iter().map(|&n| event(n)).collect(), cap);
        let split: Vec<Vec<usize>> = out.iter().map(|r| r.events.iter().map(|e| e.event.len()).collect()).collect();
        assert_eq!(split, [vec![100, 300], vec![500], vec![2000], vec![10], vec![990], vec![5]]);
        for response in &out {
            let bytes: usize = response.events.iter().map(|e| e.event.len() + 36).sum();
            assert!(bytes <= cap || response.events.len() == 1, "{bytes}");
        }
        assert!(responses(Vec::new(), cap).is_empty());
    }
}
