//! TLS on every listener, with certificates the tests make themselves: mutual TLS between
//! data planes and the control plane (the right client certificate serves and shows in
//! `status`, a wrong or missing one is refused), plaintext against TLS listeners failing
//! cleanly, `fulcrumctl` over TLS, and certificates reloaded without a restart.
#![allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fulcrum_listen::tls::ALPN_HTTP;
use fulcrum_listen::{ClientTlsFiles, PeerIdentity, ServerTls, ServerTlsFiles};
use fulcrum_proto::pb;
use fulcrum_proto::pb::admin_service_client::AdminServiceClient;
use fulcrum_tests::certs::{
    Files, TestCa, client_config, connect_tls, get_on, https_get, write_ca,
};
use fulcrum_tests::control::BearerToken;
use fulcrum_tests::{ControlPlaneHandle, DataPlaneHandle, eventually, http_get, run_fulcrumctl};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::transport::Channel;

/// Short, so that reload tests take a second, not five.
const RELOAD_EVERY: Duration = Duration::from_millis(100);

/// One CA, a server certificate for the control plane (`localhost`, 127.0.0.1) and one for
/// the data planes' client listener, in a temp dir.
struct Pki {
    dir: tempfile::TempDir,
    ca: TestCa,
    ca_path: PathBuf,
    control_plane: Files,
    data_plane: Files,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("fulcrum test ca");
        let ca_path = write_ca(&ca, dir.path(), "ca");
        let control_plane = ca
            .server("control-plane")
            .write(dir.path(), "control-plane");
        let data_plane = ca.server("data-plane").write(dir.path(), "data-plane");
        Self {
            dir,
            ca,
            ca_path,
            control_plane,
            data_plane,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Client TLS options for a client certificate `name` issued by `ca`.
    fn client(&self, ca: &TestCa, name: &str) -> ClientTlsFiles {
        let files = ca.client(name).write(self.path(), name);
        ClientTlsFiles {
            ca: Some(self.ca_path.clone()),
            cert: Some(files.cert),
            key: Some(files.key),
            server_name: None,
        }
    }

    /// Trusts the CA but presents no client certificate.
    fn anonymous(&self) -> ClientTlsFiles {
        ClientTlsFiles {
            ca: Some(self.ca_path.clone()),
            ..ClientTlsFiles::default()
        }
    }
}

/// A control plane with TLS on both listeners; mutual TLS on gRPC with `client_ca`.
async fn control_plane(pki: &Pki, client_ca: Option<PathBuf>) -> ControlPlaneHandle {
    let files = ServerTlsFiles {
        cert: pki.control_plane.cert.clone(),
        key: pki.control_plane.key.clone(),
        client_ca,
    };
    ControlPlaneHandle::start_configured(
        &pki.path().join("store"),
        10_000,
        "127.0.0.1:0".parse().unwrap(),
        move |control| {
            control
                .with_tls(files, RELOAD_EVERY)
                .expect("tls files load")
        },
    )
    .await
}

fn https_url(control: &ControlPlaneHandle) -> String {
    format!("https://localhost:{}", control.grpc_addr.port())
}

/// A data plane that dials the control plane over TLS with `tls`; its own client listener
/// is plaintext unless `serve_tls` names certificate files.
async fn data_plane(
    control: &ControlPlaneHandle,
    node: &str,
    tls: ClientTlsFiles,
    serve_tls: Option<&Files>,
) -> DataPlaneHandle {
    let server = serve_tls.map(|files| {
        ServerTls::load(
            ServerTlsFiles {
                cert: files.cert.clone(),
                key: files.key.clone(),
                client_ca: None,
            },
            ALPN_HTTP,
        )
        .expect("data plane certificate loads")
    });
    DataPlaneHandle::start_configured(&https_url(control), &control.join_token, node, |dp| {
        let dp = dp.with_control_plane_tls(tls);
        match server {
            Some(server) => dp.with_tls(server, RELOAD_EVERY),
            None => dp,
        }
    })
    .await
}

/// `AdminService` over TLS with the admin token; `Err` when the connection is refused.
async fn admin_over_tls(
    control: &ControlPlaneHandle,
    tls: &ClientTlsFiles,
) -> Result<pb::GetStatusResponse, String> {
    let channel = Channel::from_shared(https_url(control))
        .unwrap()
        .tls_config(tls.tonic_config().unwrap())
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    let token = format!("Bearer {}", control.admin_token).parse().unwrap();
    AdminServiceClient::with_interceptor(channel, BearerToken(token))
        .get_status(pb::GetStatusRequest {})
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| {
            let meaning = fulcrum_listen::client::tls_failure(&status)
                .map_or_else(|| "no TLS error".to_string(), |tls| tls.to_string());
            format!("{meaning}: {status:?}")
        })
}

