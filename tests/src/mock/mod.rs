//! A scriptable mock LLM upstream: real HTTP on loopback that answers the OpenAI API, the
//! Gemini API (and Vertex AI Express) and the Anthropic Messages API natively, so
//! end-to-end tests and benchmarks can point the data plane at it as any provider.
//!
//! Each request is attributed to the provider key it carries (`Authorization: Bearer K`,
//! else `x-goog-api-key`, else `x-api-key`, else `?key=`), and each key can be scripted
//! with a [`Behaviour`]: a normal answer, an error status, a stall, a stream cut short, a
//! slow stream or a sequence of those. Calls are counted per key when they arrive.
//!
//! Which protocol a request speaks follows from its path (and, for `GET /v1/models`,
//! from an `anthropic-version` header); errors come back in that protocol's shape:
//!
//! | protocol | paths |
//! |---|---|
//! | OpenAI | `/v1/...`, `/v1beta/openai/...` |
//! | Gemini | `/v1beta/models/{model}:{action}`, `GET /v1beta/models[/{model}]` |
//! | Vertex AI Express (Gemini bodies) | `/v1/publishers/google/models/{model}:{action}` (also `/v1beta1/...`) |
//! | Anthropic | `/v1/messages`, `/v1/messages/count_tokens`, `GET /v1/models` with `anthropic-version` |
//!
//! Answers are deterministic and tell a test what arrived (`mock/reply.rs` has the rules):
//! the plain answer is "Hello from mock key PREFIX..."; a declared tool is called once
//! (twice when the last user message says "parallel") until the conversation carries a
//! tool result; tool results, images, a system prompt and enabled reasoning are echoed.
//!
//! The hot path takes no lock that serialises requests: per-key state sits behind a
//! read-mostly `RwLock`, counters are atomics, and only scripted keys and request
//! recording (which [`MockOptions::record_requests`] turns off) use a mutex.

mod anthropic;
mod client;
mod gemini;
mod openai;
mod reply;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use futures::stream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The same type as `bytes::Bytes` (axum re-exports it).
pub use axum::body::Bytes;
pub use client::{RawResponse, SseEvent, http_request};

pub use anthropic::MOCK_ANTHROPIC_MODELS;
pub use gemini::MOCK_GEMINI_MODELS;
pub use openai::MOCK_MODELS;
pub use reply::{MOCK_REASONING, MOCK_SIGNATURE};

/// Largest request body the mock reads (bigger bodies get a 413).
const MAX_BODY: usize = 64 * 1024 * 1024;
/// Embedding vector length when the request does not ask for a size.
const DEFAULT_DIMENSIONS: usize = 8;

/// How requests made with one provider key are answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// 200 with the endpoint's answer in its protocol's shape; a stream when the request
    /// asks for one (OpenAI and Anthropic `"stream": true`, Gemini
    /// `:streamGenerateContent`).
    Ok,
    /// This status (any endpoint, streaming or not), with a `Retry-After` header when
    /// given, and `body` (JSON content type if it parses as JSON, else text) or by
    /// default an error matching the status in the request's protocol's shape.
    Status {
        status: u16,
        retry_after: Option<String>,
        body: Option<String>,
    },
    /// Read the request, send nothing for this long, then answer as [`Behaviour::Ok`].
    StallBeforeHeaders(Duration),
    /// Streaming requests: send this many stream events (for OpenAI chat the role chunk
    /// first, then content chunks; for Anthropic `message_start`, `content_block_start`,
    /// `ping`, then deltas), then abort the connection without a clean end of body.
    /// Non-streaming requests: announce the full `content-length`, send half of the
    /// body, then abort.
    StreamCutAfter(usize),
    /// Streaming requests: `chunks` text pieces, each sent after `interval`.
    /// Non-streaming requests: wait `chunks * interval`, then answer as [`Behaviour::Ok`].
    SlowStream { chunks: usize, interval: Duration },
    /// One behaviour per call, in order; the last one repeats (an empty sequence is
    /// [`Behaviour::Ok`], nested sequences are flattened).
    Sequence(Vec<Behaviour>),
}

