//! The control plane's durable state in sled.
//!
//! Trees: `meta` (revision, store id), `changelog` (revision -> what it touched),
//! `providers`, `keys`, `routes`, `client_tokens`, `settings`, and two that never reach
//! the config stream: `key_history` and `key_schedule` (see `crate::transitions`). Values are the `fulcrum.v1`
//! protobuf messages (settings: the raw value string). The request and error logs live in
//! trees of the same database that `crate::logs` owns and writes on its own.
//!
//! Every write goes through [`Store::commit`]: one sled transaction over all trees that
//! applies the change, bumps the revision by one and appends one change-log entry naming
//! what changed, or does nothing at all. Writes are also serialised by a mutex, so a write
//! may read committed state (for example to find a provider's keys) and rely on it for the
//! length of the write.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use fulcrum_proto::model::KeyState;
use fulcrum_proto::pb;
use prost::Message;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use tokio::sync::watch;

use crate::error::Error;

pub mod secrets;

/// Result inside a store transaction: `Abort(Error)` rolls it back with that error.
pub type TxResult<T> = Result<T, ConflictableTransactionError<Error>>;

/// Rolls the current transaction back with `error`.
pub fn abort<T>(error: Error) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(error))
}

/// The sled trees, in the order of [`Store::trees`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TreeId {
    Meta = 0,
    Changelog = 1,
    Providers = 2,
    Keys = 3,
    Routes = 4,
    ClientTokens = 5,
    Settings = 6,
    /// Each key's last state transitions (`pb::KeyHistory`); not on the config stream.
    KeyHistory = 7,
    /// The validation scheduler's record of each key (`pb::KeySchedule`); not on the
    /// config stream.
    KeySchedule = 8,
}

impl TreeId {
    const ALL: [TreeId; 9] = [
        TreeId::Meta,
        TreeId::Changelog,
        TreeId::Providers,
        TreeId::Keys,
        TreeId::Routes,
        TreeId::ClientTokens,
        TreeId::Settings,
        TreeId::KeyHistory,
        TreeId::KeySchedule,
    ];

    fn name(self) -> &'static str {
        match self {
            TreeId::Meta => "meta",
            TreeId::Changelog => "changelog",
            TreeId::Providers => "providers",
            TreeId::Keys => "keys",
            TreeId::Routes => "routes",
            TreeId::ClientTokens => "client_tokens",
            TreeId::Settings => "settings",
            TreeId::KeyHistory => "key_history",
            TreeId::KeySchedule => "key_schedule",
        }
    }

    /// The resource kind stored in this tree, for change-log entries.
    fn kind(self) -> pb::ResourceKind {
        match self {
            TreeId::Providers => pb::ResourceKind::Provider,
            TreeId::Keys => pb::ResourceKind::Key,
            TreeId::Routes => pb::ResourceKind::Route,
            TreeId::ClientTokens => pb::ResourceKind::ClientToken,
            TreeId::Settings => pb::ResourceKind::Setting,
            TreeId::Meta | TreeId::Changelog | TreeId::KeyHistory | TreeId::KeySchedule => {
                pb::ResourceKind::Unspecified
            }
        }
    }
}

const REVISION_KEY: &[u8] = b"revision";
const STORE_ID_KEY: &[u8] = b"store_id";

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    trees: Vec<sled::Tree>,
    store_id: String,
    changelog_capacity: u64,
    /// Serialises writers; see the module comment.
    write_lock: Mutex<()>,
    /// Latest committed revision, for the discovery streams.
    revision_tx: watch::Sender<u64>,
    /// Seals key records on write; installed once by [`Store::unlock`].
    keyring: std::sync::OnceLock<secrets::Keyring>,
}

/// The state a transaction sees and changes.
pub struct Tx<'a> {
    views: &'a [TransactionalTree],
    changed: RefCell<Vec<pb::ResourceRef>>,
    now_unix_ms: i64,
    keyring: Option<&'a secrets::Keyring>,
}

// === impl Store ===

