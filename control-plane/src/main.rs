//! `fulcrum-control`: parse flags and env, start tracing, serve until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use fulcrum_control::{Config, ControlPlane, Listeners};

/// Fulcrum control plane: config, key inventory and key health in sled, served over gRPC.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Folder for the sled store and the generated token files.
    #[arg(long, env = "FULCRUM_DATA_DIR", default_value = "./fulcrum-data")]
    data_dir: PathBuf,
    /// gRPC address (AdminService, DiscoveryService, health, reflection).
    #[arg(long, env = "FULCRUM_GRPC_LISTEN", default_value = "127.0.0.1:50051")]
    grpc_listen: SocketAddr,
    /// HTTP address (the web UI under /ui/, /healthz, /metrics).
    #[arg(long, env = "FULCRUM_HTTP_LISTEN", default_value = "127.0.0.1:8080")]
    http_listen: SocketAddr,
    /// Revisions kept in the change log; data planes further behind get a snapshot.
    #[arg(long, env = "FULCRUM_CHANGELOG_CAPACITY", default_value_t = 10_000)]
    changelog_capacity: u64,
    /// Process log format.
    #[arg(long, env = "FULCRUM_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Check the flags and open the store, then exit without serving.
    #[arg(long)]
    check_config: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_tracing(args.log_format);
    // Tokens are read from the environment here and nowhere else.
    let config = Config {
        data_dir: args.data_dir.clone(),
        admin_token: std::env::var("FULCRUM_TOKEN").ok(),
        join_token: std::env::var("FULCRUM_JOIN_TOKEN").ok(),
        changelog_capacity: args.changelog_capacity,
    };
    let control = ControlPlane::open(config)?;
    if args.check_config {
        println!(
            "config ok: store at revision {}",
            control.store().revision()
        );
        return Ok(());
    }
    if control.tokens().generated {
        println!(
            "generated tokens (stored in {} with mode 0600; shown only now):",
            args.data_dir.display()
        );
        println!("  admin token: {}", control.tokens().admin.expose());
        println!("  join token:  {}", control.tokens().join.expose());
    }
    let listeners = Listeners::bind(args.grpc_listen, args.http_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} / {}",
                args.grpc_listen, args.http_listen
            )
        })?;
    control.serve(listeners, shutdown_signal()).await?;
    Ok(())
}

fn init_tracing(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the control plane");
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}
