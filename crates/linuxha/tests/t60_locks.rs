//! Cluster-wide locks in the lab: cllock on one node holds a name against the other node (and
//! not other names); clswitchapp and clhaltapp started at once on the two nodes: exactly one
//! runs; a killed holder's locks are free once their lease has run out; a frozen holder that
//! thaws finds its lock given away and its command stopped.

mod cluster;
use cluster::{ApplicationState, NodeState};

use std::path::{Path, PathBuf};
use std::process::{Child, Output};
use std::time::{Duration, Instant};

use cluster::{app_entry, text, Cluster, CLUSTER, WAIT};

/// A file the holder's command creates once it runs (so the lock is held), under `node`'s root.
fn marker(c: &Cluster, node: &str, name: &str) -> PathBuf {
    let dir = c.lab.root(node).expect("node root").join("tmp");
    std::fs::create_dir_all(&dir).expect("tmp dir");
    dir.join(name)
}

fn wait_file(c: &Cluster, path: &Path, holder: &mut Child) {
    wait_file_for(c, path, holder, WAIT);
}

fn wait_file_for(c: &Cluster, path: &Path, holder: &mut Child, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        if let Ok(Some(status)) = holder.try_wait() {
            panic!("the holder ended ({status}) before running its command\n{}", c.diagnostics());
        }
        assert!(Instant::now() < deadline, "{} not created\n{}", path.display(), c.diagnostics());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The one line a refused cllock prints: held by `by` (a prefix) since a timestamp.
fn assert_held_by(out: &Output, name: &str, by: &str) {
    assert_eq!(out.status.code(), Some(1), "refused: {}", text(out));
    let err = stderr(out);
    let line = err.trim();
    let prefix = format!("cllock: lock {name} is held by {by}");
    assert!(line.starts_with(&prefix), "expected `{prefix}…`: {}", text(out));
    assert!(line.contains(" since 20") && line.ends_with('Z'), "with the time: {line}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
}

#[test]
fn cllock_holds_a_name_against_the_other_node() {
    let Some(c) = Cluster::formed("cllock_holds_a_name_against_the_other_node") else { return };
    let held = marker(&c, "node1", "held");
    let script = format!("touch {}; sleep 3", held.display());
    let mut holder = c.spawn(
        "node1",
        &["cllock", "--name", "backup", "--timeout", "5", "--", "sh", "-c", &script],
    );
    wait_file(&c, &held, &mut holder);

    // node2, not waiting: refused, naming node1's holder.
    let out = c.run("node2", &["cllock", "--name", "backup", "--timeout", "0", "--", "true"]);
    assert_held_by(&out, "backup", "cllock sh -c touch");
    assert!(stderr(&out).contains(" on node1 (pid "), "{}", text(&out));
    // node1 itself too.
    let out = c.run("node1", &["cllock", "--name", "backup", "--timeout", "0", "--", "true"]);
    assert_held_by(&out, "backup", "cllock sh -c touch");
    // Another name is independent, on either node.
    for node in ["node1", "node2"] {
        let out = c.run(node, &["cllock", "--name", "other", "--timeout", "0", "--", "true"]);
        assert!(out.status.success(), "{node}: another name: {}", text(&out));
    }
    // Waiting on node2: granted once node1's command ends; the command's exit code is cllock's.
    let started = Instant::now();
    let out = c.run(
        "node2",
        &["cllock", "--name", "backup", "--timeout", "20", "--", "sh", "-c", "exit 7"],
    );
    assert_eq!(out.status.code(), Some(7), "node2 waited, then ran: {}", text(&out));
    assert!(started.elapsed() >= Duration::from_millis(500), "it had to wait");
    let first = holder.wait_with_output().expect("holder ends");
    assert!(first.status.success(), "node1's cllock: {}", text(&first));
    for node in ["node1", "node2"] {
        let log = c.log(node, "cllockd");
        assert!(log.contains("granted backup to cllock"), "{node}: cllockd.log:\n{log}");
    }

    // Usage and state errors are one clear sentence each.
    let out = c.run("node1", &["cllock", "--name", "a b", "--", "true"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = c.run("node2", &["cllock", "--name", "x", "--", "/nonexistent/command"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out));
    c.must("node1", &["clhalt"]);
    c.wait_pids("node2", "cllockd", "stopped by clhalt", |p| p.is_empty());
    let out = c.run("node2", &["cllock", "--name", "backup", "--", "true"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(
        stderr(&out).trim(),
        format!("cllock: the cluster is not formed on this node (cllockd-{CLUSTER} is not running); true was not run")
    );
}

#[test]
fn switch_and_halt_of_one_application_at_once_on_both_nodes() {
    let Some(c) = Cluster::apache_on_node1("switch_and_halt_of_one_application_at_once") else {
        return;
    };
    let mut switch = c.spawn("node1", &["clswitchapp", "--application", "apache"]);
    let mut halt = c.spawn("node2", &["clhaltapp", "--application", "apache"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while switch.try_wait().expect("wait").is_none() || halt.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "not done in 60 s\n{}", c.diagnostics());
        std::thread::sleep(Duration::from_millis(50));
    }
    let switch = switch.wait_with_output().expect("clswitchapp");
    let halt = halt.wait_with_output().expect("clhaltapp");
    let report =
        format!("clswitchapp on node1: {}\nclhaltapp on node2: {}", text(&switch), text(&halt));
    let (loser, loser_name, winner_name, winner_node) =
        match (switch.status.success(), halt.status.success()) {
            (true, false) => (&halt, "clhaltapp", "clswitchapp", "node1"),
            (false, true) => (&switch, "clswitchapp", "clhaltapp", "node2"),
            _ => panic!("exactly one must succeed\n{report}\n{}", c.diagnostics()),
        };
    println!("{winner_name} won; {loser_name}: {}", stderr(loser).trim());
    assert_eq!(loser.status.code(), Some(1), "{report}");
    let line = stderr(loser);
    let expected = format!(
        "{loser_name}: application apache is being changed by {winner_name} on {winner_node} (pid "
    );
    assert!(line.trim().starts_with(&expected), "expected `{expected}…`\n{report}");
    assert!(line.contains(" since 20"), "{report}");
    // And the winner's change happened.
    let status = c.wait("node1", "apache where the winner sent it", |s| {
        let Some(a) = app_entry(s, "apache") else { return false };
        if winner_name == "clswitchapp" {
            a.state == ApplicationState::Running && a.node.as_deref() == Some("node2")
        } else {
            a.node.is_none()
        }
    });
    assert!(app_entry(&status, "apache").is_some(), "{status:#?}");
    // The lock went with the winner: the next change is accepted.
    let next = if winner_name == "clswitchapp" { "clhaltapp" } else { "clstartapp" };
    c.must("node2", &[next, "--application", "apache"]);
}

#[test]
fn a_killed_holders_lock_is_free_after_its_lease() {
    let Some(mut c) = Cluster::formed("a_killed_holders_lock_is_free_after_its_lease") else {
        return;
    };
    let held = marker(&c, "node1", "held");
    let script = format!("touch {}; sleep 600", held.display());
    let mut holder =
        c.spawn("node1", &["cllock", "--name", "job", "--timeout", "0", "--", "sh", "-c", &script]);
    wait_file(&c, &held, &mut holder);
    let out = c.run("node2", &["cllock", "--name", "job", "--timeout", "0", "--", "true"]);
    assert_held_by(&out, "job", "cllock sh -c touch");
    // Let node1 renew once, so the lease is measured from a renewal.
    std::thread::sleep(Duration::from_secs(4));

    c.lab.kill("node1").expect("kill node1");
    let killed = Instant::now();
    let _ = holder.wait();
    c.wait("node2", "node1 down", |s| cluster::node_state(s, "node1") == Some(NodeState::Down));
    // The reservation outlives the holder's node for a while: node2 still refuses.
    let out = c.run("node2", &["cllock", "--name", "job", "--timeout", "0", "--", "true"]);
    assert_held_by(&out, "job", "cllock sh -c touch");
    assert!(killed.elapsed() < Duration::from_secs(10), "checked within the lease");

    // Then it is free: granted alone once the lease has run out.
    let out = c.run("node2", &["cllock", "--name", "job", "--timeout", "40", "--", "true"]);
    let after = killed.elapsed();
    assert!(out.status.success(), "after {after:?}: {}\n{}", text(&out), c.diagnostics());
    assert!(after >= Duration::from_secs(5), "not before the lease ran out: {after:?}");
    assert!(after <= Duration::from_secs(25), "soon after the lease (15 s) ran out: {after:?}");
    println!("node2 took job {after:?} after node1 was killed");
    let log = c.log("node2", "cllockd");
    assert!(
        log.contains("granted job to cllock true on node2") && log.contains("without node1"),
        "{log}"
    );
}

#[test]
fn a_frozen_holder_loses_its_lock_when_it_thaws() {
    let Some(mut c) = Cluster::formed("a_frozen_holder_loses_its_lock_when_it_thaws") else {
        return;
    };
    let held1 = marker(&c, "node1", "held");
    let script1 = format!("touch {}; sleep 600", held1.display());
    let mut holder1 = c
        .spawn("node1", &["cllock", "--name", "job", "--timeout", "0", "--", "sh", "-c", &script1]);
    wait_file(&c, &held1, &mut holder1);
    std::thread::sleep(Duration::from_secs(4));

    c.lab.freeze("node1").expect("freeze node1");
    c.wait("node2", "node1 down", |s| cluster::node_state(s, "node1") == Some(NodeState::Down));
    // node2 takes the lock alone once node1's lease has run out, and keeps it for a while.
    let held2 = marker(&c, "node2", "held");
    let script2 = format!("touch {}; sleep 30", held2.display());
    let mut holder2 = c.spawn(
        "node2",
        &["cllock", "--name", "job", "--timeout", "40", "--", "sh", "-c", &script2],
    );
    wait_file_for(&c, &held2, &mut holder2, Duration::from_secs(40));

    // node1 thaws: its renewal meets node2's grant, which wins; node1's cllock stops its command.
    c.lab.thaw("node1").expect("thaw node1");
    let deadline = Instant::now() + Duration::from_secs(15);
    while holder1.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "node1's cllock still runs\n{}", c.diagnostics());
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = holder1.wait_with_output().expect("node1's cllock");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = stderr(&out);
    assert!(
        err.starts_with("cllock: lock job was lost (node2 gave it to cllock sh -c touch")
            && err.trim().ends_with("was stopped"),
        "{}",
        text(&out)
    );
    println!("node1: {}", err.trim());
    // node2 still holds it; node1 sees that.
    assert!(holder2.try_wait().expect("wait").is_none(), "node2's cllock still holds the lock");
    let out = c.run("node1", &["cllock", "--name", "job", "--timeout", "0", "--", "true"]);
    assert_held_by(&out, "job", "cllock sh -c touch");
    assert!(stderr(&out).contains(" on node2 (pid "), "{}", text(&out));
}