impl Store {
    /// Opens or creates the store in `dir`.
    pub fn open(dir: &Path, changelog_capacity: u64) -> Result<Self, Error> {
        let db = sled::Config::new()
            .path(dir)
            // sled's default 1 GiB page cache is far more than config needs.
            .cache_capacity(128 * 1024 * 1024)
            .open()?;
        let trees = TreeId::ALL
            .iter()
            .map(|t| db.open_tree(t.name()))
            .collect::<Result<Vec<_>, _>>()?;
        let meta = &trees[TreeId::Meta as usize];
        let store_id = match meta.get(STORE_ID_KEY)? {
            Some(v) => String::from_utf8(v.to_vec()).map_err(|_| Error::Corrupt {
                tree: "meta",
                detail: "store id is not UTF-8".into(),
            })?,
            None => {
                let id = random_hex(8).map_err(Error::Internal)?;
                // compare_and_swap so that two opens racing on a fresh store agree.
                match meta.compare_and_swap(STORE_ID_KEY, None::<&[u8]>, Some(id.as_bytes()))? {
                    Ok(()) => id,
                    Err(e) => String::from_utf8_lossy(&e.current.unwrap_or_default()).into_owned(),
                }
            }
        };
        let revision = decode_revision(meta.get(REVISION_KEY)?.as_deref())?;
        let (revision_tx, _) = watch::channel(revision);
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                trees,
                store_id,
                changelog_capacity: changelog_capacity.max(1),
                write_lock: Mutex::new(()),
                revision_tx,
                keyring: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Identifies this store; changes only if the data directory is recreated.
    pub fn store_id(&self) -> &str {
        &self.inner.store_id
    }

    /// The latest committed revision.
    pub fn revision(&self) -> u64 {
        *self.inner.revision_tx.borrow()
    }

    /// Wakes on every committed revision.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.revision_tx.subscribe()
    }

    pub(crate) fn tree(&self, id: TreeId) -> &sled::Tree {
        &self.inner.trees[id as usize]
    }

    /// Opens (or creates) a tree that another module owns in this database (the log
    /// trees, see `crate::logs`), so that [`Store::flush`] covers it too. Its writes never
    /// go through [`Store::commit`] and never bump the revision.
    pub(crate) fn open_tree(&self, name: &str) -> Result<sled::Tree, Error> {
        Ok(self.inner.db.open_tree(name)?)
    }

    /// Makes everything committed so far durable on disk.
    pub async fn flush(&self) -> Result<(), Error> {
        self.inner.db.flush_async().await?;
        Ok(())
    }

    /// Runs `write` as one transaction (see the module comment), off the async runtime,
    /// and returns once it is durable. The revision is `None` when nothing changed.
    pub async fn commit<R, F>(&self, write: F) -> Result<(R, Option<u64>), Error>
    where
        R: Send + 'static,
        F: Fn(&Tx<'_>) -> TxResult<R> + Send + 'static,
    {
        self.commit_prepared(|_| Ok(()), move |tx, ()| write(tx))
            .await
    }

    /// Like [`Store::commit`], but first runs `prepare` on the committed state, outside the
    /// transaction and under the writer lock, and hands its result to `write`. For writes
    /// that need a scan: sled transactions cannot iterate, and reading a tree from inside a
    /// transaction deadlocks against the transaction's own lock.
    pub async fn commit_prepared<P, R, Pre, F>(
        &self,
        prepare: Pre,
        write: F,
    ) -> Result<(R, Option<u64>), Error>
    where
        R: Send + 'static,
        Pre: FnOnce(&Store) -> Result<P, Error> + Send + 'static,
        F: Fn(&Tx<'_>, &P) -> TxResult<R> + Send + 'static,
    {
        let store = self.clone();
        let outcome = tokio::task::spawn_blocking(move || store.commit_blocking(prepare, write))
            .await
            .map_err(|e| Error::Internal(format!("store write task failed: {e}")))??;
        if outcome.1.is_some() {
            self.flush().await?;
        }
        Ok(outcome)
    }

    /// [`Store::commit_prepared`] without the flush, on the calling thread.
    pub fn commit_blocking<P, R>(
        &self,
        prepare: impl FnOnce(&Store) -> Result<P, Error>,
        write: impl Fn(&Tx<'_>, &P) -> TxResult<R>,
    ) -> Result<(R, Option<u64>), Error> {
        // A panic in another writer cannot leave sled half-written (the transaction is
        // atomic), so a poisoned lock is safe to take over.
        let _guard = self
            .inner
            .write_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let prepared = prepare(self)?;
        let capacity = self.inner.changelog_capacity;
        let result = self.inner.trees.as_slice().transaction(|views| {
            let tx = Tx {
                views,
                changed: RefCell::new(Vec::new()),
                now_unix_ms: now_unix_ms(),
                keyring: self.inner.keyring.get(),
            };
            let value = write(&tx, &prepared)?;
            let changed = dedup_refs(tx.changed.take());
            if changed.is_empty() {
                return Ok((value, None));
            }
            let meta = &views[TreeId::Meta as usize];
            let revision = decode_revision(meta.get(REVISION_KEY)?.as_deref()).or_else(abort)? + 1;
            meta.insert(REVISION_KEY, &revision.to_be_bytes())?;
            let entry = pb::ChangeLogEntry {
                revision,
                committed_unix_ms: tx.now_unix_ms,
                changed,
            };
            let changelog = &views[TreeId::Changelog as usize];
            changelog.insert(&revision.to_be_bytes(), entry.encode_to_vec())?;
            if revision > capacity {
                changelog.remove(&(revision - capacity).to_be_bytes())?;
            }
            Ok((value, Some(revision)))
        });
        let (value, revision) = result.map_err(|e| match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => Error::Store(e),
        })?;
        if let Some(revision) = revision {
            self.inner.revision_tx.send_replace(revision);
        }
        Ok((value, revision))
    }

    /// Decodes one record.
    pub fn get<M: Message + Default>(&self, tree: TreeId, key: &str) -> Result<Option<M>, Error> {
        self.tree(tree)
            .get(key.as_bytes())?
            .map(|v| decode(tree, &v))
            .transpose()
    }

    /// Decodes every record of a tree, in key order.
    pub fn list<M: Message + Default>(&self, tree: TreeId) -> Result<Vec<M>, Error> {
        self.tree(tree)
            .iter()
            .values()
            .map(|v| decode(tree, &v?))
            .collect()
    }

    /// Every stored setting value, by name (settings never set are absent).
    pub fn settings(&self) -> Result<BTreeMap<String, String>, Error> {
        self.tree(TreeId::Settings)
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                Ok((utf8(TreeId::Settings, &k)?, utf8(TreeId::Settings, &v)?))
            })
            .collect()
    }

