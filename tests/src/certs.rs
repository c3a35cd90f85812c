//! Certificates made by the tests themselves: a CA per test, server and client
//! certificates it signs, PEM files in a temp dir, and a TLS client that reports which
//! certificate a listener served.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fulcrum_listen::PeerIdentity;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A certificate authority that lives for one test.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, PEM-encoded.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("empty SAN list");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("generate CA key");
        Self {
            issuer: CertifiedIssuer::self_signed(params, key).expect("self-sign CA"),
        }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `localhost` and 127.0.0.1 with the given common name.
    pub fn server(&self, common_name: &str) -> Issued {
        self.issue(
            common_name,
            vec![
                SanType::DnsName("localhost".try_into().expect("ascii")),
                SanType::IpAddress([127, 0, 0, 1].into()),
            ],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate with a common name, a DNS name and a SPIFFE-style URI.
    pub fn client(&self, common_name: &str) -> Issued {
        self.issue(
            common_name,
            vec![
                SanType::DnsName(
                    format!("{common_name}.fulcrum.test")
                        .try_into()
                        .expect("ascii"),
                ),
                SanType::URI(
                    format!("spiffe://fulcrum.test/{common_name}")
                        .try_into()
                        .expect("ascii"),
                ),
            ],
            ExtendedKeyUsagePurpose::ClientAuth,
        )
    }

    fn issue(
        &self,
        common_name: &str,
        sans: Vec<SanType>,
        usage: ExtendedKeyUsagePurpose,
    ) -> Issued {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("empty SAN list");
        params.subject_alt_names = sans;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().expect("generate key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// Paths of a written certificate and key.
#[derive(Clone)]
pub struct Files {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Issued {
    /// Writes `<name>.crt` and `<name>.key` into `dir` (replacing what was there).
    pub fn write(&self, dir: &Path, name: &str) -> Files {
        let files = Files {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.cert, &self.cert_pem).expect("write cert");
        std::fs::write(&files.key, &self.key_pem).expect("write key");
        files
    }
}

/// Writes a CA's certificate to `dir/<name>.crt`.
pub fn write_ca(ca: &TestCa, dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(format!("{name}.crt"));
    std::fs::write(&path, ca.pem()).expect("write CA");
    path
}

/// A TLS client that trusts `ca_pem` only, offering `alpn`.
pub fn client_config(ca_pem: &str, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM parses")).expect("CA loads");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// Opens a TLS connection to `addr` as `localhost`; the identity of the certificate the
/// server presented comes with the stream.
pub async fn connect_tls(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<(tokio_rustls::client::TlsStream<TcpStream>, PeerIdentity)> {
    let tcp = TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let stream = connector
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await?;
    let identity = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(fulcrum_listen::identity::peer_identity)
        .expect("the server presented a certificate");
    Ok((stream, identity))
}

/// One HTTP/1.1 GET on an open stream (keep-alive): status and body. The server must
/// answer with a `content-length`.
pub async fn get_on<S>(stream: &mut S, path: &str) -> std::io::Result<(u16, String)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before the answer was complete",
            ));
        }
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .expect("a content-length");
        if body.len() >= length {
            let status = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .expect("a status line");
            return Ok((status, body[..length].to_string()));
        }
    }
}

/// A GET over a new TLS connection to a listener serving `localhost`: status, body and
/// the served certificate's identity.
pub async fn https_get(
    addr: SocketAddr,
    ca_pem: &str,
    path: &str,
) -> std::io::Result<(u16, String, PeerIdentity)> {
    let (mut stream, identity) = connect_tls(addr, client_config(ca_pem, &[b"http/1.1"])).await?;
    let (status, body) = get_on(&mut stream, path).await?;
    Ok((status, body, identity))
}
