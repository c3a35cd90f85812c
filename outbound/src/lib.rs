//! Fulcrum's outbound HTTP client, shared by the data plane (upstream calls) and the
//! control plane (key probes), so that both reach an upstream the same way: hyper's pooled
//! client over rustls (`ring`, the platform's roots), directly or through the outbound
//! proxy a key is assigned to (HTTP CONNECT or SOCKS5), with TLS to the upstream on top of
//! the tunnel so that a proxy never sees a key. The data plane sends requests to
//! plain-HTTP upstreams it reaches directly (self-hosted servers) through [`h1`] instead,
//! on the task that serves the client ([`Clients::route`]).

pub mod h1;

use std::sync::Arc;
use std::time::Duration;

use fulcrum_proto::model::{ProxyScheme, ProxyUrl};
use http::{HeaderValue, Uri};

/// The pooled upstream client: hyper's, over rustls with the platform's roots, through
/// [`Connector`] (direct or one proxy).
pub type Client = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<Connector>,
    http_body_util::Full<bytes::Bytes>,
>;

type HttpConnector = hyper_util::client::legacy::connect::HttpConnector;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How a connection to an upstream is opened: a TCP connection of its own, an HTTP CONNECT
/// tunnel through a proxy, or SOCKS5 through a proxy. TLS to the upstream runs on top of
/// whichever it is, so a proxy never sees the key.
#[derive(Clone)]
pub enum Connector {
    Direct(HttpConnector),
    Tunnel(hyper_util::client::legacy::connect::proxy::Tunnel<HttpConnector>),
    Socks5(hyper_util::client::legacy::connect::proxy::SocksV5<HttpConnector>),
}

type Connecting =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Stream, BoxError>> + Send>>;

/// A connection to an upstream, or a tunnel to it through a proxy. Unlike hyper's own TCP
/// stream it tells the pool nothing about its addresses: the pool copies what a
/// connection tells into every request's extensions, three allocations per request that
/// nothing here reads.
#[derive(Debug)]
pub struct Stream(hyper_util::rt::TokioIo<tokio::net::TcpStream>);

impl hyper_util::client::legacy::connect::Connection for Stream {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        hyper_util::client::legacy::connect::Connected::new()
    }
}

impl hyper::rt::Read for Stream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Stream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = Stream;
    type Error = BoxError;
    type Future = Connecting;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        match self {
            Connector::Direct(c) => c.poll_ready(cx).map_err(Into::into),
            Connector::Tunnel(c) => c.poll_ready(cx).map_err(Into::into),
            Connector::Socks5(c) => c.poll_ready(cx).map_err(Into::into),
        }
    }

    fn call(&mut self, dst: Uri) -> Connecting {
        // Proxies are asked for host:port; hyper-util's tunnel assumes 443 without a port,
        // wrong for a plain-HTTP upstream.
        let dst = with_port(dst);
        match self {
            Connector::Direct(c) => {
                let connecting = c.call(dst);
                Box::pin(async move { connecting.await.map(Stream).map_err(Into::into) })
            }
            Connector::Tunnel(c) => {
                let connecting = c.call(dst);
                Box::pin(async move { connecting.await.map(Stream).map_err(Into::into) })
            }
            Connector::Socks5(c) => {
                let connecting = c.call(dst);
                Box::pin(async move { connecting.await.map(Stream).map_err(Into::into) })
            }
        }
    }
}

/// `dst` with its scheme's default port written out.
fn with_port(dst: Uri) -> Uri {
    if dst.port().is_some() {
        return dst;
    }
    let port = if dst.scheme() == Some(&http::uri::Scheme::HTTP) {
        80
    } else {
        443
    };
    let Some(host) = dst.host() else { return dst };
    let authority = format!("{host}:{port}");
    let mut parts = dst.clone().into_parts();
    match authority.parse() {
        Ok(authority) => {
            parts.authority = Some(authority);
            Uri::from_parts(parts).unwrap_or(dst)
        }
        Err(_) => dst,
    }
}

