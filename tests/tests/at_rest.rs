//! Provider keys at rest: sealed with the master key in sled, never on disk in clear; a
//! wrong or missing master key refuses to start; a plaintext store migrates; a master-key
//! rotation re-seals every record while a data plane keeps serving.
#![allow(clippy::unwrap_used, reason = "a panic is how a test reports failure")]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use fulcrum_control::store::secrets::{KeySource, MasterKey, MasterKeys};
use fulcrum_control::store::{Store, TreeId};
use fulcrum_proto::model::{Secret, key_id};
use fulcrum_proto::pb;
use fulcrum_tests::gateway::{Gateway, PROVIDER};
use fulcrum_tests::mock::http_request;
use fulcrum_tests::{
    ControlPlaneHandle, DataPlaneHandle, MockUpstream, eventually, run_fulcrumctl,
};

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}"#;
const KEY_A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const KEY_B: &str = "1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100";

fn secrets(tag: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("sk-{tag}-{i:03}-Zq7XvB3nKp9WmT4rLs2Y"))
        .collect()
}

fn keys(current: &str, previous: Option<&str>) -> MasterKeys {
    MasterKeys {
        current: Some(KeySource::Value(Secret::new(current.to_string()))),
        previous: previous.map(|p| KeySource::Value(Secret::new(p.to_string()))),
    }
}

fn key_id_of(text: &str) -> String {
    MasterKey::parse(text).unwrap().id().to_string()
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The (file, needle) pairs where a needle occurs in the raw bytes of a file under `dir`.
fn grep(dir: &Path, needles: &[String]) -> Vec<(PathBuf, String)> {
    let mut hits = Vec::new();
    for file in files(dir) {
        let bytes = std::fs::read(&file).unwrap();
        for needle in needles {
            if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                hits.push((file.clone(), needle.clone()));
            }
        }
    }
    hits
}

/// The files under `dir` that hold any of `needles` (raw bytes).
fn grep_bytes(dir: &Path, needles: &[Vec<u8>]) -> Vec<PathBuf> {
    files(dir)
        .into_iter()
        .filter(|file| {
            let bytes = std::fs::read(file).unwrap();
            needles
                .iter()
                .any(|n| bytes.windows(n.len()).any(|w| w == n.as_slice()))
        })
        .collect()
}

/// Each secret and its base64.
fn needles(secrets: &[String]) -> Vec<String> {
    secrets
        .iter()
        .flat_map(|s| [s.clone(), base64(s.as_bytes())])
        .collect()
}

async fn chat(plane: &DataPlaneHandle, token: &str) -> u16 {
    let auth = format!("Bearer {token}");
    http_request(
        plane.addr,
        "POST",
        "/v1/chat/completions",
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        CHAT.as_bytes(),
    )
    .await
    .status
}

