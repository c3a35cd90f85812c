//! Which providers a request for a model tries, in which order, and why.
//!
//! Pure and allocation-light: [`plan`] borrows the routes, the providers and the model,
//! and allocates only the candidate list. The control plane uses it to explain a route
//! (`ExplainRoute`); it is meant for the data plane to serve one with, so that both say
//! the same.
//!
//! The rules: a route whose pattern equals the model beats any glob; among matching globs
//! the one with the most literal (non-`*`) characters wins, then the lexically first
//! pattern, never the order routes were stored in. Without a route, the providers whose
//! type is native to the client's protocol serve, by (priority, name); when there is none,
//! every provider does (the data plane translates protocols).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::BuildHasher;
use std::str::FromStr;
use std::time::Duration;

use super::{Provider, ProviderType, Route};
use crate::pb;

/// Longest sticky time a route may ask for: one day.
pub const MAX_STICKY_SECS: u32 = 86_400;

// === RouteStrategy ===

/// How a route spreads requests over the candidates of one priority tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RouteStrategy {
    /// Base order: a fallback chain.
    #[default]
    Priority,
    RoundRobin,
    Weighted,
    Random,
    LeastInFlight,
    /// Lowest moving average of time to first byte.
    LowestLatency,
    /// Lowest input plus output price; unpriced candidates last.
    LowestCost,
}

impl RouteStrategy {
    pub const ALL: [RouteStrategy; 7] = [
        RouteStrategy::Priority,
        RouteStrategy::RoundRobin,
        RouteStrategy::Weighted,
        RouteStrategy::Random,
        RouteStrategy::LeastInFlight,
        RouteStrategy::LowestLatency,
        RouteStrategy::LowestCost,
    ];

    /// The name operators type: `priority`, `round-robin`, `weighted`, `random`,
    /// `least-in-flight`, `lowest-latency`, `lowest-cost`.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteStrategy::Priority => "priority",
            RouteStrategy::RoundRobin => "round-robin",
            RouteStrategy::Weighted => "weighted",
            RouteStrategy::Random => "random",
            RouteStrategy::LeastInFlight => "least-in-flight",
            RouteStrategy::LowestLatency => "lowest-latency",
            RouteStrategy::LowestCost => "lowest-cost",
        }
    }

    /// What the strategy does, in one line for people.
    pub fn describe(self) -> &'static str {
        match self {
            RouteStrategy::Priority => "candidates in base order; the next only when one fails",
            RouteStrategy::RoundRobin => "rotates over the candidates of a priority tier",
            RouteStrategy::Weighted => "picks within a priority tier in proportion to weight",
            RouteStrategy::Random => "picks within a priority tier at random",
            RouteStrategy::LeastInFlight => {
                "picks the candidate of a priority tier with the fewest requests in flight"
            }
            RouteStrategy::LowestLatency => {
                "picks the candidate of a priority tier with the lowest average time to first byte"
            }
            RouteStrategy::LowestCost => {
                "picks the cheapest candidate of a priority tier; unpriced ones come last"
            }
        }
    }

    pub fn to_pb(self) -> pb::RouteStrategy {
        match self {
            RouteStrategy::Priority => pb::RouteStrategy::Priority,
            RouteStrategy::RoundRobin => pb::RouteStrategy::RoundRobin,
            RouteStrategy::Weighted => pb::RouteStrategy::Weighted,
            RouteStrategy::Random => pb::RouteStrategy::Random,
            RouteStrategy::LeastInFlight => pb::RouteStrategy::LeastInFlight,
            RouteStrategy::LowestLatency => pb::RouteStrategy::LowestLatency,
            RouteStrategy::LowestCost => pb::RouteStrategy::LowestCost,
        }
    }

    /// From the wire's enum number: unspecified is `Priority`; `None` for unknown numbers.
    pub fn from_pb(value: i32) -> Option<Self> {
        Some(match pb::RouteStrategy::try_from(value).ok()? {
            pb::RouteStrategy::Unspecified | pb::RouteStrategy::Priority => RouteStrategy::Priority,
            pb::RouteStrategy::RoundRobin => RouteStrategy::RoundRobin,
            pb::RouteStrategy::Weighted => RouteStrategy::Weighted,
            pb::RouteStrategy::Random => RouteStrategy::Random,
            pb::RouteStrategy::LeastInFlight => RouteStrategy::LeastInFlight,
            pb::RouteStrategy::LowestLatency => RouteStrategy::LowestLatency,
            pb::RouteStrategy::LowestCost => RouteStrategy::LowestCost,
        })
    }
}

