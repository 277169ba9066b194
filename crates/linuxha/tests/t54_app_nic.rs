//! NIC failure: the interface carrying the application's VIP loses its link on the active
//! node → the application moves to the other node, whose link is healthy, and ext reaches it.

mod cluster;
use cluster::NodeState;

use std::time::{Duration, Instant};

use cluster::{app_running_on, Cluster};

#[test]
fn vip_interface_losing_its_link_moves_the_application() {
    let Some(mut c) = Cluster::apache_on_node1("vip_interface_losing_its_link") else { return };
    c.wait_served_by("node1", Duration::from_secs(10));
    let from1 = c.log("node1", "cldaemon").len();
    let t = Instant::now();
    // Network 0 (public) carries the VIP; the private network still carries heartbeats, so
    // node1 stays a member: only the application has to move.
    c.lab.link_down("node1", 0).expect("pull node1's public cable");
    c.wait_app_everywhere("apache running on node2", |s| app_running_on(s, "node2"));
    c.wait_served_by("node2", Duration::from_secs(10));
    eprintln!("NIC failure: ext served by node2 {:?} after node1's link went down", t.elapsed());
    let log = c.log_since("node1", "cldaemon", from1);
    assert!(log.contains("lost its link") || log.contains("no carrier"), "node1 logs why:\n{log}");
    assert!(!c.has_vip("node1"), "node1 released the VIP\n{}", c.app_diagnostics());
    // node1 is still a member: a lost link is not a lost node.
    let (_, status) = c.status("node2");
    assert_eq!(cluster::node_state(&status, "node1"), Some(NodeState::Up), "{status:#?}");
}
