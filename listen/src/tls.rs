//! Server TLS from certificate files, reloaded without a restart.
//!
//! A [`ServerTls`] holds the current `rustls::ServerConfig` behind an `ArcSwap`: every new
//! connection takes the config in force when it arrives, so a reload reaches new handshakes
//! at once and never disturbs connections already open. [`ServerTls::watch`] re-reads the
//! files every few seconds and on SIGHUP; a new set that does not load (a key that does
//! not match its certificate, a file half-written) keeps the old config and logs a warning.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::Stream;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, info, warn};

/// ALPN for a gRPC listener.
pub const ALPN_GRPC: &[&[u8]] = &[b"h2"];
/// ALPN for an HTTP listener that speaks both versions.
pub const ALPN_HTTP: &[&[u8]] = &[b"h2", b"http/1.1"];

/// How often [`ServerTls::watch`] looks at the files by default.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// Why certificate files could not be turned into a TLS config. Paths are shown; the
/// contents of a key file never are.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} holds no PEM certificate", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)", path.display())]
    NoKey { path: PathBuf },
    #[error("{} is not valid PEM: {detail}", path.display())]
    Pem { path: PathBuf, detail: String },
    #[error("certificate {} and key {} do not make a usable identity: {source}", cert.display(), key.display())]
    Identity {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("client CA file {}: {detail}", path.display())]
    ClientCa { path: PathBuf, detail: String },
    #[error("{0}")]
    Options(String),
}

/// Where a server's certificate, key and (for mutual TLS) client CA live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key of the leaf.
    pub key: PathBuf,
    /// PEM CA certificates that client certificates must chain to; `None`: no client
    /// certificate is asked for.
    pub client_ca: Option<PathBuf>,
}

// === impl ServerTlsFiles ===

impl ServerTlsFiles {
    /// Builds the file set from optional flags: both of cert and key, or neither (no TLS);
    /// a client CA needs a certificate of the server's own.
    pub fn from_flags(
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        client_ca: Option<PathBuf>,
    ) -> Result<Option<Self>, TlsError> {
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Some(Self {
                cert,
                key,
                client_ca,
            })),
            (None, None) if client_ca.is_none() => Ok(None),
            (None, None) => Err(TlsError::Options(
                "--client-ca needs --tls-cert and --tls-key: client certificates are asked for only over TLS".to_string(),
            )),
            (Some(_), None) => Err(TlsError::Options(
                "--tls-cert needs --tls-key".to_string(),
            )),
            (None, Some(_)) => Err(TlsError::Options(
                "--tls-key needs --tls-cert".to_string(),
            )),
        }
    }

    /// The same certificate without the client CA: for listeners that probes and
    /// scrapers reach without a client certificate.
    #[must_use]
    pub fn without_client_ca(&self) -> Self {
        Self {
            client_ca: None,
            ..self.clone()
        }
    }
}

/// The bytes a config was built from, compared on each look so that only a change
/// rebuilds. Deliberately not `Debug`: it holds the private key.
#[derive(PartialEq, Eq)]
struct Contents {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

/// A server TLS config from files, swapped atomically on reload. Cheap to clone.
#[derive(Clone)]
pub struct ServerTls {
    inner: Arc<Inner>,
}

struct Inner {
    files: ServerTlsFiles,
    alpn: Vec<Vec<u8>>,
    config: ArcSwap<ServerConfig>,
    loaded: Mutex<Contents>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.inner.files)
            .finish_non_exhaustive()
    }
}

// === impl ServerTls ===

impl ServerTls {
    /// Loads the files now, so that a bad file fails the start instead of the first
    /// handshake.
    pub fn load(files: ServerTlsFiles, alpn: &[&[u8]]) -> Result<Self, TlsError> {
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let contents = read(&files)?;
        let config = build(&files, &contents, &alpn)?;
        Ok(Self {
            inner: Arc::new(Inner {
                files,
                alpn,
                config: ArcSwap::from_pointee(config),
                loaded: Mutex::new(contents),
            }),
        })
    }

    /// The files this config comes from.
    pub fn files(&self) -> &ServerTlsFiles {
        &self.inner.files
    }

    /// Whether clients must present a certificate that chains to the client CA.
    pub fn requires_client_cert(&self) -> bool {
        self.inner.files.client_ca.is_some()
    }

