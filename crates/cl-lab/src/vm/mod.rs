//! The VM flavour of the lab (ARCHITECTURE.md §7): every cluster node is a QEMU guest booting
//! Debian's stock kernel (real DRBD 8.4, device-mapper/LVM, softdog, real power-off), while the
//! switch namespace, its bridges, the nft fault table and the `ext` host are those of [`Lab`].
//!
//! - Each guest's NICs are taps named like the namespace nodes' switch ports (`n<i>e<net>`) on
//!   the lab's bridges, with the same addresses (`eth0` 10.10.0.(10+i), `eth1` 10.20.0.(10+i)),
//!   so every [`Lab`] fault works on VM nodes unchanged.
//! - Disks: a data disk (sparse raw, an LVM PV with a volume group when asked) and a system disk
//!   (ext4) holding /etc/cluster, /var/lib/cluster, /var/log/cluster, /etc/drbd.d,
//!   /var/lib/drbd: a powered-off and powered-on guest keeps its configuration and state.
//! - The host-built binary directory is shared read-only at /mnt/host; `/usr/sbin/linuxha` and
//!   every command name link to it.
//! - Commands go through a virtio-serial agent; power through QMP ([`bmc`]); guests fence each
//!   other through the lab BMC (`fence_linuxha_vm`).
//!
//! Under TCG (the default: this machine's /dev/kvm is kvm_pvm, which cannot boot stock kernels)
//! a guest boots in about 8 s and takes about 350 MiB of host memory.

pub mod assets;
pub mod bmc;
pub mod cluster;
mod guest;
pub mod lock;
mod modules;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

pub use guest::Output;
use guest::{Guest, Launch, LaunchParams};

use crate::{sys, Direction, Lab, LabError, LabSpec};

/// What VM lab to build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmLabSpec {
    /// Lab name; `None` picks `lh` + 6 random hex digits.
    pub name: Option<String>,
    /// Number of cluster nodes (VM guests), 1..=[`crate::MAX_NODES`].
    pub nodes: usize,
    /// Number of networks: 1 (public) or 2 (public and private).
    pub networks: usize,
    /// Size of each node's data disk (sparse), MiB.
    pub data_disk_mib: u64,
    /// Size of each node's system disk (ext4, persistent state), MiB.
    pub system_disk_mib: u64,
    /// Guest memory, MiB.
    pub memory_mib: u32,
    /// Create this LVM volume group on each data disk at first boot.
    pub vg: Option<String>,
    /// Directory with the host-built `linuxha` binary, shared read-only at /mnt/host.
    pub binary_dir: PathBuf,
    /// How long a guest may take to boot.
    pub boot_timeout: Duration,
}

impl VmLabSpec {
    /// Two nodes, two networks, 256 MiB data disks, no volume group, `linuxha` from `binary_dir`.
    pub fn new(binary_dir: impl Into<PathBuf>) -> VmLabSpec {
        VmLabSpec {
            name: None,
            nodes: 2,
            networks: 2,
            data_disk_mib: 256,
            system_disk_mib: 64,
            memory_mib: 512,
            vg: None,
            binary_dir: binary_dir.into(),
            boot_timeout: Duration::from_secs(120),
        }
    }
}

/// A process recorded by pid and start time, so a reused pid is never taken for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct ProcessId {
    pid: u32,
    start_time: u64,
}

/// `<lab dir>/vm.json`: what the VM part of a lab is, for other processes (CLI, teardown).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct VmState {
    nodes: Vec<String>,
    /// The BMC process of a lab made by the CLI.
    bmc: Option<ProcessId>,
}

/// Whether QEMU should use KVM: `LINUXHA_VMLAB_ACCEL=kvm` forces it, `tcg` forbids it; by default
/// TCG, because a stock kernel cannot boot under the paravirtual kvm_pvm found on such hosts.
fn use_kvm() -> bool {
    match std::env::var("LINUXHA_VMLAB_ACCEL").as_deref() {
        Ok("kvm") => true,
        Ok(_) => false,
        Err(_) => {
            Path::new("/dev/kvm").exists()
                && !Path::new("/sys/module/kvm_pvm").exists()
                && (Path::new("/sys/module/kvm_intel").exists()
                    || Path::new("/sys/module/kvm_amd").exists())
        }
    }
}