impl fmt::Display for RouteStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RouteStrategy {
    type Err = String;

    /// Accepts the names in any case, with `_` for `-`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase().replace('_', "-");
        RouteStrategy::ALL
            .into_iter()
            .find(|t| t.as_str() == lower)
            .ok_or_else(|| {
                let names: Vec<&str> = RouteStrategy::ALL.iter().map(|t| t.as_str()).collect();
                format!(
                    "unknown strategy {s:?}; expected one of {}",
                    names.join(", ")
                )
            })
    }
}

// === ClientProtocol ===

/// The API a client speaks to a data plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ClientProtocol {
    #[default]
    OpenAi,
    Gemini,
    Anthropic,
}

impl ClientProtocol {
    pub const ALL: [ClientProtocol; 3] = [
        ClientProtocol::OpenAi,
        ClientProtocol::Gemini,
        ClientProtocol::Anthropic,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ClientProtocol::OpenAi => "openai",
            ClientProtocol::Gemini => "gemini",
            ClientProtocol::Anthropic => "anthropic",
        }
    }

    /// Whether a provider of this type speaks the protocol itself, without translation.
    pub fn is_native(self, provider_type: ProviderType) -> bool {
        matches!(
            (self, provider_type),
            (
                ClientProtocol::OpenAi,
                ProviderType::OpenAi | ProviderType::Mock
            ) | (
                ClientProtocol::Gemini,
                ProviderType::Gemini | ProviderType::VertexExpress
            ) | (ClientProtocol::Anthropic, ProviderType::Anthropic)
        )
    }

    pub fn to_pb(self) -> pb::ClientProtocol {
        match self {
            ClientProtocol::OpenAi => pb::ClientProtocol::Openai,
            ClientProtocol::Gemini => pb::ClientProtocol::Gemini,
            ClientProtocol::Anthropic => pb::ClientProtocol::Anthropic,
        }
    }

    /// From the wire's enum number: unspecified is `OpenAi`; `None` for unknown numbers.
    pub fn from_pb(value: i32) -> Option<Self> {
        Some(match pb::ClientProtocol::try_from(value).ok()? {
            pb::ClientProtocol::Unspecified | pb::ClientProtocol::Openai => ClientProtocol::OpenAi,
            pb::ClientProtocol::Gemini => ClientProtocol::Gemini,
            pb::ClientProtocol::Anthropic => ClientProtocol::Anthropic,
        })
    }
}

impl fmt::Display for ClientProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ClientProtocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        ClientProtocol::ALL
            .into_iter()
            .find(|p| p.as_str() == lower)
            .ok_or_else(|| {
                let names: Vec<&str> = ClientProtocol::ALL.iter().map(|p| p.as_str()).collect();
                format!(
                    "unknown protocol {s:?}; expected one of {}",
                    names.join(", ")
                )
            })
    }
}

// === Prices ===

/// What a candidate costs, in USD per million tokens; 0 means unknown.
///
/// Built only from checked values (finite, not negative, no `-0.0`), so `==` is an
/// equivalence and `Eq` holds.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Prices {
    /// USD per million input (prompt) tokens.
    pub input: f64,
    /// USD per million output (completion) tokens.
    pub output: f64,
}

impl Eq for Prices {}

