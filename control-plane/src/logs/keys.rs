//! Byte layouts of the log trees' keys.
//!
//! - Record (`log_requests`, `log_errors`): `[at_unix_ms u64 BE][instance hash u64 BE]
//!   [sequence u64 BE][index u32 BE]`, 28 bytes. Time first, so that a time range is a key
//!   range: retention deletes from the start of the tree, searches walk it backwards. The
//!   rest makes the key unique and says which batch the record came in.
//! - Error index (`log_errors_by_key`): `[key id length u8][key id][record key with every
//!   bit flipped]`. Flipping makes ascending index order the newest-first order of the
//!   records, and the record key is read back from the index key, so the value is empty.
//! - Stats bucket (`log_stats_minute`, `log_stats_hour`): `[slot u64 BE][scope u8][kind u8]
//!   [group value]`, where the slot is the minute (or hour) since the epoch. One slot's
//!   groups of one kind are one prefix.

use sha2::{Digest, Sha256};

/// Length of a record key.
pub const RECORD_KEY_LEN: usize = 28;

/// A record's key in `log_requests` or `log_errors`.
pub type RecordKey = [u8; RECORD_KEY_LEN];

/// Identifies a data-plane instance in record keys: the first 8 bytes of the SHA-256 of
/// its instance id (stable across control-plane restarts, unlike std's hasher).
pub fn instance_hash(instance_id: &str) -> u64 {
    let digest = Sha256::digest(instance_id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// A record time as a key component: negative times (a broken clock) sort first.
pub fn time_component(at_unix_ms: i64) -> u64 {
    u64::try_from(at_unix_ms).unwrap_or(0)
}

pub fn record_key(at_unix_ms: i64, instance: u64, sequence: u64, index: u32) -> RecordKey {
    let mut key = [0u8; RECORD_KEY_LEN];
    key[..8].copy_from_slice(&time_component(at_unix_ms).to_be_bytes());
    key[8..16].copy_from_slice(&instance.to_be_bytes());
    key[16..24].copy_from_slice(&sequence.to_be_bytes());
    key[24..].copy_from_slice(&index.to_be_bytes());
    key
}

/// The first key of records at or after `at_unix_ms` (a time bound as a key bound).
pub fn time_bound(at_unix_ms: u64) -> [u8; 8] {
    at_unix_ms.to_be_bytes()
}

/// The time part of a record key.
pub fn record_time(key: &[u8]) -> u64 {
    let mut at = [0u8; 8];
    if let Some(prefix) = key.get(..8) {
        at.copy_from_slice(prefix);
    }
    u64::from_be_bytes(at)
}

/// Key ids longer than this are not indexed (real ones are 16 characters).
pub const MAX_INDEXED_KEY_ID: usize = 255;

/// `[len][key id]`: every index entry of one key starts with it. `None` when the key id is
/// empty or too long to index.
pub fn index_prefix(key_id: &str) -> Option<Vec<u8>> {
    let len = u8::try_from(key_id.len()).ok().filter(|len| *len > 0)?;
    let mut prefix = Vec::with_capacity(1 + key_id.len() + RECORD_KEY_LEN);
    prefix.push(len);
    prefix.extend_from_slice(key_id.as_bytes());
    Some(prefix)
}

/// The index entry of an error record of `key_id`.
pub fn index_key(key_id: &str, record: &RecordKey) -> Option<Vec<u8>> {
    let mut key = index_prefix(key_id)?;
    key.extend(record.iter().map(|b| !b));
    Some(key)
}

/// The record key an index entry points at.
pub fn record_of_index(index: &[u8]) -> Option<RecordKey> {
    let tail = index.len().checked_sub(RECORD_KEY_LEN)?;
    let mut record = [0u8; RECORD_KEY_LEN];
    for (out, b) in record.iter_mut().zip(&index[tail..]) {
        *out = !b;
    }
    Some(record)
}

/// Whose counters a stats bucket holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Client requests: records with `attempt` 0.
    Requests = 0,
    /// Upstream attempts: records with `attempt` >= 1.
    Attempts = 1,
}

/// What a stats bucket is grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupKind {
    /// Every record; the group value is empty.
    All = 0,
    Provider = 1,
    Model = 2,
    Key = 3,
}

