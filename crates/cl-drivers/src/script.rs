//! Start and stop scripts whose processes are tracked, not guessed (ARCHITECTURE.md §4).
//!
//! Every application owns one cgroup v2 per node, an [`AppCgroup`]. Its start and stop scripts
//! are placed in it before they execute their first instruction ([`run_script`]), so everything
//! they start — the application's daemons — is born inside it and stays there. Stopping an
//! application ([`stop_application`]) runs the stop script and then kills whatever is still in
//! the cgroup ([`AppCgroup::kill_all`]), reporting the pids so that the daemon can log them.
//!
//! # Why a cgroup and not a process group or session
//!
//! Daemons started by scripts detach on purpose: they fork, call `setsid()` and fork again.
//! That takes them out of the script's process group and session, and re-parents them to init,
//! so neither `kill(-pgid)` nor walking the process tree finds them; 1.0 had to guess them from
//! names or pid files. Cgroup membership is inherited on fork and no unprivileged call leaves it,
//! so "the application's processes" is exactly "the members of its cgroup", with no guessing.
//! `cgroup.kill` (Linux 5.14+) then kills them all atomically, even ones forking meanwhile.
//!
//! The process group still has one use: telling the *script* apart from the daemons it left
//! behind. Each script runs as the leader of its own process group; when it overruns its time
//! limit, that group (the script, the commands it is waiting for, and background jobs it started
//! without detaching) is killed, while detached daemons (own session or group) stay in the
//! cgroup for the caller to deal with.
//!
//! Everything here is async (tokio) and never blocks the caller beyond the time limits given;
//! waiting for a process uses a pidfd (polled `waitid(WNOWAIT)` on kernels without one).

use std::collections::BTreeSet;
use std::ffi::CString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// After a script overruns its time limit: time between SIGTERM and SIGKILL of its process group.
pub const SCRIPT_KILL_GRACE: Duration = Duration::from_secs(1);

/// [`stop_application`]: time the application's leftover processes get between SIGTERM and
/// SIGKILL.
pub const STOP_KILL_GRACE: Duration = Duration::from_secs(5);

/// How long processes get to disappear after SIGKILL before they count as unkillable
/// (uninterruptible sleep, e.g. on a dead NFS server).
pub const SIGKILL_WAIT: Duration = Duration::from_secs(5);

/// Polling interval for cgroup state (and for process exit on kernels without pidfd).
const POLL: Duration = Duration::from_millis(10);

/// One application's cgroup v2 on this node.
///
/// Holds only the path: several values may refer to the same cgroup, and dropping one neither
/// kills nor removes anything (the daemons must survive a restart of the cluster daemon).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppCgroup {
    path: PathBuf,
}

/// What [`AppCgroup::kill_all`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KillReport {
    /// Pids sent SIGTERM, in ascending order.
    pub terminated: Vec<u32>,
    /// Pids still present when the grace time was over and SIGKILL was used, ascending.
    pub killed: Vec<u32>,
}

impl KillReport {
    /// Whether nothing had to be killed: the cgroup was already empty.
    pub fn is_empty(&self) -> bool {
        self.terminated.is_empty() && self.killed.is_empty()
    }

    /// Every pid signalled, ascending, without duplicates.
    pub fn pids(&self) -> Vec<u32> {
        let all: BTreeSet<u32> = self.terminated.iter().chain(&self.killed).copied().collect();
        all.into_iter().collect()
    }
}

