//! The admin service: streams and subscriptions over the broker.

mod convert;
mod gauges;
mod mask;

use std::{net::SocketAddr, time::Duration};

use eventflow_broker::{Broker, BrokerError, SubscriptionConfig};
use eventflow_proto::v1::{
    CreateStreamRequest, CreateStreamResponse, CreateSubscriptionRequest, CreateSubscriptionResponse,
    DeleteStreamRequest, DeleteStreamResponse, DeleteSubscriptionRequest, DeleteSubscriptionResponse, GetStreamRequest,
    GetStreamResponse, GetStreamStatsRequest, GetStreamStatsResponse, GetSubscriptionRequest, GetSubscriptionResponse,
    ListStreamsRequest, ListStreamsResponse, ListSubscriptionsRequest, ListSubscriptionsResponse, SeekRequest,
    SeekResponse, UpdateStreamRequest, UpdateStreamResponse, UpdateSubscriptionRequest, UpdateSubscriptionResponse,
    admin_service_server::{AdminService, AdminServiceServer},
};
use eventflow_runtime::{
    CancellationToken,
    auth::{Caller, Service},
    config::{Basics, CommonArgs},
    serve::{Listeners, ServeError, Served, run_service},
    status::{reply, to_status},
};
use tonic::{Request, Response, Status, service::Routes, service::interceptor::InterceptedService};

use crate::convert::{
    position_from_proto, stats_to_proto, stream_from_proto, stream_to_proto, subscription_from_proto,
    subscription_to_proto,
};

/// The gRPC service name, as health reports it.
pub const SERVICE_NAME: &str = "eventflow.v1.AdminService";
/// Streams per ListStreams page when the client asks for 0.
const DEFAULT_PAGE_SIZE: usize = 100;

/// Configuration of the admin binary.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "eventflow-admin",
    version,
    about = "eventflow AdminService: streams, subscriptions, retention, replay, stats"
)]
pub struct Config {
    /// Redis and authentication settings.
    #[command(flatten)]
    pub common: CommonArgs,
    /// gRPC listen address.
    #[arg(long, env = "EVENTFLOW_GRPC_ADDR", default_value = "0.0.0.0:50053")]
    pub grpc_addr: SocketAddr,
    /// Plain-HTTP listen address of Prometheus `/metrics` and of the probes `/healthz`
    /// (liveness) and `/readyz` (readiness).
    #[arg(long, env = "EVENTFLOW_METRICS_ADDR", default_value = "0.0.0.0:9093")]
    pub metrics_addr: SocketAddr,
    /// Seconds between background retention trims of every stream (0 = off). Publishing trims
    /// too; this catches streams nobody publishes to.
    #[arg(long, env = "EVENTFLOW_TRIM_INTERVAL_SECS", default_value_t = 10)]
    pub trim_interval_secs: u64,
    /// Seconds between refreshes of the lag/pending/DLQ/breaker gauges on `/metrics`.
    #[arg(long, env = "EVENTFLOW_STATS_INTERVAL_SECS", default_value_t = 5)]
    pub stats_interval_secs: u64,
    /// Accept push endpoints over plain http and with loopback, private or link-local IP
    /// literals (the pusher needs the same flag to call them).
    #[arg(long, env = "EVENTFLOW_PUSH_ALLOW_PRIVATE", default_value_t = false)]
    pub push_allow_private: bool,
}

/// Serves the admin service on `listeners` until `shutdown`.
pub async fn run(config: Config, listeners: Listeners, shutdown: CancellationToken) -> Result<(), ServeError> {
    let Basics { broker, auth, registry, metrics } = config.common.basics()?;
    if config.trim_interval_secs > 0 {
        let interval = Duration::from_secs(config.trim_interval_secs);
        tokio::spawn(trim_loop(broker.clone(), interval, shutdown.clone()));
    }
    let interval = Duration::from_secs(config.stats_interval_secs.max(1));
    tokio::spawn(gauges::refresh_loop(broker.clone(), metrics, interval, shutdown.clone()));
    let handler =
        AdminServiceServer::new(Admin { broker: broker.clone(), push_allow_private: config.push_allow_private });
    let routes = Routes::new(InterceptedService::new(handler, auth.interceptor(Service::Admin)));
    let served = Served { routes, name: SERVICE_NAME, auth };
    run_service(listeners, served, broker, registry, &config.common.server, shutdown).await
}

/// Trims every stream to its retention every `interval` until `shutdown`.
async fn trim_loop(broker: Broker, interval: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        match broker.trim_all().await {
            Ok(t) if t.removed == 0 => {}
            Ok(t) => tracing::info!(
                removed = t.removed,
                dead_lettered = t.dead_lettered,
                dropped = t.dropped,
                "retention trim"
            ),
            Err(e) => tracing::warn!(error = %e, "retention trim failed"),
        }
    }
}