/// Reads whatever a listener sends back to a plaintext HTTP request until it closes.
/// Returns the bytes, or the error that ended the connection.
async fn plaintext_request(addr: SocketAddr) -> Result<Vec<u8>, std::io::Error> {
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await?;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer))
        .await
        .expect("the listener closes a plaintext connection instead of holding it");
    read.map(|_| answer)
}

/// A plaintext request to a TLS listener gets no HTTP answer: at most a TLS alert
/// (record type 21), then the connection closes.
fn assert_refused_plaintext(result: Result<Vec<u8>, std::io::Error>) {
    match result {
        Ok(bytes) => {
            assert!(
                bytes.is_empty() || bytes[0] == 0x15,
                "expected nothing or a TLS alert, got {:?}",
                String::from_utf8_lossy(&bytes)
            );
        }
        // A reset is a clean refusal too.
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
}

#[tokio::test]
async fn right_client_certificate_serves_and_shows_in_status() {
    let pki = Pki::new();
    let control = control_plane(&pki, Some(pki.ca_path.clone())).await;
    let dp = data_plane(
        &control,
        "dp-1",
        pki.client(&pki.ca, "dp-1"),
        Some(&pki.data_plane),
    )
    .await;
    dp.wait_for_revision(control.store().revision()).await;

    // The data plane serves its clients over TLS with its own certificate.
    let (status, body, served) = https_get(dp.addr, &pki.ca.pem(), "/readyz").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "ok"));
    assert_eq!(served.common_name.as_deref(), Some("data-plane"));

    // The control plane shows who the verified client certificate says the node is.
    let admin = pki.client(&pki.ca, "admin");
    let status = admin_over_tls(&control, &admin).await.unwrap();
    assert_eq!(status.data_planes.len(), 1, "{status:?}");
    let identity = status.data_planes[0].peer_identity.clone().unwrap();
    assert_eq!(identity.common_name, "dp-1");
    assert_eq!(
        identity.names,
        ["dp-1.fulcrum.test", "spiffe://fulcrum.test/dp-1"]
    );

    // fulcrumctl over mutual TLS: table and JSON both show it.
    let (cert, key) = (admin.cert.unwrap(), admin.key.unwrap());
    let tls_args = [
        "--ca-cert",
        pki.ca_path.to_str().unwrap(),
        "--client-cert",
        cert.to_str().unwrap(),
        "--client-key",
        key.to_str().unwrap(),
    ];
    let table = run_fulcrumctl(
        &https_url(&control),
        Some(&control.admin_token),
        &[&tls_args[..], &["status"]].concat(),
        None,
    )
    .await;
    let text = table.ok();
    assert!(text.contains("CLIENT CERT"), "{text}");
    assert!(
        text.contains("CN=dp-1 (dp-1.fulcrum.test, spiffe://fulcrum.test/dp-1)"),
        "{text}"
    );
    let json = run_fulcrumctl(
        &https_url(&control),
        Some(&control.admin_token),
        &[&tls_args[..], &["status", "-o", "json"]].concat(),
        None,
    )
    .await
    .json();
    assert_eq!(
        json["data_planes"][0]["peer_identity"]["common_name"],
        "dp-1"
    );

    // Without the client certificate fulcrumctl is refused, with a message and no panic.
    run_fulcrumctl(
        &https_url(&control),
        Some(&control.admin_token),
        &["--ca-cert", pki.ca_path.to_str().unwrap(), "status"],
        None,
    )
    .await
    .fails_with("client certificate");
    // TLS options with a plaintext endpoint are a usage error, not silently ignored.
    run_fulcrumctl(
        &format!("http://{}", control.grpc_addr),
        Some(&control.admin_token),
        &["--ca-cert", pki.ca_path.to_str().unwrap(), "status"],
        None,
    )
    .await
    .fails_with("https://");

    dp.stop().await;
    control.stop().await;
}

