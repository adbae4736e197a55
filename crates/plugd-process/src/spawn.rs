//! Runs a plugin process safely: argv only (no shell), a cleared environment, its own process
//! group (killed on timeout and when plugd gives up on it), and capped output.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tracing::Instrument;

/// Bytes of each of stdout and stderr kept as logs; the rest is read and dropped.
const MAX_LOG: usize = 1024 * 1024;
/// Lines kept to explain a failure.
const TAIL_LINES: usize = 20;
/// Longest line kept; the rest of a longer line is read and dropped.
const MAX_LINE: u64 = 64 * 1024;
/// How long output may keep flowing after the process group is gone (a descendant that left the
/// group can hold the pipes open forever).
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Environment variables passed through from plugd's own environment; everything else is cleared.
/// The proxy and CA settings are the machine's network configuration: without them a plugin
/// behind a proxy cannot install or fetch anything.
pub(crate) const ENV_ALLOWLIST: [&str; 17] = [
    "PATH",
    "HOME",
    "USER",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "TERM",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

pub(crate) struct Spawn<'a> {
    pub(crate) argv: &'a [String],
    /// The plugin folder: a program given as a relative path (`./run.sh`) is found here.
    pub(crate) plugin_dir: &'a Path,
    pub(crate) cwd: &'a Path,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) stdin: Vec<u8>,
    pub(crate) timeout: Duration,
    /// Copy the plugin's output to plugd's standard error as it comes (`plugd run`).
    pub(crate) echo: bool,
}

#[derive(Debug)]
pub(crate) struct Finished {
    /// The exit code; `None` when a signal ended the process.
    pub(crate) code: Option<i32>,
    pub(crate) timed_out: bool,
    /// The last lines of stderr (or of stdout when stderr is empty).
    pub(crate) tail: String,
}

/// Kills the process group if the run is abandoned (its future dropped, or a timeout).
struct GroupGuard(Option<Pid>);

impl GroupGuard {
    fn kill(&mut self) {
        if let Some(pid) = self.0.take() {
            // ESRCH (already gone) is fine.
            let _ = killpg(pid, Signal::SIGKILL);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

fn program(argv0: &str, plugin_dir: &Path) -> PathBuf {
    let path = Path::new(argv0);
    if path.is_relative() && argv0.contains('/') {
        plugin_dir.join(path)
    } else {
        path.to_owned()
    }
}

/// Reads lines (each at most `MAX_LINE`), logs them inside the current span, keeps a shared tail
/// of both streams in arrival order, drops what exceeds the cap.
async fn drain(stream: impl AsyncRead + Unpin, name: &'static str, echo: bool, tail: Tail) {
    let mut reader = BufReader::new(stream);
    let (mut kept, mut line) = (0usize, Vec::new());
    loop {
        line.clear();
        let read = (&mut reader).take(MAX_LINE).read_until(b'\n', &mut line).await;
        if matches!(read, Ok(n) if n as u64 == MAX_LINE && !line.ends_with(b"\n")) {
            skip_line(&mut reader).await;
        }
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let text = String::from_utf8_lossy(&line).trim_end_matches(['\n', '\r']).to_owned();
                if kept < MAX_LOG {
                    kept += n;
                    if kept >= MAX_LOG {
                        tracing::warn!(target: "plugd::plugin", stream = name, "output over {MAX_LOG} bytes: the rest is not kept");
                    } else {
                        tracing::info!(target: "plugd::plugin", stream = name, "{text}");
                    }
                    if echo {
                        eprintln!("{text}");
                    }
                }
                let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
                tail.push_back(text);
                if tail.len() > TAIL_LINES {
                    tail.pop_front();
                }
            }
        }
    }
}

/// Reads and drops the rest of an over-long line a buffer at a time, so that a plugin printing
/// without newlines cannot grow plugd's memory.
async fn skip_line(reader: &mut (impl AsyncBufRead + Unpin)) {
    loop {
        let Ok(buffer) = reader.fill_buf().await else { return };
        if buffer.is_empty() {
            return;
        }
        match buffer.iter().position(|&b| b == b'\n') {
            Some(newline) => return reader.consume(newline + 1),
            None => {
                let all = buffer.len();
                reader.consume(all);
            }
        }
    }
}

/// The last lines of stdout and stderr together, in the order they came.
type Tail = std::sync::Arc<std::sync::Mutex<VecDeque<String>>>;

pub(crate) async fn run(spawn: Spawn<'_>) -> Result<Finished, String> {
    let Some(argv0) = spawn.argv.first().filter(|a| !a.is_empty()) else {
        return Err("the command is empty".into());
    };
    let program = program(argv0, spawn.plugin_dir);
    let mut command = tokio::process::Command::new(&program);
    command
        .args(&spawn.argv[1..])
        .current_dir(spawn.cwd)
        .env_clear()
        .envs(spawn.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|e| format!("cannot start {}: {e}", program.display()))?;
    let mut guard = GroupGuard(child.id().and_then(|id| i32::try_from(id).ok()).map(Pid::from_raw));
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = spawn.stdin;
    let feeder = tokio::spawn(async move {
        // A plugin that does not read its input closes the pipe early: not an error.
        let _ = stdin.write_all(&input).await;
    });
    // The readers log inside the execute's span, so that its logs are the invocation's.
    let span = tracing::Span::current();
    let tail: Tail = Default::default();
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let stdout = tokio::spawn(drain(stdout, "stdout", spawn.echo, tail.clone()).instrument(span.clone()));
    let stderr = tokio::spawn(drain(stderr, "stderr", spawn.echo, tail.clone()).instrument(span));
    let (code, timed_out) = match tokio::time::timeout(spawn.timeout, child.wait()).await {
        Ok(status) => (status.map_err(|e| format!("waiting for the plugin failed: {e}"))?.code(), false),
        Err(_) => {
            guard.kill();
            let _ = child.wait().await;
            (None, true)
        }
    };
    // Whatever the plugin left running in its group goes too, so nothing holds the pipes open...
    guard.kill();
    feeder.abort();
    // ...and a descendant that left the group gets a short grace, then its output is abandoned.
    for reader in [stdout, stderr] {
        let abort = reader.abort_handle();
        if tokio::time::timeout(DRAIN_GRACE, reader).await.is_err() {
            abort.abort();
            tracing::warn!(
                "a process outside the plugin's process group still holds its output open; stopped reading it"
            );
        }
    }
    let tail = Vec::from(std::mem::take(&mut *tail.lock().unwrap_or_else(|p| p.into_inner())));
    Ok(Finished { code, timed_out, tail: tail.join("\n") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_rest_of_an_over_long_line_is_dropped_up_to_its_newline() {
        let mut output = vec![b'x'; 3 * 1024 * 1024];
        output.extend_from_slice(b"\nnext\n");
        let mut reader = BufReader::with_capacity(8192, output.as_slice());
        skip_line(&mut reader).await;
        let mut rest = String::new();
        reader.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "next\n");
        let mut reader = BufReader::new(&b"no newline at all"[..]);
        skip_line(&mut reader).await;
        assert_eq!(reader.read_to_string(&mut rest).await.unwrap(), 0);
    }
}
