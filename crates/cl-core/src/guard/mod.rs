//! The takeover guard: what must be true before this node takes over a silent peer's
//! applications, and when this node must stop its own because it may not be the survivor.
//!
//! Membership says a peer is silent and whether this node is connected ([`Verdict`]). That is
//! not enough to start a second copy of an application safely: the peer may be alive behind a
//! broken heartbeat path, or the two nodes may be cut from each other while both reach the
//! outside. The guard sits between membership and the applications machine and adds, in this
//! order, the gates configured for the cluster (docs/safety.md):
//!
//! 1. **lease** (an arbitrator is configured): after losing a peer, this node may keep or take
//!    over applications only while it holds the arbitrator's lease. Without it (denied, or no
//!    answer) it stops its own applications, exactly like an isolated node. A held lease is
//!    renewed; one that cannot be renewed makes this node stop its applications `stop_margin`
//!    before the lease could expire at the arbitrator and be granted to the other node;
//! 2. **fencing** (the peer has a fence device): the peer is powered off before anything is
//!    taken over; a failed fence is reported and retried, and nothing is taken over meanwhile.
//!    A fenced peer holds nothing, so its applications are taken over at once;
//! 3. **peer-alive probe** (unfenced peers): the peer's addresses are probed on the public
//!    networks (ARP / ND). A peer that answers is alive and only the heartbeat path is broken:
//!    nothing is taken over and an alarm is raised until it stops answering or comes back.
//!
//! Only when every gate is passed does the applications machine hear that it may take the
//! peer's applications over; until then it hears that the peer is down without a take-over.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::apps::AppInput;
use crate::arbiter::ArbOp;
use crate::membership::{Action as MembershipAction, Verdict};
use crate::time::Time;
use crate::timing::SafetyTiming;

#[cfg(test)]
mod tests;

/// Lease timing, when an arbitrator is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    /// How long a grant lasts at the arbitrator.
    pub lease: Duration,
    /// A request without an answer within this time counts as refused.
    pub answer_timeout: Duration,
    /// Time this node needs to stop every application (stop deadlines and the hard kill that
    /// ends them): it stops this long before its lease could expire.
    pub stop_margin: Duration,
    /// A held lease is renewed this long after the granted request was sent.
    pub renew_after: Duration,
}

impl LeaseTiming {
    /// Allowance for clocks running at different rates: this node counts its lease as
    /// `lease - drift()` from the request's sending (2 %, far above real clock drift).
    pub fn drift(&self) -> Duration {
        self.lease / 50
    }

    /// Until when a lease granted for a request sent at `sent` is relied on: the arbitrator's
    /// expiry, `arrival + lease` on its clock, is never earlier.
    pub fn held_until(&self, sent: Time) -> Time {
        sent + self.lease - self.drift()
    }
}

/// A deliberately broken rule, so the simulator can show its checker catches a violation.
/// Never set outside tests.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Sabotage {
    /// The rules as documented.
    #[default]
    None,
    /// Take over without waiting for the lease, the fence or the probe.
    SkipGates,
    /// A lease holder that cannot renew keeps its applications running past its stop deadline.
    KeepRunningAfterLease,
}

/// What the guard needs to know about the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardConfig {
    /// This node.
    pub local: String,
    /// The other nodes, with whether each has a fence device this node can use.
    pub peers: BTreeMap<String, bool>,
    /// Without an arbitrator, the unit of the fence-race wait ([`Guard`]'s fencing rule): a node
    /// that runs no applications waits it before fencing, so that in a symmetric partition the
    /// node running the applications wins instead of both powering each other off.
    pub fence_delay: Duration,
    /// This node is listed first in clconf.xml: it wins the fence race between two nodes that
    /// both run applications (or both run none).
    pub first: bool,
    /// Wait between fence attempts after a failure.
    pub fence_retry: Duration,
    /// Probe an unfenced peer's addresses before taking over.
    pub probe: bool,
    /// Wait before probing again a peer that answered.
    pub probe_retry: Duration,
    /// A peer that answered the probe and then fell silent may have lost this node only now:
    /// wait this long (the heartbeat timeout) so it has noticed too, before taking over.
    pub settle: Duration,
    /// The arbitrator's lease, when one is configured.
    pub lease: Option<LeaseTiming>,
    #[doc(hidden)]
    pub sabotage: Sabotage,
}