/// Ok if the caller of `request` has the `admin` grant on `stream` (and `subscription`, for
/// calls that name one).
fn authorize<T>(request: &Request<T>, stream: &str, subscription: Option<&str>) -> Result<(), Status> {
    Ok(eventflow_runtime::auth::authorize(request, Service::Admin, stream, subscription)?)
}

/// The name of an optional message's stream or subscription, "" when it is missing (the call
/// then fails validation, or authorization first when no grant matches "").
fn name_of<M>(message: Option<&M>, name: impl Fn(&M) -> &str) -> &str {
    message.map_or("", name)
}

/// The AdminService handler.
#[derive(Debug, Clone)]
pub struct Admin {
    /// Where streams and subscriptions live.
    broker: Broker,
    /// `EVENTFLOW_PUSH_ALLOW_PRIVATE`: push endpoints may use http and private IP literals.
    push_allow_private: bool,
}

/// Refuses a push endpoint the pusher would refuse by its form (plain http, a private IP
/// literal) unless allowed; host names are checked by the pusher on every connect.
fn check_push_endpoint(config: &SubscriptionConfig, allow_private: bool) -> Result<(), BrokerError> {
    let Some(push) = &config.push else { return Ok(()) };
    eventflow_push::address::check_endpoint(&push.endpoint, allow_private)
        .map(|_| ())
        .map_err(|refused| BrokerError::invalid("subscription.push_config.endpoint", refused.to_string()))
}

#[tonic::async_trait]
impl AdminService for Admin {
    async fn create_stream(
        &self,
        request: Request<CreateStreamRequest>,
    ) -> Result<Response<CreateStreamResponse>, Status> {
        authorize(&request, name_of(request.get_ref().stream.as_ref(), |s| &s.name), None)?;
        let stream = request.into_inner().stream.ok_or_else(|| Status::invalid_argument("stream: required"))?;
        let config = stream_from_proto(&stream).map_err(to_status)?;
        let created = self.broker.create_stream(&config).await;
        reply(created.map(|s| CreateStreamResponse { stream: Some(stream_to_proto(&s)) }))
    }

    async fn get_stream(&self, request: Request<GetStreamRequest>) -> Result<Response<GetStreamResponse>, Status> {
        authorize(&request, &request.get_ref().name, None)?;
        let stream = self.broker.get_stream(&request.into_inner().name).await;
        reply(stream.map(|s| GetStreamResponse { stream: Some(stream_to_proto(&s)) }))
    }

