//! `fulcrumctl keys ...`

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use clap::{ArgGroup, Subcommand};
use fulcrum_proto::model::{KeyState, mask_proxy};
use fulcrum_proto::pb;
use serde_json::{Value, json};

use super::{Secretive, parse_provider_name, parse_proxy};
use crate::client::{self, AdminClient};
use crate::output::{self, Format, Table};

/// What `keys list` shows without `--limit` or `--all`.
const DEFAULT_LIMIT: usize = 100;
/// Page size when paging through everything (the server allows up to 10,000).
const PAGE_SIZE: u32 = 1_000;
/// Duplicate lines `keys add` names one by one in text output.
const DUPLICATES_SHOWN: usize = 20;
/// Page size of `keys export`.
const EXPORT_PAGE_SIZE: u32 = 5_000;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Add keys to a provider, from arguments and/or a file (one key a line, `-` for stdin).
    ///
    /// Every line goes to the control plane in one call; blank lines and `#` comments are
    /// skipped there, and each line gets its own result.
    #[command(group(ArgGroup::new("input").required(true).multiple(true).args(["keys", "file"])))]
    Add {
        #[arg(long, value_parser = parse_provider_name)]
        provider: String,
        /// Keys given on the command line (they end up in shell history: prefer --file).
        keys: Vec<String>,
        /// File with one key a line; `-` reads stdin.
        #[arg(long, value_name = "PATH|-")]
        file: Option<PathBuf>,
        /// Pin the added keys to this outbound proxy (`http://` or `socks5://`) instead of
        /// the provider's assignment.
        #[arg(long, value_name = "URL", value_parser = Secretive(parse_proxy))]
        proxy: Option<String>,
        /// Probe the added keys right away (the default): the control plane's validation
        /// scheduler runs the probes within its concurrency and rate limits.
        #[arg(long, overrides_with = "no_validate")]
        validate: bool,
        /// Add the keys without probing them now.
        #[arg(long, overrides_with = "validate")]
        no_validate: bool,
    },
    /// Print keys one a line, masked; `--reveal` prints the full secrets, which
    /// `keys add --file` takes back. `-o json` gives every field.
    Export {
        #[arg(long, value_parser = parse_provider_name)]
        provider: Option<String>,
        /// active, cooling, exhausted, failing, invalid or disabled.
        #[arg(long)]
        state: Option<KeyState>,
        /// Print the full secrets (the output is then as sensitive as the keys).
        #[arg(long)]
        reveal: bool,
    },
    /// Probe keys now and show what each probe found, then a summary by state.
    ///
    /// Progress goes to stderr as each probe ends; the summary to stdout. Disabled keys are
    /// never probed.
    #[command(group(ArgGroup::new("which").required(true).args(["ids", "state", "all"])))]
    Validate {
        /// Key ids.
        #[arg(value_parser = parse_key_id)]
        ids: Vec<String>,
        /// Every key in this state (active, cooling, exhausted, failing or invalid).
        #[arg(long)]
        state: Option<KeyState>,
        /// Every key that is not disabled.
        #[arg(long)]
        all: bool,
        /// Only keys of this provider.
        #[arg(long, value_parser = parse_provider_name)]
        provider: Option<String>,
    },
    /// A key's state changes, oldest first: when, from, to, why, and who decided.
    History {
        #[arg(value_parser = parse_key_id)]
        id: String,
    },
    /// List keys (masked), in id order.
    List {
        #[arg(long, value_parser = parse_provider_name)]
        provider: Option<String>,
        /// active, cooling, exhausted, failing, invalid or disabled.
        #[arg(long)]
        state: Option<KeyState>,
        /// How many keys to show.
        #[arg(long, default_value_t = DEFAULT_LIMIT, value_parser = parse_limit, conflicts_with = "all")]
        limit: usize,
        /// Page through every key.
        #[arg(long)]
        all: bool,
    },
    /// Put keys back in rotation.
    Enable {
        #[arg(required = true, value_parser = parse_key_id)]
        ids: Vec<String>,
    },
    /// Take keys out of rotation until enabled again.
    Disable {
        #[arg(required = true, value_parser = parse_key_id)]
        ids: Vec<String>,
        /// Why (shown as the state reason) [default: "disabled by operator"].
        #[arg(long)]
        reason: Option<String>,
    },
    /// Delete keys.
    Remove {
        #[arg(required = true, value_parser = parse_key_id)]
        ids: Vec<String>,
    },
    /// Pin keys to an outbound proxy (`--proxy`), or unpin them (`--direct`) so that
    /// each goes back to its provider's proxy assignment, or direct.
    ///
    /// The keys keep their ids, states and history; all of them change or none does.
    #[command(group(ArgGroup::new("way").required(true).args(["proxy", "direct"])))]
    SetProxy {
        #[arg(required = true, value_parser = parse_key_id)]
        ids: Vec<String>,
        /// The proxy: `http://` or `socks5://`, optionally with `user:password@`.
        #[arg(long, value_name = "URL", value_parser = Secretive(parse_proxy))]
        proxy: Option<String>,
        /// Unpin the keys.
        #[arg(long)]
        direct: bool,
    },
    /// One key's traffic over a window: calls, statuses, error classes, tokens, latency.
    Usage(super::stats::UsageArgs),
}

