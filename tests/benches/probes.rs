//! Probe throughput of the validation scheduler: `ValidateKeys` over every key of an
//! OpenAI-type provider in front of the mock upstream, through a control plane in this
//! process (sled in a temp dir), at several `probe_concurrency` limits. The per-provider
//! rate limit is set out of the way, so the concurrency limit and the mock's answer time
//! decide the pace; one last row shows the rate limit holding instead.
//!
//! Run with `cargo bench -p fulcrum-tests --bench probes` (see docs/performance.md).
//! `PROBE_BENCH_KEYS` (default 2,000) keys; `PROBE_BENCH_LATENCY_MS` (default 20) is how
//! long the mock takes to answer each probe, as a real upstream would;
//! `PROBE_BENCH_CONCURRENCY` (default `1,8,32,128`) the limits to run.

use std::time::{Duration, Instant};

use fulcrum_proto::pb;
use fulcrum_tests::{Behaviour, ControlPlaneHandle, MockOptions, MockUpstream};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Row {
    concurrency: String,
    rate: String,
    probes: usize,
    elapsed: Duration,
    max_in_flight: usize,
    p50_ms: u32,
    p99_ms: u32,
}

async fn set(control: &ControlPlaneHandle, name: &str, value: &str) {
    control
        .admin()
        .await
        .set_setting(pb::SetSettingRequest {
            name: name.into(),
            value: value.into(),
        })
        .await
        .expect("set setting");
}

/// Probes `ids` once with `ValidateKeys` and measures the run.
async fn run(control: &ControlPlaneHandle, mock: &MockUpstream, ids: &[String]) -> Row {
    mock.reset_counts();
    let started = Instant::now();
    let mut stream = control
        .admin()
        .await
        .validate_keys(pb::ValidateKeysRequest {
            ids: ids.to_vec(),
            ..Default::default()
        })
        .await
        .expect("ValidateKeys")
        .into_inner();
    let mut latencies = Vec::with_capacity(ids.len());
    while let Some(message) = stream.message().await.expect("stream") {
        if let Some(pb::validate_keys_response::Event::Result(r)) = message.event {
            assert_eq!(r.state, pb::KeyState::Active as i32, "{r:?}");
            latencies.push(r.latency_ms);
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(latencies.len(), ids.len());
    assert_eq!(mock.total_calls(), ids.len(), "one probe per key");
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    Row {
        concurrency: String::new(),
        rate: String::new(),
        probes: ids.len(),
        elapsed,
        max_in_flight: mock.max_in_flight(),
        p50_ms: at(0.5),
        p99_ms: at(0.99),
    }
}

#[tokio::main]
async fn main() {
    let keys = env_usize("PROBE_BENCH_KEYS", 2_000).max(1);
    let latency = Duration::from_millis(env_usize("PROBE_BENCH_LATENCY_MS", 20) as u64);
    let limits: Vec<usize> = std::env::var("PROBE_BENCH_CONCURRENCY")
        .unwrap_or_else(|_| "1,8,32,128".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();

    let dir = tempfile::tempdir().expect("temp dir");
    let control = ControlPlaneHandle::start(dir.path()).await;
    let mock = MockUpstream::start_with(MockOptions {
        record_requests: false,
        ..MockOptions::default()
    })
    .await;
    let mut admin = control.admin().await;
    admin
        .create_provider(pb::CreateProviderRequest {
            name: "bench".into(),
            r#type: pb::ProviderType::Openai as i32,
            base_url: mock.openai_base_url(),
            ..Default::default()
        })
        .await
        .expect("create provider");
    let secrets: Vec<String> = (0..keys)
        .map(|i| format!("sk-probe-bench-{i:08}"))
        .collect();
    if !latency.is_zero() {
        for secret in &secrets {
            mock.script(secret, Behaviour::StallBeforeHeaders(latency));
        }
    }
    let ids: Vec<String> = admin
        .add_keys(pb::AddKeysRequest {
            provider: "bench".into(),
            keys: secrets.clone(),
            validate: false,
            ..Default::default()
        })
        .await
        .expect("add keys")
        .into_inner()
        .results
        .into_iter()
        .map(|r| r.id)
        .collect();
    set(&control, "probe_idle_recheck_ms", "0").await;

    let mut rows = Vec::new();
    set(&control, "probe_rate_per_minute", "6000000").await;
    for limit in &limits {
        set(&control, "probe_concurrency", &limit.to_string()).await;
        let mut row = run(&control, &mock, &ids).await;
        row.concurrency = limit.to_string();
        row.rate = "unlimited".into();
        rows.push(row);
    }
    // The rate limit holds whatever the concurrency: 6,000 a minute is 100 a second.
    let sample: Vec<String> = ids.iter().take(keys.min(300)).cloned().collect();
    set(&control, "probe_concurrency", "128").await;
    set(&control, "probe_rate_per_minute", "6000").await;
    let mut row = run(&control, &mock, &sample).await;
    row.concurrency = "128".into();
    row.rate = "6000/min".into();
    rows.push(row);

    println!(
        "\nprobes of {keys} keys, mock answering in {} ms (one provider)\n",
        latency.as_millis()
    );
    println!(
        "| probe_concurrency | probe_rate_per_minute | probes | time | probes/s | max in flight at the mock | p50 | p99 |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for row in &rows {
        println!(
            "| {} | {} | {} | {:.2} s | {:.0} | {} | {} ms | {} ms |",
            row.concurrency,
            row.rate,
            row.probes,
            row.elapsed.as_secs_f64(),
            row.probes as f64 / row.elapsed.as_secs_f64(),
            row.max_in_flight,
            row.p50_ms,
            row.p99_ms,
        );
    }
    control.stop().await;
    mock.shutdown().await;
}
