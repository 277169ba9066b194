//! The status snapshot `clstat --json` prints (cldaemon's answer to [`crate::msg::AdminRequest::Status`]):
//! its field names and values are a user-facing format (docs/clstat.md), so every state is an
//! enum here that serialises to the documented word.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The impls every status word enum shares: `ALL`, its `name` (the word in JSON, in clstat's
/// text and in metrics labels) and `Display` (which honours width and alignment, for tables).
macro_rules! status_words {
    ($kind:ident { $($variant:ident => $word:literal),+ $(,)? }) => {
        impl $kind {
            /// Every value, in order.
            pub const ALL: &'static [$kind] = &[$($kind::$variant),+];

            /// The word in JSON, in clstat's text and in metrics labels.
            pub const fn name(self) -> &'static str {
                match self {
                    $($kind::$variant => $word),+
                }
            }
        }

        impl std::fmt::Display for $kind {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.name())
            }
        }
    };
}

/// Whether the cluster is formed, as the answering node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterState {
    /// The cluster daemons run on the answering node.
    Formed,
    /// They do not (never formed, halted, or cldaemon is not running).
    NotFormed,
}

status_words!(ClusterState { Formed => "formed", NotFormed => "not_formed" });

/// The answering node's standing (cl-core `membership::LocalState`, or unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocalStateView {
    /// It reaches its peers or its known connections.
    Connected,
    /// It cannot tell yet.
    Undecided,
    /// It reaches nobody: it gives its applications up.
    Isolated,
    /// cldaemon does not answer (clstat's own snapshot).
    Unknown,
}

status_words!(LocalStateView {
    Connected => "connected",
    Undecided => "undecided",
    Isolated => "isolated",
    Unknown => "unknown",
});

/// A node's state in [`NodeStatus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Heard (a peer), or connected (the answering node).
    Up,
    /// A peer that went silent.
    Down,
    /// The answering node, isolated.
    Isolated,
    /// A peer not heard yet since the cluster formed here.
    Joining,
    /// The cluster is not formed on the answering node.
    Unknown,
}

status_words!(NodeState {
    Up => "up",
    Down => "down",
    Isolated => "isolated",
    Joining => "joining",
    Unknown => "unknown",
});

/// A heartbeat link's state in [`LinkStatus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// Heartbeats arrive on it.
    Up,
    /// They stopped.
    Down,
}

status_words!(LinkState { Up => "up", Down => "down" });

/// An application's state in [`ApplicationStatus`] (cl-core `apps::AppState`, cluster-wide).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplicationState {
    /// Active nowhere.
    Stopped,
    /// Starting on its node.
    Starting,
    /// Running on its node.
    Running,
    /// Stopping on its node.
    Stopping,
    /// Failed on every node that has tried it.
    Failed,
    /// Could not be stopped cleanly on its node.
    Stuck,
}

status_words!(ApplicationState {
    Stopped => "stopped",
    Starting => "starting",
    Running => "running",
    Stopping => "stopping",
    Failed => "failed",
    Stuck => "stuck",
});

/// What `clstat --json` prints: stable field names (documented in docs/clstat.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// Cluster name.
    pub cluster: String,
    /// `formed` or `not_formed` (as seen from this node).
    pub state: ClusterState,
    /// The node answering.
    pub local: String,
    /// This node's standing: connected, undecided or isolated (unknown: cldaemon is not
    /// running).
    pub local_state: LocalStateView,
    /// Built configuration version on this node.
    pub config_version: u64,
    /// Every node, this one included.
    pub nodes: Vec<NodeStatus>,
    /// Every known connection.
    pub known_connections: Vec<KnownConnectionStatus>,
    /// Every application.
    pub applications: Vec<ApplicationStatus>,
    /// Warnings worth an operator's attention (a lost link, an unreachable router).
    pub warnings: Vec<String>,
    /// Conditions that need the administrator now: a takeover refused (peer alive, fence
    /// failing), applications stopped for want of the arbitrator's lease.
    #[serde(default)]
    pub alarms: Vec<String>,
    /// Where each takeover of a silent peer stands, and the lease (why it waits, or why not).
    #[serde(default)]
    pub takeover: Vec<String>,
    /// Frame counters of the receiving daemons (dropped frames by reason).
    pub counters: serde_json::Value,
    /// Every listening socket of this node's daemons: connections refused, accept errors,
    /// rejected input, and whether it is in trouble (cannot serve normally).
    #[serde(default)]
    pub listeners: Vec<ListenerStatus>,
    /// The takeover guard's state, typed (what `takeover` says in sentences).
    #[serde(default)]
    pub guard: GuardSummary,
}

