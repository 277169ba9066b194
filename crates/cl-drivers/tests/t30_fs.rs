//! Filesystem driver on real ext4 images and loop devices (root only).
//!
//! Every test body runs in a child process in a private mount namespace (this test binary run
//! again under `unshare --mount --propagation private`), so no mount can leak into the host's
//! namespace. The parent owns the scratch directory: it checks afterwards that no loop device
//! is left attached to a file in it and that the host sees no mount under it, detaches any loop
//! device left over, and removes the directory.

use std::fs::File;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use cl_drivers::fs::{self, CheckOutcome, FsError, FsSpec};

const BODY_ENV: &str = "CL_DRIVERS_T30_BODY";
const DIR_ENV: &str = "CL_DRIVERS_T30_DIR";
const PARENT_NS_ENV: &str = "CL_DRIVERS_T30_PARENT_NS";
/// Generous timeout for operations expected to succeed.
const T: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Parent side.

fn which(tool: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].iter().map(PathBuf::from))
        .any(|d| d.join(tool).is_file())
}

/// Why these tests cannot run here, if they cannot.
fn unsupported() -> Option<String> {
    // SAFETY: geteuid(2) takes no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root".into());
    }
    for tool in ["unshare", "mkfs.ext4", "e2fsck", "debugfs", "losetup", "mount", "umount", "sh"] {
        if !which(tool) {
            return Some(format!("{tool} not found"));
        }
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some("no /dev/loop-control".into());
    }
    None
}

/// Loop devices bound to a file under `dir` (by the path in sysfs).
fn loops_under(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/sys/block") else { return found };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        if let Ok(file) = std::fs::read_to_string(e.path().join("loop/backing_file")) {
            let file = PathBuf::from(file.trim_end_matches('\n'));
            if file.starts_with(dir) {
                found.push((format!("/dev/{name}"), file));
            }
        }
    }
    found
}

/// Mounts the calling process sees under `dir`.
fn mounts_under(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let dir = dir.to_string_lossy().into_owned();
    text.lines()
        .filter(|l| l.split(' ').nth(4).is_some_and(|mp| mp.starts_with(&dir)))
        .map(str::to_owned)
        .collect()
}

/// The scratch directory, owned by the parent.
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Result<Scratch> {
        let path = std::env::temp_dir().join(format!("cl-t30-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)?;
        Ok(Scratch { path: path.canonicalize()? })
    }

    /// Waits up to `limit` for the loop devices on files in the directory to go away (autoclear
    /// is asynchronous once the child's namespace is gone), then detaches and returns the rest.
    fn leftover_loops(&self, limit: Duration) -> Vec<(String, PathBuf)> {
        let start = Instant::now();
        while !loops_under(&self.path).is_empty() && start.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(20));
        }
        let left = loops_under(&self.path);
        for (dev, _) in &left {
            let _ = Command::new("losetup").args(["-d", dev]).status();
        }
        left
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = self.leftover_loops(Duration::ZERO);
        if mounts_under(&self.path).is_empty() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn wait_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        if start.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs body `name` in a child process in a private mount namespace.
fn isolated(name: &str) -> Result<()> {
    if let Some(why) = unsupported() {
        println!("SKIPPED t30 {name}: {why}");
        return Ok(());
    }
    let started = Instant::now();
    let scratch = Scratch::new(name)?;
    let my_ns = std::fs::read_link("/proc/self/ns/mnt")?;
    let mut child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--"])
        .arg(std::env::current_exe()?)
        .args(["--exact", "t30_child", "--ignored", "--nocapture", "--test-threads=1"])
        .env(BODY_ENV, name)
        .env(DIR_ENV, &scratch.path)
        .env(PARENT_NS_ENV, &my_ns)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting unshare")?;
    let pipes = [
        child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
        child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
    ];
    let readers: Vec<_> = pipes
        .into_iter()
        .flatten()
        .map(|mut p| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = p.read_to_string(&mut s);
                s
            })
        })
        .collect();
    let status = wait_timeout(&mut child, Duration::from_secs(60));
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    for r in readers {
        print!("{}", r.join().unwrap_or_default());
    }
    let leaked_mounts = mounts_under(&scratch.path);
    let leaked_loops = scratch.leftover_loops(Duration::from_secs(3));
    println!("t30 {name} took {:?}", started.elapsed());
    let status = status.ok_or_else(|| anyhow!("{name}: child still running after 60 s, killed"))?;
    ensure!(status.success(), "{name} failed in its mount namespace: {status}");
    ensure!(leaked_mounts.is_empty(), "mounts leaked into the host namespace: {leaked_mounts:?}");
    ensure!(leaked_loops.is_empty(), "loop devices left attached: {leaked_loops:?}");
    Ok(())
}

