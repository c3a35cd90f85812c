//! `fulcrumctl providers ...`

use anyhow::bail;
use clap::{ArgGroup, Subcommand};
use fulcrum_proto::model::ProviderType;
use fulcrum_proto::pb;
use serde_json::json;

use super::{Secretive, parse_base_url, parse_header, parse_provider_name, parse_proxy};
use crate::client::AdminClient;
use crate::output::{self, Format, Table};

#[derive(Debug, Subcommand)]
pub enum ProvidersCommand {
    /// Create a provider.
    Add {
        #[arg(value_parser = parse_provider_name)]
        name: String,
        /// gemini, openai, anthropic, vertex-express or mock.
        #[arg(long = "type", value_name = "TYPE")]
        provider_type: ProviderType,
        /// Absolute http(s) URL; the type's default if left out.
        #[arg(long, value_parser = parse_base_url)]
        base_url: Option<String>,
        /// Lower is tried first when several providers serve a model [default: 100].
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        priority: Option<u32>,
        /// Share of traffic among providers of the same priority [default: 1].
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        weight: Option<u32>,
        /// Outbound proxy, `http://[user:pass@]host:port` (CONNECT) or
        /// `socks5://[user:pass@]host:port`; repeat for several (keys are spread over them).
        #[arg(long = "proxy", value_name = "URL", value_parser = Secretive(parse_proxy))]
        proxies: Vec<String>,
        /// Header sent on every upstream request, `'Name: value'`; repeatable.
        #[arg(long = "header", value_name = "NAME: VALUE", value_parser = Secretive(parse_header))]
        headers: Vec<pb::UpstreamHeader>,
    },
    /// List every provider.
    List,
    /// Show one provider with its key counts by state.
    Get {
        #[arg(value_parser = parse_provider_name)]
        name: String,
    },
    /// Delete a provider (refused while it has keys, unless --force, or a route names it).
    Remove {
        #[arg(value_parser = parse_provider_name)]
        name: String,
        /// Delete its keys with it.
        #[arg(long)]
        force: bool,
    },
    /// Change a provider's base URL, priority, weight, proxies or headers.
    #[command(group(ArgGroup::new("change").required(true).multiple(true).args(["base_url", "priority", "weight", "proxies", "no_proxies", "headers", "no_headers"])))]
    Update {
        #[arg(value_parser = parse_provider_name)]
        name: String,
        #[arg(long, value_parser = parse_base_url)]
        base_url: Option<String>,
        #[arg(long)]
        priority: Option<u32>,
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        weight: Option<u32>,
        /// Replaces the provider's proxies with these; repeatable.
        #[arg(long = "proxy", value_name = "URL", value_parser = Secretive(parse_proxy), conflicts_with = "no_proxies")]
        proxies: Vec<String>,
        /// Removes every proxy: upstream calls go direct (pinned key proxies stay).
        #[arg(long)]
        no_proxies: bool,
        /// Replaces the provider's headers with these; repeatable.
        #[arg(long = "header", value_name = "NAME: VALUE", value_parser = Secretive(parse_header), conflicts_with = "no_headers")]
        headers: Vec<pb::UpstreamHeader>,
        /// Removes every header.
        #[arg(long)]
        no_headers: bool,
    },
}

