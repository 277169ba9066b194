//! Replicated application data on real kernels: two QEMU guests (Debian's stock kernel,
//! DRBD 8.4 on LVM), the cluster built with the real commands (clbuildapp --vgbuild …), and the
//! issue's scenarios: no acknowledged write lost at a power-off, a replication link cut during
//! writes, a stale copy never promoted, a data split brain resolved by clsplitbrain, a local
//! disk failure (diskless or move), and clbuildapp --vgbuild refusing to overwrite data.
//!
//! Needs root. The guests run the release binary (`target/release/linuxha`, built by
//! scripts/test.sh; or LINUXHA_VMLAB_BINARY_DIR): the debug build is too slow for TCG guests.
//! One test at a time (two cores, ~350 MiB per guest).

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use cl_lab::vm::cluster::{ClusterSpec, ReplicatedCluster, APP, MOUNTPOINT, VG};

/// One VM test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn binary_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("LINUXHA_VMLAB_BINARY_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/release");
    ensure!(
        dir.join("linuxha").is_file(),
        "{} missing: run `cargo build --release -p linuxha` first (scripts/test.sh does), or set LINUXHA_VMLAB_BINARY_DIR",
        dir.join("linuxha").display()
    );
    Ok(dir)
}

fn cluster(spec: ClusterSpec) -> Result<ReplicatedCluster> {
    // Root, the tools, cgroup v2: a machine that cannot run labs fails here, loudly.
    cl_lab::check_supported()?;
    ReplicatedCluster::up(&binary_dir()?, spec)
}

fn step(what: &str, since: Instant) {
    eprintln!("[{:6.1}s] {what}", since.elapsed().as_secs_f64());
}

/// Append records until `stop` says so; returns the acknowledged ones.
fn write_until(c: &ReplicatedCluster, first: u64, stop: impl Fn(u64) -> bool) -> Vec<u64> {
    let mut acked = Vec::new();
    let mut n = first;
    while !stop(n) {
        if c.append(n) {
            acked.push(n);
        }
        n += 1;
    }
    acked
}

/// Wait until the application answers on its VIP.
fn wait_served(c: &ReplicatedCluster, timeout: Duration) -> Result<Duration> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if c.get("/index.html").is_some() {
            return Ok(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("{APP} not served on its VIP within {timeout:?}")
}

fn missing(acked: &[u64], present: &[u64]) -> Vec<u64> {
    acked.iter().filter(|n| !present.contains(n)).copied().collect()
}

/// clbuildapp --vgbuild refuses a volume that holds data, goes ahead with --force --source,
/// and is harmless when run again; then no acknowledged write is lost when the node running
/// the application is powered off; then a stale copy is never promoted (A down, B writes,
/// B down, A alone refuses; B back: resync, normal).
#[test]
fn t70_vgbuild_power_off_and_stale_copy() -> Result<()> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t = Instant::now();
    let c = cluster(ClusterSpec { build: false, ..ClusterSpec::default() })?;
    step("lab up, configured", t);

    // node2's volume already holds a filesystem: never overwritten without the flag.
    c.run("node2", &format!("lvcreate --yes -L 64M -n www {VG} >/dev/null && mkfs.ext4 -q /dev/{VG}/www && echo precious > /tmp/x"), 60)?;
    let refused =
        c.run("node1", &format!("clbuildapp --vgbuild --yes --application {APP}"), 120)?;
    ensure!(refused.rc == 2, "vgbuild over existing data must exit 2: {refused:?}");
    ensure!(
        refused.stdout.contains("node2") && refused.stdout.contains("ext4"),
        "the refusal names the node and what the device holds: {}",
        refused.stdout
    );
    ensure!(
        c.run("node1", &format!("lvs {VG}/www"), 30)?.rc != 0,
        "nothing changed on node1 after the refusal"
    );
    step("vgbuild refused existing data", t);
    let forced = c.run(
        "node1",
        &format!("clbuildapp --vgbuild --force --source node1 --yes --application {APP}"),
        300,
    )?;
    ensure!(forced.rc == 0, "vgbuild --force --source node1: {}", forced.stdout);
    let again = c.run("node1", &format!("clbuildapp --vgbuild --yes --application {APP}"), 120)?;
    ensure!(
        again.rc == 0 && again.stdout.contains("nothing to do"),
        "a second vgbuild is harmless: {}",
        again.stdout
    );
    step("vgbuild --force --source, then again: nothing to do", t);
    let built = c.run("node1", &format!("clbuildapp --build --application {APP}"), 60)?;
    ensure!(built.rc == 0, "clbuildapp --build: {}", built.stdout);
    c.form()?;
    wait_served(&c, Duration::from_secs(30))?;
    step("formed, served on node1", t);

    // Zero acknowledged writes lost: power node1 off at a moment the writes do not know.
    let power_off_after = Duration::from_millis(1500 + (t.elapsed().as_millis() as u64 % 2000));
    let writes = Instant::now();
    let mut lab = c;
    let mut acked = Vec::new();
    let mut n = 1;
    while writes.elapsed() < power_off_after {
        if lab.append(n) {
            acked.push(n);
        }
        n += 1;
    }
    lab.lab.power_off("node1")?;
    let cut = Instant::now();
    step(&format!("node1 powered off after {} acknowledged records", acked.len()), t);
    ensure!(!acked.is_empty(), "no write was acknowledged before the power-off");
    let served = wait_served(&lab, Duration::from_secs(90))?;
    step(&format!("served by node2 {:.1}s after the power-off", served.as_secs_f64()), t);
    let present = lab.records().context("records not served")?;
    ensure!(
        missing(&acked, &present).is_empty(),
        "acknowledged records lost: {:?}",
        missing(&acked, &present)
    );
    ensure!(lab.running_on("node2")?.as_deref() == Some("node2"), "node2 runs it");
    let _ = cut;

    // B (node2) writes while A (node1) is down, then B goes down too.
    let more = write_until(&lab, n, |k| k >= n + 20);
    ensure!(!more.is_empty(), "node2 acknowledged nothing");
    acked.extend(&more);
    lab.lab.power_off("node2")?;
    step("node2 wrote more, then was powered off", t);

    // A comes back alone: its copy may be stale; it must refuse.
    lab.lab.power_on("node1")?;
    let _ = lab.run("node1", "clform", 60)?;
    std::thread::sleep(Duration::from_secs(5));
    let stat = lab.run("node1", "clstat", 30)?.stdout;
    ensure!(
        lab.running_on("node1")?.is_none(),
        "node1 must not start {APP} on a copy that may be stale:\n{stat}"
    );
    ensure!(stat.contains("not on node1"), "clstat says why node1 does not run it:\n{stat}");
    let start = lab.run("node1", &format!("clstartapp --application {APP}"), 60)?;
    ensure!(
        start.rc != 0 && start.stdout.contains("stale"),
        "clstartapp refuses and says why: {start:?}"
    );
    ensure!(
        !lab.drbd_state("node1")?.contains("ro:Primary"),
        "node1's stale copy was not promoted"
    );
    step("node1 alone refuses to start on its possibly stale copy", t);

    // B back: resync from B, then the application runs again with every record.
    lab.lab.power_on("node2")?;
    lab.wait_drbd("node1", &["ds:UpToDate/UpToDate"], Duration::from_secs(120))?;
    let served = wait_served(&lab, Duration::from_secs(120))?;
    step(&format!("node2 back: resynced, served again after {:.1}s", served.as_secs_f64()), t);
    let present = lab.records().context("records not served after the return")?;
    ensure!(
        missing(&acked, &present).is_empty(),
        "acknowledged records lost after the return of node2: {:?}",
        missing(&acked, &present)
    );
    lab.lab.down()?;
    step("done", t);
    Ok(())
}

