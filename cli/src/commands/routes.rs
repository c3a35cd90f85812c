//! `fulcrumctl routes ...`

use anyhow::bail;
use clap::Subcommand;
use fulcrum_proto::model::routing::MAX_STICKY_SECS;
use fulcrum_proto::model::{
    ClientProtocol, Prices, RouteStrategy, validate_model_pattern, validate_provider_name,
    validate_route_pattern,
};
use fulcrum_proto::pb;
use serde_json::{Value, json};

use crate::client::AdminClient;
use crate::output::{self, Format, Table};

#[derive(Debug, Subcommand)]
pub enum RoutesCommand {
    /// Create or replace the route for a model pattern.
    ///
    /// Each --to is PROVIDER[:MODEL][@PRIORITY][*WEIGHT]. MODEL replaces the client's model
    /// name for that provider; without it the client's name is kept. Without @PRIORITY,
    /// the priority strategy gives targets priorities 1, 2, 3, ... in the order given (a
    /// fallback chain), and every other strategy gives them priority 1, so that it spreads
    /// requests over all of them; @PRIORITY makes fallback tiers. The weight defaults to 1.
    /// A version suffix such as `@001` or `@20240620` stays part of the model: only `@N`
    /// with N from 0 to 99999 and no leading zero is read as a priority.
    Set {
        /// An exact model name or a glob with `*` (`gemini-2.5-*`, `claude-*`, `*`).
        #[arg(value_parser = parse_pattern)]
        pattern: String,
        /// A candidate provider, in order of preference; repeat for several.
        #[arg(long = "to", visible_alias = "target", required = true, value_name = "PROVIDER[:MODEL][@PRIORITY][*WEIGHT]", value_parser = parse_target)]
        targets: Vec<TargetSpec>,
        /// How requests are spread: priority, round-robin, weighted, random,
        /// least-in-flight, lowest-latency, lowest-cost.
        #[arg(long, value_name = "NAME", default_value = "priority", value_parser = parse_strategy)]
        strategy: RouteStrategy,
        /// Keep a client token on the candidate it was given for this many seconds
        /// (0, the default, is off; at most 86400).
        #[arg(long, value_name = "SECS", default_value_t = 0, value_parser = parse_sticky)]
        sticky: u32,
        /// Price of the targets of PROVIDER (with MODEL: of that target only) in USD per
        /// million input and output tokens, for lowest-cost; repeat for several.
        #[arg(long = "price", value_name = "PROVIDER[:MODEL]=IN,OUT", value_parser = parse_price)]
        prices: Vec<PriceSpec>,
    },
    /// List every route.
    List,
    /// Delete the route for a model pattern.
    Remove {
        #[arg(value_parser = parse_pattern)]
        pattern: String,
    },
    /// Show which candidates a request for MODEL would try, in order, and why.
    Explain {
        /// The model a client asks for.
        #[arg(value_parser = parse_model)]
        model: String,
        /// The protocol the client speaks: openai, gemini or anthropic. Without a route,
        /// it decides which providers serve.
        #[arg(long, value_name = "PROTOCOL", default_value = "openai", value_parser = parse_protocol)]
        protocol: ClientProtocol,
    },
}

/// One `--to` as typed; priority is filled from the position when left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    provider: String,
    model: String,
    priority: Option<u32>,
    weight: u32,
}

/// One `--price` as typed: `model` `None` prices every target of the provider that has
/// no price of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceSpec {
    provider: String,
    model: Option<String>,
    prices: Prices,
}

impl PriceSpec {
    fn name(&self) -> String {
        match &self.model {
            Some(model) => format!("{}:{model}", self.provider),
            None => self.provider.clone(),
        }
    }
}