impl AppCgroup {
    /// Opens the cgroup `<parent>/<app>`, creating it (and `parent`) when missing. An existing
    /// cgroup is reused as it is: after a restart of the cluster daemon, the application's
    /// processes are still in it.
    ///
    /// `parent` must be inside a cgroup v2 hierarchy, e.g.
    /// `/sys/fs/cgroup/unified/linuxha-<cluster>-<node>`, so that lab nodes sharing one machine
    /// never share a cgroup.
    pub fn new(parent: &Path, app: &str) -> io::Result<AppCgroup> {
        if app.is_empty()
            || app == "."
            || app == ".."
            || app.contains('/')
            || app.contains('\0')
            || app.starts_with("cgroup.")
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{app:?} cannot be the name of a cgroup"),
            ));
        }
        fs::create_dir_all(parent).map_err(|e| at(parent, e))?;
        let path = parent.join(app);
        match fs::create_dir(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(at(&path, e)),
        }
        // cgroup.events exists in every non-root cgroup v2 directory and nowhere else (not in
        // cgroup v1, not on an ordinary filesystem).
        if !path.join("cgroup.events").is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a cgroup v2 directory (no cgroup.events)", path.display()),
            ));
        }
        Ok(AppCgroup { path })
    }

    /// The cgroup's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The processes in the cgroup and any child cgroups, ascending.
    pub fn pids(&self) -> io::Result<Vec<u32>> {
        let mut pids = BTreeSet::new();
        collect_pids(&self.path, &mut pids)?;
        Ok(pids.into_iter().collect())
    }

    /// Whether no process is left in the cgroup or below (`populated 0` in cgroup.events).
    pub fn is_empty(&self) -> io::Result<bool> {
        let path = self.path.join("cgroup.events");
        let text = fs::read_to_string(&path).map_err(|e| at(&path, e))?;
        let populated = text
            .lines()
            .find_map(|l| l.strip_prefix("populated "))
            .ok_or_else(|| io::Error::other(format!("{}: no populated line", path.display())))?;
        Ok(populated.trim() == "0")
    }

    /// Kills every process in the cgroup: SIGTERM to each (and to any that appear meanwhile),
    /// up to `timeout` for them to exit, then SIGKILL to all at once (`cgroup.kill`; one by one
    /// on kernels without it) and up to [`SIGKILL_WAIT`] until the cgroup is empty.
    ///
    /// Signals are sent through pidfds opened while the pid is listed in the cgroup, so a pid
    /// reused by another process in between is never signalled.
    pub async fn kill_all(&self, timeout: Duration) -> Result<KillReport, ScriptError> {
        let cg_err = |source| ScriptError::Cgroup { path: self.path.clone(), source };
        let mut report = KillReport::default();
        let mut terminated = BTreeSet::new();
        let deadline = Instant::now() + timeout;
        loop {
            if self.is_empty().map_err(cg_err)? {
                report.terminated = terminated.into_iter().collect();
                return Ok(report);
            }
            self.signal_members(libc::SIGTERM, &mut terminated).map_err(cg_err)?;
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        report.terminated = terminated.into_iter().collect();
        report.killed = self.pids().map_err(cg_err)?;
        let kill_file = self.path.join("cgroup.kill");
        let have_cgroup_kill = match fs::write(&kill_file, "1") {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(cg_err(at(&kill_file, e))),
        };
        let deadline = Instant::now() + SIGKILL_WAIT;
        loop {
            if !have_cgroup_kill {
                // Without cgroup.kill, processes forking right now can slip past one round.
                self.signal_members(libc::SIGKILL, &mut BTreeSet::new()).map_err(cg_err)?;
            }
            tokio::time::sleep(POLL).await;
            if self.is_empty().map_err(cg_err)? {
                return Ok(report);
            }
            if Instant::now() >= deadline {
                return Err(ScriptError::Unkillable {
                    cgroup: self.path.clone(),
                    pids: self.pids().unwrap_or_default(),
                });
            }
        }
    }

    /// Removes the cgroup (and any empty child cgroups). Fails with `EBUSY` while processes
    /// are left in it; [`AppCgroup::kill_all`] first.
    pub fn remove(&self) -> io::Result<()> {
        remove_tree(&self.path)
    }

    /// Sends `sig` to each member not in `done` and adds it to `done`.
    fn signal_members(&self, sig: i32, done: &mut BTreeSet<u32>) -> io::Result<()> {
        // Open a pidfd for each listed pid, then read the list again: a pid still listed
        // after its pidfd was opened is that very process (a pid is not reused while its
        // process exists), so signalling through the pidfd cannot hit a stranger.
        let mut handles = Vec::new();
        for pid in self.pids()? {
            if done.contains(&pid) {
                continue;
            }
            match pidfd_open(pid) {
                Ok(fd) => handles.push((pid, Some(fd))),
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                // Kernels before 5.3: plain kill(2), with the (tiny) pid-reuse race.
                Err(_) => handles.push((pid, None)),
            }
        }
        if handles.is_empty() {
            return Ok(());
        }
        let still: BTreeSet<u32> = self.pids()?.into_iter().collect();
        for (pid, fd) in handles {
            if !still.contains(&pid) {
                continue;
            }
            let sent = match &fd {
                Some(fd) => pidfd_send_signal(fd, sig),
                None => kill(pid as i32, sig),
            };
            match sent {
                Ok(()) => {
                    done.insert(pid);
                }
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => return Err(io::Error::new(e.kind(), format!("signal {pid}: {e}"))),
            }
        }
        Ok(())
    }
}