impl GuardConfig {
    /// The guard of `local` in a cluster with `timing`: `peers` with whether each has a fence
    /// device, `first` when `local` is listed first in clconf.xml, and the fence agents' retry
    /// interval (the shortest configured; 2 s without one). The rules' own timing: a node
    /// that runs no applications waits two heartbeat timeouts before fencing (the fence race),
    /// a peer that answered the probe and then fell silent gets one heartbeat timeout to notice
    /// it lost this node, and a peer that answers is probed again every second.
    pub fn new(
        local: &str,
        peers: BTreeMap<String, bool>,
        first: bool,
        timing: &SafetyTiming,
        fence_retry: Option<Duration>,
    ) -> GuardConfig {
        GuardConfig {
            local: local.to_string(),
            peers,
            fence_delay: timing.timeout * 2,
            first,
            fence_retry: fence_retry.unwrap_or(Duration::from_secs(2)),
            probe: true,
            probe_retry: Duration::from_secs(1),
            settle: timing.timeout,
            lease: timing.lease,
            sabotage: Sabotage::None,
        }
    }
}

/// Facts the shell reports to the guard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "input", rename_all = "snake_case")]
pub enum GuardInput {
    /// The probe of a peer's addresses ended.
    ProbeResult {
        /// The peer.
        peer: String,
        /// Some address answered.
        alive: bool,
        /// What answered, or what was probed.
        detail: String,
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
    /// A peer says (over any link that still carries its messages) that it cannot hear this
    /// node and is taking over its applications.
    PeerTakingOver {
        /// The peer.
        peer: String,
    },
    /// The arbitrator answered request `id`.
    LeaseReply {
        /// The request.
        id: u64,
        /// The lease is ours.
        granted: bool,
        /// Who holds it, when not us.
        holder: Option<String>,
        /// When denied: how long the holder's lease still runs (ask again then).
        #[serde(default)]
        remaining: Option<Duration>,
    },
    /// What the applications machine holds and wants, reported after every change: with an
    /// arbitrator a node holds the lease while it runs (or is about to start) any application;
    /// without one, the fencing rule favours the node that runs applications.
    LocalApps {
        /// Some application is active here (starting, running or stopping).
        active: bool,
        /// Some application should start here (it waits for the lease).
        wanted: bool,
        /// The peer, as last heard, runs some application.
        peer_active: bool,
    },
}

/// How serious an event is, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Worth logging.
    Info,
    /// Something is wrong but handled.
    Warn,
    /// An administrator must look: a takeover is being refused or the node stops its copies.
    Alarm,
}

/// What the guard asks the shell to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum GuardAction {
    /// Feed this to the applications machine.
    Apps(AppInput),
    /// Probe the peer's addresses on the public networks; report [`GuardInput::ProbeResult`].
    Probe {
        /// The peer.
        peer: String,
    },
    /// Power the peer off with its fence device; report [`GuardInput::FenceResult`].
    Fence {
        /// The peer.
        peer: String,
    },
    /// Send a lease request to the arbitrator; report [`GuardInput::LeaseReply`] with `id`.
    Lease {
        /// Matches the reply.
        id: u64,
        /// What to ask.
        op: ArbOp,
    },
    /// Log this (and show alarms in clstat).
    Event {
        /// How serious.
        level: Level,
        /// What happened and why.
        text: String,
    },
}

/// Where the takeover of one silent peer stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "gate", rename_all = "snake_case")]
pub enum Gate {
    /// The peer is up (or not judged yet): nothing to guard.
    Idle,
    /// The peer is down but this node may not take over (it is isolated or cannot tell).
    StandBy,
    /// Waiting for the arbitrator's lease.
    Lease,
    /// Fencing starts at `at` (the fence-race delay, or the retry after a failure).
    FenceAt {
        /// When.
        at: Time,
        /// Attempts so far.
        attempts: u32,
    },
    /// The fence agent runs.
    Fencing {
        /// Attempts so far, this one included.
        attempts: u32,
    },
    /// The probe runs.
    Probing,
    /// The peer answered the probe: probe again at `at`.
    ProbeAt {
        /// When.
        at: Time,
    },
    /// The peer answered the probe before and is silent now: take over at `at`.
    Settle {
        /// When.
        at: Time,
    },
    /// Every gate passed; `fenced` when the peer was powered off.
    Cleared {
        /// The peer was fenced.
        fenced: bool,
    },
}

