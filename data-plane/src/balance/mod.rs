//! Key pools and this data plane's own view of key health.
//!
//! The control plane decides a key's global state; this module adds what this data plane
//! learned itself in the meantime (a 429 a moment ago, a run of failures), so that it
//! reacts at once. That local state lives inline in each [`PoolEntry`] and is copied into
//! the next pool for as long as the control plane sends the key unchanged: a key that
//! comes back changed carries a newer decision than anything learned here (an operator
//! re-enabled it, or our own report came back as a state), so it starts afresh. A request
//! still running on the old pool may record into it after the copy; what it records also
//! goes to the control plane, whose answer reaches the new pool within a round trip.
//!
//! Key choice is a round robin: an atomic counter picks the start and the first usable
//! key from there wins. No lock is taken on the hot path, and a pick reads only the
//! pool's own entries (a contiguous array walked in order), never the keys behind them,
//! so its cost does not grow with the number of keys.
//!
//! A pool's ring holds only the keys the control plane lets be used now. Keys it rests
//! until a time (`cooling`, `exhausted`) wait in a list sorted by that time; the ones
//! whose time has come join the round robin at once, before the control plane's own
//! timer sends them back as `active`, and also while the control plane is away.

pub mod strategy;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicUsize, Ordering};

use fulcrum_proto::model::{Key, KeyState};

/// What this data plane itself knows about one key.
#[derive(Debug, Default)]
pub struct LocalKeyState {
    /// Unix ms until which this data plane rests the key after a 429; 0 when not cooling.
    cooling_until_ms: AtomicI64,
    consecutive_failures: AtomicU32,
    /// Unix ms since which the key is out here (401/403, or too many failures); 0 when in.
    out_since_ms: AtomicI64,
    /// Unix ms of the last success reported as a use, for the idle re-check.
    use_reported_ms: AtomicI64,
}

/// What an upstream answer means for the key that was used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyVerdict {
    /// 2xx. Carries whether it ended a run of failures, and whether the key's use is due
    /// to be reported (either is worth a report).
    Success {
        reset_failures: bool,
        report_use: bool,
    },
    /// 429: rest until this Unix ms.
    RateLimited { until_ms: i64 },
    /// 401/403: the key itself was refused.
    Refused,
    /// 5xx, network error or first-byte timeout. Carries whether the key is now out.
    Failed { now_out: bool },
}

impl LocalKeyState {
    /// A copy of what `other` holds now, for the next pool.
    fn copy_of(other: &LocalKeyState) -> Self {
        Self {
            cooling_until_ms: AtomicI64::new(other.cooling_until_ms.load(Ordering::Relaxed)),
            consecutive_failures: AtomicU32::new(
                other.consecutive_failures.load(Ordering::Relaxed),
            ),
            out_since_ms: AtomicI64::new(other.out_since_ms.load(Ordering::Relaxed)),
            use_reported_ms: AtomicI64::new(other.use_reported_ms.load(Ordering::Relaxed)),
        }
    }

    /// Usable here at `now_ms`, as far as this data plane knows.
    pub fn usable(&self, now_ms: i64) -> bool {
        self.out_since_ms.load(Ordering::Relaxed) == 0
            && self.cooling_until_ms.load(Ordering::Relaxed) <= now_ms
    }

    /// When this data plane's cooldown ends (0 when not cooling).
    pub fn cooling_until_ms(&self) -> i64 {
        self.cooling_until_ms.load(Ordering::Relaxed)
    }

    pub fn is_out(&self) -> bool {
        self.out_since_ms.load(Ordering::Relaxed) != 0
    }

    /// A 2xx at `now_ms`. `report_use_every_ms` (0: never) is how often a key in use is
    /// worth telling the control plane about even without failures to reset: its idle
    /// re-check must not probe a busy key when request records are off.
    pub fn record_success(&self, now_ms: i64, report_use_every_ms: i64) -> KeyVerdict {
        // A load first: the common success writes nothing to the shared line.
        let reset_failures = self.consecutive_failures.load(Ordering::Relaxed) > 0
            && self.consecutive_failures.swap(0, Ordering::Relaxed) > 0;
        let last = self.use_reported_ms.load(Ordering::Relaxed);
        let report_use = report_use_every_ms > 0
            && now_ms.saturating_sub(last) >= report_use_every_ms
            // Of two requests that find it due at once, one reports.
            && self
                .use_reported_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok();
        KeyVerdict::Success {
            reset_failures,
            report_use,
        }
    }

