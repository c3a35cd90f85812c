//! The client-facing handler: authenticate, read and check the request, hand it to
//! [`failover`](crate::failover), and stream the answer back. Errors take the OpenAI
//! shape here and nowhere else.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::Value;

use crate::failover::{Attempts, ClientRequest, Committed, ProxyError, candidates};
use crate::protocol::openai::{self, Endpoint};
use crate::runtime::{RuntimeConfig, RuntimeConfigHandle};
use crate::shipper::KeyEvents;
use crate::upstream;

/// What the handler needs; small handles, cheap to clone.
#[derive(Clone)]
pub struct Proxy {
    pub runtime: RuntimeConfigHandle,
    pub events: KeyEvents,
    client: Arc<ArcSwap<ClientEntry>>,
}

/// The upstream client and the connect timeout it was built with: a settings change
/// builds a new one (connections of the old one close as their requests end).
struct ClientEntry {
    connect_timeout: Duration,
    client: upstream::Client,
}

impl Proxy {
    pub fn new(runtime: RuntimeConfigHandle, events: KeyEvents) -> Result<Self, String> {
        let connect_timeout = fulcrum_proto::model::Settings::default().connect_timeout;
        let client = upstream::client(connect_timeout)?;
        Ok(Self {
            runtime,
            events,
            client: Arc::new(ArcSwap::from_pointee(ClientEntry {
                connect_timeout,
                client,
            })),
        })
    }

    fn client_for(&self, config: &RuntimeConfig) -> upstream::Client {
        let wanted = config.settings.connect_timeout;
        let current = self.client.load();
        if current.connect_timeout == wanted {
            return current.client.clone();
        }
        match upstream::client(wanted) {
            Ok(client) => {
                self.client.store(Arc::new(ClientEntry {
                    connect_timeout: wanted,
                    client: client.clone(),
                }));
                client
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot build an upstream client with the new connect timeout; keeping the old one");
                current.client.clone()
            }
        }
    }
}

/// Every path that is not a probe comes here.
pub async fn handle(State(proxy): State<Proxy>, request: Request) -> Response {
    let Some(config) = proxy.runtime.load() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the data plane has no config yet",
            "service_unavailable",
            Some("not_ready"),
        );
    };
    let (parts, body) = request.into_parts();
    let Some(target) = openai::parse_path(parts.uri.path()) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("unknown path {}", parts.uri.path()),
            "invalid_request_error",
            Some("unknown_url"),
        );
    };
    let Some(endpoint) = target.endpoint else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("unknown path {}", parts.uri.path()),
            "invalid_request_error",
            Some("unknown_url"),
        );
    };
    let Some(client_token) = authenticate(&config, &parts.headers, parts.uri.query()) else {
        return error(
            StatusCode::UNAUTHORIZED,
            "missing or unknown client token: send Authorization: Bearer <token> (or x-api-key, x-goog-api-key, ?key=)",
            "invalid_request_error",
            Some("invalid_api_key"),
        );
    };
    let expected = if endpoint.has_body() {
        Method::POST
    } else {
        Method::GET
    };
    if parts.method != expected {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!(
                "{} {} is not supported; use {expected}",
                parts.method,
                parts.uri.path()
            ),
            "invalid_request_error",
            Some("method_not_allowed"),
        );
    }
    let limit = usize::try_from(config.settings.max_request_body_bytes).unwrap_or(usize::MAX);
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(body) => body,
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request body larger than {limit} bytes"),
                "invalid_request_error",
                Some("request_too_large"),
            );
        }
    };
    let sniffed = if endpoint.has_body() {
        match openai::sniff(&body) {
            Ok(sniffed) => sniffed,
            Err(message) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &message,
                    "invalid_request_error",
                    Some("invalid_json"),
                );
            }
        }
    } else {
        openai::Sniffed::default()
    };
    let needs_model = matches!(
        endpoint,
        Endpoint::ChatCompletions
            | Endpoint::Completions
            | Endpoint::Embeddings
            | Endpoint::AudioSpeech
    );
    if needs_model && sniffed.model.as_deref().is_none_or(str::is_empty) {
        return error(
            StatusCode::BAD_REQUEST,
            "you must provide a model parameter",
            "invalid_request_error",
            Some("missing_model"),
        );
    }
    let mut headers = HeaderMap::new();
    upstream::copy_headers(
        &upstream::FORWARDED_REQUEST_HEADERS,
        &parts.headers,
        &mut headers,
    );
    let request = ClientRequest {
        endpoint,
        pinned: target.pinned.map(str::to_string),
        model: sniffed.model.clone().unwrap_or_default(),
        stream: sniffed.streaming(),
        body,
        headers,
    };
    let client = proxy.client_for(&config);
    let attempts = Attempts {
        config: &config,
        client: &client,
        events: &proxy.events,
    };
    tracing::debug!(client = %client_token, endpoint = endpoint.as_str(), model = %request.model, "request");
    if endpoint == Endpoint::Models && request.pinned.is_none() {
        return list_models(&attempts, &request).await;
    }
    match attempts.run(&request).await {
        Ok(committed) => respond(committed, config.settings.idle_timeout),
        Err(e) => error_response(e),
    }
}

