//! The push figures (`push`): eventflow-pusher (in-process, like the other services) POSTing
//! the events of one push subscription to a local webhook receiver (`eventflow_e2e::webhook`,
//! a hyper HTTP/1.1 server answering 200 at once).
//!
//! * `push_rate`: `push_events` events published in requests of `batch_size` as fast as the
//!   publisher takes them; the rate is events received by the endpoint per second, from the
//!   first publish to the last receipt.
//! * `push_latency_p50_ms` / `push_latency_p99_ms`: one event per Publish at `push_latency_rate`
//!   events/s for `latency_secs` (after one second of warm-up); latency is the receiver's
//!   arrival time minus the send time written into the event's data (binary mode: the data is
//!   the body).

use std::time::{Duration, Instant};

use eventflow_e2e::{
    Kind,
    webhook::{Receiver, Reply},
};
use eventflow_proto::{
    prost_types,
    v1::{
        CreateSubscriptionRequest, PublishRequest, PushConfig, Subscription, admin_service_client::AdminServiceClient,
        publisher_service_client::PublisherServiceClient,
    },
};
use tokio::task::JoinSet;

use crate::{
    Args, per_second,
    setup::{Env, event, payload, publish_all},
};

/// Signing secret of the bench's push subscriptions (the receiver does not verify: signing
/// is part of the measured cost, checking it is the receiver's).
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// Longest a push run may take before the bench gives up.
const RUN_DEADLINE: Duration = Duration::from_secs(300);

/// What the push figures measured.
pub struct PushResult {
    /// Events the endpoint received per second (the rate run).
    pub rate: f64,
    /// Latency percentiles of the paced run, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Events in the paced run after warm-up.
    pub events: usize,
}

/// Runs both push figures against a pusher of its own.
pub async fn run(env: &Env, args: &Args) -> PushResult {
    let flags = ["--push-poll-ms", "50", "--push-allow-private"];
    let pusher = eventflow_e2e::start(Kind::Pusher, &env.services.redis_url, &env.prefix, &flags).await;
    let rate = rate_run(env, args).await;
    let (p50_ms, p99_ms, events) = latency_run(env, args).await;
    pusher.stop().await;
    PushResult { rate, p50_ms, p99_ms, events }
}

/// Creates `stream` and a push subscription on it to `receiver`, positioned at the stream's end.
async fn push_subscription(env: &Env, stream: &str, receiver: &Receiver, concurrency: i32) {
    env.create_stream(stream).await;
    let subscription = Subscription {
        stream: stream.into(),
        name: "push".into(),
        push_config: Some(PushConfig {
            endpoint: receiver.url(),
            signing_secret: SECRET.into(),
            timeout: Some(prost_types::Duration { seconds: 10, nanos: 0 }),
            max_concurrency: concurrency,
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut admin = AdminServiceClient::new(env.admin.channel().await);
    admin
        .create_subscription(CreateSubscriptionRequest { subscription: Some(subscription), ..Default::default() })
        .await
        .expect("create push subscription (the admin needs --push-allow-private)");
}

/// `push_events` events published in batches; events received per second.
async fn rate_run(env: &Env, args: &Args) -> f64 {
    let mut receiver = Receiver::start(|_, _| Reply::status(200)).await;
    push_subscription(env, "push-rate", &receiver, args.push_concurrency).await;
    let total = args.push_events;
    let start = Instant::now();
    publish_all(env, args, "push-rate", "p", total).await;
    for _ in 0..total {
        receiver.next(RUN_DEADLINE).await;
    }
    per_second(total, start.elapsed())
}

/// One event per Publish at `push_latency_rate`; latency percentiles (ms) of the events after
/// one second of warm-up, and their number.
async fn latency_run(env: &Env, args: &Args) -> (f64, f64, usize) {
    let mut receiver = Receiver::start(|_, _| Reply::status(200)).await;
    push_subscription(env, "push-latency", &receiver, args.push_concurrency).await;
    let rate = u64::from(args.push_latency_rate.max(1));
    let warm = usize::try_from(rate).unwrap_or(usize::MAX);
    let total = warm + usize::try_from(rate * args.latency_secs).unwrap_or(usize::MAX);
    let base = Instant::now();
    let filler = payload(args.event_bytes.max(16));
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    let mut sends = JoinSet::new();
    for seq in 0..total {
        ticker.tick().await;
        let mut client = PublisherServiceClient::new(env.services.publisher.clone());
        let mut data = filler.clone();
        sends.spawn(async move {
            let sent = u64::try_from(base.elapsed().as_micros()).unwrap_or(u64::MAX);
            data[0..8].copy_from_slice(&sent.to_le_bytes());
            data[8..16].copy_from_slice(&(seq as u64).to_le_bytes());
            let events = vec![event(format!("pl-{seq}"), data)];
            client.publish(PublishRequest { stream: "push-latency".into(), events }).await.expect("publish");
        });
        while sends.try_join_next().is_some() {}
    }
    sends.join_all().await;
    let mut micros = Vec::with_capacity(total);
    for _ in 0..total {
        let received = receiver.next(RUN_DEADLINE).await;
        let sent = u64::from_le_bytes(received.body[0..8].try_into().expect("8 bytes of send time"));
        let seq = u64::from_le_bytes(received.body[8..16].try_into().expect("8 bytes of sequence"));
        if seq >= warm as u64 {
            let arrived = u64::try_from(received.at.duration_since(base).as_micros()).unwrap_or(u64::MAX);
            micros.push(arrived.saturating_sub(sent));
        }
    }
    micros.sort_unstable();
    let pct = |p: f64| {
        let i = ((micros.len().saturating_sub(1)) as f64 * p).round() as usize;
        micros.get(i).copied().unwrap_or(0) as f64 / 1000.0
    };
    (pct(0.50), pct(0.99), micros.len())
}