impl Prices {
    /// Checks both prices; `-0.0` becomes `0.0`.
    pub fn new(input: f64, output: f64) -> Result<Self, String> {
        Ok(Self {
            input: check_price("input", input)?,
            output: check_price("output", output)?,
        })
    }

    /// Whether either price is known.
    pub fn is_known(&self) -> bool {
        self.input > 0.0 || self.output > 0.0
    }
}

fn check_price(which: &str, value: f64) -> Result<f64, String> {
    if !value.is_finite() || value < 0.0 {
        return Err(format!(
            "invalid {which} price {value}: use a finite number of USD per million tokens, 0 or more"
        ));
    }
    // -0.0 == 0.0 but prints as "-0"; store one zero.
    Ok(if value == 0.0 { 0.0 } else { value })
}

// === matching ===

/// `*` matches any run of characters, including none; every other character matches
/// itself. Allocates nothing.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let Some(first_star) = pattern.find('*') else {
        return pattern == text;
    };
    let Some(remaining) = text.strip_prefix(&pattern[..first_star]) else {
        return false;
    };
    let rest = &pattern[first_star + 1..];
    let (middle, last) = match rest.rfind('*') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => ("", rest),
    };
    let Some(mut remaining) = remaining.strip_suffix(last) else {
        return false;
    };
    // Leftmost placement of each middle part leaves the most room for the next one.
    for part in middle.split('*').filter(|p| !p.is_empty()) {
        match remaining.find(part) {
            Some(at) => remaining = &remaining[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// Number of characters of a pattern that are not `*`: how specific a glob is.
pub fn literal_chars(pattern: &str) -> usize {
    pattern.chars().filter(|c| *c != '*').count()
}

/// How a route matched a model; a larger rank wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Rank {
    /// A glob, with its count of literal characters.
    Glob(usize),
    Exact,
}

pub(crate) fn rank(pattern: &str, model: &str) -> Option<Rank> {
    if pattern == model {
        Some(Rank::Exact)
    } else if pattern.contains('*') && glob_matches(pattern, model) {
        Some(Rank::Glob(literal_chars(pattern)))
    } else {
        None
    }
}

/// Whether `(rank, pattern)` beats `(other_rank, other)`: the higher rank, then the
/// lexically first pattern.
pub(crate) fn beats(rank: Rank, pattern: &str, other_rank: Rank, other: &str) -> bool {
    rank > other_rank || (rank == other_rank && pattern < other)
}

/// The winning route and the best one it beat.
struct Selection<'a> {
    route: &'a Route,
    rank: Rank,
    runner_up: Option<(&'a str, Rank)>,
}

fn select<'a>(routes: impl IntoIterator<Item = &'a Route>, model: &str) -> Option<Selection<'a>> {
    let mut best: Option<Selection<'a>> = None;
    for route in routes {
        let pattern = route.model_pattern.as_str();
        let Some(rank) = rank(pattern, model) else {
            continue;
        };
        best = Some(match best {
            None => Selection {
                route,
                rank,
                runner_up: None,
            },
            Some(current) if beats(rank, pattern, current.rank, &current.route.model_pattern) => {
                Selection {
                    route,
                    rank,
                    runner_up: Some((current.route.model_pattern.as_str(), current.rank)),
                }
            }
            Some(mut current) => {
                let better_runner_up = match current.runner_up {
                    None => true,
                    Some((other, other_rank)) => beats(rank, pattern, other_rank, other),
                };
                if better_runner_up {
                    current.runner_up = Some((pattern, rank));
                }
                current
            }
        });
    }
    best
}

/// The route for `model`: an exact pattern beats any glob; among globs the one with the
/// most literal characters wins, then the lexically first, never the order given.
pub fn best_route<'a>(
    routes: impl IntoIterator<Item = &'a Route>,
    model: &str,
) -> Option<&'a Route> {
    select(routes, model).map(|s| s.route)
}

// === plan ===

