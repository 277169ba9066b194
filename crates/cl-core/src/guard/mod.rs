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

use crate::apps::AppInput;
use crate::arbiter::ArbOp;
use crate::membership::{Action as MembershipAction, Verdict};
use crate::time::Time;
use crate::timing::HeartbeatGrid;

mod lease;
#[cfg(test)]
mod tests;
mod types;

pub use self::types::*;

#[derive(Debug, Clone)]
struct Outstanding {
    id: u64,
    sent: Time,
}

/// A probe of a silent peer's addresses sent ahead of what lets the takeover go on, so that
/// the start does not wait for it: the lease grant (its result decides, [`Gate::Lease`]), a
/// delayed fence (its result decides nothing, but its silence spares the start the address
/// probe, dad.rs; [`Gate::FenceAt`]), or the end of the takeover delay ([`Gate::Delay`]: its
/// silence spares the start its probe, an answer stops the takeover).
#[derive(Debug, Clone, PartialEq, Eq)]
enum EarlyProbe {
    /// Not sent yet: due at `at`, timed to end when the lease is expected to be granted (the
    /// denial says when the holder's lease runs out; a denial also re-times a probe whose
    /// silence would be stale by then), when the fence begins or just before the takeover
    /// delay ends, so its silence is fresh at the start.
    Due {
        /// When to send it.
        at: Time,
    },
    /// Sent at `began`; no answer yet.
    Running {
        /// When it was sent.
        began: Time,
    },
    /// Nobody answered the probe sent at `began`: with the lease granted within one heartbeat
    /// timeout of that, the peer is taken over at once (older silence proves nothing).
    Silent {
        /// When it was sent.
        began: Time,
    },
    /// The peer answered: it is probed again once the lease is granted (it may have been
    /// releasing its addresses until its own lease ran out).
    Answered,
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
    /// Probes sent ahead of the lease grant, a delayed fence or the end of the takeover delay,
    /// by peer.
    early_probes: BTreeMap<String, EarlyProbe>,
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
    /// When each peer declared down was last heard on any link (the fence race's phase).
    silent_since: BTreeMap<String, Time>,
    /// When this node's heartbeats leave, as last known ([`GuardConfig::beat_grid`]).
    beat_grid: Option<HeartbeatGrid>,
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
        let beat_grid = config.beat_grid;
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
            early_probes: BTreeMap::new(),
            lease,
            next_id: 0,
            isolated: false,
            stopped_for_lease: false,
            yielded_until: None,
            up: Default::default(),
            silent_since: BTreeMap::new(),
            beat_grid,
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
                self.early_probes.remove(peer);
                self.alarms.remove(&format!("peer:{peer}"));
                self.apps(AppInput::PeerUp { peer: peer.clone() });
            }
            MembershipAction::PeerDown { peer, verdict, silent_since, .. } => {
                if !self.gates.contains_key(peer) {
                    return;
                }
                self.up.remove(peer);
                match silent_since {
                    Some(at) => self.silent_since.insert(peer.clone(), *at),
                    None => self.silent_since.remove(peer),
                };
                // Until every gate is passed the peer's applications stay where they are.
                self.apps(AppInput::PeerDown { peer: peer.clone(), take_over: false });
                if *verdict == Verdict::StandBy {
                    // What a probe found while this node may itself have been cut off proves
                    // nothing once it is connected again.
                    self.early_probes.remove(peer);
                    self.set_gate(peer, Gate::StandBy);
                } else if self.config.sabotage == Sabotage::SkipGates {
                    self.clear(peer, true);
                } else if self.lease.is_some() {
                    self.set_gate(peer, Gate::Lease);
                    self.probe_early(peer);
                } else {
                    self.after_lease(peer);
                }
            }
            MembershipAction::Isolated { .. } => {
                self.isolated = true;
                self.early_probes.clear();
                for gate in self.gates.values_mut() {
                    if *gate != Gate::Idle {
                        *gate = Gate::StandBy;
                    }
                }
            }
            MembershipAction::Reconnected => self.isolated = false,
            MembershipAction::PeerLate { peer } => self.probe_ahead(peer),
            _ => {}
        }
        self.step();
    }

    /// Feed a fact from the shell.
    pub fn handle(&mut self, now: Time, input: GuardInput) {
        self.now = now;
        match input {
            GuardInput::ProbeResult { peer, alive, detail } => {
                let early = match self.early_probes.get(&peer) {
                    Some(EarlyProbe::Running { began }) => Some(*began),
                    _ => None,
                };
                if let (Some(began), Some(Gate::Lease | Gate::Idle)) =
                    (early, self.gates.get(&peer))
                {
                    let seen =
                        if alive { EarlyProbe::Answered } else { EarlyProbe::Silent { began } };
                    self.early_probes.insert(peer, seen);
                    self.step();
                    return;
                }
                self.early_probes.remove(&peer);
                if let (Some(_), Some(Gate::Delay { overdue, .. })) =
                    (early, self.gates.get(&peer).cloned())
                {
                    // The probe before the start: silence spares the start its own probe (the
                    // shell keeps it, dad.rs), and lets it go on if the delay is over already.
                    // A peer that answers again is alive (a paused machine resumed, a link
                    // healed): nothing is taken over, as when it answers the first probe.
                    if alive {
                        self.peer_answers(&peer, &detail);
                    } else if overdue {
                        self.take_over(&peer);
                    }
                    self.step();
                    return;
                }
                if self.gates.get(&peer) != Some(&Gate::Probing) {
                    return;
                }
                if alive {
                    self.peer_answers(&peer, &detail);
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
            GuardInput::FenceStatusResult { peer, off, detail } => {
                // Only the first wait of the fence race is cut short: a peer its own fence
                // device reports off is not racing this node to fence.
                if let (true, Some(Gate::FenceAt { attempts: 0, .. })) =
                    (off, self.gates.get(&peer))
                {
                    self.event(
                        Level::Info,
                        format!("the fence device of node {peer} reports it powered off ({detail}): it is not racing this node, so it is fenced now"),
                    );
                    self.fence(&peer, 1);
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
        let early_due: Vec<String> = self
            .early_probes
            .iter()
            .filter(|(_, p)| matches!(p, EarlyProbe::Due { at } if *at <= now))
            .map(|(p, _)| p.clone())
            .collect();
        for peer in early_due {
            if matches!(
                self.gates.get(&peer),
                Some(Gate::Lease | Gate::FenceAt { .. } | Gate::Delay { .. })
            ) {
                self.send_early_probe(&peer);
            } else {
                self.early_probes.remove(&peer);
            }
        }
        for (peer, gate) in due {
            match gate {
                Gate::FenceAt { attempts, .. } => self.fence(&peer, attempts + 1),
                Gate::ProbeAt { .. } => self.probe(&peer),
                Gate::Settle { .. } => self.clear(&peer, false),
                Gate::Delay { .. } => {
                    if matches!(self.early_probes.get(&peer), Some(EarlyProbe::Running { .. })) {
                        // The probe before the start is still out: its answer decides, so
                        // wait for it (looking again a probe's time later).
                        let until = now + self.config.probe_time;
                        self.set_gate(&peer, Gate::Delay { until, overdue: true });
                    } else {
                        self.take_over(&peer);
                    }
                }
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
        for probe in self.early_probes.values() {
            if let EarlyProbe::Due { at } = probe {
                consider(*at);
            }
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
            .filter(|(_, g)| matches!(g, Gate::Delay { .. } | Gate::Cleared { .. }))
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

    /// How long to wait before fencing a silent peer. With an arbitrator, only the lease holder
    /// gets here: at once. Without one, the favoured node fences at once and the other waits
    /// one `fence_race_unit` ([`crate::timing::SafetyTiming::fence_race_unit`]: the detection
    /// skew of a symmetric partition plus the time the favoured node's fence takes to power it
    /// off), so that of two nodes cut from each other one is powered off, not both. Favoured is
    /// the node that runs (or wants) applications while the peer, as last heard, ran none;
    /// when both ran some or both none, the first node in clconf.xml. Stale knowledge can at
    /// worst make both fence (both off: availability, never safety). When this node's
    /// heartbeats leave on a known grid and the peer's last frame is known, the unit's whole
    /// interval shrinks to the lateness allowed to the peer's next beat plus the phase from
    /// then to this node's next beat ([`crate::timing::FenceRace::wait`]).
    fn fence_wait(&self, peer: &str) -> Duration {
        if self.lease.is_some() {
            return Duration::ZERO;
        }
        let active = self.local_active || self.local_wanted;
        let favoured = match (active, self.peer_active) {
            (true, false) => true,
            (false, true) => false,
            (true, true) | (false, false) => self.config.first,
        };
        if favoured {
            return Duration::ZERO;
        }
        let heard = self.silent_since.get(peer).copied();
        self.config.fence_race.wait(self.beat_grid, heard)
    }

    /// This node's heartbeats now leave on `grid` (None: unknown, the fence race waits its
    /// whole unit).
    pub fn set_beat_grid(&mut self, grid: Option<HeartbeatGrid>) {
        self.beat_grid = grid;
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

    /// A peer that is up but late on every heartbeat link ([`MembershipAction::PeerLate`]):
    /// probe it now, so that if it is declared down the probe's result is already in (its
    /// silence counts for a heartbeat timeout, as a probe begun at the verdict would).
    fn probe_ahead(&mut self, peer: &str) {
        let fenced = self.config.peers.get(peer).copied().unwrap_or(true);
        let running = matches!(self.early_probes.get(peer), Some(EarlyProbe::Running { .. }));
        if self.config.probe
            && self.lease.is_none()
            && !fenced
            && !self.isolated
            && !running
            && self.gates.get(peer) == Some(&Gate::Idle)
        {
            self.send_early_probe(peer);
        }
    }

    /// The peer answered a probe: it is alive, only its heartbeats are lost. Nothing is taken
    /// over; it is probed again every `probe_retry`.
    fn peer_answers(&mut self, peer: &str, detail: &str) {
        let text = format!("node {peer} is silent on every heartbeat link but still answers on the public network ({detail}): it is alive, so this node takes nothing over; check the heartbeat networks");
        self.alarm(format!("peer:{peer}"), text);
        let at = self.now + self.config.probe_retry;
        self.set_gate(peer, Gate::ProbeAt { at });
    }

    /// Every gate is passed: this node takes `peer` over. A fenced peer holds nothing, so its
    /// applications start at once. Otherwise the notice that this node takes over goes out
    /// from now on, and the applications start when the takeover delay, counted from now,
    /// ends: a peer that still hears this node yields to the notice, and one that stopped
    /// hearing it before the notice went out has decided within the delay (crate::timing).
    /// The delay cannot count from the declaration: a peer that could hear this node until
    /// the notice (a one-way partition, then a cut) decides only a timeout after that.
    fn clear(&mut self, peer: &str, fenced: bool) {
        let how = if fenced { "it was fenced" } else { "it does not answer on any network" };
        let lease =
            if self.holds_lease() { " and this node holds the arbitrator's lease" } else { "" };
        let until = self.now + self.config.takeover_delay;
        let when = if fenced || until <= self.now {
            String::new()
        } else {
            format!("; they start in {} ms (the takeover delay)", until.since(self.now).as_millis())
        };
        self.event(
            Level::Warn,
            format!("taking over the applications of node {peer}: {how}{lease}{when}"),
        );
        if fenced {
            self.early_probes.remove(peer);
            self.set_gate(peer, Gate::Cleared { fenced });
            self.apps(AppInput::PeerFenced { peer: peer.to_string() });
            return;
        }
        // Silent everywhere now: what the peer announced before no longer counts as a sign of
        // life (the applications machine forgets it), what it announces from now on does.
        self.apps(AppInput::PeerDown { peer: peer.to_string(), take_over: false });
        if until > self.now {
            self.set_gate(peer, Gate::Delay { until, overdue: false });
            // Probe again, ending one probe interval before the delay does, so that its result
            // is in when the start looks: the start then finds the addresses freshly silent
            // and needs no probe of its own (dad.rs); a peer that answers is not taken over.
            let lead = self.config.probe_lead();
            if self.config.probe && until.since(self.now) >= lead {
                let due = EarlyProbe::Due { at: until - lead };
                self.early_probes.insert(peer.to_string(), due);
            }
        } else {
            self.take_over(peer);
        }
    }

    /// The takeover delay of `peer` is over (or there is none): its applications may start.
    fn take_over(&mut self, peer: &str) {
        self.early_probes.remove(peer);
        self.set_gate(peer, Gate::Cleared { fenced: false });
        self.apps(AppInput::PeerDown { peer: peer.to_string(), take_over: true });
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
