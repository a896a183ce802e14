//! Redis failure modes mapped to what a client should do: a replica (READONLY), a loading
//! dataset (LOADING), a busy script (BUSY) -> UNAVAILABLE and readiness NOT_SERVING until Redis
//! can take writes again; out of memory (OOM) -> RESOURCE_EXHAUSTED; an evicting
//! `maxmemory-policy` refused at start unless allowed, and kept NOT_SERVING when found later.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use eventflow_e2e::{
    Consumer, Kind, RedisServer, Running, Stack, event, eventually, run_to_exit, start, start_unready, unique_prefix,
    wait_for_health,
};
use eventflow_proto::v1::{
    CreateStreamRequest, PublishRequest, Stream, admin_service_client::AdminServiceClient,
    publisher_service_client::PublisherServiceClient,
};
use eventflow_runtime::health::LIVENESS;
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

const WAIT: Duration = Duration::from_secs(20);

fn request(stream: &str, id: &str) -> PublishRequest {
    PublishRequest { stream: stream.into(), events: vec![event(id, "t")] }
}

/// The readiness a service reports right now.
async fn readiness(running: &Running) -> ServingStatus {
    let mut client = HealthClient::new(running.channel().await);
    let reply = client.check(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    ServingStatus::try_from(reply.status).unwrap()
}

/// How often Redis ran `CONFIG GET` since it started (`INFO commandstats`).
fn config_get_calls(redis: &RedisServer) -> u64 {
    let stats = redis.raw("INFO commandstats");
    stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_config|get:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_is_not_ready_and_writes_are_unavailable_until_it_is_promoted() {
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    stack.create_subscription("s", "sub", 600, 0).await;
    let mut consumer = Consumer::open(&stack, "s", "sub", 10).await;
    assert!(stack.publish("s", vec![event("before", "t")]).await[0].error.is_none());
    assert_eq!(consumer.take(1, WAIT).await.len(), 1);

    // A failover: another Redis copies this one and takes over as master; this one follows it.
    let other = RedisServer::start();
    other.raw(&format!("REPLICAOF 127.0.0.1 {}", stack.redis.port()));
    let synced = || async { (other.info("replication", "master_link_status").as_deref() == Some("up")).then_some(()) };
    eventually("the other Redis in sync", WAIT, synced).await;
    assert!(other.raw("REPLICAOF NO ONE").starts_with("+OK"));
    assert!(stack.redis.raw(&format!("REPLICAOF 127.0.0.1 {}", other.port())).starts_with("+OK"));

    for running in [&stack.publisher, &stack.subscriber, &stack.admin, &stack.dlq] {
        wait_for_health(running, "", ServingStatus::NotServing).await;
        wait_for_health(running, LIVENESS, ServingStatus::Serving).await;
    }
    let mut publisher = stack.publisher().await;
    let status = publisher.publish(request("s", "during")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    assert!(stack.redis.raw("REPLICAOF NO ONE").starts_with("+OK"));
    for running in [&stack.publisher, &stack.subscriber, &stack.admin, &stack.dlq] {
        wait_for_health(running, "", ServingStatus::Serving).await;
    }
    let results = publisher.publish(request("s", "during")).await.unwrap().into_inner().results;
    assert!(results[0].error.is_none(), "{results:?}");
    // The Subscribe call open through the failover was kept and delivers the new event.
    let got = consumer.take(1, WAIT).await;
    assert_eq!(got[0].event.as_ref().unwrap().id, "during");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_loading_redis_is_not_ready_and_calls_are_unavailable_until_it_is_loaded() {
    let mut redis = RedisServer::start();
    let prefix = unique_prefix();
    let admin = start(Kind::Admin, &redis.url(), &prefix, &[]).await;
    let publisher = start(Kind::Publisher, &redis.url(), &prefix, &[]).await;
    let stream = Stream { name: "s".into(), ..Default::default() };
    let mut admin_client = AdminServiceClient::new(admin.channel().await);
    admin_client.create_stream(CreateStreamRequest { stream: Some(stream) }).await.unwrap();

    // 20 000 keys, rewritten into the AOF's RDB base, where `key-load-delay` applies: at 3 ms
    // a key, loading would take a minute, so the test sees it loading for as long as it needs.
    let filled = redis.raw("EVAL \"for i = 1, 20000 do redis.call('SET', 'fill:' .. i, 'x') end\" 0");
    assert!(filled.starts_with("$-1") || filled.starts_with("_"), "{filled}");
    assert!(redis.raw("BGREWRITEAOF").starts_with('+'));
    let rewritten = || async {
        let idle = |field| redis.info("persistence", field).as_deref() == Some("0");
        (idle("aof_rewrite_in_progress") && idle("aof_rewrite_scheduled")).then_some(())
    };
    eventually("the AOF rewrite", WAIT, rewritten).await;
    redis.restart_with(&["--key-load-delay", "3000", "--loading-process-events-interval-bytes", "1024"]);
    assert_eq!(redis.info("persistence", "loading").as_deref(), Some("1"));

    wait_for_health(&publisher, "", ServingStatus::NotServing).await;
    wait_for_health(&publisher, LIVENESS, ServingStatus::Serving).await;
    let mut client = PublisherServiceClient::new(publisher.channel().await);
    let status = client.publish(request("s", "while-loading")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(redis.info("persistence", "loading").as_deref(), Some("1"), "still loading after the call");

    assert!(redis.raw("CONFIG SET key-load-delay 0").starts_with("+OK"));
    wait_for_health(&publisher, "", ServingStatus::Serving).await;
    let results = client.publish(request("s", "while-loading")).await.unwrap().into_inner().results;
    assert!(results[0].error.is_none(), "{results:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_memory_is_resource_exhausted_until_memory_is_freed() {
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    let mut publisher = stack.publisher().await;
    assert!(stack.redis.raw("CONFIG SET maxmemory 1").starts_with("+OK"));
    let status = publisher.publish(request("s", "full")).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("out of memory"), "{status:?}");
    assert!(stack.redis.raw("CONFIG SET maxmemory 0").starts_with("+OK"));
    let results = publisher.publish(request("s", "full")).await.unwrap().into_inner().results;
    assert!(results[0].error.is_none(), "{results:?}");
}

/// How many commands Redis refused with OOM so far.
fn oom_errors(redis: &RedisServer) -> u64 {
    let info = redis.raw("INFO errorstats");
    info.lines().find_map(|l| l.strip_prefix("errorstat_OOM:count=")).map_or(0, |n| n.trim().parse().unwrap())
}

/// A full Redis loses nothing and ends no Subscribe stream: a delivery whose deadline passes at
/// max attempts cannot be dead-lettered while Redis refuses writes (OOM), so it stays pending —
/// never acked without its dead letter — and the session pauses; once memory is freed it is
/// dead-lettered and the same stream delivers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_redis_pauses_dead_lettering_and_loses_nothing() {
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    stack.create_subscription("s", "sub", 1, 1).await;
    let mut consumer = Consumer::open(&stack, "s", "sub", 10).await;
    stack.publish("s", vec![event("held", "t")]).await;
    assert_eq!(consumer.take(1, WAIT).await[0].event.as_ref().unwrap().id, "held");
    let refused = oom_errors(&stack.redis);
    assert!(stack.redis.raw("CONFIG SET maxmemory 1").starts_with("+OK"));
    // The deadline (1 s) passes: each try to dead-letter "held" is refused with OOM.
    eventually("dead-lettering refused with OOM", WAIT, || async {
        (oom_errors(&stack.redis) >= refused + 3).then_some(())
    })
    .await;
    let pending = stack.redis.raw(&format!("XPENDING {} sub", stack.keys().stream("s")));
    assert!(pending.starts_with("*4\r\n:1\r\n"), "still pending, not acked: {pending:?}");
    assert!(stack.redis.raw("CONFIG SET maxmemory 0").starts_with("+OK"));
    eventually("dead-lettered once memory is freed", WAIT, || async {
        (stack.stats("s").await.subscriptions[0].dead_letter_depth == 1).then_some(())
    })
    .await;
    stack.publish("s", vec![event("after", "t")]).await;
    assert_eq!(consumer.take(1, WAIT).await[0].event.as_ref().unwrap().id, "after", "the same stream delivers again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_script_makes_calls_unavailable_until_it_is_killed() {
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    let mut publisher = stack.publisher().await;
    assert!(stack.redis.raw("CONFIG SET busy-reply-threshold 50").starts_with("+OK"));
    // A script that loops until killed, on its own connection.
    let port = stack.redis.port();
    let looping = std::thread::spawn(move || {
        let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
        conn.write_all(b"EVAL \"while true do end\" 0\r\n").unwrap();
        let mut reply = [0u8; 256];
        let n = conn.read(&mut reply).unwrap();
        String::from_utf8_lossy(&reply[..n]).into_owned()
    });
    let busy = || async { stack.redis.raw("PING").starts_with("-BUSY").then_some(()) };
    eventually("redis busy", WAIT, busy).await;

    let status = publisher.publish(request("s", "busy")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    assert!(stack.redis.raw("SCRIPT KILL").starts_with("+OK"));
    assert!(looping.join().unwrap().contains("killed"));
    let results = publisher.publish(request("s", "busy")).await.unwrap().into_inner().results;
    assert!(results[0].error.is_none(), "{results:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicting_redis_is_refused_at_start_unless_allowed() {
    let redis = RedisServer::start_with(&["--appendonly", "no", "--maxmemory-policy", "allkeys-lru"]);
    let prefix = unique_prefix();
    for kind in [Kind::Publisher, Kind::Subscriber, Kind::Admin, Kind::Dlq] {
        let error = run_to_exit(kind, &redis.url(), &prefix, &[]).await.unwrap_err().to_string();
        for part in ["maxmemory-policy", "allkeys-lru", "noeviction", "--allow-eviction-policy"] {
            assert!(error.contains(part), "{kind:?}: {error}");
        }
        assert!(!error.contains('\n'), "one line: {error}");
    }
    let allowed = start(Kind::Publisher, &redis.url(), &prefix, &["--allow-eviction-policy"]).await;
    allowed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicting_redis_found_after_start_keeps_the_service_not_ready() {
    let mut redis = RedisServer::start_with(&["--appendonly", "no", "--maxmemory-policy", "allkeys-lru"]);
    redis.stop();
    // Redis unreachable at start does not block start-up.
    let publisher = start_unready(Kind::Publisher, &redis.url(), &unique_prefix(), &[]).await;
    wait_for_health(&publisher, LIVENESS, ServingStatus::Serving).await;
    wait_for_health(&publisher, "", ServingStatus::NotServing).await;

    redis.restart();
    // While the policy is refused the service reads it on every poll; after the second read,
    // readiness reflects the first.
    eventually("the policy read twice", WAIT, || async { (config_get_calls(&redis) >= 2).then_some(()) }).await;
    assert_eq!(readiness(&publisher).await, ServingStatus::NotServing);

    assert!(redis.raw("CONFIG SET maxmemory-policy noeviction").starts_with("+OK"));
    wait_for_health(&publisher, "", ServingStatus::Serving).await;
    publisher.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_config_get_the_service_starts_and_serves() {
    let redis = RedisServer::start_with(&["--appendonly", "no", "--rename-command", "CONFIG", ""]);
    assert!(redis.raw("CONFIG GET maxmemory-policy").starts_with("-ERR unknown command"));
    let publisher = start(Kind::Publisher, &redis.url(), &unique_prefix(), &[]).await;
    publisher.stop().await;
}
