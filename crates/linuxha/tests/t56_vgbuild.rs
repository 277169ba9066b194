//! `clbuildapp --vgbuild` of a replicated application (the `webdata` example) in the lab: it
//! works through cldaemon on both nodes, and says so in one sentence when one is missing; on a
//! machine without DRBD every node's problem is reported at once (exit 2). Nothing is changed in
//! any of these cases. (Real DRBD is exercised in the VM lab.)

mod cluster;

use std::path::Path;

use cluster::{copy_tree, text, Cluster};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Nothing was written under `/etc/drbd.d` of either node.
fn nothing_written(c: &Cluster) {
    for node in ["node1", "node2"] {
        let drbd_d = c.etc(node).join("../drbd.d");
        let written = std::fs::read_dir(&drbd_d).map(|d| d.count()).unwrap_or(0);
        assert_eq!(written, 0, "{node}: {} has files", drbd_d.display());
    }
}

#[test]
fn vgbuild_needs_both_cldaemons_and_reports_every_node_problem() {
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/replicated/etc/cluster/webdata");
    let Some(c) = Cluster::configured_with("vgbuild_needs_both_cldaemons", |_, etc| {
        copy_tree(&example, &etc.join("webdata"));
    }) else {
        return;
    };
    let args = ["clbuildapp", "--vgbuild", "--yes", "--application", "webdata"];

    // No cldaemon here: one sentence, exit 1.
    let out = c.run("node1", &args);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "{}", text(&out));
    assert!(err.contains("cldaemon is not running on this node"), "{}", text(&out));
    nothing_written(&c);

    // cldaemon here but not on the peer: one sentence naming the peer, exit 1.
    c.start_cldaemon("node1");
    let out = c.run("node1", &args);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "{}", text(&out));
    assert!(err.contains("cannot reach cldaemon on node2"), "{}", text(&out));
    nothing_written(&c);

    // Both cldaemons: the nodes are inspected; this machine has no DRBD, so both nodes'
    // problems are reported together and the command fails as a configuration problem.
    if Path::new("/proc/drbd").exists() {
        eprintln!("DRBD is loaded on this machine: the problem report is not checked here");
        return;
    }
    c.start_cldaemon("node2");
    let out = c.run("node1", &args);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = stderr(&out);
    for node in ["node1", "node2"] {
        assert!(
            err.contains(&format!("{node}: the DRBD kernel module is not loaded on {node}")),
            "{}",
            text(&out)
        );
    }
    assert!(err.contains("with the storage of `webdata`; nothing was changed"), "{}", text(&out));
    nothing_written(&c);
}
