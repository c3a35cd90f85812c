//! The UI's JSON calls. Each one calls the `AdminService` / `LogService` implementations
//! in-process and shapes the answer for the page; secrets never leave (keys are shown by
//! their masked form only, client tokens by name and prefix).

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fulcrum_proto::model::KeyState;
use fulcrum_proto::pb;
use fulcrum_proto::pb::admin_service_server::AdminService;
use fulcrum_proto::pb::log_service_server::LogService;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_stream::StreamExt;
use tonic::{Code, Request};

use super::Ui;

/// Keys read per `ListKeys` call when the UI scans (search, bulk over a filter).
const SCAN_PAGE: u32 = 10_000;
/// Most keys one page of the table shows.
const MAX_TABLE_PAGE: u32 = 500;
/// Most probe results a bulk validate sends back (the summary counts them all).
const MAX_PROBE_RESULTS: usize = 1_000;
/// Longest request body shown in a log record's detail.
const MAX_BODY_SHOWN: usize = 8 * 1024;

/// How a UI call fails: an answer of the service it called, or bad input of its own.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{}", .0.message())]
    Service(#[from] tonic::Status),
    #[error("{0}")]
    Invalid(String),
}

type ApiResult = Result<Json<Value>, ApiError>;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::Invalid(message) => {
                error_response(StatusCode::BAD_REQUEST, "invalid_argument", &message)
            }
            Self::Service(status) => {
                let (http, code) = match status.code() {
                    Code::InvalidArgument | Code::OutOfRange => {
                        (StatusCode::BAD_REQUEST, "invalid_argument")
                    }
                    Code::NotFound => (StatusCode::NOT_FOUND, "not_found"),
                    Code::AlreadyExists => (StatusCode::CONFLICT, "already_exists"),
                    Code::FailedPrecondition | Code::Aborted => {
                        (StatusCode::CONFLICT, "failed_precondition")
                    }
                    Code::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
                    Code::PermissionDenied => (StatusCode::FORBIDDEN, "permission_denied"),
                    Code::ResourceExhausted => {
                        (StatusCode::TOO_MANY_REQUESTS, "resource_exhausted")
                    }
                    Code::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
                    Code::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, "deadline_exceeded"),
                    _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
                };
                error_response(http, code, status.message())
            }
        }
    }
}

/// `{"error": message, "code": code}` with `status`.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({ "error": message, "code": code }))).into_response()
}

// === shapes ===

/// `KEY_STATE_ACTIVE` -> `active`.
fn short(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix)
        .unwrap_or(name)
        .to_ascii_lowercase()
}

fn key_state_name(n: i32) -> &'static str {
    KeyState::from_pb(n).map_or("unspecified", KeyState::as_str)
}

fn parse_key_state(name: &str) -> Result<i32, ApiError> {
    if name.is_empty() {
        return Ok(0);
    }
    KeyState::ALL
        .into_iter()
        .find(|s| s.as_str() == name)
        .map(|s| s.to_pb() as i32)
        .ok_or_else(|| ApiError::Invalid(format!("unknown key state {name:?}")))
}

fn error_class_name(n: i32) -> String {
    pb::ErrorClass::try_from(n).map_or_else(
        |_| n.to_string(),
        |c| short(c.as_str_name(), "ERROR_CLASS_"),
    )
}

fn key_json(key: &pb::ProviderKey) -> Value {
    json!({
        "id": key.id,
        "provider": key.provider,
        "masked": key.masked,
        "state": key_state_name(key.state),
        "reason": key.state_reason,
        "until_ms": key.state_until_unix_ms,
        "added_ms": key.added_unix_ms,
        "changed_ms": key.state_changed_unix_ms,
        "next_probe_ms": key.next_probe_unix_ms,
        "last_success_ms": key.last_success_unix_ms,
        "failures": key.failures,
        "exhausted_models": key.exhausted_models.iter().map(|m| json!({
            "model": m.model, "until_ms": m.until_unix_ms, "reason": m.reason,
        })).collect::<Vec<_>>(),
    })
}

