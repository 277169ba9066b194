//! OCF resource agents (the OCF Resource Agent API 1.1, as Pacemaker runs them): where an
//! agent lives, the environment it is given, what its exit codes mean, and running one action
//! with its output captured.
//!
//! `start` and `stop` run through [`crate::script::run_script`], in the application's cgroup
//! with their output in the application's log, like a start script: whatever an agent starts
//! (a daemon, `send_arp`) belongs to the application. `monitor`, `validate-all` and `meta-data`
//! run with [`run_captured`]: their output is the answer (meta-data) or the reason of a
//! failure (`ocf-exit-reason:` lines).

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::script::ScriptOutcome;

/// Where the agents are installed (`OCF_ROOT`) on a Debian/Red Hat system.
pub const DEFAULT_OCF_ROOT: &str = "/usr/lib/ocf";

/// The prefix `ocf_exit_reason` writes before the reason of a failure, on stderr.
pub const EXIT_REASON_PREFIX: &str = "ocf-exit-reason:";

/// The most output of one captured action kept, in bytes (meta-data is a few kilobytes).
const OUTPUT_MAX: u64 = 1 << 20;

/// How often a captured action is polled for its exit.
const POLL: Duration = Duration::from_millis(5);

/// `OCF_ROOT` for a node: `candidate` (the default path under the node's root) when agents
/// are installed there, else the host's [`DEFAULT_OCF_ROOT`]. On a real node both are the
/// same; lab nodes share the host's agents unless their root has its own.
pub fn ocf_root(candidate: &Path) -> PathBuf {
    if candidate.join("resource.d").is_dir() {
        candidate.to_path_buf()
    } else {
        PathBuf::from(DEFAULT_OCF_ROOT)
    }
}

/// The agent `ocf:<provider>:<agent>` under `ocf_root`.
pub fn agent_path(ocf_root: &Path, provider: &str, agent: &str) -> PathBuf {
    ocf_root.join("resource.d").join(provider).join(agent)
}

/// An agent's exit code, as the OCF API defines it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OcfExit {
    /// 0: the action succeeded (monitor: running).
    Success,
    /// 1: generic error.
    ErrGeneric,
    /// 2: invalid parameters.
    ErrArgs,
    /// 3: the action is not implemented.
    ErrUnimplemented,
    /// 4: insufficient privileges.
    ErrPerm,
    /// 5: a program the agent needs is not installed.
    ErrInstalled,
    /// 6: the resource is configured wrongly (the same anywhere: do not try elsewhere).
    ErrConfigured,
    /// 7: not running (monitor: cleanly stopped).
    NotRunning,
    /// 8: running in the promoted role (not supported by linuxha yet).
    RunningPromoted,
    /// 9: failed in the promoted role (not supported by linuxha yet).
    FailedPromoted,
    /// Anything else.
    Other(i32),
}

impl OcfExit {
    /// The meaning of an exit code.
    pub fn from_code(code: i32) -> OcfExit {
        match code {
            0 => OcfExit::Success,
            1 => OcfExit::ErrGeneric,
            2 => OcfExit::ErrArgs,
            3 => OcfExit::ErrUnimplemented,
            4 => OcfExit::ErrPerm,
            5 => OcfExit::ErrInstalled,
            6 => OcfExit::ErrConfigured,
            7 => OcfExit::NotRunning,
            8 => OcfExit::RunningPromoted,
            9 => OcfExit::FailedPromoted,
            other => OcfExit::Other(other),
        }
    }

    /// The exit code.
    pub fn code(self) -> i32 {
        match self {
            OcfExit::Success => 0,
            OcfExit::ErrGeneric => 1,
            OcfExit::ErrArgs => 2,
            OcfExit::ErrUnimplemented => 3,
            OcfExit::ErrPerm => 4,
            OcfExit::ErrInstalled => 5,
            OcfExit::ErrConfigured => 6,
            OcfExit::NotRunning => 7,
            OcfExit::RunningPromoted => 8,
            OcfExit::FailedPromoted => 9,
            OcfExit::Other(code) => code,
        }
    }

    /// What it means, in a few words.
    pub fn meaning(self) -> &'static str {
        match self {
            OcfExit::Success => "success",
            OcfExit::ErrGeneric => "generic error",
            OcfExit::ErrArgs => "invalid parameters",
            OcfExit::ErrUnimplemented => "action not implemented",
            OcfExit::ErrPerm => "insufficient privileges",
            OcfExit::ErrInstalled => "a required program is not installed",
            OcfExit::ErrConfigured => "not configured correctly",
            OcfExit::NotRunning => "not running",
            OcfExit::RunningPromoted => "running promoted, which linuxha does not support",
            OcfExit::FailedPromoted => "failed promoted, which linuxha does not support",
            OcfExit::Other(_) => "unknown exit code",
        }
    }
}

