//! The probe before a service address is added (duplicate address detection: RFC 5227 ARP
//! probes, RFC 4862 DAD): how long it listens, scaled to the heartbeat profile, and when a
//! peer-alive probe of the same address by the takeover guard makes it unnecessary.
//!
//! The probe is the last check before an address goes up: if anyone answers for it, another
//! node (or a stray host) holds it, and the application must not start here. It sits on the
//! failover path, so its length is a fixed cost of every failover. Two rules keep it short
//! without weakening it:
//!
//! - **It scales with the heartbeat profile** ([`probe_plan`]): three probes, one heartbeat
//!   interval apart, between 20 ms and 70 ms (default profile 200 ms / 1 s: 3 × 70 ms =
//!   210 ms, 300 ms before the lease work; fast profile 20 ms / 100 ms: 3 × 20 ms = 60 ms). A
//!   LAN answers ARP in well under a millisecond, even on a node under CPU stress (the kernel
//!   answers, not a process), so 70 ms per probe is still two orders of margin. A cluster that trusts
//!   its LAN to carry a heartbeat every interval trusts it to carry an ARP reply in one.
//! - **It is skipped after a fresh guard probe** ([`must_probe`]): the guard's peer-alive probe
//!   probes every application address of the silent peer with the same frames. An address it
//!   found silent less than one heartbeat timeout before the start (measured from when that
//!   probe sent its last frame, [`ProbePlan::last_frame`]) needs no second probe. Older silence proves nothing about now: a peer that
//!   resumes (a paused machine thawed, a link healed) answers for its addresses at once but is
//!   heard on the heartbeat links only up to an interval later, and the probe at the start is
//!   what catches it in that gap. So the guard probes again where the start would otherwise
//!   wait on stale silence, timed to end as the wait does: at the end of the take-over delay
//!   without an arbitrator (docs/safety.md), as the lease is expected to be granted, or as a
//!   delayed fence begins; the start after it is spared its probe. The guard probes with the
//!   same plan ([`probe_plan`]), so both listen equally long.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use crate::time::Time;

/// Probes sent before an address is added. Three ride out the loss of one frame.
pub const PROBE_COUNT: u32 = 3;

/// The shortest time between probes: below this, scheduling on a loaded node could delay a
/// reply past the end of the probe.
pub const MIN_PROBE_INTERVAL: Duration = Duration::from_millis(20);

/// The longest time between probes (RFC 5227 asks for 1–2 s, far too slow for a failover; a
/// LAN answers in well under a millisecond).
pub const MAX_PROBE_INTERVAL: Duration = Duration::from_millis(70);

/// How a probe is spread: `count` probes `interval` apart, listening `interval` after the last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbePlan {
    /// Probes sent.
    pub count: u32,
    /// Between probes, and the wait after the last one.
    pub interval: Duration,
}

impl ProbePlan {
    /// How long the probe takes when nobody answers.
    pub fn total(&self) -> Duration {
        self.interval * self.count
    }

    /// When a probe begun at `began` sent its last frame, as planned: nobody answering any
    /// frame means the address was free at least then (an address taken after the last frame
    /// is not asked about). Frames go out no earlier than planned, so this is never late.
    pub fn last_frame(&self, began: Time) -> Time {
        began + self.interval * self.count.saturating_sub(1)
    }
}

/// The probe for a cluster whose heartbeat interval is `heartbeat_interval`: [`PROBE_COUNT`]
/// probes, one interval apart, the interval kept between [`MIN_PROBE_INTERVAL`] and
/// [`MAX_PROBE_INTERVAL`].
pub fn probe_plan(heartbeat_interval: Duration) -> ProbePlan {
    ProbePlan {
        count: PROBE_COUNT,
        interval: heartbeat_interval.clamp(MIN_PROBE_INTERVAL, MAX_PROBE_INTERVAL),
    }
}

/// Addresses a probe found silent (nobody answered, nobody else probed), each with the moment
/// the last frame of that probe ([`ProbePlan::last_frame`]). An address found answered is forgotten.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SilentAddresses {
    since: BTreeMap<IpAddr, Time>,
}

impl SilentAddresses {
    /// Nothing known.
    pub fn new() -> SilentAddresses {
        SilentAddresses::default()
    }

    /// A probe whose last frame went out at `began` heard nothing for `address`. An older record is replaced; a
    /// newer one kept (results may arrive out of order).
    pub fn silent(&mut self, address: IpAddr, began: Time) {
        let at = self.since.entry(address).or_insert(began);
        *at = (*at).max(began);
    }

    /// Someone answered for `address` (or the probe could not tell): no silence is known.
    pub fn answered(&mut self, address: IpAddr) {
        self.since.remove(&address);
    }

