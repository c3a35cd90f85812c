//! Tests of the OpenAI <-> Gemini translation. Inputs are the golden fixtures of
//! `tests/fixtures` (the providers' documented examples; see `tests/fixtures.rs` for the
//! pages), expected outputs are written out here.

use serde_json::{Value, json};

use super::*;

fn fixture(path: &str) -> Value {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path);
    serde_json::from_str(&std::fs::read_to_string(full).unwrap()).unwrap()
}

fn openai_request(path: &str) -> openai::ChatRequest {
    serde_json::from_value(fixture(path)).unwrap()
}

fn gemini_request(path: &str) -> gemini::GenerateContentRequest {
    serde_json::from_value(fixture(path)).unwrap()
}

fn to_gemini(req: &openai::ChatRequest) -> Value {
    let (_, out) = openai_request_to_gemini(req, &TranslateOptions::default()).unwrap();
    serde_json::to_value(out).unwrap()
}

fn request(value: Value) -> openai::ChatRequest {
    serde_json::from_value(value).unwrap()
}

fn err_to_gemini(value: Value) -> TranslateError {
    openai_request_to_gemini(&request(value), &TranslateOptions::default()).unwrap_err()
}

fn run<T: StreamTranslator>(translator: &mut T, events: &[SseEvent]) -> Vec<SseEvent> {
    let mut out = Vec::new();
    for event in events {
        translator.on_event(event, &mut out).unwrap();
    }
    translator.finish(&mut out).unwrap();
    out
}

fn data_events(values: &[Value]) -> Vec<SseEvent> {
    values
        .iter()
        .map(|v| SseEvent::data(v.to_string()))
        .collect()
}

fn parsed(events: &[SseEvent]) -> Vec<Value> {
    events
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap_or(Value::String(e.data.clone())))
        .collect()
}

// === OpenAI request -> Gemini ===

#[test]
fn function_calling_request() {
    let req = openai_request("openai/chat_request_functions.json");
    let (model, _) = openai_request_to_gemini(&req, &TranslateOptions::default()).unwrap();
    assert_eq!(model, "gpt-4.1");
    assert_eq!(
        to_gemini(&req),
        json!({
            "contents": [{"role": "user", "parts": [{"text": "What is the weather like in Boston today?"}]}],
            "tools": [{"functionDeclarations": [{
                "name": "get_current_weather",
                "description": "Get the current weather in a given location",
                "parameters": {"type": "object", "properties": {
                    "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}
                }, "required": ["location"]}
            }]}],
            "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}}
        })
    );
}

#[test]
fn tool_history_request() {
    let req = openai_request("openai/chat_request_tool_history.json");
    assert_eq!(
        to_gemini(&req),
        json!({
            "contents": [
                {"role": "user", "parts": [{"text": "What's the weather like in Paris today?"}]},
                {"role": "model", "parts": [{"functionCall": {
                    "id": "call_12345xyz", "name": "get_weather", "args": {"latitude": 48.8566, "longitude": 2.3522}
                }}]},
                {"role": "user", "parts": [{"functionResponse": {
                    "id": "call_12345xyz", "name": "get_weather", "response": {"result": "14"}
                }}]}
            ],
            "tools": [{"functionDeclarations": [{
                "name": "get_weather",
                "description": "Get current temperature for provided coordinates in celsius.",
                "parameters": {"type": "object", "properties": {
                    "latitude": {"type": "number"}, "longitude": {"type": "number"}
                }, "required": ["latitude", "longitude"]}
            }]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}}
        })
    );
}

#[test]
fn parallel_calls_share_a_model_turn_and_results_share_a_user_turn() {
    let req = request(json!({"model": "m", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
            {"id": "b", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Rome\"}"}}
        ]},
        {"role": "tool", "tool_call_id": "a", "content": "{\"temp\": 14}"},
        {"role": "tool", "tool_call_id": "b", "content": [{"type": "text", "text": "sunny"}]},
        {"role": "user", "content": "Thanks"},
        {"role": "user", "content": "And Oslo?"}
    ]}));
    assert_eq!(
        to_gemini(&req),
        json!({
            "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Use tools."}]},
            "contents": [
                {"role": "user", "parts": [{"text": "Weather in Paris and Rome?"}]},
                {"role": "model", "parts": [
                    {"text": "Checking."},
                    {"functionCall": {"id": "a", "name": "weather", "args": {"city": "Paris"}}},
                    {"functionCall": {"id": "b", "name": "weather", "args": {"city": "Rome"}}}
                ]},
                {"role": "user", "parts": [
                    {"functionResponse": {"id": "a", "name": "weather", "response": {"temp": 14}}},
                    {"functionResponse": {"id": "b", "name": "weather", "response": {"result": "sunny"}}}
                ]},
                {"role": "user", "parts": [{"text": "Thanks"}, {"text": "And Oslo?"}]}
            ]
        })
    );
}

