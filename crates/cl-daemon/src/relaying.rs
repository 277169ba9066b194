//! The shell of cl_core::relay for clhbd and clnetd: their clock, shared with cldaemon.

use std::time::Duration;

use cl_core::time::Time;

/// Now on CLOCK_MONOTONIC as the relay's time (shared with cldaemon, which converts back).
pub fn now() -> Time {
    Time::ZERO + cl_sys::clock::monotonic()
}

/// The monotonic stamp of a relayed observation.
pub fn stamp(at: Time) -> Duration {
    at.since_origin()
}

/// How long ago, on CLOCK_MONOTONIC, another daemon made an observation it stamped `at`.
pub fn age(at: Duration) -> Duration {
    cl_sys::clock::monotonic().saturating_sub(at)
}