/// The upstream clients of one connect timeout: the direct one, built at once, and one per
/// outbound proxy, each built the first time a key assigned to that proxy is used and then
/// kept (and its connection pool with it) until the connect timeout changes; and the pool
/// of the in-task HTTP/1.1 client for plain-HTTP upstreams reached directly.
pub struct Clients {
    connect_timeout: Duration,
    tls: rustls::ClientConfig,
    direct: Arc<Client>,
    plain: Arc<h1::Pool>,
    proxied: std::sync::RwLock<std::collections::HashMap<ProxyUrl, Arc<Client>>>,
}

/// How one request reaches its upstream. Both are shared handles: a request's future
/// holds one across its awaits, and hyper's client by value is 520 bytes copied along
/// with every move of that future.
pub enum Route {
    /// hyper's pooled client: TLS, HTTP/2, outbound proxies.
    Pooled(Arc<Client>),
    /// A plain-HTTP upstream reached directly: HTTP/1.1 on the caller's task.
    Plain(Arc<h1::Pool>),
}

/// An upstream's answer body, from either client.
pub enum ResponseBody {
    Pooled(hyper::body::Incoming),
    Plain(h1::Body),
}

/// Why a body chunk could not be read.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

impl http_body::Body for ResponseBody {
    type Data = bytes::Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, BodyError>>> {
        match self.get_mut() {
            ResponseBody::Pooled(body) => {
                std::pin::Pin::new(body).poll_frame(cx).map_err(Into::into)
            }
            ResponseBody::Plain(body) => {
                std::pin::Pin::new(body).poll_frame(cx).map_err(Into::into)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Pooled(body) => body.is_end_stream(),
            ResponseBody::Plain(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            ResponseBody::Pooled(body) => body.size_hint(),
            ResponseBody::Plain(body) => body.size_hint(),
        }
    }
}

/// Why a request got no answer head.
#[derive(Debug)]
pub enum RequestError {
    Pooled(hyper_util::client::legacy::Error),
    Plain(h1::Error),
}

impl RequestError {
    /// Whether no connection could be opened.
    pub fn is_connect(&self) -> bool {
        match self {
            RequestError::Pooled(e) => e.is_connect(),
            RequestError::Plain(e) => matches!(e, h1::Error::Connect(_)),
        }
    }
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestError::Pooled(e) => e.fmt(f),
            RequestError::Plain(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for RequestError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RequestError::Pooled(e) => Some(e),
            RequestError::Plain(e) => Some(e),
        }
    }
}

impl Route {
    pub async fn request(
        &self,
        request: http::Request<http_body_util::Full<bytes::Bytes>>,
    ) -> Result<http::Response<ResponseBody>, RequestError> {
        match self {
            Route::Pooled(client) => client
                .request(request)
                .await
                .map(|r| r.map(ResponseBody::Pooled))
                .map_err(RequestError::Pooled),
            Route::Plain(pool) => pool
                .request(request)
                .await
                .map(|r| r.map(ResponseBody::Plain))
                .map_err(RequestError::Plain),
        }
    }
}

impl Clients {
    pub fn new(connect_timeout: Duration) -> Result<Self, String> {
        let tls = tls_config()?;
        let direct = Arc::new(build_client(
            &tls,
            Connector::Direct(http_connector(connect_timeout)),
        ));
        Ok(Self {
            connect_timeout,
            tls,
            direct,
            plain: h1::Pool::new(connect_timeout),
            proxied: std::sync::RwLock::default(),
        })
    }

    /// How a request to `uri` through `proxy` (`None`: direct) goes out.
    pub fn route(&self, proxy: Option<&ProxyUrl>, uri: &Uri) -> Result<Route, String> {
        if proxy.is_none() && uri.scheme() == Some(&http::uri::Scheme::HTTP) {
            return Ok(Route::Plain(Arc::clone(&self.plain)));
        }
        self.get(proxy).map(Route::Pooled)
    }

    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The client for calls through `proxy` (`None`: direct).
    pub fn get(&self, proxy: Option<&ProxyUrl>) -> Result<Arc<Client>, String> {
        let Some(proxy) = proxy else {
            return Ok(Arc::clone(&self.direct));
        };
        // A poisoned lock only means another thread panicked while inserting: the map
        // itself is still whole.
        if let Some(client) = self
            .proxied
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(proxy)
        {
            return Ok(Arc::clone(client));
        }
        let client = Arc::new(build_client(
            &self.tls,
            proxy_connector(proxy, self.connect_timeout)?,
        ));
        let mut proxied = self
            .proxied
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(Arc::clone(proxied.entry(proxy.clone()).or_insert(client)))
    }

