//! `plugd run`: parse a plugin's inputs from flags, run it locally, print the result.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};
use plugd_core::{Invocation, RegisteredPlugin, Registry, RegistryBuilder};
use plugd_sdk::State;
use serde_json::{json, Map, Value};

use super::describe::{field_lines, plugin_help};
use super::inputs::{fields, parse_array, parse_pairs, parse_value, Field, Kind};
use super::progress::Progress;
use super::{lookup, parse_duration, runtime, CliError, CliResult};
use crate::exit;
use crate::local::LocalRunner;

/// Arguments of `plugd run`.
#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    options: RunOptions,
    /// `<plugin>` or `<plugin>@<version>` (default: the newest version).
    plugin: Option<String>,
    /// The plugin's inputs, as `--<input> <value>` (see `plugd run <plugin> --help`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "INPUTS")]
    inputs: Vec<String>,
}

/// Options of the runner, accepted before or after the plugin name.
#[derive(Debug, Default, Clone, Args)]
pub(crate) struct RunOptions {
    /// Read inputs from a JSON object file ('-' for standard input); flags override its keys.
    #[arg(long, value_name = "FILE")]
    inputs_json: Option<PathBuf>,
    /// Set a context input (repeatable).
    #[arg(long = "context", value_name = "KEY=VALUE")]
    context: Vec<String>,
    /// Read context inputs from a JSON object file ('-' for standard input).
    #[arg(long, value_name = "FILE")]
    context_json: Option<PathBuf>,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
    /// Give up after this long (e.g. 30s, 5m): exit code 124.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Print the plugin's description, inputs and outputs.
    #[arg(short = 'h', long)]
    help: bool,
}

impl RunOptions {
    /// Options given after the plugin name add to (or override) those given before it.
    fn merge(self, later: RunOptions) -> RunOptions {
        RunOptions {
            inputs_json: later.inputs_json.or(self.inputs_json),
            context: [self.context, later.context].concat(),
            context_json: later.context_json.or(self.context_json),
            json: self.json || later.json,
            timeout: later.timeout.or(self.timeout),
            help: self.help || later.help,
        }
    }
}

/// Runner option names an input flag may not take; such inputs get `--input-<name>`.
const RESERVED: [&str; 6] = ["inputs-json", "context", "context-json", "json", "timeout", "help"];

/// The flag of an input: `--<name>`, underscores as dashes.
pub(crate) fn flag_for(name: &str) -> String {
    let flag = name.replace('_', "-");
    if RESERVED.contains(&flag.as_str()) {
        format!("input-{flag}")
    } else {
        flag
    }
}

pub(crate) fn run(plugins: RegistryBuilder, args: RunArgs, verbose: bool) -> CliResult {
    let Some(spec) = args.plugin else {
        let mut command = Command::new("plugd run");
        command = RunArgs::augment_args(command);
        println!("{}", command.render_help());
        return if args.options.help { Ok(ExitCode::SUCCESS) } else { Err(CliError::Usage("missing <PLUGIN>".into())) };
    };
    // Process plugins show their output as it comes.
    let plugin_users: Vec<String> =
        std::env::var("PLUGD_PLUGIN_USER").map(|v| v.split(',').map(str::to_owned).collect()).unwrap_or_default();
    let options = super::plugins::process_options(super::plugins::RunFor::User, &plugin_users)?;
    let (registry, spec, folder) = super::plugins::for_spec(plugins, &spec, &options)?;
    let plugin = lookup(&registry, &spec)?;
    let input_fields = fields(&plugin.schemas.inputs);
    let (options, inputs, verbose_after) = parse_inputs(&plugin, &input_fields, args.options, &args.inputs)?;
    // `-v` may come after the plugin name, so logging starts only once the inputs are parsed.
    super::init_logging(verbose || verbose_after);
    if options.help {
        print!("{}", plugin_help(&plugin, &registry));
        return Ok(ExitCode::SUCCESS);
    }
    let stdin_count = [&options.inputs_json, &options.context_json].iter().filter(|p| is_stdin(p)).count();
    if stdin_count > 1 {
        return Err(CliError::Usage("--inputs-json and --context-json cannot both read standard input".into()));
    }
    let mut all_inputs = match &options.inputs_json {
        Some(path) => read_json_object(path, "--inputs-json")?,
        None => Map::new(),
    };
    all_inputs.extend(inputs);
    let all_inputs = Value::Object(all_inputs);
    if let Err(e) = plugin.inputs.validate(&all_inputs) {
        return Err(usage_with_fields(format!("inputs validation error: {e}"), "inputs", &input_fields, true));
    }

    let context_fields = fields(&plugin.schemas.context_inputs);
    let mut context = match &options.context_json {
        Some(path) => read_json_object(path, "--context-json")?,
        None => Map::new(),
    };
    context.extend(parse_pairs(&context_fields, &options.context).map_err(CliError::Usage)?);
    let context = Value::Object(context);
    if let Err(e) = plugin.context_inputs.validate(&context) {
        return Err(usage_with_fields(
            format!("context validation error: {e}"),
            "context inputs",
            &context_fields,
            false,
        ));
    }

    let invocation = Invocation::new(&plugin.info.name, &plugin.info.version, all_inputs, context);
    run_invocation(registry, invocation, &options, folder)
}

