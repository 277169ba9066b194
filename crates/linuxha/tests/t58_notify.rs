//! Event notifications on a live lab cluster: `<notify>` in clconf.xml runs a program on each
//! cluster event. After node1, which runs apache, is cut off, node2's notifier is told node1
//! is down, then apache starting, started and moved from node1 to node2, in that order, with
//! the documented variables and JSON document. A second cluster whose notifier sleeps 10 s on
//! the `node_down` event fails over as fast as the first: the engine never waits for it.

mod cluster;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cluster::{app_running_on, Cluster, APP};

/// Where the notifiers live under each node root (`/etc/cluster/notify/…` in clconf.xml).
const NOTIFY_DIR: &str = "notify";

/// One recorded event: the variables, space separated, one line per event.
const RECORD: &str = r#"#!/bin/sh
echo "$LINUXHA_SEQ $LINUXHA_EVENT $LINUXHA_CLUSTER $LINUXHA_NODE ${LINUXHA_SUBJECT_NODE:--} ${LINUXHA_APPLICATION:--} ${LINUXHA_FROM:--} ${LINUXHA_TO:--} $LINUXHA_DROPPED $LINUXHA_TIME" >> "$(dirname "$0")/events.log"
cat >> "$(dirname "$0")/events.json"
"#;

/// A notifier that takes 10 s over the failover's first event (within its 30 s timeout).
const SLOW: &str = r#"#!/bin/sh
echo "$LINUXHA_EVENT begins $(date +%s.%N)" >> "$(dirname "$0")/slow.log"
sleep 10
echo "$LINUXHA_EVENT ends $(date +%s.%N)" >> "$(dirname "$0")/slow.log"
"#;

