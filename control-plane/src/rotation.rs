//! Master-key rotation: re-seals the key records still sealed with the previous master
//! key, in batches of one transaction each, while the control plane serves.
//!
//! Serving never waits for it: the config stream opens records with either key, new
//! records are sealed with the current key, and a state change written by key health
//! keeps whatever sealed form the record has. Once the job is done the previous key is no
//! longer needed (and a start without it succeeds).

use std::time::Duration;

use tokio::sync::watch;

use crate::store::Store;

/// Records per transaction: small enough that a batch holds the writer lock for
/// milliseconds, so admin writes and key-health decisions are not held up.
pub const BATCH: usize = 500;

/// Re-seals until every record is sealed with the current key, or `stop` turns true.
pub async fn run(store: Store, mut stop: watch::Receiver<bool>) {
    let Some(keyring) = store.keyring() else {
        return;
    };
    let current = keyring.current().id().to_string();
    let mut after: Option<String> = None;
    let mut total = 0u64;
    loop {
        if *stop.borrow() {
            tracing::info!(
                resealed = total,
                "master key rotation paused by shutdown; it goes on at the next start"
            );
            return;
        }
        let batch_store = store.clone();
        let from = after.clone();
        let outcome =
            tokio::task::spawn_blocking(move || batch_store.reseal_batch(from.as_deref(), BATCH))
                .await;
        match outcome {
            Ok(Ok((count, next))) => {
                total += count;
                if count > 0 {
                    if let Err(e) = store.flush().await {
                        tracing::error!(error = %e, "cannot flush re-sealed records");
                    }
                    tracing::debug!(resealed = total, "master key rotation progress");
                }
                if next.is_none() {
                    if total > 0 {
                        tracing::info!(
                            resealed = total,
                            key_id = %current,
                            "master key rotation done: every provider key is sealed with the current master key; the previous key is no longer needed; the next start rewrites the store so that no old ciphertext stays in its files"
                        );
                    }
                    return;
                }
                after = next;
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "master key rotation batch failed; retrying in 5 s");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = stop.changed() => {}
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "master key rotation task failed");
                return;
            }
        }
    }
}
