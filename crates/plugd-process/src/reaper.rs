//! The reaper: a small process between plugd and each plugin process, so that nothing a plugin
//! starts outlives its execute, not even a process that left the plugin's process group (`setsid`).
//!
//! plugd starts it by running its own binary again with the hidden first argument [`REAPER_ARG`]
//! (see [`crate::ProcessOptions::reaper`]); a binary whose `main` is `plugd::main` hands that to
//! [`main`] before parsing anything. The reaper makes itself a child subreaper
//! (`PR_SET_CHILD_SUBREAPER`: orphans of the plugin are re-parented to it, not to init), starts the
//! plugin, and waits. When the plugin's main process exits, when plugd asks it to stop (SIGTERM,
//! SIGINT or SIGHUP: a timeout, or the end of an execute plugd gave up on), or when plugd itself is
//! gone, it kills every process below it with SIGKILL, reaps them, and exits as the plugin did: with
//! its exit code, or killed by the same signal.

use std::ffi::{OsStr, OsString};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, raise, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{getppid, Pid};

/// The hidden first argument that makes a plugd binary the reaper.
pub const REAPER_ARG: &str = "__plugd-reaper";

/// How often the reaper checks that plugd is still there.
const PARENT_CHECK: Duration = Duration::from_millis(200);

/// Runs the reaper and exits. `args` are the arguments after [`REAPER_ARG`]:
/// `[--parent PID] [--uid UID] [--gid GID] -- PROGRAM [ARG]...`.
///
/// The plugin runs in the reaper's process group, in its working directory, with its environment
/// and its standard input, output and error; as `UID`/`GID` when given (supplementary groups
/// dropped). A plugin that cannot be started is reported on standard error, with exit code 127.
pub fn main(args: impl IntoIterator<Item = OsString>) -> ! {
    match run(args.into_iter().collect()) {
        Ok(status) => exit_as(status),
        Err(message) => {
            eprintln!("plugd: {message}");
            std::process::exit(127)
        }
    }
}

struct Args {
    parent: Option<Pid>,
    uid: Option<u32>,
    gid: Option<u32>,
    argv: Vec<OsString>,
}

fn parse(args: Vec<OsString>) -> Result<Args, String> {
    let mut parsed = Args { parent: None, uid: None, gid: None, argv: Vec::new() };
    let mut args = args.into_iter();
    let number = |flag: &str, value: Option<OsString>| -> Result<u32, String> {
        value
            .as_deref()
            .and_then(OsStr::to_str)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("reaper: {flag} needs a number"))
    };
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--parent") => {
                let pid = number("--parent", args.next())?;
                parsed.parent = Some(Pid::from_raw(i32::try_from(pid).map_err(|e| e.to_string())?));
            }
            Some("--uid") => parsed.uid = Some(number("--uid", args.next())?),
            Some("--gid") => parsed.gid = Some(number("--gid", args.next())?),
            Some("--") => {
                parsed.argv = args.collect();
                break;
            }
            _ => return Err(format!("reaper: unexpected argument {arg:?}")),
        }
    }
    if parsed.argv.is_empty() {
        return Err("reaper: no command after --".into());
    }
    Ok(parsed)
}

fn run(args: Vec<OsString>) -> Result<WaitStatus, String> {
    let args = parse(args)?;
    nix::sys::prctl::set_child_subreaper(true).map_err(|e| format!("reaper: cannot become a subreaper: {e}"))?;
    let mut stops = SigSet::empty();
    for signal in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        stops.add(signal);
    }
    // Blocked and read from a signalfd (their default actions would end the reaper).
    stops.thread_block().map_err(|e| format!("reaper: cannot block signals: {e}"))?;
    let signals = SignalFd::with_flags(&stops, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| format!("reaper: cannot read signals: {e}"))?;
    let parent = args.parent.unwrap_or_else(getppid);
    if getppid() != parent {
        return Err("reaper: plugd is gone".into());
    }
    let mut command = std::process::Command::new(&args.argv[0]);
    command.args(&args.argv[1..]);
    if let Some(gid) = args.gid {
        command.gid(gid);
    }
    if let Some(uid) = args.uid {
        // As root, std also drops the supplementary groups before it changes user.
        command.uid(uid);
    }
    // Children inherit the signal mask: the plugin must start with these unblocked. A stop signal
    // in this instant ends the reaper by its default action (plugd then kills its process group,
    // which the plugin is still in).
    stops.thread_unblock().map_err(|e| format!("reaper: cannot unblock signals: {e}"))?;
    let spawned = command.spawn();
    stops.thread_block().map_err(|e| format!("reaper: cannot block signals: {e}"))?;
    let child = spawned.map_err(|e| format!("cannot start {}: {e}", std::path::Path::new(&args.argv[0]).display()))?;
    let main = Pid::from_raw(i32::try_from(child.id()).map_err(|e| e.to_string())?);
    // Reaped below with waitpid, like every other process the reaper inherits.
    drop(child);

    let mut status = None;
    loop {
        reap_exited(main, &mut status);
        if status.is_some() || getppid() != parent {
            break;
        }
        let mut fds = [PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        let timeout = PollTimeout::try_from(PARENT_CHECK).unwrap_or(PollTimeout::NONE);
        match nix::poll::poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => {
                eprintln!("plugd: reaper: poll failed: {e}");
                break;
            }
        }
        let mut stop = false;
        while let Ok(Some(info)) = signals.read_signal() {
            stop |= info.ssi_signo != Signal::SIGCHLD as u32;
        }
        if stop {
            break;
        }
    }
    kill_all(main, &mut status);
    Ok(status.unwrap_or(WaitStatus::Signaled(main, Signal::SIGKILL, false)))
}