fn collect_pids(dir: &Path, pids: &mut BTreeSet<u32>) -> io::Result<()> {
    let procs = dir.join("cgroup.procs");
    let text = fs::read_to_string(&procs).map_err(|e| at(&procs, e))?;
    pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    for entry in fs::read_dir(dir).map_err(|e| at(dir, e))? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            collect_pids(&entry.path(), pids)?;
        }
    }
    Ok(())
}

fn remove_tree(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir).map_err(|e| at(dir, e))? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_tree(&entry.path())?;
        }
    }
    // A cgroup directory is removed with rmdir(2) even though it lists control files.
    fs::remove_dir(dir).map_err(|e| at(dir, e))
}

/// How a script ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScriptOutcome {
    /// It exited with this status.
    Exited(i32),
    /// It was killed by this signal (not by us).
    Signalled(i32),
    /// It overran its time limit; its process group was killed.
    TimedOut,
}

impl ScriptOutcome {
    /// Whether the script reported success (exit status 0).
    pub fn success(self) -> bool {
        self == ScriptOutcome::Exited(0)
    }
}

impl fmt::Display for ScriptOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScriptOutcome::Exited(code) => write!(f, "exited with status {code}"),
            ScriptOutcome::Signalled(sig) => write!(f, "killed by signal {sig}"),
            ScriptOutcome::TimedOut => f.write_str("timed out"),
        }
    }
}

