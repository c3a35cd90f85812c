//! The scriptable mock LLM upstream, exercised over real HTTP on loopback.
#![allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]

use std::time::{Duration, Instant};

use fulcrum_tests::mock::{Behaviour, KeySource, MockOptions, MockUpstream, http_request};
use serde_json::{Value, json};

const CHAT: &str = "/v1/chat/completions";

async fn post(
    mock: &MockUpstream,
    path: &str,
    key: &str,
    body: &Value,
) -> fulcrum_tests::mock::RawResponse {
    let auth = format!("Bearer {key}");
    http_request(
        mock.addr(),
        "POST",
        path,
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        body.to_string().as_bytes(),
    )
    .await
}

fn chat_body(stream: bool) -> Value {
    json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": stream,
    })
}

#[tokio::test]
async fn chat_completion_has_openai_shape() {
    let mock = MockUpstream::start().await;
    assert!(mock.openai_base_url().starts_with("http://127.0.0.1:"));
    assert!(mock.openai_base_url().ends_with("/v1"));

    let response = post(&mock, CHAT, "sk-test-123", &chat_body(false)).await;
    assert_eq!(response.status, 200);
    assert!(response.complete);
    assert_eq!(response.header("content-type"), Some("application/json"));
    let body = response.json();
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(body["object"], "chat.completion");
    assert!(body["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(body["model"], "gpt-4o-mini");
    let choice = &body["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(
        choice["message"]["content"],
        "Hello from mock key sk-tes..."
    );
    assert_eq!(choice["finish_reason"], "stop");
    let usage = &body["usage"];
    let prompt = usage["prompt_tokens"].as_u64().unwrap();
    let completion = usage["completion_tokens"].as_u64().unwrap();
    assert!(prompt > 0 && completion > 0);
    assert_eq!(usage["total_tokens"].as_u64().unwrap(), prompt + completion);
}

#[tokio::test]
async fn chat_stream_is_sse_ending_with_done() {
    let mock = MockUpstream::start().await;
    let mut body = chat_body(true);
    body["stream_options"] = json!({"include_usage": true});
    let response = post(&mock, CHAT, "sk-stream", &body).await;
    assert_eq!(response.status, 200);
    assert!(response.complete);
    assert!(
        response
            .header("content-type")
            .unwrap()
            .starts_with("text/event-stream")
    );

    let events = response.sse_data();
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert!(chunks.len() >= 4, "{events:?}");
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "gpt-4o-mini");
        assert_eq!(chunk["id"], chunks[0]["id"]);
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "Hello from mock key sk-str...");

    // The finish chunk, then the usage chunk with no choices; the others carry null usage.
    let usage_chunk = &chunks[chunks.len() - 1];
    let finish_chunk = &chunks[chunks.len() - 2];
    assert_eq!(finish_chunk["choices"][0]["finish_reason"], "stop");
    assert!(finish_chunk["usage"].is_null());
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 5);

    // Without include_usage there is no usage chunk.
    let response = post(&mock, CHAT, "sk-stream", &chat_body(true)).await;
    let events = response.sse_data();
    let last: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert!(last.get("usage").is_none());
}

