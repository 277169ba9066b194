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

/// How long from `now` (a [`monotonic`] reading) to the next multiple of `period` on
/// CLOCK_MONOTONIC (zero at a multiple): clhbd2 sends its heartbeats at those multiples, so
/// cldaemon knows when this node's beats leave without being told.
pub fn until_multiple(now: Duration, period: Duration) -> Duration {
    let period = period.as_nanos().max(1);
    let rest = now.as_nanos() % period;
    Duration::from_nanos(((period - rest) % period) as u64)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn the_next_multiple_of_a_period_is_less_than_a_period_away() {
        let ms = Duration::from_millis;
        assert_eq!(super::until_multiple(ms(1_030), ms(200)), ms(170));
        assert_eq!(super::until_multiple(ms(1_200), ms(200)), Duration::ZERO);
        assert_eq!(super::until_multiple(ms(1_199), ms(200)), ms(1));
    }

    #[test]
    fn the_monotonic_clock_moves_forward() {
        let a = super::monotonic();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(super::monotonic() > a);
    }
}