/// The takeover guard's state in [`ClusterStatus`]: each peer's takeover gate and the lease.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardSummary {
    /// Each peer, while the cluster is formed here.
    #[serde(default)]
    pub peers: Vec<PeerTakeover>,
    /// The arbitrator's lease, when one is configured and the cluster is formed here.
    #[serde(default)]
    pub lease: Option<LeaseSummary>,
}

/// Where the takeover of one peer stands, in [`GuardSummary`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerTakeover {
    /// The peer.
    pub peer: String,
    /// The gate its takeover waits at.
    pub stage: TakeoverStage,
    /// Fence attempts in this takeover so far (the one running included).
    pub fence_attempts: u32,
}

/// The gate a takeover waits at (cl-core `guard::Gate`, without its times).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TakeoverStage {
    /// The peer is up (or not judged yet).
    Idle,
    /// The peer is down but this node may not take over.
    StandBy,
    /// Waiting for the arbitrator's lease.
    Lease,
    /// Waiting to fence (the fence race, or the retry after a failure).
    FenceWait,
    /// The fence agent runs.
    Fencing,
    /// The peer-alive probe runs.
    Probing,
    /// The peer answers on the public networks: not taken over.
    PeerAnswers,
    /// Silent everywhere now; taking over after a settling delay.
    Settle,
    /// Silent everywhere; its applications start here when the takeover delay ends.
    Delay,
    /// Taken over (after fencing or a silent probe).
    Cleared,
}

impl TakeoverStage {
    /// Every stage, in order.
    pub const ALL: [TakeoverStage; 10] = [
        TakeoverStage::Idle,
        TakeoverStage::StandBy,
        TakeoverStage::Lease,
        TakeoverStage::FenceWait,
        TakeoverStage::Fencing,
        TakeoverStage::Probing,
        TakeoverStage::PeerAnswers,
        TakeoverStage::Settle,
        TakeoverStage::Delay,
        TakeoverStage::Cleared,
    ];

    /// The name in JSON and in metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            TakeoverStage::Idle => "idle",
            TakeoverStage::StandBy => "stand_by",
            TakeoverStage::Lease => "lease",
            TakeoverStage::FenceWait => "fence_wait",
            TakeoverStage::Fencing => "fencing",
            TakeoverStage::Probing => "probing",
            TakeoverStage::PeerAnswers => "peer_answers",
            TakeoverStage::Settle => "settle",
            TakeoverStage::Delay => "delay",
            TakeoverStage::Cleared => "cleared",
        }
    }
}

/// The arbitrator's lease as this node sees it, in [`GuardSummary`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseSummary {
    /// Where the lease stands.
    pub state: LeaseState,
    /// The node holding it, when known (this node when `held`).
    pub holder: Option<String>,
    /// How long this node still holds it, milliseconds (when `held`).
    pub remaining_ms: Option<u64>,
}

/// Where the lease stands for this node (cl-core `guard::LeaseView`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseState {
    /// Not needed now (every peer up).
    NotNeeded,
    /// Asked for, no answer yet.
    Asking,
    /// Held by this node.
    Held,
    /// Refused: another node holds it (or the arbitrator said no).
    Denied,
    /// The arbitrator does not answer.
    NoAnswer,
}

impl LeaseState {
    /// Every state, in order.
    pub const ALL: [LeaseState; 5] = [
        LeaseState::NotNeeded,
        LeaseState::Asking,
        LeaseState::Held,
        LeaseState::Denied,
        LeaseState::NoAnswer,
    ];

    /// The name in JSON and in metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            LeaseState::NotNeeded => "not_needed",
            LeaseState::Asking => "asking",
            LeaseState::Held => "held",
            LeaseState::Denied => "denied",
            LeaseState::NoAnswer => "no_answer",
        }
    }
}

