//! How answers are shown: aligned tables for people, one JSON document for scripts.
//!
//! JSON is built from the wire messages with enum fields as lowercase names (`openai`,
//! `active`) and timestamps as unix milliseconds, so that scripts do not depend on the
//! table layout.

use std::io::{self, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fulcrum_proto::model::{KeyState, ProviderType, RouteStrategy};
use fulcrum_proto::pb;
use serde_json::{Value, json};

/// `-o table|json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

// === printing ===

/// Writes to stdout. A closed pipe (`fulcrumctl keys list | head`) is not an error.
pub fn print(text: &str) -> anyhow::Result<()> {
    let mut stdout = io::stdout().lock();
    let result = stdout.write_all(text.as_bytes()).and_then(|()| {
        if text.ends_with('\n') || text.is_empty() {
            Ok(())
        } else {
            stdout.write_all(b"\n")
        }
    });
    match result.and_then(|()| stdout.flush()) {
        Err(err) if err.kind() != io::ErrorKind::BrokenPipe => Err(err.into()),
        _ => Ok(()),
    }
}

/// Writes exactly one JSON document to stdout.
pub fn print_json(value: &Value) -> anyhow::Result<()> {
    print(&serde_json::to_string_pretty(value)?)
}

/// A note for people (hints, warnings): stderr, so that stdout stays parseable.
pub fn note(text: &str) {
    let _ = writeln!(io::stderr().lock(), "{text}");
}

// === impl Table ===

/// Columns aligned with two spaces between them; the last column is not padded.
#[derive(Debug)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<const N: usize>(header: [&str; N]) -> Self {
        Self {
            header: header.iter().map(|h| (*h).to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; cells are cleaned of line breaks and control characters so that a
    /// message from the server cannot break the layout.
    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(
            cells.len(),
            self.header.len(),
            "row width must match the header"
        );
        self.rows
            .push(cells.iter().map(|c| clean_cell(c)).collect());
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate().take(columns) {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                if i + 1 < columns {
                    let pad = widths[i] - cell.chars().count();
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `name: value` lines with the values aligned, for one resource.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (key, value) in pairs {
        let pad = width - key.chars().count();
        out.push_str(key);
        out.push(':');
        out.extend(std::iter::repeat_n(' ', pad + 1));
        out.push_str(&clean_cell(value));
        out.push('\n');
    }
    out
}

fn clean_cell(cell: &str) -> String {
    cell.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// `-` for empty cells, so that columns stay readable.
pub fn or_dash(value: &str) -> String {
    if value.is_empty() {
        "-".to_string()
    } else {
        value.to_string()
    }
}

// === time ===

pub fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A duration the way people read it: `45s`, `3m12s`, `2h5m`, `4d3h`.
pub fn human_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3_599 => format!("{}m{}s", secs / 60, secs % 60),
        3_600..=86_399 => format!("{}h{}m", secs / 3_600, (secs % 3_600) / 60),
        _ => format!("{}d{}h", secs / 86_400, (secs % 86_400) / 3_600),
    }
}

/// `12s ago` for a past timestamp; `-` when unset (0).
pub fn ago(unix_ms: i64, now_ms: i64) -> String {
    if unix_ms <= 0 {
        return "-".to_string();
    }
    let delta = u64::try_from(now_ms.saturating_sub(unix_ms)).unwrap_or(0);
    format!("{} ago", human_duration(Duration::from_millis(delta)))
}

/// `in 4m10s` for a future timestamp, `passed` once it is over; `-` when unset (0).
pub fn until(unix_ms: i64, now_ms: i64) -> String {
    if unix_ms <= 0 {
        return "-".to_string();
    }
    match u64::try_from(unix_ms.saturating_sub(now_ms)) {
        Ok(delta) if delta > 0 => format!("in {}", human_duration(Duration::from_millis(delta))),
        _ => "passed".to_string(),
    }
}

// === enum names ===

pub fn provider_type_name(value: i32) -> &'static str {
    ProviderType::from_pb(value).map_or("unspecified", ProviderType::as_str)
}

pub fn key_state_name(value: i32) -> &'static str {
    KeyState::from_pb(value).map_or("unspecified", KeyState::as_str)
}

pub fn route_strategy_name(value: i32) -> &'static str {
    RouteStrategy::from_pb(value).map_or("unknown", RouteStrategy::as_str)
}

