//! `bench replication`: the cost of replicated storage (DRBD, protocol C) in the VM lab.
//! Synchronous 4 KiB write latency and sequential throughput on the replicated filesystem
//! against an ext4 on a raw logical volume of the same guest, and the failover time of an
//! application on a replicated filesystem after a hard power-off, broken down into steps from
//! the survivor's cldaemon log (docs/benchmarks.md, "Replicated storage").

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use cl_lab::vm::cluster::{ClusterSpec, ReplicatedCluster, APP, MOUNTPOINT, VG, VIP};
use serde::Serialize;

use crate::fsync::{parse_report, FsyncReport};
use crate::report::Machine;
use crate::stats::{self, Row};

/// Where the raw logical volume's ext4 is mounted in the guest.
pub const RAW_MOUNT: &str = "/mnt/raw";
/// The two targets, in the order of the tables.
pub const TARGETS: [&str; 2] = ["raw", "drbd"];
/// Size of each synchronous write.
pub const WRITE_SIZE: usize = 4096;
/// MiB written by each sequential run.
pub const SEQ_MIB: u64 = 48;

/// What the run is asked to do.
#[derive(Clone, Debug)]
pub struct Options {
    /// Rounds of latency and throughput per target, and failover repetitions.
    pub reps: usize,
    /// Synchronous writes per latency round.
    pub writes: usize,
}

/// One latency round on one target.
#[derive(Clone, Debug, Serialize)]
pub struct LatencyRun {
    /// `raw` or `drbd`.
    pub target: String,
    /// Round, from 1.
    pub rep: usize,
    /// What the probe reported.
    pub report: FsyncReport,
}

/// One sequential write on one target.
#[derive(Clone, Debug, Serialize)]
pub struct ThroughputRun {
    /// `raw` or `drbd`.
    pub target: String,
    /// Round, from 1.
    pub rep: usize,
    /// MB/s (10^6 bytes), when dd reported.
    pub mb_s: Option<f64>,
    /// dd's output.
    pub output: String,
}

/// When each step of a take-over happened, seconds after the power-off (survivor's log, its
/// clock corrected by the measured offset).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Steps {
    /// `node <peer> is down`.
    pub detected: Option<f64>,
    /// `starting webdata` (after the take-over delay).
    pub starting: Option<f64>,
    /// `DRBD resource … is Primary here` (after the VIP probe and the promotion).
    pub primary: Option<f64>,
    /// `fsck …` finished.
    pub fsck: Option<f64>,
    /// `mounted …`.
    pub mounted: Option<f64>,
    /// `webdata is running` (VIP up, start script done).
    pub running: Option<f64>,
}

/// One failover repetition.
#[derive(Clone, Debug, Serialize)]
pub struct FailoverRep {
    /// Repetition, from 1.
    pub rep: usize,
    /// The node powered off.
    pub from: String,
    /// The survivor.
    pub to: String,
    /// Power-off → first HTTP answer on the VIP from ext, seconds.
    pub seconds: Option<f64>,
    /// The survivor's steps.
    pub steps: Steps,
    /// Uncertainty of the survivor's clock offset (half the round trip of the reading), s.
    pub clock_uncertainty_s: f64,
    /// Seconds from power-on of the powered-off node until DRBD was UpToDate on both again.
    pub resync_s: Option<f64>,
}

/// Everything `bench replication` measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Results {
    /// The command line.
    pub command: String,
    /// Unix time of the start.
    pub started_unix: u64,
    /// The host.
    pub machine: Machine,
    /// Guest kernel, DRBD version, CPUs and memory as the guest sees them.
    pub guest: String,
    /// Heartbeat interval and timeout of the lab cluster, ms.
    pub heartbeat_ms: (u64, u64),
    /// Round trip node1 → node2 on the replication network (ping min/avg/max, ms).
    pub rtt_ms: Option<(f64, f64, f64)>,
    /// Repetitions asked for.
    pub reps: usize,
    /// Writes per latency round.
    pub writes: usize,
    /// Latency rounds.
    pub latency: Vec<LatencyRun>,
    /// Sequential writes.
    pub throughput: Vec<ThroughputRun>,
    /// Failover repetitions.
    pub failover: Vec<FailoverRep>,
    /// Errors that ended a part early.
    pub errors: Vec<String>,
}

