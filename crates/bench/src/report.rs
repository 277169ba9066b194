//! The results: everything measured, the machine it ran on, as JSON and as markdown tables.

use serde::Serialize;

use crate::runner::{Footprint, Latency, Rep, Soak, SYSTEM_IDS};
use crate::stats::{self, Row};

/// The machine and the software measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Machine {
    /// CPUs available.
    pub nproc: usize,
    /// CPU model.
    pub cpu: String,
    /// Kernel release.
    pub kernel: String,
    /// Debian version.
    pub debian: String,
    /// /proc/loadavg when the run started.
    pub load_start: String,
    /// /proc/loadavg when it ended.
    pub load_end: String,
    /// Versions of the systems (first line of each `--version`).
    pub versions: Vec<(String, String)>,
}

/// Everything one run measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Results {
    /// The command line.
    pub command: String,
    /// Unix time of the start.
    pub started_unix: u64,
    /// The machine.
    pub machine: Machine,
    /// Ids and labels of the systems.
    pub systems: Vec<(String, String)>,
    /// Repetitions per scenario asked for.
    pub reps: usize,
    /// Failover repetitions.
    pub failover: Vec<Rep>,
    /// Footprints.
    pub footprint: Vec<Footprint>,
    /// Status command latencies.
    pub latency: Vec<Latency>,
    /// Soaks.
    pub soak: Vec<Soak>,
    /// Errors that ended a system's part of the run early.
    pub errors: Vec<String>,
    /// Systems that did not become steady again after a repetition (the bed was rebuilt).
    pub incidents: Vec<String>,
}

/// Scenario letters and what they are.
const SCENARIOS: [(char, &str); 5] = [
    ('a', "a: node isolated"),
    ('b', "b: node powered off"),
    ('c', "c: service killed"),
    ('d', "d: planned switch"),
    ('e', "e: heal after a"),
];

fn label(results: &Results, id: &str) -> String {
    results.systems.iter().find(|(i, _)| i == id).map(|(_, l)| l.clone()).unwrap_or(id.into())
}

