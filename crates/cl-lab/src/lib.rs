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

pub mod cli;
pub mod fence;
mod nft;
mod private;
mod sys;
pub mod vm;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Directory of the lab state files, one `<lab>.json` per lab.
pub const STATE_DIR: &str = "/run/linuxha-lab";

/// How long to wait for the kernel to settle (holder start, freezing, processes dying).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(15);

/// Most cluster nodes a lab has: their addresses, 10.10.0.11 to 10.10.0.26, stay clear of the
/// application VIPs the tests and examples use (10.10.0.100 and up).
pub const MAX_NODES: usize = 16;

/// Version of the state file format, bumped on incompatible changes.
const STATE_VERSION: u32 = 1;

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

/// Direction of a one-way cut, seen from the node.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Drop IP traffic sent by the node; it still receives.
    FromNode,
    /// Drop IP traffic sent to the node; it still sends.
    ToNode,
}

/// One network fault at the switch, kept in the lab state and rendered into the nft table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Every frame to and from the host's port is dropped; the carrier stays up.
    Cut {
        /// Host name (`node1`, `ext`).
        host: String,
        /// Network index.
        net: usize,
    },
    /// IP (v4 and v6) frames in one direction are dropped; ARP still passes.
    OneWay {
        /// Host name.
        host: String,
        /// Network index.
        net: usize,
        /// Which direction is dropped.
        direction: Direction,
    },
    /// Every frame between two hosts' ports is dropped, both ways; both still reach the rest
    /// of the network (a partition between the nodes that leaves each of them connected).
    Between {
        /// One host (the fault belongs to it: healing it heals this).
        host: String,
        /// The other host.
        other: String,
        /// Network index.
        net: usize,
    },
    /// Each frame through the host's port is dropped with this probability, both directions.
    Loss {
        /// Host name.
        host: String,
        /// Network index.
        net: usize,
        /// Drop probability in percent (1..=100).
        percent: u8,
    },
}

impl Fault {
    /// The host this fault applies to.
    pub fn host(&self) -> &str {
        match self {
            Fault::Cut { host, .. }
            | Fault::OneWay { host, .. }
            | Fault::Between { host, .. }
            | Fault::Loss { host, .. } => host,
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Cut { host, net } => write!(f, "cut {host} net{net}"),
            Fault::OneWay { host, net, direction: Direction::FromNode } => {
                write!(f, "drop IP from {host} net{net}")
            }
            Fault::OneWay { host, net, direction: Direction::ToNode } => {
                write!(f, "drop IP to {host} net{net}")
            }
            Fault::Loss { host, net, percent } => write!(f, "loss {percent}% {host} net{net}"),
            Fault::Between { host, other, net } => write!(f, "cut {host} from {other} net{net}"),
        }
    }
}

/// Who keeps a lab alive, deciding whether another process may reap it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Owner {
    /// Owned by a running process (a test); reaped once that process is gone.
    Process {
        /// The owner's pid.
        pid: u32,
        /// The owner's start time in clock ticks, so a reused pid is not mistaken for it.
        start_time: u64,
    },
    /// Made by `linuxha lab up`: lives until `linuxha lab down`.
    Persistent,
}

impl Owner {
    /// Whether the owning process still runs (always true for a persistent lab).
    pub fn is_alive(&self) -> bool {
        match self {
            Owner::Persistent => true,
            Owner::Process { pid, start_time } => {
                sys::pid_alive(*pid) && sys::pid_start_time(*pid) == Some(*start_time)
            }
        }
    }
}

/// One host of the lab (a node or `ext`) and where its pieces are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInfo {
    /// `node1`, `node2`, … or `ext`.
    pub name: String,
    /// Whether this is a cluster node (gets `LINUXHA_ROOT`/`LINUXHA_NODE`).
    pub is_node: bool,
    /// Network namespace name.
    pub netns: String,
    /// Address on each network, indexed by network (`eth<index>`).
    pub addrs: Vec<Ipv4Addr>,
    /// Root directory (`LINUXHA_ROOT` for nodes, a scratch directory for `ext`).
    pub root: PathBuf,
    /// The cgroup v2 directory for the host's processes.
    pub cgroup: PathBuf,
    /// The cgroup of the holder, apart so that killing the node keeps its mount namespace.
    pub holder_cgroup: PathBuf,
    /// Pid of the holder process whose mount namespace is the host's (0 until started).
    pub holder_pid: u32,
}

