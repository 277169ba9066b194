//! Forming and halting the cluster: on this node (the engine and the child daemons), across
//! the cluster (clform, clhalt), and joining a cluster that runs elsewhere.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, Result};
use cl_core::membership::{KnownPace, MembershipConfig};
use cl_core::node::{Node, NodeConfig, NodeInput};
use cl_wire::msg::{AdminResponse, ClusterStatus, ConfigKind, NodeState, PeerReply, PeerRequest};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

use crate::context::Context;
use crate::transport::peer_request;

use super::peers::ask_peer;
use super::{Command, Manager, CHILDREN};

impl Manager {
    pub(super) fn form_local(&mut self, noapps: bool) -> Result<String> {
        if self.formed {
            return Ok(format!("{}: already formed", self.ctx.local));
        }
        let cluster = self.ctx.cluster();
        let links = cluster
            .node(&self.ctx.local)
            .map(|n| {
                n.networks.iter().filter(|net| net.heartbeat).map(|net| net.name.clone()).collect()
            })
            .unwrap_or_default();
        let config = MembershipConfig {
            local: self.ctx.local.clone(),
            peers: self.ctx.peers(),
            links,
            interval: cluster.heartbeat.interval,
            timeout: cluster.heartbeat.timeout,
            known_connections: cluster.known_connections.clone(),
            ping_freshness: MembershipConfig::default_freshness(cluster.heartbeat.timeout),
            late_warning: None,
            slow_pings: MembershipConfig::default_slow_pings(
                cluster.heartbeat.interval,
                cluster.heartbeat.timeout,
            ),
        };
        self.probe_targets = self
            .ctx
            .peers()
            .into_iter()
            .map(|p| {
                let targets = crate::guardctl::probe_targets(&self.ctx, &p);
                (p, targets)
            })
            .collect();
        self.formed = true;
        std::fs::write(self.ctx.formed_marker(), b"formed\n")
            .context("cannot write the formed marker")?;
        for daemon in CHILDREN {
            self.ensure_child(daemon)?;
        }
        // A new engine pings fast until it says otherwise; clnetd may be left slow by an
        // earlier run (an adopted one, a stale file).
        self.set_ping_pace(KnownPace::Fast);
        let mut apps = crate::appctl::AppControl::new(
            self.ctx.clone(),
            self.silence.clone(),
            self.app_events.clone(),
        );
        let mut guard = crate::guardctl::guard_config(&self.ctx);
        // As clhbd last said; it says again with every relay, so an engine formed before that
        // learns it then (NodeInput::BeatGrid).
        let now = self.now();
        guard.beat_grid = self.beats_every.map(|every| crate::heartbeat::beat_grid(now, every));
        let config = NodeConfig {
            membership: config,
            guard,
            apps: apps.policies(),
            epoch: crate::epoch::next_or_clock("application announcements"),
        };
        let node = Node::new(config, self.now());
        self.node =
            Some(if self.notifications.enabled() { node.with_notifications() } else { node });
        apps.start_storage(self.storage_events.clone());
        self.apps = Some(apps);
        self.feed(NodeInput::Formed { start_autostart: !noapps });
        self.publish();
        info!("cluster `{}` formed on this node", self.ctx.name());
        Ok(format!("{}: cluster daemons running", self.ctx.local))
    }

    pub(super) fn halt_local(&mut self) {
        self.stop_children();
        self.formed = false;
        self.node = None;
        self.apps = None;
        crate::guardctl::write_notice(&self.ctx, &[]);
        self.down_links.clear();
        self.lost_known.clear();
        let _ = std::fs::remove_file(self.ctx.formed_marker());
        info!("cluster `{}` halted on this node", self.ctx.name());
        self.publish();
    }
}

