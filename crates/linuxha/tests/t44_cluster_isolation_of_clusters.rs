//! Clusters kept apart: a second cluster on the same two nodes (own root, name and ports) runs
//! beside the first without touching it, and two nodes built separately to the same version
//! with different sources refuse to form until `clbuild --force` makes one copy win.

mod cluster;
use cluster::{ClusterState, ClusterStatus};

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use cluster::{all_up, text, Cluster, ALL_DAEMONS, CLUSTER, CLUSTER_DAEMONS, WAIT};
use serde_json::Value;

/// The second cluster's name.
const CLUSTER2: &str = "cluster2";

/// The second cluster on the lab's nodes: `<node root>/second` as its `LINUXHA_ROOT`.
struct Second<'a> {
    c: &'a Cluster,
}

impl Second<'_> {
    /// The second cluster's root on `node`.
    fn root(&self, node: &str) -> PathBuf {
        self.c.lab.root(node).expect("node root").join("second")
    }

    /// Its `etc/cluster` on `node`.
    fn etc(&self, node: &str) -> PathBuf {
        self.root(node).join("etc/cluster")
    }

    fn run(&self, node: &str, args: &[&str]) -> Output {
        self.c.run_at(node, &self.root(node), args)
    }

    fn must(&self, node: &str, args: &[&str]) -> String {
        let out = self.run(node, args);
        assert!(
            out.status.success(),
            "{CLUSTER2} on {node}: {args:?}: {}\n{}",
            text(&out),
            self.diagnostics()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// cluster2's `clstat --json` on `node`: exit code and the snapshot, if clstat printed one.
    fn status(&self, node: &str) -> (Option<i32>, Option<ClusterStatus>) {
        let out = self.run(node, &["clstat", "--json"]);
        (out.status.code(), serde_json::from_slice(&out.stdout).ok())
    }

    fn wait(&self, node: &str, what: &str, pred: impl Fn(&ClusterStatus) -> bool) -> ClusterStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            let (_, status) = self.status(node);
            if let Some(status) = status.as_ref().filter(|s| pred(s)) {
                return status.clone();
            }
            assert!(
                Instant::now() < deadline,
                "{CLUSTER2} on {node}: not within {WAIT:?}: {what}\nlast clstat: {status:#?}\n{}",
                self.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self, node: &str, daemon: &str) -> String {
        std::fs::read_to_string(self.root(node).join(format!("var/log/cluster/{daemon}.log")))
            .unwrap_or_default()
    }

    /// Both clusters' state and logs.
    fn diagnostics(&self) -> String {
        let mut out = self.c.diagnostics();
        for node in ["node1", "node2"] {
            let clstat = self.run(node, &["clstat", "--verbose"]);
            out += &format!("===== {CLUSTER2} on {node}: clstat --verbose\n{}\n", text(&clstat));
            for daemon in ALL_DAEMONS {
                let log = self.log(node, daemon);
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines.get(lines.len().saturating_sub(25)..).unwrap_or(&[]);
                out += &format!("----- {CLUSTER2} on {node}: {daemon}.log\n");
                for line in tail {
                    out += line;
                    out.push('\n');
                }
            }
        }
        out
    }

    /// The example configuration renamed to cluster2 on ports 9911–9914, built on both
    /// nodes with its own key.
    fn configure(&self) {
        for node in ["node1", "node2"] {
            let etc = self.etc(node);
            cluster::copy_example(&etc);
            let path = etc.join("clconf.xml");
            let mut xml = std::fs::read_to_string(&path).expect("clconf.xml");
            for (from, to) in [
                ("<name>cluster1</name>", "<name>cluster2</name>"),
                (">9901<", ">9911<"),
                (">9902<", ">9912<"),
                (">9903<", ">9913<"),
                (">9904<", ">9914<"),
            ] {
                assert!(xml.contains(from), "example clconf.xml has {from}");
                xml = xml.replace(from, to);
            }
            std::fs::write(&path, xml).expect("write clconf.xml");
        }
        self.must("node1", &["clbuild", "--genkey"]);
        let key = std::fs::read(self.etc("node1").join("cluster.key")).expect("key written");
        let copy = self.etc("node2").join("cluster.key");
        std::fs::write(&copy, key).expect("copy key");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        for node in ["node1", "node2"] {
            self.must(node, &["clbuild", "--verbose"]);
        }
    }

    /// Start cluster2's cldaemon on `node` and wait until it answers clstat.
    fn start_cldaemon(&self, node: &str) {
        self.must(node, &["cldaemon"]);
        self.wait(node, "cldaemon answers", |s| {
            s.cluster == CLUSTER2
                && !cluster::warnings(s).iter().any(|w| w.contains("cldaemon is not running"))
        });
    }

    /// The pid of each of cluster2's daemons on `node` (exactly one each).
    fn daemon_pids(&self, node: &str) -> Vec<(String, u32)> {
        ALL_DAEMONS
            .iter()
            .map(|d| {
                let name = format!("{d}-{CLUSTER2}");
                match self.c.pids_named(node, &name).as_slice() {
                    [pid] => (name, *pid),
                    other => panic!(
                        "{node}: expected one {name}, found {other:?}; processes {:?}",
                        self.c.procs(node)
                    ),
                }
            })
            .collect()
    }
}

/// Every frame counter of every daemon in `status` that counts frames of another cluster or
/// with another key, with its value: all must be 0.
fn foreign_frame_counters(status: &ClusterStatus) -> Vec<(String, u64)> {
    let mut found = Vec::new();
    if let Some(daemons) = status.counters.as_object() {
        for (daemon, counters) in daemons {
            for name in ["wrong_cluster", "bad_mac"] {
                found.push((format!("{daemon}.{name}"), counters[name].as_u64().unwrap_or(0)));
            }
        }
    }
    found
}

/// cluster1 in `status`: formed, both up, clhbd counting node's heartbeats and no frame of
/// another cluster or key.
fn cluster1_clean(status: &ClusterStatus) -> bool {
    status.cluster == CLUSTER
        && all_up(status)
        && cluster::warnings(status).is_empty()
        && status.counters["clhbd"]["accepted"].as_u64().unwrap_or(0) > 0
        && status.counters["clhbd"]["wrong_cluster"].as_u64() == Some(0)
        && status.counters["clhbd"]["bad_mac"].as_u64() == Some(0)
        && foreign_frame_counters(status).iter().all(|(_, v)| *v == 0)
}

#[test]
fn two_clusters_on_the_same_nodes_do_not_interfere() {
    let Some(c) = Cluster::formed("two_clusters_on_the_same_nodes_do_not_interfere") else {
        return;
    };
    eprintln!("lab {}", c.lab.name());
    let before = [c.daemon_pids("node1"), c.daemon_pids("node2")];
    let logs1: Vec<usize> = ["node1", "node2"].iter().map(|n| c.log(n, "clhbd").len()).collect();

    let second = Second { c: &c };
    second.configure();
    second.start_cldaemon("node1");
    second.start_cldaemon("node2");
    second.must("node1", &["clform", "--verbose"]);
    for node in ["node1", "node2"] {
        let status = second.wait(node, "cluster2 formed with both nodes up", |s| {
            s.cluster == CLUSTER2
                && all_up(s)
                && s.counters["clhbd"]["accepted"].as_u64().unwrap_or(0) > 0
        });
        assert!(
            foreign_frame_counters(&status).iter().all(|(_, v)| *v == 0),
            "{CLUSTER2} on {node} counted foreign frames: {status:#?}"
        );
    }

    // Both clusters run side by side, each daemon named after its cluster.
    for (i, node) in ["node1", "node2"].into_iter().enumerate() {
        let pids2 = second.daemon_pids(node);
        assert_eq!(c.daemon_pids(node), before[i], "{node}: cluster1's daemons untouched");
        for (name, pid) in &pids2 {
            assert!(
                !before[i].values().any(|p| p == pid),
                "{node}: {name} ({pid}) is not one of cluster1's daemons"
            );
        }
        assert_eq!(c.status(node).0, Some(0), "{node}: cluster1 formed");
        // clhbd reports its counters every second: wait for a report with heartbeats in it.
        c.wait(node, "cluster1 formed, both up, heartbeats counted, no foreign frames", |s| {
            cluster1_clean(s)
        });
    }
    c.hold(Duration::from_secs(1), "cluster1 formed, both up, no foreign frames", |_, s| {
        cluster1_clean(s)
    });

    // clhalt of cluster2 stops cluster2 only.
    second.must("node1", &["clhalt", "--verbose"]);
    for node in ["node1", "node2"] {
        for daemon in CLUSTER_DAEMONS {
            let name = format!("{daemon}-{CLUSTER2}");
            let deadline = Instant::now() + WAIT;
            while !c.pids_named(node, &name).is_empty() {
                assert!(
                    Instant::now() < deadline,
                    "{node}: {name} still runs after clhalt of {CLUSTER2}: {:?}\n{}",
                    c.procs(node),
                    second.diagnostics()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        assert_eq!(
            c.pids_named(node, &format!("cldaemon-{CLUSTER2}")).len(),
            1,
            "{node}: cluster2's cldaemon stays after clhalt"
        );
        second.wait(node, "cluster2 not formed", |s| s.state == ClusterState::NotFormed);
        assert_eq!(second.status(node).0, Some(3), "{node}: clstat of cluster2 after clhalt");
    }
    // Longer than the heartbeat timeout (1 s): cluster1 never notices.
    c.hold(Duration::from_millis(2500), "cluster1 formed, both up, no foreign frames", |_, s| {
        cluster1_clean(s)
    });
    for (i, node) in ["node1", "node2"].into_iter().enumerate() {
        assert_eq!(c.daemon_pids(node), before[i], "{node}: cluster1's daemons after clhalt");
        let log = c.log(node, "clhbd");
        let since = log.get(logs1[i]..).unwrap_or("");
        assert!(
            !since.contains("dropped heartbeat frame") && !since.contains(CLUSTER2),
            "{node}: cluster1's clhbd saw cluster2:\n{since}"
        );
        let cldaemon = c.log(node, "cldaemon");
        assert!(!cldaemon.contains(CLUSTER2), "{node}: cluster1's cldaemon.log:\n{cldaemon}");
    }
}

/// The built cluster configuration of `node`.
fn built(c: &Cluster, node: &str) -> Value {
    let text = std::fs::read_to_string(c.etc(node).join(".built/clconf.json")).expect("built");
    serde_json::from_str(&text).expect("built JSON")
}

/// The 16-hex-digit words of `text`.
fn checksums(text: &str) -> Vec<String> {
    text.split(|ch: char| !ch.is_ascii_hexdigit())
        .filter(|w| w.len() == 16)
        .map(String::from)
        .collect()
}

#[test]
fn same_version_different_configuration_is_refused_then_force_wins() {
    let Some(c) = Cluster::configured_with("same_version_different_configuration", |node, etc| {
        if node == "node2" {
            let path = etc.join("clconf.xml");
            let mut xml = std::fs::read_to_string(&path).expect("clconf.xml");
            xml.push_str("<!-- node2's own copy -->\n");
            std::fs::write(&path, xml).expect("write clconf.xml");
        }
    }) else {
        return;
    };
    eprintln!("lab {}", c.lab.name());
    let (b1, b2) = (built(&c, "node1"), built(&c, "node2"));
    assert_eq!((b1["version"].as_u64(), b2["version"].as_u64()), (Some(1), Some(1)));
    let (src1, src2) = (b1["source"].as_str().expect("source"), b2["source"].as_str().expect("s"));
    assert_ne!(src1, src2, "the two nodes were built from different sources");
    let (sum1, sum2) = (cl_daemon::context::checksum(src1), cl_daemon::context::checksum(src2));

    c.start_cldaemon("node1");
    c.start_cldaemon("node2");
    let out = c.run("node1", &["clform", "--verbose"]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "clform refuses: {said}\n{}", c.diagnostics());
    let named = checksums(&said);
    assert!(
        named.contains(&sum1) && named.contains(&sum2),
        "clform names both checksums ({sum1}, {sum2}): {said}"
    );
    assert!(said.contains("clbuild --force"), "clform hints at clbuild --force: {said}");
    eprintln!("clform refused: {said}");
    for node in ["node1", "node2"] {
        let (code, status) = c.status(node);
        assert_eq!((code, status.state), (Some(3), ClusterState::NotFormed), "{node}");
        for daemon in CLUSTER_DAEMONS {
            assert!(c.pids_of(node, daemon).is_empty(), "{node}: {daemon} started by clform");
        }
    }

    // node1's copy wins: built again, sent to node2, both cldaemons restart on it.
    let out = c.must("node1", &["clbuild", "--force", "--verbose"]);
    let v1 = built(&c, "node1")["version"].as_u64().expect("version");
    assert!(v1 > 1, "node1 built a new version: {v1}\n{out}");
    let deadline = Instant::now() + WAIT;
    loop {
        let b2 = built(&c, "node2");
        if b2["version"].as_u64() == Some(v1) {
            assert_eq!(b2["source"].as_str(), Some(src1), "node2 has node1's source");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node2 did not get node1's version {v1}: {b2:#}\n{out}\n{}",
            c.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for node in ["node1", "node2"] {
        c.wait(node, "cldaemon runs the new version", |s| {
            s.config_version == v1 && s.state == ClusterState::NotFormed
        });
    }
    c.form();
    for node in ["node1", "node2"] {
        let (_, status) = c.status(node);
        assert_eq!(status.config_version, v1, "{node}: {status:#?}");
    }
}
