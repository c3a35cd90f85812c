//! Statistics buckets: counters per minute and per hour, per group, updated in the
//! transaction that stores the records, and read back per window by `GetStats`.

use std::collections::HashMap;

use fulcrum_proto::pb;
use prost::Message;

#[cfg(test)]
use super::keys::bucket_key;
use super::keys::{GroupKind, Scope, bucket_prefix};

pub const MINUTE_MS: u64 = 60_000;
pub const HOUR_MS: u64 = 3_600_000;
pub const DAY_MS: u64 = 86_400_000;

/// Latency histogram: bucket 0 is 0 ms; then four buckets per doubling from 1 ms, up to
/// 2^24 ms (4.7 hours), the last one open-ended.
const OCTAVES: u32 = 24;
pub const LATENCY_BUCKETS: usize = 1 + 4 * OCTAVES as usize;

/// Counters of one group in one bucket, stored prost-encoded: zeros cost nothing, and
/// counters added later decode from old buckets as zero.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Counts {
    #[prost(uint64, tag = "1")]
    pub requests: u64,
    #[prost(uint64, tag = "2")]
    pub successes: u64,
    #[prost(uint64, tag = "3")]
    pub client_errors: u64,
    #[prost(uint64, tag = "4")]
    pub server_errors: u64,
    #[prost(uint64, tag = "5")]
    pub other_status: u64,
    /// Indexed by `ErrorClass` number; index 0 (no error) stays 0.
    #[prost(uint64, repeated, tag = "6")]
    pub error_classes: Vec<u64>,
    #[prost(uint64, tag = "7")]
    pub input_tokens: u64,
    #[prost(uint64, tag = "8")]
    pub output_tokens: u64,
    #[prost(uint64, tag = "9")]
    pub latency_sum_ms: u64,
    /// Indexed by [`latency_bucket`]; trailing zeros are left out.
    #[prost(uint64, repeated, tag = "10")]
    pub latency: Vec<u64>,
}

/// The histogram bucket of a latency.
pub fn latency_bucket(ms: u32) -> usize {
    if ms == 0 {
        return 0;
    }
    let octave = 31 - ms.leading_zeros();
    if octave >= OCTAVES {
        return LATENCY_BUCKETS - 1;
    }
    // The two bits after the leading one say which quarter of the doubling it is in.
    let quarter = if octave >= 2 {
        (ms >> (octave - 2)) & 3
    } else {
        (ms << (2 - octave)) & 3
    };
    1 + (4 * octave + quarter) as usize
}

/// The lowest and highest latency of a histogram bucket.
pub fn latency_bounds(bucket: usize) -> (f64, f64) {
    if bucket == 0 {
        return (0.0, 0.0);
    }
    let i = (bucket - 1) as u32;
    let base = f64::from(1u32 << (i / 4).min(31));
    let quarter = f64::from(i % 4);
    (
        base * (1.0 + quarter / 4.0),
        base * (1.0 + (quarter + 1.0) / 4.0),
    )
}

fn add_at(counts: &mut Vec<u64>, index: usize, n: u64) {
    if counts.len() <= index {
        counts.resize(index + 1, 0);
    }
    counts[index] += n;
}

impl Counts {
    /// Counts one record.
    pub fn add(&mut self, record: &pb::RequestRecord) {
        self.requests += 1;
        match record.status {
            200..=299 => self.successes += 1,
            400..=499 => self.client_errors += 1,
            500..=599 => self.server_errors += 1,
            _ => self.other_status += 1,
        }
        if record.error_class > 0
            && let Ok(class) = usize::try_from(record.error_class)
        {
            add_at(&mut self.error_classes, class.min(63), 1);
        }
        self.input_tokens += record.input_tokens;
        self.output_tokens += record.output_tokens;
        self.latency_sum_ms += u64::from(record.latency_ms);
        add_at(&mut self.latency, latency_bucket(record.latency_ms), 1);
    }

