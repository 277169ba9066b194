//! Message bodies: between nodes (heartbeats, node-manager requests) and between the admin
//! commands and the local cldaemon.
//!
//! Peer messages travel inside authenticated frames ([`crate::codec`]); admin messages travel
//! as one JSON line each way over the root-only Unix socket `run/cluster/cldaemon-<cluster>.sock`.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

pub use crate::status::{
    ApplicationState, ApplicationStatus, ClusterState, ClusterStatus, DataBlocked, GuardSummary,
    KnownConnectionStatus, LeaseState, LeaseSummary, LinkState, LinkStatus, ListenerStatus,
    LocalStateView, MonitorStatus, NodeState, NodeStatus, PeerTakeover, ResourceStatus,
    ServeCounters, TakeoverStage, VolumeStatus,
};
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

/// A heartbeat network's newest frame from a peer, as clhbd relays it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heard {
    /// The heartbeat network.
    pub link: String,
    /// When the frame arrived (CLOCK_MONOTONIC, shared by the node's daemons).
    pub at: std::time::Duration,
}

/// Events the cluster daemons send to their cldaemon over the node-local datagram socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum LocalEvent {
    /// clhbd accepted heartbeats from `from`: the newest one per network not relayed before
    /// (cl_core::relay decides when).
    Heartbeat {
        /// Sender node.
        from: String,
        /// Each network's newest frame: the network, and when it arrived (CLOCK_MONOTONIC).
        heard: Vec<Heard>,
        /// The newest frame's configuration version, checksum and notice.
        beat: HeartbeatMsg,
        /// clhbd's frame counters, when they changed since it last reported them: carried
        /// here rather than in a [`LocalEvent::Counters`] of their own, one datagram (and one
        /// wake-up of cldaemon) instead of two.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        counters: Option<crate::Counters>,
        /// The interval whose multiples on CLOCK_MONOTONIC this node's clhbd2 sends at (None
        /// from a clhbd that does not say: the fence race then waits its whole unit).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        beats_every: Option<std::time::Duration>,
    },
    /// clnetd got an echo reply from a known connection (the newest not relayed before).
    KnownReply {
        /// The known connection.
        target: IpAddr,
        /// When it arrived (CLOCK_MONOTONIC).
        at: std::time::Duration,
    },
    /// A daemon's frame counters.
    Counters {
        /// Which daemon.
        daemon: crate::Daemon,
        /// Its counters.
        counters: crate::Counters,
    },
    /// A daemon's listening sockets (cllockd's, for clstat).
    Listeners {
        /// Which daemon.
        daemon: crate::Daemon,
        /// Its listeners.
        listeners: Vec<ListenerStatus>,
    },
    /// A daemon reports something for the cldaemon log.
    Note {
        /// Which daemon.
        daemon: crate::Daemon,
        /// What.
        text: String,
    },
}
