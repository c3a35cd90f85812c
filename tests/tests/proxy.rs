//! The data plane serving OpenAI-compatible traffic from local key pools, against a
//! scriptable mock upstream: key spread, key health (local at once, then everywhere),
//! failover before the first byte, streaming, and errors in OpenAI's shape.
#![allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]

use std::time::{Duration, Instant};

use fulcrum_proto::model::{KeyState, key_id};
use fulcrum_proto::pb;
use fulcrum_tests::gateway::Gateway;
use fulcrum_tests::mock::{Behaviour, RawResponse, http_request};
use fulcrum_tests::{ControlPlaneHandle, eventually};

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}"#;
const CHAT_STREAM: &str =
    r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hello"}]}"#;

async fn gateway(keys: &[&str], planes: usize, settings: &[(&str, &str)]) -> Gateway {
    Gateway::start(keys, planes, settings).await
}

async fn chat(gw: &Gateway, plane: usize) -> RawResponse {
    gw.post(plane, "/v1/chat/completions", CHAT).await
}

fn assert_openai_error(response: &RawResponse, status: u16, code: &str) {
    assert_eq!(response.status, status, "{}", response.text());
    let body = response.json();
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn spreads_requests_over_every_key_round_robin() {
    let keys = [
        "sk-spread-a-0123456789",
        "sk-spread-b-0123456789",
        "sk-spread-c-0123456789",
    ];
    let gw = gateway(&keys, 1, &[]).await;
    for _ in 0..30 {
        let response = chat(&gw, 0).await;
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(response.json()["object"], "chat.completion");
    }
    for key in keys {
        assert_eq!(gw.upstream.calls(key), 10, "{key}");
    }
    // The client's own token never travels upstream; our key does.
    let request = gw.upstream.requests().pop().unwrap();
    assert!(
        request
            .header("authorization")
            .unwrap()
            .starts_with("Bearer sk-spread-")
    );
    assert!(!request.headers.iter().any(|(_, v)| v.contains(&gw.token)));
    gw.stop().await;
}

#[tokio::test]
async fn a_429_cools_the_key_here_at_once_and_everywhere_soon() {
    let (a, b) = ("sk-cool-a-0123456789", "sk-cool-b-0123456789");
    let gw = gateway(&[a, b], 2, &[]).await;
    gw.upstream.script(a, Behaviour::rate_limited("2"));
    // The first request starts at key a, gets its 429, and moves to b.
    let response = chat(&gw, 0).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!((gw.upstream.calls(a), gw.upstream.calls(b)), (1, 1));
    for _ in 0..6 {
        assert_eq!(chat(&gw, 0).await.status, 200);
    }
    assert_eq!(
        gw.upstream.calls(a),
        1,
        "a rests on the data plane that saw the 429"
    );
    // The control plane's decision reaches the other data plane, which never saw a 429.
    gw.wait_state(1, a, KeyState::Cooling, Duration::from_secs(1))
        .await;
    for _ in 0..6 {
        assert_eq!(chat(&gw, 1).await.status, 200);
    }
    assert_eq!(gw.upstream.calls(a), 1, "a rests on every data plane");
    // After Retry-After, the key comes back by itself: a 429 is not a failure.
    gw.upstream.script(a, Behaviour::Ok);
    gw.wait_state(1, a, KeyState::Active, Duration::from_secs(5))
        .await;
    for _ in 0..4 {
        assert_eq!(chat(&gw, 1).await.status, 200);
    }
    assert!(gw.upstream.calls(a) >= 2, "a is back in rotation");
    gw.stop().await;
}

#[tokio::test]
async fn a_refused_key_is_out_on_every_data_plane_within_a_second() {
    let (a, b) = ("sk-dead-a-0123456789", "sk-dead-b-0123456789");
    let gw = gateway(&[a, b], 2, &[]).await;
    gw.upstream.script(a, Behaviour::status(401));
    assert_eq!(chat(&gw, 0).await.status, 200, "moved to b");
    assert_eq!(gw.upstream.calls(a), 1);
    let found = Instant::now();
    gw.wait_state(1, a, KeyState::Invalid, Duration::from_secs(1))
        .await;
    println!(
        "key out on the other data plane after {:?}",
        found.elapsed()
    );
    for plane in [0, 1] {
        for _ in 0..6 {
            assert_eq!(chat(&gw, plane).await.status, 200);
        }
    }
    assert_eq!(
        gw.upstream.calls(a),
        1,
        "no data plane uses the dead key again"
    );
    // An operator re-enabling it puts it back everywhere, local reactions forgotten.
    gw.upstream.script(a, Behaviour::Ok);
    let mut admin = gw.control.admin().await;
    admin
        .enable_keys(pb::EnableKeysRequest {
            ids: vec![key_id("up", a)],
        })
        .await
        .unwrap();
    gw.wait_state(0, a, KeyState::Active, Duration::from_secs(2))
        .await;
    for _ in 0..4 {
        assert_eq!(chat(&gw, 0).await.status, 200);
    }
    assert!(gw.upstream.calls(a) >= 2);
    gw.stop().await;
}

#[tokio::test]
async fn consecutive_failures_take_a_key_out_and_a_success_resets_the_count() {
    let (a, b) = ("sk-fail-a-0123456789", "sk-fail-b-0123456789");
    let gw = gateway(&[a, b], 1, &[("max_failures", "2")]).await;
    // One failure, then a success: the count starts over.
    gw.upstream.script(
        a,
        Behaviour::Sequence(vec![Behaviour::status(500), Behaviour::Ok]),
    );
    for _ in 0..6 {
        assert_eq!(chat(&gw, 0).await.status, 200);
    }
    assert_eq!(gw.state_on(0, a), Some(KeyState::Active));
    gw.upstream.script(a, Behaviour::status(503));
    let before = gw.upstream.calls(a);
    for _ in 0..10 {
        assert_eq!(chat(&gw, 0).await.status, 200, "every request moves to b");
    }
    assert_eq!(
        gw.upstream.calls(a) - before,
        2,
        "out after max_failures = 2"
    );
    gw.wait_state(0, a, KeyState::Failing, Duration::from_secs(2))
        .await;
    gw.stop().await;
}

#[tokio::test]
async fn client_errors_come_back_as_they_came_and_are_never_retried() {
    let (a, b) = ("sk-client-a-0123456789", "sk-client-b-0123456789");
    let gw = gateway(&[a, b], 1, &[]).await;
    for status in [400u16, 404, 413, 422] {
        let body = format!(
            r#"{{"error":{{"message":"bad request {status} for key {a}","type":"invalid_request_error","code":"x"}}}}"#
        );
        for key in [a, b] {
            gw.upstream.script(
                key,
                Behaviour::Status {
                    status,
                    retry_after: None,
                    body: Some(body.replace(a, key)),
                },
            );
        }
        gw.upstream.reset_counts();
        let response = chat(&gw, 0).await;
        assert_eq!(response.status, status);
        let message = response.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            message.starts_with(&format!("bad request {status} for key sk-cli")),
            "{message}"
        );
        assert!(
            !message.contains(a) && !message.contains(b),
            "our key is masked: {message}"
        );
        assert_eq!(
            gw.upstream.calls(a) + gw.upstream.calls(b),
            1,
            "not retried"
        );
    }
    assert_eq!(gw.state_on(0, a), Some(KeyState::Active));
    assert_eq!(gw.state_on(0, b), Some(KeyState::Active));
    gw.stop().await;
}

