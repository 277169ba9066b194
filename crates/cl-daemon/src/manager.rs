//! cldaemon: the node manager. It runs the decision core, starts and supervises the cluster's
//! other daemons while the cluster is formed, answers the admin commands on a root-only Unix
//! socket, and talks to the other nodes' cldaemons over the authenticated `cldaemon` port.
//!
//! ```text
//!  clhbd ──┐ LocalEvent (datagram)                         admin: clstat, clform, clhalt
//!  clnetd ─┴──────────────► ┌──────────────────────┐ ◄──── Unix socket (JSON line)
//!                           │ main loop            │           │ Status is served from the
//!  peers' cldaemons ──TCP──►│  Node engine (core)  │──watch──► │ published snapshot, never
//!  (frames, HMAC)           │  children, config    │           │ by waiting on the loop
//!                           └──────────────────────┘
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use cl_core::guard::Level;
use cl_core::membership::{Action, LocalState, MembershipConfig, PeerState, Verdict};
use cl_core::node::{Node, NodeAction, NodeConfig, NodeInput};
use cl_core::Time;
use cl_wire::msg::{
    AdminRequest, AdminResponse, ClusterStatus, ConfigKind, KnownConnectionStatus, LinkStatus,
    LocalEvent, NodeStatus, PeerReply, PeerRequest,
};
use cl_wire::{Kind, Receiver, Sender};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UnixDatagram, UnixListener};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

use crate::context::Context;
use crate::transport::peer_request;

/// The daemons cldaemon starts while the cluster is formed (clhbd starts clhbd2 itself).
pub const CHILDREN: [&str; 3] = ["cllockd", "clnetd", "clhbd"];

/// How often daemons adopted from a crashed cldaemon are looked for by pid.
const SUPERVISE_ADOPTED: Duration = Duration::from_millis(100);

/// The period of the manager's housekeeping: refresh the published status, repeat the
/// applications' announcement.
const HOUSEKEEPING: Duration = Duration::from_secs(1);

/// How old the status a reader gets may be (its times: last heard, monitor results).
const STATUS_FRESH: Duration = Duration::from_millis(100);

/// How long a peer request may take before the peer counts as unreachable.
const PEER_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an admin command may take to send its request line.
const ADMIN_READ_DEADLINE: Duration = Duration::from_secs(10);
/// The longest admin request line read.
const ADMIN_MAX_REQUEST: u64 = 1 << 20;

/// Work the connection tasks hand to the main loop.
enum Command {
    FormLocal {
        noapps: bool,
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// An application request from an administrator.
    App(cl_core::apps::AdminOp, oneshot::Sender<Result<(), String>>),
    /// A peer's application announcement.
    PeerApps(String, cl_core::apps::Announcement),
    HaltLocal(oneshot::Sender<String>),
    /// A newer cluster configuration was installed: restart cldaemon on it.
    Reload,
    /// A peer announced it leaves the cluster.
    PeerLeft(String),
    /// DRBD's fence-peer handler for a resource: what does the cluster know of the peer?
    FencePeer(String, oneshot::Sender<Result<(String, cl_core::storage::FenceStep), String>>),
    /// Someone reads the status: publish it fresh (its times are measured now), then answer.
    Publish(oneshot::Sender<()>),
}

/// A cluster daemon this cldaemon looks after.
enum Child {
    /// Started by this cldaemon.
    Own(std::process::Child),
    /// Left running by a previous cldaemon (after a crash): watched by pid.
    Adopted(u32),
}

impl Child {
    fn pid(&self) -> u32 {
        match self {
            Child::Own(c) => c.id(),
            Child::Adopted(pid) => *pid,
        }
    }

    fn exited(&mut self) -> bool {
        match self {
            Child::Own(c) => !matches!(c.try_wait(), Ok(None)),
            Child::Adopted(pid) => !cl_sys::process::process_alive(*pid),
        }
    }