/// One listening socket (TCP port or Unix socket) of a daemon, in [`ClusterStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerStatus {
    /// The daemon listening (`cldaemon`, `cllockd`).
    pub daemon: crate::Daemon,
    /// What it listens for and where, e.g. `peers 10.10.0.11:9901`, `admin`, `clients`.
    pub listener: String,
    /// Connections open now.
    #[serde(default)]
    pub open: u64,
    /// What was refused or rejected since the daemon started.
    #[serde(default)]
    pub counters: ServeCounters,
    /// Why it cannot serve normally now (accept errors or a connection bound reached in the
    /// last seconds); `None` when it serves normally.
    #[serde(default)]
    pub trouble: Option<String>,
}

/// Counters of one listening socket, in [`ListenerStatus`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServeCounters {
    /// Connections accepted and served.
    #[serde(default)]
    pub accepted: u64,
    /// Connections closed at once: their address had too many open already.
    #[serde(default)]
    pub refused_per_address: u64,
    /// Connections closed at once: the listener had too many open already.
    #[serde(default)]
    pub refused_total: u64,
    /// Failed accepts (out of file descriptors, aborted connections…).
    #[serde(default)]
    pub accept_errors: u64,
    /// Connections closed because their request did not arrive in time (idle, slowloris).
    #[serde(default)]
    pub timeouts: u64,
    /// Requests rejected as unreadable or unauthentic (bad frames, garbage lines).
    #[serde(default)]
    pub bad_input: u64,
}

/// A node in [`ClusterStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Name.
    pub name: String,
    /// up, down, isolated, joining, unknown.
    pub state: NodeState,
    /// Heartbeat links as seen from the answering node (empty for itself).
    pub links: Vec<LinkStatus>,
}

/// A heartbeat link in [`NodeStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkStatus {
    /// Network name.
    pub network: String,
    /// up or down.
    pub state: LinkState,
    /// Milliseconds since the last heartbeat, if any.
    pub last_heard_ms: Option<u64>,
}

/// A known connection in [`ClusterStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownConnectionStatus {
    /// Address.
    pub address: IpAddr,
    /// Answered recently.
    pub reachable: bool,
    /// Milliseconds since the last reply, if any.
    pub last_reply_ms: Option<u64>,
}

/// An application in [`ClusterStatus`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplicationStatus {
    /// Name.
    pub name: String,
    /// stopped, starting, running, stopping, failed, stuck.
    pub state: ApplicationState,
    /// Where it runs, if anywhere.
    pub node: Option<String>,
    /// Local restarts within the monitors' window on the answering node.
    #[serde(default)]
    pub restarts: u32,
    /// The last failure on the answering node, with its reason.
    #[serde(default)]
    pub last_failure: Option<String>,
    /// When it happened (RFC 3339, UTC).
    #[serde(default)]
    pub last_failure_at: Option<String>,
    /// Its service addresses, `address/prefix`.
    #[serde(default)]
    pub vips: Vec<String>,
    /// The latest result of each monitor on the node running it (answering node only).
    #[serde(default)]
    pub monitors: Vec<MonitorStatus>,
    /// Its resources (OCF agents, LSB init scripts) in start order, each with its latest
    /// monitor result on the node running it (answering node only).
    #[serde(default)]
    pub resources: Vec<ResourceStatus>,
    /// Its replicated volumes (DRBD), as the answering node sees them.
    #[serde(default)]
    pub volumes: Vec<VolumeStatus>,
    /// Nodes whose copy of the data may not be promoted, with the reason: the application
    /// will not start there.
    #[serde(default)]
    pub data_blocked: Vec<DataBlocked>,
}

/// One replicated volume in [`ApplicationStatus`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeStatus {
    /// The DRBD resource.
    pub resource: String,
    /// The replicated device, e.g. `/dev/drbd0`.
    pub device: String,
    /// Where it is mounted when the application runs.
    pub mountpoint: String,
    /// DRBD's view from the answering node (its role and disk, the peer's, the connection);
    /// `None` when the resource is not up there.
    pub state: Option<cl_core::storage::VolumeState>,
    /// Resync progress, while one runs.
    pub resync: Option<cl_core::storage::ResyncProgress>,
}

