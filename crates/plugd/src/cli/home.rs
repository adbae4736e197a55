//! `plugd install`, `plugd uninstall` and `plugd new`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use plugd_process::home;

use super::{runtime, CliError, CliResult};

pub(crate) fn install(
    builtin: plugd_core::RegistryBuilder,
    source: &Path,
    force: bool,
    name: Option<String>,
) -> CliResult {
    if source.is_dir() && plugd_process::is_bk_project(source) && !plugd_process::is_plugin_dir(source) {
        return install_bk(source, force, name);
    }
    if name.is_some() {
        return Err(CliError::Usage(format!(
            "--name gives a bk-plugin project its code; {} is not one (its plugin.yaml or qciplugin.yml gives its id)",
            source.display()
        )));
    }
    let builtin = super::plugins::build(builtin)?;
    // A plugin with the id and version of a built-in one would never be found.
    let refuse = |info: &plugd_sdk::PluginInfo| {
        builtin
            .get(&info.name, Some(&info.version))
            .is_ok()
            .then(|| format!("{}@{} is a built-in plugin: choose another id or version", info.name, info.version))
    };
    let home_dir = home::plugd_home();
    let installed = runtime()?.block_on(home::install(&home_dir, source, force, refuse)).map_err(|e| match e {
        home::HomeError::Io(_) => CliError::Failed(anyhow::anyhow!("{e}")),
        _ => CliError::Usage(e.to_string()),
    })?;
    println!(
        "installed {}@{} in {} (sha256 {})",
        installed.id,
        installed.version,
        installed.dir.display(),
        installed.sha256
    );
    Ok(ExitCode::SUCCESS)
}

/// `plugd install ./project` of a bk-plugin project: a copy with its own `.venv/` and requirements.
fn install_bk(source: &Path, force: bool, name: Option<String>) -> CliResult {
    let options = super::plugins::process_options(super::plugins::RunFor::User, &[])?;
    let python = plugd_process::PythonOptions { name, ..super::plugins::python_options()? };
    let home_dir = home::plugd_home();
    let (installed, project) = runtime()?
        .block_on(plugd_process::install_bk(&home_dir, source, force, &options, &python))
        .map_err(|e| match e {
            home::HomeError::Load(_) => CliError::Usage(e.to_string()),
            _ => CliError::Failed(anyhow::anyhow!("cannot install {}: {e}", source.display())),
        })?;
    let versions: Vec<String> = project.plugins().iter().map(|p| p.info().version).collect();
    println!(
        "installed {} (versions {}) in {} (sha256 {})",
        installed.id,
        versions.join(", "),
        installed.dir.display(),
        installed.sha256
    );
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn uninstall(spec: &str) -> CliResult {
    let home_dir = home::plugd_home();
    let (id, version) = match spec.split_once('@') {
        Some((id, version)) => (id.to_owned(), version.to_owned()),
        // One installed version: that one; several: which?
        None => {
            let all = home::list(&home_dir);
            let versions: Vec<String> = all.iter().filter(|i| i.id == spec).map(|i| i.version.clone()).collect();
            match versions.as_slice() {
                [only] => (spec.to_owned(), only.clone()),
                [] => {
                    let installed: Vec<String> = all.iter().map(|i| format!("{}@{}", i.id, i.version)).collect();
                    let installed = if installed.is_empty() { "none".to_owned() } else { installed.join(", ") };
                    return Err(CliError::Usage(format!("{spec} is not installed; installed: {installed}")));
                }
                [.., newest] => {
                    return Err(CliError::Usage(format!(
                        "{spec} has {} installed versions ({}): say which, e.g. plugd uninstall {spec}@{newest}",
                        versions.len(),
                        versions.join(", ")
                    )))
                }
            }
        }
    };
    let removed = home::uninstall(&home_dir, &id, &version).map_err(|e| CliError::Usage(e.to_string()))?;
    println!("uninstalled {}@{} from {}", removed.id, removed.version, removed.dir.display());
    Ok(ExitCode::SUCCESS)
}

/// The language of a new plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Lang {
    Rust,
    Python,
    Shell,
    /// A project in the layout of BlueKing's Python bk-plugin-framework, which runs on both.
    BkPython,
}

