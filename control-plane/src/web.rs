//! The control plane's HTTP listener: `/healthz`, `/metrics` (Prometheus text) and the
//! admin web UI (`/ui/...`, see [`crate::ui`]).
//!
//! Gauges are read from the store at scrape time; the log counters count since this
//! process started. Labels come from enums (key state, record kind), never from keys or
//! tokens.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::discovery::NodeRegistry;
use crate::logs::LogStore;
use crate::store::{Store, TreeId};

/// What the HTTP handlers read: small handles, no locks of their own.
#[derive(Clone)]
pub struct Web {
    pub store: Store,
    pub nodes: NodeRegistry,
    pub logs: LogStore,
    /// The admin web UI (`/ui/...`), served on the same listener.
    pub ui: crate::ui::Ui,
}

pub fn router(web: Web) -> Router {
    let ui = crate::ui::router(web.ui.clone());
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(web)
        .merge(ui)
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Gauges are read from the store at scrape time, so they can never drift from it.
async fn metrics(State(web): State<Web>) -> impl IntoResponse {
    let rendered = tokio::task::spawn_blocking(move || render(&web)).await;
    match rendered {
        Ok(Ok(body)) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot render metrics");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/plain")],
                "cannot render metrics\n".to_string(),
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "metrics task failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/plain")],
                "cannot render metrics\n".to_string(),
            )
        }
    }
}

fn render(web: &Web) -> Result<String, String> {
    let mut registry = Registry::with_prefix("fulcrum");
    let gauge = |registry: &mut Registry, name: &str, help: &str, value: u64| {
        let g: Gauge = Gauge::default();
        g.set(i64::try_from(value).unwrap_or(i64::MAX));
        registry.register(name, help, g);
    };
    gauge(
        &mut registry,
        "config_revision",
        "Latest committed config revision",
        web.store.revision(),
    );
    gauge(
        &mut registry,
        "data_planes_connected",
        "Data planes with an open config stream",
        web.nodes.connected() as u64,
    );
    gauge(
        &mut registry,
        "providers",
        "Providers in the store",
        web.store.count(TreeId::Providers),
    );
    gauge(
        &mut registry,
        "routes",
        "Model routes in the store",
        web.store.count(TreeId::Routes),
    );
    gauge(
        &mut registry,
        "client_tokens",
        "Client tokens in the store",
        web.store.count(TreeId::ClientTokens),
    );
    let keys = Family::<Vec<(String, String)>, Gauge>::default();
    let counts = web.store.key_counts(None).map_err(|e| e.to_string())?;
    for state in fulcrum_proto::model::KeyState::ALL {
        let count = counts.get(&state).copied().unwrap_or(0);
        keys.get_or_create(&vec![("state".to_string(), state.as_str().to_string())])
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }
    registry.register("keys", "Provider keys by state", keys);

    let logs = web.logs.counters();
    let counter = |registry: &mut Registry, name: &str, help: &str, value: u64| {
        let c: Counter = Counter::default();
        c.inc_by(value);
        registry.register(name, help, c);
    };
    counter(
        &mut registry,
        "log_batches_stored",
        "Report batches whose records were stored since start",
        logs.batches_stored,
    );
    let records = Family::<Vec<(String, String)>, Counter>::default();
    for (kind, value) in [
        ("request", logs.requests_stored),
        ("error", logs.errors_stored),
    ] {
        records
            .get_or_create(&vec![("kind".to_string(), kind.to_string())])
            .inc_by(value);
    }
    registry.register(
        "log_records_stored",
        "Request and error records stored since start",
        records,
    );
    counter(
        &mut registry,
        "log_records_dropped_by_data_planes",
        "Records data planes dropped before sending them (latest count of each instance seen since start, summed)",
        logs.dropped_by_data_planes,
    );
    let mut out = String::new();
    encode(&mut out, &registry).map_err(|e| e.to_string())?;
    Ok(out)
}
