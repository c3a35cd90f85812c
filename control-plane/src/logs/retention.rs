//! The retention job: deletes records older than the retention settings, their index
//! entries, old stats buckets and forgotten instances, every minute and whenever the
//! config changes (so that a shorter retention applies at once).
//!
//! Every tree it trims is keyed by time first, so what it deletes is a range at the start
//! of the tree: finding it costs nothing beyond reading what is deleted.

use std::time::Duration;

use fulcrum_proto::model::Settings;
use tokio::sync::watch;

use super::keys;
use super::stats::{DAY_MS, HOUR_MS, MINUTE_MS};
use super::{LogStore, LogTree, decode_applied};
use crate::error::Error;
use crate::snapshot::effective_settings;
use crate::store::now_unix_ms;

/// How often the job runs without a config change.
pub const INTERVAL: Duration = Duration::from_secs(60);
/// Per-minute buckets serve the 1m and 1h windows (and the 24h one at a pinch).
pub const MINUTE_BUCKETS_KEPT_MS: u64 = 2 * DAY_MS;
/// Per-hour buckets serve the 24h and 30d windows.
pub const HOUR_BUCKETS_KEPT_MS: u64 = 31 * DAY_MS;
/// Keys deleted per sled batch, so that a large backlog never holds one huge batch.
const CHUNK: usize = 10_000;

/// Where each tree is cut: everything before these is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cutoffs {
    /// Unix ms.
    pub requests: u64,
    /// Unix ms.
    pub errors: u64,
    /// Minute slot.
    pub minute_slot: u64,
    /// Hour slot.
    pub hour_slot: u64,
    /// Unix ms: instances not heard from since can resend nothing that would be kept.
    pub instances: u64,
}

impl Cutoffs {
    pub fn new(now_unix_ms: u64, settings: &Settings) -> Self {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let requests = ms(settings.request_log_retention);
        let errors = ms(settings.error_log_retention);
        Self {
            requests: now_unix_ms.saturating_sub(requests),
            errors: now_unix_ms.saturating_sub(errors),
            minute_slot: now_unix_ms.saturating_sub(MINUTE_BUCKETS_KEPT_MS) / MINUTE_MS,
            hour_slot: now_unix_ms.saturating_sub(HOUR_BUCKETS_KEPT_MS) / HOUR_MS,
            instances: now_unix_ms.saturating_sub(requests.max(errors).saturating_add(DAY_MS)),
        }
    }
}

/// What one run deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deleted {
    pub requests: u64,
    pub errors: u64,
    pub buckets: u64,
    pub instances: u64,
}

impl Deleted {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Runs the job until `shutdown` turns true.
pub async fn run(logs: LogStore, mut shutdown: watch::Receiver<bool>) {
    let mut revisions = logs.store().subscribe();
    loop {
        let job = logs.clone();
        let stop = shutdown.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let settings = Settings::from_values(&effective_settings(job.store())?)?;
            let now = keys::time_component(now_unix_ms());
            job.enforce(&Cutoffs::new(now, &settings), &|| *stop.borrow())
        })
        .await;
        match outcome {
            Ok(Ok(deleted)) if !deleted.is_empty() => {
                tracing::info!(
                    requests = deleted.requests,
                    errors = deleted.errors,
                    buckets = deleted.buckets,
                    instances = deleted.instances,
                    "log retention deleted old records"
                );
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "log retention failed; retrying later"),
            Err(e) => tracing::warn!(error = %e, "log retention task failed; retrying later"),
        }
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            changed = revisions.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(INTERVAL) => {}
        }
    }
}

// === impl LogStore ===

impl LogStore {
    /// Deletes everything before the cutoffs (blocking). `stop` is asked between chunks.
    pub fn enforce(&self, cutoffs: &Cutoffs, stop: &dyn Fn() -> bool) -> Result<Deleted, Error> {
        // Old buckets still waiting as pending updates would come back after the trim.
        self.compact()?;
        let requests = self.trim(LogTree::Requests, &keys::time_bound(cutoffs.requests), stop)?;
        let errors = self.trim_errors(cutoffs.errors, stop)?;
        let minutes = self.trim(
            LogTree::StatsMinute,
            &cutoffs.minute_slot.to_be_bytes(),
            stop,
        )?;
        let hours = self.trim(LogTree::StatsHour, &cutoffs.hour_slot.to_be_bytes(), stop)?;
        let mut deleted = Deleted {
            requests,
            errors,
            buckets: minutes + hours,
            instances: 0,
        };
        if stop() {
            return Ok(deleted);
        }
        let applied = self.tree(LogTree::Applied);
        let mut forgotten = sled::Batch::default();
        for entry in applied.iter() {
            let (instance, value) = entry?;
            if decode_applied(&value).1 < cutoffs.instances {
                forgotten.remove(instance);
                deleted.instances += 1;
            }
        }
        applied.apply_batch(forgotten)?;
        Ok(deleted)
    }

