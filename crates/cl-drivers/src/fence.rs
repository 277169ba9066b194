//! Fence agents: powering the peer off (and on) before taking over its applications.
//!
//! The agents follow the fence-agents convention (as `fenced` and pacemaker's stonithd call
//! them): the agent is run with **no arguments** and reads `name=value` lines on stdin — every
//! configured option, `nodename=<node>` and `action=off|on|reboot|status`. Exit status 0 means
//! success; for `status`, 0 means the node is powered on and 2 that it is off; anything else is
//! an error. Running without arguments (never `-o off` on the command line) also keeps
//! passwords out of `ps`.
//!
//! [`fence`] runs one call. Retrying (and pausing [`FenceDevice::retry`] in between) is the
//! caller's decision: the takeover guard decides whether one more attempt is worth it.

use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use cl_config::clconf::FenceDevice;

use crate::script::supervise;

/// After an agent overruns its timeout: time between SIGTERM and SIGKILL of its process group.
pub const FENCE_KILL_GRACE: Duration = Duration::from_secs(1);

/// Most bytes of an agent's stderr (and stdout) kept for the error message.
const OUTPUT_LIMIT: usize = 8 * 1024;

/// What the agent is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FenceAction {
    /// Power the node off (the fencing itself).
    Off,
    /// Power the node on.
    On,
    /// Power the node off, then on.
    Reboot,
    /// Ask whether the node is powered on.
    Status,
}

impl FenceAction {
    /// The `action=` value of the fence-agents convention.
    pub fn as_str(self) -> &'static str {
        match self {
            FenceAction::Off => "off",
            FenceAction::On => "on",
            FenceAction::Reboot => "reboot",
            FenceAction::Status => "status",
        }
    }
}

impl fmt::Display for FenceAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of a successful call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceOutcome {
    /// `off`, `on` or `reboot` succeeded (exit 0).
    Done,
    /// `status`: the node is powered on (exit 0).
    PoweredOn,
    /// `status`: the node is powered off (exit 2).
    PoweredOff,
}

/// Why a call failed. The node's power state is then unknown.
#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    /// The agent could not be started.
    #[error("fence agent {agent}: cannot run it: {source}")]
    Spawn {
        /// The agent as resolved under the root.
        agent: PathBuf,
        /// What the kernel said.
        source: io::Error,
    },
    /// The agent ran and reported failure (or was killed by a signal).
    #[error("fence agent {agent} (action={action}, node {node}) failed: {status}{}", show_stderr(.stderr))]
    Failed {
        /// The agent as resolved under the root.
        agent: PathBuf,
        /// What it was asked to do.
        action: FenceAction,
        /// The target node.
        node: String,
        /// `exit code N` or `killed by signal N`.
        status: String,
        /// What the agent wrote on stderr (its end, when long), trimmed.
        stderr: String,
    },
    /// The agent did not finish within the device's timeout; its process group was killed.
    #[error("fence agent {agent} (action={action}, node {node}) timed out after {timeout:?}; its process group was killed{}", show_stderr(.stderr))]
    TimedOut {
        /// The agent as resolved under the root.
        agent: PathBuf,
        /// What it was asked to do.
        action: FenceAction,
        /// The target node.
        node: String,
        /// The limit it overran.
        timeout: Duration,
        /// What it had written on stderr by then.
        stderr: String,
    },
    /// Waiting for the agent failed.
    #[error("fence agent {agent}: {source}")]
    Wait {
        /// The agent as resolved under the root.
        agent: PathBuf,
        /// The error.
        source: io::Error,
    },
}

