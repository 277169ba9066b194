//! Realtime scheduling and memory locking for the heartbeat daemons.
//!
//! A loaded node must keep beating: SCHED_FIFO keeps clhbd ahead of ordinary work on the CPU,
//! and locked memory keeps its pages from being swapped out. Both need privileges (root, or
//! CAP_SYS_NICE / CAP_IPC_LOCK, or suitable RLIMIT_RTPRIO / RLIMIT_MEMLOCK) and may be refused
//! inside containers, so failures are returned as text for the caller to log and carry on.

use std::io;

/// Switches the calling thread to SCHED_FIFO at `priority` (1..=99 on Linux).
///
/// Linux applies this to the calling thread only (pid 0); threads created afterwards inherit
/// it, so call it before starting the tokio runtime to cover the worker threads too.
pub fn try_realtime(priority: i32) -> Result<(), String> {
    // SAFETY: both calls only read their integer argument and have no memory effects.
    let (min, max) = unsafe {
        (
            libc::sched_get_priority_min(libc::SCHED_FIFO),
            libc::sched_get_priority_max(libc::SCHED_FIFO),
        )
    };
    if min < 0 || max < 0 {
        return Err(format!(
            "cannot query SCHED_FIFO priority range: {}",
            io::Error::last_os_error()
        ));
    }
    if !(min..=max).contains(&priority) {
        return Err(format!(
            "realtime priority {priority} is outside SCHED_FIFO range {min}..={max}"
        ));
    }
    let param = libc::sched_param { sched_priority: priority };
    // SAFETY: `param` is a valid, initialised sched_param that outlives the call; pid 0 means
    // the calling thread.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if rc != 0 {
        return Err(format!(
            "cannot set SCHED_FIFO priority {priority}: {}",
            io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Locks the pages of the process into RAM as they are used: mlockall(MCL_CURRENT |
/// MCL_FUTURE | MCL_ONFAULT), falling back to MCL_CURRENT | MCL_FUTURE on a kernel without
/// MCL_ONFAULT (before 4.4).
///
/// MCL_ONFAULT locks each page when it is first touched instead of faulting the whole mapping
/// in: the heartbeat daemons touch a small part of the multicall binary, and locking all of it
/// (10 MB, every command's code) made each of them 11 MiB resident for nothing. What the beat
/// loop runs is touched in its first beats and stays locked from then on.
pub fn try_lock_memory() -> Result<(), String> {
    // SAFETY: mlockall takes only flags and does not touch memory we own.
    let rc = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE | libc::MCL_ONFAULT) };
    if rc == 0 {
        return Ok(());
    }
    // SAFETY: as above.
    let rc = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) };
    if rc != 0 {
        return Err(format!("cannot lock memory (mlockall): {}", io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_priority_is_a_readable_error() {
        let err = try_realtime(1000).expect_err("1000 is never a valid priority");
        assert!(err.contains("1000"), "{err}");
    }

    #[test]
    fn realtime_returns_ok_or_readable_error() {
        // Run in a throwaway thread: SCHED_FIFO sticks to the calling thread and would
        // otherwise leak into the rest of the test harness.
        let result = std::thread::spawn(|| try_realtime(1)).join().expect("thread did not panic");
        match result {
            Ok(()) => {}
            Err(e) => assert!(e.contains("SCHED_FIFO"), "{e}"),
        }
    }

    #[test]
    fn lock_memory_returns_ok_or_readable_error() {
        match try_lock_memory() {
            Ok(()) => {
                // Undo it so the rest of the test process is not pinned in RAM.
                // SAFETY: munlockall has no arguments and no memory-safety preconditions.
                unsafe { libc::munlockall() };
            }
            Err(e) => assert!(e.contains("mlockall"), "{e}"),
        }
    }
}