fn counts_json(c: Option<&pb::StatsCounts>) -> Value {
    let c = c.cloned().unwrap_or_default();
    let errors: serde_json::Map<String, Value> = c
        .errors
        .iter()
        .map(|e| (error_class_name(e.error_class), json!(e.count)))
        .collect();
    json!({
        "requests": c.requests,
        "successes": c.successes,
        "client_errors": c.client_errors,
        "server_errors": c.server_errors,
        "other_status": c.other_status,
        "errors": errors,
        "error_total": c.errors.iter().map(|e| e.count).sum::<u64>(),
        "input_tokens": c.input_tokens,
        "output_tokens": c.output_tokens,
        "success_rate": c.success_rate,
        "latency_avg_ms": c.latency_avg_ms,
        "latency_p50_ms": c.latency_p50_ms,
    })
}

fn series_json(stats: &pb::GetStatsResponse) -> Value {
    json!({
        "bucket_ms": stats.bucket_ms,
        "points": stats.series.iter().map(|p| {
            let c = p.counts.clone().unwrap_or_default();
            json!({
                "at_ms": p.start_unix_ms,
                "requests": c.requests,
                "errors": c.requests.saturating_sub(c.successes),
            })
        }).collect::<Vec<_>>(),
    })
}

fn record_json(r: &pb::RequestRecord) -> Value {
    let body = String::from_utf8_lossy(&r.request_body);
    let body: String = body.chars().take(MAX_BODY_SHOWN).collect();
    json!({
        "at_ms": r.at_unix_ms,
        "request_id": r.request_id,
        "node": r.node,
        "client_token": r.client_token,
        "protocol": pb::ClientProtocol::try_from(r.client_protocol)
            .map_or_else(|_| String::new(), |p| short(p.as_str_name(), "CLIENT_PROTOCOL_")),
        "operation": r.operation,
        "route": r.route,
        "model_requested": r.model_requested,
        "model_served": r.model_served,
        "provider": r.provider,
        "key_id": r.key_id,
        "status": r.status,
        "latency_ms": r.latency_ms,
        "ttfb_ms": r.ttfb_ms,
        "input_tokens": r.input_tokens,
        "output_tokens": r.output_tokens,
        "attempt": r.attempt,
        "error_class": if r.error_class == 0 { String::new() } else { error_class_name(r.error_class) },
        "stream": r.stream,
        "error_excerpt": r.error_excerpt,
        "request_body": body,
    })
}

