//! The timing argument of docs/safety.md, as code: from the heartbeat timing, the stop deadline
//! and the lease, how long a survivor waits before starting a silent peer's applications.
//!
//! Two nodes that lose each other notice it at different moments: each declares the other down
//! `timeout` after the last heartbeat it heard. On a clean cut the last heartbeats differ by one
//! `interval` plus the delivery jitter, but on a lossy network this node may have stopped
//! hearing the peer long before the peer stopped hearing it. From the moment this node takes
//! the peer over (the guard cleared it: at the declaration when the probe ahead found the peer
//! silent, crate::guard) every heartbeat it sends carries the "taking over" notice, and a peer
//! that hears one stops; so a peer that does not stop for the notice heard its last heartbeat
//! from this node before that moment, and declares this node down at the latest one `timeout`
//! (plus jitter) after it. The simulator found this (loss, then a cut). The delay therefore
//! counts from when the notice begins, not from the declaration. An isolated
//! peer has decided so by then too: it has no known-connection reply from after the cut, and
//! waits for one only until its newest is `timeout` old (crate::membership), which is no later.
//! It then needs its stop deadline, after which the shell has killed what the stop scripts
//! left. The survivor waits at least that sum, so the loser has always stopped before the
//! survivor starts.
//! A fenced peer holds nothing, so no wait is needed after a successful fence.
//!
//! **With an arbitrator the lease replaces the takeover delay.** Only the lease holder runs
//! applications, and it holds the lease ahead of time, not only after losing its peer: it
//! renews it every heartbeat `interval` (`renew_after`) after each granted request was *sent*,
//! and counts it as held until `sent + lease - drift` (the arbitrator's expiry, `arrival +
//! lease` on its own clock, is never earlier; `drift` = 2 % of the lease covers clock rates).
//! Its stop deadline is `stop_margin` before that, so everything is released before the lease
//! can run out at the arbitrator. The arbitrator grants the other node the lease only once it
//! has run out (leases are never released early), so a grant proves the former holder holds
//! nothing: the survivor starts at once. A request unanswered within one interval (the
//! lease's answer timeout) is given up and the next one sent at once, so the lease must leave
//! room for three renewals, the last answered within the answer timeout, before the stop
//! deadline: `lease - drift >= stop_margin + 3 x renew_after + answer_timeout`
//! ([`SafetyTiming::lease_floor`]).
//!
//! **The stop margin is the hard stop, not a graceful one.** What makes two owners is a
//! process still serving or an address still answering; a node that must give up kills the
//! application's cgroup and removes its addresses, which takes milliseconds
//! ([`HARD_STOP_RESERVE`] allows 100 ms). The margin is 30 % of the heartbeat timeout, kept
//! between 100 ms and 500 ms ([`default_stop_margin`]): a node that can be scheduled within a
//! heartbeat timeout can be scheduled within a third of it. Whatever the margin leaves beyond
//! the hard part goes to the stop scripts ([`urgent_stop_budget`]).

use std::time::Duration;

