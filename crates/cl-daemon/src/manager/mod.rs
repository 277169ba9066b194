//! cldaemon: the node manager. It runs the decision core, starts and supervises the cluster's
//! other daemons while the cluster is formed, answers the admin commands on a root-only Unix
//! socket, and talks to the other nodes' cldaemons over the authenticated `cldaemon` port.
//!
//! ```text
//!  clhbd ──┐ LocalEvent (datagram)                         admin: clstat, clform, clhalt
//!  clnetd ─┴──────────────► ┌──────────────────────┐ ◄──── Unix socket (JSON line)
//!                           │ main loop            │           │ Status is served from the
//!  peers' cldaemons ──TCP──►│  Node engine (core)  │──watch──► │ published snapshot, never
//!  (frames, HMAC)           │  children, config    │           │ by waiting on the loop
//!                           └──────────────────────┘
//! ```
//!
//! The loop ([`run`], `main_loop`) owns one [`Manager`]; the engine's actions become IO in
//! `engine`, the status snapshot is built in `status`, formation and halting (local and
//! cluster-wide) live in `formation`, supervision of the child daemons in `children`, and the
//! two servers in `admin` (the Unix socket) and `peers` (the other nodes' cldaemons).

mod admin;
mod children;
mod engine;
mod formation;
mod main_loop;
mod peers;
mod status;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use cl_core::node::{Node, NodeInput};
use cl_core::Time;
use cl_wire::msg::ClusterStatus;
use cl_wire::Daemon;
use tokio::sync::{mpsc, oneshot, watch};

use crate::context::Context;

pub use main_loop::run;
pub use peers::push_to_peers;
pub use status::not_formed_status;

use children::Child;

/// The daemons cldaemon starts while the cluster is formed (clhbd starts clhbd2 itself).
pub const CHILDREN: [Daemon; 3] = [Daemon::Cllockd, Daemon::Clnetd, Daemon::Clhbd];

/// How often daemons adopted from a crashed cldaemon are looked for by pid.
const SUPERVISE_ADOPTED: Duration = Duration::from_millis(100);

/// The period of the manager's housekeeping: refresh the published status, repeat the
/// applications' announcement.
const HOUSEKEEPING: Duration = Duration::from_secs(1);

/// How old the status a reader gets may be (its times: last heard, monitor results).
const STATUS_FRESH: Duration = Duration::from_millis(100);

/// How long a peer request may take before the peer counts as unreachable.
const PEER_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an admin command may take to send its request line.
const ADMIN_READ_DEADLINE: Duration = Duration::from_secs(10);
/// The longest admin request line read.
const ADMIN_MAX_REQUEST: u64 = 1 << 20;
/// Work the connection tasks hand to the main loop.
enum Command {
    FormLocal {
        noapps: bool,
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// An application request from an administrator.
    App(cl_core::apps::AdminOp, oneshot::Sender<Result<(), String>>),
    /// A peer's application announcement.
    PeerApps(String, cl_core::apps::Announcement),
    HaltLocal(oneshot::Sender<String>),
    /// A newer cluster configuration was installed: restart cldaemon on it.
    Reload,
    /// A peer announced it leaves the cluster.
    PeerLeft(String),
    /// DRBD's fence-peer handler for a resource: what does the cluster know of the peer?
    FencePeer(String, oneshot::Sender<Result<(String, cl_core::storage::FenceStep), String>>),
    /// Someone reads the status: publish it fresh (its times are measured now), then answer.
    Publish(oneshot::Sender<()>),
}

struct Manager {
    ctx: Context,
    origin: Instant,
    formed: bool,
    /// The decision engine (membership, takeover guard, applications), while formed.
    node: Option<Node>,
    children: BTreeMap<Daemon, Child>,
    known_last: BTreeMap<IpAddr, Instant>,
    /// Each daemon's latest frame counters, for clstat.
    counters: BTreeMap<Daemon, cl_wire::Counters>,
    /// The interval clhbd last said its clhbd2 beats at the multiples of (the fence race's
    /// phase, cl_core::timing::HeartbeatGrid).
    beats_every: Option<Duration>,
    /// The receiver of the peers' frames (its counters are cldaemon's own, read for each
    /// status instead of reported through the event socket every second).
    peer_receiver: std::sync::Arc<std::sync::Mutex<cl_wire::Receiver>>,
    /// The configurations peers were heard running that differ from this node's: (peer,
    /// version, checksum), so each is logged once.
    config_mismatches: BTreeSet<(String, u64, String)>,
    down_links: BTreeSet<(String, String)>,
    lost_known: BTreeSet<IpAddr>,
    status_tx: watch::Sender<ClusterStatus>,
    /// This cldaemon was restarted because a new configuration was installed.
    config_changed: bool,
    /// The applications' IO, while formed.
    apps: Option<crate::appctl::AppControl>,
    app_events: mpsc::Sender<crate::appctl::AppEvent>,
    /// Where DRBD's event stream reports, while formed.
    storage_events: mpsc::Sender<crate::storagectl::StorageEvent>,
    /// Where the guard's background work (probe, fence, lease) reports what it saw.
    guard_results: mpsc::Sender<NodeInput>,
    /// The connection to the arbitrator, if one is configured.
    arb_link: crate::guardctl::ArbLink,
    /// What the peer-alive probe looks for, per peer (worked out when the cluster forms).
    probe_targets: BTreeMap<String, Vec<cl_drivers::vip::Vip>>,
    /// What those probes found silent, for the application starts.
    silence: crate::guardctl::SilenceLog,
    /// The administrator's notifiers (`<notify>`): fed the engine's events, never waited for.
    notifications: crate::notify::Notifications,
}

impl Manager {
    pub(super) fn now(&self) -> Time {
        Time::ZERO + self.origin.elapsed()
    }

    pub(super) fn next_wake(&self) -> tokio::time::Instant {
        let fallback = tokio::time::Instant::now() + Duration::from_secs(1);
        match self.node.as_ref().and_then(Node::poll_timeout) {
            Some(t) => {
                let at = self.origin + t.since_origin();
                tokio::time::Instant::from_std(at).min(fallback)
            }
            None => fallback,
        }
    }
}
