//! `fulcrumctl tokens rotate-admin|rotate-join|retire-previous` and `fulcrumctl security`:
//! the control plane's own tokens and the master key, over `SecurityService`.

use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use fulcrum_proto::pb;
use serde_json::json;

use crate::client::SecurityClient;
use crate::output::{self, Format};

/// Which of the control plane's tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TokenKind {
    Admin,
    Join,
}

impl TokenKind {
    fn to_pb(self) -> pb::TokenKind {
        match self {
            TokenKind::Admin => pb::TokenKind::Admin,
            TokenKind::Join => pb::TokenKind::Join,
        }
    }

    fn name(self) -> &'static str {
        match self {
            TokenKind::Admin => "admin",
            TokenKind::Join => "join",
        }
    }
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    /// How long the replaced token stays valid (for example 1h, 7d; at most 30d).
    #[arg(long, value_parser = super::logs::parse_duration, default_value = "1d")]
    pub grace: Duration,
    /// Make the replaced token invalid at once (no overlap).
    #[arg(long, conflicts_with = "grace")]
    pub retire_old: bool,
}

#[derive(Debug, Subcommand)]
pub enum SecurityCommand {
    /// The master key in use, master-key rotation progress, and token rotation state.
    Status,
}

/// Rotates a token and prints the new one once.
pub async fn rotate(
    kind: TokenKind,
    args: &RotateArgs,
    client: &mut SecurityClient,
    format: Format,
) -> anyhow::Result<()> {
    let request = pb::RotateTokenRequest {
        kind: kind.to_pb() as i32,
        grace_secs: args.grace.as_secs(),
        retire_previous: args.retire_old,
    };
    let response = client.rotate_token(request).await?.into_inner();
    if format == Format::Json {
        return output::print_json(&json!({
            "kind": kind.name(),
            "token": response.token,
            "previous_valid_until_unix_ms": response.previous_valid_until_unix_ms,
            "token_file_updated": response.token_file_updated,
        }));
    }
    output::print(&format!(
        "new {} token:\n\n    {}\n",
        kind.name(),
        response.token
    ))?;
    let now = output::now_unix_ms();
    if response.previous_valid_until_unix_ms > 0 {
        output::note(&format!(
            "the previous {} token stays valid {} (until {} UTC), or until `fulcrumctl tokens retire-previous {}`",
            kind.name(),
            output::until(response.previous_valid_until_unix_ms, now),
            output::utc_time(response.previous_valid_until_unix_ms),
            kind.name()
        ));
    } else {
        output::note(&format!(
            "the previous {} token is no longer valid",
            kind.name()
        ));
    }
    if response.token_file_updated {
        output::note(&format!(
            "the new token was also written to {}.token in the control plane's data dir",
            kind.name()
        ));
    }
    output::note("note: this token is not shown again; store it now");
    Ok(())
}

/// Ends the previous token's grace time now.
pub async fn retire(
    kind: TokenKind,
    client: &mut SecurityClient,
    format: Format,
) -> anyhow::Result<()> {
    let request = pb::RetirePreviousTokenRequest {
        kind: kind.to_pb() as i32,
    };
    client.retire_previous_token(request).await?;
    if format == Format::Json {
        return output::print_json(&json!({ "kind": kind.name(), "retired": true }));
    }
    output::print(&format!(
        "the previous {} token is no longer valid",
        kind.name()
    ))
}

pub async fn run(
    cmd: &SecurityCommand,
    client: &mut SecurityClient,
    format: Format,
) -> anyhow::Result<()> {
    match cmd {
        SecurityCommand::Status => {
            let status = client
                .get_security_status(pb::GetSecurityStatusRequest {})
                .await?
                .into_inner();
            let now = output::now_unix_ms();
            let token_name = |kind: i32| match pb::TokenKind::try_from(kind) {
                Ok(pb::TokenKind::Admin) => "admin",
                Ok(pb::TokenKind::Join) => "join",
                _ => "unknown",
            };
            if format == Format::Json {
                let tokens: Vec<_> = status
                    .tokens
                    .iter()
                    .map(|t| {
                        json!({
                            "kind": token_name(t.kind),
                            "rotated_unix_ms": t.rotated_unix_ms,
                            "previous_valid_until_unix_ms": t.previous_valid_until_unix_ms,
                        })
                    })
                    .collect();
                return output::print_json(&json!({
                    "master_key_id": status.master_key_id,
                    "previous_master_key_id": status.previous_master_key_id,
                    "keys_total": status.keys_total,
                    "keys_pending_reseal": status.keys_pending_reseal,
                    "tokens": tokens,
                }));
            }
            let rotation = match (
                status.previous_master_key_id.is_empty(),
                status.keys_pending_reseal,
            ) {
                (true, 0) => "none".to_string(),
                (true, n) => format!("{n} keys not sealed with the current key"),
                (false, 0) => format!(
                    "done; the previous key {} is no longer needed",
                    status.previous_master_key_id
                ),
                (false, n) => format!(
                    "from {}: {n} of {} keys left to re-seal",
                    status.previous_master_key_id, status.keys_total
                ),
            };
            let mut fields = vec![
                ("master key id", status.master_key_id.clone()),
                ("master key rotation", rotation),
                ("provider keys sealed", status.keys_total.to_string()),
            ];
            for t in &status.tokens {
                let previous = if t.previous_valid_until_unix_ms > 0 {
                    format!(
                        "previous valid {}",
                        output::until(t.previous_valid_until_unix_ms, now)
                    )
                } else {
                    "no previous token".to_string()
                };
                let label = match token_name(t.kind) {
                    "admin" => "admin token",
                    "join" => "join token",
                    _ => "token",
                };
                let rotated = if t.rotated_unix_ms > 0 {
                    format!("rotated {}", output::ago(t.rotated_unix_ms, now))
                } else {
                    "never rotated".to_string()
                };
                fields.push((label, format!("{rotated}, {previous}")));
            }
            output::print(&output::fields(&fields))
        }
    }
}