fn provider_json(p: &pb::Provider) -> Value {
    json!({
        "name": p.name,
        "type": pb::ProviderType::try_from(p.r#type)
            .map_or_else(|_| String::new(), |t| short(t.as_str_name(), "PROVIDER_TYPE_")),
        "base_url": p.base_url,
        "priority": p.priority,
        "weight": p.weight,
    })
}

fn strategy_name(n: i32) -> String {
    pb::RouteStrategy::try_from(n).map_or_else(
        |_| String::new(),
        |s| short(s.as_str_name(), "ROUTE_STRATEGY_"),
    )
}

fn route_json(r: &pb::Route) -> Value {
    json!({
        "model_pattern": r.model_pattern,
        "strategy": strategy_name(r.strategy),
        "sticky_secs": r.sticky_secs,
        "targets": r.targets.iter().map(|t| json!({
            "provider": t.provider,
            "model": t.model,
            "priority": t.priority,
            "weight": t.weight,
            "input_usd_per_million_tokens": t.input_usd_per_million_tokens,
            "output_usd_per_million_tokens": t.output_usd_per_million_tokens,
        })).collect::<Vec<_>>(),
    })
}

fn state_counts(counts: &[pb::KeyStateCount]) -> Value {
    let mut out = serde_json::Map::new();
    for state in KeyState::ALL {
        let n = counts
            .iter()
            .find(|c| c.state == state.to_pb() as i32)
            .map_or(0, |c| c.count);
        out.insert(state.as_str().to_string(), json!(n));
    }
    Value::Object(out)
}

// === calls ===

impl Ui {
    async fn status(&self) -> Result<pb::GetStatusResponse, ApiError> {
        Ok(self
            .admin
            .get_status(Request::new(pb::GetStatusRequest {}))
            .await?
            .into_inner())
    }

    async fn stats(&self, request: pb::GetStatsRequest) -> Result<pb::GetStatsResponse, ApiError> {
        Ok(self
            .logs
            .get_stats(Request::new(request))
            .await?
            .into_inner())
    }

    async fn list_keys(
        &self,
        request: pb::ListKeysRequest,
    ) -> Result<pb::ListKeysResponse, ApiError> {
        Ok(self
            .admin
            .list_keys(Request::new(request))
            .await?
            .into_inner())
    }

    /// Pages through `ListKeys` from `after`, keeping keys whose id or masked secret holds
    /// `q`, until `limit` are found. Returns them and the token to continue from (empty
    /// when the scan reached the end).
    async fn scan_keys(
        &self,
        provider: &str,
        state: i32,
        q: &str,
        after: String,
        limit: usize,
    ) -> Result<(Vec<pb::ProviderKey>, String), ApiError> {
        let q = q.to_ascii_lowercase();
        let mut found = Vec::new();
        let mut token = after;
        loop {
            let page = self
                .list_keys(pb::ListKeysRequest {
                    provider: provider.to_string(),
                    state,
                    page_size: SCAN_PAGE,
                    page_token: token.clone(),
                })
                .await?;
            let scanned = page.keys.len();
            for (i, key) in page.keys.into_iter().enumerate() {
                let matches = q.is_empty()
                    || key.id.to_ascii_lowercase().contains(&q)
                    || key.masked.to_ascii_lowercase().contains(&q);
                if !matches {
                    continue;
                }
                found.push(key);
                if found.len() == limit {
                    let more = i + 1 < scanned || !page.next_page_token.is_empty();
                    let next = if more {
                        found.last().map(|k| k.id.clone()).unwrap_or_default()
                    } else {
                        String::new()
                    };
                    return Ok((found, next));
                }
            }
            if page.next_page_token.is_empty() {
                return Ok((found, String::new()));
            }
            token = page.next_page_token;
        }
    }
}

// === dashboard ===

#[derive(Deserialize)]
pub struct OverviewQuery {
    /// Window of the chart: `hour`, `day` or `month`.
    #[serde(default)]
    chart: String,
}

pub async fn overview(State(ui): State<Ui>, Query(q): Query<OverviewQuery>) -> ApiResult {
    let chart = match q.chart.as_str() {
        "" | "hour" => pb::StatsWindow::LastHour,
        "day" => pb::StatsWindow::LastDay,
        "month" => pb::StatsWindow::Last30Days,
        other => return Err(ApiError::Invalid(format!("unknown chart window {other:?}"))),
    };
    let mut windows = serde_json::Map::new();
    let mut series = Value::Null;
    for (name, window) in [
        ("minute", pb::StatsWindow::LastMinute),
        ("hour", pb::StatsWindow::LastHour),
        ("day", pb::StatsWindow::LastDay),
        ("month", pb::StatsWindow::Last30Days),
    ] {
        let stats = ui
            .stats(pb::GetStatsRequest {
                window: window as i32,
                ..Default::default()
            })
            .await?;
        windows.insert(name.to_string(), counts_json(stats.total.as_ref()));
        if window == chart {
            series = series_json(&stats);
        }
    }
    // Upstream attempts per key: a key's 429s show here even when another key then
    // served the request.
    let per_key = ui
        .stats(pb::GetStatsRequest {
            window: pb::StatsWindow::LastDay as i32,
            group_by: pb::StatsGroupBy::Key as i32,
            attempts: true,
            ..Default::default()
        })
        .await?;
    let count_of = |row: &pb::StatsRow, classes: &[pb::ErrorClass]| -> u64 {
        row.counts.as_ref().map_or(0, |c| {
            c.errors
                .iter()
                .filter(|e| classes.iter().any(|k| *k as i32 == e.error_class))
                .map(|e| e.count)
                .sum()
        })
    };
    let top = |classes: &[pb::ErrorClass]| -> Vec<Value> {
        let mut rows: Vec<(u64, &pb::StatsRow)> = per_key
            .rows
            .iter()
            .filter(|r| !r.group.is_empty())
            .map(|r| {
                let n = if classes.is_empty() {
                    r.counts
                        .as_ref()
                        .map_or(0, |c| c.errors.iter().map(|e| e.count).sum())
                } else {
                    count_of(r, classes)
                };
                (n, r)
            })
            .filter(|(n, _)| *n > 0)
            .collect();
        rows.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.group.cmp(&b.1.group)));
        rows.into_iter()
            .take(5)
            .map(|(n, r)| {
                json!({
                    "key_id": r.group,
                    "count": n,
                    "calls": r.counts.as_ref().map_or(0, |c| c.requests),
                })
            })
            .collect()
    };
    let top_429 = top(&[pb::ErrorClass::RateLimited]);
    let top_401 = top(&[pb::ErrorClass::Unauthorized, pb::ErrorClass::Auth]);
    let top_errors = top(&[]);
    let status = ui.status().await?;
    Ok(Json(json!({
        "windows": windows,
        "chart": series,
        "top_429": top_429,
        "top_401": top_401,
        "top_errors": top_errors,
        "revision": status.revision,
        "providers": status.providers,
        "keys": status.keys,
        "key_counts": state_counts(&status.key_counts),
        "routes": status.routes,
        "client_tokens": status.client_tokens,
        "data_planes": status.data_planes.len(),
    })))
}

