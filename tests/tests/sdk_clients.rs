//! The official `openai`, `google-genai` and `anthropic` Python SDKs through one data
//! plane, each against a mock upstream of every provider type (openai, gemini,
//! vertex-express, anthropic): a plain answer, a stream, a tool call with its result sent
//! back, an image input, and an error, each asserted on what the SDK parsed.
#![allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]

use std::path::{Path, PathBuf};

use fulcrum_proto::pb;
use fulcrum_tests::fleet::{Fleet, PROVIDERS, route};
use fulcrum_tests::mock::Behaviour;
use fulcrum_tests::sdk::{python_with, run_script};
use serde_json::Value;

/// A client SDK: its script, the name of its plain mode, and the base URL it wants.
struct Sdk {
    package: &'static str,
    script: &'static str,
    plain: &'static str,
}

const SDKS: [Sdk; 3] = [
    Sdk {
        package: "openai",
        script: "openai_client.py",
        plain: "chat",
    },
    Sdk {
        package: "google-genai",
        script: "genai_client.py",
        plain: "plain",
    },
    Sdk {
        package: "anthropic",
        script: "anthropic_client.py",
        plain: "plain",
    },
];

fn base_url(sdk: &Sdk, fleet: &Fleet) -> String {
    match sdk.package {
        // OpenAI's SDK takes the versioned base; the others add their version themselves.
        "openai" => format!("http://{}/v1", fleet.addr()),
        _ => format!("http://{}", fleet.addr()),
    }
}

