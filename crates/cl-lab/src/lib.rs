//! The linuxha lab: N cluster nodes and an `ext` host in network namespaces, wired through a
//! private switch, with fault injection (ARCHITECTURE.md §7).
//!
//! Layout of a lab called `<lab>`:
//! - namespace `<lab>-sw` holds one bridge per network (`br0` public, `br1` private) and the nft
//!   `bridge` table `linuxha_lab` that implements the network faults, so nothing is ever added
//!   to the host's own network namespace;
//! - namespaces `<lab>-node1` … `<lab>-nodeN`: `eth0` = 10.10.0.(10+i)/24, `eth1` =
//!   10.20.0.(10+i)/24; `<lab>-ext`: `eth0` = 10.10.0.1/24 (clients and the known connection);
//! - per host a directory `/tmp/linuxha-lab-<lab>/<host>/` (the node's `LINUXHA_ROOT`), a cgroup
//!   v2 `linuxha-lab-<lab>-<host>` that [`Lab::freeze`] and [`Lab::kill`] act on, and a holder
//!   process (`sleep infinity`, in cgroup `linuxha-lab-<lab>-<host>-holder`) whose private mount
//!   namespace is the host's, so mounts made on a node persist and stay off the host;
//! - a state file `/run/linuxha-lab/<lab>.json` so that `linuxha lab …` commands can find the lab
//!   again and labs left by killed test processes can be reaped.
//!
//! This is a test harness, not daemon code: it shells out to `ip`, `nft`, `nsenter`, `unshare`
//! and `umount` instead of speaking netlink, because those tools are the reference for what
//! the commands mean and their error messages are what an engineer needs when a lab fails.
//! Everything needs root.

mod build;
mod cleanup;
pub mod cli;
mod faults;
pub mod fence;
mod nft;
mod private;
mod state;
mod sys;
pub mod vm;

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

pub use faults::{Direction, Fault};
pub use state::{HostInfo, LabInfo, Owner};

use build::holder_is_inside;
use state::{read_state, LabState};

/// Directory of the lab state files, one `<lab>.json` per lab.
pub const STATE_DIR: &str = "/run/linuxha-lab";

/// How long to wait for the kernel to settle (holder start, freezing, processes dying).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(15);

/// Most cluster nodes a lab has: their addresses, 10.10.0.11 to 10.10.0.26, stay clear of the
/// application VIPs the tests and examples use (10.10.0.100 and up).
pub const MAX_NODES: usize = 16;

/// Errors a caller may want to tell apart from plain failures.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The machine cannot run labs (not root, a tool or cgroup v2 missing).
    #[error("lab not supported here: {0}")]
    Unsupported(String),
    /// The host name is neither `ext` nor one of the lab's nodes.
    #[error("lab {lab} has no host {host:?} (hosts: {known})")]
    UnknownHost {
        /// The lab's name.
        lab: String,
        /// The name that was asked for.
        host: String,
        /// The valid names, comma-separated.
        known: String,
    },
    /// The network index does not exist on that host.
    #[error("host {host} has no network {net} (it has {count})")]
    UnknownNetwork {
        /// The host asked for.
        host: String,
        /// The network index asked for.
        net: usize,
        /// How many networks that host has.
        count: usize,
    },
    /// No state file for that lab name.
    #[error("no lab named {0:?} (no state file in {STATE_DIR})")]
    NoSuchLab(String),
    /// A lab of that name already exists.
    #[error("a lab named {0:?} already exists")]
    Exists(String),
    /// A lab name outside the safe alphabet.
    #[error("bad lab name {0:?}: use 1-32 of [a-z0-9_-], starting with a letter or digit")]
    BadName(String),
    /// Teardown finished but some steps failed; everything else was still attempted.
    #[error("cleanup of lab {lab} incomplete:\n  {}", .errors.join("\n  "))]
    Cleanup {
        /// The lab's name.
        lab: String,
        /// One message per failed step.
        errors: Vec<String>,
    },
}

/// What lab to build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabSpec {
    /// Number of cluster nodes (1..=[`MAX_NODES`]).
    pub nodes: usize,
    /// Number of networks: 1 (public only) or 2 (public and private).
    pub networks: usize,
    /// Lab name; `None` picks `lh` + 6 random hex digits.
    pub name: Option<String>,
}

impl Default for LabSpec {
    fn default() -> Self {
        Self { nodes: 2, networks: 2, name: None }
    }
}

