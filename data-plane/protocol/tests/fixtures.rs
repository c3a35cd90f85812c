//! Golden fixtures: each provider's documented examples deserialize into the typed wire
//! structs and serialize back to the same JSON.
//!
//! "The same" ignores two things no client can observe: an explicit `null` against an
//! absent field (the types omit absent optionals) and `1` against `1.0`.
#![allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]

use std::path::PathBuf;

use fulcrum_protocol::{anthropic, gemini, openai};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn fixture(path: &str) -> Value {
    let full = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path);
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

/// Drops `null` object members and turns every number into an f64.
fn normalize(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, normalize(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(normalize).collect()),
        Value::Number(n) => serde_json::json!(n.as_f64().unwrap()),
        other => other,
    }
}

fn round_trip_value<T: DeserializeOwned + Serialize>(what: &str, value: Value) -> T {
    let typed: T = serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(
        normalize(back),
        normalize(value),
        "{what} did not round trip"
    );
    typed
}

fn round_trip<T: DeserializeOwned + Serialize>(path: &str) -> T {
    round_trip_value(path, fixture(path))
}

// === OpenAI ===
// Examples from https://platform.openai.com/docs/api-reference/chat/create (Default, Image
// input, Streaming, Functions), the function calling guide
// (https://platform.openai.com/docs/guides/function-calling), the structured outputs guide
// (https://platform.openai.com/docs/guides/structured-outputs), the chat completion chunk
// object (https://platform.openai.com/docs/api-reference/chat-streaming), the model list
// (https://platform.openai.com/docs/api-reference/models/list) and the error codes guide.

#[test]
fn openai_requests() {
    let default: openai::ChatRequest = round_trip("openai/chat_request_default.json");
    assert_eq!(default.messages[0].role, openai::Role::Developer);

    let image: openai::ChatRequest = round_trip("openai/chat_request_image.json");
    let Some(openai::MessageContent::Parts(parts)) = &image.messages[0].content else {
        panic!("expected parts");
    };
    assert!(matches!(parts[0], openai::ContentPart::Text { .. }));
    assert!(matches!(parts[1], openai::ContentPart::ImageUrl { .. }));
    assert!(matches!(parts[3], openai::ContentPart::InputAudio { .. }));
    assert!(matches!(parts[4], openai::ContentPart::Other(_)));

    let functions: openai::ChatRequest = round_trip("openai/chat_request_functions.json");
    assert!(matches!(
        functions.tools.as_deref(),
        Some([openai::Tool::Function { .. }])
    ));
    assert_eq!(
        functions.tool_choice,
        Some(openai::ToolChoice::Mode(openai::ToolChoiceMode::Auto))
    );

    let history: openai::ChatRequest = round_trip("openai/chat_request_tool_history.json");
    assert!(matches!(
        history.tool_choice,
        Some(openai::ToolChoice::Function(_))
    ));
    assert_eq!(
        history.messages[2].tool_call_id.as_deref(),
        Some("call_12345xyz")
    );

    let structured: openai::ChatRequest = round_trip("openai/chat_request_structured.json");
    assert!(matches!(
        structured.response_format,
        Some(openai::ResponseFormat::JsonSchema { .. })
    ));

    let params: openai::ChatRequest = round_trip("openai/chat_request_params.json");
    assert_eq!(
        params.stop,
        Some(openai::Stop::Many(vec!["\n\n".into(), "END".into()]))
    );
    assert_eq!(params.reasoning_effort.as_deref(), Some("low"));
    assert!(params.extra.contains_key("metadata"));
}

