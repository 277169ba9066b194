//! `bench`: the failover benchmark. linuxha side by side with keepalived and
//! Pacemaker/Corosync on the same lab topology (docs/benchmarks.md). It reports; it never
//! fails because a machine is slow, and it does not run in CI.

mod fsync;
mod probe;
mod replication;
mod report;
mod runner;
mod serve;
mod stats;
mod systems;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::report::{Machine, Results};
use crate::runner::Bed;
use crate::systems::Programs;

/// The failover benchmark: linuxha, keepalived and Pacemaker/Corosync in the same lab.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Failover scenarios a–e.
    Failover(Opts),
    /// RSS and idle CPU of each system on one node.
    Footprint(Opts),
    /// Status command latency (clstat, crm_mon -1), idle and during a failover.
    Clstat(Opts),
    /// The false-failover soak under stress-ng.
    Soak(Opts),
    /// Footprint, status latency and failover for each system, then the soak.
    All(Opts),
    /// Replicated storage (DRBD) in QEMU guests: sync write latency, throughput, failover.
    Replication(RepOpts),
    /// (internal) The client on ext.
    #[command(hide = true)]
    Probe(ProbeArgs),
    /// (internal) The service behind the VIP.
    #[command(hide = true)]
    Serve(ServeArgs),
    /// (internal) keepalived's health check.
    #[command(hide = true)]
    Check(CheckArgs),
    /// (internal) Time a command N times.
    #[command(hide = true)]
    Repeat(RepeatArgs),
    /// (internal, in a guest) N synchronous writes, each timed; JSON on stdout.
    #[command(hide = true)]
    FsyncProbe(FsyncArgs),
    /// (internal, in a guest) The wall clock in Unix nanoseconds.
    #[command(hide = true)]
    Clock,
}

#[derive(Args, Debug, Clone)]
struct RepOpts {
    /// Latency and throughput rounds per target, and failover repetitions.
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Synchronous writes per latency round.
    #[arg(long, default_value_t = 500)]
    writes: usize,
    /// Where the JSON and markdown results go.
    #[arg(long, default_value = "bench-results")]
    results: PathBuf,
    /// Directory with the release `linuxha` (and this program) shared with the guests
    /// (default: this program's directory).
    #[arg(long)]
    binary_dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct FsyncArgs {
    #[arg(long)]
    file: PathBuf,
    #[arg(long, default_value_t = 500)]
    count: usize,
    #[arg(long, default_value_t = 4096)]
    size: usize,
}

#[derive(Args, Debug, Clone)]
struct Opts {
    /// Repetitions per system and scenario.
    #[arg(long, default_value_t = 10)]
    reps: usize,
    /// Systems, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "linuxha,linuxha-fast,linuxha-arbitrator,linuxha-arbitrator-fast,linuxha-fence,linuxha-fence-fast,keepalived,keepalived-fast,pacemaker,pacemaker-fast"
    )]
    systems: Vec<String>,
    /// Scenarios, comma-separated: a isolated, b powered off, c service killed, d planned
    /// switch, e heal after a.
    #[arg(long, value_delimiter = ',', default_value = "a,b,c,d,e")]
    scenarios: Vec<char>,
    /// Where the JSON and markdown results go.
    #[arg(long, default_value = "bench-results")]
    results: PathBuf,
    /// Idle window of the footprint, seconds.
    #[arg(long, default_value_t = 60)]
    idle_secs: u64,
    /// Status command calls per phase.
    #[arg(long, default_value_t = 1000)]
    calls: usize,
    /// Soak length per system, minutes (0: no soak in `all`).
    #[arg(long, default_value_t = 10)]
    soak_minutes: u64,
    /// Systems of the soak, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "linuxha,linuxha-fast,keepalived-fast")]
    soak_systems: Vec<String>,
    /// The linuxha binary (default: `linuxha` beside this program; `cargo build --release`).
    #[arg(long)]
    linuxha: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct ProbeArgs {
    #[arg(long)]
    vip: std::net::Ipv4Addr,
    #[arg(long)]
    port: u16,
    #[arg(long)]
    src: std::net::Ipv4Addr,
    #[arg(long, default_value = "eth0")]
    iface: String,
    #[arg(long, default_value_t = 5)]
    interval_ms: u64,
    #[arg(long, default_value_t = 20)]
    timeout_ms: u64,
}

#[derive(Args, Debug)]
struct ServeArgs {
    #[arg(long, default_value_t = 80)]
    port: u16,
    #[arg(long)]
    name: Option<String>,
}

#[derive(Args, Debug)]
struct CheckArgs {
    #[arg(long, default_value_t = 80)]
    port: u16,
    #[arg(long, default_value_t = 500)]
    timeout_ms: u64,
}

