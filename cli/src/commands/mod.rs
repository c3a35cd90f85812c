//! The command tree and what each command does.
//!
//! Cheap checks (names, types, states, URLs) run as clap value parsers, so bad input fails
//! as a usage error before any connection is made.

mod keys;
mod logs;
mod providers;
mod routes;
mod security;
mod settings;
mod stats;
mod status;
mod tokens;
mod up;

use clap::{Args, Parser, Subcommand};
use tonic::Code;

use crate::client::{self, AdminClient, LogClient};
use crate::output::Format;

/// Administer a Fulcrum LLM gateway, or run one locally with `up`.
#[derive(Debug, Parser)]
#[command(name = "fulcrumctl", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Control plane gRPC address.
    #[arg(
        long,
        global = true,
        env = "FULCRUM_ENDPOINT",
        default_value = "http://127.0.0.1:50051"
    )]
    pub endpoint: String,
    /// Admin token (for `up`: the admin token to use instead of a generated one).
    #[arg(long, global = true, env = "FULCRUM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Output format: aligned tables for people, one JSON document for scripts.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a control plane and one data plane in this process.
    Up(up::UpArgs),
    /// Manage providers (upstream services with their own key pools).
    #[command(subcommand)]
    Providers(providers::ProvidersCommand),
    /// Manage provider API keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Manage routes from client model names to providers.
    #[command(subcommand)]
    Routes(routes::RoutesCommand),
    /// Manage the tokens clients present to the data planes.
    #[command(subcommand)]
    Tokens(tokens::TokensCommand),
    /// Read and change runtime settings.
    #[command(subcommand)]
    Settings(settings::SettingsCommand),
    /// Show the revision, counts and connected data planes.
    Status,
    /// Search and follow the request and error records the data planes report.
    #[command(subcommand)]
    Logs(logs::LogsCommand),
    /// Requests, statuses, errors, tokens and latency per key, model or provider.
    Stats(stats::StatsArgs),
    /// The master key sealing provider keys at rest, and the admin and join tokens.
    #[command(subcommand)]
    Security(security::SecurityCommand),
}

impl Cli {
    pub fn is_up(&self) -> bool {
        matches!(self.command, Command::Up(_))
    }

    /// Checks that need more than one argument at a time; a failure is a usage error.
    pub fn check(&self) -> Result<(), String> {
        match &self.command {
            Command::Settings(cmd) => settings::check(cmd),
            Command::Routes(cmd) => routes::check(cmd),
            Command::Stats(args) => stats::check(args),
            _ => Ok(()),
        }
    }
}

pub async fn run(cli: &Cli) -> anyhow::Result<()> {
    let global = &cli.global;
    match &cli.command {
        Command::Up(args) => up::run(args, global).await,
        Command::Providers(cmd) => {
            providers::run(cmd, &mut connect(global).await?, global.output).await
        }
        Command::Keys(keys::KeysCommand::Usage(args)) => {
            stats::key_usage(args, &mut connect_logs(global, false).await?, global.output).await
        }
        Command::Keys(cmd) => keys::run(cmd, &mut connect(global).await?, global.output).await,
        Command::Routes(cmd) => routes::run(cmd, &mut connect(global).await?, global.output).await,
        // The control plane's own tokens are rotated over `SecurityService`.
        Command::Tokens(tokens::TokensCommand::RotateAdmin(args)) => {
            let mut client = connect_security(global).await?;
            security::rotate(security::TokenKind::Admin, args, &mut client, global.output).await
        }
        Command::Tokens(tokens::TokensCommand::RotateJoin(args)) => {
            let mut client = connect_security(global).await?;
            security::rotate(security::TokenKind::Join, args, &mut client, global.output).await
        }
        Command::Tokens(tokens::TokensCommand::RetirePrevious { kind }) => {
            let mut client = connect_security(global).await?;
            security::retire(*kind, &mut client, global.output).await
        }
        Command::Tokens(cmd) => tokens::run(cmd, &mut connect(global).await?, global.output).await,
        Command::Security(cmd) => {
            security::run(cmd, &mut connect_security(global).await?, global.output).await
        }
        Command::Settings(cmd) => {
            settings::run(cmd, &mut connect(global).await?, global.output).await
        }
        Command::Status => status::run(&mut connect(global).await?, global.output).await,
        Command::Logs(cmd) => {
            let streaming = matches!(cmd, logs::LogsCommand::Tail(_));
            logs::run(
                cmd,
                &mut connect_logs(global, streaming).await?,
                global.output,
            )
            .await
        }
        Command::Stats(args) => {
            stats::run(args, &mut connect_logs(global, false).await?, global.output).await
        }
    }
}

