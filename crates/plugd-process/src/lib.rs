/*!
Plugins in any language for plugd.

A folder is a plugin when it holds either:
- `plugin.yaml`: plugd's own manifest (id, version, JSON Schemas of inputs, outputs and context
  inputs, and an `entry` to start). The process speaks the process protocol (docs/process-protocol.md):
  the invocation as JSON on stdin, the answer in `$PLUGD_RESULT_FILE`, POLL and CALLBACK included.
- `qciplugin.yml`: a CODING CI plugin, run unchanged (`variables`, `entry.start` with `$var`
  placeholders, `entry.status`).

[`load`] turns a folder into a [`ProcessPlugin`], a [`plugd_sdk::DynPlugin`] like any Rust plugin;
[`home`] keeps installed plugins under `$PLUGD_HOME/plugins/<id>/<version>/`.

Safety: commands are argv lists (a command line is split with shell-words rules, never given to a
shell); the environment is cleared to an allowlist plus what the manifest declares; each execute has
a timeout that kills the whole process group; with a [`reaper`], nothing a plugin starts outlives
its execute (not even what left its process group); plugins may run as another user
([`PluginUser`]); output and result files are capped; plugd reads results only from the execute's
own temp folder, held open, and never through a symbolic link ([`plugd_sdk::beneath`]).
*/
#![deny(missing_docs)]

mod bk;
/// The built-in `command` plugin.
pub mod command;
/// The local registry of installed plugins.
pub mod home;
mod manifest;
mod plugin;
mod protocol;
mod qci;
pub mod reaper;
mod spawn;
mod user;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use plugd_sdk::{PluginInfo, PluginSchemas};

pub use bk::{install_bk, interpreter, is_bk_project, load_bk, BkPlugin, BkProject, PythonOptions, REPLACED_PACKAGES};
pub use plugin::{InstallError, ProcessOptions, ProcessPlugin};
pub use protocol::PROTOCOL_VERSION;
pub use user::{PluginUser, PluginUserError};

/// A plugin folder that could not be loaded: which file, which line, which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {}{message}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default(), field.as_ref().map(|f| format!("{f}: ")).unwrap_or_default())]
pub struct LoadError {
    /// The manifest (or folder).
    pub file: PathBuf,
    /// The 1-based line, when known.
    pub line: Option<usize>,
    /// The field, as a dotted path (`entry.start`).
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl LoadError {
    pub(crate) fn io(file: &Path, e: std::io::Error) -> LoadError {
        LoadError { file: file.to_owned(), line: None, field: None, message: format!("cannot read: {e}") }
    }

    pub(crate) fn yaml(file: &Path, e: &serde_yaml_ng::Error) -> LoadError {
        // An error at the end of the input (an unclosed bracket) is placed on the line after the
        // last: show the last line with text instead (the file is read again: an error path).
        let last = std::fs::read_to_string(file).ok().map(|text| last_line(&text));
        let line = e.location().map(|l| last.map_or(l.line(), |last| l.line().min(last)));
        // serde_yaml_ng repeats the position at the end of its message; the line is already shown.
        let message = e.to_string();
        let message = message.split(" at line ").next().unwrap_or(&message).to_owned();
        LoadError { file: file.to_owned(), line, field: None, message }
    }

    pub(crate) fn field(file: &Path, line: Option<usize>, field: &str, message: String) -> LoadError {
        LoadError { file: file.to_owned(), line, field: Some(field.to_owned()), message }
    }
}

/// The number of the last line of `text` that holds more than blanks (1 for an empty text).
fn last_line(text: &str) -> usize {
    text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()).last().map_or(1, |(i, _)| i + 1)
}

/// Whether `dir` holds a plugin manifest.
pub fn is_plugin_dir(dir: &Path) -> bool {
    dir.join("plugin.yaml").is_file() || dir.join("qciplugin.yml").is_file()
}

