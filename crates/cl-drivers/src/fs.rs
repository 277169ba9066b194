//! An application's filesystems (ARCHITECTURE.md §4): fsck before mount, mount, and an unmount
//! that finds and kills the processes keeping the filesystem busy.
//!
//! Start of an application on this node: [`check`] → [`mount`]; stop: [`unmount`]. All calls are
//! blocking (run them on a blocking task) and take a timeout they keep (see below): the kernel
//! calls (mount(2), umount2(2), the /proc scan) run on a helper thread that is abandoned at the
//! deadline, and fsck runs as a child process group that is killed at the deadline. A mount that completes after its caller gave up is undone by the helper thread, so a
//! [`FsError::Timeout`] from [`mount`] leaves nothing mounted.
//!
//! Choices worth knowing:
//! - **Never a lazy unmount** (`MNT_DETACH`): a detached filesystem stays alive with its holders
//!   while the peer could mount the same data. A busy filesystem whose holders cannot be killed
//!   before the deadline stays mounted and [`unmount`] returns [`FsError::Busy`] with the holders,
//!   so that the application can be marked failed on this node with that reason.
//! - Holders are found by device number: processes whose cwd, root, an open file or a mapped file
//!   lives on the mounted filesystem (`/proc/*/{cwd,root,fd/*,maps}`). They get SIGTERM, then
//!   SIGKILL after a grace period (2 s, at most a third of the timeout). Signals go through a
//!   pidfd opened while the process was seen holding the filesystem, so a recycled pid is never
//!   hit. The calling process itself and pid 1 are never signalled: they are reported.
//! - An image file as device is attached to a loop device with `LO_FLAGS_AUTOCLEAR` (as
//!   `mount -o loop` does): the kernel frees the loop device when the filesystem is unmounted,
//!   even if this process dies or its mount namespace goes away. [`unmount`] waits for that and
//!   detaches it itself if needed. Loop devices given as the device (block devices) are left
//!   alone.
//! - fsck: `e2fsck -p` for ext2/3/4 (exit codes as fsck(8): 0 clean, 1 repaired, 2 repaired and
//!   reboot advised, anything with a bit ≥ 4 set is a failure and the mount must be refused).
//!   **xfs is skipped** with a reason, like `fsck.xfs` does at boot: XFS replays its log at
//!   mount, and `xfs_repair -n` on a filesystem with a dirty log (the normal state after a
//!   failover from a crashed peer) reports spurious corruption, which would refuse a healthy
//!   filesystem. btrfs is skipped too (`btrfs check` is not a boot-time check). Other types run
//!   `fsck.<type> -a` when that tool exists, and are skipped otherwise.
//! - Mount options are split as mount(8) does: the VFS flags (`ro`, `nosuid`, `noatime`, …) become
//!   mount(2) flags, userspace-only options (`defaults`, `noauto`, `nofail`, `_netdev`, `x-*`,
//!   `loop`, …) are dropped, everything else is passed to the filesystem as data. An already
//!   mounted filesystem is not remounted to apply changed options.
//! - The deadline is kept to within a few milliseconds, except that after a successful unmount
//!   the release of a loop device gets up to 200 ms even past it (autoclear is asynchronous; in
//!   practice it takes under 5 ms).
//! - Namespaces: everything is judged from the calling thread's mount namespace
//!   (`/proc/thread-self/mountinfo`), where the helper threads run too.

mod fsck;
mod holders;
mod loopdev;
mod mountinfo;

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use mountinfo::{DeviceId, Survey};

/// One filesystem of an application, with paths already resolved by the caller.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FsSpec {
    /// Block device, or an image file (attached to a loop device to be mounted).
    pub device: PathBuf,
    /// Where it is mounted; created if missing.
    pub mountpoint: PathBuf,
    /// Filesystem type (`ext4`, `xfs`, …).
    pub fstype: String,
    /// Mount options as in fstab (`noatime,nodev`); empty for none.
    pub options: String,
    /// Run fsck before mounting (see [`check`]).
    pub fsck: bool,
}

