//! `plugd install ./project` for a bk-plugin project: a copy under `$PLUGD_HOME/plugins/<code>/<newest
//! version>/` with its own `.venv/`, holding the project's requirements less the packages plugd
//! replaces (pydantic added when nothing else brings it).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::home::{HomeError, Installed};
use crate::spawn::{self, Spawn};
use crate::{BkProject, ProcessOptions, PythonOptions, REPLACED_PACKAGES};

/// How long creating the virtualenv, or installing the requirements, may take.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The name of a requirement line (`Django>=4.2 ; python_version...` -> `django`), if it names one.
fn requirement_name(line: &str) -> Option<String> {
    let line = line.split('#').next().unwrap_or_default().trim();
    if line.is_empty() || line.starts_with('-') {
        return None;
    }
    let end =
        line.find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')).unwrap_or(line.len());
    Some(line[..end].to_ascii_lowercase().replace(['_', '.'], "-"))
}

/// The project's requirements.txt less the packages plugd replaces, plus pydantic if no line
/// names it, and, for a project with data-source views (`apis`), Django and Django REST framework
/// (which bk-plugin-runtime brought); and the lines left out.
pub(crate) fn requirements(text: &str, apis: bool) -> (String, Vec<String>) {
    let (mut kept, mut dropped, mut named) = (String::new(), Vec::new(), Vec::new());
    for line in text.lines() {
        match requirement_name(line) {
            Some(name) if REPLACED_PACKAGES.contains(&name.as_str()) => dropped.push(line.trim().to_owned()),
            name => {
                named.extend(name);
                kept.push_str(line);
                kept.push('\n');
            }
        }
    }
    let needed: &[&str] = if apis { &["pydantic", "django", "djangorestframework"] } else { &["pydantic"] };
    for package in needed {
        if !named.iter().any(|name| name == package) {
            kept.push_str(package);
            kept.push('\n');
        }
    }
    (kept, dropped)
}

/// Copies a project without its `.venv/`, `.git/` and `__pycache__/`; a symbolic link only if it
/// stays inside the project.
fn copy_project(source: &Path, target: &Path, root: &Path) -> Result<(), HomeError> {
    let io = |path: &Path, e: std::io::Error| HomeError::Io(format!("{}: {e}", path.display()));
    std::fs::create_dir_all(target).map_err(|e| io(target, e))?;
    for entry in std::fs::read_dir(source).map_err(|e| io(source, e))? {
        let entry = entry.map_err(|e| io(source, e))?;
        let (path, to) = (entry.path(), target.join(entry.file_name()));
        let kind = entry.file_type().map_err(|e| io(&path, e))?;
        if kind.is_dir() {
            if [".venv", ".git", "__pycache__"].iter().any(|skip| entry.file_name() == *skip) {
                continue;
            }
            copy_project(&path, &to, root)?;
        } else if kind.is_symlink() {
            let resolved = path.canonicalize().map_err(|e| io(&path, e))?;
            if !resolved.starts_with(root) {
                return Err(HomeError::Io(format!("{} links outside the project", path.display())));
            }
            if resolved.is_file() {
                std::fs::copy(&resolved, &to).map_err(|e| io(&to, e))?;
            }
        } else if kind.is_file() {
            std::fs::copy(&path, &to).map_err(|e| io(&to, e))?;
        }
    }
    Ok(())
}

/// Runs one install step, its output shown as it comes.
async fn step(argv: &[String], dir: &Path, options: &ProcessOptions, what: &str) -> Result<(), HomeError> {
    eprintln!("plugd: {what}");
    let env: Vec<(String, String)> =
        std::env::vars().filter(|(k, _)| !crate::spawn::WITHHELD_ENV.contains(&k.as_str())).collect();
    let finished = spawn::run(Spawn {
        argv,
        plugin_dir: dir,
        cwd: dir,
        env,
        stdin: Vec::new(),
        timeout: INSTALL_TIMEOUT,
        echo: true,
        reaper: options.reaper.as_deref(),
        user: None,
    })
    .await
    .map_err(HomeError::State)?;
    if finished.timed_out || finished.code != Some(0) {
        return Err(HomeError::State(format!(
            "{what} failed ({}): {}\n{}",
            crate::plugin::describe_exit(&finished),
            argv.join(" "),
            finished.tail
        )));
    }
    Ok(())
}

