//! Rate-limited logging of rejected input: a flood of forged frames, garbage lines or refused
//! connections must not flood the log (or the disk under it).
//!
//! Each class of rejection is a key (source kind, reason), e.g. (`cldaemon peers`,
//! `bad frame`). The first occurrence of a key is logged; later ones within [`INTERVAL`] are
//! only counted, and [`log_summaries`], called when [`LogLimiter::next_due`] says, writes one
//! summary line per key and interval with the count that was not logged. The number of keys is bounded, so varying reasons cannot grow
//! the table either.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[doc(hidden)]
pub use tracing as __tracing;

/// At most one line per key in this interval.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// Keys beyond this many share one overflow key per source kind.
const MAX_KEYS: usize = 256;

/// The reason under which keys beyond [`MAX_KEYS`] are counted.
const OTHER: &str = "other reasons";

/// One key's state: when its current interval began, and how many were not logged since.
#[derive(Debug, Clone, Copy)]
struct Entry {
    since: Instant,
    suppressed: u64,
}

/// Rejections not logged during an interval, as [`LogLimiter::flush`] reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The source kind.
    pub kind: String,
    /// The reason.
    pub reason: String,
    /// How many were counted but not logged.
    pub suppressed: u64,
}

/// Decides which rejections are logged: first occurrence, then at most one line per interval.
#[derive(Debug)]
pub struct LogLimiter {
    interval: Duration,
    entries: Mutex<BTreeMap<(String, String), Entry>>,
}

impl LogLimiter {
    /// A limiter allowing one line per key and `interval`.
    pub const fn new(interval: Duration) -> Self {
        LogLimiter { interval, entries: Mutex::new(BTreeMap::new()) }
    }

    /// Whether to log one more rejection of (`kind`, `reason`) at `now`: `Some(n)` to log it,
    /// `n` being how many of this key were not logged before it; `None` to only count it.
    pub fn admit(&self, kind: &str, reason: &str, now: Instant) -> Option<u64> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut key = (kind.to_string(), reason.to_string());
        if !entries.contains_key(&key) && entries.len() >= MAX_KEYS {
            key.1 = OTHER.to_string();
        }
        match entries.get_mut(&key) {
            Some(entry) if now.saturating_duration_since(entry.since) >= self.interval => {
                let suppressed = entry.suppressed;
                *entry = Entry { since: now, suppressed: 0 };
                Some(suppressed)
            }
            Some(entry) => {
                entry.suppressed = entry.suppressed.saturating_add(1);
                None
            }
            None => {
                entries.insert(key, Entry { since: now, suppressed: 0 });
                Some(0)
            }
        }
    }

    /// When [`Self::flush`] next has something to do (a key's interval ends); `None` while no
    /// key is counted, so an idle daemon need not wake for the limiter at all.
    pub fn next_due(&self) -> Option<Instant> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.values().map(|e| e.since + self.interval).min()
    }

    /// The keys whose interval ended at `now` with rejections not logged (each starts a new
    /// interval: its summary counts as its line); keys quiet for an interval are forgotten.
    pub fn flush(&self, now: Instant) -> Vec<Summary> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        entries.retain(|(kind, reason), entry| {
            if now.saturating_duration_since(entry.since) < self.interval {
                return true;
            }
            if entry.suppressed == 0 {
                return false;
            }
            out.push(Summary {
                kind: kind.clone(),
                reason: reason.clone(),
                suppressed: entry.suppressed,
            });
            *entry = Entry { since: now, suppressed: 0 };
            true
        });
        out
    }
}

/// The process-wide limiter the daemons log rejected input through.
pub fn global() -> &'static LogLimiter {
    static GLOBAL: LogLimiter = LogLimiter::new(INTERVAL);
    &GLOBAL
}

/// Log the summaries [`global`] has at `now` (one line per key whose interval ended with
/// rejections not logged).
pub fn log_summaries(now: Instant) {
    for s in global().flush(now) {
        tracing::warn!(
            kind = %s.kind,
            reason = %s.reason,
            suppressed = s.suppressed,
            "{} more like this not logged in the last {} s: {} ({})",
            s.suppressed,
            INTERVAL.as_secs(),
            s.kind,
            s.reason
        );
    }
}