/// What [`check`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckOutcome {
    /// The checker found nothing to do (exit code 0).
    Clean,
    /// The checker repaired the filesystem (exit code 1); its output says what.
    Repaired {
        /// The checker's output.
        output: String,
    },
    /// The checker repaired the filesystem and advises a reboot (exit code 2 or 3). That advice
    /// is for a mounted root filesystem; for an application's filesystem the mount may proceed.
    RepairedRebootAdvised {
        /// The checker's output.
        output: String,
    },
    /// No check was run; log the reason.
    Skipped {
        /// Why not.
        reason: String,
    },
}

/// What [`unmount`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnmountOutcome {
    /// The filesystem was mounted on its mount point (false: nothing to do).
    pub was_mounted: bool,
    /// Holders that were signalled (SIGTERM, and SIGKILL for those in `sigkilled`): pid, comm.
    pub killed: Vec<(i32, String)>,
    /// The pids among `killed` that outlived SIGTERM and got SIGKILL.
    pub sigkilled: Vec<i32>,
    /// The loop device that was set up for an image file and is now detached.
    pub loop_detached: Option<PathBuf>,
}

/// Why a filesystem operation failed. Every message names the device and, where there is one,
/// the mount point.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The device is missing, or neither a block device nor a regular file.
    #[error("device {}: {reason}", .device.display())]
    Device {
        /// The device as given.
        device: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The mount point could not be created or is not a directory.
    #[error("mount point {} for {}: {source}", .mountpoint.display(), .device.display())]
    Mountpoint {
        /// The device.
        device: PathBuf,
        /// The mount point.
        mountpoint: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The device is mounted somewhere other than its mount point: [`mount`] and [`check`]
    /// refuse, and [`unmount`] reports it, since the data is not released while it is.
    #[error(
        "{} is mounted on {}, which is not its mount point {}",
        .device.display(), paths(.elsewhere), .mountpoint.display()
    )]
    MountedElsewhere {
        /// The device.
        device: PathBuf,
        /// Its configured mount point.
        mountpoint: PathBuf,
        /// Where it is mounted instead.
        elsewhere: Vec<PathBuf>,
    },
    /// Something else is mounted on the mount point (or over this filesystem there).
    #[error(
        "{} has {other} mounted on it, not {}",
        .mountpoint.display(), .device.display()
    )]
    MountpointTaken {
        /// The device.
        device: PathBuf,
        /// The mount point.
        mountpoint: PathBuf,
        /// What is mounted there: source and type.
        other: String,
    },
    /// fsck found errors it could not repair unattended (or could not run properly): do not
    /// mount.
    #[error(
        "fsck of {} (for {}) failed, not mounting: {tool} {}: {output}",
        .device.display(), .mountpoint.display(), fsck_status(*.code, *.signal)
    )]
    FsckFailed {
        /// The device.
        device: PathBuf,
        /// The mount point.
        mountpoint: PathBuf,
        /// The checker that ran, e.g. `e2fsck -p`.
        tool: String,
        /// Its exit code (`None` if killed by a signal).
        code: Option<i32>,
        /// The signal that killed it, if one did.
        signal: Option<i32>,
        /// Its output (stdout and stderr, shortened in the middle if long).
        output: String,
    },
    /// A helper program (fsck) could not be started.
    #[error("cannot run {tool} for {}: {source}", .device.display())]
    Tool {
        /// The device.
        device: PathBuf,
        /// The program.
        tool: String,
        /// The error.
        source: io::Error,
    },
    /// No loop device could be set up for an image file, or the one set up could not be
    /// detached after the unmount.
    #[error("loop device for {}: {reason}", .device.display())]
    Loop {
        /// The image file.
        device: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// mount(2) failed.
    #[error(
        "mount {} on {} (type {fstype}, options {options:?}): {source}{}",
        .device.display(), .mountpoint.display(), mount_hint(.source)
    )]
    Mount {
        /// The device.
        device: PathBuf,
        /// The mount point.
        mountpoint: PathBuf,
        /// The filesystem type.
        fstype: String,
        /// The options.
        options: String,
        /// The error.
        source: io::Error,
    },
    /// umount2(2) failed for a reason other than being busy.
    #[error("unmount {} ({}): {source}", .mountpoint.display(), .device.display())]
    Unmount {
        /// The device.
        device: PathBuf,
        /// The mount point.
        mountpoint: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Still busy at the deadline; the filesystem stays mounted (no lazy unmount).
    #[error(
        "{} ({}) is still busy after {after:?}, left mounted: {}",
        .mountpoint.display(), .device.display(), busy_reason(.holders, .submounts)
    )]
    Busy {
        /// The device.
        device: PathBuf,
        /// The mount point.
        mountpoint: PathBuf,
        /// Processes still holding it at the last look: pid, comm.
        holders: Vec<(i32, String)>,
        /// Filesystems mounted below the mount point (they keep it busy too; not touched).
        submounts: Vec<PathBuf>,
        /// How long it was tried.
        after: Duration,
    },
    /// The operation did not finish in time.
    #[error("{op} of {} on {} timed out after {after:?}", .device.display(), .mountpoint.display())]
    Timeout {
        /// "mount", "unmount", "fsck".
        op: &'static str,
        /// The device.
        device: PathBuf,
        /// The mount point.
        mountpoint: PathBuf,
        /// The timeout.
        after: Duration,
    },
    /// Reading kernel state (`/proc`, `/sys`) failed.
    #[error("reading {what} (for {}): {source}", .device.display())]
    System {
        /// What was read.
        what: String,
        /// The device concerned.
        device: PathBuf,
        /// The error.
        source: io::Error,
    },
}