    /// How many proxy clients exist (for tests and metrics).
    pub fn proxied_len(&self) -> usize {
        self.proxied
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }
}

/// The connector that reaches upstreams through `proxy`.
fn proxy_connector(proxy: &ProxyUrl, connect_timeout: Duration) -> Result<Connector, String> {
    use hyper_util::client::legacy::connect::proxy::{SocksV5, Tunnel};
    let parts = proxy.parts();
    let scheme = match parts.scheme {
        ProxyScheme::Http => "http",
        ProxyScheme::Socks5 => "socks5",
    };
    let proxy_uri: Uri = format!("{scheme}://{}", parts.authority)
        .parse()
        .map_err(|_| format!("proxy {proxy} is not a usable address"))?;
    let http = http_connector(connect_timeout);
    Ok(match parts.scheme {
        ProxyScheme::Http => {
            let mut tunnel = Tunnel::new(proxy_uri, http);
            if let Some((user, password)) = parts.credentials {
                let token = base64(format!("{user}:{password}").as_bytes());
                let mut value = HeaderValue::from_str(&format!("Basic {token}"))
                    .map_err(|_| format!("proxy {proxy} has unusable credentials"))?;
                value.set_sensitive(true);
                tunnel = tunnel.with_auth(value);
            }
            Connector::Tunnel(tunnel)
        }
        ProxyScheme::Socks5 => {
            let mut socks = SocksV5::new(proxy_uri, http);
            if let Some((user, password)) = parts.credentials {
                socks = socks.with_auth(user.to_string(), password.to_string());
            }
            Connector::Socks5(socks)
        }
    })
}

/// Standard base64 with padding, for a proxy's Basic credentials.
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// rustls with `ring` passed in (no process-wide provider needed) and the platform's roots.
pub fn tls_config() -> Result<rustls::ClientConfig, String> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls versions: {e}"))?
        .with_platform_verifier()
        .map_err(|e| format!("tls roots: {e}"))?
        .with_no_client_auth())
}

fn http_connector(connect_timeout: Duration) -> HttpConnector {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    http.set_keepalive(Some(Duration::from_secs(30)));
    http
}

/// A pooled client over `connector`: keep-alive, HTTP/2 where the upstream offers it over
/// TLS (ALPN). Redirects are never followed: an upstream that moves must be reconfigured,
/// and a redirect must not carry a key to another host.
fn build_client(tls: &rustls::ClientConfig, connector: Connector) -> Client {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls.clone())
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(connector);
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(https)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_credentials_and_ports() {
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b""), "");
        let with = |s: &str| with_port(s.parse().unwrap()).to_string();
        assert_eq!(with("http://h/v1/x"), "http://h:80/v1/x");
        assert_eq!(with("https://h/v1"), "https://h:443/v1");
        assert_eq!(with("http://h:8080/v1"), "http://h:8080/v1");
    }

    #[tokio::test]
    async fn one_client_per_proxy() {
        let clients = Clients::new(Duration::from_secs(1)).unwrap();
        let a = ProxyUrl::parse("http://127.0.0.1:9").unwrap();
        let b = ProxyUrl::parse("socks5://u:p@127.0.0.1:9").unwrap();
        clients.get(None).unwrap();
        assert_eq!(clients.proxied_len(), 0);
        clients.get(Some(&a)).unwrap();
        clients.get(Some(&a)).unwrap();
        clients.get(Some(&b)).unwrap();
        assert_eq!(clients.proxied_len(), 2);
    }
}
