//! Where the command line finds plugins: the ones it was built with, the installed ones
//! (`$PLUGD_HOME`), plugin folders given by path, and folders of plugin folders (`--plugins DIR`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use plugd_core::{Registry, RegistryBuilder};
use plugd_process::{home, PluginUser, ProcessOptions, ProcessPlugin};
use plugd_sdk::PluginInfo;

use super::{CliError, CliResult};

/// Whether a plugin argument names a folder rather than an id (`./x`, `../x`, `/x`, `x/`).
pub(crate) fn is_path(spec: &str) -> bool {
    spec.starts_with('.') || spec.contains('/') || Path::new(spec).is_dir()
}

/// How process plugins run: `echo` their output or not, with the default execute timeout from
/// `PLUGD_PROCESS_TIMEOUT` (10 minutes without it), under this binary as their reaper, and as
/// `plugin_user` if given (`--plugin-user`). The `command` plugin runs the same way.
pub(crate) fn process_options(echo: bool, plugin_user: Option<&str>) -> CliResult<ProcessOptions> {
    let mut options = ProcessOptions { echo, reaper: Some(reaper()), ..ProcessOptions::default() };
    if let Some(name) = plugin_user {
        let user = PluginUser::lookup(name).map_err(|e| CliError::Usage(format!("--plugin-user {name}: {e}")))?;
        options.plugin_user = Some(user);
    }
    if let Some(raw) = std::env::var("PLUGD_PROCESS_TIMEOUT").ok().filter(|raw| !raw.is_empty()) {
        options.default_timeout =
            super::parse_positive_duration(&raw).map_err(|e| CliError::Usage(format!("PLUGD_PROCESS_TIMEOUT: {e}")))?;
    }
    plugd_process::command::set_containment(&options);
    Ok(options)
}

/// This very binary, to run again as the reaper of plugin processes (`plugd::main` dispatches
/// its hidden argument): `/proc/self/exe`, which still runs it after the file was replaced or
/// deleted (an upgrade), else its path.
fn reaper() -> PathBuf {
    let proc_exe = Path::new("/proc/self/exe");
    if proc_exe.exists() {
        return proc_exe.to_owned();
    }
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from(std::env::args_os().next().unwrap_or_default()))
}

/// The plugin folder at `path`, as a usage error naming file and line when it does not load.
pub(crate) fn load_folder(path: &Path, options: &ProcessOptions) -> CliResult<Arc<ProcessPlugin>> {
    plugd_process::load(path, options.clone()).map_err(|e| CliError::Usage(e.to_string()))
}

/// Every plugin folder directly inside `dir`.
pub(crate) fn load_dir(dir: &Path, options: &ProcessOptions) -> CliResult<Vec<Arc<ProcessPlugin>>> {
    let entries = std::fs::read_dir(dir).map_err(|e| CliError::Usage(format!("--plugins {}: {e}", dir.display())))?;
    let mut folders: Vec<PathBuf> =
        entries.flatten().map(|e| e.path()).filter(|p| plugd_process::is_plugin_dir(p)).collect();
    folders.sort();
    folders.iter().map(|folder| load_folder(folder, options)).collect()
}

/// The built-in plugins plus the installed ones. An installed plugin that no longer loads, whose
/// schemas do not compile, or that has the name and version of one already there is reported and
/// skipped, so that one bad install never breaks every command.
pub(crate) fn with_installed(builder: RegistryBuilder, options: &ProcessOptions) -> RegistryBuilder {
    let (installed, errors) = home::load_installed(&home::plugd_home(), options);
    for error in errors {
        eprintln!("warning: skipping an installed plugin: {error}");
    }
    installed.into_iter().fold(builder, |builder, plugin| match builder.try_dyn_plugin(plugin) {
        Ok(builder) => builder,
        Err((builder, problem)) => {
            eprintln!("warning: skipping an installed plugin: {problem}");
            builder
        }
    })
}

/// The registry a plugin argument names a plugin in, the spec to look it up by, and the folder
/// plugin when the argument is a folder: then that plugin alone is there (looked up by its id);
/// otherwise the built-in and installed plugins are.
pub(crate) fn for_spec(
    builtin: RegistryBuilder,
    spec: &str,
    options: &ProcessOptions,
) -> CliResult<(Arc<Registry>, String, Option<Arc<ProcessPlugin>>)> {
    if !is_path(spec) {
        return Ok((build(with_installed(builtin, options))?, spec.to_owned(), None));
    }
    let plugin = load_folder(Path::new(spec), options)?;
    let id = plugd_sdk::DynPlugin::info(&*plugin).name;
    let registry = build(RegistryBuilder::default().dyn_plugin(plugin.clone()))?;
    Ok((registry, id, Some(plugin)))
}

/// The built-in and installed plugins plus the plugin folders inside each of `dirs`, which are
/// returned too (their install commands run before they serve).
pub(crate) fn with_dirs(
    builtin: RegistryBuilder,
    dirs: &[PathBuf],
    options: &ProcessOptions,
) -> CliResult<(RegistryBuilder, Vec<Arc<ProcessPlugin>>)> {
    let mut folders = Vec::new();
    for dir in dirs {
        folders.extend(load_dir(dir, options)?);
    }
    let builder = folders.iter().fold(with_installed(builtin, options), |b, p| b.dyn_plugin(p.clone()));
    Ok((builder, folders))
}

/// Checks the registry; a duplicate or invalid plugin is a usage error.
pub(crate) fn build(builder: RegistryBuilder) -> CliResult<Arc<Registry>> {
    builder.build().map(Arc::new).map_err(|e| CliError::Usage(e.to_string()))
}

/// Runs the `install` commands of process plugins.
pub(crate) async fn install_all(plugins: &[Arc<ProcessPlugin>]) -> CliResult<()> {
    for plugin in plugins {
        plugin.install().await.map_err(|e| CliError::Failed(anyhow::anyhow!("{}: {e}", plugin.dir().display())))?;
    }
    Ok(())
}

/// Where a plugin comes from, for `plugd list`.
pub(crate) fn source(info: &PluginInfo) -> &'static str {
    let origin = Path::new(&info.origin);
    if !origin.is_absolute() {
        "built-in"
    } else if origin.starts_with(home::plugd_home()) {
        "installed"
    } else {
        "folder"
    }
}