#[derive(Args, Debug)]
struct RepeatArgs {
    #[arg(long, default_value_t = 1000)]
    count: usize,
    #[arg(last = true, required = true)]
    argv: Vec<String>,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Probe(a) => probe::run(&probe::ProbeOptions {
            vip: a.vip,
            port: a.port,
            iface: a.iface,
            src: a.src,
            interval: Duration::from_millis(a.interval_ms),
            timeout: Duration::from_millis(a.timeout_ms),
        }),
        Command::Serve(a) => serve::serve(a.port, &serve::node_name(a.name.as_deref())),
        Command::Check(a) => serve::check(a.port, Duration::from_millis(a.timeout_ms)),
        Command::Repeat(a) => serve::repeat(a.count, &a.argv),
        Command::FsyncProbe(a) => fsync::probe(&a.file, a.count, a.size),
        Command::Clock => fsync::clock(),
        Command::Replication(o) => replication_bench(&o),
        Command::Failover(o) => bench(&o, &[Part::Failover]),
        Command::Footprint(o) => bench(&o, &[Part::Footprint]),
        Command::Clstat(o) => bench(&o, &[Part::Latency]),
        Command::Soak(o) => bench(&o, &[Part::Soak]),
        Command::All(o) => bench(&o, &[Part::Footprint, Part::Latency, Part::Failover, Part::Soak]),
    };
    if let Err(e) = result {
        eprintln!("bench: {e:#}");
        std::process::exit(1);
    }
}

/// The parts of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Footprint,
    Latency,
    Failover,
    Soak,
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_string()).unwrap_or_default()
}

fn first_line(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .map(|o| {
            let text = if o.stdout.is_empty() { o.stderr } else { o.stdout };
            String::from_utf8_lossy(&text)
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// Installs the peers' Debian packages that are missing.
fn ensure_packages(systems: &[String], soak: bool) -> Result<()> {
    let mut missing: Vec<&str> = Vec::new();
    if systems.iter().any(|s| s.starts_with("keepalived")) && !on_path("keepalived") {
        missing.push("keepalived");
    }
    if systems.iter().any(|s| s.starts_with("pacemaker")) {
        for (tool, package) in [
            ("corosync", "corosync"),
            ("pacemakerd", "pacemaker"),
            ("crm_mon", "pacemaker-cli-utils"),
        ] {
            if !on_path(tool) {
                missing.push(package);
            }
        }
        if !Path::new("/usr/lib/ocf/resource.d/heartbeat/IPaddr2").exists() {
            missing.push("resource-agents");
        }
    }
    if soak && !on_path("stress-ng") {
        missing.push("stress-ng");
    }
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("bench: installing {}", missing.join(" "));
    let ok = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {}",
            missing.join(" ")
        ))
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        bail!("could not install {}", missing.join(" "));
    }
    Ok(())
}

fn programs(opts: &Opts) -> Result<Programs> {
    let bench = std::env::current_exe().context("locating this program")?;
    let linuxha = match &opts.linuxha {
        Some(p) => p.clone(),
        None => bench.with_file_name("linuxha"),
    };
    if !linuxha.is_file() {
        bail!(
            "{} not found: build it first (cargo build --release -p linuxha -p bench) or pass --linuxha",
            linuxha.display()
        );
    }
    Ok(Programs { bench, linuxha: linuxha.canonicalize()? })
}

/// The host: CPUs, kernel, Debian, load average now.
fn machine() -> Machine {
    Machine {
        nproc: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        cpu: read_trim("/proc/cpuinfo")
            .lines()
            .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split(':').nth(1)))
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        kernel: read_trim("/proc/sys/kernel/osrelease"),
        debian: read_trim("/etc/debian_version"),
        load_start: read_trim("/proc/loadavg"),
        ..Machine::default()
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// `bench replication`: boots the VM lab's replicated cluster and measures it.
fn replication_bench(opts: &RepOpts) -> Result<()> {
    cl_lab::check_supported()?;
    let dir = match &opts.binary_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()
            .context("locating this program")?
            .parent()
            .context("this program's directory")?
            .to_path_buf(),
    };
    for program in ["linuxha", "bench"] {
        if !dir.join(program).is_file() {
            bail!(
                "{} not found: the guests run it from there (cargo build --release -p linuxha -p bench)",
                dir.join(program).display()
            );
        }
    }
    let mut results = replication::Results {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        started_unix: unix_now(),
        machine: machine(),
        reps: opts.reps,
        writes: opts.writes,
        ..replication::Results::default()
    };
    std::fs::create_dir_all(&opts.results)?;
    let stamp = results.started_unix;
    let json_path = opts.results.join(format!("replication-{stamp}.json"));
    let md_path = opts.results.join(format!("replication-{stamp}.md"));
    let save = |r: &replication::Results| -> Result<()> {
        std::fs::write(&json_path, serde_json::to_string_pretty(r)?)?;
        std::fs::write(&md_path, replication::markdown(r))?;
        Ok(())
    };
    let options = replication::Options { reps: opts.reps, writes: opts.writes };
    if let Err(e) = replication::run(&dir, &options, &mut results, &save) {
        eprintln!("[replication] stopped: {e:#}");
        results.errors.push(format!("{e:#}"));
    }
    results.machine.load_end = read_trim("/proc/loadavg");
    save(&results)?;
    println!("{}", replication::markdown(&results));
    eprintln!("bench: results in {} and {}", json_path.display(), md_path.display());
    Ok(())
}