#[test]
fn image_request() {
    let req = openai_request("openai/chat_request_image.json");
    let err = openai_request_to_gemini(&req, &TranslateOptions::default()).unwrap_err();
    assert!(matches!(err, TranslateError::ImageUrlNotAllowed));
    assert!(err.is_client_error());
    assert_eq!(
        err.to_string(),
        "image urls must be base64 `data:` urls; remote image urls are not fetched"
    );

    let opts = TranslateOptions {
        allow_image_urls: true,
    };
    let (_, out) = openai_request_to_gemini(&req, &opts).unwrap();
    assert_eq!(
        serde_json::to_value(out).unwrap(),
        json!({
            "contents": [{"role": "user", "parts": [
                {"text": "What's in this image?"},
                {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://upload.wikimedia.org/wikipedia/commons/thumb/d/dd/Gfp-wisconsin-madison-the-nature-boardwalk.jpg/2560px-Gfp-wisconsin-madison-the-nature-boardwalk.jpg"}},
                {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/4AAQSkZJRgABAQEASABIAAD"}},
                {"inlineData": {"mimeType": "audio/wav", "data": "UklGRiQAAABXQVZFZm10IBAAAAABAAEA"}},
                {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0xLjcK"}}
            ]}],
            "generationConfig": {"maxOutputTokens": 300}
        })
    );
}

#[test]
fn data_urls() {
    assert_eq!(
        parse_data_url("data:image/png;base64,iVBOR").unwrap(),
        ("image/png", "iVBOR")
    );
    assert_eq!(
        parse_data_url("data:image/png;charset=utf-8;base64,iVBOR").unwrap(),
        ("image/png", "iVBOR")
    );
    for bad in [
        "data:image/png,iVBOR",
        "data:;base64,x",
        "data:image/png;base64",
        "http://x",
    ] {
        assert!(
            matches!(parse_data_url(bad), Err(TranslateError::InvalidDataUrl)),
            "{bad}"
        );
    }
    assert_eq!(guess_image_mime("https://x/a.PNG?size=2"), "image/png");
    assert_eq!(guess_image_mime("https://x/photo"), "image/jpeg");
}

#[test]
fn json_mode_requests() {
    let req = openai_request("openai/chat_request_structured.json");
    let out = to_gemini(&req);
    assert_eq!(
        out["generationConfig"],
        json!({
            "responseMimeType": "application/json",
            "responseSchema": {"type": "object", "properties": {
                "steps": {"type": "array", "items": {"type": "object", "properties": {
                    "explanation": {"type": "string"}, "output": {"type": "string"}
                }, "required": ["explanation", "output"]}},
                "final_answer": {"type": "string"}
            }, "required": ["steps", "final_answer"]}
        })
    );
    assert_eq!(
        out["systemInstruction"],
        json!({"parts": [{"text": "You are a helpful math tutor. Guide the user through the solution step by step."}]})
    );
    let json_object = to_gemini(&request(json!({
        "model": "m", "messages": [{"role": "user", "content": "hi"}],
        "response_format": {"type": "json_object"}
    })));
    assert_eq!(
        json_object["generationConfig"],
        json!({"responseMimeType": "application/json"})
    );
}

#[test]
fn sampling_parameters() {
    let req = openai_request("openai/chat_request_params.json");
    let out = to_gemini(&req);
    assert_eq!(
        out["generationConfig"],
        json!({
            "temperature": 0.2, "topP": 0.9, "maxOutputTokens": 512, "stopSequences": ["\n\n", "END"],
            "candidateCount": 1, "seed": 42, "presencePenalty": 0.5, "frequencyPenalty": 0.25,
            "responseMimeType": "application/json",
            "thinkingConfig": {"thinkingBudget": 1024, "includeThoughts": true}
        })
    );
    // `max_completion_tokens` wins over the deprecated `max_tokens`.
    let both = to_gemini(&request(json!({
        "model": "m", "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 10, "max_completion_tokens": 20, "stop": "x"
    })));
    assert_eq!(
        both["generationConfig"],
        json!({"maxOutputTokens": 20, "stopSequences": ["x"]})
    );
}

#[test]
fn reasoning_effort_to_thinking_budget() {
    for (effort, expected) in [
        ("none", json!({"thinkingBudget": 0})),
        ("minimal", json!({"thinkingBudget": 0})),
        (
            "low",
            json!({"thinkingBudget": 1024, "includeThoughts": true}),
        ),
        (
            "medium",
            json!({"thinkingBudget": 8192, "includeThoughts": true}),
        ),
        (
            "high",
            json!({"thinkingBudget": 24576, "includeThoughts": true}),
        ),
    ] {
        let out = to_gemini(&request(json!({
            "model": "m", "messages": [{"role": "user", "content": "hi"}], "reasoning_effort": effort
        })));
        assert_eq!(
            out["generationConfig"]["thinkingConfig"], expected,
            "{effort}"
        );
    }
    let err = err_to_gemini(json!({
        "model": "m", "messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "extreme"
    }));
    assert_eq!(
        err.to_string(),
        "unsupported value \"extreme\" for `reasoning_effort`"
    );
}

#[test]
fn tool_choice_to_tool_config() {
    for (choice, expected) in [
        (json!("none"), json!({"mode": "NONE"})),
        (json!("auto"), json!({"mode": "AUTO"})),
        (json!("required"), json!({"mode": "ANY"})),
        (
            json!({"type": "function", "function": {"name": "f"}}),
            json!({"mode": "ANY", "allowedFunctionNames": ["f"]}),
        ),
    ] {
        let out = to_gemini(&request(json!({
            "model": "m", "messages": [{"role": "user", "content": "hi"}], "tool_choice": choice
        })));
        assert_eq!(out["toolConfig"]["functionCallingConfig"], expected);
    }
}

#[test]
fn tool_without_parameters_has_no_parameters() {
    let out = to_gemini(&request(json!({
        "model": "m", "messages": [{"role": "user", "content": "hi"}],
        "tools": [
            {"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}},
            {"type": "function", "function": {"name": "ping"}}
        ]
    })));
    assert_eq!(
        out["tools"],
        json!([{"functionDeclarations": [{"name": "now"}, {"name": "ping"}]}])
    );
}

#[test]
fn client_errors_say_what_is_wrong() {
    let bad_args = err_to_gemini(json!({"model": "m", "messages": [
        {"role": "assistant", "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}
    ]}));
    assert!(matches!(
        bad_args,
        TranslateError::InvalidToolArguments { .. }
    ));
    assert!(
        bad_args
            .to_string()
            .starts_with("arguments of tool call `f` are not a valid JSON object")
    );

    let not_object = err_to_gemini(json!({"model": "m", "messages": [
        {"role": "assistant", "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}
    ]}));
    assert!(matches!(
        not_object,
        TranslateError::InvalidToolArguments { .. }
    ));

    let unknown_id = err_to_gemini(json!({"model": "m", "messages": [
        {"role": "tool", "tool_call_id": "nope", "content": "x"}
    ]}));
    assert_eq!(
        unknown_id.to_string(),
        "tool message refers to tool_call_id `nope`, which no earlier assistant message called"
    );

    let bad_data_url = err_to_gemini(json!({"model": "m", "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png,abc"}}]}
    ]}));
    assert!(matches!(bad_data_url, TranslateError::InvalidDataUrl));

    let system_image = err_to_gemini(json!({"model": "m", "messages": [
        {"role": "system", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,abc"}}]}
    ]}));
    assert_eq!(
        system_image.to_string(),
        "unsupported content part `image_url` in a system message"
    );

    let file_id = err_to_gemini(json!({"model": "m", "messages": [
        {"role": "user", "content": [{"type": "file", "file": {"file_id": "file-abc"}}]}
    ]}));
    assert!(matches!(file_id, TranslateError::UnsupportedContent { .. }));

    let recursive_ref = err_to_gemini(
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"$ref": "#/$defs/missing"}}}]}),
    );
    assert_eq!(
        recursive_ref.to_string(),
        "invalid schema in parameters of tool `f`: $ref `#/$defs/missing` does not resolve to a definition in the same schema"
    );

    let custom_tool = err_to_gemini(
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "custom", "custom": {"name": "grammar"}}]}),
    );
    assert_eq!(
        custom_tool.to_string(),
        "unsupported value \"custom\" for `tools[].type`"
    );
}

