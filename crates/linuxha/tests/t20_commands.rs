//! Every command answers to its own name and to `linuxha <command>` and has --help.

mod common;

use common::{text, Node};

const COMMANDS: [&str; 15] = [
    "clbuild",
    "clbuildapp",
    "clform",
    "clhalt",
    "clstat",
    "clstartapp",
    "clhaltapp",
    "clswitchapp",
    "clsplitbrain",
    "cllock",
    "cldaemon",
    "cllockd",
    "clnetd",
    "clhbd",
    "clhbd2",
];

#[test]
fn every_command_has_help_under_both_names() {
    let node = Node::with_example("node1");
    for command in COMMANDS {
        let out = node.run("linuxha", &[command, "--help"]);
        assert!(out.status.success(), "{command}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage:"),
            "{command}: {}",
            text(&out)
        );
    }
    for command in ["clbuild", "clstat", "clform"] {
        let out = node.run(command, &["--help"]);
        assert!(out.status.success(), "{command}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(&format!("Usage: {command}"))
                || String::from_utf8_lossy(&out.stdout).contains("Usage: linuxha"),
            "{}",
            text(&out)
        );
    }
    for extra in ["install", "uninstall", "lab", "demo"] {
        let out = node.run("linuxha", &[extra, "--help"]);
        assert!(out.status.success(), "{extra}: {}", text(&out));
    }
}

#[test]
fn version_is_the_product_version() {
    let node = Node::with_example("node1");
    let out = node.run("linuxha", &["--version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("linuxha {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn usage_errors_exit_2_with_one_sentence() {
    let node = Node::with_example("node1");
    let out = node.run("clbuildapp", &["--application", "apache"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = node.run("clbuildapp", &["--build", "--application", "../etc"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("clbuildapp: application name"),
        "{}",
        text(&out)
    );
}

#[test]
fn cluster_commands_without_cldaemon_say_how_to_start_it() {
    let node = Node::with_example("node1");
    assert!(node.run("clbuild", &["--genkey"]).status.success());
    assert!(node.run("clbuild", &[]).status.success());
    for (command, args) in [("clform", vec!["--noapps"]), ("clhalt", vec!["--force"])] {
        let out = node.run(command, &args);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.starts_with(&format!("{command}: cldaemon is not running on this node")),
            "{stderr}"
        );
    }
}

#[test]
fn clstat_without_a_built_configuration_says_what_to_do() {
    let node = Node::with_example("node1");
    let out = node.run("clstat", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("run clbuild first"), "{}", text(&out));
}

#[test]
fn clstat_says_not_formed_and_exits_3_without_cldaemon() {
    let node = Node::with_example("node1");
    assert!(node.run("clbuild", &["--genkey"]).status.success());
    assert!(node.run("clbuild", &[]).status.success());
    let out = node.run("clstat", &["--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(value["cluster"], "cluster1");
    assert_eq!(value["state"], "not_formed");
    assert_eq!(value["nodes"].as_array().map(|a| a.len()), Some(2));
    let out = node.run("clstat", &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("State: NOT FORMED"), "{}", text(&out));
}