// === keys ===

#[derive(Deserialize)]
pub struct KeysQuery {
    #[serde(default)]
    provider: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    q: String,
    #[serde(default)]
    page_token: String,
    #[serde(default)]
    page_size: u32,
}

pub async fn keys(State(ui): State<Ui>, Query(q): Query<KeysQuery>) -> ApiResult {
    let state = parse_key_state(&q.state)?;
    let page_size = match q.page_size {
        0 => 50,
        n => n.min(MAX_TABLE_PAGE),
    };
    let (keys, next) = if q.q.trim().is_empty() {
        let page = ui
            .list_keys(pb::ListKeysRequest {
                provider: q.provider.clone(),
                state,
                page_size,
                page_token: q.page_token.clone(),
            })
            .await?;
        (page.keys, page.next_page_token)
    } else {
        ui.scan_keys(
            &q.provider,
            state,
            q.q.trim(),
            q.page_token.clone(),
            page_size as usize,
        )
        .await?
    };
    let providers = ui
        .admin
        .list_providers(Request::new(pb::ListProvidersRequest {}))
        .await?
        .into_inner()
        .providers;
    let counts = if q.provider.is_empty() {
        ui.status().await?.key_counts
    } else {
        ui.admin
            .get_provider(Request::new(pb::GetProviderRequest {
                name: q.provider.clone(),
            }))
            .await?
            .into_inner()
            .key_counts
    };
    // Calls and tokens of the last 24 hours, per key, counted over upstream attempts.
    let usage = ui
        .stats(pb::GetStatsRequest {
            window: pb::StatsWindow::LastDay as i32,
            group_by: pb::StatsGroupBy::Key as i32,
            attempts: true,
            ..Default::default()
        })
        .await?;
    let usage: HashMap<&str, &pb::StatsCounts> = usage
        .rows
        .iter()
        .filter_map(|r| Some((r.group.as_str(), r.counts.as_ref()?)))
        .collect();
    let rows: Vec<Value> = keys
        .iter()
        .map(|k| {
            let mut v = key_json(k);
            let u = usage.get(k.id.as_str());
            v["calls_24h"] = json!(u.map_or(0, |c| c.requests));
            v["errors_24h"] = json!(u.map_or(0, |c| c.errors.iter().map(|e| e.count).sum::<u64>()));
            v["tokens_24h"] = json!(u.map_or(0, |c| c.input_tokens + c.output_tokens));
            v
        })
        .collect();
    Ok(Json(json!({
        "keys": rows,
        "next_page_token": next,
        "counts": state_counts(&counts),
        "providers": providers.iter().map(|p| p.name.clone()).collect::<Vec<_>>(),
    })))
}

pub async fn key_detail(State(ui): State<Ui>, Path(id): Path<String>) -> ApiResult {
    let history = ui
        .admin
        .get_key_history(Request::new(pb::GetKeyHistoryRequest { id: id.clone() }))
        .await?
        .into_inner();
    let stats = ui
        .stats(pb::GetStatsRequest {
            window: pb::StatsWindow::LastDay as i32,
            group_by: pb::StatsGroupBy::Key as i32,
            key_id: id.clone(),
            attempts: true,
            ..Default::default()
        })
        .await?;
    let errors = ui
        .logs
        .search_logs(Request::new(pb::SearchLogsRequest {
            filter: Some(pb::LogFilter {
                key_id: id.clone(),
                errors_only: true,
                attempts: true,
                ..Default::default()
            }),
            limit: 20,
            ..Default::default()
        }))
        .await?
        .into_inner();
    Ok(Json(json!({
        "key": history.key.as_ref().map(key_json),
        "transitions": history.transitions.iter().map(|t| json!({
            "at_ms": t.at_unix_ms,
            "from": key_state_name(t.from),
            "to": key_state_name(t.to),
            "reason": t.reason,
            "source": t.source,
            "model": t.model,
            "until_ms": t.until_unix_ms,
        })).collect::<Vec<_>>(),
        "usage_24h": counts_json(stats.total.as_ref()),
        "chart": series_json(&stats),
        "recent_errors": errors.records.iter().map(record_json).collect::<Vec<_>>(),
    })))
}