#[test]
fn t30_round_trip() -> Result<()> {
    isolated("round_trip")
}

#[test]
fn t30_refusals() -> Result<()> {
    isolated("refusals")
}

#[test]
fn t30_fsck() -> Result<()> {
    isolated("fsck")
}

#[test]
fn t30_busy_holders_killed() -> Result<()> {
    isolated("busy")
}

#[test]
fn t30_still_busy() -> Result<()> {
    isolated("still_busy")
}

// ---------------------------------------------------------------------------------------------
// Child side: the bodies, in a private mount namespace.

/// Not a test by itself: the body selected by `CL_DRIVERS_T30_BODY`, run by [`isolated`].
#[test]
#[ignore = "runs inside a private mount namespace, started by the other t30 tests"]
fn t30_child() -> Result<()> {
    let Ok(body) = std::env::var(BODY_ENV) else { return Ok(()) };
    let dir = PathBuf::from(std::env::var(DIR_ENV)?);
    let parent_ns = std::env::var(PARENT_NS_ENV)?;
    let ns = std::fs::read_link("/proc/self/ns/mnt")?;
    ensure!(ns != Path::new(&parent_ns), "not in a private mount namespace: {}", ns.display());
    match body.as_str() {
        "round_trip" => round_trip(&dir),
        "refusals" => refusals(&dir),
        "fsck" => fsck(&dir),
        "busy" => busy(&dir),
        "still_busy" => still_busy(&dir),
        other => bail!("unknown body {other}"),
    }
}

fn run(cmd: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(cmd).args(args).output().with_context(|| format!("running {cmd}"))?;
    ensure!(
        out.status.success(),
        "{cmd} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A fresh ext4 image of `mb` MiB.
fn mkfs(img: &Path, mb: u64) -> Result<()> {
    File::create(img)?.set_len(mb << 20)?;
    run("mkfs.ext4", &["-q", "-F", &img.to_string_lossy()])?;
    Ok(())
}

fn debugfs(img: &Path, request: &str) -> Result<()> {
    run("debugfs", &["-w", "-R", request, &img.to_string_lossy()]).map(|_| ())
}

fn spec(device: &Path, mountpoint: &Path) -> FsSpec {
    FsSpec {
        device: device.to_owned(),
        mountpoint: mountpoint.to_owned(),
        fstype: "ext4".into(),
        options: String::new(),
        fsck: true,
    }
}

/// The loop devices bound to exactly this file.
fn loops_of(img: &Path) -> Vec<String> {
    loops_under(img).into_iter().filter(|(_, f)| f == img).map(|(d, _)| d).collect()
}

/// Polls `cond` for up to `limit`.
fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The mountinfo line for `mp` in this namespace.
fn mountinfo_line(mp: &Path) -> Option<String> {
    let mp = mp.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .ok()?
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(mp.as_str()))
        .map(str::to_owned)
}

/// A loop device set up by the test itself (not by the driver), detached on drop.
struct TestLoop {
    path: String,
}

impl TestLoop {
    fn attach(img: &Path) -> Result<TestLoop> {
        let path = run("losetup", &["--find", "--show", &img.to_string_lossy()])?.trim().to_owned();
        Ok(TestLoop { path })
    }
}

impl Drop for TestLoop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.path]).status();
    }
}

fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let v = f();
    println!("  {what}: {:?}", t.elapsed());
    v
}

fn round_trip(dir: &Path) -> Result<()> {
    let img = dir.join("a.img");
    mkfs(&img, 32)?;
    let mp = dir.join("mnt/a"); // Parent directory missing too: created.
    let mut s = spec(&img, &mp);
    s.options = "noatime,nodev,data=ordered".into();

    ensure!(!fs::is_mounted(&s)?, "mounted before mount");
    ensure!(timed("check", || fs::check(&s, T))? == CheckOutcome::Clean);
    timed("mount", || fs::mount(&s, T))?;
    ensure!(fs::is_mounted(&s)?, "not mounted after mount");
    let loops = loops_of(&img);
    ensure!(loops.len() == 1, "one loop device expected: {loops:?}");
    let line = mountinfo_line(&mp).context("no mountinfo line")?;
    ensure!(line.contains("noatime") && line.contains("nodev"), "options not applied: {line}");
    ensure!(line.contains(&loops[0]), "{line}");
    std::fs::write(mp.join("data.txt"), "survives")?;

    // Idempotent: same device already there.
    timed("mount again", || fs::mount(&s, T))?;
    ensure!(loops_of(&img) == loops, "second mount attached another loop device");
    match fs::check(&s, T)? {
        CheckOutcome::Skipped { reason } if reason.contains("already mounted") => {}
        other => bail!("check while mounted: {other:?}"),
    }

    let out = timed("unmount", || fs::unmount(&s, T))?;
    println!("  unmount outcome: {out:?}");
    ensure!(out.was_mounted && out.killed.is_empty(), "{out:?}");
    ensure!(out.loop_detached == Some(PathBuf::from(&loops[0])), "{out:?}");
    ensure!(loops_of(&img).is_empty(), "loop device still attached after unmount");
    ensure!(!fs::is_mounted(&s)?, "still mounted after unmount");
    ensure!(!mp.join("data.txt").exists(), "data visible with the filesystem unmounted");
    let again = fs::unmount(&s, T)?;
    ensure!(!again.was_mounted && again.loop_detached.is_none(), "{again:?}");
    ensure!(fs::check(&s, T)? == CheckOutcome::Clean, "not clean after a clean unmount");

    // Again, by a symlink to the image and read-only: the data survived the remount.
    let link = dir.join("link.img");
    std::os::unix::fs::symlink(&img, &link)?;
    let mut ro = spec(&link, &mp);
    ro.options = "ro".into();
    fs::mount(&ro, T)?;
    ensure!(fs::is_mounted(&s)? && fs::is_mounted(&ro)?, "symlink and image are the same device");
    ensure!(std::fs::read_to_string(mp.join("data.txt"))? == "survives");
    let err = std::fs::write(mp.join("new.txt"), "x").expect_err("write on a ro mount");
    ensure!(err.raw_os_error() == Some(libc::EROFS), "{err}");
    ensure!(fs::unmount(&ro, T)?.loop_detached.is_some());
    ensure!(loops_of(&img).is_empty());

    // A block device given by a symlink (a loop device the test set up, standing in for a
    // disk): mounted and unmounted, but never detached by the driver.
    let tl = TestLoop::attach(&img)?;
    let dev_link = dir.join("disk");
    std::os::unix::fs::symlink(&tl.path, &dev_link)?;
    let b = spec(&dev_link, &dir.join("mnt/b"));
    fs::mount(&b, T)?;
    ensure!(fs::is_mounted(&b)?);
    ensure!(fs::is_mounted(&spec(Path::new(&tl.path), &b.mountpoint))?, "by its real name");
    ensure!(fs::is_mounted(&spec(&img, &b.mountpoint))?, "the image behind the loop device");
    ensure!(std::fs::read_to_string(b.mountpoint.join("data.txt"))? == "survives");
    let out = fs::unmount(&b, T)?;
    ensure!(out.was_mounted && out.loop_detached.is_none(), "{out:?}");
    ensure!(loops_of(&img) == vec![tl.path.clone()], "the test's own loop device was detached");
    drop(tl);
    Ok(())
}

