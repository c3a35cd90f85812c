//! The runtime config: an immutable view of every resource the control plane sent, and
//! the handle through which requests read the current one.
//!
//! A response is applied all-or-nothing: [`RuntimeConfig::apply`] validates it and builds a
//! new config beside the current one, and only a fully valid result is swapped in. Requests
//! in flight keep the `Arc` they started with.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arc_swap::ArcSwapOption;
use fulcrum_proto::model::{ClientToken, InvalidResource, Provider, Route, Settings, settings};
use fulcrum_proto::pb;
use fulcrum_proto::pb::ResourceKind;
use fulcrum_proto::pb::stream_config_response::Body;
use tokio::sync::watch;

use crate::balance::Pools;
use crate::error::Rejection;

mod keys;

pub use keys::Keys;

/// A NACK names at most this many resources, so that a snapshot full of bad keys does not
/// produce a NACK larger than the control plane accepts.
const MAX_REJECTED_REFS: usize = 100;
/// A NACK's reason quotes at most this many problems; the rest are counted.
const MAX_REASONS: usize = 5;

/// Every resource of one revision, validated and indexed. Never changes once built.
#[derive(Debug)]
pub struct RuntimeConfig {
    pub revision: u64,
    /// The store the revision comes from; revisions of different stores do not compare.
    pub store_id: String,
    /// By name.
    pub providers: HashMap<String, Provider>,
    /// By id and by provider. Unchanged keys keep their `Arc` across deltas.
    pub keys: Keys,
    /// By model pattern.
    pub routes: BTreeMap<String, Route>,
    /// Token hash (lowercase hex SHA-256) to token name.
    pub client_tokens: HashMap<String, Arc<str>>,
    pub settings: Settings,
    /// The raw setting values, kept so that a delta can change one of them.
    setting_values: BTreeMap<String, String>,
    /// Token name to hash, kept because deltas remove tokens by name.
    token_hashes: HashMap<String, String>,
    /// Key pools by provider, with this data plane's own view of each key's health.
    pub pools: Pools,
}

// === impl RuntimeConfig ===

impl RuntimeConfig {
    /// Builds the config a response leads to from the one in force (`None` before the
    /// first snapshot). On a rejection nothing changes. Takes the response by value to
    /// move its strings instead of copying them.
    pub fn apply(
        current: Option<&RuntimeConfig>,
        response: pb::StreamConfigResponse,
    ) -> Result<RuntimeConfig, Rejection> {
        let mut config = match response.body {
            Some(Body::Snapshot(snapshot)) => {
                Self::from_snapshot(response.revision, &response.store_id, snapshot)
            }
            Some(Body::Delta(delta)) => match current {
                Some(current) => current.apply_delta(response.revision, &response.store_id, delta),
                None => Err(Rejection::NoBase),
            },
            None => Err(Rejection::NoBody),
        }?;
        config.pools = Pools::build(
            config.keys.lists_since(current.map(|c| &c.keys)),
            current.map(|c| &c.pools),
        );
        Ok(config)
    }

    /// Builds a config from a snapshot, replacing everything.
    pub fn from_snapshot(
        revision: u64,
        store_id: &str,
        snapshot: pb::Snapshot,
    ) -> Result<RuntimeConfig, Rejection> {
        Self::empty(revision, store_id).change(
            revision,
            store_id,
            snapshot.resources.unwrap_or_default(),
            &[],
        )
    }

    /// Builds the config `delta` leads to from this one. The delta must start at this
    /// config's revision and store.
    pub fn apply_delta(
        &self,
        revision: u64,
        store_id: &str,
        delta: pb::Delta,
    ) -> Result<RuntimeConfig, Rejection> {
        if delta.base_revision != self.revision {
            return Err(Rejection::BaseMismatch {
                base: delta.base_revision,
                applied: self.revision,
            });
        }
        if store_id != self.store_id {
            return Err(Rejection::StoreMismatch {
                delta: store_id.to_string(),
                applied: self.store_id.clone(),
            });
        }
        if revision < delta.base_revision {
            return Err(Rejection::RevisionBeforeBase {
                revision,
                base: delta.base_revision,
            });
        }
        self.change(
            revision,
            store_id,
            delta.upserted.unwrap_or_default(),
            &delta.removed,
        )
    }

