//! Request and error logs: the records data planes report, stored in sled, searched,
//! tailed and counted.
//!
//! Trees (layouts in [`keys`]):
//! - `log_requests`: records without an error class, by time.
//! - `log_errors`: records with an error class, by time. Each record is in exactly one of
//!   the two trees, so each kind has its own retention; a search over both merges them.
//! - `log_errors_by_key`: the error records of each key, newest first (the hot query of
//!   an operator chasing a bad key).
//! - `log_stats_minute`, `log_stats_hour`: [`stats::Counts`] per bucket, scope and group.
//! - `log_stats_pending`: per stored batch, the counter updates it makes, not yet added to
//!   the bucket trees (key: `[instance hash u64 BE][sequence u64 BE]`).
//! - `log_applied`: per data-plane instance, the highest batch sequence stored and when.
//!
//! A batch is stored in one transaction: its records, their index entries, its counter
//! updates (one value in `log_stats_pending`) and the instance's applied sequence. A batch
//! sent again (after a reconnect or a control-plane restart) finds its sequence applied
//! and changes nothing, so no record is ever stored twice. The caller acknowledges the
//! batch only after [`LogStore::ingest`] returns, which is after the store is flushed.
//!
//! Why counters wait: a batch of 1,000 records over 1,000 keys touches about 2,500
//! counters (per key, model and provider, per minute and hour, for requests and attempts),
//! and writing them with every batch was two thirds of the writes and capped ingestion at
//! about 25,000 records/s. Compaction ([`LogStore::compact`]) adds the pending updates of
//! many batches to the bucket trees in one transaction that also deletes them, so each
//! counter is written once per compaction instead of once per batch, and a crash at any
//! point leaves every update counted exactly once (pending, or in a bucket). It runs after
//! a batch once enough are pending or enough time passed, and before every stats query,
//! so stats always include every stored record. The counters of the current minute and
//! hour are kept in memory by the compactor, so that most compactions read none from
//! sled. The only other writer of the bucket trees is the retention job, which deletes
//! buckets days older than those.

pub mod keys;
pub mod retention;
pub mod search;
pub mod service;
pub mod stats;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fulcrum_proto::pb;
use prost::Message;
use sled::Transactional;
use sled::transaction::{TransactionError, TransactionalTree};
use tokio::sync::broadcast;

use crate::error::Error;
use crate::store::{Store, TxResult, now_unix_ms};

use self::keys::{GroupKind, Scope};
use self::search::{Page, Query};
use self::stats::{BucketUpdates, Counts, WindowPlan};

/// The log trees, in the order of `Inner::trees`.
#[derive(Debug, Clone, Copy)]
enum LogTree {
    Requests = 0,
    Errors = 1,
    ErrorsByKey = 2,
    StatsMinute = 3,
    StatsHour = 4,
    Applied = 5,
    StatsPending = 6,
}

impl LogTree {
    const ALL: [LogTree; 7] = [
        LogTree::Requests,
        LogTree::Errors,
        LogTree::ErrorsByKey,
        LogTree::StatsMinute,
        LogTree::StatsHour,
        LogTree::Applied,
        LogTree::StatsPending,
    ];

    fn name(self) -> &'static str {
        match self {
            LogTree::Requests => "log_requests",
            LogTree::Errors => "log_errors",
            LogTree::ErrorsByKey => "log_errors_by_key",
            LogTree::StatsMinute => "log_stats_minute",
            LogTree::StatsHour => "log_stats_hour",
            LogTree::Applied => "log_applied",
            LogTree::StatsPending => "log_stats_pending",
        }
    }
}

/// Batches whose counter updates may wait before a compaction runs after a batch.
const COMPACT_AFTER_BATCHES: u64 = 64;
/// Longest the counter updates of a batch wait for a compaction run after a batch.
const COMPACT_AFTER: std::time::Duration = std::time::Duration::from_secs(1);
/// Pending values one compaction transaction takes at most (about 500,000 records).
const COMPACT_BATCHES_MAX: usize = 512;

