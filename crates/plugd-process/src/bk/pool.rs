//! The pool of Python hosts of one bk-plugin project: persistent processes that imported the
//! project once and answer executes as JSON lines over pipes, several at once each (threads).
//!
//! A host that exits, or that an execute outlives its timeout on, is killed (with everything it
//! started, through the reaper) and replaced at the next execute. The execute that timed out fails;
//! the others that were under way on that host are run again, each alone on a fresh host, so that
//! the one that brought the host down fails and the rest succeed (executes are at-least-once).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::{oneshot, Semaphore};

use crate::spawn::{keep_last, Tail};
use crate::PluginUser;

/// The longest answer line a host may write; a longer one kills the host.
const MAX_MESSAGE: u64 = 32 * 1024 * 1024;
/// How long a new host may take to import the project.
const MAX_START: Duration = Duration::from_secs(120);
/// Bytes of a host's standard error kept as logs; the rest is read and dropped.
const MAX_STDERR_LOG: usize = 4 * 1024 * 1024;
/// Lines of standard error kept to explain a host that would not start.
const TAIL_LINES: usize = 30;
/// How long a reaper asked to stop may take before its process group is killed outright.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// How hosts of a project are started.
#[derive(Debug, Clone)]
pub(crate) struct HostConfig {
    pub(crate) python: PathBuf,
    pub(crate) script: PathBuf,
    pub(crate) project: PathBuf,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) reaper: Option<PathBuf>,
    pub(crate) user: Option<PluginUser>,
    pub(crate) threads: usize,
    pub(crate) hosts: usize,
    pub(crate) timeout: Duration,
    pub(crate) echo: bool,
}

impl HostConfig {
    /// `plugd_bkhost.py <mode> <project>` in the project's folder, through the reaper if there is
    /// one, as the plugin user if there is one, with only the configured environment, its output
    /// and errors piped, in a process group of its own. The caller adds what the mode takes and
    /// standard input.
    pub(crate) fn command(&self, mode: &str) -> std::process::Command {
        use std::os::unix::process::CommandExt;
        let mut command = match &self.reaper {
            Some(reaper) => {
                let mut command = std::process::Command::new(reaper);
                command.arg(crate::reaper::REAPER_ARG).arg("--parent").arg(std::process::id().to_string());
                if let Some(user) = &self.user {
                    command.args(["--uid", &user.uid.to_string(), "--gid", &user.gid.to_string()]);
                }
                command.arg("--").arg(&self.python);
                command
            }
            None => {
                let mut command = std::process::Command::new(&self.python);
                if let Some(user) = &self.user {
                    command.gid(user.gid).uid(user.uid);
                }
                command
            }
        };
        let mut env = self.env.clone();
        if let Some(user) = &self.user {
            user.apply_env(&mut env);
        }
        command
            .arg(&self.script)
            .arg(mode)
            .arg(&self.project)
            .current_dir(&self.project)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        command
    }
}

/// One execute's answer, as the host writes it.
#[derive(Debug, Deserialize)]
pub(crate) struct Reply {
    id: u64,
    /// The nonce of the message it answers: an answer with another one was not written by the
    /// execute it names.
    #[serde(default)]
    nonce: String,
    pub(crate) result: String,
    #[serde(default)]
    pub(crate) message: Option<String>,
    #[serde(default)]
    pub(crate) poll_after: Option<f64>,
    #[serde(default)]
    pub(crate) storage: Map<String, Value>,
    #[serde(default)]
    pub(crate) outputs: Map<String, Value>,
    #[serde(default)]
    pub(crate) logs: Vec<(String, String)>,
    /// A data-source call's HTTP status.
    #[serde(default)]
    pub(crate) status: Option<u16>,
    /// A data-source call's JSON answer.
    #[serde(default)]
    pub(crate) data: Value,
}