/// Why a plan has the candidates it has. `Display` gives the line shown to operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanReason<'a> {
    /// A route's pattern equals the model; `beat` is the best glob that also matched.
    Exact { beat: Option<&'a str> },
    /// A glob matched; `beat` is the best other glob that matched, with its literal count.
    Glob {
        pattern: &'a str,
        literal_chars: usize,
        beat: Option<(&'a str, usize)>,
    },
    /// No route: the providers native to the client's protocol.
    NoRouteNative(ClientProtocol),
    /// No route and no native provider: every provider, translated.
    NoRouteAny(ClientProtocol),
    /// No route and no provider at all.
    Nothing,
}

impl fmt::Display for PlanReason<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PlanReason::Exact { beat: None } => f.write_str("exact route"),
            PlanReason::Exact { beat: Some(glob) } => {
                write!(f, "exact route (beats glob {glob})")
            }
            PlanReason::Glob {
                pattern,
                literal_chars,
                beat,
            } => {
                let noun = if literal_chars == 1 {
                    "character"
                } else {
                    "characters"
                };
                write!(f, "glob {pattern} ({literal_chars} literal {noun})")?;
                match beat {
                    None => f.write_str(", the only route that matches"),
                    Some((other, other_chars)) if other_chars == literal_chars => {
                        write!(f, " beats {other} (as many, but {pattern} sorts first)")
                    }
                    Some((other, _)) => write!(f, " beats {other}"),
                }
            }
            PlanReason::NoRouteNative(protocol) => write!(
                f,
                "no route: providers that speak the client's protocol ({protocol}), by priority"
            ),
            PlanReason::NoRouteAny(protocol) => write!(
                f,
                "no route and no provider speaks {protocol}: every provider, by priority (requests are translated)"
            ),
            PlanReason::Nothing => f.write_str("no route and no providers"),
        }
    }
}

/// One candidate of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedCandidate<'a> {
    pub provider: &'a Provider,
    /// The model that will be sent: the route target's, or the client's.
    pub model_to_send: &'a str,
    /// True when a route target replaces the client's model.
    pub rewritten: bool,
    /// Whether the provider speaks the client's protocol without translation.
    pub native: bool,
    pub priority: u32,
    pub weight: u32,
    pub prices: Prices,
}

/// The candidates a request for a model tries, in base order, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan<'a> {
    /// The pattern of the route that matched.
    pub matched: Option<&'a str>,
    pub reason: PlanReason<'a>,
    pub strategy: RouteStrategy,
    pub sticky: Option<Duration>,
    /// Priority ascending, then the order the route (or the provider sort) gives.
    pub candidates: Vec<PlannedCandidate<'a>>,
    /// Route targets that name a provider not in `providers` (left out of `candidates`).
    pub unknown_providers: Vec<&'a str>,
}

/// The providers a plan draws from: looked up by name for route targets, listed for the
/// plan without a route. Implemented for maps by name (what the planes hold) and slices.
pub trait ProviderSet<'a>: Copy {
    fn get(self, name: &str) -> Option<&'a Provider>;
    fn all(self) -> impl Iterator<Item = &'a Provider>;
}

impl<'a, S: BuildHasher> ProviderSet<'a> for &'a HashMap<String, Provider, S> {
    fn get(self, name: &str) -> Option<&'a Provider> {
        HashMap::get(self, name)
    }

    fn all(self) -> impl Iterator<Item = &'a Provider> {
        self.values()
    }
}

impl<'a> ProviderSet<'a> for &'a BTreeMap<String, Provider> {
    fn get(self, name: &str) -> Option<&'a Provider> {
        BTreeMap::get(self, name)
    }

    fn all(self) -> impl Iterator<Item = &'a Provider> {
        self.values()
    }
}

impl<'a> ProviderSet<'a> for &'a [Provider] {
    fn get(self, name: &str) -> Option<&'a Provider> {
        self.iter().find(|p| p.name == name)
    }

    fn all(self) -> impl Iterator<Item = &'a Provider> {
        self.iter()
    }
}

