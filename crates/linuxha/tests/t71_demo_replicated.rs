//! The README's second command: `linuxha demo --replicated` runs from start to end on two QEMU
//! guests, and the file written on node1 is served, identical, by node2 after node1's power-off.
//!
//! Needs root. Runs the release binary (`target/release/linuxha`, or the one in
//! LINUXHA_VMLAB_BINARY_DIR): the debug build is too slow for TCG guests. Holds the machine-wide
//! VM lab lock (/tmp/vmlab.lock) like every process that boots guests; the demo sees its parent
//! holding it and goes on.

use std::path::{Path, PathBuf};
use std::process::Command;

use cl_lab::vm::lock::{VmLabLock, SHARED_LOCK};

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    })
}

fn release_binary() -> PathBuf {
    let dir = std::env::var_os("LINUXHA_VMLAB_BINARY_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/release"));
    let binary = dir.join("linuxha");
    assert!(
        binary.is_file(),
        "{} missing: run `cargo build --release -p linuxha` first (scripts/test.sh does), or set LINUXHA_VMLAB_BINARY_DIR",
        binary.display()
    );
    binary
}

/// What the outside host fetched of the demo's file, in order (`[ext]# curl …/promise.txt -> …`).
fn fetched(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter(|l| l.starts_with("[ext]# curl ") && l.contains("/promise.txt "))
        .filter_map(|l| l.split_once("->").map(|(_, body)| body.trim().to_string()))
        .collect()
}

#[test]
fn the_replicated_demo_serves_node1s_file_from_node2_after_the_power_off() {
    if !is_root() {
        println!("SKIPPED: the replicated demo needs root (network namespaces, QEMU taps)");
        return;
    }
    let binary = release_binary();
    let _lock = VmLabLock::acquire(Path::new(SHARED_LOCK), |who| {
        eprintln!("t71: waiting for {SHARED_LOCK} ({who})");
    })
    .expect("the VM lab lock");
    let output =
        Command::new(&binary).args(["demo", "--replicated"]).output().expect("the demo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let context = format!("--- stdout\n{stdout}\n--- stderr\n{stderr}");
    assert!(output.status.success(), "demo --replicated failed\n{context}");
    for expected in [
        "webdata-www",
        "node1 Primary UpToDate, node2 Secondary UpToDate, Connected",
        "node1 is off",
        "answers again",
        "node2 Primary UpToDate",
        "removed",
    ] {
        assert!(stdout.contains(expected), "missing `{expected}`\n{context}");
    }
    let bodies = fetched(&stdout);
    assert_eq!(bodies.len(), 2, "the file fetched before and after the power-off\n{context}");
    assert!(bodies[0].starts_with("written on node1 at "), "{bodies:?}\n{context}");
    assert_eq!(bodies[0], bodies[1], "the same file before and after\n{context}");
    let lab = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("lab ").and_then(|r| r.split_whitespace().next()))
        .unwrap_or("");
    assert!(!lab.is_empty(), "lab name shown\n{context}");
    let namespaces = Command::new("ip").args(["netns", "list"]).output().expect("ip netns list");
    assert!(
        !String::from_utf8_lossy(&namespaces.stdout).contains(lab),
        "lab {lab} left namespaces behind"
    );
}

#[test]
fn fetched_bodies_are_read_in_order() {
    let out = "[ext]# curl http://10.10.0.110/promise.txt   ->  a b\nx\n[ext]# curl http://10.10.0.110/records   ->  [1]\n[ext]# curl http://10.10.0.110/promise.txt   ->  a b\n";
    assert_eq!(fetched(out), vec!["a b".to_string(), "a b".to_string()]);
}
