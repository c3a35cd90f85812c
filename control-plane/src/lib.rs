//! Fulcrum's control plane: owns config, the key inventory, key health and the request
//! logs in sled, and serves them over gRPC (`AdminService` and `LogService` for operators,
//! `DiscoveryService` and `TelemetryService` for data planes), with `/healthz` and
//! `/metrics` over HTTP.

pub mod admin;
pub mod auth;
pub mod config;
pub mod discovery;
pub mod error;
pub mod health;
pub mod logs;
pub mod probe;
pub mod sessions;
pub mod snapshot;
pub mod store;
pub mod telemetry;
pub mod transitions;
pub mod ui;
pub mod web;

use std::future::Future;
use std::time::Duration;

use fulcrum_proto::model::Secret;
use fulcrum_proto::pb;
use fulcrum_proto::pb::admin_service_server::AdminServiceServer;
use fulcrum_proto::pb::discovery_service_server::DiscoveryServiceServer;
use fulcrum_proto::pb::log_service_server::LogServiceServer;
use fulcrum_proto::pb::telemetry_service_server::TelemetryServiceServer;
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::server::NamedService;
use tonic::service::interceptor::InterceptedService;

pub use config::{Config, Listeners};

use crate::admin::Admin;
use crate::auth::BearerAuth;
use crate::discovery::{Discovery, NodeRegistry};
use crate::health::KeyHealth;
use crate::logs::LogStore;
use crate::logs::service::Logs;
use crate::store::Store;
use crate::telemetry::Telemetry;

/// Largest gRPC message accepted or sent: a bulk import or a snapshot of 100,000 keys is
/// several MiB, over tonic's 4 MiB default.
pub const MAX_GRPC_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// How long servers may take to finish in-flight calls after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors that stop the control plane from starting or serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Startup(String),
    #[error("{server} server failed: {detail}")]
    Serve {
        server: &'static str,
        detail: String,
    },
}

/// The tokens the control plane accepts.
#[derive(Clone)]
pub struct Tokens {
    /// Admin token (`authorization: Bearer` on `AdminService`).
    pub admin: Secret<String>,
    /// Join token (`authorization: Bearer` on `DiscoveryService`).
    pub join: Secret<String>,
    /// True when this start generated a token (print it once).
    pub generated: bool,
}

/// An opened control plane: store open and tokens loaded, not yet serving.
pub struct ControlPlane {
    store: Store,
    logs: LogStore,
    tokens: Tokens,
}

