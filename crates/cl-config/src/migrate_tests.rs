//! The 1.0 → 1.1 edits: what changes, what stays byte for byte, and that the result builds.

use std::path::Path;

use super::*;
use crate::{load_app, load_cluster, FileKind, Host, Severity};

/// Every path exists: the checks under test here are the configuration's, not the node's.
struct EverythingExists;

impl Host for EverythingExists {
    fn file_kind(&self, path: &Path) -> FileKind {
        if path.starts_with("/etc/cluster/apache") {
            FileKind::Executable
        } else {
            FileKind::NotExecutable
        }
    }
}

/// A Linuxha.net 1.0 clconf.xml: no ports, no key, no known connections, tabs, comments.
const CLCONF_1_0: &str = r#"<?xml version="1.0"?>
<!-- Cluster of the accounts department; ask Jo before changing. -->
<linuxha>
	<global>
		<version>1.0.4</version>
		<name>cluster1</name>
		<!-- the fast profile needs the crossover cable -->
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

/// A 1.0 appconf.xml with every attribute the guide deprecates, spread over two networks and
/// over lines.
const APPCONF_1_0: &str = r#"<?xml version="1.0"?>
<appconf>
<global>
	<version>0.1</version>
	<name>apache</name>
	<autostart>1</autostart>
</global>
<networks>
	<!-- the web address -->
	<network net="public" ip="10.10.0.100" netmask="255.255.255.0" broadcast="10.10.0.255" retries="3" retry_interval="2" checklist="10.10.0.1"/>
	<network net="private"
	         ip="10.20.0.100"
	         ping_timeout="5"
	         prefix="24"/>
</networks>
<application>
	<startscript>/etc/cluster/apache/start</startscript>
	<stopscript>/etc/cluster/apache/stop</stopscript>
	<maxstarttime>10</maxstarttime>
</application>
</appconf>
"#;

fn gateway() -> Gateway {
    Gateway::Found("10.10.0.1".parse().expect("literal"))
}

fn errors<T>(loaded: &crate::Loaded<T>) -> Vec<String> {
    loaded.errors().map(ToString::to_string).collect()
}

#[test]
fn a_1_0_cluster_file_gets_ports_key_and_known_connections_and_builds() {
    let before = load_cluster("clconf.xml", CLCONF_1_0.as_bytes(), &EverythingExists);
    assert!(before.config.is_none(), "the 1.0 file must not build as it is");
    let migrated = migrate_cluster("clconf.xml", CLCONF_1_0.as_bytes(), &gateway()).expect("ok");
    let after = load_cluster("clconf.xml", migrated.text.as_bytes(), &EverythingExists);
    assert_eq!(errors(&after), Vec::<String>::new(), "{}", migrated.text);
    let config = after.config.clone().expect("builds");
    assert_eq!(
        [config.ports.cldaemon, config.ports.cllockd, config.ports.clnetd, config.ports.clhbd],
        DEFAULT_PORTS
    );
    assert_eq!(config.known_connections, ["10.10.0.1".parse::<IpAddr>().expect("literal")]);
    assert_eq!(config.key, crate::clconf::KeySource::File(DEFAULT_KEY_FILE.into()));
    assert_eq!(migrated.changes.len(), 6, "{:?}", migrated.changes);
    assert!(migrated.changes.contains(&Change::AddedPort { daemon: "clhbd", port: 9904 }));
    // No warning about known connections is left.
    assert!(
        !after.warnings().any(|w| w.message.contains("net_known_connections")),
        "{:?}",
        after.diagnostics
    );
}

#[test]
fn the_cluster_edit_keeps_every_original_line_and_the_files_indentation() {
    let migrated = migrate_cluster("clconf.xml", CLCONF_1_0.as_bytes(), &gateway()).expect("ok");
    // Every line of the original is still there, in order.
    let mut new_lines = migrated.text.lines();
    for line in CLCONF_1_0.lines() {
        assert!(new_lines.any(|l| l == line), "lost or reordered: {line:?}\n{}", migrated.text);
    }
    assert!(migrated.text.contains("\n\t\t<cldaemon_port>9901</cldaemon_port>\n"));
    assert!(migrated.text.contains("\n\t\t<key file=\"/etc/cluster/cluster.key\"/>\n\t</global>"));
    assert!(migrated.text.contains(
        "\n\t<net_known_connections>\n\t10.10.0.1\n\t</net_known_connections>\n</linuxha>\n"
    ));
    // The new ports come after the administrator's last comment in <global>.
    let comment = migrated.text.find("crossover cable").expect("comment kept");
    assert!(migrated.text.find("<cldaemon_port>").expect("added") > comment);
}

