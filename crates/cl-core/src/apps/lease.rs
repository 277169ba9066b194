//! The applications machine with an arbitrator: only the lease holder runs applications
//! (docs/safety.md, "Leases held ahead of time").
//!
//! One lease per cluster, so one node at a time may hold applications: the node that holds the
//! lease is the only eligible one, and a node starts nothing until its guard reports the lease
//! held. A node that holds no lease but should run something (the most preferred node while
//! nobody holds it) *wants* the lease; its guard asks and reports the answer. Since the holder
//! stops everything before its lease could run out at the arbitrator, a grant to the other node
//! proves the former holder holds nothing: no takeover delay is needed.

use super::{AppState, Apps};

impl Apps {
    /// With an arbitrator: only the lease holder runs applications, and this node starts
    /// nothing until [`super::AppInput::Lease`] says it holds the lease.
    pub fn with_lease(mut self) -> Apps {
        self.lease = Some(false);
        self
    }

    /// Note whether this node holds the lease; losing it stops everything here, unless
    /// `keep_running` (the simulator's sabotage of that very rule).
    pub(super) fn set_lease(&mut self, held: bool, keep_running: bool) {
        let Some(current) = self.lease.as_mut() else { return };
        if *current == held {
            return;
        }
        *current = held;
        if !held && !keep_running {
            // The guard stops everything when a lease is lost while something runs; this only
            // makes sure nothing is left running without the lease.
            self.stop_all_local("this node no longer holds the arbitrator's lease");
        }
        self.announce();
    }

    /// With an arbitrator, a node other than the lease holder may not run applications: this
    /// node when an up peer announced the lease, a peer when this node holds it.
    pub(super) fn lease_allows(&self, node: &str) -> bool {
        let Some(held) = self.lease else { return true };
        if node == self.local {
            // Held here (the guard counts it conservatively against the arbitrator's expiry),
            // it is held nowhere else: a peer's claim is then from before it lost the lease
            // (a peer back from a partition has not announced since).
            held || !self
                .peer_lease
                .iter()
                .any(|p| matches!(self.peers.get(p), Some(super::Peer::Up { .. })))
        } else {
            !held
        }
    }

    /// This node may start an application now: no arbitrator, or it holds the lease.
    pub(super) fn may_start(&self) -> bool {
        self.lease.is_none_or(|held| held)
    }

    /// Some application is active on this node (starting, running, stopping, stuck).
    pub fn active(&self) -> bool {
        self.locals.values().any(|l| l.state.may_be_active())
    }

    /// Some application should start on this node (with an arbitrator it waits for the lease).
    pub fn wants_to_start(&self) -> bool {
        self.locals.iter().any(|(app, l)| {
            l.state == AppState::Stopped
                && (l.restart_after_stop || self.placement(app).as_deref() == Some(&self.local))
        })
    }

    /// Some peer, as last heard, runs an application.
    pub fn peer_active(&self) -> bool {
        self.peer_states.values().any(|s| s.values().any(|st| st.may_be_active()))
    }
}
