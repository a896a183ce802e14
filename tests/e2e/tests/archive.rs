//! The event archive end to end, on a real Redis and a real PostgreSQL (each test its own
//! database and key prefix): events trimmed by retention are still queried and replayed into
//! one subscription (its sibling sees nothing) or another stream, keeping their trace context;
//! the retention hold keeps what the archiver has not archived; a SIGKILLed archiver binary
//! leaves exactly one row per event; a PostgreSQL outage makes it NOT_SERVING and loses nothing;
//! filters and paging; precise statuses for bad input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{path::PathBuf, process::Stdio, time::Duration};

use eventflow_broker::{Broker, BrokerOptions};
use eventflow_e2e::{Consumer, Kind, Running, Stack, event, eventually, start, unique_prefix, wait_for_health};
use eventflow_proto::v1::{
    ArchiveFilter, ArchiveOrder, CloudEvent, CreateStreamRequest, CreateSubscriptionRequest, ExportEventsRequest,
    GetArchivedEventRequest, Position, QueryEventsRequest, ReplayEventsRequest, RetentionPolicy, Stream, Subscription,
    archive_service_client::ArchiveServiceClient, cloud_event::CloudEventAttributeValue,
    cloud_event::cloud_event_attribute_value::Attr, position, replay_events_request::Target,
};
use eventflow_testkit::{free_port, postgres::PostgresServer};
use tonic::{Code, transport::Channel};
use tonic_health::pb::health_check_response::ServingStatus;

/// Upper bound of every wait here (a shared 2-core machine).
const PATIENCE: Duration = Duration::from_secs(30);

/// A stack plus PostgreSQL, one database, and the archive service in-process.
struct ArchiveStack {
    stack: Stack,
    pg: PostgresServer,
    db: String,
    url: String,
    archive: Option<Running>,
}

impl ArchiveStack {
    async fn start() -> Self {
        let stack = Stack::start().await;
        let pg = PostgresServer::start();
        let db = unique_prefix();
        let url = pg.create_database(&db);
        let mut this = Self { stack, pg, db, url, archive: None };
        this.start_archive().await;
        this
    }

    fn archive_args(&self) -> Vec<String> {
        ["--database-url", &self.url, "--archive-poll-ms", "50", "--archive-ack-deadline-secs", "2"]
            .map(String::from)
            .to_vec()
    }

    async fn start_archive(&mut self) {
        let args = self.archive_args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.archive = Some(start(Kind::Archive, &self.stack.redis.url(), &self.stack.prefix, &args).await);
    }

    async fn stop_archive(&mut self) {
        if let Some(archive) = self.archive.take() {
            archive.stop().await;
        }
    }

    async fn client(&self) -> ArchiveServiceClient<Channel> {
        ArchiveServiceClient::new(self.archive.as_ref().unwrap().channel().await)
    }

    fn broker(&self) -> Broker {
        let options = BrokerOptions { prefix: self.stack.prefix.clone(), ..BrokerOptions::default() };
        Broker::new(&self.stack.redis.url(), options).unwrap()
    }

    /// Rows archived of `stream`, counted by SQL.
    fn rows(&self, stream: &str) -> u64 {
        self.pg
            .psql(&self.db, &format!("SELECT count(*) FROM eventflow.archive WHERE stream = '{stream}'"))
            .parse()
            .unwrap()
    }

    /// Waits until `n` events of `stream` are archived and acknowledged by `_archive`.
    async fn archived(&self, stream: &str, n: u64) {
        let broker = self.broker();
        eventually(&format!("{n} events of {stream} archived"), PATIENCE, || async {
            let settled = broker.unsettled(stream, "_archive").await.ok()?.entries == 0;
            (settled && self.rows(stream) == n).then_some(())
        })
        .await;
    }

    /// Creates a stream keeping at most `max_length` events (0 = all) and waits until the
    /// archiver has its subscription.
    async fn create_stream(&self, name: &str, max_length: i64) {
        let stream = Stream {
            name: name.into(),
            retention: Some(RetentionPolicy { max_length, ..Default::default() }),
            ..Default::default()
        };
        self.stack.admin().await.create_stream(CreateStreamRequest { stream: Some(stream) }).await.unwrap();
        let broker = self.broker();
        eventually("the archive subscription with its hold", PATIENCE, || async {
            broker.retention_hold(name, "_archive").await.ok()?.then_some(())
        })
        .await;
    }

