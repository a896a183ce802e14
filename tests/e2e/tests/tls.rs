//! gRPC over TLS: publish and subscribe, health and reflection (v1 and v1alpha) on the TLS port,
//! mutual TLS, certificate rotation without a restart, and the configuration errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{net::SocketAddr, sync::Arc, time::Duration};

use eventflow_e2e::{
    Consumer, Kind, RedisServer, Stack,
    certs::{Ca, Leaf, SERVER_NAME, TlsDir, client_tls},
    event, eventually, run_to_exit, start_tls, unique_prefix,
};
use eventflow_runtime::serve::ServeError;
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, ServerName},
};
use tokio_stream::StreamExt;
use tonic::transport::{Channel, ClientTlsConfig};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

const WAIT: Duration = Duration::from_secs(20);

/// The four services over TLS (certificate from `ca`, files in `dir`), as a [`Stack`] whose
/// clients trust `ca`; `mtls` also requires client certificates from `ca`, and the stack's
/// clients present `client`.
async fn tls_stack(dir: &TlsDir, ca: &Ca, mtls: bool, client: Option<&Leaf>) -> Stack {
    let redis = RedisServer::start();
    let prefix = unique_prefix();
    let url = redis.url();
    let args = dir.args(mtls);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let tls = client_tls(ca, client);
    let publisher = start_tls(Kind::Publisher, &url, &prefix, &args, tls.clone()).await;
    let subscriber = start_tls(Kind::Subscriber, &url, &prefix, &args, tls.clone()).await;
    let admin = start_tls(Kind::Admin, &url, &prefix, &args, tls.clone()).await;
    let dlq = start_tls(Kind::Dlq, &url, &prefix, &args, tls).await;
    Stack { redis: redis.into(), prefix, publisher, subscriber, admin, dlq }
}

/// One health check of `addr` over a fresh connection with client settings `tls`.
async fn check_health(addr: SocketAddr, tls: ClientTlsConfig) -> Result<i32, String> {
    let channel = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))?;
    let request = HealthCheckRequest { service: String::new() };
    let reply = HealthClient::new(channel).check(request).await.map_err(|e| format!("{e:?}"))?;
    Ok(reply.into_inner().status)
}

/// The leaf certificate a new TLS handshake with `addr` presents (trusting any of `cas`).
async fn presented_certificate(addr: SocketAddr, cas: &[&Ca]) -> Vec<u8> {
    let mut roots = RootCertStore::empty();
    for ca in cas {
        roots.add(CertificateDer::from(ca_der(ca))).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(SERVER_NAME).unwrap(), tcp)
        .await
        .unwrap();
    let (_, session) = tls.get_ref();
    assert_eq!(session.alpn_protocol(), Some(&b"h2"[..]), "the server negotiates HTTP/2 by ALPN");
    session.peer_certificates().unwrap()[0].to_vec()
}

fn ca_der(ca: &Ca) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(ca.pem().as_bytes()).unwrap().to_vec()
}

/// The service names server reflection lists, asked in protocol v1alpha.
async fn reflected_services_v1alpha(channel: Channel) -> Vec<String> {
    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut client = ServerReflectionClient::new(channel);
    let mut replies = client.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    match replies.next().await.unwrap().unwrap().message_response {
        Some(MessageResponse::ListServicesResponse(list)) => list.service.into_iter().map(|s| s.name).collect(),
        other => panic!("unexpected reflection reply {other:?}"),
    }
}

