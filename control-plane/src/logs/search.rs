//! Record filters and `SearchLogs` pages: newest first over the time-keyed trees, or over
//! the error index for one key's errors.

use std::iter::Peekable;
use std::ops::Bound;

use fulcrum_proto::pb;
use prost::Message;

use super::keys::{self, RECORD_KEY_LEN, RecordKey};
use crate::error::Error;

/// Records returned when the caller names no limit, and the most one page holds.
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1_000;
/// Records one call examines at most, so that a rare match over millions of records
/// answers in bounded time (about 0.1 s) with a cursor to go on from.
pub const SCAN_BUDGET: usize = 100_000;

/// A validated `LogFilter`.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub provider: String,
    pub key_id: String,
    pub model: String,
    pub status: u32,
    pub status_class: Option<pb::StatusClass>,
    pub client_token: String,
    pub errors_only: bool,
    pub attempts: bool,
    /// Lowercased.
    pub text: String,
}

impl Filter {
    pub fn from_pb(filter: Option<pb::LogFilter>) -> Result<Self, Error> {
        let f = filter.unwrap_or_default();
        let status_class = match pb::StatusClass::try_from(f.status_class) {
            Ok(pb::StatusClass::Unspecified) => None,
            Ok(class) => Some(class),
            Err(_) => {
                return Err(Error::Invalid(format!(
                    "unknown status class {}",
                    f.status_class
                )));
            }
        };
        if f.status > 999 {
            return Err(Error::Invalid(format!(
                "invalid status {}: an HTTP status has three digits",
                f.status
            )));
        }
        Ok(Self {
            provider: f.provider.trim().to_string(),
            key_id: f.key_id.trim().to_ascii_lowercase(),
            model: f.model.trim().to_string(),
            status: f.status,
            status_class,
            client_token: f.client_token.trim().to_string(),
            errors_only: f.errors_only,
            attempts: f.attempts,
            text: f.text.to_ascii_lowercase(),
        })
    }

    pub fn matches(&self, r: &pb::RequestRecord) -> bool {
        if !self.attempts && r.attempt != 0 {
            return false;
        }
        if self.errors_only && r.error_class == 0 {
            return false;
        }
        if !self.provider.is_empty() && r.provider != self.provider {
            return false;
        }
        if !self.key_id.is_empty() && r.key_id != self.key_id {
            return false;
        }
        if !self.model.is_empty() && r.model_requested != self.model && r.model_served != self.model
        {
            return false;
        }
        if self.status != 0 {
            if r.status != self.status {
                return false;
            }
        } else if let Some(class) = self.status_class
            && status_class(r.status) != class
        {
            return false;
        }
        if !self.client_token.is_empty() && r.client_token != self.client_token {
            return false;
        }
        if !self.text.is_empty() {
            let found = [
                &r.request_id,
                &r.model_requested,
                &r.model_served,
                &r.route,
                &r.error_excerpt,
            ]
            .iter()
            .any(|field| contains_ignore_ascii_case(field, &self.text));
            if !found {
                return false;
            }
        }
        true
    }
}

pub fn status_class(status: u32) -> pb::StatusClass {
    match status {
        200..=299 => pb::StatusClass::Success,
        400..=499 => pb::StatusClass::ClientError,
        500..=599 => pb::StatusClass::ServerError,
        _ => pb::StatusClass::Other,
    }
}