/// The answer text, whatever the script calls it.
fn text(out: &Value) -> String {
    out["text"]
        .as_str()
        .or_else(|| out["content"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// Starts the fleet plus one broken provider per type (`err-via-NAME`): its only key
/// answers 400, which no failover hides.
async fn start() -> (PathBuf, Fleet) {
    // Before any server starts: it blocks while a first run installs the SDKs.
    let python = python_with(&["openai", "google-genai", "anthropic"]);
    let fleet = Fleet::start().await;
    let mut admin = fleet.control.admin().await;
    for p in &PROVIDERS {
        let name = format!("{}-err", p.name);
        let base_url = match p.provider_type {
            pb::ProviderType::Gemini => fleet.upstream.gemini_base_url(),
            pb::ProviderType::VertexExpress => fleet.upstream.vertex_base_url(),
            pb::ProviderType::Anthropic => fleet.upstream.anthropic_base_url(),
            _ => fleet.upstream.openai_base_url(),
        };
        admin
            .create_provider(pb::CreateProviderRequest {
                name: name.clone(),
                r#type: p.provider_type as i32,
                base_url,
                ..Default::default()
            })
            .await
            .unwrap();
        let key = format!("broken-{}-key-0001", p.name);
        admin
            .add_keys(pb::AddKeysRequest {
                validate: false,
                provider: name.clone(),
                keys: vec![key.clone()],
                ..Default::default()
            })
            .await
            .unwrap();
        fleet.upstream.script(&key, Behaviour::status(400));
        admin
            .put_route(pb::PutRouteRequest {
                route: Some(route(
                    &format!("err-via-{}", p.name),
                    &[(&name, p.model)],
                    pb::RouteStrategy::Priority,
                )),
            })
            .await
            .unwrap();
    }
    fleet.sync().await;
    (python, fleet)
}

async fn run(python: &Path, sdk: &Sdk, fleet: &Fleet, mode: &str, model: &str) -> Value {
    let out = run_script(
        python,
        sdk.script,
        &[&base_url(sdk, fleet), &fleet.token, mode, model],
    )
    .await;
    assert!(
        out["sdk_version"].as_str().is_some_and(|v| !v.is_empty()),
        "{out}"
    );
    out
}

async fn check_sdk(sdk: &Sdk) {
    let (python, fleet) = start().await;
    for provider in &PROVIDERS {
        let model = format!("via-{}", provider.name);
        let what = |mode: &str| {
            format!(
                "{} {mode} -> {} ({})",
                sdk.package, provider.name, provider.model
            )
        };

        let plain = run(&python, sdk, &fleet, sdk.plain, &model).await;
        assert!(plain.get("error").is_none(), "{}: {plain}", what("plain"));
        assert!(
            text(&plain).contains("Hello from mock key"),
            "{}: {plain}",
            what("plain")
        );

        let stream = run(&python, sdk, &fleet, "stream", &model).await;
        assert!(
            stream.get("error").is_none(),
            "{}: {stream}",
            what("stream")
        );
        assert!(
            text(&stream).contains("Hello from mock key"),
            "{}: {stream}",
            what("stream")
        );

        let tools = run(&python, sdk, &fleet, "tools", &model).await;
        assert!(tools.get("error").is_none(), "{}: {tools}", what("tools"));
        let calls = tools["calls"].as_array().unwrap();
        assert_eq!(calls.len(), 1, "{}: {tools}", what("tools"));
        assert_eq!(
            calls[0]["name"],
            "get_weather",
            "{}: {tools}",
            what("tools")
        );
        let args = if calls[0]["arguments"].is_object() {
            &calls[0]["arguments"]
        } else if calls[0]["args"].is_object() {
            &calls[0]["args"]
        } else {
            &calls[0]["input"]
        };
        assert_eq!(args["location"], "mock", "{}: {tools}", what("tools"));
        // The mock answers the second turn with the tool result it received, so the
        // result made the round trip through both translations.
        let answer = text(&tools);
        assert!(
            answer.starts_with("tool result:"),
            "{}: {tools}",
            what("tools")
        );
        assert!(answer.contains("sunny"), "{}: {tools}", what("tools"));

        let image = run(&python, sdk, &fleet, "image", &model).await;
        assert!(image.get("error").is_none(), "{}: {image}", what("image"));
        assert!(
            text(&image).contains("saw 1 image(s): image/png"),
            "{}: {image}",
            what("image")
        );

        let error_mode = if sdk.package == "openai" {
            "chat"
        } else {
            "error"
        };
        let failed = run(
            &python,
            sdk,
            &fleet,
            error_mode,
            &format!("err-via-{}", provider.name),
        )
        .await;
        let error = &failed["error"];
        assert_eq!(error["status"], 400, "{}: {failed}", what("error"));
        let class = error["class"].as_str().unwrap_or_default();
        let expected = if sdk.package == "google-genai" {
            "ClientError"
        } else {
            "BadRequestError"
        };
        assert_eq!(class, expected, "{}: {failed}", what("error"));
    }
    fleet.stop().await;
}

#[tokio::test]
async fn openai_sdk_through_every_provider_type() {
    check_sdk(&SDKS[0]).await;
}

#[tokio::test]
async fn google_genai_sdk_through_every_provider_type() {
    check_sdk(&SDKS[1]).await;
}

#[tokio::test]
async fn anthropic_sdk_through_every_provider_type() {
    check_sdk(&SDKS[2]).await;
}

#[tokio::test]
async fn sdks_count_tokens_and_list_models_in_their_own_shapes() {
    let (python, fleet) = start().await;
    let genai = &SDKS[1];
    let anthropic = &SDKS[2];
    let counted = run(&python, genai, &fleet, "count", "via-an").await;
    assert!(
        counted["total_tokens"].as_u64().is_some_and(|n| n > 0),
        "{counted}"
    );
    let counted = run(&python, anthropic, &fleet, "count", "via-gm").await;
    assert!(
        counted["input_tokens"].as_u64().is_some_and(|n| n > 0),
        "{counted}"
    );
    let listed = run(&python, genai, &fleet, "models", "").await;
    let names = listed["names"].as_array().unwrap();
    assert!(names.iter().any(|n| n == "models/via-gm"), "{listed}");
    let listed = run(&python, anthropic, &fleet, "models", "").await;
    assert!(
        listed["ids"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == "via-an"),
        "{listed}"
    );
    fleet.stop().await;
}
