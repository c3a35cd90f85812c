//! Anthropic Messages <-> Gemini generateContent translation (`translate::anthropic_gemini`).
//!
//! Golden fixtures are the providers' documented examples (see `tests/fixtures.rs` for the
//! pages): Anthropic's Messages API reference, its streaming, tool use and extended thinking
//! guides (docs.anthropic.com/en/api/messages, /en/docs/build-with-claude/streaming,
//! /en/docs/agents-and-tools/tool-use/implement-tool-use,
//! /en/docs/build-with-claude/extended-thinking, /en/api/messages-count-tokens) and Gemini's
//! API reference and guides (ai.google.dev/api/generate-content, /api/tokens,
//! /gemini-api/docs/function-calling, /gemini-api/docs/thinking,
//! /gemini-api/docs/thought-signatures). `anthropic/messages_request_claude_code.json` has
//! the shapes Claude Code sends (system text blocks with `cache_control`, JSON Schema tools,
//! tool results as text blocks); `gemini/stream_events_function_call.json` is a function
//! calling stream in the documented event shape.
#![allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]

use std::path::PathBuf;

use fulcrum_protocol::sse::SseEvent;
use fulcrum_protocol::translate::anthropic_gemini::*;
use fulcrum_protocol::{StreamTranslator, TranslateError, TranslateOptions, anthropic, gemini};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

const SKIP: &str = "skip_thought_signature_validator";

fn fixture(path: &str) -> Value {
    let full = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path);
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn urls_allowed() -> TranslateOptions {
    TranslateOptions {
        allow_image_urls: true,
    }
}

fn anthropic_to_gemini_with(value: Value, opts: &TranslateOptions) -> Value {
    let req: anthropic::MessagesRequest = serde_json::from_value(value).unwrap();
    let (_, out) = anthropic_request_to_gemini(&req, opts).unwrap();
    serde_json::to_value(out).unwrap()
}

fn anthropic_to_gemini(value: Value) -> Value {
    anthropic_to_gemini_with(value, &TranslateOptions::default())
}

fn anthropic_to_gemini_err(value: Value, opts: &TranslateOptions) -> TranslateError {
    let req: anthropic::MessagesRequest = serde_json::from_value(value).unwrap();
    anthropic_request_to_gemini(&req, opts).unwrap_err()
}

fn gemini_to_anthropic_with(value: Value, opts: &TranslateOptions) -> Value {
    let req: gemini::GenerateContentRequest = serde_json::from_value(value).unwrap();
    let out = gemini_request_to_anthropic("claude-x", &req, opts).unwrap();
    serde_json::to_value(out).unwrap()
}

fn gemini_to_anthropic(value: Value) -> Value {
    gemini_to_anthropic_with(value, &TranslateOptions::default())
}

fn gemini_to_anthropic_err(value: Value) -> TranslateError {
    let req: gemini::GenerateContentRequest = serde_json::from_value(value).unwrap();
    gemini_request_to_anthropic("claude-x", &req, &TranslateOptions::default()).unwrap_err()
}

fn run<T: StreamTranslator>(translator: &mut T, events: &[SseEvent]) -> Vec<SseEvent> {
    let mut out = Vec::new();
    for event in events {
        translator.on_event(event, &mut out).unwrap();
    }
    translator.finish(&mut out).unwrap();
    out
}

/// The JSON of each event, checked to be named after its `type`.
fn named_json(events: &[SseEvent]) -> Vec<Value> {
    events
        .iter()
        .map(|e| {
            let value: Value = serde_json::from_str(&e.data).unwrap();
            assert_eq!(e.event.as_deref(), value["type"].as_str(), "{value}");
            value
        })
        .collect()
}

fn unnamed_json(events: &[SseEvent]) -> Vec<Value> {
    events
        .iter()
        .map(|e| {
            assert_eq!(e.event, None);
            serde_json::from_str(&e.data).unwrap()
        })
        .collect()
}

/// Checks the event grammar Anthropic documents: `message_start`, blocks opened, filled
/// and closed one at a time with indexes counting from 0, `message_delta`, `message_stop`.
fn check_anthropic_stream(events: &[Value]) {
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types.first(), Some(&"message_start"), "{types:?}");
    assert_eq!(types.last(), Some(&"message_stop"), "{types:?}");
    assert_eq!(types[types.len() - 2], "message_delta", "{types:?}");
    let mut next = 0;
    let mut open: Option<u64> = None;
    for event in &events[1..events.len() - 2] {
        let index = event["index"].as_u64();
        match event["type"].as_str().unwrap() {
            "content_block_start" => {
                assert_eq!(open, None, "block opened inside another");
                assert_eq!(index, Some(next));
                open = index;
                next += 1;
            }
            "content_block_delta" => assert_eq!(index, open),
            "content_block_stop" => {
                assert_eq!(index, open);
                open = None;
            }
            "ping" => {}
            other => panic!("unexpected {other} inside the message"),
        }
    }
    assert_eq!(open, None, "a block was left open");
}

/// Folds Anthropic stream events back into the message's content blocks and stop reason.
fn assemble_anthropic(events: &[Value]) -> (Vec<Value>, Value) {
    let mut blocks: Vec<Value> = Vec::new();
    let mut json_input = String::new();
    let mut stop = Value::Null;
    for event in events {
        match event["type"].as_str().unwrap() {
            "content_block_start" => {
                blocks.push(event["content_block"].clone());
                json_input.clear();
            }
            "content_block_delta" => {
                let block = blocks.last_mut().unwrap();
                let delta = &event["delta"];
                match delta["type"].as_str().unwrap() {
                    "text_delta" => {
                        let text = block["text"].as_str().unwrap().to_owned();
                        block["text"] = json!(text + delta["text"].as_str().unwrap());
                    }
                    "thinking_delta" => {
                        let text = block["thinking"].as_str().unwrap().to_owned();
                        block["thinking"] = json!(text + delta["thinking"].as_str().unwrap());
                    }
                    "signature_delta" => block["signature"] = delta["signature"].clone(),
                    "input_json_delta" => {
                        json_input.push_str(delta["partial_json"].as_str().unwrap())
                    }
                    other => panic!("unexpected delta {other}"),
                }
            }
            "content_block_stop" => {
                let block = blocks.last_mut().unwrap();
                if block["type"] == "tool_use" && !json_input.is_empty() {
                    block["input"] = serde_json::from_str(&json_input).unwrap();
                }
            }
            "message_delta" => stop = event["delta"]["stop_reason"].clone(),
            _ => {}
        }
    }
    (blocks, stop)
}

fn sse_data(values: &[Value]) -> Vec<SseEvent> {
    values
        .iter()
        .map(|v| SseEvent::data(v.to_string()))
        .collect()
}

// ===== Anthropic request -> Gemini =====

#[test]
fn basic_request() {
    let req: anthropic::MessagesRequest =
        serde_json::from_value(fixture("anthropic/messages_request_basic.json")).unwrap();
    let (model, out) = anthropic_request_to_gemini(&req, &TranslateOptions::default()).unwrap();
    assert_eq!(model, "claude-sonnet-4-20250514");
    assert_eq!(
        serde_json::to_value(out).unwrap(),
        json!({
            "contents": [{"role": "user", "parts": [{"text": "Hello, world"}]}],
            "generationConfig": {"maxOutputTokens": 1024}
        })
    );
}

#[test]
fn system_text_blocks_become_the_system_instruction_without_cache_control() {
    let out = anthropic_to_gemini(fixture("anthropic/messages_request_system_cache.json"));
    assert_eq!(
        out["systemInstruction"],
        json!({"parts": [
            {"text": "You are an AI assistant tasked with analyzing literary works. Your goal is to provide insightful commentary on themes, characters, and writing style.\n"},
            {"text": "<the entire contents of 'Pride and Prejudice'>"}
        ]})
    );
    let out = anthropic_to_gemini(json!({
        "model": "m", "max_tokens": 10, "system": "Be brief.",
        "messages": [{"role": "user", "content": "hi"}]
    }));
    assert_eq!(
        out["systemInstruction"],
        json!({"parts": [{"text": "Be brief."}]})
    );
}

#[test]
fn tools_tool_choice_and_sampling() {
    let mut value = fixture("anthropic/messages_request_tools.json");
    // Anthropic's server tools cannot run on Gemini.
    assert!(matches!(
        anthropic_to_gemini_err(value.clone(), &TranslateOptions::default()),
        TranslateError::UnsupportedValue { field: "tools[].type", value } if value == "web_search_20250305"
    ));
    value["tools"].as_array_mut().unwrap().remove(1);
    let out = anthropic_to_gemini(value);
    assert_eq!(
        out,
        json!({
            "contents": [{"role": "user", "parts": [{"text": "What is the weather like in San Francisco?"}]}],
            "tools": [{"functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Get the current weather in a given location",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "description": "The unit of temperature, either 'celsius' or 'fahrenheit'"}
                        },
                        "required": ["location"]
                    }
                },
                // A tool without arguments has no `parameters` (Gemini refuses empty objects).
                {"name": "noop"}
            ]}],
            // `disable_parallel_tool_use` has no Gemini counterpart.
            "toolConfig": {"functionCallingConfig": {"mode": "ANY"}},
            "generationConfig": {
                "temperature": 0.5, "topP": 0.9, "topK": 40, "maxOutputTokens": 1024,
                "stopSequences": ["\n\nHuman:"]
            }
        })
    );
}

