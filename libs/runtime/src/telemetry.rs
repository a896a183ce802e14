//! Logs and traces.
//!
//! * Logs: JSON lines on stdout (`timestamp`, `level`, `target`, `message`, fields) with the
//!   current OpenTelemetry `trace_id`/`span_id` when there is one; levels from `RUST_LOG`
//!   (default `info`).
//! * Traces: OTLP over gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is
//!   set, off otherwise. `OTEL_SERVICE_NAME` names the service (default: the binary's name);
//!   `OTEL_TRACES_SAMPLER`/`OTEL_TRACES_SAMPLER_ARG` choose sampling (the SDK reads them). The
//!   W3C trace-context propagator is installed either way, so context still flows through.

use std::{
    fmt::Write as _,
    sync::atomic::{AtomicBool, Ordering},
};

use opentelemetry::trace::TraceContextExt;
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use serde_json::{Map, Value};
use tracing::{Event, Subscriber, field::Field};
use tracing_subscriber::{
    EnvFilter,
    fmt::{self, FmtContext, FormatEvent, FormatFields, format::Writer, time::FormatTime},
    prelude::*,
    registry::LookupSpan,
};

/// Whether spans are exported; when not, per-event spans are skipped entirely.
static TRACING: AtomicBool = AtomicBool::new(false);

/// Whether an OTLP exporter is installed.
pub fn tracing_enabled() -> bool {
    TRACING.load(Ordering::Relaxed)
}

/// Keeps the tracer provider; [`Telemetry::shutdown`] flushes pending spans.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is buffered now (tests use it to see spans at once).
    pub fn flush(&self) {
        if let Some(provider) = &self.provider
            && let Err(e) = provider.force_flush()
        {
            tracing::warn!(error = %e, "span flush failed");
        }
    }

    /// Flushes and stops the exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!(error = %e, "tracer shutdown failed");
        }
    }
}

/// Installs logging and, if configured by the environment, OTLP trace export for `service`.
/// Must run inside a Tokio runtime. Fails only if the OTLP endpoint is malformed.
pub fn init(service: &'static str) -> Result<Telemetry, String> {
    init_logging();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let endpoint = ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"]
        .iter()
        .find_map(|var| std::env::var(var).ok().filter(|v| !v.is_empty()));
    match endpoint {
        Some(endpoint) => init_tracing(service, &endpoint),
        None => Ok(Telemetry::default()),
    }
}

/// Installs an OTLP/gRPC exporter to `endpoint` as the global tracer provider.
pub fn init_tracing(service: &'static str, endpoint: &str) -> Result<Telemetry, String> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let exporter = SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| format!("OTLP exporter for {endpoint}: {e}"))?;
    let name = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| service.to_string());
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(name).build())
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    TRACING.store(true, Ordering::Relaxed);
    Ok(Telemetry { provider: Some(provider) })
}

/// Installs the global JSON log subscriber. Calling it twice is harmless (the second is ignored),
/// so in-process tests may call it too.
pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::registry().with(filter).with(fmt::layer().event_format(JsonWithTrace)).try_init();
}

/// One JSON object per log event, with the current trace and span ids.
struct JsonWithTrace;

impl<S, N> FormatEvent<S, N> for JsonWithTrace
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> std::fmt::Result {
        let mut map = Map::new();
        let mut timestamp = String::new();
        fmt::time::SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        map.insert("timestamp".into(), Value::String(timestamp));
        map.insert("level".into(), Value::String(event.metadata().level().to_string()));
        map.insert("target".into(), Value::String(event.metadata().target().to_string()));
        event.record(&mut Fields(&mut map));
        let cx = opentelemetry::Context::current();
        let span = cx.span();
        let sc = span.span_context();
        if sc.is_valid() {
            map.insert("trace_id".into(), Value::String(sc.trace_id().to_string()));
            map.insert("span_id".into(), Value::String(sc.span_id().to_string()));
        }
        writeln!(writer, "{}", Value::Object(map))
    }
}

/// Collects an event's fields into a JSON map.
struct Fields<'a>(&'a mut Map<String, Value>);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        self.0.insert(field.name().into(), Value::String(text));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), Value::String(value.into()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

    use super::*;

    /// Collects what the formatter writes.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn log_lines_are_json_with_the_current_trace_and_span_ids() {
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::registry()
            .with(fmt::layer().event_format(JsonWithTrace).with_writer(move || writer.clone()));
        let trace_id = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        let span_id = SpanId::from_hex("00f067aa0ba902b7").unwrap();
        let sc = SpanContext::new(trace_id, span_id, TraceFlags::SAMPLED, true, TraceState::default());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(stream = "orders", count = 3u64, "outside");
            let _attached = opentelemetry::Context::new().with_remote_span_context(sc).attach();
            tracing::warn!("inside");
        });
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["message"], "outside");
        assert_eq!((lines[0]["stream"].as_str(), lines[0]["count"].as_u64()), (Some("orders"), Some(3)));
        assert_eq!(lines[0]["level"], "INFO");
        assert!(lines[0].get("trace_id").is_none());
        assert_eq!(lines[1]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(lines[1]["span_id"], "00f067aa0ba902b7");
        assert!(lines[1]["timestamp"].as_str().is_some_and(|t| t.contains('T')));
    }
}
