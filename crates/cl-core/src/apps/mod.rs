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

use serde::{Deserialize, Serialize};

use self::failure::{Failure, FailureKind};
use crate::storage::NotPromotable;
use crate::time::Time;

/// The life-cycle state of an application on one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppState {
    /// Not active here.
    Stopped,
    /// Being started here.
    Starting,
    /// Active here.
    Running,
    /// Being stopped here.
    Stopping,
    /// Failed here and stopped cleanly: this node will not run it until cleared.
    Failed,
    /// Its stop failed: it may still hold its address or filesystem here. No other node may
    /// start it until this node is fenced or the administrator clears it.
    Stuck,
}

impl AppState {
    /// True when the application may be active on the node in this state.
    pub fn may_be_active(self) -> bool {
        !matches!(self, AppState::Stopped | AppState::Failed)
    }
}

/// Where the administrator (or autostart) wants an application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "want", rename_all = "snake_case")]
pub enum Want {
    /// Keep it stopped.
    Stopped,
    /// Keep it running, on this node if given and eligible.
    Running {
        /// The chosen node.
        node: Option<String>,
    },
}

/// A desired state with the stamp that orders changes across nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    /// What is wanted.
    pub want: Want,
    /// Lamport counter of the change.
    pub stamp: u64,
    /// The node that made the change (breaks ties).
    pub by: String,
    /// An administrator's start or switch: every node forgets its failures of the
    /// application, so the chosen node can run it again.
    #[serde(default)]
    pub clears_failures: bool,
}

impl Desired {
    fn newer_than(&self, other: &Desired) -> bool {
        (self.stamp, &self.by) > (other.stamp, &other.by)
    }
}

/// Failback policy, as in appconf.xml.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Failback {
    /// Stay where it runs.
    Manual,
    /// Move back to the most preferred node when it is eligible again.
    Auto,
}

/// What the machine needs to know about one application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppPolicy {
    /// Name.
    pub name: String,
    /// Allowed nodes, most preferred first.
    pub nodes: Vec<String>,
    /// Started when the cluster forms (unless `--noapps`).
    pub autostart: bool,
    /// Failback policy.
    pub failback: Failback,
    /// Local restarts allowed within `window` before the application fails over.
    pub restarts: u32,
    /// How long a failure counts.
    pub window: Duration,
    /// Its data is replicated (DRBD): a node runs it only while its copy is promotable
    /// ([`AppInput::Data`]); until the shell reports the volumes, the copy counts as not up.
    pub replicated: bool,
}

impl AppPolicy {
    /// The restart budget of an application whose monitors and resources each have one
    /// (restarts allowed within a window): the strictest counts, the fewest restarts over the
    /// longest window; 3 in 10 minutes when none is configured.
    pub fn strictest_budget(budgets: impl IntoIterator<Item = (u32, Duration)>) -> (u32, Duration) {
        let budgets: Vec<(u32, Duration)> = budgets.into_iter().collect();
        let restarts = budgets.iter().map(|(r, _)| *r).min().unwrap_or(3);
        let window = budgets.iter().map(|(_, w)| *w).max().unwrap_or(Duration::from_secs(600));
        (restarts, window)
    }
}

/// What a peer announces about its applications.
///
/// Announcements can arrive late and out of order (a connection attempt made during a
/// partition may complete after it heals), so each carries the sender's epoch (its start) and
/// a sequence number; an older one is ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// The sender's epoch: higher after a restart.
    pub epoch: u64,
    /// Grows with every announcement within an epoch.
    pub seq: u64,
    /// State of each application on the peer.
    pub states: BTreeMap<String, AppState>,
    /// The peer's view of the desired states.
    pub desired: BTreeMap<String, Desired>,
    /// Replicated applications whose data the peer may not promote, with the reason: the peer
    /// is not eligible for them.
    #[serde(default)]
    pub data_blocked: BTreeMap<String, NotPromotable>,
    /// The sender holds the arbitrator's lease: with an arbitrator, only it runs applications.
    #[serde(default)]
    pub lease: bool,
}

