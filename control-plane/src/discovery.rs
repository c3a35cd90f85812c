//! `DiscoveryService`: one config stream per data plane (see the contract in
//! `proto/fulcrum/v1/discovery.proto`), and the registry of connected data planes that
//! `GetStatus` reports.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fulcrum_proto::pb;
use fulcrum_proto::pb::discovery_service_server::DiscoveryService;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::sessions::Sessions;
use crate::snapshot::{ConfigUpdate, update_since};
use crate::store::{Store, now_unix_ms};

/// How long a new stream may take to name its node.
const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);

/// The data planes whose config streams are open now.
#[derive(Clone, Default)]
pub struct NodeRegistry {
    inner: Arc<Mutex<RegistryInner>>,
}

#[derive(Default)]
struct RegistryInner {
    next_stream: u64,
    streams: BTreeMap<u64, pb::DataPlaneStatus>,
}

/// Removes its stream from the registry when the stream ends, however it ends.
struct Registration {
    registry: NodeRegistry,
    stream: u64,
}

// === impl NodeRegistry ===

impl NodeRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, RegistryInner> {
        // Entries are plain status values; one left half-updated by a panic is harmless.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn register(&self, status: pb::DataPlaneStatus) -> Registration {
        let mut inner = self.lock();
        inner.next_stream += 1;
        let stream = inner.next_stream;
        inner.streams.insert(stream, status);
        Registration {
            registry: self.clone(),
            stream,
        }
    }

    /// Every connected data plane, ordered by node id.
    pub fn list(&self) -> Vec<pb::DataPlaneStatus> {
        let mut nodes: Vec<_> = self.lock().streams.values().cloned().collect();
        nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        nodes
    }

    /// Number of open config streams.
    pub fn connected(&self) -> usize {
        self.lock().streams.len()
    }
}

