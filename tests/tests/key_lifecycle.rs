//! The key lifecycle end to end: a real control plane (sled on disk), real data planes and
//! a mock upstream whose keys change behaviour over time. Keys that are valid, revoked,
//! rate limited, out of quota (for the whole key or one model) and flaky each end in the
//! right state, recover when the mock lets them, and only the control plane probes, within
//! its rate and concurrency limits, on a schedule that survives a restart.
#![allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]

use std::time::{Duration, Instant};

use fulcrum_control::transitions::next_pacific_midnight;
use fulcrum_proto::model::{KeyState, key_id};
use fulcrum_proto::pb;
use fulcrum_tests::mock::{RawResponse, http_request};
use fulcrum_tests::{
    Behaviour, ControlPlaneHandle, DataPlaneHandle, MockUpstream, RecordedRequest, eventually,
    run_fulcrumctl,
};

const PROVIDER: &str = "p";

/// Short timings so that backoffs and recoveries happen within a test.
const FAST: &[(&str, &str)] = &[
    ("probe_backoff_base_ms", "100"),
    ("probe_backoff_max_ms", "400"),
    ("probe_idle_recheck_ms", "0"),
    ("probe_rate_per_minute", "6000000"),
];

struct Setup {
    control: ControlPlaneHandle,
    mock: MockUpstream,
    planes: Vec<DataPlaneHandle>,
    token: String,
    dir: tempfile::TempDir,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

impl Setup {
    /// A control plane with `settings`, one provider of `provider_type` in front of the
    /// mock, a client token, and `planes` data planes.
    async fn start(
        provider_type: pb::ProviderType,
        settings: &[(&str, &str)],
        planes: usize,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let control = ControlPlaneHandle::start(dir.path()).await;
        let mock = MockUpstream::start().await;
        let mut admin = control.admin().await;
        let base_url = match provider_type {
            pb::ProviderType::Gemini => mock.gemini_base_url(),
            _ => mock.openai_base_url(),
        };
        admin
            .create_provider(pb::CreateProviderRequest {
                name: PROVIDER.into(),
                r#type: provider_type as i32,
                base_url,
                ..Default::default()
            })
            .await
            .unwrap();
        for (name, value) in settings {
            admin
                .set_setting(pb::SetSettingRequest {
                    name: name.to_string(),
                    value: value.to_string(),
                })
                .await
                .unwrap();
        }
        let token = admin
            .create_client_token(pb::CreateClientTokenRequest { name: "app".into() })
            .await
            .unwrap()
            .into_inner()
            .token;
        let mut setup = Self {
            control,
            mock,
            planes: Vec::new(),
            token,
            dir,
        };
        for i in 0..planes {
            let plane = DataPlaneHandle::start(
                &setup.control.endpoint(),
                &setup.control.join_token,
                &format!("dp-{i}"),
            )
            .await;
            setup.planes.push(plane);
        }
        setup
    }

