//! Dropping the page-table entries of clean, read-only file pages a daemon mapped and no longer
//! runs (start-up code: argument parsing, configuration, logging set-up).
//!
//! A page fault on a file mapping maps the whole page-cache folio around the faulting page
//! (fault-around), so a daemon's RSS is every stretch of the binary and libc it ever touched,
//! counted once per process although the pages are shared. `MADV_DONTNEED` on those mappings
//! only removes this process's page-table entries: the pages stay in the page cache, and what
//! the daemon still runs faults back in (a minor fault) at its next use. RSS then shows the
//! steady working set; PSS, the shared pages divided among their users, barely moves.

use std::io;
use std::time::Duration;

/// What one [`trim_file_pages`] call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrimReport {
    /// Mappings whose resident pages were dropped.
    pub mappings: usize,
    /// Resident KiB those mappings had before (their RSS in `/proc/self/smaps`).
    pub dropped_kib: u64,
    /// Mappings the kernel refused (counted, not fatal: the next round tries again).
    pub refused: usize,
}

/// Why a round did nothing.
#[derive(Debug, thiserror::Error)]
pub enum TrimError {
    /// More than one thread: another thread could change a mapping between reading
    /// `/proc/self/smaps` and the `madvise`, which the safety argument rules out.
    #[error("not trimming mapped file pages: {0} threads (needs 1)")]
    Threads(u32),
    /// `/proc/self/smaps` or `/proc/self/status` could not be read.
    #[error("cannot read /proc/self: {0}")]
    Proc(#[from] io::Error),
}

/// One mapping worth trimming, from `/proc/self/smaps`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Candidate {
    start: usize,
    end: usize,
    rss_kib: u64,
    /// Locked with `MLOCK_ONFAULT` (mlockall(MCL_ONFAULT) in clhbd and clhbd2).
    locked_on_fault: bool,
}

/// One mapping's header line and the fields that decide whether it may be trimmed.
#[derive(Default)]
struct Block {
    start: usize,
    end: usize,
    /// Read-only (no `w`), private (`p`), backed by a file path (not `[vdso]`, `[heap]`…).
    clean_file: bool,
    rss_kib: u64,
    anonymous_kib: u64,
    flags: Vec<String>,
}

impl Block {
    fn header(line: &str) -> Option<Block> {
        let mut words = line.split_whitespace();
        let (range, perms) = (words.next()?, words.next()?);
        let (start, end) = range.split_once('-')?;
        let (start, end) =
            (usize::from_str_radix(start, 16).ok()?, usize::from_str_radix(end, 16).ok()?);
        let _offset = words.next()?;
        let _device = words.next()?;
        let inode: u64 = words.next()?.parse().ok()?;
        let path = words.next().unwrap_or("");
        let perms = perms.as_bytes();
        let clean_file = perms.len() == 4
            && perms[1] == b'-'
            && perms[3] == b'p'
            && inode != 0
            && path.starts_with('/');
        Some(Block { start, end, clean_file, ..Block::default() })
    }

    /// A candidate only if no page of it is anonymous: a read-only private mapping can still
    /// hold private copies (the relocated `.data.rel.ro` after RELRO's mprotect, a debugger's
    /// breakpoints), and dropping those would lose data instead of refaulting it.
    fn candidate(&self) -> Option<Candidate> {
        let has = |f: &str| self.flags.iter().any(|g| g == f);
        let locked = has("lo");
        let locked_on_fault = locked && has("lf");
        // Plain mlock promises every page resident: leave those alone. PFN/IO/hugetlb
        // mappings are not page-cache pages.
        let special = has("pf") || has("io") || has("ht") || (locked && !locked_on_fault);
        (self.clean_file && self.anonymous_kib == 0 && self.rss_kib > 0 && !special).then_some(
            Candidate { start: self.start, end: self.end, rss_kib: self.rss_kib, locked_on_fault },
        )
    }
}

/// The mappings of a `/proc/<pid>/smaps` text that may be trimmed.
fn candidates(smaps: &str) -> Vec<Candidate> {
    let mut out = Vec::new();
    let mut current: Option<Block> = None;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if !first.ends_with(':') {
            if let Some(block) = current.take().and_then(|b| b.candidate()) {
                out.push(block);
            }
            current = Block::header(line);
            continue;
        }
        let Some(block) = current.as_mut() else { continue };
        let kib = || line.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok());
        match first {
            "Rss:" => block.rss_kib = kib().unwrap_or(0),
            // Unknown counts as anonymous: never trim what could not be read.
            "Anonymous:" => block.anonymous_kib = kib().unwrap_or(u64::MAX),
            "VmFlags:" => {
                block.flags = line.split_whitespace().skip(1).map(str::to_owned).collect()
            }
            _ => {}
        }
    }
    if let Some(block) = current.and_then(|b| b.candidate()) {
        out.push(block);
    }
    out
}

/// The number of threads of this process.
fn threads() -> io::Result<u32> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    Ok(status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(u32::MAX))
}

/// Drops this process's page-table entries of its clean read-only private file mappings (the
/// binary's text and read-only data, libc, ld.so). Refuses unless the process is
/// single-threaded.
pub fn trim_file_pages() -> Result<TrimReport, TrimError> {
    let threads = threads()?;
    if threads != 1 {
        return Err(TrimError::Threads(threads));
    }
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut report = TrimReport::default();
    for c in candidates(&smaps) {
        if drop_range(&c) {
            report.mappings += 1;
            report.dropped_kib += c.rss_kib;
        } else {
            report.refused += 1;
        }
    }
    Ok(report)
}

