//! Application resources run by OCF resource agents and LSB init scripts: where they are on
//! this node, their start, stop and monitor actions, and the configuration checks that need
//! the agents themselves (meta-data, validate-all) for `clbuildapp`.
//!
//! Paths: `OCF_ROOT` is `/usr/lib/ocf` under the node's root when agents are installed there,
//! else the host's `/usr/lib/ocf` (lab nodes share the host's `resource-agents` package).
//! Init scripts are `/etc/init.d/<name>` under the node's root, like start scripts. The
//! agents' state directory `HA_RSCTMP` is `/run/resource-agents` under the node's root, so
//! two lab nodes never share Dummy's state file or IPaddr2's send_arp pid file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cl_config::agent::{AgentKind, AgentMeta};
use cl_config::resources::{Resource, INIT_DIR};
use cl_config::{AgentLookup, FileKind, Host};
use cl_drivers::lsb::LsbStatus;
use cl_drivers::ocf::{self, ActionOutcome, OcfExit};
use cl_drivers::script::{AppCgroup, ScriptOutcome};
use cl_paths::Paths;

use crate::sync::RootedHost;

/// Time limit of `meta-data` (agents advise 5 s).
const META_DATA_TIMEOUT: Duration = Duration::from_secs(10);

/// `OCF_ROOT` on this node.
pub fn ocf_root(paths: &Paths) -> PathBuf {
    ocf::ocf_root(&paths.resolve(Path::new(ocf::DEFAULT_OCF_ROOT)))
}

/// `HA_RSCTMP` on this node (created when missing).
pub fn rsctmp(paths: &Paths) -> PathBuf {
    let dir = paths.resolve(Path::new("/run/resource-agents"));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// The program that runs `kind` on this node.
pub fn program(paths: &Paths, kind: &AgentKind) -> PathBuf {
    match kind {
        AgentKind::Ocf { provider, agent } => ocf::agent_path(&ocf_root(paths), provider, agent),
        AgentKind::Lsb { name } => paths.resolve(&Path::new(INIT_DIR).join(name)),
    }
}

/// The environment of an OCF action of `resource` (LSB scripts get only `base`, with a
/// usable PATH).
fn env(
    paths: &Paths,
    node: &str,
    resource: &Resource,
    action: &str,
    timeout: Duration,
    interval: Duration,
    base: &[(String, String)],
) -> Vec<(String, String)> {
    let mut env = base.to_vec();
    match &resource.kind {
        AgentKind::Ocf { provider, agent } => {
            let root = ocf_root(paths);
            let rsctmp = rsctmp(paths);
            let instance = ocf::Instance {
                id: &resource.id,
                provider,
                agent,
                params: &resource.params,
                ocf_root: &root,
                rsctmp: &rsctmp,
                node,
            };
            env.extend(ocf::env(&instance, action, timeout, interval));
        }
        AgentKind::Lsb { .. } => env.push(("PATH".into(), ocf::path_with_sbin())),
    }
    env
}

/// `<resource id="…" type="…">` for messages.
pub fn describe(resource: &Resource) -> String {
    format!("resource {} ({})", resource.id, resource.kind)
}

/// Run `start` or `stop` of `resource` in the application's cgroup, its output in `log`.
pub async fn run_action(
    paths: &Paths,
    node: &str,
    resource: &Resource,
    action: &str,
    cgroup: &AppCgroup,
    log: &Path,
    base: &[(String, String)],
) -> Result<(), String> {
    let timeout = if action == "start" { resource.start_timeout } else { resource.stop_timeout };
    let env = env(paths, node, resource, action, timeout, Duration::ZERO, base);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let program = program(paths, &resource.kind);
    let outcome = cl_drivers::script::run_script(&program, &[action], &env, cgroup, log, timeout)
        .await
        .map_err(|e| format!("{} {action}: {e}", describe(resource)))?;
    let outcome = match &resource.kind {
        AgentKind::Ocf { .. } => ActionOutcome::of(outcome),
        // LSB start/stop: 0 is success, anything else a failure; shown as the number.
        AgentKind::Lsb { .. } => match outcome {
            ScriptOutcome::Exited(0) => return Ok(()),
            other => return Err(format!("{} {action} {other}", describe(resource))),
        },
    };
    // A stop that finds the resource not running has nothing to do: Pacemaker takes 7 from
    // `stop` as success too.
    let stopped_already = action == "stop" && outcome == ActionOutcome::Exit(OcfExit::NotRunning);
    if outcome.success() || stopped_already {
        Ok(())
    } else {
        Err(format!(
            "{} {action}: {outcome} (its output is in the application log)",
            describe(resource)
        ))
    }
}

/// What one monitor of a resource found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Running.
    Running,
    /// Cleanly stopped (OCF 7, LSB status 3), with the detail.
    NotRunning(String),
    /// Failed otherwise (an error, a time-out, an unsupported state), with the detail.
    Failed(String),
}

impl Health {
    /// How clstat shows it.
    pub fn shown(&self) -> String {
        match self {
            Health::Running => "running".to_string(),
            Health::NotRunning(detail) => format!("not running: {detail}"),
            Health::Failed(detail) => format!("failed: {detail}"),
        }
    }
}

