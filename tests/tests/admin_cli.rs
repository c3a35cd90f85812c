//! `fulcrumctl` against a real control plane: durability across restarts, concurrent
//! writers, bad input, and a data plane following the revisions.
#![allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]

use std::collections::HashSet;
use std::time::Duration;

use fulcrum_tests::{CliOutput, ControlPlaneHandle, DataPlaneHandle, eventually, run_fulcrumctl};
use serde_json::Value;

async fn ctl(control: &ControlPlaneHandle, args: &[&str]) -> CliOutput {
    run_fulcrumctl(&control.endpoint(), Some(&control.admin_token), args, None).await
}

fn key_lines(range: std::ops::Range<usize>) -> String {
    range
        .map(|i| format!("sk-test-{i:06}-abcdefghijklmnop\n"))
        .collect()
}

async fn all_keys(control: &ControlPlaneHandle) -> Vec<Value> {
    let listed = ctl(control, &["-o", "json", "keys", "list", "--all"])
        .await
        .json();
    listed["keys"].as_array().unwrap().clone()
}

async fn revision(control: &ControlPlaneHandle) -> u64 {
    ctl(control, &["-o", "json", "status"]).await.json()["revision"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn provider_and_keys_survive_a_restart_and_the_revision_continues() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlPlaneHandle::start(dir.path()).await;
    ctl(
        &control,
        &[
            "providers",
            "add",
            "main",
            "--type",
            "openai",
            "--base-url",
            "http://127.0.0.1:9/v1",
        ],
    )
    .await
    .ok();
    let file = dir.path().join("keys.txt");
    std::fs::write(&file, format!("# imported keys\n\n{}", key_lines(0..1000))).unwrap();
    let added = ctl(
        &control,
        &[
            "-o",
            "json",
            "keys",
            "add",
            "--provider",
            "main",
            "--file",
            file.to_str().unwrap(),
        ],
    )
    .await
    .json();
    assert_eq!(added["added"], 1000);
    assert_eq!(added["skipped"], 2);
    assert_eq!(added["revision"], 2, "one bulk add is one revision");
    let admin_token = control.admin_token.clone();
    control.stop().await;

    let control = ControlPlaneHandle::start(dir.path()).await;
    assert_eq!(
        control.admin_token, admin_token,
        "the generated token is kept in the data dir"
    );
    let keys = all_keys(&control).await;
    assert_eq!(keys.len(), 1000);
    let ids: HashSet<&str> = keys.iter().map(|k| k["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 1000);
    for key in &keys {
        let masked = key["masked"].as_str().unwrap();
        assert!(
            masked.starts_with("sk-tes") && masked.ends_with("mnop") && masked.contains("..."),
            "{masked}"
        );
        assert_eq!(key["state"], "active");
        assert!(
            key.get("secret").is_none_or(|s| s.as_str() == Some("")),
            "no secret in output: {key}"
        );
    }
    let provider = ctl(&control, &["-o", "json", "providers", "get", "main"])
        .await
        .json();
    assert_eq!(
        provider["provider"]["base_url"], "http://127.0.0.1:9/v1",
        "{provider}"
    );
    assert_eq!(revision(&control).await, 2);
    let out = ctl(
        &control,
        &["-o", "json", "providers", "add", "second", "--type", "mock"],
    )
    .await
    .json();
    assert_eq!(out["revision"], 3, "{out}");
    control.stop().await;
}

#[tokio::test]
async fn concurrent_overlapping_adds_leave_no_duplicate_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlPlaneHandle::start(dir.path()).await;
    ctl(&control, &["providers", "add", "main", "--type", "mock"])
        .await
        .ok();
    // Four clients, each with 600 keys; neighbours overlap by 300: 1,500 distinct keys.
    let files: Vec<String> = (0..4)
        .map(|c| {
            let path = dir.path().join(format!("keys-{c}.txt"));
            std::fs::write(&path, key_lines(c * 300..c * 300 + 600)).unwrap();
            path.to_str().unwrap().to_string()
        })
        .collect();
    let runs = files.iter().map(|file| {
        let endpoint = control.endpoint();
        let token = control.admin_token.clone();
        let file = file.clone();
        async move {
            run_fulcrumctl(
                &endpoint,
                Some(&token),
                &[
                    "-o",
                    "json",
                    "keys",
                    "add",
                    "--provider",
                    "main",
                    "--file",
                    &file,
                ],
                None,
            )
            .await
            .json()
        }
    });
    let results = futures::future::join_all(runs).await;
    let added: u64 = results.iter().map(|r| r["added"].as_u64().unwrap()).sum();
    let duplicates: u64 = results
        .iter()
        .map(|r| r["duplicates"].as_u64().unwrap())
        .sum();
    assert_eq!(added, 1500, "{results:?}");
    assert_eq!(duplicates, 4 * 600 - 1500);
    let keys = all_keys(&control).await;
    assert_eq!(keys.len(), 1500);
    let ids: HashSet<&str> = keys.iter().map(|k| k["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 1500);
    let rev = revision(&control).await;
    assert!(
        (2..=5).contains(&rev),
        "one revision per client write at most, got {rev}"
    );
    control.stop().await;
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlPlaneHandle::start(dir.path()).await;
    ctl(&control, &["providers", "add", "main", "--type", "mock"])
        .await
        .ok();
    let added = ctl(
        &control,
        &[
            "-o",
            "json",
            "keys",
            "add",
            "--provider",
            "main",
            "sk-live-0123456789abcdef",
        ],
    )
    .await
    .json();
    let key_id = added["results"][0]["id"].as_str().unwrap().to_string();
    let before = revision(&control).await;

    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "keys",
                "add",
                "--provider",
                "nope",
                "sk-live-0123456789abcdef",
            ],
            "provider \"nope\" not found",
        ),
        (
            vec![
                "providers",
                "add",
                "x",
                "--type",
                "openai",
                "--base-url",
                "not a url",
            ],
            "invalid base URL",
        ),
        (
            vec![
                "providers",
                "add",
                "x",
                "--type",
                "openai",
                "--base-url",
                "ftp://host/v1",
            ],
            "scheme must be http or https",
        ),
        (
            vec!["providers", "add", "x", "--type", "azure"],
            "unknown provider type",
        ),
        (
            vec!["providers", "add", "Bad Name", "--type", "mock"],
            "invalid provider name",
        ),
        (
            vec!["providers", "add", "main", "--type", "mock"],
            "provider \"main\" already exists",
        ),
        (
            vec!["providers", "get", "ghost"],
            "provider \"ghost\" not found",
        ),
        (vec!["providers", "remove", "main"], "still has 1 key"),
        (
            vec!["keys", "disable", &key_id, "0123456789abcdef"],
            "0123456789abcdef",
        ),
        (vec!["keys", "remove", "not-an-id"], "16 lowercase hex"),
        (
            vec!["keys", "list", "--state", "sleepy"],
            "unknown key state",
        ),
        (
            vec!["routes", "set", "gpt-*", "--target", "ghost"],
            "provider \"ghost\", which does not exist",
        ),
        (
            vec!["tokens", "revoke", "ghost"],
            "client token \"ghost\" not found",
        ),
        (
            vec!["settings", "set", "max_failures", "0"],
            "expected an integer from 1",
        ),
        (
            vec!["settings", "set", "no_such_setting", "1"],
            "unknown setting",
        ),
        (
            vec!["settings", "get", "no_such_setting"],
            "unknown setting",
        ),
    ];
    for (args, needle) in &cases {
        ctl(&control, args).await.fails_with(needle);
    }

    // Bad credentials and endpoints.
    run_fulcrumctl(&control.endpoint(), Some("wrong-token"), &["status"], None)
        .await
        .fails_with("refused the admin token");
    run_fulcrumctl(&control.endpoint(), None, &["status"], None)
        .await
        .fails_with("FULCRUM_TOKEN");
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", unused.local_addr().unwrap());
    drop(unused);
    run_fulcrumctl(&dead, Some(&control.admin_token), &["status"], None)
        .await
        .fails_with("cannot reach the control plane");

    // Nothing was applied, not even half of the two-id disable.
    assert_eq!(revision(&control).await, before);
    let keys = all_keys(&control).await;
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["state"], "active");

    // Invalid lines in a bulk add are reported per line; the valid ones are added.
    let out = run_fulcrumctl(
        &control.endpoint(),
        Some(&control.admin_token),
        &["keys", "add", "--provider", "main", "--file", "-"],
        Some(b"sk-live-aaaaaaaaaaaaaaaa\nshort\nwith space inside\nsk-live-0123456789abcdef\n"),
    )
    .await;
    assert!(
        out.ok().contains("added 1, duplicates 1, invalid 2"),
        "{out:#?}"
    );
    assert!(out.stderr.contains("line 2"), "{out:#?}");
    assert!(
        !out.stderr.contains("short\n") && !out.stdout.contains("sk-live-aaaaaaaaaaaaaaaa"),
        "no secret printed: {out:#?}"
    );
    control.stop().await;
}

