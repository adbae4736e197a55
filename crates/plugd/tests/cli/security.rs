use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::serve::{database, Server};
use crate::util::{try_request_with, Plugd};

#[test]
fn host_acting_plugins_are_served_only_when_enabled() {
    let (_dir, db) = database();
    let server = Server::start(&db, &[]);
    let meta = server.get("/plugins/command/bk_plugin/meta");
    assert_eq!(meta["result"], false);
    assert_eq!(meta["message"], "unknown plugin \"command\"; available plugins: approval, countdown, hello");
    drop(server);

    let db_url = format!("sqlite://{}", db.display());
    let out = Plugd::new(&["serve", "--db", &db_url, "--enable-plugin", "hello"]).run().assert_code(2);
    assert!(
        out.stderr.ends_with(
            "error: --enable-plugin \"hello\": only these plugins need enabling: command, webhook, email, amqp, gitlab-pipeline\n"
        ),
        "{}",
        out.stderr
    );

    let server = Server::start(&db, &["--enable-plugin", "command,webhook"]);
    let done = server.invoke("command", "1.0.0", json!({"command": "true"}), json!({})).unwrap();
    assert_eq!(done["data"]["state"], 4, "{done}");
    assert_eq!(server.get("/plugins/webhook/bk_plugin/meta")["result"], true);
    assert_eq!(server.get("/plugins/email/bk_plugin/meta")["result"], false);
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|status| status.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")))
}

#[test]
#[ignore = "needs root and setpriv: runs the server as nobody"]
fn a_plugin_cannot_read_the_servers_tokens_or_secret() {
    // Root may read any process's memory whatever it does; the protection is for the usual
    // deployment, plugd and its plugins under one unprivileged user: run the server as `nobody`.
    let setpriv = Path::new("/usr/bin/setpriv");
    assert!(is_root() && setpriv.exists(), "this test needs root and /usr/bin/setpriv");
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let plugd = env!("CARGO_BIN_EXE_plugd");
    let nobody = ["--reuid=65534", "--regid=65534", "--clear-groups", plugd];
    let secrets =
        [("PLUGD_AUTH_TOKENS", "ci:tok-ci,sops:tok-sops-0123"), ("PLUGD_CALLBACK_SECRET", "callback-secret-4567")];
    let server = Server::start_wrapped(
        setpriv,
        &nobody,
        &dir.path().join("plugd.db"),
        &["--enable-plugin", "command"],
        &secrets,
    );
    let pid = server.pid();
    for file in ["environ", "maps", "mem", "cmdline"] {
        let body = json!({"inputs": {"command": "cat", "args": [format!("/proc/{pid}/{file}")]}, "context": {}});
        let url = format!("{}/plugins/command/bk_plugin/invoke/1.0.0", server.base);
        let (status, reply) =
            try_request_with("POST", &url, &body.to_string(), "Authorization: Bearer tok-ci\r\n").unwrap();
        assert_eq!(status, 200, "{reply}");
        let reply: Value = serde_json::from_str(&reply).unwrap();
        let trace_id = reply["trace_id"].as_str().unwrap();
        let schedule = server.get(&format!("/plugins/command/bk_plugin/schedule/{trace_id}")).to_string();
        for text in [reply.to_string(), schedule] {
            assert!(!text.contains("tok-sops-0123") && !text.contains("callback-secret-4567"), "{file}: {text}");
        }
        if file != "cmdline" {
            assert_eq!(reply["data"]["state"], 5, "{file}: {reply}");
            assert!(reply["data"]["err"].as_str().unwrap().contains("Permission denied"), "{file}: {reply}");
        }
    }
}

