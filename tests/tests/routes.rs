#![allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]
//! Routes end to end: `fulcrumctl routes set|list|remove|explain` against a real control
//! plane, the checks on bad input, and what `explain` says about matching and keys.

use fulcrum_proto::pb;
use fulcrum_tests::{CliOutput, ControlPlaneHandle, run_fulcrumctl};
use serde_json::Value;
use tonic::Code;

async fn ctl(control: &ControlPlaneHandle, args: &[&str]) -> CliOutput {
    run_fulcrumctl(&control.endpoint(), Some(&control.admin_token), args, None).await
}

async fn json(control: &ControlPlaneHandle, args: &[&str]) -> Value {
    let mut all = vec!["-o", "json"];
    all.extend_from_slice(args);
    ctl(control, &all).await.json()
}

async fn revision(control: &ControlPlaneHandle) -> u64 {
    json(control, &["status"]).await["revision"]
        .as_u64()
        .unwrap()
}

async fn explain(control: &ControlPlaneHandle, model: &str, protocol: &str) -> Value {
    json(
        control,
        &["routes", "explain", model, "--protocol", protocol],
    )
    .await
}

/// `(provider, model sent, usable/total)` of each candidate, in order.
fn candidates(explained: &Value) -> Vec<(String, String, String)> {
    explained["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["provider"].as_str().unwrap().to_string(),
                c["model"].as_str().unwrap().to_string(),
                format!("{}/{}", c["usable_keys"], c["total_keys"]),
            )
        })
        .collect()
}

fn triple(provider: &str, model: &str, keys: &str) -> (String, String, String) {
    (provider.into(), model.into(), keys.into())
}

/// Providers `oa` (openai), `mk` (mock), `gem` (gemini) and `claude` (anthropic); three
/// keys for `oa`, two for `gem`, none for `claude`.
async fn providers(control: &ControlPlaneHandle) {
    for args in [
        &[
            "providers",
            "add",
            "oa",
            "--type",
            "openai",
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--priority",
            "10",
        ][..],
        &[
            "providers",
            "add",
            "mk",
            "--type",
            "mock",
            "--priority",
            "10",
        ],
        &[
            "providers",
            "add",
            "gem",
            "--type",
            "gemini",
            "--priority",
            "5",
        ],
        &["providers", "add", "claude", "--type", "anthropic"],
        &[
            "keys",
            "add",
            "--provider",
            "oa",
            "sk-oa-key-000000000001",
            "sk-oa-key-000000000002",
            "sk-oa-key-000000000003",
        ],
        &[
            "keys",
            "add",
            "--provider",
            "gem",
            "AIza-gem-key-0000000001",
            "AIza-gem-key-0000000002",
        ],
    ] {
        ctl(control, args).await.ok();
    }
}

#[tokio::test]
async fn set_list_remove_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlPlaneHandle::start(dir.path()).await;
    providers(&control).await;

    let set = json(
        &control,
        &[
            "routes",
            "set",
            "gpt-*",
            "--to",
            "oa:gpt-4o-mini",
            "--to",
            "gem*3",
            "--strategy",
            "weighted",
            "--sticky",
            "600",
            "--price",
            "oa:gpt-4o-mini=0.15,0.6",
        ],
    )
    .await;
    let route = &set["route"];
    assert_eq!(route["model_pattern"], "gpt-*");
    assert_eq!(route["strategy"], "weighted");
    assert_eq!(route["sticky_secs"], 600);
    let targets = route["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 2);
    assert_eq!(targets[0]["provider"], "oa");
    assert_eq!(targets[0]["model"], "gpt-4o-mini");
    assert_eq!(targets[0]["input_usd_per_million_tokens"], 0.15);
    assert_eq!(targets[0]["output_usd_per_million_tokens"], 0.6);
    assert_eq!(targets[1]["provider"], "gem");
    assert_eq!(targets[1]["model"], "", "no MODEL keeps the client's");
    assert_eq!(targets[1]["weight"], 3);
    assert_eq!(targets[1]["input_usd_per_million_tokens"], 0.0);
    assert_eq!(
        (
            targets[0]["priority"].clone(),
            targets[1]["priority"].clone()
        ),
        (1.into(), 1.into()),
        "weighted spreads over one tier unless @PRIORITY says otherwise"
    );

    // `--target` is the old name of `--to`; the priority strategy is a fallback chain.
    let out = ctl(
        &control,
        &[
            "routes",
            "set",
            "claude-*",
            "--target",
            "claude",
            "--target",
            "oa:gpt-4o",
        ],
    )
    .await;
    let text = out.ok();
    assert!(
        text.contains("strategy priority, sticky off"),
        "set prints the route: {text}"
    );

    let listed = json(&control, &["routes", "list"]).await;
    let routes = listed["routes"].as_array().unwrap();
    let patterns: Vec<&str> = routes
        .iter()
        .map(|r| r["model_pattern"].as_str().unwrap())
        .collect();
    assert_eq!(patterns, ["claude-*", "gpt-*"], "listed by pattern");
    assert_eq!(routes[0]["strategy"], "priority");
    assert_eq!(routes[0]["sticky_secs"], 0);
    let priorities: Vec<u64> = routes[0]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["priority"].as_u64().unwrap())
        .collect();
    assert_eq!(priorities, [1, 2]);
    assert_eq!(routes[1]["strategy"], "weighted");
    assert_eq!(routes[1]["sticky_secs"], 600);

    let table = ctl(&control, &["routes", "list"]).await;
    let table = table.ok();
    let header = table.lines().next().unwrap();
    for column in ["PATTERN", "STRATEGY", "STICKY", "TARGETS"] {
        assert!(header.contains(column), "{table}");
    }
    let gpt_line = table.lines().find(|l| l.starts_with("gpt-*")).unwrap();
    assert!(
        gpt_line.contains("weighted")
            && gpt_line.contains("10m0s")
            && gpt_line.contains("oa:gpt-4o-mini@1*1 gem@1*3"),
        "{table}"
    );

    let before = revision(&control).await;
    let removed = json(&control, &["routes", "remove", "gpt-*"]).await;
    assert_eq!(removed["revision"], before + 1);
    let listed = json(&control, &["routes", "list"]).await;
    assert_eq!(listed["routes"].as_array().unwrap().len(), 1);
    ctl(&control, &["routes", "remove", "gpt-*"])
        .await
        .fails_with("route \"gpt-*\" not found");
    control.stop().await;
}