/// Whether `haystack` contains `needle` (already lowercase), ignoring ASCII case.
fn contains_ignore_ascii_case(haystack: &str, needle: &str) -> bool {
    let (h, n) = (haystack.as_bytes(), needle.as_bytes());
    if n.len() > h.len() {
        return false;
    }
    h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

/// One `SearchLogs` call, validated.
#[derive(Debug, Clone)]
pub struct Query {
    pub filter: Filter,
    /// Inclusive.
    pub from_unix_ms: u64,
    /// Exclusive; `None` for no bound.
    pub to_unix_ms: Option<u64>,
    pub limit: usize,
    /// Only records strictly older (in key order) than this.
    pub cursor: Option<RecordKey>,
}

impl Query {
    pub fn from_pb(request: pb::SearchLogsRequest) -> Result<Self, Error> {
        let cursor = match request.cursor.trim() {
            "" => None,
            c => Some(keys::decode_cursor(c).ok_or_else(|| {
                Error::Invalid("invalid cursor: pass next_cursor back as it came".into())
            })?),
        };
        let from_unix_ms = keys::time_component(request.from_unix_ms);
        let to_unix_ms = (request.to_unix_ms > 0).then(|| keys::time_component(request.to_unix_ms));
        if let Some(to) = to_unix_ms
            && to <= from_unix_ms
        {
            return Err(Error::Invalid(format!(
                "invalid time range: to ({to}) must be after from ({from_unix_ms})"
            )));
        }
        let limit = match usize::try_from(request.limit).unwrap_or(MAX_LIMIT) {
            0 => DEFAULT_LIMIT,
            n => n.min(MAX_LIMIT),
        };
        Ok(Self {
            filter: Filter::from_pb(request.filter)?,
            from_unix_ms,
            to_unix_ms,
            limit,
            cursor,
        })
    }

    /// Whether the error index answers this query.
    pub fn uses_index(&self) -> bool {
        self.filter.errors_only && keys::index_prefix(&self.filter.key_id).is_some()
    }
}

/// One page of results.
#[derive(Debug, Default)]
pub struct Page {
    pub records: Vec<pb::RequestRecord>,
    pub next_cursor: Option<RecordKey>,
}

type Entry = Result<(sled::IVec, sled::IVec), sled::Error>;

/// Walks `trees` newest first (merging them by key), within the query's time range and
/// below its cursor.
pub fn scan(query: &Query, trees: &[&sled::Tree]) -> Result<Page, Error> {
    let lower = keys::time_bound(query.from_unix_ms).to_vec();
    let mut upper: Bound<Vec<u8>> = match query.to_unix_ms {
        Some(to) => Bound::Excluded(keys::time_bound(to).to_vec()),
        None => Bound::Unbounded,
    };
    if let Some(cursor) = &query.cursor {
        let below_cursor = match &upper {
            Bound::Excluded(to) => cursor.as_slice() < to.as_slice(),
            _ => true,
        };
        if below_cursor {
            upper = Bound::Excluded(cursor.to_vec());
        }
    }
    let mut iters: Vec<Peekable<_>> = trees
        .iter()
        .map(|tree| {
            tree.range::<Vec<u8>, _>((Bound::Included(lower.clone()), upper.clone()))
                .rev()
                .peekable()
        })
        .collect();
    let mut page = Page::default();
    let mut last_returned: Option<RecordKey> = None;
    let mut examined = 0usize;
    loop {
        // The newest head of all trees.
        let mut newest: Option<(usize, sled::IVec)> = None;
        for (i, iter) in iters.iter_mut().enumerate() {
            match iter.peek() {
                None => {}
                Some(Ok((key, _))) if newest.as_ref().is_none_or(|(_, other)| key > other) => {
                    newest = Some((i, key.clone()));
                }
                Some(Ok(_)) => {}
                // Surface the storage error.
                Some(Err(_)) => {
                    return Err(match iter.next() {
                        Some(Err(e)) => e.into(),
                        _ => Error::Internal("log scan lost a storage error".into()),
                    });
                }
            }
        }
        let Some((i, key)) = newest else {
            return Ok(page);
        };
        if page.records.len() == query.limit {
            // Something older exists: the next page starts below the last record here.
            page.next_cursor = last_returned;
            return Ok(page);
        }
        let (_, value) = next_entry(&mut iters[i])?;
        examined += 1;
        let record = decode_record(&value)?;
        if query.filter.matches(&record) {
            page.records.push(record);
            last_returned = record_key_of(&key);
        }
        if examined >= SCAN_BUDGET && page.records.len() < query.limit {
            page.next_cursor = record_key_of(&key);
            return Ok(page);
        }
    }
}

fn next_entry(iter: &mut impl Iterator<Item = Entry>) -> Result<(sled::IVec, sled::IVec), Error> {
    match iter.next() {
        Some(entry) => Ok(entry?),
        None => Err(Error::Internal("log scan head vanished".into())),
    }
}

/// Walks one key's error index newest first and fetches the records it points at.
pub fn scan_index(query: &Query, index: &sled::Tree, errors: &sled::Tree) -> Result<Page, Error> {
    let Some(prefix) = keys::index_prefix(&query.filter.key_id) else {
        return Ok(Page::default());
    };
    // The newest record allowed: just below `to`, or the cursor (exclusive).
    let mut start = prefix.clone();
    let mut skip: Option<Vec<u8>> = None;
    match (query.cursor, query.to_unix_ms) {
        (Some(cursor), to) if to.is_none_or(|to| keys::record_time(&cursor) < to) => {
            let at = keys::index_key(&query.filter.key_id, &cursor).unwrap_or_default();
            start = at.clone();
            skip = Some(at);
        }
        (_, Some(to)) => {
            let newest = keys::record_key(
                i64::try_from(to.saturating_sub(1)).unwrap_or(i64::MAX),
                u64::MAX,
                u64::MAX,
                u32::MAX,
            );
            start = keys::index_key(&query.filter.key_id, &newest).unwrap_or(start);
        }
        _ => {}
    }
    let mut page = Page::default();
    let mut examined = 0usize;
    for entry in index.range(start..) {
        let (index_key, _) = entry?;
        if !index_key.starts_with(&prefix) {
            break;
        }
        if skip.as_deref() == Some(&index_key[..]) {
            continue;
        }
        let Some(record_key) = keys::record_of_index(&index_key) else {
            continue;
        };
        if keys::record_time(&record_key) < query.from_unix_ms {
            break;
        }
        if page.records.len() == query.limit {
            return Ok(page);
        }
        examined += 1;
        // Retention may have taken the record before its index entry.
        let Some(value) = errors.get(record_key)? else {
            continue;
        };
        let record = decode_record(&value)?;
        if query.filter.matches(&record) {
            page.records.push(record);
            page.next_cursor = Some(record_key);
        }
        if examined >= SCAN_BUDGET && page.records.len() < query.limit {
            page.next_cursor = Some(record_key);
            return Ok(page);
        }
    }
    // Nothing older under this key.
    page.next_cursor = None;
    Ok(page)
}

fn record_key_of(key: &[u8]) -> Option<RecordKey> {
    <[u8; RECORD_KEY_LEN]>::try_from(key).ok()
}

pub fn decode_record(value: &[u8]) -> Result<pb::RequestRecord, Error> {
    pb::RequestRecord::decode(value).map_err(|e| Error::Corrupt {
        tree: "log records",
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> pb::RequestRecord {
        pb::RequestRecord {
            request_id: "req-ABC123".into(),
            provider: "oa".into(),
            key_id: "0123456789abcdef".into(),
            model_requested: "via-oa".into(),
            model_served: "gpt-4o-mini".into(),
            client_token: "app".into(),
            status: 429,
            error_class: pb::ErrorClass::RateLimited as i32,
            error_excerpt: "Rate limit exceeded".into(),
            ..Default::default()
        }
    }

    fn filter(f: pb::LogFilter) -> Filter {
        Filter::from_pb(Some(f)).unwrap()
    }

    #[test]
    fn filters_match_every_field_given() {
        let r = record();
        assert!(filter(pb::LogFilter::default()).matches(&r));
        assert!(
            filter(pb::LogFilter {
                model: "gpt-4o-mini".into(),
                status: 429,
                provider: "oa".into(),
                client_token: "app".into(),
                errors_only: true,
                ..Default::default()
            })
            .matches(&r)
        );
        assert!(
            filter(pb::LogFilter {
                model: "via-oa".into(),
                status_class: pb::StatusClass::ClientError as i32,
                key_id: "0123456789ABCDEF".into(),
                ..Default::default()
            })
            .matches(&r)
        );
        assert!(
            !filter(pb::LogFilter {
                status_class: pb::StatusClass::ServerError as i32,
                ..Default::default()
            })
            .matches(&r)
        );
        assert!(
            filter(pb::LogFilter {
                text: "LIMIT exc".into(),
                ..Default::default()
            })
            .matches(&r)
        );
        assert!(
            filter(pb::LogFilter {
                text: "abc1".into(),
                ..Default::default()
            })
            .matches(&r)
        );
        assert!(
            !filter(pb::LogFilter {
                text: "nothing".into(),
                ..Default::default()
            })
            .matches(&r)
        );
        let attempt = pb::RequestRecord {
            attempt: 2,
            ..record()
        };
        assert!(!filter(pb::LogFilter::default()).matches(&attempt));
        assert!(
            filter(pb::LogFilter {
                attempts: true,
                ..Default::default()
            })
            .matches(&attempt)
        );
        let ok = pb::RequestRecord {
            status: 200,
            error_class: 0,
            ..record()
        };
        assert!(
            !filter(pb::LogFilter {
                errors_only: true,
                ..Default::default()
            })
            .matches(&ok)
        );
    }

    #[test]
    fn queries_are_checked() {
        let q = Query::from_pb(pb::SearchLogsRequest::default()).unwrap();
        assert_eq!(q.limit, DEFAULT_LIMIT);
        assert_eq!(q.to_unix_ms, None);
        let q = Query::from_pb(pb::SearchLogsRequest {
            limit: 5_000,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(q.limit, MAX_LIMIT);
        assert!(
            Query::from_pb(pb::SearchLogsRequest {
                cursor: "nope".into(),
                ..Default::default()
            })
            .is_err()
        );
        assert!(
            Query::from_pb(pb::SearchLogsRequest {
                from_unix_ms: 10,
                to_unix_ms: 5,
                ..Default::default()
            })
            .is_err()
        );
        assert!(
            Filter::from_pb(Some(pb::LogFilter {
                status_class: 42,
                ..Default::default()
            }))
            .is_err()
        );
    }
}