fn refusals(dir: &Path) -> Result<()> {
    let (a, b) = (dir.join("a.img"), dir.join("b.img"));
    mkfs(&a, 32)?;
    mkfs(&b, 32)?;
    let (mp1, mp2) = (dir.join("mnt1"), dir.join("mnt2"));
    let sa = spec(&a, &mp1);
    fs::mount(&sa, T)?;

    // The same image on another mount point.
    let sa2 = spec(&a, &mp2);
    let err = fs::mount(&sa2, T).expect_err("mounted twice");
    println!("  {err}");
    match &err {
        FsError::MountedElsewhere { elsewhere, .. } if elsewhere == &vec![mp1.clone()] => {}
        other => bail!("expected MountedElsewhere on {}: {other:?}", mp1.display()),
    }
    let msg = err.to_string();
    for part in [&a, &mp1, &mp2] {
        ensure!(msg.contains(&*part.to_string_lossy()), "{msg} does not name {}", part.display());
    }
    ensure!(
        matches!(fs::check(&sa2, T), Err(FsError::MountedElsewhere { .. })),
        "fsck of a mounted fs"
    );
    // Unmounting it from where it is not: the data is not released, said so, nothing touched.
    let err = fs::unmount(&sa2, T).expect_err("mounted elsewhere");
    ensure!(matches!(err, FsError::MountedElsewhere { .. }), "{err:?}");
    ensure!(fs::is_mounted(&sa)?, "unmount of the other spec touched the mount");
    ensure!(!fs::is_mounted(&sa2)?);

    // Another device on a mount point in use.
    let err = fs::mount(&spec(&b, &mp1), T).expect_err("mount point taken");
    println!("  {err}");
    ensure!(matches!(err, FsError::MountpointTaken { .. }), "{err:?}");
    let msg = err.to_string();
    ensure!(msg.contains(&*mp1.to_string_lossy()) && msg.contains(&*b.to_string_lossy()), "{msg}");
    ensure!(msg.contains("/dev/loop"), "names what is there: {msg}");

    // Something mounted over ours: unmount refuses rather than unmounting the wrong thing.
    run("mount", &["-t", "tmpfs", "cl-t30-over", &mp1.to_string_lossy()])?;
    let err = fs::unmount(&sa, T).expect_err("stacked mount");
    println!("  {err}");
    ensure!(err.to_string().contains("cl-t30-over"), "{err}");
    let over = std::fs::read_to_string("/proc/self/mountinfo")?.contains(" cl-t30-over ");
    ensure!(over && fs::is_mounted(&sa)?, "the driver unmounted something");
    run("umount", &[&mp1.to_string_lossy()])?;
    ensure!(fs::unmount(&sa, T)?.was_mounted);

    // Bind-mounted elsewhere (say by the application): unmounting ours does not release the
    // data, and unmount says so; once the bind mount is gone, it is done.
    let bound = dir.join("bound");
    std::fs::create_dir_all(&bound)?;
    fs::mount(&sa, T)?;
    run("mount", &["--bind", &mp1.to_string_lossy(), &bound.to_string_lossy()])?;
    let err = fs::unmount(&sa, T).expect_err("bind mount left");
    println!("  {err}");
    match &err {
        FsError::MountedElsewhere { elsewhere, .. } if elsewhere == &vec![bound.clone()] => {}
        other => bail!("expected MountedElsewhere on {}: {other:?}", bound.display()),
    }
    ensure!(!fs::is_mounted(&sa)?, "ours is unmounted");
    run("umount", &[&bound.to_string_lossy()])?;
    ensure!(!fs::unmount(&sa, T)?.was_mounted);
    ensure!(eventually(Duration::from_secs(2), || loops_of(&a).is_empty()), "loop after bind gone");

    // A disk whose device node disappears while mounted can still be unmounted (found by name).
    let tl = TestLoop::attach(&a)?;
    let node = dir.join("disk");
    let rdev = std::os::unix::fs::MetadataExt::rdev(&std::fs::metadata(&tl.path)?);
    let node_c = std::ffi::CString::new(node.to_string_lossy().as_bytes())?;
    // SAFETY: a valid NUL-terminated path; mknod(2) takes no other pointers.
    let rc = unsafe { libc::mknod(node_c.as_ptr(), libc::S_IFBLK | 0o600, rdev) };
    ensure!(rc == 0, "mknod: {}", std::io::Error::last_os_error());
    let gone = spec(&node, &mp1);
    fs::mount(&gone, T)?;
    std::fs::remove_file(&node)?;
    ensure!(fs::is_mounted(&gone)?, "mounted device without its node");
    ensure!(fs::unmount(&gone, T)?.was_mounted);
    ensure!(mountinfo_line(&mp1).is_none());
    drop(tl);

    // A block device mounted under one name, asked for under another (the image behind it).
    let tl = TestLoop::attach(&b)?;
    fs::mount(&spec(Path::new(&tl.path), &mp2), T)?;
    let err = fs::mount(&spec(&b, &mp1), T).expect_err("image behind a mounted loop");
    ensure!(
        matches!(&err, FsError::MountedElsewhere { elsewhere, .. } if elsewhere == &vec![mp2.clone()]),
        "{err:?}"
    );
    fs::unmount(&spec(Path::new(&tl.path), &mp2), T)?;
    drop(tl);

    // A device that does not exist, and one that is not a filesystem.
    let missing = dir.join("missing.img");
    let err = fs::mount(&spec(&missing, &mp1), T).expect_err("missing device");
    println!("  {err}");
    ensure!(
        matches!(err, FsError::Device { .. }) && err.to_string().contains("missing.img"),
        "{err}"
    );
    let zeros = dir.join("zeros.img");
    File::create(&zeros)?.set_len(8 << 20)?;
    let err = fs::mount(&spec(&zeros, &mp1), T).expect_err("not a filesystem");
    println!("  {err}");
    ensure!(matches!(err, FsError::Mount { .. }), "{err:?}");
    ensure!(
        eventually(Duration::from_secs(2), || loops_of(&zeros).is_empty()),
        "failed mount left its loop device"
    );
    ensure!(!fs::is_mounted(&spec(&zeros, &mp1))?);
    Ok(())
}

