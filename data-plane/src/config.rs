//! Data-plane configuration.

use std::time::Duration;

use fulcrum_proto::model::Secret;

/// Validated data-plane configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// gRPC URL of the control plane, e.g. `http://127.0.0.1:50051`.
    pub control_plane: String,
    /// Join token presented to the control plane.
    pub join_token: Secret<String>,
    /// Stable id of this process in the cluster (`status` shows it).
    pub node_id: String,
    /// How long in-flight requests may run after shutdown begins.
    pub grace_period: Duration,
}