fn show_stderr(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

/// The lines written to the agent's stdin: `nodename=` first (so a configured option of the
/// same name wins, as later lines override earlier ones), then the options in file order,
/// then `action=` — last, so nothing can override it.
pub fn stdin_lines(device: &FenceDevice, node: &str, action: FenceAction) -> String {
    let mut text = format!("nodename={node}\n");
    for (name, value) in &device.options {
        text.push_str(name);
        text.push('=');
        text.push_str(value);
        text.push('\n');
    }
    text.push_str("action=");
    text.push_str(action.as_str());
    text.push('\n');
    text
}

/// Runs `device`'s agent once for `action` on `node`.
///
/// The agent path is resolved under `root` (the node's root, `/` on a real node). It runs as
/// the leader of a new process group with working directory `/`, stdin the option lines, and
/// stdout/stderr captured. When it overruns [`FenceDevice::timeout`], its process group gets
/// SIGTERM, then SIGKILL [`FENCE_KILL_GRACE`] later, and [`FenceError::TimedOut`] is returned.
/// Processes it leaves in its group after exiting are killed as well.
pub async fn fence(
    device: &FenceDevice,
    node: &str,
    action: FenceAction,
    root: &Path,
) -> Result<FenceOutcome, FenceError> {
    let agent = match device.agent.strip_prefix("/") {
        Ok(relative) => root.join(relative),
        Err(_) => root.join(&device.agent),
    };
    let mut cmd = Command::new(&agent);
    cmd.current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child =
        cmd.spawn().map_err(|source| FenceError::Spawn { agent: agent.clone(), source })?;
    drop(cmd);
    // Readers on threads of their own: an agent that fills a pipe must not block on us.
    let stdout = child.stdout.take().map(collect);
    let stderr = child.stderr.take().map(collect);
    if let Some(mut stdin) = child.stdin.take() {
        let lines = stdin_lines(device, node, action);
        // The options are far smaller than a pipe buffer; an agent that exits without reading
        // them (EPIPE) is judged by its exit status, not by this write.
        let _ = std::thread::Builder::new()
            .name("fence-stdin".into())
            .spawn(move || stdin.write_all(lines.as_bytes()));
    }
    let waited = supervise(child, device.timeout, FENCE_KILL_GRACE, true, Duration::from_secs(5))
        .await
        .map_err(|source| FenceError::Wait { agent: agent.clone(), source })?;
    // The group is gone, so the pipes are closed unless something left the group: give the
    // readers a moment, never forever.
    let _ = stdout.map(|rx| rx.recv_timeout(Duration::from_secs(1)));
    let stderr = stderr
        .and_then(|rx| rx.recv_timeout(Duration::from_secs(1)).ok())
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_string())
        .unwrap_or_default();
    let node = node.to_string();
    let Some(status) = waited else {
        return Err(FenceError::TimedOut { agent, action, node, timeout: device.timeout, stderr });
    };
    match (action, status.code()) {
        (FenceAction::Status, Some(0)) => Ok(FenceOutcome::PoweredOn),
        (FenceAction::Status, Some(2)) => Ok(FenceOutcome::PoweredOff),
        (_, Some(0)) => Ok(FenceOutcome::Done),
        (_, code) => {
            let status = match (code, status.signal()) {
                (Some(code), _) => format!("exit code {code}"),
                (None, Some(sig)) => format!("killed by signal {sig}"),
                (None, None) => "ended abnormally".to_string(),
            };
            Err(FenceError::Failed { agent, action, node, status, stderr })
        }
    }
}

