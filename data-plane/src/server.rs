//! The data plane's HTTP server: the probes, the metrics, and every other path to the
//! proxy.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::metrics::Scrape;
use crate::proxy::{self, Proxy};
use crate::runtime::RuntimeConfigHandle;

/// The router every HTTP connection is served by.
pub(crate) fn router(runtime: RuntimeConfigHandle, proxy: Proxy, scrape: Scrape) -> Router {
    let probes = Router::new()
        // Liveness: the process answers, whatever its config.
        .route("/healthz", get(healthz))
        // Readiness: a config is in force and shutdown has not begun.
        .route("/readyz", get(readyz))
        .with_state(runtime)
        // Prometheus, without a client token: expose it to the cluster only.
        .route("/metrics", get(metrics).with_state(scrape));
    // Client traffic: the proxy parses paths itself (`/v1`, `/openai/v1`, `/hf/v1`,
    // `/{provider}/v1`), which is cheaper than a route per prefix and operation.
    probes.fallback(proxy::handle).with_state(proxy)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(runtime): State<RuntimeConfigHandle>) -> (StatusCode, &'static str) {
    if runtime.is_ready() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics(State(scrape): State<Scrape>) -> Response {
    match scrape.render() {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot render metrics");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot render metrics\n").into_response()
        }
    }
}