/// Batches of stored records kept for tails that fall behind (at most about 64,000
/// records in memory); past it they miss records.
const TAIL_BACKLOG: usize = 64;

/// Newly stored records, for `TailLogs`.
#[derive(Debug)]
pub struct TailBatch {
    /// Position of the first record in the sequence of every record stored since start;
    /// a tail that sees a gap knows how many it missed.
    pub first: u64,
    pub records: Vec<pb::RequestRecord>,
}

/// One batch of records of a data-plane instance, as it arrived.
#[derive(Debug)]
pub struct Batch {
    pub instance_id: String,
    pub sequence: u64,
    pub records: Vec<pb::RequestRecord>,
}

/// What [`LogStore::ingest`] did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    Stored {
        requests: u64,
        errors: u64,
    },
    /// The instance's batch with this sequence (or a later one) was stored before.
    Repeat,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
struct LogMetrics {
    batches: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    /// The latest `dropped_records` of each instance.
    dropped: Mutex<HashMap<String, u64>>,
}

/// What `/metrics` shows about the logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogCounters {
    pub batches_stored: u64,
    pub requests_stored: u64,
    pub errors_stored: u64,
    pub dropped_by_data_planes: u64,
}

/// Handle to the log trees; cheap to clone.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    trees: Vec<sled::Tree>,
    /// One compaction at a time: the bucket counters it reads are the ones its transaction
    /// replaces. Holds the recent counters, so that most compactions read none from sled.
    compactor: Mutex<Compactor>,
    /// Batches stored since the last compaction began.
    uncompacted: AtomicU64,
    tail: broadcast::Sender<Arc<TailBatch>>,
    /// Records sent to tails so far; under a lock so that positions rise in send order.
    tail_position: Mutex<u64>,
    metrics: LogMetrics,
}

/// A batch encoded outside the transaction, which may run more than once.
struct Prepared {
    instance: sled::IVec,
    applied: sled::IVec,
    sequence: u64,
    requests: Vec<(sled::IVec, sled::IVec)>,
    errors: Vec<(sled::IVec, sled::IVec)>,
    index: Vec<sled::IVec>,
    /// Key and value in `log_stats_pending`.
    pending: (sled::IVec, sled::IVec),
}

/// What the compactor keeps between runs.
struct Compactor {
    cache: BucketCache,
    last_run: std::time::Instant,
}

/// The counters of the current (and previous) minute and hour, by tree and bucket key, as
/// last committed. Nothing else changes buckets that recent, so the cache stays true.
#[derive(Default)]
struct BucketCache {
    minutes: HashMap<Vec<u8>, Counts>,
    hours: HashMap<Vec<u8>, Counts>,
    /// The minute and hour slots the cache holds: this one and the one before.
    minute: u64,
    hour: u64,
}

/// Counters cached at most; past it the cache starts over (a very large key inventory).
const BUCKET_CACHE_ENTRIES: usize = 200_000;

impl BucketCache {
    /// Moves to the current minute and hour, dropping older counters.
    fn advance(&mut self, now_unix_ms: u64) {
        let minute = now_unix_ms / stats::MINUTE_MS;
        let hour = now_unix_ms / stats::HOUR_MS;
        if minute != self.minute {
            self.minute = minute;
            self.minutes
                .retain(|key, _| keys::bucket_slot(key) + 1 >= minute);
        }
        if hour != self.hour {
            self.hour = hour;
            self.hours
                .retain(|key, _| keys::bucket_slot(key) + 1 >= hour);
        }
        if self.minutes.len() + self.hours.len() > BUCKET_CACHE_ENTRIES {
            self.minutes.clear();
            self.hours.clear();
        }
    }

