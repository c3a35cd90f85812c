//! Keys at scale and their way out: 100,000 keys imported through `fulcrumctl`, paged and
//! exported; outbound proxies (HTTP CONNECT and SOCKS5, on loopback) carrying exactly the
//! traffic of the keys assigned to them, before and after a control-plane restart; keys
//! pinned and unpinned in place with `keys set-proxy`; provider headers on every upstream
//! request.
#![allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]

use std::collections::{HashMap, HashSet};

use fulcrum_proto::model::{ProxyUrl, assign_proxy, key_id};
use fulcrum_proto::pb;
use fulcrum_tests::mock::http_request;
use fulcrum_tests::outbound::{ProxyKind, ProxyServer};
use fulcrum_tests::{ControlPlaneHandle, DataPlaneHandle, MockUpstream, run_fulcrumctl};

async fn ctl(control: &ControlPlaneHandle, args: &[&str]) -> fulcrum_tests::CliOutput {
    run_fulcrumctl(&control.endpoint(), Some(&control.admin_token), args, None).await
}

/// Sends one chat request with the client token; asserts a 200.
async fn chat(plane: &DataPlaneHandle, token: &str) {
    let auth = format!("Bearer {token}");
    let response = http_request(
        plane.addr,
        "POST",
        "/v1/chat/completions",
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(response.status, 200, "{response:?}");
}

/// Bytes per key the data plane reports for its key structures.
async fn bytes_per_key(plane: &DataPlaneHandle) -> f64 {
    let metrics = plane.metrics().await;
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    };
    let bytes = value("fulcrum_key_pool_bytes");
    let keys = value("fulcrum_keys{");
    assert!(bytes > 0.0 && keys > 0.0, "{metrics}");
    bytes / keys
}