impl Behaviour {
    /// This status with the default error body and no `Retry-After`.
    pub fn status(status: u16) -> Self {
        Self::Status {
            status,
            retry_after: None,
            body: None,
        }
    }

    /// 429 with `Retry-After: retry_after` and the default rate-limit error body.
    pub fn rate_limited(retry_after: &str) -> Self {
        Self::Status {
            status: 429,
            retry_after: Some(retry_after.to_owned()),
            body: None,
        }
    }

    fn flatten_into(self, out: &mut Vec<Behaviour>) {
        match self {
            Self::Sequence(steps) => steps.into_iter().for_each(|b| b.flatten_into(out)),
            other => out.push(other),
        }
    }
}

/// Where the provider key of a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// `Authorization: Bearer KEY` (OpenAI).
    Bearer,
    /// `x-goog-api-key` (Gemini, Vertex AI Express).
    GoogApiKey,
    /// `x-api-key` (Anthropic).
    XApiKey,
    /// The `key` query parameter: the key travelled in the URL.
    Query,
}

/// One request as the mock received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// The provider key (empty when the request carried none).
    pub key: String,
    /// Where [`RecordedRequest::key`] came from (`None` when there was no key).
    pub key_source: Option<KeySource>,
    pub method: String,
    /// Path with the query string, as sent.
    pub path: String,
    /// Header names are lowercase; values are lossily decoded as UTF-8.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// When it arrived (before its body was read).
    pub received_at: std::time::Instant,
}

