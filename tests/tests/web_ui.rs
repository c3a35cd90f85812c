//! The admin web UI end to end: a real control plane (sled on disk) with a data plane and a
//! mock upstream, driven over HTTP (sessions, cookie flags, CSRF, every route without a
//! session) and in headless Chromium (sign in, add keys by paste, watch states change,
//! disable a key, find an error in the logs, edit a route, screenshots of every page).
//!
//! The browser comes from Debian's `chromium` and `chromium-driver` packages
//! (`/usr/bin/chromium`, `/usr/bin/chromedriver`), driven by Python selenium from the
//! test venv (`tests/sdk/requirements.txt`), pointed at the system driver so that nothing
//! is downloaded. A missing browser fails the test: a skipped test is a defect.
#![allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]

use std::path::{Path, PathBuf};
use std::time::Duration;

use fulcrum_control::ui::{Access, ENDPOINTS, SESSION_COOKIE};
use fulcrum_proto::pb;
use fulcrum_tests::mock::{RawResponse, http_request};
use fulcrum_tests::{Behaviour, ControlPlaneHandle, DataPlaneHandle, MockUpstream, sdk};

const PROVIDER: &str = "openai";

struct Setup {
    control: ControlPlaneHandle,
    mock: MockUpstream,
    plane: DataPlaneHandle,
    client_token: String,
    _dir: tempfile::TempDir,
}

