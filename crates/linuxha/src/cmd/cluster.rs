//! `clform`, `clhalt`, `clstat`: commands answered by the local cldaemon over its admin socket.

use std::io::Write;
use std::time::Duration;

use cl_paths::Paths;
use cl_wire::msg::{
    AdminRequest, AdminResponse, ApplicationState, ClusterState, ClusterStatus, LocalStateView,
    NodeState,
};

use crate::cli::{ClformArgs, ClhaltArgs, ClstatArgs};
use crate::fail::{Failure, Outcome};
use crate::names::{self, Kind};
use crate::site;

/// Exit code of clstat when the cluster is not formed on this node.
pub const EXIT_NOT_FORMED: i32 = 3;

fn runtime(command: &str) -> Outcome<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime(format!("{command}: {e}")))
}

/// Ask the local cldaemon; a cldaemon that is not running is one clear sentence.
pub(crate) fn ask(
    command: &str,
    paths: &Paths,
    request: &AdminRequest,
    timeout: Duration,
) -> Outcome<Option<AdminResponse>> {
    let cluster = site::built_cluster(command, paths)?;
    let socket = cl_daemon::context::admin_socket(paths, &cluster.config.name);
    if !socket.exists() {
        return Ok(None);
    }
    let rt = runtime(command)?;
    match rt.block_on(cl_daemon::transport::admin_request(&socket, request, timeout)) {
        Ok(response) => Ok(Some(response)),
        Err(e) => {
            let refused = e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>().is_some_and(|io| {
                    matches!(
                        io.kind(),
                        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
                    )
                })
            });
            if refused {
                Ok(None)
            } else {
                Err(Failure::runtime(format!("{command}: {e:#}")))
            }
        }
    }
}

fn not_running(command: &str) -> Failure {
    Failure::runtime(format!(
        "{command}: cldaemon is not running on this node; start it with `cldaemon` (at boot: the linuxha-cldaemon unit)"
    ))
}

fn finish(command: &str, verbose: bool, response: AdminResponse) -> Outcome<()> {
    match response {
        AdminResponse::Done { lines } => {
            if verbose {
                for line in lines {
                    println!("{command}: {line}");
                }
            }
            Ok(())
        }
        AdminResponse::Failed { message, lines } => {
            if verbose {
                for line in lines {
                    println!("{command}: {line}");
                }
            }
            // cldaemon's own refusals do not name the command; clhalt's and clform's do.
            if message.starts_with(&format!("{command}:")) {
                Err(Failure::runtime(message))
            } else {
                Err(Failure::runtime(format!("{command}: {message}")))
            }
        }
        AdminResponse::Status(_) | AdminResponse::Storage(_) | AdminResponse::FencePeer { .. } => {
            Err(Failure::runtime(format!("{command}: unexpected answer from cldaemon")))
        }
    }
}

/// Run clform.
pub fn clform(paths: &Paths, args: &ClformArgs) -> Outcome<()> {
    if args.verbose {
        println!("clform: asking the local cldaemon to form the cluster on every reachable node");
    }
    let request = AdminRequest::Form { noapps: args.noapps };
    let response = ask("clform", paths, &request, Duration::from_secs(60))?
        .ok_or_else(|| not_running("clform"))?;
    finish("clform", args.verbose, response)
}

/// Run clhalt.
pub fn clhalt(paths: &Paths, args: &ClhaltArgs) -> Outcome<()> {
    if let Some(node) = &args.node {
        names::syntax("clhalt", Kind::Node, node)?;
        names::node("clhalt", &site::built_cluster("clhalt", paths)?.config, node)?;
    }
    if args.verbose {
        match &args.node {
            Some(node) => println!("clhalt: taking node {node} out of the cluster"),
            None => println!("clhalt: stopping the cluster on every node"),
        }
    }
    let request = AdminRequest::Halt { force: args.force, node: args.node.clone() };
    let response = ask("clhalt", paths, &request, Duration::from_secs(60))?
        .ok_or_else(|| not_running("clhalt"))?;
    finish("clhalt", args.verbose, response)
}