    /// When the latest probe that found `address` silent sent its last frame.
    pub fn silent_at(&self, address: IpAddr) -> Option<Time> {
        self.since.get(&address).copied()
    }
}

/// Whether `address` must be probed before it is added at `now`: yes unless `known` says a
/// probe begun within `fresh_for` (the heartbeat timeout) before `now` found it silent. A
/// record from the future (a clock mix-up) does not count.
pub fn must_probe(
    known: &SilentAddresses,
    address: IpAddr,
    now: Time,
    fresh_for: Duration,
) -> bool {
    match known.silent_at(address) {
        Some(began) if began <= now => now.since(began) > fresh_for,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timing::SafetyTiming;

    fn addr(last: u8) -> IpAddr {
        IpAddr::from([10, 10, 0, last])
    }

    #[test]
    fn the_probe_scales_with_the_heartbeat_profile() {
        let default = probe_plan(Duration::from_millis(200));
        assert_eq!(default, ProbePlan { count: 3, interval: Duration::from_millis(70) });
        assert_eq!(default.total(), Duration::from_millis(210));
        let fast = probe_plan(Duration::from_millis(20));
        assert_eq!(fast.total(), Duration::from_millis(60));
        // Never below the floor, never above the ceiling, always three probes.
        assert_eq!(probe_plan(Duration::from_millis(1)).interval, MIN_PROBE_INTERVAL);
        assert_eq!(probe_plan(Duration::from_secs(5)).interval, MAX_PROBE_INTERVAL);
        assert_eq!(probe_plan(Duration::ZERO).count, PROBE_COUNT);
        assert!(fast.total() < default.total());
    }

    #[test]
    fn silence_counts_from_the_last_frame() {
        let plan = probe_plan(Duration::from_millis(20));
        assert_eq!(plan.last_frame(Time::from_millis(1000)), Time::from_millis(1040));
        let default = probe_plan(Duration::from_millis(200));
        assert_eq!(default.last_frame(Time::from_millis(1000)), Time::from_millis(1140));
    }

    #[test]
    fn an_address_never_probed_is_probed() {
        let known = SilentAddresses::new();
        assert!(must_probe(&known, addr(100), Time::from_millis(5_000), Duration::from_secs(1)));
    }

    #[test]
    fn a_fresh_silence_skips_the_probe_and_a_stale_one_does_not() {
        let mut known = SilentAddresses::new();
        known.silent(addr(100), Time::from_millis(10_000));
        let timeout = Duration::from_secs(1);
        assert!(!must_probe(&known, addr(100), Time::from_millis(10_000), timeout));
        assert!(!must_probe(&known, addr(100), Time::from_millis(11_000), timeout));
        assert!(must_probe(&known, addr(100), Time::from_millis(11_001), timeout));
        // Another address is not covered.
        assert!(must_probe(&known, addr(101), Time::from_millis(10_100), timeout));
    }

    #[test]
    fn an_answer_cancels_the_silence() {
        let mut known = SilentAddresses::new();
        known.silent(addr(100), Time::from_millis(10_000));
        known.answered(addr(100));
        assert!(must_probe(&known, addr(100), Time::from_millis(10_100), Duration::from_secs(1)));
    }

    #[test]
    fn a_late_result_does_not_make_a_silence_older_or_newer_than_it_is() {
        let mut known = SilentAddresses::new();
        known.silent(addr(100), Time::from_millis(10_000));
        known.silent(addr(100), Time::from_millis(9_000));
        assert_eq!(known.silent_at(addr(100)), Some(Time::from_millis(10_000)));
        // A record from the future (clock mix-up) is not trusted.
        assert!(must_probe(&known, addr(100), Time::from_millis(9_500), Duration::from_secs(1)));
    }

    #[test]
    fn the_first_probe_is_stale_at_the_end_of_the_delay_and_the_second_is_fresh() {
        // The guard probes when the peer is declared down, and again in the last probe's time
        // of the take-over delay (crate::guard): the first is too old for the start, the
        // second spares it its probe.
        for (interval, timeout) in [(200, 1_000), (20, 100)] {
            let (interval, timeout) =
                (Duration::from_millis(interval), Duration::from_millis(timeout));
            let timing = SafetyTiming::new(interval, timeout);
            let plan = probe_plan(interval);
            let down = Time::from_millis(50_000);
            let start = down + timing.takeover_delay();
            let mut known = SilentAddresses::new();
            known.silent(addr(100), plan.last_frame(down));
            assert!(must_probe(&known, addr(100), start, timeout));
            known.silent(addr(100), plan.last_frame(start - plan.total()));
            assert!(!must_probe(&known, addr(100), start, timeout));
        }
    }
}
