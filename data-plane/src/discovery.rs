//! The config stream client: keeps one `StreamConfig` stream open to the control plane,
//! applies every response all-or-nothing and answers it with exactly one ACK or NACK.
//!
//! When the stream breaks the data plane keeps serving with the last good config and
//! reconnects with backoff, announcing the revision it holds so that the control plane can
//! answer with a delta instead of a snapshot.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fulcrum_proto::pb;
use fulcrum_proto::pb::discovery_service_client::DiscoveryServiceClient;
use fulcrum_proto::pb::stream_config_response::Body;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Endpoint;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::error::{Chain, Error, Rejection, StreamError};
use crate::runtime::{ApplyKind, RuntimeConfig, RuntimeConfigHandle};

/// Snapshots with 100,000 keys are several MB; tonic's default limit is 4 MiB.
const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 pings notice a control plane that vanished without closing the connection.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The control plane's gRPC endpoint and the `Bearer <join token>` header for it, checked
/// up front so that a typo fails at start-up instead of in a reconnect loop. The header is
/// marked sensitive so that it never shows in debug output.
fn control_plane(config: &Config) -> Result<(Endpoint, MetadataValue<Ascii>), Error> {
    let endpoint = Endpoint::from_shared(config.control_plane.clone())
        .map_err(|source| Error::ControlPlaneUrl {
            url: config.control_plane.clone(),
            source,
        })?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    let mut authorization =
        MetadataValue::try_from(format!("Bearer {}", config.join_token.expose()))
            .map_err(|_| Error::JoinToken)?;
    authorization.set_sensitive(true);
    Ok((endpoint, authorization))
}

/// The control plane's endpoint, with TLS from files read again at every connect: a
/// renewed client certificate (or CA) is used from the next connection on, without a
/// restart. A set of files that no longer loads keeps the last good one, with a warning.
pub struct ControlPlaneEndpoint {
    plain: Endpoint,
    files: Option<fulcrum_listen::ClientTlsFiles>,
    last_good: std::sync::Mutex<Endpoint>,
}

impl ControlPlaneEndpoint {
    /// Without TLS files (plain, or https with the system's CAs as `plain` says).
    pub fn new(plain: Endpoint) -> Self {
        Self {
            last_good: std::sync::Mutex::new(plain.clone()),
            plain,
            files: None,
        }
    }

    pub fn uri(&self) -> &http::Uri {
        self.plain.uri()
    }

    fn with_files(
        plain: &Endpoint,
        files: &fulcrum_listen::ClientTlsFiles,
    ) -> Result<Endpoint, String> {
        let config = files.tonic_config().map_err(|e| e.to_string())?;
        plain
            .clone()
            .tls_config(config)
            .map_err(|e| Chain(&e).to_string())
    }

    /// The endpoint to connect with now.
    pub fn current(&self) -> Endpoint {
        let mut last_good = self.last_good.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(files) = &self.files {
            match Self::with_files(&self.plain, files) {
                Ok(endpoint) => *last_good = endpoint,
                Err(e) => tracing::warn!(
                    error = %e,
                    "control plane TLS files do not load; connecting with the last good ones"
                ),
            }
        }
        last_good.clone()
    }
}

/// The config stream client of one data plane.
pub(crate) struct Discovery {
    endpoint: Arc<ControlPlaneEndpoint>,
    /// `Bearer <join token>`, marked sensitive so that it never shows in debug output.
    authorization: MetadataValue<Ascii>,
    node: pb::Node,
    runtime: RuntimeConfigHandle,
}

// === impl Discovery ===

