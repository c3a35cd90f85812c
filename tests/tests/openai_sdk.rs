//! The official `openai` Python SDK against a data plane: plain and streamed chat
//! completions forwarded to an OpenAI-compatible upstream with the provider's key, an
//! `openai.AuthenticationError` (401) for an unknown client token, and the pinned-provider
//! prefix (`/{provider}/v1`) with `client.models.list()`.
#![allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]

use std::collections::BTreeSet;
use std::path::PathBuf;

use fulcrum_proto::pb;
use fulcrum_tests::gateway::Gateway;
use fulcrum_tests::mock::MOCK_MODELS;
use fulcrum_tests::sdk::{python_with, run_script};
use serde_json::Value;

const UPSTREAM_KEY: &str = "sk-upstream-a-0123456789";
const SCRIPT: &str = "openai_client.py";

struct Env {
    python: PathBuf,
    gw: Gateway,
}

impl Env {
    /// The gateway with provider `up` (type `openai`) holding [`UPSTREAM_KEY`], plus
    /// provider `local` (type `mock`) when `with_local`, and one data plane.
    async fn start(with_local: bool) -> Self {
        // Before any server starts: it blocks while a first run installs the SDK.
        let python = python_with(&["openai"]);
        let gw = Gateway::start(&[UPSTREAM_KEY], 1, &[]).await;
        if with_local {
            gw.control
                .admin()
                .await
                .create_provider(pb::CreateProviderRequest {
                    name: "local".into(),
                    r#type: pb::ProviderType::Mock as i32,
                    ..Default::default()
                })
                .await
                .unwrap();
            gw.sync().await;
        }
        Self { python, gw }
    }

    fn base_url(&self, prefix: &str) -> String {
        format!("http://{}{prefix}/v1", self.gw.planes[0].addr)
    }

    async fn sdk(&self, prefix: &str, token: &str, mode: &str, model: &str) -> Value {
        let out = run_script(
            &self.python,
            SCRIPT,
            &[&self.base_url(prefix), token, mode, model],
        )
        .await;
        assert!(
            out["sdk_version"].as_str().is_some_and(|v| !v.is_empty()),
            "{out}"
        );
        out
    }

    async fn stop(self) {
        self.gw.stop().await;
    }
}

fn no_error(out: &Value) {
    assert!(out.get("error").is_none(), "the SDK raised: {out}");
}

