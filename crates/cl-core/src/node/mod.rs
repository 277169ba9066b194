//! The engine of one node: membership, the takeover guard and the applications machine, owned
//! together and wired together here, so that no shell routes between them.
//!
//! ```text
//!  NodeInput ──► Membership ──Action──► Guard ──AppInput──► Apps
//!                   │                    ▲  │                 │
//!                   │      LocalApps ────┼──┼──── report ◄────┤
//!                   ▼                    │  ▼                 ▼
//!  NodeAction ◄── PeerUp/Down…   Probe/Fence/Lease/Event   Start/Stop/Announce
//! ```
//!
//! The routing rules, in one place:
//! - every membership action (but the heartbeat tick, which the shells keep on their own
//!   clock) goes to the guard, and out as [`NodeAction::Membership`] for the log and status;
//! - what the guard passes on ([`GuardAction::Apps`]) goes to the applications machine; its
//!   other requests go out (probe, fence, lease, events);
//! - what the applications machine holds and wants ([`GuardInput::LocalApps`]) goes back to
//!   the guard whenever it changes (the lease and the fence race depend on it);
//! - a heartbeat whose "taking over" notice names this node makes the guard yield;
//! - the guard's list of peers being taken over goes out as [`NodeAction::TakingOverNotice`]
//!   when it changes, for the heartbeats to carry;
//! - a healed partition (a peer up, or this node connected again) re-announces the addresses of
//!   the applications running here.
//!
//! Routing is lazy, in the quinn-proto way: [`Node::handle`] feeds one fact to the machine it
//! concerns, and [`Node::poll_action`] routes one internal step at a time until an action for
//! the shell comes out. The shell drains `poll_action` after its inputs, then sleeps until
//! [`Node::poll_timeout`] or the next input.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::apps::{AdminOp, Announcement, AppAction, AppInput, AppPolicy, AppState, Apps};
use crate::arbiter::ArbOp;
use crate::guard::{Guard, GuardAction, GuardConfig, GuardInput, GuardStatus, Level};
use crate::membership::{self, Action, LocalState, Membership, MembershipConfig, PeerState};
use crate::notice::{ClusterEvent, Notices};
use crate::storage::{FenceStep, NotPromotable, PeerStanding};
use crate::time::Time;

mod notify;
#[cfg(test)]
mod notify_tests;
mod probe;
#[cfg(test)]
mod tests;

pub use probe::{ProbeAnswer, ProbeSeen};

/// Everything the engine needs to know about the cluster and this node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Membership: links, peers, heartbeat timing, known connections.
    pub membership: MembershipConfig,
    /// The takeover guard: fencing, probing, the arbitrator's lease.
    pub guard: GuardConfig,
    /// The applications, as built.
    pub apps: Vec<AppPolicy>,
    /// Grows across restarts of this node's engine (orders its announcements).
    pub epoch: u64,
}

