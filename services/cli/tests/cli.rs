//! The real `eventflow` binary against the real services, started in-process on the test's
//! multi-threaded runtime (so they keep serving while the CLI process runs) over a real
//! redis-server. Checks output (tables and JSON) and the documented exit codes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{process::Stdio, time::Duration};

use eventflow_e2e::{
    Consumer, Kind, Stack,
    certs::{Ca, TlsDir, client_tls},
    event, start_tls,
};
use eventflow_proto::v1::RejectRequest;
use serde_json::Value;
use tokio::{io::AsyncWriteExt, process::Command};

/// Upper bound on one CLI run; a run that takes longer is a hang.
const RUN_DEADLINE: Duration = Duration::from_secs(60);

/// What one CLI run produced.
#[derive(Debug)]
struct Out {
    /// The exit code.
    code: i32,
    /// Everything on stdout.
    stdout: String,
    /// Everything on stderr.
    stderr: String,
}

impl Out {
    /// Stdout as one JSON document.
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    /// Stdout as JSON lines.
    fn json_lines(&self) -> Vec<Value> {
        self.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// Asserts the exit code, showing the output when it differs.
    fn expect(self, code: i32) -> Self {
        assert_eq!(self.code, code, "unexpected exit code: {self:#?}");
        self
    }
}

/// Runs `eventflow ARGS` against `stack` (addresses from the environment), feeding `stdin`.
async fn run_with(stack: &Stack, args: &[&str], stdin: Option<&str>) -> Out {
    run_env(stack, args, stdin, &[]).await
}

/// [`run_with`] with the extra environment variables `env`.
async fn run_env(stack: &Stack, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Out {
    let mut command = Command::new(env!("CARGO_BIN_EXE_eventflow"));
    command
        .args(args)
        .env("EVENTFLOW_PUBLISHER_ADDR", format!("http://{}", stack.publisher.addr))
        .env("EVENTFLOW_SUBSCRIBER_ADDR", format!("http://{}", stack.subscriber.addr))
        .env("EVENTFLOW_ADMIN_ADDR", format!("http://{}", stack.admin.addr))
        .env("EVENTFLOW_DLQ_ADDR", stack.dlq.addr.to_string())
        .env("EVENTFLOW_TIMEOUT", "20s")
        .env_remove("EVENTFLOW_OUTPUT")
        .env_remove("EVENTFLOW_TLS")
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().expect("start eventflow");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        let input = input.to_string();
        tokio::spawn(async move { pipe.write_all(input.as_bytes()).await.unwrap() });
    }
    let output = tokio::time::timeout(RUN_DEADLINE, child.wait_with_output()).await.expect("eventflow hung").unwrap();
    Out {
        code: output.status.code().expect("exited by a signal"),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// Runs `eventflow ARGS` with stdin closed.
async fn run(stack: &Stack, args: &[&str]) -> Out {
    run_with(stack, args, None).await
}

/// Runs `eventflow --output json ARGS`, expects success, and parses stdout.
async fn json(stack: &Stack, args: &[&str]) -> Value {
    let mut argv = vec!["--output", "json"];
    argv.extend_from_slice(args);
    run(stack, &argv).await.expect(0).json()
}

/// `n` CloudEvents JSON lines of type `t` with ids `<prefix>0..`.
fn lines(prefix: &str, n: usize) -> String {
    (0..n)
        .map(|i| format!("{{\"id\":\"{prefix}{i}\",\"source\":\"/test\",\"type\":\"t\",\"data\":{{\"n\":{i}}}}}\n"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn streams_are_created_listed_shown_updated_and_deleted() {
    let stack = Stack::start().await;
    let created =
        run(&stack, &["stream", "create", "orders", "--max-length", "1000", "--max-age", "1h"]).await.expect(0);
    assert!(created.stdout.contains("name:") && created.stdout.contains("orders"), "{created:?}");
    assert!(created.stdout.contains("1000") && created.stdout.contains("1h"), "{created:?}");
    let other = json(&stack, &["stream", "create", "audit", "--dedup-window", "0"]).await;
    assert_eq!((other["name"].as_str(), other["dedup_window"].as_str()), (Some("audit"), Some("0s")));

    assert_eq!(other["partitions"], 1);
    let parted = json(&stack, &["stream", "create", "parted", "--partitions", "3"]).await;
    assert_eq!(parted["partitions"], 3);
    let shown = run(&stack, &["stream", "show", "parted"]).await.expect(0).stdout;
    assert!(shown.lines().any(|l| l.starts_with("partitions:") && l.ends_with(" 3")), "{shown}");
    let too_many = run(&stack, &["stream", "create", "many", "--partitions", "65"]).await.expect(4);
    assert!(too_many.stderr.contains("stream.partitions"), "{too_many:?}");
    run(&stack, &["stream", "delete", "parted", "--yes"]).await.expect(0);

    let again = run(&stack, &["stream", "create", "orders"]).await.expect(4);
    assert!(again.stderr.starts_with("eventflow: create stream orders: "), "{again:?}");
    run(&stack, &["stream", "create", "bad name"]).await.expect(4);

    let table = run(&stack, &["stream", "list"]).await.expect(0).stdout;
    let rows: Vec<&str> = table.lines().collect();
    assert!(rows[0].starts_with("NAME") && rows[0].contains("MAX_LENGTH"), "{table}");
    assert!(rows[0].contains("PARTITIONS"), "{table}");
    assert!(rows[1].starts_with("audit ") && rows[2].starts_with("orders "), "{table}");
    let listed = json(&stack, &["stream", "list"]).await;
    let names: Vec<&str> = listed["streams"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["audit", "orders"]);

    stack.publish("orders", vec![event("a", "t"), event("b", "t")]).await;
    let shown = json(&stack, &["stream", "show", "orders"]).await;
    assert_eq!(shown["stream"]["retention"]["max_length"], 1000);
    assert_eq!(shown["stream"]["retention"]["max_age"], "3600s");
    assert_eq!(shown["stats"]["length"], 2);
    assert!(run(&stack, &["stream", "show", "orders"]).await.expect(0).stdout.contains("length:"));

    let updated = json(&stack, &["stream", "update", "orders", "--max-length", "5"]).await;
    assert_eq!(updated["retention"]["max_length"], 5);
    assert_eq!(updated["retention"]["max_age"], "3600s", "fields not in the mask keep their values");
    run(&stack, &["stream", "update", "orders"]).await.expect(2);

    run(&stack, &["stream", "delete", "audit"]).await.expect(2);
    run(&stack, &["stream", "delete", "audit", "--yes"]).await.expect(0);
    let missing = run(&stack, &["stream", "show", "audit"]).await.expect(3);
    assert_eq!(missing.stderr.lines().count(), 1, "{missing:?}");
    assert!(missing.stderr.starts_with("eventflow: show stream audit: "), "{missing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscriptions_are_created_shown_updated_sought_and_deleted() {
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    stack.publish("s", vec![event("a", "t"), event("b", "t"), event("c", "t")]).await;
    let args = [
        "sub",
        "create",
        "s",
        "workers",
        "--ack-deadline",
        "45s",
        "--max-attempts",
        "3",
        "--min-backoff",
        "1s",
        "--max-backoff",
        "1m",
        "--filter",
        "t",
        "--filter",
        "u",
        "--start",
        "earliest",
    ];
    let created = json(&stack, &args).await;
    assert_eq!(created["ack_deadline_seconds"], 45);
    assert_eq!(created["dead_letter_policy"]["max_delivery_attempts"], 3);
    assert_eq!(created["retry_policy"]["minimum_backoff"], "1s");
    assert_eq!(created["event_type_filter"], serde_json::json!(["t", "u"]));
    run(&stack, &["sub", "create", "s", "workers"]).await.expect(4);
    run(&stack, &["sub", "create", "nope", "x"]).await.expect(3);
    run(&stack, &["sub", "create", "s", "x", "--start", "yesterday"]).await.expect(2);
    run(&stack, &["sub", "create", "s", "late", "--breaker"]).await.expect(0);

    let listed = run(&stack, &["sub", "list", "s"]).await.expect(0).stdout;
    assert!(listed.lines().nth(1).unwrap().starts_with("late ") && listed.contains("workers"), "{listed}");
    let shown = json(&stack, &["sub", "show", "s", "workers"]).await;
    assert_eq!((shown["subscription"]["name"].as_str(), shown["stats"]["lag"].as_i64()), (Some("workers"), Some(3)));
    let late = json(&stack, &["sub", "show", "s", "late"]).await;
    assert_eq!(late["stats"]["lag"], 0, "latest start skips what was published before");
    assert_eq!(late["stats"]["breaker_state"], "CLOSED");
    assert!(run(&stack, &["sub", "show", "s", "workers"]).await.expect(0).stdout.contains("lag:"));
    run(&stack, &["sub", "show", "s", "nope"]).await.expect(3);

    let updated = json(&stack, &["sub", "update", "s", "workers", "--ack-deadline", "1m", "--clear-filter"]).await;
    assert_eq!(
        (updated["ack_deadline_seconds"].as_i64(), updated["event_type_filter"].as_array().map(Vec::len)),
        (Some(60), Some(0))
    );
    assert_eq!(updated["dead_letter_policy"]["max_delivery_attempts"], 3, "unmasked fields stay");
    run(&stack, &["sub", "update", "s", "workers"]).await.expect(2);
    run(&stack, &["sub", "update", "s", "workers", "--ack-deadline", "500ms"]).await.expect(2);

    let sought = json(&stack, &["sub", "seek", "s", "workers", "--to", "latest"]).await;
    assert_eq!(sought["acknowledged"], 0);
    assert_eq!(json(&stack, &["sub", "show", "s", "workers"]).await["stats"]["lag"], 0);
    let to_time = run(&stack, &["sub", "seek", "s", "workers", "--to", "2000-01-01T00:00:00Z"]).await.expect(0);
    assert!(to_time.stdout.contains("moved s/workers"), "{to_time:?}");
    assert_eq!(json(&stack, &["sub", "show", "s", "workers"]).await["stats"]["lag"], 3, "replay from the start");

    run(&stack, &["sub", "delete", "s", "late", "--yes"]).await.expect(0);
    run(&stack, &["sub", "show", "s", "late"]).await.expect(3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ordered_subscriptions_are_created_and_shown_with_their_order_figures() {
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    let created = json(&stack, &["sub", "create", "s", "ord", "--ordered", "--start", "earliest"]).await;
    assert_eq!(created["ordered"], true, "{created}");
    json(&stack, &["publish", "s", "--type", "t", "--attr", "partitionkey=k", "{}"]).await;
    let shown = json(&stack, &["sub", "show", "s", "ord"]).await;
    assert_eq!(shown["subscription"]["ordered"], true);
    assert_eq!((shown["stats"]["lag"].as_i64(), shown["stats"]["ordered_keys_blocked"].as_i64()), (Some(1), Some(0)));
    let text = run(&stack, &["sub", "show", "s", "ord"]).await.expect(0).stdout;
    assert!(
        text.contains("ordered_keys_blocked:") && text.lines().any(|l| l.starts_with("ordered:") && l.ends_with("yes")),
        "{text}"
    );
    let updated = json(&stack, &["sub", "update", "s", "ord", "--ack-deadline", "10s"]).await;
    assert_eq!((updated["ordered"].as_bool(), updated["ack_deadline_seconds"].as_i64()), (Some(true), Some(10)));
    let stats = run(&stack, &["stream", "show", "s"]).await.expect(0).stdout;
    assert!(stats.contains("BLOCKED"), "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn push_subscriptions_are_created_updated_rotated_and_cleared() {
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    let dir = std::env::temp_dir().join(format!("eventflow-cli-push-{}", eventflow_e2e::unique_prefix()));
    std::fs::create_dir_all(&dir).unwrap();
    let (first, second, bad) = (dir.join("first"), dir.join("second"), dir.join("bad"));
    std::fs::write(&first, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").unwrap();
    std::fs::write(&second, "whsec_c2VjcmV0LXJvdGF0ZWQtdG8tdGhpcy1vbmUtMTIzNDU=\n").unwrap();
    std::fs::write(&bad, "hunter2\n").unwrap();
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let (first, second, bad) = (path(&first), path(&second), path(&bad));

    let create = ["sub", "create", "s", "hooks", "--push-endpoint", "https://example.com/hook"];
    let created = json(&stack, &[&create[..], &["--push-secret-file", &first, "--push-structured"]].concat()).await;
    let push = &created["push_config"];
    assert_eq!(
        (push["endpoint"].as_str(), push["content_mode"].as_str()),
        (Some("https://example.com/hook"), Some("CONTENT_MODE_STRUCTURED"))
    );
    assert!(push.get("signing_secret").is_none() && !created.to_string().contains("whsec_"), "{created}");
    run(&stack, &[&create[..], &["--push-secret-file", &bad]].concat()).await.expect(4);
    assert!(run(&stack, &["sub", "show", "s", "hooks"]).await.expect(0).stdout.contains("push:"));

    // One push flag updates the push config; the stored secret and endpoint stay.
    let updated = json(&stack, &["sub", "update", "s", "hooks", "--push-concurrency", "4"]).await;
    assert_eq!(
        (updated["push_config"]["max_concurrency"].as_i64(), updated["push_config"]["endpoint"].as_str()),
        (Some(4), Some("https://example.com/hook"))
    );
    assert!(updated["push_config"]["previous_secret_expire_time"].is_null());
    let rotated = json(&stack, &["sub", "update", "s", "hooks", "--push-secret-file", &second]).await;
    assert!(rotated["push_config"]["previous_secret_expire_time"].is_string(), "{rotated}");
    let cleared = json(&stack, &["sub", "update", "s", "hooks", "--no-push"]).await;
    assert!(cleared["push_config"].is_null(), "{cleared}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publish_from_arguments_and_stdin_lines_with_counts() {
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    let one =
        json(&stack, &["publish", "s", "--type", "t", "--id", "x1", "--attr", "partitionkey=k", "{\"a\":1}"]).await;
    assert_eq!((one["event_id"].as_str(), one["duplicate"].as_bool()), (Some("x1"), Some(false)));
    assert!(one["entry_id"].as_str().unwrap().contains('-'));
    let again = run(&stack, &["publish", "s", "--type", "t", "--id", "x1"]).await.expect(0);
    assert!(again.stdout.contains("duplicate:") && again.stdout.contains("true"), "{again:?}");
    run(&stack, &["publish", "s"]).await.expect(2);
    run(&stack, &["publish", "nope", "--type", "t"]).await.expect(3);
    let refused = run(&stack, &["publish", "s", "--type", "t", "--source", "not a uri"]).await.expect(4);
    assert!(refused.stderr.contains("source"), "{refused:?}");

    let input = lines("e", 250);
    let summary =
        run_with(&stack, &["-o", "json", "publish", "s", "--stdin", "--batch-size", "100"], Some(&input)).await;
    let summary = summary.expect(0).json();
    assert_eq!(
        (summary["published"].as_i64(), summary["duplicates"].as_i64(), summary["failed"].as_i64()),
        (Some(250), Some(0), Some(0))
    );
    let table = run_with(&stack, &["publish", "s", "--stdin"], Some(&lines("e", 3))).await.expect(0);
    assert_eq!(table.stdout, "published 0, duplicates 3, failed 0\n");
    let raw = run_with(&stack, &["publish", "s", "--stdin", "--raw", "--type", "line"], Some("one\n\ntwo\n")).await;
    assert_eq!(raw.expect(0).stdout, "published 2, duplicates 0, failed 0\n");
    assert_eq!(stack.stats("s").await.length, 1 + 250 + 2);

    let mixed = format!("{}{{\"id\":\"bad\",\"source\":\"/test\"}}\nnot json\n{}", lines("m", 2), lines("n", 1));
    let partial = run_with(&stack, &["-o", "json", "publish", "s", "--stdin"], Some(&mixed)).await.expect(6);
    let summary = partial.json();
    assert_eq!((summary["published"].as_i64(), summary["failed"].as_i64()), (Some(3), Some(2)));
    let errors = summary["errors"].as_array().unwrap();
    assert_eq!((errors[0]["line"].as_i64(), errors[0]["code"].as_i64()), (Some(3), Some(3)));
    assert!(errors[0]["message"].as_str().unwrap().starts_with("type"), "{errors:?}");
    assert_eq!(errors[1]["line"], 4);
    assert!(partial.stderr.contains("line 3: type") && partial.stderr.contains("2 of 5 events failed"), "{partial:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tail_prints_events_and_acknowledges_them() {
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    stack.create_subscription("s", "tail", 600, 0).await;
    stack.publish("s", vec![event("a", "t"), event("b", "t"), event("c", "t")]).await;

    // Without --ack the events come back once the tail stops.
    let peek = run(&stack, &["-o", "json", "tail", "s", "tail", "--max", "2"]).await.expect(0);
    let ids: Vec<String> = peek.json_lines().iter().map(|l| l["event"]["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(peek.json_lines()[0]["event"]["data"]["id"], "a", "JSON data is embedded as JSON");

    let acked = run(&stack, &["tail", "s", "tail", "--ack", "--max", "3"]).await.expect(0);
    let rows: Vec<&str> = acked.stdout.lines().collect();
    assert_eq!(rows.len(), 3, "{acked:?}");
    for id in ["a", "b", "c"] {
        let row = format!("  t  {id}  /e2e  {{\"id\":\"{id}\"}}");
        assert!(rows.iter().any(|r| r.ends_with(&row)), "no row for {id}: {acked:?}");
    }
    assert!(acked.stderr.contains("3 events, 3 acknowledged"), "{acked:?}");

    // Everything was acknowledged: a second tail sees nothing and stops at its timeout.
    let empty = run(&stack, &["tail", "s", "tail", "--ack", "--max", "1", "--timeout", "1s"]).await.expect(0);
    assert_eq!(empty.stdout, "");
    let stats = stack.stats("s").await;
    assert_eq!((stats.subscriptions[0].pending, stats.subscriptions[0].lag), (0, 0));
    run(&stack, &["tail", "s", "nope", "--max", "1"]).await.expect(3);

    // --idle-timeout: what is there is printed, then the tail stops once nothing came for that
    // long, which is a success. (The events are in Redis before the tail starts, so the first
    // batch comes at once; the 3 s only has to outlast that.)
    stack.publish("s", vec![event("d", "t"), event("e", "t")]).await;
    let idle = run(&stack, &["tail", "s", "tail", "--ack", "--idle-timeout", "3s"]).await.expect(0);
    assert_eq!(idle.stdout.lines().count(), 2, "{idle:?}");
    assert!(idle.stderr.contains("2 events, 2 acknowledged; no event for 3s (--idle-timeout)"), "{idle:?}");
    let nothing = run(&stack, &["tail", "s", "tail", "--idle-timeout", "500ms"]).await.expect(0);
    assert_eq!(nothing.stdout, "");
    assert!(nothing.stderr.contains("0 events; no event for 500ms"), "{nothing:?}");
    run(&stack, &["tail", "s", "tail", "--idle-timeout", "0"]).await.expect(2);
    run(&stack, &["tail", "s", "tail", "--idle-timeout", "soon"]).await.expect(2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_letters_are_listed_shown_requeued_and_purged() {
    let stack = Stack::start().await;
    stack.create_stream("s").await;
    stack.create_subscription("s", "w", 600, 0).await;
    stack.publish("s", vec![event("a", "t"), event("b", "t"), event("c", "t")]).await;
    let mut consumer = Consumer::open(&stack, "s", "w", 10).await;
    let received = consumer.take(3, Duration::from_secs(10)).await;
    let ack_ids = received.iter().map(|r| r.ack_id.clone()).collect();
    stack.subscriber().await.reject(RejectRequest { ack_ids, reason: "poison".into() }).await.unwrap();

    let table = run(&stack, &["dlq", "list", "s", "w"]).await.expect(0).stdout;
    assert!(table.starts_with("ID ") && table.lines().count() == 4 && table.contains("poison"), "{table}");
    let listed = json(&stack, &["dlq", "list", "s"]).await;
    let letters = listed["dead_letters"].as_array().unwrap().clone();
    assert_eq!(letters.len(), 3);
    assert_eq!(
        json(&stack, &["dlq", "list", "s", "w", "--limit", "2"]).await["dead_letters"].as_array().unwrap().len(),
        2
    );
    let id = letters[0]["id"].as_str().unwrap();
    let shown = json(&stack, &["dlq", "show", "s", "w", id]).await;
    assert_eq!((shown["reason"].as_str(), shown["event"]["type"].as_str()), (Some("poison"), Some("t")));
    run(&stack, &["dlq", "show", "s", "w", "0-1"]).await.expect(3);

    let requeued = run(&stack, &["dlq", "requeue", "s", "w", id]).await.expect(0);
    assert_eq!(requeued.stdout, "requeued 1\n");
    run(&stack, &["dlq", "requeue", "s", "w", "0-1"]).await.expect(3);
    let second = letters[1]["id"].as_str().unwrap();
    let partial = run(&stack, &["dlq", "requeue", "s", "w", second, "0-1"]).await.expect(6);
    assert!(partial.stderr.contains("1 of 2 ids not found: 0-1"), "{partial:?}");
    run(&stack, &["dlq", "requeue", "s", "w"]).await.expect(2);
    consumer.take(2, Duration::from_secs(10)).await;

    run(&stack, &["dlq", "purge", "s", "w"]).await.expect(2);
    assert_eq!(json(&stack, &["dlq", "purge", "s", "w", "--yes"]).await["purged"], 1);
    assert_eq!(json(&stack, &["dlq", "list", "s", "w"]).await["dead_letters"], serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_letters_of_a_partitioned_stream_are_listed_shown_requeued_deleted_and_purged() {
    let stack = Stack::start().await;
    json(&stack, &["stream", "create", "p", "--partitions", "3"]).await;
    stack.create_subscription("p", "w", 600, 0).await;
    // Keyless events spread over the partitions by their ids.
    stack.publish("p", (0..9).map(|i| event(&format!("e{i}"), "t")).collect()).await;
    let mut consumer = Consumer::open(&stack, "p", "w", 10).await;
    let received = consumer.take(9, Duration::from_secs(10)).await;
    let ack_ids = received.iter().map(|r| r.ack_id.clone()).collect();
    stack.subscriber().await.reject(RejectRequest { ack_ids, reason: "poison".into() }).await.unwrap();

    let letters = json(&stack, &["dlq", "list", "p", "w"]).await["dead_letters"].as_array().unwrap().clone();
    let mut events: Vec<&str> = letters.iter().map(|l| l["event"]["id"].as_str().unwrap()).collect();
    events.sort_unstable();
    assert_eq!(events, ["e0", "e1", "e2", "e3", "e4", "e5", "e6", "e7", "e8"]);
    let limited = json(&stack, &["dlq", "list", "p", "w", "--limit", "4"]).await;
    assert_eq!(limited["dead_letters"].as_array().unwrap()[..], letters[..4]);
    // One of partition >= 1 (its id names the partition).
    let id = letters.iter().map(|l| l["id"].as_str().unwrap()).find(|id| id.contains('~')).unwrap();
    assert_eq!(json(&stack, &["dlq", "show", "p", "w", id]).await["reason"], "poison");
    let requeued = run(&stack, &["dlq", "requeue", "p", "w", id]).await.expect(0);
    assert_eq!(requeued.stdout, "requeued 1\n");
    consumer.take(1, Duration::from_secs(10)).await;
    run(&stack, &["dlq", "show", "p", "w", id]).await.expect(3);
    let other = letters.iter().map(|l| l["id"].as_str().unwrap()).find(|other| *other != id).unwrap();
    assert_eq!(json(&stack, &["dlq", "delete", "p", "w", other]).await["deleted"], 1);
    assert_eq!(json(&stack, &["dlq", "purge", "p", "w", "--yes"]).await["purged"], 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_reports_each_service_and_exits_5_when_one_is_unreachable() {
    let stack = Stack::start().await;
    let healthy = run(&stack, &["health"]).await.expect(0).stdout;
    assert_eq!(healthy.lines().filter(|l| l.ends_with("SERVING")).count(), 4, "{healthy}");
    let one = json(&stack, &["health", "--service", "admin"]).await;
    assert_eq!(
        one["services"],
        serde_json::json!([{ "service": "admin", "address": format!("http://{}", stack.admin.addr), "status": "SERVING" }])
    );

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let closed = format!("http://{closed}");
    let down = run(&stack, &["--timeout", "5s", "--admin", &closed, "-o", "json", "health"]).await.expect(5);
    let statuses: Vec<(String, String)> = down.json()["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["service"].as_str().unwrap().into(), s["status"].as_str().unwrap().into()))
        .collect();
    let want = [("publisher", "SERVING"), ("subscriber", "SERVING"), ("admin", "UNREACHABLE"), ("dlq", "SERVING")];
    assert_eq!(statuses, want.map(|(a, b)| (a.to_string(), b.to_string())));
    assert!(down.stderr.contains("not serving: admin"), "{down:?}");
    let unreachable = run(&stack, &["--admin", &closed, "stream", "list"]).await.expect(5);
    assert!(unreachable.stderr.starts_with("eventflow: connect to admin at "), "{unreachable:?}");
}

#[test]
fn help_documents_exit_codes_and_usage_errors_exit_2() {
    let bare = |args: &[&str]| std::process::Command::new(env!("CARGO_BIN_EXE_eventflow")).args(args).output().unwrap();
    let help = bare(&["--help"]);
    let text = String::from_utf8(help.stdout).unwrap();
    assert_eq!(help.status.code(), Some(0));
    assert!(text.contains("Exit codes:") && text.contains("6  partial failure"), "{text}");
    for usage in
        [&["stream"][..], &["stream", "create", "s", "--max-age", "forever"], &["--output", "yaml", "stream", "list"]]
    {
        assert_eq!(bare(usage).status.code(), Some(2), "{usage:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn token_is_sent_to_services_that_require_one() {
    let stack = Stack::start().await;
    let guarded = eventflow_e2e::start(
        eventflow_e2e::Kind::Admin,
        &stack.redis.url(),
        &stack.prefix,
        &["--auth-tokens", "t0ken"],
    )
    .await;
    let admin = format!("http://{}", guarded.addr);
    let refused = run(&stack, &["--admin", &admin, "stream", "list"]).await.expect(4);
    assert!(refused.stderr.contains("bearer token"), "{refused:?}");
    run(&stack, &["--admin", &admin, "--token", "t0ken", "stream", "create", "secured"]).await.expect(0);
    let listed = json(&stack, &["--admin", &admin, "--token", "t0ken", "stream", "list"]).await;
    assert!(listed.to_string().contains("secured"), "{listed}");
    guarded.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_and_mutual_tls_with_the_ca_and_client_certificate_flags() {
    let stack = Stack::start().await;
    let (dir, ca) = (TlsDir::new(), Ca::new("cli test CA"));
    dir.install(&ca.server());
    dir.install_client_ca(&ca);
    let operator = ca.client("operator");
    let file = |name: &str, contents: &str| {
        let path = dir.dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path.display().to_string()
    };
    let (ca_file, cert_file, key_file) =
        (file("ca.pem", &ca.pem()), file("operator.crt", &operator.cert_pem), file("operator.key", &operator.key_pem));
    let (url, prefix) = (stack.redis.url(), stack.prefix.clone());
    let (tls_args, mtls_args) = (dir.args(false), dir.args(true));
    let tls_args: Vec<&str> = tls_args.iter().map(String::as_str).collect();
    let mtls_args: Vec<&str> = mtls_args.iter().map(String::as_str).collect();
    let publisher = start_tls(Kind::Publisher, &url, &prefix, &tls_args, client_tls(&ca, None)).await;
    let admin = start_tls(Kind::Admin, &url, &prefix, &mtls_args, client_tls(&ca, Some(&operator))).await;
    let admin_https = format!("https://{}", admin.addr);

    // mTLS: an https:// address, the CA and the client certificate.
    let mtls = ["--admin", &admin_https, "--ca-file", &ca_file, "--cert-file", &cert_file, "--key-file", &key_file];
    run(&stack, &[&mtls[..], &["stream", "create", "secure"]].concat()).await.expect(0);
    let health = run(&stack, &[&mtls[..], &["--output", "json", "health", "--service", "admin"]].concat()).await;
    assert_eq!(health.expect(0).json()["services"][0]["status"], "SERVING");

    // TLS: a plain host:port with --ca-file (implies TLS), then the environment fallbacks.
    let publisher_addr = publisher.addr.to_string();
    let publish = ["--publisher", &publisher_addr, "--ca-file", &ca_file, "publish", "secure", "--type", "t", "{}"];
    run(&stack, &publish).await.expect(0);
    let env = [("EVENTFLOW_TLS", "true"), ("EVENTFLOW_CA_FILE", ca_file.as_str())];
    let from_env = ["--publisher", &publisher_addr, "publish", "secure", "--type", "t", "{}"];
    run_env(&stack, &from_env, None, &env).await.expect(0);
    let env = [
        ("EVENTFLOW_ADMIN_ADDR", admin_https.as_str()),
        ("EVENTFLOW_CA_FILE", ca_file.as_str()),
        ("EVENTFLOW_CERT_FILE", cert_file.as_str()),
        ("EVENTFLOW_KEY_FILE", key_file.as_str()),
    ];
    let shown = run_env(&stack, &["--output", "json", "stream", "show", "secure"], None, &env).await.expect(0);
    assert_eq!(shown.json()["stats"]["length"], 2, "{shown:?}");

    // Refusals: one line naming the flag to fix, exit code 4 (not authenticated).
    let no_cert = run(&stack, &["--admin", &admin_https, "--ca-file", &ca_file, "stream", "list"]).await.expect(4);
    assert_eq!(no_cert.stderr.lines().count(), 1, "{no_cert:?}");
    assert!(
        no_cert.stderr.contains("requires a client certificate") && no_cert.stderr.contains("--cert-file"),
        "{no_cert:?}"
    );
    let untrusted = run(&stack, &["--publisher", &publisher_addr, "--tls", "publish", "secure", "--type", "t"]).await;
    let untrusted = untrusted.expect(4);
    assert_eq!(untrusted.stderr.lines().count(), 1, "{untrusted:?}");
    assert!(untrusted.stderr.contains("--ca-file"), "{untrusted:?}");
    let plaintext = format!("http://{}", stack.admin.addr);
    let wrong = run(&stack, &["--admin", &plaintext, "--tls", "stream", "list"]).await.expect(4);
    assert!(wrong.stderr.contains("does not serve TLS"), "{wrong:?}");
    let half = run(&stack, &[&mtls[..6], &["stream", "list"]].concat()).await.expect(2);
    assert!(half.stderr.contains("--cert-file and --key-file go together"), "{half:?}");
    publisher.stop().await;
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_query_get_export_and_replay() {
    let stack = Stack::start().await;
    let pg = eventflow_testkit::postgres::PostgresServer::start();
    let url = pg.create_database(&eventflow_e2e::unique_prefix());
    let args = ["--database-url", url.as_str(), "--archive-poll-ms", "50"];
    let archive = eventflow_e2e::start(Kind::Archive, &stack.redis.url(), &stack.prefix, &args).await;
    let env = [("EVENTFLOW_ARCHIVE_ADDR", format!("http://{}", archive.addr))];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    stack.create_stream("arch").await;
    stack.create_subscription("arch", "later", 0, 0).await;
    eventflow_e2e::eventually("the archive subscription", Duration::from_secs(30), || async {
        stack.stats("arch").await.subscriptions.iter().any(|s| s.subscription == "_archive").then_some(())
    })
    .await;
    let published = stack.publish("arch", (0..3).map(|i| event(&format!("a-{i}"), "t.x")).collect()).await;
    let query = eventflow_e2e::eventually("3 events archived", Duration::from_secs(30), || async {
        let out = run_env(&stack, &["archive", "query", "arch", "-o", "json"], None, &env).await.expect(0);
        (out.json()["events"].as_array().unwrap().len() == 3).then_some(out)
    })
    .await;
    assert_eq!(query.json()["events"][0]["event"]["id"], "a-2", "newest first");

    let shown = run_env(&stack, &["archive", "get", "arch", &published[1].entry_id], None, &env).await.expect(0);
    assert!(shown.stdout.contains("a-1"), "{shown:?}");
    let export = run_env(&stack, &["archive", "export", "arch", "--type", "t.x"], None, &env).await.expect(0);
    let ids: Vec<Value> = export.json_lines().iter().map(|l| l["id"].clone()).collect();
    assert_eq!(ids, ["a-0", "a-1", "a-2"]);
    let replay = run_env(&stack, &["archive", "replay", "arch", "--subscription", "later"], None, &env).await.expect(0);
    assert!(replay.stdout.contains("replayed 3"), "{replay:?}");
    let missing = run_env(&stack, &["archive", "query", "nothing"], None, &env).await.expect(3);
    assert!(missing.stderr.contains("not found"), "{missing:?}");
    archive.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitioned_streams_show_each_partition_and_seek_one_partition() {
    let stack = Stack::start().await;
    run(&stack, &["stream", "create", "parted", "--partitions", "3"]).await.expect(0);
    run(&stack, &["sub", "create", "parted", "workers", "--start", "earliest"]).await.expect(0);
    let one = json(&stack, &["publish", "parted", "--type", "t", "--id", "x1", "--attr", "partitionkey=k", "{}"]).await;
    let (entry, partition) = (one["entry_id"].as_str().unwrap().to_string(), one["partition"].as_i64().unwrap());
    assert!((0..3).contains(&partition), "{one}");
    let shown = json(&stack, &["stream", "show", "parted"]).await;
    let parts = shown["stats"]["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 3, "{shown}");
    let mine = usize::try_from(partition).unwrap();
    assert_eq!(parts[mine]["length"], 1);
    assert_eq!(parts[mine]["last_entry_id"].as_str(), Some(entry.as_str()));
    assert_eq!(parts[mine]["subscriptions"][0]["lag"], 1);
    let table = run(&stack, &["stream", "show", "parted"]).await.expect(0).stdout;
    assert!(table.lines().any(|l| l.starts_with("PARTITION") && l.contains("LAG")), "{table}");

    let p = partition.to_string();
    let sought = json(&stack, &["sub", "seek", "parted", "workers", "--to", &entry, "--partition", &p]).await;
    assert_eq!(sought["acknowledged"], 0);
    let shown = json(&stack, &["stream", "show", "parted"]).await;
    assert_eq!(shown["stats"]["partitions"][mine]["subscriptions"][0]["lag"], 0, "moved past the entry");
    let bare = run(&stack, &["sub", "seek", "parted", "workers", "--to", &entry]).await.expect(4);
    assert!(bare.stderr.contains("position.entry_id"), "{bare:?}");
    run(&stack, &["sub", "seek", "parted", "workers", "--to", "earliest", "--partition", "1"]).await.expect(2);
}