pub async fn run(
    cmd: &KeysCommand,
    client: &mut AdminClient,
    format: Format,
) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Add {
            provider,
            keys,
            file,
            proxy,
            no_validate,
            ..
        } => {
            add(
                client,
                format,
                provider,
                keys,
                file.as_ref(),
                proxy.as_deref(),
                !*no_validate,
            )
            .await
        }
        KeysCommand::Export {
            provider,
            state,
            reveal,
        } => export(client, format, provider.as_deref(), *state, *reveal).await,
        KeysCommand::Validate {
            ids,
            state,
            all,
            provider,
        } => {
            let request = pb::ValidateKeysRequest {
                ids: ids.clone(),
                state: state.map_or(pb::KeyState::Unspecified, KeyState::to_pb) as i32,
                all: *all,
                provider: provider.clone().unwrap_or_default(),
            };
            validate(client, format, request).await
        }
        KeysCommand::History { id } => history(client, format, id).await,
        KeysCommand::List {
            provider,
            state,
            limit,
            all,
        } => {
            let limit = if *all { usize::MAX } else { *limit };
            list(client, format, provider.as_deref(), *state, limit).await
        }
        KeysCommand::Enable { ids } => {
            let request = pb::EnableKeysRequest { ids: ids.clone() };
            let response = client.enable_keys(request).await?.into_inner();
            changed(format, "enabled", response.changed, response.revision)
        }
        KeysCommand::Disable { ids, reason } => {
            let request = pb::DisableKeysRequest {
                ids: ids.clone(),
                reason: reason.clone().unwrap_or_default(),
            };
            let response = client.disable_keys(request).await?.into_inner();
            changed(format, "disabled", response.changed, response.revision)
        }
        KeysCommand::Remove { ids } => {
            let request = pb::DeleteKeysRequest { ids: ids.clone() };
            let response = client.delete_keys(request).await?.into_inner();
            changed(format, "removed", response.deleted, response.revision)
        }
        KeysCommand::SetProxy { ids, proxy, .. } => {
            // clap lets through exactly one of --proxy and --direct; no proxy is --direct.
            let request = pb::SetKeyProxyRequest {
                ids: ids.clone(),
                proxy: proxy.clone().unwrap_or_default(),
            };
            let response = client.set_key_proxy(request).await?.into_inner();
            proxy_set(
                format,
                proxy.as_deref(),
                response.updated,
                response.revision,
            )
        }
        KeysCommand::Usage(_) => {
            unreachable!("commands::run serves keys usage with a LogService client")
        }
    }
}

fn changed(format: Format, verb: &str, count: u64, revision: u64) -> anyhow::Result<()> {
    if format == Format::Json {
        return output::print_json(&json!({ verb: count, "revision": revision }));
    }
    let noun = if count == 1 { "key" } else { "keys" };
    output::print(&format!("{verb} {count} {noun} (revision {revision})"))
}

/// What `keys set-proxy` did; the proxy is shown with its password masked.
fn proxy_set(
    format: Format,
    proxy: Option<&str>,
    updated: u64,
    revision: u64,
) -> anyhow::Result<()> {
    let shown = proxy.map(mask_proxy);
    if format == Format::Json {
        return output::print_json(
            &json!({ "updated": updated, "revision": revision, "proxy": shown }),
        );
    }
    let noun = if updated == 1 { "key" } else { "keys" };
    let line = match shown {
        Some(proxy) => format!("pinned {updated} {noun} to {proxy} (revision {revision})"),
        None => format!("unpinned {updated} {noun} (revision {revision})"),
    };
    output::print(&line)
}

