//! Helpers shared by the lab tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cl_lab::Lab;

/// Whether to skip: labs need root, the tools and cgroup v2. Prints why.
pub fn skip(test: &str) -> bool {
    match cl_lab::check_supported() {
        Ok(()) => false,
        Err(e) => {
            eprintln!("SKIPPED {test}: {e}");
            true
        }
    }
}

/// Everything a lab creates, captured while it is up, to check afterwards that none is left.
#[derive(Debug)]
pub struct Footprint {
    pub name: String,
    pub netns: Vec<String>,
    pub cgroups: Vec<PathBuf>,
    pub dir: PathBuf,
    pub state_file: PathBuf,
    pub holders: Vec<u32>,
}

impl Footprint {
    /// Records what `lab` made.
    pub fn of(lab: &Lab) -> Footprint {
        let mut netns = vec![lab.switch_netns().to_owned()];
        let mut cgroups = Vec::new();
        let mut holders = Vec::new();
        for h in lab.hosts() {
            netns.push(h.netns.clone());
            cgroups.push(h.cgroup.clone());
            cgroups.push(h.holder_cgroup.clone());
            holders.push(h.holder_pid);
        }
        Footprint {
            name: lab.name().to_owned(),
            netns,
            cgroups,
            dir: lab.dir().to_owned(),
            state_file: cl_lab::state_file(lab.name()),
            holders,
        }
    }

    /// Asserts the lab left nothing behind, holders included (they were our reaped children).
    pub fn assert_gone(&self) {
        self.check_gone(false);
    }

    /// Like [`Footprint::assert_gone`], but a holder may remain as a zombie: holders of a lab
    /// that was detached or made by another process are not ours to reap.
    pub fn assert_gone_allow_zombies(&self) {
        self.check_gone(true);
    }

    fn check_gone(&self, zombies_ok: bool) {
        let out = std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip netns list");
        let list = String::from_utf8_lossy(&out.stdout);
        let prefix = format!("{}-", self.name);
        let left: Vec<&str> = list.lines().filter(|l| l.starts_with(&prefix)).collect();
        assert!(left.is_empty(), "namespaces left: {left:?}");
        for ns in &self.netns {
            assert!(!std::path::Path::new("/run/netns").join(ns).exists(), "{ns} left");
        }
        for cg in &self.cgroups {
            assert!(!cg.exists(), "cgroup left: {}", cg.display());
        }
        assert!(!self.dir.exists(), "dir left: {}", self.dir.display());
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let dir = self.dir.to_string_lossy().into_owned();
        assert!(!mountinfo.contains(&dir), "mounts left under {dir}");
        assert!(!self.state_file.exists(), "state file left: {}", self.state_file.display());
        for pid in &self.holders {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie =
                stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
            assert!(stat.is_empty() || (zombies_ok && zombie), "holder {pid} still exists: {stat}");
        }
    }
}

/// Whether `host` can ping `addr` (one echo, 1 s), retried a few times because ARP and bridge
/// learning may need a moment after a change.
pub fn ping_ok(lab: &Lab, host: &str, addr: impl ToString) -> bool {
    let addr = addr.to_string();
    (0..3).any(|_| ping_once(lab, host, &addr))
}

/// One `ping -c1 -W1`.
pub fn ping_once(lab: &Lab, host: &str, addr: &str) -> bool {
    lab.run(host, &["ping", "-c1", "-W1", "-q", addr]).map(|o| o.status.success()).unwrap_or(false)
}

/// Output of `ip -n <ns> link show <dev>`.
pub fn link_show(ns: &str, dev: &str) -> String {
    let out = std::process::Command::new("ip")
        .args(["-n", ns, "link", "show", dev])
        .output()
        .expect("ip link show");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A counter from `/proc/net/snmp` inside `host` (e.g. `Icmp` `InEchos`).
pub fn snmp(lab: &Lab, host: &str, group: &str, field: &str) -> u64 {
    let out = lab.run(host, &["cat", "/proc/net/snmp"]).expect("cat /proc/net/snmp");
    let text = String::from_utf8_lossy(&out.stdout);
    let prefix = format!("{group}:");
    let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
    let names = lines.next().expect("snmp header");
    let values = lines.next().expect("snmp values");
    let idx = names.split_whitespace().position(|n| n == field).expect("snmp field");
    values.split_whitespace().nth(idx).and_then(|v| v.parse().ok()).expect("snmp value")
}

/// Polls `cond` until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

/// Waits for `child` at most `timeout`; on timeout kills it (it is ours) and returns `None`,
/// so a broken kill shows up as a failed assertion instead of a hung test.
pub fn wait_timeout(
    child: &mut std::process::Child,
    timeout: Duration,
) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if start.elapsed() >= timeout {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
