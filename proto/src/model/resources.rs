//! Providers, keys, routes and client tokens as both planes use them.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::outbound::{ProxyUrl, assign_proxy, parse_proxies, parse_upstream_headers};
use super::routing::{MAX_STICKY_SECS, Prices, RouteStrategy};
use super::{
    InvalidResource, Secret, validate_base_url, validate_key_secret, validate_model_pattern,
};
use super::{validate_provider_name, validate_token_name};
use crate::pb;

/// The kind of upstream a provider speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderType {
    Gemini,
    OpenAi,
    Anthropic,
    VertexExpress,
    Mock,
}

impl ProviderType {
    pub const ALL: [ProviderType; 5] = [
        ProviderType::Gemini,
        ProviderType::OpenAi,
        ProviderType::Anthropic,
        ProviderType::VertexExpress,
        ProviderType::Mock,
    ];

    /// The name operators type: `gemini`, `openai`, `anthropic`, `vertex-express`, `mock`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderType::Gemini => "gemini",
            ProviderType::OpenAi => "openai",
            ProviderType::Anthropic => "anthropic",
            ProviderType::VertexExpress => "vertex-express",
            ProviderType::Mock => "mock",
        }
    }

    /// The base URL used when an operator gives none. Empty for `mock`, which answers locally.
    pub fn default_base_url(self) -> &'static str {
        match self {
            ProviderType::Gemini => "https://generativelanguage.googleapis.com",
            ProviderType::OpenAi => "https://api.openai.com/v1",
            ProviderType::Anthropic => "https://api.anthropic.com",
            ProviderType::VertexExpress => "https://aiplatform.googleapis.com",
            ProviderType::Mock => "",
        }
    }

    pub fn to_pb(self) -> pb::ProviderType {
        match self {
            ProviderType::Gemini => pb::ProviderType::Gemini,
            ProviderType::OpenAi => pb::ProviderType::Openai,
            ProviderType::Anthropic => pb::ProviderType::Anthropic,
            ProviderType::VertexExpress => pb::ProviderType::VertexExpress,
            ProviderType::Mock => pb::ProviderType::Mock,
        }
    }

    /// From the wire's enum number; `None` for unspecified or unknown numbers.
    pub fn from_pb(value: i32) -> Option<Self> {
        match pb::ProviderType::try_from(value).ok()? {
            pb::ProviderType::Unspecified => None,
            pb::ProviderType::Gemini => Some(ProviderType::Gemini),
            pb::ProviderType::Openai => Some(ProviderType::OpenAi),
            pb::ProviderType::Anthropic => Some(ProviderType::Anthropic),
            pb::ProviderType::VertexExpress => Some(ProviderType::VertexExpress),
            pb::ProviderType::Mock => Some(ProviderType::Mock),
        }
    }
}