impl Discovery {
    /// Checks the control plane URL and the join token up front, so that a typo fails at
    /// start-up instead of in a reconnect loop.
    pub(crate) fn new(
        config: &Config,
        listen_addr: SocketAddr,
        runtime: RuntimeConfigHandle,
    ) -> Result<Self, Error> {
        let (endpoint, authorization) = control_plane(config)?;
        Ok(Self {
            endpoint: Arc::new(ControlPlaneEndpoint::new(endpoint)),
            authorization,
            node: pb::Node {
                id: config.node_id.clone(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                listen_addr: listen_addr.to_string(),
            },
            runtime,
        })
    }

    /// Speaks TLS to an `https://` control plane: with the given CA, client certificate
    /// and server name, or the system's CAs when none is given. TLS files with an
    /// `http://` URL are refused: they would be silently unused.
    pub(crate) fn with_tls(
        mut self,
        files: &fulcrum_listen::ClientTlsFiles,
    ) -> Result<Self, Error> {
        let https = self.endpoint.uri().scheme_str() == Some("https");
        if !https {
            if files.is_empty() {
                return Ok(self);
            }
            return Err(Error::ControlPlaneTls(format!(
                "a CA, client certificate or server name is given but the control plane url {} is not https://",
                self.endpoint.uri()
            )));
        }
        // Read now, so that a bad file fails the start; read again at every connect.
        let endpoint = ControlPlaneEndpoint::with_files(&self.endpoint.plain, files)
            .map_err(Error::ControlPlaneTls)?;
        self.endpoint = Arc::new(ControlPlaneEndpoint {
            plain: self.endpoint.plain.clone(),
            files: Some(files.clone()),
            last_good: std::sync::Mutex::new(endpoint),
        });
        Ok(self)
    }

    /// The control plane's endpoint and authorization header, checked once in [`Self::new`],
    /// for the other streams to the same control plane.
    pub(crate) fn connection(&self) -> (Arc<ControlPlaneEndpoint>, MetadataValue<Ascii>) {
        (Arc::clone(&self.endpoint), self.authorization.clone())
    }

    /// Streams config until `stop` turns true (or its sender goes away), reconnecting
    /// whenever the stream ends.
    pub(crate) async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut backoff = Backoff::default();
        loop {
            let ended = tokio::select! {
                biased;
                _ = stop.wait_for(|stop| *stop) => return,
                ended = self.stream(&mut backoff) => ended,
            };
            let delay = backoff.next_delay();
            // The delay is at most 5 s, so it fits; u128 would log as a string.
            let retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
            let revision = self.runtime.applied_revision();
            match ended {
                Ok(()) => warn!(
                    control_plane = %self.endpoint.uri(),
                    revision,
                    retry_in_ms = retry_in_ms,
                    "control plane closed the config stream; serving the last good config"
                ),
                Err(e) => warn!(
                    control_plane = %self.endpoint.uri(),
                    error = %Chain(&e),
                    hint = e.hint(),
                    revision,
                    retry_in_ms = retry_in_ms,
                    "config stream failed; serving the last good config"
                ),
            }
            tokio::select! {
                biased;
                _ = stop.wait_for(|stop| *stop) => return,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// One stream, from connecting to its end. `Ok` means the control plane ended it.
    async fn stream(&self, backoff: &mut Backoff) -> Result<(), StreamError> {
        let channel = self
            .endpoint
            .current()
            .connect()
            .await
            .map_err(StreamError::Connect)?;
        let mut client =
            DiscoveryServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);

        let current = self.runtime.load();
        let first = pb::StreamConfigRequest {
            node: Some(self.node.clone()),
            known_revision: current.as_ref().map_or(0, |c| c.revision),
            known_store_id: current
                .as_ref()
                .map_or_else(String::new, |c| c.store_id.clone()),
            ..Default::default()
        };
        // At most one response is unacknowledged per stream, so one answer at a time waits
        // here; two slots leave room for the first message.
        let (answers, outbound) = mpsc::channel(2);
        answers
            .try_send(first)
            .expect("a new channel has room for the first message");
        let mut request = tonic::Request::new(ReceiverStream::new(outbound));
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());

        let mut responses = client
            .stream_config(request)
            .await
            .map_err(StreamError::Status)?
            .into_inner();
        info!(
            control_plane = %self.endpoint.uri(),
            known_revision = current.as_ref().map_or(0, |c| c.revision),
            "config stream open"
        );
        while let Some(response) = responses.message().await.map_err(StreamError::Status)? {
            // The control plane answered: it is up, so the next failure starts a fresh backoff.
            backoff.reset();
            let answer = self.answer(response).await?;
            if answers.send(answer).await.is_err() {
                // The transport dropped the request stream: the response stream ends too.
                return Err(StreamError::Closed);
            }
        }
        Ok(())
    }

    /// Applies one response and returns its ACK or NACK.
    async fn answer(
        &self,
        response: pb::StreamConfigResponse,
    ) -> Result<pb::StreamConfigRequest, StreamError> {
        let nonce = response.nonce.clone();
        let revision = response.revision;
        let summary = Summary::of(&response);
        let runtime = self.runtime.clone();
        let started = Instant::now();
        // Building from a large snapshot and freeing the config it replaces take tens of
        // milliseconds: keep both off the async workers that serve requests. The task is
        // awaited here, so it has an owner and responses are applied one at a time; only
        // shutdown drops it mid-flight, and then it finishes on its own.
        let kind = match response.body {
            Some(Body::Snapshot(_)) => ApplyKind::Snapshot,
            // A response without a body is rejected; the kind is never counted.
            _ => ApplyKind::Delta,
        };
        let applied = tokio::task::spawn_blocking(move || -> Result<_, Rejection> {
            let current = runtime.load();
            let config = Arc::new(RuntimeConfig::apply(current.as_deref(), response)?);
            let elapsed = started.elapsed();
            let previous = runtime.store(Arc::clone(&config), kind, elapsed);
            // Free the old config here unless a request still holds it.
            drop((previous, current));
            Ok((config, elapsed))
        })
        .await
        .map_err(StreamError::ApplyPanicked)?;

        let (config, elapsed) = match applied {
            Ok(applied) => applied,
            Err(rejection) => {
                self.runtime.record_rejected();
                warn!(
                    revision,
                    kind = summary.kind,
                    applied_revision = self.runtime.applied_revision(),
                    resync = rejection.needs_resync(),
                    reason = %rejection,
                    "rejected config"
                );
                return Ok(pb::StreamConfigRequest {
                    response_nonce: nonce,
                    applied_revision: self.runtime.applied_revision(),
                    nack: Some(rejection.to_nack()),
                    ..Default::default()
                });
            }
        };
        info!(
            revision,
            kind = summary.kind,
            changed = summary.changed,
            providers = config.providers.len(),
            keys = config.keys.len(),
            routes = config.routes.len(),
            client_tokens = config.client_tokens.len(),
            elapsed_ms = elapsed.as_secs_f64() * 1e3,
            "applied config"
        );
        debug!(nonce = %nonce, "acking");
        Ok(pb::StreamConfigRequest {
            response_nonce: nonce,
            applied_revision: revision,
            ..Default::default()
        })
    }
}

/// What a response carries, for the log line.
struct Summary {
    kind: &'static str,
    /// Resources in a snapshot; upserted plus removed ones in a delta.
    changed: usize,
}

impl Summary {
    fn of(response: &pb::StreamConfigResponse) -> Self {
        fn count(r: Option<&pb::Resources>) -> usize {
            r.map_or(0, |r| {
                r.providers.len()
                    + r.keys.len()
                    + r.routes.len()
                    + r.client_tokens.len()
                    + r.settings.len()
            })
        }
        match &response.body {
            Some(Body::Snapshot(s)) => Self {
                kind: "snapshot",
                changed: count(s.resources.as_ref()),
            },
            Some(Body::Delta(d)) => Self {
                kind: "delta",
                changed: count(d.upserted.as_ref()) + d.removed.len(),
            },
            None => Self {
                kind: "empty",
                changed: 0,
            },
        }
    }
}

/// Exponential backoff with jitter between reconnects: 100 ms doubling to 5 s.
#[derive(Debug)]
struct Backoff {
    ceiling: Duration,
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

impl Default for Backoff {
    fn default() -> Self {
        Self {
            ceiling: BACKOFF_MIN,
        }
    }
}

impl Backoff {
    fn reset(&mut self) {
        self.ceiling = BACKOFF_MIN;
    }