    /// The cache of one tree, if it holds `slot`.
    fn holds(&mut self, tree: LogTree, slot: u64) -> Option<&mut HashMap<Vec<u8>, Counts>> {
        let (map, current) = match tree {
            LogTree::StatsMinute => (&mut self.minutes, self.minute),
            LogTree::StatsHour => (&mut self.hours, self.hour),
            _ => return None,
        };
        (slot + 1 == current || slot == current).then_some(map)
    }
}

// === impl LogStore ===

impl LogStore {
    /// Opens (or creates) the log trees in the store's database.
    pub fn open(store: &Store) -> Result<Self, Error> {
        let trees = LogTree::ALL
            .iter()
            .map(|t| store.open_tree(t.name()))
            .collect::<Result<Vec<_>, _>>()?;
        let (tail, _) = broadcast::channel(TAIL_BACKLOG);
        Ok(Self {
            inner: Arc::new(Inner {
                store: store.clone(),
                trees,
                compactor: Mutex::new(Compactor {
                    cache: BucketCache::default(),
                    last_run: std::time::Instant::now(),
                }),
                uncompacted: AtomicU64::new(0),
                tail,
                tail_position: Mutex::new(0),
                metrics: LogMetrics::default(),
            }),
        })
    }

    fn tree(&self, tree: LogTree) -> &sled::Tree {
        &self.inner.trees[tree as usize]
    }

    /// The highest batch sequence stored for a data-plane instance (0 if none).
    pub fn applied(&self, instance_id: &str) -> Result<u64, Error> {
        Ok(self
            .tree(LogTree::Applied)
            .get(instance_id.as_bytes())?
            .map_or(0, |v| decode_applied(&v).0))
    }

    /// Stores one batch of an instance durably, unless it was stored before. Returns once
    /// the store is flushed.
    pub async fn ingest(
        &self,
        instance_id: &str,
        sequence: u64,
        records: Vec<pb::RequestRecord>,
    ) -> Result<Ingested, Error> {
        let mut outcomes = self
            .ingest_many(vec![Batch {
                instance_id: instance_id.to_string(),
                sequence,
                records,
            }])
            .await?;
        Ok(outcomes.pop().unwrap_or(Ingested::Repeat))
    }