use crate::guard::LeaseTiming;
use crate::membership::MembershipConfig;
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
            freshness: MembershipConfig::default_freshness(timeout),
            stop_margin: default_stop_margin(timeout),
            lease: None,
        }
    }

    /// With an arbitrator granting leases of `lease`.
    pub fn with_lease(mut self, lease: Duration) -> SafetyTiming {
        self.lease = Some(LeaseTiming {
            lease,
            answer_timeout: self.lease_answer_timeout(),
            stop_margin: self.stop_margin,
            renew_after: self.renew_after(),
        });
        self
    }

    /// How long after sending a granted request the holder renews: one heartbeat interval.
    pub fn renew_after(&self) -> Duration {
        self.interval
    }

    /// How long a lease request waits for the arbitrator's answer before the next is sent: one
    /// heartbeat interval (a LAN that carries a heartbeat every interval carries an answer).
    pub fn lease_answer_timeout(&self) -> Duration {
        self.interval
    }

    /// The shortest lease that leaves three renewals before the holder's stop deadline:
    /// `(stop margin + 3 x renew_after + answer timeout) / 0.98`, rounded up to 10 ms. A
    /// shorter lease is still safe but makes the holder stop whenever two renewals are lost.
    pub fn lease_floor(&self) -> Duration {
        let need = self.stop_margin + self.renew_after() * 3 + self.lease_answer_timeout();
        let ms = (need.as_millis() as u64 * 50).div_ceil(49);
        Duration::from_millis(ms.div_ceil(10) * 10)
    }

    /// How long an isolation wait or a lease answer may take. Not a term of the takeover delay:
    /// the isolation wait ends by the time the newest reply is a timeout old, which the skew
    /// term covers (crate::membership).
    pub fn decision_time(&self) -> Duration {
        let lease = self.lease.map(|l| l.answer_timeout).unwrap_or_default();
        self.freshness.max(lease)
    }

    /// How long after the guard let it take a silent peer over (and the "taking over" notice
    /// began) a node waits before starting that peer's applications. None with an arbitrator:
    /// the grant is the proof.
    pub fn takeover_delay(&self) -> Duration {
        if self.lease.is_some() {
            return Duration::ZERO;
        }
        self.unprotected_takeover_delay()
    }

    /// The takeover delay without an arbitrator: the detection skew (`timeout` plus jitter),
    /// by which the isolated peer has also decided, then its stop margin and the slack.
    pub fn unprotected_takeover_delay(&self) -> Duration {
        self.timeout + JITTER_ALLOWANCE + self.stop_margin + SCHEDULING_SLACK
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
        self.fence_race(poweroff).unit()
    }

    /// The fence race of a node whose own fence device takes `poweroff`: its unit, and the
    /// shorter wait when it knows when its own heartbeats leave ([`FenceRace::wait`]).
    pub fn fence_race(&self, poweroff: Duration) -> FenceRace {
        FenceRace {
            interval: self.interval,
            margin: self.fence_race_jitter() + SCHEDULING_SLACK.min(self.interval) + poweroff,
            lateness: BEAT_LATENESS.min(self.interval / 4),
        }
    }

    /// The delivery jitter and the deciding slack the fence race counts on: the allowances of
    /// the takeover delay ([`JITTER_ALLOWANCE`], [`SCHEDULING_SLACK`]), or one heartbeat
    /// interval each if that is shorter. A cluster on the fast profile trusts its LAN to carry
    /// and its nodes to act on a heartbeat every 20 ms; the race only decides whether both
    /// nodes end up off (availability), so it may count on that where the takeover delay,
    /// which guards against two owners, does not.
    pub fn fence_race_jitter(&self) -> Duration {
        JITTER_ALLOWANCE.min(self.interval)
    }
}

/// How late a heartbeat may leave after its instant on the sender's grid (clhbd2 runs with
/// realtime priority and locked memory, woken by a timerfd) and still count as on time in the
/// fence race's phase ([`FenceRace::wait`]); at most a quarter interval.
pub const BEAT_LATENESS: Duration = Duration::from_millis(20);

/// Without an arbitrator, how long the node that is not favoured waits before fencing its
/// silent peer ([`SafetyTiming::fence_race`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FenceRace {
    /// The heartbeat interval: the most two nodes' last heartbeats heard differ by, when
    /// nothing is known of when this node sends.
    pub interval: Duration,
    /// The rest of the unit: the delivery latency and deciding slack the race counts on
    /// ([`SafetyTiming::fence_race_jitter`], [`SCHEDULING_SLACK`] capped at the interval) and
    /// how long this node's own fence device takes to power it off.
    pub margin: Duration,
    /// How late the peer's heartbeats may leave after their instant ([`BEAT_LATENESS`]).
    pub lateness: Duration,
}

impl FenceRace {
    /// The wait when nothing is known of this node's beats:
    /// [`SafetyTiming::fence_race_unit`].
    pub fn unit(&self) -> Duration {
        self.interval + self.margin
    }

    /// The wait before fencing a peer last heard at `heard` (on any link; the verdict one
    /// heartbeat timeout after that, or later), when this node's heartbeats leave on `grid`:
    /// the unit's `interval` becomes `lateness + grid.phase_after(heard + lateness)`, at most
    /// the interval. The unit whenever either is unknown, or the grid is not of this interval.
    ///
    /// Why: the cut came before the peer's next frame would have been heard, less than one
    /// `interval` (plus how late that frame may have left, `lateness`) after `heard`. Of this
    /// node's frames the peer can therefore have heard only those sent before
    /// `heard + lateness + interval`, and the last grid point before that is the first at or
    /// after `heard + lateness`. The peer heard this node last by then, plus the delivery
    /// latency, and declares it down at most that much after this node declares the peer down
    /// (each one timeout after its last frame heard). The phase is fixed for a pair of boots
    /// (each node's grid runs on its own CLOCK_MONOTONIC) and anywhere in [0, interval): on
    /// average the wait is nearly half an interval shorter. Skews beyond that (a frame of the
    /// peer's lost just before the cut, a beat later than `lateness`) can make both nodes
    /// fence, as with the unit: both off, never both running.
    pub fn wait(&self, grid: Option<HeartbeatGrid>, heard: Option<Time>) -> Duration {
        match (grid, heard) {
            (Some(grid), Some(heard)) if grid.interval == self.interval => {
                let phase = self.lateness + grid.phase_after(heard + self.lateness);
                phase.min(self.interval) + self.margin
            }
            _ => self.unit(),
        }
    }
}