    pub fn merge(&mut self, other: &Counts) {
        self.requests += other.requests;
        self.successes += other.successes;
        self.client_errors += other.client_errors;
        self.server_errors += other.server_errors;
        self.other_status += other.other_status;
        for (i, n) in other.error_classes.iter().enumerate() {
            if *n > 0 {
                add_at(&mut self.error_classes, i, *n);
            }
        }
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.latency_sum_ms += other.latency_sum_ms;
        for (i, n) in other.latency.iter().enumerate() {
            if *n > 0 {
                add_at(&mut self.latency, i, *n);
            }
        }
    }

    /// The median latency, as the middle of the histogram bucket it falls in.
    pub fn latency_p50_ms(&self) -> u32 {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return 0;
        }
        let rank = total.div_ceil(2);
        let mut seen = 0;
        for (bucket, n) in self.latency.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let (low, high) = latency_bounds(bucket);
                return ((low + high) / 2.0).round() as u32;
            }
        }
        0
    }

    pub fn to_pb(&self) -> pb::StatsCounts {
        let errors = self
            .error_classes
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(class, n)| pb::ErrorClassCount {
                error_class: i32::try_from(class).unwrap_or(0),
                count: *n,
            })
            .collect();
        let success_rate = if self.requests == 0 {
            0.0
        } else {
            self.successes as f64 / self.requests as f64
        };
        let latency_avg_ms = self
            .latency_sum_ms
            .checked_div(self.requests)
            .map_or(0, |avg| u32::try_from(avg).unwrap_or(u32::MAX));
        pb::StatsCounts {
            requests: self.requests,
            successes: self.successes,
            client_errors: self.client_errors,
            server_errors: self.server_errors,
            other_status: self.other_status,
            errors,
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            success_rate,
            latency_avg_ms,
            latency_p50_ms: self.latency_p50_ms(),
        }
    }
}

/// The scope a record counts in.
pub fn scope_of(record: &pb::RequestRecord) -> Scope {
    if record.attempt == 0 {
        Scope::Requests
    } else {
        Scope::Attempts
    }
}

/// The group value of a record for one kind. Client requests are grouped by the model the
/// client asked for, attempts by the model sent upstream (each falling back to the other
/// when empty).
pub fn group_value(record: &pb::RequestRecord, kind: GroupKind) -> &str {
    match kind {
        GroupKind::All => "",
        GroupKind::Provider => &record.provider,
        GroupKind::Key => &record.key_id,
        GroupKind::Model => {
            let (first, second) = match scope_of(record) {
                Scope::Requests => (&record.model_requested, &record.model_served),
                Scope::Attempts => (&record.model_served, &record.model_requested),
            };
            if first.is_empty() { second } else { first }
        }
    }
}

/// The counter updates one batch makes, by bucket key, for the minute and the hour trees.
#[derive(Debug, Default)]
pub struct BucketUpdates {
    pub minutes: HashMap<Vec<u8>, Counts>,
    pub hours: HashMap<Vec<u8>, Counts>,
    /// Reused for lookups: most records of a batch add to buckets already there.
    key: Vec<u8>,
}

impl BucketUpdates {
    pub fn add(&mut self, record: &pb::RequestRecord) {
        let at = super::keys::time_component(record.at_unix_ms);
        let scope = scope_of(record);
        for kind in GroupKind::ALL {
            let value = group_value(record, kind);
            for (tree, slot) in [
                (&mut self.minutes, at / MINUTE_MS),
                (&mut self.hours, at / HOUR_MS),
            ] {
                self.key.clear();
                self.key
                    .extend_from_slice(&bucket_prefix(slot, scope, kind));
                self.key.extend_from_slice(value.as_bytes());
                match tree.get_mut(self.key.as_slice()) {
                    Some(counts) => counts.add(record),
                    None => {
                        let mut counts = Counts::default();
                        counts.add(record);
                        tree.insert(self.key.clone(), counts);
                    }
                }
            }
        }
    }
}

impl BucketUpdates {
    /// The updates as one value of the pending tree.
    pub fn encode(&self) -> Vec<u8> {
        let entries = |map: &HashMap<Vec<u8>, Counts>| {
            map.iter()
                .map(|(key, counts)| PendingBucket {
                    key: key.clone(),
                    counts: Some(counts.clone()),
                })
                .collect()
        };
        PendingBuckets {
            minutes: entries(&self.minutes),
            hours: entries(&self.hours),
        }
        .encode_to_vec()
    }

