//! The frontend's APIs (REST with JSON and XML, the packet stream, GEMS) and the operational
//! endpoints every role serves.

pub mod gems_server;
pub mod negotiate;
pub mod rest;
pub mod stream;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use negotiate::{Format, MediaType};

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

/// How long requests in flight get to finish after shutdown: a client that sent half a request
/// must not hold up the rest of the shutdown (the recording's final fsync).
const HTTP_DRAIN: Duration = Duration::from_secs(3);

/// Serves until `shutdown`, then stops accepting and lets requests in flight finish, for at most
/// `HTTP_DRAIN`.
pub async fn serve_http(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let serve = axum::serve(listener, with_problem_fallbacks(router))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let drained = async {
        shutdown.cancelled().await;
        tokio::time::sleep(HTTP_DRAIN).await;
    };
    tokio::select! {
        served = serve => served,
        () = drained => {
            tracing::warn!(
                drain_s = HTTP_DRAIN.as_secs(),
                "HTTP requests still open after the drain time; closing them"
            );
            Ok(())
        }
    }
}

/// Requests that no route takes get a problem body, as every other error does; JSON unless the
/// client asked for XML (a 404 stays a 404 whatever the Accept header says).
fn with_problem_fallbacks(router: Router) -> Router {
    fn format(headers: &HeaderMap) -> Format {
        Format(Format::from_headers(headers, &Format::OFFERED).unwrap_or(MediaType::Json))
    }
    router
        .fallback(|headers: HeaderMap, uri: Uri| async move {
            format(&headers).problem(
                StatusCode::NOT_FOUND,
                format!("nothing at {}; the API is under /api/v1/", uri.path()),
            )
        })
        .method_not_allowed_fallback(|headers: HeaderMap, method: Method, uri: Uri| async move {
            format(&headers).problem(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not allowed on {}", uri.path()),
            )
        })
}