    pub fn record_rate_limited(&self, until_ms: i64) -> KeyVerdict {
        self.cooling_until_ms.fetch_max(until_ms, Ordering::Relaxed);
        KeyVerdict::RateLimited { until_ms }
    }

    pub fn record_refused(&self, now_ms: i64) -> KeyVerdict {
        let _ = self.out_since_ms.compare_exchange(
            0,
            now_ms.max(1),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        KeyVerdict::Refused
    }

    pub fn record_failure(&self, now_ms: i64, max_failures: u32) -> KeyVerdict {
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        let now_out = failures >= max_failures;
        if now_out {
            let _ = self.out_since_ms.compare_exchange(
                0,
                now_ms.max(1),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        KeyVerdict::Failed { now_out }
    }
}

/// From when the control plane lets a key in this state be used: 0 for `active`, its
/// time for `cooling` and `exhausted`, `None` for a key out of rotation.
fn usable_from(key: &Key) -> Option<i64> {
    match key.state {
        KeyState::Active => Some(0),
        KeyState::Cooling | KeyState::Exhausted => Some(key.state_until_unix_ms),
        _ => None,
    }
}

/// One key in a pool, with everything a pick reads held inline.
#[derive(Debug)]
pub struct PoolEntry {
    pub key: Arc<Key>,
    /// The control plane lets the key be used from this Unix ms (0: already).
    usable_from_ms: i64,
    /// The key has per-model quotas used up, so a pick for a model must look at the key.
    model_limits: bool,
    /// What this data plane learned itself.
    pub local: LocalKeyState,
}

impl PoolEntry {
    fn new(key: &Arc<Key>, usable_from_ms: i64, local: LocalKeyState) -> Self {
        Self {
            key: Arc::clone(key),
            usable_from_ms,
            model_limits: !key.exhausted_models.is_empty(),
            local,
        }
    }

    /// Usable at `now_ms`: the control plane's state allows it and so does ours.
    pub fn usable(&self, now_ms: i64) -> bool {
        self.usable_from_ms <= now_ms && self.local.usable(now_ms)
    }

    /// When a resting key can be used again, or `None` if it is out here.
    fn back_at(&self) -> Option<i64> {
        if self.local.is_out() {
            return None;
        }
        Some(self.usable_from_ms.max(self.local.cooling_until_ms()))
    }

    /// Whether a pick for `model` must pass this key over: its quota for the model is
    /// used up. Looks at the key only when it has such quotas at all.
    fn excluded_for(&self, model: &str, now_ms: i64) -> bool {
        self.model_limits && !model.is_empty() && self.key.exhausted_for(model, now_ms)
    }
}

/// A provider's keys that may be picked, and the round-robin position.
#[derive(Debug)]
pub struct KeyPool {
    /// Keys the control plane lets be used now.
    ring: Vec<PoolEntry>,
    /// Keys it rests until a time, sorted by that time.
    resting: Vec<PoolEntry>,
    /// The first resting key's time (`i64::MAX` when none rests).
    first_back_ms: i64,
    next: AtomicUsize,
}

/// The outcome of asking a pool for a key.
#[derive(Debug, Clone)]
pub enum Pick<'a> {
    Key(&'a PoolEntry),
    /// Every key is resting; the first is back at this Unix ms.
    AllCooling {
        back_at_ms: i64,
    },
    /// No key can be used (none, or all out).
    Exhausted,
}

impl KeyPool {
    fn new(mut entries: Vec<PoolEntry>) -> Self {
        // Stable, so that keys keep the control plane's order within each part.
        entries.sort_by_key(|e| e.usable_from_ms);
        let resting_from = entries.partition_point(|e| e.usable_from_ms == 0);
        let resting = entries.split_off(resting_from);
        entries.shrink_to_fit();
        Self {
            first_back_ms: resting.first().map_or(i64::MAX, |e| e.usable_from_ms),
            ring: entries,
            resting,
            next: AtomicUsize::new(0),
        }
    }

    fn entries(&self) -> impl Iterator<Item = &PoolEntry> {
        self.ring.iter().chain(&self.resting)
    }

    pub fn len(&self) -> usize {
        self.ring.len() + self.resting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether any key can be used now (a scan: for listings, not the request path).
    pub fn has_usable(&self, now_ms: i64) -> bool {
        self.entries().any(|e| e.usable(now_ms))
    }

    /// The next usable key in round-robin order, skipping keys already tried for this
    /// request.
    pub fn pick(&self, now_ms: i64, tried: &[Arc<Key>]) -> Pick<'_> {
        self.pick_for(now_ms, tried, "")
    }

    /// [`KeyPool::pick`] for a request of `model`: keys whose quota for that model is used
    /// up are skipped too. `tried` holds keys of this pool, so the same `Arc`s.
    pub fn pick_for(&self, now_ms: i64, tried: &[Arc<Key>], model: &str) -> Pick<'_> {
        // Resting keys whose time has come take their turn after the ring's, as if the
        // control plane had already sent them back.
        let due = if now_ms >= self.first_back_ms {
            self.resting.partition_point(|e| e.usable_from_ms <= now_ms)
        } else {
            0
        };
        let ring = self.ring.len();
        let n = ring + due;
        let mut back_at: Option<i64> = None;
        if n > 0 {
            let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
            for offset in 0..n {
                let at = start + offset;
                let at = if at >= n { at - n } else { at };
                let entry = if at < ring {
                    &self.ring[at]
                } else {
                    &self.resting[at - ring]
                };
                if entry.excluded_for(model, now_ms) {
                    continue;
                }
                let was_tried = tried.iter().any(|t| Arc::ptr_eq(t, &entry.key));
                if !was_tried && entry.local.usable(now_ms) {
                    // Move the counter past the keys skipped, so that their share spreads
                    // over the usable keys instead of all landing on the one after them.
                    if offset > 0 {
                        self.next.fetch_add(offset, Ordering::Relaxed);
                    }
                    return Pick::Key(entry);
                }
                // A key tried for this request still tells when it will be back: the
                // caller may wait for it.
                if let Some(at) = entry.back_at().filter(|at| *at > now_ms) {
                    back_at = Some(back_at.map_or(at, |b: i64| b.min(at)));
                }
            }
        }
        // The resting keys are sorted by the control plane's time, so the scan ends at the
        // first whose time is no earlier than the best found.
        for entry in &self.resting[due..] {
            if back_at.is_some_and(|b| entry.usable_from_ms >= b) {
                break;
            }
            if entry.excluded_for(model, now_ms) {
                continue;
            }
            if let Some(at) = entry.back_at() {
                back_at = Some(back_at.map_or(at, |b: i64| b.min(at)));
            }
        }
        match back_at {
            Some(back_at_ms) => Pick::AllCooling { back_at_ms },
            None => Pick::Exhausted,
        }
    }
}

/// What the allocator hands out for a request of `size` bytes, as glibc's malloc does: an
/// 8-byte header, 16-byte granules, 32 bytes at least. Estimates of memory per key count
/// this, not the bare `size_of`.
pub fn allocated(size: usize) -> usize {
    if size == 0 {
        0
    } else {
        (size + 8).div_ceil(16).max(2) * 16
    }
}

/// Every provider's pool, built with a config and swapped in with it.
#[derive(Debug, Default)]
pub struct Pools {
    by_provider: HashMap<String, Arc<KeyPool>>,
}

impl Pools {
    pub fn get(&self, provider: &str) -> Option<&Arc<KeyPool>> {
        self.by_provider.get(provider)
    }

    /// Heap bytes the pools hold beyond the keys themselves: each pool's entry lists,
    /// local health state included. The keys are counted by
    /// [`Keys::heap_bytes`](crate::runtime::Keys::heap_bytes).
    pub fn heap_bytes(&self) -> usize {
        self.by_provider
            .values()
            .map(|pool| {
                allocated(size_of::<KeyPool>() + 2 * size_of::<usize>())
                    + allocated(pool.ring.capacity() * size_of::<PoolEntry>())
                    + allocated(pool.resting.capacity() * size_of::<PoolEntry>())
            })
            .sum()
    }

    /// The pools for `keys` (each provider's keys, sorted). `previous` is the config in
    /// force: a provider whose key list it shares keeps its pool as it is; in a rebuilt
    /// pool, a key sent unchanged (the same `Arc`) keeps a copy of its local state.
    pub fn build<'a>(
        keys: impl IntoIterator<Item = (&'a str, &'a [Arc<Key>], bool)>,
        previous: Option<&Pools>,
    ) -> Pools {
        let mut by_provider = HashMap::new();
        for (provider, list, unchanged) in keys {
            let old = previous.and_then(|p| p.by_provider.get(provider));
            if unchanged && let Some(old) = old {
                by_provider.insert(provider.to_string(), Arc::clone(old));
                continue;
            }
            let carried: HashMap<*const Key, &LocalKeyState> = old
                .map(|pool| {
                    pool.entries()
                        .map(|e| (Arc::as_ptr(&e.key), &e.local))
                        .collect()
                })
                .unwrap_or_default();
            let entries = list
                .iter()
                .filter_map(|key| {
                    let from = usable_from(key)?;
                    let local = carried
                        .get(&Arc::as_ptr(key))
                        .map_or_else(LocalKeyState::default, |l| LocalKeyState::copy_of(l));
                    Some(PoolEntry::new(key, from, local))
                })
                .collect();
            by_provider.insert(provider.to_string(), Arc::new(KeyPool::new(entries)));
        }
        Pools { by_provider }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fulcrum_proto::model::Secret;

    fn key(id: &str, state: KeyState, until: i64) -> Arc<Key> {
        Arc::new(Key {
            id: id.into(),
            provider: "p".into(),
            secret: Secret::new(format!("sk-{id}-secret")),
            state,
            state_reason: String::new(),
            state_until_unix_ms: until,
            proxy: None,
            exhausted_models: Box::default(),
        })
    }

    fn pools(keys: &[Arc<Key>], previous: Option<&Pools>) -> Pools {
        Pools::build([("p", keys, false)], previous)
    }

    fn picked(pick: Pick) -> String {
        match pick {
            Pick::Key(e) => e.key.id.clone(),
            other => panic!("expected a key, got {other:?}"),
        }
    }

    fn local<'a>(pools: &'a Pools, id: &str) -> &'a LocalKeyState {
        let pool = pools.get("p").unwrap();
        &pool.entries().find(|e| e.key.id == id).unwrap().local
    }

