//! Hostile heartbeat traffic from the outside host: frames sealed with another key, garbage
//! and truncated bytes, and replays of node1's real heartbeats. Each kind is dropped and
//! counted, node1 stays up on node2, and no daemon restarts.

mod cluster;
use cluster::NodeState;

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use cl_wire::msg::HeartbeatMsg;
use cl_wire::{ClusterKey, Kind, Sender};
use cluster::{all_up, counter, node_state, Cluster, CLHBD_PORT};

#[test]
fn forged_garbage_and_replayed_heartbeats_are_dropped_and_counted() {
    let Some(c) = Cluster::formed("forged_garbage_and_replayed_heartbeats") else { return };
    let before = [c.daemon_pids("node1"), c.daemon_pids("node2")];
    let log2 = c.log("node2", "cldaemon").len();
    let target = SocketAddr::new(c.lab.addr("node2", 0).expect("node2 public").into(), CLHBD_PORT);
    let status =
        c.wait("node2", "node1's heartbeats counted", |s| counter(s, "clhbd", "accepted") > 0);
    let start = |name: &str| counter(&status, "clhbd", name);

    // (a) Frames that look like node1's but are sealed with another key.
    let mut key = [0u8; 32];
    rand::fill(&mut key);
    let epoch = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_nanos() as u64;
    let mut forger = Sender::new(
        ClusterKey::from_bytes(&key).expect("key"),
        "cluster1",
        "node1",
        epoch + 1_000_000_000_000,
    );
    let beat =
        HeartbeatMsg { config_version: 1, config_checksum: "forged".into(), taking_over: vec![] };
    let forged: Vec<Vec<u8>> =
        (0..20).map(|_| forger.seal(Kind::Heartbeat, &beat).expect("seal")).collect();
    c.send_udp("ext", target, &forged);
    let bad_mac = start("bad_mac");
    c.wait("node2", "20 forged frames counted as bad_mac", |s| {
        counter(s, "clhbd", "bad_mac") >= bad_mac + 20
    });
    c.wait_log("node2", "clhbd", 0, "different cluster key, or a forged frame");

    // (b) Garbage and truncated bytes.
    let mut garbage: Vec<Vec<u8>> = (0..10)
        .map(|i| {
            let mut bytes = vec![0u8; cl_wire::MIN_FRAME + i * 30];
            rand::fill(bytes.as_mut_slice());
            bytes[0] = b'X'; // never the LH magic
            bytes
        })
        .collect();
    let frame = forged.first().expect("a forged frame").clone();
    let truncated: Vec<Vec<u8>> =
        [0usize, 1, 2, 5, 20, frame.len() - 1].iter().map(|&n| frame[..n].to_vec()).collect();
    garbage.extend(truncated.iter().cloned());
    c.send_udp("ext", target, &garbage);
    let (bad_magic, short) = (start("bad_magic"), start("truncated"));
    c.wait("node2", "garbage counted as bad_magic and truncated", |s| {
        counter(s, "clhbd", "bad_magic") >= bad_magic + 10
            && counter(s, "clhbd", "truncated") >= short + truncated.len() as u64
    });

    // (c) Replays of node1's real heartbeats, captured as they arrive at node2.
    let filter = format!(
        "udp and src host {} and dst port {CLHBD_PORT}",
        c.lab.addr("node1", 0).expect("addr")
    );
    let captured = c.capture_udp("node2", "eth0", &filter, 5);
    assert_eq!(captured.len(), 5, "captured 5 heartbeats of node1");
    for frame in &captured {
        assert_eq!(frame.get(..2), Some(&b"LH"[..]), "a linuxha frame: {frame:?}");
    }
    let replayed = c.status("node2").1;
    let replays: Vec<Vec<u8>> = captured.iter().cycle().take(15).cloned().collect();
    c.send_udp("ext", target, &replays);
    let before_replay = counter(&replayed, "clhbd", "replayed");
    let status = c.wait("node2", "15 replays counted as replayed", |s| {
        counter(s, "clhbd", "replayed") >= before_replay + 15
    });
    assert!(all_up(&status), "{status:#?}");

    // Throughout: node1 up on node2, nothing restarted, nobody marked down.
    c.hold(std::time::Duration::from_secs(1), "both up", |_, s| all_up(s));
    assert_eq!(node_state(&c.status("node2").1, "node1"), Some(NodeState::Up));
    assert_eq!([c.daemon_pids("node1"), c.daemon_pids("node2")], before, "no daemon restarted");
    let log = c.log_since("node2", "cldaemon", log2);
    assert!(!log.contains("node node1 is down"), "node2 never marked node1 down:\n{log}");
}
