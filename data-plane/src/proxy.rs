//! The client-facing handler: authenticate, read and check the request, hand it to
//! [`failover`](crate::failover), and stream the answer back. Errors take the OpenAI
//! shape here and nowhere else.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};

use crate::balance::strategy::{InFlight, StrategyState};
use crate::exchange::StreamReframer;
use crate::failover::{Attempts, ClientRequest, Committed, ProxyError};
use crate::models;
use crate::protocol::{self, ErrorKind, Operation, Protocol, openai};
use crate::records::{self, Answer, ErrorClass, Recorder, RequestFields, RequestLog};
use crate::runtime::{RuntimeConfig, RuntimeConfigHandle};
use crate::shipper::KeyEvents;
use crate::upstream;

/// What the handler needs; small handles, cheap to clone.
#[derive(Clone)]
pub struct Proxy {
    pub runtime: RuntimeConfigHandle,
    pub events: KeyEvents,
    pub recorder: Recorder,
    strategies: Arc<StrategyState>,
    client: Arc<ArcSwap<upstream::Clients>>,
}

impl Proxy {
    pub fn new(
        runtime: RuntimeConfigHandle,
        events: KeyEvents,
        recorder: Recorder,
    ) -> Result<Self, String> {
        let connect_timeout = fulcrum_proto::model::Settings::default().connect_timeout;
        let clients = upstream::Clients::new(connect_timeout)?;
        Ok(Self {
            runtime,
            events,
            recorder,
            strategies: Arc::default(),
            client: Arc::new(ArcSwap::from_pointee(clients)),
        })
    }

    /// The upstream clients for the connect timeout in force: a settings change builds
    /// new ones (connections of the old ones close as their requests end).
    fn clients_for(&self, config: &RuntimeConfig) -> Arc<upstream::Clients> {
        let wanted = config.settings.connect_timeout;
        let current = self.client.load_full();
        if current.connect_timeout() == wanted {
            return current;
        }
        match upstream::Clients::new(wanted) {
            Ok(clients) => {
                let clients = Arc::new(clients);
                self.client.store(Arc::clone(&clients));
                clients
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot build an upstream client with the new connect timeout; keeping the old one");
                current
            }
        }
    }
}

/// The request body whole, or `None` when it runs past `limit` bytes or breaks off. A
/// small request's body comes in one frame, which is kept as it came: no list of frames
/// and no copy, as a general collector makes.
async fn read_body<B>(body: B, limit: usize) -> Option<Bytes>
where
    B: hyper::body::Body<Data = Bytes>,
{
    if body.size_hint().lower() > limit as u64 {
        return None;
    }
    let mut body = std::pin::pin!(body);
    let mut first = None::<Bytes>;
    let mut joined = None::<Vec<u8>>;
    let mut len = 0usize;
    while let Some(data) = upstream::next_data(&mut body).await {
        let data = data.ok()?;
        len += data.len();
        if len > limit {
            return None;
        }
        match (&first, &mut joined) {
            (None, _) => first = Some(data),
            (Some(_), Some(joined)) => joined.extend_from_slice(&data),
            (Some(first), None) => {
                let mut both = Vec::with_capacity(len);
                both.extend_from_slice(first);
                both.extend_from_slice(&data);
                joined = Some(both);
            }
        }
    }
    Some(match joined {
        Some(joined) => Bytes::from(joined),
        None => first.unwrap_or_default(),
    })
}

