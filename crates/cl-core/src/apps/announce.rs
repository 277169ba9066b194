//! The announcements: what this node tells its peers of its applications, and what it takes
//! from theirs (states, desired states, placements and the handshake around them).

use super::{Announcement, Apps, Peer};

impl Apps {
    /// A peer's announcement: keep what it says, adopt newer desired states, and answer when
    /// the peer waits for this node (it asked, it just came up, it newly places an
    /// application on itself, or one of its desired states was adopted here).
    pub(super) fn on_announcement(&mut self, peer: String, announcement: Announcement) {
        let stamp = (announcement.epoch, announcement.seq);
        if self.heard.get(&peer).is_some_and(|last| stamp <= *last) {
            return; // late or repeated: the peer has said something newer since
        }
        self.heard.insert(peer.clone(), stamp);
        // Asked: it has not heard us since it came up or forgot us (a restart of its
        // cldaemon while its heartbeats went on, a yield): ours is repeated only when
        // it does not arrive, so answer.
        let mut answer = announcement.awaiting.contains(&self.local);
        if let Some(Peer::Up { announced }) = self.peers.get_mut(&peer) {
            if !*announced {
                *announced = true;
                // Its first word since it came up: answer, so it has ours too even if
                // ours crossed its PeerUp on the wire.
                answer = true;
            }
        }
        if answer {
            self.announce();
        }
        if matches!(self.peers.get(&peer), Some(Peer::Down { .. })) {
            self.heard_since_down.insert(peer.clone());
        }
        self.peer_states.insert(peer.clone(), announcement.states);
        self.peer_data_blocked.insert(peer.clone(), announcement.data_blocked);
        mark(&mut self.peer_lease, &peer, announcement.lease);
        // A peer that newly places an application on itself waits for this node's
        // consent (or refusal) in an announcement sent after this one: answer.
        let before = self.peer_placed_since.get(&peer);
        if let Some(placements) = &announcement.placements {
            let newly_intends = placements.iter().any(|(app, node)| {
                let since = announcement.placed_since.get(app);
                *node == peer && before.and_then(|b| b.get(app)) != since
            });
            if newly_intends {
                self.announce();
            }
        }
        self.peer_placed_since.insert(peer.clone(), announcement.placed_since);
        self.peer_placements.insert(peer.clone(), announcement.placements);
        mark(&mut self.peer_standing_by, &peer, announcement.standing_by);
        match announcement.heard.get(&self.local) {
            Some(stamp) => self.peer_heard_us.insert(peer.clone(), *stamp),
            None => self.peer_heard_us.remove(&peer),
        };
        self.peer_desired.insert(peer, announcement.desired.clone());
        let mut adopted = false;
        for (app, theirs) in announcement.desired {
            if !self.policies.contains_key(&app) {
                continue;
            }
            self.clock = self.clock.max(theirs.stamp);
            let newer = self.desired.get(&app).is_none_or(|mine| theirs.newer_than(mine));
            if newer {
                if theirs.clears_failures {
                    self.clear_failure(&app);
                }
                self.desired.insert(app, theirs);
                adopted = true;
            }
        }
        if adopted {
            // The sender waits for us to agree before it starts anything (safe_to_start).
            self.announce();
        }
    }

    /// What this node announces to its peers.
    pub fn announcement(&self) -> Announcement {
        let seq = self.announced_seq.get() + 1;
        self.announced_seq.set(seq);
        Announcement {
            epoch: self.epoch,
            seq,
            states: self.locals.iter().map(|(a, l)| (a.clone(), l.state)).collect(),
            desired: self.desired.clone(),
            data_blocked: self
                .locals
                .iter()
                .filter_map(|(a, l)| l.data_blocked.clone().map(|why| (a.clone(), why)))
                .collect(),
            lease: self.lease == Some(true),
            awaiting: self
                .peers
                .iter()
                .filter(|(_, p)| matches!(p, Peer::Up { announced: false }))
                .map(|(name, _)| name.clone())
                .collect(),
            placements: Some(
                self.placed
                    .iter()
                    .filter_map(|(app, node)| node.clone().map(|n| (app.clone(), n)))
                    .collect(),
            ),
            placed_since: self
                .placed
                .iter()
                .filter(|(_, node)| node.is_some())
                .map(|(app, _)| (app.clone(), self.placed_after.get(app).copied().unwrap_or(0) + 1))
                .collect(),
            heard: self.heard.clone(),
            standing_by: self.isolated,
        }
    }
}

/// Put `peer` in `set` or take it out, as its announcement says.
fn mark(set: &mut std::collections::BTreeSet<String>, peer: &str, on: bool) {
    if on {
        set.insert(peer.to_string());
    } else {
        set.remove(peer);
    }
}
