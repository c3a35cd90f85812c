//! Every client protocol against every provider type through one data plane, over plain
//! HTTP: what the upstream receives (its own protocol, the key in a header, never in the
//! URL) and what the client gets back (its own protocol, streaming included), Gemini's
//! model suffixes and settings, errors re-shaped, local token counts, listings, routes
//! with strategies, and failover across provider types.
#![allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]

use std::collections::BTreeMap;

use fulcrum_proto::pb;
use fulcrum_tests::fleet::{Fleet, PROVIDERS, route};
use fulcrum_tests::mock::Behaviour;
use serde_json::{Value, json};

fn openai_chat(model: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "stream": stream,
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say hello."}
        ]
    })
}

fn gemini_chat() -> Value {
    json!({
        "systemInstruction": {"parts": [{"text": "You are terse."}]},
        "contents": [{"role": "user", "parts": [{"text": "Say hello."}]}]
    })
}

fn anthropic_chat(model: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "max_tokens": 256,
        "stream": stream,
        "system": "You are terse.",
        "messages": [{"role": "user", "content": "Say hello."}]
    })
}

/// The text of an answer in the client's protocol.
fn answer_text(protocol: &str, body: &Value) -> String {
    match protocol {
        "openai" => body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        "gemini" => body["candidates"][0]["content"]["parts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["thought"] != true)
            .filter_map(|p| p["text"].as_str())
            .collect(),
        _ => body["content"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|b| b["type"] == "text")
            .filter_map(|b| b["text"].as_str())
            .collect(),
    }
}

/// The text streamed to a client, from its SSE events.
fn streamed_text(protocol: &str, events: &[fulcrum_tests::mock::SseEvent]) -> String {
    let mut text = String::new();
    for event in events {
        if event.data == "[DONE]" {
            continue;
        }
        let v = event.json();
        match protocol {
            "openai" => text.push_str(
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .unwrap_or_default(),
            ),
            "gemini" => text.push_str(&answer_text("gemini", &v)),
            _ => {
                if v["type"] == "content_block_delta" && v["delta"]["type"] == "text_delta" {
                    text.push_str(v["delta"]["text"].as_str().unwrap_or_default());
                }
            }
        }
    }
    text
}

async fn ask(
    fleet: &Fleet,
    protocol: &str,
    model: &str,
    stream: bool,
) -> fulcrum_tests::mock::RawResponse {
    match protocol {
        "openai" => {
            fleet
                .post("/v1/chat/completions", &openai_chat(model, stream))
                .await
        }
        "gemini" => {
            let path = if stream {
                format!("/v1beta/models/{model}:streamGenerateContent?alt=sse")
            } else {
                format!("/v1beta/models/{model}:generateContent")
            };
            fleet.post(&path, &gemini_chat()).await
        }
        _ => {
            fleet
                .post("/v1/messages", &anthropic_chat(model, stream))
                .await
        }
    }
}

#[tokio::test]
async fn every_protocol_reaches_every_provider_type_and_back() {
    let fleet = Fleet::start().await;
    for client in ["openai", "gemini", "anthropic"] {
        for provider in &PROVIDERS {
            for stream in [false, true] {
                fleet.upstream.clear_requests();
                let model = format!("via-{}", provider.name);
                let response = ask(&fleet, client, &model, stream).await;
                let what = format!(
                    "{client} client -> {} ({}) stream={stream}",
                    provider.name, provider.model
                );
                assert_eq!(response.status, 200, "{what}: {}", response.text());
                let text = if stream {
                    assert!(
                        response
                            .header("content-type")
                            .unwrap()
                            .starts_with("text/event-stream"),
                        "{what}"
                    );
                    let events = response.sse_events();
                    match client {
                        "openai" => assert_eq!(events.last().unwrap().data, "[DONE]", "{what}"),
                        "anthropic" => {
                            let names: Vec<&str> =
                                events.iter().filter_map(|e| e.event.as_deref()).collect();
                            assert_eq!(names.first(), Some(&"message_start"), "{what}: {names:?}");
                            assert_eq!(names.last(), Some(&"message_stop"), "{what}: {names:?}");
                        }
                        _ => assert!(
                            events
                                .iter()
                                .any(|e| e.json()["candidates"][0]["finishReason"].is_string()),
                            "{what}"
                        ),
                    }
                    streamed_text(client, &events)
                } else {
                    answer_text(client, &response.json())
                };
                // The mock echoes the system prompt and signs with the key's prefix.
                assert!(
                    text.starts_with("[system: You are terse.]"),
                    "{what}: {text:?}"
                );
                assert!(text.contains("Hello"), "{what}: {text:?}");
                let requests = fleet.upstream.requests();
                assert_eq!(requests.len(), 1, "{what}");
                let seen = &requests[0];
                assert!(
                    provider.keys.contains(&seen.key.as_str()),
                    "{what}: key {}",
                    seen.key
                );
                assert!(
                    !seen.key_in_url(),
                    "{what}: the key travelled in the URL {}",
                    seen.path
                );
                let path = seen.path_only();
                match provider.provider_type {
                    pb::ProviderType::Openai => {
                        assert_eq!(path, "/v1/chat/completions", "{what}");
                        assert_eq!(seen.json()["model"], provider.model, "{what}");
                    }
                    pb::ProviderType::Gemini => {
                        let method = if stream {
                            "streamGenerateContent"
                        } else {
                            "generateContent"
                        };
                        assert_eq!(
                            path,
                            format!("/v1beta/models/{}:{method}", provider.model),
                            "{what}"
                        );
                        assert_eq!(
                            seen.header("x-goog-api-key"),
                            Some(seen.key.as_str()),
                            "{what}"
                        );
                    }
                    pb::ProviderType::VertexExpress => {
                        let method = if stream {
                            "streamGenerateContent"
                        } else {
                            "generateContent"
                        };
                        assert_eq!(
                            path,
                            format!("/v1/publishers/google/models/{}:{method}", provider.model),
                            "{what}"
                        );
                    }
                    _ => {
                        assert_eq!(path, "/v1/messages", "{what}");
                        assert_eq!(seen.json()["model"], provider.model, "{what}");
                        assert!(seen.header("anthropic-version").is_some(), "{what}");
                    }
                }
            }
        }
    }
    fleet.stop().await;
}

#[tokio::test]
async fn gemini_suffixes_settings_and_keys_in_headers() {
    let fleet = Fleet::start().await;
    let mut admin = fleet.control.admin().await;
    admin
        .set_setting(pb::SetSettingRequest {
            name: "gemini_thinking_budgets".into(),
            value: r#"{"gemini-2.5-flash": 512}"#.into(),
        })
        .await
        .unwrap();
    admin
        .put_route(pb::PutRouteRequest {
            route: Some(route(
                "gemini-*",
                &[("gm", "")],
                pb::RouteStrategy::Priority,
            )),
        })
        .await
        .unwrap();
    fleet.sync().await;

    fleet.upstream.clear_requests();
    let response = fleet
        .post(
            "/v1beta/models/gemini-2.5-flash-search:generateContent",
            &gemini_chat(),
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let sent = fleet.upstream.requests().pop().unwrap();
    assert_eq!(
        sent.path_only(),
        "/v1beta/models/gemini-2.5-flash:generateContent"
    );
    let body = sent.json();
    assert!(
        body["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t.get("googleSearch").is_some()),
        "{body}"
    );
    assert_eq!(
        body["generationConfig"]["thinkingConfig"]["thinkingBudget"], 512,
        "{body}"
    );
    let safety = body["safetySettings"].as_array().unwrap();
    assert!(
        safety.iter().all(|s| s["threshold"] == "OFF") && safety.len() >= 4,
        "{body}"
    );

    fleet.upstream.clear_requests();
    let response = fleet
        .post(
            "/v1beta/models/gemini-2.5-flash-non-thinking:generateContent",
            &gemini_chat(),
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let body = fleet.upstream.requests().pop().unwrap().json();
    assert_eq!(
        body["generationConfig"]["thinkingConfig"]["thinkingBudget"], 0,
        "{body}"
    );

    // A client that puts its token in `?key=` still gets its key sent in a header.
    fleet.upstream.clear_requests();
    let response = fulcrum_tests::mock::http_request(
        fleet.addr(),
        "POST",
        &format!(
            "/gemini/v1beta/models/gemini-2.5-flash:generateContent?key={}",
            fleet.token
        ),
        &[("content-type", "application/json")],
        gemini_chat().to_string().as_bytes(),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let sent = fleet.upstream.requests().pop().unwrap();
    assert!(!sent.key_in_url(), "{}", sent.path);
    fleet.stop().await;
}

#[tokio::test]
async fn upstream_errors_come_back_in_the_clients_shape() {
    let fleet = Fleet::start().await;
    for key in PROVIDERS.iter().flat_map(|p| p.keys) {
        fleet.upstream.script(key, Behaviour::status(400));
    }
    // A Gemini provider's 400 for an OpenAI client, an Anthropic provider's for a Gemini
    // client, an OpenAI provider's for an Anthropic client: status kept, shape changed.
    let r = ask(&fleet, "openai", "via-gm", false).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let body = r.json();
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");

    let r = ask(&fleet, "gemini", "via-an", false).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let body = r.json();
    assert_eq!(
        (
            body["error"]["code"].as_u64(),
            body["error"]["status"].as_str()
        ),
        (Some(400), Some("INVALID_ARGUMENT")),
        "{body}"
    );

    let r = ask(&fleet, "anthropic", "via-oa", false).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let body = r.json();
    assert_eq!(
        (body["type"].as_str(), body["error"]["type"].as_str()),
        (Some("error"), Some("invalid_request_error")),
        "{body}"
    );

    // A client's own error is never retried on another key.
    assert_eq!(
        fleet.upstream.calls("sk-ant-key-0001") + fleet.upstream.calls("sk-ant-key-0002"),
        1
    );

    // The data plane's own errors take the client's shape too.
    let r = fleet
        .post("/v1/messages", &json!({"max_tokens": 5, "messages": []}))
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["type"], "error");
    let r = fulcrum_tests::mock::http_request(
        fleet.addr(),
        "POST",
        "/v1beta/models/x:generateContent",
        &[("x-goog-api-key", "wrong")],
        b"{}",
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.json()["error"]["status"],
        "UNAUTHENTICATED",
        "{}",
        r.text()
    );
    fleet.stop().await;
}

#[tokio::test]
async fn token_counts_are_the_providers_or_estimated_and_said_so() {
    let fleet = Fleet::start().await;
    let count =
        json!({"model": "via-gm", "messages": [{"role": "user", "content": "one two three four"}]});
    // Anthropic client, Gemini provider: Gemini's countTokens answers.
    let r = fleet.post("/v1/messages/count_tokens", &count).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.json()["input_tokens"].as_u64().is_some_and(|n| n > 0),
        "{}",
        r.text()
    );
    assert_eq!(r.header("x-fulcrum-token-count"), None);
    assert!(
        fleet
            .upstream
            .requests()
            .iter()
            .any(|q| q.path_only().ends_with(":countTokens"))
    );
    // OpenAI has no count endpoint: the data plane estimates, and says so.
    let count =
        json!({"model": "via-oa", "messages": [{"role": "user", "content": "one two three four"}]});
    let r = fleet.post("/v1/messages/count_tokens", &count).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-fulcrum-token-count"), Some("estimated"));
    assert!(
        r.json()["input_tokens"].as_u64().is_some_and(|n| n > 0),
        "{}",
        r.text()
    );
    fleet.stop().await;
}

#[tokio::test]
async fn listings_take_each_protocols_shape_and_hide_what_the_operator_hides() {
    let fleet = Fleet::start().await;
    let mut admin = fleet.control.admin().await;
    admin
        .set_setting(pb::SetSettingRequest {
            name: "hidden_models".into(),
            value: "via-vx,*embedding*".into(),
        })
        .await
        .unwrap();
    fleet.sync().await;
    let openai = fleet.get("/v1/models", &[]).await;
    assert_eq!(openai.status, 200, "{}", openai.text());
    let ids: Vec<String> = openai.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    for want in ["via-oa", "via-gm", "via-an", "gpt-4o-mini"] {
        assert!(ids.iter().any(|id| id == want), "{want} in {ids:?}");
    }
    assert!(
        !ids.iter()
            .any(|id| id == "via-vx" || id.contains("embedding")),
        "{ids:?}"
    );

    let gemini = fulcrum_tests::mock::http_request(
        fleet.addr(),
        "GET",
        "/v1beta/models",
        &[("x-goog-api-key", &fleet.token)],
        b"",
    )
    .await;
    assert_eq!(gemini.status, 200, "{}", gemini.text());
    let names: Vec<String> = gemini.json()["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect();
    assert!(names.iter().any(|n| n == "models/via-gm"), "{names:?}");

    let anthropic = fleet
        .get("/v1/models", &[("anthropic-version", "2023-06-01")])
        .await;
    assert_eq!(anthropic.status, 200, "{}", anthropic.text());
    let body = anthropic.json();
    assert!(
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "via-an" && m["type"] == "model"),
        "{body}"
    );
    // One model, in each protocol's shape, answered whatever the provider speaks.
    let one = fulcrum_tests::mock::http_request(
        fleet.addr(),
        "GET",
        "/v1beta/models/via-an",
        &[("x-goog-api-key", &fleet.token)],
        b"",
    )
    .await;
    assert_eq!(one.status, 200, "{}", one.text());
    assert_eq!(one.json()["name"], "models/via-an", "{}", one.text());
    let one = fleet
        .get("/v1/models/via-gm", &[("anthropic-version", "2023-06-01")])
        .await;
    assert_eq!(
        (one.status, one.json()["id"].as_str()),
        (200, Some("via-gm")),
        "{}",
        one.text()
    );
    let one = fleet.get("/v1/models/via-vx", &[]).await;
    assert_eq!(one.status, 404, "hidden: {}", one.text());
    // A model no route names is the upstream's to describe (the mock knows every name).
    let one = fleet.get("/v1/models/some-upstream-model", &[]).await;
    assert_eq!(
        (one.status, one.json()["owned_by"].as_str()),
        (200, Some("mock")),
        "{}",
        one.text()
    );
    fleet.stop().await;
}

#[tokio::test]
async fn failover_crosses_provider_types_before_the_first_byte() {
    let fleet = Fleet::start().await;
    let mut admin = fleet.control.admin().await;
    admin
        .put_route(pb::PutRouteRequest {
            route: Some(route(
                "chain",
                &[("gm", "gemini-2.5-flash"), ("an", "claude-sonnet-4-5")],
                pb::RouteStrategy::Priority,
            )),
        })
        .await
        .unwrap();
    fleet.sync().await;
    for key in PROVIDERS[1].keys {
        fleet.upstream.script(key, Behaviour::status(503));
    }
    for stream in [false, true] {
        let r = ask(&fleet, "openai", "chain", stream).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let text = if stream {
            streamed_text("openai", &r.sse_events())
        } else {
            answer_text("openai", &r.json())
        };
        assert!(text.contains("Hello"), "{text}");
    }
    assert!(fleet.upstream.calls("sk-ant-key-0001") + fleet.upstream.calls("sk-ant-key-0002") >= 2);
    fleet.stop().await;
}

#[tokio::test]
async fn route_strategies_spread_and_stick() {
    let fleet = Fleet::start().await;
    let mut admin = fleet.control.admin().await;
    admin
        .put_route(pb::PutRouteRequest {
            route: Some(route(
                "spread",
                &[("oa", "gpt-4o-mini"), ("an", "claude-sonnet-4-5")],
                pb::RouteStrategy::RoundRobin,
            )),
        })
        .await
        .unwrap();
    let mut sticky = route(
        "stuck",
        &[("oa", "gpt-4o-mini"), ("an", "claude-sonnet-4-5")],
        pb::RouteStrategy::Random,
    );
    sticky.sticky_secs = 600;
    admin
        .put_route(pb::PutRouteRequest {
            route: Some(sticky),
        })
        .await
        .unwrap();
    fleet.sync().await;

    let served_by = |fleet: &Fleet| -> BTreeMap<&'static str, usize> {
        PROVIDERS
            .iter()
            .map(|p| (p.name, p.keys.iter().map(|k| fleet.upstream.calls(k)).sum()))
            .collect()
    };
    for _ in 0..10 {
        let r = ask(&fleet, "openai", "spread", false).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let spread = served_by(&fleet);
    assert_eq!(
        (spread["oa"], spread["an"]),
        (5, 5),
        "round robin alternates: {spread:?}"
    );

    fleet.upstream.reset_counts();
    for _ in 0..10 {
        let r = ask(&fleet, "openai", "stuck", false).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let stuck = served_by(&fleet);
    assert!(
        stuck["oa"] == 10 || stuck["an"] == 10,
        "a sticky route keeps one client on one candidate: {stuck:?}"
    );
    fleet.stop().await;
}

#[tokio::test]
async fn embeddings_stay_within_their_protocol() {
    let fleet = Fleet::start().await;
    let r = fleet
        .post(
            "/v1beta/models/via-gm:embedContent",
            &json!({"content": {"parts": [{"text": "embed me"}]}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["embedding"]["values"].is_array(), "{}", r.text());
    let sent = fleet.upstream.requests().pop().unwrap();
    assert_eq!(
        sent.path_only(),
        "/v1beta/models/gemini-2.5-flash:embedContent"
    );
    // An OpenAI client cannot embed through a Gemini-only route: a clear 404, no upstream call.
    let calls = fleet.upstream.total_calls();
    let r = fleet
        .post(
            "/v1/embeddings",
            &json!({"model": "via-gm", "input": "embed me"}),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("embed"),
        "{}",
        r.text()
    );
    assert_eq!(fleet.upstream.total_calls(), calls);
    fleet.stop().await;
}