    fn empty(revision: u64, store_id: &str) -> Self {
        Self {
            revision,
            store_id: store_id.to_string(),
            providers: HashMap::new(),
            keys: Keys::default(),
            routes: BTreeMap::new(),
            client_tokens: HashMap::new(),
            settings: Settings::default(),
            setting_values: BTreeMap::new(),
            token_hashes: HashMap::new(),
            pools: Pools::default(),
        }
    }

    /// Removes, then upserts, on top of `self`. Removals come first so that a resource both
    /// removed and upserted ends up present, as the upsert is the later statement. A
    /// resource listed twice: the last one wins. Only the indexes of kinds that change are
    /// rebuilt, and among keys only those of providers whose keys changed.
    fn change(
        &self,
        revision: u64,
        store_id: &str,
        upserted: pb::Resources,
        removed: &[pb::ResourceRef],
    ) -> Result<RuntimeConfig, Rejection> {
        let mut problems = Problems::default();
        let removals = Removals::sort(removed, &mut problems);
        let pb::Resources {
            providers: upserted_providers,
            keys: upserted_keys,
            routes: upserted_routes,
            client_tokens: upserted_tokens,
            settings: upserted_settings,
        } = upserted;

        // Providers first: everything else is checked against the new set.
        let mut providers = self.providers.clone();
        for name in &removals.providers {
            providers.remove(*name);
        }
        for p in &upserted_providers {
            match Provider::try_from(p) {
                Ok(provider) => {
                    providers.insert(provider.name.clone(), provider);
                }
                Err(e) => problems.invalid(ResourceKind::Provider, &p.name, e),
            }
        }

        let keys = if removals.keys.is_empty() && upserted_keys.is_empty() {
            self.keys.clone()
        } else {
            self.keys
                .change(&providers, upserted_keys, &removals.keys, &mut problems)
        };

        let mut routes = self.routes.clone();
        for pattern in &removals.routes {
            routes.remove(*pattern);
        }
        for r in &upserted_routes {
            match Route::try_from(r) {
                Ok(route) => {
                    routes.insert(route.model_pattern.clone(), route);
                }
                Err(e) => problems.invalid(ResourceKind::Route, &r.model_pattern, e),
            }
        }

        // A provider may only go once nothing refers to it. Upserted keys and routes are
        // checked here too, whether or not a provider went.
        for route in routes.values() {
            for target in &route.targets {
                if !providers.contains_key(&target.provider) {
                    problems.add(
                        ResourceKind::Route,
                        &route.model_pattern,
                        format!(
                            "route {:?} targets unknown provider {:?}",
                            route.model_pattern, target.provider
                        ),
                    );
                    // One problem per route is enough to reject it.
                    break;
                }
            }
        }
        for name in &removals.providers {
            let left = keys.of_provider(name).len();
            if left > 0 {
                problems.add(
                    ResourceKind::Provider,
                    name,
                    format!("provider {name:?} cannot be removed: it still has {left} keys"),
                );
            }
        }

        let (client_tokens, token_hashes) =
            self.change_tokens(&upserted_tokens, &removals.client_tokens, &mut problems);

        let mut setting_values = self.setting_values.clone();
        for name in &removals.settings {
            setting_values.remove(*name);
        }
        for s in &upserted_settings {
            match settings::spec(&s.name).and_then(|spec| spec.check(&s.value)) {
                Ok(value) => {
                    setting_values.insert(s.name.clone(), value);
                }
                Err(e) => problems.invalid(ResourceKind::Setting, &s.name, e),
            }
        }
        // Each value was checked above; this only fails if the model's rules disagree.
        let settings = match Settings::from_values(&setting_values) {
            Ok(settings) => settings,
            Err(e) => {
                problems.invalid(ResourceKind::Setting, &e.name.clone(), e);
                self.settings.clone()
            }
        };

        problems.into_result()?;
        Ok(RuntimeConfig {
            revision,
            store_id: store_id.to_string(),
            providers,
            keys,
            routes,
            client_tokens,
            settings,
            setting_values,
            token_hashes,
            pools: Pools::default(),
        })
    }

