//! The mock upstream's native Gemini (and Vertex AI Express) and Anthropic surfaces over
//! real HTTP on loopback, then the official `google-genai`, `anthropic` and `openai`
//! Python SDKs against the mock directly, every mode of their driver scripts.
#![allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fulcrum_tests::mock::{
    Behaviour, KeySource, MOCK_ANTHROPIC_MODELS, MOCK_GEMINI_MODELS, MOCK_REASONING,
    MOCK_SIGNATURE, MockUpstream, RawResponse, http_request,
};
use fulcrum_tests::sdk::{python_with, run_script};
use serde_json::{Value, json};

const GENERATE: &str = "/v1beta/models/gemini-2.5-flash:generateContent";
const STREAM_SSE: &str = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse";
const MESSAGES: &str = "/v1/messages";
const VERSION: &str = "2023-06-01";

async fn gemini(mock: &MockUpstream, path: &str, key: &str, body: &Value) -> RawResponse {
    http_request(
        mock.addr(),
        "POST",
        path,
        &[
            ("x-goog-api-key", key),
            ("content-type", "application/json"),
        ],
        body.to_string().as_bytes(),
    )
    .await
}

async fn anthropic(mock: &MockUpstream, path: &str, key: &str, body: &Value) -> RawResponse {
    http_request(
        mock.addr(),
        "POST",
        path,
        &[
            ("x-api-key", key),
            ("anthropic-version", VERSION),
            ("content-type", "application/json"),
        ],
        body.to_string().as_bytes(),
    )
    .await
}

async fn get(mock: &MockUpstream, path: &str, headers: &[(&str, &str)]) -> RawResponse {
    http_request(mock.addr(), "GET", path, headers, b"").await
}

fn user(text: &str) -> Value {
    json!({"role": "user", "parts": [{"text": text}]})
}