/// The markdown report of `results`.
pub fn markdown(results: &Results) -> String {
    let mut out = String::new();
    let m = &results.machine;
    out += &format!(
        "Machine: {} CPUs ({}), kernel {}, Debian {}; load average at start {}, at end {}.\n\n",
        m.nproc, m.cpu, m.kernel, m.debian, m.load_start, m.load_end
    );
    if !m.versions.is_empty() {
        let v: Vec<String> = m.versions.iter().map(|(k, v)| format!("{k} {v}")).collect();
        out += &format!("Versions: {}.\n\n", v.join("; "));
    }
    out += &format!("Command: `{}`\n\n", results.command);
    if !results.failover.is_empty() {
        out +=
            "### Failover: fault → first successful TCP connect to the VIP from ext (seconds)\n\n";
        let mut rows = Vec::new();
        for (letter, name) in SCENARIOS {
            for id in SYSTEM_IDS {
                let reps: Vec<&Rep> = results
                    .failover
                    .iter()
                    .filter(|r| r.scenario == letter && r.system == id)
                    .collect();
                if reps.is_empty() {
                    continue;
                }
                let values: Vec<f64> = reps.iter().filter_map(|r| r.seconds).collect();
                let failed = reps.len() - values.len();
                let two = reps.iter().filter(|r| r.two_owner_samples > 0).count();
                let mut note = format!("two owners in {two}/{}", reps.len());
                if letter == 'e' {
                    let gaps: Vec<f64> =
                        reps.iter().filter_map(|r| r.heal.as_ref().map(|h| h.max_gap_s)).collect();
                    let worst = gaps.iter().copied().fold(0.0, f64::max);
                    let over = gaps.iter().filter(|g| **g > 0.1).count();
                    note +=
                        &format!("; gap > 0.1 s in {over}/{}, worst gap {worst:.3} s", gaps.len());
                }
                rows.push(Row {
                    scenario: name.to_string(),
                    system: id.to_string(),
                    values,
                    failed,
                    note,
                });
            }
        }
        out += &stats::failover_table(&rows, &["linuxha", "linuxha-fast"]);
        out += "\n";
    }
    if !results.footprint.is_empty() {
        out += "### Footprint: the node holding the service, idle\n\n";
        let rows: Vec<Vec<String>> = results
            .footprint
            .iter()
            .map(|f| {
                let procs: Vec<String> = f
                    .processes
                    .iter()
                    .map(|(n, k)| format!("{n} {:.1}", *k as f64 / 1024.0))
                    .collect();
                vec![
                    label(results, &f.system),
                    format!("{:.1}", f.rss_mib),
                    format!("{:.1}", f.pss_mib),
                    format!("{:.3}", f.cpu_percent),
                    format!("{:.0}", f.window_s),
                    procs.join(", "),
                    f.cpu_by_process
                        .iter()
                        .filter(|(_, c)| *c >= 0.01)
                        .map(|(n, c)| format!("{n} {c:.2}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                ]
            })
            .collect();
        out += &stats::table(
            &[
                "system",
                "RSS MiB (sum)",
                "PSS MiB (sum)",
                "idle CPU % of one core",
                "window s",
                "processes (RSS MiB)",
                "CPU % by process (≥ 0.01)",
            ],
            &rows,
        );
        out += "\n";
    }
    if !results.latency.is_empty() {
        out += "### Status command latency (on the passive node)\n\n";
        let rows: Vec<Vec<String>> = results
            .latency
            .iter()
            .filter_map(|l| {
                let s = stats::summarize(&l.ms)?;
                Some(vec![
                    label(results, &l.system),
                    format!("`{}`", l.command),
                    l.phase.clone(),
                    s.n.to_string(),
                    format!("{:.1}", s.median),
                    format!("{:.1}", s.p99),
                    format!("{:.1}", s.max),
                ])
            })
            .collect();
        out += &stats::table(
            &["system", "command", "phase", "calls", "p50 ms", "p99 ms", "max ms"],
            &rows,
        );
        out += "\n";
    }
    if !results.soak.is_empty() {
        out += "### False-failover soak (stress-ng: both CPUs and the disk)\n\n";
        let rows: Vec<Vec<String>> = results
            .soak
            .iter()
            .map(|s| {
                let worst = s.outages_s.iter().copied().fold(0.0, f64::max);
                vec![
                    label(results, &s.system),
                    format!("{:.0}", s.seconds / 60.0),
                    s.owner_changes.to_string(),
                    s.vip_gone.to_string(),
                    s.vip_twice.to_string(),
                    format!("{} (worst {worst:.3} s)", s.outages_s.len()),
                ]
            })
            .collect();
        out += &stats::table(
            &[
                "system",
                "minutes",
                "false failovers (VIP moved)",
                "checks with VIP nowhere",
                "checks with VIP twice",
                "client outages ≥ 0.1 s",
            ],
            &rows,
        );
        out += "\n";
    }
    if !results.incidents.is_empty() {
        out += "Not steady again after a repetition (the lab and the system were rebuilt):\n\n";
        for i in &results.incidents {
            let first = i.lines().next().unwrap_or("");
            out += &format!("- {first}\n");
        }
        out += "\n";
    }
    for e in &results.errors {
        out += &format!("- error: {e}\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::HealOutcome;

    fn rep(system: &str, scenario: char, seconds: Option<f64>, gap: Option<f64>) -> Rep {
        Rep {
            system: system.into(),
            scenario,
            rep: 1,
            active: "node1".into(),
            seconds,
            two_owner_samples: 0,
            heal: gap.map(|g| HealOutcome {
                final_owner: Some("node2".into()),
                reach_s: seconds,
                max_gap_s: g,
                two_owner_samples: 0,
                samples: 100,
            }),
            timeline: Vec::new(),
        }
    }

    #[test]
    fn markdown_has_every_section_in_system_order() {
        let results = Results {
            command: "bench all".into(),
            systems: vec![("linuxha".into(), "linuxha default".into())],
            failover: vec![
                rep("keepalived", 'a', Some(3.0), None),
                rep("linuxha", 'a', Some(1.5), None),
                rep("linuxha", 'e', Some(0.0), Some(0.0)),
                rep("keepalived", 'e', Some(20.0), Some(19.5)),
                rep("keepalived", 'e', None, Some(0.0)),
            ],
            soak: vec![Soak {
                system: "linuxha".into(),
                seconds: 600.0,
                owner_changes: 0,
                vip_gone: 1,
                vip_twice: 0,
                outages_s: vec![0.2],
            }],
            ..Results::default()
        };
        let md = markdown(&results);
        let a_linuxha = md.find("| a: node isolated | linuxha |").expect("linuxha row");
        let a_keepalived = md.find("| a: node isolated | keepalived |").expect("keepalived row");
        assert!(a_linuxha < a_keepalived, "{md}");
        assert!(md.contains("| 0.50× |"), "linuxha ÷ keepalived in a: {md}");
        assert!(md.contains("gap > 0.1 s in 1/2, worst gap 19.500 s; 1 not recovered"), "{md}");
        assert!(md.contains("| linuxha default | 10 | 0 | 1 | 0 | 1 (worst 0.200 s) |"), "{md}");
        assert!(md.contains("Command: `bench all`"), "{md}");
        assert!(!md.contains("### Footprint"), "{md}");
    }
}