pub async fn run(
    cmd: &RoutesCommand,
    client: &mut AdminClient,
    format: Format,
) -> anyhow::Result<()> {
    match cmd {
        RoutesCommand::Set {
            pattern,
            targets,
            strategy,
            sticky,
            prices,
        } => {
            let route = build_route(pattern, targets, *strategy, *sticky, prices)
                .map_err(anyhow::Error::msg)?;
            let request = pb::PutRouteRequest { route: Some(route) };
            let response = client.put_route(request).await?.into_inner();
            let Some(route) = response.route else {
                bail!("the control plane answered without the route");
            };
            if format == Format::Json {
                return output::print_json(&json!({
                    "route": output::route_json(&route),
                    "revision": response.revision,
                }));
            }
            output::print(&format!(
                "set route {:?} (revision {}): strategy {}, sticky {}",
                route.model_pattern,
                response.revision,
                output::route_strategy_name(route.strategy),
                output::sticky(route.sticky_secs),
            ))?;
            output::print(&targets_table(&route).render())
        }
        RoutesCommand::List => {
            let response = client
                .list_routes(pb::ListRoutesRequest {})
                .await?
                .into_inner();
            if format == Format::Json {
                let routes: Vec<Value> = response.routes.iter().map(output::route_json).collect();
                return output::print_json(&json!({ "routes": routes }));
            }
            if response.routes.is_empty() {
                output::note(
                    "no routes (add one with `fulcrumctl routes set PATTERN --to PROVIDER`)",
                );
                return Ok(());
            }
            let now = output::now_unix_ms();
            let mut table = Table::new(["PATTERN", "STRATEGY", "STICKY", "TARGETS", "UPDATED"]);
            for route in &response.routes {
                let targets: Vec<String> = route.targets.iter().map(output::target_spec).collect();
                table.row(vec![
                    route.model_pattern.clone(),
                    output::route_strategy_name(route.strategy).to_string(),
                    output::sticky(route.sticky_secs),
                    targets.join(" "),
                    output::ago(route.updated_unix_ms, now),
                ]);
            }
            output::print(&table.render())
        }
        RoutesCommand::Remove { pattern } => {
            let request = pb::DeleteRouteRequest {
                model_pattern: pattern.clone(),
            };
            let response = client.delete_route(request).await?.into_inner();
            if format == Format::Json {
                return output::print_json(&json!({
                    "model_pattern": pattern,
                    "revision": response.revision,
                }));
            }
            output::print(&format!(
                "removed route {pattern:?} (revision {})",
                response.revision
            ))
        }
        RoutesCommand::Explain { model, protocol } => {
            let request = pb::ExplainRouteRequest {
                model: model.clone(),
                protocol: protocol.to_pb() as i32,
            };
            let response = client.explain_route(request).await?.into_inner();
            if format == Format::Json {
                return output::print_json(&explain_json(model, *protocol, &response));
            }
            output::print(&explain_text(model, *protocol, &response))
        }
    }
}

/// Checks what can be checked without the control plane; run before connecting.
pub fn check(cmd: &RoutesCommand) -> Result<(), String> {
    match cmd {
        RoutesCommand::Set {
            pattern,
            targets,
            strategy,
            sticky,
            prices,
        } => build_route(pattern, targets, *strategy, *sticky, prices).map(drop),
        RoutesCommand::List | RoutesCommand::Remove { .. } | RoutesCommand::Explain { .. } => {
            Ok(())
        }
    }
}

fn build_route(
    pattern: &str,
    targets: &[TargetSpec],
    strategy: RouteStrategy,
    sticky_secs: u32,
    prices: &[PriceSpec],
) -> Result<pb::Route, String> {
    for (i, price) in prices.iter().enumerate() {
        if prices[..i]
            .iter()
            .any(|p| p.provider == price.provider && p.model == price.model)
        {
            return Err(format!("--price {} is given twice", price.name()));
        }
        let used = targets.iter().any(|t| {
            t.provider == price.provider && price.model.as_deref().is_none_or(|m| m == t.model)
        });
        if !used {
            return Err(format!(
                "--price {} matches no --to target (give the provider, or PROVIDER:MODEL as in --to)",
                price.name()
            ));
        }
    }
    let price_of = |t: &TargetSpec| {
        let exact = prices
            .iter()
            .find(|p| p.provider == t.provider && p.model.as_deref() == Some(t.model.as_str()));
        exact
            .or_else(|| {
                prices
                    .iter()
                    .find(|p| p.provider == t.provider && p.model.is_none())
            })
            .map(|p| p.prices)
            .unwrap_or_default()
    };
    // A fallback chain by default for priority; one shared tier for every other strategy.
    let default_priority = |position: u32| {
        if strategy == RouteStrategy::Priority {
            position
        } else {
            1
        }
    };
    let targets = targets
        .iter()
        .zip(1u32..)
        .map(|(t, position)| {
            let prices = price_of(t);
            pb::RouteTarget {
                provider: t.provider.clone(),
                model: t.model.clone(),
                priority: t.priority.unwrap_or_else(|| default_priority(position)),
                weight: t.weight,
                input_usd_per_million_tokens: prices.input,
                output_usd_per_million_tokens: prices.output,
            }
        })
        .collect();
    Ok(pb::Route {
        model_pattern: pattern.to_string(),
        targets,
        updated_unix_ms: 0,
        strategy: strategy.to_pb() as i32,
        sticky_secs,
    })
}

