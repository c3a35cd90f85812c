//! Answers for `mock` providers, made locally without an upstream call: for demos, for
//! trying Fulcrum without a real key, and for load tests of the proxy itself.

use bytes::Bytes;
use serde_json::{Value, json};

use crate::protocol::Operation;

/// Models a mock provider lists.
pub const MODELS: &[&str] = &["mock-chat", "mock-embedding", "mock-image", "mock-tts"];

/// A 1x1 transparent PNG, base64: a real image for `images/generations`.
const PIXEL_PNG_B64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";

/// A locally made answer.
pub struct MockAnswer {
    pub content_type: &'static str,
    pub body: MockBody,
}

pub enum MockBody {
    Whole(Bytes),
    /// SSE events, each a complete `data: ...\n\n` frame.
    Events(Vec<Bytes>),
}

/// Makes the answer a mock provider gives to `endpoint` with this request body.
pub fn answer(
    operation: Operation,
    provider: &str,
    model: &str,
    stream: bool,
    request: &[u8],
    now_secs: i64,
) -> MockAnswer {
    let parsed: Value = serde_json::from_slice(request).unwrap_or(Value::Null);
    let model = if model.is_empty() { "mock-chat" } else { model };
    let text = format!("Hello from Fulcrum's mock provider {provider:?} (model {model}).");
    let prompt_tokens = i64::try_from(request.len() / 4).unwrap_or(i64::MAX).max(1);
    let completion_tokens = i64::try_from(text.split_whitespace().count()).unwrap_or(0);
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    });
    let id = format!("mock-{now_secs:x}");
    let include_usage = parsed["stream_options"]["include_usage"]
        .as_bool()
        .unwrap_or(false);
    match operation {
        Operation::Chat if stream => {
            let chunk = |delta: Value, finish: Value| {
                json!({
                    "id": id, "object": "chat.completion.chunk", "created": now_secs, "model": model,
                    "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
                })
            };
            let mut events = vec![chunk(
                json!({"role": "assistant", "content": ""}),
                Value::Null,
            )];
            events.extend(
                text.split_inclusive(' ')
                    .map(|piece| chunk(json!({"content": piece}), Value::Null)),
            );
            events.push(chunk(json!({}), json!("stop")));
            if include_usage {
                events.push(json!({
                    "id": id, "object": "chat.completion.chunk", "created": now_secs, "model": model,
                    "choices": [], "usage": usage,
                }));
            }
            sse(events)
        }
        Operation::Chat => whole(json!({
            "id": id, "object": "chat.completion", "created": now_secs, "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": null},
                "logprobs": null,
                "finish_reason": "stop",
            }],
            "usage": usage,
        })),
        Operation::Completions if stream => {
            let mut events: Vec<Value> = text
                .split_inclusive(' ')
                .map(|piece| {
                    json!({
                        "id": id, "object": "text_completion", "created": now_secs, "model": model,
                        "choices": [{"index": 0, "text": piece, "logprobs": null, "finish_reason": null}],
                    })
                })
                .collect();
            events.push(json!({
                "id": id, "object": "text_completion", "created": now_secs, "model": model,
                "choices": [{"index": 0, "text": "", "logprobs": null, "finish_reason": "stop"}],
            }));
            sse(events)
        }
        Operation::Completions => whole(json!({
            "id": id, "object": "text_completion", "created": now_secs, "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": "stop"}],
            "usage": usage,
        })),
        Operation::Embed => {
            let inputs = match &parsed["input"] {
                Value::Array(items) => items.len().max(1),
                _ => 1,
            };
            let data: Vec<Value> = (0..inputs)
                .map(|i| {
                    let vector: Vec<f64> =
                        (0..8).map(|d| ((i * 8 + d) as f64 * 0.37).sin()).collect();
                    json!({"object": "embedding", "index": i, "embedding": vector})
                })
                .collect();
            whole(json!({
                "object": "list", "data": data, "model": model,
                "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
            }))
        }
        Operation::Images => {
            let n = parsed["n"].as_u64().unwrap_or(1).clamp(1, 10);
            let data: Vec<Value> = (0..n).map(|_| json!({"b64_json": PIXEL_PNG_B64})).collect();
            whole(json!({"created": now_secs, "data": data}))
        }
        Operation::Speech => {
            // An MPEG audio frame header followed by silence: recognisably audio, no content.
            let mut bytes = vec![0xFF, 0xFB, 0x90, 0x64];
            bytes.resize(4096, 0);
            MockAnswer {
                content_type: "audio/mpeg",
                body: MockBody::Whole(Bytes::from(bytes)),
            }
        }
        Operation::ListModels => {
            let data: Vec<Value> = MODELS
                .iter()
                .map(|m| json!({"id": m, "object": "model", "created": 0, "owned_by": provider}))
                .collect();
            whole(json!({"object": "list", "data": data}))
        }
        Operation::GetModel => {
            whole(json!({"id": model, "object": "model", "created": 0, "owned_by": provider}))
        }
        // Callers count tokens themselves for OpenAI-speaking providers; these have no
        // counterpart in OpenAI's API.
        Operation::CountTokens | Operation::BatchEmbed => whole(json!({
            "error": {"message": format!("{} is not an OpenAI operation", operation.as_str()), "type": "invalid_request_error", "param": null, "code": null}
        })),
    }
}

fn whole(value: Value) -> MockAnswer {
    MockAnswer {
        content_type: "application/json",
        body: MockBody::Whole(Bytes::from(value.to_string())),
    }
}

fn sse(events: Vec<Value>) -> MockAnswer {
    let mut frames: Vec<Bytes> = events
        .into_iter()
        .map(|e| Bytes::from(format!("data: {e}\n\n")))
        .collect();
    frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
    MockAnswer {
        content_type: "text/event-stream",
        body: MockBody::Events(frames),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_of(answer: &MockAnswer) -> Value {
        match &answer.body {
            MockBody::Whole(b) => serde_json::from_slice(b).unwrap(),
            MockBody::Events(_) => panic!("expected a whole body"),
        }
    }

    #[test]
    fn chat_answers_in_openai_shape() {
        let a = answer(
            Operation::Chat,
            "demo",
            "gpt-x",
            false,
            br#"{"model":"gpt-x"}"#,
            1,
        );
        let v = json_of(&a);
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["model"], "gpt-x");
        assert!(
            v["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .contains("mock provider")
        );
        assert!(v["usage"]["total_tokens"].as_i64().unwrap() > 0);
    }

    #[test]
    fn streams_end_with_done_and_usage_on_request() {
        let body = br#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#;
        let a = answer(Operation::Chat, "demo", "m", true, body, 1);
        let MockBody::Events(events) = a.body else {
            panic!("expected events")
        };
        assert_eq!(events.last().unwrap().as_ref(), b"data: [DONE]\n\n");
        let usage = &events[events.len() - 2];
        assert!(std::str::from_utf8(usage).unwrap().contains("\"usage\""));
        assert_eq!(a.content_type, "text/event-stream");
    }

    #[test]
    fn embeddings_one_per_input() {
        let a = answer(
            Operation::Embed,
            "demo",
            "e",
            false,
            br#"{"input":["a","b","c"]}"#,
            1,
        );
        assert_eq!(json_of(&a)["data"].as_array().unwrap().len(), 3);
    }
}
