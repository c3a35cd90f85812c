//! Test harness: the control plane and data planes in-process on listeners already bound
//! to `127.0.0.1:0`, sled in temp dirs, and helpers to run the real `fulcrumctl` binary
//! against them.

pub mod cli;
pub mod control;
pub mod data;

pub use cli::{CliOutput, fulcrumctl_path, run_fulcrumctl};
pub use control::ControlPlaneHandle;
pub use data::DataPlaneHandle;

use std::time::Duration;

/// Polls `check` every 20 ms until it returns `Some`, or fails after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Installs a test log subscriber once per process (`RUST_LOG` picks the level).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}