#[test]
fn legacy_function_messages_and_empty_arguments() {
    let out = to_gemini(&request(json!({"model": "m", "messages": [
        {"role": "assistant", "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": ""}}]},
        {"role": "function", "name": "f", "content": "done"}
    ]})));
    assert_eq!(
        out["contents"],
        json!([
            {"role": "model", "parts": [{"functionCall": {"id": "a", "name": "f", "args": {}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"result": "done"}}}]}
        ])
    );
}

// === Gemini response -> OpenAI ===

fn gemini_response(path: &str) -> gemini::GenerateContentResponse {
    serde_json::from_value(fixture(path)).unwrap()
}

fn without_created(mut value: Value) -> Value {
    value.as_object_mut().unwrap().remove("created");
    value
}

#[test]
fn text_response() {
    let resp = gemini_response_to_openai(
        &gemini_response("gemini/generate_response_text.json"),
        "gemini-2.5-flash",
    );
    assert_eq!(
        without_created(serde_json::to_value(resp).unwrap()),
        json!({
            "id": "chatcmpl-mAitaLmkHPPlz7IPvtfUqQ4",
            "object": "chat.completion",
            "model": "gemini-2.5-flash",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": "AI works by learning patterns from data."},
                "finish_reason": "stop",
                "logprobs": null
            }],
            "usage": {
                "prompt_tokens": 4, "completion_tokens": 1104, "total_tokens": 1108,
                "completion_tokens_details": {"reasoning_tokens": 1096}
            }
        })
    );
}

#[test]
fn function_call_response_carries_thought_signatures() {
    let resp = gemini_response_to_openai(
        &gemini_response("gemini/generate_response_function_call.json"),
        "gemini-2.5-flash",
    );
    let json = without_created(serde_json::to_value(&resp).unwrap());
    assert_eq!(
        json["choices"][0],
        json!({
            "index": 0,
            "message": {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_0", "type": "function",
                 "function": {"name": "schedule_meeting", "arguments": "{\"attendees\":[\"Bob\",\"Alice\"],\"date\":\"2025-03-14\",\"time\":\"10:00\",\"topic\":\"Q3 planning\"}"},
                 "extra_content": {"google": {"thought_signature": "CsoBAVSoXO7aA1vCmKlH"}}},
                {"id": "fc-2", "type": "function",
                 "function": {"name": "get_current_temperature", "arguments": "{\"location\":\"London\"}"}}
            ]},
            "finish_reason": "tool_calls",
            "logprobs": null
        })
    );
    assert_eq!(
        json["usage"],
        json!({"prompt_tokens": 120, "completion_tokens": 90, "total_tokens": 210,
               "prompt_tokens_details": {"cached_tokens": 0},
               "completion_tokens_details": {"reasoning_tokens": 50}})
    );

    // The client sends the assistant message back with the tool results: the signature
    // returns to the first functionCall part, exactly where Gemini put it.
    let message = &resp.choices[0].message;
    let history = request(json!({"model": "m", "messages": [
        {"role": "user", "content": "Plan it"},
        {"role": "assistant", "content": null, "tool_calls": serde_json::to_value(&message.tool_calls).unwrap()},
        {"role": "tool", "tool_call_id": "call_0", "content": "scheduled"},
        {"role": "tool", "tool_call_id": "fc-2", "content": "{\"temperature\": 15}"}
    ]}));
    assert_eq!(
        to_gemini(&history)["contents"],
        json!([
            {"role": "user", "parts": [{"text": "Plan it"}]},
            {"role": "model", "parts": [
                {"functionCall": {"id": "call_0", "name": "schedule_meeting",
                  "args": {"attendees": ["Bob", "Alice"], "date": "2025-03-14", "time": "10:00", "topic": "Q3 planning"}},
                 "thoughtSignature": "CsoBAVSoXO7aA1vCmKlH"},
                {"functionCall": {"id": "fc-2", "name": "get_current_temperature", "args": {"location": "London"}}}
            ]},
            {"role": "user", "parts": [
                {"functionResponse": {"id": "call_0", "name": "schedule_meeting", "response": {"result": "scheduled"}}},
                {"functionResponse": {"id": "fc-2", "name": "get_current_temperature", "response": {"temperature": 15}}}
            ]}
        ])
    );
}

