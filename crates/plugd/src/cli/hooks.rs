//! `plugd hooks run <stage>` and `plugd hooks check`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Subcommand};
use plugd_core::RegistryBuilder;
use serde_json::{Map, Value};

use super::progress::Progress;
use super::{runtime, CliError, CliResult};
use crate::hooks::{check_stage, run_stage, HooksFile, PlannedStep, Scope, StageReport, TemplateValues};
use crate::local::LocalRunner;

#[cfg(test)]
mod tests {
    #[test]
    fn url_passwords_are_hidden() {
        assert_eq!(
            super::hide_url_passwords(r#"{"url":"amqp://guest:guest@mq:5672/%2f","hook":"https://chat/x"}"#),
            r#"{"url":"amqp://guest:<redacted>@mq:5672/%2f","hook":"https://chat/x"}"#
        );
    }
}

/// Arguments of `plugd hooks`.
#[derive(Debug, Args)]
pub(crate) struct HooksArgs {
    #[command(subcommand)]
    command: HooksCommand,
}

#[derive(Debug, Subcommand)]
enum HooksCommand {
    /// Run the steps of a stage: pre_build, pre_release or post_release.
    Run {
        /// The stage.
        stage: String,
        #[command(flatten)]
        file: FileArgs,
        /// A template value: package.KEY=VALUE or release.KEY=VALUE (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Render every step's inputs and print the plan; run nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Check the file (stages, plugins, inputs, templates) and print the plan.
    Check {
        #[command(flatten)]
        file: FileArgs,
        /// A template value the runs will give (package.KEY=VALUE or release.KEY=VALUE; repeatable):
        /// templates may use package.name, version, qualified_name and uri, the release's message,
        /// previous_version, changelog and path, and what is set here.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
}

#[derive(Debug, Args)]
struct FileArgs {
    /// The hooks file.
    #[arg(long, default_value = "plugd-hooks.yaml")]
    config: PathBuf,
    /// Run process plugins and the command plugin as this user (plugd must run as root).
    #[arg(long, env = "PLUGD_PLUGIN_USER", value_name = "NAME")]
    plugin_user: Option<String>,
}

/// `package.x=...` and `release.x=...` into template values, with defaults for what is derived.
fn values(set: &[String]) -> CliResult<TemplateValues> {
    let mut values = TemplateValues::default();
    for pair in set {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| CliError::Usage(format!("invalid --set {pair:?}: expected KEY=VALUE")))?;
        let target = match key.split_once('.') {
            Some(("package", field)) if !field.is_empty() => (&mut values.package, field),
            Some(("release", field)) if !field.is_empty() => (&mut values.release, field),
            _ => {
                return Err(CliError::Usage(format!("invalid --set {key:?}: expected package.<key> or release.<key>")))
            }
        };
        target.0.insert(target.1.to_owned(), Value::String(value.to_owned()));
    }
    let text = |map: &Map<String, Value>, key: &str| map.get(key).and_then(Value::as_str).map(str::to_owned);
    if let (Some(name), Some(version)) = (text(&values.package, "name"), text(&values.package, "version")) {
        values.package.entry("qualified_name").or_insert_with(|| Value::String(format!("{name}-{version}")));
    }
    values.package.entry("uri").or_insert_with(|| Value::String(String::new()));
    for key in ["message", "previous_version", "changelog"] {
        values.release.entry(key).or_insert_with(|| Value::String(String::new()));
    }
    // Where the package is released to (rez's `release.path`): the folder of its `uri`,
    // `<path>/<name>/<version>/package.py`, unless given.
    let path = match (text(&values.package, "uri"), text(&values.package, "name"), text(&values.package, "version")) {
        (Some(uri), Some(name), Some(version)) => {
            uri.strip_suffix(&format!("/{name}/{version}/package.py")).unwrap_or_default().to_owned()
        }
        _ => String::new(),
    };
    values.release.entry("path").or_insert(Value::String(path));
    Ok(values)
}

fn load(builder: RegistryBuilder, file: &FileArgs) -> CliResult<(HooksFile, std::sync::Arc<plugd_core::Registry>)> {
    let options = super::plugins::process_options(super::plugins::RunFor::User, file.plugin_user.as_slice())?;
    let registry = super::plugins::build(super::plugins::with_installed(builder, &options))?;
    let hooks = HooksFile::load(&file.config, &registry).map_err(|e| CliError::Usage(e.to_string()))?;
    Ok((hooks, registry))
}

/// Each stage and step; with `rendered`, the inputs as rendered (a dry run), else as written.
fn print_plan(hooks: &HooksFile, only: Option<&str>, rendered: Option<&[PlannedStep<'_>]>) {
    for stage in &hooks.stages {
        if only.is_some_and(|s| s != stage.name) {
            continue;
        }
        if stage.steps.is_empty() {
            println!("{}: no steps", stage.name);
            continue;
        }
        println!("{}:", stage.name);
        for step in &stage.steps {
            let flags = format!("cancel_on_error={} stop_on_error={}", step.cancel_on_error, step.stop_on_error);
            println!("  - {} (uses {}; {flags})", step.name, step.uses);
            let with = rendered
                .and_then(|planned| planned.iter().find(|p| std::ptr::eq(p.step, step)))
                .map_or_else(|| step.with.clone(), |p| p.with.clone());
            println!("      with: {}", hide_url_passwords(&Value::Object(with).to_string()));
        }
    }
}

/// `scheme://user:password@host` becomes `scheme://user:<redacted>@host` (an AMQP URL, say).
fn hide_url_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let end = after.find(['/', '"', ' ', '?']).unwrap_or(after.len());
        let authority = &after[..end];
        let hidden = authority
            .rsplit_once('@')
            .and_then(|(userinfo, host)| userinfo.split_once(':').map(|(user, _)| format!("{user}:<redacted>@{host}")));
        out.push_str(hidden.as_deref().unwrap_or(authority));
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

fn print_summary(report: &StageReport) {
    let rows: Vec<[String; 5]> = report
        .steps
        .iter()
        .map(|s| {
            let duration = if s.state == crate::hooks::StepState::Skipped {
                "-".into()
            } else {
                format!("{:.2}s", s.duration.as_secs_f64())
            };
            let error = s.error.as_deref().unwrap_or("").lines().next().unwrap_or("").to_owned();
            [s.name.clone(), s.plugin.clone(), s.state.label().to_owned(), duration, error]
        })
        .collect();
    let header = ["STEP", "PLUGIN", "STATE", "DURATION", "ERROR"].map(str::to_owned);
    let table: Vec<[String; 5]> = std::iter::once(header).chain(rows).collect();
    println!("\n{} summary:", report.stage);
    for line in super::table::aligned(&table) {
        println!("  {line}");
    }
}

pub(crate) fn hooks(builder: RegistryBuilder, args: HooksArgs) -> CliResult {
    match args.command {
        HooksCommand::Check { file, set } => {
            let values = values(&set)?;
            let (hooks, _) = load(builder, &file)?;
            hooks.plan(None, &values, Scope::Check).map_err(|e| CliError::Usage(e.to_string()))?;
            println!("{}: ok", file.config.display());
            print_plan(&hooks, None, None);
            Ok(ExitCode::SUCCESS)
        }
        HooksCommand::Run { stage, file, set, dry_run } => {
            check_stage(&stage).map_err(|e| CliError::Usage(e.to_string()))?;
            let values = values(&set)?;
            let (hooks, registry) = load(builder, &file)?;
            // Every step's templates, rendered as far as they can be before the run: a misspelt
            // variable or a value not given stops the stage before its first step.
            let planned =
                hooks.plan(Some(&stage), &values, Scope::DryRun).map_err(|e| CliError::Usage(e.to_string()))?;
            if planned.is_empty() {
                println!("{stage}: no steps in {}; nothing to run", file.config.display());
                return Ok(ExitCode::SUCCESS);
            }
            if dry_run {
                print_plan(&hooks, Some(&stage), Some(planned.as_slice()));
                return Ok(ExitCode::SUCCESS);
            }
            let report = runtime()?.block_on(async {
                let runner = LocalRunner::start(registry)
                    .await
                    .map_err(|e| CliError::Failed(anyhow::anyhow!("cannot start the callback listener: {e}")))?;
                let mut progress = Progress::new(Instant::now());
                let mut announce = |step: &crate::hooks::Step| eprintln!("==> {stage} › {} ({})", step.name, step.uses);
                let report = run_stage(&hooks, &stage, values, &runner, &mut progress, &mut announce).await;
                progress.finish();
                Ok::<_, CliError>(report)
            })?;
            print_summary(&report);
            if let Some((step, reason)) = &report.cancelled_by {
                eprintln!("error: release cancelled by hook {step}: {reason}");
            } else if let Some(failed) = report.steps.iter().find(|s| s.error.is_some()) {
                eprintln!("error: hook {} failed: {}", failed.name, failed.error.as_deref().unwrap_or(""));
            }
            Ok(ExitCode::from(report.exit_code()))
        }
    }
}