// === add ===

/// Where the lines of an `AddKeys` request came from, to name them in messages the way the
/// operator gave them.
struct Origin {
    args: usize,
    file: Option<String>,
}

impl Origin {
    /// `line` is 1-based over the whole request.
    fn describe(&self, line: u32) -> String {
        let index = usize::try_from(line).unwrap_or(usize::MAX);
        if index <= self.args {
            return format!("argument {index}");
        }
        match &self.file {
            Some(name) => format!("{name} line {}", index - self.args),
            None => format!("line {index}"),
        }
    }
}

async fn add(
    client: &mut AdminClient,
    format: Format,
    provider: &str,
    args: &[String],
    file: Option<&PathBuf>,
    proxy: Option<&str>,
    validate: bool,
) -> anyhow::Result<()> {
    let mut lines: Vec<String> = args.to_vec();
    let mut origin = Origin {
        args: args.len(),
        file: None,
    };
    if let Some(path) = file {
        let text = read_input(path)?;
        lines.extend(text.lines().map(str::to_string));
        origin.file = Some(if path.as_os_str() == "-" {
            "stdin".to_string()
        } else {
            path.display().to_string()
        });
    }
    let mut request = tonic::Request::new(pb::AddKeysRequest {
        provider: provider.to_string(),
        keys: lines,
        proxy: proxy.unwrap_or_default().to_string(),
        validate,
    });
    request.set_timeout(client::BULK_TIMEOUT);
    let response = client.add_keys(request).await?.into_inner();

    // Invalid lines go to stderr in both formats, so they are seen even when stdout is piped.
    for result in &response.results {
        if result.outcome == pb::AddKeyOutcome::Invalid as i32 {
            output::note(&format!(
                "{}: invalid: {}",
                origin.describe(result.line),
                output::or_dash(&result.message)
            ));
        }
    }
    if format == Format::Json {
        let results: Vec<Value> = response
            .results
            .iter()
            .map(|r| {
                json!({
                    "line": r.line,
                    "outcome": output::add_key_outcome_name(r.outcome),
                    "id": r.id,
                    "masked": r.masked,
                    "message": r.message,
                })
            })
            .collect();
        return output::print_json(&json!({
            "provider": provider,
            "added": response.added,
            "duplicates": response.duplicates,
            "invalid": response.invalid,
            "skipped": response.skipped,
            "revision": response.revision,
            "validating": validate && response.added > 0,
            "results": results,
        }));
    }
    if validate && response.added > 0 {
        output::note(&format!(
            "probing the {} added keys now; `fulcrumctl keys list` shows what the probes found",
            response.added
        ));
    }
    let mut text = format!(
        "added {}, duplicates {}, invalid {}, skipped {} (revision {})\n",
        response.added, response.duplicates, response.invalid, response.skipped, response.revision
    );
    // A re-import of 100,000 keys would print 100,000 lines: the first few say enough.
    let mut shown = 0usize;
    for result in &response.results {
        if result.outcome == pb::AddKeyOutcome::Duplicate as i32 {
            shown += 1;
            if shown > DUPLICATES_SHOWN {
                continue;
            }
            let message = match (result.message.is_empty(), result.id.is_empty()) {
                (true, _) => format!("already stored as {} ({})", result.id, result.masked),
                (false, true) => result.message.clone(),
                (false, false) => format!("{} (id {})", result.message, result.id),
            };
            text.push_str(&format!(
                "{}: duplicate: {message}\n",
                origin.describe(result.line)
            ));
        }
    }
    if shown > DUPLICATES_SHOWN {
        text.push_str(&format!(
            "... and {} more duplicates (-o json lists every line)\n",
            shown - DUPLICATES_SHOWN
        ));
    }
    output::print(&text)
}

fn read_input(path: &PathBuf) -> anyhow::Result<String> {
    let mut text = String::new();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .lock()
            .read_to_string(&mut text)
            .context("cannot read keys from stdin")?;
    } else {
        text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
    }
    Ok(text)
}

// === list ===

