//! Authorization (`--auth-file`): the grant matrix over every RPC of the services, wrong
//! stream globs, settlement of ack ids naming a subscription the caller may not subscribe to,
//! the policy reloaded while the services run, principals matched by mTLS client certificate
//! subject and SAN, and protected `/metrics` and reflection.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{path::PathBuf, time::Duration};

use eventflow_e2e::{
    Consumer, Kind, RedisServer, Running, Stack,
    certs::{Ca, Leaf, TlsDir, client_tls},
    event, eventually, start, start_tls, unique_prefix,
};
use eventflow_proto::v1::{
    AcknowledgeRequest, ArchiveFilter, CreateStreamRequest, CreateSubscriptionRequest, DeleteDeadLettersRequest,
    DeleteStreamRequest, DeleteSubscriptionRequest, ExportEventsRequest, GetArchivedEventRequest, GetDeadLetterRequest,
    GetStreamRequest, GetStreamStatsRequest, GetSubscriptionRequest, ListDeadLettersRequest, ListStreamsRequest,
    ListSubscriptionsRequest, ModifyAckDeadlineRequest, Position, PublishRequest, PublishStreamRequest,
    PurgeDeadLettersRequest, QueryEventsRequest, RejectRequest, ReplayEventsRequest, RequeueDeadLettersRequest,
    SeekRequest, Stream, SubscribeRequest, Subscription, UpdateStreamRequest, UpdateSubscriptionRequest,
    admin_service_client::AdminServiceClient, archive_service_client::ArchiveServiceClient,
    dead_letter_service_client::DeadLetterServiceClient, position, publisher_service_client::PublisherServiceClient,
    replay_events_request::Target, subscriber_service_client::SubscriberServiceClient,
};
use eventflow_runtime::auth::token_sha256_hex;
use eventflow_testkit::postgres::PostgresServer;
use prost::Message;
use tonic::{Code, Request, Status, transport::Channel};

const WAIT: Duration = Duration::from_secs(20);
/// The full-access token every stack here gets (`--auth-tokens`), for set-up.
const ROOT: &str = "root-token";
/// The grant names of the services, by their gRPC service name.
const SERVICES: [(&str, &str); 5] = [
    ("eventflow.v1.PublisherService", "publish"),
    ("eventflow.v1.SubscriberService", "subscribe"),
    ("eventflow.v1.AdminService", "admin"),
    ("eventflow.v1.DeadLetterService", "dlq"),
    ("eventflow.v1.ArchiveService", "archive"),
];

/// A policy file that a test can replace while services read it (removed on drop).
struct PolicyFile {
    /// The file.
    path: PathBuf,
}

impl PolicyFile {
    fn new(json: &str) -> Self {
        let path = std::env::temp_dir().join(format!("eventflow-policy-{}.json", unique_prefix()));
        let file = Self { path };
        file.replace(json);
        file
    }

    /// Replaces the file atomically, as a Secret update does.
    fn replace(&self, json: &str) {
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, json).unwrap();
        std::fs::rename(&tmp, &self.path).unwrap();
    }

    fn arg(&self) -> String {
        self.path.display().to_string()
    }
}