impl GroupKind {
    pub const ALL: [GroupKind; 4] = [
        GroupKind::All,
        GroupKind::Provider,
        GroupKind::Model,
        GroupKind::Key,
    ];
}

/// `[slot][scope][kind]`: every group of one kind in one bucket.
pub fn bucket_prefix(slot: u64, scope: Scope, kind: GroupKind) -> [u8; 10] {
    let mut prefix = [0u8; 10];
    prefix[..8].copy_from_slice(&slot.to_be_bytes());
    prefix[8] = scope as u8;
    prefix[9] = kind as u8;
    prefix
}

pub fn bucket_key(slot: u64, scope: Scope, kind: GroupKind, value: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(10 + value.len());
    key.extend_from_slice(&bucket_prefix(slot, scope, kind));
    key.extend_from_slice(value.as_bytes());
    key
}

/// The group value of a bucket key (lossy for values that were not UTF-8, which the
/// ingestion never writes).
pub fn bucket_value(key: &[u8]) -> String {
    String::from_utf8_lossy(key.get(10..).unwrap_or_default()).into_owned()
}

/// The slot of a bucket key.
pub fn bucket_slot(key: &[u8]) -> u64 {
    record_time(key)
}

/// Cursors are the last record key a page covered, in hex.
pub fn encode_cursor(key: &RecordKey) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn decode_cursor(cursor: &str) -> Option<RecordKey> {
    if cursor.len() != RECORD_KEY_LEN * 2 || !cursor.is_ascii() {
        return None;
    }
    let mut key = [0u8; RECORD_KEY_LEN];
    for (i, out) in key.iter_mut().enumerate() {
        *out = u8::from_str_radix(&cursor[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_keys_sort_by_time_then_batch() {
        let a = record_key(1_000, 7, 1, 5);
        let b = record_key(1_000, 7, 2, 0);
        let c = record_key(1_001, 0, 0, 0);
        assert!(a < b && b < c);
        assert_eq!(record_time(&c), 1_001);
        assert!(record_key(-5, 0, 0, 0) < record_key(0, 0, 0, 1));
        assert!(c[..8] >= time_bound(1_001)[..] && a[..8] < time_bound(1_001)[..]);
    }

    #[test]
    fn index_order_is_newest_first_and_points_back() {
        let older = record_key(1_000, 1, 1, 0);
        let newer = record_key(2_000, 1, 2, 0);
        let same_ms_later = record_key(2_000, 1, 2, 1);
        let i_old = index_key("0123456789abcdef", &older).unwrap();
        let i_new = index_key("0123456789abcdef", &newer).unwrap();
        let i_later = index_key("0123456789abcdef", &same_ms_later).unwrap();
        assert!(i_later < i_new && i_new < i_old);
        assert_eq!(record_of_index(&i_new), Some(newer));
        let prefix = index_prefix("0123456789abcdef").unwrap();
        assert!(i_old.starts_with(&prefix));
        // A longer key id sharing the characters is not under the shorter one's prefix.
        assert!(
            !index_key("0123456789abcdef0", &older)
                .unwrap()
                .starts_with(&prefix)
        );
        assert_eq!(index_prefix(""), None);
        assert_eq!(index_prefix(&"x".repeat(256)), None);
    }

    #[test]
    fn buckets_group_by_slot_scope_and_kind() {
        let key = bucket_key(29_000_000, Scope::Attempts, GroupKind::Model, "gpt-4o");
        assert!(key.starts_with(&bucket_prefix(
            29_000_000,
            Scope::Attempts,
            GroupKind::Model
        )));
        assert_eq!(bucket_value(&key), "gpt-4o");
        assert_eq!(bucket_slot(&key), 29_000_000);
        assert!(bucket_key(1, Scope::Requests, GroupKind::Key, "") < key);
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let key = record_key(1_700_000_000_000, instance_hash("i-1"), 42, 7);
        assert_eq!(decode_cursor(&encode_cursor(&key)), Some(key));
        assert_eq!(decode_cursor("zz"), None);
        assert_eq!(decode_cursor(&"g".repeat(56)), None);
        assert_ne!(instance_hash("i-1"), instance_hash("i-2"));
    }
}
