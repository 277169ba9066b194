//! `linuxha install` and `uninstall` under a throwaway root.

mod common;

use common::{text, Node};

#[test]
fn install_is_idempotent_and_uninstall_keeps_the_configuration() {
    let node = Node::with_example("node1");
    let root = node.root();
    let root_arg = root.to_str().expect("utf-8 path");
    for _ in 0..2 {
        let out = node.run("linuxha", &["install", "--root", root_arg, "--prefix", "/usr"]);
        assert!(out.status.success(), "{}", text(&out));
    }
    assert_eq!(
        std::fs::read_to_string(root.join("etc/cluster/VERSION")).expect("VERSION"),
        format!("{}\n", env!("CARGO_PKG_VERSION"))
    );
    assert!(root.join("var/log/cluster").is_dir() && root.join("run/cluster").is_dir());
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/linuxha-cldaemon.service"))
        .expect("unit");
    assert!(unit.contains("ExecStart=/usr/sbin/cldaemon --foreground"), "{unit}");
    // Every daemon is a child of cldaemon and inherits the limit: connections that pile up
    // must not leave them unable to accept.
    assert!(unit.contains("\nLimitNOFILE=65536\n"), "{unit}");
    for command in [
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
    ] {
        let link = root.join("usr/sbin").join(command);
        assert_eq!(std::fs::read_link(&link).expect("link").to_str(), Some("linuxha"), "{command}");
    }
    // The installed copy works under its command names.
    let out = std::process::Command::new(root.join("usr/sbin/clstat"))
        .arg("--version")
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", text(&out));

    let out = node.run("linuxha", &["uninstall", "--root", root_arg, "--prefix", "/usr"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!root.join("usr/sbin/clbuild").exists() && !root.join("usr/sbin/linuxha").exists());
    assert!(!root.join("etc/systemd/system/linuxha-cldaemon.service").exists());
    assert!(
        root.join("etc/cluster/clconf.xml").exists() && root.join("etc/cluster/VERSION").exists(),
        "configuration kept"
    );
}

#[test]
fn install_does_not_clobber_a_foreign_file() {
    let node = Node::with_example("node1");
    let root = node.root();
    std::fs::create_dir_all(root.join("usr/sbin")).expect("sbin");
    std::fs::write(root.join("usr/sbin/clstat"), "#!/bin/sh\necho someone else\n")
        .expect("foreign");
    let out = node
        .run("linuxha", &["install", "--root", root.to_str().expect("utf-8"), "--prefix", "/usr"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not a link to linuxha"),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read_to_string(root.join("usr/sbin/clstat")).expect("kept"),
        "#!/bin/sh\necho someone else\n"
    );
}