/// The resident memory of process `pid`, in kilobytes.
fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn slow_clients_cannot_exhaust_the_server() {
    let (_dir, db) = database();
    let server = Server::start(&db, &["--max-connections", "200", "--header-read-timeout", "1s"]);
    let address = server.base.strip_prefix("http://").unwrap().to_owned();
    let before = rss_kb(server.pid());

    // A request head that never ends is cut off; so is a body announced but never sent.
    let mut half = TcpStream::connect(&address).unwrap();
    half.write_all(b"POST /bk_plugin/invoke/1.0.0 HTTP/1.1\r\nHost: 127.0.0.1\r\n").unwrap();
    half.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    assert!(matches!(half.read(&mut [0u8; 64]), Ok(0) | Err(_)));
    assert!(started.elapsed() < Duration::from_secs(4), "closed after {:?}", started.elapsed());
    let mut huge = TcpStream::connect(&address).unwrap();
    let head = "POST /bk_plugin/invoke/1.0.0 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
                Content-Length: 1000000000000\r\n\r\n{}";
    huge.write_all(head.as_bytes()).unwrap();
    huge.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = [0u8; 64];
    let n = huge.read(&mut answer).unwrap();
    assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 413"));

    // A thousand half-sent requests, five times the connection cap.
    let attackers: Vec<TcpStream> = (0..1000)
        .filter_map(|_| {
            let mut stream = TcpStream::connect(&address).ok()?;
            let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ");
            Some(stream)
        })
        .collect();
    assert!(attackers.len() > 900, "only {} connected", attackers.len());
    let started = Instant::now();
    let health = loop {
        if let Some(answer) = crate::util::try_request("GET", &format!("{}/healthz", server.base), "") {
            break answer;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "/healthz never answered");
    };
    assert_eq!(health.0, 200);
    let during = rss_kb(server.pid());
    assert!(during < before + 64 * 1024, "RSS grew from {before} kB to {during} kB");
    drop(attackers);
    eprintln!("slow clients: RSS {before} kB before, {during} kB during; /healthz after {:?}", started.elapsed());
}

#[test]
fn a_workspace_holding_plugd_s_own_files_is_refused() {
    // Reports copy files of the workspace to callers: the database holds the callback secret.
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}", dir.path().join("plugd.db").display());
    let workspace = dir.path().display().to_string();
    let out = Plugd::new(&["serve", "--db", &db_url, "--workspace", &workspace]).run().assert_code(2);
    assert!(out.stderr.contains(&format!("the workspace {workspace} holds")), "{}", out.stderr);
    assert!(out.stderr.contains("plugd.db: plugins could report it to their callers"), "{}", out.stderr);
    let secret = dir.path().join("ws/secret");
    std::fs::create_dir_all(dir.path().join("ws")).unwrap();
    std::fs::write(&secret, "0123456789abcdef0123").unwrap();
    let args = ["serve", "--db", &db_url, "--workspace", &format!("{workspace}/ws"), "--callback-secret-file"];
    let mut args = args.to_vec();
    let secret_path = secret.display().to_string();
    args.push(&secret_path);
    let out = Plugd::new(&args).run().assert_code(2);
    assert!(out.stderr.contains("secret: plugins could report it"), "{}", out.stderr);
    assert!(!dir.path().join("plugd.db").exists(), "nothing was created before the refusal");
}

#[test]
fn the_panels_plugin_list_shows_folder_paths_only_to_known_callers() {
    let (dir, db) = database();
    let folder = dir.path().join("plugins").join("greeter");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("plugin.yaml"), "id: greeter\nversion: 1.0.0\nentry:\n  start: [\"true\"]\n").unwrap();
    let folder = folder.canonicalize().unwrap().display().to_string();
    let server = Server::start_env(&db, &["--plugins", &folder], &[("PLUGD_AUTH_TOKENS", "ci:tok-panel-9")]);
    let source = |headers: &str| {
        let (status, body) = try_request_with("GET", &format!("{}/ui/api/plugins", server.base), "", headers).unwrap();
        assert_eq!(status, 200, "{body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        let greeter = body["data"]["plugins"].as_array().unwrap().iter().find(|p| p["name"] == "greeter").cloned();
        greeter.unwrap()["versions"][0]["source"].as_str().unwrap().to_owned()
    };
    assert_eq!(source(""), "greeter/plugin.yaml", "an anonymous caller sees no more than the folder's name");
    let known = source("Authorization: Bearer tok-panel-9\r\n");
    assert_eq!(known, format!("{folder}/plugin.yaml"), "a caller with a token sees where it is");
}
