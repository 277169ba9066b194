//! The file helper, the ownership rules and root confinement against real files: FIFOs,
//! devices, oversized and growing files, world-writable scripts, `..` and symlink escapes.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cl_paths::secure::{check_strict, read_regular, Trust, KEY_CAP, STRICT_MODES_ENV, XML_CAP};
use cl_paths::{FileError, Paths};

/// The environment is process-wide: tests that change LINUXHA_STRICT_MODES take turns.
static ENV: Mutex<()> = Mutex::new(());

fn mode(path: &Path, bits: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(bits)).expect("chmod");
}

#[test]
fn a_fifo_is_refused_without_hanging() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("clconf.xml");
    let c = std::ffi::CString::new(fifo.to_str().expect("utf-8")).expect("c string");
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    let (tx, rx) = std::sync::mpsc::channel();
    let path = fifo.clone();
    std::thread::spawn(move || {
        let _ = tx.send(read_regular(&path, XML_CAP).map(|_| ()));
    });
    let result = rx.recv_timeout(Duration::from_secs(5)).expect("reading a FIFO must not hang");
    let err = result.expect_err("a FIFO is not a configuration");
    assert!(matches!(err, FileError::NotRegular { what: "a FIFO", .. }), "{err}");
    assert!(err.is_config());
    assert_eq!(err.to_string(), format!("{} is a FIFO, not a regular file", fifo.display()));
}

#[test]
fn a_symlink_to_dev_zero_is_refused_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let link = dir.path().join("clconf.xml");
    symlink("/dev/zero", &link).expect("symlink");
    let started = Instant::now();
    let err = read_regular(&link, XML_CAP).expect_err("a device is not a configuration");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(matches!(err, FileError::NotRegular { what: "a character device", .. }), "{err}");
}

#[test]
fn directories_and_missing_files_are_configuration_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = read_regular(dir.path(), XML_CAP).expect_err("a directory");
    assert!(err.is_config());
    assert!(err.to_string().ends_with("is a directory, not a regular file"), "{err}");
    let err = read_regular(&dir.path().join("nothing"), XML_CAP).expect_err("missing");
    assert!(matches!(err, FileError::Missing { .. }) && err.is_config());
}

#[test]
fn oversized_files_are_refused_before_reading_and_nothing_is_quoted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("cluster.key");
    fs::write(&key, "S".repeat(KEY_CAP as usize + 1)).expect("write");
    let err = read_regular(&key, KEY_CAP).expect_err("too large");
    assert!(
        matches!(err, FileError::TooLarge { size, cap, .. } if size == KEY_CAP + 1 && cap == KEY_CAP)
    );
    assert!(!err.to_string().contains('S'.to_string().repeat(2).as_str()), "{err}");
    fs::write(&key, "ab".repeat(32)).expect("write");
    assert_eq!(read_regular(&key, KEY_CAP).expect("small enough").len(), 64);
}

#[test]
fn world_writable_scripts_and_directories_are_refused_unless_overridden() {
    let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let root = tempfile::tempdir().expect("tempdir");
    let app = root.path().join("etc/cluster/apache");
    fs::create_dir_all(&app).expect("mkdir");
    let start = app.join("start");
    fs::write(&start, "#!/bin/sh\n").expect("write");
    mode(&start, 0o755);
    check_strict(&start, root.path(), Trust::Config).expect("root-owned 0755 is fine");

    mode(&start, 0o777);
    let err = check_strict(&start, root.path(), Trust::Config).expect_err("world-writable");
    let text = err.to_string();
    assert!(text.contains("writable by group or others") && text.contains("mode 0777"), "{text}");
    assert!(text.contains(&format!("chmod go-w {}", start.display())), "{text}");

    mode(&start, 0o755);
    mode(&app, 0o775);
    let err = check_strict(&start, root.path(), Trust::Config).expect_err("group-writable dir");
    assert!(err.to_string().starts_with(&app.display().to_string()), "{err}");
    mode(&app, 0o755);

    let key = root.path().join("etc/cluster/cluster.key");
    fs::write(&key, "00").expect("write");
    mode(&key, 0o644);
    let err = check_strict(&key, root.path(), Trust::Secret).expect_err("readable key");
    assert!(err.to_string().contains("chmod 600"), "{err}");
    mode(&key, 0o600);
    check_strict(&key, root.path(), Trust::Secret).expect("0600 key");

    // SAFETY: changing the owner of our own temp file.
    let c = std::ffi::CString::new(start.to_str().expect("utf-8")).expect("c string");
    assert_eq!(unsafe { libc::chown(c.as_ptr(), 4321, 4321) }, 0, "chown (tests run as root)");
    let err = check_strict(&start, root.path(), Trust::Config).expect_err("foreign owner");
    assert!(err.to_string().contains("uid 4321") && err.to_string().contains("chown root"));

    std::env::set_var(STRICT_MODES_ENV, "no");
    let overridden = check_strict(&start, root.path(), Trust::Config);
    std::env::remove_var(STRICT_MODES_ENV);
    overridden.expect("LINUXHA_STRICT_MODES=no turns the check off");
}

#[test]
fn dot_dot_and_symlinks_cannot_leave_the_root() {
    let root = tempfile::tempdir().expect("tempdir");
    let outside = tempfile::tempdir().expect("tempdir");
    let paths = Paths::new(root.path());
    fs::create_dir_all(root.path().join("etc/cluster")).expect("mkdir");
    let inside = paths.confine(Path::new("/etc/cluster/cluster.key")).expect("inside");
    assert!(inside.starts_with(fs::canonicalize(root.path()).expect("canon")));

    let err = paths.confine(Path::new("/etc/../../../tmp/x.key")).expect_err("`..` escape");
    assert!(matches!(err, FileError::OutsideRoot { .. }), "{err}");
    assert!(err.to_string().contains("outside the root"), "{err}");
    paths.confine(Path::new("/etc/cluster/../cluster/x")).expect("`..` that stays inside");

    symlink(outside.path(), root.path().join("etc/cluster/keys")).expect("symlink");
    let err = paths.confine(Path::new("/etc/cluster/keys/cluster.key")).expect_err("symlinked dir");
    assert!(matches!(err, FileError::OutsideRoot { .. }), "{err}");

    symlink("/nonexistent/elsewhere", root.path().join("etc/cluster/dangling")).expect("symlink");
    paths.confine(Path::new("/etc/cluster/dangling")).expect_err("dangling symlink");

    assert_eq!(Paths::new("/").confine(Path::new("/etc/../tmp")).expect("/"), Path::new("/tmp"));

    // A program may be a link to one elsewhere (installed command links are); its directory
    // may not lead out.
    symlink("/bin/true", root.path().join("etc/cluster/agent")).expect("symlink");
    paths.confine(Path::new("/etc/cluster/agent")).expect_err("file link leads out");
    let program = paths.confine_program(Path::new("/etc/cluster/agent")).expect("program link");
    assert!(program.ends_with("etc/cluster/agent"), "{program:?}");
    paths.confine_program(Path::new("/etc/cluster/keys/agent")).expect_err("symlinked dir");
    paths.confine_program(Path::new("/etc/../../bin/true")).expect_err("`..` escape");
}
