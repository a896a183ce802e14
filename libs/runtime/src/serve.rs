//! The gRPC server of every binary: the service's routes plus health and reflection, on a
//! bound listener, until the shutdown token is cancelled.

use std::{net::SocketAddr, process::ExitCode};

use eventflow_broker::Broker;
use prometheus::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::{Routes, interceptor::InterceptedService};
use tonic::transport::server::TcpIncoming;
use tonic_health::{
    pb::health_server::HealthServer,
    server::{HealthReporter, HealthService},
};

use crate::{
    auth::Auth,
    config::ServerArgs,
    health::{self, ReadinessProbe},
    redis_probe::RedisProbe,
    tls::{Reloader, TlsIncoming},
};

/// Why a server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Bad configuration (one clear line for the operator).
    #[error("{0}")]
    Config(String),
    /// A listen address could not be bound.
    #[error("cannot listen on {what} address {addr}: {source}")]
    Bind {
        /// Which listener (gRPC or metrics).
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The reflection service could not be built from the descriptor set.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC transport failed.
    #[error("grpc server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// What a server serves besides health and reflection, and who may call it.
#[derive(Debug)]
pub struct Served {
    /// The service itself, its API behind `auth`'s interceptor.
    pub routes: Routes,
    /// Its full gRPC name (`eventflow.v1.PublisherService`), as health reports it.
    pub name: &'static str,
    /// Authentication: also guards reflection and `/metrics` when they are protected, and
    /// decides the start-up warning.
    pub auth: Auth,
}

/// Serves `served` (the service itself) with grpc.health.v1 and reflection (v1 and v1alpha) on
/// `listener` — over TLS when `server` names certificate files (see [`crate::tls`]) — with
/// reflection behind the reflection interceptor (open unless `--protect-reflection`),
/// HTTP/2 keepalive pings as `server` sets them (a peer that stops answering is
/// disconnected, which ends its calls). Health follows `probe` (see [`health`]; the
/// [`RedisProbe`] of the broker, with the probe of the service's other dependencies, see
/// [`run_service_with`]) for "" and `service_name`. Refuses to start — and cancels
/// `shutdown`, ending the service's background tasks — on bad `server` settings (unusable TLS
/// files included), a refused Redis eviction policy or data of a newer layout (the probe's
/// start-up check). When `shutdown` is cancelled the server stops
/// accepting, reports NOT_SERVING and returns once in-flight calls finished (handlers of
/// long-lived streams watch the same token). Health statuses are set on `reporter`, which the
/// caller may share (the HTTP probes of [`crate::probes`] read it).
pub async fn serve(
    listener: TcpListener,
    served: Served,
    mut probe: impl ReadinessProbe,
    registry: &Registry,
    server: &ServerArgs,
    reporter: HealthReporter,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let Served { routes, name: service_name, auth } = served;
    let preflight = async {
        let keepalive = server.http2_keepalive()?;
        let tls = match server.tls_files()? {
            Some(files) => Some(Reloader::new(files).map_err(ServeError::Config)?),
            None => None,
        };
        let methods = served_methods(service_name).map_err(|e| ServeError::Config(format!("metrics: {e}")))?;
        probe.check_at_start().await.map_err(ServeError::Config)?;
        Ok::<_, ServeError>((keepalive, tls, methods))
    };
    let (keepalive, tls, methods) = match preflight.await {
        Ok(settings) => settings,
        Err(e) => {
            shutdown.cancel();
            return Err(e);
        }
    };
    let health_service = HealthServer::new(HealthService::from_health_reporter(reporter.clone()));
    health::set_all(&reporter, &[service_name], tonic_health::ServingStatus::NotServing).await;
    let watch = health::spawn_watch(reporter, vec![service_name], probe, shutdown.clone());
    let routes = routes
        .add_service(health_service)
        .add_service(InterceptedService::new(reflection(service_name).build_v1()?, auth.reflection_interceptor()))
        .add_service(InterceptedService::new(reflection(service_name).build_v1alpha()?, auth.reflection_interceptor()));
    let grpc_metrics =
        crate::metrics::GrpcMetrics::register(registry).map_err(|e| ServeError::Config(format!("metrics: {e}")))?;
    let router = tonic::transport::Server::builder()
        .http2_keepalive_interval(keepalive.map(|(interval, _)| interval))
        .http2_keepalive_timeout(keepalive.map(|(_, timeout)| timeout))
        .max_concurrent_streams(Some(server.http2_max_concurrent_streams))
        .layer(crate::grpc::MetricsLayer::new(grpc_metrics, methods))
        .add_routes(routes);
    let stop = shutdown.clone().cancelled_owned();
    let result = match tls {
        Some(reloader) => {
            router.serve_with_incoming_shutdown(TlsIncoming::new(incoming(listener), reloader), stop).await
        }
        None => router.serve_with_incoming_shutdown(incoming(listener), stop).await,
    };
    shutdown.cancel();
    let _ = watch.await;
    Ok(result?)
}

/// Health names of the binaries that serve no API of their own on gRPC, only health and
/// reflection (background workers: the pusher).
pub const HEALTH_ONLY: [&str; 2] = ["eventflow-pusher", "eventflow-relay"];

/// The services every server serves besides its own: health and reflection (v1 and v1alpha).
const SHARED_SERVICES: [&str; 3] =
    ["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"];

/// The methods the server of `service_name` serves — its own and those of [`SHARED_SERVICES`] —
/// from their file descriptor sets: the values of the `method` metric label.
fn served_methods(service_name: &'static str) -> Result<crate::grpc::Methods, String> {
    let own: &[&str] = if HEALTH_ONLY.contains(&service_name) { &[] } else { &[service_name] };
    let sets = [
        eventflow_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let mut services = own.to_vec();
    services.extend(SHARED_SERVICES);
    crate::grpc::Methods::from_descriptor_sets(&sets, &services)
}

/// Server reflection of the service, health and reflection itself. Both protocol versions are
/// served: v1, and v1alpha for the clients that speak only it (Python's grpcio-reflection,
/// older grpcurl, Postman).
fn reflection(service_name: &'static str) -> tonic_reflection::server::Builder<'static> {
    SHARED_SERVICES.into_iter().fold(
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(eventflow_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name(service_name),
        tonic_reflection::server::Builder::with_service_name,
    )
}

/// Accepted gRPC connections with TCP_NODELAY (without it, small responses wait ~40 ms for
/// delayed ACKs) and keepalive.
fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true)).with_keepalive(Some(std::time::Duration::from_secs(60)))
}

/// The two listeners of a service: gRPC and `/metrics`.
#[derive(Debug)]
pub struct Listeners {
    /// Where gRPC is served.
    pub grpc: TcpListener,
    /// Where `/metrics` is served.
    pub metrics: TcpListener,
}

impl Listeners {
    /// Binds both addresses.
    pub async fn bind(grpc: SocketAddr, metrics: SocketAddr) -> Result<Self, ServeError> {
        let bind = |what, addr| async move {
            TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { what, addr, source })
        };
        Ok(Self { grpc: bind("gRPC", grpc).await?, metrics: bind("metrics", metrics).await? })
    }
}