/// A node that may not promote an application's data, in [`ApplicationStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataBlocked {
    /// The node.
    pub node: String,
    /// Why (cl-core `storage::NotPromotable`).
    pub reason: cl_core::storage::NotPromotable,
}

/// One resource in [`ApplicationStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceStatus {
    /// Its id.
    pub id: String,
    /// `ocf:<provider>:<agent>` or `lsb:<name>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The latest monitor result (`running`, `not running: …`, `failed: …`), if any yet.
    pub result: Option<String>,
    /// Milliseconds since that result.
    pub age_ms: Option<u64>,
}

/// One monitor's latest result in [`ApplicationStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorStatus {
    /// What it checks, e.g. `tcp 80`, `process python3`, `link eth0`.
    pub check: String,
    /// `ok`, or the failure.
    pub result: String,
    /// Milliseconds since that result.
    pub age_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each word serialises as its name and reads back.
    fn round_trips<T>(all: &[T], name: impl Fn(T) -> &'static str)
    where
        T: Copy + PartialEq + std::fmt::Debug + Serialize + serde::de::DeserializeOwned,
    {
        for &value in all {
            let json = serde_json::to_string(&value).expect("serialise");
            assert_eq!(json, format!("\"{}\"", name(value)));
            let back: T = serde_json::from_str(&json).expect("parse");
            assert_eq!(back, value);
        }
    }

    #[test]
    fn every_state_is_carried_as_its_documented_word() {
        round_trips(ClusterState::ALL, ClusterState::name);
        round_trips(LocalStateView::ALL, LocalStateView::name);
        round_trips(NodeState::ALL, NodeState::name);
        round_trips(LinkState::ALL, LinkState::name);
        round_trips(ApplicationState::ALL, ApplicationState::name);
        let words: Vec<&str> = NodeState::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(words, ["up", "down", "isolated", "joining", "unknown"]);
        assert_eq!(ClusterState::NotFormed.name(), "not_formed");
        assert_eq!(format!("[{:<9}]", NodeState::Up), "[up       ]", "tables pad the word");
    }

    #[test]
    fn the_clstat_json_keeps_its_field_names_and_words() {
        let status = ClusterStatus {
            cluster: "cluster1".into(),
            state: ClusterState::Formed,
            local: "node1".into(),
            local_state: LocalStateView::Connected,
            config_version: 2,
            nodes: vec![NodeStatus {
                name: "node2".into(),
                state: NodeState::Joining,
                links: vec![LinkStatus {
                    network: "public".into(),
                    state: LinkState::Down,
                    last_heard_ms: None,
                }],
            }],
            known_connections: vec![],
            applications: vec![],
            warnings: vec![],
            alarms: vec![],
            takeover: vec![],
            counters: serde_json::json!({"clhbd": {"accepted": 1}}),
            listeners: vec![ListenerStatus {
                daemon: crate::Daemon::Cllockd,
                listener: "clients".into(),
                open: 0,
                counters: ServeCounters::default(),
                trouble: None,
            }],
            guard: GuardSummary::default(),
        };
        let json = serde_json::to_string(&status).expect("serialise");
        let expected = concat!(
            r#"{"cluster":"cluster1","state":"formed","local":"node1","local_state":"connected","#,
            r#""config_version":2,"nodes":[{"name":"node2","state":"joining","links":[{"#,
            r#""network":"public","state":"down","last_heard_ms":null}]}],"#,
            r#""known_connections":[],"applications":[],"warnings":[],"alarms":[],"takeover":[],"#,
            r#""counters":{"clhbd":{"accepted":1}},"listeners":[{"daemon":"cllockd","#,
            r#""listener":"clients","open":0,"counters":{"accepted":0,"refused_per_address":0,"#,
            r#""refused_total":0,"accept_errors":0,"timeouts":0,"bad_input":0},"trouble":null}],"#,
            r#""guard":{"peers":[],"lease":null}}"#
        );
        assert_eq!(json, expected);
        let back: ClusterStatus = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, status);
    }
}