    /// Stores batches (each in its own transaction, in order) and flushes once for all of
    /// them: a stream's batches that arrived together share one flush. Returns what
    /// happened to each, once all are durable. On an error, none is durable for sure: the
    /// caller acknowledges none of them, and those stored are repeats when sent again.
    pub async fn ingest_many(&self, batches: Vec<Batch>) -> Result<Vec<Ingested>, Error> {
        let this = self.clone();
        let stored = tokio::task::spawn_blocking(move || {
            batches
                .into_iter()
                .map(|batch| {
                    this.ingest_blocking(&batch.instance_id, batch.sequence, batch.records)
                })
                .collect::<Result<Vec<_>, Error>>()
        })
        .await
        .map_err(|e| Error::Internal(format!("log write task failed: {e}")))??;
        if stored.iter().any(|(outcome, records)| {
            matches!(outcome, Ingested::Stored { .. }) && !records.is_empty()
        }) {
            self.inner.store.flush().await?;
        }
        let mut outcomes = Vec::with_capacity(stored.len());
        let metrics = &self.inner.metrics;
        for (outcome, records) in stored {
            if let Ingested::Stored { requests, errors } = outcome
                && !records.is_empty()
            {
                metrics.batches.fetch_add(1, Ordering::Relaxed);
                metrics.requests.fetch_add(requests, Ordering::Relaxed);
                metrics.errors.fetch_add(errors, Ordering::Relaxed);
                self.publish(records);
            }
            outcomes.push(outcome);
        }
        if self.compaction_due() {
            let this = self.clone();
            // The batches are durable and counted as pending: a failed compaction loses
            // nothing, the next one (or the next stats query) takes their updates.
            match tokio::task::spawn_blocking(move || this.compact()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "log stats compaction failed; retrying later")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "log stats compaction task failed; retrying later")
                }
            }
        }
        Ok(outcomes)
    }

    /// Whether enough batches wait, or one waited long enough, for a compaction.
    fn compaction_due(&self) -> bool {
        let waiting = self.inner.uncompacted.load(Ordering::Relaxed);
        if waiting >= COMPACT_AFTER_BATCHES {
            return true;
        }
        waiting > 0
            && self
                .inner
                .compactor
                .try_lock()
                .is_ok_and(|c| c.last_run.elapsed() >= COMPACT_AFTER)
    }

    /// Adds every pending counter update to the bucket trees (blocking). Each
    /// transaction writes the merged counters and deletes the pending values it took, so
    /// an update is counted exactly once whatever fails.
    pub fn compact(&self) -> Result<(), Error> {
        let mut compactor = self
            .inner
            .compactor
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        compactor.last_run = std::time::Instant::now();
        self.inner.uncompacted.store(0, Ordering::Relaxed);
        loop {
            let mut updates = BucketUpdates::default();
            let mut taken = Vec::new();
            for entry in self.tree(LogTree::StatsPending).iter() {
                let (key, value) = entry?;
                updates.merge_encoded(&value).map_err(|e| Error::Corrupt {
                    tree: "log stats pending",
                    detail: e.to_string(),
                })?;
                taken.push(key);
                if taken.len() >= COMPACT_BATCHES_MAX {
                    break;
                }
            }
            if taken.is_empty() {
                return Ok(());
            }
            let full = taken.len() >= COMPACT_BATCHES_MAX;
            compactor.cache.advance(keys::time_component(now_unix_ms()));
            let merged = self.merge_buckets(updates, &mut compactor.cache)?;
            let trees = [
                self.tree(LogTree::StatsMinute).clone(),
                self.tree(LogTree::StatsHour).clone(),
                self.tree(LogTree::StatsPending).clone(),
            ];
            trees
                .as_slice()
                .transaction(|views| {
                    for (tree, key, _, value) in &merged {
                        let view = match tree {
                            LogTree::StatsHour => &views[1],
                            _ => &views[0],
                        };
                        view.insert(key.clone(), value.clone())?;
                    }
                    for key in &taken {
                        views[2].remove(key.clone())?;
                    }
                    Ok(())
                })
                .map_err(|e: TransactionError<Error>| match e {
                    TransactionError::Abort(e) => e,
                    TransactionError::Storage(e) => Error::Store(e),
                })?;
            for (tree, key, counts, _) in merged {
                if let Some(map) = compactor.cache.holds(tree, keys::bucket_slot(&key)) {
                    map.insert(key.to_vec(), counts);
                }
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// [`LogStore::ingest`] without the flush, on the calling thread. Hands the records
    /// back for the tails.
    pub fn ingest_blocking(
        &self,
        instance_id: &str,
        sequence: u64,
        records: Vec<pb::RequestRecord>,
    ) -> Result<(Ingested, Vec<pb::RequestRecord>), Error> {
        if records.is_empty() {
            return Ok((
                Ingested::Stored {
                    requests: 0,
                    errors: 0,
                },
                records,
            ));
        }
        if self.applied(instance_id)? >= sequence {
            return Ok((Ingested::Repeat, records));
        }
        let prepared = prepare(instance_id, sequence, &records);
        let counts = Ingested::Stored {
            requests: prepared.requests.len() as u64,
            errors: prepared.errors.len() as u64,
        };
        let stored = self
            .inner
            .trees
            .as_slice()
            .transaction(|views| write_batch(views, &prepared))
            .map_err(|e| match e {
                TransactionError::Abort(e) => e,
                TransactionError::Storage(e) => Error::Store(e),
            })?;
        if !stored {
            return Ok((Ingested::Repeat, records));
        }
        self.inner.uncompacted.fetch_add(1, Ordering::Relaxed);
        Ok((counts, records))
    }

    /// Adds pending updates to the committed counters, from the cache or the tree (under
    /// the compactor's lock): per tree and bucket key, the counters and their encoding.
    fn merge_buckets(
        &self,
        updates: BucketUpdates,
        cache: &mut BucketCache,
    ) -> Result<Vec<MergedBucket>, Error> {
        let mut merged_all = Vec::with_capacity(updates.minutes.len() + updates.hours.len());
        for (tree, updates) in [
            (LogTree::StatsMinute, updates.minutes),
            (LogTree::StatsHour, updates.hours),
        ] {
            let stored = self.tree(tree);
            for (key, counts) in updates {
                let slot = keys::bucket_slot(&key);
                let committed = match cache.holds(tree, slot) {
                    Some(map) => match map.get(&key) {
                        Some(cached) => Some(cached.clone()),
                        // Not cached yet: this batch may be the first since a restart.
                        None => stored.get(&key)?.map(|v| decode_counts(&v)).transpose()?,
                    },
                    None => stored.get(&key)?.map(|v| decode_counts(&v)).transpose()?,
                };
                let merged = match committed {
                    Some(mut merged) => {
                        merged.merge(&counts);
                        merged
                    }
                    None => counts,
                };
                let encoded = sled::IVec::from(merged.encode_to_vec());
                merged_all.push((tree, sled::IVec::from(key), merged, encoded));
            }
        }
        Ok(merged_all)
    }

    fn publish(&self, records: Vec<pb::RequestRecord>) {
        if self.inner.tail.receiver_count() == 0 {
            return;
        }
        let mut position = self
            .inner
            .tail_position
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let first = *position;
        *position += records.len() as u64;
        // No receiver left since the check: nobody to tell.
        let _ = self.inner.tail.send(Arc::new(TailBatch { first, records }));
    }

    /// Newly stored records from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<TailBatch>> {
        self.inner.tail.subscribe()
    }

    /// Notes the cumulative count of records an instance dropped (reported on each batch).
    pub fn note_dropped(&self, instance_id: &str, dropped: u64) {
        let mut all = self
            .inner
            .metrics
            .dropped
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match all.get_mut(instance_id) {
            Some(latest) => *latest = (*latest).max(dropped),
            None if dropped > 0 => {
                all.insert(instance_id.to_string(), dropped);
            }
            None => {}
        }
    }

    pub fn counters(&self) -> LogCounters {
        let m = &self.inner.metrics;
        let dropped = m
            .dropped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .sum();
        LogCounters {
            batches_stored: m.batches.load(Ordering::Relaxed),
            requests_stored: m.requests.load(Ordering::Relaxed),
            errors_stored: m.errors.load(Ordering::Relaxed),
            dropped_by_data_planes: dropped,
        }
    }

    /// One page of records, newest first (blocking: call it off the async runtime).
    pub fn search(&self, query: &Query) -> Result<Page, Error> {
        if query.uses_index() {
            return search::scan_index(
                query,
                self.tree(LogTree::ErrorsByKey),
                self.tree(LogTree::Errors),
            );
        }
        if query.filter.errors_only {
            return search::scan(query, &[self.tree(LogTree::Errors)]);
        }
        search::scan(
            query,
            &[self.tree(LogTree::Requests), self.tree(LogTree::Errors)],
        )
    }

    /// Counters over a window, per group of `kind`, or of the one group `only` (blocking).
    pub fn stats(
        &self,
        plan: &WindowPlan,
        scope: Scope,
        kind: GroupKind,
        only: Option<&str>,
    ) -> Result<StatsResult, Error> {
        // Every stored record counts, including those whose updates still wait.
        self.compact()?;
        let tree = self.tree(if plan.hourly {
            LogTree::StatsHour
        } else {
            LogTree::StatsMinute
        });
        let mut result = StatsResult {
            total: Counts::default(),
            rows: HashMap::new(),
            series: vec![Counts::default(); plan.points()],
        };
        if let Some(value) = only {
            result.rows.insert(value.to_string(), Counts::default());
        }
        for slot in plan.slots() {
            let point = plan.point_of(slot);
            let add_total = |counts: &Counts, result: &mut StatsResult| {
                result.total.merge(counts);
                if let Some(p) = result.series.get_mut(point) {
                    p.merge(counts);
                }
            };
            if let Some(value) = only {
                let key = keys::bucket_key(slot, scope, kind, value);
                if let Some(v) = tree.get(key)? {
                    let counts = decode_counts(&v)?;
                    add_total(&counts, &mut result);
                    if let Some(row) = result.rows.get_mut(value) {
                        row.merge(&counts);
                    }
                }
                continue;
            }
            for entry in tree.scan_prefix(keys::bucket_prefix(slot, scope, kind)) {
                let (key, v) = entry?;
                let counts = decode_counts(&v)?;
                result
                    .rows
                    .entry(keys::bucket_value(&key))
                    .or_default()
                    .merge(&counts);
            }
            if let Some(v) = tree.get(keys::bucket_key(slot, scope, GroupKind::All, ""))? {
                add_total(&decode_counts(&v)?, &mut result);
            }
        }
        Ok(result)
    }

    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }
}

