//! The README's first command: `linuxha demo` runs from start to end and leaves nothing behind.

use std::process::Command;

#[test]
fn the_demo_fails_an_application_over_and_cleans_up() {
    if !std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    }) {
        println!("SKIPPED: the demo needs root (network namespaces)");
        return;
    }
    let output =
        Command::new(env!("CARGO_BIN_EXE_linuxha")).arg("demo").output().expect("demo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "demo failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}");
    for expected in [
        "membership agreed: node1, node2 up",
        "served by node1",
        "node1 declared itself isolated",
        "ext is served by node2",
        "removed: namespaces, switch, cgroups and node roots are gone",
    ] {
        assert!(
            stdout.contains(expected),
            "missing `{expected}`\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
        );
    }
    let lab = stdout
        .lines()
        .find_map(|l| l.strip_prefix("lab ").and_then(|r| r.split_whitespace().next()))
        .unwrap_or("");
    assert!(!lab.is_empty(), "lab name shown");
    let namespaces = Command::new("ip").args(["netns", "list"]).output().expect("ip netns list");
    assert!(
        !String::from_utf8_lossy(&namespaces.stdout).contains(lab),
        "lab {lab} left namespaces behind"
    );
}
