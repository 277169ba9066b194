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

/// Unix time in nanoseconds of an RFC 3339 UTC timestamp as the daemons log it
/// (`2026-12-06T21:11:03.123456Z`).
pub fn parse_timestamp_ns(s: &str) -> Option<i128> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (h, mi, sec) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    if !frac.chars().all(|c| c.is_ascii_digit()) || frac.len() > 9 {
        return None;
    }
    let nanos: i128 = if frac.is_empty() { 0 } else { format!("{frac:0<9}").parse().ok()? };
    let days = days_from_civil(y, m, day);
    Some(i128::from(days * 86_400 + h * 3600 + mi * 60 + sec) * 1_000_000_000 + nanos)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The take-over steps in `log` (a cldaemon log: `<time> <level> cldaemon: <message>`) after
/// `fault_ns` (Unix ns, the log's clock): each step is the first matching line after the
/// previous step's, so an earlier take-over in the same log is never picked up.
pub fn steps(log: &str, fault_ns: i128, peer: &str) -> Steps {
    let events: Vec<(i128, &str)> = log
        .lines()
        .filter_map(|l| {
            let (ts, rest) = l.split_once(' ')?;
            let t = parse_timestamp_ns(ts)?;
            (t >= fault_ns).then_some((t, rest))
        })
        .collect();
    let down = format!("node {peer} is down");
    let starting = format!("starting {APP}");
    let running = format!("{APP} is running");
    let patterns: [&dyn Fn(&str) -> bool; 6] = [
        &|m| m.contains(&down),
        &|m| m.contains(&starting),
        &|m| m.contains("is Primary here"),
        &|m| m.contains(": fsck "),
        &|m| m.contains(": mounted "),
        &|m| m.contains(&running),
    ];
    let mut found = [None; 6];
    let mut from = 0;
    for (i, matches) in patterns.iter().enumerate() {
        if let Some(k) = events[from..].iter().position(|(_, m)| matches(m)) {
            let (t, _) = events[from + k];
            found[i] = Some((t - fault_ns) as f64 / 1e9);
            from += k + 1;
        }
    }
    Steps {
        detected: found[0],
        starting: found[1],
        primary: found[2],
        fsck: found[3],
        mounted: found[4],
        running: found[5],
    }
}

/// MB/s (10^6 bytes per second) from GNU dd's summary line
/// (`50331648 bytes (50 MB, 48 MiB) copied, 3.2 s, 15.7 MB/s`), computed from the byte count
/// and the seconds so the unit dd picked does not matter.
pub fn parse_dd(output: &str) -> Option<f64> {
    let line = output.lines().rev().find(|l| l.contains(" bytes") && l.contains(" copied, "))?;
    let bytes: f64 = line.split_whitespace().next()?.parse().ok()?;
    let secs: f64 = line.split(" copied, ").nth(1)?.split_whitespace().next()?.parse().ok()?;
    (secs > 0.0).then(|| bytes / secs / 1e6)
}

/// min/avg/max in milliseconds from ping's summary (`round-trip min/avg/max = 0.3/0.5/1.2 ms`,
/// busybox; iputils says `rtt min/avg/max/mdev = …`).
pub fn parse_ping(output: &str) -> Option<(f64, f64, f64)> {
    let line = output.lines().rev().find(|l| l.contains("min/avg/max"))?;
    let values = line.split('=').nth(1)?.split_whitespace().next()?;
    let mut v = values.split('/').map(|x| x.parse::<f64>().ok());
    Some((v.next()??, v.next()??, v.next()??))
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

fn ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "–".into())
}

/// The duration of each take-over phase in one repetition: consecutive step differences, from
/// the power-off to the client's first answer. `None` where a step is missing.
pub fn phases(rep: &FailoverRep) -> Vec<(&'static str, Option<f64>)> {
    let s = &rep.steps;
    let points =
        [Some(0.0), s.detected, s.starting, s.primary, s.fsck, s.mounted, s.running, rep.seconds];
    let names = [
        "detection (power-off → `node … is down`)",
        "take-over delay (→ `starting webdata`)",
        "VIP probe + DRBD promote (→ `Primary here`)",
        "fsck",
        "mount",
        "VIP + start script (→ `webdata is running`)",
        "until the client's first answer",
    ];
    names
        .iter()
        .enumerate()
        .map(|(i, n)| (*n, points[i].zip(points[i + 1]).map(|(a, b)| b - a)))
        .collect()
}

