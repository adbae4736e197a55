//! Installed plugins under `$PLUGD_HOME/plugins/<id>/<version>/`, each with the sha256 of what was
//! installed in `.plugd-install.json`.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::{load, InstallError, LoadError, ProcessOptions};

/// Why an install or uninstall failed.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    /// The plugin does not load.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// An `install` command of the plugin failed.
    #[error(transparent)]
    Install(#[from] InstallError),
    /// An archive that could write outside its folder, or is not a plugin.
    #[error("refused archive {archive}: {reason}")]
    Archive {
        /// The archive.
        archive: PathBuf,
        /// Why.
        reason: String,
    },
    /// Already installed, not installed, or refused by the caller.
    #[error("{0}")]
    State(String),
    /// A file operation failed.
    #[error("{0}")]
    Io(String),
}

/// The plugd home: `$PLUGD_HOME`, else `$XDG_DATA_HOME/plugd`, else `~/.local/share/plugd`.
pub fn plugd_home() -> PathBuf {
    if let Some(home) = std::env::var_os("PLUGD_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(home);
    }
    if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(data).join("plugd");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share/plugd")
}

/// An installed plugin version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// Its id.
    pub id: String,
    /// Its version.
    pub version: String,
    /// Its folder.
    pub dir: PathBuf,
    /// The sha256 of its files, as installed.
    pub sha256: String,
}

fn io(context: &str, e: impl std::fmt::Display) -> HomeError {
    HomeError::Io(format!("{context}: {e}"))
}

/// The sha256 of a folder: every regular file's relative path and content, in path order.
pub fn tree_sha256(dir: &Path) -> Result<String, HomeError> {
    let mut files = Vec::new();
    collect_files(dir, dir, &mut files)?;
    files.sort();
    let mut hasher = Sha256::new();
    for relative in files {
        let bytes = std::fs::read(dir.join(&relative)).map_err(|e| io(&relative.display().to_string(), e))?;
        hasher.update(relative.to_string_lossy().as_bytes());
        hasher.update([0]);
        hasher.update(Sha256::digest(&bytes));
    }
    Ok(hex::encode(hasher.finalize()))
}

fn collect_files(root: &Path, dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), HomeError> {
    for entry in std::fs::read_dir(dir).map_err(|e| io(&dir.display().to_string(), e))? {
        let entry = entry.map_err(|e| io(&dir.display().to_string(), e))?;
        let kind = entry.file_type().map_err(|e| io(&entry.path().display().to_string(), e))?;
        let relative = entry.path().strip_prefix(root).unwrap_or(&entry.path()).to_owned();
        if relative == Path::new(".plugd-install.json") {
            continue;
        }
        if kind.is_dir() {
            collect_files(root, &entry.path(), files)?;
        } else if kind.is_file() {
            files.push(relative);
        }
    }
    Ok(())
}

/// What a folder holds that is not the plugin: version control, build output, Python's caches.
fn not_plugin(name: &std::ffi::OsStr, is_dir: bool) -> bool {
    if is_dir {
        return [".git", "target", "__pycache__"].iter().any(|n| name == *n);
    }
    Path::new(name).extension().is_some_and(|e| e == "pyc" || e == "pyo")
}

/// Copies a plugin folder, but for what [`not_plugin`] names; a symbolic link is copied only if
/// it stays inside the folder.
fn copy_dir(source: &Path, target: &Path, root: &Path) -> Result<(), HomeError> {
    std::fs::create_dir_all(target).map_err(|e| io(&target.display().to_string(), e))?;
    for entry in std::fs::read_dir(source).map_err(|e| io(&source.display().to_string(), e))? {
        let entry = entry.map_err(|e| io(&source.display().to_string(), e))?;
        let kind = entry.file_type().map_err(|e| io(&entry.path().display().to_string(), e))?;
        let to = target.join(entry.file_name());
        if not_plugin(&entry.file_name(), kind.is_dir()) {
            continue;
        }
        if kind.is_dir() {
            copy_dir(&entry.path(), &to, root)?;
        } else if kind.is_symlink() {
            let resolved = entry.path().canonicalize().map_err(|e| io(&entry.path().display().to_string(), e))?;
            if !resolved.starts_with(root) {
                return Err(HomeError::Io(format!("{} links outside the plugin folder", entry.path().display())));
            }
            std::fs::copy(&resolved, &to).map_err(|e| io(&to.display().to_string(), e))?;
        } else {
            std::fs::copy(entry.path(), &to).map_err(|e| io(&to.display().to_string(), e))?;
        }
    }
    Ok(())
}

