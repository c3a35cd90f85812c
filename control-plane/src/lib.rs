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
pub mod rotation;
pub mod security;
pub mod sessions;
pub mod snapshot;
pub mod store;
pub mod telemetry;
pub mod tokens;
pub mod transitions;
pub mod ui;
pub mod web;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fulcrum_proto::model::Secret;
use fulcrum_proto::pb;
use fulcrum_proto::pb::admin_service_server::AdminServiceServer;
use fulcrum_proto::pb::discovery_service_server::DiscoveryServiceServer;
use fulcrum_proto::pb::log_service_server::LogServiceServer;
use fulcrum_proto::pb::security_service_server::SecurityServiceServer;
use fulcrum_proto::pb::telemetry_service_server::TelemetryServiceServer;
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::server::NamedService;
use tonic::service::interceptor::InterceptedService;

pub use config::{Config, GrpcLimits, Listeners};
use fulcrum_listen::http::ConnectionStats;
use fulcrum_listen::tls::{ALPN_GRPC, ALPN_HTTP};
use fulcrum_listen::{HttpLimits, ServerTls, ServerTlsFiles};

use crate::admin::Admin;
use crate::auth::BearerAuth;
use crate::discovery::{Discovery, NodeRegistry};
use crate::health::KeyHealth;
use crate::logs::LogStore;
use crate::logs::service::Logs;
use crate::security::Security;
use crate::store::Store;
use crate::store::secrets;
use crate::telemetry::Telemetry;
use crate::tokens::TokenSet;

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

/// An opened control plane: store open and unlocked, tokens loaded, not yet serving.
pub struct ControlPlane {
    store: Store,
    logs: LogStore,
    tokens: Tokens,
    valid_admin: Arc<TokenSet>,
    valid_join: Arc<TokenSet>,
    master_key_generated: Option<PathBuf>,
    tls: Option<Tls>,
    grpc_limits: GrpcLimits,
    http_limits: HttpLimits,
}

/// TLS on both listeners: the gRPC one asks for client certificates when a client CA is
/// given; the HTTP one never does, so that probes and scrapers need none.
struct Tls {
    grpc: ServerTls,
    http: ServerTls,
    reload_every: Duration,
}