#[tokio::test]
async fn retries_are_bounded_and_the_last_upstream_error_is_returned() {
    let keys = [
        "sk-bound-a-0123456789",
        "sk-bound-b-0123456789",
        "sk-bound-c-0123456789",
    ];
    let gw = gateway(&keys, 1, &[("max_retries", "1"), ("max_failures", "100")]).await;
    for key in keys {
        gw.upstream.script(key, Behaviour::status(500));
    }
    let response = chat(&gw, 0).await;
    assert_eq!(response.status, 500, "{}", response.text());
    assert_eq!(gw.upstream.total_calls(), 2, "one try and one retry");
    gw.stop().await;
}

#[tokio::test]
async fn a_first_byte_timeout_moves_the_request_to_another_key() {
    let (a, b) = ("sk-stall-a-0123456789", "sk-stall-b-0123456789");
    let gw = gateway(&[a, b], 1, &[("first_byte_timeout_ms", "300")]).await;
    gw.upstream
        .script(a, Behaviour::StallBeforeHeaders(Duration::from_secs(3)));
    let started = Instant::now();
    let response = chat(&gw, 0).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!((gw.upstream.calls(a), gw.upstream.calls(b)), (1, 1));
    gw.stop().await;
}

#[tokio::test]
async fn streams_pass_through_and_a_cut_stream_ends_with_an_error_event() {
    let (a, b) = ("sk-sse-a-0123456789", "sk-sse-b-0123456789");
    let gw = gateway(&[a, b], 1, &[]).await;
    let response = gw.post(0, "/v1/chat/completions", CHAT_STREAM).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
    let events = response.sse_data();
    assert!(events.len() > 3, "{events:?}");
    assert_eq!(events.last().unwrap(), "[DONE]");

    // Both keys cut the stream after 3 events: the first byte went out, so no failover
    // and no replay; the client gets the 3 events and then an error event, not a silent end.
    for key in [a, b] {
        gw.upstream.script(key, Behaviour::StreamCutAfter(3));
    }
    gw.upstream.reset_counts();
    let response = gw.post(0, "/v1/chat/completions", CHAT_STREAM).await;
    assert_eq!(response.status, 200);
    let events = response.sse_data();
    assert_eq!(events.len(), 4, "{events:?}");
    let last: serde_json::Value = serde_json::from_str(&events[3]).unwrap();
    assert_eq!(last["error"]["code"], "stream_interrupted", "{last}");
    assert!(!events.iter().any(|e| e == "[DONE]"));
    assert_eq!(
        gw.upstream.total_calls(),
        1,
        "no retry after the first byte"
    );
    gw.stop().await;
}