#[test]
fn openai_responses() {
    let default: openai::ChatResponse = round_trip("openai/chat_response_default.json");
    assert_eq!(
        default.choices[0].finish_reason,
        Some(openai::FinishReason::Stop)
    );
    let functions: openai::ChatResponse = round_trip("openai/chat_response_functions.json");
    assert_eq!(
        functions.choices[0].message.tool_calls.as_ref().unwrap()[0]
            .function
            .name,
        "get_current_weather"
    );
    let Value::Array(chunks) = fixture("openai/chat_chunks.json") else {
        panic!("expected an array");
    };
    for (i, chunk) in chunks.into_iter().enumerate() {
        let _: openai::ChatChunk = round_trip_value(&format!("chunk {i}"), chunk);
    }
    let _: openai::ErrorBody = round_trip("openai/error.json");
    let _: openai::ModelList = round_trip("openai/models.json");
}

#[test]
fn openai_always_sends_the_fields_openai_sends_as_null() {
    let response: openai::ChatResponse =
        serde_json::from_value(fixture("openai/chat_response_functions.json")).unwrap();
    let json = serde_json::to_value(&response).unwrap();
    assert_eq!(json["choices"][0]["message"]["content"], Value::Null);
    assert!(json["choices"][0]["message"].get("content").is_some());
    assert!(json["choices"][0].get("logprobs").is_some());
    let chunk: openai::ChatChunk = serde_json::from_value(serde_json::json!({
        "id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {"content": "x"}}]
    }))
    .unwrap();
    let json = serde_json::to_value(&chunk).unwrap();
    assert!(json["choices"][0].get("finish_reason").is_some());
    let error =
        serde_json::to_value(openai::ErrorBody::new("bad", "invalid_request_error")).unwrap();
    assert_eq!(
        error,
        serde_json::json!({"error": {"message": "bad", "type": "invalid_request_error", "param": null, "code": null}})
    );
}

// === Gemini ===
// Examples from https://ai.google.dev/gemini-api/docs/text-generation (system instructions,
// generation config), https://ai.google.dev/gemini-api/docs/function-calling
// (schedule_meeting, function responses, tool config), https://ai.google.dev/gemini-api/docs/thought-signatures,
// https://ai.google.dev/gemini-api/docs/image-understanding, https://ai.google.dev/gemini-api/docs/structured-output,
// https://ai.google.dev/api/generate-content (response body, streaming),
// https://ai.google.dev/api/tokens, https://ai.google.dev/api/embeddings, https://ai.google.dev/api/models
// and https://ai.google.dev/gemini-api/docs/troubleshooting (error body).

#[test]
fn gemini_requests() {
    let text: gemini::GenerateContentRequest = round_trip("gemini/generate_request_text.json");
    assert!(text.system_instruction.is_some());
    let config: gemini::GenerateContentRequest = round_trip("gemini/generate_request_config.json");
    let generation = config.generation_config.unwrap();
    assert_eq!(generation.top_k, Some(10));
    assert_eq!(
        generation.thinking_config.unwrap().thinking_budget,
        Some(1024)
    );
    let calling: gemini::GenerateContentRequest =
        round_trip("gemini/generate_request_function_calling.json");
    assert_eq!(
        calling.tools.unwrap()[0]
            .function_declarations
            .as_ref()
            .unwrap()[0]
            .name,
        "schedule_meeting"
    );
    let history: gemini::GenerateContentRequest =
        round_trip("gemini/generate_request_function_history.json");
    assert_eq!(
        history.contents[1].parts[0].thought_signature.as_deref(),
        Some("CiQBVKhc7vB+vaaq6rA==")
    );
    assert_eq!(
        history
            .tool_config
            .unwrap()
            .function_calling_config
            .unwrap()
            .mode,
        Some(gemini::FunctionCallingMode::Any)
    );
    let image: gemini::GenerateContentRequest = round_trip("gemini/generate_request_image.json");
    assert!(image.contents[0].parts[0].inline_data.is_some());
    assert!(image.contents[0].parts[1].file_data.is_some());
    let _: gemini::GenerateContentRequest = round_trip("gemini/generate_request_json_mode.json");
    let _: gemini::CountTokensRequest = round_trip("gemini/count_tokens_request.json");
    let full: gemini::CountTokensRequest = round_trip("gemini/count_tokens_request_full.json");
    assert!(full.generate_content_request.is_some());
    let _: gemini::EmbedContentRequest = round_trip("gemini/embed_content_request.json");
    let _: gemini::BatchEmbedContentsRequest = round_trip("gemini/batch_embed_request.json");
}