#[tokio::test]
async fn proxies_carry_their_keys_traffic_and_keep_it_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlPlaneHandle::start(dir.path()).await;
    let upstream = MockUpstream::start().await;
    let tunnel = ProxyServer::start(ProxyKind::HttpConnect, Some(("tun", "tunnel-pass-1"))).await;
    let socks = ProxyServer::start(ProxyKind::Socks5, Some(("sox", "socks-pass-2"))).await;
    let pinned = ProxyServer::start(ProxyKind::HttpConnect, None).await;

    let out = ctl(
        &control,
        &[
            "providers",
            "add",
            "up",
            "--type",
            "openai",
            "--base-url",
            &upstream.openai_base_url(),
            "--proxy",
            &tunnel.url(),
            "--proxy",
            &socks.url(),
            "--header",
            "OpenAI-Organization: org-test",
            "--header",
            "X-Tenant-Token: tenant-secret-123456",
        ],
    )
    .await;
    let text = out.ok();
    for secret in ["tunnel-pass-1", "socks-pass-2", "tenant-secret-123456"] {
        assert!(!text.contains(secret), "{secret} printed: {text}");
    }
    assert!(text.contains("tun:***@"), "{text}");
    assert!(text.contains("openai-organization: org-test"), "{text}");
    // Refused before anything is stored: a credential header, a bad proxy.
    ctl(
        &control,
        &["providers", "update", "up", "--header", "x-api-key: nope"],
    )
    .await
    .fails_with("reserved");
    ctl(
        &control,
        &["providers", "update", "up", "--proxy", "https://h:1"],
    )
    .await
    .fails_with("scheme must be http or socks5");

    let secrets: Vec<String> = (0..30)
        .map(|i| format!("sk-proxied-{i:04}-abcdefgh"))
        .collect();
    let file = dir.path().join("keys.txt");
    std::fs::write(&file, secrets.join("\n")).unwrap();
    ctl(
        &control,
        &[
            "keys",
            "add",
            "--provider",
            "up",
            "--file",
            file.to_str().unwrap(),
        ],
    )
    .await
    .ok();
    let pinned_secret = "sk-pinned-0001-abcdefgh";
    ctl(
        &control,
        &[
            "keys",
            "add",
            "--provider",
            "up",
            "--proxy",
            &pinned.url(),
            pinned_secret,
        ],
    )
    .await
    .ok();

    // Where each key must go, by the shared assignment function.
    let provider_proxies = [
        ProxyUrl::parse(&tunnel.url()).unwrap(),
        ProxyUrl::parse(&socks.url()).unwrap(),
    ];
    let mut expected: HashMap<String, &ProxyServer> = HashMap::new();
    for secret in &secrets {
        let chosen = assign_proxy(&key_id("up", secret), &provider_proxies).unwrap();
        let server = if *chosen == provider_proxies[0] {
            &tunnel
        } else {
            &socks
        };
        expected.insert(secret.clone(), server);
    }
    expected.insert(pinned_secret.to_string(), &pinned);
    let to_tunnel = expected.values().filter(|s| s.addr == tunnel.addr).count();
    assert!(
        (5..=25).contains(&to_tunnel),
        "30 keys over 2 proxies: {to_tunnel} on one"
    );

    let summary = ctl(&control, &["-o", "json", "providers", "get", "up"])
        .await
        .json();
    let counts = summary["proxy_key_counts"].as_array().unwrap().clone();
    assert_eq!(counts.len(), 3, "{summary}");
    assert_eq!(counts[0]["assigned"], to_tunnel as u64, "{summary}");
    assert_eq!(counts[1]["assigned"], (30 - to_tunnel) as u64, "{summary}");
    assert_eq!(counts[2]["pinned"], 1, "{summary}");
    assert!(!summary.to_string().contains("socks-pass-2"), "{summary}");

    let token = control.client_token("app").await;

    // Every key's traffic went through its proxy and no other; run after each round.
    let check = |round: &str| {
        let all = [&tunnel, &socks, &pinned];
        for (secret, server) in &expected {
            let needle = format!("authorization: Bearer {secret}\r\n");
            let calls = upstream.calls(secret);
            assert!(calls > 0, "{round}: {secret} never used");
            assert_eq!(
                server.sent_count(&needle),
                calls,
                "{round}: {secret} did not go through {:?} each time",
                server.kind
            );
            for other in all.iter().filter(|o| o.addr != server.addr) {
                assert_eq!(other.sent_count(&needle), 0, "{round}: {secret} leaked");
            }
        }
        let target = upstream.addr().to_string();
        for server in all {
            assert!(
                server.tunnels_to(&target) > 0,
                "{round}: {:?} unused",
                server.kind
            );
            assert_eq!(server.refused(), 0, "{round}: credentials refused");
        }
    };

    let plane = DataPlaneHandle::start(&control.endpoint(), &control.join_token, "dp-1").await;
    plane.wait_for_revision(control.store().revision()).await;
    for _ in 0..(2 * expected.len()) {
        chat(&plane, &token).await;
    }
    check("first run");
    for request in upstream.requests() {
        assert_eq!(request.header("openai-organization"), Some("org-test"));
        assert_eq!(
            request.header("x-tenant-token"),
            Some("tenant-secret-123456")
        );
        assert!(
            request
                .header("authorization")
                .unwrap()
                .starts_with("Bearer sk-")
        );
    }
    let per_key = bytes_per_key(&plane).await;
    assert!(per_key < 1024.0, "{per_key} bytes per key");

    // A restart changes nothing about the assignment.
    plane.stop().await;
    control.stop().await;
    let control = ControlPlaneHandle::start(dir.path()).await;
    let again = ctl(&control, &["-o", "json", "providers", "get", "up"])
        .await
        .json();
    assert_eq!(again["proxy_key_counts"], summary["proxy_key_counts"]);
    let plane = DataPlaneHandle::start(&control.endpoint(), &control.join_token, "dp-2").await;
    plane.wait_for_revision(control.store().revision()).await;
    for _ in 0..(2 * expected.len()) {
        chat(&plane, &token).await;
    }
    check("after restart");

    // Without proxies every key goes direct; pinned keys keep theirs.
    ctl(&control, &["providers", "update", "up", "--no-proxies"])
        .await
        .ok();
    plane.wait_for_revision(control.store().revision()).await;
    let before =
        tunnel.sent_count("authorization: Bearer ") + socks.sent_count("authorization: Bearer ");
    for _ in 0..expected.len() {
        chat(&plane, &token).await;
    }
    let after =
        tunnel.sent_count("authorization: Bearer ") + socks.sent_count("authorization: Bearer ");
    assert_eq!(before, after, "traffic still went through removed proxies");
    plane.stop().await;
    control.stop().await;
}