fn fsck(dir: &Path) -> Result<()> {
    let mp = dir.join("mnt");

    // Damage that preen mode repairs: the mount may go ahead.
    let r = dir.join("repairable.img");
    mkfs(&r, 32)?;
    debugfs(&r, "write /etc/hostname f")?;
    debugfs(&r, "clri f")?;
    debugfs(&r, "ssv state 0")?;
    match fs::check(&spec(&r, &mp), T)? {
        CheckOutcome::Repaired { output } if output.contains("CLEARED") => {
            println!("  repaired: {output}")
        }
        other => bail!("repairable: {other:?}"),
    }
    fs::mount(&spec(&r, &mp), T)?;
    fs::unmount(&spec(&r, &mp), T)?;

    // Damage that preen mode must not repair unattended: exit code 4, refuse.
    let u = dir.join("unrepairable.img");
    mkfs(&u, 32)?;
    debugfs(&u, "set_inode_field <2> mode 0100644")?;
    debugfs(&u, "ssv state 0")?;
    let err = fs::check(&spec(&u, &mp), T).expect_err("root inode not a directory");
    println!("  {err}");
    match &err {
        FsError::FsckFailed { code: Some(4), output, .. }
            if output.contains("UNEXPECTED INCONSISTENCY") => {}
        other => bail!("unrepairable: {other:?}"),
    }
    let msg = err.to_string();
    ensure!(msg.contains(&*u.to_string_lossy()) && msg.contains(&*mp.to_string_lossy()), "{msg}");

    // Zeroed primary superblock: e2fsck refuses (8), and the kernel would not mount it either.
    let z = dir.join("zeroed.img");
    mkfs(&z, 32)?;
    {
        use std::os::unix::fs::FileExt;
        std::fs::OpenOptions::new().write(true).open(&z)?.write_all_at(&[0u8; 1024], 1024)?;
    }
    let err = fs::check(&spec(&z, &mp), T).expect_err("zeroed superblock");
    println!("  {err}");
    match &err {
        FsError::FsckFailed { code: Some(8), output, .. } if output.contains("superblock") => {}
        other => bail!("zeroed superblock: {other:?}"),
    }
    let err = fs::mount(&spec(&z, &mp), T).expect_err("mount of a zeroed superblock");
    println!("  {err}");
    ensure!(matches!(err, FsError::Mount { .. }), "{err:?}");
    ensure!(
        eventually(Duration::from_secs(2), || loops_of(&z).is_empty()),
        "loop left after failed mount"
    );

    // Not checked: xfs (documented choice), and fsck off.
    let mut x = spec(&r, &mp);
    x.fstype = "xfs".into();
    match fs::check(&x, T)? {
        CheckOutcome::Skipped { reason } if reason.contains("log") => println!("  xfs: {reason}"),
        other => bail!("xfs: {other:?}"),
    }
    let mut off = spec(&u, &mp);
    off.fsck = false;
    ensure!(matches!(fs::check(&off, T)?, CheckOutcome::Skipped { .. }));

    // A checker that hangs is killed at the deadline, with what it started.
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin)?;
    let pidfile = dir.join("hang.pid");
    let script = bin.join("fsck.clt30");
    std::fs::write(
        &script,
        format!("#!/bin/sh\nsleep 30 &\necho $! > {}\nwait\n", pidfile.display()),
    )?;
    run("chmod", &["+x", &script.to_string_lossy()])?;
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::set_var("PATH", format!("{}:{path}", bin.display()));
    let mut h = spec(&r, &mp);
    h.fstype = "clt30".into();
    let t = Instant::now();
    let err = fs::check(&h, Duration::from_millis(500)).expect_err("hanging checker");
    let took = t.elapsed();
    println!("  {err} (returned after {took:?})");
    ensure!(matches!(err, FsError::Timeout { op: "fsck", .. }), "{err:?}");
    ensure!(took < Duration::from_millis(900), "deadline overrun: {took:?}");
    let sleeper = std::fs::read_to_string(&pidfile)?.trim().to_owned();
    ensure!(
        eventually(Duration::from_secs(2), || {
            std::fs::read_to_string(format!("/proc/{sleeper}/stat")).map_or(true, |s| {
                s.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z'))
            })
        }),
        "the checker's child survived"
    );
    Ok(())
}

