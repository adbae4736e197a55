use std::time::Duration;

use serde_json::Value;

use crate::util::{stderr_lines, try_request, Plugd, Running};

#[test]
fn dev_serves_a_folder_and_the_built_ins_and_prints_the_panel() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("greet-dev");
    std::fs::create_dir_all(&plugin).unwrap();
    std::fs::write(
        plugin.join("plugin.yaml"),
        "id: greet-dev\nversion: 0.1.0\ndescription: a folder plugin\nentry:\n  start: [sh, \"-c\", \"exit 0\"]\n",
    )
    .unwrap();
    let mut child = Running::new(Plugd::new(&["dev", "--listen", "127.0.0.1:0", plugin.to_str().unwrap()]).spawn());
    let pid = child.id();
    let lines = stderr_lines(child.child());
    let mut database = None;
    let panel = loop {
        let line = lines.recv_timeout(Duration::from_secs(30)).expect("plugd dev prints the panel's URL");
        if let Some(location) = line.split("database: ").nth(1) {
            database = Some(std::path::PathBuf::from(location.trim_end_matches(')')));
        }
        if let Some(url) = line.split("debug panel at ").nth(1) {
            break url.trim().to_owned();
        }
    };
    let (status, page) = try_request("GET", &panel, "").unwrap();
    assert_eq!(status, 200);
    assert!(page.contains("<title>plugd</title>"), "{page}");
    let (status, body) = try_request("GET", &format!("{panel}ui/api/plugins"), "").unwrap();
    assert_eq!(status, 200);
    let plugins: Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> =
        plugins["data"]["plugins"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"greet-dev") && names.contains(&"hello"), "{names:?}");
    // A new folder of a random name (not one named after the pid, which another user could plant),
    // private to plugd's user.
    let database = database.expect("the listening line names the database");
    let temp = database.parent().unwrap().to_owned();
    assert!(database.exists() && temp.starts_with(std::env::temp_dir()), "{database:?}");
    let name = temp.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("plugd-dev-") && name != format!("plugd-dev-{pid}"), "{name}");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&temp).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o700, "{mode:o}");
    let killed = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    assert!(killed.success());
    let status = child.release().wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!temp.exists(), "the temporary database is removed on exit");
}

#[test]
fn dev_stays_on_loopback() {
    let out = Plugd::new(&["dev", "--listen", "0.0.0.0:0"]).run().assert_code(2);
    assert!(out.stderr.contains("loopback only"), "{}", out.stderr);
}
