//! `plugd list`, `plugd describe`, and the help of `plugd run <plugin>`.

use std::process::ExitCode;

use plugd_core::{RegisteredPlugin, Registry};
use serde_json::{json, Value};

use super::inputs::{fields, Field};
use super::plugins::source;
use super::run::flag_for;
use super::table::aligned;
use super::{lookup, CliResult};

pub(crate) fn list(registry: &Registry, as_json: bool) -> CliResult {
    let rows: Vec<[String; 4]> = registry
        .names()
        .map(|name| {
            let newest = registry.get(name, None).ok();
            let description = newest.as_ref().map(|p| p.info.description.clone()).unwrap_or_default();
            let source = newest.as_ref().map_or("", |p| source(&p.info)).to_owned();
            [name.to_owned(), registry.versions(name).join(", "), source, description]
        })
        .collect();
    if as_json {
        let list: Vec<Value> = rows
            .iter()
            .map(|[name, _, source, description]| {
                json!({"name": name, "versions": registry.versions(name), "source": source, "description": description})
            })
            .collect();
        println!("{}", Value::Array(list));
        return Ok(ExitCode::SUCCESS);
    }
    let header = ["PLUGIN", "VERSIONS", "SOURCE", "DESCRIPTION"].map(str::to_owned);
    let table: Vec<[String; 4]> = std::iter::once(header).chain(rows).collect();
    for line in aligned(&table) {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn describe(registry: &Registry, spec: &str, as_json: bool) -> CliResult {
    let plugin = lookup(registry, spec)?;
    if as_json {
        let detail = json!({
            "name": plugin.info.name,
            "version": plugin.info.version,
            "desc": plugin.info.description,
            "enable_plugin_callback": plugin.info.enable_plugin_callback,
            "inputs": plugin.schemas.inputs,
            "outputs": plugin.schemas.outputs,
            "context_inputs": plugin.schemas.context_inputs,
            "forms": {"renderform": plugin.info.form},
        });
        println!("{}", serde_json::to_string_pretty(&detail).unwrap_or_default());
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", describe_text(&plugin, registry));
    Ok(ExitCode::SUCCESS)
}

/// The help of `plugd run <plugin> --help`.
pub(crate) fn plugin_help(plugin: &RegisteredPlugin, registry: &Registry) -> String {
    let mut text = format!("Usage: plugd run {}[@<VERSION>] [INPUTS] [OPTIONS]\n\n", plugin.info.name);
    text.push_str(&describe_text(plugin, registry));
    text.push_str(
        "\nOptions:\n  \
         --inputs-json <FILE>     Read inputs from a JSON object file ('-' for standard input)\n  \
         --context <KEY=VALUE>    Set a context input (repeatable)\n  \
         --context-json <FILE>    Read context inputs from a JSON object file ('-' for standard input)\n  \
         --json                   Print the result as one JSON object\n  \
         --timeout <DURATION>     Give up after this long (e.g. 30s, 5m): exit code 124\n  \
         -h, --help               Print this help\n",
    );
    text
}

fn describe_text(plugin: &RegisteredPlugin, registry: &Registry) -> String {
    let info = &plugin.info;
    let mut text = format!("{} {}", info.name, info.version);
    if !info.description.is_empty() {
        text.push_str(&format!(": {}", info.description));
    }
    text.push_str(&format!("\nversions: {}\n", registry.versions(&info.name).join(", ")));
    if info.enable_plugin_callback {
        text.push_str("finish callback: enabled (context input plugin_callback_info)\n");
    }
    let sections = [
        ("Inputs", &plugin.schemas.inputs, true),
        ("Context inputs (--context KEY=VALUE)", &plugin.schemas.context_inputs, false),
        ("Outputs", &plugin.schemas.outputs, false),
    ];
    for (title, schema, as_flags) in sections {
        text.push_str(&format!("\n{title}:\n"));
        let lines = field_lines(&fields(schema), as_flags);
        if lines.is_empty() {
            text.push_str("  (none)\n");
        }
        for line in lines {
            text.push_str(&format!("  {line}\n"));
        }
    }
    text
}

/// One aligned line per field: flag or name, type, requirement, description.
pub(crate) fn field_lines(fields: &[Field], as_flags: bool) -> Vec<String> {
    let rows: Vec<[String; 4]> = fields
        .iter()
        .map(|f| {
            let name =
                if as_flags { format!("--{} <{}>", flag_for(&f.name), f.kind.value_name()) } else { f.name.clone() };
            [name, f.type_label(), f.requirement(), f.description.clone().unwrap_or_default()]
        })
        .collect();
    aligned(&rows)
}
