//! A scriptable mock LLM upstream: real HTTP on loopback that answers OpenAI-compatible
//! requests, so end-to-end tests and benchmarks can point the data plane at it as a
//! provider.
//!
//! Each request is attributed to the provider key it carries (`Authorization: Bearer K`,
//! else `x-goog-api-key`, else `x-api-key`, else `?key=`), and each key can be scripted
//! with a [`Behaviour`]: a normal answer, an error status, a stall, a stream cut short, a
//! slow stream or a sequence of those. Calls are counted per key when they arrive.
//!
//! The hot path takes no lock that serialises requests: per-key state sits behind a
//! read-mostly `RwLock`, counters are atomics, and only scripted keys and request
//! recording (which [`MockOptions::record_requests`] turns off) use a mutex.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use futures::stream;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The same type as `bytes::Bytes` (axum re-exports it).
pub use axum::body::Bytes;

/// Largest request body the mock reads (bigger bodies get a 413).
const MAX_BODY: usize = 64 * 1024 * 1024;
/// Embedding vector length when the request does not ask for `dimensions`.
const DEFAULT_DIMENSIONS: usize = 8;
/// Size of the deterministic `/v1/audio/speech` body.
const SPEECH_BYTES: usize = 4096;
/// Models listed by `GET /v1/models`.
pub const MOCK_MODELS: &[&str] = &[
    "gpt-4o-mini",
    "gpt-4o",
    "gpt-3.5-turbo-instruct",
    "text-embedding-3-small",
    "dall-e-3",
    "tts-1",
];
/// `created` timestamp of the listed models.
const MODELS_CREATED: u64 = 1_700_000_000;
/// A 1x1 PNG, returned as `b64_json` by `/v1/images/generations`.
const PNG_1X1_BASE64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";

/// How requests made with one provider key are answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// 200 with an OpenAI-shaped answer for the endpoint; SSE when the JSON body has
    /// `"stream": true` (chat and legacy completions).
    Ok,
    /// This status (any endpoint, streaming or not), with a `Retry-After` header when
    /// given, and `body` (JSON content type if it parses as JSON, else text) or by
    /// default an OpenAI-shaped error matching the status.
    Status {
        status: u16,
        retry_after: Option<String>,
        body: Option<String>,
    },
    /// Read the request, send nothing for this long, then answer as [`Behaviour::Ok`].
    StallBeforeHeaders(Duration),
    /// Streaming requests: send this many SSE events (the role chunk first, then content
    /// chunks), then abort the connection without `[DONE]` or a clean end of body.
    /// Non-streaming requests: announce the full `content-length`, send half of the
    /// body, then abort.
    StreamCutAfter(usize),
    /// Streaming requests: `chunks` content chunks, each sent after `interval`.
    /// Non-streaming requests: wait `chunks * interval`, then answer as [`Behaviour::Ok`].
    SlowStream { chunks: usize, interval: Duration },
    /// One behaviour per call, in order; the last one repeats (an empty sequence is
    /// [`Behaviour::Ok`], nested sequences are flattened).
    Sequence(Vec<Behaviour>),
}

impl Behaviour {
    /// This status with the default OpenAI-shaped error body and no `Retry-After`.
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

/// One request as the mock received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// The provider key (empty when the request carried none).
    pub key: String,
    pub method: String,
    /// Path with the query string, as sent.
    pub path: String,
    /// Header names are lowercase; values are lossily decoded as UTF-8.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
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