/// Waits until `pid` has exec'd `comm`.
fn wait_comm(pid: u32, comm: &str) -> Result<()> {
    ensure!(
        eventually(Duration::from_secs(2), || {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
        }),
        "{pid} never became {comm}"
    );
    Ok(())
}

fn busy(dir: &Path) -> Result<()> {
    let img = dir.join("a.img");
    mkfs(&img, 32)?;
    let mp = dir.join("mnt");
    let s = spec(&img, &mp);
    fs::mount(&s, T)?;
    std::fs::write(mp.join("held"), "x")?;

    // Three holders: cwd inside, a file open inside, and one that ignores SIGTERM.
    let mut by_cwd = Command::new("sleep").arg("60").current_dir(&mp).spawn()?;
    let mut by_fd = Command::new("sleep")
        .arg("60")
        .current_dir("/")
        .stdin(File::open(mp.join("held"))?)
        .spawn()?;
    let mut stubborn =
        Command::new("sh").args(["-c", "trap '' TERM; exec sleep 60"]).current_dir(&mp).spawn()?;
    wait_comm(stubborn.id(), "sleep")?;
    let pids = [by_cwd.id(), by_fd.id(), stubborn.id()].map(|p| i32::try_from(p).unwrap_or(0));

    let t = Instant::now();
    let out = fs::unmount(&s, Duration::from_secs(6))?;
    let took = t.elapsed();
    println!("  unmount with holders: {out:?} in {took:?}");
    for pid in pids {
        ensure!(out.killed.contains(&(pid, "sleep".into())), "{pid} not in {:?}", out.killed);
    }
    ensure!(out.sigkilled == vec![pids[2]], "only the TERM-ignoring one needs SIGKILL: {out:?}");
    ensure!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(5),
        "grace of 2 s: {took:?}"
    );
    for (child, sig) in
        [(&mut by_cwd, libc::SIGTERM), (&mut by_fd, libc::SIGTERM), (&mut stubborn, libc::SIGKILL)]
    {
        let st = wait_timeout(child, Duration::from_secs(2)).context("holder still running")?;
        ensure!(
            st.signal() == Some(sig),
            "holder {} ended with {st}, expected signal {sig}",
            child.id()
        );
    }
    ensure!(
        !fs::is_mounted(&s)? && out.loop_detached.is_some() && loops_of(&img).is_empty(),
        "{out:?}"
    );
    Ok(())
}

