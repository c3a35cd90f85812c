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

/// Limits on the gRPC listener, so that one client cannot take all of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcLimits {
    /// Largest message decoded or encoded: a bulk import or a snapshot of 100,000 keys is
    /// several MiB, over tonic's 4 MiB default.
    pub max_message_bytes: usize,
    /// Requests served at once on one connection (config and telemetry streams count).
    pub concurrency_per_connection: usize,
    /// HTTP/2 streams open at once on one connection.
    pub max_concurrent_streams: u32,
    /// Largest request header list.
    pub max_header_bytes: u32,
    /// HTTP/2 ping interval; a peer that does not answer within `keepalive_timeout` is
    /// disconnected.
    pub keepalive_interval: std::time::Duration,
    pub keepalive_timeout: std::time::Duration,
    /// Time a client has for the TLS handshake.
    pub handshake_timeout: std::time::Duration,
}

impl Default for GrpcLimits {
    fn default() -> Self {
        Self {
            max_message_bytes: crate::MAX_GRPC_MESSAGE_BYTES,
            concurrency_per_connection: 64,
            max_concurrent_streams: 128,
            max_header_bytes: 64 * 1024,
            keepalive_interval: std::time::Duration::from_secs(30),
            keepalive_timeout: std::time::Duration::from_secs(10),
            handshake_timeout: std::time::Duration::from_secs(10),
        }
    }
}
