//! The `fulcrum-control` binary as an operator runs it: generated tokens, SIGTERM, restart.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fulcrum_proto::pb;
use fulcrum_proto::pb::admin_service_client::AdminServiceClient;

struct Running {
    child: Child,
    grpc: String,
    stdout: Vec<String>,
}

/// Starts the binary on port 0 and reads the gRPC address from its startup log line.
fn start(dir: &std::path::Path, env: &[(&str, &str)]) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fulcrum-control"))
        .args(["--data-dir", dir.to_str().expect("utf-8 path")])
        .args([
            "--grpc-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .env_remove("FULCRUM_TOKEN")
        .env_remove("FULCRUM_JOIN_TOKEN")
        .envs(env.iter().copied())
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn fulcrum-control");
    let mut stderr = BufReader::new(child.stderr.take().expect("piped")).lines();
    let mut grpc = None;
    for line in stderr.by_ref() {
        let line = line.expect("read stderr");
        if let Some(rest) = line.split("grpc=").nth(1) {
            grpc = rest.split_whitespace().next().map(str::to_string);
            break;
        }
    }
    let grpc = grpc.expect("startup line names the gRPC address");
    // Keep draining the log, so that the process never writes to a closed pipe.
    std::thread::spawn(move || stderr.for_each(drop));
    // Generated tokens are printed as three lines; a start with tokens prints none.
    let stdout = if env.is_empty() {
        BufReader::new(child.stdout.take().expect("piped"))
            .lines()
            .take(3)
            .map(|l| l.expect("read stdout"))
            .collect()
    } else {
        Vec::new()
    };
    Running {
        child,
        grpc,
        stdout,
    }
}

/// Async, so that the test's own gRPC connections keep running and close when the server
/// says goodbye (a blocked client would hold the server in its drain period).
async fn sigterm_and_wait(mut running: Running) {
    let status = Command::new("kill")
        .args(["-TERM", &running.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = running.child.try_wait().expect("wait") {
            assert!(status.success(), "exit after SIGTERM: {status:?}");
            return;
        }
        assert!(Instant::now() < deadline, "no exit within 5 s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn admin(grpc: &str) -> AdminServiceClient<tonic::transport::Channel> {
    AdminServiceClient::connect(format!("http://{grpc}"))
        .await
        .expect("connect")
}

fn authed<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    request
}

#[tokio::test]
async fn generates_tokens_once_stops_on_sigterm_and_keeps_writes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let running = start(dir.path(), &[]);
    let printed = running.stdout.join("\n");
    let admin_token = printed
        .lines()
        .find_map(|l| l.trim().strip_prefix("admin token: "))
        .expect("the generated admin token is printed")
        .trim()
        .to_string();
    let stored = std::fs::read_to_string(dir.path().join("admin.token")).expect("token file");
    assert_eq!(stored.trim(), admin_token);

    let mut client = admin(&running.grpc).await;
    let created = client
        .create_provider(authed(
            pb::CreateProviderRequest {
                name: "main".into(),
                r#type: pb::ProviderType::Mock as i32,
                ..Default::default()
            },
            &admin_token,
        ))
        .await
        .expect("create provider")
        .into_inner();
    assert_eq!(created.revision, 1);
    // SIGTERM right after the write: it was durable before it was answered.
    sigterm_and_wait(running).await;

    // A second start neither regenerates nor prints the tokens; FULCRUM_TOKEN overrides.
    let running = start(dir.path(), &[("FULCRUM_TOKEN", "operator-chosen-token")]);
    let mut client = admin(&running.grpc).await;
    let status = client
        .get_status(authed(pb::GetStatusRequest {}, "operator-chosen-token"))
        .await
        .expect("status")
        .into_inner();
    assert_eq!((status.revision, status.providers), (1, 1));
    let refused = client
        .get_status(authed(pb::GetStatusRequest {}, &admin_token))
        .await
        .expect_err("the file token is not used when FULCRUM_TOKEN is set");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    sigterm_and_wait(running).await;
}

#[test]
fn check_config_opens_the_store_and_exits() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_fulcrum-control"))
        .args([
            "--data-dir",
            dir.path().to_str().expect("utf-8"),
            "--check-config",
        ])
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("config ok: store at revision 0"));
}

fn control(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fulcrum-control"))
        .args(["--data-dir", dir.to_str().expect("utf-8")])
        .args(args)
        .env_remove("FULCRUM_MASTER_KEY")
        .env_remove("FULCRUM_MASTER_KEY_FILE")
        .envs(env.iter().copied())
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run fulcrum-control")
}

#[test]
fn a_wrong_master_key_stops_the_start_with_a_clear_message() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let key_file = dir.path().join("k1");
    let out = control(
        dir.path(),
        &["gen-master-key", "--out", key_file.to_str().expect("utf-8")],
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8_lossy(&out.stdout);
    let id = printed
        .split_whitespace()
        .nth(4)
        .expect("wrote master key id ID ...")
        .to_string();
    assert_eq!(id.len(), 8, "{printed}");
    let mode = std::fs::metadata(&key_file)
        .expect("key file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let out = control(dir.path(), &["gen-master-key"], &[]);
    let other = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(other.len(), 44, "base64 of 32 bytes: {other}");

    let data = dir.path().join("data");
    let key_arg = key_file.to_str().expect("utf-8");
    let out = control(
        &data,
        &["--master-key-file", key_arg, "--check-config"],
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    assert!(
        !data.join("master.key").exists(),
        "a configured key generates none"
    );

    let out = control(
        &data,
        &["--check-config"],
        &[("FULCRUM_MASTER_KEY", &other)],
    );
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the master key does not open this store")
            && stderr.contains(&format!("store sealed with key id {id}")),
        "{stderr}"
    );
    assert!(!stderr.contains(&other), "the key never prints: {stderr}");
    let out = control(&data, &["--check-config"], &[]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no master key is configured"),
        "{out:?}"
    );
    let out = control(
        &data,
        &["--master-key-file", key_arg, "--check-config"],
        &[("FULCRUM_MASTER_KEY", &other)],
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not both"),
        "{out:?}"
    );
}
