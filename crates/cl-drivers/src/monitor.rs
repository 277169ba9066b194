//! Health checks that cannot hang the daemon (ARCHITECTURE.md §4).
//!
//! [`check`] runs one check and returns within its timeout (plus a few milliseconds to kill and
//! reap a hung command). Scheduling is the caller's business: the daemon decides when to check
//! (the monitor's interval), counts failures in the window and restarts or fails over.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::net::unix::pipe;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::script::{self, AppCgroup};

/// Longest reason text taken from a failing command's output, in bytes.
pub const REASON_OUTPUT_MAX: usize = 300;

/// Output of a check command kept while it runs (the rest is read and discarded, so that a
/// chatty command never blocks on a full pipe).
const CAPTURE_MAX: usize = 4096;

/// After a check command exits: how long to go on reading output that is still buffered or
/// written by processes it left behind.
const DRAIN_WAIT: Duration = Duration::from_millis(100);

/// After SIGKILL of a hung check command: how long to wait for it to die before leaving it to
/// a background thread to reap.
const REAP_WAIT: Duration = Duration::from_millis(200);

/// `TASK_COMM_LEN - 1`: the kernel keeps this many bytes of a process name.
const COMM_MAX: usize = 15;

/// One health check (the resolved form of `cl_config::appconf::MonitorKind`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// A live process with this name exists (in the application's cgroup when one is given).
    Process {
        /// Name as in /proc/PID/comm; longer names are compared on their first 15 bytes, all
        /// the kernel keeps.
        name: String,
    },
    /// A TCP connection to `address:port` is accepted.
    Tcp {
        /// Address to connect to.
        address: IpAddr,
        /// Port.
        port: u16,
    },
    /// A command exits 0.
    Command {
        /// Absolute path of the executable, run without arguments.
        path: PathBuf,
    },
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Check::Process { name } => write!(f, "process {name:?}"),
            Check::Tcp { address, port } => write!(f, "tcp {}", SocketAddr::new(*address, *port)),
            Check::Command { path } => write!(f, "command {}", path.display()),
        }
    }
}

/// The result of one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MonitorResult {
    /// Healthy.
    Ok,
    /// Unhealthy, and why (for the log and `clstat`).
    Failed(String),
    /// The check did not finish within its timeout; a command was killed.
    TimedOut,
}

impl MonitorResult {
    /// Whether the check passed.
    pub fn is_ok(&self) -> bool {
        *self == MonitorResult::Ok
    }
}

impl fmt::Display for MonitorResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MonitorResult::Ok => f.write_str("ok"),
            MonitorResult::Failed(reason) => write!(f, "failed: {reason}"),
            MonitorResult::TimedOut => f.write_str("timed out"),
        }
    }
}

/// Runs one check, returning within `timeout` (plus a small margin).
///
/// - [`Check::Process`]: looks through the members of `cgroup` when given (so that another
///   application's process of the same name does not count), else through all of /proc.
///   Zombies and kernel threads do not count.
/// - [`Check::Tcp`]: a connect; the reason of a failure has the OS error (refused, no route…).
/// - [`Check::Command`]: runs the command in its own process group, in the daemon's cgroup
///   (not the application's: a check is not part of the application), with stdin from
///   /dev/null, working directory `/` and stdout + stderr captured; exit 0 is healthy, anything
///   else fails with the status and the start of the output as the reason. On timeout the
///   process group is killed with SIGKILL. Processes it leaves in its group are killed when
///   it exits, so a check cannot pile up leftovers; ones that left the group (`setsid`) are
///   not tracked.
pub async fn check(kind: &Check, cgroup: Option<&AppCgroup>, timeout: Duration) -> MonitorResult {
    match kind {
        Check::Process { name } => check_process(name, cgroup, timeout).await,
        Check::Tcp { address, port } => check_tcp(SocketAddr::new(*address, *port), timeout).await,
        Check::Command { path } => check_command(path, timeout).await,
    }
}

