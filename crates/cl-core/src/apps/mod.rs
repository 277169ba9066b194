//! Applications: where each one should run, and what this node must do about it.
//!
//! Every node runs this machine with the same inputs about the cluster (membership verdicts,
//! the application states the peers announce, the shared *desired* state of each application)
//! and decides only its own actions: start an application here, or stop it here. Both nodes
//! compute the same placement, so they agree without a leader:
//!
//! - the **desired** state of an application (`running`, optionally on a chosen node, or
//!   `stopped`) is shared by gossip; each change carries a Lamport stamp so the newest wins;
//! - the **placement** is the chosen node if it is eligible, else the node already running it
//!   (failback `manual`), else the most preferred eligible node. A node is eligible when it is
//!   allowed, alive (this node: not isolated; a peer: up) and the application has not failed
//!   there;
//! - a node **starts** an application only when it is the placement and no other node may be
//!   running it: every other allowed node is up and announces it stopped or failed-and-stopped,
//!   or is down with a take-over verdict. When in doubt nobody starts it;
//! - an **isolated** node stops everything and starts nothing.
//!
//! Resource work (filesystems, VIPs, scripts, monitors) is the shell's: it receives
//! [`AppAction::Start`]/[`AppAction::Stop`] and reports back with the `*Finished` inputs.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

pub use self::types::*;

use self::failure::{Failure, FailureKind};
use crate::storage::NotPromotable;
use crate::time::Time;

/// How long a node that is up but has not reported its replicated data yet (DRBD still coming
/// up) keeps its place in an application's preference order: without it, whichever node's DRBD
/// answered first would get an autostart application, not the preferred one.
pub const DATA_GRACE: Duration = Duration::from_secs(15);

/// What this node knows of an application here.
#[derive(Debug, Clone)]
struct Local {
    state: AppState,
    failures: Vec<Time>,
    last_failure: Option<Failure>,
    /// Restart here once the current stop finishes.
    restart_after_stop: bool,
    /// Why this node's replicated data may not be promoted (never set for an application
    /// without replicated data).
    data_blocked: Option<NotPromotable>,
}

/// How this node knows a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    /// Not heard yet: it might be running anything.
    Unknown,
    /// Up: its announcements count (once one arrived since it came up).
    Up {
        /// An announcement arrived since it came up.
        announced: bool,
    },
    /// Down; its applications may be taken over only with `take_over` (the guard says so once
    /// every gate is passed and the takeover delay is over: crate::guard).
    Down {
        /// Every gate passed.
        take_over: bool,
    },
}

/// The applications machine of one node.
#[derive(Debug)]
pub struct Apps {
    local: String,
    policies: BTreeMap<String, AppPolicy>,
    locals: BTreeMap<String, Local>,
    peers: BTreeMap<String, Peer>,
    peer_states: BTreeMap<String, BTreeMap<String, AppState>>,
    /// The data verdicts each peer last announced.
    peer_data_blocked: BTreeMap<String, BTreeMap<String, NotPromotable>>,
    /// Peers that announced something while this node considered them down.
    heard_since_down: std::collections::BTreeSet<String>,
    /// The desired states each peer last announced.
    peer_desired: BTreeMap<String, BTreeMap<String, Desired>>,
    desired: BTreeMap<String, Desired>,
    clock: u64,
    isolated: bool,
    now: Time,
    /// When each node (this one included) came up or formed: a replicated application waits
    /// [`DATA_GRACE`] after that for the node's first data verdict before placing it elsewhere.
    up_since: BTreeMap<String, Time>,
    epoch: u64,
    announced_seq: std::cell::Cell<u64>,
    /// The newest (epoch, seq) heard from each peer.
    heard: BTreeMap<String, (u64, u64)>,
    /// With an arbitrator: whether this node holds the lease (`None`: no arbitrator).
    lease: Option<bool>,
    /// The peers that last announced holding the lease.
    peer_lease: std::collections::BTreeSet<String>,
    /// Where this node places each application, as it last announced (crate::apps::placement).
    placed: BTreeMap<String, Option<String>>,
    /// For each application, the last sequence number announced before its placement last
    /// changed: a peer's consent counts once it has heard a later one.
    placed_after: BTreeMap<String, u64>,
    /// Where each peer last said it places the applications (`None`: a peer from before the
    /// placement handshake).
    peer_placements: BTreeMap<String, Option<BTreeMap<String, String>>>,
    /// The newest announcement of this node each peer had heard when it last announced.
    peer_heard_us: BTreeMap<String, (u64, u64)>,
    /// The peers that last announced they start nothing for now.
    peer_standing_by: std::collections::BTreeSet<String>,
    /// Since which of its announcements each peer's placements hold, as it last announced.
    peer_placed_since: BTreeMap<String, BTreeMap<String, u64>>,
    actions: VecDeque<AppAction>,
}

