//! `fulcrumctl up`: a control plane and one data plane in one process, for a laptop or a
//! single small server.
//!
//! Order matters. Every listener is bound before anything starts, so a taken port fails
//! the whole command with nothing running. On shutdown the data plane stops first (it
//! drains client requests while its config source is still there), then the control plane
//! (which flushes the store).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::Args;
use fulcrum_control::store::secrets;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::GlobalArgs;
use crate::output;

/// How long client requests may run after shutdown begins.
const GRACE_PERIOD: Duration = Duration::from_secs(10);
/// The data plane's name in `fulcrumctl status`.
const NODE_ID: &str = "local";

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Folder for the store and the generated tokens.
    #[arg(long, default_value = "./fulcrum-data")]
    data_dir: PathBuf,
    /// Where the data plane serves clients (OpenAI-, Gemini- and Anthropic-style APIs).
    #[arg(long, default_value = "127.0.0.1:8000")]
    proxy_listen: SocketAddr,
    /// Where the control plane serves gRPC (admin and data-plane config stream).
    #[arg(long, default_value = "127.0.0.1:50051")]
    grpc_listen: SocketAddr,
    /// Where the control plane serves HTTP.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http_listen: SocketAddr,
    /// Join token for data planes; generated and stored in the data dir if not given.
    #[arg(long, env = "FULCRUM_JOIN_TOKEN", hide_env_values = true)]
    join_token: Option<String>,
    /// File with the master key that seals provider keys at rest (32 bytes, base64 or hex;
    /// or the key itself in FULCRUM_MASTER_KEY). Default: DATA_DIR/master.key, generated
    /// on first start.
    #[arg(long, env = "FULCRUM_MASTER_KEY_FILE")]
    master_key_file: Option<PathBuf>,
    /// File with the previous master key while rotating to a new one (or the key itself
    /// in FULCRUM_PREVIOUS_MASTER_KEY).
    #[arg(long, env = "FULCRUM_PREVIOUS_MASTER_KEY_FILE")]
    previous_master_key_file: Option<PathBuf>,
}

pub async fn run(args: &UpArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    // 1. Bind everything first: nothing runs if a port is taken.
    let grpc = bind(args.grpc_listen, "control plane gRPC", "--grpc-listen").await?;
    let http = bind(args.http_listen, "control plane HTTP", "--http-listen").await?;
    let proxy = bind(args.proxy_listen, "data plane", "--proxy-listen").await?;
    let grpc_addr = grpc
        .local_addr()
        .context("cannot read the gRPC listener's address")?;
    let http_addr = http
        .local_addr()
        .context("cannot read the HTTP listener's address")?;
    let proxy_addr = proxy
        .local_addr()
        .context("cannot read the data plane listener's address")?;

    // 2. Open the store and settle the tokens.
    let config = fulcrum_control::Config {
        data_dir: args.data_dir.clone(),
        admin_token: global.token.clone().filter(|t| !t.is_empty()),
        join_token: args.join_token.clone().filter(|t| !t.is_empty()),
        changelog_capacity: 10_000,
        master_keys: fulcrum_control::store::secrets::MasterKeys {
            current: secrets::key_source(
                args.master_key_file.clone(),
                std::env::var("FULCRUM_MASTER_KEY").ok(),
                "--master-key-file",
                "FULCRUM_MASTER_KEY",
            )
            .map_err(|e| anyhow!(e))?,
            previous: secrets::key_source(
                args.previous_master_key_file.clone(),
                std::env::var("FULCRUM_PREVIOUS_MASTER_KEY").ok(),
                "--previous-master-key-file",
                "FULCRUM_PREVIOUS_MASTER_KEY",
            )
            .map_err(|e| anyhow!(e))?,
        },
    };
    let control = fulcrum_control::ControlPlane::open(config).map_err(|err| {
        anyhow!(
            "cannot open the control plane in {}: {err}",
            args.data_dir.display()
        )
    })?;
    let tokens = control.tokens().clone();

    let control_url = format!("http://{}", connectable(grpc_addr));
    let data_plane = fulcrum_proxy::DataPlane::new(fulcrum_proxy::Config {
        control_plane: control_url.clone(),
        join_token: tokens.join.clone(),
        node_id: NODE_ID.to_string(),
        grace_period: GRACE_PERIOD,
    });

    output::print(&banner(&Banner {
        proxy: proxy_addr,
        http: http_addr,
        control_url: &control_url,
        data_dir: &args.data_dir,
        admin_token: tokens.admin.expose(),
        join_token: tokens.join.expose(),
        generated: tokens.generated,
        master_key_generated: control.master_key_generated(),
    }))?;

    // 3. Run both until a signal or until either stops on its own.
    let (stop_data_tx, stop_data_rx) = watch::channel(false);
    let (stop_control_tx, stop_control_rx) = watch::channel(false);
    let listeners = fulcrum_control::Listeners { grpc, http };
    let mut control_task: JoinHandle<Result<(), fulcrum_control::Error>> =
        tokio::spawn(control.serve(listeners, stopped(stop_control_rx)));
    let mut data_task: JoinHandle<Result<(), fulcrum_proxy::Error>> =
        tokio::spawn(data_plane.serve(proxy, stopped(stop_data_rx)));

    let mut control_done = None;
    let mut data_done = None;
    tokio::select! {
        signal = shutdown_signal() => {
            signal?;
            tracing::info!("shutting down: data plane first, then control plane");
        }
        result = &mut data_task => data_done = Some(result),
        result = &mut control_task => control_done = Some(result),
    }

    // 4. Stop the data plane, then the control plane. A second signal stops at once.
    let forced = tokio::spawn(async {
        if shutdown_signal().await.is_ok() {
            output::note("second signal: exiting without draining");
            std::process::exit(130);
        }
    });
    let _ = stop_data_tx.send(true);
    let data_result = match data_done {
        Some(result) => result,
        None => data_task.await,
    };
    let _ = stop_control_tx.send(true);
    let control_result = match control_done {
        Some(result) => result,
        None => control_task.await,
    };
    forced.abort();

    let data_result = flatten("data plane", data_result);
    let control_result = flatten("control plane", control_result);
    data_result.and(control_result)
}