#[tokio::test]
async fn legacy_completions_whole_and_streamed() {
    let mock = MockUpstream::start().await;
    let body = json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Say hi"});
    let response = post(&mock, "/v1/completions", "sk-legacy", &body).await;
    assert_eq!(response.status, 200);
    let body = response.json();
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["choices"][0]["text"], "Hello from mock key sk-leg...");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert!(body["usage"]["total_tokens"].as_u64().unwrap() > 0);

    let body = json!({"model": "m", "prompt": "x", "stream": true, "stream_options": {"include_usage": true}});
    let response = post(&mock, "/v1/completions", "sk-legacy", &body).await;
    let events = response.sse_data();
    assert_eq!(events.last().unwrap(), "[DONE]");
    let text: String = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter_map(|c| c["choices"][0]["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(text, "Hello from mock key sk-leg...");
}

#[tokio::test]
async fn other_endpoints_answer() {
    let mock = MockUpstream::start().await;

    let body = json!({"model": "text-embedding-3-small", "input": ["a", "b", "c"]});
    let response = post(&mock, "/v1/embeddings", "k", &body).await;
    assert_eq!(response.status, 200);
    let body = response.json();
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "text-embedding-3-small");
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    assert_eq!(data[2]["index"], 2);
    assert_eq!(data[2]["object"], "embedding");
    assert_eq!(data[0]["embedding"].as_array().unwrap().len(), 8);

    let body = json!({"model": "e", "input": "one", "encoding_format": "base64", "dimensions": 4});
    let body = post(&mock, "/v1/embeddings", "k", &body).await.json();
    assert_eq!(body["data"].as_array().unwrap().len(), 1);
    // 4 f32 values = 16 bytes = 24 base64 characters.
    assert_eq!(body["data"][0]["embedding"].as_str().unwrap().len(), 24);

    let body = json!({"model": "dall-e-3", "prompt": "a cat", "n": 2});
    let body = post(&mock, "/v1/images/generations", "k", &body)
        .await
        .json();
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    assert!(body["data"][0]["url"].is_string());
    let body = json!({"model": "dall-e-3", "prompt": "a cat", "response_format": "b64_json"});
    let body = post(&mock, "/v1/images/generations", "k", &body)
        .await
        .json();
    assert!(body["data"][0]["b64_json"].is_string());

    let body = json!({"model": "tts-1", "input": "hello", "voice": "alloy"});
    let response = post(&mock, "/v1/audio/speech", "k", &body).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("audio/mpeg"));
    assert_eq!(response.body.len(), 4096);
    assert!(response.body.starts_with(b"ID3"));

    let response = http_request(
        mock.addr(),
        "GET",
        "/v1/models",
        &[("authorization", "Bearer k")],
        b"",
    )
    .await;
    assert_eq!(response.status, 200);
    let body = response.json();
    assert_eq!(body["object"], "list");
    assert!(body["data"].as_array().unwrap().len() >= 3);
    assert_eq!(body["data"][0]["object"], "model");

    // Gemini's OpenAI-compatible prefix is served the same way.
    let response = post(
        &mock,
        "/v1beta/openai/chat/completions",
        "k",
        &chat_body(false),
    )
    .await;
    assert_eq!(response.status, 200);
}

#[tokio::test]
async fn unknown_paths_and_bad_json_get_openai_errors() {
    let mock = MockUpstream::start().await;
    let response = post(&mock, "/v1/nope", "k", &json!({})).await;
    assert_eq!(response.status, 404);
    assert_eq!(response.json()["error"]["type"], "invalid_request_error");

    let response = http_request(
        mock.addr(),
        "POST",
        CHAT,
        &[("authorization", "Bearer k")],
        b"this is not json",
    )
    .await;
    assert_eq!(response.status, 400);
    let error = &response.json()["error"];
    assert!(error["message"].is_string());
    assert_eq!(error["type"], "invalid_request_error");
}

#[tokio::test]
async fn missing_key_gets_401_and_keys_come_from_any_provider_header() {
    let mock = MockUpstream::start().await;
    let response = http_request(
        mock.addr(),
        "POST",
        CHAT,
        &[],
        chat_body(false).to_string().as_bytes(),
    )
    .await;
    assert_eq!(response.status, 401);
    let error = &response.json()["error"];
    assert_eq!(error["type"], "invalid_request_error");
    assert!(error["message"].is_string());
    assert!(error.get("code").is_some());

    let body = chat_body(false).to_string();
    for (headers, path, key) in [
        (vec![("x-goog-api-key", "gem")], CHAT.to_owned(), "gem"),
        (vec![("x-api-key", "ant")], CHAT.to_owned(), "ant"),
        (vec![], format!("{CHAT}?alt=sse&key=query"), "query"),
    ] {
        let response = http_request(mock.addr(), "POST", &path, &headers, body.as_bytes()).await;
        assert_eq!(response.status, 200, "{key}");
        assert_eq!(mock.calls(key), 1, "{key}");
    }
    assert_eq!(mock.total_calls(), 4);
}