    /// `http://127.0.0.1:PORT/v1`
    pub fn openai_base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// `http://127.0.0.1:PORT/v1beta/openai` (Gemini's OpenAI-compatible base; served
    /// exactly like `/v1`).
    pub fn gemini_openai_base_url(&self) -> String {
        format!("http://{}/v1beta/openai", self.addr)
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

    /// Sets every call count to zero (scripts and recorded requests are kept).
    pub fn reset_counts(&self) {
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

// ---------------------------------------------------------------------------------------
// State

#[derive(Debug)]
struct Inner {
    keys: RwLock<HashMap<String, Arc<KeyState>>>,
    total_calls: AtomicUsize,
    record: bool,
    recorded: Mutex<Vec<RecordedRequest>>,
    next_id: AtomicU64,
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

// ---------------------------------------------------------------------------------------
// Request handling

/// The provider key: `Authorization: Bearer K`, else `x-goog-api-key`, else `x-api-key`,
/// else the `key` query parameter.
fn provider_key<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> Option<&'a str> {
    let non_empty = |s: &'a str| Some(s.trim()).filter(|s| !s.is_empty());
    if let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok())
        && let Some((scheme, key)) = auth.trim().split_once(' ')
        && scheme.eq_ignore_ascii_case("bearer")
        && let Some(key) = non_empty(key)
    {
        return Some(key);
    }
    for name in ["x-goog-api-key", "x-api-key"] {
        if let Some(key) = headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(non_empty)
        {
            return Some(key);
        }
    }
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("key="))
        .and_then(non_empty)
}

async fn handle(State(inner): State<Arc<Inner>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    inner.total_calls.fetch_add(1, Ordering::Relaxed);
    let key = provider_key(&parts.headers, parts.uri.query()).map(str::to_owned);
    let behaviour = key.as_deref().and_then(|k| inner.on_call(k));

    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(body) => body,
        Err(_) => {
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request body too large or unreadable (mock).",
                "invalid_request_error",
                None,
            );
        }
    };
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
    if inner.record {
        let recorded = RecordedRequest {
            key: key.clone().unwrap_or_default(),
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
        };
        lock(&inner.recorded).push(recorded);
    }

    let Some(key) = key else {
        return error_response(
            StatusCode::UNAUTHORIZED,
            "You didn't provide an API key (mock). Send it as `Authorization: Bearer KEY`.",
            "invalid_request_error",
            None,
        );
    };

    let behaviour = match behaviour {
        Some(Behaviour::Status {
            status,
            retry_after,
            body,
        }) => return status_response(status, retry_after.as_deref(), body),
        Some(Behaviour::StallBeforeHeaders(stall)) => {
            tokio::time::sleep(stall).await;
            None
        }
        other => other,
    };

    let mut answer = answer_ok(&inner, &parts.method, parts.uri.path(), &key, &body);
    match (behaviour, answer.stream.take()) {
        (None, Some(stream)) => stream_response(stream.events(Shape::Normal)),
        (Some(Behaviour::StreamCutAfter(n)), Some(stream)) => {
            stream_response(stream.events(Shape::CutAfter(n)))
        }
        (Some(Behaviour::SlowStream { chunks, interval }), Some(stream)) => {
            stream_response(stream.events(Shape::Slow { chunks, interval }))
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

/// What `Behaviour::Ok` would send: a finished response, or the recipe of an SSE stream.
struct Answer {
    response: Response,
    stream: Option<StreamPlan>,
}

impl From<Response> for Answer {
    fn from(response: Response) -> Self {
        Self {
            response,
            stream: None,
        }
    }
}

/// The fields of a request body the mock looks at; everything else is skipped.
#[derive(Deserialize)]
struct Fields {
    model: Option<String>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    n: Option<u32>,
    input: Option<serde_json::Value>,
    encoding_format: Option<String>,
    dimensions: Option<usize>,
    response_format: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

fn answer_ok(inner: &Inner, method: &Method, full_path: &str, key: &str, body: &Bytes) -> Answer {
    // `/v1/X` and Gemini's `/v1beta/openai/X` are served alike; anything else is unknown.
    let path = ["/v1beta/openai", "/v1"]
        .iter()
        .find_map(|prefix| full_path.strip_prefix(prefix))
        .filter(|rest| rest.starts_with('/'))
        .unwrap_or("");
    let not_found = || invalid_url(method, full_path);
    if *method == Method::GET {
        if path == "/models" {
            return bytes_response(StatusCode::OK, "application/json", models_body().clone())
                .into();
        }
        if let Some(id) = path.strip_prefix("/models/").filter(|id| !id.is_empty()) {
            let model =
                json!({"id": id, "object": "model", "created": MODELS_CREATED, "owned_by": "mock"});
            return json_response(StatusCode::OK, &model).into();
        }
        return not_found().into();
    }
    if *method != Method::POST {
        return not_found().into();
    }
    let endpoint = match path {
        "/chat/completions" => Endpoint::Chat,
        "/completions" => Endpoint::Completion,
        "/embeddings" => Endpoint::Embeddings,
        "/images/generations" => Endpoint::Images,
        "/audio/speech" => Endpoint::Speech,
        _ => return not_found().into(),
    };
    let Ok(fields) = serde_json::from_slice::<Fields>(body) else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "We could not parse the JSON body of your request (mock).",
            "invalid_request_error",
            None,
        )
        .into();
    };
    let model = fields.model.as_deref().unwrap_or("mock-model");
    let prompt_tokens = u64::try_from(body.len().div_ceil(4))
        .unwrap_or(u64::MAX)
        .max(1);
    let created = unix_now();
    match endpoint {
        Endpoint::Chat | Endpoint::Completion => {
            let chat = endpoint == Endpoint::Chat;
            let id = format!(
                "{}-mock-{}",
                if chat { "chatcmpl" } else { "cmpl" },
                inner.next_id.fetch_add(1, Ordering::Relaxed)
            );
            let plan = StreamPlan {
                chat,
                id,
                created,
                model: model.to_owned(),
                key_prefix: key_prefix(key).to_owned(),
                include_usage: fields
                    .stream_options
                    .and_then(|o| o.include_usage)
                    .unwrap_or(false),
                prompt_tokens,
            };
            if fields.stream == Some(true) {
                // The response half is unused for streams.
                Answer {
                    response: Response::new(Body::empty()),
                    stream: Some(plan),
                }
            } else {
                let n = fields.n.unwrap_or(1).clamp(1, 128);
                bytes_response(StatusCode::OK, "application/json", plan.full_body(n)).into()
            }
        }
        Endpoint::Embeddings => embeddings(&fields, model, prompt_tokens).into(),
        Endpoint::Images => images(&fields, model, created).into(),
        Endpoint::Speech => {
            let format = fields
                .response_format
                .as_ref()
                .and_then(|v| v.as_str())
                .unwrap_or("mp3");
            let content_type = match format {
                "opus" => "audio/ogg",
                "aac" => "audio/aac",
                "flac" => "audio/flac",
                "wav" => "audio/wav",
                "pcm" => "audio/pcm",
                _ => "audio/mpeg",
            };
            bytes_response(StatusCode::OK, content_type, speech_body().clone()).into()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Chat,
    Completion,
    Embeddings,
    Images,
    Speech,
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

/// The answer text, as stream pieces: "Hello", " from", " mock", " key", " PREFIX...".
fn piece(key_prefix: &str, i: usize) -> String {
    match i % 5 {
        0 => "Hello".to_owned(),
        1 => " from".to_owned(),
        2 => " mock".to_owned(),
        3 => " key".to_owned(),
        _ => format!(" {key_prefix}..."),
    }
}

/// Pieces in an Ok answer.
const OK_PIECES: usize = 5;

// ---------------------------------------------------------------------------------------
// Chat and legacy completions

#[derive(Serialize)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

impl Usage {
    fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

#[derive(Serialize)]
struct ChatCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'static str,
    choices: Vec<ChatChoice<'a>>,
    usage: Usage,
}

#[derive(Serialize)]
struct ChatChoice<'a> {
    index: u32,
    message: ChatMessage<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct ChatMessage<'a> {
    role: &'static str,
    content: &'a str,
    refusal: Option<()>,
}

#[derive(Serialize)]
struct TextCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'static str,
    choices: Vec<TextChoice<'a>>,
    usage: Usage,
}

#[derive(Serialize)]
struct TextChoice<'a> {
    text: &'a str,
    index: u32,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct ChatChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'static str,
    choices: Vec<ChunkChoice<'a>>,
    /// Present (null, or the totals on the last chunk) only with `include_usage`.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<Usage>>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
}

#[derive(Serialize)]
struct TextChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'static str,
    choices: Vec<TextChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<Usage>>,
}

