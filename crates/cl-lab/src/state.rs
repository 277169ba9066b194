//! The lab state file: what another process needs to find, change and remove a lab.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::{state_file, sys, Fault, Lab, LabError, STATE_DIR};

/// Version of the state file format, bumped on incompatible changes.
pub(crate) const STATE_VERSION: u32 = 1;

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
pub(crate) struct LabState {
    pub(crate) version: u32,
    pub(crate) name: String,
    pub(crate) nodes: usize,
    pub(crate) networks: usize,
    pub(crate) switch_netns: String,
    pub(crate) dir: PathBuf,
    pub(crate) hosts: Vec<HostInfo>,
    pub(crate) faults: Vec<Fault>,
    pub(crate) links_down: BTreeSet<(String, usize)>,
    pub(crate) frozen: BTreeSet<String>,
    pub(crate) owner: Owner,
    /// The nodes are QEMU guests on taps (see [`vm`]), not namespaces.
    #[serde(default)]
    pub(crate) vm_nodes: bool,
}

/// Lab names become parts of paths and namespace names, so keep them to a safe alphabet.
pub(crate) fn validate_name(name: &str) -> Result<()> {
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

/// Reads and parses one state file.
pub(crate) fn read_state(path: &Path) -> Result<LabState> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let state: LabState =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    if state.version != STATE_VERSION {
        bail!("{}: state version {} (expected {STATE_VERSION})", path.display(), state.version);
    }
    Ok(state)
}

/// All parseable lab states in [`STATE_DIR`], sorted by name.
pub(crate) fn all_states() -> Vec<LabState> {
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

/// Writes a state file atomically (temp file + rename), so readers never see half of one.
/// With `create_new`, fails if the lab already exists: that is how a name is claimed.
pub(crate) fn write_state(state: &LabState, create_new: bool) -> Result<()> {
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

    /// Persists the state so other processes (`linuxha lab …`) see the current faults.
    pub(crate) fn save(&self) -> Result<()> {
        write_state(&self.state, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Direction;

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
