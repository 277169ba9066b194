//! Thin wrappers around the host tools and kernel files the lab drives.
//!
//! Everything that touches the OS outside of `std::process::Command` plumbing lives here, so the
//! lab logic in `lib.rs` reads as a list of steps and the few `unsafe` libc calls stay in one place.

use std::ffi::{CStr, CString, OsStr};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStringExt as _;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Runs a command to completion and turns a non-zero exit into an error that quotes stderr,
/// because a failed `ip`/`nft` call is only debuggable with the tool's own message.
pub(crate) fn run<I, S>(program: &str, args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_with_stdin(program, args, None)
}

/// Like [`run`], feeding `stdin` to the command (used for `nft -f -`).
pub(crate) fn run_with_stdin<I, S>(program: &str, args: I, stdin: Option<&str>) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(program);
    cmd.args(args);
    let shown = format!("{cmd:?}");
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("cannot start {shown}"))?;
    if let Some(input) = stdin {
        // Take the pipe so it is closed when this scope ends: the tool waits for EOF.
        if let Some(mut pipe) = child.stdin.take() {
            pipe.write_all(input.as_bytes())
                .with_context(|| format!("writing stdin of {shown}"))?;
        }
    }
    let out = child.wait_with_output().with_context(|| format!("waiting for {shown}"))?;
    if !out.status.success() {
        bail!("{shown} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `ip` with the given arguments.
pub(crate) fn ip<S: AsRef<OsStr>>(args: &[S]) -> Result<String> {
    run("ip", args)
}

/// Names of all named network namespaces (`ip netns list`), without the `(id: N)` suffix.
pub(crate) fn netns_list() -> Result<Vec<String>> {
    let out = ip(&["netns", "list"])?;
    Ok(out.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_owned).collect())
}

/// Path of a named network namespace's bind mount.
pub(crate) fn netns_path(ns: &str) -> PathBuf {
    Path::new("/run/netns").join(ns)
}

/// Pids whose network namespace is `ns` (`ip netns pids`).
pub(crate) fn netns_pids(ns: &str) -> Result<Vec<u32>> {
    let out = ip(&["netns", "pids", ns])?;
    Ok(out.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// Sends SIGKILL to one pid; a pid that is already gone is not an error.
pub(crate) fn kill_pid(pid: u32) -> Result<()> {
    let Ok(raw) = libc::pid_t::try_from(pid) else { bail!("pid {pid} out of range") };
    // Never signal "every process" (-1), our process group (0) or ourselves: a bug upstream must
    // not be able to turn a lab cleanup into killing the test runner or the whole machine.
    if raw <= 1 || pid == std::process::id() {
        bail!("refusing to kill pid {pid}");
    }
    // SAFETY: kill(2) takes plain integers and has no memory-safety preconditions.
    let rc = unsafe { libc::kill(raw, libc::SIGKILL) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            return Err(err).with_context(|| format!("kill -9 {pid}"));
        }
    }
    Ok(())
}

/// Whether `pid` is a live (non-zombie) process, because a zombie holder is as dead as a gone one.
pub(crate) fn pid_alive(pid: u32) -> bool {
    match proc_stat_fields(pid) {
        Some(fields) => fields.first().is_some_and(|state| state != "Z" && state != "X"),
        None => false,
    }
}

/// Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat); together with
/// the pid it identifies a process across pid reuse.
pub(crate) fn pid_start_time(pid: u32) -> Option<u64> {
    // Fields after the command name start at field 3 (state); starttime is field 22.
    proc_stat_fields(pid)?.get(22 - 3)?.parse().ok()
}

/// Fields of /proc/PID/stat after the `(comm)` part, which may itself contain spaces.
fn proc_stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Identity (device, inode) of a namespace file such as `/proc/PID/ns/net` or `/run/netns/X`.
pub(crate) fn ns_id(path: &Path) -> Result<(u64, u64)> {
    let md = fs::metadata(path).with_context(|| format!("stat {}", path.display()))?;
    Ok((md.dev(), md.ino()))
}

/// Whether `path` is on a tmpfs (which cannot do O_DIRECT).
pub(crate) fn is_tmpfs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else { return false };
    // SAFETY: statfs(2) writes into the zeroed struct we pass; the path is NUL-terminated.
    unsafe {
        let mut buf: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut buf) == 0 && buf.f_type == libc::TMPFS_MAGIC
    }
}

/// Whether the current user is root, since everything the lab does needs CAP_SYS_ADMIN.
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Three random bytes as hex, from the kernel's RNG, for short unique lab names.
pub(crate) fn random_hex6() -> Result<String> {
    let mut buf = [0u8; 3];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("reading /dev/urandom")?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub(crate) fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        sleep(Duration::from_millis(20));
    }
}

/// Writes a short value into a cgroup control file.
pub(crate) fn cg_write(cgroup: &Path, file: &str, value: &str) -> Result<()> {
    let path = cgroup.join(file);
    fs::write(&path, value).with_context(|| format!("writing {value:?} to {}", path.display()))
}