fn ids(out: &Value) -> BTreeSet<String> {
    out["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn openai_sdk_chat_stream_and_bad_token() {
    let env = Env::start(false).await;

    let chat = env.sdk("", &env.gw.token, "chat", "gpt-4o-mini").await;
    no_error(&chat);
    let content = chat["content"].as_str().unwrap();
    assert!(!content.is_empty(), "{chat}");
    assert_eq!(chat["object"], "chat.completion", "{chat}");
    assert_eq!(chat["role"], "assistant", "{chat}");
    assert_eq!(chat["finish_reason"], "stop", "{chat}");
    assert!(
        chat["usage"]["total_tokens"].as_u64().unwrap() > 0,
        "{chat}"
    );
    assert_eq!(
        env.gw.upstream.calls(UPSTREAM_KEY),
        1,
        "one upstream call, made with the provider's key"
    );
    let forwarded = env.gw.upstream.requests();
    assert_eq!(forwarded.len(), 1);
    assert_eq!(forwarded[0].json()["model"], "gpt-4o-mini");
    assert!(
        forwarded[0]
            .header("authorization")
            .is_some_and(|v| !v.contains(&env.gw.token)),
        "the client token must not reach the upstream"
    );

    let stream = env.sdk("", &env.gw.token, "stream", "gpt-4o-mini").await;
    no_error(&stream);
    assert!(stream["chunks"].as_u64().unwrap() > 1, "{stream}");
    assert!(stream["content_chunks"].as_u64().unwrap() > 1, "{stream}");
    assert_eq!(
        stream["content"], content,
        "the streamed text is the plain answer's"
    );
    assert_eq!(stream["role"], "assistant", "{stream}");
    assert_eq!(stream["finish_reason"], "stop", "{stream}");
    assert_eq!(stream["ids"].as_array().unwrap().len(), 1, "{stream}");
    assert!(
        stream["usage"]["completion_tokens"].as_u64().unwrap() > 0,
        "include_usage's last chunk reaches the client: {stream}"
    );
    assert_eq!(env.gw.upstream.calls(UPSTREAM_KEY), 2);

    let denied = env
        .sdk("", "fct_not-a-real-token", "chat", "gpt-4o-mini")
        .await;
    assert_eq!(denied["error"]["class"], "AuthenticationError", "{denied}");
    assert_eq!(denied["error"]["status"], 401, "{denied}");
    assert_eq!(denied["error"]["code"], "invalid_api_key", "{denied}");
    let denied_stream = env
        .sdk("", "fct_not-a-real-token", "stream", "gpt-4o-mini")
        .await;
    assert_eq!(
        denied_stream["error"]["class"], "AuthenticationError",
        "{denied_stream}"
    );
    assert_eq!(denied_stream["error"]["status"], 401, "{denied_stream}");
    assert_eq!(
        env.gw.upstream.calls(UPSTREAM_KEY),
        2,
        "a refused client never reaches the upstream"
    );

    env.stop().await;
}

#[tokio::test]
async fn openai_sdk_pinned_prefix_and_models() {
    let env = Env::start(true).await;

    // Pinned to the OpenAI-compatible provider: forwarded with its key.
    let up = env.sdk("/up", &env.gw.token, "chat", "gpt-4o").await;
    no_error(&up);
    assert!(!up["content"].as_str().unwrap().is_empty(), "{up}");
    assert_eq!(env.gw.upstream.calls(UPSTREAM_KEY), 1);
    let up_stream = env.sdk("/up", &env.gw.token, "stream", "gpt-4o").await;
    no_error(&up_stream);
    assert_eq!(up_stream["content"], up["content"], "{up_stream}");
    assert_eq!(env.gw.upstream.calls(UPSTREAM_KEY), 2);

    // Pinned to the mock provider: answered by the data plane, the upstream sees nothing.
    let local = env.sdk("/local", &env.gw.token, "chat", "gpt-4o").await;
    no_error(&local);
    let local_text = local["content"].as_str().unwrap();
    assert!(
        local_text.contains("\"local\""),
        "the mock provider names itself: {local}"
    );
    let local_stream = env.sdk("/local", &env.gw.token, "stream", "gpt-4o").await;
    no_error(&local_stream);
    assert!(
        local_stream["content_chunks"].as_u64().unwrap() > 1,
        "{local_stream}"
    );
    assert_eq!(local_stream["content"], local_text, "{local_stream}");
    assert_eq!(env.gw.upstream.calls(UPSTREAM_KEY), 2);

    // models.list(): pinned lists that provider's models, unpinned the union.
    let upstream_models: BTreeSet<String> = MOCK_MODELS.iter().map(|m| m.to_string()).collect();
    let up_models = env.sdk("/up", &env.gw.token, "models", "").await;
    no_error(&up_models);
    assert_eq!(ids(&up_models), upstream_models, "{up_models}");
    assert_eq!(env.gw.upstream.calls(UPSTREAM_KEY), 3);

    let local_models = env.sdk("/local", &env.gw.token, "models", "").await;
    no_error(&local_models);
    assert!(!ids(&local_models).is_empty(), "{local_models}");
    assert_eq!(
        local_models["owned_by"],
        serde_json::json!(["local"]),
        "{local_models}"
    );
    assert_eq!(env.gw.upstream.calls(UPSTREAM_KEY), 3);

    let all = env.sdk("", &env.gw.token, "models", "").await;
    no_error(&all);
    let union: BTreeSet<String> = upstream_models
        .union(&ids(&local_models))
        .cloned()
        .collect();
    assert_eq!(ids(&all), union, "{all}");
    assert_eq!(env.gw.upstream.calls(UPSTREAM_KEY), 4);

    let denied = env.sdk("/up", "fct_not-a-real-token", "models", "").await;
    assert_eq!(denied["error"]["class"], "AuthenticationError", "{denied}");
    assert_eq!(denied["error"]["status"], 401, "{denied}");
    assert_eq!(env.gw.upstream.calls(UPSTREAM_KEY), 4);

    env.stop().await;
}
