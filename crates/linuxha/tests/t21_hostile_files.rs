//! Hostile and careless files under the root: devices, FIFOs, directories and huge files
//! instead of configurations, files others may change, and paths that lead out of the root.
//! Each is refused with exit 2 and one sentence naming the path, and changes nothing.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{text, Node};

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The failure's sentence: the last line on stderr (configuration warnings come before it),
/// one line starting with the command name.
fn sentence(out: &Output, command: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let last = stderr.lines().last().unwrap_or_default().to_string();
    assert!(last.starts_with(&format!("{command}: ")), "{}", text(out));
    assert!(!stderr.lines().any(|l| l.starts_with(&format!("{command}: ")) && l != last));
    last
}

/// Run with a deadline: a command that hangs fails the test instead of the suite.
fn run_within(node: &Node, program: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(node.bin().join(program));
    command
        .args(args)
        .env("LINUXHA_ROOT", node.root())
        .env("LINUXHA_NODE", &node.name)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("spawn");
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("{program} {args:?} hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// Puts something at a path.
type Make = dyn Fn(&Path);

#[test]
fn a_device_fifo_directory_or_huge_file_as_clconf_exits_2_without_reading_it() {
    let node = Node::with_example("node1");
    assert!(node.run("clbuild", &["--genkey"]).status.success());
    let clconf = node.file("etc/cluster/clconf.xml");
    let cases: [(&str, &Make); 4] = [
        ("is a character device, not a regular file", &|p| symlink("/dev/zero", p).expect("ln")),
        ("is a FIFO, not a regular file", &|p| {
            let c = std::ffi::CString::new(p.to_str().expect("utf-8")).expect("c string");
            // SAFETY: a valid NUL-terminated path.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        }),
        ("is a directory, not a regular file", &|p| fs::create_dir(p).expect("mkdir")),
        ("is too large", &|p| fs::write(p, vec![b' '; 2 << 20]).expect("write")),
    ];
    for (expected, make) in cases {
        let _ = fs::remove_file(&clconf);
        let _ = fs::remove_dir(&clconf);
        make(&clconf);
        let started = Instant::now();
        let out = run_within(&node, "clbuild", &[], &[]);
        assert!(started.elapsed() < Duration::from_secs(10), "{expected}: too slow");
        assert_eq!(out.status.code(), Some(2), "{expected}: {}", text(&out));
        let said = sentence(&out, "clbuild");
        assert!(said.contains(&clconf.display().to_string()) && said.contains(expected), "{said}");
        assert!(!node.file("etc/cluster/.built/clconf.json").exists(), "nothing was built");
    }
}

#[test]
fn scripts_and_directories_others_may_change_are_refused_unless_strict_modes_are_off() {
    let node = Node::with_example("node1");
    assert!(node.run("clbuild", &["--genkey"]).status.success());
    assert!(node.run("clbuild", &[]).status.success(), "the example builds");
    let start = node.file("etc/cluster/apache/start");
    chmod(&start, 0o777);
    let out = run_within(&node, "clbuildapp", &["--build", "--application", "apache"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("chmod go-w {}", start.display())) && stderr.contains("0777"),
        "{stderr}"
    );
    assert!(!node.file("etc/cluster/.built/app-apache.json").exists());

    let out = run_within(
        &node,
        "clbuildapp",
        &["--build", "--application", "apache"],
        &[("LINUXHA_STRICT_MODES", "no")],
    );
    assert!(out.status.success(), "the documented override: {}", text(&out));
    chmod(&start, 0o755);

    let etc = node.file("etc/cluster");
    chmod(&etc, 0o777);
    let out = run_within(&node, "clbuild", &["--force"], &[]);
    chmod(&etc, 0o755);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let said = sentence(&out, "clbuild");
    assert!(said.contains(&format!("chmod go-w {}", etc.display())), "{said}");
}

#[test]
fn the_key_file_must_be_private_and_is_never_quoted() {
    let node = Node::with_example("node1");
    assert!(node.run("clbuild", &["--genkey"]).status.success());
    let key = node.file("etc/cluster/cluster.key");
    chmod(&key, 0o644);
    let out = run_within(&node, "clbuild", &[], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"), "{}", text(&out));

    // The key file pointing at some other file: its content is not echoed.
    let secret = node.file("etc/cluster/secret.txt");
    fs::write(&secret, "Qwerty-password\n").expect("write");
    chmod(&secret, 0o600);
    fs::remove_file(&key).expect("rm");
    symlink(&secret, &key).expect("ln");
    let out = run_within(&node, "clbuild", &[], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let said = sentence(&out, "clbuild");
    // The paths themselves may hold any letter (the temp dir's random name): look past them.
    let without_paths =
        said.replace(&key.display().to_string(), "").replace(&secret.display().to_string(), "");
    assert!(
        !without_paths.contains('Q') && !without_paths.contains("werty"),
        "the file was quoted: {said}"
    );
}

#[test]
fn genkey_cannot_write_outside_the_root() {
    let node = Node::with_example("node1");
    let outside = tempfile::tempdir().expect("tempdir");
    let escape = format!("/../../../../../../..{}/stolen.key", outside.path().display());
    let out = run_within(&node, "clbuild", &["--genkey", "--key-file", &escape], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(sentence(&out, "clbuild").contains("outside the root"), "{}", text(&out));

    // /etc/cluster/keys is a symlink to a directory outside the root.
    symlink(outside.path(), node.file("etc/cluster/keys")).expect("ln");
    let out = run_within(
        &node,
        "clbuild",
        &["--genkey", "--key-file", "/etc/cluster/keys/cluster.key"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(sentence(&out, "clbuild").contains("outside the root"), "{}", text(&out));
    assert_eq!(fs::read_dir(outside.path()).expect("list").count(), 0, "nothing written outside");
}
