//! An HTTP server (HTTP/1.1 and HTTP/2) for a service (an axum router, or a service that
//! sends most requests past one), with TLS when configured and
//! limits on every connection, so that slow or numerous clients cannot hold the listener:
//!
//! - at most `max_connections` open at once; one more is closed on arrival;
//! - the TLS handshake, the first byte and then every request head must arrive within
//!   `header_read_timeout` (on HTTP/1.1 the clock also runs while a kept-alive connection
//!   waits for its next request, so it is the idle timeout too);
//! - request heads up to `max_header_bytes` (431 beyond), HTTP/2 streams up to
//!   `http2_max_concurrent_streams` per connection, pings to find dead HTTP/2 peers.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::tls::ServerTls;

/// Limits on an HTTP listener's connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections open at once; more are closed as they arrive.
    pub max_connections: usize,
    /// Time for the TLS handshake, for the first byte, and for each request head.
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers; HTTP/2: header list).
    pub max_header_bytes: usize,
    /// Concurrent HTTP/2 streams per connection.
    pub http2_max_concurrent_streams: u32,
    /// HTTP/2 ping interval; a peer that does not answer within `http2_keep_alive_timeout`
    /// is disconnected.
    pub http2_keep_alive_interval: Duration,
    pub http2_keep_alive_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            http2_max_concurrent_streams: 256,
            http2_keep_alive_interval: Duration::from_secs(30),
            http2_keep_alive_timeout: Duration::from_secs(10),
        }
    }
}

/// hyper reads at least this much into its buffer, whatever the head limit.
const MIN_BUF_BYTES: usize = 8192;

/// Counters of an [`serve`]d listener, for metrics and tests.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    /// Connections closed on arrival because `max_connections` were open.
    pub refused: AtomicU64,
    /// TLS handshakes and first reads that failed or timed out.
    pub failed_handshakes: AtomicU64,
}

/// What [`serve`] serves: a cloneable hyper service whose errors are answers. An axum
/// `Router` goes in through [`tower`]; a `hyper::service::service_fn` goes in as it is,
/// and then hyper keeps each request's future in one allocation per connection instead
/// of a boxed future per request.
pub trait HttpService:
    hyper::service::Service<
        http::Request<Incoming>,
        Response = http::Response<Self::ResponseBody>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static
{
    type ResponseBody: http_body::Body<Data: Send, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + 'static;
}

impl<S, B> HttpService for S
where
    S: hyper::service::Service<
            http::Request<Incoming>,
            Response = http::Response<B>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + Sync
        + 'static,
    B: http_body::Body<Data: Send, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + 'static,
{
    type ResponseBody = B;
}

/// A tower service (an axum `Router`) as an [`HttpService`].
pub fn tower<S>(service: S) -> TowerToHyperService<S> {
    TowerToHyperService::new(service)
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting, lets
/// open connections finish their requests and returns once they have. Dropping the
/// future closes every connection at once (the connection tasks are owned here).
pub async fn serve<S>(
    listener: TcpListener,
    router: S,
    tls: Option<ServerTls>,
    limits: HttpLimits,
    stats: Arc<ConnectionStats>,
    shutdown: impl Future<Output = ()>,
) where
    S: HttpService,
{
    let builders = Arc::new(Builders::new(&limits));
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (stop, stopped) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut last_refusal_warning: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(accepted) => accepted,
                    // Out of file descriptors, or reset before accepted: wait a moment
                    // instead of spinning, and keep listening.
                    Err(e) => {
                        warn!(error = %e, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                    stats.refused.fetch_add(1, Ordering::Relaxed);
                    if last_refusal_warning.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
                        warn!(%peer, max_connections = limits.max_connections, "connection limit reached; closing new connections");
                        last_refusal_warning = Some(Instant::now());
                    }
                    drop(tcp);
                    continue;
                };
                // Without TCP_NODELAY the last small write of an answer (a chunk
                // terminator) waits for the client's delayed ACK: ~40 ms per answer.
                if let Err(e) = tcp.set_nodelay(true) {
                    debug!(error = %e, "cannot set TCP_NODELAY");
                }
                let connection = Connection {
                    builders: Arc::clone(&builders),
                    router: router.clone(),
                    stopped: stopped.clone(),
                    stats: Arc::clone(&stats),
                    timeout: limits.header_read_timeout,
                };
                let tls = tls.as_ref().map(ServerTls::acceptor);
                connections.spawn(async move {
                    connection.run(tcp, tls).await;
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    stop.send_replace(true);
    while connections.join_next().await.is_some() {}
}

/// One connection builder per way of choosing the HTTP version.
struct Builders {
    /// Plain TCP: the first bytes say whether it is HTTP/2 (prior knowledge) or HTTP/1.1.
    auto: Builder<TokioExecutor>,
    /// TLS: ALPN said which.
    http1: Builder<TokioExecutor>,
    http2: Builder<TokioExecutor>,
}

impl Builders {
    fn new(limits: &HttpLimits) -> Self {
        let mut auto = Builder::new(TokioExecutor::new());
        auto.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(limits.max_header_bytes.max(MIN_BUF_BYTES))
            .keep_alive(true);
        auto.http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.http2_max_concurrent_streams)
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
            .keep_alive_interval(limits.http2_keep_alive_interval)
            .keep_alive_timeout(limits.http2_keep_alive_timeout);
        Self {
            http1: auto.clone().http1_only(),
            http2: auto.clone().http2_only(),
            auto,
        }
    }
}

struct Connection<S> {
    builders: Arc<Builders>,
    router: S,
    stopped: watch::Receiver<bool>,
    stats: Arc<ConnectionStats>,
    timeout: Duration,
}

impl<S: HttpService> Connection<S> {
    async fn run(self, tcp: TcpStream, tls: Option<tokio_rustls::TlsAcceptor>) {
        let peer = tcp.peer_addr().ok();
        let Some(acceptor) = tls else {
            // Until its first byte hyper cannot tell HTTP/1.1 from HTTP/2 and runs no
            // header timer: a client that connects and sends nothing is bounded here.
            let mut byte = [0u8; 1];
            match tokio::time::timeout(self.timeout, tcp.peek(&mut byte)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => {
                    self.stats.failed_handshakes.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
            let builders = Arc::clone(&self.builders);
            self.serve(&builders.auto, tcp).await;
            return;
        };
        let stream = match tokio::time::timeout(self.timeout, acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                self.stats.failed_handshakes.fetch_add(1, Ordering::Relaxed);
                debug!(peer = ?peer, error = %e, "tls handshake failed");
                return;
            }
            Err(_) => {
                self.stats.failed_handshakes.fetch_add(1, Ordering::Relaxed);
                debug!(peer = ?peer, "tls handshake timed out");
                return;
            }
        };
        let http2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        let builders = Arc::clone(&self.builders);
        let builder = if http2 {
            &builders.http2
        } else {
            &builders.http1
        };
        self.serve(builder, stream).await;
    }

    async fn serve<I>(self, builder: &Builder<TokioExecutor>, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut stopped = self.stopped;
        let stop = async move {
            // An error means the switch is gone, which also means stop.
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), self.router);
        tokio::pin!(connection);
        let ended = tokio::select! {
            ended = connection.as_mut() => ended,
            () = stop => {
                // Finish the request in flight, then close; idle connections close now.
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(e) = ended {
            debug!(error = %e, "connection ended with an error");
        }
    }
}
