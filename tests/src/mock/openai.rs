//! The OpenAI API (also served under Gemini's OpenAI-compatible `/v1beta/openai`): chat
//! and legacy completions (whole or SSE), embeddings, images, speech and the model list.
//!
//! Chat answers follow [`super::reply`]: tool calls come as `tool_calls` with ids
//! `call_mock_N` and finish reason `tool_calls` (streamed as an id-and-name delta, then
//! the arguments in two fragments); reasoning (`reasoning_effort` set, and not `none`)
//! comes as `reasoning_content`.

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::reply::{
    Conversation, MOCK_REASONING, Reply, ToolResult, data_url_mime, plain_text, split_pieces,
    text_of,
};
use super::{
    Answer, Bytes, Call, DEFAULT_DIMENSIONS, Events, Shape, base64_encode, bytes_response,
    embedding_value, json_response, sse_event, unix_now,
};

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
/// Size of the deterministic `/v1/audio/speech` body.
const SPEECH_BYTES: usize = 4096;
/// A 1x1 PNG, returned as `b64_json` by `/v1/images/generations`.
const PNG_1X1_BASE64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";
const FINGERPRINT: &str = "fp_mock";
/// Tool call ids are this and the call's 1-based position.
const CALL_ID_PREFIX: &str = "call_mock_";

/// The fields of a request body the mock looks at; everything else is skipped.
#[derive(Deserialize)]
struct Fields {
    model: Option<String>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    n: Option<u32>,
    messages: Option<Vec<Value>>,
    tools: Option<Vec<Value>>,
    reasoning_effort: Option<String>,
    prompt: Option<Value>,
    input: Option<Value>,
    encoding_format: Option<String>,
    dimensions: Option<usize>,
    response_format: Option<Value>,
}

#[derive(Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Chat,
    Completion,
    Embeddings,
    Images,
    Speech,
}

pub(super) fn answer(call: &Call<'_>) -> Answer {
    // `/v1/X` and Gemini's `/v1beta/openai/X` are served alike; anything else is unknown.
    let path = ["/v1beta/openai", "/v1"]
        .iter()
        .find_map(|prefix| call.path.strip_prefix(prefix))
        .filter(|rest| rest.starts_with('/'))
        .unwrap_or("");
    let not_found = || invalid_url(call.method, call.path);
    if *call.method == Method::GET {
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
    if *call.method != Method::POST {
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
    let Ok(fields) = serde_json::from_slice::<Fields>(call.body) else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "We could not parse the JSON body of your request (mock).",
            "invalid_request_error",
            None,
        )
        .into();
    };
    let model = fields.model.as_deref().unwrap_or("mock-model");
    let created = unix_now();
    match endpoint {
        Endpoint::Chat | Endpoint::Completion => {
            let chat = endpoint == Endpoint::Chat;
            let reply = if chat {
                conversation(&fields).reply(call.key)
            } else {
                let mut conv = Conversation::default();
                match &fields.prompt {
                    Some(Value::String(prompt)) => conv.read(prompt),
                    Some(Value::Array(prompts)) => {
                        prompts
                            .iter()
                            .filter_map(Value::as_str)
                            .for_each(|p| conv.read(p));
                    }
                    _ => {}
                }
                let mut reply = conv.reply(call.key);
                // Legacy completions have no system prompt, tools or images: plain text.
                reply.pieces = split_pieces(&plain_text(call.key));
                reply
            };
            let plan = Plan {
                chat,
                id: format!(
                    "{}-mock-{}",
                    if chat { "chatcmpl" } else { "cmpl" },
                    call.next_id()
                ),
                created,
                model: model.to_owned(),
                include_usage: fields
                    .stream_options
                    .and_then(|o| o.include_usage)
                    .unwrap_or(false),
                reply,
            };
            if fields.stream == Some(true) {
                Answer::stream(move |shape| plan.events(shape))
            } else {
                let n = fields.n.unwrap_or(1).clamp(1, 128);
                bytes_response(StatusCode::OK, "application/json", plan.full_body(n)).into()
            }
        }
        Endpoint::Embeddings => {
            let prompt_tokens = u64::try_from(call.body.len().div_ceil(4))
                .unwrap_or(u64::MAX)
                .max(1);
            embeddings(&fields, model, prompt_tokens).into()
        }
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

/// Reads a chat request's messages, tools and reasoning effort.
fn conversation(fields: &Fields) -> Conversation {
    let mut conv = Conversation::default();
    for message in fields.messages.iter().flatten() {
        let role = message.get("role").and_then(Value::as_str).unwrap_or("");
        let content = message.get("content").unwrap_or(&Value::Null);
        match role {
            "system" | "developer" => {
                conv.system(&text_of(content));
                conv.message(Vec::new());
            }
            "tool" | "function" => {
                let id = message
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                conv.message(vec![ToolResult {
                    id,
                    text: text_of(content),
                }]);
            }
            "user" => {
                for part in content.as_array().into_iter().flatten() {
                    if part.get("type").and_then(Value::as_str) == Some("image_url") {
                        let image = part.get("image_url");
                        // `{"url": ...}`, or a bare string from lenient clients.
                        let url = image
                            .and_then(|i| i.get("url"))
                            .or(image)
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        conv.image(&data_url_mime(url));
                    }
                }
                let text = text_of(content);
                conv.read(&text);
                conv.user_text(text);
                conv.message(Vec::new());
            }
            _ => {
                conv.read(&text_of(content));
                conv.message(Vec::new());
            }
        }
    }
    for tool in fields.tools.iter().flatten() {
        if let Some(function) = tool.get("function") {
            let name = function.get("name").and_then(Value::as_str).unwrap_or("");
            conv.declare_tool(name, function.get("parameters"));
        }
    }
    if fields
        .reasoning_effort
        .as_deref()
        .is_some_and(|effort| effort != "none")
    {
        conv.enable_thinking();
    }
    conv
}

// === Chat and legacy completions ===

#[derive(Serialize)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    completion_tokens_details: Option<CompletionTokensDetails>,
}

#[derive(Serialize)]
struct CompletionTokensDetails {
    reasoning_tokens: u64,
}

impl Usage {
    /// `n` choices of `reply`.
    fn new(reply: &Reply, n: u32) -> Self {
        let completion_tokens = reply.output_tokens() * u64::from(n);
        let reasoning_tokens = reply.reasoning_tokens() * u64::from(n);
        Self {
            prompt_tokens: reply.input_tokens,
            completion_tokens,
            total_tokens: reply.input_tokens + completion_tokens,
            completion_tokens_details: (reasoning_tokens > 0)
                .then_some(CompletionTokensDetails { reasoning_tokens }),
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
    content: Option<&'a str>,
    refusal: Option<()>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCallOut<'a>>,
}

#[derive(Serialize)]
struct ToolCallOut<'a> {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionOut<'a>,
}

#[derive(Serialize)]
struct FunctionOut<'a> {
    name: &'a str,
    arguments: String,
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

#[derive(Serialize, Default)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallDelta<'a>; 1]>,
}

#[derive(Serialize)]
struct ToolCallDelta<'a> {
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionDelta<'a>,
}

