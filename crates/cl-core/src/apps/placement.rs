//! Where each application should run, and the reconciliation that moves this node toward it:
//! who runs it now, which nodes are eligible, the preference order, the data gates.

use super::{AppAction, AppState, Apps, Desired, Failback, Peer, Want, DATA_GRACE};
use crate::storage::NotPromotable;

impl Apps {
    /// The node that announces the application running (this one included). Should two
    /// (after a partition heals), every node names the same one: the most preferred, so the
    /// other stops its copy.
    pub(super) fn running_on(&self, app: &str) -> Option<String> {
        let runs = |node: &str| -> bool {
            if node == self.local {
                return self.locals.get(app).is_some_and(|l| l.state == AppState::Running);
            }
            matches!(self.peers.get(node), Some(Peer::Up { .. }))
                && self.peer_states.get(node).and_then(|s| s.get(app)) == Some(&AppState::Running)
        };
        let policy = self.policies.get(app)?;
        policy.nodes.iter().find(|n| runs(n)).cloned()
    }

    pub(super) fn eligible(&self, app: &str, node: &str) -> bool {
        let allowed = self.policies.get(app).is_some_and(|p| p.nodes.iter().any(|n| n == node));
        if !allowed {
            return false;
        }
        if !self.lease_allows(node) {
            return false;
        }
        if node == self.local {
            return !self.isolated
                && self.locals.get(app).is_some_and(|l| {
                    !matches!(l.state, AppState::Failed | AppState::Stuck)
                        && l.data_blocked.is_none()
                });
        }
        match self.peers.get(node) {
            Some(Peer::Up { announced: true }) => {
                !matches!(
                    self.peer_states.get(node).and_then(|s| s.get(app)),
                    Some(AppState::Failed | AppState::Stuck)
                ) && !self.peer_data_blocked.get(node).is_some_and(|d| d.contains_key(app))
            }
            _ => false,
        }
    }

    /// Where the application should run now, if anywhere.
    pub fn placement(&self, app: &str) -> Option<String> {
        let policy = self.policies.get(app)?;
        let Some(Desired { want: Want::Running { node }, .. }) = self.desired.get(app) else {
            return None;
        };
        if let Some(chosen) = node {
            if self.eligible(app, chosen) {
                return Some(chosen.clone());
            }
        }
        // The most preferred eligible node, unless a more preferred one is only waiting for its
        // first data verdict: then nobody yet.
        let mut most_preferred = None;
        for node in &policy.nodes {
            if self.eligible(app, node) {
                most_preferred = Some(node.clone());
                break;
            }
            if self.data_pending(app, node) {
                break;
            }
        }
        if policy.failback == Failback::Manual {
            if let Some(current) = self.running_on(app) {
                if self.eligible(app, &current) {
                    return Some(current);
                }
            }
        }
        most_preferred
    }

    /// `node` is up and would be eligible for `app` but has not reported its replicated data yet
    /// (within [`DATA_GRACE`] of coming up).
    pub(super) fn data_pending(&self, app: &str, node: &str) -> bool {
        let replicated = self.policies.get(app).is_some_and(|p| p.replicated);
        let Some(since) = self.up_since.get(node) else { return false };
        if !replicated || self.now >= *since + DATA_GRACE {
            return false;
        }
        if node == self.local {
            return !self.isolated
                && self.locals.get(app).is_some_and(|l| {
                    l.state == AppState::Stopped && l.data_blocked == Some(NotPromotable::NotUp)
                });
        }
        match self.peers.get(node) {
            // Not announced yet, or announced that its data is not up yet.
            Some(Peer::Up { announced: false }) => true,
            Some(Peer::Up { announced: true }) => {
                self.peer_data_blocked.get(node).and_then(|d| d.get(app))
                    == Some(&NotPromotable::NotUp)
                    && !matches!(
                        self.peer_states.get(node).and_then(|s| s.get(app)),
                        Some(AppState::Failed | AppState::Stuck)
                    )
            }
            _ => false,
        }
    }

