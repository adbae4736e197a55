use std::path::Path;

use serde_json::json;

use crate::util::Plugd;

const MANIFEST: &str = "id: tool\nversion: VERSION\ndescription: Prints its version.\nentry:\n  start: [sh, \"${PLUGD_PLUGIN_DIR}/run.sh\"]\n";

fn plugin(dir: &Path, version: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("plugin.yaml"), MANIFEST.replace("VERSION", version)).unwrap();
    std::fs::write(dir.join("run.sh"), format!("echo version={version} >> \"$PLUGD_OUTPUT_FILE\"\n")).unwrap();
}

/// Builds a .tar.gz with Python's tarfile, which can write what tar refuses to.
fn archive(path: &Path, script: &str) {
    let code = format!(
        "import io, tarfile\nt = tarfile.open({path:?}, 'w:gz')\n\
         def add(name, data=b'x', kind=tarfile.REGTYPE, link=''):\n    i = tarfile.TarInfo(name); i.type = kind; i.linkname = link; i.size = len(data) if kind == tarfile.REGTYPE else 0\n    t.addfile(i, io.BytesIO(data) if kind == tarfile.REGTYPE else None)\n\
         {script}\nt.close()\n",
        path = path.display().to_string()
    );
    let status = std::process::Command::new("python3").args(["-c", &code]).status().unwrap();
    assert!(status.success());
}

#[test]
fn install_run_list_and_uninstall() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let home = home.to_str().unwrap();
    let plugd = |args: &[&str]| Plugd::new(args).env("PLUGD_HOME", home);
    plugin(&dir.path().join("v1"), "1.0.0");
    plugin(&dir.path().join("v2"), "1.2.0");
    let out = plugd(&["install", dir.path().join("v1").to_str().unwrap()]).run().assert_code(0);
    assert!(
        out.stdout.starts_with(&format!("installed tool@1.0.0 in {home}/plugins/tool/1.0.0 (sha256 ")),
        "{}",
        out.stdout
    );
    let again = plugd(&["install", dir.path().join("v1").to_str().unwrap()]).run().assert_code(2);
    assert!(again.stderr.contains("tool@1.0.0 is already installed"), "{}", again.stderr);
    plugd(&["install", "--force", dir.path().join("v1").to_str().unwrap()]).run().assert_code(0);

    // An archive with the plugin in a top-level folder.
    let tarball = dir.path().join("tool-1.2.0.tar.gz");
    let status = std::process::Command::new("tar")
        .args(["-czf", tarball.to_str().unwrap(), "-C", dir.path().to_str().unwrap(), "v2"])
        .status()
        .unwrap();
    assert!(status.success());
    plugd(&["install", tarball.to_str().unwrap()]).run().assert_code(0);
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{home}/plugins/tool/1.2.0/.plugd-install.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(record["sha256"].as_str().unwrap().len(), 64);

    let newest = plugd(&["run", "tool", "--json"]).run().assert_code(0).json();
    assert_eq!((newest["version"].clone(), newest["outputs"].clone()), (json!("1.2.0"), json!({"version": "1.2.0"})));
    let pinned = plugd(&["run", "tool@1.0.0", "--json"]).run().assert_code(0).json();
    assert_eq!(pinned["outputs"], json!({"version": "1.0.0"}));
    let missing = plugd(&["run", "tool@9.0.0"]).run().assert_code(2);
    assert_eq!(missing.stderr, "error: plugin \"tool\" has no version \"9.0.0\"; available versions: 1.2.0, 1.0.0\n");
    let list = plugd(&["list", "--json"]).run().assert_code(0).json();
    let tool = list.as_array().unwrap().iter().find(|p| p["name"] == "tool").unwrap().clone();
    assert_eq!((tool["versions"].clone(), tool["source"].clone()), (json!(["1.2.0", "1.0.0"]), json!("installed")));
    assert!(list.as_array().unwrap().iter().any(|p| p["name"] == "hello" && p["source"] == "built-in"));

    // One version under two spellings, and a built-in's name and version, are refused.
    let short = dir.path().join("short");
    plugin(&short, "1.2");
    let out = plugd(&["install", short.to_str().unwrap()]).run().assert_code(2);
    assert_eq!(out.stderr, "error: tool@1.2 is already installed as version 1.2.0; uninstall tool@1.2.0 first\n");
    let clash = dir.path().join("clash");
    plugin(&clash, "1.0.0");
    std::fs::write(clash.join("plugin.yaml"), MANIFEST.replace("VERSION", "1.0.0").replace("id: tool", "id: command"))
        .unwrap();
    let out = plugd(&["install", clash.to_str().unwrap()]).run().assert_code(2);
    assert_eq!(out.stderr, "error: command@1.0.0 is a built-in plugin: choose another id or version\n");

    plugd(&["uninstall", "tool@1.2.0"]).run().assert_code(0);
    let gone = plugd(&["uninstall", "tool@1.2.0"]).run().assert_code(2);
    assert_eq!(gone.stderr, "error: tool@1.2.0 is not installed; installed: tool@1.0.0\n");
}

