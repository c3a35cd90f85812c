//! A gateway in front of one mock upstream that speaks every provider protocol: one
//! provider of each type (`oa` openai, `gm` gemini, `vx` vertex-express, `an` anthropic),
//! each with its own keys, a route per provider (`via-oa`, `via-gm`, `via-vx`, `via-an`)
//! that pins its model, a client token and one data plane.

use std::net::SocketAddr;

use fulcrum_proto::pb;

use crate::mock::{MockUpstream, RawResponse, http_request};
use crate::{ControlPlaneHandle, DataPlaneHandle};

/// A provider of the fleet: its name, type, the model its route sends, and its keys.
pub struct FleetProvider {
    pub name: &'static str,
    pub provider_type: pb::ProviderType,
    pub model: &'static str,
    pub keys: [&'static str; 2],
}

/// The four providers, one per type.
pub const PROVIDERS: [FleetProvider; 4] = [
    FleetProvider {
        name: "oa",
        provider_type: pb::ProviderType::Openai,
        model: "gpt-4o-mini",
        keys: ["sk-oa-key-0001", "sk-oa-key-0002"],
    },
    FleetProvider {
        name: "gm",
        provider_type: pb::ProviderType::Gemini,
        model: "gemini-2.5-flash",
        keys: ["AIza-gm-key-0001", "AIza-gm-key-0002"],
    },
    FleetProvider {
        name: "vx",
        provider_type: pb::ProviderType::VertexExpress,
        model: "gemini-2.5-pro",
        keys: ["AQ.vx-key-0001", "AQ.vx-key-0002"],
    },
    FleetProvider {
        name: "an",
        provider_type: pb::ProviderType::Anthropic,
        model: "claude-sonnet-4-5",
        keys: ["sk-ant-key-0001", "sk-ant-key-0002"],
    },
];

pub struct Fleet {
    pub control: ControlPlaneHandle,
    pub upstream: MockUpstream,
    pub plane: DataPlaneHandle,
    pub token: String,
    /// Holds the control plane's store; dropped last.
    pub dir: tempfile::TempDir,
}

impl Fleet {
    /// Starts everything; returns once the data plane holds the whole config.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let control = ControlPlaneHandle::start(dir.path()).await;
        let upstream = MockUpstream::start().await;
        let mut admin = control.admin().await;
        for p in &PROVIDERS {
            let base_url = match p.provider_type {
                pb::ProviderType::Gemini => upstream.gemini_base_url(),
                pb::ProviderType::VertexExpress => upstream.vertex_base_url(),
                pb::ProviderType::Anthropic => upstream.root_url(),
                _ => upstream.openai_base_url(),
            };
            admin
                .create_provider(pb::CreateProviderRequest {
                    name: p.name.into(),
                    r#type: p.provider_type as i32,
                    base_url,
                    priority: 1,
                    ..Default::default()
                })
                .await
                .expect("create provider");
            admin
                .add_keys(pb::AddKeysRequest {
                    validate: false,
                    provider: p.name.into(),
                    keys: p.keys.iter().map(|k| k.to_string()).collect(),
                    ..Default::default()
                })
                .await
                .expect("add keys");
            admin
                .put_route(pb::PutRouteRequest {
                    route: Some(route(
                        &format!("via-{}", p.name),
                        &[(p.name, p.model)],
                        pb::RouteStrategy::Priority,
                    )),
                })
                .await
                .expect("put route");
        }
        let token = control.client_token("app").await;
        let plane = DataPlaneHandle::start(&control.endpoint(), &control.join_token, "dp-0").await;
        plane.wait_for_revision(control.store().revision()).await;
        Self {
            control,
            upstream,
            plane,
            token,
            dir,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.plane.addr
    }

    /// Makes the data plane hold the control plane's current revision.
    pub async fn sync(&self) {
        self.plane
            .wait_for_revision(self.control.store().revision())
            .await;
    }

    /// POSTs a JSON body with the client token in the header each protocol's SDK uses.
    pub async fn post(&self, path: &str, body: &serde_json::Value) -> RawResponse {
        let bearer = format!("Bearer {}", self.token);
        let auth: (&str, &str) = if path.contains("/messages") {
            ("x-api-key", &self.token)
        } else if path.contains("/models/") {
            ("x-goog-api-key", &self.token)
        } else {
            ("authorization", &bearer)
        };
        http_request(
            self.addr(),
            "POST",
            path,
            &[auth, ("content-type", "application/json")],
            body.to_string().as_bytes(),
        )
        .await
    }

    /// GETs a path with the given extra headers and the client token as a bearer.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> RawResponse {
        let bearer = format!("Bearer {}", self.token);
        let mut all = vec![("authorization", bearer.as_str())];
        all.extend_from_slice(headers);
        http_request(self.addr(), "GET", path, &all, b"").await
    }

    /// Stops the data plane, then the control plane, re-raising their failures.
    pub async fn stop(self) {
        self.plane.stop().await;
        self.control.stop().await;
        self.upstream.shutdown().await;
    }
}

/// A route from `pattern` to `(provider, model)` targets in the order given; an empty
/// model keeps the client's.
pub fn route(pattern: &str, targets: &[(&str, &str)], strategy: pb::RouteStrategy) -> pb::Route {
    let shared_tier = strategy != pb::RouteStrategy::Priority;
    pb::Route {
        model_pattern: pattern.into(),
        targets: targets
            .iter()
            .enumerate()
            .map(|(i, (provider, model))| pb::RouteTarget {
                provider: provider.to_string(),
                model: model.to_string(),
                priority: if shared_tier {
                    1
                } else {
                    u32::try_from(i).unwrap_or(0) + 1
                },
                weight: 1,
                ..Default::default()
            })
            .collect(),
        strategy: strategy as i32,
        ..Default::default()
    }
}