fn targets_table(route: &pb::Route) -> Table {
    let mut table = Table::new(["PRIORITY", "WEIGHT", "PROVIDER", "MODEL", "USD/MTOK IN,OUT"]);
    for t in &route.targets {
        table.row(vec![
            t.priority.to_string(),
            t.weight.to_string(),
            t.provider.clone(),
            if t.model.is_empty() {
                "(client's model)".to_string()
            } else {
                t.model.clone()
            },
            output::prices(
                t.input_usd_per_million_tokens,
                t.output_usd_per_million_tokens,
            ),
        ]);
    }
    table
}

fn explain_text(model: &str, protocol: ClientProtocol, r: &pb::ExplainRouteResponse) -> String {
    let strategy = RouteStrategy::from_pb(r.strategy).unwrap_or_default();
    let mut out = output::fields(&[
        ("model", format!("{model} ({protocol} client)")),
        ("route", output::or_dash(&r.matched_pattern)),
        ("reason", r.reason.clone()),
        ("strategy", format!("{strategy} ({})", strategy.describe())),
        ("sticky", output::sticky(r.sticky_secs)),
        ("revision", r.revision.to_string()),
    ]);
    out.push('\n');
    if r.candidates.is_empty() {
        out.push_str("no candidates: a request for this model gets an error\n");
        return out;
    }
    let mut table = Table::new([
        "#",
        "PROVIDER",
        "TYPE",
        "MODEL SENT",
        "PRIORITY",
        "WEIGHT",
        "USD/MTOK IN,OUT",
        "USABLE/KEYS",
        "NOTE",
    ]);
    for (i, c) in r.candidates.iter().enumerate() {
        table.row(vec![
            (i + 1).to_string(),
            c.provider.clone(),
            output::provider_type_name(c.provider_type).to_string(),
            c.model.clone(),
            c.priority.to_string(),
            c.weight.to_string(),
            output::prices(
                c.input_usd_per_million_tokens,
                c.output_usd_per_million_tokens,
            ),
            format!("{}/{}", c.usable_keys, c.total_keys),
            output::or_dash(&c.note),
        ]);
    }
    out.push_str(&table.render());
    out
}

fn explain_json(model: &str, protocol: ClientProtocol, r: &pb::ExplainRouteResponse) -> Value {
    let candidates: Vec<Value> = r
        .candidates
        .iter()
        .map(|c| {
            json!({
                "provider": c.provider,
                "type": output::provider_type_name(c.provider_type),
                "model": c.model,
                "model_rewritten": c.model_rewritten,
                "priority": c.priority,
                "weight": c.weight,
                "input_usd_per_million_tokens": c.input_usd_per_million_tokens,
                "output_usd_per_million_tokens": c.output_usd_per_million_tokens,
                "usable_keys": c.usable_keys,
                "total_keys": c.total_keys,
                "native": c.native,
                "note": c.note,
            })
        })
        .collect();
    json!({
        "model": model,
        "protocol": protocol.as_str(),
        "matched_pattern": (!r.matched_pattern.is_empty()).then_some(&r.matched_pattern),
        "reason": r.reason,
        "strategy": output::route_strategy_name(r.strategy),
        "sticky_secs": r.sticky_secs,
        "revision": r.revision,
        "candidates": candidates,
    })
}

fn parse_pattern(value: &str) -> Result<String, String> {
    validate_route_pattern(value).map_err(|e| e.message)?;
    Ok(value.to_string())
}

fn parse_model(value: &str) -> Result<String, String> {
    validate_model_pattern(value)
        .map_err(|_| format!("invalid model {value:?}: use 1-256 visible ASCII characters"))?;
    Ok(value.to_string())
}

fn parse_strategy(value: &str) -> Result<RouteStrategy, String> {
    value.parse()
}

fn parse_protocol(value: &str) -> Result<ClientProtocol, String> {
    value.parse()
}

fn parse_sticky(value: &str) -> Result<u32, String> {
    match value.trim().parse::<u32>() {
        Ok(secs) if secs <= MAX_STICKY_SECS => Ok(secs),
        _ => Err(format!(
            "invalid sticky time {value:?}: give seconds from 0 (off) to {MAX_STICKY_SECS} (one day)"
        )),
    }
}

