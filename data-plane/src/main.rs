//! `fulcrum-proxy`: parses flags and environment, starts logging, and runs the data plane
//! until SIGTERM or Ctrl-C.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use fulcrum_listen::tls::ALPN_HTTP;
use fulcrum_listen::{ClientTlsFiles, HttpLimits, ServerTls, ServerTlsFiles};
use fulcrum_proto::model::Secret;
use fulcrum_proxy::{Config, DataPlane, LogLevel};
use tokio::net::TcpListener;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, reload};

/// Environment variable holding the join token. Not a flag: flags show up in `ps`.
const JOIN_TOKEN_ENV: &str = "FULCRUM_JOIN_TOKEN";

/// Fulcrum data plane: proxies LLM API traffic with config streamed from the control plane.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
#[command(
    after_help = "The join token is read from FULCRUM_JOIN_TOKEN. The log level follows the log_level setting; RUST_LOG, when set, wins."
)]
struct Args {
    /// gRPC URL of the control plane.
    #[arg(
        long,
        env = "FULCRUM_CONTROL_PLANE",
        default_value = "http://127.0.0.1:50051"
    )]
    control_plane: String,
    /// Address to serve clients and probes on.
    #[arg(long, env = "FULCRUM_LISTEN", default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// Stable id of this process in the cluster [default: the hostname, else random].
    #[arg(long, env = "FULCRUM_NODE_ID")]
    node_id: Option<String>,
    /// Seconds that in-flight requests may run after shutdown begins.
    #[arg(long, env = "FULCRUM_GRACE_PERIOD_SECS", default_value_t = 30)]
    grace_period_secs: u64,
    /// Log line format.
    #[arg(long, env = "FULCRUM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Threads that serve traffic [default: one per available CPU]. With 1, the whole proxy
    /// runs on one thread, which costs about 12% less CPU per request than a one-worker
    /// pool; give a container limited to one CPU exactly that.
    #[arg(long, env = "FULCRUM_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    worker_threads: Option<u16>,
    /// PEM certificate chain: serve clients over TLS (HTTP/1.1 and HTTP/2 by ALPN).
    #[arg(long, env = "FULCRUM_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "FULCRUM_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Seconds between looks at the certificate files; changed files are used for new
    /// connections without a restart (SIGHUP reloads at once).
    #[arg(long, env = "FULCRUM_TLS_RELOAD_SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    tls_reload_secs: u64,
    /// PEM CA certificates that the control plane's certificate must chain to (with an
    /// https:// --control-plane) [default: the system's CAs].
    #[arg(long, env = "FULCRUM_CONTROL_PLANE_CA")]
    control_plane_ca: Option<PathBuf>,
    /// Name the control plane's certificate must carry, when it is not the URL's host.
    #[arg(long, env = "FULCRUM_CONTROL_PLANE_SERVER_NAME")]
    control_plane_server_name: Option<String>,
    /// PEM client certificate presented to the control plane (mutual TLS).
    #[arg(long, env = "FULCRUM_CLIENT_CERT", requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(long, env = "FULCRUM_CLIENT_KEY", requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// Client connections open at once; more are closed on arrival.
    #[arg(long, env = "FULCRUM_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_connections: u64,
    /// Milliseconds a client has for the TLS handshake and for each request head; also
    /// how long an idle HTTP/1.1 connection stays open.
    #[arg(long, env = "FULCRUM_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    header_read_timeout_ms: u64,
    /// Largest request head (request line and headers) in bytes; larger gets 431.
    #[arg(long, env = "FULCRUM_MAX_HEADER_BYTES", default_value_t = 65_536, value_parser = clap::value_parser!(u64).range(1024..=16_777_216))]
    max_header_bytes: u64,
    /// Concurrent HTTP/2 streams per client connection.
    #[arg(long, env = "FULCRUM_HTTP2_MAX_STREAMS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    http2_max_streams: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let log_level = init_tracing(args.log_format);
    let workers = args.worker_threads.map_or_else(
        || std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        usize::from,
    );
    // One thread needs no work-stealing scheduler: the current-thread one skips its
    // cross-thread wakeups and atomics on every task switch.
    let runtime = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    }
    .context("cannot start the async runtime")?;
    runtime.block_on(run(args, log_level))
}

async fn run(args: Args, log_level: Option<LogLevel>) -> anyhow::Result<()> {
    let join_token = match std::env::var(JOIN_TOKEN_ENV) {
        Ok(token) if !token.trim().is_empty() => Secret::new(token.trim().to_string()),
        _ => bail!("{JOIN_TOKEN_ENV} is not set: set it to the control plane's join token"),
    };
    let node_id = match args.node_id {
        Some(id) if !id.trim().is_empty() => id.trim().to_string(),
        _ => default_node_id(),
    };
    let config = Config {
        control_plane: args.control_plane,
        join_token,
        node_id,
        grace_period: Duration::from_secs(args.grace_period_secs),
    };

    let limits = HttpLimits {
        max_connections: usize::try_from(args.max_connections)
            .context("--max-connections is too large")?,
        header_read_timeout: Duration::from_millis(args.header_read_timeout_ms),
        max_header_bytes: usize::try_from(args.max_header_bytes)
            .context("--max-header-bytes is too large")?,
        http2_max_concurrent_streams: args.http2_max_streams,
        ..HttpLimits::default()
    };
    let control_plane_tls = ClientTlsFiles {
        ca: args.control_plane_ca,
        cert: args.client_cert,
        key: args.client_key,
        server_name: args.control_plane_server_name,
    };
    let tls = ServerTlsFiles::from_flags(args.tls_cert, args.tls_key, None)?
        .map(|files| ServerTls::load(files, ALPN_HTTP))
        .transpose()
        .context("cannot load the TLS certificate")?;

    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let mut data_plane = DataPlane::new(config)
        .with_control_plane_tls(control_plane_tls)
        .with_limits(limits);
    if let Some(tls) = tls {
        data_plane = data_plane.with_tls(tls, Duration::from_secs(args.tls_reload_secs));
    }
    if let Some(level) = log_level {
        data_plane = data_plane.with_log_level(level);
    }
    data_plane
        .serve(listener, fulcrum_listen::shutdown_signal())
        .await?;
    Ok(())
}

/// Starts logging. Without `RUST_LOG`, the level starts at `info` and follows the
/// `log_level` setting through the handle returned.
fn init_tracing(format: LogFormat) -> Option<LogLevel> {
    // Colours only for a person at a terminal, not for log collectors.
    fn lines<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        match format {
            LogFormat::Text => tracing_subscriber::fmt::layer()
                .with_ansi(std::io::stdout().is_terminal())
                .boxed(),
            LogFormat::Json => tracing_subscriber::fmt::layer().json().boxed(),
        }
    }
    if let Ok(filter) = EnvFilter::try_from_default_env() {
        tracing_subscriber::registry()
            .with(filter)
            .with(lines(format))
            .init();
        return None;
    }
    let (filter, handle) = reload::Layer::new(EnvFilter::new("info"));
    tracing_subscriber::registry()
        .with(filter)
        .with(lines(format))
        .init();
    Some(LogLevel::new(move |level| {
        handle
            .reload(EnvFilter::new(level))
            .map_err(|e| e.to_string())
    }))
}

/// The hostname, unique per pod or machine; a random id where there is none.
fn default_node_id() -> String {
    let hostname = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|name| name.trim().to_string())
        .find(|name| !name.is_empty());
    if let Some(hostname) = hostname {
        return hostname;
    }
    // Without randomness two such nodes would share an id; 0 still starts the process.
    format!("dp-{:016x}", getrandom::u64().unwrap_or(0))
}