#[test]
fn gemini_accepts_the_snake_case_names_of_googles_rest_samples() {
    // The system-instructions sample of https://ai.google.dev/gemini-api/docs/text-generation
    // and the inline-image sample of the image-understanding page use proto field names.
    let request: gemini::GenerateContentRequest = serde_json::from_value(serde_json::json!({
        "system_instruction": {"parts": [{"text": "You are a cat. Your name is Neko."}]},
        "contents": [{"parts": [
            {"inline_data": {"mime_type": "image/jpeg", "data": "AAAA"}},
            {"text": "Caption this image."}
        ]}],
        "generation_config": {"max_output_tokens": 10, "thinking_config": {"thinking_budget": 0}},
        "tool_config": {"function_calling_config": {"mode": "NONE"}}
    }))
    .unwrap();
    assert!(request.system_instruction.is_some());
    assert!(request.extra.is_empty());
    let json = serde_json::to_value(&request).unwrap();
    assert_eq!(
        json["systemInstruction"]["parts"][0]["text"],
        "You are a cat. Your name is Neko."
    );
    assert_eq!(
        json["contents"][0]["parts"][0]["inlineData"]["mimeType"],
        "image/jpeg"
    );
    assert_eq!(json["generationConfig"]["maxOutputTokens"], 10);
    assert_eq!(
        json["generationConfig"]["thinkingConfig"]["thinkingBudget"],
        0
    );
    assert_eq!(json["toolConfig"]["functionCallingConfig"]["mode"], "NONE");
}

#[test]
fn gemini_responses() {
    let text: gemini::GenerateContentResponse = round_trip("gemini/generate_response_text.json");
    assert_eq!(
        text.candidates[0].finish_reason,
        Some(gemini::FinishReason::Stop)
    );
    assert_eq!(
        text.usage_metadata.unwrap().thoughts_token_count,
        Some(1096)
    );
    let call: gemini::GenerateContentResponse =
        round_trip("gemini/generate_response_function_call.json");
    let parts = &call.candidates[0].content.as_ref().unwrap().parts;
    assert_eq!(
        parts[0].function_call.as_ref().unwrap().name,
        "schedule_meeting"
    );
    assert_eq!(
        parts[1].function_call.as_ref().unwrap().id.as_deref(),
        Some("fc-2")
    );
    let thoughts: gemini::GenerateContentResponse =
        round_trip("gemini/generate_response_thoughts.json");
    assert!(thoughts.candidates[0].content.as_ref().unwrap().parts[0].is_thought());
    let Value::Array(events) = fixture("gemini/stream_events.json") else {
        panic!("expected an array");
    };
    for (i, event) in events.into_iter().enumerate() {
        let _: gemini::GenerateContentResponse = round_trip_value(&format!("event {i}"), event);
    }
    let _: gemini::CountTokensResponse = round_trip("gemini/count_tokens_response.json");
    let _: gemini::EmbedContentResponse = round_trip("gemini/embed_content_response.json");
    let _: gemini::BatchEmbedContentsResponse = round_trip("gemini/batch_embed_response.json");
    let _: gemini::ListModelsResponse = round_trip("gemini/models.json");
    let _: gemini::ErrorBody = round_trip("gemini/error.json");
}

// === Anthropic ===
// Examples from https://docs.anthropic.com/en/api/messages (request and response),
// https://docs.anthropic.com/en/docs/build-with-claude/prompt-caching (system blocks),
// https://docs.anthropic.com/en/docs/agents-and-tools/tool-use/implement-tool-use (tools,
// tool_choice, tool results), https://docs.anthropic.com/en/docs/build-with-claude/extended-thinking,
// https://docs.anthropic.com/en/docs/build-with-claude/vision, https://docs.anthropic.com/en/docs/build-with-claude/streaming,
// https://docs.anthropic.com/en/api/messages-count-tokens and https://docs.anthropic.com/en/api/errors.

