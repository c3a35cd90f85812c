//! One client request's way through candidates, keys and attempts.
//!
//! Candidates come from the request (a pinned provider), a route, or every provider that
//! speaks the client's protocol. Each attempt takes the next usable key of a candidate's
//! pool. A retryable failure (429, 401/403, 5xx, network error, first-byte timeout) moves
//! the request to another key, then to the next candidate, up to `max_retries` further
//! attempts. Nothing reaches the client until an attempt has produced its first body
//! chunk, so every failover happens before the first byte.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fulcrum_proto::model::{Key, Provider, ProviderType, Route};
use fulcrum_proto::pb;
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};

use crate::balance::{KeyVerdict, Pick, PoolEntry};
use crate::mock;
use crate::protocol::openai::{self, Endpoint};
use crate::runtime::RuntimeConfig;
use crate::shipper::KeyEvents;
use crate::upstream::{self, Outcome};

/// Most bytes of an upstream error body kept and passed on.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// A client request, as much of it as goes upstream.
#[derive(Debug, Clone)]
pub struct ClientRequest {
    pub endpoint: Endpoint,
    /// Set by `/{provider}/v1/...`.
    pub pinned: Option<String>,
    /// The model the client asked for ("" when the operation has none).
    pub model: String,
    pub stream: bool,
    pub body: Bytes,
    /// The client headers that travel upstream.
    pub headers: HeaderMap,
}

/// One provider to try, and the model to ask it for.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    pub provider: &'a Provider,
    /// `Some` when a route rewrites the model.
    pub model: Option<&'a str>,
}

/// Why a request could not be served. Each variant knows whose fault it is, whether
/// another key may help, and how it looks to the client.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The upstream answered with an error; passed on as it came (our keys masked).
    #[error("upstream answered {status}")]
    Upstream {
        status: StatusCode,
        content_type: Option<HeaderValue>,
        body: Bytes,
        outcome: Outcome,
    },
    /// No answer: connect error, reset, or no first byte in time.
    #[error("upstream unreachable: {0}")]
    Network(String),
    #[error("no answer from the upstream within {0:?}")]
    FirstByteTimeout(Duration),
    /// Every key that could serve is resting; the first is back in this long.
    #[error("every key is rate limited")]
    AllCooling { retry_after: Duration },
    /// No provider serves the model, or every key is out.
    #[error("{0}")]
    NoCandidate(String),
    #[error("no usable key for {0}")]
    NoUsableKey(String),
    /// The client's request cannot be sent as it is.
    #[error("{0}")]
    BadRequest(String),
}

impl ProxyError {
    /// Whether another key or provider may succeed where this attempt failed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ProxyError::Upstream { outcome, .. } => outcome.is_retryable(),
            ProxyError::Network(_) | ProxyError::FirstByteTimeout(_) => true,
            ProxyError::AllCooling { .. }
            | ProxyError::NoCandidate(_)
            | ProxyError::NoUsableKey(_)
            | ProxyError::BadRequest(_) => false,
        }
    }
}

/// An attempt that produced its first chunk: from here on the request stays on this key.
pub struct Committed {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub first: Bytes,
    /// The rest of the body; `None` when `first` is all of it.
    pub rest: Option<futures::stream::BoxStream<'static, Result<Bytes, hyper::Error>>>,
    pub event_stream: bool,
    pub provider: String,
    pub key_id: Option<String>,
    pub attempts: u32,
}

