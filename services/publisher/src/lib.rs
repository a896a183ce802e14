//! The publisher service: the Publish and PublishStream RPCs over the ingest step
//! ([`eventflow_runtime::ingest`]), which validates CloudEvents and appends them to streams
//! through the broker, idempotent by event id, one result per event. PublishStream's per-call
//! task is in `stream.rs`.

use std::net::SocketAddr;

mod stream;

use eventflow_proto::v1::{
    PublishRequest, PublishResponse, PublishStreamRequest, PublishStreamResponse,
    publisher_service_server::{PublisherService, PublisherServiceServer},
};
use eventflow_runtime::{
    CancellationToken,
    auth::{Caller, Service, authorize},
    config::{Basics, CommonArgs},
    ingest::Ingest,
    serve::{Listeners, ServeError, Served, run_service},
    status::to_status,
};
use stream::Pump;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming, service::Routes, service::interceptor::InterceptedService};

/// The gRPC service name, as health reports it.
pub const SERVICE_NAME: &str = "eventflow.v1.PublisherService";
/// Most events in one Publish request.
pub const MAX_EVENTS_PER_REQUEST: usize = eventflow_runtime::ingest::MAX_EVENTS_PER_CALL;

/// Configuration of the publisher binary.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "eventflow-publisher",
    version,
    about = "eventflow PublisherService: validated, idempotent appends of CloudEvents to Redis streams"
)]
pub struct Config {
    /// Redis and authentication settings.
    #[command(flatten)]
    pub common: CommonArgs,
    /// gRPC listen address.
    #[arg(long, env = "EVENTFLOW_GRPC_ADDR", default_value = "0.0.0.0:50051")]
    pub grpc_addr: SocketAddr,
    /// Plain-HTTP listen address of Prometheus `/metrics` and of the probes `/healthz`
    /// (liveness) and `/readyz` (readiness).
    #[arg(long, env = "EVENTFLOW_METRICS_ADDR", default_value = "0.0.0.0:9091")]
    pub metrics_addr: SocketAddr,
    /// Largest encoded event accepted, in bytes; larger events get RESOURCE_EXHAUSTED.
    #[arg(long, env = "EVENTFLOW_MAX_EVENT_BYTES", default_value_t = 1 << 20)]
    pub max_event_bytes: usize,
    /// Most bytes of events this replica holds queued or being written to Redis at once (at
    /// least --max-event-bytes). A Publish waits for room up to the Redis timeout, then gets
    /// RESOURCE_EXHAUSTED; one carrying more than this in all is refused at once. Bounds memory
    /// when Redis is slower than the producers.
    #[arg(long, env = "EVENTFLOW_MAX_PUBLISH_BYTES_IN_FLIGHT", default_value_t = 64 << 20)]
    pub max_publish_bytes_in_flight: usize,
}

/// Serves the publisher on `listeners` until `shutdown`; in-flight publishes finish first.
pub async fn run(config: Config, listeners: Listeners, shutdown: CancellationToken) -> Result<(), ServeError> {
    if config.max_publish_bytes_in_flight < config.max_event_bytes {
        return Err(ServeError::Config(format!(
            "--max-publish-bytes-in-flight ({}) must be at least --max-event-bytes ({})",
            config.max_publish_bytes_in_flight, config.max_event_bytes
        )));
    }
    let budget = config.max_publish_bytes_in_flight;
    let Basics { broker, auth, registry, metrics } =
        config.common.basics_with(|options| options.max_publish_bytes_in_flight = budget)?;
    let handler =
        Publisher { ingest: Ingest::new(broker.clone(), config.max_event_bytes, metrics), shutdown: shutdown.clone() };
    let max_request = config.max_event_bytes.saturating_mul(4).max(4 << 20);
    let service = PublisherServiceServer::new(handler).max_decoding_message_size(max_request);
    let routes = Routes::new(InterceptedService::new(service, auth.interceptor(Service::Publish)));
    let served = Served { routes, name: SERVICE_NAME, auth };
    run_service(listeners, served, broker, registry, &config.common.server, shutdown).await
}

/// The PublisherService handler.
#[derive(Debug, Clone)]
pub struct Publisher {
    /// Validates, stores and counts events.
    ingest: Ingest,
    /// Cancelled at server shutdown; ends PublishStream calls.
    shutdown: CancellationToken,
}

#[tonic::async_trait]
impl PublisherService for Publisher {
    type PublishStreamStream = ReceiverStream<Result<PublishStreamResponse, Status>>;

    async fn publish_stream(
        &self,
        request: Request<Streaming<PublishStreamRequest>>,
    ) -> Result<Response<Self::PublishStreamStream>, Status> {
        let caller = Caller::of(&request)?.clone();
        caller.authorize_use(Service::Publish)?;
        let pump = Pump {
            ingest: self.ingest.clone(),
            caller,
            cx: opentelemetry::Context::current(),
            shutdown: self.shutdown.clone(),
        };
        let (tx, rx) = mpsc::channel(stream::WINDOW);
        tokio::spawn(pump.run(request.into_inner(), tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn publish(&self, request: Request<PublishRequest>) -> Result<Response<PublishResponse>, Status> {
        authorize(&request, Service::Publish, &request.get_ref().stream, None)?;
        let PublishRequest { stream, events } = request.into_inner();
        let results =
            self.ingest.publish(&stream, events, &opentelemetry::Context::current()).await.map_err(to_status)?;
        Ok(Response::new(PublishResponse { results }))
    }
}
