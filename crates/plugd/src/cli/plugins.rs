//! Where the command line finds plugins: the ones it was built with, the installed ones
//! (`$PLUGD_HOME`), plugin folders given by path, and folders of plugin folders (`--plugins DIR`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use plugd_core::{Registry, RegistryBuilder};
use plugd_process::{home, Folder, PluginUser, ProcessOptions, PythonOptions};
use plugd_sdk::PluginInfo;

use super::{CliError, CliResult};

/// Whether a plugin argument names a folder rather than an id (`./x`, `../x`, `/x`, `x/`).
pub(crate) fn is_path(spec: &str) -> bool {
    spec.starts_with('.') || spec.contains('/') || Path::new(spec).is_dir() || split_code(Path::new(spec)).0.is_some()
}

/// Whom process plugins run for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunFor {
    /// The user at a terminal or in a CI job: `plugd run`, `plugd hooks`.
    User,
    /// Callers of `plugd serve`.
    Server,
}

/// How process plugins run for `caller`, with the default execute timeout from
/// `PLUGD_PROCESS_TIMEOUT` (10 minutes without it), under this binary as their reaper, and as
/// the users `plugin_users` names (`--plugin-user`: `NAME` for every plugin, `CODE=NAME` for one
/// plugin or bk-plugin project). The `command` plugin runs as the user for every plugin.
pub(crate) fn process_options(caller: RunFor, plugin_users: &[String]) -> CliResult<ProcessOptions> {
    // Run for the user (or their CI job): plugins show their output and see the caller's
    // environment, as any CI runner hands a step its job's. Served: neither.
    let for_user = caller == RunFor::User;
    let mut options =
        ProcessOptions { echo: for_user, inherit_env: for_user, reaper: Some(reaper()), ..ProcessOptions::default() };
    for given in plugin_users.iter().map(|u| u.trim()).filter(|u| !u.is_empty()) {
        let (code, name) = match given.split_once('=') {
            Some((code, name)) if plugd_core::is_valid_name(code) => (Some(code), name),
            Some(_) => return Err(CliError::Usage(format!("--plugin-user {given}: expected NAME or CODE=NAME"))),
            None => (None, given),
        };
        let user = PluginUser::lookup(name).map_err(|e| CliError::Usage(format!("--plugin-user {name}: {e}")))?;
        let taken = match code {
            Some(code) => options.users_by_code.insert(code.to_owned(), user).is_some(),
            None => options.plugin_user.replace(user).is_some(),
        };
        if taken {
            let whose = code.map_or_else(|| "every plugin".to_owned(), |code| format!("{code:?}"));
            return Err(CliError::Usage(format!("--plugin-user {given}: a user for {whose} is given twice")));
        }
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

/// The interpreter given with `--python`, for bk-plugin projects without a `.venv/`.
pub(crate) static PYTHON: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// How bk-plugin projects run: `--python` (else `PLUGD_PYTHON`), `PLUGD_PYTHON_HOSTS` hosts per
/// project, `PLUGD_PYTHON_THREADS` executes at once per host, `PLUGD_PYTHON_MEMORY` MiB per host
/// (1024 unless set: a project that runs away takes down its host, not the machine).
/// The default of `PLUGD_PYTHON_MEMORY`, in MiB.
const DEFAULT_PYTHON_MEMORY_MIB: u64 = 1024;

pub(crate) fn python_options() -> CliResult<PythonOptions> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let number = |name: &str| -> CliResult<Option<u64>> {
        var(name)
            .map(|raw| {
                raw.parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| CliError::Usage(format!("{name}: expected a positive number, got {raw:?}")))
            })
            .transpose()
    };
    // Hosts run in the project's folder: a relative path with a folder in it is made absolute here
    // (a bare name is looked up on PATH).
    let absolute = |path: PathBuf| match std::env::current_dir() {
        Ok(cwd) if path.is_relative() && path.components().count() > 1 => cwd.join(path),
        _ => path,
    };
    Ok(PythonOptions {
        python: PYTHON.get().cloned().or_else(|| var("PLUGD_PYTHON").map(PathBuf::from)).map(absolute),
        hosts: number("PLUGD_PYTHON_HOSTS")?.map(|n| n as usize),
        threads: number("PLUGD_PYTHON_THREADS")?.map(|n| n as usize),
        memory: Some(number("PLUGD_PYTHON_MEMORY")?.unwrap_or(DEFAULT_PYTHON_MEMORY_MIB).saturating_mul(1024 * 1024)),
        name: None,
    })
}

