//! Errors, one type per boundary: [`Error`] for what the embedding program sees,
//! [`Rejection`] for a config response the data plane refuses (it becomes a NACK), and
//! `StreamError` for a config stream that broke (the data plane reconnects).

use std::fmt;
use std::io;

use fulcrum_proto::pb;

/// Why [`DataPlane::serve`](crate::DataPlane::serve) could not start or stopped early.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The control plane address does not parse as a URI.
    #[error("invalid control plane url {url:?}")]
    ControlPlaneUrl {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// The join token cannot travel in an HTTP header. The token itself is never shown.
    #[error("the join token must be visible ascii to be sent as a header")]
    JoinToken,
    /// The listener handed to `serve` has no local address.
    #[error("cannot read the listener's local address")]
    ListenerAddr(#[source] io::Error),
    /// The pooled upstream HTTP client could not be built (no TLS roots, for one).
    #[error("cannot build the upstream http client: {0}")]
    UpstreamClient(String),
    /// The TLS options towards the control plane do not fit its URL, or their files do
    /// not load.
    #[error("control plane tls: {0}")]
    ControlPlaneTls(String),
    /// One of the data plane's own tasks panicked: a bug.
    #[error("the {task} task panicked")]
    TaskPanicked {
        task: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
}

/// Why a config response was refused. It is answered with a NACK and the last good config
/// stays in force.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// One or more resources failed validation or refer to resources that do not exist.
    #[error("{reason}")]
    Invalid {
        reason: String,
        /// The culprits, capped so that a NACK stays small.
        rejected: Vec<pb::ResourceRef>,
    },
    /// A delta does not apply to the revision this node holds.
    #[error("delta base revision {base} is not the applied revision {applied}")]
    BaseMismatch { base: u64, applied: u64 },
    /// A delta names another store than the one the applied config came from.
    #[error("delta from store {delta:?} does not apply to a config from store {applied:?}")]
    StoreMismatch { delta: String, applied: String },
    /// A delta arrived before any snapshot.
    #[error("delta received before any snapshot")]
    NoBase,
    /// A delta whose revision is older than its base.
    #[error("delta revision {revision} is older than its base revision {base}")]
    RevisionBeforeBase { revision: u64, base: u64 },
    /// A response carrying neither a snapshot nor a delta.
    #[error("response has neither a snapshot nor a delta")]
    NoBody,
}

// === impl Rejection ===

impl Rejection {
    /// Whether the node lost track of the control plane's revisions, so that only a
    /// snapshot can bring it back. Invalid resources are not fixed by a snapshot: the same
    /// resources would be sent again.
    pub fn needs_resync(&self) -> bool {
        !matches!(self, Rejection::Invalid { .. })
    }

    /// The NACK that answers the refused response.
    pub fn to_nack(&self) -> pb::Nack {
        let rejected = match self {
            Rejection::Invalid { rejected, .. } => rejected.clone(),
            _ => Vec::new(),
        };
        pb::Nack {
            reason: self.to_string(),
            rejected,
            resync: self.needs_resync(),
        }
    }
}

/// Why a config stream ended. The data plane keeps its config and reconnects.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StreamError {
    #[error("cannot connect to the control plane")]
    Connect(#[source] tonic::transport::Error),
    /// The control plane answered with a gRPC status, when opening or mid-stream. A
    /// transport failure (a refused client certificate) hides in its source.
    #[error("control plane answered {}: {}{}", .0.code(), .0.message(), cause(.0))]
    Status(tonic::Status),
    #[error("the control plane closed the config stream")]
    Closed,
    /// Applying a response panicked: a bug, but the last good config is still intact.
    #[error("applying a config response panicked")]
    ApplyPanicked(#[source] tokio::task::JoinError),
}

// === impl StreamError ===

impl StreamError {
    /// A hint for the operator when the cause is on their side.
    pub(crate) fn hint(&self) -> Option<&'static str> {
        let tls = match self {
            StreamError::Connect(e) => fulcrum_listen::client::tls_failure(e),
            StreamError::Status(status) => fulcrum_listen::client::tls_failure(status),
            StreamError::Closed | StreamError::ApplyPanicked(_) => None,
        };
        if let Some(tls) = tls {
            return Some(tls.advice);
        }
        match self {
            StreamError::Status(status) => match status.code() {
                tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                    Some("check FULCRUM_JOIN_TOKEN against the control plane's join token")
                }
                _ => None,
            },
            StreamError::Connect(_) => {
                Some("check that the control plane is running and reachable")
            }
            StreamError::Closed | StreamError::ApplyPanicked(_) => None,
        }
    }
}

/// `: <what failed underneath>` for a status made from a transport error (a TLS alert,
/// a reset), whose message alone says only "transport error".
fn cause(status: &tonic::Status) -> String {
    std::error::Error::source(status)
        .map_or_else(String::new, |source| format!(": {}", Chain(source)))
}

/// Displays an error with its sources, `outer: inner: innermost`, for one-line logs.
pub(crate) struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(err) = source {
            write!(f, ": {err}")?;
            source = err.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_invalid_resources_skip_resync() {
        let invalid = Rejection::Invalid {
            reason: "bad".into(),
            rejected: vec![],
        };
        assert!(!invalid.to_nack().resync);
        let mismatch = Rejection::BaseMismatch {
            base: 1,
            applied: 2,
        };
        let nack = mismatch.to_nack();
        assert!(nack.resync);
        assert_eq!(
            nack.reason,
            "delta base revision 1 is not the applied revision 2"
        );
    }
}