/// Why an execute got no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HostError {
    /// The host went away while it ran (it crashed, or another execute's timeout killed it).
    #[error("the Python host {0} while running this execute")]
    Died(String),
    /// This execute ran past the timeout; its host was killed.
    #[error("the execute timed out after {}s; its Python host was killed", .0.as_secs_f64())]
    TimedOut(Duration),
    /// No host could be started.
    #[error("{0}")]
    Start(String),
}

/// The executes a host was given and not yet answered: by id, each with its nonce.
type Pending = Arc<Mutex<HashMap<u64, (String, oneshot::Sender<Result<Reply, String>>)>>>;

/// A running host.
struct Host {
    writer: tokio::sync::Mutex<ChildStdin>,
    pending: Pending,
    in_flight: AtomicUsize,
    dead: Arc<AtomicBool>,
    /// Set when the host was told to go; its process is stopped by the task that waits for it.
    stop: Mutex<Option<oneshot::Sender<()>>>,
}

impl Host {
    fn kill(&self) {
        self.dead.store(true, Ordering::SeqCst);
        if let Some(stop) = self.stop.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The hosts of one project.
pub(crate) struct Pool {
    config: HostConfig,
    hosts: tokio::sync::Mutex<Vec<Arc<Host>>>,
    permits: Semaphore,
    isolated: Semaphore,
    next_id: AtomicU64,
}

impl Pool {
    pub(crate) fn new(config: HostConfig) -> Pool {
        let permits = Semaphore::new(config.hosts.max(1) * config.threads.max(1));
        let isolated = Semaphore::new(config.hosts.max(1));
        Pool { config, hosts: tokio::sync::Mutex::new(Vec::new()), permits, isolated, next_id: AtomicU64::new(1) }
    }

    /// Runs one execute (`message` without its id) and returns the host's answer.
    pub(crate) async fn execute(&self, message: Map<String, Value>) -> Result<Reply, HostError> {
        let started = tokio::time::Instant::now();
        let result = {
            let _permit = self.permits.acquire().await.map_err(|e| HostError::Start(e.to_string()))?;
            let host = self.host().await?;
            self.send(&host, message.clone(), self.config.timeout).await
        };
        match result {
            Err(HostError::Died(why)) => {
                // Run again alone, on a host of its own: if it was the one that brought the host
                // down, it fails now; if not, it succeeds.
                tracing::warn!("the Python host {why}; running the execute again on a host of its own");
                let _permit = self.isolated.acquire().await.map_err(|e| HostError::Start(e.to_string()))?;
                let host = Arc::new(start(&self.config).await?);
                let left = self.config.timeout.saturating_sub(started.elapsed()).max(Duration::from_secs(1));
                let result = self.send(&host, message, left).await;
                host.kill();
                result
            }
            other => other,
        }
    }

    /// A live host to send to: the least busy, or a new one while the pool is not full and all
    /// are busy.
    async fn host(&self) -> Result<Arc<Host>, HostError> {
        let mut hosts = self.hosts.lock().await;
        hosts.retain(|h| !h.dead.load(Ordering::SeqCst));
        let least = hosts.iter().min_by_key(|h| h.in_flight.load(Ordering::SeqCst)).cloned();
        match least {
            Some(host) if host.in_flight.load(Ordering::SeqCst) == 0 || hosts.len() >= self.config.hosts => Ok(host),
            _ => {
                let host = Arc::new(start(&self.config).await?);
                hosts.push(host.clone());
                Ok(host)
            }
        }
    }

    async fn send(
        &self,
        host: &Arc<Host>,
        mut message: Map<String, Value>,
        timeout: Duration,
    ) -> Result<Reply, HostError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // Ids are guessable; the nonce is not: one execute cannot answer for another of its host.
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        message.insert("id".into(), id.into());
        message.insert("nonce".into(), nonce.clone().into());
        let mut line = Value::Object(message).to_string().into_bytes();
        line.push(b'\n');
        let (tx, rx) = oneshot::channel();
        host.pending.lock().unwrap_or_else(|p| p.into_inner()).insert(id, (nonce, tx));
        host.in_flight.fetch_add(1, Ordering::SeqCst);
        let _done = InFlight(host);
        if host.dead.load(Ordering::SeqCst) {
            return Err(HostError::Died("was gone".into()));
        }
        {
            let mut writer = host.writer.lock().await;
            if let Err(e) = async {
                writer.write_all(&line).await?;
                writer.flush().await
            }
            .await
            {
                host.kill();
                return Err(HostError::Died(format!("could not be written to ({e})")));
            }
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(reply))) => Ok(reply),
            Ok(Ok(Err(why))) => Err(HostError::Died(why)),
            Ok(Err(_)) => Err(HostError::Died("went away".into())),
            Err(_) => {
                host.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                host.kill();
                Err(HostError::TimedOut(timeout))
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.hosts.get_mut().iter().for_each(|h| h.kill());
    }
}

/// Counts an execute out of its host's in-flight number when it ends, however it ends.
struct InFlight<'a>(&'a Arc<Host>);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Starts a host and waits until it has imported the project.
async fn start(config: &HostConfig) -> Result<Host, HostError> {
    let mut command = tokio::process::Command::from(config.command("serve"));
    command.arg(config.threads.max(1).to_string()).stdin(Stdio::piped()).kill_on_drop(config.reaper.is_none());
    let mut child = command
        .spawn()
        .map_err(|e| HostError::Start(format!("cannot start the Python host ({}): {e}", config.python.display())))?;
    let pid = child.id().and_then(|id| i32::try_from(id).ok()).map(Pid::from_raw);
    let stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let tail: Tail = Default::default();
    tokio::spawn(drain_stderr(stderr, config.echo, tail.clone()));
    let mut lines = BufReader::new(stdout);
    let ready = tokio::time::timeout(MAX_START, read_line(&mut lines)).await;
    let failed = |why: String| {
        let _ = pid.map(|pid| killpg(pid, Signal::SIGKILL));
        let tail = Vec::from(tail.lock().unwrap_or_else(|p| p.into_inner()).clone()).join("\n");
        let tail = if tail.is_empty() { String::new() } else { format!(":\n{tail}") };
        HostError::Start(format!("the Python host of {} {why}{tail}", config.project.display()))
    };
    let first = match ready {
        Err(_) => return Err(failed(format!("did not import the project within {}s", MAX_START.as_secs()))),
        Ok(Err(e)) => return Err(failed(e)),
        Ok(Ok(None)) => {
            let status = child.wait().await.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
            return Err(failed(format!("exited before it was ready ({status})")));
        }
        Ok(Ok(Some(line))) => line,
    };
    let first: Value = serde_json::from_str(&first).map_err(|e| failed(format!("said something unexpected: {e}")))?;
    if let Some(fatal) = first.get("fatal").and_then(Value::as_str) {
        return Err(HostError::Start(format!("cannot import the project {}:\n{fatal}", config.project.display())));
    }
    let pending: Pending = Default::default();
    let dead = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = oneshot::channel();
    tokio::spawn(read_replies(lines, pending.clone(), dead.clone(), child, pid, config.reaper.is_some(), stop_rx));
    Ok(Host {
        writer: tokio::sync::Mutex::new(stdin),
        pending,
        in_flight: AtomicUsize::new(0),
        dead,
        stop: Mutex::new(Some(stop_tx)),
    })
}

