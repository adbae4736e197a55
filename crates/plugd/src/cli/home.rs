//! `plugd install`, `plugd uninstall` and `plugd new`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use plugd_process::home;

use super::{runtime, CliError, CliResult};

pub(crate) fn install(builtin: plugd_core::RegistryBuilder, source: &Path, force: bool) -> CliResult {
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

pub(crate) fn uninstall(spec: &str) -> CliResult {
    let Some((id, version)) = spec.split_once('@') else {
        return Err(CliError::Usage(format!("expected <id>@<version>, got {spec:?}")));
    };
    let removed = home::uninstall(&home::plugd_home(), id, version).map_err(|e| CliError::Usage(e.to_string()))?;
    println!("uninstalled {}@{} from {}", removed.id, removed.version, removed.dir.display());
    Ok(ExitCode::SUCCESS)
}

/// The language of a new plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Lang {
    Rust,
    Python,
    Shell,
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
    }
    let shown = if dir.is_relative() && !dir.starts_with(".") { Path::new(".").join(&dir) } else { dir.clone() };
    let next = match args.lang {
        Lang::Rust => format!("cd {} && cargo test && cargo run -- run {} --name world", shown.display(), args.name),
        _ => format!("plugd run {} --name world", shown.display()),
    };
    println!("created {} ({:?} plugin {})\nnext: {next}", dir.display(), args.lang, args.name);
    Ok(ExitCode::SUCCESS)
}
