//! The key index of a runtime config: every key by id and, sorted by id, by provider.
//!
//! Each provider's keys sit behind their own `Arc`, so that a delta shares the providers
//! it does not touch with the config it replaces: adding 100,000 keys to one provider
//! neither copies nor, later, frees the keys of the others.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, OnceLock};

use fulcrum_proto::model::{Key, Provider};
use fulcrum_proto::pb;
use fulcrum_proto::pb::ResourceKind;

use super::Problems;
use crate::balance::allocated;

/// Every key of one config. Cheap to clone: one `Arc` per provider.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    /// By provider name. Providers without keys have no entry.
    providers: HashMap<String, Arc<ProviderKeys>>,
    /// Keys of all providers together.
    len: usize,
}

/// The key with this id, as `HashMap` indexes.
///
/// # Panics
///
/// If no provider has a key with this id.
impl std::ops::Index<&str> for Keys {
    type Output = Arc<Key>;

    fn index(&self, id: &str) -> &Arc<Key> {
        self.get(id).expect("no key with this id")
    }
}

/// The keys of one provider.
#[derive(Debug, Default)]
struct ProviderKeys {
    /// Sorted by id, so that key choice can index it and deltas can merge into it.
    list: Vec<Arc<Key>>,
    /// The same keys, by id.
    by_id: HashMap<KeyId, Arc<Key>, IdHashBuilder>,
}

/// A key id held inline: ids are 16 ASCII characters, and their bytes read big-endian
/// compare as the id does. Comparing and hashing it never follows a pointer, which keeps
/// sorting and looking up 100,000 keys out of cache misses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct KeyId(u128);

impl KeyId {
    /// `None` for a string of another length, which no valid key has.
    fn of(id: &str) -> Option<Self> {
        let bytes: [u8; 16] = id.as_bytes().try_into().ok()?;
        Some(Self(u128::from_be_bytes(bytes)))
    }

    fn of_key(key: &Key) -> Self {
        Self::of(&key.id).expect("a validated key id has 16 characters")
    }
}

/// Hashes a [`KeyId`] with one folded multiplication (as foldhash does) instead of SipHash.
/// Seeded once per process, so that ids cannot be chosen to fill one bucket.
#[derive(Debug, Clone, Copy)]
struct IdHashBuilder {
    seed: [u64; 2],
}

impl Default for IdHashBuilder {
    fn default() -> Self {
        static SEED: OnceLock<[u64; 2]> = OnceLock::new();
        let seed = *SEED.get_or_init(|| {
            // Without randomness the hash is merely predictable, which is still correct.
            let random = || getrandom::u64().unwrap_or(0x243f_6a88_85a3_08d3);
            [random() | 1, random() | 1]
        });
        Self { seed }
    }
}

impl BuildHasher for IdHashBuilder {
    type Hasher = IdHasher;

    fn build_hasher(&self) -> IdHasher {
        IdHasher {
            seed: self.seed,
            hash: 0,
        }
    }
}

#[derive(Debug)]
struct IdHasher {
    seed: [u64; 2],
    hash: u64,
}

impl Hasher for IdHasher {
    fn write_u128(&mut self, value: u128) {
        let [low, high] = [value as u64, (value >> 64) as u64];
        let product = u128::from(low ^ self.seed[0] ^ self.hash) * u128::from(high ^ self.seed[1]);
        self.hash = (product as u64) ^ ((product >> 64) as u64);
    }

    /// Only [`KeyId`] is hashed, through `write_u128`; this is for completeness.
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(16) {
            let mut block = [0u8; 16];
            block[..chunk.len()].copy_from_slice(chunk);
            self.write_u128(u128::from_le_bytes(block));
        }
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

// === impl Keys ===

impl Keys {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The key with this id, whichever provider it belongs to. Costs one lookup per
    /// provider with keys.
    pub fn get(&self, id: &str) -> Option<&Arc<Key>> {
        self.find(KeyId::of(id)?).map(|(_, key)| key)
    }

    pub fn contains_key(&self, id: &str) -> bool {
        self.get(id).is_some()
    }

    /// The keys of `provider`, sorted by id; empty if it has none.
    pub fn of_provider(&self, provider: &str) -> &[Arc<Key>] {
        self.providers
            .get(provider)
            .map_or(&[][..], |keys| keys.list.as_slice())
    }

