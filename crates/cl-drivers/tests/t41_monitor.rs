//! Health checks: process (with and without an application cgroup), TCP connect and command.
//! Only the cgroup case needs root; it makes a uniquely named cgroup removed by a guard.

use std::fs;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cl_drivers::monitor::{check, Check, MonitorResult, REASON_OUTPUT_MAX};
use cl_drivers::script::{self, AppCgroup, ScriptOutcome};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn unique(what: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("linuxha-{what}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let dir = std::env::temp_dir().join(unique("t41"));
        fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }

    /// Writes an executable `/bin/sh` script through a child process, so that this
    /// multi-threaded process never holds it open for writing (ETXTBSY in a concurrent fork).
    fn script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.0.join(name);
        let mut child = Command::new("sh")
            .args(["-c", "cat > \"$1\" && chmod 755 \"$1\"", "sh"])
            .arg(&path)
            .stdin(Stdio::piped())
            .spawn()
            .expect("sh");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(format!("#!/bin/sh\n{body}").as_bytes()).expect("write script");
        drop(stdin);
        assert!(child.wait().expect("wait").success());
        path
    }

    /// A symlink to `sleep` whose name becomes the comm of processes run through it.
    fn sleep_named(&self, name: &str) -> PathBuf {
        let sleep = ["/usr/bin/sleep", "/bin/sleep"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("sleep");
        let link = self.0.join(name);
        std::os::unix::fs::symlink(sleep, &link).expect("symlink");
        link
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A child killed and reaped on drop.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A process name unique to this test run, at most 15 bytes.
fn unique_comm(tag: &str) -> String {
    let s = format!("lh{tag}{}", std::process::id());
    s[..s.len().min(15)].to_owned()
}

/// Whether `pid` is gone (or a zombie waiting for init), polling up to a second.
fn gone(pid: u32) -> bool {
    let start = Instant::now();
    loop {
        let Ok(text) = fs::read_to_string(format!("/proc/{pid}/stat")) else { return true };
        let state = text.rsplit_once(')').map(|(_, r)| r.trim_start().starts_with('Z'));
        if state == Some(true) {
            return true;
        }
        if start.elapsed() > Duration::from_secs(1) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

const T: Duration = Duration::from_secs(2);

/// Checks until the result is Ok (a process just spawned may not have exec'd yet), for up
/// to two seconds.
async fn eventually_ok(kind: &Check, cgroup: Option<&AppCgroup>) {
    let start = Instant::now();
    loop {
        let r = check(kind, cgroup, T).await;
        if r.is_ok() {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(2), "{kind}: {r}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn process_anywhere() {
    let dir = Scratch::new();
    let name = unique_comm("a");
    let missing = Check::Process { name: name.clone() };
    let r = check(&missing, None, T).await;
    assert_eq!(r, MonitorResult::Failed(format!("no process named {name:?} is running")));

    let link = dir.sleep_named(&name);
    let _p = Reaped(Command::new(&link).arg("30").spawn().expect("spawn"));
    eventually_ok(&missing, None).await;
}

#[tokio::test]
async fn process_in_cgroup_only_counts_members() {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIPPED process_in_cgroup_only_counts_members: needs root");
        return;
    }
    let Some(base) = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .map(Path::new)
        .find(|b| b.join("cgroup.procs").exists() && b.join("cgroup.max.depth").exists())
    else {
        println!("SKIPPED process_in_cgroup_only_counts_members: no cgroup v2 hierarchy");
        return;
    };
    struct Cg(PathBuf, AppCgroup);
    impl Drop for Cg {
        fn drop(&mut self) {
            let _ = fs::write(self.1.path().join("cgroup.kill"), "1");
            let start = Instant::now();
            while !self.1.is_empty().unwrap_or(true) && start.elapsed() < Duration::from_secs(3) {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = self.1.remove();
            let _ = fs::remove_dir(&self.0);
        }
    }
    let parent = base.join(unique("t41"));
    let cg = Cg(parent.clone(), AppCgroup::new(&parent, "web").expect("cgroup"));
    let dir = Scratch::new();
    let name = unique_comm("c");
    let link = dir.sleep_named(&name);
    let kind = Check::Process { name: name.clone() };

    // Same name, outside the cgroup: found anywhere, not in the application.
    let outside = Reaped(Command::new(&link).arg("30").spawn().expect("spawn"));
    eventually_ok(&kind, None).await;
    let r = check(&kind, Some(&cg.1), T).await;
    let MonitorResult::Failed(reason) = r else { panic!("{r:?}") };
    assert!(reason.contains(&format!("{name:?}")) && reason.contains("cgroup"), "{reason}");

    // Started by the application's start script: inside, found.
    let start_script = dir.script("start", &format!("{} 30 >/dev/null 2>&1 &\n", link.display()));
    let log = dir.0.join("web.log");
    let outcome = script::run_script(&start_script, &[], &[], &cg.1, &log, T).await;
    assert_eq!(outcome.expect("start"), ScriptOutcome::Exited(0));
    eventually_ok(&kind, Some(&cg.1)).await;
    drop(outside);
    assert_eq!(check(&kind, Some(&cg.1), T).await, MonitorResult::Ok);
}

#[tokio::test]
async fn tcp_listener_and_closed_port() {
    let listener = TcpListener::bind((LOCALHOST, 0)).expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let kind = Check::Tcp { address: LOCALHOST, port };
    assert_eq!(check(&kind, None, T).await, MonitorResult::Ok);
    // The check closed with a reset (no FIN exchange, no TIME_WAIT left per check): the
    // server reads a reset, not an end of stream.
    let (mut served, _) = listener.accept().expect("the check's connection");
    let mut byte = [0u8; 1];
    let read = std::io::Read::read(&mut served, &mut byte);
    assert_eq!(
        read.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionReset),
        "the check's connection ends with a reset"
    );

    drop(listener);
    let r = check(&kind, None, T).await;
    let MonitorResult::Failed(reason) = r else { panic!("{r:?}") };
    assert!(reason.contains(&format!("127.0.0.1:{port}")), "{reason}");
    assert!(reason.to_lowercase().contains("refused"), "{reason}");
}

#[tokio::test]
async fn command_ok_failed_missing_and_chatty() {
    let dir = Scratch::new();
    let ok = Check::Command { path: dir.script("ok", "echo fine\nexit 0\n") };
    assert_eq!(check(&ok, None, T).await, MonitorResult::Ok);

    let three = dir.script("three", "echo 'disk full'\necho oops >&2\nexit 3\n");
    let r = check(&Check::Command { path: three.clone() }, None, T).await;
    assert_eq!(
        r,
        MonitorResult::Failed(format!(
            "{} exited with status 3: disk full | oops",
            three.display()
        ))
    );

    let missing = dir.0.join("missing");
    let r = check(&Check::Command { path: missing }, None, T).await;
    let MonitorResult::Failed(reason) = r else { panic!("{r:?}") };
    assert!(reason.starts_with("cannot run ") && reason.contains("No such file"), "{reason}");

    // Far more output than a pipe holds: read while running, trimmed in the reason.
    let chatty = dir.script(
        "chatty",
        "i=0\nwhile [ $i -lt 5000 ]; do echo line $i; i=$((i+1)); done\nexit 1\n",
    );
    let t0 = Instant::now();
    let r = check(&Check::Command { path: chatty.clone() }, None, T).await;
    assert!(t0.elapsed() < T, "not blocked on a full pipe");
    let MonitorResult::Failed(reason) = r else { panic!("{r:?}") };
    let prefix = format!("{} exited with status 1: line 0 | line 1 |", chatty.display());
    assert!(reason.starts_with(&prefix), "{reason}");
    assert!(reason.len() <= prefix.len() + REASON_OUTPUT_MAX + 10, "{}", reason.len());
}

#[tokio::test]
async fn hanging_command_times_out_and_is_killed() {
    let dir = Scratch::new();
    let pidfile = dir.0.join("sleep.pid");
    let body = format!("sleep 30 &\necho $! > {}\nwait\n", pidfile.display());
    let hang = Check::Command { path: dir.script("hang", &body) };
    let limit = Duration::from_secs(1);
    let t0 = Instant::now();
    assert_eq!(check(&hang, None, limit).await, MonitorResult::TimedOut);
    let took = t0.elapsed();
    assert!(took >= limit && took < limit + Duration::from_millis(500), "took {took:?}");
    let pid: u32 = fs::read_to_string(&pidfile).expect("pid").trim().parse().expect("pid");
    assert!(gone(pid), "the command's sleep was killed");
}

#[tokio::test]
async fn command_leftovers_are_killed_when_it_exits() {
    let dir = Scratch::new();
    let pidfile = dir.0.join("left.pid");
    let body = format!("sleep 30 >/dev/null 2>&1 &\necho $! > {}\nexit 0\n", pidfile.display());
    let kind = Check::Command { path: dir.script("leaves", &body) };
    let t0 = Instant::now();
    assert_eq!(check(&kind, None, T).await, MonitorResult::Ok);
    assert!(t0.elapsed() < Duration::from_millis(800), "took {:?}", t0.elapsed());
    let pid: u32 = fs::read_to_string(&pidfile).expect("pid").trim().parse().expect("pid");
    assert!(gone(pid), "the leftover sleep was killed");
}