#[derive(Deserialize)]
pub struct AddKeysBody {
    provider: String,
    /// The pasted text: one key per line.
    text: String,
    #[serde(default)]
    validate: bool,
}

pub async fn add_keys(State(ui): State<Ui>, Json(body): Json<AddKeysBody>) -> ApiResult {
    let response = ui
        .admin
        .add_keys(Request::new(pb::AddKeysRequest {
            provider: body.provider,
            keys: body.text.lines().map(str::to_string).collect(),
            validate: body.validate,
            ..Default::default()
        }))
        .await?
        .into_inner();
    Ok(Json(json!({
        "added": response.added,
        "duplicates": response.duplicates,
        "invalid": response.invalid,
        "skipped": response.skipped,
        "revision": response.revision,
        "results": response.results.iter().map(|r| json!({
            "line": r.line,
            "outcome": pb::AddKeyOutcome::try_from(r.outcome)
                .map_or_else(|_| String::new(), |o| short(o.as_str_name(), "ADD_KEY_OUTCOME_")),
            "id": r.id,
            "masked": r.masked,
            "message": r.message,
        })).collect::<Vec<_>>(),
    })))
}

#[derive(Deserialize, Default)]
pub struct KeyFilter {
    #[serde(default)]
    provider: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    q: String,
}

#[derive(Deserialize)]
pub struct KeyActionBody {
    /// `validate`, `enable`, `disable` or `remove`.
    action: String,
    /// The selected keys; when empty, every key that matches `filter`.
    #[serde(default)]
    ids: Vec<String>,
    filter: Option<KeyFilter>,
    #[serde(default)]
    reason: String,
}

pub async fn key_action(State(ui): State<Ui>, Json(body): Json<KeyActionBody>) -> ApiResult {
    if !matches!(
        body.action.as_str(),
        "validate" | "enable" | "disable" | "remove"
    ) {
        return Err(ApiError::Invalid(format!(
            "unknown action {:?}: use validate, enable, disable or remove",
            body.action
        )));
    }
    if body.ids.is_empty() && body.filter.is_none() {
        return Err(ApiError::Invalid(
            "select keys or give a filter".to_string(),
        ));
    }
    let filter = body.filter.unwrap_or_default();
    let state = parse_key_state(&filter.state)?;
    // Validate takes a provider and state itself; everything else needs ids.
    let ids = if !body.ids.is_empty() {
        body.ids
    } else if body.action == "validate" && filter.q.trim().is_empty() {
        Vec::new()
    } else {
        ui.scan_keys(
            &filter.provider,
            state,
            filter.q.trim(),
            String::new(),
            usize::MAX,
        )
        .await?
        .0
        .into_iter()
        .map(|k| k.id)
        .collect()
    };
    let selected = ids.len();
    let result = match body.action.as_str() {
        "enable" => {
            let r = ui
                .admin
                .enable_keys(Request::new(pb::EnableKeysRequest { ids }))
                .await?
                .into_inner();
            json!({ "changed": r.changed, "revision": r.revision })
        }
        "disable" => {
            let r = ui
                .admin
                .disable_keys(Request::new(pb::DisableKeysRequest {
                    ids,
                    reason: body.reason,
                }))
                .await?
                .into_inner();
            json!({ "changed": r.changed, "revision": r.revision })
        }
        "remove" => {
            let r = ui
                .admin
                .delete_keys(Request::new(pb::DeleteKeysRequest { ids }))
                .await?
                .into_inner();
            json!({ "changed": r.deleted, "revision": r.revision })
        }
        _ => {
            let by_filter = ids.is_empty();
            let request = pb::ValidateKeysRequest {
                all: by_filter && state == 0,
                state: if by_filter { state } else { 0 },
                provider: if by_filter {
                    filter.provider
                } else {
                    String::new()
                },
                ids,
            };
            let mut stream = ui
                .admin
                .validate_keys(Request::new(request))
                .await?
                .into_inner();
            let mut results = Vec::new();
            let mut summary = Value::Null;
            while let Some(event) = stream.next().await {
                match event?.event {
                    Some(pb::validate_keys_response::Event::Result(r))
                        if results.len() < MAX_PROBE_RESULTS =>
                    {
                        results.push(json!({
                            "id": r.id,
                            "masked": r.masked,
                            "state": key_state_name(r.state),
                            "reason": r.reason,
                            "latency_ms": r.latency_ms,
                        }));
                    }
                    Some(pb::validate_keys_response::Event::Summary(s)) => {
                        summary = json!({
                            "probed": s.probed,
                            "skipped": s.skipped,
                            "states": state_counts(&s.states),
                        });
                    }
                    Some(pb::validate_keys_response::Event::Result(_)) | None => {}
                }
            }
            json!({ "results": results, "summary": summary })
        }
    };
    let mut result = result;
    result["selected"] = json!(selected);
    result["action"] = json!(body.action);
    Ok(Json(result))
}

