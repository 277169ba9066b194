//! Building a lab: namespaces, the switch, addresses, host roots, cgroups and holders.

use std::collections::BTreeSet;
use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::cleanup::reap_stale;
use crate::state::{validate_name, write_state, LabState, STATE_VERSION};
use crate::{
    check_supported, lab_dir, nft, state_file, sys, HostInfo, Lab, LabError, LabSpec, Owner,
    MAX_NODES, SETTLE_TIMEOUT,
};

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
}

/// Checks that `pid` really is a holder inside the namespace at `netns`: same network
/// namespace, and a mount namespace other than ours (so nothing mounts onto the host).
pub(crate) fn holder_is_inside(pid: u32, netns: &Path) -> Result<()> {
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