    #[test]
    fn round_robin_skips_unusable_and_tried_keys() {
        let keys = [
            key("a", KeyState::Active, 0),
            key("b", KeyState::Disabled, 0),
            key("c", KeyState::Cooling, 2_000),
            key("d", KeyState::Active, 0),
        ];
        let pools = pools(&keys, None);
        let pool = pools.get("p").unwrap();
        assert_eq!(pool.len(), 3, "disabled keys are not pooled");
        let order: Vec<String> = (0..4).map(|_| picked(pool.pick(1_000, &[]))).collect();
        assert_eq!(order, ["a", "d", "a", "d"]);
        // After its cooldown, c joins the rotation.
        let later: Vec<String> = (0..3).map(|_| picked(pool.pick(3_000, &[]))).collect();
        assert!(later.contains(&"c".to_string()), "{later:?}");
        // A key already tried for this request is skipped.
        for _ in 0..4 {
            assert_ne!(
                picked(pool.pick(1_000, std::slice::from_ref(&keys[0]))),
                "a"
            );
        }
    }

    #[test]
    fn local_reactions_take_keys_out_and_report_when_all_cool() {
        let keys = [key("a", KeyState::Active, 0), key("b", KeyState::Active, 0)];
        let pools = pools(&keys, None);
        let pool = pools.get("p").unwrap();
        local(&pools, "a").record_rate_limited(5_000);
        local(&pools, "b").record_rate_limited(4_000);
        match pool.pick(1_000, &[]) {
            Pick::AllCooling { back_at_ms } => assert_eq!(back_at_ms, 4_000),
            other => panic!("{other:?}"),
        }
        assert_eq!(picked(pool.pick(4_500, &[])), "b");
        let b = local(&pools, "b");
        assert_eq!(
            b.record_failure(4_500, 2),
            KeyVerdict::Failed { now_out: false }
        );
        assert_eq!(
            b.record_success(4_500, 0),
            KeyVerdict::Success {
                reset_failures: true,
                report_use: false
            }
        );
        assert_eq!(
            b.record_success(4_500, 0),
            KeyVerdict::Success {
                reset_failures: false,
                report_use: false
            }
        );
        // Use is reported at most once per interval.
        let reports: Vec<bool> = [4_500, 4_600, 5_499, 5_500, 5_600]
            .into_iter()
            .map(|now| {
                matches!(
                    b.record_success(now, 1_000),
                    KeyVerdict::Success {
                        report_use: true,
                        ..
                    }
                )
            })
            .collect();
        assert_eq!(reports, [true, false, false, true, false]);
        b.record_failure(4_600, 2);
        assert_eq!(
            b.record_failure(4_700, 2),
            KeyVerdict::Failed { now_out: true }
        );
        local(&pools, "a").record_refused(4_800);
        assert!(matches!(pool.pick(10_000, &[]), Pick::Exhausted));
    }

