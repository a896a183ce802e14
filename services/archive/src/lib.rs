//! The archive service: the archiver (`eventflow_archive::archiver`) in the background and the
//! ArchiveService API over the same PostgreSQL. The handler converts requests to the archive's
//! domain types, calls it, and maps its one error enum to a status. Health is NOT_SERVING while
//! Redis or PostgreSQL is unreachable (`eventflow_pg::probe::PgProbe` next to the Redis probe).

use std::{net::SocketAddr, pin::Pin, time::Duration};

use eventflow_archive::{
    ArchiveError,
    archiver::{Archiver, Settings, Streams},
    filter::{self, Cursor, Filter, Order},
    metrics::ArchiveMetrics,
    replay::{DEFAULT_REPLAY_BATCH, MAX_REPLAY_BATCH, Progress, Replayer, Target},
    store::{Row, Store},
};
use eventflow_pg::probe::PgProbe;
use eventflow_proto::{
    convert::{count, ms_from_timestamp, timestamp_from_ms},
    prost_types::Timestamp,
    v1::{
        ArchiveFilter, ArchiveOrder, ArchivedEvent, ExportEventsRequest, ExportEventsResponse, GetArchivedEventRequest,
        GetArchivedEventResponse, QueryEventsRequest, QueryEventsResponse, ReplayEventsRequest, ReplayEventsResponse,
        archive_service_server::{ArchiveService, ArchiveServiceServer},
        replay_events_request,
    },
};
use eventflow_runtime::{
    CancellationToken,
    auth::{Service, authorize},
    config::{Basics, CommonArgs},
    ingest::Ingest,
    serve::{Listeners, ServeError, Served, run_service_with},
};
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::{Request, Response, Status, service::Routes, service::interceptor::InterceptedService};

/// The gRPC service name, as health reports it.
pub const SERVICE_NAME: &str = "eventflow.v1.ArchiveService";

/// How soon an archive session at its flow-control limit recounts its pending entries.
const ROOM_POLL: Duration = Duration::from_millis(5);

/// Configuration of the archive binary.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "eventflow-archive",
    version,
    about = "eventflow archive: keeps every event of the archived streams in PostgreSQL; ArchiveService queries, replays and exports them"
)]
pub struct Config {
    /// Redis and authentication settings.
    #[command(flatten)]
    pub common: CommonArgs,
    /// gRPC listen address.
    #[arg(long, env = "EVENTFLOW_GRPC_ADDR", default_value = "0.0.0.0:50055")]
    pub grpc_addr: SocketAddr,
    /// Plain-HTTP listen address of Prometheus `/metrics` and of the probes `/healthz`
    /// (liveness) and `/readyz` (readiness).
    #[arg(long, env = "EVENTFLOW_METRICS_ADDR", default_value = "0.0.0.0:9095")]
    pub metrics_addr: SocketAddr,
    /// PostgreSQL URL (`postgres://user:pass@host/db`); the schema is migrated at start.
    #[arg(long, env = "EVENTFLOW_DATABASE_URL")]
    pub database_url: String,
    /// Do not apply the schema migrations at start (a DBA applies them; the binary then expects
    /// them applied).
    #[arg(long, env = "EVENTFLOW_NO_MIGRATE", default_value_t = false)]
    pub no_migrate: bool,
    /// Most PostgreSQL connections of this process.
    #[arg(long, env = "EVENTFLOW_DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,
    /// Streams to archive: comma-separated names, or `*` for all.
    #[arg(long, env = "EVENTFLOW_ARCHIVE_STREAMS", default_value = "*")]
    pub archive_streams: String,
    /// Events per archive batch (one insert and one acknowledgement).
    #[arg(long, env = "EVENTFLOW_ARCHIVE_BATCH", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub archive_batch: u32,
    /// Ack deadline of the `_archive` subscriptions the archiver creates: how long a batch
    /// held by a crashed archiver waits before another takes it.
    #[arg(long, env = "EVENTFLOW_ARCHIVE_ACK_DEADLINE_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub archive_ack_deadline_secs: u64,
    /// How often the archiver looks for new and deleted streams and refreshes the lag gauges (ms).
    #[arg(long, env = "EVENTFLOW_ARCHIVE_POLL_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(10..))]
    pub archive_poll_ms: u64,
    /// Days archived events are kept (whole UTC-day partitions are dropped); 0 = forever.
    #[arg(long, env = "EVENTFLOW_ARCHIVE_RETENTION_DAYS", default_value_t = 0)]
    pub archive_retention_days: u64,
    /// Largest encoded event a replay into a stream publishes (as the publisher's
    /// --max-event-bytes).
    #[arg(long, env = "EVENTFLOW_MAX_EVENT_BYTES", default_value_t = 1 << 20)]
    pub max_event_bytes: usize,
}

