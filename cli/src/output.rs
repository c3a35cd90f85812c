//! How answers are shown: aligned tables for people, one JSON document for scripts.
//!
//! JSON is built from the wire messages with enum fields as lowercase names (`openai`,
//! `active`) and timestamps as unix milliseconds, so that scripts do not depend on the
//! table layout.

use std::io::{self, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fulcrum_proto::model::{ClientProtocol, KeyState, ProviderType, RouteStrategy};
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

/// A timestamp as `2025-01-02 15:04:05.123` (UTC); `-` when unset (0).
pub fn utc_time(unix_ms: i64) -> String {
    if unix_ms <= 0 {
        return "-".to_string();
    }
    let secs = unix_ms.div_euclid(1_000);
    let millis = unix_ms.rem_euclid(1_000);
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let of_day = secs.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{millis:03}",
        of_day / 3_600,
        (of_day % 3_600) / 60,
        of_day % 60
    )
}

/// The (year, month, day) of a day count since 1970-01-01 (proleptic Gregorian; Howard
/// Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The day count since 1970-01-01 of a date; the inverse of [`civil_from_days`].
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let month = i64::from(month);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Values as a line of block characters, scaled to the largest.
pub fn sparkline(values: &[u64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = values.iter().copied().max().unwrap_or(0);
    values
        .iter()
        .map(|v| {
            if *v == 0 || max == 0 {
                ' '
            } else {
                let level = (v.saturating_mul(8)).div_ceil(max).saturating_sub(1);
                BARS[usize::try_from(level).unwrap_or(7).min(7)]
            }
        })
        .collect()
}

/// Milliseconds as `850ms` or `12.3s`.
pub fn millis(ms: u32) -> String {
    if ms < 10_000 {
        format!("{ms}ms")
    } else {
        format!("{:.1}s", f64::from(ms) / 1_000.0)
    }
}

// === enum names ===

pub fn error_class_name(value: i32) -> &'static str {
    match pb::ErrorClass::try_from(value) {
        Ok(pb::ErrorClass::Unspecified) => "",
        Ok(pb::ErrorClass::Client) => "client",
        Ok(pb::ErrorClass::RateLimited) => "rate_limited",
        Ok(pb::ErrorClass::Unauthorized) => "unauthorized",
        Ok(pb::ErrorClass::Upstream) => "upstream",
        Ok(pb::ErrorClass::Network) => "network",
        Ok(pb::ErrorClass::Timeout) => "timeout",
        Ok(pb::ErrorClass::NoCandidate) => "no_candidate",
        Ok(pb::ErrorClass::Translation) => "translation",
        Ok(pb::ErrorClass::StreamCut) => "stream_cut",
        Ok(pb::ErrorClass::Auth) => "auth",
        Err(_) => "unknown",
    }
}

pub fn protocol_name(value: i32) -> &'static str {
    ClientProtocol::from_pb(value).map_or("unknown", ClientProtocol::as_str)
}

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
        "proxies": p.proxies,
        "headers": p.headers.iter().map(|h| json!({ "name": h.name, "value": h.value })).collect::<Vec<_>>(),
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
        "proxy": k.proxy,
        "exhausted_models": k.exhausted_models.iter().map(|m| json!({
            "model": m.model,
            "until_unix_ms": m.until_unix_ms,
            "reason": m.reason,
        })).collect::<Vec<_>>(),
        "next_probe_unix_ms": k.next_probe_unix_ms,
        "last_success_unix_ms": k.last_success_unix_ms,
        "failures": k.failures,
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

/// A record for scripts; the request body (only kept when `log_request_bodies` is on) as
/// text, lossily.
pub fn record_json(r: &pb::RequestRecord) -> Value {
    let mut value = json!({
        "at_unix_ms": r.at_unix_ms,
        "request_id": r.request_id,
        "node": r.node,
        "client_token": r.client_token,
        "client_protocol": protocol_name(r.client_protocol),
        "operation": r.operation,
        "route": r.route,
        "model_requested": r.model_requested,
        "model_served": r.model_served,
        "provider": r.provider,
        "key_id": r.key_id,
        "status": r.status,
        "latency_ms": r.latency_ms,
        "ttfb_ms": r.ttfb_ms,
        "input_tokens": r.input_tokens,
        "output_tokens": r.output_tokens,
        "attempt": r.attempt,
        "error_class": error_class_name(r.error_class),
        "stream": r.stream,
        "error_excerpt": r.error_excerpt,
    });
    if !r.request_body.is_empty() {
        value["request_body"] = json!(String::from_utf8_lossy(&r.request_body));
    }
    value
}

pub fn stats_counts_json(c: &pb::StatsCounts) -> Value {
    let errors: serde_json::Map<String, Value> = c
        .errors
        .iter()
        .map(|e| (error_class_name(e.error_class).to_string(), json!(e.count)))
        .collect();
    json!({
        "requests": c.requests,
        "successes": c.successes,
        "client_errors": c.client_errors,
        "server_errors": c.server_errors,
        "other_status": c.other_status,
        "errors": errors,
        "input_tokens": c.input_tokens,
        "output_tokens": c.output_tokens,
        "success_rate": c.success_rate,
        "latency_avg_ms": c.latency_avg_ms,
        "latency_p50_ms": c.latency_p50_ms,
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
    fn times_read_as_utc() {
        assert_eq!(utc_time(0), "-");
        assert_eq!(utc_time(1_700_000_123_456), "2023-11-14 22:15:23.456");
        assert_eq!(utc_time(951_782_400_000), "2000-02-29 00:00:00.000");
        for days in [-1_000, 0, 11_016, 19_000, 60_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(sparkline(&[0, 1, 7, 14]), " ▁▄█");
        assert_eq!(millis(850), "850ms");
        assert_eq!(millis(12_345), "12.3s");
    }

    #[test]
    fn enum_names_are_lowercase() {
        assert_eq!(
            error_class_name(pb::ErrorClass::RateLimited as i32),
            "rate_limited"
        );
        assert_eq!(error_class_name(0), "");
        assert_eq!(protocol_name(pb::ClientProtocol::Gemini as i32), "gemini");
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
