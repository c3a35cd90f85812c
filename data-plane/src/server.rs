//! The data plane's HTTP server: the probes, the metrics, and every other path to the
//! proxy.

use std::convert::Infallible;
use std::future::Future;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper::body::Incoming;
use tower_service::Service as _;

use crate::metrics::Scrape;
use crate::proxy::{self, Proxy};
use crate::runtime::RuntimeConfigHandle;

/// The probes and the metrics through a router, client traffic straight to the proxy. The proxy parses paths itself (`/v1`,
/// `/openai/v1`, `/hf/v1`, `/{provider}/v1`), which is cheaper than a route per prefix
/// and operation; going around the router too saves its per-request work (a catch-all
/// route's parameter map, a boxed clone of the handler, a copied content length).
#[derive(Clone)]
struct Service {
    probes: Router,
    proxy: Proxy,
}

impl Service {
    fn new(runtime: RuntimeConfigHandle, proxy: Proxy, scrape: Scrape) -> Self {
        Self {
            probes: probes(runtime, scrape),
            proxy,
        }
    }

    /// One request's answer, as a future that owns what it uses.
    fn answer(
        &self,
        request: http::Request<Incoming>,
    ) -> impl Future<Output = Result<Response, Infallible>> + Send + use<> {
        let probes = matches!(request.uri().path(), "/healthz" | "/readyz" | "/metrics")
            .then(|| self.probes.clone());
        let proxy = self.proxy.clone();
        async move {
            match probes {
                Some(mut probes) => probes.call(request).await,
                None => Ok(proxy::handle(State(proxy), request).await),
            }
        }
    }
}

/// What every HTTP connection is served by: a `service_fn` rather than a tower service
/// with a boxed future: hyper keeps each request's future (several KiB, too big for the
/// allocator's per-thread cache) in one place per connection, where a boxed future
/// would cost an allocation and a free per request.
pub(crate) fn service(
    runtime: RuntimeConfigHandle,
    proxy: Proxy,
    scrape: Scrape,
) -> impl fulcrum_listen::http::HttpService {
    let service = Service::new(runtime, proxy, scrape);
    hyper::service::service_fn(move |request| service.answer(request))
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