/// Loads the plugin in `dir` (`plugin.yaml` first, then `qciplugin.yml`).
pub fn load(dir: &Path, options: ProcessOptions) -> Result<Arc<ProcessPlugin>, LoadError> {
    let dir = dir.canonicalize().map_err(|e| LoadError::io(dir, e))?;
    // A plugin without a description is described by its display name.
    let described = |description: String, name: String| if description.is_empty() { name } else { description };
    let (info, schemas, entry, install, timeout) = if dir.join("plugin.yaml").is_file() {
        let m = manifest::load(&dir)?;
        let info = PluginInfo {
            name: m.id,
            version: m.version,
            description: described(m.description, m.name),
            enable_plugin_callback: m.enable_plugin_callback,
            form: None,
            origin: m.file.display().to_string(),
        };
        let schemas = PluginSchemas { inputs: m.inputs, context_inputs: m.context_inputs, outputs: m.outputs };
        let entry = plugin::Entry::Protocol {
            start: m.start,
            env: m.env.into_iter().collect(),
            passthrough: m.env_passthrough,
        };
        (info, schemas, entry, m.install, m.timeout.unwrap_or(options.default_timeout))
    } else if dir.join("qciplugin.yml").is_file() {
        let q = qci::load(&dir)?;
        let info = PluginInfo {
            name: q.id,
            version: q.version,
            description: described(q.description, q.name),
            enable_plugin_callback: false,
            form: None,
            origin: dir.join("qciplugin.yml").display().to_string(),
        };
        // qci plugins declare no context inputs or outputs schema.
        let empty = serde_json::json!({"type": "object", "properties": {}, "required": [], "definitions": {}});
        let schemas = PluginSchemas { inputs: q.inputs, context_inputs: empty.clone(), outputs: empty };
        // qciplugin.yml has no timeout field.
        (info, schemas, plugin::Entry::Qci(q.entry), q.install, options.default_timeout)
    } else {
        return Err(LoadError {
            file: dir,
            line: None,
            field: None,
            message: "no plugin here: expected plugin.yaml or qciplugin.yml".into(),
        });
    };
    Ok(Arc::new(ProcessPlugin { info, schemas, dir, entry, install, timeout, options }))
}

/// A plugin folder: a process plugin (`plugin.yaml`, `qciplugin.yml`), or a bk-plugin project
/// (one plugin version per class in `bk_plugin/versions/`).
#[derive(Debug, Clone)]
pub enum Folder {
    /// A process plugin.
    Process(Arc<ProcessPlugin>),
    /// A bk-plugin project.
    Bk(Arc<BkProject>),
}

impl Folder {
    /// The folder.
    pub fn dir(&self) -> &Path {
        match self {
            Folder::Process(plugin) => plugin.dir(),
            Folder::Bk(project) => project.dir(),
        }
    }

    /// Its plugin name.
    pub fn name(&self) -> String {
        match self {
            Folder::Process(plugin) => plugd_sdk::DynPlugin::info(&**plugin).name,
            Folder::Bk(project) => project.code().to_owned(),
        }
    }

    /// The plugin versions it holds.
    pub fn plugins(&self) -> Vec<Arc<dyn plugd_sdk::DynPlugin>> {
        match self {
            Folder::Process(plugin) => vec![plugin.clone() as Arc<dyn plugd_sdk::DynPlugin>],
            Folder::Bk(project) => project.plugins(),
        }
    }

    /// Prepares it to run in place: a process plugin's `install` commands; nothing for a bk-plugin
    /// project, whose `.venv/` (or `--python`) is used as it is.
    pub async fn install(&self) -> Result<(), InstallError> {
        match self {
            Folder::Process(plugin) => plugin.install().await,
            Folder::Bk(_) => Ok(()),
        }
    }
}

/// Whether `dir` holds a plugin of any kind: a manifest or a bk-plugin project.
pub fn is_any_plugin_dir(dir: &Path) -> bool {
    is_plugin_dir(dir) || is_bk_project(dir)
}

/// Loads the plugin folder `dir`, of any kind.
pub fn load_folder(dir: &Path, options: ProcessOptions, python: &PythonOptions) -> Result<Folder, LoadError> {
    if !is_plugin_dir(dir) && is_bk_project(dir) {
        return load_bk(dir, &options, python).map(Folder::Bk);
    }
    load(dir, options).map(Folder::Process)
}
