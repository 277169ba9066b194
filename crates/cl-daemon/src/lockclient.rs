//! The client side of cllockd's local socket (blocking, for the commands): take a cluster-wide
//! lock, hold it for as long as the [`HeldLock`] lives, and run a command under it. The
//! protocol is described in [`crate::lockd`].

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ExitStatus};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cl_paths::Paths;
use cl_wire::lock::{LockRequest, LockResponse};

/// cllockd's socket for `cluster` under `paths` (root only).
pub fn socket_path(paths: &Paths, cluster: &str) -> PathBuf {
    paths.run_dir().join(format!("{}.sock", cl_wire::Daemon::Cllockd.process_name(cluster)))
}

/// Why a lock was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcquireError {
    /// cllockd is not running on this node: the cluster is not formed here.
    NotRunning,
    /// Someone else holds it (after waiting as long as asked).
    Held {
        /// The holder.
        by: String,
        /// Since when (seconds since 1970).
        since: u64,
    },
    /// Anything else, in one sentence.
    Failed(String),
}

/// A lock held for as long as this value lives (or until [`HeldLock::release`]).
#[derive(Debug)]
pub struct HeldLock {
    stream: UnixStream,
    name: String,
    since: u64,
}

/// Take lock `name` from the local cllockd of `cluster`, waiting up to `wait` for it.
pub fn acquire(
    paths: &Paths,
    cluster: &str,
    name: &str,
    owner: &str,
    wait: Duration,
) -> Result<HeldLock, AcquireError> {
    let path = socket_path(paths, cluster);
    let mut stream = match UnixStream::connect(&path) {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(AcquireError::NotRunning)
        }
        Err(e) => {
            return Err(AcquireError::Failed(format!(
                "cannot reach cllockd at {}: {e}",
                path.display()
            )))
        }
    };
    let request =
        LockRequest::Acquire { name: name.into(), owner: owner.into(), wait: wait.as_secs() };
    let failed = |e: std::io::Error| AcquireError::Failed(format!("talking to cllockd: {e}"));
    let mut line =
        serde_json::to_string(&request).map_err(|e| AcquireError::Failed(e.to_string()))?;
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(failed)?;
    // Each attempt may take a few seconds when the peer does not answer.
    stream.set_read_timeout(Some(wait + Duration::from_secs(30))).map_err(failed)?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer).map_err(failed)?;
    if answer.is_empty() {
        return Err(AcquireError::Failed("cllockd closed the connection (is it stopping?)".into()));
    }
    let response: LockResponse = serde_json::from_str(answer.trim())
        .map_err(|e| AcquireError::Failed(format!("unreadable answer from cllockd: {e}")))?;
    match response {
        LockResponse::Granted { name, since } => {
            stream.set_read_timeout(None).map_err(failed)?;
            Ok(HeldLock { stream, name, since })
        }
        LockResponse::Held { by, since, .. } => Err(AcquireError::Held { by, since }),
        LockResponse::Error { message } => Err(AcquireError::Failed(message)),
        LockResponse::Lost { reason, .. } => Err(AcquireError::Failed(reason)),
    }
}

impl HeldLock {
    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// When it was granted (seconds since 1970).
    pub fn since(&self) -> u64 {
        self.since
    }

    /// Release the lock now (dropping it does the same).
    pub fn release(self) {
        drop(self);
    }

    /// A thread that sends one reason when the lock is lost (cllockd said so, or stopped).
    fn watch(&self) -> std::io::Result<mpsc::Receiver<String>> {
        let stream = self.stream.try_clone()?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            let reason = loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break "cllockd stopped".to_string(),
                    Ok(_) => {
                        if let Ok(LockResponse::Lost { reason, .. }) =
                            serde_json::from_str(line.trim())
                        {
                            break reason;
                        }
                    }
                }
            };
            let _ = tx.send(reason);
        });
        Ok(rx)
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        // Shut down rather than only close: a watcher thread may hold a clone of the socket.
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// How a command run under a lock ended.
#[derive(Debug)]
pub enum RunOutcome {
    /// It ran to the end with the lock held.
    Exited(ExitStatus),
    /// The lock was lost, so it was stopped (SIGTERM, SIGKILL 10 s later).
    Lost {
        /// Why the lock was lost.
        reason: String,
        /// How the command ended.
        status: ExitStatus,
    },
}

/// The signal cllock received last and has not passed on yet (0: none).
static RECEIVED: AtomicI32 = AtomicI32::new(0);

extern "C" fn note_signal(signal: libc::c_int) {
    RECEIVED.store(signal, Ordering::Relaxed);
}

/// Signals passed on to the command's process group.
const FORWARDED: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// Run `argv` with `lock` held, release it when the command ends, and stop the command if the
/// lock is lost.
///
/// The command runs in its own process group, so that a lost lock stops everything it started
/// (SIGTERM to the group, SIGKILL 10 s later). SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to this
/// process are passed on to that group, and the command gets SIGTERM if this process dies
/// (which lets the lock go). Being in a group of its own, an interactive command cannot read
/// from the terminal.
pub fn run_holding(lock: HeldLock, argv: &[String]) -> std::io::Result<RunOutcome> {
    let Some((program, args)) = argv.split_first() else {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "no command"));
    };
    let lost = lock.watch()?;
    let mut command = std::process::Command::new(program);
    command.args(args).process_group(0);
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the child between fork and exec; it only calls prctl(2) and
    // getppid(2), which are async-signal-safe, and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            let none = 0 as libc::c_ulong;
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong, none, none, none)
                != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                // This process died before the signal was armed: do not run unprotected.
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let handler = note_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    for signal in FORWARDED {
        // SAFETY: the handler only stores into an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(signal, handler);
        }
    }
    let mut child = command.spawn()?;
    let group = child.id() as libc::pid_t;
    let outcome = loop {
        if let Some(status) = child.try_wait()? {
            break RunOutcome::Exited(status);
        }
        let signal = RECEIVED.swap(0, Ordering::Relaxed);
        if signal != 0 {
            // SAFETY: kill(2) on the process group of our own unreaped child.
            unsafe {
                libc::kill(-group, signal);
            }
        }
        if let Ok(reason) = lost.try_recv() {
            let status = stop(&mut child)?;
            break RunOutcome::Lost { reason, status };
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    lock.release();
    Ok(outcome)
}

/// SIGTERM to the command's process group, SIGKILL to whatever is left of it after 10 s (or
/// once the command itself has ended); the command is reaped only then, so the group id is
/// still its own.
fn stop(child: &mut Child) -> std::io::Result<ExitStatus> {
    let group = child.id() as libc::pid_t;
    // SAFETY: kill(2) on the process group of our own unreaped child, with a valid signal.
    unsafe {
        libc::kill(-group, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut status = None;
    while status.is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        status = child.try_wait()?;
    }
    // SAFETY: as above.
    unsafe {
        libc::kill(-group, libc::SIGKILL);
    }
    match status {
        Some(status) => Ok(status),
        None => child.wait(),
    }
}