async fn add_provider_and_keys(
    control: &ControlPlaneHandle,
    upstream: &MockUpstream,
    keys: &[String],
) {
    let mut admin = control.admin().await;
    admin
        .create_provider(pb::CreateProviderRequest {
            name: PROVIDER.into(),
            r#type: pb::ProviderType::Openai as i32,
            base_url: upstream.openai_base_url(),
            priority: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    let added = admin
        .add_keys(pb::AddKeysRequest {
            provider: PROVIDER.into(),
            keys: keys.to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(added.added, keys.len() as u64);
}

#[tokio::test]
async fn provider_keys_never_reach_the_disk_in_clear() {
    let secrets = secrets("atrest", 20);
    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let gw = Gateway::start(&refs, 1, &[]).await;
    // The data plane holds the secrets in full and calls the upstream with them.
    for _ in 0..secrets.len() {
        assert_eq!(chat(&gw.planes[0], &gw.token).await, 200);
    }
    for secret in &secrets {
        assert_eq!(gw.upstream.calls(secret), 1, "{secret}");
    }
    // Admin answers carry neither the secret nor its sealed form.
    let listed = gw
        .control
        .admin()
        .await
        .list_keys(pb::ListKeysRequest {
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(listed.len(), secrets.len());
    assert!(
        listed.iter().all(|k| k.secret.is_empty()
            && k.secret_sealed.is_empty()
            && k.secret_key_id.is_empty())
    );

    let Gateway {
        control,
        upstream,
        planes,
        token,
        dir,
    } = gw;
    for plane in planes {
        plane.stop().await;
    }
    let admin_token = control.admin_token.clone();
    control.stop().await;

    // Stopped and flushed: no file of the data dir holds a secret or its base64.
    let hits = grep(dir.path(), &needles(&secrets));
    assert!(hits.is_empty(), "secrets on disk: {hits:?}");
    // The grep does see what is stored in clear: key ids in sled's files, the admin token
    // in its file.
    let visible = grep(
        dir.path(),
        &[key_id(PROVIDER, &secrets[0]), admin_token.clone()],
    );
    assert!(
        visible
            .iter()
            .any(|(f, _)| f.starts_with(dir.path().join("store"))),
        "{visible:?}"
    );
    assert!(
        visible.iter().any(|(_, n)| *n == admin_token),
        "{visible:?}"
    );

    // Restarted with the master key generated on the first start, a new data plane gets
    // every secret and serves with them.
    let control = ControlPlaneHandle::start(dir.path()).await;
    let plane = DataPlaneHandle::start(&control.endpoint(), &control.join_token, "dp-again").await;
    plane.wait_for_revision(control.store().revision()).await;
    for _ in 0..secrets.len() {
        assert_eq!(chat(&plane, &token).await, 200);
    }
    for secret in &secrets {
        assert_eq!(upstream.calls(secret), 2, "{secret}");
    }
    plane.stop().await;
    control.stop().await;
    upstream.shutdown().await;
}

#[tokio::test]
async fn a_wrong_or_missing_master_key_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let any = "127.0.0.1:0".parse().unwrap();
    let control = ControlPlaneHandle::try_start_keyed(dir.path(), keys(KEY_A, None), any)
        .await
        .unwrap();
    let upstream = MockUpstream::start().await;
    add_provider_and_keys(&control, &upstream, &secrets("wrong", 3)).await;
    control.stop().await;
    assert!(
        !dir.path().join("master.key").exists(),
        "a configured key generates no file"
    );

    let err = ControlPlaneHandle::try_start_keyed(dir.path(), keys(KEY_B, None), any)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("the master key does not open this store"),
        "{err}"
    );
    assert!(
        err.contains(&key_id_of(KEY_A)) && err.contains(&key_id_of(KEY_B)),
        "{err}"
    );
    assert!(!err.contains(KEY_A) && !err.contains(KEY_B), "{err}");

    let err = ControlPlaneHandle::try_start_keyed(dir.path(), MasterKeys::default(), any)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("no master key is configured"), "{err}");
    assert!(err.contains(&key_id_of(KEY_A)), "{err}");
    assert!(!dir.path().join("master.key").exists(), "nothing generated");

    let err = ControlPlaneHandle::try_start_keyed(dir.path(), keys("c2hvcnQ=", None), any)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("32 bytes"), "{err}");

    // The operator's view: `fulcrumctl up` with the wrong key file exits non-zero with the
    // message, and serves nothing.
    let wrong = dir.path().join("wrong.key");
    std::fs::write(&wrong, format!("{KEY_B}\n")).unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let out = run_fulcrumctl(
        "http://127.0.0.1:1",
        None,
        &[
            "up",
            "--data-dir",
            data_dir,
            "--master-key-file",
            wrong.to_str().unwrap(),
            "--proxy-listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ],
        None,
    )
    .await;
    out.fails_with("the master key does not open this store");
    assert!(!out.stdout.contains("fulcrum is up"), "{out:#?}");

    // The right key still opens it, with every secret intact.
    let control = ControlPlaneHandle::try_start_keyed(dir.path(), keys(KEY_A, None), any)
        .await
        .unwrap();
    let plane = DataPlaneHandle::start(&control.endpoint(), &control.join_token, "dp").await;
    plane.wait_for_revision(control.store().revision()).await;
    let held = plane.runtime().load().unwrap();
    assert_eq!(held.keys.len(), 3);
    plane.stop().await;
    control.stop().await;
    upstream.shutdown().await;
}

#[tokio::test]
async fn a_plaintext_store_is_sealed_on_first_start() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = secrets("legacy", 5);
    {
        // A store as written before secrets were sealed: no keyring, secrets in clear.
        let store = Store::open(&dir.path().join("store"), 100).unwrap();
        store
            .commit_blocking(
                |_| Ok(()),
                |tx, ()| {
                    for secret in &secrets {
                        let id = key_id("legacy", secret);
                        tx.put(
                            TreeId::Keys,
                            &id,
                            &pb::ProviderKey {
                                id: id.clone(),
                                provider: "legacy".into(),
                                secret: secret.clone(),
                                state: pb::KeyState::Active as i32,
                                ..Default::default()
                            },
                        )?;
                    }
                    Ok(())
                },
            )
            .unwrap();
        store.flush().await.unwrap();
    }
    assert!(
        !grep(dir.path(), &secrets).is_empty(),
        "the legacy store holds secrets in clear"
    );

    let any = "127.0.0.1:0".parse().unwrap();
    let control = ControlPlaneHandle::try_start_keyed(dir.path(), keys(KEY_A, None), any)
        .await
        .unwrap();
    let mut found = 0;
    control
        .store()
        .visit_keys(|k| {
            assert!(k.secret.is_empty(), "{}", k.id);
            assert_eq!(k.secret_key_id, key_id_of(KEY_A));
            found += 1;
        })
        .unwrap();
    assert_eq!(found, secrets.len());
    control.stop().await;
    let hits = grep(dir.path(), &needles(&secrets));
    assert!(
        hits.is_empty(),
        "secrets left on disk after migration: {hits:?}"
    );
}

#[tokio::test]
async fn master_key_rotation_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = secrets("rotate", 600);
    let control = ControlPlaneHandle::try_start_keyed(
        dir.path(),
        keys(KEY_A, None),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let grpc = control.grpc_addr;
    let upstream = MockUpstream::start().await;
    add_provider_and_keys(&control, &upstream, &secrets).await;
    let token = control
        .admin()
        .await
        .create_client_token(pb::CreateClientTokenRequest { name: "app".into() })
        .await
        .unwrap()
        .into_inner()
        .token;
    let plane =
        Arc::new(DataPlaneHandle::start(&control.endpoint(), &control.join_token, "dp").await);
    plane.wait_for_revision(control.store().revision()).await;
    // The sealed forms under the old key, to look for on disk once the rotation is done.
    let mut old_ciphertexts = Vec::new();
    control
        .store()
        .visit_keys(|k| old_ciphertexts.push(k.secret_sealed.clone()))
        .unwrap();
    assert_eq!(old_ciphertexts.len(), secrets.len());
    assert!(old_ciphertexts.iter().all(|c| c.len() > 16));

    // Traffic runs through the whole rotation.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let traffic = {
        let (plane, stop, ok, failed, token) = (
            plane.clone(),
            stop.clone(),
            ok.clone(),
            failed.clone(),
            token.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match chat(&plane, &token).await {
                    200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };
    eventually("traffic flows", Duration::from_secs(5), || async {
        (ok.load(Ordering::Relaxed) > 20).then_some(())
    })
    .await;

    // Restart with the new key current and the old one previous.
    control.stop().await;
    let control = ControlPlaneHandle::try_start_keyed(dir.path(), keys(KEY_B, Some(KEY_A)), grpc)
        .await
        .unwrap();
    let mut security = control.security_with(&control.admin_token).await;
    let status = eventually("re-sealing done", Duration::from_secs(30), || {
        let mut security = security.clone();
        async move {
            let status = security
                .get_security_status(pb::GetSecurityStatusRequest {})
                .await
                .unwrap()
                .into_inner();
            (status.keys_pending_reseal == 0).then_some(status)
        }
    })
    .await;
    assert_eq!(status.master_key_id, key_id_of(KEY_B));
    assert_eq!(status.previous_master_key_id, key_id_of(KEY_A));
    assert_eq!(status.keys_total, secrets.len() as u64);

    // A key added after the rotation reaches the data plane through the new key.
    let fresh = "sk-after-rotation-Zq7XvB3nKp9WmT4rLs2Y".to_string();
    let revision = control
        .admin()
        .await
        .add_keys(pb::AddKeysRequest {
            provider: PROVIDER.into(),
            keys: vec![fresh.clone()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .revision;
    plane.wait_for_revision(revision).await;
    let before = ok.load(Ordering::Relaxed);
    eventually(
        "traffic after the rotation",
        Duration::from_secs(10),
        || async { (ok.load(Ordering::Relaxed) > before + 20).then_some(()) },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    traffic.await.unwrap();
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "every request was served"
    );
    let status = security
        .get_security_status(pb::GetSecurityStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.keys_pending_reseal, 0);
    control.stop().await;

    // On disk every record carries the new key's id, and no secret is in clear.
    {
        let store = Store::open(&dir.path().join("store"), 100).unwrap();
        let mut count = 0;
        store
            .visit_keys(|k| {
                assert_eq!(k.secret_key_id, key_id_of(KEY_B), "{}", k.id);
                assert!(k.secret.is_empty() && !k.secret_sealed.is_empty());
                count += 1;
            })
            .unwrap();
        assert_eq!(count, secrets.len() + 1);
    }
    let mut all = secrets.clone();
    all.push(fresh.clone());
    let hits = grep(dir.path(), &needles(&all));
    assert!(hits.is_empty(), "secrets on disk: {hits:?}");

    // The next start rewrites the store, so no ciphertext under the old key is left in
    // sled's files either (before, superseded versions may still sit in old segments).
    ControlPlaneHandle::try_start_keyed(dir.path(), keys(KEY_B, None), grpc)
        .await
        .unwrap()
        .stop()
        .await;
    let stale = grep_bytes(dir.path(), &old_ciphertexts);
    assert!(stale.is_empty(), "old ciphertext in {stale:?}");
    assert!(dir.path().join("store").exists());
    assert!(!dir.path().join("store.old").exists() && !dir.path().join("store.rewrite").exists());

    // The old key is no longer needed, and no longer opens the store.
    let err = ControlPlaneHandle::try_start_keyed(dir.path(), keys(KEY_A, None), grpc)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("the master key does not open this store"),
        "{err}"
    );
    let control = ControlPlaneHandle::try_start_keyed(dir.path(), keys(KEY_B, None), grpc)
        .await
        .unwrap();
    let again = DataPlaneHandle::start(&control.endpoint(), &control.join_token, "dp-2").await;
    again.wait_for_revision(control.store().revision()).await;
    // Round robin over every key: each one, the key added after the rotation included,
    // opens with the new key alone and reaches the upstream.
    upstream.reset_counts();
    for _ in 0..all.len() {
        assert_eq!(chat(&again, &token).await, 200);
    }
    for secret in &all {
        assert_eq!(upstream.calls(secret), 1, "{secret}");
    }
    again.stop().await;
    Arc::try_unwrap(plane).ok().unwrap().stop().await;
    control.stop().await;
    upstream.shutdown().await;
}
