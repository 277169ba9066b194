//! The other nodes' cldaemons: the authenticated `cldaemon` port, and requests to them.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Result;
use cl_wire::msg::{ClusterState, ClusterStatus, ConfigKind, PeerReply, PeerRequest};
use cl_wire::{Kind, Receiver, Sender};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info};

use crate::context::Context;
use crate::transport::peer_request;

use super::formation::built_app_versions;
use super::{Command, PEER_TIMEOUT};

/// One request to a peer's cldaemon, trying each of its addresses.
pub(super) async fn ask_peer(
    ctx: &Context,
    addresses: &[SocketAddr],
    request: &PeerRequest,
) -> Result<PeerReply> {
    peer_request(&ctx.key, ctx.name(), &ctx.local, addresses, request, PEER_TIMEOUT).await
}

/// Send a built configuration to every peer; one progress line each.
pub async fn push_to_peers(
    ctx: &Context,
    kind: &ConfigKind,
    built: &str,
    force: bool,
) -> Vec<String> {
    let mut lines = Vec::new();
    for peer in ctx.peers() {
        let addresses = ctx.manager_addresses(&peer);
        let request =
            PeerRequest::PushConfig { kind: kind.clone(), built: built.to_string(), force };
        match ask_peer(ctx, &addresses, &request).await {
            Ok(PeerReply::Ok { detail }) => lines.push(format!("{peer}: {detail}")),
            Ok(PeerReply::Refused { reason }) => lines.push(format!("{peer}: refused: {reason}")),
            Ok(other) => lines.push(format!("{peer}: unexpected answer {other:?}")),
            Err(e) => lines.push(format!(
                "{peer}: not reachable ({e:#}); it gets the new version when it joins"
            )),
        }
    }
    lines
}

pub(super) async fn serve_peers(
    listener: TcpListener,
    ctx: Context,
    receiver: Arc<std::sync::Mutex<Receiver>>,
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<ClusterStatus>,
) {
    // One sender for every reply of this run: replies echo the client's nonce, so they need no
    // epoch of their own per connection (an epoch is a write to the counter file).
    let sender = match crate::epoch::next() {
        Ok(epoch) => Arc::new(std::sync::Mutex::new(Sender::new(
            ctx.key.clone(),
            ctx.name(),
            &ctx.local,
            epoch,
        ))),
        Err(e) => {
            error!("cannot serve peer requests: {e:#}");
            return;
        }
    };
    let name = listener.local_addr().map(|a| format!("peers {a}")).unwrap_or("peers".into());
    let stats = crate::serve::Listener::register(
        cl_wire::Daemon::Cldaemon,
        name,
        crate::serve::PEER_LIMITS,
    );
    crate::serve::serve(listener, stats, move |mut stream, from, conn| {
        let ctx = ctx.clone();
        let receiver = receiver.clone();
        let sender = sender.clone();
        let commands = commands.clone();
        let status = status.clone();
        async move {
            let accept = crate::exchange::accept::<_, PeerRequest>(
                &mut stream,
                &receiver,
                &sender,
                Kind::NodeManager,
            );
            let incoming = match crate::serve::within(&conn, PEER_TIMEOUT, "a request", accept)
                .await
            {
                Some(Ok(incoming)) => incoming,
                None => return,
                Some(Err(e)) => {
                    let reason = crate::serve::accept_reason(&e);
                    conn.rejected(
                        &reason,
                        &format!("from {from}: {e} (is the cluster key the same on every node?)"),
                    );
                    return;
                }
            };
            let request = incoming.request.clone();
            let reply =
                handle_peer(&ctx, &incoming.header.sender, request, &commands, &status).await;
            let _ = crate::exchange::reply(&mut stream, &sender, &incoming, &reply).await;
        }
    })
    .await
}

pub(super) async fn handle_peer(
    ctx: &Context,
    from: &str,
    request: PeerRequest,
    commands: &mpsc::Sender<Command>,
    status: &watch::Receiver<ClusterStatus>,
) -> PeerReply {
    match request {
        PeerRequest::Hello => {
            let formed = status.borrow().state == ClusterState::Formed;
            let apps = built_app_versions(ctx);
            PeerReply::State {
                node: ctx.local.clone(),
                formed,
                config_version: ctx.built.version,
                config_checksum: ctx.checksum.clone(),
                apps,
            }
        }
        PeerRequest::Apps { announcement } => match serde_json::from_value(announcement) {
            Ok(announcement) => {
                let _ = commands.send(Command::PeerApps(from.to_string(), announcement)).await;
                PeerReply::Ok { detail: String::new() }
            }
            Err(e) => {
                PeerReply::Refused { reason: format!("unreadable application announcement: {e}") }
            }
        },
        PeerRequest::Form { noapps } => {
            let (tx, rx) = oneshot::channel();
            if commands.send(Command::FormLocal { noapps, reply: tx }).await.is_err() {
                return PeerReply::Refused { reason: "cldaemon is shutting down".into() };
            }
            match rx.await {
                Ok(Ok(detail)) => {
                    info!(peer = %from, "formed at the request of {from}");
                    PeerReply::Ok { detail }
                }
                Ok(Err(reason)) => PeerReply::Refused { reason },
                Err(_) => PeerReply::Refused { reason: "cldaemon is shutting down".into() },
            }
        }
        PeerRequest::Halt { .. } => {
            let (tx, rx) = oneshot::channel();
            if commands.send(Command::HaltLocal(tx)).await.is_err() {
                return PeerReply::Refused { reason: "cldaemon is shutting down".into() };
            }
            info!(peer = %from, "halting at the request of {from}");
            match rx.await {
                Ok(detail) => PeerReply::Ok { detail },
                Err(_) => PeerReply::Refused { reason: "cldaemon is shutting down".into() },
            }
        }
        PeerRequest::Leaving => {
            info!(peer = %from, "{from} is leaving the cluster");
            let _ = commands.send(Command::PeerLeft(from.to_string())).await;
            PeerReply::Ok { detail: format!("{}: noted", ctx.local) }
        }
        PeerRequest::PushConfig { kind, built, force } => {
            let (reply, installed) = crate::sync::install_pushed(ctx, from, &kind, &built, force);
            if kind == ConfigKind::Cluster
                && matches!(installed, Some(crate::sync::Installed::New { .. }))
            {
                let _ = commands.send(Command::Reload).await;
            }
            reply
        }
        PeerRequest::Storage { op } => {
            crate::storagectl::handle_peer_op(&ctx.paths, from, op).await
        }
        PeerRequest::FetchConfig { kind } => {
            let path = match &kind {
                ConfigKind::Cluster => ctx.paths.built_clconf(),
                ConfigKind::App { name } => ctx.paths.built_app(name),
            };
            PeerReply::Config { built: std::fs::read_to_string(path).ok() }
        }
    }
}
