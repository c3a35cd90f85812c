//! Admin and join token rotation without downtime: during a rotation the old and the new
//! token are both valid; after retirement only the new one is. A data plane streaming
//! config keeps its stream when its token is rotated and retired.
#![allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]

use std::time::Duration;

use fulcrum_proto::pb;
use fulcrum_proto::pb::discovery_service_client::DiscoveryServiceClient;
use fulcrum_tests::control::BearerToken;
use fulcrum_tests::gateway::{Gateway, PROVIDER};
use fulcrum_tests::{ControlPlaneHandle, DataPlaneHandle, run_fulcrumctl};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::Channel;

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}"#;

async fn status_with(control: &ControlPlaneHandle, token: &str) -> Result<u64, tonic::Status> {
    control
        .admin_with(token)
        .await
        .get_status(pb::GetStatusRequest {})
        .await
        .map(|r| r.into_inner().revision)
}

/// Opens a config stream with `token`; the first answer (or the refusal) tells.
async fn join_with(control: &ControlPlaneHandle, token: &str) -> Result<u64, tonic::Status> {
    let channel = Channel::from_shared(control.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let bearer = BearerToken(format!("Bearer {token}").parse().unwrap());
    let mut client = DiscoveryServiceClient::with_interceptor(channel, bearer)
        .max_decoding_message_size(fulcrum_control::MAX_GRPC_MESSAGE_BYTES);
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(pb::StreamConfigRequest {
        node: Some(pb::Node {
            id: "probe".into(),
            version: "test".into(),
            listen_addr: "127.0.0.1:1".into(),
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut stream = client
        .stream_config(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("an answer within 10 s")?
        .expect("a first answer");
    Ok(first.revision)
}

async fn add_key(control: &ControlPlaneHandle, secret: &str) -> u64 {
    control
        .admin()
        .await
        .add_keys(pb::AddKeysRequest {
            provider: PROVIDER.into(),
            keys: vec![secret.to_string()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .revision
}

#[tokio::test]
async fn admin_token_rotation_keeps_both_valid_until_retired() {
    let gw = Gateway::start(&["sk-admin-rot-aaaaaaaaaaaa"], 1, &[]).await;
    let control = &gw.control;
    let old = control.admin_token.clone();
    let token_file = gw.dir.path().join("admin.token");
    assert_eq!(std::fs::read_to_string(&token_file).unwrap().trim(), old);

    // Through the CLI, as an operator does it.
    let out = run_fulcrumctl(
        &control.endpoint(),
        Some(&old),
        &["tokens", "rotate-admin", "--grace", "1h", "-o", "json"],
        None,
    )
    .await;
    let rotated = out.json();
    let new = rotated["token"].as_str().unwrap().to_string();
    assert!(new.starts_with("fca_") && new != old, "{rotated}");
    assert_eq!(rotated["token_file_updated"], true);
    let until = rotated["previous_valid_until_unix_ms"].as_i64().unwrap();
    let now = fulcrum_control::store::now_unix_ms();
    assert!(
        (now + 3_500_000..=now + 3_600_000).contains(&until),
        "{until} vs {now}"
    );
    // The file in the data dir follows, so scripts reading it keep working.
    assert_eq!(std::fs::read_to_string(&token_file).unwrap().trim(), new);
    assert!(!std::fs::read_to_string(&token_file).unwrap().contains(&old));

    // Overlap: both work, on every admin service; anything else is refused.
    status_with(control, &old).await.unwrap();
    status_with(control, &new).await.unwrap();
    assert_eq!(
        status_with(control, "fca_made_up")
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    let status = control
        .security_with(&new)
        .await
        .get_security_status(pb::GetSecurityStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let admin = status
        .tokens
        .iter()
        .find(|t| t.kind == pb::TokenKind::Admin as i32)
        .unwrap();
    assert_eq!(admin.previous_valid_until_unix_ms, until);
    assert!(admin.rotated_unix_ms > 0);
    // The data plane is untouched by an admin rotation.
    assert_eq!(gw.post(0, "/v1/chat/completions", CHAT).await.status, 200);

    // Retired: the old one is refused, the new one works.
    run_fulcrumctl(
        &control.endpoint(),
        Some(&new),
        &["tokens", "retire-previous", "admin"],
        None,
    )
    .await
    .ok();
    let err = status_with(control, &old).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("invalid admin token"), "{err:?}");
    run_fulcrumctl(&control.endpoint(), Some(&old), &["status"], None)
        .await
        .fails_with("refused the admin token");
    status_with(control, &new).await.unwrap();
    // Nothing left to retire.
    run_fulcrumctl(
        &control.endpoint(),
        Some(&new),
        &["tokens", "retire-previous", "admin"],
        None,
    )
    .await
    .fails_with("previous token \"admin\" not found");

    // A restart reads the rotated token from its file; the old one stays refused.
    let Gateway {
        control,
        upstream,
        planes,
        dir,
        ..
    } = gw;
    for plane in planes {
        plane.stop().await;
    }
    control.stop().await;
    let control = ControlPlaneHandle::start(dir.path()).await;
    assert_eq!(control.admin_token, new);
    status_with(&control, &new).await.unwrap();
    assert_eq!(
        status_with(&control, &old).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    // The token state lives in sled as hashes: neither token is in the store's files.
    for token in [&old, &new] {
        for file in std::fs::read_dir(dir.path().join("store")).unwrap() {
            let path = file.unwrap().path();
            if path.is_file() {
                let bytes = std::fs::read(&path).unwrap();
                assert!(
                    !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
                    "token in {path:?}"
                );
            }
        }
    }
    control.stop().await;
    upstream.shutdown().await;
}

#[tokio::test]
async fn join_token_rotation_keeps_data_planes_serving() {
    let gw = Gateway::start(&["sk-join-rot-aaaaaaaaaaaa"], 1, &[]).await;
    let control = &gw.control;
    let old = control.join_token.clone();
    let mut security = control.security_with(&control.admin_token).await;
    let new = security
        .rotate_token(pb::RotateTokenRequest {
            kind: pb::TokenKind::Join as i32,
            grace_secs: 600,
            retire_previous: false,
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    assert!(new.starts_with("fcj_") && new != old);
    assert_eq!(
        std::fs::read_to_string(gw.dir.path().join("join.token"))
            .unwrap()
            .trim(),
        new
    );

    // Overlap: a data plane joins with either token.
    join_with(control, &old).await.unwrap();
    join_with(control, &new).await.unwrap();
    let joined = DataPlaneHandle::start(&control.endpoint(), &new, "dp-new").await;
    joined.wait_for_revision(control.store().revision()).await;

    // Retire the old token: new streams with it are refused...
    security
        .retire_previous_token(pb::RetirePreviousTokenRequest {
            kind: pb::TokenKind::Join as i32,
        })
        .await
        .unwrap();
    let err = join_with(control, &old).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("invalid join token"), "{err:?}");
    join_with(control, &new).await.unwrap();

    // ...while the data plane that joined with it keeps its stream: it applies a change
    // made after the retirement, and serves with it.
    let revision = add_key(control, "sk-join-rot-bbbbbbbbbbbb").await;
    gw.planes[0].wait_for_revision(revision).await;
    joined.wait_for_revision(revision).await;
    for _ in 0..4 {
        assert_eq!(gw.post(0, "/v1/chat/completions", CHAT).await.status, 200);
    }
    assert!(gw.upstream.calls("sk-join-rot-bbbbbbbbbbbb") >= 1);

    // Retiring at once: no overlap at all.
    let newest = security
        .rotate_token(pb::RotateTokenRequest {
            kind: pb::TokenKind::Join as i32,
            grace_secs: 0,
            retire_previous: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(newest.previous_valid_until_unix_ms, 0);
    assert_eq!(
        join_with(control, &new).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    join_with(control, &newest.token).await.unwrap();

    // Bad requests get clear errors.
    let err = security
        .rotate_token(pb::RotateTokenRequest {
            kind: pb::TokenKind::Unspecified as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("admin or join"), "{err:?}");
    let err = security
        .rotate_token(pb::RotateTokenRequest {
            kind: pb::TokenKind::Join as i32,
            grace_secs: 31 * 24 * 3600,
            retire_previous: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // The join token is not an admin token.
    let err = control
        .security_with(&newest.token)
        .await
        .get_security_status(pb::GetSecurityStatusRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    joined.stop().await;
    gw.stop().await;
}