/// Summary of a lab found in [`STATE_DIR`], for listings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabInfo {
    /// Lab name.
    pub name: String,
    /// Number of nodes.
    pub nodes: usize,
    /// Number of networks.
    pub networks: usize,
    /// Who owns it.
    pub owner: Owner,
    /// Whether the owner is gone (the next `Lab::up` will reap it).
    pub stale: bool,
    /// The active bridge faults.
    pub faults: Vec<Fault>,
    /// Links set down, as (host, network).
    pub links_down: Vec<(String, usize)>,
    /// Frozen hosts.
    pub frozen: Vec<String>,
}

/// Everything needed to find, change and remove a lab, also from another process.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct LabState {
    version: u32,
    name: String,
    nodes: usize,
    networks: usize,
    switch_netns: String,
    dir: PathBuf,
    hosts: Vec<HostInfo>,
    faults: Vec<Fault>,
    links_down: BTreeSet<(String, usize)>,
    frozen: BTreeSet<String>,
    owner: Owner,
    /// The nodes are QEMU guests on taps (see [`vm`]), not namespaces.
    #[serde(default)]
    vm_nodes: bool,
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

/// Lab names become parts of paths and namespace names, so keep them to a safe alphabet.
fn validate_name(name: &str) -> Result<()> {
    let ok_start =
        name.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !ok_start || !ok_chars || name.len() > 32 {
        return Err(LabError::BadName(name.into()).into());
    }
    Ok(())
}

/// Whether `suffix` is a host part of a lab resource name (`ext`, `node<digits>`).
fn is_host_suffix(suffix: &str) -> bool {
    suffix == "ext"
        || suffix
            .strip_prefix("node")
            .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

/// The lab's namespaces that exist now: from the state, plus any `ip netns list` entry whose
/// name is exactly `<lab>-sw|ext|node<N>` (exact, so lab `a` never matches lab `a-b`).
fn lab_namespaces(name: &str, state: Option<&LabState>) -> Vec<String> {
    let mut found: BTreeSet<String> = BTreeSet::new();
    let existing = sys::netns_list().unwrap_or_default();
    for ns in &existing {
        if let Some(suffix) = ns.strip_prefix(name).and_then(|s| s.strip_prefix('-')) {
            if suffix == "sw" || is_host_suffix(suffix) {
                found.insert(ns.clone());
            }
        }
    }
    if let Some(st) = state {
        for ns in std::iter::once(&st.switch_netns).chain(st.hosts.iter().map(|h| &h.netns)) {
            if existing.contains(ns) {
                found.insert(ns.clone());
            }
        }
    }
    found.into_iter().collect()
}

/// The lab's cgroups that exist now, found the same way as [`lab_namespaces`].
fn lab_cgroups(name: &str, state: Option<&LabState>) -> Vec<PathBuf> {
    let mut found: BTreeSet<PathBuf> = BTreeSet::new();
    let prefix = format!("linuxha-lab-{name}-");
    if let Ok(base) = sys::cgroup_base() {
        if let Ok(entries) = fs::read_dir(&base) {
            for entry in entries.flatten() {
                let file_name = entry.file_name();
                let Some(fname) = file_name.to_str() else { continue };
                let Some(suffix) = fname.strip_prefix(&prefix) else { continue };
                let host = suffix.strip_suffix("-holder").unwrap_or(suffix);
                if is_host_suffix(host) {
                    found.insert(entry.path());
                }
            }
        }
    }
    if let Some(st) = state {
        for h in &st.hosts {
            for cg in [&h.cgroup, &h.holder_cgroup] {
                if cg.exists() {
                    found.insert(cg.clone());
                }
            }
        }
    }
    found.into_iter().collect()
}

/// Removes every trace of lab `name`, best effort: each step runs even if an earlier one
/// failed, and the failures are returned. Only processes inside the lab's own cgroups and
/// namespaces (and our own holder children) are killed, never a pid merely read from a file.
fn teardown(name: &str, state: Option<&LabState>, holders: &mut Vec<Child>) -> Vec<String> {
    // VM nodes first: their qemu processes hold the taps in the switch namespace.
    let mut errors =
        vm::teardown_guests(&state.map(|s| s.dir.clone()).unwrap_or_else(|| lab_dir(name)));
    let cgroups = lab_cgroups(name, state);
    let namespaces = lab_namespaces(name, state);

    // Thaw first: a frozen process cannot run its way out of anything, and v1-style stuck
    // freezes would keep the cgroup populated.
    for cg in &cgroups {
        let _ = sys::cg_write(cg, "cgroup.freeze", "0");
        if sys::cg_write(cg, "cgroup.kill", "1").is_err() {
            // Kernels before 5.14 have no cgroup.kill: kill the members one by one.
            for pid in sys::cg_pids(cg).unwrap_or_default() {
                if let Err(e) = sys::kill_pid(pid) {
                    errors.push(format!("{e:#}"));
                }
            }
        }
    }
    // Processes that entered a lab namespace some other way (`ip netns exec`) are ours too.
    for ns in &namespaces {
        for pid in sys::netns_pids(ns).unwrap_or_default() {
            if let Err(e) = sys::kill_pid(pid) {
                errors.push(format!("{e:#}"));
            }
        }
    }
    for child in holders.iter_mut() {
        let _ = child.kill();
    }
    for mut child in holders.drain(..) {
        let pid = child.id();
        if !sys::wait_until(SETTLE_TIMEOUT, || !matches!(child.try_wait(), Ok(None))) {
            errors.push(format!("holder {pid} did not exit"));
        }
    }
    for cg in &cgroups {
        let empty =
            sys::wait_until(SETTLE_TIMEOUT, || sys::cg_event(cg, "populated") != Some(true));
        if !empty {
            errors.push(format!("{} still has processes", cg.display()));
        }
        // rmdir can race with the last exit being accounted; retry briefly.
        let mut last = None;
        // Daemons under test make cgroups of their own inside a node's (one per application):
        // remove those first, deepest first.
        let removed = sys::wait_until(Duration::from_secs(5), || match remove_cgroup_tree(cg) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => {
                last = Some(e);
                false
            }
        });
        if !removed {
            errors.push(format!(
                "rmdir {}: {}",
                cg.display(),
                last.map(|e| e.to_string()).unwrap_or_default()
            ));
        }
    }
    let switch = format!("{name}-sw");
    if namespaces.contains(&switch) {
        let path = sys::netns_path(&switch);
        let net = format!("--net={}", path.display());
        if let Err(e) = sys::run_with_stdin(
            "nsenter",
            [net.as_str(), "nft", "-f", "-"],
            Some(&nft::render_delete()),
        ) {
            errors.push(format!("{e:#}"));
        }
    }
    for ns in &namespaces {
        if let Err(e) = sys::ip(&["netns", "del", ns]) {
            errors.push(format!("{e:#}"));
        }
    }
    let dir = state.map(|s| s.dir.clone()).unwrap_or_else(|| lab_dir(name));
    for mount in sys::mounts_under(&dir) {
        if let Err(e) = sys::run("umount", [OsStr::new("-l"), mount.as_os_str()]) {
            errors.push(format!("{e:#}"));
        }
    }
    if dir.exists() {
        let left = sys::mounts_under(&dir);
        if left.is_empty() {
            if let Err(e) = fs::remove_dir_all(&dir) {
                errors.push(format!("removing {}: {e}", dir.display()));
            }
        } else {
            // Never recurse into a mounted filesystem: that would delete data outside the lab.
            errors.push(format!("not removing {}: still mounted: {left:?}", dir.display()));
        }
    }
    match fs::remove_file(state_file(name)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => errors.push(format!("removing {}: {e}", state_file(name).display())),
    }
    errors
}

