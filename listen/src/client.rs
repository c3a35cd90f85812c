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

/// A TLS failure found among an error's sources: what it means for the person who set up
/// the client, and rustls's own words for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFailure {
    pub advice: &'static str,
    /// "received fatal alert: UnknownCA", "invalid peer certificate: UnknownIssuer".
    pub detail: String,
}

impl std::fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.advice, self.detail)
    }
}

/// The TLS failure somewhere in `err`'s sources, or `None` when there is none. With
/// TLS 1.3 a refused client certificate only shows as an alert on the first read, deep
/// inside a transport error, and by then tokio-rustls has turned rustls's error into
/// text: the text is what is read.
pub fn tls_failure(err: &(dyn std::error::Error + 'static)) -> Option<TlsFailure> {
    let mut current = Some(err);
    while let Some(e) = current {
        // An io::Error shows its inner error's text, or hides it behind a kind: try both.
        let inner = e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .map(ToString::to_string);
        if let Some(found) =
            tls_meaning(&e.to_string()).or_else(|| inner.as_deref().and_then(tls_meaning))
        {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// Reads rustls's own wording: "received fatal alert: <Alert>", "invalid peer
/// certificate: <why>".
fn tls_meaning(text: &str) -> Option<TlsFailure> {
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
    let detail = |at: usize| {
        let rest = &text[at..];
        // Up to the end of rustls's phrase: the next quote, paren or line end.
        let end = rest.find(['"', ')', '\n', '}']).unwrap_or(rest.len());
        rest[..end].trim().to_string()
    };
    if let Some(at) = text.find("received fatal alert: ") {
        let alert = &text[at + "received fatal alert: ".len()..];
        let advice = if alert.starts_with("CertificateRequired") {
            "the server requires a client certificate: give one with its key"
        } else if REFUSED.iter().any(|name| alert.starts_with(name)) {
            "the server refused the client certificate: is it signed by the server's client CA, and current?"
        } else {
            "the server ended the TLS handshake"
        };
        return Some(TlsFailure {
            advice,
            detail: detail(at),
        });
    }
    let at = text.find("invalid peer certificate")?;
    Some(TlsFailure {
        advice: "the server's certificate is not trusted: check the CA file and the server name",
        detail: detail(at),
    })
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
            Some(TlsFailure {
                advice: "the server requires a client certificate: give one with its key",
                detail: "received fatal alert: CertificateRequired".to_string(),
            })
        );
        let refused = std::io::Error::other("received fatal alert: UnknownCA");
        let found = tls_failure(&refused).unwrap();
        assert!(found.advice.starts_with("the server refused"), "{found}");
        let untrusted =
            std::io::Error::other("Custom { error: \"invalid peer certificate: UnknownIssuer\" }");
        let found = tls_failure(&untrusted).unwrap();
        assert!(found.advice.contains("not trusted"), "{found}");
        assert_eq!(found.detail, "invalid peer certificate: UnknownIssuer");
        let unrelated = std::io::Error::other("connection refused");
        assert_eq!(tls_failure(&unrelated), None);
    }
}