impl fmt::Display for ProviderType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProviderType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase().replace('_', "-");
        ProviderType::ALL
            .into_iter()
            .find(|t| t.as_str() == lower)
            .ok_or_else(|| {
                let names: Vec<&str> = ProviderType::ALL.iter().map(|t| t.as_str()).collect();
                format!(
                    "unknown provider type {s:?}; expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// The control plane's decision about a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyState {
    Active,
    Cooling,
    Exhausted,
    Failing,
    Invalid,
    Disabled,
}

impl KeyState {
    pub const ALL: [KeyState; 6] = [
        KeyState::Active,
        KeyState::Cooling,
        KeyState::Exhausted,
        KeyState::Failing,
        KeyState::Invalid,
        KeyState::Disabled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::Cooling => "cooling",
            KeyState::Exhausted => "exhausted",
            KeyState::Failing => "failing",
            KeyState::Invalid => "invalid",
            KeyState::Disabled => "disabled",
        }
    }

    pub fn to_pb(self) -> pb::KeyState {
        match self {
            KeyState::Active => pb::KeyState::Active,
            KeyState::Cooling => pb::KeyState::Cooling,
            KeyState::Exhausted => pb::KeyState::Exhausted,
            KeyState::Failing => pb::KeyState::Failing,
            KeyState::Invalid => pb::KeyState::Invalid,
            KeyState::Disabled => pb::KeyState::Disabled,
        }
    }

    /// Whether a key in this state is in rotation at `now_unix_ms`: `active`, or `cooling`
    /// or `exhausted` with its end (`until_unix_ms`) reached. The same rule on both planes.
    pub fn is_usable(self, until_unix_ms: i64, now_unix_ms: i64) -> bool {
        match self {
            KeyState::Active => true,
            KeyState::Cooling | KeyState::Exhausted => until_unix_ms <= now_unix_ms,
            KeyState::Failing | KeyState::Invalid | KeyState::Disabled => false,
        }
    }

    /// From the wire's enum number; `None` for unspecified or unknown numbers.
    pub fn from_pb(value: i32) -> Option<Self> {
        match pb::KeyState::try_from(value).ok()? {
            pb::KeyState::Unspecified => None,
            pb::KeyState::Active => Some(KeyState::Active),
            pb::KeyState::Cooling => Some(KeyState::Cooling),
            pb::KeyState::Exhausted => Some(KeyState::Exhausted),
            pb::KeyState::Failing => Some(KeyState::Failing),
            pb::KeyState::Invalid => Some(KeyState::Invalid),
            pb::KeyState::Disabled => Some(KeyState::Disabled),
        }
    }
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        KeyState::ALL
            .into_iter()
            .find(|t| t.as_str() == lower)
            .ok_or_else(|| {
                let names: Vec<&str> = KeyState::ALL.iter().map(|t| t.as_str()).collect();
                format!(
                    "unknown key state {s:?}; expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// A validated provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    pub name: String,
    pub provider_type: ProviderType,
    /// Empty only for `mock`.
    pub base_url: String,
    pub priority: u32,
    pub weight: u32,
    /// Outbound proxies; empty: direct.
    pub proxies: Vec<ProxyUrl>,
    /// Extra headers for every upstream request, values of secret-looking names marked
    /// sensitive.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl Provider {
    /// The proxy `key`'s upstream calls go through: its pinned one, else the provider's
    /// rendezvous assignment (see [`super::outbound`]); `None`: direct.
    pub fn proxy_for<'a>(&'a self, key: &'a Key) -> Option<&'a ProxyUrl> {
        key.proxy
            .as_ref()
            .or_else(|| assign_proxy(&key.id, &self.proxies))
    }
}

impl TryFrom<&pb::Provider> for Provider {
    type Error = InvalidResource;

    fn try_from(p: &pb::Provider) -> Result<Self, Self::Error> {
        validate_provider_name(&p.name)?;
        let provider_type = ProviderType::from_pb(p.r#type).ok_or_else(|| {
            InvalidResource::new(
                "provider",
                &p.name,
                format!("provider {:?} has no known type", p.name),
            )
        })?;
        if !(p.base_url.is_empty() && provider_type == ProviderType::Mock) {
            validate_base_url(&p.base_url)
                .map_err(|e| InvalidResource::new("provider", &p.name, e.message))?;
        }
        if p.weight == 0 {
            return Err(InvalidResource::new(
                "provider",
                &p.name,
                format!("provider {:?} has weight 0", p.name),
            ));
        }
        let in_provider = |e: super::InvalidResource| {
            InvalidResource::new(
                "provider",
                &p.name,
                format!("provider {:?}: {}", p.name, e.message),
            )
        };
        let proxies = parse_proxies(&p.proxies).map_err(in_provider)?;
        let headers = parse_upstream_headers(
            p.headers
                .iter()
                .map(|h| (h.name.as_str(), h.value.as_str())),
        )
        .map_err(in_provider)?;
        Ok(Self {
            name: p.name.clone(),
            provider_type,
            base_url: p.base_url.trim_end_matches('/').to_string(),
            priority: p.priority,
            weight: p.weight,
            proxies,
            headers,
        })
    }
}

/// A validated provider key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub id: String,
    pub provider: String,
    pub secret: Secret<String>,
    pub state: KeyState,
    pub state_reason: String,
    /// End of a `cooling` or `exhausted` state, in Unix milliseconds; 0 otherwise.
    pub state_until_unix_ms: i64,
    /// A proxy pinned to this key; `None`: the provider's assignment.
    pub proxy: Option<ProxyUrl>,
    /// Models whose quota this key has used up, each with its reset time (Unix ms).
    /// Almost always empty; a handful of entries at most.
    pub exhausted_models: Box<[(Box<str>, i64)]>,
}

impl Key {
    /// Whether the key's quota for `model` is used up at `now_ms`.
    pub fn exhausted_for(&self, model: &str, now_ms: i64) -> bool {
        self.exhausted_models
            .iter()
            .any(|(m, until)| *until > now_ms && m.as_ref() == model)
    }
}

fn exhausted_models(k: &pb::ProviderKey) -> Box<[(Box<str>, i64)]> {
    k.exhausted_models
        .iter()
        .map(|m| (Box::from(m.model.as_str()), m.until_unix_ms))
        .collect()
}

impl Key {
    /// Checks the fields that need checking and returns the state and pinned proxy.
    fn check(k: &pb::ProviderKey) -> Result<(KeyState, Option<ProxyUrl>), InvalidResource> {
        if k.id.len() != 16 || !k.id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(InvalidResource::new(
                "key",
                &k.id,
                format!("key id {:?} is not 16 hex characters", k.id),
            ));
        }
        validate_key_secret(&k.secret).map_err(|why| {
            InvalidResource::new("key", &k.id, format!("key {}: secret {why}", k.id))
        })?;
        let state = KeyState::from_pb(k.state).ok_or_else(|| {
            InvalidResource::new("key", &k.id, format!("key {} has no known state", k.id))
        })?;
        let proxy = if k.proxy.is_empty() {
            None
        } else {
            Some(ProxyUrl::parse(&k.proxy).map_err(|e| {
                InvalidResource::new("key", &k.id, format!("key {}: {}", k.id, e.message))
            })?)
        };
        Ok((state, proxy))
    }
}

impl TryFrom<&pb::ProviderKey> for Key {
    type Error = InvalidResource;

    fn try_from(k: &pb::ProviderKey) -> Result<Self, Self::Error> {
        let (state, proxy) = Key::check(k)?;
        Ok(Self {
            id: k.id.clone(),
            provider: k.provider.clone(),
            secret: Secret::new(k.secret.clone()),
            state,
            state_reason: k.state_reason.clone(),
            state_until_unix_ms: k.state_until_unix_ms,
            proxy,
            exhausted_models: exhausted_models(k),
        })
    }
}

/// Moves the strings out instead of copying them: a snapshot or bulk import carries
/// 100,000 keys.
impl TryFrom<pb::ProviderKey> for Key {
    type Error = InvalidResource;

    fn try_from(k: pb::ProviderKey) -> Result<Self, Self::Error> {
        let (state, proxy) = Key::check(&k)?;
        let exhausted_models = exhausted_models(&k);
        Ok(Self {
            id: k.id,
            provider: k.provider,
            secret: Secret::new(k.secret),
            state,
            state_reason: k.state_reason,
            state_until_unix_ms: k.state_until_unix_ms,
            proxy,
            exhausted_models,
        })
    }
}

/// One validated candidate of a route.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteTarget {
    pub provider: String,
    /// `None` keeps the client's model.
    pub model: Option<String>,
    pub priority: u32,
    pub weight: u32,
    /// Zero when unknown.
    pub prices: Prices,
}