#[tokio::test]
async fn a_wrong_proxy_password_fails_the_attempt_without_leaking_it() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlPlaneHandle::start(dir.path()).await;
    let upstream = MockUpstream::start().await;
    let proxy = ProxyServer::start(ProxyKind::Socks5, Some(("u", "right-pass"))).await;
    let wrong = format!("socks5://u:wrong-pass@{}", proxy.addr);
    ctl(
        &control,
        &[
            "providers",
            "add",
            "up",
            "--type",
            "openai",
            "--base-url",
            &upstream.openai_base_url(),
            "--proxy",
            &wrong,
        ],
    )
    .await
    .ok();
    ctl(
        &control,
        &["keys", "add", "--provider", "up", "sk-only-key-000001"],
    )
    .await
    .ok();
    let token = control.client_token("app").await;
    let plane = DataPlaneHandle::start(&control.endpoint(), &control.join_token, "dp-1").await;
    plane.wait_for_revision(control.store().revision()).await;
    let auth = format!("Bearer {token}");
    let response = http_request(
        plane.addr,
        "POST",
        "/v1/chat/completions",
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert!(response.status >= 500, "{response:?}");
    let body = String::from_utf8_lossy(&response.body).into_owned();
    assert!(!body.contains("wrong-pass"), "{body}");
    assert!(proxy.refused() >= 1);
    assert_eq!(upstream.total_calls(), 0);
    plane.stop().await;
    control.stop().await;
}