/// Every path that is not a probe comes here. Every answer is recorded (attempt 0),
/// whichever way it leaves.
pub async fn handle<B>(State(proxy): State<Proxy>, request: http::Request<B>) -> Response
where
    B: hyper::body::Body<Data = Bytes>,
{
    let arrival = proxy.recorder.arrival();
    let (parts, body) = request.into_parts();
    let config = proxy.runtime.load();
    let settings = config.as_ref().map(|c| &c.settings);
    // Answers before failover; no config yet means default settings for the record.
    let early = |protocol: Protocol, fields: RequestFields, class: ErrorClass, response| {
        let default_settings;
        let in_force = match settings {
            Some(in_force) => in_force,
            None => {
                default_settings = fulcrum_proto::model::Settings::default();
                &default_settings
            }
        };
        proxy
            .recorder
            .early_answer(arrival, protocol, fields, in_force, class, response)
    };
    let target = match protocol::parse_path(parts.uri.path(), &parts.headers, parts.uri.query()) {
        Ok(target) => target,
        Err(protocol) => {
            let response = protocol::error_response(
                protocol,
                StatusCode::NOT_FOUND,
                ErrorKind::NotFound,
                &format!("unknown path {}", parts.uri.path()),
                Some("unknown_url"),
            );
            return early(
                protocol,
                RequestFields::default(),
                ErrorClass::Client,
                response,
            );
        }
    };
    let client_protocol = target.protocol;
    let operation = target.operation;
    let fail = |status: StatusCode, kind: ErrorKind, message: &str, code: Option<&str>| {
        protocol::error_response(client_protocol, status, kind, message, code)
    };
    let Some(config) = config.as_ref() else {
        let response = fail(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Unavailable,
            "the data plane has no config yet",
            Some("not_ready"),
        );
        let fields = RequestFields {
            operation: Some(operation),
            ..RequestFields::default()
        };
        return early(client_protocol, fields, ErrorClass::NoCandidate, response);
    };
    let Some(client_token) = authenticate(config, &parts.headers, parts.uri.query()) else {
        let response = fail(
            StatusCode::UNAUTHORIZED,
            ErrorKind::Authentication,
            "missing or unknown client token: send Authorization: Bearer <token> (or x-api-key, x-goog-api-key, ?key=)",
            Some("invalid_api_key"),
        );
        let fields = RequestFields {
            operation: Some(operation),
            ..RequestFields::default()
        };
        return early(client_protocol, fields, ErrorClass::Auth, response);
    };
    let client_fields = || RequestFields {
        client_token: Some(Arc::clone(client_token)),
        operation: Some(operation),
        ..RequestFields::default()
    };
    let expected = if operation.has_body() {
        Method::POST
    } else {
        Method::GET
    };
    if parts.method != expected {
        let response = fail(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::InvalidRequest,
            &format!(
                "{} {} is not supported; use {expected}",
                parts.method,
                parts.uri.path()
            ),
            Some("method_not_allowed"),
        );
        return early(
            client_protocol,
            client_fields(),
            ErrorClass::Client,
            response,
        );
    }
    let limit = usize::try_from(config.settings.max_request_body_bytes).unwrap_or(usize::MAX);
    let body = match read_body(body, limit).await {
        Some(body) => body,
        None => {
            let response = fail(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorKind::TooLarge,
                &format!("request body larger than {limit} bytes"),
                Some("request_too_large"),
            );
            return early(
                client_protocol,
                client_fields(),
                ErrorClass::Client,
                response,
            );
        }
    };
    let with_body = |fields: RequestFields| RequestFields {
        body: config.settings.log_request_bodies.then(|| body.clone()),
        ..fields
    };
    let sniffed = if operation.has_body() {
        match openai::sniff(&body) {
            Ok(sniffed) => sniffed,
            Err(message) => {
                let response = fail(
                    StatusCode::BAD_REQUEST,
                    ErrorKind::InvalidRequest,
                    &message,
                    Some("invalid_json"),
                );
                return early(
                    client_protocol,
                    with_body(client_fields()),
                    ErrorClass::Client,
                    response,
                );
            }
        }
    } else {
        openai::Sniffed::default()
    };
    // Gemini names the model and the wish for a stream in the path, the others in the body.
    let model = target
        .path_model
        .map(str::to_string)
        .or_else(|| sniffed.model.clone())
        .unwrap_or_default();
    let stream = target.path_stream || (client_protocol != Protocol::Gemini && sniffed.streaming());
    if operation.needs_model() && operation != Operation::GetModel && model.is_empty() {
        let response = fail(
            StatusCode::BAD_REQUEST,
            ErrorKind::InvalidRequest,
            "you must provide a model parameter",
            Some("missing_model"),
        );
        let fields = RequestFields {
            stream,
            ..with_body(client_fields())
        };
        return early(client_protocol, fields, ErrorClass::Client, response);
    }
    let log = proxy.recorder.request(
        arrival,
        client_protocol,
        RequestFields {
            model: model.clone(),
            stream,
            ..with_body(client_fields())
        },
        &config.settings,
    );
    let mut headers = HeaderMap::new();
    upstream::copy_headers(
        &upstream::FORWARDED_REQUEST_HEADERS,
        &parts.headers,
        &mut headers,
    );
    if client_protocol == Protocol::Anthropic {
        upstream::copy_headers(
            &upstream::FORWARDED_ANTHROPIC_HEADERS,
            &parts.headers,
            &mut headers,
        );
    }
    let request = ClientRequest {
        protocol: client_protocol,
        operation,
        pinned: target.pinned.map(str::to_string),
        model,
        stream,
        include_usage: sniffed.include_usage(),
        body,
        headers,
        client: Arc::clone(client_token),
    };
    let clients = proxy.clients_for(config);
    let attempts = Attempts {
        config,
        strategies: &proxy.strategies,
        clients: &clients,
        events: &proxy.events,
        log: &log,
    };
    tracing::debug!(request_id = %log.id(), client = %client_token, protocol = client_protocol.as_str(), operation = operation.as_str(), model = %request.model, "request");
    if operation == Operation::ListModels && request.pinned.is_none() {
        let response = models::list(&attempts, &request).await;
        let class = records::class_of_status(response.status());
        return log.answered(response, class, None);
    }
    if operation == Operation::GetModel
        && request.pinned.is_none()
        && let Some(response) = models::get(&attempts, &request).await
    {
        let class = records::class_of_status(response.status());
        return log.answered(response, class, None);
    }
    match attempts.run(&request).await {
        Ok(committed) => respond(
            committed,
            client_protocol,
            config.settings.idle_timeout,
            log,
        ),
        Err(e) => {
            let class = e.error_class();
            let excerpt = e.excerpt(None);
            log.answered(error_response(e, client_protocol), class, excerpt)
        }
    }
}

