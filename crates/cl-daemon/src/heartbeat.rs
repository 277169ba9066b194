//! clhbd and clhbd2: heartbeats on every heartbeat network.
//!
//! clhbd receives: one UDP socket per heartbeat network, on this node's address and the
//! `clhbd` port; every frame is authenticated and checked against the replay window before it
//! counts, and accepted heartbeats go to cldaemon as [`LocalEvent::Heartbeat`]. clhbd2, its
//! child, sends: every interval, one frame per peer per network. Splitting them keeps a stuck
//! receive path from silencing this node (and the other way round); clhbd restarts clhbd2 if it
//! dies, and clhbd2 dies with clhbd (parent-death signal) so there is never a second sender.
//! Both ask for realtime priority and locked memory so a loaded node keeps beating.
//!
//! Freshness (cl_wire::fresh): clhbd takes each clhbd2's epoch from the counter and passes it
//! down, so it knows every epoch its senders used in this run ([`Challenges`]). A heartbeat
//! counts only if it echoes one of them: peers echo the newest epoch they accepted from this
//! node, which clhbd writes to the echo file for clhbd2 ([`EchoBook`]). Heartbeats recorded
//! before clhbd restarted echo an epoch of an earlier run and are dropped as unfresh.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, Result};
use cl_wire::msg::{HeartbeatMsg, LocalEvent};
use cl_wire::{Challenges, Daemon, EchoBook, Kind, ReceiveError, Receiver, Sender};
use tracing::{info, warn};

use crate::context::Context;
use crate::relaying::{event_sender, notify, EventSender};
use crate::watched::{DirWatch, Seen, WatchedFile};

/// The environment variable that carries clhbd2's epoch from clhbd.
const SENDER_EPOCH_ENV: &str = "LINUXHA_CLHBD2_EPOCH";

/// Where clhbd tells clhbd2 what to echo to each peer.
pub fn echo_file(ctx: &Context) -> std::path::PathBuf {
    ctx.paths.run_dir().join(format!("{}.heartbeat-echo", ctx.name()))
}

/// When this node's clhbd2 sends, on cldaemon's clock (`now` is the same instant): at the
/// multiples of the heartbeat interval on CLOCK_MONOTONIC ([`run_sender`]).
pub fn beat_grid(now: cl_core::time::Time, interval: Duration) -> cl_core::timing::HeartbeatGrid {
    let until = cl_sys::clock::until_multiple(cl_sys::clock::monotonic(), interval);
    cl_core::timing::HeartbeatGrid { origin: now + until, interval }
}

fn write_echoes(ctx: &Context, echoes: &EchoBook) {
    let path = echo_file(ctx);
    let written = serde_json::to_vec(echoes)
        .map_err(std::io::Error::other)
        .and_then(|bytes| cl_paths::write_atomic(&path, &bytes));
    if let Err(e) = written {
        warn!(
            "cannot write {}: {e}; peers' heartbeats stop counting after a restart",
            path.display()
        );
    }
}