impl RecordedRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON (`Value::Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }

    /// The path without the query string.
    pub fn path_only(&self) -> &str {
        self.path
            .split_once('?')
            .map_or(&self.path, |(path, _)| path)
    }

    /// The query string (without `?`), if any.
    pub fn query(&self) -> Option<&str> {
        self.path.split_once('?').map(|(_, query)| query)
    }

    /// The raw (not percent-decoded) value of the first query parameter `name`.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query()?
            .split('&')
            .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
    }

    /// Whether the URL carried a non-empty `key` query parameter, whatever headers the
    /// request also had: a key in a URL ends up in logs.
    pub fn key_in_url(&self) -> bool {
        self.query_param("key")
            .is_some_and(|v| !v.trim().is_empty())
    }
}

/// Where the mock listens and whether it records requests.
#[derive(Debug, Clone)]
pub struct MockOptions {
    /// Defaults to `127.0.0.1:0`.
    pub listen: SocketAddr,
    /// Keep every request for [`MockUpstream::requests`] (defaults to true; benchmarks
    /// turn it off).
    pub record_requests: bool,
}

impl Default for MockOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            record_requests: true,
        }
    }
}

/// A running mock upstream. Dropping it stops accepting connections and shuts the open
/// ones down gracefully (in-flight answers finish in the background).
#[derive(Debug)]
pub struct MockUpstream {
    addr: SocketAddr,
    inner: Arc<Inner>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl MockUpstream {
    /// Starts on `127.0.0.1:0` with request recording on.
    pub async fn start() -> Self {
        Self::start_with(MockOptions::default()).await
    }

    /// Starts with these options; panics if the address cannot be bound.
    pub async fn start_with(options: MockOptions) -> Self {
        let listen = options.listen;
        Self::try_start_with(options)
            .await
            .unwrap_or_else(|e| panic!("mock upstream: cannot listen on {listen}: {e}"))
    }

    /// Starts with these options, returning the bind error if any.
    pub async fn try_start_with(options: MockOptions) -> io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(options.listen).await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner::new(options.record_requests));
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&inner));
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = shutdown_rx.await;
        });
        let task = tokio::spawn(async move {
            if let Err(e) = server.await {
                tracing::warn!("mock upstream stopped: {e}");
            }
        });
        Ok(Self {
            addr,
            inner,
            shutdown: Some(shutdown_tx),
            task: Some(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`: the root, as the official Anthropic and Gemini SDKs take
    /// it (`anthropic.Anthropic(base_url=...)` adds `/v1/messages`; google-genai's
    /// `HttpOptions(base_url=...)` adds `/{api_version}/...`) and as Fulcrum's `gemini`,
    /// `anthropic` and `vertex-express` providers' default base URLs are written.
    pub fn root_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/v1`
    pub fn openai_base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// `http://127.0.0.1:PORT/v1beta/openai` (Gemini's OpenAI-compatible base; served
    /// exactly like `/v1`).
    pub fn gemini_openai_base_url(&self) -> String {
        format!("http://{}/v1beta/openai", self.addr)
    }

    /// `http://127.0.0.1:PORT/v1beta`: the Gemini API's base, followed by
    /// `/models/{model}:generateContent` and the like.
    pub fn gemini_base_url(&self) -> String {
        format!("http://{}/v1beta", self.addr)
    }

    /// `http://127.0.0.1:PORT/v1`: Vertex AI Express's base, followed by
    /// `/publishers/google/models/{model}:generateContent`.
    pub fn vertex_base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// `http://127.0.0.1:PORT/v1`: the Anthropic API's base, followed by `/messages`.
    pub fn anthropic_base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// From now on, answer requests made with `key` this way (a [`Behaviour::Sequence`]
    /// starts again from its first step).
    pub fn script(&self, key: &str, behaviour: Behaviour) {
        let state = self.inner.key_state(key);
        let mut steps = Vec::new();
        behaviour.flatten_into(&mut steps);
        let mut script = lock(&state.script);
        if steps.iter().all(|b| *b == Behaviour::Ok) {
            *script = None;
            state.scripted.store(false, Ordering::Release);
        } else {
            *script = Some(Script { steps, next: 0 });
            state.scripted.store(true, Ordering::Release);
        }
    }

    /// Requests received with `key` (counted on arrival, before answering).
    pub fn calls(&self, key: &str) -> usize {
        read(&self.inner.keys)
            .get(key)
            .map_or(0, |s| s.calls.load(Ordering::Relaxed))
    }

    /// All requests received, including those without a key.
    pub fn total_calls(&self) -> usize {
        self.inner.total_calls.load(Ordering::Relaxed)
    }

    /// Every request received so far, in arrival order (empty when recording is off).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.inner.recorded).clone()
    }

    /// Forgets recorded requests.
    pub fn clear_requests(&self) {
        lock(&self.inner.recorded).clear();
    }

    /// The most requests that were being answered at once since the start (or the last
    /// [`MockUpstream::reset_counts`]).
    pub fn max_in_flight(&self) -> usize {
        self.inner.max_in_flight.load(Ordering::Relaxed)
    }

    /// Sets every call count to zero (scripts and recorded requests are kept).
    pub fn reset_counts(&self) {
        self.inner.max_in_flight.store(0, Ordering::Relaxed);
        for state in read(&self.inner.keys).values() {
            state.calls.store(0, Ordering::Relaxed);
        }
        self.inner.total_calls.store(0, Ordering::Relaxed);
    }

    /// Stops accepting, then waits until every open connection has finished.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        // The task finishes on its own once open connections are done; dropping the
        // handle detaches it.
        drop(self.task.take());
    }
}

// === impl Inner ===

#[derive(Debug)]
struct Inner {
    keys: RwLock<HashMap<String, Arc<KeyState>>>,
    total_calls: AtomicUsize,
    record: bool,
    recorded: Mutex<Vec<RecordedRequest>>,
    next_id: AtomicU64,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// Counts a request as being answered until it is dropped.
struct InFlight<'a>(&'a Inner);

