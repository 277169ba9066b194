//! clhbd and clhbd2: heartbeats on every heartbeat network.
//!
//! clhbd receives: one UDP socket per heartbeat network, on this node's address and the
//! `clhbd` port; every frame is authenticated and checked against the replay window before it
//! counts, and accepted heartbeats go to cldaemon as [`LocalEvent::Heartbeat`]. clhbd2, its
//! child, sends: every interval, one frame per peer per network. Splitting them keeps a stuck
//! receive path from silencing this node (and the other way round); clhbd restarts clhbd2 if it
//! dies, and clhbd2 dies with clhbd (parent-death signal) so there is never a second sender.
//! Both ask for realtime priority and locked memory so a loaded node keeps beating.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, Result};
use cl_wire::msg::{HeartbeatMsg, LocalEvent};
use cl_wire::{Kind, ReceiveError, Receiver, Sender};
use tokio::net::UnixDatagram;
use tracing::{info, warn};

use crate::context::Context;
use crate::transport::new_epoch;

/// Ask for realtime priority and locked memory; log what was not permitted.
pub fn harden(daemon: &str) {
    match cl_sys::realtime::try_realtime(50) {
        Ok(()) => info!(daemon, "running with realtime priority (SCHED_FIFO 50)"),
        Err(e) => warn!(daemon, "realtime priority not permitted: {e}"),
    }
    match cl_sys::realtime::try_lock_memory() {
        Ok(()) => info!(daemon, "memory locked"),
        Err(e) => warn!(daemon, "memory locking not permitted: {e}"),
    }
}

/// Send a local event to cldaemon; a missing cldaemon is not an error (it may be restarting).
pub async fn notify(socket: &UnixDatagram, ctx: &Context, event: &LocalEvent) {
    if let Ok(bytes) = serde_json::to_vec(event) {
        let _ = socket.send_to(&bytes, ctx.event_socket()).await;
    }
}

/// The unbound datagram socket daemons report through.
pub fn event_sender() -> Result<UnixDatagram> {
    UnixDatagram::unbound().context("cannot create the event socket")
}

