//! Control-plane configuration: flags and env in, a validated `Config` out.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Validated control-plane configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Folder that holds the sled store and the generated token files.
    pub data_dir: PathBuf,
    /// Admin token from the environment; generated and stored in `data_dir` if `None`.
    pub admin_token: Option<String>,
    /// Join token from the environment; generated and stored in `data_dir` if `None`.
    pub join_token: Option<String>,
    /// How many revisions the change log keeps; older nodes get a snapshot.
    pub changelog_capacity: u64,
    /// The master key that seals provider keys at rest, and the previous one during a
    /// rotation (see `store::secrets`).
    pub master_keys: crate::store::secrets::MasterKeys,
}

/// Listeners already bound, so that callers (tests, `fulcrumctl up`) can bind port 0.
pub struct Listeners {
    pub grpc: tokio::net::TcpListener,
    pub http: tokio::net::TcpListener,
}

impl Listeners {
    pub async fn bind(grpc: SocketAddr, http: SocketAddr) -> std::io::Result<Self> {
        Ok(Self {
            grpc: tokio::net::TcpListener::bind(grpc).await?,
            http: tokio::net::TcpListener::bind(http).await?,
        })
    }
}