pub(super) async fn form_cluster(
    ctx: &Context,
    commands: &mpsc::Sender<Command>,
    mut status: watch::Receiver<ClusterStatus>,
    noapps: bool,
) -> AdminResponse {
    let mut lines = Vec::new();
    // Agree on the configuration before anything starts.
    let mut reachable = Vec::new();
    for peer in ctx.peers() {
        let addresses = ctx.manager_addresses(&peer);
        match ask_peer(ctx, &addresses, &PeerRequest::Hello).await {
            Ok(PeerReply::State { config_version, config_checksum, .. }) => {
                if config_version == ctx.built.version && config_checksum != ctx.checksum {
                    return AdminResponse::Failed {
                        message: format!(
                            "clform: {} has configuration version {} (checksum {}) and {peer} has version {config_version} (checksum {config_checksum}); run `clbuild --force` on the node whose copy should win",
                            ctx.local, ctx.built.version, ctx.checksum
                        ),
                        lines,
                    };
                }
                if config_version != ctx.built.version {
                    lines.push(format!("{peer}: configuration version {config_version}, this node {}; the newer one is distributed by clbuild", ctx.built.version));
                }
                reachable.push(peer);
            }
            Ok(other) => lines.push(format!("{peer}: unexpected answer {other:?}")),
            Err(e) => lines
                .push(format!("{peer}: not reachable ({e:#}); it joins when its cldaemon starts")),
        }
    }
    let (tx, rx) = oneshot::channel();
    if commands.send(Command::FormLocal { noapps, reply: tx }).await.is_err() {
        return AdminResponse::Failed {
            message: "clform: cldaemon is shutting down".into(),
            lines,
        };
    }
    match rx.await {
        Ok(Ok(line)) => lines.push(line),
        Ok(Err(e)) => return AdminResponse::Failed { message: format!("clform: {e}"), lines },
        Err(_) => {
            return AdminResponse::Failed {
                message: "clform: cldaemon is shutting down".into(),
                lines,
            }
        }
    }
    for peer in &reachable {
        let addresses = ctx.manager_addresses(peer);
        match ask_peer(ctx, &addresses, &PeerRequest::Form { noapps }).await {
            Ok(PeerReply::Ok { detail }) => lines.push(detail),
            Ok(PeerReply::Refused { reason }) => lines.push(format!("{peer}: refused: {reason}")),
            Ok(other) => lines.push(format!("{peer}: unexpected answer {other:?}")),
            Err(e) => lines.push(format!("{peer}: {e:#}")),
        }
    }
    // Wait until every reachable peer is seen up (membership agreed), or give up after a while.
    let timeout = ctx.cluster().heartbeat.timeout * 3 + Duration::from_secs(3);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let all_up = {
            let s = status.borrow();
            reachable
                .iter()
                .all(|p| s.nodes.iter().any(|n| &n.name == p && n.state == NodeState::Up))
        };
        if all_up {
            lines.push(format!(
                "membership agreed: {} up",
                std::iter::once(ctx.local.clone())
                    .chain(reachable.iter().cloned())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            if noapps {
                lines.push("no applications started (--noapps)".into());
            } else {
                lines.push(
                    "autostart applications start on their preferred nodes; clstat shows where"
                        .into(),
                );
            }
            return AdminResponse::Done { lines };
        }
        if tokio::time::timeout_at(deadline, status.changed()).await.is_err() {
            return AdminResponse::Failed {
                message: format!("clform: the nodes did not agree on membership within {} s; see /var/log/cluster/cldaemon.log", timeout.as_secs()),
                lines,
            };
        }
    }
}

pub(super) async fn halt_cluster(
    ctx: &Context,
    commands: &mpsc::Sender<Command>,
    mut status: watch::Receiver<ClusterStatus>,
    force: bool,
    node: Option<String>,
) -> AdminResponse {
    let mut lines = Vec::new();
    if let Some(n) = &node {
        if ctx.cluster().node(n).is_none() {
            return AdminResponse::Failed {
                message: format!("clhalt: `{n}` is not a node of cluster `{}`", ctx.name()),
                lines,
            };
        }
    }
    if node.is_none() {
        // The whole cluster: running applications are stopped first (--force) or refused.
        let active = |s: &ClusterStatus| -> Vec<String> {
            s.applications
                .iter()
                .filter_map(|a| a.node.as_ref().map(|n| format!("{} on {n}", a.name)))
                .collect()
        };
        let running = active(&status.borrow());
        if !running.is_empty() {
            if !force {
                return AdminResponse::Failed {
                    message: format!(
                        "clhalt: applications are running ({}); stop them with clhaltapp, or use clhalt --force to stop them first",
                        running.join(", ")
                    ),
                    lines,
                };
            }
            let apps: Vec<String> = status
                .borrow()
                .applications
                .iter()
                .filter(|a| a.node.is_some())
                .map(|a| a.name.clone())
                .collect();
            for app in apps {
                let (tx, rx) = oneshot::channel();
                if commands
                    .send(Command::App(cl_core::apps::AdminOp::Stop { app: app.clone() }, tx))
                    .await
                    .is_ok()
                {
                    let _ = rx.await;
                }
                lines.push(format!("stopping {app}"));
            }
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            while !active(&status.borrow()).is_empty() {
                if tokio::time::timeout_at(deadline, status.changed()).await.is_err() {
                    return AdminResponse::Failed {
                        message: format!(
                            "clhalt: applications did not stop: {}",
                            active(&status.borrow()).join(", ")
                        ),
                        lines,
                    };
                }
            }
            lines.push("all applications stopped".into());
        }
    }
    let targets: Vec<String> = match &node {
        Some(n) => vec![n.clone()],
        None => ctx.peers().into_iter().chain(std::iter::once(ctx.local.clone())).collect(),
    };
    let mut failed = Vec::new();
    for target in targets {
        if target == ctx.local {
            let (tx, rx) = oneshot::channel();
            if commands.send(Command::HaltLocal(tx)).await.is_ok() {
                if let Ok(line) = rx.await {
                    lines.push(line);
                }
            }
            continue;
        }
        let addresses = ctx.manager_addresses(&target);
        match ask_peer(ctx, &addresses, &PeerRequest::Halt { force: false }).await {
            Ok(PeerReply::Ok { detail }) => lines.push(detail),
            Ok(PeerReply::Refused { reason }) => failed.push(format!("{target}: {reason}")),
            Ok(other) => failed.push(format!("{target}: unexpected answer {other:?}")),
            Err(e) => lines.push(format!("{target}: not reachable ({e:#}); nothing to stop there")),
        }
    }
    if failed.is_empty() {
        AdminResponse::Done { lines }
    } else {
        AdminResponse::Failed { message: format!("clhalt: {}", failed.join("; ")), lines }
    }
}

/// Tell every peer this node leaves the cluster; best effort, at most a second each.
pub(super) async fn announce_leaving(ctx: &Context) {
    for peer in ctx.peers() {
        let addresses = ctx.manager_addresses(&peer);
        let request = PeerRequest::Leaving;
        let sent = peer_request(
            &ctx.key,
            ctx.name(),
            &ctx.local,
            &addresses,
            &request,
            Duration::from_secs(1),
        )
        .await;
        if let Err(e) = sent {
            info!(%peer, "could not tell {peer} that this node leaves: {e:#}");
        }
    }
}

/// At start, catch up with a newer configuration a peer has, then join the cluster by itself
/// if a peer runs it.
pub(super) async fn join_if_formed_elsewhere(ctx: Context, commands: mpsc::Sender<Command>) {
    for peer in ctx.peers() {
        let addresses = ctx.manager_addresses(&peer);
        let hello = ask_peer(&ctx, &addresses, &PeerRequest::Hello).await;
        if let Ok(PeerReply::State { config_version, apps, .. }) = &hello {
            if catch_up(&ctx, &peer, &addresses, *config_version, apps).await {
                crate::reexec(&ctx);
            }
        }
        match hello {
            Ok(PeerReply::State { formed: true, config_version, config_checksum, .. }) => {
                if config_version == ctx.built.version && config_checksum != ctx.checksum {
                    error!(%peer, "not joining: {peer} runs configuration version {config_version} ({config_checksum}) and this node version {} ({}); run clbuild --force on the node whose copy should win", ctx.built.version, ctx.checksum);
                    return;
                }
                info!(%peer, "{peer} runs the cluster: joining");
                let (tx, rx) = oneshot::channel();
                // What should run comes from the running peers' announcements.
                if commands.send(Command::FormLocal { noapps: true, reply: tx }).await.is_ok() {
                    match rx.await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => error!("cannot join: {e}"),
                        Err(_) => {}
                    }
                }
                return;
            }
            Ok(_) => info!(%peer, "{peer} does not run the cluster"),
            Err(e) => info!(%peer, "{peer} not reachable: {e:#}"),
        }
    }
}