    /// Applies client-token removals (by name) and upserts; two names may not share a hash.
    fn change_tokens(
        &self,
        upserted: &[pb::ClientToken],
        removed: &[&str],
        problems: &mut Problems,
    ) -> (HashMap<String, Arc<str>>, HashMap<String, String>) {
        let mut by_hash = self.client_tokens.clone();
        let mut by_name = self.token_hashes.clone();
        for name in removed {
            if let Some(hash) = by_name.remove(*name) {
                by_hash.remove(&hash);
            }
        }
        for t in upserted {
            let token = match ClientToken::try_from(t) {
                Ok(token) => token,
                Err(e) => {
                    problems.invalid(ResourceKind::ClientToken, &t.name, e);
                    continue;
                }
            };
            if let Some(other) = by_hash.get(&token.token_hash)
                && **other != *token.name
            {
                problems.add(
                    ResourceKind::ClientToken,
                    &token.name,
                    format!(
                        "client token {:?} has the same hash as client token {other:?}",
                        token.name
                    ),
                );
                continue;
            }
            if let Some(old_hash) = by_name.insert(token.name.clone(), token.token_hash.clone()) {
                by_hash.remove(&old_hash);
            }
            by_hash.insert(token.token_hash, Arc::from(token.name.as_str()));
        }
        (by_hash, by_name)
    }
}

/// The names a delta removes, by kind.
#[derive(Default)]
struct Removals<'a> {
    providers: Vec<&'a str>,
    keys: Vec<&'a str>,
    routes: Vec<&'a str>,
    client_tokens: Vec<&'a str>,
    settings: Vec<&'a str>,
}

impl<'a> Removals<'a> {
    fn sort(removed: &'a [pb::ResourceRef], problems: &mut Problems) -> Self {
        let mut out = Self::default();
        for r in removed {
            let list = match ResourceKind::try_from(r.kind) {
                Ok(ResourceKind::Provider) => &mut out.providers,
                Ok(ResourceKind::Key) => &mut out.keys,
                Ok(ResourceKind::Route) => &mut out.routes,
                Ok(ResourceKind::ClientToken) => &mut out.client_tokens,
                Ok(ResourceKind::Setting) => &mut out.settings,
                Ok(ResourceKind::Unspecified) | Err(_) => {
                    problems.rejected.push(r.clone());
                    problems.reasons.push(format!(
                        "cannot remove {:?}: unknown resource kind {}",
                        r.name, r.kind
                    ));
                    continue;
                }
            };
            list.push(&r.name);
        }
        out
    }
}

/// Everything wrong with one response, gathered so that one NACK names all of it.
#[derive(Default)]
struct Problems {
    rejected: Vec<pb::ResourceRef>,
    reasons: Vec<String>,
}

impl Problems {
    fn add(&mut self, kind: ResourceKind, name: &str, reason: String) {
        self.rejected.push(pb::ResourceRef {
            kind: kind as i32,
            name: name.to_string(),
        });
        self.reasons.push(reason);
    }

    fn invalid(&mut self, kind: ResourceKind, name: &str, e: InvalidResource) {
        self.add(kind, name, e.message);
    }

    fn into_result(mut self) -> Result<(), Rejection> {
        let count = self.reasons.len();
        if count == 0 {
            return Ok(());
        }
        let mut reason = self.reasons[..count.min(MAX_REASONS)].join("; ");
        if count > MAX_REASONS {
            reason.push_str(&format!(" (and {} more)", count - MAX_REASONS));
        }
        self.rejected.truncate(MAX_REJECTED_REFS);
        Err(Rejection::Invalid {
            reason,
            rejected: self.rejected,
        })
    }
}

/// A cheap, cloneable handle to the runtime config in force. Readers never lock: `load`
/// is an atomic pointer read.
#[derive(Clone)]
pub struct RuntimeConfigHandle {
    shared: Arc<Shared>,
}

struct Shared {
    current: ArcSwapOption<RuntimeConfig>,
    /// The applied revision, `None` before the first snapshot; lets tests and callers wait
    /// without polling.
    applied: watch::Sender<Option<u64>>,
    /// Set once shutdown begins, so that load balancers stop sending traffic.
    draining: AtomicBool,
    snapshots_applied: AtomicU64,
    deltas_applied: AtomicU64,
    rejected: AtomicU64,
    last_apply_micros: AtomicU64,
}

/// How the config in force came to be, for tests, benchmarks and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ApplyStats {
    pub snapshots_applied: u64,
    pub deltas_applied: u64,
    /// Responses NACKed.
    pub rejected: u64,
    /// Time to validate and build the last applied response, from its arrival until it
    /// was swapped in.
    pub last_apply: std::time::Duration,
}