/// A bucket after a compaction: its tree, key, counters and their encoding.
type MergedBucket = (LogTree, sled::IVec, Counts, sled::IVec);

/// What [`LogStore::stats`] found.
#[derive(Debug)]
pub struct StatsResult {
    pub total: Counts,
    pub rows: HashMap<String, Counts>,
    pub series: Vec<Counts>,
}

fn prepare(instance_id: &str, sequence: u64, records: &[pb::RequestRecord]) -> Prepared {
    let hash = keys::instance_hash(instance_id);
    let mut prepared = Prepared {
        instance: sled::IVec::from(instance_id.as_bytes()),
        applied: encode_applied(sequence, now_unix_ms()),
        sequence,
        requests: Vec::with_capacity(records.len()),
        errors: Vec::new(),
        index: Vec::new(),
        pending: (sled::IVec::default(), sled::IVec::default()),
    };
    let mut buckets = BucketUpdates::default();
    for (i, record) in records.iter().enumerate() {
        let index = u32::try_from(i).unwrap_or(u32::MAX);
        let key = keys::record_key(record.at_unix_ms, hash, sequence, index);
        let value = sled::IVec::from(record.encode_to_vec());
        if record.error_class == 0 {
            prepared.requests.push((sled::IVec::from(&key[..]), value));
        } else {
            if let Some(entry) = keys::index_key(&record.key_id, &key) {
                prepared.index.push(sled::IVec::from(entry));
            }
            prepared.errors.push((sled::IVec::from(&key[..]), value));
        }
        buckets.add(record);
    }
    let mut pending_key = [0u8; 16];
    pending_key[..8].copy_from_slice(&hash.to_be_bytes());
    pending_key[8..].copy_from_slice(&sequence.to_be_bytes());
    prepared.pending = (
        sled::IVec::from(&pending_key[..]),
        sled::IVec::from(buckets.encode()),
    );
    prepared
}