/// The replication link is cut during writes: the application keeps running, the peer's copy
/// is outdated through the cluster, and after the heal the resync makes both copies identical.
/// Then a data split brain: detected, nothing discarded, resolved by clsplitbrain. Then the
/// local disk under the running application fails: it keeps serving, diskless.
#[test]
fn t70_link_cut_split_brain_and_disk_failure() -> Result<()> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = cluster(ClusterSpec::default())?;
    let result = link_cut_split_brain_and_disk_failure(&mut c);
    if result.is_err() {
        eprintln!("{}", c.diagnostics());
    }
    c.lab.down()?;
    result
}

fn link_cut_split_brain_and_disk_failure(c: &mut ReplicatedCluster) -> Result<()> {
    let t = Instant::now();
    wait_served(c, Duration::from_secs(30))?;
    step("cluster formed, served on node1", t);

    // Cut the private (replication) network on node2; heartbeats go on over public.
    let mut n = 1;
    let mut acked = write_until(c, n, |k| k >= 10);
    n = 10;
    c.lab.cut("node2", Some(1))?;
    let cut = Instant::now();
    let during = write_until(c, n, |_| cut.elapsed() > Duration::from_secs(15));
    n += during.len() as u64 + 100;
    ensure!(!during.is_empty(), "writes stopped while the replication link was cut");
    acked.extend(&during);
    ensure!(c.running_on("node1")?.as_deref() == Some("node1"), "still on node1");
    let node2 = c.drbd_state("node2")?;
    ensure!(node2.contains("ds:Outdated"), "node2's copy is outdated through the cluster: {node2}");
    step(&format!("link cut: {} writes acknowledged meanwhile, node2 Outdated", during.len()), t);
    c.lab.heal("node2")?;
    c.wait_drbd("node1", &["cs:Connected", "ds:UpToDate/UpToDate"], Duration::from_secs(120))?;
    step("healed: resynced", t);
    // Quiesce, then compare the copies.
    c.run("node1", "sync", 30)?;
    let (a, b) = (c.checksum("node1")?, c.checksum("node2")?);
    ensure!(a == b, "both copies identical after the resync: {a} vs {b}");
    step("checksums equal", t);

    // Data split brain: the nodes lose each other on both networks while both reach ext (the
    // documented unprotected case), both run the application and write.
    c.lab.partition("node1", "node2", None)?;
    c.wait_running_on("node2", Duration::from_secs(90))?;
    acked.extend(write_until(c, n, |k| k >= n + 5));
    c.run("node2", &format!("echo written-on-node2 > {MOUNTPOINT}/node2-only; sync"), 30)?;
    c.run("node1", &format!("echo written-on-node1 > {MOUNTPOINT}/node1-only; sync"), 30)?;
    step("partitioned: both run it and write", t);
    c.lab.heal_all()?;
    // DRBD finds the split brain; nothing is discarded automatically.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let s1 = c.drbd_state("node1")?;
        let s2 = c.drbd_state("node2")?;
        if s1.contains("StandAlone") && s2.contains("StandAlone") {
            break;
        }
        ensure!(Instant::now() < deadline, "no split brain seen: node1 {s1} / node2 {s2}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let stat = c.run("node1", "clstat", 30)?.stdout;
    ensure!(
        stat.contains("split brain") && stat.contains("clsplitbrain"),
        "alarm with the command:\n{stat}"
    );
    // At the heal each node may have yielded to the other's taking-over notice: the
    // application then runs nowhere, and neither copy may start it until the administrator
    // chooses (never both).
    // Announcements take a moment to cross: wait until both nodes tell the same.
    let deadline = Instant::now() + Duration::from_secs(60);
    let runner = loop {
        let (a, b) = (c.running_on("node1")?, c.running_on("node2")?);
        if a == b {
            break a;
        }
        ensure!(Instant::now() < deadline, "the nodes disagree where it runs: {a:?} / {b:?}");
        std::thread::sleep(Duration::from_millis(500));
    };
    step(&format!("split brain detected, {APP} runs on {runner:?}"), t);
    let keep = runner.unwrap_or_else(|| "node1".to_string());
    let out =
        c.run(&keep, &format!("clsplitbrain --application {APP} --keep {keep} --yes"), 300)?;
    ensure!(out.rc == 0, "clsplitbrain: {}", out.stdout);
    c.wait_drbd("node1", &["cs:Connected", "ds:UpToDate/UpToDate"], Duration::from_secs(120))?;
    c.wait_running_on(&keep, Duration::from_secs(90))?;
    let kept_file = if keep == "node1" { "node1-only" } else { "node2-only" };
    let files = c.run(&keep, &format!("ls {MOUNTPOINT}"), 30)?.stdout;
    ensure!(files.contains(kept_file), "the kept copy's own file is there: {files}");
    step("clsplitbrain resolved it; resynced", t);

    // The local disk under the running application fails: DRBD detaches it, the application
    // keeps serving from the peer's copy, and clstat says so.
    let on = c.running_on("node1")?.context("running")?;
    c.run(
        &on,
        &format!(
            "dmsetup suspend {VG}-www && dmsetup load {VG}-www --table \"0 $(blockdev --getsz /dev/{VG}/www) error\" && dmsetup resume {VG}-www"
        ),
        60,
    )?;
    let _ = c.run(
        &on,
        &format!("dd if=/dev/zero of={MOUNTPOINT}/poke bs=4k count=1 conv=fsync 2>&1"),
        60,
    )?;
    c.wait_drbd(&on, &["ds:Diskless"], Duration::from_secs(60))?;
    ensure!(c.append(9999), "the application still acknowledges writes, diskless");
    ensure!(c.running_on(&on)?.as_deref() == Some(on.as_str()), "it did not move (detach policy)");
    let stat = c.run(&on, "clstat", 30)?.stdout;
    ensure!(
        stat.contains("diskless") && stat.contains("clswitchapp"),
        "clstat recommends a move:\n{stat}"
    );
    step("disk failed: diskless, still served, move recommended", t);
    Ok(())
}

/// With `on_disk_failure="move"`, a failed local disk moves the application to the peer.
#[test]
fn t70_disk_failure_moves_with_the_move_policy() -> Result<()> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t = Instant::now();
    let c = cluster(ClusterSpec { on_disk_failure: "move", ..ClusterSpec::default() })?;
    wait_served(&c, Duration::from_secs(30))?;
    c.run(
        "node1",
        &format!(
            "dmsetup suspend {VG}-www && dmsetup load {VG}-www --table \"0 $(blockdev --getsz /dev/{VG}/www) error\" && dmsetup resume {VG}-www"
        ),
        60,
    )?;
    let _ = c.run(
        "node1",
        &format!("dd if=/dev/zero of={MOUNTPOINT}/poke bs=4k count=1 conv=fsync 2>&1"),
        60,
    )?;
    c.wait_running_on("node2", Duration::from_secs(120))?;
    wait_served(&c, Duration::from_secs(30))?;
    step("disk failed on node1: moved to node2", t);
    c.lab.down()?;
    Ok(())
}
