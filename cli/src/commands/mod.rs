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
use fulcrum_proto::pb;

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
    /// PEM CA certificates that an https:// control plane's certificate must chain to
    /// [default: the system's CAs].
    #[arg(long, global = true, env = "FULCRUM_CA_CERT")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// PEM client certificate, for a control plane that requires one (mutual TLS).
    #[arg(long, global = true, env = "FULCRUM_CLIENT_CERT")]
    pub client_cert: Option<std::path::PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(long, global = true, env = "FULCRUM_CLIENT_KEY")]
    pub client_key: Option<std::path::PathBuf>,
    /// Name the control plane's certificate must carry, when it is not the endpoint's host.
    #[arg(long, global = true, env = "FULCRUM_SERVER_NAME")]
    pub server_name: Option<String>,
}

impl GlobalArgs {
    /// The TLS options towards the control plane.
    pub fn tls(&self) -> fulcrum_listen::ClientTlsFiles {
        fulcrum_listen::ClientTlsFiles {
            ca: self.ca_cert.clone(),
            cert: self.client_cert.clone(),
            key: self.client_key.clone(),
            server_name: self.server_name.clone(),
        }
    }
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
    client::connect(&global.endpoint, global.token.as_deref(), &global.tls()).await
}

async fn connect_security(global: &GlobalArgs) -> anyhow::Result<client::SecurityClient> {
    client::connect_security(&global.endpoint, global.token.as_deref(), &global.tls()).await
}

async fn connect_logs(global: &GlobalArgs, streaming: bool) -> anyhow::Result<LogClient> {
    client::connect_logs(
        &global.endpoint,
        global.token.as_deref(),
        &global.tls(),
        streaming,
    )
    .await
}

/// One line for stderr. gRPC errors show the server's message, which names the culprit;
/// the two that mean "wrong setup" say what to fix instead.
pub fn describe_error(err: &anyhow::Error, endpoint: &str) -> String {
    if let Some(tls) = fulcrum_listen::client::tls_failure(err.as_ref()) {
        return format!(
            "cannot talk to the control plane at {}: {tls}",
            client::normalize_endpoint(endpoint)
        );
    }
    // A connection cut under the call: against a TLS listener in the clear (the h2 codec
    // reads garbage), or by a control plane that wants a client certificate and closed
    // before its alert was read. Which one races, so both read as the same advice.
    let url = client::normalize_endpoint(endpoint);
    // A status's own Display is a debug dump; what cut the connection is in its source.
    let text = match err.downcast_ref::<tonic::Status>() {
        Some(status) => std::error::Error::source(status)
            .map_or_else(|| status.message().to_string(), client::error_chain),
        None => client::error_chain(err.as_ref()),
    };
    let cut = [
        "transport error",
        "operation was canceled",
        "connection closed",
        "broken pipe",
        "http2 error",
    ]
    .iter()
    .any(|needle| text.contains(needle));
    if cut && url.starts_with("http://") {
        return format!(
            "the control plane at {url} closed the connection ({text}): if it serves TLS, use an https:// endpoint"
        );
    }
    if cut && url.starts_with("https://") {
        return format!(
            "the control plane at {url} closed the connection ({text}): if it requires client certificates, give --client-cert and --client-key signed by its client CA"
        );
    }
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

/// A value parser for arguments that may hold a secret (a proxy password, a header value):
/// clap's own errors repeat the value, this one says only what is wrong with it.
#[derive(Clone)]
pub(crate) struct Secretive<F>(pub F);

impl<F, T> clap::builder::TypedValueParser for Secretive<F>
where
    F: Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<T, clap::Error> {
        let name = arg.map(ToString::to_string).unwrap_or_default();
        let fail = |why: &str| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("invalid value for '{name}': {why}\n"),
            )
            .with_cmd(cmd)
        };
        let value = value.to_str().ok_or_else(|| fail("not UTF-8"))?;
        (self.0)(value).map_err(|why| fail(&why))
    }
}

/// An outbound proxy URL, checked as the control plane will (the password never appears
/// in the error).
pub(crate) fn parse_proxy(value: &str) -> Result<String, String> {
    fulcrum_proto::model::ProxyUrl::parse(value)
        .map(|p| p.expose().to_string())
        .map_err(|e| e.message)
}

/// `Name: value`, checked as the control plane will.
pub(crate) fn parse_header(value: &str) -> Result<pb::UpstreamHeader, String> {
    let (name, header_value) = value
        .split_once(':')
        // The value may be a secret: not repeated.
        .ok_or_else(|| "invalid header: expected 'Name: value'".to_string())?;
    fulcrum_proto::model::outbound::parse_upstream_header(name, header_value)
        .map_err(|e| e.message)?;
    Ok(pb::UpstreamHeader {
        name: name.trim().to_string(),
        value: header_value.trim().to_string(),
    })
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