const FINGERPRINT: &str = "fp_mock";

/// Everything needed to render a chat or legacy completion answer, whole or streamed.
struct StreamPlan {
    chat: bool,
    id: String,
    created: u64,
    model: String,
    key_prefix: String,
    include_usage: bool,
    prompt_tokens: u64,
}

enum Shape {
    Normal,
    CutAfter(usize),
    Slow { chunks: usize, interval: Duration },
}

/// An SSE body: events with the delay before each, and whether to abort after the last.
struct Events {
    events: Vec<(Duration, Bytes)>,
    abort: bool,
}

impl StreamPlan {
    fn content(&self) -> String {
        (0..OK_PIECES).map(|i| piece(&self.key_prefix, i)).collect()
    }

    fn full_body(&self, n: u32) -> Bytes {
        let content = self.content();
        let usage = Usage::new(self.prompt_tokens, OK_PIECES as u64 * u64::from(n));
        let body = if self.chat {
            serde_json::to_vec(&ChatCompletion {
                id: &self.id,
                object: "chat.completion",
                created: self.created,
                model: &self.model,
                system_fingerprint: FINGERPRINT,
                choices: (0..n)
                    .map(|index| ChatChoice {
                        index,
                        message: ChatMessage {
                            role: "assistant",
                            content: &content,
                            refusal: None,
                        },
                        logprobs: None,
                        finish_reason: "stop",
                    })
                    .collect(),
                usage,
            })
        } else {
            serde_json::to_vec(&TextCompletion {
                id: &self.id,
                object: "text_completion",
                created: self.created,
                model: &self.model,
                system_fingerprint: FINGERPRINT,
                choices: (0..n)
                    .map(|index| TextChoice {
                        text: &content,
                        index,
                        logprobs: None,
                        finish_reason: Some("stop"),
                    })
                    .collect(),
                usage,
            })
        };
        Bytes::from(body.expect("serialising a completion cannot fail"))
    }