fn run_invocation(
    registry: Arc<Registry>,
    mut invocation: Invocation,
    options: &RunOptions,
    folder: Option<plugd_process::Folder>,
) -> CliResult {
    let started = Instant::now();
    let timed_out = runtime()?.block_on(async {
        // A plugin folder run in place installs its dependencies first, as qci-plugin does.
        if let Some(folder) = &folder {
            super::plugins::install_all(std::slice::from_ref(folder)).await?;
        }
        let runner = LocalRunner::start(registry).await.context("cannot start the callback listener")?;
        let mut progress = Progress::new(started);
        let run = runner.run(&mut invocation, &mut progress);
        let timed_out = match options.timeout {
            Some(limit) => match tokio::time::timeout(limit, run).await {
                Ok(result) => result.map(|()| false),
                Err(_) => Ok(true),
            },
            None => run.await.map(|()| false),
        };
        progress.finish();
        timed_out.map_err(|e| CliError::Failed(e.into()))
    })?;
    let elapsed = started.elapsed();
    print_result(&invocation, elapsed, timed_out.then_some(options.timeout).flatten(), options.json);
    if invocation.state == State::Success && !timed_out {
        // Inside a CODING CI job, outputs reach the rest of the job as qci-plugin's do: appended to
        // the job's `$CI_ENV_FILE`, which the Jenkinsfile reads with `readProperties`.
        if let Some(path) = std::env::var_os("CI_ENV_FILE").filter(|p| !p.is_empty()).map(PathBuf::from) {
            append_properties(&path, &invocation.outputs).map_err(|e| {
                CliError::Failed(anyhow::anyhow!("cannot append the outputs to CI_ENV_FILE {}: {e}", path.display()))
            })?;
        }
    }
    Ok(ExitCode::from(match invocation.state {
        _ if timed_out => exit::TIMEOUT,
        State::Success => exit::SUCCESS,
        _ => exit::FAILED,
    }))
}