/// Reaps every child that has exited, keeping the main process's status.
fn reap_exited(main: Pid, status: &mut Option<WaitStatus>) {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
            Ok(exited) => keep(main, exited, status),
            Err(Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

fn keep(main: Pid, exited: WaitStatus, status: &mut Option<WaitStatus>) {
    if exited.pid() == Some(main) && matches!(exited, WaitStatus::Exited(..) | WaitStatus::Signaled(..)) {
        *status = Some(exited);
    }
}

/// Kills and reaps every process below the reaper, round after round: a process killed in one
/// round leaves its own children to the reaper for the next. Only children are killed, and each
/// stays unreaped (so its pid cannot be reused) until it has been signalled.
fn kill_all(main: Pid, status: &mut Option<WaitStatus>) {
    loop {
        let mut children = children();
        if children.is_empty() {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Err(Errno::ECHILD) => return,
                Ok(WaitStatus::StillAlive) => {
                    // /proc/self/task/*/children can miss a child; the process table cannot.
                    children = children_in_proc();
                    if children.is_empty() {
                        if !std::path::Path::new("/proc/self").exists() {
                            // Without /proc there is no list: wait for them to end.
                            if let Ok(exited) = waitpid(None, None) {
                                keep(main, exited, status);
                            }
                        } else {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        continue;
                    }
                }
                Ok(exited) => {
                    keep(main, exited, status);
                    continue;
                }
                Err(Errno::EINTR) => continue,
                Err(_) => return,
            }
        }
        for &pid in &children {
            let _ = kill(pid, Signal::SIGKILL);
        }
        for pid in children {
            loop {
                match waitpid(pid, None) {
                    Ok(exited) => {
                        keep(main, exited, status);
                        if matches!(exited, WaitStatus::Exited(..) | WaitStatus::Signaled(..)) {
                            break;
                        }
                    }
                    Err(Errno::EINTR) => {}
                    Err(_) => break,
                }
            }
        }
    }
}

/// The reaper's children, from `/proc/self/task/*/children`.
fn children() -> Vec<Pid> {
    let mut pids = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return pids };
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            pids.extend(text.split_whitespace().filter_map(|p| p.parse().ok()).map(Pid::from_raw));
        }
    }
    pids
}

/// The reaper's children, from the parent pid of every process in `/proc`.
fn children_in_proc() -> Vec<Pid> {
    let me = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?;
            (ppid == me).then_some(Pid::from_raw(pid))
        })
        .collect()
}

/// Exits with the plugin's exit code, or dies of the signal that killed it.
fn exit_as(status: WaitStatus) -> ! {
    match status {
        WaitStatus::Exited(_, code) => std::process::exit(code),
        WaitStatus::Signaled(_, signal, _) => {
            // No core file of the reaper's own.
            let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
            let _ = raise(signal);
            // Blocked signals (SIGTERM, say) arrive now, with their default action.
            let _ = SigSet::all().thread_unblock();
            // Rust's own SIGSEGV and SIGBUS handler puts the default action back and returns.
            let _ = raise(signal);
            // Still here: the signal is ignored in this process (Rust ignores SIGPIPE).
            std::process::exit(128 + signal as i32)
        }
        _ => std::process::exit(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments() {
        let args = |list: &[&str]| parse(list.iter().map(OsString::from).collect());
        let parsed = args(&["--parent", "12", "--uid", "65534", "--gid", "65534", "--", "sh", "-c", "x"]).unwrap();
        assert_eq!(
            (parsed.parent, parsed.uid, parsed.gid, parsed.argv),
            (Some(Pid::from_raw(12)), Some(65534), Some(65534), vec!["sh".into(), "-c".into(), "x".into()])
        );
        assert_eq!(args(&["--", "true"]).unwrap().parent, None);
        assert_eq!(args(&["--uid", "x", "--", "true"]).err().unwrap(), "reaper: --uid needs a number");
        assert_eq!(args(&["--"]).err().unwrap(), "reaper: no command after --");
        assert_eq!(args(&["true"]).err().unwrap(), "reaper: unexpected argument \"true\"");
    }
}
