//! cllock and the application lock without a formed cluster (no lab needed): one clear
//! sentence, exit 1, and the command is not run.

mod common;

use common::{text, Node};

#[test]
fn cllock_without_a_formed_cluster_runs_nothing() {
    let node = Node::with_example("node1");
    let ran = node.file("ran");
    let touch = format!("touch {}", ran.display());

    // Nothing built yet.
    let out = node.run("cllock", &["--name", "x", "--", "sh", "-c", &touch]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("cllock: ") && stderr.contains("run clbuild first"), "{stderr}");

    // Built, but the cluster is not formed (no cllockd).
    assert!(node.run("clbuild", &["--genkey"]).status.success());
    assert!(node.run("clbuild", &[]).status.success());
    let out = node.run("cllock", &["--name", "x", "--timeout", "1", "--", "sh", "-c", &touch]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!(
            "cllock: the cluster is not formed on this node (cllockd-cluster1 is not running); sh -c {touch} was not run"
        )
    );
    assert!(!ran.exists(), "the command did not run");

    // Bad names are usage errors.
    for name in ["", "a b", &"x".repeat(200)] {
        let out = node.run("cllock", &["--name", name, "--", "true"]);
        assert_eq!(out.status.code(), Some(2), "{name:?}: {}", text(&out));
    }
}
