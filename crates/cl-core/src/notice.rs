//! Cluster events an administrator's programs are told about (`<notify>` in clconf.xml).
//!
//! Which facts count as an event is a decision, so it is made here: the engine
//! ([`crate::node::Node`], once [`with_notifications`](crate::node::Node::with_notifications)
//! is asked for) hands each one out as [`crate::node::NodeAction::Notify`], in the order it
//! happened, next to the action it concerns. The daemon only delivers them.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::apps::{Announcement, AppAction, AppState};
use crate::guard::{Gate, GuardStatus, LeaseView};
use crate::membership::{Action, Verdict};
use crate::storage::NotPromotable;

/// Something that happened in the cluster, as this node saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ClusterEvent {
    /// A peer is heard (again).
    NodeUp {
        /// The peer.
        node: String,
    },
    /// A peer fell silent on every heartbeat link or left the cluster.
    NodeDown {
        /// The peer.
        node: String,
        /// Why it counts as down.
        reason: String,
        /// This node is connected and may take over the peer's applications (once the takeover
        /// guard lets it).
        take_over: bool,
    },
    /// This node lost every heartbeat link and every known connection: it stops its
    /// applications and takes nothing over.
    Isolated {
        /// What it lost.
        reason: String,
    },
    /// This node is connected again after being isolated.
    Reconnected,
    /// An application's start sequence begins here.
    AppStarting {
        /// Application.
        app: String,
    },
    /// An application runs here now.
    AppStarted {
        /// Application.
        app: String,
    },
    /// An application's stop sequence begins here.
    AppStopping {
        /// Application.
        app: String,
        /// Why it stops.
        reason: String,
    },
    /// An application was stopped here and released everything.
    AppStopped {
        /// Application.
        app: String,
    },
    /// An application's start, stop or monitor failed here.
    AppFailed {
        /// Application.
        app: String,
        /// What failed.
        reason: String,
    },
    /// An application runs on another node than the one last seen running it.
    AppMoved {
        /// Application.
        app: String,
        /// Where it ran.
        from: String,
        /// Where it runs now.
        to: String,
    },
    /// The takeover guard keeps this node from taking over a down peer's applications.
    TakeoverHeldBack {
        /// The peer.
        node: String,
        /// Why.
        why: HoldReason,
        /// The reason in words.
        detail: String,
    },
    /// A fence action on a peer ended.
    FenceResult {
        /// The peer.
        node: String,
        /// The agent reported success (the peer is powered off).
        ok: bool,
        /// The agent's message.
        detail: String,
    },
    /// The arbitrator's lease has a new holder (as its answers say).
    LeaseChanged {
        /// The node that holds it; `None`: nobody.
        holder: Option<String>,
    },
    /// DRBD reports a split brain on an application's replicated data here: it is not promoted
    /// until an administrator resolves it (`clsplitbrain`).
    SplitBrain {
        /// Application.
        app: String,
    },
}

/// Why the takeover guard holds a takeover back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldReason {
    /// This node may not take over: it is isolated, or cannot tell a peer failure from its own.
    Standby,
    /// The arbitrator's lease is held by another node or does not answer.
    NoLease,
    /// Fencing the peer failed; it is retried.
    FenceFailed,
    /// The peer still answers on the public network: only the heartbeat path is broken.
    PeerAlive,
}

impl HoldReason {
    /// The reason in words, for the event's detail.
    pub fn describe(self) -> &'static str {
        match self {
            HoldReason::Standby => {
                "this node cannot tell a failure of the peer from its own isolation"
            }
            HoldReason::NoLease => "this node does not hold the arbitrator's lease",
            HoldReason::FenceFailed => "fencing the peer failed; retrying",
            HoldReason::PeerAlive => {
                "the peer still answers on the public network; check the heartbeat networks"
            }
        }
    }
}

/// The kinds of [`ClusterEvent`], by the name `<notify events>` and `LINUXHA_EVENT` use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// [`ClusterEvent::NodeUp`].
    NodeUp,
    /// [`ClusterEvent::NodeDown`].
    NodeDown,
    /// [`ClusterEvent::Isolated`].
    Isolated,
    /// [`ClusterEvent::Reconnected`].
    Reconnected,
    /// [`ClusterEvent::AppStarting`].
    AppStarting,
    /// [`ClusterEvent::AppStarted`].
    AppStarted,
    /// [`ClusterEvent::AppStopping`].
    AppStopping,
    /// [`ClusterEvent::AppStopped`].
    AppStopped,
    /// [`ClusterEvent::AppFailed`].
    AppFailed,
    /// [`ClusterEvent::AppMoved`].
    AppMoved,
    /// [`ClusterEvent::TakeoverHeldBack`].
    TakeoverHeldBack,
    /// [`ClusterEvent::FenceResult`].
    FenceResult,
    /// [`ClusterEvent::LeaseChanged`].
    LeaseChanged,
    /// [`ClusterEvent::SplitBrain`].
    SplitBrain,
}