#[test]
fn thoughts_become_reasoning_content_and_return_only_with_their_signature() {
    let resp = gemini_response_to_openai(
        &gemini_response("gemini/generate_response_thoughts.json"),
        "m",
    );
    let json = serde_json::to_value(&resp).unwrap();
    assert_eq!(
        json["choices"][0]["message"],
        json!({
            "role": "assistant",
            "content": "Yes, there are infinitely many primes.",
            "reasoning_content": "**Analyzing the question**\nThe user asks about primes.",
            "extra_content": {"google": {"thought_signature": "EpYECpMEAVSoXO5"}}
        })
    );
    assert_eq!(json["choices"][0]["finish_reason"], "length");

    let with_signature = request(json!({"model": "m", "messages": [
        {"role": "user", "content": "Are there infinitely many primes?"},
        json["choices"][0]["message"].clone(),
        {"role": "user", "content": "Prove it"}
    ]}));
    assert_eq!(
        to_gemini(&with_signature)["contents"][1],
        json!({"role": "model", "parts": [
            {"text": "**Analyzing the question**\nThe user asks about primes.", "thought": true},
            {"text": "Yes, there are infinitely many primes.", "thoughtSignature": "EpYECpMEAVSoXO5"}
        ]})
    );

    let without_signature = request(json!({"model": "m", "messages": [
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": "A", "reasoning_content": "hmm"}
    ]}));
    assert_eq!(
        to_gemini(&without_signature)["contents"][1],
        json!({"role": "model", "parts": [{"text": "A"}]})
    );
}

#[test]
fn blocked_prompt_is_a_content_filter_finish() {
    let resp: gemini::GenerateContentResponse = serde_json::from_value(json!({
        "promptFeedback": {"blockReason": "SAFETY"},
        "usageMetadata": {"promptTokenCount": 5, "totalTokenCount": 5}
    }))
    .unwrap();
    let out = serde_json::to_value(gemini_response_to_openai(&resp, "m")).unwrap();
    assert_eq!(out["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(out["choices"][0]["message"]["content"], Value::Null);
}

#[test]
fn finish_reasons() {
    use gemini::FinishReason as G;
    let cases = [
        (Some(G::Stop), false, openai::FinishReason::Stop),
        (Some(G::Stop), true, openai::FinishReason::ToolCalls),
        (Some(G::MaxTokens), true, openai::FinishReason::Length),
        (Some(G::Safety), false, openai::FinishReason::ContentFilter),
        (
            Some(G::Recitation),
            false,
            openai::FinishReason::ContentFilter,
        ),
        (
            Some(G::Blocklist),
            false,
            openai::FinishReason::ContentFilter,
        ),
        (
            Some(G::ProhibitedContent),
            false,
            openai::FinishReason::ContentFilter,
        ),
        (Some(G::Spii), false, openai::FinishReason::ContentFilter),
        (Some(G::Other), false, openai::FinishReason::Stop),
        (None, false, openai::FinishReason::Stop),
    ];
    for (gemini_reason, has_calls, expected) in cases {
        assert_eq!(
            finish_reason_to_openai(gemini_reason.as_ref(), has_calls),
            expected,
            "{gemini_reason:?}"
        );
    }
}

// === Gemini stream -> OpenAI chunks ===

fn chunk_choices(chunks: &[Value]) -> Vec<Value> {
    chunks
        .iter()
        .map(|c| match c {
            Value::Object(_) => {
                let mut c = c.clone();
                let object = c.as_object_mut().unwrap();
                object.remove("created");
                object.remove("id");
                object.remove("model");
                object.remove("object");
                c
            }
            other => other.clone(),
        })
        .collect()
}

#[test]
fn gemini_stream_to_openai_chunks() {
    let Value::Array(events) = fixture("gemini/stream_events.json") else {
        panic!("expected an array");
    };
    let mut translator = GeminiToOpenAiStream::new("gemini-2.5-flash", true);
    let out = parsed(&run(&mut translator, &data_events(&events)));
    for chunk in &out[..out.len() - 1] {
        assert_eq!(chunk["id"], "chatcmpl-x1");
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "gemini-2.5-flash");
    }
    assert_eq!(
        chunk_choices(&out),
        vec![
            json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": "The"}, "finish_reason": null}]}),
            json!({"choices": [{"index": 0, "delta": {"content": " quick brown fox"}, "finish_reason": null}]}),
            json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
            json!({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14}}),
            json!("[DONE]"),
        ]
    );

    // Without include_usage there is no usage chunk.
    let mut translator = GeminiToOpenAiStream::new("m", false);
    let out = parsed(&run(&mut translator, &data_events(&events)));
    assert_eq!(out.len(), 4);
    assert_eq!(out[3], json!("[DONE]"));
}

