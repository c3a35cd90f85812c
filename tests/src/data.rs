//! A data plane running in-process for one test.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fulcrum_proto::model::Secret;
use fulcrum_proxy::shipper::Stats;
use fulcrum_proxy::{Config, DataPlane, RuntimeConfigHandle};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running data plane; [`DataPlaneHandle::stop`] re-raises its errors and panics.
pub struct DataPlaneHandle {
    pub addr: SocketAddr,
    pub node_id: String,
    runtime: RuntimeConfigHandle,
    telemetry: Arc<Stats>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), fulcrum_proxy::Error>>>,
}

impl DataPlaneHandle {
    /// Starts a data plane on a fresh loopback port, streaming from `control_plane`.
    pub async fn start(control_plane: &str, join_token: &str, node_id: &str) -> Self {
        Self::start_configured(control_plane, join_token, node_id, |data_plane| data_plane).await
    }

    /// Starts one after `configure` had its say (TLS, limits).
    pub async fn start_configured(
        control_plane: &str,
        join_token: &str,
        node_id: &str,
        configure: impl FnOnce(DataPlane) -> DataPlane,
    ) -> Self {
        crate::init_tracing();
        let config = Config {
            control_plane: control_plane.to_string(),
            join_token: Secret::new(join_token.to_string()),
            node_id: node_id.to_string(),
            grace_period: Duration::from_secs(5),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("bound");
        let data_plane = configure(DataPlane::new(config));
        let runtime = data_plane.runtime();
        let telemetry = data_plane.telemetry();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(data_plane.serve(listener, async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            node_id: node_id.to_string(),
            runtime,
            telemetry,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn runtime(&self) -> &RuntimeConfigHandle {
        &self.runtime
    }

    /// The shipper's counters: request records acknowledged, dropped, held.
    pub fn telemetry(&self) -> &Stats {
        &self.telemetry
    }

    /// The text of `GET /metrics`.
    pub async fn metrics(&self) -> String {
        let (status, body) = crate::http_get(self.addr, "/metrics").await;
        assert_eq!(status, 200, "GET /metrics: {body}");
        body
    }

    /// Waits (at most 10 s) until revision `revision` or later is applied.
    pub async fn wait_for_revision(&self, revision: u64) {
        tokio::time::timeout(
            Duration::from_secs(10),
            self.runtime.wait_for_revision(revision),
        )
        .await
        .unwrap_or_else(|_| {
            panic!(
                "data plane {} did not reach revision {revision} (at {})",
                self.node_id,
                self.runtime.applied_revision()
            )
        });
    }

    /// Stops it and re-raises its panic or error, if any.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("data plane failed: {e}"),
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => panic!("data plane task: {e}"),
            }
        }
    }
}

impl Drop for DataPlaneHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