/// The text of a Gemini response's non-thought parts.
fn gemini_text(response: &Value) -> String {
    response["candidates"][0]["content"]["parts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["thought"] != true)
        .filter_map(|p| p["text"].as_str())
        .collect()
}

/// The SSE data of a Gemini stream as JSON, checking the framing on the way.
fn gemini_events(response: &RawResponse) -> Vec<Value> {
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(
        response
            .header("content-type")
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = response.text();
    assert!(
        text.ends_with("}\r\n\r\n")
            && text.matches("\r\n\r\n").count() == text.matches("data: ").count(),
        "Gemini's SSE events end with CRLF CRLF: {text:?}"
    );
    response
        .sse_data()
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

fn anthropic_text(message: &Value) -> String {
    message["content"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["type"] == "text")
        .filter_map(|b| b["text"].as_str())
        .collect()
}

fn weather_schema(upper: bool) -> Value {
    let t = |s: &str| {
        if upper {
            s.to_ascii_uppercase()
        } else {
            s.to_owned()
        }
    };
    json!({
        "type": t("object"),
        "properties": {
            "location": {"type": t("string")},
            "days": {"type": t("integer")},
            "metric": {"type": t("boolean")},
            "note": {"type": t("string")},
        },
        "required": ["location", "days", "metric"],
    })
}

fn mock_args() -> Value {
    json!({"location": "mock", "days": 1, "metric": true})
}

// === Gemini ===

#[tokio::test]
async fn gemini_generate_content_has_gemini_shape() {
    let mock = MockUpstream::start().await;
    assert_eq!(
        mock.gemini_base_url(),
        format!("http://{}/v1beta", mock.addr())
    );
    assert_eq!(mock.root_url(), format!("http://{}", mock.addr()));

    let body = json!({"contents": [user("hello there")]});
    let response = gemini(&mock, GENERATE, "gk-test-123", &body).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("content-type"), Some("application/json"));
    let body = response.json();
    let candidate = &body["candidates"][0];
    assert_eq!(candidate["index"], 0);
    assert_eq!(candidate["finishReason"], "STOP");
    assert_eq!(candidate["content"]["role"], "model");
    assert_eq!(
        candidate["content"]["parts"],
        json!([{"text": "Hello from mock key gk-tes..."}])
    );
    assert_eq!(body["modelVersion"], "gemini-2.5-flash");
    assert!(body["responseId"].as_str().is_some_and(|id| !id.is_empty()));
    let usage = &body["usageMetadata"];
    assert_eq!(usage["promptTokenCount"], 2, "two words in");
    assert_eq!(usage["candidatesTokenCount"], 5, "five pieces out");
    assert_eq!(usage["totalTokenCount"], 7);
    assert!(usage.get("thoughtsTokenCount").is_none());

    assert_eq!(mock.calls("gk-test-123"), 1);
    let recorded = &mock.requests()[0];
    assert_eq!(recorded.key_source, Some(KeySource::GoogApiKey));
    assert!(!recorded.key_in_url());
    assert_eq!(recorded.path_only(), GENERATE);
}

#[tokio::test]
async fn gemini_key_in_the_url_is_attributed_and_recorded() {
    let mock = MockUpstream::start().await;
    let body = json!({"contents": [user("hi")]});
    let response = http_request(
        mock.addr(),
        "POST",
        &format!("{STREAM_SSE}&key=gk-in-url"),
        &[("content-type", "application/json")],
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(mock.calls("gk-in-url"), 1);
    let recorded = &mock.requests()[0];
    assert_eq!(recorded.key, "gk-in-url");
    assert_eq!(recorded.key_source, Some(KeySource::Query));
    assert!(recorded.key_in_url());
    assert_eq!(recorded.query_param("alt"), Some("sse"));

    // A header key with a `key=` in the URL as well still counts as a key in the URL.
    let response = http_request(
        mock.addr(),
        "POST",
        &format!("{GENERATE}?key=leaked"),
        &[("x-goog-api-key", "gk-header")],
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(response.status, 200);
    let recorded = &mock.requests()[1];
    assert_eq!(recorded.key, "gk-header");
    assert_eq!(recorded.key_source, Some(KeySource::GoogApiKey));
    assert!(recorded.key_in_url());
}

#[tokio::test]
async fn gemini_stream_is_sse_or_a_json_array() {
    let mock = MockUpstream::start().await;
    let body = json!({"contents": [user("hello there")]});
    let response = gemini(&mock, STREAM_SSE, "gk-stream", &body).await;
    assert!(response.complete);
    let events = gemini_events(&response);
    assert_eq!(events.len(), 5, "one event per piece");
    let text: String = events.iter().map(gemini_text).collect();
    assert_eq!(text, "Hello from mock key gk-str...");
    for (i, event) in events.iter().enumerate() {
        let last = i + 1 == events.len();
        assert_eq!(event["modelVersion"], "gemini-2.5-flash");
        assert_eq!(event["responseId"], events[0]["responseId"]);
        assert_eq!(event["candidates"][0]["content"]["role"], "model");
        assert_eq!(
            event["candidates"][0].get("finishReason").is_some(),
            last,
            "only the last event finishes: {event}"
        );
        assert_eq!(event.get("usageMetadata").is_some(), last, "{event}");
    }
    let last = events.last().unwrap();
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert_eq!(last["usageMetadata"]["candidatesTokenCount"], 5);
    assert_eq!(last["usageMetadata"]["promptTokenCount"], 2);

    // Without `alt=sse` the real API streams one JSON array.
    let path = "/v1beta/models/gemini-2.5-flash:streamGenerateContent";
    let response = gemini(&mock, path, "gk-stream", &body).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    let array = response.json();
    let array = array.as_array().unwrap();
    assert_eq!(array.len(), 5);
    let text: String = array.iter().map(gemini_text).collect();
    assert_eq!(text, "Hello from mock key gk-str...");
    assert_eq!(array[4]["candidates"][0]["finishReason"], "STOP");
}

#[tokio::test]
async fn gemini_calls_the_first_tool_then_echoes_its_results() {
    let mock = MockUpstream::start().await;
    let tools = json!([{"functionDeclarations": [
        {"name": "get_weather", "parameters": weather_schema(true)},
        {"name": "other", "parameters": {"type": "OBJECT"}},
    ]}]);
    let body = json!({"contents": [user("weather in Paris?")], "tools": tools});
    let response = gemini(&mock, GENERATE, "gk", &body).await.json();
    let candidate = &response["candidates"][0];
    assert_eq!(candidate["finishReason"], "STOP", "Gemini stops on calls");
    assert_eq!(
        candidate["content"]["parts"],
        json!([{"functionCall": {"id": "fc_mock_1", "name": "get_weather", "args": mock_args()}}])
    );
    assert_eq!(response["usageMetadata"]["candidatesTokenCount"], 1);

    // `parametersJsonSchema` works too; "parallel" asks for two calls.
    let tools = json!([{"functionDeclarations": [
        {"name": "lookup", "parametersJsonSchema": weather_schema(false)}
    ]}]);
    let body = json!({"contents": [user("two lookups in parallel")], "tools": tools});
    let response = gemini(&mock, GENERATE, "gk", &body).await.json();
    let parts = response["candidates"][0]["content"]["parts"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0]["functionCall"]["id"], "fc_mock_1");
    assert_eq!(parts[1]["functionCall"]["id"], "fc_mock_2");
    assert_eq!(parts[1]["functionCall"]["name"], "lookup");
    assert_eq!(parts[1]["functionCall"]["args"], mock_args());

    // Streamed: the calls come whole in one event, the last.
    let response = gemini(&mock, STREAM_SSE, "gk", &body).await;
    let events = gemini_events(&response);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["candidates"][0]["content"]["parts"], json!(parts));
    assert_eq!(events[0]["candidates"][0]["finishReason"], "STOP");

    // The results come back: echoed with their ids, the tool is not called again.
    let body = json!({
        "contents": [
            user("two lookups in parallel"),
            {"role": "model", "parts": parts},
            {"role": "user", "parts": [
                {"functionResponse": {"id": "fc_mock_1", "name": "lookup", "response": {"t": 21}}},
                {"functionResponse": {"id": "fc_mock_2", "name": "lookup", "response": {"t": 9}}},
            ]},
        ],
        "tools": tools,
    });
    let response = gemini(&mock, GENERATE, "gk", &body).await.json();
    assert_eq!(
        gemini_text(&response),
        r#"tool result: {"t":21} | {"t":9} (ids: fc_mock_1, fc_mock_2)"#
    );
    // Without ids, none are echoed.
    let body = json!({
        "contents": [
            user("weather?"),
            {"role": "model", "parts": [{"functionCall": {"name": "lookup", "args": {}}}]},
            {"role": "function", "parts": [
                {"functionResponse": {"name": "lookup", "response": {"ok": true}}}
            ]},
        ],
        "tools": tools,
    });
    let response = gemini(&mock, GENERATE, "gk", &body).await.json();
    assert_eq!(gemini_text(&response), r#"tool result: {"ok":true}"#);
}

#[tokio::test]
async fn gemini_echoes_images_system_and_thinking() {
    let mock = MockUpstream::start().await;
    let body = json!({
        "systemInstruction": {"parts": [{"text": "You are a meticulous weather bot."}]},
        "contents": [{"role": "user", "parts": [
            {"text": "what is this?"},
            {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
            {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/4AAQ"}},
        ]}],
    });
    let response = gemini(&mock, GENERATE, "gk", &body).await.json();
    assert_eq!(
        gemini_text(&response),
        "[system: You are a meticulous] saw 2 image(s): image/png,image/jpeg"
    );
    assert_eq!(
        response["usageMetadata"]["promptTokenCount"], 9,
        "six words of system prompt, three of question"
    );

    let thinking = json!({
        "contents": [user("think first")],
        "generationConfig": {"thinkingConfig": {"includeThoughts": true, "thinkingBudget": 1024}},
    });
    let response = gemini(&mock, GENERATE, "gk-think", &thinking).await.json();
    let parts = &response["candidates"][0]["content"]["parts"];
    assert_eq!(parts[0], json!({"text": MOCK_REASONING, "thought": true}));
    assert_eq!(parts[1]["text"], "Hello from mock key gk-thi...");
    assert_eq!(parts[1]["thoughtSignature"], "c2lnLW1vY2stMQ==");
    let usage = &response["usageMetadata"];
    assert_eq!(usage["thoughtsTokenCount"], 2);
    assert_eq!(usage["candidatesTokenCount"], 5);
    assert_eq!(usage["totalTokenCount"], 2 + 5 + 2);

    // Streamed: the thought comes first, in its own event.
    let response = gemini(&mock, STREAM_SSE, "gk-think", &thinking).await;
    let events = gemini_events(&response);
    assert_eq!(events.len(), 6);
    assert_eq!(
        events[0]["candidates"][0]["content"]["parts"][0]["thought"],
        true
    );
    assert!(events[1]["candidates"][0]["content"]["parts"][0]["thoughtSignature"].is_string());

    // A zero budget or no includeThoughts: no thought.
    for config in [
        json!({"includeThoughts": true, "thinkingBudget": 0}),
        json!({"thinkingBudget": 1024}),
    ] {
        let body = json!({
            "contents": [user("quick")],
            "generationConfig": {"thinkingConfig": config},
        });
        let response = gemini(&mock, GENERATE, "gk", &body).await.json();
        let parts = response["candidates"][0]["content"]["parts"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(parts.len(), 1, "{config}: {parts:?}");
        assert!(parts[0].get("thought").is_none());
    }
}

#[tokio::test]
async fn gemini_count_embed_and_models() {
    let mock = MockUpstream::start().await;
    let count = "/v1beta/models/gemini-2.5-flash:countTokens";
    let body = json!({"contents": [user("one two three four")]});
    let response = gemini(&mock, count, "gk", &body).await.json();
    assert_eq!(response["totalTokens"], 4);
    let body = json!({"generateContentRequest": {
        "model": "models/gemini-2.5-flash",
        "contents": [user("one two three")],
        "systemInstruction": {"parts": [{"text": "be nice"}]},
    }});
    let response = gemini(&mock, count, "gk", &body).await.json();
    assert_eq!(response["totalTokens"], 5);

    let embed = "/v1beta/models/gemini-embedding-001:embedContent";
    let body = json!({"content": {"parts": [{"text": "embed me"}]}});
    let response = gemini(&mock, embed, "gk", &body).await.json();
    assert_eq!(response["embedding"]["values"].as_array().unwrap().len(), 8);
    let body = json!({"content": {"parts": [{"text": "x"}]}, "outputDimensionality": 4});
    let response = gemini(&mock, embed, "gk", &body).await.json();
    assert_eq!(response["embedding"]["values"].as_array().unwrap().len(), 4);
    assert_eq!(gemini(&mock, embed, "gk", &json!({})).await.status, 400);

    let batch = "/v1beta/models/gemini-embedding-001:batchEmbedContents";
    let body = json!({"requests": [
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "a"}]}},
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "b"}]}},
    ]});
    let response = gemini(&mock, batch, "gk", &body).await.json();
    let embeddings = response["embeddings"].as_array().unwrap();
    assert_eq!(embeddings.len(), 2);
    assert_ne!(
        embeddings[0], embeddings[1],
        "each input has its own vector"
    );

    let response = get(&mock, "/v1beta/models", &[("x-goog-api-key", "gk")]).await;
    assert_eq!(response.status, 200);
    let names: Vec<String> = response.json()["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_owned())
        .collect();
    let want: Vec<String> = MOCK_GEMINI_MODELS
        .iter()
        .map(|m| format!("models/{m}"))
        .collect();
    assert_eq!(names, want);
    let response = get(
        &mock,
        "/v1beta/models/gemini-2.5-pro",
        &[("x-goog-api-key", "gk")],
    )
    .await;
    let model = response.json();
    assert_eq!(model["name"], "models/gemini-2.5-pro");
    assert!(
        model["supportedGenerationMethods"]
            .as_array()
            .unwrap()
            .contains(&json!("generateContent"))
    );
}