/// Reads one line of at most [`MAX_MESSAGE`] bytes; `None` at the end of the stream.
async fn read_line(reader: &mut (impl tokio::io::AsyncBufRead + Unpin)) -> Result<Option<String>, String> {
    let mut line = Vec::new();
    let read = (&mut *reader).take(MAX_MESSAGE).read_until(b'\n', &mut line).await.map_err(|e| e.to_string())?;
    if read == 0 {
        return Ok(None);
    }
    if !line.ends_with(b"\n") {
        return Err(format!("wrote an answer over {} MiB", MAX_MESSAGE >> 20));
    }
    String::from_utf8(line).map(Some).map_err(|e| format!("wrote an answer that is not UTF-8: {e}"))
}

/// Hands each answer to its execute until the host's output ends or it is told to stop; then stops
/// the process (through its reaper, which kills all it started) and fails what was still pending.
async fn read_replies(
    mut lines: BufReader<impl AsyncRead + Unpin>,
    pending: Pending,
    dead: Arc<AtomicBool>,
    mut child: Child,
    pid: Option<Pid>,
    reaper: bool,
    mut stop: oneshot::Receiver<()>,
) {
    let why = loop {
        let line = tokio::select! {
            line = read_line(&mut lines) => line,
            _ = &mut stop => break "was stopped".to_owned(),
        };
        match line {
            Ok(Some(line)) => match serde_json::from_str::<Reply>(&line) {
                Ok(reply) => {
                    let mut pending = pending.lock().unwrap_or_else(|p| p.into_inner());
                    match pending.get(&reply.id) {
                        Some((nonce, _)) if *nonce == reply.nonce => {
                            if let Some((_, tx)) = pending.remove(&reply.id) {
                                let _ = tx.send(Ok(reply));
                            }
                        }
                        // Code in the host (an execute) wrote it: the real answer still comes.
                        Some(_) => tracing::warn!(
                            id = reply.id,
                            "a Python host wrote an answer for an execute with the wrong nonce: ignored"
                        ),
                        None => {}
                    }
                }
                Err(e) => break format!("wrote an answer plugd cannot read ({e})"),
            },
            Ok(None) => break String::new(),
            Err(e) => break e,
        }
    };
    dead.store(true, Ordering::SeqCst);
    // Stop it: through the reaper (SIGTERM, then the group), or the group at once.
    if let (true, Some(pid)) = (reaper, pid) {
        let _ = kill(pid, Signal::SIGTERM);
        if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_err() {
            let _ = killpg(pid, Signal::SIGKILL);
        }
    } else if let Some(pid) = pid {
        let _ = killpg(pid, Signal::SIGKILL);
    }
    let status = match tokio::time::timeout(STOP_GRACE * 2, child.wait()).await {
        Ok(Ok(status)) => describe(status),
        _ => "did not stop".to_owned(),
    };
    let why = if why.is_empty() { format!("exited ({status})") } else { format!("{why} ({status})") };
    let waiting: Vec<_> = pending.lock().unwrap_or_else(|p| p.into_inner()).drain().collect();
    if !waiting.is_empty() {
        tracing::warn!("the Python host {why}; {} execute(s) under way on it", waiting.len());
    }
    for (_, (_, tx)) in waiting {
        let _ = tx.send(Err(why.clone()));
    }
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}

/// Logs a host's standard error (the plugin's prints among it), up to [`MAX_STDERR_LOG`] bytes,
/// keeping the last lines to explain a host that would not start.
async fn drain_stderr(stream: impl AsyncRead + Unpin, echo: bool, tail: Tail) {
    let mut reader = BufReader::new(stream);
    let mut kept = 0usize;
    loop {
        match read_line(&mut reader).await {
            Ok(Some(line)) => {
                let text = line.trim_end_matches(['\n', '\r']).to_owned();
                if kept < MAX_STDERR_LOG {
                    kept += text.len();
                    tracing::info!(target: "plugd::plugin", stream = "stderr", "{text}");
                    if echo {
                        eprintln!("{text}");
                    }
                }
                keep_last(&tail, text, TAIL_LINES);
            }
            // An over-long line: the rest of the stream is not logged (but read, so the host never blocks).
            Err(_) => {
                let _ = tokio::io::copy(&mut reader, &mut tokio::io::sink()).await;
                return;
            }
            Ok(None) => return,
        }
    }
}