/// When this node's heartbeats leave: at `origin + k × interval` for every whole `k` (clhbd2
/// sends on a timerfd aligned to multiples of the interval on CLOCK_MONOTONIC, and the
/// simulator at each node's own phase), as the fence race's wait uses it ([`FenceRace::wait`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HeartbeatGrid {
    /// One of the instants a heartbeat leaves.
    pub origin: Time,
    /// The heartbeat interval (the timing's `interval`).
    pub interval: Duration,
}

impl HeartbeatGrid {
    /// How long after `at` the next heartbeat leaves (zero if one leaves at `at`): less than
    /// one interval.
    pub fn phase_after(&self, at: Time) -> Duration {
        let interval = self.interval.as_nanos().max(1) as i128;
        let offset =
            self.origin.since_origin().as_nanos() as i128 - at.since_origin().as_nanos() as i128;
        Duration::from_nanos(offset.rem_euclid(interval) as u64)
    }
}

/// 30 % of the heartbeat timeout, between 100 ms and 500 ms (default profile 300 ms, fast
/// 100 ms): the hard stop ([`HARD_STOP_RESERVE`]) with room to spare, and what is left of it
/// for the stop scripts.
pub fn default_stop_margin(timeout: Duration) -> Duration {
    (timeout * 3 / 10).clamp(Duration::from_millis(100), Duration::from_millis(500))
}

