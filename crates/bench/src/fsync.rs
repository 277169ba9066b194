//! The helpers the replication benchmark runs inside a guest (`/mnt/host/bench …`): the
//! synchronous write probe and the wall clock. Small on purpose: the guest has glibc and this
//! binary over 9p, nothing else of ours.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// What `bench fsync-probe` prints: one JSON line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FsyncReport {
    /// The file written.
    pub path: String,
    /// Bytes per write.
    pub size: usize,
    /// Latency of each write + fsync, microseconds, in order.
    pub latencies_us: Vec<f64>,
    /// Wall time of the whole loop, seconds.
    pub total_s: f64,
}

/// Appends `count` blocks of `size` bytes to a new file at `path`, each followed by fsync,
/// timing each pair; prints the [`FsyncReport`] as one JSON line and removes the file.
pub fn probe(path: &Path, count: usize, size: usize) -> Result<()> {
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    let block = vec![0xa5u8; size];
    let mut latencies_us = Vec::with_capacity(count);
    let start = Instant::now();
    for i in 0..count {
        let t = Instant::now();
        file.write_all(&block).with_context(|| format!("write {i} to {}", path.display()))?;
        file.sync_all().with_context(|| format!("fsync {i} of {}", path.display()))?;
        latencies_us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let total_s = start.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
    let report = FsyncReport { path: path.display().to_string(), size, latencies_us, total_s };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// Prints this machine's wall clock, nanoseconds since the Unix epoch.
pub fn clock() -> Result<()> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).context("clock before 1970")?;
    println!("{}", now.as_nanos());
    Ok(())
}

/// The [`FsyncReport`] in a command's output (the last line that is a JSON object; the guest
/// agent interleaves stderr with stdout).
pub fn parse_report(output: &str) -> Result<FsyncReport> {
    let line = output
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('{'))
        .with_context(|| format!("no JSON line in the probe's output: {output:?}"))?;
    serde_json::from_str(line).with_context(|| format!("the probe's JSON: {line:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_last_json_line_among_noise() {
        let out = "warning: something\n{\"path\":\"/a\",\"size\":4096,\"latencies_us\":[1.5,2.0],\"total_s\":0.1}\n";
        let r = parse_report(out).expect("report");
        assert_eq!(r.path, "/a");
        assert_eq!(r.size, 4096);
        assert_eq!(r.latencies_us, vec![1.5, 2.0]);
        assert!(parse_report("no json here").is_err());
        assert!(parse_report("{broken").is_err());
    }

    #[test]
    fn probe_round_trips_through_a_real_file() {
        let dir = std::env::temp_dir().join(format!("bench-fsync-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("f");
        // The probe prints; here only its file handling is checked (it removes the file).
        probe(&path, 3, 512).expect("probe");
        assert!(!path.exists());
        let _ = std::fs::remove_dir(&dir);
    }
}