impl Gate {
    /// When a gate that waits for time acts next.
    fn due_at(&self) -> Option<Time> {
        match self {
            Gate::FenceAt { at, .. } | Gate::ProbeAt { at } | Gate::Settle { at } => Some(*at),
            _ => None,
        }
    }
}

/// The lease as this node knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "lease", rename_all = "snake_case")]
pub enum LeaseView {
    /// Not needed: every peer is up (or no arbitrator).
    NotNeeded,
    /// Asked for, no answer yet.
    Asking,
    /// Held until `until` (this node's clock, measured from the request's sending).
    Held {
        /// Expiry.
        until: Time,
    },
    /// Refused: another node holds it.
    Denied {
        /// The holder.
        holder: Option<String>,
    },
    /// The arbitrator did not answer.
    NoAnswer,
}

/// A snapshot for clstat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardStatus {
    /// Each peer's takeover gate.
    pub gates: BTreeMap<String, Gate>,
    /// The lease, when an arbitrator is configured.
    pub lease: Option<LeaseView>,
    /// Conditions an administrator must see, newest last.
    pub alarms: Vec<String>,
}

#[derive(Debug, Clone)]
struct Outstanding {
    id: u64,
    sent: Time,
}

#[derive(Debug)]
struct Lease {
    timing: LeaseTiming,
    /// Held until this time on our clock (request sending time + lease).
    held_until: Option<Time>,
    outstanding: Option<Outstanding>,
    /// Next request, when none is outstanding.
    next_at: Option<Time>,
    view: LeaseView,
}

/// The takeover guard of one node.
#[derive(Debug)]
pub struct Guard {
    config: GuardConfig,
    now: Time,
    gates: BTreeMap<String, Gate>,
    lease: Option<Lease>,
    next_id: u64,
    /// Membership says this node is isolated.
    isolated: bool,
    /// This node stopped its applications for want of the lease.
    stopped_for_lease: bool,
    /// A peer that cannot hear this node says it takes over: this node yields until then.
    yielded_until: Option<Time>,
    /// Peers membership reports up.
    up: std::collections::BTreeSet<String>,
    /// What the applications machine was last told: stop everything (true) or not.
    apps_isolated: bool,
    /// What the applications machine was last told about the lease.
    apps_lease: bool,
    /// The applications machine's last report ([`GuardInput::LocalApps`]).
    local_active: bool,
    local_wanted: bool,
    peer_active: bool,
    alarms: BTreeMap<String, String>,
    actions: VecDeque<GuardAction>,
}

impl Guard {
    /// A guard for a node whose peers are not judged yet.
    pub fn new(config: GuardConfig) -> Guard {
        let gates = config.peers.keys().map(|p| (p.clone(), Gate::Idle)).collect();
        let lease = config.lease.map(|timing| Lease {
            timing,
            held_until: None,
            outstanding: None,
            next_at: None,
            view: LeaseView::NotNeeded,
        });
        Guard {
            config,
            now: Time::ZERO,
            gates,
            lease,
            next_id: 0,
            isolated: false,
            stopped_for_lease: false,
            yielded_until: None,
            up: Default::default(),
            apps_isolated: false,
            apps_lease: false,
            local_active: false,
            local_wanted: false,
            peer_active: false,
            alarms: BTreeMap::new(),
            actions: VecDeque::new(),
        }
    }

