//! Frame epochs from a persisted counter, and connection nonces.
//!
//! Every [`cl_wire::Sender`] needs an epoch that no earlier run on this node used and that is
//! higher than all of them: receivers refuse frames of an older epoch as replays of an earlier
//! run. Epochs used to be the wall clock in nanoseconds, so a clock stepped back made a restarted
//! daemon's frames look older than its previous run's, and receivers dropped them until they
//! restarted themselves. Now they come from `var/lib/cluster/epoch`, the highest epoch handed
//! out, fsynced before any of them is used: the clock is read once, to seed the counter when the
//! file does not exist yet (so the first epochs are above those of the clock-based scheme).
//!
//! A process reserves a block of [`BLOCK`] epochs with one write, under an exclusive `flock`,
//! and hands them out in memory; a crash wastes the rest of the block, never reuses it.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _, Result};
use cl_paths::Paths;

/// Epochs reserved per write of the counter file.
pub const BLOCK: u64 = 1024;

/// The counter file of this process and what is left of its reserved block.
struct Source {
    file: PathBuf,
    next: u64,
    end: u64,
}

static SOURCE: Mutex<Option<Source>> = Mutex::new(None);

/// Use `paths`' counter file for this process's epochs (call once the root is known; before
/// that, [`next`] uses the root from the environment).
pub fn init(paths: &Paths) {
    let file = paths.epoch_file();
    let mut source = SOURCE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if source.as_ref().is_none_or(|s| s.file != file) {
        *source = Some(Source { file, next: 0, end: 0 });
    }
}

/// A new epoch, higher than every epoch this node handed out before, in any process.
pub fn next() -> Result<u64> {
    let mut guard = SOURCE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let source = guard.get_or_insert_with(|| Source {
        file: Paths::from_env(None).epoch_file(),
        next: 0,
        end: 0,
    });
    if source.next >= source.end {
        let (first, end) = reserve(&source.file, BLOCK)?;
        source.next = first;
        source.end = end;
    }
    let epoch = source.next;
    source.next += 1;
    Ok(epoch)
}

/// [`next`], or the clock when the counter cannot be used (logged as an error): for orderings
/// that must not stop the daemon, such as application announcements.
pub fn next_or_clock(what: &str) -> u64 {
    next().unwrap_or_else(|e| {
        tracing::error!(
            "{what}: {e:#}; using the clock instead, which a stepped clock can confuse"
        );
        seed()
    })
}

/// A random nonce for one connection's [`cl_wire::Hello`]; never 0.
pub fn nonce() -> Result<u64> {
    let mut bytes = [0u8; 8];
    loop {
        // SAFETY: getrandom(2) writes at most `bytes.len()` bytes into the buffer we own.
        let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
        if n != bytes.len() as isize {
            bail!("cannot read random bytes: {}", std::io::Error::last_os_error());
        }
        let nonce = u64::from_ne_bytes(bytes);
        if nonce != 0 {
            return Ok(nonce);
        }
    }
}

/// Reserve `count` epochs in `file`: the range `first..end` handed out to this process alone.
fn reserve(file: &Path, count: u64) -> Result<(u64, u64)> {
    let dir = file.parent().ok_or_else(|| anyhow!("{} has no directory", file.display()))?;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
    let lock_path = dir.join("epoch.lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    cl_sys::process::flock_exclusive(&lock, true)
        .with_context(|| format!("cannot lock {}", lock_path.display()))?;
    let highest = match std::fs::read_to_string(file) {
        Ok(text) => text.trim().parse::<u64>().map_err(|_| {
            anyhow!(
                "the epoch counter {} is damaged (not a number); remove it to start a new \
                 count from the clock",
                file.display()
            )
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => seed(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
    };
    let end = highest
        .checked_add(count)
        .and_then(|end| end.checked_add(1))
        .ok_or_else(|| anyhow!("the epoch counter {} is exhausted", file.display()))?;
    // The new highest is on disk (fsynced) before any epoch of the block is used.
    cl_paths::write_atomic(file, format!("{}\n", end - 1).as_bytes())
        .with_context(|| format!("cannot write the epoch counter {}", file.display()))?;
    Ok((highest + 1, end))
}

/// The first count: the clock in nanoseconds, above any epoch of the clock-based scheme.
fn seed() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_grow_across_reservations_and_restarts_whatever_the_clock() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("var/lib/cluster/epoch");
        let (first, end) = reserve(&file, 4).expect("reserved");
        assert_eq!(end - first, 4);
        // A "restart": the next reservation starts above the whole earlier block, used or not.
        let (second, _) = reserve(&file, 4).expect("reserved");
        assert_eq!(second, end);
        // The clock plays no part once the counter exists: set it far below the clock.
        std::fs::write(&file, "7\n").expect("written");
        assert_eq!(reserve(&file, 4).expect("reserved"), (8, 12));
        assert_eq!(std::fs::read_to_string(&file).expect("read").trim(), "11");
    }

    #[test]
    fn a_missing_counter_is_seeded_from_the_clock() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("epoch");
        let before = seed();
        let (first, _) = reserve(&file, 1).expect("reserved");
        assert!(first > before);
    }

    #[test]
    fn a_damaged_counter_is_an_error_that_says_what_to_do() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("epoch");
        std::fs::write(&file, "garbage").expect("written");
        let err = reserve(&file, 1).expect_err("refused").to_string();
        assert!(err.contains("damaged") && err.contains("remove it"), "{err}");
    }

    #[test]
    fn concurrent_reservations_never_overlap() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("epoch");
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let file = file.clone();
                std::thread::spawn(move || reserve(&file, 10).expect("reserved"))
            })
            .collect();
        let mut blocks: Vec<(u64, u64)> =
            handles.into_iter().map(|h| h.join().expect("thread")).collect();
        blocks.sort();
        for pair in blocks.windows(2) {
            assert!(pair[0].1 <= pair[1].0, "{blocks:?}");
        }
    }

    #[test]
    fn nonces_are_not_zero_and_differ() {
        let a = nonce().expect("nonce");
        let b = nonce().expect("nonce");
        assert!(a != 0 && b != 0 && a != b);
    }
}
