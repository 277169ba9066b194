//! Split-brain safety in the lab (issue 5): the peer-alive probe, fencing, a failing fence and
//! the arbitrator, each on real namespaces with apache running on node1.

mod cluster;
use cluster::{ApplicationState, NodeState};

use std::path::Path;
use std::time::{Duration, Instant};

use cluster::ClusterStatus;
use cluster::{app_running_on, app_state, node_state, Cluster, EXE};

/// Every alarm of `status`, one a line.
fn alarms(status: &ClusterStatus) -> String {
    status.alarms.join("\n")
}

fn edit_clconf(etc: &Path, edit: impl Fn(String) -> String) {
    let path = etc.join("clconf.xml");
    let xml = std::fs::read_to_string(&path).expect("clconf.xml");
    std::fs::write(&path, edit(xml)).expect("write clconf.xml");
}

/// Heartbeats only on the private network; the public one carries the VIP and ARP. Cutting the
/// private network leaves node1 answering on the public one: node2 must take nothing over and
/// say why.
#[test]
fn heartbeat_network_cut_public_up_means_no_takeover_and_an_alarm() {
    let Some(mut c) = Cluster::with_apache("hb_cut_public_up", |_, etc| {
        edit_clconf(etc, |xml| {
            xml.replace(
                "name=\"public\"  interface=\"eth0\" address=\"10.10.0.11\" prefix=\"24\" heartbeat=\"yes\"",
                "name=\"public\"  interface=\"eth0\" address=\"10.10.0.11\" prefix=\"24\" heartbeat=\"no\"",
            )
            .replace(
                "name=\"public\"  interface=\"eth0\" address=\"10.10.0.12\" prefix=\"24\" heartbeat=\"yes\"",
                "name=\"public\"  interface=\"eth0\" address=\"10.10.0.12\" prefix=\"24\" heartbeat=\"no\"",
            )
        })
    }) else {
        return;
    };
    c.form();
    c.wait_app_everywhere("apache running on node1", |s| app_running_on(s, "node1"));
    c.wait_served_by("node1", Duration::from_secs(10));
    let from2 = c.log("node2", "cldaemon").len();
    c.lab.cut("node1", Some(1)).expect("cut node1's private network");
    let status = c.wait_for("node2", "the peer-alive alarm", Duration::from_secs(10), |s| {
        alarms(s).contains("still answers on the public network")
    });
    assert_eq!(node_state(&status, "node1"), Some(NodeState::Down));
    c.wait_log("node2", "cldaemon", from2, "still answers on the public network");
    // Well past the takeover delay: apache stays on node1 only.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        assert!(!c.has_vip("node2"), "node2 took the VIP while node1 is alive");
        std::thread::sleep(Duration::from_millis(200));
    }
    c.wait_served_by("node1", Duration::from_secs(5));
    let (_, status) = c.status("node2");
    assert_eq!(app_state(&status).0, Some(ApplicationState::Stopped), "{status:#?}");
    let out = c.must("node2", &["clstat"]);
    assert!(out.contains("ALARM:") && out.contains("still answers"), "clstat shows it:\n{out}");
    // An administrator's start on node2 is held back too, and says why.
    let out = c.run("node2", &["clstartapp", "--application", "apache", "--node", "node2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("clstartapp on node2: {stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("not cleared for takeover") && stderr.contains("still answers"),
        "{stderr}"
    );
    assert!(!c.has_vip("node2"), "node2 did not start apache");
}

/// With fencing, a hung node1 is powered off by node2's fence agent before node2 starts apache.
#[test]
fn fencing_powers_the_silent_peer_off_before_the_takeover() {
    let Some(mut c) = Cluster::with_apache_lab_fencing("fenced_takeover", true) else {
        return;
    };
    c.form();
    c.wait_app_everywhere("apache running on node1", |s| app_running_on(s, "node1"));
    c.wait_served_by("node1", Duration::from_secs(10));
    let from2 = c.log("node2", "cldaemon").len();
    let t = Instant::now();
    c.lab.freeze("node1").expect("freeze node1");
    let served = c.wait_served_by("node2", Duration::from_secs(30));
    eprintln!("freeze → fenced → served by node2 after {served:?} ({:?} in all)", t.elapsed());
    let log = c.wait_log("node2", "cldaemon", from2, "was fenced");
    let fenced_at = log.find("was fenced").expect("fenced line");
    let started_at = log.find("starting apache").or_else(|| log.find("apache is running"));
    if let Some(started_at) = started_at {
        assert!(fenced_at < started_at, "fenced before starting:\n{log}");
    }
    c.lab.refresh().expect("re-read the lab after the agent changed it");
    assert!(c.lab.is_frozen("node1").expect("frozen?"), "node1 is powered off (frozen)");
}

/// A node that lost its power (in the lab: frozen and cut from every network) is fenced at once
/// by node2, which runs nothing and so is not favoured in the fence race: its fence device
/// reports node1 off, so node1 is not racing, and the race's wait is skipped.
#[test]
fn a_powered_off_peer_is_fenced_without_the_race_wait() {
    let Some(mut c) = Cluster::with_apache_lab_fencing("fenced_off", true) else {
        return;
    };
    c.form();
    c.wait_app_everywhere("apache running on node1", |s| app_running_on(s, "node1"));
    c.wait_served_by("node1", Duration::from_secs(10));
    let from2 = c.log("node2", "cldaemon").len();
    c.lab.power_off("node1").expect("power node1 off");
    let served = c.wait_served_by("node2", Duration::from_secs(30));
    eprintln!("power off → served by node2 after {served:?}");
    c.wait_log("node2", "cldaemon", from2, "was fenced");
    let all = c.log("node2", "cldaemon")[from2..].to_string();
    assert!(all.contains("reports it powered off"), "no status query answered off:\n{all}");
}

/// A fence agent that fails: nothing is taken over, and clstat says why.
#[test]
fn a_failing_fence_means_no_takeover() {
    let Some(mut c) = Cluster::with_apache_prepared(
        "fence_fails",
        |lab| {
            for node in ["node1", "node2"] {
                let script =
                    "#!/bin/sh\ncat >/dev/null\necho 'power switch unreachable' >&2\nexit 1\n";
                cluster::install_fence_agent(
                    lab.root(node).expect("root"),
                    "fence_broken",
                    Some(script),
                );
            }
        },
        |_, etc| {
            edit_clconf(etc, |xml| {
                cluster::with_fence_devices(xml, "unused", "/usr/sbin/fence_broken")
            })
        },
    ) else {
        return;
    };
    c.form();
    c.wait_app_everywhere("apache running on node1", |s| app_running_on(s, "node1"));
    let from2 = c.log("node2", "cldaemon").len();
    c.lab.freeze("node1").expect("freeze node1");
    let status = c.wait_for("node2", "the fence alarm", Duration::from_secs(15), |s| {
        alarms(s).contains("fencing node node1 failed")
    });
    assert!(alarms(&status).contains("power switch unreachable"), "{status:#?}");
    c.wait_log("node2", "cldaemon", from2, "fencing node node1 failed");
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        assert!(!c.has_vip("node2"), "node2 took over without a successful fence");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, status) = c.status("node2");
    assert_eq!(app_state(&status).0, Some(ApplicationState::Stopped), "{status:#?}");
    assert!(status.takeover.iter().any(|l| l.contains("fencing")), "{status:#?}");
}