#[tokio::test]
async fn streams_arrive_as_the_upstream_sends_them() {
    let key = "sk-slow-0123456789";
    let gw = gateway(&[key], 1, &[]).await;
    gw.upstream.script(
        key,
        Behaviour::SlowStream {
            chunks: 4,
            interval: Duration::from_millis(300),
        },
    );
    // Read the raw socket: the first event must arrive long before the stream ends.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(gw.planes[0].addr)
        .await
        .unwrap();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nConnection: close\r\n\r\n{CHAT_STREAM}",
        gw.token,
        CHAT_STREAM.len()
    );
    let started = Instant::now();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut seen = String::new();
    while !seen.contains("data: ") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0);
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let first_event = started.elapsed();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();
    let total = started.elapsed();
    assert!(
        first_event < Duration::from_millis(500),
        "first event after {first_event:?}"
    );
    assert!(
        total >= Duration::from_millis(1_000),
        "whole stream took {total:?}"
    );
    assert!(String::from_utf8_lossy(&rest).contains("[DONE]"));
    gw.stop().await;
}

#[tokio::test]
async fn when_every_key_cools_the_client_gets_429_with_retry_after_or_waits_within_budget() {
    let key = "sk-only-0123456789";
    let gw = gateway(&[key], 1, &[]).await;
    gw.upstream.script(key, Behaviour::rate_limited("30"));
    let response = chat(&gw, 0).await;
    assert_openai_error(&response, 429, "all_keys_rate_limited");
    let retry_after: u64 = response.header("retry-after").unwrap().parse().unwrap();
    assert!((28..=30).contains(&retry_after), "{retry_after}");
    let response = chat(&gw, 0).await;
    assert_eq!(response.status, 429);
    assert_eq!(
        gw.upstream.calls(key),
        1,
        "no tight retry loop against the upstream"
    );
    gw.stop().await;

    // With a wait budget, a request waits for the key to come back.
    let gw = gateway(&[key], 1, &[("wait_budget_ms", "3000")]).await;
    gw.upstream.script(
        key,
        Behaviour::Sequence(vec![Behaviour::rate_limited("1"), Behaviour::Ok]),
    );
    let started = Instant::now();
    let response = chat(&gw, 0).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(gw.upstream.calls(key), 2);
    gw.stop().await;
}

