//! The VM flavour of the lab: QEMU guests with Debian's stock kernel on the lab's bridges.
//! DRBD 8.4 on LVM over the private network, the lab's faults, power control through QMP and
//! the in-guest fence agent, and cleanup (also after a panic).
//!
//! Needs root; qemu and the rest are installed by the assets step when missing. The guests
//! share the host-built `linuxha` binary: `target/debug/linuxha` beside this test, or the
//! directory in `LINUXHA_VMLAB_BINARY_DIR` (build it first: `cargo build -p linuxha`).
//! The tests run one at a time (two cores, ~350 MiB per guest).

mod common;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use cl_lab::vm::{VmLab, VmLabSpec};
use common::eventually;

/// One VM test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// The directory holding the `linuxha` binary the guests run.
fn binary_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("LINUXHA_VMLAB_BINARY_DIR") {
        return Ok(PathBuf::from(dir));
    }
    // target/debug/deps/t20_vm_lab-… → target/debug
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .context("test binary has no target directory")?
        .to_path_buf();
    ensure!(
        dir.join("linuxha").is_file(),
        "{} missing: run `cargo build -p linuxha` first (or set LINUXHA_VMLAB_BINARY_DIR)",
        dir.join("linuxha").display()
    );
    Ok(dir)
}

/// Everything a VM lab makes, to check that none of it is left.
#[derive(Debug)]
struct VmFootprint {
    name: String,
    dir: PathBuf,
    qemu_pids: Vec<u32>,
}

impl VmFootprint {
    fn of(vm: &VmLab) -> Result<VmFootprint> {
        let mut qemu_pids = Vec::new();
        for node in vm.nodes() {
            let pidfile = vm.node_dir(&node)?.join("qemu.pid");
            let pid = std::fs::read_to_string(&pidfile)
                .with_context(|| format!("reading {}", pidfile.display()))?;
            qemu_pids.push(pid.trim().parse()?);
        }
        Ok(VmFootprint { name: vm.name().to_owned(), dir: vm.lab().dir().to_owned(), qemu_pids })
    }

    fn assert_gone(&self) {
        for pid in &self.qemu_pids {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie =
                stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
            assert!(stat.is_empty() || zombie, "qemu {pid} still runs: {stat}");
        }
        let out = std::process::Command::new("ip").args(["netns", "list"]).output().expect("ip");
        let list = String::from_utf8_lossy(&out.stdout);
        let prefix = format!("{}-", self.name);
        assert!(
            !list.lines().any(|l| l.starts_with(&prefix)),
            "namespaces left (with their taps and bridges): {list}"
        );
        assert!(!self.dir.exists(), "dir left: {}", self.dir.display());
        let state = cl_lab::state_file(&self.name);
        assert!(!state.exists(), "state file left: {}", state.display());
    }
}

/// The DRBD connection state of resource r0 on `node` (`Connected`, `WFConnection`, …).
fn drbd_cs(vm: &VmLab, node: &str) -> String {
    vm.exec(node, "sed -n 's/.* cs:\\([A-Za-z]*\\) .*/\\1/p' /proc/drbd", Duration::from_secs(20))
        .map(|o| o.stdout.trim().to_owned())
        .unwrap_or_default()
}

/// Whether `node`'s /proc/drbd shows `what`.
fn drbd_shows(vm: &VmLab, node: &str, what: &str) -> bool {
    vm.exec(node, "cat /proc/drbd", Duration::from_secs(20)).is_ok_and(|o| o.stdout.contains(what))
}

fn drbd_res(vm: &VmLab) -> Result<String> {
    Ok(format!(
        "resource r0 {{
  protocol C;
  device /dev/drbd0; disk /dev/datavg/t; meta-disk internal;
  disk {{ c-plan-ahead 0; resync-rate 400M; }}
  net {{ ping-int 2; ping-timeout 5; connect-int 2; timeout 10; }}
  on node1 {{ address {}:7789; }}
  on node2 {{ address {}:7789; }}
}}
",
        vm.addr("node1", 1)?,
        vm.addr("node2", 1)?
    ))
}

