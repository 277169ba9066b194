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

/// stderr of a command that must fail with exit 2 in one line starting with `start`.
fn one_line_exit_2(out: &std::process::Output, start: &str) {
    assert_eq!(out.status.code(), Some(2), "{}", text(out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with(start), "expected `{start}…`: {}", text(out));
    assert_eq!(stderr.lines().count(), 1, "{}", text(out));
    assert!(out.stdout.is_empty(), "{}", text(out));
}

#[test]
fn clap_usage_errors_are_one_line_starting_with_the_command_as_called() {
    let node = Node::with_example("node1");
    for (program, args, start) in [
        (
            "clswitchapp",
            &["--application", "apache", "--nod", "x"][..],
            "clswitchapp: unknown option --nod; see clswitchapp --help",
        ),
        ("clswitchapp", &[], "clswitchapp: missing --application NAME; see clswitchapp --help"),
        (
            "clstat",
            &["--json", "--watch"],
            "clstat: --json cannot be used with --watch; see clstat --help",
        ),
        ("clhalt", &["now"], "clhalt: unexpected argument `now`; see clhalt --help"),
        (
            "cllock",
            &["--name", "x", "--timeout", "soon", "--", "true"],
            "cllock: invalid value `soon` for --timeout",
        ),
        (
            "clbuildapp",
            &["--application", "apache"],
            "clbuildapp: missing --build or --vgbuild; see clbuildapp --help",
        ),
        ("clbuild", &["--bogus"], "clbuild: unknown option --bogus; see clbuild --help"),
    ] {
        one_line_exit_2(&node.run(program, args), start);
    }
    for (args, start) in [
        (
            &["clstartapp", "-x"][..],
            "linuxha clstartapp: unknown option -x; see linuxha clstartapp --help",
        ),
        (&["nosuch"], "linuxha: unknown command `nosuch`; see linuxha --help"),
        (&[], "linuxha: missing a command; see linuxha --help"),
        (&["--root"], "linuxha: a value is required for --root"),
        (&["lab"], "linuxha lab: missing a command; see linuxha lab --help"),
        (
            &["lab", "up", "--nodes", "99"],
            "linuxha lab up: invalid value `99` for --nodes: a lab has 1 to 16 nodes",
        ),
        (&["lab", "up", "--networks", "3"], "linuxha lab up: invalid value `3` for --networks"),
        (&["lab", "down"], "linuxha lab down: missing LAB; see linuxha lab down --help"),
        (
            &["lab", "loss", "lh1", "node1", "101"],
            "linuxha lab loss: invalid value `101` for PERCENT",
        ),
    ] {
        one_line_exit_2(&node.run("linuxha", args), start);
    }
    // --help and --version still print and exit 0, under both names.
    for (program, args) in [
        ("clswitchapp", &["--help"][..]),
        ("clswitchapp", &["--version"]),
        ("linuxha", &["lab", "up", "--help"]),
    ] {
        let out = node.run(program, args);
        assert!(out.status.success() && !out.stdout.is_empty(), "{}", text(&out));
    }
}

#[test]
fn unknown_names_exit_2_at_once_without_a_running_cluster() {
    let node = Node::with_example("node1");
    // Not a name at all: refused before anything is read, built configuration or not.
    one_line_exit_2(&node.run("clhalt", &["--node", "../x"]), "clhalt: node name `../x` must be");
    one_line_exit_2(
        &node.run("clswitchapp", &["-a", "apache", "--node", "../x"]),
        "clswitchapp: node name `../x` must be",
    );
    assert!(node.run("clbuild", &["--genkey"]).status.success());
    assert!(node.run("clbuild", &[]).status.success());
    for (program, args, start) in [
        ("clhalt", &["--node", "../x"][..], "clhalt: node name `../x` must be"),
        ("clhalt", &["--node", "node3"], "clhalt: there is no node `node3` in cluster `cluster1` (its nodes: node1, node2)"),
        ("clswitchapp", &["--application", "apache", "--node", "nosuch"], "clswitchapp: there is no node `nosuch` in cluster `cluster1` (its nodes: node1, node2)"),
        ("clswitchapp", &["--application", "nosuch"], "clswitchapp: there is no built application `nosuch` (no application is built on this node yet"),
        ("clstartapp", &["--application", "web", "--node", "node2"], "clstartapp: there is no built application `web`"),
        ("clhaltapp", &["--application=-x"], "clhaltapp: application name `-x` must be"),
        ("clsplitbrain", &["--application", "nosuch", "--keep", "node1", "--yes"], "clsplitbrain: there is no built application `nosuch`"),
        ("clbuildapp", &["--build", "--force", "--application", "apache", "--source", "node9"], "clbuildapp: there is no node `node9` in cluster `cluster1`"),
    ] {
        let t = std::time::Instant::now();
        one_line_exit_2(&node.run(program, args), start);
        assert!(t.elapsed() < std::time::Duration::from_secs(5), "{program} {args:?}: {:?}", t.elapsed());
    }
    // Once the application is built, it is named among the known ones.
    std::fs::create_dir_all(node.file("dev/linuxha")).expect("dev dir");
    let image = std::fs::File::create(node.file("dev/linuxha/apache")).expect("image");
    image.set_len(16 << 20).expect("size");
    for args in [
        &["--force", "--vgbuild", "--application", "apache"][..],
        &["--force", "--build", "--application", "apache"],
    ] {
        let out = node.run("clbuildapp", args);
        assert!(out.status.success(), "{}", text(&out));
    }
    one_line_exit_2(
        &node.run("clswitchapp", &["--application", "apach"]),
        "clswitchapp: there is no built application `apach` (built applications: apache;",
    );
    // A known application and node get as far as the cluster: not formed here (exit 1).
    let out = node.run("clswitchapp", &["--application", "apache", "--node", "node2"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

#[test]
fn lab_down_of_an_unknown_lab_exits_2() {
    let node = Node::with_example("node1");
    one_line_exit_2(
        &node.run("linuxha", &["lab", "down", "nosuchlab"]),
        "linuxha lab down: no lab named \"nosuchlab\": nothing to remove",
    );
    one_line_exit_2(
        &node.run("linuxha", &["lab", "down", "Bad/Name"]),
        "linuxha lab down: bad lab name",
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