impl Setup {
    async fn start() -> Self {
        fulcrum_tests::init_tracing();
        let dir = tempfile::tempdir().unwrap();
        let control = ControlPlaneHandle::start(dir.path()).await;
        let mock = MockUpstream::start().await;
        let mut admin = control.admin().await;
        admin
            .create_provider(pb::CreateProviderRequest {
                name: PROVIDER.into(),
                r#type: pb::ProviderType::Openai as i32,
                base_url: mock.openai_base_url(),
                ..Default::default()
            })
            .await
            .unwrap();
        for (name, value) in [
            ("probe_backoff_base_ms", "100"),
            ("probe_backoff_max_ms", "400"),
            ("probe_idle_recheck_ms", "0"),
            ("probe_rate_per_minute", "6000000"),
        ] {
            admin
                .set_setting(pb::SetSettingRequest {
                    name: name.into(),
                    value: value.into(),
                })
                .await
                .unwrap();
        }
        let client_token = admin
            .create_client_token(pb::CreateClientTokenRequest { name: "app".into() })
            .await
            .unwrap()
            .into_inner()
            .token;
        let plane = DataPlaneHandle::start(&control.endpoint(), &control.join_token, "dp-0").await;
        Self {
            control,
            mock,
            plane,
            client_token,
            _dir: dir,
        }
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> RawResponse {
        http_request(self.control.http_addr, method, path, headers, body).await
    }

    /// Signs in over HTTP; returns the `Cookie` header value and the page's CSRF token.
    async fn sign_in(&self) -> (String, String) {
        let form = format!("token={}", self.control.admin_token);
        let response = self
            .request(
                "POST",
                "/ui/login",
                &[("content-type", "application/x-www-form-urlencoded")],
                form.as_bytes(),
            )
            .await;
        assert_eq!(response.status, 303, "{}", response.text());
        let set_cookie = response.header("set-cookie").unwrap().to_string();
        let pair = set_cookie.split(';').next().unwrap().trim().to_string();
        let page = self.request("GET", "/ui/", &[("cookie", &pair)], b"").await;
        assert_eq!(page.status, 200);
        let html = page.text();
        let csrf = html
            .split("name=\"csrf-token\" content=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap()
            .to_string();
        assert_eq!(csrf.len(), 64, "a random CSRF token in the page");
        (pair, csrf)
    }

    async fn stop(self) {
        self.plane.stop().await;
        self.control.stop().await;
        self.mock.shutdown().await;
    }
}

async fn retention(admin: &fulcrum_tests::control::AdminClient) -> String {
    admin
        .clone()
        .get_setting(pb::GetSettingRequest {
            name: "request_log_retention_days".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .setting
        .unwrap()
        .value
}

/// A concrete path for an endpoint's pattern.
fn concrete(path: &str) -> String {
    path.replace("{id}", "0123456789abcdef")
}

#[tokio::test]
async fn every_admin_route_needs_a_session_and_writes_need_the_csrf_token() {
    let setup = Setup::start().await;

    // Every route of the router (built from ENDPOINTS alone), without a session and with
    // a made-up one: pages redirect to the sign-in page, JSON calls and writes answer 401.
    let mut checked = 0;
    for endpoint in ENDPOINTS {
        let path = concrete(endpoint.path);
        let body: &[u8] = if endpoint.method == "POST" {
            b"{}"
        } else {
            b""
        };
        for cookie in [None, Some(format!("{SESSION_COOKIE}=00ff00ff"))] {
            let mut headers = vec![("content-type", "application/json")];
            if let Some(cookie) = &cookie {
                headers.push(("cookie", cookie));
            }
            let r = setup.request(endpoint.method, &path, &headers, body).await;
            match endpoint.access {
                Access::Public => {}
                Access::Page => {
                    assert_eq!(
                        r.status, 303,
                        "{} {path} without a session",
                        endpoint.method
                    );
                    assert_eq!(r.header("location"), Some("/ui/login"), "{path}");
                    checked += 1;
                }
                Access::Api => {
                    assert_eq!(
                        r.status, 401,
                        "{} {path} without a session",
                        endpoint.method
                    );
                    assert!(
                        r.json()["error"].as_str().unwrap().contains("sign in"),
                        "{path}: {}",
                        r.text()
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(
        checked >= 40,
        "only {checked} checks: is the route list empty?"
    );
    // The public routes carry no admin data.
    for path in ["/ui/login", "/ui/assets/app.js", "/ui/assets/app.css"] {
        let r = setup.request("GET", path, &[], b"").await;
        assert_eq!(r.status, 200, "{path}");
        assert!(r.header("content-security-policy").is_some(), "{path}");
    }
    // The other HTTP routes stay as they were.
    assert_eq!(setup.request("GET", "/healthz", &[], b"").await.status, 200);
    assert_eq!(setup.request("GET", "/metrics", &[], b"").await.status, 200);
    assert_eq!(setup.request("GET", "/nope", &[], b"").await.status, 404);
    assert_eq!(setup.request("GET", "/ui/nope", &[], b"").await.status, 404);

    // A wrong token, then a sign-in from another site, are refused.
    let wrong = setup
        .request(
            "POST",
            "/ui/login",
            &[("content-type", "application/x-www-form-urlencoded")],
            b"token=fca_wrong",
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.header("set-cookie").is_none());
    assert!(wrong.text().contains("invalid admin token"));
    let form = format!("token={}", setup.control.admin_token);
    let cross = setup
        .request(
            "POST",
            "/ui/login",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("origin", "http://evil.test"),
            ],
            form.as_bytes(),
        )
        .await;
    assert_eq!(cross.status, 403);
    assert!(cross.header("set-cookie").is_none());

    // The session cookie: random, never the token, HttpOnly, SameSite=Strict, expiring.
    let signed_in = setup
        .request(
            "POST",
            "/ui/login",
            &[("content-type", "application/x-www-form-urlencoded")],
            form.as_bytes(),
        )
        .await;
    assert_eq!(signed_in.status, 303);
    assert_eq!(signed_in.header("location"), Some("/ui/"));
    let set_cookie = signed_in.header("set-cookie").unwrap();
    let attributes: Vec<&str> = set_cookie.split(';').map(str::trim).collect();
    let value = attributes[0]
        .strip_prefix(&format!("{SESSION_COOKIE}="))
        .unwrap();
    assert_eq!(value.len(), 64);
    assert!(value.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(!set_cookie.contains(&setup.control.admin_token));
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age=43200"] {
        assert!(attributes.contains(&flag), "{flag} missing in {set_cookie}");
    }
    assert!(!attributes.contains(&"Secure"), "plain HTTP listener");

    let (cookie, csrf) = setup.sign_in().await;
    let json = [
        ("cookie", cookie.as_str()),
        ("content-type", "application/json"),
    ];
    let body = br#"{"name":"request_log_retention_days","value":"3"}"#;
    // A write without the CSRF token, with a wrong one, or from another origin: refused.
    let r = setup.request("POST", "/ui/api/settings", &json, body).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.json()["error"].as_str().unwrap().contains("x-csrf-token"));
    let mut with_wrong = json.to_vec();
    with_wrong.push(("x-csrf-token", "00"));
    assert_eq!(
        setup
            .request("POST", "/ui/api/settings", &with_wrong, body)
            .await
            .status,
        403
    );
    let mut cross_origin = json.to_vec();
    cross_origin.push(("x-csrf-token", &csrf));
    cross_origin.push(("origin", "http://evil.test"));
    assert_eq!(
        setup
            .request("POST", "/ui/api/settings", &cross_origin, body)
            .await
            .status,
        403
    );
    let mut cross_site = json.to_vec();
    cross_site.push(("x-csrf-token", &csrf));
    cross_site.push(("sec-fetch-site", "cross-site"));
    assert_eq!(
        setup
            .request("POST", "/ui/api/settings", &cross_site, body)
            .await
            .status,
        403
    );
    let admin = setup.control.admin().await;
    assert_ne!(
        retention(&admin).await,
        "3",
        "refused writes changed nothing"
    );

    // With the token the write lands in the store the gRPC API reads.
    let origin = format!("http://{}", setup.control.http_addr);
    let mut good = json.to_vec();
    good.push(("x-csrf-token", &csrf));
    good.push(("origin", &origin));
    let r = setup.request("POST", "/ui/api/settings", &good, body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(retention(&admin).await, "3");

    // Validation messages are the API's own, with a matching HTTP status.
    let bad = br#"{"name":"request_log_retention_days","value":"soon"}"#;
    let r = setup.request("POST", "/ui/api/settings", &good, bad).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let grpc = admin
        .clone()
        .set_setting(pb::SetSettingRequest {
            name: "request_log_retention_days".into(),
            value: "soon".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(r.json()["error"].as_str().unwrap(), grpc.message());
    assert_eq!(r.json()["code"], "invalid_argument");
    let r = setup
        .request(
            "POST",
            "/ui/api/routes",
            &good,
            br#"{"model_pattern":"gpt-*","targets":[{"provider":"nope"}]}"#,
        )
        .await;
    assert_eq!(r.status / 100, 4, "{}", r.text());
    assert!(
        r.json()["error"].as_str().unwrap().contains("nope"),
        "{}",
        r.text()
    );

    // Keys are listed by their masked secret only.
    let secret = "sk-ui-http-secret-000000000001";
    let add = format!(
        r#"{{"provider":"{PROVIDER}","text":"{secret}\n\n{secret}\nshort","validate":false}}"#
    );
    let r = setup
        .request("POST", "/ui/api/keys/add", &good, add.as_bytes())
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let added = r.json();
    let outcomes: Vec<&str> = added["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["added", "skipped", "duplicate", "invalid"]);
    assert!(!r.text().contains(secret), "the add answer shows no secret");
    let list = setup
        .request("GET", "/ui/api/keys?q=sk-ui", &[("cookie", &cookie)], b"")
        .await;
    assert_eq!(list.status, 200);
    let keys = list.json()["keys"].as_array().unwrap().clone();
    assert_eq!(keys.len(), 1, "{}", list.text());
    assert!(!list.text().contains(secret));
    assert_eq!(keys[0]["state"], "active");
    assert_eq!(list.json()["counts"]["active"], 1);

    // Bulk actions over a filter resolve the keys the same way the table finds them.
    let r = setup
        .request(
            "POST",
            "/ui/api/keys/action",
            &good,
            br#"{"action":"disable","filter":{"q":"sk-ui"},"reason":"bulk"}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["changed"], 1);
    let listed = admin
        .clone()
        .list_keys(pb::ListKeysRequest::default())
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, pb::KeyState::Disabled as i32);
    assert_eq!(listed[0].state_reason, "bulk");
    for bad in [
        r#"{"action":"enable"}"#,
        r#"{"action":"explode","ids":["0123456789abcdef"]}"#,
        r#"{"action":"enable","filter":{"state":"sleepy"}}"#,
    ] {
        let r = setup
            .request("POST", "/ui/api/keys/action", &good, bad.as_bytes())
            .await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert!(!r.json()["error"].as_str().unwrap().is_empty());
    }

    // Signing out ends the session for every later call.
    let r = setup.request("POST", "/ui/logout", &good, b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    let r = setup
        .request("GET", "/ui/api/keys", &[("cookie", &cookie)], b"")
        .await;
    assert_eq!(r.status, 401);
    let r = setup
        .request("GET", "/ui/keys", &[("cookie", &cookie)], b"")
        .await;
    assert_eq!(r.status, 303);
    setup.stop().await;
}

/// Where the screenshots go: `<target>/ui-screenshots`.
fn screenshot_dir() -> PathBuf {
    sdk::venv_dir().parent().map_or_else(
        || PathBuf::from("ui-screenshots"),
        |t| t.join("ui-screenshots"),
    )
}

async fn run_browser_script(python: &Path, args: &[&str]) -> serde_json::Value {
    let script = sdk::sdk_dir().join("web_ui.py");
    let mut command = tokio::process::Command::new(python);
    command
        .arg(&script)
        .args(args)
        // Selenium must use the driver given and never fetch one.
        .env("SE_OFFLINE", "true")
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(420), command.output())
        .await
        .expect("the browser script finished within 7 minutes")
        .expect("run the browser script");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser script failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("script printed no JSON ({e}): {stdout}\n{stderr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_walkthrough_in_headless_chromium() {
    for binary in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        assert!(
            Path::new(binary).exists(),
            "{binary} is missing: apt-get install -y chromium chromium-driver (.ci/run does)"
        );
    }
    let python = tokio::task::spawn_blocking(|| sdk::python_with(&["selenium"]))
        .await
        .unwrap();
    let setup = Setup::start().await;
    // The keys the browser pastes (tests/sdk/web_ui.py): one revoked, one always busy.
    setup
        .mock
        .script("sk-ui-revoked-000000000000000003", Behaviour::status(401));
    setup.mock.script(
        "sk-ui-busy-00000000000000000004",
        Behaviour::rate_limited("60"),
    );
    let shots = screenshot_dir();
    std::fs::create_dir_all(&shots).unwrap();

    let base = format!("http://{}", setup.control.http_addr);
    let plane = format!("http://{}", setup.plane.addr);
    let report = run_browser_script(
        &python,
        &[
            &base,
            &setup.control.admin_token,
            &plane,
            &setup.client_token,
            shots.to_str().unwrap(),
        ],
    )
    .await;

    // What the browser did is what the store now holds.
    let mut admin = setup.control.admin().await;
    let keys = admin
        .list_keys(pb::ListKeysRequest {
            provider: PROVIDER.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(keys.len(), 4, "four keys pasted: {keys:?}");
    let by_id = |id: &str| keys.iter().find(|k| k.id == id).unwrap().clone();
    let revoked_id = report["revoked_id"].as_str().unwrap();
    let disabled_id = report["disabled_id"].as_str().unwrap();
    assert_eq!(by_id(revoked_id).state, pb::KeyState::Invalid as i32);
    assert_eq!(by_id(disabled_id).state, pb::KeyState::Disabled as i32);
    let busy_id = report["busy_id"].as_str().unwrap();
    assert_eq!(by_id(busy_id).state, pb::KeyState::Cooling as i32);
    assert_eq!(
        report["paste_outcomes"],
        serde_json::json!([
            "added",
            "added",
            "added",
            "added",
            "duplicate",
            "skipped",
            "invalid"
        ])
    );
    assert_eq!(report["error_status"], "429");
    assert!(
        report["route_error"].as_str().unwrap().contains("nope"),
        "{report}"
    );
    // Every client request was served: the data plane failed over from the busy key.
    for status in report["chat_statuses"].as_array().unwrap() {
        assert_eq!(status, 200, "{report}");
    }
    let routes = admin
        .list_routes(pb::ListRoutesRequest {})
        .await
        .unwrap()
        .into_inner()
        .routes;
    let route = routes
        .iter()
        .find(|r| r.model_pattern == "ui-model-*")
        .expect("the route saved in the browser");
    assert_eq!(route.targets.len(), 1);
    assert_eq!(route.targets[0].model, "gpt-4o-mini", "the edited target");
    let provider = admin
        .get_provider(pb::GetProviderRequest {
            name: PROVIDER.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .provider
        .unwrap();
    assert_eq!(provider.weight, 3, "the weight edited in the browser");
    assert!(
        report["provider_error"]
            .as_str()
            .unwrap()
            .contains("bad name!"),
        "{report}"
    );
    // The edit reached the data plane.
    setup
        .plane
        .wait_for_revision(setup.control.store().revision())
        .await;
    let routed = http_request(
        setup.plane.addr,
        "POST",
        "/v1/chat/completions",
        &[
            ("authorization", &format!("Bearer {}", setup.client_token)),
            ("content-type", "application/json"),
        ],
        br#"{"model":"ui-model-x","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(routed.status, 200, "{}", routed.text());

    // Screenshots of every page at both widths.
    let shots_taken = report["screenshots"].as_array().unwrap();
    for page in [
        "login",
        "dashboard",
        "keys",
        "key-detail",
        "logs",
        "log-detail",
        "config",
        "planes",
    ] {
        for width in ["desktop", "phone"] {
            let file = shots.join(format!("{page}-{width}.png"));
            let meta = std::fs::metadata(&file)
                .unwrap_or_else(|e| panic!("{} missing: {e}", file.display()));
            assert!(
                meta.len() > 5_000,
                "{} is too small to hold a page",
                file.display()
            );
            assert!(
                shots_taken
                    .iter()
                    .any(|s| s == &serde_json::json!(format!("{page}-{width}.png")))
            );
        }
    }
    setup.stop().await;
}

/// The keys table over 100,000 keys: pages follow each other without overlap, a search
/// finds one key among all of them, and the state counts cover every key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keys_table_pages_and_searches_100k_keys() {
    let setup = Setup::start().await;
    let secrets: Vec<String> = (0..100_000)
        .map(|i| format!("sk-scale-{i:012}-{:08x}", i * 7919))
        .collect();
    let added = setup
        .control
        .admin()
        .await
        .add_keys(pb::AddKeysRequest {
            provider: PROVIDER.into(),
            keys: secrets.clone(),
            validate: false,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(added.added, 100_000);
    let (cookie, _) = setup.sign_in().await;
    let get = |path: String| {
        let cookie = cookie.clone();
        let setup = &setup;
        async move {
            let started = std::time::Instant::now();
            let r = setup
                .request("GET", &path, &[("cookie", &cookie)], b"")
                .await;
            assert_eq!(r.status, 200, "{path}: {}", r.text());
            (r.json(), started.elapsed())
        }
    };
    let (first, took) = get("/ui/api/keys?page_size=500".into()).await;
    eprintln!("first page of 500 of 100,000 keys: {took:?}");
    assert_eq!(first["counts"]["active"], 100_000);
    let first_ids: Vec<&str> = first["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert_eq!(first_ids.len(), 500);
    let token = first["next_page_token"].as_str().unwrap();
    assert!(!token.is_empty());
    let (second, _) = get(format!("/ui/api/keys?page_size=500&page_token={token}")).await;
    let second_ids: Vec<&str> = second["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert_eq!(second_ids.len(), 500);
    assert!(second_ids.iter().all(|id| !first_ids.contains(id)));
    assert!(first_ids.last() < second_ids.first(), "pages in id order");

    // A search by id prefix walks every key and finds the one.
    let wanted = fulcrum_proto::model::key_id(PROVIDER, &secrets[99_999]);
    let (found, took) = get(format!("/ui/api/keys?q={}", &wanted[..12])).await;
    eprintln!("search among 100,000 keys: {took:?}");
    let found = found["keys"].as_array().unwrap().clone();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["id"], wanted.as_str());
    assert!(!found[0].to_string().contains(&secrets[99_999]));
    setup.stop().await;
}
