//! The delivery of notifications with small shell notifiers in a temporary directory.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use cl_config::notify::{EventFilter, Notifier};
use cl_core::notice::{ClusterEvent, EventKind};

use super::*;

/// A shell notifier `name` in `dir` running `body`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

fn notifier(program: PathBuf, timeout: Duration) -> Notifier {
    Notifier { program, timeout, events: EventFilter::All }
}

fn as_is() -> Resolve {
    Arc::new(|p: &Path| Ok(p.to_path_buf()))
}

fn start(notifiers: Vec<Notifier>, capacity: usize) -> Notifications {
    Notifications::start("cluster1".into(), "node2".into(), notifiers, as_is(), capacity)
}

fn down() -> ClusterEvent {
    ClusterEvent::NodeDown { node: "node1".into(), reason: "silent".into(), take_over: true }
}

fn started(app: &str) -> ClusterEvent {
    ClusterEvent::AppStarted { app: app.into() }
}

/// Wait (up to 10 s) until `done` holds.
async fn until(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(String::from).collect()
}

#[tokio::test]
async fn events_reach_every_notifier_in_order_with_their_variables_and_document() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("log");
    let json = dir.path().join("json");
    let body = format!(
        "echo \"$LINUXHA_SEQ $LINUXHA_EVENT $LINUXHA_CLUSTER $LINUXHA_NODE ${{LINUXHA_SUBJECT_NODE:--}} ${{LINUXHA_APPLICATION:--}} $LINUXHA_DROPPED $LINUXHA_TIME\" >> {}\ncat >> {}",
        log.display(),
        json.display()
    );
    let program = script(dir.path(), "n.sh", &body);
    let mut n = start(vec![notifier(program, Duration::from_secs(5))], QUEUE);
    n.notify(down());
    n.notify(ClusterEvent::AppStarting { app: "web".into() });
    n.notify(started("web"));
    // Counted as sent once each run ended: its JSON is written by then too.
    until(|| n.stats().sent.load(Ordering::Relaxed) == 3).await;
    let got = lines(&log);
    let fields: Vec<Vec<&str>> = got.iter().map(|l| l.split(' ').collect()).collect();
    assert_eq!(fields[0][..7], ["1", "node_down", "cluster1", "node2", "node1", "-", "0"]);
    assert_eq!(fields[1][..7], ["2", "app_starting", "cluster1", "node2", "-", "web", "0"]);
    assert_eq!(fields[2][..7], ["3", "app_started", "cluster1", "node2", "-", "web", "0"]);
    assert!(fields[0][7].ends_with('Z') && fields[0][7].contains('T'), "{}", fields[0][7]);
    let docs: Vec<serde_json::Value> =
        lines(&json).iter().map(|l| serde_json::from_str(l).expect("one JSON per line")).collect();
    assert_eq!(docs[0]["event"], "node_down");
    assert_eq!(docs[0]["seq"], 1);
    assert_eq!(docs[0]["subject_node"], "node1");
    assert_eq!(docs[0]["details"]["take_over"], true);
    assert_eq!(docs[2]["application"], "web");
    assert_eq!(n.counters()["notify_failed"], 0);
}

#[tokio::test]
async fn a_notifier_only_gets_the_events_it_asked_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("log");
    let program = script(dir.path(), "n.sh", &format!("echo $LINUXHA_EVENT >> {}", log.display()));
    let mut only = notifier(program, Duration::from_secs(5));
    only.events = EventFilter::Only([EventKind::AppStarted].into());
    let mut n = start(vec![only], QUEUE);
    n.notify(down());
    n.notify(started("web"));
    until(|| n.stats().sent.load(Ordering::Relaxed) == 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(lines(&log), vec!["app_started"]);
}

#[tokio::test]
async fn a_notifier_past_its_timeout_is_killed_with_its_children_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pids = dir.path().join("pids");
    // The shell and a child in its process group.
    let body = format!("sleep 30 & echo $! >> {p}\necho $$ >> {p}\nwait", p = pids.display());
    let program = script(dir.path(), "slow.sh", &body);
    let mut n = start(vec![notifier(program, Duration::from_secs(1))], QUEUE);
    let sent_at = Instant::now();
    n.notify(down());
    assert!(sent_at.elapsed() < Duration::from_millis(100), "notify() waited");
    until(|| n.stats().failed.load(Ordering::Relaxed) == 1).await;
    assert!(sent_at.elapsed() < Duration::from_secs(5), "killed late: {:?}", sent_at.elapsed());
    let pids = lines(&pids);
    assert_eq!(pids.len(), 2);
    until(|| pids.iter().all(|p| !Path::new(&format!("/proc/{p}")).exists())).await;
    assert_eq!(n.counters()["notify_sent"], 0);
}

#[tokio::test]
async fn a_failing_or_untrusted_notifier_is_counted_and_the_next_one_still_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("log");
    let failing = script(dir.path(), "fail.sh", "echo trouble >&2\nexit 3");
    let good = script(dir.path(), "good.sh", &format!("echo $LINUXHA_SEQ >> {}", log.display()));
    let untrusted = dir.path().join("untrusted.sh");
    let refuse = untrusted.clone();
    let resolve: Resolve = Arc::new(move |p: &Path| {
        if p == refuse {
            Err("writable by others".to_string())
        } else {
            Ok(p.to_path_buf())
        }
    });
    let notifiers = vec![
        notifier(failing, Duration::from_secs(5)),
        notifier(untrusted, Duration::from_secs(5)),
        notifier(good, Duration::from_secs(5)),
    ];
    let mut n = Notifications::start("c".into(), "node2".into(), notifiers, resolve, QUEUE);
    n.notify(down());
    n.notify(down());
    until(|| n.stats().sent.load(Ordering::Relaxed) == 2).await;
    assert_eq!(n.counters()["notify_failed"], 4);
    assert_eq!(lines(&log), vec!["1", "2"]);
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_and_the_next_event_tells_how_many() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("log");
    let gate = dir.path().join("gate");
    let running = dir.path().join("running");
    // The first event waits until the gate file exists, so the queue fills behind it.
    let body = format!(
        "touch {s}\nwhile [ ! -e {g} ]; do sleep 0.02; done\necho \"$LINUXHA_SEQ $LINUXHA_DROPPED\" >> {l}",
        s = running.display(),
        g = gate.display(),
        l = log.display()
    );
    let program = script(dir.path(), "n.sh", &body);
    let mut n = start(vec![notifier(program, Duration::from_secs(10))], 2);
    n.notify(started("e1"));
    // Once the task took the first one out (its notifier runs), two fit, the rest are dropped.
    until(|| running.exists()).await;
    let sent_at = Instant::now();
    for i in 2..=10 {
        n.notify(started(&format!("e{i}")));
    }
    assert!(sent_at.elapsed() < Duration::from_secs(2), "notify() waited");
    assert_eq!(n.counters()["notify_dropped"], 7);
    std::fs::write(&gate, b"").expect("open the gate");
    until(|| lines(&log).len() == 3).await;
    // The drops happened while event 1 was being delivered: event 2 tells them.
    assert_eq!(lines(&log), vec!["1 0", "2 7", "3 0"]);
    n.notify(started("e11"));
    until(|| lines(&log).len() == 4).await;
    assert_eq!(lines(&log)[3], "4 0");
}
