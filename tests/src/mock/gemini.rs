//! The Gemini API (`/v1beta/models/...`, also `/v1/models/...`) and Vertex AI Express
//! (`/v1/publishers/google/models/...`, also `/v1beta1/...`), which take the same bodies:
//! `:generateContent`, `:streamGenerateContent` (SSE with `?alt=sse`, else one JSON array
//! sent piecewise, as the real API does), `:countTokens`, `:embedContent`,
//! `:batchEmbedContents`, and `GET` of the model list and of one model.
//!
//! Answers follow [`super::reply`]: tool calls are `functionCall` parts with ids
//! `fc_mock_N` (finish reason `STOP`, as the real API gives), reasoning
//! (`thinkingConfig.includeThoughts` with a budget other than 0) is a `thought: true`
//! part, and the first answer part then carries a `thoughtSignature`. Streams send one
//! event per text piece and every call whole in one event; the last event has
//! `finishReason` and `usageMetadata`. SSE events end with `\r\n\r\n`, like the real
//! API's.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::reply::{Conversation, MOCK_REASONING, MOCK_SIGNATURE, Reply, ToolResult};
use super::{
    Answer, Bytes, Call, DEFAULT_DIMENSIONS, Events, Shape, base64_encode, embedding_value,
    json_response,
};

/// Models listed by `GET /v1beta/models`.
pub const MOCK_GEMINI_MODELS: &[&str] = &[
    "gemini-2.5-flash",
    "gemini-2.5-pro",
    "gemini-2.0-flash",
    "gemini-embedding-001",
];
/// Tool call ids are this and the call's 1-based position.
const CALL_ID_PREFIX: &str = "fc_mock_";
/// Where a model name starts, for the Gemini API and for Vertex AI Express.
const MODEL_PREFIXES: &[&str] = &[
    "/v1beta/models/",
    "/v1/models/",
    "/v1/publishers/google/models/",
    "/v1beta1/publishers/google/models/",
];
/// Where the model list is.
const LIST_PATHS: &[&str] = &["/v1beta/models", "/v1/models"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Generate,
    Stream,
    CountTokens,
    Embed,
    BatchEmbed,
}

impl Action {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "generateContent" => Self::Generate,
            "streamGenerateContent" => Self::Stream,
            "countTokens" => Self::CountTokens,
            "embedContent" => Self::Embed,
            "batchEmbedContents" => Self::BatchEmbed,
            _ => return None,
        })
    }
}

/// `{model}` and `:{action}` of a model path.
pub(super) struct Target<'a> {
    pub model: &'a str,
    /// A known action (`None` for a plain model path or an unknown action).
    action: Option<Action>,
    /// Whether the path had an action at all.
    has_action: bool,
}

impl<'a> Target<'a> {
    pub fn parse(path: &'a str) -> Option<Self> {
        let rest = MODEL_PREFIXES
            .iter()
            .find_map(|prefix| path.strip_prefix(prefix))?;
        // Some clients percent-encode the colon.
        let split = rest.rsplit_once(':').or_else(|| rest.rsplit_once("%3A"));
        let (model, action) = match split {
            Some((model, action)) => (model, Some(action)),
            None => (rest, None),
        };
        Some(Self {
            model,
            action: action.and_then(Action::from_name),
            has_action: action.is_some(),
        })
    }

    /// Whether this names a known action (`:generateContent`, ...).
    pub fn is_action(&self) -> bool {
        self.action.is_some()
    }
}