#[tokio::test]
async fn status_429_with_retry_after() {
    let mock = MockUpstream::start().await;
    mock.script("limited", Behaviour::rate_limited("2"));
    let response = post(&mock, CHAT, "limited", &chat_body(true)).await;
    assert_eq!(response.status, 429);
    assert_eq!(response.header("retry-after"), Some("2"));
    let error = &response.json()["error"];
    assert_eq!(error["code"], "rate_limit_exceeded");
    assert!(error["message"].is_string());
    assert!(error["type"].is_string());

    mock.script(
        "custom",
        Behaviour::Status {
            status: 503,
            retry_after: None,
            body: Some("overloaded".to_owned()),
        },
    );
    let response = post(&mock, CHAT, "custom", &chat_body(false)).await;
    assert_eq!(response.status, 503);
    assert_eq!(response.header("retry-after"), None);
    assert_eq!(response.text(), "overloaded");

    for status in [400, 401, 404, 500] {
        mock.script("each", Behaviour::status(status));
        let response = post(&mock, CHAT, "each", &chat_body(false)).await;
        assert_eq!(response.status, status);
        assert!(response.json()["error"]["message"].is_string());
    }
    // Other keys are unaffected; scripting Ok restores the default.
    assert_eq!(
        post(&mock, CHAT, "other", &chat_body(false)).await.status,
        200
    );
    mock.script("limited", Behaviour::Ok);
    assert_eq!(
        post(&mock, CHAT, "limited", &chat_body(false)).await.status,
        200
    );
}

#[tokio::test]
async fn sequence_plays_in_order_and_repeats_the_last() {
    let mock = MockUpstream::start().await;
    mock.script(
        "seq",
        Behaviour::Sequence(vec![
            Behaviour::rate_limited("1"),
            Behaviour::status(500),
            Behaviour::Ok,
        ]),
    );
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(post(&mock, CHAT, "seq", &chat_body(false)).await.status);
    }
    assert_eq!(statuses, [429, 500, 200, 200, 200]);
    assert_eq!(mock.calls("seq"), 5);

    mock.script(
        "seq",
        Behaviour::Sequence(vec![Behaviour::Ok, Behaviour::status(401)]),
    );
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(post(&mock, CHAT, "seq", &chat_body(false)).await.status);
    }
    assert_eq!(statuses, [200, 401, 401]);
}

#[tokio::test]
async fn stream_cut_after_aborts_mid_body() {
    let mock = MockUpstream::start().await;
    mock.script("cut", Behaviour::StreamCutAfter(2));
    let response = post(&mock, CHAT, "cut", &chat_body(true)).await;
    assert_eq!(response.status, 200);
    assert!(!response.complete, "the body must not end cleanly");
    let events = response.sse_data();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(!events.iter().any(|e| e == "[DONE]"));
    for event in &events {
        let chunk: Value = serde_json::from_str(event).unwrap();
        assert_eq!(chunk["object"], "chat.completion.chunk");
    }

    // A non-streaming answer is cut too: fewer bytes than the announced length.
    let response = post(&mock, CHAT, "cut", &chat_body(false)).await;
    assert_eq!(response.status, 200);
    assert!(!response.complete);
    let announced: usize = response.header("content-length").unwrap().parse().unwrap();
    assert!(response.body.len() < announced);

    // The server is still healthy.
    assert_eq!(
        post(&mock, CHAT, "fine", &chat_body(true))
            .await
            .sse_data()
            .last()
            .unwrap(),
        "[DONE]"
    );
}

#[tokio::test]
async fn stall_before_headers_delays_the_answer() {
    let mock = MockUpstream::start().await;
    mock.script(
        "slow",
        Behaviour::StallBeforeHeaders(Duration::from_millis(300)),
    );
    let started = Instant::now();
    let response = post(&mock, CHAT, "slow", &chat_body(false)).await;
    let elapsed = started.elapsed();
    assert_eq!(response.status, 200);
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    // Counted on arrival, before the stall ends.
    mock.script(
        "slow2",
        Behaviour::StallBeforeHeaders(Duration::from_secs(2)),
    );
    let addr = mock.addr();
    let pending = tokio::spawn(async move {
        http_request(
            addr,
            "POST",
            CHAT,
            &[("authorization", "Bearer slow2")],
            b"{}",
        )
        .await
    });
    fulcrum_tests::eventually(
        "the stalled call to be counted",
        Duration::from_secs(1),
        || {
            let calls = mock.calls("slow2");
            async move { (calls == 1).then_some(()) }
        },
    )
    .await;
    pending.abort();
}

#[tokio::test]
async fn slow_stream_spaces_chunks() {
    let mock = MockUpstream::start().await;
    mock.script(
        "drip",
        Behaviour::SlowStream {
            chunks: 4,
            interval: Duration::from_millis(50),
        },
    );
    let started = Instant::now();
    let response = post(&mock, CHAT, "drip", &chat_body(true)).await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert!(response.complete);
    let events = response.sse_data();
    // Role chunk, 4 content chunks, finish chunk, [DONE].
    assert_eq!(events.len(), 7, "{events:?}");
    assert_eq!(events.last().unwrap(), "[DONE]");
}