impl ControlPlane {
    /// Opens (or creates) the store in `config.data_dir` and loads or creates the tokens.
    pub fn open(config: Config) -> Result<Self, Error> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::Startup(format!("cannot create data dir {}: {e}", dir.display()))
        })?;
        let store = Store::open(&dir.join("store"), config.changelog_capacity).map_err(|e| {
            Error::Startup(format!(
                "cannot open the store in {}: {e} (is another control plane using it?)",
                dir.display()
            ))
        })?;
        let logs = LogStore::open(&store)
            .map_err(|e| Error::Startup(format!("cannot open the log trees: {e}")))?;
        let (admin, admin_generated) =
            auth::load_or_create(dir, "admin.token", "fca_", config.admin_token.as_deref())?;
        let (join, join_generated) =
            auth::load_or_create(dir, "join.token", "fcj_", config.join_token.as_deref())?;
        Ok(Self {
            store,
            logs,
            tokens: Tokens {
                admin,
                join,
                generated: admin_generated || join_generated,
            },
        })
    }

    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    /// The store, for tests and embedding.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The request and error logs, for tests and embedding.
    pub fn logs(&self) -> &LogStore {
        &self.logs
    }

    /// Serves gRPC and HTTP on the given listeners until `shutdown` resolves (or a server
    /// fails), then marks the services not serving, ends config streams, drains in-flight
    /// calls for at most 10 s and flushes the store.
    pub async fn serve(
        self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let Self {
            store,
            logs,
            tokens,
        } = self;
        let nodes = NodeRegistry::default();
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };

        let (health, health_service) = tonic_health::server::health_reporter();
        let admin_name = <AdminServiceServer<Admin> as NamedService>::NAME;
        let discovery_name = <DiscoveryServiceServer<Discovery> as NamedService>::NAME;
        let telemetry_name = <TelemetryServiceServer<Telemetry> as NamedService>::NAME;
        let logs_name = <LogServiceServer<Logs> as NamedService>::NAME;
        let services = [admin_name, discovery_name, telemetry_name, logs_name, ""];
        for name in services {
            health
                .set_service_status(name, tonic_health::ServingStatus::Serving)
                .await;
        }
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| Error::Startup(format!("gRPC reflection: {e}")))?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .map_err(|e| Error::Startup(format!("gRPC reflection: {e}")))?;

        let queue = probe::Queue::default();
        let key_health = KeyHealth::new(store.clone(), queue.clone())
            .map_err(|e| Error::Startup(format!("cannot load key health from the store: {e}")))?;
        let prober = probe::Prober::new(store.clone(), key_health.clone(), queue)
            .map_err(|e| Error::Startup(format!("cannot load the probe schedule: {e}")))?;
        let admin_service = Admin::new(store.clone(), nodes.clone()).with_prober(prober.clone());
        let admin = AdminServiceServer::new(admin_service.clone())
            .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES);
        let (sessions, sessions_done) = sessions::tracker(stop_rx.clone());
        let discovery = DiscoveryServiceServer::new(Discovery::new(
            store.clone(),
            nodes.clone(),
            sessions.clone(),
        ))
        .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES);

        let addr = |l: &tokio::net::TcpListener| {
            l.local_addr()
                .map_or_else(|e| e.to_string(), |a| a.to_string())
        };
        let telemetry = TelemetryServiceServer::new(Telemetry::new(
            key_health.clone(),
            logs.clone(),
            sessions.clone(),
        ))
        .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES);
        let logs_service = Logs::new(logs.clone(), sessions);
        // The web UI calls the same service implementations as gRPC clients do.
        let web_ui = ui::Ui::new(admin_service, logs_service.clone(), &tokens.admin);
        let log_service =
            LogServiceServer::new(logs_service).max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES);
        let mut cooldowns = tokio::spawn(key_health.run_cooldown_timer(stop_rx.clone()));
        let mut retention = tokio::spawn(logs::retention::run(logs.clone(), stop_rx.clone()));
        let mut probes = tokio::spawn(prober.run(stop_rx.clone()));

        let grpc_addr = addr(&listeners.grpc);
        let http_addr = addr(&listeners.http);
        let grpc = tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(InterceptedService::new(
                admin,
                BearerAuth::new(&tokens.admin, "admin"),
            ))
            .add_service(InterceptedService::new(
                discovery,
                BearerAuth::new(&tokens.join, "join"),
            ))
            .add_service(InterceptedService::new(
                telemetry,
                BearerAuth::new(&tokens.join, "join"),
            ))
            .add_service(InterceptedService::new(
                log_service,
                BearerAuth::new(&tokens.admin, "admin"),
            ))
            .serve_with_incoming_shutdown(
                // tonic applies its `tcp_nodelay` only to listeners it binds itself.
                // Without it a small answer waits for the client's delayed ACK (40 ms).
                TcpListenerStream::new(listeners.grpc).map(|stream| {
                    if let Ok(stream) = &stream {
                        let _ = stream.set_nodelay(true);
                    }
                    stream
                }),
                stopped(stop_rx.clone()),
            );
        let http = axum::serve(
            listeners.http,
            web::router(web::Web {
                store: store.clone(),
                nodes: nodes.clone(),
                logs: logs.clone(),
                ui: web_ui,
            }),
        )
        .with_graceful_shutdown(stopped(stop_rx.clone()));
        let mut grpc = tokio::spawn(grpc);
        let mut http = tokio::spawn(async move { http.await });
        tracing::info!(grpc = %grpc_addr, http = %http_addr, revision = store.revision(), "control plane serving");

        let mut failure = None;
        tokio::select! {
            () = shutdown => tracing::info!("shutting down"),
            result = &mut grpc => failure = Some(Error::Serve { server: "gRPC", detail: describe(result) }),
            result = &mut http => failure = Some(Error::Serve { server: "HTTP", detail: describe(result) }),
        }
        for name in services {
            health
                .set_service_status(name, tonic_health::ServingStatus::NotServing)
                .await;
        }
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            if !grpc.is_finished() {
                let _ = (&mut grpc).await;
            }
            if !http.is_finished() {
                let _ = (&mut http).await;
            }
            let _ = (&mut cooldowns).await;
            let _ = (&mut retention).await;
            let _ = (&mut probes).await;
        })
        .await;
        // The servers are gone, and with them the services' own handles: what is left are
        // stream tasks finishing up. The store is flushed only once they have let go.
        let sessions_ended = sessions_done.wait(DRAIN_TIMEOUT).await;
        if !sessions_ended {
            tracing::warn!("stream tasks did not end within the drain timeout");
        }
        if drained.is_err() {
            tracing::warn!(
                "in-flight calls did not finish within the drain timeout; stopping them"
            );
            grpc.abort();
            http.abort();
            cooldowns.abort();
            retention.abort();
            probes.abort();
        }
        store
            .flush()
            .await
            .map_err(|e| Error::Startup(format!("cannot flush the store: {e}")))?;
        tracing::info!(
            revision = store.revision(),
            "control plane stopped, store flushed"
        );
        failure.map_or(Ok(()), Err)
    }
}

fn describe<E: std::fmt::Display, J: std::fmt::Display>(
    result: Result<Result<(), E>, J>,
) -> String {
    match result {
        Ok(Ok(())) => "stopped unexpectedly".to_string(),
        Ok(Err(e)) => e.to_string(),
        Err(e) => format!("task failed: {e}"),
    }
}
