//! Replicated storage commands: the DRBD handlers cldaemon's resource files name.

use std::time::{Duration, Instant};

use cl_paths::Paths;
use cl_wire::msg::{AdminRequest, AdminResponse, NodeState};

use crate::cli::{DrbdHandler, DrbdHandlerArgs};
use crate::fail::{Failure, Outcome};

/// Between two questions to cldaemon while it has not decided about the peer.
const ASK_AGAIN: Duration = Duration::from_millis(250);

/// Run a DRBD handler. fence-peer exits with DRBD's codes (cl-core `storage::FenceAnswer`).
pub fn drbd_handler(paths: &Paths, args: &DrbdHandlerArgs) -> Outcome<()> {
    let resource =
        args.resource.clone().or_else(|| std::env::var("DRBD_RESOURCE").ok()).ok_or_else(|| {
            Failure::config(
                "drbd-handler: no resource: DRBD sets DRBD_RESOURCE, or give --resource",
            )
        })?;
    match args.handler {
        DrbdHandler::FencePeer => fence_peer(paths, &resource, args.wait),
        DrbdHandler::AfterResyncTarget => {
            eprintln!("drbd-handler: {resource}: resync done; this node's copy is UpToDate again");
            Ok(())
        }
        DrbdHandler::SplitBrain => {
            eprintln!("drbd-handler: {resource}: DRBD found a split brain; see clstat");
            Ok(())
        }
    }
}

fn fence_peer(paths: &Paths, resource: &str, wait: Duration) -> Outcome<()> {
    const COMMAND: &str = "drbd-handler fence-peer";
    let deadline = Instant::now() + wait;
    let mut last = String::from("cldaemon is not running");
    while Instant::now() < deadline {
        let request = AdminRequest::FencePeer { resource: resource.to_string() };
        match super::cluster::ask(COMMAND, paths, &request, Duration::from_secs(10)) {
            Ok(Some(AdminResponse::FencePeer { answer: Some(answer), detail })) => {
                eprintln!("{COMMAND}: {resource}: {detail}: answering DRBD {answer:?}");
                std::process::exit(answer.exit_code());
            }
            Ok(Some(AdminResponse::FencePeer { answer: None, detail })) => last = detail,
            Ok(Some(AdminResponse::Failed { message, .. })) => last = message,
            Ok(Some(_)) => last = "unexpected answer from cldaemon".into(),
            Ok(None) => last = "cldaemon is not running".into(),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(ASK_AGAIN);
    }
    Err(Failure::runtime(format!(
        "{COMMAND}: {resource}: no answer within {} s ({last}); DRBD keeps I/O frozen until the administrator acts (drbdadm resume-io {resource} once the peer is known to be down or outdated)",
        wait.as_secs()
    )))
}

/// clstat's lines about an application's replicated volumes: each volume's roles and disks on
/// both nodes, the connection, what is out of sync and the resync's progress; then the nodes
/// that may not run it because of their data.
pub fn render_volumes(
    status: &cl_wire::msg::ClusterStatus,
    app: &cl_wire::msg::ApplicationStatus,
) -> String {
    let mut out = String::new();
    let peer =
        status.nodes.iter().map(|n| n.name.as_str()).find(|n| *n != status.local).unwrap_or("peer");
    for volume in &app.volumes {
        let head =
            format!("  data {} ({} on {}):", volume.resource, volume.device, volume.mountpoint);
        let Some(s) = &volume.state else {
            out += &format!("{head} not up on {}\n", status.local);
            continue;
        };
        let sync = if s.out_of_sync_kib == 0 {
            "in sync".to_string()
        } else {
            format!("{} out of sync", kib(s.out_of_sync_kib))
        };
        out += &format!(
            "{head} {} {} {}, {peer} {} {}, {} {}, {sync}{}\n",
            status.local,
            s.role,
            s.disk,
            s.peer_role,
            s.peer_disk,
            s.connection,
            s.replication,
            if s.suspended { ", I/O FROZEN" } else { "" },
        );
        if let Some(p) = &volume.resync {
            let left = p.eta_secs.map(|s| format!(", {s} s left")).unwrap_or_default();
            out += &format!("    resync {:.1}% at {}/s{left}\n", p.percent, kib(p.rate_kib));
        }
    }
    for blocked in &app.data_blocked {
        out += &format!("  not on {}: {}\n", blocked.node, blocked.reason);
    }
    out
}

/// KiB as a readable size.
pub fn kib(kib: u64) -> String {
    match kib {
        k if k >= 1024 * 1024 => format!("{:.1} GiB", k as f64 / (1024.0 * 1024.0)),
        k if k >= 1024 => format!("{:.1} MiB", k as f64 / 1024.0),
        k => format!("{k} KiB"),
    }
}

/// clstartapp/clswitchapp: refuse at once, naming the reason, when the node the application
/// would go to may not promote its data (Outdated, Inconsistent, maybe stale, split brain).
pub fn refuse_stale_target(
    command: &str,
    status: &cl_wire::msg::ClusterStatus,
    app: &cl_wire::msg::ApplicationStatus,
    node: Option<&str>,
) -> Outcome<()> {
    if app.data_blocked.is_empty() {
        return Ok(());
    }
    let blocked = |n: &str| app.data_blocked.iter().find(|b| b.node == n);
    let up: Vec<&str> = status
        .nodes
        .iter()
        .filter(|n| n.state == NodeState::Up)
        .map(|n| n.name.as_str())
        .filter(|n| app.node.as_deref() != Some(*n) || command != "clswitchapp")
        .collect();
    let refused = match node {
        Some(target) => blocked(target).into_iter().collect::<Vec<_>>(),
        None if up.iter().all(|n| blocked(n).is_some()) => {
            up.iter().filter_map(|n| blocked(n)).collect()
        }
        None => Vec::new(),
    };
    if refused.is_empty() {
        return Ok(());
    }
    let why: Vec<String> = refused.iter().map(|b| format!("{}: {}", b.node, b.reason)).collect();
    Err(Failure::runtime(format!(
        "{command}: {} cannot run there: {}; see clstat",
        app.name,
        why.join("; ")
    )))
}
