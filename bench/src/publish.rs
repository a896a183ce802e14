//! Publish throughput: eventflow's PublisherService vs. XADD with redis-rs.
//!
//! Both sides work off a shared request counter with the same number of concurrent workers, so
//! they publish the same number of events with the same parallelism; connections are opened
//! before the clock starts.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use eventflow_proto::v1::{PublishRequest, PublishStreamRequest, publisher_service_client::PublisherServiceClient};
use redis::aio::MultiplexedConnection;
use tokio::{
    sync::{Semaphore, mpsc},
    task::JoinSet,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::{
    Args, Run,
    measure::Probe,
    setup::{Env, Services, event, payload},
    warmup,
};

/// Unary-publish figures.
pub struct UnaryResult {
    /// One-event Publish requests from concurrent callers.
    pub eventflow: Run,
    /// XADDs from concurrent tasks sharing one multiplexed connection.
    pub shared: Run,
    /// XADDs from concurrent tasks with one multiplexed connection each.
    pub per_task: Run,
}

/// Round `round` of batch Publish ([`crate::rounds`]): a stream of its own, a warm-up, then
/// `batch_events` in requests of `batch_size`, `batch_concurrency` in flight. Each round starts
/// from a new stream, so every round measures the same thing: the dedup ids of earlier rounds
/// would make each later one slower (their hash grows: 0.26 → 0.65 µs/ev of HSET by the third
/// round on one stream).
pub async fn batch(env: &Env, args: &Args, round: usize) -> Run {
    let stream = format!("batch{round}");
    env.create_stream(&stream).await;
    let (n, size, conc, bytes) = (args.batch_events, args.batch_size, args.batch_concurrency, args.event_bytes);
    ef_publish(&env.services, &stream, "bw", warmup(n), size, conc, bytes).await;
    let run = ef_publish(&env.services, &stream, "b", n, size, conc, bytes).await;
    cleanup(env, &[env.stream_key(&stream)]).await;
    run
}

/// Round `round` of PublishStream: a stream of its own, a warm-up, then `batch_events` over one
/// call in requests of `batch_size`, at most `stream_window` unanswered.
pub async fn stream(env: &Env, args: &Args, round: usize) -> Run {
    let stream = format!("pstream{round}");
    env.create_stream(&stream).await;
    let shape = (args.batch_size, args.stream_window, args.event_bytes);
    ef_stream(&env.services, &stream, "sw", warmup(args.batch_events), shape).await;
    let run = ef_stream(&env.services, &stream, "s", args.batch_events, shape).await;
    cleanup(env, &[env.stream_key(&stream)]).await;
    run
}

/// Round `round` of the batch baseline: a key of its own, a warm-up, then `batch_events` in
/// pipelines of `batch_size` XADDs, `batch_concurrency` in flight.
pub async fn pipelined(env: &Env, args: &Args, round: usize) -> Run {
    let key = env.direct_key(&format!("batch{round}"));
    let (n, size, conc, bytes) = (args.batch_events, args.batch_size, args.batch_concurrency, args.event_bytes);
    direct_pipelined(env, &key, warmup(n), size, conc, bytes).await;
    let run = direct_pipelined(env, &key, n, size, conc, bytes).await;
    cleanup(env, &[key]).await;
    run
}

/// Unary publish: eventflow vs. the two redis-rs XADD baselines.
pub async fn unary(env: &Env, args: &Args) -> UnaryResult {
    let stream = "unary";
    env.create_stream(stream).await;
    let key = env.direct_key("unary");
    let (n, callers, bytes) = (args.unary_events, args.unary_callers, args.event_bytes);
    ef_publish(&env.services, stream, "uw", warmup(n), 1, callers, bytes).await;
    let eventflow = ef_publish(&env.services, stream, "u", n, 1, callers, bytes).await;
    direct_unary(env, &key, warmup(n), callers, bytes, false).await;
    let shared = direct_unary(env, &key, n, callers, bytes, false).await;
    direct_unary(env, &key, warmup(n), callers, bytes, true).await;
    let per_task = direct_unary(env, &key, n, callers, bytes, true).await;
    cleanup(env, &[env.stream_key(stream), key]).await;
    UnaryResult { eventflow, shared, per_task }
}

/// Publishes `n` events through PublisherService in requests of `size` from `workers`
/// concurrent callers on one channel; returns events per second. Event ids are unique
/// (`<tag>-<request>-<index>`), so none is a duplicate.
pub async fn ef_publish(
    services: &Services,
    stream: &str,
    tag: &str,
    n: usize,
    size: usize,
    workers: usize,
    bytes: usize,
) -> Run {
    let requests = n.div_ceil(size);
    let next = Arc::new(AtomicUsize::new(0));
    let data = payload(bytes);
    let probe = Probe::begin(&services.redis_url).await;
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..workers {
        let mut client = PublisherServiceClient::new(services.publisher.clone());
        let (next, data, stream, tag) = (next.clone(), data.clone(), stream.to_string(), tag.to_string());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests {
                    break;
                }
                let events = (0..size).map(|j| event(format!("{tag}-{i}-{j}"), data.clone())).collect();
                let reply = client.publish(PublishRequest { stream: stream.clone(), events }).await.unwrap();
                let results = reply.into_inner().results;
                let failed: Vec<_> = results.iter().filter(|r| r.error.is_some() || r.duplicate).collect();
                if let Some(first) = failed.first() {
                    panic!("publish reported {} failed or duplicate events, e.g. {first:?}", failed.len());
                }
            }
        });
    }
    tasks.join_all().await;
    Run::finish(&services.redis_url, probe, requests * size, start).await
}