    /// The providers that have keys, each with its keys sorted by id, in no set order.
    pub fn by_provider(&self) -> impl Iterator<Item = (&str, &[Arc<Key>])> {
        self.providers
            .iter()
            .map(|(name, keys)| (name.as_str(), keys.list.as_slice()))
    }

    /// Each provider's keys, with whether `previous` holds the very same list (so that
    /// what was built from it can be kept).
    pub fn lists_since<'a>(
        &'a self,
        previous: Option<&'a Keys>,
    ) -> impl Iterator<Item = (&'a str, &'a [Arc<Key>], bool)> {
        self.providers.iter().map(move |(name, keys)| {
            let unchanged = previous
                .and_then(|p| p.providers.get(name))
                .is_some_and(|old| Arc::ptr_eq(old, keys));
            (name.as_str(), keys.list.as_slice(), unchanged)
        })
    }

    /// Heap bytes the keys and their indexes hold, as the allocator counts them (see
    /// [`allocated`]): each key's `Arc` allocation and strings, each provider's sorted list
    /// and id table. Exported as `fulcrum_key_pool_bytes`; with the pools' own share
    /// it is the data plane's memory per key.
    pub fn heap_bytes(&self) -> usize {
        self.providers
            .values()
            .map(|keys| {
                // hashbrown: buckets are the next power of two of 8/7 of the capacity, each
                // holding one entry and one control byte.
                let buckets = (keys.by_id.capacity() * 8 / 7).next_power_of_two();
                let table = buckets * (size_of::<(KeyId, Arc<Key>)>() + 1) + 16;
                let per_key: usize = keys.list.iter().map(|key| key_heap_bytes(key)).sum();
                allocated(size_of::<ProviderKeys>() + 2 * size_of::<usize>())
                    + allocated(keys.list.capacity() * size_of::<Arc<Key>>())
                    + allocated(table)
                    + per_key
            })
            .sum()
    }

    /// Every key, in no set order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Key>> {
        self.providers.values().flat_map(|keys| keys.list.iter())
    }

    /// The provider holding `id`, and its key.
    fn find(&self, id: KeyId) -> Option<(&str, &Arc<Key>)> {
        self.providers
            .iter()
            .find_map(|(name, keys)| keys.by_id.get(&id).map(|key| (name.as_str(), key)))
    }

    /// The keys after removing `removed` (ids) and then upserting `upserted`, checked
    /// against the new set of providers. Problems go to `problems`; the result is then
    /// only good for counting. A key listed twice: the last one wins. Only the providers
    /// whose keys change get new lists, merged into their old sorted ones.
    pub(super) fn change(
        &self,
        providers: &HashMap<String, Provider>,
        upserted: Vec<pb::ProviderKey>,
        removed: &[&str],
        problems: &mut Problems,
    ) -> Keys {
        let mut gained = Vec::with_capacity(upserted.len());
        // Bulk imports send long runs of one provider's keys: look each run's provider up once.
        let mut known_provider: Option<String> = None;
        for k in upserted {
            let key = match Key::try_from(k) {
                Ok(key) => key,
                Err(e) => {
                    problems.invalid(ResourceKind::Key, &e.name.clone(), e);
                    continue;
                }
            };
            if known_provider.as_ref() != Some(&key.provider) {
                if !providers.contains_key(&key.provider) {
                    problems.add(
                        ResourceKind::Key,
                        &key.id,
                        format!(
                            "key {} belongs to unknown provider {:?}",
                            key.id, key.provider
                        ),
                    );
                    continue;
                }
                known_provider = Some(key.provider.clone());
            }
            gained.push((KeyId::of_key(&key), Arc::new(key)));
        }
        // Stable, so that keys listed twice stay in message order; then the last of equal
        // ids is kept.
        gained.sort_by_key(|(id, _)| *id);
        gained.dedup_by(|later, earlier| {
            let same = later.0 == earlier.0;
            if same {
                std::mem::swap(later, earlier);
            }
            same
        });

        let mut changes = Changes::default();
        for id in removed.iter().filter_map(|id| KeyId::of(id)) {
            if let Some((provider, _)) = self.find(id) {
                changes.of(provider).lost.push(id);
            }
        }
        // Where each gained key was before, looked up one provider at a time so that each
        // provider's table stays in cache for the whole pass.
        let mut found = vec![false; gained.len()];
        for (provider, keys) in &self.providers {
            for ((id, key), found) in gained.iter().zip(&mut found) {
                if !*found && keys.by_id.contains_key(id) {
                    *found = true;
                    if *provider != key.provider {
                        // Moved to another provider: it leaves the old one's list.
                        changes.of(provider).lost.push(*id);
                    }
                }
            }
        }
        for (id, key) in gained {
            changes.of(&key.provider).gained.push((id, key));
        }

        let mut next = self.clone();
        for change in changes.list {
            let old = next.providers.remove(&change.provider);
            let provider = change.provider.clone();
            let keys = change.apply(old.as_deref());
            next.len = next.len - old.map_or(0, |old| old.list.len()) + keys.list.len();
            if !keys.list.is_empty() {
                next.providers.insert(provider, Arc::new(keys));
            }
        }
        next
    }
}