pub(super) fn answer(call: &Call<'_>) -> Answer {
    let target = Target::parse(call.path);
    if *call.method == Method::GET {
        if LIST_PATHS.contains(&call.path) {
            let models: Vec<Value> = MOCK_GEMINI_MODELS.iter().map(|id| model_json(id)).collect();
            return json_response(StatusCode::OK, &json!({"models": models})).into();
        }
        if let Some(target) = target.filter(|t| !t.has_action && !t.model.is_empty()) {
            return json_response(StatusCode::OK, &model_json(target.model)).into();
        }
        return not_found(call).into();
    }
    let Some((target, action)) = target
        .filter(|_| *call.method == Method::POST)
        .and_then(|t| t.action.map(|a| (t, a)))
    else {
        return not_found(call).into();
    };
    let Ok(request) = serde_json::from_slice::<Value>(call.body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "Invalid JSON payload received. Unexpected token (mock).",
        )
        .into();
    };
    match action {
        Action::Generate | Action::Stream => {
            if field(&request, "contents", "contents")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty)
            {
                return error(
                    StatusCode::BAD_REQUEST,
                    "* GenerateContentRequest.contents: contents is not specified (mock)",
                )
                .into();
            }
            let plan = Plan {
                model: target.model.to_owned(),
                response_id: format!("mock-response-{}", call.next_id()),
                reply: conversation(&request).reply(call.key),
            };
            if action == Action::Generate {
                return json_response(StatusCode::OK, &plan.whole()).into();
            }
            let sse = call.query_param("alt") == Some("sse");
            Answer::stream(move |shape| plan.events(shape, sse))
        }
        Action::CountTokens => {
            // `{"contents": [...]}` or `{"generateContentRequest": {...}}`.
            let counted = field(
                &request,
                "generateContentRequest",
                "generate_content_request",
            )
            .unwrap_or(&request);
            let tokens = conversation(counted).reply(call.key).input_tokens;
            json_response(
                StatusCode::OK,
                &json!({
                    "totalTokens": tokens,
                    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": tokens}],
                }),
            )
            .into()
        }
        Action::Embed => match embedding(&request, 0) {
            Some(embedding) => {
                json_response(StatusCode::OK, &json!({"embedding": embedding})).into()
            }
            None => error(
                StatusCode::BAD_REQUEST,
                "* EmbedContentRequest.content: contents is not specified (mock)",
            )
            .into(),
        },
        Action::BatchEmbed => {
            let requests = field(&request, "requests", "requests")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let embeddings: Option<Vec<Value>> = requests
                .iter()
                .enumerate()
                .map(|(index, request)| embedding(request, index))
                .collect();
            match embeddings.filter(|e| !e.is_empty()) {
                Some(embeddings) => {
                    json_response(StatusCode::OK, &json!({"embeddings": embeddings})).into()
                }
                None => error(
                    StatusCode::BAD_REQUEST,
                    "* BatchEmbedContentsRequest.requests: every request needs content (mock)",
                )
                .into(),
            }
        }
    }
}

/// A field under its JSON (camelCase) or proto (snake_case) name; the real API takes
/// both.
fn field<'v>(value: &'v Value, camel: &str, snake: &str) -> Option<&'v Value> {
    value.get(camel).or_else(|| value.get(snake))
}

/// The text of a `Content`'s parts, joined with spaces (thoughts included).
fn parts_text(content: &Value) -> String {
    parts(content)
        .iter()
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join(" ")
}

