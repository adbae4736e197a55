//! `plugd dev`: `plugd serve` for a plugin author: the given plugin folders plus the built-in
//! plugins, a database in a temporary folder (unless `--db`), open on loopback, and the URL of the
//! debug panel printed.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser};
use plugd_core::RegistryBuilder;

use super::{serve, CliError, CliResult};

/// Arguments of `plugd dev`.
#[derive(Debug, Args)]
pub(crate) struct DevArgs {
    /// Plugin folders to serve beside the built-in plugins (plugin.yaml, qciplugin.yml or a
    /// bk-plugin project), or folders of them.
    #[arg(value_name = "PLUGIN_FOLDER")]
    folders: Vec<PathBuf>,
    /// The database to keep [default: one in a temporary folder, deleted on exit].
    #[arg(long)]
    db: Option<String>,
    /// A loopback address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
}

/// `plugd serve`'s own arguments, parsed from the command line `plugd dev` builds.
#[derive(Debug, Parser)]
struct ServeCommand {
    #[command(flatten)]
    serve: serve::ServeArgs,
}

pub(crate) fn dev(plugins: RegistryBuilder, args: DevArgs, verbose: bool) -> CliResult {
    if !args.listen.ip().is_loopback() {
        return Err(CliError::Usage(format!(
            "--listen {}: plugd dev serves without credentials, on loopback only; use plugd serve with tokens \
             to listen beyond it",
            args.listen
        )));
    }
    let mut temp = None;
    let db = match &args.db {
        Some(db) => db.clone(),
        None => {
            // A new folder of a random name, created (never an existing one taken over: another user
            // could have planted one, with links to where the database and workspace would go) and
            // private (0700); removed on exit.
            let private = std::os::unix::fs::PermissionsExt::from_mode(0o700);
            let dir = tempfile::Builder::new().prefix("plugd-dev-").permissions(private).tempdir().map_err(|e| {
                CliError::Failed(anyhow::anyhow!("cannot create a folder in {}: {e}", std::env::temp_dir().display()))
            })?;
            let url = format!("sqlite://{}", dir.path().join("plugd.db").display());
            temp = Some(dir);
            url
        }
    };
    let mut argv: Vec<OsString> =
        vec!["plugd dev".into(), "--listen".into(), args.listen.to_string().into(), "--db".into(), db.into()];
    for folder in &args.folders {
        if !super::plugins::split_code(folder).1.is_dir() {
            return Err(CliError::Usage(format!("{}: not a folder", folder.display())));
        }
        argv.push("--plugins".into());
        argv.push(folder.clone().into_os_string());
    }
    let parsed = ServeCommand::try_parse_from(argv).map_err(|e| CliError::Usage(e.to_string()))?;
    let result = serve::serve(plugins, parsed.serve, verbose);
    drop(temp);
    result
}
