//! Message bodies: between nodes (heartbeats, node-manager requests) and between the admin
//! commands and the local cldaemon.
//!
//! Peer messages travel inside authenticated frames ([`crate::codec`]); admin messages travel
//! as one JSON line each way over the root-only Unix socket `run/cluster/cldaemon-<cluster>.sock`.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

pub use crate::storage::{StorageOp, StorageReply};

/// The body of a heartbeat frame (kind [`crate::Kind::Heartbeat`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatMsg {
    /// The sender's built cluster configuration version.
    pub config_version: u64,
    /// Checksum of that configuration's source.
    pub config_checksum: String,
    /// Peers whose applications the sender is taking over (it cannot hear them): a peer that
    /// finds itself named here gives its applications up (docs/safety.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taking_over: Vec<String>,
}

/// Which built configuration a push or fetch is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "config", rename_all = "snake_case")]
pub enum ConfigKind {
    /// clconf.xml.
    Cluster,
    /// An application's appconf.xml.
    App {
        /// Application name.
        name: String,
    },
}

/// A request from one node's cldaemon (or clbuild) to another's (kind [`crate::Kind::NodeManager`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum PeerRequest {
    /// Who are you, are you formed, which configuration do you have?
    Hello,
    /// Start your cluster daemons and join.
    Form {
        /// Start no applications (clform --noapps).
        noapps: bool,
    },
    /// My applications' states and the desired states I know (a `cl_core::apps::Announcement`).
    Apps {
        /// The announcement, as JSON.
        announcement: serde_json::Value,
    },
    /// Stop your cluster daemons.
    Halt {
        /// Stop applications first instead of refusing.
        force: bool,
    },
    /// I am leaving the cluster (clhalt): count me down by plan, not as a failure.
    Leaving,
    /// Install this built configuration (the JSON of a `cl_config::Built`).
    PushConfig {
        /// What it is.
        kind: ConfigKind,
        /// The built artefact, as JSON text.
        built: String,
        /// Install even if the receiver's version is the same or newer (`clbuild --force`).
        force: bool,
    },
    /// Send me your built configuration.
    FetchConfig {
        /// What.
        kind: ConfigKind,
    },
    /// Replicated storage work on the receiver (DRBD's fence-peer handler on the sender,
    /// `clbuildapp --vgbuild`, `clsplitbrain`).
    Storage {
        /// What to do.
        op: StorageOp,
    },
}

/// The answer to a [`PeerRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum PeerReply {
    /// Answer to Hello.
    State {
        /// The node answering.
        node: String,
        /// Whether its cluster daemons run.
        formed: bool,
        /// Its cluster configuration version.
        config_version: u64,
        /// Its configuration checksum.
        config_checksum: String,
        /// Its built applications with their versions.
        apps: Vec<(String, u64)>,
    },
    /// Done.
    Ok {
        /// What was done, for the operator.
        detail: String,
    },
    /// A built configuration (answer to FetchConfig); None when there is none.
    Config {
        /// The built artefact JSON.
        built: Option<String>,
    },
    /// Not done, and why.
    Refused {
        /// One sentence.
        reason: String,
    },
    /// The answer to [`PeerRequest::Storage`].
    Storage(StorageReply),
}

/// A request from an admin command to the local cldaemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum AdminRequest {
    /// The published status snapshot.
    Status,
    /// Form the cluster on every reachable node.
    Form {
        /// Start no applications.
        noapps: bool,
    },
    /// Stop the cluster (or one node).
    Halt {
        /// Stop applications first.
        force: bool,
        /// Only this node.
        node: Option<String>,
    },
    /// Start, stop or move an application.
    App {
        /// What to do.
        action: AppCommand,
        /// The application.
        app: String,
        /// The node to run it on (start, switch).
        node: Option<String>,
    },
    /// A new built configuration was installed locally: send it to the peers.
    Distribute {
        /// What was built.
        kind: ConfigKind,
        /// Let the local copy win over the peers' (`--force`).
        force: bool,
    },
    /// DRBD's fence-peer handler: this node is Primary (or becoming it) without a connection
    /// to the peer; have the peer's copy outdated, or confirm the peer is gone.
    FencePeer {
        /// The DRBD resource.
        resource: String,
    },
    /// Replicated-storage work on another node (`clbuildapp --vgbuild`, `clsplitbrain`):
    /// relayed to that node's cldaemon, whose answer comes back as [`AdminResponse::Storage`].
    Storage {
        /// The node to do it.
        node: String,
        /// What to do.
        op: StorageOp,
        /// How long the node may take, seconds (mkfs and lvcreate can take minutes).
        timeout_secs: u64,
    },
}

