//! ARCHITECTURE.md checked against the code, so that it stays true: a dependency that points up its code map,
//! a crate added or renamed without it, or a file it names that was moved or deleted fails here, with what to
//! fix, instead of misleading the next reader.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// ARCHITECTURE.md's dependency rule ("Code map"), written once: each workspace crate and the workspace crates it
/// may use as a normal (or build) dependency. Dependencies point down the code map's arrow, never up, so a crate
/// may skip a level (`plugd-server` uses `plugd-sdk` directly), but crates of one level never meet.
const ALLOWED_DEPENDENCIES: &[(&str, &[&str])] = &[
    (
        "plugd",
        &[
            "plugd-server",
            "plugd-store-sqlite",
            "plugd-store-postgres",
            "plugd-process",
            "plugd-plugins",
            "plugd-gitlab",
            "plugd-core",
            "plugd-sdk",
        ],
    ),
    // `plugd-server` and the store crates know each other not at all: they meet in `plugd`, through `Store`.
    ("plugd-server", &["plugd-core", "plugd-sdk"]),
    ("plugd-store-sqlite", &["plugd-core", "plugd-sdk"]),
    ("plugd-store-postgres", &["plugd-core", "plugd-sdk"]),
    // `plugd-sdk` only: built-in plugins, process plugins and GitLab use nothing a third-party plugin could not.
    ("plugd-process", &["plugd-sdk"]),
    ("plugd-plugins", &["plugd-sdk"]),
    ("plugd-gitlab", &["plugd-sdk"]),
    ("plugd-core", &["plugd-sdk"]),
    ("plugd-sdk", &[]),
    // Not published: the conformance suite, on `dyn Store`.
    ("plugd-store-tests", &["plugd-core", "plugd-sdk"]),
    // Not published: `plugd-store-postgres` (with core's `Store`) only to time claims, and the fake GitLab.
    ("plugd-bench", &["plugd-store-postgres", "plugd-core", "plugd-gitlab"]),
];

/// The crates whose tests use the store conformance suite (`plugd-store-tests`) as a dev-dependency, as
/// ARCHITECTURE.md names them: the two stores, and `plugd`'s command-line tests (its test databases and disks).
const STORE_SUITE_USERS: &[&str] = &["plugd", "plugd-store-postgres", "plugd-store-sqlite"];

/// Code spans of ARCHITECTURE.md that look like paths but name no file of this repository, each with why.
const NOT_REPOSITORY_PATHS: &[&str] = &[
    // Files of a user's plugin folder (a process plugin's manifest, a qci plugin's).
    "plugin.yaml",
    "qciplugin.yml",
    // The layout of a user's bk-plugin project (crates/plugd/tests/fixtures/bk-plugin-demo is one).
    "bk_plugin/versions/",
    "bk_plugin/meta.py",
    "bk_plugin/apis/urls.py",
    // The configuration `plugd gitlab run-ci` reads from the user's directory.
    "plugd-gitlab.yaml",
    // A script the server writes per plugin version (`/ui/api/forms/{plugin}/{version}`), not a file.
    "form.js",
    // Where the browser tests put screenshots: build output, absent until they run.
    "target/panel-screenshots/",
];

/// File extensions that make a code span without a `/` a file name (`ops.rs`) rather than a word.
const FILE_EXTENSIONS: &[&str] = &["rs", "md", "py", "js", "css", "html", "toml", "yaml", "yml", "json", "sql", "sh"];

/// Ignored by git and large: never what ARCHITECTURE.md means.
const SKIPPED_DIRECTORIES: &[&str] = &["target", "node_modules", "__pycache__"];

/// What to do when a check here fails, for every message.
const FIX: &str = "update ARCHITECTURE.md (and the table in crates/plugd/tests/cli/tidy.rs) if the architecture \
                   changed, or change the dependency back";