async fn list(
    client: &mut AdminClient,
    format: Format,
    provider: Option<&str>,
    state: Option<KeyState>,
    limit: usize,
) -> anyhow::Result<()> {
    let mut keys: Vec<pb::ProviderKey> = Vec::new();
    let mut page_token = String::new();
    let more = loop {
        let wanted = limit.saturating_sub(keys.len());
        let page_size = u32::try_from(wanted).unwrap_or(PAGE_SIZE).min(PAGE_SIZE);
        let request = pb::ListKeysRequest {
            provider: provider.unwrap_or_default().to_string(),
            state: state.map_or(pb::KeyState::Unspecified, KeyState::to_pb) as i32,
            page_size,
            page_token: page_token.clone(),
        };
        let response = client.list_keys(request).await?.into_inner();
        keys.extend(response.keys);
        if keys.len() > limit {
            keys.truncate(limit);
            break true;
        }
        if response.next_page_token.is_empty() {
            break false;
        }
        if keys.len() == limit {
            break true;
        }
        page_token = response.next_page_token;
    };

    if more {
        output::note(&format!(
            "showing the first {} keys; use --limit N or --all to see more",
            keys.len()
        ));
    }
    if format == Format::Json {
        let keys: Vec<Value> = keys.iter().map(output::key_json).collect();
        return output::print_json(&json!({ "keys": keys, "truncated": more }));
    }
    if keys.is_empty() {
        output::note("no keys");
        return Ok(());
    }
    let now = output::now_unix_ms();
    let mut table = Table::new([
        "ID",
        "PROVIDER",
        "KEY",
        "STATE",
        "REASON",
        "UNTIL",
        "NEXT PROBE",
        "LAST SUCCESS",
        "FAILURES",
    ]);
    for k in &keys {
        let mut state = output::key_state_name(k.state).to_string();
        let exhausted: Vec<&str> = k
            .exhausted_models
            .iter()
            .filter(|m| m.until_unix_ms > now)
            .map(|m| m.model.as_str())
            .collect();
        if !exhausted.is_empty() {
            state = format!("{state} (exhausted: {})", exhausted.join(", "));
        }
        table.row(vec![
            k.id.clone(),
            k.provider.clone(),
            k.masked.clone(),
            state,
            output::or_dash(&k.state_reason),
            output::until(k.state_until_unix_ms, now),
            output::until(k.next_probe_unix_ms, now),
            output::ago(k.last_success_unix_ms, now),
            k.failures.to_string(),
        ]);
    }
    output::print(&table.render())
}

// === validate ===

async fn validate(
    client: &mut AdminClient,
    format: Format,
    request: pb::ValidateKeysRequest,
) -> anyhow::Result<()> {
    let mut request = tonic::Request::new(request);
    request.set_timeout(client::BULK_TIMEOUT);
    let mut stream = client.validate_keys(request).await?.into_inner();
    let mut results = Vec::new();
    let mut summary = None;
    while let Some(message) = stream.message().await? {
        match message.event {
            Some(pb::validate_keys_response::Event::Result(r)) => {
                output::note(&format!(
                    "[{}/{}] {} {} {}: {} ({}){}",
                    r.done,
                    r.total,
                    r.id,
                    r.provider,
                    r.masked,
                    output::key_state_name(r.state),
                    output::millis(r.latency_ms),
                    if r.reason.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", r.reason)
                    }
                ));
                results.push(r);
            }
            Some(pb::validate_keys_response::Event::Summary(s)) => summary = Some(s),
            None => {}
        }
    }
    let summary = summary.context("the control plane ended the validation without a summary")?;
    if format == Format::Json {
        let results: Vec<Value> = results
            .iter()
            .map(|r| {
                json!({
                    "id": r.id,
                    "provider": r.provider,
                    "masked": r.masked,
                    "state": output::key_state_name(r.state),
                    "reason": r.reason,
                    "latency_ms": r.latency_ms,
                })
            })
            .collect();
        return output::print_json(&json!({
            "probed": summary.probed,
            "skipped": summary.skipped,
            "states": output::key_counts_json(&summary.states),
            "results": results,
        }));
    }
    let mut table = Table::new(["STATE", "KEYS"]);
    for (state, count) in output::key_counts(&summary.states) {
        if count > 0 {
            table.row(vec![state.to_string(), count.to_string()]);
        }
    }
    let mut text = format!(
        "probed {}, skipped {} (disabled or already being probed)\n",
        summary.probed, summary.skipped
    );
    if !table.is_empty() {
        text.push_str(&table.render());
    }
    output::print(&text)
}

// === history ===

