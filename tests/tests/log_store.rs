//! Request and error records reported on the telemetry stream: stored once (also across a
//! control-plane restart), searched with filters and cursors, tailed, counted in stats,
//! deleted by retention, and read with `fulcrumctl logs`, `stats` and `keys usage`.
#![allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]

use std::collections::HashSet;
use std::time::Duration;

use fulcrum_proto::pb;
use fulcrum_tests::control::LogClient;
use fulcrum_tests::{ControlPlaneHandle, Reporter, eventually, http_get, run_fulcrumctl};
use tokio::io::AsyncBufReadExt;

const KEY_A: &str = "0123456789abcdef";
const KEY_B: &str = "fedcba9876543210";
const DAY_MS: i64 = 86_400_000;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A client request (attempt 0) or an attempt, with an error class from its status.
fn record(
    at: i64,
    id: &str,
    key: &str,
    model: &str,
    status: u32,
    attempt: u32,
) -> pb::RequestRecord {
    let provider = if key == KEY_A { "oa" } else { "an" };
    pb::RequestRecord {
        at_unix_ms: at,
        request_id: id.into(),
        node: "dp-1".into(),
        client_token: if status == 200 { "app" } else { "batch" }.into(),
        client_protocol: pb::ClientProtocol::Openai as i32,
        operation: "chat".into(),
        route: format!("via-{provider}"),
        model_requested: model.into(),
        model_served: format!("{model}-served"),
        provider: provider.into(),
        key_id: key.into(),
        status,
        latency_ms: 40 + attempt * 10,
        ttfb_ms: 20,
        input_tokens: 7,
        output_tokens: if status == 200 { 11 } else { 0 },
        attempt,
        error_class: match status {
            200 => 0,
            429 => pb::ErrorClass::RateLimited as i32,
            400 => pb::ErrorClass::Client as i32,
            _ => pb::ErrorClass::Upstream as i32,
        },
        stream: false,
        error_excerpt: if status == 200 {
            String::new()
        } else {
            format!("upstream said {status}: quota exceeded")
        },
        request_body: Vec::new(),
    }
}

/// `n` client requests spread over the last `n` seconds, cycling through keys, models and
/// statuses; every failed one also gets an attempt record.
fn traffic(prefix: &str, n: usize, now: i64) -> Vec<pb::RequestRecord> {
    let mut records = Vec::new();
    for i in 0..n {
        let at = now - (n - i) as i64 * 1_000;
        let key = if i % 3 == 0 { KEY_B } else { KEY_A };
        let model = if i % 2 == 0 { "gpt-4o" } else { "claude" };
        let status = match i % 10 {
            3 => 429,
            7 => 500,
            9 => 400,
            _ => 200,
        };
        let id = format!("{prefix}-{i:04}");
        if status != 200 {
            records.push(record(at, &id, key, model, status, 1));
        }
        records.push(record(at, &id, key, model, status, 0));
    }
    records
}

async fn search(logs: &mut LogClient, request: pb::SearchLogsRequest) -> pb::SearchLogsResponse {
    logs.search_logs(request).await.unwrap().into_inner()
}

/// Every record that matches `filter`, paging with `limit`.
async fn search_all(
    logs: &mut LogClient,
    filter: pb::LogFilter,
    limit: u32,
) -> Vec<pb::RequestRecord> {
    let mut all = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = search(
            logs,
            pb::SearchLogsRequest {
                filter: Some(filter.clone()),
                limit,
                cursor: cursor.clone(),
                ..Default::default()
            },
        )
        .await;
        assert!(page.records.len() <= limit as usize);
        all.extend(page.records);
        if page.next_cursor.is_empty() {
            return all;
        }
        cursor = page.next_cursor;
    }
}