/// The client token's name, if the request carries a known one.
fn authenticate<'c>(
    config: &'c RuntimeConfig,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Option<&'c str> {
    let header = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let token = header(header::AUTHORIZATION)
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .or_else(|| header(X_API_KEY.clone()))
        .or_else(|| header(X_GOOG_API_KEY.clone()))
        .or_else(|| query?.split('&').find_map(|pair| pair.strip_prefix("key=")))?
        .trim();
    if token.is_empty() {
        return None;
    }
    // On every request: hashed into a stack buffer, the same rule the store keeps.
    let hash = fulcrum_proto::model::TokenHash::of(token);
    config.client_tokens.get(hash.as_str()).map(String::as_str)
}

static X_API_KEY: header::HeaderName = header::HeaderName::from_static("x-api-key");
static X_GOOG_API_KEY: header::HeaderName = header::HeaderName::from_static("x-goog-api-key");

/// `GET /v1/models` without a pinned provider: the union of what every provider lists.
async fn list_models(attempts: &Attempts<'_>, request: &ClientRequest) -> Response {
    let providers: Vec<String> = match candidates(attempts.config, None, "") {
        Ok(found) => found.iter().map(|c| c.provider.name.clone()).collect(),
        Err(e) => return error_response(e),
    };
    let mut data: Vec<Value> = Vec::new();
    let mut last_error = None;
    for provider in providers {
        let pinned = ClientRequest {
            pinned: Some(provider.clone()),
            ..request.clone()
        };
        let body = match attempts.run(&pinned).await {
            Ok(committed) => collect(committed).await,
            Err(e) => {
                tracing::debug!(provider = %provider, error = %e, "cannot list models");
                last_error = Some(e);
                continue;
            }
        };
        let Ok(listed) = serde_json::from_slice::<Value>(&body) else {
            continue;
        };
        for model in listed["data"].as_array().into_iter().flatten() {
            if !data.iter().any(|m| m["id"] == model["id"]) {
                data.push(model.clone());
            }
        }
    }
    if data.is_empty()
        && let Some(e) = last_error
    {
        return error_response(e);
    }
    data.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    let body = serde_json::json!({"object": "list", "data": data});
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn collect(committed: Committed) -> Bytes {
    let mut out = committed.first.to_vec();
    if let Some(mut rest) = committed.rest {
        while let Some(Ok(chunk)) = rest.next().await {
            out.extend_from_slice(&chunk);
        }
    }
    Bytes::from(out)
}

/// Streams a committed answer to the client. After this point a failure cannot move to
/// another key: an event stream ends with an error event in OpenAI's shape, any other
/// body is cut, so the client always sees that the answer is incomplete.
fn respond(committed: Committed, idle_timeout: Duration) -> Response {
    let mut response = Response::builder().status(committed.status);
    if let Some(headers) = response.headers_mut() {
        *headers = committed.headers;
    }
    let Some(rest) = committed.rest else {
        return response
            .body(Body::from(committed.first))
            .unwrap_or_else(|_| {
                error(
                    StatusCode::BAD_GATEWAY,
                    "invalid upstream answer",
                    "upstream_error",
                    None,
                )
            });
    };
    let tail = BodyTail {
        rest: Some(rest),
        idle_timeout,
        event_stream: committed.event_stream,
        done_seen: contains_done(&committed.first),
        finished: false,
    };
    let first = futures::stream::once(async move { Ok::<Bytes, std::io::Error>(committed.first) });
    let stream = first.chain(futures::stream::unfold(tail, BodyTail::next));
    response
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| {
            error(
                StatusCode::BAD_GATEWAY,
                "invalid upstream answer",
                "upstream_error",
                None,
            )
        })
}