    /// An acceptor with the config in force now; take one per connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.inner.config.load_full())
    }

    /// Reads the files again and swaps the config in if they changed. `Ok(true)`: a new
    /// config is in force; `Ok(false)`: nothing changed; `Err`: the old config stays.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let contents = read(&self.inner.files)?;
        let mut loaded = self
            .inner
            .loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *loaded == contents {
            return Ok(false);
        }
        let config = build(&self.inner.files, &contents, &self.inner.alpn)?;
        self.inner.config.store(Arc::new(config));
        *loaded = contents;
        Ok(true)
    }

    /// Reloads every `every` and on SIGHUP until `stop` resolves. A failed reload keeps
    /// the old config and logs a warning once per distinct failure.
    pub async fn watch(self, every: Duration, stop: impl Future<Output = ()>) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let hangup_recv = async |hangup: &mut Option<tokio::signal::unix::Signal>| match hangup {
            Some(signal) => signal.recv().await,
            None => std::future::pending().await,
        };
        tokio::pin!(stop);
        let mut last_failure: Option<String> = None;
        loop {
            tokio::select! {
                () = &mut stop => return,
                _ = tick.tick() => {}
                _ = hangup_recv(&mut hangup) => debug!(cert = %self.inner.files.cert.display(), "sighup: reloading certificates"),
            }
            match self.reload() {
                Ok(true) => {
                    last_failure = None;
                    info!(cert = %self.inner.files.cert.display(), "certificates reloaded; new connections use them");
                }
                Ok(false) => last_failure = None,
                Err(e) => {
                    let text = e.to_string();
                    if last_failure.as_deref() != Some(text.as_str()) {
                        warn!(error = %text, "cannot reload certificates; keeping the ones in force");
                        last_failure = Some(text);
                    }
                }
            }
        }
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn read(files: &ServerTlsFiles) -> Result<Contents, TlsError> {
    Ok(Contents {
        cert: read_file(&files.cert)?,
        key: read_file(&files.key)?,
        client_ca: files.client_ca.as_deref().map(read_file).transpose()?,
    })
}

/// Every certificate in a PEM file; an error when there is none.
pub(crate) fn certificates(
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The first private key in a PEM file. The parser's message is not shown: it could
/// quote the file.
pub(crate) fn private_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|_| TlsError::NoKey {
        path: path.to_path_buf(),
    })
}

/// The one crypto provider of every Fulcrum binary (ring builds faster than aws-lc-rs),
/// named here so that no process-wide default has to be installed.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn build(
    files: &ServerTlsFiles,
    contents: &Contents,
    alpn: &[Vec<u8>],
) -> Result<ServerConfig, TlsError> {
    let chain = certificates(&files.cert, &contents.cert)?;
    let key = private_key(&files.key, &contents.key)?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Identity {
            cert: files.cert.clone(),
            key: files.key.clone(),
            source,
        })?;
    let builder = match (&files.client_ca, &contents.client_ca) {
        (Some(path), Some(pem)) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(path, pem)? {
                roots.add(cert).map_err(|e| TlsError::ClientCa {
                    path: path.clone(),
                    detail: e.to_string(),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::ClientCa {
                    path: path.clone(),
                    detail: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|source| TlsError::Identity {
            cert: files.cert.clone(),
            key: files.key.clone(),
            source,
        })?;
    config.alpn_protocols = alpn.to_vec();
    Ok(config)
}

/// Accepted TLS connections for a server that takes a stream of them (tonic): handshakes
/// run side by side, each within `handshake_timeout`, so that one slow client never holds
/// up the others. The accept task ends when the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    tls: ServerTls,
    handshake_timeout: Duration,
) -> impl Stream<Item = io::Result<TlsStream<TcpStream>>> + Send + 'static {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(accept_loop(listener, tls, handshake_timeout, tx));
    ReceiverStream::new(rx)
}

async fn accept_loop(
    listener: TcpListener,
    tls: ServerTls,
    handshake_timeout: Duration,
    tx: mpsc::Sender<io::Result<TlsStream<TcpStream>>>,
) {
    let mut handshakes = JoinSet::new();
    loop {
        tokio::select! {
            () = tx.closed() => return,
            Some(done) = handshakes.join_next(), if !handshakes.is_empty() => {
                if let Ok(Some(stream)) = done
                    && tx.send(Ok(stream)).await.is_err()
                {
                    return;
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    // Without TCP_NODELAY a small answer waits for the client's delayed ACK.
                    let _ = tcp.set_nodelay(true);
                    let acceptor = tls.acceptor();
                    handshakes.spawn(async move {
                        match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                            Ok(Ok(stream)) => Some(stream),
                            Ok(Err(e)) => {
                                info!(%peer, error = %e, "tls handshake failed");
                                None
                            }
                            Err(_) => {
                                info!(%peer, "tls handshake timed out");
                                None
                            }
                        }
                    });
                }
                // Out of file descriptors, or a connection reset before it was accepted:
                // wait a moment instead of spinning, and keep listening.
                Err(e) => {
                    warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}