/// Resolves once the flag turns true (or its sender is gone, which also means stop).
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

async fn bind(addr: SocketAddr, what: &str, flag: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|err| {
        if err.kind() == std::io::ErrorKind::AddrInUse {
            anyhow!(
                "cannot listen on {addr} for the {what}: the address is already in use (stop the other process or choose another address with {flag})"
            )
        } else {
            anyhow!("cannot listen on {addr} for the {what}: {err}")
        }
    })
}

/// The address a local client dials: a wildcard bind is reached over loopback.
fn connectable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

fn flatten<E: std::fmt::Display>(
    what: &str,
    result: Result<Result<(), E>, tokio::task::JoinError>,
) -> anyhow::Result<()> {
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(anyhow!("the {what} stopped: {err}")),
        Err(err) if err.is_panic() => Err(anyhow!("the {what} crashed")),
        Err(_) => Err(anyhow!("the {what} was cancelled")),
    }
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result.context("cannot listen for ctrl-c"),
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c()
            .await
            .context("cannot listen for ctrl-c")
    }
}

struct Banner<'a> {
    proxy: SocketAddr,
    http: SocketAddr,
    control_url: &'a str,
    data_dir: &'a std::path::Path,
    admin_token: &'a str,
    join_token: &'a str,
    generated: bool,
    master_key_generated: Option<&'a std::path::Path>,
}

fn banner(b: &Banner<'_>) -> String {
    let mut text = String::from("fulcrum is up\n\n");
    text.push_str(&output::fields(&[
        (
            "proxy (clients)",
            format!("http://{}", connectable(b.proxy)),
        ),
        ("control plane gRPC", b.control_url.to_string()),
        (
            "control plane HTTP",
            format!("http://{}", connectable(b.http)),
        ),
        ("data dir", b.data_dir.display().to_string()),
        ("admin token", b.admin_token.to_string()),
        ("join token", b.join_token.to_string()),
    ]));
    if b.generated {
        text.push_str(&format!(
            "\nthe tokens were generated and stored in {}; keep them secret\n",
            b.data_dir.display()
        ));
    }
    if let Some(path) = b.master_key_generated {
        text.push_str(&format!(
            "\ngenerated the master key that seals provider keys at rest: {} (mode 0600);\nthe store cannot be read without it: keep a copy somewhere else\n",
            path.display()
        ));
    }
    text.push_str(&format!(
        "\nin another shell:\n  export FULCRUM_TOKEN={}\n",
        b.admin_token
    ));
    if b.control_url != "http://127.0.0.1:50051" {
        text.push_str(&format!("  export FULCRUM_ENDPOINT={}\n", b.control_url));
    }
    text.push_str("  fulcrumctl status\n\nctrl-c stops both planes\n");
    text
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::commands::{Cli, Command};

    #[test]
    fn defaults() {
        let cli = Cli::try_parse_from(["fulcrumctl", "up"]).expect("parses");
        let Command::Up(args) = cli.command else {
            panic!("not up");
        };
        assert_eq!(args.data_dir, PathBuf::from("./fulcrum-data"));
        assert_eq!(
            args.proxy_listen,
            "127.0.0.1:8000".parse::<SocketAddr>().expect("addr")
        );
        assert_eq!(
            args.grpc_listen,
            "127.0.0.1:50051".parse::<SocketAddr>().expect("addr")
        );
        assert_eq!(
            args.http_listen,
            "127.0.0.1:8080".parse::<SocketAddr>().expect("addr")
        );
    }

    #[test]
    fn wildcard_binds_are_dialed_over_loopback() {
        let any: SocketAddr = "0.0.0.0:50051".parse().expect("addr");
        assert_eq!(connectable(any).to_string(), "127.0.0.1:50051");
        let any6: SocketAddr = "[::]:1".parse().expect("addr");
        assert_eq!(connectable(any6).to_string(), "[::1]:1");
    }

    #[tokio::test]
    async fn a_taken_port_is_named() {
        let taken = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = taken.local_addr().expect("addr");
        let err = bind(addr, "data plane", "--proxy-listen")
            .await
            .expect_err("taken");
        let message = err.to_string();
        assert!(message.contains(&addr.to_string()), "{message}");
        assert!(message.contains("already in use"), "{message}");
        assert!(message.contains("--proxy-listen"), "{message}");
    }
}
