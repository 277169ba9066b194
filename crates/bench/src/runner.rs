//! Running the measurements: a test bed (lab + system + probe), the failover scenarios, the
//! footprint, the status command latency and the false-failover soak.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cl_lab::{Lab, LabSpec};
use serde::Serialize;

use crate::probe::{self, mono_ns, secs_between, HealOutcome, Probe, Sample};
use crate::systems::{
    self,
    keepalived::Keepalived,
    linuxha::{Linuxha, Protection},
    other,
    pacemaker::Pacemaker,
    pids_tree, vip_holders, Programs, System, PORT, VIP,
};

/// Every system id, in table order.
pub const SYSTEM_IDS: [&str; 10] = [
    "linuxha",
    "linuxha-fast",
    "linuxha-arbitrator",
    "linuxha-arbitrator-fast",
    "linuxha-fence",
    "linuxha-fence-fast",
    "keepalived",
    "keepalived-fast",
    "pacemaker",
    "pacemaker-fast",
];

/// The longest a failover may take before the repetition counts as not recovered.
const RECOVERY_LIMIT: Duration = Duration::from_secs(60);
/// The longest the benchmark waits for a system to be steady again between repetitions.
const SETTLE_LIMIT: Duration = Duration::from_secs(120);
/// How long a system may take to be steady after a paused node resumes (scenario b).
const AFTER_RESUME_LIMIT: Duration = Duration::from_secs(30);
/// How long everything must look right before the next repetition starts.
const STABLE_FOR: Duration = Duration::from_secs(2);

/// A new system by id.
pub fn make(id: &str) -> Result<Box<dyn System>> {
    Ok(match id {
        "linuxha" => Box::new(Linuxha::new(false)),
        "linuxha-fast" => Box::new(Linuxha::new(true)),
        "linuxha-arbitrator" => Box::new(Linuxha::protected(false, Protection::Arbitrator)),
        "linuxha-arbitrator-fast" => Box::new(Linuxha::protected(true, Protection::Arbitrator)),
        "linuxha-fence" => Box::new(Linuxha::protected(false, Protection::Fence)),
        "linuxha-fence-fast" => Box::new(Linuxha::protected(true, Protection::Fence)),
        "keepalived" => Box::new(Keepalived::new(false)),
        "keepalived-fast" => Box::new(Keepalived::new(true)),
        "pacemaker" => Box::new(Pacemaker::new(false)),
        "pacemaker-fast" => Box::new(Pacemaker::new(true)),
        other => bail!("unknown system {other:?} (known: {})", SYSTEM_IDS.join(", ")),
    })
}

/// A lab with one system running in it and the probe on ext.
pub struct Bed {
    /// The system (dropped before the lab: its children are reaped first).
    pub sys: Box<dyn System>,
    /// The client on ext, while one runs.
    pub probe: Option<Probe>,
    /// The lab; dropping it kills everything left on the nodes.
    pub lab: Lab,
    /// The system's id.
    pub id: String,
}

impl Bed {
    /// A new lab with system `id` started in it and the probe running.
    pub fn up(id: &str, programs: &Programs) -> Result<Bed> {
        let mut sys = make(id)?;
        debug_assert_eq!(sys.id(), id);
        let mut lab = Lab::up(LabSpec::default()).context("lab up")?;
        eprintln!("[{id}] lab {} up; starting {}", lab.name(), sys.label());
        let started = Instant::now();
        sys.start(&mut lab, programs).with_context(|| format!("starting {id}"))?;
        eprintln!("[{id}] started in {:.1} s", started.elapsed().as_secs_f64());
        let mut bed = Bed { sys, probe: None, lab, id: id.to_string() };
        bed.start_probe(programs)?;
        Ok(bed)
    }

    /// Starts the probe (again).
    pub fn start_probe(&mut self, programs: &Programs) -> Result<()> {
        if self.probe.is_none() {
            self.probe = Some(Probe::start(&self.lab, &programs.bench, VIP, PORT)?);
        }
        Ok(())
    }

    /// The probe; an error when it is stopped.
    pub fn probe(&self) -> Result<&Probe> {
        self.probe.as_ref().context("the probe is not running")
    }