#[test]
fn tool_choice_modes() {
    let choice = |choice: Value| {
        let out = anthropic_to_gemini(json!({
            "model": "m", "max_tokens": 10, "tool_choice": choice,
            "tools": [{"name": "f", "input_schema": {"type": "object", "properties": {"a": {"type": "string"}}}}],
            "messages": [{"role": "user", "content": "hi"}]
        }));
        out["toolConfig"]["functionCallingConfig"].clone()
    };
    assert_eq!(
        choice(json!({"type": "auto", "disable_parallel_tool_use": true})),
        json!({"mode": "AUTO"})
    );
    assert_eq!(choice(json!({"type": "any"})), json!({"mode": "ANY"}));
    assert_eq!(
        choice(json!({"type": "tool", "name": "f"})),
        json!({"mode": "ANY", "allowedFunctionNames": ["f"]})
    );
    assert_eq!(choice(json!({"type": "none"})), json!({"mode": "NONE"}));
    // Without tools there is nothing to configure.
    let out = anthropic_to_gemini(json!({
        "model": "m", "max_tokens": 10, "tool_choice": {"type": "none"},
        "messages": [{"role": "user", "content": "hi"}]
    }));
    assert_eq!(out.get("toolConfig"), None);
}

#[test]
fn tool_history_keeps_ids_and_names_results_from_their_call() {
    let value = fixture("anthropic/messages_request_tool_result.json");
    // The documented example answers ids no tool_use made.
    assert!(matches!(
        anthropic_to_gemini_err(value.clone(), &TranslateOptions::default()),
        TranslateError::UnknownToolCallId { id } if id == "toolu_02"
    ));
    let mut value = value;
    value["messages"][2]["content"]
        .as_array_mut()
        .unwrap()
        .truncate(1);
    let out = anthropic_to_gemini(value);
    assert_eq!(
        out["contents"],
        json!([
            {"role": "user", "parts": [{"text": "What's the weather like in San Francisco?"}]},
            {"role": "model", "parts": [
                {"text": "I'll check the current weather in San Francisco for you."},
                {
                    "functionCall": {"id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather", "args": {"location": "San Francisco, CA", "unit": "celsius"}},
                    // Gemini never signed this call; Gemini 3 wants a signature on it.
                    "thoughtSignature": SKIP
                }
            ]},
            {"role": "user", "parts": [{"functionResponse": {
                "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather",
                "response": {"output": "15 degrees"}
            }}]}
        ])
    );
    assert_eq!(
        out["toolConfig"],
        json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}})
    );
}

#[test]
fn parallel_calls_errors_and_images_in_results() {
    let out = anthropic_to_gemini(json!({
        "model": "m", "max_tokens": 100,
        "messages": [
            {"role": "user", "content": "Weather in London and Paris?"},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_a", "name": "weather", "input": {"city": "London"}},
                {"type": "tool_use", "id": "toolu_b", "name": "weather", "input": {"city": "Paris"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_a", "content": [
                    {"type": "text", "text": "15C"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"}}
                ]},
                {"type": "tool_result", "tool_use_id": "toolu_b", "is_error": true, "content": [
                    {"type": "text", "text": "timeout"}, {"type": "text", "text": "retry later"}
                ]},
                {"type": "text", "text": "Be quick."}
            ]}
        ]
    }));
    assert_eq!(
        out["contents"],
        json!([
            {"role": "user", "parts": [{"text": "Weather in London and Paris?"}]},
            // The user text after the results starts a new turn, so these calls are not
            // in the turn Gemini 3 validates: no placeholder signature.
            {"role": "model", "parts": [
                {"functionCall": {"id": "toolu_a", "name": "weather", "args": {"city": "London"}}},
                {"functionCall": {"id": "toolu_b", "name": "weather", "args": {"city": "Paris"}}}
            ]},
            {"role": "user", "parts": [
                {"functionResponse": {"id": "toolu_a", "name": "weather", "response": {"output": "15C"}}},
                {"functionResponse": {"id": "toolu_b", "name": "weather", "response": {"error": "timeout\nretry later"}}}
            ]},
            {"role": "user", "parts": [
                {"inlineData": {"mimeType": "image/png", "data": "iVBORw0K"}},
                {"text": "Be quick."}
            ]}
        ])
    );
}

#[test]
fn only_the_current_turn_gets_the_placeholder_signature() {
    let out = anthropic_to_gemini(json!({
        "model": "m", "max_tokens": 100,
        "messages": [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "one"}]},
            {"role": "assistant", "content": "done"},
            {"role": "user", "content": "second"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t2", "name": "f", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t2", "content": "two"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t3", "name": "f", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t3", "content": "three"}]}
        ]
    }));
    let signatures: Vec<Value> = out["contents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["role"] == "model")
        .map(|c| c["parts"][0]["thoughtSignature"].clone())
        .collect();
    assert_eq!(
        signatures,
        vec![Value::Null, Value::Null, json!(SKIP), json!(SKIP)]
    );
}

#[test]
fn images_and_documents() {
    let value = fixture("anthropic/messages_request_image.json");
    assert!(matches!(
        anthropic_to_gemini_err(value.clone(), &TranslateOptions::default()),
        TranslateError::ImageUrlNotAllowed
    ));
    assert!(matches!(
        anthropic_to_gemini_err(value.clone(), &urls_allowed()),
        TranslateError::UnsupportedContent { role, kind } if role == "user" && kind == "image with a file source"
    ));
    let mut value = value;
    value["messages"][0]["content"]
        .as_array_mut()
        .unwrap()
        .remove(2);
    let out = anthropic_to_gemini_with(value, &urls_allowed());
    assert_eq!(
        out["contents"],
        json!([{"role": "user", "parts": [
            {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/4AAQSkZJRgABAQEASABIAAD"}},
            {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://upload.wikimedia.org/wikipedia/commons/a/a7/Camponotus_flavomarginatus_ant.jpg"}},
            {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0xLjcK"}},
            {"text": "Describe these images."}
        ]}])
    );
    // A `data:` URL is inline data, allowed or not; text documents are text.
    let out = anthropic_to_gemini(json!({
        "model": "m", "max_tokens": 10,
        "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "url", "url": "data:image/png;base64,iVBOR"}},
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "The grass is green."}},
            {"type": "document", "source": {"type": "content", "content": [{"type": "text", "text": "Sky is blue."}]}}
        ]}]
    }));
    assert_eq!(
        out["contents"][0]["parts"],
        json!([
            {"inlineData": {"mimeType": "image/png", "data": "iVBOR"}},
            {"text": "The grass is green."},
            {"text": "Sky is blue."}
        ])
    );
    let bad = json!({
        "model": "m", "max_tokens": 10,
        "messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "data:image/png,raw"}}]}]
    });
    assert!(matches!(
        anthropic_to_gemini_err(bad, &TranslateOptions::default()),
        TranslateError::InvalidDataUrl
    ));
}

#[test]
fn thinking_config_and_foreign_thinking_blocks() {
    let out = anthropic_to_gemini(fixture("anthropic/messages_request_thinking.json"));
    assert_eq!(
        out["generationConfig"],
        json!({"maxOutputTokens": 16000, "thinkingConfig": {"thinkingBudget": 10000, "includeThoughts": true}})
    );
    // Claude's signed and redacted thinking mean nothing to Gemini.
    assert_eq!(
        out["contents"],
        json!([
            {"role": "user", "parts": [{"text": "Are there an infinite number of prime numbers such that n mod 4 == 3?"}]},
            {"role": "model", "parts": [{"text": "Yes, there are infinitely many prime numbers p such that p mod 4 = 3."}]},
            {"role": "user", "parts": [{"text": "Thanks!"}]}
        ])
    );
    let thinking = |config: Value| {
        anthropic_to_gemini(json!({
            "model": "m", "max_tokens": 10, "thinking": config,
            "messages": [{"role": "user", "content": "hi"}]
        }))["generationConfig"]
            .get("thinkingConfig")
            .cloned()
    };
    assert_eq!(thinking(json!({"type": "disabled"})), None);
    assert_eq!(
        thinking(json!({"type": "adaptive"})),
        Some(json!({"thinkingBudget": -1, "includeThoughts": true}))
    );
}

#[test]
fn gemini_signatures_return_to_their_parts() {
    let out = anthropic_to_gemini(json!({
        "model": "m", "max_tokens": 100,
        "messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "plan", "signature": "gemini-next:SIG1"},
                {"type": "tool_use", "id": "toolu_gemini_00aa", "name": "f", "input": {}},
                {"type": "tool_use", "id": "fc-2", "name": "g", "input": {"x": 1}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_gemini_00aa", "content": "a"},
                {"type": "tool_result", "tool_use_id": "fc-2", "content": "b"}
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "mine", "signature": "gemini:SIG3"},
                {"type": "text", "text": "Done"},
                {"type": "thinking", "thinking": "", "signature": "gemini-prev:SIG2"},
                {"type": "thinking", "thinking": "unsigned"},
                {"type": "thinking", "thinking": "claude's", "signature": "EqQBCgIYAh"},
                {"type": "redacted_thinking", "data": "EmwKAhgB"},
                {"type": "thinking", "thinking": "", "signature": "gemini-next:SIG4"}
            ]},
            {"role": "user", "content": "thanks"}
        ]
    }));
    assert_eq!(
        out["contents"],
        json!([
            {"role": "user", "parts": [{"text": "go"}]},
            {"role": "model", "parts": [
                {"text": "plan", "thought": true},
                // Made-up ids are Gemini's no-ids again.
                {"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "SIG1"},
                {"functionCall": {"id": "fc-2", "name": "g", "args": {"x": 1}}}
            ]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "f", "response": {"output": "a"}}},
                {"functionResponse": {"id": "fc-2", "name": "g", "response": {"output": "b"}}}
            ]},
            {"role": "model", "parts": [
                {"text": "mine", "thought": true, "thoughtSignature": "SIG3"},
                {"text": "Done", "thoughtSignature": "SIG2"},
                // A `gemini-next:` signature with nothing after it keeps an empty part.
                {"text": "", "thoughtSignature": "SIG4"}
            ]},
            {"role": "user", "parts": [{"text": "thanks"}]}
        ])
    );
}

