//! An in-test OTLP trace collector: a tonic `TraceService` on `127.0.0.1:0` that keeps every
//! span exported to it, so a test can point the services' tracing at it and read the spans.

use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    trace::v1::Span,
};
use tokio_stream::wrappers::TcpListenerStream;

/// The running collector (it serves until the test's runtime ends).
#[derive(Clone)]
pub struct Collector {
    /// Every span exported so far, in arrival order.
    spans: Arc<Mutex<Vec<Span>>>,
    /// Its OTLP/gRPC endpoint (`http://127.0.0.1:<port>`).
    pub endpoint: String,
}

/// The service side: appends what it is sent.
struct Sink(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans = request.into_inner().resource_spans.into_iter().flat_map(|r| r.scope_spans).flat_map(|s| s.spans);
        self.0.lock().unwrap().extend(spans);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    /// Starts a collector on a free port.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let spans = Arc::new(Mutex::new(Vec::new()));
        let server = TraceServiceServer::new(Sink(spans.clone()));
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(server)
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        Self { spans, endpoint }
    }

    /// The spans exported so far.
    pub fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }
}

/// Lower-case hex of a trace or span id.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