/// Reads and parses one state file.
fn read_state(path: &Path) -> Result<LabState> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let state: LabState =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    if state.version != STATE_VERSION {
        bail!("{}: state version {} (expected {STATE_VERSION})", path.display(), state.version);
    }
    Ok(state)
}

/// All parseable lab states in [`STATE_DIR`], sorted by name.
fn all_states() -> Vec<LabState> {
    let mut states: Vec<LabState> = fs::read_dir(STATE_DIR)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension() == Some(OsStr::new("json")))
                .filter_map(|p| read_state(&p).ok())
                .collect()
        })
        .unwrap_or_default();
    states.sort_by(|a, b| a.name.cmp(&b.name));
    states
}

/// Removes labs whose owning process has died (a test killed with SIGKILL), best effort.
fn reap_stale() {
    for st in all_states() {
        if !st.owner.is_alive() {
            let errors = teardown(&st.name, Some(&st), &mut Vec::new());
            if !errors.is_empty() {
                eprintln!("cl-lab: reaping stale lab {}: {}", st.name, errors.join("; "));
            }
        }
    }
}

/// Writes a state file atomically (temp file + rename), so readers never see half of one.
/// With `create_new`, fails if the lab already exists: that is how a name is claimed.
fn write_state(state: &LabState, create_new: bool) -> Result<()> {
    fs::create_dir_all(STATE_DIR).with_context(|| format!("creating {STATE_DIR}"))?;
    let path = state_file(&state.name);
    let json = serde_json::to_string_pretty(state).context("serialising lab state")?;
    if create_new {
        let mut f =
            fs::OpenOptions::new().write(true).create_new(true).open(&path).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    anyhow!(LabError::Exists(state.name.clone()))
                } else {
                    anyhow!(e).context(format!("creating {}", path.display()))
                }
            })?;
        f.write_all(json.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
        return Ok(());
    }
    let tmp = path.with_extension(format!("json.tmp{}", std::process::id()));
    fs::write(&tmp, json.as_bytes()).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, &path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

