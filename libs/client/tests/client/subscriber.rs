//! Subscriber: reconnect across a subscriber service restart, lease extension for a slow
//! handler, graceful drain, batched settlement (fewer calls, a partial batch flushed by the
//! drain, batched acks retried across a restart).

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use eventflow_client::{CancellationToken, Connection, Outcome, Subscriber, SubscriberConfig};
use eventflow_e2e::{Kind, Stack, event, eventually, scrape, start, start_at, value};
use tokio::{
    sync::{Barrier, Semaphore},
    task::JoinHandle,
};

/// A client connection to a subscriber service at `addr`.
fn connection(addr: std::net::SocketAddr) -> Connection {
    Connection::plain(format!("http://{addr}")).unwrap()
}

/// Event ids the handler saw, in order.
type Seen = Arc<Mutex<Vec<String>>>;

/// Ids of the events in `seen`, as a set.
fn ids(seen: &Seen) -> HashSet<String> {
    seen.lock().unwrap().iter().map(|s| s.split('#').next().unwrap().to_string()).collect()
}

/// Runs `subscriber` on a task with a handler that records `<event id>#<delivery attempt>` in
/// `seen`, then waits for a permit of `gate` (never returned) and acknowledges.
fn spawn_gated(
    subscriber: Arc<Subscriber>,
    seen: Seen,
    gate: Arc<Semaphore>,
    shutdown: CancellationToken,
) -> JoinHandle<Result<(), eventflow_client::ClientError>> {
    tokio::spawn(async move {
        let handler = move |e: eventflow_client::ReceivedEvent| {
            let (seen, gate) = (seen.clone(), gate.clone());
            async move {
                seen.lock().unwrap().push(format!("{}#{}", e.event.as_ref().unwrap().id, e.delivery_attempt));
                gate.acquire().await.unwrap().forget();
                Outcome::Ack
            }
        };
        subscriber.run(handler, shutdown).await
    })
}

/// Waits until the handler has seen `n` deliveries.
async fn handlers_seen(seen: &Seen, n: usize) {
    eventually(&format!("{n} handlers seen"), Duration::from_secs(10), || async {
        (seen.lock().unwrap().len() == n).then_some(())
    })
    .await;
}