#[tokio::test]
async fn wrong_or_missing_client_certificate_is_refused() {
    let pki = Pki::new();
    let control = control_plane(&pki, Some(pki.ca_path.clone())).await;
    let other_ca = TestCa::new("someone else's ca");
    let wrong = data_plane(
        &control,
        "dp-wrong",
        pki.client(&other_ca, "dp-wrong"),
        None,
    )
    .await;
    let missing = data_plane(&control, "dp-missing", pki.anonymous(), None).await;
    let right = data_plane(&control, "dp-right", pki.client(&pki.ca, "dp-right"), None).await;

    // The right one gets its config; the others keep retrying and never become ready.
    right.wait_for_revision(control.store().revision()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(http_get(wrong.addr, "/readyz").await.0, 503);
    assert_eq!(http_get(missing.addr, "/readyz").await.0, 503);
    assert!(!wrong.runtime().is_ready());
    assert!(!missing.runtime().is_ready());
    let status = admin_over_tls(&control, &pki.client(&pki.ca, "admin"))
        .await
        .unwrap();
    let nodes: Vec<&str> = status
        .data_planes
        .iter()
        .map(|dp| dp.node_id.as_str())
        .collect();
    assert_eq!(nodes, ["dp-right"]);

    // Admin clients are held to the same rule.
    let refused = admin_over_tls(&control, &pki.client(&other_ca, "admin"))
        .await
        .unwrap_err();
    assert!(
        refused.starts_with("the server refused the client certificate"),
        "{refused}"
    );
    let anonymous = admin_over_tls(&control, &pki.anonymous())
        .await
        .unwrap_err();
    assert!(
        anonymous.starts_with("the server requires a client certificate"),
        "{anonymous}"
    );

    wrong.stop().await;
    missing.stop().await;
    right.stop().await;
    control.stop().await;
}

#[tokio::test]
async fn plaintext_to_tls_listeners_fails_cleanly_and_they_keep_serving() {
    let pki = Pki::new();
    let control = control_plane(&pki, None).await;
    let dp = data_plane(&control, "dp-1", pki.anonymous(), Some(&pki.data_plane)).await;
    dp.wait_for_revision(control.store().revision()).await;

    // HTTP/1.1 in the clear against the data plane's and the control plane's TLS listeners.
    for _ in 0..3 {
        assert_refused_plaintext(plaintext_request(dp.addr).await);
        assert_refused_plaintext(plaintext_request(control.http_addr).await);
    }
    // gRPC in the clear against the control plane's TLS gRPC listener.
    let plain = Channel::from_shared(format!("http://{}", control.grpc_addr))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect_lazy();
    let token: tonic::metadata::MetadataValue<_> =
        format!("Bearer {}", control.admin_token).parse().unwrap();
    let failed = AdminServiceClient::with_interceptor(plain, BearerToken(token))
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap_err();
    assert_ne!(failed.code(), tonic::Code::Ok);
    // fulcrumctl says what to change.
    run_fulcrumctl(
        &format!("http://{}", control.grpc_addr),
        Some(&control.admin_token),
        &["status"],
        None,
    )
    .await
    .fails_with("if it serves TLS, use an https:// endpoint");

    // Every listener still serves TLS clients, and the config stream is unharmed.
    let (status, _, _) = https_get(dp.addr, &pki.ca.pem(), "/healthz").await.unwrap();
    assert_eq!(status, 200);
    let (status, body, served) = https_get(control.http_addr, &pki.ca.pem(), "/healthz")
        .await
        .unwrap();
    assert_eq!((status, body.trim()), (200, "ok"));
    assert_eq!(served.common_name.as_deref(), Some("control-plane"));
    let status = admin_over_tls(&control, &pki.anonymous()).await.unwrap();
    assert_eq!(status.data_planes.len(), 1);
    assert!(
        status.data_planes[0].peer_identity.is_none(),
        "no mTLS, no identity"
    );

    dp.stop().await;
    control.stop().await;
}

/// The common name of the certificate a new TLS connection to `addr` is served.
async fn served_name(addr: SocketAddr, ca_pem: &str) -> Option<String> {
    let (_, identity): (_, PeerIdentity) = connect_tls(addr, client_config(ca_pem, &[b"http/1.1"]))
        .await
        .ok()?;
    identity.common_name
}

#[tokio::test]
async fn certificates_reload_without_a_restart() {
    let pki = Pki::new();
    let control = control_plane(&pki, Some(pki.ca_path.clone())).await;
    let dp = data_plane(
        &control,
        "dp-1",
        pki.client(&pki.ca, "dp-1"),
        Some(&pki.data_plane),
    )
    .await;
    dp.wait_for_revision(control.store().revision()).await;
    let ca_pem = pki.ca.pem();
    assert_eq!(
        served_name(dp.addr, &ca_pem).await.as_deref(),
        Some("data-plane")
    );

    // A connection opened before the rotation keeps working after it.
    let (mut before, _) = connect_tls(dp.addr, client_config(&ca_pem, &[b"http/1.1"]))
        .await
        .unwrap();
    assert_eq!(get_on(&mut before, "/healthz").await.unwrap().0, 200);

    // Rotate the data plane's certificate on disk: new connections see the new one.
    pki.ca
        .server("data-plane-rotated")
        .write(pki.path(), "data-plane");
    eventually(
        "the rotated certificate is served",
        Duration::from_secs(5),
        || async {
            (served_name(dp.addr, &ca_pem).await.as_deref() == Some("data-plane-rotated"))
                .then_some(())
        },
    )
    .await;
    assert_eq!(get_on(&mut before, "/healthz").await.unwrap().0, 200);

    // A broken key is not taken: the rotated certificate stays in force.
    std::fs::write(&pki.data_plane.key, "-----BEGIN PRIVATE KEY-----\nbroken\n").unwrap();
    tokio::time::sleep(RELOAD_EVERY * 5).await;
    assert_eq!(
        served_name(dp.addr, &ca_pem).await.as_deref(),
        Some("data-plane-rotated")
    );
    let (status, _, _) = https_get(dp.addr, &ca_pem, "/readyz").await.unwrap();
    assert_eq!(status, 200);

    // The control plane's client CA reloads too: swap in another CA, and clients with its
    // certificates are accepted while the old CA's are refused.
    let other_ca = TestCa::new("next year's client ca");
    // The control plane's client CA file is `ca.crt`, which clients here also use to
    // verify the server; they keep trusting the old CA through a copy.
    let server_ca = pki.path().join("server-ca.crt");
    std::fs::write(&server_ca, pki.ca.pem()).unwrap();
    std::fs::write(&pki.ca_path, other_ca.pem()).unwrap();
    let with_ca = |mut tls: ClientTlsFiles| {
        tls.ca = Some(server_ca.clone());
        tls
    };
    let new_admin = with_ca(pki.client(&other_ca, "admin-2"));
    let old_admin = with_ca(pki.client(&pki.ca, "admin-1"));
    eventually(
        "a certificate from the new client CA is accepted",
        Duration::from_secs(5),
        || async { admin_over_tls(&control, &new_admin).await.ok() },
    )
    .await;
    assert!(admin_over_tls(&control, &old_admin).await.is_err());
    // The data plane's stream, verified before the swap, is not cut.
    assert!(dp.runtime().is_ready());

    dp.stop().await;
    control.stop().await;
}

/// A renewed client certificate on the data plane's disk is used from its next connection
/// to the control plane on, without restarting the data plane.
#[tokio::test]
async fn a_renewed_data_plane_certificate_is_used_at_the_next_connection() {
    let pki = Pki::new();
    let server_files = ServerTlsFiles {
        cert: pki.control_plane.cert.clone(),
        key: pki.control_plane.key.clone(),
        client_ca: Some(pki.ca_path.clone()),
    };
    let store = pki.path().join("store");
    let start = |grpc: std::net::SocketAddr| {
        let files = server_files.clone();
        ControlPlaneHandle::start_configured(&store, 10_000, grpc, move |control| {
            control
                .with_tls(files, RELOAD_EVERY)
                .expect("tls files load")
        })
    };
    let control = start("127.0.0.1:0".parse().unwrap()).await;
    let dp = data_plane(&control, "dp-1", pki.client(&pki.ca, "dp-1"), None).await;
    dp.wait_for_revision(control.store().revision()).await;
    let admin = pki.client(&pki.ca, "admin");
    let identity = |status: pb::GetStatusResponse| {
        status
            .data_planes
            .first()
            .and_then(|d| d.peer_identity.clone())
            .map(|p| p.common_name)
    };
    assert_eq!(
        identity(admin_over_tls(&control, &admin).await.unwrap()).as_deref(),
        Some("dp-1")
    );

    // The certificate is renewed in place, as cert-manager or an operator would do, and
    // the control plane restarts: the data plane reconnects with the new certificate.
    pki.ca.client("dp-1-renewed").write(pki.path(), "dp-1");
    let grpc = control.grpc_addr;
    control.stop().await;
    let control = start(grpc).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let seen = identity(admin_over_tls(&control, &admin).await.unwrap());
        if seen.as_deref() == Some("dp-1-renewed") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the data plane still presents {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    dp.stop().await;
    control.stop().await;
}