/// Facts the shell reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "input", rename_all = "snake_case")]
pub enum AppInput {
    /// The cluster formed (or this node joined); start autostart applications unless told not to.
    Formed {
        /// False for `clform --noapps`.
        start_autostart: bool,
    },
    /// Membership: a peer is up.
    PeerUp {
        /// The peer.
        peer: String,
    },
    /// Membership: a peer is down; `take_over` when this node is connected (verdict TakeOver).
    PeerDown {
        /// The peer.
        peer: String,
        /// Whether its applications may be taken over.
        take_over: bool,
    },
    /// The takeover guard fenced this peer: it holds nothing, so its applications may be taken
    /// over at once.
    PeerFenced {
        /// The peer.
        peer: String,
    },
    /// The takeover guard: this node holds the arbitrator's lease (or no longer does). With an
    /// arbitrator only the lease holder runs applications (see [`Apps::with_lease`]).
    Lease {
        /// The lease is held.
        held: bool,
    },
    /// The simulator's sabotage check only (`Sabotage::KeepRunningAfterLease`): the lease is
    /// gone and announced as gone, but the applications are left running — the broken rule
    /// the checker must catch. Never sent by a daemon.
    LeaseLostKeepRunning,
    /// Membership: this node is isolated.
    Isolated,
    /// Membership: this node is connected again.
    Reconnected,
    /// A peer's announcement.
    Peer {
        /// The peer.
        peer: String,
        /// What it says.
        announcement: Announcement,
    },
    /// The start sequence ended.
    StartFinished {
        /// Application.
        app: String,
        /// Whether it is running.
        ok: bool,
        /// Why not, when it failed.
        reason: String,
    },
    /// The stop sequence ended.
    StopFinished {
        /// Application.
        app: String,
        /// Whether everything was released (addresses, filesystems, processes).
        ok: bool,
        /// Why not, when it failed.
        reason: String,
    },
    /// A monitor failed.
    MonitorFailed {
        /// Application.
        app: String,
        /// What failed.
        reason: String,
    },
    /// An administrator's request (clstartapp, clhaltapp, clswitchapp).
    Admin(AdminOp),
    /// After a cldaemon restart the application was found active here (its address,
    /// filesystem or processes): it is ours, running.
    Adopted {
        /// Application.
        app: String,
    },
    /// The data verdict of a replicated application here (cl-core `storage::app_promotable`
    /// over its volumes): `None` when every copy may be promoted.
    Data {
        /// Application.
        app: String,
        /// Why this node's data may not be promoted, if it may not.
        blocked: Option<NotPromotable>,
    },
    /// The local disk under a running application failed and its policy is to move it: it
    /// fails here (like an exhausted restart budget) and moves to a node with good data.
    DataLost {
        /// Application.
        app: String,
        /// What failed.
        reason: String,
    },
}

/// Administrator requests about applications.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum AdminOp {
    /// Run it (on `node` if given); also clears a failure.
    Start {
        /// Application.
        app: String,
        /// Chosen node.
        node: Option<String>,
    },
    /// Stop it everywhere.
    Stop {
        /// Application.
        app: String,
    },
    /// Move it to `node` (or to the next eligible node).
    Switch {
        /// Application.
        app: String,
        /// Target node.
        node: Option<String>,
    },
}

/// What the machine asks the shell to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum AppAction {
    /// Run the start sequence here.
    Start {
        /// Application.
        app: String,
    },
    /// Run the stop sequence here.
    Stop {
        /// Application.
        app: String,
        /// Why, for the log.
        reason: String,
        /// This node gave up (isolated, no lease, or a peer takes over): the stop must end
        /// within the stop margin (cl-core `timing`), killing what does not stop in time.
        #[serde(default)]
        urgent: bool,
    },
    /// Send our announcement to the peers.
    Announce,
}

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
    /// Down; its applications may be taken over only with `take_over`, and only once
    /// `until` has passed (see [`Apps::new`]'s `takeover_delay`).
    Down {
        /// The membership verdict allowed it.
        take_over: bool,
        /// Not before this time.
        until: Time,
    },
}

/// How long a node that is up but has not reported its replicated data yet (DRBD still coming
/// up) keeps its place in an application's preference order: without it, whichever node's DRBD
/// answered first would get an autostart application, not the preferred one.
pub const DATA_GRACE: Duration = Duration::from_secs(15);

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
    takeover_delay: Duration,
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
    actions: VecDeque<AppAction>,
}