/// Archives and serves the archive service on `listeners` until `shutdown`.
pub async fn run(config: Config, listeners: Listeners, shutdown: CancellationToken) -> Result<(), ServeError> {
    // The archive sink acknowledges inside its `send`, before the session waits for room, so
    // the session learns of it by its recount: poll for room often (one XPENDING per batch).
    let Basics { broker, auth, registry, metrics } =
        config.common.basics_with(|options| options.capacity_poll = ROOM_POLL)?;
    let streams =
        Streams::parse(&config.archive_streams).map_err(|e| ServeError::Config(format!("--archive-streams: {e}")))?;
    let archive_metrics =
        ArchiveMetrics::register(&registry).map_err(|e| ServeError::Config(format!("metrics: {e}")))?;
    let pool = eventflow_pg::connect(&config.database_url, config.database_max_connections)
        .await
        .map_err(|e| ServeError::Config(format!("--database-url: {e}")))?;
    if !config.no_migrate {
        eventflow_pg::migrate(&pool).await.map_err(|e| ServeError::Config(e.to_string()))?;
    }
    let probe = PgProbe::new(pool.clone());
    let store = Store::new(pool);
    let settings = Settings {
        streams,
        poll: Duration::from_millis(config.archive_poll_ms),
        batch: config.archive_batch,
        ack_deadline: Duration::from_secs(config.archive_ack_deadline_secs),
        retention: (config.archive_retention_days > 0)
            .then(|| Duration::from_secs(config.archive_retention_days.saturating_mul(86_400))),
    };
    let archiver =
        Archiver { broker: broker.clone(), store: store.clone(), metrics: archive_metrics.clone(), settings };
    let archiving = tokio::spawn(archiver.run(shutdown.clone()));
    let replayer = Replayer {
        broker: broker.clone(),
        store: store.clone(),
        ingest: Ingest::new(broker.clone(), config.max_event_bytes, metrics),
        metrics: archive_metrics,
    };
    let handler = ArchiveServiceServer::new(ArchiveApi { store, replayer });
    let routes = Routes::new(InterceptedService::new(handler, auth.interceptor(Service::Archive)));
    let served = Served { routes, name: SERVICE_NAME, auth };
    let result =
        run_service_with(listeners, served, broker, registry, &config.common.server, probe, shutdown.clone()).await;
    shutdown.cancel();
    if let Err(e) = archiving.await {
        tracing::warn!(error = %e, "archiver task failed");
    }
    result
}

/// The ArchiveService handler.
#[derive(Debug, Clone)]
pub struct ArchiveApi {
    /// The archive.
    store: Store,
    /// Replay and export.
    replayer: Replayer,
}

/// A domain filter from the API's; errors name the field.
fn to_filter(filter: Option<ArchiveFilter>) -> Result<Filter, ArchiveError> {
    let f = filter.ok_or_else(|| ArchiveError::invalid("filter", "required"))?;
    let time = |field: &str, ts: Option<Timestamp>| -> Result<Option<i64>, ArchiveError> {
        ts.map(|ts| {
            ms_from_timestamp(&ts)
                .and_then(|ms| i64::try_from(ms).ok())
                .ok_or_else(|| ArchiveError::invalid(field, "must be a time after 1970"))
        })
        .transpose()
    };
    let some = |s: String| (!s.is_empty()).then_some(s);
    let filter = Filter {
        start_ms: time("filter.start_time", f.start_time)?,
        end_ms: time("filter.end_time", f.end_time)?,
        stream: f.stream,
        types: f.types,
        source: some(f.source),
        subject: some(f.subject),
        partition_key: some(f.partition_key),
        trace_id: some(f.trace_id),
    };
    filter.validate()?;
    Ok(filter)
}

/// The API message of an archived row.
fn to_proto(row: Row) -> ArchivedEvent {
    let ms = |v: i64| timestamp_from_ms(u64::try_from(v).unwrap_or(0));
    ArchivedEvent {
        event: row.cloud_event(),
        publish_time: Some(ms(row.cursor.ms)),
        archive_time: Some(ms(row.archived_ms)),
        entry_id: row.cursor.entry_id(),
        stream: row.stream,
    }
}

/// The API message of a replay's progress.
fn progress_to_proto(p: Progress) -> ReplayEventsResponse {
    ReplayEventsResponse {
        replayed: count(p.replayed),
        duplicates: count(p.duplicates),
        refused: count(p.refused),
        last_entry_id: p.last_entry_id,
        done: p.done,
    }
}

/// A server stream of the API.
type ApiStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The receiving end of a domain task's channel as a server stream of `T`.
fn stream_of<D: Send + 'static, T: Send + 'static>(
    rx: mpsc::Receiver<Result<D, ArchiveError>>,
    to_proto: fn(D) -> T,
) -> ApiStream<T> {
    Box::pin(ReceiverStream::new(rx).map(move |item| item.map(to_proto).map_err(Status::from)))
}