/// `off`, or the sticky time as people read it.
pub fn sticky(secs: u32) -> String {
    if secs == 0 {
        "off".to_string()
    } else {
        human_duration(Duration::from_secs(u64::from(secs)))
    }
}

/// `IN,OUT` in USD per million tokens, `-` when both are unknown (0).
pub fn prices(input: f64, output: f64) -> String {
    if input == 0.0 && output == 0.0 {
        "-".to_string()
    } else {
        format!("{input},{output}")
    }
}

pub fn add_key_outcome_name(value: i32) -> &'static str {
    match pb::AddKeyOutcome::try_from(value) {
        Ok(pb::AddKeyOutcome::Added) => "added",
        Ok(pb::AddKeyOutcome::Duplicate) => "duplicate",
        Ok(pb::AddKeyOutcome::Invalid) => "invalid",
        Ok(pb::AddKeyOutcome::Skipped) => "skipped",
        Ok(pb::AddKeyOutcome::Unspecified) | Err(_) => "unspecified",
    }
}

// === JSON of wire messages ===

pub fn provider_json(p: &pb::Provider) -> Value {
    json!({
        "name": p.name,
        "type": provider_type_name(p.r#type),
        "base_url": p.base_url,
        "priority": p.priority,
        "weight": p.weight,
        "created_unix_ms": p.created_unix_ms,
        "updated_unix_ms": p.updated_unix_ms,
    })
}

/// Never carries the secret, even if a server sent one.
pub fn key_json(k: &pb::ProviderKey) -> Value {
    json!({
        "id": k.id,
        "provider": k.provider,
        "masked": k.masked,
        "state": key_state_name(k.state),
        "state_reason": k.state_reason,
        "state_until_unix_ms": k.state_until_unix_ms,
        "added_unix_ms": k.added_unix_ms,
        "state_changed_unix_ms": k.state_changed_unix_ms,
    })
}

/// Every state with its count, zero when the server left it out, in state order.
pub fn key_counts(counts: &[pb::KeyStateCount]) -> Vec<(KeyState, u64)> {
    KeyState::ALL
        .iter()
        .map(|state| {
            let count = counts
                .iter()
                .filter(|c| KeyState::from_pb(c.state) == Some(*state))
                .map(|c| c.count)
                .sum();
            (*state, count)
        })
        .collect()
}

pub fn key_counts_json(counts: &[pb::KeyStateCount]) -> Value {
    let map: serde_json::Map<String, Value> = key_counts(counts)
        .into_iter()
        .map(|(state, count)| (state.as_str().to_string(), json!(count)))
        .collect();
    Value::Object(map)
}

/// `active 3, cooling 1, ...` without the zeros; `none` if there are no keys.
pub fn key_counts_line(counts: &[pb::KeyStateCount]) -> String {
    let parts: Vec<String> = key_counts(counts)
        .into_iter()
        .filter(|(_, count)| *count > 0)
        .map(|(state, count)| format!("{state} {count}"))
        .collect();
    if parts.is_empty() {
        "none".to_string()
    } else {
        parts.join(", ")
    }
}

pub fn route_json(r: &pb::Route) -> Value {
    let targets: Vec<Value> = r
        .targets
        .iter()
        .map(|t| {
            json!({
                "provider": t.provider,
                "model": t.model,
                "priority": t.priority,
                "weight": t.weight,
                "input_usd_per_million_tokens": t.input_usd_per_million_tokens,
                "output_usd_per_million_tokens": t.output_usd_per_million_tokens,
            })
        })
        .collect();
    json!({
        "model_pattern": r.model_pattern,
        "strategy": route_strategy_name(r.strategy),
        "sticky_secs": r.sticky_secs,
        "targets": targets,
        "updated_unix_ms": r.updated_unix_ms,
    })
}

/// A target in the syntax `routes set --target` accepts: `PROVIDER[:MODEL]@PRIORITY*WEIGHT`.
pub fn target_spec(t: &pb::RouteTarget) -> String {
    let mut out = t.provider.clone();
    if !t.model.is_empty() {
        out.push(':');
        out.push_str(&t.model);
    }
    out.push_str(&format!("@{}*{}", t.priority, t.weight));
    out
}

pub fn client_token_json(t: &pb::ClientToken) -> Value {
    json!({
        "name": t.name,
        "prefix": t.prefix,
        "created_unix_ms": t.created_unix_ms,
    })
}

pub fn setting_json(s: &pb::SettingInfo) -> Value {
    json!({
        "name": s.name,
        "value": s.value,
        "default_value": s.default_value,
        "description": s.description,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_and_trims_the_last() {
        let mut table = Table::new(["ID", "NAME", "NOTE"]);
        table.row(vec!["1".into(), "alpha".into(), "".into()]);
        table.row(vec!["100".into(), "b".into(), "line\nbreak".into()]);
        assert_eq!(
            table.render(),
            "ID   NAME   NOTE\n\
             1    alpha\n\
             100  b      line break\n"
        );
    }

    #[test]
    fn table_counts_characters_not_bytes() {
        let mut table = Table::new(["A", "B"]);
        table.row(vec!["é".into(), "x".into()]);
        table.row(vec!["ab".into(), "y".into()]);
        assert_eq!(table.render(), "A   B\né   x\nab  y\n");
    }

    #[test]
    fn fields_align_values() {
        assert_eq!(
            fields(&[("name", "p1".into()), ("base url", "http://x".into())]),
            "name:     p1\nbase url: http://x\n"
        );
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(Duration::from_secs(5)), "5s");
        assert_eq!(human_duration(Duration::from_secs(192)), "3m12s");
        assert_eq!(human_duration(Duration::from_secs(7_500)), "2h5m");
        assert_eq!(
            human_duration(Duration::from_secs(3 * 86_400 + 7_200)),
            "3d2h"
        );
        assert_eq!(ago(0, 10_000), "-");
        assert_eq!(ago(4_000, 10_000), "6s ago");
        assert_eq!(until(70_000, 10_000), "in 1m0s");
        assert_eq!(until(5_000, 10_000), "passed");
    }

    #[test]
    fn key_counts_fill_missing_states() {
        let counts = vec![pb::KeyStateCount {
            state: pb::KeyState::Cooling as i32,
            count: 2,
        }];
        assert_eq!(key_counts_line(&counts), "cooling 2");
        assert_eq!(key_counts_json(&counts)["active"], 0);
        assert_eq!(key_counts_line(&[]), "none");
    }

    #[test]
    fn enum_names_are_lowercase() {
        assert_eq!(
            provider_type_name(pb::ProviderType::Openai as i32),
            "openai"
        );
        assert_eq!(key_state_name(pb::KeyState::Active as i32), "active");
        assert_eq!(
            add_key_outcome_name(pb::AddKeyOutcome::Duplicate as i32),
            "duplicate"
        );
        assert_eq!(provider_type_name(99), "unspecified");
        assert_eq!(route_strategy_name(0), "priority");
        assert_eq!(
            route_strategy_name(pb::RouteStrategy::LeastInFlight as i32),
            "least-in-flight"
        );
        assert_eq!(sticky(0), "off");
        assert_eq!(sticky(600), "10m0s");
        assert_eq!(prices(0.0, 0.0), "-");
        assert_eq!(prices(2.5, 10.0), "2.5,10");
    }
}