impl fmt::Display for OcfExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exit {} ({})", self.code(), self.meaning())
    }
}

/// How an agent action ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActionOutcome {
    /// It exited with this OCF code.
    Exit(OcfExit),
    /// It was killed by this signal (not by us).
    Signalled(i32),
    /// It overran its time limit and was killed.
    TimedOut,
}

impl ActionOutcome {
    /// The OCF meaning of how a script ended.
    pub fn of(outcome: ScriptOutcome) -> ActionOutcome {
        match outcome {
            ScriptOutcome::Exited(code) => ActionOutcome::Exit(OcfExit::from_code(code)),
            ScriptOutcome::Signalled(sig) => ActionOutcome::Signalled(sig),
            ScriptOutcome::TimedOut => ActionOutcome::TimedOut,
        }
    }

    /// Exit 0.
    pub fn success(self) -> bool {
        self == ActionOutcome::Exit(OcfExit::Success)
    }
}

impl fmt::Display for ActionOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActionOutcome::Exit(exit) => exit.fmt(f),
            ActionOutcome::Signalled(sig) => write!(f, "killed by signal {sig}"),
            ActionOutcome::TimedOut => f.write_str("timed out"),
        }
    }
}

/// One resource instance, for [`env`].
#[derive(Clone, Copy, Debug)]
pub struct Instance<'a> {
    /// `OCF_RESOURCE_INSTANCE`.
    pub id: &'a str,
    /// `OCF_RESOURCE_PROVIDER`.
    pub provider: &'a str,
    /// `OCF_RESOURCE_TYPE`.
    pub agent: &'a str,
    /// `OCF_RESKEY_<name>` for each.
    pub params: &'a BTreeMap<String, String>,
    /// `OCF_ROOT`.
    pub ocf_root: &'a Path,
    /// `HA_RSCTMP`: the agents' state directory (Dummy's state file, IPaddr2's send_arp pid
    /// file…); one per node, so that two lab nodes on one host never share one.
    pub rsctmp: &'a Path,
    /// This node's name (`OCF_RESKEY_CRM_meta_on_node`).
    pub node: &'a str,
}

/// The environment of one action, as Pacemaker sets it: the OCF variables, every parameter as
/// `OCF_RESKEY_<name>`, the meta variables agents read (`OCF_RESKEY_CRM_meta_timeout` and
/// `…_interval` in milliseconds — an interval of 0 makes a monitor a probe — `…_name`,
/// `…_on_node`), `HA_RSCTMP`, and a `PATH` that has the sbin directories agents expect.
pub fn env(
    instance: &Instance<'_>,
    action: &str,
    timeout: Duration,
    interval: Duration,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        ("OCF_RA_VERSION_MAJOR".into(), "1".into()),
        ("OCF_RA_VERSION_MINOR".into(), "1".into()),
        ("OCF_ROOT".into(), instance.ocf_root.display().to_string()),
        ("OCF_RESOURCE_INSTANCE".into(), instance.id.into()),
        ("OCF_RESOURCE_TYPE".into(), instance.agent.into()),
        ("OCF_RESOURCE_PROVIDER".into(), instance.provider.into()),
        ("OCF_EXIT_REASON_PREFIX".into(), EXIT_REASON_PREFIX.into()),
        ("HA_RSCTMP".into(), instance.rsctmp.display().to_string()),
    ];
    for (name, value) in instance.params {
        env.push((format!("OCF_RESKEY_{name}"), value.clone()));
    }
    env.extend([
        ("OCF_RESKEY_CRM_meta_name".into(), action.to_string()),
        ("OCF_RESKEY_CRM_meta_timeout".into(), timeout.as_millis().to_string()),
        ("OCF_RESKEY_CRM_meta_interval".into(), interval.as_millis().to_string()),
        ("OCF_RESKEY_CRM_meta_on_node".into(), instance.node.into()),
        ("OCF_RESKEY_CRM_meta_on_node_uuid".into(), instance.node.into()),
    ]);
    env.push(("PATH".into(), path_with_sbin()));
    env
}

/// This process's `PATH` with the sbin directories agents and init scripts expect.
pub fn path_with_sbin() -> String {
    with_sbin(std::env::var("PATH").ok().as_deref())
}