/// Fetch and install the configurations `peer` has in newer versions. True when the cluster
/// configuration changed (cldaemon must then restart to use it).
pub(super) async fn catch_up(
    ctx: &Context,
    peer: &str,
    addresses: &[SocketAddr],
    their_version: u64,
    their_apps: &[(String, u64)],
) -> bool {
    let mut wanted = Vec::new();
    if their_version > ctx.built.version {
        wanted.push(ConfigKind::Cluster);
    }
    for (app, version) in their_apps {
        let mine = std::fs::read(ctx.paths.built_app(app))
            .ok()
            .and_then(|b| serde_json::from_slice::<cl_config::Built<serde_json::Value>>(&b).ok())
            .map(|b| b.version);
        if mine.is_none_or(|m| m < *version) {
            wanted.push(ConfigKind::App { name: app.clone() });
        }
    }
    let mut cluster_changed = false;
    for kind in wanted {
        let request = PeerRequest::FetchConfig { kind: kind.clone() };
        match ask_peer(ctx, addresses, &request).await {
            Ok(PeerReply::Config { built: Some(built) }) => {
                match crate::sync::install(&ctx.paths, &kind, &built, false) {
                    Ok(detail) => {
                        info!(%peer, "{detail} from {peer}");
                        cluster_changed |= kind == ConfigKind::Cluster;
                    }
                    Err(reason) => {
                        warn!(%peer, "not taking the configuration {peer} has: {reason}")
                    }
                }
            }
            Ok(other) => warn!(%peer, "unexpected answer to a configuration fetch: {other:?}"),
            Err(e) => warn!(%peer, "cannot fetch the configuration: {e:#}"),
        }
    }
    cluster_changed
}

/// Built applications on this node with their versions.
pub(super) fn built_app_versions(ctx: &Context) -> Vec<(String, u64)> {
    let Ok(entries) = std::fs::read_dir(ctx.paths.built_dir()) else { return Vec::new() };
    let mut apps: Vec<(String, u64)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let app = name.strip_prefix("app-")?.strip_suffix(".json")?.to_string();
            let built: cl_config::Built<serde_json::Value> =
                serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
            Some((app, built.version))
        })
        .collect();
    apps.sort();
    apps
}
