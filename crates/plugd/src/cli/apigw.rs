//! `plugd apigw resources`: the BlueKing API gateway's resource definition for a plugd server.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use plugd_core::RegistryBuilder;

use super::{CliError, CliResult};

/// Arguments of `plugd apigw`.
#[derive(Debug, Args)]
pub(crate) struct ApigwArgs {
    #[command(subcommand)]
    command: ApigwCommand,
}

#[derive(Debug, Subcommand)]
enum ApigwCommand {
    /// Print the resources (YAML, the gateway's import format) that forward to `plugd serve`.
    Resources {
        /// The plugin the gateway serves: its routes under /plugins/<plugin>/bk_plugin/ [default: the
        /// server's default plugin, under /bk_plugin/].
        #[arg(long)]
        plugin: Option<String>,
        /// A path the gateway's backend puts before plugd's (the framework's
        /// BK_PLUGIN_APIGW_BACKEND_SUB_PATH), e.g. `/prod`.
        #[arg(long, value_name = "PATH", default_value = "")]
        backend_sub_path: String,
    },
}

pub(crate) fn apigw(plugins: RegistryBuilder, args: ApigwArgs) -> CliResult {
    let ApigwCommand::Resources { plugin, backend_sub_path } = args.command;
    let sub_path = backend_sub_path.trim_matches('/');
    let sub_path = if sub_path.is_empty() { String::new() } else { format!("/{sub_path}") };
    let prefix = match &plugin {
        None => format!("{sub_path}/bk_plugin"),
        Some(name) => {
            let (registry, _, _) = super::plugins::for_spec(plugins, name, &plugd_process::ProcessOptions::default())?;
            if !registry.contains(name) {
                let available = registry.names().collect::<Vec<_>>().join(", ");
                return Err(CliError::Usage(format!(
                    "--plugin {name:?} is not a plugin; available plugins: {available}"
                )));
            }
            format!("{sub_path}/plugins/{name}/bk_plugin")
        }
    };
    let document = plugd_server::apigw::resources(&prefix);
    let yaml = serde_yaml_ng::to_string(&document).map_err(|e| CliError::Failed(e.into()))?;
    print!("{yaml}");
    Ok(ExitCode::SUCCESS)
}