    /// Creates a subscription that starts after the newest event.
    async fn create_subscription_at_latest(&self, stream: &str, name: &str) {
        let subscription = Subscription { stream: stream.into(), name: name.into(), ..Default::default() };
        let start_position = Some(Position { position: Some(position::Position::Latest(true)) });
        let request = CreateSubscriptionRequest { subscription: Some(subscription), start_position };
        self.stack.admin().await.create_subscription(request).await.unwrap();
    }
}

/// A traceparent of trace `n`.
fn traceparent(n: usize) -> String {
    format!("00-{n:032x}-00f067aa0ba902b7-01")
}

fn with_attr(mut e: CloudEvent, name: &str, value: &str) -> CloudEvent {
    e.attributes.insert(name.into(), CloudEventAttributeValue { attr: Some(Attr::CeString(value.into())) });
    e
}

fn attr(e: &CloudEvent, name: &str) -> String {
    match e.attributes.get(name).and_then(|v| v.attr.as_ref()) {
        Some(Attr::CeString(s)) => s.clone(),
        other => panic!("attribute {name}: {other:?}"),
    }
}

fn filter(stream: &str) -> ArchiveFilter {
    ArchiveFilter { stream: stream.into(), ..Default::default() }
}

/// Every archived event matching `filter` in `order`, paged by `page_size`; also returns the
/// number of pages.
async fn query_all(
    client: &mut ArchiveServiceClient<Channel>,
    filter: ArchiveFilter,
    order: ArchiveOrder,
    page_size: i32,
) -> (Vec<eventflow_proto::v1::ArchivedEvent>, usize) {
    let (mut all, mut pages, mut token) = (Vec::new(), 0, String::new());
    loop {
        let request = QueryEventsRequest {
            filter: Some(filter.clone()),
            order: order as i32,
            page_size,
            page_token: token.clone(),
        };
        let page = client.query_events(request).await.unwrap().into_inner();
        pages += 1;
        assert!(page.events.len() <= usize::try_from(page_size).unwrap());
        all.extend(page.events);
        if page.next_page_token.is_empty() {
            return (all, pages);
        }
        token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_trimmed_by_retention_are_queried_and_replayed_into_one_subscription_only() {
    let a = ArchiveStack::start().await;
    a.create_stream("orders", 5).await;
    let events: Vec<CloudEvent> = (0..20)
        .map(|i| with_attr(event(&format!("o-{i}"), "order.created"), "traceparent", &traceparent(i + 1)))
        .collect();
    let published = a.stack.publish("orders", events).await;
    a.archived("orders", 20).await;
    // Retention (max 5, the admin trims every second) removes what the archive holds no more.
    eventually("orders trimmed to 5", PATIENCE, || async { (a.stack.stats("orders").await.length == 5).then_some(()) })
        .await;

    let mut client = a.client().await;
    let (all, _) = query_all(&mut client, filter("orders"), ArchiveOrder::OldestFirst, 100).await;
    let ids: Vec<&str> = all.iter().map(|e| e.entry_id.as_str()).collect();
    let want: Vec<&str> = published.iter().map(|p| p.entry_id.as_str()).collect();
    assert_eq!(ids, want, "every event is archived once, in publish order");

    a.create_subscription_at_latest("orders", "billing").await;
    a.create_subscription_at_latest("orders", "sibling").await;
    let mut billing = Consumer::open(&a.stack, "orders", "billing", 100).await;
    let mut sibling = Consumer::open(&a.stack, "orders", "sibling", 100).await;
    let request = ReplayEventsRequest {
        filter: Some(filter("orders")),
        target: Some(Target::Subscription("billing".into())),
        batch_size: 7,
        max_events: 0,
    };
    let mut progress = client.replay_events(request).await.unwrap().into_inner();
    let mut last = None;
    let mut messages = 0;
    while let Some(p) = progress.message().await.unwrap() {
        messages += 1;
        last = Some(p);
    }
    let last = last.unwrap();
    assert!(last.done && last.replayed == 20 && last.last_entry_id == want[19], "{last:?}");
    assert_eq!(messages, 3, "one progress message per batch of 7");

    let got = billing.take(20, PATIENCE).await;
    for (i, received) in got.iter().enumerate() {
        let e = received.event.as_ref().unwrap();
        assert_eq!(e.id, format!("o-{i}"));
        assert_eq!(attr(e, "traceparent"), traceparent(i + 1), "trace context kept");
        assert_eq!(received.delivery_attempt, 1);
    }
    sibling.expect_nothing(Duration::from_millis(500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_never_trims_what_a_stopped_archiver_has_not_archived() {
    let mut a = ArchiveStack::start().await;
    a.create_stream("audit", 5).await;
    a.stack.publish("audit", (0..10).map(|i| event(&format!("a-{i}"), "t")).collect()).await;
    a.archived("audit", 10).await;
    a.stop_archive().await;

    a.stack.publish("audit", (10..30).map(|i| event(&format!("a-{i}"), "t")).collect()).await;
    let broker = a.broker();
    // The hold lets retention cut the 10 archived events and nothing after them.
    eventually("the archived events trimmed", PATIENCE, || async {
        broker.trim_stream("audit").await.unwrap();
        (a.stack.stats("audit").await.length == 20).then_some(())
    })
    .await;
    assert_eq!(broker.trim_stream("audit").await.unwrap().removed, 0, "nothing unarchived is trimmed");
    let unsettled = broker.unsettled("audit", "_archive").await.unwrap();
    assert_eq!(unsettled.entries, 20, "the hold keeps the 20 unarchived events");
    assert!(unsettled.oldest_ms.is_some());

    a.start_archive().await;
    a.archived("audit", 30).await;
    eventually("trimmed to 5 once archived", PATIENCE, || async {
        broker.trim_stream("audit").await.unwrap();
        (a.stack.stats("audit").await.length == 5).then_some(())
    })
    .await;
    let stats = a.stack.stats("audit").await;
    let dead = stats.subscriptions.iter().map(|s| s.dead_letter_depth).sum::<i64>();
    assert_eq!(dead, 0, "the archive subscription never dead-letters");
    let holds: Vec<&str> =
        stats.subscriptions.iter().filter(|s| s.retention_hold).map(|s| s.subscription.as_str()).collect();
    assert_eq!(holds, ["_archive"], "stats show which subscription holds retention");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_and_paging_newest_or_oldest_first() {
    let a = ArchiveStack::start().await;
    a.create_stream("pay", 0).await;
    let mut events = Vec::new();
    for i in 0..12 {
        let kind = if i % 3 == 0 { "payment.failed" } else { "payment.ok" };
        let mut e = with_attr(event(&format!("p-{i}"), kind), "subject", &format!("account-{}", i % 2));
        e = with_attr(e, "partitionkey", &format!("k{}", i % 4));
        e = with_attr(e, "traceparent", &traceparent(100 + i));
        if i == 5 {
            e.source = "/other".into();
        }
        events.push(e);
    }
    let published = a.stack.publish("pay", events).await;
    a.archived("pay", 12).await;
    let mut client = a.client().await;

    let (newest, pages) = query_all(&mut client, filter("pay"), ArchiveOrder::NewestFirst, 5).await;
    assert_eq!(pages, 3);
    let ids: Vec<String> = newest.iter().map(|e| e.event.as_ref().unwrap().id.clone()).collect();
    assert_eq!(ids, (0..12).rev().map(|i| format!("p-{i}")).collect::<Vec<_>>());
    let (oldest, _) = query_all(&mut client, filter("pay"), ArchiveOrder::OldestFirst, 4).await;
    assert_eq!(oldest.first().unwrap().entry_id, published[0].entry_id);
    assert_eq!(oldest.len(), 12);

    let ids_of = |events: Vec<eventflow_proto::v1::ArchivedEvent>| -> Vec<String> {
        events.into_iter().map(|e| e.event.unwrap().id).collect()
    };
    let by_type = ArchiveFilter { types: vec!["payment.failed".into()], ..filter("pay") };
    assert_eq!(
        ids_of(query_all(&mut client, by_type, ArchiveOrder::OldestFirst, 100).await.0),
        ["p-0", "p-3", "p-6", "p-9"]
    );
    let by_subject =
        ArchiveFilter { types: vec!["payment.failed".into()], subject: "account-1".into(), ..filter("pay") };
    assert_eq!(ids_of(query_all(&mut client, by_subject, ArchiveOrder::OldestFirst, 100).await.0), ["p-3", "p-9"]);
    let by_key = ArchiveFilter { partition_key: "k2".into(), ..filter("pay") };
    assert_eq!(ids_of(query_all(&mut client, by_key, ArchiveOrder::OldestFirst, 100).await.0), ["p-2", "p-6", "p-10"]);
    let by_trace = ArchiveFilter { trace_id: format!("{:032x}", 107), ..filter("pay") };
    assert_eq!(ids_of(query_all(&mut client, by_trace, ArchiveOrder::OldestFirst, 100).await.0), ["p-7"]);
    let by_source = ArchiveFilter { source: "/other".into(), ..filter("pay") };
    assert_eq!(ids_of(query_all(&mut client, by_source, ArchiveOrder::OldestFirst, 100).await.0), ["p-5"]);
    // A time window: [publish time of p-4's entry, publish time of p-4's entry + 1 ms).
    let ts = newest.iter().find(|e| e.entry_id == published[4].entry_id).unwrap().publish_time.unwrap();
    let end = prost_types::Timestamp { seconds: ts.seconds, nanos: ts.nanos + 1_000_000 };
    let window = ArchiveFilter { start_time: Some(ts), end_time: Some(end), ..filter("pay") };
    let in_window = ids_of(query_all(&mut client, window, ArchiveOrder::OldestFirst, 100).await.0);
    assert!(in_window.contains(&"p-4".to_string()), "{in_window:?}");

    let got = client
        .get_archived_event(GetArchivedEventRequest { stream: "pay".into(), entry_id: published[7].entry_id.clone() })
        .await
        .unwrap()
        .into_inner()
        .event
        .unwrap();
    assert_eq!(got.event.unwrap().id, "p-7");
    assert!(got.archive_time.is_some() && got.publish_time.is_some());

    // Export: CloudEvents JSON, one event per line, oldest first.
    let mut export =
        client.export_events(ExportEventsRequest { filter: Some(filter("pay")) }).await.unwrap().into_inner();
    let mut lines = Vec::new();
    while let Some(chunk) = export.message().await.unwrap() {
        lines.extend(chunk.lines);
    }
    assert_eq!(lines.len(), 12);
    let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(first["id"], "p-0");
    assert_eq!(first["partitionkey"], "k0");
    assert_eq!(first["data"]["id"], "p-0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_into_another_stream_keeps_trace_context_and_bad_input_is_refused_precisely() {
    let a = ArchiveStack::start().await;
    a.create_stream("src", 0).await;
    a.create_stream("copy", 0).await;
    a.create_subscription_at_latest("copy", "reader").await;
    let events: Vec<CloudEvent> =
        (0..3).map(|i| with_attr(event(&format!("s-{i}"), "t"), "traceparent", &traceparent(500 + i))).collect();
    a.stack.publish("src", events).await;
    a.archived("src", 3).await;
    let mut client = a.client().await;
    let mut reader = Consumer::open(&a.stack, "copy", "reader", 100).await;
    let request = ReplayEventsRequest {
        filter: Some(filter("src")),
        target: Some(Target::Stream("copy".into())),
        batch_size: 0,
        max_events: 2,
    };
    let mut progress = client.replay_events(request).await.unwrap().into_inner();
    let mut last = None;
    while let Some(p) = progress.message().await.unwrap() {
        last = Some(p);
    }
    let last = last.unwrap();
    assert!(last.done && last.replayed == 2, "{last:?}");
    let got = reader.take(2, PATIENCE).await;
    for (i, r) in got.iter().enumerate() {
        let e = r.event.as_ref().unwrap();
        assert_eq!(e.id, format!("s-{i}"));
        assert_eq!(attr(e, "traceparent"), traceparent(500 + i), "trace context kept");
    }

    let invalid = |field: &'static str| {
        move |status: tonic::Status| {
            assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
            assert!(status.message().starts_with(field), "{field}: {status:?}");
        }
    };
    let query = |f: ArchiveFilter, size: i32, token: &str| QueryEventsRequest {
        filter: Some(f),
        order: 0,
        page_size: size,
        page_token: token.into(),
    };
    invalid("filter.stream")(client.query_events(query(filter(""), 0, "")).await.unwrap_err());
    invalid("filter.trace_id")(
        client.query_events(query(ArchiveFilter { trace_id: "xyz".into(), ..filter("src") }, 0, "")).await.unwrap_err(),
    );
    invalid("page_size")(client.query_events(query(filter("src"), -1, "")).await.unwrap_err());
    invalid("page_token")(client.query_events(query(filter("src"), 0, "nope")).await.unwrap_err());
    invalid("filter")(
        client.query_events(QueryEventsRequest { filter: None, ..Default::default() }).await.unwrap_err(),
    );
    let get = |stream: &str, id: &str| GetArchivedEventRequest { stream: stream.into(), entry_id: id.into() };
    invalid("entry_id")(client.get_archived_event(get("src", "x")).await.unwrap_err());
    assert_eq!(client.get_archived_event(get("src", "1-0")).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(client.query_events(query(filter("never"), 0, "")).await.unwrap_err().code(), Code::NotFound);
    let replay = |target| ReplayEventsRequest { filter: Some(filter("src")), target, batch_size: 0, max_events: 0 };
    invalid("target")(client.replay_events(replay(None)).await.unwrap_err());
    let missing = client.replay_events(replay(Some(Target::Subscription("ghost".into())))).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    let missing = client.replay_events(replay(Some(Target::Stream("ghost".into())))).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
}

/// The real `eventflow-archive` binary of this build (`cargo build --bins`; `make test` builds
/// them first).
fn binary() -> PathBuf {
    let dir = std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().to_path_buf();
    let path = dir.join("eventflow-archive");
    assert!(path.exists(), "{} is missing: build it first (cargo build --bins; make test does)", path.display());
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archiver_killed_mid_batch_leaves_exactly_one_row_per_event() {
    let mut a = ArchiveStack::start().await;
    a.stop_archive().await;
    a.create_stream_without_archiver("bulk").await;
    // Many small batches (10 events each), so the kill lands between an insert and its ack or
    // in the middle of the flow.
    for chunk in 0..50 {
        a.stack.publish("bulk", (0..100).map(|i| event(&format!("b-{chunk}-{i}"), "t")).collect()).await;
    }
    let spawn = |a: &ArchiveStack| {
        tokio::process::Command::new(binary())
            .args(["--redis-url", &a.stack.redis.url(), "--key-prefix", &a.stack.prefix])
            .args(a.archive_args())
            .args(["--archive-batch", "10"])
            .args(["--grpc-addr", &format!("127.0.0.1:{}", free_port())])
            .args(["--metrics-addr", &format!("127.0.0.1:{}", free_port())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let mut child = spawn(&a);
    eventually("part of the stream archived", PATIENCE, || async { (a.rows("bulk") >= 500).then_some(()) }).await;
    child.start_kill().unwrap(); // SIGKILL
    child.wait().await.unwrap();
    let at_kill = a.rows("bulk");
    assert!(at_kill < 5000, "killed before the end (rows {at_kill})");

    let mut child = spawn(&a);
    a.archived("bulk", 5000).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let distinct: u64 =
        a.pg.psql(&a.db, "SELECT count(DISTINCT event_id) FROM eventflow.archive WHERE stream = 'bulk'")
            .parse()
            .unwrap();
    assert_eq!((a.rows("bulk"), distinct), (5000, 5000), "exactly one row per event");
}

impl ArchiveStack {
    /// Creates a stream while no archiver runs (its subscription comes with the next one).
    async fn create_stream_without_archiver(&self, name: &str) {
        let stream = Stream { name: name.into(), ..Default::default() };
        self.stack.admin().await.create_stream(CreateStreamRequest { stream: Some(stream) }).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_makes_the_archive_not_ready_and_loses_nothing() {
    let mut a = ArchiveStack::start().await;
    let archive = a.archive.as_ref().unwrap();
    wait_for_health(archive, "eventflow.v1.ArchiveService", ServingStatus::Serving).await;
    a.create_stream("ledger", 0).await;
    a.stack.publish("ledger", (0..3).map(|i| event(&format!("l-{i}"), "t")).collect()).await;
    a.archived("ledger", 3).await;

    a.pg.kill();
    let archive = a.archive.as_ref().unwrap();
    wait_for_health(archive, "", ServingStatus::NotServing).await;
    wait_for_health(archive, "eventflow.v1.ArchiveService", ServingStatus::NotServing).await;
    a.stack.publish("ledger", (3..5).map(|i| event(&format!("l-{i}"), "t")).collect()).await;

    a.pg.restart();
    wait_for_health(a.archive.as_ref().unwrap(), "eventflow.v1.ArchiveService", ServingStatus::Serving).await;
    a.archived("ledger", 5).await;
}
