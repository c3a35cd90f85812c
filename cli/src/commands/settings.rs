//! `fulcrumctl settings ...`

use anyhow::bail;
use clap::Subcommand;
use fulcrum_proto::model::settings;
use fulcrum_proto::pb;
use serde_json::{Value, json};

use crate::client::AdminClient;
use crate::output::{self, Format, Table};

#[derive(Debug, Subcommand)]
pub enum SettingsCommand {
    /// List every setting with its value, default and meaning.
    List,
    /// Show one setting.
    Get {
        #[arg(value_parser = parse_setting_name)]
        name: String,
    },
    /// Change one setting.
    Set {
        #[arg(value_parser = parse_setting_name)]
        name: String,
        value: String,
    },
}

pub async fn run(
    cmd: &SettingsCommand,
    client: &mut AdminClient,
    format: Format,
) -> anyhow::Result<()> {
    match cmd {
        SettingsCommand::List => {
            let response = client
                .list_settings(pb::ListSettingsRequest {})
                .await?
                .into_inner();
            if format == Format::Json {
                let list: Vec<Value> = response.settings.iter().map(output::setting_json).collect();
                return output::print_json(&json!({ "settings": list }));
            }
            let mut table = Table::new(["NAME", "VALUE", "DEFAULT", "DESCRIPTION"]);
            for s in &response.settings {
                table.row(vec![
                    s.name.clone(),
                    s.value.clone(),
                    s.default_value.clone(),
                    s.description.clone(),
                ]);
            }
            output::print(&table.render())
        }
        SettingsCommand::Get { name } => {
            let request = pb::GetSettingRequest { name: name.clone() };
            let response = client.get_setting(request).await?.into_inner();
            let Some(setting) = response.setting else {
                bail!("the control plane answered without the setting");
            };
            if format == Format::Json {
                return output::print_json(&json!({ "setting": output::setting_json(&setting) }));
            }
            output::print(&setting_fields(&setting))
        }
        SettingsCommand::Set { name, value } => {
            let request = pb::SetSettingRequest {
                name: name.clone(),
                value: canonical_value(name, value).map_err(anyhow::Error::msg)?,
            };
            let response = client.set_setting(request).await?.into_inner();
            let Some(setting) = response.setting else {
                bail!("the control plane answered without the setting");
            };
            if format == Format::Json {
                return output::print_json(&json!({
                    "setting": output::setting_json(&setting),
                    "revision": response.revision,
                }));
            }
            output::print(&format!(
                "set {} = {} (revision {})",
                setting.name, setting.value, response.revision
            ))
        }
    }
}

/// Checks what can be checked without the control plane; run before connecting.
pub fn check(cmd: &SettingsCommand) -> Result<(), String> {
    match cmd {
        SettingsCommand::Set { name, value } => canonical_value(name, value).map(drop),
        SettingsCommand::List | SettingsCommand::Get { .. } => Ok(()),
    }
}

/// The value as the control plane would store it (trimmed, lowercase words).
fn canonical_value(name: &str, value: &str) -> Result<String, String> {
    let spec = settings::spec(name).map_err(|e| e.message)?;
    spec.check(value).map_err(|e| e.message)
}

fn setting_fields(s: &pb::SettingInfo) -> String {
    output::fields(&[
        ("name", s.name.clone()),
        ("value", s.value.clone()),
        ("default", s.default_value.clone()),
        ("description", s.description.clone()),
    ])
}

fn parse_setting_name(value: &str) -> Result<String, String> {
    settings::spec(value).map_err(|e| e.message)?;
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::commands::Cli;

    #[test]
    fn setting_names_are_checked() {
        assert!(Cli::try_parse_from(["fulcrumctl", "settings", "get", "max_retries"]).is_ok());
        assert!(Cli::try_parse_from(["fulcrumctl", "settings", "set", "max_retry", "3"]).is_err());
        let cli = Cli::try_parse_from(["fulcrumctl", "settings", "set", "max_retries", "many"])
            .expect("parses");
        assert!(cli.check().is_err());
        let cli = Cli::try_parse_from(["fulcrumctl", "settings", "set", "max_retries", " 5 "])
            .expect("parses");
        assert!(cli.check().is_ok());
    }
}