mod report;
pub use report::*;

fn now_ns() -> i128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i128).unwrap_or(0)
}

/// The guest's clock minus the host's, ns, and half the round trip of the reading, s.
fn clock_offset(c: &ReplicatedCluster, node: &str) -> Result<(i128, f64)> {
    let mut best: Option<(i128, f64)> = None;
    for _ in 0..3 {
        let before = now_ns();
        let out = c.run(node, "/mnt/host/bench clock", 30)?;
        let after = now_ns();
        let guest: i128 = out
            .stdout
            .trim()
            .parse()
            .with_context(|| format!("`bench clock` on {node}: {:?}", out.stdout))?;
        let half = (after - before) as f64 / 2e9;
        if best.is_none_or(|(_, h)| half < h) {
            best = Some((guest - (before + after) / 2, half));
        }
    }
    best.context("no clock reading")
}

/// One HTTP GET of the VIP from ext with short timeouts (the lab's `get` waits up to 2 s).
fn served(netns: &str) -> bool {
    std::process::Command::new("ip")
        .args(["netns", "exec", netns, "curl", "-sf", "-o", "/dev/null"])
        .args(["--connect-timeout", "0.3", "-m", "1"])
        .arg(format!("http://{VIP}/index.html"))
        .status()
        .is_ok_and(|s| s.success())
}