fn parts(content: &Value) -> &[Value] {
    content
        .get("parts")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Reads a `GenerateContentRequest`.
fn conversation(request: &Value) -> Conversation {
    let mut conv = Conversation::default();
    if let Some(system) = field(request, "systemInstruction", "system_instruction") {
        let text = parts_text(system);
        if !text.is_empty() {
            conv.system(&text);
        }
    }
    let contents = field(request, "contents", "contents")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for content in contents {
        let role = content
            .get("role")
            .and_then(Value::as_str)
            .unwrap_or("user");
        let mut results = Vec::new();
        for part in parts(content) {
            for (camel, snake) in [("inlineData", "inline_data"), ("fileData", "file_data")] {
                if let Some(blob) = field(part, camel, snake) {
                    let mime = field(blob, "mimeType", "mime_type")
                        .and_then(Value::as_str)
                        .unwrap_or("url");
                    if mime.starts_with("image/") || mime == "url" {
                        conv.image(mime);
                    }
                }
            }
            if let Some(response) = field(part, "functionResponse", "function_response") {
                results.push(ToolResult {
                    id: response
                        .get("id")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    text: response.get("response").unwrap_or(&Value::Null).to_string(),
                });
            }
        }
        let text = parts_text(content);
        conv.read(&text);
        if role == "user" && !text.is_empty() {
            conv.user_text(text);
        }
        conv.message(results);
    }
    let tools = field(request, "tools", "tools")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for tool in tools {
        let declarations = field(tool, "functionDeclarations", "function_declarations")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for declaration in declarations {
            let name = declaration
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("");
            let schema = declaration.get("parameters").or_else(|| {
                field(
                    declaration,
                    "parametersJsonSchema",
                    "parameters_json_schema",
                )
            });
            conv.declare_tool(name, schema);
        }
    }
    let thinking = field(request, "generationConfig", "generation_config")
        .and_then(|c| field(c, "thinkingConfig", "thinking_config"));
    if let Some(thinking) = thinking {
        let include = field(thinking, "includeThoughts", "include_thoughts")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let budget = field(thinking, "thinkingBudget", "thinking_budget").and_then(Value::as_i64);
        if include && budget != Some(0) {
            conv.enable_thinking();
        }
    }
    conv
}

/// One `ContentEmbedding` for an `EmbedContentRequest`, `None` without content.
fn embedding(request: &Value, index: usize) -> Option<Value> {
    let content = request.get("content")?;
    if parts(content).is_empty() {
        return None;
    }
    let dims = field(request, "outputDimensionality", "output_dimensionality")
        .and_then(Value::as_u64)
        .and_then(|d| usize::try_from(d).ok())
        .unwrap_or(DEFAULT_DIMENSIONS)
        .clamp(1, 4096);
    let values: Vec<f32> = (0..dims).map(|j| embedding_value(index, j)).collect();
    Some(json!({"values": values}))
}

fn model_json(id: &str) -> Value {
    if id.contains("embedding") {
        return json!({
            "name": format!("models/{id}"),
            "version": "001",
            "displayName": format!("{id} (mock)"),
            "description": "A mock embedding model.",
            "inputTokenLimit": 2048,
            "outputTokenLimit": 1,
            "supportedGenerationMethods": ["embedContent", "countTextTokens", "countTokens"],
        });
    }
    json!({
        "name": format!("models/{id}"),
        "version": "001",
        "displayName": format!("{id} (mock)"),
        "description": "A mock Gemini model.",
        "inputTokenLimit": 1_048_576,
        "outputTokenLimit": 65_536,
        "supportedGenerationMethods": [
            "generateContent", "countTokens", "createCachedContent", "batchGenerateContent"
        ],
        "temperature": 1.0,
        "topP": 0.95,
        "topK": 64,
        "maxTemperature": 2.0,
        "thinking": true,
    })
}

// === Answers ===

struct Plan {
    model: String,
    response_id: String,
    reply: Reply,
}

fn call_id(index: usize) -> String {
    format!("{CALL_ID_PREFIX}{}", index + 1)
}

fn thought_part() -> Value {
    json!({"text": MOCK_REASONING, "thought": true})
}

fn call_part(index: usize, call: &super::reply::ToolCall) -> Value {
    json!({"functionCall": {"id": call_id(index), "name": call.name, "args": call.args}})
}

impl Plan {
    fn usage(reply: &Reply) -> Value {
        let prompt = reply.input_tokens;
        let candidates = reply.answer_tokens();
        let thoughts = reply.reasoning_tokens();
        let mut usage = json!({
            "promptTokenCount": prompt,
            "candidatesTokenCount": candidates,
            "totalTokenCount": prompt + candidates + thoughts,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
        });
        if thoughts > 0 {
            usage["thoughtsTokenCount"] = json!(thoughts);
        }
        usage
    }

    /// A `GenerateContentResponse` with these parts; the last one of an answer carries
    /// the finish reason and the usage of `last`.
    fn response(&self, parts: Vec<Value>, last: Option<&Reply>) -> Value {
        let mut candidate = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
        if last.is_some() {
            candidate["finishReason"] = json!("STOP");
        }
        let mut response = json!({
            "candidates": [candidate],
            "modelVersion": self.model,
            "responseId": self.response_id,
        });
        if let Some(reply) = last {
            response["usageMetadata"] = Self::usage(reply);
        }
        response
    }

    /// The answer's parts after the thought: the text whole, or every call; the first
    /// carries the thought signature when there was a thought.
    fn answer_parts(reply: &Reply, text: &[String]) -> Vec<Value> {
        let mut parts: Vec<Value> = if reply.calls.is_empty() {
            text.iter().map(|t| json!({"text": t})).collect()
        } else {
            reply
                .calls
                .iter()
                .enumerate()
                .map(|(i, c)| call_part(i, c))
                .collect()
        };
        if reply.thinking
            && let Some(first) = parts.first_mut()
        {
            first["thoughtSignature"] = json!(base64_encode(MOCK_SIGNATURE.as_bytes()));
        }
        parts
    }

    fn whole(&self) -> Value {
        let reply = &self.reply;
        let mut parts = Vec::new();
        if reply.thinking {
            parts.push(thought_part());
        }
        parts.extend(Self::answer_parts(reply, &[reply.text()]));
        self.response(parts, Some(reply))
    }

    /// The thought, then one event per text piece (or one with every call); the last
    /// event has the finish reason and the usage.
    fn events(&self, shape: Shape, sse: bool) -> Events {
        let reply = self.reply.stretched(shape.pieces(self.reply.pieces.len()));
        let interval = shape.interval();
        let mut groups: Vec<(Duration, Vec<Value>)> = Vec::new();
        if reply.thinking {
            groups.push((Duration::ZERO, vec![thought_part()]));
        }
        let answer = Self::answer_parts(&reply, &reply.pieces);
        if reply.calls.is_empty() {
            groups.extend(answer.into_iter().map(|part| (interval, vec![part])));
        } else {
            groups.push((interval, answer));
        }
        let count = groups.len();
        let events = groups
            .into_iter()
            .enumerate()
            .map(|(i, (delay, parts))| {
                let last = (i + 1 == count).then_some(&reply);
                let json = self.response(parts, last).to_string();
                let framed = if sse {
                    format!("data: {json}\r\n\r\n")
                } else if i == 0 {
                    format!("[{json}")
                } else {
                    format!(",\r\n{json}")
                };
                (delay, Bytes::from(framed))
            })
            .chain((!sse).then(|| (Duration::ZERO, Bytes::from_static(b"]"))))
            .collect();
        let content_type = if sse {
            "text/event-stream"
        } else {
            "application/json"
        };
        shape.finish(events, content_type)
    }
}

// === Errors ===

/// `{"error": {"code", "message", "status"}}`, the status named as Google's APIs name it.
pub(super) fn error(status: StatusCode, message: &str) -> Response {
    json_response(
        status,
        &json!({"error": {
            "code": status.as_u16(),
            "message": message,
            "status": status_name(status),
        }}),
    )
}

fn status_name(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        408 | 504 => "DEADLINE_EXCEEDED",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        s if s >= 500 => "INTERNAL",
        _ => "FAILED_PRECONDITION",
    }
}

