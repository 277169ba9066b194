//! `linuxha demo`: a two-node cluster in network namespaces, built and shown, then removed.
//!
//! What it shows today: two lab nodes with two networks each and an outside host, the example
//! cluster and its `apache` application built on both nodes with the seed's exact commands,
//! `clstat`, and a silent network cut of node1 at the switch (the fault a failover answers).
//! The daemons and the failover itself come with the membership and application work; the
//! demo grows with them.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use cl_lab::{Lab, LabSpec};
use cl_wire::msg::{ApplicationState, ClusterStatus, LinkState, LocalStateView, NodeState};

use crate::cli::DemoArgs;
use crate::fail::{Failure, Outcome};

/// The example configuration, embedded so the demo works from an installed binary too.
const EXAMPLE_FILES: [(&str, &str, u32); 4] = [
    (
        "etc/cluster/clconf.xml",
        include_str!("../../../../examples/cluster1/etc/cluster/clconf.xml"),
        0o644,
    ),
    (
        "etc/cluster/apache/appconf.xml",
        include_str!("../../../../examples/cluster1/etc/cluster/apache/appconf.xml"),
        0o644,
    ),
    (
        "etc/cluster/apache/start",
        include_str!("../../../../examples/cluster1/etc/cluster/apache/start"),
        0o755,
    ),
    (
        "etc/cluster/apache/stop",
        include_str!("../../../../examples/cluster1/etc/cluster/apache/stop"),
        0o755,
    ),
];

/// Tools the lab needs, with the Debian package that has each.
pub(crate) const LAB_TOOLS: [(&str, &str); 6] = [
    ("ip", "iproute2"),
    ("nft", "nftables"),
    ("ping", "iputils-ping"),
    ("blkid", "util-linux"),
    ("nsenter", "util-linux"),
    ("mkfs.ext4", "e2fsprogs"),
];

fn fail(e: impl std::fmt::Display) -> Failure {
    Failure::runtime(format!("demo: {e:#}"))
}

fn step(text: &str) {
    println!("\n==> {text}");
}

/// Run the demonstration.
pub fn run(args: &DemoArgs) -> Outcome<()> {
    preflight()?;
    let exe = std::env::current_exe().map_err(fail)?;
    step("building a lab: node1, node2 (two networks each) and ext (client, known connection)");
    let mut lab = Lab::up(LabSpec::default()).map_err(fail)?;
    println!("lab {} is up", lab.name());
    let result = show(&mut lab, &exe);
    if args.keep {
        lab.detach().map_err(fail)?;
        println!("\nlab {} kept; remove it with: linuxha lab down {}", lab.name(), lab.name());
    } else {
        step("removing the lab");
        let name = lab.name().to_string();
        lab.down().map_err(fail)?;
        println!("lab {name} removed: namespaces, switch, cgroups and node roots are gone");
    }
    result
}