impl Lab {
    /// Builds a lab: namespaces, switch, addresses, host roots, cgroups and holders. Labs left
    /// behind by dead test processes are reaped first. On error everything made so far is removed.
    pub fn up(spec: LabSpec) -> Result<Lab> {
        Self::up_with(spec, false)
    }

    /// [`Lab::up`], with the nodes as taps for QEMU guests when `vm_nodes` (see [`vm::VmLab`]).
    pub(crate) fn up_with(spec: LabSpec, vm_nodes: bool) -> Result<Lab> {
        check_supported()?;
        if !(1..=MAX_NODES).contains(&spec.nodes) {
            bail!("a lab has 1 to {MAX_NODES} nodes, not {}", spec.nodes);
        }
        if !(1..=2).contains(&spec.networks) {
            bail!("networks must be 1 or 2, not {}", spec.networks);
        }
        reap_stale();
        let cg_base = sys::cgroup_base()?;
        let existing = sys::netns_list()?;
        let taken = |n: &str| {
            state_file(n).exists()
                || lab_dir(n).exists()
                || existing.iter().any(|ns| ns.starts_with(&format!("{n}-")))
        };
        let name = match spec.name {
            Some(n) => {
                validate_name(&n)?;
                if taken(&n) {
                    return Err(LabError::Exists(n).into());
                }
                n
            }
            None => loop {
                let n = format!("lh{}", sys::random_hex6()?);
                if !taken(&n) {
                    break n;
                }
            },
        };
        let dir = lab_dir(&name);
        let mut hosts = Vec::new();
        for i in 1..=spec.nodes {
            let host = format!("node{i}");
            let last = u8::try_from(10 + i).context("too many nodes")?;
            let addrs = [Ipv4Addr::new(10, 10, 0, last), Ipv4Addr::new(10, 20, 0, last)];
            hosts.push(HostInfo {
                netns: format!("{name}-{host}"),
                addrs: addrs[..spec.networks].to_vec(),
                root: dir.join(&host),
                cgroup: cg_base.join(format!("linuxha-lab-{name}-{host}")),
                holder_cgroup: cg_base.join(format!("linuxha-lab-{name}-{host}-holder")),
                holder_pid: 0,
                is_node: true,
                name: host,
            });
        }
        hosts.push(HostInfo {
            name: "ext".into(),
            is_node: false,
            netns: format!("{name}-ext"),
            addrs: vec![Ipv4Addr::new(10, 10, 0, 1)],
            root: dir.join("ext"),
            cgroup: cg_base.join(format!("linuxha-lab-{name}-ext")),
            holder_cgroup: cg_base.join(format!("linuxha-lab-{name}-ext-holder")),
            holder_pid: 0,
        });
        let me = std::process::id();
        let state = LabState {
            version: STATE_VERSION,
            switch_netns: format!("{name}-sw"),
            name,
            nodes: spec.nodes,
            networks: spec.networks,
            dir,
            hosts,
            faults: Vec::new(),
            links_down: BTreeSet::new(),
            frozen: BTreeSet::new(),
            owner: Owner::Process {
                pid: me,
                start_time: sys::pid_start_time(me).context("reading own start time")?,
            },
            vm_nodes,
        };
        // Claim the name before creating anything, so a SIGKILL from here on leaves a state
        // file to reap by, and so a failed claim never tears down somebody else's lab.
        write_state(&state, true)?;
        let mut lab = Lab { state, holders: Vec::new(), cleanup_on_drop: true, torn_down: false };
        lab.build()?;
        Ok(lab)
    }