impl<'a> InFlight<'a> {
    fn enter(inner: &'a Inner) -> Self {
        let now = inner.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        inner.max_in_flight.fetch_max(now, Ordering::Relaxed);
        Self(inner)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
struct KeyState {
    calls: AtomicUsize,
    /// Fast-path flag: false means "answer Ok" without touching `script`.
    scripted: AtomicBool,
    script: Mutex<Option<Script>>,
}

#[derive(Debug)]
struct Script {
    steps: Vec<Behaviour>,
    next: usize,
}

impl Inner {
    fn new(record: bool) -> Self {
        Self {
            keys: RwLock::new(HashMap::new()),
            total_calls: AtomicUsize::new(0),
            record,
            recorded: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        }
    }

    fn key_state(&self, key: &str) -> Arc<KeyState> {
        if let Some(state) = read(&self.keys).get(key) {
            return Arc::clone(state);
        }
        let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(keys.entry(key.to_owned()).or_default())
    }

    /// Counts a call for `key` and returns the behaviour for it (`None` means Ok).
    fn on_call(&self, key: &str) -> Option<Behaviour> {
        {
            let keys = read(&self.keys);
            if let Some(state) = keys.get(key) {
                state.calls.fetch_add(1, Ordering::Relaxed);
                return state.next_step();
            }
        }
        let state = self.key_state(key);
        state.calls.fetch_add(1, Ordering::Relaxed);
        state.next_step()
    }
}

// === impl KeyState ===

impl KeyState {
    fn next_step(&self) -> Option<Behaviour> {
        if !self.scripted.load(Ordering::Acquire) {
            return None;
        }
        let mut script = lock(&self.script);
        let script = script.as_mut()?;
        let last = script.steps.len().checked_sub(1)?;
        let step = &script.steps[script.next.min(last)];
        script.next = script.next.saturating_add(1);
        match step {
            Behaviour::Ok => None,
            other => Some(other.clone()),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(rw: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    rw.read().unwrap_or_else(PoisonError::into_inner)
}

// === Request handling ===

/// The provider key and where it came from: `Authorization: Bearer K`, else
/// `x-goog-api-key`, else `x-api-key`, else the `key` query parameter.
fn provider_key<'a>(
    headers: &'a HeaderMap,
    query: Option<&'a str>,
) -> Option<(&'a str, KeySource)> {
    let non_empty = |s: &'a str| Some(s.trim()).filter(|s| !s.is_empty());
    if let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok())
        && let Some((scheme, key)) = auth.trim().split_once(' ')
        && scheme.eq_ignore_ascii_case("bearer")
        && let Some(key) = non_empty(key)
    {
        return Some((key, KeySource::Bearer));
    }
    for (name, source) in [
        ("x-goog-api-key", KeySource::GoogApiKey),
        ("x-api-key", KeySource::XApiKey),
    ] {
        if let Some(key) = headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(non_empty)
        {
            return Some((key, source));
        }
    }
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("key="))
        .and_then(non_empty)
        .map(|key| (key, KeySource::Query))
}

/// The API a request speaks, which decides how it is answered and the shape of errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    OpenAi,
    Gemini,
    Anthropic,
}

impl Protocol {
    fn detect(method: &Method, path: &str, headers: &HeaderMap) -> Self {
        if path.starts_with("/v1beta/openai/") {
            return Self::OpenAi;
        }
        if path.starts_with("/v1beta/")
            || path.starts_with("/v1beta1/")
            || path.starts_with("/v1/publishers/")
        {
            return Self::Gemini;
        }
        // Gemini's v1 API shares `/v1/models/` with OpenAI's model lookup (whose ids may
        // hold colons, as in `ft:gpt-4o-mini:org::id`), so only a known action counts.
        if *method == Method::POST
            && path.starts_with("/v1/models/")
            && gemini::Target::parse(path).is_some_and(|t| t.is_action())
        {
            return Self::Gemini;
        }
        if path == "/v1/messages" || path.starts_with("/v1/messages/") {
            return Self::Anthropic;
        }
        if (path == "/v1/models" || path.starts_with("/v1/models/"))
            && headers.contains_key("anthropic-version")
        {
            return Self::Anthropic;
        }
        Self::OpenAi
    }

    /// The error this protocol sends for `status`, with its usual message.
    fn default_error(self, status: StatusCode) -> Response {
        match self {
            Self::OpenAi => openai::default_error(status),
            Self::Gemini => gemini::error(status, gemini::default_message(status)),
            Self::Anthropic => anthropic::error(status, anthropic::default_message(status)),
        }
    }

    fn error(self, status: StatusCode, message: &str) -> Response {
        match self {
            Self::OpenAi => openai::error_response(status, message, "invalid_request_error", None),
            Self::Gemini => gemini::error(status, message),
            Self::Anthropic => anthropic::error(status, message),
        }
    }

