//! `linuxha migrate`: the Linuxha.net 1.0 → 1.1 migration guide's procedure on a 1.0
//! configuration that has every network attribute the guide deprecates.
//!
//! - In a throwaway root: without a terminal and without --yes nothing changes and one
//!   sentence says to pass --yes; --dry-run shows the diff only; --yes --gateway writes the 1.1
//!   files (the 1.0 ones kept as `.1.0`), creates the key, and `clbuild --verbose --force` and
//!   `clbuildapp --force --build --verbose` accept the result; a second run has nothing to
//!   migrate; a later 1.0 file gets a second backup, never overwriting the first; a malformed
//!   file is reported as file:line:column and nothing is written.
//! - In a two-node lab (root, network namespaces): VERSION says 1.0.4, the configuration is
//!   archived with tar, 1.1 is installed (`linuxha install`: VERSION says 1.1), both nodes
//!   migrated as the guide says (the key copied between them), clbuild, clbuildapp --vgbuild and --build, `clform --noapps`,
//!   clstat, and the five daemons running on each node as `<daemon>-cluster1`.

mod cluster;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use cluster::common::Node;
use cluster::{all_up, text, Cluster, ALL_DAEMONS, CLUSTER};

/// A Linuxha.net 1.0 clconf.xml: no daemon ports, no key, no known connections.
const CLCONF_1_0: &str = r#"<?xml version="1.0"?>
<!-- The accounts cluster, as Linuxha.net 1.0.4 left it. -->
<linuxha>
	<global>
		<version>1.0.4</version>
		<name>cluster1</name>
	</global>
	<node name="node1">
		<network name="public" interface="eth0" address="10.10.0.11" netmask="255.255.255.0" heartbeat="yes"/>
		<network name="private" interface="eth1" address="10.20.0.11" netmask="255.255.255.0" heartbeat="yes"/>
	</node>
	<node name="node2">
		<network name="public" interface="eth0" address="10.10.0.12" netmask="255.255.255.0" heartbeat="yes"/>
		<network name="private" interface="eth1" address="10.20.0.12" netmask="255.255.255.0" heartbeat="yes"/>
	</node>
</linuxha>
"#;

/// A 1.0 appconf.xml with every `<network>` attribute the guide deprecates.
const APPCONF_1_0: &str = r#"<?xml version="1.0"?>
<appconf>
<global>
	<version>0.1</version>
	<name>apache</name>
	<autostart>0</autostart>
</global>
<networks>
	<!-- the web address; checklist was the 1.0 way to tell a partition -->
	<network net="public" ip="10.10.0.100" netmask="255.255.255.0" broadcast="10.10.0.255" retries="3" retry_interval="2" ping_timeout="5" checklist="10.10.0.1"/>
</networks>
<application>
	<startscript>/etc/cluster/apache/start</startscript>
	<stopscript>/etc/cluster/apache/stop</stopscript>
	<maxstarttime>30</maxstarttime>
	<maxstoptime>30</maxstoptime>
</application>
</appconf>
"#;

/// The attributes the guide says are no longer used (cl-config's list, restated here so a
/// change to either is noticed).
const DEPRECATED: [&str; 5] =
    ["broadcast", "checklist", "retries", "retry_interval", "ping_timeout"];

/// The lab's `ext` host: outside the cluster, answers ping.
const GATEWAY: &str = "10.10.0.1";