fn show(lab: &mut Lab, exe: &Path) -> Outcome<()> {
    let exe = exe.to_string_lossy().into_owned();
    let nodes = lab.nodes();
    step("installing the example configuration on both nodes (examples/cluster1)");
    for node in &nodes {
        let root = lab.root(node).map_err(fail)?.to_path_buf();
        for (relative, text, mode) in EXAMPLE_FILES {
            let path = root.join(relative);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(fail)?;
            }
            std::fs::write(&path, text).map_err(fail)?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(fail)?;
        }
        // A sparse image stands in for the application's disk.
        std::fs::create_dir_all(root.join("dev/linuxha")).map_err(fail)?;
        let image = std::fs::File::create(root.join("dev/linuxha/apache")).map_err(fail)?;
        image.set_len(32 << 20).map_err(fail)?;
    }
    let first = nodes.first().cloned().unwrap_or_default();
    step(&format!("{first}: clbuild --genkey (then the key is copied to every node)"));
    run_on(lab, &first, &[&exe, "clbuild", "--genkey"])?;
    let key = std::fs::read(lab.root(&first).map_err(fail)?.join("etc/cluster/cluster.key"))
        .map_err(fail)?;
    for node in nodes.iter().skip(1) {
        let path = lab.root(node).map_err(fail)?.join("etc/cluster/cluster.key");
        std::fs::write(&path, &key).map_err(fail)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
    }
    for node in &nodes {
        step(&format!("{node}: the migration guide's build commands"));
        run_on(lab, node, &[&exe, "clbuild", "--verbose", "--force"])?;
        run_on(
            lab,
            node,
            &[&exe, "clbuildapp", "--force", "--vgbuild", "--verbose", "--application", "apache"],
        )?;
        run_on(
            lab,
            node,
            &[&exe, "clbuildapp", "--force", "--build", "--verbose", "--application", "apache"],
        )?;
    }
    let second = nodes.get(1).cloned().unwrap_or_default();
    step("starting the node manager (cldaemon) on both nodes, as the boot unit would");
    for node in &nodes {
        run_on(lab, node, &[&exe, "cldaemon"])?;
    }
    step(&format!(
        "{first}: clform --verbose (starts the autostart application apache on {first})"
    ));
    run_on(lab, &first, &[&exe, "clform", "--verbose"])?;
    let ps = lab.run(&first, &["sh", "-c", "ps -eo pid,ppid,args | grep -E '(cldaemon|cllockd|clnetd|clhbd|clhbd2)-cluster1' | grep -v grep"]).map_err(fail)?;
    let own: Vec<String> = lab.pids(&first).map_err(fail)?.iter().map(|p| p.to_string()).collect();
    println!("[{first}]# ps -ef | grep cluster1");
    for line in String::from_utf8_lossy(&ps.stdout).lines() {
        if own.iter().any(|p| line.split_whitespace().next() == Some(p)) {
            println!("  {}", line.trim());
        }
    }
    wait_for(lab, &second, &exe, "both nodes up", Duration::from_secs(10), |s| {
        node_state(s, &first) == Some(NodeState::Up) && links_up(s, &first)
    })?;
    step(&format!("{second}: clstat"));
    run_on_status(lab, &second, &[&exe, "clstat"])?;

    wait_for(lab, &second, &exe, "apache running", Duration::from_secs(20), |s| {
        app_node(s) == first
    })?;
    // The start script returns as soon as the server is launched; give it a moment to listen.
    let mut served = None;
    for _ in 0..50 {
        served = fetch(lab);
        if served.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("[ext]# curl http://10.10.0.100/  ->  {}", served.unwrap_or_default().trim());

    step(&format!(
        "fault: {first} silently cut from both networks at the switch (carrier stays up)"
    ));
    lab.cut(&first, None).map_err(fail)?;
    let cut_at = Instant::now();
    wait_for(
        lab,
        &second,
        &exe,
        &format!("{second} marks {first} down"),
        Duration::from_secs(10),
        |s| node_state(s, &first) == Some(NodeState::Down),
    )?;
    println!(
        "{second} marked {first} down {} ms after the cut (heartbeat timeout 1000 ms)",
        cut_at.elapsed().as_millis()
    );
    wait_for(
        lab,
        &first,
        &exe,
        &format!("{first} knows it is isolated"),
        Duration::from_secs(10),
        |s| s.local_state == LocalStateView::Isolated,
    )?;
    println!("{first} declared itself isolated {} ms after the cut", cut_at.elapsed().as_millis());
    let mut answered = None;
    while cut_at.elapsed() < Duration::from_secs(20) {
        if fetch(lab).is_some_and(|t| t.contains(&second)) {
            answered = Some(cut_at.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    match answered {
        Some(t) => println!("ext is served by {second} {} ms after the cut (detection 1000 ms + take-over delay 1000 ms + start)", t.as_millis()),
        None => return Err(Failure::runtime(format!("demo: {second} did not take over apache within 20 s"))),
    }
    step(&format!("{second}: clstat (connected: it took over {first}'s application)"));
    run_on_status(lab, &second, &[&exe, "clstat"])?;
    step(&format!("{first}: clstat (isolated: it stopped its copy and takes nothing over)"));
    run_on_status(lab, &first, &[&exe, "clstat"])?;
    for (node, file) in [(&second, "cldaemon.log"), (&first, "cldaemon.log")] {
        let log = std::fs::read_to_string(
            lab.root(node).map_err(fail)?.join("var/log/cluster").join(file),
        )
        .unwrap_or_default();
        println!("[{node}] /var/log/cluster/{file}:");
        for line in log.lines().filter(|l| l.contains(" is down") || l.contains("isolated")).take(3)
        {
            println!("  {line}");
        }
    }

    step("healing the cut: the nodes find each other again, without a restart");
    lab.heal(&first).map_err(fail)?;
    wait_for(lab, &first, &exe, "both nodes up again", Duration::from_secs(10), |s| {
        node_state(s, &second) == Some(NodeState::Up)
            && links_up(s, &second)
            && s.local_state == LocalStateView::Connected
    })?;
    run_on_status(lab, &first, &[&exe, "clstat"])?;
    let served = fetch(lab).unwrap_or_default();
    println!("[ext]# curl http://10.10.0.100/  ->  {} (manual failback: it stays)", served.trim());
    step(&format!("{first}: clhalt --force --verbose (stops the application, then the daemons)"));
    run_on(lab, &first, &[&exe, "clhalt", "--force", "--verbose"])?;
    Ok(())
}

fn run_on(lab: &Lab, node: &str, argv: &[&str]) -> Outcome<Output> {
    let shown: Vec<&str> = argv.iter().skip(1).copied().collect();
    println!("[{node}]# {}", shown.join(" "));
    let output = lab.run(node, argv).map_err(fail)?;
    print!("{}", String::from_utf8_lossy(&output.stdout));
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    if !output.status.success() {
        return Err(Failure::runtime(format!("demo: `{}` failed on {node}", shown.join(" "))));
    }
    Ok(output)
}

/// The lab needs root and a few tools; on Debian, install missing tools as the tests do.
fn preflight() -> Outcome<()> {
    preflight_tools(&LAB_TOOLS)
}

/// Root and `tools` (tool, Debian package): missing ones are installed with apt-get.
pub(crate) fn preflight_tools(tools: &[(&str, &str)]) -> Outcome<()> {
    if !nix_is_root() {
        return Err(Failure::runtime(
            "demo: needs root (it creates network namespaces); run it with sudo",
        ));
    }
    let missing: Vec<&str> =
        tools.iter().filter(|(tool, _)| !on_path(tool)).map(|(_, package)| *package).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !on_path("apt-get") {
        return Err(Failure::runtime(format!(
            "demo: missing tools; install the packages {}",
            missing.join(" ")
        )));
    }
    println!("demo: installing {} (apt-get)", missing.join(" "));
    let ok = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {} >/dev/null", missing.join(" ")))
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if ok {
        Ok(())
    } else {
        Err(Failure::runtime(format!(
            "demo: could not install {}; install them and run the demo again",
            missing.join(" ")
        )))
    }
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false)
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// clstat exits 3 when the cluster is not formed: show it either way.
fn run_on_status(lab: &Lab, node: &str, argv: &[&str]) -> Outcome<()> {
    let shown: Vec<&str> = argv.iter().skip(1).copied().collect();
    println!("[{node}]# {}", shown.join(" "));
    let output = lab.run(node, argv).map_err(fail)?;
    print!("{}", String::from_utf8_lossy(&output.stdout));
    Ok(())
}

fn node_state(status: &ClusterStatus, node: &str) -> Option<NodeState> {
    status.nodes.iter().find(|n| n.name == node).map(|n| n.state)
}

fn links_up(status: &ClusterStatus, node: &str) -> bool {
    status
        .nodes
        .iter()
        .find(|n| n.name == node)
        .is_some_and(|n| !n.links.is_empty() && n.links.iter().all(|l| l.state == LinkState::Up))
}

/// Poll `clstat --json` on `node` until `done` holds.
fn wait_for(
    lab: &Lab,
    node: &str,
    exe: &str,
    what: &str,
    limit: Duration,
    done: impl Fn(&ClusterStatus) -> bool,
) -> Outcome<()> {
    let start = Instant::now();
    while start.elapsed() < limit {
        let output = lab.run(node, &[exe, "clstat", "--json"]).map_err(fail)?;
        if let Ok(status) = serde_json::from_slice::<ClusterStatus>(&output.stdout) {
            if done(&status) {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(Failure::runtime(format!("demo: gave up waiting for {what} after {} s", limit.as_secs())))
}

/// Where `apache` runs, per clstat --json.
fn app_node(status: &ClusterStatus) -> String {
    status
        .applications
        .iter()
        .find(|a| a.name == "apache" && a.state == ApplicationState::Running)
        .and_then(|a| a.node.clone())
        .unwrap_or_default()
}

/// The page the VIP serves, fetched from ext.
fn fetch(lab: &Lab) -> Option<String> {
    let script = "import urllib.request;print(urllib.request.urlopen('http://10.10.0.100/',timeout=0.5).read().decode())";
    let output = lab.run("ext", &["python3", "-c", script]).ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}
