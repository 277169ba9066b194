//! The shell of cl_core::relay for clhbd and clnetd: their clock, and sleeping until a relay
//! is due.

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

/// Resolves when `due` (a relay time) has come; never while none is due.
pub async fn until(due: Option<Time>) {
    match due {
        Some(due) => {
            let wait = due.since(now());
            tokio::time::sleep_until(tokio::time::Instant::now() + wait).await
        }
        None => std::future::pending().await,
    }
}
