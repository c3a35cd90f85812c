//! `fulcrumctl routes ...`

use anyhow::bail;
use clap::Subcommand;
use fulcrum_proto::model::{validate_model_pattern, validate_provider_name};
use fulcrum_proto::pb;
use serde_json::{Value, json};

use crate::client::AdminClient;
use crate::output::{self, Format, Table};

#[derive(Debug, Subcommand)]
pub enum RoutesCommand {
    /// Create or replace the route for a model pattern.
    ///
    /// Each --target is PROVIDER[:MODEL][@PRIORITY][*WEIGHT]. Without @PRIORITY, targets are
    /// tried in the order given (priorities 1, 2, 3, ...); the weight defaults to 1. MODEL
    /// replaces the client's model name for that provider. A version suffix such as
    /// `@001` or `@20240620` stays part of the model: only `@N` with N from 0 to 99999 and
    /// no leading zero is read as a priority.
    Set {
        /// An exact model name or a glob with `*` (`gemini-2.5-*`, `claude-*`, `*`).
        #[arg(value_parser = parse_pattern)]
        pattern: String,
        /// A candidate provider, in order of preference; repeat for several.
        #[arg(long = "target", required = true, value_name = "PROVIDER[:MODEL][@PRIORITY][*WEIGHT]", value_parser = parse_target)]
        targets: Vec<TargetSpec>,
    },
    /// List every route.
    List,
    /// Delete the route for a model pattern.
    Remove {
        #[arg(value_parser = parse_pattern)]
        pattern: String,
    },
}

/// One `--target` as typed; priority is filled from the position when left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    provider: String,
    model: String,
    priority: Option<u32>,
    weight: u32,
}

pub async fn run(
    cmd: &RoutesCommand,
    client: &mut AdminClient,
    format: Format,
) -> anyhow::Result<()> {
    match cmd {
        RoutesCommand::Set { pattern, targets } => {
            let request = pb::PutRouteRequest {
                route: Some(build_route(pattern, targets)),
            };
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
                "set route {:?} (revision {})",
                route.model_pattern, response.revision
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
                    "no routes (add one with `fulcrumctl routes set PATTERN --target PROVIDER`)",
                );
                return Ok(());
            }
            let now = output::now_unix_ms();
            let mut table = Table::new(["PATTERN", "TARGETS", "UPDATED"]);
            for route in &response.routes {
                let targets: Vec<String> = route.targets.iter().map(output::target_spec).collect();
                table.row(vec![
                    route.model_pattern.clone(),
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
    }
}

fn build_route(pattern: &str, targets: &[TargetSpec]) -> pb::Route {
    let targets = targets
        .iter()
        .zip(1u32..)
        .map(|(t, position)| pb::RouteTarget {
            provider: t.provider.clone(),
            model: t.model.clone(),
            priority: t.priority.unwrap_or(position),
            weight: t.weight,
        })
        .collect();
    pb::Route {
        model_pattern: pattern.to_string(),
        targets,
        updated_unix_ms: 0,
    }
}

fn targets_table(route: &pb::Route) -> Table {
    let mut table = Table::new(["PRIORITY", "WEIGHT", "PROVIDER", "MODEL"]);
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
        ]);
    }
    table
}

fn parse_pattern(value: &str) -> Result<String, String> {
    validate_model_pattern(value).map_err(|e| e.message)?;
    Ok(value.to_string())
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
        );
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
    fn set_needs_a_target() {
        use clap::Parser;
        let err = crate::commands::Cli::try_parse_from(["fulcrumctl", "routes", "set", "gpt-*"])
            .expect_err("needs target");
        assert_eq!(err.exit_code(), 2);
    }
}