/// Reads `pipe` to its end on a thread, keeping the last [`OUTPUT_LIMIT`] bytes.
fn collect(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    let _ = std::thread::Builder::new().name("fence-output".into()).spawn(move || {
        let mut kept: Vec<u8> = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    kept.extend_from_slice(&buf[..n]);
                    if kept.len() > OUTPUT_LIMIT {
                        kept.drain(..kept.len() - OUTPUT_LIMIT);
                    }
                }
            }
        }
        let _ = tx.send(kept);
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Instant;

    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let dir = std::env::temp_dir().join(format!("cl-fence-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("sbin")).expect("temp dir");
            Dir(dir)
        }

        /// Writes an agent as `<root>/sbin/<name>` and returns a device for it.
        fn agent(&self, name: &str, body: &str, timeout: Duration) -> FenceDevice {
            let path = self.0.join("sbin").join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write agent");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
            FenceDevice {
                agent: PathBuf::from("/sbin").join(name),
                timeout,
                retry: Duration::from_secs(1),
                poweroff: FenceDevice::DEFAULT_POWEROFF.min(timeout),
                options: vec![
                    ("ipaddr".into(), "10.0.0.5".into()),
                    ("login".into(), "admin".into()),
                ],
            }
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const LONG: Duration = Duration::from_secs(20);

    #[tokio::test]
    async fn the_agent_reads_options_nodename_and_action_on_stdin() {
        let dir = Dir::new("stdin");
        let out = dir.0.join("stdin.txt");
        let device = dir.agent("fence_record", &format!("cat > {}", out.display()), LONG);
        let outcome = fence(&device, "node1", FenceAction::Off, &dir.0).await.expect("fenced");
        assert_eq!(outcome, FenceOutcome::Done);
        let seen = std::fs::read_to_string(&out).expect("recorded");
        assert_eq!(seen, "nodename=node1\nipaddr=10.0.0.5\nlogin=admin\naction=off\n");
    }

    #[tokio::test]
    async fn a_failing_agent_reports_its_exit_code_and_stderr() {
        let dir = Dir::new("fail");
        let device =
            dir.agent("fence_fail", "cat >/dev/null; echo 'Unable to connect' >&2; exit 1", LONG);
        let err = fence(&device, "node2", FenceAction::Reboot, &dir.0).await.expect_err("fails");
        let text = err.to_string();
        assert!(matches!(err, FenceError::Failed { action: FenceAction::Reboot, .. }), "{text}");
        assert!(text.contains("exit code 1") && text.contains("Unable to connect"), "{text}");
        assert!(text.contains("node2") && text.contains("action=reboot"), "{text}");
    }

    #[tokio::test]
    async fn status_maps_0_to_on_2_to_off_and_others_to_errors() {
        let dir = Dir::new("status");
        let on = dir.agent("fence_on", "cat >/dev/null; exit 0", LONG);
        let off = dir.agent("fence_off", "cat >/dev/null; exit 2", LONG);
        let bad = dir.agent("fence_bad", "cat >/dev/null; exit 1", LONG);
        let st = FenceAction::Status;
        assert_eq!(fence(&on, "n", st, &dir.0).await.expect("on"), FenceOutcome::PoweredOn);
        assert_eq!(fence(&off, "n", st, &dir.0).await.expect("off"), FenceOutcome::PoweredOff);
        assert!(fence(&bad, "n", st, &dir.0).await.is_err());
        // Exit 2 is only "off" for status; for off it is a failure.
        assert!(fence(&off, "n", FenceAction::Off, &dir.0).await.is_err());
    }

    #[tokio::test]
    async fn an_agent_that_overruns_is_killed_with_its_process_group() {
        let dir = Dir::new("timeout");
        let pidfile = dir.0.join("child.pid");
        let device = dir.agent(
            "fence_hang",
            &format!(
                "echo started >&2; sleep 60 & echo $! > {}; trap '' TERM; wait",
                pidfile.display()
            ),
            Duration::from_millis(500),
        );
        let started = Instant::now();
        let err = fence(&device, "node1", FenceAction::Off, &dir.0).await.expect_err("times out");
        let elapsed = started.elapsed();
        assert!(matches!(err, FenceError::TimedOut { .. }), "{err}");
        assert!(err.to_string().contains("started"), "stderr kept: {err}");
        assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
        // The background sleep was in the agent's process group: killed too.
        let pid: i32 =
            std::fs::read_to_string(&pidfile).expect("pid written").trim().parse().expect("pid");
        let deadline = Instant::now() + Duration::from_secs(10);
        // SAFETY: kill with signal 0 only checks for existence.
        while unsafe { libc::kill(pid, 0) } == 0 && Instant::now() < deadline {
            // A killed orphan is reaped by init; until then it is a zombie, which counts as gone.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat.contains(") Z ") || stat.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(stat.is_empty() || stat.contains(") Z "), "background job survived: {stat}");
    }

    #[tokio::test]
    async fn a_missing_agent_is_a_spawn_error() {
        let dir = Dir::new("missing");
        let device = FenceDevice {
            agent: PathBuf::from("/sbin/fence_none"),
            timeout: LONG,
            retry: Duration::from_secs(1),
            poweroff: FenceDevice::DEFAULT_POWEROFF,
            options: Vec::new(),
        };
        let err = fence(&device, "node1", FenceAction::Status, &dir.0).await.expect_err("missing");
        assert!(matches!(err, FenceError::Spawn { .. }), "{err}");
    }
}