/// The candidates for a request, in the order to try them.
pub fn candidates<'a>(
    config: &'a RuntimeConfig,
    pinned: Option<&str>,
    model: &str,
) -> Result<Vec<Candidate<'a>>, ProxyError> {
    let speaks_openai =
        |p: &Provider| matches!(p.provider_type, ProviderType::OpenAi | ProviderType::Mock);
    if let Some(name) = pinned {
        let provider = config
            .providers
            .get(name)
            .ok_or_else(|| ProxyError::NoCandidate(format!("no provider named {name:?}")))?;
        if !speaks_openai(provider) {
            return Err(ProxyError::NoCandidate(format!(
                "provider {name:?} is of type {}, which this endpoint cannot reach yet",
                provider.provider_type
            )));
        }
        return Ok(vec![Candidate {
            provider,
            model: None,
        }]);
    }
    if let Some(route) = best_route(config.routes.values(), model) {
        let mut targets: Vec<_> = route.targets.iter().enumerate().collect();
        targets.sort_by_key(|(index, t)| (t.priority, *index));
        let found: Vec<Candidate<'a>> = targets
            .into_iter()
            .filter_map(|(_, t)| {
                let provider = config.providers.get(&t.provider)?;
                speaks_openai(provider).then_some(Candidate {
                    provider,
                    model: t.model.as_deref(),
                })
            })
            .collect();
        if found.is_empty() {
            return Err(ProxyError::NoCandidate(format!(
                "the route for {model:?} names no provider this endpoint can reach"
            )));
        }
        return Ok(found);
    }
    let mut providers: Vec<&Provider> = config
        .providers
        .values()
        .filter(|p| speaks_openai(p))
        .collect();
    providers.sort_by(|a, b| (a.priority, &a.name).cmp(&(b.priority, &b.name)));
    if providers.is_empty() {
        return Err(ProxyError::NoCandidate(format!(
            "no provider serves model {model:?}"
        )));
    }
    Ok(providers
        .into_iter()
        .map(|provider| Candidate {
            provider,
            model: None,
        })
        .collect())
}

/// The route for `model`: an exact pattern beats any glob; among globs the one with the
/// most literal characters wins, then the lexically first, never insertion order.
pub fn best_route<'a>(routes: impl Iterator<Item = &'a Route>, model: &str) -> Option<&'a Route> {
    let mut best: Option<(&Route, (bool, usize))> = None;
    for route in routes {
        let pattern = route.model_pattern.as_str();
        let rank = if pattern == model {
            (true, pattern.len())
        } else if pattern.contains('*') && glob_matches(pattern, model) {
            (false, pattern.chars().filter(|c| *c != '*').count())
        } else {
            continue;
        };
        let better = match &best {
            None => true,
            Some((current, current_rank)) => {
                rank > *current_rank
                    || (rank == *current_rank && route.model_pattern < current.model_pattern)
            }
        };
        if better {
            best = Some((route, rank));
        }
    }
    best.map(|(route, _)| route)
}

/// `*` matches any run of characters, including none.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, rest) = match parts.split_first() {
        Some(split) => split,
        None => return text.is_empty(),
    };
    let Some(mut remaining) = text.strip_prefix(first) else {
        return false;
    };
    let Some((last, middle)) = rest.split_last() else {
        return remaining.is_empty();
    };
    for part in middle {
        match remaining.find(part) {
            Some(at) => remaining = &remaining[at + part.len()..],
            None => return false,
        }
    }
    remaining.len() >= last.len() && remaining.ends_with(last)
}

/// What an attempt needs besides the request.
pub struct Attempts<'a> {
    pub config: &'a Arc<RuntimeConfig>,
    pub client: &'a upstream::Client,
    pub events: &'a KeyEvents,
}