    /// What the real API answers a request without a key.
    fn missing_key(self) -> Response {
        match self {
            Self::OpenAi => openai::error_response(
                StatusCode::UNAUTHORIZED,
                "You didn't provide an API key (mock). Send it as `Authorization: Bearer KEY`.",
                "invalid_request_error",
                None,
            ),
            Self::Gemini => gemini::error(
                StatusCode::FORBIDDEN,
                "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API (mock).",
            ),
            Self::Anthropic => anthropic::error(
                StatusCode::UNAUTHORIZED,
                "x-api-key header is required (mock)",
            ),
        }
    }
}

/// One request, as the protocol modules see it.
struct Call<'a> {
    inner: &'a Inner,
    method: &'a Method,
    path: &'a str,
    query: Option<&'a str>,
    headers: &'a HeaderMap,
    key: &'a str,
    body: &'a Bytes,
}

impl Call<'_> {
    /// A number unique within this mock, for response ids.
    fn next_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The raw value of the first query parameter `name`.
    fn query_param(&self, name: &str) -> Option<&str> {
        self.query?
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
    }
}

async fn handle(State(inner): State<Arc<Inner>>, request: Request) -> Response {
    let received_at = std::time::Instant::now();
    let _in_flight = InFlight::enter(&inner);
    let (parts, body) = request.into_parts();
    inner.total_calls.fetch_add(1, Ordering::Relaxed);
    let protocol = Protocol::detect(&parts.method, parts.uri.path(), &parts.headers);
    let key = provider_key(&parts.headers, parts.uri.query());
    let key_source = key.map(|(_, source)| source);
    let key = key.map(|(key, _)| key.to_owned());
    let behaviour = key.as_deref().and_then(|k| inner.on_call(k));

    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(body) => body,
        Err(_) => {
            return protocol.error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request body too large or unreadable (mock).",
            );
        }
    };
    if inner.record {
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
        let recorded = RecordedRequest {
            key: key.clone().unwrap_or_default(),
            key_source,
            method: parts.method.as_str().to_owned(),
            path: path_and_query,
            headers: parts
                .headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: body.clone(),
            received_at,
        };
        lock(&inner.recorded).push(recorded);
    }

    let Some(key) = key else {
        return protocol.missing_key();
    };

    let behaviour = match behaviour {
        Some(Behaviour::Status {
            status,
            retry_after,
            body,
        }) => return status_response(protocol, status, retry_after.as_deref(), body),
        Some(Behaviour::StallBeforeHeaders(stall)) => {
            tokio::time::sleep(stall).await;
            None
        }
        other => other,
    };

    let call = Call {
        inner: &inner,
        method: &parts.method,
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers: &parts.headers,
        key: &key,
        body: &body,
    };
    let mut answer = match protocol {
        Protocol::OpenAi => openai::answer(&call),
        Protocol::Gemini => gemini::answer(&call),
        Protocol::Anthropic => anthropic::answer(&call),
    };
    match (behaviour, answer.stream.take()) {
        (None, Some(stream)) => stream_response(stream(Shape::Normal)),
        (Some(Behaviour::StreamCutAfter(n)), Some(stream)) => {
            stream_response(stream(Shape::CutAfter(n)))
        }
        (Some(Behaviour::SlowStream { chunks, interval }), Some(stream)) => {
            stream_response(stream(Shape::Slow { chunks, interval }))
        }
        (Some(Behaviour::StreamCutAfter(_)), None) => cut_response(answer.response).await,
        (Some(Behaviour::SlowStream { chunks, interval }), None) => {
            let chunks = u32::try_from(chunks).unwrap_or(u32::MAX);
            tokio::time::sleep(interval.saturating_mul(chunks)).await;
            answer.response
        }
        _ => answer.response,
    }
}

/// Renders a stream in the requested shape.
type StreamFn = Box<dyn FnOnce(Shape) -> Events + Send>;

/// What `Behaviour::Ok` would send: a finished response, or the recipe of a stream.
struct Answer {
    response: Response,
    stream: Option<StreamFn>,
}