/// The client token's name, if the request carries a known one.
fn authenticate<'c>(
    config: &'c RuntimeConfig,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Option<&'c Arc<str>> {
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
    config.client_tokens.get(hash.as_str())
}

static X_API_KEY: header::HeaderName = header::HeaderName::from_static("x-api-key");
static X_GOOG_API_KEY: header::HeaderName = header::HeaderName::from_static("x-goog-api-key");

/// The whole body of a committed answer.
pub async fn collect(committed: Committed) -> Bytes {
    let mut out = committed.first.to_vec();
    if let Some(mut rest) = committed.rest {
        while let Some(Ok(chunk)) = rest.next().await {
            out.extend_from_slice(&chunk);
        }
    }
    Bytes::from(out)
}

/// Streams a committed answer to the client. After this point a failure cannot move to
/// another key: an event stream ends with an error event in the client protocol's shape,
/// any other body is cut, so the client always sees that the answer is incomplete.
fn respond(
    mut committed: Committed,
    client_protocol: Protocol,
    idle_timeout: Duration,
    log: RequestLog,
) -> Response {
    // Recorded when it is dropped: with the whole body below, or when the stream ends.
    let mut answer = Answer::new(
        log,
        committed.attempt.take(),
        committed.status,
        committed.upstream_protocol,
        committed.usage,
    );
    answer.scan(&committed.first);
    records::set_request_id(&mut committed.headers, answer.request_id());
    let mut response = Response::builder().status(committed.status);
    if let Some(headers) = response.headers_mut() {
        *headers = committed.headers;
    }
    let bad_gateway = || {
        protocol::error_response(
            client_protocol,
            StatusCode::BAD_GATEWAY,
            ErrorKind::Upstream,
            "invalid upstream answer",
            None,
        )
    };
    let rest = match committed.rest {
        Some(rest) => rest,
        // A stream that arrived in one chunk still goes through its translator, and its
        // end is checked like any other stream's.
        None if committed.translator.is_some() => futures::stream::empty().boxed(),
        None => {
            return response
                .body(Body::from(committed.first))
                .unwrap_or_else(|_| bad_gateway());
        }
    };
    let mut marker = EndMarker::new(committed.upstream_protocol);
    marker.scan(&committed.first);
    let mut reframer = committed.translator.map(StreamReframer::new);
    let mut failed = false;
    let first = match reframer.as_mut() {
        Some(reframer) => match reframer.push(&committed.first) {
            Ok(bytes) => bytes,
            Err(failure) => {
                // The error event ends the stream: nothing follows it.
                failed = true;
                answer.cut();
                tracing::warn!(reason = %failure, "translated stream failed");
                protocol::stream_error_event(client_protocol, &failure)
            }
        },
        None => committed.first,
    };
    let tail = BodyTail {
        _in_flight: committed.in_flight,
        answer,
        rest: Some(rest),
        pending: None,
        idle_timeout,
        event_stream: committed.event_stream,
        marker,
        reframer,
        client_protocol,
        finished: failed,
    };
    let first = futures::stream::once(async move { Ok::<Bytes, std::io::Error>(first) });
    let stream = first.chain(futures::stream::unfold(tail, BodyTail::next));
    response
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| bad_gateway())
}