/// Serves a service: `/metrics` from `registry` (guarded by `served.auth` when protected) with
/// the HTTP probes ([`crate::probes`]), and gRPC (see [`serve`]) with the `server` settings,
/// until `shutdown`. The probes and gRPC health read one health reporter. Warns once when auth
/// is off on a gRPC address beyond loopback.
pub async fn run_service(
    listeners: Listeners,
    served: Served,
    broker: Broker,
    registry: Registry,
    server: &ServerArgs,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    run_service_with(listeners, served, broker, registry, server, health::NothingElse, shutdown).await
}

/// [`run_service`] for a service with dependencies besides Redis: readiness also follows
/// `extra` (see [`health::Both`]).
pub async fn run_service_with(
    listeners: Listeners,
    served: Served,
    broker: Broker,
    registry: Registry,
    server: &ServerArgs,
    extra: impl ReadinessProbe,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let addr = listeners.grpc.local_addr().ok();
    if let Some(warning) = addr.and_then(|addr| open_warning(&served.auth, served.name, addr)) {
        tracing::warn!("{warning}");
    }
    let reporter = HealthReporter::new();
    let probes = crate::probes::routes(reporter.clone(), served.name);
    let auth = served.auth.clone();
    let metrics =
        tokio::spawn(crate::metrics::serve(listeners.metrics, registry.clone(), probes, auth, shutdown.clone()));
    let probe = health::Both(RedisProbe::new(broker), extra);
    let served = serve(listeners.grpc, served, probe, &registry, server, reporter, shutdown).await;
    if let Ok(Err(e)) = metrics.await {
        tracing::warn!(error = %e, "metrics endpoint failed");
    }
    served
}