    /// No other node may be running `app`: each allowed peer is up and announces it inactive,
    /// or is down with a take-over verdict.
    pub(super) fn safe_to_start(&self, app: &str) -> bool {
        if self.isolated {
            return false;
        }
        self.peers.iter().all(|(name, peer)| match peer {
            Peer::Unknown => false,
            Peer::Up { announced } => {
                // Two nodes acting on different requests (say clstartapp on both at once, each
                // seeing the other failed) could both start it: agree on the request first.
                let agreed =
                    self.peer_desired.get(name).and_then(|d| d.get(app)) == self.desired.get(app);
                *announced
                    && agreed
                    && self.consents(name, app)
                    && !self
                        .peer_states
                        .get(name)
                        .and_then(|s| s.get(app))
                        .is_some_and(|s| s.may_be_active())
            }
            Peer::Down { take_over } => {
                // A peer stuck stopping it before it went down still counts as holding it, and
                // so does one that announced it active after it went down: it is alive.
                let state = self.peer_states.get(name).and_then(|s| s.get(app));
                let spoke_since = self.heard_since_down.contains(name);
                *take_over
                    && state != Some(&AppState::Stuck)
                    && !(spoke_since && state.is_some_and(|s| s.may_be_active()))
            }
        })
    }

    /// Whether `peer` (up) places `app` on this node too, in an announcement sent after it heard
    /// this node's own placement of it: only then may this node start it. A placement computed
    /// on a stale view of the peer (both nodes' data became promotable at once, each still
    /// holding the other's refusal) would otherwise start it on both. Each node answers a
    /// placement that newly names its sender, so the consent, or the refusal, arrives.
    fn consents(&self, peer: &str, app: &str) -> bool {
        // A peer that starts nothing has no say; to start again it needs this node's consent,
        // which names this node while it runs the application.
        if self.peer_standing_by.contains(peer) {
            return true;
        }
        let Some(placements) = self.peer_placements.get(peer) else { return false };
        let Some(placements) = placements else {
            return true; // a peer from before the handshake: the old rule
        };
        let since = (self.epoch, self.placed_after.get(app).copied().unwrap_or(0) + 1);
        placements.get(app) == Some(&self.local)
            && self.peer_heard_us.get(peer).is_some_and(|heard| *heard >= since)
    }

    /// Record where this node places `app` now; a change is announced, and a peer's consent
    /// to an earlier placement no longer counts.
    fn record_placement(&mut self, app: &str, placement: &Option<String>) {
        let before = self.placed.get(app).cloned().flatten();
        if before != *placement {
            self.placed.insert(app.to_string(), placement.clone());
            self.placed_after.insert(app.to_string(), self.announced_seq.get());
            // Only a peer that is up needs it (one that comes up is sent an announcement),
            // and one announcement waiting to go carries it already.
            let peer_up = self.peers.values().any(|p| matches!(p, Peer::Up { .. }));
            if peer_up {
                self.announce();
            }
        }
    }

    pub(super) fn reconcile(&mut self) {
        let apps: Vec<String> = self.policies.keys().cloned().collect();
        for app in apps {
            let placement = self.placement(&app);
            self.record_placement(&app, &placement);
            let Some(local) = self.locals.get(&app) else { continue };
            let here = placement.as_deref() == Some(self.local.as_str());
            match local.state {
                AppState::Stopped if here && self.safe_to_start(&app) && self.may_start() => {
                    if let Some(local) = self.locals.get_mut(&app) {
                        local.state = AppState::Starting;
                        local.restart_after_stop = false;
                    }
                    // Taken over from a chosen node that failed: the choice is spent, or the
                    // application would move back by itself when that node returns.
                    let chosen_elsewhere = matches!(
                        self.desired.get(&app),
                        Some(Desired { want: Want::Running { node: Some(n) }, .. }) if *n != self.local
                    );
                    if chosen_elsewhere {
                        self.set_desired(&app, Want::Running { node: None });
                    }
                    self.actions.push_back(AppAction::Start { app: app.clone() });
                    self.announce();
                }
                // Not if the administrator stopped it meanwhile.
                AppState::Stopped
                    if local.restart_after_stop
                        && !self.isolated
                        && self.may_start()
                        && matches!(
                            self.desired.get(&app),
                            Some(Desired { want: Want::Running { .. }, .. })
                        ) =>
                {
                    // A local restart: nobody else may start it meanwhile, since it is still ours.
                    if let Some(local) = self.locals.get_mut(&app) {
                        local.state = AppState::Starting;
                        local.restart_after_stop = false;
                    }
                    self.actions.push_back(AppAction::Start { app: app.clone() });
                    self.announce();
                }
                AppState::Running if !here => {
                    let reason = match &placement {
                        Some(node) => format!("moving to {node}"),
                        None => "stopped by request".to_string(),
                    };
                    self.stop_local(&app, &reason, false);
                }
                _ => {}
            }
        }
    }
}
