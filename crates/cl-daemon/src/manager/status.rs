//! The status snapshot clstat shows, published on every change.

use cl_core::membership::{LocalState, PeerState};
use cl_wire::msg::{
    ClusterState, ClusterStatus, KnownConnectionStatus, LinkState, LinkStatus, LocalStateView,
    NodeState, NodeStatus,
};
use cl_wire::Daemon;

use crate::context::Context;

use super::Manager;

impl Manager {
    pub(super) fn publish(&mut self) {
        let status = self.status();
        self.status_tx.send_replace(status);
    }

    pub(super) fn status(&self) -> ClusterStatus {
        let Some(node) = self.node.as_ref() else { return not_formed_status(&self.ctx) };
        let now = self.now();
        let snapshot = node.membership_status(now);
        let local_state = match snapshot.local_state {
            LocalState::Connected => LocalStateView::Connected,
            LocalState::Undecided => LocalStateView::Undecided,
            LocalState::Isolated => LocalStateView::Isolated,
        };
        let mut nodes = Vec::new();
        for node in &self.ctx.cluster().nodes {
            if node.name == self.ctx.local {
                let state = if snapshot.local_state == LocalState::Isolated {
                    NodeState::Isolated
                } else {
                    NodeState::Up
                };
                nodes.push(NodeStatus { name: node.name.clone(), state, links: Vec::new() });
                continue;
            }
            let Some(peer) = snapshot.peers.iter().find(|p| p.name == node.name) else { continue };
            let state = match peer.state {
                PeerState::Unknown => NodeState::Joining,
                PeerState::Up => NodeState::Up,
                PeerState::Down => NodeState::Down,
            };
            let links = peer
                .links
                .iter()
                .map(|l| LinkStatus {
                    network: l.name.clone(),
                    state: if l.up { LinkState::Up } else { LinkState::Down },
                    last_heard_ms: l.last_heard_ms,
                })
                .collect();
            nodes.push(NodeStatus { name: node.name.clone(), state, links });
        }
        let known_connections = snapshot
            .known_connections
            .iter()
            .map(|k| KnownConnectionStatus {
                address: k.target,
                reachable: k.reachable,
                last_reply_ms: self
                    .known_last
                    .get(&k.target)
                    .map(|t| t.elapsed().as_millis() as u64),
            })
            .collect();
        let mut warnings: Vec<String> = self
            .down_links
            .iter()
            .map(|(peer, link)| format!("heartbeat link {link} to {peer} is down; {peer} is still reachable over another link"))
            .collect();
        warnings.extend(
            self.lost_known.iter().map(|k| format!("known connection {k} does not answer")),
        );
        let (mut alarms, takeover) = crate::guardctl::describe(&node.guard_status(), now);
        if let Some(apps) = self.apps.as_ref() {
            alarms.extend(apps.storage_alarms());
        }
        if self.ctx.cluster().known_connections.is_empty() {
            warnings
                .push("no known connections configured: partition detection is impossible".into());
        }
        let own = *crate::serve::locked(&self.peer_receiver).counters();
        let counters = self
            .counters
            .iter()
            .chain([(&Daemon::Cldaemon, &own)])
            .filter_map(|(daemon, c)| {
                Some((daemon.name().to_string(), serde_json::to_value(c).ok()?))
            })
            .chain([("notify".to_string(), self.notifications.counters())])
            .collect::<serde_json::Map<_, _>>();
        let listeners = crate::serve::statuses();
        warnings.extend(crate::serve::warnings(&listeners));
        ClusterStatus {
            cluster: self.ctx.name().to_string(),
            state: ClusterState::Formed,
            local: self.ctx.local.clone(),
            local_state,
            config_version: self.ctx.built.version,
            nodes,
            known_connections,
            applications: self.apps.as_ref().map(|a| a.status(node.apps())).unwrap_or_default(),
            warnings,
            alarms,
            takeover,
            counters: serde_json::Value::Object(counters),
            listeners,
            guard: crate::guard_summary::summary(&node.guard_status(), &self.ctx.local, now),
        }
    }
}

/// The snapshot published while the cluster is not formed on this node.
pub fn not_formed_status(ctx: &Context) -> ClusterStatus {
    let listeners = crate::serve::statuses();
    ClusterStatus {
        cluster: ctx.name().to_string(),
        state: ClusterState::NotFormed,
        local: ctx.local.clone(),
        local_state: LocalStateView::Connected,
        config_version: ctx.built.version,
        nodes: ctx
            .cluster()
            .nodes
            .iter()
            .map(|n| NodeStatus {
                name: n.name.clone(),
                state: NodeState::Unknown,
                links: Vec::new(),
            })
            .collect(),
        known_connections: Vec::new(),
        applications: Vec::new(),
        warnings: crate::serve::warnings(&listeners),
        alarms: Vec::new(),
        takeover: Vec::new(),
        counters: serde_json::Value::Object(Default::default()),
        listeners,
        guard: Default::default(),
    }
}
