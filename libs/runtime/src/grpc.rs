//! A tower layer around every gRPC server: per call, a SERVER span whose parent is the W3C
//! context in the request metadata (the handler runs inside it, so its spans and logs join
//! the caller's trace), and the gRPC metrics (`eventflow_grpc_requests_total{method,code}`,
//! `eventflow_grpc_request_duration_seconds{method}`). The status code is read from the
//! response headers (trailers-only responses) or the trailers; a call whose body is dropped
//! unfinished counts as CANCELLED.
//!
//! The `method` label (and the span name) is bounded: it is the request path only when that
//! path is one of the server's [`Methods`] — read from the file descriptor sets of the services
//! it serves — and `unknown` otherwise, so calls to made-up paths (with or without
//! credentials: the auth interceptor answers before any route is looked up) cannot add series.

use std::{
    collections::HashSet,
    pin::Pin,
    sync::Arc,
    task::{Context as TaskContext, Poll},
    time::Instant,
};

use eventflow_proto::{prost::Message, prost_types::FileDescriptorSet};

use http_body::{Body, Frame};
use opentelemetry::{
    Context, KeyValue, global,
    trace::{FutureExt, SpanKind, TraceContextExt, Tracer},
};
use tower::{Layer, Service};

use crate::{metrics::GrpcMetrics, telemetry::tracing_enabled, trace::from_metadata};

/// The `method` label of calls to paths a server does not serve.
pub const UNKNOWN_METHOD: &str = "unknown";

/// The gRPC methods a server serves, as request paths (`/package.Service/Method`): the only
/// values the `method` label takes besides [`UNKNOWN_METHOD`].
#[derive(Debug, Clone, Default)]
pub struct Methods {
    /// The paths; shared by every call's recorder.
    paths: Arc<HashSet<Arc<str>>>,
}

impl Methods {
    /// The methods of the services named `services` (full names such as
    /// `grpc.health.v1.Health`), read from the encoded `FileDescriptorSet`s `sets`. Fails if a
    /// set does not decode or a service is in none of them (its calls would all be `unknown`).
    pub fn from_descriptor_sets(sets: &[&[u8]], services: &[&str]) -> Result<Self, String> {
        let mut paths = HashSet::new();
        let mut found = HashSet::new();
        for set in sets {
            let set = FileDescriptorSet::decode(*set).map_err(|e| format!("cannot decode a descriptor set: {e}"))?;
            for file in &set.file {
                for service in &file.service {
                    let name = match file.package() {
                        "" => service.name().to_string(),
                        package => format!("{package}.{}", service.name()),
                    };
                    if !services.contains(&name.as_str()) {
                        continue;
                    }
                    for method in &service.method {
                        paths.insert(Arc::from(format!("/{name}/{}", method.name())));
                    }
                    found.insert(name);
                }
            }
        }
        if let Some(missing) = services.iter().find(|s| !found.contains(**s)) {
            return Err(format!("service {missing} is in no descriptor set"));
        }
        Ok(Self { paths: Arc::new(paths) })
    }

    /// The label of a call to `path`: the path if it is served, else `None` (`unknown`).
    pub fn label(&self, path: &str) -> Option<Arc<str>> {
        self.paths.get(path).cloned()
    }
}

/// Adds spans and metrics to a gRPC server.
#[derive(Debug, Clone)]
pub struct MetricsLayer {
    /// Where calls are counted.
    metrics: GrpcMetrics,
    /// The served methods, which alone get their own `method` label.
    methods: Methods,
}

impl MetricsLayer {
    /// A layer recording into `metrics`, labelling calls of `methods` by their path.
    pub fn new(metrics: GrpcMetrics, methods: Methods) -> Self {
        Self { metrics, methods }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService { inner, metrics: self.metrics.clone(), methods: self.methods.clone() }
    }
}