fn bench(opts: &Opts, parts: &[Part]) -> Result<()> {
    cl_lab::check_supported()?;
    for s in &opts.systems {
        runner::make(s)?;
    }
    for s in &opts.scenarios {
        if !"abcde".contains(*s) {
            bail!("unknown scenario {s:?} (a, b, c, d, e)");
        }
    }
    let soak = parts.contains(&Part::Soak) && opts.soak_minutes > 0;
    let mut all_systems = opts.systems.clone();
    if soak {
        all_systems.extend(opts.soak_systems.iter().cloned());
    }
    ensure_packages(&all_systems, soak)?;
    let programs = programs(opts)?;
    let mut results = Results {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        started_unix: unix_now(),
        reps: opts.reps,
        machine: machine(),
        ..Results::default()
    };
    let linuxha = programs.linuxha.to_string_lossy().into_owned();
    for (name, program, args) in [
        ("linuxha", linuxha.as_str(), &["--version"][..]),
        ("keepalived", "keepalived", &["--version"][..]),
        ("corosync", "corosync", &["-v"][..]),
        ("pacemaker", "pacemakerd", &["--version"][..]),
    ] {
        if program.starts_with('/') || on_path(program) {
            results.machine.versions.push((name.into(), first_line(program, args)));
        }
    }
    std::fs::create_dir_all(&opts.results)?;
    let stamp = results.started_unix;
    let json_path = opts.results.join(format!("bench-{stamp}.json"));
    let md_path = opts.results.join(format!("bench-{stamp}.md"));
    let save = |results: &Results| -> Result<()> {
        std::fs::write(&json_path, serde_json::to_string_pretty(results)?)?;
        std::fs::write(&md_path, report::markdown(results))?;
        Ok(())
    };
    let per_system: Vec<Part> = parts.iter().copied().filter(|p| *p != Part::Soak).collect();
    if !per_system.is_empty() {
        for id in &opts.systems {
            let sys = runner::make(id)?;
            results.systems.push((id.clone(), sys.label()));
            if let Err(e) = run_system(id, opts, &programs, &per_system, &mut results) {
                eprintln!("[{id}] stopped: {e:#}");
                results.errors.push(format!("{id}: {e:#}"));
            }
            save(&results)?;
        }
    }
    if soak {
        for id in &opts.soak_systems {
            if !results.systems.iter().any(|(i, _)| i == id) {
                results.systems.push((id.clone(), runner::make(id)?.label()));
            }
            let run = || -> Result<runner::Soak> {
                let mut bed = Bed::up(id, &programs)?;
                runner::soak(&mut bed, &programs, Duration::from_secs(opts.soak_minutes * 60))
            };
            match run() {
                Ok(s) => {
                    eprintln!("[{id}] soak: {} false failovers", s.owner_changes);
                    results.soak.push(s);
                }
                Err(e) => {
                    eprintln!("[{id}] soak stopped: {e:#}");
                    results.errors.push(format!("{id} soak: {e:#}"));
                }
            }
            save(&results)?;
        }
    }
    results.machine.load_end = read_trim("/proc/loadavg");
    save(&results)?;
    println!("{}", report::markdown(&results));
    eprintln!("bench: results in {} and {}", json_path.display(), md_path.display());
    Ok(())
}

fn run_system(
    id: &str,
    opts: &Opts,
    programs: &Programs,
    parts: &[Part],
    results: &mut Results,
) -> Result<()> {
    let mut bed = Bed::up(id, programs)?;
    for part in parts {
        match part {
            Part::Footprint => {
                let f = runner::footprint(&mut bed, programs, Duration::from_secs(opts.idle_secs))?;
                eprintln!(
                    "[{id}] footprint: {:.1} MiB RSS (at the start of the window {:.1}), {:.1} MiB PSS, {:.3} % CPU",
                    f.rss_mib, f.rss_start_mib, f.pss_mib, f.cpu_percent
                );
                results.footprint.push(f);
            }
            Part::Latency => {
                results.latency.extend(runner::latency(&mut bed, programs, opts.calls)?)
            }
            Part::Failover => {
                let mut reps = Vec::new();
                let mut incidents = Vec::new();
                let r = runner::failover(
                    &mut bed,
                    programs,
                    &opts.scenarios,
                    opts.reps,
                    &mut reps,
                    &mut incidents,
                );
                results.incidents.extend(incidents);
                results.failover.extend(reps);
                r?;
            }
            Part::Soak => {}
        }
    }
    Ok(())
}
