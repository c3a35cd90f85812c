//! Log ingestion and the hot log query, end to end: request records through the real
//! `TelemetryService` stream into a control plane in this process (sled in a temp dir),
//! then `LogService` queries over gRPC with 1,000,000 records stored.
//!
//! Run with `cargo bench -p fulcrum-tests --bench logs` (see docs/performance.md).
//! `LOG_BENCH_RECORDS` (default 1,000,000), `LOG_BENCH_STREAMS` (default 2) and
//! `LOG_BENCH_KEYS` (default 1,000) change the load; `LOG_BENCH_QUERIES=0` skips the
//! queries.

use std::time::{Duration, Instant};

use fulcrum_proto::pb;
use fulcrum_tests::{ControlPlaneHandle, Reporter};

/// Records per batch: what a busy data plane's shipper sends at once.
const BATCH: usize = 1_000;
/// Distinct keys by default (`LOG_BENCH_KEYS`); with one record in 5 an error, each key
/// has about 200 errors per 1,000,000 records. Each key a batch touches is one more
/// counter to update per bucket, so fewer keys ingest faster.
const KEYS: usize = 1_000;

fn keys() -> usize {
    env_usize("LOG_BENCH_KEYS", KEYS).max(1)
}
/// Batches a stream may have unacknowledged, like a shipper's window.
const IN_FLIGHT: usize = 32;
/// Runs of each query.
const QUERY_RUNS: usize = 50;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn key_id(k: usize) -> String {
    format!("{:016x}", (k as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// Record `n` of a stream: one in five an error, keys spread, models cycling, times rising
/// from `start` over `span_ms`.
fn record(stream: usize, n: usize, start: i64, span_ms: i64, total: usize) -> pb::RequestRecord {
    let error = n % 5 == 4;
    // Spread so that every key gets errors and requests alike.
    let key = ((n as u64).wrapping_mul(0x9e37_79b9) >> 7) as usize % keys();
    let models = [
        "gpt-4o-mini",
        "gpt-4o",
        "claude-sonnet-4-5",
        "gemini-2.5-flash",
    ];
    let model = models[n % models.len()];
    pb::RequestRecord {
        at_unix_ms: start + (n as i64 * span_ms) / total.max(1) as i64,
        request_id: format!("{stream:02x}{n:014x}"),
        node: format!("bench-dp-{stream}"),
        client_token: "app".into(),
        client_protocol: pb::ClientProtocol::Openai as i32,
        operation: "chat".into(),
        route: "*".into(),
        model_requested: model.into(),
        model_served: model.into(),
        provider: format!("p{}", key % 3),
        key_id: key_id(key),
        status: if error { 429 } else { 200 },
        latency_ms: 200 + (n % 700) as u32,
        ttfb_ms: 80 + (n % 300) as u32,
        input_tokens: 120 + (n % 50) as u64,
        output_tokens: if error { 0 } else { 300 + (n % 200) as u64 },
        attempt: 0,
        error_class: if error {
            pb::ErrorClass::RateLimited as i32
        } else {
            0
        },
        stream: n.is_multiple_of(2),
        error_excerpt: if error {
            r#"{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED"}}"#.into()
        } else {
            String::new()
        },
        request_body: Vec::new(),
    }
}

/// Sends `records` records as one instance, `BATCH` at a time with up to `IN_FLIGHT`
/// unacknowledged, and returns when the last is acknowledged.
async fn ship(
    endpoint: String,
    join_token: String,
    stream: usize,
    records: usize,
    batches: Vec<Vec<pb::RequestRecord>>,
    ready: std::sync::Arc<tokio::sync::Barrier>,
) -> anyhow::Result<()> {
    let mut prepared = batches.into_iter();
    let mut reporter = Reporter::open(
        &endpoint,
        &join_token,
        &format!("bench-dp-{stream}"),
        &format!("bench-{stream}"),
    )
    .await?;
    // Every stream starts at once, with its stream open.
    ready.wait().await;
    let batches = records.div_ceil(BATCH);
    let mut sent = 0usize;
    let mut acked = 0usize;
    let (mut last, mut last_acked) = (Instant::now(), 0usize);
    while acked < batches {
        while sent < batches && sent - acked < IN_FLIGHT {
            let request = reporter.batch(sent as u64 + 1, prepared.next().unwrap_or_default(), 0);
            reporter.push(request).await;
            sent += 1;
        }
        let ack = reporter.ack().await?;
        anyhow::ensure!(ack == acked as u64 + 1, "ack {ack} out of order");
        acked += 1;
        if stream == 0 && acked.is_multiple_of(100) {
            let rate = (acked - last_acked) as f64 * BATCH as f64 / last.elapsed().as_secs_f64();
            println!("  stream 0: {acked} batches acknowledged, {rate:.0} records/s lately");
            last = Instant::now();
            last_acked = acked;
        }
    }
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn time_query<F, Fut>(name: &str, mut run: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<usize>>,
{
    let mut times = Vec::with_capacity(QUERY_RUNS);
    let mut found = 0;
    for _ in 0..QUERY_RUNS {
        let started = Instant::now();
        found = run().await?;
        times.push(started.elapsed());
    }
    times.sort();
    println!(
        "{name:<48} {found:>6} {:>9.2} {:>9.2} {:>9.2}",
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        percentile(&times, 0.95).as_secs_f64() * 1e3,
        times.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let total = env_usize("LOG_BENCH_RECORDS", 1_000_000);
    let streams = env_usize("LOG_BENCH_STREAMS", 2).max(1);
    let dir = tempfile::tempdir()?;
    let control = ControlPlaneHandle::start(dir.path()).await;
    // Live traffic: the records start now and span about as long as they take to ingest.
    let span_ms = i64::try_from(total / 50).unwrap_or(i64::MAX);
    let start = now_ms();

    // Ingestion: every stream at once, as data planes would. The records are made before
    // the clock starts; encoding them to send stays in (this process plays the data
    // planes too, on the same two cores).
    let per_stream = total / streams;
    let ready = std::sync::Arc::new(tokio::sync::Barrier::new(streams + 1));
    let mut shippers = Vec::new();
    for stream in 0..streams {
        let batches: Vec<Vec<pb::RequestRecord>> = (0..per_stream)
            .map(|n| record(stream, n, start, span_ms, per_stream))
            .collect::<Vec<_>>()
            .chunks(BATCH)
            .map(<[pb::RequestRecord]>::to_vec)
            .collect();
        shippers.push(tokio::spawn(ship(
            control.endpoint(),
            control.join_token.clone(),
            stream,
            per_stream,
            batches,
            ready.clone(),
        )));
    }
    ready.wait().await;
    let started = Instant::now();
    for shipper in shippers {
        shipper.await??;
    }
    let acked = started.elapsed();
    // The counters of the last batches may still be pending: the first stats query adds
    // them to the buckets, and that work belongs to ingestion.
    let compacted = Instant::now();
    control
        .logs()
        .await
        .get_stats(pb::GetStatsRequest {
            window: pb::StatsWindow::LastMinute as i32,
            group_by: pb::StatsGroupBy::Provider as i32,
            ..Default::default()
        })
        .await?;
    let compacted = compacted.elapsed();
    let elapsed = started.elapsed();
    let stored = per_stream * streams;
    println!(
        "ingested {stored} records ({streams} streams, batches of {BATCH}, {IN_FLIGHT} in flight) in {:.2} s: {:.0} records/s \
         (all acknowledged after {:.2} s, then {:.0} ms for the first stats query to add the last pending counters)",
        elapsed.as_secs_f64(),
        stored as f64 / elapsed.as_secs_f64(),
        acked.as_secs_f64(),
        compacted.as_secs_f64() * 1e3,
    );
    let size: u64 = walk_size(dir.path());
    println!(
        "data dir after ingestion: {:.0} MiB ({:.0} bytes per record)",
        size as f64 / 1_048_576.0,
        size as f64 / stored as f64
    );

    storage_only(total.min(200_000), start, span_ms).await?;

    if env_usize("LOG_BENCH_QUERIES", 1) == 0 {
        control.stop().await;
        return Ok(());
    }
    // Queries over gRPC, as fulcrumctl sends them.
    let logs = control.logs().await;
    println!();
    println!(
        "{:<48} {:>6} {:>9} {:>9} {:>9}",
        "query (50 runs)", "found", "p50 ms", "p95 ms", "max ms"
    );
    let key = key_id(7);
    time_query("latest 100 errors of one key", || {
        let mut logs = logs.clone();
        let key = key.clone();
        async move {
            let page = logs
                .search_logs(pb::SearchLogsRequest {
                    filter: Some(pb::LogFilter {
                        key_id: key,
                        errors_only: true,
                        ..Default::default()
                    }),
                    limit: 100,
                    ..Default::default()
                })
                .await?
                .into_inner();
            Ok(page.records.len())
        }
    })
    .await?;
    time_query("latest 100 records", || {
        let mut logs = logs.clone();
        async move {
            let page = logs
                .search_logs(pb::SearchLogsRequest {
                    limit: 100,
                    ..Default::default()
                })
                .await?
                .into_inner();
            Ok(page.records.len())
        }
    })
    .await?;
    time_query("latest 100 errors (all keys)", || {
        let mut logs = logs.clone();
        async move {
            let page = logs
                .search_logs(pb::SearchLogsRequest {
                    filter: Some(pb::LogFilter {
                        errors_only: true,
                        ..Default::default()
                    }),
                    limit: 100,
                    ..Default::default()
                })
                .await?
                .into_inner();
            Ok(page.records.len())
        }
    })
    .await?;
    time_query("latest 100 records of one key (no index)", || {
        let mut logs = logs.clone();
        let key = key.clone();
        async move {
            let page = logs
                .search_logs(pb::SearchLogsRequest {
                    filter: Some(pb::LogFilter {
                        key_id: key,
                        ..Default::default()
                    }),
                    limit: 100,
                    ..Default::default()
                })
                .await?
                .into_inner();
            Ok(page.records.len())
        }
    })
    .await?;
    for (name, window, group_by) in [
        (
            "stats 1h by key",
            pb::StatsWindow::LastHour,
            pb::StatsGroupBy::Key,
        ),
        (
            "stats 24h by model",
            pb::StatsWindow::LastDay,
            pb::StatsGroupBy::Model,
        ),
        (
            "stats 30d by provider",
            pb::StatsWindow::Last30Days,
            pb::StatsGroupBy::Provider,
        ),
    ] {
        time_query(name, || {
            let mut logs = logs.clone();
            async move {
                let stats = logs
                    .get_stats(pb::GetStatsRequest {
                        window: window as i32,
                        group_by: group_by as i32,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                Ok(stats.rows.len())
            }
        })
        .await?;
    }
    drop(logs);
    control.stop().await;
    Ok(())
}

/// The store alone: the same batches straight into a `LogStore` on this thread, each
/// flushed before the next and their counters compacted every 64 batches (as the control
/// plane does), without gRPC and without the client's work.
async fn storage_only(records: usize, start: i64, span_ms: i64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = fulcrum_control::store::Store::open(dir.path(), 10_000)?;
    let logs = fulcrum_control::logs::LogStore::open(&store)?;
    let batches: Vec<Vec<pb::RequestRecord>> = (0..records)
        .map(|n| record(0, n, start, span_ms, records))
        .collect::<Vec<_>>()
        .chunks(BATCH)
        .map(<[pb::RequestRecord]>::to_vec)
        .collect();
    let started = Instant::now();
    for (i, batch) in batches.into_iter().enumerate() {
        logs.ingest_blocking("storage-only", i as u64 + 1, batch)?;
        store.flush().await?;
        // As `LogStore::ingest` does after a batch, when enough are pending.
        if (i + 1) % 64 == 0 {
            logs.compact()?;
        }
    }
    logs.compact()?;
    let elapsed = started.elapsed();
    println!(
        "store alone: {records} records in {:.2} s: {:.0} records/s",
        elapsed.as_secs_f64(),
        records as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}

fn walk_size(path: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(m) if m.is_dir() => walk_size(&entry.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