/// Run clstat: exit 0 when formed, 3 when not formed here.
pub fn clstat(paths: &Paths, args: &ClstatArgs) -> Outcome<()> {
    loop {
        let status = fetch_status(paths)?;
        let text = if args.json {
            serde_json::to_string_pretty(&status)
                .map_err(|e| Failure::runtime(format!("clstat: {e}")))?
        } else {
            render(&status, args.verbose)
        };
        if args.watch {
            // Clear the screen and redraw; stop with Ctrl-C.
            println!("\x1b[2J\x1b[H{text}");
            let _ = std::io::stdout().flush();
            std::thread::sleep(Duration::from_millis(500));
            continue;
        }
        println!("{text}");
        if status.state != ClusterState::Formed {
            return Err(Failure { code: EXIT_NOT_FORMED, message: String::new() });
        }
        return Ok(());
    }
}

fn fetch_status(paths: &Paths) -> Outcome<ClusterStatus> {
    let cluster = site::built_cluster("clstat", paths)?;
    match ask("clstat", paths, &AdminRequest::Status, Duration::from_secs(2))? {
        Some(AdminResponse::Status(status)) => Ok(*status),
        Some(_) => Err(Failure::runtime("clstat: unexpected answer from cldaemon")),
        None => {
            let me = site::local_node("clstat")?;
            Ok(ClusterStatus {
                cluster: cluster.config.name.clone(),
                state: ClusterState::NotFormed,
                local: me,
                local_state: LocalStateView::Unknown,
                config_version: cluster.version,
                nodes: cluster
                    .config
                    .nodes
                    .iter()
                    .map(|n| cl_wire::msg::NodeStatus {
                        name: n.name.clone(),
                        state: NodeState::Unknown,
                        links: vec![],
                    })
                    .collect(),
                known_connections: vec![],
                applications: vec![],
                warnings: vec!["cldaemon is not running on this node".into()],
                alarms: vec![],
                takeover: vec![],
                counters: serde_json::Value::Object(Default::default()),
                listeners: vec![],
                guard: Default::default(),
            })
        }
    }
}

/// The human-readable status.
pub fn render(status: &ClusterStatus, verbose: bool) -> String {
    let mut out = String::new();
    let state = if status.state == ClusterState::Formed { "FORMED" } else { "NOT FORMED" };
    out += &format!(
        "Cluster: {}  State: {state}  (seen from {}, {}, configuration version {})\n",
        status.cluster, status.local, status.local_state, status.config_version
    );
    out += &format!("\n{:<12} {:<9} {}\n", "Node", "State", "Heartbeat links (last heard)");
    for node in &status.nodes {
        let links: Vec<String> = node
            .links
            .iter()
            .map(|l| match l.last_heard_ms {
                Some(ms) => format!("{} {} ({ms} ms ago)", l.network, l.state),
                None => format!("{} {} (never)", l.network, l.state),
            })
            .collect();
        let links =
            if node.name == status.local { "(this node)".to_string() } else { links.join(", ") };
        out += &format!("{:<12} {:<9} {}\n", node.name, node.state, links);
    }
    if !status.known_connections.is_empty() {
        out += &format!("\n{:<16} {:<12} {}\n", "Known connection", "Reachable", "Last reply");
        for k in &status.known_connections {
            let last =
                k.last_reply_ms.map(|ms| format!("{ms} ms ago")).unwrap_or_else(|| "never".into());
            out += &format!(
                "{:<16} {:<12} {}\n",
                k.address.to_string(),
                if k.reachable { "yes" } else { "NO" },
                last
            );
        }
    }
    out += "\n";
    if status.applications.is_empty() {
        out += "Applications: none running\n";
    } else {
        out += &format!(
            "{:<16} {:<10} {:<10} {:<9} {}\n",
            "Application", "State", "Node", "Restarts", "Last failure"
        );
        for app in &status.applications {
            let failure = match (&app.last_failure_at, &app.last_failure) {
                (Some(at), Some(reason)) => format!("{at} {reason}"),
                (_, reason) => reason.clone().unwrap_or_else(|| "-".into()),
            };
            out += &format!(
                "{:<16} {:<10} {:<10} {:<9} {}\n",
                app.name,
                app.state,
                app.node.as_deref().unwrap_or("-"),
                app.restarts,
                failure
            );
            if !app.vips.is_empty() {
                out += &format!("  VIPs: {}\n", app.vips.join(" "));
            }
            if !app.monitors.is_empty() {
                let results: Vec<String> = app
                    .monitors
                    .iter()
                    .map(|m| format!("{} {} ({} ms ago)", m.check, m.result, m.age_ms))
                    .collect();
                out += &format!("  monitors: {}\n", results.join("; "));
            }
            for r in &app.resources {
                let result = match (&r.result, r.age_ms) {
                    (Some(result), Some(age)) => format!("{result} ({age} ms ago)"),
                    _ => "not monitored yet".to_string(),
                };
                out += &format!("  resource {} ({}): {result}\n", r.id, r.kind);
            }
            out += &super::storage::render_volumes(status, app);
        }
    }
    if !status.takeover.is_empty() {
        out += "\nTakeover:\n";
        for line in &status.takeover {
            out += &format!("  {line}\n");
        }
    }
    for alarm in &status.alarms {
        out += &format!("ALARM: {alarm}\n");
    }
    for warning in &status.warnings {
        out += &format!("WARNING: {warning}\n");
    }
    if verbose {
        out += &format!("\nFrame counters: {}\n", status.counters);
        out += &render_listeners(&status.listeners);
    }
    out.trim_end().to_string()
}