async fn check_process(name: &str, cgroup: Option<&AppCgroup>, timeout: Duration) -> MonitorResult {
    let owned_name = name.to_owned();
    let owned_cgroup = cgroup.cloned();
    // Reading /proc is quick, but it is file system access: keep it off the async threads and
    // under the timeout like everything else.
    let task =
        tokio::task::spawn_blocking(move || find_process(&owned_name, owned_cgroup.as_ref()));
    match tokio::time::timeout(timeout, task).await {
        Err(_) => MonitorResult::TimedOut,
        Ok(Err(e)) => MonitorResult::Failed(format!("looking for process {name:?}: {e}")),
        Ok(Ok(Ok(Some(_pid)))) => MonitorResult::Ok,
        Ok(Ok(Ok(None))) => MonitorResult::Failed(match cgroup {
            Some(cg) => {
                format!("no process named {name:?} in cgroup {}", cg.path().display())
            }
            None => format!("no process named {name:?} is running"),
        }),
        Ok(Ok(Err(e))) => MonitorResult::Failed(format!("looking for process {name:?}: {e}")),
    }
}

/// The first live, non-kernel process named `name`.
fn find_process(name: &str, cgroup: Option<&AppCgroup>) -> io::Result<Option<u32>> {
    let name = name.as_bytes();
    let name = &name[..name.len().min(COMM_MAX)];
    let pids: Vec<u32> = match cgroup {
        Some(cg) => cg.pids()?,
        None => {
            let mut pids = BTreeSet::new();
            for entry in fs::read_dir("/proc")? {
                if let Some(pid) = entry?.file_name().to_str().and_then(|s| s.parse().ok()) {
                    pids.insert(pid);
                }
            }
            pids.into_iter().collect()
        }
    };
    Ok(pids.into_iter().find(|&pid| is_live_named(pid, name)))
}

/// Whether `pid` is a live user process whose comm is `name`, from /proc/PID/stat (which has
/// the comm of /proc/PID/comm, the state and the flags in one read).
fn is_live_named(pid: u32, name: &[u8]) -> bool {
    const PF_KTHREAD: u64 = 0x0020_0000;
    let Ok(stat) = fs::read(format!("/proc/{pid}/stat")) else { return false };
    // "pid (comm) state ppid pgrp session tty_nr tpgid flags …"; comm may contain ") ".
    let (Some(open), Some(close)) =
        (stat.iter().position(|&b| b == b'('), stat.iter().rposition(|&b| b == b')'))
    else {
        return false;
    };
    if open >= close || &stat[open + 1..close] != name {
        return false;
    }
    let rest = String::from_utf8_lossy(&stat[close + 1..]);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first().copied().unwrap_or("X");
    let flags: u64 = fields.get(6).and_then(|f| f.parse().ok()).unwrap_or(PF_KTHREAD);
    !matches!(state, "Z" | "X" | "x") && flags & PF_KTHREAD == 0
}

async fn check_tcp(addr: SocketAddr, timeout: Duration) -> MonitorResult {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => MonitorResult::TimedOut,
        Ok(Ok(stream)) => {
            // Closed with a reset, as load balancers close their health checks: no FIN
            // exchange and no TIME_WAIT socket left behind by every check (a third of
            // cldaemon's idle CPU was this monitor's connects, issue 12). Should the option not
            // take, the close is an ordinary one.
            let _ = stream.set_zero_linger();
            drop(stream);
            MonitorResult::Ok
        }
        Ok(Err(e)) => MonitorResult::Failed(format!("connect to {addr}: {e}")),
    }
}