#[test]
fn gemini_stream_function_calls_and_thoughts() {
    let events = data_events(&[
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Thinking about it", "thought": true}]}, "index": 0}], "responseId": "r"}),
        json!({"candidates": [{"content": {"role": "model", "parts": [
            {"functionCall": {"name": "weather", "args": {"city": "Paris"}}, "thoughtSignature": "sig1"},
            {"functionCall": {"name": "weather", "args": {"city": "Rome"}}}
        ]}, "index": 0}]}),
        json!({"candidates": [{"content": {"role": "model", "parts": [
            {"functionCall": {"name": "time", "args": {}}}
        ]}, "finishReason": "STOP", "index": 0}],
         "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 20, "thoughtsTokenCount": 5, "totalTokenCount": 35}}),
    ]);
    let mut translator = GeminiToOpenAiStream::new("m", true);
    let out = chunk_choices(&parsed(&run(&mut translator, &events)));
    assert_eq!(
        out,
        vec![
            json!({"choices": [{"index": 0, "delta": {"role": "assistant", "reasoning_content": "Thinking about it"}, "finish_reason": null}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": 0, "id": "call_0", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"},
                 "extra_content": {"google": {"thought_signature": "sig1"}}},
                {"index": 1, "id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Rome\"}"}}
            ]}, "finish_reason": null}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": 2, "id": "call_2", "type": "function", "function": {"name": "time", "arguments": "{}"}}
            ]}, "finish_reason": null}]}),
            json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
            json!({"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 25, "total_tokens": 35,
                   "completion_tokens_details": {"reasoning_tokens": 5}}}),
            json!("[DONE]"),
        ]
    );
}

#[test]
fn gemini_stream_error_event_is_an_upstream_error() {
    let mut translator = GeminiToOpenAiStream::new("m", false);
    let mut out = Vec::new();
    let err = translator
        .on_event(
            &SseEvent::data(r#"{"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}"#),
            &mut out,
        )
        .unwrap_err();
    assert!(!err.is_client_error());
    assert_eq!(
        err.to_string(),
        "upstream error (UNAVAILABLE): The model is overloaded."
    );
    let err = translator
        .on_event(&SseEvent::data("{not json"), &mut out)
        .unwrap_err();
    assert!(matches!(err, TranslateError::InvalidUpstreamJson { .. }));
}

// === Gemini request -> OpenAI ===

fn to_openai(req: &gemini::GenerateContentRequest) -> Value {
    serde_json::to_value(
        gemini_request_to_openai("gpt-4.1", req, &TranslateOptions::default()).unwrap(),
    )
    .unwrap()
}

#[test]
fn gemini_function_calling_request_to_openai() {
    let out = to_openai(&gemini_request(
        "gemini/generate_request_function_calling.json",
    ));
    assert_eq!(
        out,
        json!({
            "model": "gpt-4.1",
            "messages": [{"role": "user", "content": "Schedule a meeting with Bob and Alice for 03/14/2025 at 10:00 AM about the Q3 planning."}],
            "tools": [{"type": "function", "function": {
                "name": "schedule_meeting",
                "description": "Schedules a meeting with specified attendees at a given time and date.",
                "parameters": {"type": "object", "properties": {
                    "attendees": {"type": "array", "items": {"type": "string"}, "description": "List of people attending the meeting."},
                    "date": {"type": "string", "description": "Date of the meeting (e.g., '2024-07-29')"},
                    "time": {"type": "string", "description": "Time of the meeting (e.g., '15:00')"},
                    "topic": {"type": "string", "description": "The subject or topic of the meeting."}
                }, "required": ["attendees", "date", "time", "topic"]}
            }}]
        })
    );
}

#[test]
fn gemini_function_history_to_openai() {
    let mut req = gemini_request("gemini/generate_request_function_history.json");
    // Google's built-in tools have no OpenAI equivalent.
    let err = gemini_request_to_openai("m", &req, &TranslateOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unsupported value \"googleSearch\" for `tools`"
    );
    req.tools.as_mut().unwrap().truncate(1);
    let out = to_openai(&req);
    assert_eq!(
        out["messages"],
        json!([
            {"role": "user", "content": "What's the temperature in London?"},
            {"role": "assistant", "tool_calls": [{"id": "call_0", "type": "function",
                "function": {"name": "get_current_temperature", "arguments": "{\"location\":\"London\"}"},
                "extra_content": {"google": {"thought_signature": "CiQBVKhc7vB+vaaq6rA=="}}}]},
            {"role": "tool", "tool_call_id": "call_0", "content": "{\"temperature\":15,\"unit\":\"C\"}"}
        ])
    );
    assert_eq!(
        out["tool_choice"],
        json!({"type": "function", "function": {"name": "get_current_temperature"}})
    );
}

#[test]
fn gemini_config_request_to_openai() {
    let out = to_openai(&gemini_request("gemini/generate_request_config.json"));
    assert_eq!(
        out,
        json!({
            "model": "gpt-4.1",
            "messages": [{"role": "user", "content": "Explain how AI works"}],
            "temperature": 1.0, "top_p": 0.8, "max_completion_tokens": 800, "stop": ["Title"], "n": 1,
            "seed": 7, "presence_penalty": 0.5, "frequency_penalty": 0.5, "reasoning_effort": "low"
        })
    );
    let system = to_openai(&gemini_request("gemini/generate_request_text.json"));
    assert_eq!(
        system["messages"],
        json!([
            {"role": "system", "content": "You are a cat. Your name is Neko."},
            {"role": "user", "content": "Hello there"}
        ])
    );
}

#[test]
fn gemini_json_mode_request_to_openai() {
    let out = to_openai(&gemini_request("gemini/generate_request_json_mode.json"));
    assert_eq!(
        out["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "response", "schema": {
            "type": "array", "items": {"type": "object", "properties": {
                "recipeName": {"type": "string"}, "ingredients": {"type": "array", "items": {"type": "string"}}
            }, "propertyOrdering": ["recipeName", "ingredients"]}
        }}})
    );
    assert_eq!(
        gemini_schema_to_json_schema(&json!({"type": "STRING", "nullable": true})),
        json!({"type": ["string", "null"]})
    );
}