/// Installs the bk-plugin project `source` (a folder): copies it, creates its `.venv/` with
/// `python` (else `python3`), installs its requirements, and loads it from there.
pub async fn install_bk(
    home: &Path,
    source: &Path,
    force: bool,
    options: &ProcessOptions,
    python: &PythonOptions,
) -> Result<(Installed, Arc<BkProject>), HomeError> {
    let source = source.canonicalize().map_err(|e| HomeError::Io(format!("{}: {e}", source.display())))?;
    let code = super::project_code(&source, python.name.as_deref())?;
    let plugins = home.join("plugins");
    std::fs::create_dir_all(&plugins).map_err(|e| HomeError::Io(format!("{}: {e}", plugins.display())))?;
    let staging = plugins.join(format!(".{code}.partial"));
    let _ = std::fs::remove_dir_all(&staging);
    let cleanup = |e: HomeError| {
        let _ = std::fs::remove_dir_all(&staging);
        e
    };
    copy_project(&source, &staging, &source).map_err(cleanup)?;
    let sha256 = crate::home::tree_sha256(&staging).map_err(cleanup)?;
    let base = python.python.clone().unwrap_or_else(|| PathBuf::from("python3"));
    let venv = staging.join(".venv");
    let _ = std::fs::remove_dir_all(&venv);
    let argv = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let base_str = base.display().to_string();
    step(
        &argv(&[&base_str, "-m", "venv", ".venv"]),
        &staging,
        options,
        &format!("creating a virtualenv with {base_str}"),
    )
    .await
    .map_err(cleanup)?;
    let text = std::fs::read_to_string(staging.join("requirements.txt")).unwrap_or_default();
    let (kept, dropped) = requirements(&text, staging.join("bk_plugin/apis/urls.py").is_file());
    let file = staging.join(".plugd-requirements.txt");
    std::fs::write(&file, &kept).map_err(|e| cleanup(HomeError::Io(format!("{}: {e}", file.display()))))?;
    let names: Vec<String> = kept.lines().filter_map(requirement_name).collect();
    let what = if dropped.is_empty() {
        format!("installing {}", names.join(", "))
    } else {
        format!("installing {} (not {}: plugd replaces them)", names.join(", "), dropped.join(", "))
    };
    let pip = venv.join("bin/python").display().to_string();
    step(
        &argv(&[&pip, "-m", "pip", "install", "--disable-pip-version-check", "-r", ".plugd-requirements.txt"]),
        &staging,
        options,
        &what,
    )
    .await
    .map_err(cleanup)?;
    // Learn the versions with the new environment; the newest names the folder.
    let project =
        super::load_bk(&staging, options, &PythonOptions { python: None, name: Some(code.clone()), ..python.clone() })
            .map_err(|e| cleanup(HomeError::Load(e)))?;
    let newest = project
        .plugins()
        .iter()
        .map(|p| p.info().version)
        .max_by_key(|v| plugd_sdk::parse_version(v).ok())
        .unwrap_or_default();
    drop(project);
    let target = plugins.join(&code).join(&newest);
    let others: Vec<_> = crate::home::list(home).into_iter().filter(|i| i.id == code && i.dir != target).collect();
    if let Some(other) = others.first() {
        return Err(cleanup(HomeError::State(format!(
            "{code} is already installed as {}@{}; uninstall it first",
            other.id, other.version
        ))));
    }
    if target.exists() && !force {
        return Err(cleanup(HomeError::State(format!(
            "{code}@{newest} is already installed in {}; uninstall it first, or use --force",
            target.display()
        ))));
    }
    let record = serde_json::json!({"id": code, "version": newest, "sha256": sha256, "source": source.display().to_string(), "kind": "bk-plugin"});
    std::fs::write(staging.join(".plugd-install.json"), record.to_string())
        .map_err(|e| cleanup(HomeError::Io(format!("install record: {e}"))))?;
    let _ = std::fs::remove_dir_all(&target);
    std::fs::create_dir_all(plugins.join(&code)).map_err(|e| cleanup(HomeError::Io(e.to_string())))?;
    std::fs::rename(&staging, &target).map_err(|e| cleanup(HomeError::Io(format!("{}: {e}", target.display()))))?;
    let project =
        super::load_bk(&target, options, &PythonOptions { python: None, name: Some(code.clone()), ..python.clone() })?;
    Ok((Installed { id: code, version: newest, dir: target, sha256 }, project))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_framework_packages_are_replaced_and_pydantic_added() {
        let text = "# base\nbk-plugin-framework==2.3.15\nbk_plugin_runtime==2.1.9\nrequests>=2 # http\n-r other.txt\n";
        let (kept, dropped) = requirements(text, false);
        assert_eq!(kept, "# base\nrequests>=2 # http\n-r other.txt\npydantic\n");
        assert_eq!(dropped, ["bk-plugin-framework==2.3.15", "bk_plugin_runtime==2.1.9"]);
        assert_eq!(requirements("pydantic<2\n", false).0, "pydantic<2\n");
        // Data-source views need Django and DRF, which bk-plugin-runtime brought.
        assert_eq!(requirements("Django==4.2\n", true).0, "Django==4.2\npydantic\ndjangorestframework\n");
    }
}
