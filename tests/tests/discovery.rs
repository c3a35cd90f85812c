//! The config stream's protocol, driven by a raw gRPC client acting as a data plane.
#![allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]

use std::time::Duration;

use fulcrum_proto::pb;
use fulcrum_proto::pb::discovery_service_client::DiscoveryServiceClient;
use fulcrum_proto::pb::stream_config_response::Body;
use fulcrum_tests::ControlPlaneHandle;
use fulcrum_tests::control::BearerToken;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;

/// One raw config stream.
struct Node {
    tx: mpsc::Sender<pb::StreamConfigRequest>,
    rx: Streaming<pb::StreamConfigResponse>,
}

impl Node {
    async fn connect(
        control: &ControlPlaneHandle,
        id: &str,
        known_revision: u64,
        known_store_id: &str,
    ) -> Self {
        Self::try_connect(
            control,
            &control.join_token,
            id,
            known_revision,
            known_store_id,
        )
        .await
        .expect("stream opens")
    }

    async fn try_connect(
        control: &ControlPlaneHandle,
        token: &str,
        id: &str,
        known_revision: u64,
        known_store_id: &str,
    ) -> Result<Self, tonic::Status> {
        let channel = Channel::from_shared(control.endpoint())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let bearer = BearerToken(format!("Bearer {token}").parse().unwrap());
        let mut client = DiscoveryServiceClient::with_interceptor(channel, bearer)
            .max_decoding_message_size(fulcrum_control::MAX_GRPC_MESSAGE_BYTES);
        let (tx, rx) = mpsc::channel(4);
        tx.send(pb::StreamConfigRequest {
            node: Some(pb::Node {
                id: id.into(),
                version: "test".into(),
                listen_addr: "127.0.0.1:1".into(),
            }),
            known_revision,
            known_store_id: known_store_id.into(),
            ..Default::default()
        })
        .await
        .unwrap();
        let rx = client
            .stream_config(ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(Self { tx, rx })
    }

    async fn next(&mut self) -> pb::StreamConfigResponse {
        tokio::time::timeout(Duration::from_secs(10), self.rx.message())
            .await
            .expect("a response within 10s")
            .expect("stream ok")
            .expect("stream open")
    }

    /// Asserts nothing arrives for a while.
    async fn quiet(&mut self) {
        let got = tokio::time::timeout(Duration::from_millis(300), self.rx.message()).await;
        assert!(got.is_err(), "expected no response, got {got:?}");
    }

    async fn ack(&self, response: &pb::StreamConfigResponse) {
        self.tx
            .send(pb::StreamConfigRequest {
                response_nonce: response.nonce.clone(),
                applied_revision: response.revision,
                ..Default::default()
            })
            .await
            .unwrap();
    }

    async fn nack(&self, response: &pb::StreamConfigResponse, applied: u64, resync: bool) {
        self.tx
            .send(pb::StreamConfigRequest {
                response_nonce: response.nonce.clone(),
                applied_revision: applied,
                nack: Some(pb::Nack {
                    reason: "test rejects it".into(),
                    rejected: vec![],
                    resync,
                }),
                ..Default::default()
            })
            .await
            .unwrap();
    }
}

async fn add_provider(control: &ControlPlaneHandle, name: &str) -> u64 {
    control
        .admin()
        .await
        .create_provider(pb::CreateProviderRequest {
            name: name.into(),
            r#type: pb::ProviderType::Mock as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .revision
}

fn snapshot(response: &pb::StreamConfigResponse) -> &pb::Resources {
    match &response.body {
        Some(Body::Snapshot(s)) => s.resources.as_ref().unwrap(),
        other => panic!("expected a snapshot, got {other:?}"),
    }
}

fn delta(response: &pb::StreamConfigResponse) -> &pb::Delta {
    match &response.body {
        Some(Body::Delta(d)) => d,
        other => panic!("expected a delta, got {other:?}"),
    }
}

fn provider_names(resources: &pb::Resources) -> Vec<&str> {
    resources
        .providers
        .iter()
        .map(|p| p.name.as_str())
        .collect()
}

#[tokio::test]
async fn cold_start_gets_snapshot_then_deltas_merge_while_unacked() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlPlaneHandle::start(dir.path()).await;
    add_provider(&control, "alpha").await;

    let mut node = Node::connect(&control, "node-a", 0, "").await;
    let first = node.next().await;
    assert_eq!(first.revision, 1);
    assert_eq!(first.store_id, control.store().store_id());
    let resources = snapshot(&first);
    assert_eq!(provider_names(resources), ["alpha"]);
    assert!(
        resources
            .settings
            .iter()
            .any(|s| s.name == "max_failures" && s.value == "3"),
        "a snapshot carries every setting's effective value"
    );

    // Two writes while the snapshot is unacknowledged: nothing more is sent until the ACK,
    // then one delta carries both.
    add_provider(&control, "beta").await;
    add_provider(&control, "gamma").await;
    node.quiet().await;
    node.ack(&first).await;
    let second = node.next().await;
    assert_eq!(second.revision, 3);
    let d = delta(&second);
    assert_eq!(d.base_revision, 1);
    let mut names = provider_names(d.upserted.as_ref().unwrap());
    names.sort_unstable();
    assert_eq!(names, ["beta", "gamma"]);
    node.ack(&second).await;

    // A removal travels as a removed reference.
    control
        .admin()
        .await
        .delete_provider(pb::DeleteProviderRequest {
            name: "beta".into(),
            force: false,
        })
        .await
        .unwrap();
    let third = node.next().await;
    let d = delta(&third);
    assert_eq!(d.base_revision, 3);
    assert_eq!(d.removed.len(), 1);
    assert_eq!(d.removed[0].name, "beta");
    assert_eq!(d.removed[0].kind, pb::ResourceKind::Provider as i32);
    node.ack(&third).await;

    // The registry shows the node at the revision it ACKed.
    let status = fulcrum_tests::eventually(
        "status shows revision 4",
        Duration::from_secs(5),
        || async {
            let status = control.status().await;
            status
                .data_planes
                .iter()
                .any(|n| n.node_id == "node-a" && n.applied_revision == 4)
                .then_some(status)
        },
    )
    .await;
    assert_eq!(status.revision, 4);
    control.stop().await;
}

#[tokio::test]
async fn reconnect_resumes_from_known_revision() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlPlaneHandle::start(dir.path()).await;
    let store_id = control.store().store_id().to_string();
    add_provider(&control, "alpha").await;
    add_provider(&control, "beta").await;

    // Current: an empty delta, answered at once.
    let mut node = Node::connect(&control, "n", 2, &store_id).await;
    let r = node.next().await;
    let d = delta(&r);
    assert_eq!((r.revision, d.base_revision), (2, 2));
    assert!(d.removed.is_empty() && d.upserted.as_ref().is_none_or(|u| u.providers.is_empty()));
    drop(node);

    // Behind, within the change log: a delta with just what changed.
    let mut node = Node::connect(&control, "n", 1, &store_id).await;
    let r = node.next().await;
    assert_eq!(
        provider_names(delta(&r).upserted.as_ref().unwrap()),
        ["beta"]
    );
    drop(node);

    // Revisions of another store: a snapshot.
    let mut node = Node::connect(&control, "n", 1, "0000000000000000").await;
    let r = node.next().await;
    assert_eq!(provider_names(snapshot(&r)).len(), 2);
    drop(node);

    // Ahead of the store (it was recreated): a snapshot.
    let mut node = Node::connect(&control, "n", 99, &store_id).await;
    assert_eq!(provider_names(snapshot(&node.next().await)).len(), 2);
    control.stop().await;
}

#[tokio::test]
async fn node_behind_a_trimmed_change_log_gets_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let control =
        ControlPlaneHandle::start_with(dir.path(), 2, "127.0.0.1:0".parse().unwrap()).await;
    let store_id = control.store().store_id().to_string();
    for name in ["a1", "a2", "a3", "a4"] {
        add_provider(&control, name).await;
    }
    let mut node = Node::connect(&control, "n", 1, &store_id).await;
    let r = node.next().await;
    assert_eq!(r.revision, 4);
    assert_eq!(provider_names(snapshot(&r)), ["a1", "a2", "a3", "a4"]);
    drop(node);
    let mut node = Node::connect(&control, "n", 2, &store_id).await;
    assert_eq!(
        delta(&node.next().await).base_revision,
        2,
        "revisions 3 and 4 are still logged"
    );
    control.stop().await;
}