#[test]
fn migrating_twice_changes_nothing_more() {
    let once = migrate_cluster("clconf.xml", CLCONF_1_0.as_bytes(), &gateway()).expect("ok");
    let twice = migrate_cluster("clconf.xml", once.text.as_bytes(), &gateway()).expect("ok");
    assert!(twice.is_unchanged(), "{:?}", twice.changes);
    assert_eq!(twice.text, once.text);
    let app_once = migrate_app("appconf.xml", APPCONF_1_0.as_bytes()).expect("ok");
    let app_twice = migrate_app("appconf.xml", app_once.text.as_bytes()).expect("ok");
    assert!(app_twice.is_unchanged(), "{:?}", app_twice.changes);
    assert_eq!(app_twice.text, app_once.text);
}

#[test]
fn a_1_1_file_needs_nothing() {
    let example = include_str!("../../../examples/cluster1/etc/cluster/clconf.xml");
    let migrated = migrate_cluster("clconf.xml", example.as_bytes(), &gateway()).expect("ok");
    assert!(migrated.is_unchanged(), "{:?}", migrated.changes);
    assert_eq!(migrated.text, example);
    let app = include_str!("../../../examples/cluster1/etc/cluster/apache/appconf.xml");
    let migrated = migrate_app("appconf.xml", app.as_bytes()).expect("ok");
    assert!(migrated.is_unchanged() && migrated.text == app);
}