    /// One page of keys in id order, after `after` (exclusive), filtered by provider and state.
    /// Returns the page and whether more keys follow.
    pub fn keys_page(
        &self,
        provider: Option<&str>,
        state: Option<KeyState>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<pb::ProviderKey>, bool), Error> {
        let tree = self.tree(TreeId::Keys);
        let iter = match after {
            Some(after) => tree.range::<&[u8], _>((
                std::ops::Bound::Excluded(after.as_bytes()),
                std::ops::Bound::Unbounded,
            )),
            None => tree.iter(),
        };
        let mut page = Vec::with_capacity(limit.min(1024));
        for value in iter.values() {
            let key: pb::ProviderKey = decode(TreeId::Keys, &value?)?;
            if provider.is_some_and(|p| p != key.provider) {
                continue;
            }
            if state.is_some_and(|s| s.to_pb() as i32 != key.state) {
                continue;
            }
            if page.len() == limit {
                return Ok((page, true));
            }
            page.push(key);
        }
        Ok((page, false))
    }

    /// Keys per state, for one provider or all.
    pub fn key_counts(&self, provider: Option<&str>) -> Result<BTreeMap<KeyState, u64>, Error> {
        let mut counts = BTreeMap::new();
        for value in self.tree(TreeId::Keys).iter().values() {
            let key: pb::ProviderKey = decode(TreeId::Keys, &value?)?;
            if provider.is_some_and(|p| p != key.provider) {
                continue;
            }
            if let Some(state) = KeyState::from_pb(key.state) {
                *counts.entry(state).or_default() += 1;
            }
        }
        Ok(counts)
    }

    /// Calls `visit` with every key, in id order, without holding them all in memory.
    pub fn visit_keys(&self, mut visit: impl FnMut(&pb::ProviderKey)) -> Result<(), Error> {
        for value in self.tree(TreeId::Keys).iter().values() {
            let key: pb::ProviderKey = decode(TreeId::Keys, &value?)?;
            visit(&key);
        }
        Ok(())
    }

    /// Number of records in a tree.
    pub fn count(&self, tree: TreeId) -> u64 {
        self.tree(tree).len() as u64
    }

