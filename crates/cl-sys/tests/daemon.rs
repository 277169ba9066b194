//! Process-level tests that need a process of their own: `daemonize` refuses to run in a
//! multi-threaded process (and libtest runs every test on a thread), and a parent-death signal
//! needs a parent that really dies. So this file has no libtest harness: `main` re-executes this
//! binary in a role chosen by an environment variable and checks what the role did.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};
use std::{env, fs};

use cl_sys::process::{daemonize, process_alive, set_parent_death_signal};

const ROLE: &str = "CL_SYS_TEST_ROLE";
const OUT: &str = "CL_SYS_TEST_OUT";

/// Polls `f` for up to `secs` seconds until it returns `Some`.
fn wait_for<T>(secs: u64, f: impl Fn() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn out_dir() -> PathBuf {
    PathBuf::from(env::var_os(OUT).expect("CL_SYS_TEST_OUT is set for roles"))
}

/// Role: become a daemon, then record what the daemon looks like.
fn role_daemon() -> ExitCode {
    if daemonize().is_err() {
        return ExitCode::from(3);
    }
    let link = |fd: u32| {
        fs::read_link(format!("/proc/self/fd/{fd}"))
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    };
    // SAFETY: getsid(0) has no preconditions.
    let sid = unsafe { libc::getsid(0) };
    let cwd = env::current_dir().map(|p| p.display().to_string()).unwrap_or_default();
    let report =
        format!("{}\n{sid}\n{cwd}\n{}\n{}\n{}\n", std::process::id(), link(0), link(1), link(2));
    let dir = out_dir();
    let tmp = dir.join("report.tmp");
    // Rename so the test never reads a half-written report.
    if fs::write(&tmp, report).is_err() || fs::rename(&tmp, dir.join("report")).is_err() {
        return ExitCode::from(4);
    }
    ExitCode::SUCCESS
}

/// Role: start a child that asks for SIGTERM on our death, wait until it is armed, then exit.
fn role_pdeath_parent() -> ExitCode {
    let dir = out_dir();
    let Ok(exe) = env::current_exe() else {
        return ExitCode::from(3);
    };
    let Ok(child) = Command::new(exe)
        .env(ROLE, "pdeath-child")
        .env("CL_SYS_TEST_PARENT", std::process::id().to_string())
        .stdin(Stdio::null())
        .spawn()
    else {
        return ExitCode::from(4);
    };
    if fs::write(dir.join("child.pid"), child.id().to_string()).is_err() {
        return ExitCode::from(5);
    }
    if wait_for(5, || dir.join("armed").exists().then_some(())).is_none() {
        return ExitCode::from(6);
    }
    // Exit without waiting for the child: its parent-death signal must fire now.
    ExitCode::SUCCESS
}

/// Role: arm the parent-death signal, confirm the parent is still the expected one, then sleep.
fn role_pdeath_child() -> ExitCode {
    if set_parent_death_signal(libc::SIGTERM).is_err() {
        return ExitCode::from(3);
    }
    let expected: Option<u32> = env::var("CL_SYS_TEST_PARENT").ok().and_then(|s| s.parse().ok());
    if expected != Some(std::os::unix::process::parent_id()) {
        // The parent died before we armed the signal; that is the documented race.
        return ExitCode::from(4);
    }
    if fs::write(out_dir().join("armed"), "").is_err() {
        return ExitCode::from(5);
    }
    std::thread::sleep(Duration::from_secs(20));
    ExitCode::from(6)
}

fn run_self(role: &str, dir: &Path) -> std::process::ExitStatus {
    Command::new(env::current_exe().expect("own executable"))
        .env(ROLE, role)
        .env(OUT, dir)
        .stdin(Stdio::null())
        .status()
        .expect("run self")
}

fn scratch(name: &str) -> PathBuf {
    let dir = env::temp_dir().join(format!("cl-sys-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn test_daemonize() {
    let dir = scratch("daemonize");
    let status = run_self("daemon", &dir);
    assert!(status.success(), "original process exits 0: {status}");
    let report = wait_for(5, || fs::read_to_string(dir.join("report")).ok())
        .expect("daemon wrote its report");
    let lines: Vec<&str> = report.lines().collect();
    let [pid, sid, cwd, fd0, fd1, fd2] = lines[..] else {
        panic!("unexpected report {report:?}");
    };
    // SAFETY: getsid(0) has no preconditions.
    let our_sid = unsafe { libc::getsid(0) };
    assert_ne!(sid, our_sid.to_string(), "daemon runs in a new session");
    assert_ne!(sid, pid, "daemon is not a session leader (second fork)");
    assert_eq!(cwd, "/");
    for fd in [fd0, fd1, fd2] {
        assert_eq!(fd, "/dev/null");
    }
    let _ = fs::remove_dir_all(&dir);
}

fn test_parent_death_signal() {
    let dir = scratch("pdeath");
    let status = run_self("pdeath-parent", &dir);
    assert!(status.success(), "parent role: {status}");
    let child: u32 = fs::read_to_string(dir.join("child.pid"))
        .expect("child pid")
        .trim()
        .parse()
        .expect("numeric pid");
    let died = wait_for(5, || (!process_alive(child)).then_some(()));
    assert!(died.is_some(), "child {child} got SIGTERM when its parent died");
    let _ = fs::remove_dir_all(&dir);
}

fn main() -> ExitCode {
    match env::var(ROLE).as_deref() {
        Ok("daemon") => return role_daemon(),
        Ok("pdeath-parent") => return role_pdeath_parent(),
        Ok("pdeath-child") => return role_pdeath_child(),
        _ => {}
    }
    // `cargo test -- --list` and filters: behave enough like libtest to stay out of the way.
    if env::args().any(|a| a == "--list") {
        println!("daemonize: test\nparent_death_signal: test");
        return ExitCode::SUCCESS;
    }
    let tests: [(&str, fn()); 2] =
        [("daemonize", test_daemonize), ("parent_death_signal", test_parent_death_signal)];
    for (name, test) in tests {
        test();
        println!("test {name} ... ok");
    }
    ExitCode::SUCCESS
}