/// `tracing::warn!` through the [`global`] limiter, keyed by (`kind`, `reason`) (both `&str`):
/// `warn_limited!("cldaemon peers", "bad frame", peer = %from, "rejected: {e}")`. A line
/// after suppressed ones carries `suppressed=N`.
#[macro_export]
macro_rules! warn_limited {
    ($kind:expr, $reason:expr, $($arg:tt)+) => {
        match $crate::ratelimit::global().admit($kind, $reason, ::std::time::Instant::now()) {
            Some(0) => $crate::ratelimit::__tracing::warn!($($arg)+),
            Some(suppressed) => $crate::ratelimit::__tracing::warn!(suppressed, $($arg)+),
            None => {}
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn first_occurrence_is_logged_then_one_line_per_interval_with_the_count() {
        let limiter = LogLimiter::new(10 * SEC);
        let t0 = Instant::now();
        assert_eq!(limiter.admit("peers", "bad frame", t0), Some(0));
        for i in 1..=1000u32 {
            assert_eq!(limiter.admit("peers", "bad frame", t0 + SEC * i / 200), None);
        }
        // Another reason or another kind is its own key.
        assert_eq!(limiter.admit("peers", "timeout", t0), Some(0));
        assert_eq!(limiter.admit("admin", "bad frame", t0), Some(0));
        // After the interval, the next one is logged with the count of those not logged.
        assert_eq!(limiter.admit("peers", "bad frame", t0 + 10 * SEC), Some(1000));
        assert_eq!(limiter.admit("peers", "bad frame", t0 + 11 * SEC), None);
    }

    #[test]
    fn flush_summarises_suppressed_keys_once_per_interval_and_forgets_quiet_ones() {
        let limiter = LogLimiter::new(10 * SEC);
        let t0 = Instant::now();
        limiter.admit("peers", "bad frame", t0);
        limiter.admit("peers", "bad frame", t0 + SEC);
        limiter.admit("peers", "bad frame", t0 + 2 * SEC);
        limiter.admit("admin", "garbage", t0);
        assert!(limiter.flush(t0 + 5 * SEC).is_empty(), "not before the interval ends");
        let summaries = limiter.flush(t0 + 10 * SEC);
        assert_eq!(
            summaries,
            vec![Summary { kind: "peers".into(), reason: "bad frame".into(), suppressed: 2 }]
        );
        // The summary was this interval's line: the next rejection is only counted…
        assert_eq!(limiter.admit("peers", "bad frame", t0 + 11 * SEC), None);
        // …and the quiet key was forgotten: its next occurrence is logged at once.
        assert_eq!(limiter.admit("admin", "garbage", t0 + 11 * SEC), Some(0));
        assert_eq!(limiter.flush(t0 + 20 * SEC).len(), 1);
        assert!(limiter.flush(t0 + 40 * SEC).is_empty());
    }

    #[test]
    fn next_due_is_the_end_of_the_oldest_interval_and_none_when_idle() {
        let limiter = LogLimiter::new(10 * SEC);
        let t0 = Instant::now();
        assert_eq!(limiter.next_due(), None, "nothing counted: nothing to wake for");
        limiter.admit("peers", "bad frame", t0 + SEC);
        limiter.admit("admin", "garbage", t0 + 3 * SEC);
        assert_eq!(limiter.next_due(), Some(t0 + 11 * SEC));
        limiter.flush(t0 + 20 * SEC);
        assert_eq!(limiter.next_due(), None, "quiet keys are forgotten");
    }

    #[test]
    fn the_number_of_keys_is_bounded() {
        let limiter = LogLimiter::new(10 * SEC);
        let t0 = Instant::now();
        let logged = (0..10_000)
            .filter(|i| limiter.admit("peers", &format!("reason {i}"), t0).is_some())
            .count();
        // MAX_KEYS distinct reasons, then one shared overflow key logged once.
        assert_eq!(logged, MAX_KEYS + 1);
        let entries = limiter.entries.lock().expect("not poisoned").len();
        assert_eq!(entries, MAX_KEYS + 1);
    }
}