#[test]
fn gemini_image_request_to_openai() {
    let mut req = gemini_request("gemini/generate_request_image.json");
    let err = gemini_request_to_openai("m", &req, &TranslateOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unsupported content part `fileData` in a user message"
    );
    req.contents[0].parts.remove(1);
    assert_eq!(
        to_openai(&req)["messages"],
        json!([{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQSkZJRgABAQEASABIAAD"}},
            {"type": "text", "text": "Caption this image."}
        ]}])
    );
}

#[test]
fn function_responses_without_ids_answer_the_oldest_call_of_their_name() {
    let req: gemini::GenerateContentRequest = serde_json::from_value(json!({"contents": [
        {"role": "user", "parts": [{"text": "go"}]},
        {"role": "model", "parts": [
            {"functionCall": {"name": "f", "args": {"n": 1}}},
            {"functionCall": {"name": "f", "args": {"n": 2}}},
            {"functionCall": {"name": "g"}}
        ]},
        {"role": "user", "parts": [
            {"functionResponse": {"name": "g", "response": {"result": 3}}},
            {"functionResponse": {"name": "f", "response": {"ok": true}}},
            {"functionResponse": {"name": "f", "response": {"result": "second"}}},
            {"text": "and now?"}
        ]}
    ]}))
    .unwrap();
    let out = to_openai(&req);
    let ids: Vec<(&str, &str)> = out["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| {
            (
                m["tool_call_id"].as_str().unwrap(),
                m["content"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ids,
        [
            ("call_2", "3"),
            ("call_0", "{\"ok\":true}"),
            ("call_1", "second")
        ]
    );
    assert_eq!(
        out["messages"][5],
        json!({"role": "user", "content": "and now?"})
    );

    let orphan: gemini::GenerateContentRequest = serde_json::from_value(json!({"contents": [
        {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]}
    ]}))
    .unwrap();
    let err = gemini_request_to_openai("m", &orphan, &TranslateOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "functionResponse `f` answers no earlier functionCall of that name"
    );
}

// === OpenAI response -> Gemini ===

#[test]
fn openai_function_response_to_gemini() {
    let resp: openai::ChatResponse =
        serde_json::from_value(fixture("openai/chat_response_functions.json")).unwrap();
    assert_eq!(
        serde_json::to_value(openai_response_to_gemini(&resp).unwrap()).unwrap(),
        json!({
            "candidates": [{
                "content": {"role": "model", "parts": [{"functionCall": {
                    "id": "call_abc123", "name": "get_current_weather", "args": {"location": "Boston, MA"}
                }}]},
                "finishReason": "STOP",
                "index": 0
            }],
            "usageMetadata": {"promptTokenCount": 82, "candidatesTokenCount": 17, "totalTokenCount": 99},
            "modelVersion": "gpt-4o-mini",
            "responseId": "chatcmpl-abc123"
        })
    );
    let default: openai::ChatResponse =
        serde_json::from_value(fixture("openai/chat_response_default.json")).unwrap();
    assert_eq!(
        serde_json::to_value(openai_response_to_gemini(&default).unwrap()).unwrap()["candidates"],
        json!([{"content": {"role": "model", "parts": [{"text": "Hello! How can I assist you today?"}]},
                "finishReason": "STOP", "index": 0}])
    );
}

#[test]
fn openai_response_with_reasoning_and_bad_arguments() {
    let resp: openai::ChatResponse = serde_json::from_value(json!({
        "id": "x", "object": "chat.completion", "created": 1, "model": "o",
        "choices": [{"index": 0, "finish_reason": "length", "message": {
            "role": "assistant", "content": "Answer", "reasoning_content": "Because",
            "extra_content": {"google": {"thought_signature": "s"}}
        }}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 10, "total_tokens": 11,
                  "completion_tokens_details": {"reasoning_tokens": 4}, "prompt_tokens_details": {"cached_tokens": 1}}
    }))
    .unwrap();
    assert_eq!(
        serde_json::to_value(openai_response_to_gemini(&resp).unwrap()).unwrap(),
        json!({
            "candidates": [{"content": {"role": "model", "parts": [
                {"text": "Because", "thought": true},
                {"text": "Answer", "thoughtSignature": "s"}
            ]}, "finishReason": "MAX_TOKENS", "index": 0}],
            "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 6, "totalTokenCount": 11,
                              "thoughtsTokenCount": 4, "cachedContentTokenCount": 1},
            "modelVersion": "o", "responseId": "x"
        })
    );
    let bad: openai::ChatResponse = serde_json::from_value(json!({
        "id": "x", "object": "chat.completion", "created": 1, "model": "o",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": null,
            "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{\"a\":"}}]}}]
    }))
    .unwrap();
    let err = openai_response_to_gemini(&bad).unwrap_err();
    assert!(!err.is_client_error());
}