// === logs ===

#[derive(Deserialize)]
pub struct LogsQuery {
    #[serde(default)]
    provider: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    model: String,
    /// An exact status (`429`) or a class (`2xx`, `4xx`, `5xx`).
    #[serde(default)]
    status: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    errors: bool,
    #[serde(default)]
    attempts: bool,
    #[serde(default)]
    from_ms: i64,
    #[serde(default)]
    to_ms: i64,
    #[serde(default)]
    cursor: String,
    #[serde(default)]
    limit: u32,
}

pub async fn logs(State(ui): State<Ui>, Query(q): Query<LogsQuery>) -> ApiResult {
    let (status, status_class) = match q.status.trim() {
        "" => (0, pb::StatusClass::Unspecified),
        "2xx" => (0, pb::StatusClass::Success),
        "4xx" => (0, pb::StatusClass::ClientError),
        "5xx" => (0, pb::StatusClass::ServerError),
        exact => (
            exact.parse::<u32>().map_err(|_| {
                ApiError::Invalid(format!(
                    "status {exact:?} is neither a number nor 2xx, 4xx or 5xx"
                ))
            })?,
            pb::StatusClass::Unspecified,
        ),
    };
    let response = ui
        .logs
        .search_logs(Request::new(pb::SearchLogsRequest {
            filter: Some(pb::LogFilter {
                provider: q.provider.trim().to_string(),
                key_id: q.key.trim().to_string(),
                model: q.model.trim().to_string(),
                status,
                status_class: status_class as i32,
                errors_only: q.errors,
                attempts: q.attempts,
                text: q.text.trim().to_string(),
                ..Default::default()
            }),
            from_unix_ms: q.from_ms,
            to_unix_ms: q.to_ms,
            limit: q.limit,
            cursor: q.cursor,
        }))
        .await?
        .into_inner();
    Ok(Json(json!({
        "records": response.records.iter().map(record_json).collect::<Vec<_>>(),
        "next_cursor": response.next_cursor,
    })))
}

// === config ===

pub async fn config(State(ui): State<Ui>) -> ApiResult {
    let providers = ui
        .admin
        .list_providers(Request::new(pb::ListProvidersRequest {}))
        .await?
        .into_inner()
        .providers;
    let routes = ui
        .admin
        .list_routes(Request::new(pb::ListRoutesRequest {}))
        .await?
        .into_inner()
        .routes;
    let tokens = ui
        .admin
        .list_client_tokens(Request::new(pb::ListClientTokensRequest {}))
        .await?
        .into_inner()
        .client_tokens;
    let settings = ui
        .admin
        .list_settings(Request::new(pb::ListSettingsRequest {}))
        .await?
        .into_inner()
        .settings;
    let status = ui.status().await?;
    Ok(Json(json!({
        "revision": status.revision,
        "providers": providers.iter().map(provider_json).collect::<Vec<_>>(),
        "provider_types": fulcrum_proto::model::ProviderType::ALL.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
        "strategies": (1..=7).map(strategy_name).collect::<Vec<_>>(),
        "routes": routes.iter().map(route_json).collect::<Vec<_>>(),
        "tokens": tokens.iter().map(|t| json!({
            "name": t.name, "prefix": t.prefix, "created_ms": t.created_unix_ms,
        })).collect::<Vec<_>>(),
        "settings": settings.iter().map(|s| json!({
            "name": s.name, "value": s.value, "default": s.default_value, "description": s.description,
        })).collect::<Vec<_>>(),
    })))
}