/// Why a script could not be run, or an application's processes not be killed.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    /// The script does not exist.
    #[error("script {path} does not exist")]
    NotFound {
        /// The script.
        path: PathBuf,
    },
    /// The script exists but cannot be executed.
    #[error("script {path} cannot be run: {reason}")]
    NotRunnable {
        /// The script.
        path: PathBuf,
        /// Why (not absolute, not a regular file, not executable, bad `#!` line…).
        reason: String,
    },
    /// Starting the script failed for another reason.
    #[error("starting script {path}: {source}")]
    Spawn {
        /// The script.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Waiting for the script failed.
    #[error("waiting for script {path}: {source}")]
    Wait {
        /// The script.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The application log cannot be opened or written.
    #[error("application log {path}: {source}")]
    Log {
        /// The log file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The cgroup is missing or its files cannot be read or written.
    #[error("cgroup {path}: {source}")]
    Cgroup {
        /// The cgroup.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Processes survived SIGKILL for [`SIGKILL_WAIT`] (uninterruptible sleep).
    #[error("cgroup {cgroup}: processes {pids:?} survive SIGKILL")]
    Unkillable {
        /// The cgroup.
        cgroup: PathBuf,
        /// The survivors.
        pids: Vec<u32>,
    },
}

/// Runs `path args…` inside `cgroup` and waits for it for up to `timeout`.
///
/// The script runs with stdin from /dev/null, stdout and stderr appended to `log` (created if
/// missing, after a line `=== <RFC 3339 time> start: <path> <args>`; an `=== … end: …` line
/// follows when it ends), the daemon's environment plus `env`, working directory `/` (so it
/// holds no mount point busy), as the leader of a new process group.
///
/// The child joins the cgroup between fork and exec (a `pre_exec` write of "0" to
/// `cgroup.procs`), not after `spawn()` returns: moving it afterwards would leave a window in
/// which the script already runs outside the cgroup, and anything it forks in that window (a
/// quick `daemon &`) would be born outside and never be tracked. If joining fails, nothing is
/// executed and the error is returned.
///
/// When the script overruns `timeout`, its process group gets SIGTERM, then SIGKILL after
/// [`SCRIPT_KILL_GRACE`], and [`ScriptOutcome::TimedOut`] is returned. Processes that left the
/// group (daemons that called `setsid()`) are not killed: they stay in the cgroup, like the
/// daemons of a script that succeeds, for [`stop_application`] / [`AppCgroup::kill_all`].
/// Background jobs started without leaving the group (`daemon &` without `setsid`) count as part
/// of the script and are killed with it.
pub async fn run_script(
    path: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    cgroup: &AppCgroup,
    log: &Path,
    timeout: Duration,
) -> Result<ScriptOutcome, ScriptError> {
    check_script(path)?;
    let procs = cgroup.path.join("cgroup.procs");
    if !procs.is_file() {
        return Err(ScriptError::Cgroup {
            path: cgroup.path.clone(),
            source: io::Error::new(io::ErrorKind::NotFound, "no cgroup.procs: cgroup missing"),
        });
    }
    let log_err = |source| ScriptError::Log { path: log.to_path_buf(), source };
    let mut log_file = open_log(log).map_err(log_err)?;
    let mut header = format!("=== {} start: {}", rfc3339_utc(SystemTime::now()), path.display());
    for arg in args {
        header.push(' ');
        header.push_str(arg);
    }
    header.push('\n');
    log_file.write_all(header.as_bytes()).map_err(log_err)?;

    let mut cmd = Command::new(path);
    cmd.args(args)
        .envs(env.iter().copied())
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().map_err(log_err)?)
        .stderr(log_file.try_clone().map_err(log_err)?)
        .process_group(0);
    join_cgroup_before_exec(&mut cmd, &procs)
        .map_err(|source| ScriptError::Cgroup { path: cgroup.path.clone(), source })?;
    let started = Instant::now();
    let child = cmd.spawn().map_err(|e| spawn_error(path, e))?;
    // The Command holds duplicates of the log descriptors; the daemon must not keep them.
    drop(cmd);

    let waited = supervise(child, timeout, SCRIPT_KILL_GRACE, false, SIGKILL_WAIT)
        .await
        .map_err(|source| ScriptError::Wait { path: path.to_path_buf(), source })?;
    let outcome = match waited {
        None => ScriptOutcome::TimedOut,
        Some(status) => outcome_of(status),
    };
    let detail = match outcome {
        ScriptOutcome::TimedOut => {
            format!("timed out after {:?}; its process group was killed", timeout)
        }
        other => format!("{other} after {:.3} s", started.elapsed().as_secs_f64()),
    };
    let footer =
        format!("=== {} end: {}: {detail}\n", rfc3339_utc(SystemTime::now()), path.display());
    log_file.write_all(footer.as_bytes()).map_err(log_err)?;
    Ok(outcome)
}

/// What [`stop_application`] did.
#[derive(Debug)]
pub struct StopReport {
    /// How the stop script ended, or why it could not be run.
    pub script: Result<ScriptOutcome, ScriptError>,
    /// What was left in the cgroup after the stop script and had to be killed; an error when
    /// the cgroup could not be read or processes survived SIGKILL.
    pub killed: Result<KillReport, ScriptError>,
}

impl StopReport {
    /// Whether the application is down: no process of it is left, whatever the script did.
    pub fn is_stopped(&self) -> bool {
        self.killed.is_ok()
    }
}

/// Stops an application: runs `stop_script` in `cgroup` with `timeout`; then, whatever the
/// result (success, failure, timeout, script missing), kills everything still in the cgroup
/// with [`AppCgroup::kill_all`] ([`STOP_KILL_GRACE`] between SIGTERM and SIGKILL). The killed
/// pids are reported, and also noted in `log`.
pub async fn stop_application(
    stop_script: &Path,
    cgroup: &AppCgroup,
    log: &Path,
    timeout: Duration,
) -> StopReport {
    let script = run_script(stop_script, &[], &[], cgroup, log, timeout).await;
    let killed = cgroup.kill_all(STOP_KILL_GRACE).await;
    let note = match &killed {
        Ok(k) if k.is_empty() => None,
        Ok(k) => Some(format!(
            "left running after the stop script: SIGTERM {:?}, SIGKILL {:?}",
            k.terminated, k.killed
        )),
        Err(e) => Some(format!("killing what the stop script left: {e}")),
    };
    if let Some(note) = note {
        if let Ok(mut f) = open_log(log) {
            let _ = writeln!(f, "=== {} {note}", rfc3339_utc(SystemTime::now()));
        }
    }
    StopReport { script, killed }
}

fn check_script(path: &Path) -> Result<(), ScriptError> {
    let not_runnable =
        |reason: &str| ScriptError::NotRunnable { path: path.to_path_buf(), reason: reason.into() };
    if !path.is_absolute() {
        return Err(not_runnable("the path is not absolute"));
    }
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ScriptError::NotFound { path: path.to_path_buf() })
        }
        Err(e) => return Err(not_runnable(&e.to_string())),
    };
    if !meta.is_file() {
        return Err(not_runnable("not a regular file"));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(not_runnable("not executable (no x permission)"));
    }
    Ok(())
}

