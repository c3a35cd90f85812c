//! Request records and metrics from the data plane's side: every answer the data planes
//! give is recorded once and acknowledged by the control plane, across control-plane
//! restarts; a full buffer drops the oldest records and counts every one; `/metrics`
//! counts requests, keys, the config and the log buffer without a client token.
#![allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]

use std::net::SocketAddr;
use std::time::Duration;

use fulcrum_tests::gateway::Gateway;
use fulcrum_tests::mock::{Behaviour, RawResponse, http_request};
use fulcrum_tests::{ControlPlaneHandle, eventually};

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}"#;
const CHAT_STREAM: &str = r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hello"}]}"#;
const KEYS: [&str; 2] = ["sk-records-a-0123456789", "sk-records-b-0123456789"];

/// What a test sent and the records it must lead to.
#[derive(Debug, Default, Clone, Copy)]
struct Sent {
    /// Client requests per data plane, by status class 2xx and 4xx.
    ok: [u64; 2],
    unauthenticated: [u64; 2],
}

impl Sent {
    fn requests(&self) -> u64 {
        self.ok.iter().sum::<u64>() + self.unauthenticated.iter().sum::<u64>()
    }
}

/// `n` requests to data plane `plane` at `addr`, every third a stream, every fifth
/// without a token.
async fn traffic(addr: SocketAddr, token: &str, plane: usize, n: usize, sent: &mut Sent) {
    let auth = format!("Bearer {token}");
    for i in 0..n {
        if i % 5 == 4 {
            let response = http_request(
                addr,
                "POST",
                "/v1/chat/completions",
                &[("content-type", "application/json")],
                CHAT.as_bytes(),
            )
            .await;
            assert_eq!(response.status, 401, "{}", response.text());
            assert_request_id(&response);
            sent.unauthenticated[plane] += 1;
            continue;
        }
        let body = if i % 3 == 0 { CHAT_STREAM } else { CHAT };
        let response = http_request(
            addr,
            "POST",
            "/v1/chat/completions",
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            body.as_bytes(),
        )
        .await;
        assert_eq!(response.status, 200, "{}", response.text());
        assert!(response.complete);
        assert_request_id(&response);
        sent.ok[plane] += 1;
    }
}

fn assert_request_id(response: &RawResponse) {
    let id = response.header("x-request-id").unwrap_or_default();
    assert!(
        id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "x-request-id {id:?}"
    );
}

/// The value of the metric line that starts with `series ` (name and labels).
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

fn acked(gw: &Gateway) -> u64 {
    gw.planes
        .iter()
        .map(|p| p.telemetry().records_acked())
        .sum()
}

/// Waits until the data planes hold nothing and have `want` records acknowledged.
async fn wait_acked(gw: &Gateway, want: u64) {
    eventually(
        &format!("{want} records acknowledged"),
        Duration::from_secs(20),
        || async {
            let held: u64 = gw.planes.iter().map(|p| p.telemetry().depth()).sum();
            (held == 0 && acked(gw) >= want).then_some(())
        },
    )
    .await;
    assert_eq!(acked(gw), want, "acknowledged more records than were made");
}

/// Stops the control plane, sends `n` requests to each data plane while it is away, and
/// starts it again on the same store and address. Returns the records those requests made.
async fn traffic_while_away(gw: Gateway, n: usize, sent: &mut Sent) -> (Gateway, u64) {
    let Gateway {
        dir,
        control,
        upstream,
        planes,
        token,
    } = gw;
    let grpc = control.grpc_addr;
    control.stop().await;
    let requests = sent.requests();
    let calls = upstream.total_calls();
    for (i, plane) in planes.iter().enumerate() {
        traffic(plane.addr, &token, i, n, sent).await;
    }
    let made = sent.requests() - requests + (upstream.total_calls() - calls) as u64;
    let gw = Gateway {
        control: ControlPlaneHandle::start_with(dir.path(), 10_000, grpc).await,
        dir,
        upstream,
        planes,
        token,
    };
    (gw, made)
}

