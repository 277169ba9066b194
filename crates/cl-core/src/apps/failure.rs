//! An application's last failure on this node: what kind it was decides what its stop ends in.

use crate::time::Time;

/// What a failure here led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FailureKind {
    /// The restart budget was spent (or the start failed): given up on this node, so the stop
    /// that follows ends in `Failed`, not `Stopped`, and another node may take it.
    GaveUp,
    /// Restarting here: `attempt` of the policy's `restarts`.
    Restarting {
        /// Which restart this is (1 for the first).
        attempt: usize,
        /// The policy's restart budget.
        restarts: u32,
    },
    /// The stop failed: something may still be held here.
    StopFailed,
}

/// The last failure of an application here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Failure {
    /// When it happened.
    pub(super) at: Time,
    /// What it led to.
    pub(super) kind: FailureKind,
    /// What went wrong, one sentence.
    pub(super) reason: String,
}

impl Failure {
    /// The failure as operators read it (clstat): what it led to, then why.
    pub(super) fn text(&self) -> String {
        let reason = &self.reason;
        match self.kind {
            FailureKind::GaveUp => format!("failed here: {reason}"),
            FailureKind::Restarting { attempt, restarts } => {
                format!("restarting ({attempt} of {restarts}): {reason}")
            }
            FailureKind::StopFailed => format!("stop failed: {reason}"),
        }
    }
}
