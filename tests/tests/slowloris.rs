//! Slow and numerous clients cannot hold the data plane: 500 connections that trickle a
//! request head a byte at a time are closed after the header-read timeout while normal
//! traffic keeps being answered; connections past the limit are closed on arrival; TLS
//! clients that never finish the handshake are closed too.
#![allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fulcrum_listen::http::ConnectionStats;
use fulcrum_listen::tls::ALPN_HTTP;
use fulcrum_listen::{HttpLimits, ServerTls, ServerTlsFiles};
use fulcrum_proxy::DataPlane;
use fulcrum_tests::DataPlaneHandle;
use fulcrum_tests::certs::{TestCa, https_get};
use fulcrum_tests::gateway::Gateway;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Barrier;

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}"#;

/// Short, so that the test takes seconds; production defaults to 10 s.
const HEADER_READ_TIMEOUT: Duration = Duration::from_millis(1500);

/// A gateway whose only data plane has `limits`; returns it with that plane's counters.
async fn gateway(limits: HttpLimits, tls: Option<ServerTls>) -> (Gateway, Arc<ConnectionStats>) {
    let mut gw = Gateway::start(&["sk-slowloris-0123456789"], 0, &[]).await;
    let mut stats = None;
    let plane = DataPlaneHandle::start_configured(
        &gw.control.endpoint(),
        &gw.control.join_token,
        "dp-limited",
        |dp: DataPlane| {
            stats = Some(dp.connections());
            let dp = dp.with_limits(limits);
            match tls {
                Some(tls) => dp.with_tls(tls, Duration::from_secs(5)),
                None => dp,
            }
        },
    )
    .await;
    gw.planes.push(plane);
    gw.sync().await;
    (gw, stats.unwrap())
}

/// How a slow client's connection ended.
struct Ended {
    /// From connecting until the server closed it.
    after: Duration,
    /// What the server sent before closing (nothing, or a 408).
    answer: Vec<u8>,
}