fn paths(list: &[PathBuf]) -> String {
    list.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

fn mount_hint(err: &io::Error) -> &'static str {
    match err.raw_os_error() {
        Some(libc::EINVAL) => " (wrong filesystem type, bad option or bad superblock; see dmesg)",
        Some(libc::ENODEV) => " (filesystem type not supported by the kernel)",
        Some(libc::EBUSY) => " (device already in use)",
        Some(libc::EROFS) | Some(libc::EACCES) => " (device is read-only; mount with ro)",
        Some(libc::EUCLEAN) => " (filesystem is corrupted)",
        _ => "",
    }
}

fn fsck_status(code: Option<i32>, signal: Option<i32>) -> String {
    match (code, signal) {
        (Some(c), _) => format!("exited with {c}{}", fsck::exit_meaning(c)),
        (None, Some(s)) => format!("was killed by signal {s}"),
        (None, None) => "ended without an exit code".into(),
    }
}

fn busy_reason(holders: &[(i32, String)], submounts: &[PathBuf]) -> String {
    let mut parts = Vec::new();
    if !holders.is_empty() {
        let list: Vec<String> =
            holders.iter().map(|(pid, comm)| format!("{comm}[{pid}]")).collect();
        parts.push(format!("held by {}", list.join(", ")));
    }
    if !submounts.is_empty() {
        parts.push(format!("filesystems mounted below it: {}", paths(submounts)));
    }
    if parts.is_empty() {
        parts.push(
            "no holder found in /proc (kernel user such as a loop device or swap file?)".into(),
        );
    }
    parts.join("; ")
}

/// Runs fsck on the device before it is mounted, when `spec.fsck` is set (see the module
/// documentation for the checker per type). The filesystem must not be mounted anywhere else;
/// if it is already mounted on its mount point, the check is skipped.
///
/// A checker exit code with a bit ≥ 4 set is [`FsError::FsckFailed`] with the checker's output:
/// the caller must not mount. At the deadline the checker (its whole process group) is killed
/// and [`FsError::Timeout`] is returned.
pub fn check(spec: &FsSpec, timeout: Duration) -> Result<CheckOutcome, FsError> {
    let deadline = Instant::now() + timeout;
    if !spec.fsck {
        return Ok(CheckOutcome::Skipped { reason: "fsck is not enabled for it".into() });
    }
    let dev = DeviceId::resolve(&spec.device)?;
    let survey = Survey::take(&dev, canonical_mountpoint(spec)?.as_deref())?;
    if survey.here.is_some() {
        return Ok(CheckOutcome::Skipped {
            reason: format!("already mounted on {}", spec.mountpoint.display()),
        });
    }
    if !survey.elsewhere.is_empty() {
        return Err(mounted_elsewhere(spec, &survey));
    }
    fsck::run(spec, &dev, deadline, timeout)
}

