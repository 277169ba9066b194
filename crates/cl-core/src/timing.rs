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
//!
//! **With an arbitrator the lease replaces the takeover delay.** Only the lease holder runs
//! applications, and it holds the lease ahead of time, not only after losing its peer: it
//! renews it `renew_after` after each granted request was *sent*, and counts it as held until
//! `sent + lease - drift` (the arbitrator's expiry, `arrival + lease` on its own clock, is never
//! earlier; `drift` = 2 % of the lease covers clock rates). Its stop deadline is `stop_margin`
//! before that, so everything is released before the lease can run out at the arbitrator. The
//! arbitrator grants the other node the lease only once it has run out (leases are never
//! released early), so a grant proves the former holder holds nothing: the survivor starts at
//! once. The lease must leave room for three renewal attempts, each waiting one answer
//! timeout, before the stop deadline: `lease - drift >= stop_margin + renew_after + 3 x
//! answer_timeout` ([`SafetyTiming::lease_floor`]).

use std::time::Duration;

use crate::guard::LeaseTiming;
#[cfg(test)]
use crate::time::Time;

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
            renew_after: self.renew_after(),
        });
        self
    }

    /// How long after sending a granted request the holder renews: one answer timeout.
    pub fn renew_after(&self) -> Duration {
        self.freshness
    }

    /// The shortest lease that leaves three renewal attempts before the holder's stop deadline:
    /// `(stop margin + renew_after + 3 x answer timeout) / 0.98`, rounded up to 100 ms. A
    /// shorter lease is still safe but makes the holder stop whenever one renewal is lost.
    pub fn lease_floor(&self) -> Duration {
        let need = self.stop_margin + self.renew_after() + self.freshness * 3;
        let ms = (need.as_millis() as u64 * 50).div_ceil(49);
        Duration::from_millis(ms.div_ceil(100) * 100)
    }

    /// The longest a node that must give up takes to decide so.
    pub fn decision_time(&self) -> Duration {
        let lease = self.lease.map(|l| l.answer_timeout).unwrap_or_default();
        self.freshness.max(lease)
    }

    /// How long after declaring a peer down (and passing the guard) a node waits before
    /// starting that peer's applications. None with an arbitrator: the grant is the proof.
    pub fn takeover_delay(&self) -> Duration {
        if self.lease.is_some() {
            return Duration::ZERO;
        }
        self.unprotected_takeover_delay()
    }

    /// The takeover delay without an arbitrator.
    pub fn unprotected_takeover_delay(&self) -> Duration {
        self.timeout + JITTER_ALLOWANCE + self.decision_time() + self.stop_margin + SCHEDULING_SLACK
    }

    /// Without an arbitrator, how long the node that loses the fence race waits before fencing
    /// its peer: `interval + JITTER_ALLOWANCE + SCHEDULING_SLACK + poweroff`, where `poweroff`
    /// is how long this node's own fence device (the one the peer would use on it) takes to
    /// power it off.
    ///
    /// The wait only decides who fences, never whether two nodes run an application: a node
    /// takes nothing over before its fence succeeds, and a node that is powered off holds
    /// nothing, so even two nodes fencing each other leave no two owners (both off is an
    /// availability problem). What the wait buys is that a symmetric partition (the nodes cut
    /// from each other, both reaching the outside) powers off one node, not both. Both nodes
    /// stop hearing each other at the same instant, the cut, so their last heartbeats heard
    /// differ by at most one `interval` plus the delivery jitter and they declare each other
    /// down at most `interval + JITTER_ALLOWANCE` apart, plus `SCHEDULING_SLACK` to decide. The
    /// favoured node fences at once, and its fence has powered this node off `poweroff` later:
    /// this node, waiting that sum, is off before its own fence starts. A node that is isolated
    /// or dead instead never fences (an isolated node stops itself: the known-connection rule),
    /// so the survivor pays only this unit, not a multiple of the heartbeat timeout.
    ///
    /// Skews beyond the sum (a lossy link that made one node stop hearing the other a whole
    /// timeout before the cut, a stale known-connection reply, a fence slower than its
    /// `poweroff`, or each node believing from stale news that it is the favoured one) can
    /// still make both nodes fence: both end up off, never both running.
    pub fn fence_race_unit(&self, poweroff: Duration) -> Duration {
        self.interval + JITTER_ALLOWANCE + SCHEDULING_SLACK + poweroff
    }
}

/// Half a second, or half the heartbeat timeout if that is longer: enough for the shell's hard
/// stop (kill the application's processes, remove its addresses, unmount).
pub fn default_stop_margin(timeout: Duration) -> Duration {
    Duration::from_millis(500).max(timeout / 2)
}