#[tokio::test]
async fn counts_and_recording_per_key() {
    let mock = MockUpstream::start().await;
    for _ in 0..3 {
        post(&mock, CHAT, "sk-a", &chat_body(false)).await;
    }
    post(
        &mock,
        "/v1/embeddings",
        "sk-b",
        &json!({"model": "e", "input": "x"}),
    )
    .await;
    assert_eq!(mock.calls("sk-a"), 3);
    assert_eq!(mock.calls("sk-b"), 1);
    assert_eq!(mock.calls("sk-none"), 0);
    assert_eq!(mock.total_calls(), 4);

    let requests = mock.requests();
    assert_eq!(requests.len(), 4);
    let last = &requests[3];
    assert_eq!(last.key, "sk-b");
    assert_eq!(last.method, "POST");
    assert_eq!(last.path, "/v1/embeddings");
    assert_eq!(last.header("authorization"), Some("Bearer sk-b"));
    assert!(
        last.headers
            .iter()
            .all(|(n, _)| *n == n.to_ascii_lowercase())
    );
    assert_eq!(last.json()["input"], "x");

    mock.reset_counts();
    assert_eq!(mock.calls("sk-a"), 0);
    assert_eq!(mock.total_calls(), 0);
    post(&mock, CHAT, "sk-a", &chat_body(false)).await;
    assert_eq!(mock.calls("sk-a"), 1);

    let quiet = MockUpstream::start_with(MockOptions {
        record_requests: false,
        ..MockOptions::default()
    })
    .await;
    post(&quiet, CHAT, "sk-a", &chat_body(false)).await;
    assert_eq!(quiet.calls("sk-a"), 1);
    assert!(quiet.requests().is_empty());
}

#[tokio::test]
async fn shutdown_frees_the_port() {
    let mock = MockUpstream::start().await;
    let addr = mock.addr();
    let (status, _) = fulcrum_tests::http_get(addr, "/v1/models?key=k").await;
    assert_eq!(status, 200);
    mock.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn binary_serves_until_terminated() {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mock-upstream"))
        .args(["--listen", "127.0.0.1:0", "--threads", "2"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::BufReader::new(stdout).read_line(&mut line),
    )
    .await
    .unwrap()
    .unwrap();
    let addr: std::net::SocketAddr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .parse()
        .unwrap();
    let response = http_request(
        addr,
        "POST",
        CHAT,
        &[("authorization", "Bearer bench")],
        chat_body(false).to_string().as_bytes(),
    )
    .await;
    assert_eq!(response.status, 200);

    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}

fn weather_tool() -> Value {
    json!({"type": "function", "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string"},
                "days": {"type": "integer"},
                "metric": {"type": "boolean"},
            },
            "required": ["location", "days", "metric"],
        },
    }})
}

#[tokio::test]
async fn chat_calls_the_first_tool_then_echoes_results() {
    let mock = MockUpstream::start().await;
    let args = json!({"location": "mock", "days": 1, "metric": true});
    let body = json!({
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "weather in Paris?"}],
        "tools": [weather_tool(), {"type": "function", "function": {"name": "other"}}],
    });
    let response = post(&mock, CHAT, "sk-tools", &body).await.json();
    let choice = &response["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert!(choice["message"]["content"].is_null());
    let calls = choice["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["id"], "call_mock_1");
    assert_eq!(calls[0]["type"], "function");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    let arguments: Value =
        serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments, args);
    assert_eq!(response["usage"]["completion_tokens"], 1);

    let mut parallel = body.clone();
    parallel["messages"][0]["content"] = json!("both cities, in parallel");
    let response = post(&mock, CHAT, "sk-tools", &parallel).await.json();
    let calls = response["choices"][0]["message"]["tool_calls"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1]["id"], "call_mock_2");

    // Consecutive tool messages are one turn of results; their ids are echoed.
    let body = json!({
        "model": "gpt-4o",
        "tools": [weather_tool()],
        "messages": [
            {"role": "user", "content": "both cities, in parallel"},
            {"role": "assistant", "content": null, "tool_calls": calls},
            {"role": "tool", "tool_call_id": "call_mock_1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "call_mock_2",
             "content": [{"type": "text", "text": "rain"}]},
        ],
    });
    let response = post(&mock, CHAT, "sk-tools", &body).await.json();
    assert_eq!(response["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        response["choices"][0]["message"]["content"],
        "tool result: sunny | rain (ids: call_mock_1, call_mock_2)"
    );
}