/// Connects, waits at `start`, then sends a request head one byte every `drip` without
/// ever finishing it, until the server closes the connection (or `give_up` passes).
async fn slow_client(
    addr: SocketAddr,
    start: Arc<Barrier>,
    drip: Duration,
    give_up: Duration,
) -> Ended {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    start.wait().await;
    let began = Instant::now();
    let head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nX-Padding: ";
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    let mut sent = 0usize;
    loop {
        assert!(
            began.elapsed() < give_up,
            "a slow client was held for {give_up:?}"
        );
        // Past the request line, keep padding the header value forever.
        let byte = head.get(sent).copied().unwrap_or(b'a');
        if tcp.write_all(&[byte]).await.is_err() {
            return Ended {
                after: began.elapsed(),
                answer,
            };
        }
        sent += 1;
        match tokio::time::timeout(drip, tcp.read(&mut buf)).await {
            Err(_) => {}
            Ok(Ok(0) | Err(_)) => {
                return Ended {
                    after: began.elapsed(),
                    answer,
                };
            }
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_slow_clients_do_not_starve_normal_traffic() {
    const SLOW: usize = 500;
    // Longer than in the other tests, so that "answered within half the timeout" still
    // tells a served request from one that waited for the slow clients to be dropped, on
    // a machine busy with builds.
    const TIMEOUT: Duration = Duration::from_secs(4);
    let limits = HttpLimits {
        header_read_timeout: TIMEOUT,
        ..HttpLimits::default()
    };
    let (gw, _) = gateway(limits, None).await;
    let addr = gw.planes[0].addr;

    let start = Arc::new(Barrier::new(SLOW + 1));
    let slow: Vec<_> = (0..SLOW)
        .map(|_| {
            tokio::spawn(slow_client(
                addr,
                Arc::clone(&start),
                Duration::from_millis(200),
                Duration::from_secs(15),
            ))
        })
        .collect();
    start.wait().await;
    let began = Instant::now();

    // While all 500 hold their connections, normal requests are answered, each quickly.
    let mut answered = 0;
    let mut slowest = Duration::ZERO;
    while began.elapsed() < TIMEOUT.mul_f64(0.75) {
        let sent = Instant::now();
        let response = gw.post(0, "/v1/chat/completions", CHAT).await;
        assert_eq!(response.status, 200, "{}", response.text());
        slowest = slowest.max(sent.elapsed());
        answered += 1;
    }
    eprintln!(
        "with {SLOW} slow clients connected: {answered} requests answered, slowest {slowest:?}"
    );
    assert!(
        answered >= 5,
        "only {answered} requests answered while the slow clients held on"
    );
    assert!(
        slowest < TIMEOUT / 2,
        "a normal request took {slowest:?} while 500 slow clients were connected"
    );

    // Every slow client is closed by the server once the header-read timeout passes, and
    // none before it.
    let (mut first_closed, mut last_closed) = (Duration::MAX, Duration::ZERO);
    for task in slow {
        let ended = task.await.unwrap();
        first_closed = first_closed.min(ended.after);
        last_closed = last_closed.max(ended.after);
        assert!(
            ended.after >= TIMEOUT.mul_f64(0.8),
            "closed after {:?}, before the header-read timeout",
            ended.after
        );
        assert!(
            ended.after < TIMEOUT + Duration::from_secs(4),
            "closed only after {:?}",
            ended.after
        );
        let answer = String::from_utf8_lossy(&ended.answer);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "a slow client got {answer:?}"
        );
    }
    eprintln!("slow clients closed between {first_closed:?} and {last_closed:?}");
    // And the listener is as good as new.
    assert_eq!(gw.post(0, "/v1/chat/completions", CHAT).await.status, 200);
    gw.stop().await;
}

#[tokio::test]
async fn connections_past_the_limit_are_closed_on_arrival() {
    const LIMIT: usize = 20;
    let limits = HttpLimits {
        max_connections: LIMIT,
        header_read_timeout: HEADER_READ_TIMEOUT,
        ..HttpLimits::default()
    };
    let (gw, stats) = gateway(limits, None).await;
    let addr = gw.planes[0].addr;

    // Fill every slot with a connection that has sent part of a request head.
    let mut held = Vec::new();
    for _ in 0..LIMIT {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        held.push(tcp);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    // One more is closed at once, without an answer.
    let mut extra = TcpStream::connect(addr).await.unwrap();
    let _ = extra
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_millis(500), extra.read_to_end(&mut answer))
        .await
        .expect("the connection past the limit is closed at once");
    assert!(read.is_err() || answer.is_empty(), "{answer:?}");
    assert!(stats.refused.load(Ordering::Relaxed) >= 1);
    // Operators see it on /metrics (asked once the held connections are gone).
    let refused = stats.refused.load(Ordering::Relaxed);

    // The held connections time out, their slots free up, and traffic flows again.
    let freed = Instant::now();
    for mut tcp in held {
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut rest))
            .await
            .expect("a held connection is closed after the header-read timeout");
    }
    assert!(freed.elapsed() < HEADER_READ_TIMEOUT + Duration::from_secs(2));
    assert_eq!(gw.post(0, "/v1/chat/completions", CHAT).await.status, 200);
    let metrics = gw.planes[0].metrics().await;
    assert!(
        metrics.contains(&format!("fulcrum_connections_refused_total {refused}")),
        "{metrics}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn tls_clients_that_never_finish_the_handshake_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("slowloris ca");
    let files = ca.server("data-plane").write(dir.path(), "dp");
    let tls = ServerTls::load(
        ServerTlsFiles {
            cert: files.cert,
            key: files.key,
            client_ca: None,
        },
        ALPN_HTTP,
    )
    .unwrap();
    let limits = HttpLimits {
        header_read_timeout: HEADER_READ_TIMEOUT,
        ..HttpLimits::default()
    };
    let (gw, stats) = gateway(limits, Some(tls)).await;
    let addr = gw.planes[0].addr;

    // 50 connections: half send nothing, half the first bytes of a ClientHello.
    let mut silent = Vec::new();
    for i in 0..50 {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        if i % 2 == 1 {
            tcp.write_all(&[0x16, 0x03, 0x01, 0x02]).await.unwrap();
        }
        silent.push(tcp);
    }
    // Meanwhile TLS clients are served.
    let (status, _, _) = https_get(addr, &ca.pem(), "/readyz").await.unwrap();
    assert_eq!(status, 200);

    let began = Instant::now();
    for mut tcp in silent {
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut rest))
            .await
            .expect("a client stuck in the handshake is closed");
    }
    assert!(began.elapsed() < HEADER_READ_TIMEOUT + Duration::from_secs(2));
    assert!(stats.failed_handshakes.load(Ordering::Relaxed) >= 50);
    let (status, _, _) = https_get(addr, &ca.pem(), "/readyz").await.unwrap();
    assert_eq!(status, 200);
    gw.stop().await;
}
