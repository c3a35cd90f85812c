//! Official provider SDKs (Python) as test clients: a venv under the workspace's target
//! directory holding the pinned packages of `tests/sdk/requirements.txt`, and a runner
//! for the scripts in `tests/sdk/` that print one JSON document.
//!
//! The venv is `<target>/sdk-venv` (or `$FULCRUM_SDK_VENV`). [`python_with`] installs a
//! package only when the venv's marker for it (`.fulcrum-installed/<name>`, holding the
//! pinned requirement line) is missing or differs, so after the first run it costs a few
//! file reads. Test binaries run in parallel processes (nextest), so installs are
//! serialised by a lock directory (`<venv>.lock`, created atomically, holding the owner's
//! pid; a lock whose owner has died, or older than [`STALE_LOCK`], is broken).
//!
//! Nothing here skips: a missing `python3`, a failing `venv` or `pip` panics with the
//! command's output, because a skipped test is a defect.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

/// Longest wait for another process's install before giving up.
const LOCK_WAIT: Duration = Duration::from_secs(600);
/// A lock directory older than this is taken to be left over from a killed process.
const STALE_LOCK: Duration = Duration::from_secs(900);
/// Longest run of one SDK script.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

/// `tests/sdk/`: the scripts and `requirements.txt`.
pub fn sdk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk")
}

/// The venv's directory: `$FULCRUM_SDK_VENV`, else `<target>/sdk-venv`, where `<target>`
/// is found from the running test binary (`<target>/<profile>/deps/<test>`).
pub fn venv_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FULCRUM_SDK_VENV") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let from_exe = exe
        .parent()
        .filter(|deps| deps.file_name().is_some_and(|n| n == "deps"))
        .and_then(Path::parent)
        .and_then(Path::parent)
        .map(Path::to_path_buf);
    let target = from_exe
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("sdk-venv")
}

/// The venv's Python interpreter once `packages` (names as pinned in
/// `tests/sdk/requirements.txt`, e.g. `"openai"`) are installed in it at their pinned
/// versions. Blocking: call it before the test starts its servers, or from
/// `spawn_blocking`. Panics with the command's output if anything fails.
pub fn python_with(packages: &[&str]) -> PathBuf {
    static READY: Mutex<Option<HashSet<String>>> = Mutex::new(None);

    let venv = venv_dir();
    let python = venv.join("bin").join("python");
    let pins = pinned(packages);
    let mut ready = READY.lock().unwrap_or_else(PoisonError::into_inner);
    let ready = ready.get_or_insert_with(HashSet::new);
    if pins.iter().all(|pin| ready.contains(pin)) {
        return python;
    }

    let _lock = LockDir::acquire(&lock_path(&venv));
    if !python.exists() {
        create_venv(&venv);
    }
    let markers = venv.join(".fulcrum-installed");
    let missing: Vec<&String> = pins
        .iter()
        .zip(packages)
        .filter(|(pin, name)| {
            std::fs::read_to_string(markers.join(name)).ok().as_deref() != Some(pin.as_str())
        })
        .map(|(pin, _)| pin)
        .collect();
    if !missing.is_empty() {
        let started = Instant::now();
        let mut pip = Command::new(&python);
        pip.args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "--quiet",
        ])
        .args(&missing);
        let output = run(&mut pip);
        check(
            &output,
            &format!("pip install {missing:?} into {}", venv.display()),
        );
        std::fs::create_dir_all(&markers).expect("create the venv's marker directory");
        for (pin, name) in pins.iter().zip(packages) {
            std::fs::write(markers.join(name), pin).expect("write an install marker");
        }
        eprintln!(
            "sdk: installed {missing:?} into {} in {:.1}s",
            venv.display(),
            started.elapsed().as_secs_f64()
        );
    }
    ready.extend(pins);
    python
}

