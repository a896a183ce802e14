//! Consumption: Subscribe + Acknowledge throughput vs. an XREADGROUP + XACK loop, and
//! publish -> delivery latency at a fixed offered rate.

use std::time::{Duration, Instant};

use eventflow_broker::schema;
use eventflow_proto::v1::{
    AcknowledgeRequest, CreateSubscriptionRequest, Position, PublishRequest, SubscribeRequest, Subscription,
    admin_service_client::AdminServiceClient, cloud_event, position, publisher_service_client::PublisherServiceClient,
    subscriber_service_client::SubscriberServiceClient,
};
use redis::{
    AsyncCommands,
    streams::{StreamReadOptions, StreamReadReply},
};
use tokio::task::JoinSet;

use crate::{
    Args, Run,
    measure::Probe,
    per_second,
    setup::{Env, Services, event, payload},
    warmup,
};

/// How long the latency run's consumer gathers acks before sending them (the clients'
/// `ack_batch_delay`).
const ACK_DELAY: Duration = Duration::from_millis(5);

/// How long one consumption run may take before the bench gives up on it.
const RUN_DEADLINE: Duration = Duration::from_secs(120);

/// The ordered-subscription figures.
pub struct OrderedResult {
    /// Subscribe + Acknowledge on the ordered subscription.
    pub eventflow: Run,
    /// The same on an unordered one.
    pub baseline: Run,
}

/// Latency figures.
pub struct LatencyResult {
    /// Median publish -> delivery latency.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
    /// Events measured (after warm-up).
    pub events: usize,
    /// Publish rate actually achieved over the measured part.
    pub achieved: f64,
    /// Median time of the Publish call itself (send -> response), ms.
    pub publish_p50_ms: f64,
    /// Its 99th percentile.
    pub publish_p99_ms: f64,
    /// What the whole run cost, and its events (warm-up included).
    pub usage: (crate::measure::Usage, usize),
}

/// The Subscribe + Acknowledge figures' streams: each round ([`crate::rounds`]) drains one of
/// its own (`sub<round>`, `subscribe_events` pre-published events) once through subscription
/// `ef` and once through an XREADGROUP + XACK loop in a consumer group of its own; the warm-up
/// drains a smaller stream the same way on both sides first.
pub async fn subscribe_prepare(env: &Env, args: &Args) {
    let n = args.subscribe_events;
    prefilled(env, "subwarm", warmup(n), args.event_bytes).await;
    for round in 0..usize::from(args.rounds) {
        prefilled(env, &round_stream(round), n, args.event_bytes).await;
    }
    ef_consume(&env.services, "subwarm", warmup(n), args.max_outstanding).await;
    direct_consume(env, "subwarm", warmup(n), args.read_count).await;
}

/// The stream round `round` drains.
fn round_stream(round: usize) -> String {
    format!("sub{round}")
}

/// Round `round` of Subscribe + Acknowledge: its stream drained by eventflow.
pub async fn subscribe_eventflow(env: &Env, args: &Args, round: usize) -> Run {
    ef_consume(&env.services, &round_stream(round), args.subscribe_events, args.max_outstanding).await
}

/// Round `round` of the XREADGROUP + XACK loop: its stream drained by the loop.
pub async fn subscribe_direct(env: &Env, args: &Args, round: usize) -> Run {
    direct_consume(env, &round_stream(round), args.subscribe_events, args.read_count).await
}

/// Subscribe + Acknowledge of a stream without a size mark, as a stream from before the size
/// mark: every new-entry read goes through the READ_NEW script (what every read cost before
/// native reads).
pub async fn subscribe_by_script(env: &Env, args: &Args) -> Run {
    let (stream, n) = ("subscript", args.subscribe_events);
    prefilled(env, stream, n, args.event_bytes).await;
    let _: i64 = redis::cmd("HDEL")
        .arg(format!("{}:{}", env.stream_key(stream), schema::key::META))
        .arg(schema::meta::SIZE_MARK)
        .query_async(&mut env.redis_conn().await)
        .await
        .unwrap();
    ef_consume(&env.services, stream, n, args.max_outstanding).await
}