/// A validated route.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Route {
    pub model_pattern: String,
    pub targets: Vec<RouteTarget>,
    pub strategy: RouteStrategy,
    /// How long a client token keeps its candidate; `None` when off.
    pub sticky: Option<Duration>,
}

impl TryFrom<&pb::Route> for Route {
    type Error = InvalidResource;

    fn try_from(r: &pb::Route) -> Result<Self, Self::Error> {
        validate_model_pattern(&r.model_pattern)?;
        let invalid = |why: String| {
            InvalidResource::new(
                "route",
                &r.model_pattern,
                format!("route {:?}: {why}", r.model_pattern),
            )
        };
        let strategy = RouteStrategy::from_pb(r.strategy)
            .ok_or_else(|| invalid(format!("unknown strategy number {}", r.strategy)))?;
        if r.sticky_secs > MAX_STICKY_SECS {
            return Err(invalid(format!(
                "sticky time {}s is longer than one day ({MAX_STICKY_SECS}s)",
                r.sticky_secs
            )));
        }
        if r.targets.is_empty() {
            return Err(InvalidResource::new(
                "route",
                &r.model_pattern,
                format!("route {:?} has no targets", r.model_pattern),
            ));
        }
        let mut targets = Vec::with_capacity(r.targets.len());
        for t in &r.targets {
            validate_provider_name(&t.provider).map_err(|e| {
                InvalidResource::new(
                    "route",
                    &r.model_pattern,
                    format!("route {:?}: {}", r.model_pattern, e.message),
                )
            })?;
            if !t.model.is_empty() {
                validate_model_pattern(&t.model).map_err(|e| {
                    InvalidResource::new(
                        "route",
                        &r.model_pattern,
                        format!("route {:?}: target model: {}", r.model_pattern, e.message),
                    )
                })?;
                if t.model.contains('*') {
                    return Err(InvalidResource::new(
                        "route",
                        &r.model_pattern,
                        format!(
                            "route {:?}: a target model cannot contain '*'",
                            r.model_pattern
                        ),
                    ));
                }
            }
            let prices = Prices::new(
                t.input_usd_per_million_tokens,
                t.output_usd_per_million_tokens,
            )
            .map_err(|why| invalid(format!("target {}: {why}", t.provider)))?;
            targets.push(RouteTarget {
                provider: t.provider.clone(),
                model: (!t.model.is_empty()).then(|| t.model.clone()),
                priority: t.priority,
                weight: t.weight.max(1),
                prices,
            });
        }
        Ok(Self {
            model_pattern: r.model_pattern.clone(),
            targets,
            strategy,
            sticky: (r.sticky_secs > 0).then(|| Duration::from_secs(u64::from(r.sticky_secs))),
        })
    }
}