    #[test]
    fn local_state_follows_unchanged_keys_and_resets_on_a_new_decision() {
        let a = key("a", KeyState::Active, 0);
        let first = pools(std::slice::from_ref(&a), None);
        local(&first, "a").record_refused(1_000);
        // The same key sent again (the same Arc): the local "out" stays.
        let second = pools(
            &[Arc::clone(&a), key("b", KeyState::Active, 0)],
            Some(&first),
        );
        assert!(local(&second, "a").is_out());
        assert_eq!(picked(second.get("p").unwrap().pick(2_000, &[])), "b");
        // An unchanged provider keeps its very pool.
        let third = Pools::build([("p", &[][..], true)], Some(&second));
        assert!(Arc::ptr_eq(
            third.get("p").unwrap(),
            second.get("p").unwrap()
        ));
        // The control plane sends the key changed (re-enabled): it starts afresh.
        let fourth = pools(&[key("a", KeyState::Active, 0)], Some(&second));
        assert!(!local(&fourth, "a").is_out());
        assert_eq!(picked(fourth.get("p").unwrap().pick(3_000, &[])), "a");
    }

    #[test]
    fn resting_keys_wait_outside_the_ring_and_join_it_when_due() {
        let keys = [
            key("a", KeyState::Active, 0),
            key("late", KeyState::Exhausted, 9_000),
            key("soon", KeyState::Cooling, 5_000),
            key("b", KeyState::Active, 0),
        ];
        let pools = pools(&keys, None);
        let pool = pools.get("p").unwrap();
        assert_eq!(pool.ring.len(), 2, "only usable keys ride the ring");
        let ids: Vec<&str> = pool.resting.iter().map(|e| e.key.id.as_str()).collect();
        assert_eq!(ids, ["soon", "late"], "resting keys sorted by their time");
        let before: Vec<String> = (0..6).map(|_| picked(pool.pick(1_000, &[]))).collect();
        assert!(before.iter().all(|id| id == "a" || id == "b"), "{before:?}");
        // Its time has come: it shares the rotation, not only the leftovers.
        let after: Vec<String> = (0..6).map(|_| picked(pool.pick(5_000, &[]))).collect();
        assert_eq!(
            after.iter().filter(|id| *id == "soon").count(),
            2,
            "{after:?}"
        );
        assert!(!after.contains(&"late".to_string()), "{after:?}");
        // With the ring out, the earliest resting key tells when to come back, its own
        // local cooldown counted.
        local(&pools, "a").record_refused(1_000);
        local(&pools, "b").record_rate_limited(8_000);
        local(&pools, "soon").record_rate_limited(9_500);
        match pool.pick(6_000, &[]) {
            Pick::AllCooling { back_at_ms } => assert_eq!(back_at_ms, 8_000),
            other => panic!("{other:?}"),
        }
        match pool.pick(8_500, std::slice::from_ref(&keys[3])) {
            Pick::AllCooling { back_at_ms } => assert_eq!(back_at_ms, 9_000),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            picked(pool.pick(9_000, std::slice::from_ref(&keys[3]))),
            "late"
        );
    }

    #[test]
    fn a_key_out_of_quota_for_a_model_serves_other_models() {
        let mut limited = Key::clone(&key("limited", KeyState::Active, 0));
        limited.exhausted_models = vec![(Box::from("big"), 10_000)].into_boxed_slice();
        let keys = [Arc::new(limited), key("free", KeyState::Active, 0)];
        let pools = pools(&keys, None);
        let pool = pools.get("p").unwrap();
        for _ in 0..4 {
            match pool.pick_for(1_000, &[], "big") {
                Pick::Key(e) => assert_eq!(e.key.id, "free"),
                other => panic!("{other:?}"),
            }
        }
        let small: Vec<String> = (0..4)
            .map(|_| picked(pool.pick_for(1_000, &[], "small")))
            .collect();
        assert!(small.contains(&"limited".to_string()), "{small:?}");
        // After the model's reset the key serves it again.
        let later: Vec<String> = (0..4)
            .map(|_| picked(pool.pick_for(10_000, &[], "big")))
            .collect();
        assert!(later.contains(&"limited".to_string()), "{later:?}");
    }
}