impl EventKind {
    /// Every kind, in documentation order.
    pub const ALL: [EventKind; 14] = [
        EventKind::NodeUp,
        EventKind::NodeDown,
        EventKind::Isolated,
        EventKind::Reconnected,
        EventKind::AppStarting,
        EventKind::AppStarted,
        EventKind::AppStopping,
        EventKind::AppStopped,
        EventKind::AppFailed,
        EventKind::AppMoved,
        EventKind::TakeoverHeldBack,
        EventKind::FenceResult,
        EventKind::LeaseChanged,
        EventKind::SplitBrain,
    ];

    /// The kind's name (`node_down`).
    pub fn name(self) -> &'static str {
        match self {
            EventKind::NodeUp => "node_up",
            EventKind::NodeDown => "node_down",
            EventKind::Isolated => "isolated",
            EventKind::Reconnected => "reconnected",
            EventKind::AppStarting => "app_starting",
            EventKind::AppStarted => "app_started",
            EventKind::AppStopping => "app_stopping",
            EventKind::AppStopped => "app_stopped",
            EventKind::AppFailed => "app_failed",
            EventKind::AppMoved => "app_moved",
            EventKind::TakeoverHeldBack => "takeover_held_back",
            EventKind::FenceResult => "fence_result",
            EventKind::LeaseChanged => "lease_changed",
            EventKind::SplitBrain => "split_brain",
        }
    }

    /// The kind named `name`, if there is one.
    pub fn from_name(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl ClusterEvent {
    /// Which kind of event this is.
    pub fn kind(&self) -> EventKind {
        match self {
            ClusterEvent::NodeUp { .. } => EventKind::NodeUp,
            ClusterEvent::NodeDown { .. } => EventKind::NodeDown,
            ClusterEvent::Isolated { .. } => EventKind::Isolated,
            ClusterEvent::Reconnected => EventKind::Reconnected,
            ClusterEvent::AppStarting { .. } => EventKind::AppStarting,
            ClusterEvent::AppStarted { .. } => EventKind::AppStarted,
            ClusterEvent::AppStopping { .. } => EventKind::AppStopping,
            ClusterEvent::AppStopped { .. } => EventKind::AppStopped,
            ClusterEvent::AppFailed { .. } => EventKind::AppFailed,
            ClusterEvent::AppMoved { .. } => EventKind::AppMoved,
            ClusterEvent::TakeoverHeldBack { .. } => EventKind::TakeoverHeldBack,
            ClusterEvent::FenceResult { .. } => EventKind::FenceResult,
            ClusterEvent::LeaseChanged { .. } => EventKind::LeaseChanged,
            ClusterEvent::SplitBrain { .. } => EventKind::SplitBrain,
        }
    }

    /// The other node the event is about, if any.
    pub fn subject_node(&self) -> Option<&str> {
        match self {
            ClusterEvent::NodeUp { node }
            | ClusterEvent::NodeDown { node, .. }
            | ClusterEvent::TakeoverHeldBack { node, .. }
            | ClusterEvent::FenceResult { node, .. } => Some(node),
            ClusterEvent::AppMoved { from, .. } => Some(from),
            ClusterEvent::LeaseChanged { holder } => holder.as_deref(),
            _ => None,
        }
    }

    /// The application the event is about, if any.
    pub fn application(&self) -> Option<&str> {
        match self {
            ClusterEvent::AppStarting { app }
            | ClusterEvent::AppStarted { app }
            | ClusterEvent::AppStopping { app, .. }
            | ClusterEvent::AppStopped { app }
            | ClusterEvent::AppFailed { app, .. }
            | ClusterEvent::AppMoved { app, .. }
            | ClusterEvent::SplitBrain { app } => Some(app),
            _ => None,
        }
    }

    /// Why it happened, in words, if the event says.
    pub fn reason(&self) -> Option<&str> {
        match self {
            ClusterEvent::NodeDown { reason, .. }
            | ClusterEvent::Isolated { reason }
            | ClusterEvent::AppStopping { reason, .. }
            | ClusterEvent::AppFailed { reason, .. } => Some(reason),
            ClusterEvent::TakeoverHeldBack { detail, .. }
            | ClusterEvent::FenceResult { detail, .. } => Some(detail),
            _ => None,
        }
    }
}

/// What the engine remembers to tell events apart from repetitions: who last ran each
/// application, which takeovers are held back and why, who holds the lease.
#[derive(Debug, Default)]
pub(crate) struct Notices {
    /// The node last seen running each application.
    runner: BTreeMap<String, String>,
    /// Per peer, why its takeover is held back (absent: it is not).
    held: BTreeMap<String, HoldReason>,
    /// The lease holder last reported (`None`: not reported yet).
    lease_holder: Option<Option<String>>,
    /// Applications whose data is in split brain here.
    split_brain: BTreeSet<String>,
}

impl Notices {
    /// The event of a membership change, if it is one.
    pub(crate) fn membership(action: &Action) -> Option<ClusterEvent> {
        match action {
            Action::PeerUp { peer } => Some(ClusterEvent::NodeUp { node: peer.clone() }),
            Action::PeerDown { peer, verdict, reason, .. } => Some(ClusterEvent::NodeDown {
                node: peer.clone(),
                reason: reason.clone(),
                take_over: *verdict == Verdict::TakeOver,
            }),
            Action::Isolated { reason } => Some(ClusterEvent::Isolated { reason: reason.clone() }),
            Action::Reconnected => Some(ClusterEvent::Reconnected),
            _ => None,
        }
    }

    /// The event of a request of the applications machine, if it is one.
    pub(crate) fn app_action(action: &AppAction) -> Option<ClusterEvent> {
        match action {
            AppAction::Start { app } => Some(ClusterEvent::AppStarting { app: app.clone() }),
            AppAction::Stop { app, reason, .. } => {
                Some(ClusterEvent::AppStopping { app: app.clone(), reason: reason.clone() })
            }
            AppAction::Announce => None,
        }
    }

    /// `node` runs `app` now: a move when another node ran it last.
    pub(crate) fn runs(&mut self, app: &str, node: &str) -> Option<ClusterEvent> {
        let before = self.runner.insert(app.to_string(), node.to_string());
        match before {
            Some(from) if from != node => {
                Some(ClusterEvent::AppMoved { app: app.to_string(), from, to: node.to_string() })
            }
            _ => None,
        }
    }

    /// A peer's announcement: the applications it runs may have moved there.
    pub(crate) fn announcement(
        &mut self,
        peer: &str,
        announcement: &Announcement,
    ) -> Vec<ClusterEvent> {
        announcement
            .states
            .iter()
            .filter(|(_, state)| **state == AppState::Running)
            .filter_map(|(app, _)| self.runs(app, peer))
            .collect()
    }

    /// The data verdict of `app` here: an event when it became a split brain.
    pub(crate) fn data(
        &mut self,
        app: &str,
        blocked: Option<&NotPromotable>,
    ) -> Option<ClusterEvent> {
        if blocked == Some(&NotPromotable::SplitBrain) {
            let new = self.split_brain.insert(app.to_string());
            new.then(|| ClusterEvent::SplitBrain { app: app.to_string() })
        } else {
            self.split_brain.remove(app);
            None
        }
    }

    /// The arbitrator's answer names `holder`: an event when that changed.
    pub(crate) fn lease_holder(&mut self, holder: &Option<String>) -> Option<ClusterEvent> {
        if self.lease_holder.as_ref() == Some(holder) {
            return None;
        }
        self.lease_holder = Some(holder.clone());
        Some(ClusterEvent::LeaseChanged { holder: holder.clone() })
    }

    /// The guard's gates now: an event for each peer whose takeover became held back, or held
    /// back for another reason.
    pub(crate) fn gates(&mut self, status: &GuardStatus) -> Vec<ClusterEvent> {
        let no_lease = matches!(status.lease, Some(LeaseView::Denied { .. } | LeaseView::NoAnswer));
        let mut events = Vec::new();
        for (peer, gate) in &status.gates {
            let why = match gate {
                Gate::StandBy => Some(HoldReason::Standby),
                Gate::Lease if no_lease => Some(HoldReason::NoLease),
                Gate::FenceAt { attempts, .. } if *attempts > 0 => Some(HoldReason::FenceFailed),
                Gate::ProbeAt { .. } => Some(HoldReason::PeerAlive),
                _ => None,
            };
            // A gate at work (probing, fencing, asking) keeps what held it back before: a
            // retry that finds the same obstacle is not news.
            let before = match (why, gate) {
                (Some(why), _) => self.held.insert(peer.clone(), why),
                (None, Gate::Idle | Gate::Cleared { .. }) => self.held.remove(peer),
                (None, _) => continue,
            };
            if let Some(why) = why.filter(|w| before != Some(*w)) {
                events.push(ClusterEvent::TakeoverHeldBack {
                    node: peer.clone(),
                    why,
                    detail: why.describe().to_string(),
                });
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_unique_name_that_reads_back() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::from_name(kind.name()), Some(kind));
            let json = serde_json_name(kind);
            assert_eq!(json, kind.name());
        }
        assert_eq!(EventKind::from_name("node_gone"), None);
    }

    /// The serde name of a kind, without a JSON crate: the Debug name in snake case.
    fn serde_json_name(kind: EventKind) -> String {
        let mut out = String::new();
        for (i, c) in format!("{kind:?}").chars().enumerate() {
            if c.is_uppercase() && i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        }
        out
    }

    #[test]
    fn a_move_is_told_once_and_only_between_different_nodes() {
        let mut n = Notices::default();
        assert_eq!(n.runs("web", "node1"), None);
        assert_eq!(n.runs("web", "node1"), None);
        assert_eq!(
            n.runs("web", "node2"),
            Some(ClusterEvent::AppMoved {
                app: "web".into(),
                from: "node1".into(),
                to: "node2".into()
            })
        );
        assert_eq!(n.runs("web", "node2"), None);
    }

    #[test]
    fn a_lease_holder_is_told_when_it_changes() {
        let mut n = Notices::default();
        assert!(n.lease_holder(&Some("node1".into())).is_some());
        assert!(n.lease_holder(&Some("node1".into())).is_none());
        assert!(n.lease_holder(&None).is_some());
    }
}
