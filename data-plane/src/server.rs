//! The data plane's HTTP server: the probes, the metrics, and every other path to the
//! proxy.

use std::convert::Infallible;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::FutureExt;
use futures::future::BoxFuture;
use hyper::body::Incoming;

use crate::metrics::Scrape;
use crate::proxy::{self, Proxy};
use crate::runtime::RuntimeConfigHandle;

/// What every HTTP connection is served by: the probes and the metrics through a router,
/// client traffic straight to the proxy. The proxy parses paths itself (`/v1`,
/// `/openai/v1`, `/hf/v1`, `/{provider}/v1`), which is cheaper than a route per prefix
/// and operation; going around the router too saves its per-request work (a catch-all
/// route's parameter map, a boxed clone of the handler, a copied content length).
#[derive(Clone)]
pub(crate) struct Service {
    probes: Router,
    proxy: Proxy,
}

impl Service {
    pub(crate) fn new(runtime: RuntimeConfigHandle, proxy: Proxy, scrape: Scrape) -> Self {
        Self {
            probes: probes(runtime, scrape),
            proxy,
        }
    }
}

impl tower_service::Service<http::Request<Incoming>> for Service {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Incoming>) -> Self::Future {
        if matches!(request.uri().path(), "/healthz" | "/readyz" | "/metrics") {
            return self.probes.call(request).boxed();
        }
        proxy::handle(State(self.proxy.clone()), request.map(Body::new))
            .map(Ok)
            .boxed()
    }
}

/// The probes and the metrics.
fn probes(runtime: RuntimeConfigHandle, scrape: Scrape) -> Router {
    Router::new()
        // Liveness: the process answers, whatever its config.
        .route("/healthz", get(healthz))
        // Readiness: a config is in force and shutdown has not begun.
        .route("/readyz", get(readyz))
        .with_state(runtime)
        // Prometheus, without a client token: expose it to the cluster only.
        .route("/metrics", get(metrics).with_state(scrape))
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