/// Run clhbd until it is told to stop.
pub async fn run_receiver(ctx: Context) -> Result<()> {
    harden("clhbd");
    let port = ctx.cluster().ports.clhbd;
    let node =
        ctx.cluster().node(&ctx.local).cloned().context("this node is not in the cluster")?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(String, SocketAddr, Vec<u8>)>(1024);
    for network in node.networks.iter().filter(|n| n.heartbeat) {
        let address = SocketAddr::new(network.address, port);
        let socket = cl_sys::udp::bind_udp(address).with_context(|| {
            format!("cannot listen for heartbeats on {address} ({})", network.name)
        })?;
        info!(link = %network.name, %address, "listening for heartbeats");
        let tx = tx.clone();
        let link = network.name.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; cl_wire::MAX_FRAME + 1];
            loop {
                match socket.recv_from(&mut buf).await {
                    Ok((n, from)) => {
                        let frame = buf.get(..n).map(|b| b.to_vec()).unwrap_or_default();
                        if tx.send((link.clone(), from, frame)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        cl_sys::warn_limited!("clhbd heartbeats", "receive error", link = %link, "heartbeat receive failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
    }
    drop(tx);
    tokio::spawn(crate::serve::monitor(None));
    let events = event_sender()?;
    let mut receiver = Receiver::new(ctx.key.clone(), ctx.name());
    let mut sender_child = spawn_sender(&ctx)?;
    let mut supervise = tokio::time::interval(Duration::from_millis(50));
    let mut report = tokio::time::interval(Duration::from_secs(1));
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut ctx = ctx;
    loop {
        tokio::select! {
            _ = hangup.recv() => {
                match Context::load(ctx.paths.clone()) {
                    Ok(new) => {
                        if new.cluster().ports != ctx.cluster().ports || new.cluster().nodes != ctx.cluster().nodes {
                            warn!("ports or networks changed: they take effect when the cluster is formed again (clhalt, clform)");
                        }
                        if new.key.fingerprint() != ctx.key.fingerprint() {
                            receiver = Receiver::new(new.key.clone(), new.name());
                        }
                        info!(version = new.built.version, "configuration reloaded");
                        ctx = new;
                    }
                    Err(e) => warn!("cannot reload the configuration, keeping the current one: {e:#}"),
                }
                // SAFETY: kill(2) on our own child's pid with a valid signal.
                unsafe {
                    libc::kill(sender_child.id() as i32, libc::SIGHUP);
                }
            }
            Some((link, from, frame)) = rx.recv() => {
                match receiver.try_receive::<HeartbeatMsg>(&frame) {
                    Ok((header, beat)) => {
                        if header.sender == ctx.local {
                            continue; // our own frame reflected back: authentic but not news
                        }
                        let event = LocalEvent::Heartbeat { from: header.sender, link, beat };
                        notify(&events, &ctx, &event).await;
                    }
                    Err(e) => {
                        // One line per reason every 10 s: a flood of forgeries must not flood the log.
                        let hint = if matches!(e, ReceiveError::Decode(cl_wire::DecodeError::BadMac)) {
                            " (a node with a different cluster key, or a forged frame)"
                        } else {
                            ""
                        };
                        let reason = crate::serve::reason(&e);
                        cl_sys::warn_limited!("clhbd heartbeats", &reason, link = %link, %from, "dropped heartbeat frame: {e}{hint}");
                    }
                }
            }
            _ = supervise.tick() => {
                if let Ok(Some(status)) = sender_child.try_wait() {
                    warn!("clhbd2 exited ({status}); restarting it");
                    sender_child = spawn_sender(&ctx)?;
                }
            }
            _ = report.tick() => {
                let event = LocalEvent::Counters { daemon: "clhbd".into(), counters: *receiver.counters() };
                notify(&events, &ctx, &event).await;
            }
            _ = terminate.recv() => {
                info!("stopping");
                let _ = sender_child.kill();
                let _ = sender_child.wait();
                return Ok(());
            }
        }
    }
}

fn spawn_sender(ctx: &Context) -> Result<std::process::Child> {
    let child = crate::spawn_daemon(ctx, &format!("clhbd2-{}", ctx.name()))?;
    info!(pid = child.id(), "started clhbd2");
    Ok(child)
}

/// Run clhbd2: send heartbeats until the parent clhbd goes away.
pub async fn run_sender(ctx: Context) -> Result<()> {
    if let Err(e) = cl_sys::process::set_parent_death_signal(libc::SIGKILL) {
        warn!("cannot tie clhbd2 to clhbd: {e}");
    }
    // clhbd may have died between our fork and the line above: then never run orphaned.
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } == 1 {
        anyhow::bail!("clhbd exited before clhbd2 started");
    }
    harden("clhbd2");
    let cluster = ctx.cluster().clone();
    let port = cluster.ports.clhbd;
    let mut targets: Vec<(tokio::net::UdpSocket, Vec<SocketAddr>, String)> = Vec::new();
    if let Some(me) = cluster.node(&ctx.local) {
        for network in me.networks.iter().filter(|n| n.heartbeat) {
            let peers: Vec<SocketAddr> = cluster
                .nodes
                .iter()
                .filter(|n| n.name != ctx.local)
                .filter_map(|n| n.network(&network.name).map(|p| SocketAddr::new(p.address, port)))
                .collect();
            let socket =
                cl_sys::udp::bind_udp(SocketAddr::new(network.address, 0)).with_context(|| {
                    format!("cannot send heartbeats from {} ({})", network.address, network.name)
                })?;
            targets.push((socket, peers, network.name.clone()));
        }
    }
    let mut sender = Sender::new(ctx.key.clone(), ctx.name(), &ctx.local, new_epoch());
    let mut beat = HeartbeatMsg {
        config_version: ctx.built.version,
        config_checksum: ctx.checksum.clone(),
        taking_over: Vec::new(),
    };
    let mut tick = tokio::time::interval(cluster.heartbeat.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut failing: BTreeMap<SocketAddr, bool> = BTreeMap::new();
    info!(interval_ms = cluster.heartbeat.interval.as_millis() as u64, "sending heartbeats");
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = hangup.recv() => {
                match Context::load(ctx.paths.clone()) {
                    Ok(new) => {
                        // The new version goes out with the next beat; the key, if it changed, too.
                        beat = HeartbeatMsg { config_version: new.built.version, config_checksum: new.checksum.clone(), taking_over: Vec::new() };
                        if new.key.fingerprint() != ctx.key.fingerprint() {
                            sender = Sender::new(new.key.clone(), new.name(), &new.local, new_epoch());
                        }
                        info!(version = new.built.version, "configuration reloaded");
                    }
                    Err(e) => warn!("cannot reload the configuration, keeping the current one: {e:#}"),
                }
                continue;
            }
        }
        // cldaemon names the peers it takes over; they must hear it even if we cannot hear them.
        beat.taking_over = crate::guardctl::read_notice(&ctx);
        for (socket, peers, link) in &targets {
            for peer in peers {
                let frame = match sender.seal(Kind::Heartbeat, &beat) {
                    Ok(frame) => frame,
                    Err(e) => {
                        warn!("cannot encode a heartbeat: {e}");
                        continue;
                    }
                };
                let failed = socket.send_to(&frame, peer).await.is_err();
                // Log the edge only: a dead link would otherwise log every interval.
                if failing.insert(*peer, failed) != Some(failed) && failed {
                    warn!(link = %link, %peer, "cannot send heartbeats");
                }
            }
        }
    }
}