    async fn list_streams(
        &self,
        request: Request<ListStreamsRequest>,
    ) -> Result<Response<ListStreamsResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        caller.authorize_use(Service::Admin)?;
        let req = request.into_inner();
        let page_size = match usize::try_from(req.page_size) {
            Ok(0) => DEFAULT_PAGE_SIZE,
            Ok(n) => n.min(eventflow_broker::admin::MAX_PAGE_SIZE),
            Err(_) => return Err(Status::invalid_argument("page_size: must not be negative")),
        };
        let (names, more) = self.broker.list_stream_names(&req.page_token, page_size).await.map_err(to_status)?;
        let mut streams = Vec::with_capacity(names.len());
        for name in names.iter().filter(|name| caller.permits(Service::Admin, name, None)) {
            match self.broker.get_stream(name).await {
                Ok(s) => streams.push(stream_to_proto(&s)),
                Err(BrokerError::NotFound(_)) => {}
                Err(e) => return Err(to_status(e)),
            }
        }
        let next_page_token = if more { names.last().cloned().unwrap_or_default() } else { String::new() };
        Ok(Response::new(ListStreamsResponse { streams, next_page_token }))
    }

    async fn update_stream(
        &self,
        request: Request<UpdateStreamRequest>,
    ) -> Result<Response<UpdateStreamResponse>, Status> {
        authorize(&request, name_of(request.get_ref().stream.as_ref(), |s| &s.name), None)?;
        let req = request.into_inner();
        let stream = req.stream.ok_or_else(|| Status::invalid_argument("stream: required"))?;
        let current = self.broker.get_stream(&stream.name).await.map_err(to_status)?;
        let updated = mask::apply_stream(current, &stream, req.update_mask.as_ref()).map_err(to_status)?;
        let stored = self.broker.update_stream(&updated).await;
        reply(stored.map(|s| UpdateStreamResponse { stream: Some(stream_to_proto(&s)) }))
    }

    async fn delete_stream(
        &self,
        request: Request<DeleteStreamRequest>,
    ) -> Result<Response<DeleteStreamResponse>, Status> {
        authorize(&request, &request.get_ref().name, None)?;
        reply(self.broker.delete_stream(&request.into_inner().name).await.map(|()| DeleteStreamResponse {}))
    }

    async fn create_subscription(
        &self,
        request: Request<CreateSubscriptionRequest>,
    ) -> Result<Response<CreateSubscriptionResponse>, Status> {
        let sub = request.get_ref().subscription.as_ref();
        authorize(&request, name_of(sub, |s| &s.stream), Some(name_of(sub, |s| &s.name)))?;
        let req = request.into_inner();
        let sub = req.subscription.ok_or_else(|| Status::invalid_argument("subscription: required"))?;
        let config = subscription_from_proto(&sub).map_err(to_status)?;
        check_push_endpoint(&config, self.push_allow_private).map_err(to_status)?;
        let start = position_from_proto(req.start_position.as_ref(), "start_position").map_err(to_status)?;
        let created = self.broker.create_subscription(&config, &start).await;
        reply(created.map(|s| CreateSubscriptionResponse { subscription: Some(subscription_to_proto(&s)) }))
    }

    async fn get_subscription(
        &self,
        request: Request<GetSubscriptionRequest>,
    ) -> Result<Response<GetSubscriptionResponse>, Status> {
        authorize(&request, &request.get_ref().stream, Some(&request.get_ref().name))?;
        let req = request.into_inner();
        let sub = self.broker.get_subscription(&req.stream, &req.name).await;
        reply(sub.map(|s| GetSubscriptionResponse { subscription: Some(subscription_to_proto(&s)) }))
    }

    async fn list_subscriptions(
        &self,
        request: Request<ListSubscriptionsRequest>,
    ) -> Result<Response<ListSubscriptionsResponse>, Status> {
        authorize(&request, &request.get_ref().stream, None)?;
        let caller = Caller::of(&request)?.clone();
        let subs = self.broker.list_subscriptions(&request.into_inner().stream).await;
        reply(subs.map(|subs| {
            ListSubscriptionsResponse {
                subscriptions: subs
                    .iter()
                    .filter(|s| caller.permits(Service::Admin, &s.stream, Some(&s.name)))
                    .map(subscription_to_proto)
                    .collect(),
            }
        }))
    }

    async fn update_subscription(
        &self,
        request: Request<UpdateSubscriptionRequest>,
    ) -> Result<Response<UpdateSubscriptionResponse>, Status> {
        let sub = request.get_ref().subscription.as_ref();
        authorize(&request, name_of(sub, |s| &s.stream), Some(name_of(sub, |s| &s.name)))?;
        let req = request.into_inner();
        let sub = req.subscription.ok_or_else(|| Status::invalid_argument("subscription: required"))?;
        let current = self.broker.get_subscription(&sub.stream, &sub.name).await.map_err(to_status)?;
        let updated = mask::apply_subscription(current, &sub, req.update_mask.as_ref()).map_err(to_status)?;
        check_push_endpoint(&updated, self.push_allow_private).map_err(to_status)?;
        let stored = self.broker.update_subscription(&updated).await;
        reply(stored.map(|s| UpdateSubscriptionResponse { subscription: Some(subscription_to_proto(&s)) }))
    }

    async fn delete_subscription(
        &self,
        request: Request<DeleteSubscriptionRequest>,
    ) -> Result<Response<DeleteSubscriptionResponse>, Status> {
        authorize(&request, &request.get_ref().stream, Some(&request.get_ref().name))?;
        let req = request.into_inner();
        reply(self.broker.delete_subscription(&req.stream, &req.name).await.map(|()| DeleteSubscriptionResponse {}))
    }

    async fn seek(&self, request: Request<SeekRequest>) -> Result<Response<SeekResponse>, Status> {
        authorize(&request, &request.get_ref().stream, Some(&request.get_ref().subscription))?;
        let req = request.into_inner();
        if req.position.as_ref().and_then(|p| p.position.as_ref()).is_none() {
            return Err(Status::invalid_argument("position: required"));
        }
        let position = position_from_proto(req.position.as_ref(), "position").map_err(to_status)?;
        let acked = self.broker.seek(&req.stream, &req.subscription, &position).await;
        reply(acked.map(|n| SeekResponse { acknowledged: i64::try_from(n).unwrap_or(i64::MAX) }))
    }

    async fn get_stream_stats(
        &self,
        request: Request<GetStreamStatsRequest>,
    ) -> Result<Response<GetStreamStatsResponse>, Status> {
        authorize(&request, &request.get_ref().stream, None)?;
        let stats = self.broker.stream_stats(&request.into_inner().stream).await;
        reply(stats.map(|s| GetStreamStatsResponse { stats: Some(stats_to_proto(s)) }))
    }
}
