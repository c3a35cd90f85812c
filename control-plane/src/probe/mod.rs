//! The validation scheduler: the only place in a cluster that probes keys, so each key is
//! probed once however many data planes there are.
//!
//! It re-probes `failing` and `invalid` keys with exponential backoff and jitter,
//! re-checks `active` keys that have seen no traffic for `probe_idle_recheck_ms`, and
//! probes new keys on request. `cooling` and `exhausted` keys come back by the health
//! timer without a probe; `disabled` keys are never probed. Probes share one semaphore
//! (`probe_concurrency`, cluster-wide) and start no faster than `probe_rate_per_minute`
//! per provider, evenly spaced.
//!
//! The schedule is durable: the `key_schedule` tree holds each key's next probe time and
//! attempt count, written in the same transaction as the state change that set them, and
//! is loaded again on start. An in-memory queue orders the due times.

pub mod upstream;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fulcrum_proto::model::{self, KeyState, ProviderType, Secret, Settings};
use fulcrum_proto::pb;
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::error::Error;
use crate::health::KeyHealth;
use crate::snapshot::effective_settings;
use crate::store::{Store, TreeId, Tx, TxResult, now_unix_ms};
use crate::transitions::{self, Change, SOURCE_PROBE};

pub use upstream::{ProbeOutcome, USER_AGENT};

/// How often the last-use times the data planes reported are written to the store.
const USAGE_FLUSH_INTERVAL: Duration = Duration::from_secs(60);

/// The due times of probes, in memory; cheap to clone.
#[derive(Clone, Default)]
pub struct Queue {
    inner: Arc<Mutex<QueueState>>,
    wake: Arc<Notify>,
}

#[derive(Default)]
struct QueueState {
    due: BTreeSet<(i64, String)>,
    at: HashMap<String, i64>,
    /// Last use each key was reported in, since the last flush to the store.
    used: HashMap<String, i64>,
}

// === impl Queue ===

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        // Due times only: a half-finished update by a panicking thread is harmless.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Probes `id` at `at` (replacing any earlier plan); 0 cancels.
    pub fn schedule(&self, id: &str, at: i64) {
        let mut state = self.lock();
        if let Some(old) = state.at.remove(id) {
            state.due.remove(&(old, id.to_string()));
        }
        if at <= 0 {
            return;
        }
        let earliest = state.due.first().is_none_or(|(first, _)| at < *first);
        state.at.insert(id.to_string(), at);
        state.due.insert((at, id.to_string()));
        drop(state);
        if earliest {
            self.wake.notify_one();
        }
    }

    /// A data plane used `id` at `at`: it is not idle.
    pub fn note_used(&self, id: &str, at: i64) {
        let mut state = self.lock();
        let entry = state.used.entry(id.to_string()).or_default();
        *entry = (*entry).max(at);
    }

    fn used(&self, id: &str) -> i64 {
        self.lock().used.get(id).copied().unwrap_or(0)
    }

    fn take_used(&self) -> HashMap<String, i64> {
        std::mem::take(&mut self.lock().used)
    }

    /// When `id` is due, if it is scheduled.
    pub fn due_at(&self, id: &str) -> Option<i64> {
        self.lock().at.get(id).copied()
    }

    fn next_due(&self) -> Option<i64> {
        self.lock().due.first().map(|(at, _)| *at)
    }

    fn pop_due(&self, now: i64) -> Option<String> {
        let mut state = self.lock();
        let (at, _) = state.due.first()?;
        if *at > now {
            return None;
        }
        let (_, id) = state.due.pop_first()?;
        state.at.remove(&id);
        Some(id)
    }
}

/// What a probe or an event does to a key's attempt count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// The key just changed state or worked: the backoff starts over.
    Reset,
    /// Leave the count as it is.
    Keep,
    /// A probe failed: one more.
    Failed,
}

/// A random factor in `0.5..1.0`, so that keys that failed together spread out.
fn jitter() -> f64 {
    let mut bytes = [0u8; 4];
    // Without randomness the backoff is merely not spread: still correct.
    let _ = getrandom::fill(&mut bytes);
    0.5 + f64::from(u32::from_le_bytes(bytes)) / f64::from(u32::MAX) / 2.0
}