impl Attempts<'_> {
    /// Serves the request from the first candidate key that answers, or says why none did.
    pub async fn run(&self, request: &ClientRequest) -> Result<Committed, ProxyError> {
        let candidates = candidates(self.config, request.pinned.as_deref(), &request.model)?;
        let settings = &self.config.settings;
        let max_attempts = settings.max_retries.saturating_add(1);
        let wait_until =
            now_ms() + i64::try_from(settings.wait_budget.as_millis()).unwrap_or(i64::MAX);
        let mut tried: Vec<Arc<Key>> = Vec::new();
        let mut attempts = 0u32;
        let mut last_error: Option<ProxyError> = None;
        loop {
            let mut back_at: Option<i64> = None;
            for candidate in &candidates {
                if candidate.provider.provider_type == ProviderType::Mock {
                    return Ok(self.mock(candidate, request, attempts + 1));
                }
                let Some(pool) = self.config.pools.get(&candidate.provider.name) else {
                    continue;
                };
                loop {
                    if attempts >= max_attempts {
                        return Err(last_error.unwrap_or_else(|| {
                            ProxyError::NoUsableKey(candidate.provider.name.clone())
                        }));
                    }
                    match pool.pick(now_ms(), &tried) {
                        Pick::Key(entry) => {
                            attempts += 1;
                            tried.push(Arc::clone(&entry.key));
                            match self.attempt(candidate, &entry, request).await {
                                Ok(mut committed) => {
                                    committed.attempts = attempts;
                                    return Ok(committed);
                                }
                                Err(e) if e.is_retryable() => {
                                    tracing::debug!(provider = %candidate.provider.name, key = %entry.key.id, error = %e, "attempt failed; trying another key");
                                    last_error = Some(e);
                                }
                                Err(e) => return Err(e),
                            }
                        }
                        Pick::AllCooling { back_at_ms } => {
                            back_at = Some(back_at.map_or(back_at_ms, |b| b.min(back_at_ms)));
                            break;
                        }
                        Pick::Exhausted => break,
                    }
                }
            }
            let now = now_ms();
            match back_at {
                // Wait for the first key to come back when that fits the wait budget.
                Some(at) if at <= wait_until && attempts < max_attempts => {
                    tokio::time::sleep(Duration::from_millis(
                        u64::try_from(at - now).unwrap_or(0) + 1,
                    ))
                    .await;
                    // Keys that rested are worth another try now.
                    tried.clear();
                }
                Some(at) => {
                    let retry_after =
                        Duration::from_millis(u64::try_from(at - now).unwrap_or(0).max(1_000));
                    return Err(match last_error {
                        Some(e @ ProxyError::Upstream { .. })
                            if !matches!(
                                e,
                                ProxyError::Upstream {
                                    outcome: Outcome::RateLimited { .. },
                                    ..
                                }
                            ) =>
                        {
                            e
                        }
                        _ => ProxyError::AllCooling { retry_after },
                    });
                }
                None => {
                    return Err(last_error.unwrap_or_else(|| {
                        let names: Vec<&str> = candidates
                            .iter()
                            .map(|c| c.provider.name.as_str())
                            .collect();
                        ProxyError::NoUsableKey(names.join(", "))
                    }));
                }
            }
        }
    }

    fn mock(&self, candidate: &Candidate<'_>, request: &ClientRequest, attempts: u32) -> Committed {
        let model = candidate.model.unwrap_or(&request.model);
        let answer = mock::answer(
            request.endpoint,
            &candidate.provider.name,
            model,
            request.stream,
            &request.body,
            now_ms() / 1000,
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(answer.content_type),
        );
        let (first, rest, event_stream) = match answer.body {
            mock::MockBody::Whole(body) => (body, None, false),
            mock::MockBody::Events(events) => {
                let mut events = events.into_iter();
                let first = events.next().unwrap_or_default();
                let rest: Vec<Result<Bytes, hyper::Error>> = events.map(Ok).collect();
                (first, Some(futures::stream::iter(rest).boxed()), true)
            }
        };
        Committed {
            status: StatusCode::OK,
            headers,
            first,
            rest,
            event_stream,
            provider: candidate.provider.name.clone(),
            key_id: None,
            attempts,
        }
    }

    /// One upstream call with one key.
    async fn attempt(
        &self,
        candidate: &Candidate<'_>,
        entry: &PoolEntry,
        request: &ClientRequest,
    ) -> Result<Committed, ProxyError> {
        let settings = &self.config.settings;
        let provider = candidate.provider;
        let key = &entry.key;
        let body = match candidate.model {
            Some(model) if request.endpoint.has_body() => {
                openai::with_model(&request.body, model).map_err(ProxyError::BadRequest)?
            }
            _ => request.body.clone(),
        };
        let url = format!("{}{}", provider.base_url, request.endpoint.upstream_path());
        let method = if request.endpoint.has_body() {
            Method::POST
        } else {
            Method::GET
        };
        let mut upstream_request =
            http::Request::new(http_body_util::Full::new(if request.endpoint.has_body() {
                body
            } else {
                Bytes::new()
            }));
        *upstream_request.method_mut() = method;
        *upstream_request.uri_mut() = url.parse().map_err(|_| {
            ProxyError::BadRequest(format!(
                "provider {:?} has an unusable base URL",
                provider.name
            ))
        })?;
        let headers = upstream_request.headers_mut();
        headers.clone_from(&request.headers);
        let mut authorization = HeaderValue::try_from(format!("Bearer {}", key.secret.expose()))
            .map_err(|_| {
                ProxyError::BadRequest("a provider key cannot be sent as a header".into())
            })?;
        authorization.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, authorization);
        headers.insert(
            header::USER_AGENT,
            HeaderValue::from_static(concat!("fulcrum/", env!("CARGO_PKG_VERSION"))),
        );
        let started = tokio::time::Instant::now();
        let deadline = started + settings.first_byte_timeout;
        let response =
            match tokio::time::timeout_at(deadline, self.client.request(upstream_request)).await {
                Err(_) => {
                    self.fail(entry, None, "no response in time");
                    return Err(ProxyError::FirstByteTimeout(settings.first_byte_timeout));
                }
                Ok(Err(e)) => {
                    let what = if e.is_connect() {
                        "connect error"
                    } else {
                        "request failed"
                    };
                    let detail = network_detail(what, &e);
                    self.fail(entry, None, &detail);
                    return Err(ProxyError::Network(detail));
                }
                Ok(Ok(response)) => response,
            };
        let status = response.status();
        let outcome = Outcome::classify(status, response.headers());
        if outcome != Outcome::Success {
            let now = now_ms();
            match outcome {
                Outcome::RateLimited { retry_after } => {
                    let wait = retry_after.unwrap_or(settings.cooldown_default);
                    let wait_ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
                    entry.local.record_rate_limited(now.saturating_add(wait_ms));
                    let asked_ms = if retry_after.is_some() { wait_ms } else { 0 };
                    self.report(
                        key,
                        pb::KeyEventKind::RateLimited,
                        asked_ms,
                        Some(status),
                        "429 from upstream",
                    );
                }
                Outcome::Refused => {
                    entry.local.record_refused(now);
                    self.report(
                        key,
                        pb::KeyEventKind::Unauthorized,
                        0,
                        Some(status),
                        "upstream refused the key",
                    );
                }
                Outcome::ServerError => {
                    self.fail(entry, Some(status), "server error from upstream")
                }
                Outcome::ClientError | Outcome::Success => {}
            }
            let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
            let body = read_bounded(response, deadline).await;
            let masked = match std::str::from_utf8(&body) {
                Ok(text) => Bytes::from(upstream::mask_in(text, key.secret.expose())),
                Err(_) => body,
            };
            return Err(ProxyError::Upstream {
                status,
                content_type,
                body: masked,
                outcome,
            });
        }
        let mut headers = HeaderMap::new();
        upstream::copy_headers(
            &upstream::FORWARDED_RESPONSE_HEADERS,
            response.headers(),
            &mut headers,
        );
        let event_stream = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        let length = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let mut body = upstream::data_stream(response.into_body());
        // The first chunk decides: an upstream that sends headers and then stalls or dies
        // is still a failed attempt, because the client has seen nothing yet.
        let first = match tokio::time::timeout_at(deadline, body.next()).await {
            Err(_) => {
                self.fail(entry, None, "headers but no body in time");
                return Err(ProxyError::FirstByteTimeout(settings.first_byte_timeout));
            }
            Ok(Some(Err(e))) => {
                let detail = network_detail("connection broken while reading the answer", &e);
                self.fail(entry, None, &detail);
                return Err(ProxyError::Network(detail));
            }
            Ok(Some(Ok(first))) => Some(first),
            Ok(None) => None,
        };
        if let KeyVerdict::Success {
            reset_failures: true,
        } = entry.local.record_success()
        {
            self.report(key, pb::KeyEventKind::Success, 0, Some(status), "");
        }
        let first = first.unwrap_or_default();
        // A small answer often arrives whole in its first chunk: then it goes out as one
        // body with a length instead of a stream to poll to its end.
        let whole = !event_stream && length == Some(first.len() as u64);
        Ok(Committed {
            status,
            headers,
            first,
            rest: (!whole).then_some(body),
            event_stream,
            provider: provider.name.clone(),
            key_id: Some(key.id.clone()),
            attempts: 0,
        })
    }

    /// Counts a failure of the key here and tells the control plane.
    fn fail(&self, entry: &PoolEntry, status: Option<StatusCode>, detail: &str) {
        let verdict = entry
            .local
            .record_failure(now_ms(), self.config.settings.max_failures);
        if let KeyVerdict::Failed { now_out: true } = verdict {
            tracing::warn!(key = %entry.key.id, provider = %entry.key.provider, "key out after consecutive failures");
        }
        self.report(&entry.key, pb::KeyEventKind::Failure, 0, status, detail);
    }

    /// Tells the control plane; `status` is `None` when there was no HTTP answer.
    fn report(
        &self,
        key: &Key,
        kind: pb::KeyEventKind,
        retry_after_ms: i64,
        status: Option<StatusCode>,
        detail: &str,
    ) {
        self.events.report(pb::KeyEvent {
            key_id: key.id.clone(),
            kind: kind as i32,
            at_unix_ms: now_ms(),
            retry_after_ms,
            http_status: status.map_or(0, |s| u32::from(s.as_u16())),
            detail: detail.to_string(),
        });
    }
}