/// A fact the shell observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "input", rename_all = "snake_case")]
pub enum NodeInput {
    /// The cluster formed here (or this node joined it).
    Formed {
        /// False for `clform --noapps` and for a node joining a running cluster.
        start_autostart: bool,
    },
    /// This node's heartbeats leave on `grid` from now on (None: not known), as clhbd reports
    /// the interval its clhbd2 beats on: the fence race's wait ([`GuardConfig::beat_grid`]).
    BeatGrid {
        /// The grid, on this engine's clock.
        grid: Option<crate::timing::HeartbeatGrid>,
    },
    /// An authenticated heartbeat from `from` arrived on `link` at `at`.
    Heartbeat {
        /// Sender.
        from: String,
        /// Heartbeat network it came over.
        link: String,
        /// When it arrived (clhbd relays only the newest of several: [`crate::relay`]).
        at: Time,
        /// Its "taking over" notice names this node: the sender cannot hear this node and takes
        /// over its applications.
        taking_over: bool,
    },
    /// A known connection answered a ping at `at`.
    KnownConnectionReply {
        /// Which one.
        target: IpAddr,
        /// When the answer arrived.
        at: Time,
    },
    /// A peer announced that it leaves the cluster (clhalt).
    PeerLeft {
        /// The peer.
        peer: String,
    },
    /// The peer-alive probe of `peer` ended: what each probed address did.
    ProbeResult {
        /// The peer.
        peer: String,
        /// One entry per address probed.
        seen: Vec<ProbeSeen>,
    },
    /// A fence action ended.
    FenceResult {
        /// The peer.
        peer: String,
        /// The agent reported success.
        ok: bool,
        /// The agent's message.
        detail: String,
    },
    /// The peer's fence device answered a status query ([`NodeAction::FenceStatus`]).
    FenceStatusResult {
        /// The peer.
        peer: String,
        /// The device reports the peer powered off (false when on, or when the query failed).
        off: bool,
        /// The agent's message.
        detail: String,
    },
    /// The arbitrator answered lease request `id` (as it said it: the engine decides whether
    /// it counts as held).
    LeaseReply {
        /// The request.
        id: u64,
        /// The arbitrator says the lease is granted.
        granted: bool,
        /// Who holds it after the request.
        holder: Option<String>,
        /// The lease length the arbitrator grants.
        lease: Duration,
        /// How long the holder's lease still runs.
        remaining: Duration,
    },
    /// A peer's application announcement.
    PeerAnnouncement {
        /// The peer.
        peer: String,
        /// What it says.
        announcement: Announcement,
    },
    /// A start sequence ended.
    StartFinished {
        /// Application.
        app: String,
        /// It runs.
        ok: bool,
        /// Why not.
        reason: String,
    },
    /// A stop sequence ended.
    StopFinished {
        /// Application.
        app: String,
        /// Everything was released.
        ok: bool,
        /// What may still be held.
        reason: String,
    },
    /// A monitor of a running application failed.
    MonitorFailed {
        /// Application.
        app: String,
        /// What failed.
        reason: String,
    },
    /// After a cldaemon restart the application was found active here.
    Adopted {
        /// Application.
        app: String,
    },
    /// The data verdict of a replicated application here.
    Data {
        /// Application.
        app: String,
        /// Why this node's copy may not be promoted, if so.
        blocked: Option<NotPromotable>,
    },
    /// The disk under a running replicated application failed and its policy is to move it.
    DataLost {
        /// Application.
        app: String,
        /// What failed.
        reason: String,
    },
    /// An administrator's request (clstartapp, clhaltapp, clswitchapp).
    Admin(AdminOp),
}

/// What the engine asks the shell to do, or tells it happened.
// Tagged `node_action`: a membership change inside carries its own `action` tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "node_action", rename_all = "snake_case")]
pub enum NodeAction {
    /// A membership change, for the log and the status (never [`Action::SendHeartbeats`]:
    /// the shells send heartbeats on their own clock).
    Membership(Action),
    /// Probe the peer's addresses; report [`NodeInput::ProbeResult`].
    Probe {
        /// The peer.
        peer: String,
    },
    /// Power the peer off; report [`NodeInput::FenceResult`].
    Fence {
        /// The peer.
        peer: String,
    },
    /// Ask the peer's fence device whether the peer is off; report
    /// [`NodeInput::FenceStatusResult`].
    FenceStatus {
        /// The peer.
        peer: String,
    },
    /// Send a lease request to the arbitrator; report [`NodeInput::LeaseReply`] with `id`.
    Lease {
        /// Matches the reply.
        id: u64,
        /// What to ask.
        op: ArbOp,
    },
    /// Log this (alarms also show in clstat).
    Event {
        /// How serious.
        level: Level,
        /// What happened and why.
        text: String,
    },
    /// Run the start sequence of `app`; report [`NodeInput::StartFinished`].
    Start {
        /// Application.
        app: String,
    },
    /// Run the stop sequence of `app`; report [`NodeInput::StopFinished`].
    Stop {
        /// Application.
        app: String,
        /// Why, for the log.
        reason: String,
        /// This node gave up: the stop must end within the stop margin.
        urgent: bool,
    },
    /// `app` runs here now (started, or adopted after a cldaemon restart): watch it with its
    /// monitors and report [`NodeInput::MonitorFailed`].
    Monitor {
        /// Application.
        app: String,
    },
    /// Send [`Node::announcement`] to the peers.
    Announce,
    /// A partition healed: announce the addresses of `app` (running here) again, so clients
    /// and switches find them here.
    Reannounce {
        /// Application.
        app: String,
    },
    /// The peers this node is taking over changed: the heartbeats carry this list now.
    TakingOverNotice {
        /// The peers (empty: no notice).
        peers: Vec<String>,
    },
    /// Tell the administrator's notifiers (`<notify>`) this event; never wait for them. Only
    /// handed out by an engine built [`with_notifications`](Node::with_notifications).
    Notify(ClusterEvent),
}

