//! Key health: the control plane's decision about each key, from the events every data
//! plane reports, and the timer that brings cooled and exhausted keys (and models) back.
//!
//! A decision is a change of the key's stored state, so it reaches every data plane as a
//! delta on the config stream; it is stored with its history entry and, for keys that
//! leave rotation, the first probe of the validation scheduler, in one transaction.
//! Consecutive-failure counts live here in memory: they are aggregated over all data
//! planes and only their crossing of `max_failures` is stored.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fulcrum_proto::model::{KeyState, Settings};
use fulcrum_proto::pb;
use tokio::sync::{Notify, watch};

use crate::error::Error;
use crate::probe::{self, Queue};
use crate::snapshot::effective_settings;
use crate::store::{Store, TreeId, now_unix_ms};
use crate::transitions::{self, Change, SOURCE_TIMER};

/// A decided change of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub state: KeyState,
    pub reason: String,
    /// End of a `cooling` or `exhausted` state; 0 otherwise.
    pub until_unix_ms: i64,
    /// For a per-model quota: the model (the key stays in its state for other models).
    pub model: String,
}

impl Decision {
    fn new(state: KeyState, reason: String, until_unix_ms: i64) -> Self {
        Self {
            state,
            reason,
            until_unix_ms,
            model: String::new(),
        }
    }

    fn change(&self) -> Change {
        Change {
            to: self.state,
            reason: self.reason.clone(),
            until_unix_ms: self.until_unix_ms,
            model: self.model.clone(),
        }
    }
}

/// When a used-up quota comes back: Gemini's daily quotas at midnight Pacific time, else
/// when the upstream said, else after `quota_reset_default`.
fn quota_reset(event: &pb::KeyEvent, settings: &Settings) -> i64 {
    if event.daily {
        return transitions::next_pacific_midnight(event.at_unix_ms);
    }
    let wait = if event.retry_after_ms > 0 {
        event.retry_after_ms
    } else {
        i64::try_from(settings.quota_reset_default.as_millis()).unwrap_or(i64::MAX)
    };
    event.at_unix_ms.saturating_add(wait)
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
            KeyState::Cooling | KeyState::Exhausted | KeyState::Failing | KeyState::Invalid
        )
        .then(|| {
            Decision::new(
                KeyState::Active,
                format!("recovered: a request succeeded on {node}"),
                0,
            )
        }),
        pb::KeyEventKind::Unauthorized => (state != KeyState::Invalid).then(|| {
            Decision::new(
                KeyState::Invalid,
                format!(
                    "upstream refused the key ({}) on {node}{detail}",
                    event.http_status
                ),
                0,
            )
        }),
        pb::KeyEventKind::QuotaExhausted => {
            if matches!(state, KeyState::Invalid | KeyState::Failing) {
                return None;
            }
            let until = quota_reset(event, settings);
            if event.per_model && !event.model.is_empty() {
                let known = key.exhausted_models.iter().find(|m| m.model == event.model);
                // Reported by several data planes: keep the later end, never shorten.
                if known.is_some_and(|m| m.until_unix_ms >= until) {
                    return None;
                }
                return Some(Decision {
                    state: KeyState::Exhausted,
                    reason: format!("quota of {} used up on {node}{detail}", event.model),
                    until_unix_ms: until,
                    model: event.model.clone(),
                });
            }
            if state == KeyState::Exhausted && key.state_until_unix_ms >= until {
                return None;
            }
            Some(Decision::new(
                KeyState::Exhausted,
                format!("quota used up on {node}{detail}"),
                until,
            ))
        }
        pb::KeyEventKind::RateLimited => {
            if matches!(
                state,
                KeyState::Invalid | KeyState::Failing | KeyState::Exhausted
            ) {
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
            Some(Decision::new(
                KeyState::Cooling,
                format!("rate limited (429) on {node}{detail}"),
                until,
            ))
        }
        pb::KeyEventKind::Failure => {
            if failures < settings.max_failures
                || matches!(state, KeyState::Invalid | KeyState::Failing)
            {
                return None;
            }
            Some(Decision::new(
                KeyState::Failing,
                format!("{failures} consecutive failures, last on {node}{detail}"),
                0,
            ))
        }
    }
}

/// The key-health decider and the timer that ends cooldowns and quotas; cheap to clone.
#[derive(Clone)]
pub struct KeyHealth {
    store: Store,
    inner: Arc<Mutex<HealthState>>,
    /// Wakes the timer when an earlier end is added.
    timer: Arc<Notify>,
    /// The validation scheduler's queue: keys that leave rotation get their first probe.
    queue: Queue,
}

#[derive(Default)]
struct HealthState {
    failures: HashMap<String, u32>,
    /// (until, key id) of every key with a timed state: `cooling`, `exhausted`, or an
    /// exhausted model. A key may appear more than once; stale entries are harmless.
    timed: BTreeSet<(i64, String)>,
}

