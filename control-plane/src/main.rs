//! `fulcrum-control`: parse flags and env, start tracing, serve until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use fulcrum_control::store::secrets::{self, MasterKey, MasterKeys};
use fulcrum_control::{Config, ControlPlane, GrpcLimits, Listeners};
use fulcrum_listen::{HttpLimits, ServerTlsFiles};

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
    /// PEM certificate chain: serve gRPC and HTTP over TLS.
    #[arg(long, env = "FULCRUM_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "FULCRUM_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// PEM CA certificates: gRPC clients (data planes, fulcrumctl) must present a
    /// certificate that chains to one of them (mutual TLS). HTTP asks for none.
    #[arg(long, env = "FULCRUM_CLIENT_CA")]
    client_ca: Option<PathBuf>,
    /// Seconds between looks at the certificate files; changed files are used for new
    /// connections without a restart (SIGHUP reloads at once).
    #[arg(long, env = "FULCRUM_TLS_RELOAD_SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    tls_reload_secs: u64,
    /// Largest gRPC message received or sent, in bytes (bulk imports of 100,000 keys need
    /// tens of MiB).
    #[arg(long, env = "FULCRUM_GRPC_MAX_MESSAGE_BYTES", default_value_t = 256 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(4096..=4_294_967_295))]
    grpc_max_message_bytes: u64,
    /// gRPC calls served at once on one connection (streams count).
    #[arg(long, env = "FULCRUM_GRPC_CONCURRENCY_PER_CONNECTION", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    grpc_concurrency_per_connection: u64,
    /// HTTP/2 streams open at once on one gRPC connection.
    #[arg(long, env = "FULCRUM_GRPC_MAX_STREAMS", default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..))]
    grpc_max_streams: u32,
    /// Connections open at once on the HTTP listener.
    #[arg(long, env = "FULCRUM_HTTP_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    http_max_connections: u64,
    /// Milliseconds a client has for the TLS handshake and each request head (gRPC: the
    /// handshake); also the HTTP/1.1 idle timeout.
    #[arg(long, env = "FULCRUM_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    header_read_timeout_ms: u64,
    /// Check the flags and open the store, then exit without serving.
    #[arg(long)]
    check_config: bool,
    /// File with the master key that seals provider keys at rest (32 bytes, base64 or
    /// hex). The key itself may come from FULCRUM_MASTER_KEY instead. Default:
    /// DATA_DIR/master.key, generated on a new store.
    #[arg(long, env = "FULCRUM_MASTER_KEY_FILE")]
    master_key_file: Option<PathBuf>,
    /// File with the previous master key, during a rotation (or FULCRUM_PREVIOUS_MASTER_KEY).
    #[arg(long, env = "FULCRUM_PREVIOUS_MASTER_KEY_FILE")]
    previous_master_key_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Print a new random master key (base64), or write it to a new file with mode 0600.
    GenMasterKey {
        /// Write the key to this file (never overwritten) and print only its id.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Command::GenMasterKey { out }) = &args.command {
        return gen_master_key(out.as_deref());
    }
    init_tracing(args.log_format);
    // Tokens and master keys are read from the environment here and nowhere else.
    let config = Config {
        data_dir: args.data_dir.clone(),
        admin_token: std::env::var("FULCRUM_TOKEN").ok(),
        join_token: std::env::var("FULCRUM_JOIN_TOKEN").ok(),
        changelog_capacity: args.changelog_capacity,
        master_keys: MasterKeys {
            current: secrets::key_source(
                args.master_key_file.clone(),
                std::env::var("FULCRUM_MASTER_KEY").ok(),
                "--master-key-file",
                "FULCRUM_MASTER_KEY",
            )
            .map_err(anyhow::Error::msg)?,
            previous: secrets::key_source(
                args.previous_master_key_file.clone(),
                std::env::var("FULCRUM_PREVIOUS_MASTER_KEY").ok(),
                "--previous-master-key-file",
                "FULCRUM_PREVIOUS_MASTER_KEY",
            )
            .map_err(anyhow::Error::msg)?,
        },
    };
    let header_read_timeout = Duration::from_millis(args.header_read_timeout_ms);
    let grpc_limits = GrpcLimits {
        max_message_bytes: usize::try_from(args.grpc_max_message_bytes)
            .context("--grpc-max-message-bytes is too large")?,
        concurrency_per_connection: usize::try_from(args.grpc_concurrency_per_connection)
            .context("--grpc-concurrency-per-connection is too large")?,
        max_concurrent_streams: args.grpc_max_streams,
        handshake_timeout: header_read_timeout,
        ..GrpcLimits::default()
    };
    let http_limits = HttpLimits {
        max_connections: usize::try_from(args.http_max_connections)
            .context("--http-max-connections is too large")?,
        header_read_timeout,
        ..HttpLimits::default()
    };
    let tls = ServerTlsFiles::from_flags(args.tls_cert, args.tls_key, args.client_ca)?;
    let mut control = ControlPlane::open(config)?.with_limits(grpc_limits, http_limits);
    if let Some(files) = tls {
        control = control.with_tls(files, Duration::from_secs(args.tls_reload_secs))?;
    }
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
    if let Some(path) = control.master_key_generated() {
        println!(
            "generated the master key that seals provider keys at rest: {} (mode 0600); keep a copy elsewhere",
            path.display()
        );
    }
    let listeners = Listeners::bind(args.grpc_listen, args.http_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} / {}",
                args.grpc_listen, args.http_listen
            )
        })?;
    control
        .serve(listeners, fulcrum_listen::shutdown_signal())
        .await?;
    Ok(())
}

fn gen_master_key(out: Option<&std::path::Path>) -> anyhow::Result<()> {
    let (key, text) = MasterKey::generate().map_err(anyhow::Error::msg)?;
    match out {
        Some(path) => {
            secrets::write_key_file(path, &text)?;
            println!(
                "wrote master key id {} to {} (mode 0600)",
                key.id(),
                path.display()
            );
        }
        None => println!("{}", text.expose()),
    }
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