    fn stop(&mut self) {
        // SAFETY: kill(2) with a pid we started or adopted (checked by name) and a valid signal.
        unsafe {
            libc::kill(self.pid() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while !self.exited() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if !self.exited() {
            // SAFETY: as above.
            unsafe {
                libc::kill(self.pid() as i32, libc::SIGKILL);
            }
        }
        if let Child::Own(c) = self {
            let _ = c.wait();
        }
    }
}

struct Manager {
    ctx: Context,
    origin: Instant,
    formed: bool,
    /// The decision engine (membership, takeover guard, applications), while formed.
    node: Option<Node>,
    children: BTreeMap<&'static str, Child>,
    known_last: BTreeMap<IpAddr, Instant>,
    counters: BTreeMap<String, serde_json::Value>,
    down_links: BTreeSet<(String, String)>,
    lost_known: BTreeSet<IpAddr>,
    status_tx: watch::Sender<ClusterStatus>,
    /// This cldaemon was restarted because a new configuration was installed.
    config_changed: bool,
    /// The applications' IO, while formed.
    apps: Option<crate::appctl::AppControl>,
    app_events: mpsc::Sender<crate::appctl::AppEvent>,
    /// Where DRBD's event stream reports, while formed.
    storage_events: mpsc::Sender<crate::storagectl::StorageEvent>,
    /// Where the guard's background work (probe, fence, lease) reports what it saw.
    guard_results: mpsc::Sender<NodeInput>,
    /// The connection to the arbitrator, if one is configured.
    arb_link: crate::guardctl::ArbLink,
    /// What the peer-alive probe looks for, per peer (worked out when the cluster forms).
    probe_targets: BTreeMap<String, Vec<cl_drivers::vip::Vip>>,
    /// What those probes found silent, for the application starts.
    silence: crate::guardctl::SilenceLog,
}

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
    tokio::spawn(crate::serve::monitor(None));
    tokio::spawn(crate::serve::report_frame_counters(ctx.clone(), peer_receiver.clone()));

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
    };
    crate::guardctl::write_notice(&ctx, &[]);
    // Only this process needs to know; the daemons it starts read the new files anyway.
    std::env::remove_var(crate::CONFIG_CHANGED_ENV);
    if ctx.formed_marker().exists() {
        info!("the cluster was formed on this node before this cldaemon started: rejoining");
        match manager.form_local(true) {
            Ok(_) => {
                let adopted = match manager.apps.as_mut() {
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
    // One timer for the rest: the status is published on every change and fresh for every
    // reader (Command::Publish), so this only refreshes its times for the waiting commands;
    // the announcement is repeated to heal a lost one.
    let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
    housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = vec![0u8; 65536];
    loop {
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
                    let checked = match manager.apps.as_ref() {
                        Some(apps) => apps.check_admin(&op),
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
            _ = housekeeping.tick() => {
                manager.publish();
                // Announcements also go out on every change; this heals a lost one.
                if let (Some(apps), Some(node)) = (manager.apps.as_ref(), manager.node.as_ref()) {
                    apps.announce(node.announcement());
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

impl Manager {
    fn now(&self) -> Time {
        Time::ZERO + self.origin.elapsed()
    }

    fn next_wake(&self) -> tokio::time::Instant {
        let fallback = tokio::time::Instant::now() + Duration::from_secs(1);
        match self.node.as_ref().and_then(Node::poll_timeout) {
            Some(t) => {
                let at = self.origin + t.since_origin();
                tokio::time::Instant::from_std(at).min(fallback)
            }
            None => fallback,
        }
    }

    /// The fence-peer rule (cl-core `storage::fence_peer_step`) for the peer of `resource`,
    /// as the engine decides it.
    fn fence_peer(&self, resource: &str) -> Result<(String, cl_core::storage::FenceStep), String> {
        let Some(node) = self.node.as_ref() else {
            return Err(format!("the cluster is not formed on {}", self.ctx.local));
        };
        // Two nodes: the peer is the other one.
        let Some(peer) = self.ctx.peers().into_iter().next() else {
            return Err("this cluster has no other node".into());
        };
        let standing = node.peer_standing(&peer);
        info!(%resource, %peer, "DRBD asks to fence {peer} for {resource}: the cluster sees it {standing:?}");
        let step = node.fence_peer_step(&peer);
        Ok((peer, step))
    }

    fn form_local(&mut self, noapps: bool) -> Result<String> {
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
        let mut apps = crate::appctl::AppControl::new(
            self.ctx.clone(),
            self.silence.clone(),
            self.app_events.clone(),
        );
        let config = NodeConfig {
            membership: config,
            guard: crate::guardctl::guard_config(&self.ctx),
            apps: apps.policies(),
            takeover_delay: crate::appctl::takeover_delay(&self.ctx),
            epoch: crate::epoch::next_or_clock("application announcements"),
        };
        self.node = Some(Node::new(config, self.now()));
        apps.start_storage(self.storage_events.clone());
        self.apps = Some(apps);
        self.feed(NodeInput::Formed { start_autostart: !noapps });
        self.publish();
        info!("cluster `{}` formed on this node", self.ctx.name());
        Ok(format!("{}: cluster daemons running", self.ctx.local))
    }

    fn ensure_child(&mut self, daemon: &'static str) -> Result<()> {
        if self.children.get_mut(daemon).is_some_and(|c| !c.exited()) {
            return Ok(());
        }
        let argv0 = format!("{daemon}-{}", self.ctx.name());
        // A previous cldaemon may have left this daemon running: adopt it rather than start a
        // second one (that is what keeps a cldaemon restart invisible to the peers).
        if let Some(pid) = cl_sys::process::read_pid_file(&self.ctx.pid_file(daemon)) {
            if cl_sys::process::process_alive(pid) && process_named(pid, &argv0) {
                info!(daemon, pid, "adopting the running {argv0}");
                if self.config_changed {
                    // It runs on the previous configuration: SIGHUP makes it read the new one.
                    info!(daemon, pid, "asking {argv0} to reload the configuration");
                    // SAFETY: kill(2) on a pid we just checked is our daemon, with a valid signal.
                    unsafe {
                        libc::kill(pid as i32, libc::SIGHUP);
                    }
                }
                self.children.insert(daemon, Child::Adopted(pid));
                return Ok(());
            }
        }
        let child = crate::spawn_daemon(&self.ctx, &argv0)?;
        let _ = cl_sys::process::write_pid_file(&self.ctx.pid_file(daemon), child.id());
        info!(daemon, pid = child.id(), "started {argv0}");
        self.children.insert(daemon, Child::Own(child));
        Ok(())
    }

    /// Whether a daemon adopted from an earlier cldaemon is watched (by pid, not SIGCHLD).
    fn has_adopted(&self) -> bool {
        self.children.values().any(|c| matches!(c, Child::Adopted(_)))
    }

    fn supervise(&mut self) {
        if !self.formed {
            return;
        }
        let dead: Vec<&'static str> = self
            .children
            .iter_mut()
            .filter_map(|(name, child)| child.exited().then_some(*name))
            .collect();
        for daemon in dead {
            warn!(daemon, "{daemon}-{} died; restarting it", self.ctx.name());
            self.children.remove(daemon);
            if let Err(e) = self.ensure_child(daemon) {
                error!(daemon, "cannot restart: {e:#}");
            }
        }
    }

    fn stop_children(&mut self) {
        for (daemon, mut child) in std::mem::take(&mut self.children) {
            info!(daemon, pid = child.pid(), "stopping");
            child.stop();
            let _ = std::fs::remove_file(self.ctx.pid_file(daemon));
        }
    }

    fn halt_local(&mut self) {
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

    fn handle_event(&mut self, event: LocalEvent) {
        let now = self.now();
        match event {
            LocalEvent::Heartbeat { from, link, beat } => {
                if beat.config_version != self.ctx.built.version
                    || beat.config_checksum != self.ctx.checksum
                {
                    // Logged at most once per distinct pair, so a mismatch does not flood the log.
                    let key = format!("{from}:{}:{}", beat.config_version, beat.config_checksum);
                    if self
                        .counters
                        .insert(format!("config_mismatch:{key}"), serde_json::Value::Bool(true))
                        .is_none()
                    {
                        warn!(peer = %from, "runs configuration version {} ({}), this node version {} ({})",
                            beat.config_version, beat.config_checksum, self.ctx.built.version, self.ctx.checksum);
                    }
                }
                let taking_over = beat.taking_over.contains(&self.ctx.local);
                if let Some(node) = self.node.as_mut() {
                    node.handle(now, NodeInput::Heartbeat { from, link, taking_over });
                }
            }
            LocalEvent::KnownReply { target } => {
                self.known_last.insert(target, Instant::now());
                if let Some(node) = self.node.as_mut() {
                    node.handle(now, NodeInput::KnownConnectionReply { target });
                }
            }
            LocalEvent::Counters { daemon, counters } => {
                if let Ok(value) = serde_json::to_value(counters) {
                    self.counters.insert(daemon, value);
                }
            }
            LocalEvent::Listeners { daemon, listeners } => {
                crate::serve::record_report(daemon, listeners)
            }
            LocalEvent::Note { daemon, text } => info!(daemon, "{text}"),
        }
        self.drain_actions();
    }

    fn tick(&mut self) {
        let now = self.now();
        if let Some(node) = self.node.as_mut() {
            node.handle_timeout(now);
        }
        self.drain_actions();
    }

    /// Hand the engine one fact and carry out what it asks.
    fn feed(&mut self, input: NodeInput) {
        let now = self.now();
        if let Some(node) = self.node.as_mut() {
            node.handle(now, input);
        }
        self.drain_actions();
    }

    /// Carry out the engine's actions, in order: this is all the IO there is to a decision.
    fn drain_actions(&mut self) {
        let mut changed = false;
        while let Some(action) = self.node.as_mut().and_then(Node::poll_action) {
            changed = true;
            match action {
                NodeAction::Membership(change) => self.log_membership(change),
                NodeAction::Probe { peer } => {
                    info!(%peer, "probing node {peer} on the public networks before taking anything over");
                    let targets = self.probe_targets.get(&peer).cloned().unwrap_or_default();
                    crate::guardctl::probe(
                        targets,
                        peer,
                        self.guard_results.clone(),
                        self.silence.clone(),
                    );
                }
                NodeAction::Fence { peer } => {
                    crate::guardctl::fence(&self.ctx, peer, self.guard_results.clone());
                }
                NodeAction::Lease { id, op } => {
                    crate::guardctl::lease(
                        &self.ctx,
                        &self.arb_link,
                        id,
                        op,
                        self.guard_results.clone(),
                    );
                }
                NodeAction::Event { level, text } => match level {
                    Level::Info => info!("{text}"),
                    Level::Warn => warn!("{text}"),
                    Level::Alarm => error!("{text}"),
                },
                NodeAction::Start { app } => {
                    if let Some(apps) = self.apps.as_mut() {
                        apps.start(app);
                    }
                }
                NodeAction::Stop { app, reason, urgent } => {
                    if let Some(apps) = self.apps.as_mut() {
                        apps.stop(app, reason, urgent);
                    }
                }
                NodeAction::Announce => {
                    if let (Some(apps), Some(node)) = (self.apps.as_ref(), self.node.as_ref()) {
                        apps.announce(node.announcement());
                    }
                }
                NodeAction::Reannounce { app } => {
                    if let Some(apps) = self.apps.as_ref() {
                        apps.reannounce(&app);
                    }
                }
                NodeAction::TakingOverNotice { peers } => {
                    crate::guardctl::write_notice(&self.ctx, &peers);
                }
            }
        }
        if changed {
            self.publish();
        }
    }

    /// A membership change: the log, and the warnings clstat shows.
    fn log_membership(&mut self, change: Action) {
        match change {
            // Never handed out: clhbd2 beats on its own clock, so a busy cldaemon never
            // silences the node.
            Action::SendHeartbeats => {}
            Action::PeerUp { peer } => info!(%peer, "node {peer} is up"),
            Action::PeerDown { peer, verdict, reason } => match verdict {
                Verdict::TakeOver => {
                    warn!(%peer, "node {peer} is down: {reason}; this node is connected and may take over its applications")
                }
                Verdict::StandBy => {
                    warn!(%peer, "node {peer} is down: {reason}; taking nothing over")
                }
            },
            Action::LinkDown { peer, link } => {
                warn!(%peer, %link, "heartbeat link {link} to {peer} is silent; {peer} is still up over another link");
                self.down_links.insert((peer, link));
            }
            Action::LinkUp { peer, link } => {
                info!(%peer, %link, "heartbeat link {link} to {peer} works again");
                self.down_links.remove(&(peer, link));
            }
            Action::Isolated { reason } => {
                error!("this node is isolated: {reason}; stopping its applications and taking nothing over");
            }
            Action::Reconnected => info!("this node is connected again"),
            Action::KnownConnectionLost { target } => {
                warn!(%target, "known connection {target} does not answer");
                self.lost_known.insert(target);
            }
            Action::KnownConnectionBack { target } => {
                info!(%target, "known connection {target} answers again");
                self.lost_known.remove(&target);
            }
        }
    }

    fn publish(&mut self) {
        let status = self.status();
        self.status_tx.send_replace(status);
    }

    fn status(&self) -> ClusterStatus {
        let Some(node) = self.node.as_ref() else { return not_formed_status(&self.ctx) };
        let now = self.now();
        let snapshot = node.membership_status(now);
        let local_state = match snapshot.local_state {
            LocalState::Connected => "connected",
            LocalState::Undecided => "undecided",
            LocalState::Isolated => "isolated",
        };
        let mut nodes = Vec::new();
        for node in &self.ctx.cluster().nodes {
            if node.name == self.ctx.local {
                let state =
                    if snapshot.local_state == LocalState::Isolated { "isolated" } else { "up" };
                nodes.push(NodeStatus {
                    name: node.name.clone(),
                    state: state.into(),
                    links: Vec::new(),
                });
                continue;
            }
            let Some(peer) = snapshot.peers.iter().find(|p| p.name == node.name) else { continue };
            let state = match peer.state {
                PeerState::Unknown => "joining",
                PeerState::Up => "up",
                PeerState::Down => "down",
            };
            let links = peer
                .links
                .iter()
                .map(|l| LinkStatus {
                    network: l.name.clone(),
                    state: if l.up { "up".into() } else { "down".into() },
                    last_heard_ms: l.last_heard_ms,
                })
                .collect();
            nodes.push(NodeStatus { name: node.name.clone(), state: state.into(), links });
        }
        let known_connections = snapshot
            .known_connections
            .iter()
            .map(|k| KnownConnectionStatus {
                address: k.target,
                reachable: k.reachable,
                last_reply_ms: self
                    .known_last
                    .get(&k.target)
                    .map(|t| t.elapsed().as_millis() as u64),
            })
            .collect();
        let mut warnings: Vec<String> = self
            .down_links
            .iter()
            .map(|(peer, link)| format!("heartbeat link {link} to {peer} is down; {peer} is still reachable over another link"))
            .collect();
        warnings.extend(
            self.lost_known.iter().map(|k| format!("known connection {k} does not answer")),
        );
        let (mut alarms, takeover) = crate::guardctl::describe(&node.guard_status(), now);
        if let Some(apps) = self.apps.as_ref() {
            alarms.extend(apps.storage_alarms());
        }
        if self.ctx.cluster().known_connections.is_empty() {
            warnings
                .push("no known connections configured: partition detection is impossible".into());
        }
        let counters = self
            .counters
            .iter()
            .filter(|(k, _)| !k.starts_with("config_mismatch:"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<serde_json::Map<_, _>>();
        let listeners = crate::serve::statuses();
        warnings.extend(crate::serve::warnings(&listeners));
        ClusterStatus {
            cluster: self.ctx.name().to_string(),
            state: "formed".into(),
            local: self.ctx.local.clone(),
            local_state: local_state.into(),
            config_version: self.ctx.built.version,
            nodes,
            known_connections,
            applications: self.apps.as_ref().map(|a| a.status(node.apps())).unwrap_or_default(),
            warnings,
            alarms,
            takeover,
            counters: serde_json::Value::Object(counters),
            listeners,
        }
    }
}

fn process_named(pid: u32, argv0: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| c.split(|b| *b == 0).next() == Some(argv0.as_bytes()))
        .unwrap_or(false)
}

/// The snapshot published while the cluster is not formed on this node.
pub fn not_formed_status(ctx: &Context) -> ClusterStatus {
    let listeners = crate::serve::statuses();
    ClusterStatus {
        cluster: ctx.name().to_string(),
        state: "not_formed".into(),
        local: ctx.local.clone(),
        local_state: "connected".into(),
        config_version: ctx.built.version,
        nodes: ctx
            .cluster()
            .nodes
            .iter()
            .map(|n| NodeStatus {
                name: n.name.clone(),
                state: "unknown".into(),
                links: Vec::new(),
            })
            .collect(),
        known_connections: Vec::new(),
        applications: Vec::new(),
        warnings: crate::serve::warnings(&listeners),
        alarms: Vec::new(),
        takeover: Vec::new(),
        counters: serde_json::Value::Object(Default::default()),
        listeners,
    }
}

/// Tell every peer this node leaves the cluster; best effort, at most a second each.
async fn announce_leaving(ctx: &Context) {
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

/// One request to a peer's cldaemon, trying each of its addresses.
async fn ask_peer(
    ctx: &Context,
    addresses: &[SocketAddr],
    request: &PeerRequest,
) -> Result<PeerReply> {
    peer_request(&ctx.key, ctx.name(), &ctx.local, addresses, request, PEER_TIMEOUT).await
}

/// At start, catch up with a newer configuration a peer has, then join the cluster by itself
/// if a peer runs it.
async fn join_if_formed_elsewhere(ctx: Context, commands: mpsc::Sender<Command>) {
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
async fn catch_up(
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
fn built_app_versions(ctx: &Context) -> Vec<(String, u64)> {
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

async fn serve_admin(
    listener: UnixListener,
    ctx: Context,
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<ClusterStatus>,
) {
    let stats = crate::serve::Listener::register("cldaemon", "admin", crate::serve::LOCAL_LIMITS);
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

async fn handle_admin(
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
async fn storage_on_peer(
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
async fn fence_peer(
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

async fn form_cluster(
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
            reachable.iter().all(|p| s.nodes.iter().any(|n| &n.name == p && n.state == "up"))
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

async fn halt_cluster(
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

async fn distribute(ctx: &Context, kind: ConfigKind, force: bool) -> AdminResponse {
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

async fn serve_peers(
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
    let stats = crate::serve::Listener::register("cldaemon", name, crate::serve::PEER_LIMITS);
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

async fn handle_peer(
    ctx: &Context,
    from: &str,
    request: PeerRequest,
    commands: &mpsc::Sender<Command>,
    status: &watch::Receiver<ClusterStatus>,
) -> PeerReply {
    match request {
        PeerRequest::Hello => {
            let formed = status.borrow().state == "formed";
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
            let reply = crate::sync::install_pushed(ctx, from, &kind, &built, force);
            if kind == ConfigKind::Cluster
                && matches!(&reply, PeerReply::Ok { detail } if detail.starts_with("installed"))
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