    /// A delay in `[ceiling / 2, ceiling]`, then doubles the ceiling. The jitter keeps
    /// many data planes that lost the same control plane from reconnecting in lockstep.
    fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling;
        self.ceiling = (ceiling * 2).min(BACKOFF_MAX);
        let half = ceiling / 2;
        // Without randomness the delay is merely not jittered, which is still correct.
        let random = getrandom::u64().unwrap_or(0);
        let half_nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(random % (half_nanos + 1))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::pin::Pin;

    use fulcrum_proto::model::Secret;
    use fulcrum_proto::pb::discovery_service_server::{DiscoveryService, DiscoveryServiceServer};
    use fulcrum_proto::pb::{ResourceKind, StreamConfigRequest, StreamConfigResponse};
    use tokio::net::TcpListener;
    use tokio::task::JoinHandle;
    use tokio_stream::Stream;
    use tokio_stream::wrappers::TcpListenerStream;
    use tonic::{Request, Response, Status, Streaming};

    use super::*;
    use crate::runtime::tests::{base_resources, key, reference};

    #[test]
    fn backoff_doubles_with_jitter_and_resets() {
        let mut backoff = Backoff::default();
        let mut ceilings = Vec::new();
        for _ in 0..8 {
            let ceiling = backoff.ceiling;
            let delay = backoff.next_delay();
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{delay:?} outside {ceiling:?}"
            );
            ceilings.push(ceiling.as_millis());
        }
        assert_eq!(ceilings, vec![100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        backoff.reset();
        assert!(backoff.next_delay() <= BACKOFF_MIN);
    }

    /// One stream as the scripted control plane sees it.
    pub(crate) struct Session {
        pub(crate) first: StreamConfigRequest,
        pub(crate) authorization: Option<String>,
        pub(crate) requests: Streaming<StreamConfigRequest>,
        pub(crate) responses: mpsc::Sender<Result<StreamConfigResponse, Status>>,
    }

    impl Session {
        pub(crate) async fn send(&self, response: StreamConfigResponse) {
            self.responses
                .send(Ok(response))
                .await
                .expect("client stream open");
        }

        pub(crate) async fn answer(&mut self) -> StreamConfigRequest {
            self.requests
                .message()
                .await
                .expect("request stream ok")
                .expect("an answer")
        }
    }

    /// A control plane whose streams the test drives by hand: every new stream is handed
    /// to the test as a [`Session`].
    struct ScriptedControlPlane {
        sessions: mpsc::UnboundedSender<Session>,
    }

    #[tonic::async_trait]
    impl DiscoveryService for ScriptedControlPlane {
        type StreamConfigStream =
            Pin<Box<dyn Stream<Item = Result<StreamConfigResponse, Status>> + Send>>;

        async fn stream_config(
            &self,
            request: Request<Streaming<StreamConfigRequest>>,
        ) -> Result<Response<Self::StreamConfigStream>, Status> {
            let authorization = request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let mut requests = request.into_inner();
            let first = requests
                .message()
                .await?
                .ok_or_else(|| Status::invalid_argument("no first message"))?;
            let (responses, rx) = mpsc::channel(4);
            let session = Session {
                first,
                authorization,
                requests,
                responses,
            };
            self.sessions
                .send(session)
                .map_err(|_| Status::unavailable("test is over"))?;
            Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
        }
    }

    /// A scripted control plane on `127.0.0.1:0`; aborted when dropped.
    pub(crate) struct ControlPlane {
        pub(crate) url: String,
        pub(crate) sessions: mpsc::UnboundedReceiver<Session>,
        task: JoinHandle<()>,
    }

    impl ControlPlane {
        pub(crate) async fn start() -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let (tx, sessions) = mpsc::unbounded_channel();
            let service = DiscoveryServiceServer::new(ScriptedControlPlane { sessions: tx })
                .max_decoding_message_size(MAX_MESSAGE_BYTES);
            let task = tokio::spawn(async move {
                tonic::transport::Server::builder()
                    .add_service(service)
                    .serve_with_incoming(TcpListenerStream::new(listener))
                    .await
                    .unwrap();
            });
            Self {
                url,
                sessions,
                task,
            }
        }

        pub(crate) async fn session(&mut self) -> Session {
            self.sessions.recv().await.expect("control plane running")
        }
    }

