//! The engine's side of the manager: facts go in as `NodeInput`s, and every `NodeAction` that
//! comes out is carried out here as IO. Nothing here decides; cl-core's `node` does.

use std::time::Instant;

use anyhow::Result;
use cl_core::guard::Level;
use cl_core::membership::{Action, Verdict};
use cl_core::node::{Node, NodeAction, NodeInput};
use cl_wire::msg::LocalEvent;
use tracing::{debug, error, info, warn};

use super::Manager;

impl Manager {
    /// The fence-peer rule (cl-core `storage::fence_peer_step`) for the peer of `resource`,
    /// as the engine decides it.
    pub(super) fn fence_peer(
        &self,
        resource: &str,
    ) -> Result<(String, cl_core::storage::FenceStep), String> {
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

    pub(super) fn handle_event(&mut self, event: LocalEvent) {
        let now = self.now();
        match event {
            LocalEvent::Heartbeat { from, heard, beat, counters, beats_every } => {
                if let Some(counters) = counters {
                    self.counters.insert(cl_wire::Daemon::Clhbd, counters);
                }
                if beats_every != self.beats_every {
                    self.beats_every = beats_every;
                    let grid = beats_every.map(|every| crate::heartbeat::beat_grid(now, every));
                    if let Some(node) = self.node.as_mut() {
                        node.handle(now, NodeInput::BeatGrid { grid });
                    }
                }
                if beat.config_version != self.ctx.built.version
                    || beat.config_checksum != self.ctx.checksum
                {
                    // Logged at most once per distinct pair, so a mismatch does not flood the log.
                    let seen = (from.clone(), beat.config_version, beat.config_checksum.clone());
                    if self.config_mismatches.insert(seen) {
                        warn!(peer = %from, "runs configuration version {} ({}), this node version {} ({})",
                            beat.config_version, beat.config_checksum, self.ctx.built.version, self.ctx.checksum);
                    }
                }
                let taking_over = beat.taking_over.contains(&self.ctx.local);
                if let Some(node) = self.node.as_mut() {
                    for cl_wire::msg::Heard { link, at } in heard {
                        let at = now - crate::relaying::age(at);
                        let from = from.clone();
                        node.handle(now, NodeInput::Heartbeat { from, link, at, taking_over });
                    }
                }
            }
            LocalEvent::KnownReply { target, at } => {
                let age = crate::relaying::age(at);
                let seen = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
                self.known_last.insert(target, seen);
                if let Some(node) = self.node.as_mut() {
                    node.handle(now, NodeInput::KnownConnectionReply { target, at: now - age });
                }
            }
            LocalEvent::Counters { daemon, counters } => {
                self.counters.insert(daemon, counters);
            }
            LocalEvent::Listeners { daemon, listeners } => {
                crate::serve::record_report(daemon, listeners)
            }
            LocalEvent::Note { daemon, text } => info!(%daemon, "{text}"),
        }
        self.drain_actions();
    }

    pub(super) fn tick(&mut self) {
        let now = self.now();
        if let Some(node) = self.node.as_mut() {
            node.handle_timeout(now);
        }
        self.drain_actions();
    }

    /// Hand the engine one fact and carry out what it asks.
    pub(super) fn feed(&mut self, input: NodeInput) {
        let now = self.now();
        if let Some(node) = self.node.as_mut() {
            node.handle(now, input);
        }
        self.drain_actions();
    }

    /// Carry out the engine's actions, in order: this is all the IO there is to a decision.
    pub(super) fn drain_actions(&mut self) {
        let mut changed = false;
        while let Some(action) = self.node.as_mut().and_then(Node::poll_action) {
            changed = true;
            match action {
                NodeAction::Membership(change) => self.log_membership(change),
                NodeAction::Probe { peer } => {
                    info!(%peer, "probing node {peer} on the public networks before taking anything over");
                    let targets = self.probe_targets.get(&peer).cloned().unwrap_or_default();
                    let plan = cl_core::dad::probe_plan(self.ctx.cluster().heartbeat.interval);
                    crate::guardctl::probe(
                        targets,
                        peer,
                        plan,
                        self.guard_results.clone(),
                        self.silence.clone(),
                    );
                }
                NodeAction::Fence { peer } => {
                    crate::guardctl::fence(&self.ctx, peer, self.guard_results.clone());
                }
                NodeAction::FenceStatus { peer } => {
                    crate::guardctl::fence_status(&self.ctx, peer, self.guard_results.clone());
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
                NodeAction::Monitor { app } => {
                    if let Some(apps) = self.apps.as_mut() {
                        apps.start_monitors(&app);
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
                NodeAction::Notify(event) => self.notifications.notify(event),
            }
        }
        if changed {
            self.publish();
        }
    }

    /// A membership change: the log, and the warnings clstat shows.
    pub(super) fn log_membership(&mut self, change: Action) {
        match change {
            // Never handed out: clhbd2 beats on its own clock, so a busy cldaemon never
            // silences the node.
            Action::SendHeartbeats => {}
            Action::PeerUp { peer } => info!(%peer, "node {peer} is up"),
            Action::PeerLate { peer } => {
                info!(%peer, "node {peer} is late on every heartbeat link")
            }
            Action::PeerDown { peer, verdict, reason, .. } => match verdict {
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
            Action::PingPace { pace } => {
                debug!(?pace, "known connections: pinging at the {pace:?} pace");
                self.set_ping_pace(pace);
            }
        }
    }
}