/// The symmetric partition: node1 and node2 cut from each other on both networks, both still
/// reaching ext (the known connection and the arbitrator). Exactly one of them runs apache.
#[test]
fn symmetric_partition_with_an_arbitrator_leaves_exactly_one_owner() {
    let Some(mut c) = Cluster::with_apache("arbitrated_partition", |_, etc| {
        edit_clconf(etc, |xml| {
            xml.replace(
                "<heartbeat profile=\"default\"/>",
                "<heartbeat profile=\"default\"/>\n    <arbitrator address=\"10.10.0.1\" port=\"9905\"/>",
            )
        })
    }) else {
        return;
    };
    // The arbitrator on ext, with the cluster's file and key.
    let ext_root = c.lab.root("ext").expect("ext root").to_path_buf();
    let ext_etc = ext_root.join("etc/cluster");
    std::fs::create_dir_all(&ext_etc).expect("ext etc");
    for file in ["clconf.xml", "cluster.key"] {
        std::fs::copy(c.etc("node1").join(file), ext_etc.join(file)).expect("copy to ext");
    }
    let root_arg = ext_root.display().to_string();
    let mut cmd = c
        .lab
        .exec("ext", &[EXE, "--root", &root_arg, "clarbd", "--foreground"])
        .expect("clarbd command");
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let arbitrator = ChildGuard(cmd.spawn().expect("clarbd starts"));

    c.form();
    c.wait_app_everywhere("apache running on node1", |s| app_running_on(s, "node1"));
    c.wait_served_by("node1", Duration::from_secs(10));
    // The arbitrator grants nothing in its first lease after a start.
    std::thread::sleep(Duration::from_secs(4));

    c.lab.partition("node1", "node2", None).expect("partition the nodes");
    let t = Instant::now();
    let mut owners_seen = std::collections::BTreeSet::new();
    while t.elapsed() < Duration::from_secs(15) {
        let (one, two) = (c.has_vip("node1"), c.has_vip("node2"));
        assert!(
            !(one && two),
            "both nodes hold the VIP {:?} after the partition\n{}",
            t.elapsed(),
            c.diagnostics()
        );
        if one {
            owners_seen.insert("node1");
        }
        if two {
            owners_seen.insert("node2");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let owner = if c.has_vip("node1") { "node1" } else { "node2" };
    c.wait_served_by(owner, Duration::from_secs(10));
    eprintln!("after the partition apache runs on {owner}; owners seen: {owners_seen:?}");
    let (_, s1) = c.status("node1");
    let (_, s2) = c.status("node2");
    let lease_lines = format!("{:?} {:?}", s1.takeover, s2.takeover);
    assert!(lease_lines.contains("lease"), "clstat shows the lease: {lease_lines}");
    let log =
        std::fs::read_to_string(ext_root.join("var/log/cluster/clarbd.log")).unwrap_or_default();
    assert!(log.contains("grant"), "the arbitrator logged its grant:\n{log}");
    drop(arbitrator);
}

/// Kills the child it holds (by pid) when dropped, even after a failed assertion.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The timing argument on real processes: node1, cut from everything, must release apache
/// (VIP, mount, processes) within the stop margin even though its stop script would take 30 s,
/// and before node2 starts its copy.
#[test]
fn an_isolated_node_releases_everything_before_the_survivor_starts_even_with_a_slow_stop_script() {
    let Some(mut c) = Cluster::with_apache("urgent_stop", |_, etc| {
        let stop = etc.join("apache/stop");
        let old = std::fs::read_to_string(&stop).expect("stop script");
        // Hang before doing anything: only the urgent stop's kill can end it in time.
        let slow = old.replacen("\n", "\nsleep 30\n", 1);
        std::fs::write(&stop, slow).expect("write stop script");
    }) else {
        return;
    };
    c.form();
    c.wait_app_everywhere("apache running on node1", |s| app_running_on(s, "node1"));
    c.wait_served_by("node1", Duration::from_secs(10));
    let t = Instant::now();
    c.lab.cut("node1", None).expect("cut node1 from everything");
    let mut released = None;
    while t.elapsed() < Duration::from_secs(20) {
        let (one, two) = (!c.app_held("node1").is_empty(), c.has_vip("node2"));
        assert!(
            !(one && two),
            "node2 holds the VIP while node1 still holds apache, {:?} after the cut",
            t.elapsed()
        );
        if !one && released.is_none() {
            released = Some(t.elapsed());
        }
        if two && released.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let released = released.expect("node1 released apache");
    // Detection (1 s), the isolation wait (over at detection on a clean cut), the stop margin
    // (0.3 s), and slack for a loaded machine; far below the stop script's 30 s.
    assert!(released < Duration::from_secs(8), "node1 released apache after {released:?}");
    c.wait_served_by("node2", Duration::from_secs(20));
    eprintln!("cut → node1 released after {released:?}; node2 serving after {:?}", t.elapsed());
    if std::env::var_os("T63_DEBUG").is_some() {
        eprintln!("{}", c.log("node2", "cldaemon"));
    }
}
