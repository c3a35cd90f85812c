//! `fulcrumctl logs search|tail`

use std::time::Duration;

use clap::{Args, Subcommand};
use fulcrum_proto::pb;
use serde_json::{Value, json};

use super::keys::parse_key_id;
use super::parse_provider_name;
use crate::client::LogClient;
use crate::output::{self, Format, Table};

/// What `logs search` shows without `--limit`.
const DEFAULT_LIMIT: usize = 100;
/// The most the control plane returns per call.
const PAGE_SIZE: usize = 1_000;

#[derive(Debug, Subcommand)]
pub enum LogsCommand {
    /// Stored request and error records, newest first.
    ///
    /// Only client requests by default; `--attempts` adds each upstream attempt.
    Search(SearchArgs),
    /// Records as the control plane stores them, until Ctrl-C (`-o json`: one JSON object a
    /// line).
    Tail(TailArgs),
}

/// Filters shared by `search` and `tail`.
#[derive(Debug, Clone, Args)]
pub struct FilterArgs {
    #[arg(long, value_parser = parse_provider_name)]
    provider: Option<String>,
    /// Key id (see `keys list`).
    #[arg(long, value_parser = parse_key_id)]
    key: Option<String>,
    /// The model asked for or served.
    #[arg(long)]
    model: Option<String>,
    /// A status (429) or a class: 2xx, 4xx, 5xx.
    #[arg(long, value_parser = parse_status)]
    status: Option<StatusFilter>,
    /// The client token's name.
    #[arg(long, value_name = "NAME")]
    client_token: Option<String>,
    /// Only records with an error class.
    #[arg(long)]
    errors: bool,
    /// Also each upstream attempt, not only what the client got.
    #[arg(long)]
    attempts: bool,
    /// A substring (any case) of the request id, the models, the route or the error excerpt.
    #[arg(long)]
    text: Option<String>,
}

#[derive(Debug, Args)]
pub struct SearchArgs {
    #[command(flatten)]
    filter: FilterArgs,
    /// How many records to show.
    #[arg(long, default_value_t = DEFAULT_LIMIT, value_parser = parse_limit)]
    limit: usize,
    /// Only records from this long ago on: 30s, 15m, 2h, 7d, 1h30m.
    #[arg(long, value_parser = parse_duration, conflicts_with_all = ["from", "to"])]
    since: Option<Duration>,
    /// Records from this time on: unix milliseconds, or a UTC date and time
    /// (2025-01-31, 2025-01-31T14:00, 2025-01-31T14:00:05Z).
    #[arg(long, value_parser = parse_time)]
    from: Option<i64>,
    /// Records before this time (same forms as --from).
    #[arg(long, value_parser = parse_time)]
    to: Option<i64>,
    /// Where to go on from: the cursor a previous search printed.
    #[arg(long)]
    cursor: Option<String>,
}

#[derive(Debug, Args)]
pub struct TailArgs {
    #[command(flatten)]
    filter: FilterArgs,
}

/// `--status`: one status or a class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    Exact(u32),
    Class(pb::StatusClass),
}

impl FilterArgs {
    fn to_pb(&self) -> pb::LogFilter {
        let (status, status_class) = match self.status {
            Some(StatusFilter::Exact(status)) => (status, pb::StatusClass::Unspecified),
            Some(StatusFilter::Class(class)) => (0, class),
            None => (0, pb::StatusClass::Unspecified),
        };
        pb::LogFilter {
            provider: self.provider.clone().unwrap_or_default(),
            key_id: self.key.clone().unwrap_or_default(),
            model: self.model.clone().unwrap_or_default(),
            status,
            status_class: status_class as i32,
            client_token: self.client_token.clone().unwrap_or_default(),
            errors_only: self.errors,
            attempts: self.attempts,
            text: self.text.clone().unwrap_or_default(),
        }
    }
}

pub async fn run(cmd: &LogsCommand, client: &mut LogClient, format: Format) -> anyhow::Result<()> {
    match cmd {
        LogsCommand::Search(args) => search(args, client, format).await,
        LogsCommand::Tail(args) => tail(args, client, format).await,
    }
}

// === search ===

async fn search(args: &SearchArgs, client: &mut LogClient, format: Format) -> anyhow::Result<()> {
    let (from, to) = match args.since {
        Some(since) => (
            output::now_unix_ms() - i64::try_from(since.as_millis()).unwrap_or(i64::MAX),
            0,
        ),
        None => (args.from.unwrap_or(0), args.to.unwrap_or(0)),
    };
    let filter = args.filter.to_pb();
    let mut records: Vec<pb::RequestRecord> = Vec::new();
    let mut cursor = args.cursor.clone().unwrap_or_default();
    // A page may come back short with a cursor (the control plane bounds the work of one
    // call), so ask until the limit is reached or nothing older is left.
    loop {
        let wanted = args.limit - records.len();
        let request = pb::SearchLogsRequest {
            filter: Some(filter.clone()),
            from_unix_ms: from,
            to_unix_ms: to,
            limit: u32::try_from(wanted.min(PAGE_SIZE)).unwrap_or(1_000),
            cursor: cursor.clone(),
        };
        let page = client.search_logs(request).await?.into_inner();
        records.extend(page.records);
        cursor = page.next_cursor;
        if cursor.is_empty() || records.len() >= args.limit {
            break;
        }
    }

    if format == Format::Json {
        let records: Vec<Value> = records.iter().map(output::record_json).collect();
        return output::print_json(&json!({ "records": records, "next_cursor": cursor }));
    }
    if records.is_empty() {
        output::note("no records");
    } else {
        output::print(&records_table(&records).render())?;
    }
    if !cursor.is_empty() {
        output::note(&format!("more records: --cursor {cursor}"));
    }
    Ok(())
}

