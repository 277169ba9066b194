//! LSB init scripts (`/etc/init.d/<name> start|stop|status`) as application resources.
//!
//! `start` and `stop` succeed with exit 0 (LSB: also when the service already is in that
//! state) and run like start scripts, in the application's cgroup. `status` is the monitor; its
//! exit codes are defined by the LSB core specification, "Init Script Actions".

use std::fmt;

/// What `status` reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LsbStatus {
    /// 0: running.
    Running,
    /// 1: dead, but its pid file exists.
    DeadPidFile,
    /// 2: dead, but its lock file exists.
    DeadLockFile,
    /// 3: not running.
    NotRunning,
    /// 4: unknown.
    Unknown,
    /// Anything else (150–199 are script-specific, the rest reserved).
    Other(i32),
}

impl LsbStatus {
    /// The meaning of a `status` exit code.
    pub fn from_code(code: i32) -> LsbStatus {
        match code {
            0 => LsbStatus::Running,
            1 => LsbStatus::DeadPidFile,
            2 => LsbStatus::DeadLockFile,
            3 => LsbStatus::NotRunning,
            4 => LsbStatus::Unknown,
            other => LsbStatus::Other(other),
        }
    }

    /// The exit code.
    pub fn code(self) -> i32 {
        match self {
            LsbStatus::Running => 0,
            LsbStatus::DeadPidFile => 1,
            LsbStatus::DeadLockFile => 2,
            LsbStatus::NotRunning => 3,
            LsbStatus::Unknown => 4,
            LsbStatus::Other(code) => code,
        }
    }

    /// Whether the service runs.
    pub fn is_running(self) -> bool {
        self == LsbStatus::Running
    }

    /// What it means, in a few words.
    pub fn meaning(self) -> &'static str {
        match self {
            LsbStatus::Running => "running",
            LsbStatus::DeadPidFile => "dead, pid file exists",
            LsbStatus::DeadLockFile => "dead, lock file exists",
            LsbStatus::NotRunning => "not running",
            LsbStatus::Unknown => "status unknown",
            LsbStatus::Other(_) => "unknown exit code",
        }
    }
}

impl fmt::Display for LsbStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "status {} ({})", self.code(), self.meaning())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_map_exactly() {
        assert_eq!(LsbStatus::from_code(0), LsbStatus::Running);
        assert_eq!(LsbStatus::from_code(1), LsbStatus::DeadPidFile);
        assert_eq!(LsbStatus::from_code(2), LsbStatus::DeadLockFile);
        assert_eq!(LsbStatus::from_code(3), LsbStatus::NotRunning);
        assert_eq!(LsbStatus::from_code(4), LsbStatus::Unknown);
        assert_eq!(LsbStatus::from_code(150), LsbStatus::Other(150));
        for code in 0..=5 {
            assert_eq!(LsbStatus::from_code(code).code(), code);
        }
        assert!(LsbStatus::Running.is_running() && !LsbStatus::NotRunning.is_running());
        assert_eq!(LsbStatus::NotRunning.to_string(), "status 3 (not running)");
    }
}
