//! A control plane running in-process for one test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use fulcrum_control::store::secrets::MasterKeys;
use fulcrum_control::{Config, ControlPlane, Listeners, store::Store};
use fulcrum_proto::pb;
use fulcrum_proto::pb::admin_service_client::AdminServiceClient;
use fulcrum_proto::pb::log_service_client::LogServiceClient;
use fulcrum_proto::pb::security_service_client::SecurityServiceClient;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Admin client that sends the admin token on every call.
pub type AdminClient = AdminServiceClient<InterceptedService<Channel, BearerToken>>;
/// Log client that sends the admin token on every call.
pub type LogClient = LogServiceClient<InterceptedService<Channel, BearerToken>>;
/// Security client that sends the given token on every call.
pub type SecurityClient = SecurityServiceClient<InterceptedService<Channel, BearerToken>>;

/// Adds `authorization: Bearer <token>` to every request.
#[derive(Clone)]
pub struct BearerToken(pub tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// Opens a control plane; when a control plane in this process stopped a moment ago on
/// the same store, waits (at most 5 s) until sled's flusher thread has let go of the
/// store's file lock, as `store::open_waiting` does in the control plane's own tests. A
/// real restart is a new process, where the lock goes with the old one.
fn open_waiting(config: Config) -> Result<ControlPlane, fulcrum_control::Error> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match ControlPlane::open(config.clone()) {
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            opened => return opened,
        }
    }
}

/// A running control plane; stop it with [`ControlPlaneHandle::stop`] to see its errors and
/// panics (dropping it stops it too, silently).
pub struct ControlPlaneHandle {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub admin_token: String,
    pub join_token: String,
    pub data_dir: PathBuf,
    store: Store,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), fulcrum_control::Error>>>,
}

impl ControlPlaneHandle {
    /// Starts a control plane on fresh loopback ports with its store in `data_dir`.
    pub async fn start(data_dir: &Path) -> Self {
        Self::start_with(
            data_dir,
            10_000,
            "127.0.0.1:0".parse().expect("literal address"),
        )
        .await
    }

    /// Starts one with a given change-log capacity and gRPC address (port 0 for any).
    pub async fn start_with(data_dir: &Path, changelog_capacity: u64, grpc: SocketAddr) -> Self {
        Self::start_configured(data_dir, changelog_capacity, grpc, |control| control).await
    }

    /// Starts one after `configure` had its say (TLS, limits).
    pub async fn start_configured(
        data_dir: &Path,
        changelog_capacity: u64,
        grpc: SocketAddr,
        configure: impl FnOnce(ControlPlane) -> ControlPlane,
    ) -> Self {
        crate::init_tracing();
        let config = Config {
            data_dir: data_dir.to_path_buf(),
            admin_token: None,
            join_token: None,
            changelog_capacity,
            master_keys: MasterKeys::default(),
        };
        let control = configure(open_waiting(config).expect("control plane opens"));
        Self::serve(control, data_dir, grpc).await
    }

    /// Starts one with these master keys (`None`: the generated `master.key` file), or
    /// returns why the control plane refused to open.
    pub async fn try_start_keyed(
        data_dir: &Path,
        master_keys: MasterKeys,
        grpc: SocketAddr,
    ) -> Result<Self, fulcrum_control::Error> {
        let config = Config {
            data_dir: data_dir.to_path_buf(),
            admin_token: None,
            join_token: None,
            changelog_capacity: 10_000,
            master_keys,
        };
        crate::init_tracing();
        let control = open_waiting(config)?;
        Ok(Self::serve(control, data_dir, grpc).await)
    }

    /// Starts one with a full config.
    pub async fn start_config(config: Config, grpc: SocketAddr) -> Self {
        crate::init_tracing();
        let data_dir = config.data_dir.clone();
        let control = open_waiting(config).expect("control plane opens");
        Self::serve(control, &data_dir, grpc).await
    }

    async fn serve(control: ControlPlane, data_dir: &Path, grpc: SocketAddr) -> Self {
        let listeners = Listeners::bind(grpc, "127.0.0.1:0".parse().expect("literal address"))
            .await
            .expect("bind loopback listeners");
        let grpc_addr = listeners.grpc.local_addr().expect("bound");
        let http_addr = listeners.http.local_addr().expect("bound");
        let (stop, stopped) = oneshot::channel::<()>();
        let admin_token = control.tokens().admin.expose().clone();
        let join_token = control.tokens().join.expose().clone();
        let store = control.store().clone();
        let task = tokio::spawn(control.serve(listeners, async move {
            let _ = stopped.await;
        }));
        Self {
            grpc_addr,
            http_addr,
            admin_token,
            join_token,
            data_dir: data_dir.to_path_buf(),
            store,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// `http://127.0.0.1:PORT` of the gRPC listener.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// An admin client with the admin token.
    pub async fn admin(&self) -> AdminClient {
        let channel = Channel::from_shared(self.endpoint())
            .expect("valid endpoint")
            .connect()
            .await
            .expect("connect to the control plane");
        let token = format!("Bearer {}", self.admin_token)
            .parse()
            .expect("ascii token");
        AdminServiceClient::with_interceptor(channel, BearerToken(token))
            .max_decoding_message_size(fulcrum_control::MAX_GRPC_MESSAGE_BYTES)
            .max_encoding_message_size(fulcrum_control::MAX_GRPC_MESSAGE_BYTES)
    }

    /// A new client token named `name`, for requests to the data planes.
    pub async fn client_token(&self, name: &str) -> String {
        self.admin()
            .await
            .create_client_token(pb::CreateClientTokenRequest { name: name.into() })
            .await
            .expect("create client token")
            .into_inner()
            .token
    }

    /// An admin client that sends `token` (to check which admin tokens are accepted).
    pub async fn admin_with(&self, token: &str) -> AdminClient {
        let channel = Channel::from_shared(self.endpoint())
            .expect("valid endpoint")
            .connect()
            .await
            .expect("connect to the control plane");
        let token = format!("Bearer {token}").parse().expect("ascii token");
        AdminServiceClient::with_interceptor(channel, BearerToken(token))
    }

    /// A `SecurityService` client that sends `token` as the admin token.
    pub async fn security_with(&self, token: &str) -> SecurityClient {
        let channel = Channel::from_shared(self.endpoint())
            .expect("valid endpoint")
            .connect()
            .await
            .expect("connect to the control plane");
        let token = format!("Bearer {token}").parse().expect("ascii token");
        SecurityServiceClient::with_interceptor(channel, BearerToken(token))
    }

    /// A `LogService` client with the admin token.
    pub async fn logs(&self) -> LogClient {
        let channel = Channel::from_shared(self.endpoint())
            .expect("valid endpoint")
            .connect()
            .await
            .expect("connect to the control plane");
        let token = format!("Bearer {}", self.admin_token)
            .parse()
            .expect("ascii token");
        LogServiceClient::with_interceptor(channel, BearerToken(token))
            .max_decoding_message_size(fulcrum_control::MAX_GRPC_MESSAGE_BYTES)
    }

    /// Current status from the admin API.
    pub async fn status(&self) -> pb::GetStatusResponse {
        self.admin()
            .await
            .get_status(pb::GetStatusRequest {})
            .await
            .expect("GetStatus")
            .into_inner()
    }

    /// Stops it (SIGTERM path: drain, flush) and re-raises its panic or error, if any.
    pub async fn stop(mut self) {
        self.stop_inner().await;
    }

    async fn stop_inner(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("control plane failed: {e}"),
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => panic!("control plane task: {e}"),
            }
        }
    }
}

impl Drop for ControlPlaneHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
