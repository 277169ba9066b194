//! The processes that keep a filesystem busy, and killing them.
//!
//! A process holds a filesystem when its cwd, its root, one of its open files or one of its
//! mapped files lives on it (same device number). Signals are sent through a pidfd whose identity
//! is checked against the process start time seen by the scan, so a pid recycled in between is
//! never signalled.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

/// Time between SIGTERM and SIGKILL (capped by the caller to a third of its timeout).
pub(crate) const TERM_GRACE: Duration = Duration::from_secs(2);

/// A process holding the filesystem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Holder {
    pub pid: i32,
    pub comm: String,
    /// Start time (clock ticks after boot, /proc/PID/stat field 22): with the pid, the identity.
    pub start: u64,
}

/// All processes holding the filesystem with device number `dev`.
pub(crate) fn scan(dev: u64) -> Vec<Holder> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut found = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        // Read the identity first: if the pid is recycled during the scan, the new process
        // gets a different start time and the signal is not sent.
        let Some(start) = start_time(pid) else { continue };
        if holds(pid, dev) {
            found.push(Holder { pid, comm: comm(pid), start });
        }
    }
    found
}

fn holds(pid: i32, dev: u64) -> bool {
    let base = format!("/proc/{pid}");
    let on_dev = |path: &str| std::fs::metadata(path).is_ok_and(|m| m.dev() == dev);
    if on_dev(&format!("{base}/cwd")) || on_dev(&format!("{base}/root")) {
        return true;
    }
    if let Ok(fds) = std::fs::read_dir(format!("{base}/fd")) {
        for fd in fds.flatten() {
            if std::fs::metadata(fd.path()).is_ok_and(|m| m.dev() == dev) {
                return true;
            }
        }
    }
    std::fs::read_to_string(format!("{base}/maps"))
        .is_ok_and(|maps| maps.lines().any(|line| maps_line_dev(line) == Some(dev)))
}

/// The device of a file mapping in a /proc/PID/maps line (`None` for anonymous mappings).
fn maps_line_dev(line: &str) -> Option<u64> {
    let mut f = line.split_whitespace();
    let (maj, min) = f.nth(3)?.split_once(':')?;
    if f.next()? == "0" {
        return None;
    }
    Some(libc::makedev(u32::from_str_radix(maj, 16).ok()?, u32::from_str_radix(min, 16).ok()?))
}

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim_end_matches('\n').to_owned())
        .unwrap_or_else(|_| "?".into())
}

fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the comm, which is in parentheses and may contain anything: field 3 is the
    // first, so field 22 is the 20th.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// A process being killed.
struct Tracked {
    comm: String,
    /// `None` on kernels without pidfds (signals go by pid then).
    pidfd: Option<OwnedFd>,
    termed_at: Instant,
    killed: bool,
}

/// Sends SIGTERM to new holders and SIGKILL to those that outlive the grace period.
pub(crate) struct Killer {
    grace: Duration,
    me: i32,
    tracked: BTreeMap<i32, Tracked>,
}

impl Killer {
    pub fn new(grace: Duration) -> Killer {
        let me = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
        Killer { grace, me, tracked: BTreeMap::new() }
    }

    /// One round with the holders just scanned. This process and pid 1 are never signalled.
    pub fn round(&mut self, holders: &[Holder]) {
        for h in holders {
            if h.pid == self.me || h.pid == 1 {
                continue;
            }
            match self.tracked.get_mut(&h.pid) {
                None => {
                    let pidfd = match pidfd_open(h.pid) {
                        Ok(fd) => fd,
                        Err(_) => continue, // Gone already.
                    };
                    if start_time(h.pid) != Some(h.start) {
                        continue; // Recycled pid: not the holder.
                    }
                    signal(pidfd.as_ref(), h.pid, libc::SIGTERM);
                    let t = Tracked {
                        comm: h.comm.clone(),
                        pidfd,
                        termed_at: Instant::now(),
                        killed: false,
                    };
                    self.tracked.insert(h.pid, t);
                }
                Some(t) if !t.killed && t.termed_at.elapsed() >= self.grace => {
                    // Without a pidfd, check the identity again before SIGKILL.
                    if t.pidfd.is_some() || start_time(h.pid) == Some(h.start) {
                        signal(t.pidfd.as_ref(), h.pid, libc::SIGKILL);
                        t.killed = true;
                    }
                }
                Some(_) => {}
            }
        }
    }

    /// Everyone signalled (pid, comm), and the pids that got SIGKILL.
    pub fn signalled(&self) -> (Vec<(i32, String)>, Vec<i32>) {
        let all = self.tracked.iter().map(|(pid, t)| (*pid, t.comm.clone())).collect();
        let killed = self.tracked.iter().filter(|(_, t)| t.killed).map(|(pid, _)| *pid).collect();
        (all, killed)
    }
}

/// A pidfd for `pid`; `Ok(None)` if the kernel has no pidfd_open (Linux < 5.3).
fn pidfd_open(pid: i32) -> io::Result<Option<OwnedFd>> {
    // SAFETY: pidfd_open(2) takes a pid and flags, no pointers.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENOSYS) { Ok(None) } else { Err(e) };
    }
    let fd = i32::try_from(fd).map_err(io::Error::other)?;
    // SAFETY: a fresh descriptor returned by the kernel that nothing else owns.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Sends `sig` through the pidfd, or by pid without one. Errors (the process is gone) are
/// ignored: the next scan tells.
fn signal(pidfd: Option<&OwnedFd>, pid: i32, sig: libc::c_int) {
    match pidfd {
        // SAFETY: pidfd_send_signal(2) with a valid pidfd and a NULL siginfo.
        Some(fd) => unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            );
        },
        // SAFETY: kill(2) takes no pointers.
        None => unsafe {
            libc::kill(pid, sig);
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines() {
        let file = "7f00-7f10 r--p 00000000 07:03 1234    /srv/app/lib.so";
        assert_eq!(maps_line_dev(file), Some(libc::makedev(7, 3)));
        let big = "7f00-7f10 r--p 00000000 fd:1a 99 /x";
        assert_eq!(maps_line_dev(big), Some(libc::makedev(0xfd, 0x1a)));
        assert_eq!(maps_line_dev("7f00-7f10 rw-p 00000000 00:00 0 "), None);
        assert_eq!(maps_line_dev("7ffd-7ffe rw-p 00000000 00:00 0   [stack]"), None);
    }

    #[test]
    fn own_start_time_and_self_is_never_signalled() {
        let me = i32::try_from(std::process::id()).unwrap_or(0);
        let start = start_time(me).expect("own start time");
        let mut k = Killer::new(Duration::ZERO);
        k.round(&[Holder { pid: me, comm: "me".into(), start }]);
        k.round(&[Holder { pid: me, comm: "me".into(), start }]);
        assert_eq!(k.signalled(), (vec![], vec![]));
    }
}