    fn usage_field(&self, usage: Option<Usage>) -> Option<Option<Usage>> {
        self.include_usage.then_some(usage)
    }

    /// One `data: {...}\n\n` event. `content`: `Some` for a content delta, `None` for the
    /// role chunk (chat) or the finish chunk (`finish`).
    fn chunk(&self, content: Option<&str>, finish: bool) -> Bytes {
        let json = if self.chat {
            let delta = match (content, finish) {
                (Some(c), _) => Delta {
                    role: None,
                    content: Some(c),
                },
                (None, false) => Delta {
                    role: Some("assistant"),
                    content: Some(""),
                },
                (None, true) => Delta {
                    role: None,
                    content: None,
                },
            };
            serde_json::to_vec(&ChatChunk {
                id: &self.id,
                object: "chat.completion.chunk",
                created: self.created,
                model: &self.model,
                system_fingerprint: FINGERPRINT,
                choices: vec![ChunkChoice {
                    index: 0,
                    delta,
                    logprobs: None,
                    finish_reason: finish.then_some("stop"),
                }],
                usage: self.usage_field(None),
            })
        } else {
            serde_json::to_vec(&TextChunk {
                id: &self.id,
                object: "text_completion",
                created: self.created,
                model: &self.model,
                system_fingerprint: FINGERPRINT,
                choices: vec![TextChoice {
                    text: content.unwrap_or(""),
                    index: 0,
                    logprobs: None,
                    finish_reason: finish.then_some("stop"),
                }],
                usage: self.usage_field(None),
            })
        };
        sse_event(&json.expect("serialising a chunk cannot fail"))
    }

