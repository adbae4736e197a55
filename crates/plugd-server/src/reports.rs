//! Report files: read from where the plugin wrote them into the store (capped), so they outlive
//! the plugin's workspace and any node serves them, and served back with a restrictive
//! content-security policy.
//!
//! A report names files inside the workspace only, and they are read with the rule of
//! [`plugd_sdk::beneath`]: no `..`, no absolute path outside it, no symbolic link on the way, only
//! regular files (never a FIFO, a device, or a file of procfs or sysfs).

use std::fs::File;
use std::path::{Component, Path, PathBuf};

use plugd_core::store::ReportFile;
use plugd_sdk::beneath::{Beneath, BeneathError, EntryKind};
use plugd_sdk::Report;
use serde_json::{json, Map, Value};

/// How report files are taken: each one kept as `<invoke_count>-<n>/<path below its folder>`.
#[derive(Debug, Clone)]
pub(crate) struct ReportFiles {
    /// The folder report files must be in (relative report paths are relative to it).
    pub(crate) workspace: PathBuf,
    /// Most bytes kept per report.
    pub(crate) cap: u64,
}

/// The policy of every served report file: its own files only, no scripts, sandboxed.
pub(crate) const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; font-src 'self'; sandbox";

impl ReportFiles {
    /// Reads the files of `reports`; returns what the store keeps for each report, and the files.
    pub(crate) fn persist(
        &self,
        trace_id: &str,
        invoke_count: u32,
        reports: &[Report],
    ) -> (Vec<Value>, Vec<ReportFile>) {
        let mut files = Vec::new();
        let kept = reports
            .iter()
            .enumerate()
            .map(|(n, report)| {
                let mut kept = Map::new();
                for (key, value) in
                    [("title", &report.title), ("description", &report.description), ("url", &report.url)]
                {
                    if let Some(value) = value {
                        kept.insert(key.into(), json!(value));
                    }
                }
                if let Some(html) = &report.report_html {
                    let key = format!("{invoke_count}-{}", n + 1);
                    match self.copy(&key, html, report.report_dir.as_deref()) {
                        Ok((index, taken)) => {
                            kept.insert("html".into(), json!(format!("{key}/{index}")));
                            files.extend(taken);
                        }
                        Err(e) => {
                            tracing::warn!(%trace_id, "report files not kept: {e}");
                            kept.insert("error".into(), json!(format!("report files not kept: {e}")));
                        }
                    }
                }
                Value::Object(kept)
            })
            .collect();
        (kept, files)
    }

    /// Reads one report's files; returns the index page's path below the report's folder, and the
    /// files, each named `<key>/<path>`.
    fn copy(&self, key: &str, html: &str, dir: Option<&str>) -> Result<(String, Vec<ReportFile>), String> {
        let workspace = Beneath::open(&self.workspace)
            .map_err(|e| format!("cannot open the workspace {}: {e}", self.workspace.display()))?;
        let mut taken = Vec::new();
        let mut budget = Budget { left: self.cap, cap: self.cap };
        match dir {
            Some(dir) => {
                let folder = workspace.dir(Path::new(dir)).map_err(|e| refused("report_dir", dir, e))?;
                let html_path = Path::new(html);
                let index = html_path.strip_prefix(dir).unwrap_or(html_path);
                let index = safe_relative(index)
                    .ok_or_else(|| format!("report_html {html:?} is not inside report_dir {dir:?}"))?;
                folder.file(&index).map_err(|e| refused("report_html", html, e))?;
                copy_tree(&folder, key, &mut taken, &mut budget)?;
                Ok((slash_path(&index), taken))
            }
            None => {
                let name = Path::new(html).file_name().ok_or_else(|| format!("report_html {html:?} names no file"))?;
                let file = workspace.file(Path::new(html)).map_err(|e| refused("report_html", html, e))?;
                let name = name.to_string_lossy().into_owned();
                taken.push(ReportFile { path: format!("{key}/{name}"), content: read_file(file, &mut budget)? });
                Ok((name, taken))
            }
        }
    }
}

/// The key of a report file as the store keeps it, for `path` as a caller asked for it, if it is
/// safely inside the report (no `..`, no root).
pub(crate) fn stored_path(path: &str) -> Option<String> {
    safe_relative(Path::new(path)).map(|p| slash_path(&p))
}

fn slash_path(path: &Path) -> String {
    path.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")
}

/// `path` without `..`, root or prefix components, or `None`.
fn safe_relative(path: &Path) -> Option<PathBuf> {
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!clean.as_os_str().is_empty()).then_some(clean)
}

/// Why a report's path was refused.
fn refused(field: &str, path: &str, error: BeneathError) -> String {
    match error {
        BeneathError::Outside => format!("{field} {path:?} is outside the workspace"),
        error => format!("{field} {path:?} {error}"),
    }
}

/// Bytes left of the cap of one report.
struct Budget {
    left: u64,
    cap: u64,
}

/// Reads an open report file, within the budget.
fn read_file(file: File, budget: &mut Budget) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let too_large = |cap: u64| format!("the report is larger than the limit of {cap} bytes");
    let length = file.metadata().map_err(|e| format!("cannot read a report file: {e}"))?.len();
    if length > budget.left {
        return Err(too_large(budget.cap));
    }
    // A file still growing is cut at the budget, and refused.
    let mut content = Vec::with_capacity(length as usize);
    file.take(budget.left + 1).read_to_end(&mut content).map_err(|e| format!("cannot read a report file: {e}"))?;
    let read = content.len() as u64;
    if read > budget.left {
        return Err(too_large(budget.cap));
    }
    budget.left -= read;
    Ok(content)
}

