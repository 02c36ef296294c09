//! The frontend's APIs (REST with JSON and XML, the packet stream, GEMS) and the operational
//! endpoints every role serves.

pub mod gems_server;
pub mod negotiate;
pub mod rest;
pub mod stream;

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// `/healthz` (the process serves), `/readyz` (per `ready`) and `/metrics`.
pub fn ops_routes<S: Clone + Send + Sync + 'static>(
    registry: impl Fn() -> String + Clone + Send + Sync + 'static,
    ready: impl Fn() -> Result<(), String> + Clone + Send + Sync + 'static,
) -> Router<S> {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || async move {
                match ready() {
                    Ok(()) => (StatusCode::OK, "ready\n".to_string()),
                    Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
                }
            }),
        )
        .route(
            "/metrics",
            get(move || async move {
                (
                    [(
                        CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    registry(),
                )
                    .into_response()
            }),
        )
}

/// Renders a shared registry for `ops_routes`.
pub fn registry_text(
    registry: Arc<Registry>,
) -> impl Fn() -> String + Clone + Send + Sync + 'static {
    move || crate::metrics::encode(&registry)
}

/// Serves until `shutdown`, then stops accepting and lets requests in flight finish.
pub async fn serve_http(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
