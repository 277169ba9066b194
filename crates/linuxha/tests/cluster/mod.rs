//! Shared helpers for the cluster daemon tests: a two-node lab with the example configuration
//! built on both nodes, the daemons started as an operator would, and polling of `clstat`.
//!
//! Every test holds its [`Cluster`] (and so its [`Lab`]) until the end: dropping it, also in a
//! panic, kills everything the test started on the nodes and removes the namespaces.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use cl_lab::{Lab, LabSpec};
pub use cl_wire::msg::{
    ApplicationState, ApplicationStatus, ClusterState, ClusterStatus, KnownConnectionStatus,
    LinkState, LocalStateView, NodeState, NodeStatus,
};
use serde_json::Value;

/// The multicall binary under test.
// The command-line tests' helpers, shared rather than copied.
#[path = "../common.rs"]
pub mod common;
pub use common::{copy_tree, text};

pub const EXE: &str = env!("CARGO_BIN_EXE_linuxha");
/// The example cluster's name.
pub const CLUSTER: &str = "cluster1";
/// The daemons cldaemon (and clhbd) start while the cluster is formed.
pub const CLUSTER_DAEMONS: [&str; 4] = ["cllockd", "clnetd", "clhbd", "clhbd2"];
/// Every daemon of a formed node.
pub const ALL_DAEMONS: [&str; 5] = ["cldaemon", "cllockd", "clnetd", "clhbd", "clhbd2"];
/// How long a state may take to show: generous, these tests check behaviour, not speed.
pub const WAIT: Duration = Duration::from_secs(10);
/// The known connection of the example configuration (the lab's `ext`).
pub const KNOWN: &str = "10.10.0.1";
/// clhbd's port in the example configuration.
pub const CLHBD_PORT: u16 = 9904;

/// A lab whose two nodes have the example configuration built with one shared key.
pub struct Cluster {
    /// The lab; dropping it removes everything.
    pub lab: Lab,
}

/// A lab for `test`, or `None` (with a message) where labs cannot run.
pub fn lab_or_skip(test: &str) -> Option<Lab> {
    if let Err(e) = cl_lab::check_supported() {
        eprintln!("skipping {test}: {e}");
        return None;
    }
    Some(Lab::up(LabSpec::default()).expect("lab up"))
}

/// Copy the example `etc/cluster` (configuration and application) to `to`.
pub fn copy_example(to: &Path) {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/cluster1/etc/cluster");
    copy_tree(&example, to);
}

/// The state of `node` in a status (`None` when it is not listed).
pub fn node_state(status: &ClusterStatus, node: &str) -> Option<NodeState> {
    node_entry(status, node).map(|n| n.state)
}

/// The `nodes` entry for `node`.
pub fn node_entry<'a>(status: &'a ClusterStatus, node: &str) -> Option<&'a NodeStatus> {
    status.nodes.iter().find(|n| n.name == node)
}

/// The state of `node`'s link `network` as seen in `status` (`None` when not listed).
pub fn link_state(status: &ClusterStatus, node: &str, network: &str) -> Option<LinkState> {
    node_entry(status, node)?.links.iter().find(|l| l.network == network).map(|l| l.state)
}

/// The `known_connections` entry for `address`.
pub fn known<'a>(status: &'a ClusterStatus, address: &str) -> Option<&'a KnownConnectionStatus> {
    status.known_connections.iter().find(|k| k.address.to_string() == address)
}

/// The warnings of a status.
pub fn warnings(status: &ClusterStatus) -> &[String] {
    &status.warnings
}

/// A frame counter of `daemon` (`clhbd`), 0 while not reported yet.
pub fn counter(status: &ClusterStatus, daemon: &str, name: &str) -> u64 {
    status.counters[daemon][name].as_u64().unwrap_or(0)
}

/// Both nodes are up in this status, and the local node is connected.
pub fn all_up(status: &ClusterStatus) -> bool {
    status.state == ClusterState::Formed
        && status.local_state == LocalStateView::Connected
        && node_state(status, "node1") == Some(NodeState::Up)
        && node_state(status, "node2") == Some(NodeState::Up)
}

/// argv[0] of `pid`, if it still runs.
pub fn argv0(pid: u32) -> Option<String> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let first = cmdline.split(|b| *b == 0).next()?;
    Some(String::from_utf8_lossy(first).into_owned())
}

