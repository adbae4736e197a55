//! Runs a plugin process safely: argv only (no shell), a cleared environment, its own process
//! group (killed on timeout and when plugd gives up on it), under a reaper that kills whatever it
//! left behind (see [`crate::reaper`]), optionally as another user, and capped output.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tracing::Instrument;

use crate::PluginUser;

/// Bytes of each of stdout and stderr kept as logs; the rest is read and dropped.
const MAX_LOG: usize = 1024 * 1024;
/// Lines kept to explain a failure.
const TAIL_LINES: usize = 20;
/// Longest line kept; the rest of a longer line is read and dropped.
const MAX_LINE: u64 = 64 * 1024;
/// How long output may keep flowing after the process group is gone, for both streams together (a
/// descendant that left the group, without a reaper, can hold the pipes open forever).
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// plugd's secrets: never in a plugin's environment, whoever runs it.
pub(crate) const WITHHELD_ENV: [&str; 4] =
    ["PLUGD_AUTH_TOKENS", "PLUGD_ADMIN_TOKENS", "PLUGD_CALLBACK_SECRET", "PLUGD_CALLBACK_SECRET_FILE"];

/// Environment variables passed through from plugd's own environment under `plugd serve`;
/// everything else is cleared (see [`crate::ProcessOptions::inherit_env`]).
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
    /// The whole environment (it is cleared first); a variable that holds a NUL byte is left out
    /// (see [`fits_environment`]).
    pub(crate) env: Vec<(String, String)>,
    pub(crate) stdin: Vec<u8>,
    pub(crate) timeout: Duration,
    /// Copy the plugin's output to plugd's standard error as it comes (`plugd run`).
    pub(crate) echo: bool,
    /// Run the process under this program's reaper (see [`crate::reaper`]).
    pub(crate) reaper: Option<&'a Path>,
    /// Run the process as this user.
    pub(crate) user: Option<&'a PluginUser>,
}

#[derive(Debug)]
pub(crate) struct Finished {
    /// The exit code; `None` when a signal ended the process.
    pub(crate) code: Option<i32>,
    /// The signal that ended the process.
    pub(crate) signal: Option<i32>,
    pub(crate) timed_out: bool,
    /// The last lines of stderr (or of stdout when stderr is empty).
    pub(crate) tail: String,
}

/// How long a reaper asked to stop may take before its process group is killed outright.
const REAPER_GRACE: Duration = Duration::from_secs(1);

/// The running process (the plugin, or its reaper), leader of its own process group. Dropped
/// before it was waited for (the execute abandoned), it is stopped: a reaper is asked to stop (so
/// that it kills everything below it) and its group killed if it has not within [`REAPER_GRACE`];
/// without a reaper the group is killed at once.
struct Running {
    child: Option<tokio::process::Child>,
    pid: Option<Pid>,
    reaper: bool,
}

impl Running {
    /// Kills the process group (what is left of it); ESRCH (already gone) is fine.
    fn kill_group(&self) {
        if let Some(pid) = self.pid {
            let _ = killpg(pid, Signal::SIGKILL);
        }
    }

