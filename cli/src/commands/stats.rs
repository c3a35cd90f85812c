//! `fulcrumctl stats` and `fulcrumctl keys usage`

use clap::{Args, ValueEnum};
use fulcrum_proto::pb;
use serde_json::{Value, json};

use super::keys::parse_key_id;
use super::parse_provider_name;
use crate::client::LogClient;
use crate::output::{self, Format, Table};

/// `--window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Window {
    #[value(name = "1m")]
    Minute,
    #[value(name = "1h")]
    Hour,
    #[value(name = "24h")]
    Day,
    #[value(name = "30d")]
    Month,
}

impl Window {
    fn to_pb(self) -> pb::StatsWindow {
        match self {
            Window::Minute => pb::StatsWindow::LastMinute,
            Window::Hour => pb::StatsWindow::LastHour,
            Window::Day => pb::StatsWindow::LastDay,
            Window::Month => pb::StatsWindow::Last30Days,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Window::Minute => "last minute, per minute",
            Window::Hour => "last hour, per minute",
            Window::Day => "last 24 hours, per hour",
            Window::Month => "last 30 days, per day",
        }
    }
}

/// `--by`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GroupBy {
    Key,
    Model,
    Provider,
}

impl GroupBy {
    fn to_pb(self) -> pb::StatsGroupBy {
        match self {
            GroupBy::Key => pb::StatsGroupBy::Key,
            GroupBy::Model => pb::StatsGroupBy::Model,
            GroupBy::Provider => pb::StatsGroupBy::Provider,
        }
    }
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// What a row is.
    #[arg(long, value_enum, default_value_t = GroupBy::Provider)]
    by: GroupBy,
    #[arg(long, value_enum, default_value_t = Window::Hour)]
    window: Window,
    /// Only this provider's row (with --by provider).
    #[arg(long, value_parser = parse_provider_name, conflicts_with_all = ["key", "model"])]
    provider: Option<String>,
    /// Only this key's row (with --by key).
    #[arg(long, value_parser = parse_key_id, conflicts_with = "model")]
    key: Option<String>,
    /// Only this model's row (with --by model).
    #[arg(long)]
    model: Option<String>,
    /// Count upstream attempts (each key tried) instead of client requests.
    #[arg(long)]
    attempts: bool,
}

#[derive(Debug, Args)]
pub struct UsageArgs {
    /// Key id (see `keys list`).
    #[arg(value_parser = parse_key_id)]
    id: String,
    #[arg(long, value_enum, default_value_t = Window::Hour)]
    window: Window,
    /// Count what the key served to clients instead of every upstream call made with it.
    #[arg(long)]
    requests: bool,
}

/// Checks that need more than one argument: a filter must match the grouping.
pub fn check(args: &StatsArgs) -> Result<(), String> {
    let filter = [
        (GroupBy::Provider, args.provider.is_some(), "--provider"),
        (GroupBy::Key, args.key.is_some(), "--key"),
        (GroupBy::Model, args.model.is_some(), "--model"),
    ]
    .into_iter()
    .find(|(_, given, _)| *given);
    match filter {
        Some((dimension, _, flag)) if dimension != args.by => Err(format!(
            "{flag} needs --by {}: statistics are kept per key, per model and per provider, \
             not per combination",
            dimension
                .to_possible_value()
                .map_or_else(String::new, |v| v.get_name().to_string())
        )),
        _ => Ok(()),
    }
}

pub async fn run(args: &StatsArgs, client: &mut LogClient, format: Format) -> anyhow::Result<()> {
    let request = pb::GetStatsRequest {
        window: args.window.to_pb() as i32,
        group_by: args.by.to_pb() as i32,
        provider: args.provider.clone().unwrap_or_default(),
        key_id: args.key.clone().unwrap_or_default(),
        model: args.model.clone().unwrap_or_default(),
        attempts: args.attempts,
    };
    let stats = client.get_stats(request).await?.into_inner();
    if format == Format::Json {
        return output::print_json(&stats_json(&stats));
    }
    let what = if args.attempts {
        "upstream attempts"
    } else {
        "client requests"
    };
    let mut text = format!("{what}, {}\n\n", args.window.describe());
    text.push_str(&rows_table(&stats).render());
    text.push_str(&series_line(&stats));
    output::print(&text)
}