#[tokio::test]
async fn bad_routes_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlPlaneHandle::start(dir.path()).await;
    providers(&control).await;
    ctl(&control, &["routes", "set", "gpt-*", "--to", "oa"])
        .await
        .ok();
    let before = revision(&control).await;

    // (arguments, exit code, message): 2 is a usage error found before any call, 1 a
    // call the control plane refused.
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            vec!["routes", "set", "gpt-*", "--to", "ghost"],
            1,
            "names provider \"ghost\", which does not exist",
        ),
        (
            vec!["routes", "set", "gpt-*", "--to", "oa", "--to", "ghost"],
            1,
            "\"ghost\", which does not exist",
        ),
        (
            vec!["routes", "set", "gpt-[45]*", "--to", "oa"],
            2,
            "only '*' is a wildcard",
        ),
        (
            vec!["routes", "set", "gpt-?", "--to", "oa"],
            2,
            "only '*' is a wildcard",
        ),
        (
            vec!["routes", "set", "gpt-**", "--to", "oa"],
            2,
            "write one '*'",
        ),
        (
            vec![
                "routes",
                "set",
                "gpt-*",
                "--to",
                "oa",
                "--strategy",
                "fastest",
            ],
            2,
            "unknown strategy \"fastest\"; expected one of priority, round-robin",
        ),
        (
            vec!["routes", "set", "gpt-*", "--to", "oa", "--price", "oa=-1,2"],
            2,
            "invalid input price -1",
        ),
        (
            vec![
                "routes", "set", "gpt-*", "--to", "oa", "--price", "oa=cheap",
            ],
            2,
            "expected PROVIDER[:MODEL]=IN,OUT",
        ),
        (
            vec!["routes", "set", "gpt-*", "--to", "oa", "--price", "gem=1,2"],
            2,
            "--price gem matches no --to target",
        ),
        (
            vec!["routes", "set", "gpt-*", "--to", "oa", "--sticky", "86401"],
            2,
            "from 0 (off) to 86400 (one day)",
        ),
        (
            vec!["routes", "set", "gpt-*", "--to", "oa*0"],
            2,
            "it must be at least 1",
        ),
        (
            vec!["routes", "explain", "gpt-4o", "--protocol", "grpc"],
            2,
            "unknown protocol \"grpc\"",
        ),
    ];
    for (args, code, needle) in &cases {
        let out = ctl(&control, args).await;
        out.fails_with(needle);
        assert_eq!(out.code, *code, "{args:?}: {out:#?}");
    }

    // The control plane checks the same rules itself, for clients other than fulcrumctl.
    let mut admin = control.admin().await;
    let target = |provider: &str| pb::RouteTarget {
        provider: provider.into(),
        ..Default::default()
    };
    let good = pb::Route {
        model_pattern: "gpt-*".into(),
        targets: vec![target("oa")],
        ..Default::default()
    };
    let mut bad_glob = good.clone();
    bad_glob.model_pattern = "gpt-[4]".into();
    let mut sticky = good.clone();
    sticky.sticky_secs = 100_000;
    let mut strategy = good.clone();
    strategy.strategy = 42;
    let mut nan = good.clone();
    nan.targets[0].input_usd_per_million_tokens = f64::NAN;
    let mut infinite = good.clone();
    infinite.targets[0].output_usd_per_million_tokens = f64::INFINITY;
    let mut negative = good.clone();
    negative.targets[0].output_usd_per_million_tokens = -0.5;
    let mut unknown = good.clone();
    unknown.targets.push(target("ghost"));
    for (route, code, needle) in [
        (bad_glob, Code::InvalidArgument, "only '*' is a wildcard"),
        (sticky, Code::InvalidArgument, "longer than one day"),
        (
            strategy,
            Code::InvalidArgument,
            "unknown strategy number 42",
        ),
        (nan, Code::InvalidArgument, "invalid input price NaN"),
        (infinite, Code::InvalidArgument, "invalid output price inf"),
        (negative, Code::InvalidArgument, "invalid output price -0.5"),
        (
            unknown,
            Code::FailedPrecondition,
            "\"ghost\", which does not exist",
        ),
    ] {
        let err = admin
            .put_route(pb::PutRouteRequest { route: Some(route) })
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "{err:?}");
        assert!(err.message().contains(needle), "{err:?}");
    }
    let err = admin
        .explain_route(pb::ExplainRouteRequest {
            model: " ".into(),
            protocol: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("a model is required"), "{err:?}");

    assert_eq!(revision(&control).await, before, "nothing was applied");
    let listed = json(&control, &["routes", "list"]).await;
    let targets = listed["routes"][0]["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 1, "the route is as it was: {listed}");
    assert_eq!(targets[0]["provider"], "oa");

    // What the control plane stores is normalised: weight 0 is 1, unspecified is priority.
    let stored = admin
        .put_route(pb::PutRouteRequest {
            route: Some(pb::Route {
                targets: vec![pb::RouteTarget {
                    provider: "oa".into(),
                    weight: 0,
                    input_usd_per_million_tokens: -0.0,
                    ..Default::default()
                }],
                ..good
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .route
        .unwrap();
    assert_eq!(stored.strategy, pb::RouteStrategy::Priority as i32);
    assert_eq!(stored.targets[0].weight, 1);
    assert!(
        stored.targets[0]
            .input_usd_per_million_tokens
            .is_sign_positive()
    );
    control.stop().await;
}

#[tokio::test]
async fn explain_shows_exact_glob_and_default_candidates_with_key_counts() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlPlaneHandle::start(dir.path()).await;
    providers(&control).await;
    for args in [
        &["routes", "set", "*", "--to", "oa"][..],
        &[
            "routes",
            "set",
            "gemini-*",
            "--to",
            "gem",
            "--to",
            "oa:gpt-4o",
            "--strategy",
            "lowest-cost",
            "--sticky",
            "300",
            "--price",
            "gem=1.25,10",
        ],
        &[
            "routes",
            "set",
            "gemini-2.5-pro",
            "--to",
            "gem:gemini-2.5-pro-latest",
        ],
    ] {
        ctl(&control, args).await.ok();
    }

    // Exact beats every glob.
    let exact = explain(&control, "gemini-2.5-pro", "openai").await;
    assert_eq!(exact["matched_pattern"], "gemini-2.5-pro");
    assert_eq!(exact["reason"], "exact route (beats glob gemini-*)");
    assert_eq!(exact["strategy"], "priority");
    assert_eq!(
        candidates(&exact),
        [triple("gem", "gemini-2.5-pro-latest", "2/2")]
    );
    let gem = &exact["candidates"][0];
    assert_eq!(gem["type"], "gemini");
    assert_eq!(gem["model_rewritten"], true);
    assert_eq!(gem["native"], false);
    assert_eq!(
        gem["note"],
        "speaks gemini: the openai request is translated"
    );

    // The most specific glob wins, whatever order the routes were written in.
    let glob = explain(&control, "gemini-2.0-flash", "gemini").await;
    assert_eq!(glob["matched_pattern"], "gemini-*");
    assert_eq!(
        glob["reason"],
        "glob gemini-* (7 literal characters) beats *"
    );
    assert_eq!(glob["strategy"], "lowest-cost");
    assert_eq!(glob["sticky_secs"], 300);
    assert_eq!(
        candidates(&glob),
        [
            triple("gem", "gemini-2.0-flash", "2/2"),
            triple("oa", "gpt-4o", "3/3"),
        ]
    );
    assert_eq!(glob["candidates"][0]["input_usd_per_million_tokens"], 1.25);
    assert_eq!(glob["candidates"][0]["output_usd_per_million_tokens"], 10.0);
    assert_eq!(glob["candidates"][0]["note"], "");
    assert_eq!(
        glob["candidates"][1]["note"],
        "speaks openai: the gemini request is translated; no price: ranked after priced candidates"
    );
    assert_eq!(glob["revision"].as_u64().unwrap(), revision(&control).await);

    let catch_all = explain(&control, "gpt-4o", "openai").await;
    assert_eq!(catch_all["matched_pattern"], "*");
    assert_eq!(
        catch_all["reason"],
        "glob * (0 literal characters), the only route that matches"
    );
    assert_eq!(candidates(&catch_all), [triple("oa", "gpt-4o", "3/3")]);

    // Keys taken out of rotation are counted as not usable, and the candidate is flagged.
    let keys = json(&control, &["keys", "list", "--provider", "gem"]).await;
    let ids: Vec<&str> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    let mut disable = vec!["keys", "disable"];
    disable.extend(&ids);
    ctl(&control, &disable).await.ok();
    let glob = explain(&control, "gemini-2.0-flash", "openai").await;
    assert_eq!(glob["candidates"][0]["usable_keys"], 0);
    assert_eq!(glob["candidates"][0]["total_keys"], 2);
    assert_eq!(
        glob["candidates"][0]["note"],
        "no usable key: it will be skipped; speaks gemini: the openai request is translated"
    );
    ctl(&control, &["keys", "enable", ids[0]]).await.ok();
    let glob = explain(&control, "gemini-2.0-flash", "openai").await;
    assert_eq!(
        candidates(&glob)[0],
        triple("gem", "gemini-2.0-flash", "1/2")
    );

    // The table says the same for people.
    let text = ctl(&control, &["routes", "explain", "gemini-2.0-flash"]).await;
    let text = text.ok();
    for needle in [
        "route:",
        "gemini-*",
        "reason:",
        "glob gemini-* (7 literal characters) beats *",
        "strategy:",
        "lowest-cost",
        "sticky:",
        "5m0s",
        "USABLE/KEYS",
        "1/2",
        "3/3",
        "1.25,10",
    ] {
        assert!(text.contains(needle), "lacks {needle:?}: {text}");
    }

    // Without a route: the providers that speak the client's protocol, by priority and name.
    ctl(&control, &["routes", "remove", "*"]).await.ok();
    let openai = explain(&control, "gpt-4o", "openai").await;
    assert_eq!(openai["matched_pattern"], Value::Null);
    assert_eq!(
        openai["reason"],
        "no route: providers that speak the client's protocol (openai), by priority"
    );
    assert_eq!(
        candidates(&openai),
        [triple("mk", "gpt-4o", "0/0"), triple("oa", "gpt-4o", "3/3")]
    );
    assert_eq!(
        openai["candidates"][0]["note"],
        "answers locally, needs no key"
    );
    let gemini = explain(&control, "learnlm-2.0-flash", "gemini").await;
    assert_eq!(
        candidates(&gemini),
        [triple("gem", "learnlm-2.0-flash", "1/2")]
    );
    let anthropic = explain(&control, "claude-3-haiku", "anthropic").await;
    assert_eq!(
        candidates(&anthropic),
        [triple("claude", "claude-3-haiku", "0/0")]
    );
    assert_eq!(
        anthropic["candidates"][0]["note"],
        "no keys: it will be skipped"
    );
    control.stop().await;
}

#[tokio::test]
async fn a_provider_named_by_a_route_cannot_be_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlPlaneHandle::start(dir.path()).await;
    providers(&control).await;
    ctl(
        &control,
        &["routes", "set", "gemini-*", "--to", "gem", "--to", "oa"],
    )
    .await
    .ok();
    let before = revision(&control).await;
    for args in [
        &["providers", "remove", "gem"][..],
        &["providers", "remove", "gem", "--force"],
    ] {
        ctl(&control, args)
            .await
            .fails_with("provider \"gem\" is named by routes gemini-*");
    }
    assert_eq!(revision(&control).await, before);
    let provider = json(&control, &["providers", "get", "gem"]).await;
    assert_eq!(provider["provider"]["name"], "gem");

    // Once the route no longer names it, it goes.
    ctl(&control, &["routes", "set", "gemini-*", "--to", "oa"])
        .await
        .ok();
    ctl(&control, &["providers", "remove", "gem", "--force"])
        .await
        .ok();
    ctl(&control, &["providers", "get", "gem"])
        .await
        .fails_with("provider \"gem\" not found");
    control.stop().await;
}