impl Answer {
    fn stream(render: impl FnOnce(Shape) -> Events + Send + 'static) -> Self {
        // The response half is unused for streams.
        Self {
            response: Response::new(Body::empty()),
            stream: Some(Box::new(render)),
        }
    }
}

impl From<Response> for Answer {
    fn from(response: Response) -> Self {
        Self {
            response,
            stream: None,
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The first 6 characters of the key.
fn key_prefix(key: &str) -> &str {
    key.char_indices().nth(6).map_or(key, |(i, _)| &key[..i])
}

/// Deterministic values in [-0.5, 0.5), exactly representable in f32.
fn embedding_value(index: usize, j: usize) -> f32 {
    let step = (index * 31 + j * 7) % 16;
    #[allow(clippy::cast_precision_loss, reason = "step < 16")]
    let step = step as f32;
    step / 16.0 - 0.5
}

fn base64_encode(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

// === Streams ===

/// How a stream is played, from the key's [`Behaviour`].
#[derive(Debug, Clone, Copy)]
enum Shape {
    Normal,
    CutAfter(usize),
    Slow { chunks: usize, interval: Duration },
}

impl Shape {
    /// The delay before each text piece.
    fn interval(self) -> Duration {
        match self {
            Self::Slow { interval, .. } => interval,
            _ => Duration::ZERO,
        }
    }

    /// Text pieces to send instead of the answer's own count (cycling through them):
    /// exactly `chunks` when slow, at least `n` when cut after `n` events.
    fn pieces(self, natural: usize) -> usize {
        match self {
            Self::Normal => natural,
            Self::Slow { chunks, .. } => chunks,
            Self::CutAfter(n) => natural.max(n),
        }
    }

    /// Ends `events` as this shape says: cut short (and aborted) or whole.
    fn finish(self, mut events: Vec<(Duration, Bytes)>, content_type: &'static str) -> Events {
        let abort = if let Self::CutAfter(n) = self {
            events.truncate(n);
            true
        } else {
            false
        };
        Events {
            events,
            abort,
            content_type,
        }
    }
}

/// A streamed body: events with the delay before each, and whether to abort after the
/// last.
struct Events {
    events: Vec<(Duration, Bytes)>,
    abort: bool,
    content_type: &'static str,
}

/// `data: {json}\n\n`
fn sse_event(json: &[u8]) -> Bytes {
    let mut event = Vec::with_capacity(json.len() + 8);
    event.extend_from_slice(b"data: ");
    event.extend_from_slice(json);
    event.extend_from_slice(b"\n\n");
    Bytes::from(event)
}

fn stream_response(events: Events) -> Response {
    let content_type = events.content_type;
    let mut response = Response::new(Body::from_stream(event_stream(events)));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert("cache-control", HeaderValue::from_static("no-cache"));
    response
}

/// The events in order, each after its delay, then (when `abort`) an error, which makes
/// hyper drop the connection without ending the body.
fn event_stream(
    events: Events,
) -> impl futures::Stream<Item = Result<Bytes, io::Error>> + Send + 'static {
    let Events { events, abort, .. } = events;
    stream::unfold(
        (events.into_iter(), abort),
        |(mut events, abort)| async move {
            match events.next() {
                Some((delay, event)) => {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    Some((Ok(event), (events, abort)))
                }
                None if abort => {
                    // Let hyper flush what was sent before the connection goes down.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Some((Err(cut_error()), (events, false)))
                }
                None => None,
            }
        },
    )
}

fn cut_error() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "mock upstream: cut")
}

/// `response` with its full `content-length` announced but only half of the body sent
/// before the connection is aborted.
async fn cut_response(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let half = body.slice(..body.len() / 2);
    parts
        .headers
        .insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    let events = Events {
        events: vec![(Duration::ZERO, half)],
        abort: true,
        content_type: "",
    };
    Response::from_parts(parts, Body::from_stream(event_stream(events)))
}

// === Responses ===

fn bytes_response(status: StatusCode, content_type: &'static str, body: Bytes) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response {
    bytes_response(status, "application/json", Bytes::from(value.to_string()))
}

/// A scripted status: the given body as is, else the protocol's error for the status.
fn status_response(
    protocol: Protocol,
    status: u16,
    retry_after: Option<&str>,
    body: Option<String>,
) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = match body {
        Some(body) => {
            let content_type = if serde_json::from_str::<serde::de::IgnoredAny>(&body).is_ok() {
                "application/json"
            } else {
                "text/plain; charset=utf-8"
            };
            bytes_response(status, content_type, Bytes::from(body))
        }
        None => protocol.default_error(status),
    };
    if let Some(value) = retry_after.and_then(|v| HeaderValue::from_str(v).ok()) {
        response.headers_mut().insert(RETRY_AFTER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_known_vectors() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn keys_come_from_headers_then_query() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            provider_key(&headers, Some("a=1&key=q")),
            Some(("q", KeySource::Query))
        );
        headers.insert("x-api-key", HeaderValue::from_static("anthropic"));
        assert_eq!(
            provider_key(&headers, Some("key=q")),
            Some(("anthropic", KeySource::XApiKey))
        );
        headers.insert("x-goog-api-key", HeaderValue::from_static("gemini"));
        assert_eq!(
            provider_key(&headers, None),
            Some(("gemini", KeySource::GoogApiKey))
        );
        headers.insert("authorization", HeaderValue::from_static("Bearer sk-1"));
        assert_eq!(
            provider_key(&headers, None),
            Some(("sk-1", KeySource::Bearer))
        );
        headers.insert("authorization", HeaderValue::from_static("Basic abc"));
        assert_eq!(
            provider_key(&headers, None),
            Some(("gemini", KeySource::GoogApiKey))
        );
    }