// === OpenAI chunks -> Gemini stream ===

#[test]
fn openai_chunks_to_gemini_stream() {
    let Value::Array(chunks) = fixture("openai/chat_chunks.json") else {
        panic!("expected an array");
    };
    let mut events = data_events(&chunks);
    events.push(SseEvent::data("[DONE]"));
    let mut translator = OpenAiToGeminiStream::new();
    let out = parsed(&run(&mut translator, &events));
    let meta = |mut v: Value| {
        v["modelVersion"] = json!("gpt-4o-mini");
        v["responseId"] = json!("chatcmpl-123");
        v
    };
    assert_eq!(
        out,
        vec![
            meta(
                json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hello"}]}, "index": 0}]})
            ),
            meta(
                json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "!"}]}, "index": 0}]})
            ),
            meta(json!({
                "candidates": [{"content": {"role": "model", "parts": [{"functionCall": {
                    "id": "call_DdmO9pD3xa9XTPNJ32zg2hcA", "name": "get_weather", "args": {"location": "Paris"}
                }}]}, "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 12, "totalTokenCount": 21}
            })),
        ]
    );
}

#[test]
fn openai_stream_without_usage_flushes_at_done_or_end() {
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let events = data_events(&[
        chunk(
            json!({"role": "assistant", "tool_calls": [{"index": 0, "id": "a", "type": "function",
            "function": {"name": "f", "arguments": "{\"x\""}, "extra_content": {"google": {"thought_signature": "sig"}}}]}),
            Value::Null,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}),
            Value::Null,
        ),
        chunk(json!({}), json!("tool_calls")),
    ]);
    let mut translator = OpenAiToGeminiStream::new();
    let out = parsed(&run(&mut translator, &events));
    assert_eq!(
        out,
        vec![json!({
            "candidates": [{"content": {"role": "model", "parts": [{
                "functionCall": {"id": "a", "name": "f", "args": {"x": 1}}, "thoughtSignature": "sig"
            }]}, "finishReason": "STOP", "index": 0}],
            "modelVersion": "m", "responseId": "c"
        })]
    );

    // A stream cut before its finish_reason still delivers the gathered call at the end.
    let mut translator = OpenAiToGeminiStream::new();
    let out = parsed(&run(&mut translator, &events[..2]));
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0]["candidates"][0]["content"]["parts"][0]["functionCall"]["name"],
        "f"
    );
}