#[test]
fn claude_code_request() {
    let out = anthropic_to_gemini(fixture("anthropic/messages_request_claude_code.json"));
    assert_eq!(
        out,
        json!({
            "systemInstruction": {"parts": [
                {"text": "You are Claude Code, Anthropic's official CLI for Claude."},
                {"text": "You are an interactive CLI tool that helps users with software engineering tasks."}
            ]},
            "contents": [
                {"role": "user", "parts": [
                    {"text": "<system-reminder>\nAs you answer the user's questions, you can use the following context.\n</system-reminder>"},
                    {"text": "list the files"}
                ]},
                {"role": "model", "parts": [
                    {"text": "I'll list the files."},
                    {"functionCall": {"id": "toolu_01VrxkG3rkFbu6AS8mzt7y6Z", "name": "Bash", "args": {"command": "ls", "description": "List files"}}, "thoughtSignature": SKIP}
                ]},
                {"role": "user", "parts": [{"functionResponse": {
                    "id": "toolu_01VrxkG3rkFbu6AS8mzt7y6Z", "name": "Bash", "response": {"output": "Cargo.toml\nsrc"}
                }}]}
            ],
            "tools": [{"functionDeclarations": [
                {
                    "name": "Bash",
                    "description": "Executes a given bash command in a persistent shell session.",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "command": {"type": "string", "description": "The command to execute"},
                            "timeout": {"type": "number", "description": "Optional timeout in milliseconds (max 600000)"},
                            "run_in_background": {"type": "boolean", "description": "Set to true to run this command in the background."}
                        },
                        "required": ["command"]
                    }
                },
                {
                    "name": "TodoWrite",
                    "description": "Use this tool to create and manage a structured task list for your current coding session.",
                    "parameters": {
                        "type": "object",
                        "properties": {"todos": {
                            "type": "array",
                            "description": "The updated todo list",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "content": {"type": "string"},
                                    "status": {"type": "string", "enum": ["pending", "in_progress", "completed"]},
                                    "id": {"type": "string"}
                                },
                                "required": ["content", "status", "id"]
                            }
                        }},
                        "required": ["todos"]
                    }
                }
            ]}],
            "generationConfig": {"temperature": 1.0, "maxOutputTokens": 32000}
        })
    );
}

#[test]
fn client_errors_name_the_problem() {
    let bad_input = json!({
        "model": "m", "max_tokens": 10,
        "messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": [1]}]}]
    });
    assert!(matches!(
        anthropic_to_gemini_err(bad_input, &TranslateOptions::default()),
        TranslateError::InvalidToolArguments { name, .. } if name == "f"
    ));
    let bad_schema = json!({
        "model": "m", "max_tokens": 10,
        "tools": [{"name": "f", "input_schema": {"$ref": "#/$defs/Missing"}}],
        "messages": [{"role": "user", "content": "hi"}]
    });
    let err = anthropic_to_gemini_err(bad_schema, &TranslateOptions::default());
    assert!(err.is_client_error());
    assert!(
        err.to_string().contains("input_schema of tool `f`"),
        "{err}"
    );
    let server_block = json!({
        "model": "m", "max_tokens": 10,
        "messages": [{"role": "assistant", "content": [{"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}}]}]
    });
    assert!(matches!(
        anthropic_to_gemini_err(server_block, &TranslateOptions::default()),
        TranslateError::UnsupportedContent { role, kind } if role == "assistant" && kind == "server_tool_use"
    ));
}

// ===== Gemini response -> Anthropic =====

fn gemini_response(path: &str) -> gemini::GenerateContentResponse {
    serde_json::from_value(fixture(path)).unwrap()
}

#[test]
fn text_response() {
    let out = gemini_response_to_anthropic(
        &gemini_response("gemini/generate_response_text.json"),
        "claude-x",
    );
    assert_eq!(
        serde_json::to_value(out).unwrap(),
        json!({
            "id": "msg_mAitaLmkHPPlz7IPvtfUqQ4",
            "type": "message",
            "role": "assistant",
            "model": "claude-x",
            "content": [{"type": "text", "text": "AI works by learning patterns from data."}],
            "stop_reason": "end_turn",
            "stop_sequence": null,
            // Thinking counts as output, as Anthropic counts it.
            "usage": {"input_tokens": 4, "output_tokens": 1104}
        })
    );
}

#[test]
fn function_call_response_carries_ids_and_signatures() {
    let resp = gemini_response("gemini/generate_response_function_call.json");
    let out = serde_json::to_value(gemini_response_to_anthropic(&resp, "claude-x")).unwrap();
    let generated = out["content"][1]["id"].as_str().unwrap().to_owned();
    assert!(
        generated.starts_with(GENERATED_TOOL_ID_PREFIX),
        "{generated}"
    );
    assert_eq!(
        out["content"],
        json!([
            {"type": "thinking", "thinking": "", "signature": "gemini-next:CsoBAVSoXO7aA1vCmKlH"},
            {"type": "tool_use", "id": generated, "name": "schedule_meeting", "input": {
                "attendees": ["Bob", "Alice"], "date": "2025-03-14", "time": "10:00", "topic": "Q3 planning"
            }},
            {"type": "tool_use", "id": "fc-2", "name": "get_current_temperature", "input": {"location": "London"}}
        ])
    );
    assert_eq!(out["stop_reason"], "tool_use");
    assert_eq!(
        out["usage"],
        json!({"input_tokens": 120, "output_tokens": 90, "cache_read_input_tokens": 0})
    );
    // The same answer gets the same ids.
    let again = serde_json::to_value(gemini_response_to_anthropic(&resp, "claude-x")).unwrap();
    assert_eq!(again["content"][1]["id"], json!(generated));
}

#[test]
fn thoughts_response() {
    let out = gemini_response_to_anthropic(
        &gemini_response("gemini/generate_response_thoughts.json"),
        "claude-x",
    );
    let out = serde_json::to_value(out).unwrap();
    assert_eq!(
        out["content"],
        json!([
            // An unsigned summary: no `signature` at all rather than an empty one.
            {"type": "thinking", "thinking": "**Analyzing the question**\nThe user asks about primes."},
            {"type": "text", "text": "Yes, there are infinitely many primes."},
            {"type": "thinking", "thinking": "", "signature": "gemini-prev:EpYECpMEAVSoXO5"}
        ])
    );
    assert_eq!(out["stop_reason"], "max_tokens");
    assert_eq!(
        out["usage"],
        json!({"input_tokens": 12, "output_tokens": 59})
    );
}

#[test]
fn finish_reasons_and_blocked_prompts() {
    let reason = |finish: &str| {
        let resp: gemini::GenerateContentResponse = serde_json::from_value(json!({
            "candidates": [{"content": {"role": "model", "parts": [{"text": "x"}]}, "finishReason": finish}]
        }))
        .unwrap();
        serde_json::to_value(gemini_response_to_anthropic(&resp, "m").stop_reason).unwrap()
    };
    assert_eq!(reason("STOP"), "end_turn");
    assert_eq!(reason("MAX_TOKENS"), "max_tokens");
    for refusal in [
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
    ] {
        assert_eq!(reason(refusal), "refusal");
    }
    assert_eq!(reason("MALFORMED_FUNCTION_CALL"), "end_turn");
    let blocked: gemini::GenerateContentResponse = serde_json::from_value(json!({
        "promptFeedback": {"blockReason": "SAFETY"},
        "usageMetadata": {"promptTokenCount": 7, "totalTokenCount": 7}
    }))
    .unwrap();
    let out = gemini_response_to_anthropic(&blocked, "m");
    assert_eq!(out.stop_reason, Some(anthropic::StopReason::Refusal));
    assert!(out.content.is_empty());
    assert!(out.id.starts_with("msg_"));
}

#[test]
fn gemini_answer_goes_back_to_gemini_as_it_came() {
    // An Anthropic client sends the answer back as history; Gemini gets its parts again,
    // signatures where they were.
    let resp = gemini_response("gemini/generate_response_function_call.json");
    let message = gemini_response_to_anthropic(&resp, "claude-x");
    let request = json!({
        "model": "m", "max_tokens": 100,
        "messages": [
            {"role": "user", "content": "Schedule it"},
            {"role": "assistant", "content": message.content}
        ]
    });
    let out = anthropic_to_gemini(request);
    let original =
        serde_json::to_value(&resp.candidates[0].content.as_ref().unwrap().parts).unwrap();
    assert_eq!(out["contents"][1]["parts"], original);
}

// ===== Gemini stream -> Anthropic =====

#[test]
fn gemini_text_stream() {
    let events = sse_data(fixture("gemini/stream_events.json").as_array().unwrap());
    let out = named_json(&run(&mut GeminiToAnthropicStream::new("claude-x"), &events));
    check_anthropic_stream(&out);
    assert_eq!(
        out,
        vec![
            json!({"type": "message_start", "message": {
                "id": "msg_x1", "type": "message", "role": "assistant", "model": "claude-x",
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 9, "output_tokens": 0}
            }}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "The"}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " quick brown fox"}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"input_tokens": 9, "output_tokens": 5}}),
            json!({"type": "message_stop"}),
        ]
    );
}