    /// Change-log entries after `since` up to and including `until`, or `None` when the log
    /// no longer reaches back to `since + 1`.
    pub fn changes_since(
        &self,
        since: u64,
        until: u64,
    ) -> Result<Option<Vec<pb::ChangeLogEntry>>, Error> {
        if since >= until {
            return Ok(Some(Vec::new()));
        }
        let tree = self.tree(TreeId::Changelog);
        let from = (since + 1).to_be_bytes();
        let to = until.to_be_bytes();
        let mut entries = Vec::new();
        for value in tree.range(from..=to).values() {
            entries.push(decode::<pb::ChangeLogEntry>(TreeId::Changelog, &value?)?);
        }
        let complete = entries.first().is_some_and(|e| e.revision == since + 1)
            && entries.last().is_some_and(|e| e.revision == until)
            && entries.len() as u64 == until - since;
        Ok(complete.then_some(entries))
    }
}

// === impl Tx ===

impl Tx<'_> {
    /// Time of this transaction, for timestamps.
    pub fn now_unix_ms(&self) -> i64 {
        self.now_unix_ms
    }

    /// Decodes one record as this transaction sees it.
    pub fn get<M: Message + Default>(&self, tree: TreeId, key: &str) -> TxResult<Option<M>> {
        match self.views[tree as usize].get(key.as_bytes())? {
            Some(v) => decode(tree, &v).map(Some).or_else(abort),
            None => Ok(None),
        }
    }

    /// A raw value (settings) as this transaction sees it.
    pub fn get_raw(&self, tree: TreeId, key: &str) -> TxResult<Option<String>> {
        match self.views[tree as usize].get(key.as_bytes())? {
            Some(v) => utf8(tree, &v).map(Some).or_else(abort),
            None => Ok(None),
        }
    }

    /// Whether a record exists, as this transaction sees it.
    pub fn contains(&self, tree: TreeId, key: &str) -> TxResult<bool> {
        Ok(self.views[tree as usize].get(key.as_bytes())?.is_some())
    }

    /// Stores a record and notes the change for the change log.
    /// Key records are stored with their secret sealed (see [`secrets`]).
    pub fn put<M: Message>(&self, tree: TreeId, key: &str, value: &M) -> TxResult<()> {
        let mut bytes = value.encode_to_vec();
        if tree == TreeId::Keys {
            bytes = secrets::seal_record(self.keyring, bytes).or_else(abort)?;
        }
        self.views[tree as usize].insert(key.as_bytes(), bytes)?;
        self.note(tree, key);
        Ok(())
    }

    /// Stores raw bytes without noting a change: for state that is not config (the
    /// master-key check, token hashes) and for re-sealing records whose content stays
    /// the same. A transaction of only such writes does not bump the revision.
    pub(crate) fn put_unlogged(&self, tree: TreeId, key: &str, bytes: Vec<u8>) -> TxResult<()> {
        self.views[tree as usize].insert(key.as_bytes(), bytes)?;
        Ok(())
    }

    /// Stores a raw value (settings) and notes the change.
    pub fn put_raw(&self, tree: TreeId, key: &str, value: &str) -> TxResult<()> {
        self.views[tree as usize].insert(key.as_bytes(), value.as_bytes())?;
        self.note(tree, key);
        Ok(())
    }

    /// Removes a record if present and notes the change; returns whether it existed.
    pub fn remove(&self, tree: TreeId, key: &str) -> TxResult<bool> {
        let existed = self.views[tree as usize].remove(key.as_bytes())?.is_some();
        if existed {
            self.note(tree, key);
        }
        Ok(existed)
    }

    /// Notes a change of a resource for the change log; trees that hold no resource of the
    /// config stream (history, schedule) are written without bumping the revision.
    fn note(&self, tree: TreeId, name: &str) {
        if tree.kind() == pb::ResourceKind::Unspecified {
            return;
        }
        self.changed.borrow_mut().push(pb::ResourceRef {
            kind: tree.kind() as i32,
            name: name.to_string(),
        });
    }
}

fn dedup_refs(refs: Vec<pb::ResourceRef>) -> Vec<pb::ResourceRef> {
    let mut seen = HashSet::with_capacity(refs.len());
    refs.into_iter()
        .filter(|r| seen.insert((r.kind, r.name.clone())))
        .collect()
}

fn decode<M: Message + Default>(tree: TreeId, bytes: &[u8]) -> Result<M, Error> {
    M::decode(bytes).map_err(|e| Error::Corrupt {
        tree: tree.name(),
        detail: e.to_string(),
    })
}