impl<'a> ProviderSet<'a> for &'a Vec<Provider> {
    fn get(self, name: &str) -> Option<&'a Provider> {
        ProviderSet::get(self.as_slice(), name)
    }

    fn all(self) -> impl Iterator<Item = &'a Provider> {
        self.iter()
    }
}

/// Plans a request for `model` from a client speaking `protocol`. Allocates only the
/// candidate list (and the list of unknown providers, when there are any).
pub fn plan<'a>(
    routes: impl IntoIterator<Item = &'a Route>,
    providers: impl ProviderSet<'a>,
    model: &'a str,
    protocol: ClientProtocol,
) -> Plan<'a> {
    match select(routes, model) {
        Some(selection) => plan_route(selection, providers, model, protocol),
        None => plan_default(providers, model, protocol),
    }
}

fn plan_route<'a>(
    selection: Selection<'a>,
    providers: impl ProviderSet<'a>,
    model: &'a str,
    protocol: ClientProtocol,
) -> Plan<'a> {
    let route = selection.route;
    let reason = match selection.rank {
        Rank::Exact => PlanReason::Exact {
            beat: selection.runner_up.map(|(pattern, _)| pattern),
        },
        Rank::Glob(literal_chars) => PlanReason::Glob {
            pattern: &route.model_pattern,
            literal_chars,
            beat: selection.runner_up.map(|(pattern, rank)| match rank {
                Rank::Glob(n) => (pattern, n),
                Rank::Exact => {
                    debug_assert!(false, "an exact match always wins, so it is never beaten");
                    (pattern, pattern.len())
                }
            }),
        },
    };
    let mut candidates = Vec::with_capacity(route.targets.len());
    let mut unknown_providers = Vec::new();
    for target in &route.targets {
        let Some(provider) = providers.get(&target.provider) else {
            unknown_providers.push(target.provider.as_str());
            continue;
        };
        let model_to_send = target.model.as_deref().unwrap_or(model);
        candidates.push(PlannedCandidate {
            provider,
            model_to_send,
            rewritten: model_to_send != model,
            native: protocol.is_native(provider.provider_type),
            priority: target.priority,
            weight: target.weight,
            prices: target.prices,
        });
    }
    // Stable: equal priorities keep the order the route gives.
    candidates.sort_by_key(|c| c.priority);
    Plan {
        matched: Some(&route.model_pattern),
        reason,
        strategy: route.strategy,
        sticky: route.sticky,
        candidates,
        unknown_providers,
    }
}