/// Publishes `n` events over one PublishStream call; `(size, window, bytes)`: events per
/// request, most requests unanswered, bytes of data per event. Checks every answer is in
/// order and stored everything; returns events per second.
async fn ef_stream(services: &Services, stream: &str, tag: &str, n: usize, shape: (usize, usize, usize)) -> Run {
    let (size, window, bytes) = shape;
    let requests = n.div_ceil(size);
    let data = payload(bytes);
    let mut client = PublisherServiceClient::new(services.publisher.clone());
    let (tx, rx) = mpsc::channel(window);
    let room = Arc::new(Semaphore::new(window));
    let probe = Probe::begin(&services.redis_url).await;
    let start = Instant::now();
    let mut answers = client.publish_stream(ReceiverStream::new(rx)).await.unwrap().into_inner();
    let sender = {
        let (room, stream, tag) = (room.clone(), stream.to_string(), tag.to_string());
        tokio::spawn(async move {
            for i in 0..requests {
                room.acquire().await.unwrap().forget();
                let events = (0..size).map(|j| event(format!("{tag}-{i}-{j}"), data.clone())).collect();
                let request = PublishStreamRequest { stream: stream.clone(), events, request_id: i as u64 };
                tx.send(request).await.unwrap();
            }
        })
    };
    for i in 0..requests {
        let answer = answers.message().await.unwrap().expect("an answer per request");
        assert_eq!(answer.request_id, i as u64, "answers in request order");
        assert!(answer.error.is_none() && answer.results.iter().all(|r| r.error.is_none() && !r.duplicate));
        room.add_permits(1);
    }
    sender.await.unwrap();
    Run::finish(&services.redis_url, probe, requests * size, start).await
}

/// XADDs `n` entries (`e` = `bytes` of data) to `key` in pipelines of `size` from `workers`
/// tasks, each with its own connection; returns entries per second.
async fn direct_pipelined(env: &Env, key: &str, n: usize, size: usize, workers: usize, bytes: usize) -> Run {
    let pipelines = n.div_ceil(size);
    let next = Arc::new(AtomicUsize::new(0));
    let data = payload(bytes);
    let mut conns = Vec::with_capacity(workers);
    for _ in 0..workers {
        conns.push(env.redis_conn().await);
    }
    let probe = Probe::begin(&env.services.redis_url).await;
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for mut conn in conns {
        let (next, data, key) = (next.clone(), data.clone(), key.to_string());
        tasks.spawn(async move {
            loop {
                if next.fetch_add(1, Ordering::Relaxed) >= pipelines {
                    break;
                }
                let mut pipe = redis::pipe();
                for _ in 0..size {
                    pipe.cmd("XADD").arg(&key).arg("*").arg("e").arg(&data);
                }
                let ids: Vec<String> = pipe.query_async(&mut conn).await.unwrap();
                assert_eq!(ids.len(), size);
            }
        });
    }
    tasks.join_all().await;
    Run::finish(&env.services.redis_url, probe, pipelines * size, start).await
}

/// XADDs `n` entries to `key`, one awaited XADD at a time per task, from `workers` tasks that
/// share one multiplexed connection (`per_task` false) or have one each; entries per second.
async fn direct_unary(env: &Env, key: &str, n: usize, workers: usize, bytes: usize, per_task: bool) -> Run {
    let next = Arc::new(AtomicUsize::new(0));
    let data = payload(bytes);
    let mut conns: Vec<MultiplexedConnection> = Vec::with_capacity(workers);
    let shared = env.redis_conn().await;
    for _ in 0..workers {
        conns.push(if per_task { env.redis_conn().await } else { shared.clone() });
    }
    let probe = Probe::begin(&env.services.redis_url).await;
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for mut conn in conns {
        let (next, data, key) = (next.clone(), data.clone(), key.to_string());
        tasks.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let _: String =
                    redis::cmd("XADD").arg(&key).arg("*").arg("e").arg(&data).query_async(&mut conn).await.unwrap();
            }
        });
    }
    tasks.join_all().await;
    Run::finish(&env.services.redis_url, probe, n, start).await
}

/// The gRPC ceiling: `n` grpc.health.v1 Check calls (a no-op unary call) to the publisher's
/// server from `callers` concurrent callers on the shared channel; calls per second.
pub async fn health_ceiling(env: &Env, n: usize, callers: usize) -> Run {
    let next = Arc::new(AtomicUsize::new(0));
    let probe = Probe::begin(&env.services.redis_url).await;
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..callers {
        let mut client = HealthClient::new(env.services.publisher.clone());
        let next = next.clone();
        tasks.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                client.check(HealthCheckRequest { service: String::new() }).await.unwrap();
            }
        });
    }
    tasks.join_all().await;
    Run::finish(&env.services.redis_url, probe, n, start).await
}

/// Deletes benchmark keys (and the stream's dedup keys stay until their TTL; they are small).
async fn cleanup(env: &Env, keys: &[String]) {
    let mut conn = env.redis_conn().await;
    let _: i64 = redis::cmd("DEL").arg(keys).query_async(&mut conn).await.unwrap();
}