/// The transaction body: stores the batch unless its sequence was applied; returns whether
/// it stored it.
fn write_batch(views: &[TransactionalTree], batch: &Prepared) -> TxResult<bool> {
    let applied = &views[LogTree::Applied as usize];
    if let Some(v) = applied.get(&batch.instance)?
        && decode_applied(&v).0 >= batch.sequence
    {
        return Ok(false);
    }
    let requests = &views[LogTree::Requests as usize];
    for (key, value) in &batch.requests {
        requests.insert(key.clone(), value.clone())?;
    }
    let errors = &views[LogTree::Errors as usize];
    for (key, value) in &batch.errors {
        errors.insert(key.clone(), value.clone())?;
    }
    let index = &views[LogTree::ErrorsByKey as usize];
    for key in &batch.index {
        index.insert(key.clone(), sled::IVec::default())?;
    }
    let (key, value) = &batch.pending;
    views[LogTree::StatsPending as usize].insert(key.clone(), value.clone())?;
    applied.insert(batch.instance.clone(), batch.applied.clone())?;
    Ok(true)
}

fn decode_counts(bytes: &[u8]) -> Result<Counts, Error> {
    Counts::decode(bytes).map_err(|e| Error::Corrupt {
        tree: "log stats",
        detail: e.to_string(),
    })
}