/// The engine of one node. See the module documentation.
#[derive(Debug)]
pub struct Node {
    local: String,
    membership: Membership,
    guard: Guard,
    apps: Apps,
    /// What the guard last heard from the applications machine (active, wanted, peer active).
    reported: Option<(bool, bool, bool)>,
    /// The notice last handed out.
    notice: Vec<String>,
    /// The time of the latest input.
    now: Time,
    actions: VecDeque<NodeAction>,
    /// What the notifications remember, when they are asked for (`notify`).
    notices: Option<Notices>,
}

impl Node {
    /// A node that starts at `now`, having heard nobody, running nothing.
    pub fn new(mut config: NodeConfig, now: Time) -> Node {
        let local = config.membership.local.clone();
        // The guard probes a silent peer ahead of its verdict when it can (crate::guard).
        config.membership.late_warning = config.guard.probe_ahead();
        let with_lease = config.guard.lease.is_some();
        let mut apps = Apps::new(&local, &config.membership.peers, config.apps, config.epoch);
        if with_lease {
            // Only the lease holder runs applications (docs/safety.md).
            apps = apps.with_lease();
        }
        Node {
            local,
            membership: Membership::new(config.membership, now),
            guard: Guard::new(config.guard),
            apps,
            reported: None,
            notice: Vec::new(),
            now,
            actions: VecDeque::new(),
            notices: None,
        }
    }

    /// Feed one fact observed at `now`; then drain [`poll_action`](Self::poll_action).
    pub fn handle(&mut self, now: Time, input: NodeInput) {
        self.now = now;
        let pending = self.notice_input(&input);
        match input {
            NodeInput::Formed { start_autostart } => {
                self.apps.handle(now, AppInput::Formed { start_autostart })
            }
            NodeInput::BeatGrid { grid } => self.guard.set_beat_grid(grid),
            NodeInput::Heartbeat { from, link, at, taking_over } => {
                self.membership
                    .handle(now, membership::Input::Heartbeat { from: from.clone(), link, at });
                if taking_over {
                    self.guard.handle(now, GuardInput::PeerTakingOver { peer: from });
                }
            }
            NodeInput::KnownConnectionReply { target, at } => {
                self.membership.handle(now, membership::Input::KnownConnectionReply { target, at })
            }
            NodeInput::PeerLeft { peer } => {
                self.membership.handle(now, membership::Input::PeerLeft { peer })
            }
            NodeInput::ProbeResult { peer, seen } => {
                let (alive, detail) = probe::verdict(&seen);
                self.guard.handle(now, GuardInput::ProbeResult { peer, alive, detail });
            }
            NodeInput::FenceStatusResult { peer, off, detail } => {
                self.guard.handle(now, GuardInput::FenceStatusResult { peer, off, detail })
            }
            NodeInput::FenceResult { peer, ok, detail } => {
                self.guard.handle(now, GuardInput::FenceResult { peer, ok, detail })
            }
            NodeInput::LeaseReply { id, granted, holder, lease, remaining } => {
                let input = self.lease_reply(id, granted, holder, lease, remaining);
                self.guard.handle(now, input);
            }
            NodeInput::PeerAnnouncement { peer, announcement } => {
                self.apps.handle(now, AppInput::Peer { peer, announcement })
            }
            NodeInput::StartFinished { app, ok, reason } => {
                // Only a start that is still wanted runs on (one being stopped meanwhile does
                // not): watched from now on.
                let starting = self.apps.state(&app) == Some(AppState::Starting);
                self.apps.handle(now, AppInput::StartFinished { app: app.clone(), ok, reason });
                if starting && self.apps.state(&app) == Some(AppState::Running) {
                    self.actions.push_back(NodeAction::Monitor { app });
                }
            }
            NodeInput::StopFinished { app, ok, reason } => {
                self.apps.handle(now, AppInput::StopFinished { app, ok, reason })
            }
            NodeInput::MonitorFailed { app, reason } => {
                self.apps.handle(now, AppInput::MonitorFailed { app, reason })
            }
            NodeInput::Adopted { app } => {
                self.apps.handle(now, AppInput::Adopted { app: app.clone() });
                if self.apps.state(&app) == Some(AppState::Running) {
                    // Adopted means running: watched like one started here.
                    self.actions.push_back(NodeAction::Monitor { app });
                }
            }
            NodeInput::Data { app, blocked } => {
                self.apps.handle(now, AppInput::Data { app, blocked })
            }
            NodeInput::DataLost { app, reason } => {
                self.apps.handle(now, AppInput::DataLost { app, reason })
            }
            NodeInput::Admin(op) => self.apps.handle(now, AppInput::Admin(op)),
        }
        self.notice_result(pending);
    }