impl ControlPlane {
    /// Opens (or creates) the store in `config.data_dir` and loads or creates the tokens.
    pub fn open(config: Config) -> Result<Self, Error> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::Startup(format!("cannot create data dir {}: {e}", dir.display()))
        })?;
        let store_dir = dir.join("store");
        secrets::recover_rewrite(&store_dir).map_err(|e| Error::Startup(e.to_string()))?;
        let open_store = || {
            Store::open(&store_dir, config.changelog_capacity).map_err(|e| {
                Error::Startup(format!(
                    "cannot open the store in {}: {e} (is another control plane using it?)",
                    dir.display()
                ))
            })
        };
        let mut store = open_store()?;
        let (master_key_generated, rewrite) = unlock(&store, &config.master_keys, dir)?;
        if rewrite {
            // Sealing left plaintext (or ciphertext under a retired key) in sled's old log
            // segments: copy the live records into fresh files before anything is served.
            drop(store);
            secrets::rewrite_store(&store_dir).map_err(|e| Error::Startup(e.to_string()))?;
            tracing::info!(
                "store rewritten into fresh files: superseded secrets are gone from disk"
            );
            store = open_store()?;
            unlock(&store, &config.master_keys, dir)?;
        }
        let logs = LogStore::open(&store)
            .map_err(|e| Error::Startup(format!("cannot open the log trees: {e}")))?;
        let (admin, admin_generated) =
            auth::load_or_create(dir, "admin.token", "fca_", config.admin_token.as_deref())?;
        let (join, join_generated) =
            auth::load_or_create(dir, "join.token", "fcj_", config.join_token.as_deref())?;
        // A token that came from its file in the data dir is written back there on rotation.
        let token_file = |from_env: &Option<String>, name: &str| {
            from_env
                .as_deref()
                .map(str::trim)
                .is_none_or(str::is_empty)
                .then(|| dir.join(name))
        };
        let valid_admin = TokenSet::load(
            &store,
            tokens::Kind::Admin,
            &admin,
            token_file(&config.admin_token, "admin.token"),
        )
        .map_err(Error::Startup)?;
        let valid_join = TokenSet::load(
            &store,
            tokens::Kind::Join,
            &join,
            token_file(&config.join_token, "join.token"),
        )
        .map_err(Error::Startup)?;
        Ok(Self {
            store,
            logs,
            tokens: Tokens {
                admin,
                join,
                generated: admin_generated || join_generated,
            },
            valid_admin,
            valid_join,
            master_key_generated,
            tls: None,
            grpc_limits: GrpcLimits::default(),
            http_limits: HttpLimits::default(),
        })
    }

    /// Serves both listeners over TLS from `files` (mutual TLS on gRPC when it names a
    /// client CA), looking at the files every `reload_every` and on SIGHUP for new ones.
    /// The files are read now: a bad one fails here, not at the first handshake.
    pub fn with_tls(
        mut self,
        files: ServerTlsFiles,
        reload_every: Duration,
    ) -> Result<Self, Error> {
        let http = ServerTls::load(files.without_client_ca(), ALPN_HTTP)
            .map_err(|e| Error::Startup(format!("tls: {e}")))?;
        let grpc =
            ServerTls::load(files, ALPN_GRPC).map_err(|e| Error::Startup(format!("tls: {e}")))?;
        self.tls = Some(Tls {
            grpc,
            http,
            reload_every,
        });
        Ok(self)
    }

    /// Limits on the gRPC and HTTP listeners (defaults: [`GrpcLimits::default`],
    /// [`HttpLimits::default`]).
    #[must_use]
    pub fn with_limits(mut self, grpc: GrpcLimits, http: HttpLimits) -> Self {
        self.grpc_limits = grpc;
        self.http_limits = http;
        self
    }

    /// The master key file this start generated in the data dir, if it did.
    pub fn master_key_generated(&self) -> Option<&Path> {
        self.master_key_generated.as_deref()
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
            tokens: _,
            tls,
            grpc_limits,
            http_limits,
            valid_admin,
            valid_join,
            master_key_generated: _,
        } = self;
        let max_message = grpc_limits.max_message_bytes;
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
        let security_name = <SecurityServiceServer<Security> as NamedService>::NAME;
        let services = [
            admin_name,
            discovery_name,
            telemetry_name,
            logs_name,
            security_name,
            "",
        ];
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
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(max_message);
        let (sessions, sessions_done) = sessions::tracker(stop_rx.clone());
        let discovery = DiscoveryServiceServer::new(Discovery::new(
            store.clone(),
            nodes.clone(),
            sessions.clone(),
        ))
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);

        let addr = |l: &tokio::net::TcpListener| {
            l.local_addr()
                .map_or_else(|e| e.to_string(), |a| a.to_string())
        };
        let telemetry = TelemetryServiceServer::new(Telemetry::new(
            key_health.clone(),
            logs.clone(),
            sessions.clone(),
        ))
        .max_decoding_message_size(max_message);
        let logs_service = Logs::new(logs.clone(), sessions);
        // The web UI calls the same service implementations as gRPC clients do, and
        // signs in with the same admin tokens (two valid during a rotation).
        let web_ui = ui::Ui::new(admin_service, logs_service.clone(), valid_admin.clone())
            .with_secure_cookie(tls.is_some());
        let log_service =
            LogServiceServer::new(logs_service).max_encoding_message_size(max_message);
        let mut cooldowns = tokio::spawn(key_health.run_cooldown_timer(stop_rx.clone()));
        let mut retention = tokio::spawn(logs::retention::run(logs.clone(), stop_rx.clone()));
        let mut reseal = tokio::spawn(rotation::run(store.clone(), stop_rx.clone()));
        let security = SecurityServiceServer::new(Security::new(
            store.clone(),
            valid_admin.clone(),
            valid_join.clone(),
        ));
        let mut probes = tokio::spawn(prober.run(stop_rx.clone()));

        let tls_on = tls.is_some();
        let mtls_on = tls
            .as_ref()
            .is_some_and(|tls| tls.grpc.requires_client_cert());
        let grpc_addr = addr(&listeners.grpc);
        let http_addr = addr(&listeners.http);
        let router = tonic::transport::Server::builder()
            // Limits per connection: a client cannot open unbounded streams or calls, and a
            // peer that vanished without closing is found by pings.
            .concurrency_limit_per_connection(grpc_limits.concurrency_per_connection)
            .max_concurrent_streams(grpc_limits.max_concurrent_streams)
            .http2_max_header_list_size(grpc_limits.max_header_bytes)
            .http2_keepalive_interval(Some(grpc_limits.keepalive_interval))
            .http2_keepalive_timeout(Some(grpc_limits.keepalive_timeout))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(InterceptedService::new(
                admin,
                BearerAuth::new(valid_admin.clone()),
            ))
            .add_service(InterceptedService::new(
                discovery,
                BearerAuth::new(valid_join.clone()),
            ))
            .add_service(InterceptedService::new(
                telemetry,
                BearerAuth::new(valid_join.clone()),
            ))
            .add_service(InterceptedService::new(
                log_service,
                BearerAuth::new(valid_admin.clone()),
            ))
            .add_service(InterceptedService::new(
                security,
                BearerAuth::new(valid_admin),
            ));
        let grpc: std::pin::Pin<
            Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>,
        > = match &tls {
            // Handshakes run off the accept path; TCP_NODELAY is set there too.
            Some(tls) => Box::pin(router.serve_with_incoming_shutdown(
                fulcrum_listen::tls::incoming(
                    listeners.grpc,
                    tls.grpc.clone(),
                    grpc_limits.handshake_timeout,
                ),
                stopped(stop_rx.clone()),
            )),
            None => Box::pin(router.serve_with_incoming_shutdown(
                // tonic applies its `tcp_nodelay` only to listeners it binds itself.
                // Without it a small answer waits for the client's delayed ACK (40 ms).
                TcpListenerStream::new(listeners.grpc).map(|stream| {
                    if let Ok(stream) = &stream {
                        let _ = stream.set_nodelay(true);
                    }
                    stream
                }),
                stopped(stop_rx.clone()),
            )),
        };
        let http = fulcrum_listen::http::serve(
            listeners.http,
            fulcrum_listen::http::tower(web::router(web::Web {
                store: store.clone(),
                nodes: nodes.clone(),
                logs: logs.clone(),
                ui: web_ui,
            })),
            tls.as_ref().map(|tls| tls.http.clone()),
            http_limits,
            Arc::new(ConnectionStats::default()),
            stopped(stop_rx.clone()),
        );
        let mut reloads = tls.map(|tls| {
            let stop = stop_rx.clone();
            let grpc = tokio::spawn(tls.grpc.watch(tls.reload_every, stopped(stop.clone())));
            let http = tokio::spawn(tls.http.watch(tls.reload_every, stopped(stop)));
            (grpc, http)
        });
        let mut grpc = tokio::spawn(grpc);
        // The HTTP server never fails on its own (accept errors are logged and retried):
        // its end before shutdown is reported as unexpected.
        let mut http = tokio::spawn(async move {
            http.await;
            Ok::<(), std::convert::Infallible>(())
        });
        tracing::info!(grpc = %grpc_addr, http = %http_addr, tls = tls_on, mutual_tls = mtls_on, revision = store.revision(), "control plane serving");

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
            if let Some((grpc, http)) = &mut reloads {
                let _ = grpc.await;
                let _ = http.await;
            }
            let _ = (&mut reseal).await;
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
            if let Some((grpc, http)) = &reloads {
                grpc.abort();
                http.abort();
            }
            reseal.abort();
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