/// Mounts `spec.device` on `spec.mountpoint` (created if missing), through a loop device if the
/// device is an image file.
///
/// Idempotent: `Ok` at once when exactly this device is already mounted there. Refuses when the
/// device is mounted anywhere else ([`FsError::MountedElsewhere`]) or something else is mounted on
/// the mount point ([`FsError::MountpointTaken`]). Does not run fsck: call [`check`] first.
pub fn mount(spec: &FsSpec, timeout: Duration) -> Result<(), FsError> {
    let deadline = Instant::now() + timeout;
    let dev = DeviceId::resolve(&spec.device)?;
    let mp_err = |source| FsError::Mountpoint {
        device: spec.device.clone(),
        mountpoint: spec.mountpoint.clone(),
        source,
    };
    std::fs::create_dir_all(&spec.mountpoint).map_err(mp_err)?;
    let mp = spec.mountpoint.canonicalize().map_err(mp_err)?;
    if !mp.is_dir() {
        return Err(mp_err(io::Error::from_raw_os_error(libc::ENOTDIR)));
    }
    let survey = Survey::take(&dev, Some(&mp))?;
    if !survey.elsewhere.is_empty() {
        return Err(mounted_elsewhere(spec, &survey));
    }
    if let Some(other) = survey.others_here.last() {
        return Err(mountpoint_taken(spec, other));
    }
    if survey.here.is_some() {
        return Ok(());
    }

    let opts = MountOptions::parse(&spec.options);
    let (source, loop_dev) = match dev.kind {
        mountinfo::Kind::Block { .. } | mountinfo::Kind::Missing => (dev.path.clone(), None),
        mountinfo::Kind::Image { .. } => {
            let l = loopdev::attach(&dev.path, opts.read_only()).map_err(|e| FsError::Loop {
                device: spec.device.clone(),
                reason: format!("cannot attach {}: {e}", dev.path.display()),
            })?;
            (l.path.clone(), Some(l))
        }
    };
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes());
    let (Ok(c_source), Ok(c_target), Ok(c_type), Ok(c_data)) =
        (c(&source), c(&mp), CString::new(spec.fstype.as_str()), CString::new(opts.data.as_str()))
    else {
        return Err(FsError::Mount {
            device: spec.device.clone(),
            mountpoint: spec.mountpoint.clone(),
            fstype: spec.fstype.clone(),
            options: spec.options.clone(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in an argument"),
        });
    };
    let flags = opts.flags;
    let undo_target = c_target.clone();
    let result = bounded(
        deadline,
        move || {
            // SAFETY: all pointers are NUL-terminated strings that live across the call; `data`
            // is NULL when empty, which mount(2) accepts.
            let rc = unsafe {
                libc::mount(
                    c_source.as_ptr(),
                    c_target.as_ptr(),
                    c_type.as_ptr(),
                    flags,
                    if c_data.as_bytes().is_empty() {
                        std::ptr::null()
                    } else {
                        c_data.as_ptr().cast()
                    },
                )
            };
            let result = if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) };
            // The mount holds the loop device now (or failed, and this close frees it).
            drop(loop_dev);
            result
        },
        move |late: io::Result<()>| {
            if late.is_ok() {
                // The caller gave up: do not leave behind a mount it thinks failed.
                // SAFETY: a valid NUL-terminated path; flags 0 (never MNT_DETACH).
                unsafe { libc::umount2(undo_target.as_ptr(), 0) };
            }
        },
    );
    match result {
        Some(Ok(())) => Ok(()),
        Some(Err(source)) => Err(FsError::Mount {
            device: spec.device.clone(),
            mountpoint: spec.mountpoint.clone(),
            fstype: spec.fstype.clone(),
            options: spec.options.clone(),
            source,
        }),
        None => Err(timed_out("mount", spec, timeout)),
    }
}

