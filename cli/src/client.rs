//! The admin gRPC clients (`AdminService`, `LogService`): one channel to the control plane
//! with the admin token attached to every call.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use fulcrum_listen::ClientTlsFiles;
use fulcrum_proto::pb::admin_service_client::AdminServiceClient;
use fulcrum_proto::pb::log_service_client::LogServiceClient;
use fulcrum_proto::pb::security_service_client::SecurityServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// An unreachable endpoint should fail fast instead of hanging a script.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A control plane that accepts connections but does not answer should not hang a script
/// either. Calls that carry their own deadline (bulk `AddKeys`) keep it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline of one `AddKeys` call: up to 100,000 keys in one store transaction.
pub const BULK_TIMEOUT: Duration = Duration::from_secs(300);

/// 100,000 keys go in one `AddKeys` call, and come back as 100,000 results.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

pub type AdminClient = AdminServiceClient<InterceptedService<Channel, Bearer>>;
pub type LogClient = LogServiceClient<InterceptedService<Channel, Bearer>>;
pub type SecurityClient = SecurityServiceClient<InterceptedService<Channel, Bearer>>;

/// Adds `authorization: Bearer <admin token>` to every request, and the default deadline to
/// requests without one (unless made for streams that last until the user stops them).
#[derive(Clone)]
pub struct Bearer {
    value: MetadataValue<Ascii>,
    deadline: Option<Duration>,
}

impl Bearer {
    pub fn new(token: &str) -> anyhow::Result<Self> {
        let mut value: MetadataValue<Ascii> = format!("Bearer {token}").parse().map_err(|_| {
            anyhow!("the admin token contains characters that cannot be sent in a header")
        })?;
        // Keeps the token out of debug output of the request.
        value.set_sensitive(true);
        Ok(Self {
            value,
            deadline: Some(REQUEST_TIMEOUT),
        })
    }
}

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.value.clone());
        if let Some(deadline) = self.deadline
            && !request.metadata().contains_key("grpc-timeout")
        {
            request.set_timeout(deadline);
        }
        Ok(request)
    }
}

/// `127.0.0.1:50051` is accepted as `http://127.0.0.1:50051`.
pub fn normalize_endpoint(endpoint: &str) -> String {
    let trimmed = endpoint.trim();
    if trimmed.contains("://") {
        trimmed.to_string()
    } else {
        format!("http://{trimmed}")
    }
}

/// Connects eagerly, so that an unreachable control plane is reported as such before any
/// request is built.
pub async fn connect(
    endpoint: &str,
    token: Option<&str>,
    tls: &ClientTlsFiles,
) -> anyhow::Result<AdminClient> {
    let (channel, bearer) = open(endpoint, token, tls).await?;
    Ok(AdminServiceClient::with_interceptor(channel, bearer)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
        .max_decoding_message_size(MAX_MESSAGE_BYTES))
}

/// Like [`connect`], for `LogService`. With `streaming`, calls get no default deadline:
/// `logs tail` runs until the user stops it.
pub async fn connect_logs(
    endpoint: &str,
    token: Option<&str>,
    tls: &ClientTlsFiles,
    streaming: bool,
) -> anyhow::Result<LogClient> {
    let (channel, mut bearer) = open(endpoint, token, tls).await?;
    if streaming {
        bearer.deadline = None;
    }
    Ok(LogServiceClient::with_interceptor(channel, bearer)
        .max_decoding_message_size(MAX_MESSAGE_BYTES))
}

/// Like [`connect`], for `SecurityService`.
pub async fn connect_security(
    endpoint: &str,
    token: Option<&str>,
    tls: &ClientTlsFiles,
) -> anyhow::Result<SecurityClient> {
    let (channel, bearer) = open(endpoint, token, tls).await?;
    Ok(SecurityServiceClient::with_interceptor(channel, bearer))
}

async fn open(
    endpoint: &str,
    token: Option<&str>,
    tls: &ClientTlsFiles,
) -> anyhow::Result<(Channel, Bearer)> {
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        bail!("no admin token given (set FULCRUM_TOKEN or --token)");
    };
    let bearer = Bearer::new(token)?;
    let url = normalize_endpoint(endpoint);
    let mut endpoint = Endpoint::from_shared(url.clone())
        .with_context(|| format!("invalid endpoint {url:?}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    if url.starts_with("https://") {
        let config = tls.tonic_config()?;
        endpoint = endpoint
            .tls_config(config)
            .map_err(|err| anyhow!("tls: {}", error_chain(&err)))?;
    } else if !tls.is_empty() {
        bail!(
            "--ca-cert, --client-cert, --client-key and --server-name need an https:// endpoint, not {url}"
        );
    }
    let channel = endpoint.connect().await.map_err(|err| {
        anyhow!(
            "cannot reach the control plane at {url}: {}",
            error_chain(&err)
        )
    })?;
    Ok((channel, bearer))
}

/// An error and its sources as one line, skipping repeats (tonic and hyper often wrap an
/// error in one that says the same thing).
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(err);
    while let Some(e) = current {
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    // The generic "transport error" says nothing once a cause is known.
    if parts.len() > 1 && parts[0] == "transport error" {
        parts.remove(0);
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_get_a_scheme() {
        assert_eq!(
            normalize_endpoint("127.0.0.1:50051"),
            "http://127.0.0.1:50051"
        );
        assert_eq!(normalize_endpoint("http://cp:50051"), "http://cp:50051");
    }

    #[test]
    fn bearer_rejects_header_breaking_tokens() {
        assert!(Bearer::new("abc").is_ok());
        assert!(Bearer::new("a\nb").is_err());
    }
}
