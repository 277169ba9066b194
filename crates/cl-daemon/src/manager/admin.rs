//! The admin socket: clstat, clform, clhalt, the application commands, DRBD's fence-peer
//! handler and the storage operations relayed to a peer.

use std::time::{Duration, Instant};

use cl_wire::msg::{
    AdminRequest, AdminResponse, ClusterStatus, ConfigKind, PeerReply, PeerRequest,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

use crate::context::Context;
use crate::transport::peer_request;

use super::formation::{form_cluster, halt_cluster};
use super::peers::{ask_peer, push_to_peers};
use super::{Command, ADMIN_MAX_REQUEST, ADMIN_READ_DEADLINE, STATUS_FRESH};

pub(super) async fn serve_admin(
    listener: UnixListener,
    ctx: Context,
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<ClusterStatus>,
) {
    let stats = crate::serve::Listener::register(
        cl_wire::Daemon::Cldaemon,
        "admin",
        crate::serve::LOCAL_LIMITS,
    );
    crate::serve::serve(listener, stats, move |stream, (), conn| {
        let ctx = ctx.clone();
        let commands = commands.clone();
        let status = status.clone();
        async move {
            let (read, mut write) = stream.into_split();
            let mut reader = BufReader::new(read.take(ADMIN_MAX_REQUEST));
            let mut line = String::new();
            let read = reader.read_line(&mut line);
            match crate::serve::within(&conn, ADMIN_READ_DEADLINE, "an admin request", read).await {
                Some(Ok(n)) if n > 0 => {}
                _ => return,
            }
            let response = match serde_json::from_str::<AdminRequest>(line.trim()) {
                Ok(request) => handle_admin(request, &ctx, &commands, &status).await,
                Err(e) => {
                    conn.rejected("unreadable request", &format!("unreadable request: {e}"));
                    AdminResponse::Failed {
                        message: format!("unreadable request: {e}"),
                        lines: vec![],
                    }
                }
            };
            if let Ok(mut text) = serde_json::to_string(&response) {
                text.push('\n');
                let _ = write.write_all(text.as_bytes()).await;
            }
        }
    })
    .await
}

pub(super) async fn handle_admin(
    request: AdminRequest,
    ctx: &Context,
    commands: &mpsc::Sender<Command>,
    status: &watch::Receiver<ClusterStatus>,
) -> AdminResponse {
    match request {
        AdminRequest::Status => {
            // At most STATUS_FRESH old: refreshed through the manager's loop unless a refresh
            // was asked for that recently (a burst of readers, `clstat --watch`).
            static REFRESHED: std::sync::Mutex<Option<Instant>> = std::sync::Mutex::new(None);
            let stale = |last: &Option<Instant>| last.is_none_or(|t| t.elapsed() >= STATUS_FRESH);
            if REFRESHED.lock().map(|last| stale(&last)).unwrap_or(true) {
                let (tx, rx) = oneshot::channel();
                if commands.send(Command::Publish(tx)).await.is_ok() {
                    let _ = tokio::time::timeout(Duration::from_secs(1), rx).await;
                }
                if let Ok(mut last) = REFRESHED.lock() {
                    *last = Some(Instant::now());
                }
            }
            AdminResponse::Status(Box::new(status.borrow().clone()))
        }
        AdminRequest::Form { noapps } => form_cluster(ctx, commands, status.clone(), noapps).await,
        AdminRequest::Halt { force, node } => {
            halt_cluster(ctx, commands, status.clone(), force, node).await
        }
        AdminRequest::App { action, app, node } => {
            use cl_core::apps::AdminOp;
            use cl_wire::msg::AppCommand;
            // Answered at once: a target no node answers to would stop the application and
            // leave the command waiting (the commands check this too; an old one may not).
            if let Some(n) = node.as_deref().filter(|n| ctx.cluster().node(n).is_none()) {
                return AdminResponse::Failed {
                    message: format!(
                        "there is no node `{n}` in cluster `{}` (its nodes: {})",
                        ctx.name(),
                        ctx.cluster().node_names().join(", ")
                    ),
                    lines: vec![],
                };
            }
            let op = match action {
                AppCommand::Start => AdminOp::Start { app, node },
                AppCommand::Stop => AdminOp::Stop { app },
                AppCommand::Switch => AdminOp::Switch { app, node },
            };
            let (tx, rx) = oneshot::channel();
            if commands.send(Command::App(op, tx)).await.is_err() {
                return AdminResponse::Failed {
                    message: "cldaemon is shutting down".into(),
                    lines: vec![],
                };
            }
            match rx.await {
                Ok(Ok(())) => AdminResponse::Done { lines: vec!["request accepted".into()] },
                Ok(Err(message)) => AdminResponse::Failed { message, lines: vec![] },
                Err(_) => AdminResponse::Failed {
                    message: "cldaemon is shutting down".into(),
                    lines: vec![],
                },
            }
        }
        AdminRequest::FencePeer { resource } => fence_peer(ctx, commands, resource).await,
        AdminRequest::Storage { node, op, timeout_secs } => {
            storage_on_peer(ctx, &node, op, timeout_secs).await
        }
        AdminRequest::Distribute { kind, force } => {
            let response = distribute(ctx, kind.clone(), force).await;
            // clbuild installed a new cluster configuration here: this cldaemon restarts on it.
            let installed = crate::sync::built_version(&ctx.paths, &ConfigKind::Cluster);
            if kind == ConfigKind::Cluster && installed.is_some_and(|v| v != ctx.built.version) {
                let _ = commands.send(Command::Reload).await;
            }
            response
        }
    }
}

/// `clbuildapp --vgbuild`, `clsplitbrain`: one storage operation relayed to `node`'s cldaemon
/// (whether or not the cluster is formed), its answer handed back.
pub(super) async fn storage_on_peer(
    ctx: &Context,
    node: &str,
    op: cl_wire::msg::StorageOp,
    timeout_secs: u64,
) -> AdminResponse {
    if node == ctx.name() || !ctx.peers().iter().any(|p| p == node) {
        return AdminResponse::Failed {
            message: format!("{node} is not another node of the cluster"),
            lines: vec![],
        };
    }
    let addresses = ctx.manager_addresses(node);
    let what = op.describe();
    let request = PeerRequest::Storage { op };
    let timeout = Duration::from_secs(timeout_secs.clamp(1, 3600));
    match peer_request(&ctx.key, ctx.name(), &ctx.local, &addresses, &request, timeout).await {
        Ok(PeerReply::Storage(reply)) => AdminResponse::Storage(reply),
        Ok(PeerReply::Refused { reason }) => AdminResponse::Failed {
            message: format!("{node} refused to {what}: {reason}"),
            lines: vec![],
        },
        Ok(_) => AdminResponse::Failed {
            message: format!("{node} gave an unexpected answer to {what}"),
            lines: vec![],
        },
        Err(e) => AdminResponse::Failed {
            message: format!(
                "cannot reach cldaemon on {node} ({e:#}); start it there (cldaemon, or the linuxha-cldaemon unit)"
            ),
            lines: vec![],
        },
    }
}

/// DRBD's fence-peer handler, through this cldaemon: outdate the peer's copy through its
/// cldaemon when it is up, or answer that it is gone when the cluster established it.
pub(super) async fn fence_peer(
    ctx: &Context,
    commands: &mpsc::Sender<Command>,
    resource: String,
) -> AdminResponse {
    use cl_core::storage::{FenceAnswer, FenceStep};
    let (tx, rx) = oneshot::channel();
    if commands.send(Command::FencePeer(resource.clone(), tx)).await.is_err() {
        return AdminResponse::Failed {
            message: "cldaemon is shutting down".into(),
            lines: vec![],
        };
    }
    let (peer, step) = match rx.await {
        Ok(Ok(found)) => found,
        Ok(Err(message)) => return AdminResponse::Failed { message, lines: vec![] },
        Err(_) => {
            return AdminResponse::Failed {
                message: "cldaemon is shutting down".into(),
                lines: vec![],
            }
        }
    };
    match step {
        FenceStep::Answer(answer) => AdminResponse::FencePeer {
            answer: Some(answer),
            detail: format!("{peer} is gone (the cluster declared it down and took over)"),
        },
        FenceStep::Wait => AdminResponse::FencePeer {
            answer: None,
            detail: format!("the cluster has not decided about {peer} yet"),
        },
        FenceStep::AskPeerToOutdate => {
            let addresses = ctx.manager_addresses(&peer);
            let request = PeerRequest::Storage {
                op: cl_wire::msg::StorageOp::Outdate { resource: resource.clone() },
            };
            let answer = ask_peer(ctx, &addresses, &request).await;
            match &answer {
                Ok(reply) => info!(%peer, %resource, "outdate request answered: {reply:?}"),
                Err(e) => warn!(%peer, %resource, "outdate request not answered: {e:#}"),
            }
            match answer.ok() {
                // The peer could not outdate its copy yet (its DRBD may still see the
                // connection, and refuses then): ask again until it can, or until the cluster
                // declares it gone.
                Some(PeerReply::Storage(cl_wire::msg::StorageReply::Outdate {
                    outcome: cl_core::storage::OutdateReply::Failed,
                    detail,
                })) => AdminResponse::FencePeer {
                    answer: None,
                    detail: format!("{peer} could not outdate its copy yet: {detail}"),
                },
                Some(PeerReply::Storage(cl_wire::msg::StorageReply::Outdate {
                    outcome,
                    detail,
                })) => AdminResponse::FencePeer {
                    answer: Some(outcome.answer()),
                    detail: format!("{peer}: {detail}"),
                },
                Some(PeerReply::Refused { reason }) => AdminResponse::FencePeer {
                    answer: Some(FenceAnswer::Failed),
                    detail: format!("{peer} refused: {reason}"),
                },
                // Up but not answering: ask again, the membership will decide.
                _ => AdminResponse::FencePeer {
                    answer: None,
                    detail: format!("{peer} is up but did not answer the outdate request"),
                },
            }
        }
    }
}

pub(super) async fn distribute(ctx: &Context, kind: ConfigKind, force: bool) -> AdminResponse {
    let path = match &kind {
        ConfigKind::Cluster => ctx.paths.built_clconf(),
        ConfigKind::App { name } => ctx.paths.built_app(name),
    };
    let built = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => {
            return AdminResponse::Failed {
                message: format!("cannot read {}: {e}", path.display()),
                lines: vec![],
            }
        }
    };
    AdminResponse::Done { lines: push_to_peers(ctx, &kind, &built, force).await }
}