fn still_busy(dir: &Path) -> Result<()> {
    let img = dir.join("a.img");
    mkfs(&img, 32)?;
    let mp = dir.join("mnt");
    let s = spec(&img, &mp);
    fs::mount(&s, T)?;

    // This process holds a file open: the driver never signals its own process, so the
    // filesystem stays busy until the deadline. Another holder is killed meanwhile.
    let held = File::create(mp.join("mine"))?;
    let mut other = Command::new("sleep").arg("60").current_dir(&mp).spawn()?;
    let me = i32::try_from(std::process::id())?;
    let my_comm = std::fs::read_to_string("/proc/self/comm")?.trim().to_owned();

    let t = Instant::now();
    let err = fs::unmount(&s, Duration::from_millis(1500)).expect_err("still busy");
    let took = t.elapsed();
    println!("  {err} (after {took:?})");
    ensure!(
        took >= Duration::from_millis(1500) && took < Duration::from_millis(1900),
        "deadline: {took:?}"
    );
    match &err {
        FsError::Busy { holders, .. } if holders == &vec![(me, my_comm.clone())] => {}
        other => bail!("expected Busy held by {my_comm}[{me}] only: {other:?}"),
    }
    let msg = err.to_string();
    ensure!(msg.contains(&*img.to_string_lossy()) && msg.contains(&*mp.to_string_lossy()), "{msg}");
    ensure!(msg.contains(&format!("{my_comm}[{me}]")), "{msg}");
    let st = wait_timeout(&mut other, Duration::from_secs(2)).context("other holder alive")?;
    ensure!(st.signal() == Some(libc::SIGTERM), "{st}");
    // Not lazily unmounted: still there, still usable.
    ensure!(fs::is_mounted(&s)? && mp.join("mine").exists(), "left mounted");
    ensure!(loops_of(&img).len() == 1);

    drop(held);
    let out = fs::unmount(&s, T)?;
    ensure!(out.was_mounted && out.killed.is_empty(), "{out:?}");
    ensure!(loops_of(&img).is_empty());
    Ok(())
}
