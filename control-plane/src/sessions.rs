//! Ownership of the tasks that serve long-lived gRPC streams.
//!
//! Each stream's task holds a [`Sessions`] clone for as long as it runs. At shutdown the
//! server drops its own clone and waits in [`SessionsDone::wait`] until every task has let
//! go of its clone, so that nothing still uses the store when it is flushed and closed.

use std::time::Duration;

use tokio::sync::{mpsc, watch};

/// Held by every stream task, and by the services that spawn them.
#[derive(Clone, Debug)]
pub struct Sessions {
    _alive: mpsc::Sender<()>,
    /// Turns true at shutdown: streams end when they see it.
    pub shutdown: watch::Receiver<bool>,
}

/// The waiting side.
pub struct SessionsDone {
    rx: mpsc::Receiver<()>,
}

/// A tracker whose streams end when `shutdown` turns true.
pub fn tracker(shutdown: watch::Receiver<bool>) -> (Sessions, SessionsDone) {
    let (tx, rx) = mpsc::channel(1);
    (
        Sessions {
            _alive: tx,
            shutdown,
        },
        SessionsDone { rx },
    )
}

impl SessionsDone {
    /// Waits until every [`Sessions`] clone is gone, at most `limit`. Returns whether they
    /// all ended.
    pub async fn wait(mut self, limit: Duration) -> bool {
        // `recv` yields `None` once every sender is dropped; nothing is ever sent.
        tokio::time::timeout(limit, self.rx.recv()).await.is_ok()
    }
}