    /// Deletes the keys of `tree` below `before`, in chunks.
    fn trim(&self, tree: LogTree, before: &[u8], stop: &dyn Fn() -> bool) -> Result<u64, Error> {
        let tree = self.tree(tree);
        let mut deleted = 0;
        while !stop() {
            let mut batch = sled::Batch::default();
            let mut n = 0;
            for key in tree.range(..before).keys().take(CHUNK) {
                batch.remove(key?);
                n += 1;
            }
            if n == 0 {
                break;
            }
            tree.apply_batch(batch)?;
            deleted += n;
        }
        Ok(deleted)
    }

    /// Deletes error records before `before` with their index entries (first, so that an
    /// interrupted run never leaves a record the index cannot find while others can).
    fn trim_errors(&self, before: u64, stop: &dyn Fn() -> bool) -> Result<u64, Error> {
        let errors = self.tree(LogTree::Errors);
        let index = self.tree(LogTree::ErrorsByKey);
        let before = keys::time_bound(before);
        let mut deleted = 0;
        while !stop() {
            let mut records = sled::Batch::default();
            let mut entries = sled::Batch::default();
            let mut n = 0;
            for entry in errors.range(..before).take(CHUNK) {
                let (key, value) = entry?;
                let key_id = super::search::decode_record(&value)
                    .map(|r| r.key_id)
                    .unwrap_or_default();
                if let Ok(record) = <keys::RecordKey>::try_from(&key[..])
                    && let Some(entry) = keys::index_key(&key_id, &record)
                {
                    entries.remove(entry);
                }
                records.remove(key);
                n += 1;
            }
            if n == 0 {
                break;
            }
            index.apply_batch(entries)?;
            errors.apply_batch(records)?;
            deleted += n;
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use fulcrum_proto::pb;

    use super::super::tests::{open, record};
    use super::*;

    fn settings(requests_days: u32, errors_days: u32) -> Settings {
        let mut values = BTreeMap::new();
        values.insert(
            "request_log_retention_days".to_string(),
            requests_days.to_string(),
        );
        values.insert(
            "error_log_retention_days".to_string(),
            errors_days.to_string(),
        );
        Settings::from_values(&values).unwrap()
    }

    #[test]
    fn cutoffs_follow_the_settings() {
        let now = 100 * DAY_MS + 5;
        let cut = Cutoffs::new(now, &settings(7, 30));
        assert_eq!(cut.requests, 93 * DAY_MS + 5);
        assert_eq!(cut.errors, 70 * DAY_MS + 5);
        assert_eq!(cut.minute_slot, 98 * DAY_MS / MINUTE_MS);
        assert_eq!(cut.hour_slot, 69 * DAY_MS / HOUR_MS);
        assert_eq!(cut.instances, 69 * DAY_MS + 5);
        // Early clocks never underflow.
        let cut = Cutoffs::new(5, &settings(1, 1));
        assert_eq!((cut.requests, cut.errors, cut.minute_slot), (0, 0, 0));
    }

    #[test]
    fn old_ranges_go_with_their_index_entries_and_buckets() {
        let (_dir, logs) = open();
        let day = i64::try_from(DAY_MS).unwrap();
        let now = 100 * day;
        let batch = vec![
            record(now - 3 * day, "k1", 200, 0),
            record(now - 3 * day, "k1", 500, 0),
            record(now - 40 * day, "k1", 500, 0),
            record(now - 1_000, "k1", 200, 0),
            record(now - 1_000, "k1", 500, 0),
        ];
        logs.ingest_blocking("old", 1, batch).unwrap();
        let cut = Cutoffs::new(u64::try_from(now).unwrap(), &settings(1, 30));
        let deleted = logs.enforce(&cut, &|| false).unwrap();
        assert_eq!(deleted.requests, 1);
        assert_eq!(deleted.errors, 1, "the 3-day-old error stays 30 days");
        assert!(deleted.buckets > 0);
        assert_eq!(logs.tree(LogTree::Requests).len(), 1);
        assert_eq!(logs.tree(LogTree::Errors).len(), 2);
        assert_eq!(logs.tree(LogTree::ErrorsByKey).len(), 2);
        // The 40-day-old record's hour buckets are gone; the recent ones stay.
        let plan = super::super::stats::WindowPlan::new(
            pb::StatsWindow::Last30Days,
            u64::try_from(now).unwrap(),
        );
        let stats = logs
            .stats(&plan, keys::Scope::Requests, keys::GroupKind::Key, None)
            .unwrap();
        assert_eq!(stats.total.requests, 4);
        // Nothing left to do; the instance is still remembered.
        assert_eq!(logs.enforce(&cut, &|| false).unwrap(), Deleted::default());
        assert_eq!(logs.applied("old").unwrap(), 1);
        // A stopped job deletes nothing. (The instance was stored at the real time.)
        let real_now = keys::time_component(now_unix_ms());
        let later = Cutoffs::new(real_now + 3 * DAY_MS, &settings(1, 1));
        assert_eq!(logs.enforce(&later, &|| true).unwrap().requests, 0);
        let deleted = logs.enforce(&later, &|| false).unwrap();
        assert_eq!((deleted.requests, deleted.errors), (1, 2));
        assert_eq!(deleted.instances, 1);
    }
}