/// The most an archive may unpack to.
const MAX_UNPACKED: u64 = 512 * 1024 * 1024;
/// The most entries an archive may hold.
const MAX_ENTRIES: usize = 100_000;

/// Unpacks a `.tar.gz` into `into`, refusing absolute paths, `..`, and links that leave the folder.
pub fn unpack_archive(archive: &Path, into: &Path) -> Result<(), HomeError> {
    let refuse = |reason: String| HomeError::Archive { archive: archive.to_owned(), reason };
    let file = std::fs::File::open(archive).map_err(|e| refuse(format!("cannot open: {e}")))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let entries = tar.entries().map_err(|e| refuse(format!("not a tar.gz archive: {e}")))?;
    let (mut total, mut count) = (0u64, 0usize);
    for entry in entries {
        let mut entry = entry.map_err(|e| refuse(format!("not a tar.gz archive: {e}")))?;
        total += entry.header().size().unwrap_or(0);
        count += 1;
        if total > MAX_UNPACKED || count > MAX_ENTRIES {
            return Err(refuse(format!("it unpacks to more than {} MiB or {MAX_ENTRIES} entries", MAX_UNPACKED >> 20)));
        }
        let path = entry.path().map_err(|e| refuse(e.to_string()))?.into_owned();
        if path.is_absolute()
            || path.components().any(|c| matches!(c, Component::ParentDir | Component::RootDir | Component::Prefix(_)))
        {
            return Err(refuse(format!("entry {} would be written outside the folder", path.display())));
        }
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry.link_name().map_err(|e| refuse(e.to_string()))?.unwrap_or_default().into_owned();
            let base =
                if kind.is_symlink() { path.parent().unwrap_or(Path::new("")).to_owned() } else { PathBuf::new() };
            if target.is_absolute() || escapes(&base.join(&target)) {
                return Err(refuse(format!(
                    "link {} -> {} points outside the folder",
                    path.display(),
                    target.display()
                )));
            }
        } else if !(kind.is_file() || kind.is_dir()) {
            return Err(refuse(format!("entry {} is neither a file, a folder nor a link", path.display())));
        }
        entry.unpack_in(into).map_err(|e| refuse(format!("cannot unpack {}: {e}", path.display())))?;
    }
    Ok(())
}

/// Whether a relative path climbs above its start.
fn escapes(path: &Path) -> bool {
    let mut depth = 0i32;
    for component in path.components() {
        match component {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return true,
        }
        if depth < 0 {
            return true;
        }
    }
    false
}

/// The plugin folder inside an unpacked archive: its root, or its single top-level folder.
fn plugin_root(unpacked: &Path) -> Option<PathBuf> {
    if crate::is_plugin_dir(unpacked) {
        return Some(unpacked.to_owned());
    }
    let entries: Vec<PathBuf> = std::fs::read_dir(unpacked).ok()?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    match entries.as_slice() {
        [only] if only.is_dir() && crate::is_plugin_dir(only) => Some(only.clone()),
        _ => None,
    }
}