#[tokio::test]
async fn gemini_errors_have_google_shape() {
    let mock = MockUpstream::start().await;
    let body = json!({"contents": [user("hi")]});
    for (status, name) in [
        (400, "INVALID_ARGUMENT"),
        (401, "UNAUTHENTICATED"),
        (403, "PERMISSION_DENIED"),
        (404, "NOT_FOUND"),
        (429, "RESOURCE_EXHAUSTED"),
        (500, "INTERNAL"),
        (503, "UNAVAILABLE"),
    ] {
        mock.script("gk-err", Behaviour::status(status));
        for path in [GENERATE, STREAM_SSE] {
            let response = gemini(&mock, path, "gk-err", &body).await;
            assert_eq!(response.status, status, "{path}");
            let error = &response.json()["error"];
            assert_eq!(error["code"], status, "{error}");
            assert_eq!(error["status"], name, "{error}");
            assert!(error["message"].as_str().unwrap().contains("mock"));
        }
    }
    mock.script("gk-err", Behaviour::rate_limited("7"));
    let response = gemini(&mock, GENERATE, "gk-err", &body).await;
    assert_eq!(response.header("retry-after"), Some("7"));
    assert_eq!(response.json()["error"]["status"], "RESOURCE_EXHAUSTED");

    // No key: the real API's 403.
    let response = http_request(mock.addr(), "POST", GENERATE, &[], b"{}").await;
    assert_eq!(response.status, 403);
    assert_eq!(response.json()["error"]["status"], "PERMISSION_DENIED");
    // Bad JSON, no contents, unknown action or path: Google-shaped too.
    let headers = [("x-goog-api-key", "gk")];
    let response = http_request(mock.addr(), "POST", GENERATE, &headers, b"nope").await;
    assert_eq!(response.status, 400);
    assert_eq!(response.json()["error"]["status"], "INVALID_ARGUMENT");
    let response = gemini(&mock, GENERATE, "gk", &json!({"contents": []})).await;
    assert_eq!(response.json()["error"]["status"], "INVALID_ARGUMENT");
    for path in ["/v1beta/models/gemini-2.5-flash:explode", "/v1beta/nothing"] {
        let response = gemini(&mock, path, "gk", &body).await;
        assert_eq!(response.status, 404, "{path}");
        assert_eq!(response.json()["error"]["status"], "NOT_FOUND");
    }
}