/// A running lab. Dropping a lab made by [`Lab::up`] removes it (also during a panic), unless it
/// was [`detach`](Lab::detach)ed; a lab from [`Lab::load`] is left running on drop.
#[derive(Debug)]
pub struct Lab {
    state: LabState,
    /// Our holder children, reaped at teardown so their pids are really gone.
    holders: Vec<Child>,
    cleanup_on_drop: bool,
    torn_down: bool,
}

/// Checks that this machine can run a lab: root, the tools on PATH and a cgroup v2 hierarchy.
/// Tests call it to skip with a message instead of failing.
pub fn check_supported() -> Result<(), LabError> {
    if !sys::is_root() {
        return Err(LabError::Unsupported("must run as root".into()));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for tool in ["ip", "nft", "nsenter", "unshare", "umount", "sleep"] {
        if !std::env::split_paths(&path).any(|d| d.join(tool).is_file()) {
            return Err(LabError::Unsupported(format!("{tool} not found on PATH")));
        }
    }
    sys::cgroup_base().map_err(|e| LabError::Unsupported(e.to_string()))?;
    Ok(())
}

/// Path of the state file of lab `name`.
pub fn state_file(name: &str) -> PathBuf {
    Path::new(STATE_DIR).join(format!("{name}.json"))
}

/// Directory holding the host roots of lab `name`.
pub fn lab_dir(name: &str) -> PathBuf {
    PathBuf::from(format!("/tmp/linuxha-lab-{name}"))
}

impl Lab {
    /// Whether the nodes are QEMU guests ([`vm::VmLab`]) rather than namespaces.
    pub fn is_vm(&self) -> bool {
        self.state.vm_nodes
    }

    /// Fails for a VM node: namespace operations (exec, freeze, kill) do not reach a guest.
    fn not_vm_node(&self, host: &str) -> Result<()> {
        if self.state.vm_nodes && self.host(host)?.is_node {
            bail!(
                "{host} is a VM node of lab {}: use vm::VmLab (or `linuxha lab exec/power`)",
                self.state.name
            );
        }
        Ok(())
    }

    /// The lab's name.
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// Node names, `node1` … `nodeN`.
    pub fn nodes(&self) -> Vec<String> {
        self.state.hosts.iter().filter(|h| h.is_node).map(|h| h.name.clone()).collect()
    }

    /// Number of networks (1 or 2).
    pub fn networks(&self) -> usize {
        self.state.networks
    }

    /// All hosts: the nodes, then `ext`.
    pub fn hosts(&self) -> &[HostInfo] {
        &self.state.hosts
    }

    /// One host by name (`node1`, `ext`).
    pub fn host(&self, host: &str) -> Result<&HostInfo, LabError> {
        self.state.hosts.iter().find(|h| h.name == host).ok_or_else(|| LabError::UnknownHost {
            lab: self.state.name.clone(),
            host: host.into(),
            known: self.state.hosts.iter().map(|h| h.name.as_str()).collect::<Vec<_>>().join(", "),
        })
    }

    /// Address of `host` on network `net`.
    pub fn addr(&self, host: &str, net: usize) -> Result<Ipv4Addr, LabError> {
        let h = self.host(host)?;
        h.addrs.get(net).copied().ok_or_else(|| LabError::UnknownNetwork {
            host: host.into(),
            net,
            count: h.addrs.len(),
        })
    }

    /// Root directory of `host` (a node's `LINUXHA_ROOT`).
    pub fn root(&self, host: &str) -> Result<&Path, LabError> {
        Ok(&self.host(host)?.root)
    }

    /// Network namespace name of `host`.
    pub fn netns(&self, host: &str) -> Result<&str, LabError> {
        Ok(&self.host(host)?.netns)
    }

    /// Name of the switch namespace (bridges and the nft fault table).
    pub fn switch_netns(&self) -> &str {
        &self.state.switch_netns
    }

    /// The cgroup directory of `host`'s processes.
    pub fn cgroup(&self, host: &str) -> Result<&Path, LabError> {
        Ok(&self.host(host)?.cgroup)
    }

    /// `host`'s cgroup as reachable from this process's mount namespace. Inside a lab node
    /// (e.g. a fence agent run by a node's cldaemon) cgroup v2 is mounted at /sys/fs/cgroup,
    /// while the lab may have recorded /sys/fs/cgroup/unified/… (hybrid hosts): the cgroup is
    /// then found by its name under this namespace's cgroup2 mount.
    pub fn cgroup_here(&self, host: &str) -> Result<PathBuf> {
        let recorded = &self.host(host)?.cgroup;
        if recorded.join("cgroup.events").exists() {
            return Ok(recorded.clone());
        }
        let name = recorded
            .file_name()
            .ok_or_else(|| anyhow!("cgroup path {} has no name", recorded.display()))?;
        for mount in sys::cgroup2_mounts() {
            let candidate = mount.join(name);
            if candidate.join("cgroup.events").exists() {
                return Ok(candidate);
            }
        }
        bail!("cgroup {} of {host} is not reachable from here", recorded.display())
    }

    /// Re-reads the state file, for a lab another process (a fence agent, `linuxha lab …`)
    /// may have changed since; the holders this value owns are kept.
    pub fn refresh(&mut self) -> Result<()> {
        self.state = read_state(&state_file(&self.state.name))?;
        Ok(())
    }

    /// Pid of `host`'s holder process (its mount namespace is the host's).
    pub fn holder_pid(&self, host: &str) -> Result<u32, LabError> {
        Ok(self.host(host)?.holder_pid)
    }

    /// The directory holding all host roots.
    pub fn dir(&self) -> &Path {
        &self.state.dir
    }

    /// The active bridge faults.
    pub fn faults(&self) -> &[Fault] {
        &self.state.faults
    }

    /// Pids currently in `host`'s cgroup (what [`Lab::kill`] would kill).
    pub fn pids(&self, host: &str) -> Result<Vec<u32>> {
        sys::cg_pids(&self.cgroup_here(host)?)
    }

    /// Whether `host`'s cgroup is frozen now, as the kernel reports it.
    pub fn is_frozen(&self, host: &str) -> Result<bool> {
        let cg = &self.cgroup_here(host)?;
        sys::cg_event(cg, "frozen")
            .ok_or_else(|| anyhow!("cannot read {}/cgroup.events", cg.display()))
    }

    /// A command that runs `argv` inside `host`: its network namespace, its holder's mount
    /// namespace and its cgroup, in the host's root directory, with `LINUXHA_ROOT`/`LINUXHA_NODE`
    /// set on nodes. The child joins the cgroup before it execs, so once `spawn()` has returned
    /// the process (and anything it forks) is reached by [`Lab::kill`] and [`Lab::freeze`]; the
    /// pid of the spawned child is the program's own pid.
    ///
    /// Fails on a frozen host: the child would freeze before exec and `spawn()` would block.
    pub fn exec<S: AsRef<OsStr>>(&self, host: &str, argv: &[S]) -> Result<Command> {
        self.not_vm_node(host)?;
        let h = self.host(host)?;
        let Some((program, args)) = argv.split_first() else {
            bail!("exec on {host}: empty command")
        };
        // A recycled holder pid would put the command into the host's mount namespace.
        holder_is_inside(h.holder_pid, &sys::netns_path(&h.netns))
            .with_context(|| format!("holder of {host} in lab {}", self.state.name))?;
        if sys::cg_event(&h.cgroup, "frozen") == Some(true) {
            bail!("exec on {host}: host is frozen (thaw it first)");
        }
        let mut cmd = Command::new("nsenter");
        // nsenter only forks when entering a pid namespace, so it execs `program` in place.
        cmd.arg(format!("--target={}", h.holder_pid))
            .arg("--mount")
            .arg(format!("--net={}", sys::netns_path(&h.netns).display()))
            // Entering a mount namespace resets the cwd to "/", so set it explicitly.
            .arg(format!("--wd={}", h.root.display()))
            .arg("--")
            .arg(program)
            .args(args);
        if h.is_node {
            cmd.env("LINUXHA_ROOT", &h.root).env("LINUXHA_NODE", &h.name);
        }
        sys::join_cgroup_before_exec(&mut cmd, &h.cgroup)?;
        Ok(cmd)
    }

    /// Runs `argv` inside `host` (see [`Lab::exec`]) with stdin closed, and collects its output.
    /// A non-zero exit is not an error here: check `status`.
    pub fn run<S: AsRef<OsStr>>(&self, host: &str, argv: &[S]) -> Result<Output> {
        let mut cmd = self.exec(host, argv)?;
        cmd.stdin(Stdio::null());
        cmd.output().with_context(|| {
            format!("running {:?} on {host}", argv.iter().map(|a| a.as_ref()).collect::<Vec<_>>())
        })
    }
}