/// The earliest time something of `key` ends by itself, if anything does.
pub fn next_timed_end(key: &pb::ProviderKey) -> Option<i64> {
    let own = (key.state == pb::KeyState::Cooling as i32
        || key.state == pb::KeyState::Exhausted as i32)
        .then_some(key.state_until_unix_ms);
    let models = key.exhausted_models.iter().map(|m| m.until_unix_ms).min();
    own.into_iter().chain(models).min()
}

impl KeyHealth {
    /// Loads the keys with timed states from the store, so a restart keeps their timers.
    pub fn new(store: Store, queue: Queue) -> Result<Self, Error> {
        let mut state = HealthState::default();
        store.visit_keys(|key| {
            if let Some(until) = next_timed_end(key) {
                state.timed.insert((until, key.id.clone()));
            }
        })?;
        Ok(Self {
            store,
            inner: Arc::new(Mutex::new(state)),
            timer: Arc::new(Notify::new()),
            queue,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HealthState> {
        // Counters and timers only: a half-finished update by a panicking thread is harmless.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the timer end `id`'s timed state at `until` (a probe found it rate limited).
    pub fn track_timed(&self, id: &str, until: i64) {
        let mut state = self.lock();
        let wake = state.timed.first().is_none_or(|(first, _)| until < *first);
        state.timed.insert((until, id.to_string()));
        drop(state);
        if wake {
            self.timer.notify_one();
        }
    }

    /// Notes that the keys of these request records were used, so that the idle re-check
    /// leaves them alone (kept in memory, written to the store once a minute).
    pub fn note_records(&self, records: &[pb::RequestRecord]) {
        for record in records {
            let answered = (200..300).contains(&record.status);
            if !record.key_id.is_empty() && answered {
                self.queue.note_used(&record.key_id, record.at_unix_ms);
            }
        }
    }

    /// Forgets the failure count of a key that a probe or an operator put back.
    pub fn reset_failures(&self, id: &str) {
        self.lock().failures.remove(id);
    }

    /// Applies one batch of events reported by `node` in one store transaction. Returns
    /// the revision it committed, if any key changed.
    pub async fn apply(&self, node: &str, events: Vec<pb::KeyEvent>) -> Result<Option<u64>, Error> {
        if events.is_empty() {
            return Ok(None);
        }
        for event in &events {
            self.queue.note_used(&event.key_id, event.at_unix_ms);
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
                        if event.kind == pb::KeyEventKind::Success as i32 {
                            probe::note_success(tx, &event.key_id, event.at_unix_ms)?;
                        }
                        let Some(decision) = decide(&key, event, *failures, settings, &node) else {
                            keys.insert(&event.key_id, key);
                            continue;
                        };
                        let mut key = key;
                        transitions::apply(tx, &mut key, &decision.change(), &node)?;
                        let next_probe = if decision.model.is_empty() {
                            probe::reschedule(tx, &key, settings, probe::Attempt::Reset)?
                        } else {
                            None
                        };
                        changed.push((key.id.clone(), decision, next_timed_end(&key), next_probe));
                        keys.insert(&event.key_id, key);
                    }
                    Ok(changed)
                },
            )
            .await?;
        let mut wake = false;
        for (id, decision, timed, next_probe) in changed {
            tracing::info!(
                key = %id,
                state = %decision.state,
                model = %decision.model,
                until = decision.until_unix_ms,
                "key state decided"
            );
            if let Some(next_probe) = next_probe {
                self.queue.schedule(&id, next_probe);
            }
            let mut state = self.lock();
            if let Some(until) = timed {
                wake |= state.timed.first().is_none_or(|(first, _)| until < *first);
                state.timed.insert((until, id.clone()));
            }
            // Its failures are spent on this decision; a re-enabled key starts from 0.
            if decision.state == KeyState::Failing {
                state.failures.remove(&id);
            }
        }
        if wake {
            self.timer.notify_one();
        }
        Ok(revision)
    }

    /// Brings cooling and exhausted keys and models back when their time is up, until
    /// `shutdown`.
    pub async fn run_cooldown_timer(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            let next = self.lock().timed.first().map(|(until, _)| *until);
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

    /// Ends every cooldown and quota whose time is up, in one transaction.
    async fn expire(&self) -> Result<(), Error> {
        let now = now_unix_ms();
        let due: Vec<String> = {
            let mut state = self.lock();
            let mut due = Vec::new();
            while let Some((until, _)) = state.timed.first() {
                if *until > now {
                    break;
                }
                if let Some((_, id)) = state.timed.pop_first() {
                    due.push(id);
                }
            }
            due.sort_unstable();
            due.dedup();
            due
        };
        if due.is_empty() {
            return Ok(());
        }
        let ((later, probes), revision) = self
            .store
            .commit_prepared(
                |store| Settings::from_values(&effective_settings(store)?).map_err(Error::from),
                move |tx, settings| {
                    let mut later = Vec::new();
                    let mut probes = Vec::new();
                    for id in &due {
                        let Some(mut key) = tx.get::<pb::ProviderKey>(TreeId::Keys, id)? else {
                            continue;
                        };
                        transitions::expire_models(tx, &mut key, now)?;
                        let timed = key.state == pb::KeyState::Cooling as i32
                            || key.state == pb::KeyState::Exhausted as i32;
                        // Enabled, disabled or cooled again since: not ours to change.
                        if timed && key.state_until_unix_ms <= now {
                            let reason = if key.state == pb::KeyState::Cooling as i32 {
                                "cooldown over"
                            } else {
                                "quota reset"
                            };
                            transitions::apply(
                                tx,
                                &mut key,
                                &Change::new(KeyState::Active, reason),
                                SOURCE_TIMER,
                            )?;
                            // Back without a probe; the idle re-check takes it from here.
                            if let Some(next) =
                                probe::reschedule(tx, &key, settings, probe::Attempt::Keep)?
                            {
                                probes.push((id.clone(), next));
                            }
                        }
                        if let Some(until) = next_timed_end(&key) {
                            later.push((until, id.clone()));
                        }
                    }
                    Ok((later, probes))
                },
            )
            .await?;
        if revision.is_some() {
            tracing::info!(?revision, "cooldowns and quotas over");
        }
        for (id, next) in probes {
            self.queue.schedule(&id, next);
        }
        let mut state = self.lock();
        state.timed.extend(later);
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
            ..Default::default()
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

    #[test]
    fn quotas_exhaust_the_key_or_one_model_until_the_reset() {
        let settings = Settings::default();
        let mut quota = event(pb::KeyEventKind::QuotaExhausted, 0);
        quota.model = "gemini-2.5-flash".into();
        quota.per_model = true;
        quota.daily = true;
        let d = decide(&key(pb::KeyState::Active, 0), &quota, 0, &settings, "dp").unwrap();
        assert_eq!(d.state, KeyState::Exhausted);
        assert_eq!(d.model, "gemini-2.5-flash");
        assert_eq!(
            d.until_unix_ms,
            transitions::next_pacific_midnight(quota.at_unix_ms)
        );
        // Known already with the same end: nothing to change.
        let mut known = key(pb::KeyState::Active, 0);
        known.exhausted_models.push(pb::ModelExhaustion {
            model: "gemini-2.5-flash".into(),
            until_unix_ms: d.until_unix_ms,
            reason: String::new(),
        });
        assert_eq!(decide(&known, &quota, 0, &settings, "dp"), None);
        // A whole-key quota without a reset time lasts the default.
        let whole = event(pb::KeyEventKind::QuotaExhausted, 0);
        let d = decide(&key(pb::KeyState::Cooling, 5), &whole, 0, &settings, "dp").unwrap();
        assert_eq!((d.state, d.model.as_str()), (KeyState::Exhausted, ""));
        assert_eq!(d.until_unix_ms, 1_000_000 + 3_600_000);
        // A plain 429 does not soften an exhausted key; a success ends it.
        let exhausted = key(pb::KeyState::Exhausted, 9_000_000);
        assert_eq!(
            decide(
                &exhausted,
                &event(pb::KeyEventKind::RateLimited, 0),
                0,
                &settings,
                "dp"
            ),
            None
        );
        let d = decide(
            &exhausted,
            &event(pb::KeyEventKind::Success, 0),
            0,
            &settings,
            "dp",
        )
        .unwrap();
        assert_eq!(d.state, KeyState::Active);
    }

    #[tokio::test]
    async fn a_decision_and_its_history_entry_are_one_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 100).unwrap();
        let mut stored = key(pb::KeyState::Active, 0);
        stored.secret = "sk-0123456789abcdef".into();
        let id = stored.id.clone();
        store
            .commit(move |tx| tx.put(TreeId::Keys, &stored.id, &stored))
            .await
            .unwrap();
        let health = KeyHealth::new(store.clone(), Queue::default()).unwrap();
        for _ in 0..(transitions::HISTORY_LIMIT + 5) {
            let revision = health
                .apply("dp-1", vec![event(pb::KeyEventKind::Unauthorized, 0)])
                .await
                .unwrap();
            assert!(revision.is_some());
            health
                .apply("dp-1", vec![event(pb::KeyEventKind::Success, 0)])
                .await
                .unwrap();
        }
        let history: pb::KeyHistory = store.get(TreeId::KeyHistory, &id).unwrap().unwrap();
        assert_eq!(history.transitions.len(), transitions::HISTORY_LIMIT);
        let last = history.transitions.last().unwrap();
        assert_eq!(
            (last.from, last.to, last.source.as_str()),
            (
                pb::KeyState::Invalid as i32,
                pb::KeyState::Active as i32,
                "dp-1"
            )
        );
        let schedule: pb::KeySchedule = store.get(TreeId::KeySchedule, &id).unwrap().unwrap();
        assert!(schedule.last_success_unix_ms > 0);
    }
}
