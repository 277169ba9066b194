//! The engine's notifications ([`NodeAction::Notify`]): which facts become a
//! [`ClusterEvent`], handed out next to the action they concern. Off unless the shell asks
//! ([`Node::with_notifications`]), so shells and tests without notifiers see no change.

use super::{Node, NodeAction, NodeInput};
use crate::apps::{AppAction, AppState};
use crate::membership::Action;
use crate::notice::{ClusterEvent, Notices};

/// What [`Node::handle`] must remember of an input before feeding it, to tell afterwards what
/// it changed.
pub(super) enum Pending {
    /// Nothing to tell, or told already.
    None,
    /// A start sequence ended; `was_starting`: the start was still wanted.
    StartFinished { app: String, ok: bool, reason: String, was_starting: bool },
    /// A stop sequence ended; `was_stopping`: the stop was the application's.
    StopFinished { app: String, ok: bool, reason: String, was_stopping: bool },
    /// The application was found running here after a restart of the daemon.
    Adopted { app: String },
}

impl Node {
    /// Hand out [`NodeAction::Notify`] for the cluster events this engine sees (see
    /// `crate::notice`); without this it never does.
    pub fn with_notifications(mut self) -> Node {
        self.notices = Some(Notices::default());
        self
    }

    fn notify(&mut self, events: impl IntoIterator<Item = ClusterEvent>) {
        if self.notices.is_some() {
            self.actions.extend(events.into_iter().map(NodeAction::Notify));
        }
    }

    /// Before `input` is fed: tell what it says by itself, remember what is told after.
    pub(super) fn notice_input(&mut self, input: &NodeInput) -> Pending {
        let Some(notices) = self.notices.as_mut() else { return Pending::None };
        let events: Vec<ClusterEvent> = match input {
            NodeInput::FenceResult { peer, ok, detail } => vec![ClusterEvent::FenceResult {
                node: peer.clone(),
                ok: *ok,
                detail: detail.clone(),
            }],
            NodeInput::LeaseReply { holder, .. } => {
                notices.lease_holder(holder).into_iter().collect()
            }
            NodeInput::PeerAnnouncement { peer, announcement } => {
                notices.announcement(peer, announcement)
            }
            NodeInput::MonitorFailed { app, reason } => {
                vec![ClusterEvent::AppFailed { app: app.clone(), reason: reason.clone() }]
            }
            NodeInput::Data { app, blocked } => {
                notices.data(app, blocked.as_ref()).into_iter().collect()
            }
            NodeInput::DataLost { app, reason } => vec![ClusterEvent::AppFailed {
                app: app.clone(),
                reason: format!("its data failed: {reason}"),
            }],
            NodeInput::StartFinished { app, ok, reason } => {
                let was_starting = self.apps.state(app) == Some(AppState::Starting);
                return Pending::StartFinished {
                    app: app.clone(),
                    ok: *ok,
                    reason: reason.clone(),
                    was_starting,
                };
            }
            NodeInput::StopFinished { app, ok, reason } => {
                let was_stopping = self.apps.state(app) == Some(AppState::Stopping);
                return Pending::StopFinished {
                    app: app.clone(),
                    ok: *ok,
                    reason: reason.clone(),
                    was_stopping,
                };
            }
            NodeInput::Adopted { app } => return Pending::Adopted { app: app.clone() },
            _ => Vec::new(),
        };
        self.notify(events);
        Pending::None
    }

    /// After an input was fed: tell what it changed.
    pub(super) fn notice_result(&mut self, pending: Pending) {
        let local = self.local.clone();
        let Some(notices) = self.notices.as_mut() else { return };
        let mut events = Vec::new();
        match pending {
            Pending::None => {}
            Pending::StartFinished { app, ok, reason, was_starting } => {
                if !ok {
                    events.push(ClusterEvent::AppFailed {
                        app,
                        reason: format!("its start failed: {reason}"),
                    });
                } else if was_starting && self.apps.state(&app) == Some(AppState::Running) {
                    let moved = notices.runs(&app, &local);
                    events.push(ClusterEvent::AppStarted { app });
                    events.extend(moved);
                }
            }
            Pending::StopFinished { app, ok, reason, was_stopping } => {
                if !ok {
                    events.push(ClusterEvent::AppFailed {
                        app,
                        reason: format!("its stop failed: {reason}"),
                    });
                } else if was_stopping {
                    events.push(ClusterEvent::AppStopped { app });
                }
            }
            Pending::Adopted { app } => {
                if self.apps.state(&app) == Some(AppState::Running) {
                    events.extend(notices.runs(&app, &local));
                }
            }
        }
        self.notify(events);
    }

    /// A membership change was handed out: its event.
    pub(super) fn notice_membership(&mut self, action: &Action) {
        self.notify(Notices::membership(action));
    }

    /// A request of the applications machine was handed out: its event.
    pub(super) fn notice_apps(&mut self, action: &AppAction) {
        self.notify(Notices::app_action(action));
    }

    /// Nothing else is left to route: a takeover held back (or held back for another reason)
    /// since the last look. True when something was told.
    pub(super) fn notice_gates(&mut self) -> bool {
        let Some(notices) = self.notices.as_mut() else { return false };
        let events = notices.gates(&self.guard.status());
        let told = !events.is_empty();
        self.notify(events);
        told
    }
}