    /// Adds a value of the pending tree to these updates.
    pub fn merge_encoded(&mut self, bytes: &[u8]) -> Result<(), prost::DecodeError> {
        let pending = PendingBuckets::decode(bytes)?;
        for (map, entries) in [
            (&mut self.minutes, pending.minutes),
            (&mut self.hours, pending.hours),
        ] {
            for entry in entries {
                let counts = entry.counts.unwrap_or_default();
                match map.get_mut(entry.key.as_slice()) {
                    Some(sum) => sum.merge(&counts),
                    None => {
                        map.insert(entry.key, counts);
                    }
                }
            }
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.minutes.is_empty() && self.hours.is_empty()
    }
}

/// The counter updates of one stored batch, waiting in `log_stats_pending` to be added to
/// the bucket trees.
#[derive(Clone, PartialEq, prost::Message)]
struct PendingBuckets {
    #[prost(message, repeated, tag = "1")]
    minutes: Vec<PendingBucket>,
    #[prost(message, repeated, tag = "2")]
    hours: Vec<PendingBucket>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PendingBucket {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(message, optional, tag = "2")]
    counts: Option<Counts>,
}

/// The buckets a window reads: which tree, how wide a point is, and which slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowPlan {
    /// Read the hour tree (else the minute tree).
    pub hourly: bool,
    /// Width of one point of the series.
    pub point_ms: u64,
    /// Width of one slot of the tree read.
    pub slot_ms: u64,
    /// First and last point (inclusive), in units of `point_ms` since the epoch.
    pub first_point: u64,
    pub last_point: u64,
}

impl WindowPlan {
    pub fn new(window: pb::StatsWindow, now_unix_ms: u64) -> Self {
        let (span, point_ms, hourly) = match window {
            pb::StatsWindow::LastMinute => (MINUTE_MS, MINUTE_MS, false),
            pb::StatsWindow::LastHour | pb::StatsWindow::Unspecified => (HOUR_MS, MINUTE_MS, false),
            pb::StatsWindow::LastDay => (DAY_MS, HOUR_MS, true),
            pb::StatsWindow::Last30Days => (30 * DAY_MS, DAY_MS, true),
        };
        Self {
            hourly,
            point_ms,
            slot_ms: if hourly { HOUR_MS } else { MINUTE_MS },
            first_point: now_unix_ms.saturating_sub(span) / point_ms,
            last_point: now_unix_ms / point_ms,
        }
    }

    pub fn points(&self) -> usize {
        usize::try_from(self.last_point - self.first_point + 1).unwrap_or(usize::MAX)
    }

    /// The slots to read, inclusive.
    pub fn slots(&self) -> std::ops::RangeInclusive<u64> {
        let per_point = self.point_ms / self.slot_ms;
        self.first_point * per_point..=(self.last_point + 1) * per_point - 1
    }

    /// The point a slot belongs to, as an index into the series.
    pub fn point_of(&self, slot: u64) -> usize {
        let point = slot * self.slot_ms / self.point_ms;
        usize::try_from(point.saturating_sub(self.first_point)).unwrap_or(usize::MAX)
    }