#[tokio::test]
async fn vertex_express_and_gemini_v1_paths_answer_alike() {
    let mock = MockUpstream::start().await;
    assert_eq!(mock.vertex_base_url(), format!("http://{}/v1", mock.addr()));
    let body = json!({"contents": [user("hello there")]});
    for prefix in [
        "/v1/publishers/google/models",
        "/v1beta1/publishers/google/models",
        "/v1/models",
    ] {
        let path = format!("{prefix}/gemini-2.5-flash:generateContent");
        let response = gemini(&mock, &path, "vx-key-1", &body).await;
        assert_eq!(response.status, 200, "{path}: {}", response.text());
        let response = response.json();
        assert_eq!(gemini_text(&response), "Hello from mock key vx-key...");
        assert_eq!(response["candidates"][0]["finishReason"], "STOP");

        let path = format!("{prefix}/gemini-2.5-flash:streamGenerateContent?alt=sse");
        let events = gemini_events(&gemini(&mock, &path, "vx-key-1", &body).await);
        let text: String = events.iter().map(gemini_text).collect();
        assert_eq!(text, "Hello from mock key vx-key...");
    }
    mock.script("vx-err", Behaviour::status(429));
    let path = "/v1/publishers/google/models/gemini-2.5-flash:generateContent";
    let response = gemini(&mock, path, "vx-err", &body).await;
    assert_eq!(response.json()["error"]["status"], "RESOURCE_EXHAUSTED");
}

#[tokio::test]
async fn gemini_stream_behaviours() {
    let mock = MockUpstream::start().await;
    let body = json!({"contents": [user("hi")]});
    mock.script("gk-cut", Behaviour::StreamCutAfter(2));
    let response = gemini(&mock, STREAM_SSE, "gk-cut", &body).await;
    assert_eq!(response.status, 200);
    assert!(!response.complete);
    assert_eq!(response.sse_data().len(), 2);

    mock.script(
        "gk-slow",
        Behaviour::SlowStream {
            chunks: 3,
            interval: Duration::from_millis(40),
        },
    );
    let started = Instant::now();
    let response = gemini(&mock, STREAM_SSE, "gk-slow", &body).await;
    assert!(started.elapsed() >= Duration::from_millis(120));
    assert!(response.complete);
    let events = gemini_events(&response);
    assert_eq!(events.len(), 3);
    assert_eq!(
        events[2]["usageMetadata"]["candidatesTokenCount"], 3,
        "{events:?}"
    );
}

// === Anthropic ===

fn hello_message(text: &str) -> Value {
    json!({
        "model": "claude-sonnet-4-6",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": text}],
    })
}