    async fn add(&self, secrets: &[&str], validate: bool) -> Vec<String> {
        let response = self
            .control
            .admin()
            .await
            .add_keys(pb::AddKeysRequest {
                provider: PROVIDER.into(),
                keys: secrets.iter().map(|s| s.to_string()).collect(),
                validate,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.added as usize, secrets.len());
        let revision = self.control.store().revision();
        for plane in &self.planes {
            plane.wait_for_revision(revision).await;
        }
        response.results.into_iter().map(|r| r.id).collect()
    }

    async fn history(&self, id: &str) -> (pb::ProviderKey, Vec<pb::KeyTransition>) {
        let response = self
            .control
            .admin()
            .await
            .get_key_history(pb::GetKeyHistoryRequest { id: id.into() })
            .await
            .unwrap()
            .into_inner();
        (response.key.unwrap(), response.transitions)
    }

    async fn key(&self, id: &str) -> pb::ProviderKey {
        self.history(id).await.0
    }

    /// Waits until the control plane's key satisfies `check`.
    async fn wait_key(
        &self,
        id: &str,
        what: &str,
        within: Duration,
        check: impl Fn(&pb::ProviderKey) -> bool,
    ) -> pb::ProviderKey {
        eventually(what, within, || async {
            let key = self.key(id).await;
            check(&key).then_some(key)
        })
        .await
    }

    async fn wait_state(&self, id: &str, want: KeyState, within: Duration) -> pb::ProviderKey {
        self.wait_key(id, &format!("key {id} {want}"), within, |k| {
            k.state == want.to_pb() as i32
        })
        .await
    }

    /// Requests that carried the probes' user agent, for this secret.
    fn probes(&self, secret: &str) -> Vec<RecordedRequest> {
        self.mock
            .requests()
            .into_iter()
            .filter(|r| r.key == secret && is_probe(r))
            .collect()
    }

    async fn chat(&self, plane: usize) -> RawResponse {
        let auth = format!("Bearer {}", self.token);
        http_request(
            self.planes[plane].addr,
            "POST",
            "/v1/chat/completions",
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#,
        )
        .await
    }

    async fn gemini(&self, plane: usize, model: &str) -> RawResponse {
        http_request(
            self.planes[plane].addr,
            "POST",
            &format!("/v1beta/models/{model}:generateContent"),
            &[
                ("x-goog-api-key", &self.token),
                ("content-type", "application/json"),
            ],
            br#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}"#,
        )
        .await
    }

    async fn validate(&self, request: pb::ValidateKeysRequest) -> Vec<pb::ValidateKeysResponse> {
        let mut stream = self
            .control
            .admin()
            .await
            .validate_keys(request)
            .await
            .unwrap()
            .into_inner();
        let mut out = Vec::new();
        while let Some(message) = stream.message().await.unwrap() {
            out.push(message);
        }
        out
    }

    async fn stop(self) {
        for plane in self.planes {
            plane.stop().await;
        }
        self.control.stop().await;
        self.mock.shutdown().await;
        drop(self.dir);
    }
}

fn is_probe(request: &RecordedRequest) -> bool {
    request
        .header("user-agent")
        .is_some_and(|ua| ua.starts_with("fulcrum-probe/"))
}

fn state(value: i32) -> KeyState {
    KeyState::from_pb(value).unwrap()
}

/// Gaps between consecutive arrivals, in ms.
fn gaps(requests: &[RecordedRequest]) -> Vec<u128> {
    requests
        .windows(2)
        .map(|w| {
            w[1].received_at
                .duration_since(w[0].received_at)
                .as_millis()
        })
        .collect()
}

#[tokio::test]
async fn import_validation_sorts_keys_and_probes_bring_them_back_with_backoff() {
    let mut settings = FAST.to_vec();
    settings.push(("max_failures", "2"));
    let setup = Setup::start(pb::ProviderType::Openai, &settings, 0).await;
    let (valid, revoked, flaky) = ("sk-valid-0000001", "sk-revoked-00001", "sk-flaky-0000001");
    setup.mock.script(revoked, Behaviour::status(401));
    setup.mock.script(
        flaky,
        Behaviour::Sequence(vec![
            Behaviour::status(503),
            Behaviour::status(503),
            Behaviour::Ok,
        ]),
    );
    let ids = setup.add(&[valid, revoked, flaky], true).await;
    let (valid_id, revoked_id, flaky_id) = (&ids[0], &ids[1], &ids[2]);

    // Valid: probed once, still active, its success recorded.
    let key = setup
        .wait_key(valid_id, "valid key probed", Duration::from_secs(5), |k| {
            k.last_success_unix_ms > 0
        })
        .await;
    assert_eq!(state(key.state), KeyState::Active);
    assert_eq!(setup.probes(valid).len(), 1);

    // Revoked: invalid, decided by a probe, in the history.
    let key = setup
        .wait_state(revoked_id, KeyState::Invalid, Duration::from_secs(5))
        .await;
    assert!(key.state_reason.contains("401"), "{}", key.state_reason);
    let (_, history) = setup.history(revoked_id).await;
    let last = history.last().unwrap();
    assert_eq!(
        (state(last.from), state(last.to), last.source.as_str()),
        (KeyState::Active, KeyState::Invalid, "probe")
    );

    // Flaky: two failed probes make it failing, the next one brings it back.
    eventually(
        "flaky key failing then active",
        Duration::from_secs(5),
        || async {
            let (key, history) = setup.history(flaky_id).await;
            let to: Vec<KeyState> = history.iter().map(|t| state(t.to)).collect();
            (state(key.state) == KeyState::Active && to == [KeyState::Failing, KeyState::Active])
                .then_some(())
        },
    )
    .await;
    assert_eq!(setup.mock.calls(flaky), 3);
    let (_, history) = setup.history(flaky_id).await;
    assert!(history.iter().all(|t| t.source == "probe"));

    // Revoked stays invalid while the upstream refuses it, probed with a growing backoff:
    // each wait is at least half the doubled base (jitter is 0.5..1), capped at the max.
    eventually("revoked key re-probed", Duration::from_secs(5), || async {
        (setup.probes(revoked).len() >= 5).then_some(())
    })
    .await;
    assert_eq!(state(setup.key(revoked_id).await.state), KeyState::Invalid);
    let waits = gaps(&setup.probes(revoked));
    for (i, wait) in waits.iter().enumerate() {
        let full = (100u128 << i).min(400);
        assert!(
            *wait + 5 >= full / 2 && *wait <= full + 150,
            "probe {} after {wait} ms; backoff {full} ms with jitter: {waits:?}",
            i + 2
        );
    }

    // The upstream takes the key again: the next probe brings it back.
    setup.mock.script(revoked, Behaviour::Ok);
    setup
        .wait_state(revoked_id, KeyState::Active, Duration::from_secs(3))
        .await;
    let (key, history) = setup.history(revoked_id).await;
    let last = history.last().unwrap();
    assert_eq!(
        (state(last.from), last.source.as_str(), last.reason.as_str()),
        (KeyState::Invalid, "probe", "recovered: a probe succeeded")
    );
    assert_eq!(key.failures, 0);

    // Every upstream call was a probe: the cheapest call, a model listing.
    for request in setup.mock.requests() {
        assert!(is_probe(&request), "{request:?}");
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("GET", "/v1/models")
        );
    }
    setup.stop().await;
}

#[tokio::test]
async fn rate_limited_and_exhausted_keys_come_back_on_time_without_a_probe() {
    let mut settings = FAST.to_vec();
    settings.push(("quota_reset_default_ms", "800"));
    let setup = Setup::start(pb::ProviderType::Openai, &settings, 1).await;
    let (cools, quota, fine) = ("sk-cools-0000001", "sk-quota-0000001", "sk-fine-00000001");
    setup.mock.script(
        cools,
        Behaviour::Sequence(vec![Behaviour::rate_limited("1"), Behaviour::Ok]),
    );
    setup.mock.script(
        quota,
        Behaviour::Sequence(vec![
            Behaviour::Status {
                status: 429,
                retry_after: None,
                body: Some(
                    r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#
                        .into(),
                ),
            },
            Behaviour::Ok,
        ]),
    );
    let ids = setup.add(&[cools, quota, fine], false).await;
    let (cools_id, quota_id) = (&ids[0], &ids[1]);

    // Traffic until both scripted keys have answered once; failover hides them.
    for _ in 0..10 {
        let answer = setup.chat(0).await;
        assert_eq!(
            answer.status,
            200,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        if setup.mock.calls(cools) >= 1 && setup.mock.calls(quota) >= 1 {
            break;
        }
    }
    assert_eq!((setup.mock.calls(cools), setup.mock.calls(quota)), (1, 1));

    // The 429 cools the key until its Retry-After; the quota exhausts the other one.
    let key = setup
        .wait_state(cools_id, KeyState::Cooling, Duration::from_secs(3))
        .await;
    assert!(key.state_until_unix_ms > now_ms() - 1_000);
    let key = setup
        .wait_state(quota_id, KeyState::Exhausted, Duration::from_secs(3))
        .await;
    assert!(key.state_reason.contains("quota"), "{}", key.state_reason);

    // Both come back at their time, by the timer, with no probe spent.
    for id in [cools_id, quota_id] {
        setup
            .wait_state(id, KeyState::Active, Duration::from_secs(3))
            .await;
        let (_, history) = setup.history(id).await;
        let last = history.last().unwrap();
        assert_eq!(last.source, "timer", "{history:?}");
        assert_eq!(history[0].source, "dp-0", "{history:?}");
    }
    let (_, history) = setup.history(cools_id).await;
    assert_eq!(history.last().unwrap().reason, "cooldown over");
    let (_, history) = setup.history(quota_id).await;
    assert_eq!(history.last().unwrap().reason, "quota reset");
    assert_eq!(
        (setup.mock.calls(cools), setup.mock.calls(quota)),
        (1, 1),
        "no probe"
    );
    assert!(setup.mock.requests().iter().all(|r| !is_probe(r)));
    setup.stop().await;
}

#[tokio::test]
async fn a_daily_quota_per_model_skips_the_key_for_that_model_only() {
    let setup = Setup::start(pb::ProviderType::Gemini, FAST, 1).await;
    let (tired, other) = ("AIza-tired-000001", "AIza-other-000001");
    const DAILY: &str = r#"{"error":{"code":429,"message":"You exceeded your current quota","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaMetric":"generativelanguage.googleapis.com/generate_content_free_tier_requests","quotaId":"GenerateRequestsPerDayPerProjectPerModel-FreeTier","quotaDimensions":{"location":"global","model":"gemini-2.5-flash"}}]}]}}"#;
    setup.mock.script(
        tired,
        Behaviour::Status {
            status: 429,
            retry_after: None,
            body: Some(DAILY.into()),
        },
    );
    let ids = setup.add(&[tired, other], false).await;
    let tired_id = &ids[0];

    for _ in 0..6 {
        let answer = setup.gemini(0, "gemini-2.5-flash").await;
        assert_eq!(
            answer.status,
            200,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        if setup.mock.calls(tired) >= 1 {
            break;
        }
    }
    let key = setup
        .wait_key(tired_id, "flash exhausted", Duration::from_secs(3), |k| {
            !k.exhausted_models.is_empty()
        })
        .await;
    // The key stays active for other models; flash is out until midnight Pacific time.
    assert_eq!(state(key.state), KeyState::Active);
    assert_eq!(key.exhausted_models.len(), 1);
    let exhausted = &key.exhausted_models[0];
    assert_eq!(exhausted.model, "gemini-2.5-flash");
    assert_eq!(exhausted.until_unix_ms, next_pacific_midnight(now_ms()));
    let (_, history) = setup.history(tired_id).await;
    let last = history.last().unwrap();
    assert_eq!(
        (state(last.to), last.model.as_str(), last.source.as_str()),
        (KeyState::Exhausted, "gemini-2.5-flash", "dp-0")
    );

    // The data plane holds the per-model exhaustion and skips the key for flash only.
    eventually(
        "exhaustion on the data plane",
        Duration::from_secs(3),
        || async {
            let config = setup.planes[0].runtime().load()?;
            let key = config.keys.get(&key_id(PROVIDER, tired))?;
            key.exhausted_for("gemini-2.5-flash", now_ms())
                .then_some(())
        },
    )
    .await;
    setup.mock.script(tired, Behaviour::Ok);
    let before = setup.mock.calls(tired);
    for _ in 0..6 {
        assert_eq!(setup.gemini(0, "gemini-2.5-flash").await.status, 200);
    }
    assert_eq!(
        setup.mock.calls(tired),
        before,
        "flash never goes to the tired key"
    );
    for _ in 0..6 {
        assert_eq!(setup.gemini(0, "gemini-2.5-pro").await.status, 200);
    }
    assert!(
        setup.mock.calls(tired) > before,
        "other models still use the key"
    );
    setup.stop().await;
}

#[tokio::test]
async fn probes_start_no_faster_than_the_per_provider_rate() {
    let settings = [
        ("probe_rate_per_minute", "600"),
        ("probe_concurrency", "8"),
        ("probe_idle_recheck_ms", "0"),
    ];
    let setup = Setup::start(pb::ProviderType::Openai, &settings, 0).await;
    let secrets: Vec<String> = (0..12).map(|i| format!("sk-rate-{i:08}")).collect();
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    setup.add(&secrets, false).await;

    let started = Instant::now();
    let messages = setup
        .validate(pb::ValidateKeysRequest {
            all: true,
            ..Default::default()
        })
        .await;
    let elapsed = started.elapsed();
    let (results, summary): (Vec<_>, Vec<_>) = messages
        .into_iter()
        .map(|m| m.event.unwrap())
        .partition(|e| matches!(e, pb::validate_keys_response::Event::Result(_)));
    assert_eq!(results.len(), 12);
    let Some(pb::validate_keys_response::Event::Summary(summary)) = summary.first() else {
        panic!("no summary");
    };
    assert_eq!((summary.probed, summary.skipped), (12, 0));
    assert_eq!(
        summary.states,
        vec![pb::KeyStateCount {
            state: pb::KeyState::Active as i32,
            count: 12
        }]
    );
    // 600 a minute: one every 100 ms.
    let mut probes: Vec<RecordedRequest> = setup.mock.requests();
    probes.sort_by_key(|r| r.received_at);
    assert_eq!(probes.len(), 12);
    for wait in gaps(&probes) {
        assert!(wait >= 80, "probes {wait} ms apart at 600 a minute");
    }
    assert!(elapsed >= Duration::from_millis(1_050), "{elapsed:?}");
    setup.stop().await;
}

#[tokio::test]
async fn probes_in_flight_stay_within_the_concurrency_limit() {
    let settings = [
        ("probe_concurrency", "3"),
        ("probe_rate_per_minute", "6000000"),
        ("probe_idle_recheck_ms", "0"),
    ];
    let setup = Setup::start(pb::ProviderType::Openai, &settings, 0).await;
    let secrets: Vec<String> = (0..9).map(|i| format!("sk-slow-{i:08}")).collect();
    for secret in &secrets {
        setup.mock.script(
            secret,
            Behaviour::StallBeforeHeaders(Duration::from_millis(300)),
        );
    }
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let ids = setup.add(&secrets, false).await;

    let started = Instant::now();
    let messages = setup
        .validate(pb::ValidateKeysRequest {
            ids: ids.clone(),
            ..Default::default()
        })
        .await;
    assert_eq!(messages.len(), 10, "nine results and a summary");
    assert_eq!(setup.mock.max_in_flight(), 3);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "three rounds of three"
    );
    setup.stop().await;
}

#[tokio::test]
async fn only_the_control_plane_probes_however_many_data_planes() {
    let setup = Setup::start(pb::ProviderType::Gemini, FAST, 2).await;
    let (revoked, fine) = ("AIza-revoked-0001", "AIza-fine-0000001");
    setup.mock.script(revoked, Behaviour::status(401));
    let ids = setup.add(&[revoked, fine], false).await;
    let revoked_id = &ids[0];

    // Both data planes serve traffic and meet the revoked key.
    for i in 0..8 {
        let answer = setup.gemini(i % 2, "gemini-2.5-flash").await;
        assert_eq!(
            answer.status,
            200,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
    }
    setup
        .wait_state(revoked_id, KeyState::Invalid, Duration::from_secs(3))
        .await;
    eventually("revoked key re-probed", Duration::from_secs(5), || async {
        (setup.probes(revoked).len() >= 4).then_some(())
    })
    .await;

    // Probes are the listing, from the control plane only; the data planes only generate.
    for request in setup.mock.requests() {
        if is_probe(&request) {
            assert_eq!(
                (request.method.as_str(), request.path.as_str()),
                ("GET", "/v1beta/models?pageSize=1")
            );
        } else {
            assert!(
                request.path.ends_with(":generateContent"),
                "a data plane sent {} {}",
                request.method,
                request.path
            );
        }
    }
    // One prober: consecutive probes of the key are a backoff apart, never together.
    let waits = gaps(&setup.probes(revoked));
    assert!(waits.iter().all(|w| *w >= 45), "{waits:?}");
    assert!(setup.probes(fine).is_empty());

    setup.mock.script(revoked, Behaviour::Ok);
    setup
        .wait_state(revoked_id, KeyState::Active, Duration::from_secs(3))
        .await;
    for plane in &setup.planes {
        eventually(
            "recovery on every data plane",
            Duration::from_secs(3),
            || async {
                let config = plane.runtime().load()?;
                (config.keys.get(revoked_id)?.state == KeyState::Active).then_some(())
            },
        )
        .await;
    }
    setup.stop().await;
}

#[tokio::test]
async fn the_probe_schedule_survives_a_control_plane_restart() {
    let settings = [
        ("probe_backoff_base_ms", "60000"),
        ("probe_idle_recheck_ms", "3600000"),
        ("probe_rate_per_minute", "6000000"),
    ];
    let setup = Setup::start(pb::ProviderType::Openai, &settings, 0).await;
    let (revoked, fine) = ("sk-revoked-00002", "sk-fine-00000002");
    setup.mock.script(revoked, Behaviour::status(401));
    let ids = setup.add(&[revoked, fine], true).await;
    let revoked_before = setup
        .wait_state(&ids[0], KeyState::Invalid, Duration::from_secs(5))
        .await;
    let fine_before = setup
        .wait_key(&ids[1], "fine key probed", Duration::from_secs(5), |k| {
            k.last_success_unix_ms > 0
        })
        .await;
    let now = now_ms();
    assert!((now + 25_000..=now + 61_000).contains(&revoked_before.next_probe_unix_ms));
    assert!(fine_before.next_probe_unix_ms > now + 3_500_000);
    let (_, history_before) = setup.history(&ids[0]).await;

    let Setup {
        control, mock, dir, ..
    } = setup;
    control.stop().await;
    let control = ControlPlaneHandle::start(dir.path()).await;
    let restarted = Setup {
        control,
        mock,
        planes: Vec::new(),
        token: String::new(),
        dir,
    };
    let (revoked_after, history_after) = restarted.history(&ids[0]).await;
    let fine_after = restarted.key(&ids[1]).await;
    assert_eq!(
        revoked_after.next_probe_unix_ms,
        revoked_before.next_probe_unix_ms
    );
    assert_eq!(
        fine_after.next_probe_unix_ms,
        fine_before.next_probe_unix_ms
    );
    assert_eq!(history_after, history_before);
    assert_eq!(state(revoked_after.state), KeyState::Invalid);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        (restarted.mock.calls(revoked), restarted.mock.calls(fine)),
        (1, 1),
        "nothing probed again after the restart"
    );
    restarted.stop().await;
}

#[tokio::test]
async fn fulcrumctl_validates_lists_and_shows_history() {
    let setup = Setup::start(pb::ProviderType::Openai, FAST, 0).await;
    let (good, bad) = ("sk-cli-good-00001", "sk-cli-bad-000001");
    setup.mock.script(bad, Behaviour::status(403));
    let endpoint = setup.control.endpoint();
    let token = Some(setup.control.admin_token.as_str());
    let added = run_fulcrumctl(
        &endpoint,
        token,
        &[
            "keys",
            "add",
            "--provider",
            PROVIDER,
            "--no-validate",
            good,
            bad,
        ],
        None,
    )
    .await;
    assert!(!added.ok().is_empty());
    assert_eq!(setup.mock.total_calls(), 0, "--no-validate probes nothing");

    let out = run_fulcrumctl(&endpoint, token, &["keys", "validate", "--all"], None).await;
    let stdout = out.ok();
    assert!(stdout.contains("probed 2, skipped 0"), "{stdout}");
    assert!(stdout.contains("invalid"), "{stdout}");
    assert!(out.stderr.contains("[2/2]"), "{}", out.stderr);
    assert!(
        !out.stderr.contains(bad),
        "secrets never print: {}",
        out.stderr
    );

    let bad_id = key_id(PROVIDER, bad);
    let out = run_fulcrumctl(&endpoint, token, &["keys", "history", &bad_id], None).await;
    let stdout = out.ok();
    assert!(
        stdout.contains("active") && stdout.contains("invalid"),
        "{stdout}"
    );
    assert!(
        stdout.contains("probe") && stdout.contains("403"),
        "{stdout}"
    );

    let out = run_fulcrumctl(&endpoint, token, &["keys", "list"], None).await;
    let stdout = out.ok();
    for column in ["NEXT PROBE", "LAST SUCCESS", "FAILURES"] {
        assert!(stdout.contains(column), "{stdout}");
    }
    let out = run_fulcrumctl(
        &endpoint,
        token,
        &["--output", "json", "keys", "list"],
        None,
    )
    .await;
    let json = out.json();
    let bad_json = json["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == bad_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(bad_json["state"], "invalid");
    assert!(bad_json["next_probe_unix_ms"].as_i64().unwrap() > 0);

    // Bad requests fail with a message and a non-zero exit.
    run_fulcrumctl(&endpoint, token, &["keys", "validate"], None)
        .await
        .fails_with("required");
    run_fulcrumctl(
        &endpoint,
        token,
        &["keys", "validate", "--state", "disabled"],
        None,
    )
    .await
    .fails_with("disabled keys are never probed");
    run_fulcrumctl(
        &endpoint,
        token,
        &["keys", "validate", "--all", "--provider", "nope"],
        None,
    )
    .await
    .fails_with("not found");
    setup.stop().await;
}

#[tokio::test]
async fn idle_active_keys_are_rechecked_and_busy_ones_are_not() {
    let mut settings = FAST.to_vec();
    settings.retain(|(name, _)| *name != "probe_idle_recheck_ms");
    settings.push(("probe_idle_recheck_ms", "1500"));
    // Without request records too: the data plane reports a busy key's use on its own.
    settings.push(("request_logging", "false"));
    let setup = Setup::start(pb::ProviderType::Openai, &settings, 1).await;
    let secret = "sk-idle-00000001";
    setup.add(&[secret], true).await;
    eventually("import probe", Duration::from_secs(3), || async {
        (setup.probes(secret).len() == 1).then_some(())
    })
    .await;

    // Busy for 3 s, twice the idle time: the data plane's reports of its use keep it from
    // being idle.
    let busy_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < busy_until {
        assert_eq!(setup.chat(0).await.status, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(setup.probes(secret).len(), 1, "a busy key is not probed");

    // Idle: probed again about one idle time after its last use.
    let quiet_since = Instant::now();
    eventually("idle re-check", Duration::from_secs(5), || async {
        (setup.probes(secret).len() == 2).then_some(())
    })
    .await;
    assert!(quiet_since.elapsed() >= Duration::from_millis(800));

    // 0 turns it off: the key is not probed again.
    setup
        .control
        .admin()
        .await
        .set_setting(pb::SetSettingRequest {
            name: "probe_idle_recheck_ms".into(),
            value: "0".into(),
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert!(
        setup.probes(secret).len() <= 3,
        "at most the re-check already planned"
    );
    let settled = setup.probes(secret).len();
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert_eq!(setup.probes(secret).len(), settled);
    setup.stop().await;
}