#[test]
fn gemini_function_call_stream() {
    let chunks = fixture("gemini/stream_events_function_call.json");
    let events = sse_data(chunks.as_array().unwrap());
    let out = named_json(&run(&mut GeminiToAnthropicStream::new("claude-x"), &events));
    check_anthropic_stream(&out);
    let first = out[5]["content_block"]["id"].clone();
    let second = out[8]["content_block"]["id"].clone();
    assert_ne!(first, second);
    assert_eq!(
        out,
        vec![
            json!({"type": "message_start", "message": {
                "id": "msg_aBcD-123", "type": "message", "role": "assistant", "model": "claude-x",
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 72, "output_tokens": 0}
            }}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "**Checking the weather**\nThe user wants two cities."}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "gemini-next:CsoBAVSoXO7aA1vCmKlH"}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": first, "name": "get_current_temperature", "input": {}}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"location\":\"London\"}"}}),
            json!({"type": "content_block_stop", "index": 1}),
            json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": second, "name": "get_current_temperature", "input": {}}}),
            json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{\"location\":\"Paris\"}"}}),
            json!({"type": "content_block_stop", "index": 2}),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"input_tokens": 72, "output_tokens": 70}}),
            json!({"type": "message_stop"}),
        ]
    );
    // The stream and the whole answer agree, ids included.
    let mut merged: gemini::GenerateContentResponse =
        serde_json::from_value(chunks[1].clone()).unwrap();
    let mut parts = chunks[0]["candidates"][0]["content"]["parts"]
        .as_array()
        .unwrap()
        .clone();
    parts.extend(
        chunks[1]["candidates"][0]["content"]["parts"]
            .as_array()
            .unwrap()
            .clone(),
    );
    merged.candidates[0].content.as_mut().unwrap().parts =
        serde_json::from_value(json!(parts)).unwrap();
    let whole = serde_json::to_value(gemini_response_to_anthropic(&merged, "claude-x")).unwrap();
    let (blocks, stop) = assemble_anthropic(&out);
    assert_eq!(json!(blocks), whole["content"]);
    assert_eq!(stop, whole["stop_reason"]);
}

#[test]
fn gemini_stream_signature_on_the_last_text_part() {
    let events = sse_data(&[
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}}], "responseId": "r"}),
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "lo"}]}}]}),
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "", "thoughtSignature": "SIG"}]}, "finishReason": "STOP"}]}),
    ]);
    let out = named_json(&run(&mut GeminiToAnthropicStream::new("m"), &events));
    check_anthropic_stream(&out);
    let (blocks, stop) = assemble_anthropic(&out);
    assert_eq!(
        blocks,
        vec![
            json!({"type": "text", "text": "Hello"}),
            json!({"type": "thinking", "thinking": "", "signature": "gemini-prev:SIG"}),
        ]
    );
    assert_eq!(stop, "end_turn");
    // No usage was ever sent: the message still starts and ends as Anthropic's do.
    assert_eq!(
        out[0]["message"]["usage"],
        json!({"input_tokens": 0, "output_tokens": 0})
    );
    assert_eq!(out[out.len() - 2]["usage"], json!({"output_tokens": 0}));
    // Given back, the signature sits on the text again.
    let history = anthropic_to_gemini(json!({
        "model": "m", "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": blocks}]
    }));
    assert_eq!(
        history["contents"][1]["parts"],
        json!([{"text": "Hello", "thoughtSignature": "SIG"}])
    );
}

#[test]
fn gemini_stream_errors_and_empty_streams() {
    let mut translator = GeminiToAnthropicStream::new("m");
    let mut out = Vec::new();
    translator
        .on_event(
            &SseEvent::data(fixture("gemini/stream_events.json")[0].to_string()),
            &mut out,
        )
        .unwrap();
    let err = translator
        .on_event(
            &SseEvent::data(json!({"error": {"code": 429, "message": "Resource has been exhausted", "status": "RESOURCE_EXHAUSTED"}}).to_string()),
            &mut out,
        )
        .unwrap_err();
    assert!(matches!(
        &err,
        TranslateError::Upstream { status: Some(status), message }
            if status == "RESOURCE_EXHAUSTED" && message == "Resource has been exhausted"
    ));
    assert!(!err.is_client_error());
    let err = translator
        .on_event(&SseEvent::data("{not json"), &mut out)
        .unwrap_err();
    assert!(matches!(err, TranslateError::InvalidUpstreamJson { .. }));

    // A stream that ends before Gemini's finishReason was cut: closing the message would
    // pass a truncated answer off as a whole one.
    let mut cut = GeminiToAnthropicStream::new("m");
    let mut out = Vec::new();
    cut.on_event(
        &SseEvent::data(fixture("gemini/stream_events.json")[0].to_string()),
        &mut out,
    )
    .unwrap();
    assert!(matches!(
        cut.finish(&mut out),
        Err(TranslateError::InvalidUpstreamJson {
            what: "gemini stream",
            ..
        })
    ));
    assert!(GeminiToAnthropicStream::new("m").finish(&mut out).is_err());

    let blocked = sse_data(&[json!({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}})]);
    let out = named_json(&run(&mut GeminiToAnthropicStream::new("m"), &blocked));
    check_anthropic_stream(&out);
    assert_eq!(out[1]["delta"]["stop_reason"], "refusal");
}

// ===== Gemini request -> Anthropic =====

#[test]
fn gemini_text_request() {
    let out = gemini_to_anthropic(fixture("gemini/generate_request_text.json"));
    assert_eq!(
        out,
        json!({
            "model": "claude-x",
            "max_tokens": DEFAULT_MAX_TOKENS,
            "system": "You are a cat. Your name is Neko.",
            "messages": [{"role": "user", "content": "Hello there"}]
        })
    );
}

#[test]
fn gemini_config_request() {
    let value = fixture("gemini/generate_request_config.json");
    // 800 tokens leave no room for Anthropic's smallest thinking budget: no thinking, and
    // the sampling settings stay.
    assert_eq!(
        gemini_to_anthropic(value.clone()),
        json!({
            "model": "claude-x",
            "max_tokens": 800,
            "messages": [{"role": "user", "content": "Explain how AI works"}],
            "stop_sequences": ["Title"],
            "temperature": 1.0,
            "top_p": 0.8,
            "top_k": 10
        })
    );
    // With room to think, Anthropic refuses temperature, top_k and a low top_p.
    let mut value = value;
    value["generationConfig"]["maxOutputTokens"] = json!(4000);
    let out = gemini_to_anthropic(value);
    assert_eq!(
        out["thinking"],
        json!({"type": "enabled", "budget_tokens": 1024})
    );
    assert_eq!(out.get("temperature"), None);
    assert_eq!(out.get("top_k"), None);
    assert_eq!(out.get("top_p"), None);
}

#[test]
fn gemini_function_calling_request() {
    let out = gemini_to_anthropic(fixture("gemini/generate_request_function_calling.json"));
    assert_eq!(
        out["tools"],
        json!([{
            "name": "schedule_meeting",
            "description": "Schedules a meeting with specified attendees at a given time and date.",
            "input_schema": {
                "type": "object",
                "properties": {
                    "attendees": {"type": "array", "items": {"type": "string"}, "description": "List of people attending the meeting."},
                    "date": {"type": "string", "description": "Date of the meeting (e.g., '2024-07-29')"},
                    "time": {"type": "string", "description": "Time of the meeting (e.g., '15:00')"},
                    "topic": {"type": "string", "description": "The subject or topic of the meeting."}
                },
                "required": ["attendees", "date", "time", "topic"]
            }
        }])
    );
    assert_eq!(out.get("tool_choice"), None);
}

