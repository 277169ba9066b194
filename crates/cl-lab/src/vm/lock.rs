//! The machine-wide VM lab lock: whoever boots guests holds an exclusive `flock` on
//! [`SHARED_LOCK`], so two sets of TCG guests never share the machine's cores (they are slow
//! and timing-sensitive). `flock /tmp/vmlab.lock <command>` takes the same lock from a shell.
//!
//! A process whose ancestor already holds the lock (`flock /tmp/vmlab.lock linuxha demo …`, or
//! a test that holds it and runs the demo) goes on without waiting: waiting would deadlock.

use std::fs::{self, File};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use anyhow::{Context, Result};

/// The lock file every process that boots VM guests holds.
pub const SHARED_LOCK: &str = "/tmp/vmlab.lock";

/// A held VM lab lock (released on drop); `None` inside: an ancestor holds it for us.
#[derive(Debug)]
pub struct VmLabLock {
    file: Option<File>,
}

impl VmLabLock {
    /// Takes the exclusive lock on `path`, waiting as long as another process holds it;
    /// `waiting` is told once, with who holds it, before the wait begins.
    pub fn acquire(path: &Path, waiting: impl FnOnce(&str)) -> Result<VmLabLock> {
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("opening lock file {}", path.display()))?;
        if flock(&file, true).with_context(|| format!("locking {}", path.display()))? {
            return Ok(VmLabLock { file: Some(file) });
        }
        let holders = holders(&file).unwrap_or_default();
        let ancestors = ancestors();
        if holders.iter().any(|pid| ancestors.contains(pid)) {
            return Ok(VmLabLock { file: None });
        }
        let who = holders
            .iter()
            .map(|pid| format!("pid {pid} ({})", command_line(*pid)))
            .collect::<Vec<_>>()
            .join(", ");
        waiting(if who.is_empty() { "another process" } else { &who });
        flock(&file, false).with_context(|| format!("locking {}", path.display()))?;
        Ok(VmLabLock { file: Some(file) })
    }

    /// Whether an ancestor process holds the lock for this one.
    pub fn held_by_ancestor(&self) -> bool {
        self.file.is_none()
    }
}

/// An exclusive flock(2) on `file`: false when `nonblocking` and another open file holds it.
/// (libc rather than `File::lock`, which needs Rust 1.89: the workspace's MSRV is 1.85.)
pub(crate) fn flock(file: &File, nonblocking: bool) -> std::io::Result<bool> {
    let op = if nonblocking { libc::LOCK_EX | libc::LOCK_NB } else { libc::LOCK_EX };
    loop {
        // SAFETY: flock(2) on a valid open descriptor has no memory-safety preconditions.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(true);
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) if nonblocking => return Ok(false),
            _ => return Err(err),
        }
    }
}

/// The pids holding a `flock` on `file`, per /proc/locks (`FLOCK ADVISORY WRITE <pid>
/// <major>:<minor>:<inode> …`, major and minor in hex).
fn holders(file: &File) -> Result<Vec<u32>> {
    let meta = file.metadata().context("lock file metadata")?;
    let dev = meta.dev();
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let wanted = format!("{major:02x}:{minor:02x}:{}", meta.ino());
    let locks = fs::read_to_string("/proc/locks").context("reading /proc/locks")?;
    Ok(locks
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // `1: FLOCK ADVISORY WRITE 8314 fe:00:5832722 0 EOF`; a waiter adds `->` after `1:`.
            let at = fields.iter().position(|f| *f == "FLOCK")?;
            (fields.get(at - 1) != Some(&"->") && fields.get(at + 4) == Some(&wanted.as_str()))
                .then(|| fields.get(at + 3)?.parse().ok())
                .flatten()
        })
        .collect())
}

/// This process and its ancestors, up to init.
fn ancestors() -> Vec<u32> {
    let mut pids = vec![std::process::id()];
    while let Some(&pid) = pids.last() {
        let parent = fs::read_to_string(format!("/proc/{pid}/status")).ok().and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("PPid:")).and_then(|p| p.trim().parse().ok())
        });
        match parent {
            Some(p) if p > 0 && !pids.contains(&p) => pids.push(p),
            _ => break,
        }
    }
    pids
}

/// `pid`'s command line, for the waiting message.
fn command_line(pid: u32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .split('\0')
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "gone".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_open_of_a_held_lock_sees_this_process_as_holder() -> Result<()> {
        let path = std::env::temp_dir().join(format!("vmlab-lock-test-{}", std::process::id()));
        let first = VmLabLock::acquire(&path, |_| panic!("nobody holds it yet"))?;
        assert!(!first.held_by_ancestor());
        // This process holds it through another open file: treated like an ancestor's lock.
        let second = VmLabLock::acquire(&path, |who| panic!("must not wait for {who}"))?;
        assert!(second.held_by_ancestor());
        let file = File::open(&path)?;
        assert_eq!(holders(&file)?, vec![std::process::id()]);
        drop((first, second));
        fs::remove_file(&path)?;
        Ok(())
    }

    #[test]
    fn ancestors_start_with_this_process() {
        let pids = ancestors();
        assert_eq!(pids.first(), Some(&std::process::id()));
        assert!(pids.len() >= 2, "{pids:?}");
    }
}