fn read_echoes(path: &std::path::Path) -> EchoBook {
    std::fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// inotify on the directory of the notice and the echo file, for both (in this order), if
/// they share it and it can be had.
fn watch_both(notice: &std::path::Path, echo: &std::path::Path) -> Option<DirWatch> {
    let dir = notice.parent().filter(|dir| echo.parent() == Some(*dir))?;
    let names = vec![notice.file_name()?.to_os_string(), echo.file_name()?.to_os_string()];
    DirWatch::new(dir, names)
        .map_err(|e| {
            warn!(
                "cannot watch {} ({e}); the notice and echo files are looked at before every beat",
                dir.display()
            )
        })
        .ok()
}

/// What the watch on the notice and echo files saw, applied to them (names in the order of
/// [`watch_both`]); a watch that ended is dropped, and they are stat-ed at every beat again.
fn take_seen(
    seen: Seen,
    watch: &mut Option<DirWatch>,
    notice: &mut WatchedFile<Vec<String>>,
    echoes: &mut WatchedFile<EchoBook>,
) {
    match seen {
        Seen::Changed(which) => {
            if which.contains(&0) {
                notice.changed()
            }
            if which.contains(&1) {
                echoes.changed()
            }
        }
        Seen::Lost => {
            warn!("the watch on the notice and echo files ended; they are looked at before every beat");
            notice.unwatched();
            echoes.unwatched();
            *watch = None;
        }
    }
}

/// Ask for realtime priority and locked memory; log what was not permitted.
pub fn harden(daemon: Daemon) {
    match cl_sys::realtime::try_realtime(50) {
        Ok(()) => info!(daemon = daemon.name(), "running with realtime priority (SCHED_FIFO 50)"),
        Err(e) => warn!(daemon = daemon.name(), "realtime priority not permitted: {e}"),
    }
    match cl_sys::realtime::try_lock_memory() {
        Ok(()) => info!(daemon = daemon.name(), "memory locked"),
        Err(e) => warn!(daemon = daemon.name(), "memory locking not permitted: {e}"),
    }
}

/// Run clhbd until it is told to stop.
pub async fn run_receiver(ctx: Context) -> Result<()> {
    harden(Daemon::Clhbd);
    let port = ctx.cluster().ports.clhbd;
    let node =
        ctx.cluster().node(&ctx.local).cloned().context("this node is not in the cluster")?;
    let mut sockets: Vec<(tokio::net::UdpSocket, String)> = Vec::new();
    for network in node.networks.iter().filter(|n| n.heartbeat) {
        let address = SocketAddr::new(network.address, port);
        let socket = cl_sys::udp::bind_udp(address).with_context(|| {
            format!("cannot listen for heartbeats on {address} ({})", network.name)
        })?;
        info!(link = %network.name, %address, "listening for heartbeats");
        sockets.push((socket, network.name.clone()));
    }
    let mut buf = vec![0u8; cl_wire::MAX_FRAME + 1];
    let mut next_socket = 0;
    tokio::spawn(crate::serve::monitor(None));
    let events = event_sender();
    let mut receiver = Receiver::new(ctx.key.clone(), ctx.name());
    let mut challenges = Challenges::new();
    let mut echoes = EchoBook::new();
    // Nothing heard in this run yet: clhbd2 must not echo what an earlier run learned.
    write_echoes(&ctx, &echoes);
    // clhbd2's exit is a SIGCHLD (registered before it starts, so none is missed), not a poll.
    let mut child_exits = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
    let mut sender_child = spawn_sender(&ctx, &mut challenges)?;
    // The counters go to cldaemon when they changed, at most once per COUNTERS_EVERY.
    let mut counters = CounterReport::default();
    // Heartbeats go to cldaemon as cl_core::relay decides: news at once, the rest held.
    let mut relay = HeartbeatRelay::new(ctx.cluster().heartbeat.timeout);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    // The relay's deadline and the counters' on clocks that are moved, not made anew at every
    // frame: a new tokio timer earlier than the rest woke clhbd once more (issue 12).
    let mut relay_alarm =
        cl_sys::ticker::Alarm::new().context("cannot create the relay clock (timerfd)")?;
    let counters_clock = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(counters_clock);
    let mut counters_at: Option<tokio::time::Instant> = None;
    let mut ctx = ctx;
    loop {
        counters.changed(receiver.counters());
        if counters.due != counters_at {
            counters_at = counters.due;
            if let Some(at) = counters_at {
                counters_clock.as_mut().reset(at);
            }
        }
        if let Err(e) = relay_alarm.set(relay.due().map(crate::relaying::stamp)) {
            // Held observations then go out only with a frame that is news: when frames stop,
            // cldaemon may judge from the last one relayed (a timerfd that cannot be set is a
            // system in trouble).
            cl_sys::warn_limited!(
                "clhbd relay clock",
                "timerfd",
                "cannot set the relay clock: {e}"
            );
        }
        tokio::select! {
            // In this order when several are ready: a relay that is due is never put off by a
            // socket that keeps failing (its back-off below holds up the loop).
            biased;
            _ = terminate.recv() => {
                info!("stopping");
                let _ = sender_child.kill();
                let _ = sender_child.wait();
                return Ok(());
            }
            rung = relay_alarm.rung() => {
                if let Err(e) = rung {
                    cl_sys::warn_limited!("clhbd relay clock", "timerfd read", "the relay clock failed: {e}");
                }
                relay.send(&events, &ctx, &mut counters, receiver.counters()).await;
            }
            _ = hangup.recv() => {
                // A reload (cldaemon restarted on a new configuration): it hears them at once.
                counters.resend();
                relay.reset();
                match Context::load(ctx.paths.clone()) {
                    Ok(new) => {
                        if new.cluster().ports != ctx.cluster().ports || new.cluster().nodes != ctx.cluster().nodes {
                            warn!("ports or networks changed: they take effect when the cluster is formed again (clhalt, clform)");
                        }
                        if new.key.fingerprint() != ctx.key.fingerprint() {
                            receiver.rekey(new.key.clone());
                        }
                        info!(version = new.built.version, "configuration reloaded");
                        relay.relay.set_window(new.cluster().heartbeat.timeout);
                        ctx = new;
                    }
                    Err(e) => warn!("cannot reload the configuration, keeping the current one: {e:#}"),
                }
                // SAFETY: kill(2) on our own child's pid with a valid signal.
                unsafe {
                    libc::kill(sender_child.id() as i32, libc::SIGHUP);
                }
            }
            received = receive(&sockets, &mut buf, &mut next_socket) => {
                let (link, from, frame, at) = match received {
                    Ok(frame) => frame,
                    Err((link, e)) => {
                        cl_sys::warn_limited!("clhbd heartbeats", "receive error", link = %link, "heartbeat receive failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let received =
                    receiver.try_receive_fresh::<HeartbeatMsg>(&frame, |echo| challenges.contains(echo));
                match received {
                    Ok((header, beat)) => {
                        if header.sender == ctx.local {
                            continue; // our own frame reflected back: authentic but not news
                        }
                        if echoes.learn(&header.sender, header.epoch) {
                            write_echoes(&ctx, &echoes);
                        }
                        if relay.observe(header.sender, link, at, beat) {
                            relay.send(&events, &ctx, &mut counters, receiver.counters()).await;
                        }
                    }
                    Err(ReceiveError::Unfresh { sender, epoch, echo }) if sender != ctx.local => {
                        // Authentic and new, but not proven fresh: learn its run so our echo
                        // reaches it; it counts once it echoes ours (one interval after a
                        // restart). A steady stream of these is a replay of recorded frames.
                        if echoes.learn(&sender, epoch) {
                            write_echoes(&ctx, &echoes);
                        }
                        log_dropped(&link, from, "frame Unfresh", &format!("unfresh heartbeat from {sender} (echo {echo}): recorded before this clhbd started, or sent before {sender} heard it"));
                    }
                    Err(e) => {
                        let hint = if matches!(e, ReceiveError::Decode(cl_wire::DecodeError::BadMac)) {
                            " (a node with a different cluster key, or a forged frame)"
                        } else {
                            ""
                        };
                        log_dropped(&link, from, &crate::serve::reason(&e), &format!("dropped heartbeat frame: {e}{hint}"));
                    }
                }
            }
            _ = child_exits.recv() => {
                if let Ok(Some(status)) = sender_child.try_wait() {
                    warn!("clhbd2 exited ({status}); restarting it");
                    sender_child = spawn_sender(&ctx, &mut challenges)?;
                }
            }
            _ = &mut counters_clock, if counters_at.is_some() => {
                let event = LocalEvent::Counters { daemon: Daemon::Clhbd, counters: *receiver.counters() };
                notify(&events, &ctx, &event).await;
                counters.sent(*receiver.counters());
            }
        }
    }
}

/// A frame as clhbd takes it: its network, sender, bytes and arrival time.
type Frame = (String, SocketAddr, Vec<u8>, cl_core::time::Time);

/// The next frame on any of clhbd's sockets. The sockets are polled here, in clhbd's one task,
/// rather than each by a task of its own that passed frames on through a channel (a hop that
/// cost a runtime poll per beat, issue 12). The socket after the one that gave a frame is
/// looked at first next time (`next`): a flood on one network cannot starve the others.
async fn receive(
    sockets: &[(tokio::net::UdpSocket, String)],
    buf: &mut [u8],
    next: &mut usize,
) -> std::result::Result<Frame, (String, std::io::Error)> {
    std::future::poll_fn(|cx| {
        let count = sockets.len();
        for i in (0..count).map(|k| (*next + k) % count) {
            let (socket, link) = &sockets[i];
            let mut filled = tokio::io::ReadBuf::new(buf);
            match socket.poll_recv_from(cx, &mut filled) {
                std::task::Poll::Ready(Ok(from)) => {
                    let at = crate::relaying::now();
                    let frame = filled.filled().to_vec();
                    *next = (i + 1) % count;
                    return std::task::Poll::Ready(Ok((link.clone(), from, frame, at)));
                }
                std::task::Poll::Ready(Err(e)) => {
                    *next = (i + 1) % count;
                    return std::task::Poll::Ready(Err((link.clone(), e)));
                }
                std::task::Poll::Pending => {}
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// clhbd's side of [`cl_core::relay`]: each peer's newest frame per network, and the frame
/// content last relayed (a change, such as a "taking over" notice, is news and goes out at once).
struct HeartbeatRelay {
    relay: cl_core::relay::Relay<(String, String)>,
    newest: BTreeMap<String, HeartbeatMsg>,
    relayed: BTreeMap<String, HeartbeatMsg>,
}

impl HeartbeatRelay {
    fn new(timeout: Duration) -> HeartbeatRelay {
        HeartbeatRelay {
            relay: cl_core::relay::Relay::new(timeout),
            newest: BTreeMap::new(),
            relayed: BTreeMap::new(),
        }
    }

    /// A frame from `from` on `link` arrived at `at`; true when the relay must go out now.
    fn observe(
        &mut self,
        from: String,
        link: String,
        at: cl_core::time::Time,
        beat: HeartbeatMsg,
    ) -> bool {
        let news = self.relayed.get(&from) != Some(&beat);
        self.newest.insert(from.clone(), beat);
        self.relay.observe((from, link), at, news)
    }

    fn due(&self) -> Option<cl_core::time::Time> {
        self.relay.due()
    }

    fn reset(&mut self) {
        self.relay.reset();
        self.relayed.clear();
    }

    /// Send what is held, one event per peer, and the counters in the first when they changed
    /// (the same datagram).
    async fn send(
        &mut self,
        events: &EventSender,
        ctx: &Context,
        counters: &mut CounterReport,
        now: &cl_wire::Counters,
    ) {
        let mut by_peer: BTreeMap<String, Vec<cl_wire::msg::Heard>> = BTreeMap::new();
        for ((peer, link), at) in self.relay.take() {
            let heard = cl_wire::msg::Heard { link, at: crate::relaying::stamp(at) };
            by_peer.entry(peer).or_default().push(heard);
        }
        let mut delivered = true;
        let mut changed = (counters.last.as_ref() != Some(now)).then_some(*now);
        for (from, heard) in by_peer {
            let Some(beat) = self.newest.get(&from).cloned() else { continue };
            self.relayed.insert(from.clone(), beat.clone());
            let carried = changed.take();
            // clhbd2 beats on the grid of the interval it was started with or changed to (it
            // exits, to be started anew, if it cannot change it).
            let beats_every = Some(ctx.cluster().heartbeat.interval);
            let event = LocalEvent::Heartbeat { from, heard, beat, counters: carried, beats_every };
            let sent = notify(events, ctx, &event).await;
            if let (true, Some(c)) = (sent, carried) {
                counters.sent(c);
            }
            delivered &= sent;
        }
        if !delivered {
            // cldaemon did not get it (restarting, or stuck): it must not be counted as told,
            // or cldaemon could judge the peer silent early; the next frame goes out at once.
            self.reset();
        }
        if let Some(c) = changed {
            // Nothing was relayed to carry them.
            let event = LocalEvent::Counters { daemon: Daemon::Clhbd, counters: c };
            notify(events, ctx, &event).await;
            counters.sent(c);
        }
    }
}

/// How often at most a daemon reports its frame counters to cldaemon.
pub const COUNTERS_EVERY: Duration = Duration::from_secs(1);

/// When a daemon's frame counters go to cldaemon (clstat --verbose): when they changed since
/// the last report, at most once per [`COUNTERS_EVERY`], and at once after [`resend`]. Nothing
/// is sent, and nothing wakes, while they stay the same.
///
/// [`resend`]: CounterReport::resend
#[derive(Default)]
pub struct CounterReport {
    last: Option<cl_wire::Counters>,
    last_at: Option<tokio::time::Instant>,
    due: Option<tokio::time::Instant>,
}

impl CounterReport {
    /// The counters are now `now`: schedule a report if they differ from the last one sent.
    pub fn changed(&mut self, now: &cl_wire::Counters) {
        if self.due.is_none() && self.last.as_ref() != Some(now) {
            let earliest = self.last_at.map(|t| t + COUNTERS_EVERY);
            let at = earliest.unwrap_or_else(tokio::time::Instant::now);
            self.due = Some(at.max(tokio::time::Instant::now()));
        }
    }

    /// Send the next report at once, changed or not (a restarted cldaemon).
    pub fn resend(&mut self) {
        self.last = None;
        self.due = Some(tokio::time::Instant::now());
    }

    /// `counters` were sent.
    pub fn sent(&mut self, counters: cl_wire::Counters) {
        self.last = Some(counters);
        self.last_at = Some(tokio::time::Instant::now());
        self.due = None;
    }
}

/// One line per kind of drop every 10 s: a flood of forgeries or replays must not flood the log.
fn log_dropped(link: &str, from: SocketAddr, reason: &str, text: &str) {
    cl_sys::warn_limited!("clhbd heartbeats", reason, link = %link, %from, "{text}");
}

/// Start clhbd2 with a new epoch, which becomes a challenge of this clhbd run.
fn spawn_sender(ctx: &Context, challenges: &mut Challenges) -> Result<std::process::Child> {
    let epoch = crate::epoch::next()?;
    let argv0 = Daemon::Clhbd2.process_name(ctx.name());
    let child = crate::spawn_daemon_with(ctx, &argv0, &[(SENDER_EPOCH_ENV, &epoch.to_string())])?;
    challenges.issue(epoch);
    info!(pid = child.id(), epoch, "started clhbd2");
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
    harden(Daemon::Clhbd2);
    let cluster = ctx.cluster().clone();
    let port = cluster.ports.clhbd;
    // Per heartbeat network: the socket, each peer's address and name, the network's name.
    type Peers = Vec<(SocketAddr, String)>;
    // Plain non-blocking sockets, outside the reactor: a send never waits (a full buffer drops
    // the frame, as a congested link would), and the reactor is not woken for write
    // readiness after every send.
    let mut targets: Vec<(std::net::UdpSocket, Peers, String)> = Vec::new();
    if let Some(me) = cluster.node(&ctx.local) {
        for network in me.networks.iter().filter(|n| n.heartbeat) {
            let peers: Vec<(SocketAddr, String)> = cluster
                .nodes
                .iter()
                .filter(|n| n.name != ctx.local)
                .filter_map(|n| {
                    n.network(&network.name)
                        .map(|p| (SocketAddr::new(p.address, port), n.name.clone()))
                })
                .collect();
            let socket = cl_sys::udp::bind_udp(SocketAddr::new(network.address, 0))
                .and_then(|s| s.into_std())
                .with_context(|| {
                    format!("cannot send heartbeats from {} ({})", network.address, network.name)
                })?;
            targets.push((socket, peers, network.name.clone()));
        }
    }
    // The epoch clhbd issued for this run of clhbd2 (a challenge of its run); a clhbd2 started
    // by hand takes one of its own.
    let epoch = match std::env::var(SENDER_EPOCH_ENV).ok().and_then(|e| e.parse().ok()) {
        Some(epoch) => epoch,
        None => crate::epoch::next()?,
    };
    let mut sender = Sender::new(ctx.key.clone(), ctx.name(), &ctx.local, epoch);
    let mut beat = HeartbeatMsg {
        config_version: ctx.built.version,
        config_checksum: ctx.checksum.clone(),
        taking_over: Vec::new(),
    };
    // A timerfd: one wake-up per beat (tokio's timer wheel took two for a 200 ms interval). It
    // ticks at the multiples of the interval on CLOCK_MONOTONIC, so cldaemon knows when this
    // node's beats leave (the fence race, cl_core::timing::HeartbeatGrid).
    let mut interval = cluster.heartbeat.interval;
    let mut tick = cl_sys::ticker::Ticker::on_grid(interval)
        .context("cannot create the heartbeat clock (timerfd)")?;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut failing: BTreeMap<SocketAddr, bool> = BTreeMap::new();
    // Both files are read again only when they change: inotify on their directory says when
    // (made before their first read, so no change is missed); without it, a stat per beat.
    let (notice_path, echo_path) = (crate::guardctl::notice_file(&ctx), echo_file(&ctx));
    let mut watch = watch_both(&notice_path, &echo_path);
    let mut notice = WatchedFile::new(notice_path, crate::guardctl::read_notice_at);
    let mut echoes = WatchedFile::new(echo_path, read_echoes);
    if watch.is_some() {
        notice.trust_watch();
        echoes.trust_watch();
    }
    info!(interval_ms = cluster.heartbeat.interval.as_millis() as u64, "sending heartbeats");
    loop {
        tokio::select! {
            seen = async { match watch.as_mut() { Some(w) => w.changed().await, None => std::future::pending().await } } => {
                take_seen(seen, &mut watch, &mut notice, &mut echoes);
                continue;
            }
            ticked = tick.tick() => {
                if let Err(e) = ticked {
                    cl_sys::warn_limited!("clhbd2 clock", "timerfd", "heartbeat clock failed: {e}");
                    // Still on the grid: the next multiple of the interval.
                    let wait = cl_sys::clock::until_multiple(cl_sys::clock::monotonic(), interval);
                    tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
                }
            }
            _ = hangup.recv() => {
                match Context::load(ctx.paths.clone()) {
                    Ok(new) => {
                        // The new version goes out with the next beat; the key, if it changed, too.
                        beat = HeartbeatMsg { config_version: new.built.version, config_checksum: new.checksum.clone(), taking_over: Vec::new() };
                        if new.key.fingerprint() != ctx.key.fingerprint() {
                            sender.rekey(new.key.clone());
                        }
                        // A new heartbeat profile: cldaemon's engine, built anew on the same
                        // configuration, counts on beats at the multiples of the new interval.
                        let new_interval = new.cluster().heartbeat.interval;
                        if new_interval != interval {
                            // clhbd tells cldaemon this node beats on the new grid: exit if it
                            // cannot be had, and clhbd starts a clhbd2 that has it.
                            tick = cl_sys::ticker::Ticker::on_grid(new_interval)
                                .context("cannot change the heartbeat interval (timerfd)")?;
                            interval = new_interval;
                            info!(interval_ms = interval.as_millis() as u64, "heartbeat interval changed");
                        }
                        info!(version = new.built.version, "configuration reloaded");
                    }
                    Err(e) => warn!("cannot reload the configuration, keeping the current one: {e:#}"),
                }
                continue;
            }
        }
        // A change that came with the tick is taken before the beat.
        if let Some(seen) = watch.as_mut().and_then(DirWatch::pending) {
            take_seen(seen, &mut watch, &mut notice, &mut echoes);
        }
        // cldaemon names the peers it takes over; they must hear it even if we cannot hear them.
        beat.taking_over = notice.get().clone();
        let echoes = echoes.get();
        for (socket, peers, link) in &targets {
            for (peer, name) in peers {
                let frame = match sender.seal_echoing(Kind::Heartbeat, &beat, echoes.echo_for(name))
                {
                    Ok(frame) => frame,
                    Err(e) => {
                        warn!("cannot encode a heartbeat: {e}");
                        continue;
                    }
                };
                let failed = match socket.send_to(&frame, peer) {
                    Ok(_) => false,
                    // A full send buffer drops this frame, as a congested link would; it is
                    // not the link failing (that edge is logged below).
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        cl_sys::warn_limited!("clhbd2 send", "buffer full", link = %link, %peer, "a heartbeat to {peer} was dropped: the send buffer is full");
                        false
                    }
                    Err(_) => true,
                };
                // Log the edge only: a dead link would otherwise log every interval.
                if failing.insert(*peer, failed) != Some(failed) && failed {
                    warn!(link = %link, %peer, "cannot send heartbeats");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_reported_once_per_change() {
        let mut report = CounterReport::default();
        let mut counters = cl_wire::Counters::default();
        report.changed(&counters);
        assert!(report.due.is_some(), "the first report goes out at once");
        report.sent(counters);
        report.changed(&counters);
        assert!(report.due.is_none(), "unchanged: nothing to send");
        counters.accepted += 1;
        report.changed(&counters);
        let due = report.due.expect("changed: a report is due");
        assert!(due >= report.last_at.expect("sent once") + COUNTERS_EVERY);
        report.resend();
        assert!(report.due.is_some());
    }
}