    /// The last chunk with `include_usage`: no choices, the totals.
    fn usage_chunk(&self, completion_tokens: u64) -> Bytes {
        let usage = Some(Some(Usage::new(self.prompt_tokens, completion_tokens)));
        let json = if self.chat {
            serde_json::to_vec(&ChatChunk {
                id: &self.id,
                object: "chat.completion.chunk",
                created: self.created,
                model: &self.model,
                system_fingerprint: FINGERPRINT,
                choices: Vec::new(),
                usage,
            })
        } else {
            serde_json::to_vec(&TextChunk {
                id: &self.id,
                object: "text_completion",
                created: self.created,
                model: &self.model,
                system_fingerprint: FINGERPRINT,
                choices: Vec::new(),
                usage,
            })
        };
        sse_event(&json.expect("serialising a chunk cannot fail"))
    }

    fn events(&self, shape: Shape) -> Events {
        let (pieces, interval, cut) = match shape {
            Shape::Normal => (OK_PIECES, Duration::ZERO, None),
            Shape::Slow { chunks, interval } => (chunks, interval, None),
            Shape::CutAfter(n) => (n, Duration::ZERO, Some(n)),
        };
        let mut events = Vec::with_capacity(pieces + 4);
        if self.chat {
            events.push((Duration::ZERO, self.chunk(None, false)));
        }
        for i in 0..pieces {
            let text = piece(&self.key_prefix, i);
            events.push((interval, self.chunk(Some(&text), false)));
        }
        if let Some(n) = cut {
            events.truncate(n);
            return Events {
                events,
                abort: true,
            };
        }
        events.push((Duration::ZERO, self.chunk(None, true)));
        if self.include_usage {
            events.push((Duration::ZERO, self.usage_chunk(pieces as u64)));
        }
        events.push((Duration::ZERO, Bytes::from_static(b"data: [DONE]\n\n")));
        Events {
            events,
            abort: false,
        }
    }
}

fn sse_event(json: &[u8]) -> Bytes {
    let mut event = Vec::with_capacity(json.len() + 8);
    event.extend_from_slice(b"data: ");
    event.extend_from_slice(json);
    event.extend_from_slice(b"\n\n");
    Bytes::from(event)
}

fn stream_response(events: Events) -> Response {
    let mut response = Response::new(Body::from_stream(event_stream(events)));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert("cache-control", HeaderValue::from_static("no-cache"));
    response
}

/// The events in order, each after its delay, then (when `abort`) an error, which makes
/// hyper drop the connection without ending the body.
fn event_stream(
    events: Events,
) -> impl futures::Stream<Item = Result<Bytes, io::Error>> + Send + 'static {
    let Events { events, abort } = events;
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
    };
    Response::from_parts(parts, Body::from_stream(event_stream(events)))
}

// ---------------------------------------------------------------------------------------
// Other endpoints

fn embeddings(fields: &Fields, model: &str, prompt_tokens: u64) -> Response {
    let inputs = match &fields.input {
        None | Some(serde_json::Value::Null) => 0,
        Some(serde_json::Value::Array(items)) => match items.first() {
            // An array of token ids is one input.
            Some(serde_json::Value::Number(_)) => 1,
            _ => items.len(),
        },
        Some(_) => 1,
    };
    if inputs == 0 {
        return error_response(
            StatusCode::BAD_REQUEST,
            "'input' is a required property (mock).",
            "invalid_request_error",
            None,
        );
    }
    let dims = fields
        .dimensions
        .unwrap_or(DEFAULT_DIMENSIONS)
        .clamp(1, 4096);
    let base64 = fields.encoding_format.as_deref() == Some("base64");
    let data: Vec<serde_json::Value> = (0..inputs)
        .map(|index| {
            let vector: Vec<f32> = (0..dims).map(|j| embedding_value(index, j)).collect();
            let embedding = if base64 {
                let raw: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
                json!(base64_encode(&raw))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        }),
    )
}

/// Deterministic values in [-0.5, 0.5), exactly representable in f32.
fn embedding_value(index: usize, j: usize) -> f32 {
    let step = (index * 31 + j * 7) % 16;
    #[allow(clippy::cast_precision_loss, reason = "step < 16")]
    let step = step as f32;
    step / 16.0 - 0.5
}

