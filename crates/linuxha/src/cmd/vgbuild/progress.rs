//! Following a DRBD synchronisation to its end: DRBD's state read once a second from the node
//! that sends, the progress worked out by cl-core (`storage::resync_progress`), shown as a bar
//! redrawn in place on a terminal, or as a plain line every 5 seconds otherwise.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use cl_core::storage::{resync_progress, ConnectionState, DiskState, ResyncProgress, VolumeState};

use super::nodes::Nodes;
use super::plan::Follow;
use crate::fail::{Failure, Outcome};

/// Between two samples.
const SAMPLE: Duration = Duration::from_secs(1);
/// Between two plain lines (not a terminal).
const PLAIN_EVERY: Duration = Duration::from_secs(5);
/// How long the two copies may stay unconnected before the command gives up following.
const CONNECT_PATIENCE: Duration = Duration::from_secs(120);
/// Width of the bar, in characters.
const BAR: usize = 20;

/// Successive out-of-sync samples of one resource.
#[derive(Debug, Default)]
pub struct Tracker {
    earlier: Option<(u64, u64)>,
}

impl Tracker {
    /// The progress at `now_ms` (milliseconds on any steady clock) from a state.
    pub fn sample(&mut self, now_ms: u64, state: &VolumeState) -> ResyncProgress {
        let (then, before) = self.earlier.unwrap_or((now_ms, state.out_of_sync_kib));
        self.earlier = Some((now_ms, state.out_of_sync_kib));
        resync_progress(state.size_kib, state.out_of_sync_kib, before, now_ms - then.min(now_ms))
    }
}

/// Whether a sync is over: connected, both copies UpToDate.
pub fn synced(state: &VolumeState) -> bool {
    state.connection == ConnectionState::Connected
        && state.disk == DiskState::UpToDate
        && state.peer_disk == DiskState::UpToDate
}

/// `1 h 3 min`, `2 min 5 s`, `3 s`.
pub fn duration(secs: u64) -> String {
    match secs {
        s if s >= 3600 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        s if s >= 60 => format!("{} min {} s", s / 60, s % 60),
        s => format!("{s} s"),
    }
}

fn rate_and_left(p: &ResyncProgress) -> (String, String) {
    let rate = match p.rate_kib {
        0 => "-".to_string(),
        r => format!("{}/s", crate::cmd::storage::kib(r)),
    };
    let left = p.eta_secs.map(|s| format!("{} left", duration(s))).unwrap_or_default();
    (rate, left)
}

/// The line redrawn on a terminal: `webdata-www [#########...........] 48.2%  31.0 MiB/s  3 s left`.
pub fn bar_line(resource: &str, p: &ResyncProgress) -> String {
    let filled = ((p.percent.clamp(0.0, 100.0) / 100.0) * BAR as f64).floor() as usize;
    let bar = format!("{}{}", "#".repeat(filled), ".".repeat(BAR - filled));
    let (rate, left) = rate_and_left(p);
    format!("{resource} [{bar}] {:.1}%  {rate}  {left}", p.percent).trim_end().to_string()
}

/// The line printed every 5 s elsewhere: `webdata-www: 48.2% in sync, 31.0 MiB/s, 3 s left`.
pub fn plain_line(resource: &str, p: &ResyncProgress) -> String {
    let (rate, left) = rate_and_left(p);
    let mut line = format!("{resource}: {:.1}% in sync", p.percent);
    if p.rate_kib > 0 {
        line += &format!(", {rate}");
    }
    if !left.is_empty() {
        line += &format!(", {left}");
    }
    line
}

/// Follows each synchronisation until both copies are UpToDate.
pub fn follow(nodes: &Nodes, follows: &[Follow]) -> Outcome<()> {
    let command = nodes.command;
    let terminal = std::io::stdout().is_terminal();
    let start = Instant::now();
    for f in follows {
        println!("{command}: {}: synchronising {}'s copy to {}", f.resource, f.from, f.to);
        let mut tracker = Tracker::default();
        let mut last_plain: Option<Instant> = None;
        let mut unconnected_since: Option<Instant> = None;
        loop {
            let states = nodes.state(&f.from)?;
            let Some(state) = states.get(&f.resource) else {
                return Err(Failure::runtime(format!(
                    "{command}: {} is not up on {}; see clstat and the kernel log (dmesg)",
                    f.resource, f.from
                )));
            };
            if synced(state) {
                if terminal {
                    println!("\r{}\x1b[K", bar_line(&f.resource, &done()));
                }
                println!("{command}: {}: both copies are UpToDate", f.resource);
                break;
            }
            if state.connection == ConnectionState::Connected {
                unconnected_since = None;
            } else {
                let since = *unconnected_since.get_or_insert_with(Instant::now);
                if since.elapsed() > CONNECT_PATIENCE {
                    return Err(Failure::runtime(format!(
                        "{command}: {} on {} has not been connected to {} for {} s ({}): check the replication network and its port, then follow it with clstat",
                        f.resource, f.from, f.to, CONNECT_PATIENCE.as_secs(), state.connection
                    )));
                }
            }
            let now_ms = start.elapsed().as_millis() as u64;
            let p = tracker.sample(now_ms, state);
            if terminal {
                print!("\r{}\x1b[K", bar_line(&f.resource, &p));
                let _ = std::io::stdout().flush();
            } else if last_plain.is_none_or(|t| t.elapsed() >= PLAIN_EVERY) {
                println!("{command}: {}", plain_line(&f.resource, &p));
                last_plain = Some(Instant::now());
            }
            std::thread::sleep(SAMPLE);
        }
    }
    Ok(())
}

fn done() -> ResyncProgress {
    ResyncProgress { percent: 100.0, rate_kib: 0, eta_secs: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_and_the_plain_line() {
        let p = ResyncProgress { percent: 48.2, rate_kib: 31 * 1024, eta_secs: Some(3) };
        assert_eq!(
            bar_line("webdata-www", &p),
            "webdata-www [#########...........] 48.2%  31.0 MiB/s  3 s left"
        );
        assert_eq!(
            plain_line("webdata-www", &p),
            "webdata-www: 48.2% in sync, 31.0 MiB/s, 3 s left"
        );
        let first = ResyncProgress { percent: 0.0, rate_kib: 0, eta_secs: None };
        assert_eq!(bar_line("r", &first), "r [....................] 0.0%  -");
        assert_eq!(plain_line("r", &first), "r: 0.0% in sync");
        assert_eq!(bar_line("r", &done()), "r [####################] 100.0%  -");
        let slow = ResyncProgress { percent: 1.0, rate_kib: 500, eta_secs: Some(3725) };
        assert_eq!(plain_line("r", &slow), "r: 1.0% in sync, 500 KiB/s, 1 h 2 min left");
        assert_eq!(duration(125), "2 min 5 s");
    }

    #[test]
    fn the_tracker_measures_the_rate_between_samples() {
        let mut t = Tracker::default();
        let mut s = VolumeState { size_kib: 1000, out_of_sync_kib: 1000, ..VolumeState::default() };
        let first = t.sample(0, &s);
        assert_eq!((first.percent, first.rate_kib, first.eta_secs), (0.0, 0, None));
        s.out_of_sync_kib = 600;
        let second = t.sample(2000, &s);
        assert_eq!((second.percent, second.rate_kib, second.eta_secs), (40.0, 200, Some(3)));
        let done_state = VolumeState {
            connection: ConnectionState::Connected,
            disk: DiskState::UpToDate,
            peer_disk: DiskState::UpToDate,
            ..s.clone()
        };
        assert!(synced(&done_state) && !synced(&s));
    }
}
