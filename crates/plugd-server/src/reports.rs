//! Report files: copied from where the plugin wrote them into the server's own folder, so they
//! outlive the plugin's workspace, and served back with a restrictive content-security policy.

use std::path::{Component, Path, PathBuf};

use plugd_sdk::Report;
use serde_json::{json, Map, Value};

/// Where report files live: `<root>/<trace_id>/<invoke_count>-<n>/...`.
#[derive(Debug, Clone)]
pub(crate) struct ReportFiles {
    pub(crate) root: PathBuf,
    /// Most bytes kept per report.
    pub(crate) cap: u64,
}

/// The policy of every served report file: its own files only, no scripts, sandboxed.
pub(crate) const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; font-src 'self'; sandbox";

impl ReportFiles {
    /// Copies the files of `reports` and returns what the store keeps for each.
    pub(crate) fn persist(&self, trace_id: &str, invoke_count: u32, reports: &[Report]) -> Vec<Value> {
        reports
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
                    match self.copy(trace_id, &key, html, report.report_dir.as_deref()) {
                        Ok(index) => {
                            kept.insert("html".into(), json!(format!("{key}/{index}")));
                        }
                        Err(e) => {
                            tracing::warn!(%trace_id, "report files not kept: {e}");
                            kept.insert("error".into(), json!(format!("report files not kept: {e}")));
                        }
                    }
                }
                Value::Object(kept)
            })
            .collect()
    }

    /// Copies one report's files; returns the index page's path below the report's folder.
    fn copy(&self, trace_id: &str, key: &str, html: &str, dir: Option<&str>) -> Result<String, String> {
        let target = self.root.join(trace_id).join(key);
        std::fs::create_dir_all(&target).map_err(|e| format!("cannot create {}: {e}", target.display()))?;
        let mut budget = self.cap;
        match dir {
            Some(dir) => {
                let source = Path::new(dir);
                let html_path = Path::new(html);
                let index = html_path.strip_prefix(source).unwrap_or(html_path);
                let index = safe_relative(index)
                    .ok_or_else(|| format!("report_html {html:?} is not inside report_dir {dir:?}"))?;
                if !source.join(&index).is_file() {
                    return Err(format!("report_html {html:?} is not a file in report_dir {dir:?}"));
                }
                copy_tree(source, &target, &mut budget)?;
                Ok(index.to_string_lossy().into_owned())
            }
            None => {
                let source = Path::new(html);
                let name = source.file_name().ok_or_else(|| format!("report_html {html:?} names no file"))?;
                copy_file(source, &target.join(name), &mut budget)?;
                Ok(name.to_string_lossy().into_owned())
            }
        }
    }

    /// Deletes the files of purged invocations.
    pub(crate) fn remove(&self, trace_id: &str) {
        let _ = std::fs::remove_dir_all(self.root.join(trace_id));
    }

    /// The file behind `path` (as listed in a report's `html`), if it is safely inside the report.
    pub(crate) fn file(&self, trace_id: &str, path: &str) -> Option<PathBuf> {
        let relative = safe_relative(Path::new(path))?;
        let id_ok = trace_id.len() == 32 && trace_id.bytes().all(|b| b.is_ascii_hexdigit());
        id_ok.then(|| self.root.join(trace_id).join(relative))
    }
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

fn copy_file(source: &Path, target: &Path, budget: &mut u64) -> Result<(), String> {
    let meta = std::fs::symlink_metadata(source).map_err(|e| format!("cannot read {}: {e}", source.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", source.display()));
    }
    if meta.len() > *budget {
        return Err(format!("the report is larger than the limit of {} bytes", meta.len().max(*budget)));
    }
    *budget -= meta.len();
    std::fs::copy(source, target).map_err(|e| format!("cannot copy {}: {e}", source.display()))?;
    Ok(())
}

/// Copies regular files and folders; symbolic links are skipped, never followed.
fn copy_tree(source: &Path, target: &Path, budget: &mut u64) -> Result<(), String> {
    let entries = std::fs::read_dir(source).map_err(|e| format!("cannot read {}: {e}", source.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| e.to_string())?;
        let kind = entry.file_type().map_err(|e| e.to_string())?;
        let to = target.join(entry.file_name());
        if kind.is_dir() {
            std::fs::create_dir_all(&to).map_err(|e| e.to_string())?;
            copy_tree(&entry.path(), &to, budget)?;
        } else if kind.is_file() {
            copy_file(&entry.path(), &to, budget)?;
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

    #[test]
    fn files_are_copied_with_a_cap_and_links_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir_all(out.join("css")).unwrap();
        std::fs::write(out.join("index.html"), "<h1>ok</h1>").unwrap();
        std::fs::write(out.join("css/site.css"), "h1{}").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", out.join("leak")).unwrap();
        let files = ReportFiles { root: dir.path().join("reports"), cap: 1024 };
        let trace = "0123456789abcdef0123456789abcdef";
        let html = out.join("index.html").display().to_string();
        let kept = files.persist(
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
        assert!(files.file(trace, "2-1/css/site.css").unwrap().is_file());
        assert!(!files.root.join(trace).join("2-1/leak").exists(), "links are not followed");
        let small = ReportFiles { root: dir.path().join("small"), cap: 4 };
        let kept = small.persist(trace, 1, &[Report { report_html: Some(html), ..Report::default() }]);
        assert!(kept[0]["error"].as_str().unwrap().contains("larger than the limit"), "{kept:?}");
        assert_eq!(files.file("../../etc", "passwd"), None);
    }
}