    #[test]
    fn key_prefix_is_six_chars() {
        assert_eq!(key_prefix("sk-test-123"), "sk-tes");
        assert_eq!(key_prefix("abc"), "abc");
    }

    #[test]
    fn protocol_follows_the_path() {
        let none = HeaderMap::new();
        let mut anthropic = HeaderMap::new();
        anthropic.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
        let post = Method::POST;
        let get = Method::GET;
        for (method, path, headers, want) in [
            (&post, "/v1/chat/completions", &none, Protocol::OpenAi),
            (
                &post,
                "/v1beta/openai/chat/completions",
                &none,
                Protocol::OpenAi,
            ),
            (&get, "/v1/models", &none, Protocol::OpenAi),
            (
                &get,
                "/v1/models/ft:gpt-4o-mini:org::id",
                &none,
                Protocol::OpenAi,
            ),
            (&get, "/v1/models", &anthropic, Protocol::Anthropic),
            (&post, "/v1/messages", &none, Protocol::Anthropic),
            (
                &post,
                "/v1/messages/count_tokens",
                &none,
                Protocol::Anthropic,
            ),
            (
                &post,
                "/v1beta/models/g:generateContent",
                &none,
                Protocol::Gemini,
            ),
            (&get, "/v1beta/models", &none, Protocol::Gemini),
            (
                &post,
                "/v1/models/g:generateContent",
                &none,
                Protocol::Gemini,
            ),
            (
                &post,
                "/v1/publishers/google/models/g:streamGenerateContent",
                &none,
                Protocol::Gemini,
            ),
        ] {
            assert_eq!(Protocol::detect(method, path, headers), want, "{path}");
        }
    }

    #[test]
    fn recorded_request_query_helpers() {
        let request = RecordedRequest {
            key: "k".into(),
            key_source: Some(KeySource::Query),
            method: "POST".into(),
            path: "/v1beta/models/g:streamGenerateContent?alt=sse&key=k".into(),
            headers: Vec::new(),
            body: Bytes::new(),
            received_at: std::time::Instant::now(),
        };
        assert_eq!(
            request.path_only(),
            "/v1beta/models/g:streamGenerateContent"
        );
        assert_eq!(request.query(), Some("alt=sse&key=k"));
        assert_eq!(request.query_param("alt"), Some("sse"));
        assert!(request.key_in_url());
        let request = RecordedRequest {
            path: "/v1/messages".into(),
            ..request
        };
        assert!(!request.key_in_url());
        assert_eq!(request.query(), None);
    }
}