async fn check_command(path: &Path, timeout: Duration) -> MonitorResult {
    let deadline = Instant::now() + timeout;
    let (read_end, write_end) = match pipe_cloexec() {
        Ok(p) => p,
        Err(e) => return MonitorResult::Failed(format!("cannot create a pipe: {e}")),
    };
    let reader = match pipe::Receiver::from_owned_fd(read_end) {
        Ok(r) => r,
        Err(e) => return MonitorResult::Failed(format!("cannot watch a pipe: {e}")),
    };
    let stderr = match write_end.try_clone() {
        Ok(fd) => fd,
        Err(e) => return MonitorResult::Failed(format!("cannot duplicate a pipe: {e}")),
    };
    let mut cmd = Command::new(path);
    cmd.current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::from(write_end))
        .stderr(Stdio::from(stderr))
        .process_group(0);
    let spawned = cmd.spawn();
    // Drop our copies of the write end, or the reader never sees end-of-file.
    drop(cmd);
    let child = match spawned {
        Ok(c) => c,
        Err(e) => return MonitorResult::Failed(format!("cannot run {}: {e}", path.display())),
    };

    // Read while waiting: a command writing more than a pipe holds would otherwise block.
    let mut output = Vec::new();
    let mut eof = false;
    let remaining = deadline.saturating_duration_since(Instant::now());
    let supervised = script::supervise(child, remaining, Duration::ZERO, true, REAP_WAIT);
    tokio::pin!(supervised);
    let waited = loop {
        tokio::select! {
            waited = &mut supervised => break waited,
            more = read_some(&reader, &mut output), if !eof => eof = !more,
        }
    };
    let status = match waited {
        Ok(Some(status)) => status,
        Ok(None) => return MonitorResult::TimedOut,
        Err(e) => return MonitorResult::Failed(format!("waiting for {}: {e}", path.display())),
    };
    // Its group has been killed; what is still buffered comes at once, then end-of-file.
    let drain_until = Instant::now() + DRAIN_WAIT;
    while !eof {
        match tokio::time::timeout_at(drain_until, read_some(&reader, &mut output)).await {
            Ok(more) => eof = !more,
            Err(_) => break,
        }
    }
    drop(reader);
    if status.success() {
        return MonitorResult::Ok;
    }
    let how = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        (None, None) => "ended abnormally".to_owned(),
    };
    let text = excerpt(&output);
    MonitorResult::Failed(if text.is_empty() {
        format!("{} {how} (no output)", path.display())
    } else {
        format!("{} {how}: {text}", path.display())
    })
}

/// Reads what is available into `out` (keeping at most [`CAPTURE_MAX`] bytes); false at
/// end-of-file or on an error.
async fn read_some(reader: &pipe::Receiver, out: &mut Vec<u8>) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        if reader.readable().await.is_err() {
            return false;
        }
        match reader.try_read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => {
                let keep = n.min(CAPTURE_MAX.saturating_sub(out.len()));
                out.extend_from_slice(&buf[..keep]);
                return true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
}

/// The output trimmed, at most [`REASON_OUTPUT_MAX`] bytes (cut at a character boundary, `…`
/// marking the cut), lines joined with " | " so the reason stays on one log line.
fn excerpt(output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output);
    let joined = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>();
    let joined = joined.join(" | ");
    if joined.len() <= REASON_OUTPUT_MAX {
        return joined;
    }
    let mut cut = REASON_OUTPUT_MAX;
    while !joined.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &joined[..cut])
}

/// A pipe with both ends close-on-exec (the child gets its own copies as stdout/stderr).
fn pipe_cloexec() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2(2) writes two descriptors into the array on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_is_short_and_on_one_line() {
        assert_eq!(excerpt(b"  one\n\n two  \n"), "one | two");
        let long = "é".repeat(400);
        let e = excerpt(long.as_bytes());
        assert!(e.len() <= REASON_OUTPUT_MAX + "…".len(), "{}", e.len());
        assert!(e.ends_with('…'));
    }

    #[test]
    fn own_process_is_found_by_name() {
        let comm = fs::read_to_string("/proc/self/comm").expect("comm");
        let me = std::process::id();
        assert!(is_live_named(me, comm.trim_end().as_bytes()));
        assert!(!is_live_named(me, b"no-such-name"));
    }
}