#[tokio::test]
async fn anthropic_message_has_anthropic_shape() {
    let mock = MockUpstream::start().await;
    assert_eq!(
        mock.anthropic_base_url(),
        format!("http://{}/v1", mock.addr())
    );
    let response = anthropic(
        &mock,
        MESSAGES,
        "ak-test-123",
        &hello_message("hello there"),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("content-type"), Some("application/json"));
    let message = response.json();
    assert!(message["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(message["type"], "message");
    assert_eq!(message["role"], "assistant");
    assert_eq!(message["model"], "claude-sonnet-4-6");
    assert_eq!(
        message["content"],
        json!([{"type": "text", "text": "Hello from mock key ak-tes..."}])
    );
    assert_eq!(message["stop_reason"], "end_turn");
    assert!(message["stop_sequence"].is_null());
    assert_eq!(message["usage"]["input_tokens"], 2);
    assert_eq!(message["usage"]["output_tokens"], 5);

    let recorded = &mock.requests()[0];
    assert_eq!(recorded.key_source, Some(KeySource::XApiKey));
    assert_eq!(recorded.header("anthropic-version"), Some(VERSION));
}

#[tokio::test]
async fn anthropic_stream_has_the_exact_event_sequence() {
    let mock = MockUpstream::start().await;
    let mut body = hello_message("hello there");
    body["stream"] = json!(true);
    let response = anthropic(&mock, MESSAGES, "ak-stream", &body).await;
    assert_eq!(response.status, 200);
    assert!(response.complete);
    assert!(
        response
            .header("content-type")
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = response.sse_events();
    let names: Vec<&str> = events.iter().map(|e| e.event.as_deref().unwrap()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    for event in &events {
        assert_eq!(event.json()["type"], event.event.as_deref().unwrap());
    }
    let start = events[0].json();
    assert_eq!(start["message"]["content"], json!([]));
    assert!(start["message"]["stop_reason"].is_null());
    assert_eq!(start["message"]["usage"]["input_tokens"], 2);
    assert_eq!(
        events[1].json()["content_block"],
        json!({"type": "text", "text": ""})
    );
    let text: String = events
        .iter()
        .map(|e| e.json())
        .filter(|e| e["type"] == "content_block_delta")
        .map(|e| {
            assert_eq!(e["delta"]["type"], "text_delta");
            e["delta"]["text"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(text, "Hello from mock key ak-str...");
    let delta = events[9].json();
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"]["output_tokens"], 5);
}

#[tokio::test]
async fn anthropic_needs_version_key_and_fields() {
    let mock = MockUpstream::start().await;
    let body = hello_message("hi").to_string();
    let response = http_request(
        mock.addr(),
        "POST",
        MESSAGES,
        &[("x-api-key", "ak")],
        body.as_bytes(),
    )
    .await;
    assert_eq!(response.status, 400);
    let error = response.json();
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("anthropic-version")
    );
    assert_eq!(mock.calls("ak"), 1, "counted even when refused");

    let response = http_request(
        mock.addr(),
        "POST",
        MESSAGES,
        &[("anthropic-version", VERSION)],
        body.as_bytes(),
    )
    .await;
    assert_eq!(response.status, 401);
    assert_eq!(response.json()["error"]["type"], "authentication_error");

    let mut missing = hello_message("hi");
    missing.as_object_mut().unwrap().remove("max_tokens");
    let response = anthropic(&mock, MESSAGES, "ak", &missing).await;
    assert_eq!(response.status, 400);
    assert!(
        response.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_tokens")
    );
    let response = anthropic(&mock, "/v1/messages/nope", "ak", &missing).await;
    assert_eq!(response.status, 404);
    assert_eq!(response.json()["error"]["type"], "not_found_error");
}

#[tokio::test]
async fn anthropic_calls_the_first_tool_then_echoes_its_results() {
    let mock = MockUpstream::start().await;
    let tools = json!([
        {"name": "get_weather", "description": "d", "input_schema": weather_schema(false)},
        {"name": "other", "input_schema": {"type": "object"}},
    ]);
    let mut body = hello_message("weather in Paris?");
    body["tools"] = tools.clone();
    let message = anthropic(&mock, MESSAGES, "ak", &body).await.json();
    assert_eq!(message["stop_reason"], "tool_use");
    assert_eq!(
        message["content"],
        json!([{"type": "tool_use", "id": "toolu_mock_1", "name": "get_weather", "input": mock_args()}])
    );

    body["messages"][0]["content"] = json!("both, in parallel");
    let message = anthropic(&mock, MESSAGES, "ak", &body).await.json();
    let blocks = message["content"].as_array().unwrap().clone();
    assert_eq!(blocks.len(), 2);
    assert_eq!(blocks[1]["id"], "toolu_mock_2");

    // Streamed: each tool_use block's input comes in two input_json_delta fragments.
    body["stream"] = json!(true);
    let events = anthropic(&mock, MESSAGES, "ak", &body).await.sse_events();
    let names: Vec<&str> = events.iter().map(|e| e.event.as_deref().unwrap()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    let start = events[1].json();
    assert_eq!(
        start["content_block"],
        json!({"type": "tool_use", "id": "toolu_mock_1", "name": "get_weather", "input": {}})
    );
    let fragments: Vec<String> = events[3..5]
        .iter()
        .map(|e| {
            let delta = e.json()["delta"].clone();
            assert_eq!(delta["type"], "input_json_delta");
            delta["partial_json"].as_str().unwrap().to_owned()
        })
        .collect();
    assert!(fragments.iter().all(|f| !f.is_empty()), "{fragments:?}");
    let input: Value = serde_json::from_str(&fragments.concat()).unwrap();
    assert_eq!(input, mock_args());
    assert_eq!(events[6].json()["index"], 1);
    assert_eq!(events[10].json()["delta"]["stop_reason"], "tool_use");

    // The results come back (string and block content alike).
    let body = json!({
        "model": "claude-sonnet-4-6",
        "max_tokens": 100,
        "tools": tools,
        "messages": [
            {"role": "user", "content": "both, in parallel"},
            {"role": "assistant", "content": blocks},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_mock_1", "content": "sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_mock_2",
                 "content": [{"type": "text", "text": "rain"}]},
            ]},
        ],
    });
    let message = anthropic(&mock, MESSAGES, "ak", &body).await.json();
    assert_eq!(message["stop_reason"], "end_turn");
    assert_eq!(
        anthropic_text(&message),
        "tool result: sunny | rain (ids: toolu_mock_1, toolu_mock_2)"
    );
}

#[tokio::test]
async fn anthropic_echoes_images_system_and_thinking() {
    let mock = MockUpstream::start().await;
    let body = json!({
        "model": "claude-sonnet-4-6",
        "max_tokens": 100,
        "system": [{"type": "text", "text": "You are a meticulous weather bot."}],
        "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            {"type": "image", "source": {"type": "url", "url": "https://example.invalid/a.jpg"}},
            {"type": "text", "text": "what is this?"},
        ]}],
    });
    let message = anthropic(&mock, MESSAGES, "ak", &body).await.json();
    assert_eq!(
        anthropic_text(&message),
        "[system: You are a meticulous] saw 2 image(s): image/png,url"
    );
    assert_eq!(message["usage"]["input_tokens"], 9);

    let mut thinking = hello_message("think first");
    thinking["thinking"] = json!({"type": "enabled", "budget_tokens": 1024});
    let message = anthropic(&mock, MESSAGES, "ak-think", &thinking)
        .await
        .json();
    assert_eq!(
        message["content"][0],
        json!({"type": "thinking", "thinking": MOCK_REASONING, "signature": MOCK_SIGNATURE})
    );
    assert_eq!(
        message["content"][1]["text"],
        "Hello from mock key ak-thi..."
    );
    assert_eq!(message["usage"]["output_tokens"], 5 + 2);

    thinking["stream"] = json!(true);
    let events = anthropic(&mock, MESSAGES, "ak-think", &thinking)
        .await
        .sse_events();
    let data: Vec<Value> = events.iter().map(|e| e.json()).collect();
    assert_eq!(
        data[1]["content_block"],
        json!({"type": "thinking", "thinking": "", "signature": ""})
    );
    assert_eq!(data[2]["type"], "ping");
    assert_eq!(
        data[3]["delta"],
        json!({"type": "thinking_delta", "thinking": MOCK_REASONING})
    );
    assert_eq!(
        data[4]["delta"],
        json!({"type": "signature_delta", "signature": MOCK_SIGNATURE})
    );
    assert_eq!(data[5]["type"], "content_block_stop");
    assert_eq!(data[6]["content_block"]["type"], "text");
    assert_eq!(data[6]["index"], 1);
}

#[tokio::test]
async fn anthropic_count_tokens_models_and_errors() {
    let mock = MockUpstream::start().await;
    let body = json!({
        "model": "claude-sonnet-4-6",
        "system": "be nice",
        "messages": [{"role": "user", "content": "one two three"}],
    });
    let response = anthropic(&mock, "/v1/messages/count_tokens", "ak", &body).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json(), json!({"input_tokens": 5}));

    // `/v1/models` is Anthropic's only with `anthropic-version`.
    let response = get(
        &mock,
        "/v1/models",
        &[("x-api-key", "ak"), ("anthropic-version", VERSION)],
    )
    .await;
    let list = response.json();
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["type"], "model");
            assert!(m["display_name"].is_string() && m["created_at"].is_string());
            m["id"].as_str().unwrap()
        })
        .collect();
    assert_eq!(ids, MOCK_ANTHROPIC_MODELS);
    assert_eq!(list["has_more"], false);
    assert_eq!(list["first_id"], MOCK_ANTHROPIC_MODELS[0]);
    let response = get(
        &mock,
        "/v1/models/claude-sonnet-4-6",
        &[("x-api-key", "ak"), ("anthropic-version", VERSION)],
    )
    .await;
    assert_eq!(response.json()["id"], "claude-sonnet-4-6");
    let response = get(&mock, "/v1/models", &[("x-api-key", "ak")]).await;
    assert_eq!(response.json()["object"], "list", "OpenAI's list");

    for (status, kind) in [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (503, "overloaded_error"),
        (529, "overloaded_error"),
    ] {
        mock.script("ak-err", Behaviour::status(status));
        let response = anthropic(&mock, MESSAGES, "ak-err", &hello_message("hi")).await;
        assert_eq!(response.status, status);
        let error = response.json();
        assert_eq!(error["type"], "error");
        assert_eq!(error["error"]["type"], kind, "{status}");
        assert!(error["error"]["message"].is_string());
    }
}