#[tokio::test]
async fn nack_is_not_resent_and_resync_gets_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlPlaneHandle::start(dir.path()).await;
    add_provider(&control, "alpha").await;
    let mut node = Node::connect(&control, "nacker", 0, "").await;
    let first = node.next().await;
    node.ack(&first).await;

    add_provider(&control, "beta").await;
    let second = node.next().await;
    node.nack(&second, 1, false).await;
    node.quiet().await;
    let status =
        fulcrum_tests::eventually("status shows the NACK", Duration::from_secs(5), || async {
            let status = control.status().await;
            status
                .data_planes
                .into_iter()
                .find(|n| n.node_id == "nacker" && !n.last_nack_reason.is_empty())
        })
        .await;
    assert_eq!(status.last_nack_reason, "test rejects it");
    assert_eq!(
        status.applied_revision, 1,
        "a NACK leaves the applied revision"
    );

    // The next change comes as a delta from the applied revision, covering both.
    add_provider(&control, "gamma").await;
    let third = node.next().await;
    let d = delta(&third);
    assert_eq!((third.revision, d.base_revision), (3, 1));
    assert_eq!(
        provider_names(d.upserted.as_ref().unwrap()),
        ["beta", "gamma"]
    );

    // A resync NACK is answered with a snapshot at once.
    node.nack(&third, 1, true).await;
    let fourth = node.next().await;
    assert_eq!(fourth.revision, 3);
    assert_eq!(
        provider_names(snapshot(&fourth)),
        ["alpha", "beta", "gamma"]
    );
    control.stop().await;
}

#[tokio::test]
async fn wrong_join_token_is_unauthenticated() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlPlaneHandle::start(dir.path()).await;
    for token in ["wrong", control.admin_token.as_str()] {
        let err = match Node::try_connect(&control, token, "intruder", 0, "").await {
            Ok(_) => panic!("stream opened with token {token:?}"),
            Err(status) => status,
        };
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
        assert!(err.message().contains("invalid join token"), "{err:?}");
    }
    assert!(control.status().await.data_planes.is_empty());
    control.stop().await;
}

#[tokio::test]
async fn first_message_must_name_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlPlaneHandle::start(dir.path()).await;
    let mut node = Node::connect(&control, "", 0, "").await;
    let err = node.rx.message().await.expect_err("an error status");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("node.id"));
    control.stop().await;
}