    /// Only a grant naming this node, for at least the lease this node counts on, is one: an
    /// arbitrator with a shorter lease would expire it before this node stops (a configuration
    /// mismatch, refused loudly).
    fn lease_reply(
        &mut self,
        id: u64,
        granted: bool,
        holder: Option<String>,
        lease: Duration,
        remaining: Duration,
    ) -> GuardInput {
        let counted_on = self.guard.lease_timing().map(|t| t.lease).unwrap_or_default();
        let long_enough = lease >= counted_on;
        if granted && !long_enough {
            self.actions.push_back(NodeAction::Event {
                level: Level::Alarm,
                text: format!(
                    "the arbitrator grants {} ms leases, this node's configuration says {} ms: not counted as held",
                    lease.as_millis(),
                    counted_on.as_millis()
                ),
            });
        }
        let granted = granted && long_enough && holder.as_deref() == Some(self.local.as_str());
        GuardInput::LeaseReply { id, granted, holder, remaining: (!granted).then_some(remaining) }
    }

    /// Let time pass to `now`; then drain [`poll_action`](Self::poll_action).
    pub fn handle_timeout(&mut self, now: Time) {
        self.now = now;
        self.membership.handle_timeout(now);
        self.guard.handle_timeout(now);
        self.apps.handle_timeout(now);
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next, at the latest.
    pub fn poll_timeout(&self) -> Option<Time> {
        // The shells beat on their own clock: only the membership's judging deadlines count.
        [self.membership.poll_judge_timeout(), self.guard.poll_timeout(), self.apps.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Whether an administrator's request can be carried out: the application exists and the
    /// chosen node may run it (a node it may not run on would never start it: refused at once).
    pub fn check_admin(&self, op: &AdminOp) -> Result<(), String> {
        let (app, node) = match op {
            AdminOp::Start { app, node } | AdminOp::Switch { app, node } => (app, node.as_ref()),
            AdminOp::Stop { app } => (app, None),
        };
        let Some(nodes) = self.apps.nodes_of(app) else {
            return Err(format!("there is no built application `{app}` on {}", self.local));
        };
        if let Some(node) = node.filter(|n| !nodes.contains(n)) {
            return Err(format!(
                "`{node}` is not a node of application `{app}` (its nodes: {})",
                nodes.join(", ")
            ));
        }
        Ok(())
    }

    /// The next request for the shell, routing between the machines until one comes out.
    pub fn poll_action(&mut self) -> Option<NodeAction> {
        loop {
            if let Some(action) = self.actions.pop_front() {
                return Some(action);
            }
            if !self.route_one() {
                return None;
            }
        }
    }

    /// One routing step, in a fixed order: membership first, then the guard, then the report
    /// of the applications machine to the guard, then the applications' own requests, then
    /// the notice. False when there is nothing left to route.
    fn route_one(&mut self) -> bool {
        let now = self.now;
        if let Some(action) = self.membership.poll_action() {
            if action != Action::SendHeartbeats {
                self.guard.on_membership(now, &action);
                self.notice_membership(&action);
                self.actions.push_back(NodeAction::Membership(action));
            }
            return true;
        }
        if let Some(action) = self.guard.poll_action() {
            match action {
                GuardAction::Apps(input) => self.feed_apps(input),
                GuardAction::Probe { peer } => self.actions.push_back(NodeAction::Probe { peer }),
                GuardAction::Fence { peer } => self.actions.push_back(NodeAction::Fence { peer }),
                GuardAction::FenceStatus { peer } => {
                    self.actions.push_back(NodeAction::FenceStatus { peer })
                }
                GuardAction::Lease { id, op } => {
                    self.actions.push_back(NodeAction::Lease { id, op })
                }
                GuardAction::Event { level, text } => {
                    self.actions.push_back(NodeAction::Event { level, text })
                }
            }
            return true;
        }
        // What the applications machine holds and wants, for the guard (the lease, the fence
        // race), after every change.
        let report = (self.apps.active(), self.apps.wants_to_start(), self.apps.peer_active());
        if self.reported != Some(report) {
            self.reported = Some(report);
            let (active, wanted, peer_active) = report;
            self.guard.handle(now, GuardInput::LocalApps { active, wanted, peer_active });
            return true;
        }
        if let Some(action) = self.apps.poll_action() {
            self.notice_apps(&action);
            self.actions.push_back(match action {
                AppAction::Start { app } => NodeAction::Start { app },
                AppAction::Stop { app, reason, urgent } => NodeAction::Stop { app, reason, urgent },
                AppAction::Announce => NodeAction::Announce,
            });
            return true;
        }
        let notice = self.guard.taking_over();
        if notice != self.notice {
            self.notice = notice.clone();
            self.actions.push_back(NodeAction::TakingOverNotice { peers: notice });
            return true;
        }
        self.notice_gates()
    }

    /// What the guard passes on goes to the applications machine; a healed partition also
    /// re-announces the addresses of what runs here.
    fn feed_apps(&mut self, input: AppInput) {
        let healed = matches!(input, AppInput::PeerUp { .. } | AppInput::Reconnected);
        self.apps.handle(self.now, input);
        if healed {
            for app in self.apps.names() {
                if self.apps.state(&app) == Some(AppState::Running) {
                    self.actions.push_back(NodeAction::Reannounce { app });
                }
            }
        }
    }

    /// What this node announces to its peers now (after [`NodeAction::Announce`], and
    /// periodically to heal a lost announcement).
    pub fn announcement(&self) -> Announcement {
        self.apps.announcement()
    }

    /// This node's standing.
    pub fn local_state(&self) -> LocalState {
        self.membership.local_state()
    }

    /// A peer's state.
    pub fn peer_state(&self, peer: &str) -> Option<PeerState> {
        self.membership.peer_state(peer)
    }

    /// Membership as clstat shows it.
    pub fn membership_status(&self, now: Time) -> membership::Status {
        self.membership.status(now)
    }

    /// The takeover guard as clstat shows it.
    pub fn guard_status(&self) -> GuardStatus {
        self.guard.status()
    }

    /// True while this node has stopped its applications for want of the lease.
    pub fn stopped_for_lease(&self) -> bool {
        self.guard.stopped_for_lease()
    }

    /// The peers this node is taking over (what its heartbeats' notice says).
    pub fn taking_over(&self) -> Vec<String> {
        self.guard.taking_over()
    }

    /// The applications machine, for its read accessors (states, views, failures).
    pub fn apps(&self) -> &Apps {
        &self.apps
    }

    /// How `peer` stands for its replicated data: up, gone (declared down with a take-over
    /// verdict and past the takeover delay), or not decided yet.
    pub fn peer_standing(&self, peer: &str) -> PeerStanding {
        match self.membership.peer_state(peer) {
            Some(PeerState::Up) => PeerStanding::Up,
            _ if self.apps.peer_gone(peer) => PeerStanding::Gone { fenced: false },
            _ => PeerStanding::Undecided,
        }
    }

    /// DRBD's fence-peer rule (`storage::fence_peer_step`) for `peer`.
    pub fn fence_peer_step(&self, peer: &str) -> FenceStep {
        crate::storage::fence_peer_step(self.peer_standing(peer))
    }
}