/// Arguments of `plugd new`.
#[derive(Debug, Args)]
pub(crate) struct NewArgs {
    /// The plugin's id (letters, digits, '-' and '_'); also the folder's name.
    name: String,
    /// The language of the project.
    #[arg(long, value_enum)]
    lang: Lang,
    /// Where to create the folder [default: ./<name>].
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// `plugd = { path = ... }` when this plugd's sources are on this machine, else the crates.io version.
fn plugd_dependency() -> String {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"));
    if source.join("Cargo.toml").is_file() {
        format!("{{ path = {:?} }}", source.display().to_string())
    } else {
        format!("{:?}", env!("CARGO_PKG_VERSION"))
    }
}

pub(crate) fn new(args: NewArgs) -> CliResult {
    let valid = args.name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && args.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        return Err(CliError::Usage(format!(
            "invalid plugin name {:?}: start with a letter; use letters, digits, '-' and '_'",
            args.name
        )));
    }
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(&args.name));
    if dir.exists() && std::fs::read_dir(&dir).map(|mut d| d.next().is_some()).unwrap_or(true) {
        return Err(CliError::Usage(format!("{} already exists and is not empty", dir.display())));
    }
    let files: Vec<(&str, &str)> = match args.lang {
        Lang::Shell => vec![
            ("plugin.yaml", include_str!("templates/shell.plugin.yaml")),
            ("run.sh", include_str!("templates/shell.run.sh")),
        ],
        Lang::Python => vec![
            ("plugin.yaml", include_str!("templates/python.plugin.yaml")),
            ("main.py", include_str!("templates/python.main.py")),
            ("plugd_plugin.py", include_str!("templates/python.plugd_plugin.py")),
        ],
        Lang::Rust => vec![
            ("Cargo.toml", include_str!("templates/rust.Cargo.toml")),
            ("src/main.rs", include_str!("templates/rust.main.rs")),
            ("src/plugin.rs", include_str!("templates/rust.plugin.rs")),
        ],
        Lang::BkPython => vec![
            ("bk_plugin/__init__.py", ""),
            ("bk_plugin/meta.py", include_str!("templates/bk-python.meta.py")),
            ("bk_plugin/versions/__init__.py", ""),
            ("bk_plugin/versions/v1_0_0.py", include_str!("templates/bk-python.v1_0_0.py")),
            ("bk_plugin/forms/1.0.0/form.js", include_str!("templates/bk-python.form.js")),
            ("requirements.txt", include_str!("templates/bk-python.requirements.txt")),
            ("app_desc.yml", include_str!("templates/bk-python.app_desc.yml")),
            ("Procfile", include_str!("templates/bk-python.Procfile")),
            ("bin/manage.py", include_str!("templates/bk-python.manage.py")),
            ("bin/post_compile", include_str!("templates/bk-python.post_compile")),
            (".gitignore", include_str!("templates/bk-python.gitignore")),
        ],
    };
    let dependency = plugd_dependency();
    for (name, template) in files {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| CliError::Failed(anyhow::anyhow!("{}: {e}", parent.display())))?;
        }
        let text = template.replace("{{name}}", &args.name).replace("{{plugd_dependency}}", &dependency);
        std::fs::write(&path, text).map_err(|e| CliError::Failed(anyhow::anyhow!("{}: {e}", path.display())))?;
        if name.starts_with("bin/") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| CliError::Failed(anyhow::anyhow!("{}: {e}", path.display())))?;
        }
    }
    let shown = if dir.is_relative() && !dir.starts_with(".") { Path::new(".").join(&dir) } else { dir.clone() };
    let next = match args.lang {
        Lang::Rust => format!("cd {} && cargo test && cargo run -- run {} --name world", shown.display(), args.name),
        Lang::BkPython => format!(
            "plugd install {shown} && plugd run {name} --name world (or, with pydantic in a Python of your \
             own: plugd --python PATH run {shown} --name world)",
            shown = shown.display(),
            name = args.name
        ),
        _ => format!("plugd run {} --name world", shown.display()),
    };
    let kind = match args.lang {
        Lang::BkPython => "bk-plugin project".to_owned(),
        lang => format!("{lang:?} plugin"),
    };
    println!("created {} ({kind} {})\nnext: {next}", dir.display(), args.name);
    Ok(ExitCode::SUCCESS)
}
