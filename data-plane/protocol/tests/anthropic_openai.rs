//! Anthropic Messages <-> OpenAI Chat Completions: golden fixtures, stream event flows and
//! round-trip properties.
//!
//! Inputs are the providers' documented examples in `tests/fixtures/{anthropic,openai}` (see
//! `tests/fixtures.rs` for the doc pages) plus two in `tests/fixtures/anthropic_openai`:
//! `claude_code_request.json` (the shape Claude Code sends: system text blocks with
//! `cache_control`, JSON-schema tools, parallel calls, tool results as text-block arrays,
//! `is_error`, thinking) and `openai_chunks_reasoning_parallel_tools.json` (chunks shaped as
//! in OpenAI's streaming function-calling guide,
//! https://platform.openai.com/docs/guides/function-calling#streaming, with the
//! `reasoning_content` deltas of DeepSeek's reasoning model,
//! https://api-docs.deepseek.com/guides/reasoning_model). The expected outputs
//! (`*.openai.json`, `*.anthropic.json` next to them) were reviewed by hand against the
//! documented target shapes: the Messages streaming event flow
//! (https://docs.anthropic.com/en/docs/build-with-claude/streaming) and the chat completion
//! chunk object (https://platform.openai.com/docs/api-reference/chat-streaming).
//!
//! Set `UPDATE_GOLDEN=1` to rewrite the expected outputs after a deliberate change, then
//! review the diff.
#![allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]

use std::path::PathBuf;

use fulcrum_protocol::sse::SseEvent;
use fulcrum_protocol::translate::anthropic_openai::{
    AnthropicToOpenAiStream, DEFAULT_MAX_TOKENS, OpenAiToAnthropicStream, REASONING_SIGNATURE,
    anthropic_request_to_openai, anthropic_response_to_openai, openai_request_to_anthropic,
    openai_response_to_anthropic,
};
use fulcrum_protocol::{StreamTranslator, TranslateError, TranslateOptions, anthropic, openai};
use serde_json::{Map, Value, json};

const OPTS: TranslateOptions = TranslateOptions {
    allow_image_urls: false,
};

