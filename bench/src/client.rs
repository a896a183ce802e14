//! The client library's figures (`BENCH_ONLY=client`): what an application using
//! `eventflow-client` gets, where the other figures call the generated stubs directly.
//!
//! * `client_publish`: `Publisher::publish` from `unary_callers` tasks, each awaiting its
//!   event's result before sending the next — the unary shape, which the library turns into
//!   batched Publish calls (its defaults: 5 ms linger, up to 500 events a request, 4 requests
//!   in flight) — against JetStream publish + awaited ack from as many callers.
//! * `client_subscribe_ack`: `Subscriber::run` with `max_outstanding` handlers that ack at once
//!   (the library settles in batches of up to 1000 ids or 5 ms) draining pre-published events,
//!   against the XREADGROUP + XACK loop of the subscribe figure.
//!
//! Both are for information: the issue sets targets on the raw calls, and these show what the
//! library's batching adds or costs on top of them.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use eventflow_client::{
    CancellationToken, Connection, Outcome, Publisher, PublisherConfig, Subscriber, SubscriberConfig,
};
use tokio::task::JoinSet;

use crate::{
    Args, Run, consume,
    measure::Probe,
    setup::{Env, event, payload},
    warmup,
};

/// How long one client run may take before the bench gives up on it.
const RUN_DEADLINE: Duration = Duration::from_secs(120);

/// `n` events published through one [`Publisher`] by `callers` tasks, each awaiting its
/// event's result before the next (after a warm-up of the same shape).
pub async fn publish(env: &Env, args: &Args) -> Run {
    let stream = "clientpub";
    env.create_stream(stream).await;
    let connection = Connection::plain(format!("http://{}", env.publisher.addr)).unwrap();
    let publisher = Arc::new(Publisher::new(&connection, PublisherConfig::default()));
    let n = args.batch_events;
    publish_run(env, &publisher, stream, "cw", warmup(n), args).await;
    let run = publish_run(env, &publisher, stream, "c", n, args).await;
    publisher.close().await;
    run
}

/// One timed run of [`publish`]: event ids `<tag>-<i>`, so none is a duplicate.
async fn publish_run(env: &Env, publisher: &Arc<Publisher>, stream: &str, tag: &str, n: usize, args: &Args) -> Run {
    let next = Arc::new(AtomicUsize::new(0));
    let data = payload(args.event_bytes);
    let probe = Probe::begin(&env.services.redis_url).await;
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..args.unary_callers {
        let (publisher, next, data, stream, tag) =
            (publisher.clone(), next.clone(), data.clone(), stream.to_string(), tag.to_string());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let published = publisher.publish(&stream, event(format!("{tag}-{i}"), data.clone())).await.unwrap();
                assert!(!published.duplicate, "event {tag}-{i} reported as a duplicate");
            }
        });
    }
    tokio::time::timeout(RUN_DEADLINE, tasks.join_all()).await.expect("client publish run timed out");
    Run::finish(&env.services.redis_url, probe, n, start).await
}

/// Subscribe + Acknowledge through [`Subscriber`] (after a warm-up of the same shape), and
/// the XREADGROUP + XACK loop on the same events in a consumer group of its own.
pub async fn subscribe(env: &Env, args: &Args) -> (Run, Run) {
    let n = args.subscribe_events;
    for (stream, count) in [("clientwarm", warmup(n)), ("clientsub", n)] {
        consume::prefilled(env, stream, count, args.event_bytes).await;
    }
    let max = usize::try_from(args.max_outstanding).unwrap_or(1).max(1);
    subscribe_run(env, "clientwarm", warmup(n), max).await;
    let client = subscribe_run(env, "clientsub", n, max).await;
    consume::direct_consume(env, "clientwarm", warmup(n), args.read_count).await;
    let baseline = consume::direct_consume(env, "clientsub", n, args.read_count).await;
    (client, baseline)
}

/// Drains `n` events of `stream` (subscription `ef`) with `max` handlers that ack at once;
/// the clock stops when the subscriber has drained, i.e. every ack's call returned.
async fn subscribe_run(env: &Env, stream: &str, n: usize, max: usize) -> Run {
    let connection = Connection::plain(format!("http://{}", env.subscriber.addr)).unwrap();
    let config = SubscriberConfig { max_concurrency: max, ..SubscriberConfig::new(stream, "ef") };
    let subscriber = Subscriber::new(&connection, config);
    let (handled, done) = (Arc::new(AtomicUsize::new(0)), CancellationToken::new());
    let handler = {
        let (handled, done) = (handled.clone(), done.clone());
        move |_event| {
            if handled.fetch_add(1, Ordering::Relaxed) + 1 == n {
                done.cancel();
            }
            std::future::ready(Outcome::Ack)
        }
    };
    let probe = Probe::begin(&env.services.redis_url).await;
    let start = Instant::now();
    tokio::time::timeout(RUN_DEADLINE, subscriber.run(handler, done)).await.expect("client run timed out").unwrap();
    let run = Run::finish(&env.services.redis_url, probe, n, start).await;
    let stats = subscriber.stats();
    assert_eq!(stats.acked, n as u64, "the subscriber acked {} of {n} events: {stats:?}", stats.acked);
    assert_eq!(stats.expired + stats.settle_failures + stats.nacked, 0, "unsettled events: {stats:?}");
    run
}