/// Installs a plugin folder or `.tar.gz` archive, runs its `install` commands, and records its sha256.
///
/// `refuse` sees the plugin before anything is copied and may refuse it with a reason (the command
/// line refuses the name and version of a built-in plugin, which would shadow it).
pub async fn install(
    home: &Path,
    source: &Path,
    force: bool,
    refuse: impl Fn(&plugd_sdk::PluginInfo) -> Option<String>,
) -> Result<Installed, HomeError> {
    let unpacked = tempfile::tempdir().map_err(|e| io("temp folder", e))?;
    let folder = if source.is_dir() {
        source.canonicalize().map_err(|e| io(&source.display().to_string(), e))?
    } else {
        unpack_archive(source, unpacked.path())?;
        plugin_root(unpacked.path()).ok_or_else(|| HomeError::Archive {
            archive: source.to_owned(),
            reason: "it holds no plugin.yaml or qciplugin.yml (at its root or in a single top-level folder)".into(),
        })?
    };
    let plugin = load(&folder, ProcessOptions::default())?;
    let info = plugd_sdk::DynPlugin::info(&*plugin);
    if let Some(reason) = refuse(&info) {
        return Err(HomeError::State(reason));
    }
    let target = home.join("plugins").join(&info.name).join(&info.version);
    // `1.0` and `1.0.0` are one version to the registry: one of them only.
    let same = plugd_sdk::parse_version(&info.version).ok();
    if let Some(other) = list(home)
        .into_iter()
        .find(|i| i.id == info.name && i.dir != target && plugd_sdk::parse_version(&i.version).ok() == same)
    {
        return Err(HomeError::State(format!(
            "{}@{} is already installed as version {}; uninstall {}@{} first",
            info.name, info.version, other.version, other.id, other.version
        )));
    }
    if target.exists() && !force {
        return Err(HomeError::State(format!(
            "{}@{} is already installed in {}; uninstall it first, or use --force",
            info.name,
            info.version,
            target.display()
        )));
    }
    let parent = home.join("plugins").join(&info.name);
    let staging = parent.join(format!(".{}.partial", info.version));
    let previous = parent.join(format!(".{}.previous", info.version));
    let _ = std::fs::remove_dir_all(&staging);
    copy_dir(&folder, &staging, &folder)?;
    let sha256 = tree_sha256(&staging)?;
    let record = serde_json::json!({"id": info.name, "version": info.version, "sha256": sha256, "source": source.display().to_string()});
    std::fs::write(staging.join(".plugd-install.json"), record.to_string()).map_err(|e| io("install record", e))?;
    // The install commands run where the plugin will live (paths they record stay true); a failed
    // install puts back what was there.
    let _ = std::fs::remove_dir_all(&previous);
    if target.exists() {
        std::fs::rename(&target, &previous).map_err(|e| io(&target.display().to_string(), e))?;
    }
    std::fs::rename(&staging, &target).map_err(|e| io(&target.display().to_string(), e))?;
    let installed =
        load(&target, ProcessOptions { workspace: target.clone(), echo: true, ..ProcessOptions::default() })?;
    if let Err(e) = installed.install().await {
        let _ = std::fs::remove_dir_all(&target);
        if previous.exists() {
            let _ = std::fs::rename(&previous, &target);
        }
        return Err(HomeError::Install(e));
    }
    let _ = std::fs::remove_dir_all(&previous);
    Ok(Installed { id: info.name, version: info.version, dir: target, sha256 })
}

/// Every installed plugin version, by id then version.
pub fn list(home: &Path) -> Vec<Installed> {
    let mut found = Vec::new();
    let Ok(ids) = std::fs::read_dir(home.join("plugins")) else { return found };
    for id in ids.flatten() {
        let Ok(versions) = std::fs::read_dir(id.path()) else { continue };
        for version in versions.flatten() {
            let name = version.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let record: serde_json::Value = std::fs::read_to_string(version.path().join(".plugd-install.json"))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default();
            found.push(Installed {
                id: id.file_name().to_string_lossy().into_owned(),
                version: name,
                dir: version.path(),
                sha256: record["sha256"].as_str().unwrap_or_default().to_owned(),
            });
        }
    }
    found.sort_by(|a, b| {
        (&a.id, plugd_sdk::parse_version(&a.version).ok()).cmp(&(&b.id, plugd_sdk::parse_version(&b.version).ok()))
    });
    found
}

/// Loads every installed plugin (every version of an installed bk-plugin project, run by its own
/// `.venv/`); the ones that no longer load are returned as errors.
pub fn load_installed(
    home: &Path,
    options: &ProcessOptions,
    python: &crate::PythonOptions,
) -> (Vec<Arc<dyn plugd_sdk::DynPlugin>>, Vec<LoadError>) {
    let (mut plugins, mut errors) = (Vec::new(), Vec::new());
    for installed in list(home) {
        match crate::load_folder(&installed.dir, options.clone(), python) {
            Ok(folder) => plugins.extend(folder.plugins()),
            Err(e) => errors.push(e),
        }
    }
    (plugins, errors)
}

/// Removes `id@version`; the error lists what is installed.
pub fn uninstall(home: &Path, id: &str, version: &str) -> Result<Installed, HomeError> {
    let all = list(home);
    let Some(found) = all.iter().find(|i| i.id == id && i.version == version).cloned() else {
        let available: Vec<String> = all.iter().map(|i| format!("{}@{}", i.id, i.version)).collect();
        let available = if available.is_empty() { "none".to_owned() } else { available.join(", ") };
        return Err(HomeError::State(format!("{id}@{version} is not installed; installed: {available}")));
    };
    std::fs::remove_dir_all(&found.dir).map_err(|e| io(&found.dir.display().to_string(), e))?;
    let _ = std::fs::remove_dir(home.join("plugins").join(id));
    Ok(found)
}