fn fixture_path(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

fn fixture(path: &str) -> Value {
    let text =
        std::fs::read_to_string(fixture_path(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn typed<T: serde::de::DeserializeOwned>(path: &str) -> T {
    serde_json::from_value(fixture(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Removes `created` (the translation's clock) wherever an OpenAI object has it.
fn without_created(mut value: Value) -> Value {
    match &mut value {
        Value::Object(map) => {
            map.remove("created");
            for (_, v) in map.iter_mut() {
                *v = without_created(v.take());
            }
        }
        Value::Array(items) => {
            for item in items.iter_mut() {
                *item = without_created(item.take());
            }
        }
        _ => {}
    }
    value
}

/// Compares `actual` with the expected output in `tests/fixtures/<path>`.
fn golden(path: &str, actual: Value) {
    let actual = without_created(actual);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        let text = serde_json::to_string_pretty(&actual).unwrap() + "\n";
        std::fs::write(fixture_path(path), text).unwrap();
        return;
    }
    assert_eq!(actual, fixture(path), "{path} differs");
}

/// A recorded stream as `[{"event": name?, "data": JSON or "[DONE]"}]`.
fn events_to_json(events: &[SseEvent]) -> Value {
    Value::Array(
        events
            .iter()
            .map(|e| {
                let data = serde_json::from_str(&e.data).unwrap_or_else(|_| json!(e.data));
                let mut object = Map::new();
                if let Some(name) = &e.event {
                    object.insert("event".into(), json!(name));
                }
                object.insert("data".into(), data);
                Value::Object(object)
            })
            .collect(),
    )
}

fn run(
    translator: &mut dyn StreamTranslator,
    events: &[SseEvent],
) -> Result<Vec<SseEvent>, TranslateError> {
    let mut out = Vec::new();
    for event in events {
        translator.on_event(event, &mut out)?;
    }
    translator.finish(&mut out)?;
    Ok(out)
}

fn openai_events(chunks: &[Value], done: bool) -> Vec<SseEvent> {
    let mut events: Vec<SseEvent> = chunks
        .iter()
        .map(|c| SseEvent::data(c.to_string()))
        .collect();
    if done {
        events.push(SseEvent::data("[DONE]"));
    }
    events
}

fn anthropic_events(events: &[Value]) -> Vec<SseEvent> {
    events
        .iter()
        .map(|e| SseEvent::named(e["event"].as_str().unwrap(), e["data"].to_string()))
        .collect()
}

/// Checks that `events` follow Anthropic's documented flow (`message_start`; per block
/// start, deltas, stop with indexes 0, 1, ...; `message_delta`; `message_stop`; every
/// event named after its type) and rebuilds the message they describe.
fn assemble_anthropic(events: &[SseEvent]) -> anthropic::MessagesResponse {
    let mut message: Option<anthropic::MessagesResponse> = None;
    let mut open: Option<u32> = None;
    let mut json_input = String::new();
    let mut saw_delta = false;
    let mut stopped = false;
    for (position, event) in events.iter().enumerate() {
        assert!(!stopped, "event after message_stop: {event:?}");
        let parsed: anthropic::StreamEvent = serde_json::from_str(&event.data).unwrap();
        assert_eq!(
            event.event.as_deref(),
            Some(parsed.name()),
            "event name of {event:?}"
        );
        if position > 0 {
            assert!(message.is_some(), "message_start must come first");
        }
        match parsed {
            anthropic::StreamEvent::MessageStart { message: start } => {
                assert_eq!(position, 0);
                assert!(start.content.is_empty() && start.stop_reason.is_none());
                assert_eq!(start.usage.output_tokens, 0);
                message = Some(start);
            }
            anthropic::StreamEvent::ContentBlockStart {
                index,
                content_block,
            } => {
                let message = message.as_mut().unwrap();
                assert!(
                    open.is_none() && !saw_delta,
                    "block starts while another is open"
                );
                assert_eq!(
                    index as usize,
                    message.content.len(),
                    "block indexes increase by one"
                );
                open = Some(index);
                json_input.clear();
                message.content.push(content_block);
            }
            anthropic::StreamEvent::ContentBlockDelta { index, delta } => {
                assert_eq!(open, Some(index), "delta for a block that is not open");
                let block = message.as_mut().unwrap().content.last_mut().unwrap();
                match (block, delta) {
                    (
                        anthropic::ContentBlock::Text(block),
                        anthropic::ContentDelta::TextDelta { text },
                    ) => block.text.push_str(&text),
                    (
                        anthropic::ContentBlock::Thinking(block),
                        anthropic::ContentDelta::ThinkingDelta { thinking },
                    ) => block.thinking.push_str(&thinking),
                    (
                        anthropic::ContentBlock::Thinking(block),
                        anthropic::ContentDelta::SignatureDelta { signature },
                    ) => block.signature = Some(signature),
                    (
                        anthropic::ContentBlock::ToolUse(_),
                        anthropic::ContentDelta::InputJsonDelta { partial_json },
                    ) => json_input.push_str(&partial_json),
                    (block, delta) => panic!("{delta:?} does not fit {block:?}"),
                }
            }
            anthropic::StreamEvent::ContentBlockStop { index } => {
                assert_eq!(open.take(), Some(index));
                if let Some(anthropic::ContentBlock::ToolUse(call)) =
                    message.as_mut().unwrap().content.last_mut()
                    && !json_input.is_empty()
                {
                    call.input = serde_json::from_str(&json_input).unwrap();
                }
            }
            anthropic::StreamEvent::MessageDelta { delta, usage } => {
                assert!(open.is_none(), "message_delta while a block is open");
                saw_delta = true;
                let message = message.as_mut().unwrap();
                message.stop_reason = delta.stop_reason;
                message.stop_sequence = delta.stop_sequence;
                message.usage.output_tokens = usage.output_tokens;
                if let Some(input) = usage.input_tokens {
                    message.usage.input_tokens = input;
                }
                if usage.cache_read_input_tokens.is_some() {
                    message.usage.cache_read_input_tokens = usage.cache_read_input_tokens;
                }
            }
            anthropic::StreamEvent::MessageStop => {
                assert!(saw_delta, "message_stop before message_delta");
                stopped = true;
            }
            anthropic::StreamEvent::Ping => {}
            other => panic!("unexpected event {other:?}"),
        }
    }
    assert!(stopped, "no message_stop");
    message.unwrap()
}

/// Checks an OpenAI chunk stream (role first, usage chunk with no choices just before
/// `[DONE]`, `[DONE]` last) and rebuilds the completion it describes.
fn assemble_openai(events: &[SseEvent]) -> openai::ChatResponse {
    assert_eq!(events.last().map(|e| e.data.as_str()), Some("[DONE]"));
    let mut response: Option<openai::ChatResponse> = None;
    let mut signature: Option<String> = None;
    for (position, event) in events[..events.len() - 1].iter().enumerate() {
        assert!(event.event.is_none(), "OpenAI events are unnamed");
        let chunk: openai::ChatChunk = serde_json::from_str(&event.data).unwrap();
        assert_eq!(chunk.object, "chat.completion.chunk");
        let response = response.get_or_insert_with(|| {
            assert_eq!(chunk.choices[0].delta.role, Some(openai::Role::Assistant));
            serde_json::from_value(json!({
                "id": chunk.id, "object": "chat.completion", "created": chunk.created,
                "model": chunk.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": null}, "finish_reason": null}]
            }))
            .unwrap()
        });
        if let Some(usage) = chunk.usage {
            assert!(chunk.choices.is_empty());
            assert_eq!(position, events.len() - 2, "usage chunk comes last");
            response.usage = Some(usage);
        }
        for choice in chunk.choices {
            let message = &mut response.choices[0].message;
            let delta = choice.delta;
            if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                message
                    .content
                    .get_or_insert_with(String::new)
                    .push_str(&text);
            }
            if let Some(reasoning) = delta.reasoning_content {
                message
                    .reasoning_content
                    .get_or_insert_with(String::new)
                    .push_str(&reasoning);
            }
            if let Some(Value::String(sig)) = delta.extra.get(REASONING_SIGNATURE) {
                signature = Some(sig.clone());
            }
            for fragment in delta.tool_calls.into_iter().flatten() {
                let calls = message.tool_calls.get_or_insert_with(Vec::new);
                let index = fragment.index as usize;
                if index == calls.len() {
                    let function = fragment.function.clone().unwrap();
                    calls.push(openai::ToolCall {
                        id: fragment.id.clone().unwrap(),
                        kind: openai::FunctionType::Function,
                        function: openai::FunctionCall {
                            name: function.name.unwrap(),
                            arguments: String::new(),
                        },
                        extra_content: None,
                        extra: Map::new(),
                    });
                }
                if let Some(arguments) = fragment.function.and_then(|f| f.arguments) {
                    calls[index].function.arguments.push_str(&arguments);
                }
            }
            if choice.finish_reason.is_some() {
                response.choices[0].finish_reason = choice.finish_reason;
            }
        }
    }
    let mut response = response.unwrap();
    if let Some(signature) = signature {
        response.choices[0]
            .message
            .extra
            .insert(REASONING_SIGNATURE.into(), json!(signature));
    }
    response
}

// === golden fixtures: requests ===

#[test]
fn anthropic_requests_to_openai() {
    let cases = [
        (
            "anthropic/messages_request_tool_result.json",
            "anthropic_openai/request_tool_result.openai.json",
        ),
        (
            "anthropic/messages_request_thinking.json",
            "anthropic_openai/request_thinking.openai.json",
        ),
        (
            "anthropic/messages_request_system_cache.json",
            "anthropic_openai/request_system_cache.openai.json",
        ),
        (
            "anthropic_openai/claude_code_request.json",
            "anthropic_openai/claude_code_request.openai.json",
        ),
    ];
    for (input, expected) in cases {
        let request: anthropic::MessagesRequest = typed(input);
        let out = anthropic_request_to_openai(&request, &OPTS).unwrap();
        golden(expected, serde_json::to_value(out).unwrap());
    }
}

#[test]
fn documented_anthropic_requests_with_unsupported_parts_are_refused() {
    // The tools example declares the `web_search` server tool.
    let request: anthropic::MessagesRequest = typed("anthropic/messages_request_tools.json");
    let err = anthropic_request_to_openai(&request, &OPTS).unwrap_err();
    assert!(matches!(
        err,
        TranslateError::UnsupportedValue { field: "tools", .. }
    ));
    // The image example has a URL image and a Files API image.
    let request: anthropic::MessagesRequest = typed("anthropic/messages_request_image.json");
    let err = anthropic_request_to_openai(&request, &OPTS).unwrap_err();
    assert!(matches!(err, TranslateError::ImageUrlNotAllowed));
    let err = anthropic_request_to_openai(
        &request,
        &TranslateOptions {
            allow_image_urls: true,
        },
    )
    .unwrap_err();
    assert!(matches!(err, TranslateError::UnsupportedContent { .. }));
}

#[test]
fn openai_requests_to_anthropic() {
    let cases = [
        (
            "openai/chat_request_tool_history.json",
            "anthropic_openai/request_tool_history.anthropic.json",
        ),
        (
            "openai/chat_request_params.json",
            "anthropic_openai/request_params.anthropic.json",
        ),
        (
            "openai/chat_request_functions.json",
            "anthropic_openai/request_functions.anthropic.json",
        ),
        (
            "openai/chat_request_default.json",
            "anthropic_openai/request_default.anthropic.json",
        ),
    ];
    for (input, expected) in cases {
        let request: openai::ChatRequest = typed(input);
        let out = openai_request_to_anthropic(&request, &OPTS).unwrap();
        golden(expected, serde_json::to_value(out).unwrap());
    }
    // The image example has a remote image and an audio part.
    let request: openai::ChatRequest = typed("openai/chat_request_image.json");
    let err = openai_request_to_anthropic(&request, &OPTS).unwrap_err();
    assert!(matches!(err, TranslateError::ImageUrlNotAllowed));
    let err = openai_request_to_anthropic(
        &request,
        &TranslateOptions {
            allow_image_urls: true,
        },
    )
    .unwrap_err();
    assert!(
        matches!(err, TranslateError::UnsupportedContent { ref kind, .. } if kind == "input_audio")
    );
}

// === golden fixtures: responses ===

#[test]
fn openai_responses_to_anthropic() {
    let cases = [
        (
            "openai/chat_response_default.json",
            "anthropic_openai/response_default.anthropic.json",
        ),
        (
            "openai/chat_response_functions.json",
            "anthropic_openai/response_functions.anthropic.json",
        ),
    ];
    for (input, expected) in cases {
        let response: openai::ChatResponse = typed(input);
        let out = openai_response_to_anthropic(&response).unwrap();
        golden(expected, serde_json::to_value(out).unwrap());
    }
}

#[test]
fn anthropic_responses_to_openai() {
    let cases = [
        (
            "anthropic/messages_response.json",
            "anthropic_openai/response.openai.json",
        ),
        (
            "anthropic/messages_response_tool_use.json",
            "anthropic_openai/response_tool_use.openai.json",
        ),
    ];
    for (input, expected) in cases {
        let response: anthropic::MessagesResponse = typed(input);
        let out = anthropic_response_to_openai(&response);
        golden(expected, serde_json::to_value(out).unwrap());
    }
}

// === golden fixtures: streams ===

#[test]
fn documented_openai_stream_to_anthropic_events() {
    let Value::Array(chunks) = fixture("openai/chat_chunks.json") else {
        panic!("expected an array");
    };
    let out = run(
        &mut OpenAiToAnthropicStream::new(),
        &openai_events(&chunks, true),
    )
    .unwrap();
    golden(
        "anthropic_openai/chat_chunks.anthropic.json",
        events_to_json(&out),
    );
    let message = assemble_anthropic(&out);
    assert_eq!(message.content.len(), 2);
    // OpenAI's example says `stop` after a tool call; the call decides.
    assert_eq!(message.stop_reason, Some(anthropic::StopReason::ToolUse));
    assert_eq!(message.usage.input_tokens, 9);
    assert_eq!(message.usage.output_tokens, 12);
}

#[test]
fn reasoning_and_parallel_tool_calls_stream_to_anthropic_events() {
    let Value::Array(chunks) =
        fixture("anthropic_openai/openai_chunks_reasoning_parallel_tools.json")
    else {
        panic!("expected an array");
    };
    let out = run(
        &mut OpenAiToAnthropicStream::new(),
        &openai_events(&chunks, true),
    )
    .unwrap();
    golden(
        "anthropic_openai/openai_chunks_reasoning_parallel_tools.anthropic.json",
        events_to_json(&out),
    );
    let message = assemble_anthropic(&out);
    let content = serde_json::to_value(&message.content).unwrap();
    assert_eq!(
        content,
        json!([
            {"type": "thinking", "thinking": "Both cities are needed; call the tool twice."},
            {"type": "text", "text": "Checking both."},
            {"type": "tool_use", "id": "call_paris", "name": "get_weather", "input": {"location": "Paris, France"}},
            {"type": "tool_use", "id": "call_rome", "name": "get_weather", "input": {"location": "Rome, Italy"}}
        ])
    );
    assert_eq!(message.usage.input_tokens, 56);
    assert_eq!(message.usage.cache_read_input_tokens, Some(64));
}

#[test]
fn documented_anthropic_stream_to_openai_chunks() {
    let Value::Array(events) = fixture("anthropic/stream_events.json") else {
        panic!("expected an array");
    };
    // The fixture lists every documented event type; its final `error` event is tested on
    // its own below.
    let (error, flow) = events.split_last().unwrap();
    let out = run(
        &mut AnthropicToOpenAiStream::new(true),
        &anthropic_events(flow),
    )
    .unwrap();
    golden(
        "anthropic_openai/stream_events.openai.json",
        events_to_json(&out),
    );
    let response = assemble_openai(&out);
    let message = &response.choices[0].message;
    assert_eq!(message.content.as_deref(), Some("Hello"));
    assert_eq!(
        message.reasoning_content.as_deref(),
        Some("Let me solve this step by step.")
    );
    assert_eq!(
        message.extra.get(REASONING_SIGNATURE),
        Some(&json!(
            "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"
        ))
    );
    let calls = message.tool_calls.as_ref().unwrap();
    assert_eq!(calls[0].id, "toolu_01T1x1fJ34qAmk2tNTrN7Up6");
    assert_eq!(
        calls[0].function.arguments,
        "{\"location\": \"San Francisco, CA\"}"
    );
    assert_eq!(
        response.choices[0].finish_reason,
        Some(openai::FinishReason::ToolCalls)
    );
    assert_eq!(response.usage.as_ref().unwrap().completion_tokens, 89);

    let mut translator = AnthropicToOpenAiStream::new(false);
    let mut out = Vec::new();
    let err = translator
        .on_event(&anthropic_events(std::slice::from_ref(error))[0], &mut out)
        .unwrap_err();
    assert!(matches!(
        err,
        TranslateError::Upstream { status: Some(ref s), ref message } if s == "overloaded_error" && message == "Overloaded"
    ));
    assert!(!err.is_client_error());
}

// === stream rules ===

fn chunk(delta: Value, finish: Option<&str>) -> Value {
    json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
}

fn usage_chunk(prompt: u64, completion: u64) -> Value {
    json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
           "choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                                    "total_tokens": prompt + completion}})
}

fn names(events: &[SseEvent]) -> Vec<&str> {
    events.iter().map(|e| e.event.as_deref().unwrap()).collect()
}

#[test]
fn openai_text_stream_gives_the_documented_anthropic_sequence() {
    let chunks = [
        chunk(json!({"role": "assistant", "content": ""}), None),
        chunk(json!({"content": "Hello"}), None),
        chunk(json!({"content": "!"}), None),
        chunk(json!({}), Some("stop")),
        usage_chunk(9, 2),
    ];
    let out = run(
        &mut OpenAiToAnthropicStream::new(),
        &openai_events(&chunks, true),
    )
    .unwrap();
    assert_eq!(
        names(&out),
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let start: Value = serde_json::from_str(&out[0].data).unwrap();
    assert_eq!(
        start,
        json!({"type": "message_start", "message": {"id": "msg_chatcmpl-1", "type": "message",
            "role": "assistant", "model": "gpt-4o", "content": [], "stop_reason": null,
            "stop_sequence": null, "usage": {"input_tokens": 0, "output_tokens": 0}}})
    );
    let delta: Value = serde_json::from_str(&out[5].data).unwrap();
    assert_eq!(
        delta,
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
               "usage": {"input_tokens": 9, "output_tokens": 2}})
    );
}

#[test]
fn openai_stream_signature_delta_closes_thinking() {
    let chunks = [
        chunk(
            json!({"role": "assistant", "reasoning_content": "hmm"}),
            None,
        ),
        chunk(json!({"reasoning_signature": "sig-9"}), None),
        chunk(json!({"content": "done"}), Some("length")),
    ];
    let out = run(
        &mut OpenAiToAnthropicStream::new(),
        &openai_events(&chunks, false),
    )
    .unwrap();
    let message = assemble_anthropic(&out);
    assert_eq!(
        serde_json::to_value(&message.content).unwrap(),
        json!([
            {"type": "thinking", "thinking": "hmm", "signature": "sig-9"},
            {"type": "text", "text": "done"}
        ])
    );
    assert_eq!(message.stop_reason, Some(anthropic::StopReason::MaxTokens));
}

#[test]
fn openai_stream_reused_index_with_a_new_id_is_a_new_call() {
    // Ollama-style servers number every call of a parallel batch 0.
    let call = |id: &str, city: &str| {
        chunk(
            json!({"tool_calls": [{"index": 0, "id": id, "type": "function",
                "function": {"name": "get_weather", "arguments": format!("{{\"city\":\"{city}\"}}")}}]}),
            None,
        )
    };
    let chunks = [
        chunk(json!({"role": "assistant"}), None),
        call("call_a", "Paris"),
        call("call_b", "Rome"),
        chunk(json!({}), Some("tool_calls")),
    ];
    let out = run(
        &mut OpenAiToAnthropicStream::new(),
        &openai_events(&chunks, true),
    )
    .unwrap();
    let message = assemble_anthropic(&out);
    let ids: Vec<&str> = message
        .content
        .iter()
        .map(|b| match b {
            anthropic::ContentBlock::ToolUse(call) => call.id.as_str(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ids, ["call_a", "call_b"]);
}

#[test]
fn openai_stream_call_without_id_gets_a_stable_one() {
    let chunks = [
        chunk(
            json!({"role": "assistant", "tool_calls": [{"index": 0,
            "function": {"name": "now", "arguments": ""}}]}),
            None,
        ),
        chunk(json!({}), Some("tool_calls")),
    ];
    let first = run(
        &mut OpenAiToAnthropicStream::new(),
        &openai_events(&chunks, true),
    )
    .unwrap();
    let second = run(
        &mut OpenAiToAnthropicStream::new(),
        &openai_events(&chunks, true),
    )
    .unwrap();
    assert_eq!(first, second);
    let message = assemble_anthropic(&first);
    let anthropic::ContentBlock::ToolUse(call) = &message.content[0] else {
        panic!("expected a tool_use block");
    };
    assert_eq!(call.id, "toolu_chatcmpl-1_0");
    assert_eq!(call.input, json!({}));
}

#[test]
fn openai_stream_late_fragment_of_a_closed_call_is_refused() {
    let fragment = |index: u32, id: Option<&str>, arguments: &str| {
        let mut call = json!({"index": index, "function": {"arguments": arguments}});
        if let Some(id) = id {
            call["id"] = json!(id);
            call["function"]["name"] = json!("f");
        }
        chunk(json!({"tool_calls": [call]}), None)
    };
    let chunks = [
        fragment(0, Some("call_a"), "{"),
        fragment(1, Some("call_b"), "{"),
        fragment(0, None, "}"),
    ];
    let err = run(
        &mut OpenAiToAnthropicStream::new(),
        &openai_events(&chunks, true),
    )
    .unwrap_err();
    assert!(matches!(err, TranslateError::InvalidUpstreamJson { .. }));
}

#[test]
fn openai_stream_errors_and_truncation() {
    let error = json!({"error": {"message": "Rate limit reached", "type": "rate_limit_error", "code": null}});
    let chunks = [
        chunk(json!({"role": "assistant", "content": "Hi"}), None),
        error,
    ];
    let err = run(
        &mut OpenAiToAnthropicStream::new(),
        &openai_events(&chunks, false),
    )
    .unwrap_err();
    assert!(matches!(
        err,
        TranslateError::Upstream { status: Some(ref s), ref message } if s == "rate_limit_error" && message == "Rate limit reached"
    ));

    // Cut before any finish reason: an error, never a quietly truncated answer.
    let chunks = [chunk(json!({"role": "assistant", "content": "Hi"}), None)];
    let err = run(
        &mut OpenAiToAnthropicStream::new(),
        &openai_events(&chunks, false),
    )
    .unwrap_err();
    assert!(matches!(
        err,
        TranslateError::InvalidUpstreamJson {
            what: "openai stream",
            ..
        }
    ));
    let err = run(
        &mut OpenAiToAnthropicStream::new(),
        &openai_events(&[], true),
    )
    .unwrap_err();
    assert!(matches!(err, TranslateError::InvalidUpstreamJson { .. }));

    // No `[DONE]`, but a finish reason: the message is closed at the end of the body.
    let chunks = [chunk(
        json!({"role": "assistant", "content": "Hi"}),
        Some("stop"),
    )];
    let out = run(
        &mut OpenAiToAnthropicStream::new(),
        &openai_events(&chunks, false),
    )
    .unwrap();
    assert_eq!(names(&out).last(), Some(&"message_stop"));
    assert_eq!(assemble_anthropic(&out).usage.output_tokens, 0);

    let bad = [SseEvent::data("{not json")];
    let err = run(&mut OpenAiToAnthropicStream::new(), &bad).unwrap_err();
    assert!(matches!(err, TranslateError::InvalidUpstreamJson { .. }));
}

#[test]
fn anthropic_stream_usage_chunk_only_when_asked() {
    let Value::Array(events) = fixture("anthropic/stream_events.json") else {
        panic!("expected an array");
    };
    let flow = anthropic_events(&events[..events.len() - 1]);
    let with = run(&mut AnthropicToOpenAiStream::new(true), &flow).unwrap();
    let without = run(&mut AnthropicToOpenAiStream::new(false), &flow).unwrap();
    assert_eq!(with.len(), without.len() + 1);
    assert!(without.iter().all(|e| !e.data.contains("\"usage\"")));
    let usage: Value = serde_json::from_str(&with[with.len() - 2].data).unwrap();
    assert_eq!(
        usage["usage"],
        json!({"prompt_tokens": 25, "completion_tokens": 89, "total_tokens": 114})
    );
}

#[test]
fn anthropic_stream_cut_before_message_stop_is_an_error() {
    let Value::Array(events) = fixture("anthropic/stream_events.json") else {
        panic!("expected an array");
    };
    let cut = anthropic_events(&events[..6]);
    let err = run(&mut AnthropicToOpenAiStream::new(true), &cut).unwrap_err();
    assert!(matches!(
        err,
        TranslateError::InvalidUpstreamJson {
            what: "anthropic stream",
            ..
        }
    ));
}

#[test]
fn anthropic_stream_parallel_calls_get_their_own_indexes() {
    let events = [
        json!({"event": "message_start", "data": {"type": "message_start", "message": {"id": "msg_1", "type": "message",
            "role": "assistant", "content": [], "model": "claude", "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 5, "output_tokens": 1}}}}),
        json!({"event": "content_block_start", "data": {"type": "content_block_start", "index": 0,
            "content_block": {"type": "tool_use", "id": "toolu_a", "name": "f", "input": {}}}}),
        json!({"event": "content_block_delta", "data": {"type": "content_block_delta", "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": "{\"x\":1}"}}}),
        json!({"event": "content_block_stop", "data": {"type": "content_block_stop", "index": 0}}),
        json!({"event": "content_block_start", "data": {"type": "content_block_start", "index": 1,
            "content_block": {"type": "tool_use", "id": "toolu_b", "name": "g", "input": {}}}}),
        json!({"event": "content_block_delta", "data": {"type": "content_block_delta", "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": "{}"}}}),
        json!({"event": "content_block_stop", "data": {"type": "content_block_stop", "index": 1}}),
        json!({"event": "message_delta", "data": {"type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 30}}}),
        json!({"event": "message_stop", "data": {"type": "message_stop"}}),
    ];
    let out = run(
        &mut AnthropicToOpenAiStream::new(false),
        &anthropic_events(&events),
    )
    .unwrap();
    let response = assemble_openai(&out);
    let calls = response.choices[0].message.tool_calls.clone().unwrap();
    assert_eq!(
        serde_json::to_value(calls).unwrap(),
        json!([
            {"id": "toolu_a", "type": "function", "function": {"name": "f", "arguments": "{\"x\":1}"}},
            {"id": "toolu_b", "type": "function", "function": {"name": "g", "arguments": "{}"}}
        ])
    );
    assert_eq!(
        response.choices[0].finish_reason,
        Some(openai::FinishReason::ToolCalls)
    );
}

// === round trips ===

mod round_trip {
    use proptest::collection::{btree_map, vec};
    use proptest::option;
    use proptest::prelude::*;

    use super::*;

    fn text() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9 .,!?']{1,16}(\n[a-z ]{0,8})?"
    }

    fn arguments() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            "[a-z ]{0,8}".prop_map(Value::from),
            any::<i32>().prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
        ];
        btree_map("[a-z]{1,6}", leaf, 0..4).prop_map(|map| Value::Object(map.into_iter().collect()))
    }

    fn tool_name() -> impl Strategy<Value = String> {
        "[a-z][a-z_]{0,9}"
    }

    /// One exchange: the user's texts, then the assistant's optional signed thinking,
    /// optional text and calls (name, arguments, result text, result as blocks?).
    #[derive(Debug, Clone)]
    struct Round {
        user_texts: Vec<String>,
        user_as_string: bool,
        thinking: Option<(String, String)>,
        assistant_text: Option<String>,
        calls: Vec<(String, Value, String, bool)>,
    }

    fn round() -> impl Strategy<Value = Round> {
        (
            vec(text(), 1..3),
            any::<bool>(),
            option::of((text(), "[A-Za-z0-9+/]{8,24}")),
            option::of(text()),
            vec((tool_name(), arguments(), text(), any::<bool>()), 0..3),
        )
            .prop_map(
                |(user_texts, user_as_string, thinking, assistant_text, calls)| Round {
                    user_texts,
                    user_as_string,
                    thinking,
                    assistant_text,
                    calls,
                },
            )
    }

    /// Sampling parameters shared by both directions: temperature and top_p within both
    /// protocols' ranges, a token limit, stop sequences.
    #[derive(Debug, Clone)]
    struct Sampling {
        temperature: Option<f64>,
        top_p: Option<f64>,
        max_tokens: Option<u32>,
        stop: Vec<String>,
        stream: bool,
    }

    fn sampling() -> impl Strategy<Value = Sampling> {
        (
            option::of((0u32..=100).prop_map(|t| f64::from(t) / 100.0)),
            option::of((1u32..=100).prop_map(|p| f64::from(p) / 100.0)),
            option::of(1u32..200_000),
            vec("[A-Z]{1,6}", 0..3),
            any::<bool>(),
        )
            .prop_map(|(temperature, top_p, max_tokens, stop, stream)| Sampling {
                temperature,
                top_p,
                max_tokens,
                stop,
                stream,
            })
    }

    fn tool_choice() -> impl Strategy<Value = Option<anthropic::ToolChoice>> {
        let disable = option::of(any::<bool>());
        prop_oneof![
            Just(None),
            disable
                .clone()
                .prop_map(|d| Some(anthropic::ToolChoice::Auto {
                    disable_parallel_tool_use: d
                })),
            disable
                .clone()
                .prop_map(|d| Some(anthropic::ToolChoice::Any {
                    disable_parallel_tool_use: d
                })),
            disable.prop_map(|d| Some(anthropic::ToolChoice::Tool {
                name: "lookup".into(),
                disable_parallel_tool_use: d
            })),
            Just(Some(anthropic::ToolChoice::None)),
        ]
    }

    fn anthropic_tools() -> Vec<anthropic::Tool> {
        vec![
            serde_json::from_value(json!({"name": "lookup", "description": "Looks up",
            "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}))
            .unwrap(),
        ]
    }

    fn text_block(text: &str) -> anthropic::ContentBlock {
        anthropic::ContentBlock::text(text)
    }

    fn build_anthropic(
        system: &[String],
        rounds: &[Round],
        sampling: &Sampling,
        choice: Option<anthropic::ToolChoice>,
    ) -> anthropic::MessagesRequest {
        let mut messages = Vec::new();
        let mut pending: Vec<(String, String, bool)> = Vec::new();
        for (r, round) in rounds.iter().enumerate() {
            let mut blocks = Vec::new();
            for (id, result, as_blocks) in pending.drain(..) {
                let content = if as_blocks {
                    json!([{"type": "text", "text": result}])
                } else {
                    json!(result)
                };
                blocks.push(
                    serde_json::from_value(
                        json!({"type": "tool_result", "tool_use_id": id, "content": content}),
                    )
                    .unwrap(),
                );
            }
            let content =
                if blocks.is_empty() && round.user_texts.len() == 1 && round.user_as_string {
                    anthropic::MessageContent::Text(round.user_texts[0].clone())
                } else {
                    blocks.extend(round.user_texts.iter().map(|t| text_block(t)));
                    anthropic::MessageContent::Blocks(blocks)
                };
            messages.push(anthropic::Message {
                role: anthropic::Role::User,
                content,
                extra: Map::new(),
            });

            let mut blocks = Vec::new();
            if let Some((thinking, signature)) = &round.thinking {
                blocks.push(
                    serde_json::from_value(
                        json!({"type": "thinking", "thinking": thinking, "signature": signature}),
                    )
                    .unwrap(),
                );
            }
            if let Some(text) = &round.assistant_text {
                blocks.push(text_block(text));
            }
            for (c, (name, input, result, as_blocks)) in round.calls.iter().enumerate() {
                let id = format!("toolu_{r}_{c}");
                blocks.push(
                    serde_json::from_value(
                        json!({"type": "tool_use", "id": id, "name": name, "input": input}),
                    )
                    .unwrap(),
                );
                pending.push((id, result.clone(), *as_blocks));
            }
            if blocks.is_empty() {
                blocks.push(text_block("ok"));
            }
            messages.push(anthropic::Message {
                role: anthropic::Role::Assistant,
                content: anthropic::MessageContent::Blocks(blocks),
                extra: Map::new(),
            });
        }
        let system = match system {
            [] => None,
            [one] => Some(anthropic::System::Text(one.clone())),
            many => Some(anthropic::System::Blocks(
                many.iter().map(|t| text_block(t)).collect(),
            )),
        };
        serde_json::from_value::<anthropic::MessagesRequest>(
            json!({"model": "m", "max_tokens": 1, "messages": []}),
        )
        .map(|base| anthropic::MessagesRequest {
            max_tokens: sampling.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
            messages,
            system,
            tools: Some(anthropic_tools()),
            tool_choice: choice,
            stop_sequences: (!sampling.stop.is_empty()).then(|| sampling.stop.clone()),
            temperature: sampling.temperature,
            top_p: sampling.top_p,
            stream: sampling.stream.then_some(true),
            ..base
        })
        .unwrap()
    }

    /// What a round trip must keep of an Anthropic request's conversation: per turn its
    /// role and items, adjacent texts joined as the translation joins them.
    #[derive(Debug, PartialEq)]
    enum Item {
        Text(String),
        Thinking(String, Option<String>),
        Call(String, String, Value),
        Result(String, String),
    }

    fn anthropic_texts(blocks: &[anthropic::ContentBlock]) -> String {
        blocks
            .iter()
            .map(|b| match b {
                anthropic::ContentBlock::Text(t) => t.text.as_str(),
                other => panic!("{other:?}"),
            })
            .collect::<Vec<_>>()
            .join("\n\n")
    }

    fn anthropic_view(
        req: &anthropic::MessagesRequest,
    ) -> (Option<String>, Vec<(anthropic::Role, Vec<Item>)>) {
        let system = req.system.as_ref().map(|s| match s {
            anthropic::System::Text(t) => t.clone(),
            anthropic::System::Blocks(blocks) => anthropic_texts(blocks),
        });
        let turns = req
            .messages
            .iter()
            .map(|m| {
                let mut items: Vec<Item> = Vec::new();
                let blocks = match &m.content {
                    anthropic::MessageContent::Text(t) => vec![text_block(t)],
                    anthropic::MessageContent::Blocks(b) => b.clone(),
                };
                for block in blocks {
                    let item = match block {
                        anthropic::ContentBlock::Text(t) => {
                            if let Some(Item::Text(previous)) = items.last_mut() {
                                previous.push_str("\n\n");
                                previous.push_str(&t.text);
                                continue;
                            }
                            Item::Text(t.text)
                        }
                        anthropic::ContentBlock::Thinking(t) => {
                            Item::Thinking(t.thinking, t.signature)
                        }
                        anthropic::ContentBlock::ToolUse(u) => Item::Call(u.id, u.name, u.input),
                        anthropic::ContentBlock::ToolResult(r) => Item::Result(
                            r.tool_use_id,
                            match r.content {
                                None => String::new(),
                                Some(anthropic::ToolResultContent::Text(t)) => t,
                                Some(anthropic::ToolResultContent::Blocks(b)) => {
                                    anthropic_texts(&b)
                                }
                            },
                        ),
                        other => panic!("{other:?}"),
                    };
                    items.push(item);
                }
                (m.role, items)
            })
            .collect();
        (system, turns)
    }

    /// `disable_parallel_tool_use: false` says what leaving it out says.
    fn normalized_choice(choice: Option<anthropic::ToolChoice>) -> Option<anthropic::ToolChoice> {
        use anthropic::ToolChoice as A;
        let keep = |d: Option<bool>| d.filter(|d| *d);
        choice.map(|c| match c {
            A::Auto {
                disable_parallel_tool_use: d,
            } => A::Auto {
                disable_parallel_tool_use: keep(d),
            },
            A::Any {
                disable_parallel_tool_use: d,
            } => A::Any {
                disable_parallel_tool_use: keep(d),
            },
            A::Tool {
                name,
                disable_parallel_tool_use: d,
            } => A::Tool {
                name,
                disable_parallel_tool_use: keep(d),
            },
            A::None => A::None,
        })
    }

    /// An OpenAI conversation: per round a user message (string or text parts), an
    /// assistant message and a tool message per call.
    fn build_openai(
        system: &[String],
        rounds: &[Round],
        sampling: &Sampling,
        parallel: Option<bool>,
        choice: Option<Value>,
    ) -> openai::ChatRequest {
        let mut messages = Vec::new();
        for text in system {
            messages.push(json!({"role": "system", "content": text}));
        }
        for (r, round) in rounds.iter().enumerate() {
            let content = if round.user_as_string {
                json!(round.user_texts.join("\n\n"))
            } else {
                Value::Array(
                    round
                        .user_texts
                        .iter()
                        .map(|t| json!({"type": "text", "text": t}))
                        .collect(),
                )
            };
            messages.push(json!({"role": "user", "content": content}));
            let mut assistant = json!({"role": "assistant"});
            match (&round.assistant_text, round.calls.is_empty()) {
                (Some(text), _) => assistant["content"] = json!(text),
                (None, true) => assistant["content"] = json!("ok"),
                (None, false) => {}
            }
            if let Some((thinking, signature)) = &round.thinking {
                assistant["reasoning_content"] = json!(thinking);
                assistant[REASONING_SIGNATURE] = json!(signature);
            }
            let calls: Vec<Value> = round
                .calls
                .iter()
                .enumerate()
                .map(|(c, (name, input, _, _))| {
                    json!({"id": format!("call_{r}_{c}"), "type": "function",
                           "function": {"name": name, "arguments": input.to_string()}})
                })
                .collect();
            if !calls.is_empty() {
                assistant["tool_calls"] = Value::Array(calls);
            }
            messages.push(assistant);
            for (c, (_, _, result, _)) in round.calls.iter().enumerate() {
                messages.push(json!({"role": "tool", "tool_call_id": format!("call_{r}_{c}"), "content": result}));
            }
        }
        let mut request = json!({"model": "m", "messages": messages,
            "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]});
        if let Some(t) = sampling.temperature {
            request["temperature"] = json!(t);
        }
        if let Some(p) = sampling.top_p {
            request["top_p"] = json!(p);
        }
        if let Some(m) = sampling.max_tokens {
            request["max_completion_tokens"] = json!(m);
        }
        if !sampling.stop.is_empty() {
            request["stop"] = json!(sampling.stop);
        }
        if sampling.stream {
            request["stream"] = json!(true);
        }
        if let Some(parallel) = parallel {
            request["parallel_tool_calls"] = json!(parallel);
        }
        if let Some(choice) = choice {
            request["tool_choice"] = choice;
        }
        serde_json::from_value(request).unwrap()
    }

    #[derive(Debug, PartialEq)]
    struct OpenAiTurn {
        role: openai::Role,
        text: Option<String>,
        reasoning: Option<(String, Option<Value>)>,
        calls: Vec<(String, String, Value)>,
        tool_call_id: Option<String>,
    }

    fn openai_view(req: &openai::ChatRequest) -> Vec<OpenAiTurn> {
        req.messages
            .iter()
            .map(|m| OpenAiTurn {
                role: m.role,
                text: m.content.as_ref().map(|c| match c {
                    openai::MessageContent::Text(t) => t.clone(),
                    openai::MessageContent::Parts(parts) => parts
                        .iter()
                        .map(|p| match p {
                            openai::ContentPart::Text { text } => text.as_str(),
                            other => panic!("{other:?}"),
                        })
                        .collect::<Vec<_>>()
                        .join("\n\n"),
                }),
                reasoning: m
                    .reasoning_content
                    .clone()
                    .map(|r| (r, m.extra.get(REASONING_SIGNATURE).cloned())),
                calls: m
                    .tool_calls
                    .iter()
                    .flatten()
                    .map(|c| {
                        (
                            c.id.clone(),
                            c.function.name.clone(),
                            serde_json::from_str(&c.function.arguments).unwrap(),
                        )
                    })
                    .collect(),
                tool_call_id: m.tool_call_id.clone(),
            })
            .collect()
    }

    /// Builds the Anthropic response a round's assistant turn would be.
    fn anthropic_response(
        round: &Round,
        stop: anthropic::StopReason,
        usage: (u64, u64, Option<u64>),
    ) -> anthropic::MessagesResponse {
        let mut content = Vec::new();
        if let Some((thinking, signature)) = &round.thinking {
            content.push(
                serde_json::from_value(
                    json!({"type": "thinking", "thinking": thinking, "signature": signature}),
                )
                .unwrap(),
            );
        }
        if let Some(text) = &round.assistant_text {
            content.push(text_block(text));
        }
        for (c, (name, input, _, _)) in round.calls.iter().enumerate() {
            content.push(
                serde_json::from_value(json!({"type": "tool_use", "id": format!("toolu_{c}"), "name": name, "input": input}))
                    .unwrap(),
            );
        }
        anthropic::MessagesResponse {
            id: "msg_1".into(),
            kind: "message".into(),
            role: anthropic::Role::Assistant,
            model: "claude".into(),
            content,
            stop_reason: Some(stop),
            stop_sequence: None,
            usage: anthropic::Usage {
                input_tokens: usage.0,
                output_tokens: usage.1,
                cache_read_input_tokens: usage.2,
                ..Default::default()
            },
            extra: Map::new(),
        }
    }

    fn stop_reason(has_calls: bool, max: bool) -> anthropic::StopReason {
        match (max, has_calls) {
            (true, _) => anthropic::StopReason::MaxTokens,
            (false, true) => anthropic::StopReason::ToolUse,
            (false, false) => anthropic::StopReason::EndTurn,
        }
    }

    /// The response as Anthropic would stream it: text, thinking and tool input cut into
    /// pieces at the given points.
    fn anthropic_stream(resp: &anthropic::MessagesResponse, cuts: &[usize]) -> Vec<SseEvent> {
        fn pieces(text: &str, cuts: &[usize]) -> Vec<String> {
            let chars: Vec<char> = text.chars().collect();
            let mut out = Vec::new();
            let mut start = 0;
            for cut in cuts {
                let end = (start + cut).min(chars.len());
                if end > start {
                    out.push(chars[start..end].iter().collect());
                }
                start = end;
            }
            if start < chars.len() {
                out.push(chars[start..].iter().collect());
            }
            out
        }
        let mut events = Vec::new();
        let mut push = |event: anthropic::StreamEvent| {
            events.push(SseEvent::named(
                event.name(),
                serde_json::to_string(&event).unwrap(),
            ));
        };
        let mut start = resp.clone();
        start.content.clear();
        start.stop_reason = None;
        start.usage.output_tokens = 0;
        push(anthropic::StreamEvent::MessageStart { message: start });
        push(anthropic::StreamEvent::Ping);
        for (index, block) in resp.content.iter().enumerate() {
            let index = u32::try_from(index).unwrap();
            let (start_block, deltas) = match block {
                anthropic::ContentBlock::Text(t) => (
                    text_block(""),
                    pieces(&t.text, cuts)
                        .into_iter()
                        .map(|text| anthropic::ContentDelta::TextDelta { text })
                        .collect::<Vec<_>>(),
                ),
                anthropic::ContentBlock::Thinking(t) => {
                    let mut deltas: Vec<_> = pieces(&t.thinking, cuts)
                        .into_iter()
                        .map(|thinking| anthropic::ContentDelta::ThinkingDelta { thinking })
                        .collect();
                    deltas.push(anthropic::ContentDelta::SignatureDelta {
                        signature: t.signature.clone().unwrap(),
                    });
                    (
                        serde_json::from_value(json!({"type": "thinking", "thinking": ""}))
                            .unwrap(),
                        deltas,
                    )
                }
                anthropic::ContentBlock::ToolUse(u) => {
                    let mut empty = u.clone();
                    empty.input = json!({});
                    (
                        anthropic::ContentBlock::ToolUse(empty),
                        pieces(&u.input.to_string(), cuts)
                            .into_iter()
                            .map(|partial_json| anthropic::ContentDelta::InputJsonDelta {
                                partial_json,
                            })
                            .collect(),
                    )
                }
                other => panic!("{other:?}"),
            };
            push(anthropic::StreamEvent::ContentBlockStart {
                index,
                content_block: start_block,
            });
            for delta in deltas {
                push(anthropic::StreamEvent::ContentBlockDelta { index, delta });
            }
            push(anthropic::StreamEvent::ContentBlockStop { index });
        }
        push(anthropic::StreamEvent::MessageDelta {
            delta: anthropic::MessageDelta {
                stop_reason: resp.stop_reason.clone(),
                ..Default::default()
            },
            usage: anthropic::DeltaUsage {
                output_tokens: resp.usage.output_tokens,
                ..Default::default()
            },
        });
        push(anthropic::StreamEvent::MessageStop);
        events
    }

    proptest! {
        // Failures print their minimal input; no regression files are written.
        #![proptest_config(ProptestConfig {
            cases: 200,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Anthropic request -> OpenAI -> Anthropic keeps the system prompt, roles, texts,
        /// signed thinking, tool call ids/names/inputs, tool results and the sampling
        /// parameters OpenAI has (not `top_k`).
        #[test]
        fn anthropic_request_round_trip(
            system in vec(text(), 0..3),
            rounds in vec(round(), 1..4),
            sampling in sampling(),
            choice in tool_choice(),
        ) {
            let original = build_anthropic(&system, &rounds, &sampling, choice.clone());
            let openai = anthropic_request_to_openai(&original, &OPTS).unwrap();
            let back = openai_request_to_anthropic(&openai, &OPTS).unwrap();
            prop_assert_eq!(anthropic_view(&back), anthropic_view(&original));
            prop_assert_eq!(back.temperature, original.temperature);
            prop_assert_eq!(back.top_p, original.top_p);
            prop_assert_eq!(back.max_tokens, original.max_tokens);
            prop_assert_eq!(&back.stop_sequences, &original.stop_sequences);
            prop_assert_eq!(back.stream, original.stream);
            prop_assert_eq!(back.thinking, None);
            prop_assert_eq!(normalized_choice(back.tool_choice), normalized_choice(choice));
            prop_assert_eq!(back.tools.map(|t| t.len()), Some(1));
        }

        /// OpenAI request -> Anthropic -> OpenAI keeps roles, texts, signed reasoning, tool
        /// call ids/names/arguments, tool results and the sampling parameters.
        #[test]
        fn openai_request_round_trip(
            system in vec(text(), 0..2),
            rounds in vec(round(), 1..4),
            sampling in sampling(),
            parallel in option::of(any::<bool>()),
            choice in option::of(prop_oneof![
                Just(json!("auto")),
                Just(json!("required")),
                Just(json!("none")),
                Just(json!({"type": "function", "function": {"name": "lookup"}})),
            ]),
        ) {
            let original = build_openai(&system, &rounds, &sampling, parallel, choice.clone());
            let anthropic = openai_request_to_anthropic(&original, &OPTS).unwrap();
            let back = anthropic_request_to_openai(&anthropic, &OPTS).unwrap();
            let mut expected = openai_view(&original);
            // Several system messages come back as one.
            if expected.iter().filter(|t| t.role == openai::Role::System).count() > 1 {
                let joined = system.join("\n\n");
                expected.retain(|t| t.role != openai::Role::System);
                expected.insert(0, OpenAiTurn { role: openai::Role::System, text: Some(joined), reasoning: None, calls: Vec::new(), tool_call_id: None });
            }
            prop_assert_eq!(openai_view(&back), expected);
            prop_assert_eq!(back.temperature, original.temperature);
            prop_assert_eq!(back.top_p, original.top_p);
            prop_assert_eq!(back.max_completion_tokens, Some(sampling.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)));
            prop_assert_eq!(back.stop.map(|s| s.to_vec()).unwrap_or_default(), sampling.stop.clone());
            prop_assert_eq!(back.stream, original.stream);
            // `parallel_tool_calls: true` is the default and comes back unset; without a
            // `tool_choice`, `false` comes back with `auto`.
            prop_assert_eq!(back.parallel_tool_calls, parallel.filter(|p| !p).filter(|_| choice != Some(json!("none"))));
            let expected_choice = match (&choice, parallel) {
                (None, Some(false)) => Some(json!("auto")),
                (choice, _) => choice.clone(),
            };
            prop_assert_eq!(back.tool_choice.map(|c| serde_json::to_value(c).unwrap()), expected_choice);
        }

        /// Anthropic response -> OpenAI -> Anthropic keeps thinking with its signature, the
        /// text, the calls, the stop reason and the usage.
        #[test]
        fn anthropic_response_round_trip(
            round in round(),
            max in any::<bool>(),
            usage in (0u64..100_000, 0u64..100_000, option::of(0u64..100_000)),
        ) {
            let original = anthropic_response(&round, stop_reason(!round.calls.is_empty(), max), usage);
            let back = openai_response_to_anthropic(&anthropic_response_to_openai(&original)).unwrap();
            prop_assert_eq!(&back.content, &original.content);
            prop_assert_eq!(&back.stop_reason, &original.stop_reason);
            prop_assert_eq!(&back.usage, &original.usage);
        }

        /// An Anthropic stream -> OpenAI chunks -> Anthropic events is a valid documented
        /// flow describing the same message, whatever the delta boundaries.
        #[test]
        fn anthropic_stream_round_trip(
            round in round(),
            max in any::<bool>(),
            usage in (0u64..100_000, 0u64..100_000, option::of(0u64..100_000)),
            cuts in vec(1usize..6, 0..8),
        ) {
            let original = anthropic_response(&round, stop_reason(!round.calls.is_empty(), max), usage);
            let upstream = anthropic_stream(&original, &cuts);
            let chunks = run(&mut AnthropicToOpenAiStream::new(true), &upstream).unwrap();
            // The streamed message is the one the non-streaming translation gives (an
            // empty `content` and a missing one say the same).
            let message = |response: &openai::ChatResponse| {
                let mut message = response.choices[0].message.clone();
                message.content = message.content.filter(|c| !c.is_empty());
                message
            };
            let streamed = assemble_openai(&chunks);
            prop_assert_eq!(message(&streamed), message(&anthropic_response_to_openai(&original)));
            prop_assert_eq!(&streamed.choices[0].finish_reason, &anthropic_response_to_openai(&original).choices[0].finish_reason);
            let events = run(&mut OpenAiToAnthropicStream::new(), &chunks).unwrap();
            let back = assemble_anthropic(&events);
            prop_assert_eq!(&back.content, &original.content);
            prop_assert_eq!(&back.stop_reason, &original.stop_reason);
            prop_assert_eq!(&back.usage, &original.usage);
        }

        /// OpenAI response -> Anthropic -> OpenAI keeps the text, reasoning, calls (ids,
        /// names, arguments), finish reason and usage.
        #[test]
        fn openai_response_round_trip(
            round in round(),
            length in any::<bool>(),
            usage in (0u64..100_000, 0u64..100_000, option::of(0u64..100_000)),
        ) {
            let (input, output, cached) = usage;
            let original = anthropic_response_to_openai(&anthropic_response(&round, stop_reason(!round.calls.is_empty(), length), (input, output, cached)));
            let back = anthropic_response_to_openai(&openai_response_to_anthropic(&original).unwrap());
            prop_assert_eq!(&back.choices, &original.choices);
            prop_assert_eq!(&back.usage, &original.usage);
            prop_assert_eq!(&back.model, &original.model);
        }
    }
}