/// The message Gemini sends with this status.
pub(super) fn default_message(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "Request contains an invalid argument (mock).",
        401 => "Request had invalid authentication credentials (mock).",
        403 => "The caller does not have permission (mock).",
        404 => "Requested entity was not found (mock).",
        429 => "Resource has been exhausted (e.g. check quota) (mock).",
        503 => "The model is overloaded. Please try again later (mock).",
        s if s >= 500 => "An internal error has occurred (mock).",
        _ => "Request failed (mock).",
    }
}

fn not_found(call: &Call<'_>) -> Response {
    error(
        StatusCode::NOT_FOUND,
        &format!(
            "The requested URL {} {} was not found on this server (mock).",
            call.method, call.path
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        let t = Target::parse("/v1beta/models/gemini-2.5-flash:streamGenerateContent").unwrap();
        assert_eq!(t.model, "gemini-2.5-flash");
        assert_eq!(t.action, Some(Action::Stream));
        let t = Target::parse("/v1/publishers/google/models/g%3AcountTokens").unwrap();
        assert_eq!((t.model, t.action), ("g", Some(Action::CountTokens)));
        let t = Target::parse("/v1beta/models/gemini-2.5-pro").unwrap();
        assert!(!t.has_action && !t.is_action());
        assert!(
            !Target::parse("/v1/models/ft:gpt-4o:org::x")
                .unwrap()
                .is_action()
        );
        assert!(Target::parse("/v1/chat/completions").is_none());
    }
}