    /// Waits until the system is healthy, exactly one node holds the VIP and (with the probe
    /// running) ext is served by it, all without a break for [`STABLE_FOR`].
    pub fn settle(&self, programs: &Programs, limit: Duration) -> Result<String> {
        let start = Instant::now();
        let mut stable_since: Option<Instant> = None;
        loop {
            let holders = vip_holders(&self.lab)?;
            let mut good = holders.len() == 1 && self.sys.healthy(&self.lab, programs)?;
            if good {
                if let Some(probe) = &self.probe {
                    let recent = probe.since(mono_ns().saturating_sub(500_000_000));
                    good = !recent.is_empty()
                        && recent.iter().all(|s| s.ok && s.owner.as_deref() == Some(&holders[0]));
                }
            }
            if good {
                let since = *stable_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= STABLE_FOR {
                    return Ok(holders[0].clone());
                }
            } else {
                stable_since = None;
            }
            if start.elapsed() > limit {
                bail!(
                    "{} not steady within {limit:?}: VIP on {holders:?}\n{}",
                    self.id,
                    self.sys.describe(&self.lab, programs)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// One repetition of one scenario.
#[derive(Clone, Debug, Serialize)]
pub struct Rep {
    /// System id.
    pub system: String,
    /// Scenario letter.
    pub scenario: char,
    /// Repetition number from 1.
    pub rep: usize,
    /// Node that held the service before the fault.
    pub active: String,
    /// Seconds from the fault to the first successful connect (None: not within the limit).
    pub seconds: Option<f64>,
    /// Samples between the fault and the recovery in which two MACs answered ARP.
    pub two_owner_samples: usize,
    /// For scenario e: what the client saw after the heal.
    pub heal: Option<HealOutcome>,
    /// What the client saw, change by change, from the fault (or heal) on.
    pub timeline: Vec<probe::Change>,
}

/// Runs `reps` repetitions of each scenario on the bed, appending to `out`.
pub fn failover(
    bed: &mut Bed,
    programs: &Programs,
    scenarios: &[char],
    reps: usize,
    out: &mut Vec<Rep>,
    incidents: &mut Vec<String>,
) -> Result<()> {
    let mut order: Vec<char> = Vec::new();
    for s in ['a', 'b', 'c', 'd'] {
        if scenarios.contains(&s) || (s == 'a' && scenarios.contains(&'e')) {
            order.push(s);
        }
    }
    let heal_too = scenarios.contains(&'e');
    for scenario in order {
        for rep in 1..=reps {
            if let Err(e) = bed.settle(programs, SETTLE_LIMIT) {
                eprintln!("[{}] {e:#}\n[{}] resetting the bed", bed.id, bed.id);
                incidents.push(format!(
                    "{}: before {scenario} rep {rep} (after the previous repetition): {e:#}",
                    bed.id
                ));
                reset(bed, programs)?;
            }
            let results = one(bed, programs, scenario, heal_too, rep)
                .with_context(|| format!("{} scenario {scenario} rep {rep}", bed.id))?;
            if scenario == 'b' {
                // A node back from a pause (thawed, links healed) must not leave the service on
                // two nodes; if the system does not sort that out soon, note it and start over.
                if let Err(e) = bed.settle(programs, AFTER_RESUME_LIMIT) {
                    eprintln!("[{}] not steady after the resume; resetting the bed", bed.id);
                    incidents.push(format!("{}: after b rep {rep} (resume): {e:#}", bed.id));
                    reset(bed, programs)?;
                }
            }
            for r in results {
                let shown =
                    r.seconds.map(|s| format!("{s:.3} s")).unwrap_or("not recovered".into());
                let heal = r
                    .heal
                    .as_ref()
                    .map(|h| {
                        format!(
                            " (final owner {:?}, max gap {:.3} s, two-owner samples {})",
                            h.final_owner, h.max_gap_s, h.two_owner_samples
                        )
                    })
                    .unwrap_or_default();
                eprintln!(
                    "[{}] {} rep {rep} from {}: {shown}{heal}",
                    r.system, r.scenario, r.active
                );
                if scenarios.contains(&r.scenario) {
                    out.push(r);
                }
            }
        }
    }
    Ok(())
}

/// Replaces the bed's lab and system with fresh ones.
fn reset(bed: &mut Bed, programs: &Programs) -> Result<()> {
    bed.probe = None;
    if std::env::var_os("BENCH_KEEP_ON_FAIL").is_some() {
        // For a post-mortem: leave the lab as it is (`linuxha lab down NAME` removes it).
        bed.lab.detach()?;
        bail!("lab {} kept for inspection (BENCH_KEEP_ON_FAIL)", bed.lab.name());
    }
    let id = bed.id.clone();
    let fresh = Bed::up(&id, programs)?;
    let old = std::mem::replace(bed, fresh);
    drop(old);
    bed.settle(programs, SETTLE_LIMIT)?;
    Ok(())
}

/// The first sample time at or after `from` for which `pred` holds.
fn first(samples: &[Sample], from: u64, pred: impl Fn(&Sample) -> bool) -> Option<u64> {
    probe::first_after(samples, from, pred).map(|s| s.t_ns)
}

/// One repetition; scenario a also yields e when `heal_too`.
fn one(
    bed: &mut Bed,
    programs: &Programs,
    scenario: char,
    heal_too: bool,
    rep: usize,
) -> Result<Vec<Rep>> {
    let holders = vip_holders(&bed.lab)?;
    let [active] = holders.as_slice() else { bail!("VIP on {holders:?}") };
    let active = active.clone();
    let survivor = other(&active).to_string();
    let rep_of = |scenario: char, t0: u64, end: Option<u64>, samples: &[Sample]| Rep {
        system: bed.id.clone(),
        scenario,
        rep,
        active: active.clone(),
        seconds: end.map(|t| secs_between(t0, t)),
        two_owner_samples: samples
            .iter()
            .filter(|s| end.is_none_or(|e| s.t_ns <= e) && s.two_owners())
            .count(),
        heal: None,
        timeline: probe::timeline(samples, t0),
    };
    let mut reps = Vec::new();
    match scenario {
        'a' | 'b' => {
            let t0 = mono_ns();
            bed.lab.cut(&active, None)?;
            if scenario == 'b' {
                bed.lab.freeze(&active)?;
            }
            let end = bed.probe()?.wait(t0, RECOVERY_LIMIT, |ss| {
                first(ss, t0, |s| s.ok && s.owner.as_deref() == Some(survivor.as_str()))
            });
            reps.push(rep_of(scenario, t0, end, &bed.probe()?.since(t0)));
            if bed.sys.fences() {
                // The survivor powered the former active node off (or will): boot it again,
                // as the administrator would, so the next repetition finds two nodes.
                bed.lab.power_on(&active)?;
                bed.sys.after_power_on(&bed.lab, &active, programs)?;
            } else if scenario == 'b' {
                bed.lab.thaw(&active)?;
            }
            let t_heal = mono_ns();
            bed.lab.heal(&active)?;
            if scenario == 'a' && heal_too {
                watch_heal(bed, programs, t_heal);
                let samples = bed.probe()?.since(t_heal);
                let outcome = probe::heal_outcome(&samples, t_heal);
                let mut r = rep_of('e', t_heal, None, &samples);
                r.seconds = outcome.reach_s;
                r.two_owner_samples = outcome.two_owner_samples;
                r.heal = Some(outcome);
                reps.push(r);
            }
        }
        'c' => {
            let t0 = mono_ns();
            bed.sys.kill_service(&bed.lab, &active)?;
            let end = bed.probe()?.wait(t0, RECOVERY_LIMIT, |ss| {
                probe::recovered_after_outage(ss, t0).map(|s| s.t_ns)
            });
            reps.push(rep_of('c', t0, end, &bed.probe()?.since(t0)));
            bed.sys.after_service_kill(&bed.lab, &active, programs)?;
        }
        'd' => {
            let t0 = mono_ns();
            bed.sys.switch(&bed.lab, &active, &survivor, programs)?;
            let end = bed.probe()?.wait(t0, RECOVERY_LIMIT, |ss| {
                first(ss, t0, |s| s.ok && s.owner.as_deref() == Some(survivor.as_str()))
            });
            reps.push(rep_of('d', t0, end, &bed.probe()?.since(t0)));
            bed.sys.after_switch(&bed.lab, &active, &survivor)?;
        }
        other => bail!("unknown scenario {other:?}"),
    }
    Ok(reps)
}

/// After a heal: watch until the client has been served by one node for 3 s and the system
/// is healthy (at least 5 s, at most 90 s), so late trouble (a VIP left unreachable for tens
/// of seconds) is seen.
fn watch_heal(bed: &Bed, programs: &Programs, t_heal: u64) {
    loop {
        let elapsed = secs_between(t_heal, mono_ns());
        if elapsed > 90.0 {
            return;
        }
        if elapsed >= 5.0 {
            let recent = bed.probe.as_ref().map(|p| p.since(mono_ns() - 3_000_000_000));
            let steady = recent.is_some_and(|r| {
                !r.is_empty()
                    && r.iter().all(|s| s.ok && s.owner.is_some() && s.owner == r[0].owner)
            });
            if steady && bed.sys.healthy(&bed.lab, programs).unwrap_or(false) {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Memory and idle CPU of one node's cluster manager processes.
#[derive(Clone, Debug, Serialize)]
pub struct Footprint {
    /// System id.
    pub system: String,
    /// The node measured (the one holding the service).
    pub node: String,
    /// Process name and RSS in KiB at the end of the idle window, for every process of the
    /// system on the node that lived through it.
    pub processes: Vec<(String, u64)>,
    /// Sum of the RSS at the end of the idle window, MiB.
    pub rss_mib: f64,
    /// Sum of the RSS at the start of the idle window, MiB (a daemon that drops its mapped
    /// file pages now and then shows its steady working set only at the end).
    pub rss_start_mib: f64,
    /// Sum of the PSS (shared pages divided among their users) at the end of the window, MiB.
    pub pss_mib: f64,
    /// The node's CPU time over the idle window, in percent of one CPU.
    pub cpu_percent: f64,
    /// The idle window, seconds.
    pub window_s: f64,
    /// Process name and its own CPU over the window (percent of one CPU), for the processes
    /// that lived through it: where the idle CPU goes.
    pub cpu_by_process: Vec<(String, f64)>,
}

/// utime + stime of `pid` in clock ticks.
fn proc_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state …": comm may hold spaces, so count fields after the last ')'.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The `key` line (`VmRSS:`, `Pss:`) of `/proc/<pid>/<file>` in KiB.
fn proc_kib(pid: u32, file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The cgroup's `usage_usec` (CPU time of everything that ran in it and below, also exited
/// children such as health check scripts).
fn cpu_usec(lab: &Lab, host: &str) -> Result<u64> {
    let stat = std::fs::read_to_string(lab.cgroup(host)?.join("cpu.stat"))?;
    stat.lines()
        .find_map(|l| l.strip_prefix("usage_usec ").and_then(|v| v.trim().parse().ok()))
        .context("usage_usec in cpu.stat")
}

/// Measures the footprint with the probe stopped (a client would make the server busy).
pub fn footprint(bed: &mut Bed, programs: &Programs, window: Duration) -> Result<Footprint> {
    let node = bed.settle(programs, SETTLE_LIMIT)?;
    bed.probe = None;
    // Let start-up work (first monitors, announcements) pass.
    std::thread::sleep(Duration::from_secs(3));
    let mut ticks = Vec::new();
    let mut rss_start = 0;
    for pid in pids_tree(&bed.lab, &node)? {
        if systems::is_bench_helper(pid) {
            continue;
        }
        let Some(rss) = proc_kib(pid, "status", "VmRSS:") else { continue };
        rss_start += rss;
        // argv[0], not comm: linuxha's daemons are started from /proc/self/exe (comm "exe")
        // and name themselves in argv[0]; pacemaker's comm is cut at 15 bytes.
        let words = systems::cmdline(pid);
        let name = words
            .first()
            .map(|w| w.rsplit('/').next().unwrap_or(w).to_string())
            .unwrap_or_default();
        ticks.push((pid, name, proc_ticks(pid)));
    }
    let before = cpu_usec(&bed.lab, &node)?;
    let t0 = Instant::now();
    std::thread::sleep(window);
    let used = cpu_usec(&bed.lab, &node)?.saturating_sub(before);
    let window_s = t0.elapsed().as_secs_f64();
    // Memory at the end of the window: what the idle daemons hold, after any trimming of
    // start-up pages and with everything the idle loops touch faulted back in.
    let mut processes = Vec::new();
    let mut pss = 0;
    for (pid, name, _) in &ticks {
        let Some(rss) = proc_kib(*pid, "status", "VmRSS:") else { continue };
        pss += proc_kib(*pid, "smaps_rollup", "Pss:").unwrap_or(0);
        processes.push((name.clone(), rss));
    }
    processes.sort();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut cpu_by_process: Vec<(String, f64)> = ticks
        .into_iter()
        .filter_map(|(pid, name, before)| {
            let spent = proc_ticks(pid)?.checked_sub(before?)?;
            Some((name, spent as f64 / hz / window_s * 100.0))
        })
        .collect();
    cpu_by_process.sort_by(|a, b| b.1.total_cmp(&a.1));
    bed.start_probe(programs)?;
    let rss_mib = processes.iter().map(|(_, k)| *k as f64).sum::<f64>() / 1024.0;
    Ok(Footprint {
        system: bed.id.clone(),
        node,
        processes,
        rss_mib,
        rss_start_mib: rss_start as f64 / 1024.0,
        pss_mib: pss as f64 / 1024.0,
        cpu_percent: used as f64 / 1e6 / window_s * 100.0,
        window_s,
        cpu_by_process,
    })
}

/// Latencies of the status command.
#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    /// System id.
    pub system: String,
    /// The command (`clstat`, `crm_mon -1`).
    pub command: String,
    /// `idle` or `failover`.
    pub phase: String,
    /// Each call's wall time, ms.
    pub ms: Vec<f64>,
}

/// Runs the system's status command `calls` times on the passive node, idle and from the
/// moment the active node is cut off.
pub fn latency(bed: &mut Bed, programs: &Programs, calls: usize) -> Result<Vec<Latency>> {
    let Some(command) = bed.sys.status_command(programs) else { return Ok(Vec::new()) };
    let shown = command
        .iter()
        .map(|w| w.rsplit('/').next().unwrap_or(w).to_string())
        .collect::<Vec<_>>()
        .join(" ");
    let mut out = Vec::new();
    for phase in ["idle", "failover"] {
        let active = bed.settle(programs, SETTLE_LIMIT)?;
        let passive = other(&active);
        let mut argv = vec![
            programs.bench.to_string_lossy().into_owned(),
            "repeat".into(),
            "--count".into(),
            calls.to_string(),
            "--".into(),
        ];
        argv.extend(command.iter().cloned());
        let mut cmd = bed.lab.exec(passive, &argv)?;
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit());
        // During a failover: the loop starts right after the cut, so its first calls fall into
        // the detection and take-over (a fast command would finish before a later cut).
        if phase == "failover" {
            bed.lab.cut(&active, None)?;
        }
        let child = cmd.spawn()?;
        let output = child.wait_with_output()?;
        if phase == "failover" {
            bed.lab.heal(&active)?;
        }
        let ms: Vec<f64> = serde_json::from_slice(&output.stdout)
            .with_context(|| format!("reading the timings of {shown}"))?;
        eprintln!(
            "[{}] {shown} {phase}: {}",
            bed.id,
            crate::stats::summarize(&ms)
                .map(|s| format!("p50 {:.1} ms, p99 {:.1} ms", s.median, s.p99))
                .unwrap_or_default()
        );
        out.push(Latency {
            system: bed.id.clone(),
            command: shown.clone(),
            phase: phase.into(),
            ms,
        });
    }
    Ok(out)
}

/// What the soak saw.
#[derive(Clone, Debug, Serialize)]
pub struct Soak {
    /// System id.
    pub system: String,
    /// Length, seconds.
    pub seconds: f64,
    /// The VIP moved from one node to the other (false failovers).
    pub owner_changes: usize,
    /// The VIP was on no node at a check (a restart in place, or a move under way).
    pub vip_gone: usize,
    /// The VIP was on both nodes at a check.
    pub vip_twice: usize,
    /// Client outages of 100 ms or more, seconds each.
    pub outages_s: Vec<f64>,
}

/// Loads both CPUs and the disk with stress-ng (on ext, so the lab reaps it) for `length` and
/// counts moves of the VIP that nothing asked for.
pub fn soak(bed: &mut Bed, programs: &Programs, length: Duration) -> Result<Soak> {
    let mut holder = vec![bed.settle(programs, SETTLE_LIMIT)?];
    let dir = bed.lab.root("ext")?.to_string_lossy().into_owned();
    let secs = format!("{}s", length.as_secs().max(1));
    let mut stress = bed.lab.exec(
        "ext",
        &[
            "stress-ng",
            "--cpu",
            "2",
            "--hdd",
            "1",
            "--temp-path",
            &dir,
            "--timeout",
            &secs,
            "--quiet",
        ],
    )?;
    stress.stdin(std::process::Stdio::null());
    let mut child = stress.spawn().context("starting stress-ng")?;
    let t0 = mono_ns();
    let start = Instant::now();
    let (mut owner_changes, mut vip_gone, mut vip_twice) = (0, 0, 0);
    while start.elapsed() < length {
        std::thread::sleep(Duration::from_millis(200));
        let now = vip_holders(&bed.lab)?;
        match now.len() {
            0 => vip_gone += 1,
            1 => {
                if holder.len() == 1 && holder != now {
                    owner_changes += 1;
                    eprintln!("[{}] soak: VIP moved {holder:?} -> {now:?}", bed.id);
                }
                holder = now;
            }
            _ => vip_twice += 1,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let outages = probe::outages(&bed.probe()?.since(t0), t0, mono_ns(), 0.1);
    Ok(Soak {
        system: bed.id.clone(),
        seconds: start.elapsed().as_secs_f64(),
        owner_changes,
        vip_gone,
        vip_twice,
        outages_s: outages,
    })
}
