//! The services over TLS to Redis (`rediss://`): a redis-server listening only on a TLS port,
//! with and without required client certificates; a wrong CA and a `redis://` URL to the TLS
//! port leave the services running but not ready, with the TLS reason in the error; bad TLS
//! settings stop start-up with one line. The binary test needs `cargo build --bins` first.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use eventflow_broker::{Broker, BrokerOptions};
use eventflow_e2e::{
    Consumer, Kind, RedisServer, Running, Stack, certs::Ca, event, run_to_exit, start_unready, unique_prefix,
    wait_for_health,
};
use eventflow_proto::v1::{
    AcknowledgeRequest, ListDeadLettersRequest, PublishRequest, ReceivedEvent, RejectRequest,
    subscriber_service_client::SubscriberServiceClient,
};
use eventflow_runtime::health::LIVENESS;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

const WAIT: Duration = Duration::from_secs(10);

/// The flags that make a service trust the test Redis's CA (and, with `client_cert`, present
/// the client certificate that CA issued).
fn tls_args(redis: &RedisServer, client_cert: bool) -> Vec<String> {
    let files = redis.tls_files().unwrap();
    let mut args = vec!["--redis-ca-file".to_string(), files.ca.display().to_string()];
    if client_cert {
        args.extend([
            "--redis-client-cert-file".to_string(),
            files.client_cert.display().to_string(),
            "--redis-client-key-file".to_string(),
            files.client_key.display().to_string(),
        ]);
    }
    args
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// Publishes, delivers (to a subscriber whose sessions use their own blocking reader, and to
/// one whose sessions wait through the watcher), acks, rejects, and reads stats and dead
/// letters: every kind of Redis connection a service opens, over TLS.
async fn exercise(stack: &Stack, common: &[&str]) {
    stack.create_stream("s").await;
    stack.create_subscription("s", "own-reader", 600, 0).await;
    stack.create_subscription("s", "watcher", 600, 0).await;
    let mut watcher_args = common.to_vec();
    watcher_args.extend(["--blocking-readers", "0"]);
    let watched = stack.start_service(Kind::Subscriber, &watcher_args).await;

    // Both sessions are open and idle before anything is published, so the events reach them
    // through a blocking read and through the watcher.
    let mut own = Consumer::open(stack, "s", "own-reader", 10).await;
    let mut via_watcher =
        Consumer::open_at(SubscriberServiceClient::new(watched.channel().await), "s", "watcher", 10).await;
    let published = stack.publish("s", vec![event("a", "t"), event("b", "t")]).await;
    assert!(published.iter().all(|r| !r.entry_id.is_empty()), "{published:?}");

    for (consumer, client) in [
        (&mut own, stack.subscriber().await),
        (&mut via_watcher, SubscriberServiceClient::new(watched.channel().await)),
    ] {
        let got = consumer.take(2, WAIT).await;
        settle(client, &got).await;
    }

    let stats = stack.stats("s").await;
    assert_eq!(stats.length, 2);
    for sub in &stats.subscriptions {
        assert_eq!((sub.pending, sub.dead_letter_depth), (0, 1), "{sub:?}");
    }
    let request =
        ListDeadLettersRequest { stream: "s".into(), subscription: "own-reader".into(), ..Default::default() };
    let letters = stack.dlq().await.list_dead_letters(request).await.unwrap().into_inner().dead_letters;
    assert_eq!(letters.len(), 1);
    assert_eq!((letters[0].event.as_ref().unwrap().id.as_str(), letters[0].reason.as_str()), ("b", "over tls"));
    watched.stop().await;
}

/// Acks event `a` and rejects event `b`.
async fn settle(mut client: SubscriberServiceClient<tonic::transport::Channel>, got: &[ReceivedEvent]) {
    let ack_id = |id: &str| got.iter().find(|e| e.event.as_ref().unwrap().id == id).unwrap().ack_id.clone();
    let acked = client.acknowledge(AcknowledgeRequest { ack_ids: vec![ack_id("a")] }).await.unwrap().into_inner();
    assert!(acked.invalid_ack_ids.is_empty() && acked.expired_ack_ids.is_empty(), "{acked:?}");
    let request = RejectRequest { ack_ids: vec![ack_id("b")], reason: "over tls".into() };
    let rejected = client.reject(request).await.unwrap().into_inner();
    assert!(rejected.invalid_ack_ids.is_empty() && rejected.expired_ack_ids.is_empty(), "{rejected:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_four_services_work_on_a_rediss_redis() {
    let redis = RedisServer::start_tls(false);
    assert!(redis.url().starts_with("rediss://"));
    let args = tls_args(&redis, false);
    let stack = Stack::start_on(redis, &strs(&args)).await;
    exercise(&stack, &strs(&args)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_reach_a_redis_that_requires_them() {
    let redis = RedisServer::start_tls(true);
    // Without a client certificate the handshake is refused: running, but not ready.
    let without = start_unready(Kind::Publisher, &redis.url(), &unique_prefix(), &strs(&tls_args(&redis, false))).await;
    assert_unreachable(&without).await;

    let args = tls_args(&redis, true);
    let stack = Stack::start_on(redis, &strs(&args)).await;
    exercise(&stack, &strs(&args)).await;
    without.stop().await;
}

/// The service runs (liveness SERVING, no panic) but is not ready, and calls that need Redis
/// fail with UNAVAILABLE.
async fn assert_unreachable(running: &Running) {
    wait_for_health(running, LIVENESS, ServingStatus::Serving).await;
    wait_for_health(running, "", ServingStatus::NotServing).await;
    let request = PublishRequest { stream: "s".into(), events: vec![event("a", "t")] };
    let mut client =
        eventflow_proto::v1::publisher_service_client::PublisherServiceClient::new(running.channel().await);
    let status = client.publish(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(!running.handle.is_finished(), "the service stopped");
}

/// The error a broker built like the services' (same settings loader) gets from PING.
async fn ping_error(url: &str, ca: Option<&std::path::Path>) -> String {
    let redis_tls = eventflow_runtime::redis_tls::load(url, ca, None, None).unwrap();
    let options = BrokerOptions { redis_tls, prefix: unique_prefix(), ..BrokerOptions::default() };
    let error = Broker::new(url, options).unwrap().ping().await.unwrap_err();
    assert!(error.is_unavailable(), "{error}");
    error.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_leaves_the_service_unready_with_the_tls_reason() {
    let redis = RedisServer::start_tls(false);
    let dir = std::env::temp_dir().join(format!("eventflow-wrong-ca-{}", unique_prefix()));
    std::fs::create_dir_all(&dir).unwrap();
    let wrong_ca = dir.join("ca.crt");
    std::fs::write(&wrong_ca, Ca::new("not the redis ca").pem()).unwrap();

    let args = ["--redis-ca-file", wrong_ca.to_str().unwrap()];
    let publisher = start_unready(Kind::Publisher, &redis.url(), &unique_prefix(), &args).await;
    assert_unreachable(&publisher).await;
    // What the health watch logs ("redis unreachable: NOT_SERVING: ...") names the cause.
    let error = ping_error(&redis.url(), Some(&wrong_ca)).await;
    assert!(error.contains("certificate"), "{error}");
    publisher.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_url_to_the_tls_port_is_refused_cleanly() {
    let redis = RedisServer::start_tls(false);
    let plain = redis.url().replacen("rediss://", "redis://", 1);
    let publisher = start_unready(Kind::Publisher, &plain, &unique_prefix(), &[]).await;
    assert_unreachable(&publisher).await;
    ping_error(&plain, None).await;
    publisher.stop().await;
    // The harness itself still talks to it over TLS.
    assert!(redis.raw("PING").starts_with("+PONG"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_redis_tls_settings_fail_at_start_in_one_line() {
    let redis = RedisServer::start_tls(false);
    let files = redis.tls_files().unwrap();
    let (ca, cert) = (files.ca.to_str().unwrap(), files.client_cert.to_str().unwrap());
    let plain = redis.url().replacen("rediss://", "redis://", 1);
    let tls = redis.url();
    let cases: [(&str, Vec<&str>, &str); 4] = [
        (&plain, vec!["--redis-ca-file", ca], "need a rediss://"),
        (&tls, vec!["--redis-client-cert-file", cert], "--redis-client-cert-file and --redis-client-key-file"),
        (&tls, vec!["--redis-ca-file", "/nonexistent/ca.crt"], "--redis-ca-file /nonexistent/ca.crt"),
        // A file without a private key.
        (&tls, vec!["--redis-client-cert-file", cert, "--redis-client-key-file", ca], "--redis-client-key-file"),
    ];
    for kind in [Kind::Publisher, Kind::Subscriber, Kind::Admin, Kind::Dlq] {
        for (url, args, want) in &cases {
            let error = run_to_exit(kind, url, &unique_prefix(), args).await.unwrap_err().to_string();
            assert!(error.contains(want), "{kind:?} {args:?}: {error}");
            assert!(!error.contains('\n'), "one line: {error}");
        }
    }
}

/// A service binary (built by `cargo build --bins`) killed on drop.
struct Binary(std::process::Child);

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_binary_logs_the_tls_reason_and_keeps_running() {
    use std::io::BufRead;
    let redis = RedisServer::start_tls(false);
    let dir = std::env::temp_dir().join(format!("eventflow-wrong-ca-{}", unique_prefix()));
    std::fs::create_dir_all(&dir).unwrap();
    let wrong_ca = dir.join("ca.crt");
    std::fs::write(&wrong_ca, Ca::new("not the redis ca").pem()).unwrap();
    let bin_dir = std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().to_path_buf();
    let program = bin_dir.join("eventflow-publisher");
    assert!(program.exists(), "{} is missing: run `cargo build --bins` first", program.display());
    let mut child = Binary(
        std::process::Command::new(program)
            .args(["--grpc-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--key-prefix", &unique_prefix()])
            .env("EVENTFLOW_REDIS_URL", redis.url())
            .env("EVENTFLOW_REDIS_CA_FILE", &wrong_ca)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let (lines, received) = std::sync::mpsc::channel();
    let stdout = child.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let line = loop {
        let line = received.recv_timeout(WAIT).expect("no 'redis unreachable' log line");
        if line.contains("redis unreachable") {
            break line;
        }
    };
    assert!(line.contains("invalid peer certificate: UnknownIssuer"), "{line}");
    assert!(child.0.try_wait().unwrap().is_none(), "the binary exited");
    std::fs::remove_dir_all(&dir).unwrap();
}