/// Watches an upstream stream for the sign that it ended complete: OpenAI's `[DONE]`,
/// Anthropic's `message_stop`, a Gemini event with a `finishReason`. Keeps the tail of
/// the previous chunk, so a marker split between two chunks is still found.
struct EndMarker {
    finder: memchr::memmem::Finder<'static>,
    carry: Vec<u8>,
    seen: bool,
}

impl EndMarker {
    fn new(protocol: Protocol) -> Self {
        let needle: &'static [u8] = match protocol {
            Protocol::OpenAi => b"[DONE]",
            Protocol::Anthropic => b"message_stop",
            Protocol::Gemini => b"finishReason",
        };
        Self {
            finder: memchr::memmem::Finder::new(needle),
            carry: Vec::new(),
            seen: false,
        }
    }

    fn scan(&mut self, chunk: &[u8]) {
        if self.seen {
            return;
        }
        let keep = self.finder.needle().len() - 1;
        // The seam: the carried tail of what came before, then this chunk's first bytes.
        self.carry
            .extend_from_slice(&chunk[..chunk.len().min(keep)]);
        if self.finder.find(&self.carry).is_some() || self.finder.find(chunk).is_some() {
            self.seen = true;
            return;
        }
        if chunk.len() >= keep {
            self.carry.clear();
            self.carry.extend_from_slice(&chunk[chunk.len() - keep..]);
        } else {
            // A chunk shorter than the marker: the carry (which now ends with all of it)
            // keeps its last bytes.
            let excess = self.carry.len().saturating_sub(keep);
            self.carry.drain(..excess);
        }
    }
}

/// Most bytes gathered from chunks that are already there into one write to the client.
const MAX_COALESCED: usize = 64 * 1024;
/// Scheduler turns given to the upstream connection to hand over a chunk it already has.
const YIELDS_PER_CHUNK: u32 = 3;

/// The part of an answer after its first chunk.
struct BodyTail {
    /// Held until the answer ends, so least-in-flight routes see streams as busy.
    _in_flight: Option<InFlight>,
    /// Reads the usage as it passes; records the answer when the tail is dropped.
    answer: Answer,
    rest: Option<BoxStream<'static, Result<Bytes, upstream::BodyError>>>,
    /// What the upstream stream said after the chunks already gathered: its end or an
    /// error, kept for the next call.
    pending: Option<Option<Result<Bytes, upstream::BodyError>>>,
    idle_timeout: Duration,
    event_stream: bool,
    marker: EndMarker,
    reframer: Option<StreamReframer>,
    client_protocol: Protocol,
    finished: bool,
}