/// `log_applied` values: `[sequence u64 BE][stored at unix ms u64 BE]`.
fn encode_applied(sequence: u64, at_unix_ms: i64) -> sled::IVec {
    let mut value = [0u8; 16];
    value[..8].copy_from_slice(&sequence.to_be_bytes());
    value[8..].copy_from_slice(&keys::time_component(at_unix_ms).to_be_bytes());
    sled::IVec::from(&value[..])
}

fn decode_applied(value: &[u8]) -> (u64, u64) {
    let word = |range: std::ops::Range<usize>| {
        value
            .get(range)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map_or(0, u64::from_be_bytes)
    };
    (word(0..8), word(8..16))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn record(at: i64, key: &str, status: u32, attempt: u32) -> pb::RequestRecord {
        pb::RequestRecord {
            at_unix_ms: at,
            request_id: format!("req-{at}-{attempt}"),
            node: "dp-1".into(),
            client_token: "app".into(),
            provider: "oa".into(),
            key_id: key.into(),
            model_requested: "via-oa".into(),
            model_served: "gpt-4o-mini".into(),
            status,
            latency_ms: 12,
            attempt,
            input_tokens: 3,
            output_tokens: 4,
            error_class: match status {
                200..=299 => 0,
                429 => pb::ErrorClass::RateLimited as i32,
                _ => pb::ErrorClass::Upstream as i32,
            },
            ..Default::default()
        }
    }

    pub(super) fn open() -> (tempfile::TempDir, LogStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 100).unwrap();
        let logs = LogStore::open(&store).unwrap();
        (dir, logs)
    }

    #[test]
    fn a_batch_is_stored_once_per_instance_and_sequence() {
        let (_dir, logs) = open();
        let batch = vec![
            record(1_000, "k1", 200, 0),
            record(1_001, "k1", 429, 1),
            record(1_002, "k2", 500, 0),
        ];
        let (outcome, _) = logs.ingest_blocking("i-1", 1, batch.clone()).unwrap();
        assert_eq!(
            outcome,
            Ingested::Stored {
                requests: 1,
                errors: 2
            }
        );
        assert_eq!(logs.applied("i-1").unwrap(), 1);
        let (again, _) = logs.ingest_blocking("i-1", 1, batch.clone()).unwrap();
        assert_eq!(again, Ingested::Repeat);
        // Another instance's sequence 1 is its own.
        let (other, _) = logs.ingest_blocking("i-2", 1, batch).unwrap();
        assert!(matches!(other, Ingested::Stored { .. }));
        assert_eq!(logs.tree(LogTree::Requests).len(), 2);
        assert_eq!(logs.tree(LogTree::Errors).len(), 4);
        assert_eq!(logs.tree(LogTree::ErrorsByKey).len(), 4);
    }

    #[test]
    fn searches_page_newest_first_over_both_trees() {
        let (_dir, logs) = open();
        let batch: Vec<_> = (0..10)
            .map(|i| record(1_000 + i, "k1", if i % 3 == 0 { 500 } else { 200 }, 0))
            .collect();
        logs.ingest_blocking("i-1", 1, batch).unwrap();
        let mut query = Query::from_pb(pb::SearchLogsRequest {
            limit: 4,
            ..Default::default()
        })
        .unwrap();
        let mut seen = Vec::new();
        loop {
            let page = logs.search(&query).unwrap();
            seen.extend(page.records.iter().map(|r| r.at_unix_ms));
            match page.next_cursor {
                Some(cursor) => query.cursor = Some(cursor),
                None => break,
            }
        }
        assert_eq!(seen, (1_000..1_010).rev().collect::<Vec<_>>());
        // Errors of one key come from the index, also paged and time-bounded.
        let query = Query::from_pb(pb::SearchLogsRequest {
            filter: Some(pb::LogFilter {
                key_id: "k1".into(),
                errors_only: true,
                ..Default::default()
            }),
            to_unix_ms: 1_009,
            limit: 2,
            ..Default::default()
        })
        .unwrap();
        assert!(query.uses_index());
        let page = logs.search(&query).unwrap();
        let times: Vec<_> = page.records.iter().map(|r| r.at_unix_ms).collect();
        assert_eq!(times, vec![1_006, 1_003]);
        let next = Query {
            cursor: page.next_cursor,
            ..query
        };
        let page = logs.search(&next).unwrap();
        let times: Vec<_> = page.records.iter().map(|r| r.at_unix_ms).collect();
        assert_eq!(times, vec![1_000]);
        assert_eq!(page.next_cursor, None);
    }

    #[test]
    fn pending_counters_count_once_across_reopens_and_compactions() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_700_000_000_000;
        let plan = WindowPlan::new(pb::StatsWindow::LastHour, u64::try_from(now).unwrap());
        let requests = |logs: &LogStore| {
            logs.stats(&plan, Scope::Requests, GroupKind::Key, None)
                .unwrap()
                .rows["k1"]
                .requests
        };
        {
            let store = Store::open(dir.path(), 100).unwrap();
            let logs = LogStore::open(&store).unwrap();
            logs.ingest_blocking("i-1", 1, vec![record(now - 10, "k1", 200, 0)])
                .unwrap();
            logs.ingest_blocking("i-1", 2, vec![record(now - 5, "k1", 200, 0)])
                .unwrap();
            assert_eq!(logs.tree(LogTree::StatsPending).len(), 2);
            // Closed before any compaction, as a crash would leave it.
        }
        let store = crate::store::open_waiting(dir.path());
        let logs = LogStore::open(&store).unwrap();
        logs.ingest_blocking("i-1", 3, vec![record(now - 1, "k1", 200, 0)])
            .unwrap();
        assert_eq!(requests(&logs), 3);
        assert!(logs.tree(LogTree::StatsPending).is_empty());
        logs.compact().unwrap();
        assert_eq!(requests(&logs), 3, "a second compaction adds nothing");
        // A repeat of a stored batch adds no pending update either.
        logs.ingest_blocking("i-1", 3, vec![record(now - 1, "k1", 200, 0)])
            .unwrap();
        assert_eq!(requests(&logs), 3);
    }

    #[test]
    fn stats_sum_buckets_per_group() {
        let (_dir, logs) = open();
        let now = 1_700_000_000_000;
        let batch = vec![
            record(now - 1_000, "k1", 200, 0),
            record(now - 120_000, "k1", 200, 0),
            record(now - 2_000, "k2", 429, 0),
            record(now - 2_000, "k2", 429, 1),
        ];
        logs.ingest_blocking("i-1", 1, batch).unwrap();
        let plan = WindowPlan::new(pb::StatsWindow::LastHour, u64::try_from(now).unwrap());
        let result = logs
            .stats(&plan, Scope::Requests, GroupKind::Key, None)
            .unwrap();
        assert_eq!(result.total.requests, 3);
        assert_eq!(result.rows["k1"].requests, 2);
        assert_eq!(result.rows["k2"].client_errors, 1);
        assert_eq!(result.series.iter().map(|c| c.requests).sum::<u64>(), 3);
        assert_eq!(result.series.last().unwrap().requests, 2);
        let one = logs
            .stats(&plan, Scope::Attempts, GroupKind::Key, Some("k2"))
            .unwrap();
        assert_eq!(one.total.requests, 1);
        assert_eq!(one.rows.len(), 1);
        let one = logs
            .stats(&plan, Scope::Requests, GroupKind::Key, Some("nobody"))
            .unwrap();
        assert_eq!(one.total.requests, 0);
        assert_eq!(one.rows["nobody"].requests, 0);
    }
}