/// The wait before the next probe after `attempts` failed ones: the base doubled per
/// attempt, at most the maximum, times a jitter in `0.5..1.0`.
pub fn backoff(settings: &Settings, attempts: u32, jitter: f64) -> Duration {
    let base = settings.probe_backoff_base.as_secs_f64();
    let max = settings.probe_backoff_max.as_secs_f64();
    let full = (base * 2f64.powi(i32::try_from(attempts.min(62)).unwrap_or(62))).min(max);
    Duration::from_secs_f64((full * jitter).max(0.001))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Records that `id` worked at `at` (a data plane's success after failures).
pub fn note_success(tx: &Tx<'_>, id: &str, at: i64) -> TxResult<()> {
    let mut schedule: pb::KeySchedule = tx.get(TreeId::KeySchedule, id)?.unwrap_or_default();
    schedule.last_success_unix_ms = schedule.last_success_unix_ms.max(at);
    schedule.attempts = 0;
    tx.put(TreeId::KeySchedule, id, &schedule)
}

/// Plans the next probe of `key` from its (new) state and stores the plan; returns the
/// due time (0: none). `failing`/`invalid`: backoff; `active`: the idle re-check (or a
/// backoff after a failed probe); `cooling`, `exhausted`, `disabled`: none.
pub fn reschedule(
    tx: &Tx<'_>,
    key: &pb::ProviderKey,
    settings: &Settings,
    attempt: Attempt,
) -> TxResult<Option<i64>> {
    let mut schedule: pb::KeySchedule = tx.get(TreeId::KeySchedule, &key.id)?.unwrap_or_default();
    match attempt {
        Attempt::Reset => schedule.attempts = 0,
        Attempt::Keep => {}
        Attempt::Failed => schedule.attempts = schedule.attempts.saturating_add(1),
    }
    let now = tx.now_unix_ms();
    let retry = || now.saturating_add(millis(backoff(settings, schedule.attempts, jitter())));
    schedule.next_probe_unix_ms = match KeyState::from_pb(key.state) {
        Some(KeyState::Failing | KeyState::Invalid) => retry(),
        Some(KeyState::Active) if schedule.attempts > 0 => retry(),
        Some(KeyState::Active) => settings
            .probe_idle_recheck
            .map_or(0, |ttl| now.saturating_add(millis(ttl))),
        _ => 0,
    };
    tx.put(TreeId::KeySchedule, &key.id, &schedule)?;
    Ok(Some(schedule.next_probe_unix_ms))
}

/// The probes' shared limits.
struct Limits {
    semaphore: Arc<Semaphore>,
    /// Permits the semaphore was sized for.
    permits: Mutex<u32>,
    /// Earliest start of the next probe, per provider (one interval after the last start).
    slots: Mutex<HashMap<String, Instant>>,
    /// Keys being probed now.
    in_flight: Mutex<HashSet<String>>,
}

/// Probes keys and stores what the probes show; cheap to clone.
#[derive(Clone)]
pub struct Prober {
    store: Store,
    health: KeyHealth,
    queue: Queue,
    /// Direct, and one per outbound proxy: a probe goes out the way the key's traffic
    /// does, through the proxy the key is assigned to.
    clients: Arc<fulcrum_outbound::Clients>,
    limits: Arc<Limits>,
}

/// The outbound proxy a key's probe goes through: the key's pinned one, else the
/// provider's assignment, as the data planes choose it (`model::Provider::proxy_for`).
fn probe_proxy(
    provider: &pb::Provider,
    key: &pb::ProviderKey,
) -> Result<Option<model::ProxyUrl>, Error> {
    let provider = model::Provider::try_from(provider)?;
    let key = model::Key::try_from(key)?;
    Ok(provider.proxy_for(&key).cloned())
}

/// The outcome of one probe as `ValidateKeys` reports it.
#[derive(Debug, Clone)]
pub struct Probed {
    pub key: pb::ProviderKey,
    pub latency: Duration,
    /// False when the key was not probed (disabled, deleted, or already being probed).
    pub probed: bool,
}

// === impl Prober ===

impl Prober {
    /// Loads the schedule from the store and queues every planned probe. Keys without a
    /// plan (never probed) get one: `failing`/`invalid` at the first backoff, `active`
    /// spread over the idle re-check time so a restart does not probe them all at once.
    pub fn new(store: Store, health: KeyHealth, queue: Queue) -> Result<Self, Error> {
        let settings = Settings::from_values(&effective_settings(&store)?)?;
        let clients =
            fulcrum_outbound::Clients::new(settings.connect_timeout).map_err(Error::Internal)?;
        let mut planned = HashSet::new();
        for entry in store.tree(TreeId::KeySchedule).iter() {
            let (id, value) = entry?;
            let id = String::from_utf8_lossy(&id).into_owned();
            let schedule: pb::KeySchedule =
                prost::Message::decode(value.as_ref()).map_err(|e| Error::Corrupt {
                    tree: "key_schedule",
                    detail: e.to_string(),
                })?;
            queue.schedule(&id, schedule.next_probe_unix_ms);
            planned.insert(id);
        }
        let now = now_unix_ms();
        store.visit_keys(|key| {
            if planned.contains(&key.id) {
                return;
            }
            let at = match KeyState::from_pb(key.state) {
                Some(KeyState::Failing | KeyState::Invalid) => {
                    now + millis(backoff(&settings, 0, jitter()))
                }
                Some(KeyState::Active) => settings.probe_idle_recheck.map_or(0, |ttl| {
                    // f64 precision is plenty for a spread.
                    now + (millis(ttl) as f64 * jitter()) as i64
                }),
                _ => 0,
            };
            queue.schedule(&key.id, at);
        })?;
        let permits = settings.probe_concurrency;
        Ok(Self {
            store,
            health,
            queue,
            clients: Arc::new(clients),
            limits: Arc::new(Limits {
                semaphore: Arc::new(Semaphore::new(permits as usize)),
                permits: Mutex::new(permits),
                slots: Mutex::new(HashMap::new()),
                in_flight: Mutex::new(HashSet::new()),
            }),
        })
    }

    /// The queue, for tests and for the admin service.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    fn settings(&self) -> Result<Settings, Error> {
        Ok(Settings::from_values(&effective_settings(&self.store)?)?)
    }

    /// Follows a live change of `probe_concurrency`.
    fn resize(&self, permits: u32) {
        let mut current = self
            .limits
            .permits
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if permits > *current {
            self.limits
                .semaphore
                .add_permits((permits - *current) as usize);
        } else if permits < *current {
            // Permits in use now are forgotten as they come back, by the next resize.
            let forgotten = self
                .limits
                .semaphore
                .forget_permits((*current - permits) as usize);
            *current -= u32::try_from(forgotten).unwrap_or(0);
            return;
        }
        *current = permits;
    }

    /// Waits until this provider may start a probe and takes the start. A start is taken
    /// only when it is due, never reserved ahead: tasks that wake late (a busy machine)
    /// then still start at least one interval apart instead of together.
    async fn rate_slot(&self, provider: &str, per_minute: u32) {
        let interval = Duration::from_secs(60) / per_minute.max(1);
        loop {
            let wait = {
                let mut slots = self.limits.slots.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                match slots.get(provider) {
                    Some(next) if *next > now => *next - now,
                    _ => {
                        slots.insert(provider.to_string(), now + interval);
                        return;
                    }
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Probes one key within the limits and stores what the probe shows. Disabled keys and
    /// keys already being probed are not probed again.
    pub async fn probe_key(&self, id: &str) -> Result<Probed, Error> {
        let Some(key) = self.store.get::<pb::ProviderKey>(TreeId::Keys, id)? else {
            return Err(Error::not_found("key", id));
        };
        if key.state == pb::KeyState::Disabled as i32 {
            return Ok(Probed {
                key,
                latency: Duration::ZERO,
                probed: false,
            });
        }
        {
            let mut in_flight = self
                .limits
                .in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if !in_flight.insert(id.to_string()) {
                return Ok(Probed {
                    key,
                    latency: Duration::ZERO,
                    probed: false,
                });
            }
        }
        let result = self.probe_locked(key).await;
        self.limits
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        result
    }

    async fn probe_locked(&self, key: pb::ProviderKey) -> Result<Probed, Error> {
        let settings = self.settings()?;
        let Some(provider) = self
            .store
            .get::<pb::Provider>(TreeId::Providers, &key.provider)?
        else {
            return Err(Error::not_found("provider", &key.provider));
        };
        let provider_type = ProviderType::from_pb(provider.r#type)
            .ok_or_else(|| Error::Internal(format!("provider {} has no type", provider.name)))?;
        self.resize(settings.probe_concurrency);
        let _permit = self
            .limits
            .semaphore
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Internal("probe limits closed".into()))?;
        if provider_type != ProviderType::Mock {
            self.rate_slot(&provider.name, settings.probe_rate_per_minute)
                .await;
        }
        // Secrets are sealed at rest: opened for this probe only.
        let opened = self.store.reveal(key.clone())?;
        let proxy = probe_proxy(&provider, &opened)?;
        let client = self.clients.get(proxy.as_ref()).map_err(Error::Internal)?;
        let secret = Secret::new(opened.secret);
        let started = Instant::now();
        let outcome = upstream::probe(
            &client,
            provider_type,
            &provider.base_url,
            secret.expose(),
            &settings.probe_vertex_model,
            &provider.headers,
            settings.probe_timeout,
        )
        .await;
        let latency = started.elapsed();
        tracing::debug!(key = %key.id, masked = %key.masked, provider = %provider.name, ?outcome, "key probed");
        let key = self.store_outcome(&key.id, outcome).await?;
        Ok(Probed {
            key,
            latency,
            probed: true,
        })
    }

    /// Stores what a probe showed in one transaction: the state change with its history
    /// entry and the next probe.
    async fn store_outcome(
        &self,
        id: &str,
        outcome: ProbeOutcome,
    ) -> Result<pb::ProviderKey, Error> {
        let id_owned = id.to_string();
        let ((key, next), _revision) = self
            .store
            .commit_prepared(
                |store| Settings::from_values(&effective_settings(store)?).map_err(Error::from),
                move |tx, settings| {
                    let Some(mut key) = tx.get::<pb::ProviderKey>(TreeId::Keys, &id_owned)? else {
                        return crate::store::abort(Error::not_found("key", &id_owned));
                    };
                    let now = tx.now_unix_ms();
                    let mut schedule: pb::KeySchedule =
                        tx.get(TreeId::KeySchedule, &id_owned)?.unwrap_or_default();
                    schedule.last_probe_unix_ms = now;
                    schedule.requested = false;
                    tx.put(TreeId::KeySchedule, &id_owned, &schedule)?;
                    let state = KeyState::from_pb(key.state);
                    if state == Some(KeyState::Disabled) {
                        return Ok((key, None));
                    }
                    let attempt = match &outcome {
                        ProbeOutcome::Works => {
                            note_success(tx, &id_owned, now)?;
                            if matches!(state, Some(KeyState::Failing | KeyState::Invalid)) {
                                transitions::apply(
                                    tx,
                                    &mut key,
                                    &Change::new(KeyState::Active, "recovered: a probe succeeded"),
                                    SOURCE_PROBE,
                                )?;
                            }
                            Attempt::Reset
                        }
                        ProbeOutcome::Refused { status } => {
                            if state != Some(KeyState::Invalid) {
                                transitions::apply(
                                    tx,
                                    &mut key,
                                    &Change::new(
                                        KeyState::Invalid,
                                        format!("a probe was refused ({status})"),
                                    ),
                                    SOURCE_PROBE,
                                )?;
                                Attempt::Reset
                            } else {
                                Attempt::Failed
                            }
                        }
                        ProbeOutcome::RateLimited { retry_after_ms } => {
                            let wait =
                                retry_after_ms.unwrap_or_else(|| millis(settings.cooldown_default));
                            let until = now.saturating_add(wait);
                            let longer =
                                state != Some(KeyState::Cooling) || key.state_until_unix_ms < until;
                            if longer && state != Some(KeyState::Exhausted) {
                                transitions::apply(
                                    tx,
                                    &mut key,
                                    &Change::new(
                                        KeyState::Cooling,
                                        "rate limited (429) on a probe",
                                    )
                                    .until(until),
                                    SOURCE_PROBE,
                                )?;
                            }
                            Attempt::Reset
                        }
                        ProbeOutcome::Exhausted {
                            daily,
                            retry_after_ms,
                        } => {
                            let until = if *daily {
                                transitions::next_pacific_midnight(now)
                            } else {
                                now.saturating_add(
                                    retry_after_ms
                                        .unwrap_or_else(|| millis(settings.quota_reset_default)),
                                )
                            };
                            transitions::apply(
                                tx,
                                &mut key,
                                &Change::new(KeyState::Exhausted, "quota used up (429) on a probe")
                                    .until(until),
                                SOURCE_PROBE,
                            )?;
                            Attempt::Reset
                        }
                        ProbeOutcome::Failed { detail } => {
                            let failures = schedule.attempts.saturating_add(1);
                            if state == Some(KeyState::Active) && failures >= settings.max_failures
                            {
                                transitions::apply(
                                    tx,
                                    &mut key,
                                    &Change::new(
                                        KeyState::Failing,
                                        format!(
                                            "{failures} probes failed in a row, last: {detail}"
                                        ),
                                    ),
                                    SOURCE_PROBE,
                                )?;
                            }
                            Attempt::Failed
                        }
                    };
                    let next = reschedule(tx, &key, settings, attempt)?;
                    Ok((key, next))
                },
            )
            .await?;
        if let Some(next) = next {
            self.queue.schedule(id, next);
        }
        match KeyState::from_pb(key.state) {
            Some(KeyState::Cooling | KeyState::Exhausted) => {
                self.health.track_timed(id, key.state_until_unix_ms);
            }
            Some(KeyState::Active) => self.health.reset_failures(id),
            _ => {}
        }
        Ok(key)
    }

    /// A due key: probe it, unless it is an active key that was used or proved recently,
    /// which is only planned again for when it would become idle.
    async fn due(&self, id: String) {
        let result = async {
            let Some(key) = self.store.get::<pb::ProviderKey>(TreeId::Keys, &id)? else {
                return Ok(());
            };
            if key.state == pb::KeyState::Active as i32 {
                let settings = self.settings()?;
                let schedule: pb::KeySchedule = self
                    .store
                    .get(TreeId::KeySchedule, &id)?
                    .unwrap_or_default();
                if schedule.attempts == 0 && !schedule.requested {
                    let Some(ttl) = settings.probe_idle_recheck else {
                        return Ok(());
                    };
                    let last = schedule
                        .last_success_unix_ms
                        .max(schedule.last_used_unix_ms)
                        .max(schedule.last_probe_unix_ms)
                        .max(self.queue.used(&id));
                    let idle_at = last.saturating_add(millis(ttl));
                    if last > 0 && idle_at > now_unix_ms() {
                        self.plan(&id, idle_at).await?;
                        return Ok(());
                    }
                }
            }
            if matches!(
                KeyState::from_pb(key.state),
                Some(KeyState::Cooling | KeyState::Exhausted | KeyState::Disabled)
            ) {
                // These come back by their timer (or by an operator), never by a probe.
                return Ok(());
            }
            self.probe_key(&id).await.map(|_| ())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(key = %id, error = %e, "scheduled probe failed; retrying in a minute");
            self.queue.schedule(&id, now_unix_ms() + 60_000);
        }
    }

    /// Stores a new due time for `id` without a state change.
    async fn plan(&self, id: &str, at: i64) -> Result<(), Error> {
        let id_owned = id.to_string();
        self.store
            .commit(move |tx| {
                let mut schedule: pb::KeySchedule =
                    tx.get(TreeId::KeySchedule, &id_owned)?.unwrap_or_default();
                schedule.next_probe_unix_ms = at;
                tx.put(TreeId::KeySchedule, &id_owned, &schedule)
            })
            .await?;
        self.queue.schedule(id, at);
        Ok(())
    }

    /// Plans a probe of each key right away (new keys imported with `validate`), durably.
    pub async fn schedule_now(&self, ids: Vec<String>) -> Result<(), Error> {
        if ids.is_empty() {
            return Ok(());
        }
        let now = now_unix_ms();
        let planned = ids.clone();
        self.store
            .commit(move |tx| {
                for id in &planned {
                    let mut schedule: pb::KeySchedule =
                        tx.get(TreeId::KeySchedule, id)?.unwrap_or_default();
                    schedule.next_probe_unix_ms = now;
                    schedule.requested = true;
                    tx.put(TreeId::KeySchedule, id, &schedule)?;
                }
                Ok(())
            })
            .await?;
        for id in &ids {
            self.queue.schedule(id, now);
        }
        Ok(())
    }

    /// Writes the last-use times reported since the last flush, in one transaction.
    async fn flush_usage(&self) -> Result<(), Error> {
        let used = self.queue.take_used();
        if used.is_empty() {
            return Ok(());
        }
        self.store
            .commit(move |tx| {
                for (id, at) in &used {
                    if !tx.contains(TreeId::Keys, id)? {
                        continue;
                    }
                    let mut schedule: pb::KeySchedule =
                        tx.get(TreeId::KeySchedule, id)?.unwrap_or_default();
                    schedule.last_used_unix_ms = schedule.last_used_unix_ms.max(*at);
                    tx.put(TreeId::KeySchedule, id, &schedule)?;
                }
                Ok(())
            })
            .await?;
        Ok(())
    }

    /// Probes `ids` within the limits, sending each result to `results` as it ends.
    /// Returns how many were probed and how many skipped. At most twice the concurrency
    /// limit of probes are started at once, so that `--all` over 100,000 keys holds a few
    /// hundred waiting probes, not 100,000.
    pub async fn validate(
        &self,
        ids: Vec<String>,
        results: mpsc::Sender<(String, Result<Probed, Error>)>,
    ) -> (u64, u64) {
        let mut tasks = JoinSet::new();
        let (mut probed, mut skipped) = (0, 0);
        let mut ids = ids.into_iter();
        loop {
            let backlog = self
                .settings()
                .map_or(16, |s| s.probe_concurrency as usize * 2);
            if tasks.len() < backlog
                && let Some(id) = ids.next()
            {
                let prober = self.clone();
                tasks.spawn(async move {
                    let result = prober.probe_key(&id).await;
                    (id, result)
                });
                continue;
            }
            let Some(joined) = tasks.join_next().await else {
                break;
            };
            let (id, result) = match joined {
                Ok(done) => done,
                Err(e) => (
                    String::new(),
                    Err(Error::Internal(format!("probe task failed: {e}"))),
                ),
            };
            match &result {
                Ok(p) if p.probed => probed += 1,
                _ => skipped += 1,
            }
            if results.send((id, result)).await.is_err() {
                // The caller went away: the probes already started finish and store their
                // outcome; no more are started.
                tasks.detach_all();
                break;
            }
        }
        (probed, skipped)
    }

    /// Runs the schedule until `shutdown`: probes what is due, at most twice the
    /// concurrency limit queued at once, and writes reported usage every minute.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut tasks = JoinSet::new();
        let mut flushed = Instant::now();
        loop {
            while tasks.try_join_next().is_some() {}
            if flushed.elapsed() >= USAGE_FLUSH_INTERVAL {
                flushed = Instant::now();
                if let Err(e) = self.flush_usage().await {
                    tracing::warn!(error = %e, "cannot store key usage times");
                }
            }
            let backlog = self
                .settings()
                .map_or(16, |s| s.probe_concurrency as usize * 2);
            if tasks.len() < backlog
                && let Some(id) = self.queue.pop_due(now_unix_ms())
            {
                let prober = self.clone();
                tasks.spawn(async move { prober.due(id).await });
                continue;
            }
            let wait = self
                .queue
                .next_due()
                .map_or(USAGE_FLUSH_INTERVAL, |at| {
                    Duration::from_millis(u64::try_from(at - now_unix_ms()).unwrap_or(0))
                })
                .min(USAGE_FLUSH_INTERVAL);
            let busy = tasks.len() >= backlog;
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => break,
                () = self.queue.wake.notified(), if !busy => {}
                () = tokio::time::sleep(wait), if !busy => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        tasks.shutdown().await;
        if let Err(e) = self.flush_usage().await {
            tracing::warn!(error = %e, "cannot store key usage times");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum_with_jitter() {
        let mut values = std::collections::BTreeMap::new();
        values.insert("probe_backoff_base_ms".to_string(), "1000".to_string());
        values.insert("probe_backoff_max_ms".to_string(), "5000".to_string());
        let settings = Settings::from_values(&values).unwrap();
        assert_eq!(backoff(&settings, 0, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(&settings, 1, 1.0), Duration::from_secs(2));
        assert_eq!(backoff(&settings, 2, 1.0), Duration::from_secs(4));
        assert_eq!(backoff(&settings, 3, 1.0), Duration::from_secs(5));
        assert_eq!(backoff(&settings, 500, 1.0), Duration::from_secs(5));
        assert_eq!(backoff(&settings, 1, 0.5), Duration::from_secs(1));
        for _ in 0..100 {
            let j = jitter();
            assert!((0.5..=1.0).contains(&j), "{j}");
        }
    }

    #[test]
    fn the_queue_keeps_one_due_time_per_key_in_order() {
        let queue = Queue::default();
        queue.schedule("b", 20);
        queue.schedule("a", 30);
        queue.schedule("a", 10);
        assert_eq!(queue.due_at("a"), Some(10));
        assert_eq!(queue.pop_due(5), None);
        assert_eq!(queue.pop_due(25).as_deref(), Some("a"));
        assert_eq!(queue.pop_due(25).as_deref(), Some("b"));
        assert_eq!(queue.pop_due(100), None);
        queue.schedule("c", 10);
        queue.schedule("c", 0);
        assert_eq!(queue.pop_due(100), None);
    }
}
