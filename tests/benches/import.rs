//! Bulk key import, end to end: 100,000 keys through `fulcrumctl keys add --file` into a
//! control plane, and the delta that carries them applied by a connected data plane.
//!
//! Run with `cargo bench -p fulcrum-tests --bench import` (see docs/performance.md). Each
//! round adds 100,000 new keys to a new provider, on top of the keys of earlier rounds.

use std::time::{Duration, Instant};

use fulcrum_proto::pb;
use fulcrum_tests::{ControlPlaneHandle, DataPlaneHandle, fulcrumctl_path};

const KEYS: usize = 100_000;
const ROUNDS: usize = 3;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let control = ControlPlaneHandle::start(dir.path()).await;
    let data_plane =
        DataPlaneHandle::start(&control.endpoint(), &control.join_token, "bench-dp").await;
    data_plane.wait_for_revision(0).await;
    let cli = fulcrumctl_path();
    println!("fulcrumctl: {}", cli.display());

    let mut admin = control.admin().await;
    let mut rows = Vec::new();
    for round in 0..ROUNDS {
        let provider = format!("bench{round}");
        admin
            .create_provider(pb::CreateProviderRequest {
                name: provider.clone(),
                r#type: pb::ProviderType::Gemini as i32,
                ..Default::default()
            })
            .await?;
        // Shaped like Gemini keys: 39 characters, unique per round and line.
        let file = dir.path().join(format!("keys-{round}.txt"));
        let lines: String = (0..KEYS)
            .map(|i| {
                format!(
                    "AIzaSy{round:02}{i:08}{:023x}\n",
                    (i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15)
                )
            })
            .collect();
        std::fs::write(&file, lines)?;

        let started = Instant::now();
        let out = tokio::process::Command::new(&cli)
            .args(["--endpoint", &control.endpoint(), "-o", "json"])
            // The import alone is measured; probing 100,000 keys is the probes bench's.
            .args([
                "keys",
                "add",
                "--provider",
                &provider,
                "--no-validate",
                "--file",
            ])
            .arg(&file)
            .env("FULCRUM_TOKEN", &control.admin_token)
            .output()
            .await?;
        let import = started.elapsed();
        anyhow::ensure!(
            out.status.success(),
            "fulcrumctl failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let result: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        anyhow::ensure!(
            result["added"] == KEYS,
            "not every key was added: {}",
            result["added"]
        );
        let revision = result["revision"].as_u64().unwrap_or_default();

        tokio::time::timeout(
            Duration::from_secs(30),
            data_plane.runtime().wait_for_revision(revision),
        )
        .await?;
        let propagated = started.elapsed() - import;
        let stats = data_plane.runtime().stats();
        rows.push((round, import, stats.last_apply, propagated));
    }

    println!();
    println!(
        "{:<6} {:>14} {:>16} {:>22} {:>14}",
        "round", "keys in store", "import (CLI)", "data plane apply", "CLI -> applied"
    );
    for (round, import, apply, propagated) in &rows {
        println!(
            "{:<6} {:>14} {:>13.0} ms {:>19.1} ms {:>11.0} ms",
            round,
            (round + 1) * KEYS,
            import.as_secs_f64() * 1e3,
            apply.as_secs_f64() * 1e3,
            propagated.as_secs_f64() * 1e3,
        );
    }
    data_plane.stop().await;
    control.stop().await;
    Ok(())
}