/// Replace `etc` (a node's /etc/cluster) with the 1.0 configuration and the apache scripts.
fn write_1_0(etc: &Path) {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/cluster1/etc/cluster");
    let _ = fs::remove_dir_all(etc);
    fs::create_dir_all(etc.join("apache")).expect("etc/cluster/apache");
    fs::write(etc.join("clconf.xml"), CLCONF_1_0).expect("clconf.xml");
    fs::write(etc.join("apache/appconf.xml"), APPCONF_1_0).expect("appconf.xml");
    for script in ["start", "stop"] {
        let to = etc.join("apache").join(script);
        fs::copy(example.join("apache").join(script), &to).expect("script");
        fs::set_permissions(&to, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    for file in ["clconf.xml", "apache/appconf.xml"] {
        fs::set_permissions(etc.join(file), fs::Permissions::from_mode(0o644)).expect("chmod");
    }
}

/// `linuxha args…` as `node`, with standard input not a terminal.
fn linuxha(node: &Node, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_linuxha"))
        .args(args)
        .env("LINUXHA_ROOT", node.root())
        .env("LINUXHA_NODE", &node.name)
        .stdin(Stdio::null())
        .output()
        .expect("linuxha runs")
}

fn ok(node: &Node, args: &[&str]) -> String {
    let out = linuxha(node, args);
    assert!(out.status.success(), "{args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Removes a directory when dropped, even when the test panics.
struct Remove(std::path::PathBuf);

impl Drop for Remove {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every file under `dir`, with its contents, to tell that nothing was written.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).expect("read dir") {
        let entry = entry.expect("entry");
        if entry.file_type().expect("type").is_dir() {
            files.extend(snapshot(&entry.path()));
        } else {
            files.push((entry.path().display().to_string(), fs::read(entry.path()).expect("read")));
        }
    }
    files.sort();
    files
}

#[test]
fn the_guides_procedure_in_a_throwaway_root() {
    let node = Node::with_example("node1");
    let etc = node.file("etc/cluster");
    write_1_0(&etc);
    let clconf = etc.join("clconf.xml");
    let appconf = etc.join("apache/appconf.xml");

    // The 1.0 file does not build as it is.
    let out = linuxha(&node, &["clbuild", "--verbose", "--force"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    // No terminal, no --yes: one sentence, exit 1, nothing changed.
    let before = snapshot(&etc);
    let out = linuxha(&node, &["migrate", "--gateway", GATEWAY]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("linuxha migrate: ") && stderr.contains("--yes"), "{stderr}");
    assert_eq!(snapshot(&etc), before, "refused without --yes, yet files changed");

    // --dry-run: the summary and the diff, nothing written.
    let shown = ok(&node, &["migrate", "--dry-run", "--gateway", GATEWAY]);
    assert_eq!(snapshot(&etc), before, "--dry-run changed files");
    assert!(shown.contains("dry run; nothing was changed"), "{shown}");
    assert!(shown.contains(&format!("--- {}\n+++ {} (1.1)\n", clconf.display(), clconf.display())));
    assert!(shown.contains("+\t\t<cldaemon_port>9901</cldaemon_port>\n"), "{shown}");
    assert!(shown.contains(&format!("+\t{GATEWAY}\n")), "{shown}");
    for attribute in DEPRECATED {
        assert!(shown.contains(&format!("remove `{attribute}`")), "{attribute}: {shown}");
    }

    // --yes: written, the 1.0 files kept, the key created.
    let done = ok(&node, &["migrate", "--yes", "--gateway", GATEWAY]);
    assert!(done.contains("@@ "), "the diff is shown before writing: {done}");
    assert_eq!(read(&etc.join("clconf.xml.1.0")), CLCONF_1_0);
    assert_eq!(read(&etc.join("apache/appconf.xml.1.0")), APPCONF_1_0);
    let migrated_clconf = read(&clconf);
    let migrated_appconf = read(&appconf);
    for attribute in DEPRECATED {
        assert!(!migrated_appconf.contains(&format!("{attribute}=")), "{migrated_appconf}");
    }
    // Comments and layout are the administrator's.
    assert!(
        migrated_clconf.contains("<!-- The accounts cluster, as Linuxha.net 1.0.4 left it. -->")
    );
    assert!(migrated_appconf.contains("\t<!-- the web address; checklist was the 1.0 way"));
    assert!(migrated_appconf
        .contains("\t<network net=\"public\" ip=\"10.10.0.100\" netmask=\"255.255.255.0\"/>\n"));
    let key = etc.join("cluster.key");
    assert_eq!(fs::metadata(&key).expect("key").permissions().mode() & 0o777, 0o600);
    assert_eq!(fs::metadata(&clconf).expect("clconf").permissions().mode() & 0o777, 0o644);

    // The guide's next steps accept the result.
    let built = ok(&node, &["clbuild", "--verbose", "--force"]);
    assert!(built.contains("1 known connections"), "{built}");
    let out = linuxha(
        &node,
        &["clbuildapp", "--force", "--build", "--verbose", "--application", "apache"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("Linuxha.net 1.0 and is ignored"),
        "no 1.0 network warning is left: {}",
        text(&out)
    );

    // Again: nothing to migrate, nothing written.
    let after = snapshot(&etc);
    let again = ok(&node, &["migrate", "--yes", "--gateway", GATEWAY]);
    assert!(again.contains("there is nothing to migrate"), "{again}");
    assert_eq!(snapshot(&etc), after);

    // Back to 1.0 and migrated again: a second backup, the first one untouched.
    fs::write(&appconf, APPCONF_1_0).expect("appconf.xml");
    ok(&node, &["migrate", "--yes"]);
    assert_eq!(read(&etc.join("apache/appconf.xml.1.0.2")), APPCONF_1_0);
    assert_eq!(read(&etc.join("apache/appconf.xml.1.0")), APPCONF_1_0);
    assert_eq!(read(&appconf), migrated_appconf);

    // A malformed file anywhere: file:line:column, exit 2, nothing written.
    fs::write(&appconf, APPCONF_1_0.replace("</networks>", "</network>")).expect("appconf.xml");
    fs::write(&clconf, CLCONF_1_0).expect("clconf.xml");
    let before = snapshot(&etc);
    let out = linuxha(&node, &["migrate", "--yes", "--gateway", GATEWAY]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!("{}:11:1: error: not well-formed XML", appconf.display())),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was changed"), "{stderr}");
    assert_eq!(snapshot(&etc), before, "a malformed file, yet files changed");
}

#[test]
fn a_migrated_1_0_cluster_forms_with_its_five_daemons() {
    let Some(lab) = cluster::lab_or_skip("a_migrated_1_0_cluster_forms_with_its_five_daemons")
    else {
        println!("SKIPPED: the lab part of the migration test needs root and network namespaces");
        return;
    };
    let c = Cluster { lab };
    let archive_dir = std::env::temp_dir().join(format!("t32-archive-{}", std::process::id()));
    let _remove_archives = Remove(archive_dir.clone());
    fs::create_dir_all(&archive_dir).expect("archive dir");
    for node in ["node1", "node2"] {
        let etc = c.etc(node);
        write_1_0(&etc);
        fs::write(etc.join("VERSION"), "1.0.4\n").expect("VERSION");
        // The guide: "cat /etc/cluster/VERSION", then archive the configuration with tar.
        assert_eq!(read(&etc.join("VERSION")).trim(), "1.0.4");
        let archive = archive_dir.join(format!("{node}-old_valid_cluster_cfg.tgz"));
        let tar = Command::new("tar")
            .arg("czf")
            .arg(&archive)
            .arg("-C")
            .arg(&etc)
            .arg(".")
            .output()
            .expect("tar runs");
        assert!(tar.status.success(), "tar: {}", text(&tar));
        let listing = Command::new("tar").arg("tzf").arg(&archive).output().expect("tar runs");
        let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
        assert!(
            listing.contains("./clconf.xml") && listing.contains("./apache/appconf.xml"),
            "{listing}"
        );
        // Installing 1.1 (the packages' own install is tested by t31): VERSION says so.
        c.must(node, &["install"]);
        assert_eq!(read(&etc.join("VERSION")).trim(), env!("CARGO_PKG_VERSION"));
    }
    // node1 first: it makes the key, which goes to node2 before node2 is migrated.
    let first = c.must("node1", &["migrate", "--yes", "--gateway", GATEWAY]);
    assert!(first.contains("wrote a new 256-bit cluster key"), "{first}");
    let key = fs::read(c.etc("node1").join("cluster.key")).expect("key");
    let copy = c.etc("node2").join("cluster.key");
    fs::write(&copy, &key).expect("copy key");
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o600)).expect("chmod");
    let second = c.must("node2", &["migrate", "--yes", "--gateway", GATEWAY]);
    assert!(!second.contains("wrote a new"), "node2 keeps node1's key: {second}");
    assert_eq!(
        read(&c.etc("node1").join("clconf.xml")),
        read(&c.etc("node2").join("clconf.xml")),
        "both nodes migrate to the same file"
    );
    let app = ["--verbose", "--application", "apache"];
    for node in ["node1", "node2"] {
        c.must(node, &["clbuild", "--verbose", "--force"]);
        c.must(node, &[&["clbuildapp", "--force", "--vgbuild"][..], &app[..]].concat());
        c.must(node, &[&["clbuildapp", "--force", "--build"][..], &app[..]].concat());
    }
    c.start_cldaemon("node1");
    c.start_cldaemon("node2");
    c.must("node1", &["clform", "--noapps"]);
    c.wait_all_up();
    let shown = c.must("node1", &["clstat"]);
    assert!(shown.contains(&format!("Cluster: {CLUSTER}  State: FORMED")), "{shown}");
    for node in ["node1", "node2"] {
        // As `ps -ef | grep cluster1` shows them: each daemon once, as <daemon>-cluster1.
        let pids = c.daemon_pids(node);
        assert_eq!(pids.len(), ALL_DAEMONS.len(), "{node}: {pids:?}");
        let status = c.wait(node, "the proposed known connection answers", |s| {
            all_up(s) && cluster::known(s, GATEWAY).is_some_and(|k| k.reachable)
        });
        assert!(
            !cluster::app_running_on(&status, node),
            "clform --noapps started apache on {node}: {status:#?}"
        );
    }
}