    impl Drop for ControlPlane {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    pub(crate) fn config(control_plane: &str) -> Config {
        Config {
            control_plane: control_plane.to_string(),
            join_token: Secret::new("join-token-for-tests".to_string()),
            node_id: "dp-test".to_string(),
            grace_period: Duration::from_secs(5),
        }
    }

    pub(crate) fn snapshot(revision: u64, nonce: &str) -> StreamConfigResponse {
        StreamConfigResponse {
            revision,
            nonce: nonce.into(),
            store_id: "store-1".into(),
            body: Some(Body::Snapshot(pb::Snapshot {
                resources: Some(base_resources()),
            })),
        }
    }

    fn delta(
        revision: u64,
        base: u64,
        nonce: &str,
        upserted: pb::Resources,
    ) -> StreamConfigResponse {
        StreamConfigResponse {
            revision,
            nonce: nonce.into(),
            store_id: "store-1".into(),
            body: Some(Body::Delta(pb::Delta {
                base_revision: base,
                upserted: Some(upserted),
                removed: vec![],
            })),
        }
    }

    /// Runs a discovery client against `cp`; returns its stop switch and task.
    fn start_client(
        cp: &ControlPlane,
        runtime: &RuntimeConfigHandle,
    ) -> (watch::Sender<bool>, JoinHandle<()>) {
        let listen: SocketAddr = "127.0.0.1:8000".parse().unwrap();
        let discovery = Discovery::new(&config(&cp.url), listen, runtime.clone()).unwrap();
        let (stop, stopped) = watch::channel(false);
        (stop, tokio::spawn(discovery.run(stopped)))
    }

