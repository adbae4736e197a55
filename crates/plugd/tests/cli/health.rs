use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use plugd_store_tests::disk::{damage_page_holding, Tmpfs};
use serde_json::{json, Value};

use crate::util::{listening_on, try_request, Finished, Plugd, Running};

/// `plugd serve` on `db` and a free port, with its base URL.
fn serve(db: &Path) -> (Running, String) {
    let db = format!("sqlite://{}", db.display());
    let mut child = Running::new(Plugd::new(&["serve", "--listen", "127.0.0.1:0", "--db", &db]).spawn());
    let base = listening_on(&mut child, "plugd serve starts");
    (child, base)
}

/// Stops it with SIGTERM, as an operator does; its exit code.
fn terminate(child: Running) -> i32 {
    let mut child = child.release();
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    child.wait().unwrap().code().unwrap_or(-1)
}

/// `plugd serve` that must refuse to start: how it ended (killed after 30 s if it did start).
fn refused(db: &Path) -> Finished {
    let db = format!("sqlite://{}", db.display());
    let mut child = Plugd::new(&["serve", "--listen", "127.0.0.1:0", "--db", &db]).spawn();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let finished: Finished = child.wait_with_output().unwrap().into();
            panic!("plugd serve started on {db}: {finished:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap().into()
}

fn healthz(base: &str) -> (u16, Value) {
    let (status, body) = try_request("GET", &format!("{base}/healthz"), "").expect("the server answers");
    (status, serde_json::from_str(&body).unwrap_or(Value::String(body)))
}

/// A real database written by `plugd serve`, in one file: the server's background checkpoints copy
/// every commit into it within a fraction of a second, after which its WAL holds nothing new.
fn database(db: &Path) {
    let (server, base) = serve(db);
    for name in ["a", "b", "c", "d"] {
        let body = json!({"inputs": {"name": name.repeat(2000)}, "context": {}}).to_string();
        let (status, _) = try_request("POST", &format!("{base}/plugins/hello/bk_plugin/invoke/1.0.0"), &body).unwrap();
        assert_eq!(status, 200);
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(terminate(server), 0);
    for suffix in ["-wal", "-shm"] {
        let mut file = db.as_os_str().to_owned();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
}

#[test]
fn serve_refuses_a_damaged_database_and_says_how_to_recover() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("plugd.db");
    database(&db);
    // Garbage over a page of invocations (not the header or the schema).
    damage_page_holding(&db, "b".repeat(1000).as_bytes(), 4096, 0x9e37_79b9);

    let finished = refused(&db).assert_code(1);
    let path = db.display();
    let expected =
        format!("error: cannot open the database {path}: the database {path} is damaged (PRAGMA quick_check: ");
    assert!(finished.stderr.contains(&expected), "{}", finished.stderr);
    assert!(
        finished.stderr.contains(&format!(
            "plugd will not use it. Restore it from a backup, or salvage what is readable into a new file with \
             `sqlite3 '{path}' .recover | sqlite3 '{path}.recovered'`, keep the damaged file aside, and start on the new one"
        )),
        "{}",
        finished.stderr
    );
}

#[test]
#[ignore = "needs root: mounts a tmpfs"]
fn healthz_is_503_while_the_disk_is_full() {
    let tmpfs = Tmpfs::mount("4m");
    let (server, base) = serve(&tmpfs.path().join("plugd.db"));
    assert_eq!(healthz(&base), (200, json!({"status": "ok"})));

    let filler = tmpfs.fill();
    // The server reuses a probe's result for a second.
    std::thread::sleep(Duration::from_millis(1100));
    let (status, body) = healthz(&base);
    assert_eq!((status, body["status"].clone()), (503, json!("unavailable")), "{body}");
    let error = body["error"].as_str().unwrap();
    let expected =
        format!("cannot write in the database's directory {}: No space left on device", tmpfs.path().display());
    assert!(error.contains(&expected), "{error}");

    std::fs::remove_file(filler).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(healthz(&base), (200, json!({"status": "ok"})));
    assert_eq!(terminate(server), 0);
}

#[test]
#[ignore = "needs root: mounts a tmpfs"]
fn serve_names_a_read_only_directory() {
    let tmpfs = Tmpfs::mount("4m");
    let db = tmpfs.path().join("plugd.db");
    database(&db);
    tmpfs.make_read_only();
    let finished = refused(&db).assert_code(1);
    let expected = format!(
        "error: cannot open the database {}: cannot write in the database's directory {}: \
         Read-only file system",
        db.display(),
        tmpfs.path().display()
    );
    assert!(finished.stderr.contains(&expected), "{}", finished.stderr);
}