fn spawn_error(path: &Path, e: io::Error) -> ScriptError {
    let reason = match e.raw_os_error() {
        // The file itself exists (checked just before), so this is the interpreter.
        Some(libc::ENOENT) => "the interpreter named on its #! line does not exist",
        Some(libc::ENOEXEC) => "not a binary and no #! line",
        Some(libc::EACCES) => "permission denied",
        _ => return ScriptError::Spawn { path: path.to_path_buf(), source: e },
    };
    ScriptError::NotRunnable { path: path.to_path_buf(), reason: reason.into() }
}

fn open_log(log: &Path) -> io::Result<File> {
    if let Some(dir) = log.parent() {
        fs::create_dir_all(dir)?;
    }
    OpenOptions::new().create(true).append(true).open(log)
}

fn outcome_of(status: ExitStatus) -> ScriptOutcome {
    match (status.code(), status.signal()) {
        (Some(code), _) => ScriptOutcome::Exited(code),
        (None, Some(sig)) => ScriptOutcome::Signalled(sig),
        // Neither: stopped/continued, which wait() does not report.
        (None, None) => ScriptOutcome::Signalled(0),
    }
}

/// Makes `cmd`'s child move itself into the cgroup whose `cgroup.procs` is `procs` between
/// fork and exec.
fn join_cgroup_before_exec(cmd: &mut Command, procs: &Path) -> io::Result<()> {
    let procs = CString::new(procs.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "cgroup path contains NUL"))?;
    // SAFETY: the closure runs in the forked child, where only async-signal-safe calls are
    // allowed; it uses open/write/close on a path allocated before the fork, allocating nothing.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // "0" means "the writing process".
            let written = libc::write(fd, b"0".as_ptr().cast(), 1);
            let result = if written == 1 { Ok(()) } else { Err(io::Error::last_os_error()) };
            libc::close(fd);
            result
        });
    }
    Ok(())
}