/// A folder argument as `CODE=PATH`: the plugin code of the bk-plugin project at `PATH` (which
/// else comes from its app_desc.yml or its folder's name), when `CODE` is a valid plugin name, the
/// argument itself is no folder and `PATH` is (`@VERSION` after it allowed, as `plugd run` takes).
/// A plain folder argument is `(None, path)`.
pub(crate) fn split_code(arg: &Path) -> (Option<String>, PathBuf) {
    let text = arg.to_string_lossy();
    if let Some((code, path)) = text.split_once('=') {
        let folder = path.rsplit_once('@').map_or(path, |(folder, _)| folder);
        if !arg.exists() && plugd_sdk::is_valid_name(code) && (Path::new(path).is_dir() || Path::new(folder).is_dir()) {
            return (Some(code.to_owned()), PathBuf::from(path));
        }
    }
    (None, arg.to_owned())
}

/// The plugin folder at `path` (or `CODE=PATH`, see [`split_code`]), as a usage error naming file
/// and line when it does not load.
pub(crate) fn load_folder(path: &Path, options: &ProcessOptions) -> CliResult<Folder> {
    let (code, path) = split_code(path);
    let bk_project = plugd_process::is_bk_project(&path) && !plugd_process::is_plugin_dir(&path);
    if code.is_some() && !bk_project {
        return Err(CliError::Usage(format!(
            "{}: CODE=PATH names a bk-plugin project's code; this folder is not one (its plugin.yaml gives its id)",
            path.display()
        )));
    }
    let python = PythonOptions { name: code, ..python_options()? };
    plugd_process::load_folder(&path, options.clone(), &python).map_err(|e| CliError::Usage(e.to_string()))
}

/// Every plugin folder (or bk-plugin project) directly inside `dir`.
pub(crate) fn load_dir(dir: &Path, options: &ProcessOptions) -> CliResult<Vec<Folder>> {
    let entries = std::fs::read_dir(dir).map_err(|e| CliError::Usage(format!("--plugins {}: {e}", dir.display())))?;
    let mut folders: Vec<PathBuf> =
        entries.flatten().map(|e| e.path()).filter(|p| plugd_process::is_any_plugin_dir(p)).collect();
    folders.sort();
    folders.iter().map(|folder| load_folder(folder, options)).collect()
}

/// The built-in plugins plus the installed ones. An installed plugin that no longer loads, whose
/// schemas do not compile, or that has the name and version of one already there is reported and
/// skipped, so that one bad install never breaks every command.
pub(crate) fn with_installed(builder: RegistryBuilder, options: &ProcessOptions) -> RegistryBuilder {
    let (installed, errors) = home::load_installed(&home::plugd_home(), options, &python_options().unwrap_or_default());
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
) -> CliResult<(Arc<Registry>, String, Option<Folder>)> {
    if !is_path(spec) {
        return Ok((build(with_installed(builtin, options))?, spec.to_owned(), None));
    }
    // `./project@1.1.0`: a version of a folder that holds several (a bk-plugin project).
    let (code, rest) = split_code(Path::new(spec));
    let rest = rest.to_string_lossy().into_owned();
    let (path, version) = match rest.rsplit_once('@') {
        Some((path, version)) if !Path::new(&rest).exists() && Path::new(path).is_dir() => (path, Some(version)),
        _ => (rest.as_str(), None),
    };
    let path = match &code {
        Some(code) => PathBuf::from(format!("{code}={path}")),
        None => PathBuf::from(path),
    };
    let folder = load_folder(&path, options)?;
    let registry = build(folder.plugins().into_iter().fold(RegistryBuilder::default(), |b, p| b.dyn_plugin(p)))?;
    let id = match version {
        Some(version) => format!("{}@{version}", folder.name()),
        None => folder.name(),
    };
    Ok((registry, id, Some(folder)))
}

/// The built-in and installed plugins plus the plugin folders inside each of `dirs`, which are
/// returned too (their install commands run before they serve).
pub(crate) fn with_dirs(
    builtin: RegistryBuilder,
    dirs: &[PathBuf],
    options: &ProcessOptions,
) -> CliResult<(RegistryBuilder, Vec<Folder>)> {
    let mut folders = Vec::new();
    for dir in dirs {
        // A plugin folder itself (as `plugd dev` passes them), or a folder of plugin folders.
        if plugd_process::is_any_plugin_dir(&split_code(dir).1) {
            folders.push(load_folder(dir, options)?);
        } else {
            folders.extend(load_dir(dir, options)?);
        }
    }
    let builder =
        folders.iter().flat_map(Folder::plugins).fold(with_installed(builtin, options), |b, p| b.dyn_plugin(p));
    Ok((builder, folders))
}

/// Checks the registry; a duplicate or invalid plugin is a usage error.
pub(crate) fn build(builder: RegistryBuilder) -> CliResult<Arc<Registry>> {
    builder.build().map(Arc::new).map_err(|e| CliError::Usage(e.to_string()))
}

/// Runs the `install` commands of process plugins.
pub(crate) async fn install_all(folders: &[Folder]) -> CliResult<()> {
    for folder in folders {
        folder.install().await.map_err(|e| CliError::Failed(anyhow::anyhow!("{}: {e}", folder.dir().display())))?;
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
