//! Validated domain types built from the wire types with `TryFrom`.
//!
//! Both planes check the same rules in the same place: the control plane before it stores
//! a write, the data plane before it swaps in a config.

mod names;
pub mod outbound;
pub mod quota;
mod resources;
pub mod routing;
mod secret;
pub mod settings;

pub use names::{
    validate_base_url, validate_key_secret, validate_model_pattern, validate_provider_name,
    validate_route_pattern, validate_token_name,
};
pub use outbound::{ProxyScheme, ProxyUrl, assign_proxy, mask_proxy};
pub use resources::{ClientToken, Key, KeyState, Provider, ProviderType, Route, RouteTarget};
pub use routing::{ClientProtocol, Plan, PlanReason, PlannedCandidate, Prices, RouteStrategy};
pub use secret::{Secret, TokenHash, key_id, mask_secret, token_hash};
pub use settings::{SettingSpec, Settings};

/// Why a resource or value is not acceptable. The message names the culprit and says what
/// would be accepted, so it can be shown to an operator as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidResource {
    /// What the resource is (`provider`, `key`, `route`, ...).
    pub kind: &'static str,
    /// Its name, as given (never a secret).
    pub name: String,
    pub message: String,
}

impl InvalidResource {
    pub fn new(kind: &'static str, name: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind,
            name: name.into(),
            message: message.into(),
        }
    }
}
