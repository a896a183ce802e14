//! The Prometheus endpoint: `GET /metrics` in the text exposition format on its own port.

use axum::{Router, http::header, response::IntoResponse, routing::get};
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves `registry` on `listener` at `/metrics` until `shutdown`.
pub async fn serve(listener: TcpListener, registry: Registry, shutdown: CancellationToken) -> std::io::Result<()> {
    let app = Router::new().route("/metrics", get(move || render(registry.clone())));
    axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

async fn render(registry: Registry) -> impl IntoResponse {
    let mut body = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&registry.gather(), &mut body) {
        tracing::error!(error = %e, "cannot encode metrics");
    }
    ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], body)
}
