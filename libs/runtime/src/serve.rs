//! The gRPC server of every binary: the service's routes plus health and reflection, on a
//! bound listener, until the shutdown token is cancelled.

use eventflow_broker::Broker;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::health;

/// Why a server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The reflection service could not be built from the descriptor set.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC transport failed.
    #[error("grpc server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves `routes` (the service itself) with grpc.health.v1 and reflection v1 on `listener`.
/// Health follows Redis (see [`health`]) for "" and `service_name`. When `shutdown` is
/// cancelled the server stops accepting, reports NOT_SERVING and returns once in-flight calls
/// finished (handlers of long-lived streams watch the same token).
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    service_name: &'static str,
    broker: Broker,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let (reporter, health_service) = tonic_health::server::health_reporter();
    health::set_all(&reporter, &[service_name], tonic_health::ServingStatus::NotServing).await;
    let watch = health::spawn_redis_watch(reporter, vec![service_name], broker, shutdown.clone());
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(eventflow_proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let routes = routes.add_service(health_service).add_service(reflection);
    let result = tonic::transport::Server::builder()
        .add_routes(routes)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown.clone().cancelled_owned())
        .await;
    shutdown.cancel();
    let _ = watch.await;
    Ok(result?)
}