fn utf8(tree: TreeId, bytes: &[u8]) -> Result<String, Error> {
    String::from_utf8(bytes.to_vec()).map_err(|_| Error::Corrupt {
        tree: tree.name(),
        detail: "not UTF-8".into(),
    })
}

fn decode_revision(bytes: Option<&[u8]>) -> Result<u64, Error> {
    match bytes {
        None => Ok(0),
        Some(b) => <[u8; 8]>::try_from(b)
            .map(u64::from_be_bytes)
            .map_err(|_| Error::Corrupt {
                tree: "meta",
                detail: "revision is not 8 bytes".into(),
            }),
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `bytes` random bytes from the OS, as lowercase hex.
pub fn random_hex(bytes: usize) -> Result<String, String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| format!("no randomness from the OS: {e}"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Opens the store in `dir` for a test. A store dropped a moment ago may still be locked:
/// sled's flusher thread lets go of the file lock shortly after the last handle, so a
/// reopen in the same process waits for it (at most 5 s).
#[cfg(test)]
pub(crate) fn open_waiting(dir: &Path) -> Store {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match Store::open(dir, 100) {
            Ok(store) => return store,
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("store does not open: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(name: &str) -> pb::Provider {
        pb::Provider {
            name: name.into(),
            r#type: pb::ProviderType::Mock as i32,
            weight: 1,
            ..Default::default()
        }
    }

    #[test]
    fn commit_bumps_revision_and_logs_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 100).unwrap();
        assert_eq!(store.revision(), 0);
        let (_, rev) = store
            .commit_blocking(
                |_| Ok(()),
                |tx, ()| tx.put(TreeId::Providers, "a", &provider("a")),
            )
            .unwrap();
        assert_eq!(rev, Some(1));
        let (_, rev) = store
            .commit_blocking(
                |_| Ok(()),
                |tx, ()| {
                    tx.put(TreeId::Providers, "b", &provider("b"))?;
                    tx.put(TreeId::Providers, "b", &provider("b"))
                },
            )
            .unwrap();
        assert_eq!(rev, Some(2));
        let changes = store.changes_since(0, 2).unwrap().unwrap();
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[1].changed.len(), 1, "one entry per resource");
        assert_eq!(changes[1].changed[0].name, "b");
    }

    #[test]
    fn aborted_write_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 100).unwrap();
        let err = store
            .commit_blocking(
                |_| Ok(()),
                |tx, ()| -> TxResult<()> {
                    tx.put(TreeId::Providers, "a", &provider("a"))?;
                    abort(Error::Invalid("no".into()))
                },
            )
            .unwrap_err();
        assert!(matches!(err, Error::Invalid(_)));
        assert_eq!(store.revision(), 0);
        assert!(
            store
                .get::<pb::Provider>(TreeId::Providers, "a")
                .unwrap()
                .is_none()
        );
        assert_eq!(store.count(TreeId::Changelog), 0);
    }

    #[test]
    fn write_without_change_keeps_revision() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 100).unwrap();
        let (_, rev) = store
            .commit_blocking(|_| Ok(()), |tx, ()| tx.remove(TreeId::Providers, "x"))
            .unwrap();
        assert_eq!(rev, None);
        assert_eq!(store.revision(), 0);
    }

    #[test]
    fn changelog_is_bounded_and_gaps_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 3).unwrap();
        for i in 0..5 {
            store
                .commit_blocking(
                    |_| Ok(()),
                    |tx, ()| tx.put(TreeId::Providers, &format!("p{i}"), &provider("p")),
                )
                .unwrap();
        }
        assert_eq!(store.count(TreeId::Changelog), 3);
        assert!(
            store.changes_since(1, 5).unwrap().is_none(),
            "revision 2 was trimmed"
        );
        assert_eq!(store.changes_since(2, 5).unwrap().unwrap().len(), 3);
        assert_eq!(store.changes_since(5, 5).unwrap().unwrap().len(), 0);
    }

    #[test]
    fn revision_and_store_id_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let id = {
            let store = Store::open(dir.path(), 100).unwrap();
            store
                .commit_blocking(
                    |_| Ok(()),
                    |tx, ()| tx.put(TreeId::Providers, "a", &provider("a")),
                )
                .unwrap();
            store.inner.db.flush().unwrap();
            store.store_id().to_string()
        };
        let store = Store::open(dir.path(), 100).unwrap();
        assert_eq!(store.revision(), 1);
        assert_eq!(store.store_id(), id);
    }
}
