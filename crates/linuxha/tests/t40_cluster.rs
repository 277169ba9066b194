//! The cluster daemons in the lab: formation and halting, a silently isolated node, one of two
//! heartbeat networks lost, and a known connection lost by one node only. Each test builds its
//! own lab (so they run in parallel) and skips with a message where labs cannot run.

mod cluster;
use cluster::{ClusterState, LinkState, LocalStateView, NodeState};

use std::time::Duration;

use cluster::{
    all_up, assert_timestamped, known, link_state, node_state, ppid, warnings, Cluster,
    CLUSTER_DAEMONS, KNOWN,
};

#[test]
fn formation_halt_and_reform() {
    let Some(c) = Cluster::formed("formation_halt_and_reform") else { return };

    for node in ["node1", "node2"] {
        let (code, status) = c.status(node);
        assert_eq!(code, Some(0), "{node}: clstat exits 0 when formed: {status:#?}");
        assert_eq!(status.state, ClusterState::Formed);
        assert_eq!(status.cluster, "cluster1");
        assert_eq!(status.local, node);
        assert!(all_up(&status), "{node}: {status:#?}");

        let pids = c.daemon_pids(node);
        let clhbd = pids["clhbd"];
        assert_eq!(ppid(pids["clhbd2"]), Some(clhbd), "{node}: clhbd2's parent is clhbd");
        for daemon in cluster::ALL_DAEMONS {
            let path = c.log_path(node, daemon);
            assert!(path.is_file(), "{node}: {} missing", path.display());
            assert_timestamped(&format!("{node}: {}", path.display()), &c.log(node, daemon));
        }
    }

    c.must("node1", &["clhalt", "--verbose"]);
    for node in ["node1", "node2"] {
        for daemon in CLUSTER_DAEMONS {
            c.wait_pids(node, daemon, "stopped by clhalt", |p| p.is_empty());
        }
        c.pid_of(node, "cldaemon"); // the node manager stays
        let (code, status) = c.status(node);
        assert_eq!(code, Some(3), "{node}: clstat exits 3 when not formed: {status:#?}");
        assert_eq!(status.state, ClusterState::NotFormed);
    }

    // Formed again, then halted with --force.
    c.form();
    for node in ["node1", "node2"] {
        c.daemon_pids(node);
    }
    c.must("node1", &["clhalt", "--force"]);
    for node in ["node1", "node2"] {
        for daemon in CLUSTER_DAEMONS {
            c.wait_pids(node, daemon, "stopped by clhalt --force", |p| p.is_empty());
        }
        assert_eq!(c.status(node).0, Some(3));
    }

    // clform --noapps forms the cluster too.
    c.must("node1", &["clform", "--noapps"]);
    c.wait_all_up();
    for node in ["node1", "node2"] {
        c.daemon_pids(node);
    }
    c.must("node2", &["clhalt"]);
    for node in ["node1", "node2"] {
        for daemon in CLUSTER_DAEMONS {
            c.wait_pids(node, daemon, "stopped by clhalt run on node2", |p| p.is_empty());
        }
    }
}

#[test]
fn silent_isolation_of_node1() {
    let Some(mut c) = Cluster::formed("silent_isolation_of_node1") else { return };
    let before = [c.daemon_pids("node1"), c.daemon_pids("node2")];
    let log2 = c.log("node2", "cldaemon").len();
    let log1 = c.log("node1", "cldaemon").len();

    c.lab.cut("node1", None).expect("cut node1");
    c.wait("node2", "node1 down, node2 connected", |s| {
        node_state(s, "node1") == Some(NodeState::Down)
            && s.local_state == LocalStateView::Connected
    });
    let status = c.wait("node1", "node1 isolated and node2 down", |s| {
        s.local_state == LocalStateView::Isolated && node_state(s, "node2") == Some(NodeState::Down)
    });
    let k = known(&status, KNOWN).expect("known connection listed");
    assert!(!k.reachable, "node1 reaches no known connection: {status:#?}");

    let line = c.wait_log("node2", "cldaemon", log2, "node node1 is down");
    assert!(line.contains("may take over"), "node2 takes over: {line}");
    c.wait_log("node1", "cldaemon", log1, "isolated");

    c.lab.heal("node1").expect("heal node1");
    c.wait_all_up();
    assert_eq!([c.daemon_pids("node1"), c.daemon_pids("node2")], before, "no daemon restarted");
}