/// Reads regular files and folders below `source`, naming each `<prefix>/<path>`; symbolic links
/// and special files are skipped, never followed.
fn copy_tree(source: &Beneath, prefix: &str, taken: &mut Vec<ReportFile>, budget: &mut Budget) -> Result<(), String> {
    let entries = source.entries().map_err(|e| format!("cannot read {}: {e}", source.path().display()))?;
    for (name, kind) in entries {
        let path = format!("{prefix}/{}", name.to_string_lossy());
        match kind {
            EntryKind::Dir => {
                // Changed into something else since it was listed: skipped like a link.
                let Ok(folder) = source.dir(Path::new(&name)) else { continue };
                copy_tree(&folder, &path, taken, budget)?;
            }
            EntryKind::File => {
                let Ok(file) = source.file(Path::new(&name)) else { continue };
                taken.push(ReportFile { path, content: read_file(file, budget)? });
            }
            EntryKind::Other => {}
        }
    }
    Ok(())
}

/// The content type of a report file, by extension.
pub(crate) fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("txt" | "log") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside() {
        assert_eq!(safe_relative(Path::new("1-1/index.html")), Some(PathBuf::from("1-1/index.html")));
        assert_eq!(safe_relative(Path::new("./a/./b")), Some(PathBuf::from("a/b")));
        for bad in ["../x", "a/../../x", "/etc/passwd", ""] {
            assert_eq!(safe_relative(Path::new(bad)), None, "{bad}");
        }
    }

    fn paths(files: &[ReportFile]) -> Vec<&str> {
        let mut paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        paths.sort_unstable();
        paths
    }

    #[test]
    fn files_are_read_with_a_cap_and_links_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir_all(out.join("css")).unwrap();
        std::fs::write(out.join("index.html"), "<h1>ok</h1>").unwrap();
        std::fs::write(out.join("css/site.css"), "h1{}").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", out.join("leak")).unwrap();
        let files = ReportFiles { workspace: dir.path().to_owned(), cap: 1024 };
        let trace = "0123456789abcdef0123456789abcdef";
        let html = out.join("index.html").display().to_string();
        let (kept, taken) = files.persist(
            trace,
            2,
            &[
                Report {
                    report_html: Some(html.clone()),
                    report_dir: Some(out.display().to_string()),
                    ..Report::default()
                },
                Report { description: Some("plain".into()), ..Report::default() },
            ],
        );
        assert_eq!(kept, [json!({"html": "2-1/index.html"}), json!({"description": "plain"})]);
        assert_eq!(paths(&taken), ["2-1/css/site.css", "2-1/index.html"], "links are not followed");
        let small = ReportFiles { workspace: dir.path().to_owned(), cap: 4 };
        let (kept, taken) = small.persist(trace, 1, &[Report { report_html: Some(html), ..Report::default() }]);
        assert!(kept[0]["error"].as_str().unwrap().contains("larger than the limit"), "{kept:?}");
        assert!(taken.is_empty());
        assert_eq!(stored_path("./2-1//css/site.css").as_deref(), Some("2-1/css/site.css"));
        assert_eq!(stored_path("../../etc/passwd"), None);
    }

    #[test]
    fn report_files_must_be_regular_files_inside_the_workspace() {
        let workspace = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let ws = workspace.path();
        std::fs::write(outside.path().join("secret.html"), "secret").unwrap();
        std::fs::write(ws.join("ok.html"), "<h1>ok</h1>").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret.html"), ws.join("link.html")).unwrap();
        std::os::unix::fs::symlink(outside.path(), ws.join("linked")).unwrap();
        let fifo = std::process::Command::new("mkfifo").arg(ws.join("pipe.html")).status().unwrap();
        assert!(fifo.success());
        let files = ReportFiles { workspace: ws.to_owned(), cap: 1024 };
        let html = |path: &str| Report { report_html: Some(path.into()), ..Report::default() };
        let secret = outside.path().join("secret.html").display().to_string();
        let inside = ws.join("ok.html").display().to_string();
        let reports = [
            html("/proc/self/environ"),
            html("../secret.html"),
            html(&secret),
            html("link.html"),
            html("linked/secret.html"),
            html("pipe.html"),
            Report { report_html: Some("index.html".into()), report_dir: Some("linked".into()), ..Report::default() },
            html("ok.html"),
            html(&inside),
        ];
        let trace = "0123456789abcdef0123456789abcdef";
        let (kept, taken) = files.persist(trace, 1, &reports);
        let errors: Vec<&str> = kept.iter().filter_map(|k| k["error"].as_str()).collect();
        let not_kept = |why: &str| format!("report files not kept: {why}");
        assert_eq!(
            errors,
            [
                not_kept("report_html \"/proc/self/environ\" is outside the workspace"),
                not_kept("report_html \"../secret.html\" is outside the workspace"),
                not_kept(&format!("report_html {secret:?} is outside the workspace")),
                not_kept("report_html \"link.html\" is (or passes through) a symbolic link"),
                not_kept("report_html \"linked/secret.html\" is (or passes through) a symbolic link"),
                not_kept("report_html \"pipe.html\" is not a regular file"),
                not_kept("report_dir \"linked\" is (or passes through) a symbolic link"),
            ]
        );
        assert_eq!(kept[7], json!({"html": "1-8/ok.html"}));
        assert_eq!(kept[8], json!({"html": "1-9/ok.html"}));
        assert_eq!(paths(&taken), ["1-8/ok.html", "1-9/ok.html"], "nothing is kept of a refused report");
        assert_eq!(taken[0].content, b"<h1>ok</h1>");
    }
}