/// Unmounts the filesystem, killing the processes that keep it busy (SIGTERM, then SIGKILL), and
/// detaches the loop device set up for an image file. Never lazy: at the deadline a filesystem
/// that is still busy stays mounted and [`FsError::Busy`] names the holders.
///
/// Idempotent: `Ok` with `was_mounted: false` when the device is not mounted at all. Refuses
/// ([`FsError::MountpointTaken`]) when something else is mounted over it. If the device is (still)
/// mounted anywhere else, e.g. bind-mounted by the application, the result is
/// [`FsError::MountedElsewhere`]: the data is not released. A device node that has disappeared
/// while mounted is recognised by its name in mountinfo.
pub fn unmount(spec: &FsSpec, timeout: Duration) -> Result<UnmountOutcome, FsError> {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut outcome = UnmountOutcome::default();
    let dev = DeviceId::resolve_or_missing(&spec.device)?;
    let Some(mp) = canonical_mountpoint(spec)? else {
        let survey = Survey::take(&dev, None)?;
        if !survey.elsewhere.is_empty() {
            return Err(mounted_elsewhere(spec, &survey));
        }
        return Ok(outcome);
    };
    let c_target = CString::new(mp.as_os_str().as_bytes()).map_err(|_| FsError::Unmount {
        device: spec.device.clone(),
        mountpoint: spec.mountpoint.clone(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in the mount point"),
    })?;
    let grace = holders::TERM_GRACE.min(timeout / 3);
    let mut killer = holders::Killer::new(grace);
    let mut loop_used: Option<loopdev::Loop> = None;
    // Holders (pid, comm) and submounts at the last look, once umount2() said EBUSY.
    type Busy = (Vec<(i32, String)>, Vec<PathBuf>);
    let mut busy: Option<Busy> = None;
    loop {
        let survey = Survey::take(&dev, Some(&mp))?;
        let Some(here) = survey.here.clone() else {
            // Still mounted elsewhere: the data is not released, the peer must not mount it.
            if !survey.elsewhere.is_empty() {
                return Err(mounted_elsewhere(spec, &survey));
            }
            break;
        };
        if let Some(over) = survey.on_top_of(&here) {
            return Err(mountpoint_taken(spec, over));
        }
        outcome.was_mounted = true;
        if loop_used.is_none() {
            loop_used = survey.loop_of(&here);
        }
        if Instant::now() >= deadline {
            return Err(match busy {
                Some((holders, submounts)) => FsError::Busy {
                    device: spec.device.clone(),
                    mountpoint: spec.mountpoint.clone(),
                    holders,
                    submounts,
                    after: start.elapsed(),
                },
                None => timed_out("unmount", spec, timeout),
            });
        }
        let target = c_target.clone();
        let result = bounded(
            deadline,
            move || {
                // SAFETY: a valid NUL-terminated path. UMOUNT_NOFOLLOW: the path was resolved
                // already. Never MNT_DETACH (see the module documentation).
                let rc = unsafe { libc::umount2(target.as_ptr(), libc::UMOUNT_NOFOLLOW) };
                if rc == 0 {
                    Ok(())
                } else {
                    Err(io::Error::last_os_error())
                }
            },
            |_| {},
        );
        match result {
            None => return Err(timed_out("unmount", spec, timeout)),
            Some(Ok(())) => {}
            Some(Err(e)) if e.raw_os_error() == Some(libc::EBUSY) => {
                // Bounded: stat() of another process's file can hang (e.g. a dead NFS server).
                let dev_num = here.dev;
                let submounts = survey.submounts_of(&here);
                match bounded(deadline, move || holders::scan(dev_num), |_| {}) {
                    Some(found) => {
                        killer.round(&found);
                        let found = found.into_iter().map(|h| (h.pid, h.comm)).collect();
                        busy = Some((found, submounts));
                    }
                    // Cut short by the deadline: keep what the previous scan found.
                    None => {
                        busy.get_or_insert((Vec::new(), submounts));
                    }
                }
                let left = deadline.saturating_duration_since(Instant::now());
                std::thread::sleep(left.min(Duration::from_millis(50)));
            }
            // EINVAL: no longer a mount point (someone else unmounted it); look again.
            Some(Err(e)) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Some(Err(source)) => {
                return Err(FsError::Unmount {
                    device: spec.device.clone(),
                    mountpoint: spec.mountpoint.clone(),
                    source,
                })
            }
        }
    }
    let (killed, sigkilled) = killer.signalled();
    outcome.killed = killed;
    outcome.sigkilled = sigkilled;
    if let (Some(l), mountinfo::Kind::Image { dev: d, ino }) = (loop_used, &dev.kind) {
        match loopdev::release(&l, *d, *ino, deadline) {
            Ok(()) => outcome.loop_detached = Some(l.path),
            Err(reason) => {
                return Err(FsError::Loop {
                    device: spec.device.clone(),
                    reason: format!(
                        "{} unmounted from {} but {} is still attached: {reason}",
                        spec.device.display(),
                        spec.mountpoint.display(),
                        l.path.display()
                    ),
                })
            }
        }
    }
    Ok(outcome)
}

/// Whether exactly this device is mounted on its mount point, by this thread's mountinfo. The
/// device's symlinks are resolved, and an image file counts as mounted through any loop device
/// backed by it.
pub fn is_mounted(spec: &FsSpec) -> Result<bool, FsError> {
    let dev = DeviceId::resolve_or_missing(&spec.device)?;
    let Some(mp) = canonical_mountpoint(spec)? else { return Ok(false) };
    Ok(Survey::take(&dev, Some(&mp))?.here.is_some())
}

/// The mount point with symlinks resolved; `None` if it does not exist.
fn canonical_mountpoint(spec: &FsSpec) -> Result<Option<PathBuf>, FsError> {
    match spec.mountpoint.canonicalize() {
        Ok(p) => Ok(Some(p)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(FsError::Mountpoint {
            device: spec.device.clone(),
            mountpoint: spec.mountpoint.clone(),
            source,
        }),
    }
}

fn mounted_elsewhere(spec: &FsSpec, survey: &Survey) -> FsError {
    FsError::MountedElsewhere {
        device: spec.device.clone(),
        mountpoint: spec.mountpoint.clone(),
        elsewhere: survey.elsewhere.iter().map(|e| e.mountpoint.clone()).collect(),
    }
}

fn mountpoint_taken(spec: &FsSpec, other: &mountinfo::MountEntry) -> FsError {
    FsError::MountpointTaken {
        device: spec.device.clone(),
        mountpoint: spec.mountpoint.clone(),
        other: format!("{} (type {})", other.source, other.fstype),
    }
}

fn timed_out(op: &'static str, spec: &FsSpec, after: Duration) -> FsError {
    FsError::Timeout { op, device: spec.device.clone(), mountpoint: spec.mountpoint.clone(), after }
}

/// Runs `work` on a helper thread and waits for it until `deadline`. `None` at the deadline: the
/// thread is abandoned, and when it finishes later `abandoned` gets its result (to undo it).
/// The thread inherits the calling thread's namespaces.
fn bounded<T: Send + 'static>(
    deadline: Instant,
    work: impl FnOnce() -> T + Send + 'static,
    abandoned: impl FnOnce(T) + Send + 'static,
) -> Option<T> {
    enum State<T> {
        Pending,
        Done(T),
        Abandoned,
    }
    let shared = Arc::new((Mutex::new(State::Pending), Condvar::new()));
    let theirs = Arc::clone(&shared);
    let spawned = std::thread::Builder::new().name("cl-fs-op".into()).spawn(move || {
        let value = work();
        let (lock, cv) = &*theirs;
        let mut state = lock.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(*state, State::Abandoned) {
            drop(state);
            abandoned(value);
        } else {
            *state = State::Done(value);
            cv.notify_all();
        }
    });
    if spawned.is_err() {
        return None;
    }
    let (lock, cv) = &*shared;
    let mut state = lock.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        if matches!(*state, State::Done(_)) {
            return match std::mem::replace(&mut *state, State::Abandoned) {
                State::Done(v) => Some(v),
                _ => None,
            };
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            *state = State::Abandoned;
            return None;
        }
        state = cv.wait_timeout(state, left).unwrap_or_else(|p| p.into_inner()).0;
    }
}

