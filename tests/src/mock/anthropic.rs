//! The Anthropic Messages API: `POST /v1/messages` (whole or streamed),
//! `POST /v1/messages/count_tokens`, and `GET /v1/models[/{id}]` for requests with an
//! `anthropic-version` header (without it, `/v1/models` is OpenAI's). Like the real API,
//! every request needs `anthropic-version`, and `/v1/messages` needs `model`, `messages`
//! and `max_tokens`.
//!
//! Answers follow [`super::reply`]: tool calls are `tool_use` blocks with ids
//! `toolu_mock_N` and stop reason `tool_use` (streamed as `input_json_delta`s of two
//! fragments); reasoning (`thinking.type` `enabled`) is a `thinking` block signed
//! [`MOCK_SIGNATURE`]. A stream is `message_start`, then per block
//! `content_block_start` (the first followed by `ping`), deltas and
//! `content_block_stop`, then `message_delta` and `message_stop`, each with its
//! `event:` line.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::reply::{Conversation, MOCK_REASONING, MOCK_SIGNATURE, Reply, ToolResult, text_of};
use super::{Answer, Bytes, Call, Events, Shape, json_response};

/// Models listed by `GET /v1/models` with `anthropic-version`.
pub const MOCK_ANTHROPIC_MODELS: &[&str] = &[
    "claude-sonnet-4-6",
    "claude-opus-4-5-20251101",
    "claude-haiku-4-5-20251001",
];
/// `created_at` of the listed models.
const MODELS_CREATED_AT: &str = "2025-01-01T00:00:00Z";
/// Tool call ids are this and the call's 1-based position.
const CALL_ID_PREFIX: &str = "toolu_mock_";

pub(super) fn answer(call: &Call<'_>) -> Answer {
    if !call.headers.contains_key("anthropic-version") {
        return error(
            StatusCode::BAD_REQUEST,
            "anthropic-version: header is required (mock)",
        )
        .into();
    }
    if *call.method == Method::GET {
        if call.path == "/v1/models" {
            let data: Vec<Value> = MOCK_ANTHROPIC_MODELS
                .iter()
                .map(|id| model_json(id))
                .collect();
            let list = json!({
                "data": data,
                "has_more": false,
                "first_id": MOCK_ANTHROPIC_MODELS.first(),
                "last_id": MOCK_ANTHROPIC_MODELS.last(),
            });
            return json_response(StatusCode::OK, &list).into();
        }
        if let Some(id) = call
            .path
            .strip_prefix("/v1/models/")
            .filter(|id| !id.is_empty())
        {
            return json_response(StatusCode::OK, &model_json(id)).into();
        }
        return not_found(call).into();
    }
    let count = match (call.method, call.path) {
        (&Method::POST, "/v1/messages") => false,
        (&Method::POST, "/v1/messages/count_tokens") => true,
        _ => return not_found(call).into(),
    };
    let Ok(request) = serde_json::from_slice::<Value>(call.body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "There was an issue with your request body: not valid JSON (mock)",
        )
        .into();
    };
    let required: &[&str] = if count {
        &["model", "messages"]
    } else {
        &["model", "messages", "max_tokens"]
    };
    if let Some(missing) = required.iter().find(|f| request.get(**f).is_none()) {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("{missing}: Field required (mock)"),
        )
        .into();
    }
    let reply = conversation(&request).reply(call.key);
    if count {
        return json_response(StatusCode::OK, &json!({"input_tokens": reply.input_tokens})).into();
    }
    let plan = Plan {
        id: format!("msg_mock_{}", call.next_id()),
        model: request
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or("claude-mock")
            .to_owned(),
        reply,
    };
    if request.get("stream").and_then(Value::as_bool) == Some(true) {
        Answer::stream(move |shape| plan.events(shape))
    } else {
        json_response(StatusCode::OK, &plan.whole()).into()
    }
}