#[tokio::test]
async fn publish_subscribe_health_and_reflection_over_tls() {
    let (dir, ca) = (TlsDir::new(), Ca::new("eventflow test CA"));
    dir.install(&ca.server());
    let stack = tls_stack(&dir, &ca, false, None).await;
    stack.create_stream("orders").await;
    stack.create_subscription("orders", "billing", 30, 5).await;
    let mut consumer = Consumer::open(&stack, "orders", "billing", 10).await;
    let results = stack.publish("orders", vec![event("e-1", "order.created")]).await;
    assert!(results[0].error.is_none(), "{results:?}");
    let received = consumer.take(1, WAIT).await;
    assert_eq!(received[0].event.as_ref().unwrap().id, "e-1");

    for running in [&stack.publisher, &stack.subscriber, &stack.admin, &stack.dlq] {
        let status = check_health(running.addr, running.tls.clone().unwrap()).await.unwrap();
        assert_eq!(status, ServingStatus::Serving as i32);
    }
    let mut services = reflected_services_v1alpha(stack.publisher.channel().await).await;
    services.sort();
    assert_eq!(
        services,
        [
            "eventflow.v1.PublisherService",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection"
        ]
    );

    let plain = Channel::from_shared(format!("http://{}", stack.publisher.addr)).unwrap().connect().await;
    if let Ok(plain) = plain {
        let refused = HealthClient::new(plain).check(HealthCheckRequest { service: String::new() }).await;
        assert!(refused.is_err(), "a plain-text client is served on the TLS port");
    }
    let other = Ca::new("some other CA");
    assert!(check_health(stack.publisher.addr, client_tls(&other, None)).await.is_err(), "untrusted server accepted");
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_from_the_ca() {
    let (dir, server_ca, client_ca) = (TlsDir::new(), Ca::new("server CA"), Ca::new("client CA"));
    dir.install(&server_ca.server());
    dir.install_client_ca(&client_ca);
    let client = client_ca.client("billing-service");
    let stack = tls_stack(&dir, &server_ca, true, Some(&client)).await;
    stack.create_stream("orders").await;
    let results = stack.publish("orders", vec![event("e-1", "order.created")]).await;
    assert!(results[0].error.is_none(), "{results:?}");

    let addr = stack.publisher.addr;
    let ok = check_health(addr, client_tls(&server_ca, Some(&client))).await.unwrap();
    assert_eq!(ok, ServingStatus::Serving as i32);
    let without = check_health(addr, client_tls(&server_ca, None)).await;
    assert!(without.is_err(), "a client without a certificate was served: {without:?}");
    let stranger = Ca::new("stranger CA").client("intruder");
    let foreign = check_health(addr, client_tls(&server_ca, Some(&stranger))).await;
    assert!(foreign.is_err(), "a client certificate from another CA was accepted: {foreign:?}");
}

#[tokio::test]
async fn rotated_certificates_are_used_by_new_handshakes_and_open_streams_survive() {
    let (dir, old_ca, new_ca) = (TlsDir::new(), Ca::new("old CA"), Ca::new("new CA"));
    let old_leaf = old_ca.server();
    dir.install(&old_leaf);
    let stack = tls_stack(&dir, &old_ca, false, None).await;
    stack.create_stream("orders").await;
    stack.create_subscription("orders", "billing", 30, 5).await;
    let mut consumer = Consumer::open(&stack, "orders", "billing", 10).await;
    stack.publish("orders", vec![event("before", "order.created")]).await;
    assert_eq!(consumer.take(1, WAIT).await[0].event.as_ref().unwrap().id, "before");
    let addr = stack.subscriber.addr;
    assert_eq!(presented_certificate(addr, &[&old_ca, &new_ca]).await, old_leaf.der);

    // A broken rotation (garbage in the certificate file) keeps the old certificate.
    std::fs::write(dir.cert(), "not a certificate\n").unwrap();
    assert_eq!(presented_certificate(addr, &[&old_ca, &new_ca]).await, old_leaf.der);

    let new_leaf = new_ca.server();
    dir.install(&new_leaf);
    eventually("the rotated certificate in a new handshake", WAIT, || async {
        (presented_certificate(addr, &[&old_ca, &new_ca]).await == new_leaf.der).then_some(())
    })
    .await;
    let status = check_health(addr, client_tls(&new_ca, None)).await.unwrap();
    assert_eq!(status, ServingStatus::Serving as i32, "a client trusting only the new CA is served");

    // The Subscribe stream opened before the rotation still delivers (publish over a new
    // connection to the rotated publisher too).
    let publisher_leaf = presented_certificate(stack.publisher.addr, &[&old_ca, &new_ca]).await;
    assert!(publisher_leaf == new_leaf.der, "every service reloads the files before its next handshake");
    let mut publisher = eventflow_proto::v1::publisher_service_client::PublisherServiceClient::new(
        Channel::from_shared(format!("https://{}", stack.publisher.addr))
            .unwrap()
            .tls_config(client_tls(&new_ca, None))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let request = eventflow_proto::v1::PublishRequest { stream: "orders".into(), events: vec![event("after", "t")] };
    publisher.publish(request).await.unwrap();
    assert_eq!(consumer.take(1, WAIT).await[0].event.as_ref().unwrap().id, "after");
}

#[tokio::test]
async fn bad_tls_settings_fail_at_start_with_one_line() {
    let redis = RedisServer::start();
    let prefix = unique_prefix();
    let dir = TlsDir::new();
    let (cert, key, ca) = (dir.cert().display().to_string(), dir.key().display().to_string(), dir.client_ca());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--tls-cert-file", &cert], "--tls-cert-file and --tls-key-file must be set together"),
        (vec!["--tls-key-file", &key], "--tls-cert-file and --tls-key-file must be set together"),
        (vec!["--tls-cert-file", &cert, "--tls-key-file", &key], "--tls-cert-file "),
    ];
    for (args, want) in cases {
        let Err(ServeError::Config(line)) = run_to_exit(Kind::Publisher, &redis.url(), &prefix, &args).await else {
            panic!("{args:?} did not fail with a configuration error");
        };
        assert!(line.starts_with(want), "{args:?}: {line}");
        assert!(!line.contains('\n'), "{line}");
    }

    let server_ca = Ca::new("server CA");
    let (leaf, other) = (server_ca.server(), server_ca.server());
    dir.install(&leaf);
    std::fs::write(dir.key(), &other.key_pem).unwrap();
    let args = dir.args(false);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let Err(ServeError::Config(line)) = run_to_exit(Kind::Publisher, &redis.url(), &prefix, &args).await else {
        panic!("a key that does not match the certificate was accepted");
    };
    assert!(line.contains("--tls-key-file"), "{line}");

    dir.install(&leaf);
    std::fs::write(&ca, "nothing here\n").unwrap();
    let args = dir.args(true);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let Err(ServeError::Config(line)) = run_to_exit(Kind::Publisher, &redis.url(), &prefix, &args).await else {
        panic!("a client CA file without certificates was accepted");
    };
    assert!(line.starts_with("--tls-client-ca-file "), "{line}");
}

/// A Kubernetes Secret volume (what cert-manager's Secret becomes in the pod): `tls.crt` and
/// `tls.key` are symlinks through `..data`, itself a symlink to a timestamped directory that the
/// kubelet swaps atomically on update.
#[tokio::test]
async fn a_secret_volume_update_by_symlink_swap_is_picked_up() {
    use std::os::unix::fs::symlink;
    let (dir, old_ca, new_ca) = (TlsDir::new(), Ca::new("old CA"), Ca::new("new CA"));
    let write_version = |name: &str, leaf: &Leaf| {
        let version = dir.dir.join(name);
        std::fs::create_dir(&version).unwrap();
        std::fs::write(version.join("tls.crt"), &leaf.cert_pem).unwrap();
        std::fs::write(version.join("tls.key"), &leaf.key_pem).unwrap();
    };
    let old_leaf = old_ca.server();
    write_version("..2026_01_01_00_00_00.1", &old_leaf);
    symlink("..2026_01_01_00_00_00.1", dir.dir.join("..data")).unwrap();
    symlink("..data/tls.crt", dir.cert()).unwrap();
    symlink("..data/tls.key", dir.key()).unwrap();

    let redis = RedisServer::start();
    let args = dir.args(false);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let publisher = start_tls(Kind::Publisher, &redis.url(), &unique_prefix(), &args, client_tls(&old_ca, None)).await;
    assert_eq!(presented_certificate(publisher.addr, &[&old_ca, &new_ca]).await, old_leaf.der);

    let new_leaf = new_ca.server();
    write_version("..2026_02_01_00_00_00.2", &new_leaf);
    symlink("..2026_02_01_00_00_00.2", dir.dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.dir.join("..data_tmp"), dir.dir.join("..data")).unwrap();
    eventually("the certificate of the swapped Secret volume", WAIT, || async {
        (presented_certificate(publisher.addr, &[&old_ca, &new_ca]).await == new_leaf.der).then_some(())
    })
    .await;
    publisher.stop().await;
}