/// `path` with the standard directories appended that it lacks: agents call `ip`, `ifconfig`
/// and friends from sbin, which a daemon started from a user's shell may not have.
fn with_sbin(path: Option<&str>) -> String {
    let mut dirs: Vec<&str> = path.unwrap_or("").split(':').filter(|d| !d.is_empty()).collect();
    for standard in ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]
    {
        if !dirs.contains(&standard) {
            dirs.push(standard);
        }
    }
    dirs.join(":")
}

/// The reason an agent gave for a failure: the last `ocf-exit-reason:` line of its output.
pub fn exit_reason(output: &str) -> Option<String> {
    output.lines().rev().find_map(|line| {
        let (_, reason) = line.split_once(EXIT_REASON_PREFIX)?;
        let reason = reason.trim();
        (!reason.is_empty()).then(|| reason.to_string())
    })
}

/// What a captured action did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Captured {
    /// How it ended.
    pub outcome: ScriptOutcome,
    /// Its standard output (at most 1 MiB, lossily UTF-8).
    pub stdout: String,
    /// Its standard error (the same limit).
    pub stderr: String,
}

/// Run `path args…` with `env` added and wait for it for up to `timeout`, blocking (call it
/// from `spawn_blocking` in async code). stdin is /dev/null, the working directory `/`,
/// stdout and stderr go to unlinked temporary files (so a background process that keeps them
/// open cannot make us wait). The command leads its own process group; on timeout the group
/// is killed with SIGKILL and [`ScriptOutcome::TimedOut`] returned.
pub fn run_captured(
    path: &Path,
    args: &[&str],
    env: &[(String, String)],
    timeout: Duration,
) -> io::Result<Captured> {
    let mut stdout = scratch_file()?;
    let mut stderr = scratch_file()?;
    let mut child = Command::new(path)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(stdout.try_clone()?)
        .stderr(stderr.try_clone()?)
        .process_group(0)
        .spawn()?;
    let deadline = Instant::now() + timeout;
    let outcome = loop {
        if let Some(status) = child.try_wait()? {
            break match (status.code(), status.signal()) {
                (Some(code), _) => ScriptOutcome::Exited(code),
                (None, Some(sig)) => ScriptOutcome::Signalled(sig),
                (None, None) => ScriptOutcome::Signalled(0),
            };
        }
        if Instant::now() >= deadline {
            // Not reaped yet, so the group id is still ours to signal.
            // SAFETY: kill(2) with a negative pid signals that process group; no memory involved.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            break ScriptOutcome::TimedOut;
        }
        std::thread::sleep(POLL);
    };
    Ok(Captured { outcome, stdout: read_back(&mut stdout)?, stderr: read_back(&mut stderr)? })
}