async fn history(client: &mut AdminClient, format: Format, id: &str) -> anyhow::Result<()> {
    let response = client
        .get_key_history(pb::GetKeyHistoryRequest { id: id.to_string() })
        .await?
        .into_inner();
    if format == Format::Json {
        let transitions: Vec<Value> = response
            .transitions
            .iter()
            .map(|t| {
                json!({
                    "at_unix_ms": t.at_unix_ms,
                    "from": output::key_state_name(t.from),
                    "to": output::key_state_name(t.to),
                    "reason": t.reason,
                    "source": t.source,
                    "model": t.model,
                    "until_unix_ms": t.until_unix_ms,
                })
            })
            .collect();
        return output::print_json(&json!({
            "key": response.key.as_ref().map(output::key_json),
            "transitions": transitions,
        }));
    }
    if let Some(key) = &response.key {
        output::note(&format!(
            "key {} ({} {}) is {}",
            key.id,
            key.provider,
            key.masked,
            output::key_state_name(key.state)
        ));
    }
    if response.transitions.is_empty() {
        output::note("no state changes recorded");
        return Ok(());
    }
    let mut table = Table::new([
        "AT (UTC)", "FROM", "TO", "MODEL", "UNTIL", "SOURCE", "REASON",
    ]);
    for t in &response.transitions {
        table.row(vec![
            output::utc_time(t.at_unix_ms),
            output::key_state_name(t.from).to_string(),
            output::key_state_name(t.to).to_string(),
            output::or_dash(&t.model),
            output::utc_time(t.until_unix_ms),
            output::or_dash(&t.source),
            output::or_dash(&t.reason),
        ]);
    }
    output::print(&table.render())
}

// === export ===

async fn export(
    client: &mut AdminClient,
    format: Format,
    provider: Option<&str>,
    state: Option<KeyState>,
    reveal: bool,
) -> anyhow::Result<()> {
    let mut keys: Vec<pb::ProviderKey> = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = pb::ExportKeysRequest {
            provider: provider.unwrap_or_default().to_string(),
            state: state.map_or(pb::KeyState::Unspecified, KeyState::to_pb) as i32,
            page_size: EXPORT_PAGE_SIZE,
            page_token: page_token.clone(),
            reveal,
        };
        let response = client.export_keys(request).await?.into_inner();
        keys.extend(response.keys);
        if response.next_page_token.is_empty() {
            break;
        }
        page_token = response.next_page_token;
    }
    if reveal {
        let noun = if keys.len() == 1 { "key" } else { "keys" };
        output::note(&format!(
            "printing {} {noun} in full: treat this output as the keys themselves",
            keys.len()
        ));
    } else {
        output::note("keys are masked; --reveal prints them in full");
    }
    if format == Format::Json {
        let keys: Vec<Value> = keys
            .iter()
            .map(|k| {
                let mut value = output::key_json(k);
                if reveal {
                    value["secret"] = json!(k.secret);
                }
                value
            })
            .collect();
        return output::print_json(&json!({ "keys": keys, "revealed": reveal }));
    }
    // `#` lines are comments to `keys add --file`, so the output goes back in as it is.
    let mut text = format!(
        "# fulcrumctl keys export: {} keys{}{}, {}\n",
        keys.len(),
        provider
            .map(|p| format!(", provider {p}"))
            .unwrap_or_default(),
        state.map(|s| format!(", state {s}")).unwrap_or_default(),
        if reveal { "full secrets" } else { "masked" },
    );
    for k in &keys {
        text.push_str(if reveal { &k.secret } else { &k.masked });
        text.push('\n');
    }
    output::print(&text)
}

fn parse_limit(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "invalid limit {value:?}: expected a positive number"
        )),
    }
}