#[derive(Serialize)]
struct FunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
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

/// Everything needed to render a chat or legacy completion answer, whole or streamed.
struct Plan {
    chat: bool,
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    reply: Reply,
}

fn call_id(index: usize) -> String {
    format!("{CALL_ID_PREFIX}{}", index + 1)
}

impl Plan {
    fn finish_reason(reply: &Reply) -> &'static str {
        if reply.calls.is_empty() {
            "stop"
        } else {
            "tool_calls"
        }
    }

    fn full_body(&self, n: u32) -> Bytes {
        let reply = &self.reply;
        let content = reply.text();
        let usage = Usage::new(reply, n);
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
                            content: reply.calls.is_empty().then_some(content.as_str()),
                            refusal: None,
                            reasoning_content: reply.thinking.then_some(MOCK_REASONING),
                            tool_calls: reply
                                .calls
                                .iter()
                                .enumerate()
                                .map(|(i, call)| ToolCallOut {
                                    id: call_id(i),
                                    kind: "function",
                                    function: FunctionOut {
                                        name: &call.name,
                                        arguments: call.args_json(),
                                    },
                                })
                                .collect(),
                        },
                        logprobs: None,
                        finish_reason: Self::finish_reason(reply),
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

    /// One `data: {...}\n\n` chat chunk with this delta and finish reason.
    fn chat_chunk(&self, delta: Delta<'_>, finish_reason: Option<&'static str>) -> Bytes {
        let json = serde_json::to_vec(&ChatChunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            system_fingerprint: FINGERPRINT,
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                logprobs: None,
                finish_reason,
            }],
            usage: self.usage_field(None),
        });
        sse_event(&json.expect("serialising a chunk cannot fail"))
    }

    /// One legacy completion chunk.
    fn text_chunk(&self, text: &str, finish_reason: Option<&'static str>) -> Bytes {
        let json = serde_json::to_vec(&TextChunk {
            id: &self.id,
            object: "text_completion",
            created: self.created,
            model: &self.model,
            system_fingerprint: FINGERPRINT,
            choices: vec![TextChoice {
                text,
                index: 0,
                logprobs: None,
                finish_reason,
            }],
            usage: self.usage_field(None),
        });
        sse_event(&json.expect("serialising a chunk cannot fail"))
    }

    /// The last chunk with `include_usage`: no choices, the totals.
    fn usage_chunk(&self, reply: &Reply) -> Bytes {
        let usage = Some(Some(Usage::new(reply, 1)));
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

    /// Chat: the role chunk, the reasoning, one chunk per text piece or per tool call
    /// (id and name, then two argument fragments), the finish chunk, the usage chunk
    /// (with `include_usage`), `[DONE]`. Legacy: the same without role and tools.
    fn events(&self, shape: Shape) -> Events {
        let reply = self.reply.stretched(shape.pieces(self.reply.pieces.len()));
        let interval = shape.interval();
        let mut events: Vec<(Duration, Bytes)> = Vec::with_capacity(reply.pieces.len() + 6);
        if self.chat {
            let role = Delta {
                role: Some("assistant"),
                content: Some(""),
                ..Delta::default()
            };
            events.push((Duration::ZERO, self.chat_chunk(role, None)));
            if reply.thinking {
                let reasoning = Delta {
                    reasoning_content: Some(MOCK_REASONING),
                    ..Delta::default()
                };
                events.push((Duration::ZERO, self.chat_chunk(reasoning, None)));
            }
            for piece in &reply.pieces {
                let delta = Delta {
                    content: Some(piece),
                    ..Delta::default()
                };
                events.push((interval, self.chat_chunk(delta, None)));
            }
            for (index, call) in reply.calls.iter().enumerate() {
                let head = ToolCallDelta {
                    index,
                    id: Some(call_id(index)),
                    kind: Some("function"),
                    function: FunctionDelta {
                        name: Some(&call.name),
                        arguments: "",
                    },
                };
                let head = Delta {
                    tool_calls: Some([head]),
                    ..Delta::default()
                };
                events.push((interval, self.chat_chunk(head, None)));
                let (first, second) = call.args_fragments();
                for fragment in [&first, &second] {
                    let delta = Delta {
                        tool_calls: Some([ToolCallDelta {
                            index,
                            id: None,
                            kind: None,
                            function: FunctionDelta {
                                name: None,
                                arguments: fragment,
                            },
                        }]),
                        ..Delta::default()
                    };
                    events.push((interval, self.chat_chunk(delta, None)));
                }
            }
            let finish = Some(Self::finish_reason(&reply));
            events.push((Duration::ZERO, self.chat_chunk(Delta::default(), finish)));
        } else {
            for piece in &reply.pieces {
                events.push((interval, self.text_chunk(piece, None)));
            }
            events.push((Duration::ZERO, self.text_chunk("", Some("stop"))));
        }
        if self.include_usage {
            events.push((Duration::ZERO, self.usage_chunk(&reply)));
        }
        events.push((Duration::ZERO, Bytes::from_static(b"data: [DONE]\n\n")));
        shape.finish(events, "text/event-stream")
    }
}