/// A temporary file that is already unlinked: nothing is left behind whatever happens.
fn scratch_file() -> io::Result<File> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir();
    loop {
        let name = format!(
            ".linuxha-agent-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = dir.join(name);
        match OpenOptions::new().read(true).write(true).create_new(true).open(&path) {
            Ok(file) => {
                fs::remove_file(&path)?;
                return Ok(file);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

fn read_back(file: &mut File) -> io::Result<String> {
    file.seek(SeekFrom::Start(0))?;
    let mut bytes = Vec::new();
    file.take(OUTPUT_MAX).read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// `<agent> meta-data`: its self-description (XML), or why there is none.
pub fn metadata(agent: &Path, ocf_root: &Path, timeout: Duration) -> Result<String, String> {
    let env = vec![
        ("OCF_RA_VERSION_MAJOR".to_string(), "1".to_string()),
        ("OCF_RA_VERSION_MINOR".to_string(), "1".to_string()),
        ("OCF_ROOT".to_string(), ocf_root.display().to_string()),
        ("PATH".to_string(), path_with_sbin()),
    ];
    let captured = run_captured(agent, &["meta-data"], &env, timeout)
        .map_err(|e| format!("cannot be run ({}): {e}", agent.display()))?;
    match ActionOutcome::of(captured.outcome) {
        ActionOutcome::Exit(OcfExit::Success) => Ok(captured.stdout),
        other => Err(format!(
            "meta-data failed: {other}{}",
            exit_reason(&captured.stderr).map(|r| format!(": {r}")).unwrap_or_default()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_map_exactly() {
        let names: Vec<(i32, OcfExit)> = (0..=10).map(|c| (c, OcfExit::from_code(c))).collect();
        assert_eq!(names[0].1, OcfExit::Success);
        assert_eq!(names[1].1, OcfExit::ErrGeneric);
        assert_eq!(names[2].1, OcfExit::ErrArgs);
        assert_eq!(names[3].1, OcfExit::ErrUnimplemented);
        assert_eq!(names[4].1, OcfExit::ErrPerm);
        assert_eq!(names[5].1, OcfExit::ErrInstalled);
        assert_eq!(names[6].1, OcfExit::ErrConfigured);
        assert_eq!(names[7].1, OcfExit::NotRunning);
        assert_eq!(names[8].1, OcfExit::RunningPromoted);
        assert_eq!(names[9].1, OcfExit::FailedPromoted);
        assert_eq!(names[10].1, OcfExit::Other(10));
        for (code, exit) in names {
            assert_eq!(exit.code(), code, "round trip");
        }
        assert_eq!(OcfExit::NotRunning.to_string(), "exit 7 (not running)");
        assert!(OcfExit::RunningPromoted.meaning().contains("not support"));
        assert_eq!(
            ActionOutcome::of(ScriptOutcome::Exited(7)),
            ActionOutcome::Exit(OcfExit::NotRunning)
        );
        assert_eq!(ActionOutcome::of(ScriptOutcome::TimedOut), ActionOutcome::TimedOut);
        assert!(ActionOutcome::of(ScriptOutcome::Exited(0)).success());
    }

    #[test]
    fn environment_has_every_parameter_and_the_meta_variables() {
        let params: BTreeMap<String, String> =
            [("ip".to_string(), "10.0.0.5".to_string()), ("cidr_netmask".into(), "24".into())]
                .into_iter()
                .collect();
        let instance = Instance {
            id: "vip1",
            provider: "heartbeat",
            agent: "IPaddr2",
            params: &params,
            ocf_root: Path::new("/usr/lib/ocf"),
            rsctmp: Path::new("/srv/node1/run/resource-agents"),
            node: "node1",
        };
        let env: BTreeMap<String, String> =
            env(&instance, "monitor", Duration::from_secs(20), Duration::from_secs(2))
                .into_iter()
                .collect();
        let get = |k: &str| env.get(k).map(String::as_str);
        assert_eq!(get("OCF_ROOT"), Some("/usr/lib/ocf"));
        assert_eq!(get("OCF_RESOURCE_INSTANCE"), Some("vip1"));
        assert_eq!(get("OCF_RESOURCE_TYPE"), Some("IPaddr2"));
        assert_eq!(get("OCF_RESOURCE_PROVIDER"), Some("heartbeat"));
        assert_eq!(get("OCF_RA_VERSION_MAJOR"), Some("1"));
        assert_eq!(get("OCF_RESKEY_ip"), Some("10.0.0.5"));
        assert_eq!(get("OCF_RESKEY_cidr_netmask"), Some("24"));
        assert_eq!(get("OCF_RESKEY_CRM_meta_timeout"), Some("20000"));
        assert_eq!(get("OCF_RESKEY_CRM_meta_interval"), Some("2000"));
        assert_eq!(get("OCF_RESKEY_CRM_meta_name"), Some("monitor"));
        assert_eq!(get("OCF_RESKEY_CRM_meta_on_node"), Some("node1"));
        assert_eq!(get("HA_RSCTMP"), Some("/srv/node1/run/resource-agents"));
        assert!(get("PATH").is_some_and(|p| p.split(':').any(|d| d == "/usr/sbin")));
    }

    #[test]
    fn sbin_is_added_once() {
        assert_eq!(
            with_sbin(Some("/opt/bin:/usr/bin")),
            "/opt/bin:/usr/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/sbin:/bin"
        );
        assert!(with_sbin(None).starts_with("/usr/local/sbin:"));
    }

    #[test]
    fn the_last_exit_reason_wins() {
        let out = "noise\nocf-exit-reason:first\nmore\nNov 1 INFO: ocf-exit-reason:No process state file found\n";
        assert_eq!(exit_reason(out).as_deref(), Some("No process state file found"));
        assert_eq!(exit_reason("nothing here"), None);
    }

    #[test]
    fn captured_action_reports_code_output_and_timeout() {
        let sh = Path::new("/bin/sh");
        let env = vec![("GREETING".to_string(), "hello".to_string())];
        let done = run_captured(
            sh,
            &["-c", "echo $GREETING; echo ocf-exit-reason:bad >&2; sleep 0.2 & exit 7"],
            &env,
            Duration::from_secs(5),
        )
        .expect("runs");
        assert_eq!(done.outcome, ScriptOutcome::Exited(7));
        assert_eq!(done.stdout, "hello\n");
        assert_eq!(exit_reason(&done.stderr).as_deref(), Some("bad"));
        let started = Instant::now();
        let hung =
            run_captured(sh, &["-c", "sleep 30"], &[], Duration::from_millis(200)).expect("runs");
        assert_eq!(hung.outcome, ScriptOutcome::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