const COLUMNS: [&str; 14] = [
    "TIME",
    "REQUEST ID",
    "NODE",
    "TOKEN",
    "PROTOCOL",
    "MODEL",
    "PROVIDER",
    "KEY",
    "STATUS",
    "LATENCY",
    "TTFB",
    "TOKENS IN/OUT",
    "ATTEMPT",
    "ERROR",
];

fn records_table(records: &[pb::RequestRecord]) -> Table {
    let mut table = Table::new(COLUMNS);
    for r in records {
        table.row(record_cells(r));
    }
    table
}

fn record_cells(r: &pb::RequestRecord) -> Vec<String> {
    let model = if r.model_served.is_empty() || r.model_served == r.model_requested {
        output::or_dash(&r.model_requested)
    } else {
        format!(
            "{}->{}",
            output::or_dash(&r.model_requested),
            r.model_served
        )
    };
    let status = if r.status == 0 {
        "-".to_string()
    } else {
        r.status.to_string()
    };
    let ttfb = if r.ttfb_ms == 0 {
        "-".to_string()
    } else {
        output::millis(r.ttfb_ms)
    };
    vec![
        output::utc_time(r.at_unix_ms),
        output::or_dash(&r.request_id),
        output::or_dash(&r.node),
        output::or_dash(&r.client_token),
        output::protocol_name(r.client_protocol).to_string(),
        model,
        output::or_dash(&r.provider),
        output::or_dash(&r.key_id),
        status,
        output::millis(r.latency_ms),
        ttfb,
        format!("{}/{}", r.input_tokens, r.output_tokens),
        r.attempt.to_string(),
        output::or_dash(output::error_class_name(r.error_class)),
    ]
}

// === tail ===

async fn tail(args: &TailArgs, client: &mut LogClient, format: Format) -> anyhow::Result<()> {
    let request = pb::TailLogsRequest {
        filter: Some(args.filter.to_pb()),
    };
    let mut stream = client.tail_logs(request).await?.into_inner();
    if format == Format::Table {
        output::note(&format!("{}  (until Ctrl-C)", COLUMNS.join("  ")));
    }
    loop {
        let message = tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            message = stream.message() => message?,
        };
        let Some(message) = message else {
            output::note("the control plane ended the tail");
            return Ok(());
        };
        if message.missed_records > 0 {
            output::note(&format!(
                "missed {} records: this tail fell behind",
                message.missed_records
            ));
        }
        let mut text = String::new();
        for record in &message.records {
            match format {
                Format::Json => text.push_str(&output::record_json(record).to_string()),
                Format::Table => text.push_str(&record_cells(record).join("  ")),
            }
            text.push('\n');
        }
        if !text.is_empty() {
            output::print(&text)?;
        }
    }
}

// === value parsers ===

fn parse_limit(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "invalid limit {value:?}: expected a positive number"
        )),
    }
}

pub(crate) fn parse_status(value: &str) -> Result<StatusFilter, String> {
    let lower = value.trim().to_ascii_lowercase();
    let class = match lower.as_str() {
        "2xx" => Some(pb::StatusClass::Success),
        "4xx" => Some(pb::StatusClass::ClientError),
        "5xx" => Some(pb::StatusClass::ServerError),
        _ => None,
    };
    if let Some(class) = class {
        return Ok(StatusFilter::Class(class));
    }
    match lower.parse::<u32>() {
        Ok(status) if (100..=599).contains(&status) => Ok(StatusFilter::Exact(status)),
        _ => Err(format!(
            "invalid status {value:?}: expected a status like 429, or 2xx, 4xx, 5xx"
        )),
    }
}

/// `30s`, `15m`, `2h`, `7d`, `1w`, or several together (`1h30m`).
pub(crate) fn parse_duration(value: &str) -> Result<Duration, String> {
    let invalid = || {
        format!(
            "invalid duration {value:?}: expected a number and a unit (s, m, h, d, w), like 15m or 1h30m"
        )
    };
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in value.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit: u64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return Err(invalid()),
        };
        let n: u64 = number.parse().map_err(|_| invalid())?;
        total = n
            .checked_mul(unit)
            .and_then(|secs| total.checked_add(secs))
            .ok_or_else(invalid)?;
        number.clear();
    }
    if !number.is_empty() || total == 0 {
        return Err(invalid());
    }
    Ok(Duration::from_secs(total))
}

