//! The gRPC surface as any client sees it: authentication, health, reflection, and the
//! server's own validation (what `fulcrumctl` checks locally is checked again here).
#![allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]

use std::time::Duration;

use fulcrum_proto::pb;
use fulcrum_proto::pb::admin_service_client::AdminServiceClient;
use fulcrum_tests::ControlPlaneHandle;
use tonic::Code;
use tonic::transport::Channel;

async fn channel(control: &ControlPlaneHandle) -> Channel {
    Channel::from_shared(control.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test]
async fn admin_calls_need_the_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlPlaneHandle::start(dir.path()).await;
    let mut client = AdminServiceClient::new(channel(&control).await);
    let cases = [
        (None, "missing admin token"),
        (Some("Bearer wrong".to_string()), "invalid admin token"),
        (
            Some(format!("Bearer {}", control.join_token)),
            "invalid admin token",
        ),
        (Some(control.admin_token.clone()), "invalid admin token"),
    ];
    for (header, message) in cases {
        let mut request = tonic::Request::new(pb::GetStatusRequest {});
        if let Some(header) = &header {
            request
                .metadata_mut()
                .insert("authorization", header.parse().unwrap());
        }
        let err = tokio::time::timeout(Duration::from_secs(5), client.get_status(request))
            .await
            .expect("answered, not hung")
            .expect_err("refused");
        assert_eq!(err.code(), Code::Unauthenticated, "{header:?}: {err:?}");
        assert!(err.message().contains(message), "{header:?}: {err:?}");
    }
    // Writes are refused the same way and change nothing.
    let err = client
        .create_provider(pb::CreateProviderRequest {
            name: "x".into(),
            r#type: pb::ProviderType::Mock as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(control.store().revision(), 0);
    control.stop().await;
}

#[tokio::test]
async fn health_reports_each_service_and_reflection_lists_them() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    let dir = tempfile::tempdir().unwrap();
    let control = ControlPlaneHandle::start(dir.path()).await;
    let mut health = HealthClient::new(channel(&control).await);
    for service in [
        "",
        "fulcrum.v1.AdminService",
        "fulcrum.v1.DiscoveryService",
        "fulcrum.v1.TelemetryService",
    ] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "fulcrum.v1.Nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    // v1 and v1alpha: grpcurl and Python's grpcio-reflection speak different ones.
    {
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        let mut client = ServerReflectionClient::new(channel(&control).await);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        let Some(MessageResponse::ListServicesResponse(list)) =
            responses.message().await.unwrap().unwrap().message_response
        else {
            panic!("expected a service list");
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        for name in [
            "fulcrum.v1.AdminService",
            "fulcrum.v1.DiscoveryService",
            "grpc.health.v1.Health",
        ] {
            assert!(
                names.iter().any(|n| n == name),
                "{name} missing from {names:?}"
            );
        }
    }
    {
        use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
        let mut client = ServerReflectionClient::new(channel(&control).await);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        let Some(MessageResponse::ListServicesResponse(list)) =
            responses.message().await.unwrap().unwrap().message_response
        else {
            panic!("expected a service list");
        };
        assert!(
            list.service
                .iter()
                .any(|s| s.name == "fulcrum.v1.AdminService")
        );
    }
    control.stop().await;
}

#[tokio::test]
async fn the_server_validates_what_the_cli_also_checks() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlPlaneHandle::start(dir.path()).await;
    let mut admin = control.admin().await;
    let provider = |name: &str, t: pb::ProviderType, url: &str| pb::CreateProviderRequest {
        name: name.into(),
        r#type: t as i32,
        base_url: url.into(),
        ..Default::default()
    };
    let cases = [
        (
            provider("ok", pb::ProviderType::Openai, "ftp://x"),
            Code::InvalidArgument,
            "scheme",
        ),
        (
            provider("ok", pb::ProviderType::Openai, "nope"),
            Code::InvalidArgument,
            "invalid base URL",
        ),
        (
            provider("ok", pb::ProviderType::Unspecified, ""),
            Code::InvalidArgument,
            "provider type is required",
        ),
        (
            provider("NO", pb::ProviderType::Mock, ""),
            Code::InvalidArgument,
            "invalid provider name",
        ),
        (
            provider("v1beta", pb::ProviderType::Mock, ""),
            Code::InvalidArgument,
            "reserved",
        ),
    ];
    for (request, code, needle) in cases {
        let err = admin.create_provider(request.clone()).await.unwrap_err();
        assert_eq!(err.code(), code, "{request:?}: {err:?}");
        assert!(err.message().contains(needle), "{request:?}: {err:?}");
    }

    // Defaults per type.
    for (name, t, url) in [
        (
            "g",
            pb::ProviderType::Gemini,
            "https://generativelanguage.googleapis.com",
        ),
        ("o", pb::ProviderType::Openai, "https://api.openai.com/v1"),
        (
            "a",
            pb::ProviderType::Anthropic,
            "https://api.anthropic.com",
        ),
        (
            "v",
            pb::ProviderType::VertexExpress,
            "https://aiplatform.googleapis.com",
        ),
        ("m", pb::ProviderType::Mock, ""),
    ] {
        let created = admin
            .create_provider(provider(name, t, ""))
            .await
            .unwrap()
            .into_inner();
        let p = created.provider.unwrap();
        assert_eq!(p.base_url, url);
        assert_eq!((p.priority, p.weight), (100, 1));
    }

    // Keys: masked in every answer, never with the secret.
    let secret = "AIzaSyD-0123456789abcdefghijklmnopqrstu";
    let added = admin
        .add_keys(pb::AddKeysRequest {
            validate: false,
            provider: "g".into(),
            keys: vec![secret.into(), "  ".into(), "bad key".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((added.added, added.skipped, added.invalid), (1, 1, 1));
    assert_eq!(added.results[0].masked, "AIzaSy...rstu");
    let listed = admin
        .list_keys(pb::ListKeysRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.keys.len(), 1);
    assert!(listed.keys[0].secret.is_empty());
    let debug = format!("{added:?}{listed:?}");
    assert!(
        !debug.contains(secret),
        "the full key appears in an admin answer"
    );

    let err = admin
        .list_keys(pb::ListKeysRequest {
            page_token: "garbage".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = admin
        .put_route(pb::PutRouteRequest {
            route: Some(pb::Route {
                model_pattern: "gpt-*".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert!(err.message().contains("no targets"), "{err:?}");

    // Client tokens: shown once, stored hashed, never listed.
    let created = admin
        .create_client_token(pb::CreateClientTokenRequest { name: "app".into() })
        .await
        .unwrap()
        .into_inner();
    assert!(created.token.starts_with("fk-") && created.token.len() > 40);
    let listed = admin
        .list_client_tokens(pb::ListClientTokensRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.client_tokens.len(), 1);
    assert!(listed.client_tokens[0].token_hash.is_empty());
    let stored: pb::ClientToken = control
        .store()
        .get(fulcrum_control::store::TreeId::ClientTokens, "app")
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.token_hash,
        fulcrum_proto::model::token_hash(&created.token)
    );
    control.stop().await;
}

#[tokio::test]
async fn paging_walks_every_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlPlaneHandle::start(dir.path()).await;
    let mut admin = control.admin().await;
    for name in ["p1", "p2"] {
        admin
            .create_provider(pb::CreateProviderRequest {
                name: name.into(),
                r#type: pb::ProviderType::Mock as i32,
                ..Default::default()
            })
            .await
            .unwrap();
        let keys = (0..250)
            .map(|i| format!("{name}-key-{i:05}-xxxxxxxx"))
            .collect();
        admin
            .add_keys(pb::AddKeysRequest {
                validate: false,
                provider: name.into(),
                keys,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = admin
            .list_keys(pb::ListKeysRequest {
                provider: "p2".into(),
                page_size: 100,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.keys.len() <= 100);
        seen.extend(page.keys.into_iter().map(|k| {
            assert_eq!(k.provider, "p2");
            k.id
        }));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 250);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, seen, "ids in order, none twice");
    let err = admin
        .list_keys(pb::ListKeysRequest {
            provider: "ghost".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    control.stop().await;
}

#[tokio::test]
async fn the_http_listener_serves_health_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlPlaneHandle::start(dir.path()).await;
    let mut admin = control.admin().await;
    admin
        .create_provider(pb::CreateProviderRequest {
            name: "p".into(),
            r#type: pb::ProviderType::Mock as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    admin
        .add_keys(pb::AddKeysRequest {
            validate: false,
            provider: "p".into(),
            keys: vec![
                "sk-metrics-0123456789".into(),
                "sk-metrics-9876543210".into(),
            ],
            ..Default::default()
        })
        .await
        .unwrap();
    let (status, body) = fulcrum_tests::http_get(control.http_addr, "/healthz").await;
    assert_eq!((status, body.trim()), (200, "ok"));
    let (status, body) = fulcrum_tests::http_get(control.http_addr, "/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "fulcrum_config_revision 2",
        "fulcrum_keys{state=\"active\"} 2",
        "fulcrum_keys{state=\"disabled\"} 0",
        "fulcrum_providers 1",
        "fulcrum_data_planes_connected 0",
    ] {
        assert!(
            body.lines().any(|l| l == line),
            "{line:?} missing from:\n{body}"
        );
    }
    assert!(!body.contains("sk-metrics"), "no key in metrics");
    let (status, _) = fulcrum_tests::http_get(control.http_addr, "/nope").await;
    assert_eq!(status, 404);
    control.stop().await;
}
