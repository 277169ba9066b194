//! What the metrics remember between status snapshots: counters (restarts, fence attempts,
//! failovers) and the failover-time histogram. The published [`ClusterStatus`] only says how
//! things are now; these are worked out from how consecutive snapshots differ.

use std::collections::BTreeMap;
use std::time::Duration;

use cl_wire::msg::{ApplicationState, ClusterStatus, NodeState, TakeoverStage};

/// Upper bounds of the failover-time histogram's buckets, seconds: from a fast-profile
/// takeover (well under a second) to a slow fence agent with retries (minutes).
pub const FAILOVER_BUCKETS: [f64; 11] =
    [0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0];

/// A Prometheus histogram with [`FAILOVER_BUCKETS`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// Observations at or below each bound (not cumulative; made cumulative when rendered).
    pub buckets: [u64; FAILOVER_BUCKETS.len()],
    /// All observations, the ones above the last bound included.
    pub count: u64,
    /// Their sum, seconds.
    pub sum: f64,
}

impl Histogram {
    /// Count one observation of `seconds`.
    pub fn observe(&mut self, seconds: f64) {
        if let Some(i) = FAILOVER_BUCKETS.iter().position(|bound| seconds <= *bound) {
            if let Some(b) = self.buckets.get_mut(i) {
                *b += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }

    /// The cumulative count at each bound, as the text format wants it.
    pub fn cumulative(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        let mut total = 0;
        FAILOVER_BUCKETS.iter().zip(self.buckets.iter()).map(move |(bound, n)| {
            total += n;
            (*bound, total)
        })
    }
}

/// One application's failovers to this node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Failovers {
    /// How many.
    pub total: u64,
    /// How long each took: from the moment this node declared the node running it down to
    /// the moment the application was running here.
    pub duration: Histogram,
}

/// A takeover waiting for its application to run here.
#[derive(Debug, Clone, PartialEq)]
struct Pending {
    /// When the node that ran it was declared down (seconds on the history's clock).
    since: Duration,
}

/// The counters kept across snapshots, fed by [`History::observe`].
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Restarts of each application here, since cldaemon started.
    pub restarts: BTreeMap<String, u64>,
    /// Fence attempts on each peer, since cldaemon started.
    pub fence_attempts: BTreeMap<String, u64>,
    /// Failovers of each application to this node, since cldaemon started.
    pub failovers: BTreeMap<String, Failovers>,
    /// The restarts the last snapshot showed (a count over the monitors' window).
    seen_restarts: BTreeMap<String, u32>,
    /// The fence attempts of the current takeover of each peer, as last seen.
    seen_fence_attempts: BTreeMap<String, u32>,
    /// The peers seen down in the last snapshot.
    down: BTreeMap<String, Duration>,
    /// The node each application was last seen active on.
    last_node: BTreeMap<String, String>,
    /// Applications whose node was declared down, waiting to run here.
    pending: BTreeMap<String, Pending>,
}

impl History {
    /// Take in the snapshot `status`, published at `now` (any monotonic clock, the same for
    /// every call).
    pub fn observe(&mut self, status: &ClusterStatus, now: Duration) {
        self.observe_restarts(status);
        self.observe_fencing(status);
        self.observe_failovers(status, now);
    }

    fn observe_restarts(&mut self, status: &ClusterStatus) {
        for app in &status.applications {
            // The status counts restarts over the monitors' window: a rise is new restarts, a
            // fall only the window moving on.
            let seen = self.seen_restarts.insert(app.name.clone(), app.restarts).unwrap_or(0);
            let total = self.restarts.entry(app.name.clone()).or_default();
            *total += u64::from(app.restarts.saturating_sub(seen));
        }
    }

    fn observe_fencing(&mut self, status: &ClusterStatus) {
        for takeover in &status.guard.peers {
            let total = self.fence_attempts.entry(takeover.peer.clone()).or_default();
            let seen = self.seen_fence_attempts.entry(takeover.peer.clone()).or_default();
            if matches!(takeover.stage, TakeoverStage::Idle | TakeoverStage::Cleared) {
                *seen = 0;
                continue;
            }
            // Fewer than before: a new takeover counting from zero again.
            if takeover.fence_attempts < *seen {
                *seen = 0;
            }
            *total += u64::from(takeover.fence_attempts - *seen);
            *seen = takeover.fence_attempts;
        }
    }

    fn observe_failovers(&mut self, status: &ClusterStatus, now: Duration) {
        let local = status.local.as_str();
        let down_now: Vec<&str> = status
            .nodes
            .iter()
            .filter(|n| n.name != local && n.state == NodeState::Down)
            .map(|n| n.name.as_str())
            .collect();
        // A peer newly declared down: what it ran is now to be taken over.
        for peer in &down_now {
            if self.down.contains_key(*peer) {
                continue;
            }
            self.down.insert(peer.to_string(), now);
            for (app, node) in &self.last_node {
                if node == peer {
                    self.pending.insert(app.clone(), Pending { since: now });
                }
            }
        }
        self.down.retain(|peer, _| down_now.contains(&peer.as_str()));
        for app in &status.applications {
            let Some(node) = app.node.as_deref() else { continue };
            if node != local {
                // Running elsewhere again (a peer back, or an administrator's switch).
                self.pending.remove(&app.name);
                self.last_node.insert(app.name.clone(), node.to_string());
                continue;
            }
            if app.state != ApplicationState::Running {
                continue;
            }
            self.last_node.insert(app.name.clone(), node.to_string());
            if let Some(pending) = self.pending.remove(&app.name) {
                let failovers = self.failovers.entry(app.name.clone()).or_default();
                failovers.total += 1;
                failovers.duration.observe(now.saturating_sub(pending.since).as_secs_f64());
            }
        }
        // Every application known gets its (zero) series from the start.
        for app in &status.applications {
            self.failovers.entry(app.name.clone()).or_default();
        }
    }
}