/// `keys usage ID`: one key's statistics. By default every upstream call made with the key
/// (`attempts`), since a key's 429s and failures show there.
pub async fn key_usage(
    args: &UsageArgs,
    client: &mut LogClient,
    format: Format,
) -> anyhow::Result<()> {
    let request = pb::GetStatsRequest {
        window: args.window.to_pb() as i32,
        group_by: pb::StatsGroupBy::Key as i32,
        key_id: args.id.clone(),
        attempts: !args.requests,
        ..Default::default()
    };
    let stats = client.get_stats(request).await?.into_inner();
    if format == Format::Json {
        let mut value = stats_json(&stats);
        value["key_id"] = json!(args.id);
        return output::print_json(&value);
    }
    let total = stats.total.clone().unwrap_or_default();
    let what = if args.requests {
        "client requests served"
    } else {
        "upstream calls"
    };
    let errors: Vec<String> = total
        .errors
        .iter()
        .map(|e| format!("{} {}", output::error_class_name(e.error_class), e.count))
        .collect();
    let mut text = output::fields(&[
        ("key", args.id.clone()),
        ("window", args.window.describe().to_string()),
        (what, total.requests.to_string()),
        ("success rate", percent(&total)),
        (
            "status",
            format!(
                "2xx {}, 4xx {}, 5xx {}, other {}",
                total.successes, total.client_errors, total.server_errors, total.other_status
            ),
        ),
        (
            "errors",
            if errors.is_empty() {
                "none".to_string()
            } else {
                errors.join(", ")
            },
        ),
        (
            "tokens",
            format!("in {}, out {}", total.input_tokens, total.output_tokens),
        ),
        (
            "latency",
            format!(
                "p50 {}, avg {}",
                output::millis(total.latency_p50_ms),
                output::millis(total.latency_avg_ms)
            ),
        ),
    ]);
    text.push_str(&series_line(&stats));
    output::print(&text)
}

fn percent(c: &pb::StatsCounts) -> String {
    if c.requests == 0 {
        "-".to_string()
    } else {
        format!("{:.1}%", c.success_rate * 100.0)
    }
}

fn rows_table(stats: &pb::GetStatsResponse) -> Table {
    let mut table = Table::new([
        "GROUP",
        "REQUESTS",
        "SUCCESS",
        "2XX",
        "4XX",
        "5XX",
        "OTHER",
        "ERRORS",
        "TOKENS IN",
        "TOKENS OUT",
        "P50",
        "AVG",
    ]);
    let mut row = |group: String, c: &pb::StatsCounts| {
        let errors: u64 = c.errors.iter().map(|e| e.count).sum();
        table.row(vec![
            group,
            c.requests.to_string(),
            percent(c),
            c.successes.to_string(),
            c.client_errors.to_string(),
            c.server_errors.to_string(),
            c.other_status.to_string(),
            errors.to_string(),
            c.input_tokens.to_string(),
            c.output_tokens.to_string(),
            output::millis(c.latency_p50_ms),
            output::millis(c.latency_avg_ms),
        ]);
    };
    for r in &stats.rows {
        row(
            output::or_dash(&r.group),
            &r.counts.clone().unwrap_or_default(),
        );
    }
    if stats.rows.len() != 1 {
        row(
            "(total)".to_string(),
            &stats.total.clone().unwrap_or_default(),
        );
    }
    table
}