/// Parent pid of `pid`.
pub fn ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid …": comm may hold spaces and parentheses, so start after the last ')'.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Send `signal` (e.g. "KILL", "TERM") to one pid (never by name).
pub fn signal(pid: u32, signal: &str) {
    let out = std::process::Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .output()
        .expect("kill runs");
    assert!(out.status.success(), "kill -s {signal} {pid}: {}", text(&out));
}

impl Cluster {
    /// A lab with the example configuration built on both nodes (same key); no daemons yet.
    pub fn configured(test: &str) -> Option<Cluster> {
        Cluster::configured_with(test, |_, _| {})
    }

    /// [`Cluster::configured`], with `edit(node, etc/cluster of node)` run on each node's copy
    /// of the example before the key is made and anything is built.
    pub fn configured_with(test: &str, edit: impl Fn(&str, &Path)) -> Option<Cluster> {
        Cluster::configured_prepared(test, |_| {}, edit)
    }

    /// [`Cluster::configured_with`], with `prepare(lab)` run first, right after the lab is up
    /// (e.g. extra addresses in the namespaces before anything is built).
    pub fn configured_prepared(
        test: &str,
        prepare: impl Fn(&Lab),
        edit: impl Fn(&str, &Path),
    ) -> Option<Cluster> {
        let lab = lab_or_skip(test)?;
        prepare(&lab);
        let cluster = Cluster { lab };
        for node in ["node1", "node2"] {
            copy_example(&cluster.etc(node));
            edit(node, &cluster.etc(node));
        }
        cluster.must("node1", &["clbuild", "--genkey"]);
        let key = std::fs::read(cluster.etc("node1").join("cluster.key")).expect("key written");
        let copy = cluster.etc("node2").join("cluster.key");
        std::fs::write(&copy, key).expect("copy key");
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        for node in ["node1", "node2"] {
            cluster.must(node, &["clbuild", "--verbose"]);
        }
        Some(cluster)
    }

    /// [`Cluster::configured`], then cldaemon on both nodes and `clform` on node1, and both
    /// nodes see both up.
    pub fn formed(test: &str) -> Option<Cluster> {
        let cluster = Cluster::configured(test)?;
        cluster.start_cldaemon("node1");
        cluster.start_cldaemon("node2");
        cluster.form();
        Some(cluster)
    }

    /// `clform --verbose` on node1, then wait until both nodes see both up.
    pub fn form(&self) {
        self.must("node1", &["clform", "--verbose"]);
        self.wait_all_up();
    }

    /// Wait until both nodes see both nodes up and themselves connected.
    pub fn wait_all_up(&self) {
        for node in ["node1", "node2"] {
            self.wait(node, "both nodes up and this node connected", all_up);
        }
    }

