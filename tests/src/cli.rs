//! Runs the real `fulcrumctl` binary.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;

use tokio::io::AsyncWriteExt;

/// Where the `fulcrumctl` binary of this build is. `cargo test --workspace` and
/// `cargo nextest run --workspace` build it next to the test binaries (the `cli` crate has
/// integration tests, which makes cargo build its binary); a run of this crate alone builds
/// it once with cargo.
pub fn fulcrumctl_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let exe = std::env::current_exe().expect("test binary path");
        // target/<profile>/deps/<test> -> target/<profile>/fulcrumctl
        let profile_dir = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("test binary lives in target/<profile>/deps");
        let path = profile_dir.join("fulcrumctl");
        if !path.exists() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let release = profile_dir.ends_with("release");
            let status = std::process::Command::new(cargo)
                .args(["build", "-p", "fulcrumctl", "--bin", "fulcrumctl"])
                .args(release.then_some("--release"))
                .status()
                .expect("run cargo build for fulcrumctl");
            assert!(status.success(), "cargo build -p fulcrumctl failed");
        }
        assert!(path.exists(), "no fulcrumctl at {}", path.display());
        path
    })
    .clone()
}

/// What one `fulcrumctl` run printed.
#[derive(Debug)]
pub struct CliOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// Asserts success and returns stdout.
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "fulcrumctl failed: {self:#?}");
        &self.stdout
    }

    /// Asserts success and parses stdout as one JSON document.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.ok())
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {self:#?}"))
    }

    /// Asserts failure with a non-zero exit, a one-line message containing `needle`, and
    /// no backtrace or panic.
    pub fn fails_with(&self, needle: &str) {
        assert_ne!(self.code, 0, "expected failure: {self:#?}");
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}: {self:#?}"
        );
        assert!(!self.stderr.contains("panicked"), "panic: {self:#?}");
        assert!(
            !self.stderr.contains("stack backtrace"),
            "backtrace: {self:#?}"
        );
    }
}

/// Runs `fulcrumctl` with `args`, against `endpoint` with `token` (none if `None`), feeding
/// `stdin` if given.
pub async fn run_fulcrumctl(
    endpoint: &str,
    token: Option<&str>,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> CliOutput {
    let mut cmd = tokio::process::Command::new(fulcrumctl_path());
    cmd.args(["--endpoint", endpoint])
        .args(args)
        .env_remove("FULCRUM_TOKEN")
        .env_remove("FULCRUM_ENDPOINT")
        // stderr is compared in tests; this environment sets RUST_BACKTRACE=1.
        .env("RUST_BACKTRACE", "0")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(token) = token {
        cmd.env("FULCRUM_TOKEN", token);
    }
    let mut child = cmd.spawn().expect("spawn fulcrumctl");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        pipe.write_all(input).await.expect("write stdin");
        drop(pipe);
    }
    let out = child.wait_with_output().await.expect("wait for fulcrumctl");
    CliOutput {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
