//! The binary's own argument handling. (Its presence also makes `cargo test --workspace`
//! build the `fulcrumctl` binary that the end-to-end tests in `tests/` run.)

use std::process::Command;

fn fulcrumctl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fulcrumctl"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .env_remove("FULCRUM_TOKEN")
        .output()
        .expect("run fulcrumctl")
}

#[test]
fn help_lists_the_commands() {
    let out = fulcrumctl(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for command in [
        "up",
        "providers",
        "keys",
        "routes",
        "tokens",
        "settings",
        "status",
        "logs",
        "stats",
    ] {
        assert!(help.contains(command), "help lacks {command}: {help}");
    }
}

#[test]
fn usage_errors_exit_2_and_missing_token_exits_1() {
    let out = fulcrumctl(&["providers", "add", "x"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--type"));
    let out = fulcrumctl(&["--endpoint", "http://127.0.0.1:9", "status"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: ") && stderr.contains("FULCRUM_TOKEN"),
        "{stderr}"
    );
}

#[test]
fn log_and_stats_input_is_checked_before_connecting() {
    for (args, needle) in [
        (&["logs", "search", "--status", "42"][..], "invalid status"),
        (&["logs", "search", "--since", "5y"][..], "invalid duration"),
        (
            &["logs", "search", "--from", "yesterday"][..],
            "invalid time",
        ),
        (&["logs", "tail", "--key", "nope"][..], "invalid key id"),
        (&["stats", "--window", "2h"][..], "--window"),
        (
            &["stats", "--by", "model", "--key", "0123456789abcdef"][..],
            "--key needs --by key",
        ),
        (&["keys", "usage", "xyz"][..], "invalid key id"),
    ] {
        let out = fulcrumctl(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}