fn plan_default<'a>(
    providers: impl ProviderSet<'a>,
    model: &'a str,
    protocol: ClientProtocol,
) -> Plan<'a> {
    let candidate = |provider: &'a Provider| PlannedCandidate {
        provider,
        model_to_send: model,
        rewritten: false,
        native: protocol.is_native(provider.provider_type),
        priority: provider.priority,
        weight: provider.weight,
        prices: Prices::default(),
    };
    let mut candidates: Vec<PlannedCandidate<'a>> = providers
        .all()
        .filter(|p| protocol.is_native(p.provider_type))
        .map(candidate)
        .collect();
    let reason = if !candidates.is_empty() {
        PlanReason::NoRouteNative(protocol)
    } else {
        candidates.extend(providers.all().map(candidate));
        if candidates.is_empty() {
            PlanReason::Nothing
        } else {
            PlanReason::NoRouteAny(protocol)
        }
    };
    candidates.sort_by(|a, b| (a.priority, &a.provider.name).cmp(&(b.priority, &b.provider.name)));
    Plan {
        matched: None,
        reason,
        strategy: RouteStrategy::Priority,
        sticky: None,
        candidates,
        unknown_providers: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RouteTarget;
    use proptest::prelude::*;

    fn target(provider: &str, model: Option<&str>, priority: u32) -> RouteTarget {
        RouteTarget {
            provider: provider.into(),
            model: model.map(str::to_string),
            priority,
            weight: 1,
            prices: Prices::default(),
        }
    }

    fn route(pattern: &str) -> Route {
        Route {
            model_pattern: pattern.into(),
            targets: vec![target("p", None, 0)],
            strategy: RouteStrategy::Priority,
            sticky: None,
        }
    }

    fn provider(name: &str, provider_type: ProviderType, priority: u32) -> Provider {
        Provider {
            name: name.into(),
            provider_type,
            base_url: String::new(),
            priority,
            weight: 1,
            proxies: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// The obvious matcher, by dynamic programming over characters.
    fn reference_matches(pattern: &str, text: &str) -> bool {
        let p: Vec<char> = pattern.chars().collect();
        let t: Vec<char> = text.chars().collect();
        // m[i][j]: p[..i] matches t[..j].
        let mut m = vec![vec![false; t.len() + 1]; p.len() + 1];
        m[0][0] = true;
        for i in 1..=p.len() {
            for j in 0..=t.len() {
                m[i][j] = if p[i - 1] == '*' {
                    m[i - 1][j] || (j > 0 && m[i][j - 1])
                } else {
                    j > 0 && m[i - 1][j - 1] && p[i - 1] == t[j - 1]
                };
            }
        }
        m[p.len()][t.len()]
    }

    #[test]
    fn globs() {
        assert!(glob_matches("*", "anything"));
        assert!(glob_matches("*", ""));
        assert!(glob_matches("gemini-2.5-*", "gemini-2.5-pro"));
        assert!(!glob_matches("gemini-2.5-*", "gemini-2.0-pro"));
        assert!(glob_matches("claude-*-latest", "claude-3-5-sonnet-latest"));
        assert!(!glob_matches("claude-*-latest", "claude-3"));
        assert!(glob_matches("a*b*c", "abc"));
        assert!(!glob_matches("a*b*c", "acb"));
        assert!(!glob_matches("ab*b", "ab"));
        assert!(!glob_matches("a*b*b", "ab"));
        assert!(glob_matches("*-mini", "gpt-4o-mini"));
        assert!(glob_matches("exact", "exact"));
        assert!(!glob_matches("exact", "exactly"));
    }

    #[test]
    fn exact_beats_glob_and_specific_beats_general() {
        let routes = [route("*"), route("gpt-*"), route("gpt-4o"), route("gpt-4*")];
        let pick = |m: &str| best_route(routes.iter(), m).map(|r| r.model_pattern.as_str());
        assert_eq!(pick("gpt-4o"), Some("gpt-4o"));
        assert_eq!(pick("gpt-4o-mini"), Some("gpt-4*"));
        assert_eq!(pick("gpt-3.5"), Some("gpt-*"));
        assert_eq!(pick("claude"), Some("*"));
        let reversed: Vec<Route> = routes.iter().rev().cloned().collect();
        assert_eq!(
            best_route(reversed.iter(), "gpt-4o-mini").map(|r| r.model_pattern.as_str()),
            Some("gpt-4*")
        );
        assert_eq!(best_route([route("gpt-*")].iter(), "claude"), None);
    }

    #[test]
    fn reasons_name_the_winner_and_what_it_beat() {
        let routes = [route("*"), route("gemini-*"), route("gemini-2.5-pro")];
        let providers = [provider("p", ProviderType::Gemini, 0)];
        let reason = |m: &'static str| {
            plan(routes.iter(), &providers[..], m, ClientProtocol::OpenAi)
                .reason
                .to_string()
        };
        assert_eq!(
            reason("gemini-2.5-pro"),
            "exact route (beats glob gemini-*)"
        );
        assert_eq!(
            reason("gemini-2.0-flash"),
            "glob gemini-* (7 literal characters) beats *"
        );
        assert_eq!(
            reason("gpt-4o"),
            "glob * (0 literal characters), the only route that matches"
        );
        let tied = [route("gpt*"), route("*-4o")];
        let tie = plan(
            tied.iter(),
            &providers[..],
            "gpt-4o",
            ClientProtocol::OpenAi,
        );
        assert_eq!(tie.matched, Some("*-4o"));
        assert_eq!(
            tie.reason.to_string(),
            "glob *-4o (3 literal characters) beats gpt* (as many, but *-4o sorts first)"
        );
        let only = [route("gpt-4o")];
        assert_eq!(
            plan(
                only.iter(),
                &providers[..],
                "gpt-4o",
                ClientProtocol::OpenAi
            )
            .reason
            .to_string(),
            "exact route"
        );
    }

    #[test]
    fn route_candidates_in_base_order_with_models_to_send() {
        let providers = [
            provider("gem", ProviderType::Gemini, 5),
            provider("oa", ProviderType::OpenAi, 1),
        ];
        let mut r = route("gemini-*");
        r.targets = vec![
            target("oa", Some("gpt-4o"), 2),
            target("gem", None, 1),
            target("ghost", None, 1),
            target("oa", None, 2),
        ];
        r.strategy = RouteStrategy::Weighted;
        r.sticky = Some(Duration::from_secs(60));
        let routes = [r];
        let plan = plan(
            routes.iter(),
            &providers[..],
            "gemini-2.5-pro",
            ClientProtocol::OpenAi,
        );
        assert_eq!(plan.matched, Some("gemini-*"));
        assert_eq!(plan.strategy, RouteStrategy::Weighted);
        assert_eq!(plan.sticky, Some(Duration::from_secs(60)));
        assert_eq!(plan.unknown_providers, vec!["ghost"]);
        let got: Vec<(&str, &str, bool, bool, u32)> = plan
            .candidates
            .iter()
            .map(|c| {
                (
                    c.provider.name.as_str(),
                    c.model_to_send,
                    c.rewritten,
                    c.native,
                    c.priority,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("gem", "gemini-2.5-pro", false, false, 1),
                ("oa", "gpt-4o", true, true, 2),
                ("oa", "gemini-2.5-pro", false, true, 2),
            ]
        );
    }

    #[test]
    fn default_prefers_native_providers_by_priority_then_name() {
        let providers = [
            provider("zeta", ProviderType::OpenAi, 1),
            provider("alpha", ProviderType::Mock, 1),
            provider("first", ProviderType::OpenAi, 0),
            provider("gem", ProviderType::Gemini, 0),
            provider("vx", ProviderType::VertexExpress, 3),
            provider("claude", ProviderType::Anthropic, 2),
        ];
        let names = |protocol| -> Vec<String> {
            plan(std::iter::empty(), &providers[..], "m", protocol)
                .candidates
                .iter()
                .map(|c| c.provider.name.clone())
                .collect()
        };
        assert_eq!(names(ClientProtocol::OpenAi), ["first", "alpha", "zeta"]);
        assert_eq!(names(ClientProtocol::Gemini), ["gem", "vx"]);
        assert_eq!(names(ClientProtocol::Anthropic), ["claude"]);
        let p = plan(
            std::iter::empty(),
            &providers[..],
            "m",
            ClientProtocol::Gemini,
        );
        assert_eq!(p.matched, None);
        assert_eq!(p.strategy, RouteStrategy::Priority);
        assert_eq!(
            p.reason.to_string(),
            "no route: providers that speak the client's protocol (gemini), by priority"
        );
        assert!(
            p.candidates
                .iter()
                .all(|c| c.model_to_send == "m" && c.native)
        );

        // No native provider: every provider serves, translated.
        let others = [
            provider("oa", ProviderType::OpenAi, 2),
            provider("gem", ProviderType::Gemini, 1),
        ];
        let p = plan(
            std::iter::empty(),
            &others[..],
            "m",
            ClientProtocol::Anthropic,
        );
        let got: Vec<&str> = p
            .candidates
            .iter()
            .map(|c| c.provider.name.as_str())
            .collect();
        assert_eq!(got, ["gem", "oa"]);
        assert!(p.candidates.iter().all(|c| !c.native));
        assert!(matches!(p.reason, PlanReason::NoRouteAny(_)));
        let empty: [Provider; 0] = [];
        let p = plan(std::iter::empty(), &empty[..], "m", ClientProtocol::OpenAi);
        assert!(p.candidates.is_empty());
        assert_eq!(p.reason.to_string(), "no route and no providers");
    }

    #[test]
    fn names_round_trip() {
        for s in RouteStrategy::ALL {
            assert_eq!(s.as_str().parse::<RouteStrategy>().unwrap(), s);
            assert_eq!(s.to_string(), s.as_str());
            assert_eq!(RouteStrategy::from_pb(s.to_pb() as i32), Some(s));
        }
        assert_eq!(
            "ROUND_ROBIN".parse::<RouteStrategy>().unwrap(),
            RouteStrategy::RoundRobin
        );
        assert_eq!(RouteStrategy::from_pb(0), Some(RouteStrategy::Priority));
        assert_eq!(RouteStrategy::from_pb(99), None);
        let err = "fastest".parse::<RouteStrategy>().unwrap_err();
        assert!(err.contains("lowest-latency"), "{err}");
        for p in ClientProtocol::ALL {
            assert_eq!(p.as_str().parse::<ClientProtocol>().unwrap(), p);
            assert_eq!(ClientProtocol::from_pb(p.to_pb() as i32), Some(p));
        }
        assert_eq!(ClientProtocol::from_pb(0), Some(ClientProtocol::OpenAi));
        assert!("grpc".parse::<ClientProtocol>().is_err());
    }

    #[test]
    fn prices_are_checked() {
        assert_eq!(Prices::new(2.5, 10.0).unwrap().output, 10.0);
        assert!(Prices::new(-1.0, 0.0).is_err());
        assert!(Prices::new(0.0, f64::NAN).is_err());
        assert!(Prices::new(f64::INFINITY, 0.0).is_err());
        let zero = Prices::new(-0.0, 0.0).unwrap();
        assert!(zero.input.is_sign_positive());
        assert!(!zero.is_known());
    }

    proptest! {
        // A two-letter alphabet makes repeated and overlapping parts common, where a
        // matcher that consumes too little or too much goes wrong.
        #![proptest_config(ProptestConfig::with_cases(2_048))]

        #[test]
        fn glob_matches_like_the_reference(
            pattern in "[ab*]{0,8}",
            text in "[ab]{0,10}",
        ) {
            prop_assert_eq!(
                glob_matches(&pattern, &text),
                reference_matches(&pattern, &text),
                "pattern {:?} text {:?}", pattern, text
            );
        }

        #[test]
        fn exact_beats_glob_never_file_order(
            shuffled in proptest::collection::btree_set("[ab*]{1,5}", 1..8)
                .prop_map(|set| set.into_iter().collect::<Vec<String>>())
                .prop_shuffle(),
            model in "[ab]{0,6}",
        ) {
            let pick = |patterns: &[String]| {
                let routes: Vec<Route> = patterns.iter().map(|p| route(p)).collect();
                best_route(routes.iter(), &model).map(|r| r.model_pattern.clone())
            };
            let mut sorted = shuffled.clone();
            sorted.sort();
            let winner = pick(&shuffled);
            prop_assert_eq!(&winner, &pick(&sorted), "the order given changed the winner");
            let is_glob_match = |p: &String| p.contains('*') && glob_matches(p, &model);
            if shuffled.contains(&model) {
                prop_assert_eq!(winner.as_deref(), Some(model.as_str()));
            } else if let Some(winner) = &winner {
                // A matching glob that no other matching glob outranks.
                prop_assert!(is_glob_match(winner));
                for other in shuffled.iter().filter(|p| is_glob_match(p)) {
                    let (w, o) = (literal_chars(winner), literal_chars(other));
                    prop_assert!(
                        w > o || (w == o && winner <= other),
                        "{} lost to {}",
                        other,
                        winner
                    );
                }
            } else {
                prop_assert!(!shuffled.iter().any(is_glob_match));
            }
        }
    }
}