/// A client token as the data planes know it: its name and the hash of the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientToken {
    pub name: String,
    pub token_hash: String,
}

impl TryFrom<&pb::ClientToken> for ClientToken {
    type Error = InvalidResource;

    fn try_from(t: &pb::ClientToken) -> Result<Self, Self::Error> {
        validate_token_name(&t.name)?;
        if t.token_hash.len() != 64 || !t.token_hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(InvalidResource::new(
                "client token",
                &t.name,
                format!("client token {:?} has no valid hash", t.name),
            ));
        }
        Ok(Self {
            name: t.name.clone(),
            token_hash: t.token_hash.to_ascii_lowercase(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_types_round_trip() {
        for t in ProviderType::ALL {
            assert_eq!(t.as_str().parse::<ProviderType>().unwrap(), t);
            assert_eq!(ProviderType::from_pb(t.to_pb() as i32), Some(t));
        }
        assert!("azure".parse::<ProviderType>().is_err());
        assert_eq!(ProviderType::from_pb(0), None);
    }

    #[test]
    fn key_states_round_trip() {
        for s in KeyState::ALL {
            assert_eq!(s.as_str().parse::<KeyState>().unwrap(), s);
            assert_eq!(KeyState::from_pb(s.to_pb() as i32), Some(s));
        }
    }

    #[test]
    fn provider_validation() {
        let mut p = pb::Provider {
            name: "main".into(),
            r#type: pb::ProviderType::Openai as i32,
            base_url: "https://api.openai.com/v1/".into(),
            priority: 0,
            weight: 1,
            ..Default::default()
        };
        assert_eq!(
            Provider::try_from(&p).unwrap().base_url,
            "https://api.openai.com/v1"
        );
        p.base_url = String::new();
        assert!(Provider::try_from(&p).is_err());
        p.r#type = pb::ProviderType::Mock as i32;
        assert!(Provider::try_from(&p).is_ok());
        p.r#type = 99;
        assert!(Provider::try_from(&p).is_err());
    }

    #[test]
    fn route_validation() {
        let mut r = pb::Route {
            model_pattern: "gpt-*".into(),
            ..Default::default()
        };
        assert!(Route::try_from(&r).is_err());
        r.targets.push(pb::RouteTarget {
            provider: "main".into(),
            ..Default::default()
        });
        let route = Route::try_from(&r).unwrap();
        assert_eq!(route.targets[0].model, None);
        assert_eq!(route.targets[0].weight, 1);
        assert_eq!(
            route.strategy,
            RouteStrategy::Priority,
            "unspecified is priority"
        );
        assert_eq!(route.sticky, None);

        r.strategy = pb::RouteStrategy::LowestCost as i32;
        r.sticky_secs = 600;
        r.targets[0].input_usd_per_million_tokens = 2.5;
        r.targets[0].output_usd_per_million_tokens = 10.0;
        let route = Route::try_from(&r).unwrap();
        assert_eq!(route.strategy, RouteStrategy::LowestCost);
        assert_eq!(route.sticky, Some(Duration::from_secs(600)));
        assert_eq!(route.targets[0].prices, Prices::new(2.5, 10.0).unwrap());

        let refused = |change: &dyn Fn(&mut pb::Route), needle: &str| {
            let mut bad = r.clone();
            change(&mut bad);
            let err = Route::try_from(&bad).unwrap_err();
            assert!(err.message.contains(needle), "{}", err.message);
        };
        refused(&|b| b.strategy = 42, "unknown strategy");
        refused(&|b| b.sticky_secs = 86_401, "longer than one day");
        refused(
            &|b| b.targets[0].input_usd_per_million_tokens = -1.0,
            "input price",
        );
        refused(
            &|b| b.targets[0].output_usd_per_million_tokens = f64::NAN,
            "output price",
        );
    }

    #[test]
    fn usable_keys() {
        assert!(KeyState::Active.is_usable(0, 10));
        assert!(KeyState::Cooling.is_usable(10, 10));
        assert!(!KeyState::Cooling.is_usable(11, 10));
        assert!(!KeyState::Disabled.is_usable(0, 10));
        assert!(!KeyState::Failing.is_usable(0, 10));
    }
}
