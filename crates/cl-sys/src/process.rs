//! Process plumbing: daemonizing, spawning the per-cluster daemons under their `ps` names,
//! liveness checks, pid files and parent-death signals.

use std::ffi::{CString, OsStr};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Byte the daemon writes to tell the original process that start-up succeeded.
const READY: u8 = 0;
/// Byte the daemon writes before a 4-byte errno when start-up failed.
const FAILED: u8 = 1;

/// Turns an error-returning libc result (-1) into an `io::Error` naming the call.
fn check(rc: libc::c_int, what: &str) -> io::Result<libc::c_int> {
    if rc == -1 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(rc)
}

/// Counts the threads of this process, or `None` if /proc is unavailable.
fn thread_count() -> Option<usize> {
    Some(fs::read_dir("/proc/self/task").ok()?.count())
}

/// Creates a close-on-exec pipe, returning (read end, write end).
fn pipe() -> io::Result<(File, File)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid array of two c_ints for pipe2 to fill.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, "pipe2")?;
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((File::from(r), File::from(w)))
}

/// Forks; `Ok(0)` in the child, `Ok(child pid)` in the parent.
///
/// Callers guarantee the process is single-threaded (checked by [`daemonize`]), which makes it
/// sound for the child to keep running Rust code (allocator locks cannot be held by a thread
/// that does not exist in the child).
fn fork() -> io::Result<libc::pid_t> {
    // SAFETY: see above; fork itself has no memory-safety preconditions.
    check(unsafe { libc::fork() }, "fork")
}

/// Waits for `pid` to exit, retrying on EINTR, so that it does not stay a zombie.
fn reap(pid: libc::pid_t) {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer; `pid` is our own child.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc != -1 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return;
        }
    }
}

/// Session, working directory and stdio set-up done in the daemon before it reports ready.
fn detach_stdio_and_cwd() -> io::Result<()> {
    std::env::set_current_dir("/")?;
    let null = OpenOptions::new().read(true).write(true).open("/dev/null")?;
    for target in 0..=2 {
        // SAFETY: both descriptors are valid; dup2 atomically replaces `target` (stdio).
        check(unsafe { libc::dup2(null.as_raw_fd(), target) }, "dup2")?;
    }
    Ok(())
}

/// Detaches the process from its terminal the classic way: fork, setsid, fork, chdir "/",
/// stdin/stdout/stderr to /dev/null. Returns `Ok(())` in the daemon.
///
/// The original process exits 0 only once the daemon has finished these steps, so a shell
/// script that starts a daemon can rely on it running. If a step fails in a child, this returns
/// the error in the *original* process (still attached to the terminal, so it can be shown).
///
/// Must be called before any thread is started (in particular before building a tokio
/// runtime): forking a multi-threaded process can leave the child with locks held by threads
/// that no longer exist. This is checked, and an error returned, when /proc is available.
/// The umask is left as inherited; write the pid file after this call (the pid changes).
pub fn daemonize() -> io::Result<()> {
    if let Some(n) = thread_count().filter(|&n| n > 1) {
        return Err(io::Error::other(format!(
            "daemonize must run before any other thread starts ({n} threads running)"
        )));
    }
    let (mut ready_rx, mut ready_tx) = pipe()?;
    let child = fork()?;
    if child > 0 {
        drop(ready_tx);
        let mut report = Vec::new();
        // EOF comes when the daemon closes its end (after reporting) and the middle child exits.
        let read = ready_rx.read_to_end(&mut report);
        reap(child);
        read?;
        return match report.as_slice() {
            [READY, ..] => std::process::exit(0),
            [FAILED, a, b, c, d] => {
                Err(io::Error::from_raw_os_error(i32::from_ne_bytes([*a, *b, *c, *d])))
            }
            _ => Err(io::Error::other("daemon exited during start-up")),
        };
    }
    drop(ready_rx);
    // From here on we are a child: errors are reported through the pipe, never returned,
    // because returning would run the caller's code in a second copy of the process.
    let result = (|| {
        // SAFETY: setsid has no preconditions; we are not a group leader (fresh child).
        check(unsafe { libc::setsid() }, "setsid")?;
        // The second fork makes sure the daemon is not a session leader and so can never
        // reacquire a controlling terminal by opening a tty.
        if fork()? > 0 {
            // SAFETY: _exit ends the middle child at once without running the parent's atexit
            // handlers or flushing its buffers a second time.
            unsafe { libc::_exit(0) };
        }
        detach_stdio_and_cwd()
    })();
    match result {
        Ok(()) => {
            // If the original process is gone it cannot care; nothing to do about it here.
            let _ = ready_tx.write_all(&[READY]);
            Ok(())
        }
        Err(e) => {
            let mut msg = vec![FAILED];
            msg.extend_from_slice(&e.raw_os_error().unwrap_or(libc::EIO).to_ne_bytes());
            let _ = ready_tx.write_all(&msg);
            // SAFETY: see above; this is a forked child that must not return to the caller.
            unsafe { libc::_exit(1) }
        }
    }
}

