//! CLOCK_MONOTONIC as a plain number, the one clock the daemons of a node share: a daemon stamps
//! what it observed, and cldaemon, reading the same clock, knows how long ago that was.

use std::time::Duration;

use nix::time::{clock_gettime, ClockId};

/// Time since an arbitrary fixed point (boot, on Linux), the same in every process of the host.
pub fn monotonic() -> Duration {
    // CLOCK_MONOTONIC always exists on Linux; a failure would leave time standing still, which
    // only ever makes an observation look older than it is (the safe side).
    clock_gettime(ClockId::CLOCK_MONOTONIC).map(Duration::from).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_monotonic_clock_moves_forward() {
        let a = super::monotonic();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(super::monotonic() > a);
    }
}
