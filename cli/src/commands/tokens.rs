//! `fulcrumctl tokens ...`: the tokens clients present to the data planes.

use anyhow::bail;
use clap::Subcommand;
use fulcrum_proto::model::validate_token_name;
use fulcrum_proto::pb;
use serde_json::{Value, json};

use crate::client::AdminClient;
use crate::output::{self, Format, Table};

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create a client token; it is printed once and never shown again.
    Create {
        #[arg(value_parser = parse_token_name)]
        name: String,
    },
    /// List client tokens (names and prefixes).
    List,
    /// Revoke a client token.
    Revoke {
        #[arg(value_parser = parse_token_name)]
        name: String,
    },
    /// Replace the control plane's admin token; the old one stays valid for --grace.
    RotateAdmin(super::security::RotateArgs),
    /// Replace the join token data planes present; the old one stays valid for --grace.
    /// Connected data planes keep their streams; they need the new token to reconnect.
    RotateJoin(super::security::RotateArgs),
    /// Make the previous admin or join token invalid now, ending its grace time.
    RetirePrevious {
        #[arg(value_enum)]
        kind: super::security::TokenKind,
    },
}

pub async fn run(
    cmd: &TokensCommand,
    client: &mut AdminClient,
    format: Format,
) -> anyhow::Result<()> {
    match cmd {
        TokensCommand::Create { name } => {
            let request = pb::CreateClientTokenRequest { name: name.clone() };
            let response = client.create_client_token(request).await?.into_inner();
            let Some(info) = response.client_token else {
                bail!("the control plane answered without the token's details");
            };
            if format == Format::Json {
                return output::print_json(&json!({
                    "token": response.token,
                    "client_token": output::client_token_json(&info),
                    "revision": response.revision,
                }));
            }
            output::print(&format!(
                "created client token {:?} (revision {})\n\n    {}\n",
                info.name, response.revision, response.token
            ))?;
            output::note("note: this token is not shown again; store it now");
            Ok(())
        }
        TokensCommand::List => {
            let response = client
                .list_client_tokens(pb::ListClientTokensRequest {})
                .await?
                .into_inner();
            if format == Format::Json {
                let tokens: Vec<Value> = response
                    .client_tokens
                    .iter()
                    .map(output::client_token_json)
                    .collect();
                return output::print_json(&json!({ "client_tokens": tokens }));
            }
            if response.client_tokens.is_empty() {
                output::note("no client tokens (create one with `fulcrumctl tokens create NAME`)");
                return Ok(());
            }
            let now = output::now_unix_ms();
            let mut table = Table::new(["NAME", "PREFIX", "CREATED"]);
            for t in &response.client_tokens {
                table.row(vec![
                    t.name.clone(),
                    format!("{}...", t.prefix),
                    output::ago(t.created_unix_ms, now),
                ]);
            }
            output::print(&table.render())
        }
        TokensCommand::RotateAdmin(_)
        | TokensCommand::RotateJoin(_)
        | TokensCommand::RetirePrevious { .. } => {
            // Dispatched to `SecurityService` in `commands::run`.
            anyhow::bail!("token rotation goes to the security service")
        }
        TokensCommand::Revoke { name } => {
            let request = pb::RevokeClientTokenRequest { name: name.clone() };
            let response = client.revoke_client_token(request).await?.into_inner();
            if format == Format::Json {
                return output::print_json(&json!({ "name": name, "revision": response.revision }));
            }
            output::print(&format!(
                "revoked client token {name:?} (revision {}); data planes refuse it once they apply that revision",
                response.revision
            ))
        }
    }
}

fn parse_token_name(value: &str) -> Result<String, String> {
    validate_token_name(value).map_err(|e| e.message)?;
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::commands::Cli;

    #[test]
    fn token_names_are_checked() {
        assert!(Cli::try_parse_from(["fulcrumctl", "tokens", "create", "team-a.prod"]).is_ok());
        assert!(Cli::try_parse_from(["fulcrumctl", "tokens", "create", "-bad"]).is_err());
        assert!(Cli::try_parse_from(["fulcrumctl", "tokens", "revoke", "a b"]).is_err());
    }

    #[test]
    fn rotation_arguments_are_checked() {
        use super::TokensCommand;
        use crate::commands::Command;
        let cli = Cli::try_parse_from(["fulcrumctl", "tokens", "rotate-join", "--grace", "2h"])
            .expect("parses");
        let Command::Tokens(TokensCommand::RotateJoin(args)) = cli.command else {
            panic!("not rotate-join");
        };
        assert_eq!(args.grace.as_secs(), 7200);
        assert!(!args.retire_old);
        let cli = Cli::try_parse_from(["fulcrumctl", "tokens", "rotate-admin"]).expect("parses");
        let Command::Tokens(TokensCommand::RotateAdmin(args)) = cli.command else {
            panic!("not rotate-admin");
        };
        assert_eq!(args.grace.as_secs(), 86_400, "one day by default");
        assert!(
            Cli::try_parse_from(["fulcrumctl", "tokens", "rotate-admin", "--retire-old"]).is_ok()
        );
        assert!(
            Cli::try_parse_from([
                "fulcrumctl",
                "tokens",
                "rotate-admin",
                "--retire-old",
                "--grace",
                "1h"
            ])
            .is_err(),
            "no grace time without an overlap"
        );
        assert!(
            Cli::try_parse_from(["fulcrumctl", "tokens", "rotate-admin", "--grace", "soon"])
                .is_err()
        );
        assert!(
            Cli::try_parse_from(["fulcrumctl", "tokens", "retire-previous", "client"]).is_err()
        );
        assert!(Cli::try_parse_from(["fulcrumctl", "tokens", "retire-previous", "join"]).is_ok());
    }
}