// === Other endpoints ===

fn embeddings(fields: &Fields, model: &str, prompt_tokens: u64) -> Response {
    let inputs = match &fields.input {
        None | Some(Value::Null) => 0,
        Some(Value::Array(items)) => match items.first() {
            // An array of token ids is one input.
            Some(Value::Number(_)) => 1,
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
    let data: Vec<Value> = (0..inputs)
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

fn images(fields: &Fields, model: &str, created: u64) -> Response {
    let n = fields.n.unwrap_or(1).clamp(1, 10);
    let format = fields.response_format.as_ref().and_then(|v| v.as_str());
    // GPT image models always answer with base64; DALL-E defaults to URLs.
    let b64 = format == Some("b64_json") || (format.is_none() && model.starts_with("gpt-image"));
    let data: Vec<Value> = (0..n)
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
        let data: Vec<Value> = MOCK_MODELS
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

// === Errors ===

/// `{"error": {"message", "type", "param": null, "code"}}` with this status.
pub(super) fn error_response(
    status: StatusCode,
    message: &str,
    kind: &str,
    code: Option<&str>,
) -> Response {
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

/// The error OpenAI sends with this status.
pub(super) fn default_error(status: StatusCode) -> Response {
    let (message, kind, code) = match status.as_u16() {
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
    };
    error_response(status, message, kind, code)
}