/// One key's own heap: its `Arc` allocation and its strings.
fn key_heap_bytes(key: &Key) -> usize {
    allocated(size_of::<Key>() + 2 * size_of::<usize>())
        + allocated(key.id.capacity())
        + allocated(key.provider.capacity())
        + allocated(key.secret.expose().len())
        + allocated(key.state_reason.capacity())
        + key
            .proxy
            .as_ref()
            .map_or(0, |p| allocated(p.expose().len()))
}

/// The providers whose keys a message changes.
#[derive(Default)]
struct Changes {
    list: Vec<ListChange>,
    /// Provider name to its place in `list`.
    slots: HashMap<String, usize>,
    /// The place last asked for: bulk imports ask for one provider 100,000 times.
    last: usize,
}

impl Changes {
    fn of(&mut self, provider: &str) -> &mut ListChange {
        if self
            .list
            .get(self.last)
            .is_none_or(|c| c.provider != provider)
        {
            self.last = match self.slots.get(provider) {
                Some(slot) => *slot,
                None => {
                    self.slots.insert(provider.to_string(), self.list.len());
                    self.list.push(ListChange {
                        provider: provider.to_string(),
                        gained: Vec::new(),
                        lost: Vec::new(),
                    });
                    self.list.len() - 1
                }
            };
        }
        &mut self.list[self.last]
    }
}

/// How one provider's keys change.
struct ListChange {
    provider: String,
    /// Keys added or replaced, sorted by id, each id once.
    gained: Vec<(KeyId, Arc<Key>)>,
    /// Keys removed or moved to another provider, in any order, maybe repeated.
    lost: Vec<KeyId>,
}

impl ListChange {
    /// The provider's keys after the change. The list is merged, linearly; the id map is
    /// copied and edited.
    fn apply(mut self, old: Option<&ProviderKeys>) -> ProviderKeys {
        self.lost.sort_unstable();
        let old_list = old.map_or(&[][..], |old| old.list.as_slice());
        let mut list = Vec::with_capacity(old_list.len() + self.gained.len());
        let mut gained = self.gained.iter().peekable();
        let mut lost = self.lost.iter().peekable();
        for key in old_list {
            let id = KeyId::of_key(key);
            while let Some((_, g)) = gained.next_if(|(g, _)| *g < id) {
                list.push(Arc::clone(g));
            }
            // A gained key replaces the old one, even if the same message removed it.
            if let Some((_, g)) = gained.next_if(|(g, _)| *g == id) {
                list.push(Arc::clone(g));
                continue;
            }
            while lost.next_if(|l| **l < id).is_some() {}
            if lost.next_if(|l| **l == id).is_some() {
                continue;
            }
            list.push(Arc::clone(key));
        }
        list.extend(gained.map(|(_, g)| Arc::clone(g)));
        debug_assert!(list.is_sorted_by(|a, b| a.id < b.id));

        let mut by_id = old.map_or_else(
            || HashMap::with_capacity_and_hasher(self.gained.len(), IdHashBuilder::default()),
            |old| old.by_id.clone(),
        );
        by_id.reserve(self.gained.len());
        for id in &self.lost {
            by_id.remove(id);
        }
        by_id.extend(self.gained);
        debug_assert_eq!(list.len(), by_id.len());
        ProviderKeys { list, by_id }
    }
}