/// Reads one `key value` line of `cgroup.events` (`populated`, `frozen`).
pub(crate) fn cg_event(cgroup: &Path, key: &str) -> Option<bool> {
    let text = fs::read_to_string(cgroup.join("cgroup.events")).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim() == "1")
    })
}

/// Makes the child of `cmd` move itself into `cgroup` between fork and exec, so no instant of
/// the program runs outside it and `spawn()` returning means it is in.
pub(crate) fn join_cgroup_before_exec(cmd: &mut Command, cgroup: &Path) -> Result<()> {
    let procs = CString::new(cgroup.join("cgroup.procs").into_os_string().into_vec())
        .context("cgroup path contains a NUL byte")?;
    // SAFETY: the closure runs in the forked child, where only async-signal-safe calls are
    // allowed; `write_self_to` uses open/write/close on a path allocated before the fork and
    // allocates nothing.
    unsafe {
        cmd.pre_exec(move || write_self_to(&procs));
    }
    Ok(())
}

/// Writes "0" (meaning "the writing process") into the cgroup.procs file at `procs`.
fn write_self_to(procs: &CStr) -> std::io::Result<()> {
    // SAFETY: `procs` is a valid NUL-terminated path; open(2) has no other preconditions.
    let fd = unsafe { libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is open and the buffer is a valid one-byte static.
    let written = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
    let result = if written == 1 { Ok(()) } else { Err(std::io::Error::last_os_error()) };
    // SAFETY: `fd` was opened above and is closed exactly once.
    unsafe { libc::close(fd) };
    result
}

/// Pids listed in a cgroup's `cgroup.procs`.
pub(crate) fn cg_pids(cgroup: &Path) -> Result<Vec<u32>> {
    let path = cgroup.join("cgroup.procs");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// The cgroup v2 hierarchy to create node cgroups in: the hybrid mount at
/// `/sys/fs/cgroup/unified` when present, else a pure v2 `/sys/fs/cgroup`.
pub(crate) fn cgroup_base() -> Result<PathBuf> {
    for base in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
        let base = Path::new(base);
        if base.join("cgroup.procs").exists() && base.join("cgroup.max.depth").exists() {
            return Ok(base.to_path_buf());
        }
    }
    bail!("no cgroup v2 hierarchy at /sys/fs/cgroup/unified or /sys/fs/cgroup")
}

/// Mount points of cgroup v2 filesystems showing the hierarchy's root, in this mount
/// namespace (from /proc/self/mountinfo).
pub(crate) fn cgroup2_mounts() -> Vec<PathBuf> {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else { return Vec::new() };
    text.lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            let dash = fields.iter().position(|f| *f == "-")?;
            let fstype = fields.get(dash + 1)?;
            let mount_point = fields.get(4)?;
            (*fstype == "cgroup2" && fields.get(3) == Some(&"/"))
                .then(|| PathBuf::from(unescape_mountinfo(mount_point)))
        })
        .collect()
}

/// Mount points (from /proc/self/mountinfo) at or below `dir`, deepest first so they can be
/// unmounted in order.
pub(crate) fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else { return Vec::new() };
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// Decodes the `\ooo` octal escapes mountinfo uses for space, tab, newline and backslash.
pub(crate) fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let oct = &bytes[i + 1..i + 4];
            if oct.iter().all(|b| (b'0'..=b'7').contains(b)) {
                let value = oct.iter().fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
                if let Ok(v) = u8::try_from(value) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An exclusive `flock(2)` on a file (created if missing), released when dropped; it serialises
/// work on one thing (an asset build, a guest's power or agent) across processes.
#[derive(Debug)]
pub(crate) struct FileLock {
    _file: fs::File,
}

impl FileLock {
    /// Waits for the lock without a time limit.
    pub(crate) fn acquire(path: &Path) -> Result<FileLock> {
        Self::acquire_within(path, Duration::MAX)
    }

    /// Waits for the lock at most `timeout`.
    pub(crate) fn acquire_within(path: &Path, timeout: Duration) -> Result<FileLock> {
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("opening lock file {}", path.display()))?;
        let start = Instant::now();
        loop {
            if crate::vm::lock::flock(&file, true)
                .with_context(|| format!("locking {}", path.display()))?
            {
                return Ok(FileLock { _file: file });
            }
            if start.elapsed() >= timeout {
                bail!("{} is still locked after {timeout:?}", path.display());
            }
            sleep(Duration::from_millis(20));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape_mountinfo(r"/tmp/x\134"), r"/tmp/x\");
        assert_eq!(unescape_mountinfo(r"/plain"), "/plain");
        assert_eq!(unescape_mountinfo(r"/tail\04"), r"/tail\04");
    }

    #[test]
    fn own_process_is_alive_with_a_start_time() {
        assert!(pid_alive(std::process::id()));
        assert!(pid_start_time(std::process::id()).is_some());
    }

    #[test]
    fn random_names_are_six_hex_chars() -> Result<()> {
        let s = random_hex6()?;
        assert_eq!(s.len(), 6);
        assert!(s.bytes().all(|b| b.is_ascii_hexdigit()));
        Ok(())
    }
}