/// Subscribe + Acknowledge of events spread round-robin over `ordered_keys` ordering keys, on
/// an ordered subscription and (the baseline) on an unordered one of another stream with the
/// same events: what per-key ordering costs. The unordered run goes first (it warms up).
pub async fn ordered(env: &Env, args: &Args) -> OrderedResult {
    let n = args.ordered_events;
    for (stream, ordered) in [("unordk", false), ("ordk", true)] {
        env.create_stream(stream).await;
        prefill_keyed(env, stream, n, args.event_bytes, args.ordered_keys).await;
        let subscription = Subscription { stream: stream.into(), name: "ef".into(), ordered, ..Default::default() };
        let start_position = Some(Position { position: Some(position::Position::Earliest(true)) });
        AdminServiceClient::new(env.admin.channel().await)
            .create_subscription(CreateSubscriptionRequest { subscription: Some(subscription), start_position })
            .await
            .unwrap();
    }
    let baseline = ef_consume(&env.services, "unordk", n, args.max_outstanding).await;
    let eventflow = ef_consume(&env.services, "ordk", n, args.max_outstanding).await;
    OrderedResult { eventflow, baseline }
}

/// Publishes `n` events to `stream` in batches of 100, one request at a time (so each key's
/// events are stored in order), event `j` with ordering key `k<j mod keys>`.
async fn prefill_keyed(env: &Env, stream: &str, n: usize, bytes: usize, keys: usize) {
    let data = payload(bytes);
    let mut client = PublisherServiceClient::new(env.services.publisher.clone());
    for i in 0..n.div_ceil(100) {
        let events = (i * 100..((i + 1) * 100).min(n))
            .map(|j| {
                let mut e = event(format!("o-{j}"), data.clone());
                let key = cloud_event::cloud_event_attribute_value::Attr::CeString(format!("k{}", j % keys.max(1)));
                e.attributes.insert("partitionkey".into(), cloud_event::CloudEventAttributeValue { attr: Some(key) });
                e
            })
            .collect();
        client.publish(PublishRequest { stream: stream.into(), events }).await.unwrap();
    }
}

/// Creates `stream` with `n` events of `bytes` and then subscription `ef` on it (from the
/// earliest event).
pub async fn prefilled(env: &Env, stream: &str, n: usize, bytes: usize) {
    env.create_stream(stream).await;
    prefill(env, stream, n, bytes).await;
    env.create_subscription(stream, "ef").await;
}

/// Publishes `n` events to `stream` in batches of 100, 4 requests in flight.
async fn prefill(env: &Env, stream: &str, n: usize, bytes: usize) {
    let data = payload(bytes);
    let mut tasks = JoinSet::new();
    for w in 0..4 {
        let mut client = PublisherServiceClient::new(env.services.publisher.clone());
        let (data, stream) = (data.clone(), stream.to_string());
        tasks.spawn(async move {
            for i in (w..n.div_ceil(100)).step_by(4) {
                let events = (i * 100..((i + 1) * 100).min(n)).map(|j| event(format!("p-{j}"), data.clone())).collect();
                client.publish(PublishRequest { stream: stream.clone(), events }).await.unwrap();
            }
        });
    }
    tasks.join_all().await;
}

/// Drains `n` events of `stream` through one Subscribe call of subscription `ef`, acking every
/// delivered batch with its own Acknowledge call as soon as it arrives (so delivery continues
/// while acks are in flight). The clock stops when the last ack returned.
pub async fn ef_consume(services: &Services, stream: &str, n: usize, max_outstanding: i32) -> Run {
    let mut client = SubscriberServiceClient::new(services.subscriber.clone());
    let request = SubscribeRequest {
        stream: stream.into(),
        subscription: "ef".into(),
        max_outstanding_messages: max_outstanding,
        max_outstanding_bytes: 0,
    };
    let probe = Probe::begin(&services.redis_url).await;
    let start = Instant::now();
    let run = async {
        let mut deliveries = client.subscribe(request).await.unwrap().into_inner();
        let mut acks = JoinSet::new();
        let mut received = 0;
        while received < n {
            let batch = deliveries.message().await.unwrap().expect("subscribe stream ended early");
            received += batch.events.len();
            let ack_ids = batch.events.into_iter().map(|e| e.ack_id).collect();
            let mut client = client.clone();
            acks.spawn(async move { client.acknowledge(AcknowledgeRequest { ack_ids }).await.unwrap().into_inner() });
        }
        for reply in acks.join_all().await {
            let unsettled = reply.invalid_ack_ids.len() + reply.expired_ack_ids.len();
            assert_eq!(unsettled, 0, "{unsettled} acks were invalid or expired");
        }
        assert_eq!(received, n, "more deliveries than events (redeliveries?)");
    };
    tokio::time::timeout(RUN_DEADLINE, run).await.expect("subscribe run timed out");
    Run::finish(&services.redis_url, probe, n, start).await
}