    pub fn from_unix_ms(&self) -> u64 {
        self.first_point * self.point_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(status: u32, latency_ms: u32, attempt: u32) -> pb::RequestRecord {
        pb::RequestRecord {
            at_unix_ms: 1_700_000_123_456,
            status,
            latency_ms,
            attempt,
            provider: "oa".into(),
            key_id: "0123456789abcdef".into(),
            model_requested: "via-oa".into(),
            model_served: "gpt-4o-mini".into(),
            input_tokens: 10,
            output_tokens: 20,
            error_class: if status == 429 {
                pb::ErrorClass::RateLimited as i32
            } else {
                0
            },
            ..Default::default()
        }
    }

    #[test]
    fn latency_buckets_are_quarters_of_doublings() {
        assert_eq!(latency_bucket(0), 0);
        assert_eq!(latency_bucket(1), 1);
        assert_eq!(latency_bounds(1), (1.0, 1.25));
        for ms in [1u32, 2, 3, 5, 7, 100, 999, 1_000, 65_535, 1_000_000] {
            let (low, high) = latency_bounds(latency_bucket(ms));
            assert!(
                f64::from(ms) >= low && f64::from(ms) < high,
                "{ms} not in [{low}, {high})"
            );
        }
        assert!(latency_bucket(100) < latency_bucket(120));
        assert_eq!(latency_bucket(u32::MAX), LATENCY_BUCKETS - 1);
    }

    #[test]
    fn counts_add_merge_and_summarise() {
        let mut a = Counts::default();
        a.add(&record(200, 100, 0));
        a.add(&record(200, 110, 0));
        a.add(&record(429, 5, 0));
        let mut b = Counts::default();
        b.add(&record(503, 1_000, 0));
        a.merge(&b);
        let summary = a.to_pb();
        assert_eq!(summary.requests, 4);
        assert_eq!(summary.successes, 2);
        assert_eq!(summary.client_errors, 1);
        assert_eq!(summary.server_errors, 1);
        assert_eq!(summary.input_tokens, 40);
        assert_eq!(summary.output_tokens, 80);
        assert_eq!(summary.success_rate, 0.5);
        assert_eq!(summary.latency_avg_ms, (100 + 110 + 5 + 1_000) / 4);
        // The median (rank 2 of 4) is 100 ms: within the bucket's width.
        let p50 = summary.latency_p50_ms;
        assert!((90..=115).contains(&p50), "p50 {p50}");
        assert_eq!(
            summary.errors,
            vec![pb::ErrorClassCount {
                error_class: pb::ErrorClass::RateLimited as i32,
                count: 1
            }]
        );
        use prost::Message;
        assert_eq!(Counts::decode(a.encode_to_vec().as_slice()).unwrap(), a);
    }

    #[test]
    fn records_update_one_bucket_per_group_and_tree() {
        let mut updates = BucketUpdates::default();
        updates.add(&record(200, 10, 0));
        updates.add(&record(200, 10, 0));
        updates.add(&record(429, 10, 1));
        // 4 kinds x 2 scopes.
        assert_eq!(updates.minutes.len(), 8);
        assert_eq!(updates.hours.len(), 8);
        let minute = 1_700_000_123_456 / MINUTE_MS;
        let requests_model = bucket_key(minute, Scope::Requests, GroupKind::Model, "via-oa");
        assert_eq!(updates.minutes[&requests_model].requests, 2);
        let attempts_model = bucket_key(minute, Scope::Attempts, GroupKind::Model, "gpt-4o-mini");
        assert_eq!(updates.minutes[&attempts_model].client_errors, 1);
    }

    #[test]
    fn windows_cover_whole_buckets() {
        // 2023-11-14 22:15:23.456 UTC.
        let now = 1_700_000_123_456;
        let plan = WindowPlan::new(pb::StatsWindow::LastHour, now);
        assert!(!plan.hourly);
        assert_eq!(plan.points(), 61);
        assert_eq!(plan.slots(), (now - HOUR_MS) / MINUTE_MS..=now / MINUTE_MS);
        assert_eq!(plan.point_of(now / MINUTE_MS), 60);
        assert!(plan.from_unix_ms() <= now - HOUR_MS);
        let plan = WindowPlan::new(pb::StatsWindow::LastMinute, now);
        assert_eq!(plan.points(), 2);
        let plan = WindowPlan::new(pb::StatsWindow::LastDay, now);
        assert!(plan.hourly);
        assert_eq!(plan.points(), 25);
        let plan = WindowPlan::new(pb::StatsWindow::Last30Days, now);
        assert_eq!(plan.points(), 31);
        assert_eq!(plan.point_ms, DAY_MS);
        // Day points read 24 hour slots each, from midnight UTC.
        let slots = plan.slots();
        assert_eq!(slots.start() % 24, 0);
        assert_eq!((slots.end() + 1) % 24, 0);
        assert_eq!(plan.point_of(*slots.end()), 30);
        assert_eq!(plan.point_of(*slots.start()), 0);
    }
}