    /// Start cldaemon on `node` (it detaches) and wait until it answers clstat.
    pub fn start_cldaemon(&self, node: &str) {
        self.must(node, &["cldaemon"]);
        let deadline = Instant::now() + WAIT;
        loop {
            let (_, status) = self.try_status(node);
            let running = status.is_some_and(|s| {
                !warnings(&s).iter().any(|w| w.contains("cldaemon is not running"))
            });
            if running {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "cldaemon on {node} does not answer\n{}",
                self.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Start `linuxha args…` on `node` without waiting (stdin closed, output captured).
    pub fn spawn(&self, node: &str, args: &[&str]) -> std::process::Child {
        let argv: Vec<&str> = std::iter::once(EXE).chain(args.iter().copied()).collect();
        let mut cmd = self.lab.exec(node, &argv).expect("command for the node");
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd.spawn().expect("command starts on the node")
    }

    /// `/etc/cluster` of `node`.
    pub fn etc(&self, node: &str) -> PathBuf {
        self.lab.root(node).expect("node root").join("etc/cluster")
    }

    /// Run `linuxha args…` on `node`.
    pub fn run(&self, node: &str, args: &[&str]) -> Output {
        let argv: Vec<&str> = std::iter::once(EXE).chain(args.iter().copied()).collect();
        self.lab.run(node, &argv).expect("command runs on the node")
    }

    /// Run `linuxha args…` on `node` with `LINUXHA_ROOT` set to `root` instead of the node's
    /// lab root (another cluster on the same node).
    pub fn run_at(&self, node: &str, root: &Path, args: &[&str]) -> Output {
        let argv: Vec<&str> = std::iter::once(EXE).chain(args.iter().copied()).collect();
        let mut cmd = self.lab.exec(node, &argv).expect("command for the node");
        cmd.env("LINUXHA_ROOT", root).stdin(std::process::Stdio::null());
        cmd.output().expect("command runs on the node")
    }

    /// The pids of the processes named `name` (argv[0], e.g. `clhbd-cluster2`) on `node`.
    pub fn pids_named(&self, node: &str, name: &str) -> Vec<u32> {
        self.procs(node).remove(name).unwrap_or_default()
    }

    /// Run `linuxha args…` on `node` and insist it succeeds; its stdout.
    pub fn must(&self, node: &str, args: &[&str]) -> String {
        let out = self.run(node, args);
        assert!(out.status.success(), "{node}: {args:?}: {}\n{}", text(&out), self.diagnostics());
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `clstat --json` on `node` as the raw JSON object (Null if unreadable): for the tests of
    /// the format itself; the others read [`Cluster::status`].
    pub fn json_status(&self, node: &str) -> Value {
        let out = self.run(node, &["clstat", "--json"]);
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// `clstat --json` on `node`: exit code and the snapshot (`None` if clstat printed none).
    pub fn try_status(&self, node: &str) -> (Option<i32>, Option<ClusterStatus>) {
        let out = self.run(node, &["clstat", "--json"]);
        (out.status.code(), serde_json::from_slice(&out.stdout).ok())
    }

    /// `clstat --json` on `node`: exit code and the snapshot; panics if clstat printed none.
    pub fn status(&self, node: &str) -> (Option<i32>, ClusterStatus) {
        let out = self.run(node, &["clstat", "--json"]);
        match serde_json::from_slice(&out.stdout) {
            Ok(status) => (out.status.code(), status),
            Err(e) => panic!("{node}: clstat --json printed no status ({e}): {}", text(&out)),
        }
    }

    /// `clstat --json` on `node`, typed; panics if clstat printed none.
    pub fn typed_status(&self, node: &str) -> ClusterStatus {
        self.status(node).1
    }

    /// Poll `clstat --json` on `node` every 100 ms until `pred` holds ([`WAIT`] at most).
    pub fn wait(
        &self,
        node: &str,
        what: &str,
        pred: impl Fn(&ClusterStatus) -> bool,
    ) -> ClusterStatus {
        self.wait_for(node, what, WAIT, pred)
    }

    /// [`Cluster::wait`] with another bound.
    pub fn wait_for(
        &self,
        node: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&ClusterStatus) -> bool,
    ) -> ClusterStatus {
        let deadline = Instant::now() + timeout;
        loop {
            let (_, status) = self.try_status(node);
            if let Some(status) = status.filter(|s| pred(s)) {
                return status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{node}: not within {timeout:?}: {what}\nlast clstat on {node}: {:#}\n{}",
                    self.json_status(node),
                    self.diagnostics()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// For `duration`, poll clstat on both nodes and insist `pred(node, status)` always holds.
    pub fn hold(
        &self,
        duration: Duration,
        what: &str,
        pred: impl Fn(&str, &ClusterStatus) -> bool,
    ) {
        let end = Instant::now() + duration;
        while Instant::now() < end {
            for node in ["node1", "node2"] {
                let (_, status) = self.try_status(node);
                assert!(
                    status.as_ref().is_some_and(|s| pred(node, s)),
                    "{node}: {what} no longer holds\nclstat on {node}: {status:#?}\n{}",
                    self.diagnostics()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `node`'s processes by argv[0] (`clhbd-cluster1` → pids).
    pub fn procs(&self, node: &str) -> BTreeMap<String, Vec<u32>> {
        let mut found: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for pid in self.lab.pids(node).expect("node pids") {
            if let Some(name) = argv0(pid) {
                found.entry(name).or_default().push(pid);
            }
        }
        found
    }

    /// The pids of `daemon` (`clhbd`) of the example cluster on `node`.
    pub fn pids_of(&self, node: &str, daemon: &str) -> Vec<u32> {
        self.procs(node).remove(&format!("{daemon}-{CLUSTER}")).unwrap_or_default()
    }

    /// The one pid of `daemon` on `node`; panics unless exactly one runs.
    pub fn pid_of(&self, node: &str, daemon: &str) -> u32 {
        let pids = self.pids_of(node, daemon);
        match pids.as_slice() {
            [pid] => *pid,
            _ => panic!(
                "{node}: expected one {daemon}-{CLUSTER}, found {pids:?}; processes: {:?}",
                self.procs(node)
            ),
        }
    }

    /// The pid of every daemon on `node` (exactly one each), by daemon name.
    pub fn daemon_pids(&self, node: &str) -> BTreeMap<&'static str, u32> {
        ALL_DAEMONS.iter().map(|d| (*d, self.pid_of(node, d))).collect()
    }

    /// Wait until `pred(pids of daemon on node)` holds.
    pub fn wait_pids(
        &self,
        node: &str,
        daemon: &str,
        what: &str,
        pred: impl Fn(&[u32]) -> bool,
    ) -> Vec<u32> {
        let deadline = Instant::now() + WAIT;
        loop {
            let pids = self.pids_of(node, daemon);
            if pred(&pids) {
                return pids;
            }
            assert!(
                Instant::now() < deadline,
                "{node}: {daemon}: not within {WAIT:?}: {what} (pids {pids:?}; processes {:?})\n{}",
                self.procs(node),
                self.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Path of `daemon`'s log on `node`.
    pub fn log_path(&self, node: &str, daemon: &str) -> PathBuf {
        self.lab.root(node).expect("node root").join(format!("var/log/cluster/{daemon}.log"))
    }

    /// `daemon`'s log on `node` ("" if missing).
    pub fn log(&self, node: &str, daemon: &str) -> String {
        std::fs::read_to_string(self.log_path(node, daemon)).unwrap_or_default()
    }

    /// The log of `daemon` on `node` from byte `from` on.
    pub fn log_since(&self, node: &str, daemon: &str, from: usize) -> String {
        self.log(node, daemon).get(from..).unwrap_or("").to_string()
    }

    /// Wait until `daemon`'s log on `node` has a line containing `needle` (after byte `from`).
    pub fn wait_log(&self, node: &str, daemon: &str, from: usize, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let log = self.log_since(node, daemon, from);
            if let Some(line) = log.lines().find(|l| l.contains(needle)) {
                return line.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "{node}: no line with {needle:?} in {daemon}.log within {WAIT:?}\n{}",
                self.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// clstat of both nodes and the tail of every log, for failure messages.
    pub fn diagnostics(&self) -> String {
        let mut out = String::new();
        for node in ["node1", "node2"] {
            let clstat = self.run(node, &["clstat", "--verbose"]);
            out += &format!("===== {node}: clstat --verbose\n{}\n", text(&clstat));
            out += &format!("===== {node}: processes {:?}\n", self.procs(node));
            for daemon in ALL_DAEMONS {
                let log = self.log(node, daemon);
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines.get(lines.len().saturating_sub(25)..).unwrap_or(&[]);
                out += &format!("----- {node}: {daemon}.log (last {} lines)\n", tail.len());
                for line in tail {
                    out += line;
                    out.push('\n');
                }
            }
        }
        out
    }

    /// Send each datagram from `host` to `to`, one UDP datagram each (python3 in the host).
    pub fn send_udp(&self, host: &str, to: SocketAddr, datagrams: &[Vec<u8>]) {
        const SCRIPT: &str = "import socket,sys\n\
            s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
            a=(sys.argv[1],int(sys.argv[2]))\n\
            for h in sys.argv[3:]:\n    s.sendto(bytes.fromhex(h),a)\n";
        let python =
            if Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" };
        let mut argv = vec![python.to_string(), "-c".into(), SCRIPT.into()];
        argv.push(to.ip().to_string());
        argv.push(to.port().to_string());
        argv.extend(datagrams.iter().map(hex::encode));
        let out = self.lab.run(host, &argv).expect("python3 runs");
        assert!(out.status.success(), "sending UDP from {host}: {}", text(&out));
    }

    /// Capture `count` UDP datagrams on `host`'s `iface` matching the tcpdump `filter`;
    /// their payloads, as the wire carried them.
    pub fn capture_udp(&self, host: &str, iface: &str, filter: &str, count: usize) -> Vec<Vec<u8>> {
        let count = count.to_string();
        let argv = [
            "timeout", "20", "tcpdump", "-i", iface, "-n", "-U", "-Z", "root", "-c", &count, "-w",
            "-", filter,
        ];
        let out = self.lab.run(host, &argv).expect("tcpdump runs");
        assert!(
            out.status.success(),
            "tcpdump on {host}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        udp_payloads(&out.stdout)
    }
}

/// The UDP payloads of the IPv4 packets in a pcap (classic format) capture.
pub fn udp_payloads(pcap: &[u8]) -> Vec<Vec<u8>> {
    let mut payloads = Vec::new();
    let Some(head) = pcap.get(..24) else { return payloads };
    let magic_le = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let little = matches!(magic_le, 0xa1b2_c3d4 | 0xa1b2_3c4d);
    let u32_at = |b: &[u8], at: usize| -> Option<u32> {
        let bytes: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
        Some(if little { u32::from_le_bytes(bytes) } else { u32::from_be_bytes(bytes) })
    };
    let Some(linktype) = u32_at(pcap, 20) else { return payloads };
    let link_header = match linktype {
        1 => 14,   // Ethernet
        113 => 16, // Linux cooked (SLL)
        276 => 20, // Linux cooked v2 (SLL2)
        other => panic!("unexpected pcap link type {other}"),
    };
    let mut at = 24;
    while let Some(caplen) = u32_at(pcap, at + 8) {
        let start = at + 16;
        let Some(packet) = pcap.get(start..start + caplen as usize) else { break };
        at = start + caplen as usize;
        let Some(ip) = packet.get(link_header..) else { continue };
        let Some(&vihl) = ip.first() else { continue };
        if vihl >> 4 != 4 || ip.get(9) != Some(&17) {
            continue;
        }
        let ihl = usize::from(vihl & 0x0f) * 4;
        let Some(udp) = ip.get(ihl..) else { continue };
        let Some(len) = udp.get(4..6).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]]))) else {
            continue;
        };
        if let Some(payload) = udp.get(8..len) {
            payloads.push(payload.to_vec());
        }
    }
    payloads
}

/// Check that a log has lines, each starting with an RFC 3339 UTC timestamp (continuation
/// lines of multi-line messages start with a tab).
pub fn assert_timestamped(name: &str, log: &str) {
    assert!(!log.trim().is_empty(), "{name} is empty");
    for line in log.lines().filter(|l| !l.starts_with('\t') && !l.is_empty()) {
        let stamp = line.split(' ').next().unwrap_or("");
        let b = stamp.as_bytes();
        let shape = b.len() >= 20
            && b[..4].iter().all(u8::is_ascii_digit)
            && b[4] == b'-'
            && b[7] == b'-'
            && b[10] == b'T'
            && b[13] == b':'
            && b[16] == b':'
            && stamp.ends_with('Z');
        assert!(shape, "{name}: line without a timestamp: {line:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Applications: the example `apache` (VIP 10.10.0.100 on eth0, an ext4 image mounted at
// `<root>/apache`, a python3 web server) and what each node holds of it.

/// The example application.
pub const APP: &str = "apache";
/// Its virtual address (on the public network, `eth0` of every node).
pub const VIP: &str = "10.10.0.100";

/// The `applications` entry for `app` in a status.
pub fn app_entry<'a>(status: &'a ClusterStatus, app: &str) -> Option<&'a ApplicationStatus> {
    status.applications.iter().find(|a| a.name == app)
}

/// `(state, node)` of [`APP`] in a status (`(None, None)` when absent).
pub fn app_state(status: &ClusterStatus) -> (Option<ApplicationState>, Option<String>) {
    let Some(entry) = app_entry(status, APP) else { return (None, None) };
    (Some(entry.state), entry.node.clone())
}

/// [`APP`] is running on `node` in this status.
pub fn app_running_on(status: &ClusterStatus, node: &str) -> bool {
    app_state(status) == (Some(ApplicationState::Running), Some(node.to_string()))
}

/// [`APP`]'s `last_failure` in this status ("" when none).
pub fn app_failure(status: &ClusterStatus) -> String {
    app_entry(status, APP).and_then(|a| a.last_failure.clone()).unwrap_or_default()
}

/// [`APP`]'s `restarts` in this status.
pub fn app_restarts(status: &ClusterStatus) -> u64 {
    app_entry(status, APP).map_or(0, |a| u64::from(a.restarts))
}

/// The time stamp that starts a log line, if it has one.
pub fn log_time(line: &str) -> Option<std::time::SystemTime> {
    // 2026-11-25T22:28:37.406972Z
    let stamp = line.split(' ').next()?.strip_suffix('Z')?;
    let (date, time) = stamp.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':');
    let (h, min) = (t.next()?.parse::<i64>().ok()?, t.next()?.parse::<i64>().ok()?);
    let secs: f64 = t.next()?.parse().ok()?;
    // Days from the civil date (proleptic Gregorian), after H. Hinnant.
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + day - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let whole = u64::try_from(days * 86_400 + h * 3_600 + min * 60).ok()?;
    Some(std::time::UNIX_EPOCH + Duration::from_secs(whole) + Duration::from_secs_f64(secs))
}

/// `later - earlier` in signed milliseconds.
pub fn ms_between(earlier: std::time::SystemTime, later: std::time::SystemTime) -> i64 {
    match later.duration_since(earlier) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

impl Cluster {
    /// [`Cluster::configured_with`], then on each node an ext4 image for [`APP`] (each node
    /// its own: the lab has no shared storage), `clbuildapp --build --application apache` and
    /// cldaemon. The cluster is not formed yet (see [`Cluster::form`]).
    pub fn with_apache(test: &str, edit: impl Fn(&str, &Path)) -> Option<Cluster> {
        Cluster::with_apache_prepared(test, |_| {}, edit)
    }

    /// [`Cluster::with_apache`], with `prepare(lab)` run right after the lab is up (see
    /// [`Cluster::configured_prepared`]).
    pub fn with_apache_prepared(
        test: &str,
        prepare: impl Fn(&Lab),
        edit: impl Fn(&str, &Path),
    ) -> Option<Cluster> {
        let cluster = Cluster::configured_prepared(test, prepare, edit)?;
        for node in ["node1", "node2"] {
            let dir = cluster.lab.root(node).expect("node root").join("dev/linuxha");
            std::fs::create_dir_all(&dir).expect("create dev/linuxha");
            let image = dir.join(APP);
            let file = std::fs::File::create(&image).expect("create the image");
            file.set_len(32 << 20).expect("size the image");
            let out = std::process::Command::new("mkfs.ext4")
                .arg("-q")
                .arg(&image)
                .output()
                .expect("mkfs.ext4 runs");
            assert!(out.status.success(), "mkfs.ext4 {}: {}", image.display(), text(&out));
            cluster.must(node, &["clbuildapp", "--build", "--application", APP]);
        }
        for node in ["node1", "node2"] {
            cluster.start_cldaemon(node);
        }
        Some(cluster)
    }

    /// [`Cluster::with_apache`], and with `fenced` each node's `<fence>` device is the lab's own
    /// agent (`/usr/sbin/fence_linuxha_lab` under each node root, `lab=` this lab).
    pub fn with_apache_lab_fencing(test: &str, fenced: bool) -> Option<Cluster> {
        let lab_name = std::cell::RefCell::new(String::new());
        Cluster::with_apache_prepared(
            test,
            |lab| {
                *lab_name.borrow_mut() = lab.name().to_string();
                for node in ["node1", "node2"] {
                    install_fence_agent(lab.root(node).expect("root"), "fence_linuxha_lab", None);
                }
            },
            |_, etc| {
                if !fenced {
                    return;
                }
                let path = etc.join("clconf.xml");
                let xml = std::fs::read_to_string(&path).expect("clconf.xml");
                let agent = "/usr/sbin/fence_linuxha_lab";
                let xml = with_fence_devices(xml, &lab_name.borrow(), agent);
                std::fs::write(&path, xml).expect("write clconf.xml");
            },
        )
    }

    /// [`Cluster::with_apache`] unchanged, formed, and [`APP`] running on node1 as both nodes
    /// see it.
    pub fn apache_on_node1(test: &str) -> Option<Cluster> {
        let cluster = Cluster::with_apache(test, |_, _| {})?;
        cluster.form();
        cluster.wait_app_everywhere("apache running on node1", |s| app_running_on(s, "node1"));
        // "running" means the start script finished; the server it launched may need a moment
        // more to listen (longer on a loaded CI machine).
        cluster.wait_served_by("node1", Duration::from_secs(10));
        Some(cluster)
    }

    /// Sleep past the gratuitous ARPs a node sends for ~1 s after its VIP came up. They go on
    /// after a stop, and the peer's VIP probe takes them for another owner (a product bug, see
    /// `switch_right_after_start_moves_it`): tests about something else wait them out.
    pub fn let_announcements_end(&self) {
        std::thread::sleep(Duration::from_millis(1500));
    }

    /// Wait (15 s at most) until `pred` holds for [`APP`] in clstat on both nodes.
    pub fn wait_app_everywhere(&self, what: &str, pred: impl Fn(&ClusterStatus) -> bool) {
        for node in ["node1", "node2"] {
            self.wait_for(node, what, Duration::from_secs(15), &pred);
        }
    }

    /// Where [`APP`]'s filesystem is mounted on `node`.
    pub fn app_mountpoint(&self, node: &str) -> PathBuf {
        self.lab.root(node).expect("node root").join(APP)
    }

    /// `node`'s IPv4 addresses on eth0 (`10.10.0.11/24`, …).
    pub fn addresses(&self, node: &str) -> Vec<String> {
        let netns = self.lab.netns(node).expect("node netns");
        let out = std::process::Command::new("ip")
            .args(["-n", netns, "-4", "-o", "addr", "show", "dev", "eth0"])
            .output()
            .expect("ip runs");
        assert!(out.status.success(), "ip -n {netns} addr: {}", text(&out));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                words.find(|w| *w == "inet")?;
                words.next().map(String::from)
            })
            .collect()
    }

    /// The VIP is configured on `node`'s eth0.
    pub fn has_vip(&self, node: &str) -> bool {
        self.addresses(node).iter().any(|a| a.split('/').next() == Some(VIP))
    }

    /// The MAC address of `node`'s eth0 (`aa:bb:…`).
    pub fn mac(&self, node: &str) -> String {
        let netns = self.lab.netns(node).expect("node netns");
        let out = std::process::Command::new("ip")
            .args(["-n", netns, "-o", "link", "show", "dev", "eth0"])
            .output()
            .expect("ip runs");
        let line = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut words = line.split_whitespace();
        words.find(|w| *w == "link/ether");
        words.next().unwrap_or_default().to_string()
    }

    /// Mount points in `node`'s mount namespace (the lab holder's).
    pub fn mounts(&self, node: &str) -> Vec<PathBuf> {
        let holder = self.lab.holder_pid(node).expect("holder pid");
        let info = std::fs::read_to_string(format!("/proc/{holder}/mountinfo")).expect("mountinfo");
        info.lines().filter_map(|l| l.split(' ').nth(4)).map(PathBuf::from).collect()
    }

    /// [`APP`]'s filesystem is mounted in `node`'s mount namespace.
    pub fn app_mounted(&self, node: &str) -> bool {
        let mountpoint = self.app_mountpoint(node);
        self.mounts(node).contains(&mountpoint)
    }

    /// The cgroup cldaemon runs [`APP`] in on `node`.
    pub fn app_cgroup(&self, node: &str) -> PathBuf {
        self.lab.cgroup(node).expect("node cgroup").join(format!("linuxha-{CLUSTER}")).join(APP)
    }

    /// The pids in [`APP`]'s cgroup on `node` (none when the cgroup does not exist).
    pub fn app_pids(&self, node: &str) -> Vec<u32> {
        std::fs::read_to_string(self.app_cgroup(node).join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// The pid of the process whose comm is `comm` in [`APP`]'s cgroup on `node`.
    pub fn app_process(&self, node: &str, comm: &str) -> Option<u32> {
        self.app_pids(node).into_iter().find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
        })
    }

    /// Wait (5 s at most) for a process named `comm` in [`APP`]'s cgroup on `node`: the start
    /// script forks the server in the background, so it may exec a moment after "running".
    pub fn wait_app_process(&self, node: &str, comm: &str) -> u32 {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(pid) = self.app_process(node, comm) {
                return pid;
            }
            assert!(
                Instant::now() < deadline,
                "{node}: no {comm} in {APP}'s cgroup (pids {:?})\n{}",
                self.app_pids(node),
                self.app_diagnostics()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What `node` holds of [`APP`]: "VIP", "mount", "processes [..]" (empty: nothing).
    pub fn app_held(&self, node: &str) -> Vec<String> {
        let mut held = Vec::new();
        if self.has_vip(node) {
            held.push(format!("VIP {VIP}"));
        }
        if self.app_mounted(node) {
            held.push(format!("mount {}", self.app_mountpoint(node).display()));
        }
        let pids = self.app_pids(node);
        if !pids.is_empty() {
            held.push(format!("processes {pids:?}"));
        }
        held
    }

    /// Insist `node` holds nothing of [`APP`] (no VIP, no mount, empty cgroup).
    pub fn assert_released(&self, node: &str, when: &str) {
        let held = self.app_held(node);
        assert!(
            held.is_empty(),
            "{when}: {node} still holds {held:?} of {APP}\n{}",
            self.app_diagnostics()
        );
    }

    /// Ask `http://VIP/` from `ext`: the page (trimmed), or why not.
    pub fn fetch(&self, timeout: Duration) -> Result<String, String> {
        const SCRIPT: &str = "import sys,urllib.request\n\
            try:\n    print(urllib.request.urlopen(sys.argv[1],timeout=float(sys.argv[2])).read().decode().strip())\n\
            except Exception as e:\n    print(e)\n    sys.exit(1)\n";
        let python =
            if Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" };
        let url = format!("http://{VIP}/");
        let secs = format!("{:.3}", timeout.as_secs_f64());
        let out = self.lab.run("ext", &[python, "-c", SCRIPT, &url, &secs]).expect("python3 runs");
        let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() {
            Ok(said)
        } else {
            Err(format!("{said}{}", String::from_utf8_lossy(&out.stderr).trim()))
        }
    }

    /// Poll `http://VIP/` from ext until `served by <node>` answers; how long that took.
    pub fn wait_served_by(&self, node: &str, timeout: Duration) -> Duration {
        let start = Instant::now();
        let want = format!("served by {node}");
        loop {
            let got = self.fetch(Duration::from_millis(500));
            if got.as_deref() == Ok(want.as_str()) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < timeout,
                "ext: not {want:?} within {timeout:?} (last answer {got:?})\n{}",
                self.app_diagnostics()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The first line of `daemon`'s log on `node` after byte `from` containing `needle`, with
    /// its time stamp.
    pub fn log_line(
        &self,
        node: &str,
        daemon: &str,
        from: usize,
        needle: &str,
    ) -> Option<(std::time::SystemTime, String)> {
        let log = self.log_since(node, daemon, from);
        let line = log.lines().find(|l| l.contains(needle))?;
        Some((log_time(line)?, line.to_string()))
    }

    /// [`Cluster::diagnostics`], plus what each node holds of [`APP`] and its script log.
    pub fn app_diagnostics(&self) -> String {
        let mut out = self.diagnostics();
        for node in ["node1", "node2"] {
            out += &format!("===== {node}: holds {:?} of {APP}\n", self.app_held(node));
            let log = self.log(node, APP);
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines.get(lines.len().saturating_sub(15)..).unwrap_or(&[]);
            out += &format!("----- {node}: {APP}.log (last {} lines)\n", tail.len());
            for line in tail {
                out += line;
                out.push('\n');
            }
        }
        out
    }
}

/// Wait until `pid` has really exited (gone, or a zombie): unlike an empty argv0 (the process
/// has released its memory), this means it has closed its files and released its locks too.
pub fn wait_exited(pid: u32) {
    let deadline = Instant::now() + WAIT;
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"));
        let done = match status {
            Err(_) => true,
            Ok(s) => s.lines().any(|l| l.starts_with("State:") && l.contains('Z')),
        };
        if done {
            return;
        }
        assert!(Instant::now() < deadline, "pid {pid} did not exit within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `clconf.xml` text with a fence device for each node: `agent` (a path under the node root)
/// with the lab's options `lab=` and `plug=<node>`, and `poweroff="100ms"` (the lab's agent
/// powers a node off at once, so the node that loses the fence race waits only 0.5 s).
pub fn with_fence_devices(xml: String, lab: &str, agent: &str) -> String {
    let mut xml = xml;
    for node in ["node1", "node2"] {
        let open = format!("<node name=\"{node}\">");
        let device = format!(
            "{open}\n    <fence agent=\"{agent}\" timeout=\"10s\" retry=\"1s\" poweroff=\"100ms\">\n      <option name=\"lab\" value=\"{lab}\"/>\n      <option name=\"plug\" value=\"{node}\"/>\n    </fence>"
        );
        xml = xml.replace(&open, &device);
    }
    xml
}

/// Install a fence agent as `<root>/usr/sbin/<name>`: the lab's own (`linuxha`, by that name)
/// when `script` is `None`, else that shell script.
pub fn install_fence_agent(root: &Path, name: &str, script: Option<&str>) {
    let dir = root.join("usr/sbin");
    std::fs::create_dir_all(&dir).expect("usr/sbin");
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    match script {
        None => std::os::unix::fs::symlink(EXE, &path).expect("link the lab fence agent"),
        Some(body) => {
            std::fs::write(&path, body).expect("write agent");
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .expect("chmod agent");
        }
    }
}
