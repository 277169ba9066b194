//! The main loop: one `select!` over the local events, the commands of the connection tasks,
//! the engine's deadline, the results of the background work, and the timers.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use cl_core::node::NodeInput;
use cl_wire::msg::LocalEvent;
use cl_wire::Receiver;
use tokio::net::{TcpListener, UnixDatagram, UnixListener};
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::context::Context;

use super::admin::serve_admin;
use super::formation::{announce_leaving, join_if_formed_elsewhere};
use super::peers::serve_peers;
use super::status::not_formed_status;
use super::{Command, Manager, HOUSEKEEPING, SUPERVISE_ADOPTED};

/// Run cldaemon (already detached and named) until SIGTERM.
pub async fn run(ctx: Context) -> Result<()> {
    let run_dir = ctx.paths.run_dir();
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("cannot create {}", run_dir.display()))?;
    let events_path = ctx.event_socket();
    let _ = std::fs::remove_file(&events_path);
    let events = UnixDatagram::bind(&events_path)
        .with_context(|| format!("cannot bind {}", events_path.display()))?;
    std::fs::set_permissions(&events_path, std::fs::Permissions::from_mode(0o600))?;
    let admin_path = ctx.admin_socket();
    let _ = std::fs::remove_file(&admin_path);
    let admin = UnixListener::bind(&admin_path)
        .with_context(|| format!("cannot bind {}", admin_path.display()))?;
    std::fs::set_permissions(&admin_path, std::fs::Permissions::from_mode(0o600))?;

    // Registered before any child starts, so no exit is missed.
    let mut child_exits = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
    let (status_tx, status_rx) = watch::channel(not_formed_status(&ctx));
    let (command_tx, mut command_rx) = mpsc::channel::<Command>(16);
    let peer_receiver = Arc::new(std::sync::Mutex::new(Receiver::new(ctx.key.clone(), ctx.name())));
    for (network, address) in ctx.local_addresses() {
        let address = SocketAddr::new(address, ctx.cluster().ports.cldaemon);
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen on {address} ({network})"))?;
        info!(%address, "listening for peers");
        tokio::spawn(serve_peers(
            listener,
            ctx.clone(),
            peer_receiver.clone(),
            command_tx.clone(),
            status_rx.clone(),
        ));
    }
    tokio::spawn(serve_admin(admin, ctx.clone(), command_tx.clone(), status_rx.clone()));
    tokio::spawn(crate::metrics::run(ctx.clone(), status_rx.clone()));
    tokio::spawn(crate::serve::monitor(None));

    let (app_events_tx, mut app_events_rx) = mpsc::channel::<crate::appctl::AppEvent>(64);
    let (storage_tx, mut storage_rx) = mpsc::channel::<crate::storagectl::StorageEvent>(256);
    let (guard_tx, mut guard_rx) = mpsc::channel::<NodeInput>(64);
    let origin = Instant::now();
    let mut manager = Manager {
        ctx: ctx.clone(),
        origin,
        formed: false,
        node: None,
        children: BTreeMap::new(),
        known_last: BTreeMap::new(),
        counters: BTreeMap::new(),
        beats_every: None,
        peer_receiver,
        config_mismatches: BTreeSet::new(),
        down_links: BTreeSet::new(),
        lost_known: BTreeSet::new(),
        status_tx,
        config_changed: std::env::var_os(crate::CONFIG_CHANGED_ENV).is_some(),
        apps: None,
        app_events: app_events_tx,
        storage_events: storage_tx,
        guard_results: guard_tx,
        arb_link: Default::default(),
        probe_targets: BTreeMap::new(),
        silence: crate::guardctl::SilenceLog::new(origin),
        notifications: crate::notify::Notifications::spawn(&ctx),
    };
    crate::guardctl::write_notice(&ctx, &[]);
    // Only this process needs to know; the daemons it starts read the new files anyway.
    std::env::remove_var(crate::CONFIG_CHANGED_ENV);
    if ctx.formed_marker().exists() {
        info!("the cluster was formed on this node before this cldaemon started: rejoining");
        match manager.form_local(true) {
            Ok(_) => {
                let adopted = match manager.apps.as_ref() {
                    Some(apps) => apps.adopt_running().await,
                    None => Vec::new(),
                };
                for app in adopted {
                    manager.feed(NodeInput::Adopted { app });
                }
            }
            Err(e) => error!("cannot rejoin: {e}"),
        }
    } else {
        tokio::spawn(join_if_formed_elsewhere(ctx.clone(), command_tx.clone()));
    }

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // Its own children's exits arrive as SIGCHLD; only daemons adopted from a crashed
    // cldaemon (not our children) are looked for by pid, every SUPERVISE_ADOPTED.
    let mut adopted = tokio::time::interval(SUPERVISE_ADOPTED);
    adopted.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // One timer for the rest, running only while it has work: an announcement that did not
    // reach every peer is repeated, and the status's times are refreshed for the metrics'
    // scrapes (it is published on every change, and fresh for every other reader through
    // Command::Publish). An idle node without metrics is not woken for it (issue 12).
    let periodic_publish = ctx.cluster().metrics.is_some();
    let mut housekeeping: Option<cl_sys::ticker::Periodic> = None;
    let mut buf = vec![0u8; 65536];
    loop {
        let wanted =
            periodic_publish || manager.apps.as_ref().is_some_and(|a| a.announce_undelivered());
        if wanted != housekeeping.is_some() {
            housekeeping = wanted.then(|| cl_sys::ticker::Periodic::after(HOUSEKEEPING));
        }
        let wake = manager.next_wake();
        tokio::select! {
            biased;
            received = events.recv(&mut buf) => {
                if let Ok(n) = received {
                    if let Some(bytes) = buf.get(..n) {
                        match serde_json::from_slice::<LocalEvent>(bytes) {
                            Ok(event) => manager.handle_event(event),
                            Err(e) => warn!("unreadable local event: {e}"),
                        }
                    }
                }
            }
            Some(command) = command_rx.recv() => match command {
                Command::FormLocal { noapps, reply } => {
                    let _ = reply.send(manager.form_local(noapps).map_err(|e| format!("{e:#}")));
                }
                Command::App(op, reply) => {
                    let checked = match manager.node.as_ref() {
                        Some(node) => node.check_admin(&op),
                        None => Err(format!("the cluster is not formed on {}", manager.ctx.local)),
                    };
                    if checked.is_ok() {
                        manager.feed(NodeInput::Admin(op));
                    }
                    let _ = reply.send(checked);
                    manager.publish();
                }
                Command::PeerApps(peer, announcement) => {
                    manager.feed(NodeInput::PeerAnnouncement { peer, announcement });
                    manager.publish();
                }
                Command::HaltLocal(reply) => {
                    if let (Some(apps), Some(node)) = (manager.apps.as_mut(), manager.node.as_ref()) {
                        apps.stop_all_here(node.apps()).await;
                    }
                    if manager.formed {
                        // Peers then log a planned departure, not a failure.
                        announce_leaving(&manager.ctx).await;
                    }
                    manager.halt_local();
                    let _ = reply.send(format!("{}: cluster daemons stopped", manager.ctx.local));
                }
                Command::FencePeer(resource, reply) => {
                    let _ = reply.send(manager.fence_peer(&resource));
                }
                Command::Publish(reply) => {
                    manager.publish();
                    let _ = reply.send(());
                }
                Command::PeerLeft(peer) => manager.feed(NodeInput::PeerLeft { peer }),
                Command::Reload => {
                    // Let the answer that announced the new version reach its caller first.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let _ = std::fs::remove_file(&admin_path);
                    let _ = std::fs::remove_file(&events_path);
                    crate::reexec(&manager.ctx);
                }
            },
            _ = tokio::time::sleep_until(wake) => {
                // After a stall, heartbeats may be waiting in the socket: count them before
                // letting time judge anyone, or a busy cldaemon would declare a live peer dead.
                while let Ok(n) = events.try_recv(&mut buf) {
                    if let Some(event) = buf.get(..n).and_then(|b| serde_json::from_slice::<LocalEvent>(b).ok()) {
                        manager.handle_event(event);
                    }
                }
                manager.tick();
            }
            Some(input) = guard_rx.recv() => manager.feed(input),
            Some(event) = storage_rx.recv() => {
                let inputs = manager.apps.as_mut().map(|apps| apps.on_storage(event));
                for input in inputs.unwrap_or_default() {
                    manager.feed(input);
                }
                manager.publish();
            }
            Some(event) = app_events_rx.recv() => {
                if let (Some(apps), Some(node)) = (manager.apps.as_mut(), manager.node.as_ref()) {
                    let input = apps.on_event(event, node.apps());
                    manager.feed(input);
                }
                manager.publish();
            }
            _ = child_exits.recv() => manager.supervise(),
            _ = adopted.tick(), if manager.has_adopted() => manager.supervise(),
            _ = tick_while_wanted(&mut housekeeping) => {
                manager.publish();
                // Announcements go out on every change and are answered; this repeats one that
                // did not reach every peer (a restarted peer asks by announcing a new run).
                if let (Some(apps), Some(node)) = (manager.apps.as_ref(), manager.node.as_ref()) {
                    if apps.announce_undelivered() {
                        apps.announce(node.announcement());
                    }
                }
            }
            _ = terminate.recv() => {
                info!("SIGTERM: stopping the cluster daemons of this node and exiting");
                manager.stop_children();
                let _ = std::fs::remove_file(&admin_path);
                let _ = std::fs::remove_file(&events_path);
                return Ok(());
            }
        }
    }
}

/// The next tick of `clock`; never, while there is none.
async fn tick_while_wanted(clock: &mut Option<cl_sys::ticker::Periodic>) {
    match clock {
        Some(clock) => clock.tick().await,
        None => std::future::pending().await,
    }
}
