//! Prometheus metrics and the HTTP endpoints `/metrics`, `/healthz` and `/readyz`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

/// The operator's metrics, all prefixed `vgs_operator_`.
pub struct Metrics {
    registry: Registry,
    reconciliations: Counter,
    errors: Family<ReasonLabel, Counter>,
    duration: Histogram,
    writes: Family<KindLabel, Counter>,
    leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("vgs_operator");
        let reconciliations = Counter::default();
        let errors = Family::<ReasonLabel, Counter>::default();
        // 5 ms .. ~20 s
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 13));
        let writes = Family::<KindLabel, Counter>::default();
        let leader = Gauge::default();
        registry.register(
            "reconciliations",
            "GroundSystem reconciliations started",
            reconciliations.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed GroundSystem reconciliations, by reason",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of GroundSystem reconciliations",
            duration.clone(),
        );
        registry.register(
            "writes",
            "API writes that changed an object (no-op applies are not counted), by kind",
            writes.clone(),
        );
        registry.register(
            "leader",
            "1 while this process reconciles (holds the Lease, or runs without leader election), else 0",
            leader.clone(),
        );
        Self {
            registry,
            reconciliations,
            errors,
            duration,
            writes,
            leader,
        }
    }
}

impl Metrics {
    pub fn record_reconcile(&self, duration: Duration) {
        self.reconciliations.inc();
        self.duration.observe(duration.as_secs_f64());
    }

    pub fn record_error(&self, reason: String) {
        self.errors.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub fn record_write(&self, kind: &str) {
        self.writes
            .get_or_create(&KindLabel {
                kind: kind.to_owned(),
            })
            .inc();
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    fn render(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

/// Shared with the HTTP handlers.
#[derive(Clone)]
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    /// Set once the controller's GroundSystem cache has synced; with leader election, already once a
    /// standby could read the Lease (it is ready to take over).
    pub ready: Arc<AtomicBool>,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    state: HttpState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    }
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

async fn readyz(State(state): State<HttpState>) -> impl IntoResponse {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "watches not synced (or Lease not read) yet",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_exported_by_kind() {
        let metrics = Metrics::default();
        metrics.record_write("Deployment");
        metrics.record_write("Deployment");
        metrics.record_error("apply_conflict".into());
        metrics.record_reconcile(Duration::from_millis(20));
        let text = metrics.render();
        assert!(
            text.contains("vgs_operator_writes_total{kind=\"Deployment\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("vgs_operator_reconcile_errors_total{reason=\"apply_conflict\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("vgs_operator_reconciliations_total 1"),
            "{text}"
        );
        assert!(
            text.contains("vgs_operator_reconcile_duration_seconds_count 1"),
            "{text}"
        );
    }

    #[test]
    fn leader_gauge_is_exported() {
        let metrics = Metrics::default();
        assert!(metrics.render().contains("vgs_operator_leader 0"));
        metrics.set_leader(true);
        assert!(metrics.render().contains("vgs_operator_leader 1"));
        metrics.set_leader(false);
        assert!(metrics.render().contains("vgs_operator_leader 0"));
    }
}