/// Mount options split into mount(2) flags and filesystem data.
#[derive(Debug, PartialEq, Eq)]
struct MountOptions {
    flags: libc::c_ulong,
    data: String,
}

impl MountOptions {
    fn parse(options: &str) -> MountOptions {
        let mut flags: libc::c_ulong = 0;
        let mut data: Vec<&str> = Vec::new();
        for opt in options.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            let (set, clear): (libc::c_ulong, libc::c_ulong) = match opt {
                "ro" => (libc::MS_RDONLY, 0),
                "rw" => (0, libc::MS_RDONLY),
                "nosuid" => (libc::MS_NOSUID, 0),
                "suid" => (0, libc::MS_NOSUID),
                "nodev" => (libc::MS_NODEV, 0),
                "dev" => (0, libc::MS_NODEV),
                "noexec" => (libc::MS_NOEXEC, 0),
                "exec" => (0, libc::MS_NOEXEC),
                "sync" => (libc::MS_SYNCHRONOUS, 0),
                "async" => (0, libc::MS_SYNCHRONOUS),
                "dirsync" => (libc::MS_DIRSYNC, 0),
                "noatime" => (libc::MS_NOATIME, 0),
                "atime" => (0, libc::MS_NOATIME),
                "nodiratime" => (libc::MS_NODIRATIME, 0),
                "diratime" => (0, libc::MS_NODIRATIME),
                "relatime" => (libc::MS_RELATIME, 0),
                "norelatime" => (0, libc::MS_RELATIME),
                "strictatime" => (libc::MS_STRICTATIME, 0),
                "nostrictatime" => (0, libc::MS_STRICTATIME),
                "lazytime" => (libc::MS_LAZYTIME, 0),
                "nolazytime" => (0, libc::MS_LAZYTIME),
                "silent" => (libc::MS_SILENT, 0),
                "loud" => (0, libc::MS_SILENT),
                "defaults" | "auto" | "noauto" | "user" | "nouser" | "users" | "owner"
                | "group" | "nofail" | "_netdev" | "loop" => (0, 0),
                o if o.starts_with("x-") || o.starts_with("comment=") || o.starts_with("loop=") => {
                    (0, 0)
                }
                o => {
                    data.push(o);
                    (0, 0)
                }
            };
            flags = (flags | set) & !clear;
        }
        MountOptions { flags, data: data.join(",") }
    }

    fn read_only(&self) -> bool {
        self.flags & libc::MS_RDONLY != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_and_data() {
        let o = MountOptions::parse("defaults,noatime, nodev,data=ordered,x-systemd.foo,ro,rw");
        assert_eq!(o.flags, libc::MS_NOATIME | libc::MS_NODEV);
        assert_eq!(o.data, "data=ordered");
        assert!(!o.read_only());
        let o = MountOptions::parse("ro,errors=remount-ro,_netdev");
        assert!(o.read_only());
        assert_eq!(o.data, "errors=remount-ro");
        assert_eq!(MountOptions::parse(""), MountOptions { flags: 0, data: String::new() });
    }

    #[test]
    fn bounded_returns_in_time_and_hands_late_results_over() {
        let (tx, rx) = std::sync::mpsc::channel();
        let t = Instant::now();
        let r = bounded(
            Instant::now() + Duration::from_millis(50),
            || {
                std::thread::sleep(Duration::from_millis(300));
                7
            },
            move |v| tx.send(v).unwrap_or(()),
        );
        assert_eq!(r, None);
        assert!(t.elapsed() < Duration::from_millis(250));
        assert_eq!(rx.recv_timeout(Duration::from_secs(2)).ok(), Some(7));
        assert_eq!(bounded(Instant::now() + Duration::from_secs(5), || 3, |_| {}), Some(3));
    }

    #[test]
    fn busy_message_names_holders_and_paths() {
        let e = FsError::Busy {
            device: "/dev/sdb1".into(),
            mountpoint: "/srv/db".into(),
            holders: vec![(42, "postgres".into())],
            submounts: vec![],
            after: Duration::from_secs(3),
        };
        let s = e.to_string();
        assert!(
            s.contains("/srv/db") && s.contains("/dev/sdb1") && s.contains("postgres[42]"),
            "{s}"
        );
    }
}
