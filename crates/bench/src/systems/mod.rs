//! The systems under test, each driven through the same [`System`] interface, and the lab
//! helpers they share (who holds the VIP, the service process, detached commands).

pub mod keepalived;
pub mod linuxha;
pub mod pacemaker;

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use anyhow::{bail, Context, Result};
use cl_lab::Lab;

/// The service address every system moves.
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 100);
/// The port of the service behind it.
pub const PORT: u16 = 80;
/// The two nodes.
pub const NODES: [&str; 2] = ["node1", "node2"];
/// The service monitor interval, the same for every system (scenario c), in seconds.
pub const MONITOR_INTERVAL_S: u32 = 1;

/// Where the programs are.
#[derive(Clone, Debug)]
pub struct Programs {
    /// This benchmark (it is also the service, the probe and the health check).
    pub bench: PathBuf,
    /// The linuxha multicall binary.
    pub linuxha: PathBuf,
}

/// One cluster manager set up for the benchmark topology.
pub trait System {
    /// The id used on the command line and in the results (`keepalived-fast`).
    fn id(&self) -> &'static str;
    /// What it is, with its timing (`keepalived VRRPv3 advert_int 0.1`).
    fn label(&self) -> String;
    /// Installs, configures and starts it on both nodes with the VIP on node1 (or wherever it
    /// lands first) and the service answering.
    fn start(&mut self, lab: &mut Lab, programs: &Programs) -> Result<()>;
    /// Both nodes are members and the service runs on exactly one of them.
    fn healthy(&self, lab: &Lab, programs: &Programs) -> Result<bool>;
    /// Kills the service process on `node` (scenario c).
    fn kill_service(&mut self, lab: &Lab, node: &str) -> Result<()> {
        kill_service_on(lab, node)
    }
    /// After scenario c was measured: whatever an operator would do for the next round.
    fn after_service_kill(&mut self, _lab: &Lab, _node: &str, _programs: &Programs) -> Result<()> {
        Ok(())
    }
    /// Starts a planned move of the service from `from` to `to` (scenario d); may block until
    /// the system says it is done.
    fn switch(&mut self, lab: &Lab, from: &str, to: &str, programs: &Programs) -> Result<()>;
    /// After a switch was measured (clear a move constraint, normalise priorities).
    fn after_switch(&mut self, _lab: &Lab, _from: &str, _to: &str) -> Result<()> {
        Ok(())
    }
    /// The status command whose latency is measured (clstat, `crm_mon -1`), if there is one.
    fn status_command(&self, _programs: &Programs) -> Option<Vec<String>> {
        None
    }
    /// Whether the system fences a silent node (powers it off), so that after a failover the
    /// former active node must be powered on again, as an administrator would.
    fn fences(&self) -> bool {
        false
    }
    /// After `node` was powered on again (a fresh boot): start what the system runs there.
    fn after_power_on(&mut self, _lab: &Lab, _node: &str, _programs: &Programs) -> Result<()> {
        Ok(())
    }
    /// Short text of the system's state for error messages.
    fn describe(&self, _lab: &Lab, _programs: &Programs) -> String {
        String::new()
    }
}

/// The nodes whose eth0 holds the VIP now.
pub fn vip_holders(lab: &Lab) -> Result<Vec<String>> {
    let mut holders = Vec::new();
    for node in NODES {
        let out = std::process::Command::new("ip")
            .args(["-n", lab.netns(node)?, "-4", "-o", "addr", "show", "dev", "eth0"])
            .output()
            .context("ip addr")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let vip = format!("inet {VIP}/");
        if text.contains(&vip) {
            holders.push(node.to_string());
        }
    }
    Ok(holders)
}

/// The other node.
pub fn other(node: &str) -> &'static str {
    if node == NODES[0] {
        NODES[1]
    } else {
        NODES[0]
    }
}

/// Every pid in `host`'s cgroup and the cgroups below it (cluster managers put their
/// resources in cgroups of their own).
pub fn pids_tree(lab: &Lab, host: &str) -> Result<Vec<u32>> {
    fn walk(dir: &Path, into: &mut Vec<u32>) {
        if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            into.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&entry.path(), into);
                }
            }
        }
    }
    let mut pids = Vec::new();
    walk(lab.cgroup(host)?, &mut pids);
    Ok(pids)
}

/// The command line of `pid` as words.
pub fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|w| !w.is_empty())
                .map(|w| String::from_utf8_lossy(w).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `pid` runs this benchmark's binary (the service, a check, a timer loop): those
/// belong to no cluster manager's footprint.
pub fn is_bench_helper(pid: u32) -> bool {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    exe.is_some() && exe == std::env::current_exe().ok()
}

/// The pids of the service (`bench serve`) on `node`.
pub fn service_pids(lab: &Lab, node: &str) -> Result<Vec<u32>> {
    Ok(pids_tree(lab, node)?
        .into_iter()
        .filter(|pid| is_bench_helper(*pid) && cmdline(*pid).iter().any(|w| w == "serve"))
        .collect())
}

/// SIGKILLs the service on `node` (by the pids found in the node's cgroups).
pub fn kill_service_on(lab: &Lab, node: &str) -> Result<()> {
    let pids = service_pids(lab, node)?;
    if pids.is_empty() {
        bail!("no service process on {node}");
    }
    for pid in pids {
        // SAFETY: kill(2) on a pid read from the node's own cgroup a moment ago.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
    Ok(())
}

/// Starts `argv` on `host` in the background, output appended to `log` (a path outside the
/// lab host, readable after a failure).
pub fn spawn_logged(lab: &Lab, host: &str, argv: &[String], log: &Path) -> Result<Child> {
    let mut cmd = lab.exec(host, argv)?;
    let file = File::options().create(true).append(true).open(log)?;
    cmd.stdin(Stdio::null()).stdout(file.try_clone()?).stderr(file);
    cmd.spawn().with_context(|| format!("starting {argv:?} on {host}"))
}

/// Runs `argv` on `host` and insists on success; its stdout.
pub fn must(lab: &Lab, host: &str, argv: &[String]) -> Result<String> {
    let out = lab.run(host, argv)?;
    if !out.status.success() {
        bail!(
            "{host}: {argv:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Strings from string slices, for argv building.
pub fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

/// Kills and reaps children started with [`spawn_logged`] (by their pids).
pub fn reap(children: &mut Vec<Child>) {
    for child in children.iter_mut() {
        let _ = child.kill();
        let _ = child.wait();
    }
    children.clear();
}