/// Of an urgent stop's deadline, what the hard part keeps for itself: kill what is left in the
/// application's cgroup and remove its addresses (a cgroup kill and a netlink request each,
/// milliseconds on an idle node; unmounting follows and is not what makes two owners).
pub const HARD_STOP_RESERVE: Duration = Duration::from_millis(100);

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
/// everything by then, so [`HARD_STOP_RESERVE`] is kept for the hard part (kill, remove
/// addresses); of the rest, half (at most [`URGENT_KILL_GRACE`]) is the grace between SIGTERM
/// and SIGKILL and the remainder the stop scripts', cut short after. A deadline no longer than
/// the reserve leaves neither: everything is killed at once.
pub fn urgent_stop_budget(deadline: Duration) -> UrgentStopBudget {
    let spare = deadline.saturating_sub(HARD_STOP_RESERVE);
    let kill_grace = URGENT_KILL_GRACE.min(spare / 2);
    UrgentStopBudget { graceful: spare - kill_grace, kill_grace }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(interval: u64, timeout: u64) -> SafetyTiming {
        SafetyTiming::new(Duration::from_millis(interval), Duration::from_millis(timeout))
    }

    #[test]
    fn the_fence_race_waits_for_this_nodes_next_beat_after_the_last_one_heard() {
        let t = profile(200, 1000);
        let poweroff = Duration::from_millis(100);
        let grid = HeartbeatGrid { origin: Time::from_millis(7_030), interval: t.interval };
        // The grid's points near 10 s: 9.830, 10.030, 10.230 s.
        assert_eq!(grid.phase_after(Time::from_millis(10_000)), Duration::from_millis(30));
        assert_eq!(grid.phase_after(Time::from_millis(10_030)), Duration::ZERO);
        assert_eq!(grid.phase_after(Time::from_millis(10_031)), Duration::from_millis(199));
        assert_eq!(grid.phase_after(Time::from_millis(3)), Duration::from_millis(27));
        let race = t.fence_race(poweroff);
        assert_eq!(race.unit(), Duration::from_millis(200 + 100 + 100 + 100));
        assert_eq!(t.fence_race_unit(poweroff), race.unit());
        let ms = Duration::from_millis;
        // Heard at 10 s: the peer may have heard this node's beat of 10.030 s (and that of
        // 10.230 s only if its own next beat left more than 30 ms late): 20 ms of lateness
        // and 10 ms more to this node's next beat after that.
        let heard = Some(Time::from_millis(10_000));
        assert_eq!(race.wait(Some(grid), heard), ms(20 + 10) + race.margin);
        assert_eq!(
            race.wait(Some(grid), Some(Time::from_millis(10_035))),
            ms(20 + 175) + race.margin
        );
        // Heard 15 ms before a beat of this node's: that beat and the next one within the
        // lateness may have been heard; never more than the unit.
        assert_eq!(race.wait(Some(grid), Some(Time::from_millis(10_015))), race.unit());
        // Nothing known, or a grid of another interval: the unit.
        assert_eq!(race.wait(None, heard), race.unit());
        assert_eq!(race.wait(Some(grid), None), race.unit());
        let other = HeartbeatGrid { interval: ms(250), ..grid };
        assert_eq!(race.wait(Some(other), heard), race.unit());
        // The fast profile allows 5 ms of lateness (a quarter interval).
        assert_eq!(profile(20, 100).fence_race(poweroff).lateness, ms(5));
    }

    #[test]
    fn default_profile_waits_for_the_skew_and_the_stop() {
        let t = profile(200, 1000);
        assert_eq!(t.stop_margin, Duration::from_millis(300));
        assert_eq!(t.takeover_delay(), Duration::from_millis(1000 + 100 + 300 + 100));
        let t = t.with_lease(Duration::from_secs(4));
        assert_eq!(t.decision_time(), Duration::from_millis(500));
        assert_eq!(t.takeover_delay(), Duration::ZERO);
    }

    #[test]
    fn the_lease_floor_leaves_three_renewals_before_the_stop_deadline() {
        for (interval, timeout, floor) in [(200, 1000, 1130), (20, 100, 190), (100, 500, 570)] {
            let t = profile(interval, timeout);
            assert_eq!(t.lease_floor(), Duration::from_millis(floor), "{interval}/{timeout}");
            let lease = t.with_lease(t.lease_floor()).lease.expect("lease");
            assert_eq!(lease.renew_after, Duration::from_millis(interval));
            let sent = Time::ZERO;
            let deadline = lease.held_until(sent) - lease.stop_margin;
            let third_answer = sent + lease.renew_after * 3 + lease.answer_timeout;
            assert!(third_answer <= deadline, "{timeout}: {third_answer:?} > {deadline:?}");
        }
    }

    #[test]
    fn the_stop_margin_scales_with_the_timeout_within_bounds() {
        assert_eq!(default_stop_margin(Duration::from_millis(100)), Duration::from_millis(100));
        assert_eq!(default_stop_margin(Duration::from_millis(1000)), Duration::from_millis(300));
        assert_eq!(default_stop_margin(Duration::from_secs(5)), Duration::from_millis(500));
        assert_eq!(default_stop_margin(Duration::from_millis(10)), HARD_STOP_RESERVE);
    }

    #[test]
    fn fast_profile_keeps_a_real_stop_deadline() {
        let t = profile(20, 100);
        assert_eq!(t.stop_margin, Duration::from_millis(100));
        assert_eq!(t.takeover_delay(), Duration::from_millis(100 + 100 + 100 + 100));
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
        let winner_declares = loser_declares + default.interval + default.fence_race_jitter();
        let loser_is_off = winner_declares + SCHEDULING_SLACK + Duration::from_secs(2);
        assert!(loser_is_off <= loser_declares + unit);
        // The fast profile counts on an interval of jitter and of slack, not 100 ms each.
        let fast = SafetyTiming::new(Duration::from_millis(20), Duration::from_millis(100));
        assert_eq!(fast.fence_race_jitter(), Duration::from_millis(20));
        assert_eq!(
            fast.fence_race_unit(Duration::from_millis(100)),
            Duration::from_millis(20 + 20 + 20 + 100)
        );
    }

    #[test]
    fn an_urgent_stop_keeps_room_for_the_hard_part_within_its_deadline() {
        let budget = urgent_stop_budget(Duration::from_millis(500));
        assert_eq!(budget.graceful, Duration::from_millis(300));
        assert_eq!(budget.kill_grace, Duration::from_millis(100));
        let default = urgent_stop_budget(profile(200, 1000).stop_margin);
        assert_eq!(default.graceful, Duration::from_millis(100));
        assert_eq!(default.kill_grace, Duration::from_millis(100));
        for ms in [0, 50, 100, 150, 300, 500, 2000] {
            let deadline = Duration::from_millis(ms);
            let b = urgent_stop_budget(deadline);
            assert!(
                b.graceful + b.kill_grace + HARD_STOP_RESERVE <= deadline.max(HARD_STOP_RESERVE)
            );
        }
    }

    #[test]
    fn a_deadline_no_longer_than_the_reserve_kills_at_once() {
        let budget = urgent_stop_budget(profile(20, 100).stop_margin);
        assert_eq!(budget.graceful, Duration::ZERO);
        assert_eq!(budget.kill_grace, Duration::ZERO);
    }
}