/// An image block's MIME type: its base64 source's `media_type`, `url` for a URL.
fn image_mime(block: &Value) -> String {
    let source = block.get("source").unwrap_or(&Value::Null);
    match source.get("type").and_then(Value::as_str) {
        Some("base64") => source
            .get("media_type")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_owned(),
        _ => "url".to_owned(),
    }
}

/// Reads a Messages request.
fn conversation(request: &Value) -> Conversation {
    let mut conv = Conversation::default();
    if let Some(system) = request.get("system") {
        let text = text_of(system);
        if !text.is_empty() {
            conv.system(&text);
        }
    }
    let messages = request
        .get("messages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for message in messages {
        let role = message.get("role").and_then(Value::as_str).unwrap_or("");
        let content = message.get("content").unwrap_or(&Value::Null);
        let mut results = Vec::new();
        for block in content.as_array().into_iter().flatten() {
            match block.get("type").and_then(Value::as_str) {
                Some("image") => conv.image(&image_mime(block)),
                Some("tool_result") => {
                    let inner = block.get("content").unwrap_or(&Value::Null);
                    for nested in inner.as_array().into_iter().flatten() {
                        if nested.get("type").and_then(Value::as_str) == Some("image") {
                            conv.image(&image_mime(nested));
                        }
                    }
                    results.push(ToolResult {
                        id: block
                            .get("tool_use_id")
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                        text: text_of(inner),
                    });
                }
                _ => {}
            }
        }
        // Only text blocks (and a plain string) have a top-level `text`.
        let text = text_of(content);
        conv.read(&text);
        if role == "user" && !text.is_empty() {
            conv.user_text(text);
        }
        conv.message(results);
    }
    for tool in request
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = tool.get("name").and_then(Value::as_str).unwrap_or("");
        conv.declare_tool(name, tool.get("input_schema"));
    }
    let thinking = request
        .get("thinking")
        .and_then(|t| t.get("type"))
        .and_then(Value::as_str);
    if matches!(thinking, Some("enabled" | "adaptive")) {
        conv.enable_thinking();
    }
    conv
}

fn model_json(id: &str) -> Value {
    json!({
        "type": "model",
        "id": id,
        "display_name": format!("{id} (mock)"),
        "created_at": MODELS_CREATED_AT,
    })
}

// === Answers ===

struct Plan {
    id: String,
    model: String,
    reply: Reply,
}

fn call_id(index: usize) -> String {
    format!("{CALL_ID_PREFIX}{}", index + 1)
}

