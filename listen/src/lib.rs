//! Fulcrum's listeners, shared by both planes and the CLI: TLS from certificate files that
//! are reloaded without a restart ([`tls`]), the identity a verified client certificate
//! carries ([`identity`]), TLS towards the control plane ([`client`]), an HTTP server
//! with limits on every connection ([`http`]), and the signals that stop it ([`signal`]).

pub mod client;
pub mod http;
pub mod identity;
pub mod signal;
pub mod tls;

pub use client::ClientTlsFiles;
pub use http::HttpLimits;
pub use identity::PeerIdentity;
pub use signal::shutdown_signal;
pub use tls::{ServerTls, ServerTlsFiles, TlsError};