/// 16 lowercase hex characters, as the control plane derives them.
pub(crate) fn parse_key_id(value: &str) -> Result<String, String> {
    let ok = value.len() == 16
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        Ok(value.to_string())
    } else {
        Err(format!(
            "invalid key id {value:?}: expected 16 lowercase hex characters (see `keys list`)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::commands::{Cli, Command};

    fn parse(args: &[&str]) -> Result<KeysCommand, clap::Error> {
        let cli = Cli::try_parse_from(std::iter::once("fulcrumctl").chain(args.iter().copied()))?;
        match cli.command {
            Command::Keys(cmd) => Ok(cmd),
            other => panic!("unexpected command {other:?}"),
        }
    }

    #[test]
    fn add_needs_keys_or_a_file() {
        assert_eq!(
            parse(&["keys", "add", "--provider", "p"])
                .expect_err("no input")
                .exit_code(),
            2
        );
        assert!(parse(&["keys", "add", "--provider", "p", "--file", "-"]).is_ok());
        let cmd = parse(&["keys", "add", "--provider", "p", "k1", "k2"]).expect("parses");
        assert!(matches!(cmd, KeysCommand::Add { keys, file: None, .. } if keys.len() == 2));
    }

    #[test]
    fn export_and_pinned_proxies() {
        let cmd = parse(&["keys", "export", "--provider", "p", "--reveal"]).expect("parses");
        assert!(
            matches!(cmd, KeysCommand::Export { reveal: true, provider: Some(p), .. } if p == "p")
        );
        assert!(matches!(
            parse(&["keys", "export"]).expect("parses"),
            KeysCommand::Export {
                reveal: false,
                provider: None,
                state: None
            }
        ));
        let cmd = parse(&[
            "keys",
            "add",
            "--provider",
            "p",
            "--proxy",
            "socks5://h:1",
            "k1",
        ])
        .expect("parses");
        assert!(matches!(cmd, KeysCommand::Add { proxy: Some(p), .. } if p == "socks5://h:1"));
        let err = parse(&[
            "keys",
            "add",
            "--provider",
            "p",
            "--proxy",
            "http://u:hunter2@h:x",
            "k1",
        ])
        .expect_err("rejected");
        assert_eq!(err.exit_code(), 2);
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn list_defaults_and_states() {
        let cmd = parse(&["keys", "list"]).expect("parses");
        assert!(matches!(
            cmd,
            KeysCommand::List {
                limit: DEFAULT_LIMIT,
                all: false,
                state: None,
                ..
            }
        ));
        let cmd = parse(&["keys", "list", "--state", "cooling", "--all"]).expect("parses");
        assert!(matches!(
            cmd,
            KeysCommand::List {
                state: Some(KeyState::Cooling),
                all: true,
                ..
            }
        ));
        assert!(parse(&["keys", "list", "--state", "sleepy"]).is_err());
        assert!(parse(&["keys", "list", "--limit", "5", "--all"]).is_err());
        assert!(parse(&["keys", "list", "--limit", "0"]).is_err());
    }

    #[test]
    fn ids_are_checked() {
        assert!(parse(&["keys", "enable", "0123456789abcdef"]).is_ok());
        assert!(parse(&["keys", "remove", "xyz"]).is_err());
        assert!(parse(&["keys", "disable"]).is_err());
        let cmd =
            parse(&["keys", "disable", "0123456789abcdef", "--reason", "leaked"]).expect("parses");
        assert!(matches!(cmd, KeysCommand::Disable { reason: Some(r), .. } if r == "leaked"));
    }

    #[test]
    fn set_proxy_takes_a_proxy_or_direct() {
        let id = "0123456789abcdef";
        let cmd = parse(&["keys", "set-proxy", id, "--proxy", "SOCKS5://h:1"]).expect("parses");
        assert!(
            matches!(&cmd, KeysCommand::SetProxy { ids, proxy: Some(p), direct: false } if ids.len() == 1 && p == "socks5://h:1"),
            "{cmd:?}"
        );
        let cmd = parse(&["keys", "set-proxy", id, id, "--direct"]).expect("parses");
        assert!(matches!(
            cmd,
            KeysCommand::SetProxy {
                proxy: None,
                direct: true,
                ..
            }
        ));
        let usage = |args: &[&str]| parse(args).expect_err("refused").exit_code();
        assert_eq!(
            usage(&["keys", "set-proxy", id]),
            2,
            "one of the two needed"
        );
        assert_eq!(
            usage(&["keys", "set-proxy", id, "--direct", "--proxy", "http://h:1"]),
            2
        );
        assert_eq!(usage(&["keys", "set-proxy", "--direct"]), 2, "no id");
        let err = parse(&["keys", "set-proxy", id, "--proxy", "ftp://u:hunter2@h:1"])
            .expect_err("refused");
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("u:***@h:1"), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn origin_names_lines_as_given() {
        let origin = Origin {
            args: 2,
            file: Some("keys.txt".into()),
        };
        assert_eq!(origin.describe(2), "argument 2");
        assert_eq!(origin.describe(3), "keys.txt line 1");
        let origin = Origin {
            args: 0,
            file: None,
        };
        assert_eq!(origin.describe(7), "line 7");
    }
}
