//! The data plane's HTTP server. For now it answers the probes; client traffic joins this
//! router later.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::runtime::RuntimeConfigHandle;

/// The router every HTTP connection is served by.
pub(crate) fn router(runtime: RuntimeConfigHandle) -> Router {
    Router::new()
        // Liveness: the process answers, whatever its config.
        .route("/healthz", get(healthz))
        // Readiness: a config is in force and shutdown has not begun.
        .route("/readyz", get(readyz))
        .with_state(runtime)
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