/// The listeners' connections and rejected input, for `clstat --verbose`.
fn render_listeners(listeners: &[cl_wire::msg::ListenerStatus]) -> String {
    let mut out = String::new();
    if listeners.is_empty() {
        return out;
    }
    out += "\nListeners (open; accepted, refused per address/total, accept errors, timeouts, bad input):\n";
    for l in listeners {
        let c = &l.counters;
        out += &format!(
            "  {} {}: {} open; {} accepted, {}/{} refused, {} accept errors, {} timeouts, {} bad input{}\n",
            l.daemon,
            l.listener,
            l.open,
            c.accepted,
            c.refused_per_address,
            c.refused_total,
            c.accept_errors,
            c.timeouts,
            c.bad_input,
            l.trouble.as_ref().map(|t| format!(" — IN TROUBLE: {t}")).unwrap_or_default()
        );
    }
    out
}

/// After a build, have the local cldaemon send the new configuration to the other nodes.
/// The local build already succeeded, so problems here are warnings, not failures.
pub fn distribute(
    command: &str,
    paths: &Paths,
    kind: cl_wire::msg::ConfigKind,
    force: bool,
    verbose: bool,
) -> Outcome<()> {
    let cluster_changed = kind == cl_wire::msg::ConfigKind::Cluster;
    let running = match ask(
        command,
        paths,
        &AdminRequest::Distribute { kind, force },
        Duration::from_secs(30),
    )? {
        None => {
            if verbose {
                println!("{command}: cldaemon is not running on this node; the other nodes get this version when they join");
            }
            false
        }
        Some(AdminResponse::Done { lines }) => {
            for line in lines {
                if line.contains("refused") {
                    eprintln!("{command}: warning: {line}");
                } else if verbose {
                    println!("{command}: {line}");
                }
            }
            true
        }
        Some(AdminResponse::Failed { message, .. }) => {
            eprintln!("{command}: warning: not distributed: {message}");
            true
        }
        Some(
            AdminResponse::Status(_) | AdminResponse::Storage(_) | AdminResponse::FencePeer { .. },
        ) => true,
    };
    if cluster_changed && running {
        wait_for_reload(command, paths, verbose)?;
    }
    Ok(())
}

/// cldaemon restarts itself on a new cluster configuration: return once it answers with it,
/// so the next command does not meet a restarting daemon.
fn wait_for_reload(command: &str, paths: &Paths, verbose: bool) -> Outcome<()> {
    let installed = site::built_cluster(command, paths)?.version;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        if let Ok(Some(AdminResponse::Status(status))) =
            ask(command, paths, &AdminRequest::Status, Duration::from_secs(1))
        {
            if status.config_version == installed {
                if verbose {
                    println!("{command}: cldaemon now runs configuration version {installed}");
                }
                return Ok(());
            }
        }
    }
    eprintln!("{command}: warning: cldaemon did not restart on version {installed} within 10 s; see /var/log/cluster/cldaemon.log");
    Ok(())
}

/// How long clstartapp/clswitchapp wait for a takeover the guard holds back (longer than any
/// takeover delay) before saying why the application stays stopped.
const BLOCKED_PATIENCE: Duration = Duration::from_secs(10);