/// Runs `tests/sdk/<script>` with `python` and `args`, and returns the JSON document it
/// prints. Panics if it does not exit 0 within two minutes or prints anything else.
pub async fn run_script(python: &Path, script: &str, args: &[&str]) -> serde_json::Value {
    let path = sdk_dir().join(script);
    let mut command = tokio::process::Command::new(python);
    command
        .arg(&path)
        .args(args)
        // Keep `tests/sdk/` free of `__pycache__`.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        // Loopback must never go through a proxy from the environment (httpx honours them).
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        // Only what the script is given: no stray client configuration from the shell.
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("OPENAI_ORG_ID")
        .env_remove("OPENAI_PROJECT_ID")
        .kill_on_drop(true);
    let output = tokio::time::timeout(SCRIPT_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("{script} {args:?} ran longer than {SCRIPT_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("cannot run {} {}: {e}", python.display(), path.display()));
    check(&output, &format!("{script} {args:?}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "{script} {args:?} printed no JSON document ({e}):\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// The requirement line (`name==version`) of each of `packages`.
fn pinned(packages: &[&str]) -> Vec<String> {
    let file = sdk_dir().join("requirements.txt");
    let text = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .collect();
    packages
        .iter()
        .map(|package| {
            let line = lines
                .iter()
                .find(|l| {
                    l.split_once("==")
                        .is_some_and(|(name, _)| name.trim().eq_ignore_ascii_case(package))
                })
                .unwrap_or_else(|| {
                    panic!(
                        "{package} is not pinned as `{package}==VERSION` in {}",
                        file.display()
                    )
                });
            (*line).to_string()
        })
        .collect()
}

fn create_venv(venv: &Path) {
    if venv.exists() {
        // A venv without an interpreter is a leftover from an interrupted run.
        std::fs::remove_dir_all(venv)
            .unwrap_or_else(|e| panic!("cannot remove the broken venv {}: {e}", venv.display()));
    }
    if let Some(parent) = venv.parent() {
        std::fs::create_dir_all(parent).expect("create the venv's parent directory");
    }
    let output = run(Command::new("python3").arg("-m").arg("venv").arg(venv));
    check(
        &output,
        &format!(
            "python3 -m venv {} (needs python3 with the venv module, e.g. apt-get install python3-venv)",
            venv.display()
        ),
    );
}

fn run(command: &mut Command) -> Output {
    command.output().unwrap_or_else(|e| {
        panic!(
            "cannot run {:?}: {e} (the SDK tests need python3 on PATH)",
            command.get_program()
        )
    })
}

fn check(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn lock_path(venv: &Path) -> PathBuf {
    let mut name = venv.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    venv.with_file_name(name)
}

/// An inter-process lock: a directory only one process can create; removed on drop.
struct LockDir(PathBuf);

impl LockDir {
    fn acquire(path: &Path) -> Self {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create the lock's parent directory");
        }
        let deadline = Instant::now() + LOCK_WAIT;
        loop {
            match std::fs::create_dir(path) {
                Ok(()) => {
                    std::fs::write(path.join("pid"), std::process::id().to_string())
                        .expect("write the lock's pid");
                    return Self(path.to_path_buf());
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if Self::is_stale(path) {
                        // Rename first so that only one waiter breaks it.
                        let broken = path.with_extension(format!("broken-{}", std::process::id()));
                        if std::fs::rename(path, &broken).is_ok() {
                            let _ = std::fs::remove_dir_all(&broken);
                        }
                        continue;
                    }
                }
                Err(e) => panic!("cannot create the lock {}: {e}", path.display()),
            }
            assert!(
                Instant::now() < deadline,
                "waited {LOCK_WAIT:?} for {}; remove it if no test is installing SDKs",
                path.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Its owner has exited (Linux: no `/proc/<pid>`), or it is older than [`STALE_LOCK`].
    fn is_stale(path: &Path) -> bool {
        let pid = std::fs::read_to_string(path.join("pid")).ok();
        if let Some(pid) = pid.as_deref().map(str::trim).filter(|p| !p.is_empty())
            && Path::new("/proc/self").exists()
            && !Path::new("/proc").join(pid).exists()
        {
            return true;
        }
        std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age > STALE_LOCK)
    }
}

impl Drop for LockDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
