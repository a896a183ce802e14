//! The dead-letter service: inspect, requeue (into the one subscription the event failed in),
//! delete and purge dead letters.

use std::net::SocketAddr;

use eventflow_broker::{Broker, dlq::DeadLetter as Stored};
use eventflow_proto::{
    convert::{count, timestamp_from_ms},
    prost::Message,
    v1::{
        CloudEvent, DeadLetter, DeleteDeadLettersRequest, DeleteDeadLettersResponse, GetDeadLetterRequest,
        GetDeadLetterResponse, ListDeadLettersRequest, ListDeadLettersResponse, PurgeDeadLettersRequest,
        PurgeDeadLettersResponse, RequeueDeadLettersRequest, RequeueDeadLettersResponse,
        dead_letter_service_server::{DeadLetterService, DeadLetterServiceServer},
    },
};
use eventflow_runtime::{
    CancellationToken,
    auth::{Service, authorize},
    config::{Basics, CommonArgs},
    metrics::EventMetrics,
    serve::{Listeners, ServeError, Served, run_service},
    status::reply,
};
use tonic::{Request, Response, Status, service::Routes, service::interceptor::InterceptedService};

/// The gRPC service name, as health reports it.
pub const SERVICE_NAME: &str = "eventflow.v1.DeadLetterService";
/// Dead letters per page when the client asks for 0.
const DEFAULT_PAGE_SIZE: usize = 100;

/// Configuration of the dead-letter binary.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "eventflow-dlq",
    version,
    about = "eventflow DeadLetterService: inspect, requeue and purge dead letters"
)]
pub struct Config {
    /// Redis and authentication settings.
    #[command(flatten)]
    pub common: CommonArgs,
    /// gRPC listen address.
    #[arg(long, env = "EVENTFLOW_GRPC_ADDR", default_value = "0.0.0.0:50054")]
    pub grpc_addr: SocketAddr,
    /// Plain-HTTP listen address of Prometheus `/metrics` and of the probes `/healthz`
    /// (liveness) and `/readyz` (readiness).
    #[arg(long, env = "EVENTFLOW_METRICS_ADDR", default_value = "0.0.0.0:9094")]
    pub metrics_addr: SocketAddr,
}

/// Serves the dead-letter service on `listeners` until `shutdown`.
pub async fn run(config: Config, listeners: Listeners, shutdown: CancellationToken) -> Result<(), ServeError> {
    let Basics { broker, auth, registry, metrics } = config.common.basics()?;
    let handler = DeadLetterServiceServer::new(DeadLetters { broker: broker.clone(), metrics });
    let routes = Routes::new(InterceptedService::new(handler, auth.interceptor(Service::Dlq)));
    let served = Served { routes, name: SERVICE_NAME, auth };
    run_service(listeners, served, broker, registry, &config.common.server, shutdown).await
}

/// The DeadLetterService handler.
#[derive(Debug, Clone)]
pub struct DeadLetters {
    /// Where the dead-letter queues live.
    broker: Broker,
    /// Counts requeues.
    metrics: EventMetrics,
}

/// The API message of a stored dead letter. The event bytes were written by the publisher, so
/// they decode; if not, the record is still shown, without its event.
fn to_proto(d: Stored) -> DeadLetter {
    let event = CloudEvent::decode(d.payload.as_slice())
        .inspect_err(|e| tracing::warn!(id = %d.id, error = %e, "dead letter with undecodable event"))
        .ok();
    DeadLetter {
        publish_time: eventflow_broker::model::entry_ms(&d.entry_id).map(timestamp_from_ms),
        dead_letter_time: Some(timestamp_from_ms(d.time_ms)),
        id: d.id,
        stream: d.stream,
        entry_id: d.entry_id,
        subscription: d.subscription,
        delivery_attempts: i32::try_from(d.attempts).unwrap_or(i32::MAX),
        reason: d.reason,
        consumer: d.consumer,
        ordering_key: d.ordering_key,
        event,
    }
}