/// `PROVIDER[:MODEL]=IN,OUT`, prices in USD per million tokens.
fn parse_price(value: &str) -> Result<PriceSpec, String> {
    let shape = || {
        format!(
            "invalid price {value:?}: expected PROVIDER[:MODEL]=IN,OUT in USD per million tokens, for example openai:gpt-4o=2.5,10"
        )
    };
    let (name, numbers) = value.rsplit_once('=').ok_or_else(shape)?;
    let (input, output) = numbers.split_once(',').ok_or_else(shape)?;
    let number = |text: &str| text.trim().parse::<f64>().map_err(|_| shape());
    let prices = Prices::new(number(input)?, number(output)?)
        .map_err(|why| format!("in price {value:?}: {why}"))?;
    let (provider, model) = match name.split_once(':') {
        Some((provider, model)) => (provider, Some(model)),
        None => (name, None),
    };
    validate_provider_name(provider).map_err(|e| format!("in price {value:?}: {}", e.message))?;
    if model.is_some_and(|m| m.is_empty() || m.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        return Err(format!(
            "invalid model in price {value:?}: it is empty or contains spaces or control characters"
        ));
    }
    Ok(PriceSpec {
        provider: provider.to_string(),
        model: model.map(str::to_string),
        prices,
    })
}

/// `PROVIDER[:MODEL][@PRIORITY][*WEIGHT]`.
fn parse_target(value: &str) -> Result<TargetSpec, String> {
    let mut rest = value;
    let mut weight = 1;
    if let Some((head, tail)) = rest.rsplit_once('*')
        && is_number(tail, 10)
    {
        weight = tail
            .parse::<u32>()
            .map_err(|_| format!("invalid weight in target {value:?}"))?;
        if weight == 0 {
            return Err(format!(
                "invalid weight in target {value:?}: it must be at least 1"
            ));
        }
        rest = head;
    }
    let mut priority = None;
    if let Some((head, tail)) = rest.rsplit_once('@')
        && is_number(tail, 5)
        && (tail == "0" || !tail.starts_with('0'))
    {
        priority = Some(
            tail.parse::<u32>()
                .map_err(|_| format!("invalid priority in target {value:?}"))?,
        );
        rest = head;
    }
    let (provider, model) = rest.split_once(':').unwrap_or((rest, ""));
    validate_provider_name(provider).map_err(|e| format!("in target {value:?}: {}", e.message))?;
    if model.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "invalid model in target {value:?}: it contains spaces or control characters"
        ));
    }
    Ok(TargetSpec {
        provider: provider.to_string(),
        model: model.to_string(),
        priority,
        weight,
    })
}

