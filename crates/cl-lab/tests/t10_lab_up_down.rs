//! Lab end-to-end: build a 2-node, 2-network lab, check connectivity and every fault, take it
//! down and check that nothing is left.

mod common;

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use cl_lab::{Direction, Lab, LabSpec};
use common::{eventually, link_show, ping_ok, snmp, wait_timeout, Footprint};

#[test]
fn t10_lab_up_faults_down() -> Result<()> {
    if common::skip("t10_lab_up_faults_down") {
        return Ok(());
    }
    let mut lab = Lab::up(LabSpec::default())?;
    let footprint = Footprint::of(&lab);
    ensure!(lab.nodes() == ["node1", "node2"]);
    ensure!(footprint.state_file.exists(), "state file missing");

    // Connectivity on both networks and to ext.
    for net in 0..2 {
        ensure!(ping_ok(&lab, "node1", lab.addr("node2", net)?), "node1 -> node2 net{net}");
    }
    ensure!(ping_ok(&lab, "node1", lab.addr("ext", 0)?), "node1 -> ext");
    ensure!(ping_ok(&lab, "ext", lab.addr("node2", 0)?), "ext -> node2");

    // exec really runs inside the node: env, cwd, cgroup, netns, and a private, persistent
    // mount namespace.
    let out = lab.run(
        "node1",
        &["sh", "-c", "echo $LINUXHA_NODE $LINUXHA_ROOT; pwd; cat /proc/self/cgroup"],
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    let root = lab.root("node1")?.display().to_string();
    ensure!(text.contains(&format!("node1 {root}")), "env: {text}");
    ensure!(text.lines().nth(1) == Some(root.as_str()), "cwd: {text}");
    ensure!(text.contains(&format!("linuxha-lab-{}-node1", lab.name())), "cgroup: {text}");
    for sub in ["etc/cluster", "var/log/cluster", "run/cluster"] {
        ensure!(lab.root("node1")?.join(sub).is_dir(), "{sub} missing");
    }
    let mnt = lab.root("node1")?.join("mnt");
    std::fs::create_dir(&mnt)?;
    let mnt_s = mnt.display().to_string();
    let out = lab.run("node1", &["mount", "-t", "tmpfs", "labtest", &mnt_s])?;
    ensure!(out.status.success(), "mount: {}", String::from_utf8_lossy(&out.stderr));
    let on_node = |lab: &Lab, host: &str| -> Result<bool> {
        let out = lab.run(host, &["cat", "/proc/self/mountinfo"])?;
        Ok(String::from_utf8_lossy(&out.stdout).contains(&mnt_s))
    };
    ensure!(on_node(&lab, "node1")?, "mount did not persist to the next exec");
    ensure!(!on_node(&lab, "node2")?, "mount visible on node2");
    ensure!(
        !std::fs::read_to_string("/proc/self/mountinfo")?.contains(&mnt_s),
        "mount leaked to host"
    );

    // Silent isolation: no ping, carrier stays up.
    lab.cut("node1", None)?;
    for net in 0..2 {
        ensure!(
            !ping_ok(&lab, "node2", lab.addr("node1", net)?),
            "node2 -> node1 net{net} passed a cut"
        );
    }
    let link = link_show(lab.netns("node1")?, "eth0");
    ensure!(link.contains("state UP") && !link.contains("NO-CARRIER"), "carrier changed: {link}");
    lab.heal("node1")?;
    ensure!(lab.faults().is_empty());
    for net in 0..2 {
        ensure!(ping_ok(&lab, "node2", lab.addr("node1", net)?), "no ping after heal net{net}");
    }

    // One-way: with traffic *to* node1 dropped, node2's echo requests never arrive; with traffic
    // *from* node1 dropped they arrive (after ARP, which must still pass) but replies are lost.
    let node1 = lab.addr("node1", 0)?;
    lab.cut_oneway("node1", Some(0), Direction::ToNode)?;
    let before = snmp(&lab, "node1", "Icmp", "InEchos");
    ensure!(!ping_ok(&lab, "node2", node1), "ping passed a to-node cut");
    ensure!(
        snmp(&lab, "node1", "Icmp", "InEchos") == before,
        "echo reached node1 through to-node cut"
    );
    ensure!(ping_ok(&lab, "node2", lab.addr("node1", 1)?), "net1 affected by a net0 cut");
    lab.heal("node1")?;
    lab.cut_oneway("node1", Some(0), Direction::FromNode)?;
    for host in ["node1", "node2"] {
        lab.run(host, &["ip", "neigh", "flush", "dev", "eth0"])?;
    }
    let before = snmp(&lab, "node1", "Icmp", "InEchos");
    ensure!(!ping_ok(&lab, "node2", node1), "ping passed a from-node cut");
    ensure!(
        snmp(&lab, "node1", "Icmp", "InEchos") > before,
        "echo did not reach node1 (ARP lost?)"
    );
    lab.heal_all()?;
    ensure!(ping_ok(&lab, "node2", node1), "no ping after heal_all");

    // Loss: 100% drops everything, 0 removes it.
    lab.loss("node2", Some(0), 100)?;
    ensure!(!ping_ok(&lab, "node1", lab.addr("node2", 0)?), "ping passed 100% loss");
    lab.loss("node2", Some(0), 0)?;
    ensure!(lab.faults().is_empty());
    ensure!(ping_ok(&lab, "node1", lab.addr("node2", 0)?), "no ping after loss 0");

    // Freeze, thaw, kill a process started on the node.
    let mut sleeper = lab.exec("node1", &["sleep", "1000"])?.spawn()?;
    let pid = sleeper.id();
    // In the cgroup as soon as spawn() returns: it joined before exec.
    ensure!(lab.pids("node1")?.contains(&pid), "sleep not in the node's cgroup");
    ensure!(
        eventually(Duration::from_secs(10), || std::fs::read_to_string(format!(
            "/proc/{pid}/comm"
        ))
        .is_ok_and(|c| c.trim() == "sleep")),
        "pid is not the program's"
    );
    lab.freeze("node1")?;
    ensure!(lab.is_frozen("node1")?);
    let events = std::fs::read_to_string(lab.cgroup("node1")?.join("cgroup.events"))?;
    ensure!(events.contains("frozen 1"), "cgroup.events: {events}");
    ensure!(lab.exec("node1", &["true"]).is_err(), "exec on a frozen node should fail");
    lab.thaw("node1")?;
    ensure!(!lab.is_frozen("node1")?);
    lab.kill("node1")?;
    let status =
        wait_timeout(&mut sleeper, Duration::from_secs(30)).context("sleep survived kill")?;
    ensure!(std::os::unix::process::ExitStatusExt::signal(&status) == Some(9), "sleep: {status}");
    ensure!(lab.pids("node1")?.is_empty());
    ensure!(on_node(&lab, "node1")?, "kill lost the node's mounts (holder died?)");

    // Link down: the node sees NO-CARRIER, pings fail; link up restores.
    lab.link_down("node2", 1)?;
    let link = link_show(lab.netns("node2")?, "eth1");
    ensure!(link.contains("NO-CARRIER"), "no NO-CARRIER: {link}");
    ensure!(!ping_ok(&lab, "node1", lab.addr("node2", 1)?), "ping over a down link");
    lab.heal("node2")?;
    ensure!(!link_show(lab.netns("node2")?, "eth1").contains("NO-CARRIER"));
    ensure!(ping_ok(&lab, "node1", lab.addr("node2", 1)?), "no ping after link up");

    // Leave some state around for teardown to handle: a fault, a frozen node with a process.
    let mut orphan = lab.exec("node2", &["sleep", "1000"])?.spawn()?;
    lab.cut("node2", None)?;
    lab.freeze("node2")?;
    lab.down().context("down")?;
    ensure!(wait_timeout(&mut orphan, Duration::from_secs(30)).is_some(), "process survived down");
    footprint.assert_gone();
    Ok(())
}

#[test]
fn t10_single_network_lab() -> Result<()> {
    if common::skip("t10_single_network_lab") {
        return Ok(());
    }
    let lab = Lab::up(LabSpec { nodes: 3, networks: 1, name: None })?;
    let footprint = Footprint::of(&lab);
    ensure!(lab.addr("node3", 1).is_err());
    ensure!(lab.addr("nodeX", 0).is_err());
    ensure!(lab.exec("node9", &["true"]).is_err());
    ensure!(ping_ok(&lab, "node3", lab.addr("node1", 0)?));
    ensure!(ping_ok(&lab, "ext", lab.addr("node3", 0)?));
    ensure!(Lab::list()?.iter().any(|l| l.name == lab.name() && !l.stale));
    lab.down()?;
    footprint.assert_gone();
    Ok(())
}
