//! Replays after restarts (issue 13): heartbeats of node1 recorded at node2, replayed from the
//! outside host while node1 is really cut off, after node2's clhbd restarted (its replay window
//! gone) or after node1's clhbd2 restarted (a new epoch). Either way node2 must see node1 go
//! down as if nobody replayed anything, and count the replays as unfresh or replayed.

mod cluster;
use cluster::{ClusterStatus, NodeState};

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use cluster::{counter, node_state, signal, Cluster, CLHBD_PORT};

/// Send `frames` from `host` to `to` one at a time, `pace` apart, `rounds` times over: a
/// replay timed like the heartbeats it copies.
fn replay_paced(c: &Cluster, host: &str, to: SocketAddr, frames: &[Vec<u8>], pace: Duration) {
    const SCRIPT: &str = "import socket,sys,time\n\
        s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
        a=(sys.argv[1],int(sys.argv[2]))\n\
        p=float(sys.argv[3])\n\
        for h in sys.argv[4:]:\n    s.sendto(bytes.fromhex(h),a)\n    time.sleep(p)\n";
    let python =
        if Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" };
    let mut argv = vec![python.to_string(), "-c".into(), SCRIPT.into()];
    argv.push(to.ip().to_string());
    argv.push(to.port().to_string());
    argv.push(format!("{:.3}", pace.as_secs_f64()));
    argv.extend(frames.iter().map(hex::encode));
    let out = c.lab.run(host, &argv).expect("python3 runs");
    assert!(
        out.status.success(),
        "replaying from {host}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// node1's heartbeats as they arrive at node2 on the public network.
fn record_node1(c: &Cluster, count: usize) -> Vec<Vec<u8>> {
    let filter = format!(
        "udp and src host {} and dst port {CLHBD_PORT}",
        c.lab.addr("node1", 0).expect("addr")
    );
    let recorded = c.capture_udp("node2", "eth0", &filter, count);
    assert_eq!(recorded.len(), count, "recorded {count} heartbeats of node1");
    recorded
}

/// Cut node1 off and replay `recorded` to node2 meanwhile: node2 must still see node1 down,
/// and accept none of the replayed frames. node2's clstat from just after the cut, and after
/// the replay.
fn cut_node1_and_replay(
    c: &mut Cluster,
    recorded: &[Vec<u8>],
    what: &str,
) -> (ClusterStatus, ClusterStatus) {
    let target = SocketAddr::new(c.lab.addr("node2", 0).expect("node2").into(), CLHBD_PORT);
    c.lab.cut("node1", None).expect("cut node1");
    // Heartbeats already on their way arrive; the counters reach clstat once a second.
    std::thread::sleep(Duration::from_millis(1500));
    let before = c.status("node2").1;
    // Three times over, 100 ms apart: more and faster than node1's own heartbeats.
    let frames: Vec<Vec<u8>> = recorded.iter().cycle().take(recorded.len() * 3).cloned().collect();
    let status = std::thread::scope(|scope| {
        let replay =
            scope.spawn(|| replay_paced(c, "ext", target, &frames, Duration::from_millis(100)));
        c.wait("node2", what, |s| node_state(s, "node1") == Some(NodeState::Down));
        replay.join().expect("replay thread");
        // The counters reach clstat once a second.
        std::thread::sleep(Duration::from_millis(1500));
        let status = c.status("node2").1;
        assert_eq!(
            node_state(&status, "node1"),
            Some(NodeState::Down),
            "after the whole replay: {status:#?}"
        );
        status
    });
    c.lab.heal("node1").expect("heal node1");
    c.wait_all_up();
    let accepted = counter(&status, "clhbd", "accepted") - counter(&before, "clhbd", "accepted");
    assert_eq!(accepted, 0, "no replayed heartbeat may count: {status:#?}");
    (before, status)
}

#[test]
fn heartbeats_recorded_before_a_receiver_restart_do_not_keep_a_cut_off_node_up() {
    let Some(mut c) = Cluster::formed("heartbeats_recorded_before_a_receiver_restart") else {
        return;
    };
    let recorded = record_node1(&c, 20);
    // node2's clhbd restarts (cldaemon restarts it): its replay windows are gone.
    let old = c.pid_of("node2", "clhbd");
    signal(old, "KILL");
    c.wait_pids("node2", "clhbd", "restarted by cldaemon", |p| p.len() == 1 && p[0] != old);
    c.wait_all_up();
    let (before, status) = cut_node1_and_replay(
        &mut c,
        &recorded,
        "node1 down on node2 although its recorded heartbeats are replayed",
    );
    let unfresh = counter(&status, "clhbd", "unfresh") - counter(&before, "clhbd", "unfresh");
    let replayed = counter(&status, "clhbd", "replayed") - counter(&before, "clhbd", "replayed");
    // Each recorded frame is new to the restarted window once (unfresh), then a plain replay.
    assert!(unfresh >= recorded.len() as u64, "unfresh {unfresh}: {status:#?}");
    assert!(replayed >= recorded.len() as u64, "replayed {replayed}: {status:#?}");
}

#[test]
fn heartbeats_recorded_before_a_sender_restart_do_not_keep_a_cut_off_node_up() {
    let Some(mut c) = Cluster::formed("heartbeats_recorded_before_a_sender_restart") else {
        return;
    };
    let recorded = record_node1(&c, 20);
    // node1's clhbd2 restarts (clhbd restarts it) with a new epoch from the counter.
    let old = c.pid_of("node1", "clhbd2");
    signal(old, "KILL");
    c.wait_pids("node1", "clhbd2", "restarted by clhbd", |p| p.len() == 1 && p[0] != old);
    c.wait_all_up();
    let (before, status) = cut_node1_and_replay(
        &mut c,
        &recorded,
        "node1 down on node2 although heartbeats of its previous run are replayed",
    );
    let replayed = counter(&status, "clhbd", "replayed") - counter(&before, "clhbd", "replayed");
    assert!(replayed >= recorded.len() as u64 * 3, "replayed {replayed}: {status:#?}");
}

/// Where Debian's faketime package puts the preload library.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// node1's daemons die and start again with the wall clock a day behind (libfaketime; the
/// monotonic clock is left alone). Epochs used to be the wall clock, so node2 refused every
/// heartbeat of node1's new run as older than its previous one; from the counter they grow.
#[test]
fn a_node_restarted_with_its_clock_a_day_behind_is_heard() {
    if !Path::new(LIBFAKETIME).exists() {
        // test.sh installs faketime; without it this test cannot step a clock.
        eprintln!("SKIPPED: {LIBFAKETIME} is missing (apt-get install faketime)");
        return;
    }
    let Some(c) = Cluster::formed("a_node_restarted_with_its_clock_a_day_behind") else { return };
    let pids = c.daemon_pids("node1");
    // cldaemon first, so it restarts nothing; then the others.
    for daemon in cluster::ALL_DAEMONS {
        signal(pids[daemon], "KILL");
    }
    c.wait("node2", "node1 down", |s| node_state(s, "node1") == Some(NodeState::Down));
    let before = c.status("node2").1;
    let argv = [cluster::EXE, "cldaemon"];
    let mut cmd = c.lab.exec("node1", &argv).expect("command for node1");
    cmd.env("LD_PRELOAD", LIBFAKETIME)
        .env("FAKETIME", "-1d")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .stdin(std::process::Stdio::null());
    let out = cmd.output().expect("cldaemon starts");
    assert!(out.status.success(), "cldaemon: {}", String::from_utf8_lossy(&out.stderr));
    let status = c.wait("node2", "node1 up again, heard from its new run", |s| {
        node_state(s, "node1") == Some(NodeState::Up)
            && counter(s, "clhbd", "accepted") > counter(&before, "clhbd", "accepted") + 5
    });
    let log = c.log("node1", "cldaemon");
    assert!(log.lines().last().is_some_and(|l| !l.is_empty()), "node1 logs");
    // The replay window saw nothing older than before: no heartbeat of node1 was refused.
    assert_eq!(
        counter(&status, "clhbd", "replayed"),
        counter(&before, "clhbd", "replayed"),
        "{status:#?}"
    );
    // Stop node1's daemons started here (they run under the fake clock) by pid.
    for daemon in cluster::ALL_DAEMONS {
        for pid in c.pids_of("node1", daemon) {
            signal(pid, "KILL");
        }
    }
}
