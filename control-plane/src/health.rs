//! Key health: the control plane's decision about each key, from the events every data
//! plane reports, and the timer that brings cooled keys back.
//!
//! A decision is a change of the key's stored state, so it reaches every data plane as a
//! delta on the config stream. Consecutive-failure counts live here in memory: they are
//! aggregated over all data planes and only their crossing of `max_failures` is stored.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fulcrum_proto::model::{KeyState, Settings};
use fulcrum_proto::pb;
use tokio::sync::{Notify, watch};

use crate::error::Error;
use crate::snapshot::effective_settings;
use crate::store::{Store, TreeId, now_unix_ms};

/// A decided change of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub state: KeyState,
    pub reason: String,
    /// End of a `cooling` state; 0 otherwise.
    pub until_unix_ms: i64,
}

/// Decides what one event means for a key, or `None` when its state stays as it is.
///
/// `failures` is the key's count of consecutive failures including this event. An
/// operator's `disabled` is never overridden; a more severe automatic state is not
/// replaced by a milder one (`invalid` > `failing` > `cooling`), except by a success, which
/// proves the key works.
pub fn decide(
    key: &pb::ProviderKey,
    event: &pb::KeyEvent,
    failures: u32,
    settings: &Settings,
    node: &str,
) -> Option<Decision> {
    let state = KeyState::from_pb(key.state)?;
    if state == KeyState::Disabled {
        return None;
    }
    let kind = pb::KeyEventKind::try_from(event.kind).ok()?;
    let detail = if event.detail.is_empty() {
        String::new()
    } else {
        format!(": {}", event.detail)
    };
    match kind {
        pb::KeyEventKind::Unspecified => None,
        pb::KeyEventKind::Success => matches!(
            state,
            KeyState::Cooling | KeyState::Failing | KeyState::Invalid
        )
        .then(|| Decision {
            state: KeyState::Active,
            reason: format!("recovered: a request succeeded on {node}"),
            until_unix_ms: 0,
        }),
        pb::KeyEventKind::Unauthorized => (state != KeyState::Invalid).then(|| Decision {
            state: KeyState::Invalid,
            reason: format!(
                "upstream refused the key ({}) on {node}{detail}",
                event.http_status
            ),
            until_unix_ms: 0,
        }),
        pb::KeyEventKind::RateLimited => {
            if matches!(state, KeyState::Invalid | KeyState::Failing) {
                return None;
            }
            let wait = if event.retry_after_ms > 0 {
                event.retry_after_ms
            } else {
                i64::try_from(settings.cooldown_default.as_millis()).unwrap_or(i64::MAX)
            };
            let until = event.at_unix_ms.saturating_add(wait);
            // Two data planes may report the same 429: keep the later end, never shorten.
            if state == KeyState::Cooling && key.state_until_unix_ms >= until {
                return None;
            }
            Some(Decision {
                state: KeyState::Cooling,
                reason: format!("rate limited (429) on {node}{detail}"),
                until_unix_ms: until,
            })
        }
        pb::KeyEventKind::Failure => {
            if failures < settings.max_failures
                || matches!(state, KeyState::Invalid | KeyState::Failing)
            {
                return None;
            }
            Some(Decision {
                state: KeyState::Failing,
                reason: format!("{failures} consecutive failures, last on {node}{detail}"),
                until_unix_ms: 0,
            })
        }
    }
}

/// The key-health decider and cooldown timer; cheap to clone.
#[derive(Clone)]
pub struct KeyHealth {
    store: Store,
    inner: Arc<Mutex<HealthState>>,
    /// Wakes the cooldown timer when an earlier end is added.
    timer: Arc<Notify>,
}

#[derive(Default)]
struct HealthState {
    failures: HashMap<String, u32>,
    /// (until, key id) of every key known to be cooling.
    cooling: BTreeSet<(i64, String)>,
}