/// Run clstartapp, clhaltapp or clswitchapp: ask, then follow the application until it gets
/// where it was sent (or fails), printing each change with --verbose.
pub fn app_command(
    command: &str,
    paths: &Paths,
    action: cl_wire::msg::AppCommand,
    args: &crate::cli::AppCommandArgs,
) -> Outcome<()> {
    use cl_wire::msg::AppCommand;
    // Names first, from the built configuration: an unknown one is answered at once (exit 2),
    // whether or not the cluster is formed, and nothing is asked of cldaemon.
    names::syntax(command, Kind::Application, &args.application)?;
    if let Some(node) = &args.node {
        names::syntax(command, Kind::Node, node)?;
        names::node(command, &site::built_cluster(command, paths)?.config, node)?;
    }
    let built = names::application(command, paths, &args.application)?;
    if let Some(node) = &args.node {
        names::app_node(command, &built, node)?;
    }
    let before = fetch_status(paths)?;
    if before.state != ClusterState::Formed {
        return Err(Failure::runtime(format!(
            "{command}: the cluster is not formed on this node; run clform first"
        )));
    }
    let find =
        |s: &ClusterStatus| s.applications.iter().find(|a| a.name == args.application).cloned();
    let Some(was) = find(&before) else {
        return Err(Failure::config(format!(
            "{command}: there is no application `{}` in the cluster",
            args.application
        )));
    };
    if action != AppCommand::Stop {
        super::storage::refuse_stale_target(command, &before, &was, args.node.as_deref())?;
    }
    // Held until this function returns: a concurrent change of the same application, on
    // either node, is refused naming this command.
    let _lock = crate::cmd::lock::app_lock(command, paths, &args.application)?;
    let request =
        AdminRequest::App { action, app: args.application.clone(), node: args.node.clone() };
    let response = ask(command, paths, &request, Duration::from_secs(10))?
        .ok_or_else(|| not_running(command))?;
    finish(command, false, response)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut last = String::new();
    let mut blocked_since: Option<std::time::Instant> = None;
    loop {
        let status = fetch_status(paths)?;
        let Some(app) = find(&status) else { continue };
        // A silent peer that is not cleared for takeover (it answers, a fence fails, no lease)
        // keeps the application stopped by design: say so instead of waiting it out.
        let blocked = action != AppCommand::Stop
            && app.state == ApplicationState::Stopped
            && !status.takeover.is_empty();
        match (blocked, blocked_since) {
            (false, _) => blocked_since = None,
            (true, None) => blocked_since = Some(std::time::Instant::now()),
            (true, Some(since)) if since.elapsed() > BLOCKED_PATIENCE => {
                let why =
                    status.alarms.first().or(status.takeover.first()).cloned().unwrap_or_default();
                return Err(Failure::runtime(format!(
                    "{command}: {} stays stopped: a silent node is not cleared for takeover ({why}); see clstat",
                    app.name
                )));
            }
            (true, Some(_)) => {}
        }
        let shown = format!("{} {}", app.state, app.node.as_deref().unwrap_or("-"));
        if args.verbose && shown != last {
            println!(
                "{command}: {} is {}{}",
                app.name,
                app.state,
                app.node.as_deref().map(|n| format!(" on {n}")).unwrap_or_default()
            );
            last = shown;
        }
        let wanted_node = |n: &Option<String>| args.node.is_none() || n == &args.node;
        let done = match action {
            AppCommand::Start => app.state == ApplicationState::Running && wanted_node(&app.node),
            AppCommand::Stop => app.node.is_none(),
            AppCommand::Switch => {
                app.state == ApplicationState::Running
                    && app.node != was.node
                    && wanted_node(&app.node)
            }
        };
        if done {
            return Ok(());
        }
        if app.state == ApplicationState::Failed {
            let why = app.last_failure.unwrap_or_else(|| "see /var/log/cluster".into());
            return Err(Failure::runtime(format!("{command}: {} failed: {why}", app.name)));
        }
        if std::time::Instant::now() > deadline {
            return Err(Failure::runtime(format!(
                "{command}: {} is {} after 120 s; see /var/log/cluster/cldaemon.log",
                app.name, app.state
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
