//! `linuxha demo --replicated`: the promise of replicated storage, shown on real kernels.
//!
//! Two QEMU guests (Debian's stock kernel, DRBD 8.4 on LVM) become a linuxha cluster built with
//! the seed's commands; the application `webdata` serves its replicated volume on a VIP. A file
//! is written on node1, node1 is powered off hard, and node2 serves the same file. Every step
//! says what it does and how long it took. The guests run the `linuxha` binary of the running
//! executable's directory (`target/release` with `cargo run --release`). The demo holds the
//! machine-wide VM lab lock ([`cl_lab::vm::lock::SHARED_LOCK`]) from start to end.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use cl_lab::vm::cluster::{ClusterSpec, ReplicatedCluster, APP, MOUNTPOINT, RESOURCE, VIP};
use cl_lab::vm::lock::{VmLabLock, SHARED_LOCK};

use crate::cli::DemoArgs;
use crate::fail::{Failure, Outcome};

/// Steps of the demo, numbered as printed.
const STEPS: usize = 9;

/// The file the demo writes on node1 and reads back from node2.
const PROMISE: &str = "promise.txt";

/// Numbered steps with their durations.
struct Steps {
    current: Option<(usize, &'static str, Instant)>,
    done: Vec<(usize, &'static str, Duration)>,
}

impl Steps {
    /// Starts step `n`: prints its title and what it does.
    fn begin(&mut self, n: usize, title: &'static str, what: &str) {
        self.end();
        println!("\n==> {n}/{STEPS} {title}: {what}");
        self.current = Some((n, title, Instant::now()));
    }

    /// Ends the current step: prints how long it took.
    fn end(&mut self) {
        if let Some((n, title, start)) = self.current.take() {
            let took = start.elapsed();
            println!("    ({n}/{STEPS} {title}: {:.1} s)", took.as_secs_f64());
            self.done.push((n, title, took));
        }
    }

    /// The one-sentence failure of the current step.
    fn failed(&self, e: &anyhow::Error) -> Failure {
        let first = format!("{e:#}");
        let first = first.lines().next().unwrap_or("").trim_end_matches(':');
        match self.current {
            Some((n, title, _)) => Failure::runtime(format!(
                "demo --replicated: step {n}/{STEPS} ({title}) failed: {first}"
            )),
            None => Failure::runtime(format!("demo --replicated: {first}")),
        }
    }
}

fn lines(text: &str) {
    for line in text.lines() {
        println!("    {line}");
    }
}

/// Run the replicated demonstration.
pub fn run(args: &DemoArgs) -> Outcome<()> {
    let mut tools = super::demo::LAB_TOOLS.to_vec();
    tools.push(("curl", "curl"));
    super::demo::preflight_tools(&tools)?;
    let exe = std::env::current_exe()
        .map_err(|e| Failure::runtime(format!("demo --replicated: finding this program: {e}")))?;
    let binary_dir = exe.parent().unwrap_or(Path::new(".")).to_path_buf();
    println!(
        "linuxha demo --replicated: two copies of all application data, one on each machine.\n\
         Two QEMU guests with Debian's stock kernel (DRBD 8.4 under LVM) run {}.",
        exe.display()
    );
    if cfg!(debug_assertions) {
        println!(
            "warning: this is a debug build; under TCG the guests are too slow with it and \
             timeouts may fire: use `cargo run --release -- demo --replicated`"
        );
    }
    let _lock = VmLabLock::acquire(Path::new(SHARED_LOCK), |who| {
        println!("waiting for {SHARED_LOCK}: another VM lab is running ({who})");
    })
    .map_err(|e| Failure::runtime(format!("demo --replicated: {e:#}")))?;
    let started = Instant::now();
    let mut steps = Steps { current: None, done: Vec::new() };

    steps.begin(
        1,
        "VM lab assets",
        "the guests' kernel and initramfs, cached in /var/cache/linuxha-vmlab; the first run \
         downloads the kernel package, drbd-utils and lvm2 (~75 MB) and installs qemu-system-x86, \
         busybox-static and cpio with apt-get when missing",
    );
    let assets = cl_lab::check_supported()
        .map_err(anyhow::Error::from)
        .and_then(|()| cl_lab::vm::assets::ensure(&binary_dir.join("linuxha")))
        .map_err(|e| steps.failed(&e))?;
    println!(
        "    kernel {}, {} {}",
        assets.kernel_release,
        if assets.built { "built into" } else { "cached in" },
        assets.dir.display()
    );

    steps.begin(
        2,
        "two guests",
        "boot node1 and node2 (TCG, 512 MiB, a 256 MiB data disk each with the volume group \
         datavg), write clconf.xml and webdata's appconf.xml, clbuild --genkey, clbuild and \
         cldaemon on both",
    );
    let spec = ClusterSpec { build: false, ..ClusterSpec::default() };
    let mut cluster = ReplicatedCluster::up(&binary_dir, spec).map_err(|e| steps.failed(&e))?;
    let boots: Vec<String> = cluster
        .lab
        .boot_times()
        .iter()
        .map(|(node, took)| format!("{node} booted in {:.1} s", took.as_secs_f64()))
        .collect();
    println!("    lab {} is up: {}", cluster.lab.name(), boots.join(", "));

    let shown = show(&mut cluster, &mut steps);
    if let Err(e) = &shown {
        eprintln!("demo --replicated: {e:#}");
        eprintln!("{}", cluster.diagnostics());
    }
    let failure = shown.as_ref().err().map(|e| steps.failed(e));
    let name = cluster.lab.name().to_string();
    if args.keep {
        steps.end();
        cluster.lab.detach().map_err(|e| Failure::runtime(format!("demo --replicated: {e:#}")))?;
        println!("\nlab {name} kept (node1 is powered off):");
        println!("  linuxha lab exec {name} node2 -- clstat");
        println!("  linuxha lab power {name} on node1     # it comes back and resyncs its copy");
        println!("  linuxha lab down {name}");
    } else {
        steps.begin(9, "teardown", "power the guests off, remove taps, bridges and namespaces");
        let down = cluster.lab.down();
        if let Err(e) = down {
            return Err(failure.unwrap_or_else(|| steps.failed(&e)));
        }
        println!("    lab {name} removed");
        steps.end();
    }
    if let Some(failure) = failure {
        return Err(failure);
    }
    let summary: Vec<String> = steps
        .done
        .iter()
        .map(|(n, title, took)| format!("{n} {title} {:.1} s", took.as_secs_f64()))
        .collect();
    println!(
        "\ndemo --replicated: done in {:.0} s ({})",
        started.elapsed().as_secs_f64(),
        summary.join(", ")
    );
    Ok(())
}

/// A command on `node` through the guest agent, shown with its output; fails when it does.
fn shell(c: &ReplicatedCluster, node: &str, command: &str, timeout_secs: u64) -> Result<String> {
    println!("[{node}]# {command}");
    let out = c.run(node, command, timeout_secs)?;
    lines(&out.stdout);
    if out.rc != 0 {
        bail!("`{command}` on {node} exited {}", out.rc);
    }
    Ok(out.stdout)
}

/// clstat on `node` until its volume line holds every one of `needles`; prints it.
fn clstat_until(
    c: &ReplicatedCluster,
    node: &str,
    needles: &[&str],
    limit: Duration,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let out = c.run(node, "clstat", 30)?;
        let volume = out.stdout.lines().find(|l| l.contains(&format!("data {RESOURCE}")));
        if volume.is_some_and(|l| needles.iter().all(|n| l.contains(n))) {
            println!("[{node}]# clstat");
            lines(&out.stdout);
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{node}'s volume line is not `{}` after {} s: {}",
                needles.join(" … "),
                limit.as_secs(),
                volume.unwrap_or("no volume line")
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Steps 3 to 8.
fn show(c: &mut ReplicatedCluster, steps: &mut Steps) -> Result<()> {
    steps.begin(
        3,
        "storage and application",
        "clbuildapp --vgbuild plans and creates both nodes' logical volume, DRBD metadata and \
         filesystem and follows the initial sync; clbuildapp --build installs the application",
    );
    shell(c, "node1", &format!("clbuildapp --vgbuild --yes --verbose --application {APP}"), 300)?;
    shell(c, "node1", &format!("clbuildapp --build --verbose --application {APP}"), 60)?;

    steps.begin(
        4,
        "cluster formed",
        "clform starts the cluster daemons on both nodes; webdata (autostart) starts on node1: \
         DRBD Primary, mount, VIP, busybox httpd",
    );
    shell(c, "node1", "clform --verbose", 120)?;
    c.wait_running_on("node1", Duration::from_secs(90))?;
    clstat_until(
        c,
        "node1",
        &["node1 Primary UpToDate", "node2 Secondary UpToDate", "Connected"],
        Duration::from_secs(60),
    )?;

    steps.begin(
        5,
        "a file written on node1",
        &format!(
            "through the application (an acknowledged append) and directly on {MOUNTPOINT}, \
             then read from the outside host over the VIP {VIP}"
        ),
    );
    let served = Instant::now();
    while c.get("/index.html").is_none() {
        ensure!(served.elapsed() < Duration::from_secs(30), "{APP} is not served on {VIP}");
        std::thread::sleep(Duration::from_millis(200));
    }
    ensure!(c.append(1), "the application did not acknowledge record 1");
    println!(
        "[ext]# curl http://{VIP}/cgi-bin/append?1   ->  ok 1 (on disk: fsync'd before answering)"
    );
    let written = shell(
        c,
        "node1",
        &format!(
            "echo \"written on node1 at $(date -u '+%Y-%m-%d %H:%M:%S UTC')\" > {MOUNTPOINT}/{PROMISE}; sync; cat {MOUNTPOINT}/{PROMISE}"
        ),
        30,
    )?;
    let before = c.get(&format!("/{PROMISE}")).context("the file is not served on the VIP")?;
    println!("[ext]# curl http://{VIP}/{PROMISE}   ->  {}", before.trim());
    ensure!(
        before.trim() == written.trim(),
        "the VIP serves `{}`, not what was written",
        before.trim()
    );

    steps.begin(
        6,
        "node1 powered off",
        "hard, at the power button (QMP quit): no shutdown, no warning",
    );
    c.lab.power_off("node1")?;
    let off = Instant::now();
    println!("    node1 is off ({} UTC)", utc_time_of_day());

    steps.begin(
        7,
        "node2 takes over",
        "node2 misses node1's heartbeats (timeout 4 s under TCG), probes it, waits the take-over \
         delay (the time an isolated node needs to stop its own copy: docs/safety.md), promotes \
         its UpToDate copy, mounts it, takes the VIP and starts the application",
    );
    let after = loop {
        if let Some(body) = c.get(&format!("/{PROMISE}")) {
            break body;
        }
        ensure!(
            off.elapsed() < Duration::from_secs(120),
            "nothing served on {VIP} 120 s after the power-off"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    println!("    {VIP} answers again {:.1} s after the power-off", off.elapsed().as_secs_f64());
    let runs_on = c.running_on("node2")?;
    ensure!(runs_on.as_deref() == Some("node2"), "node2 says {APP} runs on {runs_on:?}");
    println!(
        "    node2's clstat: {APP} running on node2; its log (/var/log/cluster/cldaemon.log):"
    );
    lines(&takeover_log(c));

    steps.begin(
        8,
        "the same file, from node2",
        "fetched over the VIP from the outside host, compared with what node1 served",
    );
    println!("[ext]# curl http://{VIP}/{PROMISE}   ->  {}", after.trim());
    ensure!(after == before, "node2 serves `{}`, node1 served `{}`", after.trim(), before.trim());
    println!("    identical to what node1 served before the power-off");
    let records = c.records().context("records not served")?;
    ensure!(records.contains(&1), "the acknowledged record 1 is missing: {records:?}");
    println!(
        "[ext]# curl http://{VIP}/records   ->  {records:?} (the acknowledged append survived)"
    );
    clstat_until(c, "node2", &["node2 Primary UpToDate"], Duration::from_secs(30))?;
    Ok(())
}

/// What node2's cldaemon logged from marking node1 down to running the application, as
/// `HH:MM:SS.mmm message` lines.
fn takeover_log(c: &ReplicatedCluster) -> String {
    const TELLING: [&str; 8] = [
        "node node1 is down",
        "taking over",
        "starting webdata",
        "fence-peer",
        "is Primary here",
        "mounted",
        "VIP",
        "webdata is running",
    ];
    let log = c
        .run("node2", "cat /var/log/cluster/cldaemon.log", 30)
        .map(|o| o.stdout)
        .unwrap_or_default();
    let all: Vec<&str> = log.lines().collect();
    let from = all.iter().rposition(|l| l.contains("node node1 is down")).unwrap_or(0);
    all[from..]
        .iter()
        .filter(|l| TELLING.iter().any(|t| l.contains(t)))
        .map(|l| {
            // `2026-12-06T21:19:45.552115Z  WARN cldaemon: message key=value…`
            let time = l.get(11..23).unwrap_or("");
            let message = l.split_once("cldaemon: ").map_or(*l, |(_, m)| m);
            let message = message.split(" app=").next().unwrap_or(message);
            let message = message.split(" resource=").next().unwrap_or(message);
            let message = message.split(" peer=").next().unwrap_or(message);
            format!("{time} {message}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Now, as `HH:MM:SS.mmm` UTC, beside the guests' log times (their clocks start from the host's
/// and may drift a second or so under TCG).
fn utc_time_of_day() -> String {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = now.as_secs() % 86_400;
    format!("{:02}:{:02}:{:02}.{:03}", secs / 3600, secs / 60 % 60, secs % 60, now.subsec_millis())
}