/// Builds a command whose `argv[0]` is `argv0`, with stdio on /dev/null.
fn named_command(program: &Path, argv0: &str, args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(program);
    cmd.arg0(argv0)
        .args(args)
        .envs(envs.iter().map(|&(k, v)| (OsStr::new(k), OsStr::new(v))))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// Starts `program` with `argv[0]` set to `argv0` (what `ps -ef` shows, e.g. `clhbd-cluster1`),
/// the given arguments and extra environment, and stdin/stdout/stderr on /dev/null.
pub fn spawn_named(
    program: &Path,
    argv0: &str,
    args: &[&str],
    envs: &[(&str, &str)],
) -> io::Result<Child> {
    named_command(program, argv0, args, envs).spawn()
}

/// [`spawn_named`] for tokio: the child can be awaited without blocking the runtime.
pub fn spawn_named_tokio(
    program: &Path,
    argv0: &str,
    args: &[&str],
    envs: &[(&str, &str)],
) -> io::Result<tokio::process::Child> {
    tokio::process::Command::from(named_command(program, argv0, args, envs)).spawn()
}

/// State letter of `/proc/PID/stat` (R, S, D, Z, …), or the read error.
fn proc_state(pid: u32) -> io::Result<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may itself contain ") ", so the state
    // is the first field after the *last* ')'.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed /proc stat"))
}

/// True if a process `pid` exists and is not a zombie (kill(pid, 0), then /proc/PID/stat).
pub fn process_alive(pid: u32) -> bool {
    // 0 and negative values have group semantics in kill(2): never treat them as a pid.
    let Ok(raw) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if raw <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks existence and permission; it delivers nothing.
    if unsafe { libc::kill(raw, 0) } != 0 {
        // EPERM: it exists but belongs to someone else; that still counts as alive.
        if io::Error::last_os_error().raw_os_error() != Some(libc::EPERM) {
            return false;
        }
    }
    match proc_state(pid) {
        Ok(state) => !matches!(state, 'Z' | 'X' | 'x'),
        // Vanished between the two checks.
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        // /proc unusable (not mounted, hidepid): trust kill(2).
        Err(_) => true,
    }
}

/// Temporary name beside `path` for an atomic replace, unique per writing process.
fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp{}", std::process::id()))
}