fn is_number(text: &str, max_digits: usize) -> bool {
    !text.is_empty() && text.len() <= max_digits && text.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(provider: &str, model: &str, priority: Option<u32>, weight: u32) -> TargetSpec {
        TargetSpec {
            provider: provider.into(),
            model: model.into(),
            priority,
            weight,
        }
    }

    #[test]
    fn targets_parse() {
        assert_eq!(parse_target("gem"), Ok(target("gem", "", None, 1)));
        assert_eq!(
            parse_target("oa:gpt-4o-mini"),
            Ok(target("oa", "gpt-4o-mini", None, 1))
        );
        assert_eq!(
            parse_target("oa:gpt-4o@2*3"),
            Ok(target("oa", "gpt-4o", Some(2), 3))
        );
        assert_eq!(parse_target("oa@0"), Ok(target("oa", "", Some(0), 1)));
        assert_eq!(parse_target("oa*5"), Ok(target("oa", "", None, 5)));
        // Vertex-style version suffixes stay in the model.
        assert_eq!(
            parse_target("vx:claude-3-5-sonnet@20240620"),
            Ok(target("vx", "claude-3-5-sonnet@20240620", None, 1))
        );
        assert_eq!(
            parse_target("vx:text-bison@001"),
            Ok(target("vx", "text-bison@001", None, 1))
        );
        assert_eq!(
            parse_target("vx:claude@20240620@1"),
            Ok(target("vx", "claude@20240620", Some(1), 1))
        );
    }

    #[test]
    fn bad_targets_are_rejected() {
        assert!(parse_target("").is_err());
        assert!(parse_target("Bad:x").is_err());
        assert!(parse_target("oa*0").is_err());
        assert!(parse_target("oa:has space").is_err());
    }

    #[test]
    fn priorities_follow_the_order_given() {
        let route = build_route(
            "gpt-*",
            &[
                target("a", "", None, 1),
                target("b", "m", None, 2),
                target("c", "", Some(7), 1),
            ],
            RouteStrategy::Priority,
            0,
            &[],
        )
        .unwrap();
        let got: Vec<(String, u32, u32)> = route
            .targets
            .iter()
            .map(|t| (t.provider.clone(), t.priority, t.weight))
            .collect();
        assert_eq!(
            got,
            vec![("a".into(), 1, 1), ("b".into(), 2, 2), ("c".into(), 7, 1)]
        );
        assert_eq!(output::target_spec(&route.targets[1]), "b:m@2*2");
    }

    #[test]
    fn other_strategies_share_one_tier_unless_told() {
        let route = build_route(
            "gpt-*",
            &[
                target("a", "", None, 3),
                target("b", "", None, 1),
                target("c", "", Some(2), 1),
            ],
            RouteStrategy::Weighted,
            60,
            &[],
        )
        .unwrap();
        let priorities: Vec<u32> = route.targets.iter().map(|t| t.priority).collect();
        assert_eq!(priorities, vec![1, 1, 2]);
        assert_eq!(route.strategy, pb::RouteStrategy::Weighted as i32);
        assert_eq!(route.sticky_secs, 60);
    }

    #[test]
    fn prices_go_to_the_targets_they_name() {
        let targets = [
            target("oa", "gpt-4o", None, 1),
            target("oa", "gpt-4o-mini", None, 1),
            target("gem", "", None, 1),
        ];
        let prices = [
            parse_price("oa=5,15").unwrap(),
            parse_price("oa:gpt-4o-mini=0.15,0.6").unwrap(),
        ];
        let route = build_route("gpt-*", &targets, RouteStrategy::LowestCost, 0, &prices).unwrap();
        let got: Vec<(f64, f64)> = route
            .targets
            .iter()
            .map(|t| {
                (
                    t.input_usd_per_million_tokens,
                    t.output_usd_per_million_tokens,
                )
            })
            .collect();
        assert_eq!(got, vec![(5.0, 15.0), (0.15, 0.6), (0.0, 0.0)]);

        let unused = [parse_price("ghost=1,1").unwrap()];
        let err = build_route("gpt-*", &targets, RouteStrategy::Priority, 0, &unused).unwrap_err();
        assert!(err.contains("matches no --to target"), "{err}");
        let twice = [
            parse_price("oa=1,1").unwrap(),
            parse_price("oa=2,2").unwrap(),
        ];
        let err = build_route("gpt-*", &targets, RouteStrategy::Priority, 0, &twice).unwrap_err();
        assert!(err.contains("given twice"), "{err}");
    }

    #[test]
    fn bad_prices_strategies_and_sticky_times_are_rejected() {
        for bad in [
            "oa", "oa=1", "oa=a,b", "oa=-1,2", "oa=nan,1", "oa=inf,1", "Bad=1,1", "oa:=1,1",
        ] {
            assert!(parse_price(bad).is_err(), "{bad}");
        }
        assert!(parse_strategy("fastest").is_err());
        assert_eq!(parse_strategy("round-robin"), Ok(RouteStrategy::RoundRobin));
        assert_eq!(parse_sticky("86400"), Ok(86_400));
        assert!(parse_sticky("86401").unwrap_err().contains("one day"));
        assert!(parse_sticky("-1").is_err());
        assert!(parse_pattern("gpt-?").is_err());
        assert!(parse_protocol("grpc").is_err());
    }

    #[test]
    fn set_needs_a_target_and_accepts_target_as_an_alias() {
        use clap::Parser;
        let err = crate::commands::Cli::try_parse_from(["fulcrumctl", "routes", "set", "gpt-*"])
            .expect_err("needs target");
        assert_eq!(err.exit_code(), 2);
        let cli = crate::commands::Cli::try_parse_from([
            "fulcrumctl",
            "routes",
            "set",
            "gpt-*",
            "--target",
            "a",
            "--to",
            "b:m",
            "--price",
            "c=1,2",
        ])
        .expect("parses");
        assert!(
            cli.check().unwrap_err().contains("matches no --to target"),
            "a price for no target is a usage error"
        );
    }
}