/// Run `monitor` (LSB: `status`) of `resource` once. `probe`: a one-off check (interval 0,
/// as Pacemaker probes) rather than the recurring monitor.
pub async fn monitor(
    paths: &Paths,
    node: &str,
    resource: &Resource,
    probe: bool,
    base: &[(String, String)],
) -> Health {
    let interval = if probe { Duration::ZERO } else { resource.monitor_interval };
    let action = match resource.kind {
        AgentKind::Ocf { .. } => "monitor",
        AgentKind::Lsb { .. } => "status",
    };
    let env = env(paths, node, resource, action, resource.monitor_timeout, interval, base);
    let program = program(paths, &resource.kind);
    let timeout = resource.monitor_timeout;
    let ran =
        tokio::task::spawn_blocking(move || ocf::run_captured(&program, &[action], &env, timeout))
            .await;
    let captured = match ran {
        Ok(Ok(captured)) => captured,
        Ok(Err(e)) => return Health::Failed(format!("{action} cannot be run: {e}")),
        Err(e) => return Health::Failed(format!("{action}: {e}")),
    };
    let reason = ocf::exit_reason(&captured.stderr)
        .or_else(|| ocf::exit_reason(&captured.stdout))
        .map(|r| format!(": {r}"))
        .unwrap_or_default();
    match (&resource.kind, captured.outcome) {
        (_, ScriptOutcome::TimedOut) => {
            Health::Failed(format!("{action} timed out after {:?}", resource.monitor_timeout))
        }
        (_, ScriptOutcome::Signalled(sig)) => {
            Health::Failed(format!("{action} killed by signal {sig}"))
        }
        (AgentKind::Ocf { .. }, ScriptOutcome::Exited(code)) => match OcfExit::from_code(code) {
            OcfExit::Success => Health::Running,
            OcfExit::NotRunning => Health::NotRunning(format!("{}{reason}", OcfExit::NotRunning)),
            other => Health::Failed(format!("{other}{reason}")),
        },
        (AgentKind::Lsb { .. }, ScriptOutcome::Exited(code)) => match LsbStatus::from_code(code) {
            LsbStatus::Running => Health::Running,
            LsbStatus::NotRunning => Health::NotRunning(LsbStatus::NotRunning.to_string()),
            other => Health::Failed(other.to_string()),
        },
    }
}

/// The configuration checks' view of this node, agents included: `clbuildapp` reads each
/// OCF agent's meta-data and runs its `validate-all`.
pub struct AgentHost<'p> {
    /// The node's layout.
    pub paths: &'p Paths,
}

impl Host for AgentHost<'_> {
    fn file_kind(&self, path: &Path) -> FileKind {
        RootedHost { paths: self.paths }.file_kind(path)
    }

    fn untrusted(&self, path: &Path, secret: bool) -> Option<String> {
        RootedHost { paths: self.paths }.untrusted(path, secret)
    }

    fn ocf_agent(&self, provider: &str, agent: &str) -> AgentLookup {
        let root = ocf_root(self.paths);
        let path = ocf::agent_path(&root, provider, agent);
        let kind = RootedHost { paths: &Paths::new("/") }.file_kind(&path);
        let problem = match kind {
            FileKind::Executable => None,
            FileKind::NotExecutable => Some(format!("is not executable: {}", path.display())),
            FileKind::Directory => Some(format!("is a directory: {}", path.display())),
            FileKind::Missing => {
                let dir = root.join("resource.d").join(provider);
                let known = list(&dir);
                let known: Vec<&str> = known.iter().map(String::as_str).collect();
                let hint = if known.is_empty() {
                    format!(
                        "; there is no provider `{provider}` under {} (is the resource-agents package installed?)",
                        root.join("resource.d").display()
                    )
                } else {
                    cl_config::xml::suggest(agent, &known)
                };
                Some(format!("does not exist: {} is missing{hint}", path.display()))
            }
        };
        if let Some(problem) = problem {
            return AgentLookup::Missing(problem);
        }
        match ocf::metadata(&path, &root, META_DATA_TIMEOUT).and_then(|xml| AgentMeta::parse(&xml))
        {
            Ok(meta) => AgentLookup::Found(meta),
            Err(reason) => AgentLookup::Missing(format!("cannot describe itself: {reason}")),
        }
    }

    fn validate_resource(&self, resource: &Resource) -> Result<(), String> {
        let node = cl_paths::local_node_name().unwrap_or_default();
        let timeout = resource.start_timeout;
        let env = env(self.paths, &node, resource, "validate-all", timeout, Duration::ZERO, &[]);
        let program = program(self.paths, &resource.kind);
        let captured = ocf::run_captured(&program, &["validate-all"], &env, timeout)
            .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
        match ActionOutcome::of(captured.outcome) {
            ActionOutcome::Exit(OcfExit::Success) => Ok(()),
            // An agent without the action says so: nothing to check.
            ActionOutcome::Exit(OcfExit::ErrUnimplemented) => Ok(()),
            other => {
                let reason = ocf::exit_reason(&captured.stderr)
                    .or_else(|| ocf::exit_reason(&captured.stdout))
                    .or_else(|| last_line(&captured.stderr))
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default();
                Err(format!("{other}{reason}"))
            }
        }
    }
}

/// The file names in `dir`, sorted.
fn list(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The last non-empty line of an agent's output (its log lines carry a date; keep the text).
fn last_line(output: &str) -> Option<String> {
    output.lines().rev().map(str::trim).find(|l| !l.is_empty()).map(str::to_string)
}