fn wait_served(netns: &str, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if served(netns) {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn dir_of(target: &str) -> &'static str {
    if target == "raw" {
        RAW_MOUNT
    } else {
        MOUNTPOINT
    }
}

/// Boots the cluster and measures everything; the results go into `results` as they come.
pub fn run(
    binary_dir: &Path,
    opts: &Options,
    results: &mut Results,
    save: &dyn Fn(&Results) -> Result<()>,
) -> Result<()> {
    let spec = ClusterSpec::default();
    results.heartbeat_ms =
        (spec.heartbeat.0.as_millis() as u64, spec.heartbeat.1.as_millis() as u64);
    let t = Instant::now();
    let mut c = ReplicatedCluster::up(binary_dir, spec).context("replicated cluster up")?;
    eprintln!("[replication] cluster up and formed in {:.0} s", t.elapsed().as_secs_f64());
    let outcome = measure(&mut c, opts, results, save);
    if outcome.is_err() {
        eprintln!("{}", c.diagnostics());
    }
    c.lab.down()?;
    outcome
}

fn measure(
    c: &mut ReplicatedCluster,
    opts: &Options,
    results: &mut Results,
    save: &dyn Fn(&Results) -> Result<()>,
) -> Result<()> {
    c.wait_drbd(
        "node1",
        &["cs:Connected", "ro:Primary/Secondary", "ds:UpToDate/UpToDate"],
        Duration::from_secs(120),
    )?;
    results.guest = c
        .run(
            "node1",
            "echo \"kernel $(uname -r), $(head -1 /proc/drbd | cut -d' ' -f1-2), $(nproc) vCPU, $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) MiB\"",
            30,
        )?
        .stdout
        .trim()
        .to_string();
    let ping = c.run("node1", "ping -c 20 -i 0.2 10.20.0.12 2>&1", 60)?;
    results.rtt_ms = parse_ping(&ping.stdout);
    eprintln!("[replication] replication network round trip: {:?} ms", results.rtt_ms);
    let raw = c.run(
        "node1",
        &format!(
            "lvcreate --yes -L 64M -n raw {VG} >/dev/null && mkfs.ext4 -q /dev/{VG}/raw && mkdir -p {RAW_MOUNT} && mount /dev/{VG}/raw {RAW_MOUNT}"
        ),
        120,
    )?;
    if raw.rc != 0 {
        bail!("raw logical volume on node1: {}", raw.stdout);
    }
    for rep in 1..=opts.reps {
        // Alternate the order so a drift in the guests' load favours neither.
        let order: Vec<&str> =
            if rep % 2 == 1 { TARGETS.to_vec() } else { TARGETS.iter().rev().copied().collect() };
        for target in order {
            let dir = dir_of(target);
            let out = c.run(
                "node1",
                &format!(
                    "/mnt/host/bench fsync-probe --file {dir}/bench-fsync --count {} --size {WRITE_SIZE}",
                    opts.writes
                ),
                900,
            )?;
            if out.rc != 0 {
                bail!("fsync probe on {target}: {}", out.stdout);
            }
            let report = parse_report(&out.stdout)?;
            let mean_ms = mean(&report.latencies_us).unwrap_or(f64::NAN) / 1000.0;
            eprintln!("[replication] latency {target} round {rep}: mean {mean_ms:.2} ms");
            results.latency.push(LatencyRun { target: target.into(), rep, report });
            let out = c.run(
                "node1",
                &format!(
                    "gdd if=/dev/zero of={dir}/bench-seq bs=1M count={SEQ_MIB} oflag=direct conv=fsync 2>&1; rc=$?; rm -f {dir}/bench-seq; exit $rc"
                ),
                900,
            )?;
            let mb_s = parse_dd(&out.stdout).filter(|_| out.rc == 0);
            eprintln!("[replication] throughput {target} round {rep}: {mb_s:?} MB/s");
            results.throughput.push(ThroughputRun {
                target: target.into(),
                rep,
                mb_s,
                output: out.stdout,
            });
            save(results)?;
        }
    }
    let _ = c.run("node1", &format!("umount {RAW_MOUNT}; lvremove -f {VG}/raw"), 60);
    let netns = c.lab.lab().netns("ext")?.to_string();
    for rep in 1..=opts.reps {
        let (from, to) = if rep % 2 == 1 { ("node1", "node2") } else { ("node2", "node1") };
        c.wait_running_on(from, Duration::from_secs(120))?;
        wait_served(&netns, Duration::from_secs(60))
            .with_context(|| format!("{APP} not served before repetition {rep}"))?;
        let (offset, uncertainty) = clock_offset(c, to)?;
        let fault = now_ns();
        let t0 = Instant::now();
        c.lab.power_off(from)?;
        let seconds = wait_served(&netns, Duration::from_secs(180)).map(|_| t0.elapsed());
        let log = c.run(to, "tail -n 400 /var/log/cluster/cldaemon.log", 60)?.stdout;
        let steps = steps(&log, fault + offset, from);
        let mut f = FailoverRep {
            rep,
            from: from.into(),
            to: to.into(),
            seconds: seconds.map(|d| d.as_secs_f64()),
            steps,
            clock_uncertainty_s: uncertainty,
            resync_s: None,
        };
        eprintln!("[replication] failover {rep} {from} → {to}: {:?} s, {:?}", f.seconds, f.steps);
        results.failover.push(f.clone());
        save(results)?;
        if seconds.is_none() {
            bail!("{APP} not served within 180 s after powering {from} off");
        }
        let on = Instant::now();
        c.lab.power_on(from)?;
        c.wait_drbd(to, &["cs:Connected", "ds:UpToDate/UpToDate"], Duration::from_secs(300))?;
        f.resync_s = Some(on.elapsed().as_secs_f64());
        // The returning node has joined when it, too, sees the application on the survivor.
        let deadline = Instant::now() + Duration::from_secs(120);
        while c.running_on(from).ok().flatten().as_deref() != Some(to) {
            if Instant::now() > deadline {
                bail!("{from} did not rejoin after its power-on");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        if let Some(last) = results.failover.last_mut() {
            *last = f;
        }
        save(results)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
