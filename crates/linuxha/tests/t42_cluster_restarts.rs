//! Crashes of node1's daemons: each cluster daemon killed with SIGKILL is restarted, and a
//! restarted cldaemon adopts the daemons still running; node2 never sees node1 go down.

mod cluster;
use cluster::{ClusterState, NodeState};

use std::time::Duration;

use cluster::{all_up, node_state, signal, Cluster};

#[test]
fn killed_daemons_are_restarted_without_a_failover() {
    let Some(c) = Cluster::formed("killed_daemons_are_restarted") else { return };
    let node2_pids = c.daemon_pids("node2");
    let log2 = c.log("node2", "cldaemon").len();

    for daemon in ["clhbd2", "clhbd", "clnetd", "cllockd"] {
        let before = c.daemon_pids("node1");
        let old = before[daemon];
        let log1 = c.log("node1", "cldaemon").len();
        signal(old, "KILL");
        let new = c.wait_pids(
            "node1",
            daemon,
            "restarted with a new pid",
            |p| matches!(p, [pid] if *pid != old),
        )[0];
        // clhbd2 dies with its parent clhbd, so killing clhbd restarts both.
        if daemon == "clhbd" {
            c.wait_pids(
                "node1",
                "clhbd2",
                "restarted by the new clhbd",
                |p| matches!(p, [pid] if *pid != before["clhbd2"]),
            );
            assert_eq!(cluster::ppid(c.pid_of("node1", "clhbd2")), Some(new));
        }
        if daemon != "clhbd2" {
            c.wait_log(
                "node1",
                "cldaemon",
                log1,
                &format!("{daemon}-cluster1 died; restarting it"),
            );
        } else {
            c.wait_log("node1", "clhbd", 0, "clhbd2 exited");
        }
        // Give node2 a heartbeat timeout and more to notice anything, then check nothing else moved.
        c.hold(Duration::from_millis(1500), "both nodes up", |_, s| all_up(s));
        let after = c.daemon_pids("node1");
        for (name, pid) in &before {
            let restarted = *name == daemon || (daemon == "clhbd" && *name == "clhbd2");
            if !restarted {
                assert_eq!(after[name], *pid, "killing {daemon} left {name} alone");
            }
        }
        assert_eq!(c.daemon_pids("node2"), node2_pids, "node2's daemons untouched");
    }
    let log = c.log_since("node2", "cldaemon", log2);
    assert!(!log.contains("node node1 is down"), "node2 never marked node1 down:\n{log}");
    // A restarted clhbd2 may leave a gap long enough for node1 to be reported late (and
    // probed, answering): that is not a lost link.
    assert!(!log.contains(" is silent"), "node2 never lost a link to node1:\n{log}");
}

#[test]
fn restarted_cldaemon_adopts_the_running_daemons() {
    let Some(c) = Cluster::formed("restarted_cldaemon_adopts") else { return };
    let before = c.daemon_pids("node1");
    let node2_pids = c.daemon_pids("node2");
    let log2 = c.log("node2", "cldaemon").len();
    let log1 = c.log("node1", "cldaemon").len();

    signal(before["cldaemon"], "KILL");
    c.wait_pids("node1", "cldaemon", "gone", |p| p.is_empty());
    // Without its node manager node1 keeps beating: node2 sees nothing.
    c.hold(Duration::from_millis(1500), "node1 up on node2", |node, s| {
        node == "node1" || all_up(s)
    });
    c.start_cldaemon("node1");
    for daemon in ["cllockd", "clnetd", "clhbd"] {
        let line = c.wait_log(
            "node1",
            "cldaemon",
            log1,
            &format!("adopting the running {daemon}-cluster1"),
        );
        assert!(
            line.contains(&before[daemon].to_string()),
            "adopted pid {}: {line}",
            before[daemon]
        );
    }
    let status = c.wait("node1", "formed with node2 up", all_up);
    assert_eq!(status.state, ClusterState::Formed);
    assert_eq!(node_state(&status, "node2"), Some(NodeState::Up));
    let after = c.daemon_pids("node1");
    for daemon in ["cllockd", "clnetd", "clhbd", "clhbd2"] {
        assert_eq!(after[daemon], before[daemon], "{daemon} kept running");
    }
    assert_ne!(after["cldaemon"], before["cldaemon"]);
    c.hold(Duration::from_millis(1500), "both nodes up", |_, s| all_up(s));
    assert_eq!(c.daemon_pids("node2"), node2_pids, "node2's daemons untouched");
    let log = c.log_since("node2", "cldaemon", log2);
    assert!(!log.contains("node node1 is down"), "node2 never marked node1 down:\n{log}");

    // The adopted daemons are still supervised: a crash of one is noticed and repaired.
    let log1 = c.log("node1", "cldaemon").len();
    signal(before["clnetd"], "KILL");
    c.wait_pids("node1", "clnetd", "restarted", |p| matches!(p, [pid] if *pid != before["clnetd"]));
    c.wait_log("node1", "cldaemon", log1, "clnetd-cluster1 died; restarting it");
}