pub async fn run(
    cmd: &ProvidersCommand,
    client: &mut AdminClient,
    format: Format,
) -> anyhow::Result<()> {
    match cmd {
        ProvidersCommand::Add {
            name,
            provider_type,
            base_url,
            priority,
            weight,
            proxies,
            headers,
        } => {
            let request = pb::CreateProviderRequest {
                name: name.clone(),
                r#type: provider_type.to_pb() as i32,
                base_url: base_url.clone().unwrap_or_default(),
                priority: priority.unwrap_or(0),
                weight: weight.unwrap_or(0),
                proxies: proxies.clone(),
                headers: headers.clone(),
            };
            let response = client.create_provider(request).await?.into_inner();
            print_changed("created", response.provider, response.revision, format)
        }
        ProvidersCommand::List => {
            let response = client
                .list_providers(pb::ListProvidersRequest {})
                .await?
                .into_inner();
            if format == Format::Json {
                let providers: Vec<_> = response
                    .providers
                    .iter()
                    .map(output::provider_json)
                    .collect();
                return output::print_json(&json!({ "providers": providers }));
            }
            let mut table =
                Table::new(["NAME", "TYPE", "BASE URL", "PRIORITY", "WEIGHT", "PROXIES"]);
            for p in &response.providers {
                table.row(vec![
                    p.name.clone(),
                    output::provider_type_name(p.r#type).to_string(),
                    output::or_dash(&p.base_url),
                    p.priority.to_string(),
                    p.weight.to_string(),
                    p.proxies.len().to_string(),
                ]);
            }
            if table.is_empty() {
                output::note(
                    "no providers (add one with `fulcrumctl providers add NAME --type TYPE`)",
                );
                return Ok(());
            }
            output::print(&table.render())
        }
        ProvidersCommand::Get { name } => {
            let request = pb::GetProviderRequest { name: name.clone() };
            let response = client.get_provider(request).await?.into_inner();
            let Some(provider) = response.provider else {
                bail!("the control plane answered without the provider");
            };
            if format == Format::Json {
                let proxies: Vec<_> = response
                    .proxy_key_counts
                    .iter()
                    .map(
                        |c| json!({ "proxy": c.proxy, "assigned": c.assigned, "pinned": c.pinned }),
                    )
                    .collect();
                return output::print_json(&json!({
                    "provider": output::provider_json(&provider),
                    "key_counts": output::key_counts_json(&response.key_counts),
                    "proxy_key_counts": proxies,
                }));
            }
            output::print(&provider_fields(&provider, Some(&response.key_counts)))?;
            if response.proxy_key_counts.is_empty() {
                return Ok(());
            }
            let mut table = Table::new(["PROXY", "ASSIGNED KEYS", "PINNED KEYS"]);
            for c in &response.proxy_key_counts {
                let proxy = if c.proxy.is_empty() {
                    "(direct)".to_string()
                } else {
                    c.proxy.clone()
                };
                table.row(vec![proxy, c.assigned.to_string(), c.pinned.to_string()]);
            }
            output::print(&table.render())
        }
        ProvidersCommand::Remove { name, force } => {
            let request = pb::DeleteProviderRequest {
                name: name.clone(),
                force: *force,
            };
            let response = client.delete_provider(request).await?.into_inner();
            if format == Format::Json {
                return output::print_json(&json!({
                    "name": name,
                    "keys_deleted": response.keys_deleted,
                    "revision": response.revision,
                }));
            }
            let keys = if response.keys_deleted > 0 {
                format!(" and its {} keys", response.keys_deleted)
            } else {
                String::new()
            };
            output::print(&format!(
                "removed provider {name:?}{keys} (revision {})",
                response.revision
            ))
        }
        ProvidersCommand::Update {
            name,
            base_url,
            priority,
            weight,
            proxies,
            no_proxies,
            headers,
            no_headers,
        } => {
            let request = pb::UpdateProviderRequest {
                name: name.clone(),
                base_url: base_url.clone(),
                priority: *priority,
                weight: *weight,
                set_proxies: *no_proxies || !proxies.is_empty(),
                proxies: proxies.clone(),
                set_headers: *no_headers || !headers.is_empty(),
                headers: headers.clone(),
            };
            let response = client.update_provider(request).await?.into_inner();
            print_changed("updated", response.provider, response.revision, format)
        }
    }
}

fn provider_fields(p: &pb::Provider, key_counts: Option<&[pb::KeyStateCount]>) -> String {
    let now = output::now_unix_ms();
    let mut pairs = vec![
        ("name", p.name.clone()),
        ("type", output::provider_type_name(p.r#type).to_string()),
        ("base url", output::or_dash(&p.base_url)),
        ("priority", p.priority.to_string()),
        ("weight", p.weight.to_string()),
        (
            "proxies",
            if p.proxies.is_empty() {
                "- (direct)".to_string()
            } else {
                p.proxies.join(", ")
            },
        ),
        (
            "headers",
            if p.headers.is_empty() {
                "-".to_string()
            } else {
                p.headers
                    .iter()
                    .map(|h| format!("{}: {}", h.name, h.value))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        ),
        ("created", output::ago(p.created_unix_ms, now)),
        ("updated", output::ago(p.updated_unix_ms, now)),
    ];
    if let Some(counts) = key_counts {
        let total: u64 = counts.iter().map(|c| c.count).sum();
        pairs.push((
            "keys",
            format!("{total} ({})", output::key_counts_line(counts)),
        ));
    }
    output::fields(&pairs)
}

/// Prints a provider an admin write answered with, and the revision it made.
fn print_changed(
    verb: &str,
    provider: Option<pb::Provider>,
    revision: u64,
    format: Format,
) -> anyhow::Result<()> {
    let Some(provider) = provider else {
        bail!("the control plane answered without the provider");
    };
    if format == Format::Json {
        return output::print_json(&json!({
            "provider": output::provider_json(&provider),
            "revision": revision,
        }));
    }
    output::print(&format!(
        "{verb} provider {:?} (revision {revision})",
        provider.name
    ))?;
    output::print(&provider_fields(&provider, None))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::commands::{Cli, Command};

    fn parse(args: &[&str]) -> Result<ProvidersCommand, clap::Error> {
        let cli = Cli::try_parse_from(std::iter::once("fulcrumctl").chain(args.iter().copied()))?;
        match cli.command {
            Command::Providers(cmd) => Ok(cmd),
            other => panic!("unexpected command {other:?}"),
        }
    }

    #[test]
    fn add_parses_type_and_options() {
        let cmd = parse(&[
            "providers",
            "add",
            "oa",
            "--type",
            "openai",
            "--weight",
            "3",
        ])
        .expect("parses");
        let ProvidersCommand::Add {
            name,
            provider_type,
            weight,
            base_url,
            ..
        } = cmd
        else {
            panic!("not add");
        };
        assert_eq!(name, "oa");
        assert_eq!(provider_type, ProviderType::OpenAi);
        assert_eq!(weight, Some(3));
        assert_eq!(base_url, None);
    }

    #[test]
    fn bad_input_fails_before_any_rpc() {
        for args in [
            &["providers", "add", "oa", "--type", "nope"][..],
            &["providers", "add", "Bad Name", "--type", "openai"],
            &[
                "providers",
                "add",
                "oa",
                "--type",
                "openai",
                "--base-url",
                "ftp://x",
            ],
            &[
                "providers",
                "add",
                "oa",
                "--type",
                "openai",
                "--weight",
                "0",
            ],
            &["providers", "add", "oa"],
            &["providers", "update", "oa"],
        ] {
            let err = parse(args).expect_err("rejected");
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn proxies_and_headers_are_checked() {
        let cmd = parse(&[
            "providers",
            "add",
            "oa",
            "--type",
            "openai",
            "--proxy",
            "http://u:p@127.0.0.1:3128",
            "--proxy",
            "socks5://127.0.0.1",
            "--header",
            "OpenAI-Organization: org-1",
        ])
        .expect("parses");
        let ProvidersCommand::Add {
            proxies, headers, ..
        } = cmd
        else {
            panic!("not add");
        };
        assert_eq!(
            proxies,
            ["http://u:p@127.0.0.1:3128", "socks5://127.0.0.1:1080"]
        );
        assert_eq!(headers[0].name, "OpenAI-Organization");
        assert_eq!(headers[0].value, "org-1");
        for args in [
            &[
                "providers",
                "add",
                "oa",
                "--type",
                "openai",
                "--proxy",
                "ftp://x:1",
            ][..],
            &[
                "providers",
                "add",
                "oa",
                "--type",
                "openai",
                "--header",
                "Authorization: Bearer x",
            ],
            &[
                "providers",
                "add",
                "oa",
                "--type",
                "openai",
                "--header",
                "no-colon",
            ],
            &[
                "providers",
                "update",
                "oa",
                "--proxy",
                "http://a:1",
                "--no-proxies",
            ],
        ] {
            let err = parse(args).expect_err("rejected");
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
        let err = parse(&[
            "providers",
            "add",
            "oa",
            "--type",
            "openai",
            "--proxy",
            "ftp://me:hunter2@x",
        ])
        .expect_err("rejected");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(matches!(
            parse(&["providers", "update", "oa", "--no-headers"]).expect("parses"),
            ProvidersCommand::Update {
                no_headers: true,
                ..
            }
        ));
    }

    #[test]
    fn update_takes_any_change() {
        let cmd = parse(&["providers", "update", "oa", "--priority", "0"]).expect("parses");
        assert!(matches!(
            cmd,
            ProvidersCommand::Update {
                priority: Some(0),
                ..
            }
        ));
    }
}