/// Unix milliseconds, or `YYYY-MM-DD[THH:MM[:SS]][Z]` in UTC.
pub(crate) fn parse_time(value: &str) -> Result<i64, String> {
    let value = value.trim();
    let invalid = || {
        format!(
            "invalid time {value:?}: expected unix milliseconds or a UTC time like 2025-01-31T14:00:05Z"
        )
    };
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse().map_err(|_| invalid());
    }
    let text = value.strip_suffix('Z').unwrap_or(value);
    let (date, time) = match text.split_once(['T', ' ']) {
        Some((date, time)) => (date, Some(time)),
        None => (text, None),
    };
    let number = |s: &str| s.parse::<u32>().map_err(|_| invalid());
    let parts: Vec<&str> = date.split('-').collect();
    let [year, month, day] = parts.as_slice() else {
        return Err(invalid());
    };
    let (year, month, day) = (number(year)?, number(month)?, number(day)?);
    if !(1970..=9999).contains(&year) || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return Err(invalid());
    }
    let mut secs = 0i64;
    if let Some(time) = time {
        let parts: Vec<&str> = time.split(':').collect();
        let (h, m, s) = match parts.as_slice() {
            [h, m] => (number(h)?, number(m)?, 0),
            [h, m, s] => (number(h)?, number(m)?, number(s)?),
            _ => return Err(invalid()),
        };
        if h > 23 || m > 59 || s > 59 {
            return Err(invalid());
        }
        secs = i64::from(h * 3_600 + m * 60 + s);
    }
    let days = output::days_from_civil(i64::from(year), month, day);
    if output::civil_from_days(days) != (i64::from(year), month, day) {
        return Err(invalid());
    }
    Ok((days * 86_400 + secs) * 1_000)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::commands::{Cli, Command};

    fn parse(args: &[&str]) -> Result<LogsCommand, clap::Error> {
        let cli = Cli::try_parse_from(std::iter::once("fulcrumctl").chain(args.iter().copied()))?;
        match cli.command {
            Command::Logs(cmd) => Ok(cmd),
            other => panic!("unexpected command {other:?}"),
        }
    }

    #[test]
    fn search_flags_become_a_filter() {
        let cmd = parse(&[
            "logs",
            "search",
            "--limit",
            "5",
            "--since",
            "2h",
            "--key",
            "0123456789abcdef",
            "--status",
            "4xx",
            "--client-token",
            "app",
            "--errors",
        ])
        .expect("parses");
        let LogsCommand::Search(args) = cmd else {
            panic!("not search")
        };
        assert_eq!(args.limit, 5);
        assert_eq!(args.since, Some(Duration::from_secs(7_200)));
        let filter = args.filter.to_pb();
        assert_eq!(filter.key_id, "0123456789abcdef");
        assert_eq!(filter.status_class, pb::StatusClass::ClientError as i32);
        assert_eq!(filter.client_token, "app");
        assert!(filter.errors_only && !filter.attempts);
        assert!(parse(&["logs", "search", "--since", "1h", "--from", "5"]).is_err());
        assert!(parse(&["logs", "search", "--limit", "0"]).is_err());
        assert!(parse(&["logs", "search", "--key", "nope"]).is_err());
        assert!(parse(&["logs", "tail", "--errors", "--status", "429"]).is_ok());
    }

    #[test]
    fn statuses_durations_and_times_parse() {
        assert_eq!(parse_status("429"), Ok(StatusFilter::Exact(429)));
        assert_eq!(
            parse_status("5XX"),
            Ok(StatusFilter::Class(pb::StatusClass::ServerError))
        );
        assert!(parse_status("42").is_err());
        assert!(parse_status("3xx").is_err());
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert!(parse_duration("15").is_err());
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("0s").is_err());
        assert_eq!(parse_time("1700000000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Ok(1_700_000_000_000));
        assert_eq!(parse_time("2023-11-14"), Ok(1_699_920_000_000));
        assert_eq!(parse_time("2023-11-14T22:13"), Ok(1_699_999_980_000));
        assert!(parse_time("2023-02-30").is_err());
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn rows_show_models_and_errors() {
        let record = pb::RequestRecord {
            at_unix_ms: 1_700_000_123_456,
            request_id: "r1".into(),
            model_requested: "via-oa".into(),
            model_served: "gpt-4o-mini".into(),
            status: 429,
            latency_ms: 12,
            attempt: 1,
            error_class: pb::ErrorClass::RateLimited as i32,
            ..Default::default()
        };
        let cells = record_cells(&record);
        assert_eq!(cells[0], "2023-11-14 22:15:23.456");
        assert_eq!(cells[5], "via-oa->gpt-4o-mini");
        assert_eq!(cells[8], "429");
        assert_eq!(cells[10], "-");
        assert_eq!(cells[13], "rate_limited");
    }
}