#[tokio::test]
async fn anthropic_stream_behaviours() {
    let mock = MockUpstream::start().await;
    let mut body = hello_message("hi");
    body["stream"] = json!(true);
    mock.script("ak-cut", Behaviour::StreamCutAfter(4));
    let response = anthropic(&mock, MESSAGES, "ak-cut", &body).await;
    assert!(!response.complete);
    let names: Vec<String> = response
        .sse_events()
        .into_iter()
        .map(|e| e.event.unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta"
        ]
    );
    mock.script(
        "ak-slow",
        Behaviour::SlowStream {
            chunks: 3,
            interval: Duration::from_millis(40),
        },
    );
    let started = Instant::now();
    let response = anthropic(&mock, MESSAGES, "ak-slow", &body).await;
    assert!(started.elapsed() >= Duration::from_millis(120));
    let deltas = response
        .sse_events()
        .iter()
        .filter(|e| e.event.as_deref() == Some("content_block_delta"))
        .count();
    assert_eq!(deltas, 3);
}

// === The same conversation in every protocol ===

#[tokio::test]
async fn one_conversation_gets_one_answer_in_every_protocol() {
    let mock = MockUpstream::start().await;
    let system = "Answer briefly, please.";
    let question = "hello there";
    let want = "[system: Answer briefly, plea] Hello from mock key k-same...";

    let openai = json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": question},
        ],
    });
    let response = http_request(
        mock.addr(),
        "POST",
        "/v1/chat/completions",
        &[("authorization", "Bearer k-same-key")],
        openai.to_string().as_bytes(),
    )
    .await
    .json();
    assert_eq!(response["choices"][0]["message"]["content"], want);
    assert_eq!(response["usage"]["prompt_tokens"], 5);

    let gemini_body = json!({
        "systemInstruction": {"parts": [{"text": system}]},
        "contents": [user(question)],
    });
    let response = gemini(&mock, GENERATE, "k-same-key", &gemini_body)
        .await
        .json();
    assert_eq!(gemini_text(&response), want);
    assert_eq!(response["usageMetadata"]["promptTokenCount"], 5);

    let mut anthropic_body = hello_message(question);
    anthropic_body["system"] = json!(system);
    let response = anthropic(&mock, MESSAGES, "k-same-key", &anthropic_body)
        .await
        .json();
    assert_eq!(anthropic_text(&response), want);
    assert_eq!(response["usage"]["input_tokens"], 5);
    assert_eq!(mock.calls("k-same-key"), 3);
}

