//! Fulcrum's data plane: a stateless proxy that streams its config from the control plane.

pub mod config;

pub use config::Config;