/// A running VM lab. Dropping one made by [`VmLab::up`] removes everything (also in a panic):
/// qemu processes (by their recorded pids), the BMC, taps, bridges, namespaces, files.
#[derive(Debug)]
pub struct VmLab {
    lab: Lab,
    guests: Vec<Guest>,
    bmc: Option<bmc::Bmc>,
    boot_times: Vec<(String, Duration)>,
    /// Held while this process owns running guests: one VM lab at a time per machine
    /// ([`lock::SHARED_LOCK`], the same lock `flock /tmp/vmlab.lock …` takes from a shell).
    _machine: Option<lock::VmLabLock>,
}

impl VmLab {
    /// Builds the lab: assets (cached), the switch with taps, disks, then boots every guest in
    /// parallel and waits for their agents; creates the volume group when `spec.vg` asks.
    pub fn up(spec: VmLabSpec) -> Result<VmLab> {
        crate::check_supported()?;
        if !(1..=crate::MAX_NODES).contains(&spec.nodes) {
            bail!("a VM lab has 1 to {} nodes, not {}", crate::MAX_NODES, spec.nodes);
        }
        let binary_dir = fs::canonicalize(&spec.binary_dir)
            .with_context(|| format!("binary directory {}", spec.binary_dir.display()))?;
        let binary = binary_dir.join("linuxha");
        if !binary.is_file() {
            bail!("{} does not exist: build it first (cargo build -p linuxha)", binary.display());
        }
        let machine = lock::VmLabLock::acquire(Path::new(lock::SHARED_LOCK), |who| {
            eprintln!("cl-lab vm: another VM lab runs on this machine ({who}); waiting for it");
        })?;
        let t = Instant::now();
        let assets = assets::ensure(&binary)?;
        if assets.built {
            eprintln!("cl-lab vm: assets built in {:.1}s", t.elapsed().as_secs_f64());
        }
        let lab = Lab::up_with(
            LabSpec { nodes: spec.nodes, networks: spec.networks, name: spec.name.clone() },
            true,
        )?;
        let guests: Vec<Guest> =
            lab.nodes().into_iter().map(|n| Guest { dir: lab.dir().join(&n), name: n }).collect();
        let mut vm =
            VmLab { lab, guests, bmc: None, boot_times: Vec::new(), _machine: Some(machine) };
        let kvm = use_kvm();
        let direct_io = !sys::is_tmpfs(vm.lab.dir());
        for (i, g) in vm.guests.iter().enumerate() {
            let data = g.file("data.raw");
            sparse_file(&data, spec.data_disk_mib)?;
            let system = g.file("system.img");
            sparse_file(&system, spec.system_disk_mib)?;
            sys::run("mkfs.ext4", ["-F", "-q", "-L", "lhsystem", &system.display().to_string()])?;
            let nics = (0..spec.networks)
                .map(|net| -> Result<(String, String, String)> {
                    Ok((
                        crate::nft::port_name(&g.name, net),
                        format!("52:54:00:00:{net:02x}:{:02x}", i + 1),
                        format!("{}/24", vm.lab.addr(&g.name, net)?),
                    ))
                })
                .collect::<Result<Vec<_>>>()?;
            let argv = guest::qemu_argv(&LaunchParams {
                name: &g.name,
                dir: &g.dir,
                kernel: &assets.kernel,
                initrd: &assets.initrd,
                binary_dir: &binary_dir,
                kvm,
                direct_io,
                memory_mib: spec.memory_mib,
                nics,
            });
            g.save_launch(&Launch { switch_netns: vm.lab.switch_netns().to_owned(), argv })?;
        }
        vm.save_state(None)?;
        vm.bmc = Some(bmc::Bmc::start(vm.lab.dir(), &vm.lab.nodes()));
        let t = Instant::now();
        for g in &vm.guests {
            g.start()?;
        }
        let times: Vec<Result<Duration>> = std::thread::scope(|s| {
            let handles: Vec<_> =
                vm.guests.iter().map(|g| s.spawn(|| g.wait_ready(spec.boot_timeout))).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("boot thread panicked"))))
                .collect()
        });
        for (g, time) in vm.guests.iter().zip(times) {
            let time = time?;
            eprintln!(
                "cl-lab vm: {} {} booted in {:.1}s",
                vm.lab.name(),
                g.name,
                time.as_secs_f64()
            );
            vm.boot_times.push((g.name.clone(), time));
        }
        eprintln!("cl-lab vm: {} guests up in {:.1}s", vm.guests.len(), t.elapsed().as_secs_f64());
        if let Some(vg) = &spec.vg {
            let script = format!(
                "d=$(readlink -f /dev/disk/by-id/virtio-data) && pvcreate -q \"$d\" && vgcreate -q {} \"$d\"",
                assets::sh_quote(vg)
            );
            let results: Vec<Result<Output>> = std::thread::scope(|s| {
                let handles: Vec<_> = vm
                    .guests
                    .iter()
                    .map(|g| s.spawn(|| g.exec(&script, Duration::from_secs(60))))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("thread panicked"))))
                    .collect()
            });
            for (g, r) in vm.guests.iter().zip(results) {
                let out = r?;
                if !out.success() {
                    bail!("creating volume group {vg} on {}: {}", g.name, out.stdout.trim());
                }
            }
        }
        Ok(vm)
    }

    /// Finds a VM lab made by another process (`linuxha lab up --vm`); dropping it leaves it.
    pub fn load(name: &str) -> Result<VmLab> {
        let lab = Lab::load(name)?;
        if !lab.is_vm() {
            bail!("lab {name} has namespace nodes, not VM nodes");
        }
        let guests =
            lab.nodes().into_iter().map(|n| Guest { dir: lab.dir().join(&n), name: n }).collect();
        Ok(VmLab { lab, guests, bmc: None, boot_times: Vec::new(), _machine: None })
    }

    /// Keeps the lab after this process exits (for the CLI): the BMC moves into a background
    /// process (`<this program> lab bmc <lab>`, so the program must be `linuxha`), recorded by
    /// pid and stopped by [`Lab::down_by_name`].
    pub fn detach(&mut self) -> Result<()> {
        if let Some(mut b) = self.bmc.take() {
            b.stop();
        }
        let exe = std::env::current_exe().context("finding the running program")?;
        let log = self.lab.dir().join("bmc.log");
        let log = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = std::process::Command::new("nsenter");
        use std::os::unix::process::CommandExt as _;
        cmd.arg(format!("--net={}", sys::netns_path(self.lab.switch_netns()).display()))
            .arg("--")
            .arg(exe)
            .args(["lab", "bmc", self.lab.name()])
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().context("bmc log")?)
            .stderr(log)
            .process_group(0);
        let child = cmd.spawn().context("starting the lab BMC process")?;
        let pid = child.id();
        let start_time = sys::pid_start_time(pid).context("BMC start time")?;
        self.save_state(Some(ProcessId { pid, start_time }))?;
        self.lab.detach()
    }

    /// Writes `<lab dir>/vm.json`.
    fn save_state(&self, bmc: Option<ProcessId>) -> Result<()> {
        let state = VmState { nodes: self.lab.nodes(), bmc };
        let path = self.lab.dir().join("vm.json");
        fs::write(&path, serde_json::to_vec_pretty(&state).context("serialising vm.json")?)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Removes the lab and everything it made.
    pub fn down(mut self) -> Result<()> {
        if let Some(mut b) = self.bmc.take() {
            b.stop();
        }
        self.lab.teardown()
    }

    /// The underlying lab: switch, bridges, `ext`, faults ([`Lab::cut`], [`Lab::partition`] …).
    pub fn lab(&self) -> &Lab {
        &self.lab
    }

    /// The underlying lab, to inject faults.
    pub fn lab_mut(&mut self) -> &mut Lab {
        &mut self.lab
    }

    /// The lab's name.
    pub fn name(&self) -> &str {
        self.lab.name()
    }

    /// Node names, `node1` … `nodeN`.
    pub fn nodes(&self) -> Vec<String> {
        self.lab.nodes()
    }

    /// Address of `host` on network `net`.
    pub fn addr(&self, host: &str, net: usize) -> Result<std::net::Ipv4Addr, LabError> {
        self.lab.addr(host, net)
    }

    /// How long each guest took to boot in [`VmLab::up`].
    pub fn boot_times(&self) -> &[(String, Duration)] {
        &self.boot_times
    }

    /// The guest `node`.
    fn guest(&self, node: &str) -> Result<&Guest> {
        match self.guests.iter().find(|g| g.name == node) {
            Some(g) => Ok(g),
            None => {
                self.lab.host(node)?;
                bail!("{node} is not a VM node of lab {}", self.lab.name())
            }
        }
    }

    /// The serial console log of `node` (appended across boots).
    pub fn console_log(&self, node: &str) -> Result<PathBuf> {
        Ok(self.guest(node)?.console_log())
    }

    /// Directory of `node`'s files (disks, sockets, logs).
    pub fn node_dir(&self, node: &str) -> Result<PathBuf> {
        Ok(self.guest(node)?.dir.clone())
    }

    /// Runs `script` with `sh` in `node` (as root, cwd /), at most `timeout`; output is stdout
    /// and stderr together. A timed-out command keeps running in the guest.
    pub fn exec(&self, node: &str, script: &str, timeout: Duration) -> Result<Output> {
        let g = self.guest(node)?;
        if g.pid().is_none() {
            bail!("{node} is powered off");
        }
        g.exec(script, timeout)
    }

    /// Like [`VmLab::exec`], failing unless the script exits with 0; returns its output.
    pub fn sh(&self, node: &str, script: &str) -> Result<String> {
        let out = self.exec(node, script, Duration::from_secs(120))?;
        if !out.success() {
            bail!("{node}: `{script}` exited with {}: {}", out.rc, out.stdout.trim());
        }
        Ok(out.stdout)
    }

    /// Writes `bytes` to `path` in `node` (atomically: temp file and rename) with `mode`,
    /// creating the parent directories.
    pub fn write_file(&self, node: &str, path: &str, bytes: &[u8], mode: u32) -> Result<()> {
        let p = assets::sh_quote(path);
        let encoded = guest::b64_encode(bytes);
        let mut body = String::new();
        for line in encoded.as_bytes().chunks(76) {
            body.push_str(&String::from_utf8_lossy(line));
            body.push('\n');
        }
        let script = format!(
            "set -e; mkdir -p \"$(dirname {p})\"; base64 -d > {p}.lhtmp <<'LHEOF'\n{body}LHEOF\nchmod {mode:o} {p}.lhtmp; mv {p}.lhtmp {p}"
        );
        self.sh(node, &script).map(|_| ()).with_context(|| format!("writing {path} on {node}"))
    }

    /// Reads `path` in `node`.
    pub fn read_file(&self, node: &str, path: &str) -> Result<Vec<u8>> {
        let out = self
            .sh(node, &format!("base64 < {}", assets::sh_quote(path)))
            .with_context(|| format!("reading {path} on {node}"))?;
        guest::b64_decode(&out)
    }

    /// Whether `node`'s qemu runs (powered on; a frozen guest runs).
    pub fn is_running(&self, node: &str) -> Result<bool> {
        Ok(self.guest(node)?.pid().is_some())
    }

    /// Whether `node` is frozen ([`VmLab::freeze`]).
    pub fn is_frozen(&self, node: &str) -> Result<bool> {
        Ok(!self.guest(node)?.is_cpu_running()?)
    }

    /// Hard power-off (QMP `quit`): no shutdown, disks keep what was written.
    pub fn power_off(&mut self, node: &str) -> Result<()> {
        bmc::power_off(self.guest(node)?)
    }

    /// Powers `node` on with the same disks and waits until it has booted; returns the boot time.
    pub fn power_on(&mut self, node: &str) -> Result<Duration> {
        let g = self.guest(node)?;
        bmc::power_on(g)?;
        self.wait_ready(node, Duration::from_secs(120))
    }

    /// Waits until `node`'s agent answers (after a power-on, reset or fence).
    pub fn wait_ready(&self, node: &str, timeout: Duration) -> Result<Duration> {
        let t = self.guest(node)?.wait_ready(timeout)?;
        eprintln!("cl-lab vm: {} {node} booted in {:.1}s", self.lab.name(), t.as_secs_f64());
        Ok(t)
    }

    /// Hard reset (QMP `system_reset`), then waits until the guest has booted again.
    pub fn reset(&mut self, node: &str) -> Result<Duration> {
        let g = self.guest(node)?;
        g.mark_boot()?;
        g.qmp("system_reset", None)?;
        self.wait_ready(node, Duration::from_secs(120))
    }

    /// Freezes `node`'s CPU (QMP `stop`): nothing runs, not even its kernel (no ARP answers).
    pub fn freeze(&mut self, node: &str) -> Result<()> {
        self.guest(node)?.qmp("stop", None).map(|_| ())
    }

    /// Undoes [`VmLab::freeze`] (QMP `cont`).
    pub fn thaw(&mut self, node: &str) -> Result<()> {
        self.guest(node)?.qmp("cont", None).map(|_| ())
    }

    /// See [`Lab::cut`].
    pub fn cut(&mut self, host: &str, net: Option<usize>) -> Result<()> {
        self.lab.cut(host, net)
    }

    /// See [`Lab::partition`].
    pub fn partition(&mut self, host: &str, other: &str, net: Option<usize>) -> Result<()> {
        self.lab.partition(host, other, net)
    }

    /// See [`Lab::cut_oneway`].
    pub fn cut_oneway(
        &mut self,
        host: &str,
        net: Option<usize>,
        direction: Direction,
    ) -> Result<()> {
        self.lab.cut_oneway(host, net, direction)
    }

    /// See [`Lab::loss`].
    pub fn loss(&mut self, host: &str, net: Option<usize>, percent: u8) -> Result<()> {
        self.lab.loss(host, net, percent)
    }

    /// Takes `host`'s link on `net` down at the switch (tap down); a VM node also loses carrier
    /// on `eth<net>` (QMP `set_link`), as with a pulled cable.
    pub fn link_down(&mut self, host: &str, net: usize) -> Result<()> {
        self.lab.link_down(host, net)?;
        if let Ok(g) = self.guest(host) {
            bmc::set_link(g, net, false)?;
        }
        Ok(())
    }

    /// Undoes [`VmLab::link_down`].
    pub fn link_up(&mut self, host: &str, net: usize) -> Result<()> {
        self.lab.link_up(host, net)?;
        if let Ok(g) = self.guest(host) {
            bmc::set_link(g, net, true)?;
        }
        Ok(())
    }

    /// Removes `host`'s network faults and brings its links back (see [`Lab::heal`]).
    pub fn heal(&mut self, host: &str) -> Result<()> {
        self.lab.heal(host)?;
        if let Ok(g) = self.guest(host) {
            for net in 0..self.lab.networks() {
                bmc::set_link(g, net, true)?;
            }
        }
        Ok(())
    }

    /// [`VmLab::heal`] for every host.
    pub fn heal_all(&mut self) -> Result<()> {
        self.lab.heal_all()?;
        for g in &self.guests {
            for net in 0..self.lab.networks() {
                bmc::set_link(g, net, true)?;
            }
        }
        Ok(())
    }

    /// Carries out a fence-agent action on `node` (what the BMC does for a guest).
    pub fn fence(
        &mut self,
        node: &str,
        action: crate::fence::PowerAction,
    ) -> Result<(i32, String)> {
        bmc::fence_action(self.guest(node)?, action)
    }
}