/// A network error in words that never include a URL with secrets or a key: `what`
/// happened, and the innermost cause.
fn network_detail(what: &str, e: &(dyn std::error::Error + 'static)) -> String {
    let mut source = e.source();
    let mut cause = String::new();
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if cause.is_empty() {
        what.to_string()
    } else {
        format!("{what}: {cause}")
    }
}

/// Reads at most `MAX_ERROR_BODY` bytes of an error answer before `deadline`.
async fn read_bounded(
    response: http::Response<hyper::body::Incoming>,
    deadline: tokio::time::Instant,
) -> Bytes {
    let mut stream = upstream::data_stream(response.into_body());
    let mut out = Vec::new();
    while out.len() < MAX_ERROR_BODY {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(chunk))) => out.extend_from_slice(&chunk),
            _ => break,
        }
    }
    out.truncate(MAX_ERROR_BODY);
    Bytes::from(out)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fulcrum_proto::model::RouteTarget;

    fn route(pattern: &str) -> Route {
        Route {
            model_pattern: pattern.into(),
            targets: vec![RouteTarget {
                provider: "p".into(),
                model: None,
                priority: 0,
                weight: 1,
            }],
        }
    }

    #[test]
    fn globs() {
        assert!(glob_matches("*", "anything"));
        assert!(glob_matches("gemini-2.5-*", "gemini-2.5-pro"));
        assert!(!glob_matches("gemini-2.5-*", "gemini-2.0-pro"));
        assert!(glob_matches("claude-*-latest", "claude-3-5-sonnet-latest"));
        assert!(!glob_matches("claude-*-latest", "claude-3"));
        assert!(glob_matches("a*b*c", "abc"));
        assert!(!glob_matches("a*b*c", "acb"));
        assert!(glob_matches("exact", "exact"));
        assert!(!glob_matches("exact", "exactly"));
    }

    #[test]
    fn exact_beats_glob_and_specific_beats_general() {
        let routes = [route("*"), route("gpt-*"), route("gpt-4o"), route("gpt-4*")];
        let pick = |m: &str| best_route(routes.iter(), m).map(|r| r.model_pattern.as_str());
        assert_eq!(pick("gpt-4o"), Some("gpt-4o"));
        assert_eq!(pick("gpt-4o-mini"), Some("gpt-4*"));
        assert_eq!(pick("gpt-3.5"), Some("gpt-*"));
        assert_eq!(pick("claude"), Some("*"));
        let reversed: Vec<Route> = routes.iter().rev().cloned().collect();
        assert_eq!(
            best_route(reversed.iter(), "gpt-4o-mini").map(|r| r.model_pattern.as_str()),
            Some("gpt-4*")
        );
    }
}