#[test]
fn openai_stream_error_chunk_is_an_upstream_error() {
    let mut translator = OpenAiToGeminiStream::new();
    let mut out = Vec::new();
    let err = translator
        .on_event(
            &SseEvent::data(r#"{"error": {"message": "Rate limit reached", "type": "requests", "param": null, "code": "rate_limit_exceeded"}}"#),
            &mut out,
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "upstream error (rate_limit_exceeded): Rate limit reached"
    );
}

// === Round trips ===

mod round_trip {
    use super::*;
    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9 ,.?!]{1,24}"
    }

    fn args() -> impl Strategy<Value = Value> {
        prop::collection::btree_map(
            "[a-z]{1,6}",
            prop_oneof![
                any::<i32>().prop_map(Value::from),
                text().prop_map(Value::from),
                any::<bool>().prop_map(Value::from),
            ],
            0..4,
        )
        .prop_map(|m| Value::Object(m.into_iter().collect()))
    }

    /// One exchange: a user message, then an assistant answer that is text, or tool calls
    /// (maybe with text) followed by their results and a closing text answer.
    fn exchange() -> impl Strategy<Value = Vec<(String, Value)>> {
        let calls = prop::collection::vec(("[a-z_]{3,10}", args(), text()), 1..4);
        (
            text(),
            prop::option::of(text()),
            prop::option::of(calls),
            text(),
        )
            .prop_map(|(question, preface, calls, answer)| {
                let mut messages = vec![("user".to_owned(), json!(question))];
                if let Some(calls) = calls {
                    messages.push((
                        "assistant_calls".to_owned(),
                        json!({"content": preface, "calls": calls.iter().map(|(n, a, _)| json!([n, a])).collect::<Vec<_>>()}),
                    ));
                    for (_, _, result) in &calls {
                        messages.push(("tool".to_owned(), json!(result)));
                    }
                }
                messages.push(("assistant".to_owned(), json!(answer)));
                messages
            })
    }

    /// Builds the request, giving calls ids unique across the conversation.
    fn build(
        system: Option<String>,
        exchanges: Vec<Vec<(String, Value)>>,
        sampling: Sampling,
    ) -> openai::ChatRequest {
        let mut messages = Vec::new();
        if let Some(system) = system {
            messages.push(json!({"role": "system", "content": system}));
        }
        let mut call_ids: VecDeque<String> = VecDeque::new();
        for (e, exchange) in exchanges.into_iter().enumerate() {
            for (kind, value) in exchange {
                match kind.as_str() {
                    "user" => messages.push(json!({"role": "user", "content": value})),
                    "assistant" => messages.push(json!({"role": "assistant", "content": value})),
                    "assistant_calls" => {
                        let calls: Vec<Value> = value["calls"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .enumerate()
                            .map(|(c, call)| {
                                let id = format!("call_{e}_{c}");
                                call_ids.push_back(id.clone());
                                json!({"id": id, "type": "function",
                                       "function": {"name": call[0], "arguments": call[1].to_string()}})
                            })
                            .collect();
                        messages.push(json!({"role": "assistant", "content": value["content"], "tool_calls": calls}));
                    }
                    _ => messages.push(json!({"role": "tool", "tool_call_id": call_ids.pop_front().unwrap(), "content": value})),
                }
            }
        }
        let mut req = json!({"model": "gemini-2.5-flash", "messages": messages});
        let object = req.as_object_mut().unwrap();
        let (temperature, top_p, max_tokens, stop, n, seed, presence, frequency, effort) = sampling;
        for (key, value) in [
            ("temperature", temperature.map(Value::from)),
            ("top_p", top_p.map(Value::from)),
            ("max_completion_tokens", max_tokens.map(Value::from)),
            ("stop", stop.map(Value::from)),
            ("n", n.map(Value::from)),
            ("seed", seed.map(Value::from)),
            ("presence_penalty", presence.map(Value::from)),
            ("frequency_penalty", frequency.map(Value::from)),
            ("reasoning_effort", effort.map(Value::from)),
        ] {
            if let Some(value) = value {
                object.insert(key.into(), value);
            }
        }
        serde_json::from_value(req).unwrap()
    }

    type Sampling = (
        Option<f64>,
        Option<f64>,
        Option<u32>,
        Option<Vec<String>>,
        Option<u32>,
        Option<i64>,
        Option<f64>,
        Option<f64>,
        Option<&'static str>,
    );

    fn sampling() -> impl Strategy<Value = Sampling> {
        (
            prop::option::of(0.0f64..2.0),
            prop::option::of(0.0f64..=1.0),
            prop::option::of(1u32..100_000),
            prop::option::of(prop::collection::vec(text(), 1..4)),
            prop::option::of(1u32..4),
            prop::option::of(any::<i64>()),
            prop::option::of(-2.0f64..2.0),
            prop::option::of(-2.0f64..2.0),
            prop::option::of(prop::sample::select(vec!["low", "medium", "high"])),
        )
    }

    /// Role, text, tool calls (id, name, arguments) and answered call id of a message.
    type Essence = (
        String,
        Option<String>,
        Vec<(String, String, Value)>,
        Option<String>,
    );

    /// What must survive: per message the role, the text, the tool calls (id, name,
    /// arguments as JSON) and the answered call id.
    fn essence(req: &openai::ChatRequest) -> Vec<Essence> {
        req.messages
            .iter()
            .map(|m| {
                let text = match &m.content {
                    Some(openai::MessageContent::Text(t)) => Some(t.clone()),
                    Some(openai::MessageContent::Parts(_)) => panic!("unexpected parts"),
                    None => None,
                };
                let calls = m
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
                    .collect();
                (
                    m.role.as_str().to_owned(),
                    text,
                    calls,
                    m.tool_call_id.clone(),
                )
            })
            .collect()
    }

    proptest! {
        #[test]
        fn openai_to_gemini_and_back(
            system in prop::option::of(text()),
            exchanges in prop::collection::vec(exchange(), 1..4),
            sampling in sampling(),
        ) {
            let original = build(system, exchanges, sampling);
            let (model, gemini_req) = openai_request_to_gemini(&original, &TranslateOptions::default()).unwrap();
            let back = gemini_request_to_openai(&model, &gemini_req, &TranslateOptions::default()).unwrap();

            prop_assert_eq!(&back.model, &original.model);
            prop_assert_eq!(essence(&back), essence(&original));
            prop_assert_eq!(back.temperature, original.temperature);
            prop_assert_eq!(back.top_p, original.top_p);
            prop_assert_eq!(back.max_completion_tokens, original.max_completion_tokens);
            prop_assert_eq!(back.stop.as_ref().map(openai::Stop::to_vec), original.stop.as_ref().map(openai::Stop::to_vec));
            prop_assert_eq!(back.n, original.n);
            prop_assert_eq!(back.seed, original.seed);
            prop_assert_eq!(back.presence_penalty, original.presence_penalty);
            prop_assert_eq!(back.frequency_penalty, original.frequency_penalty);
            prop_assert_eq!(back.reasoning_effort, original.reasoning_effort);
        }

        #[test]
        fn gemini_response_to_openai_and_back_keeps_text_and_calls(
            text in prop::option::of(text()),
            calls in prop::collection::vec(("[a-z_]{3,10}", args()), 0..4),
        ) {
            let mut parts = Vec::new();
            if let Some(text) = &text {
                parts.push(json!({"text": text}));
            }
            for (i, (name, args)) in calls.iter().enumerate() {
                parts.push(json!({"functionCall": {"id": format!("id{i}"), "name": name, "args": args}}));
            }
            prop_assume!(!parts.is_empty());
            let resp: gemini::GenerateContentResponse = serde_json::from_value(json!({
                "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
                "responseId": "r"
            })).unwrap();
            let openai = gemini_response_to_openai(&resp, "m");
            let back = openai_response_to_gemini(&openai).unwrap();
            prop_assert_eq!(&back.candidates[0].content, &resp.candidates[0].content);
            prop_assert_eq!(&back.candidates[0].finish_reason, &resp.candidates[0].finish_reason);
        }
    }
}