impl KeyHealth {
    /// Loads the cooling keys from the store, so a restart keeps their timers.
    pub fn new(store: Store) -> Result<Self, Error> {
        let mut state = HealthState::default();
        let (keys, _) = store.keys_page(None, Some(KeyState::Cooling), None, usize::MAX)?;
        for key in keys {
            state.cooling.insert((key.state_until_unix_ms, key.id));
        }
        Ok(Self {
            store,
            inner: Arc::new(Mutex::new(state)),
            timer: Arc::new(Notify::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HealthState> {
        // Counters and timers only: a half-finished update by a panicking thread is harmless.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies one batch of events reported by `node` in one store transaction. Returns
    /// the revision it committed, if any key changed.
    pub async fn apply(&self, node: &str, events: Vec<pb::KeyEvent>) -> Result<Option<u64>, Error> {
        if events.is_empty() {
            return Ok(None);
        }
        // Count failures first: the transaction may run more than once, the count must not.
        let counted: Vec<(pb::KeyEvent, u32)> = {
            let mut state = self.lock();
            events
                .into_iter()
                .map(|event| {
                    let count = match pb::KeyEventKind::try_from(event.kind) {
                        Ok(pb::KeyEventKind::Failure) => {
                            let n = state.failures.entry(event.key_id.clone()).or_default();
                            *n += 1;
                            *n
                        }
                        Ok(pb::KeyEventKind::Success) => {
                            state.failures.remove(&event.key_id);
                            0
                        }
                        _ => 0,
                    };
                    (event, count)
                })
                .collect()
        };
        let node = node.to_string();
        let (changed, revision) = self
            .store
            .commit_prepared(
                |store| Settings::from_values(&effective_settings(store)?).map_err(Error::from),
                move |tx, settings| {
                    let mut changed = Vec::new();
                    let mut keys: HashMap<&str, pb::ProviderKey> = HashMap::new();
                    for (event, failures) in &counted {
                        let key = match keys.get(event.key_id.as_str()) {
                            Some(key) => key.clone(),
                            // Keys removed since the data plane used them are ignored.
                            None => match tx.get::<pb::ProviderKey>(TreeId::Keys, &event.key_id)? {
                                Some(key) => key,
                                None => continue,
                            },
                        };
                        let Some(decision) = decide(&key, event, *failures, settings, &node) else {
                            keys.insert(&event.key_id, key);
                            continue;
                        };
                        let mut key = key;
                        key.state = decision.state.to_pb() as i32;
                        key.state_reason = decision.reason;
                        key.state_until_unix_ms = decision.until_unix_ms;
                        key.state_changed_unix_ms = tx.now_unix_ms();
                        tx.put(TreeId::Keys, &event.key_id, &key)?;
                        changed.push((key.id.clone(), decision.state, decision.until_unix_ms));
                        keys.insert(&event.key_id, key);
                    }
                    Ok(changed)
                },
            )
            .await?;
        let mut state = self.lock();
        let mut wake = false;
        for (id, key_state, until) in changed {
            tracing::info!(key = %id, state = %key_state, until, "key state decided");
            match key_state {
                KeyState::Cooling => {
                    wake |= state
                        .cooling
                        .first()
                        .is_none_or(|(first, _)| until < *first);
                    state.cooling.insert((until, id));
                }
                // Its failures are spent on this decision; a re-enabled key starts from 0.
                KeyState::Failing => {
                    state.failures.remove(&id);
                }
                _ => {}
            }
        }
        drop(state);
        if wake {
            self.timer.notify_one();
        }
        Ok(revision)
    }

    /// Brings cooling keys back to `active` when their time is up, until `shutdown`.
    pub async fn run_cooldown_timer(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            let next = self.lock().cooling.first().map(|(until, _)| *until);
            let wait = match next {
                Some(until) => {
                    Duration::from_millis(u64::try_from(until - now_unix_ms()).unwrap_or(0))
                }
                None => Duration::from_secs(3600),
            };
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return,
                () = self.timer.notified() => continue,
                () = tokio::time::sleep(wait) => {}
            }
            if let Err(e) = self.expire().await {
                tracing::warn!(error = %e, "cannot end key cooldowns; retrying in 1s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    /// Ends every cooldown whose time is up, in one transaction.
    async fn expire(&self) -> Result<(), Error> {
        let now = now_unix_ms();
        let due: Vec<String> = {
            let mut state = self.lock();
            let mut due = Vec::new();
            while let Some((until, _)) = state.cooling.first() {
                if *until > now {
                    break;
                }
                if let Some((_, id)) = state.cooling.pop_first() {
                    due.push(id);
                }
            }
            due
        };
        if due.is_empty() {
            return Ok(());
        }
        let (count, revision) = self
            .store
            .commit(move |tx| {
                let mut count = 0u64;
                for id in &due {
                    let Some(mut key) = tx.get::<pb::ProviderKey>(TreeId::Keys, id)? else {
                        continue;
                    };
                    // Enabled, disabled or cooled again since: not ours to change.
                    if key.state != pb::KeyState::Cooling as i32 || key.state_until_unix_ms > now {
                        continue;
                    }
                    key.state = pb::KeyState::Active as i32;
                    key.state_reason = "cooldown over".into();
                    key.state_until_unix_ms = 0;
                    key.state_changed_unix_ms = tx.now_unix_ms();
                    tx.put(TreeId::Keys, id, &key)?;
                    count += 1;
                }
                Ok(count)
            })
            .await?;
        if count > 0 {
            tracing::info!(keys = count, ?revision, "cooldowns over");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(state: pb::KeyState, until: i64) -> pb::ProviderKey {
        pb::ProviderKey {
            id: "0123456789abcdef".into(),
            state: state as i32,
            state_until_unix_ms: until,
            ..Default::default()
        }
    }

    fn event(kind: pb::KeyEventKind, retry_after_ms: i64) -> pb::KeyEvent {
        pb::KeyEvent {
            key_id: "0123456789abcdef".into(),
            kind: kind as i32,
            at_unix_ms: 1_000_000,
            retry_after_ms,
            http_status: 429,
            detail: String::new(),
        }
    }

    #[test]
    fn rate_limits_cool_until_retry_after_or_the_default() {
        let settings = Settings::default();
        let d = decide(
            &key(pb::KeyState::Active, 0),
            &event(pb::KeyEventKind::RateLimited, 2_000),
            0,
            &settings,
            "dp",
        )
        .unwrap();
        assert_eq!((d.state, d.until_unix_ms), (KeyState::Cooling, 1_002_000));
        let d = decide(
            &key(pb::KeyState::Active, 0),
            &event(pb::KeyEventKind::RateLimited, 0),
            0,
            &settings,
            "dp",
        )
        .unwrap();
        assert_eq!(d.until_unix_ms, 1_000_000 + 60_000);
        // An earlier end never shortens a cooldown.
        assert_eq!(
            decide(
                &key(pb::KeyState::Cooling, 5_000_000),
                &event(pb::KeyEventKind::RateLimited, 2_000),
                0,
                &settings,
                "dp"
            ),
            None
        );
    }

    #[test]
    fn failures_count_up_to_the_limit() {
        let settings = Settings::default();
        let active = key(pb::KeyState::Active, 0);
        let failure = event(pb::KeyEventKind::Failure, 0);
        assert_eq!(decide(&active, &failure, 2, &settings, "dp"), None);
        let d = decide(&active, &failure, 3, &settings, "dp").unwrap();
        assert_eq!(d.state, KeyState::Failing);
        assert!(
            d.reason.starts_with("3 consecutive failures"),
            "{}",
            d.reason
        );
    }

    #[test]
    fn disabled_is_never_overridden_and_success_recovers() {
        let settings = Settings::default();
        for kind in [
            pb::KeyEventKind::Success,
            pb::KeyEventKind::RateLimited,
            pb::KeyEventKind::Unauthorized,
            pb::KeyEventKind::Failure,
        ] {
            assert_eq!(
                decide(
                    &key(pb::KeyState::Disabled, 0),
                    &event(kind, 0),
                    99,
                    &settings,
                    "dp"
                ),
                None
            );
        }
        let d = decide(
            &key(pb::KeyState::Failing, 0),
            &event(pb::KeyEventKind::Success, 0),
            0,
            &settings,
            "dp",
        )
        .unwrap();
        assert_eq!(d.state, KeyState::Active);
        assert_eq!(
            decide(
                &key(pb::KeyState::Active, 0),
                &event(pb::KeyEventKind::Success, 0),
                0,
                &settings,
                "dp"
            ),
            None
        );
        // A 429 does not soften an invalid key.
        assert_eq!(
            decide(
                &key(pb::KeyState::Invalid, 0),
                &event(pb::KeyEventKind::RateLimited, 0),
                0,
                &settings,
                "dp"
            ),
            None
        );
        let d = decide(
            &key(pb::KeyState::Cooling, 9),
            &event(pb::KeyEventKind::Unauthorized, 0),
            0,
            &settings,
            "dp",
        )
        .unwrap();
        assert_eq!(d.state, KeyState::Invalid);
    }
}