#[tokio::test]
async fn fails_over_to_the_next_provider_that_serves_the_model() {
    let gw = gateway(&["sk-first-0123456789"], 1, &[]).await;
    gw.upstream
        .script("sk-first-0123456789", Behaviour::status(401));
    let mut admin = gw.control.admin().await;
    admin
        .create_provider(pb::CreateProviderRequest {
            name: "backup".into(),
            r#type: pb::ProviderType::Openai as i32,
            base_url: gw.upstream.openai_base_url(),
            priority: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    let added = admin
        .add_keys(pb::AddKeysRequest {
            validate: false,
            provider: "backup".into(),
            keys: vec!["sk-backup-0123456789".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    gw.planes[0].wait_for_revision(added.revision).await;
    let response = chat(&gw, 0).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(gw.upstream.calls("sk-backup-0123456789"), 1);
    // A pinned provider is never left.
    let response = gw.post(0, "/up/v1/chat/completions", CHAT).await;
    assert_eq!(response.status, 503, "{}", response.text());
    gw.stop().await;
}

#[tokio::test]
async fn bad_requests_get_openai_shaped_errors() {
    let gw = gateway(
        &["sk-checks-0123456789"],
        1,
        &[("max_request_body_bytes", "2048")],
    )
    .await;
    let addr = gw.planes[0].addr;
    let auth = format!("Bearer {}", gw.token);
    let no_token = http_request(addr, "POST", "/v1/chat/completions", &[], CHAT.as_bytes()).await;
    assert_openai_error(&no_token, 401, "invalid_api_key");
    let wrong = http_request(
        addr,
        "POST",
        "/v1/chat/completions",
        &[("authorization", "Bearer nope")],
        CHAT.as_bytes(),
    )
    .await;
    assert_openai_error(&wrong, 401, "invalid_api_key");
    assert_openai_error(
        &gw.post(0, "/v1/chat/completions", "{not json").await,
        400,
        "invalid_json",
    );
    assert_openai_error(
        &gw.post(0, "/v1/chat/completions", r#"{"messages":[]}"#)
            .await,
        400,
        "missing_model",
    );
    let big = format!(r#"{{"model":"m","pad":"{}"}}"#, "x".repeat(4096));
    assert_openai_error(
        &gw.post(0, "/v1/chat/completions", &big).await,
        413,
        "request_too_large",
    );
    assert_openai_error(&gw.post(0, "/v1/nothing", CHAT).await, 404, "unknown_url");
    assert_openai_error(
        &gw.post(0, "/ghost/v1/chat/completions", CHAT).await,
        404,
        "model_not_found",
    );
    let get = http_request(
        addr,
        "GET",
        "/v1/chat/completions",
        &[("authorization", &auth)],
        b"",
    )
    .await;
    assert_openai_error(&get, 405, "method_not_allowed");
    assert_eq!(
        gw.upstream.total_calls(),
        0,
        "none of these reached the upstream"
    );
    gw.stop().await;
}

#[tokio::test]
async fn every_endpoint_prefix_and_token_form_works() {
    let key = "sk-surface-0123456789";
    let gw = gateway(&[key], 1, &[]).await;
    let addr = gw.planes[0].addr;
    for prefix in ["/v1", "/openai/v1", "/hf/v1", "/up/v1"] {
        let response = gw
            .post(0, &format!("{prefix}/chat/completions"), CHAT)
            .await;
        assert_eq!(response.status, 200, "{prefix}: {}", response.text());
    }
    let completion = gw
        .post(
            0,
            "/v1/completions",
            r#"{"model":"gpt-3.5-turbo-instruct","prompt":"hi"}"#,
        )
        .await;
    assert_eq!(completion.json()["object"], "text_completion");
    let embeddings = gw
        .post(
            0,
            "/v1/embeddings",
            r#"{"model":"text-embedding-3-small","input":["a","b"]}"#,
        )
        .await;
    assert_eq!(embeddings.json()["data"].as_array().unwrap().len(), 2);
    let images = gw
        .post(
            0,
            "/v1/images/generations",
            r#"{"model":"dall-e-3","prompt":"a cat"}"#,
        )
        .await;
    assert_eq!(images.status, 200, "{}", images.text());
    assert!(
        images.json()["data"]
            .as_array()
            .is_some_and(|d| !d.is_empty())
    );
    let speech = gw
        .post(
            0,
            "/v1/audio/speech",
            r#"{"model":"tts-1","input":"hi","voice":"alloy"}"#,
        )
        .await;
    assert_eq!(speech.status, 200);
    assert_eq!(speech.header("content-type"), Some("audio/mpeg"));
    assert_eq!(speech.body.len(), 4096);
    assert!(
        speech.body.starts_with(b"ID3"),
        "binary body passed through untouched"
    );
    let auth = format!("Bearer {}", gw.token);
    let models = http_request(addr, "GET", "/v1/models", &[("authorization", &auth)], b"").await;
    assert!(
        models.json()["data"]
            .as_array()
            .is_some_and(|d| !d.is_empty()),
        "{}",
        models.text()
    );
    for header in ["x-api-key", "x-goog-api-key"] {
        let response = http_request(
            addr,
            "POST",
            "/v1/chat/completions",
            &[(header, &gw.token)],
            CHAT.as_bytes(),
        )
        .await;
        assert_eq!(response.status, 200, "{header}");
    }
    let query = http_request(
        addr,
        "POST",
        &format!("/v1/chat/completions?key={}", gw.token),
        &[],
        CHAT.as_bytes(),
    )
    .await;
    assert_eq!(query.status, 200);
    gw.stop().await;
}

#[tokio::test]
async fn keeps_serving_while_the_control_plane_is_away_and_resumes_after() {
    let key = "sk-away-0123456789";
    let gw = gateway(&[key], 1, &[]).await;
    let Gateway {
        dir,
        control,
        upstream,
        planes,
        token,
    } = gw;
    let grpc = control.grpc_addr;
    control.stop().await;
    let gw = Gateway {
        control: ControlPlaneHandle::start_with(dir.path(), 10_000, grpc).await,
        dir,
        upstream,
        planes,
        token,
    };
    // (While it restarted, and after.) Requests never needed it.
    assert_eq!(chat(&gw, 0).await.status, 200);
    let mut admin = gw.control.admin().await;
    let created = admin
        .create_client_token(pb::CreateClientTokenRequest {
            name: "later".into(),
        })
        .await
        .unwrap()
        .into_inner();
    gw.planes[0].wait_for_revision(created.revision).await;
    let stats = gw.planes[0].runtime().stats();
    assert_eq!(stats.snapshots_applied, 1, "resumed with deltas: {stats:?}");
    gw.stop().await;
}

#[tokio::test]
async fn shutdown_lets_a_stream_in_flight_finish() {
    let key = "sk-drain-0123456789";
    let gw = gateway(&[key], 1, &[]).await;
    gw.upstream.script(
        key,
        Behaviour::SlowStream {
            chunks: 5,
            interval: Duration::from_millis(200),
        },
    );
    let addr = gw.planes[0].addr;
    let auth = format!("Bearer {}", gw.token);
    let in_flight = tokio::spawn(async move {
        http_request(
            addr,
            "POST",
            "/v1/chat/completions",
            &[("authorization", &auth)],
            CHAT_STREAM.as_bytes(),
        )
        .await
    });
    eventually(
        "the stream reached the upstream",
        Duration::from_secs(5),
        || async { (gw.upstream.calls(key) == 1).then_some(()) },
    )
    .await;
    let Gateway {
        planes, control, ..
    } = gw;
    for plane in planes {
        plane.stop().await;
    }
    let response = in_flight.await.unwrap();
    assert_eq!(response.status, 200);
    assert!(response.complete);
    assert_eq!(
        response.sse_data().last().map(String::as_str),
        Some("[DONE]")
    );
    control.stop().await;
}