#[tokio::test]
async fn every_answer_is_recorded_once_across_control_plane_restarts() {
    let mut gw = Gateway::start(&KEYS, 2, &[("request_log_buffer", "200000")]).await;
    let mut sent = Sent::default();
    for (i, plane) in gw.planes.iter().enumerate() {
        traffic(plane.addr, &gw.token, i, 30, &mut sent).await;
    }
    // One record per client request, one per upstream call.
    let mut expected = sent.requests() + gw.upstream.total_calls() as u64;
    wait_acked(&gw, expected).await;

    // Twice: the control plane goes away while traffic flows, and comes back.
    for _ in 0..2 {
        let (back, made) = traffic_while_away(gw, 25, &mut sent).await;
        gw = back;
        expected += made;
        wait_acked(&gw, expected).await;
    }

    for (i, plane) in gw.planes.iter().enumerate() {
        assert_eq!(plane.telemetry().records_dropped(), 0);
        let text = plane.metrics().await;
        let requests = |provider: &str, class: &str| {
            metric(
                &text,
                &format!(
                    "fulcrum_requests_total{{protocol=\"openai\",provider=\"{provider}\",status_class=\"{class}\"}}"
                ),
            )
        };
        assert_eq!(requests("up", "2xx"), Some(sent.ok[i] as f64), "{text}");
        assert_eq!(
            requests("none", "4xx"),
            Some(sent.unauthenticated[i] as f64)
        );
        assert_eq!(
            metric(&text, "fulcrum_log_records_dropped_total"),
            Some(0.0)
        );
        assert_eq!(metric(&text, "fulcrum_log_buffer_depth"), Some(0.0));
        assert_eq!(
            metric(&text, "fulcrum_keys{provider=\"up\",state=\"active\"}"),
            Some(2.0)
        );
        let revision = plane.runtime().applied_revision();
        assert!(revision > 0);
        assert_eq!(
            metric(&text, "fulcrum_config_revision"),
            Some(revision as f64)
        );
        let attempts = metric(
            &text,
            "fulcrum_upstream_latency_seconds_count{provider=\"up\"}",
        )
        .unwrap();
        assert!(attempts >= sent.ok[i] as f64, "{attempts} attempts");
        assert_eq!(
            metric(&text, "fulcrum_proxy_overhead_seconds_count"),
            Some((sent.ok[i] + sent.unauthenticated[i]) as f64)
        );
        // No key and no client token anywhere.
        for key in KEYS {
            assert!(!text.contains(key));
        }
        assert!(!text.contains(&gw.token));
    }
    gw.stop().await;
}

#[tokio::test]
async fn failed_attempts_are_records_too() {
    let gw = Gateway::start(&KEYS, 1, &[]).await;
    // The first key fails once with a 500: the request it serves then takes two attempts.
    gw.upstream.script(
        KEYS[0],
        Behaviour::Sequence(vec![Behaviour::status(500), Behaviour::Ok]),
    );
    let mut sent = Sent::default();
    traffic(gw.planes[0].addr, &gw.token, 0, 5, &mut sent).await;
    assert_eq!((sent.ok[0], sent.unauthenticated[0]), (4, 1));
    let calls = gw.upstream.total_calls() as u64;
    assert_eq!(calls, 5, "the 500 was retried on the other key");
    wait_acked(&gw, sent.requests() + calls).await;
    let text = gw.planes[0].metrics().await;
    assert_eq!(
        metric(
            &text,
            "fulcrum_upstream_latency_seconds_count{provider=\"up\"}"
        ),
        Some(calls as f64)
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_full_buffer_drops_the_oldest_and_counts_exactly_what_is_missing() {
    let gw = Gateway::start(&KEYS[..1], 1, &[("request_log_buffer", "10")]).await;
    let mut sent = Sent::default();
    let (gw, made) = traffic_while_away(gw, 40, &mut sent).await;
    assert_eq!(made, 40 + 32, "40 answers, 32 upstream calls");
    // Back: the ten newest records arrive; everything else was dropped and counted.
    wait_acked(&gw, 10).await;
    let telemetry = gw.planes[0].telemetry();
    assert_eq!(telemetry.records_dropped(), made - 10);
    assert_eq!(
        telemetry.records_acked() + telemetry.records_dropped(),
        made
    );
    let text = gw.planes[0].metrics().await;
    assert_eq!(
        metric(&text, "fulcrum_log_records_dropped_total"),
        Some((made - 10) as f64)
    );
    gw.stop().await;
}

#[tokio::test]
async fn without_request_logging_only_errors_are_recorded_but_all_are_counted() {
    let gw = Gateway::start(&KEYS, 1, &[("request_logging", "false")]).await;
    let mut sent = Sent::default();
    traffic(gw.planes[0].addr, &gw.token, 0, 20, &mut sent).await;
    assert_eq!(sent.unauthenticated[0], 4);
    wait_acked(&gw, 4).await;
    let text = gw.planes[0].metrics().await;
    assert_eq!(
        metric(
            &text,
            "fulcrum_requests_total{protocol=\"openai\",provider=\"up\",status_class=\"2xx\"}"
        ),
        Some(16.0)
    );
    gw.stop().await;
}

#[tokio::test]
async fn metrics_need_no_client_token_and_count_keys_by_state() {
    let gw = Gateway::start(&KEYS, 1, &[]).await;
    let (status, text) = fulcrum_tests::http_get(gw.planes[0].addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(text.ends_with("# EOF\n"), "{text}");
    for state in [
        "active",
        "cooling",
        "exhausted",
        "failing",
        "invalid",
        "disabled",
    ] {
        let want = if state == "active" { 2.0 } else { 0.0 };
        assert_eq!(
            metric(
                &text,
                &format!("fulcrum_keys{{provider=\"up\",state=\"{state}\"}}")
            ),
            Some(want),
            "{state}"
        );
    }
    gw.stop().await;
}
