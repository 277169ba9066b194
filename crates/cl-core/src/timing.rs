//! The timing argument of docs/safety.md, as code: from the heartbeat timing, the stop deadline
//! and the lease, how long a survivor waits before starting a silent peer's applications.
//!
//! Two nodes that lose each other notice it at different moments: each declares the other down
//! `timeout` after the last heartbeat it heard. On a clean cut the last heartbeats differ by one
//! `interval` plus the delivery jitter, but on a lossy network this node may have stopped
//! hearing the peer long before the peer stopped hearing it: the cut came at the latest when
//! this node declares the peer down, so the peer declares this node down at the latest one
//! `timeout` (plus jitter) later. The simulator found this (loss, then a cut). The node that must give up (isolated, or
//! refused the lease) then needs its decision time (the isolation wait, or the lease answer)
//! and its stop deadline, after which the shell has killed what the stop scripts left. The
//! survivor waits at least that sum, so the loser has always stopped before the survivor starts.
//! A fenced peer holds nothing, so no wait is needed after a successful fence.

use std::time::Duration;

use crate::guard::LeaseTiming;

/// Allowance for heartbeat delivery jitter on a LAN, far above what a LAN shows.
pub const JITTER_ALLOWANCE: Duration = Duration::from_millis(100);

/// Slack for scheduling: a node's decision and its shell's actions are not instantaneous.
pub const SCHEDULING_SLACK: Duration = Duration::from_millis(100);

/// The numbers the argument is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SafetyTiming {
    /// Heartbeat interval.
    pub interval: Duration,
    /// Heartbeat timeout.
    pub timeout: Duration,
    /// How fresh a known connection's reply must be (the isolation wait).
    pub freshness: Duration,
    /// Deadline for stopping every application when a node must give up; the shell kills
    /// whatever is left when it passes.
    pub stop_margin: Duration,
    /// The lease, when an arbitrator is configured.
    pub lease: Option<LeaseTiming>,
}

impl SafetyTiming {
    /// The defaults for a heartbeat timing, without an arbitrator.
    pub fn new(interval: Duration, timeout: Duration) -> SafetyTiming {
        SafetyTiming {
            interval,
            timeout,
            freshness: timeout / 2,
            stop_margin: default_stop_margin(timeout),
            lease: None,
        }
    }

    /// With an arbitrator granting leases of `lease`.
    pub fn with_lease(mut self, lease: Duration) -> SafetyTiming {
        self.lease = Some(LeaseTiming {
            lease,
            answer_timeout: self.freshness,
            stop_margin: self.stop_margin,
        });
        self
    }

    /// The longest a node that must give up takes to decide so.
    pub fn decision_time(&self) -> Duration {
        let lease = self.lease.map(|l| l.answer_timeout).unwrap_or_default();
        self.freshness.max(lease)
    }

    /// How long after declaring a peer down (and passing the guard) a node waits before
    /// starting that peer's applications.
    pub fn takeover_delay(&self) -> Duration {
        self.timeout + JITTER_ALLOWANCE + self.decision_time() + self.stop_margin + SCHEDULING_SLACK
    }
}

/// Half a second, or half the heartbeat timeout if that is longer: enough for the shell's hard
/// stop (kill the application's processes, remove its addresses, unmount).
pub fn default_stop_margin(timeout: Duration) -> Duration {
    Duration::from_millis(500).max(timeout / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_profile_waits_for_skew_isolation_and_the_stop() {
        let t = SafetyTiming::new(Duration::from_millis(200), Duration::from_secs(1));
        assert_eq!(t.takeover_delay(), Duration::from_millis(1000 + 100 + 500 + 500 + 100));
        let t = t.with_lease(Duration::from_secs(4));
        assert_eq!(t.decision_time(), Duration::from_millis(500));
    }

    #[test]
    fn fast_profile_keeps_a_real_stop_deadline() {
        let t = SafetyTiming::new(Duration::from_millis(20), Duration::from_millis(100));
        assert_eq!(t.stop_margin, Duration::from_millis(500));
        assert_eq!(t.takeover_delay(), Duration::from_millis(100 + 100 + 50 + 500 + 100));
    }
}