    /// The construction steps of [`Lab::up`]; the caller's drop cleans up after an error.
    fn build(&mut self) -> Result<()> {
        let sw = self.state.switch_netns.clone();
        sys::ip(&["netns", "add", &sw])?;
        sys::ip(&["-n", &sw, "link", "set", "lo", "up"])?;
        for net in 0..self.state.networks {
            let br = format!("br{net}");
            sys::ip(&["-n", &sw, "link", "add", &br, "type", "bridge"])?;
            sys::ip(&["-n", &sw, "link", "set", &br, "up"])?;
        }
        for h in &self.state.hosts {
            if h.is_node && self.state.vm_nodes {
                // A VM node's switch ports are taps, opened by its qemu (which runs in the
                // switch namespace); the names are those of the veth ports, so faults match.
                for net in 0..h.addrs.len() {
                    let port = nft::port_name(&h.name, net);
                    sys::ip(&["-n", &sw, "tuntap", "add", "dev", &port, "mode", "tap"])?;
                    let br = format!("br{net}");
                    sys::ip(&["-n", &sw, "link", "set", &port, "master", &br, "up"])?;
                }
                fs::create_dir_all(&h.root)
                    .with_context(|| format!("creating {}", h.root.display()))?;
                continue;
            }
            let ns = &h.netns;
            sys::ip(&["netns", "add", ns])?;
            sys::ip(&["-n", ns, "link", "set", "lo", "up"])?;
            for (net, addr) in h.addrs.iter().enumerate() {
                let port = nft::port_name(&h.name, net);
                let eth = format!("eth{net}");
                // Created directly between the two namespaces: the host namespace never sees it.
                sys::ip(&[
                    "link", "add", &port, "netns", &sw, "type", "veth", "peer", "name", &eth,
                    "netns", ns,
                ])?;
                sys::ip(&["-n", &sw, "link", "set", &port, "master", &format!("br{net}"), "up"])?;
                sys::ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", &eth])?;
                sys::ip(&["-n", ns, "link", "set", &eth, "up"])?;
            }
            fs::create_dir_all(&h.root)
                .with_context(|| format!("creating {}", h.root.display()))?;
            if h.is_node {
                for sub in ["etc/cluster", "var/log/cluster", "run/cluster"] {
                    let d = h.root.join(sub);
                    fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
                }
            }
            for cg in [&h.cgroup, &h.holder_cgroup] {
                fs::create_dir(cg).with_context(|| format!("creating cgroup {}", cg.display()))?;
            }
        }
        for i in 0..self.state.hosts.len() {
            if self.state.hosts[i].is_node && self.state.vm_nodes {
                continue;
            }
            let child = self.start_holder(i)?;
            self.holders.push(child);
        }
        self.apply_faults()?;
        Ok(())
    }