// === The official SDKs against the mock ===

/// Runs `script` with `key` and `mode` against `base_url`, asserting the SDK version is
/// printed.
async fn sdk(python: &Path, script: &str, base_url: &str, key: &str, mode: &str) -> Value {
    let out = run_script(python, script, &[base_url, key, mode]).await;
    assert!(
        out["sdk_version"].as_str().is_some_and(|v| !v.is_empty()),
        "{out}"
    );
    out
}

fn no_error(out: &Value) {
    assert!(out.get("error").is_none(), "the SDK raised: {out}");
}

/// The SDKs' venv interpreter; blocking, so called before any server starts.
fn python(packages: &[&str]) -> PathBuf {
    python_with(packages)
}

#[tokio::test]
async fn genai_sdk_every_mode_against_the_mock() {
    let python = python(&["google-genai"]);
    let mock = MockUpstream::start().await;
    mock.script("gk-error", Behaviour::rate_limited("3"));
    let base = mock.root_url();
    let script = "genai_client.py";
    let run = |mode: &'static str| {
        let (python, base) = (python.clone(), base.clone());
        async move { sdk(&python, script, &base, &format!("gk-{mode}"), mode).await }
    };
    let (plain, stream, tools, image, error, count, models) = tokio::join!(
        run("plain"),
        run("stream"),
        run("tools"),
        run("image"),
        run("error"),
        run("count"),
        run("models"),
    );

    no_error(&plain);
    assert_eq!(plain["text"], "Hello from mock key gk-pla...");
    assert_eq!(plain["role"], "model");
    assert_eq!(plain["finish_reason"], "STOP");
    assert_eq!(plain["model_version"], "gemini-2.5-flash");
    assert_eq!(plain["usage"]["prompt_token_count"], 2);
    assert_eq!(plain["usage"]["candidates_token_count"], 5);
    assert_eq!(plain["usage"]["total_token_count"], 7);

    no_error(&stream);
    assert_eq!(stream["text"], "Hello from mock key gk-str...");
    assert_eq!(stream["chunks"], 5);
    assert_eq!(stream["text_chunks"], 5);
    assert_eq!(stream["finish_reason"], "STOP");
    assert_eq!(stream["response_ids"].as_array().unwrap().len(), 1);
    assert_eq!(stream["usage"]["candidates_token_count"], 5);

    no_error(&tools);
    assert_eq!(
        tools["calls"],
        json!([{"id": "fc_mock_1", "name": "get_weather", "args": {"location": "mock"}}])
    );
    assert_eq!(tools["first_finish_reason"], "STOP");
    assert_eq!(
        tools["text"],
        r#"tool result: {"celsius":21,"forecast":"sunny"} (ids: fc_mock_1)"#
    );

    no_error(&image);
    assert_eq!(image["text"], "saw 1 image(s): image/png");

    assert_eq!(error["error"]["class"], "ClientError", "{error}");
    assert_eq!(error["error"]["status"], 429);
    assert_eq!(error["error"]["status_name"], "RESOURCE_EXHAUSTED");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("exhausted")
    );

    no_error(&count);
    assert_eq!(count["total_tokens"], 6);

    no_error(&models);
    let names: Vec<String> = MOCK_GEMINI_MODELS
        .iter()
        .map(|m| format!("models/{m}"))
        .collect();
    assert_eq!(models["names"], json!(names));
    assert!(
        models["supported_actions"]
            .as_array()
            .unwrap()
            .contains(&json!("generateContent"))
    );

    // What the SDK really sends: the key in a header, never in the URL.
    let requests = mock.requests();
    let of = |key: &str| -> Vec<_> { requests.iter().filter(|r| r.key == key).collect() };
    for request in &requests {
        assert!(!request.key_in_url(), "{}", request.path);
        assert_eq!(request.key_source, Some(KeySource::GoogApiKey));
        assert!(request.header("x-goog-api-client").is_some());
        assert!(
            request
                .header("user-agent")
                .is_some_and(|ua| ua.contains("google-genai-sdk/"))
        );
    }
    assert_eq!(of("gk-plain")[0].path, GENERATE);
    assert_eq!(of("gk-stream")[0].path, STREAM_SSE);
    let tool_calls = of("gk-tools");
    assert_eq!(tool_calls.len(), 2);
    let declared = &tool_calls[0].json()["tools"][0]["functionDeclarations"][0];
    assert_eq!(declared["name"], "get_weather");
    let answered = &tool_calls[1].json()["contents"][2]["parts"][0]["functionResponse"];
    assert_eq!(
        answered["id"], "fc_mock_1",
        "the SDK sends the call id back"
    );
    // google-genai writes `inlineData` in camelCase but its `mime_type` in snake_case.
    let inline = &of("gk-image")[0].json()["contents"][0]["parts"][0]["inlineData"];
    assert_eq!(inline["mime_type"], "image/png", "{inline}");
    assert!(of("gk-plain")[0].header("x-server-timeout").is_some());
    assert_eq!(
        of("gk-count")[0].path,
        "/v1beta/models/gemini-2.5-flash:countTokens"
    );
    assert_eq!(of("gk-models")[0].method, "GET");
    assert!(
        of("gk-models")[0].path.starts_with("/v1beta/models"),
        "{}",
        of("gk-models")[0].path
    );
}