/// The requests of each point as a sparkline, with the range it covers.
fn series_line(stats: &pb::GetStatsResponse) -> String {
    let values: Vec<u64> = stats
        .series
        .iter()
        .map(|p| p.counts.as_ref().map_or(0, |c| c.requests))
        .collect();
    let (Some(first), Some(last)) = (stats.series.first(), stats.series.last()) else {
        return String::new();
    };
    let peak = values.iter().copied().max().unwrap_or(0);
    format!(
        "\nrequests from {} to {} (peak {peak} per point):\n|{}|\n",
        output::utc_time(first.start_unix_ms),
        output::utc_time(last.start_unix_ms),
        output::sparkline(&values)
    )
}

fn stats_json(stats: &pb::GetStatsResponse) -> Value {
    let empty = pb::StatsCounts::default();
    let rows: Vec<Value> = stats
        .rows
        .iter()
        .map(|r| {
            json!({
                "group": r.group,
                "counts": output::stats_counts_json(r.counts.as_ref().unwrap_or(&empty)),
            })
        })
        .collect();
    let series: Vec<Value> = stats
        .series
        .iter()
        .map(|p| {
            json!({
                "start_unix_ms": p.start_unix_ms,
                "counts": output::stats_counts_json(p.counts.as_ref().unwrap_or(&empty)),
            })
        })
        .collect();
    json!({
        "from_unix_ms": stats.from_unix_ms,
        "to_unix_ms": stats.to_unix_ms,
        "bucket_ms": stats.bucket_ms,
        "total": output::stats_counts_json(stats.total.as_ref().unwrap_or(&empty)),
        "rows": rows,
        "series": series,
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::commands::{Cli, Command};

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("fulcrumctl").chain(args.iter().copied()))
    }

    #[test]
    fn stats_flags_and_their_checks() {
        let cli = parse(&["stats", "--by", "model", "--window", "24h"]).expect("parses");
        let Command::Stats(args) = &cli.command else {
            panic!("not stats")
        };
        assert_eq!((args.by, args.window), (GroupBy::Model, Window::Day));
        assert!(cli.check().is_ok());
        let cli = parse(&["stats", "--key", "0123456789abcdef"]).expect("parses");
        let err = cli.check().expect_err("key filter needs --by key");
        assert!(err.contains("--key needs --by key"), "{err}");
        assert!(
            parse(&["stats", "--by", "key", "--key", "0123456789abcdef"])
                .expect("parses")
                .check()
                .is_ok()
        );
        assert!(parse(&["stats", "--window", "2h"]).is_err());
        assert!(parse(&["keys", "usage", "0123456789abcdef", "--window", "30d"]).is_ok());
        assert!(parse(&["keys", "usage", "bad"]).is_err());
    }

    #[test]
    fn tables_have_a_total_and_a_series() {
        let counts = |requests: u64, successes: u64| pb::StatsCounts {
            requests,
            successes,
            success_rate: successes as f64 / requests as f64,
            latency_p50_ms: 120,
            latency_avg_ms: 130,
            ..Default::default()
        };
        let stats = pb::GetStatsResponse {
            rows: vec![
                pb::StatsRow {
                    group: "oa".into(),
                    counts: Some(counts(3, 3)),
                },
                pb::StatsRow {
                    group: String::new(),
                    counts: Some(counts(1, 0)),
                },
            ],
            total: Some(counts(4, 3)),
            series: vec![
                pb::StatsPoint {
                    start_unix_ms: 1_700_000_040_000,
                    counts: Some(counts(1, 1)),
                },
                pb::StatsPoint {
                    start_unix_ms: 1_700_000_100_000,
                    counts: Some(counts(3, 2)),
                },
            ],
            ..Default::default()
        };
        let table = rows_table(&stats).render();
        assert!(table.contains("oa       3"), "{table}");
        assert!(table.contains("(total)  4         75.0%"), "{table}");
        assert!(table.lines().nth(2).unwrap_or_default().starts_with("-  "));
        let series = series_line(&stats);
        assert!(series.contains("|▃█|"), "{series}");
        let json = stats_json(&stats);
        assert_eq!(json["rows"][0]["counts"]["requests"], 3);
        assert_eq!(json["series"][1]["start_unix_ms"], 1_700_000_100_000i64);
    }
}