#[test]
fn every_deprecated_network_attribute_is_removed_and_nothing_else() {
    for name in LEGACY_NETWORK_ATTRIBUTES {
        assert!(APPCONF_1_0.contains(&format!(" {name}=")), "the sample lacks {name}");
    }
    let migrated = migrate_app("appconf.xml", APPCONF_1_0.as_bytes()).expect("ok");
    for name in LEGACY_NETWORK_ATTRIBUTES {
        assert!(!migrated.text.contains(&format!("{name}=")), "{name} left:\n{}", migrated.text);
    }
    let removed: Vec<(&str, u32)> = migrated
        .changes
        .iter()
        .map(|c| match c {
            Change::RemovedAttribute { attribute, line } => (*attribute, *line),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        removed,
        [
            ("broadcast", 10),
            ("retries", 10),
            ("retry_interval", 10),
            ("checklist", 10),
            ("ping_timeout", 11)
        ]
    );
    let expected = APPCONF_1_0
        .replace(
            r#" broadcast="10.10.0.255" retries="3" retry_interval="2" checklist="10.10.0.1""#,
            "",
        )
        .replace("\n\t         ping_timeout=\"5\"", "");
    assert_eq!(migrated.text, expected);
}

#[test]
fn the_migrated_application_builds_without_1_0_network_warnings() {
    let cluster = migrate_cluster("clconf.xml", CLCONF_1_0.as_bytes(), &gateway()).expect("ok");
    let cluster = load_cluster("clconf.xml", cluster.text.as_bytes(), &EverythingExists)
        .config
        .expect("cluster builds");
    let before =
        load_app("appconf.xml", APPCONF_1_0.as_bytes(), "apache", &cluster, &[], &EverythingExists);
    assert_eq!(before.warnings().filter(|w| w.message.contains("<network>: attribute")).count(), 5);
    let migrated = migrate_app("appconf.xml", APPCONF_1_0.as_bytes()).expect("ok");
    let after = load_app(
        "appconf.xml",
        migrated.text.as_bytes(),
        "apache",
        &cluster,
        &[],
        &EverythingExists,
    );
    assert_eq!(errors(&after), Vec::<String>::new());
    assert!(after.config.is_some());
    assert!(
        !after.warnings().any(|w| w.message.contains("<network>: attribute")),
        "{:?}",
        after.diagnostics
    );
}

#[test]
fn without_a_gateway_a_commented_placeholder_is_added_once_then_replaced_by_a_gateway() {
    let none = Gateway::Missing("no default route in /proc/net/route".into());
    let first = migrate_cluster("clconf.xml", CLCONF_1_0.as_bytes(), &none).expect("ok");
    assert!(first.changes.iter().any(|c| matches!(c, Change::KnownConnectionsPlaceholder { .. })));
    let built = load_cluster("clconf.xml", first.text.as_bytes(), &EverythingExists);
    assert_eq!(errors(&built), Vec::<String>::new(), "{}", first.text);
    // Still only the 1.1 warning that the section is missing.
    assert!(built.warnings().any(|w| w.message.contains("net_known_connections")));
    let again = migrate_cluster("clconf.xml", first.text.as_bytes(), &none).expect("ok");
    assert!(again.is_unchanged(), "{:?}", again.changes);
    let later = migrate_cluster("clconf.xml", first.text.as_bytes(), &gateway()).expect("ok");
    assert_eq!(later.changes, [Change::AddedKnownConnection("10.10.0.1".parse().expect("ip"))]);
    assert!(!later.text.contains(PLACEHOLDER_MARK), "{}", later.text);
    let built = load_cluster("clconf.xml", later.text.as_bytes(), &EverythingExists);
    assert_eq!(errors(&built), Vec::<String>::new(), "{}", later.text);
    assert_eq!(built.config.expect("builds").known_connections.len(), 1);
}

#[test]
fn a_gateway_that_is_a_node_address_is_not_proposed() {
    let node = Gateway::Found("10.10.0.11".parse().expect("literal"));
    let migrated = migrate_cluster("clconf.xml", CLCONF_1_0.as_bytes(), &node).expect("ok");
    assert!(migrated.changes.iter().any(|c| matches!(
        c,
        Change::KnownConnectionsPlaceholder { reason } if reason.contains("nodes' own addresses")
    )));
    let built = load_cluster("clconf.xml", migrated.text.as_bytes(), &EverythingExists);
    assert_eq!(errors(&built), Vec::<String>::new());
}

#[test]
fn existing_ports_and_key_are_kept_and_new_ports_avoid_them() {
    let partial = CLCONF_1_0.replace(
        "<name>cluster1</name>",
        "<name>cluster1</name>\n\t\t<key>00112233445566778899aabbccddeeff</key>\n\t\t<cllockd_port>9901</cllockd_port>",
    );
    let migrated = migrate_cluster("clconf.xml", partial.as_bytes(), &gateway()).expect("ok");
    assert!(!migrated.changes.iter().any(|c| matches!(c, Change::AddedKeyFile { .. })));
    let built = load_cluster("clconf.xml", migrated.text.as_bytes(), &EverythingExists);
    assert_eq!(errors(&built), Vec::<String>::new(), "{}", migrated.text);
    let ports = built.config.expect("builds").ports;
    assert_eq!(ports.cllockd, 9901);
    assert_eq!([ports.cldaemon, ports.clnetd, ports.clhbd], [9902, 9903, 9904]);
}

#[test]
fn a_file_with_windows_line_ends_keeps_them() {
    let crlf = CLCONF_1_0.replace('\n', "\r\n");
    let migrated = migrate_cluster("clconf.xml", crlf.as_bytes(), &gateway()).expect("ok");
    assert_eq!(migrated.text.matches('\n').count(), migrated.text.matches("\r\n").count());
    let built = load_cluster("clconf.xml", migrated.text.as_bytes(), &EverythingExists);
    assert_eq!(errors(&built), Vec::<String>::new());
    let again = migrate_cluster("clconf.xml", migrated.text.as_bytes(), &gateway()).expect("ok");
    assert!(again.is_unchanged());
}

#[test]
fn malformed_xml_is_an_error_at_its_place() {
    let broken = CLCONF_1_0.replace("</global>", "</globl>");
    let errors = migrate_cluster("/etc/cluster/clconf.xml", broken.as_bytes(), &gateway())
        .expect_err("malformed");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].severity, Severity::Error);
    assert!(
        errors[0]
            .to_string()
            .starts_with("/etc/cluster/clconf.xml:8:2: error: not well-formed XML"),
        "{}",
        errors[0]
    );
    let errors =
        migrate_app("appconf.xml", b"<appconf>\n<networks>\n<network ip=\"1\n").expect_err("bad");
    assert!(errors[0].to_string().starts_with("appconf.xml:"), "{}", errors[0]);
    let errors = migrate_app("appconf.xml", b"<linuxha/>").expect_err("wrong root");
    assert!(errors[0].message.contains("must be <appconf>"), "{}", errors[0]);
    let errors =
        migrate_cluster("c.xml", b"<linuxha><node/></linuxha>", &gateway()).expect_err("no global");
    assert!(errors[0].to_string().starts_with("c.xml:1:1: error: <linuxha>: there is no <global>"));
}

#[test]
fn the_summary_says_what_each_change_is() {
    let lines: Vec<String> = [
        Change::AddedPort { daemon: "clnetd", port: 9903 },
        Change::RemovedAttribute { attribute: "checklist", line: 12 },
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    assert_eq!(lines[0], "add <clnetd_port>9903</clnetd_port> to <global> (new in 1.1)");
    assert_eq!(
        lines[1],
        "remove `checklist` from the <network> on line 12 (used by 1.0, ignored by 1.1)"
    );
}