#[tonic::async_trait]
impl ArchiveService for ArchiveApi {
    async fn query_events(
        &self,
        request: Request<QueryEventsRequest>,
    ) -> Result<Response<QueryEventsResponse>, Status> {
        let stream = request.get_ref().filter.as_ref().map(|f| f.stream.clone()).unwrap_or_default();
        authorize(&request, Service::Archive, &stream, None)?;
        let req = request.into_inner();
        let order = match req.order() {
            ArchiveOrder::OldestFirst => Order::OldestFirst,
            ArchiveOrder::Unspecified | ArchiveOrder::NewestFirst => Order::NewestFirst,
        };
        let page = async {
            let filter = to_filter(req.filter)?;
            let size = filter::page_size("page_size", req.page_size, filter::DEFAULT_PAGE_SIZE, filter::MAX_PAGE_SIZE)?;
            let after = filter::page_token(&req.page_token)?;
            self.store.check_stream(&filter.stream).await?;
            self.store.query(&filter, order, after, size).await
        };
        let (rows, next) = page.await?;
        Ok(Response::new(QueryEventsResponse {
            events: rows.into_iter().map(to_proto).collect(),
            next_page_token: next.map(Cursor::entry_id).unwrap_or_default(),
        }))
    }

    async fn get_archived_event(
        &self,
        request: Request<GetArchivedEventRequest>,
    ) -> Result<Response<GetArchivedEventResponse>, Status> {
        authorize(&request, Service::Archive, &request.get_ref().stream, None)?;
        let req = request.into_inner();
        let row = async {
            eventflow_broker::validate_name("stream", &req.stream)?;
            let cursor = Cursor::parse("entry_id", &req.entry_id)?;
            self.store.check_stream(&req.stream).await?;
            self.store.get(&req.stream, cursor).await
        };
        Ok(Response::new(GetArchivedEventResponse { event: Some(to_proto(row.await?)) }))
    }

    type ReplayEventsStream = ApiStream<ReplayEventsResponse>;

    async fn replay_events(
        &self,
        request: Request<ReplayEventsRequest>,
    ) -> Result<Response<Self::ReplayEventsStream>, Status> {
        let stream = request.get_ref().filter.as_ref().map(|f| f.stream.clone()).unwrap_or_default();
        match &request.get_ref().target {
            Some(replay_events_request::Target::Subscription(sub)) => {
                authorize(&request, Service::Archive, &stream, Some(sub))?;
            }
            Some(replay_events_request::Target::Stream(target)) => {
                authorize(&request, Service::Archive, &stream, None)?;
                authorize(&request, Service::Publish, target, None)?;
            }
            None => return Err(ArchiveError::invalid("target", "name a subscription or a stream").into()),
        }
        let req = request.into_inner();
        let target = match req.target {
            Some(replay_events_request::Target::Subscription(sub)) => Target::Subscription(sub),
            Some(replay_events_request::Target::Stream(stream)) => Target::Stream(stream),
            None => return Err(ArchiveError::invalid("target", "name a subscription or a stream").into()),
        };
        let filter = to_filter(req.filter)?;
        let batch = filter::page_size("batch_size", req.batch_size, DEFAULT_REPLAY_BATCH, MAX_REPLAY_BATCH)?;
        let max = match u64::try_from(req.max_events) {
            Ok(0) => None,
            Ok(n) => Some(n),
            Err(_) => return Err(ArchiveError::invalid("max_events", "must not be negative").into()),
        };
        self.replayer.check(&filter, &target).await?;
        let (tx, rx) = mpsc::channel(4);
        let replayer = self.replayer.clone();
        tokio::spawn(async move { replayer.replay(&filter, &target, batch, max, tx).await });
        Ok(Response::new(stream_of(rx, progress_to_proto)))
    }

    type ExportEventsStream = ApiStream<ExportEventsResponse>;

    async fn export_events(
        &self,
        request: Request<ExportEventsRequest>,
    ) -> Result<Response<Self::ExportEventsStream>, Status> {
        let stream = request.get_ref().filter.as_ref().map(|f| f.stream.clone()).unwrap_or_default();
        authorize(&request, Service::Archive, &stream, None)?;
        let filter = to_filter(request.into_inner().filter)?;
        self.store.check_stream(&filter.stream).await?;
        let (tx, rx) = mpsc::channel(4);
        let replayer = self.replayer.clone();
        tokio::spawn(async move { replayer.export(&filter, tx).await });
        Ok(Response::new(stream_of(rx, |lines| ExportEventsResponse { lines })))
    }
}