    /// Starts host `i`'s holder: `sleep infinity` in the host's netns with its own mount
    /// namespace (slave propagation: host unmounts such as `ip netns del` still reach it, but
    /// its mounts never reach the host), placed in the holder cgroup before it execs.
    fn start_holder(&mut self, i: usize) -> Result<Child> {
        let h = &self.state.hosts[i];
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &h.netns, "unshare", "--mount", "--propagation", "slave"])
            .args(["sleep", "infinity"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Own process group: a Ctrl-C meant for `linuxha lab up` or a test must not hit it.
        cmd.process_group(0);
        sys::join_cgroup_before_exec(&mut cmd, &h.holder_cgroup)?;
        let mut child = cmd.spawn().context("starting holder")?;
        let pid = child.id();
        let netns = sys::netns_path(&h.netns);
        let ready = sys::wait_until(SETTLE_TIMEOUT, || {
            matches!(child.try_wait(), Ok(None))
                && fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim() == "sleep")
                && holder_is_inside(pid, &netns).is_ok()
        });
        if !ready {
            let _ = child.kill();
            let _ = child.wait();
            bail!("holder for {} did not come up inside the namespace", h.name);
        }
        self.state.hosts[i].holder_pid = pid;
        // `ip netns exec` gave the host a fresh /sys without the cgroup filesystem; mount
        // cgroup v2 where a real machine has it, so daemons can place their applications in
        // cgroups (below the host's own, which freeze and kill act on).
        let host = self.state.hosts[i].name.clone();
        let mounted = self
            .run(&host, &["mount", "-t", "cgroup2", "cgroup2", "/sys/fs/cgroup"])
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !mounted {
            let _ = child.kill();
            let _ = child.wait();
            bail!("cannot mount cgroup2 at /sys/fs/cgroup inside {host}");
        }
        Ok(child)
    }

    /// Finds a lab made by another process (e.g. `linuxha lab up`). Dropping it leaves it running.
    pub fn load(name: &str) -> Result<Lab> {
        validate_name(name)?;
        let path = state_file(name);
        if !path.exists() {
            return Err(LabError::NoSuchLab(name.into()).into());
        }
        let state = read_state(&path)?;
        Ok(Lab { state, holders: Vec::new(), cleanup_on_drop: false, torn_down: false })
    }

    /// Labs recorded in [`STATE_DIR`], sorted by name.
    pub fn list() -> Result<Vec<LabInfo>> {
        Ok(all_states()
            .into_iter()
            .map(|st| LabInfo {
                stale: !st.owner.is_alive(),
                name: st.name,
                nodes: st.nodes,
                networks: st.networks,
                owner: st.owner,
                faults: st.faults,
                links_down: st.links_down.into_iter().collect(),
                frozen: st.frozen.into_iter().collect(),
            })
            .collect())
    }

    /// Keeps the lab running after this value is dropped or the process exits (for the CLI):
    /// it becomes persistent and only [`Lab::down`] removes it.
    pub fn detach(&mut self) -> Result<()> {
        self.state.owner = Owner::Persistent;
        self.cleanup_on_drop = false;
        // The holders run on without us; dropping a Child neither kills nor waits.
        self.holders.clear();
        self.save()
    }

    /// Removes the lab and everything it made; every step is attempted, failures are reported
    /// together as [`LabError::Cleanup`]. Safe to call on a partly built or half-removed lab.
    pub fn down(mut self) -> Result<()> {
        self.teardown()
    }

    /// Whether anything of lab `name` is left to remove: its state file, its directory, a
    /// namespace or a cgroup (found by their exact lab names, as [`Lab::down_by_name`] does).
    pub fn exists_by_name(name: &str) -> Result<bool> {
        validate_name(name)?;
        Ok(state_file(name).exists()
            || lab_dir(name).exists()
            || !lab_namespaces(name, None).is_empty()
            || !lab_cgroups(name, None).is_empty())
    }

    /// Removes whatever is left of lab `name` even without a usable state file (for
    /// `linuxha lab down` after a crash), finding resources by their exact lab names.
    pub fn down_by_name(name: &str) -> Result<()> {
        validate_name(name)?;
        let state = read_state(&state_file(name)).ok();
        let errors = teardown(name, state.as_ref(), &mut Vec::new());
        if errors.is_empty() {
            Ok(())
        } else {
            Err(LabError::Cleanup { lab: name.into(), errors }.into())
        }
    }

    /// Shared body of [`Lab::down`] and `Drop`.
    fn teardown(&mut self) -> Result<()> {
        self.torn_down = true;
        let errors = teardown(&self.state.name, Some(&self.state), &mut self.holders);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(LabError::Cleanup { lab: self.state.name.clone(), errors }.into())
        }
    }

    /// Persists the state so other processes (`linuxha lab …`) see the current faults.
    fn save(&self) -> Result<()> {
        write_state(&self.state, false)
    }

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

    /// Networks `net` selects on `host`: the given one (checked) or all of the host's.
    fn nets_of(&self, host: &str, net: Option<usize>) -> Result<Vec<usize>> {
        let h = self.host(host)?;
        match net {
            Some(n) => {
                self.addr(host, n)?;
                Ok(vec![n])
            }
            None => Ok((0..h.addrs.len()).collect()),
        }
    }

    /// Renders all bridge faults into the switch's nft table in one transaction, then saves.
    fn apply_faults(&self) -> Result<()> {
        let path = sys::netns_path(&self.state.switch_netns);
        let net = format!("--net={}", path.display());
        sys::run_with_stdin(
            "nsenter",
            [net.as_str(), "nft", "-f", "-"],
            Some(&nft::render(&self.state.faults)),
        )?;
        self.save()
    }

    /// Adds faults not yet present and applies the result.
    fn add_faults(&mut self, faults: Vec<Fault>) -> Result<()> {
        for f in faults {
            if !self.state.faults.contains(&f) {
                self.state.faults.push(f);
            }
        }
        self.apply_faults()
    }

    /// Silently isolates `host` at the switch on network `net` (all of its networks if `None`):
    /// every frame is dropped while the host still sees carrier, like a dead switch port.
    pub fn cut(&mut self, host: &str, net: Option<usize>) -> Result<()> {
        let nets = self.nets_of(host, net)?;
        self.add_faults(nets.into_iter().map(|net| Fault::Cut { host: host.into(), net }).collect())
    }

    /// Cuts `host` from `other` on network `net` (all of `host`'s if `None`), both ways, while
    /// each still reaches every other host: the symmetric partition of two nodes.
    pub fn partition(&mut self, host: &str, other: &str, net: Option<usize>) -> Result<()> {
        self.host(other)?;
        let nets = self.nets_of(host, net)?;
        self.add_faults(
            nets.into_iter()
                .map(|net| Fault::Between { host: host.into(), other: other.into(), net })
                .collect(),
        )
    }

    /// Drops IP traffic in one direction only on network `net` (all if `None`); ARP still
    /// passes both ways so the other direction keeps working.
    pub fn cut_oneway(
        &mut self,
        host: &str,
        net: Option<usize>,
        direction: Direction,
    ) -> Result<()> {
        let nets = self.nets_of(host, net)?;
        self.add_faults(
            nets.into_iter()
                .map(|net| Fault::OneWay { host: host.into(), net, direction })
                .collect(),
        )
    }

    /// Random loss of `percent`% of frames in each direction on network `net` (all if `None`);
    /// 0 removes the loss, and a new value replaces an old one.
    pub fn loss(&mut self, host: &str, net: Option<usize>, percent: u8) -> Result<()> {
        if percent > 100 {
            bail!("loss percent must be 0..=100, not {percent}");
        }
        let nets = self.nets_of(host, net)?;
        self.state.faults.retain(
            |f| !matches!(f, Fault::Loss { host: h, net: n, .. } if h == host && nets.contains(n)),
        );
        if percent == 0 {
            return self.apply_faults();
        }
        self.add_faults(
            nets.into_iter().map(|net| Fault::Loss { host: host.into(), net, percent }).collect(),
        )
    }

    /// Removes `host`'s network faults: its bridge rules, and links it had set down come back
    /// up. A frozen host stays frozen (see [`Lab::thaw`]): that is a process fault.
    pub fn heal(&mut self, host: &str) -> Result<()> {
        self.host(host)?;
        self.state.faults.retain(|f| f.host() != host);
        let down: Vec<usize> =
            self.state.links_down.iter().filter(|(h, _)| h == host).map(|(_, n)| *n).collect();
        let mut result = self.apply_faults();
        for net in down {
            if let Err(e) = self.link_up(host, net) {
                result = result.and(Err(e));
            }
        }
        result
    }

    /// [`Lab::heal`] for every host.
    pub fn heal_all(&mut self) -> Result<()> {
        self.state.faults.clear();
        let down: Vec<(String, usize)> = self.state.links_down.iter().cloned().collect();
        let mut result = self.apply_faults();
        for (host, net) in down {
            if let Err(e) = self.link_up(&host, net) {
                result = result.and(Err(e));
            }
        }
        result
    }

    /// Takes the switch end of `host`'s `eth<net>` down, like a pulled cable or a dead NIC: the
    /// host sees NO-CARRIER on `eth<net>` (its own interface stays administratively up, so
    /// nothing the node does can "repair" it).
    pub fn link_down(&mut self, host: &str, net: usize) -> Result<()> {
        self.set_link(host, net, false)
    }

    /// Undoes [`Lab::link_down`]: carrier returns, addresses were never removed.
    pub fn link_up(&mut self, host: &str, net: usize) -> Result<()> {
        self.set_link(host, net, true)
    }

    /// Shared body of [`Lab::link_down`] and [`Lab::link_up`].
    fn set_link(&mut self, host: &str, net: usize, up: bool) -> Result<()> {
        self.addr(host, net)?;
        let port = nft::port_name(host, net);
        let sw = self.state.switch_netns.clone();
        sys::ip(&["-n", &sw, "link", "set", &port, if up { "up" } else { "down" }])?;
        if up {
            self.state.links_down.remove(&(host.to_owned(), net));
        } else {
            self.state.links_down.insert((host.to_owned(), net));
        }
        self.save()
    }

    /// Freezes every process in `host`'s cgroup (cgroup v2 freezer) and waits until the kernel
    /// reports it frozen. The kernel still answers ARP and ping for a frozen host.
    pub fn freeze(&mut self, host: &str) -> Result<()> {
        self.set_frozen(host, true)
    }

    /// Undoes [`Lab::freeze`].
    pub fn thaw(&mut self, host: &str) -> Result<()> {
        self.set_frozen(host, false)
    }

    /// Shared body of [`Lab::freeze`] and [`Lab::thaw`].
    fn set_frozen(&mut self, host: &str, frozen: bool) -> Result<()> {
        self.not_vm_node(host)?;
        let cg = self.cgroup_here(host)?;
        sys::cg_write(&cg, "cgroup.freeze", if frozen { "1" } else { "0" })?;
        if !sys::wait_until(SETTLE_TIMEOUT, || sys::cg_event(&cg, "frozen") == Some(frozen)) {
            bail!("{} did not become {}", cg.display(), if frozen { "frozen" } else { "thawed" });
        }
        if frozen {
            self.state.frozen.insert(host.to_owned());
        } else {
            self.state.frozen.remove(host);
        }
        self.save()
    }

    /// SIGKILLs every process of `host` (its cgroup, and anything else in its network namespace)
    /// except the holder, like a crash of everything on the node; its mounts survive, as a real
    /// node's disks would. A frozen host stays frozen for processes started later.
    pub fn kill(&mut self, host: &str) -> Result<()> {
        self.not_vm_node(host)?;
        let mut h = self.host(host)?.clone();
        h.cgroup = self.cgroup_here(host)?;
        let mut errors = Vec::new();
        if let Err(e) = sys::cg_write(&h.cgroup, "cgroup.kill", "1") {
            errors.push(format!("{e:#}"));
            for pid in sys::cg_pids(&h.cgroup).unwrap_or_default() {
                if let Err(e) = sys::kill_pid(pid) {
                    errors.push(format!("{e:#}"));
                }
            }
        }
        for pid in sys::netns_pids(&h.netns).unwrap_or_default() {
            if pid != h.holder_pid {
                if let Err(e) = sys::kill_pid(pid) {
                    errors.push(format!("{e:#}"));
                }
            }
        }
        if !sys::wait_until(SETTLE_TIMEOUT, || sys::cg_event(&h.cgroup, "populated") != Some(true))
        {
            errors.push(format!("{} still has processes", h.cgroup.display()));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            bail!("kill {host}: {}", errors.join("; "))
        }
    }
}

