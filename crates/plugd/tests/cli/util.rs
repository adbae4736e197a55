use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A `plugd` invocation under test.
#[must_use]
pub(crate) struct Plugd {
    command: Command,
    stdin: Option<String>,
}

/// What a finished `plugd` printed, and its exit code.
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Finished {
    /// The stdout parsed as one JSON value.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    #[track_caller]
    pub(crate) fn assert_code(self, code: i32) -> Finished {
        assert_eq!(self.code, code, "unexpected exit code: {self:#?}");
        self
    }
}

impl From<Output> for Finished {
    fn from(output: Output) -> Finished {
        Finished {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Plugd {
    pub(crate) fn new(args: &[&str]) -> Plugd {
        Plugd::with_binary(std::path::Path::new(env!("CARGO_BIN_EXE_plugd")), args)
    }

    /// The same, for another binary built on `plugd::main`.
    pub(crate) fn with_binary(binary: &std::path::Path, args: &[&str]) -> Plugd {
        let mut command = Command::new(binary);
        command.args(args).env_remove("PLUGD_DEBUG").env_remove("PLUGD_LOG");
        // No installed plugins unless a test installs some.
        command.env("PLUGD_HOME", std::env::temp_dir().join("plugd-tests-empty-home"));
        Plugd { command, stdin: None }
    }

    pub(crate) fn env(mut self, key: &str, value: &str) -> Plugd {
        self.command.env(key, value);
        self
    }

    pub(crate) fn env_remove(mut self, key: &str) -> Plugd {
        self.command.env_remove(key);
        self
    }

    /// Runs plugd in `dir` (its workspace).
    pub(crate) fn current_dir(mut self, dir: &std::path::Path) -> Plugd {
        self.command.current_dir(dir);
        self
    }

    /// Runs plugd as the user `uid` (and group `gid`).
    pub(crate) fn user(mut self, uid: u32, gid: u32) -> Plugd {
        use std::os::unix::process::CommandExt;
        self.command.uid(uid).gid(gid);
        self
    }

    pub(crate) fn stdin(mut self, text: &str) -> Plugd {
        self.stdin = Some(text.to_owned());
        self
    }

    pub(crate) fn run(mut self) -> Finished {
        self.command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = self.command.spawn().expect("plugd starts");
        let mut stdin = child.stdin.take().expect("piped stdin");
        if let Some(text) = self.stdin {
            stdin.write_all(text.as_bytes()).expect("write stdin");
        }
        drop(stdin);
        child.wait_with_output().expect("plugd finishes").into()
    }

    /// Starts plugd with piped stdout and stderr, for tests that talk to it while it runs.
    pub(crate) fn spawn(mut self) -> Child {
        self.command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        self.command.spawn().expect("plugd starts")
    }
}

/// Sends one HTTP/1.1 POST over a fresh connection; returns the status code and body.
pub(crate) fn post(url: &str, body: &str) -> (u16, String) {
    try_request("POST", url, body).unwrap_or_else(|| panic!("POST {url} got no answer"))
}

/// Sends one HTTP/1.1 request; `None` if the server could not be reached.
pub(crate) fn try_request(method: &str, url: &str, body: &str) -> Option<(u16, String)> {
    try_request_with(method, url, body, "")
}

/// The same, with `headers` (`Name: value` lines, each ending in CRLF) added.
pub(crate) fn try_request_with(method: &str, url: &str, body: &str, headers: &str) -> Option<(u16, String)> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut stream = TcpStream::connect(host).ok()?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(30))).ok()?;
    let request = format!(
        "{method} /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{headers}\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((status, body))
}

/// A running plugd, killed if a test ends (or fails) before it does.
pub(crate) struct Running(Option<Child>);

impl Running {
    /// Starts watching `child`.
    pub(crate) fn new(child: Child) -> Running {
        Running(Some(child))
    }

    /// The child, still running.
    pub(crate) fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("the child is still held")
    }

    /// Its process id.
    pub(crate) fn id(&self) -> u32 {
        self.0.as_ref().expect("the child is still held").id()
    }

    /// The child, no longer killed on drop.
    pub(crate) fn release(mut self) -> Child {
        self.0.take().expect("the child is still held")
    }

    /// Stops the child as a deploy does (SIGTERM) and waits for it: its exit code.
    pub(crate) fn terminate(self) -> i32 {
        let mut child = self.release();
        let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        assert!(status.success());
        child.wait().unwrap().code().unwrap_or(-1)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Each line of the child's standard error, as it comes. The pipe is read to its end even when
/// nobody listens any more, so that the child never blocks (or dies) writing to it.
pub(crate) fn stderr_lines(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let stderr = child.stderr.take().expect("standard error is piped");
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    lines
}

/// Waits, 30 s at the most, for a `plugd serve` child to log `listening on <address>`; the
/// address, as a base URL. Panics with `starts` when it does not come.
pub(crate) fn listening_on(child: &mut Running, starts: &str) -> String {
    let lines = stderr_lines(child.child());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line = lines.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect(starts);
        if let Some(rest) = line.split("listening on ").nth(1) {
            return rest.split(' ').next().unwrap_or_default().to_owned();
        }
    }
}

/// Reads one HTTP/1.1 request from a connection: its head (request line and headers, as sent)
/// and its body (`Content-Length` bytes). A head cut short ends where it was cut.
pub(crate) fn read_request(reader: &mut impl BufRead) -> std::io::Result<(String, Vec<u8>)> {
    let (mut head, mut length) = (String::new(), 0);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().unwrap_or(0);
        }
        head.push_str(&line);
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok((head, body))
}

/// Answers a request with `status` and the JSON `body`, closing the connection.
pub(crate) fn respond_json(stream: &mut impl Write, status: u16, body: &str) {
    let response = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes());
}

/// `plugd serve --listen 127.0.0.1:0 --db <db> --workspace <workspace> <extra>...`, once it
/// listens: the process and its base URL. Panics with `starts` when it does not start.
pub(crate) fn serve_in_workspace(
    db: &str,
    workspace: &std::path::Path,
    extra: &[&str],
    starts: &str,
) -> (Running, String) {
    let workspace = workspace.display().to_string();
    let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--db", db, "--workspace", &workspace];
    args.extend_from_slice(extra);
    let mut child = Running::new(Plugd::new(&args).spawn());
    let base = listening_on(&mut child, starts);
    (child, base)
}