impl Apps {
    /// A node that knows the applications and its peers; nothing runs yet.
    ///
    /// A silent peer's applications are started as soon as the guard says it may be taken
    /// over: the guard has waited out the takeover delay (crate::guard). `epoch` must grow
    /// across restarts of this node's machine (its start time will do).
    pub fn new(local: &str, peers: &[String], policies: Vec<AppPolicy>, epoch: u64) -> Apps {
        let locals = policies
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    Local {
                        state: AppState::Stopped,
                        failures: Vec::new(),
                        last_failure: None,
                        restart_after_stop: false,
                        data_blocked: p.replicated.then_some(NotPromotable::NotUp),
                    },
                )
            })
            .collect();
        Apps {
            local: local.to_string(),
            policies: policies.into_iter().map(|p| (p.name.clone(), p)).collect(),
            locals,
            peers: peers.iter().map(|p| (p.clone(), Peer::Unknown)).collect(),
            peer_states: BTreeMap::new(),
            peer_data_blocked: BTreeMap::new(),
            peer_desired: BTreeMap::new(),
            heard_since_down: Default::default(),
            desired: BTreeMap::new(),
            clock: 0,
            isolated: false,
            now: Time::ZERO,
            up_since: BTreeMap::new(),
            epoch,
            announced_seq: std::cell::Cell::new(0),
            heard: BTreeMap::new(),
            lease: None,
            peer_lease: Default::default(),
            placed: BTreeMap::new(),
            placed_after: BTreeMap::new(),
            peer_placements: BTreeMap::new(),
            peer_heard_us: BTreeMap::new(),
            peer_standing_by: Default::default(),
            peer_placed_since: BTreeMap::new(),
            actions: VecDeque::new(),
        }
    }

    /// Feed one fact observed at `now`.
    pub fn handle(&mut self, now: Time, input: AppInput) {
        self.now = now;
        match input {
            AppInput::Formed { start_autostart } => {
                self.up_since.insert(self.local.clone(), now);
                let autostart: Vec<String> = self
                    .policies
                    .values()
                    .filter(|p| p.autostart)
                    .map(|p| p.name.clone())
                    .collect();
                for app in autostart {
                    if start_autostart && !self.desired.contains_key(&app) {
                        self.set_desired(&app, Want::Running { node: None });
                    }
                }
            }
            AppInput::PeerUp { peer } => {
                self.up_since.insert(peer.clone(), now);
                if let Some(p) = self.peers.get_mut(&peer) {
                    *p = Peer::Up { announced: false };
                }
                // Tell the returning peer where things stand before it decides anything.
                self.announce();
            }
            AppInput::PeerDown { peer, take_over } => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    // The guard says "down" when the peer goes silent and again when it finds
                    // it silent everywhere, then "take over" when the takeover delay ends: what
                    // the peer announced after the last "down" still counts (a peer back from a
                    // partition announces before it is heard again: sim seed 2476).
                    if !take_over || !matches!(p, Peer::Down { .. }) {
                        self.heard_since_down.remove(&peer);
                    }
                    *p = Peer::Down { take_over };
                }
            }
            AppInput::PeerFenced { peer } => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    *p = Peer::Down { take_over: true };
                    self.heard_since_down.remove(&peer);
                }
                // Powered off: whatever it announced is gone with it.
                self.peer_states.remove(&peer);
            }
            AppInput::Lease { held } => self.set_lease(held, false),
            AppInput::LeaseLostKeepRunning => self.set_lease(false, true),
            AppInput::Isolated => {
                self.isolated = true;
                // A node that gives up restarts nothing either: a restart pending after a
                // monitor failure would otherwise run once it is connected again, whoever took
                // the application over meanwhile (simulator seed 21979).
                for local in self.locals.values_mut() {
                    local.restart_after_stop = false;
                }
                // Cut off, this node knows nothing current about its peers: forget what they
                // said until they are heard again.
                for peer in self.peers.values_mut() {
                    *peer = Peer::Down { take_over: false };
                }
                self.heard_since_down.clear();
                self.stop_all_local("this node is isolated");
                // The peers stop waiting for this node's consent (standing_by).
                self.announce();
            }
            AppInput::Reconnected => {
                self.isolated = false;
                self.announce();
            }
            AppInput::Peer { peer, announcement } => self.on_announcement(peer, announcement),
            AppInput::StartFinished { app, ok, reason } => {
                let Some(local) = self.locals.get_mut(&app) else { return };
                if local.state != AppState::Starting {
                    return;
                }
                if ok {
                    local.state = AppState::Running;
                } else {
                    // Whatever the start managed to acquire must be released before anyone
                    // else may start it; the stop decides between Failed and Stuck.
                    self.record_failure(&app, format!("start failed: {reason}"), true);
                }
                self.announce();
            }
            AppInput::StopFinished { app, ok, reason } => {
                let Some(local) = self.locals.get_mut(&app) else { return };
                if local.state != AppState::Stopping {
                    return;
                }
                if !ok {
                    local.state = AppState::Stuck;
                    local.last_failure =
                        Some(Failure { at: now, kind: FailureKind::StopFailed, reason });
                    local.restart_after_stop = false;
                } else if local.last_failure.as_ref().is_some_and(|f| f.kind == FailureKind::GaveUp)
                {
                    local.state = AppState::Failed;
                } else {
                    local.state = AppState::Stopped;
                }
                self.announce();
            }
            AppInput::MonitorFailed { app, reason } => {
                if self.locals.get(&app).is_some_and(|l| l.state == AppState::Running) {
                    self.record_failure(&app, reason, false);
                }
            }
            AppInput::Admin(op) => self.admin(op),
            AppInput::Data { app, blocked } => {
                let replicated = self.policies.get(&app).is_some_and(|p| p.replicated);
                let Some(local) = self.locals.get_mut(&app) else { return };
                if !replicated || local.data_blocked == blocked {
                    return;
                }
                local.data_blocked = blocked.clone();
                let starting = local.state == AppState::Starting;
                // The peers place applications with this verdict too.
                self.announce();
                // A start under way that has not promoted yet must not promote a copy that
                // turned stale meanwhile (the split brain's discarded copy, reconnected, is
                // Outdated once DRBD compares): cut it short. Not for a volume not up (yet):
                // the promote itself fails on that, and it is no verdict on the data.
                if starting {
                    if let Some(why) = blocked.filter(|w| *w != NotPromotable::NotUp) {
                        let reason = format!("its data may not be promoted here any more: {why}");
                        self.stop_local(&app, &reason, true);
                    }
                }
            }
            AppInput::DataLost { app, reason } => {
                if self.locals.get(&app).is_some_and(|l| l.state == AppState::Running) {
                    self.record_failure(&app, reason, true);
                }
            }
            AppInput::Adopted { app } => {
                if let Some(local) = self.locals.get_mut(&app) {
                    local.state = AppState::Running;
                }
                if !self.desired.contains_key(&app) {
                    self.set_desired(&app, Want::Running { node: Some(self.local.clone()) });
                }
                self.announce();
            }
        }
        self.reconcile();
    }

    fn admin(&mut self, op: AdminOp) {
        match op {
            AdminOp::Start { app, node } => {
                self.clear_failure(&app);
                self.set_desired_clearing(&app, Want::Running { node });
            }
            AdminOp::Stop { app } => self.set_desired(&app, Want::Stopped),
            AdminOp::Switch { app, node } => {
                let target = node.or_else(|| {
                    let here = self.running_on(&app);
                    self.policies.get(&app).and_then(|p| {
                        p.nodes
                            .iter()
                            .find(|n| Some(n.as_str()) != here.as_deref() && self.eligible(&app, n))
                            .cloned()
                    })
                });
                self.clear_failure(&app);
                self.set_desired_clearing(&app, Want::Running { node: target });
            }
        }
    }

    /// clstartapp and clswitchapp clear a failure (not a stuck stop: that needs the node fixed).
    fn clear_failure(&mut self, app: &str) {
        let Some(local) = self.locals.get_mut(app) else { return };
        local.failures.clear();
        if local.state == AppState::Failed {
            local.state = AppState::Stopped;
            // The others must learn this node can run it again.
            self.announce();
        }
    }

    fn set_desired_clearing(&mut self, app: &str, want: Want) {
        self.set_desired(app, want);
        if let Some(desired) = self.desired.get_mut(app) {
            desired.clears_failures = true;
        }
    }

    fn set_desired(&mut self, app: &str, want: Want) {
        if !self.policies.contains_key(app) {
            return;
        }
        self.clock += 1;
        self.desired.insert(
            app.to_string(),
            Desired { want, stamp: self.clock, by: self.local.clone(), clears_failures: false },
        );
        self.announce();
    }

    /// Count a failure here; restart locally while the budget lasts, else give the
    /// application up on this node so another may take it.
    fn record_failure(&mut self, app: &str, reason: String, start_failed: bool) {
        let Some(policy) = self.policies.get(app) else { return };
        let (restarts, window) = (policy.restarts, policy.window);
        let now = self.now;
        let Some(local) = self.locals.get_mut(app) else { return };
        local.failures.retain(|t| now.since(*t) < window);
        local.failures.push(now);
        let exhausted = start_failed || local.failures.len() as u32 > restarts;
        if exhausted {
            local.last_failure =
                Some(Failure { at: now, kind: FailureKind::GaveUp, reason: reason.clone() });
            local.restart_after_stop = false;
        } else {
            let kind = FailureKind::Restarting { attempt: local.failures.len(), restarts };
            local.last_failure = Some(Failure { at: now, kind, reason: reason.clone() });
            local.restart_after_stop = true;
        }
        self.stop_local(app, &reason, false);
    }

    /// Stop, urgently, every application running or starting here.
    fn stop_all_local(&mut self, reason: &str) {
        let active: Vec<String> = self
            .locals
            .iter()
            .filter(|(_, l)| matches!(l.state, AppState::Running | AppState::Starting))
            .map(|(a, _)| a.clone())
            .collect();
        for app in active {
            self.stop_local(&app, reason, true);
        }
    }

    fn stop_local(&mut self, app: &str, reason: &str, urgent: bool) {
        let Some(local) = self.locals.get_mut(app) else { return };
        if matches!(local.state, AppState::Running | AppState::Starting) {
            local.state = AppState::Stopping;
            self.actions.push_back(AppAction::Stop {
                app: app.to_string(),
                reason: reason.to_string(),
                urgent,
            });
            self.announce();
        }
    }

    /// Ask the shell to announce this node's state. One announcement waiting to go is enough:
    /// it is built when the shell sends it, with everything decided until then.
    pub(super) fn announce(&mut self) {
        self.actions.retain(|a| *a != AppAction::Announce);
        self.actions.push_back(AppAction::Announce);
    }

    /// Let time pass: a data grace may have ended.
    pub fn handle_timeout(&mut self, now: Time) {
        self.now = now;
        self.reconcile();
    }

    /// When `handle_timeout` must be called next, if a data grace is running.
    pub fn poll_timeout(&self) -> Option<Time> {
        // A data grace that ends may change a placement.
        let any_replicated = self.policies.values().any(|p| p.replicated);
        self.up_since
            .values()
            .map(|since| *since + DATA_GRACE)
            .filter(|end| any_replicated && *end > self.now)
            .min()
    }

    /// The next request for the shell.
    pub fn poll_action(&mut self) -> Option<AppAction> {
        self.actions.pop_front()
    }

    /// This node's state of `app`.
    pub fn state(&self, app: &str) -> Option<AppState> {
        self.locals.get(app).map(|l| l.state)
    }

    /// The last failure of `app` here, with when it happened.
    pub fn last_failure(&self, app: &str) -> Option<(Time, String)> {
        self.locals.get(app).and_then(|l| l.last_failure.as_ref()).map(|f| (f.at, f.text()))
    }

    /// The state of `app` here and on every peer that is up (this node first).
    pub fn view(&self, app: &str) -> Vec<(String, AppState)> {
        let mut view = Vec::new();
        if let Some(local) = self.locals.get(app) {
            view.push((self.local.clone(), local.state));
        }
        for (peer, states) in &self.peer_states {
            if let (Some(state), Some(Peer::Up { .. })) = (states.get(app), self.peers.get(peer)) {
                view.push((peer.clone(), *state));
            }
        }
        view
    }

    /// The nodes `app` may run on, most preferred first (`None`: no such application).
    pub fn nodes_of(&self, app: &str) -> Option<&[String]> {
        self.policies.get(app).map(|p| p.nodes.as_slice())
    }

    /// Names of the applications.
    pub fn names(&self) -> Vec<String> {
        self.policies.keys().cloned().collect()
    }

    /// Whether `peer` is gone for good as far as its data is concerned: declared down with a
    /// take-over verdict (or fenced) and past the take-over delay, so whatever it ran has
    /// stopped (docs/safety.md). DRBD's fence-peer handler may then answer that the peer is
    /// unreachable ([`crate::storage::PeerStanding::Gone`]).
    pub fn peer_gone(&self, peer: &str) -> bool {
        matches!(self.peers.get(peer), Some(Peer::Down { take_over: true }))
    }

    /// Why this node's replicated data of `app` may not be promoted, if so.
    pub fn data_blocked(&self, app: &str) -> Option<&NotPromotable> {
        self.locals.get(app).and_then(|l| l.data_blocked.as_ref())
    }

    /// Why each peer that is up may not promote its data of `app`, as it announced.
    pub fn peer_data_blocked(&self, app: &str) -> Vec<(String, NotPromotable)> {
        self.peer_data_blocked
            .iter()
            .filter(|(peer, _)| matches!(self.peers.get(*peer), Some(Peer::Up { .. })))
            .filter_map(|(peer, d)| d.get(app).map(|why| (peer.clone(), why.clone())))
            .collect()
    }

    /// Local restart count of `app` within its window.
    pub fn failures(&self, app: &str) -> usize {
        self.locals.get(app).map(|l| l.failures.len()).unwrap_or(0)
    }
}

mod announce;
mod failure;
mod lease;
mod placement;
#[cfg(test)]
mod tests;
mod types;