/// Checks that `pid` really is a holder inside the namespace at `netns`: same network
/// namespace, and a mount namespace other than ours (so nothing mounts onto the host).
fn holder_is_inside(pid: u32, netns: &Path) -> Result<()> {
    if pid == 0 || !sys::pid_alive(pid) {
        bail!("holder pid {pid} is not running");
    }
    let proc_ns = PathBuf::from(format!("/proc/{pid}/ns"));
    if sys::ns_id(&proc_ns.join("net"))? != sys::ns_id(netns)? {
        bail!("pid {pid} is not in network namespace {}", netns.display());
    }
    if sys::ns_id(&proc_ns.join("mnt"))? == sys::ns_id(Path::new("/proc/self/ns/mnt"))? {
        bail!("pid {pid} shares our mount namespace");
    }
    Ok(())
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.cleanup_on_drop && !self.torn_down {
            if let Err(e) = self.teardown() {
                eprintln!("cl-lab: {e:#}");
            }
        }
    }
}

/// rmdir a cgroup and every cgroup below it, deepest first (cgroup directories cannot be
/// removed recursively in one call).
fn remove_cgroup_tree(cg: &Path) -> std::io::Result<()> {
    if let Ok(entries) = fs::read_dir(cg) {
        for entry in entries.flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup_tree(&entry.path())?;
            }
        }
    }
    fs::remove_dir(cg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(validate_name("lhab12cd").is_ok());
        assert!(validate_name("demo-1").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("-x").is_err());
        assert!(validate_name("a/b").is_err());
        assert!(validate_name("A").is_err());
        assert!(validate_name(&"a".repeat(33)).is_err());
    }

    #[test]
    fn host_suffixes_are_exact() {
        assert!(is_host_suffix("ext"));
        assert!(is_host_suffix("node12"));
        assert!(!is_host_suffix("node"));
        assert!(!is_host_suffix("node1-sw"));
        assert!(!is_host_suffix("extra"));
    }

    #[test]
    fn state_round_trips() -> Result<()> {
        let st = LabState {
            version: STATE_VERSION,
            name: "t".into(),
            nodes: 1,
            networks: 1,
            switch_netns: "t-sw".into(),
            dir: "/tmp/linuxha-lab-t".into(),
            hosts: vec![],
            faults: vec![Fault::OneWay {
                host: "node1".into(),
                net: 0,
                direction: Direction::ToNode,
            }],
            links_down: [("node1".to_owned(), 0)].into_iter().collect(),
            frozen: BTreeSet::new(),
            owner: Owner::Persistent,
            vm_nodes: false,
        };
        let json = serde_json::to_string(&st)?;
        assert!(json.contains(r#""direction":"to-node""#));
        let back: LabState = serde_json::from_str(&json)?;
        assert_eq!(back.faults, st.faults);
        assert_eq!(back.links_down, st.links_down);
        assert_eq!(back.owner, Owner::Persistent);
        Ok(())
    }
}