impl Drop for PolicyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A principal identified by `token`, with `grants` (JSON array).
fn token_principal(name: &str, token: &str, grants: &str) -> String {
    format!(r#"{{"name": "{name}", "token_sha256": ["{}"], "grants": {grants}}}"#, token_sha256_hex(token))
}

fn policy(principals: &[String]) -> String {
    format!(r#"{{"principals": [{}]}}"#, principals.join(",\n"))
}

/// `message` as a request carrying `token` (none: no credentials).
fn req<M>(message: M, token: Option<&str>) -> Request<M> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

fn code<T>(result: Result<T, Status>) -> Code {
    result.map_or_else(|s| s.code(), |_| Code::Ok)
}

/// The methods of the services, from the generated descriptors: a new RPC shows up here
/// and fails [`call`] until the matrix covers it.
fn every_method() -> Vec<(String, &'static str)> {
    let set = prost_types::FileDescriptorSet::decode(eventflow_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut methods = Vec::new();
    for file in &set.file {
        for service in &file.service {
            let full = format!("{}.{}", file.package(), service.name());
            let grant = SERVICES.iter().find(|(name, _)| *name == full).map(|(_, g)| *g);
            let grant = grant.unwrap_or_else(|| panic!("service {full} is not in the grant matrix"));
            methods.extend(service.method.iter().map(|m| (format!("/{full}/{}", m.name()), grant)));
        }
    }
    assert_eq!(methods.len(), 27, "{methods:?}");
    methods
}

/// Calls `method` as `token` on stream `orders` and subscription `billing` (deletions on names
/// that do not exist, so the matrix leaves the set-up in place); settlement with `ack_id`.
async fn call(stack: &Stack, archive: &Running, method: &str, token: Option<&str>, ack_id: &str) -> Code {
    let (s, sub) = ("orders".to_string(), "billing".to_string());
    let ids = vec![ack_id.to_string()];
    let subscription = || Some(Subscription { stream: s.clone(), name: sub.clone(), ..Default::default() });
    let earliest = || Some(Position { position: Some(position::Position::Earliest(true)) });
    let mut publisher = PublisherServiceClient::new(stack.publisher.channel().await);
    let mut subscriber = SubscriberServiceClient::new(stack.subscriber.channel().await);
    let mut admin = AdminServiceClient::new(stack.admin.channel().await);
    let mut dlq = DeadLetterServiceClient::new(stack.dlq.channel().await);
    let mut archived = ArchiveServiceClient::new(archive.channel().await);
    let filter = || Some(ArchiveFilter { stream: "orders".into(), ..Default::default() });
    let method = method.rsplit_once('/').unwrap().1;
    match method {
        "Publish" => {
            let r = PublishRequest { stream: s, events: vec![event("", "matrix")] };
            code(publisher.publish(req(r, token)).await)
        }
        "PublishStream" => {
            // Refused as a call (no grant to publish at all) or per request (not on this stream).
            let r = PublishStreamRequest { stream: s, events: vec![event("", "matrix")], request_id: 1 };
            match publisher.publish_stream(req(tokio_stream::iter([r]), token)).await {
                Err(status) => status.code(),
                Ok(answers) => match answers.into_inner().message().await {
                    Err(status) => status.code(),
                    Ok(answer) => answer.and_then(|a| a.error).map_or(Code::Ok, |e| Code::from(e.code)),
                },
            }
        }
        "Subscribe" => {
            let r =
                SubscribeRequest { stream: s, subscription: sub, max_outstanding_messages: 1, ..Default::default() };
            code(subscriber.subscribe(req(r, token)).await)
        }
        "Acknowledge" => code(subscriber.acknowledge(req(AcknowledgeRequest { ack_ids: ids }, token)).await),
        "ModifyAckDeadline" => {
            let r = ModifyAckDeadlineRequest { ack_ids: ids, ack_deadline_seconds: 30, ..Default::default() };
            code(subscriber.modify_ack_deadline(req(r, token)).await)
        }
        "Reject" => code(subscriber.reject(req(RejectRequest { ack_ids: ids, reason: "matrix".into() }, token)).await),
        "CreateStream" => {
            let r = CreateStreamRequest { stream: Some(Stream { name: s, ..Default::default() }) };
            code(admin.create_stream(req(r, token)).await)
        }
        "GetStream" => code(admin.get_stream(req(GetStreamRequest { name: s }, token)).await),
        "ListStreams" => code(admin.list_streams(req(ListStreamsRequest::default(), token)).await),
        "UpdateStream" => {
            let r = UpdateStreamRequest { stream: Some(Stream { name: s, ..Default::default() }), update_mask: None };
            code(admin.update_stream(req(r, token)).await)
        }
        "DeleteStream" => {
            code(admin.delete_stream(req(DeleteStreamRequest { name: "orders.gone".into() }, token)).await)
        }
        "CreateSubscription" => {
            let r = CreateSubscriptionRequest { subscription: subscription(), start_position: earliest() };
            code(admin.create_subscription(req(r, token)).await)
        }
        "GetSubscription" => {
            code(admin.get_subscription(req(GetSubscriptionRequest { stream: s, name: sub }, token)).await)
        }
        "ListSubscriptions" => code(admin.list_subscriptions(req(ListSubscriptionsRequest { stream: s }, token)).await),
        "UpdateSubscription" => {
            let r = UpdateSubscriptionRequest { subscription: subscription(), update_mask: None };
            code(admin.update_subscription(req(r, token)).await)
        }
        "DeleteSubscription" => {
            let r = DeleteSubscriptionRequest { stream: s, name: "billing-gone".into() };
            code(admin.delete_subscription(req(r, token)).await)
        }
        "Seek" => {
            let r = SeekRequest { stream: s, subscription: sub, position: earliest() };
            code(admin.seek(req(r, token)).await)
        }
        "GetStreamStats" => code(admin.get_stream_stats(req(GetStreamStatsRequest { stream: s }, token)).await),
        "ListDeadLetters" => {
            let r = ListDeadLettersRequest { stream: s, subscription: sub, ..Default::default() };
            code(dlq.list_dead_letters(req(r, token)).await)
        }
        "GetDeadLetter" => {
            let r = GetDeadLetterRequest { stream: s, subscription: sub, id: "1-0".into() };
            code(dlq.get_dead_letter(req(r, token)).await)
        }
        "RequeueDeadLetters" => {
            let r = RequeueDeadLettersRequest { stream: s, subscription: sub, ids: vec![], all: true };
            code(dlq.requeue_dead_letters(req(r, token)).await)
        }
        "DeleteDeadLetters" => {
            let r = DeleteDeadLettersRequest { stream: s, subscription: sub, ids: vec!["1-0".into()] };
            code(dlq.delete_dead_letters(req(r, token)).await)
        }
        "PurgeDeadLetters" => {
            let r = PurgeDeadLettersRequest { stream: s, subscription: sub };
            code(dlq.purge_dead_letters(req(r, token)).await)
        }
        "QueryEvents" => {
            let r = QueryEventsRequest { filter: filter(), ..Default::default() };
            code(archived.query_events(req(r, token)).await)
        }
        "GetArchivedEvent" => {
            let r = GetArchivedEventRequest { stream: s, entry_id: "1-0".into() };
            code(archived.get_archived_event(req(r, token)).await)
        }
        "ReplayEvents" => {
            let r =
                ReplayEventsRequest { filter: filter(), target: Some(Target::Subscription(sub)), ..Default::default() };
            code(archived.replay_events(req(r, token)).await)
        }
        "ExportEvents" => code(archived.export_events(req(ExportEventsRequest { filter: filter() }, token)).await),
        other => panic!("no call for {other}: add the new RPC to the grant matrix"),
    }
}

/// Root set-up on `admin`: stream `orders` with subscriptions `billing` and `audit` from the
/// earliest event.
async fn set_up(admin: Channel) {
    let mut admin = AdminServiceClient::new(admin);
    let stream = CreateStreamRequest { stream: Some(Stream { name: "orders".into(), ..Default::default() }) };
    admin.create_stream(req(stream, Some(ROOT))).await.unwrap();
    for name in ["billing", "audit"] {
        let subscription = Subscription { stream: "orders".into(), name: name.into(), ..Default::default() };
        let start_position = Some(Position { position: Some(position::Position::Earliest(true)) });
        let r = CreateSubscriptionRequest { subscription: Some(subscription), start_position };
        admin.create_subscription(req(r, Some(ROOT))).await.unwrap();
    }
}

/// Publishes `n` events to `orders` as root.
async fn publish(publisher: Channel, n: usize) {
    let events = (0..n).map(|i| event(&format!("e-{i}"), "order.created")).collect();
    let r = PublishRequest { stream: "orders".into(), events };
    let results = PublisherServiceClient::new(publisher).publish(req(r, Some(ROOT))).await.unwrap().into_inner();
    assert!(results.results.iter().all(|r| r.error.is_none()), "{results:?}");
}

/// A Subscribe call as root, and the ack ids of the first `n` events it receives.
async fn ack_ids_as_root(stack: &Stack, subscription: &str, n: usize) -> (Consumer, Vec<String>) {
    let r = SubscribeRequest {
        stream: "orders".into(),
        subscription: subscription.into(),
        max_outstanding_messages: 10,
        ..Default::default()
    };
    let stream = stack.subscriber().await.subscribe(req(r, Some(ROOT))).await.unwrap().into_inner();
    let mut consumer = Consumer { stream };
    let ids = consumer.take(n, WAIT).await.into_iter().map(|e| e.ack_id).collect();
    (consumer, ids)
}

/// The pending count of `orders`/`subscription`, as root.
async fn pending(stack: &Stack, subscription: &str) -> i64 {
    let r = GetStreamStatsRequest { stream: "orders".into() };
    let stats = stack.admin().await.get_stream_stats(req(r, Some(ROOT))).await.unwrap().into_inner().stats.unwrap();
    stats.subscriptions.iter().find(|s| s.subscription == subscription).unwrap().pending
}

/// The matrix policy: per service, `has-<grant>` may use it on `orders*`/`billing*` only and
/// `lacks-<grant>` may use every other service everywhere; `payments` may use everything on
/// `payments.*` only.
fn matrix_policy() -> String {
    let mut principals = Vec::new();
    for (_, grant) in SERVICES {
        let has = format!(r#"[{{"services": ["{grant}"], "streams": ["orders*"], "subscriptions": ["billing*"]}}]"#);
        principals.push(token_principal(&format!("{grant}-only"), &format!("has-{grant}"), &has));
        let others: Vec<String> =
            SERVICES.iter().filter(|(_, g)| *g != grant).map(|(_, g)| format!("\"{g}\"")).collect();
        let lacks = format!(r#"[{{"services": [{}], "streams": ["*"]}}]"#, others.join(", "));
        principals.push(token_principal(&format!("all-but-{grant}"), &format!("lacks-{grant}"), &lacks));
    }
    principals.push(token_principal("payments", "payments", r#"[{"services": ["*"], "streams": ["payments.*"]}]"#));
    policy(&principals)
}

/// The services under [`matrix_policy`] (and the root token), set up, with one event
/// published; the policy file lives as long as the returned guard. The archive runs over a
/// PostgreSQL of its own (kept as long as the returned server).
async fn matrix_stack() -> (PolicyFile, Stack, PostgresServer, Running) {
    let file = PolicyFile::new(&matrix_policy());
    let auth = ["--auth-file", &file.arg(), "--auth-tokens", ROOT].map(str::to_string);
    let stack = Stack::start_with(&auth.iter().map(String::as_str).collect::<Vec<_>>()).await;
    set_up(stack.admin.channel().await).await;
    publish(stack.publisher.channel().await, 1).await;
    let pg = PostgresServer::start();
    let url = pg.create_database(&unique_prefix());
    let mut args: Vec<&str> = auth.iter().map(String::as_str).collect();
    args.extend(["--database-url", &url]);
    let archive = stack.start_service(Kind::Archive, &args).await;
    let admin = stack.admin().await;
    eventually("the archive's subscription of orders", WAIT, || {
        let mut admin = admin.clone();
        async move {
            let r = ListSubscriptionsRequest { stream: "orders".into() };
            let listed = admin.list_subscriptions(req(r, Some(ROOT))).await.ok()?.into_inner();
            listed.subscriptions.iter().any(|s| s.name == "_archive").then_some(())
        }
    })
    .await;
    (file, stack, pg, archive)
}

#[tokio::test]
async fn every_rpc_needs_its_grant() {
    let (_file, stack, _pg, archive) = matrix_stack().await;
    let (_consumer, ids) = ack_ids_as_root(&stack, "billing", 1).await;
    for (method, grant) in every_method() {
        let no_token = call(&stack, &archive, &method, None, &ids[0]).await;
        assert_eq!(no_token, Code::Unauthenticated, "{method} without a token");
        let unknown = call(&stack, &archive, &method, Some("not-a-token"), &ids[0]).await;
        assert_eq!(unknown, Code::Unauthenticated, "{method} with an unknown token");
        let lacking = call(&stack, &archive, &method, Some(&format!("lacks-{grant}")), &ids[0]).await;
        assert_eq!(lacking, Code::PermissionDenied, "{method} by a principal without {grant}");
        let elsewhere = call(&stack, &archive, &method, Some("payments"), &ids[0]).await;
        let listing = method.ends_with("/ListStreams");
        // ListStreams names no stream: it lists only the streams the caller administers.
        let want = if listing { Code::Ok } else { Code::PermissionDenied };
        assert_eq!(elsewhere, want, "{method} by a principal whose stream globs do not match");
        let granted = call(&stack, &archive, &method, Some(&format!("has-{grant}")), &ids[0]).await;
        assert!(
            !matches!(granted, Code::PermissionDenied | Code::Unauthenticated),
            "{method} by a principal with {grant}: {granted:?}"
        );
    }
    // Listings hold only what the caller administers.
    let list = |token: &'static str| {
        let channel = stack.admin.channel();
        async move {
            let mut admin = AdminServiceClient::new(channel.await);
            let streams = admin.list_streams(req(ListStreamsRequest::default(), Some(token))).await.unwrap();
            let streams: Vec<String> = streams.into_inner().streams.into_iter().map(|s| s.name).collect();
            let r = ListSubscriptionsRequest { stream: "orders".into() };
            let subs = admin.list_subscriptions(req(r, Some(token))).await.map(|r| r.into_inner().subscriptions);
            (streams, subs.map(|s| s.into_iter().map(|s| s.name).collect::<Vec<_>>()).map_err(|s| s.code()))
        }
    };
    assert_eq!(list("has-admin").await, (vec!["orders".to_string()], Ok(vec!["billing".to_string()])));
    assert_eq!(list("payments").await, (vec![], Err(Code::PermissionDenied)));
    let (streams, subs) = list(ROOT).await;
    assert_eq!(streams, ["orders"]);
    assert_eq!(subs.unwrap(), ["_archive", "audit", "billing"], "with the archive's own subscription");
}

#[tokio::test]
async fn settling_an_ack_id_of_a_subscription_not_granted_is_denied_and_settles_nothing() {
    let (_file, stack, _pg, _archive) = matrix_stack().await;
    let (_audit, audit_ids) = ack_ids_as_root(&stack, "audit", 1).await;
    let (_billing, billing_ids) = ack_ids_as_root(&stack, "billing", 1).await;
    let mixed = vec![billing_ids[0].clone(), audit_ids[0].clone()];
    let mut subscriber = stack.subscriber().await;
    let token = Some("has-subscribe");
    let denied = subscriber.acknowledge(req(AcknowledgeRequest { ack_ids: mixed.clone() }, token)).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(denied.message().contains(r#"stream "orders" subscription "audit""#), "{}", denied.message());
    let r = RejectRequest { ack_ids: mixed.clone(), reason: "not mine".into() };
    assert_eq!(subscriber.reject(req(r, token)).await.unwrap_err().code(), Code::PermissionDenied);
    let r = ModifyAckDeadlineRequest { ack_ids: mixed, ack_deadline_seconds: 0, ..Default::default() };
    assert_eq!(subscriber.modify_ack_deadline(req(r, token)).await.unwrap_err().code(), Code::PermissionDenied);
    assert_eq!(pending(&stack, "audit").await, 1, "nothing settled in audit");
    assert_eq!(pending(&stack, "billing").await, 1, "nothing settled in billing either");

    // Its own ack ids settle; ids that do not decode stay "invalid" as without a policy.
    let ack_ids = vec![billing_ids[0].clone(), "garbage".to_string()];
    let reply = subscriber.acknowledge(req(AcknowledgeRequest { ack_ids }, token)).await.unwrap().into_inner();
    assert_eq!(reply.invalid_ack_ids, ["garbage"]);
    assert_eq!(pending(&stack, "billing").await, 0);
}

#[tokio::test]
async fn a_replaced_policy_applies_without_a_restart_and_protects_metrics_and_reflection() {
    let redis = RedisServer::start();
    let prefix = unique_prefix();
    let grants = |stream: &str| format!(r#"[{{"services": ["publish"], "streams": ["{stream}"]}}]"#);
    let scraper = token_principal("prometheus", "scrape", r#"[{"services": ["metrics"], "streams": ["*"]}]"#);
    let browser = token_principal("grpcurl", "browse", r#"[{"services": ["reflection"], "streams": ["*"]}]"#);
    let file = PolicyFile::new(&policy(&[
        token_principal("api", "api", &grants("payments")),
        scraper.clone(),
        browser.clone(),
    ]));
    let path = file.arg();
    let args = ["--auth-file", &path, "--auth-tokens", ROOT, "--protect-metrics", "--protect-reflection"];
    let admin = start(Kind::Admin, &redis.url(), &prefix, &args).await;
    let publisher = start(Kind::Publisher, &redis.url(), &prefix, &args).await;
    set_up(admin.channel().await).await;
    let publish_as_api = || async {
        let r = PublishRequest { stream: "orders".into(), events: vec![event("", "t")] };
        code(PublisherServiceClient::new(publisher.channel().await).publish(req(r, Some("api"))).await)
    };
    assert_eq!(publish_as_api().await, Code::PermissionDenied);
    file.replace(&policy(&[token_principal("api", "api", &grants("orders")), scraper, browser]));
    eventually("the new grant applies", WAIT, || async { (publish_as_api().await == Code::Ok).then_some(()) }).await;

    assert_eq!(metrics_status(&publisher, None).await, 401);
    assert_eq!(metrics_status(&publisher, Some("wrong")).await, 401);
    assert_eq!(metrics_status(&publisher, Some("api")).await, 403);
    assert_eq!(metrics_status(&publisher, Some("scrape")).await, 200);

    assert_eq!(reflection(&publisher, None).await, Code::Unauthenticated);
    assert_eq!(reflection(&publisher, Some("scrape")).await, Code::PermissionDenied);
    assert_eq!(reflection(&publisher, Some("browse")).await, Code::Ok);
}

/// The HTTP status of `GET /metrics` with `authorization: Bearer <token>` if given.
async fn metrics_status(running: &Running, token: Option<&str>) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(running.metrics_addr).await.unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    conn.read_to_string(&mut raw).await.unwrap();
    raw.split(' ').nth(1).unwrap().parse().unwrap()
}

/// The code of a reflection v1 ListServices call with `token`.
async fn reflection(running: &Running, token: Option<&str>) -> Code {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest,
    };
    let message = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut client = ServerReflectionClient::new(running.channel().await);
    match client.server_reflection_info(req(tokio_stream::iter([message]), token)).await {
        Ok(replies) => code(replies.into_inner().message().await),
        Err(status) => status.code(),
    }
}

#[tokio::test]
async fn client_certificates_identify_principals_by_subject_or_san() {
    let (dir, server_ca, client_ca) = (TlsDir::new(), Ca::new("server CA"), Ca::new("client CA"));
    dir.install(&server_ca.server());
    dir.install_client_ca(&client_ca);
    let publish = r#"[{"services": ["publish"], "streams": ["orders"]}]"#;
    let file = PolicyFile::new(&policy(&[
        format!(r#"{{"name": "billing", "tls_subject": "CN=billing, O=acme", "grants": {publish}}}"#),
        format!(r#"{{"name": "audit", "tls_san": ["spiffe://acme/audit"], "grants": {publish}}}"#),
    ]));
    let redis = RedisServer::start();
    let prefix = unique_prefix();
    let admin = start(Kind::Admin, &redis.url(), &prefix, &["--auth-tokens", ROOT]).await;
    set_up(admin.channel().await).await;
    let mut args = dir.args(true);
    args.extend(["--auth-file".to_string(), file.arg()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let billing = client_ca.client_with("billing", "acme", &[]);
    let publisher =
        start_tls(Kind::Publisher, &redis.url(), &prefix, &args, client_tls(&server_ca, Some(&billing))).await;
    let publish_as = |leaf: &Leaf, stream: &'static str| {
        let tls = client_tls(&server_ca, Some(leaf));
        let addr = publisher.addr;
        async move {
            let channel = Channel::from_shared(format!("https://{addr}")).unwrap().tls_config(tls).unwrap();
            let mut client = PublisherServiceClient::new(channel.connect().await.unwrap());
            let r = PublishRequest { stream: stream.into(), events: vec![event("", "t")] };
            client.publish(r).await.map(|_| ()).map_err(|s| (s.code(), s.message().to_string()))
        }
    };
    assert_eq!(publish_as(&billing, "orders").await, Ok(()));
    let wrong_stream = publish_as(&billing, "payments").await.unwrap_err();
    assert_eq!(wrong_stream.0, Code::PermissionDenied);
    assert!(wrong_stream.1.contains(r#"principal "billing" may not publish on stream "payments""#), "{wrong_stream:?}");
    let audit = client_ca.client_with("audit-7f3a", "acme", &["audit.acme.svc", "spiffe://acme/audit"]);
    assert_eq!(publish_as(&audit, "orders").await, Ok(()));
    let stranger = client_ca.client_with("billing", "evil", &["spiffe://evil/billing"]);
    let refused = publish_as(&stranger, "orders").await.unwrap_err();
    assert_eq!(refused.0, Code::PermissionDenied);
    assert!(refused.1.contains("CN=billing,O=evil"), "{refused:?}");
}