    /// Feed a membership action; the guard passes on what the applications machine must hear.
    pub fn on_membership(&mut self, now: Time, action: &MembershipAction) {
        self.now = now;
        match action {
            MembershipAction::PeerUp { peer } => {
                if let Some(gate) = self.gates.get_mut(peer) {
                    *gate = Gate::Idle;
                }
                self.up.insert(peer.clone());
                self.alarms.remove(&format!("peer:{peer}"));
                self.apps(AppInput::PeerUp { peer: peer.clone() });
            }
            MembershipAction::PeerDown { peer, verdict, .. } => {
                if !self.gates.contains_key(peer) {
                    return;
                }
                self.up.remove(peer);
                // Until every gate is passed the peer's applications stay where they are.
                self.apps(AppInput::PeerDown { peer: peer.clone(), take_over: false });
                if *verdict == Verdict::StandBy {
                    self.set_gate(peer, Gate::StandBy);
                } else if self.config.sabotage == Sabotage::SkipGates {
                    self.clear(peer, true);
                } else if self.lease.is_some() {
                    self.set_gate(peer, Gate::Lease);
                } else {
                    self.after_lease(peer);
                }
            }
            MembershipAction::Isolated { .. } => {
                self.isolated = true;
                for gate in self.gates.values_mut() {
                    if *gate != Gate::Idle {
                        *gate = Gate::StandBy;
                    }
                }
            }
            MembershipAction::Reconnected => self.isolated = false,
            _ => {}
        }
        self.step();
    }

    /// Feed a fact from the shell.
    pub fn handle(&mut self, now: Time, input: GuardInput) {
        self.now = now;
        match input {
            GuardInput::ProbeResult { peer, alive, detail } => {
                if self.gates.get(&peer) != Some(&Gate::Probing) {
                    return;
                }
                if alive {
                    let text = format!("node {peer} is silent on every heartbeat link but still answers on the public network ({detail}): it is alive, so this node takes nothing over; check the heartbeat networks");
                    self.alarm(format!("peer:{peer}"), text);
                    let at = now + self.config.probe_retry;
                    self.set_gate(&peer, Gate::ProbeAt { at });
                } else {
                    let was_alive = self.alarms.remove(&format!("peer:{peer}")).is_some();
                    self.event(
                        Level::Info,
                        format!("node {peer} does not answer on the public network ({detail})"),
                    );
                    if was_alive {
                        let at = now + self.config.settle;
                        self.set_gate(&peer, Gate::Settle { at });
                    } else {
                        self.clear(&peer, false);
                    }
                }
            }
            GuardInput::FenceResult { peer, ok, detail } => {
                let Some(Gate::Fencing { attempts }) = self.gates.get(&peer).cloned() else {
                    return;
                };
                if ok {
                    self.alarms.remove(&format!("peer:{peer}"));
                    self.event(Level::Warn, format!("node {peer} was fenced (powered off)"));
                    self.clear(&peer, true);
                } else {
                    let at = now + self.config.fence_retry;
                    let text = format!("fencing node {peer} failed (attempt {attempts}): {detail}; nothing of {peer} is taken over until it succeeds; retrying in {} ms", self.config.fence_retry.as_millis());
                    self.alarm(format!("peer:{peer}"), text);
                    self.set_gate(&peer, Gate::FenceAt { at, attempts });
                }
            }
            GuardInput::LeaseReply { id, granted, holder, remaining } => {
                self.lease_reply(id, granted, holder, remaining)
            }
            GuardInput::LocalApps { active, wanted, peer_active } => {
                self.local_active = active;
                self.local_wanted = wanted;
                self.peer_active = peer_active;
            }
            GuardInput::PeerTakingOver { peer } => {
                if !self.gates.contains_key(&peer) {
                    return;
                }
                if self.yielded_until.is_none() {
                    self.alarm("yield".into(), format!("node {peer} cannot hear this node and is taking over its applications: stopping them here"));
                }
                self.yielded_until = Some(now + self.config.settle);
            }
        }
        self.step();
    }

    /// Let time pass: retries, lease renewals and expiries.
    pub fn handle_timeout(&mut self, now: Time) {
        self.now = now;
        if self.yielded_until.is_some_and(|t| now >= t) {
            self.yielded_until = None;
            self.alarms.remove("yield");
            self.event(
                Level::Info,
                "no peer says it takes over this node's applications any more".into(),
            );
        }
        let due: Vec<(String, Gate)> = self
            .gates
            .iter()
            .filter(|(_, g)| g.due_at().is_some_and(|at| at <= now))
            .map(|(p, g)| (p.clone(), g.clone()))
            .collect();
        for (peer, gate) in due {
            match gate {
                Gate::FenceAt { attempts, .. } => self.fence(&peer, attempts + 1),
                Gate::ProbeAt { .. } => self.probe(&peer),
                Gate::Settle { .. } => self.clear(&peer, false),
                _ => {}
            }
        }
        self.step();
    }