#[test]
fn gemini_function_history_request() {
    let value = fixture("gemini/generate_request_function_history.json");
    assert!(matches!(
        gemini_to_anthropic_err(value.clone()),
        TranslateError::UnsupportedValue { field: "tools", value } if value == "googleSearch"
    ));
    let mut value = value;
    value["tools"].as_array_mut().unwrap().truncate(1);
    let out = gemini_to_anthropic(value);
    let id = out["messages"][1]["content"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(id.starts_with(GENERATED_TOOL_ID_PREFIX));
    assert_eq!(
        out["messages"],
        json!([
            {"role": "user", "content": "What's the temperature in London?"},
            // Gemini's signature on the call means nothing to Anthropic.
            {"role": "assistant", "content": [{"type": "tool_use", "id": id, "name": "get_current_temperature", "input": {"location": "London"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": id, "content": "{\"temperature\":15,\"unit\":\"C\"}"}]}
        ])
    );
    assert_eq!(
        out["tool_choice"],
        json!({"type": "tool", "name": "get_current_temperature"})
    );
}

#[test]
fn gemini_json_mode_and_image_requests() {
    // Anthropic has no response schema: nothing is added, the request still goes.
    let out = gemini_to_anthropic(fixture("gemini/generate_request_json_mode.json"));
    assert_eq!(
        out,
        json!({
            "model": "claude-x", "max_tokens": DEFAULT_MAX_TOKENS,
            "messages": [{"role": "user", "content": "List a few popular cookie recipes, and include the amounts of ingredients."}]
        })
    );
    let value = fixture("gemini/generate_request_image.json");
    assert!(matches!(
        gemini_to_anthropic_err(value.clone()),
        TranslateError::UnsupportedContent { role, kind } if role == "user" && kind == "fileData"
    ));
    let mut value = value;
    value["contents"][0]["parts"]
        .as_array_mut()
        .unwrap()
        .remove(1);
    assert_eq!(
        gemini_to_anthropic(value)["messages"],
        json!([{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQSkZJRgABAQEASABIAAD"}},
            {"type": "text", "text": "Caption this image."}
        ]}])
    );
    let web = json!({"contents": [{"parts": [
        {"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/a.png"}},
        {"fileData": {"mimeType": "application/pdf", "fileUri": "https://example.com/a.pdf"}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0x"}}
    ]}]});
    assert!(matches!(
        gemini_to_anthropic_err(web.clone()),
        TranslateError::ImageUrlNotAllowed
    ));
    assert_eq!(
        gemini_to_anthropic_with(web, &urls_allowed())["messages"][0]["content"],
        json!([
            {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
            {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}},
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}}
        ])
    );
}