fn images(fields: &Fields, model: &str, created: u64) -> Response {
    let n = fields.n.unwrap_or(1).clamp(1, 10);
    let format = fields.response_format.as_ref().and_then(|v| v.as_str());
    // GPT image models always answer with base64; DALL-E defaults to URLs.
    let b64 = format == Some("b64_json") || (format.is_none() && model.starts_with("gpt-image"));
    let data: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            if b64 {
                json!({"b64_json": PNG_1X1_BASE64})
            } else {
                json!({"url": format!("https://mock.invalid/images/{created}-{i}.png"), "revised_prompt": null})
            }
        })
        .collect();
    json_response(StatusCode::OK, &json!({"created": created, "data": data}))
}

fn models_body() -> &'static Bytes {
    static BODY: OnceLock<Bytes> = OnceLock::new();
    BODY.get_or_init(|| {
        let data: Vec<serde_json::Value> = MOCK_MODELS
            .iter()
            .map(|id| json!({"id": id, "object": "model", "created": MODELS_CREATED, "owned_by": "mock"}))
            .collect();
        Bytes::from(json!({"object": "list", "data": data}).to_string())
    })
}

/// `ID3` followed by a deterministic byte pattern.
fn speech_body() -> &'static Bytes {
    static BODY: OnceLock<Bytes> = OnceLock::new();
    BODY.get_or_init(|| {
        let mut body = b"ID3".to_vec();
        body.extend((3..SPEECH_BYTES).map(|i| (i.wrapping_mul(31).wrapping_add(7) % 251) as u8));
        Bytes::from(body)
    })
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

// ---------------------------------------------------------------------------------------
// Responses

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

/// `{"error": {"message", "type", "param": null, "code"}}` with this status.
fn error_response(status: StatusCode, message: &str, kind: &str, code: Option<&str>) -> Response {
    json_response(
        status,
        &json!({"error": {"message": message, "type": kind, "param": null, "code": code}}),
    )
}

fn invalid_url(method: &Method, path: &str) -> Response {
    let mut message = String::new();
    let _ = write!(message, "Invalid URL ({method} {path}) (mock).");
    error_response(
        StatusCode::NOT_FOUND,
        &message,
        "invalid_request_error",
        None,
    )
}

fn status_response(status: u16, retry_after: Option<&str>, body: Option<String>) -> Response {
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
        None => {
            let (message, kind, code) = default_error(status);
            error_response(status, message, kind, code)
        }
    };
    if let Some(value) = retry_after.and_then(|v| HeaderValue::from_str(v).ok()) {
        response.headers_mut().insert(RETRY_AFTER, value);
    }
    response
}

/// Message, type and code of the error OpenAI sends with this status.
fn default_error(status: StatusCode) -> (&'static str, &'static str, Option<&'static str>) {
    match status.as_u16() {
        400 => (
            "Invalid request (mock).",
            "invalid_request_error",
            Some("invalid_request"),
        ),
        401 => (
            "Incorrect API key provided (mock).",
            "invalid_request_error",
            Some("invalid_api_key"),
        ),
        403 => (
            "You are not allowed to sample from this model (mock).",
            "permission_error",
            Some("permission_denied"),
        ),
        404 => (
            "The model does not exist or you do not have access to it (mock).",
            "invalid_request_error",
            Some("model_not_found"),
        ),
        408 => (
            "Request timed out (mock).",
            "timeout",
            Some("request_timeout"),
        ),
        413 => (
            "Request too large (mock).",
            "invalid_request_error",
            Some("request_too_large"),
        ),
        429 => (
            "Rate limit reached for requests (mock). Please try again later.",
            "requests",
            Some("rate_limit_exceeded"),
        ),
        500 => (
            "The server had an error while processing your request (mock).",
            "server_error",
            None,
        ),
        502 => ("Bad gateway (mock).", "server_error", Some("bad_gateway")),
        503 => (
            "The engine is currently overloaded, please try again later (mock).",
            "server_error",
            Some("service_unavailable"),
        ),
        504 => (
            "Gateway timeout (mock).",
            "server_error",
            Some("gateway_timeout"),
        ),
        s if s >= 500 => ("Upstream error (mock).", "server_error", None),
        _ => ("Request failed (mock).", "invalid_request_error", None),
    }
}