    /// When `handle_timeout` must be called next.
    pub fn poll_timeout(&self) -> Option<Time> {
        let mut next: Option<Time> = None;
        let mut consider = |t: Time| next = Some(next.map_or(t, |n: Time| n.min(t)));
        for at in self.gates.values().filter_map(Gate::due_at) {
            consider(at);
        }
        if let Some(t) = self.yielded_until {
            consider(t);
        }
        if let Some(lease) = &self.lease {
            if let Some(o) = &lease.outstanding {
                consider(o.sent + lease.timing.answer_timeout);
            }
            if let Some(t) = lease.next_at.filter(|_| self.needs_lease()) {
                consider(t);
            }
            if let Some(until) = lease.held_until {
                consider(until - lease.timing.stop_margin);
            }
        }
        next
    }

    /// The next request for the shell.
    pub fn poll_action(&mut self) -> Option<GuardAction> {
        self.actions.pop_front()
    }

    /// A snapshot for clstat.
    pub fn status(&self) -> GuardStatus {
        GuardStatus {
            gates: self.gates.clone(),
            lease: self.lease.as_ref().map(|l| l.view.clone()),
            alarms: self.alarms.values().cloned().collect(),
        }
    }

    /// True while this node holds the arbitrator's lease.
    pub fn holds_lease(&self) -> bool {
        self.lease.as_ref().is_some_and(|l| l.held_until.is_some_and(|t| self.now < t))
    }

    /// The lease timing, when an arbitrator is configured.
    pub fn lease_timing(&self) -> Option<LeaseTiming> {
        self.config.lease
    }

    /// True while this node has stopped its applications for want of the lease.
    pub fn stopped_for_lease(&self) -> bool {
        self.stopped_for_lease
    }

    /// A peer is down and this node may take it over: the lease decides.
    fn peer_needs_lease(&self) -> bool {
        !self.isolated && self.gates.values().any(|g| !matches!(g, Gate::Idle | Gate::StandBy))
    }

    /// The lease is wanted: for a takeover, or because this node runs (or is about to start)
    /// applications, which with an arbitrator only the lease holder may.
    fn needs_lease(&self) -> bool {
        self.peer_needs_lease() || self.local_active || self.local_wanted
    }