/// Drains `n` entries of `stream`'s Redis stream through a new consumer group of its own:
/// `XREADGROUP COUNT <count> ... >`, then one XACK of all ids read, in a loop.
pub async fn direct_consume(env: &Env, stream: &str, n: usize, count: usize) -> Run {
    let key = env.stream_key(stream);
    let mut conn = env.redis_conn().await;
    let _: () = conn.xgroup_create(&key, "direct", "0").await.unwrap();
    let opts = StreamReadOptions::default().group("direct", "c1").count(count);
    let probe = Probe::begin(&env.services.redis_url).await;
    let start = Instant::now();
    let run = async {
        let mut acked = 0;
        while acked < n {
            let reply: StreamReadReply = conn.xread_options(&[&key], &[">"], &opts).await.unwrap();
            let ids: Vec<String> = reply.keys.into_iter().flat_map(|k| k.ids).map(|e| e.id).collect();
            assert!(!ids.is_empty(), "stream drained after {acked} of {n} entries");
            let n_acked: usize = conn.xack(&key, "direct", &ids).await.unwrap();
            acked += n_acked;
        }
    };
    tokio::time::timeout(RUN_DEADLINE, run).await.expect("XREADGROUP run timed out");
    Run::finish(&env.services.redis_url, probe, n, start).await
}