/// Writes `pid` and a newline to `path` atomically (temp file, fsync, rename), creating the
/// parent directory, so a reader never sees a half-written pid.
pub fn write_pid_file(path: &Path, pid: u32) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
    }
    let tmp = temp_path(path);
    let result = (|| {
        let mut f =
            OpenOptions::new().write(true).create(true).truncate(true).mode(0o644).open(&tmp)?;
        f.write_all(format!("{pid}\n").as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// An exclusive flock(2) on `file`, waiting for it when `wait`; `Ok(false)` when not waiting
/// and another open file holds it. The lock lasts while `file` stays open.
pub fn flock_exclusive(file: &File, wait: bool) -> io::Result<bool> {
    let op = if wait { libc::LOCK_EX } else { libc::LOCK_EX | libc::LOCK_NB };
    loop {
        // SAFETY: flock(2) on a descriptor `file` owns; no memory is shared.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) if !wait => return Ok(false),
            _ => return Err(err),
        }
    }
}

/// Reads a pid written by [`write_pid_file`]; `None` if missing, unreadable or not a pid.
pub fn read_pid_file(path: &Path) -> Option<u32> {
    let mut text = String::new();
    // A pid file is a few bytes; cap the read so a wrong path cannot make us slurp a huge file.
    File::open(path).ok()?.take(64).read_to_string(&mut text).ok()?;
    text.trim().parse().ok().filter(|&pid| pid > 0)
}

/// Asks the kernel to send `signal` to this process when its parent dies (PR_SET_PDEATHSIG).
///
/// Two kernel details to keep in mind: "parent" is the parent *thread*, so a child spawned from
/// a short-lived thread (e.g. tokio's blocking pool) gets the signal when that thread exits;
/// and if the parent died before this call nothing is sent, so afterwards compare
/// `std::os::unix::process::parent_id()` with the expected parent.
pub fn set_parent_death_signal(signal: i32) -> io::Result<()> {
    let sig =
        libc::c_ulong::try_from(signal).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: PR_SET_PDEATHSIG takes an integer signal number; the unused arguments are 0.
    check(
        unsafe {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                sig,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        },
        "prctl(PR_SET_PDEATHSIG)",
    )
    .map(drop)
}

/// Sets the calling thread's name (`/proc/PID/comm`, what `ps -e` and `top` show; at most 15
/// bytes, longer names are cut). On the main thread this names the process.
pub fn set_thread_name(name: &str) -> io::Result<()> {
    // The kernel keeps 16 bytes including the NUL; cut at a char boundary below that.
    let mut end = name.len().min(15);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    let c = CString::new(&name[..end])
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "thread name contains NUL"))?;
    // SAFETY: `c` is a valid NUL-terminated string of at most 16 bytes that outlives the call.
    check(
        unsafe {
            libc::prctl(
                libc::PR_SET_NAME,
                c.as_ptr(),
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        },
        "prctl(PR_SET_NAME)",
    )
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cl-sys-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn sleep_path() -> &'static Path {
        [Path::new("/bin/sleep"), Path::new("/usr/bin/sleep")]
            .into_iter()
            .find(|p| p.exists())
            .expect("sleep(1) is installed")
    }

    /// Polls `cond` for up to two seconds.
    fn eventually(cond: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        cond()
    }

    /// Reads `/proc/PID/cmdline`, waiting out the moment inside execve(2) where it is empty:
    /// vfork-style spawning returns once the new image is mapped, before its arguments are.
    fn cmdline_of(pid: u32) -> Vec<u8> {
        let read = || fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        eventually(|| !read().is_empty());
        read()
    }

    #[test]
    fn spawn_named_sets_argv0_and_process_alive_tracks_it() {
        let mut child =
            spawn_named(sleep_path(), "clhbd-cluster1", &["30"], &[("LINUXHA_TEST", "1")])
                .expect("spawn sleep");
        let pid = child.id();
        let cmdline = cmdline_of(pid);
        assert!(
            cmdline.starts_with(b"clhbd-cluster1\0"),
            "{:?}",
            String::from_utf8_lossy(&cmdline)
        );
        assert!(cmdline.ends_with(b"\x0030\0"), "arguments follow argv[0]");
        let environ = fs::read(format!("/proc/{pid}/environ")).expect("environ");
        assert!(environ.split(|&b| b == 0).any(|kv| kv == b"LINUXHA_TEST=1"));
        assert!(process_alive(pid));

        child.kill().expect("kill");
        // Killed but not yet reaped: a zombie, which must not count as alive.
        assert!(eventually(|| !process_alive(pid)), "zombie counted as alive");
        assert_eq!(proc_state(pid).ok(), Some('Z'));
        child.wait().expect("reap");
        assert!(!process_alive(pid));
    }

    #[tokio::test]
    async fn spawn_named_tokio_sets_argv0() {
        let mut child =
            spawn_named_tokio(sleep_path(), "clnetd-cluster1", &["30"], &[]).expect("spawn");
        let pid = child.id().expect("running child has a pid");
        let cmdline = cmdline_of(pid);
        assert!(
            cmdline.starts_with(b"clnetd-cluster1\0"),
            "{:?}",
            String::from_utf8_lossy(&cmdline)
        );
        child.kill().await.expect("kill and reap");
        assert!(!process_alive(pid));
    }

    #[test]
    fn process_alive_edge_cases() {
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(0), "0 means our process group, not a pid");
        assert!(!process_alive(u32::MAX), "would be -1: every process");
        assert!(!process_alive(i32::MAX as u32), "beyond pid_max");
        // pid 1 exists in every pid namespace (init, or whatever runs as 1 here).
        assert!(process_alive(1));
    }

    #[test]
    fn pid_file_round_trip() {
        let dir = scratch("pid");
        let path = dir.join("run/cluster/clhbd.pid");
        assert_eq!(read_pid_file(&path), None, "missing file");
        write_pid_file(&path, 4242).expect("write");
        assert_eq!(fs::read_to_string(&path).expect("read"), "4242\n");
        assert_eq!(read_pid_file(&path), Some(4242));
        write_pid_file(&path, 17).expect("overwrite");
        assert_eq!(read_pid_file(&path), Some(17));
        let leftovers: Vec<_> = fs::read_dir(path.parent().expect("dir"))
            .expect("list")
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "no temp files left: {leftovers:?}");
        for garbage in ["", "abc", "0", "-5", "12 13", "99999999999"] {
            fs::write(&path, garbage).expect("write garbage");
            assert_eq!(read_pid_file(&path), None, "{garbage:?}");
        }
        fs::write(&path, " 77 \n").expect("write padded");
        assert_eq!(read_pid_file(&path), Some(77));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn parent_death_signal_rejects_bad_signals() {
        assert!(set_parent_death_signal(-1).is_err());
        assert!(set_parent_death_signal(1000).is_err());
    }

    #[test]
    fn thread_name_is_set_and_truncated() {
        std::thread::spawn(|| {
            set_thread_name("cllockd-a-very-long-cluster").expect("prctl");
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() };
            let comm = fs::read_to_string(format!("/proc/self/task/{tid}/comm")).expect("comm");
            assert_eq!(comm.trim_end(), "cllockd-a-very-");
            assert!(set_thread_name("bad\0name").is_err());
        })
        .join()
        .expect("thread ok");
    }

    #[test]
    fn daemonize_refuses_multithreaded_process() {
        // The test harness itself runs tests on threads, so this process has several.
        let err = daemonize().expect_err("more than one thread is running");
        assert!(err.to_string().contains("thread"), "{err}");
    }
}