    /// The peers this node is taking over (every gate passed): it tells them, so a peer that
    /// can send but not receive learns it must give up (docs/safety.md, one-way partitions).
    pub fn taking_over(&self) -> Vec<String> {
        self.gates
            .iter()
            .filter(|(_, g)| matches!(g, Gate::Cleared { .. }))
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Tell the applications machine to stop everything, or that it may run again, when the
    /// reasons change: membership isolation, the lease, or a peer taking over.
    fn sync_apps(&mut self) {
        let isolated = self.isolated || self.stopped_for_lease || self.yielded_until.is_some();
        if isolated == self.apps_isolated {
            return;
        }
        self.apps_isolated = isolated;
        if isolated {
            self.apps(AppInput::Isolated);
        } else {
            self.apps(AppInput::Reconnected);
            // Stopping everything made it forget its peers: those that are up count again.
            let up: Vec<String> = self.up.iter().cloned().collect();
            for peer in up {
                self.apps(AppInput::PeerUp { peer });
            }
        }
    }

    /// Everything that depends on the lease and on time, after any change.
    fn step(&mut self) {
        self.step_lease();
        self.sync_apps();
    }

    fn step_lease(&mut self) {
        if self.lease.is_none() {
            return;
        }
        let now = self.now;
        let needed = self.needs_lease();
        let sabotaged = self.config.sabotage == Sabotage::KeepRunningAfterLease;
        let mut request: Option<ArbOp> = None;
        let mut lost: Option<String> = None;
        let mut gained = false;
        if let Some(lease) = self.lease.as_mut() {
            // A request without an answer in time counts as refused.
            if let Some(o) = &lease.outstanding {
                if now >= o.sent + lease.timing.answer_timeout {
                    lease.outstanding = None;
                    if lease.held_until.is_none() {
                        lease.view = LeaseView::NoAnswer;
                        lost = Some(format!(
                            "the arbitrator did not answer within {} ms",
                            lease.timing.answer_timeout.as_millis()
                        ));
                    }
                    lease.next_at = Some(now);
                }
            }
            // The stop deadline: everything must be stopped before the lease could run out at
            // the arbitrator, whether or not the peer is up (docs/safety.md).
            if let Some(until) = lease.held_until {
                if now >= until - lease.timing.stop_margin {
                    lease.held_until = None;
                    lease.view = LeaseView::NoAnswer;
                    if needed && !sabotaged {
                        lost = Some(format!(
                            "the arbitrator's lease could not be renewed and expires in {} ms",
                            until.since(now).as_millis()
                        ));
                    } else {
                        lease.view = LeaseView::NotNeeded;
                    }
                }
            }
            if needed {
                if lease.outstanding.is_none() && lease.next_at.is_none_or(|t| now >= t) {
                    request = Some(if lease.held_until.is_some() {
                        ArbOp::Renew
                    } else {
                        ArbOp::Acquire
                    });
                }
                if lease.held_until.is_some() {
                    gained = true;
                }
            } else if lease.held_until.is_none() {
                lease.outstanding = None;
                lease.next_at = None;
                lease.view = LeaseView::NotNeeded;
            }
            // Not needed but still held: it is left to run out, never released, so that no
            // start raced with a release (an application started just before is still covered
            // and renews it).
        }
        if let Some(op) = request {
            self.next_id += 1;
            let id = self.next_id;
            if let Some(lease) = self.lease.as_mut() {
                lease.outstanding = Some(Outstanding { id, sent: now });
                lease.next_at = None;
                if lease.held_until.is_none()
                    && lease.view != LeaseView::NoAnswer
                    && !matches!(lease.view, LeaseView::Denied { .. })
                {
                    lease.view = LeaseView::Asking;
                }
            }
            self.actions.push_back(GuardAction::Lease { id, op });
        }
        self.sync_apps_lease();
        if let Some(reason) = lost {
            self.lose_lease(reason);
        } else if gained && self.stopped_for_lease {
            self.end_lease_stop();
            self.event(Level::Warn, "this node holds the arbitrator's lease again".into());
            self.sync_apps();
        }
        if gained {
            let waiting: Vec<String> = self
                .gates
                .iter()
                .filter(|(_, g)| **g == Gate::Lease)
                .map(|(p, _)| p.clone())
                .collect();
            // Back from a lost lease, the gates start over: the applications machine forgot
            // the cleared verdicts when it was told to stop everything.
            for peer in waiting {
                self.after_lease(&peer);
            }
        } else if self.stopped_for_lease && !self.peer_needs_lease() && !self.local_active {
            // Nothing runs here and no peer is to be taken over: the applications machine may
            // place applications again (it starts them only once the lease is held).
            self.end_lease_stop();
        }
    }

    /// Tell the applications machine whether this node holds the lease (it starts nothing
    /// without it).
    fn sync_apps_lease(&mut self) {
        let Some(lease) = self.lease.as_ref() else { return };
        let held = lease.held_until.is_some();
        if held != self.apps_lease {
            self.apps_lease = held;
            if !held && self.config.sabotage == Sabotage::KeepRunningAfterLease {
                // The broken rule: the lease is announced as gone, the applications run on.
                self.apps(AppInput::LeaseLostKeepRunning);
            } else {
                self.apps(AppInput::Lease { held });
            }
        }
    }

    /// The lease no longer keeps this node's applications stopped.
    fn end_lease_stop(&mut self) {
        self.stopped_for_lease = false;
        self.alarms.remove("lease");
    }

    fn lease_reply(
        &mut self,
        id: u64,
        granted: bool,
        holder: Option<String>,
        remaining: Option<Duration>,
    ) {
        let now = self.now;
        let mut refused: Option<String> = None;
        let Some(lease) = self.lease.as_mut() else { return };
        let Some(o) = lease.outstanding.clone() else { return };
        if o.id != id {
            return; // an answer to a request given up on
        }
        lease.outstanding = None;
        if granted {
            let until = lease.timing.held_until(o.sent);
            lease.held_until = Some(until);
            lease.view = LeaseView::Held { until };
            lease.next_at = Some(o.sent + lease.timing.renew_after);
        } else {
            lease.held_until = None;
            lease.view = LeaseView::Denied { holder: holder.clone() };
            // The holder may die: ask again as soon as its lease could have run out.
            let wait = remaining
                .map(|r| r + Duration::from_millis(10))
                .unwrap_or(lease.timing.lease / 4)
                .min(lease.timing.lease / 4);
            lease.next_at = Some(now + wait);
            refused = Some(match holder {
                Some(h) => format!("the arbitrator's lease is held by {h}"),
                None => "the arbitrator refused the lease".to_string(),
            });
        }
        if let Some(reason) = refused {
            self.lose_lease(reason);
        }
    }

    /// Without the lease this node may not run anything.
    fn lose_lease(&mut self, reason: String) {
        if !self.peer_needs_lease() && !self.local_active {
            return; // it only wanted to start something: it waits
        }
        for gate in self.gates.values_mut() {
            if !matches!(gate, Gate::Idle | Gate::StandBy) {
                *gate = Gate::Lease;
            }
        }
        if !self.stopped_for_lease {
            self.stopped_for_lease = true;
            self.alarm(
                "lease".into(),
                format!("{reason}: this node does not hold the lease, so it stops its applications and takes nothing over"),
            );
        }
    }

    fn after_lease(&mut self, peer: &str) {
        let fenced = self.config.peers.get(peer).copied().unwrap_or(false);
        if fenced {
            let delay = self.fence_wait();
            if delay.is_zero() {
                self.fence(peer, 1);
            } else {
                let at = self.now + delay;
                self.set_gate(peer, Gate::FenceAt { at, attempts: 0 });
            }
        } else if self.config.probe {
            self.probe(peer);
        } else {
            self.clear(peer, false);
        }
    }

    /// How long to wait before fencing a silent peer. With an arbitrator, only the lease holder
    /// gets here: at once. Without one, the node that runs applications wins the race between
    /// two nodes cut from each other: it fences at once if the peer (as last heard) ran none;
    /// when both ran some, the first node in clconf.xml fences at once and the other waits one
    /// `fence_delay`; a node running none waits two (one if the peer ran none either and this
    /// node is first). Stale knowledge can at worst make both fence (both off: availability,
    /// never safety).
    fn fence_wait(&self) -> Duration {
        if self.lease.is_some() {
            return Duration::ZERO;
        }
        let unit = self.config.fence_delay;
        let active = self.local_active || self.local_wanted;
        match (active, self.peer_active) {
            (true, false) => Duration::ZERO,
            (true, true) if self.config.first => Duration::ZERO,
            (true, true) => unit,
            (false, false) if self.config.first => unit,
            (false, _) => unit * 2,
        }
    }

    fn fence(&mut self, peer: &str, attempts: u32) {
        self.set_gate(peer, Gate::Fencing { attempts });
        self.event(Level::Warn, format!("fencing node {peer} (attempt {attempts})"));
        self.actions.push_back(GuardAction::Fence { peer: peer.to_string() });
    }

    fn probe(&mut self, peer: &str) {
        self.set_gate(peer, Gate::Probing);
        self.actions.push_back(GuardAction::Probe { peer: peer.to_string() });
    }

    fn clear(&mut self, peer: &str, fenced: bool) {
        self.set_gate(peer, Gate::Cleared { fenced });
        let how = if fenced { "it was fenced" } else { "it does not answer on any network" };
        let lease =
            if self.holds_lease() { " and this node holds the arbitrator's lease" } else { "" };
        self.event(
            Level::Warn,
            format!("taking over the applications of node {peer}: {how}{lease}"),
        );
        if fenced {
            self.apps(AppInput::PeerFenced { peer: peer.to_string() });
        } else {
            self.apps(AppInput::PeerDown { peer: peer.to_string(), take_over: true });
        }
    }

    fn set_gate(&mut self, peer: &str, gate: Gate) {
        if let Some(g) = self.gates.get_mut(peer) {
            *g = gate;
        }
    }

    fn alarm(&mut self, key: String, text: String) {
        if self.alarms.get(&key) != Some(&text) {
            self.event(Level::Alarm, text.clone());
        }
        self.alarms.insert(key, text);
    }

    fn event(&mut self, level: Level, text: String) {
        self.actions.push_back(GuardAction::Event { level, text });
    }

    fn apps(&mut self, input: AppInput) {
        self.actions.push_back(GuardAction::Apps(input));
    }
}