/// `event: NAME\ndata: {json}\n\n`
fn event(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

impl Plan {
    fn stop_reason(reply: &Reply) -> &'static str {
        if reply.calls.is_empty() {
            "end_turn"
        } else {
            "tool_use"
        }
    }

    fn usage(reply: &Reply, output_tokens: u64) -> Value {
        json!({
            "input_tokens": reply.input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": output_tokens,
            "service_tier": "standard",
        })
    }

    /// The message, with `content` and the stop reason and usage given.
    fn message(
        &self,
        content: Vec<Value>,
        stop_reason: Option<&str>,
        reply: &Reply,
        output_tokens: u64,
    ) -> Value {
        json!({
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": null,
            "usage": Self::usage(reply, output_tokens),
        })
    }

    fn whole(&self) -> Value {
        let reply = &self.reply;
        let mut content = Vec::new();
        if reply.thinking {
            content.push(json!({
                "type": "thinking", "thinking": MOCK_REASONING, "signature": MOCK_SIGNATURE
            }));
        }
        if reply.calls.is_empty() {
            content.push(json!({"type": "text", "text": reply.text()}));
        }
        for (i, call) in reply.calls.iter().enumerate() {
            content.push(json!({
                "type": "tool_use", "id": call_id(i), "name": call.name, "input": call.args
            }));
        }
        self.message(
            content,
            Some(Self::stop_reason(reply)),
            reply,
            reply.output_tokens(),
        )
    }

    fn events(&self, shape: Shape) -> Events {
        let reply = self.reply.stretched(shape.pieces(self.reply.pieces.len()));
        let interval = shape.interval();
        let mut events: Vec<(Duration, Bytes)> = Vec::with_capacity(reply.pieces.len() + 12);
        let start = json!({
            "type": "message_start",
            "message": self.message(Vec::new(), None, &reply, 1),
        });
        events.push((Duration::ZERO, event("message_start", &start)));
        let mut index = 0;
        let mut block = |events: &mut Vec<(Duration, Bytes)>,
                         content_block: Value,
                         deltas: Vec<(Duration, Value)>| {
            let start = json!({
                "type": "content_block_start", "index": index, "content_block": content_block
            });
            events.push((Duration::ZERO, event("content_block_start", &start)));
            if index == 0 {
                events.push((Duration::ZERO, event("ping", &json!({"type": "ping"}))));
            }
            for (delay, delta) in deltas {
                let delta = json!({"type": "content_block_delta", "index": index, "delta": delta});
                events.push((delay, event("content_block_delta", &delta)));
            }
            let stop = json!({"type": "content_block_stop", "index": index});
            events.push((Duration::ZERO, event("content_block_stop", &stop)));
            index += 1;
        };
        if reply.thinking {
            block(
                &mut events,
                json!({"type": "thinking", "thinking": "", "signature": ""}),
                vec![
                    (
                        Duration::ZERO,
                        json!({"type": "thinking_delta", "thinking": MOCK_REASONING}),
                    ),
                    (
                        Duration::ZERO,
                        json!({"type": "signature_delta", "signature": MOCK_SIGNATURE}),
                    ),
                ],
            );
        }
        if reply.calls.is_empty() {
            let deltas = reply
                .pieces
                .iter()
                .map(|piece| (interval, json!({"type": "text_delta", "text": piece})))
                .collect();
            block(&mut events, json!({"type": "text", "text": ""}), deltas);
        }
        for (i, call) in reply.calls.iter().enumerate() {
            let (first, second) = call.args_fragments();
            block(
                &mut events,
                json!({"type": "tool_use", "id": call_id(i), "name": call.name, "input": {}}),
                [first, second]
                    .into_iter()
                    .map(|partial| {
                        (
                            interval,
                            json!({"type": "input_json_delta", "partial_json": partial}),
                        )
                    })
                    .collect(),
            );
        }
        let delta = json!({
            "type": "message_delta",
            "delta": {"stop_reason": Self::stop_reason(&reply), "stop_sequence": null},
            "usage": {"output_tokens": reply.output_tokens()},
        });
        events.push((Duration::ZERO, event("message_delta", &delta)));
        events.push((
            Duration::ZERO,
            event("message_stop", &json!({"type": "message_stop"})),
        ));
        shape.finish(events, "text/event-stream")
    }
}

// === Errors ===

/// `{"type": "error", "error": {"type", "message"}}`, the type as Anthropic names the
/// status.
pub(super) fn error(status: StatusCode, message: &str) -> Response {
    json_response(
        status,
        &json!({"type": "error", "error": {"type": error_type(status), "message": message}}),
    )
}

fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    }
}

/// The message Anthropic sends with this status.
pub(super) fn default_message(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "Invalid request (mock).",
        401 => "invalid x-api-key (mock)",
        403 => "Your API key does not have permission to use the specified resource (mock).",
        404 => "The requested resource could not be found (mock).",
        413 => "Request exceeds the maximum allowed number of bytes (mock).",
        429 => "Number of requests has exceeded your rate limit (mock).",
        503 | 529 => "Overloaded (mock)",
        s if s >= 500 => "Internal server error (mock)",
        _ => "Request failed (mock).",
    }
}

fn not_found(call: &Call<'_>) -> Response {
    error(
        StatusCode::NOT_FOUND,
        &format!("Not found: {} {} (mock)", call.method, call.path),
    )
}