/// The start-up warning of a service whose API anyone who reaches `addr` may call: auth off
/// and an address beyond loopback. `None` when there is nothing to warn about.
fn open_warning(auth: &Auth, service_name: &str, addr: SocketAddr) -> Option<String> {
    (!auth.enabled() && !addr.ip().is_loopback()).then(|| {
        format!(
            "auth is off and {service_name} listens on {addr}: anyone who can reach it may call every method on \
             every stream; set --auth-file or --auth-tokens (see docs/operations.md, Authorization)"
        )
    })
}

/// The whole `main` of a service binary: telemetry, listeners, signals, `run`, exit code.
pub async fn run_main<C, F, Fut>(
    binary: &'static str,
    config: C,
    grpc: SocketAddr,
    metrics: SocketAddr,
    run: F,
) -> ExitCode
where
    F: FnOnce(C, Listeners, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), ServeError>>,
{
    let telemetry = match crate::telemetry::init(binary) {
        Ok(telemetry) => telemetry,
        Err(e) => return exit_code(binary, Err(ServeError::Config(e))),
    };
    let result = async {
        let listeners = Listeners::bind(grpc, metrics).await?;
        run(config, listeners, crate::shutdown::on_signal()).await
    }
    .await;
    telemetry.shutdown();
    exit_code(binary, result)
}

/// Turns a binary's result into its exit code, printing one clear line on failure.
pub fn exit_code(binary: &str, result: Result<(), ServeError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{binary}: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn auth_off_beyond_loopback_warns() {
        let registry = prometheus::Registry::new();
        let off = crate::auth::AuthArgs::default().auth(&registry).unwrap();
        let any = "0.0.0.0:50051".parse().unwrap();
        let warning = super::open_warning(&off, "eventflow.v1.PublisherService", any).unwrap();
        assert!(warning.starts_with("auth is off and eventflow.v1.PublisherService listens on 0.0.0.0:50051: anyone"));
        assert!(super::open_warning(&off, "s", "127.0.0.1:50051".parse().unwrap()).is_none());
        assert!(super::open_warning(&off, "s", "[::1]:50051".parse().unwrap()).is_none());
        let args = crate::auth::AuthArgs { auth_tokens: vec!["t".into()], ..Default::default() };
        let on = args.auth(&prometheus::Registry::new()).unwrap();
        assert!(super::open_warning(&on, "s", any).is_none());
    }

    #[test]
    fn a_server_labels_its_own_health_and_reflection_methods() {
        let methods = super::served_methods("eventflow.v1.SubscriberService").unwrap();
        for path in [
            "/eventflow.v1.SubscriberService/Subscribe",
            "/eventflow.v1.SubscriberService/Acknowledge",
            "/grpc.health.v1.Health/Check",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ] {
            assert!(methods.label(path).is_some(), "{path}");
        }
        assert!(methods.label("/eventflow.v1.PublisherService/Publish").is_none(), "served by another binary");
    }
}