/// Loads the master keys and unlocks the store with them (see `store::secrets`). Returns
/// the path of a master key file generated now, and whether the store wants a rewrite.
fn unlock(
    store: &Store,
    keys: &secrets::MasterKeys,
    dir: &Path,
) -> Result<(Option<PathBuf>, bool), Error> {
    let (keyring, generated) =
        secrets::load_keyring(keys, dir, store).map_err(|e| Error::Startup(e.to_string()))?;
    if let Some(path) = &generated {
        tracing::warn!(
            path = %path.display(),
            "no master key configured: generated one next to the store (mode 0600); provider keys are sealed with it, and the store cannot be read without it; keep a copy elsewhere, and prefer --master-key-file or FULCRUM_MASTER_KEY from outside the data dir"
        );
    }
    let key_id = keyring.current().id().to_string();
    let previous = keyring.previous().map(|k| k.id().to_string());
    let unlocked = store
        .unlock(keyring)
        .map_err(|e| Error::Startup(e.to_string()))?;
    if unlocked.migrated > 0 {
        tracing::info!(
            migrated = unlocked.migrated,
            "sealed provider keys that were stored in clear"
        );
    }
    match (previous, unlocked.pending_reseal) {
        (Some(previous), 0) => tracing::info!(
            key_id = %key_id,
            previous = %previous,
            "no record is sealed with the previous master key; it is no longer needed"
        ),
        (Some(previous), pending) => tracing::info!(
            key_id = %key_id,
            previous = %previous,
            pending,
            "master key rotation: re-sealing records with the new key while serving"
        ),
        (None, _) => tracing::info!(key_id = %key_id, "store unlocked with the master key"),
    }
    Ok((generated, unlocked.rewrite))
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