/// What an administrator asks of an application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppCommand {
    /// clstartapp.
    Start,
    /// clhaltapp.
    Stop,
    /// clswitchapp.
    Switch,
}

/// The answer to an [`AdminRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "response", rename_all = "snake_case")]
pub enum AdminResponse {
    /// The status snapshot.
    Status(Box<ClusterStatus>),
    /// Done; progress lines for --verbose.
    Done {
        /// What happened, one line each.
        lines: Vec<String>,
    },
    /// The answer for DRBD's fence-peer handler; `None`: the cluster has not decided about
    /// the peer yet, ask again.
    FencePeer {
        /// The answer, when there is one.
        answer: Option<cl_core::storage::FenceAnswer>,
        /// Why, for the handler's log line.
        detail: String,
    },
    /// The other node's answer to [`AdminRequest::Storage`].
    Storage(StorageReply),
    /// Failed; one sentence, plus progress lines.
    Failed {
        /// Why.
        message: String,
        /// What happened before.
        lines: Vec<String>,
    },
}

/// What `clstat --json` prints: stable field names (documented in docs/clstat.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// Cluster name.
    pub cluster: String,
    /// `formed` or `not_formed` (as seen from this node).
    pub state: String,
    /// The node answering.
    pub local: String,
    /// This node's standing: connected, undecided or isolated.
    pub local_state: String,
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
    /// Taken over (after fencing or a silent probe).
    Cleared,
}

impl TakeoverStage {
    /// Every stage, in order.
    pub const ALL: [TakeoverStage; 9] = [
        TakeoverStage::Idle,
        TakeoverStage::StandBy,
        TakeoverStage::Lease,
        TakeoverStage::FenceWait,
        TakeoverStage::Fencing,
        TakeoverStage::Probing,
        TakeoverStage::PeerAnswers,
        TakeoverStage::Settle,
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
    pub daemon: String,
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
    /// up, down, isolated, joining, leaving.
    pub state: String,
    /// Heartbeat links as seen from the answering node (empty for itself).
    pub links: Vec<LinkStatus>,
}

/// A heartbeat link in [`NodeStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkStatus {
    /// Network name.
    pub network: String,
    /// up or down.
    pub state: String,
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
    /// stopped, starting, running, stopping, failed.
    pub state: String,
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

/// Events the cluster daemons send to their cldaemon over the node-local datagram socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum LocalEvent {
    /// clhbd accepted a heartbeat.
    Heartbeat {
        /// Sender node.
        from: String,
        /// Network it arrived on.
        link: String,
        /// Its configuration version and checksum.
        beat: HeartbeatMsg,
    },
    /// clnetd got an echo reply from a known connection.
    KnownReply {
        /// The known connection.
        target: IpAddr,
    },
    /// A daemon's frame counters.
    Counters {
        /// Which daemon.
        daemon: String,
        /// Its counters.
        counters: crate::Counters,
    },
    /// A daemon's listening sockets (cllockd's, for clstat).
    Listeners {
        /// Which daemon.
        daemon: String,
        /// Its listeners.
        listeners: Vec<ListenerStatus>,
    },
    /// A daemon reports something for the cldaemon log.
    Note {
        /// Which daemon.
        daemon: String,
        /// What.
        text: String,
    },
}