/// A gate that never holds a handler back.
fn open_gate() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(Semaphore::MAX_PERMITS))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_reconnects_when_the_subscriber_service_restarts() {
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    stack.create_subscription("s", "sub", 30, 0).await;
    let service = start(Kind::Subscriber, &stack.redis.url(), &stack.prefix, &[]).await;
    let addr = service.addr;
    let subscriber = Arc::new(Subscriber::new(&connection(addr), SubscriberConfig::new("s", "sub")));
    let seen: Seen = Arc::default();
    let shutdown = CancellationToken::new();
    let running = spawn_gated(subscriber.clone(), seen.clone(), open_gate(), shutdown.clone());
    stack.publish("s", (0..5).map(|i| event(&format!("a-{i}"), "t")).collect()).await;
    eventually("5 acked", Duration::from_secs(10), || async { (subscriber.stats().acked == 5).then_some(()) }).await;

    service.stop().await;
    stack.publish("s", (0..5).map(|i| event(&format!("b-{i}"), "t")).collect()).await;
    let service = start_at(Kind::Subscriber, addr, &stack.redis.url(), &stack.prefix, &[]).await;
    eventually("10 acked", Duration::from_secs(20), || async { (subscriber.stats().acked == 10).then_some(()) }).await;
    assert!(subscriber.stats().reconnects >= 1, "{:?}", subscriber.stats());
    assert_eq!(ids(&seen).len(), 10);

    shutdown.cancel();
    running.await.unwrap().unwrap();
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_extension_keeps_a_slow_handlers_event_from_redelivery() {
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    // A 2 s ack deadline; the handler runs past it.
    stack.create_subscription("s", "sub", 2, 10).await;
    let config = SubscriberConfig {
        max_concurrency: 4,
        lease: Some(Duration::from_secs(2)),
        ..SubscriberConfig::new("s", "sub")
    };
    let subscriber = Arc::new(Subscriber::new(&connection(stack.subscriber.addr), config));
    let seen: Seen = Arc::default();
    let gate = Arc::new(Semaphore::new(0));
    let shutdown = CancellationToken::new();
    let running = spawn_gated(subscriber.clone(), seen.clone(), gate.clone(), shutdown.clone());
    stack.publish("s", vec![event("slow", "t")]).await;
    // Three extensions, one every half deadline: the handler has held the event for 1.5 deadlines.
    eventually("3 lease extensions", Duration::from_secs(20), || async {
        (subscriber.stats().lease_extensions >= 3).then_some(())
    })
    .await;
    gate.add_permits(1);
    eventually("acked", Duration::from_secs(10), || async { (subscriber.stats().acked == 1).then_some(()) }).await;
    shutdown.cancel();
    running.await.unwrap().unwrap();
    assert_eq!(*seen.lock().unwrap(), vec!["slow#1".to_string()], "delivered once, never redelivered");
    assert_eq!(subscriber.stats().expired, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_finishes_and_settles_in_flight_handlers_and_takes_nothing_new() {
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    stack.create_subscription("s", "sub", 30, 0).await;
    let config = SubscriberConfig { max_concurrency: 3, ..SubscriberConfig::new("s", "sub") };
    let subscriber = Arc::new(Subscriber::new(&connection(stack.subscriber.addr), config));
    let seen: Seen = Arc::default();
    let gate = Arc::new(Semaphore::new(0));
    let shutdown = CancellationToken::new();
    let running = spawn_gated(subscriber.clone(), seen.clone(), gate.clone(), shutdown.clone());
    stack.publish("s", (0..5).map(|i| event(&format!("e-{i}"), "t")).collect()).await;
    handlers_seen(&seen, 3).await;
    shutdown.cancel();
    gate.add_permits(3);
    running.await.unwrap().unwrap();
    let first = ids(&seen);
    assert_eq!(first.len(), 3);
    assert_eq!(subscriber.stats().acked, 3, "{:?}", subscriber.stats());

    // The two events never started go to the next consumer; the three settled ones do not.
    let next = Arc::new(Subscriber::new(&connection(stack.subscriber.addr), SubscriberConfig::new("s", "sub")));
    let rest: Seen = Arc::default();
    let shutdown = CancellationToken::new();
    let running = spawn_gated(next, rest.clone(), open_gate(), shutdown.clone());
    eventually("2 more", Duration::from_secs(10), || async { (rest.lock().unwrap().len() >= 2).then_some(()) }).await;
    shutdown.cancel();
    running.await.unwrap().unwrap();
    let rest = ids(&rest);
    assert_eq!(rest.len(), 2);
    assert!(rest.is_disjoint(&first), "{rest:?} vs {first:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_a_reconnect_cannot_fix_ends_run() {
    let stack = Stack::start().await;
    let subscriber = Subscriber::new(&connection(stack.subscriber.addr), SubscriberConfig::new("missing", "sub"));
    let result = subscriber.run(|_| async { Outcome::Ack }, CancellationToken::new()).await;
    assert_eq!(result.unwrap_err().code(), Some(tonic::Code::NotFound));
}

/// Acknowledge calls the subscriber service answered with OK so far.
async fn acknowledge_calls(stack: &Stack) -> f64 {
    let acks = [("method", "/eventflow.v1.SubscriberService/Acknowledge"), ("code", "OK")];
    value(&scrape(&stack.subscriber).await, "eventflow_grpc_requests_total", &acks)
}

/// Runs a subscriber of `sub` on `config.stream` (which holds `max_concurrency` events) with
/// `config` whose handler waits until all `max_concurrency` handlers run, then acknowledges;
/// returns the Acknowledge calls the service answered for its `max_concurrency` events.
async fn acks_of_handlers_finishing_together(stack: &Stack, sub: &str, config: SubscriberConfig) -> f64 {
    let n = config.max_concurrency;
    stack.create_subscription(&config.stream, sub, 30, 0).await;
    let before = acknowledge_calls(stack).await;
    let subscriber = Arc::new(Subscriber::new(&connection(stack.subscriber.addr), config));
    let barrier = Arc::new(Barrier::new(n));
    let shutdown = CancellationToken::new();
    let running = {
        let (subscriber, shutdown) = (subscriber.clone(), shutdown.clone());
        tokio::spawn(async move {
            let handler = move |_| {
                let barrier = barrier.clone();
                async move {
                    barrier.wait().await;
                    Outcome::Ack
                }
            };
            subscriber.run(handler, shutdown).await
        })
    };
    eventually("all acked", Duration::from_secs(10), || async { (subscriber.stats().acked == n as u64).then_some(()) })
        .await;
    shutdown.cancel();
    running.await.unwrap().unwrap();
    assert_eq!(subscriber.stats().settle_failures, 0);
    acknowledge_calls(stack).await - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_of_handlers_that_finish_together_share_a_call_or_a_quarter_of_a_large_window() {
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    stack.publish("s", (0..10).map(|i| event(&format!("e-{i}"), "t")).collect()).await;
    // Only a full batch is sent (the delay is an hour). Ten acks make one call: a small window
    // is one batch.
    let batched = SubscriberConfig {
        max_concurrency: 10,
        ack_batch_size: 100,
        ack_batch_delay: Duration::from_secs(3600),
        ..SubscriberConfig::new("s", "batched")
    };
    assert_eq!(acks_of_handlers_finishing_together(&stack, "batched", batched).await, 1.0);
    // The same with a batch size of 1: one call per event.
    let single = SubscriberConfig { max_concurrency: 10, ack_batch_size: 1, ..SubscriberConfig::new("s", "single") };
    assert_eq!(acks_of_handlers_finishing_together(&stack, "single", single).await, 10.0);
    // A thousand slots: batches of a quarter, so the window keeps flowing while a call runs.
    stack.create_stream("big").await;
    for chunk in 0..2 {
        stack.publish("big", (0..500).map(|i| event(&format!("b-{chunk}-{i}"), "t")).collect()).await;
    }
    let large = SubscriberConfig {
        max_concurrency: 1000,
        ack_batch_delay: Duration::from_secs(3600),
        ..SubscriberConfig::new("big", "large")
    };
    assert_eq!(acks_of_handlers_finishing_together(&stack, "large", large).await, 4.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_flushes_a_partial_batch_at_once() {
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    stack.create_subscription("s", "sub", 30, 0).await;
    // Two events on three slots: the batch never fills, and its delay is an hour.
    let config = SubscriberConfig {
        max_concurrency: 3,
        ack_batch_delay: Duration::from_secs(3600),
        ..SubscriberConfig::new("s", "sub")
    };
    let subscriber = Arc::new(Subscriber::new(&connection(stack.subscriber.addr), config));
    let seen: Seen = Arc::default();
    let shutdown = CancellationToken::new();
    let running = spawn_gated(subscriber.clone(), seen.clone(), open_gate(), shutdown.clone());
    stack.publish("s", vec![event("a", "t"), event("b", "t")]).await;
    handlers_seen(&seen, 2).await;
    assert_eq!(subscriber.stats().acked, 0, "the acks wait in the open batch");
    shutdown.cancel();
    running.await.unwrap().unwrap();
    let stats = subscriber.stats();
    assert_eq!((stats.acked, stats.settle_calls), (2, 1), "{stats:?}");
    assert_eq!(stack.stats("s").await.subscriptions[0].pending, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_acks_are_retried_across_a_subscriber_service_restart() {
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    stack.create_subscription("s", "sub", 30, 0).await;
    let service = start(Kind::Subscriber, &stack.redis.url(), &stack.prefix, &[]).await;
    let addr = service.addr;
    let config = SubscriberConfig { max_concurrency: 10, ..SubscriberConfig::new("s", "sub") };
    let subscriber = Arc::new(Subscriber::new(&connection(addr), config));
    let seen: Seen = Arc::default();
    let gate = Arc::new(Semaphore::new(0));
    let shutdown = CancellationToken::new();
    let running = spawn_gated(subscriber.clone(), seen.clone(), gate.clone(), shutdown.clone());
    stack.publish("s", (0..10).map(|i| event(&format!("e-{i}"), "t")).collect()).await;
    handlers_seen(&seen, 10).await;

    // The acks are sent while the service is down: the batch is retried until it is back.
    service.stop().await;
    gate.add_permits(1000);
    eventually("a failed try", Duration::from_secs(10), || async {
        (subscriber.stats().settle_calls >= 1).then_some(())
    })
    .await;
    assert_eq!(subscriber.stats().acked, 0);
    let service = start_at(Kind::Subscriber, addr, &stack.redis.url(), &stack.prefix, &[]).await;
    eventually("10 acked", Duration::from_secs(20), || async { (subscriber.stats().acked == 10).then_some(()) }).await;
    eventually("nothing pending", Duration::from_secs(10), || async {
        (stack.stats("s").await.subscriptions[0].pending == 0).then_some(())
    })
    .await;
    shutdown.cancel();
    running.await.unwrap().unwrap();
    // Each event acknowledged once; a delivery redelivered (the call broke before its ack
    // landed) is counted expired, never dropped.
    let stats = subscriber.stats();
    assert_eq!(ids(&seen).len(), 10);
    assert_eq!(stats.settle_failures, 0, "{stats:?}");
    assert_eq!(stats.acked + stats.expired, seen.lock().unwrap().len() as u64, "{stats:?}");
    service.stop().await;
}