impl Registration {
    fn update(&self, change: impl FnOnce(&mut pb::DataPlaneStatus)) {
        if let Some(status) = self.registry.lock().streams.get_mut(&self.stream) {
            change(status);
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.lock().streams.remove(&self.stream);
    }
}

/// Serves config streams from the store.
#[derive(Clone)]
pub struct Discovery {
    store: Store,
    nodes: NodeRegistry,
    sessions: Sessions,
}

impl Discovery {
    /// Streams end when the sessions' shutdown turns true, so that the server can drain.
    pub fn new(store: Store, nodes: NodeRegistry, sessions: Sessions) -> Self {
        Self {
            store,
            nodes,
            sessions,
        }
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<pb::StreamConfigResponse, Status>> + Send>>;

#[tonic::async_trait]
impl DiscoveryService for Discovery {
    type StreamConfigStream = ResponseStream;

    async fn stream_config(
        &self,
        request: Request<Streaming<pb::StreamConfigRequest>>,
    ) -> Result<Response<Self::StreamConfigStream>, Status> {
        let peer = request.remote_addr();
        // Set only when mutual TLS verified a client certificate: the chain was checked
        // against the client CA during the handshake, so its names can be trusted.
        let identity = request.peer_certs().and_then(|certs| {
            certs
                .first()
                .and_then(fulcrum_listen::identity::peer_identity)
                .map(|id| pb::PeerIdentity {
                    common_name: id.common_name.unwrap_or_default(),
                    names: id.names,
                })
        });
        let inbound = request.into_inner();
        // Room for one response and one error: at most one response is ever unacknowledged.
        let (tx, rx) = mpsc::channel(2);
        let session = Session {
            store: self.store.clone(),
            nodes: self.nodes.clone(),
            sessions: self.sessions.clone(),
            tx,
            peer,
            identity,
        };
        // The task is owned by the stream: it ends when the data plane goes away (its
        // inbound ends or the response channel closes) or at shutdown.
        tokio::spawn(session.run(inbound));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// One config stream's state.
struct Session {
    store: Store,
    nodes: NodeRegistry,
    /// Held for the life of the stream; also carries the shutdown signal.
    sessions: Sessions,
    tx: mpsc::Sender<Result<pb::StreamConfigResponse, Status>>,
    peer: Option<SocketAddr>,
    /// The verified client certificate's identity (mutual TLS only).
    identity: Option<pb::PeerIdentity>,
}

/// A response sent and not yet acknowledged.
struct Pending {
    nonce: String,
    revision: u64,
}

impl Session {
    async fn run(mut self, mut inbound: Streaming<pb::StreamConfigRequest>) {
        let first = match tokio::time::timeout(FIRST_MESSAGE_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(first))) => first,
            Ok(Ok(None) | Err(_)) => return,
            Err(_) => {
                let status =
                    Status::deadline_exceeded("the first message must name the node within 30s");
                let _ = self.tx.send(Err(status)).await;
                return;
            }
        };
        let Some(node) = first.node.clone().filter(|n| !n.id.trim().is_empty()) else {
            let status = Status::invalid_argument("the first message must carry node.id");
            let _ = self.tx.send(Err(status)).await;
            return;
        };
        let registration = self.nodes.register(pb::DataPlaneStatus {
            node_id: node.id.clone(),
            version: node.version.clone(),
            listen_addr: node.listen_addr.clone(),
            peer_addr: self.peer.map(|p| p.to_string()).unwrap_or_default(),
            connected_since_unix_ms: now_unix_ms(),
            applied_revision: first.known_revision,
            peer_identity: self.identity.clone(),
            ..Default::default()
        });
        tracing::info!(
            node = %node.id,
            peer = ?self.peer,
            client_cert_cn = self.identity.as_ref().map(|id| id.common_name.as_str()),
            known_revision = first.known_revision,
            "data plane connected"
        );
        let outcome = self.serve(first, &registration, &mut inbound).await;
        match outcome {
            Ok(()) => tracing::info!(node = %node.id, "data plane disconnected"),
            Err(e) => tracing::warn!(node = %node.id, error = %e, "config stream ended"),
        }
    }

    async fn serve(
        &mut self,
        first: pb::StreamConfigRequest,
        registration: &Registration,
        inbound: &mut Streaming<pb::StreamConfigRequest>,
    ) -> Result<(), String> {
        let mut applied: Option<(u64, String)> = (first.known_revision > 0)
            .then(|| (first.known_revision, first.known_store_id.clone()));
        let mut pending: Option<Pending> = None;
        let mut answered_first = false;
        let mut want_snapshot = false;
        let mut nacked_revision: Option<u64> = None;
        let mut nonces = 0u64;
        let mut revisions = self.store.subscribe();
        loop {
            if pending.is_none() {
                let current = *revisions.borrow_and_update();
                let node_is_current = applied
                    .as_ref()
                    .is_some_and(|(rev, id)| *rev == current && id == self.store.store_id());
                let nack_blocks = nacked_revision.is_some_and(|n| current <= n);
                if !answered_first || want_snapshot || (!node_is_current && !nack_blocks) {
                    let base = if want_snapshot { None } else { applied.clone() };
                    let update = self.build(base).await?;
                    nonces += 1;
                    let nonce = nonces.to_string();
                    let revision = update.revision;
                    tracing::debug!(
                        revision,
                        snapshot = update.is_snapshot(),
                        resources = update.size(),
                        "sending config"
                    );
                    let response = pb::StreamConfigResponse {
                        revision,
                        nonce: nonce.clone(),
                        store_id: self.store.store_id().to_string(),
                        body: Some(update.body),
                    };
                    if self.tx.send(Ok(response)).await.is_err() {
                        return Ok(());
                    }
                    registration.update(|s| {
                        s.last_sent_revision = revision;
                        s.last_sent_unix_ms = now_unix_ms();
                    });
                    pending = Some(Pending { nonce, revision });
                    answered_first = true;
                    want_snapshot = false;
                }
            }
            tokio::select! {
                _ = self.sessions.shutdown.wait_for(|stop| *stop) => return Ok(()),
                message = inbound.message() => {
                    let message = match message {
                        Ok(Some(m)) => m,
                        Ok(None) => return Ok(()),
                        Err(status) => return Err(format!("stream error: {}", status.message())),
                    };
                    let Some(sent) = pending.take_if(|p| p.nonce == message.response_nonce) else {
                        tracing::debug!(nonce = %message.response_nonce, "ignoring a reply to no pending response");
                        continue;
                    };
                    match message.nack {
                        Some(nack) => {
                            tracing::warn!(
                                revision = sent.revision,
                                reason = %nack.reason,
                                resync = nack.resync,
                                rejected = nack.rejected.len(),
                                "data plane rejected config"
                            );
                            registration.update(|s| {
                                s.last_nack_unix_ms = now_unix_ms();
                                s.last_nack_reason = nack.reason.clone();
                            });
                            if nack.resync {
                                want_snapshot = true;
                            } else {
                                nacked_revision = Some(sent.revision);
                            }
                        }
                        None => {
                            applied = Some((message.applied_revision, self.store.store_id().to_string()));
                            nacked_revision = None;
                            registration.update(|s| {
                                s.applied_revision = message.applied_revision;
                                s.last_ack_unix_ms = now_unix_ms();
                            });
                        }
                    }
                }
                changed = revisions.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    // The loop's top decides: with a response pending, the newer revision
                    // waits for its reply and is merged into the next response.
                }
            }
        }
    }

    async fn build(&self, base: Option<(u64, String)>) -> Result<ConfigUpdate, String> {
        let store = self.store.clone();
        let built = tokio::task::spawn_blocking(move || {
            update_since(&store, base.as_ref().map(|(rev, id)| (*rev, id.as_str())))
        })
        .await;
        match built {
            Ok(Ok(update)) => Ok(update),
            Ok(Err(e)) => {
                let _ = self
                    .tx
                    .send(Err(Status::internal(
                        "the control plane could not read its store",
                    )))
                    .await;
                Err(format!("building config: {e}"))
            }
            Err(e) => Err(format!("building config: task failed: {e}")),
        }
    }
}
