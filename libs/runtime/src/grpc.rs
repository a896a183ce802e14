//! A tower layer around every gRPC server: per call, a SERVER span whose parent is the W3C
//! context in the request metadata (the handler runs inside it, so its spans and logs join
//! the caller's trace), and the gRPC metrics (`eventflow_grpc_requests_total{method,code}`,
//! `eventflow_grpc_request_duration_seconds{method}`). The status code is read from the
//! response headers (trailers-only responses) or the trailers; a call whose body is dropped
//! unfinished counts as CANCELLED.

use std::{
    pin::Pin,
    task::{Context as TaskContext, Poll},
    time::Instant,
};

use http_body::{Body, Frame};
use opentelemetry::{
    Context, KeyValue, global,
    trace::{FutureExt, SpanKind, TraceContextExt, Tracer},
};
use tower::{Layer, Service};

use crate::{metrics::GrpcMetrics, telemetry::tracing_enabled, trace::from_metadata};

/// Adds spans and metrics to a gRPC server.
#[derive(Debug, Clone)]
pub struct MetricsLayer {
    metrics: GrpcMetrics,
}

impl MetricsLayer {
    /// A layer recording into `metrics`.
    pub fn new(metrics: GrpcMetrics) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService { inner, metrics: self.metrics.clone() }
    }
}

/// The service [`MetricsLayer`] wraps around the server.
#[derive(Debug, Clone)]
pub struct MetricsService<S> {
    inner: S,
    metrics: GrpcMetrics,
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
        let method = request.uri().path().to_string();
        let mut cx = from_metadata(request.headers());
        if tracing_enabled() {
            let tracer = global::tracer("eventflow");
            let (service, rpc) = method.trim_start_matches('/').split_once('/').unwrap_or(("", ""));
            let span = tracer
                .span_builder(method.trim_start_matches('/').to_string())
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
    metrics: GrpcMetrics,
    method: String,
    start: Instant,
    cx: Context,
}

impl Recorder {
    fn finish(self, code: &str) {
        let code = code_name(code.parse().unwrap_or(2));
        // Only real methods get their own label; unknown paths cannot grow the label set.
        let method = if code == "UNIMPLEMENTED" { "unknown" } else { self.method.as_str() };
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
    #[test]
    fn codes_have_canonical_names() {
        assert_eq!(super::code_name(0), "OK");
        assert_eq!(super::code_name(14), "UNAVAILABLE");
        assert_eq!(super::code_name(99), "UNKNOWN");
    }
}
