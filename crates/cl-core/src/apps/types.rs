//! The applications machine's vocabulary: states, wishes, policies, what nodes announce, and
//! its inputs and actions.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::storage::NotPromotable;

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
    pub(super) fn newer_than(&self, other: &Desired) -> bool {
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
    /// Peers the sender has not heard an announcement from since they came up on its side (or
    /// since it forgot them: a restart, an isolation): each one named answers with its own.
    /// Announcements go out on changes and are repeated only when they do not arrive, so this
    /// is how a node that lost its view of a peer gets it back.
    #[serde(default)]
    pub awaiting: std::collections::BTreeSet<String>,
    /// Where the sender would run each application (those it places nowhere are absent).
    /// A node starts an application beside a peer that is up only once that peer places it
    /// there too, in an announcement sent after it heard this node's own placement (`heard`):
    /// two nodes whose views changed at once (both copies of a split brain resolved, say)
    /// would otherwise each start it on a stale view of the other. `None`: a sender from
    /// before this handshake.
    #[serde(default)]
    pub placements: Option<BTreeMap<String, String>>,
    /// For each application placed, the sequence number of the first announcement that
    /// carried that placement: a peer answers each new one, even if announcements were
    /// reordered or lost in between (the same placement set again is a new one).
    #[serde(default)]
    pub placed_since: BTreeMap<String, u64>,
    /// The newest announcement (epoch, seq) the sender had heard from each peer when it sent
    /// this one.
    #[serde(default)]
    pub heard: BTreeMap<String, (u64, u64)>,
    /// The sender starts nothing for now (isolated, without the arbitrator's lease, or
    /// yielding to a peer that takes it over), and its view of its peers is on hold: its
    /// placements are no consent and no refusal. Before it may start anything again it needs
    /// the consent of the others in turn.
    #[serde(default)]
    pub standing_by: bool,
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
    /// arbitrator only the lease holder runs applications (see [`Apps::with_lease`](super::Apps::with_lease)).
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