/// Parses the arguments after the plugin name against a command built from its input schema.
fn parse_inputs(
    plugin: &RegisteredPlugin,
    input_fields: &[Field],
    before: RunOptions,
    raw: &[String],
) -> CliResult<(RunOptions, Map<String, Value>, bool)> {
    let command = input_command(plugin, input_fields);
    let matches = command.try_get_matches_from(raw).map_err(|e| {
        let rendered = e.render().to_string();
        let message: Vec<&str> = rendered
            .trim_start_matches("error: ")
            .lines()
            .filter(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
            .collect();
        usage_with_fields(message.join("\n").trim().to_owned(), "inputs", input_fields, true)
    })?;
    let later = RunOptions::from_arg_matches(&matches).map_err(|e| CliError::Usage(e.to_string()))?;
    let options = before.merge(later);
    let mut inputs = Map::new();
    for field in input_fields {
        if let Some(value) = field_value(&matches, field, input_fields)? {
            inputs.insert(field.name.clone(), value);
        }
    }
    let verbose = matches.try_get_one::<bool>("verbose").ok().flatten().copied().unwrap_or(false);
    Ok((options, inputs, verbose))
}

fn input_command(plugin: &RegisteredPlugin, input_fields: &[Field]) -> Command {
    let mut command = Command::new(format!("plugd run {}", plugin.id()))
        .no_binary_name(true)
        .disable_help_flag(true)
        .disable_version_flag(true);
    command = RunOptions::augment_args(command);
    // `-v` after the plugin name is plugd's, unless the plugin has an input of that name
    // (`plugd -v run ...` always works).
    if !input_fields.iter().any(|f| flag_for(&f.name) == "verbose") {
        command = command.arg(Arg::new("verbose").short('v').long("verbose").action(ArgAction::SetTrue));
    }
    for field in input_fields {
        let flag = flag_for(&field.name);
        let mut arg = Arg::new(format!("input:{}", field.name)).long(flag.clone()).value_name(field.kind.value_name());
        if flag != field.name && !RESERVED.contains(&field.name.as_str()) {
            arg = arg.alias(field.name.clone());
        }
        arg = match &field.kind {
            // `--flag`, `--flag=false`, and `--flag true` (the qci-plugin form).
            Kind::Boolean => arg.num_args(0..=1).default_missing_value("true"),
            // `--from -1` is a value (no input flag looks like a number): validation judges it.
            Kind::Array(_) => arg.action(ArgAction::Append).allow_negative_numbers(true),
            _ => arg.action(ArgAction::Set).allow_negative_numbers(true),
        };
        if let Some(choices) = &field.choices {
            let names: Vec<String> = choices.iter().filter_map(|c| c.as_str().map(str::to_owned)).collect();
            if names.len() == choices.len() {
                arg = arg.value_parser(clap::builder::PossibleValuesParser::new(names));
            }
        }
        command = command.arg(arg);
    }
    command
}

fn field_value(matches: &ArgMatches, field: &Field, all: &[Field]) -> CliResult<Option<Value>> {
    let id = format!("input:{}", field.name);
    let Some(raws) = matches.get_many::<String>(&id) else {
        return Ok(None);
    };
    let raws: Vec<&str> = raws.map(String::as_str).collect();
    let invalid = |raw: &str, e: String| {
        let flag = format!("--{} <{}>", flag_for(&field.name), field.kind.value_name());
        usage_with_fields(format!("invalid value '{raw}' for '{flag}': {e}"), "inputs", all, true)
    };
    let value = match &field.kind {
        Kind::Array(item) => parse_array(item, &raws).map_err(|(raw, e)| invalid(&raw, e))?,
        kind => {
            let raw = raws.last().copied().unwrap_or_default();
            parse_value(kind, raw).map_err(|e| invalid(raw, e))?
        }
    };
    Ok(Some(value))
}

/// A usage error followed by the list of accepted fields.
fn usage_with_fields(message: String, what: &str, fields: &[Field], as_flags: bool) -> CliError {
    let mut text = format!("{message}\n\naccepted {what}:\n");
    if fields.is_empty() {
        text.push_str("  (none)\n");
    }
    for line in field_lines(fields, as_flags) {
        text.push_str(&format!("  {line}\n"));
    }
    CliError::Usage(text.trim_end().to_owned())
}

fn is_stdin(path: &Option<PathBuf>) -> bool {
    path.as_deref() == Some(Path::new("-"))
}

fn read_json_object(path: &Path, flag: &str) -> CliResult<Map<String, Value>> {
    let (name, text) = if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| CliError::Usage(format!("{flag}: cannot read standard input: {e}")))?;
        ("standard input".to_owned(), text)
    } else {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError::Usage(format!("{flag}: cannot read {}: {e}", path.display())))?;
        (path.display().to_string(), text)
    };
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(CliError::Usage(format!("{flag}: {name} must hold a JSON object, not {}", json_kind(&other)))),
        Err(e) => Err(CliError::Usage(format!("{flag}: {name} is not valid JSON: {e}"))),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn format_duration(duration: Duration) -> String {
    if duration < Duration::from_secs(1) {
        format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
    } else {
        format!("{:.2} s", duration.as_secs_f64())
    }
}

/// Appends `outputs` to a Java properties file, one `KEY=VALUE` line each: text as it is, other
/// values as JSON; backslashes and line breaks escaped so that every value stays on its line.
fn append_properties(path: &Path, outputs: &Map<String, Value>) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut lines = String::new();
    for (key, value) in outputs {
        let text = match value {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        let escaped = text.replace('\\', "\\\\").replace('\n', "\\n").replace('\r', "\\r");
        lines.push_str(&format!("{key}={escaped}\n"));
    }
    std::fs::OpenOptions::new().create(true).append(true).open(path)?.write_all(lines.as_bytes())
}