#[tokio::test]
async fn chat_streams_tool_calls_in_two_argument_fragments() {
    let mock = MockUpstream::start().await;
    let body = json!({
        "model": "gpt-4o",
        "stream": true,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "weather in Paris?"}],
        "tools": [weather_tool()],
    });
    let response = post(&mock, CHAT, "sk-tools", &body).await;
    let events = response.sse_data();
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    // Role, head (id and name), two fragments, finish, usage.
    assert_eq!(chunks.len(), 6, "{chunks:?}");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let head = &chunks[1]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(head["index"], 0);
    assert_eq!(head["id"], "call_mock_1");
    assert_eq!(head["type"], "function");
    assert_eq!(head["function"]["name"], "get_weather");
    assert_eq!(head["function"]["arguments"], "");
    let fragments: Vec<&str> = chunks[2..4]
        .iter()
        .map(|c| {
            let call = &c["choices"][0]["delta"]["tool_calls"][0];
            assert_eq!(call["index"], 0);
            assert!(call.get("id").is_none());
            call["function"]["arguments"].as_str().unwrap()
        })
        .collect();
    assert!(fragments.iter().all(|f| !f.is_empty()));
    let arguments: Value = serde_json::from_str(&fragments.concat()).unwrap();
    assert_eq!(
        arguments,
        json!({"location": "mock", "days": 1, "metric": true})
    );
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(chunks[5]["usage"]["completion_tokens"], 1);
}

#[tokio::test]
async fn chat_echoes_images_system_and_reasoning() {
    let mock = MockUpstream::start().await;
    let body = json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You are a meticulous weather bot."},
            {"role": "user", "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "data:image/webp;base64,UklGR"}},
            ]},
        ],
    });
    let response = post(&mock, CHAT, "sk-img", &body).await.json();
    assert_eq!(
        response["choices"][0]["message"]["content"],
        "[system: You are a meticulous] saw 2 image(s): image/png,image/webp"
    );
    assert_eq!(response["usage"]["prompt_tokens"], 9);

    let body = json!({
        "model": "o3-mini",
        "reasoning_effort": "low",
        "messages": [{"role": "user", "content": "think first"}],
    });
    let response = post(&mock, CHAT, "sk-reason", &body).await.json();
    let message = &response["choices"][0]["message"];
    assert_eq!(message["reasoning_content"], "mock reasoning");
    assert_eq!(message["content"], "Hello from mock key sk-rea...");
    let usage = &response["usage"];
    assert_eq!(usage["completion_tokens"], 5 + 2);
    assert_eq!(usage["completion_tokens_details"]["reasoning_tokens"], 2);

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let events = post(&mock, CHAT, "sk-reason", &streamed).await.sse_data();
    let second: Value = serde_json::from_str(&events[1]).unwrap();
    assert_eq!(
        second["choices"][0]["delta"]["reasoning_content"],
        "mock reasoning"
    );

    let mut off = body.clone();
    off["reasoning_effort"] = json!("none");
    let response = post(&mock, CHAT, "sk-reason", &off).await.json();
    assert!(
        response["choices"][0]["message"]
            .get("reasoning_content")
            .is_none()
    );
}

#[tokio::test]
async fn recorded_requests_show_where_the_key_travelled() {
    let mock = MockUpstream::start().await;
    post(&mock, CHAT, "sk-header", &chat_body(false)).await;
    http_request(
        mock.addr(),
        "POST",
        &format!("{CHAT}?key=sk-url"),
        &[],
        chat_body(false).to_string().as_bytes(),
    )
    .await;
    let requests = mock.requests();
    assert_eq!(requests[0].key_source, Some(KeySource::Bearer));
    assert!(!requests[0].key_in_url());
    assert_eq!(requests[0].query(), None);
    assert_eq!(requests[1].key, "sk-url");
    assert_eq!(requests[1].key_source, Some(KeySource::Query));
    assert!(requests[1].key_in_url());
    assert_eq!(requests[1].path_only(), CHAT);
    assert_eq!(requests[1].query_param("key"), Some("sk-url"));
}
