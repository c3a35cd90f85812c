//! `mock-upstream`: the scriptable mock LLM upstream (OpenAI, Gemini, Vertex AI Express
//! and Anthropic APIs) as a standalone server for benchmarks and manual runs of the SDK
//! scripts in `tests/sdk/`. Every key gets `Behaviour::Ok`, requests are not recorded.
//!
//! ```text
//! mock-upstream [--listen 127.0.0.1:PORT] [--threads N]
//! ```
//!
//! Prints `listening on ADDR` once bound and exits on SIGTERM or Ctrl-C.

use std::io::Write as _;
use std::net::SocketAddr;

use clap::Parser;
use fulcrum_tests::mock::{MockOptions, MockUpstream};

#[derive(Debug, Parser)]
#[command(
    name = "mock-upstream",
    about = "Mock OpenAI, Gemini and Anthropic upstream for benchmarks"
)]
struct Args {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    threads: u16,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::from(args.threads))
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mock = MockUpstream::try_start_with(MockOptions {
            listen: args.listen,
            record_requests: false,
        })
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
        {
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "listening on {}", mock.addr())?;
            stdout.flush()?;
        }
        shutdown_signal().await?;
        drop(mock);
        Ok(())
    })
}

async fn shutdown_signal() -> std::io::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result,
        _ = terminate.recv() => Ok(()),
    }
}