fn print_result(invocation: &Invocation, elapsed: Duration, timed_out: Option<Duration>, as_json: bool) {
    let err = match timed_out {
        Some(limit) => {
            Some(format!("timed out after {} in state {}", humantime::format_duration(limit), invocation.state))
        }
        None => invocation.err.clone(),
    };
    if as_json {
        let result = json!({
            "trace_id": invocation.trace_id,
            "plugin": invocation.plugin,
            "version": invocation.version,
            "state": invocation.state.name(),
            "state_code": invocation.state.code(),
            "outputs": invocation.outputs,
            "err": err,
            "invoke_count": invocation.invoke_count,
            "duration_ms": (elapsed.as_secs_f64() * 1e6).round() / 1e3,
            "timed_out": timed_out.is_some(),
            "reports": invocation.reports,
        });
        println!("{result}");
        return;
    }
    let mut text = format!("state:        {}\n", invocation.state);
    if let Some(err) = err {
        text.push_str(&format!("error:        {err}\n"));
    }
    text.push_str(&format!("plugin:       {}@{}\n", invocation.plugin, invocation.version));
    text.push_str(&format!("trace_id:     {}\n", invocation.trace_id));
    text.push_str(&format!("invoke_count: {}\n", invocation.invoke_count));
    text.push_str(&format!("duration:     {}\n", format_duration(elapsed)));
    let outputs = serde_json::to_string_pretty(&invocation.outputs).unwrap_or_default();
    text.push_str(&format!("outputs:\n{outputs}\n"));
    if !invocation.reports.is_empty() {
        text.push_str("reports:\n");
        for report in &invocation.reports {
            let title = report.title.as_deref().unwrap_or("report");
            let mut line = format!("  - {title}");
            for detail in [&report.description, &report.url, &report.report_html].into_iter().flatten() {
                line.push_str(&format!(" | {detail}"));
            }
            text.push_str(&format!("{line}\n"));
        }
    }
    print!("{text}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use plugd_sdk::{Context, Empty, Meta, Outcome, Plugin, PluginError};
    use schemars::JsonSchema;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Deserialize, JsonSchema)]
    #[serde(rename_all = "lowercase")]
    #[allow(dead_code)]
    enum Mode {
        Fast,
        Safe,
    }

    #[derive(Deserialize, JsonSchema)]
    #[allow(dead_code)]
    struct Inputs {
        mode: Mode,
        #[serde(default)]
        dry_run: bool,
        #[serde(default)]
        tags: Vec<String>,
        #[serde(default)]
        ports: Vec<u16>,
        #[serde(default)]
        env: BTreeMap<String, String>,
        /// Collides with the runner's `--timeout`.
        timeout: Option<u64>,
    }

    struct Kinds;

    impl Plugin for Kinds {
        type Inputs = Inputs;
        type ContextInputs = Empty;
        type Outputs = Empty;
        const META: Meta = Meta::new("kinds", "1.0.0");
        async fn execute(&self, _: Inputs, _: &mut Context<Empty>) -> Result<Outcome, PluginError> {
            Ok(Outcome::Success)
        }
    }

    #[test]
    fn outputs_are_appended_as_properties_one_line_each() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ci.env");
        std::fs::write(&path, "A=0\n").unwrap();
        let outputs = json!({"text": "two\nlines\\", "n": 3, "list": ["a"]});
        append_properties(&path, outputs.as_object().unwrap()).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "A=0\ntext=two\\nlines\\\\\nn=3\nlist=[\"a\"]\n");
    }

    fn parse(args: &[&str]) -> Result<(RunOptions, Value), String> {
        let registry = Registry::builder().plugin(Kinds).build().unwrap();
        let plugin = registry.get("kinds", None).unwrap();
        let fields = fields(&plugin.schemas.inputs);
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        parse_inputs(&plugin, &fields, RunOptions::default(), &args)
            .map(|(options, inputs, _)| (options, Value::Object(inputs)))
            .map_err(|e| e.to_string().lines().next().unwrap_or_default().to_owned())
    }

    #[test]
    fn every_kind_of_flag() {
        let (options, inputs) = parse(&[
            "--mode",
            "safe",
            "--dry-run",
            "--tags",
            "a",
            "--tags",
            "b c",
            "--ports",
            "[80, 443]",
            "--ports",
            "8080",
            "--env",
            r#"{"A": "1"}"#,
            "--input-timeout",
            "30",
            "--timeout",
            "5s",
        ])
        .unwrap();
        assert_eq!(
            inputs,
            json!({"mode": "safe", "dry_run": true, "tags": ["a", "b c"], "ports": [80, 443, 8080], "env": {"A": "1"}, "timeout": 30})
        );
        assert_eq!(options.timeout, Some(Duration::from_secs(5)));
        assert_eq!(parse(&["--dry_run=false"]).unwrap().1, json!({"dry_run": false}));
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        assert_eq!(parse(&["--mode", "slow"]).unwrap_err(), "invalid value 'slow' for '--mode <STRING>'");
        assert_eq!(
            parse(&["--dry-run=perhaps"]).unwrap_err(),
            "invalid value 'perhaps' for '--dry-run <BOOL>': expected true or false"
        );
        assert_eq!(
            parse(&["--ports", "x"]).unwrap_err(),
            "invalid value 'x' for '--ports <INTEGER>': expected an integer"
        );
        assert_eq!(
            parse(&["--env", "A=1"]).unwrap_err(),
            "invalid value 'A=1' for '--env <JSON>': expected a JSON object"
        );
        assert_eq!(parse(&["--dry-run", "false"]).unwrap().1, json!({"dry_run": false}));
        assert_eq!(parse(&["--dry-run", "--mode", "fast"]).unwrap().1, json!({"dry_run": true, "mode": "fast"}));
    }
}