/// `madvise(MADV_DONTNEED)` on one candidate; true when the kernel did it.
fn drop_range(c: &Candidate) -> bool {
    let (addr, len) = (c.start as *mut libc::c_void, c.end - c.start);
    // SAFETY: [start, end) is a whole mapping of this process, read from /proc/self/smaps
    // while the process had a single thread (checked by the caller; this code maps and unmaps
    // nothing in between), so it is still that mapping. It is private, file-backed, without
    // write permission and without anonymous pages: every resident page is a clean page-cache
    // page, and the next access faults the same contents back from the page cache (or the
    // file). No Rust object's memory changes, only which pages are mapped.
    let advise = |advice| unsafe { libc::madvise(addr, len, advice) } == 0;
    if !c.locked_on_fault {
        return advise(libc::MADV_DONTNEED);
    }
    // Locked mappings refuse MADV_DONTNEED. MADV_DONTNEED_LOCKED (Linux 5.18) drops them as
    // they are; the pages refault into the same MLOCK_ONFAULT mapping and are locked again.
    if advise(libc::MADV_DONTNEED_LOCKED) {
        return true;
    }
    // Older kernels: unlock the range, drop it, lock it again on fault. The range is unlocked
    // only for the two system calls between.
    // SAFETY: munlock and mlock2 change only the lock state of this process's own mapping
    // [start, end) (see above); no memory contents change.
    unsafe {
        if libc::munlock(addr, len) != 0 {
            return false;
        }
        let dropped = advise(libc::MADV_DONTNEED);
        let relocked = libc::mlock2(addr, len, libc::MLOCK_ONFAULT) == 0;
        dropped && relocked
    }
}

/// Trims once `after` start-up and then every `every`, for the life of the runtime; a round
/// refused (another thread alive) is tried again 10 s later. Logs the first round at info, the
/// others at debug.
pub fn spawn_periodic(after: Duration, every: Duration) {
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        let mut first = true;
        loop {
            match trim_file_pages() {
                Ok(r) if first => tracing::info!(
                    mappings = r.mappings,
                    kib = r.dropped_kib,
                    refused = r.refused,
                    "dropped mapped start-up pages of the binary and libraries"
                ),
                Ok(r) => tracing::debug!(
                    mappings = r.mappings,
                    kib = r.dropped_kib,
                    refused = r.refused,
                    "dropped mapped file pages"
                ),
                Err(e) => {
                    tracing::debug!("{e}");
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    continue;
                }
            }
            first = false;
            tokio::time::sleep(every).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0c0000000-55d0c0400000 r--p 00000000 fd:01 1234 /usr/bin/linuxha
Rss:                1024 kB
Anonymous:             0 kB
VmFlags: rd mr mw me sd
55d0c0400000-55d0c0800000 r-xp 00400000 fd:01 1234 /usr/bin/linuxha
Rss:                4096 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me sd
55d0c0800000-55d0c0900000 r--p 00800000 fd:01 1234 /usr/bin/linuxha
Rss:                 352 kB
Anonymous:           352 kB
VmFlags: rd mr mw me ac sd
55d0c0900000-55d0c0910000 rw-p 00900000 fd:01 1234 /usr/bin/linuxha
Rss:                  64 kB
Anonymous:            16 kB
VmFlags: rd wr mr mw me ac sd
55d0c1000000-55d0c1100000 rw-p 00000000 00:00 0 [heap]
Rss:                 200 kB
Anonymous:           200 kB
VmFlags: rd wr mr mw me ac sd
7f0000000000-7f0000100000 r-xp 00028000 fd:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                1000 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me lo lf sd
7f0000200000-7f0000300000 r-xp 00028000 fd:01 98 /usr/lib/locked.so
Rss:                1000 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me lo sd
7f0000400000-7f0000500000 r--p 00000000 fd:01 97 /usr/lib/untouched.so
Rss:                   0 kB
Anonymous:             0 kB
VmFlags: rd mr mw me sd
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0 [vdso]
Rss:                   8 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me de sd
";

    #[test]
    fn only_clean_read_only_private_file_mappings_are_candidates() {
        let found = candidates(SMAPS);
        let starts: Vec<usize> = found.iter().map(|c| c.start).collect();
        assert_eq!(starts, vec![0x55d0c0000000, 0x55d0c0400000, 0x7f0000000000], "{found:?}");
        assert!(found[2].locked_on_fault);
        assert!(!found[0].locked_on_fault);
        assert_eq!(found[1].rss_kib, 4096);
    }

    #[test]
    fn an_unreadable_anonymous_count_is_never_trimmed() {
        let text = "\
55d0c0000000-55d0c0400000 r-xp 00000000 fd:01 1234 /usr/bin/linuxha
Rss:                1024 kB
Anonymous:           ??? kB
VmFlags: rd ex mr mw me sd
";
        assert!(candidates(text).is_empty());
    }

    #[test]
    fn a_multi_threaded_process_is_refused() {
        // libtest runs this on a thread of its own beside the main thread.
        let helper = std::thread::spawn(|| std::thread::sleep(Duration::from_millis(200)));
        let result = trim_file_pages();
        helper.join().expect("helper thread");
        assert!(matches!(result, Err(TrimError::Threads(n)) if n >= 2), "{result:?}");
    }
}