#[test]
fn anthropic_requests() {
    let _: anthropic::MessagesRequest = round_trip("anthropic/messages_request_basic.json");
    let cached: anthropic::MessagesRequest =
        round_trip("anthropic/messages_request_system_cache.json");
    let Some(anthropic::System::Blocks(blocks)) = &cached.system else {
        panic!("expected system blocks");
    };
    let anthropic::ContentBlock::Text(block) = &blocks[1] else {
        panic!("expected a text block");
    };
    assert!(block.cache_control.is_some());

    let tools: anthropic::MessagesRequest = round_trip("anthropic/messages_request_tools.json");
    let tools_list = tools.tools.unwrap();
    assert!(matches!(tools_list[0], anthropic::Tool::Custom(_)));
    assert!(matches!(tools_list[1], anthropic::Tool::Server(_)));
    assert!(matches!(tools_list[2], anthropic::Tool::Custom(_)));
    assert_eq!(
        tools.tool_choice,
        Some(anthropic::ToolChoice::Any {
            disable_parallel_tool_use: Some(true)
        })
    );

    let results: anthropic::MessagesRequest =
        round_trip("anthropic/messages_request_tool_result.json");
    let anthropic::MessageContent::Blocks(blocks) = &results.messages[2].content else {
        panic!("expected blocks");
    };
    assert!(
        blocks
            .iter()
            .all(|b| matches!(b, anthropic::ContentBlock::ToolResult(_)))
    );

    let thinking: anthropic::MessagesRequest =
        round_trip("anthropic/messages_request_thinking.json");
    assert_eq!(
        thinking.thinking,
        Some(anthropic::ThinkingConfig::Enabled {
            budget_tokens: 10000
        })
    );

    let image: anthropic::MessagesRequest = round_trip("anthropic/messages_request_image.json");
    let anthropic::MessageContent::Blocks(blocks) = &image.messages[0].content else {
        panic!("expected blocks");
    };
    let kinds: Vec<&str> = blocks.iter().map(|b| b.kind()).collect();
    assert_eq!(kinds, ["image", "image", "image", "document", "text"]);

    let _: anthropic::CountTokensRequest = round_trip("anthropic/count_tokens_request.json");
}

#[test]
fn anthropic_responses() {
    let response: anthropic::MessagesResponse = round_trip("anthropic/messages_response.json");
    assert_eq!(response.stop_reason, Some(anthropic::StopReason::EndTurn));
    let tool_use: anthropic::MessagesResponse =
        round_trip("anthropic/messages_response_tool_use.json");
    let kinds: Vec<&str> = tool_use.content.iter().map(|b| b.kind()).collect();
    assert_eq!(kinds, ["thinking", "text", "tool_use", "server_tool_use"]);

    let Value::Array(events) = fixture("anthropic/stream_events.json") else {
        panic!("expected an array");
    };
    for (i, event) in events.into_iter().enumerate() {
        let name = event["event"].as_str().unwrap().to_owned();
        let parsed: anthropic::StreamEvent =
            round_trip_value(&format!("event {i}"), event["data"].clone());
        assert_eq!(parsed.name(), name);
    }
    let _: anthropic::CountTokensResponse = round_trip("anthropic/count_tokens_response.json");
    let _: anthropic::ErrorBody = round_trip("anthropic/error.json");
}

#[test]
fn anthropic_always_sends_stop_fields() {
    let response: anthropic::MessagesResponse =
        serde_json::from_value(fixture("anthropic/messages_response.json")).unwrap();
    let json = serde_json::to_value(&response).unwrap();
    assert!(json.get("stop_sequence").is_some());
    assert_eq!(
        serde_json::to_value(anthropic::ErrorBody::new("api_error", "x")).unwrap(),
        serde_json::json!({"type": "error", "error": {"type": "api_error", "message": "x"}})
    );
}