#[test]
fn t20_vm_lab_drbd_faults_power_fence() -> Result<()> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if common::skip("t20_vm_lab_drbd_faults_power_fence") {
        return Ok(());
    }
    let t0 = Instant::now();
    let mut spec = VmLabSpec::new(binary_dir()?);
    spec.vg = Some("datavg".into());
    let mut vm = VmLab::up(spec)?;
    eprintln!("t20: up in {:.1}s", t0.elapsed().as_secs_f64());
    let footprint = VmFootprint::of(&vm)?;

    // The host's binary runs in the guests, under its own name and the command names.
    for node in vm.nodes() {
        let out = vm.sh(&node, "linuxha --version && hostname && test -L /usr/sbin/clstat")?;
        ensure!(out.contains("linuxha") && out.contains(&node), "{node}: {out}");
    }

    // DRBD 8.4 on an LV on each node, over the private network.
    let res = drbd_res(&vm)?;
    let t = Instant::now();
    for node in vm.nodes() {
        vm.sh(&node, "lvcreate -q -L 32M -n t datavg && test -b /dev/datavg/t")?;
        vm.write_file(&node, "/etc/drbd.d/r0.res", res.as_bytes(), 0o644)?;
        vm.sh(&node, "head -1 /proc/drbd | grep -q 'version: 8.4'")?;
        vm.sh(&node, "yes yes | drbdadm create-md --force r0 >/dev/null 2>&1; drbdadm up r0")?;
    }
    vm.sh("node1", "drbdadm primary --force r0")?;
    ensure!(
        eventually(Duration::from_secs(120), || drbd_shows(&vm, "node2", "ds:UpToDate/UpToDate")),
        "no initial sync:\nnode1: {}\nnode2: {}",
        vm.sh("node1", "cat /proc/drbd; dmesg | grep drbd | tail")?,
        vm.sh("node2", "cat /proc/drbd; dmesg | grep drbd | tail")?
    );
    eprintln!("t20: DRBD connected and synced in {:.1}s", t.elapsed().as_secs_f64());

    // The lab's faults work on VM nodes: a cut of the private network disconnects DRBD.
    let mut before = Vec::new();
    ensure!(
        eventually(Duration::from_secs(20), || {
            before.push(drbd_cs(&vm, "node1"));
            before.last().is_some_and(|cs| cs == "Connected")
        }),
        "node1 not Connected before the cut: {before:?}"
    );
    eprintln!("t20: node1 before the cut: {before:?}");
    let t = Instant::now();
    vm.cut("node1", Some(1))?;
    let mut seen = String::new();
    ensure!(
        eventually(Duration::from_secs(10), || {
            seen = drbd_cs(&vm, "node1");
            !seen.is_empty() && seen != "Connected"
        }),
        "DRBD still connected through a cut: {}",
        drbd_cs(&vm, "node1")
    );
    eprintln!("t20: cut noticed in {:.1}s ({seen})", t.elapsed().as_secs_f64());
    vm.heal("node1")?;
    ensure!(
        eventually(Duration::from_secs(30), || drbd_cs(&vm, "node1") == "Connected"),
        "DRBD did not reconnect after heal: {}",
        drbd_cs(&vm, "node1")
    );
    vm.sh("node1", "drbdadm secondary r0")?;

    // A power cycle keeps the system disk (/etc/cluster) and the volume group.
    vm.write_file("node1", "/etc/cluster/keep.txt", b"survives power-off\n", 0o600)?;
    vm.sh("node1", "sync")?;
    vm.power_off("node1")?;
    ensure!(!vm.is_running("node1")?, "node1 still runs after power_off");
    ensure!(vm.exec("node1", "true", Duration::from_secs(5)).is_err(), "exec on a dead node");
    let boot = vm.power_on("node1")?;
    eprintln!("t20: power cycle, boot in {:.1}s", boot.as_secs_f64());
    ensure!(vm.read_file("node1", "/etc/cluster/keep.txt")? == b"survives power-off\n");
    vm.sh("node1", "lvs datavg/t && test -b /dev/datavg/t && drbdadm up r0")?;
    ensure!(
        eventually(Duration::from_secs(30), || drbd_cs(&vm, "node1") == "Connected"),
        "DRBD did not reconnect after the power cycle"
    );

    // Freeze and thaw.
    vm.freeze("node2")?;
    ensure!(vm.is_frozen("node2")?, "node2 not frozen");
    ensure!(vm.exec("node2", "true", Duration::from_secs(2)).is_err(), "a frozen guest answered");
    vm.thaw("node2")?;
    ensure!(!vm.is_frozen("node2")?, "node2 still frozen");
    vm.sh("node2", "true")?;

    // The fence agent inside node2 powers node1 off and on through the lab BMC.
    let fence = |action: &str| -> Result<(i32, String)> {
        let out = vm.exec(
            "node2",
            &format!("printf 'action={action}\\nplug=node1\\n' | fence_linuxha_vm"),
            Duration::from_secs(60),
        )?;
        Ok((out.rc, out.stdout))
    };
    let (rc, msg) = fence("off")?;
    ensure!(rc == 0, "fence off: {rc} {msg}");
    ensure!(!vm.is_running("node1")?, "node1 runs after fence off");
    let (rc, msg) = fence("status")?;
    ensure!(rc == 2 && msg.contains("OFF"), "status after off: {rc} {msg}");
    let (rc, msg) = fence("on")?;
    ensure!(rc == 0, "fence on: {rc} {msg}");
    vm.wait_ready("node1", Duration::from_secs(120))?;
    let (rc, msg) = fence("status")?;
    ensure!(rc == 0 && msg.contains("ON"), "status after on: {rc} {msg}");

    vm.down()?;
    footprint.assert_gone();
    eprintln!("t20: whole scenario {:.1}s", t0.elapsed().as_secs_f64());
    Ok(())
}

#[test]
fn t20_vm_lab_panic_cleans_up() -> Result<()> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if common::skip("t20_vm_lab_panic_cleans_up") {
        return Ok(());
    }
    let dir = binary_dir()?;
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::panic::catch_unwind(move || {
        let mut spec = VmLabSpec::new(dir);
        spec.nodes = 1;
        let mut vm = VmLab::up(spec).expect("vm lab up");
        vm.cut("node1", None).expect("cut");
        vm.freeze("node1").expect("freeze");
        tx.send(VmFootprint::of(&vm).expect("footprint")).expect("send");
        panic!("deliberate panic with VM lab {} up", vm.name());
    });
    if result.is_ok() {
        bail!("closure should have panicked");
    }
    let footprint = rx.recv().context("no footprint")?;
    footprint.assert_gone();
    Ok(())
}