async fn connect(global: &GlobalArgs) -> anyhow::Result<AdminClient> {
    client::connect(&global.endpoint, global.token.as_deref()).await
}

async fn connect_security(global: &GlobalArgs) -> anyhow::Result<client::SecurityClient> {
    client::connect_security(&global.endpoint, global.token.as_deref()).await
}

async fn connect_logs(global: &GlobalArgs, streaming: bool) -> anyhow::Result<LogClient> {
    client::connect_logs(&global.endpoint, global.token.as_deref(), streaming).await
}

/// One line for stderr. gRPC errors show the server's message, which names the culprit;
/// the two that mean "wrong setup" say what to fix instead.
pub fn describe_error(err: &anyhow::Error, endpoint: &str) -> String {
    let Some(status) = err.downcast_ref::<tonic::Status>() else {
        return format!("{err:#}");
    };
    let message = status.message().trim();
    match status.code() {
        Code::Unauthenticated => {
            "the control plane refused the admin token (set FULCRUM_TOKEN or --token)".to_string()
        }
        Code::Unavailable => {
            let detail = if message.is_empty() {
                "unavailable"
            } else {
                message
            };
            format!(
                "cannot reach the control plane at {}: {detail}",
                client::normalize_endpoint(endpoint)
            )
        }
        Code::DeadlineExceeded => format!(
            "the control plane at {} did not answer in time",
            client::normalize_endpoint(endpoint)
        ),
        // tonic's own deadline (see `client::REQUEST_TIMEOUT`) ends the call this way.
        Code::Cancelled if message == "Timeout expired" => format!(
            "the control plane at {} did not answer in time",
            client::normalize_endpoint(endpoint)
        ),
        _ if message.is_empty() => format!(
            "the control plane answered: {}",
            status.code().description()
        ),
        _ => message.to_string(),
    }
}

// === value parsers shared by the commands ===

pub(crate) fn parse_provider_name(value: &str) -> Result<String, String> {
    fulcrum_proto::model::validate_provider_name(value).map_err(|e| e.message)?;
    Ok(value.to_string())
}

pub(crate) fn parse_base_url(value: &str) -> Result<String, String> {
    fulcrum_proto::model::validate_base_url(value).map_err(|e| e.message)?;
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_errors_read_as_one_line() {
        let endpoint = "http://127.0.0.1:1";
        let err = anyhow::Error::new(tonic::Status::not_found("provider \"x\" not found"));
        assert_eq!(describe_error(&err, endpoint), "provider \"x\" not found");
        let err = anyhow::Error::new(tonic::Status::unauthenticated("bad token"));
        assert_eq!(
            describe_error(&err, endpoint),
            "the control plane refused the admin token (set FULCRUM_TOKEN or --token)"
        );
        let err = anyhow::Error::new(tonic::Status::unavailable("connection refused"));
        assert_eq!(
            describe_error(&err, endpoint),
            "cannot reach the control plane at http://127.0.0.1:1: connection refused"
        );
    }

    #[test]
    fn global_flags_anywhere() {
        let cli = Cli::try_parse_from(["fulcrumctl", "status", "-o", "json", "--token", "t"])
            .expect("parses");
        assert_eq!(cli.global.output, Format::Json);
        assert_eq!(cli.global.token.as_deref(), Some("t"));
    }

    #[test]
    fn unknown_output_format_is_a_usage_error() {
        let err = Cli::try_parse_from(["fulcrumctl", "-o", "yaml", "status"]).expect_err("rejects");
        assert_eq!(err.exit_code(), 2);
    }
}