impl Apps {
    /// A node that knows the applications and its peers; nothing runs yet.
    ///
    /// `takeover_delay` is how long after a peer is declared down (with a take-over verdict)
    /// this node waits before starting that peer's applications: the time a peer that is in
    /// fact isolated needs to notice it and stop its copy (docs/cluster.md). `epoch` must
    /// grow across restarts of this node's machine (its start time will do).
    pub fn new(
        local: &str,
        peers: &[String],
        policies: Vec<AppPolicy>,
        takeover_delay: Duration,
        epoch: u64,
    ) -> Apps {
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
            takeover_delay,
            up_since: BTreeMap::new(),
            epoch,
            announced_seq: std::cell::Cell::new(0),
            heard: BTreeMap::new(),
            lease: None,
            peer_lease: Default::default(),
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
                self.actions.push_back(AppAction::Announce);
            }
            AppInput::PeerDown { peer, take_over } => {
                let until = now + self.takeover_delay;
                if let Some(p) = self.peers.get_mut(&peer) {
                    *p = Peer::Down { take_over, until };
                    self.heard_since_down.remove(&peer);
                }
            }
            AppInput::PeerFenced { peer } => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    *p = Peer::Down { take_over: true, until: now };
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
                let until = now;
                for peer in self.peers.values_mut() {
                    *peer = Peer::Down { take_over: false, until };
                }
                self.heard_since_down.clear();
                self.stop_all_local("this node is isolated");
            }
            AppInput::Reconnected => self.isolated = false,
            AppInput::Peer { peer, announcement } => {
                let stamp = (announcement.epoch, announcement.seq);
                if self.heard.get(&peer).is_some_and(|last| stamp <= *last) {
                    return; // late or repeated: the peer has said something newer since
                }
                self.heard.insert(peer.clone(), stamp);
                if let Some(Peer::Up { announced }) = self.peers.get_mut(&peer) {
                    if !*announced {
                        *announced = true;
                        // Its first word since it came up: answer, so it has ours too even if
                        // ours crossed its PeerUp on the wire.
                        self.actions.push_back(AppAction::Announce);
                    }
                }
                if matches!(self.peers.get(&peer), Some(Peer::Down { .. })) {
                    self.heard_since_down.insert(peer.clone());
                }
                self.peer_states.insert(peer.clone(), announcement.states);
                self.peer_data_blocked.insert(peer.clone(), announcement.data_blocked);
                if announcement.lease {
                    self.peer_lease.insert(peer.clone());
                } else {
                    self.peer_lease.remove(&peer);
                }
                self.peer_desired.insert(peer, announcement.desired.clone());
                let mut adopted = false;
                for (app, theirs) in announcement.desired {
                    if !self.policies.contains_key(&app) {
                        continue;
                    }
                    self.clock = self.clock.max(theirs.stamp);
                    let newer = self.desired.get(&app).is_none_or(|mine| theirs.newer_than(mine));
                    if newer {
                        if theirs.clears_failures {
                            self.clear_failure(&app);
                        }
                        self.desired.insert(app, theirs);
                        adopted = true;
                    }
                }
                if adopted {
                    // The sender waits for us to agree before it starts anything (safe_to_start).
                    self.actions.push_back(AppAction::Announce);
                }
            }
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
                self.actions.push_back(AppAction::Announce);
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
                self.actions.push_back(AppAction::Announce);
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
                local.data_blocked = blocked;
                // The peers place applications with this verdict too.
                self.actions.push_back(AppAction::Announce);
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
                self.actions.push_back(AppAction::Announce);
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
        if let Some(local) = self.locals.get_mut(app) {
            if local.state == AppState::Failed {
                local.state = AppState::Stopped;
                // The others must learn this node can run it again.
                self.actions.push_back(AppAction::Announce);
            }
            local.failures.clear();
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
        self.actions.push_back(AppAction::Announce);
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
            self.actions.push_back(AppAction::Announce);
        }
    }

    /// The node that announces the application running (this one included). Should two
    /// (after a partition heals), every node names the same one: the most preferred, so the
    /// other stops its copy.
    fn running_on(&self, app: &str) -> Option<String> {
        let runs = |node: &str| -> bool {
            if node == self.local {
                return self.locals.get(app).is_some_and(|l| l.state == AppState::Running);
            }
            matches!(self.peers.get(node), Some(Peer::Up { .. }))
                && self.peer_states.get(node).and_then(|s| s.get(app)) == Some(&AppState::Running)
        };
        let policy = self.policies.get(app)?;
        policy.nodes.iter().find(|n| runs(n)).cloned()
    }

    fn eligible(&self, app: &str, node: &str) -> bool {
        let allowed = self.policies.get(app).is_some_and(|p| p.nodes.iter().any(|n| n == node));
        if !allowed {
            return false;
        }
        if !self.lease_allows(node) {
            return false;
        }
        if node == self.local {
            return !self.isolated
                && self.locals.get(app).is_some_and(|l| {
                    !matches!(l.state, AppState::Failed | AppState::Stuck)
                        && l.data_blocked.is_none()
                });
        }
        match self.peers.get(node) {
            Some(Peer::Up { announced: true }) => {
                !matches!(
                    self.peer_states.get(node).and_then(|s| s.get(app)),
                    Some(AppState::Failed | AppState::Stuck)
                ) && !self.peer_data_blocked.get(node).is_some_and(|d| d.contains_key(app))
            }
            _ => false,
        }
    }

    /// Where the application should run now, if anywhere.
    pub fn placement(&self, app: &str) -> Option<String> {
        let policy = self.policies.get(app)?;
        let Some(Desired { want: Want::Running { node }, .. }) = self.desired.get(app) else {
            return None;
        };
        if let Some(chosen) = node {
            if self.eligible(app, chosen) {
                return Some(chosen.clone());
            }
        }
        // The most preferred eligible node, unless a more preferred one is only waiting for its
        // first data verdict: then nobody yet.
        let mut most_preferred = None;
        for node in &policy.nodes {
            if self.eligible(app, node) {
                most_preferred = Some(node.clone());
                break;
            }
            if self.data_pending(app, node) {
                break;
            }
        }
        if policy.failback == Failback::Manual {
            if let Some(current) = self.running_on(app) {
                if self.eligible(app, &current) {
                    return Some(current);
                }
            }
        }
        most_preferred
    }

    /// `node` is up and would be eligible for `app` but has not reported its replicated data yet
    /// (within [`DATA_GRACE`] of coming up).
    fn data_pending(&self, app: &str, node: &str) -> bool {
        let replicated = self.policies.get(app).is_some_and(|p| p.replicated);
        let Some(since) = self.up_since.get(node) else { return false };
        if !replicated || self.now >= *since + DATA_GRACE {
            return false;
        }
        if node == self.local {
            return !self.isolated
                && self.locals.get(app).is_some_and(|l| {
                    l.state == AppState::Stopped && l.data_blocked == Some(NotPromotable::NotUp)
                });
        }
        match self.peers.get(node) {
            // Not announced yet, or announced that its data is not up yet.
            Some(Peer::Up { announced: false }) => true,
            Some(Peer::Up { announced: true }) => {
                self.peer_data_blocked.get(node).and_then(|d| d.get(app))
                    == Some(&NotPromotable::NotUp)
                    && !matches!(
                        self.peer_states.get(node).and_then(|s| s.get(app)),
                        Some(AppState::Failed | AppState::Stuck)
                    )
            }
            _ => false,
        }
    }

    /// No other node may be running `app`: each allowed peer is up and announces it inactive,
    /// or is down with a take-over verdict.
    fn safe_to_start(&self, app: &str) -> bool {
        if self.isolated {
            return false;
        }
        self.peers.iter().all(|(name, peer)| match peer {
            Peer::Unknown => false,
            Peer::Up { announced } => {
                // Two nodes acting on different requests (say clstartapp on both at once, each
                // seeing the other failed) could both start it: agree on the request first.
                let agreed =
                    self.peer_desired.get(name).and_then(|d| d.get(app)) == self.desired.get(app);
                *announced
                    && agreed
                    && !self
                        .peer_states
                        .get(name)
                        .and_then(|s| s.get(app))
                        .is_some_and(|s| s.may_be_active())
            }
            Peer::Down { take_over, until } => {
                // A peer stuck stopping it before it went down still counts as holding it, and
                // so does one that announced it active after it went down: it is alive.
                let state = self.peer_states.get(name).and_then(|s| s.get(app));
                let spoke_since = self.heard_since_down.contains(name);
                *take_over
                    && self.now >= *until
                    && state != Some(&AppState::Stuck)
                    && !(spoke_since && state.is_some_and(|s| s.may_be_active()))
            }
        })
    }

    fn reconcile(&mut self) {
        let apps: Vec<String> = self.policies.keys().cloned().collect();
        for app in apps {
            let placement = self.placement(&app);
            let Some(local) = self.locals.get(&app) else { continue };
            let here = placement.as_deref() == Some(self.local.as_str());
            match local.state {
                AppState::Stopped if here && self.safe_to_start(&app) && self.may_start() => {
                    if let Some(local) = self.locals.get_mut(&app) {
                        local.state = AppState::Starting;
                        local.restart_after_stop = false;
                    }
                    // Taken over from a chosen node that failed: the choice is spent, or the
                    // application would move back by itself when that node returns.
                    let chosen_elsewhere = matches!(
                        self.desired.get(&app),
                        Some(Desired { want: Want::Running { node: Some(n) }, .. }) if *n != self.local
                    );
                    if chosen_elsewhere {
                        self.set_desired(&app, Want::Running { node: None });
                    }
                    self.actions.push_back(AppAction::Start { app: app.clone() });
                    self.actions.push_back(AppAction::Announce);
                }
                // Not if the administrator stopped it meanwhile.
                AppState::Stopped
                    if local.restart_after_stop
                        && !self.isolated
                        && self.may_start()
                        && matches!(
                            self.desired.get(&app),
                            Some(Desired { want: Want::Running { .. }, .. })
                        ) =>
                {
                    // A local restart: nobody else may start it meanwhile, since it is still ours.
                    if let Some(local) = self.locals.get_mut(&app) {
                        local.state = AppState::Starting;
                        local.restart_after_stop = false;
                    }
                    self.actions.push_back(AppAction::Start { app: app.clone() });
                    self.actions.push_back(AppAction::Announce);
                }
                AppState::Running if !here => {
                    let reason = match &placement {
                        Some(node) => format!("moving to {node}"),
                        None => "stopped by request".to_string(),
                    };
                    self.stop_local(&app, &reason, false);
                }
                _ => {}
            }
        }
    }

    /// Let time pass: a take-over delay may have ended.
    pub fn handle_timeout(&mut self, now: Time) {
        self.now = now;
        self.reconcile();
    }

    /// When `handle_timeout` must be called next, if a take-over is waiting.
    pub fn poll_timeout(&self) -> Option<Time> {
        let takeovers = self.peers.values().filter_map(|p| match p {
            Peer::Down { take_over: true, until } if *until > self.now => Some(*until),
            _ => None,
        });
        // A data grace that ends may change a placement.
        let any_replicated = self.policies.values().any(|p| p.replicated);
        let graces = self
            .up_since
            .values()
            .map(|since| *since + DATA_GRACE)
            .filter(|end| any_replicated && *end > self.now);
        takeovers.chain(graces).min()
    }

    /// The next request for the shell.
    pub fn poll_action(&mut self) -> Option<AppAction> {
        self.actions.pop_front()
    }

    /// What this node announces to its peers.
    pub fn announcement(&self) -> Announcement {
        let seq = self.announced_seq.get() + 1;
        self.announced_seq.set(seq);
        Announcement {
            epoch: self.epoch,
            seq,
            states: self.locals.iter().map(|(a, l)| (a.clone(), l.state)).collect(),
            desired: self.desired.clone(),
            data_blocked: self
                .locals
                .iter()
                .filter_map(|(a, l)| l.data_blocked.clone().map(|why| (a.clone(), why)))
                .collect(),
            lease: self.lease == Some(true),
        }
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
        matches!(self.peers.get(peer), Some(Peer::Down { take_over: true, until }) if self.now >= *until)
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

mod failure;
mod lease;
#[cfg(test)]
mod tests;