#[tokio::test]
async fn anthropic_sdk_every_mode_against_the_mock() {
    let python = python(&["anthropic"]);
    let mock = MockUpstream::start().await;
    mock.script("ak-error", Behaviour::rate_limited("3"));
    let base = mock.root_url();
    let script = "anthropic_client.py";
    let run = |mode: &'static str| {
        let (python, base) = (python.clone(), base.clone());
        async move { sdk(&python, script, &base, &format!("ak-{mode}"), mode).await }
    };
    let (plain, stream, tools, image, error, count, models) = tokio::join!(
        run("plain"),
        run("stream"),
        run("tools"),
        run("image"),
        run("error"),
        run("count"),
        run("models"),
    );

    no_error(&plain);
    assert_eq!(plain["text"], "Hello from mock key ak-pla...");
    assert_eq!(plain["type"], "message");
    assert_eq!(plain["role"], "assistant");
    assert_eq!(plain["content_types"], json!(["text"]));
    assert_eq!(plain["stop_reason"], "end_turn");
    assert_eq!(
        plain["usage"],
        json!({"input_tokens": 2, "output_tokens": 5})
    );

    no_error(&stream);
    assert_eq!(stream["text"], "Hello from mock key ak-str...");
    assert_eq!(stream["text_deltas"], 5);
    assert_eq!(stream["stop_reason"], "end_turn");
    assert_eq!(
        stream["usage"],
        json!({"input_tokens": 2, "output_tokens": 5})
    );
    // The SDK drops `ping`; the rest arrives in order.
    let types: Vec<&str> = stream["event_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(types.first(), Some(&"message_start"));
    assert_eq!(types[1], "content_block_start");
    assert_eq!(
        types[types.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    assert!(!types.contains(&"ping"));

    no_error(&tools);
    assert_eq!(
        tools["calls"],
        json!([{"id": "toolu_mock_1", "name": "get_weather", "input": {"location": "mock"}}])
    );
    assert_eq!(tools["first_stop_reason"], "tool_use");
    assert_eq!(
        tools["text"],
        "tool result: sunny, 21 C (ids: toolu_mock_1)"
    );
    assert_eq!(tools["stop_reason"], "end_turn");

    no_error(&image);
    assert_eq!(image["text"], "saw 1 image(s): image/png");

    assert_eq!(error["error"]["class"], "RateLimitError", "{error}");
    assert_eq!(error["error"]["status"], 429);
    assert_eq!(error["error"]["type"], "rate_limit_error");

    no_error(&count);
    assert_eq!(count["input_tokens"], 6);

    no_error(&models);
    assert_eq!(models["ids"], json!(MOCK_ANTHROPIC_MODELS));
    assert_eq!(models["types"], json!(["model"]));

    let requests = mock.requests();
    let of = |key: &str| -> Vec<_> { requests.iter().filter(|r| r.key == key).collect() };
    for request in &requests {
        assert!(!request.key_in_url(), "{}", request.path);
        // anthropic 2.x sends the API key as a bearer token, not `x-api-key`, and its
        // own (newer) `anthropic-version`.
        assert_eq!(request.key_source, Some(KeySource::Bearer));
        assert_eq!(request.header("x-api-key"), None);
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {}", request.key).as_str())
        );
        assert!(
            request
                .header("anthropic-version")
                .is_some_and(|v| !v.is_empty())
        );
    }
    assert_eq!(of("ak-plain")[0].path, MESSAGES);
    assert_eq!(of("ak-stream")[0].json()["stream"], true);
    assert_eq!(of("ak-tools").len(), 2);
    assert_eq!(of("ak-count")[0].path, "/v1/messages/count_tokens");
    assert_eq!(of("ak-models")[0].path_only(), "/v1/models");
}

#[tokio::test]
async fn openai_sdk_tools_and_image_against_the_mock() {
    let python = python(&["openai"]);
    let mock = MockUpstream::start().await;
    let base = mock.openai_base_url();
    let script = "openai_client.py";
    let (tools, image) = tokio::join!(
        sdk(&python, script, &base, "sk-tools", "tools"),
        sdk(&python, script, &base, "sk-image", "image"),
    );

    no_error(&tools);
    assert_eq!(
        tools["calls"],
        json!([{"id": "call_mock_1", "name": "get_weather", "arguments": {"location": "mock"}}])
    );
    assert_eq!(tools["first_finish_reason"], "tool_calls");
    assert_eq!(
        tools["content"],
        "tool result: sunny, 21 C (ids: call_mock_1)"
    );
    assert_eq!(tools["finish_reason"], "stop");

    no_error(&image);
    assert_eq!(image["content"], "saw 1 image(s): image/png");
    assert_eq!(mock.calls("sk-tools"), 2);
    assert_eq!(mock.calls("sk-image"), 1);
}
