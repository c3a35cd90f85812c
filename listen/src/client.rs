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