/// A dead-letter request: every one names the stream and subscription it touches.
trait Target {
    /// The stream and subscription.
    fn target(&self) -> (&str, &str);
}

macro_rules! target {
    ($($request:ty),*) => {
        $(impl Target for $request {
            fn target(&self) -> (&str, &str) {
                (&self.stream, &self.subscription)
            }
        })*
    };
}

target!(
    ListDeadLettersRequest,
    GetDeadLetterRequest,
    RequeueDeadLettersRequest,
    DeleteDeadLettersRequest,
    PurgeDeadLettersRequest
);

/// Ok if the caller has the `dlq` grant on the stream and subscription `request` names.
fn authorize_dlq<T: Target>(request: &Request<T>) -> Result<(), Status> {
    let (stream, subscription) = request.get_ref().target();
    Ok(authorize(request, Service::Dlq, stream, Some(subscription))?)
}

#[tonic::async_trait]
impl DeadLetterService for DeadLetters {
    async fn list_dead_letters(
        &self,
        request: Request<ListDeadLettersRequest>,
    ) -> Result<Response<ListDeadLettersResponse>, Status> {
        authorize_dlq(&request)?;
        let req = request.into_inner();
        let page_size = match usize::try_from(req.page_size) {
            Ok(0) => DEFAULT_PAGE_SIZE,
            Ok(n) => n,
            Err(_) => return Err(Status::invalid_argument("page_size: must not be negative")),
        };
        let page = self.broker.list_dead_letters(&req.stream, &req.subscription, page_size, &req.page_token).await;
        reply(page.map(|(letters, next_page_token)| ListDeadLettersResponse {
            dead_letters: letters.into_iter().map(to_proto).collect(),
            next_page_token,
        }))
    }

    async fn get_dead_letter(
        &self,
        request: Request<GetDeadLetterRequest>,
    ) -> Result<Response<GetDeadLetterResponse>, Status> {
        authorize_dlq(&request)?;
        let req = request.into_inner();
        let letter = self.broker.get_dead_letter(&req.stream, &req.subscription, &req.id).await;
        reply(letter.map(|d| GetDeadLetterResponse { dead_letter: Some(to_proto(d)) }))
    }

    async fn requeue_dead_letters(
        &self,
        request: Request<RequeueDeadLettersRequest>,
    ) -> Result<Response<RequeueDeadLettersResponse>, Status> {
        authorize_dlq(&request)?;
        let req = request.into_inner();
        let done = if req.all {
            self.broker.requeue_all_dead_letters(&req.stream, &req.subscription).await.map(|n| (n, Vec::new()))
        } else if req.ids.is_empty() {
            return Err(Status::invalid_argument("ids: name dead letters to requeue, or set all"));
        } else {
            self.broker.requeue_dead_letters(&req.stream, &req.subscription, &req.ids).await
        };
        if let Ok((n, _)) = &done {
            self.metrics.requeued.with_label_values(&[&req.stream, &req.subscription]).inc_by(*n);
        }
        reply(done.map(|(n, missing)| RequeueDeadLettersResponse { requeued: count(n), not_found_ids: missing }))
    }

    async fn delete_dead_letters(
        &self,
        request: Request<DeleteDeadLettersRequest>,
    ) -> Result<Response<DeleteDeadLettersResponse>, Status> {
        authorize_dlq(&request)?;
        let req = request.into_inner();
        let n = self.broker.delete_dead_letters(&req.stream, &req.subscription, &req.ids).await;
        reply(n.map(|n| DeleteDeadLettersResponse { deleted: count(n) }))
    }

    async fn purge_dead_letters(
        &self,
        request: Request<PurgeDeadLettersRequest>,
    ) -> Result<Response<PurgeDeadLettersResponse>, Status> {
        authorize_dlq(&request)?;
        let req = request.into_inner();
        let n = self.broker.purge_dead_letters(&req.stream, &req.subscription).await;
        reply(n.map(|n| PurgeDeadLettersResponse { purged: count(n) }))
    }
}