// ---------------------------------------------------------------------------------------
// A raw HTTP/1.1 client for tests

/// A response read by [`http_request`].
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    /// Lowercase names.
    pub headers: Vec<(String, String)>,
    /// The body with chunked framing removed.
    pub body: Vec<u8>,
    /// Whether the body ended properly (final chunk, or all of `content-length`); false
    /// when the connection ended or failed mid-body.
    pub complete: bool,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// The `data:` payloads of an SSE body, in order.
    pub fn sse_data(&self) -> Vec<String> {
        self.text()
            .split("\n\n")
            .filter_map(|event| event.trim().strip_prefix("data:"))
            .map(|data| data.trim().to_owned())
            .collect()
    }
}

/// Sends one HTTP/1.1 request (`Connection: close`, `content-length` added when there is
/// a body) and reads the response to the end of the connection. A connection reset or
/// EOF mid-body gives `complete: false` instead of an error. Panics on connect failure or
/// a response without a header block.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> RawResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    if !body.is_empty() || method.eq_ignore_ascii_case("POST") {
        let _ = write!(head, "content-length: {}\r\n", body.len());
    }
    head.push_str("\r\n");
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    stream
        .write_all(&request)
        .await
        .unwrap_or_else(|e| panic!("write request to {addr}: {e}"));

    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let mut clean_eof = true;
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(_) => {
                clean_eof = false;
                break;
            }
        }
    }
    parse_response(&raw, clean_eof)
}

fn parse_response(raw: &[u8], clean_eof: bool) -> RawResponse {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "no response header block in {:?}",
                String::from_utf8_lossy(raw)
            )
        });
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let rest = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let chunked = find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let length = find("content-length").and_then(|v| v.parse::<usize>().ok());
    let (body, complete) = if chunked {
        dechunk(rest)
    } else if let Some(length) = length {
        (
            rest[..rest.len().min(length)].to_vec(),
            rest.len() >= length,
        )
    } else {
        (rest.to_vec(), clean_eof)
    };
    RawResponse {
        status,
        headers,
        body,
        complete,
    }
}

/// Undoes chunked framing; `complete` only when the final zero-size chunk was seen.
fn dechunk(mut rest: &[u8]) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") else {
            return (body, false);
        };
        let size_line = String::from_utf8_lossy(&rest[..line_end]);
        let size_text = size_line.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            return (body, false);
        };
        rest = &rest[line_end + 2..];
        if size == 0 {
            return (body, true);
        }
        if rest.len() < size {
            body.extend_from_slice(rest);
            return (body, false);
        }
        body.extend_from_slice(&rest[..size]);
        rest = rest[size..].strip_prefix(b"\r\n").unwrap_or(&rest[size..]);
    }
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
        assert_eq!(provider_key(&headers, Some("a=1&key=q")), Some("q"));
        headers.insert("x-api-key", HeaderValue::from_static("anthropic"));
        assert_eq!(provider_key(&headers, Some("key=q")), Some("anthropic"));
        headers.insert("x-goog-api-key", HeaderValue::from_static("gemini"));
        assert_eq!(provider_key(&headers, None), Some("gemini"));
        headers.insert("authorization", HeaderValue::from_static("Bearer sk-1"));
        assert_eq!(provider_key(&headers, None), Some("sk-1"));
        headers.insert("authorization", HeaderValue::from_static("Basic abc"));
        assert_eq!(provider_key(&headers, None), Some("gemini"));
    }

    #[test]
    fn key_prefix_is_six_chars() {
        assert_eq!(key_prefix("sk-test-123"), "sk-tes");
        assert_eq!(key_prefix("abc"), "abc");
    }

    #[test]
    fn dechunk_detects_truncation() {
        assert_eq!(dechunk(b"3\r\nabc\r\n0\r\n\r\n"), (b"abc".to_vec(), true));
        assert_eq!(dechunk(b"3\r\nabc\r\n"), (b"abc".to_vec(), false));
        assert_eq!(dechunk(b"5\r\nab"), (b"ab".to_vec(), false));
    }
}