fn everything() -> pb::LogFilter {
    pb::LogFilter {
        attempts: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_batch_sent_again_after_a_restart_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlPlaneHandle::start(dir.path()).await;
    let now = now_ms();
    let first = traffic("one", 40, now);
    let second = traffic("two", 40, now);
    let mut reporter = Reporter::open(&control.endpoint(), &control.join_token, "dp-1", "inst-a")
        .await
        .unwrap();
    assert_eq!(reporter.send(1, first.clone()).await.unwrap(), 1);
    assert_eq!(reporter.send(2, second.clone()).await.unwrap(), 2);
    // A repeat on the same stream is acknowledged and ignored.
    assert_eq!(reporter.send(2, second.clone()).await.unwrap(), 2);
    drop(reporter);
    control.stop().await;

    // Same data dir: the applied sequence comes from the store, not from memory.
    let control = ControlPlaneHandle::start(dir.path()).await;
    let mut reporter = Reporter::open(&control.endpoint(), &control.join_token, "dp-1", "inst-a")
        .await
        .unwrap();
    assert_eq!(reporter.send(2, second.clone()).await.unwrap(), 2);
    let third = traffic("three", 10, now);
    let batch = reporter.batch(3, third.clone(), 7);
    reporter.push(batch).await;
    assert_eq!(reporter.ack().await.unwrap(), 3);
    // Another instance's sequence 1 is its own.
    let mut other = Reporter::open(&control.endpoint(), &control.join_token, "dp-2", "inst-b")
        .await
        .unwrap();
    let fourth = traffic("four", 5, now);
    assert_eq!(other.send(1, fourth.clone()).await.unwrap(), 1);

    let mut logs = control.logs().await;
    let stored = search_all(&mut logs, everything(), 1_000).await;
    let sent = first.len() + second.len() + third.len() + fourth.len();
    assert_eq!(stored.len(), sent, "every record once");
    let unique: HashSet<(String, u32)> = stored
        .iter()
        .map(|r| (r.request_id.clone(), r.attempt))
        .collect();
    assert_eq!(unique.len(), sent);

    // Counters since this start: batches 3 (inst-a) and 1 (inst-b); the dropped count
    // inst-a reported.
    let (status, metrics) = http_get(control.http_addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("fulcrum_log_batches_stored_total 2"),
        "{metrics}"
    );
    let errors = (third.iter().chain(&fourth))
        .filter(|r| r.error_class != 0)
        .count();
    let requests = third.len() + fourth.len() - errors;
    assert!(
        metrics.contains(&format!(
            "fulcrum_log_records_stored_total{{kind=\"request\"}} {requests}"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "fulcrum_log_records_stored_total{{kind=\"error\"}} {errors}"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("fulcrum_log_records_dropped_by_data_planes_total 7"),
        "{metrics}"
    );
    assert!(
        metrics.contains("fulcrum_keys{state=\"active\"}"),
        "{metrics}"
    );
    assert!(!metrics.contains(KEY_A), "no key ids in labels");
    control.stop().await;
}

#[tokio::test]
async fn searches_filter_and_page_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlPlaneHandle::start(dir.path()).await;
    let now = now_ms();
    let sent = traffic("req", 120, now);
    let mut reporter = Reporter::open(&control.endpoint(), &control.join_token, "dp-1", "inst-a")
        .await
        .unwrap();
    reporter.send(1, sent[..100].to_vec()).await.unwrap();
    reporter.send(2, sent[100..].to_vec()).await.unwrap();
    let mut logs = control.logs().await;

    // Pages of 7 cover every client request once, newest first.
    let pages = search_all(&mut logs, pb::LogFilter::default(), 7).await;
    let requests: Vec<&pb::RequestRecord> = sent.iter().filter(|r| r.attempt == 0).collect();
    assert_eq!(pages.len(), requests.len());
    assert!(pages.windows(2).all(|w| w[0].at_unix_ms >= w[1].at_unix_ms));
    assert_eq!(pages[0].request_id, "req-0119");

    let check = |filter: pb::LogFilter, expect: &dyn Fn(&pb::RequestRecord) -> bool| {
        let filter = filter.clone();
        let want = sent
            .iter()
            .filter(|r| (filter.attempts || r.attempt == 0) && expect(r))
            .count();
        (filter, want)
    };
    let cases = [
        check(
            pb::LogFilter {
                key_id: KEY_A.into(),
                errors_only: true,
                ..Default::default()
            },
            &|r| r.key_id == KEY_A && r.error_class != 0,
        ),
        check(
            pb::LogFilter {
                key_id: KEY_B.into(),
                errors_only: true,
                attempts: true,
                ..Default::default()
            },
            &|r| r.key_id == KEY_B && r.error_class != 0,
        ),
        check(
            pb::LogFilter {
                provider: "an".into(),
                ..Default::default()
            },
            &|r| r.provider == "an",
        ),
        check(
            pb::LogFilter {
                model: "claude-served".into(),
                status: 429,
                ..Default::default()
            },
            &|r| r.model_served == "claude-served" && r.status == 429,
        ),
        check(
            pb::LogFilter {
                status_class: pb::StatusClass::ServerError as i32,
                attempts: true,
                ..Default::default()
            },
            &|r| r.status >= 500,
        ),
        check(
            pb::LogFilter {
                client_token: "batch".into(),
                model: "gpt-4o".into(),
                ..Default::default()
            },
            &|r| r.client_token == "batch" && r.model_requested == "gpt-4o",
        ),
        check(
            pb::LogFilter {
                text: "QUOTA".into(),
                errors_only: true,
                ..Default::default()
            },
            &|r| r.error_class != 0,
        ),
        check(
            pb::LogFilter {
                text: "req-011".into(),
                ..Default::default()
            },
            &|r| r.request_id.starts_with("req-011"),
        ),
    ];
    for (filter, want) in cases {
        let found = search_all(&mut logs, filter.clone(), 4).await;
        assert_eq!(found.len(), want, "{filter:?}");
        assert!(found.windows(2).all(|w| w[0].at_unix_ms >= w[1].at_unix_ms));
    }

    // A time range: from inclusive, to exclusive.
    let (from, to) = (now - 50_000, now - 20_000);
    let page = search(
        &mut logs,
        pb::SearchLogsRequest {
            from_unix_ms: from,
            to_unix_ms: to,
            limit: 1_000,
            ..Default::default()
        },
    )
    .await;
    let want = requests
        .iter()
        .filter(|r| r.at_unix_ms >= from && r.at_unix_ms < to)
        .count();
    assert_eq!(page.records.len(), want);
    assert!(page.next_cursor.is_empty());

    // The latest errors of a key, from the index, with a time bound and paging.
    let page = search(
        &mut logs,
        pb::SearchLogsRequest {
            filter: Some(pb::LogFilter {
                key_id: KEY_A.into(),
                errors_only: true,
                ..Default::default()
            }),
            to_unix_ms: to,
            limit: 3,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(page.records.len(), 3);
    assert!(
        page.records
            .iter()
            .all(|r| r.at_unix_ms < to && r.key_id == KEY_A)
    );
    assert!(!page.next_cursor.is_empty());

    // Bad input names the culprit.
    let err = logs
        .search_logs(pb::SearchLogsRequest {
            cursor: "not-a-cursor".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("invalid cursor"), "{err:?}");
    control.stop().await;
}

#[tokio::test]
async fn stats_match_what_was_sent() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlPlaneHandle::start(dir.path()).await;
    let now = now_ms();
    let sent = traffic("req", 90, now);
    let mut reporter = Reporter::open(&control.endpoint(), &control.join_token, "dp-1", "inst-a")
        .await
        .unwrap();
    reporter.send(1, sent.clone()).await.unwrap();
    let mut logs = control.logs().await;

    let stats = |group_by: pb::StatsGroupBy, key: &str, attempts: bool| pb::GetStatsRequest {
        window: pb::StatsWindow::LastHour as i32,
        group_by: group_by as i32,
        key_id: key.into(),
        attempts,
        ..Default::default()
    };
    let by_key = logs
        .get_stats(stats(pb::StatsGroupBy::Key, "", false))
        .await
        .unwrap()
        .into_inner();
    let requests: Vec<&pb::RequestRecord> = sent.iter().filter(|r| r.attempt == 0).collect();
    let total = by_key.total.clone().unwrap();
    assert_eq!(total.requests, requests.len() as u64);
    assert_eq!(
        total.successes,
        requests.iter().filter(|r| r.status == 200).count() as u64
    );
    assert_eq!(
        total.output_tokens,
        requests.iter().map(|r| r.output_tokens).sum::<u64>()
    );
    assert_eq!(by_key.series.len(), 61);
    assert_eq!(
        by_key
            .series
            .iter()
            .map(|p| p.counts.as_ref().unwrap().requests)
            .sum::<u64>(),
        total.requests
    );
    for key in [KEY_A, KEY_B] {
        let mine: Vec<_> = requests.iter().filter(|r| r.key_id == key).collect();
        let row = by_key.rows.iter().find(|r| r.group == key).unwrap();
        let counts = row.counts.as_ref().unwrap();
        assert_eq!(counts.requests, mine.len() as u64, "{key}");
        assert_eq!(
            counts.client_errors,
            mine.iter()
                .filter(|r| (400..500).contains(&r.status))
                .count() as u64
        );
        assert_eq!(
            counts.input_tokens,
            mine.iter().map(|r| r.input_tokens).sum::<u64>()
        );
        let rate_limited = counts
            .errors
            .iter()
            .find(|e| e.error_class == pb::ErrorClass::RateLimited as i32)
            .map_or(0, |e| e.count);
        assert_eq!(
            rate_limited,
            mine.iter().filter(|r| r.status == 429).count() as u64
        );
        assert!(counts.latency_p50_ms > 0 && counts.latency_avg_ms == 40);
    }

    let by_model = logs
        .get_stats(stats(pb::StatsGroupBy::Model, "", false))
        .await
        .unwrap()
        .into_inner();
    for model in ["gpt-4o", "claude"] {
        let row = by_model.rows.iter().find(|r| r.group == model).unwrap();
        assert_eq!(
            row.counts.as_ref().unwrap().requests,
            requests
                .iter()
                .filter(|r| r.model_requested == model)
                .count() as u64
        );
    }
    // Attempts are grouped by the model served.
    let attempts = logs
        .get_stats(pb::GetStatsRequest {
            group_by: pb::StatsGroupBy::Model as i32,
            attempts: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        attempts.total.unwrap().requests,
        sent.iter().filter(|r| r.attempt > 0).count() as u64
    );
    assert!(attempts.rows.iter().all(|r| r.group.ends_with("-served")));

    // One key's usage, per day over 30 days.
    let usage = logs
        .get_stats(pb::GetStatsRequest {
            window: pb::StatsWindow::Last30Days as i32,
            key_id: KEY_B.into(),
            attempts: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(usage.group_by, pb::StatsGroupBy::Key as i32);
    assert_eq!(usage.rows.len(), 1);
    assert_eq!(usage.series.len(), 31);
    assert_eq!(
        usage.total.unwrap().requests,
        sent.iter()
            .filter(|r| r.attempt > 0 && r.key_id == KEY_B)
            .count() as u64
    );

    let err = logs
        .get_stats(stats(pb::StatsGroupBy::Provider, KEY_A, false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    control.stop().await;
}

#[tokio::test]
async fn tails_receive_new_records_as_they_are_stored() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlPlaneHandle::start(dir.path()).await;
    let mut logs = control.logs().await;
    let mut all = logs
        .tail_logs(pb::TailLogsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut errors = logs
        .tail_logs(pb::TailLogsRequest {
            filter: Some(pb::LogFilter {
                errors_only: true,
                attempts: true,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let sent = traffic("tail", 20, now_ms());
    let mut reporter = Reporter::open(&control.endpoint(), &control.join_token, "dp-1", "inst-a")
        .await
        .unwrap();
    reporter.send(1, sent.clone()).await.unwrap();

    async fn next(stream: &mut tonic::Streaming<pb::TailLogsResponse>) -> pb::TailLogsResponse {
        tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
    }
    let message = next(&mut all).await;
    assert_eq!(message.missed_records, 0);
    let want: Vec<&pb::RequestRecord> = sent.iter().filter(|r| r.attempt == 0).collect();
    assert_eq!(message.records.len(), want.len());
    assert_eq!(message.records[0].request_id, want[0].request_id);
    let message = next(&mut errors).await;
    assert_eq!(
        message.records.len(),
        sent.iter().filter(|r| r.error_class != 0).count()
    );
    assert!(message.records.iter().all(|r| r.error_class != 0));
    // The tails end at shutdown, and shutdown does not wait on them.
    control.stop().await;
    assert!(
        tokio::time::timeout(Duration::from_secs(5), all.message())
            .await
            .unwrap()
            .map_or(true, |m| m.is_none())
    );
}

#[tokio::test]
async fn retention_deletes_records_older_than_the_settings() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlPlaneHandle::start(dir.path()).await;
    let now = now_ms();
    let old = traffic("old", 20, now - 2 * DAY_MS);
    let new = traffic("new", 20, now);
    let mut reporter = Reporter::open(&control.endpoint(), &control.join_token, "dp-1", "inst-a")
        .await
        .unwrap();
    reporter.send(1, old.clone()).await.unwrap();
    reporter.send(2, new.clone()).await.unwrap();
    let mut logs = control.logs().await;
    assert_eq!(
        search_all(&mut logs, everything(), 1_000).await.len(),
        old.len() + new.len()
    );

    // A setting change runs the job at once: old requests go, old errors stay 30 days.
    let mut admin = control.admin().await;
    admin
        .set_setting(pb::SetSettingRequest {
            name: "request_log_retention_days".into(),
            value: "1".into(),
        })
        .await
        .unwrap();
    let old_errors = old.iter().filter(|r| r.error_class != 0).count();
    let want = new.len() + old_errors;
    eventually("old requests deleted", Duration::from_secs(10), || {
        let mut logs = logs.clone();
        async move { (search_all(&mut logs, everything(), 1_000).await.len() == want).then_some(()) }
    })
    .await;
    admin
        .set_setting(pb::SetSettingRequest {
            name: "error_log_retention_days".into(),
            value: "1".into(),
        })
        .await
        .unwrap();
    let want = new.len();
    eventually("old errors deleted", Duration::from_secs(10), || {
        let mut logs = logs.clone();
        async move { (search_all(&mut logs, everything(), 1_000).await.len() == want).then_some(()) }
    })
    .await;
    // And from the key index too.
    let page = search(
        &mut logs,
        pb::SearchLogsRequest {
            filter: Some(pb::LogFilter {
                key_id: KEY_A.into(),
                errors_only: true,
                attempts: true,
                ..Default::default()
            }),
            to_unix_ms: now - DAY_MS,
            ..Default::default()
        },
    )
    .await;
    assert!(page.records.is_empty());
    control.stop().await;
}

#[tokio::test]
async fn fulcrumctl_reads_logs_stats_and_key_usage() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlPlaneHandle::start(dir.path()).await;
    let now = now_ms();
    let sent = traffic("cli", 30, now);
    let mut reporter = Reporter::open(&control.endpoint(), &control.join_token, "dp-1", "inst-a")
        .await
        .unwrap();
    reporter.send(1, sent.clone()).await.unwrap();
    let endpoint = control.endpoint();
    let token = Some(control.admin_token.as_str());
    let cli = |args: &'static [&'static str]| run_fulcrumctl(&endpoint, token, args, None);

    let json = cli(&["-o", "json", "logs", "search", "--limit", "5"])
        .await
        .json();
    let records = json["records"].as_array().unwrap();
    assert_eq!(records.len(), 5);
    assert_eq!(records[0]["request_id"], "cli-0029");
    assert!(!json["next_cursor"].as_str().unwrap().is_empty());
    let errors = sent
        .iter()
        .filter(|r| r.attempt == 0 && r.key_id == KEY_A && r.error_class != 0)
        .count();
    let json = cli(&[
        "-o", "json", "logs", "search", "--key", KEY_A, "--errors", "--since", "1h",
    ])
    .await
    .json();
    assert_eq!(json["records"].as_array().unwrap().len(), errors);
    assert_eq!(
        json["records"][0]["error_class"], "client",
        "cli-0029 got 400"
    );
    assert_eq!(json["next_cursor"], "");
    let table = cli(&["logs", "search", "--status", "5xx", "--attempts"]).await;
    let text = table.ok();
    assert!(text.starts_with("TIME"), "{text}");
    assert!(text.contains("gpt-4o->gpt-4o-served") || text.contains("claude->claude-served"));
    assert!(text.lines().skip(1).all(|l| l.contains(" 500 ")), "{text}");

    let json = cli(&["-o", "json", "stats", "--by", "model", "--window", "24h"])
        .await
        .json();
    assert_eq!(json["total"]["requests"], 30);
    assert_eq!(json["series"].as_array().unwrap().len(), 25);
    let text = cli(&["stats", "--by", "key"]).await;
    assert!(text.ok().contains(KEY_B), "{text:?}");
    let total = text
        .ok()
        .lines()
        .find(|l| l.starts_with("(total)"))
        .unwrap();
    assert_eq!(total.split_whitespace().nth(1), Some("30"), "{text:?}");

    let json = cli(&["-o", "json", "keys", "usage", KEY_A]).await.json();
    let attempts = sent
        .iter()
        .filter(|r| r.attempt > 0 && r.key_id == KEY_A)
        .count();
    assert_eq!(json["total"]["requests"], attempts);
    assert_eq!(json["key_id"], KEY_A);
    let text = cli(&["keys", "usage", KEY_A, "--requests", "--window", "30d"]).await;
    assert!(text.ok().contains("client requests served"), "{text:?}");

    // Bad input: one line, non-zero exit, nothing sent.
    cli(&["logs", "search", "--status", "42"])
        .await
        .fails_with("invalid status");
    cli(&["stats", "--by", "provider", "--key", KEY_A])
        .await
        .fails_with("--key needs --by key");
    cli(&["logs", "search", "--cursor", "nope"])
        .await
        .fails_with("invalid cursor");
    run_fulcrumctl(&endpoint, None, &["stats"], None)
        .await
        .fails_with("FULCRUM_TOKEN");

    // `logs tail` prints records as they are stored.
    let mut child = tokio::process::Command::new(fulcrum_tests::fulcrumctl_path())
        .args([
            "--endpoint",
            &endpoint,
            "-o",
            "json",
            "logs",
            "tail",
            "--errors",
        ])
        .env("FULCRUM_TOKEN", &control.admin_token)
        .env("RUST_BACKTRACE", "0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    // Keep sending until the tail has subscribed and prints one.
    let mut sequence = 2;
    let line = loop {
        reporter
            .send(
                sequence,
                vec![record(now_ms(), "tailed", KEY_A, "gpt-4o", 429, 0)],
            )
            .await
            .unwrap();
        sequence += 1;
        if let Ok(line) = tokio::time::timeout(Duration::from_millis(500), lines.next_line()).await
        {
            break line.unwrap().unwrap();
        }
    };
    let value: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(value["request_id"], "tailed");
    assert_eq!(value["status"], 429);
    child.kill().await.unwrap();
    control.stop().await;
}

/// The issue's "done" check: 20,000 requests through two data planes while the control
/// plane is stopped and started twice. Every request the data planes answered has exactly
/// one stored record (and one per upstream call), counted by query, and the stats match
/// what was sent per model and per key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_thousand_requests_across_two_restarts_are_each_stored_once() {
    use bytes::Bytes;
    use fulcrum_tests::gateway::{Gateway, PROVIDER};
    use futures::StreamExt;
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    const KEYS: [&str; 2] = ["sk-delivery-a-0123456789", "sk-delivery-b-0123456789"];
    const MODELS: [&str; 2] = ["gpt-4o-mini", "gpt-4o"];
    // Large enough for every record made while the control plane is away or behind.
    let mut gw = Gateway::start(&KEYS, 2, &[("request_log_buffer", "200000")]).await;
    let client: Client<_, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut sent = [0u64; 2];
    // `per_plane` requests to each data plane, 32 at a time, the models alternating.
    let send = |addrs: Vec<std::net::SocketAddr>, token: String, per_plane: usize| {
        let client = client.clone();
        async move {
            let requests = addrs
                .into_iter()
                .flat_map(|addr| (0..per_plane).map(move |i| (addr, i % MODELS.len())));
            let bearer = format!("Bearer {token}");
            let answered: Vec<usize> = futures::stream::iter(requests)
                .map(|(addr, model)| {
                    let client = client.clone();
                    let bearer = bearer.clone();
                    async move {
                        let body = format!(
                            r#"{{"model":"{}","messages":[{{"role":"user","content":"hi"}}]}}"#,
                            MODELS[model]
                        );
                        let request =
                            hyper::Request::post(format!("http://{addr}/v1/chat/completions"))
                                .header("authorization", bearer)
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(body)))
                                .unwrap();
                        let response = client.request(request).await.unwrap();
                        assert_eq!(response.status(), 200);
                        response.into_body().collect().await.unwrap();
                        model
                    }
                })
                .buffer_unordered(32)
                .collect()
                .await;
            answered
        }
    };
    let addrs: Vec<_> = gw.planes.iter().map(|p| p.addr).collect();
    for model in send(addrs.clone(), gw.token.clone(), 2_000).await {
        sent[model] += 1;
    }
    // Twice: 8,000 requests while the control plane is away, then it comes back on the
    // same store and address.
    for _ in 0..2 {
        let Gateway {
            dir,
            control,
            upstream,
            planes,
            token,
        } = gw;
        let grpc = control.grpc_addr;
        control.stop().await;
        for model in send(addrs.clone(), token.clone(), 4_000).await {
            sent[model] += 1;
        }
        gw = Gateway {
            control: ControlPlaneHandle::start_with(dir.path(), 10_000, grpc).await,
            dir,
            upstream,
            planes,
            token,
        };
    }
    let total: u64 = sent.iter().sum();
    assert_eq!(total, 20_000);

    let mut logs = gw.control.logs().await;
    let stored = eventually("every record stored", Duration::from_secs(60), || {
        let mut logs = logs.clone();
        async move {
            let stored = search_all(&mut logs, pb::LogFilter::default(), 1_000).await;
            (stored.len() as u64 >= total).then_some(stored)
        }
    })
    .await;
    assert_eq!(
        stored.len() as u64,
        total,
        "one record per answered request"
    );
    let ids: HashSet<&str> = stored.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!(ids.len() as u64, total);
    let calls = gw.upstream.total_calls() as u64;
    let attempts = search_all(&mut logs, everything(), 1_000).await.len() as u64 - total;
    assert_eq!(attempts, calls, "one record per upstream call");

    let stats = |group_by: pb::StatsGroupBy, attempts: bool| pb::GetStatsRequest {
        window: pb::StatsWindow::LastHour as i32,
        group_by: group_by as i32,
        attempts,
        ..Default::default()
    };
    let by_model = logs
        .get_stats(stats(pb::StatsGroupBy::Model, false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_model.total.unwrap().requests, total);
    for (i, model) in MODELS.iter().enumerate() {
        let row = by_model.rows.iter().find(|r| r.group == *model).unwrap();
        assert_eq!(row.counts.as_ref().unwrap().requests, sent[i], "{model}");
        assert_eq!(row.counts.as_ref().unwrap().successes, sent[i]);
    }
    let by_key = logs
        .get_stats(stats(pb::StatsGroupBy::Key, true))
        .await
        .unwrap()
        .into_inner();
    for secret in KEYS {
        let id = fulcrum_proto::model::key_id(PROVIDER, secret);
        let row = by_key.rows.iter().find(|r| r.group == id).unwrap();
        assert_eq!(
            row.counts.as_ref().unwrap().requests,
            gw.upstream.calls(secret) as u64,
            "{id}"
        );
    }
    drop(logs);
    gw.stop().await;
}