#[derive(Deserialize)]
pub struct ProviderBody {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    base_url: String,
    #[serde(default)]
    priority: u32,
    #[serde(default)]
    weight: u32,
}

pub async fn create_provider(State(ui): State<Ui>, Json(body): Json<ProviderBody>) -> ApiResult {
    let kind = fulcrum_proto::model::ProviderType::ALL
        .into_iter()
        .find(|t| t.as_str() == body.kind)
        .ok_or_else(|| ApiError::Invalid(format!("unknown provider type {:?}", body.kind)))?;
    let r = ui
        .admin
        .create_provider(Request::new(pb::CreateProviderRequest {
            name: body.name,
            r#type: kind.to_pb() as i32,
            base_url: body.base_url,
            priority: body.priority,
            weight: body.weight,
            ..Default::default()
        }))
        .await?
        .into_inner();
    Ok(Json(json!({ "revision": r.revision })))
}

#[derive(Deserialize)]
pub struct UpdateProviderBody {
    name: String,
    base_url: Option<String>,
    priority: Option<u32>,
    weight: Option<u32>,
}

pub async fn update_provider(
    State(ui): State<Ui>,
    Json(body): Json<UpdateProviderBody>,
) -> ApiResult {
    let r = ui
        .admin
        .update_provider(Request::new(pb::UpdateProviderRequest {
            name: body.name,
            base_url: body.base_url,
            priority: body.priority,
            weight: body.weight,
            ..Default::default()
        }))
        .await?
        .into_inner();
    Ok(Json(json!({
        "revision": r.revision,
        "provider": r.provider.as_ref().map(provider_json),
    })))
}

#[derive(Deserialize)]
pub struct DeleteProviderBody {
    name: String,
    #[serde(default)]
    force: bool,
}

pub async fn delete_provider(
    State(ui): State<Ui>,
    Json(body): Json<DeleteProviderBody>,
) -> ApiResult {
    let r = ui
        .admin
        .delete_provider(Request::new(pb::DeleteProviderRequest {
            name: body.name,
            force: body.force,
        }))
        .await?
        .into_inner();
    Ok(Json(
        json!({ "revision": r.revision, "keys_deleted": r.keys_deleted }),
    ))
}

#[derive(Deserialize)]
pub struct TargetBody {
    provider: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    priority: u32,
    #[serde(default)]
    weight: u32,
    #[serde(default)]
    input_usd_per_million_tokens: f64,
    #[serde(default)]
    output_usd_per_million_tokens: f64,
}

#[derive(Deserialize)]
pub struct RouteBody {
    model_pattern: String,
    #[serde(default)]
    strategy: String,
    #[serde(default)]
    sticky_secs: u32,
    #[serde(default)]
    targets: Vec<TargetBody>,
}

pub async fn put_route(State(ui): State<Ui>, Json(body): Json<RouteBody>) -> ApiResult {
    let strategy = if body.strategy.is_empty() {
        0
    } else {
        pb::RouteStrategy::from_str_name(&format!(
            "ROUTE_STRATEGY_{}",
            body.strategy.to_ascii_uppercase()
        ))
        .ok_or_else(|| ApiError::Invalid(format!("unknown strategy {:?}", body.strategy)))?
            as i32
    };
    let route = pb::Route {
        model_pattern: body.model_pattern,
        strategy,
        sticky_secs: body.sticky_secs,
        targets: body
            .targets
            .into_iter()
            .map(|t| pb::RouteTarget {
                provider: t.provider,
                model: t.model,
                priority: t.priority,
                weight: t.weight,
                input_usd_per_million_tokens: t.input_usd_per_million_tokens,
                output_usd_per_million_tokens: t.output_usd_per_million_tokens,
            })
            .collect(),
        updated_unix_ms: 0,
    };
    let r = ui
        .admin
        .put_route(Request::new(pb::PutRouteRequest { route: Some(route) }))
        .await?
        .into_inner();
    Ok(Json(json!({ "revision": r.revision })))
}

#[derive(Deserialize)]
pub struct DeleteRouteBody {
    model_pattern: String,
}

pub async fn delete_route(State(ui): State<Ui>, Json(body): Json<DeleteRouteBody>) -> ApiResult {
    let r = ui
        .admin
        .delete_route(Request::new(pb::DeleteRouteRequest {
            model_pattern: body.model_pattern,
        }))
        .await?
        .into_inner();
    Ok(Json(json!({ "revision": r.revision })))
}

