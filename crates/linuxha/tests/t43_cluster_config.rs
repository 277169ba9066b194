//! Configuration distribution between running nodes: a clbuild on node1 reaches node2 at
//! once, a node that was down fetches the newer version when its cldaemon starts, and a node
//! with another cluster key cannot join.

mod cluster;
use cluster::{ClusterState, NodeState};

use std::time::{Duration, Instant};

use cluster::{all_up, node_state, signal, Cluster};

/// The version of `node`'s built cluster configuration.
fn built_version(c: &Cluster, node: &str) -> u64 {
    let path = c.etc(node).join(".built/clconf.json");
    let text = std::fs::read_to_string(&path).expect("built configuration");
    let value: serde_json::Value = serde_json::from_str(&text).expect("built JSON");
    value["version"].as_u64().expect("version")
}

/// Add a comment to node1's clconf.xml: a new source checksum, the same cluster.
fn touch_clconf(c: &Cluster, what: &str) {
    let path = c.etc("node1").join("clconf.xml");
    let mut text = std::fs::read_to_string(&path).expect("clconf.xml");
    text.push_str(&format!("<!-- {what} -->\n"));
    std::fs::write(&path, text).expect("write clconf.xml");
}

/// Wait until `pred(node2's built version)` holds.
fn wait_version(c: &Cluster, what: &str, pred: impl Fn(u64) -> bool) -> u64 {
    let deadline = Instant::now() + cluster::WAIT;
    loop {
        let version = built_version(c, "node2");
        if pred(version) {
            return version;
        }
        assert!(Instant::now() < deadline, "node2: {what}: version {version}\n{}", c.diagnostics());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn clbuild_distributes_to_a_running_node() {
    let Some(c) = Cluster::formed("clbuild_distributes_to_a_running_node") else { return };
    let v1 = built_version(&c, "node1");
    assert_eq!(built_version(&c, "node2"), v1);

    touch_clconf(&c, "first change");
    let out = c.must("node1", &["clbuild", "--force", "--verbose"]);
    assert_eq!(built_version(&c, "node1"), v1 + 1, "{out}");
    wait_version(&c, "gets node1's new version", |v| v == v1 + 1);
    assert_eq!(
        std::fs::read_to_string(c.etc("node2").join(".built/clconf.json"))
            .ok()
            .map(|t| t.contains("first change")),
        Some(true),
        "node2 has node1's source"
    );
    c.wait_log("node2", "cldaemon", 0, &format!("installed configuration version {}", v1 + 1));
    // node2's cldaemon restarts on the new version: its own view starts over ("joining" for a
    // heartbeat or two), but no node ever sees the other go down.
    c.wait("node2", "node1 up again in node2's restarted cldaemon", all_up);
    c.hold(Duration::from_millis(500), "both nodes up", |_, s| all_up(s));
    for node in ["node1", "node2"] {
        assert!(
            !c.log(node, "cldaemon").lines().any(|l| l.contains(" is down")),
            "{node} saw its peer go down during the configuration change"
        );
    }
}

#[test]
fn a_node_that_was_down_fetches_the_newer_version_when_it_joins() {
    let Some(c) = Cluster::formed("a_node_that_was_down_fetches") else { return };
    let v1 = built_version(&c, "node1");
    touch_clconf(&c, "first change");
    c.must("node1", &["clbuild", "--force", "--verbose"]);
    wait_version(&c, "gets node1's version 2", |v| v == v1 + 1);

    // node2 leaves the cluster and its node manager stops.
    c.must("node1", &["clhalt", "--node", "node2"]);
    for daemon in cluster::CLUSTER_DAEMONS {
        c.wait_pids("node2", daemon, "stopped by clhalt --node node2", |p| p.is_empty());
    }
    signal(c.pid_of("node2", "cldaemon"), "TERM");
    c.wait_pids("node2", "cldaemon", "stopped by SIGTERM", |p| p.is_empty());
    c.wait("node1", "node2 down", |s| node_state(s, "node2") == Some(NodeState::Down));

    touch_clconf(&c, "second change, node2 away");
    let out = c.must("node1", &["clbuild", "--force", "--verbose"]);
    let newest = built_version(&c, "node1");
    assert_eq!(newest, v1 + 2, "{out}");
    assert_eq!(built_version(&c, "node2"), v1 + 1, "node2 was away");

    let log2 = c.log("node2", "cldaemon").len();
    c.start_cldaemon("node2");
    c.wait_log("node2", "cldaemon", log2, &format!("installed configuration version {newest}"));
    assert_eq!(built_version(&c, "node2"), newest);
    c.wait_all_up();
    let built =
        std::fs::read_to_string(c.etc("node2").join(".built/clconf.json")).unwrap_or_default();
    assert!(built.contains("second change"), "node2 has the source built while it was away");
}

#[test]
fn a_node_with_another_key_cannot_join() {
    let Some(c) = Cluster::configured("a_node_with_another_key_cannot_join") else { return };
    // node2 gets its own key: same configuration, different secret.
    c.must("node2", &["clbuild", "--genkey", "--force"]);
    c.must("node2", &["clbuild", "--force"]);
    c.start_cldaemon("node1");
    c.must("node1", &["clform", "--verbose"]);
    c.wait("node1", "formed on node1", |s| s.state == ClusterState::Formed);

    c.start_cldaemon("node2");
    c.wait_log("node1", "cldaemon", 0, "is the cluster key the same");
    // node2 asks node1 to join and is not answered: it stays out, and node1 never sees it up.
    c.hold(Duration::from_secs(2), "node2 not in the cluster", |node, s| match node {
        "node1" => s.state == ClusterState::Formed && node_state(s, "node2") != Some(NodeState::Up),
        _ => s.state == ClusterState::NotFormed,
    });
    assert_eq!(c.status("node2").0, Some(3));

    // Even once node2 runs its heartbeat daemons, node1 refuses every frame it sends.
    c.must("node2", &["clform"]);
    let line = c.wait_log("node1", "clhbd", 0, "different cluster key");
    assert!(line.contains("dropped heartbeat frame"), "{line}");
    c.hold(Duration::from_secs(2), "node1 never sees node2 up", |node, s| {
        node == "node2" || node_state(s, "node2") != Some(NodeState::Up)
    });
}
