//! The migration guide's commands, with its exact flags, on the example cluster.

mod common;

use common::{text, Node};

fn built_version(node: &Node, file: &str) -> u64 {
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(node.file(file)).expect("built file")).expect("json");
    json["version"].as_u64().expect("version")
}

#[test]
fn seed_commands_build_the_cluster_and_the_apache_application() {
    let node = Node::with_example("node1");
    std::fs::create_dir_all(node.file("dev/linuxha")).expect("dev dir");
    // A 16 MiB image stands in for the application's disk (no DRBD/LVM on this machine).
    let image = std::fs::File::create(node.file("dev/linuxha/apache")).expect("image");
    image.set_len(16 << 20).expect("size");

    let out = node.run("clbuild", &["--genkey"]);
    assert!(out.status.success(), "{}", text(&out));

    let out = node.run("clbuild", &["--verbose", "--force"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("installed version 1"), "{}", text(&out));

    // Without --force an empty device is left alone and the command says why.
    let out = node.run("clbuildapp", &["--vgbuild", "--application", "apache"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("holds no filesystem; run with --force"),
        "{}",
        text(&out)
    );

    let out =
        node.run("clbuildapp", &["--force", "--vgbuild", "--verbose", "--application", "apache"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(node.file("apache").is_dir(), "mount point created");

    let out =
        node.run("clbuildapp", &["--force", "--build", "--verbose", "--application", "apache"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(built_version(&node, "etc/cluster/.built/app-apache.json"), 1);

    // Quiet on success without --verbose.
    let out = node.run("clbuildapp", &["--force", "--build", "--application", "apache"]);
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "{}",
        text(&out)
    );
    assert_eq!(built_version(&node, "etc/cluster/.built/app-apache.json"), 2);

    // clstat answers even though the cluster is not formed: it says so and exits 3.
    let out = node.run("clstat", &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("cluster1"), "{}", text(&out));
}

#[test]
fn vgbuild_never_overwrites_a_different_filesystem() {
    let node = Node::with_example("node1");
    std::fs::create_dir_all(node.file("dev/linuxha")).expect("dev dir");
    let image = node.file("dev/linuxha/apache");
    std::fs::File::create(&image).expect("image").set_len(16 << 20).expect("size");
    let mkfs = std::process::Command::new("mkfs.ext2")
        .arg("-q")
        .arg(&image)
        .status()
        .expect("mkfs.ext2 runs");
    assert!(mkfs.success());
    assert!(node.run("clbuild", &["--genkey"]).status.success());
    assert!(node.run("clbuild", &[]).status.success());
    let before = std::fs::read(&image).expect("image");
    let out = node.run("clbuildapp", &["--force", "--vgbuild", "--application", "apache"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("holds a filesystem of type ext2, not ext4"),
        "{}",
        text(&out)
    );
    assert!(std::fs::read(&image).expect("image") == before, "device must be untouched");
}

#[test]
fn a_broken_configuration_changes_nothing_and_exits_2() {
    let node = Node::with_example("node1");
    assert!(node.run("clbuild", &["--genkey"]).status.success());
    assert!(node.run("clbuild", &[]).status.success());
    let built = std::fs::read(node.file("etc/cluster/.built/clconf.json")).expect("built");

    let clconf = node.file("etc/cluster/clconf.xml");
    let good = std::fs::read_to_string(&clconf).expect("clconf");
    let broken = good
        .replace("<clhbd_port>9904</clhbd_port>", "")
        .replace("<cllockd_port>9902</cllockd_port>", "<cllockd_port>99020</cllockd_port>");
    std::fs::write(&clconf, broken).expect("write");

    let out = node.run("clbuild", &["--verbose", "--force"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("missing <clhbd_port>"), "{stderr}");
    assert!(stderr.contains("port `99020` must be a number from 1 to 65535"), "{stderr}");
    assert!(stderr.contains("clbuild: 2 errors in"), "{stderr}");
    assert_eq!(
        std::fs::read(node.file("etc/cluster/.built/clconf.json")).expect("built"),
        built,
        "built config untouched"
    );
    assert!(!node.file("etc/cluster/.built/clconf.json.prev").exists(), "no new version was made");
}

#[test]
fn a_node_outside_the_cluster_is_refused() {
    let node = Node::with_example("node9");
    assert!(node.run("clbuild", &["--genkey"]).status.success());
    let out = node.run("clbuild", &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("this node (`node9`) is not one of the nodes"),
        "{}",
        text(&out)
    );
}

#[test]
fn rollback_reinstalls_the_previous_build_as_a_new_version() {
    let node = Node::with_example("node1");
    assert!(node.run("clbuild", &["--genkey"]).status.success());
    assert!(node.run("clbuild", &[]).status.success());
    let clconf = node.file("etc/cluster/clconf.xml");
    let changed = std::fs::read_to_string(&clconf)
        .expect("read")
        .replace("profile=\"default\"", "profile=\"fast\"");
    std::fs::write(&clconf, changed).expect("write");
    assert!(node.run("clbuild", &[]).status.success());
    assert_eq!(built_version(&node, "etc/cluster/.built/clconf.json"), 2);
    let out = node.run("clbuild", &["--rollback"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(built_version(&node, "etc/cluster/.built/clconf.json"), 3);
    let json = std::fs::read_to_string(node.file("etc/cluster/.built/clconf.json")).expect("built");
    assert!(json.contains("\"profile\": \"default\""), "{json}");
}

#[test]
fn genkey_does_not_replace_a_key_without_force() {
    let node = Node::with_example("node1");
    assert!(node.run("clbuild", &["--genkey"]).status.success());
    let key = std::fs::read(node.file("etc/cluster/cluster.key")).expect("key");
    let out = node.run("clbuild", &["--genkey"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(std::fs::read(node.file("etc/cluster/cluster.key")).expect("key"), key);
    use std::os::unix::fs::PermissionsExt;
    let mode =
        std::fs::metadata(node.file("etc/cluster/cluster.key")).expect("meta").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}
