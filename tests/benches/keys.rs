//! Keys at scale, three figures:
//!
//! 1. **Import**: 100,000 keys through the release `fulcrumctl keys add --file` into a
//!    control plane (sled on disk, loopback gRPC) with a data plane connected; the CLI's
//!    wall time and the time until the data plane holds the new revision.
//! 2. **Selection**: nanoseconds per key pick with 10, 1,000 and 100,000 keys in one
//!    provider, through the data plane's own code (`RuntimeConfig::apply` builds the pools
//!    from a snapshot, `KeyPool::pick` chooses), also with every other key cooling here
//!    (429s this data plane saw) and with nine keys in ten cooling by the control
//!    plane's word.
//! 3. **Memory per key**: the data plane's estimate (`fulcrum_key_pool_bytes`: the key
//!    structures, indexes and pools with allocator granules counted) and the resident-set
//!    growth of this process while it builds a 100,000-key config.
//!
//! Run with `cargo bench -p fulcrum-tests --bench keys` (see docs/performance.md).

use std::hint::black_box;
use std::time::{Duration, Instant};

use fulcrum_proto::model::key_id;
use fulcrum_proto::pb;
use fulcrum_proxy::RuntimeConfig;
use fulcrum_proxy::balance::Pick;
use fulcrum_tests::{ControlPlaneHandle, DataPlaneHandle, fulcrumctl_path};

const IMPORT_KEYS: usize = 100_000;
const PICKS: usize = 2_000_000;