/// The service [`MetricsLayer`] wraps around the server.
#[derive(Debug, Clone)]
pub struct MetricsService<S> {
    /// The server.
    inner: S,
    /// Where calls are counted.
    metrics: GrpcMetrics,
    /// The served methods, which alone get their own `method` label.
    methods: Methods,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for MetricsService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<MetricsBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let method = self.methods.label(request.uri().path());
        let mut cx = from_metadata(request.headers());
        if tracing_enabled() {
            let tracer = global::tracer("eventflow");
            let name = method.as_deref().map_or(UNKNOWN_METHOD, |m| m.trim_start_matches('/'));
            let (service, rpc) = name.split_once('/').unwrap_or(("", ""));
            let span = tracer
                .span_builder(name.to_string())
                .with_kind(SpanKind::Server)
                .with_attributes([
                    KeyValue::new("rpc.system", "grpc"),
                    KeyValue::new("rpc.service", service.to_string()),
                    KeyValue::new("rpc.method", rpc.to_string()),
                ])
                .start_with_context(&tracer, &cx);
            cx = cx.with_span(span);
        }
        let recorder = Recorder { metrics: self.metrics.clone(), method, start: Instant::now(), cx: cx.clone() };
        let future = self.inner.call(request).with_context(cx);
        Box::pin(async move {
            let response = future.await?;
            let mut recorder = Some(recorder);
            if let Some(code) = response.headers().get("grpc-status").and_then(|v| v.to_str().ok())
                && let Some(r) = recorder.take()
            {
                r.finish(code);
            }
            Ok(response.map(|inner| MetricsBody { inner, recorder }))
        })
    }
}

/// Records one call's outcome once.
struct Recorder {
    /// Where the call is counted.
    metrics: GrpcMetrics,
    /// The served method called (`None`: an unknown path).
    method: Option<Arc<str>>,
    /// When the call began.
    start: Instant,
    /// The call's span, ended with the call.
    cx: Context,
}

impl Recorder {
    fn finish(self, code: &str) {
        let code = code_name(code.parse().unwrap_or(2));
        let method = self.method.as_deref().unwrap_or(UNKNOWN_METHOD);
        self.metrics.requests.with_label_values(&[method, code]).inc();
        self.metrics.duration.with_label_values(&[method]).observe(self.start.elapsed().as_secs_f64());
        let span = self.cx.span();
        span.set_attribute(KeyValue::new("rpc.grpc.status_code", code));
        span.end();
    }
}

pin_project_lite::pin_project! {
    /// A response body that records the call when its trailers pass (or it is dropped).
    pub struct MetricsBody<B> {
        #[pin]
        inner: B,
        recorder: Option<Recorder>,
    }

    impl<B> PinnedDrop for MetricsBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(recorder) = this.project().recorder.take() {
                recorder.finish("1");
            }
        }
    }
}

impl<B: Body> Body for MetricsBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(code) = frame.trailers_ref().and_then(|t| t.get("grpc-status")).and_then(|v| v.to_str().ok())
            && let Some(recorder) = this.recorder.take()
        {
            recorder.finish(code);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The canonical name of a gRPC status code.
fn code_name(code: i32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    usize::try_from(code).ok().and_then(|i| NAMES.get(i)).copied().unwrap_or("UNKNOWN")
}

#[cfg(test)]
mod tests {
    use super::Methods;

    #[test]
    fn only_served_methods_have_labels() {
        let sets = [eventflow_proto::FILE_DESCRIPTOR_SET, tonic_health::pb::FILE_DESCRIPTOR_SET];
        let methods =
            Methods::from_descriptor_sets(&sets, &["eventflow.v1.PublisherService", "grpc.health.v1.Health"]).unwrap();
        let served = "/eventflow.v1.PublisherService/Publish";
        assert_eq!(methods.label(served).as_deref(), Some(served));
        assert!(methods.label("/grpc.health.v1.Health/Check").is_some());
        assert!(methods.label("/grpc.health.v1.Health/Watch").is_some());
        assert!(methods.label("/eventflow.v1.PublisherService/Nope").is_none());
        assert!(methods.label("/eventflow.v1.AdminService/CreateStream").is_none(), "not served here");
        assert!(methods.label("eventflow.v1.PublisherService/Publish").is_none());
        let missing = Methods::from_descriptor_sets(&sets, &["eventflow.v1.Nope"]).unwrap_err();
        assert!(missing.contains("eventflow.v1.Nope"), "{missing}");
    }

    #[test]
    fn codes_have_canonical_names() {
        assert_eq!(super::code_name(0), "OK");
        assert_eq!(super::code_name(14), "UNAVAILABLE");
        assert_eq!(super::code_name(99), "UNKNOWN");
    }
}
