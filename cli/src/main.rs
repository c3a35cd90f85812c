//! `fulcrumctl`: every admin task over the control plane's gRPC `AdminService`, plus `up`,
//! which runs a control plane and one data plane in this process.

mod client;
mod commands;
mod output;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use commands::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(message) = cli.check() {
        Cli::command()
            .error(clap::error::ErrorKind::ValueValidation, message)
            .exit();
    }
    init_tracing(cli.is_up());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(&cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!(
                "error: {}",
                commands::describe_error(&err, &cli.global.endpoint)
            );
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr so that stdout carries only the command's answer. `RUST_LOG` overrides
/// the level; admin commands are quiet unless something is wrong.
fn init_tracing(is_up: bool) {
    let default = if is_up { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}