#[tokio::test]
async fn a_data_plane_shows_in_status_and_follows_changes_as_deltas() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlPlaneHandle::start(dir.path()).await;
    ctl(&control, &["providers", "add", "main", "--type", "mock"])
        .await
        .ok();
    ctl(
        &control,
        &[
            "keys",
            "add",
            "--provider",
            "main",
            "sk-live-0123456789abcdef",
        ],
    )
    .await
    .ok();

    let data_plane = DataPlaneHandle::start(&control.endpoint(), &control.join_token, "dp-1").await;
    data_plane.wait_for_revision(2).await;
    let status = eventually(
        "status lists dp-1 at revision 2",
        Duration::from_secs(10),
        || async {
            let status = ctl(&control, &["-o", "json", "status"]).await.json();
            let nodes = status["data_planes"].as_array().unwrap();
            nodes
                .iter()
                .any(|n| n["node_id"] == "dp-1" && n["applied_revision"] == 2)
                .then_some(status.clone())
        },
    )
    .await;
    assert_eq!(status["revision"], 2);
    assert_eq!(data_plane.runtime().stats().snapshots_applied, 1);

    ctl(
        &control,
        &[
            "keys",
            "add",
            "--provider",
            "main",
            "sk-live-fedcba9876543210",
        ],
    )
    .await
    .ok();
    data_plane.wait_for_revision(3).await;
    let stats = data_plane.runtime().stats();
    assert_eq!(
        (stats.snapshots_applied, stats.deltas_applied),
        (1, 1),
        "{stats:?}"
    );
    assert_eq!(data_plane.runtime().load().unwrap().keys.len(), 2);
    eventually(
        "status shows dp-1 at revision 3",
        Duration::from_secs(10),
        || async {
            let status = ctl(&control, &["-o", "json", "status"]).await.json();
            status["data_planes"][0]["applied_revision"]
                .as_u64()
                .filter(|r| *r == 3)
        },
    )
    .await;
    let table = ctl(&control, &["status"]).await;
    assert!(table.ok().contains("dp-1"), "{table:#?}");

    // A data plane with the wrong join token never becomes ready or shows up.
    let intruder =
        DataPlaneHandle::start(&control.endpoint(), "not-the-join-token", "dp-bad").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!intruder.runtime().is_ready());
    let status = ctl(&control, &["-o", "json", "status"]).await.json();
    assert_eq!(
        status["data_planes"].as_array().unwrap().len(),
        1,
        "{status}"
    );
    intruder.stop().await;
    data_plane.stop().await;
    control.stop().await;
}
