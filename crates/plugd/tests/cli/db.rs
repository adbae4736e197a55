//! `plugd db copy`, `plugd db status` and `plugd db migrate`: a SQLite service moved to PostgreSQL with its pending
//! work, which then finishes there (`PLUGD_TEST_POSTGRES_URL`; skipped, saying so, when unset).

use std::io::BufReader;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plugd_core::store::{NewInvocation, ReportFile, Store};
use plugd_core::Invocation;
use plugd_store_sqlite::{SqliteOptions, SqliteStore};
use plugd_store_tests::TestDatabase;
use serde_json::{json, Value};

use crate::util::{listening_on, read_request, respond_json, serve_in_workspace, try_request, Plugd, Running};

/// Finish callbacks land here; answers 500 while `failing`.
struct Receiver {
    url: String,
    bodies: Arc<Mutex<Vec<String>>>,
    failing: Arc<AtomicBool>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/done", listener.local_addr().unwrap());
        let (bodies, failing) = (Arc::<Mutex<Vec<String>>>::default(), Arc::new(AtomicBool::new(true)));
        let (seen, fail) = (bodies.clone(), failing.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let (_, body) = read_request(&mut reader).unwrap_or_default();
                let failed = fail.load(Ordering::SeqCst);
                if !failed {
                    seen.lock().unwrap().push(String::from_utf8_lossy(&body).into_owned());
                }
                let (status, reply) = if failed { (500, "{}") } else { (200, r#"{"result": true}"#) };
                respond_json(&mut stream, status, reply);
            }
        });
        Receiver { url, bodies, failing }
    }
}

struct Server {
    _child: Running,
    base: String,
}

impl Server {
    fn start(db: &str, workspace: &std::path::Path) -> Server {
        let extra = ["--finish-callback-backoff", "100ms", "--finish-callback-timeout", "2s", "--lease", "2s"];
        let (child, base) = serve_in_workspace(db, workspace, &extra, "plugd serve starts");
        Server { _child: child, base }
    }

    fn invoke(&self, plugin: &str, inputs: Value, context: Value) -> String {
        let url = format!("{}/plugins/{plugin}/bk_plugin/invoke/1.0.0", self.base);
        let (status, body) = try_request("POST", &url, &json!({"inputs": inputs, "context": context}).to_string())
            .expect("invoke answers");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Value>(&body).unwrap()["trace_id"].as_str().unwrap().to_owned()
    }

    fn schedule(&self, plugin: &str, trace_id: &str) -> Value {
        let url = format!("{}/plugins/{plugin}/bk_plugin/schedule/{trace_id}", self.base);
        let (_, body) = try_request("GET", &url, "").expect("schedule answers");
        serde_json::from_str::<Value>(&body).unwrap()["data"].clone()
    }