    #[tokio::test]
    async fn acks_snapshot_and_delta_and_nacks_bad_ones() {
        let mut cp = ControlPlane::start().await;
        let runtime = RuntimeConfigHandle::new();
        let (stop, client) = start_client(&cp, &runtime);

        let mut session = cp.session().await;
        let node = session.first.node.clone().unwrap();
        assert_eq!(node.id, "dp-test");
        assert_eq!(node.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(node.listen_addr, "127.0.0.1:8000");
        assert_eq!(session.first.known_revision, 0);
        assert_eq!(session.first.known_store_id, "");
        assert_eq!(
            session.authorization.as_deref(),
            Some("Bearer join-token-for-tests")
        );

        session.send(snapshot(10, "n1")).await;
        let ack = session.answer().await;
        assert_eq!(
            (ack.response_nonce.as_str(), ack.applied_revision),
            ("n1", 10)
        );
        assert!(ack.nack.is_none());
        assert_eq!(runtime.applied_revision(), 10);
        assert!(runtime.is_ready());

        let upserted = pb::Resources {
            keys: vec![key("openai", "sk-new-key-0001")],
            ..Default::default()
        };
        session.send(delta(11, 10, "n2", upserted)).await;
        let ack = session.answer().await;
        assert_eq!(
            (ack.response_nonce.as_str(), ack.applied_revision),
            ("n2", 11)
        );
        assert!(ack.nack.is_none());
        assert_eq!(runtime.load().unwrap().keys.len(), 4);

        // A key of a provider that does not exist: NACK, and revision 11 stays in force.
        let orphan = key("ghost", "sk-orphan-0001");
        let upserted = pb::Resources {
            keys: vec![orphan.clone()],
            ..Default::default()
        };
        session.send(delta(12, 11, "n3", upserted)).await;
        let nack = session.answer().await;
        assert_eq!(
            (nack.response_nonce.as_str(), nack.applied_revision),
            ("n3", 11)
        );
        let reason = nack.nack.unwrap();
        assert!(!reason.resync);
        assert_eq!(
            reason.rejected,
            vec![reference(ResourceKind::Key, &orphan.id)]
        );
        assert_eq!(runtime.applied_revision(), 11);
        assert_eq!(runtime.load().unwrap().keys.len(), 4);

        // A delta on a base this node does not hold asks for a snapshot.
        session
            .send(delta(14, 13, "n4", pb::Resources::default()))
            .await;
        let nack = session.answer().await;
        assert_eq!(
            (nack.response_nonce.as_str(), nack.applied_revision),
            ("n4", 11)
        );
        assert!(nack.nack.unwrap().resync);

        stop.send_replace(true);
        client.await.unwrap();
    }

    /// Whoever waits for a revision reads the stats of that revision, not of the one
    /// before: they are counted before the revision is published.
    #[tokio::test]
    async fn stats_are_counted_before_the_revision_is_published() {
        let mut cp = ControlPlane::start().await;
        let runtime = RuntimeConfigHandle::new();
        let (stop, client) = start_client(&cp, &runtime);
        let session = cp.session().await;

        session.send(snapshot(10, "n1")).await;
        runtime.wait_for_revision(10).await;
        let stats = runtime.stats();
        assert_eq!((stats.snapshots_applied, stats.deltas_applied), (1, 0));
        assert!(stats.last_apply > Duration::ZERO);

        let upserted = pb::Resources {
            keys: vec![key("openai", "sk-new-key-0001")],
            ..Default::default()
        };
        session.send(delta(11, 10, "n2", upserted)).await;
        runtime.wait_for_revision(11).await;
        assert_eq!(runtime.stats().deltas_applied, 1);

        stop.send_replace(true);
        client.await.unwrap();
    }

    #[tokio::test]
    async fn reconnects_and_resumes_from_applied_revision() {
        let mut cp = ControlPlane::start().await;
        let runtime = RuntimeConfigHandle::new();
        let (stop, client) = start_client(&cp, &runtime);

        let mut session = cp.session().await;
        session.send(snapshot(5, "a1")).await;
        assert_eq!(session.answer().await.applied_revision, 5);

        // The control plane fails the stream, as one that restarts or refuses the token.
        session
            .responses
            .send(Err(Status::unauthenticated("bad join token")))
            .await
            .unwrap();
        let mut session = cp.session().await;
        assert_eq!(session.first.known_revision, 5);
        assert_eq!(session.first.known_store_id, "store-1");
        // Still serving the last good config meanwhile.
        assert!(runtime.is_ready());

        // Then it ends a stream cleanly; the node comes back again.
        session
            .send(delta(5, 5, "b1", pb::Resources::default()))
            .await;
        assert_eq!(session.answer().await.applied_revision, 5);
        drop(session);
        let session = cp.session().await;
        assert_eq!(session.first.known_revision, 5);

        stop.send_replace(true);
        client.await.unwrap();
    }

    #[tokio::test]
    async fn keeps_retrying_while_control_plane_is_down() {
        // Reserve a port, then close it so that connecting is refused.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let runtime = RuntimeConfigHandle::new();
        let listen: SocketAddr = "127.0.0.1:8000".parse().unwrap();
        let discovery = Discovery::new(&config(&url), listen, runtime.clone()).unwrap();
        let (stop, stopped) = watch::channel(false);
        let client = tokio::spawn(discovery.run(stopped));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!client.is_finished());
        assert!(!runtime.is_ready());
        stop.send_replace(true);
        client.await.unwrap();
    }

    #[test]
    fn rejects_bad_url_and_token_without_showing_it() {
        let runtime = RuntimeConfigHandle::new();
        let listen: SocketAddr = "127.0.0.1:8000".parse().unwrap();
        let err = Discovery::new(&config("not a url"), listen, runtime.clone())
            .err()
            .unwrap();
        assert!(matches!(err, Error::ControlPlaneUrl { .. }), "{err}");
        let mut bad_token = config("http://127.0.0.1:1");
        bad_token.join_token = Secret::new("line\nbreak".to_string());
        let err = Discovery::new(&bad_token, listen, runtime).err().unwrap();
        assert!(!err.to_string().contains("line"), "{err}");
    }
}
