//! `plugd-gitlab.yaml`: the GitLab URL, a namespace, project groups and default variables.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitlabConfig {
    /// The GitLab host, e.g. `https://gitlab.example.com`.
    #[serde(default)]
    pub url: Option<String>,
    /// Prefixed to project names that have no slash.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Named lists of projects; `all` is every project named in a group.
    #[serde(default)]
    pub groups: BTreeMap<String, Vec<String>>,
    /// Default pipeline variables (`--var` overrides).
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
}

/// A configuration file that could not be read or is not a valid configuration.
#[derive(Debug, thiserror::Error)]
pub enum GitlabConfigError {
    /// The file could not be read.
    #[error("{}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        error: std::io::Error,
    },
    /// The file is not YAML, or not a configuration (an unknown field, a wrong type).
    #[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The line of the problem (1-based), when the parser knows it.
        line: Option<usize>,
        /// What is wrong, without the parser's position.
        message: String,
    },
}

impl GitlabConfig {
    /// Reads `path`; errors name the file and line.
    pub fn load(path: &Path) -> Result<GitlabConfig, GitlabConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|error| GitlabConfigError::Read { path: path.to_owned(), error })?;
        serde_yaml_ng::from_str(&text).map_err(|e| {
            // An error at the end of the input (an unclosed bracket) is placed on the line after the
            // last: show the last line with text instead.
            let last = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()).last().map_or(1, |(i, _)| i + 1);
            let line = e.location().map(|l| l.line().min(last));
            let message = e.to_string();
            let message = message.split(" at line ").next().unwrap_or(&message).to_owned();
            GitlabConfigError::Invalid { path: path.to_owned(), line, message }
        })
    }

    /// `--config`, else `./plugd-gitlab.yaml` when it exists, else nothing.
    pub fn find(explicit: Option<&Path>) -> Result<(GitlabConfig, Option<PathBuf>), GitlabConfigError> {
        if let Some(path) = explicit {
            return Ok((GitlabConfig::load(path)?, Some(path.to_owned())));
        }
        let default = PathBuf::from("plugd-gitlab.yaml");
        if default.is_file() {
            return Ok((GitlabConfig::load(&default)?, Some(default)));
        }
        Ok((GitlabConfig::default(), None))
    }

    /// Every project named in a group, sorted.
    pub fn known_projects(&self) -> Vec<String> {
        let mut all: Vec<String> = self.groups.values().flatten().cloned().collect();
        all.sort();
        all.dedup();
        all
    }

    /// The projects of `--project` and `--group` as `(name, full path)`, in order, without
    /// repeats; an unknown group or project is an error listing what exists.
    pub fn resolve(&self, projects: &[String], groups: &[String]) -> Result<Vec<(String, String)>, String> {
        let mut names: Vec<String> = Vec::new();
        for group in groups {
            let members = if group == "all" {
                self.known_projects()
            } else {
                let available: Vec<&str> = self.groups.keys().map(String::as_str).chain(["all"]).collect();
                self.groups
                    .get(group)
                    .cloned()
                    .ok_or_else(|| format!("unknown group {group:?}; groups: {}", available.join(", ")))?
            };
            names.extend(members);
        }
        let known = self.known_projects();
        for project in projects.iter().flat_map(|p| p.split(',')).map(str::trim).filter(|p| !p.is_empty()) {
            if !project.contains('/') && !self.groups.is_empty() && !known.iter().any(|k| k == project) {
                return Err(format!("unknown project {project:?}; projects: {}", known.join(", ")));
            }
            names.push(project.to_owned());
        }
        let mut seen = std::collections::BTreeSet::new();
        names.retain(|n| seen.insert(n.clone()));
        if names.is_empty() {
            return Err("no project: give --project a,b or --group NAME".into());
        }
        Ok(names
            .into_iter()
            .map(|name| {
                let path = match &self.namespace {
                    Some(ns) if !name.contains('/') => format!("{}/{name}", ns.trim_end_matches('/')),
                    _ => name.clone(),
                };
                (name, path)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> GitlabConfig {
        serde_yaml_ng::from_str(
            "url: https://gitlab.example.com\nnamespace: platform\ngroups: {web: [shop-web, admin-web], src: [shop-src]}\nvariables: {BUILD_ARCH: \"false\"}\n",
        )
        .unwrap()
    }

    #[test]
    fn groups_projects_and_namespace() {
        let c = config();
        assert_eq!(
            c.resolve(&["shop-src".into()], &["web".into()]).unwrap(),
            [
                ("shop-web".into(), "platform/shop-web".into()),
                ("admin-web".into(), "platform/admin-web".into()),
                ("shop-src".into(), "platform/shop-src".into())
            ]
        );
        assert_eq!(c.resolve(&[], &["all".into()]).unwrap().len(), 3);
        assert_eq!(c.resolve(&["other/app".into()], &[]).unwrap(), [("other/app".into(), "other/app".into())]);
        assert_eq!(
            c.resolve(&["nope".into()], &[]).unwrap_err(),
            "unknown project \"nope\"; projects: admin-web, shop-src, shop-web"
        );
        assert_eq!(c.resolve(&[], &["api".into()]).unwrap_err(), "unknown group \"api\"; groups: src, web, all");
    }
}