/// The part of an answer after its first chunk.
struct BodyTail {
    rest: Option<BoxStream<'static, Result<Bytes, hyper::Error>>>,
    idle_timeout: Duration,
    event_stream: bool,
    done_seen: bool,
    finished: bool,
}

impl BodyTail {
    async fn next(mut self) -> Option<(Result<Bytes, std::io::Error>, Self)> {
        if self.finished {
            return None;
        }
        let rest = self.rest.as_mut()?;
        let failure = match tokio::time::timeout(self.idle_timeout, rest.next()).await {
            Ok(Some(Ok(chunk))) => {
                self.done_seen |= contains_done(&chunk);
                return Some((Ok(chunk), self));
            }
            Ok(None) if !self.event_stream || self.done_seen => return None,
            Ok(None) => "the upstream ended the stream before it was complete".to_string(),
            Ok(Some(Err(e))) => format!("the upstream stream broke: {e}"),
            Err(_) => format!("the upstream sent nothing for {:?}", self.idle_timeout),
        };
        self.finished = true;
        tracing::warn!(reason = %failure, "answer cut after its first byte");
        if self.event_stream {
            return Some((Ok(openai::stream_error_event(&failure)), self));
        }
        Some((Err(std::io::Error::other(failure)), self))
    }
}

fn contains_done(chunk: &[u8]) -> bool {
    chunk.windows(6).any(|w| w == b"[DONE]")
}

/// A failed request in OpenAI's error shape.
pub fn error_response(e: ProxyError) -> Response {
    match e {
        ProxyError::Upstream {
            status,
            content_type,
            body,
            ..
        } => {
            let content_type =
                content_type.unwrap_or_else(|| HeaderValue::from_static("application/json"));
            (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        ProxyError::Network(detail) => error(
            StatusCode::BAD_GATEWAY,
            &format!("the upstream could not be reached: {detail}"),
            "upstream_error",
            Some("upstream_unreachable"),
        ),
        ProxyError::FirstByteTimeout(after) => error(
            StatusCode::GATEWAY_TIMEOUT,
            &format!("the upstream did not answer within {after:?}"),
            "upstream_error",
            Some("upstream_timeout"),
        ),
        ProxyError::AllCooling { retry_after } => {
            let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                &format!("every key is rate limited; retry in {seconds}s"),
                "rate_limit_error",
                Some("all_keys_rate_limited"),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            response
        }
        ProxyError::NoCandidate(message) => error(
            StatusCode::NOT_FOUND,
            &message,
            "invalid_request_error",
            Some("model_not_found"),
        ),
        ProxyError::NoUsableKey(providers) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("no usable key left for {providers}"),
            "service_unavailable",
            Some("no_usable_key"),
        ),
        ProxyError::BadRequest(message) => error(
            StatusCode::BAD_REQUEST,
            &message,
            "invalid_request_error",
            None,
        ),
    }
}

fn error(status: StatusCode, message: &str, error_type: &str, code: Option<&str>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        openai::error_body(message, error_type, code),
    )
        .into_response()
}
