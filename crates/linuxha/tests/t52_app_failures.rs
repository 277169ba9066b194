//! Failures of the example application's resources: a start script that fails on one node
//! (the application runs on the other), on both nodes (failed everywhere, and clstartapp says
//! why), and a filesystem kept busy at stop by a process outside the application (killed, and
//! the stop succeeds).

mod cluster;
use cluster::ApplicationState;

use std::path::Path;
use std::time::{Duration, Instant};

use cluster::{app_failure, app_running_on, app_state, text, Cluster, APP};

/// A start script that prints a line and exits 1.
const FAILING_START: &str = "#!/bin/sh\necho \"failing start on $LINUXHA_NODE\"\nexit 1\n";

fn failing_start_on(nodes: &'static [&'static str]) -> impl Fn(&str, &Path) {
    move |node, etc| {
        if nodes.contains(&node) {
            std::fs::write(etc.join("apache/start"), FAILING_START).expect("write start script");
        }
    }
}

#[test]
fn start_script_failing_on_node1_runs_apache_on_node2() {
    let Some(c) = Cluster::with_apache("start_fails_on_node1", failing_start_on(&["node1"])) else {
        return;
    };
    let t = Instant::now();
    let from2 = c.log("node2", "cldaemon").len();
    c.form();
    while !app_running_on(&c.status("node2").1, "node2") && t.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, status2) = c.status("node2");
    assert!(
        app_running_on(&status2, "node2"),
        "bug: node1's start failed, and node2 did not take apache over within 15 s: {:?} {:?}\n\
         node2 logged {:?} (node1's MAC is {})\n{}",
        app_state(&status2),
        app_failure(&status2),
        c.log_line("node2", "cldaemon", from2, "failed to start").map(|l| l.1),
        c.mac("node1"),
        c.app_diagnostics()
    );
    c.wait_app_everywhere("apache running on node2", |s| app_running_on(s, "node2"));
    c.wait_served_by("node2", Duration::from_secs(10));
    eprintln!("clform → ext served by node2 after {:?}", t.elapsed());
    let (_, status) = c.status("node1");
    let failure = app_failure(&status);
    let script = c.etc("node1").join("apache/start");
    assert!(
        failure.contains(&format!("start script {} exited with status 1", script.display())),
        "node1's last_failure names the script and its status: {failure:?}"
    );
    assert!(
        c.log("node1", APP).contains("failing start on node1"),
        "the script's output is in apache.log"
    );
    c.assert_released("node1", "its start failed");
}

#[test]
fn start_script_failing_on_both_nodes_leaves_it_failed_and_clstartapp_says_why() {
    let Some(c) =
        Cluster::with_apache("start_fails_everywhere", failing_start_on(&["node1", "node2"]))
    else {
        return;
    };
    c.form();
    c.wait_app_everywhere("apache failed everywhere", |s| {
        app_state(s) == (Some(ApplicationState::Failed), None)
    });
    for node in ["node1", "node2"] {
        c.assert_released(node, "apache failed everywhere");
        let (_, status) = c.status(node);
        assert!(
            app_failure(&status).starts_with("failed here: start failed: "),
            "{node}: {status:#?}"
        );
    }
    assert!(c.log("node1", APP).contains("failing start on node1"), "node1 ran its script");

    let t = Instant::now();
    let out = c.run("node1", &["clstartapp", "--application", APP]);
    eprintln!("clstartapp answered after {:?}", t.elapsed());
    assert_eq!(out.status.code(), Some(1), "clstartapp fails: {}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("clstartapp: apache failed: ")
            && stderr.contains("exited with status 1"),
        "clstartapp gives the reason: {stderr}"
    );
    c.wait_app_everywhere("apache failed everywhere", |s| {
        app_state(s) == (Some(ApplicationState::Failed), None)
    });
    c.assert_released("node1", "after the failed clstartapp");
    c.assert_released("node2", "after the failed clstartapp");
}

#[test]
fn busy_filesystem_holders_are_killed_at_stop() {
    let Some(c) = Cluster::apache_on_node1("busy_filesystem_at_stop") else { return };
    // A process outside the application's cgroup, with its cwd in the mount point.
    let mountpoint = c.app_mountpoint("node1");
    let script = format!("cd '{}' && exec sleep 600", mountpoint.display());
    let mut holder = c
        .lab
        .exec("node1", &["sh", "-c", &script])
        .expect("command")
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("spawn the holder");
    let pid = holder.id();
    let t = Instant::now();
    while std::fs::read_link(format!("/proc/{pid}/cwd")).ok() != Some(mountpoint.clone()) {
        assert!(t.elapsed() < Duration::from_secs(5), "holder never got into the mount point");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!c.app_pids("node1").contains(&pid), "the holder is not in the app cgroup");

    c.let_announcements_end();
    let from1 = c.log("node1", "cldaemon").len();
    c.must("node1", &["clswitchapp", "--application", APP, "--node", "node2"]);
    let line = c.wait_log("node1", "cldaemon", from1, "killed holders of");
    assert!(
        line.contains(&mountpoint.display().to_string())
            && line.contains(&format!("({pid}, \"sleep\")")),
        "the holder is named: {line}"
    );
    c.wait_log("node1", "cldaemon", from1, "apache is stopped");
    let status = holder.wait().expect("holder exits");
    assert!(!status.success(), "the holder was killed: {status:?}");
    c.assert_released("node1", "after the busy stop");
    c.wait_served_by("node2", Duration::from_secs(10));
    let log1 = c.log_since("node1", "cldaemon", from1);
    assert!(!log1.contains("could not be stopped"), "the stop succeeded:\n{log1}");
}