impl BodyTail {
    /// The next upstream chunk, plus every chunk already waiting behind it: an upstream
    /// that sends one event per chunk, all at once, reaches the client in one write
    /// instead of one per event. Nothing waits for a chunk that is not there yet.
    async fn next_batch(
        &mut self,
    ) -> Result<Option<Result<Bytes, upstream::BodyError>>, tokio::time::error::Elapsed> {
        let Some(rest) = self.rest.as_mut() else {
            return Ok(None);
        };
        let first = match self.pending.take() {
            Some(pending) => pending,
            None => tokio::time::timeout(self.idle_timeout, rest.next()).await?,
        };
        let Some(Ok(first)) = first else {
            return Ok(first);
        };
        let mut batch: Option<bytes::BytesMut> = None;
        let mut yielded = 0u32;
        while batch.as_ref().map_or(first.len(), bytes::BytesMut::len) < MAX_COALESCED {
            match rest.next().now_or_never() {
                Some(Some(Ok(more))) => {
                    batch
                        .get_or_insert_with(|| bytes::BytesMut::from(&first[..]))
                        .extend_from_slice(&more);
                    yielded = 0;
                }
                Some(other) => {
                    self.pending = Some(other);
                    break;
                }
                // Nothing yet. hyper's client decodes the next chunk only on its
                // connection task's turns, which the poll above asked for: give it a few
                // (measured: a chunk already read from the socket takes up to three), and
                // stop when it had nothing more.
                None if yielded < YIELDS_PER_CHUNK => {
                    tokio::task::yield_now().await;
                    yielded += 1;
                }
                None => break,
            }
        }
        Ok(Some(Ok(batch.map_or(first, bytes::BytesMut::freeze))))
    }

    async fn next(mut self) -> Option<(Result<Bytes, std::io::Error>, Self)> {
        if self.finished {
            return None;
        }
        let failure = match self.next_batch().await {
            Ok(Some(Ok(chunk))) => {
                self.marker.scan(&chunk);
                self.answer.scan(&chunk);
                let Some(reframer) = self.reframer.as_mut() else {
                    return Some((Ok(chunk), self));
                };
                match reframer.push(&chunk) {
                    Ok(bytes) => return Some((Ok(bytes), self)),
                    Err(failure) => failure,
                }
            }
            Ok(None) if !self.event_stream => return None,
            Ok(None) if self.marker.seen => {
                self.finished = true;
                let reframer = self.reframer.as_mut()?;
                match reframer.finish() {
                    Ok(bytes) => return Some((Ok(bytes), self)),
                    Err(failure) => failure,
                }
            }
            Ok(None) => "the upstream ended the stream before it was complete".to_string(),
            Ok(Some(Err(e))) => format!("the upstream stream broke: {e}"),
            Err(_) => format!("the upstream sent nothing for {:?}", self.idle_timeout),
        };
        self.finished = true;
        self.answer.cut();
        tracing::warn!(reason = %failure, "answer cut after its first byte");
        if self.event_stream {
            return Some((
                Ok(protocol::stream_error_event(self.client_protocol, &failure)),
                self,
            ));
        }
        Some((Err(std::io::Error::other(failure)), self))
    }
}