/// Waits up to `limit` for `child`, the leader of its own process group, and reaps it.
///
/// Returns `None` when it overran: then the group got SIGTERM, `term_grace` later (at once when
/// zero) SIGKILL, and the leader is reaped if it dies within `reap_wait` (else by a background
/// thread). With `kill_group_on_exit`, processes left in the group after the leader exits get
/// SIGKILL too.
///
/// The leader is only reaped after the last signal to its group: an unreaped leader keeps its
/// pid, so the group id cannot have been reused by an unrelated process.
pub(crate) async fn supervise(
    mut child: Child,
    limit: Duration,
    term_grace: Duration,
    kill_group_on_exit: bool,
    reap_wait: Duration,
) -> io::Result<Option<ExitStatus>> {
    let pid = child.id();
    let timed_out = match tokio::time::timeout(limit, wait_exited(pid)).await {
        Ok(Ok(())) => false,
        Ok(Err(e)) => {
            let _ = kill(-(pid as i32), libc::SIGKILL);
            reap_in_background(child);
            return Err(e);
        }
        Err(_) => true,
    };
    if timed_out {
        if !term_grace.is_zero() {
            let _ = kill(-(pid as i32), libc::SIGTERM);
            let _ = tokio::time::timeout(term_grace, wait_exited(pid)).await;
        }
        let _ = kill(-(pid as i32), libc::SIGKILL);
        if !matches!(tokio::time::timeout(reap_wait, wait_exited(pid)).await, Ok(Ok(()))) {
            reap_in_background(child);
            return Ok(None);
        }
    } else if kill_group_on_exit {
        let _ = kill(-(pid as i32), libc::SIGKILL);
    }
    // The leader has exited: this returns at once.
    let status = child.wait()?;
    Ok(if timed_out { None } else { Some(status) })
}

/// Waits (without reaping) until process `pid`, a child of ours, has exited.
pub(crate) async fn wait_exited(pid: u32) -> io::Result<()> {
    // A pidfd becomes readable when the process exits; the zombie stays until waited for.
    // Needs a runtime with the IO driver enabled (AsyncFd panics without one).
    if let Ok(fd) = pidfd_open(pid) {
        // SAFETY: an OwnedFd is a valid open descriptor, owned by the AsyncFd until it is
        // dropped, and `as_raw_fd` always returns that descriptor.
        let registered = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) };
        if let Ok(fd) = registered {
            let _ready = fd.readable().await?;
            return Ok(());
        }
    }
    // No pidfd (Linux < 5.3) or it cannot be registered: poll waitid(WNOWAIT).
    loop {
        // SAFETY: an all-zero siginfo_t is valid; waitid only writes into it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: plain system call on a valid out-pointer; WNOWAIT leaves the child unreaped.
        let r = unsafe {
            libc::waitid(libc::P_PID, pid, &mut info, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT)
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: waitid filled in a SIGCHLD siginfo (or left it zeroed: si_pid 0).
        if unsafe { info.si_pid() } != 0 {
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Reaps `child` on a thread of its own, for a child that does not die promptly.
fn reap_in_background(mut child: Child) {
    let _ = std::thread::Builder::new().name("reap".into()).spawn(move || child.wait());
}

pub(crate) fn kill(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: kill(2) has no memory-safety preconditions.
    if unsafe { libc::kill(pid, sig) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub(crate) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

pub(crate) fn pidfd_send_signal(fd: &OwnedFd, sig: i32) -> io::Result<()> {
    // SAFETY: valid pidfd, a NULL siginfo (meaning "as kill(2)") and no flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn at(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// RFC 3339 UTC time with milliseconds, e.g. `2026-05-01T10:00:00.123Z`.
pub fn rfc3339_utc(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (y, m, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        let at = |s: u64, ms: u64| {
            rfc3339_utc(UNIX_EPOCH + Duration::from_secs(s) + Duration::from_millis(ms))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_709_251_199, 999), "2024-02-29T23:59:59.999Z");
        assert_eq!(at(4_102_444_800, 0), "2100-01-01T00:00:00.000Z");
    }

    #[test]
    fn cgroup_names_are_checked() {
        for bad in ["", ".", "..", "a/b", "cgroup.procs"] {
            let e = AppCgroup::new(Path::new("/nonexistent"), bad).expect_err(bad);
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad}");
        }
    }

    #[test]
    fn a_plain_directory_is_not_a_cgroup() {
        let dir = std::env::temp_dir().join(format!("cl-drivers-cg-{}", std::process::id()));
        let e = AppCgroup::new(&dir, "web").expect_err("not cgroupfs");
        assert!(e.to_string().contains("not a cgroup v2 directory"), "{e}");
        let _ = fs::remove_dir_all(&dir);
    }
}