#[test]
fn gemini_turns_alternate_and_results_come_first() {
    let out = gemini_to_anthropic(json!({
        "contents": [
            {"role": "user", "parts": [{"text": "a"}]},
            {"role": "user", "parts": [{"text": "b"}]},
            {"role": "model", "parts": [
                {"functionCall": {"name": "f", "args": {"n": 1}}},
                {"functionCall": {"id": "own", "name": "f", "args": {"n": 2}}}
            ]},
            {"role": "user", "parts": [
                {"text": "results:"},
                {"functionResponse": {"id": "own", "name": "f", "response": {"error": "boom"}}},
                {"functionResponse": {"name": "f", "response": {"output": {"ok": true}}}}
            ]}
        ]
    }));
    let first = out["messages"][1]["content"][0]["id"].clone();
    assert_eq!(
        out["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": first, "name": "f", "input": {"n": 1}},
                {"type": "tool_use", "id": "own", "name": "f", "input": {"n": 2}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "own", "content": "boom", "is_error": true},
                {"type": "tool_result", "tool_use_id": first, "content": "{\"ok\":true}"},
                {"type": "text", "text": "results:"}
            ]}
        ])
    );
    let orphan = json!({"contents": [{"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]}]});
    assert!(matches!(
        gemini_to_anthropic_err(orphan),
        TranslateError::InvalidRequest(_)
    ));
    let unknown = json!({"contents": [{"role": "user", "parts": [{"functionResponse": {"id": "x", "name": "f", "response": {}}}]}]});
    assert!(matches!(
        gemini_to_anthropic_err(unknown),
        TranslateError::UnknownToolCallId { id } if id == "x"
    ));
}

#[test]
fn gemini_settings_without_anthropic_counterpart() {
    let base = |config: Value| json!({"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": config});
    assert!(matches!(
        gemini_to_anthropic_err(base(json!({"candidateCount": 2}))),
        TranslateError::UnsupportedValue {
            field: "generationConfig.candidateCount",
            ..
        }
    ));
    assert!(matches!(
        gemini_to_anthropic_err(base(json!({"responseModalities": ["TEXT", "IMAGE"]}))),
        TranslateError::UnsupportedValue { field: "generationConfig.responseModalities", value } if value == "IMAGE"
    ));
    let cached =
        json!({"contents": [{"parts": [{"text": "hi"}]}], "cachedContent": "cachedContents/abc"});
    assert!(matches!(
        gemini_to_anthropic_err(cached),
        TranslateError::UnsupportedValue {
            field: "cachedContent",
            ..
        }
    ));
    let out = gemini_to_anthropic(base(
        json!({"temperature": 1.7, "seed": 3, "presencePenalty": 0.2}),
    ));
    assert_eq!(out["temperature"], json!(1.0));
    assert_eq!(out.get("seed"), None);
}

#[test]
fn gemini_thinking_and_forced_tools() {
    let request = |thinking: Value, mode: &str| {
        gemini_to_anthropic(json!({
            "contents": [{"parts": [{"text": "hi"}]}],
            "tools": [{"functionDeclarations": [{"name": "f"}]}],
            "toolConfig": {"functionCallingConfig": {"mode": mode}},
            "generationConfig": {"maxOutputTokens": 30000, "thinkingConfig": thinking}
        }))
    };
    let out = request(
        json!({"thinkingLevel": "high", "includeThoughts": true}),
        "AUTO",
    );
    assert_eq!(
        out["thinking"],
        json!({"type": "enabled", "budget_tokens": 24576})
    );
    assert_eq!(out["tool_choice"], json!({"type": "auto"}));
    assert_eq!(
        out["tools"][0]["input_schema"],
        json!({"type": "object", "properties": {}})
    );
    // Anthropic refuses thinking with a forced tool: the tool wins.
    let out = request(json!({"thinkingBudget": 2048}), "ANY");
    assert_eq!(out.get("thinking"), None);
    assert_eq!(out["tool_choice"], json!({"type": "any"}));
    let out = request(json!({"thinkingBudget": 0}), "NONE");
    assert_eq!(out.get("thinking"), None);
    assert_eq!(out["tool_choice"], json!({"type": "none"}));
}

#[test]
fn gemini_schemas_become_json_schema() {
    let out = gemini_to_anthropic(json!({
        "contents": [{"parts": [{"text": "hi"}]}],
        "tools": [{"functionDeclarations": [
            {"name": "a", "parameters": {"type": "OBJECT", "properties": {"x": {"type": "STRING", "nullable": true}}}},
            {"name": "b", "parametersJsonSchema": {"type": "object", "additionalProperties": false}}
        ]}]
    }));
    assert_eq!(
        out["tools"],
        json!([
            {"name": "a", "input_schema": {"type": "object", "properties": {"x": {"type": ["string", "null"]}}}},
            {"name": "b", "input_schema": {"type": "object", "additionalProperties": false}}
        ])
    );
}

#[test]
fn claude_thinking_returns_from_gemini_clients() {
    let out = gemini_to_anthropic(json!({
        "contents": [
            {"role": "user", "parts": [{"text": "hi"}]},
            {"role": "model", "parts": [
                {"text": "Let me ", "thought": true},
                {"text": "think.", "thought": true},
                {"thought": true, "thoughtSignature": "CLAUDETHEqQBCgIY"},
                {"thought": true, "thoughtSignature": "CLAUDERTEmwKAhgB"},
                {"text": "Gemini's own", "thought": true, "thoughtSignature": "CiQBVKhc"},
                {"text": "unsigned", "thought": true},
                {"text": "Hello"}
            ]}
        ]
    }));
    assert_eq!(
        out["messages"][1]["content"],
        json!([
            {"type": "thinking", "thinking": "Let me think.", "signature": "EqQBCgIY"},
            {"type": "redacted_thinking", "data": "EmwKAhgB"},
            {"type": "text", "text": "Hello"}
        ])
    );
}

// ===== Anthropic response -> Gemini =====

#[test]
fn anthropic_text_response() {
    let resp: anthropic::MessagesResponse =
        serde_json::from_value(fixture("anthropic/messages_response.json")).unwrap();
    assert_eq!(
        serde_json::to_value(anthropic_response_to_gemini(&resp)).unwrap(),
        json!({
            "candidates": [{
                "content": {"role": "model", "parts": [{"text": "Hi! My name is Claude."}]},
                "finishReason": "STOP",
                "index": 0
            }],
            "usageMetadata": {"promptTokenCount": 2095, "candidatesTokenCount": 503, "totalTokenCount": 2598},
            "modelVersion": "claude-sonnet-4-20250514",
            "responseId": "msg_013Zva2CMHLNnXjNJJKqJ2EF"
        })
    );
}

#[test]
fn anthropic_tool_use_response() {
    let resp: anthropic::MessagesResponse =
        serde_json::from_value(fixture("anthropic/messages_response_tool_use.json")).unwrap();
    let out = serde_json::to_value(anthropic_response_to_gemini(&resp)).unwrap();
    assert_eq!(
        out["candidates"][0]["content"]["parts"],
        json!([
            {"text": "I should call get_weather.", "thought": true, "thoughtSignature": "CLAUDETHEqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"},
            {"text": "I'll check the current weather in San Francisco for you."},
            {"functionCall": {"id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather", "args": {"location": "San Francisco, CA", "unit": "celsius"}}}
            // The server tool call has no Gemini part.
        ])
    );
    assert_eq!(out["candidates"][0]["finishReason"], "STOP");
    assert_eq!(
        out["usageMetadata"],
        json!({"promptTokenCount": 472, "candidatesTokenCount": 89, "totalTokenCount": 561})
    );
}

#[test]
fn anthropic_stop_reasons_and_cache_usage() {
    let response = |stop: &str| {
        let resp: anthropic::MessagesResponse = serde_json::from_value(json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
            "content": [{"type": "redacted_thinking", "data": "EmwKAhgB"}],
            "stop_reason": stop, "stop_sequence": null,
            "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20}
        }))
        .unwrap();
        serde_json::to_value(anthropic_response_to_gemini(&resp)).unwrap()
    };
    let out = response("max_tokens");
    assert_eq!(out["candidates"][0]["finishReason"], "MAX_TOKENS");
    assert_eq!(
        out["candidates"][0]["content"]["parts"],
        json!([{"thought": true, "thoughtSignature": "CLAUDERTEmwKAhgB"}])
    );
    assert_eq!(
        out["usageMetadata"],
        json!({"promptTokenCount": 130, "candidatesTokenCount": 5, "totalTokenCount": 135, "cachedContentTokenCount": 100})
    );
    assert_eq!(
        response("refusal")["candidates"][0]["finishReason"],
        "SAFETY"
    );
    assert_eq!(
        response("stop_sequence")["candidates"][0]["finishReason"],
        "STOP"
    );
    assert_eq!(
        response("tool_use")["candidates"][0]["finishReason"],
        "STOP"
    );
    assert_eq!(
        response("model_context_window_exceeded")["candidates"][0]["finishReason"],
        "MAX_TOKENS"
    );
}

// ===== Anthropic stream -> Gemini =====

fn anthropic_events(values: &[Value]) -> Vec<SseEvent> {
    values
        .iter()
        .map(|v| SseEvent::named(v["event"].as_str().unwrap(), v["data"].to_string()))
        .collect()
}

#[test]
fn anthropic_stream_to_gemini() {
    let fixture = fixture("anthropic/stream_events.json");
    let all = anthropic_events(fixture.as_array().unwrap());
    let (events, error) = all.split_at(all.len() - 1);
    let out = unnamed_json(&run(&mut AnthropicToGeminiStream::new(), events));
    let event = |parts: Value| {
        json!({
            "candidates": [{"content": {"role": "model", "parts": parts}, "index": 0}],
            "modelVersion": "claude-sonnet-4-20250514",
            "responseId": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY"
        })
    };
    assert_eq!(
        out,
        vec![
            event(json!([{"text": "Let me solve this step by step.", "thought": true}])),
            event(
                json!([{"thought": true, "thoughtSignature": "CLAUDETHEqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"}])
            ),
            event(json!([{"text": "Hello"}])),
            event(
                json!([{"functionCall": {"id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather", "args": {"location": "San Francisco, CA"}}}])
            ),
            json!({
                "candidates": [{"finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": 25, "candidatesTokenCount": 89, "totalTokenCount": 114},
                "modelVersion": "claude-sonnet-4-20250514",
                "responseId": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY"
            }),
        ]
    );

    // A Gemini client gives the streamed parts back; Anthropic gets its blocks again.
    let parts: Vec<Value> = out
        .iter()
        .flat_map(|e| {
            e["candidates"][0]["content"]["parts"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    let history = gemini_to_anthropic(json!({"contents": [
        {"role": "user", "parts": [{"text": "hi"}]},
        {"role": "model", "parts": parts},
        {"role": "user", "parts": [{"functionResponse": {"id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather", "response": {"output": "sunny"}}}]}
    ]}));
    assert_eq!(
        history["messages"][1]["content"],
        json!([
            {"type": "thinking", "thinking": "Let me solve this step by step.", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"},
            {"type": "text", "text": "Hello"},
            {"type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather", "input": {"location": "San Francisco, CA"}}
        ])
    );
    assert_eq!(
        history["messages"][2]["content"],
        json!([{"type": "tool_result", "tool_use_id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "content": "sunny"}])
    );

    let mut translator = AnthropicToGeminiStream::new();
    let mut sink = Vec::new();
    let err = translator.on_event(&error[0], &mut sink).unwrap_err();
    assert!(matches!(
        err,
        TranslateError::Upstream { status: Some(status), message } if status == "overloaded_error" && message == "Overloaded"
    ));
}

#[test]
fn anthropic_stream_cut_before_message_stop_is_an_error() {
    let message_start = json!({"event": "message_start", "data": {"type": "message_start", "message": {
        "id": "msg_2", "type": "message", "role": "assistant", "content": [], "model": "claude",
        "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 3, "output_tokens": 1}
    }}});
    let text = json!({"event": "content_block_delta", "data": {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}});
    let delta = json!({"event": "message_delta", "data": {"type": "message_delta", "delta": {"stop_reason": "max_tokens", "stop_sequence": null}, "usage": {"output_tokens": 2}}});
    let stop = json!({"event": "message_stop", "data": {"type": "message_stop"}});

    let events = anthropic_events(&[message_start.clone(), text.clone(), delta.clone(), stop]);
    let out = unnamed_json(&run(&mut AnthropicToGeminiStream::new(), &events));
    assert_eq!(out.len(), 2);
    assert_eq!(out[1]["candidates"][0]["finishReason"], "MAX_TOKENS");
    assert_eq!(
        out[1]["usageMetadata"],
        json!({"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 5})
    );

    let mut translator = AnthropicToGeminiStream::new();
    let mut out = Vec::new();
    for event in anthropic_events(&[message_start, text, delta]) {
        translator.on_event(&event, &mut out).unwrap();
    }
    let err = translator.finish(&mut out).unwrap_err();
    assert!(matches!(
        err,
        TranslateError::InvalidUpstreamJson {
            what: "anthropic stream",
            ..
        }
    ));
    assert!(!err.is_client_error());
    assert!(matches!(
        AnthropicToGeminiStream::new().finish(&mut out),
        Err(TranslateError::InvalidUpstreamJson { .. })
    ));

    let bad_json = anthropic_events(&[
        json!({"event": "content_block_start", "data": {"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {}}}}),
        json!({"event": "content_block_delta", "data": {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{\"a\":"}}}),
        json!({"event": "content_block_stop", "data": {"type": "content_block_stop", "index": 0}}),
    ]);
    let mut translator = AnthropicToGeminiStream::new();
    let mut sink = Vec::new();
    translator.on_event(&bad_json[0], &mut sink).unwrap();
    translator.on_event(&bad_json[1], &mut sink).unwrap();
    assert!(matches!(
        translator.on_event(&bad_json[2], &mut sink),
        Err(TranslateError::InvalidUpstreamJson { .. })
    ));
}

// ===== Count tokens =====

#[test]
fn count_tokens_both_ways() {
    let req: anthropic::CountTokensRequest =
        serde_json::from_value(fixture("anthropic/count_tokens_request.json")).unwrap();
    let (model, out) =
        anthropic_count_tokens_to_gemini(&req, &TranslateOptions::default()).unwrap();
    assert_eq!(model, "claude-sonnet-4-20250514");
    assert_eq!(
        serde_json::to_value(out).unwrap(),
        json!({"generateContentRequest": {
            "model": "models/claude-sonnet-4-20250514",
            "contents": [{"role": "user", "parts": [{"text": "Hello, Claude"}]}],
            "systemInstruction": {"parts": [{"text": "You are a scientist"}]},
            "tools": [{"functionDeclarations": [{
                "name": "get_weather",
                "description": "Get the current weather in a given location",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "description": "The unit of temperature, either 'celsius' or 'fahrenheit'"}
                    },
                    "required": ["location"]
                }
            }]}]
        }})
    );
    let resp: gemini::CountTokensResponse =
        serde_json::from_value(fixture("gemini/count_tokens_response.json")).unwrap();
    assert_eq!(
        serde_json::to_value(gemini_count_tokens_response_to_anthropic(&resp)).unwrap(),
        json!({"input_tokens": 10})
    );

    let count = |path: &str| {
        let req: gemini::CountTokensRequest = serde_json::from_value(fixture(path)).unwrap();
        serde_json::to_value(
            gemini_count_tokens_to_anthropic("claude-x", &req, &TranslateOptions::default())
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(
        count("gemini/count_tokens_request.json"),
        json!({"model": "claude-x", "messages": [{"role": "user", "content": "The quick brown fox jumps over the lazy dog."}]})
    );
    assert_eq!(
        count("gemini/count_tokens_request_full.json"),
        json!({"model": "claude-x", "system": "You are a cat.", "messages": [{"role": "user", "content": "Hi my name is Bob"}]})
    );
    let resp: anthropic::CountTokensResponse =
        serde_json::from_value(fixture("anthropic/count_tokens_response.json")).unwrap();
    assert_eq!(
        serde_json::to_value(anthropic_count_tokens_response_to_gemini(&resp)).unwrap(),
        json!({"totalTokens": 2095})
    );
}

// ===== Round trips =====

/// What a round trip must keep of one message: its role, its texts, its calls (id, name,
/// input) and its results (id, text, error flag). Adjacent texts are joined: both sides may
/// split or merge text parts.
#[derive(Debug, Clone, PartialEq)]
struct Turn {
    user: bool,
    texts: Vec<String>,
    calls: Vec<(String, String, Value)>,
    results: Vec<(String, String, bool)>,
}

/// Consecutive messages of one role are one turn, as Anthropic reads them.
fn anthropic_turns(messages: &[anthropic::Message]) -> Vec<Turn> {
    let turns: Vec<Turn> = messages
        .iter()
        .map(|m| {
            let mut turn = Turn {
                user: m.role == anthropic::Role::User,
                texts: Vec::new(),
                calls: Vec::new(),
                results: Vec::new(),
            };
            let blocks = match &m.content {
                anthropic::MessageContent::Text(text) => {
                    vec![anthropic::ContentBlock::text(text.clone())]
                }
                anthropic::MessageContent::Blocks(blocks) => blocks.clone(),
            };
            for block in blocks {
                match block {
                    anthropic::ContentBlock::Text(text) => turn.texts.push(text.text),
                    anthropic::ContentBlock::ToolUse(call) => {
                        turn.calls.push((call.id, call.name, call.input))
                    }
                    anthropic::ContentBlock::ToolResult(result) => {
                        let text = match result.content {
                            Some(anthropic::ToolResultContent::Text(text)) => text,
                            Some(anthropic::ToolResultContent::Blocks(blocks)) => blocks
                                .iter()
                                .filter_map(|b| match b {
                                    anthropic::ContentBlock::Text(t) => Some(t.text.clone()),
                                    _ => None,
                                })
                                .collect::<Vec<_>>()
                                .join("\n"),
                            None => String::new(),
                        };
                        turn.results.push((
                            result.tool_use_id,
                            text,
                            result.is_error == Some(true),
                        ));
                    }
                    other => panic!("unexpected block {other:?}"),
                }
            }
            turn
        })
        .collect();
    let mut merged: Vec<Turn> = Vec::new();
    for turn in turns {
        match merged.last_mut() {
            Some(last) if last.user == turn.user => {
                last.texts.extend(turn.texts);
                last.calls.extend(turn.calls);
                last.results.extend(turn.results);
            }
            _ => merged.push(turn),
        }
    }
    merged
}

fn text_strategy() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 .,!?\n]{1,24}"
}

fn args_strategy() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(
        "[a-z]{1,6}",
        prop_oneof![
            any::<i32>().prop_map(Value::from),
            "[a-z ]{0,8}".prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
        ],
        0..3,
    )
    .prop_map(|m| Value::Object(m.into_iter().collect::<Map<String, Value>>()))
}

const NAMES: [&str; 3] = ["get_weather", "search", "Bash"];

/// One exchange: the user's text, then the assistant's text and calls, then the user's
/// results for those calls (and possibly more text).
#[derive(Debug, Clone)]
struct Exchange {
    question: String,
    answer: Option<String>,
    calls: Vec<(String, usize, Value)>,
    results: Vec<(String, bool)>,
    follow_up: Option<String>,
}

fn exchange_strategy() -> impl Strategy<Value = Exchange> {
    (
        text_strategy(),
        prop::option::of(text_strategy()),
        prop::collection::vec(("[A-Za-z0-9]{6,12}", 0..NAMES.len(), args_strategy()), 0..3),
        prop::collection::vec((text_strategy(), any::<bool>()), 3),
        prop::option::of(text_strategy()),
    )
        .prop_map(|(question, answer, calls, results, follow_up)| Exchange {
            question,
            answer,
            calls,
            results,
            follow_up,
        })
}

fn exchanges_to_anthropic(exchanges: &[Exchange]) -> Vec<Value> {
    let mut messages = Vec::new();
    for (n, exchange) in exchanges.iter().enumerate() {
        messages.push(json!({"role": "user", "content": exchange.question}));
        let mut blocks = Vec::new();
        if let Some(answer) = &exchange.answer {
            blocks.push(json!({"type": "text", "text": answer}));
        }
        for (id, name, args) in &exchange.calls {
            blocks.push(json!({"type": "tool_use", "id": format!("toolu_{n}_{id}"), "name": NAMES[*name], "input": args}));
        }
        if blocks.is_empty() {
            blocks.push(json!({"type": "text", "text": "ok"}));
        }
        messages.push(json!({"role": "assistant", "content": blocks}));
        if !exchange.calls.is_empty() {
            let mut blocks: Vec<Value> = exchange
                .calls
                .iter()
                .zip(&exchange.results)
                .map(|((id, _, _), (text, error))| {
                    let mut block = json!({"type": "tool_result", "tool_use_id": format!("toolu_{n}_{id}"), "content": [{"type": "text", "text": text}]});
                    if *error {
                        block["is_error"] = json!(true);
                    }
                    block
                })
                .collect();
            if let Some(text) = &exchange.follow_up {
                blocks.push(json!({"type": "text", "text": text}));
            }
            messages.push(json!({"role": "user", "content": blocks}));
        }
    }
    messages
}

/// temperature, top_p, top_k, max tokens, stop sequences.
type Sampling = (
    Option<f64>,
    Option<f64>,
    Option<u32>,
    u32,
    Option<Vec<String>>,
);

fn sampling_strategy() -> impl Strategy<Value = Sampling> {
    (
        prop::option::of((0u32..=100).prop_map(|t| f64::from(t) / 100.0)),
        prop::option::of((1u32..=100).prop_map(|t| f64::from(t) / 100.0)),
        prop::option::of(1u32..100),
        1u32..64000,
        prop::option::of(prop::collection::vec("[A-Z]{1,5}", 1..4)),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn anthropic_to_gemini_to_anthropic_keeps_the_conversation(
        exchanges in prop::collection::vec(exchange_strategy(), 1..4),
        (temperature, top_p, top_k, max_tokens, stop) in sampling_strategy(),
        system in prop::option::of(text_strategy()),
        choice in prop::option::of(0usize..4),
    ) {
        let mut value = json!({
            "model": "claude-x",
            "max_tokens": max_tokens,
            "messages": exchanges_to_anthropic(&exchanges),
            "tools": NAMES.iter().map(|n| json!({"name": n, "description": "d", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}})).collect::<Vec<_>>(),
        });
        if let Some(t) = temperature { value["temperature"] = json!(t); }
        if let Some(p) = top_p { value["top_p"] = json!(p); }
        if let Some(k) = top_k { value["top_k"] = json!(k); }
        if let Some(stop) = &stop { value["stop_sequences"] = json!(stop); }
        if let Some(system) = &system { value["system"] = json!(system); }
        if let Some(choice) = choice {
            value["tool_choice"] = [json!({"type": "auto"}), json!({"type": "any"}), json!({"type": "tool", "name": "search"}), json!({"type": "none"})][choice].clone();
        }
        let original: anthropic::MessagesRequest = serde_json::from_value(value).unwrap();
        let (model, gemini) = anthropic_request_to_gemini(&original, &TranslateOptions::default()).unwrap();
        let back = gemini_request_to_anthropic(&model, &gemini, &TranslateOptions::default()).unwrap();

        prop_assert_eq!(anthropic_turns(&back.messages), anthropic_turns(&original.messages));
        prop_assert_eq!(back.temperature, original.temperature);
        prop_assert_eq!(back.top_p, original.top_p);
        prop_assert_eq!(back.top_k, original.top_k);
        prop_assert_eq!(back.max_tokens, original.max_tokens);
        prop_assert_eq!(&back.stop_sequences, &original.stop_sequences);
        prop_assert_eq!(&back.tool_choice, &original.tool_choice);
        prop_assert_eq!(back.system.is_some(), original.system.is_some());
        let names: Vec<String> = back.tools.iter().flatten().map(|t| match t {
            anthropic::Tool::Custom(t) => t.name.clone(),
            anthropic::Tool::Server(_) => String::new(),
        }).collect();
        prop_assert_eq!(names, NAMES.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>());
    }

    #[test]
    fn gemini_to_anthropic_to_gemini_keeps_the_conversation(
        exchanges in prop::collection::vec(exchange_strategy(), 1..4),
        (temperature, top_p, top_k, max_tokens, stop) in sampling_strategy(),
        with_ids in any::<bool>(),
    ) {
        let mut contents = Vec::new();
        for (n, exchange) in exchanges.iter().enumerate() {
            contents.push(json!({"role": "user", "parts": [{"text": exchange.question}]}));
            let mut parts = Vec::new();
            if let Some(answer) = &exchange.answer {
                parts.push(json!({"text": answer}));
            }
            for (id, name, args) in &exchange.calls {
                let mut call = json!({"name": NAMES[*name], "args": args});
                if with_ids { call["id"] = json!(format!("{n}-{id}")); }
                parts.push(json!({"functionCall": call}));
            }
            if parts.is_empty() {
                parts.push(json!({"text": "ok"}));
            }
            contents.push(json!({"role": "model", "parts": parts}));
            if !exchange.calls.is_empty() {
                let responses: Vec<Value> = exchange.calls.iter().zip(&exchange.results).map(|((id, name, _), (text, error))| {
                    let key = if *error { "error" } else { "output" };
                    let mut response = json!({"name": NAMES[*name], "response": {key: text}});
                    if with_ids { response["id"] = json!(format!("{n}-{id}")); }
                    json!({"functionResponse": response})
                }).collect();
                contents.push(json!({"role": "user", "parts": responses}));
            }
        }
        let mut config = json!({"maxOutputTokens": max_tokens});
        if let Some(t) = temperature { config["temperature"] = json!(t); }
        if let Some(p) = top_p { config["topP"] = json!(p); }
        if let Some(k) = top_k { config["topK"] = json!(k); }
        if let Some(stop) = &stop { config["stopSequences"] = json!(stop); }
        let original: gemini::GenerateContentRequest = serde_json::from_value(json!({
            "contents": contents, "generationConfig": config,
            "systemInstruction": {"parts": [{"text": "sys"}]},
        })).unwrap();
        let anthropic = gemini_request_to_anthropic("claude-x", &original, &TranslateOptions::default()).unwrap();
        let (_, back) = anthropic_request_to_gemini(&anthropic, &TranslateOptions::default()).unwrap();

        // Signatures aside (Gemini 3's placeholder is added on the way back), the contents
        // come back as they were: roles, text, calls with their ids (or none), results.
        let mut back_contents = serde_json::to_value(&back.contents).unwrap();
        for content in back_contents.as_array_mut().unwrap() {
            for part in content["parts"].as_array_mut().unwrap() {
                part.as_object_mut().unwrap().remove("thoughtSignature");
            }
        }
        prop_assert_eq!(back_contents, serde_json::to_value(&original.contents).unwrap());
        let config = back.generation_config.unwrap();
        let original_config = original.generation_config.unwrap();
        prop_assert_eq!(config.temperature, original_config.temperature);
        prop_assert_eq!(config.top_p, original_config.top_p);
        prop_assert_eq!(config.top_k, original_config.top_k);
        prop_assert_eq!(config.max_output_tokens, original_config.max_output_tokens);
        prop_assert_eq!(config.stop_sequences, original_config.stop_sequences);
        prop_assert_eq!(back.system_instruction, original.system_instruction);
    }

    #[test]
    fn gemini_stream_agrees_with_the_whole_answer(
        parts in prop::collection::vec(gemini_part_strategy(), 0..8),
        cuts in prop::collection::vec(any::<bool>(), 8),
        finish in prop::sample::select(vec!["STOP", "MAX_TOKENS", "SAFETY"]),
    ) {
        let mut chunks: Vec<Vec<Value>> = vec![Vec::new()];
        for (part, cut) in parts.iter().zip(cuts.iter().chain(std::iter::repeat(&false))) {
            chunks.last_mut().unwrap().push(part.clone());
            if *cut { chunks.push(Vec::new()); }
        }
        let last = chunks.len() - 1;
        let events: Vec<Value> = chunks.iter().enumerate().map(|(i, parts)| {
            let mut candidate = json!({"content": {"role": "model", "parts": parts}, "index": 0});
            if i == last { candidate["finishReason"] = json!(finish); }
            json!({"candidates": [candidate], "responseId": "resp", "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": i}})
        }).collect();
        let out = named_json(&run(&mut GeminiToAnthropicStream::new("m"), &sse_data(&events)));
        check_anthropic_stream(&out);
        let whole: gemini::GenerateContentResponse = serde_json::from_value(json!({
            "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": finish}],
            "responseId": "resp",
        })).unwrap();
        let whole = serde_json::to_value(gemini_response_to_anthropic(&whole, "m")).unwrap();
        let (blocks, stop) = assemble_anthropic(&out);
        prop_assert_eq!(json!(blocks), whole["content"].clone());
        prop_assert_eq!(stop, whole["stop_reason"].clone());
    }

    #[test]
    fn anthropic_stream_agrees_with_the_whole_answer_and_comes_back(
        blocks in prop::collection::vec(anthropic_block_strategy(), 1..6),
        split in 0usize..40,
    ) {
        let response = json!({
            "id": "msg_p", "type": "message", "role": "assistant", "model": "claude",
            "content": blocks, "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 1, "output_tokens": 2}
        });
        let resp: anthropic::MessagesResponse = serde_json::from_value(response).unwrap();
        let stream = anthropic_stream_for(&resp, split);
        let out = unnamed_json(&run(&mut AnthropicToGeminiStream::new(), &stream));
        let streamed: Vec<Value> = out
            .iter()
            .flat_map(|e| e["candidates"][0]["content"]["parts"].as_array().cloned().unwrap_or_default())
            .collect();
        let whole = serde_json::to_value(anthropic_response_to_gemini(&resp)).unwrap();
        let whole_parts = whole["candidates"][0]["content"]["parts"].clone();
        // Both come back to Anthropic as the blocks Claude sent (adjacent texts joined).
        let history = |parts: Value| {
            let value = gemini_to_anthropic(json!({"contents": [
                {"role": "user", "parts": [{"text": "q"}]},
                {"role": "model", "parts": parts}
            ]}));
            let messages: Vec<anthropic::Message> = serde_json::from_value(value["messages"].clone()).unwrap();
            join_texts(match &messages[1].content {
                anthropic::MessageContent::Text(text) => vec![anthropic::ContentBlock::text(text.clone())],
                anthropic::MessageContent::Blocks(blocks) => blocks.clone(),
            })
        };
        prop_assert_eq!(history(json!(streamed)), join_texts(resp.content.clone()));
        prop_assert_eq!(history(whole_parts), join_texts(resp.content.clone()));
    }
}

fn join_texts(blocks: Vec<anthropic::ContentBlock>) -> Vec<anthropic::ContentBlock> {
    let mut out: Vec<anthropic::ContentBlock> = Vec::new();
    for block in blocks {
        if let (Some(anthropic::ContentBlock::Text(last)), anthropic::ContentBlock::Text(text)) =
            (out.last_mut(), &block)
        {
            last.text.push_str(&text.text);
            continue;
        }
        out.push(block);
    }
    out
}

fn gemini_part_strategy() -> impl Strategy<Value = Value> {
    let signature = prop::option::of("[A-Za-z0-9+/]{4,12}");
    prop_oneof![
        (text_strategy(), signature.clone()).prop_map(|(text, sig)| {
            let mut part = json!({"text": text, "thought": true});
            if let Some(sig) = sig {
                part["thoughtSignature"] = json!(sig);
            }
            part
        }),
        (prop::option::of(text_strategy()), signature.clone()).prop_map(|(text, sig)| {
            let mut part = json!({"text": text.unwrap_or_default()});
            if let Some(sig) = sig {
                part["thoughtSignature"] = json!(sig);
            }
            part
        }),
        (
            0..NAMES.len(),
            args_strategy(),
            prop::option::of("[a-z0-9]{4}"),
            signature
        )
            .prop_map(|(name, args, id, sig)| {
                let mut call = json!({"name": NAMES[name], "args": args});
                if let Some(id) = id {
                    call["id"] = json!(id);
                }
                let mut part = json!({"functionCall": call});
                if let Some(sig) = sig {
                    part["thoughtSignature"] = json!(sig);
                }
                part
            }),
    ]
}

fn anthropic_block_strategy() -> impl Strategy<Value = Value> {
    prop_oneof![
        text_strategy().prop_map(|text| json!({"type": "text", "text": text})),
        (prop::option::of(text_strategy()), "[A-Za-z0-9+/]{8,16}").prop_map(|(text, sig)| {
            json!({"type": "thinking", "thinking": text.unwrap_or_default(), "signature": sig})
        }),
        "[A-Za-z0-9+/]{8,16}".prop_map(|data| json!({"type": "redacted_thinking", "data": data})),
        ("toolu_[A-Za-z0-9]{8}", 0..NAMES.len(), args_strategy()).prop_map(|(id, name, args)| {
            json!({"type": "tool_use", "id": id, "name": NAMES[name], "input": args})
        }),
    ]
}

/// The stream Anthropic would send for `resp`: text and thinking in two deltas split at
/// `split`, tool input JSON in two fragments.
fn anthropic_stream_for(resp: &anthropic::MessagesResponse, split: usize) -> Vec<SseEvent> {
    fn cut(text: &str, at: usize) -> (String, String) {
        let at = text
            .char_indices()
            .map(|(i, _)| i)
            .nth(at)
            .unwrap_or(text.len());
        (text[..at].to_owned(), text[at..].to_owned())
    }
    let mut events = Vec::new();
    let mut start = resp.clone();
    start.content.clear();
    start.stop_reason = None;
    events.push(json!({"type": "message_start", "message": start}));
    for (index, block) in resp.content.iter().enumerate() {
        let deltas: Vec<Value> = match block {
            anthropic::ContentBlock::Text(text) => {
                events.push(json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}));
                let (a, b) = cut(&text.text, split);
                vec![
                    json!({"type": "text_delta", "text": a}),
                    json!({"type": "text_delta", "text": b}),
                ]
            }
            anthropic::ContentBlock::Thinking(thinking) => {
                events.push(json!({"type": "content_block_start", "index": index, "content_block": {"type": "thinking", "thinking": ""}}));
                let (a, b) = cut(&thinking.thinking, split);
                vec![
                    json!({"type": "thinking_delta", "thinking": a}),
                    json!({"type": "thinking_delta", "thinking": b}),
                    json!({"type": "signature_delta", "signature": thinking.signature}),
                ]
            }
            anthropic::ContentBlock::RedactedThinking(redacted) => {
                events.push(json!({"type": "content_block_start", "index": index, "content_block": {"type": "redacted_thinking", "data": redacted.data}}));
                Vec::new()
            }
            anthropic::ContentBlock::ToolUse(call) => {
                events.push(json!({"type": "content_block_start", "index": index, "content_block": {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}}));
                let (a, b) = cut(&call.input.to_string(), split);
                vec![
                    json!({"type": "input_json_delta", "partial_json": a}),
                    json!({"type": "input_json_delta", "partial_json": b}),
                ]
            }
            other => panic!("unexpected block {other:?}"),
        };
        for delta in deltas {
            events.push(json!({"type": "content_block_delta", "index": index, "delta": delta}));
        }
        events.push(json!({"type": "content_block_stop", "index": index}));
    }
    events.push(json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 2}}));
    events.push(json!({"type": "message_stop"}));
    events
        .into_iter()
        .map(|e| SseEvent::named(e["type"].as_str().unwrap().to_owned(), e.to_string()))
        .collect()
}