/// Shaped like Gemini keys: 39 characters, unique per index.
fn secret(i: usize) -> String {
    format!(
        "AIzaSy{i:08}{:025x}",
        (i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    )
}

/// A snapshot with one provider `p` holding `n` active keys.
fn snapshot(n: usize) -> pb::StreamConfigResponse {
    snapshot_resting(n, 1, 0)
}

/// A snapshot with one provider `p` holding `n` keys, of which all but one in
/// `one_in` cool until `until_ms` by the control plane's word.
fn snapshot_resting(n: usize, one_in: usize, until_ms: i64) -> pb::StreamConfigResponse {
    let keys = (0..n)
        .map(|i| {
            let secret = secret(i);
            let (state, state_until_unix_ms) = if i % one_in == 0 {
                (pb::KeyState::Active, 0)
            } else {
                (pb::KeyState::Cooling, until_ms)
            };
            pb::ProviderKey {
                id: key_id("p", &secret),
                provider: "p".into(),
                masked: String::new(),
                secret,
                state: state as i32,
                state_until_unix_ms,
                state_reason: "added".into(),
                ..Default::default()
            }
        })
        .collect();
    pb::StreamConfigResponse {
        revision: 1,
        nonce: "bench".into(),
        store_id: "bench".into(),
        body: Some(pb::stream_config_response::Body::Snapshot(pb::Snapshot {
            resources: Some(pb::Resources {
                providers: vec![pb::Provider {
                    name: "p".into(),
                    r#type: pb::ProviderType::Openai as i32,
                    base_url: "http://127.0.0.1:9/v1".into(),
                    weight: 1,
                    ..Default::default()
                }],
                keys,
                ..Default::default()
            }),
        })),
    }
}

/// Resident set of this process, in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Nanoseconds per pick on `config`'s pool of provider `p`.
fn ns_per_pick(config: &RuntimeConfig) -> anyhow::Result<f64> {
    let pool = config
        .pools
        .get("p")
        .ok_or_else(|| anyhow::anyhow!("no pool"))?;
    let now = now_ms();
    for _ in 0..PICKS / 10 {
        black_box(pool.pick(now, &[]));
    }
    let started = Instant::now();
    for _ in 0..PICKS {
        match black_box(pool.pick(black_box(now), &[])) {
            Pick::Key(entry) => {
                black_box(entry);
            }
            other => anyhow::bail!("no key picked: {other:?}"),
        }
    }
    Ok(started.elapsed().as_nanos() as f64 / PICKS as f64)
}

fn selection() -> anyhow::Result<()> {
    println!("\nselection (KeyPool::pick, one provider, {PICKS} picks per row):");
    println!(
        "{:>8} {:>14} {:>24} {:>26}",
        "keys", "ns per pick", "ns, every other cooling", "ns, 9 in 10 cooling (CP)"
    );
    for n in [10, 1_000, 100_000] {
        let config = RuntimeConfig::apply(None, snapshot(n))
            .map_err(|e| anyhow::anyhow!("snapshot refused: {e:?}"))?;
        let all_usable = ns_per_pick(&config)?;
        // Rest every other key (in pick order) far into the future, as 429s would.
        let pool = config
            .pools
            .get("p")
            .ok_or_else(|| anyhow::anyhow!("no pool"))?;
        let now = now_ms();
        for i in 0..n {
            if let Pick::Key(entry) = pool.pick(now, &[])
                && i % 2 == 0
            {
                entry.local.record_rate_limited(now + 3_600_000);
            }
        }
        let half_cooling = ns_per_pick(&config)?;
        // Keys the control plane says are cooling wait outside the ring.
        let resting = RuntimeConfig::apply(None, snapshot_resting(n, 10, now + 3_600_000))
            .map_err(|e| anyhow::anyhow!("snapshot refused: {e:?}"))?;
        let mostly_resting = ns_per_pick(&resting)?;
        println!("{n:>8} {all_usable:>14.1} {half_cooling:>24.1} {mostly_resting:>26.1}");
    }
    Ok(())
}

fn memory() -> anyhow::Result<()> {
    let n = 100_000;
    let before = rss_bytes();
    let response = snapshot(n);
    let config = RuntimeConfig::apply(None, response)
        .map_err(|e| anyhow::anyhow!("snapshot refused: {e:?}"))?;
    let after = rss_bytes();
    let estimate = config.keys.heap_bytes() + config.pools.heap_bytes();
    println!("\nmemory per key ({n} keys, 39-character secrets):");
    println!(
        "  estimate (fulcrum_key_pool_bytes): {:.0} B/key ({} keys, {} pool bytes + {} key bytes)",
        estimate as f64 / n as f64,
        config.keys.len(),
        config.pools.heap_bytes(),
        config.keys.heap_bytes(),
    );
    // Measured from before the snapshot is made: its strings move into the keys, its
    // other buffers are freed by the apply (large ones back to the system, small ones to
    // the allocator's free lists, which still count as resident).
    println!(
        "  resident-set growth, snapshot made and applied: {:.0} B/key",
        after.saturating_sub(before) as f64 / n as f64
    );
    drop(config);
    Ok(())
}

async fn import() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let control = ControlPlaneHandle::start(dir.path()).await;
    let data_plane =
        DataPlaneHandle::start(&control.endpoint(), &control.join_token, "bench-dp").await;
    data_plane.wait_for_revision(0).await;
    let mut admin = control.admin().await;
    admin
        .create_provider(pb::CreateProviderRequest {
            name: "bulk".into(),
            r#type: pb::ProviderType::Gemini as i32,
            ..Default::default()
        })
        .await?;
    let file = dir.path().join("keys.txt");
    let lines: String = (0..IMPORT_KEYS).map(|i| secret(i) + "\n").collect();
    std::fs::write(&file, lines)?;
    let cli = fulcrumctl_path();
    let started = Instant::now();
    let out = tokio::process::Command::new(&cli)
        .args(["--endpoint", &control.endpoint()])
        // No probes: the provider points at Gemini's real address, and probing is not
        // what this measures.
        .args([
            "keys",
            "add",
            "--provider",
            "bulk",
            "--no-validate",
            "--file",
        ])
        .arg(&file)
        .env("FULCRUM_TOKEN", &control.admin_token)
        .output()
        .await?;
    let cli_time = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success() && stdout.starts_with(&format!("added {IMPORT_KEYS},")),
        "fulcrumctl: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let revision = control.store().revision();
    tokio::time::timeout(
        Duration::from_secs(30),
        data_plane.runtime().wait_for_revision(revision),
    )
    .await?;
    let end_to_end = started.elapsed();
    let metrics = data_plane.metrics().await;
    let pool_bytes: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("fulcrum_key_pool_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    println!("\nimport of {IMPORT_KEYS} keys ({}):", cli.display());
    println!(
        "  fulcrumctl keys add --file: {:.0} ms; file -> data plane holds them: {:.0} ms; data plane apply {:.1} ms",
        cli_time.as_secs_f64() * 1e3,
        end_to_end.as_secs_f64() * 1e3,
        data_plane.runtime().stats().last_apply.as_secs_f64() * 1e3,
    );
    println!(
        "  connected data plane's fulcrum_key_pool_bytes: {:.0} B/key",
        pool_bytes / IMPORT_KEYS as f64
    );
    data_plane.stop().await;
    control.stop().await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // First, while the allocator holds no freed memory that would hide the growth.
    memory()?;
    import().await?;
    selection()?;
    Ok(())
}