#[derive(Deserialize)]
pub struct ExplainQuery {
    model: String,
    #[serde(default)]
    protocol: String,
}

pub async fn explain_route(State(ui): State<Ui>, Query(q): Query<ExplainQuery>) -> ApiResult {
    let protocol = match q.protocol.as_str() {
        "" | "openai" => pb::ClientProtocol::Openai,
        "gemini" => pb::ClientProtocol::Gemini,
        "anthropic" => pb::ClientProtocol::Anthropic,
        other => return Err(ApiError::Invalid(format!("unknown protocol {other:?}"))),
    };
    let r = ui
        .admin
        .explain_route(Request::new(pb::ExplainRouteRequest {
            model: q.model,
            protocol: protocol as i32,
        }))
        .await?
        .into_inner();
    Ok(Json(json!({
        "matched_pattern": r.matched_pattern,
        "strategy": strategy_name(r.strategy),
        "sticky_secs": r.sticky_secs,
        "reason": r.reason,
        "revision": r.revision,
        "candidates": r.candidates.iter().map(|c| json!({
            "provider": c.provider,
            "model": c.model,
            "model_rewritten": c.model_rewritten,
            "priority": c.priority,
            "weight": c.weight,
            "usable_keys": c.usable_keys,
            "total_keys": c.total_keys,
            "native": c.native,
            "note": c.note,
        })).collect::<Vec<_>>(),
    })))
}

#[derive(Deserialize)]
pub struct NameBody {
    name: String,
}

pub async fn create_token(State(ui): State<Ui>, Json(body): Json<NameBody>) -> ApiResult {
    let r = ui
        .admin
        .create_client_token(Request::new(pb::CreateClientTokenRequest {
            name: body.name,
        }))
        .await?
        .into_inner();
    // The one time the token is shown: the page displays it once and keeps no copy.
    Ok(Json(json!({ "token": r.token, "revision": r.revision })))
}

pub async fn revoke_token(State(ui): State<Ui>, Json(body): Json<NameBody>) -> ApiResult {
    let r = ui
        .admin
        .revoke_client_token(Request::new(pb::RevokeClientTokenRequest {
            name: body.name,
        }))
        .await?
        .into_inner();
    Ok(Json(json!({ "revision": r.revision })))
}

#[derive(Deserialize)]
pub struct SettingBody {
    name: String,
    value: String,
}

pub async fn set_setting(State(ui): State<Ui>, Json(body): Json<SettingBody>) -> ApiResult {
    let r = ui
        .admin
        .set_setting(Request::new(pb::SetSettingRequest {
            name: body.name,
            value: body.value,
        }))
        .await?
        .into_inner();
    Ok(Json(json!({ "revision": r.revision })))
}

// === data planes ===

pub async fn planes(State(ui): State<Ui>) -> ApiResult {
    let status = ui.status().await?;
    // Requests per node over the last minute, from the request log (bounded: a few pages).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let mut per_node: HashMap<String, u64> = HashMap::new();
    let mut cursor = String::new();
    for _ in 0..10 {
        let page = ui
            .logs
            .search_logs(Request::new(pb::SearchLogsRequest {
                filter: Some(pb::LogFilter::default()),
                from_unix_ms: now - 60_000,
                to_unix_ms: 0,
                limit: 1000,
                cursor,
            }))
            .await?
            .into_inner();
        for r in &page.records {
            *per_node.entry(r.node.clone()).or_default() += 1;
        }
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
    }
    Ok(Json(json!({
        "revision": status.revision,
        "version": status.version,
        "planes": status.data_planes.iter().map(|p| json!({
            "node_id": p.node_id,
            "version": p.version,
            "listen_addr": p.listen_addr,
            "peer_addr": p.peer_addr,
            "connected_since_ms": p.connected_since_unix_ms,
            "applied_revision": p.applied_revision,
            "last_sent_revision": p.last_sent_revision,
            "last_seen_ms": p.last_ack_unix_ms.max(p.last_sent_unix_ms).max(p.connected_since_unix_ms),
            "last_nack_ms": p.last_nack_unix_ms,
            "last_nack_reason": p.last_nack_reason,
            "requests_last_minute": per_node.get(&p.node_id).copied().unwrap_or(0),
        })).collect::<Vec<_>>(),
    })))
}