/// Install `script` as `etc/notify/name` and list it in clconf.xml with `attrs`.
fn add_notifier(etc: &Path, name: &str, script: &str, attrs: &str) {
    use std::os::unix::fs::PermissionsExt;
    let dir = etc.join(NOTIFY_DIR);
    std::fs::create_dir_all(&dir).expect("notify dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    let path = dir.join(name);
    std::fs::write(&path, script).expect("write notifier");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let clconf = etc.join("clconf.xml");
    let xml = std::fs::read_to_string(&clconf).expect("clconf.xml");
    assert!(xml.contains("</global>"), "the example has a <global>");
    let entry = format!(r#"  <notify program="/etc/cluster/{NOTIFY_DIR}/{name}" {attrs}/>"#);
    let xml = xml.replacen("</global>", &format!("{entry}\n  </global>"), 1);
    std::fs::write(&clconf, xml).expect("write clconf.xml");
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(String::from).collect()
}

/// apache runs on node1 and is served from there.
fn apache_on_node1(c: &Cluster) {
    c.form();
    c.wait_app_everywhere("apache running on node1", |s| app_running_on(s, "node1"));
    c.wait_served_by("node1", Duration::from_secs(10));
    c.let_announcements_end();
}

/// Cut node1 and measure until node2 serves apache's address.
fn fail_over(c: &mut Cluster) -> Duration {
    let t = Instant::now();
    c.lab.cut("node1", None).expect("cut node1");
    c.wait_served_by("node2", Duration::from_secs(30));
    t.elapsed()
}

/// Wait (up to `timeout`) until `path` has a line matching `pred`; every line.
fn wait_line(path: &Path, timeout: Duration, pred: impl Fn(&str) -> bool) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let got = lines(path);
        if got.iter().any(|l| pred(l)) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{}: no such line within {timeout:?}: {got:#?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_failover_is_told_in_order_and_a_slow_notifier_does_not_delay_it() {
    // 1. A notifier recording every event on both nodes.
    let first = {
        let Some(mut c) = Cluster::with_apache("notify_record", |_, etc| {
            add_notifier(etc, "record.sh", RECORD, r#"timeout="5s" events="all""#)
        }) else {
            println!("SKIPPED t58_notify: no lab on this machine");
            return;
        };
        apache_on_node1(&c);
        let log: PathBuf = c.etc("node2").join(NOTIFY_DIR).join("events.log");
        let before = lines(&log).len();
        let took = fail_over(&mut c);
        let got = wait_line(&log, Duration::from_secs(15), |l| l.contains(" app_moved "));
        let after: Vec<Vec<&str>> = got[before..].iter().map(|l| l.split(' ').collect()).collect();
        let kinds: Vec<&str> = after.iter().map(|f| f[1]).collect();
        let at = |kind: &str| {
            kinds.iter().position(|k| *k == kind).unwrap_or_else(|| panic!("no {kind}: {got:#?}"))
        };
        assert!(
            at("node_down") < at("app_starting")
                && at("app_starting") < at("app_started")
                && at("app_started") < at("app_moved"),
            "node_down, then apache starting, started and moved: {got:#?}"
        );
        // Sequence numbers count the events delivered, without a gap.
        let seqs: Vec<u64> = got
            .iter()
            .map(|l| l.split(' ').next().and_then(|s| s.parse().ok()).expect("seq"))
            .collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "{got:#?}");
        let field = |kind: &str| after[at(kind)].clone();
        // seq event cluster node subject application from to dropped time
        let down = field("node_down");
        assert_eq!(down[2..6], ["cluster1", "node2", "node1", "-"], "{got:#?}");
        let starting = field("app_starting");
        assert_eq!(starting[2..6], ["cluster1", "node2", "-", APP], "{got:#?}");
        let moved = field("app_moved");
        assert_eq!(moved[2..9], ["cluster1", "node2", "node1", APP, "node1", "node2", "0"]);
        assert!(
            moved[9].ends_with('Z') && moved[9].contains('T'),
            "LINUXHA_TIME is RFC 3339 UTC: {}",
            moved[9]
        );
        // The same events as JSON documents on stdin.
        let json = c.etc("node2").join(NOTIFY_DIR).join("events.json");
        let docs: Vec<serde_json::Value> = lines(&json)
            .iter()
            .map(|l| serde_json::from_str(l).expect("one JSON document per event"))
            .collect();
        let doc = docs.iter().find(|d| d["event"] == "app_moved").expect("app_moved document");
        assert_eq!(doc["application"], APP);
        assert_eq!(doc["details"]["from"], "node1");
        assert_eq!(doc["details"]["to"], "node2");
        assert_eq!(doc["node"], "node2");
        assert_eq!(doc["cluster"], "cluster1");
        let (_, status) = c.status("node2");
        let counters = &status.counters["notify"];
        assert_eq!(counters["notify_failed"], 0, "{status:#?}");
        assert!(counters["notify_sent"].as_u64() >= Some(4), "{status:#?}");
        eprintln!("with a recording notifier: served by node2 {took:?} after the cut; {got:#?}");
        took
    };

    // 2. The same failover with a notifier that sleeps 10 s on node_down.
    let Some(mut c) = Cluster::with_apache("notify_slow", |_, etc| {
        add_notifier(etc, "slow.sh", SLOW, r#"timeout="30s" events="node_down""#)
    }) else {
        return;
    };
    apache_on_node1(&c);
    let took = fail_over(&mut c);
    let slow = c.etc("node2").join(NOTIFY_DIR).join("slow.log");
    let got = lines(&slow);
    assert!(
        got.iter().any(|l| l.starts_with("node_down begins"))
            && !got.iter().any(|l| l.contains("ends")),
        "the slow notifier was still running when node2 served apache: {got:#?}"
    );
    assert!(
        took < first + Duration::from_secs(3) && took < Duration::from_secs(10),
        "failover with a 10 s notifier took {took:?}, {first:?} without it"
    );
    // It ends, and counts as sent.
    wait_line(&slow, Duration::from_secs(20), |l| l.starts_with("node_down ends"));
    c.wait("node2", "the slow notification counted", |s| {
        s.counters["notify"]["notify_sent"].as_u64() == Some(1)
    });
    eprintln!("failover: {first:?} with a recording notifier, {took:?} with a 10 s one");
}