/// The markdown report.
pub fn markdown(r: &Results) -> String {
    let m = &r.machine;
    let mut out = format!(
        "Host: {} CPUs ({}), kernel {}, Debian {}; load average at start {}, at end {}.\n\nGuests: {}. Heartbeat {} ms / {} ms. {}\n\nCommand: `{}`\n\n",
        m.nproc, m.cpu, m.kernel, m.debian, m.load_start, m.load_end, r.guest,
        r.heartbeat_ms.0,
        r.heartbeat_ms.1,
        r.rtt_ms
            .map(|(a, b, c)| format!(
                "Replication network round trip (ping, node1 → node2): min/avg/max {a:.2}/{b:.2}/{c:.2} ms."
            ))
            .unwrap_or_default(),
        r.command
    );
    if !r.latency.is_empty() {
        out += &format!(
            "### Synchronous {} KiB writes (write + fsync, appended to a new file), milliseconds\n\n",
            WRITE_SIZE / 1024
        );
        let mut rows = Vec::new();
        let mut by_target = Vec::new();
        for target in TARGETS {
            let v: Vec<f64> = r
                .latency
                .iter()
                .filter(|l| l.target == target)
                .flat_map(|l| l.report.latencies_us.iter().map(|u| u / 1000.0))
                .collect();
            let s = stats::summarize(&v);
            let avg = mean(&v);
            by_target.push((s, avg));
            if let Some(s) = s {
                rows.push(vec![
                    target.to_string(),
                    s.n.to_string(),
                    format!("{:.2}", s.median),
                    format!("{:.2}", s.p99),
                    ms(avg),
                    format!("{:.2}", s.max),
                    ms(avg.map(|a| 1000.0 / a)),
                ]);
            }
        }
        if let [(Some(raw), raw_mean), (Some(drbd), drbd_mean)] = by_target[..] {
            rows.push(vec![
                "**drbd ÷ raw**".into(),
                String::new(),
                stats::ratio(Some(drbd.median), Some(raw.median)),
                stats::ratio(Some(drbd.p99), Some(raw.p99)),
                stats::ratio(drbd_mean, raw_mean),
                stats::ratio(Some(drbd.max), Some(raw.max)),
                stats::ratio(raw_mean, drbd_mean),
            ]);
        }
        out += &stats::table(
            &["target", "writes", "p50 ms", "p99 ms", "mean ms", "max ms", "writes/s"],
            &rows,
        );
        out += "\n";
    }
    if !r.throughput.is_empty() {
        out += &format!(
            "### Sequential write: `gdd bs=1M count={SEQ_MIB} oflag=direct conv=fsync`, MB/s\n\n"
        );
        let mut rows = Vec::new();
        let mut medians = Vec::new();
        for target in TARGETS {
            let v: Vec<f64> =
                r.throughput.iter().filter(|t| t.target == target).filter_map(|t| t.mb_s).collect();
            let s = stats::summarize(&v);
            medians.push(s.map(|s| s.median));
            if let Some(s) = s {
                rows.push(vec![
                    target.to_string(),
                    s.n.to_string(),
                    format!("{:.1}", s.median),
                    format!("{:.1}", s.min),
                    format!("{:.1}", s.max),
                ]);
            }
        }
        if let [raw, drbd] = medians[..] {
            rows.push(vec![
                "**drbd ÷ raw**".into(),
                String::new(),
                stats::ratio(drbd, raw),
                String::new(),
                String::new(),
            ]);
        }
        out += &stats::table(&["target", "runs", "median MB/s", "min", "max"], &rows);
        out += "\n";
    }
    if !r.failover.is_empty() {
        out += "### Failover with a replicated filesystem: hard power-off → first HTTP answer on the VIP from ext (seconds)\n\n";
        let mut rows = Vec::new();
        let mut all = Vec::new();
        for (from, to) in [("node1", "node2"), ("node2", "node1")] {
            let reps: Vec<&FailoverRep> =
                r.failover.iter().filter(|f| f.from == from && f.to == to).collect();
            if reps.is_empty() {
                continue;
            }
            let values: Vec<f64> = reps.iter().filter_map(|f| f.seconds).collect();
            all.extend(values.iter().copied());
            rows.push(Row {
                scenario: "power-off".into(),
                system: format!("{from} → {to}"),
                failed: reps.len() - values.len(),
                values,
                note: String::new(),
            });
        }
        let failed: usize = rows.iter().map(|r| r.failed).sum();
        let resync: Vec<f64> = r.failover.iter().filter_map(|f| f.resync_s).collect();
        rows.push(Row {
            scenario: "power-off".into(),
            system: "both directions".into(),
            values: all,
            failed,
            note: stats::summarize(&resync)
                .map(|s| format!("power-on → UpToDate/UpToDate again: median {:.1} s", s.median))
                .unwrap_or_default(),
        });
        out += &stats::failover_table(&rows, &[]);
        out += "\n";
        out += "Where the time goes (survivor's cldaemon log, seconds; medians over the repetitions):\n\n";
        let per_rep: Vec<Vec<(&str, Option<f64>)>> = r.failover.iter().map(phases).collect();
        let mut rows = Vec::new();
        if let Some(first) = per_rep.first() {
            for (i, (name, _)) in first.iter().enumerate() {
                let v: Vec<f64> = per_rep.iter().filter_map(|p| p[i].1).collect();
                let cells = match stats::summarize(&v) {
                    Some(s) => vec![
                        s.n.to_string(),
                        format!("{:.3}", s.median),
                        format!("{:.3}", s.min),
                        format!("{:.3}", s.max),
                    ],
                    None => vec!["0".into(), "–".into(), "–".into(), "–".into()],
                };
                let mut row = vec![name.to_string()];
                row.extend(cells);
                rows.push(row);
            }
        }
        out += &stats::table(&["phase", "n", "median s", "min s", "max s"], &rows);
        let unc = r.failover.iter().map(|f| f.clock_uncertainty_s).fold(0.0, f64::max);
        out += &format!("\nClock offset host ↔ survivor known to ±{unc:.3} s.\n\n");
    }
    for e in &r.errors {
        out += &format!("- error: {e}\n");
    }
    out
}

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
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(parse_timestamp_ns("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_timestamp_ns("2000-03-01T00:00:00.5Z"),
            Some(951_868_800 * 1_000_000_000 + 500_000_000)
        );
        assert_eq!(
            parse_timestamp_ns("2026-12-06T21:11:03.123456Z"),
            Some(1_796_591_463 * 1_000_000_000 + 123_456_000)
        );
        assert_eq!(parse_timestamp_ns("2026-12-06 21:11:03Z"), None);
        assert_eq!(parse_timestamp_ns("2026-13-06T21:11:03Z"), None);
        assert_eq!(parse_timestamp_ns("2026-12-06T21:11:03.12x4Z"), None);
        assert_eq!(parse_timestamp_ns("2026-12-06T21:11:03"), None);
    }

    const LOG: &str = "\
2026-12-06T21:00:00.000000Z  WARN cldaemon: node node1 is down: old; this node is connected and may take over its applications
2026-12-06T21:00:01.000000Z  INFO cldaemon: starting webdata app=\"webdata\"
2026-12-06T21:00:10.000000Z  INFO cldaemon: heartbeat noise
2026-12-06T21:00:12.000000Z  WARN cldaemon: node node1 is down: heartbeat timeout; this node is connected and may take over its applications node=\"node1\"
2026-12-06T21:00:14.500000Z  INFO cldaemon: starting webdata app=\"webdata\"
2026-12-06T21:00:15.000000Z  INFO cldaemon: DRBD resource webdata-www is Primary here app=\"webdata\"
2026-12-06T21:00:15.250000Z  INFO cldaemon: fsck /dev/drbd0: Clean app=\"webdata\"
2026-12-06T21:00:15.300000Z  INFO cldaemon: mounted /dev/drbd0 on /webdata/www app=\"webdata\"
2026-12-06T21:00:15.900000Z  INFO cldaemon: webdata is running app=\"webdata\"
garbage line
";

    #[test]
    fn steps_after_the_fault_only() {
        let fault = parse_timestamp_ns("2026-12-06T21:00:08Z").expect("ts");
        let s = steps(LOG, fault, "node1");
        assert_eq!(
            s,
            Steps {
                detected: Some(4.0),
                starting: Some(6.5),
                primary: Some(7.0),
                fsck: Some(7.25),
                mounted: Some(7.3),
                running: Some(7.9),
            }
        );
        // Another peer's name matches nothing, but the later steps are still found in order.
        let s = steps(LOG, fault, "node2");
        assert_eq!(s.detected, None);
        assert_eq!(s.starting, Some(6.5));
        // Nothing after the end of the log.
        let late = parse_timestamp_ns("2026-12-06T22:00:00Z").expect("ts");
        assert_eq!(steps(LOG, late, "node1"), Steps::default());
    }

    #[test]
    fn phases_are_consecutive_differences() {
        let fault = parse_timestamp_ns("2026-12-06T21:00:08Z").expect("ts");
        let rep = FailoverRep {
            rep: 1,
            from: "node1".into(),
            to: "node2".into(),
            seconds: Some(8.2),
            steps: steps(LOG, fault, "node1"),
            clock_uncertainty_s: 0.01,
            resync_s: None,
        };
        let p: Vec<f64> = phases(&rep).iter().map(|(_, v)| v.expect("all present")).collect();
        let want = [4.0, 2.5, 0.5, 0.25, 0.05, 0.6, 0.3];
        assert_eq!(p.len(), want.len());
        for (a, b) in p.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{p:?}");
        }
        let missing = FailoverRep { steps: Steps { fsck: None, ..rep.steps.clone() }, ..rep };
        let p = phases(&missing);
        assert_eq!(p[3].1, None);
        assert_eq!(p[4].1, None);
        assert!(p[5].1.is_some());
    }

    #[test]
    fn ping_summary() {
        let busybox = "20 packets transmitted, 20 packets received, 0% packet loss\nround-trip min/avg/max = 0.512/1.204/3.950 ms\n";
        assert_eq!(parse_ping(busybox), Some((0.512, 1.204, 3.950)));
        let iputils = "rtt min/avg/max/mdev = 0.040/0.052/0.071/0.010 ms";
        assert_eq!(parse_ping(iputils), Some((0.040, 0.052, 0.071)));
        assert_eq!(parse_ping("ping: sendto: Network unreachable"), None);
    }

    #[test]
    fn dd_summary() {
        let out = "48+0 records in\n48+0 records out\n50331648 bytes (50 MB, 48 MiB) copied, 4 s, 12.6 MB/s\n";
        assert_eq!(parse_dd(out), Some(50_331_648.0 / 4.0 / 1e6));
        let gb = "1073741824 bytes (1.1 GB, 1.0 GiB) copied, 0.5 s, 2.1 GB/s";
        assert_eq!(parse_dd(gb), Some(1073741824.0 / 0.5 / 1e6));
        assert_eq!(parse_dd("gdd: error writing: No space left on device"), None);
        assert_eq!(parse_dd("0 bytes copied, 0 s, 0 kB/s"), None);
    }

    #[test]
    fn markdown_ratios() {
        let lat = |target: &str, v: Vec<f64>| LatencyRun {
            target: target.into(),
            rep: 1,
            report: FsyncReport { path: "/x".into(), size: 4096, latencies_us: v, total_s: 1.0 },
        };
        let thr = |target: &str, v: f64| ThroughputRun {
            target: target.into(),
            rep: 1,
            mb_s: Some(v),
            output: String::new(),
        };
        let r = Results {
            command: "bench replication".into(),
            latency: vec![lat("raw", vec![1000.0, 1000.0]), lat("drbd", vec![3000.0, 3000.0])],
            throughput: vec![thr("raw", 100.0), thr("drbd", 25.0)],
            ..Results::default()
        };
        let md = markdown(&r);
        assert!(md.contains("| raw | 2 | 1.00 | 1.00 | 1.00 | 1.00 | 1000.00 |"), "{md}");
        assert!(
            md.contains("| **drbd ÷ raw** |  | 3.00× | 3.00× | 3.00× | 3.00× | 0.33× |"),
            "{md}"
        );
        assert!(md.contains("| **drbd ÷ raw** |  | 0.25× |  |  |"), "{md}");
        assert!(!md.contains("Failover"), "{md}");
    }
}