    /// Waits for the process to end.
    async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        let child = self.child.as_mut().expect("a running process");
        let status = child.wait().await;
        if status.is_ok() {
            self.child = None;
        }
        status
    }

    /// Stops the process (a timeout): a reaper is asked to stop, then killed if it takes too long.
    async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        if let (true, Some(pid)) = (self.reaper, self.pid) {
            let _ = kill(pid, Signal::SIGTERM);
            match tokio::time::timeout(REAPER_GRACE, child.wait()).await {
                Ok(_) => return,
                Err(_) => {
                    tracing::warn!(
                        "the plugin's reaper did not stop within {REAPER_GRACE:?}; killing its process group"
                    )
                }
            }
        }
        self.kill_group();
        let _ = child.wait().await;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let (Some(pid), true) = (self.pid, self.reaper) else {
            // No reaper: the group goes now (and tokio kills and reaps the child).
            self.kill_group();
            return;
        };
        let _ = kill(pid, Signal::SIGTERM);
        // The child is not reaped until `try_wait` sees it end, so its pid (and group) stay its own.
        let spawned = std::thread::Builder::new().name("plugd-reaper-stop".into()).spawn(move || {
            let deadline = std::time::Instant::now() + REAPER_GRACE;
            while std::time::Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            // Whatever is left of its group (nothing, unless the reaper died before it could work).
            let _ = killpg(pid, Signal::SIGKILL);
            for _ in 0..250 {
                if !matches!(child.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        if spawned.is_err() {
            let _ = killpg(pid, Signal::SIGKILL);
        }
    }
}

/// Whether a variable can be in a process's environment: each reaches the kernel as a
/// NUL-terminated `NAME=value` string, so a NUL byte in either part cannot be passed (and would fail
/// the whole spawn). [`run`] leaves such a variable out, whatever built it (`PLUGD_INPUT_<NAME>`, a
/// qci `entry.env` `$var`, `command`'s `env`): one rule in one place. A process plugin still reads
/// every input whole from stdin.
pub(crate) fn fits_environment(name: &str, value: &str) -> bool {
    !name.contains('\0') && !value.contains('\0')
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
                let raw = String::from_utf8_lossy(&line).trim_end_matches(['\n', '\r']).to_owned();
                // Colour codes are for terminals: the echo keeps them, logs and errors do not.
                let text = strip_ansi_escapes::strip_str(&raw);
                if kept < MAX_LOG {
                    kept += n;
                    if kept >= MAX_LOG {
                        tracing::warn!(target: "plugd::plugin", stream = name, "output over {MAX_LOG} bytes: the rest is not kept");
                    } else {
                        tracing::info!(target: "plugd::plugin", stream = name, "{text}");
                    }
                    if echo {
                        eprintln!("{raw}");
                    }
                }
                keep_last(&tail, text, TAIL_LINES);
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
pub(crate) type Tail = std::sync::Arc<std::sync::Mutex<VecDeque<String>>>;

/// Adds `line` to `tail`, keeping only the last `lines` lines: the one rule of a process's output
/// tail (plugin processes here, Python hosts in `bk::pool`).
pub(crate) fn keep_last(tail: &Tail, line: String, lines: usize) {
    let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
    tail.push_back(line);
    if tail.len() > lines {
        tail.pop_front();
    }
}

pub(crate) async fn run(spawn: Spawn<'_>) -> Result<Finished, String> {
    let Some(argv0) = spawn.argv.first().filter(|a| !a.is_empty()) else {
        return Err("the command is empty".into());
    };
    let program = program(argv0, spawn.plugin_dir);
    let mut env = spawn.env;
    if let Some(user) = spawn.user {
        user.apply_env(&mut env);
    }
    env.retain(|(name, value)| {
        let fits = fits_environment(name, value);
        if !fits {
            // The name only: the value is caller data, maybe a secret.
            tracing::debug!("{name:?} is left out of the environment: it holds a NUL byte");
        }
        fits
    });
    let mut command = match spawn.reaper {
        Some(reaper) => {
            let mut command = tokio::process::Command::new(reaper);
            command.arg(crate::reaper::REAPER_ARG).arg("--parent").arg(std::process::id().to_string());
            if let Some(user) = spawn.user {
                command.args(["--uid", &user.uid.to_string(), "--gid", &user.gid.to_string()]);
            }
            command.arg("--").arg(&program);
            command
        }
        None => {
            let mut command = tokio::process::Command::new(&program);
            if let Some(user) = spawn.user {
                // As root, std also drops the supplementary groups before it changes user.
                command.gid(user.gid).uid(user.uid);
            }
            command
        }
    };
    command
        .args(&spawn.argv[1..])
        .current_dir(spawn.cwd)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        // A reaper is stopped by `Running`, never killed first (its orphans would escape to init).
        .kill_on_drop(spawn.reaper.is_none());
    let mut child = command.spawn().map_err(|e| match spawn.reaper {
        Some(reaper) => format!("cannot start {} (the reaper of {}): {e}", reaper.display(), program.display()),
        None => format!("cannot start {}: {e}", program.display()),
    })?;
    let pid = child.id().and_then(|id| i32::try_from(id).ok()).map(Pid::from_raw);
    let mut stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let mut running = Running { child: Some(child), pid, reaper: spawn.reaper.is_some() };
    let input = spawn.stdin;
    let feeder = tokio::spawn(async move {
        // A plugin that does not read its input closes the pipe early: not an error.
        let _ = stdin.write_all(&input).await;
    });
    // The readers log inside the execute's span, so that its logs are the invocation's.
    let span = tracing::Span::current();
    let tail: Tail = Default::default();
    let stdout = tokio::spawn(drain(stdout, "stdout", spawn.echo, tail.clone()).instrument(span.clone()));
    let stderr = tokio::spawn(drain(stderr, "stderr", spawn.echo, tail.clone()).instrument(span));
    let (status, timed_out) = match tokio::time::timeout(spawn.timeout, running.wait()).await {
        Ok(status) => (Some(status.map_err(|e| format!("waiting for the plugin failed: {e}"))?), false),
        Err(_) => {
            running.stop().await;
            (None, true)
        }
    };
    // Whatever the plugin left running in its group goes too, so nothing holds the pipes open (a
    // reaper has killed everything below it already)...
    running.kill_group();
    feeder.abort();
    // ...and a process that escaped both still holding the output gets a short grace, two seconds
    // for both streams together, then its output is abandoned.
    let deadline = tokio::time::Instant::now() + DRAIN_GRACE;
    let mut abandoned = false;
    for reader in [stdout, stderr] {
        let abort = reader.abort_handle();
        if tokio::time::timeout_at(deadline, reader).await.is_err() {
            abort.abort();
            abandoned = true;
        }
    }
    if abandoned {
        tracing::warn!("a process outside the plugin's process group still holds its output open; stopped reading it");
    }
    let tail = Vec::from(std::mem::take(&mut *tail.lock().unwrap_or_else(|p| p.into_inner())));
    Ok(Finished {
        code: status.and_then(|s| s.code()),
        signal: status.and_then(|s| s.signal()),
        timed_out,
        tail: tail.join("\n"),
    })
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