/// Of an urgent stop's deadline, what the hard part keeps for itself: kill what is left in the
/// application's cgroup, remove its addresses, unmount its filesystems.
pub const URGENT_RESERVE: Duration = Duration::from_millis(300);

/// Between SIGTERM and SIGKILL in an urgent stop: the processes had their chance in the stop
/// script, so they get only a moment to exit cleanly.
pub const URGENT_KILL_GRACE: Duration = Duration::from_millis(100);

/// How an urgent stop spends its deadline (the stop margin, when a node must give up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UrgentStopBudget {
    /// How long the stop script and the resource agents' stops may run before they are cut.
    pub graceful: Duration,
    /// Between SIGTERM and SIGKILL for whatever is left afterwards.
    pub kill_grace: Duration,
}

/// The budget of an urgent stop that must be over by `deadline`. The argument of the module
/// (the survivor waits for the loser's stop deadline) holds only if the loser has released
/// everything by then, so the graceful part gets the deadline minus [`URGENT_RESERVE`], the
/// time the hard part (kill, remove addresses, unmount) needs, and is cut short after. A
/// deadline shorter than the reserve leaves no graceful part at all.
pub fn urgent_stop_budget(deadline: Duration) -> UrgentStopBudget {
    UrgentStopBudget {
        graceful: deadline.saturating_sub(URGENT_RESERVE),
        kill_grace: URGENT_KILL_GRACE,
    }
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
        assert_eq!(t.takeover_delay(), Duration::ZERO);
    }

    #[test]
    fn the_lease_floor_leaves_three_renewal_attempts_before_the_stop_deadline() {
        for (interval, timeout, floor) in [(200, 1000, 2600), (20, 100, 800)] {
            let t =
                SafetyTiming::new(Duration::from_millis(interval), Duration::from_millis(timeout));
            assert_eq!(t.lease_floor(), Duration::from_millis(floor));
            let lease = t.with_lease(t.lease_floor()).lease.expect("lease");
            let sent = Time::ZERO;
            let deadline = lease.held_until(sent) - lease.stop_margin;
            let third_answer = sent + lease.renew_after + lease.answer_timeout * 3;
            assert!(third_answer <= deadline, "{timeout}: {third_answer:?} > {deadline:?}");
        }
    }

    #[test]
    fn fast_profile_keeps_a_real_stop_deadline() {
        let t = SafetyTiming::new(Duration::from_millis(20), Duration::from_millis(100));
        assert_eq!(t.stop_margin, Duration::from_millis(500));
        assert_eq!(t.takeover_delay(), Duration::from_millis(100 + 100 + 50 + 500 + 100));
    }

    #[test]
    fn the_fence_race_unit_covers_the_detection_skew_and_the_peers_power_off() {
        let default = SafetyTiming::new(Duration::from_millis(200), Duration::from_secs(1));
        let unit = default.fence_race_unit(Duration::from_secs(2));
        assert_eq!(unit, Duration::from_millis(200 + 100 + 100 + 2000));
        // Worst case: the loser declares the winner down first, the winner interval + jitter
        // later; the winner decides within the slack and its fence has powered the loser off
        // `poweroff` after that, no later than the loser's wait ends.
        let loser_declares = Time::ZERO;
        let winner_declares = loser_declares + default.interval + JITTER_ALLOWANCE;
        let loser_is_off = winner_declares + SCHEDULING_SLACK + Duration::from_secs(2);
        assert!(loser_is_off <= loser_declares + unit);
        let fast = SafetyTiming::new(Duration::from_millis(20), Duration::from_millis(100));
        assert_eq!(
            fast.fence_race_unit(Duration::from_millis(100)),
            Duration::from_millis(20 + 100 + 100 + 100)
        );
    }

    #[test]
    fn an_urgent_stop_keeps_room_for_the_hard_part_within_its_deadline() {
        let budget = urgent_stop_budget(Duration::from_millis(500));
        assert_eq!(budget.graceful, Duration::from_millis(200));
        assert_eq!(budget.kill_grace, Duration::from_millis(100));
        assert!(budget.graceful + budget.kill_grace < Duration::from_millis(500));
        // Every profile's stop margin leaves a graceful part.
        let fast = SafetyTiming::new(Duration::from_millis(20), Duration::from_millis(100));
        assert!(!urgent_stop_budget(fast.stop_margin).graceful.is_zero());
    }

    #[test]
    fn a_deadline_shorter_than_the_reserve_leaves_no_graceful_part() {
        let budget = urgent_stop_budget(Duration::from_millis(200));
        assert_eq!(budget.graceful, Duration::ZERO);
        assert_eq!(budget.kill_grace, URGENT_KILL_GRACE);
    }
}
