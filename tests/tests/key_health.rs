//! Key events reported on the telemetry stream become the control plane's decision about a
//! key, stored and pushed to every data plane; cooldowns end on their own.
#![allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]

use std::time::Duration;

use fulcrum_proto::model::KeyState;
use fulcrum_proto::pb;
use fulcrum_proto::pb::telemetry_service_client::TelemetryServiceClient;
use fulcrum_tests::control::BearerToken;
use fulcrum_tests::{ControlPlaneHandle, DataPlaneHandle, eventually};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;

struct Reporter {
    tx: mpsc::Sender<pb::ReportRequest>,
    rx: Streaming<pb::ReportResponse>,
}

impl Reporter {
    async fn open(control: &ControlPlaneHandle, token: &str) -> Result<Self, tonic::Status> {
        let channel = Channel::from_shared(control.endpoint())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let bearer = BearerToken(format!("Bearer {token}").parse().unwrap());
        let mut client = TelemetryServiceClient::with_interceptor(channel, bearer);
        let (tx, rx) = mpsc::channel(8);
        let rx = client.report(ReceiverStream::new(rx)).await?.into_inner();
        Ok(Self { tx, rx })
    }

    async fn send(&mut self, first: bool, sequence: u64, key_events: Vec<pb::KeyEvent>) -> u64 {
        let node = first.then(|| pb::Node {
            id: "dp-test".into(),
            version: "test".into(),
            listen_addr: String::new(),
        });
        self.tx
            .send(pb::ReportRequest {
                node,
                instance_id: if first {
                    "instance-1".into()
                } else {
                    String::new()
                },
                sequence,
                key_events,
                ..Default::default()
            })
            .await
            .unwrap();
        let ack = tokio::time::timeout(Duration::from_secs(5), self.rx.message())
            .await
            .expect("acked within 5s")
            .unwrap()
            .unwrap();
        ack.acked_sequence
    }
}

fn event(key_id: &str, kind: pb::KeyEventKind, retry_after_ms: i64, status: u32) -> pb::KeyEvent {
    pb::KeyEvent {
        model: String::new(),
        per_model: false,
        daily: false,
        key_id: key_id.into(),
        kind: kind as i32,
        at_unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64,
        retry_after_ms,
        http_status: status,
        detail: "test".into(),
    }
}