#[test]
fn workspace_dependencies_follow_the_code_map_in_architecture_md() {
    let packages = workspace_packages();
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED_DEPENDENCIES.iter().copied().collect();
    let mut problems = Vec::new();
    // Every crate has a rule and every rule a crate, so a new or renamed crate is placed on the map.
    for name in packages.keys().filter(|name| !allowed.contains_key(name.as_str())) {
        problems.push(format!("workspace crate `{name}` is not in the code map's table: place it in ARCHITECTURE.md"));
    }
    for name in allowed.keys().filter(|name| !packages.contains_key(**name)) {
        problems.push(format!("the code map's table names `{name}`, which is not a workspace crate"));
    }
    for (name, package) in &packages {
        let Some(rule) = allowed.get(name.as_str()) else { continue };
        // A build script's dependencies are the crate's too: one pointing up is as wrong as a normal one.
        let normal = package.normal.iter().map(|dependency| ("", dependency));
        let build = package.build.iter().map(|dependency| ("build-", dependency));
        for (kind, dependency) in normal.chain(build) {
            if !rule.contains(&dependency.as_str()) {
                problems.push(format!(
                    "`{name}` has a {kind}dependency on `{dependency}`, which ARCHITECTURE.md's code map does not allow"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}\n({FIX})", problems.join("\n"));
}

#[test]
fn code_map_arrow_names_exactly_the_published_crates_and_agrees_with_the_table() {
    let layers = arrow_layers(&architecture_md());
    let in_arrow: BTreeSet<&str> = layers.iter().flatten().map(String::as_str).collect();
    let packages = workspace_packages();
    let published: BTreeSet<&str> =
        packages.iter().filter(|(_, package)| package.published).map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        in_arrow, published,
        "ARCHITECTURE.md's code map arrow (the line starting with \"`plugd →\") must name exactly the published \
         workspace crates (left: the arrow, right: Cargo.toml files): update ARCHITECTURE.md"
    );
    // The table says the arrow's rule crate by crate: each allowed dependency of a crate on the arrow is on a
    // level below it, so the table cannot allow what the text forbids.
    let level = |name: &str| layers.iter().position(|layer| layer.iter().any(|crate_name| crate_name == name));
    let mut problems = Vec::new();
    for &(name, allowed) in ALLOWED_DEPENDENCIES {
        let Some(own) = level(name) else { continue };
        for &dependency in allowed {
            if level(dependency).is_none_or(|theirs| theirs <= own) {
                problems.push(format!("the table lets `{name}` depend on `{dependency}`, which is not below it"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{}\n(the table in crates/plugd/tests/cli/tidy.rs must say what ARCHITECTURE.md's arrow says: fix whichever \
         is wrong)",
        problems.join("\n")
    );
}

#[test]
fn store_conformance_suite_is_a_dev_dependency_of_its_users_only() {
    let packages = workspace_packages();
    let users: BTreeSet<&str> = packages
        .iter()
        .filter(|(_, package)| package.dev.contains("plugd-store-tests"))
        .map(|(name, _)| name.as_str())
        .collect();
    let expected: BTreeSet<&str> = STORE_SUITE_USERS.iter().copied().collect();
    assert_eq!(
        users, expected,
        "`plugd-store-tests` is the stores' conformance suite (left: crates that use it as a dev-dependency, right: \
         STORE_SUITE_USERS): {FIX}"
    );
}

#[test]
fn paths_named_in_architecture_md_exist() {
    let root = workspace_root();
    let doc = architecture_md();
    let entries = entries_under(&root, Path::new("crates"));
    let mut spans = BTreeSet::new();
    let mut missing = Vec::new();
    let sections = sections(&doc);
    for section in &sections {
        let parts: Vec<&str> = section.text.split('`').collect();
        assert!(parts.len() % 2 == 1, "ARCHITECTURE.md has an unclosed code span in:\n{}", section.text);
        // Every other part is inside backticks.
        for span in parts.into_iter().skip(1).step_by(2) {
            spans.insert(span);
            if NOT_REPOSITORY_PATHS.contains(&span)
                || !looks_like_path(span)
                || exists(&root, &entries, span, section.krate)
            {
                continue;
            }
            let looked = section.krate.map_or_else(|| "crates/".to_owned(), |name| format!("crates/{name}/"));
            missing.push(format!("`{span}` (looked at the repository root and anywhere under {looked})"));
        }
    }
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names paths that do not exist: update it (or, for a name that is not meant as a path of this \
         repository, add it to NOT_REPOSITORY_PATHS in crates/plugd/tests/cli/tidy.rs):\n{}",
        missing.join("\n")
    );
    // An exception the document no longer needs is one that could hide a future mistake.
    let stale: Vec<&str> = NOT_REPOSITORY_PATHS.iter().copied().filter(|name| !spans.contains(name)).collect();
    assert!(stale.is_empty(), "NOT_REPOSITORY_PATHS in crates/plugd/tests/cli/tidy.rs lists unused names: {stale:?}");
}

/// A workspace crate as `cargo metadata` describes it: whether it is published, and the workspace crates it
/// depends on, by kind of dependency.
#[derive(Default)]
struct Package {
    published: bool,
    normal: BTreeSet<String>,
    dev: BTreeSet<String>,
    build: BTreeSet<String>,
}

/// This repository: `crates/plugd`'s grandparent.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2).expect("crates/plugd is two levels down").to_path_buf()
}

fn architecture_md() -> String {
    let path = workspace_root().join("ARCHITECTURE.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The workspace's crates by name, from `cargo metadata` (the manifests as cargo reads them, no build).
fn workspace_packages() -> BTreeMap<String, Package> {
    let output = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(workspace_root())
        .output()
        .expect("running cargo metadata");
    assert!(output.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&output.stderr));
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    let packages = metadata["packages"].as_array().expect("cargo metadata lists `packages`");
    let name_of = |value: &Value| value["name"].as_str().expect("a package or dependency has a `name`").to_owned();
    let names: BTreeSet<String> = packages.iter().map(name_of).collect();
    let mut workspace = BTreeMap::new();
    for package in packages {
        // `publish` is null for "anywhere", a list of registries, or `[]` for `publish = false`.
        let published = package["publish"].as_array().is_none_or(|registries| !registries.is_empty());
        let mut found = Package { published, ..Package::default() };
        for dependency in package["dependencies"].as_array().expect("a package lists its `dependencies`") {
            let name = name_of(dependency);
            if !names.contains(&name) {
                continue;
            }
            let set = match &dependency["kind"] {
                Value::Null => &mut found.normal,
                Value::String(kind) if kind == "dev" => &mut found.dev,
                Value::String(kind) if kind == "build" => &mut found.build,
                other => panic!("unknown dependency kind {other} of `{name}`"),
            };
            set.insert(name);
        }
        workspace.insert(name_of(package), found);
    }
    workspace
}

/// The crates named by ARCHITECTURE.md's code map arrow (`plugd → {…} → plugd-core → plugd-sdk`), level by level,
/// top first.
fn arrow_layers(doc: &str) -> Vec<Vec<String>> {
    let line = doc
        .lines()
        .find(|line| line.starts_with("`plugd →"))
        .expect("ARCHITECTURE.md has the code map's arrow: a line starting with \"`plugd →\"");
    let arrow = line.split('`').nth(1).expect("the arrow is one code span");
    arrow
        .split('→')
        .map(|layer| {
            let layer = layer.trim().trim_start_matches('{').trim_end_matches('}');
            layer.split(',').map(|name| name.trim().to_owned()).collect()
        })
        .collect()
}

/// A part of ARCHITECTURE.md from one heading to the next, and the crate its heading names, if any.
struct Section<'a> {
    /// The crate a heading such as "### `crates/plugd-core`: the runtime core" names: file names below it are
    /// that crate's.
    krate: Option<&'a str>,
    text: String,
}

/// ARCHITECTURE.md cut at its headings, fenced code blocks left out (their backticks are not code spans).
fn sections(doc: &str) -> Vec<Section<'_>> {
    let mut sections = vec![Section { krate: None, text: String::new() }];
    let mut in_fence = false;
    for line in doc.lines() {
        if line.starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        if line.starts_with('#') {
            let krate = line.strip_prefix("### `crates/").and_then(|rest| rest.split('`').next());
            sections.push(Section { krate, text: String::new() });
        }
        let section = sections.last_mut().expect("there is always a section");
        section.text.push_str(line);
        section.text.push('\n');
    }
    sections
}

/// Whether a code span is meant as a path: it has a `/` or ends in a file extension. Routes (`/healthz`),
/// URL templates (`cancel/{trace_id}`), commands and prose (spaces), Rust paths (`plugd_core::schedule`), globs,
/// variables and settings (`PLUGD_DEBUG=1`) are not.
fn looks_like_path(span: &str) -> bool {
    if span.starts_with('/') || span.contains(|c: char| c.is_whitespace() || "{*$:=|".contains(c)) {
        return false;
    }
    span.contains('/')
        || span
            .rsplit_once('.')
            .is_some_and(|(stem, extension)| !stem.is_empty() && FILE_EXTENSIONS.contains(&extension))
}

/// Whether a path-like code span names something: from the repository root when its first component is there
/// (`crates/plugd-core/src/store.rs`, `.ci/schemathesis`), otherwise anywhere under the crate of its section
/// (`ops.rs`, `api/panel.rs`), or under `crates/` outside a crate's section (`executor/tests.rs`). A trailing `/`
/// asks for a directory.
fn exists(root: &Path, entries: &[(PathBuf, bool)], span: &str, krate: Option<&str>) -> bool {
    let path = Path::new(span.trim_end_matches('/'));
    let wants_directory = span.ends_with('/');
    let first = path.components().next().expect("a code span is not empty");
    if span.contains('/') && root.join(first).exists() {
        let full = root.join(path);
        return if wants_directory { full.is_dir() } else { full.exists() };
    }
    let under = krate.map_or_else(|| PathBuf::from("crates"), |name| Path::new("crates").join(name));
    entries.iter().any(|(entry, is_directory)| {
        entry.starts_with(&under) && entry.ends_with(path) && (*is_directory || !wants_directory)
    })
}

/// Every file and directory below `dir` (relative to `root`), with whether it is a directory.
fn entries_under(root: &Path, dir: &Path) -> Vec<(PathBuf, bool)> {
    let mut entries = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let listing = std::fs::read_dir(root.join(&dir)).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()));
        for entry in listing {
            let entry = entry.unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()));
            let file_type = entry.file_type().unwrap_or_else(|e| panic!("reading {:?}: {e}", entry.path()));
            let path = dir.join(entry.file_name());
            if file_type.is_dir() {
                if entry.file_name().to_str().is_some_and(|name| SKIPPED_DIRECTORIES.contains(&name)) {
                    continue;
                }
                pending.push(path.clone());
            }
            entries.push((path, file_type.is_dir()));
        }
    }
    entries
}