/// Publishes one event per request at `latency_rate` for one second of warm-up plus
/// `latency_secs`, each event's data starting with its send time (µs since the bench's clock
/// base) and sequence number; one Subscribe call receives and acks them. Latency is receipt
/// time minus send time, for events sent after the warm-up.
///
/// Acks are gathered as eventflow's own clients gather them (`libs/client/src/settler.rs`, the
/// Python client's `_Settler`): one Acknowledge call for what arrived within [`ACK_DELAY`] of the
/// first unsent id (at most 1000 ids). The wait is after receipt, so it is not in the figure,
/// and it does not hold deliveries back: far fewer than `max_outstanding` events are
/// unacknowledged at this rate. Publishes follow a tokio interval, whose ticks
/// land on the 1 ms timer: at 5 k ev/s they go out 5 at a time each millisecond (even pacing
/// from a thread was measured and not kept: docs/next-steps.md item 100).
pub async fn latency(env: &Env, args: &Args) -> LatencyResult {
    let stream = "latency";
    env.create_stream(stream).await;
    env.create_subscription(stream, "ef").await;
    let rate = u64::from(args.latency_rate.max(1));
    let warm = usize::try_from(rate).unwrap_or(usize::MAX);
    let total = warm + usize::try_from(rate * args.latency_secs).unwrap_or(usize::MAX);
    let base = Instant::now();
    let micros = move || u64::try_from(base.elapsed().as_micros()).unwrap_or(u64::MAX);

    let mut sub_client = SubscriberServiceClient::new(env.services.subscriber.clone());
    let request = SubscribeRequest {
        stream: stream.into(),
        subscription: "ef".into(),
        max_outstanding_messages: args.max_outstanding,
        max_outstanding_bytes: 0,
    };
    let mut deliveries = sub_client.subscribe(request).await.unwrap().into_inner();
    let consumer = tokio::spawn(async move {
        let mut latencies: Vec<(u64, u64)> = Vec::with_capacity(total);
        let mut acks = JoinSet::new();
        let mut ack_ids = Vec::new();
        // When the gathered acks go at the latest.
        let mut ack_due: Option<Instant> = None;
        while latencies.len() < total || !ack_ids.is_empty() {
            let due = ack_due.filter(|_| latencies.len() < total);
            let batch = tokio::select! {
                message = deliveries.message(), if latencies.len() < total => {
                    message.unwrap().expect("subscribe stream ended early")
                }
                // Without a due time (every event is in) the last acks go at once.
                () = tokio::time::sleep_until(due.unwrap_or_else(Instant::now).into()),
                    if due.is_some() || latencies.len() >= total => {
                    let mut client = sub_client.clone();
                    let ack_ids = std::mem::take(&mut ack_ids);
                    acks.spawn(async move { client.acknowledge(AcknowledgeRequest { ack_ids }).await.unwrap() });
                    ack_due = None;
                    while acks.try_join_next().is_some() {}
                    continue;
                }
            };
            let now = micros();
            ack_due.get_or_insert_with(|| Instant::now() + ACK_DELAY);
            for received in batch.events {
                let data = match received.event.and_then(|e| e.data) {
                    Some(cloud_event::Data::BinaryData(data)) => data,
                    other => panic!("unexpected event data {other:?}"),
                };
                let sent = u64::from_le_bytes(data[0..8].try_into().unwrap());
                let seq = u64::from_le_bytes(data[8..16].try_into().unwrap());
                latencies.push((seq, now.saturating_sub(sent)));
                ack_ids.push(received.ack_id);
            }
            if ack_ids.len() >= 1000 {
                ack_due = Some(Instant::now());
            }
        }
        acks.join_all().await;
        latencies
    });

    let filler = payload(args.event_bytes.max(16));
    let probe = Probe::begin(&env.services.redis_url).await;
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    let mut sends = JoinSet::new();
    let mut publish_times = Vec::with_capacity(total);
    let mut measured_from = Instant::now();
    for seq in 0..total {
        ticker.tick().await;
        if seq == warm {
            measured_from = Instant::now();
        }
        let mut client = PublisherServiceClient::new(env.services.publisher.clone());
        let mut data = filler.clone();
        let stream = stream.to_string();
        sends.spawn(async move {
            data[0..8].copy_from_slice(&micros().to_le_bytes());
            data[8..16].copy_from_slice(&(seq as u64).to_le_bytes());
            let events = vec![event(format!("l-{seq}"), data)];
            let sent = micros();
            client.publish(PublishRequest { stream, events }).await.unwrap();
            (seq as u64, micros().saturating_sub(sent))
        });
        while let Some(done) = sends.try_join_next() {
            publish_times.push(done.unwrap());
        }
    }
    let achieved = per_second(total - warm, measured_from.elapsed());
    publish_times.extend(sends.join_all().await);
    let latencies = tokio::time::timeout(RUN_DEADLINE, consumer).await.expect("latency run timed out").unwrap();
    let usage = probe.end(&env.services.redis_url).await;

    let (p50_ms, p99_ms, max_ms, events) = percentiles(latencies, warm as u64);
    let (publish_p50_ms, publish_p99_ms, _, _) = percentiles(publish_times, warm as u64);
    LatencyResult { p50_ms, p99_ms, max_ms, events, achieved, publish_p50_ms, publish_p99_ms, usage: (usage, total) }
}

/// p50, p99 and max in ms of the `(seq, µs)` samples with `seq >= from`, and their count.
fn percentiles(mut samples: Vec<(u64, u64)>, from: u64) -> (f64, f64, f64, usize) {
    samples.retain(|(seq, _)| *seq >= from);
    let mut micros_only: Vec<u64> = samples.into_iter().map(|(_, l)| l).collect();
    micros_only.sort_unstable();
    let pct = |p: f64| {
        let i = ((micros_only.len().saturating_sub(1)) as f64 * p).round() as usize;
        micros_only.get(i).copied().unwrap_or(0) as f64 / 1000.0
    };
    (pct(0.50), pct(0.99), pct(1.0), micros_only.len())
}
