//! A `plugd serve` process on a fresh database: a SQLite file of its own, or a PostgreSQL database
//! given (shared by several servers in scenario 7).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub(crate) struct Server {
    child: Child,
    pub(crate) address: SocketAddr,
    dir: tempfile::TempDir,
}

impl Server {
    /// A server on `postgres` (a database URL), else on a new SQLite file.
    pub(crate) fn start(plugd: &Path, postgres: Option<&str>, extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("a temp dir");
        let db = match postgres {
            Some(url) => url.to_owned(),
            None => format!("sqlite://{}", dir.path().join("bench.db").display()),
        };
        let workspace = dir.path().join("workspace").display().to_string();
        // An older build (compared with `--plugd`) may not know `--workspace`; it then uses its own.
        let workspace: &[&str] = if knows_flag(plugd, "--workspace") { &["--workspace", &workspace] } else { &[] };
        let mut child = Command::new(plugd)
            .args(["serve", "--listen", "127.0.0.1:0", "--db", &db, "--default-plugin", "hello"])
            .args(workspace)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {}: {e} (build it with cargo build --release -p plugd)", plugd.display())
            });
        let stderr = child.stderr.take().expect("piped");
        let (found, address) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let _ = found.send(rest.split(' ').next().unwrap_or_default().to_owned());
                } else if line.contains("ERROR") || line.contains("WARN") {
                    eprintln!("   server: {line}");
                }
            }
        });
        let address = address.recv().expect("plugd serve starts").parse().expect("an address");
        Server { child, address, dir }
    }

    pub(crate) fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Sizes of the database file and of its write-ahead log.
    pub(crate) fn database_bytes(&self) -> (u64, u64) {
        let size = |f: &str| std::fs::metadata(self.dir.path().join(f)).map_or(0, |m| m.len());
        (size("bench.db"), size("bench.db-wal"))
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the server as a deploy does (SIGTERM: it drains its executes, gives back its claims and
    /// says it left), and waits for it.
    pub(crate) fn terminate(mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }

    pub(crate) fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `plugd serve` of this build takes `flag`.
fn knows_flag(plugd: &Path, flag: &str) -> bool {
    Command::new(plugd)
        .args(["serve", "--help"])
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains(flag))
}