/// What an applied config was built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ApplyKind {
    Snapshot,
    Delta,
}

// === impl RuntimeConfigHandle ===

impl RuntimeConfigHandle {
    pub(crate) fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                current: ArcSwapOption::empty(),
                applied: watch::Sender::new(None),
                draining: AtomicBool::new(false),
                snapshots_applied: AtomicU64::new(0),
                deltas_applied: AtomicU64::new(0),
                rejected: AtomicU64::new(0),
                last_apply_micros: AtomicU64::new(0),
            }),
        }
    }

    /// The config in force, `None` before the first snapshot.
    pub fn load(&self) -> Option<Arc<RuntimeConfig>> {
        self.shared.current.load_full()
    }

    /// The revision in force, 0 before the first snapshot.
    pub fn applied_revision(&self) -> u64 {
        self.shared.applied.borrow().unwrap_or(0)
    }

    /// Waits until a config of revision `revision` or later is in force and returns it.
    pub async fn wait_for_revision(&self, revision: u64) -> Arc<RuntimeConfig> {
        let mut applied = self.shared.applied.subscribe();
        // `self` owns the sender, so the channel cannot close while we wait.
        let _ = applied
            .wait_for(|r| r.is_some_and(|r| r >= revision))
            .await
            .expect("the handle owns the sender");
        self.load()
            .expect("a revision is published only after its config is stored")
    }

    /// Tells of every revision applied from now on (`None` before the first snapshot).
    pub(crate) fn subscribe(&self) -> watch::Receiver<Option<u64>> {
        self.shared.applied.subscribe()
    }

    /// Ready to serve: a config is in force and shutdown has not begun.
    pub fn is_ready(&self) -> bool {
        !self.shared.draining.load(Ordering::Acquire) && self.shared.current.load().is_some()
    }

    /// Swaps `config` in and returns the one it replaces. Only the discovery task calls
    /// this, one response at a time, so configs are built from the one in force and never
    /// race. `kind` and `elapsed` (the time to validate and build it) are counted before
    /// the revision is published, so that whoever waited for it reads its stats.
    pub(crate) fn store(
        &self,
        config: Arc<RuntimeConfig>,
        kind: ApplyKind,
        elapsed: std::time::Duration,
    ) -> Option<Arc<RuntimeConfig>> {
        let revision = config.revision;
        self.record_applied(kind, elapsed);
        let previous = self.shared.current.swap(Some(config));
        // The watch's lock orders the counters above before any `wait_for_revision` return.
        self.shared.applied.send_replace(Some(revision));
        previous
    }

    /// Counts of applied and rejected responses, and the last apply time.
    pub fn stats(&self) -> ApplyStats {
        ApplyStats {
            snapshots_applied: self.shared.snapshots_applied.load(Ordering::Relaxed),
            deltas_applied: self.shared.deltas_applied.load(Ordering::Relaxed),
            rejected: self.shared.rejected.load(Ordering::Relaxed),
            last_apply: std::time::Duration::from_micros(
                self.shared.last_apply_micros.load(Ordering::Relaxed),
            ),
        }
    }

    fn record_applied(&self, kind: ApplyKind, elapsed: std::time::Duration) {
        let counter = match kind {
            ApplyKind::Snapshot => &self.shared.snapshots_applied,
            ApplyKind::Delta => &self.shared.deltas_applied,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.shared
            .last_apply_micros
            .store(micros, Ordering::Relaxed);
    }

    pub(crate) fn record_rejected(&self) {
        self.shared.rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// Marks the data plane as shutting down: not ready from now on.
    pub(crate) fn set_draining(&self) {
        self.shared.draining.store(true, Ordering::Release);
    }
}

impl std::fmt::Debug for RuntimeConfigHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeConfigHandle")
            .field("applied_revision", &self.applied_revision())
            .field("ready", &self.is_ready())
            .finish()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Instant;

    use fulcrum_proto::model::key_id;

    use super::*;

    pub(crate) fn provider(name: &str) -> pb::Provider {
        pb::Provider {
            name: name.into(),
            r#type: pb::ProviderType::Openai as i32,
            base_url: "https://api.openai.com/v1".into(),
            priority: 0,
            weight: 1,
            ..Default::default()
        }
    }

    pub(crate) fn key(provider: &str, secret: &str) -> pb::ProviderKey {
        pb::ProviderKey {
            id: key_id(provider, secret),
            provider: provider.into(),
            secret: secret.into(),
            state: pb::KeyState::Active as i32,
            ..Default::default()
        }
    }

    pub(crate) fn route(pattern: &str, provider: &str) -> pb::Route {
        pb::Route {
            model_pattern: pattern.into(),
            targets: vec![pb::RouteTarget {
                provider: provider.into(),
                model: String::new(),
                priority: 0,
                weight: 1,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn token(name: &str, hash_byte: char) -> pb::ClientToken {
        pb::ClientToken {
            name: name.into(),
            token_hash: hash_byte.to_string().repeat(64),
            ..Default::default()
        }
    }

    fn setting(name: &str, value: &str) -> pb::Setting {
        pb::Setting {
            name: name.into(),
            value: value.into(),
        }
    }

    pub(crate) fn reference(kind: ResourceKind, name: &str) -> pb::ResourceRef {
        pb::ResourceRef {
            kind: kind as i32,
            name: name.into(),
        }
    }

    pub(crate) fn base_resources() -> pb::Resources {
        pb::Resources {
            providers: vec![provider("openai"), provider("backup")],
            keys: vec![
                key("openai", "sk-aaaaaaaaaaaa"),
                key("openai", "sk-bbbbbbbbbbbb"),
                key("backup", "sk-cccccccccccc"),
            ],
            routes: vec![route("gpt-*", "openai")],
            client_tokens: vec![token("alice", 'a')],
            settings: vec![setting("max_retries", "5")],
        }
    }

    fn snapshot(revision: u64, resources: pb::Resources) -> RuntimeConfig {
        let snapshot = pb::Snapshot {
            resources: Some(resources),
        };
        RuntimeConfig::from_snapshot(revision, "store-1", snapshot).unwrap()
    }

    fn delta(base: u64, upserted: pb::Resources, removed: Vec<pb::ResourceRef>) -> pb::Delta {
        pb::Delta {
            base_revision: base,
            upserted: Some(upserted),
            removed,
        }
    }

    fn ids(config: &RuntimeConfig, provider: &str) -> Vec<String> {
        config
            .keys
            .of_provider(provider)
            .iter()
            .map(|k| k.id.clone())
            .collect()
    }

    #[test]
    fn snapshot_builds_every_index() {
        let config = snapshot(7, base_resources());
        assert_eq!(config.revision, 7);
        assert_eq!(config.store_id, "store-1");
        assert_eq!(config.providers.len(), 2);
        assert_eq!(config.keys.len(), 3);
        let openai = ids(&config, "openai");
        assert_eq!(openai.len(), 2);
        assert!(openai.is_sorted());
        assert_eq!(ids(&config, "backup").len(), 1);
        assert!(config.routes.contains_key("gpt-*"));
        assert_eq!(
            config.client_tokens.get(&"a".repeat(64)).map(AsRef::as_ref),
            Some("alice")
        );
        assert_eq!(config.settings.max_retries, 5);
        assert_eq!(
            config.settings.max_failures,
            Settings::default().max_failures
        );
    }

    #[test]
    fn empty_snapshot_is_valid() {
        let config = RuntimeConfig::from_snapshot(0, "s", pb::Snapshot::default()).unwrap();
        assert!(config.keys.is_empty());
        assert_eq!(config.settings, Settings::default());
    }

    #[test]
    fn snapshot_with_dangling_references_is_rejected_with_all_culprits() {
        let mut resources = base_resources();
        resources.keys.push(key("ghost", "sk-dddddddddddd"));
        resources.routes.push(route("claude-*", "ghost"));
        resources.settings.push(setting("nonsense", "1"));
        let err = RuntimeConfig::from_snapshot(
            1,
            "s",
            pb::Snapshot {
                resources: Some(resources),
            },
        )
        .unwrap_err();
        let Rejection::Invalid { reason, rejected } = &err else {
            panic!("expected invalid, got {err:?}");
        };
        assert_eq!(
            rejected,
            &vec![
                reference(ResourceKind::Key, &key_id("ghost", "sk-dddddddddddd")),
                reference(ResourceKind::Route, "claude-*"),
                reference(ResourceKind::Setting, "nonsense"),
            ]
        );
        assert!(reason.contains("unknown provider \"ghost\""), "{reason}");
        assert!(!err.needs_resync());
    }

    #[test]
    fn rejection_never_shows_a_secret() {
        let mut resources = base_resources();
        resources.keys.push(pb::ProviderKey {
            secret: "sk has spaces in it".into(),
            ..key("openai", "sk-eeeeeeeeeeee")
        });
        let err = RuntimeConfig::from_snapshot(
            1,
            "s",
            pb::Snapshot {
                resources: Some(resources),
            },
        )
        .unwrap_err();
        assert!(!err.to_string().contains("spaces in it"), "{err}");
    }

    #[test]
    fn delta_upserts_and_removes() {
        let base = snapshot(1, base_resources());
        let removed_key = key_id("openai", "sk-aaaaaaaaaaaa");
        let changed_key = pb::ProviderKey {
            state: pb::KeyState::Disabled as i32,
            ..key("openai", "sk-bbbbbbbbbbbb")
        };
        let upserted = pb::Resources {
            providers: vec![provider("third")],
            keys: vec![changed_key.clone(), key("third", "sk-ffffffffffff")],
            routes: vec![route("claude-*", "third")],
            client_tokens: vec![token("bob", 'b')],
            settings: vec![setting("max_failures", "9")],
        };
        let removed = vec![
            reference(ResourceKind::Key, &removed_key),
            reference(ResourceKind::Route, "gpt-*"),
            reference(ResourceKind::ClientToken, "alice"),
            reference(ResourceKind::Setting, "max_retries"),
        ];
        let next = base
            .apply_delta(2, "store-1", delta(1, upserted, removed))
            .unwrap();

        assert_eq!(next.revision, 2);
        assert_eq!(next.providers.len(), 3);
        assert!(!next.keys.contains_key(&removed_key));
        assert_eq!(ids(&next, "openai"), vec![changed_key.id.clone()]);
        assert_eq!(
            next.keys.get(&changed_key.id).unwrap().state,
            fulcrum_proto::model::KeyState::Disabled
        );
        assert_eq!(ids(&next, "third").len(), 1);
        // Untouched keys are shared, not rebuilt, so per-key runtime state can follow them.
        let backup = &base.keys.of_provider("backup")[0];
        assert!(Arc::ptr_eq(backup, &next.keys.of_provider("backup")[0]));
        assert_eq!(next.routes.keys().collect::<Vec<_>>(), vec!["claude-*"]);
        assert_eq!(next.client_tokens.len(), 1);
        assert_eq!(&*next.client_tokens[&"b".repeat(64)], "bob");
        assert_eq!(next.settings.max_failures, 9);
        assert_eq!(next.settings.max_retries, Settings::default().max_retries);
        // The base is untouched.
        assert_eq!(base.keys.len(), 3);
        assert_eq!(base.settings.max_retries, 5);
    }

    #[test]
    fn key_listed_twice_or_moved_keeps_lists_consistent() {
        let base = snapshot(1, base_resources());
        let id = key_id("openai", "sk-aaaaaaaaaaaa");
        let disabled = pb::ProviderKey {
            state: pb::KeyState::Disabled as i32,
            ..key("openai", "sk-aaaaaaaaaaaa")
        };
        // Listed twice: the last one wins, and the list holds it once.
        let upserted = pb::Resources {
            keys: vec![disabled.clone(), key("openai", "sk-aaaaaaaaaaaa")],
            ..Default::default()
        };
        let next = base
            .apply_delta(2, "store-1", delta(1, upserted, vec![]))
            .unwrap();
        assert_eq!(ids(&next, "openai").len(), 2);
        assert_eq!(
            next.keys.get(&id).unwrap().state,
            fulcrum_proto::model::KeyState::Active
        );
        assert!(Arc::ptr_eq(
            next.keys.get(&id).unwrap(),
            next.keys
                .of_provider("openai")
                .iter()
                .find(|k| k.id == id)
                .unwrap()
        ));

        // Removed and upserted again in one delta: present, as the upsert.
        let upserted = pb::Resources {
            keys: vec![disabled.clone()],
            ..Default::default()
        };
        let removed = vec![reference(ResourceKind::Key, &id)];
        let next = base
            .apply_delta(2, "store-1", delta(1, upserted, removed))
            .unwrap();
        assert_eq!(ids(&next, "openai").len(), 2);
        assert!(Arc::ptr_eq(
            next.keys.get(&id).unwrap(),
            next.keys
                .of_provider("openai")
                .iter()
                .find(|k| k.id == id)
                .unwrap()
        ));

        // The same id under another provider leaves the first provider's list.
        let moved = pb::ProviderKey {
            provider: "backup".into(),
            ..disabled
        };
        let upserted = pb::Resources {
            keys: vec![moved],
            ..Default::default()
        };
        let next = base
            .apply_delta(2, "store-1", delta(1, upserted, vec![]))
            .unwrap();
        assert_eq!(
            ids(&next, "openai"),
            vec![key_id("openai", "sk-bbbbbbbbbbbb")]
        );
        assert_eq!(ids(&next, "backup").len(), 2);
        assert!(ids(&next, "backup").is_sorted());
    }

    #[test]
    fn removing_all_keys_of_a_provider_drops_its_list() {
        let base = snapshot(1, base_resources());
        let removed = vec![reference(
            ResourceKind::Key,
            &key_id("backup", "sk-cccccccccccc"),
        )];
        let next = base
            .apply_delta(2, "store-1", delta(1, pb::Resources::default(), removed))
            .unwrap();
        assert!(next.keys.of_provider("backup").is_empty());
        assert!(next.keys.by_provider().all(|(name, _)| name != "backup"));
        // With its keys gone the provider itself may go.
        let removed = vec![reference(ResourceKind::Provider, "backup")];
        let last = next
            .apply_delta(3, "store-1", delta(2, pb::Resources::default(), removed))
            .unwrap();
        assert!(!last.providers.contains_key("backup"));
    }

    #[test]
    fn empty_delta_moves_the_revision_only() {
        let base = snapshot(4, base_resources());
        let next = base
            .apply_delta(
                4,
                "store-1",
                pb::Delta {
                    base_revision: 4,
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(next.revision, 4);
        assert_eq!(next.keys.len(), base.keys.len());
    }

    #[test]
    fn delta_on_another_base_or_store_asks_for_resync() {
        let base = snapshot(3, base_resources());
        let err = base
            .apply_delta(5, "store-1", delta(2, pb::Resources::default(), vec![]))
            .unwrap_err();
        assert_eq!(
            err,
            Rejection::BaseMismatch {
                base: 2,
                applied: 3
            }
        );
        assert!(err.to_nack().resync);
        let err = base
            .apply_delta(5, "store-2", delta(3, pb::Resources::default(), vec![]))
            .unwrap_err();
        assert!(matches!(err, Rejection::StoreMismatch { .. }));
        assert!(err.needs_resync());
        let response = pb::StreamConfigResponse {
            revision: 1,
            body: Some(Body::Delta(delta(0, pb::Resources::default(), vec![]))),
            ..Default::default()
        };
        assert_eq!(
            RuntimeConfig::apply(None, response).unwrap_err(),
            Rejection::NoBase
        );
    }

    #[test]
    fn delta_with_dangling_key_provider_is_rejected() {
        let base = snapshot(1, base_resources());
        let orphan = key("ghost", "sk-gggggggggggg");
        let upserted = pb::Resources {
            keys: vec![key("openai", "sk-hhhhhhhhhhhh"), orphan.clone()],
            ..Default::default()
        };
        let err = base
            .apply_delta(2, "store-1", delta(1, upserted, vec![]))
            .unwrap_err();
        let nack = err.to_nack();
        assert!(!nack.resync);
        assert_eq!(
            nack.rejected,
            vec![reference(ResourceKind::Key, &orphan.id)]
        );
        assert_eq!(
            nack.reason,
            format!("key {} belongs to unknown provider \"ghost\"", orphan.id)
        );
    }

    #[test]
    fn provider_still_in_use_cannot_be_removed() {
        let base = snapshot(1, base_resources());
        let removed = vec![reference(ResourceKind::Provider, "openai")];
        let err = base
            .apply_delta(2, "store-1", delta(1, pb::Resources::default(), removed))
            .unwrap_err();
        let Rejection::Invalid { reason, rejected } = err else {
            panic!("expected invalid");
        };
        assert!(
            reason.contains("targets unknown provider \"openai\""),
            "{reason}"
        );
        assert!(reason.contains("still has 2 keys"), "{reason}");
        assert_eq!(rejected.len(), 2);
    }

    #[test]
    fn token_hash_cannot_belong_to_two_names() {
        let base = snapshot(1, base_resources());
        let upserted = pb::Resources {
            client_tokens: vec![token("mallory", 'a')],
            ..Default::default()
        };
        let err = base
            .apply_delta(2, "store-1", delta(1, upserted, vec![]))
            .unwrap_err();
        assert!(err.to_string().contains("same hash"), "{err}");
        // Re-hashing an existing name replaces its old hash.
        let upserted = pb::Resources {
            client_tokens: vec![token("alice", 'c')],
            ..Default::default()
        };
        let next = base
            .apply_delta(2, "store-1", delta(1, upserted, vec![]))
            .unwrap();
        assert_eq!(next.client_tokens.len(), 1);
        assert_eq!(&*next.client_tokens[&"c".repeat(64)], "alice");
    }

    #[test]
    fn unknown_removal_kind_is_rejected() {
        let base = snapshot(1, base_resources());
        let removed = vec![pb::ResourceRef {
            kind: 42,
            name: "x".into(),
        }];
        let err = base
            .apply_delta(2, "store-1", delta(1, pb::Resources::default(), removed))
            .unwrap_err();
        assert!(matches!(err, Rejection::Invalid { .. }));
    }

    #[test]
    fn rejection_is_capped() {
        let mut resources = base_resources();
        resources.keys = (0..500)
            .map(|i| key("ghost", &format!("sk-ghost-{i:08}")))
            .collect();
        let err = RuntimeConfig::from_snapshot(
            1,
            "s",
            pb::Snapshot {
                resources: Some(resources),
            },
        )
        .unwrap_err();
        let nack = err.to_nack();
        assert_eq!(nack.rejected.len(), MAX_REJECTED_REFS);
        assert!(nack.reason.ends_with("(and 495 more)"), "{}", nack.reason);
    }

    /// 100,000 new keys on top of 100,000 existing ones. The target is well under 100 ms in
    /// release builds on an idle machine; the limit here is looser so that a loaded CI
    /// machine does not fail it, while quadratic work still would. Debug builds only check
    /// the result.
    #[test]
    fn large_delta_is_fast() {
        let mut resources = base_resources();
        resources
            .keys
            .extend((0..100_000).map(|i| key("backup", &format!("sk-old-{i:010}"))));
        let base = snapshot(1, resources);
        let upserted = pb::Resources {
            keys: (0..100_000)
                .map(|i| key("openai", &format!("sk-new-{i:010}")))
                .collect(),
            ..Default::default()
        };
        let delta = delta(1, upserted, vec![]);

        let started = Instant::now();
        let next = base.apply_delta(2, "store-1", delta).unwrap();
        let elapsed = started.elapsed();

        assert_eq!(next.keys.len(), 200_003);
        assert_eq!(next.keys.of_provider("openai").len(), 100_002);
        assert!(
            next.keys
                .of_provider("openai")
                .is_sorted_by(|a, b| a.id <= b.id)
        );
        assert!(Arc::ptr_eq(
            &base.keys.of_provider("backup")[0],
            &next.keys.of_provider("backup")[0]
        ));
        if !cfg!(debug_assertions) {
            assert!(elapsed.as_millis() < 250, "applying took {elapsed:?}");
        }
    }

    #[tokio::test]
    async fn handle_publishes_and_waits() {
        let handle = RuntimeConfigHandle::new();
        assert!(handle.load().is_none());
        assert!(!handle.is_ready());
        assert_eq!(handle.applied_revision(), 0);

        let waiter = {
            let handle = handle.clone();
            tokio::spawn(async move { handle.wait_for_revision(3).await.revision })
        };
        let config = Arc::new(snapshot(3, base_resources()));
        let elapsed = std::time::Duration::from_millis(7);
        assert!(handle.store(config, ApplyKind::Snapshot, elapsed).is_none());
        assert_eq!(waiter.await.unwrap(), 3);
        assert_eq!(
            handle.stats(),
            ApplyStats {
                snapshots_applied: 1,
                deltas_applied: 0,
                rejected: 0,
                last_apply: elapsed,
            }
        );
        assert!(handle.is_ready());
        assert_eq!(handle.applied_revision(), 3);

        handle.set_draining();
        assert!(!handle.is_ready());
        assert!(handle.load().is_some());
    }
}
