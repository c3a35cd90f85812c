//! TLS from a client towards the control plane (data planes, `fulcrumctl`): the CA to
//! trust and, for mutual TLS, the client's own certificate.

use std::path::PathBuf;

use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::tls::{TlsError, certificates, private_key};

/// Files for a TLS client. All empty with an `https://` URL: the system's CAs, no client
/// certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTlsFiles {
    /// PEM CA certificates that the server's certificate must chain to.
    pub ca: Option<PathBuf>,
    /// PEM client certificate chain, for servers that ask for one (mutual TLS).
    pub cert: Option<PathBuf>,
    /// PEM private key of the client certificate.
    pub key: Option<PathBuf>,
    /// Name to check the server's certificate against, when it is not the URL's host.
    pub server_name: Option<String>,
}

// === impl ClientTlsFiles ===

impl ClientTlsFiles {
    /// Whether any TLS option was given.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// A tonic TLS config, with every file read and checked now so that a wrong path fails
    /// at start instead of as a handshake error on each reconnect.
    pub fn tonic_config(&self) -> Result<ClientTlsConfig, TlsError> {
        let mut config = ClientTlsConfig::new();
        config = match &self.ca {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|source| TlsError::Read {
                    path: path.clone(),
                    source,
                })?;
                certificates(path, &pem)?;
                config.ca_certificate(Certificate::from_pem(pem))
            }
            None => config.with_native_roots(),
        };
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let cert_pem = std::fs::read(cert).map_err(|source| TlsError::Read {
                    path: cert.clone(),
                    source,
                })?;
                let key_pem = std::fs::read(key).map_err(|source| TlsError::Read {
                    path: key.clone(),
                    source,
                })?;
                certificates(cert, &cert_pem)?;
                private_key(key, &key_pem)?;
                config = config.identity(Identity::from_pem(cert_pem, key_pem));
            }
            (None, None) => {}
            (Some(_), None) => {
                return Err(TlsError::Options(
                    "a client certificate needs its key (--client-key)".to_string(),
                ));
            }
            (None, Some(_)) => {
                return Err(TlsError::Options(
                    "a client key needs its certificate (--client-cert)".to_string(),
                ));
            }
        }
        if let Some(name) = &self.server_name {
            config = config.domain_name(name.clone());
        }
        Ok(config)
    }
}

/// What a TLS failure somewhere in `err`'s sources means for the person who set up the
/// client, or `None` when no TLS error is among them. With TLS 1.3 a refused client
/// certificate only shows as an alert on the first read, deep inside a transport error,
/// and by then tokio-rustls has turned rustls's error into text: the text is what is read.
pub fn tls_failure(err: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    let mut current = Some(err);
    while let Some(e) = current {
        let mut text = e.to_string();
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            text.push_str(&inner.to_string());
        }
        if let Some(meaning) = tls_meaning(&text) {
            return Some(meaning);
        }
        current = e.source();
    }
    None
}

/// Reads rustls's own wording: "received fatal alert: <Alert>", "invalid peer
/// certificate: <why>".
fn tls_meaning(text: &str) -> Option<&'static str> {
    const REFUSED: &[&str] = &[
        "UnknownCA",
        "BadCertificate",
        "CertificateUnknown",
        "UnsupportedCertificate",
        "CertificateExpired",
        "CertificateRevoked",
        "AccessDenied",
        "DecryptError",
    ];
    if let Some((_, alert)) = text.split_once("received fatal alert: ") {
        if alert.starts_with("CertificateRequired") {
            return Some("the server requires a client certificate: give one with its key");
        }
        if REFUSED.iter().any(|name| alert.starts_with(name)) {
            return Some(
                "the server refused the client certificate: is it signed by the server's client CA, and current?",
            );
        }
        return Some("the server ended the TLS handshake");
    }
    if text.contains("invalid peer certificate") {
        return Some(
            "the server's certificate is not trusted: check the CA file and the server name",
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_and_certificate_errors_read_as_advice() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "received fatal alert: CertificateRequired",
        );
        assert_eq!(
            tls_failure(&io),
            Some("the server requires a client certificate: give one with its key")
        );
        let refused = std::io::Error::other("received fatal alert: UnknownCA");
        assert!(
            tls_failure(&refused)
                .unwrap()
                .starts_with("the server refused")
        );
        let untrusted = std::io::Error::other("invalid peer certificate: UnknownIssuer");
        assert!(tls_failure(&untrusted).unwrap().contains("not trusted"));
        let unrelated = std::io::Error::other("connection refused");
        assert_eq!(tls_failure(&unrelated), None);
    }
}
