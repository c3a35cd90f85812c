//! Fulcrum's data plane: a stateless proxy that streams its config from the control plane.
//!
//! [`DataPlane::serve`] runs the HTTP server, the config stream client and the telemetry
//! shipper side by side. The data plane reports ready once the first snapshot is applied,
//! keeps serving the last good config while the control plane is away, records every
//! request without waiting for anyone, and drains on shutdown.

pub mod balance;
pub mod config;
mod discovery;
pub mod error;
pub mod exchange;
pub mod failover;
pub mod logging;
pub mod metrics;
mod mock;
mod models;
pub mod protocol;
mod proxy;
pub mod records;
pub mod runtime;
mod server;
pub mod shipper;
pub mod upstream;
pub mod usage;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use fulcrum_listen::http::ConnectionStats;
use fulcrum_listen::{ClientTlsFiles, HttpLimits, ServerTls};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

pub use config::Config;
pub use error::{Error, Rejection};
pub use logging::LogLevel;
pub use runtime::{ApplyStats, RuntimeConfig, RuntimeConfigHandle};

use crate::discovery::Discovery;
use crate::metrics::{Metrics, Scrape};
use crate::records::Recorder;
use crate::shipper::{KeyEvents, Receivers, Stats};

/// One data plane process: its config, the runtime config it streams in, and the queues
/// its requests report into.
#[derive(Debug)]
pub struct DataPlane {
    config: Config,
    runtime: RuntimeConfigHandle,
    key_events: KeyEvents,
    recorder: Recorder,
    receivers: Receivers,
    stats: Arc<Stats>,
    metrics: Arc<Metrics>,
    log_level: Option<LogLevel>,
    /// TLS on the client listener, and how often its files are looked at for a reload.
    tls: Option<(ServerTls, Duration)>,
    /// TLS towards the control plane (an `https://` URL).
    control_plane_tls: ClientTlsFiles,
    limits: HttpLimits,
    connections: Arc<ConnectionStats>,
}

// === impl DataPlane ===

impl DataPlane {
    pub fn new(config: Config) -> Self {
        let (key_events, records, receivers, stats) = shipper::queues();
        let metrics = Arc::new(Metrics::default());
        let recorder = Recorder::new(records, Arc::clone(&metrics), random_u64());
        Self {
            config,
            runtime: RuntimeConfigHandle::new(),
            key_events,
            recorder,
            receivers,
            stats,
            metrics,
            log_level: None,
            tls: None,
            control_plane_tls: ClientTlsFiles::default(),
            limits: HttpLimits::default(),
            connections: Arc::default(),
        }
    }

    /// Serves clients over TLS, reloading the certificate files every `reload_every` (and
    /// on SIGHUP) without dropping a connection.
    #[must_use]
    pub fn with_tls(mut self, tls: ServerTls, reload_every: Duration) -> Self {
        self.tls = Some((tls, reload_every));
        self
    }

    /// The CA, client certificate and server name for an `https://` control plane.
    #[must_use]
    pub fn with_control_plane_tls(mut self, files: ClientTlsFiles) -> Self {
        self.control_plane_tls = files;
        self
    }

    /// Limits on the client listener's connections (defaults: [`HttpLimits::default`]).
    #[must_use]
    pub fn with_limits(mut self, limits: HttpLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Counters of connections refused at the limit and handshakes that failed.
    pub fn connections(&self) -> Arc<ConnectionStats> {
        Arc::clone(&self.connections)
    }

    /// Lets the `log_level` setting change the process's log level through `level`.
    #[must_use]
    pub fn with_log_level(mut self, level: LogLevel) -> Self {
        self.log_level = Some(level);
        self
    }

    /// Cheap clone handle to the current runtime config (`ArcSwap` inside): readers never lock.
    pub fn runtime(&self) -> RuntimeConfigHandle {
        self.runtime.clone()
    }

    /// The request-record and key-event counters of the shipper (acknowledged, dropped,
    /// buffered), as `/metrics` shows them.
    pub fn telemetry(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }

    /// Serves HTTP on `listener` (`/healthz` always 200 "ok"; `/readyz` 503 until the first
    /// snapshot is applied, then 200) and runs the config stream client, until `shutdown`
    /// resolves; then marks itself not ready, stops the config stream, drains HTTP
    /// connections within `config.grace_period`, and returns.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let local_addr = listener.local_addr().map_err(Error::ListenerAddr)?;
        let discovery = Discovery::new(&self.config, local_addr, self.runtime.clone())?
            .with_tls(&self.control_plane_tls)?;
        let (endpoint, authorization) = discovery.connection();
        let node = fulcrum_proto::pb::Node {
            id: self.config.node_id.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            listen_addr: local_addr.to_string(),
        };
        let shipper = shipper::Shipper::new(
            endpoint,
            authorization,
            node,
            instance_id(),
            self.receivers,
            self.runtime.clone(),
            Arc::clone(&self.stats),
        );
        let proxy = proxy::Proxy::new(self.runtime.clone(), self.key_events, self.recorder)
            .map_err(Error::UpstreamClient)?;
        let scrape = Scrape {
            metrics: self.metrics,
            runtime: self.runtime.clone(),
            stats: self.stats,
            connections: Arc::clone(&self.connections),
        };
        // Every task watches one switch, so that shutdown reaches them in one step; the
        // shipper has its own, thrown once the last answer is out and recorded.
        let (stop, stopped) = watch::channel(false);
        let (stop_shipping, shipping_stopped) = watch::channel(false);

        let discovery_task = tokio::spawn(discovery.run(stopped.clone()));
        let shipper_task = tokio::spawn(shipper.run(shipping_stopped));
        let log_level_task = self.log_level.map(|level| {
            tokio::spawn(logging::follow(
                level,
                self.runtime.clone(),
                stopped.clone(),
            ))
        });
        let tls_task = self.tls.as_ref().map(|(tls, every)| {
            let mut stopped = stopped.clone();
            tokio::spawn(tls.clone().watch(*every, async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            }))
        });
        let http = fulcrum_listen::http::serve(
            listener,
            server::service(self.runtime.clone(), proxy, scrape),
            self.tls.map(|(tls, _)| tls),
            self.limits,
            self.connections,
            async move {
                let mut stopped = stopped;
                // An error means the switch was dropped, which also means stop.
                let _ = stopped.wait_for(|stop| *stop).await;
            },
        );
        let mut http_task = tokio::spawn(http);
        info!(
            listen = %local_addr,
            node_id = %self.config.node_id,
            control_plane = %self.config.control_plane,
            "data plane started"
        );