    fn wait_final(&self, plugin: &str, trace_id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let data = self.schedule(plugin, trace_id);
            if data["state"] == 4 || data["state"] == 5 {
                return data;
            }
            assert!(Instant::now() < deadline, "{plugin} {trace_id} did not finish: {data}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A finished invocation with a report and its file, written as `plugd serve` writes them.
fn add_reported_invocation(path: &std::path::Path) -> String {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let store = SqliteStore::open(path, SqliteOptions::default()).unwrap();
        let mut invocation = Invocation::new("countdown", "1.0.0", json!({"from": 0}), json!({}));
        invocation.state = plugd_sdk::State::Success;
        invocation.invoke_count = 1;
        let trace_id = invocation.trace_id.clone();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        store
            .insert(NewInvocation {
                invocation,
                now,
                poll_after: None,
                deadline: None,
                // A NUL, which PostgreSQL's text refuses: the copy keeps it all the same.
                logs: "reported \u{0}\n".into(),
                reports: vec![json!({"name": "coverage", "html": "1-1/index.html"})],
                report_files: vec![ReportFile { path: "1-1/index.html".into(), content: b"<h1>91%</h1>".to_vec() }],
                created_by: None,
                callback_timeout: None,
                duration: Duration::from_millis(3),
            })
            .await
            .unwrap();
        trace_id
    })
}

#[test]
fn a_sqlite_service_moves_to_postgresql_with_its_pending_work() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let Some(database) = rt.block_on(TestDatabase::create("a_sqlite_service_moves_to_postgresql")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plugd.db");
    let sqlite = format!("sqlite://{}", file.display());
    let receiver = Receiver::start();
    let notify = json!({"plugin_callback_info": {"url": receiver.url, "data": {"k": 1}}});

    // On SQLite: a countdown that polls for seconds yet, an approval waiting for its callback, and a
    // countdown that finished but whose finish callback has not been delivered.
    let old = Server::start(&sqlite, &dir.path().join("ws-old"));
    let polling = old.invoke("countdown", json!({"from": 2, "interval_ms": 1500}), notify.clone());
    let approval = old.invoke("approval", json!({"subject": "move"}), json!({}));
    let callback_url = old.schedule("approval", &approval)["outputs"]["callback_url"].as_str().unwrap().to_owned();
    let undelivered = old.invoke("countdown", json!({"from": 1, "interval_ms": 10}), notify);
    old.wait_final("countdown", &undelivered);
    let approved = old.invoke("approval", json!({"subject": "before"}), json!({}));
    let url = old.schedule("approval", &approved)["outputs"]["callback_url"].as_str().unwrap().to_owned();
    let (status, body) = try_request("POST", &url, &json!({"approved": true, "by": "dev"}).to_string()).unwrap();
    assert_eq!(status, 200, "{body}");
    old.wait_final("approval", &approved);
    std::thread::sleep(Duration::from_millis(300));
    drop(old);
    let reported = add_reported_invocation(&file);

    let copy = Plugd::new(&["db", "copy", "--from", &sqlite, "--to", database.url()]).run().assert_code(0);
    assert_eq!(
        copy.stdout.split(" in ").next().unwrap(),
        "copied 5 invocations (2 pending), 1 callbacks, 1 finish callbacks, 1 report files and 1 settings",
        "{}",
        copy.stderr
    );
    assert!(copy.stderr.contains("plugd db copy: invocations 5/5"), "{}", copy.stderr);

    // A second copy would mix two services: refused, unless --force.
    let again = Plugd::new(&["db", "copy", "--from", &sqlite, "--to", database.url()]).run().assert_code(1);
    assert!(
        again.stderr.contains("is not empty (5 invocations, 1 callbacks, 1 finish callbacks); copy into an empty database, or pass --force"),
        "{}",
        again.stderr
    );
    Plugd::new(&["db", "copy", "--from", &sqlite, "--to", database.url(), "--force"]).run().assert_code(0);

    let status = Plugd::new(&["db", "status", "--db", database.url()]).run().assert_code(0);
    assert!(status.stdout.starts_with("backend:         postgres\n"), "{}", status.stdout);
    for line in ["invocations:     5\n", "  POLL           1\n", "  CALLBACK       1\n", "  SUCCESS        3\n"] {
        assert!(status.stdout.contains(line), "{line:?} in {}", status.stdout);
    }
    let json = Plugd::new(&["db", "status", "--db", &sqlite, "--json"]).run().assert_code(0).json();
    assert_eq!((json["backend"].as_str(), json["invocations"].as_u64()), (Some("sqlite"), Some(5)), "{json}");

    // On PostgreSQL, the work goes on: the poll runs, the callback URL issued by the SQLite node
    // works (the secret moved), and the finish callbacks are delivered.
    receiver.failing.store(false, Ordering::SeqCst);
    let new = Server::start(database.url(), &dir.path().join("ws-new"));
    let path = callback_url.split_once("/bk_plugin/").unwrap().1;
    let (status, body) = try_request(
        "POST",
        &format!("{}/bk_plugin/{path}", new.base),
        &json!({"approved": true, "by": "ops"}).to_string(),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(new.wait_final("approval", &approval)["outputs"]["approved_by"], "ops");
    assert_eq!(new.wait_final("countdown", &polling)["outputs"], json!({"polls": 2}));
    let deadline = Instant::now() + Duration::from_secs(20);
    while receiver.bodies.lock().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "finish callbacks: {:?}", receiver.bodies.lock().unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = format!("{}/plugins/countdown/bk_plugin/reports/{reported}/1-1/index.html", new.base);
    assert_eq!(try_request("GET", &url, ""), Some((200, "<h1>91%</h1>".to_owned())));
    let url = format!("{}/plugins/countdown/bk_plugin/logs/{reported}", new.base);
    assert!(try_request("GET", &url, "").unwrap().1.contains(r#""log":"reported \u0000\n""#));
    drop(new);

    // And back: PostgreSQL to a new SQLite file.
    let back = format!("sqlite://{}", dir.path().join("back.db").display());
    let copy = Plugd::new(&["db", "copy", "--from", database.url(), "--to", &back]).run().assert_code(0);
    assert_eq!(
        copy.stdout.split(" in ").next().unwrap(),
        "copied 5 invocations (0 pending), 2 callbacks, 2 finish callbacks, 1 report files and 1 settings",
        "{}",
        copy.stderr
    );
    let json = Plugd::new(&["db", "status", "--db", &back, "--json"]).run().assert_code(0).json();
    assert_eq!(json["by_state"]["SUCCESS"], 5, "{json}");
    rt.block_on(database.drop_database());
}

#[test]
fn db_commands_refuse_what_they_cannot_open() {
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("sqlite://{}", dir.path().join("none.db").display());
    let out = Plugd::new(&["db", "status", "--db", &missing]).run().assert_code(2);
    assert!(out.stderr.starts_with("error: --db: the database ") && out.stderr.ends_with("none.db does not exist\n"));
    let to = format!("sqlite://{}", dir.path().join("to.db").display());
    let out = Plugd::new(&["db", "copy", "--from", &missing, "--to", &to]).run().assert_code(2);
    assert!(out.stderr.starts_with("error: --from: the database "), "{}", out.stderr);
    let out = Plugd::new(&["db", "copy", "--from", "mysql://u:pw@h/db", "--to", &to]).run().assert_code(2);
    assert_eq!(
        out.stderr,
        "error: --from: unknown scheme \"mysql\": expected sqlite://PATH, postgres://... or postgresql://...\n"
    );
}

#[test]
fn serve_no_migrate_refuses_an_old_schema_until_db_migrate_ran() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("plugd.db").display());
    let workspace = dir.path().join("ws").display().to_string();
    let serve =
        || Plugd::new(&["serve", "--listen", "127.0.0.1:0", "--db", &db, "--workspace", &workspace, "--no-migrate"]);
    // A new database is older than any plugd: --no-migrate will not make it.
    let out = serve().run().assert_code(1);
    assert!(out.stderr.contains("the database schema is version 0, older than this plugd ("), "{}", out.stderr);
    assert!(out.stderr.contains("run `plugd db migrate --db URL` first"), "{}", out.stderr);
    let status = Plugd::new(&["db", "status", "--db", &db]).run().assert_code(1);
    assert!(status.stderr.contains("older than this plugd"), "db status never migrates: {}", status.stderr);

    let migrated = Plugd::new(&["db", "migrate", "--db", &db]).run().assert_code(0);
    let known = migrated.stdout.rsplit("this plugd knows ").next().unwrap().trim_end_matches(")\n").to_owned();
    assert_eq!(migrated.stdout, format!("sqlite {}: schema version {known} (this plugd knows {known})\n", &db[9..]));

    // Now it starts, heartbeats, and leaves when stopped.
    let mut server = Running::new(serve().spawn());
    listening_on(&mut server, "plugd serve --no-migrate starts on a migrated database");
    assert_eq!(server.terminate(), 0);
    let status = Plugd::new(&["db", "status", "--db", &db]).run().assert_code(0).stdout;
    assert!(status.contains("nodes:           0 live, 1 dead\n"), "{status}");
    assert!(status.contains(" stopped ") && status.contains("serves approval@1.0.0, countdown@1.0.0"), "{status}");
    assert!(status.contains("due invocations no live node serves: none\n"), "{status}");
}

#[test]
fn a_copy_that_stops_names_the_table_and_row() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let Some(database) = rt.block_on(TestDatabase::create("a_copy_that_stops_names_the_table_and_row")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plugd.db");
    add_reported_invocation(&path);
    // A trace id no server makes (a NUL in a key PostgreSQL cannot hold), written behind plugd's back.
    rt.block_on(async {
        let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
        let mut invocation = Invocation::new("countdown", "1.0.0", json!({"from": 0}), json!({}));
        (invocation.trace_id, invocation.state, invocation.invoke_count) =
            ("bad\u{0}id".into(), plugd_sdk::State::Success, 1);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        let new = NewInvocation {
            invocation,
            now,
            poll_after: None,
            deadline: None,
            logs: String::new(),
            reports: Vec::new(),
            report_files: Vec::new(),
            created_by: None,
            callback_timeout: None,
            duration: Duration::ZERO,
        };
        store.insert(new).await.unwrap();
    });
    let sqlite = format!("sqlite://{}", path.display());
    let out = Plugd::new(&["db", "copy", "--from", &sqlite, "--to", database.url()]).run().assert_code(1);
    assert!(
        out.stderr.contains("error: the copy stopped: table invocations, row trace_id \"bad\\0id\": "),
        "{}",
        out.stderr
    );
    rt.block_on(database.drop_database());
}
