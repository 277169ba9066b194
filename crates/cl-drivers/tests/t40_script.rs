//! Start/stop scripts in an application cgroup (root only: they need a cgroup v2 hierarchy).
//! Each test makes its own uniquely named cgroup, removed by a guard even when the test fails.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cl_drivers::script::{self, AppCgroup, ScriptError, ScriptOutcome};

/// The cgroup v2 hierarchy to test in, or None (after printing SKIPPED) when not root or none.
fn cgroup_base(test: &str) -> Option<PathBuf> {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIPPED {test}: needs root");
        return None;
    }
    for base in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
        let base = Path::new(base);
        if base.join("cgroup.procs").exists() && base.join("cgroup.max.depth").exists() {
            return Some(base.to_path_buf());
        }
    }
    println!("SKIPPED {test}: no cgroup v2 hierarchy");
    None
}

fn unique(what: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("linuxha-{what}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// A test's cgroup `<base>/<unique>/web` and scratch directory; Drop kills and removes all.
struct Fixture {
    parent: PathBuf,
    cg: AppCgroup,
    dir: PathBuf,
}

impl Fixture {
    fn new(base: &Path) -> Fixture {
        let name = unique("t40");
        let parent = base.join(&name);
        let dir = std::env::temp_dir().join(&name);
        fs::create_dir_all(&dir).expect("scratch dir");
        let cg = AppCgroup::new(&parent, "web").expect("create cgroup");
        Fixture { parent, cg, dir }
    }

    /// Writes a file in the scratch directory, executable or not. It is written by a child
    /// process so that this (multi-threaded) process never holds it open for writing: a copy of
    /// such a descriptor in another test's fork-before-exec makes executing it fail (ETXTBSY).
    fn file(&self, name: &str, content: &str, executable: bool) -> PathBuf {
        let path = self.dir.join(name);
        let mode = if executable { "755" } else { "644" };
        let mut child = Command::new("sh")
            .args(["-c", "cat > \"$1\" && chmod $2 \"$1\"", "sh"])
            .arg(&path)
            .arg(mode)
            .stdin(Stdio::piped())
            .spawn()
            .expect("sh");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(content.as_bytes()).expect("write file");
        drop(stdin);
        assert!(child.wait().expect("wait").success());
        path
    }

    /// An executable `/bin/sh` script.
    fn script(&self, name: &str, body: &str) -> PathBuf {
        self.file(name, &format!("#!/bin/sh\n{body}"), true)
    }

    fn log(&self) -> PathBuf {
        self.dir.join("log/web.log")
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let cg = self.cg.path();
        let _ = fs::write(cg.join("cgroup.kill"), "1");
        let start = Instant::now();
        while !self.cg.is_empty().unwrap_or(true) && start.elapsed() < Duration::from_secs(3) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.cg.remove();
        let _ = fs::remove_dir(&self.parent);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// /proc/PID/stat fields after the comm: state, ppid, pgrp, session, …
fn stat(pid: u32) -> Option<(String, Vec<String>)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let fields = text[close + 1..].split_whitespace().map(str::to_owned).collect();
    Some((text[open + 1..close].to_owned(), fields))
}

/// Whether `pid` is gone (or a zombie waiting for init), polling up to a second.
fn gone(pid: u32) -> bool {
    let start = Instant::now();
    loop {
        match stat(pid) {
            None => return true,
            Some((_, f)) if f[0] == "Z" => return true,
            _ if start.elapsed() > Duration::from_secs(1) => return false,
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// `stat(pid)` once its comm is `comm` (or after a second, whatever it is then).
fn wait_for_comm(pid: u32, comm: &str) -> (String, Vec<String>) {
    let start = Instant::now();
    loop {
        let s = stat(pid).expect("process alive");
        if s.0 == comm || start.elapsed() > Duration::from_secs(1) {
            return s;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

const DAEMON: &str = "setsid sleep 300 </dev/null >/dev/null 2>&1 &\n";

#[tokio::test]
async fn daemon_stays_in_cgroup_after_start_and_stop_kills_it() {
    let Some(base) = cgroup_base("daemon_stays_in_cgroup_after_start_and_stop_kills_it") else {
        return;
    };
    let fx = Fixture::new(&base);
    let start = fx.script(
        "start",
        &format!("echo \"starting $1 for $LINUXHA_APP\"\n{DAEMON}echo started >&2\nexit 0\n"),
    );
    let stop = fx.script("stop", "echo stopping\n");
    let log = fx.log();

    let outcome = script::run_script(
        &start,
        &["start"],
        &[("LINUXHA_APP", "web")],
        &fx.cg,
        &log,
        Duration::from_secs(5),
    )
    .await
    .expect("start script");
    assert_eq!(outcome, ScriptOutcome::Exited(0));

    // The daemon left the script's session and process group but not the cgroup.
    let pids = fx.cg.pids().expect("pids");
    assert_eq!(pids.len(), 1, "only the daemon is left: {pids:?}");
    let daemon = pids[0];
    // The script may exit before its background child has exec'd sleep.
    let (comm, f) = wait_for_comm(daemon, "sleep");
    assert_eq!(comm, "sleep");
    assert_eq!(f[3], daemon.to_string(), "the daemon leads its own session");
    assert!(!fx.cg.is_empty().expect("events"));

    let report = script::stop_application(&stop, &fx.cg, &log, Duration::from_secs(5)).await;
    assert_eq!(report.script.as_ref().expect("stop script ran"), &ScriptOutcome::Exited(0));
    let killed = report.killed.as_ref().expect("kill_all");
    assert_eq!(killed.terminated, vec![daemon], "{killed:?}");
    assert!(killed.killed.is_empty(), "sleep dies of SIGTERM: {killed:?}");
    assert!(report.is_stopped());
    assert!(fx.cg.is_empty().expect("events"));
    assert!(fx.cg.pids().expect("pids").is_empty());
    assert!(gone(daemon));

    let text = fs::read_to_string(&log).expect("log");
    let headers: Vec<&str> = text.lines().filter(|l| l.contains(" start: ")).collect();
    assert_eq!(headers.len(), 2, "{text}");
    assert!(headers[0].starts_with("=== 20"), "{text}");
    assert!(headers[0].ends_with(&format!("Z start: {} start", start.display())), "{text}");
    assert!(headers[1].ends_with(&format!("Z start: {}", stop.display())), "{text}");
    for line in ["starting start for web", "started", "stopping"] {
        assert!(text.lines().any(|l| l == line), "{line:?} in {text}");
    }
    assert!(text.contains(&format!("end: {}: exited with status 0", start.display())), "{text}");
    assert!(text.contains(&format!("SIGTERM [{daemon}]")), "{text}");
}

#[tokio::test]
async fn overrunning_script_is_killed_but_its_detached_daemon_is_not() {
    let Some(base) = cgroup_base("overrunning_script_is_killed_but_its_detached_daemon_is_not")
    else {
        return;
    };
    let fx = Fixture::new(&base);
    let pidfile = fx.dir.join("child.pid");
    let body = format!(
        "{DAEMON}echo before\nsleep 30 &\necho $! > {}\nwait\necho never\n",
        pidfile.display()
    );
    let slow = fx.script("slow", &body);
    let log = fx.log();
    let limit = Duration::from_secs(1);
    let t0 = Instant::now();
    let outcome =
        script::run_script(&slow, &[], &[], &fx.cg, &log, limit).await.expect("script runs");
    let took = t0.elapsed();
    assert_eq!(outcome, ScriptOutcome::TimedOut);
    assert!(took >= limit && took < limit + Duration::from_millis(500), "took {took:?}");

    // The script's own child (same process group) is dead; the detached daemon is not.
    let child: u32 = fs::read_to_string(&pidfile).expect("pid").trim().parse().expect("pid");
    assert!(gone(child), "the script's sleep 30 was killed");
    let pids = fx.cg.pids().expect("pids");
    assert_eq!(pids.len(), 1, "{pids:?}");
    assert_eq!(wait_for_comm(pids[0], "sleep").0, "sleep");

    let killed = fx.cg.kill_all(Duration::from_secs(1)).await.expect("kill_all");
    assert_eq!(killed.pids(), pids);
    assert!(fx.cg.is_empty().expect("events"));

    let text = fs::read_to_string(&log).expect("log");
    assert!(text.lines().any(|l| l == "before"), "{text}");
    assert!(!text.contains("never"), "{text}");
    assert!(text.contains("timed out after 1s"), "{text}");
}

#[tokio::test]
async fn exit_codes_signals_and_unrunnable_scripts() {
    let Some(base) = cgroup_base("exit_codes_signals_and_unrunnable_scripts") else {
        return;
    };
    let fx = Fixture::new(&base);
    let log = fx.log();
    let t = Duration::from_secs(5);
    let run = |path: PathBuf| {
        let (cg, log) = (fx.cg.clone(), log.clone());
        async move { script::run_script(&path, &[], &[], &cg, &log, t).await }
    };

    let seven = fx.script("seven", "exit 7\n");
    assert_eq!(run(seven).await.expect("runs"), ScriptOutcome::Exited(7));
    let killed = fx.script("suicide", "kill -KILL $$\n");
    assert_eq!(run(killed).await.expect("runs"), ScriptOutcome::Signalled(libc::SIGKILL));

    let missing = fx.dir.join("no-such-script");
    let e = run(missing.clone()).await.expect_err("missing");
    assert!(matches!(e, ScriptError::NotFound { .. }), "{e:?}");
    assert_eq!(e.to_string(), format!("script {} does not exist", missing.display()));

    let plain = fx.file("plain", "#!/bin/sh\n", false);
    let e = run(plain).await.expect_err("not executable");
    assert!(e.to_string().contains("not executable"), "{e}");

    // The file exists, the interpreter on its #! line does not.
    let bad = fx.file("bad-interpreter", "#!/nonexistent/interpreter\n", true);
    let e = run(bad).await.expect_err("bad interpreter");
    assert!(e.to_string().contains("interpreter"), "{e}");

    // Nothing ran in the cgroup for the scripts that could not start; nothing is left.
    assert!(fx.cg.is_empty().expect("events"));
    let text = fs::read_to_string(&log).expect("log");
    assert!(text.contains("end: ") && text.contains("exited with status 7"), "{text}");
    assert!(text.contains("killed by signal 9"), "{text}");
}
