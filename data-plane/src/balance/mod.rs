//! Key pools and this data plane's own view of key health.
//!
//! The control plane decides a key's global state; this module adds what this data plane
//! learned itself in the meantime (a 429 a moment ago, a run of failures), so that it
//! reacts at once. That local state lives in [`LocalKeyState`], carried from pool to pool
//! for as long as the control plane sends the key unchanged: a key that comes back
//! changed carries a newer decision than anything learned here (an operator re-enabled
//! it, or our own report came back as a state), so it starts afresh.
//!
//! Key choice is a round robin over a provider's keys: an atomic counter picks the start
//! and the first usable key from there wins. No lock is taken on the hot path.

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
}

/// What an upstream answer means for the key that was used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyVerdict {
    /// 2xx. Carries whether it ended a run of failures (worth reporting).
    Success { reset_failures: bool },
    /// 429: rest until this Unix ms.
    RateLimited { until_ms: i64 },
    /// 401/403: the key itself was refused.
    Refused,
    /// 5xx, network error or first-byte timeout. Carries whether the key is now out.
    Failed { now_out: bool },
}

impl LocalKeyState {
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

    pub fn record_success(&self) -> KeyVerdict {
        let previous = self.consecutive_failures.swap(0, Ordering::Relaxed);
        KeyVerdict::Success {
            reset_failures: previous > 0,
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

/// Whether a key in this global state may be picked at all (time permitting).
fn pooled(state: KeyState) -> bool {
    matches!(
        state,
        KeyState::Active | KeyState::Cooling | KeyState::Exhausted
    )
}

/// One key in a pool.
#[derive(Debug, Clone)]
pub struct PoolEntry {
    pub key: Arc<Key>,
    pub local: Arc<LocalKeyState>,
}

impl PoolEntry {
    /// Usable at `now_ms`: the control plane's state allows it and so does ours.
    pub fn usable(&self, now_ms: i64) -> bool {
        let global = match self.key.state {
            KeyState::Active => true,
            KeyState::Cooling | KeyState::Exhausted => self.key.state_until_unix_ms <= now_ms,
            _ => false,
        };
        global && self.local.usable(now_ms)
    }

    /// When a cooling key can be used again, or `None` if it is out for good.
    fn back_at(&self) -> Option<i64> {
        if self.local.is_out() {
            return None;
        }
        let global = match self.key.state {
            KeyState::Active => 0,
            KeyState::Cooling | KeyState::Exhausted => self.key.state_until_unix_ms,
            _ => return None,
        };
        Some(global.max(self.local.cooling_until_ms()))
    }
}

/// A provider's keys that may be picked, and the round-robin position.
#[derive(Debug)]
pub struct KeyPool {
    entries: Vec<PoolEntry>,
    next: AtomicUsize,
}

/// The outcome of asking a pool for a key.
#[derive(Debug, Clone)]
pub enum Pick {
    Key(PoolEntry),
    /// Every key is resting; the first is back at this Unix ms.
    AllCooling {
        back_at_ms: i64,
    },
    /// No key can be used (none, or all out).
    Exhausted,
}

impl KeyPool {
    fn new(entries: Vec<PoolEntry>) -> Self {
        Self {
            entries,
            next: AtomicUsize::new(0),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether any key can be used now (a scan: for listings, not the request path).
    pub fn has_usable(&self, now_ms: i64) -> bool {
        self.entries.iter().any(|e| e.usable(now_ms))
    }

    /// The next usable key in round-robin order, skipping keys already tried for this
    /// request (by id).
    pub fn pick(&self, now_ms: i64, tried: &[Arc<Key>]) -> Pick {
        self.pick_for(now_ms, tried, "")
    }

    /// [`KeyPool::pick`] for a request of `model`: keys whose quota for that model is used
    /// up are skipped too (an empty slice check per key when none is, which is the rule).
    pub fn pick_for(&self, now_ms: i64, tried: &[Arc<Key>], model: &str) -> Pick {
        let n = self.entries.len();
        if n == 0 {
            return Pick::Exhausted;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let mut back_at: Option<i64> = None;
        for offset in 0..n {
            let entry = &self.entries[(start + offset) % n];
            let was_tried = tried
                .iter()
                .any(|t| Arc::ptr_eq(t, &entry.key) || t.id == entry.key.id);
            if !model.is_empty() && entry.key.exhausted_for(model, now_ms) {
                continue;
            }
            if !was_tried && entry.usable(now_ms) {
                // Move the counter past the keys skipped, so that their share spreads over
                // the usable keys instead of all landing on the one after them.
                if offset > 0 {
                    self.next.fetch_add(offset, Ordering::Relaxed);
                }
                return Pick::Key(entry.clone());
            }
            // A key tried for this request still tells when it will be back: the caller
            // may wait for it.
            if let Some(at) = entry.back_at().filter(|at| *at > now_ms) {
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

    /// Heap bytes the pools hold beyond the keys themselves: each pool's entry list and
    /// each entry's local health state. The keys are counted by
    /// [`Keys::heap_bytes`](crate::runtime::Keys::heap_bytes).
    pub fn heap_bytes(&self) -> usize {
        self.by_provider
            .values()
            .map(|pool| {
                allocated(size_of::<KeyPool>() + 2 * size_of::<usize>())
                    + allocated(pool.entries.capacity() * size_of::<PoolEntry>())
                    + pool.entries.len()
                        * allocated(size_of::<LocalKeyState>() + 2 * size_of::<usize>())
            })
            .sum()
    }

    /// The pools for `keys` (each provider's keys, sorted). `previous` is the config in
    /// force: a provider whose key list it shares keeps its pool as it is; in a rebuilt
    /// pool, a key sent unchanged (the same `Arc`) keeps its local state.
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
            let carried: HashMap<*const Key, &Arc<LocalKeyState>> = old
                .map(|pool| {
                    pool.entries
                        .iter()
                        .map(|e| (Arc::as_ptr(&e.key), &e.local))
                        .collect()
                })
                .unwrap_or_default();
            let entries = list
                .iter()
                .filter(|key| pooled(key.state))
                .map(|key| PoolEntry {
                    key: Arc::clone(key),
                    local: carried
                        .get(&Arc::as_ptr(key))
                        .map_or_else(Arc::default, |l| Arc::clone(l)),
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

    fn local(pools: &Pools, id: &str) -> Arc<LocalKeyState> {
        let pool = pools.get("p").unwrap();
        let entry = pool.entries.iter().find(|e| e.key.id == id).unwrap();
        Arc::clone(&entry.local)
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
            b.record_success(),
            KeyVerdict::Success {
                reset_failures: true
            }
        );
        assert_eq!(
            b.record_success(),
            KeyVerdict::Success {
                reset_failures: false
            }
        );
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
}