/// A failed request in the client protocol's error shape.
pub fn error_response(e: ProxyError, client_protocol: Protocol) -> Response {
    let fail = |status: StatusCode, kind: ErrorKind, message: &str, code: Option<&str>| {
        protocol::error_response(client_protocol, status, kind, message, code)
    };
    match e {
        ProxyError::Upstream {
            status,
            content_type,
            body,
            protocol: upstream_protocol,
            ..
        } => {
            if upstream_protocol == client_protocol {
                let content_type =
                    content_type.unwrap_or_else(|| HeaderValue::from_static("application/json"));
                return (status, [(header::CONTENT_TYPE, content_type)], body).into_response();
            }
            // Another protocol's error: the same status and message, in the client's shape.
            let message = protocol::error_message(&body).unwrap_or_else(|| {
                format!(
                    "the upstream answered {status}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(512)])
                )
            });
            fail(status, ErrorKind::from_status(status), &message, None)
        }
        ProxyError::Network(detail) => fail(
            StatusCode::BAD_GATEWAY,
            ErrorKind::Upstream,
            &format!("the upstream could not be reached: {detail}"),
            Some("upstream_unreachable"),
        ),
        ProxyError::FirstByteTimeout(after) => fail(
            StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::Timeout,
            &format!("the upstream did not answer within {after:?}"),
            Some("upstream_timeout"),
        ),
        ProxyError::AllCooling { retry_after } => {
            let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            let mut response = fail(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorKind::RateLimited,
                &format!("every key is rate limited; retry in {seconds}s"),
                Some("all_keys_rate_limited"),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            response
        }
        ProxyError::NoCandidate(message) => fail(
            StatusCode::NOT_FOUND,
            ErrorKind::NotFound,
            &message,
            Some("model_not_found"),
        ),
        ProxyError::NoUsableKey(providers) => fail(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Unavailable,
            &format!("no usable key left for {providers}"),
            Some("no_usable_key"),
        ),
        ProxyError::BadRequest(message) => fail(
            StatusCode::BAD_REQUEST,
            ErrorKind::InvalidRequest,
            &message,
            None,
        ),
        ProxyError::Translate(e) if e.is_client_error() => fail(
            StatusCode::BAD_REQUEST,
            ErrorKind::InvalidRequest,
            &e.to_string(),
            Some("untranslatable_request"),
        ),
        ProxyError::Translate(e) => fail(
            StatusCode::BAD_GATEWAY,
            ErrorKind::Upstream,
            &e.to_string(),
            Some("invalid_upstream_answer"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn request_bodies_are_read_whole_within_the_limit() {
        use http_body_util::{Full, StreamBody};
        let frames = |parts: &[&'static [u8]]| {
            let frames: Vec<Result<_, std::convert::Infallible>> = parts
                .iter()
                .map(|p| Ok(hyper::body::Frame::data(Bytes::from_static(p))))
                .collect();
            StreamBody::new(futures::stream::iter(frames))
        };
        // One frame: the very bytes that came, not a copy.
        let one = Bytes::from_static(b"{\"model\":\"m\"}");
        let read = read_body(Full::new(one.clone()), 100).await.unwrap();
        assert_eq!(read.as_ptr(), one.as_ptr());
        // Several frames are joined; empty bodies are empty.
        let read = read_body(frames(&[b"{\"a\"", b":", b"1}"]), 100).await;
        assert_eq!(read.as_deref(), Some(&b"{\"a\":1}"[..]));
        assert_eq!(read_body(frames(&[]), 100).await.as_deref(), Some(&b""[..]));
        // Past the limit, whether the size is known up front or only while reading.
        assert_eq!(
            read_body(Full::new(Bytes::from_static(b"12345")), 4).await,
            None
        );
        assert_eq!(read_body(frames(&[b"12", b"345"]), 4).await, None);
        assert!(read_body(frames(&[b"12", b"34"]), 4).await.is_some());
    }

    #[test]
    fn end_markers_are_found_across_chunk_seams() {
        let mut marker = EndMarker::new(Protocol::OpenAi);
        marker.scan(b"data: {\"x\":1}\n\ndata: [DO");
        assert!(!marker.seen);
        marker.scan(b"NE]\n\n");
        assert!(marker.seen);

        let mut marker = EndMarker::new(Protocol::Anthropic);
        for chunk in [&b"event: message_"[..], b"s", b"top\ndata: {}\n\n"] {
            marker.scan(chunk);
        }
        assert!(marker.seen);

        let mut marker = EndMarker::new(Protocol::Gemini);
        marker.scan(b"data: {\"candidates\":[{\"content\":{}}]}\n\n");
        assert!(!marker.seen, "no finishReason yet");
    }
}