impl Drop for VmLab {
    fn drop(&mut self) {
        // The BMC first, so no fence request can start a guest while the lab goes away; the
        // lab's own drop then kills the guests (see `teardown_guests`) and removes the rest.
        if let Some(mut b) = self.bmc.take() {
            b.stop();
        }
    }
}

/// Makes a sparse file of `mib` MiB.
fn sparse_file(path: &Path, mib: u64) -> Result<()> {
    let f = fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.set_len(mib * 1024 * 1024).with_context(|| format!("sizing {}", path.display()))
}

/// Part of every lab teardown: stops the BMC process (by recorded pid and start time) and kills
/// every guest's qemu (by the pid in its `qemu.pid`, checked against its command line), waiting
/// until they are gone; with `LINUXHA_VMLAB_KEEP_LOGS=DIR` the console logs are copied there
/// first. Returns the failures.
pub(crate) fn teardown_guests(dir: &Path) -> Vec<String> {
    let mut errors = Vec::new();
    if let Ok(text) = fs::read(dir.join("vm.json")) {
        if let Ok(VmState { bmc: Some(p), .. }) = serde_json::from_slice::<VmState>(&text) {
            if sys::pid_alive(p.pid) && sys::pid_start_time(p.pid) == Some(p.start_time) {
                if let Err(e) = sys::kill_pid(p.pid) {
                    errors.push(format!("{e:#}"));
                } else if !sys::wait_until(Duration::from_secs(10), || !sys::pid_alive(p.pid)) {
                    errors.push(format!("BMC {} survived SIGKILL", p.pid));
                }
            }
        }
    }
    let Ok(entries) = fs::read_dir(dir) else { return errors };
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.join("launch.json").exists() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let g = Guest { name, dir: path };
        // Wait for a power-on in flight so its qemu is seen and killed too.
        let _lock = sys::FileLock::acquire_within(&g.file("power.lock"), Duration::from_secs(20));
        if let Err(e) = g.kill() {
            errors.push(format!("{e:#}"));
        }
        if let Some(keep) = std::env::var_os("LINUXHA_VMLAB_KEEP_LOGS") {
            let lab = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let to = Path::new(&keep).join(format!("{lab}-{}-console.log", g.name));
            let _ = fs::create_dir_all(&keep);
            if let Err(e) = fs::copy(g.console_log(), &to) {
                errors.push(format!("keeping {}: {e}", g.console_log().display()));
            }
        }
    }
    errors
}
