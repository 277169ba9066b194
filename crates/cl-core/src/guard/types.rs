//! The guard's vocabulary: its configuration and lease timing, inputs, actions, gates and
//! status.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::apps::AppInput;
use crate::arbiter::ArbOp;
use crate::time::Time;
use crate::timing::{FenceRace, HeartbeatGrid, SafetyTiming};

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
    /// Without an arbitrator, how long the node that is not favoured waits before fencing
    /// ([`SafetyTiming::fence_race`]), so that in a symmetric partition the favoured node's
    /// fence lands first instead of both powering each other off.
    pub fence_race: FenceRace,
    /// When this node's heartbeats leave, if known: the race's wait then counts the phase from
    /// the peer's last frame to this node's next beat instead of a whole interval
    /// ([`FenceRace::wait`]). None: the whole unit. [`crate::node::NodeInput::BeatGrid`]
    /// changes it.
    pub beat_grid: Option<HeartbeatGrid>,
    /// This node is listed first in clconf.xml: it wins the fence race between two nodes that
    /// both run applications (or both run none).
    pub first: bool,
    /// Wait between fence attempts after a failure.
    pub fence_retry: Duration,
    /// Probe an unfenced peer's addresses before taking over.
    pub probe: bool,
    /// How long a probe of a peer's addresses takes ([`crate::dad::probe_plan`]): before a
    /// fence that waits at least this long, the fenced peer's addresses are probed so that the
    /// probe ends as the fence begins and the start after it needs no second probe.
    pub probe_time: Duration,
    /// Wait before probing again a peer that answered.
    pub probe_retry: Duration,
    /// A peer that answered the probe and then fell silent may have lost this node only now:
    /// wait this long (the heartbeat timeout) so it has noticed too, before taking over.
    pub settle: Duration,
    /// How long after the guard found a silent peer silent everywhere (and began to say it
    /// takes the peer over) the peer's applications wait before they start here, unless it was
    /// fenced ([`SafetyTiming::takeover_delay`]: zero with an arbitrator).
    pub takeover_delay: Duration,
    /// The arbitrator's lease, when one is configured.
    pub lease: Option<LeaseTiming>,
    #[doc(hidden)]
    pub sabotage: Sabotage,
}

impl GuardConfig {
    /// The guard of `local` in a cluster with `timing`: `peers` with whether each has a fence
    /// device, `first` when `local` is listed first in clconf.xml, the fence agents' retry
    /// interval (the shortest configured; 2 s without one) and how long this node's own fence
    /// device takes to power it off (`local_poweroff`). The rules' own timing: the node that
    /// is not favoured waits up to [`SafetyTiming::fence_race_unit`] before fencing (the fence
    /// race; less when its beats' grid is known: [`FenceRace::wait`]),
    /// a peer that answered the probe and then fell silent gets one heartbeat timeout to notice
    /// it lost this node, and a peer that answers is probed again every second.
    pub fn new(
        local: &str,
        peers: BTreeMap<String, bool>,
        first: bool,
        timing: &SafetyTiming,
        fence_retry: Option<Duration>,
        local_poweroff: Duration,
    ) -> GuardConfig {
        GuardConfig {
            local: local.to_string(),
            peers,
            fence_race: timing.fence_race(local_poweroff),
            beat_grid: None,
            first,
            fence_retry: fence_retry.unwrap_or(Duration::from_secs(2)),
            probe: true,
            probe_time: crate::dad::probe_plan(timing.interval).total(),
            probe_retry: Duration::from_secs(1),
            settle: timing.timeout,
            takeover_delay: timing.takeover_delay(),
            lease: timing.lease,
            sabotage: Sabotage::None,
        }
    }
}

impl GuardConfig {
    /// How long before a silent peer's verdict the guard wants to probe it (membership's late
    /// warning, crate::membership): without an arbitrator (which has probes of its own) and
    /// for a peer without a fence device, one probe and one probe interval, so that the result
    /// is in when the peer is declared down and the takeover goes on at once. None when that is
    /// more than 30 % of the heartbeat timeout. Heartbeats reach cldaemon relayed (crate::relay:
    /// one at least every half timeout plus an interval while frames flow, 600 ms by default),
    /// so at the default profile (late after 720 ms) a peer that is up counts as late only when
    /// a frame is lost on every link; at the fast profile it would count as late between two
    /// relays, and be probed all the time.
    pub fn probe_ahead(&self) -> Option<Duration> {
        let unfenced = self.peers.values().any(|fenced| !fenced);
        let lead = self.probe_lead();
        let fits = lead * 10 <= self.settle * 3;
        (self.probe && self.lease.is_none() && unfenced && fits).then_some(lead)
    }

    /// The guard's probes as a [`ProbePlan`](crate::dad::ProbePlan): [`PROBE_COUNT`] probes
    /// spread over `probe_time` (the same plan as the probe before an address goes up).
    ///
    /// [`PROBE_COUNT`]: crate::dad::PROBE_COUNT
    pub(super) fn probe_plan(&self) -> crate::dad::ProbePlan {
        let count = crate::dad::PROBE_COUNT;
        crate::dad::ProbePlan { count, interval: self.probe_time / count.max(1) }
    }

    /// How long before a result is wanted a probe must be sent so that its result is in one
    /// probe interval early: the whole probe and one interval.
    pub(super) fn probe_lead(&self) -> Duration {
        let plan = self.probe_plan();
        plan.total() + plan.interval
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
    /// The peer's fence device answered a status query: `off` when it reports the peer
    /// powered off (false when on, or when the query failed).
    FenceStatusResult {
        /// The peer.
        peer: String,
        /// The device reports it off.
        off: bool,
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
    /// Ask the peer's fence device whether the peer is powered off (fence-agents
    /// `action=status`); report [`GuardInput::FenceStatusResult`].
    FenceStatus {
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
    /// Silent everywhere (the probe found nobody): this node says it takes the peer over, and
    /// the peer's applications start here at `until`, when the takeover delay ends.
    Delay {
        /// When the delay ends (or, once `overdue`, when to look at the probe again).
        until: Time,
        /// The delay has ended while the probe before the start was still out: the start
        /// waits for its result.
        overdue: bool,
    },
    /// Every gate passed; `fenced` when the peer was powered off.
    Cleared {
        /// The peer was fenced.
        fenced: bool,
    },
}

impl Gate {
    /// When a gate that waits for time acts next.
    pub(super) fn due_at(&self) -> Option<Time> {
        match self {
            Gate::FenceAt { at, .. }
            | Gate::ProbeAt { at }
            | Gate::Settle { at }
            | Gate::Delay { until: at, .. } => Some(*at),
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