#[test]
fn one_of_two_heartbeat_networks_cut() {
    let Some(mut c) = Cluster::formed("one_of_two_heartbeat_networks_cut") else { return };
    let log2 = c.log("node2", "cldaemon").len();

    c.lab.cut("node1", Some(1)).expect("cut node1's private network");
    // Nobody is marked down while one link still carries heartbeats.
    c.hold(Duration::from_secs(3), "both nodes up", |_, s| {
        s.state == ClusterState::Formed
            && node_state(s, "node1") == Some(NodeState::Up)
            && node_state(s, "node2") == Some(NodeState::Up)
    });
    let status = c.wait("node2", "node1's private link down with a warning", |s| {
        link_state(s, "node1", "private") == Some(LinkState::Down)
            && link_state(s, "node1", "public") == Some(LinkState::Up)
            && warnings(s).iter().any(|w| w.contains("private") && w.contains("node1"))
    });
    assert_eq!(node_state(&status, "node1"), Some(NodeState::Up), "{status:#?}");
    assert!(!c.log_since("node2", "cldaemon", log2).contains("node node1 is down"));

    c.lab.cut("node1", None).expect("cut node1 completely");
    c.wait("node2", "node1 down once both links are cut", |s| {
        node_state(s, "node1") == Some(NodeState::Down)
    });
}

#[test]
fn known_connection_lost_by_node2_only() {
    let Some(c) = Cluster::formed("known_connection_lost_by_node2_only") else { return };
    let before = [c.daemon_pids("node1"), c.daemon_pids("node2")];
    let logs = [c.log("node1", "cldaemon").len(), c.log("node2", "cldaemon").len()];

    // Inside node2's own namespace: no ICMP to or from the known connection.
    let rules = format!(
        "add table inet lhtest ; \
         add chain inet lhtest out {{ type filter hook output priority 0 ; }} ; \
         add rule inet lhtest out ip daddr {KNOWN} meta l4proto icmp drop ; \
         add chain inet lhtest in {{ type filter hook input priority 0 ; }} ; \
         add rule inet lhtest in ip saddr {KNOWN} meta l4proto icmp drop"
    );
    let out = c.lab.run("node2", &["nft", &rules]).expect("nft runs");
    assert!(out.status.success(), "nft on node2: {}", cluster::text(&out));

    let status = c.wait("node2", "10.10.0.1 unreachable with a warning", |s| {
        known(s, KNOWN).is_some_and(|k| !k.reachable)
            && warnings(s).iter().any(|w| w.contains(KNOWN))
    });
    assert!(all_up(&status), "node2 still connected with node1 up: {status:#?}");
    // Nothing else changes, on either node, for a while.
    c.hold(Duration::from_secs(2), "both up and connected", |node, s| {
        all_up(s) && known(s, KNOWN).is_some_and(|k| k.reachable == (node == "node1"))
    });
    let (_, status1) = c.status("node1");
    assert!(warnings(&status1).is_empty(), "node1 has no warning: {status1:#?}");

    let out = c.lab.run("node2", &["nft", "delete table inet lhtest"]).expect("nft runs");
    assert!(out.status.success(), "nft on node2: {}", cluster::text(&out));
    c.wait("node2", "10.10.0.1 reachable again, no warning", |s| {
        all_up(s) && known(s, KNOWN).is_some_and(|k| k.reachable) && warnings(s).is_empty()
    });

    assert_eq!([c.daemon_pids("node1"), c.daemon_pids("node2")], before, "no daemon restarted");
    for (node, from) in ["node1", "node2"].into_iter().zip(logs) {
        let log = c.log_since(node, "cldaemon", from);
        assert!(!log.contains(" is down"), "{node}: nobody marked down:\n{log}");
        assert!(!log.contains("isolated"), "{node}: nobody isolated:\n{log}");
    }
}