async fn setup(control: &ControlPlaneHandle, secrets: &[&str]) -> Vec<String> {
    let mut admin = control.admin().await;
    admin
        .create_provider(pb::CreateProviderRequest {
            name: "main".into(),
            r#type: pb::ProviderType::Mock as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    let added = admin
        .add_keys(pb::AddKeysRequest {
            validate: false,
            provider: "main".into(),
            keys: secrets.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    added.results.into_iter().map(|r| r.id).collect()
}

fn state_on(data_plane: &DataPlaneHandle, id: &str) -> Option<KeyState> {
    data_plane
        .runtime()
        .load()
        .and_then(|c| c.keys.get(id).map(|k| k.state))
}

async fn wait_state(data_plane: &DataPlaneHandle, id: &str, want: KeyState) {
    eventually(
        &format!("key {id} {want} on the data plane"),
        Duration::from_secs(5),
        || async { (state_on(data_plane, id) == Some(want)).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn events_decide_key_state_and_reach_data_planes() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlPlaneHandle::start(dir.path()).await;
    let ids = setup(
        &control,
        &[
            "sk-key-a-0123456789",
            "sk-key-b-0123456789",
            "sk-key-c-0123456789",
        ],
    )
    .await;
    let (a, b, c) = (&ids[0], &ids[1], &ids[2]);
    let data_plane = DataPlaneHandle::start(&control.endpoint(), &control.join_token, "dp-1").await;
    data_plane.wait_for_revision(2).await;

    let mut reporter = Reporter::open(&control, &control.join_token).await.unwrap();
    // 429 with Retry-After 400 ms: cooling, then back to active on its own.
    assert_eq!(
        reporter
            .send(
                true,
                1,
                vec![event(a, pb::KeyEventKind::RateLimited, 400, 429)]
            )
            .await,
        1
    );
    wait_state(&data_plane, a, KeyState::Cooling).await;
    let cooling = data_plane.runtime().load().unwrap().keys[a.as_str()].clone();
    assert!(cooling.state_until_unix_ms > 0);
    assert!(
        cooling
            .state_reason
            .contains("rate limited (429) on dp-test"),
        "{}",
        cooling.state_reason
    );
    wait_state(&data_plane, a, KeyState::Active).await;

    // 401: invalid until an operator or a probe brings it back.
    assert_eq!(
        reporter
            .send(
                false,
                2,
                vec![event(b, pb::KeyEventKind::Unauthorized, 0, 401)]
            )
            .await,
        2
    );
    wait_state(&data_plane, b, KeyState::Invalid).await;

    // A batch sent again after a reconnect is acknowledged, not applied twice: these two
    // failures would otherwise count as four.
    let failures = vec![
        event(c, pb::KeyEventKind::Failure, 0, 500),
        event(c, pb::KeyEventKind::Failure, 0, 502),
    ];
    assert_eq!(reporter.send(false, 3, failures.clone()).await, 3);
    drop(reporter);
    let mut reporter = Reporter::open(&control, &control.join_token).await.unwrap();
    assert_eq!(reporter.send(true, 3, failures).await, 3);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        state_on(&data_plane, c),
        Some(KeyState::Active),
        "2 failures < max_failures 3"
    );
    assert_eq!(
        reporter
            .send(false, 4, vec![event(c, pb::KeyEventKind::Failure, 0, 503)])
            .await,
        4
    );
    wait_state(&data_plane, c, KeyState::Failing).await;

    // A success brings a failing key back.
    assert_eq!(
        reporter
            .send(false, 5, vec![event(c, pb::KeyEventKind::Success, 0, 200)])
            .await,
        5
    );
    wait_state(&data_plane, c, KeyState::Active).await;

    // An operator's disable is never overridden by events.
    let mut admin = control.admin().await;
    admin
        .disable_keys(pb::DisableKeysRequest {
            ids: vec![a.clone()],
            reason: String::new(),
        })
        .await
        .unwrap();
    wait_state(&data_plane, a, KeyState::Disabled).await;
    assert_eq!(
        reporter
            .send(false, 6, vec![event(a, pb::KeyEventKind::Success, 0, 200)])
            .await,
        6
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(state_on(&data_plane, a), Some(KeyState::Disabled));

    // Events for keys that no longer exist are ignored.
    assert_eq!(
        reporter
            .send(
                false,
                7,
                vec![event(
                    "ffffffffffffffff",
                    pb::KeyEventKind::Unauthorized,
                    0,
                    401
                )]
            )
            .await,
        7
    );
    drop(reporter);
    data_plane.stop().await;
    control.stop().await;
}

#[tokio::test]
async fn cooldowns_survive_a_control_plane_restart() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlPlaneHandle::start(dir.path()).await;
    let ids = setup(&control, &["sk-key-a-0123456789"]).await;
    let mut reporter = Reporter::open(&control, &control.join_token).await.unwrap();
    reporter
        .send(
            true,
            1,
            vec![event(&ids[0], pb::KeyEventKind::RateLimited, 1_500, 429)],
        )
        .await;
    drop(reporter);
    control.stop().await;

    let control = ControlPlaneHandle::start(dir.path()).await;
    let data_plane = DataPlaneHandle::start(&control.endpoint(), &control.join_token, "dp-1").await;
    data_plane.wait_for_revision(3).await;
    assert_eq!(state_on(&data_plane, &ids[0]), Some(KeyState::Cooling));
    wait_state(&data_plane, &ids[0], KeyState::Active).await;
    data_plane.stop().await;
    control.stop().await;
}

#[tokio::test]
async fn reports_need_the_join_token_and_a_node() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlPlaneHandle::start(dir.path()).await;
    let err = match Reporter::open(&control, &control.admin_token).await {
        Ok(_) => panic!("opened with the admin token"),
        Err(e) => e,
    };
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let mut reporter = Reporter::open(&control, &control.join_token).await.unwrap();
    reporter
        .tx
        .send(pb::ReportRequest {
            sequence: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    let err = reporter.rx.message().await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    control.stop().await;
}