#[test]
fn python_caches_stay_behind_and_one_version_uninstalls_by_id() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let home = home.to_str().unwrap();
    let plugd = |args: &[&str]| Plugd::new(args).env("PLUGD_HOME", home);
    let source = dir.path().join("v1");
    plugin(&source, "1.0.0");
    std::fs::create_dir(source.join("__pycache__")).unwrap();
    for file in ["__pycache__/helper.cpython-312.pyc", "stale.pyc", "helper.py"] {
        std::fs::write(source.join(file), "x").unwrap();
    }
    plugd(&["install", source.to_str().unwrap()]).run().assert_code(0);
    let installed = Path::new(home).join("plugins/tool/1.0.0");
    let mut names: Vec<String> =
        std::fs::read_dir(&installed).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, [".plugd-install.json", "helper.py", "plugin.yaml", "run.sh"]);

    plugin(&dir.path().join("v2"), "1.2.0");
    plugd(&["install", dir.path().join("v2").to_str().unwrap()]).run().assert_code(0);
    let out = plugd(&["uninstall", "tool"]).run().assert_code(2);
    assert_eq!(
        out.stderr,
        "error: tool has 2 installed versions (1.0.0, 1.2.0): say which, e.g. plugd uninstall tool@1.2.0\n"
    );
    plugd(&["uninstall", "tool@1.2.0"]).run().assert_code(0);
    let out = plugd(&["uninstall", "tool"]).run().assert_code(0);
    assert_eq!(out.stdout, format!("uninstalled tool@1.0.0 from {}\n", installed.display()));
    let out = plugd(&["uninstall", "tool"]).run().assert_code(2);
    assert_eq!(out.stderr, "error: tool is not installed; installed: none\n");
}

#[test]
fn hostile_archives_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let manifest = "add('plugin.yaml', b'id: evil\\nversion: 1.0.0\\nentry: {start: run}\\n')";
    let cases = [
        ("absolute", "add('/tmp/plugd-evil')", "entry /tmp/plugd-evil would be written outside the folder"),
        ("dotdot", "add('a/../../evil')", "entry a/../../evil would be written outside the folder"),
        (
            "symlink",
            "add('leak', kind=tarfile.SYMTYPE, link='/etc/passwd')",
            "link leak -> /etc/passwd points outside the folder",
        ),
        (
            "relative-link",
            "add('d/leak', kind=tarfile.SYMTYPE, link='../../x')",
            "link d/leak -> ../../x points outside the folder",
        ),
        ("hardlink", "add('hard', kind=tarfile.LNKTYPE, link='../x')", "link hard -> ../x points outside the folder"),
        ("device", "add('dev', kind=tarfile.CHRTYPE)", "entry dev is neither a file, a folder nor a link"),
        (
            "empty",
            "add('README', b'hi')",
            "it holds no plugin.yaml or qciplugin.yml (at its root or in a single top-level folder)",
        ),
    ];
    for (name, entries, reason) in cases {
        let path = dir.path().join(format!("{name}.tar.gz"));
        let script = if name == "empty" { entries.to_owned() } else { format!("{manifest}\n{entries}") };
        archive(&path, &script);
        let out = Plugd::new(&["install", path.to_str().unwrap()])
            .env("PLUGD_HOME", home.to_str().unwrap())
            .run()
            .assert_code(2);
        assert_eq!(out.stderr, format!("error: refused archive {}: {reason}\n", path.display()), "{name}");
    }
    assert!(!Path::new("/tmp/plugd-evil").exists());
    assert!(!home.join("plugins/evil").exists());
}