/// Gemini-shaped keys, unique per index.
fn bulk_secret(i: usize) -> String {
    format!(
        "AIzaSy{i:08}{:025x}",
        (i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    )
}

#[tokio::test]
async fn hundred_thousand_keys_import_page_and_export() {
    const KEYS: usize = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let control = ControlPlaneHandle::start(dir.path()).await;
    let plane = DataPlaneHandle::start(&control.endpoint(), &control.join_token, "dp-1").await;
    ctl(
        &control,
        &[
            "providers",
            "add",
            "bulk",
            "--type",
            "gemini",
            "--base-url",
            "http://127.0.0.1:9",
        ],
    )
    .await
    .ok();
    let secrets: Vec<String> = (0..KEYS).map(bulk_secret).collect();
    let mut text = String::from("# exported from the old gateway\n");
    for (i, secret) in secrets.iter().enumerate() {
        text.push_str(secret);
        text.push('\n');
        if i == 500 {
            text.push_str("not a key\n");
        }
    }
    let file = dir.path().join("keys.txt");
    std::fs::write(&file, &text).unwrap();

    let out = ctl(
        &control,
        &[
            "keys",
            "add",
            "--provider",
            "bulk",
            "--file",
            file.to_str().unwrap(),
        ],
    )
    .await;
    assert!(
        out.ok()
            .starts_with("added 100000, duplicates 0, invalid 1, skipped 1"),
        "{out:?}"
    );
    // The invalid line is named by its place in the file, and only it; the one other
    // line says the added keys are being probed (validation is on by default).
    assert!(out.stderr.contains("line 503: invalid"), "{out:?}");
    assert!(
        out.stderr.contains("probing the 100000 added keys now"),
        "{out:?}"
    );
    assert_eq!(out.stderr.lines().count(), 2, "{out:?}");

    // A connected data plane holds every key.
    plane.wait_for_revision(control.store().revision()).await;
    let config = plane.runtime().load().unwrap();
    assert_eq!(config.keys.of_provider("bulk").len(), KEYS);
    let per_key = bytes_per_key(&plane).await;
    assert!(per_key < 1024.0, "{per_key} bytes per key");
    drop(config);

    // Paging walks every key exactly once, in id order.
    let mut admin = control.admin().await;
    let mut seen = HashSet::new();
    let mut last = String::new();
    let mut page_token = String::new();
    let mut pages = 0;
    loop {
        let page = admin
            .list_keys(pb::ListKeysRequest {
                provider: "bulk".into(),
                page_size: 7_777,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        for key in &page.keys {
            assert!(key.id > last, "ids out of order");
            assert!(key.secret.is_empty());
            last.clone_from(&key.id);
            assert!(seen.insert(key.id.clone()), "{} twice", key.id);
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(seen.len(), KEYS);
    assert_eq!(pages, KEYS.div_ceil(7_777));
    let listed = ctl(
        &control,
        &["-o", "json", "keys", "list", "--provider", "bulk", "--all"],
    )
    .await
    .json();
    assert_eq!(listed["keys"].as_array().unwrap().len(), KEYS);

    // Export: masked by default, whole with --reveal, and the revealed form goes back in.
    let masked = ctl(&control, &["keys", "export", "--provider", "bulk"]).await;
    let masked_text = masked.ok();
    assert_eq!(masked_text.lines().count(), KEYS + 1);
    assert!(masked_text.starts_with("# fulcrumctl keys export: 100000 keys"));
    for secret in secrets.iter().step_by(997) {
        assert!(!masked_text.contains(secret.as_str()), "{secret} printed");
    }
    assert!(masked.stderr.contains("--reveal"), "{masked:?}");

    let revealed = ctl(
        &control,
        &["keys", "export", "--provider", "bulk", "--reveal"],
    )
    .await;
    let revealed_keys: HashSet<&str> = revealed
        .ok()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect();
    let all: HashSet<&str> = secrets.iter().map(String::as_str).collect();
    assert_eq!(revealed_keys, all);
    assert!(revealed.stderr.contains("in full"), "{revealed:?}");

    let again = dir.path().join("revealed.txt");
    std::fs::write(&again, &revealed.stdout).unwrap();
    let before = control.store().revision();
    let out = ctl(
        &control,
        &[
            "keys",
            "add",
            "--provider",
            "bulk",
            "--file",
            again.to_str().unwrap(),
        ],
    )
    .await;
    assert!(
        out.ok()
            .starts_with("added 0, duplicates 100000, invalid 0, skipped 1"),
        "{out:?}"
    );
    assert!(
        out.ok().contains("... and 99980 more duplicates"),
        "{out:?}"
    );
    assert_eq!(control.store().revision(), before, "nothing was written");

    // Without the admin token there is nothing to export.
    let refused = run_fulcrumctl(
        &control.endpoint(),
        Some("fca_wrong"),
        &["keys", "export", "--reveal"],
        None,
    )
    .await;
    refused.fails_with("refused the admin token");
    assert!(refused.stdout.is_empty());

    plane.stop().await;
    control.stop().await;
}

#[tokio::test]
async fn export_json_carries_state_and_pinned_proxy_masked() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlPlaneHandle::start(dir.path()).await;
    ctl(&control, &["providers", "add", "p", "--type", "mock"])
        .await
        .ok();
    ctl(
        &control,
        &[
            "keys",
            "add",
            "--provider",
            "p",
            "--proxy",
            "http://me:pinned-pass@127.0.0.1:3128",
            "sk-json-export-0001",
        ],
    )
    .await
    .ok();
    let out = ctl(&control, &["-o", "json", "keys", "export"])
        .await
        .json();
    let key = &out["keys"][0];
    assert_eq!(out["revealed"], false);
    assert_eq!(key["proxy"], "http://me:***@127.0.0.1:3128", "{out}");
    assert_eq!(key["state"], "active");
    assert!(key.get("secret").is_none(), "{out}");
    let out = ctl(&control, &["-o", "json", "keys", "export", "--reveal"])
        .await
        .json();
    assert_eq!(out["keys"][0]["secret"], "sk-json-export-0001");
    assert_eq!(
        out["keys"][0]["proxy"],
        "http://me:pinned-pass@127.0.0.1:3128"
    );
    let listed = ctl(&control, &["-o", "json", "keys", "list"]).await.json();
    assert_eq!(listed["keys"][0]["proxy"], "http://me:***@127.0.0.1:3128");
    // Filters: an unknown provider is an error, a state with no keys an empty export.
    ctl(&control, &["keys", "export", "--provider", "nope"])
        .await
        .fails_with("not found");
    let none = ctl(&control, &["keys", "export", "--state", "disabled"]).await;
    assert_eq!(none.ok().lines().count(), 1, "{none:?}");
    control.stop().await;
}

/// Each key's (upstream calls, requests through `proxy`) now, by secret.
fn traffic(
    upstream: &MockUpstream,
    proxy: &ProxyServer,
    secrets: &[&str],
) -> HashMap<String, (usize, usize)> {
    secrets
        .iter()
        .map(|secret| {
            let needle = format!("authorization: Bearer {secret}\r\n");
            (
                secret.to_string(),
                (upstream.calls(secret), proxy.sent_count(&needle)),
            )
        })
        .collect()
}

#[tokio::test]
async fn set_proxy_pins_and_unpins_keys_in_one_revision_each() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlPlaneHandle::start(dir.path()).await;
    let upstream = MockUpstream::start().await;
    let proxy = ProxyServer::start(ProxyKind::Socks5, Some(("pin", "pin-pass-3"))).await;
    // No provider proxies: an unpinned key goes direct.
    ctl(
        &control,
        &[
            "providers",
            "add",
            "up",
            "--type",
            "openai",
            "--base-url",
            &upstream.openai_base_url(),
        ],
    )
    .await
    .ok();
    let secrets = [
        "sk-setproxy-a-abcdefgh",
        "sk-setproxy-b-abcdefgh",
        "sk-setproxy-c-abcdefgh",
    ];
    // No probes: every upstream call in this test is a client request through the plane.
    let mut add = vec!["keys", "add", "--provider", "up", "--no-validate"];
    add.extend(secrets);
    ctl(&control, &add).await.ok();
    let [a, b, c] = secrets.map(|s| key_id("up", s));
    let masked = format!("socks5://pin:***@{}", proxy.addr);
    let token = control.client_token("app").await;
    let plane = DataPlaneHandle::start(&control.endpoint(), &control.join_token, "dp-1").await;
    plane.wait_for_revision(control.store().revision()).await;
    let listed_proxies = || async {
        let listed = ctl(&control, &["-o", "json", "keys", "list"]).await.json();
        listed["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| {
                (
                    k["id"].as_str().unwrap().to_string(),
                    k["proxy"].as_str().unwrap().to_string(),
                )
            })
            .collect::<HashMap<String, String>>()
    };

    // Pin two keys: one revision, one change-log entry naming both.
    let before = control.store().revision();
    let out = ctl(
        &control,
        &["keys", "set-proxy", &a, &b, "--proxy", &proxy.url()],
    )
    .await;
    let pinned_at = before + 1;
    assert_eq!(
        out.ok().trim(),
        format!("pinned 2 keys to {masked} (revision {pinned_at})")
    );
    assert!(!out.stderr.contains("pin-pass-3"), "{out:?}");
    assert_eq!(control.store().revision(), pinned_at);
    let entries = control
        .store()
        .changes_since(before, pinned_at)
        .unwrap()
        .unwrap();
    let mut changed: Vec<&str> = entries[0].changed.iter().map(|r| r.name.as_str()).collect();
    changed.sort_unstable();
    let mut expected = vec![a.as_str(), b.as_str()];
    expected.sort_unstable();
    assert_eq!(changed, expected);

    // Shown masked, by `keys list` and `keys export`; the third key stays unpinned.
    let proxies = listed_proxies().await;
    assert_eq!(proxies[&a], masked);
    assert_eq!(proxies[&b], masked);
    assert_eq!(proxies[&c], "");
    let exported = ctl(&control, &["-o", "json", "keys", "export"]).await;
    assert!(!exported.stdout.contains("pin-pass-3"), "{exported:?}");
    let exported = exported.json();
    let pins: Vec<&str> = exported["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["proxy"].as_str().filter(|p| !p.is_empty()))
        .collect();
    assert_eq!(pins, vec![masked.as_str(); 2], "{exported}");

    // The data plane sends the pinned keys' traffic through the proxy, the other direct.
    plane.wait_for_revision(pinned_at).await;
    let start = traffic(&upstream, &proxy, &secrets);
    for _ in 0..9 {
        chat(&plane, &token).await;
    }
    let now = traffic(&upstream, &proxy, &secrets);
    for secret in &secrets[..2] {
        let calls = now[*secret].0 - start[*secret].0;
        assert!(calls > 0, "{secret} never used");
        assert_eq!(
            now[*secret].1 - start[*secret].1,
            calls,
            "{secret} did not go through the proxy each time"
        );
    }
    assert!(now[secrets[2]].0 > start[secrets[2]].0, "third key unused");
    assert_eq!(
        now[secrets[2]].1, 0,
        "the unpinned key went through the proxy"
    );
    assert!(proxy.tunnels_to(&upstream.addr().to_string()) > 0);
    assert_eq!(proxy.refused(), 0, "credentials refused");

    // Pinning again to the same proxy changes nothing and bumps no revision.
    let again = ctl(
        &control,
        &[
            "-o",
            "json",
            "keys",
            "set-proxy",
            &a,
            "--proxy",
            &proxy.url(),
        ],
    )
    .await
    .json();
    assert_eq!(again["updated"], 0, "{again}");
    assert_eq!(again["revision"], pinned_at, "{again}");
    assert_eq!(again["proxy"], masked.as_str(), "{again}");

    // A bad URL: refused with its password masked, nothing stored. The CLI checks it
    // before calling; the control plane checks it again for other clients.
    let bad = ctl(
        &control,
        &["keys", "set-proxy", &c, "--proxy", "ftp://u:hunter2@h:1"],
    )
    .await;
    bad.fails_with("scheme must be http or socks5");
    assert!(bad.stderr.contains("u:***@h:1"), "{bad:?}");
    assert!(!bad.stderr.contains("hunter2"), "{bad:?}");
    let status = control
        .admin()
        .await
        .set_key_proxy(pb::SetKeyProxyRequest {
            ids: vec![c.clone()],
            proxy: "socks5://u:hunter2@h:notaport".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("u:***@h:notaport"), "{status:?}");
    assert!(!status.message().contains("hunter2"), "{status:?}");

    // An unknown id among known ones: named, and none of them changes.
    let ghost = "ffffffffffffffff";
    ctl(&control, &["keys", "set-proxy", &a, ghost, "--direct"])
        .await
        .fails_with(&format!("key \"{ghost}\" not found"));
    assert_eq!(control.store().revision(), pinned_at, "a failed call wrote");
    assert_eq!(listed_proxies().await, proxies);

    // Unpin: the keys go direct again, in one more revision.
    let out = ctl(&control, &["keys", "set-proxy", &a, &b, "--direct"]).await;
    let unpinned_at = pinned_at + 1;
    assert_eq!(
        out.ok().trim(),
        format!("unpinned 2 keys (revision {unpinned_at})")
    );
    assert!(listed_proxies().await.values().all(String::is_empty));
    plane.wait_for_revision(unpinned_at).await;
    let start = traffic(&upstream, &proxy, &secrets);
    let through_proxy = proxy.sent_count("authorization: Bearer ");
    for _ in 0..9 {
        chat(&plane, &token).await;
    }
    let now = traffic(&upstream, &proxy, &secrets);
    for secret in &secrets {
        assert!(now[*secret].0 > start[*secret].0, "{secret} unused");
    }
    assert_eq!(
        proxy.sent_count("authorization: Bearer "),
        through_proxy,
        "traffic still went through the unpinned proxy"
    );
    plane.stop().await;
    control.stop().await;
}
