//! A whole gateway for end-to-end tests: a control plane, a mock upstream behind provider
//! `up` (type `openai`) with the given keys, settings, a client token, and data planes
//! that hold all of it.

use std::time::Duration;

use fulcrum_proto::model::{KeyState, key_id};
use fulcrum_proto::pb;

use crate::mock::{MockUpstream, RawResponse, http_request};
use crate::{ControlPlaneHandle, DataPlaneHandle, eventually};

/// The gateway's provider in front of the mock upstream.
pub const PROVIDER: &str = "up";

pub struct Gateway {
    pub control: ControlPlaneHandle,
    pub upstream: MockUpstream,
    pub planes: Vec<DataPlaneHandle>,
    /// A client token every data plane accepts.
    pub token: String,
    /// Holds the control plane's store; dropped last.
    pub dir: tempfile::TempDir,
}

impl Gateway {
    /// Starts everything; returns once every data plane holds the whole config.
    pub async fn start(keys: &[&str], planes: usize, settings: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let control = ControlPlaneHandle::start(dir.path()).await;
        let upstream = MockUpstream::start().await;
        let mut admin = control.admin().await;
        admin
            .create_provider(pb::CreateProviderRequest {
                name: PROVIDER.into(),
                r#type: pb::ProviderType::Openai as i32,
                base_url: upstream.openai_base_url(),
                priority: 1,
                ..Default::default()
            })
            .await
            .expect("create provider");
        admin
            .add_keys(pb::AddKeysRequest {
                validate: false,
                provider: PROVIDER.into(),
                keys: keys.iter().map(|k| k.to_string()).collect(),
                ..Default::default()
            })
            .await
            .expect("add keys");
        for (name, value) in settings {
            admin
                .set_setting(pb::SetSettingRequest {
                    name: name.to_string(),
                    value: value.to_string(),
                })
                .await
                .expect("set setting");
        }
        let token = control.client_token("app").await;
        let revision = control.store().revision();
        let mut started = Vec::new();
        for i in 0..planes {
            let plane = DataPlaneHandle::start(
                &control.endpoint(),
                &control.join_token,
                &format!("dp-{i}"),
            )
            .await;
            plane.wait_for_revision(revision).await;
            started.push(plane);
        }
        Self {
            control,
            upstream,
            planes: started,
            token,
            dir,
        }
    }

    /// Makes every data plane hold the control plane's current revision.
    pub async fn sync(&self) {
        let revision = self.control.store().revision();
        for plane in &self.planes {
            plane.wait_for_revision(revision).await;
        }
    }

    /// POSTs `body` to data plane `plane` with the client token.
    pub async fn post(&self, plane: usize, path: &str, body: &str) -> RawResponse {
        let auth = format!("Bearer {}", self.token);
        http_request(
            self.planes[plane].addr,
            "POST",
            path,
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            body.as_bytes(),
        )
        .await
    }

    /// The state data plane `plane` holds for the key with this secret.
    pub fn state_on(&self, plane: usize, secret: &str) -> Option<KeyState> {
        let id = key_id(PROVIDER, secret);
        self.planes[plane]
            .runtime()
            .load()
            .and_then(|c| c.keys.get(&id).map(|k| k.state))
    }

    /// Waits until data plane `plane` holds `want` for the key with this secret.
    pub async fn wait_state(&self, plane: usize, secret: &str, want: KeyState, within: Duration) {
        eventually(
            &format!("{secret} {want} on dp-{plane}"),
            within,
            || async { (self.state_on(plane, secret) == Some(want)).then_some(()) },
        )
        .await;
    }

    /// Stops the data planes, then the control plane, re-raising their failures.
    pub async fn stop(self) {
        for plane in self.planes {
            plane.stop().await;
        }
        self.control.stop().await;
        self.upstream.shutdown().await;
    }
}