        // Run until asked to stop, or until the HTTP server gives up on its own.
        let failed = tokio::select! {
            () = shutdown => None,
            ended = &mut http_task => Some(ended),
        };

        // Not ready first, so that probes steer traffic away while connections drain.
        info!(
            grace_period_secs = self.config.grace_period.as_secs_f64(),
            "shutting down"
        );
        self.runtime.set_draining();
        stop.send_replace(true);
        let discovery_ended = discovery_task.await;
        if let Some(task) = tls_task {
            task.await.map_err(|source| Error::TaskPanicked {
                task: "certificate reload",
                source,
            })?;
        }
        if let Some(task) = log_level_task {
            task.await.map_err(|source| Error::TaskPanicked {
                task: "log level",
                source,
            })?;
        }

        let http_ended = match failed {
            Some(ended) => ended,
            None => match tokio::time::timeout(self.config.grace_period, &mut http_task).await {
                Ok(ended) => ended,
                Err(_) => {
                    warn!("grace period over; closing the connections still open");
                    http_task.abort();
                    http_task.await
                }
            },
        };
        // Every answer is recorded by now: the shipper sends the last records and stops.
        stop_shipping.send_replace(true);
        let shipper_ended = shipper_task.await;

        discovery_ended.map_err(|source| Error::TaskPanicked {
            task: "discovery",
            source,
        })?;
        shipper_ended.map_err(|source| Error::TaskPanicked {
            task: "shipper",
            source,
        })?;
        match http_ended {
            Ok(()) => {}
            Err(e) if e.is_cancelled() => {}
            Err(source) => {
                return Err(Error::TaskPanicked {
                    task: "http",
                    source,
                });
            }
        }
        info!("data plane stopped");
        Ok(())
    }
}

/// Identifies this process start to the control plane, so that report batches resent
/// after a reconnect are recognised as repeats.
fn instance_id() -> String {
    format!("{:016x}", random_u64())
}

/// 64 random bits; without OS randomness, the time still tells two starts apart.
fn random_u64() -> u64 {
    getrandom::u64().unwrap_or_else(|_| failover::now_ms().cast_unsigned())
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::sync::oneshot;

    use super::*;
    use crate::discovery::tests::{ControlPlane, config, snapshot};

    /// A bare HTTP/1.1 GET: the status code and the body.
    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let status = response[9..12].parse().unwrap();
        let body = response.split_once("\r\n\r\n").unwrap().1.to_string();
        (status, body)
    }

    #[tokio::test]
    async fn ready_after_first_snapshot_and_not_after_shutdown() {
        let mut cp = ControlPlane::start().await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let data_plane = DataPlane::new(config(&cp.url));
        let runtime = data_plane.runtime();
        let (trigger, shutdown) = oneshot::channel::<()>();
        let serving = tokio::spawn(data_plane.serve(listener, async move {
            let _ = shutdown.await;
        }));

        assert_eq!(get(addr, "/healthz").await, (200, "ok".to_string()));
        assert_eq!(get(addr, "/readyz").await.0, 503);

        let mut session = cp.session().await;
        assert_eq!(
            session.first.node.as_ref().unwrap().listen_addr,
            addr.to_string()
        );
        session.send(snapshot(1, "n1")).await;
        assert_eq!(session.answer().await.applied_revision, 1);
        assert_eq!(get(addr, "/readyz").await, (200, "ok".to_string()));
        assert_eq!(runtime.wait_for_revision(1).await.revision, 1);

        trigger.send(()).unwrap();
        serving.await.unwrap().unwrap();
        assert!(!runtime.is_ready());
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "listener still open"
        );
    }

    #[tokio::test]
    async fn bad_control_plane_url_fails_at_start() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let err = DataPlane::new(config("::nonsense::"))
            .serve(listener, std::future::pending())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::ControlPlaneUrl { .. }), "{err}");
    }
}
